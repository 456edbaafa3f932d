#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! UTXO transactions built, checked and signed by the adapter, verified by
//! Bitcoin Core's own script interpreter (libbitcoinconsensus) with Bitcoin
//! network parameters, and every way a rogue coordinator could alter a PSBT
//! refused by the signer-side check, naming what is wrong.

use bitcoin::absolute::LockTime;
use bitcoin::psbt::{Psbt, PsbtSighashType};
use bitcoin::{Amount, EcdsaSighashType, ScriptBuf, Sequence, TxOut};
use custos_chains::ChainError;
use custos_chains::utxo::{
    BuildRequest, CheckedUtxoTx, Payout, UnsignedUtxoTx, Utxo, UtxoNetwork, assemble_signed,
    build_unsigned, check_psbt, check_replacement, parse_address, wallet_address,
};
use k256::ecdsa::SigningKey;
use k256::ecdsa::signature::hazmat::PrehashSigner;
use proptest::prelude::*;

const NET: UtxoNetwork = UtxoNetwork::Bitcoin;

struct Wallet {
    key: SigningKey,
    sec1: Vec<u8>,
    script: ScriptBuf,
}

fn wallet(seed: u8) -> Wallet {
    let key = SigningKey::from_slice(&[seed; 32]).unwrap();
    let sec1 = key.verifying_key().to_sec1_bytes().to_vec();
    let script = wallet_address(NET, &sec1).unwrap().script_pubkey;
    Wallet { key, sec1, script }
}

use custos_chains::utxo::testing::{coins, funding_tx as funding};

fn payout(id: &str, address: &str, amount: u64, fee_cap: u64) -> Payout {
    Payout {
        withdrawal_id: id.into(),
        script_pubkey: parse_address(NET, address).unwrap().script_pubkey,
        amount,
        fee_cap,
    }
}

const DEST_P2WPKH: &str = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4";
const DEST_P2TR: &str = "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0";
const DEST_P2PKH: &str = "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa";

fn build(w: &Wallet, coins: &[Utxo], payouts: &[Payout], rate: u64) -> UnsignedUtxoTx {
    build_unsigned(&BuildRequest {
        coins,
        required: &[],
        payouts,
        change_script: &w.script,
        fee_rate_sat_per_kvb: rate,
    })
    .unwrap()
}

/// The signers' part: each digest signed as a prehash (as the threshold
/// signers do); `r || s` as the cluster returns it.
fn sign_all(w: &Wallet, checked: &CheckedUtxoTx) -> Vec<[u8; 64]> {
    checked
        .digests
        .iter()
        .map(|d| {
            let sig: k256::ecdsa::Signature = w.key.sign_prehash(d).unwrap();
            sig.to_bytes().into()
        })
        .collect()
}

/// Every input verified by Bitcoin Core's interpreter (all pre-taproot flags).
fn consensus_verify(raw: &[u8], checked: &CheckedUtxoTx) {
    for (i, prev) in checked.prevouts.iter().enumerate() {
        bitcoinconsensus::verify(
            prev.script_pubkey.as_bytes(),
            prev.value.to_sat(),
            raw,
            None,
            i,
        )
        .unwrap_or_else(|e| panic!("input {i} fails Bitcoin's consensus rules: {e:?}"));
    }
}

#[test]
fn several_inputs_change_and_three_destination_types_verify_under_bitcoin_consensus() {
    let w = wallet(1);
    let coins = coins(&w.script, &[40_000, 25_000, 90_000, 1_000]);
    let payouts = [
        payout("w-1", DEST_P2WPKH, 60_000, 5_000),
        payout("w-2", DEST_P2TR, 30_000, 5_000),
        payout("w-3", DEST_P2PKH, 20_000, 5_000),
    ];
    let unsigned = build(&w, &coins, &payouts, 10_000);
    assert!(
        unsigned.inputs.len() >= 2,
        "{} inputs",
        unsigned.inputs.len()
    );
    let checked = check_psbt(&unsigned.psbt, &payouts, std::slice::from_ref(&w.script)).unwrap();
    assert_eq!(checked.txid, unsigned.txid);
    assert_eq!(checked.fee, unsigned.fee);
    assert_eq!(checked.digests.len(), unsigned.inputs.len());
    assert_eq!(Some(checked.change), unsigned.change.or(Some(0)));
    let signed = assemble_signed(&checked, &sign_all(&w, &checked), &w.sec1).unwrap();
    consensus_verify(&signed.raw, &checked);
    // The estimate is an upper bound: the fee rate paid is at least the one asked.
    assert!(
        signed.vbytes <= unsigned.vbytes,
        "{} > {}",
        signed.vbytes,
        unsigned.vbytes
    );
    assert!(unsigned.fee * 1000 >= signed.vbytes * 10_000);
    assert_eq!(signed.txid, unsigned.txid);
}

