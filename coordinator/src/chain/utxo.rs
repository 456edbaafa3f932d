//! Bitcoin-format UTXO chains in the withdrawal flow (Litecoin Core,
//! Bitcoin Core), on [`custos_chains::utxo`].
//!
//! # Design
//!
//! Like an EVM transaction, a UTXO transaction is built only when its
//! withdrawal enters `signing`: the coins come from the node's watch-only
//! wallet (which holds no key; the wallet's address is imported into it),
//! less the coins held by other withdrawals. Table `utxo_inputs` is the coin
//! lock: one row per input, `UNIQUE (chain, outpoint)`, written in one
//! database transaction with the `chain_txs` row and the withdrawal's
//! `unsigned_tx` (the PSBT), so a coin is in one withdrawal's transaction at
//! a time. A withdrawal that fails before any signature exists releases its
//! coins.
//!
//! Each input is signed in its own session, with its own presignature and
//! its own signing-session entry in the log (the signers check the whole
//! PSBT every time, sign the digest of the input named, and refuse a second
//! transaction for the same withdrawal). The signature of each input is
//! stored on its row; once all are there the witnesses are assembled (low s,
//! every signature verified against its input and the wallet key), logged,
//! and the transaction is sent; sending is idempotent by txid.
//!
//! Tracking asks the watch-only wallet: enough confirmations → `confirmed`,
//! with the fee the PSBT pays; unconfirmed (in the mempool, or dropped by
//! the node or by a reorg) → the same bytes are sent again on the next tick;
//! a conflicting transaction mined → `failed`. Coins that disappear (spent
//! elsewhere, reorged out) are no longer listed by the node, so they are
//! never selected.

use std::collections::HashSet;
use std::sync::Mutex as StdMutex;
use std::time::Duration;

use custos_chains::ChainError;
use custos_chains::utxo::rpc::{Broadcast, UtxoRpc};
use custos_chains::utxo::{
    BuildRequest, CheckedUtxoTx, OutPoint, Payout, Txid, UtxoNetwork, assemble_signed,
    build_unsigned, check_psbt, parse_address, wallet_address,
};
use custos_service::db::is_unique_violation;
use sqlx::Row;

use super::Payment;
use super::{ChainSettings, Chains, Pending, Tracked, db_err, rpc_note};
use crate::clock::now_ms;
use crate::error::CoordError;

/// One configured UTXO chain.
#[derive(Debug)]
pub struct UtxoChain {
    /// Its settings.
    pub settings: ChainSettings,
    /// Its network (from its name).
    pub network: UtxoNetwork,
    /// The node's watch-only wallet.
    pub watch_wallet: String,
    rpc: UtxoRpc,
    alloc: tokio::sync::Mutex<()>,
    /// Addresses imported into the watch-only wallet by this process.
    watched: StdMutex<HashSet<String>>,
    /// When this process first saw each withdrawal ready to be paid (the
    /// batching window runs from there; a restart starts it again).
    pub(super) ready_since: StdMutex<std::collections::HashMap<String, std::time::Instant>>,
}

/// Which signing sessions of a withdrawal's UTXO transaction: those of
/// the transaction in flight (`utxo_inputs`) or of its replacement being
/// signed (`utxo_bump_inputs`, [`super::utxo_bump`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inputs {
    /// `utxo_inputs`.
    Current,
    /// `utxo_bump_inputs`.
    Replacement,
}

impl Inputs {
    fn name(self) -> &'static str {
        match self {
            Inputs::Current => "utxo_inputs",
            Inputs::Replacement => "utxo_bump_inputs",
        }
    }

    /// The query of a withdrawal's inputs (`$1`), in order.
    pub(super) fn select(self) -> String {
        format!(
            "SELECT input_index, outpoint, presig_id, signers, signature FROM {}
             WHERE withdrawal_id = $1 ORDER BY input_index",
            self.name()
        )
    }
}

/// One input of a withdrawal's UTXO transaction.
#[derive(Clone, Debug)]
pub struct InputRow {
    /// Its position in the transaction.
    pub index: u32,
    /// The coin it spends.
    pub outpoint: String,
    /// The presignature reserved for its session.
    pub presig_id: Option<String>,
    /// That presignature's signers.
    pub signers: Vec<String>,
    /// Its signature (`r || s`), once made.
    pub signature: Option<Vec<u8>>,
}

