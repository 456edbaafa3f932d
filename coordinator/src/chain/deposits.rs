//! Deposits into the wallets on UTXO chains, as the node sees them.
//!
//! Every wallet key on a UTXO chain has one address, and as many derived
//! deposit addresses as were asked for (`crate::derived`, credited to the
//! wallet); the coordinator imports each into the node's watch-only wallet (with a rescan, so earlier payments
//! count) and reads the wallet's received outputs with `listsinceblock`
//! from a cursor kept in `utxo_deposit_cursors` (the block the last
//! complete scan ended at, and the addresses it covered: a new address
//! restarts from the first block). The cursor moves only after every
//! deposit the scan found is in the ledger, so none is skipped however many
//! arrive between scans. An output is a deposit
//! when it pays a wallet's address, has the chain's `confirmations`, and is
//! not in a transaction of the wallets' own withdrawals (their change comes
//! back to the same address). Each deposit is named `<chain>:<txid>:<vout>`,
//! the reference the ledger credits it under exactly once, so scanning again
//! (or after a restart) credits nothing twice. Each carries its block's
//! height and hash (from the same listing): the record of credits
//! ([`super::credits`]) later asks the node with `getblockhash` whether that
//! block is still the one at its height, reverses the credit when a
//! reorganisation replaced it, and moves the cursor back to the block below
//! the fork ([`Chains::rewind_utxo_cursor`]).

use std::collections::{HashMap, HashSet};

use custos_chains::utxo::rpc::coins_to_base_units;
use custos_chains::utxo::wallet_address;
use serde_json::{Value, json};
use sqlx::Row;

use super::{Chains, db_err};
use crate::error::CoordError;

/// A confirmed payment into a wallet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deposit {
    /// The chain's name.
    pub chain: String,
    /// The wallet (key id) it pays.
    pub wallet: String,
    /// The address it pays (the wallet's own or a derived one).
    pub address: String,
    /// The asset: the chain's native coin ("LTC", "ETH") or a token's symbol.
    pub asset: String,
    /// Base units.
    pub amount: u128,
    /// Its name on the chain (`<chain>:<txid>:<vout>`, `<chain>:<tx hash>`,
    /// `<chain>:<tx hash>:log<i>`): the ledger's reference for its first
    /// credit ([`super::credits::ledger_reference`]).
    pub reference: String,
    /// Height of the block it is in.
    pub block_number: u64,
    /// That block's hash, as the node prints it.
    pub block_hash: String,
    /// Confirmations when seen.
    pub confirmations: u64,
}

impl Chains {
    /// Whether any UTXO chain is configured.
    pub fn has_utxo(&self) -> bool {
        !self.utxo.is_empty()
    }

