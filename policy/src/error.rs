//! The one error type of this crate.

use std::fmt;

/// A problem found while validating a policy document.
///
/// `path` points at the offending item (for example `rules[2].approvals`), so the
/// author can find it without reading the code.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Issue {
    /// Where in the document the problem is.
    pub path: String,
    /// What is wrong, in plain words.
    pub message: String,
}

impl Issue {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

fn join(issues: &[Issue]) -> String {
    issues
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Everything that can go wrong in the policy crate.
///
/// Variants say who is at fault: the policy author, the caller (withdrawal or
/// history input), the admins (bundle signatures), or an approver (statement input).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The policy author: the document is not well-formed TOML/JSON, has unknown
    /// fields or values of the wrong type.
    #[error("policy document could not be parsed: {0}")]
    Parse(String),
    /// The policy author: the document parsed but breaks one or more rules.
    #[error("policy document is invalid: {}", join(.0))]
    Invalid(Vec<Issue>),
    /// The caller: a withdrawal field is missing or malformed.
    #[error("withdrawal field `{field}` is invalid: {reason}")]
    InvalidWithdrawal {
        /// The field at fault.
        field: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// The caller: a history entry is malformed.
    #[error("history entry {index} is invalid: {reason}")]
    InvalidHistory {
        /// Position of the entry in the history list.
        index: usize,
        /// Why it was refused.
        reason: String,
    },
    /// The admins (or whoever delivered the bundle): too few valid admin signatures.
    #[error("policy bundle {hash} is not authorised: {valid} valid admin signature(s), {required} required{}", if .problems.is_empty() { String::new() } else { format!(" ({})", .problems.join("; ")) })]
    BundleUnauthorized {
        /// Hex hash of the bundle.
        hash: String,
        /// Distinct, valid admin signatures found.
        valid: usize,
        /// Admin quorum configured out of band.
        required: usize,
        /// Signatures that were ignored, and why.
        problems: Vec<String>,
    },
    /// The admins: a policy update does not follow from the policy in force.
    #[error("policy update refused: {0}")]
    UpdateRefused(String),
    /// The caller: the policy named is known but its change delay has not elapsed.
    #[error("policy {hash} is not in force until {effective_at} (now {now})")]
    NotYetEffective {
        /// Hex hash of the pending policy.
        hash: String,
        /// Unix seconds when it takes effect.
        effective_at: i64,
        /// Unix seconds of the check.
        now: i64,
    },
    /// The caller: the policy hash named is neither in force nor pending.
    #[error("policy {0} is unknown to this node")]
    UnknownPolicy(String),
    /// Whoever produced the bytes: an approval statement is malformed.
    #[error("approval statement is malformed: {0}")]
    Statement(String),
    /// The caller: a timestamp, duration or amount string is malformed.
    #[error("{0}")]
    Value(String),
    /// The request: a signing authorisation does not hold (policy, approvals, expiry).
    #[error("signing refused: {0}")]
    Refused(String),
    /// An approver's passkey assertion fails the named check.
    #[error("passkey assertion refused: {0}")]
    Passkey(crate::webauthn::PasskeyCheck),
    /// The caller: key material is malformed.
    #[error("key is invalid: {0}")]
    Key(String),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, PolicyError>;
