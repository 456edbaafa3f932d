//! A deposit whose block a reorganisation takes out (issue 19), on the
//! shared Litecoin Core regtest cluster: a payment to `ltc-hot` is logged
//! (kind 25) and credited once mined; its block is then invalidated and two
//! empty blocks (`generateblock` with no transactions) make the longer
//! chain without it: the credit is logged as reversed (kind 26), taken back
//! from the ledger and announced (`deposit.reversed`). The payment, back in
//! the node's mempool, is mined again and credited again, once, under the
//! next generation's reference (`<reference>#1`). Runs last: the other
//! steps' coins are not in the invalidated block, but nothing else should
//! see a reorganisation it did not ask for.

use super::*;

pub(super) async fn a_deposit_in_an_invalidated_block_is_reversed_and_credited_again(
    fc: &FlowCluster,
    node: &Litecoind,
    wallet_address: &str,
) {
    let layout = fc.tc.cluster.layout();
    let metrics = layout.coordinator.metrics_listen;
    // The log as the step starts: its entries are read from there.
    let (from, _) = custos_tests::audit::checkpoint(fc).await;
    let before = deposited(layout, "ltc-hot", "LTC");
    let amount = i128::from(3 * LTC / 10);
    let txid = node.pay(wallet_address, 0.3).await;
    let mined = node.mine(1).await;
    wait_deposited(layout, "ltc-hot", "LTC", before + amount, "credited").await;
    let prefix = format!("{CHAIN}:{txid}:");
    let reference = match wait_for_entry(
        &mut fc.auditor.clone(),
        from,
        Duration::from_secs(30),
        "deposit_credited",
        |b| matches!(b, EntryBody::DepositCredited { reference, .. } if reference.starts_with(&prefix)),
    )
    .await
    {
        EntryBody::DepositCredited {
            key_id,
            address,
            reference,
            block_hash,
            ..
        } => {
            assert_eq!(key_id, "ltc-hot");
            assert_eq!(address, wallet_address);
            assert_eq!(block_hash, mined[0]);
            reference
        }
        other => panic!("{other:?}"),
    };

    let reversed_before = metric(metrics, "custos_deposits_reversed_total");
    node.rpc()
        .call(None, "invalidateblock", json!([mined[0]]))
        .await
        .unwrap();
    let miner = node.miner_address().await;
    for _ in 0..2 {
        node.rpc()
            .call(None, "generateblock", json!([miner, []]))
            .await
            .unwrap();
    }
    let seen = SeenCredit {
        wallet: "ltc-hot",
        asset: "LTC",
        amount,
        reference: &reference,
        block_hash: &mined[0],
    };
    wait_reversed(fc, from, &seen, before, reversed_before).await;

    // Back in the mempool, mined again: credited again, once.
    let again = node.mine(1).await;
    let (_, block_hash) = wait_credited_again(
        fc,
        from,
        ("ltc-hot", "LTC"),
        before + amount,
        &format!("{reference}#1"),
    )
    .await;
    assert_eq!(block_hash, again[0]);
    node.mine(1).await;
    assert_credited_twice_in_all(layout, "ltc-hot", "LTC", before + amount, &prefix).await;
}