    /// The confirmed deposits into the wallets on every UTXO chain since
    /// each chain's cursor (see the module docs). A chain whose node cannot
    /// be reached is skipped with a warning (the next scan retries).
    pub async fn utxo_deposits(&self) -> Result<Vec<UtxoScan>, CoordError> {
        let mut scans = Vec::new();
        for chain in &self.utxo {
            let name = &chain.settings.name;
            let Some(asset) = custos_chains::family::native_asset(name) else {
                continue;
            };
            let wallets = self.wallet_addresses(chain).await?;
            if wallets.is_empty() {
                continue;
            }
            let own: HashSet<String> = sqlx::query(
                "SELECT tx_hash FROM chain_txs WHERE chain = $1 AND tx_hash IS NOT NULL
                 UNION SELECT r.tx_hash FROM chain_tx_replaced r
                 JOIN chain_txs t ON t.withdrawal_id = r.withdrawal_id WHERE t.chain = $1",
            )
            .bind(name)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?
            .iter()
            .map(|r| r.get::<String, _>("tx_hash"))
            .collect();
            let cursor = self.utxo_cursor(name, wallets.keys()).await?;
            let (received, next_block) = match self
                .received_since(chain, wallets.keys(), cursor.as_deref())
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    chain.forget_imports_if_down(&e);
                    tracing::warn!(chain = %name, error = %e, "cannot read deposits from the node; retrying at the next scan");
                    continue;
                }
            };
            let deposits = received
                .into_iter()
                .filter(|r| {
                    !own.contains(&r.txid) && r.confirmations >= chain.settings.confirmations
                })
                .filter_map(|r| {
                    // A confirmed listing always names its block.
                    let (block_number, block_hash) = r.block?;
                    Some(Deposit {
                        chain: name.clone(),
                        wallet: wallets.get(&r.address)?.clone(),
                        reference: format!("{name}:{}:{}", r.txid, r.vout),
                        address: r.address,
                        asset: asset.to_owned(),
                        amount: u128::from(r.amount),
                        block_number,
                        block_hash,
                        confirmations: r.confirmations,
                    })
                })
                .collect();
            scans.push(UtxoScan {
                chain: name.clone(),
                deposits,
                next_block,
                addresses: wallets.keys().cloned().collect(),
            });
        }
        Ok(scans)
    }

    /// Where the next scan of `chain` starts: the block its last complete
    /// scan ended at, or `None` (from the first block) when there is none
    /// or when a wallet address was added since (the node's import rescan
    /// found that address's earlier payments, which lie before the cursor).
    async fn utxo_cursor(
        &self,
        chain: &str,
        addresses: impl Iterator<Item = &String>,
    ) -> Result<Option<String>, CoordError> {
        let row =
            sqlx::query("SELECT block_hash, addresses FROM utxo_deposit_cursors WHERE chain = $1")
                .bind(chain)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let covered: HashSet<String> =
            serde_json::from_str(&row.get::<String, _>("addresses")).unwrap_or_default();
        if addresses.into_iter().all(|a| covered.contains(a)) {
            Ok(Some(row.get("block_hash")))
        } else {
            Ok(None)
        }
    }

    /// Records that every deposit of `scan` is in the ledger: the next scan
    /// of its chain starts at the block this one ended at.
    pub async fn advance_utxo_cursor(&self, scan: &UtxoScan) -> Result<(), CoordError> {
        let Some(block) = &scan.next_block else {
            return Ok(());
        };
        let mut addresses: Vec<&String> = scan.addresses.iter().collect();
        addresses.sort();
        let addresses = serde_json::to_string(&addresses)
            .map_err(|e| CoordError::Internal(format!("deposit cursor: {e}")))?;
        sqlx::query(
            "INSERT INTO utxo_deposit_cursors (chain, block_hash, addresses) VALUES ($1, $2, $3)
             ON CONFLICT (chain) DO UPDATE SET block_hash = excluded.block_hash, addresses = excluded.addresses",
        )
        .bind(&scan.chain)
        .bind(block)
        .bind(addresses)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    /// Moves the cursor of `chain` back so that the blocks from `height` on
    /// are listed again: to the block below it (`listsinceblock` lists the
    /// blocks after its argument), or to the first block.
    pub async fn rewind_utxo_cursor(
        &self,
        chain: &super::utxo::UtxoChain,
        height: u64,
    ) -> Result<(), CoordError> {
        let name = &chain.settings.name;
        let below = match height.checked_sub(1) {
            Some(h) => chain.block_hash_at(h).await?,
            None => None,
        };
        match below {
            Some(hash) => {
                sqlx::query("UPDATE utxo_deposit_cursors SET block_hash = $2 WHERE chain = $1")
                    .bind(name)
                    .bind(hash)
            }
            None => sqlx::query("DELETE FROM utxo_deposit_cursors WHERE chain = $1").bind(name),
        }
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    /// The native coin of the UTXO chain `name` and what each wallet on it
    /// holds: its unspent coins as the node lists them, the mempool's
    /// included (a withdrawal's change counts from its broadcast). `None`
    /// when `name` is not a configured UTXO chain.
    pub async fn utxo_holdings(
        &self,
        name: &str,
    ) -> Option<Result<(&'static str, Vec<Holding>), CoordError>> {
        let chain = self.utxo.iter().find(|c| c.settings.name == name)?;
        let asset = custos_chains::family::native_asset(name)?;
        Some(self.holdings(chain).await.map(|h| (asset, h)))
    }

    async fn holdings(&self, chain: &super::utxo::UtxoChain) -> Result<Vec<Holding>, CoordError> {
        let name = &chain.settings.name;
        let node_err =
            |e: custos_chains::ChainError| CoordError::unavailable(format!("{name} node: {e}"));
        let wallets = self.wallet_addresses(chain).await?;
        for address in wallets.keys() {
            chain.watch(address).await.map_err(node_err)?;
        }
        let coins = chain
            .rpc()
            .list_unspent(&chain.watch_wallet, 0)
            .await
            .map_err(node_err)?;
        let mut out: Vec<Holding> = wallets
            .iter()
            .map(|(address, wallet)| Holding {
                wallet: wallet.clone(),
                address: address.clone(),
                amount: coins
                    .iter()
                    .filter(|c| &c.address == address)
                    .map(|c| c.value)
                    .sum(),
            })
            .collect();
        out.sort_by(|a, b| a.wallet.cmp(&b.wallet));
        Ok(out)
    }

    /// Each wallet's address on `chain` → its wallet (key id).
    async fn wallet_addresses(
        &self,
        chain: &super::utxo::UtxoChain,
    ) -> Result<HashMap<String, String>, CoordError> {
        let mut wallets = HashMap::new();
        for row in sqlx::query(
            "SELECT key_id, public_key FROM keys WHERE chain = $1 AND public_key IS NOT NULL",
        )
        .bind(&chain.settings.name)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?
        {
            let key: Vec<u8> = row.get("public_key");
            if let Ok(address) = wallet_address(chain.network, &key) {
                wallets.insert(address.text, row.get::<String, _>("key_id"));
            }
        }
        // The wallets' derived deposit addresses: what they receive is the
        // wallet's (crate::derived).
        for (wallet, address) in crate::derived::on_chain(&self.pool, &chain.settings.name).await? {
            wallets.insert(address, wallet);
        }
        Ok(wallets)
    }

    /// The outputs the node's watch-only wallet received in blocks after
    /// `since` (all of them for `None`) and in its mempool (after importing
    /// `addresses`, once per process, with a rescan), and the block the next
    /// scan starts at: the deepest one that a payment still short of the
    /// chain's confirmations can be in, so such a payment is listed again.
    async fn received_since(
        &self,
        chain: &super::utxo::UtxoChain,
        addresses: impl Iterator<Item = &String>,
        since: Option<&str>,
    ) -> Result<(Vec<Received>, Option<String>), custos_chains::ChainError> {
        for address in addresses {
            chain.watch(address).await?;
        }
        let m = "listsinceblock";
        let target = chain.settings.confirmations.max(1);
        let list = |from: &str| {
            chain.rpc().call(
                Some(&chain.watch_wallet),
                m,
                json!([from, target, true, false]),
            )
        };
        let answer = match list(since.unwrap_or("")).await {
            // -5: the node does not know the cursor's block (resynced, or
            // another node behind the URL): scan from the first block; the
            // ledger credits each deposit once whatever is listed again.
            Err(custos_chains::ChainError::RpcError { code: -5, .. }) if since.is_some() => {
                tracing::warn!(chain = %chain.settings.name, block = since.unwrap_or_default(), "the node does not know the deposit cursor's block; scanning from the first block");
                list("").await?
            }
            other => other?,
        };
        let next_block = answer
            .get("lastblock")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let list = answer.get("transactions").and_then(Value::as_array);
        let mut out = Vec::new();
        for item in list.map(Vec::as_slice).unwrap_or_default() {
            if item.get("category").and_then(Value::as_str) != Some("receive") {
                continue;
            }
            let (Some(address), Some(txid), Some(vout)) = (
                item.get("address").and_then(Value::as_str),
                item.get("txid").and_then(Value::as_str),
                item.get("vout").and_then(Value::as_u64),
            ) else {
                continue;
            };
            let Some(amount) = item.get("amount") else {
                continue;
            };
            let block = item
                .get("blockhash")
                .and_then(Value::as_str)
                .zip(item.get("blockheight").and_then(Value::as_u64))
                .map(|(hash, height)| (height, hash.to_owned()));
            out.push(Received {
                address: address.to_owned(),
                txid: txid.to_owned(),
                vout,
                block,
                amount: coins_to_base_units(m, amount)?,
                confirmations: item
                    .get("confirmations")
                    .and_then(Value::as_i64)
                    .and_then(|c| u64::try_from(c).ok())
                    .unwrap_or(0),
            });
        }
        Ok((out, next_block))
    }
}

/// One scan of a UTXO chain's deposits.
#[derive(Clone, Debug)]
pub struct UtxoScan {
    /// The chain's name.
    pub chain: String,
    /// The confirmed deposits found.
    pub deposits: Vec<Deposit>,
    /// Where the next scan starts once every deposit is credited.
    pub next_block: Option<String>,
    /// The wallet addresses this scan covered.
    pub addresses: Vec<String>,
}

/// What one wallet holds on a UTXO chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holding {
    /// The wallet (key id).
    pub wallet: String,
    /// Its address on the chain.
    pub address: String,
    /// Its unspent coins, base units.
    pub amount: u64,
}

