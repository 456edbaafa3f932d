#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Ledger scenarios, each run on SQLite and on PostgreSQL (which must be
//! reachable: `scripts/ensure-services.sh`; the PostgreSQL tests fail, never skip).

use custos_db::Db;
use custos_db::testdb::{fresh_pg, fresh_sqlite};
use custos_ledger::{
    AccountKind, Difference, EntryKind, LedgerError, OnchainBalance, Violation, balance, balances,
    check_invariants, create_schema, deposit, journal, reconcile, release, reserve,
    reverse_deposit, set_overdraft_limit, settle, wallet_balances,
};
use sqlx::Connection;

async fn sqlite(dir: &tempfile::TempDir) -> Db {
    let db = fresh_sqlite(dir.path(), "ledger").await.unwrap();
    create_schema(&db).await.unwrap();
    // Idempotent DDL: a second run is harmless.
    create_schema(&db).await.unwrap();
    db
}

async fn pg() -> Db {
    let db = fresh_pg("ledger")
        .await
        .expect("PostgreSQL on 127.0.0.1:5432 (run scripts/ensure-services.sh)");
    create_schema(&db).await.unwrap();
    create_schema(&db).await.unwrap();
    db
}

macro_rules! on_both {
    ($scenario:ident, $sqlite:ident, $pg:ident) => {
        #[tokio::test]
        async fn $sqlite() {
            let dir = tempfile::tempdir().unwrap();
            $scenario(&sqlite(&dir).await).await;
        }

        #[tokio::test]
        async fn $pg() {
            $scenario(&pg().await).await;
        }
    };
}

async fn bal(db: &Db, wallet: &str, asset: &str, kind: AccountKind) -> i128 {
    let mut conn = db.pool.acquire().await.unwrap();
    balance(&mut conn, wallet, asset, kind).await.unwrap()
}

async fn assert_consistent(db: &Db) {
    let mut conn = db.pool.acquire().await.unwrap();
    let violations = check_invariants(&mut conn).await.unwrap();
    assert!(violations.is_empty(), "{violations:?}");
}

/// Deposit, reserve, settle with a fee in another asset, reserve and release:
/// balances, journal and invariants after each step.
async fn lifecycle(db: &Db) {
    let mut tx = db.pool.begin().await.unwrap();
    let d = deposit(&mut tx, "w1", "eth", 1_000, "eth:0xaa:0")
        .await
        .unwrap();
    assert!(!d.replayed);
    deposit(&mut tx, "w1", "usdc", 5_000, "eth:0xbb:1")
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mut tx = db.pool.begin().await.unwrap();
    reserve(&mut tx, "wd-1", "w1", "usdc", 2_000).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(bal(db, "w1", "usdc", AccountKind::Available).await, 3_000);
    assert_eq!(bal(db, "w1", "usdc", AccountKind::Reserved).await, 2_000);

    let mut tx = db.pool.begin().await.unwrap();
    let s = settle(&mut tx, "wd-1", "eth", 21).await.unwrap();
    tx.commit().await.unwrap();
    assert!(!s.replayed);
    assert_eq!(bal(db, "w1", "usdc", AccountKind::Reserved).await, 0);
    assert_eq!(bal(db, "w1", "usdc", AccountKind::External).await, -3_000);
    assert_eq!(bal(db, "w1", "eth", AccountKind::Available).await, 979);
    assert_eq!(bal(db, "w1", "eth", AccountKind::Fees).await, 21);

    let mut tx = db.pool.begin().await.unwrap();
    reserve(&mut tx, "wd-2", "w1", "usdc", 3_000).await.unwrap();
    release(&mut tx, "wd-2").await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(bal(db, "w1", "usdc", AccountKind::Available).await, 3_000);
    assert_eq!(bal(db, "w1", "usdc", AccountKind::Reserved).await, 0);

    let mut conn = db.pool.acquire().await.unwrap();
    let entries = journal(&mut conn, "w1").await.unwrap();
    let kinds: Vec<EntryKind> = entries.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EntryKind::Deposit,
            EntryKind::Deposit,
            EntryKind::Reserve,
            EntryKind::Settle,
            EntryKind::Reserve,
            EntryKind::Release
        ]
    );
    for entry in &entries {
        let mut per_asset = std::collections::BTreeMap::<&str, i128>::new();
        for p in &entry.postings {
            *per_asset.entry(p.account.asset.as_str()).or_default() += p.amount;
        }
        assert!(per_asset.values().all(|s| *s == 0), "{entry:?}");
    }
    assert_eq!(entries[3].postings.len(), 4, "settle: amount and fee lines");
    assert!(journal(&mut conn, "nobody").await.unwrap().is_empty());
    assert_eq!(wallet_balances(&mut conn, "w1").await.unwrap().len(), 6);
    drop(conn);
    assert_consistent(db).await;
}
on_both!(lifecycle, lifecycle_sqlite, lifecycle_pg);

