//! The crash storm, long form (issue #20): 50 kills, one every 3 s, under a
//! withdrawal every 1.5 s, then every check of `custos_tests::storm::run`.
//!
//! `cargo bench -p custos-tests --bench crash_storm -- [--kills N]
//! [--interval-ms MS] [--load-ms MS] [--seed S]` (build the daemons first:
//! `cargo build --release --workspace --bins`). Prints each kill's recovery
//! time and the figures: withdrawals, end states, recovery p50/p99 per kind
//! of process, and that nothing was lost or paid twice.
//!
//! The baseline beside it is the cluster when nothing is killed: how long a
//! standby takes over (the lease) and a restarted signer rejoins, which the
//! recovery times are measured against.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::Duration;

use custos_tests::storm::{Settings, run};

fn arg(args: &[String], name: &str) -> Option<u64> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1)?.parse().ok()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seed = arg(&args, "--seed").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    let settings = Settings {
        kills: usize::try_from(arg(&args, "--kills").unwrap_or(50)).unwrap(),
        interval: Duration::from_millis(arg(&args, "--interval-ms").unwrap_or(3000)),
        load_every: Duration::from_millis(arg(&args, "--load-ms").unwrap_or(1500)),
        seed,
        drain_limit: Duration::from_secs(600),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let report = rt.block_on(run(settings));
    println!("{report}");
    println!("  whole run      {:.1} s", started.elapsed().as_secs_f64());
}
