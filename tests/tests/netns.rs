//! Hosts on one machine (issue 20): two coordinators on PostgreSQL and a
//! 2-of-3 signer group, every process in its own network namespace with
//! its own address on one bridge (`custos_tests::netns`). One cluster, in
//! steps: delay and loss on every signer link, a flapping signer link
//! during signing sessions, a partitioned signer (packets vanish, no
//! reset), and a partitioned leader (the standby takes over and finishes a
//! withdrawal; the old leader stops with exit 75; every signer fences its
//! epoch).
//!
//! Needs root (namespaces, links, qdiscs): it fails, saying so, without.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use custos_devkit::client::{Client, connect_as};
use custos_proto::custody::{GetClusterStatusRequest, GetKeyRequest, SignDigestResponse};
use custos_tests::coordinators::{
    Extra, assert_signers_fence, complete_half_approved, copy_data_dir, half_approved, healthz,
    wait_health,
};
use custos_tests::netns::{Netns, rehost_url, url_addr};
use custos_tests::*;

/// `[leadership] lease_ms` of both coordinators.
const LEASE: Duration = Duration::from_millis(2000);
/// What a takeover may take after the leader's link goes: the lease, a
/// standby poll, the new leader's start on a loaded 2-core machine.
const TAKEOVER_BOUND: Duration = Duration::from_secs(20);
/// The coordinator's and the signers' protocol session timeout here
/// (`session_timeout_secs`): what a session cut off by the network costs.
const SESSION_TIMEOUT_SECS: u64 = 10;
/// What one signing request may take end to end, whatever the network
/// does: the coordinator's three attempts, each bounded by the session
/// timeout, and a margin. A request running longer hangs.
const REQUEST_BOUND: Duration = Duration::from_secs(3 * SESSION_TIMEOUT_SECS + 15);
/// Delay and loss on every signer link in step 1: the delay is several
/// times a clean pool signature's time (about 20 ms), so it shows in the
/// p50 above the noise of a loaded 2-core machine.
const DELAY: Duration = Duration::from_millis(100);
const LOSS_PERCENT: f64 = 3.0;
const WALLET: &str = "w-hot";

fn leadership_toml(name: &str) -> String {
    custos_tests::coordinators::leadership_toml(name, LEASE.as_millis() as u64)
}

/// Signs a fresh random digest (interactively or from the pool), bounded
/// by [`REQUEST_BOUND`]; verifies the signature. Returns the answer and
/// the time it took, or the coordinator's error.
async fn sign(
    client: &Client,
    public_key: &[u8],
    interactive: bool,
) -> Result<(SignDigestResponse, Duration), tonic::Status> {
    let d = digest();
    let started = Instant::now();
    let answer = tokio::time::timeout(
        REQUEST_BOUND,
        client
            .clone()
            .sign_digest(sign_req(WALLET, &d, interactive)),
    )
    .await
    .unwrap_or_else(|_| panic!("a signing request hung beyond {REQUEST_BOUND:?}"))?
    .into_inner();
    let took = started.elapsed();
    verify_both(public_key, &d, &answer.r, &answer.s);
    Ok((answer, took))
}

/// A failure the network may cause must be typed and name a signer: the
/// coordinator says which peer it lost, never an opaque internal error.
fn assert_typed_naming_a_peer(e: &tonic::Status) {
    assert!(
        matches!(
            e.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Aborted
        ),
        "untyped failure: {e:?}"
    );
    assert!(
        e.message().contains("signer-"),
        "the failure names no peer: {e:?}"
    );
}

/// Signs until `n` signatures are produced (each valid), retrying failed
/// requests with new ones; every failure must be typed and name a peer.
/// Returns the answers and the failures.
async fn sign_n(
    client: &Client,
    public_key: &[u8],
    n: usize,
    interactive: bool,
    limit: Duration,
) -> (Vec<(SignDigestResponse, Duration)>, Vec<tonic::Status>) {
    let started = Instant::now();
    let mut done = Vec::new();
    let mut failed = Vec::new();
    while done.len() < n {
        assert!(
            started.elapsed() < limit,
            "{} of {n} signatures after {limit:?}; failures: {failed:?}",
            done.len()
        );
        match sign(client, public_key, interactive).await {
            Ok(a) => done.push(a),
            Err(e) => {
                assert_typed_naming_a_peer(&e);
                failed.push(e);
            }
        }
    }
    (done, failed)
}