/// One received output as the node lists it.
struct Received {
    address: String,
    txid: String,
    vout: u64,
    /// Its block's height and hash (none while in the mempool).
    block: Option<(u64, String)>,
    amount: u64,
    confirmations: u64,
}

impl super::utxo::UtxoChain {
    fn node_err(&self, e: custos_chains::ChainError) -> CoordError {
        CoordError::unavailable(format!("{} node: {e}", self.settings.name))
    }

    /// The node's newest block height.
    pub(super) async fn head(&self) -> Result<u64, CoordError> {
        let count = self
            .rpc()
            .call(None, "getblockcount", json!([]))
            .await
            .map_err(|e| self.node_err(e))?;
        count.as_u64().ok_or_else(|| {
            CoordError::unavailable(format!(
                "{} node: getblockcount answered {count}",
                self.settings.name
            ))
        })
    }

    /// The hash of the node's block at `height` in its best chain, `None`
    /// when its chain is not that long.
    pub(super) async fn block_hash_at(&self, height: u64) -> Result<Option<String>, CoordError> {
        match self.rpc().call(None, "getblockhash", json!([height])).await {
            Ok(Value::String(hash)) => Ok(Some(hash)),
            Ok(other) => Err(CoordError::unavailable(format!(
                "{} node: getblockhash {height} answered {other}",
                self.settings.name
            ))),
            // -8: "Block height out of range".
            Err(custos_chains::ChainError::RpcError { code: -8, .. }) => Ok(None),
            Err(e) => Err(self.node_err(e)),
        }
    }
}
