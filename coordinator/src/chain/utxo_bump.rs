//! Replace-by-fee on UTXO chains: a sent transaction that stays unconfirmed
//! is replaced by one spending the same coins, paying the same outputs, with
//! a higher fee taken from the change, within every withdrawal's fee cap
//! (`custos_chains::utxo::replace`).
//!
//! As with EVM fee bumps, every step is persisted before it is acted on:
//! the replacement PSBT (`chain_txs.bump_tx`) and its inputs
//! (`utxo_bump_inputs`, one row each) are stored together; each input's
//! presignature is consumed in the database transaction that records it on
//! its row; each signature is stored on its row; once all are there, the
//! signed replacement is logged as broadcast and swapped in, in one database
//! transaction: the replaced version moves to `chain_tx_replaced` (tracking
//! looks for every version: whichever confirms wins) and `utxo_inputs` takes
//! the replacement's sessions. A refusal gives the replacement up (its bytes
//! are kept as `abandoned_tx`: the next one must pay more than it too).

use custos_chains::ChainError;
use custos_chains::utxo::{ReplacementRequest, build_replacement, psbt_fee, wallet_address};

use super::utxo::{InputRow, Inputs, UtxoChain};
use super::{Chains, Payment, Pending, db_err, rpc_note, swap_in_replacement};
use crate::clock::now_ms;
use crate::error::CoordError;

