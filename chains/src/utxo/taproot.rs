//! Taproot (BIP341) key-path spends for threshold Schnorr (FROST) wallets.
//!
//! # Formats
//!
//! - **Address**: P2TR with no script tree (BIP86) of the wallet's
//!   internal key `P` (x-only, 32 bytes): the output key is
//!   `Q = lift_x(P) + int(hash_TapTweak(P))·G`, the address is the witness v1
//!   program `Q` in bech32m with the network's prefix ([`p2tr_address`]).
//!   The FROST ciphersuite `frost-secp256k1-tr` applies exactly this tweak to
//!   the key its DKG produces, so the group signs under `Q` directly; the
//!   tests check both computations agree.
//! - **Signing digests**: one BIP341 signature message per input, key path,
//!   `SIGHASH_DEFAULT` ([`taproot_digests`]). Unlike BIP143 each digest
//!   commits to the amounts and scripts of *every* input, so the signer
//!   needs all prevouts: a coordinator lying about any input's amount makes
//!   every signature invalid instead of silently burning the difference as fee.
//! - **Signed transaction**: each input's witness is the 64-byte BIP340
//!   signature alone (no sighash byte for `SIGHASH_DEFAULT`)
//!   ([`assemble_taproot_signed`]); every signature is verified against its
//!   digest and the prevout's output key before the transaction is returned.

use bitcoin::absolute::LockTime;
use bitcoin::consensus::encode::serialize;
use bitcoin::hashes::Hash;
use bitcoin::key::{TapTweak, TweakedPublicKey, XOnlyPublicKey};
use bitcoin::secp256k1::{Message, Secp256k1, schnorr};
use bitcoin::sighash::{Prevouts, SighashCache, TapSighashType};
use bitcoin::transaction::Version;
use bitcoin::{OutPoint, Script, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness};

use crate::error::{ChainError, Result};
use crate::utxo::address::{UtxoAddress, address_of};
use crate::utxo::finalize::SignedUtxoTx;
use crate::utxo::network::UtxoNetwork;

fn x_only(key: &[u8]) -> Result<XOnlyPublicKey> {
    XOnlyPublicKey::from_slice(key)
        .map_err(|_| ChainError::InvalidPublicKey("not a 32-byte x-only secp256k1 key"))
}

/// The taproot output key (x-only) of internal key `internal_key` with no
/// script tree (BIP86).
pub fn p2tr_output_key(internal_key: &[u8]) -> Result<[u8; 32]> {
    let secp = Secp256k1::verification_only();
    let (tweaked, _parity) = x_only(internal_key)?.tap_tweak(&secp, None);
    Ok(tweaked.to_x_only_public_key().serialize())
}

/// The P2TR output script paying to internal key `internal_key` with no
/// script tree (BIP86).
pub fn p2tr_script(internal_key: &[u8]) -> Result<ScriptBuf> {
    let secp = Secp256k1::verification_only();
    Ok(ScriptBuf::new_p2tr(&secp, x_only(internal_key)?, None))
}

/// The P2TR address of internal key `internal_key` (BIP86) on `network`.
pub fn p2tr_address(network: UtxoNetwork, internal_key: &[u8]) -> Result<UtxoAddress> {
    let script_pubkey = p2tr_script(internal_key)?;
    let text = address_of(network, &script_pubkey)
        .ok_or(ChainError::InvalidPublicKey("cannot be encoded as P2TR"))?;
    Ok(UtxoAddress {
        script_pubkey,
        text,
    })
}

/// The output key a P2TR script pays to, `None` for other scripts.
pub fn output_key_of(script: &Script) -> Option<[u8; 32]> {
    if !script.is_p2tr() {
        return None;
    }
    script.as_bytes().get(2..34)?.try_into().ok()
}

/// An unsigned spend of P2TR coins: the transaction, the output each input
/// spends, and what to sign for each input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaprootSpend {
    /// The unsigned transaction (empty witnesses).
    pub tx: Transaction,
    /// The output each input spends, in input order.
    pub prevouts: Vec<TxOut>,
    /// The BIP341 key-path digest (`SIGHASH_DEFAULT`) to sign per input.
    pub digests: Vec<[u8; 32]>,
}

fn refused(msg: impl Into<String>) -> ChainError {
    ChainError::UtxoRefused(msg.into())
}

