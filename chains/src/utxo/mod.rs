//! Bitcoin-format (UTXO) chains: Bitcoin and Litecoin, P2WPKH wallets
//! (threshold ECDSA); P2TR key-path spends for threshold Schnorr wallets are
//! in [`taproot`].
//!
//! # Formats
//!
//! - **Address**: the wallet's is P2WPKH of its compressed key
//!   (`hash160(key)`, bech32 with the network's prefix); destinations may be
//!   P2PKH, P2SH, P2WPKH, P2WSH or P2TR of the same network ([`address`]).
//! - **Amount**: an integer of base units (satoshi, litoshi), 8 decimals.
//! - **Unsigned transaction** (what signers receive): a BIP174 PSBT whose
//!   inputs carry their previous transactions; output `i` pays approved
//!   payout `i`, then at most one change output ([`build`], [`check`]).
//! - **Signing digests**: one BIP143 digest per input, sighash ALL, signed
//!   as a prehash; one signing session per input. A FROST secp256k1-tr
//!   wallet's coins are P2TR (bech32m) and sign BIP341 key-path digests
//!   ([`spend`] decides by the wallet key).
//! - **Signed transaction**: the segwit serialisation with a
//!   `[DER(r, low s) || 0x01, key]` witness per input, or one 64-byte BIP340
//!   signature per P2TR input ([`finalize`]).
//!
//! # Signer-side flow
//!
//! ```no_run
//! # fn demo(psbt: &[u8], approved: &[custos_chains::utxo::Payout], own: &[bitcoin::ScriptBuf])
//! #     -> Result<Vec<[u8; 32]>, custos_chains::ChainError> {
//! use custos_chains::utxo::check_psbt;
//! let checked = check_psbt(psbt, approved, own)?; // decodes, checks every input and output
//! Ok(checked.digests)                             // what to sign, one per input
//! # }
//! ```

pub mod address;
pub mod build;
pub mod check;
pub mod fees;
pub mod finalize;
pub mod network;
pub mod replace;
#[cfg(feature = "rpc")]
pub mod rpc;
pub mod spend;
pub mod taproot;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use address::{UtxoAddress, address_of, parse_address, wallet_address, wallet_script};
pub use bitcoin::{OutPoint, Transaction, Txid};
pub use build::{BuildRequest, Payout, UnsignedUtxoTx, Utxo, build_unsigned};
pub use check::{CheckedUtxoTx, check_psbt, check_replacement, spent_script};
pub use finalize::{SignedUtxoTx, assemble_signed};
pub use network::UtxoNetwork;
pub use replace::{ReplacementRequest, build_replacement, psbt_coins, psbt_fee};
pub use spend::{WalletSpend, wallet_spend};