#[test]
fn a_signature_over_another_digest_or_key_is_refused_before_broadcast() {
    let w = wallet(2);
    let coins = coins(&w.script, &[100_000]);
    let payouts = [payout("w-1", DEST_P2WPKH, 50_000, 5_000)];
    let unsigned = build(&w, &coins, &payouts, 2_000);
    let checked = check_psbt(&unsigned.psbt, &payouts, std::slice::from_ref(&w.script)).unwrap();
    let other = wallet(3);
    let e = assemble_signed(&checked, &sign_all(&other, &checked), &w.sec1).unwrap_err();
    assert!(e.to_string().contains("input 0: does not verify"), "{e}");
    let e = assemble_signed(&checked, &[], &w.sec1).unwrap_err();
    assert!(e.to_string().contains("0 signatures for 1 inputs"), "{e}");
    // A high-s signature (as threshold ECDSA may return) is normalised.
    let sig: k256::ecdsa::Signature = w.key.sign_prehash(&checked.digests[0]).unwrap();
    let (r, s) = sig.split_scalars();
    let high = k256::ecdsa::Signature::from_scalars(r, -*s).unwrap();
    let signed = assemble_signed(&checked, &[high.to_bytes().into()], &w.sec1).unwrap();
    consensus_verify(&signed.raw, &checked);
}

#[test]
fn exact_match_needs_no_change() {
    let w = wallet(4);
    // 1 input, 1 P2WPKH output at 1 sat/vB: 110 vbytes; the coin pays exactly.
    let coins = coins(&w.script, &[50_110, 7_000_000]);
    let payouts = [payout("w-1", DEST_P2WPKH, 50_000, 1_000)];
    let unsigned = build(&w, &coins, &payouts, 1_000);
    assert_eq!(unsigned.change, None);
    assert_eq!(unsigned.inputs, vec![coins[0].outpoint]);
    assert_eq!(unsigned.fee, 110);
}

#[test]
fn insufficient_funds_dust_and_fee_above_cap_are_clear_errors() {
    let w = wallet(5);
    let coins = coins(&w.script, &[10_000, 5_000]);
    let e = build_unsigned(&BuildRequest {
        coins: &coins,
        required: &[],
        payouts: &[payout("w-1", DEST_P2WPKH, 50_000, 5_000)],
        change_script: &w.script,
        fee_rate_sat_per_kvb: 1_000,
    })
    .unwrap_err();
    assert!(
        matches!(
            e,
            ChainError::InsufficientFunds {
                available: 15_000,
                ..
            }
        ),
        "{e}"
    );
    let e = build_unsigned(&BuildRequest {
        coins: &coins,
        required: &[],
        payouts: &[payout("w-1", DEST_P2WPKH, 100, 5_000)],
        change_script: &w.script,
        fee_rate_sat_per_kvb: 1_000,
    })
    .unwrap_err();
    assert!(e.to_string().contains("dust"), "{e}");
    let e = build_unsigned(&BuildRequest {
        coins: &coins,
        required: &[],
        payouts: &[payout("w-1", DEST_P2WPKH, 5_000, 100)],
        change_script: &w.script,
        fee_rate_sat_per_kvb: 5_000,
    })
    .unwrap_err();
    assert!(e.to_string().contains("exceeds its cap 100"), "{e}");
}

/// Re-encodes a PSBT after `edit`.
fn tampered(unsigned: &UnsignedUtxoTx, edit: impl FnOnce(&mut Psbt)) -> Vec<u8> {
    let mut psbt = Psbt::deserialize(&unsigned.psbt).unwrap();
    edit(&mut psbt);
    psbt.serialize()
}

