#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Taproot key-path spends signed by FROST 2-of-3 (secp256k1-tr), verified
//! by Bitcoin Core's own script interpreter (libbitcoinconsensus, taproot
//! rules on) with Bitcoin network parameters; the P2TR address of a FROST
//! key checked against rust-bitcoin's BIP341 tweak.

mod common;

use bitcoin::key::{TapTweak, TweakedPublicKey, XOnlyPublicKey};
use bitcoin::secp256k1::Secp256k1;
use bitcoin::{Amount, OutPoint, ScriptBuf, TxOut};
use common::frost;
use custos_chains::utxo::taproot::{
    TaprootSpend, assemble_taproot_signed, output_key_of, p2tr_address, p2tr_output_key,
    taproot_digests, unsigned_taproot_spend,
};
use custos_chains::utxo::testing::funding_tx;
use custos_chains::utxo::{UtxoNetwork, parse_address};

const NET: UtxoNetwork = UtxoNetwork::Bitcoin;
const DEST_P2WPKH: &str = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4";

/// Every input verified by Bitcoin Core's interpreter with taproot rules,
/// given every spent output (BIP341 digests commit to all of them).
fn consensus_verify(
    raw: &[u8],
    prevouts: &[TxOut],
) -> Result<(), (usize, bitcoinconsensus::Error)> {
    let utxos: Vec<bitcoinconsensus::Utxo> = prevouts
        .iter()
        .map(|p| bitcoinconsensus::Utxo {
            script_pubkey: p.script_pubkey.as_bytes().as_ptr(),
            script_pubkey_len: p.script_pubkey.len() as u32,
            value: p.value.to_sat() as i64,
        })
        .collect();
    for (i, prev) in prevouts.iter().enumerate() {
        bitcoinconsensus::verify_with_flags(
            prev.script_pubkey.as_bytes(),
            prev.value.to_sat(),
            raw,
            Some(&utxos),
            i,
            bitcoinconsensus::VERIFY_ALL_PRE_TAPROOT | bitcoinconsensus::VERIFY_TAPROOT,
        )
        .map_err(|e| (i, e))?;
    }
    Ok(())
}

#[test]
fn the_p2tr_address_of_a_frost_key_is_rust_bitcoins_bip86_tweak_of_its_internal_key() {
    let secp = Secp256k1::verification_only();
    for _ in 0..3 {
        let shares = frost::keygen();
        let internal = XOnlyPublicKey::from_slice(&frost::internal_key(&shares)).unwrap();
        // rust-bitcoin's TapTweak with an empty merkle root...
        let (tweaked, _) = internal.tap_tweak(&secp, None);
        // ...is the key the FROST group signs under.
        assert_eq!(
            tweaked.to_x_only_public_key().serialize().to_vec(),
            frost::output_key(&shares)
        );
        let address = p2tr_address(NET, &frost::internal_key(&shares)).unwrap();
        assert_eq!(
            address.script_pubkey,
            ScriptBuf::new_p2tr(&secp, internal, None)
        );
        assert_eq!(
            address.script_pubkey,
            ScriptBuf::new_p2tr_tweaked(TweakedPublicKey::dangerous_assume_tweaked(
                XOnlyPublicKey::from_slice(&frost::output_key(&shares)).unwrap()
            ))
        );
        assert!(address.text.starts_with("bc1p"), "{}", address.text);
        assert_eq!(parse_address(NET, &address.text).unwrap(), address);
        assert_eq!(
            p2tr_output_key(&frost::internal_key(&shares))
                .unwrap()
                .to_vec(),
            frost::output_key(&shares)
        );
        assert_eq!(
            output_key_of(&address.script_pubkey).unwrap().to_vec(),
            frost::output_key(&shares)
        );
    }
}

/// Two P2TR coins of a FROST key (from two funding transactions) spent to a
/// P2WPKH destination with P2TR change.
fn spend(shares: &[frost::Share], values: [u64; 2]) -> TaprootSpend {
    let script = p2tr_address(NET, &frost::internal_key(shares))
        .unwrap()
        .script_pubkey;
    let inputs: Vec<(OutPoint, TxOut)> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let prev = funding_tx(&script, &[1_000, *v], i as u32);
            (
                OutPoint {
                    txid: prev.compute_txid(),
                    vout: 1,
                },
                prev.output[1].clone(),
            )
        })
        .collect();
    let total: u64 = values.iter().sum();
    let outputs = vec![
        TxOut {
            value: Amount::from_sat(60_000),
            script_pubkey: parse_address(NET, DEST_P2WPKH).unwrap().script_pubkey,
        },
        TxOut {
            value: Amount::from_sat(total - 60_000 - 2_000),
            script_pubkey: script,
        },
    ];
    unsigned_taproot_spend(&inputs, outputs).unwrap()
}

