//! The delivery worker: polls the outbox and delivers to every sink.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use custos_db::Db;
use sqlx::{AnyConnection, Connection};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::nats::NatsSink;
use crate::outbox::{
    self, SinkFilter, StoredEvent, Webhook, due_heads, mark_delivered, record_failure,
    schedule_retry,
};
use crate::{EventsError, now_ms, webhook};

/// Exponential backoff between attempts of one delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay after the first failure; doubled after each further one.
    pub base: Duration,
    /// Cap on the delay.
    pub max: Duration,
    /// Attempts before the delivery is dead-lettered; `None` retries forever
    /// (right for the NATS sink: an outage of our own bus must lose nothing).
    pub max_attempts: Option<u32>,
}

impl RetryPolicy {
    /// The wait after `attempts` failed attempts (`attempts >= 1`).
    pub fn delay(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1);
        let factor = 1u32.checked_shl(doublings).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    fn exhausted(&self, attempts: i64) -> bool {
        self.max_attempts
            .is_some_and(|max| attempts >= i64::from(max))
    }
}

/// Dispatcher settings.
#[derive(Clone, Debug)]
pub struct DispatcherConfig {
    /// How often the outbox is polled when nobody nudges the dispatcher (also
    /// the granularity at which backoffs expire).
    pub poll_interval: Duration,
    /// Events fetched per sink and round (at most one per aggregate).
    pub batch_size: u32,
    /// Retries of the NATS sink.
    pub nats_retry: RetryPolicy,
    /// Retries of webhook deliveries.
    pub webhook_retry: RetryPolicy,
    /// Per-request timeout of webhook deliveries.
    pub webhook_timeout: Duration,
    /// Whether registered webhooks are delivered to.
    pub webhooks: bool,
    /// Which destinations deliveries may reach (checked again at every
    /// delivery: a webhook stored under another policy is not delivered to).
    pub destinations: crate::DestinationPolicy,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
            batch_size: 100,
            nats_retry: RetryPolicy {
                base: Duration::from_millis(200),
                max: Duration::from_secs(30),
                max_attempts: None,
            },
            webhook_retry: RetryPolicy {
                base: Duration::from_secs(1),
                max: Duration::from_secs(300),
                max_attempts: Some(10),
            },
            webhook_timeout: Duration::from_secs(10),
            webhooks: true,
            destinations: crate::DestinationPolicy::default(),
        }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct DispatcherMetrics {
    delivered: AtomicU64,
    failures: AtomicU64,
    dead_lettered: AtomicU64,
    backlog: AtomicU64,
    round_errors: AtomicU64,
}

/// A point-in-time copy of [`DispatcherMetrics`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Deliveries acknowledged by a sink.
    pub delivered: u64,
    /// Failed delivery attempts.
    pub failures: u64,
    /// Deliveries given up on.
    pub dead_lettered: u64,
    /// (event, sink) pairs not delivered yet, as of the last round.
    pub backlog: u64,
    /// Rounds that failed as a whole (database unreachable).
    pub round_errors: u64,
}

impl DispatcherMetrics {
    /// The current values.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            delivered: self.delivered.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            backlog: self.backlog.load(Ordering::Relaxed),
            round_errors: self.round_errors.load(Ordering::Relaxed),
        }
    }
}

/// One sink as seen by a delivery round.
enum Target<'a> {
    Nats(&'a NatsSink),
    Webhook(Webhook),
}

impl Target<'_> {
    fn name(&self) -> String {
        match self {
            Self::Nats(sink) => sink.name().to_string(),
            Self::Webhook(w) => w.sink_name(),
        }
    }

    fn filter(&self) -> SinkFilter {
        match self {
            Self::Nats(_) => SinkFilter::All,
            Self::Webhook(w) => SinkFilter::Client {
                client_id: w.client_id.clone(),
                after_id: w.from_outbox_id,
            },
        }
    }
}

/// Delivers the outbox to NATS and to registered webhooks.
///
/// Build it with [`Dispatcher::new`], add a NATS sink with
/// [`Dispatcher::with_nats`], then either [`Dispatcher::spawn`] it as a
/// background task or drive it with [`Dispatcher::run_once`]. Several
/// dispatchers on one database are safe (at worst an event is sent twice,
/// never out of order), but one per database is the intended deployment.
pub struct Dispatcher {
    db: Db,
    config: DispatcherConfig,
    nats: Option<NatsSink>,
    http: reqwest::Client,
    http_private: reqwest::Client,
    notify: Arc<Notify>,
    metrics: Arc<DispatcherMetrics>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("config", &self.config)
            .field("nats", &self.nats)
            .finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// A dispatcher over `db`'s outbox, with webhooks as configured and no NATS sink.
    pub fn new(db: Db, config: DispatcherConfig) -> Result<Self, EventsError> {
        let client = |public_only: bool| {
            let mut builder = reqwest::Client::builder()
                .timeout(config.webhook_timeout)
                // A redirect would send the signed body somewhere the client did not register.
                .redirect(reqwest::redirect::Policy::none());
            if public_only {
                builder = builder.dns_resolver(Arc::new(crate::destination::PublicOnlyResolver));
            }
            builder
                .build()
                .map_err(|e| EventsError::WebhookDelivery(format!("http client: {e}")))
        };
        let http = client(!config.destinations.allow_private)?;
        // For the webhooks an admin allowed an internal destination.
        let http_private = client(false)?;
        Ok(Self {
            db,
            config,
            nats: None,
            http,
            http_private,
            notify: Arc::new(Notify::new()),
            metrics: Arc::new(DispatcherMetrics::default()),
        })
    }