#[test]
fn a_rogue_coordinators_psbt_is_refused_naming_what_differs() {
    let w = wallet(6);
    let own = std::slice::from_ref(&w.script);
    let coins = coins(&w.script, &[200_000, 150_000]);
    let payouts = [payout("w-1", DEST_P2WPKH, 120_000, 3_000)];
    let unsigned = build(&w, &coins, &payouts, 2_000);
    assert!(unsigned.change.is_some());
    let attacker = parse_address(NET, DEST_P2TR).unwrap().script_pubkey;

    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "2 outputs beyond the 1 approved payouts",
            tampered(&unsigned, |p| {
                let last = p.unsigned_tx.output.last_mut().unwrap();
                last.value = Amount::from_sat(last.value.to_sat() - 10_000);
                p.unsigned_tx.output.push(TxOut {
                    value: Amount::from_sat(10_000),
                    script_pubkey: attacker.clone(),
                });
                p.outputs.push(Default::default());
            }),
        ),
        (
            "above its approved fee cap 3000",
            tampered(&unsigned, |p| {
                let last = p.unsigned_tx.output.last_mut().unwrap();
                last.value = Amount::from_sat(last.value.to_sat() - 50_000);
            }),
        ),
        (
            "output 0 pays another script",
            tampered(&unsigned, |p| {
                p.unsigned_tx.output[0].script_pubkey = attacker.clone()
            }),
        ),
        (
            "output 0: amount 120001",
            tampered(&unsigned, |p| {
                p.unsigned_tx.output[0].value = Amount::from_sat(120_001)
            }),
        ),
        (
            "neither an approved payout nor change",
            tampered(&unsigned, |p| {
                p.unsigned_tx.output.last_mut().unwrap().script_pubkey = attacker.clone()
            }),
        ),
        (
            "previous transaction missing",
            tampered(&unsigned, |p| p.inputs[0].non_witness_utxo = None),
        ),
        (
            "previous transaction is not",
            tampered(&unsigned, |p| {
                // A previous transaction that claims more value than the real one.
                let fake = funding(&w.script, &[900_000], 77);
                p.inputs[0].non_witness_utxo = Some(fake.clone());
                p.inputs[0].witness_utxo = Some(fake.output[0].clone());
            }),
        ),
        (
            "witness UTXO differs",
            tampered(&unsigned, |p| {
                p.inputs[0].witness_utxo.as_mut().unwrap().value = Amount::from_sat(1);
            }),
        ),
        (
            "sighash type",
            tampered(&unsigned, |p| {
                p.inputs[0].sighash_type = Some(PsbtSighashType::from(
                    EcdsaSighashType::SinglePlusAnyoneCanPay,
                ));
            }),
        ),
        (
            "lock time",
            tampered(&unsigned, |p| {
                p.unsigned_tx.lock_time = LockTime::from_height(900_000).unwrap()
            }),
        ),
        (
            "sequence",
            tampered(&unsigned, |p| {
                p.unsigned_tx.input[0].sequence = Sequence(0x0040_0010)
            }),
        ),
        ("not a PSBT", b"psbt\xff garbage".to_vec()),
    ];
    for (expected, bytes) in cases {
        let e = check_psbt(&bytes, &payouts, own).unwrap_err().to_string();
        assert!(e.contains(expected), "expected {expected:?} in {e:?}");
    }

    // A coin that is not the wallet's (another key's) is refused as an input.
    let stranger = wallet(7);
    let foreign = self::coins(&stranger.script, &[500_000]);
    let unsigned = build(&stranger, &foreign, &payouts, 2_000);
    let e = check_psbt(&unsigned.psbt, &payouts, own)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a coin of this wallet"), "{e}");
}

