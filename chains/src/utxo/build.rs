//! Building the unsigned transaction of approved payouts: coin selection,
//! change and fee, as a PSBT (BIP174) for the signers.
//!
//! Coin selection: branch and bound over the spendable coins for a set that
//! pays the payouts and the fee without change, within the cost of making and
//! later spending a change output (Bitcoin Core's first strategy); failing
//! that, largest coins first until the payouts, the fee and a change output
//! above dust are covered. Coins an earlier version of the transaction spent
//! are always kept (a replacement must conflict with what it replaces). A
//! leftover below the dust threshold goes to the fee instead of an output
//! that no node would relay.
//!
//! Every input carries its whole previous transaction (`non_witness_utxo`),
//! so a signer can check input values against their txids instead of taking
//! them from the coordinator: a segwit v0 signature commits only to its own
//! input's value, and lying about the values across inputs would otherwise
//! hide a fee.

use bitcoin::absolute::LockTime;
use bitcoin::psbt::{Psbt, PsbtSighashType};
use bitcoin::transaction::Version;
use bitcoin::{
    Amount, EcdsaSighashType, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid,
    Witness,
};

use crate::error::{ChainError, Result};
use crate::utxo::fees::{
    P2WPKH_INPUT_VBYTES, TX_OVERHEAD_VBYTES, dust_threshold, fee_for, fee_shares, input_vbytes,
    output_vbytes, tx_vbytes,
};

/// Most inputs one transaction spends (keeps signing sessions and the
/// transaction's size bounded; standard transactions stay under 100 kvB).
pub const MAX_INPUTS: usize = 200;
/// Most payouts in one batched transaction.
pub const MAX_PAYOUTS: usize = 200;
/// Sequence of every input: signals replace-by-fee (BIP125).
pub const RBF_SEQUENCE: Sequence = Sequence::ENABLE_RBF_NO_LOCKTIME;
/// Branch-and-bound search steps before falling back to largest-first.
const BNB_TRIES: usize = 100_000;

/// A coin the wallet can spend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Utxo {
    /// Where it is.
    pub outpoint: OutPoint,
    /// The transaction that created it (its txid must be the outpoint's).
    pub prev_tx: Transaction,
}

impl Utxo {
    /// The output being spent, `None` if the outpoint is not in `prev_tx`.
    pub fn txout(&self) -> Option<&TxOut> {
        self.prev_tx.output.get(self.outpoint.vout as usize)
    }

    /// Its value in base units (0 if the outpoint is not in `prev_tx`).
    pub fn value(&self) -> u64 {
        self.txout().map_or(0, |o| o.value.to_sat())
    }
}

/// One approved withdrawal to pay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payout {
    /// The withdrawal it pays.
    pub withdrawal_id: String,
    /// The destination's output script.
    pub script_pubkey: ScriptBuf,
    /// Amount, base units.
    pub amount: u64,
    /// The most fee this withdrawal may pay, base units (its approved cap).
    pub fee_cap: u64,
}

/// What to build.
#[derive(Clone, Debug)]
pub struct BuildRequest<'a> {
    /// Coins that may be spent (confirmed, not held by another transaction).
    pub coins: &'a [Utxo],
    /// Coins that must be spent: those of the transaction this one replaces.
    pub required: &'a [OutPoint],
    /// The approved payouts, one output each, in this order.
    pub payouts: &'a [Payout],
    /// Where change goes: the wallet's own script.
    pub change_script: &'a ScriptBuf,
    /// Fee rate, base units per 1,000 vbytes.
    pub fee_rate_sat_per_kvb: u64,
}

/// An unsigned transaction ready for the signers.
#[derive(Clone, Debug)]
pub struct UnsignedUtxoTx {
    /// The PSBT (BIP174 binary), what signers are sent.
    pub psbt: Vec<u8>,
    /// Its txid (segwit txids do not change when signatures are added).
    pub txid: Txid,
    /// Coins spent, in input order.
    pub inputs: Vec<OutPoint>,
    /// Fee, base units.
    pub fee: u64,
    /// Each payout's share of the fee, in payout order.
    pub fee_shares: Vec<u64>,
    /// Change back to the wallet, if any.
    pub change: Option<u64>,
    /// Estimated virtual size once signed (an upper bound).
    pub vbytes: u64,
}

fn refuse(field: &'static str, reason: impl Into<String>) -> ChainError {
    ChainError::InvalidRequest {
        field,
        reason: reason.into(),
    }
}