/// Builds the spend of `inputs` (coin and the output it is) to `outputs`:
/// version 2, lock time 0, every input replaceable (BIP125).
pub fn unsigned_taproot_spend(
    inputs: &[(OutPoint, TxOut)],
    outputs: Vec<TxOut>,
) -> Result<TaprootSpend> {
    if inputs.is_empty() || outputs.is_empty() {
        return Err(refused("a spend needs at least one input and one output"));
    }
    let tx = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: inputs
            .iter()
            .map(|(outpoint, _)| TxIn {
                previous_output: *outpoint,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: Witness::new(),
            })
            .collect(),
        output: outputs,
    };
    let prevouts: Vec<TxOut> = inputs.iter().map(|(_, o)| o.clone()).collect();
    let digests = taproot_digests(&tx, &prevouts)?;
    Ok(TaprootSpend {
        tx,
        prevouts,
        digests,
    })
}

/// The BIP341 key-path signature digest (`SIGHASH_DEFAULT`) of every input
/// of `tx`; `prevouts[i]` is the output input `i` spends, and every one must
/// be P2TR.
pub fn taproot_digests(tx: &Transaction, prevouts: &[TxOut]) -> Result<Vec<[u8; 32]>> {
    if prevouts.len() != tx.input.len() {
        return Err(refused(format!(
            "{} prevouts for {} inputs: BIP341 digests commit to every input's prevout",
            prevouts.len(),
            tx.input.len()
        )));
    }
    if let Some(i) = prevouts
        .iter()
        .position(|p| output_key_of(&p.script_pubkey).is_none())
    {
        return Err(refused(format!("input {i}: prevout is not P2TR")));
    }
    let mut cache = SighashCache::new(tx);
    (0..tx.input.len())
        .map(|i| {
            cache
                .taproot_key_spend_signature_hash(
                    i,
                    &Prevouts::All(prevouts),
                    TapSighashType::Default,
                )
                .map(|h| h.to_byte_array())
                .map_err(|e| refused(format!("input {i}: {e}")))
        })
        .collect()
}

/// Puts `signatures` (64-byte BIP340, one per input, in input order) into
/// `tx` as key-path witnesses, after checking each against its input's
/// digest and the output key of the coin it spends.
pub fn assemble_taproot_signed(
    tx: &Transaction,
    prevouts: &[TxOut],
    signatures: &[[u8; 64]],
) -> Result<SignedUtxoTx> {
    let digests = taproot_digests(tx, prevouts)?;
    if signatures.len() != digests.len() {
        return Err(ChainError::InvalidSignature(format!(
            "{} signatures for {} inputs",
            signatures.len(),
            digests.len()
        )));
    }
    let secp = Secp256k1::verification_only();
    let mut tx = tx.clone();
    for (i, ((input, sig), (digest, prevout))) in tx
        .input
        .iter_mut()
        .zip(signatures)
        .zip(digests.iter().zip(prevouts))
        .enumerate()
    {
        let key = output_key_of(&prevout.script_pubkey)
            .ok_or_else(|| refused(format!("input {i}: prevout is not P2TR")))?;
        let key = TweakedPublicKey::dangerous_assume_tweaked(x_only(&key)?);
        let signature = schnorr::Signature::from_slice(sig)
            .map_err(|e| ChainError::InvalidSignature(format!("input {i}: {e}")))?;
        secp.verify_schnorr(
            &signature,
            &Message::from_digest(*digest),
            &key.to_x_only_public_key(),
        )
        .map_err(|_| {
            ChainError::InvalidSignature(format!(
                "input {i}: does not verify under the output key it spends"
            ))
        })?;
        input.witness = Witness::p2tr_key_spend(&bitcoin::taproot::Signature {
            signature,
            sighash_type: TapSighashType::Default,
        });
    }
    Ok(SignedUtxoTx {
        raw: serialize(&tx),
        txid: tx.compute_txid(),
        wtxid: tx.compute_wtxid(),
        vbytes: tx.vsize() as u64,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// BIP86's first test vector (account 0, first receiving address):
    /// internal key, output key and address.
    #[test]
    fn bip86_vector() {
        let internal =
            hex::decode("cc8a4bc64d897bddc5fbc2f670f7a8ba0b386779106cf1223c6fc5d7cd6fc115")
                .unwrap();
        assert_eq!(
            hex::encode(p2tr_output_key(&internal).unwrap()),
            "a60869f0dbcf1dc659c9cecbaf8050135ea9e8cdc487053f1dc6880949dc684c"
        );
        assert_eq!(
            p2tr_address(UtxoNetwork::Bitcoin, &internal).unwrap().text,
            "bc1p5cyxnuxmeuwuvkwfem96lqzszd02n6xdcjrs20cac6yqjjwudpxqkedrcr"
        );
        assert!(p2tr_address(UtxoNetwork::Bitcoin, &[0u8; 32]).is_err());
    }
}
