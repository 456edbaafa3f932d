//! An async JSON-RPC 2.0 client for EVM nodes over HTTP(S).
//!
//! Errors are typed so a caller can act on them: [`ChainError::RpcUnreachable`]
//! and [`ChainError::RpcTimeout`] (try again or fail over),
//! [`ChainError::RpcError`] (the node answered with an error object),
//! [`ChainError::TxRejected`] (a raw transaction the node will not take),
//! [`ChainError::RpcMalformed`] (the answer breaks the protocol).
//!
//! The endpoint URL often carries an API key: it never appears in errors or
//! `Debug` output (only its scheme and host do).

pub mod quantity;
pub mod types;

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use alloy_primitives::{Address, B256, Bytes, U256, keccak256};
use serde_json::{Value, json};

use crate::error::{ChainError, Result};
use crate::evm::tx::erc20::balance_of_calldata;
pub use types::{BlockTag, CallRequest, FeeEstimate, Receipt, SendOutcome};

/// Largest response body read, in bytes.
const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// Client settings.
#[derive(Clone, PartialEq, Eq)]
pub struct RpcConfig {
    /// `http://` or `https://` endpoint (may embed an API key).
    pub url: String,
    /// More endpoints of the same chain, tried in order when one cannot be
    /// reached (connection refused, timeout, HTTP error without a JSON-RPC
    /// answer); the one that answered is kept for the next requests.
    pub fallback_urls: Vec<String>,
    /// Per-request timeout (connect + send + read).
    pub timeout: Duration,
    /// Upper bound for `max_fee_per_gas` in [`EvmRpc::estimate_fees`], wei/gas.
    pub max_fee_per_gas_cap: u128,
    /// Tip used when the node has no `eth_maxPriorityFeePerGas`, wei/gas.
    pub fallback_priority_fee: u128,
}

impl RpcConfig {
    /// Defaults: 10 s timeout, 500 gwei fee cap, 1 gwei fallback tip.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            fallback_urls: Vec::new(),
            timeout: Duration::from_secs(10),
            max_fee_per_gas_cap: 500_000_000_000,
            fallback_priority_fee: 1_000_000_000,
        }
    }
}

impl fmt::Debug for RpcConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcConfig")
            .field("url", &redact(&self.url))
            .field(
                "fallback_urls",
                &self
                    .fallback_urls
                    .iter()
                    .map(|u| redact(u))
                    .collect::<Vec<_>>(),
            )
            .field("timeout", &self.timeout)
            .field("max_fee_per_gas_cap", &self.max_fee_per_gas_cap)
            .field("fallback_priority_fee", &self.fallback_priority_fee)
            .finish()
    }
}

/// Scheme and host only: paths and queries often hold API keys.
pub fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!("{}://{}/…", u.scheme(), u.host_str().unwrap_or("?")),
        Err(_) => "<invalid url>".to_owned(),
    }
}

/// A JSON-RPC client for one EVM chain, through one node or several
/// (failover in order, see [`RpcConfig::fallback_urls`]).
pub struct EvmRpc {
    http: reqwest::Client,
    /// The primary endpoint, then the fallbacks.
    urls: Vec<reqwest::Url>,
    /// Index of the endpoint that answered last: tried first.
    preferred: AtomicUsize,
    config: RpcConfig,
    next_id: AtomicU64,
}

impl fmt::Debug for EvmRpc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EvmRpc")
            .field("config", &self.config)
            .finish()
    }
}

fn malformed(method: &'static str, reason: impl Into<String>) -> ChainError {
    ChainError::RpcMalformed {
        method,
        reason: reason.into(),
    }
}

fn as_str<'a>(method: &'static str, value: &'a Value, what: &str) -> Result<&'a str> {
    value
        .as_str()
        .ok_or_else(|| malformed(method, format!("{what} is not a string")))
}

fn field<'a>(method: &'static str, object: &'a Value, name: &str) -> Result<&'a str> {
    match object.get(name) {
        Some(v) => as_str(method, v, name),
        None => Err(malformed(method, format!("missing {name}"))),
    }
}

