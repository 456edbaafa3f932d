//! Chain adapters in the withdrawal flow: EVM (this module, [`bump`]) and
//! Bitcoin-format UTXO chains ([`utxo`]).
//!
//! # Design: what approvals bind, and where the nonce comes from
//!
//! Approvals sign the canonical statement built at `decide`: it binds the
//! transfer intent (wallet, chain, asset, destination, amount, **fee cap**) and
//! its digest ([`custos_policy::intent_digest`]). The EIP-1559 transaction is
//! built only when the withdrawal enters `signing` (after approvals and the
//! time lock), with a nonce taken at that moment, so a blocked, rejected,
//! cancelled or expired withdrawal never holds a nonce and never leaves a gap.
//! Every signer decodes that transaction itself (custos-chains) and refuses it
//! unless its chain id (from the signer's own config), `to`, value, ERC-20
//! calldata (recipient and amount, token contract of the asset) and fee cap
//! (`gas_limit * max_fee_per_gas` ≤ the approved fee cap) match the approved
//! statement; it signs the digest it computed, never one it was handed.
//!
//! Nonces: table `chain_txs` holds one row per withdrawal that was given a
//! transaction, `UNIQUE (chain, sender, nonce)`. A new nonce is the smallest
//! one ≥ the node's `eth_getTransactionCount(pending)` not held by another
//! row; the row and the withdrawal's `unsigned_tx` are written in one
//! database transaction, under a per-chain lock. A withdrawal that fails in
//! `signing` (signers refused, so no signature exists) releases its row, and
//! the next allocation reuses the nonce: no gaps, no duplicates. Once a
//! withdrawal has a transaction it is never rebuilt: a restart re-signs the
//! same bytes (signers answer a repeat with the same partial) and re-sends
//! the same raw transaction.
//!
//! After `signed`: the signature is assembled (low s, recovered sender must be
//! the wallet) and the raw transaction stored, a `TransactionBroadcast` audit
//! entry is appended, the withdrawal moves to `broadcast`, and then the raw
//! bytes are sent (idempotent: "already known" is success) until a receipt
//! with enough confirmations moves it to `confirmed` (status 1) or `failed`
//! (status 0). A transaction the node no longer knows is re-sent, byte for
//! byte. An unreachable RPC leaves the withdrawal where it is with a note;
//! the engine's tick retries.

pub mod bump;
pub mod bump_approvals;
pub mod credits;
pub mod deposits;
pub mod evm_deposits;
pub mod utxo;
pub mod utxo_batch;
pub mod utxo_bump;

use std::time::Duration;

use custos_chains::evm::address::parse_address;
use custos_chains::evm::asset::Asset;
use custos_chains::evm::rpc::{BlockTag, CallRequest, EvmRpc, RpcConfig};
use custos_chains::evm::signature::assemble_signed;
use custos_chains::evm::tx::{TransferRequest, build_unsigned, decode_unsigned, encode_unsigned};
use custos_chains::{Address, B256, ChainError, U256};
use custos_service::db::{Backend, is_unique_violation};
use serde::{Deserialize, Serialize};
use sqlx::{AnyPool, Row};

use crate::clock::now_ms;
use crate::error::CoordError;

/// `[[chains]]` in the coordinator config.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainSettings {
    /// Chain name as in keys, assets and the policy ("anvil", "ethereum").
    pub name: String,
    /// Adapter: "evm" or "utxo" (must match the chain's family, which its
    /// name decides as in policies).
    pub kind: String,
    /// EIP-155 chain id (EVM chains; checked against the node at start).
    #[serde(default)]
    pub chain_id: u64,
    /// JSON-RPC endpoint.
    pub rpc_url: String,
    /// More endpoints of the same chain, tried in order when the one in use
    /// cannot be reached (every one is checked to be on `chain_id` at start).
    #[serde(default)]
    pub fallback_rpc_urls: Vec<String>,
    /// Blocks (including the one with the transaction) before `confirmed` (default 1).
    #[serde(default = "one")]
    pub confirmations: u64,
    /// Highest `max_fee_per_gas` ever offered, wei, decimal (default 500 gwei).
    #[serde(default = "default_max_fee")]
    pub max_fee_per_gas_cap: String,
    /// RPC timeout, milliseconds (default 5000).
    #[serde(default = "default_rpc_timeout")]
    pub rpc_timeout_ms: u64,
    /// Seconds a sent transaction may stay unmined before it is replaced
    /// with a higher fee (default 120).
    #[serde(default = "default_resubmit_after")]
    pub resubmit_after_secs: u64,
    /// How much each replacement raises both fees, percent (default 15;
    /// nodes refuse replacements under 10).
    #[serde(default = "default_fee_bump_percent")]
    pub fee_bump_percent: u32,
    /// Most replacements of one withdrawal's transaction (default 5, at most
    /// 7: a signer signs a withdrawal at most 8 times).
    #[serde(default = "default_max_fee_bumps")]
    pub max_fee_bumps: u32,
    /// UTXO chains: the node's watch-only wallet that tracks the wallets'
    /// coins (default `custos-<name>`; created if missing, holds no key).
    #[serde(default)]
    pub watch_wallet: Option<String>,
    /// UTXO chains: confirmation target, in blocks, of the node's fee
    /// estimate (`estimatesmartfee`; default 6).
    #[serde(default = "default_fee_target")]
    pub fee_target_blocks: u16,
    /// UTXO chains: confirmations a coin needs before it is spent (default 1).
    #[serde(default = "one")]
    pub spend_confirmations: u64,
    /// EVM chains: the first block scanned for deposits into the wallets
    /// (default 0; set it to a block before the first wallet was funded).
    #[serde(default)]
    pub deposit_start_block: u64,
    /// UTXO chains: how long a withdrawal ready to sign waits for others of
    /// the same wallet and asset to be paid by the same transaction,
    /// milliseconds (default 0: no batching).
    #[serde(default)]
    pub batch_window_ms: u64,
    /// UTXO chains: most withdrawals paid by one transaction (default 20,
    /// at most 200).
    #[serde(default = "default_batch_max")]
    pub batch_max_payouts: u32,
}

