//! Rate limits, concurrency and request-size bounds for every API listener.
//!
//! # Design
//!
//! One [`RateLimiter`] per listener holds a token bucket per (client,
//! route): a client is the credential a request proves (an API token's id,
//! found by the daemon's [`ClientOf`]), or, when it proves none, its peer
//! address; a route is a gRPC method path (`/custos.v1.Custody/CreateWithdrawal`)
//! or an HTTP method and route pattern (`POST /v1/ledger/deposits`). A flood
//! from one client therefore drains only that client's buckets: another
//! client, or the same client on another route, is unaffected. A caller
//! that presents someone else's token id with a wrong secret is keyed by
//! its address, so it cannot drain the victim's bucket.
//!
//! [`Guard`] is the tower layer that applies it, together with a bound on
//! the calls in flight on the listener and, for gRPC, the refusal of new
//! calls once the daemon drains. Over the limit, gRPC answers
//! `RESOURCE_EXHAUSTED` with `retry-after` metadata and HTTP answers 429
//! with `Retry-After`, both in whole seconds. Message sizes are bounded by
//! the servers themselves (`max_decoding_message_size`, axum's body limit)
//! from [`LimitSettings::max_request_bytes`].
//!
//! The bucket arithmetic is integer (token-nanoseconds), and every check
//! takes the time as an argument: tests drive it with their own instants.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::http;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::ConfigError;

/// One nanosecond's worth of one token, scaled: a bucket's level is kept in
/// token-nanoseconds so that refill (`elapsed ns × rate`) is exact.
const TOKEN: u128 = 1_000_000_000;

/// Buckets kept per listener before idle (full) ones are dropped.
const MAX_BUCKETS: usize = 100_000;

/// A sustained rate and the burst allowed above it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Requests per second, sustained (≥ 1).
    pub per_sec: u32,
    /// Requests that may come at once after a quiet period (≥ 1): the
    /// bucket's capacity.
    pub burst: u32,
}

/// A token bucket: `burst` tokens at most, refilled at `per_sec`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket {
    /// Tokens × 10⁹.
    level: u128,
    /// When `level` was last brought up to date.
    at: Instant,
}

impl Bucket {
    /// A full bucket at `now` (a client not seen before gets its burst).
    pub fn full(rate: Rate, now: Instant) -> Self {
        Self {
            level: u128::from(rate.burst) * TOKEN,
            at: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_nanos();
        let cap = u128::from(rate.burst) * TOKEN;
        self.level = self
            .level
            .saturating_add(elapsed.saturating_mul(u128::from(rate.per_sec)))
            .min(cap);
        if now > self.at {
            self.at = now;
        }
    }

    /// Takes one token at `now`; if there is none, leaves the bucket as it
    /// is and returns how long until there is one.
    pub fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        self.refill(rate, now);
        if self.level >= TOKEN {
            self.level -= TOKEN;
            return Ok(());
        }
        let missing = TOKEN - self.level;
        let per_sec = u128::from(rate.per_sec.max(1));
        let wait = missing.div_ceil(per_sec);
        Err(Duration::from_nanos(
            u64::try_from(wait).unwrap_or(u64::MAX),
        ))
    }

    /// Whether the bucket is full at `now` (it then holds nothing a new
    /// bucket would not: it can be dropped).
    pub fn is_full(&self, rate: Rate, now: Instant) -> bool {
        let mut b = *self;
        b.refill(rate, now);
        b.level >= u128::from(rate.burst) * TOKEN
    }
}

/// The limits of one listener, resolved from a daemon's `[limits]`
/// ([`LimitsConfig`]) over its defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitSettings {
    /// Requests per second one client may make to one route, sustained.
    pub rate_per_sec: u32,
    /// Requests one client may make to one route at once.
    pub burst: u32,
    /// Per-route rates instead of the above.
    pub routes: BTreeMap<String, Rate>,
    /// Calls in flight on one listener at most.
    pub max_concurrent: u32,
    /// Largest request accepted, bytes.
    pub max_request_bytes: u32,
}

/// The API listeners' defaults: 100 requests/s per client and route, bursts
/// of 200, 512 calls in flight, 4 MiB requests.
impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            rate_per_sec: 100,
            burst: 200,
            routes: BTreeMap::new(),
            max_concurrent: 512,
            max_request_bytes: 4 * 1024 * 1024,
        }
    }
}