fn p50(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The coordinator's view of [`WALLET`]'s key.
async fn wallet_key(client: &Client) -> custos_proto::custody::Key {
    client
        .clone()
        .get_key(GetKeyRequest {
            key_id: WALLET.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Waits (at most a minute) until [`WALLET`]'s pool is full, then signs
/// from it; returns the request's time. A full pool means no refill
/// (a CPU-heavy presignature session) runs beside the measured request.
async fn pooled_sign(client: &Client, public_key: &[u8]) -> Duration {
    let started = Instant::now();
    loop {
        if wallet_key(client).await.presignatures_ready >= FLOW_TEST_POOL {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the pool stays empty"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (done, _) = sign_n(client, public_key, 1, false, Duration::from_secs(60)).await;
    let (answer, took) = &done[0];
    assert_eq!(answer.mode, "presignature");
    *took
}

/// How long a TCP handshake with `addr` takes from here.
async fn connect_time(addr: std::net::SocketAddr) -> Duration {
    let started = Instant::now();
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .unwrap()
    .unwrap();
    started.elapsed()
}

/// Whether the coordinator currently counts `node` reachable.
async fn reachable(client: &Client, node: &str) -> bool {
    client
        .clone()
        .get_cluster_status(GetClusterStatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .signers
        .iter()
        .any(|s| s.node_id == node && s.reachable)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hosts_on_one_machine_partitioned_flapping_and_degraded() {
    let test_started = Instant::now();
    // Declared first, dropped last: the cluster's processes are gone (or
    // killed by the fixture) before the namespaces are deleted.
    let mut net = Netns::new(&[
        "coordinator",
        "coordinator-b",
        "signer-1",
        "signer-2",
        "signer-3",
    ]);
    let pg = custos_service::db::testdb::fresh_pg_url("custos_netns")
        .await
        .expect("PostgreSQL reachable (scripts/ensure-services.sh starts it)");
    // The hosts reach PostgreSQL (127.0.0.1 of the root namespace) through
    // a proxy on the bridge.
    let proxy = net.forward(url_addr(&pg)).await;
    let url = rehost_url(&pg, proxy);
    let mut placements = net.placements();
    placements.remove("coordinator-b");
    let timeouts = format!("session_timeout_secs = {SESSION_TIMEOUT_SECS}\n");
    let toml_a = leadership_toml("coord-a");
    let mut fc = start_flow_on(
        &flow_policy(),
        true,
        &[WALLET],
        FlowSettings {
            database_url: Some(&url),
            coordinator_toml: &toml_a,
            placements: Some(&placements),
            coordinator_keys: &timeouts,
            signer_keys: &timeouts,
            ..Default::default()
        },
    )
    .await;
    let layout = fc.tc.cluster.layout().clone();
    assert_eq!(
        layout.coordinator.grpc_listen.ip(),
        net.host("coordinator").ip
    );
    assert_eq!(
        layout.signer("signer-2").unwrap().p2p_listen,
        format!(
            "/ip4/{}/tcp/{}",
            net.host("signer-2").ip,
            layout.base_port + 111
        )
    );
    let client = fc.tc.client.clone();
    let public_key = wallet_key(&client).await.public_key;
    eprintln!(
        "cluster up in {:?}: coordinator {}, bridge {}",
        test_started.elapsed(),
        layout.coordinator.url,
        net.gateway()
    );

    // 1. Delay and loss on every signer link: signatures stay valid, and
    // the delay shows in the latency. Measured on signing from the pool
    // (one round trip to the signers, little CPU), where the network
    // rather than the machine's load sets the time; clean and degraded
    // requests alternate, so a change in the load hits both series alike.
    let signers = ["signer-1", "signer-2", "signer-3"];
    let (mut clean, mut degraded, mut failed) = (Vec::new(), Vec::new(), 0);
    let (mut how, mut rtt) = ("", Duration::MAX);
    for _ in 0..5 {
        clean.push(pooled_sign(&client, &public_key).await);
        for s in signers {
            how = net
                .impair(s, DELAY, LOSS_PERCENT)
                .unwrap_or_else(|e| panic!("delay and loss on {s}: {e}"));
        }
        // The link itself: a TCP handshake with signer-2 waits for its
        // delayed SYN-ACK.
        rtt = rtt.min(connect_time(layout.signer("signer-2").unwrap().http_listen).await);
        degraded.push(pooled_sign(&client, &public_key).await);
        for s in signers {
            net.clear_impairment(s);
        }
    }
    let (clean_p50, degraded_p50) = (p50(clean), p50(degraded));
    // Interactive sessions (several protocol rounds between the signers)
    // under the same delay and loss.
    for s in signers {
        net.impair(s, DELAY, LOSS_PERCENT).unwrap();
    }
    let (interactive, f) = sign_n(&client, &public_key, 2, true, Duration::from_secs(120)).await;
    failed += f.len();
    for s in signers {
        net.clear_impairment(s);
    }
    eprintln!(
        "signing p50 from the pool (5 each): {clean_p50:?} on a clean network, {degraded_p50:?} \
         with {DELAY:?} delay and {LOSS_PERCENT}% loss on every signer link ({how}; TCP \
         handshake with a signer {rtt:?}); interactive under it: {:?}; {failed} attempts failed",
        interactive.iter().map(|(_, t)| *t).collect::<Vec<_>>()
    );
    assert!(
        rtt >= DELAY,
        "the link is not delayed: handshake in {rtt:?}"
    );
    assert!(
        degraded_p50 > clean_p50,
        "the delay does not show: {degraded_p50:?} vs {clean_p50:?}"
    );

    // 2. A flapping link: signer-1 (in every interactive session: the
    // coordinator takes the first live signers) goes down for 150 ms every
    // 500 ms. Every signature requested is produced and valid, none hangs,
    // and what fails says which peer it lost (TCP backing off across the
    // down phases can outlast the session timeout: a typed refusal, and a
    // new request gets through).
    let flapping = net.flap(
        "signer-1",
        Duration::from_millis(150),
        Duration::from_millis(350),
    );
    let started = Instant::now();
    let mut results = Vec::new();
    for interactive in [true, false, true, false] {
        let (done, failed) = sign_n(
            &client,
            &public_key,
            1,
            interactive,
            Duration::from_secs(150),
        )
        .await;
        results.push((done, failed));
    }
    let flips = flapping.flips();
    drop(flapping);
    let failures: Vec<_> = results.iter().flat_map(|(_, f)| f.iter()).collect();
    eprintln!(
        "flapping signer-1 ({flips} down/up cycles): 4 signatures in {:?}, {} failed attempts: {:?}",
        started.elapsed(),
        failures.len(),
        failures.iter().map(|e| e.message()).collect::<Vec<_>>()
    );
    assert!(flips >= 3, "the link hardly flapped: {flips}");

    // 3. A partitioned signer: signer-1's packets vanish. The other two
    // (t = 2) still sign, within a bound; healed, signer-1 signs again.
    net.partition("signer-1");
    let started = Instant::now();
    let (done, failed) = sign_n(&client, &public_key, 3, true, Duration::from_secs(120)).await;
    let took = started.elapsed();
    eprintln!(
        "signer-1 partitioned: 3 signatures by the others in {took:?}, {} failed attempts: {:?}",
        failed.len(),
        failed.iter().map(|e| e.message()).collect::<Vec<_>>()
    );
    for (a, _) in &done {
        assert!(
            !a.signers.contains(&"signer-1".to_owned()),
            "{:?}",
            a.signers
        );
    }
    for e in &failed {
        assert!(e.message().contains("signer-1"), "{e:?}");
    }
    assert!(!reachable(&client, "signer-1").await);
    net.heal("signer-1");
    let started = Instant::now();
    while !reachable(&client, "signer-1").await {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "signer-1 not reachable again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (done, _) = sign_n(&client, &public_key, 1, true, Duration::from_secs(60)).await;
    assert!(
        done[0].0.signers.contains(&"signer-1".to_owned()),
        "{:?}",
        done[0].0.signers
    );

    // 4. A partitioned leader. A standby on its own host names the leader.
    let b_dir = fc.tc.dir.path().join("coordinator-b");
    copy_data_dir(&layout.coordinator.data_dir, &b_dir);
    let b_host = net.host("coordinator-b").clone();
    let b = Extra::start_placed(
        &layout,
        "coord-b",
        &b_dir,
        b_host.ip,
        &net.command_prefix("coordinator-b"),
    );
    wait_health(
        b.metrics(),
        "a standby",
        Duration::from_secs(90),
        |c, body| c == 503 && body.contains("standby") && body.contains(&layout.coordinator.url),
    )
    .await;
    let first = half_approved(&fc.backend, &fc.approver, WALLET, "netns-in-flight").await;
    // The leader's link goes: its lease renewals, its signer calls and
    // its clients' packets vanish.
    net.partition("coordinator");
    let took = wait_health(b.metrics(), "active", TAKEOVER_BOUND, |c, _| c == 200).await;
    eprintln!("takeover after the leader's partition: {took:?} (lease {LEASE:?})");
    assert!(took >= LEASE / 2, "took over a live lease after {took:?}");
    let (_, body) = healthz(b.metrics()).await;
    assert_eq!(body.trim(), "ok: active coordinator, epoch 2");
    // The withdrawal in flight completes on the new leader.
    let b_backend = connect_as(&b.layout, "payments-backend").await.unwrap();
    let b_approver = connect_as(&b.layout, "approver-cli").await.unwrap();
    complete_half_approved(&b_backend, &b_approver, &first, Duration::from_secs(90)).await;
    // The old leader, cut off, stops acting by its own clock; once its
    // link is back it is gone (exit 75), and every signer refuses epoch 1.
    eprintln!(
        "the old leader {} while partitioned",
        if fc.tc.cluster.is_running("coordinator") {
            "still runs"
        } else {
            "stopped"
        }
    );
    let started = Instant::now();
    net.heal("coordinator");
    while fc.tc.cluster.is_running("coordinator") {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the old leader still runs {:?} after its link came back",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let a_log = std::fs::read_to_string(layout.log_file("coordinator")).unwrap();
    assert!(
        a_log.contains("lost the leadership lease") && a_log.contains("exit 75"),
        "{}",
        &a_log[a_log.len().saturating_sub(3000)..]
    );
    assert_signers_fence(&layout, &first, 1, 2).await;
    assert_eq!(withdrawal(&b_backend, &first).await.state, "signed");
    eprintln!("netns test done in {:?}", test_started.elapsed());
}

/// The fixture's own promise: nothing of a run outlives it, even when the
/// test panics, and what a dead run left behind is removed at the next
/// setup.
#[test]
fn namespaces_are_removed_after_a_panic_and_after_a_dead_run() {
    let ours = |listing: &str, name: &str| listing.lines().any(|l| l.starts_with(name));
    let netns_list = || {
        String::from_utf8(
            std::process::Command::new("ip")
                .args(["netns", "list"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
    };
    let link_exists = |name: &str| {
        std::process::Command::new("ip")
            .args(["link", "show", name])
            .output()
            .unwrap()
            .status
            .success()
    };
    // A run whose process is gone (a pid above any pid_max) left a
    // namespace and a link.
    let stale_ns = "cx7ffffffe-signer-1";
    let stale_link = "cx7ffffffe-h0";
    let ip = |args: &[&str]| {
        assert!(
            std::process::Command::new("ip")
                .args(args)
                .status()
                .unwrap()
                .success(),
            "ip {args:?}"
        );
    };
    ip(&["netns", "add", stale_ns]);
    ip(&[
        "link",
        "add",
        stale_link,
        "type",
        "veth",
        "peer",
        "name",
        "cx7ffffffe-n0",
    ]);
    let mut names = (String::new(), String::new());
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let net = Netns::new(&["signer-1"]);
        names = (
            net.host("signer-1").netns.clone(),
            net.host("signer-1").port.clone(),
        );
        assert!(ours(&netns_list(), &names.0));
        assert!(link_exists(&names.1));
        net.partition("signer-1");
        panic!("a failing test");
    }));
    assert!(panicked.is_err());
    assert!(
        !ours(&netns_list(), stale_ns),
        "the dead run's namespace stays"
    );
    assert!(!link_exists(stale_link), "the dead run's link stays");
    assert!(
        !ours(&netns_list(), &names.0),
        "{} outlived the test",
        names.0
    );
    assert!(!link_exists(&names.1), "{} outlived the test", names.1);
}