impl ChainSettings {
    /// Chain `name` of adapter `kind` at `rpc_url`, every other setting at
    /// its default (what a `[[chains]]` entry naming only these gets).
    pub fn new(
        name: impl Into<String>,
        kind: impl Into<String>,
        rpc_url: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            kind: kind.into(),
            chain_id: 0,
            rpc_url: rpc_url.into(),
            fallback_rpc_urls: Vec::new(),
            confirmations: one(),
            max_fee_per_gas_cap: default_max_fee(),
            rpc_timeout_ms: default_rpc_timeout(),
            resubmit_after_secs: default_resubmit_after(),
            fee_bump_percent: default_fee_bump_percent(),
            max_fee_bumps: default_max_fee_bumps(),
            watch_wallet: None,
            fee_target_blocks: default_fee_target(),
            spend_confirmations: one(),
            deposit_start_block: 0,
            batch_window_ms: 0,
            batch_max_payouts: default_batch_max(),
        }
    }
}

fn default_batch_max() -> u32 {
    20
}

fn default_fee_target() -> u16 {
    6
}

fn one() -> u64 {
    1
}
fn default_max_fee() -> String {
    "500000000000".into()
}
fn default_rpc_timeout() -> u64 {
    5000
}
fn default_resubmit_after() -> u64 {
    120
}
fn default_fee_bump_percent() -> u32 {
    15
}
fn default_max_fee_bumps() -> u32 {
    5
}

/// Most fee bumps of one withdrawal (signers issue at most 8 signatures for one).
pub const MAX_FEE_BUMPS: u32 = 7;

/// DDL for the chain tables. `chain_txs` holds every withdrawal's
/// transaction whatever its chain (`nonce` is the EVM account nonce, NULL on
/// UTXO chains); `utxo_inputs` the coins a UTXO transaction spends, one row
/// each with its signing session (`UNIQUE (chain, outpoint)` is the coin
/// lock: a coin is in one withdrawal's transaction at a time);
/// `utxo_bump_inputs` the sessions of a replacement being signed
/// (`utxo_bump`); `utxo_batches` which withdrawals one transaction pays
/// (`utxo_batch`: the lead's `chain_txs` row is the transaction).
pub fn schema(backend: Backend) -> String {
    let blob = backend.blob();
    format!(
        "CREATE TABLE IF NOT EXISTS chain_txs (
            withdrawal_id TEXT PRIMARY KEY,
            chain TEXT NOT NULL,
            sender TEXT NOT NULL,
            nonce BIGINT,
            unsigned_tx {blob} NOT NULL,
            raw_tx {blob},
            tx_hash TEXT,
            sends BIGINT NOT NULL,
            block_number BIGINT,
            created_ms BIGINT NOT NULL,
            last_sent_ms BIGINT,
            bumps BIGINT,
            bump_tx {blob},
            bump_presig TEXT,
            bump_signers TEXT,
            abandoned_tx {blob},
            bump_statement {blob},
            UNIQUE (chain, sender, nonce)
        );
        CREATE TABLE IF NOT EXISTS fee_bump_approvals (
            withdrawal_id TEXT NOT NULL,
            statement_hash TEXT NOT NULL,
            approver TEXT NOT NULL,
            verdict TEXT NOT NULL,
            signature TEXT NOT NULL,
            received_ms BIGINT NOT NULL,
            PRIMARY KEY (withdrawal_id, statement_hash, approver)
        );
        CREATE TABLE IF NOT EXISTS chain_tx_replaced (
            withdrawal_id TEXT NOT NULL,
            tx_hash TEXT NOT NULL,
            raw_tx {blob} NOT NULL,
            replaced_ms BIGINT NOT NULL,
            PRIMARY KEY (withdrawal_id, tx_hash)
        );
        CREATE TABLE IF NOT EXISTS utxo_inputs (
            withdrawal_id TEXT NOT NULL,
            input_index BIGINT NOT NULL,
            chain TEXT NOT NULL,
            outpoint TEXT NOT NULL,
            presig_id TEXT,
            signers TEXT,
            signature {blob},
            PRIMARY KEY (withdrawal_id, input_index),
            UNIQUE (chain, outpoint)
        );
        CREATE TABLE IF NOT EXISTS utxo_batches (
            withdrawal_id TEXT PRIMARY KEY,
            lead_id TEXT NOT NULL,
            output_index BIGINT NOT NULL
        );
        CREATE TABLE IF NOT EXISTS utxo_bump_inputs (
            withdrawal_id TEXT NOT NULL,
            input_index BIGINT NOT NULL,
            outpoint TEXT NOT NULL,
            presig_id TEXT,
            signers TEXT,
            signature {blob},
            PRIMARY KEY (withdrawal_id, input_index)
        );
        CREATE TABLE IF NOT EXISTS deposit_cursors (
            chain TEXT PRIMARY KEY,
            next_block BIGINT NOT NULL
        );
        CREATE TABLE IF NOT EXISTS utxo_deposit_cursors (
            chain TEXT PRIMARY KEY,
            block_hash TEXT NOT NULL,
            addresses TEXT NOT NULL
        )"
    )
}

/// The columns of `chain_txs` that `evm_txs` (its name before UTXO chains)
/// had, in the order both tables declare them.
const EVM_TX_COLUMNS: &str = "withdrawal_id, chain, sender, nonce, unsigned_tx, raw_tx, tx_hash, \
    sends, block_number, created_ms, last_sent_ms, bumps, bump_tx, bump_presig, bump_signers, \
    abandoned_tx, bump_statement";

