//! The outbox tables and every SQL statement on them.

use std::fmt;

use custos_db::{Backend, Db};
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, AssertSqlSafe};

use crate::{EventsError, now_ms};

/// Idempotent DDL for the outbox tables (`;`-separated, for [`Db::execute_ddl`]).
///
/// - `outbox(id, event_id, aggregate_id, seq, client_id, event_type, payload, created_at)`:
///   one row per event; `event_id` = `{aggregate_id}:{seq}` (unique), `seq`
///   counts from 1 per aggregate (unique with it), `payload` is JSON text.
/// - `outbox_deliveries(event_id, sink, state, attempts, next_attempt_at, last_error, updated_at)`:
///   per (event, sink) delivery state, `pending` | `delivered` | `dead_letter`;
///   no row means never attempted.
/// - `webhooks(id, client_id, url, secret, active, from_outbox_id, created_at)`:
///   receivers per API client; a webhook gets the client's events enqueued
///   after it was registered (`outbox.id > from_outbox_id`).
pub fn schema(backend: Backend) -> String {
    let pk = backend.serial_pk();
    format!(
        "CREATE TABLE IF NOT EXISTS outbox (
            id {pk},
            event_id TEXT NOT NULL UNIQUE,
            aggregate_id TEXT NOT NULL,
            seq BIGINT NOT NULL,
            client_id TEXT NOT NULL,
            event_type TEXT NOT NULL,
            payload TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            UNIQUE (aggregate_id, seq)
        );
        CREATE TABLE IF NOT EXISTS outbox_deliveries (
            event_id TEXT NOT NULL,
            sink TEXT NOT NULL,
            state TEXT NOT NULL,
            attempts BIGINT NOT NULL,
            next_attempt_at BIGINT NOT NULL,
            last_error TEXT,
            updated_at BIGINT NOT NULL,
            PRIMARY KEY (event_id, sink)
        );
        CREATE INDEX IF NOT EXISTS outbox_deliveries_state ON outbox_deliveries (state);
        CREATE TABLE IF NOT EXISTS webhooks (
            id {pk},
            client_id TEXT NOT NULL,
            url TEXT NOT NULL,
            secret TEXT NOT NULL,
            active BIGINT NOT NULL,
            from_outbox_id BIGINT NOT NULL,
            created_at BIGINT NOT NULL,
            allow_private BIGINT NOT NULL DEFAULT 0
        )"
    )
}

/// Creates the outbox tables if they are missing.
pub async fn create_schema(db: &Db) -> Result<(), EventsError> {
    db.execute_ddl(&schema(db.backend)).await?;
    // Webhooks registered before per-webhook allowances existed allow nothing.
    db.add_column_if_missing("webhooks", "allow_private", "BIGINT NOT NULL DEFAULT 0")
        .await?;
    Ok(())
}

/// An event to enqueue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The aggregate the event is about (the withdrawal id); events are
    /// ordered per aggregate.
    pub aggregate_id: String,
    /// The API client that owns the aggregate: only its webhooks receive the event.
    pub client_id: String,
    /// Dotted type, e.g. `withdrawal.approved`; the NATS subject suffix.
    pub event_type: String,
    /// The event body.
    pub payload: serde_json::Value,
}

/// An event as stored in the outbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Outbox row id (enqueue order across aggregates).
    pub outbox_id: i64,
    /// `{aggregate_id}:{seq}`: the deduplication key for every sink.
    pub event_id: String,
    /// The aggregate.
    pub aggregate_id: String,
    /// Position in the aggregate's sequence, from 1.
    pub seq: i64,
    /// The owning API client.
    pub client_id: String,
    /// The event type.
    pub event_type: String,
    /// The event body.
    pub payload: serde_json::Value,
    /// Enqueue time, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
}

/// The JSON a webhook receives (and the NATS message body).
#[derive(Serialize)]
pub(crate) struct WireEvent<'a> {
    pub id: &'a str,
    #[serde(rename = "type")]
    pub event_type: &'a str,
    pub aggregate_id: &'a str,
    pub seq: i64,
    pub created_at_ms: i64,
    pub data: &'a serde_json::Value,
}

