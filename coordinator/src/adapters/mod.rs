//! Adapters fed by the withdrawal state machine: the double-entry ledger
//! ([`ledger::LedgerHook`]), the transactional outbox and its delivery to
//! NATS JetStream and webhooks ([`events`]), reports ([`reports`]), and their
//! REST routes and metrics on the HTTP port ([`http`]); and fed by the
//! chains: deposits credited and reversed ([`deposits`]).
//!
//! `main.rs` calls [`Adapters::start`] once the database is open, wraps the
//! withdrawal store with [`Adapters::attach`] (the hooks then run inside every
//! state change's transaction), serves [`Adapters::api_router`] on the API
//! listener and its health [`Adapters::with_metrics`] on the metrics
//! listener, runs [`Adapters::refresh_gauges`] with its other background
//! tasks and calls [`Adapters::shutdown`] when it stops.

pub mod app;
pub mod custody;
pub mod deposits;
pub mod events;
pub mod extract;
pub mod http;
pub mod ledger;
pub mod openapi;
pub mod reports;
pub mod routes;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use custos_service::http::Health;

use crate::auth::Authenticator;
use crate::config::{EventSettings, LedgerSettings};
use crate::error::CoordError;
use crate::withdrawal::store::{TransitionHook, WithdrawalStore};

/// Creates the ledger, ledger-exception and outbox tables if missing.
pub async fn create_schemas(db: &custos_service::db::Db) -> Result<(), CoordError> {
    let storage = |e: sqlx::Error| CoordError::storage("adapter schemas", e);
    db.execute_ddl(&custos_ledger::schema(db.backend))
        .await
        .map_err(storage)?;
    db.execute_ddl(&ledger::exceptions_schema(db.backend))
        .await
        .map_err(storage)?;
    db.execute_ddl(&custos_events::schema(db.backend))
        .await
        .map_err(storage)?;
    Ok(())
}

/// Database-derived gauges, refreshed in the background (the metrics
/// endpoint is synchronous).
#[derive(Debug, Default)]
struct Gauges {
    dead_letters: AtomicU64,
    webhooks_failing: AtomicU64,
    ledger_exceptions: AtomicU64,
    /// Deposits credited by this process.
    deposits_credited: AtomicU64,
    /// Credits reversed by this process (their block left the chain).
    deposits_reversed: AtomicU64,
}

/// The running adapters.
pub struct Adapters {
    ledger: Option<Arc<ledger::LedgerHook>>,
    outbox: Arc<events::OutboxHook>,
    dispatcher: events::RunningDispatcher,
    gauges: Arc<Gauges>,
    http: http::HttpState,
}

impl std::fmt::Debug for Adapters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adapters")
            .field("ledger", &self.ledger.is_some())
            .field("nats", &self.dispatcher.nats)
            .finish_non_exhaustive()
    }
}

impl Adapters {
    /// Creates the schemas, starts the event dispatcher and builds the hooks.
    /// `InvalidArgument` errors name the config field at fault.
    pub async fn start(
        db: &crate::db::Db,
        auth: Authenticator,
        ledger_cfg: &LedgerSettings,
        events_cfg: &EventSettings,
        chains: Arc<crate::chain::Chains>,
    ) -> Result<Adapters, CoordError> {
        let default_overdraft = ledger::parse_overdraft(&ledger_cfg.default_overdraft)
            .map_err(|e| CoordError::invalid("ledger.default_overdraft", e.to_string()))?;
        let sdb = custos_service::db::Db {
            pool: db.pool().clone(),
            backend: db.backend(),
        };
        create_schemas(&sdb).await?;
        let dispatcher = events::start_dispatcher(sdb, events_cfg).await?;
        let ledger = ledger_cfg
            .enabled
            .then(|| Arc::new(ledger::LedgerHook::new(default_overdraft)));
        let outbox = Arc::new(events::OutboxHook::new(Some(Arc::clone(
            &dispatcher.notify,
        ))));
        let gauges = Arc::new(Gauges::default());
        tracing::info!(
            ledger = ledger_cfg.enabled,
            nats = dispatcher.nats,
            "adapters started (ledger, outbox, reports)"
        );
        let http = http::HttpState {
            pool: db.pool().clone(),
            db: db.clone(),
            auth,
            notify: Arc::clone(&dispatcher.notify),
            eth_rpc_url: ledger_cfg.eth_rpc_url.clone(),
            chains,
            webhook_destinations: events::destination_policy(events_cfg),
        };
        Ok(Adapters {
            ledger,
            outbox,
            dispatcher,
            gauges,
            http,
        })
    }

    /// The store with the ledger (if enabled) and outbox hooks attached.
    pub fn attach(&self, mut store: WithdrawalStore) -> WithdrawalStore {
        if let Some(l) = &self.ledger {
            store = store.with_hook(Arc::clone(l) as Arc<dyn TransitionHook>);
        }
        store.with_hook(Arc::clone(&self.outbox) as Arc<dyn TransitionHook>)
    }

