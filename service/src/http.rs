//! `/healthz` and `/metrics` on a daemon's HTTP port.

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;

/// What the endpoint reports: liveness is implied by answering at all;
/// readiness and metrics text come from the daemon.
pub trait Health: Send + Sync + 'static {
    /// `Ok` when the daemon can do its job, `Err(reason)` otherwise.
    fn ready(&self) -> Result<(), String>;
    /// Prometheus text exposition.
    fn metrics(&self) -> String;
}

/// The router with `/healthz` (200 or 503 with the reason) and `/metrics`.
pub fn router(health: Arc<dyn Health>) -> Router {
    let h2 = health.clone();
    Router::new()
        .route(
            "/healthz",
            get(move || {
                let h = health.clone();
                async move {
                    match h.ready() {
                        Ok(()) => (StatusCode::OK, "ok\n".to_owned()),
                        Err(reason) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready: {reason}\n"),
                        ),
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let h = h2.clone();
                async move { h.metrics() }
            }),
        )
}

/// Serves the router on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    health: Arc<dyn Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(health))
        .with_graceful_shutdown(shutdown)
        .await
}