/// `[limits]` of a daemon's config: every field optional, the daemon's
/// defaults for those left out ([`LimitsConfig::resolve`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Requests per second one client may make to one route, sustained.
    #[serde(default)]
    pub rate_per_sec: Option<u32>,
    /// Requests one client may make to one route at once (the bucket size).
    #[serde(default)]
    pub burst: Option<u32>,
    /// Per-route rates instead of the above, keyed by gRPC method path
    /// (`"/custos.v1.Custody/CreateWithdrawal"`) or HTTP method and route
    /// (`"POST /v1/ledger/deposits"`).
    #[serde(default)]
    pub routes: BTreeMap<String, Rate>,
    /// Calls in flight on one listener at most; further calls are refused
    /// at once (`RESOURCE_EXHAUSTED` / 503) until some finish.
    #[serde(default)]
    pub max_concurrent: Option<u32>,
    /// Largest request accepted, bytes: a gRPC message, an HTTP body.
    /// Larger ones are refused before they are decoded.
    #[serde(default)]
    pub max_request_bytes: Option<u32>,
}

impl LimitsConfig {
    /// The settings: these fields over `defaults`, checked
    /// ([`LimitSettings::check`]; `section` names the table in errors).
    pub fn resolve(
        &self,
        defaults: LimitSettings,
        section: &str,
    ) -> Result<LimitSettings, ConfigError> {
        let mut routes = defaults.routes;
        routes.extend(self.routes.iter().map(|(k, v)| (k.clone(), *v)));
        let s = LimitSettings {
            rate_per_sec: self.rate_per_sec.unwrap_or(defaults.rate_per_sec),
            burst: self.burst.unwrap_or(defaults.burst),
            routes,
            max_concurrent: self.max_concurrent.unwrap_or(defaults.max_concurrent),
            max_request_bytes: self.max_request_bytes.unwrap_or(defaults.max_request_bytes),
        };
        s.check(section)?;
        Ok(s)
    }
}

impl LimitSettings {
    /// Refuses unusable values, naming the field (`section` is the config
    /// table, e.g. `limits`).
    pub fn check(&self, section: &str) -> Result<(), ConfigError> {
        let field = |name: &str, message: &str| ConfigError::Field {
            field: format!("{section}.{name}"),
            message: message.to_owned(),
        };
        if self.rate_per_sec == 0 {
            return Err(field("rate_per_sec", "must be at least 1"));
        }
        if self.burst == 0 {
            return Err(field("burst", "must be at least 1"));
        }
        if self.max_concurrent == 0 {
            return Err(field("max_concurrent", "must be at least 1"));
        }
        if self.max_request_bytes < 1024 {
            return Err(field("max_request_bytes", "must be at least 1024"));
        }
        for (route, rate) in &self.routes {
            let name = format!("routes.\"{route}\"");
            let well_formed = route.starts_with('/')
                || route
                    .split_once(' ')
                    .is_some_and(|(m, p)| !m.is_empty() && p.starts_with('/'));
            if !well_formed {
                return Err(field(
                    &name,
                    "a gRPC method path (\"/pkg.Service/Method\") or an HTTP method and \
                     route (\"POST /v1/...\")",
                ));
            }
            if rate.per_sec == 0 || rate.burst == 0 {
                return Err(field(&name, "per_sec and burst must be at least 1"));
            }
        }
        Ok(())
    }

    /// The rate for `route`.
    pub fn rate(&self, route: &str) -> Rate {
        self.routes.get(route).copied().unwrap_or(Rate {
            per_sec: self.rate_per_sec,
            burst: self.burst,
        })
    }

    /// `max_request_bytes` as a `usize`.
    pub fn max_request(&self) -> usize {
        usize::try_from(self.max_request_bytes).unwrap_or(usize::MAX)
    }
}

/// Token buckets per (client, route).
#[derive(Debug)]
pub struct RateLimiter {
    settings: LimitSettings,
    buckets: Mutex<HashMap<(String, String), Bucket>>,
}

