//! [`SharedLog`]: the SQL-backed log for async code (feature `sql`).
//!
//! The coordinator holds one `SharedLog` per process (clone it freely) and
//! calls it from its tasks. Each call takes the log's lock, then runs the
//! synchronous [`Log`] operation on tokio's blocking pool, so the async
//! executor never waits on the database.
//!
//! # Fail closed
//!
//! [`SharedLog::append`] returns `Ok(index)` only once the entry is committed
//! to the database. On `Err` the caller must not perform the action the entry
//! describes. An error can be ambiguous (a connection lost during commit), in
//! which case the entry may be in the log although the action never happened;
//! the reverse (an action without its entry) cannot happen. A future dropped
//! mid-call does not abort the database work, it only loses the answer: treat
//! it as an error.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use custos_db::Db;
use tokio::sync::Mutex;

use crate::bundle::ExportBundle;
use crate::entry::EntryBody;
use crate::hash::Hash;
use crate::log::Log;
use crate::sql::SqlStore;
use crate::{AuditError, LogSigner};

/// How long an append keeps re-trying after other writers (other
/// coordinator replicas on the same database) appended first.
const CONFLICT_DEADLINE: Duration = Duration::from_secs(10);

/// The pause before re-try `attempt` (from 1): exponential from 1 ms, capped
/// at 64 ms, with jitter so two replicas do not keep colliding in step.
fn conflict_backoff(attempt: u32) -> Duration {
    let base_us = 1000u64 << attempt.min(6);
    // Jitter needs no quality: the clock's sub-millisecond digits will do.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    Duration::from_micros(base_us / 2 + nanos % base_us)
}

/// A [`Log`] over a [`SqlStore`], shared by async tasks.
///
/// Appends are serialised by a lock in this process and by the database
/// across processes. [`SharedLog::size`] and [`SharedLog::root`] are this
/// process's view, refreshed by every append and by [`SharedLog::refresh`].
#[derive(Clone, Debug)]
pub struct SharedLog {
    log: Arc<Mutex<Log<SqlStore>>>,
    /// Appends waiting for the log: whoever takes the lock next appends
    /// them all in one transaction and one tree update (group commit).
    waiting: Arc<std::sync::Mutex<Vec<Waiting>>>,
    /// For exports, which read through their own [`Log`] so they do not hold
    /// the lock (and stall appends) for the minutes a large export takes.
    store: SqlStore,
    origin: Arc<str>,
}

/// One caller's entries waiting for a group commit, and where its answer goes.
#[derive(Debug)]
struct Waiting {
    items: Vec<(u64, EntryBody)>,
    answer: tokio::sync::oneshot::Sender<Result<u64, AuditError>>,
}

/// `e` for one of several callers whose entries shared a failed commit.
fn shared_failure(e: &AuditError) -> AuditError {
    match e {
        AuditError::AppendConflict { expected, actual } => AuditError::AppendConflict {
            expected: *expected,
            actual: *actual,
        },
        AuditError::Corrupt(m) => AuditError::Corrupt(m.clone()),
        other => AuditError::Storage(other.to_string()),
    }
}

/// Appends `items` at the log's end, re-trying after other writers (other
/// coordinator replicas on the same database) appended first.
fn append_retrying(
    log: &mut Log<SqlStore>,
    items: Vec<(u64, EntryBody)>,
) -> Result<u64, AuditError> {
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        let head = log.size();
        match log.append_batch(items.clone()) {
            Err(conflict @ AuditError::AppendConflict { .. }) => {
                if started.elapsed() >= CONFLICT_DEADLINE {
                    return Err(conflict);
                }
                log.refresh()?;
                if log.size() == head {
                    return Err(conflict);
                }
                attempt += 1;
                // On the blocking pool: sleeping here parks no async worker.
                std::thread::sleep(conflict_backoff(attempt));
            }
            result => return result,
        }
    }
}

