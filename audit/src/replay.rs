//! Authorisation replay: was each signature backed by a satisfied decision?

use std::collections::BTreeSet;

use crate::AuditError;
use crate::entry::{DecisionOutcome, Entry, EntryBody, Verdict};

/// What the verifier hands a replay check for one `signature produced` entry.
#[derive(Clone, Copy, Debug)]
pub struct ReplayContext<'a> {
    /// Index of the signature entry.
    pub index: u64,
    /// The signature entry.
    pub signature: &'a Entry,
    /// Earlier entries of the same withdrawal, in log order.
    pub history: &'a [&'a Entry],
    /// Every policy activation before the signature, in log order.
    pub policies: &'a [&'a Entry],
    /// Policy documents shipped in the bundle, by lowercase hex hash.
    pub policy_documents: &'a std::collections::BTreeMap<String, String>,
}

/// A check the verifier runs for every `signature produced` entry. The full
/// replay (re-evaluating the policy bundle in force and the approvers'
/// signatures with the `policy` crate) implements this trait.
pub trait AuthorizationReplay {
    /// `Ok` if the signature was authorised; otherwise
    /// [`AuditError::Unauthorized`] saying why.
    fn check_signature(&self, ctx: &ReplayContext<'_>) -> Result<(), AuditError>;
}

/// The built-in structural replay. For each signature it requires, among the
/// withdrawal's earlier entries:
/// - a policy decision, the latest of which allows the withdrawal, was made
///   under the policy bundle active at that point of the log, and, if it
///   requires approvals, is followed by that many approvals from distinct
///   approvers and by no rejection;
/// - no cancellation;
/// - a signing session with the same execution id and digest after the decision.
///
/// It does not check approval signatures or re-evaluate rules: that needs the
/// policy crate.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequireSatisfiedDecision;

fn deny(msg: String) -> Result<(), AuditError> {
    Err(AuditError::Unauthorized(msg))
}

impl AuthorizationReplay for RequireSatisfiedDecision {
    fn check_signature(&self, ctx: &ReplayContext<'_>) -> Result<(), AuditError> {
        let EntryBody::SignatureProduced {
            withdrawal_id,
            execution_id,
            message_digest,
            ..
        } = &ctx.signature.body
        else {
            return deny("not a signature entry".into());
        };
        if let Some(c) = ctx
            .history
            .iter()
            .find(|e| matches!(e.body, EntryBody::Cancelled { .. }))
        {
            return deny(format!(
                "withdrawal {withdrawal_id} was cancelled at entry {}",
                c.index
            ));
        }
        let Some((pos, decision)) = ctx
            .history
            .iter()
            .enumerate()
            .rev()
            .find(|(_, e)| matches!(e.body, EntryBody::PolicyDecision { .. }))
        else {
            return deny(format!(
                "no policy decision for withdrawal {withdrawal_id} precedes the signature"
            ));
        };
        let EntryBody::PolicyDecision {
            policy_hash,
            outcome,
            rule_id,
            ..
        } = &decision.body
        else {
            return deny("internal: decision lookup".into());
        };
        let active = ctx.policies.iter().rev().find(|p| p.index < decision.index);
        match active.map(|p| &p.body) {
            Some(EntryBody::PolicyActivated {
                policy_hash: active_hash,
                ..
            }) if active_hash == policy_hash => {}
            Some(_) => {
                return deny(format!(
                    "decision at entry {} used policy {} but another policy bundle was active",
                    decision.index,
                    hex::encode(policy_hash)
                ));
            }
            None => {
                return deny(format!(
                    "no policy bundle was active at decision entry {}",
                    decision.index
                ));
            }
        }
        let after = &ctx.history[pos + 1..];
        match outcome {
            DecisionOutcome::Deny => {
                return deny(format!(
                    "decision at entry {} (rule {rule_id}) denied the withdrawal",
                    decision.index
                ));
            }
            DecisionOutcome::Allow => {}
            DecisionOutcome::RequireApprovals { quorum } => {
                let mut approvers = BTreeSet::new();
                for e in after {
                    if let EntryBody::Approval {
                        approver_id,
                        verdict,
                        ..
                    } = &e.body
                    {
                        if *verdict == Verdict::Reject {
                            return deny(format!(
                                "approver {approver_id} rejected at entry {}",
                                e.index
                            ));
                        }
                        approvers.insert(approver_id.as_str());
                    }
                }
                if approvers.len() < usize::from(*quorum) {
                    return deny(format!(
                        "decision at entry {} needs {quorum} approvals, found {}",
                        decision.index,
                        approvers.len()
                    ));
                }
            }
        }
        let session = after.iter().any(|e| {
            matches!(&e.body, EntryBody::SigningSession { execution_id: x, message_digest: d, .. }
                if x == execution_id && d == message_digest)
        });
        if !session {
            return deny(format!(
                "no signing session for this execution id follows decision entry {}",
                decision.index
            ));
        }
        Ok(())
    }
}
