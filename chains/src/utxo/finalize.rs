//! Assembling the signed transaction from one ECDSA signature per input.
//!
//! Threshold ECDSA may return a high `s`; Bitcoin's standardness rules
//! (BIP146 LOW_S) refuse it, so `s` is normalised. Each signature is then
//! verified against the digest of its input and the wallet key before the
//! transaction is returned: a bad partial cannot produce a transaction that
//! the node would reject after broadcast.

use bitcoin::consensus::encode::serialize;
use bitcoin::secp256k1::{Message, Secp256k1, ecdsa};
use bitcoin::{EcdsaSighashType, Txid, Witness, Wtxid};

use crate::error::{ChainError, Result};
use crate::utxo::address::compressed_key;
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

/// Puts `signatures` (`r || s`, one per input, in input order) made by the
/// wallet key `sec1` into `checked`'s transaction.
pub fn assemble_signed(
    checked: &CheckedUtxoTx,
    signatures: &[[u8; 64]],
    sec1: &[u8],
) -> Result<SignedUtxoTx> {
    if signatures.len() != checked.digests.len() {
        return Err(ChainError::InvalidSignature(format!(
            "{} signatures for {} inputs",
            signatures.len(),
            checked.digests.len()
        )));
    }
    let key = compressed_key(sec1)?;
    let secp = Secp256k1::verification_only();
    let mut tx = checked.tx.clone();
    for (i, ((input, sig), digest)) in tx
        .input
        .iter_mut()
        .zip(signatures)
        .zip(&checked.digests)
        .enumerate()
    {
        let mut sig = ecdsa::Signature::from_compact(sig)
            .map_err(|e| ChainError::InvalidSignature(format!("input {i}: {e}")))?;
        sig.normalize_s();
        secp.verify_ecdsa(&Message::from_digest(*digest), &sig, &key.0)
            .map_err(|_| {
                ChainError::InvalidSignature(format!(
                    "input {i}: does not verify under the wallet key"
                ))
            })?;
        let sig = bitcoin::ecdsa::Signature {
            signature: sig,
            sighash_type: EcdsaSighashType::All,
        };
        input.witness = Witness::p2wpkh(&sig, &key.0);
    }
    Ok(SignedUtxoTx {
        raw: serialize(&tx),
        txid: tx.compute_txid(),
        wtxid: tx.compute_wtxid(),
        vbytes: tx.vsize() as u64,
    })
}
