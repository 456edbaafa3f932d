//! Refusals this signer signed and has not yet seen in the log.
//!
//! A coordinator that asks for a signature the policy forbids is refused,
//! but a refusal only the coordinator hears is easy to bury. So each one is
//! signed with this signer's witness key, kept in `refusals.json` and
//! offered in every status answer until a checkpoint this signer co-signs
//! carries it (entry kind 18). Once one has waited longer than the grace
//! period, this signer signs nothing until the coordinator logs it: a
//! coordinator can hide its requests only by stopping all signing.
//!
//! The file holds signed records, so an edit shows; removing it (or
//! restoring an older copy) loses refusals not yet logged, which costs the
//! auditor evidence but never lets a signature through.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use custos_audit::refusal::Refusal;
use serde::{Deserialize, Serialize};

use crate::error::NodeError;

/// Pending refusals kept; beyond this new ones are dropped (logged here).
/// Signing is held anyway while older ones wait.
const MAX_PENDING: usize = 256;

/// Longest reason signed (characters): refusals name facts, not essays.
const MAX_REASON_CHARS: usize = 1000;

/// One refusal, signed, not yet witnessed in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRefusal {
    /// Withdrawal refused (empty: undecodable request).
    pub withdrawal_id: String,
    /// This signer's node id.
    pub signer: String,
    /// What was refused.
    pub request: String,
    /// Why.
    pub reason: String,
    /// This signer's clock, Unix ms.
    pub refused_at_ms: u64,
    /// Witness-key signature, hex.
    pub signature: String,
}

impl PendingRefusal {
    /// The refusal and its signature bytes.
    pub fn signed(&self) -> (Refusal, Vec<u8>) {
        (
            Refusal {
                withdrawal_id: self.withdrawal_id.clone(),
                signer: self.signer.clone(),
                request: self.request.clone(),
                reason: self.reason.clone(),
                refused_at_ms: self.refused_at_ms,
            },
            hex::decode(&self.signature).unwrap_or_default(),
        )
    }
}

/// Truncates `reason` to [`MAX_REASON_CHARS`] characters.
pub fn bounded_reason(reason: &str) -> String {
    match reason.char_indices().nth(MAX_REASON_CHARS) {
        Some((cut, _)) => format!("{}…", &reason[..cut]),
        None => reason.to_owned(),
    }
}

/// The pending refusals and their file.
#[derive(Debug)]
pub struct Refusals {
    path: PathBuf,
    grace_ms: u64,
    pending: Mutex<Vec<PendingRefusal>>,
}

