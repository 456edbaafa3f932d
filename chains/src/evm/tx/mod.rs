//! EIP-1559 transfer transactions: building, canonical encoding, decoding back
//! into a transfer, and comparison with an approved transfer.
//!
//! - [`request`]: a [`TransferRequest`] becomes an [`UnsignedTx`].
//! - [`codec`]: the unsigned wire form `0x02 || rlp([chain_id, nonce,
//!   max_priority_fee_per_gas, max_fee_per_gas, gas_limit, to, value, data,
//!   access_list])` and its signing digest `keccak256` of it.
//! - [`erc20`]: `transfer(address,uint256)` calldata.
//! - [`transfer`]: what an unsigned transaction moves ([`DecodedTransfer`]).
//! - [`check`]: [`check_against`] an approved [`ExpectedTransfer`].
//! - [`replace`]: fee bumps of a stuck transaction ([`check_replacement`]).

pub mod check;
pub mod codec;
pub mod erc20;
pub mod replace;
pub mod request;
pub mod transfer;

pub use check::{ExpectedTransfer, Mismatch, check_against};
pub use codec::{
    MAX_UNSIGNED_TX_LEN, UnsignedTx, decode_unsigned, encode_unsigned, signing_digest,
};
pub use replace::{
    ReplacementFees, ReplacementMismatch, bumped_fees, check_replacement, with_fees,
};
pub use request::{TransferRequest, build_unsigned};
pub use transfer::{DecodedTransfer, decode_transfer, decode_unsigned_transfer};
