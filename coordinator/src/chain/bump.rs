//! Fee bumps: replacing a sent transaction that stays unmined with the same
//! transfer at the same nonce and higher fees, within the approved fee cap.
//!
//! Every step is persisted before it is acted on, so a restart resumes it:
//! the replacement's unsigned bytes (`chain_txs.bump_tx`), then the
//! presignature reserved for it (`bump_presig`, consumed in the same database
//! transaction), then the signed replacement swaps in as the current version
//! while the replaced one moves to `chain_tx_replaced` (tracking keeps looking
//! for receipts of every version: whichever is mined wins). No new approval
//! is asked: the approvals bound the fee cap, every signer checks the
//! replacement against it and against the version it signed (same transfer,
//! nonce and gas limit), and at one nonce only one version can be mined;
//! unless the withdrawal's rule says `fee_bumps = "reapprove"`: then the
//! quorum approves a fee-bump statement first (`bump_approvals`).

use custos_chains::U256;
use custos_chains::evm::address::parse_address;
use custos_chains::evm::signature::assemble_signed;
use custos_chains::evm::tx::{
    ReplacementFees, bumped_fees, decode_transfer, decode_unsigned, encode_unsigned, with_fees,
};

use super::Payment;
use super::{EvmChain, Pending, db_err, rpc_note, swap_in_replacement};
use crate::chain::Chains;
use crate::clock::now_ms;
use crate::db::consume_presig;
use crate::error::CoordError;

/// A signed replacement, ready to swap in.
#[derive(Debug)]
pub struct SignedBump {
    /// The replacement's unsigned bytes.
    pub unsigned_tx: Vec<u8>,
    /// The signature.
    pub r: [u8; 32],
    /// The signature.
    pub s: [u8; 32],
    /// Its recovery id.
    pub recovery_id: u8,
}

impl Chains {
    /// The replacement of a withdrawal's current transaction: made once
    /// (fees raised by `fee_bump_percent`, at least the node's estimate, at
    /// most the approved fee cap and the chain's `max_fee_per_gas_cap`) and
    /// stored before it is signed. Waits with a note when the cap leaves no
    /// room (and then looks again only after `resubmit_after_secs`).
    pub async fn prepare_bump(&self, chain: &EvmChain, row: &Payment) -> Result<Vec<u8>, Pending> {
        let name = &chain.settings.name;
        let t = self
            .stored(&row.id)
            .await?
            .ok_or_else(|| CoordError::Internal(format!("{} has no transaction", row.id)))?;
        if let Some(b) = t.bump_tx {
            return Ok(b);
        }
        let current = decode_unsigned(&t.unsigned_tx)
            .map_err(|e| CoordError::Internal(format!("stored transaction: {e}")))?;
        let mut decoded = decode_transfer(&current)
            .map_err(|e| CoordError::Internal(format!("stored transaction: {e}")))?;
        // Raise above an abandoned bump too: a signer may have signed it.
        if let Some(abandoned) = t
            .abandoned_tx
            .as_deref()
            .and_then(|b| decode_unsigned(b).ok())
            .and_then(|u| decode_transfer(&u).ok())
            .filter(|a| a.max_fee_per_gas > decoded.max_fee_per_gas)
        {
            decoded.max_fee_per_gas = abandoned.max_fee_per_gas;
            decoded.max_priority_fee_per_gas = decoded
                .max_priority_fee_per_gas
                .max(abandoned.max_priority_fee_per_gas);
        }
        let estimate = chain
            .rpc
            .estimate_fees()
            .await
            .map_err(|e| rpc_note(name, "fee estimation failed", &e))?;
        let approved = U256::from_str_radix(&row.fee_cap, 10)
            .map_err(|e| CoordError::Internal(format!("stored fee cap: {e}")))?;
        let chain_cap =
            U256::from(decoded.gas_limit) * U256::from(chain.rpc.config().max_fee_per_gas_cap);
        let cap = approved.min(chain_cap);
        let fees = ReplacementFees {
            max_fee_per_gas: estimate.max_fee_per_gas,
            max_priority_fee_per_gas: estimate.max_priority_fee_per_gas,
        };
        let Some(bumped) = bumped_fees(&decoded, fees, chain.settings.fee_bump_percent, cap) else {
            self.touch_sent(&row.id).await?;
            return Err(Pending::Wait(format!(
                "chain {name}: {} unmined, but a {}% fee bump of max fee {} wei/gas would pass the fee cap of {cap} wei for {} gas; waiting at the current fee",
                t.tx_hash.unwrap_or_default(),
                chain.settings.fee_bump_percent,
                decoded.max_fee_per_gas,
                decoded.gas_limit
            )));
        };
        let next = with_fees(&current, bumped)
            .map_err(|e| CoordError::Internal(format!("building the replacement: {e}")))?;
        let bytes = encode_unsigned(&next);
        sqlx::query(
            "UPDATE chain_txs SET bump_tx = $1 WHERE withdrawal_id = $2 AND bump_tx IS NULL",
        )
        .bind(bytes.clone())
        .bind(&row.id)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        tracing::info!(
            withdrawal = %row.id,
            nonce = decoded.nonce,
            from = decoded.max_fee_per_gas,
            to = bumped.max_fee_per_gas,
            "fee bump prepared"
        );
        // Whatever is stored now is what gets signed (a concurrent writer wins).
        self.stored(&row.id)
            .await?
            .and_then(|t| t.bump_tx)
            .ok_or_else(|| Pending::Wait("the fee bump was abandoned concurrently".into()))
    }