impl StoredEvent {
    /// The body sent to sinks: `{"id", "type", "aggregate_id", "seq", "created_at_ms", "data"}`.
    pub fn wire_body(&self) -> Result<Vec<u8>, EventsError> {
        Ok(serde_json::to_vec(&WireEvent {
            id: &self.event_id,
            event_type: &self.event_type,
            aggregate_id: &self.aggregate_id,
            seq: self.seq,
            created_at_ms: self.created_at_ms,
            data: &self.payload,
        })?)
    }
}

fn valid_event_type(t: &str) -> bool {
    !t.is_empty()
        && t.split('.').all(|token| {
            !token.is_empty()
                && token
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        })
}

/// Events per statement in [`enqueue_first`] (6 values each): SQLite's
/// cost of preparing a statement grows with the square of its `$N`
/// parameters, so a few hundred at most.
const FIRST_CHUNK: usize = 40;

/// Adds the first events of aggregates that have none yet, each
/// aggregate's in the order given (sequence 1, 2, ...), in one statement
/// per [`FIRST_CHUNK`] events: for a group commit whose transaction creates
/// the aggregates themselves (new withdrawals), where [`enqueue`] would cost
/// one statement per event. An aggregate that already has events makes the
/// statement fail on the (aggregate, seq) uniqueness, and nothing of it is
/// written. Returns how many events were added; nudge the dispatcher after
/// commit as for [`enqueue`].
pub async fn enqueue_first(
    conn: &mut AnyConnection,
    events: &[Event],
) -> Result<usize, EventsError> {
    let mut rows = Vec::with_capacity(events.len());
    let mut next: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
    for event in events {
        if !valid_event_type(&event.event_type) {
            return Err(EventsError::InvalidEventType(event.event_type.clone()));
        }
        if event.aggregate_id.is_empty() {
            return Err(EventsError::InvalidId("aggregate id"));
        }
        if event.client_id.is_empty() {
            return Err(EventsError::InvalidId("client id"));
        }
        let seq = next.entry(event.aggregate_id.as_str()).or_insert(0);
        *seq += 1;
        rows.push((event, *seq, serde_json::to_string(&event.payload)?));
    }
    let created_at_ms = now_ms();
    for chunk in rows.chunks(FIRST_CHUNK) {
        let values = (0..chunk.len())
            .map(|i| {
                let b = i * 6;
                format!(
                    "(${}, ${}, ${}, ${}, ${}, ${}, ${})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6,
                    chunk.len() * 6 + 1
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO outbox (event_id, aggregate_id, seq, client_id, event_type, payload, created_at) VALUES {values}"
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for (event, seq, payload) in chunk {
            q = q
                .bind(format!("{}:{seq}", event.aggregate_id))
                .bind(event.aggregate_id.as_str())
                .bind(*seq)
                .bind(event.client_id.as_str())
                .bind(event.event_type.as_str())
                .bind(payload.as_str());
        }
        q.bind(created_at_ms).execute(&mut *conn).await?;
    }
    Ok(rows.len())
}

/// How many times [`enqueue`] re-reads the next sequence number after losing
/// a race for it to a concurrent transaction on the same aggregate.
const SEQ_ATTEMPTS: usize = 16;

/// Adds an event to the outbox. Call it inside the transaction that makes the
/// state change (`&mut *tx`), then nudge the dispatcher after commit
/// ([`crate::Dispatcher::notifier`]).
///
/// The sequence number is the aggregate's last plus one. `ON CONFLICT DO
/// NOTHING` makes a concurrent writer on the same aggregate wait and retry
/// rather than fail (a failed statement would abort the caller's PostgreSQL
/// transaction). This relies on READ COMMITTED (PostgreSQL's default): under
/// REPEATABLE READ a lost race ends in [`EventsError::SequenceContention`].
pub async fn enqueue(conn: &mut AnyConnection, event: &Event) -> Result<StoredEvent, EventsError> {
    if !valid_event_type(&event.event_type) {
        return Err(EventsError::InvalidEventType(event.event_type.clone()));
    }
    if event.aggregate_id.is_empty() {
        return Err(EventsError::InvalidId("aggregate id"));
    }
    if event.client_id.is_empty() {
        return Err(EventsError::InvalidId("client id"));
    }
    let payload = serde_json::to_string(&event.payload)?;
    let created_at_ms = now_ms();
    for _ in 0..SEQ_ATTEMPTS {
        // One statement that writes first: SQLite takes the write lock at
        // once (a SELECT first would start a read snapshot that cannot be
        // upgraded once another connection has committed).
        let inserted: Option<(i64, i64)> = sqlx::query_as(
            "INSERT INTO outbox
                (event_id, aggregate_id, seq, client_id, event_type, payload, created_at)
             SELECT $1 || ':' || CAST(COALESCE(MAX(seq), 0) + 1 AS TEXT), $1,
                    COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5
             FROM outbox WHERE aggregate_id = $1
             ON CONFLICT DO NOTHING RETURNING id, seq",
        )
        .bind(event.aggregate_id.as_str())
        .bind(event.client_id.as_str())
        .bind(event.event_type.as_str())
        .bind(payload.as_str())
        .bind(created_at_ms)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some((outbox_id, seq)) = inserted {
            return Ok(StoredEvent {
                outbox_id,
                event_id: format!("{}:{seq}", event.aggregate_id),
                aggregate_id: event.aggregate_id.clone(),
                seq,
                client_id: event.client_id.clone(),
                event_type: event.event_type.clone(),
                payload: event.payload.clone(),
                created_at_ms,
            });
        }
    }
    Err(EventsError::SequenceContention(event.aggregate_id.clone()))
}

/// A registered webhook. `Debug` leaves the secret out.
#[derive(Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Its id.
    pub id: i64,
    /// The API client whose events it receives.
    pub client_id: String,
    /// Where events are POSTed.
    pub url: String,
    /// The HMAC key shared with the receiver.
    pub secret: String,
    /// Inactive webhooks receive nothing (their backlog waits).
    pub active: bool,
    /// Only events with a larger outbox id are sent to it.
    pub from_outbox_id: i64,
    /// An admin allowed this webhook a loopback, private or link-local
    /// destination (an internal receiver); its URL's scheme still follows
    /// the deployment's policy.
    pub allow_private: bool,
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("id", &self.id)
            .field("client_id", &self.client_id)
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("active", &self.active)
            .field("from_outbox_id", &self.from_outbox_id)
            .field("allow_private", &self.allow_private)
            .finish()
    }
}

impl Webhook {
    /// The sink name its delivery state is recorded under.
    pub fn sink_name(&self) -> String {
        format!("webhook:{}", self.id)
    }

    /// The destinations this webhook may reach under the deployment's
    /// `policy`: the policy, widened to private addresses if an admin
    /// allowed this webhook those.
    pub fn destinations(&self, policy: crate::DestinationPolicy) -> crate::DestinationPolicy {
        crate::DestinationPolicy {
            allow_private: policy.allow_private || self.allow_private,
            ..policy
        }
    }
}

/// The shortest secret [`register_webhook`] accepts, in bytes.
pub const MIN_WEBHOOK_SECRET_LEN: usize = 16;

/// Registers a webhook for `client_id`, active at once; it receives that
/// client's events enqueued from now on. The secret is shared with the
/// receiver, which verifies every request with [`crate::verify_webhook`].
pub async fn register_webhook(
    conn: &mut AnyConnection,
    client_id: &str,
    url: &str,
    secret: &str,
    policy: crate::DestinationPolicy,
    allow_private: bool,
) -> Result<Webhook, EventsError> {
    if client_id.is_empty() {
        return Err(EventsError::InvalidId("client id"));
    }
    let policy = crate::DestinationPolicy {
        allow_private: policy.allow_private || allow_private,
        ..policy
    };
    crate::check_destination(url, policy).await?;
    if secret.len() < MIN_WEBHOOK_SECRET_LEN {
        return Err(EventsError::InvalidWebhook(format!(
            "secret shorter than {MIN_WEBHOOK_SECRET_LEN} bytes"
        )));
    }
    // One INSERT ... SELECT so the statement that reads the outbox high-water
    // mark is also the write (see `enqueue` on SQLite locking).
    let (id, from_outbox_id): (i64, i64) = sqlx::query_as(
        "INSERT INTO webhooks (client_id, url, secret, active, from_outbox_id, created_at, allow_private)
         SELECT $1, $2, $3, 1, COALESCE(MAX(id), 0), $4, $5 FROM outbox WHERE 1 = 1
         RETURNING id, from_outbox_id",
    )
    .bind(client_id)
    .bind(url)
    .bind(secret)
    .bind(now_ms())
    .bind(i64::from(allow_private))
    .fetch_one(&mut *conn)
    .await?;
    Ok(Webhook {
        id,
        client_id: client_id.to_string(),
        url: url.to_string(),
        secret: secret.to_string(),
        active: true,
        from_outbox_id,
        allow_private,
    })
}

/// Activates or deactivates a webhook; returns whether it exists.
pub async fn set_webhook_active(
    conn: &mut AnyConnection,
    id: i64,
    active: bool,
) -> Result<bool, EventsError> {
    let n = sqlx::query("UPDATE webhooks SET active = $1 WHERE id = $2")
        .bind(i64::from(active))
        .bind(id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    Ok(n > 0)
}

/// All registered webhooks, by id.
pub async fn webhooks(conn: &mut AnyConnection) -> Result<Vec<Webhook>, EventsError> {
    let rows: Vec<(i64, String, String, String, i64, i64, i64)> = sqlx::query_as(
        "SELECT id, client_id, url, secret, active, from_outbox_id, allow_private
         FROM webhooks ORDER BY id",
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, client_id, url, secret, active, from_outbox_id, allow_private)| Webhook {
                id,
                client_id,
                url,
                secret,
                active: active != 0,
                from_outbox_id,
                allow_private: allow_private != 0,
            },
        )
        .collect())
}

