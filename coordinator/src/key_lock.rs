//! Key locks (docs/SECURITY.md promise 3): a signing failure that no one can
//! explain (a partial signature that is malformed, or partials that combine
//! into a signature that does not verify) is counted per key; after
//! `lock_after_failures` of them, each within `lock_window` of the previous
//! one, the key is locked for signing until an admin unlocks it. Successes
//! in between do not reset the count: a signer that corrupts only some of
//! its partials still gets the key locked. Refusals by co-signer checks and
//! unreachable signers are explained and not counted.
//!
//! The lock is stored before anything else (so it holds even when the audit
//! log cannot record it); an unlock is logged first, then applied.

use sqlx::{AnyPool, Row};

use crate::clock::now_ms;
use crate::error::CoordError;

/// DDL for the failure counts and locks.
pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS key_failures (
    key_id TEXT PRIMARY KEY,
    consecutive BIGINT NOT NULL,
    last_error TEXT NOT NULL,
    locked_ms BIGINT,
    updated_ms BIGINT NOT NULL
)";

fn db_err(e: sqlx::Error) -> CoordError {
    CoordError::storage("key locks", e)
}

/// A key's failure record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockStatus {
    /// Recent unexplained failures (each within the window of the previous).
    pub consecutive: u32,
    /// The last one.
    pub last_error: String,
    /// When it was locked (Unix ms), if it is.
    pub locked_ms: Option<i64>,
}

/// The counts and locks, in the coordinator's database.
#[derive(Clone, Debug)]
pub struct KeyLocks {
    pool: AnyPool,
    lock_after: u32,
    window_ms: i64,
}

impl KeyLocks {
    /// `lock_after` failures (at least 1), each within `window` of the
    /// previous, lock a key.
    pub fn new(pool: AnyPool, lock_after: u32, window: std::time::Duration) -> Self {
        Self {
            pool,
            lock_after: lock_after.max(1),
            window_ms: i64::try_from(window.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// The record of `key_id`, if it ever failed.
    pub async fn status(&self, key_id: &str) -> Result<Option<LockStatus>, CoordError> {
        let row = sqlx::query(
            "SELECT consecutive, last_error, locked_ms FROM key_failures WHERE key_id = $1",
        )
        .bind(key_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(row.map(|r| LockStatus {
            consecutive: u32::try_from(r.get::<i64, _>("consecutive")).unwrap_or(u32::MAX),
            last_error: r.get("last_error"),
            locked_ms: r.get("locked_ms"),
        }))
    }

    /// Refuses (FAILED_PRECONDITION) while `key_id` is locked.
    pub async fn check(&self, key_id: &str) -> Result<(), CoordError> {
        match self.status(key_id).await? {
            Some(LockStatus {
                consecutive,
                last_error,
                locked_ms: Some(_),
            }) => Err(CoordError::precondition(
                "key",
                key_id,
                format!(
                    "is locked for signing after {consecutive} unexplained signing failures (last: {last_error}); an admin unlocks it with `custos key unlock {key_id} --reason ...` once the cause is understood"
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Counts an unexplained failure; `Some(count)` when this one locked the key.
    pub async fn failure(&self, key_id: &str, error: &str) -> Result<Option<u32>, CoordError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        // A failure long after the previous one starts the count again.
        let updated = sqlx::query(
            "UPDATE key_failures SET
                consecutive = CASE WHEN updated_ms < $1 THEN 1 ELSE consecutive + 1 END,
                last_error = $2, updated_ms = $3
             WHERE key_id = $4",
        )
        .bind(now.saturating_sub(self.window_ms))
        .bind(error)
        .bind(now)
        .bind(key_id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        if updated.rows_affected() == 0 {
            sqlx::query(
                "INSERT INTO key_failures (key_id, consecutive, last_error, updated_ms)
                 VALUES ($1, 1, $2, $3)",
            )
            .bind(key_id)
            .bind(error)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        let locked = sqlx::query(
            "UPDATE key_failures SET locked_ms = $1
             WHERE key_id = $2 AND locked_ms IS NULL AND consecutive >= $3",
        )
        .bind(now)
        .bind(key_id)
        .bind(i64::from(self.lock_after))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        if locked.rows_affected() == 1 {
            return Ok(Some(self.lock_after));
        }
        Ok(None)
    }

    /// Unlocks `key_id` and resets its count; `false` if it was not locked.
    pub async fn unlock(&self, key_id: &str) -> Result<bool, CoordError> {
        let r = sqlx::query(
            "UPDATE key_failures SET locked_ms = NULL, consecutive = 0, updated_ms = $1
             WHERE key_id = $2 AND locked_ms IS NOT NULL",
        )
        .bind(now_ms())
        .bind(key_id)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    async fn locks(url: &str, window: std::time::Duration) -> KeyLocks {
        let db = crate::storage::connect(url).await.unwrap();
        KeyLocks::new(db.pool().clone(), 3, window)
    }

    async fn lock_cycle(url: &str) {
        // Failures further apart than the window do not add up.
        let l = locks(url, std::time::Duration::from_millis(300)).await;
        l.check("k").await.unwrap();
        assert_eq!(l.failure("k", "bad partial 1").await.unwrap(), None);
        assert_eq!(l.failure("k", "bad partial 2").await.unwrap(), None);
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        assert_eq!(l.failure("k", "bad partial 3").await.unwrap(), None);
        assert_eq!(l.status("k").await.unwrap().unwrap().consecutive, 1);
        // Within the window they do.
        let l = locks(url, std::time::Duration::from_secs(3600)).await;
        assert_eq!(l.failure("k", "x").await.unwrap(), None);
        assert_eq!(
            l.failure("k", "combined signature does not verify")
                .await
                .unwrap(),
            Some(3)
        );
        let e = l.check("k").await.unwrap_err().to_string();
        assert!(
            e.contains("locked") && e.contains("3 unexplained") && e.contains("does not verify"),
            "{e}"
        );
        // Still locked after more failures; other keys unaffected.
        assert_eq!(l.failure("k", "again").await.unwrap(), None);
        assert!(l.check("k").await.is_err());
        l.check("other").await.unwrap();
        assert!(l.unlock("k").await.unwrap());
        assert!(!l.unlock("k").await.unwrap());
        l.check("k").await.unwrap();
        assert_eq!(l.status("k").await.unwrap().unwrap().consecutive, 0);
    }

    #[tokio::test]
    async fn failures_lock_a_key_until_unlocked_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("c.db").display());
        lock_cycle(&url).await;
    }

    #[tokio::test]
    async fn failures_lock_a_key_until_unlocked_postgres() {
        let url = custos_service::db::testdb::fresh_pg_url("keylock")
            .await
            .expect("PostgreSQL (scripts/ensure-services.sh)");
        lock_cycle(&url).await;
    }
}
