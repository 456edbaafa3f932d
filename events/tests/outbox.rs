#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Outbox and delivery tests against real services: PostgreSQL and NATS
//! JetStream on 127.0.0.1 (`scripts/ensure-services.sh`; `CUSTOS_TEST_PG_URL`,
//! `CUSTOS_TEST_NATS_URL` override), an own `nats-server` process for the
//! outage test, and an axum webhook receiver inside the test. Unreachable
//! services fail the tests; nothing is skipped.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use custos_db::Db;
use custos_db::testdb::{fresh_pg, fresh_sqlite};
use custos_events::{
    DeliveryState, DestinationPolicy, Dispatcher, DispatcherConfig, Event, EventsError, NatsConfig,
    NatsSink, RetryPolicy, create_schema, dead_letters, delivery_state, enqueue, enqueue_first,
    redrive, register_webhook, sign_webhook, verify_webhook,
};

async fn sqlite(dir: &tempfile::TempDir) -> Db {
    let db = fresh_sqlite(dir.path(), "events").await.unwrap();
    create_schema(&db).await.unwrap();
    create_schema(&db).await.unwrap();
    db
}

async fn pg() -> Db {
    let db = fresh_pg("events")
        .await
        .expect("PostgreSQL on 127.0.0.1:5432 (run scripts/ensure-services.sh)");
    create_schema(&db).await.unwrap();
    create_schema(&db).await.unwrap();
    db
}

macro_rules! on_both {
    ($scenario:ident, $sqlite:ident, $pg:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            let dir = tempfile::tempdir().unwrap();
            $scenario(sqlite(&dir).await).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $pg() {
            $scenario(pg().await).await;
        }
    };
}