/// Where an event stands with one sink.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryState {
    /// Not attempted yet.
    New,
    /// Attempted and failed; retried after its backoff.
    Pending {
        /// Attempts so far.
        attempts: i64,
        /// The last failure.
        last_error: Option<String>,
    },
    /// Acknowledged by the sink.
    Delivered {
        /// Attempts it took.
        attempts: i64,
    },
    /// Given up after the configured attempts; see [`redrive`].
    DeadLetter {
        /// Attempts made.
        attempts: i64,
        /// The last failure.
        last_error: Option<String>,
    },
}

/// The delivery state of `event_id` for `sink` (`nats` by default, or
/// [`Webhook::sink_name`]).
pub async fn delivery_state(
    conn: &mut AnyConnection,
    event_id: &str,
    sink: &str,
) -> Result<DeliveryState, EventsError> {
    let row: Option<(String, i64, Option<String>)> = sqlx::query_as(
        "SELECT state, attempts, last_error FROM outbox_deliveries WHERE event_id = $1 AND sink = $2",
    )
    .bind(event_id)
    .bind(sink)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(match row {
        None => DeliveryState::New,
        Some((state, attempts, last_error)) => match state.as_str() {
            STATE_PENDING => DeliveryState::Pending {
                attempts,
                last_error,
            },
            STATE_DELIVERED => DeliveryState::Delivered { attempts },
            STATE_DEAD => DeliveryState::DeadLetter {
                attempts,
                last_error,
            },
            other => return Err(EventsError::Corrupt(format!("delivery state `{other}`"))),
        },
    })
}