impl Chains {
    /// The replacement of a withdrawal's current UTXO transaction, made once
    /// and stored with its inputs before any of them is signed. Waits with a
    /// note when the fee cap or the change leaves no room (and looks again
    /// only after `resubmit_after_secs`).
    pub async fn prepare_utxo_bump(
        &self,
        chain: &UtxoChain,
        rows: &[Payment],
        wallet_key: &[u8],
    ) -> Result<Vec<u8>, Pending> {
        let name = &chain.settings.name;
        let row = rows
            .first()
            .ok_or_else(|| CoordError::Internal("no withdrawal to pay".into()))?;
        let t = self
            .stored_tx(&row.id)
            .await?
            .ok_or_else(|| CoordError::Internal(format!("{} has no transaction", row.id)))?;
        if let Some(b) = t.bump_tx {
            return Ok(b);
        }
        let wallet = wallet_address(chain.network, wallet_key).map_err(|e| {
            Pending::Wait(format!("wallet {} has no usable address: {e}", row.wallet))
        })?;
        let payouts = rows
            .iter()
            .map(|r| chain.payout(r))
            .collect::<Result<Vec<_>, _>>()?;
        let internal = |what: &str, e: ChainError| CoordError::Internal(format!("{what}: {e}"));
        let replaced_fee =
            psbt_fee(&t.unsigned_tx).map_err(|e| internal("stored transaction", e))?;
        // Above an abandoned replacement too: a signer may have signed it.
        let floor = t
            .abandoned_tx
            .as_deref()
            .and_then(|b| psbt_fee(b).ok())
            .unwrap_or(0)
            .max(replaced_fee);
        let vbytes = custos_chains::utxo::check_psbt(
            &t.unsigned_tx,
            &payouts,
            std::slice::from_ref(&wallet.script_pubkey),
        )
        .map(|c| {
            // Every input spends the wallet's own script.
            custos_chains::utxo::fees::tx_vbytes(
                std::iter::repeat_n(wallet.script_pubkey.as_script(), c.tx.input.len()),
                c.tx.output.iter().map(|o| o.script_pubkey.as_script()),
            )
        })
        .map_err(|e| internal("stored transaction", e))?;
        let relay = chain
            .rpc()
            .relay_fee_rate()
            .await
            .map_err(|e| rpc_note(name, "cannot read the relay fee", &e))?;
        let incremental = chain
            .rpc()
            .incremental_fee_rate()
            .await
            .map_err(|e| rpc_note(name, "cannot read the incremental relay fee", &e))?;
        let estimate = chain
            .rpc()
            .estimate_fee_rate(chain.settings.fee_target_blocks)
            .await
            .map_err(|e| rpc_note(name, "fee estimation failed", &e))?
            .unwrap_or(relay);
        // The replaced rate over the signed size the builder estimates (an
        // upper bound on the size, so a lower bound on the rate), raised.
        let replaced_rate = floor.saturating_mul(1_000) / vbytes.max(1);
        let raised = replaced_rate
            .saturating_mul(100 + u64::from(chain.settings.fee_bump_percent))
            .div_ceil(100);
        let rate = estimate.max(relay).max(raised);
        let built = match build_replacement(&ReplacementRequest {
            replaced: &t.unsigned_tx,
            fee_floor: floor,
            payouts: &payouts,
            change_script: &wallet.script_pubkey,
            min_rate_sat_per_kvb: rate,
            incremental_sat_per_kvb: incremental,
        }) {
            Ok(b) => b,
            Err(e) => {
                self.touch_sent(&row.id).await?;
                return Err(Pending::Wait(format!(
                    "chain {name}: {} unconfirmed, but no replacement of the same coins at {rate} base units per 1,000 vbytes exists within the fee cap of {}: {e}; waiting at the current fee {replaced_fee}",
                    t.tx_hash.unwrap_or_default(),
                    row.fee_cap
                )));
            }
        };
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let res = sqlx::query(
            "UPDATE chain_txs SET bump_tx = $1 WHERE withdrawal_id = $2 AND bump_tx IS NULL",
        )
        .bind(built.psbt.clone())
        .bind(&row.id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        if res.rows_affected() == 1 {
            sqlx::query("DELETE FROM utxo_bump_inputs WHERE withdrawal_id = $1")
                .bind(&row.id)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            for (i, o) in built.inputs.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO utxo_bump_inputs (withdrawal_id, input_index, outpoint)
                     VALUES ($1, $2, $3)",
                )
                .bind(&row.id)
                .bind(i64::try_from(i).unwrap_or(i64::MAX))
                .bind(o.to_string())
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            }
        }
        tx.commit().await.map_err(db_err)?;
        tracing::info!(
            withdrawal = %row.id, chain = %name, txid = %built.txid, from = replaced_fee,
            to = built.fee, rate, "UTXO fee bump prepared"
        );
        // Whatever is stored now is what gets signed (a concurrent writer wins).
        self.stored_tx(&row.id)
            .await?
            .and_then(|t| t.bump_tx)
            .ok_or_else(|| Pending::Wait("the fee bump was abandoned concurrently".into()))
    }

    /// Swaps the signed replacement in (module docs), in one database
    /// transaction. `false` if no replacement of these bytes was pending
    /// (already swapped in).
    pub async fn commit_utxo_bump(
        &self,
        withdrawal_id: &str,
        bump_psbt: &[u8],
        raw: &[u8],
        txid: &str,
    ) -> Result<bool, CoordError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        // Anything that fails below drops `tx`: the swap rolls back.
        if !swap_in_replacement(&mut tx, withdrawal_id, bump_psbt, raw, txid, now).await? {
            return Ok(false);
        }
        let chain: String =
            sqlx::query_scalar("SELECT chain FROM chain_txs WHERE withdrawal_id = $1")
                .bind(withdrawal_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?
                .unwrap_or_default();
        let inputs: Vec<InputRow> = sqlx::query(sqlx::AssertSqlSafe(Inputs::Replacement.select()))
            .bind(withdrawal_id)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?
            .iter()
            .map(InputRow::from_row)
            .collect::<Result<_, _>>()?;
        let first = inputs
            .first()
            .and_then(|i| i.signature.clone())
            .filter(|s| s.len() == 64)
            .ok_or_else(|| {
                CoordError::Internal(format!("{withdrawal_id}: replacement input 0 not signed"))
            })?;
        sqlx::query("DELETE FROM utxo_inputs WHERE withdrawal_id = $1")
            .bind(withdrawal_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        for i in &inputs {
            sqlx::query(
                "INSERT INTO utxo_inputs (withdrawal_id, input_index, chain, outpoint, presig_id, signers, signature)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(withdrawal_id)
            .bind(i64::from(i.index))
            .bind(&chain)
            .bind(&i.outpoint)
            .bind(i.presig_id.clone())
            .bind(serde_json::to_string(&i.signers).unwrap_or_default())
            .bind(i.signature.clone())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        sqlx::query("DELETE FROM utxo_bump_inputs WHERE withdrawal_id = $1")
            .bind(withdrawal_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        sqlx::query(
            "UPDATE withdrawals SET unsigned_tx = $1, sig_r = $2, sig_s = $3, tx_hash = $4,
                updated_ms = $5
             WHERE id = $6",
        )
        .bind(bump_psbt.to_vec())
        .bind(first[..32].to_vec())
        .bind(first[32..].to_vec())
        .bind(txid)
        .bind(now)
        .bind(withdrawal_id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        // The other withdrawals a batch pays show the replacement too.
        sqlx::query(
            "UPDATE withdrawals SET unsigned_tx = $1, tx_hash = $2, updated_ms = $3
             WHERE id IN (SELECT withdrawal_id FROM utxo_batches WHERE lead_id = $4)
               AND id <> $4",
        )
        .bind(bump_psbt.to_vec())
        .bind(txid)
        .bind(now)
        .bind(withdrawal_id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(true)
    }

    /// Gives up a replacement the signers refused: the current version
    /// stays, and the next bump is tried after `resubmit_after_secs`.
    pub async fn abandon_utxo_bump(&self, withdrawal_id: &str) -> Result<(), CoordError> {
        self.abandon_bump(withdrawal_id).await?;
        sqlx::query("DELETE FROM utxo_bump_inputs WHERE withdrawal_id = $1")
            .bind(withdrawal_id)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }
}