async fn table_exists(db: &custos_service::db::Db, table: &str) -> Result<bool, sqlx::Error> {
    let n: i64 = match db.backend {
        Backend::Sqlite => {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1",
            )
            .bind(table)
            .fetch_one(&db.pool)
            .await?
        }
        Backend::Postgres => {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM information_schema.tables
                 WHERE table_schema = current_schema() AND table_name = $1",
            )
            .bind(table)
            .fetch_one(&db.pool)
            .await?
        }
    };
    Ok(n > 0)
}

/// Databases made by earlier versions: the EVM-only `evm_txs` and
/// `evm_tx_replaced` (with the columns added to them since their first
/// version) are copied into `chain_txs` and `chain_tx_replaced`, once per
/// row; the old tables stay as they were (additive, so an older binary
/// pointed at the database still finds them).
pub async fn upgrade(db: &custos_service::db::Db) -> Result<(), sqlx::Error> {
    if !table_exists(db, "evm_txs").await? {
        return Ok(());
    }
    let blob = db.backend.blob();
    db.add_column_if_missing("evm_txs", "last_sent_ms", "BIGINT")
        .await?;
    db.add_column_if_missing("evm_txs", "bumps", "BIGINT")
        .await?;
    db.add_column_if_missing("evm_txs", "bump_tx", blob).await?;
    db.add_column_if_missing("evm_txs", "bump_presig", "TEXT")
        .await?;
    db.add_column_if_missing("evm_txs", "bump_signers", "TEXT")
        .await?;
    db.add_column_if_missing("evm_txs", "abandoned_tx", blob)
        .await?;
    db.add_column_if_missing("evm_txs", "bump_statement", blob)
        .await?;
    let copy = format!(
        "INSERT INTO chain_txs ({EVM_TX_COLUMNS}) SELECT {EVM_TX_COLUMNS} FROM evm_txs
         WHERE withdrawal_id NOT IN (SELECT withdrawal_id FROM chain_txs)"
    );
    sqlx::query(sqlx::AssertSqlSafe(copy))
        .execute(&db.pool)
        .await?;
    if table_exists(db, "evm_tx_replaced").await? {
        sqlx::query(
            "INSERT INTO chain_tx_replaced (withdrawal_id, tx_hash, raw_tx, replaced_ms)
             SELECT withdrawal_id, tx_hash, raw_tx, replaced_ms FROM evm_tx_replaced r
             WHERE NOT EXISTS (SELECT 1 FROM chain_tx_replaced c
                               WHERE c.withdrawal_id = r.withdrawal_id AND c.tx_hash = r.tx_hash)",
        )
        .execute(&db.pool)
        .await?;
    }
    Ok(())
}

fn db_err(e: sqlx::Error) -> CoordError {
    CoordError::storage("chain transactions", e)
}

/// Inside the caller's database transaction: moves the version a pending
/// replacement (`bump_tx` = `bump`) replaces to `chain_tx_replaced` (kept
/// for tracking: either version may confirm) and makes the replacement, as
/// `raw` with `hash`, the current one (sends reset, one bump more, the bump
/// columns cleared). `false` if no replacement of these bytes was pending
/// (already swapped in). One swap for every chain family's fee bumps.
async fn swap_in_replacement(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    withdrawal_id: &str,
    bump: &[u8],
    raw: &[u8],
    hash: &str,
    now: i64,
) -> Result<bool, CoordError> {
    use sqlx::Row;
    let pending = sqlx::query(
        "SELECT tx_hash, raw_tx FROM chain_txs
         WHERE withdrawal_id = $1 AND bump_tx = $2 AND raw_tx IS NOT NULL",
    )
    .bind(withdrawal_id)
    .bind(bump.to_vec())
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_err)?;
    let Some(prev) = pending else {
        return Ok(false);
    };
    let prev_hash: String = prev.try_get("tx_hash").map_err(db_err)?;
    let prev_raw: Vec<u8> = prev.try_get("raw_tx").map_err(db_err)?;
    sqlx::query(
        "INSERT INTO chain_tx_replaced (withdrawal_id, tx_hash, raw_tx, replaced_ms)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(withdrawal_id)
    .bind(prev_hash)
    .bind(prev_raw)
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(db_err)?;
    sqlx::query(
        "UPDATE chain_txs SET unsigned_tx = bump_tx, raw_tx = $1, tx_hash = $2, sends = 0,
            last_sent_ms = NULL, bumps = COALESCE(bumps, 0) + 1,
            bump_tx = NULL, bump_presig = NULL, bump_signers = NULL, bump_statement = NULL
         WHERE withdrawal_id = $3",
    )
    .bind(raw.to_vec())
    .bind(hash)
    .bind(withdrawal_id)
    .execute(&mut **tx)
    .await
    .map_err(db_err)?;
    Ok(true)
}

/// Why a chain step could not proceed now (the withdrawal waits, with this note).
#[derive(Debug)]
pub enum Pending {
    /// Wait and retry on the tick; the note says why.
    Wait(String),
    /// Storage failure.
    Storage(CoordError),
}

impl From<CoordError> for Pending {
    fn from(e: CoordError) -> Self {
        Pending::Storage(e)
    }
}

fn rpc_note(chain: &str, what: &str, e: &ChainError) -> Pending {
    Pending::Wait(format!(
        "chain {chain}: {what}: {e} (waiting; retried on every tick)"
    ))
}

/// A stored transaction of a withdrawal.
#[derive(Clone, Debug)]
pub struct EvmTxRow {
    /// Sender (wallet) address.
    pub sender: Address,
    /// Account nonce.
    pub nonce: u64,
    /// The unsigned EIP-1559 payload.
    pub unsigned_tx: Vec<u8>,
    /// The signed transaction, once assembled.
    pub raw_tx: Option<Vec<u8>>,
    /// Its hash, `0x…`.
    pub tx_hash: Option<String>,
    /// How many times it was sent.
    pub sends: i64,
    /// When it was last sent (Unix ms).
    pub last_sent_ms: Option<i64>,
    /// How many times the withdrawal's transaction was replaced (fee bumps).
    pub bumps: i64,
    /// A fee bump being signed: its unsigned transaction.
    pub bump_tx: Option<Vec<u8>>,
    /// The presignature reserved for it.
    pub bump_presig: Option<String>,
    /// That presignature's signers (JSON list).
    pub bump_signers: Option<String>,
    /// The last fee bump the signers did not all sign: some may have, so
    /// the next one must raise its fees too.
    pub abandoned_tx: Option<Vec<u8>>,
    /// The fee-bump statement approvers are asked to sign for `bump_tx`
    /// (rules with `fee_bumps = "reapprove"`).
    pub bump_statement: Option<Vec<u8>>,
}

