//! The co-signer check: may this withdrawal be signed now?
//!
//! The coordinator runs it when approvals arrive and before it asks the
//! signers; every signer runs it again on its own inputs (its own clock, its
//! own record of what it has signed, the digest it recomputed from the unsigned
//! transaction), so a compromised coordinator cannot get a signature the policy
//! and the approvers did not authorise. The time lock is left to the caller:
//! it starts when *that caller* saw the quorum (`Decision::signable_from`).

use sha2::{Digest, Sha256};

use crate::approval::{Approval, ApprovalStatus, check_approvals};
use crate::error::{PolicyError, Result};
use crate::eval::{Decision, HistoryEntry, Outcome, Withdrawal, evaluate};
use crate::governance::ActivePolicy;
use crate::statement::ApprovalStatement;
use crate::value::Timestamp;

/// What the requester claims about a withdrawal it wants signed.
#[derive(Debug, Clone, Copy)]
pub struct SigningClaim<'a> {
    /// The withdrawal, with `tx_digest` computed by the checker itself.
    pub withdrawal: &'a Withdrawal,
    /// The rule the requester says matched.
    pub rule_id: &'a str,
    /// Expiry written into the approval statement.
    pub statement_expiry: Timestamp,
    /// The risk score the decision was made with.
    pub risk_score: u32,
    /// Approvals collected for the statement.
    pub approvals: &'a [Approval],
}

/// A withdrawal the policy and its approvers authorise (time lock aside).
#[derive(Debug, Clone)]
pub struct Authorization {
    /// This checker's own decision.
    pub decision: Decision,
    /// The statement this checker rebuilt and verified the approvals over.
    pub statement: ApprovalStatement,
    /// SHA-256 of the statement's canonical encoding: bound into signing sessions.
    pub statement_hash: [u8; 32],
    /// Approvers whose approvals counted.
    pub approvers: Vec<String>,
}

/// SHA-256 of a statement's canonical encoding.
pub fn statement_hash(statement: &ApprovalStatement) -> Result<[u8; 32]> {
    Ok(Sha256::digest(statement.encode()?).into())
}

/// Re-evaluates the policy and checks the approvals for `claim` at `now`.
///
/// Refuses (with [`PolicyError::Refused`] naming the reason) when the policy
/// blocks, when this evaluation matches a different rule than claimed, when
/// the quorum is not met, an approval is invalid or a rejection was given, or
/// the statement has expired. `history` is the checker's own record of
/// withdrawals already authorised (velocity limits).
pub fn authorize(
    active: &ActivePolicy,
    claim: &SigningClaim<'_>,
    history: &[HistoryEntry],
    now: Timestamp,
) -> Result<Authorization> {
    let decision = evaluate(active, claim.withdrawal, history, now, claim.risk_score)?;
    let matched = decision.rule_id.as_deref().unwrap_or("no rule");
    if let Outcome::Block { reason } = &decision.outcome {
        return Err(PolicyError::Refused(format!(
            "policy blocks withdrawal {} (rule {matched}): {reason}",
            claim.withdrawal.id
        )));
    }
    if matched != claim.rule_id {
        return Err(PolicyError::Refused(format!(
            "rule mismatch: the request claims rule {:?}, this evaluation matched {matched:?}",
            claim.rule_id
        )));
    }
    if now >= claim.statement_expiry {
        return Err(PolicyError::Refused(format!(
            "withdrawal {} expired at {}",
            claim.withdrawal.id, claim.statement_expiry
        )));
    }
    let statement =
        ApprovalStatement::for_decision(&decision, claim.withdrawal, claim.statement_expiry)?;
    let approvers = require_satisfied(
        check_approvals(active, &decision, &statement, claim.approvals, now),
        "",
    )?;
    let statement_hash = statement_hash(&statement)?;
    Ok(Authorization {
        decision,
        statement,
        statement_hash,
        approvers,
    })
}

/// The approvers counted when `status` is satisfied; otherwise
/// [`PolicyError::Refused`] with `prefix` and what is missing or wrong.
pub(crate) fn require_satisfied(status: ApprovalStatus, prefix: &str) -> Result<Vec<String>> {
    match status {
        ApprovalStatus::Satisfied { approvers } => Ok(approvers),
        ApprovalStatus::Missing { approvers, missing } => {
            let needs: Vec<String> = missing
                .iter()
                .map(|m| format!("{} more from {}", m.still_needed, m.group))
                .collect();
            Err(PolicyError::Refused(format!(
                "{prefix}too few approvals: counted [{}], needs {}",
                approvers.join(", "),
                needs.join(" and ")
            )))
        }
        ApprovalStatus::Rejected { by } => Err(PolicyError::Refused(format!(
            "{prefix}rejected by {}",
            by.join(", ")
        ))),
        ApprovalStatus::Invalid { problems } => {
            let p: Vec<String> = problems
                .iter()
                .map(|p| match p.index {
                    Some(i) => format!("approval {i} ({}): {}", p.approver, p.reason),
                    None => p.reason.clone(),
                })
                .collect();
            Err(PolicyError::Refused(format!(
                "{prefix}invalid approvals: {}",
                p.join("; ")
            )))
        }
    }
}
