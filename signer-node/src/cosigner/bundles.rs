//! Policy bundles this signer has accepted, with when it first saw each: its
//! own governance state, so a relaxation or a new address waits its delay on
//! this signer's clock whatever the coordinator claims.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use custos_policy::{
    ActivePolicy, AdminSet, BundleSignatures, PolicyHash, PolicyState, Timestamp, verify_bundle,
};
use serde::{Deserialize, Serialize};

use crate::error::NodeError;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Seen {
    document: String,
    signatures: String,
    first_seen: i64,
}

/// The bundles seen and the state they imply.
pub struct Bundles {
    path: PathBuf,
    admins: AdminSet,
    inner: Mutex<(Vec<Seen>, Option<PolicyState>)>,
}

impl std::fmt::Debug for Bundles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundles").field("path", &self.path).finish()
    }
}

fn refused(m: impl std::fmt::Display) -> NodeError {
    NodeError::Refused(m.to_string())
}

impl Bundles {
    /// Loads `dir/policy-bundles.json`, re-verifying every bundle.
    pub fn open(dir: &Path, admins: AdminSet) -> Result<Self, NodeError> {
        let path = dir.join("policy-bundles.json");
        let seen: Vec<Seen> = if path.exists() {
            let b = std::fs::read(&path).map_err(|e| NodeError::storage(&path, e))?;
            serde_json::from_slice(&b)
                .map_err(|e| NodeError::Internal(format!("{}: {e}", path.display())))?
        } else {
            Vec::new()
        };
        let mut state: Option<PolicyState> = None;
        for s in &seen {
            let v = verify(s.document.as_bytes(), s.signatures.as_bytes(), &admins)?;
            match &mut state {
                None => state = Some(PolicyState::genesis(v, Timestamp(s.first_seen))),
                Some(st) => {
                    let _ = st.propose(v, Timestamp(s.first_seen));
                }
            }
        }
        Ok(Self {
            path,
            admins,
            inner: Mutex::new((seen, state)),
        })
    }

    /// Whether this signer has been shown (and accepted) the bundle with
    /// policy hash `hash_hex`.
    pub fn knows(&self, hash_hex: &str) -> bool {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0.iter().any(|s| {
            PolicyHash::of_document(s.document.as_bytes())
                .to_string()
                .eq_ignore_ascii_case(hash_hex)
        })
    }

    /// Verifies `document` against the admin set and remembers it
    /// (persisted, with this signer's clock as its first sighting) if it is
    /// new; refuses a bundle the governance rules refuse (an older version).
    pub fn learn(
        &self,
        document: &[u8],
        signatures: &[u8],
        now: Timestamp,
    ) -> Result<(), NodeError> {
        let hash = PolicyHash::of_document(document);
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let known =
            g.0.iter()
                .any(|s| PolicyHash::of_document(s.document.as_bytes()) == hash);
        if known {
            return Ok(());
        }
        let v = verify(document, signatures, &self.admins)?;
        let doc = String::from_utf8(document.to_vec())
            .map_err(|_| refused("policy document is not UTF-8"))?;
        let sigs = String::from_utf8(signatures.to_vec())
            .map_err(|_| refused("policy signatures are not UTF-8"))?;
        let mut next_state = g.1.clone();
        match &mut next_state {
            None => next_state = Some(PolicyState::genesis(v, now)),
            Some(st) => {
                st.propose(v, now)
                    .map_err(|e| refused(format!("policy update {hash}: {e}")))?;
            }
        }
        let mut next_seen = g.0.clone();
        next_seen.push(Seen {
            document: doc,
            signatures: sigs,
            first_seen: now.0,
        });
        let bytes = serde_json::to_vec_pretty(&next_seen)
            .map_err(|e| NodeError::Internal(e.to_string()))?;
        crate::store::write_atomic(&self.path, &bytes)?;
        *g = (next_seen, next_state);
        Ok(())
    }

    /// Verifies `document`'s `signatures` against this signer's admin set,
    /// whether or not the bundle was seen before: an irreversible act (a
    /// key's retirement) needs the admin quorum's signatures in the request
    /// itself.
    pub fn check_quorum(&self, document: &[u8], signatures: &[u8]) -> Result<(), NodeError> {
        verify(document, signatures, &self.admins).map(|_| ())
    }

    /// The policy named by `document` if this signer accepts it as the one in
    /// force at `now`: verified against the admin set, remembered (persisted
    /// before use) the first time, and subject to relaxation delays.
    pub fn in_force(
        &self,
        document: &[u8],
        signatures: &[u8],
        now: Timestamp,
    ) -> Result<ActivePolicy, NodeError> {
        self.learn(document, signatures, now)?;
        let hash = PolicyHash::of_document(document);
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let st =
            g.1.as_mut()
                .ok_or_else(|| NodeError::Internal("no policy state".into()))?;
        st.advance(now);
        st.policy_for(&hash, now)
            .cloned()
            .map_err(|e| refused(format!("policy {hash}: {e}")))
    }
}

fn verify(
    document: &[u8],
    signatures: &[u8],
    admins: &AdminSet,
) -> Result<custos_policy::VerifiedBundle, NodeError> {
    let sigs: BundleSignatures = serde_json::from_slice(signatures)
        .map_err(|e| refused(format!("policy signatures are not valid JSON: {e}")))?;
    verify_bundle(document, &sigs, admins).map_err(|e| refused(format!("policy bundle: {e}")))
}
