//! An async client for Bitcoin Core-style JSON-RPC nodes (Bitcoin Core,
//! Litecoin Core): chain, fee estimate, watch-only coin tracking, broadcast
//! and confirmations.
//!
//! Coins are tracked by a watch-only wallet on the node (no private keys,
//! `disable_private_keys`), to which the wallet's addresses are imported:
//! `listunspent` then gives the spendable coins with their confirmations
//! and `gettransaction` the previous transactions and the confirmations (or
//! conflicts) of what was broadcast. The node's credentials come from the
//! URL's user info and, like its path, never appear in errors.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bitcoin::consensus::encode::deserialize_hex;
use bitcoin::{OutPoint, Transaction, Txid};
use serde_json::{Value, json};

use crate::error::{ChainError, Result};
use crate::evm::rpc::redact;
use crate::utxo::build::Utxo;

/// Largest response body read, in bytes.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// Base units per coin (8 decimals on every Bitcoin-format chain).
pub const BASE_UNITS_PER_COIN: f64 = 100_000_000.0;

/// A coin the node's watch-only wallet sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeCoin {
    /// Where it is.
    pub outpoint: OutPoint,
    /// Value, base units.
    pub value: u64,
    /// Confirmations (0 = in the mempool).
    pub confirmations: u64,
    /// Its address as the node prints it.
    pub address: String,
}

/// What the node knows of a transaction the wallet is involved in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxStatus {
    /// Confirmations: positive when mined, 0 in the mempool, negative when a
    /// conflicting transaction is mined that many blocks deep.
    pub confirmations: i64,
    /// The block it is in, if mined.
    pub block_hash: Option<String>,
    /// Transactions spending the same coins that the node also knows.
    pub conflicts: Vec<Txid>,
}

/// Outcome of a broadcast.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Broadcast {
    /// The node took it (or already had it in its mempool: Bitcoin Core
    /// answers a repeat of a mempool transaction like a first send).
    Accepted(Txid),
    /// The node already has it in a block (or says it has it): idempotent success.
    AlreadyKnown(Txid),
}

/// A JSON-RPC client for one Bitcoin-format node.
pub struct UtxoRpc {
    http: reqwest::Client,
    url: reqwest::Url,
    auth: Option<(String, String)>,
    timeout: Duration,
    next_id: AtomicU64,
}

impl fmt::Debug for UtxoRpc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UtxoRpc")
            .field("url", &redact(self.url.as_str()))
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn malformed(method: &'static str, reason: impl Into<String>) -> ChainError {
    ChainError::RpcMalformed {
        method,
        reason: reason.into(),
    }
}

/// A coin amount as the node prints it (`1.5`) in base units.
pub fn coins_to_base_units(method: &'static str, v: &Value) -> Result<u64> {
    let x = v
        .as_f64()
        .ok_or_else(|| malformed(method, "amount is not a number"))?;
    if !(0.0..=21e6 * 84.0).contains(&x) {
        return Err(malformed(method, format!("amount {x} out of range")));
    }
    Ok((x * BASE_UNITS_PER_COIN).round() as u64)
}

fn txid_of(method: &'static str, v: &Value) -> Result<Txid> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| malformed(method, "not a txid"))
}

impl UtxoRpc {
    /// A client for `url` (`http://user:password@host:port/`, no request sent).
    pub fn new(url: &str, timeout: Duration) -> Result<Self> {
        let mut url = reqwest::Url::parse(url)
            .map_err(|_| ChainError::InvalidConfig("UTXO node URL is not a valid URL".into()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ChainError::InvalidConfig(
                "UTXO node URL must be http:// or https://".into(),
            ));
        }
        if timeout.is_zero() {
            return Err(ChainError::InvalidConfig(
                "RPC timeout must be positive".into(),
            ));
        }
        let auth = (!url.username().is_empty()).then(|| {
            (
                url.username().to_owned(),
                url.password().unwrap_or_default().to_owned(),
            )
        });
        // Credentials travel in the Authorization header, never in the URL.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| ChainError::InvalidConfig(format!("HTTP client: {}", e.without_url())))?;
        Ok(Self {
            http,
            url,
            auth,
            timeout,
            next_id: AtomicU64::new(1),
        })
    }