impl Refusals {
    /// Loads `dir/refusals.json` (none: nothing pending); signing is held
    /// once a refusal has waited `grace_secs` unlogged.
    pub fn open(dir: &Path, grace_secs: u64) -> Result<Self, NodeError> {
        let path = dir.join("refusals.json");
        let pending = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                NodeError::Internal(format!(
                    "{}: {e} (move it aside to start over)",
                    path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(NodeError::storage(&path, e)),
        };
        Ok(Self {
            path,
            grace_ms: grace_secs.saturating_mul(1000),
            pending: Mutex::new(pending),
        })
    }

    fn persist(&self, pending: &[PendingRefusal]) -> Result<(), NodeError> {
        let bytes = serde_json::to_vec(pending).map_err(|e| NodeError::Internal(e.to_string()))?;
        crate::store::write_atomic(&self.path, &bytes)
    }

    /// Records a signed refusal (persisted before it returns). The same
    /// refusal (withdrawal, request and reason) already pending is not
    /// recorded twice: a coordinator retrying in a loop leaves one record
    /// until that one is logged.
    pub fn record(&self, refusal: Refusal, signature: &[u8]) -> Result<(), NodeError> {
        let mut g = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if g.iter().any(|p| {
            p.withdrawal_id == refusal.withdrawal_id
                && p.request == refusal.request
                && p.reason == refusal.reason
        }) {
            return Ok(());
        }
        if g.len() >= MAX_PENDING {
            tracing::warn!(
                withdrawal = %refusal.withdrawal_id,
                reason = %refusal.reason,
                "{MAX_PENDING} refusals already wait for the log: this one is not kept"
            );
            return Ok(());
        }
        let mut next = g.clone();
        next.push(PendingRefusal {
            withdrawal_id: refusal.withdrawal_id,
            signer: refusal.signer,
            request: refusal.request,
            reason: refusal.reason,
            refused_at_ms: refusal.refused_at_ms,
            signature: hex::encode(signature),
        });
        self.persist(&next)?;
        *g = next;
        Ok(())
    }

    /// The refusals not yet in the log, dropping (durably) those `logged`
    /// says are.
    pub fn unlogged(
        &self,
        logged: impl Fn(&PendingRefusal) -> bool,
    ) -> Result<Vec<PendingRefusal>, NodeError> {
        let mut g = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let keep: Vec<PendingRefusal> = g.iter().filter(|p| !logged(p)).cloned().collect();
        if keep.len() != g.len() {
            self.persist(&keep)?;
            *g = keep.clone();
        }
        Ok(keep)
    }

    /// Refuses (not ready) while a refusal older than the grace period is
    /// not in the log; `now_ms` is this signer's clock.
    pub fn check_logged(
        &self,
        now_ms: u64,
        logged: impl Fn(&PendingRefusal) -> bool,
    ) -> Result<(), NodeError> {
        let pending = self.unlogged(logged)?;
        let overdue: Vec<&PendingRefusal> = pending
            .iter()
            .filter(|p| now_ms.saturating_sub(p.refused_at_ms) > self.grace_ms)
            .collect();
        match overdue.first() {
            None => Ok(()),
            Some(oldest) => Err(NodeError::NotReady(format!(
                "{} refusal(s) by this signer are not in the audit log after {} s (the oldest: {} of withdrawal {:?}, {} s ago): it signs nothing until the coordinator logs them",
                overdue.len(),
                self.grace_ms / 1000,
                oldest.request,
                oldest.withdrawal_id,
                now_ms.saturating_sub(oldest.refused_at_ms) / 1000
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn refusal(id: &str, at: u64) -> Refusal {
        Refusal {
            withdrawal_id: id.into(),
            signer: "signer-1".into(),
            request: "sign_withdrawal".into(),
            reason: "time lock".into(),
            refused_at_ms: at,
        }
    }

    #[test]
    fn overdue_unlogged_refusal_holds_signing_until_logged_and_survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        let r = Refusals::open(dir.path(), 60).unwrap();
        let none = |_: &PendingRefusal| false;
        r.record(refusal("wd-1", 1_000), &[1; 64]).unwrap();
        // A retry of the same request is not a second record.
        r.record(refusal("wd-1", 2_000), &[2; 64]).unwrap();
        r.record(refusal("wd-2", 5_000), &[3; 64]).unwrap();
        assert_eq!(r.unlogged(none).unwrap().len(), 2);
        // Within the grace period signing goes on.
        r.check_logged(60_000, none).unwrap();
        // After it, a rogue coordinator that never logs them gets nothing.
        let held = r.check_logged(61_001, none).unwrap_err();
        assert!(matches!(held, NodeError::NotReady(_)));
        assert!(held.to_string().contains("\"wd-1\""), "{held}");
        // A restart does not forget them.
        drop(r);
        let r = Refusals::open(dir.path(), 60).unwrap();
        assert!(r.check_logged(61_001, none).is_err());
        // Once the log carries wd-1's refusal only wd-2's is pending, and it
        // is not yet overdue.
        let logged = |p: &PendingRefusal| p.withdrawal_id == "wd-1";
        r.check_logged(61_001, logged).unwrap();
        let left = r.unlogged(none).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].withdrawal_id, "wd-2");
        assert_eq!(left[0].signed().1, vec![3; 64]);
    }

    #[test]
    fn reasons_are_bounded() {
        let long = "é".repeat(5000);
        let b = bounded_reason(&long);
        assert_eq!(b.chars().count(), MAX_REASON_CHARS + 1);
        assert_eq!(bounded_reason("short"), "short");
    }
}