impl RateLimiter {
    /// A limiter with `settings` (checked by [`LimitSettings::check`]).
    pub fn new(settings: LimitSettings) -> Self {
        Self {
            settings,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Admits one request of `client` to `route` at `now`, or says after
    /// how long it would be admitted.
    pub fn check(&self, client: &str, route: &str, now: Instant) -> Result<(), Duration> {
        let rate = self.settings.rate(route);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let key = (client.to_owned(), route.to_owned());
        if !buckets.contains_key(&key) && buckets.len() >= MAX_BUCKETS {
            let settings = &self.settings;
            buckets.retain(|(_, r), b| !b.is_full(settings.rate(r), now));
            if buckets.len() >= MAX_BUCKETS {
                tracing::warn!(
                    buckets = buckets.len(),
                    "rate limiter: too many active clients, every bucket reset"
                );
                buckets.clear();
            }
        }
        buckets
            .entry(key)
            .or_insert_with(|| Bucket::full(rate, now))
            .take(rate, now)
    }

    /// The settings in force.
    pub fn settings(&self) -> &LimitSettings {
        &self.settings
    }
}

/// Whole seconds to announce in `retry-after` / `Retry-After` for `wait`
/// (rounded up, at least 1).
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// Finds the credential a request proves, for keying the buckets: the
/// daemon's check of its API token (`Some(token id)`), without side effects.
pub type ClientOf = Arc<dyn Fn(&http::HeaderMap) -> Option<String> + Send + Sync>;

/// Which protocol a listener speaks, for the shape of refusals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// gRPC: a `Status` (trailers-only answer) with `retry-after` metadata.
    Grpc,
    /// HTTP/JSON: a status code, `Retry-After` and `{"error": ...}`.
    Http,
}

/// Why a call was refused before it reached the service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The client's bucket for this route is empty.
    RateLimited {
        /// Who (the bucket's client key).
        client: String,
        /// Which route.
        route: String,
        /// Until a token is there.
        retry_after: Duration,
    },
    /// `max_concurrent` calls are in flight.
    Busy {
        /// The limit.
        limit: u32,
    },
    /// The daemon is shutting down and takes no new calls.
    Draining,
    /// This instance is a standby: the call belongs to the active one.
    Standby {
        /// The active instance, if one is known.
        leader: Option<crate::standby::Leader>,
    },
}

impl Refusal {
    /// The message sent to the caller.
    pub fn message(&self) -> String {
        match self {
            Refusal::RateLimited {
                client,
                route,
                retry_after,
            } => format!(
                "rate limit exceeded for {client} on {route}: retry after {} s",
                retry_after_secs(*retry_after)
            ),
            Refusal::Busy { limit } => {
                format!("server busy: {limit} calls in flight, retry after 1 s")
            }
            Refusal::Draining => "shutting down: retry on another instance".to_owned(),
            Refusal::Standby { leader } => crate::standby::message(leader.as_ref()),
        }
    }

    fn retry_after(&self) -> u64 {
        match self {
            Refusal::RateLimited { retry_after, .. } => retry_after_secs(*retry_after),
            Refusal::Busy { .. } | Refusal::Draining | Refusal::Standby { .. } => 1,
        }
    }

    /// The answer for `protocol`.
    pub fn response<B: RefusalBody>(&self, protocol: Protocol) -> http::Response<B> {
        if let Refusal::Standby { leader } = self {
            return crate::standby::response(leader.as_ref(), protocol);
        }
        let retry = http::HeaderValue::from(self.retry_after());
        match protocol {
            Protocol::Grpc => {
                let status = match self {
                    Refusal::Draining => tonic::Status::unavailable(self.message()),
                    _ => tonic::Status::resource_exhausted(self.message()),
                };
                let mut r: http::Response<B> = status.into_http();
                r.headers_mut().insert("retry-after", retry);
                r
            }
            Protocol::Http => {
                let code = match self {
                    Refusal::RateLimited { .. } => http::StatusCode::TOO_MANY_REQUESTS,
                    Refusal::Busy { .. } | Refusal::Draining | Refusal::Standby { .. } => {
                        http::StatusCode::SERVICE_UNAVAILABLE
                    }
                };
                let body = format!("{{\"error\":{}}}", json_string(&self.message()));
                let mut r = http::Response::new(B::text(body));
                *r.status_mut() = code;
                r.headers_mut().insert(http::header::RETRY_AFTER, retry);
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                r
            }
        }
    }
}

/// A JSON string literal for `s` (quotes and escapes), without serde_json.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A response body a refusal can be written into.
pub trait RefusalBody: Default + Send + 'static {
    /// A body holding `text`.
    fn text(text: String) -> Self;
}

impl RefusalBody for axum::body::Body {
    fn text(text: String) -> Self {
        axum::body::Body::from(text)
    }
}

impl RefusalBody for tonic::body::Body {
    fn text(text: String) -> Self {
        tonic::body::Body::new(text)
    }
}

