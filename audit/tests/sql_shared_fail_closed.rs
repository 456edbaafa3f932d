#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! docs/SECURITY.md case 21 and promise 4 on a real database: when the log cannot
//! be written, SharedLog::append fails, nothing is half-written and the log's
//! size does not move, so the coordinator never acts on an unlogged step.
//! Also: two coordinator replicas appending to one database concurrently.

mod sql_support;

use std::sync::Arc;

use custos_audit::entry::EntryBody;
use custos_audit::testing::{
    ORIGIN, T0, TestSigner, sample_genesis, sample_withdrawal, trust, witness,
};
use custos_audit::{AuditError, RequireSatisfiedDecision, SharedLog, verify_bundle};
use custos_db::{Backend, Db};
use sql_support::{Kind, fresh};

fn body(n: u64) -> EntryBody {
    EntryBody::Cancelled {
        withdrawal_id: format!("wd-{n}"),
        cancelled_by: "ops".into(),
        reason: "test".into(),
    }
}

async fn genesis_log(db: Db) -> SharedLog {
    let log = SharedLog::open(db, ORIGIN).await.unwrap();
    let genesis = sample_genesis().into_iter().map(|b| (T0, b)).collect();
    log.append_batch(genesis).await.unwrap();
    log
}

async fn stored_entries(db: &Db) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM audit_entries")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// The database goes away under the log (its pool is closed).
async fn pool_closed(kind: Kind) {
    let t = fresh(kind, "closed").await;
    let log = genesis_log(t.db.clone()).await;
    let size = log.size().await;
    let root = log.root().await;
    t.db.pool.close().await;

    let err = log.append(T0, body(1)).await.unwrap_err();
    assert!(matches!(err, AuditError::Storage(_)), "{err:?}");
    let err = log
        .append_batch(vec![(T0, body(2)), (T0, body(3))])
        .await
        .unwrap_err();
    assert!(matches!(err, AuditError::Storage(_)), "{err:?}");
    assert_eq!(log.size().await, size);
    assert_eq!(log.root().await, root);
    // Reads fail too, rather than answering from memory.
    assert!(log.entry(0).await.is_err());
    assert!(log.latest_checkpoint().await.is_err());

    // After the outage (a restart on a new pool) nothing extra is stored and
    // the log continues at the same index.
    let raw = t.connect_again().await;
    assert_eq!(stored_entries(&raw).await, size as i64);
    let log = SharedLog::open(raw, ORIGIN).await.unwrap();
    assert_eq!(log.size().await, size);
    assert_eq!(log.root().await, root);
    assert_eq!(log.append(T0, body(1)).await.unwrap(), size);
}