/// What happened to a broadcast transaction.
#[derive(Debug)]
pub enum Tracked {
    /// Not mined yet, or not enough confirmations (note).
    Waiting(String),
    /// Mined with status 1 and enough confirmations.
    Confirmed {
        /// Hash.
        hash: String,
        /// Inclusion block.
        block: u64,
        /// Gas used.
        gas_used: u64,
        /// Fee paid (gas used × effective gas price), wei.
        fee_paid: u128,
    },
    /// Mined with status 0.
    Reverted {
        /// Hash.
        hash: String,
        /// Inclusion block.
        block: u64,
    },
    /// Sent, unmined for `resubmit_after_secs` (or a bump is half done):
    /// replace it with a higher fee.
    Stuck(String),
    /// The nonce was used by a transaction that is none of this
    /// withdrawal's versions (the wallet signed something else at that nonce).
    NonceTaken {
        /// The nonce.
        nonce: u64,
        /// The account's mined transaction count.
        mined: u64,
    },
    /// A transaction spending the same coins (UTXO) is mined: this one
    /// never can be (note).
    Conflicted(String),
}

/// One configured EVM chain.
#[derive(Debug)]
pub struct EvmChain {
    /// Its settings.
    pub settings: ChainSettings,
    rpc: EvmRpc,
    alloc: tokio::sync::Mutex<()>,
}

/// What the chain layer needs of a withdrawal: its id, the wallet it pays
/// from and the approved payout. The engine builds it from its own record;
/// the chain layer never reads the withdrawal's storage row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    /// Withdrawal id.
    pub id: String,
    /// The paying wallet's key id.
    pub wallet: String,
    /// Asset symbol.
    pub asset: String,
    /// Canonical destination address.
    pub destination: String,
    /// Approved amount, base units (decimal).
    pub amount: String,
    /// Approved fee cap, base units (decimal).
    pub fee_cap: String,
}

/// A withdrawal's signature as the engine stored it (parts may be missing
/// if it was never signed: assembling then fails, naming the part).
#[derive(Clone, Copy, Debug)]
pub struct StoredSignature<'a> {
    /// `r`, 32 bytes.
    pub r: Option<&'a [u8]>,
    /// `s`, 32 bytes.
    pub s: Option<&'a [u8]>,
    /// The recovery id (0 or 1).
    pub recovery_id: Option<i64>,
}

/// The configured chains.
#[derive(Debug)]
pub struct Chains {
    evm: Vec<EvmChain>,
    utxo: Vec<utxo::UtxoChain>,
    /// Chain names in config order (error messages name `chains[i]`).
    order: Vec<String>,
    pool: AnyPool,
}

impl Chains {
    /// Validates the settings (names the bad field) and builds the RPC clients.
    pub fn new(settings: &[ChainSettings], pool: AnyPool) -> Result<Self, CoordError> {
        let mut evm = Vec::new();
        let mut utxo = Vec::new();
        for (i, s) in settings.iter().enumerate() {
            let field = |f: &str| format!("config field `chains[{i}].{f}`");
            if s.kind != "evm" && s.kind != "utxo" {
                return Err(CoordError::invalid(
                    field("kind"),
                    format!(
                        "{:?} is not a supported chain kind (supported: evm, utxo)",
                        s.kind
                    ),
                ));
            }
            if s.name.is_empty() || settings.iter().filter(|o| o.name == s.name).count() > 1 {
                return Err(CoordError::invalid(
                    field("name"),
                    format!("{:?} is empty or listed twice", s.name),
                ));
            }
            match custos_chains::family_of(&s.name) {
                Some(custos_chains::ChainFamily::Evm) if s.kind == "evm" => {}
                Some(custos_chains::ChainFamily::Utxo(network)) if s.kind == "utxo" => {
                    utxo.push(utxo::UtxoChain::new(s, network, field)?);
                    continue;
                }
                Some(custos_chains::ChainFamily::Message) => {
                    return Err(CoordError::invalid(
                        field("name"),
                        "the message chain needs no [[chains]] entry (it has no node): withdrawals on it are signed and not broadcast",
                    ));
                }
                Some(other) => {
                    return Err(CoordError::invalid(
                        field("kind"),
                        format!(
                            "{:?} is a {other} chain, so its kind is {:?}, not {:?}",
                            s.name,
                            match other {
                                custos_chains::ChainFamily::Evm => "evm",
                                custos_chains::ChainFamily::Utxo(_) => "utxo",
                                custos_chains::ChainFamily::Message => "message",
                            },
                            s.kind
                        ),
                    ));
                }
                None => {
                    return Err(CoordError::invalid(
                        field("name"),
                        format!(
                            "unknown chain {:?} (known: {})",
                            s.name,
                            custos_chains::family::known_chains()
                        ),
                    ));
                }
            }
            if s.chain_id == 0 {
                return Err(CoordError::invalid(field("chain_id"), "must not be 0"));
            }
            let cap: u128 = s.max_fee_per_gas_cap.parse().map_err(|_| {
                CoordError::invalid(
                    field("max_fee_per_gas_cap"),
                    format!("{:?} must be an integer (wei)", s.max_fee_per_gas_cap),
                )
            })?;
            if !(10..=100).contains(&s.fee_bump_percent) {
                return Err(CoordError::invalid(
                    field("fee_bump_percent"),
                    format!(
                        "{} must be between 10 and 100 (nodes refuse replacements under 10 %)",
                        s.fee_bump_percent
                    ),
                ));
            }
            if s.max_fee_bumps > MAX_FEE_BUMPS {
                return Err(CoordError::invalid(
                    field("max_fee_bumps"),
                    format!(
                        "{} is above {MAX_FEE_BUMPS} (signers sign a withdrawal at most {} times)",
                        s.max_fee_bumps,
                        MAX_FEE_BUMPS + 1
                    ),
                ));
            }
            if s.resubmit_after_secs == 0 {
                return Err(CoordError::invalid(
                    field("resubmit_after_secs"),
                    "must be at least 1",
                ));
            }
            let mut rc = RpcConfig::new(&s.rpc_url);
            rc.fallback_urls = s.fallback_rpc_urls.clone();
            rc.timeout = Duration::from_millis(s.rpc_timeout_ms.max(100));
            rc.max_fee_per_gas_cap = cap;
            let which = if s.fallback_rpc_urls.is_empty() {
                "rpc_url"
            } else {
                "rpc_url` / `fallback_rpc_urls"
            };
            let rpc =
                EvmRpc::new(rc).map_err(|e| CoordError::invalid(field(which), e.to_string()))?;
            evm.push(EvmChain {
                settings: s.clone(),
                rpc,
                alloc: tokio::sync::Mutex::new(()),
            });
        }
        let order = settings.iter().map(|s| s.name.clone()).collect();
        Ok(Self {
            evm,
            utxo,
            order,
            pool,
        })
    }

