//! The append-only log over a [`LogStore`].

use crate::bundle::{BUNDLE_FORMAT, ConsistencyRecord, ContextEntry, ExportBundle};
use crate::entry::{Entry, EntryBody};
use crate::hash::{Hash, leaf_hash};
use crate::note::{Checkpoint, SignedNote};
use crate::store::{AppendBatch, LogStore};
use crate::tree::{self, CompactRange, NodeSource};
use crate::{AuditError, LogSigner};

/// An append-only Merkle log.
///
/// Appends go to the store before they are acknowledged: when
/// [`Log::append`] returns an error nothing was added, and the caller must
/// not perform the action the entry describes (fail closed).
#[derive(Debug)]
pub struct Log<S: LogStore> {
    store: S,
    origin: String,
    /// The perfect subtrees covering the whole log, kept so an append needs
    /// no reads.
    frontier: CompactRange,
}

struct Nodes<'a, S: LogStore>(&'a S);

impl<S: LogStore> NodeSource for Nodes<'_, S> {
    fn perfect_node(&self, level: u8, index: u64) -> Result<Hash, AuditError> {
        self.0
            .node(level, index)?
            .ok_or_else(|| AuditError::Corrupt(format!("tree node ({level}, {index}) missing")))
    }
}

impl<S: LogStore> Log<S> {
    /// Opens the log in `store`; `origin` names it in checkpoints (and is the
    /// log key's name).
    pub fn open(store: S, origin: &str) -> Result<Self, AuditError> {
        if origin.is_empty()
            || origin.contains('\n')
            || origin.contains('+')
            || origin.contains(' ')
        {
            return Err(AuditError::InvalidArgument(format!(
                "invalid log origin {origin:?}"
            )));
        }
        let size = store.size()?;
        let frontier = CompactRange::from_source(&Nodes(&store), size)?;
        Ok(Self {
            store,
            origin: origin.to_owned(),
            frontier,
        })
    }

    /// The log's origin.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Number of entries.
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// The current root hash.
    pub fn root(&self) -> Hash {
        self.frontier.root()
    }

    /// The underlying store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Gives the store back.
    pub fn into_store(self) -> S {
        self.store
    }

    /// Re-reads the head from the store, after an
    /// [`AuditError::AppendConflict`] caused by another writer.
    pub fn refresh(&mut self) -> Result<(), AuditError> {
        let size = self.store.size()?;
        self.frontier = CompactRange::from_source(&Nodes(&self.store), size)?;
        Ok(())
    }

    /// Appends one entry; returns its index.
    pub fn append(&mut self, timestamp_ms: u64, body: EntryBody) -> Result<u64, AuditError> {
        let first = self.size();
        self.append_batch(vec![(timestamp_ms, body)])?;
        Ok(first)
    }

    /// Appends entries atomically (all or none); returns the first index.
    pub fn append_batch(&mut self, items: Vec<(u64, EntryBody)>) -> Result<u64, AuditError> {
        let first = self.size();
        let mut next = self.frontier.clone();
        let mut encoded = Vec::with_capacity(items.len());
        let mut nodes = Vec::with_capacity(items.len() * 2);
        for (i, (timestamp_ms, body)) in items.into_iter().enumerate() {
            let entry = Entry {
                index: first + i as u64,
                timestamp_ms,
                body,
            };
            let bytes = entry.encode()?;
            nodes.extend(next.push(leaf_hash(&bytes)));
            encoded.push(bytes);
        }
        self.store.append(&AppendBatch {
            first_index: first,
            entries: &encoded,
            nodes: &nodes,
        })?;
        // Only a durable append moves the in-memory head.
        self.frontier = next;
        Ok(first)
    }

    /// The encoded entry at `index`.
    pub fn entry(&self, index: u64) -> Result<Vec<u8>, AuditError> {
        if index >= self.size() {
            return Err(AuditError::InvalidArgument(format!(
                "entry {index} beyond log size {}",
                self.size()
            )));
        }
        self.store
            .entry(index)?
            .ok_or_else(|| AuditError::Corrupt(format!("entry {index} missing")))
    }

    /// `MTH` of the first `size` entries.
    pub fn root_at(&self, size: u64) -> Result<Hash, AuditError> {
        self.check_size(size)?;
        tree::subtree_root(&Nodes(&self.store), 0, size)
    }