/// A delivery given up on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The event.
    pub event: StoredEvent,
    /// The sink that refused it.
    pub sink: String,
    /// Attempts made.
    pub attempts: i64,
    /// The last failure.
    pub last_error: Option<String>,
    /// When it was dead-lettered, milliseconds since the Unix epoch.
    pub dead_lettered_at_ms: i64,
}

/// Every dead-lettered delivery, oldest event first. While an event is dead
/// for a sink, that sink gets no later event of the same aggregate (ordering).
pub async fn dead_letters(conn: &mut AnyConnection) -> Result<Vec<DeadLetter>, EventsError> {
    let rows: Vec<DeadLetterRow> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {EVENT_COLUMNS}, d.sink, d.attempts, d.last_error, d.updated_at
         FROM outbox_deliveries d JOIN outbox o ON o.event_id = d.event_id
         WHERE d.state = 'dead_letter' ORDER BY o.id, d.sink"
    )))
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|row| {
            let (event, sink, attempts, last_error, at) = split_dead_letter(row);
            Ok(DeadLetter {
                event: event_from_row(event)?,
                sink,
                attempts,
                last_error,
                dead_lettered_at_ms: at,
            })
        })
        .collect()
}

/// Puts every dead-lettered delivery of `event_id` back to pending with a
/// fresh attempt budget; returns how many deliveries were revived.
pub async fn redrive(conn: &mut AnyConnection, event_id: &str) -> Result<u64, EventsError> {
    let n = sqlx::query(
        "UPDATE outbox_deliveries SET state = 'pending', attempts = 0, next_attempt_at = 0, updated_at = $1
         WHERE event_id = $2 AND state = 'dead_letter'",
    )
    .bind(now_ms())
    .bind(event_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n)
}

