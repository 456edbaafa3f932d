//! This signer as a witness of the coordinator's transparency log: it
//! co-signs a checkpoint only if it is consistent with the last one it
//! co-signed, remembers every root it co-signed, and accepts a withdrawal's
//! policy decision only with an inclusion proof against one of those roots.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use custos_audit::entry::DecisionOutcome;
use custos_audit::note::VerifierKey;
use custos_audit::proof::verify_inclusion;
use custos_audit::tree::CompactRange;
use custos_audit::{Checkpoint, Entry, EntryBody, Hash, SignedNote, Witness, leaf_hash};
use custos_hsm::{CounterValue, RollbackCounter, SealedLogSigner};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::log_view::LogView;
use crate::error::NodeError;

/// Roots kept for inclusion checks (oldest dropped first).
const MAX_ROOTS: usize = 4096;

#[derive(Clone, Default, Serialize, Deserialize)]
struct State {
    last_note: Option<String>,
    roots: BTreeMap<u64, String>,
    /// The perfect subtree roots covering the witnessed prefix (hex), from
    /// which the next entries' root is computed.
    #[serde(default)]
    frontier: Vec<String>,
    /// What the witnessed entries say. `None` only in a state written before
    /// entries were shipped with checkpoints.
    #[serde(default)]
    view: Option<LogView>,
    /// Set while this signer rebuilds its state from the log (after its
    /// state file was found older than, or different from, its rollback
    /// counter): the checkpoint it had co-signed, which the log must still
    /// contain. It signs nothing until its view reaches it.
    #[serde(default)]
    floor: Option<Floor>,
}

/// A checkpoint this signer co-signed before it lost (or could no longer
/// trust) its state.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Floor {
    size: u64,
    /// Root, hex.
    root: String,
}

impl State {
    /// Size of the last checkpoint co-signed (0: none).
    fn size(&self) -> u64 {
        self.last_note
            .as_deref()
            .and_then(|n| SignedNote::parse(n).ok())
            .and_then(|n| Checkpoint::parse_text(&n.text).ok())
            .map_or(0, |c| c.size)
    }

    /// A state that rebuilds everything from the log, which must still
    /// contain checkpoint `floor`.
    fn rebuilding(floor: Floor) -> Self {
        State {
            floor: Some(floor),
            ..State::default()
        }
    }
}

/// The witness and the roots it co-signed.
pub struct LogWitness {
    path: PathBuf,
    /// This signer's node id (its name as a witness).
    name: String,
    inner: Mutex<(Witness<SealedLogSigner>, State)>,
    /// Binds `witness.json` to the last checkpoint co-signed, where a
    /// restored snapshot cannot rewind it.
    counter: Box<dyn RollbackCounter>,
}

impl std::fmt::Debug for LogWitness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWitness")
            .field("path", &self.path)
            .finish()
    }
}

fn refused(m: impl std::fmt::Display) -> NodeError {
    NodeError::Refused(m.to_string())
}

