//! Storage of fee-bump statements and their approvals, for rules with
//! `fee_bumps = "reapprove"`.
//!
//! The statement for a pending replacement is stored once
//! (`chain_txs.bump_statement`, only while that `bump_tx` is the pending one),
//! so every approver signs the same bytes; approvals are keyed by the
//! statement's SHA-256, so an approval of an abandoned bump never counts for
//! the next one.

use custos_policy::{Approval, Verdict};
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{Chains, db_err};
use crate::clock::now_ms;
use crate::error::CoordError;

/// SHA-256 of an encoded fee-bump statement, hex: the key of its approvals.
pub fn statement_key(statement: &[u8]) -> String {
    hex::encode(Sha256::digest(statement))
}

/// One stored verdict on a fee bump.
#[derive(Clone, Debug)]
pub struct BumpVerdict {
    /// The approval as signed.
    pub approval: Approval,
    /// When it was received (Unix ms).
    pub received_ms: i64,
}

impl Chains {
    /// Stores `statement` as the one approvers sign for the pending
    /// replacement `bump_tx`, unless one is stored already; returns the one
    /// in force (`None` if `bump_tx` is no longer the pending replacement).
    pub async fn propose_bump_statement(
        &self,
        withdrawal_id: &str,
        bump_tx: &[u8],
        statement: &[u8],
    ) -> Result<Option<Vec<u8>>, CoordError> {
        sqlx::query(
            "UPDATE chain_txs SET bump_statement = $1
             WHERE withdrawal_id = $2 AND bump_tx = $3 AND bump_statement IS NULL",
        )
        .bind(statement.to_vec())
        .bind(withdrawal_id)
        .bind(bump_tx.to_vec())
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(self
            .stored(withdrawal_id)
            .await?
            .filter(|t| t.bump_tx.as_deref() == Some(bump_tx))
            .and_then(|t| t.bump_statement))
    }

    /// Records a verdict on the fee-bump statement with key `key`; `false`
    /// if this approver already gave one on it.
    pub async fn add_bump_verdict(
        &self,
        withdrawal_id: &str,
        key: &str,
        approval: &Approval,
    ) -> Result<bool, CoordError> {
        let verdict = match approval.verdict {
            Verdict::Approve => "approve",
            Verdict::Reject => "reject",
            Verdict::Cancel => "cancel",
        };
        let res = sqlx::query(
            "INSERT INTO fee_bump_approvals
                (withdrawal_id, statement_hash, approver, verdict, signature, received_ms)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT DO NOTHING",
        )
        .bind(withdrawal_id)
        .bind(key)
        .bind(&approval.approver)
        .bind(verdict)
        .bind(&approval.signature)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(res.rows_affected() == 1)
    }

    /// The verdicts given on the fee-bump statement with key `key`, oldest first.
    pub async fn bump_verdicts(
        &self,
        withdrawal_id: &str,
        key: &str,
    ) -> Result<Vec<BumpVerdict>, CoordError> {
        let rows = sqlx::query(
            "SELECT approver, verdict, signature, received_ms FROM fee_bump_approvals
             WHERE withdrawal_id = $1 AND statement_hash = $2 ORDER BY received_ms, approver",
        )
        .bind(withdrawal_id)
        .bind(key)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                let verdict = match r.get::<String, _>("verdict").as_str() {
                    "approve" => Verdict::Approve,
                    "reject" => Verdict::Reject,
                    _ => return None,
                };
                Some(BumpVerdict {
                    approval: Approval {
                        approver: r.get("approver"),
                        verdict,
                        signature: r.get("signature"),
                        webauthn: None,
                    },
                    received_ms: r.get("received_ms"),
                })
            })
            .collect())
    }
}
