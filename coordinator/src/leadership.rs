//! Fenced leadership: one active coordinator among several on one
//! PostgreSQL database.
//!
//! # Design
//!
//! The lease is one row, `coordinator_lease` (id 1): its holder, the
//! addresses clients should use for it, an epoch and an expiry. Taking a
//! free or expired lease increments the epoch in the same statement (an
//! `INSERT ... ON CONFLICT DO UPDATE ... WHERE expired`, which PostgreSQL
//! runs under the row lock), so two standbys racing for it cannot both win
//! and every holder has an epoch no earlier holder had: a fencing token.
//! Expiry is measured on the database server's clock only
//! (`clock_timestamp()`), so coordinators' clocks need not agree.
//!
//! The holder renews every `renew_ms`. It counts itself the leader only
//! until `lease_ms` after it *sent* its last successful renewal, on its own
//! monotonic clock: the database set the expiry later than that, so the
//! holder stops believing it leads before anyone else can take the lease.
//! A holder that was paused (SIGSTOP, a VM freeze, a long GC-like stall)
//! wakes up past that instant and stops at once; its requests already in
//! flight carry its old epoch, which signers that have seen the new
//! leader's epoch refuse ([`crate::signers`] sends the epoch on every
//! request; a refusal naming a newer epoch also ends the leadership).
//!
//! The daemon acts only while [`Leadership::is_active`]: a coordinator
//! that loses the lease exits (the supervisor restarts it as a standby),
//! and a standby does no work at all until it holds the lease, then starts
//! like a restarted coordinator: every non-terminal withdrawal resumes from
//! the database, and the audit log continues from the stored head (the one
//! log, appended under the database's own conflict checks).
//!
//! With SQLite there is one coordinator, no lease and epoch 0
//! ([`Leadership::single`]).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use custos_service::db::{Backend, Db};
use tokio_util::sync::CancellationToken;

use crate::error::CoordError;

/// The database server's clock in milliseconds since the Unix epoch.
const NOW_MS: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";

fn db_err(e: sqlx::Error) -> CoordError {
    CoordError::storage("leadership lease", e)
}

fn to_epoch(v: i64) -> Result<u64, CoordError> {
    u64::try_from(v).map_err(|e| CoordError::storage(format!("leadership lease: epoch {v}"), e))
}

/// The lease row as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRow {
    /// Who holds (or last held) it.
    pub holder: String,
    /// The holder's gRPC address for clients.
    pub grpc_address: String,
    /// The holder's HTTP API address for clients.
    pub http_address: String,
    /// The holder's epoch.
    pub epoch: u64,
    /// Whether it is still valid by the database's clock.
    pub live: bool,
}

/// This coordinator's handle on the lease row.
#[derive(Clone, Debug)]
pub struct Lease {
    pool: sqlx::AnyPool,
    holder: String,
    grpc_address: String,
    http_address: String,
    duration: Duration,
}

