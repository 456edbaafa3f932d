//! Fee bumps that need approvals: under a rule with `fee_bumps =
//! "reapprove"`, a replacement is signed only once the rule's quorum has
//! approved its fee-bump statement (every signer checks the same quorum over
//! the statement it builds itself). A reject, an expiry or a policy change
//! abandons the replacement: the transaction in flight stays, and a new
//! replacement (with a new statement) may be proposed later.

use std::sync::Arc;

use custos_audit::EntryBody;
use custos_chains::evm::tx::{decode_transfer, decode_unsigned, signing_digest};
use custos_policy::{
    ActivePolicy, Approval, ApprovalStatus, FeeBumpStatement, Timestamp, Verdict,
    check_fee_bump_approvals, fee_bump_needs_approval,
};

use super::{Engine, SubmittedVerdict, sha256};
use crate::chain::bump_approvals::{BumpVerdict, statement_key};
use crate::chain::{Chains, EvmTxRow};
use crate::clock::now_secs;
use crate::error::CoordError;
use crate::withdrawal::state::State;
use crate::withdrawal::store::WithdrawalRow;

/// May a pending replacement be signed?
#[derive(Debug)]
pub(super) enum BumpQuorum {
    /// The rule lets bumps within the cap go without new approvals.
    NotNeeded,
    /// The quorum approved: what the signers need to check it themselves.
    Met {
        /// JSON list of the approvals.
        approvals_json: Vec<u8>,
        /// The statement's expiry (Unix seconds).
        expiry: i64,
    },
    /// Waiting for approvers (note).
    Waiting(String),
    /// Rejected, expired or void (note): abandon this replacement.
    Denied(String),
}

fn internal(what: &str) -> impl Fn(custos_policy::PolicyError) -> CoordError + '_ {
    move |e| CoordError::Internal(format!("{what}: {e}"))
}

/// "max fee 20 → 23 gwei-ish" in wei per gas, for notes.
fn describe(stored: &EvmTxRow, s: &FeeBumpStatement) -> String {
    let before = decode_unsigned(&stored.unsigned_tx)
        .ok()
        .and_then(|u| decode_transfer(&u).ok())
        .map_or_else(|| "?".to_owned(), |d| d.max_fee_per_gas.to_string());
    format!(
        "fee bump of nonce {} (max fee {before} → {} wei/gas)",
        s.nonce, s.max_fee_per_gas
    )
}

impl Engine {
    /// Whether the pending replacement `bump_tx` of `row` may be signed now;
    /// proposes (stores) its fee-bump statement the first time.
    pub(super) async fn bump_quorum(
        &self,
        row: &WithdrawalRow,
        chains: &Chains,
        stored: &EvmTxRow,
        bump_tx: &[u8],
    ) -> Result<BumpQuorum, CoordError> {
        let now = Timestamp(now_secs());
        let active = self.policy.in_force(now);
        let rule_id = row.rule_id.as_deref().unwrap_or_default();
        if !fee_bump_needs_approval(&active, rule_id) {
            return Ok(BumpQuorum::NotNeeded);
        }
        let bytes = match &stored.bump_statement {
            Some(b) => b.clone(),
            None => {
                let Some(statement) = self.bump_statement(row, &active, stored, bump_tx, now)?
                else {
                    return Ok(BumpQuorum::Waiting(format!(
                        "a fee bump needs approvals under rule {rule_id:?}, which the policy in force no longer has as a require_approvals rule: nobody can approve it; the transaction in flight stays"
                    )));
                };
                let encoded = statement.encode().map_err(internal("fee-bump statement"))?;
                match chains
                    .propose_bump_statement(&row.id, bump_tx, &encoded)
                    .await?
                {
                    Some(b) => {
                        tracing::info!(withdrawal = %row.id, nonce = statement.nonce, "fee bump awaits approvals");
                        b
                    }
                    None => {
                        return Ok(BumpQuorum::Waiting(
                            "the fee bump was abandoned concurrently".into(),
                        ));
                    }
                }
            }
        };
        let statement =
            FeeBumpStatement::decode(&bytes).map_err(internal("stored fee-bump statement"))?;
        let approvals: Vec<Approval> = chains
            .bump_verdicts(&row.id, &statement_key(&bytes))
            .await?
            .into_iter()
            .map(|v| v.approval)
            .collect();
        let what = describe(stored, &statement);
        Ok(
            match check_fee_bump_approvals(&active, &row.initiator, &statement, &approvals, now) {
                ApprovalStatus::Satisfied { .. } => BumpQuorum::Met {
                    approvals_json: serde_json::to_vec(&approvals)
                        .map_err(|e| CoordError::Internal(e.to_string()))?,
                    expiry: statement.expiry.0,
                },
                ApprovalStatus::Missing { approvers, missing } => {
                    let needs: Vec<String> = missing
                        .iter()
                        .map(|m| format!("{} more from {}", m.still_needed, m.group))
                        .collect();
                    BumpQuorum::Waiting(format!(
                        "{what} awaits approvals (rule {rule_id} says fee_bumps = \"reapprove\"): counted [{}], needs {}; until {}",
                        approvers.join(", "),
                        needs.join(" and "),
                        statement.expiry
                    ))
                }
                ApprovalStatus::Rejected { by } => BumpQuorum::Denied(format!(
                    "{what} rejected by {}: the transaction in flight stays",
                    by.join(", ")
                )),
                ApprovalStatus::Invalid { problems } => {
                    let p: Vec<String> = problems.into_iter().map(|p| p.reason).collect();
                    BumpQuorum::Denied(format!(
                        "{what}: its approvals are void ({}); the transaction in flight stays",
                        p.join("; ")
                    ))
                }
            },
        )
    }

