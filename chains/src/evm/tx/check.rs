//! Comparing a decoded transaction with the transfer that was approved.
//!
//! A signer decodes the unsigned transaction it is asked to sign and refuses
//! it unless it moves exactly what the approved statement says
//! (docs/SECURITY.md, promise 5 and case 11).

use std::fmt;

use alloy_primitives::{Address, U256};
use serde::{Deserialize, Serialize};

use crate::evm::tx::request::TransferRequest;
use crate::evm::tx::transfer::DecodedTransfer;

/// The approved transfer, as a signer knows it from the approval statement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectedTransfer {
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// The ERC-20 contract, `None` for the native coin.
    pub token: Option<Address>,
    /// Who receives the asset.
    pub recipient: Address,
    /// How much, in base units.
    pub amount: U256,
    /// The largest fee cap (`gas_limit * max_fee_per_gas`, wei) allowed.
    pub max_fee_wei: U256,
    /// The account nonce, when the statement fixes it.
    pub nonce: Option<u64>,
}

impl ExpectedTransfer {
    /// What a request is expected to produce: its own fee cap as the limit and
    /// its nonce.
    pub fn from_request(request: &TransferRequest) -> Self {
        Self {
            chain_id: request.chain_id,
            token: request.asset.token(),
            recipient: request.recipient,
            amount: request.amount,
            max_fee_wei: request.fee_cap_wei(),
            nonce: Some(request.nonce),
        }
    }

    /// The call target this transfer needs: the token contract or the recipient.
    pub fn expected_to(&self) -> Address {
        self.token.unwrap_or(self.recipient)
    }

    /// The wei this transfer sends: the amount for a native transfer, 0 for ERC-20.
    pub fn expected_value(&self) -> U256 {
        match self.token {
            None => self.amount,
            Some(_) => U256::ZERO,
        }
    }
}

/// The first field in which a decoded transaction differs from the approval.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Mismatch {
    /// Another chain.
    ChainId {
        /// Approved.
        expected: u64,
        /// In the transaction.
        actual: u64,
    },
    /// Another call target (recipient of ETH, or token contract).
    To {
        /// Approved.
        expected: Address,
        /// In the transaction.
        actual: Address,
    },
    /// Another wei value.
    Value {
        /// Approved.
        expected: U256,
        /// In the transaction.
        actual: U256,
    },
    /// Another recipient (for ERC-20: in the calldata).
    Recipient {
        /// Approved.
        expected: Address,
        /// In the transaction.
        actual: Address,
    },
    /// Another amount (for ERC-20: in the calldata).
    Amount {
        /// Approved.
        expected: U256,
        /// In the transaction.
        actual: U256,
    },
    /// A native transfer where a token transfer was approved, or the reverse.
    Asset {
        /// Approved token (`None`: native).
        expected: Option<Address>,
        /// In the transaction.
        actual: Option<Address>,
    },
    /// The transaction may pay more fees than approved.
    FeeCapExceeded {
        /// Approved maximum, wei.
        max_fee_wei: U256,
        /// `gas_limit * max_fee_per_gas` of the transaction, wei.
        fee_cap_wei: U256,
    },
    /// Another account nonce.
    Nonce {
        /// Approved.
        expected: u64,
        /// In the transaction.
        actual: u64,
    },
}

impl Mismatch {
    /// The field's stable name: `chain_id`, `to`, `value`, `recipient`,
    /// `amount`, `asset`, `fee_cap`, `nonce`.
    pub fn field(&self) -> &'static str {
        match self {
            Self::ChainId { .. } => "chain_id",
            Self::To { .. } => "to",
            Self::Value { .. } => "value",
            Self::Recipient { .. } => "recipient",
            Self::Amount { .. } => "amount",
            Self::Asset { .. } => "asset",
            Self::FeeCapExceeded { .. } => "fee_cap",
            Self::Nonce { .. } => "nonce",
        }
    }
}

fn token_name(token: &Option<Address>) -> String {
    match token {
        None => "native".to_owned(),
        Some(t) => format!("ERC-20 {t}"),
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "transaction differs from the approval: ")?;
        match self {
            Self::ChainId { expected, actual } => {
                write!(f, "chain_id {actual}, approved {expected}")
            }
            Self::To { expected, actual } => write!(f, "to {actual}, approved {expected}"),
            Self::Value { expected, actual } => {
                write!(f, "value {actual} wei, approved {expected} wei")
            }
            Self::Recipient { expected, actual } => {
                write!(f, "recipient {actual}, approved {expected}")
            }
            Self::Amount { expected, actual } => {
                write!(f, "amount {actual}, approved {expected}")
            }
            Self::Asset { expected, actual } => write!(
                f,
                "asset {}, approved {}",
                token_name(actual),
                token_name(expected)
            ),
            Self::FeeCapExceeded {
                max_fee_wei,
                fee_cap_wei,
            } => write!(
                f,
                "fee_cap {fee_cap_wei} wei exceeds the approved maximum {max_fee_wei} wei"
            ),
            Self::Nonce { expected, actual } => write!(f, "nonce {actual}, approved {expected}"),
        }
    }
}

/// Checks a decoded transaction against the approved transfer, field by field
/// in this order: chain id, to, value, recipient, amount, asset, fee cap,
/// nonce. Returns the first difference.
pub fn check_against(
    decoded: &DecodedTransfer,
    expected: &ExpectedTransfer,
) -> Result<(), Mismatch> {
    if decoded.chain_id != expected.chain_id {
        return Err(Mismatch::ChainId {
            expected: expected.chain_id,
            actual: decoded.chain_id,
        });
    }
    if decoded.to != expected.expected_to() {
        return Err(Mismatch::To {
            expected: expected.expected_to(),
            actual: decoded.to,
        });
    }
    if decoded.value != expected.expected_value() {
        return Err(Mismatch::Value {
            expected: expected.expected_value(),
            actual: decoded.value,
        });
    }
    if decoded.recipient != expected.recipient {
        return Err(Mismatch::Recipient {
            expected: expected.recipient,
            actual: decoded.recipient,
        });
    }
    if decoded.amount != expected.amount {
        return Err(Mismatch::Amount {
            expected: expected.amount,
            actual: decoded.amount,
        });
    }
    if decoded.token != expected.token {
        return Err(Mismatch::Asset {
            expected: expected.token,
            actual: decoded.token,
        });
    }
    if decoded.fee_cap_wei > expected.max_fee_wei {
        return Err(Mismatch::FeeCapExceeded {
            max_fee_wei: expected.max_fee_wei,
            fee_cap_wei: decoded.fee_cap_wei,
        });
    }
    if let Some(nonce) = expected.nonce
        && decoded.nonce != nonce
    {
        return Err(Mismatch::Nonce {
            expected: nonce,
            actual: decoded.nonce,
        });
    }
    Ok(())
}
