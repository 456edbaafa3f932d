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
use custos_audit::{Checkpoint, Entry, EntryBody, Hash, SignedNote, Witness, leaf_hash};
use custos_hsm::SealedLogSigner;
use serde::{Deserialize, Serialize};

use crate::error::NodeError;

/// Roots kept for inclusion checks (oldest dropped first).
const MAX_ROOTS: usize = 4096;

#[derive(Default, Serialize, Deserialize)]
struct State {
    last_note: Option<String>,
    roots: BTreeMap<u64, String>,
}

/// The witness and the roots it co-signed.
pub struct LogWitness {
    path: PathBuf,
    inner: Mutex<(Witness<SealedLogSigner>, State)>,
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
    /// Restores the witness from `dir/witness.json`.
    pub fn open(
        dir: &Path,
        name: &str,
        key: SealedLogSigner,
        origin: &str,
        log_key: &str,
    ) -> Result<Self, NodeError> {
        let path = dir.join("witness.json");
        let state: State = if path.exists() {
            let b = std::fs::read(&path).map_err(|e| NodeError::storage(&path, e))?;
            serde_json::from_slice(&b)
                .map_err(|e| NodeError::Internal(format!("{}: {e}", path.display())))?
        } else {
            State::default()
        };
        let log_key = VerifierKey::parse(log_key.trim())
            .map_err(|e| NodeError::InvalidRequest(format!("cosigner.log_key: {e}")))?;
        let w = Witness::new(name, key, origin, log_key, state.last_note.as_deref())
            .map_err(|e| NodeError::Internal(format!("witness: {e}")))?;
        Ok(Self {
            path,
            inner: Mutex::new((w, state)),
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
    /// co-signed, which must have size `from_size`; persists before answering.
    pub fn cosign(
        &self,
        note: &str,
        proof: &[Hash],
        from_size: u64,
        now_secs: u64,
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
        let mut trial_state = State {
            last_note: Some(note.to_owned()),
            roots: g.1.roots.clone(),
        };
        trial_state.roots.insert(cp.size, hex::encode(cp.root));
        while trial_state.roots.len() > MAX_ROOTS {
            if let Some(k) = trial_state.roots.keys().next().copied() {
                trial_state.roots.remove(&k);
            }
        }
        // Verify first (the witness refuses rollbacks and split views) ...
        let line =
            g.0.cosign(note, proof, now_secs)
                .map_err(|e| refused(format!("will not co-sign checkpoint {}: {e}", cp.size)))?;
        // ... then persist before releasing the cosignature.
        let bytes =
            serde_json::to_vec(&trial_state).map_err(|e| NodeError::Internal(e.to_string()))?;
        crate::store::write_atomic(&self.path, &bytes)?;
        g.1 = trial_state;
        Ok(line)
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
        let root = {
            let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            g.1.roots.get(&size).cloned()
        }
        .ok_or_else(|| {
            refused(format!(
                "decision entry {index}: this signer never co-signed a checkpoint of size {size}"
            ))
        })?;
        let root: Hash = hex::decode(&root)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| NodeError::Internal("stored root".into()))?;
        verify_inclusion(index, size, &leaf_hash(entry), proof, &root).map_err(|e| {
            refused(format!(
                "decision entry {index} is not in the witnessed log: {e}"
            ))
        })?;
        let decoded = Entry::decode(entry).map_err(|e| refused(format!("decision entry: {e}")))?;
        if decoded.index != index {
            return Err(refused(format!(
                "entry claims index {}, expected {index}",
                decoded.index
            )));
        }
        match decoded.body {
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
}
