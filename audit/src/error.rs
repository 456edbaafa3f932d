//! The one error type of this crate.

/// Errors of the audit crate.
///
/// Variants say who is at fault: the log operator or a peer (bad proofs,
/// signatures, split views), the caller (out-of-range arguments), the storage
/// backend, or the key backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The storage backend failed; the operation did not take effect.
    #[error("log storage failed: {0}")]
    Storage(String),
    /// Stored data contradicts itself (a missing node, a size mismatch): the
    /// store was altered or is corrupt.
    #[error("log storage is inconsistent: {0}")]
    Corrupt(String),
    /// Another writer appended first (the expected tree size did not match).
    #[error("append conflict: expected tree size {expected}, store has {actual}")]
    AppendConflict {
        /// The size this log expected.
        expected: u64,
        /// The size the store reported.
        actual: u64,
    },
    /// The log-signing or witness key backend failed. The source is the
    /// backend's own error (for example a PKCS#11 failure from `custos-hsm`),
    /// kept so an operator sees the cause.
    #[error("log signer failed: {0}")]
    Signer(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// The key uses an algorithm the note format here does not support.
    #[error("unsupported signature algorithm: {0}")]
    UnsupportedAlgorithm(String),
    /// A caller-supplied argument is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An encoded entry is malformed, non-canonical or of an unknown version.
    #[error("malformed entry: {0}")]
    MalformedEntry(String),
    /// A note, checkpoint, signature line or verifier key is malformed.
    #[error("malformed note: {0}")]
    MalformedNote(String),
    /// A signature does not verify under the named key.
    #[error("bad signature from {0}")]
    BadSignature(String),
    /// A note carries no signature from a required key.
    #[error("note is not signed by {0}")]
    MissingSignature(String),
    /// An inclusion or consistency proof does not verify.
    #[error("invalid proof: {0}")]
    InvalidProof(String),
    /// Two different root hashes for the same tree size: the log equivocated.
    #[error("split view at tree size {size}: root {seen} already witnessed, offered {offered}")]
    SplitView {
        /// The tree size with two roots.
        size: u64,
        /// Root already witnessed (hex).
        seen: String,
        /// Root offered now (hex).
        offered: String,
    },
    /// A checkpoint older than one already witnessed (rollback attempt).
    #[error("stale checkpoint: size {offered} is older than witnessed size {seen}")]
    StaleCheckpoint {
        /// Size already witnessed.
        seen: u64,
        /// Size offered.
        offered: u64,
    },
    /// A checkpoint for another log.
    #[error("checkpoint origin {offered:?} is not {expected:?}")]
    WrongOrigin {
        /// Origin this party is configured for.
        expected: String,
        /// Origin in the checkpoint.
        offered: String,
    },
    /// An entry is not covered by a checkpoint this witness co-signed (signers
    /// fail closed on this).
    #[error("entry {index} is not included in a witnessed checkpoint: {reason}")]
    NotWitnessed {
        /// The entry index.
        index: u64,
        /// Why.
        reason: String,
    },
    /// A signature entry is not backed by a satisfied authorisation.
    #[error("unauthorised signature: {0}")]
    Unauthorized(String),
}

impl AuditError {
    /// A [`crate::LogSigner`] backend failure, keeping `cause` as the source.
    pub fn signer(cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        AuditError::Signer(Box::new(cause))
    }
}
