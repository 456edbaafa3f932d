//! The daemons' HTTP listeners.
//!
//! - The API listener ([`ApiListener`], [`serve_api`]): the coordinator's
//!   REST routes, over TLS with the same certificate and key as the gRPC
//!   listener (plain TCP only where a dev cluster asks for it).
//! - The metrics listener ([`serve_metrics`]): `/healthz` and `/metrics`,
//!   plain HTTP on its own address (loopback by default), so that neither is
//!   reachable through the API port, and a scraper needs no API token.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

/// What the endpoint reports: liveness is implied by answering at all;
/// readiness and metrics text come from the daemon.
pub trait Health: Send + Sync + 'static {
    /// `Ok` when the daemon can do its job, `Err(reason)` otherwise.
    fn ready(&self) -> Result<(), String>;
    /// Prometheus text exposition.
    fn metrics(&self) -> String;
    /// What a ready daemon adds to `/healthz`'s "ok" (a coordinator's
    /// leadership: "active, epoch 3"); `None`: nothing.
    fn role(&self) -> Option<String> {
        None
    }
}

/// The router with `/healthz` (200, or 503 with the reason; "shutting down"
/// once `draining` is cancelled) and `/metrics`.
pub fn router(health: Arc<dyn Health>, draining: CancellationToken) -> Router {
    let h2 = health.clone();
    Router::new()
        .route(
            "/healthz",
            get(move || {
                let h = health.clone();
                let draining = draining.clone();
                async move {
                    let state = if draining.is_cancelled() {
                        Err("shutting down".to_owned())
                    } else {
                        h.ready()
                    };
                    match state {
                        Ok(()) => match h.role() {
                            Some(role) => (StatusCode::OK, format!("ok: {role}\n")),
                            None => (StatusCode::OK, "ok\n".to_owned()),
                        },
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

/// Serves `/healthz` and `/metrics` on `listener` (plain HTTP) until
/// `shutdown` resolves. `/healthz` says "shutting down" from `draining` on,
/// so a daemon keeps this listener up through its drain.
pub async fn serve_metrics(
    listener: TcpListener,
    health: Arc<dyn Health>,
    draining: CancellationToken,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(health, draining))
        .with_graceful_shutdown(shutdown)
        .await
}

/// A TLS handshake may take this long; a client slower than that is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS handshakes in progress at most; further connections wait in the
/// kernel's accept queue.
const MAX_HANDSHAKES: usize = 256;

/// A connection of an [`ApiListener`].
pub type ApiIo = Either<TlsStream<TcpStream>, TcpStream>;

/// The API listener: TLS (handshakes run concurrently, each bounded by a
/// timeout, so a slow client does not hold up others), or plain TCP when a
/// dev cluster allows it.
pub struct ApiListener {
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl std::fmt::Debug for ApiListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiListener")
            .field("addr", &self.tcp.local_addr().ok())
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl ApiListener {
    /// TLS with `config` ([`crate::tls::server_config`]) on `tcp`.
    pub fn tls(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> Self {
        Self {
            tcp,
            tls: Some(TlsAcceptor::from(config)),
            handshakes: JoinSet::new(),
        }
    }

    /// Plain HTTP on `tcp` (dev clusters only: the daemons allow it only
    /// with a `[dev]` setting, which release builds refuse).
    pub fn plain(tcp: TcpListener) -> Self {
        Self {
            tcp,
            tls: None,
            handshakes: JoinSet::new(),
        }
    }

    /// Whether connections are TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

impl axum::serve::Listener for ApiListener {
    type Io = ApiIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (ApiIo, SocketAddr) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept(), if self.handshakes.len() < MAX_HANDSHAKES => {
                    let (stream, addr) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Out of file descriptors and the like: wait, as axum does.
                            tracing::warn!(error = %e, "HTTP accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    match &self.tls {
                        None => return (Either::Right(stream), addr),
                        Some(acceptor) => {
                            let handshake = acceptor.accept(stream);
                            self.handshakes.spawn(async move {
                                match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                                    Ok(Ok(tls)) => Some((tls, addr)),
                                    Ok(Err(e)) => {
                                        tracing::debug!(peer = %addr, error = %e, "TLS handshake failed");
                                        None
                                    }
                                    Err(_) => {
                                        tracing::debug!(peer = %addr, "TLS handshake timed out");
                                        None
                                    }
                                }
                            });
                        }
                    }
                }
                Some(done) = self.handshakes.join_next() => {
                    if let Ok(Some((tls, addr))) = done {
                        return (Either::Left(tls), addr);
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// The peer address of an API connection, in each request's extensions as
/// `ConnectInfo<PeerAddr>` (see [`crate::limits::peer_addr`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, ApiListener>>
    for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, ApiListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then finishes the
/// requests in progress.
pub async fn serve_api(
    listener: ApiListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<PeerAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
