//! The signer's check of a PSBT against the withdrawals it approved
//! (docs/SECURITY.md case 11 for UTXO chains).
//!
//! The signer decodes the PSBT itself and refuses it unless:
//! - every input spends a coin of the wallet (its previous output pays one of
//!   the wallet's own scripts) proved by the whole previous transaction,
//!   whose txid must be the outpoint's, so values cannot be misreported;
//! - output `i` pays approved payout `i` exactly (script and amount), and any
//!   further output is at most one change output to the wallet, above dust;
//! - the fee (inputs minus outputs) gives every payout a share within its
//!   own approved fee cap;
//! - version 2, no lock time, RBF sequence, empty scriptSigs, sighash ALL
//!   (DEFAULT for P2TR coins).
//!
//! It then computes the digests to sign, one per input, itself: BIP143 for
//! a P2WPKH wallet, BIP341 key path (every input's amount and script) for a
//! P2TR one.

use std::collections::HashSet;

use bitcoin::psbt::Psbt;
use bitcoin::transaction::Version;
use bitcoin::{EcdsaSighashType, OutPoint, ScriptBuf, TapSighashType, Transaction, TxOut, Txid};

use crate::error::{ChainError, Result};
use crate::utxo::build::{MAX_INPUTS, MAX_PAYOUTS, Payout, RBF_SEQUENCE};
use crate::utxo::fees::{dust_threshold, fee_shares};

/// Largest PSBT accepted, bytes (each input carries its previous transaction).
pub const MAX_PSBT_LEN: usize = 4_000_000;

/// A PSBT that passed every check.
#[derive(Clone, Debug)]
pub struct CheckedUtxoTx {
    /// The unsigned transaction.
    pub tx: Transaction,
    /// Its txid.
    pub txid: Txid,
    /// The output each input spends, in input order (proved by txid).
    pub prevouts: Vec<TxOut>,
    /// The digest to sign for each input (BIP143, or BIP341 for P2TR).
    pub digests: Vec<[u8; 32]>,
    /// Fee, base units.
    pub fee: u64,
    /// Each payout's share of the fee.
    pub fee_shares: Vec<u64>,
    /// Change back to the wallet (0 if none).
    pub change: u64,
}

impl CheckedUtxoTx {
    /// The coins it spends.
    pub fn inputs(&self) -> impl Iterator<Item = OutPoint> + '_ {
        self.tx.input.iter().map(|i| i.previous_output)
    }
}

fn refused(msg: impl Into<String>) -> ChainError {
    ChainError::UtxoRefused(msg.into())
}

/// The output script the first input of `psbt` spends, as its previous
/// transaction proves it. An auditor who does not hold the wallet key (or
/// does not trust a claimed one) checks the PSBT with [`check_psbt`] against
/// this script: every input must then spend that same script and change
/// can only go back to it.
pub fn spent_script(psbt: &[u8]) -> Result<ScriptBuf> {
    if psbt.len() > MAX_PSBT_LEN {
        return Err(refused(format!(
            "PSBT of {} bytes exceeds {MAX_PSBT_LEN}",
            psbt.len()
        )));
    }
    let psbt = Psbt::deserialize(psbt).map_err(|e| refused(format!("not a PSBT: {e}")))?;
    let (txin, input) = psbt
        .unsigned_tx
        .input
        .first()
        .zip(psbt.inputs.first())
        .ok_or_else(|| refused("no inputs"))?;
    let op = txin.previous_output;
    let prev_tx = input
        .non_witness_utxo
        .as_ref()
        .filter(|t| t.compute_txid() == op.txid)
        .ok_or_else(|| refused("input 0: previous transaction missing or not its txid's"))?;
    prev_tx
        .output
        .get(op.vout as usize)
        .map(|o| o.script_pubkey.clone())
        .ok_or_else(|| refused(format!("input 0: {op} has no such output")))
}

/// The outputs of `psbt`'s unsigned transaction (script, amount in base
/// units), in order, checked for nothing else. An auditor matching a
/// batched transaction's outputs to the withdrawals that prepared it needs
/// them before [`check_psbt`] can be given the payouts in output order.
pub fn psbt_outputs(psbt: &[u8]) -> Result<Vec<(ScriptBuf, u64)>> {
    if psbt.len() > MAX_PSBT_LEN {
        return Err(refused(format!(
            "PSBT of {} bytes exceeds {MAX_PSBT_LEN}",
            psbt.len()
        )));
    }
    let psbt = Psbt::deserialize(psbt).map_err(|e| refused(format!("not a PSBT: {e}")))?;
    Ok(psbt
        .unsigned_tx
        .output
        .into_iter()
        .map(|o| (o.script_pubkey, o.value.to_sat()))
        .collect())
}

