//! The one error type of this crate.

/// Everything that can go wrong in the risk crate.
///
/// Scoring itself never fails (it always returns an assessment); only building a
/// [`crate::RiskModel`] or [`crate::RiskState`] from a bad [`crate::RiskConfig`] does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RiskError {
    /// A configuration field is out of range or malformed.
    #[error("invalid risk config: {field}: {reason}")]
    InvalidConfig {
        /// The offending field, as named in the config file (`deny_destinations[2]`).
        field: String,
        /// What is wrong, in plain words.
        reason: String,
    },
}

impl RiskError {
    pub(crate) fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidConfig {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = RiskError> = std::result::Result<T, E>;
