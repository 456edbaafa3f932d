//! Withdrawal tables. Every transition is a compare-and-set on the state plus
//! an event row, in one transaction, committed before the transition is acted
//! on. The same SQL runs on SQLite and PostgreSQL (`sqlx::Any`).

use std::collections::HashMap;

use custos_service::db::{Backend, is_unique_violation};
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use super::state::State;
use crate::clock::now_ms;
use crate::db::consume_presig;
use crate::error::CoordError;

/// Most values bound in one statement (an `IN (...)` list, a multi-row
/// insert). SQLite allows 32,766, but it looks every `$N` name up among
/// the statement's earlier ones when it prepares it, a cost that grows
/// with the square of their number: at a few hundred it stays small.
const BIND_CHUNK: usize = 200;

/// `$from, $from+1, ...`: `n` numbered placeholders.
fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Columns added since the first schema (databases made by earlier versions).
pub async fn upgrade(db: &custos_service::db::Db) -> Result<(), sqlx::Error> {
    db.add_column_if_missing("withdrawals", "tx_hash", "TEXT")
        .await?;
    db.add_column_if_missing("withdrawals", "request_signature", "TEXT")
        .await?;
    db.add_column_if_missing("approvals", "webauthn", "TEXT")
        .await?;
    // Withdrawals from a derived address of the wallet (HD child key).
    db.add_column_if_missing("withdrawals", "source_path", "TEXT")
        .await?;
    db.add_column_if_missing("withdrawals", "source_address", "TEXT")
        .await
}

/// Idempotent DDL for the withdrawal tables.
pub fn schema(backend: Backend) -> String {
    let blob = backend.blob();
    let serial = backend.serial_pk();
    format!(
        "CREATE TABLE IF NOT EXISTS withdrawals (
            id TEXT PRIMARY KEY,
            client_id TEXT NOT NULL,
            idempotency_key TEXT NOT NULL,
            request_hash TEXT NOT NULL,
            wallet TEXT NOT NULL,
            chain TEXT NOT NULL,
            asset TEXT NOT NULL,
            destination TEXT NOT NULL,
            amount TEXT NOT NULL,
            fee_cap TEXT NOT NULL,
            initiator TEXT NOT NULL,
            memo TEXT NOT NULL,
            state TEXT NOT NULL,
            risk_score BIGINT,
            risk_json TEXT,
            rule_id TEXT,
            outcome TEXT,
            explanation TEXT,
            decision_json TEXT,
            decision_index BIGINT,
            policy_hash TEXT,
            required TEXT,
            delay_secs BIGINT,
            cancel_group TEXT,
            statement {blob},
            statement_expiry BIGINT,
            unsigned_tx {blob},
            tx_digest {blob},
            approved_at BIGINT,
            time_lock_until BIGINT,
            presig_id TEXT,
            signers TEXT,
            sig_r {blob},
            sig_s {blob},
            recovery_id BIGINT,
            reason TEXT,
            fee_paid TEXT,
            tx_hash TEXT,
            signer_notes TEXT NOT NULL,
            created_ms BIGINT NOT NULL,
            updated_ms BIGINT NOT NULL,
            UNIQUE (client_id, idempotency_key)
        );
        CREATE INDEX IF NOT EXISTS withdrawals_state ON withdrawals (state);
        CREATE INDEX IF NOT EXISTS withdrawals_wallet ON withdrawals (wallet, created_ms);
        CREATE TABLE IF NOT EXISTS approvals (
            withdrawal_id TEXT NOT NULL,
            approver TEXT NOT NULL,
            verdict TEXT NOT NULL,
            signature TEXT NOT NULL,
            reason TEXT NOT NULL,
            received_ms BIGINT NOT NULL,
            webauthn TEXT,
            PRIMARY KEY (withdrawal_id, approver, verdict)
        );
        CREATE TABLE IF NOT EXISTS withdrawal_events (
            seq {serial},
            withdrawal_id TEXT NOT NULL,
            state TEXT NOT NULL,
            detail TEXT NOT NULL,
            at_ms BIGINT NOT NULL
        )"
    )
}

