//! Batched payouts on UTXO chains: withdrawals of one wallet and asset that
//! are ready to sign within `batch_window_ms` of each other are paid by one
//! transaction, one output each plus change, for one set of inputs.
//!
//! The first withdrawal whose window ends leads: it takes up to
//! `batch_max_payouts - 1` others ready to sign (no transaction yet, not in
//! another batch), oldest first, and the transaction is built and stored
//! with one `utxo_batches` row per withdrawal (`prepare_utxo`, in the same
//! database transaction as the coins and every `unsigned_tx`). From then on
//! the lead's step drives all of them (signing sessions, broadcast,
//! tracking, fee bumps: one transaction), applying each state change to the
//! members first and to the lead last, so that a restart finds the lead
//! where the batch is; a member's own step only waits, or fails when its
//! lead failed. Each withdrawal keeps its own approvals, ledger postings,
//! events and audit entries; the fee is shared equally (the builder's and
//! the signers' rule), each share within its own withdrawal's cap.

use std::time::{Duration, Instant};

use sqlx::Row;

use super::utxo::UtxoChain;
use super::{Chains, db_err};
use crate::error::CoordError;

/// A withdrawal's place in a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchSlot {
    /// The withdrawal whose step drives the transaction.
    pub lead_id: String,
    /// Its output's position (0: the lead's).
    pub output_index: u32,
}

impl UtxoChain {
    /// Whether the batching window of `withdrawal_id`, which is ready to be
    /// paid now, is over (always, with batching off).
    pub fn batch_window_over(&self, withdrawal_id: &str) -> bool {
        let window = Duration::from_millis(self.settings.batch_window_ms);
        if window.is_zero() {
            return true;
        }
        let mut seen = self.ready_since.lock().unwrap_or_else(|p| p.into_inner());
        let first = *seen
            .entry(withdrawal_id.to_owned())
            .or_insert_with(Instant::now);
        first.elapsed() >= window
    }

    /// Forgets the window of withdrawals that got their transaction.
    pub fn batch_window_done(&self, ids: &[String]) {
        let mut seen = self.ready_since.lock().unwrap_or_else(|p| p.into_inner());
        for id in ids {
            seen.remove(id);
        }
    }
}

impl Chains {
    /// The batch `withdrawal_id` is paid in, if any.
    pub async fn batch_slot(&self, withdrawal_id: &str) -> Result<Option<BatchSlot>, CoordError> {
        sqlx::query("SELECT lead_id, output_index FROM utxo_batches WHERE withdrawal_id = $1")
            .bind(withdrawal_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?
            .map(|r| {
                Ok(BatchSlot {
                    lead_id: r.try_get("lead_id").map_err(db_err)?,
                    output_index: u32::try_from(
                        r.try_get::<i64, _>("output_index").map_err(db_err)?,
                    )
                    .map_err(|_| CoordError::Internal("stored output index".into()))?,
                })
            })
            .transpose()
    }

    /// The other withdrawals the lead's transaction pays, in output order.
    pub async fn batch_members(&self, lead_id: &str) -> Result<Vec<String>, CoordError> {
        sqlx::query(
            "SELECT withdrawal_id FROM utxo_batches WHERE lead_id = $1 AND withdrawal_id <> $1
             ORDER BY output_index",
        )
        .bind(lead_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?
        .iter()
        .map(|r| r.try_get("withdrawal_id").map_err(db_err))
        .collect()
    }

    /// Withdrawals that may join `lead`'s batch: ready to sign on the same
    /// chain, wallet, source address (one transaction spends from one
    /// address; signers refuse a batch that mixes them) and asset, no
    /// transaction or presignature yet, in no batch; oldest first, at most
    /// `limit`.
    pub async fn batch_candidates(
        &self,
        lead: &super::Payment,
        chain: &str,
        limit: u32,
    ) -> Result<Vec<String>, CoordError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        sqlx::query(
            "SELECT id FROM withdrawals
             WHERE state = 'signing' AND chain = $1 AND wallet = $2 AND asset = $3 AND id <> $4
               AND COALESCE(source_path, '') =
                   (SELECT COALESCE(source_path, '') FROM withdrawals WHERE id = $4)
               AND unsigned_tx IS NULL AND presig_id IS NULL
               AND id NOT IN (SELECT withdrawal_id FROM utxo_batches)
             ORDER BY created_ms, id LIMIT $5",
        )
        .bind(chain)
        .bind(&lead.wallet)
        .bind(&lead.asset)
        .bind(&lead.id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?
        .iter()
        .map(|r| r.try_get("id").map_err(db_err))
        .collect()
    }
}