    /// Reserves a ready presignature for the pending fee bump (consumed in
    /// the same database transaction); `false` if either was taken.
    pub async fn reserve_bump_presig(
        &self,
        withdrawal_id: &str,
        presig_id: &str,
        signers: &[String],
    ) -> Result<bool, CoordError> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        if !consume_presig(&mut tx, presig_id).await? {
            return Ok(false);
        }
        let res = sqlx::query(
            "UPDATE chain_txs SET bump_presig = $1, bump_signers = $2
             WHERE withdrawal_id = $3 AND bump_tx IS NOT NULL AND bump_presig IS NULL",
        )
        .bind(presig_id)
        .bind(serde_json::to_string(signers).unwrap_or_default())
        .bind(withdrawal_id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        if res.rows_affected() != 1 {
            return Ok(false);
        }
        tx.commit().await.map_err(db_err)?;
        Ok(true)
    }

    /// Drops a fee bump the signers refused; the current version stays, and
    /// the next bump is tried after `resubmit_after_secs`.
    pub async fn abandon_bump(&self, withdrawal_id: &str) -> Result<(), CoordError> {
        sqlx::query(
            "UPDATE chain_txs SET abandoned_tx = COALESCE(bump_tx, abandoned_tx), bump_tx = NULL,
                bump_presig = NULL, bump_signers = NULL, bump_statement = NULL, last_sent_ms = $1
             WHERE withdrawal_id = $2",
        )
        .bind(now_ms())
        .bind(withdrawal_id)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    /// Restarts the resubmit clock (nothing to bump for now).
    pub(super) async fn touch_sent(&self, withdrawal_id: &str) -> Result<(), CoordError> {
        sqlx::query("UPDATE chain_txs SET last_sent_ms = $1 WHERE withdrawal_id = $2")
            .bind(now_ms())
            .bind(withdrawal_id)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// Assembles the signed replacement (low s; it must recover to the
    /// wallet) without storing it; returns (raw, hash).
    pub fn assemble_bump(bump: &SignedBump, wallet: &str) -> Result<(Vec<u8>, String), CoordError> {
        let unsigned = decode_unsigned(&bump.unsigned_tx)
            .map_err(|e| CoordError::Internal(format!("fee bump transaction: {e}")))?;
        let wallet = parse_address(wallet)
            .map_err(|e| CoordError::Internal(format!("wallet address: {e}")))?;
        let signed = assemble_signed(&unsigned, bump.r, bump.s, bump.recovery_id, wallet)
            .map_err(|e| CoordError::Internal(format!("assembling the fee bump: {e}")))?;
        Ok((signed.raw, format!("{:#x}", signed.hash)))
    }

    /// Swaps the signed replacement in as the current version (the replaced
    /// one is kept for tracking), in one database transaction; the
    /// withdrawal row then shows the replacement's transaction, signature
    /// and hash. `false` if no bump was pending (already swapped in).
    pub async fn commit_bump(
        &self,
        withdrawal_id: &str,
        bump: &SignedBump,
        raw: &[u8],
        hash: &str,
    ) -> Result<bool, CoordError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        if !swap_in_replacement(&mut tx, withdrawal_id, &bump.unsigned_tx, raw, hash, now).await? {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE withdrawals SET unsigned_tx = $1, sig_r = $2, sig_s = $3, recovery_id = $4,
                tx_hash = $5, updated_ms = $6
             WHERE id = $7",
        )
        .bind(bump.unsigned_tx.clone())
        .bind(bump.r.to_vec())
        .bind(bump.s.to_vec())
        .bind(i64::from(bump.recovery_id))
        .bind(hash)
        .bind(now)
        .bind(withdrawal_id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(true)
    }
}