/// One withdrawal row.
#[derive(Clone, Debug, Default)]
pub struct WithdrawalRow {
    /// Withdrawal id.
    pub id: String,
    /// API client that created it.
    pub client_id: String,
    /// The client's idempotency key.
    pub idempotency_key: String,
    /// Hash of the request body (idempotency check).
    pub request_hash: String,
    /// The client's signature over the request statement (hex), when the
    /// policy requires signed requests.
    pub request_signature: Option<String>,
    /// Wallet (= key id).
    pub wallet: String,
    /// Chain.
    pub chain: String,
    /// Asset symbol.
    pub asset: String,
    /// Canonical destination.
    pub destination: String,
    /// Base units, decimal.
    pub amount: String,
    /// Fee cap, base units, decimal.
    pub fee_cap: String,
    /// Initiator identity.
    pub initiator: String,
    /// Free text.
    pub memo: String,
    /// State name.
    pub state: String,
    /// Risk score.
    pub risk_score: Option<i64>,
    /// Risk assessment JSON.
    pub risk_json: Option<String>,
    /// Matched rule.
    pub rule_id: Option<String>,
    /// `allow`, `require_approvals`, `block`.
    pub outcome: Option<String>,
    /// Decision explanation.
    pub explanation: Option<String>,
    /// The coordinator's decision (policy crate JSON).
    pub decision_json: Option<String>,
    /// Audit-log index of the policy-decision entry.
    pub decision_index: Option<i64>,
    /// Policy hash, hex.
    pub policy_hash: Option<String>,
    /// Quorum in words.
    pub required: Option<String>,
    /// Time lock after the quorum.
    pub delay_secs: Option<i64>,
    /// Cancel group.
    pub cancel_group: Option<String>,
    /// Canonical approval statement.
    pub statement: Option<Vec<u8>>,
    /// Statement expiry, Unix seconds.
    pub statement_expiry: Option<i64>,
    /// Unsigned transaction payload.
    pub unsigned_tx: Option<Vec<u8>>,
    /// Signing digest.
    pub tx_digest: Option<Vec<u8>>,
    /// When the quorum was complete, Unix seconds.
    pub approved_at: Option<i64>,
    /// End of the time lock, Unix seconds.
    pub time_lock_until: Option<i64>,
    /// Presignature reserved for signing.
    pub presig_id: Option<String>,
    /// Signers of that presignature, JSON list.
    pub signers: Option<String>,
    /// Signature r.
    pub sig_r: Option<Vec<u8>>,
    /// Signature s.
    pub sig_s: Option<Vec<u8>>,
    /// Recovery id.
    pub recovery_id: Option<i64>,
    /// Why it failed, was blocked, rejected or cancelled.
    pub reason: Option<String>,
    /// Network fee paid (native base units), once confirmed.
    pub fee_paid: Option<String>,
    /// The hash of the transaction on chain (the latest fee bump, or the one mined).
    pub tx_hash: Option<String>,
    /// Signers' refusals, JSON list.
    pub signer_notes: String,
    /// The derivation path it spends from (`m/0/5`), when not the
    /// wallet's own address.
    pub source_path: Option<String>,
    /// The address at `source_path`, canonical.
    pub source_address: Option<String>,
    /// Unix ms.
    pub created_ms: i64,
    /// Unix ms.
    pub updated_ms: i64,
}

impl WithdrawalRow {
    /// What the chain layer needs of this withdrawal.
    pub fn payment(&self) -> crate::chain::Payment {
        crate::chain::Payment {
            id: self.id.clone(),
            wallet: self.wallet.clone(),
            asset: self.asset.clone(),
            destination: self.destination.clone(),
            amount: self.amount.clone(),
            fee_cap: self.fee_cap.clone(),
        }
    }

    /// The derived address it spends from, if not the wallet's own.
    pub fn source(&self) -> Option<custos_policy::DerivedSource> {
        match (&self.source_path, &self.source_address) {
            (Some(path), Some(address)) => Some(custos_policy::DerivedSource {
                path: path.clone(),
                address: address.clone(),
            }),
            _ => None,
        }
    }

    /// The signature stored on this withdrawal, for the chain layer.
    pub fn stored_signature(&self) -> crate::chain::StoredSignature<'_> {
        crate::chain::StoredSignature {
            r: self.sig_r.as_deref(),
            s: self.sig_s.as_deref(),
            recovery_id: self.recovery_id,
        }
    }
}

impl WithdrawalRow {
    /// The parsed state.
    pub fn state(&self) -> Result<State, CoordError> {
        State::parse(&self.state).ok_or_else(|| {
            CoordError::Internal(format!(
                "withdrawal {} has unknown state {}",
                self.id, self.state
            ))
        })
    }
}

/// A stored approval, rejection or cancellation.
#[derive(Clone, Debug)]
pub struct ApprovalRow {
    /// Approver id.
    pub approver: String,
    /// `approve`, `reject`, `cancel`.
    pub verdict: String,
    /// Signature, hex (empty for a passkey approval).
    pub signature: String,
    /// Free text.
    pub reason: String,
    /// Unix ms.
    pub received_ms: i64,
    /// A passkey approval's assertion (JSON `custos_policy::PasskeyAssertion`).
    pub webauthn: Option<String>,
}

/// One state change, as streamed by WatchWithdrawals.
#[derive(Clone, Debug)]
pub struct EventRow {
    /// Commit-ordered sequence.
    pub seq: i64,
    /// Withdrawal.
    pub withdrawal_id: String,
    /// New state.
    pub state: String,
    /// Detail.
    pub detail: String,
    /// Unix ms.
    pub at_ms: i64,
}

/// A column value for a transition's updates.
#[derive(Clone, Debug)]
pub enum Val {
    /// Text or NULL.
    Text(Option<String>),
    /// Integer or NULL.
    Int(Option<i64>),
    /// Bytes or NULL.
    Blob(Option<Vec<u8>>),
}

