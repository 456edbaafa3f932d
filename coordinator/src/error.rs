//! Errors of the coordinator's domain, by who is at fault.

/// Why a coordinator operation failed.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoordError {
    /// The caller's input is wrong; names the field.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Not found.
    #[error("not found: {0}")]
    NotFound(String),
    /// A unique id was reused.
    #[error("{0}")]
    AlreadyExists(String),
    /// The cluster is not ready for this (aux info, key state).
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// Too few signers reachable.
    #[error("{0}")]
    Unavailable(String),
    /// A signer misbehaved or the protocol aborted.
    #[error("{0}")]
    Aborted(String),
    /// A protocol session did not finish in time.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// A signer refused on its own checks (policy, approvals, time lock, history).
    #[error("refused: {0}")]
    Refused(String),
    /// The caller is not allowed to do this.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The database failed: nothing was signed.
    #[error("storage failure: {0}")]
    Storage(String),
    /// A bug.
    #[error("internal error: {0}")]
    Internal(String),
}