/// Decodes `psbt` and checks it against `payouts` (approved, in output
/// order) and the wallet's own scripts; returns the digests to sign.
pub fn check_psbt(
    psbt: &[u8],
    payouts: &[Payout],
    own_scripts: &[ScriptBuf],
) -> Result<CheckedUtxoTx> {
    if psbt.len() > MAX_PSBT_LEN {
        return Err(refused(format!(
            "PSBT of {} bytes exceeds {MAX_PSBT_LEN}",
            psbt.len()
        )));
    }
    if payouts.is_empty() || payouts.len() > MAX_PAYOUTS {
        return Err(refused(format!(
            "1 to {MAX_PAYOUTS} approved payouts, got {}",
            payouts.len()
        )));
    }
    let psbt = Psbt::deserialize(psbt).map_err(|e| refused(format!("not a PSBT: {e}")))?;
    let tx = &psbt.unsigned_tx;
    if tx.version != Version::TWO {
        return Err(refused(format!("version {} (expected 2)", tx.version.0)));
    }
    if tx.lock_time.to_consensus_u32() != 0 {
        return Err(refused(format!("lock time {} (expected 0)", tx.lock_time)));
    }
    if tx.input.is_empty() || tx.input.len() > MAX_INPUTS {
        return Err(refused(format!(
            "1 to {MAX_INPUTS} inputs, got {}",
            tx.input.len()
        )));
    }
    let prevouts = check_inputs(&psbt, own_scripts)?;
    let change = check_outputs(tx, payouts, own_scripts)?;

    let total_in = prevouts
        .iter()
        .try_fold(0u64, |a, o| a.checked_add(o.value.to_sat()));
    let total_out = tx
        .output
        .iter()
        .try_fold(0u64, |a, o| a.checked_add(o.value.to_sat()));
    let fee = match (total_in, total_out) {
        (Some(i), Some(o)) if i >= o => i - o,
        _ => return Err(refused("outputs exceed inputs (or overflow)")),
    };
    let shares = fee_shares(fee, payouts.len());
    for (n, (p, share)) in payouts.iter().zip(&shares).enumerate() {
        if *share > p.fee_cap {
            return Err(refused(format!(
                "fee {fee}: payout {n} (withdrawal {}) would pay {share}, above its approved fee cap {}",
                p.withdrawal_id, p.fee_cap
            )));
        }
    }
    let digests = crate::utxo::spend::digests_by_script(tx, &prevouts)?;
    Ok(CheckedUtxoTx {
        txid: tx.compute_txid(),
        tx: tx.clone(),
        prevouts,
        digests,
        fee,
        fee_shares: shares,
        change,
    })
}

/// Whether the coin an input spends is P2TR, as its previous transaction
/// says (the proof is checked below; this only picks the sighash rule).
fn psbt_prev_is_p2tr(input: &bitcoin::psbt::Input, op: OutPoint) -> bool {
    input
        .non_witness_utxo
        .as_ref()
        .and_then(|t| t.output.get(op.vout as usize))
        .is_some_and(|o| o.script_pubkey.is_p2tr())
}