    /// Asks every node for its chain id: a node on another chain is a config
    /// error (names the field); an unreachable one is only logged (the flow
    /// waits for it).
    pub async fn check_nodes(&self) -> Result<(), CoordError> {
        for c in &self.utxo {
            let i = self.index_of(&c.settings.name);
            c.check_node(|f| format!("config field `chains[{i}].{f}`"))
                .await?;
        }
        for c in &self.evm {
            let i = self.index_of(&c.settings.name);
            // Every endpoint: a fallback on another chain would sign for it.
            for (endpoint, answer) in c.rpc.chain_id_of_each().await {
                match answer {
                    Ok(id) if id == c.settings.chain_id => {}
                    Ok(id) => {
                        return Err(CoordError::invalid(
                            format!("config field `chains[{i}].chain_id`"),
                            format!(
                                "{} but the node at {endpoint} is on chain {id}",
                                c.settings.chain_id
                            ),
                        ));
                    }
                    Err(e) => {
                        tracing::warn!(chain = %c.settings.name, %endpoint, error = %e, "chain RPC endpoint unreachable at start; the others are used, withdrawals wait if none answers")
                    }
                }
            }
        }
        Ok(())
    }

    /// A chain's position among the configured ones (for error messages).
    fn index_of(&self, name: &str) -> usize {
        self.order.iter().position(|n| n == name).unwrap_or(0)
    }

    /// The family of the configured chain `name` (`None`: not configured).
    pub fn family(&self, name: &str) -> Option<custos_chains::ChainFamily> {
        // The message chain needs no node: it is always there.
        if custos_chains::family_of(name) == Some(custos_chains::ChainFamily::Message) {
            return Some(custos_chains::ChainFamily::Message);
        }
        if self.evm(name).is_some() {
            return Some(custos_chains::ChainFamily::Evm);
        }
        self.utxo(name).and_then(|_| custos_chains::family_of(name))
    }

    /// The EVM chain named `name`, if configured.
    pub fn evm(&self, name: &str) -> Option<&EvmChain> {
        self.evm.iter().find(|c| c.settings.name == name)
    }

    /// The balance of `address` on EVM chain `chain` now (`latest`), in
    /// base units: the native coin, or the ERC-20 token at `contract`.
    pub async fn evm_balance(
        &self,
        chain: &str,
        address: &str,
        contract: Option<&str>,
    ) -> Result<u128, CoordError> {
        let c = self.evm(chain).ok_or_else(|| {
            CoordError::invalid("chain", format!("{chain} is not a configured EVM chain"))
        })?;
        let owner =
            parse_address(address).map_err(|e| CoordError::invalid("address", e.to_string()))?;
        let unavailable = |e: ChainError| CoordError::Unavailable {
            signer: None,
            reason: format!("{chain} node: reading the balance of {address}: {e}"),
        };
        let wei = match contract {
            None => c.rpc.balance(owner).await.map_err(unavailable)?,
            Some(t) => {
                let token =
                    parse_address(t).map_err(|e| CoordError::invalid("contract", e.to_string()))?;
                c.rpc
                    .erc20_balance(token, owner)
                    .await
                    .map_err(unavailable)?
            }
        };
        u128::try_from(wei).map_err(|_| {
            CoordError::Internal(format!("balance of {address} on {chain} exceeds 2^128"))
        })
    }