/// Selects coins, adds change and builds the PSBT.
pub fn build_unsigned(req: &BuildRequest<'_>) -> Result<UnsignedUtxoTx> {
    validate(req)?;
    let rate = req.fee_rate_sat_per_kvb;
    let outputs: Vec<&bitcoin::Script> = req
        .payouts
        .iter()
        .map(|p| p.script_pubkey.as_script())
        .collect();
    let pay: u64 = req.payouts.iter().map(|p| p.amount).sum();
    let base_vbytes = tx_vbytes([], outputs.iter().copied());
    let change_out = output_vbytes(req.change_script);
    let change_dust = dust_threshold(req.change_script);
    let selected = select(req, pay, base_vbytes, change_out, change_dust)?;

    let total_in: u64 = selected.iter().map(|u| u.value()).sum();
    let inputs_vbytes: u64 = selected.iter().map(|u| coin_vbytes(u)).sum();
    let no_change_fee = fee_for(base_vbytes + inputs_vbytes, rate);
    let with_change_fee = fee_for(base_vbytes + change_out + inputs_vbytes, rate);
    let (fee, change) = match total_in.checked_sub(pay + with_change_fee) {
        Some(c) if c >= change_dust => (with_change_fee, Some(c)),
        _ => (total_in - pay, None),
    };
    debug_assert!(fee >= no_change_fee);
    let shares = fee_shares(fee, req.payouts.len());
    let cap: u64 = req.payouts.iter().map(|p| p.fee_cap).sum();
    if let Some((p, share)) = req
        .payouts
        .iter()
        .zip(&shares)
        .find(|(p, s)| **s > p.fee_cap)
    {
        return Err(refuse(
            "fee_cap",
            format!(
                "fee {fee} (share {share} for withdrawal {}) at {rate} sat/kvB exceeds its cap {} (batch cap {cap})",
                p.withdrawal_id, p.fee_cap
            ),
        ));
    }

    let mut output: Vec<TxOut> = req
        .payouts
        .iter()
        .map(|p| TxOut {
            value: Amount::from_sat(p.amount),
            script_pubkey: p.script_pubkey.clone(),
        })
        .collect();
    if let Some(c) = change {
        output.push(TxOut {
            value: Amount::from_sat(c),
            script_pubkey: req.change_script.clone(),
        });
    }
    let tx = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: selected
            .iter()
            .map(|u| TxIn {
                previous_output: u.outpoint,
                script_sig: ScriptBuf::new(),
                sequence: RBF_SEQUENCE,
                witness: Witness::new(),
            })
            .collect(),
        output,
    };
    let txid = tx.compute_txid();
    let vbytes = TX_OVERHEAD_VBYTES
        + inputs_vbytes
        + tx.output
            .iter()
            .map(|o| output_vbytes(&o.script_pubkey))
            .sum::<u64>();
    let mut psbt = Psbt::from_unsigned_tx(tx).map_err(|e| refuse("psbt", e.to_string()))?;
    for (input, coin) in psbt.inputs.iter_mut().zip(&selected) {
        input.witness_utxo = coin.txout().cloned();
        input.non_witness_utxo = Some(coin.prev_tx.clone());
        // Taproot coins sign SIGHASH_DEFAULT: the field stays absent.
        if !coin.txout().is_some_and(|o| o.script_pubkey.is_p2tr()) {
            input.sighash_type = Some(PsbtSighashType::from(EcdsaSighashType::All));
        }
    }
    Ok(UnsignedUtxoTx {
        psbt: psbt.serialize(),
        txid,
        inputs: selected.iter().map(|u| u.outpoint).collect(),
        fee,
        fee_shares: shares,
        change,
        vbytes,
    })
}

fn validate(req: &BuildRequest<'_>) -> Result<()> {
    if req.payouts.is_empty() || req.payouts.len() > MAX_PAYOUTS {
        return Err(refuse(
            "payouts",
            format!("1 to {MAX_PAYOUTS} payouts, got {}", req.payouts.len()),
        ));
    }
    if req.fee_rate_sat_per_kvb == 0 {
        return Err(refuse("fee_rate", "must be positive"));
    }
    for p in req.payouts {
        let dust = dust_threshold(&p.script_pubkey);
        if p.amount < dust {
            return Err(refuse(
                "amount",
                format!(
                    "withdrawal {}: {} is below the dust threshold {dust}",
                    p.withdrawal_id, p.amount
                ),
            ));
        }
    }
    if req.payouts.iter().map(|p| p.amount as u128).sum::<u128>() > 21_000_000 * 100_000_000 * 4 {
        return Err(refuse("amount", "payouts exceed any coin's supply"));
    }
    for c in req.coins {
        if c.prev_tx.compute_txid() != c.outpoint.txid || c.txout().is_none() {
            return Err(refuse(
                "coins",
                format!(
                    "{}: previous transaction does not match the outpoint",
                    c.outpoint
                ),
            ));
        }
    }
    for r in req.required {
        if !req.coins.iter().any(|c| c.outpoint == *r) {
            return Err(refuse(
                "required",
                format!("{r}: spent by the replaced transaction but not among the coins"),
            ));
        }
    }
    Ok(())
}

