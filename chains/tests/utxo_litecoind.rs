#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The UTXO adapter against a real Litecoin Core regtest node: deposits seen
//! by the watch-only wallet, a payout with several inputs and change
//! accepted and confirmed, idempotent broadcast, a replace-by-fee bump that
//! the node takes in place of the first, a reorg that puts the transaction
//! back in the mempool, and a node restart. A local key stands in for the
//! threshold signers (the node cannot tell the difference).

mod common;

use bitcoin::OutPoint;
use common::litecoind::Litecoind;
use custos_chains::utxo::rpc::{Broadcast, TxStatus, UtxoRpc};
use custos_chains::utxo::{
    BuildRequest, CheckedUtxoTx, Payout, Utxo, UtxoNetwork, assemble_signed, build_unsigned,
    check_psbt, check_replacement, parse_address, wallet_address,
};
use k256::ecdsa::SigningKey;
use k256::ecdsa::signature::hazmat::PrehashSigner;
use serde_json::json;

const NET: UtxoNetwork = UtxoNetwork::LitecoinRegtest;
const WATCH: &str = "custos-ltc-hot";

async fn spendable(rpc: &UtxoRpc, min_conf: u64) -> Vec<Utxo> {
    rpc.spendable(WATCH, min_conf).await.unwrap()
}

async fn status_of(rpc: &UtxoRpc, txid: &bitcoin::Txid) -> TxStatus {
    rpc.wallet_transaction(WATCH, txid)
        .await
        .unwrap()
        .unwrap()
        .1
}

