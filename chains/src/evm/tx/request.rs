//! A transfer request and the unsigned transaction it becomes.

use alloy_consensus::TxEip1559;
use alloy_primitives::{Address, Bytes, TxKind, U256};
use serde::{Deserialize, Serialize};

use crate::error::{ChainError, Result};
use crate::evm::asset::Asset;
use crate::evm::tx::codec::UnsignedTx;
use crate::evm::tx::erc20::transfer_calldata;

/// Gas of a plain value transfer; the least a native transfer may set.
pub const NATIVE_TRANSFER_GAS: u64 = 21_000;

/// Move `amount` base units of `asset` from the wallet `from` to `recipient`.
///
/// Native: `to = recipient`, `value = amount`, no calldata. ERC-20:
/// `to = token contract`, `value = 0`, calldata
/// `transfer(recipient, amount)`. `from` is not part of the unsigned
/// transaction: it is the wallet the signature must recover to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRequest {
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// The sending wallet.
    pub from: Address,
    /// Who receives the asset (not the token contract).
    pub recipient: Address,
    /// What moves.
    pub asset: Asset,
    /// How much, in the asset's base units.
    pub amount: U256,
    /// The wallet's account nonce.
    pub nonce: u64,
    /// Gas limit.
    pub gas_limit: u64,
    /// EIP-1559 max fee per gas, wei.
    pub max_fee_per_gas: u128,
    /// EIP-1559 max priority fee (tip) per gas, wei.
    pub max_priority_fee_per_gas: u128,
}

impl TransferRequest {
    /// The most the transaction can pay in fees: `gas_limit * max_fee_per_gas` wei.
    pub fn fee_cap_wei(&self) -> U256 {
        U256::from(self.gas_limit) * U256::from(self.max_fee_per_gas)
    }
}

fn invalid(field: &'static str, reason: &str) -> ChainError {
    ChainError::InvalidRequest {
        field,
        reason: reason.to_owned(),
    }
}

/// Builds the unsigned EIP-1559 transaction of a request.
///
/// Refuses: chain id 0, a zero-address recipient, a zero amount, an ERC-20
/// transfer to the token contract itself, a native transfer with less than
/// 21000 gas, a zero gas limit or max fee, and a tip above the max fee.
pub fn build_unsigned(request: &TransferRequest) -> Result<UnsignedTx> {
    if request.chain_id == 0 {
        return Err(invalid("chain_id", "must not be 0"));
    }
    if request.recipient.is_zero() {
        return Err(invalid("recipient", "is the zero address"));
    }
    if request.amount.is_zero() {
        return Err(invalid("amount", "must be positive"));
    }
    if request.gas_limit == 0 {
        return Err(invalid("gas_limit", "must be positive"));
    }
    if request.max_fee_per_gas == 0 {
        return Err(invalid("max_fee_per_gas", "must be positive"));
    }
    if request.max_priority_fee_per_gas > request.max_fee_per_gas {
        return Err(invalid(
            "max_priority_fee_per_gas",
            "is above max_fee_per_gas",
        ));
    }
    let (to, value, input) = match request.asset.token() {
        None => {
            if request.gas_limit < NATIVE_TRANSFER_GAS {
                return Err(invalid("gas_limit", "below 21000, the cost of a transfer"));
            }
            (request.recipient, request.amount, Bytes::new())
        }
        Some(token) => {
            if request.recipient == token {
                return Err(invalid("recipient", "is the token contract itself"));
            }
            (
                token,
                U256::ZERO,
                transfer_calldata(request.recipient, request.amount),
            )
        }
    };
    UnsignedTx::from_eip1559(TxEip1559 {
        chain_id: request.chain_id,
        nonce: request.nonce,
        gas_limit: request.gas_limit,
        max_fee_per_gas: request.max_fee_per_gas,
        max_priority_fee_per_gas: request.max_priority_fee_per_gas,
        to: TxKind::Call(to),
        value,
        access_list: Default::default(),
        input,
    })
}
