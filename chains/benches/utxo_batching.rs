#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Fee per withdrawal, batched into one transaction vs one transaction each,
//! measured on a real Litecoin Core regtest node: both sets are built by the
//! adapter, checked as a signer checks them, signed, accepted by the node's
//! mempool and mined; the fee and size of each come from the node.
//!
//! `cargo bench -p custos-chains --bench utxo_batching -- [--payouts N] [--rate SAT_PER_KVB]`

#[allow(dead_code)]
#[path = "../tests/common/litecoind.rs"]
mod litecoind;

use std::time::Instant;

use bitcoin::OutPoint;
use custos_chains::utxo::rpc::UtxoRpc;
use custos_chains::utxo::{
    BuildRequest, Payout, Utxo, UtxoNetwork, assemble_signed, build_unsigned, check_psbt,
    parse_address, wallet_address,
};
use k256::ecdsa::SigningKey;
use k256::ecdsa::signature::hazmat::PrehashSigner;
use serde_json::json;

const NET: UtxoNetwork = UtxoNetwork::LitecoinRegtest;
const WATCH: &str = "bench-hot";

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Sent {
    fee: u64,
    vbytes: u64,
}

/// Builds, checks, signs and sends one transaction paying `payouts`; returns
/// the fee and virtual size the node reports for it.
async fn send(
    rpc: &UtxoRpc,
    key: &SigningKey,
    coins: &[Utxo],
    payouts: &[Payout],
    rate: u64,
    used: &mut Vec<OutPoint>,
) -> Sent {
    let sec1 = key.verifying_key().to_sec1_bytes();
    let own = [wallet_address(NET, &sec1).unwrap().script_pubkey];
    let free: Vec<Utxo> = coins
        .iter()
        .filter(|c| !used.contains(&c.outpoint))
        .cloned()
        .collect();
    let unsigned = build_unsigned(&BuildRequest {
        coins: &free,
        required: &[],
        payouts,
        change_script: &own[0],
        fee_rate_sat_per_kvb: rate,
    })
    .unwrap();
    used.extend(unsigned.inputs.iter().copied());
    let checked = check_psbt(&unsigned.psbt, payouts, &own).unwrap();
    let sigs: Vec<[u8; 64]> = checked
        .digests
        .iter()
        .map(|d| {
            let s: k256::ecdsa::Signature = key.sign_prehash(d).unwrap();
            s.to_bytes().into()
        })
        .collect();
    let signed = assemble_signed(&checked, &sigs, &sec1).unwrap();
    rpc.send_raw(&signed.raw, signed.txid).await.unwrap();
    let entry = rpc
        .call(None, "getmempoolentry", json!([signed.txid.to_string()]))
        .await
        .unwrap();
    let fee = (entry["fees"]["base"].as_f64().unwrap() * 1e8).round() as u64;
    assert_eq!(fee, unsigned.fee, "the node's fee is the adapter's");
    Sent {
        fee,
        vbytes: entry["vsize"].as_u64().unwrap(),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = arg("--payouts", 20) as usize;
    let rate = arg("--rate", 10_000);
    let started = Instant::now();
    let node = litecoind::Litecoind::start().await;
    let rpc = node.rpc();
    let key = SigningKey::from_slice(&[0x77; 32]).unwrap();
    let wallet = wallet_address(NET, &key.verifying_key().to_sec1_bytes()).unwrap();
    rpc.ensure_watch_wallet(WATCH).await.unwrap();
    rpc.watch_address(WATCH, &wallet.text, false).await.unwrap();
    // Deposits: one coin per unbatched payout, and as many again for the batch.
    for i in 0..2 * n {
        node.pay(&wallet.text, 0.05).await;
        // The miner's wallet chains its change: confirm before 25 unconfirmed ancestors.
        if i % 20 == 19 {
            node.mine(1).await;
        }
    }
    node.mine(1).await;
    let coins = rpc.spendable(WATCH, 1).await.unwrap();
    let mut payouts = Vec::new();
    for i in 0..n {
        let to = node.miner_address().await;
        payouts.push(Payout {
            withdrawal_id: format!("w-{i}"),
            script_pubkey: parse_address(NET, &to).unwrap().script_pubkey,
            amount: 1_000_000 + i as u64,
            fee_cap: 1_000_000,
        });
    }

    let mut used = Vec::new();
    let mut single = Vec::new();
    for p in &payouts {
        single.push(send(&rpc, &key, &coins, std::slice::from_ref(p), rate, &mut used).await);
    }
    let batch = send(&rpc, &key, &coins, &payouts, rate, &mut used).await;
    node.mine(1).await;
    let mempool = rpc.call(None, "getrawmempool", json!([])).await.unwrap();
    assert_eq!(mempool, json!([]), "every transaction was mined");

    let single_fee: u64 = single.iter().map(|s| s.fee).sum();
    let single_vb: u64 = single.iter().map(|s| s.vbytes).sum();
    let per_single = single_fee as f64 / n as f64;
    let per_batched = batch.fee as f64 / n as f64;
    println!("UTXO payouts on Litecoin Core regtest: {n} withdrawals at {rate} litoshi/kvB");
    println!(
        "  one transaction each: {} transactions, {single_vb} vB, fee {single_fee} litoshi; per withdrawal {per_single:.0} litoshi, {:.1} vB",
        n,
        single_vb as f64 / n as f64
    );
    println!(
        "  batched:              1 transaction, {} vB, fee {} litoshi; per withdrawal {per_batched:.0} litoshi, {:.1} vB",
        batch.vbytes,
        batch.fee,
        batch.vbytes as f64 / n as f64
    );
    println!(
        "  batching saves {:.0}% of the fee per withdrawal (ratio {:.2}); run took {:.1} s",
        100.0 * (1.0 - per_batched / per_single),
        per_batched / per_single,
        started.elapsed().as_secs_f64()
    );
}
