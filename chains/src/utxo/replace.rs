//! Replace-by-fee (BIP125) for a sent transaction that stays unmined: the
//! same coins, the same payouts, a higher fee taken from the change.
//!
//! The replacement spends exactly the coins of the version it replaces, so
//! at most one version can ever confirm, and its inputs keep their order
//! (one signing session each, as before). Nodes accept it only if it pays
//! at least the replaced fee plus the incremental relay fee for its own
//! size (BIP125 rule 4); it is built at the higher of that, the node's
//! estimate and the replaced rate raised by the configured percentage. The
//! fee may grow only out of the change: when the change is gone (or would
//! fall below dust, which then goes to the fee), no replacement within the
//! same coins exists, and the builder says so.

use bitcoin::psbt::Psbt;

use crate::error::{ChainError, Result};
use crate::utxo::build::{BuildRequest, Payout, UnsignedUtxoTx, Utxo, build_unsigned};
use crate::utxo::fees::fee_for;

/// Bitcoin Core's default incremental relay fee, sat per 1,000 vbytes (the
/// node's own figure, `getnetworkinfo.incrementalfee`, is used when known).
pub const INCREMENTAL_RELAY_FEE_SAT_PER_KVB: u64 = 1_000;

/// The smallest fee a replacement of `vbytes` may pay to replace one paying
/// `replaced_fee` (BIP125 rule 4).
pub fn min_replacement_fee(replaced_fee: u64, vbytes: u64, incremental_sat_per_kvb: u64) -> u64 {
    replaced_fee.saturating_add(fee_for(vbytes, incremental_sat_per_kvb))
}

/// The coins a PSBT spends, with their previous transactions (as the PSBT
/// carries them; each must match its outpoint's txid).
pub fn psbt_coins(psbt: &[u8]) -> Result<Vec<Utxo>> {
    let psbt =
        Psbt::deserialize(psbt).map_err(|e| ChainError::UtxoRefused(format!("not a PSBT: {e}")))?;
    psbt.unsigned_tx
        .input
        .iter()
        .zip(&psbt.inputs)
        .enumerate()
        .map(|(i, (txin, input))| {
            let op = txin.previous_output;
            let prev_tx = input
                .non_witness_utxo
                .clone()
                .filter(|t| t.compute_txid() == op.txid && t.output.len() > op.vout as usize)
                .ok_or_else(|| {
                    ChainError::UtxoRefused(format!(
                        "input {i}: previous transaction missing or not {op}'s"
                    ))
                })?;
            Ok(Utxo {
                outpoint: op,
                prev_tx,
            })
        })
        .collect()
}

/// The fee a PSBT pays (inputs, as its previous transactions prove them,
/// minus outputs).
pub fn psbt_fee(psbt: &[u8]) -> Result<u64> {
    let coins = psbt_coins(psbt)?;
    let decoded =
        Psbt::deserialize(psbt).map_err(|e| ChainError::UtxoRefused(format!("not a PSBT: {e}")))?;
    let total_in: u64 = coins.iter().map(Utxo::value).sum();
    let total_out: u64 = decoded
        .unsigned_tx
        .output
        .iter()
        .map(|o| o.value.to_sat())
        .sum();
    total_in
        .checked_sub(total_out)
        .ok_or_else(|| ChainError::UtxoRefused("outputs exceed inputs".into()))
}

/// The fee the signed transaction `raw` pays when it spends the coins of
/// `psbt` (any version of one transaction: they spend the same coins).
pub fn signed_fee(psbt: &[u8], raw: &[u8]) -> Result<u64> {
    let coins = psbt_coins(psbt)?;
    let tx: bitcoin::Transaction = bitcoin::consensus::deserialize(raw)
        .map_err(|e| ChainError::MalformedTx(format!("signed transaction: {e}")))?;
    let spent: std::collections::HashSet<_> = coins.iter().map(|c| c.outpoint).collect();
    if tx.input.len() != coins.len() || tx.input.iter().any(|i| !spent.contains(&i.previous_output))
    {
        return Err(ChainError::UtxoRefused(
            "the signed transaction spends other coins than the PSBT".into(),
        ));
    }
    let total_in: u64 = coins.iter().map(Utxo::value).sum();
    let total_out: u64 = tx.output.iter().map(|o| o.value.to_sat()).sum();
    total_in
        .checked_sub(total_out)
        .ok_or_else(|| ChainError::UtxoRefused("outputs exceed inputs".into()))
}

/// What a replacement is built from.
#[derive(Clone, Debug)]
pub struct ReplacementRequest<'a> {
    /// The version being replaced (the current one).
    pub replaced: &'a [u8],
    /// The highest fee any earlier attempt paid (an abandoned replacement
    /// some signers may have signed): the new one must pay more than it too.
    pub fee_floor: u64,
    /// The approved payouts, in output order, as in the replaced version.
    pub payouts: &'a [Payout],
    /// The wallet's own script (change).
    pub change_script: &'a bitcoin::ScriptBuf,
    /// The lowest rate to build at (the node's estimate and relay minimum,
    /// and the replaced rate raised by the bump percentage), sat per 1,000 vbytes.
    pub min_rate_sat_per_kvb: u64,
    /// The node's incremental relay fee, sat per 1,000 vbytes.
    pub incremental_sat_per_kvb: u64,
}