impl Lease {
    /// Creates the lease table if needed. PostgreSQL only: SQLite serves one
    /// coordinator.
    pub async fn open(
        db: &Db,
        holder: &str,
        (grpc_address, http_address): (&str, &str),
        duration: Duration,
    ) -> Result<Self, CoordError> {
        if db.backend != Backend::Postgres {
            return Err(CoordError::invalid(
                "leadership",
                "a lease needs PostgreSQL (database_url = \"postgres://...\")",
            ));
        }
        let ddl = "CREATE TABLE IF NOT EXISTS coordinator_lease (
            id BIGINT PRIMARY KEY,
            holder TEXT NOT NULL,
            grpc_address TEXT NOT NULL,
            http_address TEXT NOT NULL,
            epoch BIGINT NOT NULL,
            expires_ms BIGINT NOT NULL)";
        if db.execute_ddl(ddl).await.is_err() {
            // Two coordinators creating it at once: PostgreSQL may refuse
            // the loser's `IF NOT EXISTS` ("type ... already exists"). The
            // table is there now; a second failure is a real one.
            db.execute_ddl(ddl).await.map_err(db_err)?;
        }
        Ok(Self {
            pool: db.pool.clone(),
            holder: holder.to_owned(),
            grpc_address: grpc_address.to_owned(),
            http_address: http_address.to_owned(),
            duration,
        })
    }

    fn duration_ms(&self) -> i64 {
        i64::try_from(self.duration.as_millis()).unwrap_or(i64::MAX / 2)
    }

    /// Takes the lease if it is free or expired, with the next epoch.
    /// `None`: another coordinator holds it.
    pub async fn try_acquire(&self) -> Result<Option<u64>, CoordError> {
        let sql = format!(
            "INSERT INTO coordinator_lease (id, holder, grpc_address, http_address, epoch, expires_ms)
             VALUES (1, $1, $2, $3, 1, {NOW_MS} + $4)
             ON CONFLICT (id) DO UPDATE SET
                holder = EXCLUDED.holder,
                grpc_address = EXCLUDED.grpc_address,
                http_address = EXCLUDED.http_address,
                epoch = coordinator_lease.epoch + 1,
                expires_ms = EXCLUDED.expires_ms
             WHERE coordinator_lease.expires_ms < {NOW_MS}
             RETURNING epoch"
        );
        let epoch: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(self.holder.as_str())
            .bind(self.grpc_address.as_str())
            .bind(self.http_address.as_str())
            .bind(self.duration_ms())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        epoch.map(to_epoch).transpose()
    }

    /// Extends the lease held at `epoch`. `false`: it is no longer ours (it
    /// expired, or another coordinator took it).
    pub async fn renew(&self, epoch: u64) -> Result<bool, CoordError> {
        let expiry = format!("{NOW_MS} + {}", self.duration_ms());
        self.set_own_expiry(epoch, &expiry, true).await
    }

    /// Gives the lease up (a clean shutdown), so a standby takes over at
    /// its next poll instead of waiting for the expiry. `false`: it was no
    /// longer ours.
    pub async fn release(&self, epoch: u64) -> Result<bool, CoordError> {
        self.set_own_expiry(epoch, "0", false).await
    }

    /// Sets the expiry (an SQL expression of ours, never input) of the lease
    /// if this coordinator holds it at `epoch` (and, if `live_only`, it has
    /// not expired).
    async fn set_own_expiry(
        &self,
        epoch: u64,
        expiry: &str,
        live_only: bool,
    ) -> Result<bool, CoordError> {
        let live = if live_only {
            format!(" AND expires_ms >= {NOW_MS}")
        } else {
            String::new()
        };
        let sql = format!(
            "UPDATE coordinator_lease SET expires_ms = {expiry}
             WHERE id = 1 AND epoch = $1 AND holder = $2{live}"
        );
        let done = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(i64::try_from(epoch).unwrap_or(i64::MAX))
            .bind(self.holder.as_str())
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    /// The lease row, if a coordinator ever took it.
    pub async fn current(&self) -> Result<Option<LeaseRow>, CoordError> {
        let sql = format!(
            "SELECT holder, grpc_address, http_address, epoch, \
             CASE WHEN expires_ms >= {NOW_MS} THEN 1 ELSE 0 END \
             FROM coordinator_lease WHERE id = 1"
        );
        let row: Option<(String, String, String, i64, i32)> =
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err)?;
        row.map(|(holder, grpc_address, http_address, epoch, live)| {
            Ok(LeaseRow {
                holder,
                grpc_address,
                http_address,
                epoch: to_epoch(epoch)?,
                live: live == 1,
            })
        })
        .transpose()
    }
}

/// Whether this coordinator may act, and with which epoch.
#[derive(Debug)]
pub struct Leadership {
    epoch: u64,
    /// `None`: no lease (one coordinator on SQLite), always active.
    valid_until: Option<Mutex<Instant>>,
    lost: CancellationToken,
    reason: Mutex<Option<String>>,
}

impl Leadership {
    /// The single coordinator on SQLite: epoch 0, no lease, always active.
    pub fn single() -> Self {
        Self {
            epoch: 0,
            valid_until: None,
            lost: CancellationToken::new(),
            reason: Mutex::new(None),
        }
    }

    /// A lease taken at `epoch`, valid on this host's clock until
    /// `valid_until` (the instant the acquiring statement was sent plus
    /// `lease_ms`).
    pub fn acquired(epoch: u64, valid_until: Instant) -> Self {
        Self {
            epoch,
            valid_until: Some(Mutex::new(valid_until)),
            lost: CancellationToken::new(),
            reason: Mutex::new(None),
        }
    }

