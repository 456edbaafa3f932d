//! Coins for tests: previous transactions that pay a script, so a test can
//! build, check and sign spends without a node (feature `testing`).

use bitcoin::absolute::LockTime;
use bitcoin::transaction::Version;
use bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness};

use crate::utxo::build::Utxo;

/// A previous transaction paying `values` to `script`; `salt` makes its
/// (fake) input, and so its txid, unique.
pub fn funding_tx(script: &ScriptBuf, values: &[u64], salt: u32) -> Transaction {
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint {
                txid: bitcoin::hashes::Hash::all_zeros(),
                vout: salt,
            },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: values
            .iter()
            .map(|v| TxOut {
                value: Amount::from_sat(*v),
                script_pubkey: script.clone(),
            })
            .collect(),
    }
}

/// One coin per value, each paying `script` from its own funding transaction.
pub fn coins(script: &ScriptBuf, values: &[u64]) -> Vec<Utxo> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let prev_tx = funding_tx(script, &[*v], u32::try_from(i).unwrap_or(u32::MAX));
            Utxo {
                outpoint: OutPoint {
                    txid: prev_tx.compute_txid(),
                    vout: 0,
                },
                prev_tx,
            }
        })
        .collect()
}

/// Signatures of a local key over every input digest of a checked
/// transaction (`r || s`, as the threshold signers return them), standing
/// in for the cluster where a test needs a P2WPKH spend.
pub fn sign_locally(
    key: &k256::ecdsa::SigningKey,
    checked: &crate::utxo::check::CheckedUtxoTx,
) -> Vec<[u8; 64]> {
    use k256::ecdsa::signature::hazmat::PrehashSigner;
    checked
        .digests
        .iter()
        .filter_map(|d| {
            let s: Option<k256::ecdsa::Signature> = key.sign_prehash(d).ok();
            s.map(|s| s.to_bytes().into())
        })
        .collect()
}