/// Appends every waiting caller's entries in one commit and answers each
/// with its first index. Entries that fail together for a reason of their
/// own (a malformed entry, not the store) are retried caller by caller, so
/// one caller's bad entry fails only that caller.
fn commit_group(log: &mut Log<SqlStore>, group: Vec<Waiting>) {
    if let [_] = group.as_slice() {
        for w in group {
            let _ = w.answer.send(append_retrying(log, w.items));
        }
        return;
    }
    let all: Vec<(u64, EntryBody)> = group.iter().flat_map(|w| w.items.clone()).collect();
    match append_retrying(log, all) {
        Ok(mut index) => {
            for w in group {
                let n = w.items.len() as u64;
                let _ = w.answer.send(Ok(index));
                index += n;
            }
        }
        Err(
            e @ (AuditError::Storage(_)
            | AuditError::Corrupt(_)
            | AuditError::AppendConflict { .. }),
        ) => {
            for w in group {
                let _ = w.answer.send(Err(shared_failure(&e)));
            }
        }
        Err(_) => {
            for w in group {
                let _ = w.answer.send(append_retrying(log, w.items));
            }
        }
    }
}

fn task_failed(e: tokio::task::JoinError) -> AuditError {
    AuditError::Storage(format!("log task failed: {e}"))
}

impl SharedLog {
    /// Opens the log named `origin` in `db`, creating the audit tables if
    /// needed and reading the current head.
    pub async fn open(db: Db, origin: &str) -> Result<Self, AuditError> {
        let store = SqlStore::open_async(db).await?;
        let reader = store.clone();
        let name = origin.to_owned();
        let log = tokio::task::spawn_blocking(move || Log::open(store, &name))
            .await
            .map_err(task_failed)??;
        Ok(Self {
            log: Arc::new(Mutex::new(log)),
            waiting: Arc::default(),
            store: reader,
            origin: origin.into(),
        })
    }