/// Columns a transition sets, beyond `state` and `updated_ms`.
pub type Updates = Vec<(&'static str, Val)>;

fn db_err(e: sqlx::Error) -> CoordError {
    CoordError::storage("withdrawal store", e)
}

fn row(r: &AnyRow) -> WithdrawalRow {
    WithdrawalRow {
        id: r.get("id"),
        client_id: r.get("client_id"),
        idempotency_key: r.get("idempotency_key"),
        request_hash: r.get("request_hash"),
        request_signature: r.try_get("request_signature").ok().flatten(),
        wallet: r.get("wallet"),
        chain: r.get("chain"),
        asset: r.get("asset"),
        destination: r.get("destination"),
        amount: r.get("amount"),
        fee_cap: r.get("fee_cap"),
        initiator: r.get("initiator"),
        memo: r.get("memo"),
        state: r.get("state"),
        risk_score: r.get("risk_score"),
        risk_json: r.get("risk_json"),
        rule_id: r.get("rule_id"),
        outcome: r.get("outcome"),
        explanation: r.get("explanation"),
        decision_json: r.get("decision_json"),
        decision_index: r.get("decision_index"),
        policy_hash: r.get("policy_hash"),
        required: r.get("required"),
        delay_secs: r.get("delay_secs"),
        cancel_group: r.get("cancel_group"),
        statement: r.get("statement"),
        statement_expiry: r.get("statement_expiry"),
        unsigned_tx: r.get("unsigned_tx"),
        tx_digest: r.get("tx_digest"),
        approved_at: r.get("approved_at"),
        time_lock_until: r.get("time_lock_until"),
        presig_id: r.get("presig_id"),
        signers: r.get("signers"),
        sig_r: r.get("sig_r"),
        sig_s: r.get("sig_s"),
        recovery_id: r.get("recovery_id"),
        reason: r.get("reason"),
        fee_paid: r.get("fee_paid"),
        tx_hash: r.get("tx_hash"),
        signer_notes: r.get("signer_notes"),
        source_path: r.try_get("source_path").ok().flatten(),
        source_address: r.try_get("source_address").ok().flatten(),
        created_ms: r.get("created_ms"),
        updated_ms: r.get("updated_ms"),
    }
}

/// One transition of a new withdrawal in a group commit.
#[derive(Debug)]
pub struct Step {
    /// The state it moves to.
    pub to: State,
    /// Columns it sets.
    pub updates: Updates,
    /// Its event's detail.
    pub detail: String,
}

/// Outcome of an insert keyed by (client, idempotency key).
#[derive(Debug)]
pub enum Inserted {
    /// A new withdrawal.
    New(WithdrawalRow),
    /// The key was used before; this is what it created.
    Existing(WithdrawalRow),
}

/// A boxed future (hooks are trait objects).
pub type HookFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), CoordError>> + Send + 'a>>;

/// A new withdrawal of a group commit as stored, with every transition it
/// made on its way in: `(from, to, detail)`, the first from `None`.
#[derive(Debug)]
pub struct NewWithdrawal {
    /// The row as stored (in the state its last transition reached).
    pub row: WithdrawalRow,
    /// Its transitions, in order.
    pub path: Vec<(Option<State>, State, String)>,
}

/// Work done inside the same database transaction as a state change
/// (ledger postings, outbox events): it commits with the change or not at all.
pub trait TransitionHook: Send + Sync {
    /// Called after `row` (already updated) moved from `from` to its new state
    /// `to`; `from` is `None` for a new withdrawal. An error rolls the change back.
    /// A new withdrawal decided in a group commit is stored once, in the
    /// state its steps end in: each of its steps is called in order with
    /// that stored row (the request's fields are the same at every step).
    fn on_transition<'a>(
        &'a self,
        conn: &'a mut sqlx::AnyConnection,
        row: &'a WithdrawalRow,
        from: Option<State>,
        to: State,
        detail: &'a str,
    ) -> HookFuture<'a>;

    /// A group commit's new withdrawals, each with its transitions: by
    /// default [`Self::on_transition`] for each, in order. A hook overrides
    /// it to do the batch's work in a few statements instead of one per
    /// transition.
    fn on_new<'a>(
        &'a self,
        conn: &'a mut sqlx::AnyConnection,
        batch: &'a [NewWithdrawal],
    ) -> HookFuture<'a> {
        Box::pin(async move {
            for w in batch {
                for (from, to, detail) in &w.path {
                    self.on_transition(&mut *conn, &w.row, *from, *to, detail)
                        .await?;
                }
            }
            Ok(())
        })
    }
}

/// Withdrawal storage over the coordinator's pool.
#[derive(Clone)]
pub struct WithdrawalStore {
    pool: AnyPool,
    hooks: Vec<std::sync::Arc<dyn TransitionHook>>,
}

