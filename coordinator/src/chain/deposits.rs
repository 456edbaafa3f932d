//! Deposits into the wallets on UTXO chains, as the node sees them.
//!
//! Every wallet key on a UTXO chain has one address; the coordinator imports
//! it into the node's watch-only wallet (with a rescan, so earlier payments
//! count) and reads the wallet's received outputs. An output is a deposit
//! when it pays a wallet's address, has the chain's `confirmations`, and is
//! not in a transaction of the wallets' own withdrawals (their change comes
//! back to the same address). Each deposit is named `<chain>:<txid>:<vout>`,
//! the reference the ledger credits it under exactly once, so scanning again
//! (or after a restart) credits nothing twice.

use std::collections::{HashMap, HashSet};

use custos_chains::utxo::rpc::coins_to_base_units;
use custos_chains::utxo::wallet_address;
use serde_json::{Value, json};
use sqlx::Row;

use super::{Chains, db_err};
use crate::error::CoordError;

/// The received outputs read per scan (the node's newest first).
const SCAN_WINDOW: u64 = 1000;

/// A confirmed payment into a wallet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deposit {
    /// The chain's name.
    pub chain: String,
    /// The wallet (key id) it pays.
    pub wallet: String,
    /// The chain's native coin ("LTC").
    pub asset: String,
    /// Base units.
    pub amount: u128,
    /// `<chain>:<txid>:<vout>`: the ledger's reference.
    pub reference: String,
    /// Confirmations when seen.
    pub confirmations: u64,
}

impl Chains {
    /// Whether any UTXO chain is configured.
    pub fn has_utxo(&self) -> bool {
        !self.utxo.is_empty()
    }

    /// The confirmed deposits into the wallets on every UTXO chain among
    /// the node's last [`SCAN_WINDOW`] received outputs. A chain whose node
    /// cannot be reached is skipped with a warning (the next scan retries).
    pub async fn utxo_deposits(&self) -> Result<Vec<Deposit>, CoordError> {
        let mut found = Vec::new();
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
            let received = match self.received(chain, wallets.keys()).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(chain = %name, error = %e, "cannot read deposits from the node; retrying at the next scan");
                    continue;
                }
            };
            for r in received {
                let Some(wallet) = wallets.get(&r.address) else {
                    continue;
                };
                if own.contains(&r.txid) || r.confirmations < chain.settings.confirmations {
                    continue;
                }
                found.push(Deposit {
                    chain: name.clone(),
                    wallet: wallet.clone(),
                    asset: asset.to_owned(),
                    amount: u128::from(r.amount),
                    reference: format!("{name}:{}:{}", r.txid, r.vout),
                    confirmations: r.confirmations,
                });
            }
        }
        Ok(found)
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
            |e: custos_chains::ChainError| CoordError::Unavailable(format!("{name} node: {e}"));
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
        Ok(wallets)
    }

    /// The outputs the node's watch-only wallet received (after importing
    /// `addresses`, once per process, with a rescan).
    async fn received(
        &self,
        chain: &super::utxo::UtxoChain,
        addresses: impl Iterator<Item = &String>,
    ) -> Result<Vec<Received>, custos_chains::ChainError> {
        for address in addresses {
            chain.watch(address).await?;
        }
        let m = "listtransactions";
        let list = chain
            .rpc()
            .call(
                Some(&chain.watch_wallet),
                m,
                json!(["*", SCAN_WINDOW, 0, true]),
            )
            .await?;
        let mut out = Vec::new();
        for item in list.as_array().map(Vec::as_slice).unwrap_or_default() {
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
            out.push(Received {
                address: address.to_owned(),
                txid: txid.to_owned(),
                vout,
                amount: coins_to_base_units(m, amount)?,
                confirmations: item
                    .get("confirmations")
                    .and_then(Value::as_i64)
                    .and_then(|c| u64::try_from(c).ok())
                    .unwrap_or(0),
            });
        }
        Ok(out)
    }
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
    amount: u64,
    confirmations: u64,
}