fn unique(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{tag}{}x{nanos}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn nats_url() -> String {
    std::env::var("CUSTOS_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// A stream and subject prefix of its own, so tests do not see each other's events.
fn nats_config(url: &str) -> NatsConfig {
    let id = unique("t");
    NatsConfig {
        url: url.to_string(),
        stream: format!("CUSTOS_TEST_{}", id.to_uppercase()),
        subject_prefix: format!("custos_test.{id}"),
        sink_name: "nats".into(),
        ack_timeout: Duration::from_secs(2),
        ..NatsConfig::default()
    }
}

fn fast_config() -> DispatcherConfig {
    DispatcherConfig {
        poll_interval: Duration::from_millis(25),
        batch_size: 50,
        nats_retry: RetryPolicy {
            base: Duration::from_millis(50),
            max: Duration::from_millis(400),
            max_attempts: None,
        },
        webhook_retry: RetryPolicy {
            base: Duration::from_millis(20),
            max: Duration::from_millis(100),
            max_attempts: Some(3),
        },
        webhook_timeout: Duration::from_secs(5),
        webhooks: true,
        // The receivers run on loopback over plain HTTP.
        destinations: DestinationPolicy::PERMISSIVE,
    }
}

fn event(aggregate: &str, client: &str, event_type: &str, n: usize) -> Event {
    Event {
        aggregate_id: aggregate.to_string(),
        client_id: client.to_string(),
        event_type: event_type.to_string(),
        payload: serde_json::json!({ "n": n, "aggregate": aggregate }),
    }
}

/// Enqueues in its own committed transaction, as the coordinator would.
async fn enqueue_committed(db: &Db, e: &Event) -> custos_events::StoredEvent {
    let mut tx = db.pool.begin().await.unwrap();
    let stored = enqueue(&mut tx, e).await.unwrap();
    tx.commit().await.unwrap();
    stored
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn state(db: &Db, event_id: &str, sink: &str) -> DeliveryState {
    let mut conn = db.pool.acquire().await.unwrap();
    delivery_state(&mut conn, event_id, sink).await.unwrap()
}

async fn all_delivered(db: &Db, ids: &[String], sink: &str) -> bool {
    for id in ids {
        if !matches!(state(db, id, sink).await, DeliveryState::Delivered { .. }) {
            return false;
        }
    }
    true
}

/// Every message of a stream: (Nats-Msg-Id, aggregate, seq) in stream order.
async fn stream_messages(url: &str, stream: &str) -> Vec<(String, String, i64)> {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(stream).await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let msg = stream.get_raw_message(seq).await.unwrap();
        let id = msg.headers.get("Nats-Msg-Id").unwrap().to_string();
        let body: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
        assert_eq!(body["id"], id.as_str());
        out.push((
            id,
            body["aggregate_id"].as_str().unwrap().to_string(),
            body["seq"].as_i64().unwrap(),
        ));
    }
    out
}

/// Each id once, and per aggregate the sequence numbers 1..=n in order.
fn assert_exactly_once_in_order(messages: &[(String, String, i64)], per_aggregate: usize) {
    let mut seen = std::collections::BTreeSet::new();
    let mut last: BTreeMap<&str, i64> = BTreeMap::new();
    for (id, aggregate, seq) in messages {
        assert!(seen.insert(id.clone()), "duplicate {id}");
        let prev = last.insert(aggregate, *seq).unwrap_or(0);
        assert_eq!(*seq, prev + 1, "{aggregate} out of order");
    }
    assert!(
        last.values().all(|n| *n as usize == per_aggregate),
        "{last:?}"
    );
}

// ---------------------------------------------------------------------------
// Enqueue

/// Sequence numbers per aggregate, ids `{aggregate}:{seq}`, validation, and a
/// rolled-back (dropped) transaction leaves no event.
async fn enqueue_semantics(db: Db) {
    let a1 = enqueue_committed(&db, &event("wd-1", "c1", "withdrawal.requested", 0)).await;
    let a2 = enqueue_committed(&db, &event("wd-1", "c1", "withdrawal.approved", 1)).await;
    let b1 = enqueue_committed(&db, &event("wd-2", "c1", "withdrawal.requested", 0)).await;
    assert_eq!((a1.seq, a2.seq, b1.seq), (1, 2, 1));
    assert_eq!(a2.event_id, "wd-1:2");
    {
        let mut tx = db.pool.begin().await.unwrap();
        enqueue(&mut tx, &event("wd-1", "c1", "withdrawal.signed", 2))
            .await
            .unwrap();
        // dropped: rolled back
    }
    let a3 = enqueue_committed(&db, &event("wd-1", "c1", "withdrawal.cancelled", 3)).await;
    assert_eq!(a3.seq, 3, "the rolled-back event left no row and no gap");
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(count, 4);

    let mut conn = db.pool.acquire().await.unwrap();
    for bad in ["", "Withdrawal.Approved", "a..b", "a.*", "a.>", "a b"] {
        let err = enqueue(&mut conn, &event("wd-1", "c1", bad, 0))
            .await
            .unwrap_err();
        assert!(
            matches!(err, EventsError::InvalidEventType(_)),
            "{bad}: {err:?}"
        );
    }
    let err = enqueue(&mut conn, &event("", "c1", "x", 0))
        .await
        .unwrap_err();
    assert!(matches!(err, EventsError::InvalidId(_)), "{err:?}");
    let err = register_webhook(
        &mut conn,
        "c1",
        "http://127.0.0.1:1/",
        "short",
        DestinationPolicy::PERMISSIVE,
        false,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, EventsError::InvalidWebhook(_)), "{err:?}");
    let err = register_webhook(
        &mut conn,
        "c1",
        "ftp://x/",
        "0123456789abcdef",
        DestinationPolicy::PERMISSIVE,
        false,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, EventsError::InvalidWebhook(_)), "{err:?}");
}
on_both!(enqueue_semantics, enqueue_sqlite, enqueue_pg);

/// A group commit's first events of new aggregates: sequences 1.. per
/// aggregate in order, interleaved aggregates kept apart, more events than
/// one statement holds, then `enqueue` goes on from there; an aggregate that
/// already has events is refused and nothing of that batch is written.
async fn first_events_in_one_go(db: Db) {
    let mut batch = Vec::new();
    for i in 0..700 {
        batch.push(event(
            &format!("new-{}", i % 300),
            "c1",
            "withdrawal.requested",
            i,
        ));
    }
    let mut tx = db.pool.begin().await.unwrap();
    assert_eq!(enqueue_first(&mut tx, &batch).await.unwrap(), 700);
    tx.commit().await.unwrap();
    let rows: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT event_id, seq, payload FROM outbox WHERE aggregate_id = 'new-7' ORDER BY seq",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let seqs: Vec<i64> = rows.iter().map(|r| r.1).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(rows[2].0, "new-7:3");
    let n: Vec<u64> = rows
        .iter()
        .map(|r| {
            serde_json::from_str::<serde_json::Value>(&r.2).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        n,
        [7, 307, 607],
        "each aggregate's events in the order given"
    );
    let next = enqueue_committed(&db, &event("new-7", "c1", "withdrawal.approved", 0)).await;
    assert_eq!(next.seq, 4);

    let mut tx = db.pool.begin().await.unwrap();
    let refused = enqueue_first(
        &mut tx,
        &[
            event("fresh", "c1", "withdrawal.requested", 0),
            event("new-8", "c1", "withdrawal.requested", 0),
        ],
    )
    .await;
    assert!(refused.is_err(), "an aggregate with events is not new");
    drop(tx);
    let (count,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM outbox WHERE aggregate_id = 'fresh'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(count, 0);
    let mut conn = db.pool.acquire().await.unwrap();
    let bad = enqueue_first(&mut conn, &[event("x", "c1", "Bad Type", 0)]).await;
    assert!(
        matches!(bad, Err(EventsError::InvalidEventType(_))),
        "{bad:?}"
    );
}
on_both!(first_events_in_one_go, first_events_sqlite, first_events_pg);

/// Concurrent transactions enqueueing on one aggregate each get their own
/// sequence number: the loser of a race waits and takes the next one instead
/// of failing its transaction.
async fn concurrent_enqueue(db: Db) {
    let tasks: Vec<_> = (0..4)
        .map(|t| {
            let db = db.clone();
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for n in 0..5 {
                    let mut tx = db.pool.begin().await.unwrap();
                    let e = enqueue(
                        &mut tx,
                        &event("wd-hot", "c1", "withdrawal.updated", t * 10 + n),
                    )
                    .await
                    .unwrap();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    tx.commit().await.unwrap();
                    seqs.push(e.seq);
                }
                seqs
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (1..=20).collect::<Vec<i64>>());
}
on_both!(
    concurrent_enqueue,
    concurrent_enqueue_sqlite,
    concurrent_enqueue_pg
);

// ---------------------------------------------------------------------------
// NATS JetStream

/// Interleaved events of three aggregates all arrive on JetStream once and in
/// order per aggregate; forcing a full redelivery (delivery state wiped) adds
/// nothing to the stream because `Nats-Msg-Id` deduplicates.
async fn nats_exactly_once_in_order(db: Db) {
    let url = nats_url();
    // Fail at once with a clear message when the shared server is not up
    // (the sink itself would keep retrying in the background).
    async_nats::connect(url.as_str())
        .await
        .unwrap_or_else(|e| panic!("NATS at {url} (run scripts/ensure-services.sh): {e}"));
    let config = nats_config(&url);
    let stream = config.stream.clone();
    let same_stream = config.clone();
    let sink = NatsSink::connect(config).await.unwrap();
    let dispatcher = Dispatcher::new(db.clone(), fast_config())
        .unwrap()
        .with_nats(sink);
    let notify = dispatcher.notifier();
    let metrics = dispatcher.metrics();
    let handle = dispatcher.spawn();

    let mut ids = Vec::new();
    for n in 0..6 {
        for aggregate in ["wd-a", "wd-b", "wd-c"] {
            let stored =
                enqueue_committed(&db, &event(aggregate, "c1", "withdrawal.updated", n)).await;
            notify.notify_one();
            ids.push(stored.event_id);
        }
    }
    wait_until("NATS delivery", Duration::from_secs(30), || {
        all_delivered(&db, &ids, "nats")
    })
    .await;
    wait_until("backlog 0", Duration::from_secs(5), || async {
        metrics.snapshot().backlog == 0
    })
    .await;
    handle.shutdown().await;
    let messages = stream_messages(&url, &stream).await;
    assert_eq!(messages.len(), 18);
    assert_exactly_once_in_order(&messages, 6);

    // Redeliver everything: the stream dedupes on the event id.
    sqlx::query("DELETE FROM outbox_deliveries")
        .execute(&db.pool)
        .await
        .unwrap();
    let sink = NatsSink::connect(same_stream).await.unwrap();
    let dispatcher = Dispatcher::new(db.clone(), fast_config())
        .unwrap()
        .with_nats(sink);
    while dispatcher.run_once().await.unwrap() > 0 {}
    assert!(all_delivered(&db, &ids, "nats").await);
    let again = stream_messages(&url, &stream).await;
    assert_eq!(again, messages, "redelivery added nothing to the stream");
}
on_both!(nats_exactly_once_in_order, nats_once_sqlite, nats_once_pg);

/// A `nats-server` of the test's own, killable and restartable on the same
/// port and store directory.
struct OwnNats {
    port: u16,
    store: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl OwnNats {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut nats = Self {
            port,
            store: tempfile::tempdir().unwrap(),
            child: None,
        };
        nats.restart();
        nats
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn restart(&mut self) {
        let child = std::process::Command::new("nats-server")
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.store.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server on PATH");
        self.child = Some(child);
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "nats-server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// NATS killed mid-flow: enqueueing goes on unhindered, the backlog grows,
/// and after a restart on the same port and store every event is in the
/// stream exactly once, in order.
async fn nats_outage_loses_nothing(db: Db) {
    let mut server = OwnNats::start();
    let url = server.url();
    let config = nats_config(&url);
    let stream = config.stream.clone();
    let dispatcher = Dispatcher::new(db.clone(), fast_config())
        .unwrap()
        .with_nats(NatsSink::connect(config).await.unwrap());
    let notify = dispatcher.notifier();
    let metrics = dispatcher.metrics();
    let handle = dispatcher.spawn();

    let mut ids = Vec::new();
    for n in 0..4 {
        for aggregate in ["wd-x", "wd-y"] {
            ids.push(
                enqueue_committed(&db, &event(aggregate, "c1", "withdrawal.updated", n))
                    .await
                    .event_id,
            );
            notify.notify_one();
        }
    }
    wait_until(
        "delivery before the outage",
        Duration::from_secs(30),
        || all_delivered(&db, &ids, "nats"),
    )
    .await;

    server.kill();
    for n in 4..10 {
        for aggregate in ["wd-x", "wd-y"] {
            let start = Instant::now();
            ids.push(
                enqueue_committed(&db, &event(aggregate, "c1", "withdrawal.updated", n))
                    .await
                    .event_id,
            );
            notify.notify_one();
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "enqueue blocked by the outage"
            );
        }
    }
    wait_until("failures counted", Duration::from_secs(20), || async {
        metrics.snapshot().failures > 0
    })
    .await;
    assert!(!all_delivered(&db, &ids, "nats").await);
    wait_until("backlog visible", Duration::from_secs(10), || async {
        metrics.snapshot().backlog > 0
    })
    .await;

    server.restart();
    wait_until(
        "delivery after the restart",
        Duration::from_secs(60),
        || all_delivered(&db, &ids, "nats"),
    )
    .await;
    handle.shutdown().await;
    let messages = stream_messages(&url, &stream).await;
    assert_eq!(messages.len(), 20);
    assert_exactly_once_in_order(&messages, 10);
    assert!(
        dead_letters(&mut db.pool.acquire().await.unwrap())
            .await
            .unwrap()
            .is_empty()
    );
}
on_both!(
    nats_outage_loses_nothing,
    nats_outage_sqlite,
    nats_outage_pg
);

// ---------------------------------------------------------------------------
// Webhooks

const SECRET: &str = "whsec-test-0123456789abcdef";

#[derive(Clone, Default)]
struct Receiver {
    /// Requests seen, verified or not.
    requests: Arc<AtomicUsize>,
    /// Requests to fail with 500 before answering 200 (usize::MAX: always fail).
    fail_first: Arc<AtomicUsize>,
    /// How many of the first requests hang instead of answering.
    hang_first: Arc<AtomicUsize>,
    /// Event ids answered with 200, in order.
    accepted: Arc<Mutex<Vec<String>>>,
    /// Requests whose signature did not verify.
    bad_signatures: Arc<AtomicUsize>,
}

async fn receive(
    axum::extract::State(r): axum::extract::State<Receiver>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let n = r.requests.fetch_add(1, Ordering::SeqCst);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let Ok(event_id) = verify_webhook(SECRET, &headers, &body, now) else {
        r.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED;
    };
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["id"], event_id.as_str());
    if n < r.hang_first.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    if n < r.fail_first.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    r.accepted.lock().unwrap().push(event_id);
    StatusCode::OK
}

async fn start_receiver(receiver: Receiver) -> SocketAddr {
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(receiver);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Registers client c1's webhook at the local receiver `addr` (loopback,
/// plain HTTP: allowed only by the permissive policy).
async fn local_hook(
    conn: &mut sqlx::AnyConnection,
    addr: std::net::SocketAddr,
) -> custos_events::Webhook {
    register_webhook(
        conn,
        "c1",
        &format!("http://{addr}/hook"),
        SECRET,
        DestinationPolicy::PERMISSIVE,
        false,
    )
    .await
    .unwrap()
}

/// A receiver that answers 500 twice then 200: the client's two events
/// arrive once each, in order, signed; another client's event is not sent.
async fn webhook_retries_then_delivers(db: Db) {
    let receiver = Receiver::default();
    receiver.fail_first.store(2, Ordering::SeqCst);
    let addr = start_receiver(receiver.clone()).await;
    let mut conn = db.pool.acquire().await.unwrap();
    // An event from before the registration is not sent to the new webhook.
    enqueue(&mut conn, &event("wd-0", "c1", "withdrawal.requested", 0))
        .await
        .unwrap();
    let hook = local_hook(&mut conn, addr).await;
    assert!(!format!("{hook:?}").contains(SECRET), "secret in Debug");
    drop(conn);

    let e1 = enqueue_committed(&db, &event("wd-1", "c1", "withdrawal.approved", 1)).await;
    let e2 = enqueue_committed(&db, &event("wd-1", "c1", "withdrawal.signed", 2)).await;
    let other = enqueue_committed(&db, &event("wd-9", "c2", "withdrawal.approved", 1)).await;
    let mut config = fast_config();
    config.webhook_retry.max_attempts = Some(5);
    let dispatcher = Dispatcher::new(db.clone(), config).unwrap();
    let metrics = dispatcher.metrics();
    let handle = dispatcher.spawn();
    let ids = [e1.event_id.clone(), e2.event_id.clone()];
    let sink = hook.sink_name();
    wait_until("webhook delivery", Duration::from_secs(20), || {
        all_delivered(&db, &ids, &sink)
    })
    .await;
    handle.shutdown().await;

    assert_eq!(
        *receiver.accepted.lock().unwrap(),
        ids,
        "exactly once, in order"
    );
    assert_eq!(
        receiver.requests.load(Ordering::SeqCst),
        4,
        "two failures, two successes"
    );
    assert_eq!(receiver.bad_signatures.load(Ordering::SeqCst), 0);
    assert_eq!(
        state(&db, &e1.event_id, &hook.sink_name()).await,
        DeliveryState::Delivered { attempts: 3 }
    );
    assert_eq!(
        state(&db, &other.event_id, &hook.sink_name()).await,
        DeliveryState::New
    );
    let m = metrics.snapshot();
    assert_eq!(
        (m.delivered, m.failures, m.dead_lettered, m.backlog),
        (2, 2, 0, 0)
    );
}
on_both!(
    webhook_retries_then_delivers,
    webhook_retry_sqlite,
    webhook_retry_pg
);

/// Runs a dispatcher under `policy` until event `id`'s state with `hook`
/// satisfies `done`, then stops it.
async fn dispatch_until(
    db: &Db,
    policy: DestinationPolicy,
    id: &str,
    hook: &custos_events::Webhook,
    what: &str,
    done: fn(&DeliveryState) -> bool,
) {
    let mut config = fast_config();
    config.destinations = policy;
    let handle = Dispatcher::new(db.clone(), config).unwrap().spawn();
    let sink = hook.sink_name();
    wait_until(what, Duration::from_secs(20), || {
        let (db, id, sink) = (db.clone(), id.to_owned(), sink.clone());
        async move { done(&state(&db, &id, &sink).await) }
    })
    .await;
    handle.shutdown().await;
}

/// Server-side request forgery: under the default policy a loopback or
/// plain-HTTP webhook cannot be registered, and one stored under a looser
/// policy is never called: its deliveries fail naming the address and the
/// receiver sees no request.
async fn webhooks_reach_public_https_only_by_default(db: Db) {
    let receiver = Receiver::default();
    let addr = start_receiver(receiver.clone()).await;
    let strict = DestinationPolicy::default();
    let mut conn = db.pool.acquire().await.unwrap();
    for (url, why) in [
        (format!("http://{addr}/hook"), "https"),
        (format!("https://{addr}/hook"), "127.0.0.1"),
        ("https://localhost/hook".to_owned(), "localhost resolves to"),
        (
            "https://169.254.169.254/latest/meta-data".to_owned(),
            "169.254.169.254",
        ),
    ] {
        let e = register_webhook(&mut conn, "c1", &url, SECRET, strict, false)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains(why), "{url}: {e}");
    }
    let hook = local_hook(&mut conn, addr).await;
    drop(conn);
    let e1 = enqueue_committed(&db, &event("wd-s", "c1", "withdrawal.approved", 1)).await;
    dispatch_until(&db, strict, &e1.event_id, &hook, "dead letter", |st| {
        matches!(st, DeliveryState::DeadLetter { .. })
    })
    .await;
    assert_eq!(receiver.requests.load(Ordering::SeqCst), 0, "never called");
    match state(&db, &e1.event_id, &hook.sink_name()).await {
        DeliveryState::DeadLetter { last_error, .. } => {
            let e = last_error.unwrap_or_default();
            assert!(e.contains("https"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}
on_both!(
    webhooks_reach_public_https_only_by_default,
    webhook_ssrf_sqlite,
    webhook_ssrf_pg
);

/// An internal receiver an admin allowed for one webhook: under a policy
/// that refuses private addresses (plain http allowed, as in a dev
/// cluster), the same loopback URL is refused for one webhook and accepted
/// for another with the allowance, which is stored, listed and delivered
/// to; the webhook without it is never called.
async fn a_private_destination_only_with_its_allowance(db: Db) {
    let receiver = Receiver::default();
    let addr = start_receiver(receiver.clone()).await;
    let policy = DestinationPolicy {
        allow_http: true,
        allow_private: false,
    };
    let url = format!("http://{addr}/hook");
    let mut conn = db.pool.acquire().await.unwrap();
    let e = register_webhook(&mut conn, "c1", &url, SECRET, policy, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("127.0.0.1"), "{e}");
    let hook = register_webhook(&mut conn, "c1", &url, SECRET, policy, true)
        .await
        .unwrap();
    assert!(hook.allow_private);
    let listed = custos_events::webhooks(&mut conn).await.unwrap();
    assert_eq!(listed.len(), 1, "the refused one was not stored");
    assert!(listed[0].allow_private);
    drop(conn);
    let e1 = enqueue_committed(&db, &event("wd-p", "c1", "withdrawal.approved", 1)).await;
    dispatch_until(&db, policy, &e1.event_id, &hook, "delivered", |st| {
        matches!(st, DeliveryState::Delivered { .. })
    })
    .await;
    assert_eq!(receiver.requests.load(Ordering::SeqCst), 1);
}
on_both!(
    a_private_destination_only_with_its_allowance,
    webhook_allowance_sqlite,
    webhook_allowance_pg
);

/// A receiver that always fails: the event is dead-lettered after the
/// configured attempts, the aggregate's next event waits behind it, and a
/// redrive once the receiver is fixed delivers both in order.
async fn webhook_dead_letter_and_redrive(db: Db) {
    let receiver = Receiver::default();
    receiver.fail_first.store(usize::MAX, Ordering::SeqCst);
    let addr = start_receiver(receiver.clone()).await;
    let mut conn = db.pool.acquire().await.unwrap();
    let hook = local_hook(&mut conn, addr).await;
    drop(conn);
    let e1 = enqueue_committed(&db, &event("wd-1", "c1", "withdrawal.approved", 1)).await;
    let e2 = enqueue_committed(&db, &event("wd-1", "c1", "withdrawal.signed", 2)).await;

    let dispatcher = Dispatcher::new(db.clone(), fast_config()).unwrap();
    let metrics = dispatcher.metrics();
    let handle = dispatcher.spawn();
    let sink = hook.sink_name();
    wait_until("dead letter", Duration::from_secs(20), || async {
        matches!(
            state(&db, &e1.event_id, &sink).await,
            DeliveryState::DeadLetter { .. }
        )
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        receiver.requests.load(Ordering::SeqCst),
        3,
        "exactly the configured attempts"
    );
    assert_eq!(
        state(&db, &e2.event_id, &sink).await,
        DeliveryState::New,
        "held back behind e1"
    );
    let mut conn = db.pool.acquire().await.unwrap();
    let dead = dead_letters(&mut conn).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].event.event_id, e1.event_id);
    assert_eq!(dead[0].sink, sink);
    assert_eq!(dead[0].attempts, 3);
    assert_eq!(
        dead[0].last_error.as_deref(),
        Some("webhook: status 500 Internal Server Error")
    );
    assert_eq!(dead[0].event.payload, e1.payload);
    let m = metrics.snapshot();
    assert_eq!((m.dead_lettered, m.failures, m.backlog), (1, 3, 2));

    receiver.fail_first.store(0, Ordering::SeqCst);
    assert_eq!(redrive(&mut conn, &e1.event_id).await.unwrap(), 1);
    assert_eq!(redrive(&mut conn, &e1.event_id).await.unwrap(), 0);
    drop(conn);
    let ids = [e1.event_id.clone(), e2.event_id.clone()];
    wait_until("redriven delivery", Duration::from_secs(20), || {
        all_delivered(&db, &ids, &sink)
    })
    .await;
    handle.shutdown().await;
    assert_eq!(*receiver.accepted.lock().unwrap(), ids);
    assert!(
        dead_letters(&mut db.pool.acquire().await.unwrap())
            .await
            .unwrap()
            .is_empty()
    );
}
on_both!(
    webhook_dead_letter_and_redrive,
    dead_letter_sqlite,
    dead_letter_pg
);

/// A dispatcher killed while its delivery is in flight (after the enqueue
/// committed, before the delivery was recorded): a new dispatcher delivers
/// the event, and it ends up delivered exactly once as far as the receiver's
/// acceptance goes.
async fn killed_dispatcher_resumes(db: Db) {
    let receiver = Receiver::default();
    receiver.hang_first.store(1, Ordering::SeqCst);
    let addr = start_receiver(receiver.clone()).await;
    let mut conn = db.pool.acquire().await.unwrap();
    let hook = local_hook(&mut conn, addr).await;
    drop(conn);
    let e1 = enqueue_committed(&db, &event("wd-1", "c1", "withdrawal.confirmed", 1)).await;

    let first = Dispatcher::new(db.clone(), fast_config()).unwrap().spawn();
    wait_until(
        "first attempt in flight",
        Duration::from_secs(10),
        || async { receiver.requests.load(Ordering::SeqCst) == 1 },
    )
    .await;
    first.abort();
    assert_eq!(
        state(&db, &e1.event_id, &hook.sink_name()).await,
        DeliveryState::New
    );

    let second = Dispatcher::new(db.clone(), fast_config()).unwrap().spawn();
    let sink = hook.sink_name();
    wait_until(
        "delivery by the new dispatcher",
        Duration::from_secs(20),
        || all_delivered(&db, std::slice::from_ref(&e1.event_id), &sink),
    )
    .await;
    second.shutdown().await;
    assert_eq!(
        receiver.accepted.lock().unwrap().as_slice(),
        std::slice::from_ref(&e1.event_id)
    );
}
on_both!(
    killed_dispatcher_resumes,
    killed_dispatcher_sqlite,
    killed_dispatcher_pg
);

// ---------------------------------------------------------------------------
// Signature verification (pure)

#[test]
fn webhook_signature_verification() {
    let body = br#"{"id":"wd-1:1"}"#;
    let ts = 1_700_000_000u64;
    let mut headers = HeaderMap::new();
    headers.insert("Custos-Event-Id", "wd-1:1".parse().unwrap());
    headers.insert("Custos-Timestamp", ts.to_string().parse().unwrap());
    headers.insert(
        "Custos-Signature",
        sign_webhook(SECRET, ts, body).unwrap().parse().unwrap(),
    );
    assert_eq!(
        verify_webhook(SECRET, &headers, body, ts + 10).unwrap(),
        "wd-1:1"
    );
    assert!(verify_webhook(SECRET, &headers, body, ts - 299).is_ok());
    // Outside the 5-minute window, either way.
    assert!(verify_webhook(SECRET, &headers, body, ts + 301).is_err());
    assert!(verify_webhook(SECRET, &headers, body, ts - 301).is_err());
    // Wrong secret, altered body.
    assert!(verify_webhook("another-secret-0123", &headers, body, ts).is_err());
    assert!(verify_webhook(SECRET, &headers, br#"{"id":"wd-1:2"}"#, ts).is_err());
    // The timestamp is covered by the signature.
    let mut moved = headers.clone();
    moved.insert("Custos-Timestamp", (ts + 1).to_string().parse().unwrap());
    assert!(verify_webhook(SECRET, &moved, body, ts).is_err());
    // Secret rotation: any listed v1 signature may match.
    let mut rotated = headers.clone();
    let both = format!(
        "{},{}",
        sign_webhook("old-secret-0123456789", ts, body).unwrap(),
        sign_webhook(SECRET, ts, body).unwrap()
    );
    rotated.insert("Custos-Signature", both.parse().unwrap());
    assert!(verify_webhook(SECRET, &rotated, body, ts).is_ok());
    // Known-answer: the signature is hex HMAC-SHA256 over "timestamp.body".
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{ts}.").as_bytes());
    mac.update(body);
    assert_eq!(
        sign_webhook(SECRET, ts, body).unwrap(),
        format!("v1={}", hex::encode(mac.finalize().into_bytes()))
    );
    let mut missing = headers.clone();
    missing.remove("Custos-Signature");
    assert!(verify_webhook(SECRET, &missing, body, ts).is_err());
}

#[test]
fn retry_policy_backs_off_exponentially() {
    let p = RetryPolicy {
        base: Duration::from_millis(100),
        max: Duration::from_secs(1),
        max_attempts: Some(5),
    };
    let delays: Vec<u128> = (1..=6).map(|n| p.delay(n).as_millis()).collect();
    assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
    assert_eq!(p.delay(u32::MAX), Duration::from_secs(1));
}
