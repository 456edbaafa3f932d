//! What one withdrawal's latest decision grants (steps 1 to 3 of the
//! replay), and the checks that depend on when it was signed: the quorum of
//! approvals at that time (step 4) and the time lock (step 5).
//!
//! A signature is checked for its own withdrawal with this; so is every
//! other withdrawal a batched transaction pays (`batch`), at the signing
//! time of the transaction's first input, since its signature authorises
//! all of the transaction's outputs at once.

use custos_audit::entry::DecisionOutcome;
use custos_audit::{Entry, EntryBody};
use custos_policy::{ActivePolicy, Decision, Outcome, Timestamp, Withdrawal};

use crate::VerifyError;
use crate::approvals::{LoggedApprovals, Quorum};
use crate::decision::{LoggedDecision, LoggedRequest, LoggedRule, active_at, reevaluate};
use crate::policies::PolicySet;

/// Steps 1 to 3 for one withdrawal: its latest decision, checked against
/// the trusted policy, and its logged request re-evaluated.
pub(crate) struct Grant<'a> {
    /// The withdrawal's entries before the signing (time) checked.
    pub(crate) history: &'a [&'a Entry],
    /// Those after the decision.
    pub(crate) after: &'a [&'a Entry],
    pub(crate) decision: LoggedDecision<'a>,
    pub(crate) rule: LoggedRule<'a>,
    pub(crate) request: LoggedRequest,
    /// The logged request with the approved fee cap.
    pub(crate) withdrawal: Withdrawal,
    /// The decision's policy as the replay assumes it active.
    pub(crate) active: ActivePolicy,
    /// The approvals after the decision.
    pub(crate) approvals: LoggedApprovals<'a>,
    /// The policy engine's decision for the logged request.
    reevaluated: Decision,
}

impl<'a> Grant<'a> {
    /// Steps 1 to 3 for `withdrawal`, whose entries are `history`;
    /// `activations` are the policy activations before the signing.
    pub(crate) fn replay(
        policies: &'a PolicySet,
        history: &'a [&'a Entry],
        withdrawal: &str,
        activations: &[&Entry],
    ) -> Result<Self, VerifyError> {
        let decision = LoggedDecision::latest(history, withdrawal)?;
        // 1. The policy document, and the admin quorum of its activation.
        let policy = decision.policy_in(policies)?;
        decision.check_activation(policies, activations)?;
        // 2. The rule and the logged outcome.
        let rule = decision.rule_in(policy)?;
        decision.check_outcome(&rule)?;
        // 3. The logged request, re-evaluated.
        let before = history.get(..decision.position).unwrap_or_default();
        let after = history.get(decision.position + 1..).unwrap_or_default();
        let request = LoggedRequest::before(before, withdrawal, &decision)?;
        let approvals = LoggedApprovals::after(after)?;
        let logged = request.withdrawal(approvals.fee_cap());
        let active = active_at(policy, &decision);
        let reevaluated = reevaluate(&active, &rule, &decision, &logged, &request)?;
        Ok(Self {
            history,
            after,
            decision,
            rule,
            request,
            withdrawal: logged,
            active,
            approvals,
            reevaluated,
        })
    }

    /// What the structural replay checks for a signed withdrawal, for one
    /// that is paid without a signature of its own: not cancelled, not
    /// denied, decided under the policy active at that point of the log.
    pub(crate) fn check_structure(&self, activations: &[&Entry]) -> Result<(), VerifyError> {
        if let Some(c) = self
            .history
            .iter()
            .find(|e| matches!(e.body, EntryBody::Cancelled { .. }))
        {
            return Err(VerifyError::Cancelled {
                withdrawal: self.withdrawal.id.clone(),
                entry: c.index,
            });
        }
        if self.decision.outcome == DecisionOutcome::Deny {
            return Err(VerifyError::Denied {
                decision: self.decision.index(),
                rule: self.decision.rule_id.to_owned(),
            });
        }
        let active = activations
            .iter()
            .rev()
            .find(|p| p.index < self.decision.index());
        match active.map(|p| &p.body) {
            Some(EntryBody::PolicyActivated { policy_hash, .. })
                if hex::encode(policy_hash) == self.decision.policy =>
            {
                Ok(())
            }
            _ => Err(VerifyError::PolicyNotActive {
                decision: self.decision.index(),
                policy: self.decision.policy.clone(),
            }),
        }
    }

    /// The approvals as one quorum (the rule requires approvals).
    pub(crate) fn quorum(&self) -> Result<Quorum<'a>, VerifyError> {
        self.approvals.quorum(self.decision.index())
    }

    /// Step 4: `quorum` meets the rule at `at`. Returns the log time at
    /// which it was complete.
    pub(crate) fn check_quorum(
        &self,
        quorum: &Quorum<'_>,
        at: Timestamp,
    ) -> Result<u64, VerifyError> {
        let decision = self.decision_for_rule();
        quorum.check(&self.active, &decision, at)?;
        Ok(quorum
            .completed_at_ms(&self.active, &decision, at)
            .unwrap_or(self.decision.entry.timestamp_ms))
    }

    /// The decision for the logged rule, with the re-evaluated (canonical)
    /// withdrawal summary: `check_approvals` reads the quorum, groups,
    /// initiator exclusion and lifetime from the policy.
    fn decision_for_rule(&self) -> Decision {
        let mut d = self.reevaluated.clone();
        d.rule_id = Some(self.rule.rule.id.clone());
        d.rule_index = Some(self.rule.index);
        d.outcome = Outcome::RequireApprovals;
        d
    }

    /// Step 5: `session` started no earlier than the rule's delay after
    /// `quorum_at_ms`, by the log's clock (one second of tolerance for the
    /// coordinator's whole-second clock).
    pub(crate) fn check_time_lock(
        &self,
        session: &Entry,
        quorum_at_ms: u64,
    ) -> Result<(), VerifyError> {
        let Some(delay) = self.rule.rule.delay else {
            return Ok(());
        };
        let due = quorum_at_ms.saturating_add(delay.0.saturating_mul(1000));
        if session.timestamp_ms.saturating_add(1000) >= due {
            return Ok(());
        }
        Err(VerifyError::TimeLock {
            session: session.index,
            after_ms: session.timestamp_ms.saturating_sub(quorum_at_ms),
            quorum_at_ms,
            rule: self.decision.rule_id.to_owned(),
            delay_secs: delay.0,
        })
    }
}
