//! The approval web app on the coordinator's HTTPS port, under `/app/`:
//! treasury approvers sign in with their passkey, see pending withdrawals
//! decoded from the statement they sign, and approve, reject or cancel
//! with a WebAuthn assertion over it, which the coordinator stores and
//! every signer verifies.
//!
//! # Design
//! The app is static files built into the binary ([`assets`]) talking to
//! the same REST/JSON routes as any client ([`super::custody`]); its own
//! routes only sign in ([`signin`]) and tell pages that something changed
//! ([`live`]). An app session ([`sessions`]) acts as its approver with the
//! approver role, and can do nothing its passkey does not prove again:
//! every verdict is an assertion over the exact statement. Served by the
//! coordinator rather than a separate service because it needs nothing
//! but the custody API on the same origin, and one origin means no CORS,
//! no second TLS identity and cookies scoped to the API they unlock.
//!
//! Every answer under `/app` carries [`SECURITY_HEADERS`]: scripts, styles,
//! connections and images from this origin only, no framing, no plugins,
//! no referrer.

pub mod assets;
pub mod guard;
pub mod live;
pub mod reports;
pub mod sessions;
pub mod signin;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, HeaderValue};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use crate::custody::CustodyApi;
use sessions::Sessions;

/// The Content-Security-Policy of every app answer.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'";

/// Headers on every answer under `/app`.
pub const SECURITY_HEADERS: &[(&str, &str)] = &[
    ("content-security-policy", CSP),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cache-control", "no-store"),
];

/// The app's settings (`[app]` in the config).
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// How long a sign-in lasts.
    pub session_ttl: Duration,
    /// Cancelled when the coordinator stops (ends live-update streams).
    pub stop: CancellationToken,
}

/// What the app's routes need.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The custody API (the policy in force, the engine's changes).
    pub api: CustodyApi,
    /// The coordinator's pool (the reports page reads reports).
    pub pool: sqlx::AnyPool,
    /// Challenges and sessions.
    pub sessions: Arc<Sessions>,
    /// See [`AppConfig::stop`].
    pub stop: CancellationToken,
}

async fn security_headers(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    for (k, v) in SECURITY_HEADERS {
        headers.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    response
}

/// The app's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/app", get(assets::to_index))
        .route("/app/", get(assets::index))
        .route("/app/session/challenge", post(signin::challenge))
        .route("/app/session", post(signin::sign_in).get(signin::current))
        .route("/app/session/logout", post(signin::logout))
        .route("/app/events", get(live::events))
        .route("/app/reports/{name}", get(reports::json))
        .route("/app/reports/{name}/csv", get(reports::csv))
        .route("/app/{file}", get(assets::asset))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(state)
}