/// The virtual size of spending `coin` once signed.
fn coin_vbytes(coin: &Utxo) -> u64 {
    coin.txout()
        .map_or(P2WPKH_INPUT_VBYTES, |o| input_vbytes(&o.script_pubkey))
}

fn select<'a>(
    req: &BuildRequest<'a>,
    pay: u64,
    base_vbytes: u64,
    change_vbytes: u64,
    change_dust: u64,
) -> Result<Vec<&'a Utxo>> {
    let rate = req.fee_rate_sat_per_kvb;
    let input_fee = |u: &Utxo| fee_for(coin_vbytes(u), rate);
    let effective = |u: &Utxo| u.value().saturating_sub(input_fee(u));
    let target = pay + fee_for(base_vbytes, rate);
    // Making change costs its output now and an input later.
    let cost_of_change = fee_for(change_vbytes + input_vbytes(req.change_script), rate);

    let mut chosen: Vec<&Utxo> = req
        .coins
        .iter()
        .filter(|c| req.required.contains(&c.outpoint))
        .collect();
    let mut rest: Vec<&Utxo> = req
        .coins
        .iter()
        .filter(|c| !req.required.contains(&c.outpoint) && effective(c) > 0)
        .collect();
    rest.sort_by(|a, b| {
        effective(b)
            .cmp(&effective(a))
            .then(a.outpoint.cmp(&b.outpoint))
    });

    if chosen.is_empty()
        && let Some(exact) = branch_and_bound(&rest, target, cost_of_change, &effective)
    {
        return Ok(exact);
    }
    let mut have: u64 = chosen.iter().map(|u| effective(u)).sum();
    let want_with_change = target + fee_for(change_vbytes, rate) + change_dust;
    let mut iter = rest.into_iter();
    while have < want_with_change {
        match iter.next() {
            Some(c) if chosen.len() < MAX_INPUTS => {
                have += effective(c);
                chosen.push(c);
            }
            _ => break,
        }
    }
    if have < target {
        let available: u64 = req.coins.iter().map(|c| c.value()).sum();
        return Err(ChainError::InsufficientFunds {
            needed: target + chosen.iter().map(|u| input_fee(u)).sum::<u64>(),
            available,
        });
    }
    if chosen.len() > MAX_INPUTS {
        return Err(refuse(
            "coins",
            format!("more than {MAX_INPUTS} inputs needed"),
        ));
    }
    Ok(chosen)
}

/// Depth-first search, largest coins first, for a set whose effective value
/// lies in `[target, target + window]`; the least excess found wins.
fn branch_and_bound<'a>(
    coins: &[&'a Utxo],
    target: u64,
    window: u64,
    effective: &dyn Fn(&Utxo) -> u64,
) -> Option<Vec<&'a Utxo>> {
    let values: Vec<u64> = coins.iter().map(|c| effective(c)).collect();
    let mut remaining = vec![0u64; values.len() + 1];
    for i in (0..values.len()).rev() {
        remaining[i] = remaining[i + 1] + values[i];
    }
    if remaining[0] < target {
        return None;
    }
    let mut search = Search {
        values: &values,
        remaining: &remaining,
        target,
        window,
        stack: Vec::new(),
        best: None,
        tries: 0,
    };
    search.walk(0, 0);
    search
        .best
        .map(|(_, idx)| idx.into_iter().map(|i| coins[i]).collect())
}

/// State of one branch-and-bound search.
struct Search<'v> {
    values: &'v [u64],
    /// `remaining[i]` = sum of `values[i..]`.
    remaining: &'v [u64],
    target: u64,
    window: u64,
    stack: Vec<usize>,
    best: Option<(u64, Vec<usize>)>,
    tries: usize,
}

impl Search<'_> {
    fn walk(&mut self, i: usize, sum: u64) {
        self.tries += 1;
        if self.tries > BNB_TRIES || self.best.as_ref().is_some_and(|b| b.0 == 0) {
            return;
        }
        if sum >= self.target {
            let excess = sum - self.target;
            if excess <= self.window
                && self.stack.len() <= MAX_INPUTS
                && self.best.as_ref().is_none_or(|b| excess < b.0)
            {
                self.best = Some((excess, self.stack.clone()));
            }
            return;
        }
        if i >= self.values.len() || sum + self.remaining[i] < self.target {
            return;
        }
        self.stack.push(i);
        self.walk(i + 1, sum + self.values[i]);
        self.stack.pop();
        self.walk(i + 1, sum);
    }
}