#[test]
fn a_frost_signed_taproot_spend_verifies_under_bitcoin_consensus() {
    let shares = frost::keygen();
    let spend = spend(&shares, [50_000, 40_000]);
    assert_eq!(spend.digests.len(), 2);
    let sigs = frost::sign(&shares, &[2, 0], &spend.digests);
    let signed = assemble_taproot_signed(&spend.tx, &spend.prevouts, &sigs).unwrap();
    consensus_verify(&signed.raw, &spend.prevouts).unwrap();
    // 2 key-path inputs, P2WPKH and P2TR outputs: 57.5 vB per input.
    assert!((200..=230).contains(&signed.vbytes), "{}", signed.vbytes);
    assert_eq!(signed.txid, spend.tx.compute_txid());

    // Any signer pair makes an equally valid spend.
    let sigs = frost::sign(&shares, &[1, 2], &spend.digests);
    let signed = assemble_taproot_signed(&spend.tx, &spend.prevouts, &sigs).unwrap();
    consensus_verify(&signed.raw, &spend.prevouts).unwrap();
}

#[test]
fn digests_commit_to_every_prevout_and_bad_signatures_are_refused_before_broadcast() {
    let shares = frost::keygen();
    let spend = spend(&shares, [50_000, 40_000]);

    // Signers shown a lower amount for input 1 sign other digests, for input
    // 0 too: the node refuses every input, no fee is silently burnt.
    let mut lied = spend.prevouts.clone();
    lied[1].value = Amount::from_sat(30_000);
    let lied_digests = taproot_digests(&spend.tx, &lied).unwrap();
    assert_ne!(lied_digests[0], spend.digests[0]);
    let sigs = frost::sign(&shares, &[0, 1], &lied_digests);
    let e = assemble_taproot_signed(&spend.tx, &spend.prevouts, &sigs).unwrap_err();
    assert!(e.to_string().contains("input 0: does not verify"), "{e}");
    // Even forced into the transaction, Bitcoin's rules refuse it.
    let forced = assemble_taproot_signed(&spend.tx, &lied, &sigs).unwrap();
    let (input, _) = consensus_verify(&forced.raw, &spend.prevouts).unwrap_err();
    assert_eq!(input, 0);

    // Another key's signatures, a wrong count, missing prevouts, a non-P2TR prevout.
    let other = frost::keygen();
    let sigs = frost::sign(&other, &[0, 1], &spend.digests);
    let e = assemble_taproot_signed(&spend.tx, &spend.prevouts, &sigs).unwrap_err();
    assert!(
        e.to_string()
            .contains("does not verify under the output key"),
        "{e}"
    );
    let e = assemble_taproot_signed(&spend.tx, &spend.prevouts, &[]).unwrap_err();
    assert!(e.to_string().contains("0 signatures for 2 inputs"), "{e}");
    let e = taproot_digests(&spend.tx, &spend.prevouts[..1]).unwrap_err();
    assert!(e.to_string().contains("1 prevouts for 2 inputs"), "{e}");
    let mut p2wpkh = spend.prevouts.clone();
    p2wpkh[0].script_pubkey = parse_address(NET, DEST_P2WPKH).unwrap().script_pubkey;
    let e = taproot_digests(&spend.tx, &p2wpkh).unwrap_err();
    assert!(
        e.to_string().contains("input 0: prevout is not P2TR"),
        "{e}"
    );

    // An output changed after signing: consensus refuses the signatures.
    let sigs = frost::sign(&shares, &[0, 1], &spend.digests);
    let signed = assemble_taproot_signed(&spend.tx, &spend.prevouts, &sigs).unwrap();
    let mut tx: bitcoin::Transaction = bitcoin::consensus::deserialize(&signed.raw).unwrap();
    tx.output[0].value = Amount::from_sat(70_000);
    let raw = bitcoin::consensus::serialize(&tx);
    assert!(consensus_verify(&raw, &spend.prevouts).is_err());
}

