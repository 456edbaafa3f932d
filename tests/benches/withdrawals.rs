//! The withdrawal flow under load on a real 2-of-3 cluster (coordinator and
//! three signers as processes on loopback, TLS gRPC, libp2p), one wallet.
//!
//! `cargo bench -p custos-tests --bench withdrawals -- [--count N] [--creates M]
//! [--create-rate R] [--allowed-rate S] [--only-creates]` (defaults 200, 1000,
//! 1000/s, 50/s; build the daemons first:
//! `cargo build --release --workspace --bins --features custos-signer-node/dev,custos-coordinator/dev,custos-cli/dev`).
//!
//! - A: M `CreateWithdrawal` (5 ETH, rule `medium-two-approvals`) sent at R per
//!   second, open loop (each at its own instant, whatever the answers before it
//!   did): RPC latency (it returns after risk scoring and policy evaluation, in
//!   `awaiting_approvals`), requests accepted per second (M over the time from
//!   the first send to the last answer), and no loss (exactly M withdrawals,
//!   each awaiting approvals). Then a burst of all of them at once would only
//!   measure a queue; the rate is what a backend sends.
//! - B: two treasury approvals each for the first N of them (alice then bob;
//!   20 withdrawals in flight): quorum (bob's response) → `signed`
//!   (timestamped from `WatchWithdrawals`), and signatures/s. Every signature
//!   is verified over `tx_digest`.
//! - C: N allowed withdrawals (0.5 ETH, rule `small-allow`) sent at S per
//!   second, open loop: request → `signed` latency and signed withdrawals/s.
//!
//! The presignature pool (one per wallet) is filled before A and refilled before
//! C, so signing draws on ready presignatures; it refills in the background as
//! B and C consume it (as in production). The cluster runs
//! `tests/fixtures/bench-policy.toml` (high policy velocity limits), and its
//! coordinator's risk model has the velocity signals at 0 points: a burst of
//! hundreds of withdrawals from one wallet in minutes is exactly what they flag
//! (score ≥ 80 blocks), and this benchmark measures the flow, not the risk model.
//!
//! Baseline: in-process `custos_mpc` online signing (two `issue_partial` and a
//! verified `combine` from a presignature) and presignature generation
//! (`custos_mpc::sim`), as in the cluster benchmark.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use custos_devkit::client::Client;
use custos_mpc::protocol::{combine, issue_partial, public_key};
use custos_mpc::{Primes, sim};
use custos_proto::custody::{
    GetKeyRequest, ListWithdrawalsRequest, WatchWithdrawalsRequest, Withdrawal,
};
use custos_tests::{
    ETH, WHITELISTED, approve, digest, start_flow_tuned, verify_both, withdrawal, withdrawal_req,
};
use futures::StreamExt;

const WALLET: &str = "w-bench";
/// Withdrawals being approved at once in phase B.
const IN_FLIGHT: usize = 20;
/// Extra presignatures above N in the pool target.
const POOL_SLACK: u32 = 8;
const LIMIT: Duration = Duration::from_secs(1800);
/// The risk model without its velocity signals, and API limits above the
/// offered load (the defaults, 100/s per client and route, would refuse it).
const TUNING: &str = "[risk]\nvelocity_count_points = 0\nvelocity_amount_points = 0\n\
    [limits]\nrate_per_sec = 100000\nburst = 100000\nmax_concurrent = 4096";

/// What the command line asks for.
struct Args {
    /// Withdrawals approved (B) and allowed (C).
    n: usize,
    /// Withdrawals created in A.
    creates: usize,
    /// A's offered rate, per second.
    create_rate: f64,
    /// C's offered rate, per second.
    allowed_rate: f64,
    /// Only A (no pool, no signing).
    only_creates: bool,
}

/// Sends `count` calls of `call(i)` at `rate` per second, each at its own
/// instant (open loop); returns each answer with when it was sent and
/// answered.
async fn open_loop<T, F, Fut>(count: usize, rate: f64, call: F) -> Vec<(T, Instant, Instant)>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let at = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(at.into()).await;
        let fut = call(i);
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let answer = fut.await;
            (answer, sent, Instant::now())
        }));
    }
    let mut out = Vec::with_capacity(count);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ------------------------------------------------------------ baseline

struct Baseline {
    presign_ms: f64,
    online: Vec<f64>,
}