fn sign(key: &SigningKey, checked: &CheckedUtxoTx) -> Vec<[u8; 64]> {
    checked
        .digests
        .iter()
        .map(|d| {
            let s: k256::ecdsa::Signature = key.sign_prehash(d).unwrap();
            s.to_bytes().into()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deposit_payout_rbf_reorg_and_restart_on_litecoin_core_regtest() {
    let mut node = Litecoind::start().await;
    let rpc = node.rpc();
    let (chain, height) = rpc.chain().await.unwrap();
    assert_eq!((chain.as_str(), height), (NET.node_chain(), 101));
    let relay = rpc.relay_fee_rate().await.unwrap();
    assert_eq!(
        relay, 1_000,
        "Litecoin Core's default relay fee, litoshi per kvB"
    );
    // A fresh regtest node has no fee data: the adapter falls back to config.
    assert_eq!(rpc.estimate_fee_rate(2).await.unwrap(), None);

    // The wallet key and its deposit address; the node watches it.
    let key = SigningKey::from_slice(&[0x42; 32]).unwrap();
    let sec1 = key.verifying_key().to_sec1_bytes();
    let wallet = wallet_address(NET, &sec1).unwrap();
    assert!(wallet.text.starts_with("rltc1q"), "{}", wallet.text);
    rpc.ensure_watch_wallet(WATCH).await.unwrap();
    rpc.ensure_watch_wallet(WATCH).await.unwrap(); // idempotent
    rpc.watch_address(WATCH, &wallet.text, false).await.unwrap();

    // Three deposits; unconfirmed ones are not spendable.
    for coins in [0.3, 0.25, 0.1] {
        node.pay(&wallet.text, coins).await;
    }
    assert!(spendable(&rpc, 1).await.is_empty());
    node.mine(1).await;
    let coins = spendable(&rpc, 1).await;
    let mut values: Vec<u64> = coins.iter().map(Utxo::value).collect();
    values.sort();
    assert_eq!(values, vec![10_000_000, 25_000_000, 30_000_000]);

    // A payout needing two inputs, with change, at 5 litoshi/vB.
    let payee = node.miner_address().await;
    let payouts = [Payout {
        withdrawal_id: "ltc-w-1".into(),
        script_pubkey: parse_address(NET, &payee).unwrap().script_pubkey,
        amount: 50_000_000,
        fee_cap: 100_000,
    }];
    let own = [wallet.script_pubkey.clone()];
    let unsigned = build_unsigned(&BuildRequest {
        coins: &coins,
        required: &[],
        payouts: &payouts,
        change_script: &wallet.script_pubkey,
        fee_rate_sat_per_kvb: 5_000,
    })
    .unwrap();
    assert_eq!(unsigned.inputs.len(), 2);
    assert!(unsigned.change.is_some());
    let checked = check_psbt(&unsigned.psbt, &payouts, &own).unwrap();
    let signed = assemble_signed(&checked, &sign(&key, &checked), &sec1).unwrap();
    // The node's own policy check first (testmempoolaccept), then broadcast twice.
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
    // A repeat while in the mempool is success (Core answers it like a first send).
    assert!(matches!(
        rpc.send_raw(&signed.raw, signed.txid).await.unwrap(),
        Broadcast::Accepted(t) | Broadcast::AlreadyKnown(t) if t == signed.txid
    ));
    let status = status_of(&rpc, &signed.txid).await;
    assert_eq!(status.confirmations, 0);

    // Fee bump: the same coins (plus any needed) at a higher rate replaces it.
    let bump = build_unsigned(&BuildRequest {
        coins: &coins,
        required: &unsigned.inputs,
        payouts: &payouts,
        change_script: &wallet.script_pubkey,
        fee_rate_sat_per_kvb: 12_000,
    })
    .unwrap();
    let bump_checked = check_psbt(&bump.psbt, &payouts, &own).unwrap();
    check_replacement(&checked, &bump_checked).unwrap();
    let bumped = assemble_signed(&bump_checked, &sign(&key, &bump_checked), &sec1).unwrap();
    assert_eq!(
        rpc.send_raw(&bumped.raw, bumped.txid).await.unwrap(),
        Broadcast::Accepted(bumped.txid)
    );
    let mempool = rpc.call(None, "getrawmempool", json!([])).await.unwrap();
    assert_eq!(
        mempool,
        json!([bumped.txid.to_string()]),
        "the bump replaced the first"
    );
    // The replaced transaction cannot come back.
    assert!(rpc.send_raw(&signed.raw, signed.txid).await.is_err());

    let blocks = node.mine(1).await;
    let status = status_of(&rpc, &bumped.txid).await;
    assert_eq!(status.confirmations, 1);
    assert_eq!(status.block_hash.as_deref(), Some(blocks[0].as_str()));
    let first = status_of(&rpc, &signed.txid).await;
    assert!(
        first.confirmations < 0,
        "the replaced one conflicts: {first:?}"
    );

    // Change is spendable; the spent coins are gone.
    let after = spendable(&rpc, 1).await;
    let spent: Vec<OutPoint> = bump.inputs.clone();
    assert!(after.iter().all(|c| !spent.contains(&c.outpoint)));
    assert!(after.iter().any(|c| c.outpoint.txid == bumped.txid));

    // Reorg: the block is invalidated, the payout returns to the mempool
    // (0 confirmations), and confirms again in the new chain.
    rpc.call(None, "invalidateblock", json!([blocks[0]]))
        .await
        .unwrap();
    let status = status_of(&rpc, &bumped.txid).await;
    assert_eq!(status.confirmations, 0, "{status:?}");
    // A coin that disappeared with the block is no longer spendable.
    assert!(
        spendable(&rpc, 1)
            .await
            .iter()
            .all(|c| c.outpoint.txid != bumped.txid)
    );
    node.mine(1).await;
    let status = status_of(&rpc, &bumped.txid).await;
    assert_eq!(status.confirmations, 1);

    // Restart: the watch-only wallet and its coins survive.
    node.stop().await;
    assert!(matches!(
        rpc.chain().await,
        Err(custos_chains::ChainError::RpcUnreachable(_))
    ));
    node.launch().await;
    let rpc = node.rpc();
    assert_eq!(spendable(&rpc, 1).await.len(), after.len());
    assert_eq!(
        rpc.send_raw(&bumped.raw, bumped.txid).await.unwrap(),
        Broadcast::AlreadyKnown(bumped.txid)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_and_a_bitcoin_address_are_refused_clearly() {
    let node = Litecoind::start().await;
    let bad = UtxoRpc::new(
        &format!("http://custos:wrong@127.0.0.1:{}/", node.rpc_port),
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    let e = bad.chain().await.unwrap_err().to_string();
    assert!(e.contains("credentials"), "{e}");
    assert!(!e.contains("wrong"), "the password never appears: {e}");
    let e = parse_address(NET, "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080")
        .unwrap_err()
        .to_string();
    assert!(e.contains("bitcoin-regtest"), "{e}");
}
