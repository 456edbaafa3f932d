//! Deposits into the wallets on EVM chains, as the node's blocks show them:
//! ETH sent to a wallet's address by a transaction that succeeded, and
//! ERC-20 `Transfer` events of the configured tokens to it.
//!
//! Each chain is scanned block by block from a cursor kept in
//! `deposit_cursors` (from `[[chains]] deposit_start_block`, default 0, the
//! first time), up to the newest block with the chain's `confirmations`, at
//! most [`MAX_BLOCKS_PER_SCAN`] blocks per scan. The caller credits what a
//! scan found and only then moves the cursor ([`Chains::advance_evm_cursor`]),
//! so a crash in between scans the same blocks again, and the ledger's
//! idempotent references (`<chain>:<tx hash>` for ETH,
//! `<chain>:<tx hash>:log<index>` for a token) credit nothing twice.
//!
//! Each deposit carries the number and hash of its block: the record of
//! credits ([`super::credits`]) asks the node again later whether that
//! block is still the one at its height ([`EvmChain::block_hash_at`]) and
//! reverses the credit, and moves the cursor back
//! ([`Chains::rewind_evm_cursor`]), when a reorganisation replaced it.
//!
//! Not seen: ETH moved to a wallet by a contract's internal call (it leaves
//! no transaction to the address and no log); reconciliation shows it.

use std::collections::HashMap;

use custos_chains::evm::address::{address_from_sec1, parse_address};
use custos_chains::evm::rpc::quantity::{format_quantity, parse_u64, parse_u128};
use custos_chains::{Address, U256};
use serde_json::{Value, json};
use sqlx::Row;

use super::deposits::Deposit;
use super::{Chains, EvmChain, db_err};
use crate::error::CoordError;

/// Blocks read per chain per scan (each is one `eth_getBlockByNumber`).
pub const MAX_BLOCKS_PER_SCAN: u64 = 200;

/// keccak256("Transfer(address,address,uint256)").
const TRANSFER_TOPIC: &str = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef";

/// What one scan of one chain found, and where the next one starts.
#[derive(Clone, Debug)]
pub struct EvmScan {
    /// The chain's name.
    pub chain: String,
    /// The deposits in the blocks scanned.
    pub deposits: Vec<Deposit>,
    /// The first block the next scan reads.
    pub next_block: u64,
}

/// An ERC-20 token the coordinator is configured for.
#[derive(Clone, Debug)]
pub struct Token {
    /// Chain name.
    pub chain: String,
    /// Asset symbol.
    pub symbol: String,
    /// Contract address text.
    pub contract: String,
}