impl EvmRpc {
    /// A client for `config.url` (http or https, no request sent yet).
    pub fn new(config: RpcConfig) -> Result<Self> {
        let mut urls = Vec::with_capacity(1 + config.fallback_urls.len());
        for (i, text) in std::iter::once(&config.url)
            .chain(&config.fallback_urls)
            .enumerate()
        {
            let which = if i == 0 {
                "RPC url".to_owned()
            } else {
                format!("fallback RPC url {i}")
            };
            let url = reqwest::Url::parse(text)
                .map_err(|_| ChainError::InvalidConfig(format!("{which} is not a valid URL")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(ChainError::InvalidConfig(format!(
                    "{which} must be http:// or https://"
                )));
            }
            urls.push(url);
        }
        if config.timeout.is_zero() {
            return Err(ChainError::InvalidConfig(
                "RPC timeout must be positive".to_owned(),
            ));
        }
        if config.fallback_priority_fee > config.max_fee_per_gas_cap {
            return Err(ChainError::InvalidConfig(
                "fallback priority fee above the max fee cap".to_owned(),
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .build()
            .map_err(|e| ChainError::InvalidConfig(format!("HTTP client: {}", e.without_url())))?;
        Ok(Self {
            http,
            urls,
            preferred: AtomicUsize::new(0),
            config,
            next_id: AtomicU64::new(1),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RpcConfig {
        &self.config
    }

    /// The endpoints, redacted (scheme and host), primary first.
    pub fn endpoints(&self) -> Vec<String> {
        self.urls.iter().map(|u| redact(u.as_str())).collect()
    }

    /// Sends one JSON-RPC request and returns its `result` (which may be
    /// `null`). An endpoint that cannot be reached is skipped for the next
    /// one; a JSON-RPC error from a node that answered is returned as is.
    pub async fn request(&self, method: &'static str, params: Value) -> Result<Value> {
        let n = self.urls.len();
        let start = self.preferred.load(Ordering::Relaxed) % n.max(1);
        let mut last = None;
        for attempt in 0..n {
            let i = (start + attempt) % n;
            match self.request_at(i, method, params.clone()).await {
                Err(e @ (ChainError::RpcUnreachable(_) | ChainError::RpcTimeout { .. })) => {
                    last = Some(e);
                }
                other => {
                    if attempt > 0 {
                        self.preferred.store(i, Ordering::Relaxed);
                    }
                    return other;
                }
            }
        }
        Err(last.unwrap_or_else(|| ChainError::RpcUnreachable(format!("{method}: no endpoint"))))
    }

    /// The chain id each endpoint reports (or why it could not), redacted
    /// endpoint first: every node of a chain must be on it.
    pub async fn chain_id_of_each(&self) -> Vec<(String, Result<u64>)> {
        let mut out = Vec::with_capacity(self.urls.len());
        for (i, url) in self.urls.iter().enumerate() {
            let id = self
                .request_at(i, "eth_chainId", json!([]))
                .await
                .and_then(|v| {
                    quantity::parse_u64(as_str("eth_chainId", &v, "result")?)
                        .map_err(|e| malformed("eth_chainId", e))
                });
            out.push((redact(url.as_str()), id));
        }
        out
    }

    /// One request to endpoint `i`.
    async fn request_at(&self, i: usize, method: &'static str, params: Value) -> Result<Value> {
        let url = self
            .urls
            .get(i)
            .cloned()
            .ok_or_else(|| ChainError::RpcUnreachable(format!("{method}: no endpoint {i}")))?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                ChainError::RpcTimeout {
                    method,
                    timeout: self.config.timeout,
                }
            } else {
                ChainError::RpcUnreachable(format!("{method}: {}", e.without_url()))
            }
        };
        let response = self
            .http
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let bytes =
            crate::jsonrpc::read_body(response, MAX_RESPONSE_BYTES, method, transport).await?;
        let reply: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(_) if !status.is_success() => {
                return Err(ChainError::RpcUnreachable(format!(
                    "{method}: HTTP {status}"
                )));
            }
            Err(e) => return Err(malformed(method, format!("not JSON: {e}"))),
        };
        if let Some(e) = crate::jsonrpc::error_of(method, &reply) {
            return Err(e);
        }
        if !status.is_success() {
            return Err(ChainError::RpcUnreachable(format!(
                "{method}: HTTP {status}"
            )));
        }
        crate::jsonrpc::result_of(method, &reply, id)
    }

    async fn quantity_u64(&self, method: &'static str, params: Value) -> Result<u64> {
        let v = self.request(method, params).await?;
        quantity::parse_u64(as_str(method, &v, "result")?).map_err(|e| malformed(method, e))
    }

    async fn quantity_u256(&self, method: &'static str, params: Value) -> Result<U256> {
        let v = self.request(method, params).await?;
        quantity::parse_u256(as_str(method, &v, "result")?).map_err(|e| malformed(method, e))
    }

    /// `eth_chainId`.
    pub async fn chain_id(&self) -> Result<u64> {
        self.quantity_u64("eth_chainId", json!([])).await
    }

    /// `eth_blockNumber`.
    pub async fn block_number(&self) -> Result<u64> {
        self.quantity_u64("eth_blockNumber", json!([])).await
    }

    /// `eth_getTransactionCount` at `latest` (mined) or `pending` (next nonce
    /// counting the node's pool).
    pub async fn transaction_count(&self, address: Address, tag: BlockTag) -> Result<u64> {
        self.quantity_u64("eth_getTransactionCount", json!([address, tag.as_str()]))
            .await
    }

    /// `eth_getBalance` at `latest`, wei.
    pub async fn balance(&self, address: Address) -> Result<U256> {
        self.quantity_u256("eth_getBalance", json!([address, "latest"]))
            .await
    }

    /// `eth_call` at `latest`, returning the output bytes.
    pub async fn call(&self, call: &CallRequest) -> Result<Bytes> {
        const METHOD: &str = "eth_call";
        let v = self
            .request(METHOD, json!([call_object(call), "latest"]))
            .await?;
        let data = quantity::parse_data(as_str(METHOD, &v, "result")?)
            .map_err(|e| malformed(METHOD, e))?;
        Ok(Bytes::from(data))
    }

    /// ERC-20 `balanceOf(owner)` on `token`, via `eth_call`.
    pub async fn erc20_balance(&self, token: Address, owner: Address) -> Result<U256> {
        let out = self
            .call(&CallRequest {
                from: None,
                to: token,
                value: U256::ZERO,
                data: balance_of_calldata(owner),
            })
            .await?;
        if out.len() != 32 {
            return Err(malformed(
                "eth_call",
                format!(
                    "balanceOf returned {} bytes, expected 32 (not an ERC-20?)",
                    out.len()
                ),
            ));
        }
        Ok(U256::from_be_slice(&out))
    }

    /// `eth_estimateGas` for a call.
    pub async fn estimate_gas(&self, call: &CallRequest) -> Result<u64> {
        self.quantity_u64("eth_estimateGas", json!([call_object(call)]))
            .await
    }

    /// The latest block's `baseFeePerGas`.
    pub async fn base_fee_per_gas(&self) -> Result<u128> {
        const METHOD: &str = "eth_getBlockByNumber";
        let block = self.request(METHOD, json!(["latest", false])).await?;
        if block.is_null() {
            return Err(malformed(METHOD, "no latest block"));
        }
        let base = field(METHOD, &block, "baseFeePerGas").map_err(|_| {
            malformed(
                METHOD,
                "latest block has no baseFeePerGas (pre-London chain?)",
            )
        })?;
        quantity::parse_u128(base).map_err(|e| malformed(METHOD, e))
    }

    /// `eth_maxPriorityFeePerGas`, or the configured fallback when the node
    /// does not support it (it answered with an error object). Transport
    /// failures are not papered over.
    pub async fn priority_fee(&self) -> Result<u128> {
        const METHOD: &str = "eth_maxPriorityFeePerGas";
        match self.request(METHOD, json!([])).await {
            Ok(v) => quantity::parse_u128(as_str(METHOD, &v, "result")?)
                .map_err(|e| malformed(METHOD, e)),
            Err(ChainError::RpcError { .. }) => Ok(self.config.fallback_priority_fee),
            Err(e) => Err(e),
        }
    }

    /// EIP-1559 fees: tip from [`Self::priority_fee`], max fee
    /// `2 * base fee + tip` capped at the configured maximum, tip lowered to
    /// the max fee if needed. Fails with [`ChainError::FeeAboveCap`] when the
    /// base fee alone is above the cap (the transaction could not be mined).
    pub async fn estimate_fees(&self) -> Result<FeeEstimate> {
        let base = self.base_fee_per_gas().await?;
        let tip = self.priority_fee().await?;
        let cap = self.config.max_fee_per_gas_cap;
        if base > cap {
            return Err(ChainError::FeeAboveCap {
                base_fee_per_gas: base,
                max_fee_per_gas: cap,
            });
        }
        let max_fee = base.saturating_mul(2).saturating_add(tip).min(cap);
        Ok(FeeEstimate {
            base_fee_per_gas: base,
            max_priority_fee_per_gas: tip.min(max_fee),
            max_fee_per_gas: max_fee,
        })
    }

    /// `eth_sendRawTransaction`. The hash is computed locally and checked
    /// against the node's answer. Broadcasting a transaction the node already
    /// has is a success with `already_known`: the node says "already known"
    /// (or "already imported", "known transaction"), or it says "nonce too
    /// low" and `eth_getTransactionByHash` finds this very transaction. Any
    /// other node error is [`ChainError::TxRejected`].
    pub async fn send_raw_transaction(&self, raw: &[u8]) -> Result<SendOutcome> {
        const METHOD: &str = "eth_sendRawTransaction";
        let hash = keccak256(raw);
        match self
            .request(METHOD, json!([quantity::format_data(raw)]))
            .await
        {
            Ok(v) => {
                let got = quantity::parse_b256(as_str(METHOD, &v, "result")?)
                    .map_err(|e| malformed(METHOD, e))?;
                if got != hash {
                    return Err(malformed(
                        METHOD,
                        format!("node returned hash {got}, expected {hash}"),
                    ));
                }
                Ok(SendOutcome {
                    hash,
                    already_known: false,
                })
            }
            Err(ChainError::RpcError { code, message, .. }) => {
                let lower = message.to_ascii_lowercase();
                let duplicate = [
                    "already known",
                    "alreadyknown",
                    "already imported",
                    "known transaction",
                ]
                .iter()
                .any(|p| lower.contains(p));
                if duplicate {
                    return Ok(SendOutcome {
                        hash,
                        already_known: true,
                    });
                }
                if lower.contains("nonce too low") && self.transaction_exists(hash).await? {
                    return Ok(SendOutcome {
                        hash,
                        already_known: true,
                    });
                }
                Err(ChainError::TxRejected { code, message })
            }
            Err(e) => Err(e),
        }
    }

    /// Whether the node knows a transaction (pending or mined) by hash.
    pub async fn transaction_exists(&self, hash: B256) -> Result<bool> {
        let v = self
            .request("eth_getTransactionByHash", json!([hash]))
            .await?;
        Ok(!v.is_null())
    }

    /// `eth_getTransactionReceipt`: `None` while not mined.
    pub async fn transaction_receipt(&self, hash: B256) -> Result<Option<Receipt>> {
        const METHOD: &str = "eth_getTransactionReceipt";
        let v = self.request(METHOD, json!([hash])).await?;
        if v.is_null() {
            return Ok(None);
        }
        let q64 = |name: &str| -> Result<u64> {
            quantity::parse_u64(field(METHOD, &v, name)?).map_err(|e| malformed(METHOD, e))
        };
        let opt_address = |name: &str| -> Result<Option<Address>> {
            match v.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(a) => quantity::parse_address(as_str(METHOD, a, name)?)
                    .map(Some)
                    .map_err(|e| malformed(METHOD, e)),
            }
        };
        let status = q64("status")?;
        if status > 1 {
            return Err(malformed(METHOD, format!("status {status}")));
        }
        let transaction_hash = quantity::parse_b256(field(METHOD, &v, "transactionHash")?)
            .map_err(|e| malformed(METHOD, e))?;
        if transaction_hash != hash {
            return Err(malformed(METHOD, "receipt for another transaction"));
        }
        Ok(Some(Receipt {
            transaction_hash,
            block_number: q64("blockNumber")?,
            success: status == 1,
            gas_used: q64("gasUsed")?,
            effective_gas_price: quantity::parse_u128(field(METHOD, &v, "effectiveGasPrice")?)
                .map_err(|e| malformed(METHOD, e))?,
            from: quantity::parse_address(field(METHOD, &v, "from")?)
                .map_err(|e| malformed(METHOD, e))?,
            to: opt_address("to")?,
            contract_address: opt_address("contractAddress")?,
        }))
    }

    /// Polls [`Self::transaction_receipt`] every `poll` until a receipt
    /// arrives or `timeout` passes (then [`ChainError::RpcTimeout`]).
    pub async fn wait_for_receipt(
        &self,
        hash: B256,
        poll: Duration,
        timeout: Duration,
    ) -> Result<Receipt> {
        let waited = tokio::time::timeout(timeout, async {
            loop {
                if let Some(r) = self.transaction_receipt(hash).await? {
                    return Ok(r);
                }
                tokio::time::sleep(poll).await;
            }
        })
        .await;
        match waited {
            Ok(result) => result,
            Err(_) => Err(ChainError::RpcTimeout {
                method: "eth_getTransactionReceipt",
                timeout,
            }),
        }
    }
}

fn call_object(call: &CallRequest) -> Value {
    let mut object = json!({
        "to": call.to,
        "value": quantity::format_quantity(call.value),
        "data": quantity::format_data(&call.data),
    });
    if let (Some(from), Some(map)) = (call.from, object.as_object_mut()) {
        map.insert("from".to_owned(), json!(from));
    }
    object
}