impl InputRow {
    /// From a row of `utxo_inputs` or `utxo_bump_inputs`.
    pub(super) fn from_row(r: &sqlx::any::AnyRow) -> Result<Self, CoordError> {
        Ok(InputRow {
            index: u32::try_from(r.try_get::<i64, _>("input_index").map_err(db_err)?)
                .map_err(|_| CoordError::Internal("stored input index".into()))?,
            outpoint: r.try_get("outpoint").map_err(db_err)?,
            presig_id: r.try_get("presig_id").map_err(db_err)?,
            signers: serde_json::from_str(
                r.try_get::<Option<String>, _>("signers")
                    .map_err(db_err)?
                    .as_deref()
                    .unwrap_or("[]"),
            )
            .unwrap_or_default(),
            signature: r.try_get("signature").map_err(db_err)?,
        })
    }
}

impl UtxoChain {
    /// Checks the UTXO-specific settings (`field` names the config entry).
    pub fn new(
        settings: &ChainSettings,
        network: UtxoNetwork,
        field: impl Fn(&str) -> String,
    ) -> Result<Self, CoordError> {
        if settings.chain_id != 0 {
            return Err(CoordError::invalid(
                field("chain_id"),
                format!("a {network} chain has no chain id"),
            ));
        }
        let max = custos_chains::utxo::build::MAX_PAYOUTS;
        if settings.batch_max_payouts == 0 || settings.batch_max_payouts as usize > max {
            return Err(CoordError::invalid(
                field("batch_max_payouts"),
                format!("{} must be between 1 and {max}", settings.batch_max_payouts),
            ));
        }
        if settings.fee_target_blocks == 0 || settings.fee_target_blocks > 1008 {
            return Err(CoordError::invalid(
                field("fee_target_blocks"),
                format!(
                    "{} must be between 1 and 1008 blocks",
                    settings.fee_target_blocks
                ),
            ));
        }
        let rpc = UtxoRpc::new(
            &settings.rpc_url,
            Duration::from_millis(settings.rpc_timeout_ms.max(100)),
        )
        .map_err(|e| CoordError::invalid(field("rpc_url"), e.to_string()))?;
        let watch_wallet = settings
            .watch_wallet
            .clone()
            .unwrap_or_else(|| format!("custos-{}", settings.name));
        Ok(Self {
            settings: settings.clone(),
            network,
            watch_wallet,
            rpc,
            alloc: tokio::sync::Mutex::new(()),
            watched: StdMutex::new(HashSet::new()),
            ready_since: StdMutex::new(std::collections::HashMap::new()),
        })
    }

    /// The node's RPC client.
    pub(crate) fn rpc(&self) -> &UtxoRpc {
        &self.rpc
    }

    /// The node must be on this chain's network (a config error otherwise);
    /// an unreachable node is only logged (withdrawals wait for it).
    pub async fn check_node(&self, field: impl Fn(&str) -> String) -> Result<(), CoordError> {
        match self.rpc.chain().await {
            Ok((chain, _)) if chain == self.network.node_chain() => {
                if let Err(e) = self.rpc.ensure_watch_wallet(&self.watch_wallet).await {
                    tracing::warn!(chain = %self.settings.name, error = %e, "cannot open the node's watch-only wallet yet; withdrawals wait for it");
                }
                Ok(())
            }
            Ok((chain, _)) => Err(CoordError::invalid(
                field("rpc_url"),
                format!(
                    "the node is on chain {chain:?}, not {:?} ({})",
                    self.network.node_chain(),
                    self.network
                ),
            )),
            Err(e) => {
                tracing::warn!(chain = %self.settings.name, error = %e, "UTXO node unreachable at start; withdrawals wait for it");
                Ok(())
            }
        }
    }

    /// Imports `address` into the watch-only wallet (once per process, with
    /// a rescan so that coins it received before are found).
    pub(crate) async fn watch(&self, address: &str) -> Result<(), ChainError> {
        let seen = self
            .watched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(address);
        if seen {
            return Ok(());
        }
        self.rpc.ensure_watch_wallet(&self.watch_wallet).await?;
        self.rpc
            .watch_address(&self.watch_wallet, address, true)
            .await?;
        self.watched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(address.to_owned());
        Ok(())
    }