/// A hex quantity field of a node's answer (the chains crate's parser).
fn quantity<T>(
    v: &Value,
    what: &str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, CoordError> {
    v.as_str()
        .ok_or_else(|| "missing".to_owned())
        .and_then(parse)
        .map_err(|e| CoordError::unavailable(format!("node: {what}: {e}")))
}

impl Chains {
    /// Whether any EVM chain is configured.
    pub fn has_evm(&self) -> bool {
        !self.evm.is_empty()
    }

    /// The next blocks' deposits on each EVM chain. A chain whose node
    /// cannot be reached is left out with a warning (the next scan retries).
    pub async fn evm_deposits(&self, tokens: &[Token]) -> Result<Vec<EvmScan>, CoordError> {
        let mut scans = Vec::new();
        for chain in &self.evm {
            let name = &chain.settings.name;
            let wallets = self.evm_wallets(name).await?;
            if wallets.is_empty() {
                continue;
            }
            let from = self.evm_cursor(chain).await?;
            match self.scan_evm(chain, &wallets, tokens, from).await {
                Ok(scan) => scans.push(scan),
                Err(e) => {
                    tracing::warn!(chain = %name, error = %e, "cannot read deposits from the node; retrying at the next scan");
                }
            }
        }
        Ok(scans)
    }

    /// Records that the blocks before `next_block` of `chain` are credited.
    pub async fn advance_evm_cursor(&self, chain: &str, next_block: u64) -> Result<(), CoordError> {
        let next = i64::try_from(next_block)
            .map_err(|_| CoordError::Internal(format!("{chain}: block {next_block}")))?;
        sqlx::query(
            "INSERT INTO deposit_cursors (chain, next_block) VALUES ($1, $2)
             ON CONFLICT (chain) DO UPDATE SET next_block = excluded.next_block",
        )
        .bind(chain)
        .bind(next)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    /// Moves the cursor of `chain` back to `height` (a reorganisation
    /// replaced the blocks from there); never forward.
    pub async fn rewind_evm_cursor(&self, chain: &str, height: u64) -> Result<(), CoordError> {
        let height = i64::try_from(height)
            .map_err(|_| CoordError::Internal(format!("{chain}: block {height}")))?;
        sqlx::query(
            "UPDATE deposit_cursors SET next_block = $2 WHERE chain = $1 AND next_block > $2",
        )
        .bind(chain)
        .bind(height)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn evm_cursor(&self, chain: &EvmChain) -> Result<u64, CoordError> {
        let row = sqlx::query("SELECT next_block FROM deposit_cursors WHERE chain = $1")
            .bind(&chain.settings.name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(row
            .and_then(|r| u64::try_from(r.get::<i64, _>("next_block")).ok())
            .unwrap_or(chain.settings.deposit_start_block))
    }

    /// Each wallet's address on `chain`, and its derived deposit addresses,
    /// → the wallet (key id).
    async fn evm_wallets(&self, chain: &str) -> Result<HashMap<Address, String>, CoordError> {
        let mut wallets = HashMap::new();
        for row in sqlx::query(
            "SELECT key_id, public_key FROM keys WHERE chain = $1 AND public_key IS NOT NULL",
        )
        .bind(chain)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?
        {
            let key: Vec<u8> = row.get("public_key");
            if let Ok(address) = address_from_sec1(&key) {
                wallets.insert(address, row.get::<String, _>("key_id"));
            }
        }
        // The wallets' derived deposit addresses, credited to the wallet
        // (crate::derived).
        for (wallet, text) in crate::derived::on_chain(&self.pool, chain).await? {
            if let Ok(address) = parse_address(&text) {
                wallets.insert(address, wallet);
            }
        }
        Ok(wallets)
    }

    async fn scan_evm(
        &self,
        chain: &EvmChain,
        wallets: &HashMap<Address, String>,
        tokens: &[Token],
        from: u64,
    ) -> Result<EvmScan, CoordError> {
        let name = &chain.settings.name;
        let node =
            |e: custos_chains::ChainError| CoordError::unavailable(format!("{name} node: {e}"));
        let head = chain.head().await?;
        // Block b has head - b + 1 confirmations.
        let last = (head + 1).saturating_sub(chain.settings.confirmations.max(1));
        let mut scan = EvmScan {
            chain: name.clone(),
            deposits: Vec::new(),
            next_block: from,
        };
        if last < from {
            return Ok(scan);
        }
        let to = last.min(from + MAX_BLOCKS_PER_SCAN - 1);
        let native = custos_chains::family::native_asset(name).unwrap_or("ETH");
        let deposit = |(wallet, address): (&String, &Address),
                       asset: &str,
                       amount: u128,
                       reference: String,
                       (block, block_hash): (u64, &str)| Deposit {
            chain: name.clone(),
            wallet: wallet.clone(),
            address: address.to_string(),
            asset: asset.to_owned(),
            amount,
            reference,
            block_number: block,
            block_hash: block_hash.to_owned(),
            confirmations: (head + 1).saturating_sub(block),
        };
        for block in from..=to {
            let b = chain.block_at(block, true).await?;
            // A block the node does not have (yet) stops the scan here: the
            // cursor never moves past a block that was not read.
            let unavailable =
                || CoordError::unavailable(format!("{name} node: block {block} not available"));
            let txs = b["transactions"].as_array().ok_or_else(unavailable)?;
            let block_hash = b["hash"].as_str().ok_or_else(unavailable)?;
            for tx in txs {
                let Some((to, wallet)) = tx["to"]
                    .as_str()
                    .and_then(|t| parse_address(t).ok())
                    .and_then(|to| wallets.get_key_value(&to))
                else {
                    continue;
                };
                let value = quantity(&tx["value"], "transaction value", parse_u128)?;
                if value == 0 {
                    continue;
                }
                let hash = tx["hash"].as_str().unwrap_or_default().to_owned();
                let receipt = chain
                    .rpc
                    .transaction_receipt(hash.parse().map_err(|_| {
                        CoordError::unavailable(format!("{name} node: transaction hash {hash:?}"))
                    })?)
                    .await
                    .map_err(node)?;
                // A confirmed block's receipt must exist: without it the
                // scan fails (and the cursor stays) rather than skip a deposit.
                let receipt = receipt.ok_or_else(|| {
                    CoordError::unavailable(format!("{name} node: no receipt for {hash}"))
                })?;
                if receipt.success {
                    scan.deposits.push(deposit(
                        (wallet, to),
                        native,
                        value,
                        format!("{name}:{hash}"),
                        (block, block_hash),
                    ));
                }
            }
        }
        let contracts: Vec<(Address, &Token)> = tokens
            .iter()
            .filter(|t| &t.chain == name)
            .filter_map(|t| parse_address(&t.contract).ok().map(|a| (a, t)))
            .collect();
        if !contracts.is_empty() {
            let topic = |a: &Address| format!("0x{:0>64}", hex::encode(a.as_slice()));
            let logs = chain
                .rpc
                .request(
                    "eth_getLogs",
                    json!([{
                        "fromBlock": format_quantity(U256::from(from)),
                        "toBlock": format_quantity(U256::from(to)),
                        "address": contracts.iter().map(|(a, _)| a.to_string()).collect::<Vec<_>>(),
                        "topics": [TRANSFER_TOPIC, Value::Null, wallets.keys().map(topic).collect::<Vec<_>>()],
                    }]),
                )
                .await
                .map_err(node)?;
            for log in logs.as_array().map(Vec::as_slice).unwrap_or_default() {
                if log["removed"].as_bool() == Some(true) {
                    continue;
                }
                let token = log["address"]
                    .as_str()
                    .and_then(|a| parse_address(a).ok())
                    .and_then(|a| contracts.iter().find(|(c, _)| *c == a));
                let wallet = log["topics"][2]
                    .as_str()
                    .and_then(|t| hex::decode(t.trim_start_matches("0x")).ok())
                    .filter(|b| b.len() == 32)
                    .map(|b| Address::from_slice(&b[12..]))
                    .and_then(|a| wallets.get_key_value(&a));
                let (Some((_, token)), Some((to, wallet))) = (token, wallet) else {
                    continue;
                };
                let amount = quantity(&log["data"], "Transfer amount", parse_u128)?;
                let hash = log["transactionHash"].as_str().unwrap_or_default();
                let index = quantity(&log["logIndex"], "logIndex", parse_u64)?;
                let block = quantity(&log["blockNumber"], "blockNumber", parse_u64)?;
                let block_hash = log["blockHash"].as_str().ok_or_else(|| {
                    CoordError::unavailable(format!("{name} node: a log without its block hash"))
                })?;
                if amount > 0 {
                    scan.deposits.push(deposit(
                        (wallet, to),
                        &token.symbol,
                        amount,
                        format!("{name}:{hash}:log{index}"),
                        (block, block_hash),
                    ));
                }
            }
        }
        scan.next_block = to + 1;
        Ok(scan)
    }
}

impl EvmChain {
    /// The node's newest block number.
    pub(super) async fn head(&self) -> Result<u64, CoordError> {
        self.rpc
            .block_number()
            .await
            .map_err(|e| CoordError::unavailable(format!("{} node: {e}", self.settings.name)))
    }

    /// The node's block at `height` (`null` when it has none), with its
    /// transactions when `full`.
    async fn block_at(&self, height: u64, full: bool) -> Result<Value, CoordError> {
        self.rpc
            .request(
                "eth_getBlockByNumber",
                json!([format_quantity(U256::from(height)), full]),
            )
            .await
            .map_err(|e| CoordError::unavailable(format!("{} node: {e}", self.settings.name)))
    }

    /// The hash of the node's block at `height` (`0x…`, as the scan records
    /// it), `None` when it has none there.
    pub(super) async fn block_hash_at(&self, height: u64) -> Result<Option<String>, CoordError> {
        let b = self.block_at(height, false).await?;
        if b.is_null() {
            return Ok(None);
        }
        b["hash"]
            .as_str()
            .map(|h| Some(h.to_owned()))
            .ok_or_else(|| {
                CoordError::unavailable(format!(
                    "{} node: block {height} without a hash",
                    self.settings.name
                ))
            })
    }
}