impl std::fmt::Debug for WithdrawalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WithdrawalStore")
            .field("hooks", &self.hooks.len())
            .finish()
    }
}

impl WithdrawalStore {
    /// Wraps the coordinator's pool (schema created by `crate::storage::connect`).
    pub fn new(pool: AnyPool) -> Self {
        Self {
            pool,
            hooks: Vec::new(),
        }
    }

    /// Adds a hook run inside every state change's transaction.
    pub fn with_hook(mut self, hook: std::sync::Arc<dyn TransitionHook>) -> Self {
        self.hooks.push(hook);
        self
    }

    /// The pool (adapters and reports read it).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    async fn run_hooks(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        id: &str,
        from: Option<State>,
        to: State,
        detail: &str,
    ) -> Result<(), CoordError> {
        if self.hooks.is_empty() {
            return Ok(());
        }
        let r = sqlx::query("SELECT * FROM withdrawals WHERE id = $1")
            .bind(id)
            .fetch_one(&mut **tx)
            .await
            .map_err(db_err)?;
        let current = row(&r);
        for h in &self.hooks {
            h.on_transition(tx, &current, from, to, detail).await?;
        }
        Ok(())
    }

    /// Inserts a new withdrawal in state `requested` with its first event, or
    /// returns the one created earlier with the same (client, idempotency key).
    pub async fn insert(&self, w: &WithdrawalRow) -> Result<Inserted, CoordError> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        if !self.insert_in(&mut tx, w).await? {
            drop(tx);
            let existing = self
                .by_idempotency_key(&w.client_id, &w.idempotency_key)
                .await?
                .ok_or_else(|| CoordError::Internal("idempotency row vanished".into()))?;
            return Ok(Inserted::Existing(existing));
        }
        tx.commit().await.map_err(db_err)?;
        Ok(Inserted::New(w.clone()))
    }

    /// Inserts `w` in state `requested` with its first event and hooks,
    /// inside the caller's transaction; false when its (client, idempotency
    /// key) is taken (the transaction is then unusable on PostgreSQL).
    async fn insert_in(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        w: &WithdrawalRow,
    ) -> Result<bool, CoordError> {
        if !insert_rows(tx, &[], &[(w, Vec::new(), State::Requested)], w.created_ms).await? {
            return Ok(false);
        }
        insert_event(tx, &w.id, State::Requested, "requested", w.created_ms).await?;
        self.run_hooks(tx, &w.id, None, State::Requested, "requested")
            .await?;
        Ok(true)
    }

    /// The withdrawal a client created with an idempotency key.
    pub async fn by_idempotency_key(
        &self,
        client: &str,
        key: &str,
    ) -> Result<Option<WithdrawalRow>, CoordError> {
        let r =
            sqlx::query("SELECT * FROM withdrawals WHERE client_id = $1 AND idempotency_key = $2")
                .bind(client)
                .bind(key)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_err)?;
        Ok(r.as_ref().map(row))
    }

    /// The withdrawals stored under any of `keys` (client, idempotency key),
    /// in one query per [`BIND_CHUNK`] keys: a group commit looks up its whole
    /// batch at once instead of one round trip per request.
    pub async fn by_idempotency_keys(
        &self,
        keys: &[(String, String)],
    ) -> Result<HashMap<(String, String), WithdrawalRow>, CoordError> {
        let mut found = HashMap::new();
        for chunk in keys.chunks(BIND_CHUNK) {
            let sql = format!(
                "SELECT * FROM withdrawals WHERE idempotency_key IN ({})",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (_, key) in chunk {
                q = q.bind(key);
            }
            let rows = q.fetch_all(&self.pool).await.map_err(db_err)?;
            for r in &rows {
                let w = row(r);
                let k = (w.client_id.clone(), w.idempotency_key.clone());
                // Another client's row under the same key is not a repeat.
                if chunk.contains(&k) {
                    found.insert(k, w);
                }
            }
        }
        Ok(found)
    }

    /// The withdrawals `ids`, in that order (one query per [`BIND_CHUNK`]).
    pub async fn get_many(&self, ids: &[String]) -> Result<Vec<WithdrawalRow>, CoordError> {
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        rows_in(&mut conn, ids).await
    }

    /// One withdrawal.
    pub async fn get(&self, id: &str) -> Result<Option<WithdrawalRow>, CoordError> {
        let r = sqlx::query("SELECT * FROM withdrawals WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(r.as_ref().map(row))
    }

    /// Moves `id` from one of `from` to `to`, setting `updates`, and records
    /// the event, in one transaction. Returns the new row, or `Ok(None)` when
    /// the withdrawal was no longer in one of `from` (someone else moved it).
    pub async fn transition(
        &self,
        id: &str,
        from: &[State],
        to: State,
        updates: Updates,
        detail: &str,
    ) -> Result<Option<WithdrawalRow>, CoordError> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        if !self
            .transition_in(&mut tx, id, from, to, updates, detail)
            .await?
        {
            return Ok(None);
        }
        tx.commit().await.map_err(db_err)?;
        self.get(id).await
    }

    /// [`WithdrawalStore::transition`] inside the caller's transaction;
    /// false when the row was not in one of `from`.
    async fn transition_in(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        id: &str,
        from: &[State],
        to: State,
        updates: Updates,
        detail: &str,
    ) -> Result<bool, CoordError> {
        let now = now_ms();
        let mut sql = String::from("UPDATE withdrawals SET state = $1, updated_ms = $2");
        let mut n = 2;
        for (col, _) in &updates {
            n += 1;
            sql.push_str(&format!(", {col} = ${n}"));
        }
        n += 1;
        sql.push_str(&format!(" WHERE id = ${n} AND state IN ("));
        for (i, _) in from.iter().enumerate() {
            n += 1;
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${n}"));
        }
        sql.push(')');
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(to.as_str())
            .bind(now);
        for (_, v) in updates {
            q = match v {
                Val::Text(t) => q.bind(t),
                Val::Int(i) => q.bind(i),
                Val::Blob(b) => q.bind(b),
            };
        }
        q = q.bind(id);
        for s in from {
            q = q.bind(s.as_str());
        }
        let res = q.execute(&mut **tx).await.map_err(db_err)?;
        if res.rows_affected() != 1 {
            return Ok(false);
        }
        insert_event(tx, id, to, detail, now).await?;
        // The state the row was in: the one `from` state that matched.
        let prior = if from.len() == 1 {
            from.first().copied()
        } else {
            None
        };
        self.run_hooks(tx, id, prior, to, detail).await?;
        Ok(true)
    }

    /// Group commit of new withdrawals: inserts each one and runs its
    /// transitions (`steps`, from `requested`), with their events and hooks,
    /// all in one transaction; returns them as stored. The caller found
    /// their (client, idempotency key) unused ([`Self::by_idempotency_keys`],
    /// before the transaction: on SQLite a transaction that reads first and
    /// then writes fails when another connection wrote in between,
    /// SQLITE_BUSY_SNAPSHOT, one that writes first waits for the lock); a
    /// key taken meanwhile fails the whole batch, retryable.
    pub async fn insert_decided(
        &self,
        items: Vec<(WithdrawalRow, Vec<Step>)>,
    ) -> Result<Vec<WithdrawalRow>, CoordError> {
        let ids: Vec<String> = items.iter().map(|(w, _)| w.id.clone()).collect();
        let now = now_ms();
        // Each row goes in once, in the state its steps end in with every
        // column they set (a later step's value winning), instead of an
        // insert and one compare-and-set per step: nobody else can see or
        // move it before the commit. Rows that set the same columns share
        // one multi-row INSERT, every step's event row goes in one more, and
        // each hook sees the whole batch at once: a batch costs a handful of
        // statements, not a dozen per withdrawal.
        let mut groups: Vec<(Vec<&'static str>, Vec<NewRow<'_>>)> = Vec::new();
        let mut events: Vec<(&str, State, &str, i64)> = Vec::new();
        for (w, steps) in &items {
            let last = steps.last().map_or(State::Requested, |s| s.to);
            let mut decided: Updates = Vec::new();
            for (col, v) in steps.iter().flat_map(|s| s.updates.iter().cloned()) {
                match decided.iter_mut().find(|(c, _)| *c == col) {
                    Some(slot) => slot.1 = v,
                    None => decided.push((col, v)),
                }
            }
            let cols: Vec<&'static str> = decided.iter().map(|(c, _)| *c).collect();
            let vals: Vec<Val> = decided.into_iter().map(|(_, v)| v).collect();
            match groups.iter_mut().find(|(c, _)| *c == cols) {
                Some((_, rows)) => rows.push((w, vals, last)),
                None => groups.push((cols, vec![(w, vals, last)])),
            }
            events.push((&w.id, State::Requested, "requested", w.created_ms));
            for step in steps {
                events.push((&w.id, step.to, &step.detail, now));
            }
        }
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        for (cols, rows) in &groups {
            let per = (BIND_CHUNK / (ROW_BINDS + cols.len())).max(1);
            for chunk in rows.chunks(per) {
                if !insert_rows(&mut tx, cols, chunk, now).await? {
                    // Taken by another coordinator since the caller's check.
                    return Err(CoordError::unavailable(
                        "an idempotency_key of this batch was taken meanwhile; retry",
                    ));
                }
            }
        }
        for chunk in events.chunks(BIND_CHUNK / 4) {
            insert_events(&mut tx, chunk).await?;
        }
        let stored = rows_in(&mut tx, &ids).await?;
        if !self.hooks.is_empty() {
            let batch: Vec<NewWithdrawal> = stored
                .iter()
                .zip(&items)
                .map(|(row, (_, steps))| {
                    let mut path = vec![(None, State::Requested, "requested".to_owned())];
                    let mut from = State::Requested;
                    for step in steps {
                        path.push((Some(from), step.to, step.detail.clone()));
                        from = step.to;
                    }
                    NewWithdrawal {
                        row: row.clone(),
                        path,
                    }
                })
                .collect();
            for h in &self.hooks {
                h.on_new(&mut tx, &batch).await?;
            }
        }
        tx.commit().await.map_err(db_err)?;
        Ok(stored)
    }

    /// Sets columns without changing the state (notes, reserved presignature).
    pub async fn update(
        &self,
        id: &str,
        state: State,
        updates: Updates,
    ) -> Result<bool, CoordError> {
        let mut sql = String::from("UPDATE withdrawals SET updated_ms = $1");
        let mut n = 1;
        for (col, _) in &updates {
            n += 1;
            sql.push_str(&format!(", {col} = ${n}"));
        }
        sql.push_str(&format!(" WHERE id = ${} AND state = ${}", n + 1, n + 2));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now_ms());
        for (_, v) in updates {
            q = match v {
                Val::Text(t) => q.bind(t),
                Val::Int(i) => q.bind(i),
                Val::Blob(b) => q.bind(b),
            };
        }
        let res = q
            .bind(id)
            .bind(state.as_str())
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(res.rows_affected() == 1)
    }

    /// Reserves a ready presignature for a withdrawal in `signing`, atomically:
    /// the presignature is marked consumed and named on the withdrawal in one
    /// transaction, so it can never serve two withdrawals.
    pub async fn reserve_presig(
        &self,
        id: &str,
        presig_id: &str,
        signers: &[String],
    ) -> Result<bool, CoordError> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        if !consume_presig(&mut tx, presig_id).await? {
            return Ok(false);
        }
        let res = sqlx::query(
            "UPDATE withdrawals SET presig_id = $1, signers = $2, updated_ms = $3
             WHERE id = $4 AND state = 'signing' AND presig_id IS NULL",
        )
        .bind(presig_id)
        .bind(serde_json::to_string(signers).unwrap_or_default())
        .bind(now_ms())
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        if res.rows_affected() != 1 {
            return Ok(false);
        }
        tx.commit().await.map_err(db_err)?;
        Ok(true)
    }

    /// Stores an approval, rejection or cancellation; `false` if this approver
    /// already gave this verdict.
    pub async fn add_approval(
        &self,
        withdrawal_id: &str,
        a: &ApprovalRow,
    ) -> Result<bool, CoordError> {
        let res = sqlx::query(
            "INSERT INTO approvals (withdrawal_id, approver, verdict, signature, reason, received_ms, webauthn)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(withdrawal_id)
        .bind(&a.approver)
        .bind(&a.verdict)
        .bind(&a.signature)
        .bind(&a.reason)
        .bind(a.received_ms)
        .bind(a.webauthn.as_deref())
        .execute(&self.pool)
        .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if is_unique_violation(&e) => Ok(false),
            Err(e) => Err(db_err(e)),
        }
    }

    /// Every passkey assertion stored from `approver` (JSON), for comparing
    /// sign counters.
    pub async fn passkey_assertions(&self, approver: &str) -> Result<Vec<String>, CoordError> {
        let rows = sqlx::query(
            "SELECT webauthn FROM approvals WHERE approver = $1 AND webauthn IS NOT NULL",
        )
        .bind(approver)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Approvals of a withdrawal, in arrival order.
    pub async fn approvals(&self, withdrawal_id: &str) -> Result<Vec<ApprovalRow>, CoordError> {
        let rows = sqlx::query(
            "SELECT approver, verdict, signature, reason, received_ms, webauthn FROM approvals
             WHERE withdrawal_id = $1 ORDER BY received_ms, approver",
        )
        .bind(withdrawal_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(rows
            .iter()
            .map(|r| ApprovalRow {
                approver: r.get(0),
                verdict: r.get(1),
                signature: r.get(2),
                reason: r.get(3),
                received_ms: r.get(4),
                webauthn: r.get(5),
            })
            .collect())
    }

    /// Withdrawals matching the filters, newest first, `limit` from `offset`.
    pub async fn list(
        &self,
        wallet: Option<&str>,
        states: &[State],
        initiator: Option<&str>,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<WithdrawalRow>, CoordError> {
        let mut sql = String::from("SELECT * FROM withdrawals WHERE 1 = 1");
        let mut n = 0;
        if wallet.is_some() {
            n += 1;
            sql.push_str(&format!(" AND wallet = ${n}"));
        }
        if initiator.is_some() {
            n += 1;
            sql.push_str(&format!(" AND initiator = ${n}"));
        }
        if !states.is_empty() {
            sql.push_str(" AND state IN (");
            for i in 0..states.len() {
                n += 1;
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("${n}"));
            }
            sql.push(')');
        }
        sql.push_str(&format!(
            " ORDER BY created_ms DESC, id DESC LIMIT ${} OFFSET ${}",
            n + 1,
            n + 2
        ));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        if let Some(w) = wallet {
            q = q.bind(w);
        }
        if let Some(i) = initiator {
            q = q.bind(i);
        }
        for s in states {
            q = q.bind(s.as_str());
        }
        let rows = q
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(rows.iter().map(row).collect())
    }

    /// Every withdrawal not in a terminal state (resumed after a restart).
    pub async fn non_terminal(&self) -> Result<Vec<WithdrawalRow>, CoordError> {
        let open: Vec<State> = State::ALL
            .into_iter()
            .filter(|s| !s.is_terminal())
            .collect();
        let mut rows = self.list(None, &open, None, 0, i64::MAX).await?;
        // Signed withdrawals with a chain transaction still have to be broadcast.
        let signed = sqlx::query(
            "SELECT * FROM withdrawals WHERE state = 'signed' AND unsigned_tx IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.extend(signed.iter().map(row));
        Ok(rows)
    }

    /// Withdrawals of `wallet` that count toward velocity limits (authorised
    /// for signing: approved, time-locked, signing or signed) since `since_ms`.
    pub async fn velocity_history(
        &self,
        wallet: &str,
        since_ms: i64,
    ) -> Result<Vec<WithdrawalRow>, CoordError> {
        let rows = sqlx::query(
            "SELECT * FROM withdrawals WHERE wallet = $1 AND approved_at IS NOT NULL
               AND state IN ('approved', 'time_locked', 'signing', 'signed', 'broadcast', 'confirmed')
               AND updated_ms >= $2",
        )
        .bind(wallet)
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(rows.iter().map(row).collect())
    }

    /// Every withdrawal that reached a policy decision (risk model rebuild).
    pub async fn history_since(&self, since_ms: i64) -> Result<Vec<WithdrawalRow>, CoordError> {
        let rows = sqlx::query(
            "SELECT * FROM withdrawals WHERE created_ms >= $1 AND approved_at IS NOT NULL ORDER BY created_ms",
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(rows.iter().map(row).collect())
    }

    /// Events after `cursor`, oldest first, at most `limit`.
    pub async fn events_after(
        &self,
        cursor: i64,
        withdrawal_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<EventRow>, CoordError> {
        let rows = match withdrawal_id {
            Some(w) => {
                sqlx::query(
                    "SELECT seq, withdrawal_id, state, detail, at_ms FROM withdrawal_events
                 WHERE seq > $1 AND withdrawal_id = $2 ORDER BY seq LIMIT $3",
                )
                .bind(cursor)
                .bind(w)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query(
                    "SELECT seq, withdrawal_id, state, detail, at_ms FROM withdrawal_events
                 WHERE seq > $1 ORDER BY seq LIMIT $2",
                )
                .bind(cursor)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
            }
        }
        .map_err(db_err)?;
        Ok(rows
            .iter()
            .map(|r| EventRow {
                seq: r.get(0),
                withdrawal_id: r.get(1),
                state: r.get(2),
                detail: r.get(3),
                at_ms: r.get(4),
            })
            .collect())
    }

    /// Count of withdrawals per state (metrics).
    pub async fn count_by_state(&self) -> Result<Vec<(String, i64)>, CoordError> {
        let rows = sqlx::query("SELECT state, COUNT(*) FROM withdrawals GROUP BY state")
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

/// A row for [`insert_rows`]: the request, its values for the decided
/// columns, and its state.
type NewRow<'a> = (&'a WithdrawalRow, Vec<Val>, State);

/// Values bound per row by [`insert_rows`] before the decided columns.
const ROW_BINDS: usize = 18;

/// Inserts `rows` (each with its values for `cols`, the columns beyond the
/// request's, and its state) in one statement inside the caller's
/// transaction; false when a (client, idempotency key) is taken (the
/// transaction is then unusable on PostgreSQL).
async fn insert_rows(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    cols: &[&'static str],
    rows: &[NewRow<'_>],
    updated_ms: i64,
) -> Result<bool, CoordError> {
    let mut names = String::from(
        "id, client_id, idempotency_key, request_hash, wallet, chain, asset, destination, \
         amount, fee_cap, initiator, memo, state, signer_notes, created_ms, updated_ms, \
         request_signature, source_path, source_address",
    );
    for col in cols {
        names.push_str(&format!(", {col}"));
    }
    let width = ROW_BINDS + cols.len();
    let values = (0..rows.len())
        .map(|r| {
            let b = r * width;
            let mut v: Vec<String> = (1..=13).map(|i| format!("${}", b + i)).collect();
            v.push("'[]'".into());
            v.extend((14..=width).map(|i| format!("${}", b + i)));
            format!("({})", v.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!("INSERT INTO withdrawals ({names}) VALUES {values}");
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (w, vals, state) in rows {
        q = q
            .bind(w.id.as_str())
            .bind(w.client_id.as_str())
            .bind(w.idempotency_key.as_str())
            .bind(w.request_hash.as_str())
            .bind(w.wallet.as_str())
            .bind(w.chain.as_str())
            .bind(w.asset.as_str())
            .bind(w.destination.as_str())
            .bind(w.amount.as_str())
            .bind(w.fee_cap.as_str())
            .bind(w.initiator.as_str())
            .bind(w.memo.as_str())
            .bind(state.as_str())
            .bind(w.created_ms)
            .bind(updated_ms)
            .bind(w.request_signature.as_deref())
            .bind(w.source_path.as_deref())
            .bind(w.source_address.as_deref());
        for v in vals {
            q = match v.clone() {
                Val::Text(t) => q.bind(t),
                Val::Int(i) => q.bind(i),
                Val::Blob(b) => q.bind(b),
            };
        }
    }
    match q.execute(&mut **tx).await {
        Ok(_) => Ok(true),
        Err(e) if is_unique_violation(&e) => Ok(false),
        Err(e) => Err(db_err(e)),
    }
}

/// Event rows `(withdrawal, state, detail, at_ms)` in one statement.
async fn insert_events(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    events: &[(&str, State, &str, i64)],
) -> Result<(), CoordError> {
    let values = (0..events.len())
        .map(|i| {
            let b = i * 4;
            format!("(${}, ${}, ${}, ${})", b + 1, b + 2, b + 3, b + 4)
        })
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "INSERT INTO withdrawal_events (withdrawal_id, state, detail, at_ms) VALUES {values}"
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (id, state, detail, at) in events {
        q = q.bind(*id).bind(state.as_str()).bind(*detail).bind(*at);
    }
    q.execute(&mut **tx).await.map_err(db_err)?;
    Ok(())
}

/// The rows `ids`, in that order, read on `conn` (a transaction sees its
/// own writes).
async fn rows_in(
    conn: &mut sqlx::AnyConnection,
    ids: &[String],
) -> Result<Vec<WithdrawalRow>, CoordError> {
    let mut by_id = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(BIND_CHUNK) {
        let sql = format!(
            "SELECT * FROM withdrawals WHERE id IN ({})",
            placeholders(1, chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            q = q.bind(id);
        }
        for r in &q.fetch_all(&mut *conn).await.map_err(db_err)? {
            let w = row(r);
            by_id.insert(w.id.clone(), w);
        }
    }
    ids.iter()
        .map(|id| {
            by_id
                .remove(id)
                .ok_or_else(|| CoordError::Internal(format!("withdrawal {id} vanished")))
        })
        .collect()
}

async fn insert_event(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: &str,
    state: State,
    detail: &str,
    at_ms: i64,
) -> Result<(), CoordError> {
    sqlx::query("INSERT INTO withdrawal_events (withdrawal_id, state, detail, at_ms) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(state.as_str())
        .bind(detail)
        .bind(at_ms)
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn new_row(id: &str, client: &str, key: &str) -> WithdrawalRow {
        WithdrawalRow {
            id: id.into(),
            client_id: client.into(),
            idempotency_key: key.into(),
            request_hash: "h".into(),
            wallet: "hot".into(),
            chain: "anvil".into(),
            asset: "ETH".into(),
            amount: "1".into(),
            fee_cap: "0".into(),
            initiator: client.into(),
            ..WithdrawalRow::default()
        }
    }

    /// A group commit's batched reads: by (client, key), never another
    /// client's row under the same key; by id in the order asked.
    #[tokio::test]
    async fn batched_lookups_match_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::storage::open(dir.path()).await.unwrap();
        crate::adapters::create_schemas(&custos_service::db::Db {
            pool: db.pool().clone(),
            backend: db.backend(),
        })
        .await
        .unwrap();
        let store = WithdrawalStore::new(db.pool().clone());
        for (id, client, key) in [("w1", "a", "k1"), ("w2", "b", "k1"), ("w3", "a", "k3")] {
            store.insert(&new_row(id, client, key)).await.unwrap();
        }
        let keys: Vec<(String, String)> = [("a", "k1"), ("a", "k2"), ("a", "k3")]
            .iter()
            .map(|(c, k)| (c.to_string(), k.to_string()))
            .collect();
        let found = store.by_idempotency_keys(&keys).await.unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[&("a".into(), "k1".into())].id, "w1");
        assert_eq!(found[&("a".into(), "k3".into())].id, "w3");
        // More keys than one IN list holds.
        let many: Vec<(String, String)> = (0..BIND_CHUNK + 3)
            .map(|i| ("a".to_string(), format!("x{i}")))
            .chain([("b".to_string(), "k1".to_string())])
            .collect();
        let found = store.by_idempotency_keys(&many).await.unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[&("b".into(), "k1".into())].id, "w2");

        let ids: Vec<String> = ["w3", "w1", "w2"].map(String::from).to_vec();
        let rows = store.get_many(&ids).await.unwrap();
        let got: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(got, ["w3", "w1", "w2"]);
        let missing = store
            .get_many(&["w1".to_string(), "w9".to_string()])
            .await
            .unwrap_err();
        assert!(missing.to_string().contains("w9"), "{missing}");
    }
}