/// A reservation beyond `available` is refused with a typed error, writes
/// nothing, and leaves the caller's transaction usable (on PostgreSQL a failed
/// statement would otherwise abort it); an overdraft limit lets it through.
async fn insufficient_funds_and_overdraft(db: &Db) {
    let mut tx = db.pool.begin().await.unwrap();
    deposit(&mut tx, "w1", "btc", 100, "btc:1").await.unwrap();
    let err = reserve(&mut tx, "wd-1", "w1", "btc", 101)
        .await
        .unwrap_err();
    match err {
        LedgerError::InsufficientFunds {
            available,
            requested,
            overdraft_limit,
            ..
        } => assert_eq!((available, requested, overdraft_limit), (100, 101, 0)),
        other => panic!("unexpected {other:?}"),
    }
    // The same transaction goes on and commits.
    reserve(&mut tx, "wd-2", "w1", "btc", 60).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(bal(db, "w1", "btc", AccountKind::Available).await, 40);

    // The refused withdrawal id left no entry: it can be reserved later.
    let mut conn = db.pool.acquire().await.unwrap();
    let err = release(&mut conn, "wd-1").await.unwrap_err();
    assert!(matches!(err, LedgerError::NotReserved { .. }), "{err:?}");
    set_overdraft_limit(&mut conn, "w1", "btc", 50)
        .await
        .unwrap();
    reserve(&mut conn, "wd-1", "w1", "btc", 90).await.unwrap();
    assert_eq!(bal(db, "w1", "btc", AccountKind::Available).await, -50);
    let err = reserve(&mut conn, "wd-3", "w1", "btc", 1)
        .await
        .unwrap_err();
    assert!(
        matches!(err, LedgerError::InsufficientFunds { .. }),
        "{err:?}"
    );
    // A fee is held to the same rule.
    let err = settle(&mut conn, "wd-2", "btc", 1).await.unwrap_err();
    assert!(
        matches!(err, LedgerError::InsufficientFunds { .. }),
        "{err:?}"
    );
    settle(&mut conn, "wd-2", "btc", 0).await.unwrap();
    let err = reserve(&mut conn, "wd-4", "w1", "btc", 0)
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::ZeroAmount), "{err:?}");
    let err = deposit(&mut conn, "w1", "btc", u128::MAX, "big")
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::AmountOutOfRange(_)), "{err:?}");
    drop(conn);
    assert_consistent(db).await;
}
on_both!(
    insufficient_funds_and_overdraft,
    insufficient_funds_sqlite,
    insufficient_funds_pg
);

