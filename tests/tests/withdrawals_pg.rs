//! The same withdrawal flow with the coordinator on PostgreSQL (real server,
//! fresh database): every action, idempotency, and resume after kill -9.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use custos_policy::Verdict as PV;
use custos_proto::custody::GetWithdrawalRequest;
use custos_tests::*;

const LIMIT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn withdrawal_flow_on_postgresql() {
    let url = custos_service::db::testdb::fresh_pg_url("custos_flow")
        .await
        .expect("PostgreSQL reachable (scripts/ensure-services.sh starts it)");
    let mut fc = start_flow_on(
        &flow_policy(),
        false,
        &["w-hot", "w-vel"],
        FlowSettings {
            database_url: Some(&url),
            ..Default::default()
        },
    )
    .await;
    let b = fc.backend.clone();

    // allow
    let w = b
        .clone()
        .create_withdrawal(withdrawal_req("pg-allow", "w-vel", WHITELISTED, ETH / 3))
        .await
        .unwrap()
        .into_inner();
    wait_state(&b, &w.id, &["signed"], LIMIT).await;

    // Concurrent requests are decided in group commits (one log append and
    // one PostgreSQL transaction per batch): an `allow` still counts toward
    // the velocity of every request decided after it, in the same batch or a
    // later one. 1/3 ETH (plus a fee cap ≤ 0.01) of w-vel's 3 ETH daily limit
    // is used, so exactly three of eight 0.7 ETH requests fit.
    let calls = (0..8).map(|i| {
        let b = b.clone();
        async move {
            b.clone()
                .create_withdrawal(withdrawal_req(
                    &format!("pg-burst-{i}"),
                    "w-vel",
                    WHITELISTED,
                    7 * ETH / 10,
                ))
                .await
                .unwrap()
                .into_inner()
        }
    });
    let burst = futures::future::join_all(calls).await;
    let allowed: Vec<_> = burst
        .iter()
        .filter(|w| w.rule_id == "small-allow")
        .collect();
    let blocked = burst
        .iter()
        .filter(|w| w.rule_id == "small-over-limit" && w.state == "blocked")
        .count();
    assert_eq!((allowed.len(), blocked), (3, 5), "{burst:#?}");
    for w in allowed {
        wait_state(&b, &w.id, &["signed"], LIMIT).await;
    }
    // Each stage of the path shows on /metrics, and every request went
    // through a group commit.
    let http = fc.tc.cluster.layout().coordinator.metrics_listen;
    for stage in [
        "risk",
        "policy",
        "log_append",
        "intake",
        "intake_store",
        "checkpoint",
        "witness_round",
        "registration",
        "signing",
    ] {
        let n = metric(
            http,
            &format!("custos_stage_latency_seconds_count{{stage=\"{stage}\"}}"),
        );
        assert!(n >= 1.0, "stage {stage} never timed");
    }
    let requests = metric(http, "custos_intake_requests_total");
    let batches = metric(http, "custos_intake_batches_total");
    assert!(
        requests >= 9.0 && batches >= 1.0 && batches <= requests,
        "{batches} batches for {requests} requests"
    );
    eprintln!("intake: {requests} requests in {batches} group commits");
    // The allowed ones registered their quorums in shared rounds (one call
    // per signer carries every registration waiting meanwhile).
    let registrations = metric(http, "custos_registrations_total");
    let rounds = metric(http, "custos_registration_rounds_total");
    assert!(
        registrations >= 3.0 && rounds >= 1.0 && rounds <= registrations,
        "{registrations} registrations in {rounds} rounds"
    );
    eprintln!("registration: {registrations} quorums in {rounds} rounds");

    // concurrent identical requests: one withdrawal
    let calls = (0..6).map(|_| {
        let b = b.clone();
        async move {
            b.clone()
                .create_withdrawal(withdrawal_req("pg-race", "w-hot", WHITELISTED, 2 * ETH))
                .await
                .unwrap()
                .into_inner()
                .id
        }
    });
    let ids = futures::future::join_all(calls).await;
    assert!(ids.windows(2).all(|p| p[0] == p[1]), "{ids:?}");

    // 2-of-3, with a crash while awaiting approvals
    let m = b
        .clone()
        .create_withdrawal(withdrawal_req("pg-two", "w-hot", WHITELISTED, 3 * ETH))
        .await
        .unwrap()
        .into_inner();
    approve(&fc.approver, &m, "alice").await;
    fc.tc.cluster.kill_coordinator().unwrap();
    fc.tc.cluster.restart_coordinator().await.unwrap();
    fc.tc.wait_aux_ready(Duration::from_secs(60)).await;
    let m = fc
        .backend
        .clone()
        .get_withdrawal(GetWithdrawalRequest { id: m.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.state, "awaiting_approvals");
    assert_eq!(m.approvals.len(), 1);
    approve(&fc.approver, &m, "bob").await;
    wait_state(&fc.backend, &m.id, &["signed"], LIMIT).await;

    // approvals + delay, cancelled during the lock
    let c = fc
        .backend
        .clone()
        .create_withdrawal(withdrawal_req("pg-cancel", "w-hot", WHITELISTED, 40 * ETH))
        .await
        .unwrap()
        .into_inner();
    approve(&fc.approver, &c, "alice").await;
    approve(&fc.approver, &c, "carol").await;
    wait_state(&fc.backend, &c.id, &["time_locked"], LIMIT).await;
    let x = submit_verdict(&fc.approver, &c, "erin", PV::Cancel, "test")
        .await
        .unwrap();
    assert_eq!(x.state, "cancelled");

    // block
    let k = fc
        .backend
        .clone()
        .create_withdrawal(withdrawal_req(
            "pg-block",
            "w-hot",
            NOT_WHITELISTED,
            2 * ETH,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(k.state, "blocked");

    // The audit log lives in PostgreSQL too and is witnessed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (size, note) = custos_tests::audit::checkpoint(&fc).await;
    assert!(size > 10, "{size} {note}");
    assert!(
        note.contains("signer-1"),
        "checkpoint not co-signed: {note}"
    );
    fc.tc.cluster.stop().await.unwrap();
}