    /// The epoch requests carry.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether this coordinator runs under a lease (PostgreSQL).
    pub fn leased(&self) -> bool {
        self.valid_until.is_some()
    }

    fn until(&self) -> Option<Instant> {
        self.valid_until
            .as_ref()
            .map(|m| *m.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether this coordinator may act now: not lost, and (under a lease)
    /// within the time its last renewal bought.
    pub fn is_active(&self) -> bool {
        !self.lost.is_cancelled() && self.until().is_none_or(|u| Instant::now() < u)
    }

    /// The epoch to put on a request, or `Unavailable` if this coordinator
    /// no longer leads (nothing may be sent then).
    pub fn check(&self) -> Result<u64, CoordError> {
        if self.is_active() {
            Ok(self.epoch)
        } else {
            Err(CoordError::unavailable(format!(
                "this coordinator no longer holds the leadership lease (epoch {}): it stopped acting",
                self.epoch
            )))
        }
    }

    /// Extends the validity after a successful renewal sent at `sent`.
    fn extend(&self, until: Instant) {
        if let Some(m) = &self.valid_until {
            let mut u = m.lock().unwrap_or_else(|p| p.into_inner());
            if until > *u {
                *u = until;
            }
        }
    }

    /// Ends the leadership (at most once; the first reason stays).
    pub fn lose(&self, reason: String) {
        let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            *r = Some(reason);
        }
        self.lost.cancel();
    }

    /// A signer refused a request because it has seen `highest`, newer than
    /// this coordinator's epoch: another coordinator leads.
    pub fn fenced_by(&self, highest: u64) {
        if highest > self.epoch {
            self.lose(format!(
                "a signer has seen coordinator epoch {highest}, newer than this coordinator's {}",
                self.epoch
            ));
        }
    }

    /// Why the leadership ended, once it did.
    pub fn lost_reason(&self) -> Option<String> {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// `/healthz` text for an active leader under a lease.
    pub fn role(&self) -> Option<String> {
        self.leased()
            .then(|| format!("active coordinator, epoch {}", self.epoch))
    }

    /// Prometheus lines: the epoch and whether this coordinator leads.
    pub fn metrics_text(&self) -> String {
        metrics_text(self.epoch, self.is_active())
    }

    /// Renews `lease` every `renew` until `stop`, extending the validity by
    /// `lease.duration` from each renewal's send time. Returns why the
    /// leadership was lost, or `None` once `stop` is cancelled. A failed
    /// renewal is retried until the validity runs out.
    pub async fn hold(
        &self,
        lease: &Lease,
        renew: Duration,
        stop: CancellationToken,
    ) -> Option<String> {
        loop {
            let now = Instant::now();
            let wake = self.until().map_or(now + renew, |u| (now + renew).min(u));
            tokio::select! {
                () = stop.cancelled() => return None,
                () = self.lost.cancelled() => return self.lost_reason(),
                () = tokio::time::sleep_until(wake.into()) => {}
            }
            if !self.is_active() {
                self.lose(format!(
                    "the lease was not renewed within {} ms (paused, or the database unreachable)",
                    lease.duration.as_millis()
                ));
                return self.lost_reason();
            }
            let sent = Instant::now();
            let left = self
                .until()
                .map_or(renew, |u| u.saturating_duration_since(sent));
            match tokio::time::timeout(left, lease.renew(self.epoch)).await {
                Ok(Ok(true)) => self.extend(sent + lease.duration),
                Ok(Ok(false)) => {
                    self.lose(format!(
                        "the lease at epoch {} expired or was taken over by another coordinator",
                        self.epoch
                    ));
                    return self.lost_reason();
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, epoch = self.epoch, "lease renewal failed: retrying")
                }
                Err(_) => tracing::warn!(epoch = self.epoch, "lease renewal timed out"),
            }
        }
    }
}

/// A withdrawal transition hook that fences the database too: inside the
/// transition's transaction it locks the lease row (`FOR SHARE`) and rolls
/// the transition back unless this coordinator still holds the lease at its
/// epoch. A takeover's update of the row waits for that transaction, so no
/// transition of an old leader commits after a new leader took over.
#[derive(Debug)]
pub struct LeaseFence {
    epoch: u64,
}

impl LeaseFence {
    /// The fence of the leader at `epoch`.
    pub fn new(epoch: u64) -> Self {
        Self { epoch }
    }