/// Counters of what a [`Guard`] refused, for `/metrics`.
#[derive(Debug, Default)]
pub struct Refused {
    /// Over a client's rate.
    pub rate_limited: AtomicU64,
    /// Over `max_concurrent`.
    pub busy: AtomicU64,
    /// During the drain.
    pub draining: AtomicU64,
    /// On a standby (every call but health checks).
    pub standby: AtomicU64,
}

/// The guard of one listener: rate limits, the concurrency bound and (for
/// gRPC) the refusal of new calls while draining. A tower layer: tonic's
/// `Server::layer`, axum's `Router::layer`.
#[derive(Clone)]
pub struct Guard {
    inner: Arc<GuardState>,
}

struct GuardState {
    name: &'static str,
    protocol: Protocol,
    limiter: RateLimiter,
    in_flight: Arc<Semaphore>,
    client_of: ClientOf,
    draining: Option<CancellationToken>,
    /// Set on a standby: every call but health checks is refused naming
    /// the active instance.
    standby: Option<crate::standby::LeaderView>,
    refused: Refused,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("listener", &self.inner.name)
            .field("protocol", &self.inner.protocol)
            .field("limits", self.inner.limiter.settings())
            .finish_non_exhaustive()
    }
}

/// gRPC health checks are answered while draining (they say NOT_SERVING).
const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

impl Guard {
    /// A guard for the listener `name` (in logs and metrics) speaking
    /// `protocol`, with `settings`; `client_of` finds a request's credential.
    /// With `draining`, new calls other than gRPC health checks are refused
    /// (`UNAVAILABLE`) once it is cancelled.
    pub fn new(
        name: &'static str,
        protocol: Protocol,
        settings: LimitSettings,
        client_of: ClientOf,
        draining: Option<CancellationToken>,
    ) -> Self {
        Self::with_state(name, protocol, settings, client_of, draining, None)
    }

    fn with_state(
        name: &'static str,
        protocol: Protocol,
        settings: LimitSettings,
        client_of: ClientOf,
        draining: Option<CancellationToken>,
        standby: Option<crate::standby::LeaderView>,
    ) -> Self {
        let permits = usize::try_from(settings.max_concurrent).unwrap_or(usize::MAX);
        Self {
            inner: Arc::new(GuardState {
                name,
                protocol,
                limiter: RateLimiter::new(settings),
                in_flight: Arc::new(Semaphore::new(permits)),
                client_of,
                draining,
                standby,
                refused: Refused::default(),
            }),
        }
    }

    /// The guard of a standby's listener `name`: every call but gRPC
    /// health checks is refused with the active instance's address as
    /// `view` knows it (`crate::standby` says why a standby redirects
    /// rather than proxies).
    pub fn standby(
        name: &'static str,
        protocol: Protocol,
        view: crate::standby::LeaderView,
    ) -> Self {
        Self::with_state(
            name,
            protocol,
            LimitSettings::default(),
            Arc::new(|_| None),
            None,
            Some(view),
        )
    }

    /// What it refused so far.
    pub fn refused(&self) -> &Refused {
        &self.inner.refused
    }

    /// Prometheus samples of `custos_requests_refused_total{listener,reason}`
    /// (see [`metrics_text`] for the whole family).
    fn samples(&self) -> String {
        let r = &self.inner.refused;
        let name = self.inner.name;
        [
            ("rate_limited", &r.rate_limited),
            ("busy", &r.busy),
            ("draining", &r.draining),
            ("standby", &r.standby),
        ]
        .iter()
        .map(|(reason, n)| {
            format!(
                "custos_requests_refused_total{{listener=\"{name}\",reason=\"{reason}\"}} {}\n",
                n.load(Ordering::Relaxed)
            )
        })
        .collect()
    }

    /// Admits a request (returning the permit it holds while in flight) or
    /// refuses it.
    fn admit<B>(
        &self,
        req: &http::Request<B>,
        now: Instant,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, Refusal> {
        let s = &self.inner;
        let route = route_of(s.protocol, req);
        let is_health = route.starts_with(HEALTH_PREFIX);
        if !is_health && s.draining.as_ref().is_some_and(|d| d.is_cancelled()) {
            s.refused.draining.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::Draining);
        }
        if let Some(view) = s.standby.as_ref().filter(|_| !is_health) {
            s.refused.standby.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::Standby { leader: view.get() });
        }
        let client = match (s.client_of)(req.headers()) {
            Some(id) => format!("credential {id}"),
            None => match peer_addr(req.extensions()) {
                Some(ip) => format!("peer {ip}"),
                None => "peer unknown".to_owned(),
            },
        };
        if let Err(retry_after) = s.limiter.check(&client, &route, now) {
            s.refused.rate_limited.fetch_add(1, Ordering::Relaxed);
            let refusal = Refusal::RateLimited {
                client,
                route,
                retry_after,
            };
            tracing::debug!(listener = s.name, reason = %refusal.message(), "request refused");
            return Err(refusal);
        }
        Arc::clone(&s.in_flight).try_acquire_owned().map_err(|_| {
            s.refused.busy.fetch_add(1, Ordering::Relaxed);
            Refusal::Busy {
                limit: s.limiter.settings().max_concurrent,
            }
        })
    }
}

