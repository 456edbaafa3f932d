//! `cargo bench -p custos-audit --features sql --bench sql`: the log over
//! SqlStore on a SQLite file (WAL, `synchronous = FULL`: every append is
//! fsynced), as the coordinator runs it.
//!
//! - appends per second in batches of 1 and of 64 entries, a checkpoint
//!   every 1000 entries (`AUDIT_SQL_BENCH_ONES`, default 3000 single appends;
//!   `AUDIT_SQL_BENCH_BATCHES`, default 500 batches of 64);
//! - inclusion and consistency proof time at 10^5 entries, then at 10^6 if
//!   the 10^5 build suggests it finishes within about two minutes
//!   (`AUDIT_SQL_BENCH_MAX`, default 1000000, caps the size).
//!
//! `AUDIT_BENCH_PG=1` runs the same on a fresh PostgreSQL database
//! (`CUSTOS_TEST_PG_URL`, default 127.0.0.1:5432) after SQLite.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::Instant;

use custos_audit::entry::EntryBody;
use custos_audit::testing::TestSigner;
use custos_audit::{Log, SqlStore, leaf_hash};
use custos_db::{Db, testdb};

fn body(i: u64) -> EntryBody {
    EntryBody::SignatureProduced {
        withdrawal_id: format!("wd-{i:012}"),
        key_id: "key-1".into(),
        execution_id: i.to_be_bytes().repeat(4),
        message_digest: leaf_hash(&i.to_be_bytes()),
        signature: vec![0x30; 64],
    }
}

/// A tiny deterministic generator (splitmix64) so runs are comparable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const ORIGIN: &str = "bench.custos/log";

/// Appends `count` entries in batches of `batch`, signing a checkpoint each
/// time the size crosses a multiple of 1000; returns appends per second.
fn append_rate(log: &mut Log<SqlStore>, signer: &TestSigner, batch: u64, count: u64) -> f64 {
    let t = Instant::now();
    let mut done = 0;
    while done < count {
        let n = batch.min(count - done);
        let first = log.size();
        log.append_batch((first..first + n).map(|i| (i, body(i))).collect())
            .unwrap();
        if (first + n) / 1000 > first / 1000 {
            log.checkpoint(signer, first + n).unwrap();
        }
        done += n;
    }
    count as f64 / t.elapsed().as_secs_f64()
}

fn proofs(log: &Log<SqlStore>, label: &str) {
    let size = log.size();
    let mut rng = Rng(42);
    let rounds = 1000u32;
    let t = Instant::now();
    let mut hashes = 0;
    for _ in 0..rounds {
        hashes += log.inclusion_proof(rng.next() % size, size).unwrap().len();
    }
    println!(
        "[{label}] inclusion proof at size {size}: {:.0} us per proof ({} hashes)",
        t.elapsed().as_secs_f64() / f64::from(rounds) * 1e6,
        hashes / rounds as usize
    );
    let t = Instant::now();
    for _ in 0..rounds {
        let new = 1 + rng.next() % size;
        log.consistency_proof(1 + rng.next() % new, new).unwrap();
    }
    println!(
        "[{label}] consistency proof, random sizes up to {size}: {:.0} us per proof",
        t.elapsed().as_secs_f64() / f64::from(rounds) * 1e6
    );
}

fn run(label: &str, rt: &tokio::runtime::Runtime, fresh: &dyn Fn(&str) -> Db) {
    let signer = TestSigner::from_seed(7);
    let handle = rt.handle().clone();

    let ones = env("AUDIT_SQL_BENCH_ONES", 3000);
    let mut log = Log::open(
        SqlStore::open(fresh("ones"), handle.clone()).unwrap(),
        ORIGIN,
    )
    .unwrap();
    let rate = append_rate(&mut log, &signer, 1, ones);
    println!(
        "[{label}] append batches of  1, checkpoint every 1000: {ones} entries, {rate:.0} appends/s ({:.2} ms per commit)",
        1000.0 / rate
    );

    let batches = env("AUDIT_SQL_BENCH_BATCHES", 500);
    let mut log = Log::open(
        SqlStore::open(fresh("b64"), handle.clone()).unwrap(),
        ORIGIN,
    )
    .unwrap();
    let rate = append_rate(&mut log, &signer, 64, batches * 64);
    println!(
        "[{label}] append batches of 64, checkpoint every 1000: {} entries, {rate:.0} appends/s ({:.2} ms per commit)",
        batches * 64,
        64_000.0 / rate
    );

    let max = env("AUDIT_SQL_BENCH_MAX", 1_000_000);
    let mut log = Log::open(SqlStore::open(fresh("big"), handle).unwrap(), ORIGIN).unwrap();
    let mut target = 100_000u64.min(max);
    let started = Instant::now();
    loop {
        let t = Instant::now();
        let grow = target - log.size();
        let rate = append_rate(&mut log, &signer, 1000, grow);
        println!(
            "[{label}] grew to {target} in batches of 1000: {:.1} s ({rate:.0} appends/s)",
            t.elapsed().as_secs_f64()
        );
        proofs(&log, label);
        // Growing tenfold takes about nine more builds of what we did so far.
        let estimate = started.elapsed().as_secs_f64() * 9.0;
        if target >= max || estimate > 120.0 {
            if target < max {
                println!(
                    "[{label}] skipping {} entries: estimated {estimate:.0} s to build",
                    target * 10
                );
            }
            break;
        }
        target = (target * 10).min(max);
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    run("sqlite", &rt, &|name| {
        rt.block_on(testdb::fresh_sqlite(dir.path(), name)).unwrap()
    });
    if std::env::var("AUDIT_BENCH_PG").is_ok_and(|v| v == "1") {
        run("postgres", &rt, &|name| {
            rt.block_on(testdb::fresh_pg(&format!("audit_bench_{name}")))
                .unwrap()
        });
    }
}