    /// Runs `f` on the locked log on the blocking pool.
    async fn with_log<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Log<SqlStore>) -> Result<T, AuditError> + Send + 'static,
    ) -> Result<T, AuditError> {
        let mut log = Arc::clone(&self.log).lock_owned().await;
        tokio::task::spawn_blocking(move || f(&mut log))
            .await
            .map_err(task_failed)?
    }

    /// The log's origin (the name in its checkpoints).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Appends one entry and returns its index once it is durable. On `Err`
    /// nothing was acknowledged: do not act (see the module documentation).
    pub async fn append(&self, timestamp_ms: u64, body: EntryBody) -> Result<u64, AuditError> {
        self.append_batch(vec![(timestamp_ms, body)]).await
    }

    /// Appends entries atomically (all or none) and returns the first index.
    ///
    /// When another process appended first, re-reads the head and tries again
    /// at the new end (with a short randomised pause) for up to 10 seconds,
    /// then gives up with [`AuditError::AppendConflict`]. A conflict that
    /// other writers do not explain (the stored size did not move: the tables
    /// contradict each other) is returned at once.
    ///
    /// Concurrent callers share commits: each waits for the log's lock, and
    /// whoever gets it appends every caller's entries waiting by then in one
    /// transaction and one tree update (each caller's entries contiguous, in
    /// the order they arrived), so a burst of appends costs a few commits,
    /// not one each. The commit runs on the blocking pool with the lock it
    /// took: a caller that goes away cannot stop it half-way.
    pub async fn append_batch(&self, items: Vec<(u64, EntryBody)>) -> Result<u64, AuditError> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Waiting { items, answer });
        let mut log = Arc::clone(&self.log).lock_owned().await;
        // Every caller waiting now, this one among them unless an earlier
        // commit took it. Each caller takes the lock in turn (the lock is
        // fair), so every entry is taken by its own caller at the latest,
        // and reads and checkpoints waiting for the lock get their turn
        // between commits.
        let group = std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|p| p.into_inner()));
        if !group.is_empty() {
            // Not awaited here: the answers come through the channels.
            drop(tokio::task::spawn_blocking(move || {
                commit_group(&mut log, group)
            }));
        }
        answered
            .await
            .map_err(|_| AuditError::Storage("the log's commit task stopped".into()))?
    }

    /// Number of entries, as of this process's last append or refresh.
    pub async fn size(&self) -> u64 {
        self.log.lock().await.size()
    }

    /// Root hash of the first [`SharedLog::size`] entries.
    pub async fn root(&self) -> Hash {
        self.log.lock().await.root()
    }

    /// Re-reads the head from the database (after other processes appended).
    pub async fn refresh(&self) -> Result<(), AuditError> {
        self.with_log(|log| log.refresh()).await
    }

    /// Signs a checkpoint of the current tree with the log key (see
    /// [`Log::checkpoint`]), stores it and returns the note for witnesses.
    pub async fn checkpoint(
        &self,
        signer: Arc<dyn LogSigner>,
        timestamp_ms: u64,
    ) -> Result<String, AuditError> {
        self.with_log(move |log| log.checkpoint(signer.as_ref(), timestamp_ms))
            .await
    }

    /// Adds witness cosignature lines to the stored checkpoint of `size` (see
    /// [`Log::add_cosignatures`]); returns the updated note.
    pub async fn add_cosignatures(
        &self,
        size: u64,
        lines: Vec<String>,
    ) -> Result<String, AuditError> {
        self.with_log(move |log| log.add_cosignatures(size, &lines))
            .await
    }

    /// The stored checkpoint with the largest size, if any.
    pub async fn latest_checkpoint(&self) -> Result<Option<String>, AuditError> {
        self.with_log(|log| log.latest_checkpoint()).await
    }

    /// The canonical encoding of entry `index` (decode it with
    /// [`crate::Entry::decode`]).
    pub async fn entry(&self, index: u64) -> Result<Vec<u8>, AuditError> {
        self.with_log(move |log| log.entry(index)).await
    }

    /// The canonical encodings of entries `from..to`, read on their own
    /// connection without the log's lock: entries below the size are
    /// immutable, so a witness catching up on thousands of them does not
    /// stall the appends meanwhile.
    pub async fn entries(&self, from: u64, to: u64) -> Result<Vec<Vec<u8>>, AuditError> {
        let size = self.size().await;
        if to > size {
            return Err(AuditError::InvalidArgument(format!(
                "entries {from}..{to} beyond the log's {size}"
            )));
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            use crate::store::LogStore as _;
            (from..to)
                .map(|i| {
                    store
                        .entry(i)?
                        .ok_or_else(|| AuditError::Corrupt(format!("entry {i} missing")))
                })
                .collect()
        })
        .await
        .map_err(task_failed)?
    }

    /// Inclusion proof of entry `index` in the tree of `size` entries.
    pub async fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, AuditError> {
        self.with_log(move |log| log.inclusion_proof(index, size))
            .await
    }

    /// Consistency proof from `old_size` to `new_size` entries.
    pub async fn consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> Result<Vec<Hash>, AuditError> {
        self.with_log(move |log| log.consistency_proof(old_size, new_size))
            .await
    }

    /// Exports entries `[start, end)` for offline verification, as
    /// [`Log::export`] does. Reads the database without holding the log's
    /// lock, so appends continue meanwhile; `end` may be at most the size
    /// committed when the export starts.
    pub async fn export(
        &self,
        start: u64,
        end: u64,
        connect_from: Option<u64>,
    ) -> Result<ExportBundle, AuditError> {
        let store = self.store.clone();
        let origin = Arc::clone(&self.origin);
        tokio::task::spawn_blocking(move || {
            Log::open(store, &origin)?.export(start, end, connect_from)
        })
        .await
        .map_err(task_failed)?
    }
}