    /// Inclusion proof of entry `index` in the tree of `size` entries.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, AuditError> {
        self.check_size(size)?;
        tree::inclusion_proof(&Nodes(&self.store), index, size)
    }

    /// Consistency proof from `old_size` to `new_size`.
    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Result<Vec<Hash>, AuditError> {
        self.check_size(new_size)?;
        tree::consistency_proof(&Nodes(&self.store), old_size, new_size)
    }

    fn check_size(&self, size: u64) -> Result<(), AuditError> {
        if size > self.size() {
            return Err(AuditError::InvalidArgument(format!(
                "tree size {size} beyond log size {}",
                self.size()
            )));
        }
        Ok(())
    }

    /// Signs a checkpoint of the current tree with the log key (key name =
    /// origin), stores it and returns the note. Witnesses co-sign it next.
    pub fn checkpoint(
        &mut self,
        signer: &dyn LogSigner,
        timestamp_ms: u64,
    ) -> Result<String, AuditError> {
        let cp = Checkpoint {
            origin: self.origin.clone(),
            size: self.size(),
            root: self.root(),
            timestamp_ms: Some(timestamp_ms),
        };
        let note = cp.sign(&self.origin, signer)?.to_text();
        self.store.put_checkpoint(cp.size, &note)?;
        Ok(note)
    }

    /// Adds witness cosignature lines (as returned by
    /// [`crate::Witness::cosign`]) to the stored checkpoint of `size`.
    /// Verifying them is the reader's job; this only checks their syntax.
    pub fn add_cosignatures(&mut self, size: u64, lines: &[String]) -> Result<String, AuditError> {
        let stored = self
            .store
            .checkpoint(size)?
            .ok_or_else(|| AuditError::InvalidArgument(format!("no checkpoint of size {size}")))?;
        let mut note = SignedNote::parse(&stored)?;
        for line in lines {
            let sig = crate::note::NoteSignature::parse_line(line)?;
            if !note.signatures.contains(&sig) {
                note.signatures.push(sig);
            }
        }
        let text = note.to_text();
        self.store.put_checkpoint(size, &text)?;
        Ok(text)
    }

    /// The checkpoint with the largest size, if any.
    pub fn latest_checkpoint(&self) -> Result<Option<String>, AuditError> {
        Ok(self.store.latest_checkpoint()?.map(|(_, n)| n))
    }

    /// Exports entries `[start, end)` with every checkpoint of a size in
    /// `[start, end]`. When the auditor's previous checkpoint has a size
    /// `connect_from` below `start`, a consistency proof from it to the first
    /// exported checkpoint is included. Choose `end` at a checkpointed size:
    /// entries after the last checkpoint in the range cannot be authenticated
    /// and the verifier reports them as uncovered.
    pub fn export(
        &self,
        start: u64,
        end: u64,
        connect_from: Option<u64>,
    ) -> Result<ExportBundle, AuditError> {
        if start > end {
            return Err(AuditError::InvalidArgument(format!(
                "export range [{start}, {end}) is empty"
            )));
        }
        self.check_size(end)?;
        let nodes = Nodes(&self.store);
        let prefix = CompactRange::from_source(&nodes, start)?;
        let mut entries = Vec::new();
        let mut leaf_hashes = Vec::new();
        for i in start..end {
            entries.push(hex::encode(self.entry(i)?));
            leaf_hashes.push(hex::encode(nodes.perfect_node(0, i)?));
        }
        let checkpoints: Vec<(u64, String)> = self.store.checkpoints(start, end)?;
        let mut consistency_proofs = Vec::new();
        if let (Some(from), Some((to, _))) = (connect_from, checkpoints.first())
            && from < start
        {
            let proof = self.consistency_proof(from, *to)?;
            consistency_proofs.push(ConsistencyRecord {
                from_size: from,
                to_size: *to,
                proof: proof.iter().map(hex::encode).collect(),
            });
        }
        let context = match checkpoints.last() {
            Some((tree_size, _)) => self.context_before(start, end, *tree_size)?,
            None => Vec::new(),
        };
        Ok(ExportBundle {
            format: BUNDLE_FORMAT.to_owned(),
            origin: self.origin.clone(),
            start,
            prefix: prefix.parts().iter().map(hex::encode).collect(),
            entries,
            leaf_hashes,
            checkpoints: checkpoints.into_iter().map(|(_, n)| n).collect(),
            consistency_proofs,
            context,
            policy_documents: Default::default(),
        })
    }

    /// The entries before `start` that replaying `[start, end)` needs: the
    /// last policy activation and every earlier entry of a withdrawal that
    /// appears in the range, or that prepared the same transaction as one
    /// that does (a batched UTXO payout: the signature of one withdrawal
    /// authorises every withdrawal the transaction pays, and the replay
    /// checks each one's decision and approvals), each with an inclusion
    /// proof for `tree_size`.
    ///
    /// Scans `[0, end)`; a database-backed coordinator can answer this from
    /// an index by withdrawal id instead.
    fn context_before(
        &self,
        start: u64,
        end: u64,
        tree_size: u64,
    ) -> Result<Vec<ContextEntry>, AuditError> {
        use std::collections::{BTreeMap, BTreeSet};
        let mut wanted: BTreeSet<String> = BTreeSet::new();
        // Entries before the range by withdrawal, and the withdrawals that
        // prepared each transaction (by its bytes' leaf hash).
        let mut earlier: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let mut preparers: BTreeMap<Hash, BTreeSet<String>> = BTreeMap::new();
        let mut last_policy = None;
        for i in 0..end {
            let e = Entry::decode(&self.entry(i)?)?;
            if let EntryBody::TransactionPrepared {
                withdrawal_id,
                unsigned_tx,
                ..
            } = &e.body
            {
                preparers
                    .entry(leaf_hash(unsigned_tx))
                    .or_default()
                    .insert(withdrawal_id.clone());
            }
            if i >= start {
                wanted.extend(e.body.withdrawal_id().map(str::to_owned));
                continue;
            }
            if matches!(e.body, EntryBody::PolicyActivated { .. }) {
                last_policy = Some(i);
            }
            if let Some(w) = e.body.withdrawal_id() {
                earlier.entry(w.to_owned()).or_default().push(i);
            }
        }
        let batched: Vec<String> = preparers
            .values()
            .filter(|ws| ws.len() > 1 && ws.iter().any(|w| wanted.contains(w)))
            .flatten()
            .cloned()
            .collect();
        wanted.extend(batched);
        let mut picked: Vec<u64> = wanted
            .iter()
            .filter_map(|w| earlier.get(w))
            .flatten()
            .copied()
            .collect();
        picked.extend(last_policy);
        picked.sort_unstable();
        picked.dedup();
        picked
            .into_iter()
            .map(|index| {
                Ok(ContextEntry {
                    index,
                    entry: hex::encode(self.entry(index)?),
                    tree_size,
                    proof: self
                        .inclusion_proof(index, tree_size)?
                        .iter()
                        .map(hex::encode)
                        .collect(),
                })
            })
            .collect()
    }
}