/// The database refuses writes part-way through an append (as a full disk
/// would): the entry row was inserted, the tree-node insert fails. The whole
/// transaction rolls back.
async fn writes_refused(kind: Kind) {
    let t = fresh(kind, "refused").await;
    let log = genesis_log(t.db.clone()).await;
    let size = log.size().await;
    let root = log.root().await;
    let raw = t.connect_again().await;
    let refuse: &[&'static str] = match raw.backend {
        Backend::Sqlite => &["CREATE TRIGGER audit_refuse BEFORE INSERT ON audit_nodes \
             BEGIN SELECT RAISE(ABORT, 'no space left on device (test)'); END"],
        Backend::Postgres => &[
            "CREATE FUNCTION audit_refuse() RETURNS trigger LANGUAGE plpgsql AS \
             $body$ BEGIN RAISE EXCEPTION 'no space left on device (test)'; END $body$",
            "CREATE TRIGGER audit_refuse BEFORE INSERT ON audit_nodes \
             FOR EACH ROW EXECUTE FUNCTION audit_refuse()",
        ],
    };
    for stmt in refuse {
        sqlx::query(*stmt).execute(&raw.pool).await.unwrap();
    }

    for attempt in 0..3 {
        let err = log.append(T0, body(attempt)).await.unwrap_err();
        match &err {
            AuditError::Storage(msg) => assert!(msg.contains("tree nodes"), "{msg}"),
            other => panic!("expected a storage error, got {other:?}"),
        }
        assert_eq!(log.size().await, size);
        assert_eq!(log.root().await, root);
        assert_eq!(
            stored_entries(&raw).await,
            size as i64,
            "entry row left behind"
        );
    }

    // Once the database accepts writes again the log continues where it was.
    sqlx::query(match raw.backend {
        Backend::Sqlite => "DROP TRIGGER audit_refuse",
        Backend::Postgres => "DROP TRIGGER audit_refuse ON audit_nodes",
    })
    .execute(&raw.pool)
    .await
    .unwrap();
    assert_eq!(log.append(T0, body(9)).await.unwrap(), size);
    let mut w = witness().unwrap();
    let note = log
        .checkpoint(Arc::new(TestSigner::from_seed(1)), T0)
        .await
        .unwrap();
    let proof = log.consistency_proof(0, size + 1).await.unwrap();
    let line = w.cosign(&note, &proof, T0 / 1000).unwrap();
    log.add_cosignatures(size + 1, vec![line]).await.unwrap();
    let report = verify_bundle(
        &log.export(0, size + 1, None).await.unwrap(),
        &trust().unwrap(),
        None,
        &RequireSatisfiedDecision,
    );
    assert!(report.is_ok(), "{:#?}", report.failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_append_fails_closed_when_the_pool_is_gone() {
    pool_closed(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_append_fails_closed_when_the_pool_is_gone() {
    pool_closed(Kind::Pg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_append_fails_closed_and_rolls_back_when_writes_are_refused() {
    writes_refused(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_append_fails_closed_and_rolls_back_when_writes_are_refused() {
    writes_refused(Kind::Pg).await;
}

/// The SQLite file is read-only (a filesystem remounted read-only): opening
/// read-only works for reads, every append fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_append_fails_closed_on_a_read_only_database() {
    let t = fresh(Kind::Sqlite, "readonly").await;
    let size = genesis_log(t.db.clone()).await.size().await;
    t.db.pool.close().await;
    let ro = Db::connect(&format!("{}?mode=ro", t.url), 2).await.unwrap();
    let log = SharedLog::open(ro, ORIGIN).await.unwrap();
    assert_eq!(log.size().await, size);
    let err = log.append(T0, body(1)).await.unwrap_err();
    assert!(matches!(err, AuditError::Storage(_)), "{err:?}");
    assert_eq!(log.size().await, size);
    assert!(!log.entry(0).await.unwrap().is_empty());
    // Range reads (what witnesses catch up with) see the same entries and
    // stop at the size.
    let all = log.entries(0, size).await.unwrap();
    assert_eq!(all.len() as u64, size);
    assert_eq!(all[0], log.entry(0).await.unwrap());
    assert!(log.entries(size - 1, size + 1).await.is_err());
    assert!(log.entries(size, size).await.unwrap().is_empty());
}

/// Tables that contradict each other (an entry row deleted, the tree node
/// above it left) make every append a unique-key violation: the append
/// fails at once instead of re-trying, and stores nothing.
async fn contradictory_tables(kind: Kind) {
    let t = fresh(kind, "contradictory").await;
    let log = genesis_log(t.db.clone()).await;
    log.append(T0, body(0)).await.unwrap();
    let n = log.size().await;
    assert_eq!(n % 2, 0, "the last entry must complete a level-1 node");
    let raw = t.connect_again().await;
    sqlx::query("DELETE FROM audit_entries WHERE idx = $1")
        .bind((n - 1) as i64)
        .execute(&raw.pool)
        .await
        .unwrap();
    let log = SharedLog::open(t.connect_again().await, ORIGIN)
        .await
        .unwrap();
    assert_eq!(log.size().await, n - 1);
    let started = std::time::Instant::now();
    let err = log.append(T0, body(1)).await.unwrap_err();
    assert!(matches!(err, AuditError::AppendConflict { .. }), "{err:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert_eq!(log.size().await, n - 1);
    assert_eq!(stored_entries(&raw).await, (n - 1) as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_contradictory_tables_fail_the_append_at_once() {
    contradictory_tables(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_contradictory_tables_fail_the_append_at_once() {
    contradictory_tables(Kind::Pg).await;
}

/// Two coordinator replicas (two SharedLogs, two pools) append concurrently
/// to one database: every append lands exactly once at a distinct index and
/// the result verifies.
async fn two_writers(kind: Kind) {
    let t = fresh(kind, "writers").await;
    let a = genesis_log(t.db.clone()).await;
    let b = SharedLog::open(t.connect_again().await, ORIGIN)
        .await
        .unwrap();
    let start = a.size().await;
    let writer = |log: SharedLog, withdrawals: std::ops::Range<u64>| {
        tokio::spawn(async move {
            let mut indices = Vec::new();
            for n in withdrawals {
                for body in sample_withdrawal(n, (n % 3) as u16) {
                    indices.push(log.append(T0 + n, body).await.unwrap());
                }
            }
            indices
        })
    };
    let (ia, ib) = tokio::join!(writer(a.clone(), 0..4), writer(b.clone(), 4..8));
    let mut all: Vec<u64> = ia.unwrap().into_iter().chain(ib.unwrap()).collect();
    let appended = all.len() as u64;
    all.sort_unstable();
    all.dedup();
    assert_eq!(all, (start..start + appended).collect::<Vec<_>>());

    a.refresh().await.unwrap();
    b.refresh().await.unwrap();
    assert_eq!(a.size().await, start + appended);
    assert_eq!(a.root().await, b.root().await);
    let mut w = witness().unwrap();
    let size = a.size().await;
    let note = a
        .checkpoint(Arc::new(TestSigner::from_seed(1)), T0)
        .await
        .unwrap();
    let line = w
        .cosign(
            &note,
            &a.consistency_proof(0, size).await.unwrap(),
            T0 / 1000,
        )
        .unwrap();
    a.add_cosignatures(size, vec![line]).await.unwrap();
    let report = verify_bundle(
        &b.export(0, size, None).await.unwrap(),
        &trust().unwrap(),
        None,
        &RequireSatisfiedDecision,
    );
    assert!(report.is_ok(), "{:#?}", report.failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_two_writers_append_exactly_once() {
    two_writers(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_two_writers_append_exactly_once() {
    two_writers(Kind::Pg).await;
}

/// Concurrent callers of one SharedLog share commits: 200 callers appending
/// 1 to 3 entries each at once get their entries contiguous at distinct
/// indices, and every entry is stored once, as given.
async fn group_commit(kind: Kind) {
    let t = fresh(kind, "group").await;
    let log = genesis_log(t.db.clone()).await;
    let start = log.size().await;
    let calls: Vec<_> = (0..200u64)
        .map(|c| {
            let log = log.clone();
            tokio::spawn(async move {
                let bodies: Vec<EntryBody> = (0..1 + c % 3).map(|k| body(c * 10 + k)).collect();
                let first = log
                    .append_batch(bodies.iter().cloned().map(|b| (T0, b)).collect())
                    .await
                    .unwrap();
                (first, bodies)
            })
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    for call in calls {
        let (first, bodies) = call.await.unwrap();
        for (i, b) in bodies.iter().enumerate() {
            let index = first + i as u64;
            assert!(seen.insert(index), "index {index} given twice");
            let stored = custos_audit::Entry::decode(&log.entry(index).await.unwrap()).unwrap();
            assert_eq!(&stored.body, b, "entry {index}");
            total += 1;
        }
    }
    assert_eq!(log.size().await, start + total);
    assert_eq!(stored_entries(&t.db).await, (start + total) as i64);
    let leaves: i64 = sqlx::query_scalar("SELECT COUNT(DISTINCT idx) FROM audit_entries")
        .fetch_one(&t.db.pool)
        .await
        .unwrap();
    assert_eq!(leaves, (start + total) as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_concurrent_appends_share_commits() {
    group_commit(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_concurrent_appends_share_commits() {
    group_commit(Kind::Pg).await;
}
