//! The withdrawal lifecycle's states: the one list the coordinator runs
//! (`custos_coordinator::withdrawal::State` is this type), the audit log
//! records (`StatusChanged` entries) and the verifier reads.
//!
//! The transitions between them are the coordinator's (its `machine`
//! module); what is fixed here is the set of states, their stored names,
//! their order (which gives their tags in log entries, so it never
//! changes: a new state goes last) and the two properties every reader
//! needs: which states are final and until when a cancel is possible. The
//! coordinator's machine tests check both against its transition table.

use std::fmt;

/// Where a withdrawal is in its lifecycle (docs/ARCHITECTURE.md). In log
/// entries a state is the tag `1 + its position` in [`WithdrawalStatus::ALL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // the names are the lifecycle
pub enum WithdrawalStatus {
    Requested,
    RiskScored,
    PolicyEvaluated,
    Blocked,
    AwaitingApprovals,
    Approved,
    TimeLocked,
    Signing,
    Signed,
    Broadcast,
    Confirmed,
    Rejected,
    Cancelled,
    Expired,
    Failed,
}

impl WithdrawalStatus {
    /// Every state, in lifecycle order (the order of the log's tags).
    pub const ALL: [WithdrawalStatus; 15] = [
        Self::Requested,
        Self::RiskScored,
        Self::PolicyEvaluated,
        Self::Blocked,
        Self::AwaitingApprovals,
        Self::Approved,
        Self::TimeLocked,
        Self::Signing,
        Self::Signed,
        Self::Broadcast,
        Self::Confirmed,
        Self::Rejected,
        Self::Cancelled,
        Self::Expired,
        Self::Failed,
    ];

    /// The stored and displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::RiskScored => "risk_scored",
            Self::PolicyEvaluated => "policy_evaluated",
            Self::Blocked => "blocked",
            Self::AwaitingApprovals => "awaiting_approvals",
            Self::Approved => "approved",
            Self::TimeLocked => "time_locked",
            Self::Signing => "signing",
            Self::Signed => "signed",
            Self::Broadcast => "broadcast",
            Self::Confirmed => "confirmed",
            Self::Rejected => "rejected",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
            Self::Failed => "failed",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// No further transition happens from here. `signed` is terminal for
    /// chains without an adapter; a signed withdrawal with a transaction moves
    /// on to `broadcast` (the coordinator's store resumes those too).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Blocked
                | Self::Signed
                | Self::Confirmed
                | Self::Rejected
                | Self::Cancelled
                | Self::Expired
                | Self::Failed
        )
    }

    /// Whether a cancellation is still possible: nothing signed yet and not
    /// finished (every state before `signing` except `blocked`).
    pub fn cancellable(self) -> bool {
        matches!(
            self,
            Self::Requested
                | Self::RiskScored
                | Self::PolicyEvaluated
                | Self::AwaitingApprovals
                | Self::Approved
                | Self::TimeLocked
        )
    }

    /// The state itself: the name call sites used when the coordinator had
    /// an enum of its own and converted it for the log. Kept until they are
    /// rewritten; new code passes the state as it is.
    pub fn audit_status(self) -> Self {
        self
    }

    /// The tag in log entries.
    pub(crate) fn tag(self) -> u8 {
        Self::ALL
            .iter()
            .position(|s| *s == self)
            .map_or(0, |i| i as u8 + 1)
    }

    /// The state with log tag `tag`.
    pub(crate) fn from_tag(tag: u8) -> Option<Self> {
        Self::ALL.get(usize::from(tag).checked_sub(1)?).copied()
    }
}

impl fmt::Display for WithdrawalStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in WithdrawalStatus::ALL {
            assert_eq!(WithdrawalStatus::parse(s.as_str()), Some(s));
            assert_eq!(s.to_string(), s.as_str());
        }
        assert_eq!(WithdrawalStatus::parse("nope"), None);
    }

    #[test]
    fn tags_are_positions_from_one() {
        for (i, s) in WithdrawalStatus::ALL.into_iter().enumerate() {
            assert_eq!(usize::from(s.tag()), i + 1);
            assert_eq!(WithdrawalStatus::from_tag(s.tag()), Some(s));
        }
        assert_eq!(WithdrawalStatus::from_tag(0), None);
        assert_eq!(WithdrawalStatus::from_tag(16), None);
    }

    #[test]
    fn cancel_is_possible_until_signing_and_never_when_terminal() {
        let signing = WithdrawalStatus::ALL
            .iter()
            .position(|s| *s == WithdrawalStatus::Signing)
            .unwrap();
        for (i, s) in WithdrawalStatus::ALL.into_iter().enumerate() {
            assert_eq!(s.cancellable(), i < signing && !s.is_terminal(), "{s}");
        }
    }
}