/// Replays are idempotent, a replay with other arguments is refused, and a
/// withdrawal has one outcome.
async fn replays_and_outcomes(db: &Db) {
    let mut conn = db.pool.acquire().await.unwrap();
    let first = deposit(&mut conn, "w1", "eth", 500, "dep-1").await.unwrap();
    let again = deposit(&mut conn, "w1", "eth", 500, "dep-1").await.unwrap();
    assert_eq!(again.entry_id, first.entry_id);
    assert!(again.replayed);
    let err = deposit(&mut conn, "w1", "eth", 501, "dep-1")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            LedgerError::ReplayMismatch {
                kind: EntryKind::Deposit,
                ..
            }
        ),
        "{err:?}"
    );

    reserve(&mut conn, "wd-1", "w1", "eth", 100).await.unwrap();
    assert!(
        reserve(&mut conn, "wd-1", "w1", "eth", 100)
            .await
            .unwrap()
            .replayed
    );
    let err = reserve(&mut conn, "wd-1", "w1", "eth", 99)
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::ReplayMismatch { .. }), "{err:?}");

    let s = settle(&mut conn, "wd-1", "eth", 5).await.unwrap();
    assert_eq!(
        settle(&mut conn, "wd-1", "eth", 5).await.unwrap(),
        custos_ledger::Posted {
            replayed: true,
            ..s
        }
    );
    let err = settle(&mut conn, "wd-1", "eth", 6).await.unwrap_err();
    assert!(
        matches!(
            err,
            LedgerError::ReplayMismatch {
                kind: EntryKind::Settle,
                ..
            }
        ),
        "{err:?}"
    );
    let err = release(&mut conn, "wd-1").await.unwrap_err();
    assert!(
        matches!(
            err,
            LedgerError::AlreadyFinalized {
                existing: EntryKind::Settle,
                ..
            }
        ),
        "{err:?}"
    );
    // A reserve replayed after its settle is still just a replay.
    assert!(
        reserve(&mut conn, "wd-1", "w1", "eth", 100)
            .await
            .unwrap()
            .replayed
    );

    reserve(&mut conn, "wd-2", "w1", "eth", 100).await.unwrap();
    release(&mut conn, "wd-2").await.unwrap();
    assert!(release(&mut conn, "wd-2").await.unwrap().replayed);
    let err = settle(&mut conn, "wd-2", "eth", 0).await.unwrap_err();
    assert!(
        matches!(
            err,
            LedgerError::AlreadyFinalized {
                existing: EntryKind::Release,
                ..
            }
        ),
        "{err:?}"
    );
    let err = settle(&mut conn, "wd-404", "eth", 0).await.unwrap_err();
    assert!(matches!(err, LedgerError::NotReserved { .. }), "{err:?}");

    assert_eq!(bal(db, "w1", "eth", AccountKind::Available).await, 395);
    assert_eq!(bal(db, "w1", "eth", AccountKind::External).await, -400);
    assert_eq!(journal(&mut conn, "w1").await.unwrap().len(), 5);
    drop(conn);
    assert_consistent(db).await;
}
on_both!(replays_and_outcomes, replays_sqlite, replays_pg);