#[test]
fn batched_payouts_each_pay_a_share_within_their_own_cap() {
    let w = wallet(8);
    let own = std::slice::from_ref(&w.script);
    let coins = coins(&w.script, &[1_000_000]);
    let payouts: Vec<Payout> = (0..5)
        .map(|i| payout(&format!("w-{i}"), DEST_P2WPKH, 10_000 + i, 2_000))
        .collect();
    let batched = build(&w, &coins, &payouts, 10_000);
    let checked = check_psbt(&batched.psbt, &payouts, own).unwrap();
    assert_eq!(checked.fee_shares.len(), 5);
    assert_eq!(checked.fee_shares.iter().sum::<u64>(), checked.fee);
    consensus_verify(
        &assemble_signed(&checked, &sign_all(&w, &checked), &w.sec1)
            .unwrap()
            .raw,
        &checked,
    );
    // Unbatched, each would pay the whole overhead, input and change itself.
    let single = build(&w, &coins, &payouts[..1], 10_000);
    assert!(
        checked.fee_shares[1] * 2 < single.fee,
        "{:?} vs {}",
        checked.fee_shares,
        single.fee
    );
    // One payout's cap too low for its share fails the whole batch, naming it.
    let mut tight = payouts.clone();
    tight[3].fee_cap = 10;
    let e = check_psbt(&batched.psbt, &tight, own)
        .unwrap_err()
        .to_string();
    assert!(e.contains("withdrawal w-3"), "{e}");
    // Payouts in another order than approved are refused (output i is payout i).
    let mut swapped = payouts.clone();
    swapped.swap(0, 1);
    assert!(check_psbt(&batched.psbt, &swapped, own).is_err());
}

#[test]
fn a_replacement_must_spend_every_coin_of_what_it_replaces_and_pay_more() {
    let w = wallet(9);
    let own = std::slice::from_ref(&w.script);
    let coins = coins(&w.script, &[80_000, 70_000, 60_000]);
    let payouts = [payout("w-1", DEST_P2WPKH, 100_000, 20_000)];
    let first = build(&w, &coins, &payouts, 2_000);
    let first_checked = check_psbt(&first.psbt, &payouts, own).unwrap();
    let bumped = build_unsigned(&BuildRequest {
        coins: &coins,
        required: &first.inputs,
        payouts: &payouts,
        change_script: &w.script,
        fee_rate_sat_per_kvb: 6_000,
    })
    .unwrap();
    let bumped_checked = check_psbt(&bumped.psbt, &payouts, own).unwrap();
    check_replacement(&first_checked, &bumped_checked).unwrap();
    assert!(bumped.fee > first.fee);
    // A "replacement" spending other coins could confirm beside the first.
    let others: Vec<Utxo> = coins
        .iter()
        .filter(|c| !first.inputs.contains(&c.outpoint))
        .cloned()
        .collect();
    if others.iter().map(|c| c.value()).sum::<u64>() > 110_000 {
        let disjoint = build(&w, &others, &payouts, 6_000);
        let d = check_psbt(&disjoint.psbt, &payouts, own).unwrap();
        let e = check_replacement(&first_checked, &d)
            .unwrap_err()
            .to_string();
        assert!(e.contains("both could confirm"), "{e}");
    }
    let e = check_replacement(&bumped_checked, &first_checked)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not above"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Whatever the coins, payouts and rate: a built transaction passes the
    /// signer's check, pays at least the rate asked, keeps every share within
    /// its cap, and its signatures satisfy Bitcoin's consensus rules.
    #[test]
    fn built_transactions_check_and_verify(
        values in proptest::collection::vec(1_000u64..5_000_000, 1..8),
        amounts in proptest::collection::vec(600u64..1_000_000, 1..4),
        rate in 1_000u64..50_000,
    ) {
        let w = wallet(10);
        let coins = coins(&w.script, &values);
        let payouts: Vec<Payout> = amounts.iter().enumerate()
            .map(|(i, a)| payout(&format!("w-{i}"), DEST_P2WPKH, *a, 1_000_000)).collect();
        match build_unsigned(&BuildRequest {
            coins: &coins, required: &[], payouts: &payouts, change_script: &w.script, fee_rate_sat_per_kvb: rate,
        }) {
            Err(ChainError::InsufficientFunds { .. }) => {}
            Err(e) => prop_assert!(false, "unexpected error {e}"),
            Ok(unsigned) => {
                let checked = check_psbt(&unsigned.psbt, &payouts, std::slice::from_ref(&w.script)).unwrap();
                let signed = assemble_signed(&checked, &sign_all(&w, &checked), &w.sec1).unwrap();
                prop_assert!(signed.vbytes <= unsigned.vbytes);
                prop_assert!(checked.fee * 1000 >= signed.vbytes * rate);
                consensus_verify(&signed.raw, &checked);
            }
        }
    }
}