fn block<T>(f: impl Future<Output = T>) -> T {
    futures::executor::block_on(f)
}

/// Every party in one thread: presignature generation and online signing.
fn in_process(signatures: usize) -> Baseline {
    let primes: Vec<Primes> =
        serde_json::from_slice(&std::fs::read(custos_tests::primes_fixture()).unwrap()).unwrap();
    let aux = block(sim::aux_info(primes.into_iter().take(3).collect(), None)).unwrap();
    let shares = block(sim::keygen(2, &aux)).unwrap();
    let mut presign = Vec::new();
    let mut presigs = Vec::new();
    for _ in 0..3 {
        let s = Instant::now();
        presigs = block(sim::presign(&shares, &[0, 1], None)).unwrap();
        presign.push(ms(s.elapsed()));
    }
    // The same presignature is re-timed only because these are test keys.
    let pk = public_key(&shares[0]);
    let mut online = Vec::new();
    for _ in 0..signatures {
        let d = digest();
        let s = Instant::now();
        let partials: Vec<_> = presigs
            .iter()
            .cloned()
            .map(|p| issue_partial(p, &d))
            .collect();
        combine(&partials, &pk, &d).unwrap();
        online.push(ms(s.elapsed()));
    }
    Baseline {
        presign_ms: presign.iter().sum::<f64>() / presign.len() as f64,
        online,
    }
}

// ------------------------------------------------------------ cluster

/// When this client first saw each (withdrawal, state) on `WatchWithdrawals`.
type Seen = Arc<Mutex<HashMap<String, HashMap<String, Instant>>>>;