/// A deposit whose block left the chain is reversed once (a repeat is a
/// replay), a reference that is not a deposit is refused, a deposit already
/// spent is still reversed (the deficit shows as a violation), and the same
/// chain reference credited again under a generation suffix is a new deposit.
async fn deposit_reversals(db: &Db) {
    let mut conn = db.pool.acquire().await.unwrap();
    let credited = deposit(&mut conn, "w1", "eth", 700, "anvil:0xd1")
        .await
        .unwrap();
    deposit(&mut conn, "w1", "eth", 300, "anvil:0xd2")
        .await
        .unwrap();
    let reversed = reverse_deposit(&mut conn, "anvil:0xd1").await.unwrap();
    assert!(!reversed.replayed);
    assert_ne!(reversed.entry_id, credited.entry_id);
    assert_eq!(bal(db, "w1", "eth", AccountKind::Available).await, 300);
    assert_eq!(bal(db, "w1", "eth", AccountKind::External).await, -300);
    let again = reverse_deposit(&mut conn, "anvil:0xd1").await.unwrap();
    assert_eq!(again.entry_id, reversed.entry_id);
    assert!(again.replayed, "a second reversal posts nothing");
    assert_eq!(bal(db, "w1", "eth", AccountKind::Available).await, 300);

    // Not deposits: nothing under that reference, or a withdrawal's.
    reserve(&mut conn, "wd-1", "w1", "eth", 100).await.unwrap();
    for reference in ["anvil:0xnothing", "wd-1"] {
        let err = reverse_deposit(&mut conn, reference).await.unwrap_err();
        assert!(
            matches!(&err, LedgerError::NotADeposit { reference: r } if r == reference),
            "{err:?}"
        );
    }
    assert_eq!(bal(db, "w1", "eth", AccountKind::Reserved).await, 100);

    // Spent before its block left the chain: reversed all the same; the
    // books show the deficit instead of coins that are gone.
    settle(&mut conn, "wd-1", "eth", 0).await.unwrap();
    reverse_deposit(&mut conn, "anvil:0xd2").await.unwrap();
    assert_eq!(bal(db, "w1", "eth", AccountKind::Available).await, -100);
    let violations = check_invariants(&mut conn).await.unwrap();
    assert!(
        matches!(
            violations.as_slice(),
            [Violation::NegativeBalance { balance: -100, .. }]
        ),
        "{violations:?}"
    );
    let err = reserve(&mut conn, "wd-2", "w1", "eth", 1)
        .await
        .unwrap_err();
    assert!(
        matches!(err, LedgerError::InsufficientFunds { .. }),
        "{err:?}"
    );

    // Mined again after the reorganisation: the next generation's reference.
    let recredited = deposit(&mut conn, "w1", "eth", 700, "anvil:0xd1#1")
        .await
        .unwrap();
    assert!(!recredited.replayed);
    assert_eq!(bal(db, "w1", "eth", AccountKind::Available).await, 600);
    let kinds: Vec<EntryKind> = journal(&mut conn, "w1")
        .await
        .unwrap()
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            EntryKind::Deposit,
            EntryKind::Deposit,
            EntryKind::DepositReversal,
            EntryKind::Reserve,
            EntryKind::Settle,
            EntryKind::DepositReversal,
            EntryKind::Deposit
        ]
    );
}
on_both!(deposit_reversals, reversals_sqlite, reversals_pg);

/// Crash consistency: a transaction dropped without commit (what a crash
/// before COMMIT amounts to) leaves no entry, posting or balance change; the
/// retried call then posts exactly once.
async fn dropped_transaction_leaves_nothing(db: &Db) {
    let mut conn = db.pool.acquire().await.unwrap();
    deposit(&mut conn, "w1", "eth", 1_000, "dep-1")
        .await
        .unwrap();
    drop(conn);
    let before = {
        let mut conn = db.pool.acquire().await.unwrap();
        balances(&mut conn).await.unwrap()
    };

    {
        let mut tx = db.pool.begin().await.unwrap();
        deposit(&mut tx, "w1", "eth", 7, "dep-2").await.unwrap();
        reserve(&mut tx, "wd-1", "w1", "eth", 300).await.unwrap();
        settle(&mut tx, "wd-1", "eth", 3).await.unwrap();
        // Dropped here: no commit.
    }
    let mut conn = db.pool.acquire().await.unwrap();
    assert_eq!(balances(&mut conn).await.unwrap(), before);
    let postings: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM ledger_postings")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(postings.0, 2, "only the committed deposit's two postings");
    let entries: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM ledger_entries")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(entries.0, 1);

    // The retry after "restart" posts, once.
    let mut tx = conn.begin().await.unwrap();
    assert!(
        !reserve(&mut tx, "wd-1", "w1", "eth", 300)
            .await
            .unwrap()
            .replayed
    );
    tx.commit().await.unwrap();
    assert!(
        reserve(&mut conn, "wd-1", "w1", "eth", 300)
            .await
            .unwrap()
            .replayed
    );
    assert_eq!(bal(db, "w1", "eth", AccountKind::Reserved).await, 300);
    drop(conn);
    assert_consistent(db).await;
}
on_both!(
    dropped_transaction_leaves_nothing,
    crash_rollback_sqlite,
    crash_rollback_pg
);

