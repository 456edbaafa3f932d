//! Starting real `custos-signer` processes from a generated layout.
//!
//! Needs the signer binary next to the test's target directory
//! (`cargo build -p custos-signer-node` first, same `CARGO_TARGET_DIR`); the
//! tests are skipped with a message when it is missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers outside #[test] fns

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use custos_devkit::{
    Cluster, ClusterLayout, ClusterSpec, CoordinatorMode, DevkitError, FaultInjection, PidFile,
    StartOptions, free_base_port, generate, http_get, is_alive, stop_from_pid_file,
};

/// `target/debug` (the test binary lives in `target/debug/deps`), if it has the signer.
fn bin_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent()?.parent()?.to_path_buf();
    if dir.join(custos_devkit::SIGNER_BIN).is_file() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: {} missing: run `cargo build -p custos-signer-node` with the same CARGO_TARGET_DIR",
            dir.join(custos_devkit::SIGNER_BIN).display()
        );
        None
    }
}

fn primes() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mpc/tests/fixtures/test-primes.json");
    p.is_file().then_some(p)
}

/// The aux info made from `primes()` for the default 3 signers.
fn aux_fixture() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mpc/tests/fixtures/aux-info-3.json");
    p.is_file().then_some(p)
}

fn layout(dir: &Path) -> ClusterLayout {
    layout_with_fault(dir, None)
}

fn layout_with_fault(dir: &Path, fault: Option<(&str, FaultInjection)>) -> ClusterLayout {
    let mut spec = ClusterSpec::new(dir.join("cluster"));
    spec.base_port = free_base_port();
    spec.primes_file = primes();
    spec.aux_fixture = aux_fixture();
    if let Some((node, fault)) = fault {
        spec.fault_injection.insert(node.into(), fault);
    }
    generate(&spec).unwrap()
}

fn signers_only() -> StartOptions {
    StartOptions::default()
        .coordinator(CoordinatorMode::Skip)
        .timeout(Duration::from_secs(120))
}

fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
}

