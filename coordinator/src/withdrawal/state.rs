//! Withdrawal lifecycle states (docs/ARCHITECTURE.md).

use std::fmt;

/// Where a withdrawal is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // the names are the lifecycle
pub enum State {
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

impl State {
    /// Every state, in lifecycle order.
    pub const ALL: [State; 15] = [
        State::Requested,
        State::RiskScored,
        State::PolicyEvaluated,
        State::Blocked,
        State::AwaitingApprovals,
        State::Approved,
        State::TimeLocked,
        State::Signing,
        State::Signed,
        State::Broadcast,
        State::Confirmed,
        State::Rejected,
        State::Cancelled,
        State::Expired,
        State::Failed,
    ];

    /// The stored and displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Requested => "requested",
            State::RiskScored => "risk_scored",
            State::PolicyEvaluated => "policy_evaluated",
            State::Blocked => "blocked",
            State::AwaitingApprovals => "awaiting_approvals",
            State::Approved => "approved",
            State::TimeLocked => "time_locked",
            State::Signing => "signing",
            State::Signed => "signed",
            State::Broadcast => "broadcast",
            State::Confirmed => "confirmed",
            State::Rejected => "rejected",
            State::Cancelled => "cancelled",
            State::Expired => "expired",
            State::Failed => "failed",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// No further transition happens from here. `signed` is terminal for
    /// chains without an adapter; a signed withdrawal with a transaction moves
    /// on to `broadcast` (the store resumes those too).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            State::Blocked
                | State::Signed
                | State::Confirmed
                | State::Rejected
                | State::Cancelled
                | State::Expired
                | State::Failed
        )
    }

    /// States in which a cancellation is still possible (nothing signed
    /// yet): the lifecycle's answer, [`super::machine::next`].
    pub fn cancellable(self) -> bool {
        super::machine::next(self, super::machine::Event::Cancel).is_ok()
    }

    /// The audit log's name for this state.
    pub fn audit_status(self) -> custos_audit::entry::WithdrawalStatus {
        use custos_audit::entry::WithdrawalStatus as W;
        match self {
            State::Requested => W::Requested,
            State::RiskScored => W::RiskScored,
            State::PolicyEvaluated => W::PolicyEvaluated,
            State::Blocked => W::Blocked,
            State::AwaitingApprovals => W::AwaitingApprovals,
            State::Approved => W::Approved,
            State::TimeLocked => W::TimeLocked,
            State::Signing => W::Signing,
            State::Signed => W::Signed,
            State::Broadcast => W::Broadcast,
            State::Confirmed => W::Confirmed,
            State::Rejected => W::Rejected,
            State::Cancelled => W::Cancelled,
            State::Expired => W::Expired,
            State::Failed => W::Failed,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in State::ALL {
            assert_eq!(State::parse(s.as_str()), Some(s));
        }
        assert_eq!(State::parse("nope"), None);
    }

    #[test]
    fn signed_is_not_cancellable() {
        assert!(!State::Signed.cancellable());
        assert!(!State::Signing.cancellable());
        assert!(State::TimeLocked.cancellable());
    }
}