/// The invariant query notices tampering with postings, balances and outcomes.
async fn invariants_detect_tampering(db: &Db) {
    let mut conn = db.pool.acquire().await.unwrap();
    deposit(&mut conn, "w1", "eth", 1_000, "dep-1")
        .await
        .unwrap();
    reserve(&mut conn, "wd-1", "w1", "eth", 400).await.unwrap();
    assert!(check_invariants(&mut conn).await.unwrap().is_empty());

    // An edited posting: entry and asset unbalanced, cached balance disagrees.
    sqlx::query("UPDATE ledger_postings SET amount = '1001' WHERE amount = '1000'")
        .execute(&mut *conn)
        .await
        .unwrap();
    let v = check_invariants(&mut conn).await.unwrap();
    assert!(
        v.iter()
            .any(|v| matches!(v, Violation::UnbalancedEntry { sum: 1, .. })),
        "{v:?}"
    );
    assert!(
        v.iter()
            .any(|v| matches!(v, Violation::UnbalancedAsset { sum: 1, .. })),
        "{v:?}"
    );
    assert!(
        v.iter()
            .any(|v| matches!(v, Violation::BalanceMismatch { .. })),
        "{v:?}"
    );
    sqlx::query("UPDATE ledger_postings SET amount = '1000' WHERE amount = '1001'")
        .execute(&mut *conn)
        .await
        .unwrap();

    // A reservation marked finalized with no outcome entry.
    sqlx::query("UPDATE ledger_entries SET finalized_by = 'settle' WHERE reference = 'wd-1'")
        .execute(&mut *conn)
        .await
        .unwrap();
    let v = check_invariants(&mut conn).await.unwrap();
    assert!(
        v.iter()
            .any(|v| matches!(v, Violation::FinalizationMismatch { .. })),
        "{v:?}"
    );
    assert!(
        v.iter()
            .any(|v| matches!(v, Violation::ReservedMismatch { reserved: 400, .. })),
        "{v:?}"
    );

    // A negative available balance without overdraft (balances edited consistently).
    sqlx::query("UPDATE ledger_entries SET finalized_by = NULL WHERE reference = 'wd-1'")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("UPDATE ledger_postings SET amount = '-1400' WHERE amount = '-400'")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("UPDATE ledger_postings SET amount = '1400' WHERE amount = '400'")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("UPDATE ledger_accounts SET balance = '-400' WHERE kind = 'available'")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("UPDATE ledger_accounts SET balance = '1400' WHERE kind = 'reserved'")
        .execute(&mut *conn)
        .await
        .unwrap();
    let v = check_invariants(&mut conn).await.unwrap();
    assert!(
        matches!(
            v.as_slice(),
            [Violation::NegativeBalance {
                balance: -400,
                overdraft_limit: 0,
                ..
            }]
        ),
        "{v:?}"
    );
    set_overdraft_limit(&mut conn, "w1", "eth", 400)
        .await
        .unwrap();
    assert!(check_invariants(&mut conn).await.unwrap().is_empty());
}
on_both!(invariants_detect_tampering, tampering_sqlite, tampering_pg);

