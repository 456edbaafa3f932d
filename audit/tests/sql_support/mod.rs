//! Fresh SQLite and PostgreSQL databases for the SqlStore tests, plus raw SQL
//! access "behind the log's back" through a second, independent pool.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use custos_db::{Db, testdb};

/// Which backend a test runs on.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Sqlite,
    Pg,
}

/// A fresh, empty database and how to reach it again.
pub struct TestDb {
    pub db: Db,
    pub url: String,
    /// Keeps the SQLite directory alive for the test's duration.
    pub dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A new pool on the same database, independent of the log's.
    pub async fn connect_again(&self) -> Db {
        Db::connect(&self.url, 2).await.expect("second connection")
    }
}

/// Creates a fresh database. PostgreSQL must be reachable
/// (`scripts/ensure-services.sh`): the test fails, it does not skip.
pub async fn fresh(kind: Kind, name: &str) -> TestDb {
    match kind {
        Kind::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let db = testdb::fresh_sqlite(dir.path(), name)
                .await
                .expect("fresh SQLite database");
            let url = format!(
                "sqlite://{}",
                dir.path().join(format!("{name}.db")).display()
            );
            TestDb {
                db,
                url,
                dir: Some(dir),
            }
        }
        Kind::Pg => {
            let url = testdb::fresh_pg_url(&format!("audit_{name}")).await.expect(
                "PostgreSQL at CUSTOS_TEST_PG_URL or 127.0.0.1:5432 (scripts/ensure-services.sh)",
            );
            let db = Db::connect(&url, 8)
                .await
                .expect("connect to the fresh database");
            TestDb { db, url, dir: None }
        }
    }
}

/// A multi-thread runtime for the synchronous tests (SqlStore blocks on it
/// from the test thread).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Overwrites entry `index` with `bytes`.
pub async fn update_entry(db: &Db, index: u64, bytes: Vec<u8>) {
    let done = sqlx::query("UPDATE audit_entries SET bytes = $1 WHERE idx = $2")
        .bind(bytes)
        .bind(index as i64)
        .execute(&db.pool)
        .await
        .expect("UPDATE audit_entries");
    assert_eq!(done.rows_affected(), 1);
}

/// Overwrites the tree node `(level, index)`.
pub async fn update_node(db: &Db, level: u8, index: u64, hash: &[u8]) {
    let done = sqlx::query("UPDATE audit_nodes SET hash = $1 WHERE level = $2 AND idx = $3")
        .bind(hash.to_vec())
        .bind(i64::from(level))
        .bind(index as i64)
        .execute(&db.pool)
        .await
        .expect("UPDATE audit_nodes");
    assert_eq!(done.rows_affected(), 1);
}

/// Deletes entries from `size` on and every tree node covering one of them,
/// as an operator truncating the tables would.
pub async fn truncate(db: &Db, size: u64) {
    sqlx::query("DELETE FROM audit_entries WHERE idx >= $1")
        .bind(size as i64)
        .execute(&db.pool)
        .await
        .expect("DELETE audit_entries");
    // Node (l, i) covers entries [i * 2^l, (i + 1) * 2^l): it covers one at or
    // past `size` exactly when i >= size >> l.
    for level in 0..64u32 {
        sqlx::query("DELETE FROM audit_nodes WHERE level = $1 AND idx >= $2")
            .bind(i64::from(level))
            .bind((size >> level) as i64)
            .execute(&db.pool)
            .await
            .expect("DELETE audit_nodes");
    }
}

/// Deletes the checkpoints of sizes above `size`.
pub async fn drop_checkpoints_above(db: &Db, size: u64) {
    sqlx::query("DELETE FROM audit_checkpoints WHERE size > $1")
        .bind(size as i64)
        .execute(&db.pool)
        .await
        .expect("DELETE audit_checkpoints");
}

/// Every stored entry, in index order.
pub async fn all_entries(db: &Db) -> Vec<Vec<u8>> {
    sqlx::query_scalar("SELECT bytes FROM audit_entries ORDER BY idx")
        .fetch_all(&db.pool)
        .await
        .expect("SELECT audit_entries")
}
