//! Approvals behind a signature (step 4 of the replay): every approval entry
//! after the decision carries the same canonical statement, whose SHA-256 is
//! the signing session's execution id, and the policy crate's
//! `check_approvals` finds the rule's quorum met by distinct, active,
//! eligible approvers (other than the initiator when the rule says so) whose
//! Ed25519 signatures or passkey assertions (carried whole in the entry's
//! `signature` field, see `PasskeyAssertion::to_log_bytes`) verify, no rejection, statement fields equal to the
//! logged request, policy and rule, not expired.

use custos_audit::Entry;
use custos_audit::EntryBody;
use custos_audit::entry::Verdict as LogVerdict;
use custos_policy::{
    ActivePolicy, Amount, Approval, ApprovalStatement, ApprovalStatus, Decision, Timestamp,
    Verdict, check_approvals,
};
use sha2::{Digest, Sha256};

use crate::VerifyError;
use crate::error::ApprovalProblem;

/// The policy crate's verdict for a logged one.
pub(crate) fn verdict(logged: &LogVerdict) -> Verdict {
    match logged {
        LogVerdict::Approve => Verdict::Approve,
        LogVerdict::Reject => Verdict::Reject,
    }
}

/// The `approval` entries after a decision, with the first one's statement.
pub(crate) struct LoggedApprovals<'a> {
    entries: Vec<&'a Entry>,
    statement: Option<ApprovalStatement>,
}

impl<'a> LoggedApprovals<'a> {
    /// Collects the approvals in `after` (the withdrawal's entries after the
    /// decision) and decodes the first one's statement.
    pub(crate) fn after(after: &[&'a Entry]) -> Result<Self, VerifyError> {
        let entries: Vec<&Entry> = after
            .iter()
            .copied()
            .filter(|e| matches!(e.body, EntryBody::Approval { .. }))
            .collect();
        let statement = match entries.first() {
            Some(first) => match &first.body {
                EntryBody::Approval { statement, .. } => {
                    Some(ApprovalStatement::decode(statement).map_err(|source| {
                        VerifyError::BadStatement {
                            entry: first.index,
                            source,
                        }
                    })?)
                }
                _ => None,
            },
            None => None,
        };
        Ok(Self { entries, statement })
    }

    /// The fee cap the approvers agreed to (0 without approvals).
    pub(crate) fn fee_cap(&self) -> Amount {
        self.statement.as_ref().map_or(Amount(0), |s| s.fee_cap)
    }

    /// The fee cap the approvers agreed to, if any approval is logged.
    pub(crate) fn approved_fee_cap(&self) -> Option<Amount> {
        self.statement.as_ref().map(|s| s.fee_cap)
    }

    /// The approvals as one quorum over one statement; the decision (entry
    /// `decision`) requires approvals, so none is an error.
    pub(crate) fn quorum(&self, decision: u64) -> Result<Quorum<'a>, VerifyError> {
        let (Some(statement), Some(first)) =
            (self.statement.clone(), self.entries.first().copied())
        else {
            return Err(VerifyError::NoApprovals { decision });
        };
        let mut statement_bytes: &[u8] = &[];
        let mut verdicts = Vec::with_capacity(self.entries.len());
        for e in &self.entries {
            let EntryBody::Approval {
                approver_id,
                verdict: logged,
                statement: bytes,
                signature,
                ..
            } = &e.body
            else {
                continue;
            };
            if verdicts.is_empty() {
                statement_bytes = bytes;
            } else if bytes.as_slice() != statement_bytes {
                return Err(VerifyError::StatementDiffers {
                    entry: e.index,
                    first: first.index,
                });
            }
            verdicts.push(Approval::from_log(approver_id, verdict(logged), signature));
        }
        Ok(Quorum {
            statement,
            statement_bytes,
            first,
            entries: self.entries.clone(),
            verdicts,
        })
    }
}

/// Approvals of one statement.
pub(crate) struct Quorum<'a> {
    /// The statement, decoded.
    pub(crate) statement: ApprovalStatement,
    /// The statement as logged (and signed).
    statement_bytes: &'a [u8],
    /// The first approval entry.
    pub(crate) first: &'a Entry,
    /// Every approval entry, in log order.
    entries: Vec<&'a Entry>,
    /// Their verdicts, in the same order.
    verdicts: Vec<Approval>,
}

impl Quorum<'_> {
    /// The statement's SHA-256 is the signing session's execution id: the
    /// signers signed for exactly this statement.
    pub(crate) fn check_execution_id(&self, execution_id: &[u8]) -> Result<(), VerifyError> {
        let statement_hash: [u8; 32] = Sha256::digest(self.statement_bytes).into();
        if statement_hash.as_slice() == execution_id {
            return Ok(());
        }
        Err(VerifyError::ExecutionIdMismatch {
            approval: self.first.index,
            statement_hash: hex::encode(statement_hash),
            execution_id: hex::encode(execution_id),
        })
    }

    /// The quorum of `decision`'s rule is met at `at`, by the policy crate.
    pub(crate) fn check(
        &self,
        active: &ActivePolicy,
        decision: &Decision,
        at: Timestamp,
    ) -> Result<(), VerifyError> {
        match check_approvals(active, decision, &self.statement, &self.verdicts, at) {
            ApprovalStatus::Satisfied { .. } => Ok(()),
            ApprovalStatus::Missing { approvers, missing } => Err(VerifyError::QuorumMissing {
                rule: decision.rule_id.clone().unwrap_or_default(),
                counted: approvers,
                missing,
            }),
            ApprovalStatus::Rejected { by } => Err(VerifyError::Rejected { by }),
            ApprovalStatus::Invalid { problems } => Err(VerifyError::InvalidApprovals {
                problems: problems
                    .into_iter()
                    .map(|p| ApprovalProblem {
                        entry: p.index.and_then(|i| self.entries.get(i)).map(|e| e.index),
                        approver: p.approver,
                        reason: p.reason,
                    })
                    .collect(),
            }),
        }
    }

    /// Log time of the approval that first completed the quorum, if any.
    pub(crate) fn completed_at_ms(
        &self,
        active: &ActivePolicy,
        decision: &Decision,
        at: Timestamp,
    ) -> Option<u64> {
        (1..=self.verdicts.len()).find_map(|n| {
            match check_approvals(active, decision, &self.statement, &self.verdicts[..n], at) {
                ApprovalStatus::Satisfied { .. } => self.entries.get(n - 1).map(|e| e.timestamp_ms),
                _ => None,
            }
        })
    }
}