    /// The fee-bump statement for replacing the current transaction with
    /// `bump_tx`; `None` when the rule is not a quorum rule of `active`.
    fn bump_statement(
        &self,
        row: &WithdrawalRow,
        active: &ActivePolicy,
        stored: &EvmTxRow,
        bump_tx: &[u8],
        now: Timestamp,
    ) -> Result<Option<FeeBumpStatement>, CoordError> {
        let rule_id = row.rule_id.clone().unwrap_or_default();
        let doc = active.policy().document();
        let Some(rule) = doc
            .rules
            .iter()
            .find(|r| r.id == rule_id && r.action == custos_policy::ActionKind::RequireApprovals)
        else {
            return Ok(None);
        };
        let lifetime = rule.approval_expiry.unwrap_or(doc.settings.approval_expiry);
        let current = decode_unsigned(&stored.unsigned_tx)
            .map_err(|e| CoordError::Internal(format!("stored transaction: {e}")))?;
        let next = decode_unsigned(bump_tx)
            .map_err(|e| CoordError::Internal(format!("fee bump transaction: {e}")))?;
        let d = decode_transfer(&next)
            .map_err(|e| CoordError::Internal(format!("fee bump transaction: {e}")))?;
        Ok(Some(FeeBumpStatement {
            withdrawal_id: row.id.clone(),
            statement_hash: row.statement.as_deref().map(sha256).unwrap_or_default(),
            chain: row.chain.clone(),
            nonce: d.nonce,
            replaces: signing_digest(&current),
            replacement: signing_digest(&next),
            max_fee_per_gas: d.max_fee_per_gas,
            max_priority_fee_per_gas: d.max_priority_fee_per_gas,
            gas_limit: d.gas_limit,
            policy_hash: active.policy().hash(),
            rule_id,
            expiry: now.plus(lifetime),
        }))
    }

