//! The decision behind a signature, replayed with the policy engine: the
//! decision's document and rule (steps 1 and 2 of the replay) and the
//! re-evaluation of the logged request (step 3).
//!
//! Re-evaluation uses the most permissive inputs the log allows: no earlier
//! withdrawals and every address-book entry past its cooling period. Under
//! them any rule that really matched still matches (or an earlier one does,
//! when velocity limits or cooling periods decided: history the log does not
//! fully carry), so a rule the request cannot match even then is flagged.

use custos_audit::entry::DecisionOutcome;
use custos_audit::{Entry, EntryBody};
use custos_policy::{
    ActionKind, ActivePolicy, Amount, Decision, Policy, Rule, Timestamp, Withdrawal, evaluate,
};

use crate::VerifyError;
use crate::policies::PolicySet;

/// Whole seconds of a log timestamp (the policy engine's clock).
pub(crate) fn secs(ms: u64) -> Timestamp {
    Timestamp(i64::try_from(ms / 1000).unwrap_or(i64::MAX))
}

/// The fields of a `signature_produced` entry the replay checks.
pub(crate) struct Signed<'a> {
    /// The withdrawal signed.
    pub(crate) withdrawal: &'a str,
    /// The signing session's execution id.
    pub(crate) execution_id: &'a [u8],
    /// The digest signed.
    pub(crate) digest: &'a [u8; 32],
}

impl<'a> Signed<'a> {
    pub(crate) fn from_entry(entry: &'a Entry) -> Result<Self, VerifyError> {
        match &entry.body {
            EntryBody::SignatureProduced {
                withdrawal_id,
                execution_id,
                message_digest,
                ..
            } => Ok(Signed {
                withdrawal: withdrawal_id,
                execution_id,
                digest: message_digest,
            }),
            _ => Err(VerifyError::NotASignature { entry: entry.index }),
        }
    }
}

/// The latest `policy_decision` entry of a withdrawal.
pub(crate) struct LoggedDecision<'a> {
    /// Its position in the withdrawal's history.
    pub(crate) position: usize,
    /// The entry.
    pub(crate) entry: &'a Entry,
    /// The policy it was made under (lowercase hex hash).
    pub(crate) policy: String,
    /// The rule it names.
    pub(crate) rule_id: &'a str,
    /// The outcome it logs.
    pub(crate) outcome: DecisionOutcome,
}

impl<'a> LoggedDecision<'a> {
    /// The latest decision in `history` (the withdrawal's entries before the
    /// signature).
    pub(crate) fn latest(history: &[&'a Entry], withdrawal: &str) -> Result<Self, VerifyError> {
        history
            .iter()
            .enumerate()
            .rev()
            .find_map(|(position, entry)| match &entry.body {
                EntryBody::PolicyDecision {
                    policy_hash,
                    rule_id,
                    outcome,
                    ..
                } => Some(LoggedDecision {
                    position,
                    entry,
                    policy: hex::encode(policy_hash),
                    rule_id,
                    outcome: *outcome,
                }),
                _ => None,
            })
            .ok_or_else(|| VerifyError::NoDecision {
                withdrawal: withdrawal.to_owned(),
            })
    }

    /// The decision's entry index.
    pub(crate) fn index(&self) -> u64 {
        self.entry.index
    }

    /// Step 1: the decision's policy is one of the trusted documents.
    pub(crate) fn policy_in<'p>(&self, policies: &'p PolicySet) -> Result<&'p Policy, VerifyError> {
        policies
            .get(&self.policy)
            .map(|d| &d.policy)
            .ok_or_else(|| VerifyError::DecisionPolicyUnknown {
                decision: self.index(),
                policy: self.policy.clone(),
            })
    }

    /// Step 1: the activation in force at the decision (the latest before
    /// it) carries the admin quorum, when admins are checked.
    pub(crate) fn check_activation(
        &self,
        policies: &PolicySet,
        activations: &[&Entry],
    ) -> Result<(), VerifyError> {
        match activations.iter().rev().find(|p| p.index < self.index()) {
            Some(activation) => policies.check_activation(activation),
            // The structural replay has already refused a decision with no
            // activation before it.
            None => Ok(()),
        }
    }

    /// Step 2: the rule the decision names, in its policy.
    pub(crate) fn rule_in<'p>(&self, policy: &'p Policy) -> Result<LoggedRule<'p>, VerifyError> {
        let rules = &policy.document().rules;
        let Some(index) = rules.iter().position(|r| r.id == self.rule_id) else {
            return Err(VerifyError::UnknownRule {
                decision: self.index(),
                rule: self.rule_id.to_owned(),
                policy: self.policy.clone(),
            });
        };
        Ok(LoggedRule {
            index,
            rule: &rules[index],
        })
    }

    /// Step 2: the logged outcome is the rule's action, with the rule's quorum.
    pub(crate) fn check_outcome(&self, rule: &LoggedRule<'_>) -> Result<(), VerifyError> {
        let quorum = rule.quorum_total();
        let consistent = match (rule.rule.action, self.outcome) {
            (ActionKind::Allow, DecisionOutcome::Allow) => true,
            (ActionKind::RequireApprovals, DecisionOutcome::RequireApprovals { quorum: q }) => {
                u32::from(q) == quorum
            }
            _ => false,
        };
        if consistent {
            return Ok(());
        }
        Err(VerifyError::OutcomeMismatch {
            decision: self.index(),
            logged: self.outcome,
            rule: self.rule_id.to_owned(),
            policy: self.policy.clone(),
            action: serde_json::to_value(rule.rule.action)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            quorum,
        })
    }
}