    /// `Ok` if the lease is still this coordinator's, locked until `conn`'s
    /// transaction ends; `Unavailable` otherwise.
    pub async fn check(&self, conn: &mut sqlx::AnyConnection) -> Result<(), CoordError> {
        let sql = format!(
            "SELECT CASE WHEN epoch = $1 AND expires_ms >= {NOW_MS} THEN 1 ELSE 0 END \
             FROM coordinator_lease WHERE id = 1 FOR SHARE"
        );
        let current: Option<i32> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(i64::try_from(self.epoch).unwrap_or(i64::MAX))
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_err)?;
        if current == Some(1) {
            Ok(())
        } else {
            Err(CoordError::unavailable(format!(
                "this coordinator no longer holds the leadership lease (epoch {}): the change is rolled back",
                self.epoch
            )))
        }
    }
}

impl crate::withdrawal::store::TransitionHook for LeaseFence {
    fn on_transition<'a>(
        &'a self,
        conn: &'a mut sqlx::AnyConnection,
        _row: &'a crate::withdrawal::store::WithdrawalRow,
        _from: Option<crate::withdrawal::State>,
        _to: crate::withdrawal::State,
        _detail: &'a str,
    ) -> crate::withdrawal::store::HookFuture<'a> {
        Box::pin(self.check(conn))
    }
}

