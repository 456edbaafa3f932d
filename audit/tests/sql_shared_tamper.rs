#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! docs/SECURITY.md cases 19 and 20 on a real database: a log built through
//! SharedLog, checkpoints signed by the log key and co-signed by a witness,
//! then altered with raw SQL through a separate connection pool. The offline
//! verifier must name the altered entry, and the witness that saw the
//! original checkpoint must refuse the rewritten log's checkpoint.

mod sql_support;

use std::sync::Arc;

use custos_audit::LogSigner;
use custos_audit::entry::EntryBody;
use custos_audit::testing::{
    ORIGIN, T0, TestSigner, sample_genesis, sample_withdrawal, trust, witness,
};
use custos_audit::{
    AuditError, Entry, FailureKind, RequireSatisfiedDecision, SharedLog, Witness, leaf_hash,
    node_hash, verify_bundle,
};
use sql_support::{Kind, TestDb, fresh};

fn log_signer() -> Arc<dyn LogSigner> {
    Arc::new(TestSigner::from_seed(1))
}

/// Signs a checkpoint of the current tree, has `w` co-sign it and stores the
/// cosignature; returns the co-signed note.
async fn witnessed_checkpoint(log: &SharedLog, w: &mut Witness<TestSigner>, now_ms: u64) -> String {
    let note = log.checkpoint(log_signer(), now_ms).await.unwrap();
    let size = log.size().await;
    let from = w.last().map_or(0, |c| c.size);
    let proof = log.consistency_proof(from, size).await.unwrap();
    let line = w.cosign(&note, &proof, now_ms / 1000).unwrap();
    log.add_cosignatures(size, vec![line]).await.unwrap()
}

/// Genesis plus five withdrawals, a witnessed checkpoint after each step.
async fn build(t: &TestDb) -> (SharedLog, Witness<TestSigner>) {
    let log = SharedLog::open(t.db.clone(), ORIGIN).await.unwrap();
    let mut w = witness().unwrap();
    let genesis = sample_genesis().into_iter().map(|b| (T0, b)).collect();
    assert_eq!(log.append_batch(genesis).await.unwrap(), 0);
    witnessed_checkpoint(&log, &mut w, T0).await;
    for n in 0..5u64 {
        for body in sample_withdrawal(n, (n % 3) as u16) {
            log.append(T0 + n, body).await.unwrap();
        }
        witnessed_checkpoint(&log, &mut w, T0 + n).await;
    }
    // The untampered log verifies.
    let report = verify_bundle(
        &log.export(0, log.size().await, None).await.unwrap(),
        &trust().unwrap(),
        None,
        &RequireSatisfiedDecision,
    );
    assert!(report.is_ok(), "{:#?}", report.failures);
    (log, w)
}

/// The coordinator restarted on the altered database: a new pool and log.
async fn reopen(t: &TestDb) -> SharedLog {
    SharedLog::open(t.connect_again().await, ORIGIN)
        .await
        .unwrap()
}

/// Re-derives every tree node from the stored entries and writes them back,
/// as an operator covering up an edit would.
async fn rehash_tree(raw: &custos_db::Db) {
    let mut level: Vec<[u8; 32]> = sql_support::all_entries(raw)
        .await
        .iter()
        .map(|e| leaf_hash(e))
        .collect();
    let mut l = 0u8;
    while !level.is_empty() {
        for (i, h) in level.iter().enumerate() {
            sql_support::update_node(raw, l, i as u64, h).await;
        }
        level = level
            .chunks_exact(2)
            .map(|p| node_hash(&p[0], &p[1]))
            .collect();
        l += 1;
    }
}

fn cancellation(n: u64) -> EntryBody {
    EntryBody::Cancelled {
        withdrawal_id: format!("wd-{n}"),
        cancelled_by: "mallory".into(),
        reason: "".into(),
    }
}

/// (a) One entry's bytes rewritten in place.
async fn edited_entry(kind: Kind) {
    let t = fresh(kind, "tamper_edit").await;
    let (log, mut w) = build(&t).await;
    let n = log.size().await;
    let raw = t.connect_again().await;
    let checkpoint_sizes: Vec<u64> =
        sqlx::query_scalar::<_, i64>("SELECT size FROM audit_checkpoints ORDER BY size")
            .fetch_all(&raw.pool)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s as u64)
            .collect();
    let victim = n / 2;
    let mut entry = Entry::decode(&log.entry(victim).await.unwrap()).unwrap();
    entry.timestamp_ms += 1;
    sql_support::update_entry(&raw, victim, entry.encode().unwrap()).await;

    // The naive edit: the stored tree still commits to the old entry.
    let log = reopen(&t).await;
    let bundle = log.export(0, n, None).await.unwrap();
    let report = verify_bundle(&bundle, &trust().unwrap(), None, &RequireSatisfiedDecision);
    let first = report.first_failure().expect("the edit must be detected");
    assert_eq!(first.entry, Some(victim), "{first:?}");
    assert_eq!(first.kind, FailureKind::EntryMismatch, "{first:?}");

    // The thorough edit: the operator re-derives the whole tree, so the log
    // is self-consistent again and signs a fresh checkpoint of it.
    rehash_tree(&raw).await;
    let log = reopen(&t).await;
    assert_eq!(log.size().await, n);
    let forged = log.checkpoint(log_signer(), T0 + 99).await.unwrap();
    match w.cosign(&forged, &[], T0 / 1000) {
        Err(AuditError::SplitView { size, .. }) => assert_eq!(size, n),
        other => panic!("witness must refuse a split view, got {other:?}"),
    }
    // The witnessed checkpoints before the rewrite still pin the old entry.
    // With the leaf hashes rewritten too, the verifier can only place the
    // change between two checkpoints: it names the first entry after the
    // last checkpoint that still matches, and the range holds the victim.
    let bundle = log.export(0, n, None).await.unwrap();
    let report = verify_bundle(&bundle, &trust().unwrap(), None, &RequireSatisfiedDecision);
    let first = report
        .first_failure()
        .expect("the rewrite must be detected");
    let matching = checkpoint_sizes
        .iter()
        .copied()
        .filter(|&s| s <= victim)
        .max();
    let next = checkpoint_sizes.iter().copied().find(|&s| s > victim);
    assert_eq!(first.entry, matching, "{:#?}", report.failures);
    assert_eq!(first.kind, FailureKind::EntryMismatch, "{first:?}");
    assert!(
        first
            .message
            .contains(&format!("[{}, {})", matching.unwrap(), next.unwrap())),
        "{first:?}"
    );
    // The witness state did not move.
    assert_eq!(w.last().map(|c| c.size), Some(n));
}