/// Builds the replacement (module docs). Fails with the builder's error
/// (`fee_cap`: the cap leaves no room; `InsufficientFunds`: the change is
/// spent) when none exists.
pub fn build_replacement(req: &ReplacementRequest<'_>) -> Result<UnsignedUtxoTx> {
    let coins = psbt_coins(req.replaced)?;
    let required: Vec<_> = coins.iter().map(|c| c.outpoint).collect();
    let replaced_fee = psbt_fee(req.replaced)?.max(req.fee_floor);
    let mut rate = req.min_rate_sat_per_kvb.max(1);
    // The size can only shrink (a change output dropped), so a few steps
    // reach a rate whose fee clears rule 4.
    for _ in 0..4 {
        let built = build_unsigned(&BuildRequest {
            coins: &coins,
            required: &required,
            payouts: req.payouts,
            change_script: req.change_script,
            fee_rate_sat_per_kvb: rate,
        })?;
        let needed = min_replacement_fee(replaced_fee, built.vbytes, req.incremental_sat_per_kvb);
        if built.inputs != required {
            return Err(ChainError::InvalidRequest {
                field: "coins",
                reason: "the replacement would not spend exactly the replaced coins".into(),
            });
        }
        if built.fee >= needed {
            return Ok(built);
        }
        let missing = needed - built.fee;
        rate = rate.saturating_add((missing.saturating_mul(1_000)).div_ceil(built.vbytes.max(1)));
    }
    Err(ChainError::InvalidRequest {
        field: "fee_rate",
        reason: format!("no rate up to {rate} sat/kvB pays the replacement fee rule"),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::utxo::check::{check_psbt, check_replacement};
    use crate::utxo::testing::coins;
    use bitcoin::ScriptBuf;
    use bitcoin::hashes::Hash;

    fn script(b: u8) -> ScriptBuf {
        ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array([b; 20]))
    }

    fn payout(cap: u64) -> Payout {
        Payout {
            withdrawal_id: "w-1".into(),
            script_pubkey: script(2),
            amount: 150_000,
            fee_cap: cap,
        }
    }

    #[test]
    fn a_replacement_spends_the_same_coins_pays_the_same_and_clears_rule_4() {
        let own = script(1);
        let wallet_coins = coins(&own, &[100_000, 90_000]);
        let p = [payout(20_000)];
        let first = build_unsigned(&BuildRequest {
            coins: &wallet_coins,
            required: &[],
            payouts: &p,
            change_script: &own,
            fee_rate_sat_per_kvb: 1_000,
        })
        .unwrap();
        assert_eq!(first.inputs.len(), 2);
        assert_eq!(psbt_fee(&first.psbt).unwrap(), first.fee);
        let next = build_replacement(&ReplacementRequest {
            replaced: &first.psbt,
            fee_floor: 0,
            payouts: &p,
            change_script: &own,
            min_rate_sat_per_kvb: 1_150,
            incremental_sat_per_kvb: INCREMENTAL_RELAY_FEE_SAT_PER_KVB,
        })
        .unwrap();
        assert_eq!(next.inputs, first.inputs);
        assert!(next.fee >= min_replacement_fee(first.fee, next.vbytes, 1_000));
        assert_eq!(
            next.change.unwrap() + next.fee,
            first.change.unwrap() + first.fee
        );
        // The signers' own checks accept it as a replacement.
        let a = check_psbt(&first.psbt, &p, std::slice::from_ref(&own)).unwrap();
        let b = check_psbt(&next.psbt, &p, std::slice::from_ref(&own)).unwrap();
        check_replacement(&a, &b).unwrap();
        assert!(
            check_replacement(&b, &a).is_err(),
            "a lower fee never replaces"
        );
        // Above an abandoned attempt's fee too.
        let again = build_replacement(&ReplacementRequest {
            replaced: &first.psbt,
            fee_floor: next.fee,
            payouts: &p,
            change_script: &own,
            min_rate_sat_per_kvb: 1_000,
            incremental_sat_per_kvb: 1_000,
        })
        .unwrap();
        assert!(again.fee >= next.fee + fee_for(again.vbytes, 1_000));
    }

    #[test]
    fn the_cap_or_the_change_ends_the_bumps_with_a_reason() {
        let own = script(1);
        let wallet_coins = coins(&own, &[200_000]);
        let p = [payout(3_000)];
        let first = build_unsigned(&BuildRequest {
            coins: &wallet_coins,
            required: &[],
            payouts: &p,
            change_script: &own,
            fee_rate_sat_per_kvb: 10_000,
        })
        .unwrap();
        let e = build_replacement(&ReplacementRequest {
            replaced: &first.psbt,
            fee_floor: 0,
            payouts: &p,
            change_script: &own,
            min_rate_sat_per_kvb: 30_000,
            incremental_sat_per_kvb: 1_000,
        })
        .unwrap_err();
        assert!(e.to_string().contains("exceeds its cap"), "{e}");
        // No change left to take the fee from.
        let exact = coins(&own, &[150_000 + 110]);
        let tight = build_unsigned(&BuildRequest {
            coins: &exact,
            required: &[],
            payouts: &[payout(1_000_000)],
            change_script: &own,
            fee_rate_sat_per_kvb: 1_000,
        })
        .unwrap();
        assert!(tight.change.is_none());
        let e = build_replacement(&ReplacementRequest {
            replaced: &tight.psbt,
            fee_floor: 0,
            payouts: &[payout(1_000_000)],
            change_script: &own,
            min_rate_sat_per_kvb: 2_000,
            incremental_sat_per_kvb: 1_000,
        })
        .unwrap_err();
        assert!(matches!(e, ChainError::InsufficientFunds { .. }), "{e}");
    }
}