impl LogWitness {
    /// Restores the witness from `dir/witness.json`, checked against the
    /// rollback `counter`: a file older than the counter (a restored
    /// snapshot), one that does not hash to it (an edited one) or one from
    /// before checkpoints carried their entries is set aside, and the view is
    /// rebuilt from the log, which must still contain the checkpoint the
    /// counter names.
    pub fn open(
        dir: &Path,
        name: &str,
        key: SealedLogSigner,
        origin: &str,
        log_key: &str,
        counter: Box<dyn RollbackCounter>,
    ) -> Result<Self, NodeError> {
        let path = dir.join("witness.json");
        let bytes = match std::fs::read(&path) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(NodeError::storage(&path, e)),
        };
        let mut state: State = match &bytes {
            Some(b) => serde_json::from_slice(b)
                .map_err(|e| NodeError::Internal(format!("{}: {e}", path.display())))?,
            None => State::default(),
        };
        let stored = counter.read()?;
        let digest: [u8; 32] = bytes
            .as_deref()
            .map(|b| Sha256::digest(b).into())
            .unwrap_or_default();
        if stored == CounterValue::default() {
            // The counter is new (first start, or an upgrade): bind the
            // state as it is.
            if bytes.is_some() && state.floor.is_none() {
                counter.advance(&CounterValue {
                    position: state.size(),
                    root: last_root(&state)?,
                    digest,
                })?;
            }
        } else if stored.position != state.size() || stored.digest != digest {
            tracing::warn!(
                witnessed = stored.position,
                file = state.size(),
                counter = %counter.location(),
                "witness.json does not match the rollback counter (restored from a snapshot, or edited): rebuilding this signer's view from the log; it signs nothing until then"
            );
            let _ = std::fs::rename(&path, dir.join("witness.json.set-aside"));
            state = State::rebuilding(Floor {
                size: stored.position,
                root: hex::encode(stored.root),
            });
        }
        if state.view.is_none() && state.last_note.is_some() {
            // Written before checkpoints carried their entries: rebuild.
            let floor = Floor {
                size: state.size(),
                root: hex::encode(last_root(&state)?),
            };
            state = State::rebuilding(floor);
        }
        let log_key = VerifierKey::parse(log_key.trim())
            .map_err(|e| NodeError::InvalidRequest(format!("cosigner.log_key: {e}")))?;
        let w = Witness::new(name, key, origin, log_key, state.last_note.as_deref())
            .map_err(|e| NodeError::Internal(format!("witness: {e}")))?;
        Ok(Self {
            path,
            name: name.to_owned(),
            inner: Mutex::new((w, state)),
            counter,
        })
    }

    /// This witness's verifier key line (for auditors' `--witness-key`).
    pub fn verifier_key(&self) -> String {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0.verifier_key()
            .map(|k| k.to_string())
            .unwrap_or_default()
    }

    /// Size of the last checkpoint co-signed (0: none).
    pub fn size(&self) -> u64 {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0.last().map(|c| c.size).unwrap_or(0)
    }

    /// Co-signs `note` if it extends (consistently) the last checkpoint
    /// co-signed, which must have size `from_size`, and `entries` are exactly
    /// the entries it adds (they must hash to its root); applies them to the
    /// log view and persists before answering.
    pub fn cosign(
        &self,
        note: &str,
        proof: &[Hash],
        from_size: u64,
        now_secs: u64,
        entries: &[Vec<u8>],
    ) -> Result<String, NodeError> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let have = g.0.last().map(|c| c.size).unwrap_or(0);
        if have != 0 && have != from_size {
            return Err(NodeError::NotReady(format!(
                "witnessed size is {have}; the consistency proof is from {from_size}"
            )));
        }
        let parsed = SignedNote::parse(note).map_err(|e| refused(format!("checkpoint: {e}")))?;
        let cp = Checkpoint::parse_text(&parsed.text)
            .map_err(|e| refused(format!("checkpoint: {e}")))?;
        if let Some(f) = &g.1.floor
            && cp.size < f.size
        {
            return Err(refused(format!(
                "will not co-sign checkpoint {}: this signer co-signed checkpoint {} before (its rollback counter says so)",
                cp.size, f.size
            )));
        }
        let mut trial_state = g.1.clone();
        trial_state.last_note = Some(note.to_owned());
        trial_state.roots.insert(cp.size, hex::encode(cp.root));
        while trial_state.roots.len() > MAX_ROOTS {
            if let Some(k) = trial_state.roots.keys().next().copied() {
                trial_state.roots.remove(&k);
            }
        }
        if cp.size > have {
            let now = i64::try_from(now_secs).unwrap_or(i64::MAX);
            extend(&mut trial_state, have, cp.size, &cp.root, entries, now)?;
        }
        // Verify first (the witness refuses rollbacks and split views) ...
        let line =
            g.0.cosign(note, proof, now_secs)
                .map_err(|e| refused(format!("will not co-sign checkpoint {}: {e}", cp.size)))?;
        // ... then persist before releasing the cosignature: the counter
        // first (a crash between the two leaves a file the counter does not
        // match, which is rebuilt from the log at the next start).
        let bytes =
            serde_json::to_vec(&trial_state).map_err(|e| NodeError::Internal(e.to_string()))?;
        self.counter.advance(&CounterValue {
            position: cp.size,
            root: cp.root,
            digest: Sha256::digest(&bytes).into(),
        })?;
        crate::store::write_atomic(&self.path, &bytes)?;
        g.1 = trial_state;
        Ok(line)
    }

    /// This witness's name (the signer's node id).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Signs a refusal by this signer with its witness key.
    pub fn sign_refusal(&self, r: &custos_audit::refusal::Refusal) -> Result<Vec<u8>, NodeError> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0.sign_refusal(r)
            .map_err(|e| NodeError::Internal(format!("signing a refusal: {e}")))
    }

    /// Runs `f` on the log view (the prefix this signer co-signed).
    pub fn with_view<T>(&self, f: impl FnOnce(&LogView) -> T) -> Result<T, NodeError> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = &g.1.floor {
            return Err(NodeError::NotReady(format!(
                "rebuilding this signer's view of the log: it reached entry {} of the {} it had co-signed before",
                g.1.view.as_ref().map_or(0, |v| v.size),
                f.size
            )));
        }
        match (&g.1.view, &g.1.last_note) {
            (Some(v), _) => Ok(f(v)),
            // Nothing witnessed yet: the log is empty as far as it knows.
            (None, None) => Ok(f(&LogView::default())),
            (None, Some(_)) => Err(legacy_state()),
        }
    }

    /// Decodes `entry` after checking it is entry `index` of a checkpoint of
    /// size `size` this signer co-signed (`what` names it in refusals).
    fn witnessed_entry(
        &self,
        what: &str,
        entry: &[u8],
        index: u64,
        proof: &[Hash],
        size: u64,
    ) -> Result<EntryBody, NodeError> {
        let root = {
            let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            g.1.roots.get(&size).cloned()
        }
        .ok_or_else(|| {
            refused(format!(
                "{what} entry {index}: this signer never co-signed a checkpoint of size {size}"
            ))
        })?;
        let root: Hash = hex::decode(&root)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| NodeError::Internal("stored root".into()))?;
        verify_inclusion(index, size, &leaf_hash(entry), proof, &root).map_err(|e| {
            refused(format!(
                "{what} entry {index} is not in the witnessed log: {e}"
            ))
        })?;
        let decoded = Entry::decode(entry).map_err(|e| refused(format!("{what} entry: {e}")))?;
        if decoded.index != index {
            return Err(refused(format!(
                "{what} entry claims index {}, expected {index}",
                decoded.index
            )));
        }
        Ok(decoded.body)
    }

    /// The gate before signing: `entry` is entry `index` of a checkpoint of
    /// size `size` this signer co-signed, and is a non-denying policy decision
    /// for `withdrawal_id` under `policy_hash` and `rule_id`.
    #[allow(clippy::too_many_arguments)]
    pub fn check_decision(
        &self,
        entry: &[u8],
        index: u64,
        proof: &[Hash],
        size: u64,
        withdrawal_id: &str,
        policy_hash: &[u8; 32],
        rule_id: &str,
    ) -> Result<(), NodeError> {
        match self.witnessed_entry("decision", entry, index, proof, size)? {
            EntryBody::PolicyDecision {
                withdrawal_id: w,
                policy_hash: h,
                rule_id: r,
                outcome,
                ..
            } => {
                if w != withdrawal_id {
                    return Err(refused(format!(
                        "logged decision is for {w}, not {withdrawal_id}"
                    )));
                }
                if &h != policy_hash {
                    return Err(refused("logged decision names another policy"));
                }
                if r != rule_id {
                    return Err(refused(format!(
                        "logged decision matched rule {r}, not {rule_id}"
                    )));
                }
                if outcome == DecisionOutcome::Deny {
                    return Err(refused("logged decision denied the withdrawal"));
                }
                Ok(())
            }
            other => Err(refused(format!(
                "entry {index} is a {}, not a policy decision",
                other.kind_name()
            ))),
        }
    }

    /// The gate before a partial leaves: `entry` is a signing-session entry
    /// in a checkpoint of size `size` this signer co-signed, for exactly
    /// this signing (withdrawal, key, digest, presignature) with this signer
    /// among its participants. So no partial exists whose signing the log
    /// does not show, whoever asks for it.
    /// Returns the session's participants.
    pub fn check_signing(
        &self,
        entry: &[u8],
        index: u64,
        proof: &[Hash],
        size: u64,
        signing: &SigningFacts<'_>,
    ) -> Result<Vec<String>, NodeError> {
        match self.witnessed_entry("signing", entry, index, proof, size)? {
            EntryBody::SigningSession {
                withdrawal_id,
                key_id,
                participants,
                presignature_id,
                message_digest,
                ..
            } => {
                let mismatch = |field: &str| {
                    refused(format!(
                        "logged signing session {index} is for another {field} than this signing of withdrawal {}",
                        signing.withdrawal_id
                    ))
                };
                if withdrawal_id != signing.withdrawal_id {
                    return Err(mismatch("withdrawal"));
                }
                if key_id != signing.key_id {
                    return Err(mismatch("key"));
                }
                if message_digest != *signing.digest {
                    return Err(mismatch("digest"));
                }
                if presignature_id.as_deref() != Some(signing.presignature_id) {
                    return Err(mismatch("presignature"));
                }
                if !participants.contains(&self.name) {
                    return Err(mismatch("signer set"));
                }
                Ok(participants)
            }
            other => Err(refused(format!(
                "entry {index} is a {}, not a signing session",
                other.kind_name()
            ))),
        }
    }
}

