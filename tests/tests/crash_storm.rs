//! The crash storm in its short form (issue #20; the long run is
//! `cargo bench -p custos-tests --bench crash_storm`): two coordinators on
//! a PostgreSQL server of the test's own, three signers and anvil, under a
//! steady load of withdrawals; every few seconds one process is killed
//! with SIGKILL (or the database stopped as by a crash) and brought back.
//! Afterwards every withdrawal has ended, one per request, none paid twice,
//! the wallet's nonces are consecutive, the ledger reconciles with the node
//! and `custos audit verify --policy` passes on the whole exported log
//! (docs/SECURITY.md case 62). A checkpoint a crash left unwitnessed, a
//! withdrawal step lost between its log entry and its commit, a nonce
//! taken twice, or a request retried into a second withdrawal fails it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use custos_tests::storm::{Settings, Target, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn withdrawals_survive_a_storm_of_kills() {
    let seed = std::env::var("CUSTOS_STORM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let report = run(Settings {
        kills: 8,
        interval: Duration::from_secs(3),
        load_every: Duration::from_millis(1000),
        seed,
        drain_limit: Duration::from_secs(240),
    })
    .await;
    eprintln!("{report}");
    // Every kind of process was killed at least once.
    for t in [
        Target::CoordinatorA,
        Target::CoordinatorB,
        Target::Postgres,
        Target::Signer(1),
        Target::Signer(2),
        Target::Signer(3),
    ] {
        assert!(
            report.kills.iter().any(|(k, _)| *k == t),
            "{t} never killed: {report}"
        );
    }
    assert!(
        report.states.get("confirmed").copied().unwrap_or(0) > 0,
        "{report}"
    );
    assert!(report.wallet_nonce > 0, "{report}");
}
