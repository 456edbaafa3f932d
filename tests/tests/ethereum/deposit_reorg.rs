//! Deposits and reorganisations (issue 19) on the shared anvil cluster:
//! a deposit into `w-dep` is logged (kind 25) and credited after its
//! confirmations; anvil is then rolled back to before its block
//! (`evm_revert`) and mines past it without the deposit, as a
//! reorganisation deeper than the confirmations would: the credit is
//! logged as reversed (kind 26), taken back from the ledger and announced
//! (`deposit.reversed`). The same transaction sent again lands in a later
//! block and is credited again, once, under the next generation's
//! reference (`<reference>#1`). Runs before the withdrawals: the rollback
//! only takes back this step's own block.

use custos_audit::EntryBody;

use super::*;

pub(super) async fn a_deposit_in_a_reverted_block_is_reversed_and_credited_again(
    fc: &FlowCluster,
    rpc: &EvmRpc,
    wallet: Address,
) {
    let layout = fc.tc.cluster.layout();
    let metrics = layout.coordinator.metrics_listen;
    // The log as the step starts: its entries are read from there.
    let (from, _) = custos_tests::audit::checkpoint(fc).await;
    let before = deposited(layout, "w-dep", "ETH");
    let amount = ETH / 2;
    let snapshot = rpc.request("evm_snapshot", json!([])).await.unwrap();
    // Every field fixed: sent again after the rollback (same nonce), it is
    // the same transaction, with the same hash.
    let nonce = rpc
        .request("eth_getTransactionCount", json!([DEV_0, "latest"]))
        .await
        .unwrap();
    let tx = json!({
        "from": DEV_0, "to": wallet, "value": format!("0x{amount:x}"), "nonce": nonce,
        "gas": "0x5208", "maxFeePerGas": "0x174876e800", "maxPriorityFeePerGas": "0x3b9aca00",
    });
    let first = dev_send(rpc, tx.clone()).await;
    assert!(first.success);
    let reference = format!("{CHAIN}:{}", first.transaction_hash);
    wait_deposited(layout, "w-dep", "ETH", before + amount as i128, "credited").await;
    let block_hash = match wait_for_entry(
        &mut fc.auditor.clone(),
        from,
        Duration::from_secs(30),
        "deposit_credited",
        |b| matches!(b, EntryBody::DepositCredited { reference: r, .. } if *r == reference),
    )
    .await
    {
        EntryBody::DepositCredited {
            key_id,
            address,
            amount: logged,
            block_number,
            block_hash,
            ..
        } => {
            assert_eq!(key_id, "w-dep");
            assert_eq!(address, wallet.to_string());
            assert_eq!(logged, amount.to_string());
            assert_eq!(block_number, first.block_number);
            block_hash
        }
        other => panic!("{other:?}"),
    };
    let credited = outbox_payloads(layout, "deposit.credited").await;
    assert!(
        credited
            .iter()
            .any(|p| p["reference"] == reference && p["block_hash"] == block_hash),
        "{credited:?}"
    );

    // The rollback: the deposit's block is gone; three empty blocks stand
    // at its height and above.
    let reversed_before = metric(metrics, "custos_deposits_reversed_total");
    assert_eq!(
        rpc.request("evm_revert", json!([snapshot])).await.unwrap(),
        json!(true)
    );
    mine(rpc, 3).await;
    let seen = SeenCredit {
        wallet: "w-dep",
        asset: "ETH",
        amount: amount as i128,
        reference: &reference,
        block_hash: &block_hash,
    };
    wait_reversed(fc, from, &seen, before, reversed_before).await;

    // The same transaction mined again, in a later block: credited again,
    // once, under the next generation's reference.
    let again = dev_send(rpc, tx).await;
    assert_eq!(again.transaction_hash, first.transaction_hash);
    assert!(again.block_number > first.block_number);
    let (block_number, _) = wait_credited_again(
        fc,
        from,
        ("w-dep", "ETH"),
        before + amount as i128,
        &format!("{reference}#1"),
    )
    .await;
    assert_eq!(block_number, again.block_number);
    mine(rpc, 3).await;
    assert_credited_twice_in_all(layout, "w-dep", "ETH", before + amount as i128, &reference).await;
}
