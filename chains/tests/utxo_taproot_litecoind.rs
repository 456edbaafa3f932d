#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! A FROST 2-of-3 taproot key on a real Litecoin Core regtest node: taproot
//! is active there (BIP9 "active" from genesis, checked below); the node's
//! wallet cannot make bech32m addresses, so the P2TR coin is funded by a
//! transaction the adapter builds and a local test key signs (P2WPKH), then
//! spent by key path with a FROST signature, accepted and mined.

mod common;

use bitcoin::{Amount, OutPoint, TxOut};
use common::frost;
use common::litecoind::{Litecoind, MINER};
use custos_chains::utxo::rpc::Broadcast;
use custos_chains::utxo::taproot::{assemble_taproot_signed, p2tr_address, unsigned_taproot_spend};
use custos_chains::utxo::testing::sign_locally;
use custos_chains::utxo::{
    BuildRequest, Payout, UtxoNetwork, assemble_signed, build_unsigned, check_psbt, parse_address,
    wallet_address,
};
use k256::ecdsa::SigningKey;
use serde_json::json;

const NET: UtxoNetwork = UtxoNetwork::LitecoinRegtest;
const WATCH: &str = "custos-ltc-funding";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frost_taproot_key_path_spend_is_accepted_and_mined_by_litecoin_core() {
    let node = Litecoind::start().await;
    let rpc = node.rpc();
    let info = rpc
        .call(None, "getblockchaininfo", json!([]))
        .await
        .unwrap();
    assert_eq!(
        info["softforks"]["taproot"]["active"],
        json!(true),
        "taproot on Litecoin regtest: {}",
        info["softforks"]["taproot"]
    );

    // The FROST key and its P2TR address (bech32m, rltc1p...).
    let shares = frost::keygen_async().await;
    let p2tr = p2tr_address(NET, &frost::internal_key(&shares)).unwrap();
    assert!(p2tr.text.starts_with("rltc1p"), "{}", p2tr.text);
    let validated = rpc
        .call(None, "validateaddress", json!([p2tr.text]))
        .await
        .unwrap();
    assert_eq!(validated["isvalid"], json!(true), "{validated}");
    assert_eq!(validated["witness_version"], json!(1), "{validated}");

    // Funding: a P2WPKH coin of a local key, paid by the node's wallet...
    let key = SigningKey::from_slice(&[0x17; 32]).unwrap();
    let sec1 = key.verifying_key().to_sec1_bytes();
    let funding = wallet_address(NET, &sec1).unwrap();
    rpc.ensure_watch_wallet(WATCH).await.unwrap();
    rpc.watch_address(WATCH, &funding.text, false)
        .await
        .unwrap();
    node.pay(&funding.text, 1.0).await;
    node.mine(1).await;
    let coins = rpc.spendable(WATCH, 1).await.unwrap();
    assert_eq!(coins.len(), 1);

    // ...then a payout the adapter builds, checks and a local key signs,
    // paying 0.5 LTC to the FROST key's P2TR output.
    let payouts = [Payout {
        withdrawal_id: "fund-p2tr".into(),
        script_pubkey: p2tr.script_pubkey.clone(),
        amount: 50_000_000,
        fee_cap: 100_000,
    }];
    let unsigned = build_unsigned(&BuildRequest {
        coins: &coins,
        required: &[],
        payouts: &payouts,
        change_script: &funding.script_pubkey,
        fee_rate_sat_per_kvb: 2_000,
    })
    .unwrap();
    let checked = check_psbt(
        &unsigned.psbt,
        &payouts,
        std::slice::from_ref(&funding.script_pubkey),
    )
    .unwrap();
    let fund = assemble_signed(&checked, &sign_locally(&key, &checked), &sec1).unwrap();
    assert_eq!(
        rpc.send_raw(&fund.raw, fund.txid).await.unwrap(),
        Broadcast::Accepted(fund.txid)
    );
    node.mine(1).await;
    let fund_tx = &checked.tx;
    let vout = fund_tx
        .output
        .iter()
        .position(|o| o.script_pubkey == p2tr.script_pubkey)
        .unwrap();
    let coin = (
        OutPoint {
            txid: fund.txid,
            vout: vout as u32,
        },
        fund_tx.output[vout].clone(),
    );
    assert_eq!(coin.1.value, Amount::from_sat(50_000_000));

    // The key-path spend: to the miner's wallet, 10_000 litoshi fee.
    let payee = node.miner_address().await;
    let spend = unsigned_taproot_spend(
        std::slice::from_ref(&coin),
        vec![TxOut {
            value: Amount::from_sat(50_000_000 - 10_000),
            script_pubkey: parse_address(NET, &payee).unwrap().script_pubkey,
        }],
    )
    .unwrap();
    let sigs = frost::sign_async(&shares, &[0, 2], &spend.digests).await;
    let signed = assemble_taproot_signed(&spend.tx, &spend.prevouts, &sigs).unwrap();
    let hex = bitcoin::hex::DisplayHex::to_lower_hex_string(&signed.raw[..]);
    let verdict = rpc
        .call(None, "testmempoolaccept", json!([[hex]]))
        .await
        .unwrap();
    assert_eq!(verdict[0]["allowed"], json!(true), "{verdict}");
    assert_eq!(
        rpc.send_raw(&signed.raw, signed.txid).await.unwrap(),
        Broadcast::Accepted(signed.txid)
    );
    let blocks = node.mine(1).await;
    let tx = rpc
        .call(
            Some(MINER),
            "gettransaction",
            json!([signed.txid.to_string()]),
        )
        .await
        .unwrap();
    assert_eq!(tx["confirmations"], json!(1), "{tx}");
    assert_eq!(tx["blockhash"], json!(blocks[0]), "{tx}");
    // The node decoded the witness as a single 64-byte signature (key path).
    let decoded = rpc
        .call(None, "decoderawtransaction", json!([hex]))
        .await
        .unwrap();
    let witness = decoded["vin"][0]["txinwitness"].as_array().unwrap();
    assert_eq!(witness.len(), 1);
    assert_eq!(witness[0].as_str().unwrap().len(), 128);
}