    /// After the node could not be reached (down or restarted), imports are
    /// made again (with their rescan) at the next [`UtxoChain::watch`]: the
    /// node may come back with its wallet restored, replaced or behind, and
    /// the coins of an address it no longer watches would look absent. A
    /// slow answer is not a reason: a rescan of a long chain is slow too.
    pub(crate) fn forget_imports_if_down(&self, e: &ChainError) {
        if matches!(e, ChainError::RpcUnreachable(_)) {
            self.watched
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }
    }

    /// The approved payout of `row`.
    pub(super) fn payout(&self, row: &Payment) -> Result<Payout, Pending> {
        let destination = parse_address(self.network, &row.destination)
            .map_err(|e| Pending::Wait(format!("destination: {e}")))?;
        let base_units = |field: &str, text: &str| {
            text.parse::<u64>().map_err(|_| {
                Pending::Wait(format!(
                    "{field} {text} is not a whole number of base units that fits a {} transaction",
                    self.network
                ))
            })
        };
        Ok(Payout {
            withdrawal_id: row.id.clone(),
            script_pubkey: destination.script_pubkey,
            amount: base_units("amount", &row.amount)?,
            fee_cap: base_units("fee cap", &row.fee_cap)?,
        })
    }
}

fn outpoint_text(o: &OutPoint) -> String {
    o.to_string()
}

/// A withdrawal's row in `chain_txs`, its chain-neutral columns.
#[derive(Clone, Debug)]
pub struct StoredTx {
    /// The PSBT.
    pub unsigned_tx: Vec<u8>,
    /// The signed transaction, once assembled.
    pub raw_tx: Option<Vec<u8>>,
    /// Its txid.
    pub tx_hash: Option<String>,
    /// How many times it was sent.
    pub sends: i64,
    /// When it was last sent (or a bump last given up), ms.
    pub last_sent_ms: Option<i64>,
    /// How many times it was replaced (fee bumps).
    pub bumps: i64,
    /// The replacement being signed, if any.
    pub bump_tx: Option<Vec<u8>>,
    /// The last replacement given up (some signers may have signed it).
    pub abandoned_tx: Option<Vec<u8>>,
}

