//! Chain adapters: transaction building, parsing, digests and RPC clients.
//! EVM ([`evm`]) and Bitcoin-format UTXO chains ([`utxo`]). Pure library, shared by the coordinator
//! (builds and broadcasts) and the signers (parse and check what they sign).
//!
//! # EVM formats
//!
//! - **Address**: 20 bytes, `keccak256(X || Y)[12..]` of the uncompressed
//!   secp256k1 key; text `0x` + 40 hex digits, EIP-55 checksum when mixed case
//!   ([`evm::address`]).
//! - **Amount**: an integer of base units (`U256`); human text `"1.5"` with at
//!   most `decimals` fractional digits, converted exactly ([`evm::asset`]).
//! - **Unsigned transaction** (what signers receive): EIP-1559,
//!   `0x02 || rlp([chain_id, nonce, max_priority_fee_per_gas, max_fee_per_gas,
//!   gas_limit, to, value, data, access_list])`, always a call with an empty
//!   access list ([`evm::tx::codec`]).
//! - **Signing digest**: `keccak256` of the unsigned bytes, 32 bytes, signed
//!   as a prehash.
//! - **ERC-20 transfer**: `to` = token contract, `value` = 0, `data` =
//!   `a9059cbb || pad32(recipient) || be32(amount)` ([`evm::tx::erc20`]).
//! - **Signed transaction**: `0x02 || rlp([..., access_list, y_parity, r, s])`
//!   with low `s`; transaction hash = `keccak256` of it ([`evm::signature`]).
//!
//! # Signer-side flow
//!
//! ```no_run
//! # fn demo(bytes: &[u8], approved: &custos_chains::evm::tx::ExpectedTransfer)
//! #     -> Result<[u8; 32], custos_chains::ChainError> {
//! use custos_chains::evm::tx::{check_against, decode_unsigned_transfer, signing_digest};
//! let (unsigned, transfer) = decode_unsigned_transfer(bytes)?; // strict parse
//! check_against(&transfer, approved)?;                          // names the first difference
//! Ok(signing_digest(&unsigned))                                 // what to sign
//! # }
//! ```

#![deny(missing_docs)]

pub mod adapter;
pub mod error;
pub mod evm;
pub mod family;
#[cfg(feature = "rpc")]
mod jsonrpc;
pub mod message;
pub mod utxo;

pub use adapter::{
    ApprovedTransfer, ChainAdapter, CheckedDetail, CheckedTransaction, EvmAdapter, UtxoAdapter,
};
pub use alloy_primitives::{Address, B256, Bytes, U256};
pub use error::{ChainError, Result};
pub use family::{ChainFamily, family_of};
pub use message::MessageAdapter;