/// A FROST wallet on the adapter's own path (what the coordinator and the
/// signers run): its wallet key (the x-only output key) gives a P2TR
/// script and a bech32m address; the PSBT built from its coins signs
/// BIP341 digests (no sighash field: DEFAULT), each signer's `check_psbt`
/// computes the same ones, `assemble_signed` puts one 64-byte signature in
/// each witness, and Bitcoin's interpreter accepts the spend. A coin whose
/// amount the PSBT misstates, another sighash type, or a signature over
/// another input's digest is refused (SECURITY.md case 76).
#[test]
fn a_frost_wallet_spends_p2tr_coins_through_the_psbt_path() {
    use custos_chains::utxo::testing::coins;
    use custos_chains::utxo::{
        BuildRequest, Payout, assemble_signed, build_unsigned, check_psbt, wallet_address,
        wallet_script,
    };
    let shares = frost::keygen();
    let wallet_key = frost::output_key(&shares);
    assert_eq!(wallet_key.len(), 32);
    let own = wallet_script(&wallet_key).unwrap();
    assert_eq!(output_key_of(&own).unwrap().to_vec(), wallet_key);
    let address = wallet_address(NET, &wallet_key).unwrap();
    assert!(address.text.starts_with("bc1p"), "{}", address.text);
    assert_eq!(
        address,
        p2tr_address(NET, &frost::internal_key(&shares)).unwrap(),
        "the output key's address is the internal key's BIP86 address"
    );
    let payouts = [Payout {
        withdrawal_id: "w-tr".into(),
        script_pubkey: parse_address(NET, DEST_P2WPKH).unwrap().script_pubkey,
        amount: 70_000,
        fee_cap: 10_000,
    }];
    let coins = coins(&own, &[50_000, 40_000]);
    let built = build_unsigned(&BuildRequest {
        coins: &coins,
        required: &[],
        payouts: &payouts,
        change_script: &own,
        fee_rate_sat_per_kvb: 2_000,
    })
    .unwrap();
    let checked = check_psbt(&built.psbt, &payouts, std::slice::from_ref(&own)).unwrap();
    assert_eq!(checked.digests.len(), 2);
    assert_eq!(
        checked.digests,
        taproot_digests(&checked.tx, &checked.prevouts).unwrap(),
        "BIP341 key-path digests"
    );
    let sigs = frost::sign(&shares, &[0, 1], &checked.digests);
    let signed = assemble_signed(&checked, &sigs, &wallet_key).unwrap();
    consensus_verify(&signed.raw, &checked.prevouts).unwrap();
    // The fee was estimated for key-path inputs: never below the signed
    // size, and not a P2WPKH input's 10 vbytes more per input.
    assert!(
        built.vbytes >= signed.vbytes && built.vbytes - signed.vbytes <= 2,
        "estimated {} vbytes, signed {}",
        built.vbytes,
        signed.vbytes
    );
    // Swapped signatures: each verified before the witness is made.
    let swapped = [sigs[1], sigs[0]];
    let e = assemble_signed(&checked, &swapped, &wallet_key)
        .unwrap_err()
        .to_string();
    assert!(e.contains("input 0") && e.contains("output key"), "{e}");

    // Another sighash type on a P2TR coin is refused.
    let mut psbt = bitcoin::psbt::Psbt::deserialize(&built.psbt).unwrap();
    psbt.inputs[0].sighash_type = Some(bitcoin::psbt::PsbtSighashType::from(
        bitcoin::TapSighashType::All,
    ));
    let e = check_psbt(&psbt.serialize(), &payouts, std::slice::from_ref(&own))
        .unwrap_err()
        .to_string();
    assert!(e.contains("sighash type"), "{e}");
    // A witness UTXO that misstates the amount is refused (the previous
    // transaction proves it).
    let mut psbt = bitcoin::psbt::Psbt::deserialize(&built.psbt).unwrap();
    if let Some(w) = psbt.inputs[0].witness_utxo.as_mut() {
        w.value = Amount::from_sat(w.value.to_sat() + 1);
    }
    assert!(check_psbt(&psbt.serialize(), &payouts, std::slice::from_ref(&own)).is_err());
}
