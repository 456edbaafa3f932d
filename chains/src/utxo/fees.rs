//! Transaction sizes, fees, dust and how a batch's fee is shared.
//!
//! Sizes are virtual bytes (BIP141 weight / 4, rounded up) of the worst case
//! the signer can produce: a P2WPKH input carries a witness of at most a
//! 72-byte DER signature plus sighash byte and a 33-byte key, a P2TR
//! key-path input one 64-byte BIP340 signature (SIGHASH_DEFAULT, no sighash
//! byte), so a signed transaction is never larger than estimated and never
//! pays less than the rate it was built for.

use bitcoin::Script;

/// Version, locktime, input and output counts, segwit marker and flag.
pub const TX_OVERHEAD_VBYTES: u64 = 11;
/// One P2WPKH input: outpoint, empty scriptSig, sequence (41 bytes) and its
/// witness (108 weight units / 4, rounded up).
pub const P2WPKH_INPUT_VBYTES: u64 = 68;
/// One P2TR key-path input: outpoint, empty scriptSig, sequence (41 bytes)
/// and its witness (one item of 64 bytes: 66 weight units), 230 weight
/// units / 4, rounded up.
pub const P2TR_KEY_PATH_INPUT_VBYTES: u64 = 58;
/// Core's dust relay fee, sat per 1,000 vbytes: an output worth less than
/// what spending it would cost at this rate is not relayed.
pub const DUST_RELAY_FEE_SAT_PER_KVB: u64 = 3_000;

/// Virtual size of an output paying `script`.
pub fn output_vbytes(script: &Script) -> u64 {
    // value (8) + script length (1 for scripts under 253 bytes) + script
    8 + 1 + script.len() as u64
}

/// Virtual size of an input spending an output locked by `spent` once
/// signed: P2TR by key path, anything else as P2WPKH (the wallets' two kinds).
pub fn input_vbytes(spent: &Script) -> u64 {
    if spent.is_p2tr() {
        P2TR_KEY_PATH_INPUT_VBYTES
    } else {
        P2WPKH_INPUT_VBYTES
    }
}

/// Virtual size of a transaction spending outputs locked by `spent` (one
/// input each) and paying `outputs`.
pub fn tx_vbytes<'a, 'b>(
    spent: impl IntoIterator<Item = &'a Script>,
    outputs: impl IntoIterator<Item = &'b Script>,
) -> u64 {
    TX_OVERHEAD_VBYTES
        + spent.into_iter().map(input_vbytes).sum::<u64>()
        + outputs.into_iter().map(output_vbytes).sum::<u64>()
}

/// The fee for `vbytes` at `rate` sat per 1,000 vbytes, rounded up.
pub fn fee_for(vbytes: u64, rate_sat_per_kvb: u64) -> u64 {
    (vbytes.saturating_mul(rate_sat_per_kvb)).div_ceil(1_000)
}

/// The smallest value an output paying `script` may carry (Bitcoin Core's
/// `GetDustThreshold` at the default dust relay fee).
pub fn dust_threshold(script: &Script) -> u64 {
    let spend = if script.is_witness_program() { 67 } else { 148 };
    fee_for(output_vbytes(script) + spend, DUST_RELAY_FEE_SAT_PER_KVB)
}

/// Each payout's share of a batch's fee: equal parts, the remainder (less
/// than one satoshi per payout) on the first. Builder and signers compute it
/// the same way, and every share must be within its own withdrawal's cap.
pub fn fee_shares(fee: u64, payouts: usize) -> Vec<u64> {
    if payouts == 0 {
        return Vec::new();
    }
    let n = payouts as u64;
    let mut shares = vec![fee / n; payouts];
    shares[0] += fee % n;
    shares
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::ScriptBuf;
    use bitcoin::hashes::Hash;

    #[test]
    fn dust_matches_bitcoin_core() {
        let p2wpkh = ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::all_zeros());
        let p2pkh = ScriptBuf::new_p2pkh(&bitcoin::PubkeyHash::all_zeros());
        assert_eq!(dust_threshold(&p2wpkh), 294);
        assert_eq!(dust_threshold(&p2pkh), 546);
    }

    #[test]
    fn shares_sum_to_the_fee() {
        for (fee, n) in [(0, 1), (1000, 3), (7, 5), (u64::MAX, 7)] {
            let s = fee_shares(fee, n);
            assert_eq!(s.len(), n);
            assert_eq!(s.iter().fold(0u128, |a, b| a + *b as u128), fee as u128);
        }
        assert!(fee_shares(10, 0).is_empty());
    }

    #[test]
    fn one_in_two_out_is_141_vbytes() {
        let p2wpkh = ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::all_zeros());
        let two = [p2wpkh.as_script(), p2wpkh.as_script()];
        assert_eq!(tx_vbytes([p2wpkh.as_script()], two), 141);
        // A P2TR key-path input is 10 vbytes smaller.
        let p2tr =
            ScriptBuf::new_p2tr_tweaked(bitcoin::key::TweakedPublicKey::dangerous_assume_tweaked(
                bitcoin::XOnlyPublicKey::from_slice(&[2; 32]).unwrap(),
            ));
        assert_eq!(input_vbytes(&p2tr), 58);
        assert_eq!(tx_vbytes([p2tr.as_script()], two), 131);
        assert_eq!(fee_for(141, 1_000), 141);
        assert_eq!(fee_for(141, 1_500), 212);
    }
}