/// PostgreSQL with concurrent transactions: two reservations racing for the
/// same funds, and a settle racing a release, each have exactly one winner.
#[tokio::test]
async fn concurrent_operations_pg() {
    let db = pg().await;
    let mut conn = db.pool.acquire().await.unwrap();
    deposit(&mut conn, "w1", "eth", 100, "dep-1").await.unwrap();
    drop(conn);

    for round in 0..5 {
        let tasks: Vec<_> = (0..2)
            .map(|i| {
                let db = db.clone();
                tokio::spawn(async move {
                    let mut tx = db.pool.begin().await.unwrap();
                    let r = reserve(&mut tx, &format!("wd-{round}-{i}"), "w1", "eth", 60).await;
                    tx.commit().await.unwrap();
                    r
                })
            })
            .collect();
        let mut ok = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => ok.push(()),
                Err(LedgerError::InsufficientFunds { .. }) => {}
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(ok.len(), 1, "round {round}: exactly one reservation fits");
        // Release both (one is NotReserved) so the next round has funds again.
        let mut conn = db.pool.acquire().await.unwrap();
        let a = release(&mut conn, &format!("wd-{round}-0")).await;
        let b = release(&mut conn, &format!("wd-{round}-1")).await;
        assert_eq!(a.is_ok() as u8 + b.is_ok() as u8, 1);
    }

    for round in 0..5 {
        let wid = format!("race-{round}");
        let mut conn = db.pool.acquire().await.unwrap();
        reserve(&mut conn, &wid, "w1", "eth", 10).await.unwrap();
        drop(conn);
        let (db1, db2, w1, w2) = (db.clone(), db.clone(), wid.clone(), wid.clone());
        let s = tokio::spawn(async move {
            let mut tx = db1.pool.begin().await.unwrap();
            let r = settle(&mut tx, &w1, "eth", 1).await;
            tx.commit().await.unwrap();
            r
        });
        let r = tokio::spawn(async move {
            let mut tx = db2.pool.begin().await.unwrap();
            let r = release(&mut tx, &w2).await;
            tx.commit().await.unwrap();
            r
        });
        let (s, r) = (s.await.unwrap(), r.await.unwrap());
        assert_eq!(s.is_ok() as u8 + r.is_ok() as u8, 1, "{s:?} {r:?}");
        for e in [s.err(), r.err()].into_iter().flatten() {
            assert!(matches!(e, LedgerError::AlreadyFinalized { .. }), "{e:?}");
        }
    }
    assert_consistent(&db).await;
}

#[test]
fn reconcile_reports_mismatches() {
    use custos_ledger::{AccountKey, Balance};
    let b = |wallet: &str, asset: &str, kind, amount| Balance {
        account: AccountKey::new(wallet, asset, kind),
        amount,
    };
    let ledger = [
        b("w1", "eth", AccountKind::Available, 900),
        b("w1", "eth", AccountKind::Reserved, 100),
        b("w1", "eth", AccountKind::Fees, 21),
        b("w1", "eth", AccountKind::External, -1_021),
        b("w1", "usdc", AccountKind::Available, 50),
        b("w2", "eth", AccountKind::Available, 7),
        b("w3", "eth", AccountKind::Available, 0),
    ];
    let chain = |wallet: &str, asset: &str, amount| OnchainBalance {
        wallet: wallet.into(),
        asset: asset.into(),
        amount,
    };
    let onchain = [
        chain("w1", "eth", 1_000),
        chain("w1", "usdc", 40),
        chain("w1", "usdc", 5),
        chain("w4", "eth", 3),
    ];
    let diffs = reconcile(&ledger, &onchain);
    assert_eq!(
        diffs,
        [
            Difference {
                wallet: "w1".into(),
                asset: "usdc".into(),
                ledger: 50,
                reserved: 0,
                onchain: Some(45)
            },
            Difference {
                wallet: "w2".into(),
                asset: "eth".into(),
                ledger: 7,
                reserved: 0,
                onchain: None
            },
            Difference {
                wallet: "w4".into(),
                asset: "eth".into(),
                ledger: 0,
                reserved: 0,
                onchain: Some(3)
            },
        ]
    );
    assert_eq!(diffs[0].delta(), Some(-5));
    assert_eq!(diffs[1].delta(), None);
    assert_eq!(diffs[2].delta(), Some(3));
    assert!(reconcile(&ledger[..4], &onchain[..1]).is_empty());
}