impl Chains {
    /// The chain-neutral columns of a withdrawal's stored transaction (any chain).
    pub async fn stored_tx(&self, withdrawal_id: &str) -> Result<Option<StoredTx>, CoordError> {
        let r = sqlx::query(
            "SELECT unsigned_tx, raw_tx, tx_hash, sends, last_sent_ms, bumps, bump_tx, abandoned_tx
             FROM chain_txs WHERE withdrawal_id = $1",
        )
        .bind(withdrawal_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        r.map(|r| {
            Ok(StoredTx {
                unsigned_tx: r.try_get("unsigned_tx").map_err(db_err)?,
                raw_tx: r.try_get("raw_tx").map_err(db_err)?,
                tx_hash: r.try_get("tx_hash").map_err(db_err)?,
                sends: r.try_get("sends").map_err(db_err)?,
                last_sent_ms: r.try_get("last_sent_ms").map_err(db_err)?,
                bumps: r
                    .try_get::<Option<i64>, _>("bumps")
                    .map_err(db_err)?
                    .unwrap_or(0),
                bump_tx: r.try_get("bump_tx").map_err(db_err)?,
                abandoned_tx: r.try_get("abandoned_tx").map_err(db_err)?,
            })
        })
        .transpose()
    }

    /// The UTXO chain named `name`, if configured.
    pub fn utxo(&self, name: &str) -> Option<&UtxoChain> {
        self.utxo.iter().find(|c| c.settings.name == name)
    }

    /// Builds (once) the PSBT of a UTXO withdrawal in `signing` (`rows[0]`,
    /// the lead) and of the others `rows` names (a batch: one output each,
    /// in this order, same wallet and asset): selects coins not held by
    /// another withdrawal, change back to the wallet, the node's fee
    /// estimate within every approved fee cap; stores the transaction, its
    /// inputs (the coin lock), the batch and every withdrawal's
    /// `unsigned_tx` together.
    pub async fn prepare_utxo(
        &self,
        chain: &UtxoChain,
        rows: &[Payment],
        wallet_key: &[u8],
    ) -> Result<Vec<u8>, Pending> {
        let name = &chain.settings.name;
        let row = rows
            .first()
            .ok_or_else(|| CoordError::Internal("no withdrawal to pay".into()))?;
        if let Some(t) = self.stored_tx(&row.id).await? {
            self.attach(&row.id, &t.unsigned_tx).await?;
            return Ok(t.unsigned_tx);
        }
        let wallet = wallet_address(chain.network, wallet_key).map_err(|e| {
            Pending::Wait(format!("wallet {} has no usable address: {e}", row.wallet))
        })?;
        let payouts = rows
            .iter()
            .map(|r| chain.payout(r))
            .collect::<Result<Vec<_>, _>>()?;
        chain
            .watch(&wallet.text)
            .await
            .map_err(|e| rpc_note(name, "cannot watch the wallet's address", &e))?;
        let _g = chain.alloc.lock().await;
        self.release_abandoned(name, true).await?;
        let held: HashSet<String> =
            sqlx::query("SELECT outpoint FROM utxo_inputs WHERE chain = $1")
                .bind(name)
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?
                .iter()
                .map(|r| r.get::<String, _>("outpoint"))
                .collect();
        let coins: Vec<_> = chain
            .rpc
            .spendable(&chain.watch_wallet, chain.settings.spend_confirmations)
            .await
            .map_err(|e| {
                chain.forget_imports_if_down(&e);
                rpc_note(name, "cannot list the wallet's coins", &e)
            })?
            .into_iter()
            .filter(|c| {
                c.txout()
                    .is_some_and(|o| o.script_pubkey == wallet.script_pubkey)
            })
            .filter(|c| !held.contains(&outpoint_text(&c.outpoint)))
            .collect();
        let relay = chain
            .rpc
            .relay_fee_rate()
            .await
            .map_err(|e| rpc_note(name, "cannot read the relay fee", &e))?;
        let estimate = chain
            .rpc
            .estimate_fee_rate(chain.settings.fee_target_blocks)
            .await
            .map_err(|e| rpc_note(name, "fee estimation failed", &e))?;
        // A fresh node (regtest) has no estimate: the relay minimum is what
        // it takes. Never below the relay minimum either way.
        let rate = estimate.unwrap_or(relay).max(relay);
        let built = build_unsigned(&BuildRequest {
            coins: &coins,
            required: &[],
            payouts: &payouts,
            change_script: &wallet.script_pubkey,
            fee_rate_sat_per_kvb: rate,
        })
        .map_err(|e| match e {
            ChainError::InsufficientFunds { needed, available } => Pending::Wait(format!(
                "chain {name}: wallet {} ({}) has {available} base units in {} spendable coin(s) not held by other withdrawals; this withdrawal needs {needed} with its fee (waiting for deposits or for other withdrawals to confirm)",
                row.wallet,
                wallet.text,
                coins.len()
            )),
            other => Pending::Wait(format!(
                "chain {name}: cannot build the transaction at {rate} base units per 1,000 vbytes: {other}"
            )),
        })?;
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        sqlx::query(
            "INSERT INTO chain_txs (withdrawal_id, chain, sender, nonce, unsigned_tx, sends, created_ms)
             VALUES ($1, $2, $3, NULL, $4, 0, $5)",
        )
        .bind(&row.id)
        .bind(name)
        .bind(&wallet.text)
        .bind(built.psbt.clone())
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        for (i, o) in built.inputs.iter().enumerate() {
            let res = sqlx::query(
                "INSERT INTO utxo_inputs (withdrawal_id, input_index, chain, outpoint)
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(&row.id)
            .bind(i64::try_from(i).unwrap_or(i64::MAX))
            .bind(name)
            .bind(outpoint_text(o))
            .execute(&mut *tx)
            .await;
            match res {
                Ok(_) => {}
                Err(e) if is_unique_violation(&e) => {
                    return Err(Pending::Wait(format!(
                        "coin {o} was taken by another withdrawal concurrently; selecting again"
                    )));
                }
                Err(e) => return Err(db_err(e).into()),
            }
        }
        for (i, r) in rows.iter().enumerate() {
            let res = sqlx::query(
                "UPDATE withdrawals SET unsigned_tx = $1, updated_ms = $2
                 WHERE id = $3 AND state = 'signing' AND unsigned_tx IS NULL",
            )
            .bind(built.psbt.clone())
            .bind(now_ms())
            .bind(&r.id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            if res.rows_affected() != 1 {
                return Err(Pending::Wait(format!(
                    "withdrawal {} left `signing` (or got a transaction) while this one was built; building again",
                    r.id
                )));
            }
            if rows.len() > 1 {
                sqlx::query(
                    "INSERT INTO utxo_batches (withdrawal_id, lead_id, output_index) VALUES ($1, $2, $3)",
                )
                .bind(&r.id)
                .bind(&row.id)
                .bind(i64::try_from(i).unwrap_or(i64::MAX))
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            }
        }
        tx.commit().await.map_err(db_err)?;
        tracing::info!(
            withdrawal = %row.id, chain = %name, txid = %built.txid, inputs = built.inputs.len(),
            payouts = rows.len(), fee = built.fee, change = ?built.change, rate, "built UTXO transaction"
        );
        Ok(built.psbt)
    }

    /// The stored PSBT of a UTXO withdrawal, checked as the signers check it
    /// (its digests, fee and change).
    pub fn checked_utxo(
        &self,
        chain: &UtxoChain,
        rows: &[Payment],
        psbt: &[u8],
        wallet_key: &[u8],
    ) -> Result<CheckedUtxoTx, CoordError> {
        let payouts = rows
            .iter()
            .map(|r| chain.payout(r))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| match e {
                Pending::Wait(note) | Pending::Storage(CoordError::Internal(note)) => {
                    CoordError::Internal(note)
                }
                Pending::Storage(e) => e,
            })?;
        let own = custos_chains::utxo::wallet_script(wallet_key)
            .map_err(|e| CoordError::Internal(format!("wallet key: {e}")))?;
        let lead = rows.first().map_or("", |r| r.id.as_str());
        check_psbt(psbt, &payouts, &[own])
            .map_err(|e| CoordError::Internal(format!("{lead}: stored transaction: {e}")))
    }

    /// The inputs of a withdrawal's UTXO transaction, in order.
    pub async fn utxo_inputs(&self, withdrawal_id: &str) -> Result<Vec<InputRow>, CoordError> {
        self.inputs_of(Inputs::Current, withdrawal_id).await
    }

    /// The inputs in `table` of a withdrawal, in order.
    pub async fn inputs_of(
        &self,
        table: Inputs,
        withdrawal_id: &str,
    ) -> Result<Vec<InputRow>, CoordError> {
        sqlx::query(sqlx::AssertSqlSafe(table.select()))
            .bind(withdrawal_id)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?
            .iter()
            .map(InputRow::from_row)
            .collect()
    }

    /// Consumes presignature `presig_id` (durably) for input `index` in
    /// `table` of a withdrawal; `false` if another caller won.
    pub async fn reserve_input_presig(
        &self,
        table: Inputs,
        withdrawal_id: &str,
        index: u32,
        presig_id: &str,
        signers: &[String],
    ) -> Result<bool, CoordError> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        if !crate::db::consume_presig(&mut tx, presig_id).await? {
            return Ok(false);
        }
        let sql = format!(
            "UPDATE {} SET presig_id = $1, signers = $2
             WHERE withdrawal_id = $3 AND input_index = $4 AND presig_id IS NULL",
            table.name()
        );
        let res = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(presig_id)
            .bind(serde_json::to_string(signers).unwrap_or_default())
            .bind(withdrawal_id)
            .bind(i64::from(index))
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        if res.rows_affected() != 1 {
            return Ok(false);
        }
        tx.commit().await.map_err(db_err)?;
        Ok(true)
    }

    /// Stores the signature (`r || s`) of input `index` in `table`.
    pub async fn store_input_signature(
        &self,
        table: Inputs,
        withdrawal_id: &str,
        index: u32,
        signature: &[u8],
    ) -> Result<(), CoordError> {
        let sql = format!(
            "UPDATE {} SET signature = $1
             WHERE withdrawal_id = $2 AND input_index = $3 AND signature IS NULL",
            table.name()
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(signature.to_vec())
            .bind(withdrawal_id)
            .bind(i64::from(index))
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// Releases the coins of a withdrawal that failed before any of its
    /// inputs was signed, so other withdrawals can spend them.
    pub async fn release_unsigned_utxo(&self, withdrawal_id: &str) -> Result<(), CoordError> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let signed: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM utxo_inputs WHERE withdrawal_id = $1 AND signature IS NOT NULL",
        )
        .bind(withdrawal_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err)?;
        if signed > 0 {
            return Ok(());
        }
        for table in ["utxo_inputs", "chain_txs"] {
            let sql = format!(
                "DELETE FROM {table} WHERE withdrawal_id = $1
                   AND withdrawal_id IN (SELECT id FROM withdrawals WHERE id = $1 AND state = 'failed')"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(withdrawal_id)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(())
    }

    /// Assembles the signed transaction from every input's signature and
    /// stores it, once. Returns (raw, txid).
    pub async fn assemble_utxo(
        &self,
        chain: &UtxoChain,
        rows: &[Payment],
        wallet_key: &[u8],
    ) -> Result<(Vec<u8>, String), CoordError> {
        let row = rows
            .first()
            .ok_or_else(|| CoordError::Internal("no withdrawal to pay".into()))?;
        let t = self
            .stored_tx(&row.id)
            .await?
            .ok_or_else(|| CoordError::Internal(format!("{} has no transaction", row.id)))?;
        if let (Some(raw), Some(hash)) = (t.raw_tx.clone(), t.tx_hash.clone()) {
            return Ok((raw, hash));
        }
        let checked = self.checked_utxo(chain, rows, &t.unsigned_tx, wallet_key)?;
        let signatures: Vec<[u8; 64]> = self
            .utxo_inputs(&row.id)
            .await?
            .into_iter()
            .map(|i| {
                i.signature
                    .as_deref()
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(|| {
                        CoordError::Internal(format!("{}: input {} is not signed", row.id, i.index))
                    })
            })
            .collect::<Result<_, _>>()?;
        let signed = assemble_signed(&checked, &signatures, wallet_key)
            .map_err(|e| CoordError::Internal(format!("assembling the signed transaction: {e}")))?;
        self.store_signed(&row.id, signed.raw, &signed.txid.to_string())
            .await
    }

    /// One look at a broadcast UTXO transaction: any of its versions (the
    /// current one and those it replaced) confirmed with enough
    /// confirmations wins; a conflicting transaction mined fails it;
    /// otherwise the current version is (re-)sent while unconfirmed (the
    /// node may have dropped it, or a reorg taken it out of a block), and
    /// reported stuck once it has waited `resubmit_after_secs` in the
    /// mempool (the engine then replaces it by fee).
    pub async fn track_utxo(
        &self,
        chain: &UtxoChain,
        row: &Payment,
        _wallet_key: &[u8],
    ) -> Result<Tracked, Pending> {
        let name = &chain.settings.name;
        let t = self
            .stored_tx(&row.id)
            .await?
            .ok_or_else(|| CoordError::Internal(format!("{} has no transaction", row.id)))?;
        let (raw, hash_text) = match (t.raw_tx.clone(), t.tx_hash.clone()) {
            (Some(r), Some(h)) => (r, h),
            _ => {
                return Err(Pending::Storage(CoordError::Internal(format!(
                    "{} is broadcast without a signed transaction",
                    row.id
                ))));
            }
        };
        let txid = parse_txid(&hash_text)?;
        let mut versions = vec![(hash_text.clone(), raw.clone())];
        versions.extend(self.replaced_versions(&row.id).await?);
        let mut current = None;
        for (i, (hash, version_raw)) in versions.iter().enumerate() {
            let status = chain
                .rpc
                .wallet_transaction(&chain.watch_wallet, &parse_txid(hash)?)
                .await
                .map_err(|e| rpc_note(name, "cannot look the transaction up", &e))?
                .map(|(_, s)| s);
            if i == 0 {
                current = status.clone();
            }
            let Some(confs) = status
                .as_ref()
                .and_then(|s| u64::try_from(s.confirmations).ok())
                .filter(|c| *c > 0)
            else {
                continue;
            };
            if confs < chain.settings.confirmations {
                return Ok(Tracked::Waiting(format!(
                    "{hash} in a block: {confs} of {} confirmations",
                    chain.settings.confirmations
                )));
            }
            let (_, height) = chain
                .rpc
                .chain()
                .await
                .map_err(|e| rpc_note(name, "cannot read the block height", &e))?;
            return Ok(Tracked::Confirmed {
                hash: hash.clone(),
                block: height.saturating_add(1).saturating_sub(confs),
                gas_used: 0,
                fee_paid: u128::from(paid_fee(&t.unsigned_tx, version_raw)?),
            });
        }
        if let Some(s) = current.as_ref().filter(|s| s.confirmations < 0) {
            return Ok(Tracked::Conflicted(format!(
                "{hash_text}: a conflicting transaction spending the same coins is mined {} blocks deep",
                -s.confirmations
            )));
        }
        if t.bump_tx.is_some() {
            return Ok(Tracked::Stuck(format!(
                "{hash_text}: resuming its fee bump"
            )));
        }
        // Never sent, in the mempool, or dropped (by the node or a reorg):
        // send the same bytes; a transaction the node has is success.
        let sent = chain
            .rpc
            .send_raw(&raw, txid)
            .await
            .map_err(|e| rpc_note(name, &format!("broadcasting {hash_text} failed"), &e))?;
        // The stuck clock runs from the first send, or from a send after the
        // node forgot it (a node answers a transaction already in its
        // mempool as accepted too, so the answer cannot tell).
        let entered = t.last_sent_ms.is_none() || current.is_none();
        sqlx::query(
            "UPDATE chain_txs SET sends = sends + 1,
                last_sent_ms = CASE WHEN $1 THEN $2 ELSE last_sent_ms END
             WHERE withdrawal_id = $3 AND tx_hash = $4",
        )
        .bind(entered)
        .bind(now_ms())
        .bind(&row.id)
        .bind(&hash_text)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        if entered {
            tracing::info!(withdrawal = %row.id, tx = %hash_text, already_known = matches!(sent, Broadcast::AlreadyKnown(_)), resend = t.sends > 0, "transaction sent");
            return Ok(Tracked::Waiting(format!("{hash_text} in the mempool")));
        }
        let waited_ms = now_ms().saturating_sub(t.last_sent_ms.unwrap_or(i64::MAX));
        let resubmit_ms = i64::try_from(chain.settings.resubmit_after_secs.saturating_mul(1000))
            .unwrap_or(i64::MAX);
        if waited_ms < resubmit_ms {
            return Ok(Tracked::Waiting(format!("{hash_text} in the mempool")));
        }
        if t.bumps < i64::from(chain.settings.max_fee_bumps) {
            return Ok(Tracked::Stuck(format!(
                "{hash_text} unconfirmed for {}s",
                waited_ms / 1000
            )));
        }
        Ok(Tracked::Waiting(format!(
            "{hash_text} in the mempool; replaced {} times already (max_fee_bumps), waiting",
            t.bumps
        )))
    }

    /// The versions a withdrawal's transaction replaced: (txid, raw).
    pub(super) async fn replaced_versions(
        &self,
        withdrawal_id: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, CoordError> {
        sqlx::query(
            "SELECT tx_hash, raw_tx FROM chain_tx_replaced WHERE withdrawal_id = $1
             ORDER BY replaced_ms DESC",
        )
        .bind(withdrawal_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?
        .iter()
        .map(|r| {
            Ok((
                r.try_get("tx_hash").map_err(db_err)?,
                r.try_get("raw_tx").map_err(db_err)?,
            ))
        })
        .collect()
    }
}

/// A stored txid, parsed.
pub(super) fn parse_txid(text: &str) -> Result<Txid, CoordError> {
    text.parse()
        .map_err(|_| CoordError::Internal(format!("stored txid {text}")))
}

/// The fee a signed version pays: every version spends the coins of the
/// current PSBT (a replacement spends exactly the replaced coins).
fn paid_fee(psbt: &[u8], raw: &[u8]) -> Result<u64, CoordError> {
    custos_chains::utxo::replace::signed_fee(psbt, raw)
        .map_err(|e| CoordError::Internal(format!("stored transaction: {e}")))
}
