//! [`SqlStore`]: the log's [`LogStore`] in the coordinator's SQLite or
//! PostgreSQL database (feature `sql`).
//!
//! Three tables, created by [`create_schema`]:
//!
//! ```sql
//! audit_entries(idx BIGINT PRIMARY KEY, bytes BLOB|BYTEA)
//! audit_nodes(level BIGINT, idx BIGINT, hash BLOB|BYTEA, PRIMARY KEY(level, idx))
//! audit_checkpoints(size BIGINT PRIMARY KEY, note TEXT)
//! ```
//!
//! The store follows the shared convention of [`custos_db`]: one
//! `sqlx::Any` pool, `$n` placeholders on both backends. It is not the
//! authority on integrity: anyone with write access to these tables can alter
//! them, and the signed, witnessed checkpoints are what expose that.
//!
//! # Blocking
//!
//! [`LogStore`] is synchronous, so every method here runs its query with
//! [`Handle::block_on`]. Call it only from a thread that may block and is not
//! driving async tasks: a plain thread, or a closure given to
//! [`tokio::task::spawn_blocking`] (which is what [`crate::SharedLog`] does).
//! Calling it from inside an async task makes tokio panic.

use custos_db::{Backend, Db, is_unique_violation};
use sqlx::{Any, AssertSqlSafe, Transaction};
use tokio::runtime::Handle;

use crate::AuditError;
use crate::hash::Hash;
use crate::store::{AppendBatch, LogStore};

/// Rows per multi-row `INSERT`: far below both backends' bind-parameter
/// limits (SQLite 32766, PostgreSQL 65535) with three columns.
const MAX_ROWS_PER_INSERT: usize = 128;

/// A [`LogStore`] over a [`Db`] (SQLite or PostgreSQL).
///
/// Every [`LogStore::append`] is one transaction that is committed (and so,
/// with the pool settings of [`Db::connect`], flushed to disk) before it
/// returns `Ok`. Several processes may share one database: a writer whose
/// view of the size is stale gets [`AuditError::AppendConflict`].
///
/// See the [module documentation](self) for where it may be called from.
#[derive(Clone, Debug)]
pub struct SqlStore {
    db: Db,
    handle: Handle,
}

/// Creates the audit tables if they do not exist (idempotent), and checks
/// that a SQLite pool commits durably.
pub async fn create_schema(db: &Db) -> Result<(), AuditError> {
    let blob = db.backend.blob();
    let ddl = format!(
        "CREATE TABLE IF NOT EXISTS audit_entries (\
             idx BIGINT PRIMARY KEY, \
             bytes {blob} NOT NULL); \
         CREATE TABLE IF NOT EXISTS audit_nodes (\
             level BIGINT NOT NULL, \
             idx BIGINT NOT NULL, \
             hash {blob} NOT NULL, \
             PRIMARY KEY (level, idx)); \
         CREATE TABLE IF NOT EXISTS audit_checkpoints (\
             size BIGINT PRIMARY KEY, \
             note TEXT NOT NULL)"
    );
    match db.execute_ddl(&ddl).await {
        // Two processes creating the tables at once on PostgreSQL: the loser
        // trips over the winner's catalog row. The tables exist now.
        Err(e) if is_unique_violation(&e) => db.execute_ddl(&ddl).await,
        other => other,
    }
    .map_err(storage("creating the audit tables"))?;
    check_durable(db).await
}

/// Refuses a SQLite pool that would acknowledge a commit before it is on
/// disk ([`Db::connect`] sets `synchronous = FULL`; `NORMAL` in WAL mode
/// can lose the last commits on power loss).
async fn check_durable(db: &Db) -> Result<(), AuditError> {
    if db.backend != Backend::Sqlite {
        return Ok(());
    }
    let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(&db.pool)
        .await
        .map_err(storage("reading the SQLite synchronous setting"))?;
    // 2 = FULL, 3 = EXTRA.
    if level < 2 {
        return Err(AuditError::InvalidArgument(format!(
            "SQLite pool has synchronous = {level}: the audit log needs FULL (2) or EXTRA (3) \
             so an acknowledged append survives power loss; open it with Db::connect"
        )));
    }
    Ok(())
}

impl SqlStore {
    /// Opens the store, creating the audit tables if needed. Blocks on
    /// `handle` (see the [module documentation](self)); from async code use
    /// [`SqlStore::open_async`].
    pub fn open(db: Db, handle: Handle) -> Result<Self, AuditError> {
        handle.block_on(create_schema(&db))?;
        Ok(Self { db, handle })
    }

    /// Opens the store from async code, creating the audit tables if needed;
    /// queries will later run on the current tokio runtime.
    pub async fn open_async(db: Db) -> Result<Self, AuditError> {
        create_schema(&db).await?;
        Ok(Self {
            db,
            handle: Handle::current(),
        })
    }

