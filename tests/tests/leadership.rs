//! Several coordinators on one PostgreSQL database (real processes, real
//! signers): one active at a time through the lease, a standby that answers
//! with the leader's address, a takeover within the lease bound after a
//! SIGSTOP and after a kill -9, the withdrawal in flight completed by the
//! new leader, and the old leader's epoch refused by every signer
//! (docs/SECURITY.md, cases 65 and 66).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::{Duration, Instant};

use custos_devkit::client::connect_as;
use custos_devkit::http::HttpTarget;
use custos_proto::custody::{GetCheckpointRequest, GetWithdrawalRequest};
use custos_tests::coordinators::{
    Extra, assert_signers_fence, complete_half_approved, copy_data_dir, half_approved, healthz,
    wait_health,
};
use custos_tests::*;

const LIMIT: Duration = Duration::from_secs(90);
/// `[leadership] lease_ms` of this cluster.
const LEASE: Duration = Duration::from_millis(2000);
/// What a takeover may take: the lease, a standby poll, the new leader's
/// start (database, log, engine) on a loaded 2-core machine.
const TAKEOVER_BOUND: Duration = Duration::from_secs(15);

fn leadership_toml(name: &str) -> String {
    custos_tests::coordinators::leadership_toml(name, LEASE.as_millis() as u64)
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

async fn checkpoint_size(client: &custos_devkit::client::Client) -> u64 {
    client
        .clone()
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .unwrap()
        .into_inner()
        .size
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn standby_takes_over_and_the_old_leader_is_fenced() {
    let url = custos_service::db::testdb::fresh_pg_url("custos_ha")
        .await
        .expect("PostgreSQL reachable (scripts/ensure-services.sh starts it)");
    let toml_a = leadership_toml("coord-a");
    let mut fc = start_flow_on(
        &flow_policy(),
        false,
        &["w-hot"],
        FlowSettings {
            database_url: Some(&url),
            coordinator_toml: &toml_a,
            ..Default::default()
        },
    )
    .await;
    let layout = fc.tc.cluster.layout().clone();
    let a_metrics = layout.coordinator.metrics_listen;
    let a_pid = fc.tc.cluster.pid("coordinator").unwrap();

    // 1. The first coordinator took the free lease: active, epoch 1.
    let (code, body) = healthz(a_metrics).await;
    assert_eq!(
        (code, body.trim()),
        (200, "ok: active coordinator, epoch 1")
    );
    assert_eq!(metric(a_metrics, "custos_coordinator_active"), 1.0);

    // 2. A second coordinator on the same database is a standby: it names
    // the leader on /healthz (503), over gRPC and over HTTP, and does no work.
    let b_dir = fc.tc.dir.path().join("coordinator-b");
    copy_data_dir(&layout.coordinator.data_dir, &b_dir);
    let mut b = Extra::start(
        &layout,
        "coord-b",
        &b_dir,
        Some(custos_devkit::free_base_port()),
    );
    wait_health(b.metrics(), "a standby", LIMIT, |c, body| {
        c == 503 && body.contains("standby")
    })
    .await;
    let (_, body) = healthz(b.metrics()).await;
    assert!(
        body.contains(&format!(
            "the active coordinator is {} ",
            layout.coordinator.url
        )) && body.contains("epoch 1"),
        "{body}"
    );
    assert_eq!(metric(b.metrics(), "custos_coordinator_active"), 0.0);
    assert_eq!(metric(b.metrics(), "custos_coordinator_epoch"), 1.0);
    let b_backend = connect_as(&b.layout, "payments-backend").await.unwrap();
    let refused = b_backend
        .clone()
        .get_withdrawal(GetWithdrawalRequest { id: "wd-x".into() })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert_eq!(
        refused
            .metadata()
            .get("custos-leader")
            .unwrap()
            .to_str()
            .unwrap(),
        layout.coordinator.url
    );
    let http = HttpTarget::coordinator_api(&b.layout)
        .unwrap()
        .request("GET", "/v1/withdrawals", &[], &[])
        .await
        .unwrap();
    assert_eq!(http.status, 503, "{}", http.body);
    assert_eq!(
        http.header("custos-leader"),
        Some(layout.coordinator.http_url.as_str())
    );
    assert!(http.body.contains("standby"), "{}", http.body);

    // 3. A withdrawal half approved on the leader; then the leader is
    // paused (SIGSTOP): the standby takes over within the bound.
    let first = half_approved(&fc.backend, &fc.approver, "w-hot", "ha-paused").await;
    let size_before = checkpoint_size(&fc.auditor).await;
    signal(a_pid, "-STOP");
    let took = wait_health(b.metrics(), "active", LIMIT, |c, _| c == 200).await;
    eprintln!("takeover after SIGSTOP: {took:?} (lease {LEASE:?})");
    assert!(took < TAKEOVER_BOUND, "takeover took {took:?}");
    assert!(took >= LEASE / 2, "took over a live lease after {took:?}");
    let (_, body) = healthz(b.metrics()).await;
    assert_eq!(body.trim(), "ok: active coordinator, epoch 2");
    assert_eq!(metric(b.metrics(), "custos_coordinator_epoch"), 2.0);

    // The new leader resumes the withdrawal: bob's approval completes it.
    let b_approver = connect_as(&b.layout, "approver-cli").await.unwrap();
    complete_half_approved(&b_backend, &b_approver, &first, LIMIT).await;
    let b_auditor = connect_as(&b.layout, "auditor").await.unwrap();
    assert!(
        checkpoint_size(&b_auditor).await > size_before,
        "one log, continued"
    );

    // 4. Every signer now refuses the old epoch, naming both.
    assert_signers_fence(&layout, &first, 1, 2).await;

    // 5. The paused leader resumes: it finds its lease gone and stops at
    // once (exit 75), without touching the withdrawal.
    signal(a_pid, "-CONT");
    let started = Instant::now();
    while fc.tc.cluster.is_running("coordinator") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the old leader still runs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a_log = std::fs::read_to_string(layout.log_file("coordinator")).unwrap();
    assert!(
        a_log.contains("lost the leadership lease") && a_log.contains("exit 75"),
        "{}",
        &a_log[a_log.len().saturating_sub(3000)..]
    );
    assert_eq!(withdrawal(&b_backend, &first).await.state, "signed");
    assert_eq!(metric(b.metrics(), "custos_coordinator_active"), 1.0);

    // 6. The first coordinator comes back as a standby; the leader is
    // killed (kill -9): the standby takes over and completes a withdrawal
    // the dead leader left half approved.
    let a2 = Extra::start(&layout, "coord-a2", &layout.coordinator.data_dir, None);
    wait_health(a_metrics, "a standby", LIMIT, |c, body| {
        c == 503 && body.contains("standby")
    })
    .await;
    let second = half_approved(&b_backend, &b_approver, "w-hot", "ha-killed").await;
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    let took = wait_health(a_metrics, "active", LIMIT, |c, _| c == 200).await;
    eprintln!("takeover after kill -9: {took:?}");
    assert!(took < TAKEOVER_BOUND, "takeover took {took:?}");
    assert_eq!(metric(a_metrics, "custos_coordinator_epoch"), 3.0);
    let w = withdrawal(&fc.backend, &second).await;
    approve(&fc.approver, &w, "bob").await;
    wait_state(&fc.backend, &second, &["signed"], LIMIT).await;
    assert_eq!(withdrawal(&fc.backend, &first).await.state, "signed");
    assert!(a2.log().contains("epoch 3"), "{}", a2.log());
    // One log across three leaders: the latest checkpoint is co-signed by
    // all three witnesses, each of which checked its consistency with the
    // last one it co-signed under an earlier leader.
    let (size, _) = custos_tests::audit::settled(&fc).await;
    assert!(size > size_before, "{size} <= {size_before}");
    assert!(b.log().contains("active"), "{}", b.log());
}