/// Prometheus text of what `guards` refused:
/// `custos_requests_refused_total{listener, reason}`.
pub fn metrics_text(guards: &[Guard]) -> String {
    let mut out = String::from(
        "# HELP custos_requests_refused_total Calls refused before they reached the service.\n\
         # TYPE custos_requests_refused_total counter\n",
    );
    for g in guards {
        out.push_str(&g.samples());
    }
    out
}

/// The route a request is counted under.
fn route_of<B>(protocol: Protocol, req: &http::Request<B>) -> String {
    match protocol {
        Protocol::Grpc => req.uri().path().to_owned(),
        Protocol::Http => match req.extensions().get::<axum::extract::MatchedPath>() {
            Some(p) => format!("{} {}", req.method(), p.as_str()),
            // Not a route: one bucket for every unknown path.
            None => format!("{} (no route)", req.method()),
        },
    }
}

/// The caller's IP address, from what the server recorded of the connection
/// (tonic's connect info, with or without TLS, or [`crate::http::PeerAddr`]).
pub fn peer_addr(ext: &http::Extensions) -> Option<IpAddr> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let addr: Option<SocketAddr> = ext
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|i| i.get_ref().remote_addr())
        .or_else(|| ext.get::<TcpConnectInfo>().and_then(|i| i.remote_addr()))
        .or_else(|| {
            ext.get::<axum::extract::ConnectInfo<crate::http::PeerAddr>>()
                .map(|c| c.0.0)
        });
    addr.map(|a| a.ip())
}

impl<S> tower::Layer<S> for Guard {
    type Service = Guarded<S>;
    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            inner,
            guard: self.clone(),
        }
    }
}

/// A service behind a [`Guard`].
#[derive(Clone, Debug)]
pub struct Guarded<S> {
    inner: S,
    guard: Guard,
}