/// (b) The last entry and its leaf hash deleted.
async fn deleted_last_entry(kind: Kind) {
    let t = fresh(kind, "tamper_delete").await;
    let (log, mut w) = build(&t).await;
    let n = log.size().await;
    let previous = log.latest_checkpoint().await.unwrap().unwrap();
    let raw = t.connect_again().await;
    sqlx::query("DELETE FROM audit_entries WHERE idx = $1")
        .bind((n - 1) as i64)
        .execute(&raw.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM audit_nodes WHERE level = 0 AND idx = $1")
        .bind((n - 1) as i64)
        .execute(&raw.pool)
        .await
        .unwrap();

    let log = reopen(&t).await;
    assert_eq!(log.size().await, n - 1);
    // The auditor holds the previous (witnessed) checkpoint of size n.
    let bundle = log.export(0, n - 1, None).await.unwrap();
    let report = verify_bundle(
        &bundle,
        &trust().unwrap(),
        Some(&previous),
        &RequireSatisfiedDecision,
    );
    let first = report
        .first_failure()
        .expect("the deletion must be detected");
    assert_eq!(first.entry, Some(n - 1), "{:#?}", report.failures);
    assert_eq!(first.kind, FailureKind::EntryMissing, "{first:?}");

    // The shortened log's checkpoint is a rollback for the witness.
    let forged = log.checkpoint(log_signer(), T0 + 99).await.unwrap();
    match w.cosign(&forged, &[], T0 / 1000) {
        Err(AuditError::StaleCheckpoint { seen, offered }) => {
            assert_eq!((seen, offered), (n, n - 1));
        }
        other => panic!("witness must refuse a rollback, got {other:?}"),
    }
}

/// (c) The tree truncated in the middle, later checkpoints dropped, and a
/// different history written in its place.
async fn truncated_tree(kind: Kind) {
    let t = fresh(kind, "tamper_truncate").await;
    let (log, mut w) = build(&t).await;
    let n = log.size().await;
    let previous = log.latest_checkpoint().await.unwrap().unwrap();
    let cut = n / 2 + 1;
    let raw = t.connect_again().await;
    sql_support::truncate(&raw, cut).await;
    sql_support::drop_checkpoints_above(&raw, cut).await;

    let log = reopen(&t).await;
    assert_eq!(log.size().await, cut);
    let bundle = log.export(0, cut, None).await.unwrap();
    let report = verify_bundle(
        &bundle,
        &trust().unwrap(),
        Some(&previous),
        &RequireSatisfiedDecision,
    );
    assert!(
        report
            .failures
            .iter()
            .any(|f| f.kind == FailureKind::EntryMissing && f.entry == Some(cut)),
        "{:#?}",
        report.failures
    );
    assert_eq!(
        report.first_failure().and_then(|f| f.entry),
        Some(cut),
        "{:#?}",
        report.failures
    );

    // A rewritten history of the same length: split view.
    for i in cut..n {
        log.append(T0 + i, cancellation(i)).await.unwrap();
    }
    assert_eq!(log.size().await, n);
    let forged = log.checkpoint(log_signer(), T0 + 99).await.unwrap();
    match w.cosign(&forged, &[], T0 / 1000) {
        Err(AuditError::SplitView { size, .. }) => assert_eq!(size, n),
        other => panic!("witness must refuse a split view, got {other:?}"),
    }
    // Growing past it does not help: no consistency proof connects the
    // witnessed tree to the rewritten one.
    log.append(T0 + n, cancellation(n)).await.unwrap();
    let grown = log.checkpoint(log_signer(), T0 + 100).await.unwrap();
    let proof = log.consistency_proof(n, n + 1).await.unwrap();
    assert!(w.cosign(&grown, &proof, T0 / 1000).is_err());
    assert_eq!(w.last().map(|c| c.size), Some(n));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_edited_entry_is_named_and_rewrite_refused() {
    edited_entry(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_edited_entry_is_named_and_rewrite_refused() {
    edited_entry(Kind::Pg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_deleted_last_entry_is_named_and_rollback_refused() {
    deleted_last_entry(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_deleted_last_entry_is_named_and_rollback_refused() {
    deleted_last_entry(Kind::Pg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_truncated_tree_is_named_and_split_view_refused() {
    truncated_tree(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_truncated_tree_is_named_and_split_view_refused() {
    truncated_tree(Kind::Pg).await;
}
