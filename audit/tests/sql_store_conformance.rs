#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The `testing` suite (contract and tamper scenarios, docs/SECURITY.md cases 19
//! and 20) against SqlStore on SQLite and on PostgreSQL, tampering through a
//! second connection pool; plus the unique-violation path of an append.

mod sql_support;

use custos_audit::store::{AppendBatch, LogStore};
use custos_audit::testing::{
    ORIGIN, edited_entry_is_named, populate, store_conformance, truncation_is_detected,
};
use custos_audit::{AuditError, Log, SqlStore, leaf_hash};
use sql_support::{Kind, fresh, runtime};

fn conforms(kind: Kind) {
    let rt = runtime();
    let t = rt.block_on(fresh(kind, "conformance"));
    let store = SqlStore::open(t.db.clone(), rt.handle().clone()).unwrap();
    let store = store_conformance(store).unwrap();
    // Everything the suite wrote is in the database, not in the pool: a new
    // pool (a restarted coordinator) sees the same log.
    let n = store.size().unwrap();
    let again = SqlStore::open(rt.block_on(t.connect_again()), rt.handle().clone()).unwrap();
    assert_eq!(again.size().unwrap(), n);
    let log = Log::open(again, ORIGIN).unwrap();
    assert_eq!(log.root(), Log::open(store, ORIGIN).unwrap().root());
}

fn edit_is_named(kind: Kind) {
    let rt = runtime();
    let t = rt.block_on(fresh(kind, "edit"));
    let raw = rt.block_on(t.connect_again());
    let store = SqlStore::open(t.db.clone(), rt.handle().clone()).unwrap();
    edited_entry_is_named(store, |_, index, bytes| {
        rt.block_on(sql_support::update_entry(&raw, index, bytes));
        Ok(())
    })
    .unwrap();
}

fn truncation_detected(kind: Kind) {
    let rt = runtime();
    let t = rt.block_on(fresh(kind, "truncation"));
    let raw = rt.block_on(t.connect_again());
    let store = SqlStore::open(t.db.clone(), rt.handle().clone()).unwrap();
    truncation_is_detected(store, |_, size| {
        rt.block_on(sql_support::truncate(&raw, size));
        Ok(())
    })
    .unwrap();
}

/// An append whose first insert succeeds and a later one hits a unique key
/// (here: the last entry was deleted but the tree node above it was left)
/// is an AppendConflict and leaves nothing behind.
fn unique_violation_rolls_back(kind: Kind) {
    let rt = runtime();
    let t = rt.block_on(fresh(kind, "unique"));
    let raw = rt.block_on(t.connect_again());
    let store = SqlStore::open(t.db.clone(), rt.handle().clone()).unwrap();
    let (log, _) = populate(store, 1).unwrap();
    let mut store = log.into_store();
    let n = store.size().unwrap();
    // Delete only the last entry row: the leaf hash (0, n - 1) stays.
    rt.block_on(async {
        sqlx::query("DELETE FROM audit_entries WHERE idx = $1")
            .bind((n - 1) as i64)
            .execute(&raw.pool)
            .await
            .unwrap();
    });
    assert_eq!(store.size().unwrap(), n - 1);
    let entries = [b"replacement".to_vec()];
    let nodes = [(0u8, n - 1, leaf_hash(&entries[0]))];
    match store.append(&AppendBatch {
        first_index: n - 1,
        entries: &entries,
        nodes: &nodes,
    }) {
        Err(AuditError::AppendConflict { expected, actual }) => {
            assert_eq!((expected, actual), (n - 1, n - 1));
        }
        other => panic!("expected an AppendConflict, got {other:?}"),
    }
    // The entry inserted before the failing node insert was rolled back.
    assert_eq!(store.size().unwrap(), n - 1);
    assert_eq!(store.entry(n - 1).unwrap(), None);
}

/// A batch that does not describe the tree is refused before any write.
fn malformed_batch_is_refused(kind: Kind) {
    let rt = runtime();
    let t = rt.block_on(fresh(kind, "malformed"));
    let mut store = SqlStore::open(t.db.clone(), rt.handle().clone()).unwrap();
    let entries = [b"a".to_vec(), b"b".to_vec()];
    let one_leaf = [(0u8, 0u64, leaf_hash(b"a"))];
    let err = store
        .append(&AppendBatch {
            first_index: 0,
            entries: &entries,
            nodes: &one_leaf,
        })
        .unwrap_err();
    assert!(matches!(err, AuditError::Corrupt(_)), "{err:?}");
    assert_eq!(store.size().unwrap(), 0);
}

#[test]
fn sqlite_store_conforms() {
    conforms(Kind::Sqlite);
}

#[test]
fn pg_store_conforms() {
    conforms(Kind::Pg);
}

#[test]
fn sqlite_edited_entry_is_named() {
    edit_is_named(Kind::Sqlite);
}

#[test]
fn pg_edited_entry_is_named() {
    edit_is_named(Kind::Pg);
}

#[test]
fn sqlite_truncation_is_detected() {
    truncation_detected(Kind::Sqlite);
}

#[test]
fn pg_truncation_is_detected() {
    truncation_detected(Kind::Pg);
}

#[test]
fn sqlite_unique_violation_is_a_conflict_and_rolls_back() {
    unique_violation_rolls_back(Kind::Sqlite);
}

#[test]
fn pg_unique_violation_is_a_conflict_and_rolls_back() {
    unique_violation_rolls_back(Kind::Pg);
}

#[test]
fn sqlite_malformed_batch_is_refused() {
    malformed_batch_is_refused(Kind::Sqlite);
}

#[test]
fn pg_malformed_batch_is_refused() {
    malformed_batch_is_refused(Kind::Pg);
}

/// A SQLite pool that could acknowledge an append before it is on disk is
/// refused at open.
#[test]
fn sqlite_pool_without_full_sync_is_refused() {
    let rt = runtime();
    let t = rt.block_on(fresh(Kind::Sqlite, "nosync"));
    let one = rt.block_on(async {
        let db = custos_db::Db::connect(&t.url, 1).await.unwrap();
        sqlx::query("PRAGMA synchronous = NORMAL")
            .execute(&db.pool)
            .await
            .unwrap();
        db
    });
    match SqlStore::open(one, rt.handle().clone()) {
        Err(AuditError::InvalidArgument(msg)) => assert!(msg.contains("synchronous"), "{msg}"),
        other => panic!("expected the pool to be refused, got {other:?}"),
    }
}
