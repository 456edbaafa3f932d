//! How a wallet's coins are locked and unlocked: the one thing that differs
//! between a threshold-ECDSA wallet and a threshold-Schnorr (FROST
//! secp256k1-tr) wallet on a Bitcoin-format chain. Everything else (coin
//! selection, the PSBT, the signers' checks of outputs and fees, broadcast)
//! is the same.
//!
//! | wallet key | output | digest per input | witness |
//! |---|---|---|---|
//! | SEC1 secp256k1, 33 bytes (ECDSA) | P2WPKH (bech32) | BIP143, `SIGHASH_ALL` | `[DER(r, low s) ‖ 0x01, key]` |
//! | x-only, 32 bytes (BIP340: the taproot output key `Q` a FROST secp256k1-tr group signs under) | P2TR `OP_1 Q` (bech32m) | BIP341 key path, `SIGHASH_DEFAULT` (commits to every input's amount and script) | one 64-byte signature |
//!
//! The key's encoding decides ([`wallet_spend`]): each scheme's public key
//! has its own length, so a key can only be read one way. A FROST
//! secp256k1-tr group key is already tweaked (BIP86, no script tree) by the
//! ciphersuite, so it is the output key itself; [`super::taproot`] derives it
//! from the internal key for an independent check.

use std::fmt;

use bitcoin::key::{TweakedPublicKey, XOnlyPublicKey};
use bitcoin::secp256k1::{Message, Secp256k1, ecdsa, schnorr};
use bitcoin::sighash::SighashCache;
use bitcoin::{EcdsaSighashType, ScriptBuf, TapSighashType, Transaction, TxOut, Witness};

use crate::error::{ChainError, Result};
use crate::utxo::address::compressed_key;

/// One way of locking a wallet's coins to its key and unlocking them. (The
/// digests are chosen by the script a coin is locked with,
/// [`digests_by_script`], since a signer checking a PSBT knows the scripts
/// it spends first.)
pub trait WalletSpend: fmt::Debug + Send + Sync {
    /// The wallet's output script.
    fn script(&self) -> ScriptBuf;

    /// The witness of an input from the group's 64-byte signature over its
    /// `digest`, after checking the signature against the wallet key.
    fn witness(&self, input: usize, digest: &[u8; 32], signature: &[u8; 64]) -> Result<Witness>;
}

/// The spend of a wallet key: P2WPKH for a SEC1 key (33 or 65 bytes), P2TR
/// key path for an x-only key (32 bytes).
pub fn wallet_spend(public_key: &[u8]) -> Result<Box<dyn WalletSpend>> {
    match public_key.len() {
        32 => Ok(Box::new(TaprootKeySpend::new(public_key)?)),
        _ => Ok(Box::new(SegwitV0Spend::new(public_key)?)),
    }
}

fn refused(msg: impl Into<String>) -> ChainError {
    ChainError::UtxoRefused(msg.into())
}

/// P2WPKH coins of an ECDSA key.
#[derive(Clone, Debug)]
pub struct SegwitV0Spend {
    key: bitcoin::key::CompressedPublicKey,
}

impl SegwitV0Spend {
    /// `sec1`: the wallet key, SEC1 (33 or 65 bytes).
    pub fn new(sec1: &[u8]) -> Result<Self> {
        Ok(Self {
            key: compressed_key(sec1)?,
        })
    }
}

impl WalletSpend for SegwitV0Spend {
    fn script(&self) -> ScriptBuf {
        ScriptBuf::new_p2wpkh(&self.key.wpubkey_hash())
    }

    fn witness(&self, input: usize, digest: &[u8; 32], signature: &[u8; 64]) -> Result<Witness> {
        // Threshold ECDSA may return a high s: Bitcoin's standardness rules
        // (BIP146 LOW_S) refuse it.
        let mut sig = ecdsa::Signature::from_compact(signature)
            .map_err(|e| ChainError::InvalidSignature(format!("input {input}: {e}")))?;
        sig.normalize_s();
        Secp256k1::verification_only()
            .verify_ecdsa(&Message::from_digest(*digest), &sig, &self.key.0)
            .map_err(|_| {
                ChainError::InvalidSignature(format!(
                    "input {input}: does not verify under the wallet key"
                ))
            })?;
        let sig = bitcoin::ecdsa::Signature {
            signature: sig,
            sighash_type: EcdsaSighashType::All,
        };
        Ok(Witness::p2wpkh(&sig, &self.key.0))
    }
}

/// P2TR coins spent by key path, of a Schnorr key that is the taproot
/// output key.
#[derive(Clone, Debug)]
pub struct TaprootKeySpend {
    output_key: TweakedPublicKey,
}

impl TaprootKeySpend {
    /// `output_key`: the x-only (32-byte) taproot output key the wallet's
    /// group signs under.
    pub fn new(output_key: &[u8]) -> Result<Self> {
        let key = XOnlyPublicKey::from_slice(output_key)
            .map_err(|_| ChainError::InvalidPublicKey("not a 32-byte x-only secp256k1 key"))?;
        Ok(Self {
            output_key: TweakedPublicKey::dangerous_assume_tweaked(key),
        })
    }
}

impl WalletSpend for TaprootKeySpend {
    fn script(&self) -> ScriptBuf {
        ScriptBuf::new_p2tr_tweaked(self.output_key)
    }

    fn witness(&self, input: usize, digest: &[u8; 32], signature: &[u8; 64]) -> Result<Witness> {
        let signature = schnorr::Signature::from_slice(signature)
            .map_err(|e| ChainError::InvalidSignature(format!("input {input}: {e}")))?;
        Secp256k1::verification_only()
            .verify_schnorr(
                &signature,
                &Message::from_digest(*digest),
                &self.output_key.to_x_only_public_key(),
            )
            .map_err(|_| {
                ChainError::InvalidSignature(format!(
                    "input {input}: does not verify under the wallet's taproot output key"
                ))
            })?;
        Ok(Witness::p2tr_key_spend(&bitcoin::taproot::Signature {
            signature,
            sighash_type: TapSighashType::Default,
        }))
    }
}

/// The digests of `tx`'s inputs by the kind of script they spend (every
/// input of one transaction spends one wallet's script): BIP143 for
/// P2WPKH, BIP341 key path for P2TR.
pub(crate) fn digests_by_script(tx: &Transaction, prevouts: &[TxOut]) -> Result<Vec<[u8; 32]>> {
    if prevouts.iter().all(|p| p.script_pubkey.is_p2tr()) {
        return crate::utxo::taproot::taproot_digests(tx, prevouts);
    }
    if prevouts.iter().all(|p| p.script_pubkey.is_p2wpkh()) {
        return bip143_digests(tx, prevouts);
    }
    Err(refused(
        "inputs spend different kinds of scripts (P2WPKH and P2TR): one transaction spends one wallet's coins",
    ))
}

/// The BIP143 digest (`SIGHASH_ALL`) of every input of `tx`, each spending
/// the P2WPKH output `prevouts[i]`.
fn bip143_digests(tx: &Transaction, prevouts: &[TxOut]) -> Result<Vec<[u8; 32]>> {
    let mut cache = SighashCache::new(tx);
    prevouts
        .iter()
        .enumerate()
        .map(|(i, prev)| {
            cache
                .p2wpkh_signature_hash(i, &prev.script_pubkey, prev.value, EcdsaSighashType::All)
                .map(bitcoin::hashes::Hash::to_byte_array)
                .map_err(|e| refused(format!("input {i}: no BIP143 digest: {e}")))
        })
        .collect()
}