fn pids(l: &ClusterLayout) -> PidFile {
    PidFile::load(&l.dir).unwrap().expect("pids.json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_signers_start_answer_health_restart_and_stop() {
    let Some(bins) = bin_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let l = layout_with_fault(
        tmp.path(),
        Some(("signer-3", FaultInjection::CorruptProtocolMessages)),
    );
    let mut cluster = Cluster::start_with(l.clone(), &bins, signers_only())
        .await
        .unwrap();
    assert!(!cluster.has_coordinator());

    for s in &l.signers {
        assert!(accepts(s.control_listen), "{} control port", s.node_id);
        let (code, body) = http_get(s.http_listen, "/healthz").await.unwrap();
        assert_eq!(code, 200, "{} /healthz: {body}", s.node_id);
        let (code, metrics) = http_get(s.http_listen, "/metrics").await.unwrap();
        assert_eq!(code, 200);
        assert!(metrics.contains("custos_signer_keys"), "{metrics}");
    }
    let records = pids(&l).processes;
    assert_eq!(records.len(), 3);
    assert!(records.iter().all(is_alive));

    // The daemon took the [dev] section: fault injection on signer-3 only.
    let log3 = std::fs::read_to_string(l.log_file("signer-3")).unwrap();
    assert!(log3.contains("FAULT INJECTION"), "{log3}");
    let log1 = std::fs::read_to_string(l.log_file("signer-1")).unwrap();
    assert!(!log1.contains("FAULT INJECTION"));
    // The daemon loaded the identity the layout advertises.
    let log = std::fs::read_to_string(l.log_file("signer-2")).unwrap();
    assert!(
        log.contains(&l.signers[1].peer_id),
        "signer-2 log lacks its PeerId:\n{log}"
    );

    // Crash and restart signer-2: same ports, same identity, fresh pid.
    let old_pid = cluster.pid("signer-2").unwrap();
    cluster.kill_signer("signer-2").unwrap();
    assert_eq!(cluster.pid("signer-2"), None);
    assert!(!cluster.is_running("signer-2"));
    assert!(cluster.is_running("signer-1"));
    assert!(!accepts(l.signers[1].control_listen));
    assert!(pids(&l).processes.iter().all(|r| r.name != "signer-2"));
    cluster.restart_signer("signer-2").await.unwrap();
    let new_pid = cluster.pid("signer-2").unwrap();
    assert_ne!(new_pid, old_pid);
    assert!(accepts(l.signers[1].control_listen));
    assert_eq!(
        http_get(l.signers[1].http_listen, "/healthz")
            .await
            .unwrap()
            .0,
        200
    );
    let log = std::fs::read_to_string(l.log_file("signer-2")).unwrap();
    assert_eq!(
        log.matches("==== custos-devkit: starting signer-2").count(),
        2
    );

    // Graceful restart of a running node works too.
    cluster.restart_signer("signer-1").await.unwrap();
    assert!(accepts(l.signers[0].control_listen));

    assert!(matches!(
        cluster.kill_signer("signer-9"),
        Err(DevkitError::UnknownNode(_))
    ));
    assert!(matches!(
        cluster.kill_coordinator(),
        Err(DevkitError::UnknownNode(_))
    ));

    let records = pids(&l).processes;
    cluster.stop().await.unwrap();
    assert!(
        PidFile::load(&l.dir).unwrap().is_none(),
        "pids.json removed"
    );
    assert!(!records.iter().any(is_alive));
    for s in &l.signers {
        assert!(!accepts(s.control_listen));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_exits_fails_the_start_with_its_log() {
    let Some(bins) = bin_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let l = layout(tmp.path());
    let cfg = &l.signers[2].config;
    let text = std::fs::read_to_string(cfg).unwrap();
    std::fs::write(
        cfg,
        text.replacen("session_timeout_secs", "session_timeout_sec", 1),
    )
    .unwrap();

    let err = Cluster::start_with(l.clone(), &bins, signers_only())
        .await
        .unwrap_err();
    let DevkitError::ProcessExited { name, tail, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(name, "signer-3");
    assert!(tail.contains("session_timeout_sec"), "{err}");
    // Everything started was killed; nothing is left listening.
    assert!(PidFile::load(&l.dir).unwrap().is_none());
    for s in &l.signers[..2] {
        assert!(!accepts(s.control_listen), "{} still up", s.node_id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detached_cluster_stops_from_the_pid_file_and_drop_kills() {
    let Some(bins) = bin_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let l = layout(tmp.path());

    // A second start of the same directory, or of another one on the same
    // ports, fails clearly and leaves the first cluster alone.
    let first = Cluster::start_with(l.clone(), &bins, signers_only())
        .await
        .unwrap();
    let err = Cluster::start_with(l.clone(), &bins, signers_only())
        .await
        .unwrap_err();
    assert!(
        matches!(err, DevkitError::AlreadyRunning { alive: 3, .. }),
        "{err}"
    );
    let mut other = ClusterSpec::new(tmp.path().join("other"));
    other.base_port = l.base_port;
    let other = generate(&other).unwrap();
    let err = Cluster::start_with(other, &bins, signers_only())
        .await
        .unwrap_err();
    assert!(matches!(err, DevkitError::PortInUse { .. }), "{err}");
    assert!(first.records().iter().all(is_alive));
    assert_eq!(PidFile::load(&l.dir).unwrap().unwrap().processes.len(), 3);
    // Drop kills and reaps.
    let records = first.records();
    drop(first);
    assert!(!records.iter().any(is_alive));
    assert!(PidFile::load(&l.dir).unwrap().is_none());

    // Detached (custos dev up): outlives the value, stopped via pids.json.
    let cluster = Cluster::start_with(l.clone(), &bins, signers_only().detached(true))
        .await
        .unwrap();
    let records = cluster.detach();
    assert_eq!(records.len(), 3);
    assert!(records.iter().all(is_alive));
    assert!(accepts(l.signers[0].control_listen));
    assert_eq!(stop_from_pid_file(&l.dir).unwrap(), 3);
    assert!(!records.iter().any(is_alive));
    assert!(!accepts(l.signers[0].control_listen));
    // Idempotent.
    assert_eq!(stop_from_pid_file(&l.dir).unwrap(), 0);
}

#[tokio::test]
async fn missing_signer_binary_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = ClusterSpec::new(tmp.path().join("c"));
    spec.base_port = free_base_port();
    let l = generate(&spec).unwrap();
    let err = Cluster::start(l, tmp.path()).await.unwrap_err();
    assert!(matches!(err, DevkitError::MissingBinary { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("custos-signer") && msg.contains("cargo build --workspace"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_cluster_with_the_coordinator() {
    let Some(bins) = bin_dir() else { return };
    if !bins.join(custos_devkit::COORDINATOR_BIN).is_file() {
        eprintln!(
            "SKIPPED: custos-coordinator not built in {}",
            bins.display()
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let l = layout(tmp.path());
    let opts = StartOptions::default()
        .coordinator(CoordinatorMode::Required)
        .timeout(Duration::from_secs(120));
    let mut cluster = Cluster::start_with(l.clone(), &bins, opts).await.unwrap();
    assert!(cluster.has_coordinator());
    assert!(accepts(l.coordinator.grpc_listen));
    let (code, _) = http_get(l.coordinator.metrics_listen, "/healthz")
        .await
        .unwrap();
    assert!(
        code == 200 || code == 503,
        "coordinator /healthz answered {code}"
    );
    let records = pids(&l).processes;
    assert_eq!(records.len(), 4);
    assert_eq!(
        records[0].name, "coordinator",
        "coordinator listed (and stopped) first"
    );
    let log = std::fs::read_to_string(l.log_file("coordinator")).unwrap();
    assert!(!log.contains('\u{1b}'), "ANSI escapes in the log");

    cluster.kill_coordinator().unwrap();
    assert!(!accepts(l.coordinator.grpc_listen));
    cluster.restart_coordinator().await.unwrap();
    assert!(accepts(l.coordinator.grpc_listen));
    cluster.stop().await.unwrap();
    assert!(!records.iter().any(is_alive));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_clients_get_their_roles_and_signers_the_log_key() {
    use custos_devkit::client::{connect, connect_as};
    use custos_proto::custody::{
        CreateWithdrawalRequest, GetCheckpointRequest, ListPendingRequest, ListWalletsRequest,
        SubmitApprovalRequest,
    };
    let Some(bins) = bin_dir() else { return };
    if !bins.join(custos_devkit::COORDINATOR_BIN).is_file() {
        eprintln!(
            "SKIPPED: custos-coordinator not built in {}",
            bins.display()
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = ClusterSpec::new(tmp.path().join("locked"));
    spec.base_port = free_base_port();
    spec.primes_file = primes();
    spec.aux_fixture = aux_fixture();
    spec.raw_digest = false;
    let l = generate(&spec).unwrap();
    assert_eq!(l.log_key, None, "no bin_dir: installed at start");
    let opts = StartOptions::default()
        .coordinator(CoordinatorMode::Required)
        .timeout(Duration::from_secs(120));
    let cluster = Cluster::start_with(l.clone(), &bins, opts).await.unwrap();

    // The start asked the coordinator for its log key and gave it to every signer.
    let key = cluster.layout().log_key.clone().expect("log key installed");
    assert_eq!(
        ClusterLayout::load(&l.dir).unwrap().log_key.as_deref(),
        Some(key.as_str())
    );
    for s in &l.signers {
        let v: toml::Value = toml::from_str(&std::fs::read_to_string(&s.config).unwrap()).unwrap();
        assert_eq!(v["cosigner"]["log_key"].as_str(), Some(key.as_str()));
        assert!(
            v.get("dev")
                .and_then(|d| d.get("allow_raw_digest"))
                .is_none(),
            "locked-down signer allows raw digests"
        );
    }

    let mut backend = connect_as(&l, custos_devkit::BACKEND_CLIENT).await.unwrap();
    let mut approver = connect_as(&l, custos_devkit::APPROVER_CLIENT)
        .await
        .unwrap();
    let mut auditor = connect_as(&l, custos_devkit::AUDITOR_CLIENT).await.unwrap();
    let mut admin = connect_as(&l, custos_devkit::ADMIN_CLIENT).await.unwrap();
    connect(&l).await.unwrap();
    backend.list_wallets(ListWalletsRequest {}).await.unwrap();
    admin.list_wallets(ListWalletsRequest {}).await.unwrap();
    approver
        .list_pending(ListPendingRequest::default())
        .await
        .unwrap();
    auditor
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .unwrap();
    denied(
        approver
            .create_withdrawal(CreateWithdrawalRequest {
                idempotency_key: "k".into(),
                wallet: "demo-hot".into(),
                asset: "ETH".into(),
                destination: "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed".into(),
                amount: "1".into(),
                ..CreateWithdrawalRequest::default()
            })
            .await,
        "approver CreateWithdrawal",
    );
    denied(
        backend
            .submit_approval(SubmitApprovalRequest {
                withdrawal_id: "wd-x".into(),
                approver: "alice".into(),
                verdict: 1,
                signature: "00".into(),
                reason: String::new(),
                fee_bump_statement: Vec::new(),
                webauthn: None,
            })
            .await,
        "backend SubmitApproval",
    );
    let err = match connect_as(&l, "nobody").await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("unknown client connected"),
    };
    assert!(
        err.contains("nobody") && err.contains("payments-backend"),
        "{err}"
    );
    cluster.stop().await.unwrap();
}

fn denied<T>(r: Result<tonic::Response<T>, tonic::Status>, what: &str) {
    match r {
        Err(s) if s.code() == tonic::Code::PermissionDenied => {}
        Err(s) => panic!("{what}: expected PermissionDenied, got {s:?}"),
        Ok(_) => panic!("{what}: allowed"),
    }
}