    /// The database this store writes to.
    pub fn db(&self) -> &Db {
        &self.db
    }

    fn run<T>(&self, f: impl Future<Output = Result<T, AuditError>>) -> Result<T, AuditError> {
        self.handle.block_on(f)
    }
}

/// Wraps a driver error with what was being done. Driver messages carry
/// table names and key values, never the stored bytes or connection secrets.
fn storage(what: &'static str) -> impl FnOnce(sqlx::Error) -> AuditError {
    move |e| AuditError::Storage(format!("{what}: {e}"))
}

/// A log position as a database integer. Positions above `i64::MAX` cannot
/// exist in the database.
fn db_int(value: u64) -> Option<i64> {
    i64::try_from(value).ok()
}

fn to_u64(value: i64, what: &str) -> Result<u64, AuditError> {
    u64::try_from(value)
        .map_err(|_| AuditError::Corrupt(format!("negative {what} {value} in the database")))
}

fn to_hash(bytes: &[u8], level: u8, index: u64) -> Result<Hash, AuditError> {
    Hash::try_from(bytes).map_err(|_| {
        AuditError::Corrupt(format!(
            "tree node ({level}, {index}) has {} bytes, not 32",
            bytes.len()
        ))
    })
}

/// Checks a batch before touching the database: the leaf hashes are exactly
/// the entries', and every other node lies within the grown tree and was not
/// complete before it. A batch that breaks this is a bug in the caller, not a
/// storage failure.
fn check_batch(batch: &AppendBatch<'_>) -> Result<(), AuditError> {
    let len = batch.entries.len() as u64;
    let end = batch
        .first_index
        .checked_add(len)
        .filter(|&end| db_int(end).is_some())
        .ok_or_else(|| AuditError::InvalidArgument("log size overflows".into()))?;
    let mut next_leaf = batch.first_index;
    for &(level, index, _) in batch.nodes {
        let covers = |i: u64| i.checked_add(1).and_then(|i| i.checked_mul(1u64 << level));
        let upper = if level < 64 { covers(index) } else { None };
        let fits = upper.is_some_and(|u| u <= end && u > batch.first_index);
        if !fits {
            return Err(AuditError::Corrupt(format!(
                "node ({level}, {index}) does not belong to a batch of entries {}..{end}",
                batch.first_index
            )));
        }
        if level == 0 {
            if index != next_leaf {
                return Err(AuditError::Corrupt(format!(
                    "leaf hash {index} appended out of order"
                )));
            }
            next_leaf += 1;
        }
    }
    if next_leaf != end {
        return Err(AuditError::Corrupt(
            "leaf hashes do not match the entries appended".into(),
        ));
    }
    Ok(())
}

/// `INSERT INTO {table} ({columns}) VALUES ($1, ..), ($k, ..), ..` for
/// `rows` rows of `columns.len()` values.
fn insert_sql(table: &str, columns: &[&str], rows: usize) -> String {
    let mut sql = format!("INSERT INTO {table} ({}) VALUES ", columns.join(", "));
    let mut n = 0;
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for col in 0..columns.len() {
            if col > 0 {
                sql.push_str(", ");
            }
            n += 1;
            sql.push_str(&format!("${n}"));
        }
        sql.push(')');
    }
    sql
}

/// Splits `len` rows into statement sizes: full chunks, then powers of two,
/// so a connection's statement cache holds few distinct INSERT strings.
fn chunk_sizes(mut len: usize) -> Vec<usize> {
    let mut sizes = Vec::new();
    while len >= MAX_ROWS_PER_INSERT {
        sizes.push(MAX_ROWS_PER_INSERT);
        len -= MAX_ROWS_PER_INSERT;
    }
    let mut bit = MAX_ROWS_PER_INSERT;
    while bit > 0 {
        if len & bit != 0 {
            sizes.push(bit);
        }
        bit >>= 1;
    }
    sizes
}

/// Why an append transaction failed: a lost race is a conflict, anything
/// else a storage failure.
enum AppendFailure {
    Conflict { actual: Option<u64> },
    Storage(AuditError),
}

fn append_step(what: &'static str) -> impl FnOnce(sqlx::Error) -> AppendFailure {
    move |e| {
        if is_unique_violation(&e) {
            AppendFailure::Conflict { actual: None }
        } else {
            AppendFailure::Storage(storage(what)(e))
        }
    }
}

async fn size_in(tx: &mut Transaction<'static, Any>) -> Result<u64, AppendFailure> {
    let max: Option<i64> = sqlx::query_scalar("SELECT MAX(idx) FROM audit_entries")
        .fetch_one(&mut **tx)
        .await
        .map_err(append_step("reading the log size"))?;
    size_from_max(max).map_err(AppendFailure::Storage)
}