pub(crate) const STATE_PENDING: &str = "pending";
pub(crate) const STATE_DELIVERED: &str = "delivered";
pub(crate) const STATE_DEAD: &str = "dead_letter";

const EVENT_COLUMNS: &str =
    "o.id, o.event_id, o.aggregate_id, o.seq, o.client_id, o.event_type, o.payload, o.created_at";

type EventRow = (i64, String, String, i64, String, String, String, i64);
type DeadLetterRow = (
    i64,
    String,
    String,
    i64,
    String,
    String,
    String,
    i64,
    String,
    i64,
    Option<String>,
    i64,
);

fn split_dead_letter(r: DeadLetterRow) -> (EventRow, String, i64, Option<String>, i64) {
    (
        (r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7),
        r.8,
        r.9,
        r.10,
        r.11,
    )
}

fn event_from_row(r: EventRow) -> Result<StoredEvent, EventsError> {
    let (outbox_id, event_id, aggregate_id, seq, client_id, event_type, payload, created_at_ms) = r;
    Ok(StoredEvent {
        outbox_id,
        event_id,
        aggregate_id,
        seq,
        client_id,
        event_type,
        payload: serde_json::from_str(&payload)?,
        created_at_ms,
    })
}

/// Which events a sink receives.
#[derive(Clone, Debug)]
pub(crate) enum SinkFilter {
    /// Every event (NATS).
    All,
    /// One client's events after an outbox id (a webhook).
    Client { client_id: String, after_id: i64 },
}

/// The next deliverable event of each aggregate for `sink`: the lowest-seq
/// event not yet delivered to it, provided it is new or pending and due. An
/// aggregate whose head is dead-lettered or backing off yields nothing, which
/// is what keeps delivery in order.
pub(crate) async fn due_heads(
    conn: &mut AnyConnection,
    sink: &str,
    filter: &SinkFilter,
    now: i64,
    limit: u32,
) -> Result<Vec<StoredEvent>, EventsError> {
    let (outer, inner) = match filter {
        SinkFilter::All => ("1 = 1", "1 = 1"),
        SinkFilter::Client { .. } => (
            "o.client_id = $3 AND o.id > $4",
            "p.client_id = $3 AND p.id > $4",
        ),
    };
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM outbox o
         LEFT JOIN outbox_deliveries d ON d.event_id = o.event_id AND d.sink = $1
         WHERE {outer}
           AND (d.state IS NULL OR (d.state = 'pending' AND d.next_attempt_at <= $2))
           AND NOT EXISTS (
               SELECT 1 FROM outbox p
               LEFT JOIN outbox_deliveries pd ON pd.event_id = p.event_id AND pd.sink = $1
               WHERE p.aggregate_id = o.aggregate_id AND p.seq < o.seq AND {inner}
                 AND (pd.state IS NULL OR pd.state <> 'delivered'))
         ORDER BY o.id LIMIT {limit}"
    );
    let mut query = sqlx::query_as::<_, EventRow>(AssertSqlSafe(sql))
        .bind(sink)
        .bind(now);
    if let SinkFilter::Client {
        client_id,
        after_id,
    } = filter
    {
        query = query.bind(client_id.clone()).bind(*after_id);
    }
    let rows = query.fetch_all(&mut *conn).await?;
    rows.into_iter().map(event_from_row).collect()
}

