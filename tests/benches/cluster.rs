//! Cluster vs in-process baseline, for 2-of-3 and 3-of-5, in cggmp21 ECDSA
//! and in both FROST schemes.
//!
//! `cargo bench -p custos-tests --bench cluster -- [--signatures N] [--only 2-of-3]
//! [--schemes ecdsa,frost-ed25519,frost-secp256k1-tr]`
//!
//! In-process: every party in one thread (`custos_mpc::sim`), the library
//! baseline. Cluster: real coordinator and signer processes on loopback,
//! through TLS gRPC and libp2p. Prints figures and cluster/in-process ratios.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::{Duration, Instant};

use custos_mpc::frost::{FrostEd25519, FrostTaproot};
use custos_mpc::protocol::{combine, issue_partial, public_key};
use custos_mpc::scheme::SignatureScheme;
use custos_mpc::{Primes, sim};
use custos_proto::custody::{CreateKeyRequest, GetKeyRequest, Scheme, SignDigestRequest};
use rand::RngCore;

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn digest() -> [u8; 32] {
    let mut d = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut d);
    d
}

struct Figures {
    /// Where online signing's time went: (who, stage, count, mean ms).
    breakdown: Vec<(String, &'static str, f64, f64)>,
    keygen_p50: f64,
    presign_ms: f64,
    online_p50: f64,
    online_p99: f64,
    throughput: f64,
}

fn block<T>(f: impl Future<Output = T>) -> T {
    futures::executor::block_on(f)
}

fn in_process(t: u16, n: u16, signatures: usize) -> Figures {
    let primes: Vec<Primes> =
        serde_json::from_slice(&std::fs::read(custos_tests::primes_fixture()).unwrap()).unwrap();
    let aux = block(sim::aux_info(
        primes.into_iter().take(n.into()).collect(),
        None,
    ))
    .unwrap();
    let mut keygen = Vec::new();
    let mut shares = None;
    for _ in 0..10 {
        let s = Instant::now();
        shares = Some(block(sim::keygen(t, &aux)).unwrap());
        keygen.push(ms(s.elapsed()));
    }
    let shares = shares.unwrap();
    let signers: Vec<u16> = (0..t).collect();
    let mut presign = Vec::new();
    let mut presigs = Vec::new();
    for _ in 0..3 {
        let s = Instant::now();
        presigs = block(sim::presign(&shares, &signers, None)).unwrap();
        presign.push(ms(s.elapsed()));
    }
    // Online signing is local: t partials and a verified combine. (The same
    // presignature is re-timed here only because this is a benchmark of test
    // keys; production code consumes each one once.)
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
    let p50 = pct(&mut online, 0.5);
    Figures {
        keygen_p50: pct(&mut keygen, 0.5),
        presign_ms: presign.iter().sum::<f64>() / presign.len() as f64,
        online_p50: p50,
        online_p99: pct(&mut online, 0.99),
        throughput: 1000.0 / p50,
        breakdown: Vec::new(),
    }
}

/// Count and mean (ms) of each `stage` of the histogram `metric` at `http`.
fn stage_means(
    http: std::net::SocketAddr,
    metric: &str,
    who: &str,
    stages: &[&'static str],
) -> Vec<(String, &'static str, f64, f64)> {
    stages
        .iter()
        .map(|stage| {
            let read = |what: &str| {
                custos_tests::metric_if_any(http, &format!("{metric}_{what}{{stage=\"{stage}\"}}"))
                    .unwrap_or(0.0)
            };
            let (count, sum) = (read("count"), read("sum"));
            let mean = if count > 0.0 {
                sum * 1000.0 / count
            } else {
                0.0
            };
            (who.to_owned(), *stage, count, mean)
        })
        .collect()
}

/// Through a loopback cluster: key creation, the pool (presignatures or
/// FROST nonce commitments), online signing. ECDSA runs the group's real
/// aux-info ceremony first; FROST needs none (the fixture's is imported).
async fn cluster(t: u16, n: u16, signatures: usize, scheme: Scheme) -> Figures {
    let concurrent = 64usize;
    let pool = (signatures + concurrent + 4) as u32;
    let tc = if scheme == Scheme::Cggmp21Ecdsa {
        custos_tests::start_with_pool(n, t, &[], Some(pool)).await
    } else {
        custos_tests::start_from_fixture_with_pool(n, t, pool).await
    };
    let mut client = tc.client.clone();
    let create = |id: String| CreateKeyRequest {
        key_id: id,
        threshold: u32::from(t),
        scheme: scheme as i32,
        ..Default::default()
    };

    // Presignature generation: wall time per presignature while the pool fills.
    let key = client
        .create_key(create("bench-main".into()))
        .await
        .unwrap()
        .into_inner();
    let filled = |c: &mut custos_devkit::client::Client| {
        let mut c = c.clone();
        async move {
            c.get_key(GetKeyRequest {
                key_id: "bench-main".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .presignatures_ready
        }
    };
    let start = Instant::now();
    let first = 5u32.min(pool);
    while filled(&mut client).await < first {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let presign_ms = ms(start.elapsed()) / f64::from(first);
    eprintln!("  {t}-of-{n}: {presign_ms:.0} ms per presignature; filling the pool to {pool}...");
    let mut last = 0;
    while filled(&mut client).await < pool {
        let now = filled(&mut client).await;
        if now / 50 != last / 50 {
            eprintln!("    pool {now}/{pool}");
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let sign = |d: [u8; 32], i: usize| SignDigestRequest {
        key_id: key.key_id.clone(),
        digest: d.to_vec(),
        request_id: format!("bench-{t}-{n}-{i}-{}", hex::encode(&digest()[..4])),
        interactive: false,
    };
    let mut online = Vec::new();
    for i in 0..signatures {
        let s = Instant::now();
        let r = client
            .sign_digest(sign(digest(), i))
            .await
            .unwrap()
            .into_inner();
        online.push(ms(s.elapsed()));
        assert_eq!(r.mode, "presignature", "pool ran dry; raise the pool");
        assert_eq!(r.signature.len(), 64);
    }
    {
        let mut o = online.clone();
        eprintln!(
            "  {t}-of-{n}: online signing p50 {:.2} ms p99 {:.2} ms over {signatures}",
            pct(&mut o, 0.5),
            pct(&mut o, 0.99)
        );
    }
    // The online path's breakdown, read before anything else signs.
    let layout = tc.cluster.layout();
    let mut breakdown = stage_means(
        layout.coordinator.metrics_listen,
        "custos_stage_latency_seconds",
        "coordinator",
        &["sign_commit", "signer_calls", "combine"],
    );
    for s in &layout.signers {
        breakdown.extend(stage_means(
            s.http_listen,
            "custos_signer_stage_latency_seconds",
            &s.node_id,
            &["request", "admit", "unseal", "consume_marker", "partial"],
        ));
    }
    // Throughput: concurrent requests, 8 in flight.
    let s = Instant::now();
    let mut done = 0;
    for chunk in (0..concurrent).collect::<Vec<_>>().chunks(8) {
        let calls = chunk.iter().map(|i| {
            let mut c = client.clone();
            let req = sign(digest(), signatures + i);
            async move { c.sign_digest(req).await.unwrap() }
        });
        done += futures::future::join_all(calls).await.len();
    }
    let throughput = done as f64 / s.elapsed().as_secs_f64();

    // Key creation with warm aux info.
    let mut keygen = Vec::new();
    for i in 0..10 {
        let s = Instant::now();
        client
            .create_key(create(format!("bench-k{i}")))
            .await
            .unwrap();
        keygen.push(ms(s.elapsed()));
    }
    tc.cluster.stop().await.unwrap();
    Figures {
        breakdown,
        keygen_p50: pct(&mut keygen, 0.5),
        presign_ms,
        online_p50: pct(&mut online, 0.5),
        online_p99: pct(&mut online, 0.99),
        throughput,
    }
}

/// The FROST library baseline: every party in one thread. Key creation is
/// the DKG; precomputation one commitment round; online signing t partials
/// and a verified combine.
fn frost_in_process<S: SignatureScheme<KeygenSetup = ()>>(
    t: u16,
    n: u16,
    signatures: usize,
) -> Figures {
    let mut keygen = Vec::new();
    let mut shares = None;
    for _ in 0..10 {
        let s = Instant::now();
        shares = Some(block(sim::keygen_with::<S>(t, vec![(); n.into()], None)).unwrap());
        keygen.push(ms(s.elapsed()));
    }
    let shares = shares.unwrap();
    let signers: Vec<u16> = (0..t).collect();
    let key = S::public_key(&shares[0]);
    let mut precompute = Vec::new();
    let mut online = Vec::new();
    for _ in 0..signatures {
        let s = Instant::now();
        let pool = block(sim::precompute_with::<S>(&shares, &signers, None)).unwrap();
        precompute.push(ms(s.elapsed()));
        let public = S::presignature_public(&pool[0]);
        let d = digest();
        let s = Instant::now();
        let partials: Vec<_> = pool
            .into_iter()
            .zip(&signers)
            .map(|(p, k)| S::partial_sign(p, &shares[usize::from(*k)], &d).unwrap())
            .collect();
        std::hint::black_box(S::combine(&key, &public, &d, &partials).unwrap());
        online.push(ms(s.elapsed()));
    }
    let p50 = pct(&mut online, 0.5);
    Figures {
        keygen_p50: pct(&mut keygen, 0.5),
        presign_ms: precompute.iter().sum::<f64>() / precompute.len() as f64,
        online_p50: p50,
        online_p99: pct(&mut online, 0.99),
        throughput: 1000.0 / p50,
        breakdown: Vec::new(),
    }
}

fn print(title: &str, base: &Figures, clu: &Figures, precompute: &str) {
    println!("\n{title:<40} in-process     cluster     cluster/in-process");
    let row = |label: &str, a: f64, b: f64, unit: &str| {
        println!(
            "  {label:<34} {a:>10.3} {unit:<4} {b:>10.3} {unit:<4} {:>8.2}x",
            b / a
        )
    };
    row("key creation p50", base.keygen_p50, clu.keygen_p50, "ms");
    row(precompute, base.presign_ms, clu.presign_ms, "ms");
    row("online signing p50", base.online_p50, clu.online_p50, "ms");
    row("online signing p99", base.online_p99, clu.online_p99, "ms");
    row("signing throughput", base.throughput, clu.throughput, "/s");
    if clu.breakdown.iter().any(|(_, _, count, _)| *count > 0.0) {
        println!("  online path, means over the sequential signatures (/metrics):");
        println!(
            "    {:<14} {:<16} {:>8} {:>10}",
            "process", "stage", "count", "mean"
        );
        for (who, stage, count, mean) in &clu.breakdown {
            if *count > 0.0 {
                println!("    {who:<14} {stage:<16} {count:>8.0} {mean:>7.3} ms");
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let signatures = args
        .iter()
        .position(|a| a == "--signatures")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(200usize);
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let schemes = args
        .iter()
        .position(|a| a == "--schemes")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "ecdsa,frost-ed25519,frost-secp256k1-tr".into());
    for (t, n) in [(2u16, 3u16), (3, 5)] {
        let name = format!("{t}-of-{n}");
        if only.as_ref().is_some_and(|o| *o != name) {
            continue;
        }
        for scheme in schemes.split(',') {
            let (base, clu, precompute) = match scheme {
                "ecdsa" => {
                    eprintln!("== {name} ecdsa: in-process baseline");
                    let base = in_process(t, n, signatures);
                    eprintln!("== {name} ecdsa: cluster on loopback");
                    let clu = rt.block_on(cluster(t, n, signatures, Scheme::Cggmp21Ecdsa));
                    (base, clu, "presignature generation")
                }
                "frost-ed25519" => {
                    eprintln!("== {name} {scheme}: in-process baseline, then cluster");
                    let base = frost_in_process::<FrostEd25519>(t, n, signatures);
                    let clu = rt.block_on(cluster(t, n, signatures, Scheme::FrostEd25519));
                    (base, clu, "commitment round")
                }
                "frost-secp256k1-tr" => {
                    eprintln!("== {name} {scheme}: in-process baseline, then cluster");
                    let base = frost_in_process::<FrostTaproot>(t, n, signatures);
                    let clu = rt.block_on(cluster(t, n, signatures, Scheme::FrostSecp256k1Tr));
                    (base, clu, "commitment round")
                }
                other => panic!("--schemes: unknown scheme {other}"),
            };
            print(
                &format!("{name} {scheme} ({signatures} signatures)"),
                &base,
                &clu,
                precompute,
            );
        }
    }
}
