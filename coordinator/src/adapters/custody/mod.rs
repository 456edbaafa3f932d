//! The custody API's REST/JSON face on the HTTP port, for the approval web
//! app and for backends that cannot speak gRPC: the same calls as the
//! gRPC service ([`crate::custody::CustodyApi`]), so the same roles, the
//! same validation and the same errors (mapped at the edge,
//! [`crate::edge`]: `{error, culprit, waiting_for, subject}`). Callers
//! authenticate with `Authorization: Bearer <API token>`, as on the other
//! `/v1` routes, or, in the approval app, with an approver's session cookie
//! (approver role only, CSRF token and origin checked on every POST: see
//! [`caller`]). Described by the OpenAPI document ([`super::openapi`]).
//!
//! | route | roles | what |
//! |---|---|---|
//! | `POST /v1/withdrawals` | backend | request a withdrawal (idempotent per `idempotency_key`) |
//! | `GET /v1/withdrawals?wallet=&state=&initiator=&page_size=&page_token=` | backend (own), approver, auditor | a page of withdrawals |
//! | `GET /v1/withdrawals/pending?approver=` | approver, auditor | awaiting approvals or time-locked |
//! | `GET /v1/withdrawals/{id}` | backend (own), approver, auditor | one withdrawal |
//! | `POST /v1/withdrawals/{id}/approvals` | approver | a signed verdict (Ed25519 or passkey) |
//! | `POST /v1/withdrawals/{id}/cancel` | backend (own) | cancel before signing |
//! | `GET /v1/wallets`, `GET /v1/wallets/{id}` | backend, approver, auditor | ready wallets |
//! | `GET /v1/address-book?chain=` | backend, approver, auditor | the address book in force |
//! | `GET /v1/audit/checkpoint` | auditor, approver, backend | latest signed checkpoint |
//! | `GET /v1/audit/entries/{index}` | auditor | one log entry |
//! | `GET /v1/audit/proofs/inclusion?index=&size=` | auditor | an inclusion proof |
//!
//! Byte fields (statements, transactions, digests, signatures, proof
//! hashes) are lowercase hex; amounts are decimal strings of base units,
//! with `amount_human` for display.

mod address_book;
mod audit_log;
pub mod caller;
mod wallets;
mod withdrawals;

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;

use super::app::sessions::Sessions;
use super::http::ApiError;
use super::routes::{Routes, Verb};
use crate::auth::Authenticator;
use crate::custody::CustodyApi;

/// What the custody routes need.
#[derive(Clone, Debug)]
pub struct CustodyState {
    /// The custody API (the calls the gRPC service makes).
    pub api: CustodyApi,
    /// API tokens.
    pub auth: Authenticator,
    /// The approval app's approver sessions.
    pub sessions: Arc<Sessions>,
}

/// A 400 naming `field`.
fn bad_field(field: &str, problem: impl std::fmt::Display) -> ApiError {
    ApiError::Route(StatusCode::BAD_REQUEST, format!("{field}: {problem}"))
}

/// Decodes the hex `value` of `field` (empty: no bytes).
fn hex_field(field: &str, value: &str) -> Result<Vec<u8>, ApiError> {
    hex::decode(value.trim()).map_err(|e| bad_field(field, format!("not hex ({e})")))
}

/// The custody routes, not yet given their state.
pub fn routes() -> Routes<CustodyState> {
    Routes::default()
        .add(Verb::Post, "/v1/withdrawals", withdrawals::create)
        .add(Verb::Get, "/v1/withdrawals", withdrawals::list)
        .add(Verb::Get, "/v1/withdrawals/pending", withdrawals::pending)
        .add(Verb::Get, "/v1/withdrawals/{id}", withdrawals::get)
        .add(
            Verb::Post,
            "/v1/withdrawals/{id}/approvals",
            withdrawals::submit_approval,
        )
        .add(
            Verb::Post,
            "/v1/withdrawals/{id}/cancel",
            withdrawals::cancel,
        )
        .add(Verb::Get, "/v1/wallets", wallets::list)
        .add(Verb::Get, "/v1/wallets/{id}", wallets::get)
        .add(Verb::Get, "/v1/address-book", address_book::list)
        .add(Verb::Get, "/v1/audit/checkpoint", audit_log::checkpoint)
        .add(Verb::Get, "/v1/audit/entries/{index}", audit_log::entry)
        .add(
            Verb::Get,
            "/v1/audit/proofs/inclusion",
            audit_log::inclusion_proof,
        )
}

/// The custody routes over `state`; calls made with an admin token are
/// logged like the other adapter routes' ([`super::http`]).
pub fn router(state: CustodyState) -> Router {
    let auth = state.auth.clone();
    routes()
        .into_router()
        .route_layer(axum::middleware::from_fn_with_state(
            auth,
            super::http::audit_admin_calls,
        ))
        .with_state(state)
}