fn watch(client: &Client) -> Seen {
    let seen: Seen = Arc::default();
    let (client, s) = (client.clone(), seen.clone());
    tokio::spawn(async move {
        let mut stream = client
            .clone()
            .watch_withdrawals(WatchWithdrawalsRequest {
                cursor: 0,
                withdrawal_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        // Ends when the cluster stops.
        while let Ok(Some(ev)) = stream.message().await {
            let now = Instant::now();
            s.lock()
                .unwrap()
                .entry(ev.withdrawal_id)
                .or_default()
                .entry(ev.state)
                .or_insert(now);
        }
    });
    seen
}

/// Waits until every id was seen `signed`; panics on a failure exit.
async fn wait_signed(client: &Client, seen: &Seen, ids: &[String]) -> HashMap<String, Instant> {
    let started = Instant::now();
    loop {
        let (done, bad) = {
            let s = seen.lock().unwrap();
            let done: HashMap<String, Instant> = ids
                .iter()
                .filter_map(|id| Some((id.clone(), *s.get(id)?.get("signed")?)))
                .collect();
            let bad = ids.iter().find(|id| {
                s.get(*id).is_some_and(|st| {
                    ["failed", "blocked", "rejected", "expired", "cancelled"]
                        .iter()
                        .any(|b| st.contains_key(*b))
                })
            });
            (done, bad.cloned())
        };
        if let Some(id) = bad {
            let w = withdrawal(client, &id).await;
            panic!(
                "withdrawal {id} ended {} ({}); notes {:?}",
                w.state, w.reason, w.signer_notes
            );
        }
        if done.len() == ids.len() {
            return done;
        }
        assert!(
            started.elapsed() < LIMIT,
            "{} of {} signed after {LIMIT:?}",
            done.len(),
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn list(client: &Client, state: &str) -> Vec<Withdrawal> {
    custos_tests::listed(
        client,
        ListWithdrawalsRequest {
            wallet: WALLET.into(),
            state: state.into(),
            ..Default::default()
        },
    )
    .await
}

/// Waits until the wallet has `want` presignatures ready; returns the wait
/// and how many were generated meanwhile.
async fn fill_pool(admin: &Client, want: u32) -> (Duration, u32) {
    let s = Instant::now();
    let mut first = None;
    let mut last = 0;
    loop {
        let ready = admin
            .clone()
            .get_key(GetKeyRequest {
                key_id: WALLET.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .presignatures_ready;
        let first = *first.get_or_insert(ready);
        if ready >= want {
            return (s.elapsed(), ready - first);
        }
        if ready / 25 != last / 25 {
            eprintln!(
                "    pool {ready}/{want} after {:.0} s",
                s.elapsed().as_secs_f64()
            );
        }
        last = ready;
        assert!(s.elapsed() < LIMIT, "pool {ready}/{want} after {LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn verify(pk: &[u8], w: &Withdrawal) {
    assert_eq!(w.state, "signed", "{}", w.id);
    let d: [u8; 32] = w.tx_digest.clone().try_into().unwrap();
    verify_both(pk, &d, &w.signature_r, &w.signature_s);
}

struct Figures {
    a_lat: Vec<f64>,
    a_rate: f64,
    b_lat: Vec<f64>,
    b_rate: f64,
    c_lat: Vec<f64>,
    c_rate: f64,
    presign_ms: f64,
    stages: StageFigures,
}

/// The coordinator's `/metrics` after a run.
struct StageFigures {
    /// (stage, count, mean ms).
    stages: Vec<(&'static str, f64, f64)>,
    /// Group rounds: (name, items, rounds) for the intake's group commits
    /// and the signers' registration rounds.
    rounds: Vec<(&'static str, f64, f64)>,
}

/// Where the coordinator's time went, from its per-stage histograms.
fn stage_breakdown(http: std::net::SocketAddr) -> StageFigures {
    let stages = [
        "risk",
        "policy",
        "intake",
        "intake_store",
        "log_append",
        "checkpoint",
        "witness_round",
        "registration",
        "signing",
    ]
    .into_iter()
    .map(|stage| {
        let count = custos_tests::metric_if_any(
            http,
            &format!("custos_stage_latency_seconds_count{{stage=\"{stage}\"}}"),
        )
        .unwrap_or(0.0);
        let sum = custos_tests::metric_if_any(
            http,
            &format!("custos_stage_latency_seconds_sum{{stage=\"{stage}\"}}"),
        )
        .unwrap_or(0.0);
        (
            stage,
            count,
            if count > 0.0 {
                sum * 1000.0 / count
            } else {
                0.0
            },
        )
    })
    .collect();
    let metric = |name| custos_tests::metric_if_any(http, name).unwrap_or(0.0);
    StageFigures {
        stages,
        rounds: vec![
            (
                "intake: requests / group commits",
                metric("custos_intake_requests_total"),
                metric("custos_intake_batches_total"),
            ),
            (
                "registrations / rounds to the signers",
                metric("custos_registrations_total"),
                metric("custos_registration_rounds_total"),
            ),
        ],
    }
}

async fn cluster(args: &Args) -> Figures {
    let n = args.n;
    let pool = if args.only_creates {
        0
    } else {
        n as u32 + POOL_SLACK
    };
    let fc = start_flow_tuned(
        &std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/bench-policy.toml"),
        &[WALLET],
        pool,
        TUNING,
    )
    .await;
    let (admin, backend, approver) = (&fc.tc.client, &fc.backend, &fc.approver);
    let pk = admin
        .clone()
        .get_key(GetKeyRequest {
            key_id: WALLET.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .public_key;
    let seen = watch(backend);
    let run = hex::encode(&digest()[..4]);

    let presign_ms = if args.only_creates {
        f64::NAN
    } else {
        eprintln!("  filling the presignature pool to {pool}...");
        let (fill, made) = fill_pool(admin, pool).await;
        eprintln!("  pool full after {:.0} s", fill.as_secs_f64());
        ms(fill) / f64::from(made.max(1))
    };

    // ---- A: requests needing approvals, at the offered rate.
    let m = args.creates;
    eprintln!(
        "  A: {m} CreateWithdrawal at {:.0}/s (5 ETH, 2 approvals)",
        args.create_rate
    );
    let created = open_loop(m, args.create_rate, |i| {
        let b = backend.clone();
        let req = withdrawal_req(&format!("{run}-a-{i}"), WALLET, WHITELISTED, 5 * ETH);
        async move { b.clone().create_withdrawal(req).await.unwrap().into_inner() }
    })
    .await;
    let first_sent = created.iter().map(|c| c.1).min().unwrap();
    let last_answer = created.iter().map(|c| c.2).max().unwrap();
    let a_rate = m as f64 / last_answer.duration_since(first_sent).as_secs_f64();
    let a_lat: Vec<f64> = created
        .iter()
        .map(|(_, s, r)| ms(r.duration_since(*s)))
        .collect();
    let a: Vec<Withdrawal> = created.into_iter().map(|(w, _, _)| w).collect();
    for w in &a {
        assert_eq!(w.state, "awaiting_approvals", "{} {}", w.id, w.reason);
        assert_eq!(w.rule_id, "medium-two-approvals", "{}", w.id);
    }
    let ids: HashSet<&str> = a.iter().map(|w| w.id.as_str()).collect();
    assert_eq!(ids.len(), m, "duplicate withdrawal ids");
    let all = list(backend, "").await;
    let waiting = list(backend, "awaiting_approvals").await;
    assert_eq!(all.len(), m, "withdrawals stored");
    assert_eq!(waiting.len(), m, "withdrawals awaiting approvals");
    assert!(waiting.iter().all(|w| ids.contains(w.id.as_str())));
    eprintln!("  A: no loss: {m} stored, {m} awaiting approvals");
    if args.only_creates {
        let stages = stage_breakdown(fc.tc.cluster.layout().coordinator.metrics_listen);
        fc.tc.cluster.stop().await.unwrap();
        return Figures {
            stages,
            a_lat,
            a_rate,
            b_lat: Vec::new(),
            b_rate: f64::NAN,
            c_lat: Vec::new(),
            c_rate: f64::NAN,
            presign_ms,
        };
    }
    let a: Vec<Withdrawal> = a.into_iter().take(n).collect();

    // ---- B: approve all (alice then bob each, IN_FLIGHT at once).
    eprintln!("  B: approving {n} ({IN_FLIGHT} in flight)");
    let start = Instant::now();
    let quorum: Vec<(String, Instant)> = futures::stream::iter(a.iter().cloned())
        .map(|w| async move {
            approve(approver, &w, "alice").await;
            let after = approve(approver, &w, "bob").await;
            let at = Instant::now();
            assert!(
                ["approved", "signing", "signed"].contains(&after.state.as_str()),
                "{} after the quorum: {}",
                w.id,
                after.state
            );
            (w.id, at)
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let b_ids: Vec<String> = quorum.iter().map(|(id, _)| id.clone()).collect();
    let signed = wait_signed(backend, &seen, &b_ids).await;
    let last = signed.values().max().copied().unwrap();
    let b_rate = n as f64 / last.duration_since(start).as_secs_f64();
    let b_lat: Vec<f64> = quorum
        .iter()
        .map(|(id, q)| ms(signed[id].saturating_duration_since(*q)))
        .collect();
    for id in &b_ids {
        let w = withdrawal(backend, id).await;
        verify(&pk, &w);
        assert_eq!(w.approvals.len(), 2, "{id}");
    }
    eprintln!("  B: {n} signatures verified (k256 and libsecp256k1)");

    // ---- C: N concurrent allowed withdrawals.
    eprintln!("  C: refilling the pool to {n}...");
    fill_pool(admin, n as u32).await;
    eprintln!(
        "  C: {n} CreateWithdrawal at {:.0}/s (0.5 ETH, allowed)",
        args.allowed_rate
    );
    let start = Instant::now();
    let created = open_loop(n, args.allowed_rate, |i| {
        let b = backend.clone();
        let req = withdrawal_req(&format!("{run}-c-{i}"), WALLET, WHITELISTED, ETH / 2);
        async move { b.clone().create_withdrawal(req).await.unwrap().into_inner() }
    })
    .await;
    for (w, _, _) in &created {
        assert_eq!(w.rule_id, "small-allow", "{} {}", w.id, w.reason);
    }
    let c_ids: Vec<String> = created.iter().map(|(w, _, _)| w.id.clone()).collect();
    let signed = wait_signed(backend, &seen, &c_ids).await;
    let c_lat: Vec<f64> = created
        .iter()
        .map(|(w, sent, replied)| {
            // The RPC drives the withdrawal as far as it can: often to `signed`.
            let mut at = signed[&w.id];
            if w.state == "signed" {
                at = at.min(*replied);
            }
            ms(at.saturating_duration_since(*sent))
        })
        .collect();
    let last = signed.values().max().copied().unwrap();
    let c_rate = n as f64 / last.duration_since(start).as_secs_f64();
    for id in &c_ids {
        verify(&pk, &withdrawal(backend, id).await);
    }
    let all = list(backend, "").await;
    assert_eq!(all.len(), m + n);
    let signed = all.iter().filter(|w| w.state == "signed").count();
    let waiting = all
        .iter()
        .filter(|w| w.state == "awaiting_approvals")
        .count();
    assert_eq!((signed, waiting), (2 * n, m - n));
    eprintln!(
        "  C: {n} signatures verified; {} withdrawals: {signed} signed, {waiting} of A still awaiting approvals",
        m + n
    );
    let stages = stage_breakdown(fc.tc.cluster.layout().coordinator.metrics_listen);
    fc.tc.cluster.stop().await.unwrap();
    Figures {
        stages,
        a_lat,
        a_rate,
        b_lat,
        b_rate,
        c_lat,
        c_rate,
        presign_ms,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map(|v| {
                v.parse::<f64>()
                    .unwrap_or_else(|_| panic!("{flag} takes a number, got {v:?}"))
            })
    };
    let n = value("--count").unwrap_or(200.0) as usize;
    let args = Args {
        n,
        creates: value("--creates").map_or(1000.max(n), |v| v as usize),
        create_rate: value("--create-rate").unwrap_or(1000.0),
        allowed_rate: value("--allowed-rate").unwrap_or(50.0),
        only_creates: args.iter().any(|a| a == "--only-creates"),
    };
    assert!(n > 0, "--count must be at least 1");
    assert!(args.creates >= n, "--creates must be at least --count");
    assert!(
        args.create_rate > 0.0 && args.allowed_rate > 0.0,
        "rates must be positive"
    );
    eprintln!("== in-process baseline (2-of-3)");
    let base = in_process(n);
    eprintln!("== cluster on loopback (2-of-3, one wallet, {n} withdrawals per phase)");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let f = rt.block_on(cluster(&args));
    let n = args.n;

    let online_p50 = pct(&base.online, 0.5);
    let online_p99 = pct(&base.online, 0.99);
    println!(
        "\nwithdrawals, 2-of-3, {n} per phase              in-process     cluster     cluster/in-process"
    );
    let row = |label: &str, a: Option<f64>, b: f64, unit: &str| {
        let (base, ratio) = match a {
            Some(a) if b / a >= 1.0 => (format!("{a:>10.3} {unit:<4}"), format!("{:>8.1}x", b / a)),
            Some(a) => (format!("{a:>10.3} {unit:<4}"), format!("{:>8.5}x", b / a)),
            None => (format!("{:>10} {unit:<4}", "-"), format!("{:>9}", "-")),
        };
        println!("  {label:<40} {base} {b:>10.3} {unit:<4} {ratio}");
    };
    row(
        "A create → awaiting_approvals p50",
        None,
        pct(&f.a_lat, 0.5),
        "ms",
    );
    row(
        "A create → awaiting_approvals p99",
        None,
        pct(&f.a_lat, 0.99),
        "ms",
    );
    row(
        &format!("A requests/s (offered {:.0}/s)", args.create_rate),
        None,
        f.a_rate,
        "/s",
    );
    if args.only_creates {
        print_stages(&f.stages);
        return;
    }
    row(
        "B quorum → signed p50",
        Some(online_p50),
        pct(&f.b_lat, 0.5),
        "ms",
    );
    row(
        "B quorum → signed p99",
        Some(online_p99),
        pct(&f.b_lat, 0.99),
        "ms",
    );
    row("B signatures/s", Some(1000.0 / online_p50), f.b_rate, "/s");
    let c_at = format!("(at {:.0}/s)", args.allowed_rate);
    row(
        &format!("C request → signed p50 {c_at}"),
        Some(online_p50),
        pct(&f.c_lat, 0.5),
        "ms",
    );
    row(
        &format!("C request → signed p99 {c_at}"),
        Some(online_p99),
        pct(&f.c_lat, 0.99),
        "ms",
    );
    row(
        "C signed withdrawals/s",
        Some(1000.0 / online_p50),
        f.c_rate,
        "/s",
    );
    row(
        "presignature generation (wall, each)",
        Some(base.presign_ms),
        f.presign_ms,
        "ms",
    );
    println!(
        "  (in-process: online signing = 2 partials + verified combine from a presignature; \
         cluster presignatures: pool fill wall time / presignatures made)"
    );
    print_stages(&f.stages);
}

fn print_stages(f: &StageFigures) {
    println!("\ncoordinator stages over all phases (/metrics)      count     mean");
    for (stage, count, mean) in &f.stages {
        println!("  {stage:<40} {count:>10.0} {mean:>10.3} ms");
    }
    for (name, items, rounds) in &f.rounds {
        println!(
            "  {name}: {items:.0} in {rounds:.0} ({:.1} per round)",
            items / rounds.max(1.0)
        );
    }
}
