//! What an unsigned transaction moves, read from the transaction alone.

use alloy_primitives::{Address, U256};
use serde::{Deserialize, Serialize};

use crate::error::{ChainError, Result};
use crate::evm::tx::codec::{UnsignedTx, decode_unsigned};
use crate::evm::tx::erc20::decode_transfer_calldata;

/// A transfer decoded from an unsigned transaction.
///
/// Native transfer (empty calldata): `token = None`, `recipient = to`,
/// `amount = value`. ERC-20 transfer: `token = Some(to)`, `value = 0`,
/// `recipient` and `amount` from the `transfer(address,uint256)` calldata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecodedTransfer {
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// The call target (the recipient, or the token contract).
    pub to: Address,
    /// Wei sent with the call.
    pub value: U256,
    /// The token contract for an ERC-20 transfer.
    pub token: Option<Address>,
    /// Who receives the asset.
    pub recipient: Address,
    /// How much, in the asset's base units.
    pub amount: U256,
    /// Account nonce.
    pub nonce: u64,
    /// Gas limit.
    pub gas_limit: u64,
    /// EIP-1559 max fee per gas, wei.
    pub max_fee_per_gas: u128,
    /// EIP-1559 max priority fee per gas, wei.
    pub max_priority_fee_per_gas: u128,
    /// The most the transaction can pay in fees: `gas_limit * max_fee_per_gas`.
    pub fee_cap_wei: U256,
}

/// Reads the transfer an unsigned transaction performs. Calldata other than
/// none or ERC-20 `transfer(address,uint256)` is an error naming it; so is an
/// ERC-20 transfer that also sends wei.
pub fn decode_transfer(unsigned: &UnsignedTx) -> Result<DecodedTransfer> {
    let tx = unsigned.as_eip1559();
    let to = unsigned.to();
    let (token, recipient, amount) = if tx.input.is_empty() {
        (None, to, tx.value)
    } else {
        let (recipient, amount) = decode_transfer_calldata(&tx.input)?;
        if !tx.value.is_zero() {
            return Err(ChainError::UnsupportedCalldata(
                "ERC-20 transfer that also sends wei".to_owned(),
            ));
        }
        (Some(to), recipient, amount)
    };
    Ok(DecodedTransfer {
        chain_id: tx.chain_id,
        to,
        value: tx.value,
        token,
        recipient,
        amount,
        nonce: tx.nonce,
        gas_limit: tx.gas_limit,
        max_fee_per_gas: tx.max_fee_per_gas,
        max_priority_fee_per_gas: tx.max_priority_fee_per_gas,
        fee_cap_wei: U256::from(tx.gas_limit) * U256::from(tx.max_fee_per_gas),
    })
}

/// [`decode_unsigned`] then [`decode_transfer`]: what a signer runs on the
/// bytes it is asked to sign.
pub fn decode_unsigned_transfer(bytes: &[u8]) -> Result<(UnsignedTx, DecodedTransfer)> {
    let unsigned = decode_unsigned(bytes)?;
    let transfer = decode_transfer(&unsigned)?;
    Ok((unsigned, transfer))
}
