//! Assembling the signed transaction from one signature per input (ECDSA
//! for P2WPKH wallets, BIP340 for P2TR ones: [`crate::utxo::spend`]).
//!
//! Threshold ECDSA may return a high `s`; Bitcoin's standardness rules
//! (BIP146 LOW_S) refuse it, so `s` is normalised. Each signature is then
//! verified against the digest of its input and the wallet key before the
//! transaction is returned: a bad partial cannot produce a transaction that
//! the node would reject after broadcast.

use bitcoin::consensus::encode::serialize;
use bitcoin::{Txid, Wtxid};

use crate::error::{ChainError, Result};
use crate::utxo::check::CheckedUtxoTx;

/// A signed transaction ready to broadcast.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedUtxoTx {
    /// Consensus-serialised bytes (`sendrawtransaction`).
    pub raw: Vec<u8>,
    /// Transaction id (unchanged by signing).
    pub txid: Txid,
    /// Witness transaction id.
    pub wtxid: Wtxid,
    /// Virtual size.
    pub vbytes: u64,
}

/// Puts `signatures` (64 bytes, one per input, in input order: ECDSA
/// `r || s`, or BIP340 for a taproot wallet) made by the wallet key
/// `public_key` into `checked`'s transaction, each verified first
/// ([`crate::utxo::spend`]).
pub fn assemble_signed(
    checked: &CheckedUtxoTx,
    signatures: &[[u8; 64]],
    public_key: &[u8],
) -> Result<SignedUtxoTx> {
    if signatures.len() != checked.digests.len() {
        return Err(ChainError::InvalidSignature(format!(
            "{} signatures for {} inputs",
            signatures.len(),
            checked.digests.len()
        )));
    }
    let spend = crate::utxo::spend::wallet_spend(public_key)?;
    let mut tx = checked.tx.clone();
    for (i, ((input, sig), digest)) in tx
        .input
        .iter_mut()
        .zip(signatures)
        .zip(&checked.digests)
        .enumerate()
    {
        input.witness = spend.witness(i, digest, sig)?;
    }
    Ok(SignedUtxoTx {
        raw: serialize(&tx),
        txid: tx.compute_txid(),
        wtxid: tx.compute_wtxid(),
        vbytes: tx.vsize() as u64,
    })
}