/// The log size given the largest stored index.
fn size_from_max(max: Option<i64>) -> Result<u64, AuditError> {
    match max {
        Some(m) => Ok(to_u64(m, "entry index")?.saturating_add(1)),
        None => Ok(0),
    }
}

/// The whole append, inside one transaction; commits only if every insert
/// succeeded. Dropping the transaction on an error path rolls it back.
async fn append_tx(db: &Db, batch: &AppendBatch<'_>) -> Result<(), AppendFailure> {
    let mut tx = match db.backend {
        // Take the write lock up front: a deferred transaction that reads
        // first would fail with SQLITE_BUSY instead of waiting when another
        // connection writes in between.
        Backend::Sqlite => db.pool.begin_with("BEGIN IMMEDIATE").await,
        Backend::Postgres => db.pool.begin().await,
    }
    .map_err(append_step("starting the append transaction"))?;
    if db.backend == Backend::Postgres {
        // The commit must be on disk before we return Ok, whatever the
        // server's default.
        sqlx::query("SET LOCAL synchronous_commit TO on")
            .execute(&mut *tx)
            .await
            .map_err(append_step("requesting a synchronous commit"))?;
        // One appender at a time (readers are not blocked), so the size read
        // below stays true until commit and a lost race is a clean size
        // mismatch rather than half-done inserts hitting a unique key.
        sqlx::query("LOCK TABLE audit_entries IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .map_err(append_step("locking the log for an append"))?;
    }
    let actual = size_in(&mut tx).await?;
    if actual != batch.first_index {
        return Err(AppendFailure::Conflict {
            actual: Some(actual),
        });
    }

    let mut first = 0;
    for rows in chunk_sizes(batch.entries.len()) {
        let sql = insert_sql("audit_entries", &["idx", "bytes"], rows);
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for (offset, bytes) in batch.entries[first..first + rows].iter().enumerate() {
            // check_batch bounded every index by i64::MAX.
            let idx = db_int(batch.first_index + (first + offset) as u64).unwrap_or(i64::MAX);
            query = query.bind(idx).bind(bytes.as_slice());
        }
        query
            .execute(&mut *tx)
            .await
            .map_err(append_step("inserting entries"))?;
        first += rows;
    }

    let mut first = 0;
    for rows in chunk_sizes(batch.nodes.len()) {
        let sql = insert_sql("audit_nodes", &["level", "idx", "hash"], rows);
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for &(level, index, hash) in &batch.nodes[first..first + rows] {
            query = query
                .bind(i64::from(level))
                .bind(db_int(index).unwrap_or(i64::MAX))
                .bind(hash.to_vec());
        }
        query
            .execute(&mut *tx)
            .await
            .map_err(append_step("inserting tree nodes"))?;
        first += rows;
    }

    tx.commit()
        .await
        .map_err(append_step("committing the append"))
}

async fn size_of(db: &Db) -> Result<u64, AuditError> {
    let max: Option<i64> = sqlx::query_scalar("SELECT MAX(idx) FROM audit_entries")
        .fetch_one(&db.pool)
        .await
        .map_err(storage("reading the log size"))?;
    size_from_max(max)
}

impl LogStore for SqlStore {
    /// One more than the largest stored entry index: a deleted entry in the
    /// middle then shows up as a missing entry, not a shifted log.
    fn size(&self) -> Result<u64, AuditError> {
        self.run(size_of(&self.db))
    }

    fn append(&mut self, batch: &AppendBatch<'_>) -> Result<(), AuditError> {
        check_batch(batch)?;
        let db = &self.db;
        self.run(async move {
            match append_tx(db, batch).await {
                Ok(()) => Ok(()),
                Err(AppendFailure::Storage(e)) => Err(e),
                Err(AppendFailure::Conflict { actual }) => {
                    // A unique violation means another writer got there
                    // first; report the size it left, if we can read it.
                    let actual = match actual {
                        Some(a) => a,
                        None => size_of(db).await?,
                    };
                    Err(AuditError::AppendConflict {
                        expected: batch.first_index,
                        actual,
                    })
                }
            }
        })
    }

    fn entry(&self, index: u64) -> Result<Option<Vec<u8>>, AuditError> {
        let Some(idx) = db_int(index) else {
            return Ok(None);
        };
        self.run(async {
            sqlx::query_scalar("SELECT bytes FROM audit_entries WHERE idx = $1")
                .bind(idx)
                .fetch_optional(&self.db.pool)
                .await
                .map_err(storage("reading an entry"))
        })
    }

    fn node(&self, level: u8, index: u64) -> Result<Option<Hash>, AuditError> {
        let Some(idx) = db_int(index) else {
            return Ok(None);
        };
        let bytes: Option<Vec<u8>> = self.run(async {
            sqlx::query_scalar("SELECT hash FROM audit_nodes WHERE level = $1 AND idx = $2")
                .bind(i64::from(level))
                .bind(idx)
                .fetch_optional(&self.db.pool)
                .await
                .map_err(storage("reading a tree node"))
        })?;
        bytes.map(|b| to_hash(&b, level, index)).transpose()
    }

    fn put_checkpoint(&mut self, size: u64, note: &str) -> Result<(), AuditError> {
        let size = db_int(size)
            .ok_or_else(|| AuditError::InvalidArgument(format!("checkpoint size {size}")))?;
        self.run(async {
            sqlx::query(
                "INSERT INTO audit_checkpoints (size, note) VALUES ($1, $2) \
                 ON CONFLICT (size) DO UPDATE SET note = excluded.note",
            )
            .bind(size)
            .bind(note)
            .execute(&self.db.pool)
            .await
            .map(|_| ())
            .map_err(storage("storing a checkpoint"))
        })
    }

    fn checkpoint(&self, size: u64) -> Result<Option<String>, AuditError> {
        let Some(size) = db_int(size) else {
            return Ok(None);
        };
        self.run(async {
            sqlx::query_scalar("SELECT note FROM audit_checkpoints WHERE size = $1")
                .bind(size)
                .fetch_optional(&self.db.pool)
                .await
                .map_err(storage("reading a checkpoint"))
        })
    }

    fn checkpoints(&self, from: u64, to: u64) -> Result<Vec<(u64, String)>, AuditError> {
        let Some(from) = db_int(from) else {
            return Ok(Vec::new());
        };
        let to = db_int(to).unwrap_or(i64::MAX);
        if from > to {
            return Ok(Vec::new());
        }
        let rows: Vec<(i64, String)> = self.run(async {
            sqlx::query_as(
                "SELECT size, note FROM audit_checkpoints \
                 WHERE size >= $1 AND size <= $2 ORDER BY size",
            )
            .bind(from)
            .bind(to)
            .fetch_all(&self.db.pool)
            .await
            .map_err(storage("reading checkpoints"))
        })?;
        rows.into_iter()
            .map(|(s, n)| Ok((to_u64(s, "checkpoint size")?, n)))
            .collect()
    }

    fn latest_checkpoint(&self) -> Result<Option<(u64, String)>, AuditError> {
        let row: Option<(i64, String)> = self.run(async {
            sqlx::query_as("SELECT size, note FROM audit_checkpoints ORDER BY size DESC LIMIT 1")
                .fetch_optional(&self.db.pool)
                .await
                .map_err(storage("reading the latest checkpoint"))
        })?;
        row.map(|(s, n)| Ok((to_u64(s, "checkpoint size")?, n)))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_rows_with_few_distinct_sizes() {
        for len in [0usize, 1, 2, 3, 64, 127, 128, 129, 1000] {
            let sizes = chunk_sizes(len);
            assert_eq!(sizes.iter().sum::<usize>(), len);
            assert!(
                sizes
                    .iter()
                    .all(|s| s.is_power_of_two() && *s <= MAX_ROWS_PER_INSERT)
            );
        }
    }

    #[test]
    fn insert_numbers_placeholders_across_rows() {
        assert_eq!(
            insert_sql("t", &["a", "b"], 2),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4)"
        );
    }

    #[test]
    fn batches_with_foreign_nodes_are_refused() {
        let entries = [vec![1u8], vec![2u8]];
        let ok = [(0u8, 4u64, [0u8; 32]), (0, 5, [0; 32]), (1, 2, [0; 32])];
        let batch = |nodes: &'static [(u8, u64, Hash)]| AppendBatch {
            first_index: 4,
            entries: &entries,
            nodes,
        };
        assert!(
            check_batch(&AppendBatch {
                first_index: 4,
                entries: &entries,
                nodes: &ok,
            })
            .is_ok()
        );
        // A leaf outside the batch, a missing leaf, a node completed earlier.
        assert!(check_batch(&batch(&[(0, 4, [0; 32]), (0, 6, [0; 32])])).is_err());
        assert!(check_batch(&batch(&[(0, 4, [0; 32])])).is_err());
        assert!(check_batch(&batch(&[(0, 4, [0; 32]), (0, 5, [0; 32]), (1, 1, [0; 32])])).is_err());
        assert!(
            check_batch(&batch(&[
                (0, 4, [0; 32]),
                (0, 5, [0; 32]),
                (200, 0, [0; 32])
            ]))
            .is_err()
        );
    }
}
