//! Seal and unseal of a 4 KiB share blob: software backend vs SoftHSM2.
//!
//! `cargo bench -p custos-hsm --bench seal` prints p50/p99 latency and
//! throughput side by side. SoftHSM2 reads `SOFTHSM2_CONF` at
//! `C_Initialize`, so the bench creates a private token directory and re-runs
//! itself with that variable set (setting it in-process would need `unsafe`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark binary

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use custos_hsm::{KdfParams, Passphrase, Pin, Pkcs11Sealer, SealContext, Sealer, SoftwareSealer};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const CHILD: &str = "CUSTOS_HSM_BENCH_DIR";
const BLOB: usize = 4096;
const WARMUP: usize = 100;
const ITERS: usize = 3000;

fn main() {
    match std::env::var_os(CHILD) {
        None => parent(),
        Some(dir) => child(Path::new(&dir)),
    }
}

fn parent() {
    let dir = tempfile::tempdir().unwrap();
    let hsm = custos_hsm::testing::SoftHsm2::create(dir.path()).unwrap();
    hsm.init_token("bench", "1234", "5678").unwrap();
    let status = Command::new(std::env::current_exe().unwrap())
        .envs(hsm.env())
        .env(CHILD, dir.path())
        .status()
        .unwrap();
    std::process::exit(status.code().unwrap_or(1));
}

struct Stats {
    p50: Duration,
    p99: Duration,
    max: Duration,
    ops: f64,
}

fn measure(mut f: impl FnMut()) -> Stats {
    for _ in 0..WARMUP {
        f();
    }
    let mut lat = Vec::with_capacity(ITERS);
    let start = Instant::now();
    for _ in 0..ITERS {
        let t = Instant::now();
        f();
        lat.push(t.elapsed());
    }
    let total = start.elapsed();
    lat.sort();
    Stats {
        p50: lat[ITERS / 2],
        p99: lat[ITERS * 99 / 100],
        max: lat[ITERS - 1],
        ops: ITERS as f64 / total.as_secs_f64(),
    }
}

fn bench(s: &dyn Sealer) -> (Stats, Stats) {
    let ctx = SealContext {
        node_id: "node-1",
        key_id: "key-1",
        share_id: "share",
    };
    let pt: Vec<u8> = (0..BLOB).map(|i| i as u8).collect();
    let blob = s.seal(&ctx, &pt).unwrap();
    let seal = measure(|| {
        std::hint::black_box(s.seal(&ctx, std::hint::black_box(&pt)).unwrap());
    });
    let unseal = measure(|| {
        let out = s.unseal(&ctx, std::hint::black_box(&blob)).unwrap();
        assert_eq!(out.len(), BLOB);
    });
    (seal, unseal)
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn child(dir: &Path) {
    let t = Instant::now();
    let sw =
        SoftwareSealer::open(&dir.join("sw"), &Passphrase::from("bench passphrase"), true).unwrap();
    let sw_open = t.elapsed();
    let t = Instant::now();
    let sw2 = SoftwareSealer::open(
        &dir.join("sw"),
        &Passphrase::from("bench passphrase"),
        false,
    )
    .unwrap();
    let sw_reopen = t.elapsed();
    drop(sw2);
    let t = Instant::now();
    let hsm =
        Pkcs11Sealer::open_with_pin(Path::new(MODULE), "bench", &Pin::from("1234"), "kek", true)
            .unwrap();
    let hsm_open = t.elapsed();

    let (sw_seal, sw_unseal) = bench(&sw);
    let (hsm_seal, hsm_unseal) = bench(&hsm);

    let d = KdfParams::default();
    println!(
        "custos-hsm seal/unseal of a {BLOB}-byte share, {ITERS} iterations after {WARMUP} warm-up, one thread"
    );
    println!("(ops/s = iterations / wall time, so it includes scheduler stalls that p50/p99 hide)");
    println!(
        "{:<8} {:<24} {:>10} {:>10} {:>11} {:>9}",
        "op", "backend", "p50", "p99", "max", "ops/s"
    );
    for (op, a, b) in [
        ("seal", &sw_seal, &hsm_seal),
        ("unseal", &sw_unseal, &hsm_unseal),
    ] {
        for (name, st) in [("software (XChaCha20)", a), ("softhsm2 (AES-256-GCM)", b)] {
            println!(
                "{:<8} {:<24} {:>10} {:>10} {:>11} {:>9.0}",
                op,
                name,
                us(st.p50),
                us(st.p99),
                us(st.max),
                st.ops
            );
        }
    }
    println!(
        "open: software create {:.0} ms / reopen {:.0} ms (Argon2id m={} KiB t={} p={}); softhsm2 open+login+KEK create {:.1} ms",
        sw_open.as_secs_f64() * 1e3,
        sw_reopen.as_secs_f64() * 1e3,
        d.m_cost_kib,
        d.t_cost,
        d.p_cost,
        hsm_open.as_secs_f64() * 1e3
    );
}
