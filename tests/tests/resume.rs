//! kill -9 the coordinator in every non-terminal state and restart it: each
//! withdrawal resumes, nothing is lost, duplicated or signed twice.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use custos_proto::custody::{GetWithdrawalRequest, ListWithdrawalsRequest, Withdrawal};
use custos_tests::*;

const LIMIT: Duration = Duration::from_secs(120);

async fn get(fc: &FlowCluster, id: &str) -> Withdrawal {
    fc.backend
        .clone()
        .get_withdrawal(GetWithdrawalRequest { id: id.to_owned() })
        .await
        .unwrap()
        .into_inner()
}

async fn crash_and_restart(fc: &mut FlowCluster) {
    fc.tc.cluster.kill_coordinator().unwrap();
    fc.tc.cluster.restart_coordinator().await.unwrap();
    fc.tc.wait_aux_ready(Duration::from_secs(60)).await;
}

async fn sql(fc: &FlowCluster, stmt: String) {
    let path = fc
        .tc
        .cluster
        .layout()
        .coordinator
        .data_dir
        .join("coordinator.db");
    let db = custos_service::db::Db::connect(&format!("sqlite://{}", path.display()), 1)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(stmt))
        .execute(&db.pool)
        .await
        .unwrap();
    db.pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coordinator_killed_in_each_state_resumes() {
    let mut fc = start_flow(&flow_policy(), false, &["w-hot", "w-vel"]).await;
    let signer_ids: Vec<String> = fc
        .tc
        .cluster
        .layout()
        .signers
        .iter()
        .map(|s| s.node_id.clone())
        .collect();

    // awaiting_approvals: an approval given before the crash is kept.
    let a = fc
        .backend
        .clone()
        .create_withdrawal(withdrawal_req("r-await", "w-hot", WHITELISTED, 5 * ETH))
        .await
        .unwrap()
        .into_inner();
    approve(&fc.approver, &a, "alice").await;
    crash_and_restart(&mut fc).await;
    let after = get(&fc, &a.id).await;
    assert_eq!(after.state, "awaiting_approvals");
    assert_eq!(after.approvals.len(), 1);
    // The backend's retry after the crash finds the same withdrawal.
    let retry = fc
        .backend
        .clone()
        .create_withdrawal(withdrawal_req("r-await", "w-hot", WHITELISTED, 5 * ETH))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retry.id, a.id);
    approve(&fc.approver, &after, "bob").await;

    // time_locked.
    let t = fc
        .backend
        .clone()
        .create_withdrawal(withdrawal_req("r-lock", "w-hot", WHITELISTED, 20 * ETH))
        .await
        .unwrap()
        .into_inner();
    approve(&fc.approver, &t, "alice").await;
    approve(&fc.approver, &t, "carol").await;
    wait_state(&fc.backend, &t.id, &["time_locked"], LIMIT).await;
    crash_and_restart(&mut fc).await;
    assert_eq!(get(&fc, &t.id).await.state, "time_locked");

    // The crash between storing the quorum's last approval and moving on
    // (Engine::submit's two steps): both approvals stored, the withdrawal
    // still awaiting them. The first tick after the restart settles it.
    fc.tc.cluster.kill_coordinator().unwrap();
    sql(
        &fc,
        format!(
            "UPDATE withdrawals SET state = 'awaiting_approvals', approved_at = NULL, time_lock_until = NULL WHERE id = '{}'",
            t.id
        ),
    )
    .await;
    fc.tc.cluster.restart_coordinator().await.unwrap();
    fc.tc.wait_aux_ready(Duration::from_secs(60)).await;
    let settled = wait_state(
        &fc.backend,
        &t.id,
        &["time_locked", "signing", "signed"],
        LIMIT,
    )
    .await;
    assert_eq!(
        settled.approvals.len(),
        2,
        "the stored approvals, none asked again"
    );

    // approved, with every signer down (the quorum cannot be registered yet).
    for s in &signer_ids {
        fc.tc.cluster.kill_signer(s).unwrap();
    }
    let p = fc
        .backend
        .clone()
        .create_withdrawal(withdrawal_req("r-approved", "w-vel", WHITELISTED, ETH / 4))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.state, "approved", "{} {:?}", p.reason, p.signer_notes);
    crash_and_restart(&mut fc).await;
    assert_eq!(get(&fc, &p.id).await.state, "approved");
    for s in &signer_ids {
        fc.tc.cluster.restart_signer(s).await.unwrap();
    }

    // signing: the lock of a registered withdrawal runs out while signers are down.
    let g = fc
        .backend
        .clone()
        .create_withdrawal(withdrawal_req("r-signing", "w-hot", WHITELISTED, 30 * ETH))
        .await
        .unwrap()
        .into_inner();
    approve(&fc.approver, &g, "bob").await;
    approve(&fc.approver, &g, "carol").await;
    wait_state(&fc.backend, &g.id, &["time_locked"], LIMIT).await;
    for s in &signer_ids {
        fc.tc.cluster.kill_signer(s).unwrap();
    }
    wait_state(&fc.backend, &g.id, &["signing"], LIMIT).await;
    crash_and_restart(&mut fc).await;
    assert_eq!(get(&fc, &g.id).await.state, "signing");
    for s in &signer_ids {
        fc.tc.cluster.restart_signer(s).await.unwrap();
    }

    // Transient states: a crash right after committing requested / risk_scored
    // / policy_evaluated (rows rewound in the database while the coordinator is down).
    let q = fc
        .backend
        .clone()
        .create_withdrawal(withdrawal_req("r-eval", "w-hot", WHITELISTED, 6 * ETH))
        .await
        .unwrap()
        .into_inner();
    let r = fc
        .backend
        .clone()
        .create_withdrawal(withdrawal_req("r-risk", "w-hot", WHITELISTED, 7 * ETH))
        .await
        .unwrap()
        .into_inner();
    fc.tc.cluster.kill_coordinator().unwrap();
    sql(
        &fc,
        format!(
            "UPDATE withdrawals SET state = 'policy_evaluated' WHERE id = '{}'",
            q.id
        ),
    )
    .await;
    sql(&fc, format!(
        "UPDATE withdrawals SET state = 'risk_scored', rule_id = NULL, outcome = NULL, statement = NULL WHERE id = '{}'",
        r.id
    ))
    .await;
    // A row in `requested` that never reached the log (only a write behind
    // the coordinator's back makes one: it logs a request before storing
    // it). The coordinator resumes it through risk, policy and signing, and
    // the signers refuse it: its request is not in the log they witnessed.
    let crashed = custos_policy::request_withdrawal_id(custos_devkit::BACKEND_CLIENT, "r-req");
    let signature = withdrawal_req("r-req", "w-vel", WHITELISTED, ETH / 8).request_signature;
    sql(&fc, format!(
        "INSERT INTO withdrawals (id, client_id, idempotency_key, request_hash, wallet, chain, asset, destination, amount, fee_cap, initiator, memo, state, signer_notes, created_ms, updated_ms, request_signature)
         VALUES ('{crashed}', 'payments-backend', 'r-req', 'x', 'w-vel', 'ethereum', 'ETH', '{WHITELISTED}', '{}', '2100000000000000', 'payments-backend', '', 'requested', '[]', 1, 1, '{signature}')",
        ETH / 8
    ))
    .await;
    fc.tc.cluster.restart_coordinator().await.unwrap();
    fc.tc.wait_aux_ready(Duration::from_secs(60)).await;

    let unlogged = wait_state(&fc.backend, &crashed, &["failed"], LIMIT).await;
    assert!(
        unlogged
            .reason
            .contains("its request is not in this signer's view of the log"),
        "{}",
        unlogged.reason
    );
    assert!(unlogged.signature_r.is_empty());

    // Everything resumes to where it should be.
    // (Allowed payouts use wallet w-vel: w-hot's approved ones fill its daily limit.)
    for (id, state) in [
        (a.id.as_str(), "signed"),
        (t.id.as_str(), "signed"),
        (p.id.as_str(), "signed"),
        (g.id.as_str(), "signed"),
        (q.id.as_str(), "awaiting_approvals"),
        (r.id.as_str(), "awaiting_approvals"),
    ] {
        let w = wait_state(&fc.backend, id, &[state], LIMIT).await;
        if state == "signed" {
            let digest: [u8; 32] = w.tx_digest.clone().try_into().unwrap();
            let pk = fc
                .tc
                .client
                .clone()
                .get_key(custos_proto::custody::GetKeyRequest {
                    key_id: w.wallet.clone(),
                })
                .await
                .unwrap()
                .into_inner()
                .public_key;
            verify_both(&pk, &digest, &w.signature_r, &w.signature_s);
        }
    }
    // Nothing lost or duplicated: exactly these seven withdrawals, approvals not doubled.
    let all = fc
        .backend
        .clone()
        .list_withdrawals(ListWithdrawalsRequest {
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .withdrawals;
    assert_eq!(
        all.len(),
        7,
        "{:?}",
        all.iter().map(|w| &w.id).collect::<Vec<_>>()
    );
    assert_eq!(get(&fc, &a.id).await.approvals.len(), 2);
    assert_eq!(get(&fc, &t.id).await.approvals.len(), 2);
    fc.tc.cluster.stop().await.unwrap();
}