/// Prometheus lines for a coordinator at `epoch` (the lease's epoch as
/// last seen, for a standby) that is or is not the active one.
pub fn metrics_text(epoch: u64, active: bool) -> String {
    format!(
        "# TYPE custos_coordinator_epoch gauge\ncustos_coordinator_epoch {epoch}\n\
         # TYPE custos_coordinator_active gauge\ncustos_coordinator_active {}\n",
        u8::from(active)
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    async fn lease(db: &Db, name: &str, ms: u64) -> Lease {
        Lease::open(
            db,
            name,
            (
                format!("https://{name}:7400").as_str(),
                format!("https://{name}:7401").as_str(),
            ),
            Duration::from_millis(ms),
        )
        .await
        .unwrap()
    }

    async fn fresh() -> Db {
        custos_service::db::testdb::fresh_pg("custos_lease")
            .await
            .expect("PostgreSQL reachable (scripts/ensure-services.sh starts it)")
    }

    #[tokio::test]
    async fn one_holder_at_a_time_and_every_takeover_raises_the_epoch() {
        let db = fresh().await;
        let a = lease(&db, "a", 400).await;
        let b = lease(&db, "b", 400).await;
        assert_eq!(a.current().await.unwrap(), None);
        assert_eq!(a.try_acquire().await.unwrap(), Some(1));
        assert_eq!(b.try_acquire().await.unwrap(), None, "held by a");
        let row = b.current().await.unwrap().unwrap();
        assert_eq!(
            (
                row.holder.as_str(),
                row.grpc_address.as_str(),
                row.epoch,
                row.live
            ),
            ("a", "https://a:7400", 1, true)
        );
        assert!(a.renew(1).await.unwrap());
        // a stops renewing: b takes over after the expiry, with epoch 2.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!b.current().await.unwrap().unwrap().live);
        assert_eq!(b.try_acquire().await.unwrap(), Some(2));
        // a's renewal of epoch 1 fails, and so does its release.
        assert!(!a.renew(1).await.unwrap());
        assert!(!a.release(1).await.unwrap());
        assert_eq!(a.try_acquire().await.unwrap(), None);
        // A clean release hands over at once.
        assert!(b.release(2).await.unwrap());
        assert_eq!(a.try_acquire().await.unwrap(), Some(3));
        // Nor does an expired lease come back to life by renewal.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!a.renew(3).await.unwrap());
    }

    #[tokio::test]
    async fn the_database_fence_refuses_an_old_leaders_changes() {
        let db = fresh().await;
        let a = lease(&db, "a", 60_000).await;
        assert_eq!(a.try_acquire().await.unwrap(), Some(1));
        let fence = LeaseFence::new(1);
        let mut tx = db.pool.begin().await.unwrap();
        fence.check(&mut tx).await.unwrap();
        // While a transition holds the fence, a takeover waits for it.
        let b = lease(&db, "b", 60_000).await;
        let takeover = tokio::time::timeout(
            Duration::from_millis(300),
            sqlx::query("UPDATE coordinator_lease SET expires_ms = 0").execute(&db.pool),
        )
        .await;
        assert!(takeover.is_err(), "a takeover went through a held fence");
        tx.commit().await.unwrap();
        sqlx::query("UPDATE coordinator_lease SET expires_ms = 0")
            .execute(&db.pool)
            .await
            .unwrap();
        assert_eq!(b.try_acquire().await.unwrap(), Some(2));
        let mut conn = db.pool.acquire().await.unwrap();
        let err = fence.check(&mut conn).await.unwrap_err().to_string();
        assert!(err.contains("epoch 1"), "{err}");
        LeaseFence::new(2).check(&mut conn).await.unwrap();
    }

    #[tokio::test]
    async fn racing_standbys_get_one_lease_and_distinct_epochs() {
        let db = fresh().await;
        let mut epochs = Vec::new();
        for round in 0..5 {
            // A lease far longer than a round takes even on a loaded
            // machine: only the race decides who wins, never an expiry
            // during it. Between rounds it is expired by hand.
            let leases: Vec<Lease> = futures::future::join_all((0..6).map(|i| {
                let db = db.clone();
                async move { lease(&db, &format!("c{i}"), 60_000).await }
            }))
            .await;
            let won: Vec<u64> = futures::future::join_all(leases.iter().map(|l| l.try_acquire()))
                .await
                .into_iter()
                .filter_map(|r| r.unwrap())
                .collect();
            assert_eq!(won.len(), 1, "round {round}: {won:?}");
            epochs.push(won[0]);
            sqlx::query("UPDATE coordinator_lease SET expires_ms = 0")
                .execute(&db.pool)
                .await
                .unwrap();
        }
        assert_eq!(epochs, vec![1, 2, 3, 4, 5]);
    }

    #[tokio::test]
    async fn a_holder_that_cannot_renew_stops_acting_within_the_lease() {
        let db = fresh().await;
        let a = lease(&db, "a", 600).await;
        let sent = Instant::now();
        let epoch = a.try_acquire().await.unwrap().unwrap();
        let l = std::sync::Arc::new(Leadership::acquired(
            epoch,
            sent + Duration::from_millis(600),
        ));
        assert_eq!(l.check().unwrap(), 1);
        let stop = CancellationToken::new();
        // Renewing keeps it active past the first lease period.
        let holder = {
            let l = l.clone();
            let a = a.clone();
            let stop = stop.clone();
            tokio::spawn(async move { l.hold(&a, Duration::from_millis(100), stop).await })
        };
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert!(l.is_active());
        // Another coordinator takes the lease (as after an expiry): the
        // next renewal fails and the holder stops at once.
        sqlx::query("UPDATE coordinator_lease SET expires_ms = 0")
            .execute(&db.pool)
            .await
            .unwrap();
        let b = lease(&db, "b", 600).await;
        assert_eq!(b.try_acquire().await.unwrap(), Some(2));
        let reason = tokio::time::timeout(Duration::from_secs(2), holder)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(reason.contains("taken over"), "{reason}");
        assert!(!l.is_active());
        let err = l.check().unwrap_err().to_string();
        assert!(
            err.contains("no longer holds the leadership lease (epoch 1)"),
            "{err}"
        );
        stop.cancel();

        // Without renewals the validity runs out by the local clock alone.
        let l = Leadership::acquired(7, Instant::now() + Duration::from_millis(100));
        assert!(l.is_active());
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!l.is_active());

        // A signer that has seen a newer epoch ends it too.
        let l = Leadership::acquired(3, Instant::now() + Duration::from_secs(60));
        l.fenced_by(3);
        assert!(l.is_active());
        l.fenced_by(4);
        assert!(!l.is_active());
        assert!(l.lost_reason().unwrap().contains("epoch 4"));
        assert!(Leadership::single().is_active());
        assert_eq!(Leadership::single().check().unwrap(), 0);
    }
}