    /// Verifies and records an approver's verdict on the fee-bump statement
    /// pending for a withdrawal; `statement` is the encoding they signed (it
    /// must be the pending one). A verdict that completes or denies the
    /// quorum moves the bump on at once.
    pub async fn submit_bump_verdict(
        self: &Arc<Self>,
        v: SubmittedVerdict,
        statement: &[u8],
    ) -> Result<WithdrawalRow, CoordError> {
        let _serialised = self.verdict_lock.lock().await;
        let row = self.get(&v.withdrawal_id).await?;
        super::text_ok("approver", &v.approver, 64, true)?;
        if v.webauthn.is_some() {
            return Err(CoordError::invalid(
                "webauthn",
                "fee bumps are approved with the approver's Ed25519 key (custos withdrawal approve)",
            ));
        }
        if v.signature.len() != 128 || hex::decode(&v.signature).is_err() {
            return Err(CoordError::invalid(
                "signature",
                "must be 128 hex characters (Ed25519)",
            ));
        }
        if v.verdict == Verdict::Cancel {
            return Err(CoordError::invalid(
                "verdict",
                "a fee bump is approved or rejected, not cancelled",
            ));
        }
        let state = row.state()?;
        let pending = match (state, self.evm_chain(&row.chain)) {
            (State::Broadcast, Some((chains, _))) => chains
                .stored(&row.id)
                .await?
                .and_then(|t| t.bump_statement)
                .map(|b| (chains, b)),
            _ => None,
        };
        let Some((chains, pending)) = pending else {
            return Err(CoordError::precondition(
                "withdrawal",
                row.id.clone(),
                format!("({state}) has no fee bump awaiting approvals"),
            ));
        };
        if pending != statement {
            return Err(CoordError::precondition(
                "withdrawal",
                row.id.clone(),
                "has another fee bump pending than the fee_bump_statement given (it was replaced or abandoned); fetch the withdrawal again",
            ));
        }
        let decoded =
            FeeBumpStatement::decode(&pending).map_err(internal("stored fee-bump statement"))?;
        let key = statement_key(&pending);
        let mut all: Vec<Approval> = chains
            .bump_verdicts(&row.id, &key)
            .await?
            .into_iter()
            .map(|b| b.approval)
            .collect();
        if all.iter().any(|a| a.approver == v.approver) {
            return Err(CoordError::already_exists(
                "approver",
                v.approver.clone(),
                format!(
                    "already gave a verdict on this fee bump of withdrawal {}",
                    row.id
                ),
            ));
        }
        let new = Approval {
            approver: v.approver.clone(),
            verdict: v.verdict,
            signature: v.signature.clone(),
            webauthn: None,
        };
        all.push(new.clone());
        let now = Timestamp(now_secs());
        let active = self.policy.in_force(now);
        let status = check_fee_bump_approvals(&active, &row.initiator, &decoded, &all, now);
        super::refuse_if_invalid(
            &status,
            all.len() - 1,
            &format!("fee-bump approval by {}", new.approver),
        )?;
        self.audit
            .append(EntryBody::FeeBumpApproval {
                withdrawal_id: row.id.clone(),
                approver_id: new.approver.clone(),
                verdict: super::audit_verdict(new.verdict),
                statement: pending.clone(),
                signature: hex::decode(&new.signature).unwrap_or_default(),
            })
            .await?;
        if !chains.add_bump_verdict(&row.id, &key, &new).await? {
            return Err(CoordError::already_exists(
                "approver",
                v.approver.clone(),
                format!(
                    "already gave a verdict on this fee bump of withdrawal {}",
                    row.id
                ),
            ));
        }
        tracing::info!(withdrawal = %row.id, approver = %new.approver, verdict = ?new.verdict, "fee-bump verdict recorded");
        if matches!(
            status,
            ApprovalStatus::Satisfied { .. } | ApprovalStatus::Rejected { .. }
        ) {
            self.spawn_advance(row.id.clone());
        }
        let _ = self.changes.send(());
        self.get(&row.id).await
    }

    /// The fee-bump statement waiting for approvals on `row`, with the
    /// verdicts given on it so far.
    pub async fn pending_fee_bump(
        &self,
        row: &WithdrawalRow,
    ) -> Result<Option<(Vec<u8>, Vec<BumpVerdict>)>, CoordError> {
        if row.state != State::Broadcast.as_str() {
            return Ok(None);
        }
        let Some((chains, _)) = self.evm_chain(&row.chain) else {
            return Ok(None);
        };
        let Some(statement) = chains.stored(&row.id).await?.and_then(|t| t.bump_statement) else {
            return Ok(None);
        };
        let verdicts = chains
            .bump_verdicts(&row.id, &statement_key(&statement))
            .await?;
        Ok(Some((statement, verdicts)))
    }
}