impl<S, B, RB> tower::Service<http::Request<B>> for Guarded<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    RB: RefusalBody,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<RB>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        match self.guard.admit(&req, Instant::now()) {
            Ok(permit) => {
                let call = self.inner.call(req);
                Box::pin(async move {
                    let _permit = permit;
                    call.await
                })
            }
            Err(refusal) => {
                let answer = refusal.response(self.guard.inner.protocol);
                Box::pin(async move { Ok(answer) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const R: Rate = Rate {
        per_sec: 2,
        burst: 3,
    };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn bucket_gives_its_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::full(R, t0);
        for _ in 0..3 {
            b.take(R, t0).unwrap();
        }
        // Empty: the next token comes after 1/rate = 500 ms.
        assert_eq!(b.take(R, t0), Err(ms(500)));
        assert_eq!(b.take(R, t0 + ms(200)), Err(ms(300)));
        b.take(R, t0 + ms(500)).unwrap();
        assert_eq!(b.take(R, t0 + ms(500)), Err(ms(500)));
        // A refusal takes nothing: the wait only shrinks with time.
        assert_eq!(b.take(R, t0 + ms(999)), Err(ms(1)));
        b.take(R, t0 + ms(1000)).unwrap();
        // A long quiet period refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            b.take(R, later).unwrap();
        }
        assert!(b.take(R, later).is_err());
        assert!(!b.is_full(R, later));
        assert!(b.is_full(R, later + ms(1500)));
    }

    #[test]
    fn bucket_arithmetic_is_exact_and_rounds_waits_up() {
        let rate = Rate {
            per_sec: 3,
            burst: 1,
        };
        let t0 = Instant::now();
        let mut b = Bucket::full(rate, t0);
        b.take(rate, t0).unwrap();
        // 1/3 s is 333_333_333.3 ns: the wait is rounded up, never early.
        assert_eq!(b.take(rate, t0), Err(Duration::from_nanos(333_333_334)));
        assert!(
            b.take(rate, t0 + Duration::from_nanos(333_333_333))
                .is_err()
        );
        b.take(rate, t0 + Duration::from_nanos(333_333_334))
            .unwrap();
        // Sustained over 10 s, polled every ms: exactly 30 tokens (with room
        // for more than one, nothing accrued is lost at the cap).
        let roomy = Rate {
            per_sec: 3,
            burst: 2,
        };
        let mut b = Bucket::full(roomy, t0);
        b.take(roomy, t0).unwrap();
        b.take(roomy, t0).unwrap();
        let mut taken = 0;
        for step in 1..=10_000u64 {
            if b.take(roomy, t0 + ms(step)).is_ok() {
                taken += 1;
            }
        }
        assert_eq!(taken, 30);
        // A clock that goes backwards refills nothing and breaks nothing.
        let mut b = Bucket::full(rate, t0 + ms(10));
        b.take(rate, t0 + ms(10)).unwrap();
        assert!(b.take(rate, t0).is_err());
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(ms(1)), 1);
        assert_eq!(retry_after_secs(ms(1000)), 1);
        assert_eq!(retry_after_secs(ms(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(30)), 30);
    }

    #[test]
    fn limiter_keys_by_client_and_route() {
        let mut settings = LimitSettings {
            rate_per_sec: 1,
            burst: 2,
            ..LimitSettings::default()
        };
        settings.routes.insert(
            "/pkg.S/Slow".into(),
            Rate {
                per_sec: 1,
                burst: 1,
            },
        );
        settings.check("limits").unwrap();
        let l = RateLimiter::new(settings);
        let t0 = Instant::now();
        for _ in 0..2 {
            l.check("a", "/pkg.S/Fast", t0).unwrap();
        }
        assert_eq!(l.check("a", "/pkg.S/Fast", t0), Err(ms(1000)));
        // Another client, and the same client on another route, have their own.
        l.check("b", "/pkg.S/Fast", t0).unwrap();
        l.check("a", "/pkg.S/Slow", t0).unwrap();
        assert!(l.check("a", "/pkg.S/Slow", t0).is_err());
        l.check("a", "/pkg.S/Fast", t0 + ms(1000)).unwrap();
    }

    #[test]
    fn settings_are_checked_naming_the_field() {
        let bad = |f: fn(&mut LimitSettings)| {
            let mut s = LimitSettings::default();
            f(&mut s);
            s.check("limits").unwrap_err().to_string()
        };
        assert!(bad(|s| s.rate_per_sec = 0).contains("`limits.rate_per_sec`"));
        assert!(bad(|s| s.burst = 0).contains("`limits.burst`"));
        assert!(bad(|s| s.max_concurrent = 0).contains("`limits.max_concurrent`"));
        assert!(bad(|s| s.max_request_bytes = 10).contains("`limits.max_request_bytes`"));
        let e = bad(|s| {
            s.routes.insert(
                "CreateWithdrawal".into(),
                Rate {
                    per_sec: 1,
                    burst: 1,
                },
            );
        });
        assert!(e.contains("limits.routes.\"CreateWithdrawal\""), "{e}");
        LimitSettings::default().check("limits").unwrap();
        // A table sets some fields; the daemon's defaults fill the rest.
        let table: LimitsConfig = toml::from_str("burst = 5\n").unwrap();
        let s = table.resolve(LimitSettings::default(), "limits").unwrap();
        assert_eq!((s.rate_per_sec, s.burst), (100, 5));
        let table: LimitsConfig = toml::from_str("burst = 0\n").unwrap();
        let e = table
            .resolve(LimitSettings::default(), "limits")
            .unwrap_err();
        assert!(e.to_string().contains("`limits.burst`"), "{e}");
    }

    #[test]
    fn refusals_carry_retry_after_in_both_protocols() {
        let r = Refusal::RateLimited {
            client: "credential tok1".into(),
            route: "/custos.v1.Custody/GetWithdrawal".into(),
            retry_after: ms(1500),
        };
        let g: http::Response<tonic::body::Body> = r.response(Protocol::Grpc);
        assert_eq!(g.headers()["retry-after"], "2");
        assert_eq!(g.headers()["grpc-status"], "8"); // RESOURCE_EXHAUSTED
        let h: http::Response<axum::body::Body> = r.response(Protocol::Http);
        assert_eq!(h.status(), http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(h.headers()[http::header::RETRY_AFTER], "2");
        let d: http::Response<tonic::body::Body> = Refusal::Draining.response(Protocol::Grpc);
        assert_eq!(d.headers()["grpc-status"], "14"); // UNAVAILABLE
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
