//! Errors of the signer node, by who is at fault.

use std::path::Path;

/// Why a signer refused or failed a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The request is malformed or inconsistent with this node's state.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Something the request names does not exist here.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request repeats a session or presignature: refused.
    #[error("replay refused: {0}")]
    Replay(String),
    /// The node cannot serve this yet (aux info missing, primes still generating).
    #[error("not ready: {0}")]
    NotReady(String),
    /// A peer misbehaved; the session aborted.
    #[error("signer {node} misbehaved: {reason}")]
    PeerMisbehaved {
        /// The culprit's node id.
        node: String,
        /// What it did.
        reason: String,
    },
    /// Peers did not answer within the session timeout.
    #[error("session timed out after {secs}s waiting for {absent:?}")]
    Timeout {
        /// Seconds waited.
        secs: u64,
        /// Node ids that did not deliver their messages.
        absent: Vec<String>,
    },
    /// A peer did not acknowledge this session's messages however often
    /// they were resent; the session aborted.
    #[error("signer {node} did not receive this session's messages: {reason}")]
    PeerUnreachable {
        /// The peer's node id.
        node: String,
        /// The last transport error.
        reason: String,
    },
    /// The protocol failed without a named culprit.
    #[error("protocol failed: {0}")]
    Protocol(String),
    /// The data directory failed: fail closed.
    #[error("storage failure at {path}: {message}")]
    Storage {
        /// The file or directory.
        path: String,
        /// The OS error.
        message: String,
    },
    /// Sealing or unsealing failed: fail closed.
    #[error("sealer: {0}")]
    Sealer(#[from] custos_hsm::HsmError),
    /// This signer's own checks refuse the request (policy, approvals, time
    /// lock, history, audit log).
    #[error("refused by co-signer checks: {0}")]
    Refused(String),
    /// A withdrawal from a derived address names a path whose child key, as
    /// this signer derives it from its own record of the wallet key, has
    /// another address than the approved source address: refused (and
    /// logged as a refusal).
    #[error(
        "wallet {wallet}: source path {path} derives {derived}, not the source address {claimed}: refused"
    )]
    SourceMismatch {
        /// The wallet (key id).
        wallet: String,
        /// The path the request names.
        path: String,
        /// The address this signer derived for it.
        derived: String,
        /// The address the request claims.
        claimed: String,
    },
    /// The request comes from a coordinator whose leadership epoch is older
    /// than one this signer has already seen: a newer coordinator leads and
    /// this one is fenced off (paused, partitioned or not yet aware).
    #[error(
        "coordinator epoch {epoch} older than {highest}: a newer coordinator leads, request refused"
    )]
    StaleEpoch {
        /// The epoch the request carried.
        epoch: u64,
        /// The highest epoch this signer has recorded.
        highest: u64,
    },
    /// The key is retired (the audit log's entry `retirement_index` says
    /// so): this signer destroyed, or will destroy, its share and never
    /// signs with it again.
    #[error("key {key_id} is retired (audit log entry {retirement_index}): it never signs again")]
    KeyRetired {
        /// The retired key.
        key_id: String,
        /// The `key_retired` entry this signer witnessed.
        retirement_index: u64,
    },
    /// A request to destroy a key's share lacks the admins' authorization
    /// as this signer checks it itself: nothing was destroyed.
    #[error("retiring key {key_id} refused, nothing destroyed: {missing}")]
    RetirementUnauthorized {
        /// The key the request names.
        key_id: String,
        /// What this signer found missing.
        missing: RetirementGap,
    },
    /// A bug or corrupt internal state.
    #[error("internal error: {0}")]
    Internal(String),
}

/// What is missing from a key's retirement, as a signer checks it before it
/// destroys its share: the admin quorum's word (a signed policy listing the
/// key, activated by the log) and the log's `key_retired` entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RetirementGap {
    /// This signer witnesses no audit log.
    #[error("this signer witnesses no audit log, so nothing proves the retirement")]
    NoWitness,
    /// This signer has no admin set (`[cosigner] admins`).
    #[error("no admin set configured ([cosigner] admins): no admin can authorize it")]
    NoAdminSet,
    /// The request carries no policy document.
    #[error(
        "the request carries no policy bundle: the admins must list the key under retired_keys in a signed policy bundle"
    )]
    NoBundle,
    /// The log this signer witnessed activated no policy.
    #[error("the audit log this signer witnessed activated no policy")]
    NoPolicyActivated,
    /// The bundle shown is not the newest policy the log activated.
    #[error(
        "the policy shown ({shown}) is not the newest the audit log this signer witnessed activated ({newest}, version {version}, entry {index})"
    )]
    NotNewestPolicy {
        /// Hash of the document shown.
        shown: String,
        /// Hash of the newest activation.
        newest: String,
        /// Its version.
        version: u64,
        /// Its entry index.
        index: u64,
    },
    /// The bundle is not admin-signed (quorum of this signer's admin set) or
    /// not in force on this signer's clock.
    #[error("the policy bundle is refused: {0}")]
    Bundle(String),
    /// The admin-signed policy in force does not list the key.
    #[error(
        "policy {hash} (version {version}) does not list it under retired_keys: the admins must list the key under retired_keys in a signed policy bundle"
    )]
    NotListed {
        /// Policy hash.
        hash: String,
        /// Its version.
        version: u64,
    },
    /// The log this signer witnessed has no `key_retired` entry for the key.
    #[error("the audit log this signer witnessed (entries 0..{size}) does not retire it")]
    NotInLog {
        /// Entries witnessed.
        size: u64,
    },
}

impl NodeError {
    pub(crate) fn storage(path: &Path, e: std::io::Error) -> Self {
        NodeError::Storage {
            path: path.display().to_string(),
            message: e.to_string(),
        }
    }
}