fn check_inputs(psbt: &Psbt, own_scripts: &[ScriptBuf]) -> Result<Vec<TxOut>> {
    let tx = &psbt.unsigned_tx;
    let mut seen = HashSet::new();
    let mut prevouts = Vec::with_capacity(tx.input.len());
    for (i, (txin, input)) in tx.input.iter().zip(&psbt.inputs).enumerate() {
        let op = txin.previous_output;
        if !seen.insert(op) {
            return Err(refused(format!("input {i}: {op} spent twice")));
        }
        if !txin.script_sig.is_empty() || !txin.witness.is_empty() {
            return Err(refused(format!(
                "input {i}: scriptSig or witness already set"
            )));
        }
        if txin.sequence != RBF_SEQUENCE {
            return Err(refused(format!(
                "input {i}: sequence {:#x} (expected {:#x}, replaceable, no relative lock)",
                txin.sequence.0, RBF_SEQUENCE.0
            )));
        }
        // ECDSA inputs sign SIGHASH_ALL, taproot ones SIGHASH_DEFAULT
        // (the PSBT field absent): whatever else it says is refused.
        let taproot = psbt_prev_is_p2tr(input, op);
        match input.sighash_type {
            None => {}
            Some(t) if !taproot && t.ecdsa_hash_ty().ok() == Some(EcdsaSighashType::All) => {}
            Some(t) if taproot && t.taproot_hash_ty().ok() == Some(TapSighashType::Default) => {}
            Some(t) => {
                return Err(refused(format!(
                    "input {i}: sighash type {t} (only ALL is signed, DEFAULT for taproot)"
                )));
            }
        }
        let prev_tx = input.non_witness_utxo.as_ref().ok_or_else(|| {
            refused(format!(
                "input {i}: previous transaction missing (needed to prove the value)"
            ))
        })?;
        if prev_tx.compute_txid() != op.txid {
            return Err(refused(format!(
                "input {i}: previous transaction is not {}",
                op.txid
            )));
        }
        let prev = prev_tx
            .output
            .get(op.vout as usize)
            .ok_or_else(|| refused(format!("input {i}: {op} has no such output")))?;
        if !(prev.script_pubkey.is_p2wpkh() || prev.script_pubkey.is_p2tr())
            || !own_scripts.contains(&prev.script_pubkey)
        {
            return Err(refused(format!(
                "input {i}: {op} is not a coin of this wallet"
            )));
        }
        if input.witness_utxo.as_ref().is_some_and(|w| w != prev) {
            return Err(refused(format!(
                "input {i}: witness UTXO differs from the previous transaction"
            )));
        }
        prevouts.push(prev.clone());
    }
    Ok(prevouts)
}

/// Checks outputs against the payouts; returns the change amount.
fn check_outputs(tx: &Transaction, payouts: &[Payout], own_scripts: &[ScriptBuf]) -> Result<u64> {
    if tx.output.len() < payouts.len() {
        return Err(refused(format!(
            "{} outputs for {} approved payouts",
            tx.output.len(),
            payouts.len()
        )));
    }
    for (n, (out, p)) in tx.output.iter().zip(payouts).enumerate() {
        if out.script_pubkey != p.script_pubkey {
            return Err(refused(format!(
                "output {n} pays another script than withdrawal {}'s approved destination",
                p.withdrawal_id
            )));
        }
        if out.value.to_sat() != p.amount {
            return Err(refused(format!(
                "output {n}: amount {} but withdrawal {} approved {}",
                out.value.to_sat(),
                p.withdrawal_id,
                p.amount
            )));
        }
    }
    let extra = &tx.output[payouts.len()..];
    match extra {
        [] => Ok(0),
        [change] => {
            let n = payouts.len();
            if !own_scripts.contains(&change.script_pubkey) {
                return Err(refused(format!(
                    "output {n} is neither an approved payout nor change to this wallet"
                )));
            }
            let dust = dust_threshold(&change.script_pubkey);
            if change.value.to_sat() < dust {
                return Err(refused(format!(
                    "output {n}: change {} below dust {dust}",
                    change.value.to_sat()
                )));
            }
            Ok(change.value.to_sat())
        }
        _ => Err(refused(format!(
            "{} outputs beyond the {} approved payouts (at most one change output)",
            extra.len(),
            payouts.len()
        ))),
    }
}

/// Checks that `next` may replace `previous` (both already checked against
/// the same approvals): it spends every coin `previous` spent, so at most
/// one of them (and of every earlier version) can confirm, and pays a higher fee.
pub fn check_replacement(previous: &CheckedUtxoTx, next: &CheckedUtxoTx) -> Result<()> {
    let spent: HashSet<OutPoint> = next.inputs().collect();
    if let Some(op) = previous.inputs().find(|op| !spent.contains(op)) {
        return Err(refused(format!(
            "replacement does not spend {op}, which the transaction it replaces spends (both could confirm)"
        )));
    }
    if next.fee <= previous.fee {
        return Err(refused(format!(
            "replacement fee {} is not above the replaced fee {}",
            next.fee, previous.fee
        )));
    }
    Ok(())
}
