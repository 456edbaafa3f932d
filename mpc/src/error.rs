use thiserror::Error;

/// Why a protocol session failed, separating who is at fault.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MpcError {
    /// A peer sent data that failed a check; the session aborted.
    #[error("party {party} misbehaved: {reason}")]
    PeerMisbehaved {
        /// Session-local index of the culprit.
        party: u16,
        /// What was wrong.
        reason: String,
    },
    /// The protocol aborted but the crate could not attribute the fault.
    #[error("protocol aborted: {0}")]
    Aborted(String),
    /// The transport failed or closed before the session finished.
    #[error("transport closed before the session finished: {0}")]
    Transport(String),
    /// The caller passed arguments the protocol cannot run with.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A derivation path that is malformed, hardened or too deep (HD
    /// wallets derive non-hardened children only).
    #[error("derivation path {path:?}: {reason}")]
    InvalidDerivationPath {
        /// The path as given (at most 64 characters of it).
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Stored protocol state could not be (de)serialised.
    #[error("invalid stored state: {0}")]
    InvalidState(String),
    /// Combined partial signatures do not verify under the public key.
    #[error("combined signature does not verify: a partial signature was invalid")]
    InvalidSignature,
    /// Signature shares that do not verify against their signers' verifying
    /// shares (FROST cheater detection): no signature was produced.
    #[error("invalid signature share from party {parties:?} (keygen indices)")]
    InvalidSignatureShare {
        /// Keygen indices of the signers whose shares are bad.
        parties: Vec<u16>,
    },
    /// A signer's partial signature that does not parse (keygen index of
    /// the signer that sent it).
    #[error("malformed partial signature from party {party} (keygen index): {reason}")]
    MalformedPartial {
        /// Keygen index of the signer.
        party: u16,
        /// What was wrong.
        reason: String,
    },
    /// A signer signed another signing package than the one combined (another
    /// message, or other nonce commitments): FROST tells it apart from an
    /// invalid share over the right package (keygen index).
    #[error(
        "party {party} (keygen index) signed another signing package (other message or nonce commitments)"
    )]
    WrongSigningPackage {
        /// Keygen index of the signer.
        party: u16,
    },
    /// The key's scheme has no such operation (cggmp21 ECDSA has no share
    /// refresh or repair here): the caller asked for what cannot be done.
    #[error("{scheme} keys do not support {operation}")]
    Unsupported {
        /// The key's scheme.
        scheme: crate::scheme::SchemeId,
        /// What was asked (`share refresh`, `share repair`).
        operation: &'static str,
    },
    /// The session's owner cancelled it (timeout, caller gone); the protocol
    /// work stopped at a stage boundary.
    #[error("session cancelled")]
    Cancelled,
}
