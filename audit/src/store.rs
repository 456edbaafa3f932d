//! Storage behind the log: the [`LogStore`] trait and an in-memory store.
//!
//! The trait is synchronous and knows nothing of tokio or SQL so the tree
//! logic stays free of I/O; `SqlStore` (feature `sql`) implements it over the
//! coordinator's SQLite or PostgreSQL database with the tables
//! `audit_entries(idx PRIMARY KEY, bytes)`, `audit_nodes(level, idx, hash,
//! PRIMARY KEY(level, idx))` and `audit_checkpoints(size PRIMARY KEY, note)`.
//! A backend may group nodes into C2SP tlog tiles (8 levels x 256 hashes) as
//! long as [`LogStore::node`] answers single lookups.

use std::collections::BTreeMap;

use crate::AuditError;
use crate::hash::Hash;

/// One atomic append: entries `first_index..first_index + entries.len()` and
/// every perfect-subtree node they complete.
#[derive(Clone, Debug)]
pub struct AppendBatch<'a> {
    /// Index of the first entry; must equal the store's current size.
    pub first_index: u64,
    /// Canonical encodings of the entries, in order.
    pub entries: &'a [Vec<u8>],
    /// Completed perfect subtrees `(level, index, hash)`; level 0 holds the
    /// entries' leaf hashes.
    pub nodes: &'a [(u8, u64, Hash)],
}

/// Durable storage of entries, tree nodes and signed checkpoints.
///
/// Implementations must make [`LogStore::append`] atomic and durable before it
/// returns `Ok` (one database transaction), and must reject a batch whose
/// `first_index` is not the current size with [`AuditError::AppendConflict`]:
/// this is what makes "append before the action takes effect" safe with more
/// than one writer.
pub trait LogStore {
    /// Number of entries stored.
    fn size(&self) -> Result<u64, AuditError>;
    /// Appends a batch atomically.
    fn append(&mut self, batch: &AppendBatch<'_>) -> Result<(), AuditError>;
    /// The encoded entry at `index`, if stored.
    fn entry(&self, index: u64) -> Result<Option<Vec<u8>>, AuditError>;
    /// The perfect-subtree hash `(level, index)`, if stored.
    fn node(&self, level: u8, index: u64) -> Result<Option<Hash>, AuditError>;
    /// Stores (or replaces, when cosignatures were added) the signed
    /// checkpoint note for tree size `size`.
    fn put_checkpoint(&mut self, size: u64, note: &str) -> Result<(), AuditError>;
    /// The checkpoint note stored for `size`.
    fn checkpoint(&self, size: u64) -> Result<Option<String>, AuditError>;
    /// Checkpoint notes with `from <= size <= to`, ascending by size.
    fn checkpoints(&self, from: u64, to: u64) -> Result<Vec<(u64, String)>, AuditError>;
    /// The checkpoint note with the largest size.
    fn latest_checkpoint(&self) -> Result<Option<(u64, String)>, AuditError>;
}

/// An in-memory [`LogStore`] keeping every perfect-subtree node, level by
/// level: about `2n` hashes (64 MB at 10^6 entries) buys O(log n) proofs.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    entries: Vec<Vec<u8>>,
    /// `levels[l][i]` is the perfect subtree `(l, i)`.
    levels: Vec<Vec<Hash>>,
    checkpoints: BTreeMap<u64, String>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Overwrites a stored entry behind the log's back (tamper tests).
    #[cfg(feature = "testing")]
    pub fn tamper_entry(&mut self, index: u64, bytes: Vec<u8>) {
        if let Some(e) = usize::try_from(index)
            .ok()
            .and_then(|i| self.entries.get_mut(i))
        {
            *e = bytes;
        }
    }

    /// Drops entries from `size` on and every node covering them, as an
    /// operator truncating the database would (tamper tests).
    #[cfg(feature = "testing")]
    pub fn truncate(&mut self, size: u64) {
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        self.entries.truncate(size);
        for (level, nodes) in self.levels.iter_mut().enumerate() {
            nodes.truncate(size >> level);
        }
    }
}

impl LogStore for MemoryStore {
    fn size(&self) -> Result<u64, AuditError> {
        Ok(self.entries.len() as u64)
    }

    fn append(&mut self, batch: &AppendBatch<'_>) -> Result<(), AuditError> {
        let actual = self.entries.len() as u64;
        if batch.first_index != actual {
            return Err(AuditError::AppendConflict {
                expected: batch.first_index,
                actual,
            });
        }
        // Validate the whole batch before changing anything so a bad batch
        // leaves the store untouched (atomicity without a transaction).
        let mut lens: Vec<u64> = self.levels.iter().map(|l| l.len() as u64).collect();
        for &(level, index, _) in batch.nodes {
            let l = usize::from(level);
            if lens.len() <= l {
                lens.resize(l + 1, 0);
            }
            if index != lens[l] {
                return Err(AuditError::Corrupt(format!(
                    "node ({level}, {index}) appended out of order"
                )));
            }
            lens[l] += 1;
        }
        if lens.first().copied().unwrap_or(0) != actual + batch.entries.len() as u64 {
            return Err(AuditError::Corrupt(
                "leaf hashes do not match the entries appended".into(),
            ));
        }
        self.entries.extend(batch.entries.iter().cloned());
        for &(level, _, hash) in batch.nodes {
            let l = usize::from(level);
            if self.levels.len() <= l {
                self.levels.resize(l + 1, Vec::new());
            }
            self.levels[l].push(hash);
        }
        Ok(())
    }

    fn entry(&self, index: u64) -> Result<Option<Vec<u8>>, AuditError> {
        Ok(usize::try_from(index)
            .ok()
            .and_then(|i| self.entries.get(i))
            .cloned())
    }

    fn node(&self, level: u8, index: u64) -> Result<Option<Hash>, AuditError> {
        Ok(self
            .levels
            .get(usize::from(level))
            .and_then(|l| usize::try_from(index).ok().and_then(|i| l.get(i)))
            .copied())
    }

    fn put_checkpoint(&mut self, size: u64, note: &str) -> Result<(), AuditError> {
        self.checkpoints.insert(size, note.to_owned());
        Ok(())
    }

    fn checkpoint(&self, size: u64) -> Result<Option<String>, AuditError> {
        Ok(self.checkpoints.get(&size).cloned())
    }

    fn checkpoints(&self, from: u64, to: u64) -> Result<Vec<(u64, String)>, AuditError> {
        if from > to {
            return Ok(Vec::new());
        }
        Ok(self
            .checkpoints
            .range(from..=to)
            .map(|(s, n)| (*s, n.clone()))
            .collect())
    }

    fn latest_checkpoint(&self) -> Result<Option<(u64, String)>, AuditError> {
        Ok(self
            .checkpoints
            .last_key_value()
            .map(|(s, n)| (*s, n.clone())))
    }
}
