//! Execution ids: every session binds its kind, key, participants and request.
//!
//! cggmp21 requires an execution id that never repeats; all its proofs are
//! bound to it, so a message replayed from another session fails to verify.
//! We derive it deterministically so every signer computes it independently
//! from the request it verified, instead of trusting one sent to it.

use sha2::{Digest, Sha256};

/// Which protocol a session runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionKind {
    /// Auxiliary info (Paillier keys) for a signer group.
    AuxInfo,
    /// Distributed key generation.
    Keygen,
    /// Presignature generation.
    Presign,
    /// Full (interactive) signing without a presignature.
    Sign,
    /// Share refresh (FROST): new shares of the same key.
    Refresh,
    /// Repair of one party's lost share by `t` others (FROST).
    Repair,
}

impl SessionKind {
    fn tag(self) -> &'static [u8] {
        match self {
            SessionKind::AuxInfo => b"aux-info",
            SessionKind::Keygen => b"keygen",
            SessionKind::Presign => b"presign",
            SessionKind::Sign => b"sign",
            SessionKind::Refresh => b"refresh",
            SessionKind::Repair => b"repair",
        }
    }
}

/// A 32-byte execution id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExecutionId(pub [u8; 32]);

impl ExecutionId {
    /// Derives the id of a session. `participants` are the signers' node ids
    /// in protocol index order; `request` is the request-specific data (a
    /// fresh nonce for keygen, the presignature id, the request id and
    /// digest for signing).
    pub fn derive(kind: SessionKind, key_id: &str, participants: &[&str], request: &[u8]) -> Self {
        let mut h = Sha256::new();
        // Length-prefix every field so no two inputs share an encoding.
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        };
        field(b"custos/mpc/execution-id/v1");
        field(kind.tag());
        field(key_id.as_bytes());
        field(&(participants.len() as u64).to_be_bytes());
        for p in participants {
            field(p.as_bytes());
        }
        field(request);
        ExecutionId(h.finalize().into())
    }

    /// Hex form for logs and errors (not secret).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Debug for ExecutionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ExecutionId({})", &self.to_hex()[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_changes_the_id() {
        let base = ExecutionId::derive(SessionKind::Sign, "k1", &["a", "b"], b"r");
        assert_ne!(
            base,
            ExecutionId::derive(SessionKind::Presign, "k1", &["a", "b"], b"r")
        );
        assert_ne!(
            base,
            ExecutionId::derive(SessionKind::Sign, "k2", &["a", "b"], b"r")
        );
        assert_ne!(
            base,
            ExecutionId::derive(SessionKind::Sign, "k1", &["b", "a"], b"r")
        );
        assert_ne!(
            base,
            ExecutionId::derive(SessionKind::Sign, "k1", &["a", "b"], b"s")
        );
        // Field boundaries are unambiguous.
        assert_ne!(
            ExecutionId::derive(SessionKind::Sign, "k1", &["ab"], b""),
            ExecutionId::derive(SessionKind::Sign, "k1", &["a", "b"], b"")
        );
        assert_eq!(
            base,
            ExecutionId::derive(SessionKind::Sign, "k1", &["a", "b"], b"r")
        );
    }
}