    /// Adds the NATS JetStream sink.
    pub fn with_nats(mut self, sink: NatsSink) -> Self {
        self.nats = Some(sink);
        self
    }

    /// The handle to nudge the dispatcher with after committing an enqueue
    /// (`notify_one`), so delivery does not wait for the next poll.
    pub fn notifier(&self) -> Arc<Notify> {
        Arc::clone(&self.notify)
    }

    /// The counters for `/metrics`.
    pub fn metrics(&self) -> Arc<DispatcherMetrics> {
        Arc::clone(&self.metrics)
    }

    /// One delivery round over every sink (sinks concurrently, each in
    /// outbox order, at most one event per aggregate); returns the number of
    /// deliveries made. A sink whose attempt fails is left for the next round.
    pub async fn run_once(&self) -> Result<u64, EventsError> {
        let mut targets = Vec::new();
        if let Some(nats) = &self.nats {
            targets.push(Target::Nats(nats));
        }
        if self.config.webhooks {
            let mut conn = self.db.pool.acquire().await?;
            for w in outbox::webhooks(&mut conn).await? {
                if w.active {
                    targets.push(Target::Webhook(w));
                }
            }
        }
        let rounds = targets.iter().map(|t| self.deliver_to(t));
        let mut delivered = 0;
        let mut backlog = 0;
        let mut first_error = None;
        for result in futures::future::join_all(rounds).await {
            match result {
                Ok((n, b)) => {
                    delivered += n;
                    backlog += b;
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        self.metrics.backlog.store(backlog, Ordering::Relaxed);
        match first_error {
            Some(e) => Err(e),
            None => Ok(delivered),
        }
    }

    /// Delivers due events to one sink; returns (delivered, remaining backlog).
    async fn deliver_to(&self, target: &Target<'_>) -> Result<(u64, u64), EventsError> {
        let name = target.name();
        let filter = target.filter();
        let mut conn = self.db.pool.acquire().await?;
        let heads = due_heads(&mut conn, &name, &filter, now_ms(), self.config.batch_size).await?;
        let mut delivered = 0;
        for event in heads {
            let sent = match target {
                Target::Nats(sink) => sink.publish(&event).await,
                Target::Webhook(w) => {
                    let http = if w.allow_private {
                        &self.http_private
                    } else {
                        &self.http
                    };
                    webhook::deliver(http, w, &event, &self.config).await
                }
            };
            match sent {
                Ok(()) => {
                    mark_delivered(&mut conn, &event.event_id, &name).await?;
                    self.metrics.delivered.fetch_add(1, Ordering::Relaxed);
                    delivered += 1;
                }
                Err(e) => {
                    self.metrics.failures.fetch_add(1, Ordering::Relaxed);
                    let policy = match target {
                        Target::Nats(_) => self.config.nats_retry,
                        Target::Webhook(_) => self.config.webhook_retry,
                    };
                    self.record_failure(&mut conn, &event, &name, &e, policy)
                        .await?;
                    // The sink is likely down: leave its other events for
                    // the next round rather than time out on each of them.
                    break;
                }
            }
        }
        let backlog = outbox::backlog(&mut conn, &name, &filter).await?;
        Ok((delivered, backlog))
    }

    async fn record_failure(
        &self,
        conn: &mut AnyConnection,
        event: &StoredEvent,
        sink: &str,
        error: &EventsError,
        policy: RetryPolicy,
    ) -> Result<(), EventsError> {
        tracing::warn!(event = %event.event_id, sink, error = %error, "event delivery failed");
        let mut tx = conn.begin().await?;
        let attempts = record_failure(&mut tx, &event.event_id, sink, &error.to_string()).await?;
        let next = if policy.exhausted(attempts) {
            self.metrics.dead_lettered.fetch_add(1, Ordering::Relaxed);
            tracing::error!(event = %event.event_id, sink, attempts, "event dead-lettered");
            None
        } else {
            let delay = policy.delay(u32::try_from(attempts).unwrap_or(u32::MAX));
            let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
            Some(now_ms().saturating_add(delay_ms))
        };
        schedule_retry(&mut tx, &event.event_id, sink, next).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Runs the dispatcher as a tokio task: a round whenever nudged, every
    /// poll interval otherwise, and rounds back to back while there is work.
    pub fn spawn(self) -> DispatcherHandle {
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let notify = Arc::clone(&self.notify);
        let task = tokio::spawn(async move {
            loop {
                let progressed = match self.run_once().await {
                    Ok(n) => n > 0,
                    Err(e) => {
                        self.metrics.round_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "outbox delivery round failed");
                        false
                    }
                };
                if *stop_rx.borrow() {
                    break;
                }
                if progressed {
                    continue;
                }
                tokio::select! {
                    _ = notify.notified() => {}
                    _ = tokio::time::sleep(self.config.poll_interval) => {}
                    _ = stop_rx.changed() => break,
                }
            }
        });
        DispatcherHandle {
            task,
            stop: stop_tx,
        }
    }
}

/// A running dispatcher task.
#[derive(Debug)]
pub struct DispatcherHandle {
    task: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl DispatcherHandle {
    /// Stops after the current round and waits for the task to end.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Kills the task wherever it is (what a crash looks like to the database:
    /// at most the delivery in flight is repeated by the next dispatcher).
    pub fn abort(self) {
        self.task.abort();
    }
}
