//! The crate's error type.

use std::time::Duration;

use alloy_primitives::Address;

use crate::evm::tx::Mismatch;

/// Everything that can go wrong in a chain adapter.
///
/// Messages never contain secrets: RPC URLs (which often embed API keys) are
/// stripped from transport errors, and inputs are described rather than echoed
/// when they may be large.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// A SEC1 public key that is not a valid secp256k1 point.
    #[error("invalid secp256k1 public key: {0}")]
    InvalidPublicKey(&'static str),
    /// An address string that is not `0x` + 40 hex digits, or whose mixed-case
    /// EIP-55 checksum is wrong.
    #[error("invalid address: {0}")]
    InvalidAddress(String),
    /// A human-readable amount that cannot be parsed exactly.
    #[error("invalid amount: {0}")]
    InvalidAmount(String),
    /// An asset configuration that is not usable.
    #[error("invalid asset: {0}")]
    InvalidAsset(String),
    /// A transfer request that cannot be turned into a transaction.
    #[error("invalid transfer request: {field}: {reason}")]
    InvalidRequest {
        /// The offending field of the request.
        field: &'static str,
        /// Why it is refused.
        reason: String,
    },
    /// Bytes that are not a canonical, supported unsigned EIP-1559 transaction.
    #[error("malformed unsigned transaction: {0}")]
    MalformedTx(String),
    /// Calldata that is neither empty (native transfer) nor an ERC-20
    /// `transfer(address,uint256)`.
    #[error("unsupported calldata: {0}")]
    UnsupportedCalldata(String),
    /// A signature that is not a valid secp256k1 ECDSA signature for the digest.
    #[error("invalid signature: {0}")]
    InvalidSignature(String),
    /// The signed transaction recovers to another address than the wallet's.
    #[error("signature recovers to {recovered}, expected wallet {expected}")]
    WrongSigner {
        /// The wallet address the signature had to come from.
        expected: Address,
        /// The address the signature actually recovers to.
        recovered: Address,
    },
    /// A decoded transaction differs from the approved transfer.
    #[error(transparent)]
    Mismatch(#[from] Mismatch),
    /// The RPC node could not be reached (connection refused, DNS, TLS...).
    #[error("RPC node unreachable: {0}")]
    RpcUnreachable(String),
    /// The RPC node did not answer in time.
    #[error("RPC request {method} timed out after {timeout:?}")]
    RpcTimeout {
        /// The JSON-RPC method.
        method: &'static str,
        /// The configured timeout.
        timeout: Duration,
    },
    /// The node answered with a JSON-RPC error object.
    #[error("RPC {method} failed: error {code}: {message}")]
    RpcError {
        /// The JSON-RPC method.
        method: &'static str,
        /// The JSON-RPC error code.
        code: i64,
        /// The node's message.
        message: String,
    },
    /// The node refused a raw transaction (`eth_sendRawTransaction` error that is
    /// not an idempotent duplicate).
    #[error("transaction rejected by node: error {code}: {message}")]
    TxRejected {
        /// The JSON-RPC error code.
        code: i64,
        /// The node's message.
        message: String,
    },
    /// The node's answer is not what the protocol specifies.
    #[error("malformed RPC response to {method}: {reason}")]
    RpcMalformed {
        /// The JSON-RPC method.
        method: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The fee market is above the configured fee cap.
    #[error(
        "base fee {base_fee_per_gas} wei/gas is above the configured max fee {max_fee_per_gas} wei/gas"
    )]
    FeeAboveCap {
        /// The latest block's base fee.
        base_fee_per_gas: u128,
        /// The configured cap.
        max_fee_per_gas: u128,
    },
    /// The wallet's spendable coins do not cover the payouts and the fee.
    #[error("insufficient funds: {needed} base units needed, {available} spendable")]
    InsufficientFunds {
        /// Payouts plus the fee of the smallest transaction that pays them.
        needed: u64,
        /// Sum of the spendable coins offered.
        available: u64,
    },
    /// A PSBT that cannot be decoded, or a UTXO transaction that differs from
    /// its approvals; the message names the input or output and the rule.
    #[error("UTXO transaction refused: {0}")]
    UtxoRefused(String),
    /// RPC client configuration is invalid.
    #[error("invalid RPC configuration: {0}")]
    InvalidConfig(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = ChainError> = std::result::Result<T, E>;