    /// The transaction stored for a withdrawal.
    pub async fn stored(&self, withdrawal_id: &str) -> Result<Option<EvmTxRow>, CoordError> {
        let r = sqlx::query("SELECT * FROM chain_txs WHERE withdrawal_id = $1")
            .bind(withdrawal_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        r.map(|r| {
            let sender: String = r.get("sender");
            // NULL for a UTXO transaction: an error here, never a panic.
            let nonce: Option<i64> = r.try_get("nonce").map_err(db_err)?;
            let nonce = nonce.and_then(|n| u64::try_from(n).ok()).ok_or_else(|| {
                CoordError::Internal(format!(
                    "withdrawal {withdrawal_id}: its stored transaction has no EVM nonce"
                ))
            })?;
            Ok(EvmTxRow {
                sender: parse_address(&sender)
                    .map_err(|e| CoordError::Internal(format!("stored sender: {e}")))?,
                nonce,
                unsigned_tx: r.get("unsigned_tx"),
                raw_tx: r.get("raw_tx"),
                tx_hash: r.get("tx_hash"),
                sends: r.get("sends"),
                last_sent_ms: r.get("last_sent_ms"),
                bumps: r.get::<Option<i64>, _>("bumps").unwrap_or(0),
                bump_tx: r.get("bump_tx"),
                bump_presig: r.get("bump_presig"),
                bump_signers: r.get("bump_signers"),
                abandoned_tx: r.get("abandoned_tx"),
                bump_statement: r.get("bump_statement"),
            })
        })
        .transpose()
    }

    /// Releases what failed withdrawals on `chain` still hold: a release
    /// (the `ReleaseNonce` effect, after the `failed` state is committed)
    /// that a crash interrupted would otherwise hold its nonce forever, and
    /// every later transaction of the wallet would wait behind the gap (or
    /// its coins stay reserved). Run under the chain's allocation lock,
    /// before anything is allocated; each release is the same idempotent
    /// one the effect runs, which keeps whatever was signed.
    pub async fn release_abandoned(&self, chain: &str, utxo: bool) -> Result<(), CoordError> {
        let failed: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT c.withdrawal_id FROM chain_txs c
               JOIN withdrawals w ON w.id = c.withdrawal_id
              WHERE c.chain = $1 AND w.state = 'failed' AND c.raw_tx IS NULL",
        )
        .bind(chain)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        for id in failed {
            if utxo {
                self.release_unsigned_utxo(&id).await?;
            } else {
                self.release_unsigned(&id).await?;
            }
        }
        Ok(())
    }