/// How many events `sink` has not had delivered yet (including dead letters
/// and events waiting behind them).
pub(crate) async fn backlog(
    conn: &mut AnyConnection,
    sink: &str,
    filter: &SinkFilter,
) -> Result<u64, EventsError> {
    let cond = match filter {
        SinkFilter::All => "1 = 1",
        SinkFilter::Client { .. } => "o.client_id = $2 AND o.id > $3",
    };
    let sql = format!(
        "SELECT COUNT(*) FROM outbox o
         WHERE {cond} AND NOT EXISTS (
             SELECT 1 FROM outbox_deliveries d
             WHERE d.event_id = o.event_id AND d.sink = $1 AND d.state = 'delivered')"
    );
    let mut query = sqlx::query_as::<_, (i64,)>(AssertSqlSafe(sql)).bind(sink);
    if let SinkFilter::Client {
        client_id,
        after_id,
    } = filter
    {
        query = query.bind(client_id.clone()).bind(*after_id);
    }
    let (n,) = query.fetch_one(&mut *conn).await?;
    Ok(u64::try_from(n).unwrap_or_default())
}

/// Records a successful delivery.
pub(crate) async fn mark_delivered(
    conn: &mut AnyConnection,
    event_id: &str,
    sink: &str,
) -> Result<(), EventsError> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO outbox_deliveries (event_id, sink, state, attempts, next_attempt_at, last_error, updated_at)
         VALUES ($1, $2, 'delivered', 1, 0, NULL, $3)
         ON CONFLICT (event_id, sink) DO UPDATE SET
             state = 'delivered', attempts = outbox_deliveries.attempts + 1, updated_at = $3",
    )
    .bind(event_id)
    .bind(sink)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records a failed attempt; returns the attempts made so far.
pub(crate) async fn record_failure(
    conn: &mut AnyConnection,
    event_id: &str,
    sink: &str,
    error: &str,
) -> Result<i64, EventsError> {
    let (attempts,): (i64,) = sqlx::query_as(
        "INSERT INTO outbox_deliveries (event_id, sink, state, attempts, next_attempt_at, last_error, updated_at)
         VALUES ($1, $2, 'pending', 1, 0, $3, $4)
         ON CONFLICT (event_id, sink) DO UPDATE SET
             attempts = outbox_deliveries.attempts + 1, last_error = $3, updated_at = $4
         RETURNING attempts",
    )
    .bind(event_id)
    .bind(sink)
    .bind(error)
    .bind(now_ms())
    .fetch_one(&mut *conn)
    .await?;
    Ok(attempts)
}

/// Schedules the next attempt, or dead-letters the delivery.
pub(crate) async fn schedule_retry(
    conn: &mut AnyConnection,
    event_id: &str,
    sink: &str,
    next: Option<i64>,
) -> Result<(), EventsError> {
    let (state, at) = match next {
        Some(at) => (STATE_PENDING, at),
        None => (STATE_DEAD, 0),
    };
    sqlx::query(
        "UPDATE outbox_deliveries SET state = $1, next_attempt_at = $2 WHERE event_id = $3 AND sink = $4",
    )
    .bind(state)
    .bind(at)
    .bind(event_id)
    .bind(sink)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