    /// One request to the node (or, with `wallet`, to that wallet's endpoint).
    pub async fn call(
        &self,
        wallet: Option<&str>,
        method: &'static str,
        params: Value,
    ) -> Result<Value> {
        let mut url = self.url.clone();
        if let Some(w) = wallet {
            url.path_segments_mut()
                .map_err(|_| ChainError::InvalidConfig("UTXO node URL cannot take a path".into()))?
                .pop_if_empty()
                .push("wallet")
                .push(w);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "1.0", "id": id, "method": method, "params": params});
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                ChainError::RpcTimeout {
                    method,
                    timeout: self.timeout,
                }
            } else {
                ChainError::RpcUnreachable(format!("{method}: {}", e.without_url()))
            }
        };
        let mut req = self.http.post(url).json(&body);
        if let Some((u, p)) = &self.auth {
            req = req.basic_auth(u, Some(p));
        }
        let response = req.send().await.map_err(transport)?;
        let status = response.status();
        let bytes =
            crate::jsonrpc::read_body(response, MAX_RESPONSE_BYTES, method, transport).await?;
        let reply: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(_) if status == reqwest::StatusCode::UNAUTHORIZED => {
                return Err(ChainError::InvalidConfig(
                    "UTXO node refused the RPC credentials (HTTP 401)".into(),
                ));
            }
            Err(_) => {
                return Err(ChainError::RpcUnreachable(format!(
                    "{method}: HTTP {status}"
                )));
            }
        };
        // Bitcoin Core answers errors with HTTP 500 and the error object.
        if let Some(e) = crate::jsonrpc::error_of(method, &reply) {
            return Err(e);
        }
        crate::jsonrpc::result_of(method, &reply, id)
    }

    /// The node's chain (`main`, `test`, `regtest`) and block height.
    pub async fn chain(&self) -> Result<(String, u64)> {
        let m = "getblockchaininfo";
        let v = self.call(None, m, json!([])).await?;
        let chain = v
            .get("chain")
            .and_then(Value::as_str)
            .ok_or_else(|| malformed(m, "no chain"))?;
        let blocks = v
            .get("blocks")
            .and_then(Value::as_u64)
            .ok_or_else(|| malformed(m, "no blocks"))?;
        Ok((chain.to_owned(), blocks))
    }

    /// The node's fee estimate for confirmation within `target` blocks, base
    /// units per 1,000 vbytes; `None` when it has too little data (fresh
    /// nodes, regtest).
    pub async fn estimate_fee_rate(&self, target: u16) -> Result<Option<u64>> {
        let m = "estimatesmartfee";
        let v = self.call(None, m, json!([target])).await?;
        match v.get("feerate") {
            Some(rate) => Ok(Some(coins_to_base_units(m, rate)?)),
            None => Ok(None),
        }
    }

    /// The node's minimum relay fee, base units per 1,000 vbytes.
    pub async fn relay_fee_rate(&self) -> Result<u64> {
        let m = "getnetworkinfo";
        let v = self.call(None, m, json!([])).await?;
        coins_to_base_units(
            m,
            v.get("relayfee")
                .ok_or_else(|| malformed(m, "no relayfee"))?,
        )
    }

    /// The node's incremental relay fee (what a replacement must add per
    /// 1,000 vbytes of its own size), base units per 1,000 vbytes; Bitcoin
    /// Core's default when the node does not say.
    pub async fn incremental_fee_rate(&self) -> Result<u64> {
        let m = "getnetworkinfo";
        let v = self.call(None, m, json!([])).await?;
        match v.get("incrementalfee") {
            Some(rate) => coins_to_base_units(m, rate),
            None => Ok(crate::utxo::replace::INCREMENTAL_RELAY_FEE_SAT_PER_KVB),
        }
    }

    /// Creates (or loads) the watch-only wallet `name`; idempotent.
    pub async fn ensure_watch_wallet(&self, name: &str) -> Result<()> {
        let m = "listwallets";
        let loaded = self.call(None, m, json!([])).await?;
        let loaded = loaded
            .as_array()
            .ok_or_else(|| malformed(m, "not a list"))?;
        if loaded.iter().any(|w| w.as_str() == Some(name)) {
            return Ok(());
        }
        // blank, no private keys: the node never holds a key of ours.
        let created = self
            .call(
                None,
                "createwallet",
                json!([name, true, true, "", false, false, true]),
            )
            .await;
        match created {
            Ok(_) => Ok(()),
            // -4: it exists on disk but is not loaded (after a restart).
            Err(ChainError::RpcError { code: -4, .. }) => self
                .call(None, "loadwallet", json!([name]))
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        }
    }

    /// Adds `address` to the watch-only wallet; `rescan` looks for coins it
    /// received before (slow on a long chain).
    pub async fn watch_address(&self, wallet: &str, address: &str, rescan: bool) -> Result<()> {
        self.call(Some(wallet), "importaddress", json!([address, "", rescan]))
            .await
            .map(|_| ())
    }

    /// The wallet's unspent coins with at least `min_conf` confirmations.
    pub async fn list_unspent(&self, wallet: &str, min_conf: u64) -> Result<Vec<NodeCoin>> {
        let m = "listunspent";
        let v = self
            .call(Some(wallet), m, json!([min_conf, 9_999_999]))
            .await?;
        let list = v.as_array().ok_or_else(|| malformed(m, "not a list"))?;
        list.iter()
            .map(|c| {
                let txid = txid_of(m, c.get("txid").unwrap_or(&Value::Null))?;
                let vout = c
                    .get("vout")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| malformed(m, "no vout"))?;
                Ok(NodeCoin {
                    outpoint: OutPoint {
                        txid,
                        vout: u32::try_from(vout).map_err(|_| malformed(m, "vout too large"))?,
                    },
                    value: coins_to_base_units(m, c.get("amount").unwrap_or(&Value::Null))?,
                    confirmations: c.get("confirmations").and_then(Value::as_u64).unwrap_or(0),
                    address: c
                        .get("address")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                })
            })
            .collect()
    }

    /// The wallet's spendable coins with at least `min_conf` confirmations,
    /// each with its whole previous transaction (what a PSBT input carries
    /// so that signers can prove its value).
    pub async fn spendable(&self, wallet: &str, min_conf: u64) -> Result<Vec<Utxo>> {
        let mut coins = Vec::new();
        for c in self.list_unspent(wallet, min_conf).await? {
            let (prev_tx, _) = self
                .wallet_transaction(wallet, &c.outpoint.txid)
                .await?
                .ok_or_else(|| {
                    malformed(
                        "gettransaction",
                        format!(
                            "the wallet lists {} but does not know its transaction",
                            c.outpoint
                        ),
                    )
                })?;
            coins.push(Utxo {
                outpoint: c.outpoint,
                prev_tx,
            });
        }
        Ok(coins)
    }

    /// A transaction the wallet knows, decoded; `None` if it knows none by that id.
    pub async fn wallet_transaction(
        &self,
        wallet: &str,
        txid: &Txid,
    ) -> Result<Option<(Transaction, TxStatus)>> {
        let m = "gettransaction";
        let v = match self
            .call(Some(wallet), m, json!([txid.to_string(), true]))
            .await
        {
            Ok(v) => v,
            Err(ChainError::RpcError { code: -5, .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let hex = v
            .get("hex")
            .and_then(Value::as_str)
            .ok_or_else(|| malformed(m, "no hex"))?;
        let tx: Transaction =
            deserialize_hex(hex).map_err(|e| malformed(m, format!("hex: {e}")))?;
        if tx.compute_txid() != *txid {
            return Err(malformed(m, "returned another transaction"));
        }
        let conflicts = v
            .get("walletconflicts")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|t| txid_of(m, t).ok()).collect())
            .unwrap_or_default();
        Ok(Some((
            tx,
            TxStatus {
                confirmations: v.get("confirmations").and_then(Value::as_i64).unwrap_or(0),
                block_hash: v
                    .get("blockhash")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                conflicts,
            },
        )))
    }

    /// Sends a signed transaction; a transaction the node already has is success.
    pub async fn send_raw(&self, raw: &[u8], txid: Txid) -> Result<Broadcast> {
        let m = "sendrawtransaction";
        match self
            .call(
                None,
                m,
                json!([bitcoin::hex::DisplayHex::to_lower_hex_string(raw)]),
            )
            .await
        {
            Ok(v) => {
                let got = txid_of(m, &v)?;
                if got != txid {
                    return Err(malformed(
                        m,
                        format!("node reports txid {got}, expected {txid}"),
                    ));
                }
                Ok(Broadcast::Accepted(got))
            }
            // -27: already in the chain; -26 with "already": already in the mempool.
            Err(ChainError::RpcError { code: -27, .. }) => Ok(Broadcast::AlreadyKnown(txid)),
            Err(ChainError::RpcError {
                code: -26, message, ..
            }) if message.contains("already") => Ok(Broadcast::AlreadyKnown(txid)),
            Err(ChainError::RpcError { code, message, .. }) => {
                Err(ChainError::TxRejected { code, message })
            }
            Err(e) => Err(e),
        }
    }
}