/// The root of the last checkpoint in `state` (zero when none).
fn last_root(state: &State) -> Result<Hash, NodeError> {
    let size = state.size();
    if size == 0 {
        return Ok(Hash::default());
    }
    state
        .roots
        .get(&size)
        .and_then(|h| hex::decode(h).ok())
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| NodeError::Internal(format!("witness.json: no root for checkpoint {size}")))
}

fn legacy_state() -> NodeError {
    NodeError::NotReady(
        "witness.json was written before checkpoints carried their entries: this signer has no \
         view of the log; stop it, move witness.json aside and let it witness the log from the start"
            .into(),
    )
}

/// Checks that `entries` are the entries `[have, size)` of the log whose
/// first `size` entries hash to `root`, and applies them to the view.
fn extend(
    state: &mut State,
    have: u64,
    size: u64,
    root: &Hash,
    entries: &[Vec<u8>],
    now: i64,
) -> Result<(), NodeError> {
    let view = match (&mut state.view, have) {
        (Some(v), _) => v,
        (None, 0) => state.view.insert(LogView::default()),
        (None, _) => return Err(legacy_state()),
    };
    let want = size - have;
    if entries.len() as u64 != want {
        return Err(refused(format!(
            "checkpoint {size}: {want} new entries from index {have} must come with it, got {}",
            entries.len()
        )));
    }
    let parts: Vec<Hash> = state
        .frontier
        .iter()
        .map(|h| hex::decode(h).ok().and_then(|b| b.try_into().ok()))
        .collect::<Option<_>>()
        .ok_or_else(|| NodeError::Internal("witness frontier".into()))?;
    let mut range = CompactRange::from_parts(have, &parts)
        .map_err(|e| NodeError::Internal(format!("witness frontier: {e}")))?;
    for (i, bytes) in entries.iter().enumerate() {
        let index = have + i as u64;
        let entry = Entry::decode(bytes).map_err(|e| refused(format!("log entry {index}: {e}")))?;
        view.apply(&entry, now)
            .map_err(|e| refused(format!("log entry {index}: {e}")))?;
        range.push(leaf_hash(bytes));
        if let Some(f) = &state.floor
            && f.size == index + 1
        {
            if hex::encode(range.root()) != f.root {
                return Err(refused(format!(
                    "the log shown now differs from the one this signer co-signed up to checkpoint {} (its rollback counter): a forked log",
                    f.size
                )));
            }
            state.floor = None;
        }
    }
    view.witnessed(now);
    if range.root() != *root {
        return Err(refused(format!(
            "the {want} entries shipped with checkpoint {size} do not hash to its root: \
             the coordinator showed this signer other entries than it logged"
        )));
    }
    state.frontier = range.parts().iter().map(hex::encode).collect();
    Ok(())
}

/// One signing as this signer is about to do it.
#[derive(Debug)]
pub struct SigningFacts<'a> {
    /// Withdrawal id.
    pub withdrawal_id: &'a str,
    /// Key that signs.
    pub key_id: &'a str,
    /// The digest this signer computed.
    pub digest: &'a [u8; 32],
    /// The presignature it will consume.
    pub presignature_id: &'a str,
}