    /// Releases the nonce of a withdrawal that failed before any signature
    /// existed (signers refused), so the next allocation reuses it.
    pub async fn release_unsigned(&self, withdrawal_id: &str) -> Result<(), CoordError> {
        sqlx::query(
            "DELETE FROM chain_txs WHERE withdrawal_id = $1 AND raw_tx IS NULL
               AND withdrawal_id IN (SELECT id FROM withdrawals WHERE id = $1 AND state = 'failed' AND sig_r IS NULL)",
        )
        .bind(withdrawal_id)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    /// Builds (once) the unsigned transaction of a withdrawal in `signing`:
    /// allocates the nonce, estimates gas and fees within the approved fee cap,
    /// and stores the row and the withdrawal's `unsigned_tx` together.
    pub async fn prepare(
        &self,
        chain: &EvmChain,
        row: &Payment,
        wallet: &str,
        token: Option<Address>,
        decimals: u8,
    ) -> Result<Vec<u8>, Pending> {
        let name = &chain.settings.name;
        if let Some(t) = self.stored(&row.id).await? {
            self.attach(&row.id, &t.unsigned_tx).await?;
            return Ok(t.unsigned_tx);
        }
        let from = parse_address(wallet).map_err(|e| {
            Pending::Wait(format!("wallet {} has no usable address: {e}", row.wallet))
        })?;
        let recipient = parse_address(&row.destination)
            .map_err(|e| Pending::Wait(format!("destination: {e}")))?;
        let amount = U256::from_str_radix(&row.amount, 10)
            .map_err(|e| Pending::Wait(format!("stored amount: {e}")))?;
        let fee_cap = U256::from_str_radix(&row.fee_cap, 10)
            .map_err(|e| Pending::Wait(format!("stored fee cap: {e}")))?;
        let asset = match token {
            None => Asset::native(&row.asset, decimals),
            Some(t) => Asset::erc20(t, &row.asset, decimals),
        }
        .map_err(|e| Pending::Wait(format!("asset {}: {e}", row.asset)))?;
        let _g = chain.alloc.lock().await;
        let pending = chain
            .rpc
            .transaction_count(from, BlockTag::Pending)
            .await
            .map_err(|e| rpc_note(name, "cannot read the account nonce", &e))?;
        let (to, value, data) = match token {
            None => (recipient, amount, Default::default()),
            Some(t) => (
                t,
                U256::ZERO,
                custos_chains::evm::tx::erc20::transfer_calldata(recipient, amount),
            ),
        };
        let estimated = chain
            .rpc
            .estimate_gas(&CallRequest {
                from: Some(from),
                to,
                value,
                data,
            })
            .await
            .map_err(|e| rpc_note(name, "gas estimation failed", &e))?;
        // Contract calls get 20% headroom; a plain transfer costs exactly 21000.
        let gas_limit = if token.is_some() {
            estimated.saturating_add(estimated / 5)
        } else {
            estimated
        };
        let fees = chain
            .rpc
            .estimate_fees()
            .await
            .map_err(|e| rpc_note(name, "fee estimation failed", &e))?;
        let mut max_fee = fees.max_fee_per_gas;
        let gas = U256::from(gas_limit);
        if gas * U256::from(max_fee) > fee_cap {
            // Stay within the approved fee cap: the most per gas it allows.
            let allowed = u128::try_from(fee_cap / gas).unwrap_or(u128::MAX);
            if allowed < fees.base_fee_per_gas {
                return Err(Pending::Wait(format!(
                    "chain {name}: the approved fee cap of {fee_cap} wei allows {allowed} wei per gas for {gas_limit} gas, below the base fee {} (waiting for lower fees)",
                    fees.base_fee_per_gas
                )));
            }
            max_fee = allowed;
        }
        let tip = fees.max_priority_fee_per_gas.min(max_fee);
        self.release_abandoned(name, false).await?;
        let taken: Vec<i64> = sqlx::query(
            "SELECT nonce FROM chain_txs WHERE chain = $1 AND sender = $2 AND nonce >= $3 ORDER BY nonce",
        )
        .bind(name)
        .bind(format!("{from:#x}"))
        .bind(i64::try_from(pending).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?
        .iter()
        .map(|r| r.get::<i64, _>("nonce"))
        .collect();
        let mut nonce = pending;
        for t in taken {
            if u64::try_from(t).ok() == Some(nonce) {
                nonce += 1;
            } else if u64::try_from(t).is_ok_and(|t| t > nonce) {
                break;
            }
        }
        let unsigned = build_unsigned(&TransferRequest {
            chain_id: chain.settings.chain_id,
            from,
            recipient,
            asset,
            amount,
            nonce,
            gas_limit,
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: tip,
        })
        .map_err(|e| Pending::Wait(format!("cannot build the transaction: {e}")))?;
        let bytes = encode_unsigned(&unsigned);
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let res = sqlx::query(
            "INSERT INTO chain_txs (withdrawal_id, chain, sender, nonce, unsigned_tx, sends, created_ms)
             VALUES ($1, $2, $3, $4, $5, 0, $6)",
        )
        .bind(&row.id)
        .bind(name)
        .bind(format!("{from:#x}"))
        .bind(i64::try_from(nonce).unwrap_or(i64::MAX))
        .bind(bytes.clone())
        .bind(now_ms())
        .execute(&mut *tx)
        .await;
        match res {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(Pending::Wait(format!(
                    "nonce {nonce} was taken concurrently; allocating again"
                )));
            }
            Err(e) => return Err(db_err(e).into()),
        }
        let res = sqlx::query(
            "UPDATE withdrawals SET unsigned_tx = $1, updated_ms = $2
             WHERE id = $3 AND state = 'signing' AND unsigned_tx IS NULL",
        )
        .bind(bytes.clone())
        .bind(now_ms())
        .bind(&row.id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        if res.rows_affected() != 1 {
            return Err(Pending::Wait(
                "the withdrawal left `signing` while its transaction was built".into(),
            ));
        }
        tx.commit().await.map_err(db_err)?;
        tracing::info!(withdrawal = %row.id, chain = %name, nonce, gas_limit, max_fee, "built transaction");
        Ok(bytes)
    }

    async fn attach(&self, id: &str, bytes: &[u8]) -> Result<(), CoordError> {
        sqlx::query(
            "UPDATE withdrawals SET unsigned_tx = $1 WHERE id = $2 AND unsigned_tx IS NULL",
        )
        .bind(bytes.to_vec())
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    /// Assembles the signed transaction (low s; the recovered sender must be
    /// the wallet) and stores it, once. Returns (raw, hash).
    pub async fn assemble(
        &self,
        row: &Payment,
        sig: StoredSignature<'_>,
        wallet: &str,
    ) -> Result<(Vec<u8>, String), CoordError> {
        let t = self
            .stored(&row.id)
            .await?
            .ok_or_else(|| CoordError::Internal(format!("{} has no transaction", row.id)))?;
        if let (Some(raw), Some(hash)) = (t.raw_tx.clone(), t.tx_hash.clone()) {
            return Ok((raw, hash));
        }
        let unsigned = decode_unsigned(&t.unsigned_tx)
            .map_err(|e| CoordError::Internal(format!("stored transaction: {e}")))?;
        let r: [u8; 32] = sig
            .r
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| CoordError::Internal(format!("{} has no signature r", row.id)))?;
        let s: [u8; 32] = sig
            .s
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| CoordError::Internal(format!("{} has no signature s", row.id)))?;
        let v = u8::try_from(sig.recovery_id.unwrap_or(-1))
            .map_err(|_| CoordError::Internal(format!("{} has no recovery id", row.id)))?;
        let wallet = parse_address(wallet)
            .map_err(|e| CoordError::Internal(format!("wallet address: {e}")))?;
        let signed = assemble_signed(&unsigned, r, s, v, wallet)
            .map_err(|e| CoordError::Internal(format!("assembling the signed transaction: {e}")))?;
        let hash = format!("{:#x}", signed.hash);
        self.store_signed(&row.id, signed.raw, &hash).await
    }

    /// Stores a withdrawal's signed transaction (once) and returns what is
    /// stored: whatever is stored is what goes out (a concurrent writer wins).
    pub(crate) async fn store_signed(
        &self,
        withdrawal_id: &str,
        raw: Vec<u8>,
        hash: &str,
    ) -> Result<(Vec<u8>, String), CoordError> {
        sqlx::query(
            "UPDATE chain_txs SET raw_tx = $1, tx_hash = $2 WHERE withdrawal_id = $3 AND raw_tx IS NULL",
        )
        .bind(raw)
        .bind(hash)
        .bind(withdrawal_id)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        let t = self
            .stored_tx(withdrawal_id)
            .await?
            .ok_or_else(|| CoordError::Internal(format!("{withdrawal_id} lost its transaction")))?;
        match (t.raw_tx, t.tx_hash) {
            (Some(raw), Some(hash)) => Ok((raw, hash)),
            _ => Err(CoordError::Internal(format!(
                "{withdrawal_id}: signed transaction not stored"
            ))),
        }
    }

    /// One look at a broadcast transaction: a receipt for any of its
    /// versions (the current one and those it replaced) and its
    /// confirmations; otherwise (re-)send the current raw bytes if the node
    /// does not know them, or report it stuck once it has waited
    /// `resubmit_after_secs` unmined.
    pub async fn track(&self, chain: &EvmChain, row: &Payment) -> Result<Tracked, Pending> {
        let name = &chain.settings.name;
        let t = self
            .stored(&row.id)
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
        let hash = parse_hash(&hash_text)?;
        if let Some(done) = self.mined_version(chain, row, &hash_text).await? {
            return Ok(done);
        }
        // A replacement being signed is resumed at once; one waiting for
        // approvers is not, so the transaction in flight is still watched
        // (and re-sent if the node drops it) meanwhile.
        if t.bump_tx.is_some() && t.bump_statement.is_none() {
            return Ok(Tracked::Stuck(format!(
                "{hash_text}: resuming its fee bump"
            )));
        }
        let known = t.sends > 0
            && chain
                .rpc
                .transaction_exists(hash)
                .await
                .map_err(|e| rpc_note(name, "cannot look the transaction up", &e))?;
        let waited_ms = now_ms().saturating_sub(t.last_sent_ms.unwrap_or(i64::MAX));
        let resubmit_ms = i64::try_from(chain.settings.resubmit_after_secs.saturating_mul(1000))
            .unwrap_or(i64::MAX);
        if known {
            if waited_ms >= resubmit_ms {
                if t.bumps < i64::from(chain.settings.max_fee_bumps) {
                    return Ok(Tracked::Stuck(format!(
                        "{hash_text} unmined for {}s",
                        waited_ms / 1000
                    )));
                }
                return Ok(Tracked::Waiting(format!(
                    "{hash_text} pending; replaced {} times already (max_fee_bumps), waiting",
                    t.bumps
                )));
            }
            return Ok(Tracked::Waiting(format!("{hash_text} pending")));
        }
        if t.sends > 0 {
            // Dropped. If the account already used this nonce and none of our
            // versions was mined, the wallet signed something else with it.
            let mined = chain
                .rpc
                .transaction_count(t.sender, BlockTag::Latest)
                .await
                .map_err(|e| rpc_note(name, "cannot read the account nonce", &e))?;
            if mined > t.nonce {
                if let Some(done) = self.mined_version(chain, row, &hash_text).await? {
                    return Ok(done);
                }
                return Ok(Tracked::NonceTaken {
                    nonce: t.nonce,
                    mined,
                });
            }
        }
        // Never sent, or dropped by the node: send the same bytes again.
        let sent = chain
            .rpc
            .send_raw_transaction(&raw)
            .await
            .map_err(|e| rpc_note(name, &format!("broadcasting {hash_text} failed"), &e))?;
        sqlx::query(
            "UPDATE chain_txs SET sends = sends + 1, last_sent_ms = $1
             WHERE withdrawal_id = $2 AND tx_hash = $3",
        )
        .bind(now_ms())
        .bind(&row.id)
        .bind(&hash_text)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        tracing::info!(withdrawal = %row.id, tx = %hash_text, already_known = sent.already_known, resend = t.sends > 0, "transaction sent");
        Ok(Tracked::Waiting(format!("{hash_text} sent")))
    }

    /// The outcome if any version of the withdrawal's transaction is mined.
    async fn mined_version(
        &self,
        chain: &EvmChain,
        row: &Payment,
        current: &str,
    ) -> Result<Option<Tracked>, Pending> {
        let name = &chain.settings.name;
        let mut hashes = vec![current.to_owned()];
        hashes.extend(self.replaced_hashes(&row.id).await?);
        for hash_text in hashes {
            let hash = parse_hash(&hash_text)?;
            let receipt = chain
                .rpc
                .transaction_receipt(hash)
                .await
                .map_err(|e| rpc_note(name, "cannot read the receipt", &e))?;
            let Some(r) = receipt else { continue };
            if !r.success {
                return Ok(Some(Tracked::Reverted {
                    hash: hash_text,
                    block: r.block_number,
                }));
            }
            let head = chain
                .rpc
                .block_number()
                .await
                .map_err(|e| rpc_note(name, "cannot read the block number", &e))?;
            let confs = head.saturating_sub(r.block_number).saturating_add(1);
            return Ok(Some(if confs >= chain.settings.confirmations {
                Tracked::Confirmed {
                    hash: hash_text,
                    block: r.block_number,
                    gas_used: r.gas_used,
                    fee_paid: u128::try_from(r.fee_paid_wei()).unwrap_or(u128::MAX),
                }
            } else {
                Tracked::Waiting(format!(
                    "{hash_text} in block {}: {confs} of {} confirmations",
                    r.block_number, chain.settings.confirmations
                ))
            }));
        }
        Ok(None)
    }

    /// Hashes of the versions a fee bump replaced, oldest first.
    pub async fn replaced_hashes(&self, withdrawal_id: &str) -> Result<Vec<String>, CoordError> {
        Ok(sqlx::query(
            "SELECT tx_hash FROM chain_tx_replaced WHERE withdrawal_id = $1 ORDER BY replaced_ms",
        )
        .bind(withdrawal_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?
        .iter()
        .map(|r| r.get::<String, _>("tx_hash"))
        .collect())
    }
}

fn parse_hash(text: &str) -> Result<B256, CoordError> {
    text.parse()
        .map_err(|_| CoordError::Internal(format!("stored hash {text}")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    async fn withdrawal(pool: &AnyPool, id: &str, state: &str, signed: bool, nonce: i64) {
        sqlx::query(
            "INSERT INTO withdrawals (id, client_id, idempotency_key, request_hash, wallet, chain,
               asset, destination, amount, fee_cap, initiator, memo, state, signer_notes,
               created_ms, updated_ms, sig_r)
             VALUES ($1, 'c', $1, 'h', 'w', 'anvil', 'ETH', '0x00', '1', '1', 'c', '', $2, '', 0, 0, $3)",
        )
        .bind(id)
        .bind(state)
        .bind(signed.then(|| vec![1u8; 32]))
        .execute(pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO chain_txs (withdrawal_id, chain, sender, nonce, unsigned_tx, sends, created_ms)
             VALUES ($1, 'anvil', '0xaa', $2, $3, 0, 0)",
        )
        .bind(id)
        .bind(nonce)
        .bind(vec![2u8])
        .execute(pool)
        .await
        .unwrap();
    }

    /// A crash between committing `failed` and releasing the nonce leaves
    /// the nonce held; the next allocation frees it (and only it).
    #[tokio::test]
    async fn a_release_interrupted_by_a_crash_is_done_at_the_next_allocation() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::storage::open(dir.path()).await.unwrap();
        let pool = db.pool().clone();
        withdrawal(&pool, "failed-unsigned", "failed", false, 5).await;
        withdrawal(&pool, "failed-signed", "failed", true, 6).await;
        withdrawal(&pool, "still-signing", "signing", false, 7).await;
        let chains = Chains::new(&[], pool.clone()).unwrap();
        chains.release_abandoned("anvil", false).await.unwrap();
        let held: Vec<String> =
            sqlx::query_scalar("SELECT withdrawal_id FROM chain_txs ORDER BY nonce")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(held, ["failed-signed", "still-signing"]);
        // Idempotent.
        chains.release_abandoned("anvil", false).await.unwrap();
    }
}
