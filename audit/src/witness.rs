//! The witness a signer node runs over the coordinator's log.
//!
//! A witness keeps the last checkpoint it co-signed. It co-signs a new one only
//! if the log key signed it and a consistency proof shows the old tree is a
//! prefix of the new one, so an operator cannot show two histories (a split
//! view) or roll back without some honest witness refusing. The same state
//! lets the signer fail closed: it joins a signing session only if the
//! session's decision entry is included in a checkpoint it witnessed.

use crate::entry::{DecisionOutcome, Entry, EntryBody};
use crate::hash::{Hash, leaf_hash};
use crate::note::{Checkpoint, VerifiedCheckpoint, VerifierKey, cosign};
use crate::proof::{verify_consistency, verify_inclusion};
use crate::{AuditError, LogSigner};

/// A witness for one log.
pub struct Witness<S: LogSigner> {
    name: String,
    signer: S,
    origin: String,
    log_key: VerifierKey,
    /// The last checkpoint co-signed (its full note, for persistence).
    last: Option<(Checkpoint, String)>,
}

impl<S: LogSigner> std::fmt::Debug for Witness<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Witness")
            .field("name", &self.name)
            .field("origin", &self.origin)
            .field("last_size", &self.last.as_ref().map(|(c, _)| c.size))
            .finish_non_exhaustive()
    }
}

impl<S: LogSigner> Witness<S> {
    /// A witness named `name` (its key name) co-signing checkpoints of the log
    /// `origin` signed by `log_key`. `last` is the persisted note of the last
    /// checkpoint it co-signed; `None` means trust on first use, so deployments
    /// should seed it with a checkpoint obtained out of band.
    pub fn new(
        name: &str,
        signer: S,
        origin: &str,
        log_key: VerifierKey,
        last: Option<&str>,
    ) -> Result<Self, AuditError> {
        // Fails early on a non-Ed25519 key or a bad name.
        VerifierKey::from_signer(name, crate::note::SIG_TYPE_COSIGNATURE_V1, &signer)?;
        let last = match last {
            Some(note) => {
                let v = VerifiedCheckpoint::verify(note, &log_key, origin)?;
                Some((v.checkpoint, note.to_owned()))
            }
            None => None,
        };
        Ok(Self {
            name: name.to_owned(),
            signer,
            origin: origin.to_owned(),
            log_key,
            last,
        })
    }

    /// This witness's verifier key (for auditors' `--witness-key`).
    pub fn verifier_key(&self) -> Result<VerifierKey, AuditError> {
        VerifierKey::from_signer(
            &self.name,
            crate::note::SIG_TYPE_COSIGNATURE_V1,
            &self.signer,
        )
    }

    /// Signs a refusal by this witness (whose name it must carry) with the
    /// witness key; the message is domain-separated from cosignatures.
    pub fn sign_refusal(&self, r: &crate::refusal::Refusal) -> Result<Vec<u8>, AuditError> {
        if r.signer != self.name {
            return Err(AuditError::InvalidArgument(format!(
                "refusal names signer {:?}, this witness is {:?}",
                r.signer, self.name
            )));
        }
        r.sign(&self.signer)
    }

    /// The last checkpoint co-signed.
    pub fn last(&self) -> Option<&Checkpoint> {
        self.last.as_ref().map(|(c, _)| c)
    }

    /// The state to persist: the note of the last checkpoint co-signed.
    pub fn state(&self) -> Option<&str> {
        self.last.as_ref().map(|(_, n)| n.as_str())
    }

    /// Co-signs `note` if it is signed by the log and consistent with the last
    /// checkpoint witnessed (`proof` from that size to the new one); returns
    /// the cosignature line to add to the note.
    ///
    /// The caller must persist [`Witness::state`] durably before releasing the
    /// line, or a crash could let the witness co-sign a rollback.
    pub fn cosign(
        &mut self,
        note: &str,
        proof: &[Hash],
        now_unix_secs: u64,
    ) -> Result<String, AuditError> {
        let new = VerifiedCheckpoint::verify(note, &self.log_key, &self.origin)?;
        let cp = &new.checkpoint;
        if let Some((old, _)) = &self.last {
            if cp.size < old.size {
                return Err(AuditError::StaleCheckpoint {
                    seen: old.size,
                    offered: cp.size,
                });
            }
            if cp.size == old.size && cp.root != old.root {
                return Err(AuditError::SplitView {
                    size: cp.size,
                    seen: hex::encode(old.root),
                    offered: hex::encode(cp.root),
                });
            }
            verify_consistency(old.size, cp.size, &old.root, &cp.root, proof)?;
        }
        let line = cosign(&new.note.text, &self.name, &self.signer, now_unix_secs)?.line();
        self.last = Some((new.checkpoint, note.to_owned()));
        Ok(line)
    }

    /// Checks that `entry` (its encoding) is entry `index` of the last
    /// checkpoint this witness co-signed. Signers call this on the session's
    /// decision entry and refuse to sign on error.
    pub fn check_included(
        &self,
        entry: &[u8],
        index: u64,
        proof: &[Hash],
    ) -> Result<(), AuditError> {
        let Some((cp, _)) = &self.last else {
            return Err(AuditError::NotWitnessed {
                index,
                reason: "no checkpoint witnessed yet".into(),
            });
        };
        if index >= cp.size {
            return Err(AuditError::NotWitnessed {
                index,
                reason: format!("last witnessed checkpoint has size {}", cp.size),
            });
        }
        verify_inclusion(index, cp.size, &leaf_hash(entry), proof, &cp.root).map_err(|e| {
            AuditError::NotWitnessed {
                index,
                reason: e.to_string(),
            }
        })
    }

    /// The signer's gate before joining a signing session: `entry` must be
    /// witnessed (as in [`Witness::check_included`]), be entry `index`, and be
    /// a policy decision for `withdrawal_id` that does not deny it. Returns
    /// the outcome so the signer can check approvals against it.
    pub fn witnessed_decision(
        &self,
        entry: &[u8],
        index: u64,
        proof: &[Hash],
        withdrawal_id: &str,
    ) -> Result<DecisionOutcome, AuditError> {
        self.check_included(entry, index, proof)?;
        let decoded = Entry::decode(entry)?;
        let refuse = |why: String| Err(AuditError::Unauthorized(format!("entry {index}: {why}")));
        if decoded.index != index {
            return refuse(format!("entry says it is entry {}", decoded.index));
        }
        match decoded.body {
            EntryBody::PolicyDecision {
                withdrawal_id: w, ..
            } if w != withdrawal_id => refuse(format!(
                "decision is for withdrawal {w}, not {withdrawal_id}"
            )),
            EntryBody::PolicyDecision {
                outcome: DecisionOutcome::Deny,
                rule_id,
                ..
            } => refuse(format!("decision denied the withdrawal (rule {rule_id})")),
            EntryBody::PolicyDecision { outcome, .. } => Ok(outcome),
            other => refuse(format!("not a policy decision but {}", other.kind_name())),
        }
    }
}