/// A rule of a trusted policy document, with its position.
pub(crate) struct LoggedRule<'p> {
    /// Its position among the document's rules.
    pub(crate) index: usize,
    /// The rule.
    pub(crate) rule: &'p Rule,
}

impl LoggedRule<'_> {
    /// The rule's total quorum (0 without approvals).
    fn quorum_total(&self) -> u32 {
        self.rule
            .approvals
            .as_ref()
            .map_or(0, |q| q.all.iter().map(|t| t.count).sum())
    }
}

/// The `withdrawal_requested` and `risk_scored` entries before a decision.
pub(crate) struct LoggedRequest {
    /// The request as the policy engine takes it (fee cap 0, no digest).
    withdrawal: Withdrawal,
    /// The logged risk score.
    risk_score: u32,
}

impl LoggedRequest {
    /// Step 3: finds the request and its latest risk score in `before`, the
    /// withdrawal's entries before the decision.
    pub(crate) fn before(
        before: &[&Entry],
        withdrawal: &str,
        decision: &LoggedDecision<'_>,
    ) -> Result<Self, VerifyError> {
        let Some((request, mut logged, amount)) = before.iter().find_map(|e| match &e.body {
            EntryBody::WithdrawalRequested {
                key_id,
                chain,
                asset,
                destination,
                amount,
                requested_by,
                ..
            } => Some((
                e.index,
                Withdrawal {
                    source: None,
                    id: withdrawal.to_owned(),
                    wallet: key_id.clone(),
                    chain: chain.clone(),
                    asset: asset.clone(),
                    destination: destination.clone(),
                    amount: Amount(0),
                    fee_cap: Amount(0),
                    initiator: requested_by.clone(),
                    tx_digest: String::new(),
                },
                amount,
            )),
            _ => None,
        }) else {
            return Err(VerifyError::NoRequest {
                withdrawal: withdrawal.to_owned(),
            });
        };
        let Some(risk_score) = before.iter().rev().find_map(|e| match &e.body {
            EntryBody::RiskScored { score, .. } => Some(*score),
            _ => None,
        }) else {
            return Err(VerifyError::NoRiskScore {
                withdrawal: withdrawal.to_owned(),
                decision: decision.index(),
            });
        };
        let Ok(parsed) = amount.parse::<u128>() else {
            return Err(VerifyError::BadAmount {
                request,
                withdrawal: withdrawal.to_owned(),
                amount: amount.clone(),
            });
        };
        logged.amount = Amount(parsed);
        Ok(LoggedRequest {
            withdrawal: logged,
            risk_score,
        })
    }

    /// The request with the fee cap its approvers agreed to.
    pub(crate) fn withdrawal(&self, fee_cap: Amount) -> Withdrawal {
        Withdrawal {
            fee_cap,
            ..self.withdrawal.clone()
        }
    }

    /// Who requested it (the backend's API client).
    pub(crate) fn initiator(&self) -> &str {
        &self.withdrawal.initiator
    }
}

/// The policy as the replay assumes it active at a decision: every
/// address-book entry past its cooling period.
pub(crate) fn active_at(policy: &Policy, decision: &LoggedDecision<'_>) -> ActivePolicy {
    let now = secs(decision.entry.timestamp_ms);
    let cooling = policy.document().settings.whitelist_delay.0;
    let since = Timestamp(
        now.0
            .saturating_sub(i64::try_from(cooling).unwrap_or(i64::MAX)),
    );
    ActivePolicy::assumed(policy.clone(), since)
}

/// Step 3: re-evaluates `withdrawal` under `active` at the decision's time
/// with no history; the match must be the logged rule or an earlier one.
pub(crate) fn reevaluate(
    active: &ActivePolicy,
    rule: &LoggedRule<'_>,
    decision: &LoggedDecision<'_>,
    withdrawal: &Withdrawal,
    request: &LoggedRequest,
) -> Result<Decision, VerifyError> {
    let now = secs(decision.entry.timestamp_ms);
    let reevaluated = evaluate(active, withdrawal, &[], now, request.risk_score).map_err(|e| {
        VerifyError::Reevaluation {
            withdrawal: withdrawal.id.clone(),
            decision: decision.index(),
            source: e,
        }
    })?;
    match reevaluated.rule_index {
        Some(i) if i <= rule.index => Ok(reevaluated),
        _ => Err(VerifyError::RuleCannotMatch {
            decision: decision.index(),
            rule: decision.rule_id.to_owned(),
            withdrawal: withdrawal.id.clone(),
            matched: reevaluated.rule_id,
        }),
    }
}