    /// Prometheus text for the adapters.
    pub fn metrics_text(&self) -> String {
        let m = self.dispatcher.metrics.snapshot();
        let exceptions = self
            .ledger
            .as_ref()
            .map_or(0, |l| l.exceptions().load(Ordering::Relaxed));
        format!(
            "# TYPE custos_outbox_backlog gauge\ncustos_outbox_backlog {}\n\
             # TYPE custos_event_deliveries_total counter\ncustos_event_deliveries_total {}\n\
             # TYPE custos_event_delivery_failures_total counter\ncustos_event_delivery_failures_total {}\n\
             # TYPE custos_events_dead_lettered_total counter\ncustos_events_dead_lettered_total {}\n\
             # TYPE custos_event_rounds_failed_total counter\ncustos_event_rounds_failed_total {}\n\
             # TYPE custos_event_dead_letters gauge\ncustos_event_dead_letters {}\n\
             # TYPE custos_webhook_deliveries_failing gauge\ncustos_webhook_deliveries_failing {}\n\
             # TYPE custos_events_nats_enabled gauge\ncustos_events_nats_enabled {}\n\
             # TYPE custos_ledger_exceptions_total counter\ncustos_ledger_exceptions_total {exceptions}\n\
             # TYPE custos_ledger_exceptions gauge\ncustos_ledger_exceptions {}\n\
             # TYPE custos_deposits_credited_total counter\ncustos_deposits_credited_total {}\n\
             # TYPE custos_deposits_reversed_total counter\ncustos_deposits_reversed_total {}\n",
            m.backlog,
            m.delivered,
            m.failures,
            m.dead_lettered,
            m.round_errors,
            self.gauges.dead_letters.load(Ordering::Relaxed),
            self.gauges.webhooks_failing.load(Ordering::Relaxed),
            u8::from(self.dispatcher.nats),
            self.gauges.ledger_exceptions.load(Ordering::Relaxed),
            self.gauges.deposits_credited.load(Ordering::Relaxed),
            self.gauges.deposits_reversed.load(Ordering::Relaxed),
        )
    }

    /// The daemon's health with the adapters' metrics added, for the
    /// metrics listener (`custos_service::http::serve_metrics`).
    pub fn with_metrics(self: &Arc<Self>, health: Arc<dyn Health>) -> Arc<dyn Health> {
        Arc::new(WithAdapterMetrics {
            inner: health,
            adapters: Arc::clone(self),
        })
    }

    /// The REST routes for the API listener: the adapters' ([`http`]), the
    /// custody API's over `api` ([`custody`]), the OpenAPI document
    /// ([`openapi`]) and the approval app ([`app`], with `app`'s settings);
    /// every request goes through `guard` (rate limits per client and
    /// route, calls in flight) and bodies are bounded to `max_body` bytes
    /// (413 beyond). Another path is a JSON 404.
    pub fn api_router(
        &self,
        api: crate::custody::CustodyApi,
        app: app::AppConfig,
        guard: custos_service::limits::Guard,
        max_body: usize,
    ) -> axum::Router {
        let sessions = Arc::new(app::sessions::Sessions::new(app.session_ttl));
        let custody = custody::CustodyState {
            api: api.clone(),
            auth: self.http.auth.clone(),
            sessions: Arc::clone(&sessions),
        };
        let app = app::AppState {
            api,
            pool: self.http.pool.clone(),
            sessions,
            stop: app.stop,
        };
        http::router(self.http.clone())
            .merge(custody::router(custody))
            .merge(openapi::router())
            .merge(app::router(app))
            .fallback(not_found)
            .layer(guard)
            .layer(axum::extract::DefaultBodyLimit::max(max_body))
    }

    /// Refreshes the database-derived gauges every 5 s, for as long as it
    /// is polled.
    pub fn refresh_gauges(&self) -> impl Future<Output = ()> + Send + 'static {
        refresh_gauges(self.http.pool.clone(), Arc::clone(&self.gauges))
    }

    /// Stops event delivery after the round in progress, waiting at most
    /// `limit` (a round cut off is repeated by the next start: deliveries
    /// are at least once). Events of the last transitions are in the
    /// outbox, committed with them.
    pub async fn shutdown(&self, limit: Duration) {
        let handle = self
            .dispatcher
            .handle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(h) = handle {
            match tokio::time::timeout(limit, h.shutdown()).await {
                Ok(()) => tracing::info!("event dispatcher stopped"),
                Err(_) => tracing::warn!(
                    "event dispatcher still in a delivery round: cut off (repeated at the next start)"
                ),
            }
        }
    }
}

/// A path the API does not serve.
async fn not_found(uri: axum::http::Uri) -> http::ApiError {
    http::ApiError::Route(
        axum::http::StatusCode::NOT_FOUND,
        format!("no route {} (see {})", uri.path(), openapi::PATH),
    )
}

/// The daemon's health plus the adapters' metrics.
struct WithAdapterMetrics {
    inner: Arc<dyn Health>,
    adapters: Arc<Adapters>,
}

impl Health for WithAdapterMetrics {
    fn ready(&self) -> Result<(), String> {
        self.inner.ready()
    }
    fn role(&self) -> Option<String> {
        self.inner.role()
    }
    fn metrics(&self) -> String {
        let mut out = self.inner.metrics();
        out.push_str(&self.adapters.metrics_text());
        out
    }
}

async fn refresh_gauges(pool: sqlx::AnyPool, gauges: Arc<Gauges>) {
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (i64,)>(sql)
                .fetch_one(&pool)
                .await
                .map(|(n,)| u64::try_from(n).unwrap_or(0))
        }
    };
    loop {
        if let Ok(n) =
            count("SELECT COUNT(*) FROM outbox_deliveries WHERE state = 'dead_letter'").await
        {
            gauges.dead_letters.store(n, Ordering::Relaxed);
        }
        if let Ok(n) = count(
            "SELECT COUNT(*) FROM outbox_deliveries WHERE state = 'pending' AND sink LIKE 'webhook:%'",
        )
        .await
        {
            gauges.webhooks_failing.store(n, Ordering::Relaxed);
        }
        if let Ok(n) = count("SELECT COUNT(*) FROM ledger_exceptions").await {
            gauges.ledger_exceptions.store(n, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}
