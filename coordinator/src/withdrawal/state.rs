//! Withdrawal lifecycle states (docs/ARCHITECTURE.md): the audit log's
//! [`custos_audit::WithdrawalStatus`], so the coordinator, the log and the
//! verifier share one list of states with one set of stored names; which
//! state follows which is [`super::machine`]'s, whose tests check the
//! list's `is_terminal` and `cancellable` against its table.

pub use custos_audit::WithdrawalStatus as State;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_is_not_cancellable() {
        assert!(!State::Signed.cancellable());
        assert!(!State::Signing.cancellable());
        assert!(State::TimeLocked.cancellable());
    }

    #[test]
    fn stored_names_are_the_ones_rows_already_hold() {
        // Rows written before the list moved to custos-audit must still parse.
        let names = [
            "requested",
            "risk_scored",
            "policy_evaluated",
            "blocked",
            "awaiting_approvals",
            "approved",
            "time_locked",
            "signing",
            "signed",
            "broadcast",
            "confirmed",
            "rejected",
            "cancelled",
            "expired",
            "failed",
        ];
        let stored: Vec<&str> = State::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(stored, names);
        for n in names {
            assert_eq!(State::parse(n).map(State::as_str), Some(n));
        }
    }
}
