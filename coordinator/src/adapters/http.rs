//! REST routes on the coordinator's HTTP port, next to `/healthz` and
//! `/metrics`. Every route takes `Authorization: Bearer <API token>` (the
//! same tokens as the gRPC API) and answers JSON; errors are
//! `{"error": "..."}` with 400/401/403/404/503.
//!
//! | route | roles | what |
//! |---|---|---|
//! | `POST /v1/webhooks` `{url, secret}` | backend | registers a webhook for the caller's events (secret ≥ 16 bytes); an admin may add `client_id` (another client's events) and `allow_private: true` (an internal destination the deployment's policy refuses) |
//! | `GET /v1/webhooks` | backend | the caller's webhooks (admin: all), secrets left out |
//! | `GET /v1/webhooks/dead-letters` | backend | dead-lettered deliveries of the caller's events (admin: all) |
//! | `POST /v1/webhooks/redrive/{event_id}` | backend | puts an event's dead letters back to pending |
//! | `GET /v1/reports/{name}?from=&to=&group=` | auditor | a report ([`super::reports`]) |
//! | `GET /v1/ledger/balances[?wallet=]` | auditor | account balances |
//! | `GET /v1/ledger/journal?wallet=` | auditor | a wallet's journal entries |
//! | `GET /v1/ledger/invariants` | auditor | invariant violations (empty when consistent) |
//! | `GET /v1/ledger/exceptions` | auditor | postings the ledger refused |
//! | `POST /v1/ledger/deposits` `{wallet, asset, amount, reference}` | admin | records a deposit (idempotent per reference) |
//! | `POST /v1/ledger/overdrafts` `{wallet, asset, limit}` | admin | sets a wallet's overdraft limit (`"unlimited"`, or base units; `"0"` = none) |
//! | `GET /v1/ledger/reconcile?chain=eth[&rpc=URL]` | auditor (`rpc`: admin) | ledger vs chain balances |
//!
//! Every admin call is audited: a call to an admin route (allowed or not)
//! and any call made with an admin token is logged under the target
//! `custos::audit` with the client, the token id, the route and the answer.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::State;

use super::extract::{JsonBody, PathParams, QueryParams};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::AnyPool;
use tokio::sync::Notify;

use super::reports::{self, Group, ReportQuery};
use super::routes::{Routes, Verb};
use crate::auth::{Authenticator, Identity, Role};
use crate::error::CoordError;

/// What the routes need.
#[derive(Clone)]
pub struct HttpState {
    /// The coordinator's pool.
    pub pool: AnyPool,
    /// The coordinator's database (wallet keys for reconciliation).
    pub db: crate::db::Db,
    /// API tokens.
    pub auth: Authenticator,
    /// Nudges the event dispatcher after a redrive.
    pub notify: Arc<Notify>,
    /// `[ledger] eth_rpc_url`.
    pub eth_rpc_url: Option<String>,
    /// The configured chains (reconciliation reads UTXO wallets' coins).
    pub chains: Arc<crate::chain::Chains>,
    /// Which webhook destinations are accepted (`[events]`).
    pub webhook_destinations: custos_events::DestinationPolicy,
}

/// An error answer: one a route decided, or a domain error, mapped at the
/// edge ([`crate::edge`]) with the signers it names.
#[derive(Debug)]
pub enum ApiError {
    /// A status and message the route chose.
    Route(StatusCode, String),
    /// A domain error.
    Domain(CoordError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Route(code, message) => {
                (code, Json(json!({ "error": message }))).into_response()
            }
            ApiError::Domain(e) => {
                let mut headers = HeaderMap::new();
                for (key, value) in crate::edge::culprit_metadata(&e) {
                    // A value a header cannot carry stays in the body.
                    if let Ok(v) = value.parse() {
                        headers.insert(key, v);
                    }
                }
                (
                    crate::edge::http_status(&e),
                    headers,
                    Json(crate::edge::http_body(&e)),
                )
                    .into_response()
            }
        }
    }
}

impl From<CoordError> for ApiError {
    fn from(e: CoordError) -> Self {
        ApiError::Domain(e)
    }
}

fn storage(e: impl std::fmt::Display) -> ApiError {
    ApiError::Route(StatusCode::SERVICE_UNAVAILABLE, format!("storage: {e}"))
}

fn bad_request(e: impl std::fmt::Display) -> ApiError {
    ApiError::Route(StatusCode::BAD_REQUEST, e.to_string())
}

type ApiResult = Result<Json<Value>, ApiError>;

/// Resolves the bearer token to an identity with one of `roles` (admins have all).
fn identify(state: &HttpState, headers: &HeaderMap, roles: &[Role]) -> Result<Identity, ApiError> {
    let id = authenticate(&state.auth, headers)?;
    if id.is_admin() || roles.iter().any(|r| id.roles.contains(r)) {
        Ok(id)
    } else {
        Err(ApiError::Route(
            StatusCode::FORBIDDEN,
            format!("client {} lacks the role ({roles:?})", id.id),
        ))
    }
}

/// The identity the bearer token proves (401 without a valid one): the
/// same tokens and checks as the gRPC API.
pub(crate) fn authenticate(
    auth: &Authenticator,
    headers: &HeaderMap,
) -> Result<Identity, ApiError> {
    let mut req = tonic::Request::new(());
    if let Some(v) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
    {
        req.metadata_mut().insert("authorization", v);
    }
    let req = auth
        .authenticate(req)
        .map_err(|s| ApiError::Route(StatusCode::UNAUTHORIZED, s.message().to_owned()))?;
    crate::auth::identity(&req)
        .map_err(|s| ApiError::Route(StatusCode::UNAUTHORIZED, s.message().to_owned()))
}

/// Routes only an admin may call (and `rpc=` on reconcile).
const ADMIN_ROUTES: &[&str] = &["POST /v1/ledger/deposits", "POST /v1/ledger/overdrafts"];

/// Whether a call needs the admin role: an admin route, or a reconciliation
/// naming its own RPC endpoint.
fn is_admin_call(route: &str, query: Option<&str>) -> bool {
    ADMIN_ROUTES.contains(&route)
        || (route == "GET /v1/ledger/reconcile"
            && query.is_some_and(|q| {
                q.split('&')
                    .any(|kv| kv.starts_with("rpc=") && kv.len() > "rpc=".len())
            }))
}

/// Logs every admin call under the target `custos::audit`: calls to an
/// admin route, whoever makes them (refusals included), and every call made
/// with an admin token; with the client, the token id (never the token),
/// the route and the status answered.
pub(crate) async fn audit_admin_calls(
    State(auth): State<Authenticator>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = match req.extensions().get::<axum::extract::MatchedPath>() {
        Some(p) => format!("{} {}", req.method(), p.as_str()),
        None => format!("{} {}", req.method(), req.uri().path()),
    };
    let admin_route = is_admin_call(&route, req.uri().query());
    let caller = auth.peek(req.headers());
    let by_admin = caller.as_ref().is_some_and(Identity::is_admin);
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    if admin_route || by_admin {
        let (client, token_id) = match &caller {
            Some(id) => (id.id.as_str(), id.token_id.as_deref().unwrap_or("-")),
            None => ("(unauthenticated)", "-"),
        };
        tracing::info!(
            target: "custos::audit",
            client,
            token_id,
            admin = by_admin,
            route = %route,
            status = response.status().as_u16(),
            ms = started.elapsed().as_millis() as u64,
            "admin call"
        );
    }
    response
}

/// The adapter routes, not yet given their state (the table is what the
/// OpenAPI document is checked against).
pub fn routes() -> Routes<HttpState> {
    Routes::default()
        .add(Verb::Post, "/v1/webhooks", register_webhook)
        .add(Verb::Get, "/v1/webhooks", list_webhooks)
        .add(Verb::Get, "/v1/webhooks/dead-letters", dead_letters)
        .add(Verb::Post, "/v1/webhooks/redrive/{event_id}", redrive)
        .add(Verb::Get, "/v1/reports/{name}", report)
        .add(Verb::Get, "/v1/ledger/balances", balances)
        .add(Verb::Get, "/v1/ledger/journal", journal)
        .add(Verb::Get, "/v1/ledger/invariants", invariants)
        .add(Verb::Get, "/v1/ledger/exceptions", exceptions)
        .add(Verb::Post, "/v1/ledger/deposits", deposit)
        .add(Verb::Post, "/v1/ledger/overdrafts", set_overdraft)
        .add(Verb::Get, "/v1/ledger/reconcile", reconcile)
}

/// The adapter routes.
pub fn router(state: HttpState) -> Router {
    let auth = state.auth.clone();
    routes()
        .into_router()
        .route_layer(axum::middleware::from_fn_with_state(
            auth,
            audit_admin_calls,
        ))
        .with_state(state)
}

#[cfg(test)]
mod audit_tests {
    use super::is_admin_call;

    #[test]
    fn admin_calls_are_recognised() {
        assert!(is_admin_call("POST /v1/ledger/deposits", None));
        assert!(is_admin_call("POST /v1/ledger/overdrafts", None));
        assert!(is_admin_call(
            "GET /v1/ledger/reconcile",
            Some("chain=eth&rpc=http://x")
        ));
        assert!(!is_admin_call(
            "GET /v1/ledger/reconcile",
            Some("chain=eth&rpc=")
        ));
        assert!(!is_admin_call(
            "GET /v1/ledger/reconcile",
            Some("chain=eth")
        ));
        assert!(!is_admin_call("GET /v1/ledger/balances", None));
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookBody {
    url: String,
    secret: String,
    /// Admin only: allow this webhook a loopback, private or link-local
    /// destination (an internal receiver) that the deployment's policy
    /// refuses.
    #[serde(default)]
    allow_private: bool,
    /// Admin only: the client whose events the webhook receives (default:
    /// the caller).
    #[serde(default)]
    client_id: Option<String>,
}

async fn register_webhook(
    State(s): State<HttpState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<WebhookBody>,
) -> ApiResult {
    let id = identify(&s, &headers, &[Role::Backend])?;
    if (body.allow_private || body.client_id.is_some()) && !id.is_admin() {
        return Err(ApiError::Route(
            StatusCode::FORBIDDEN,
            format!(
                "allow_private, client_id: only an admin may allow a webhook an internal destination or register one for another client (client {})",
                id.id
            ),
        ));
    }
    let owner = body.client_id.clone().unwrap_or_else(|| id.id.clone());
    let mut conn = s.pool.acquire().await.map_err(storage)?;
    let w = custos_events::register_webhook(
        &mut conn,
        &owner,
        &body.url,
        &body.secret,
        s.webhook_destinations,
        body.allow_private,
    )
    .await
    .map_err(|e| match e {
        custos_events::EventsError::Db(e) => storage(e),
        other => bad_request(other),
    })?;
    tracing::info!(
        webhook = w.id,
        client = %w.client_id,
        allow_private = w.allow_private,
        by = %id.id,
        "webhook registered"
    );
    Ok(Json(json!({
        "id": w.id, "client_id": w.client_id, "url": w.url,
        "active": w.active, "from_outbox_id": w.from_outbox_id,
        "allow_private": w.allow_private,
    })))
}

async fn list_webhooks(State(s): State<HttpState>, headers: HeaderMap) -> ApiResult {
    let id = identify(&s, &headers, &[Role::Backend])?;
    let mut conn = s.pool.acquire().await.map_err(storage)?;
    let hooks: Vec<Value> = custos_events::webhooks(&mut conn)
        .await
        .map_err(storage)?
        .into_iter()
        .filter(|w| id.is_admin() || w.client_id == id.id)
        .map(|w| {
            json!({
                "id": w.id, "client_id": w.client_id, "url": w.url,
                "active": w.active, "from_outbox_id": w.from_outbox_id,
                "allow_private": w.allow_private,
            })
        })
        .collect();
    Ok(Json(json!({ "webhooks": hooks })))
}

async fn dead_letters(State(s): State<HttpState>, headers: HeaderMap) -> ApiResult {
    let id = identify(&s, &headers, &[Role::Backend])?;
    let mut conn = s.pool.acquire().await.map_err(storage)?;
    let letters: Vec<Value> = custos_events::dead_letters(&mut conn)
        .await
        .map_err(storage)?
        .into_iter()
        .filter(|d| id.is_admin() || d.event.client_id == id.id)
        .map(|d| {
            json!({
                "event_id": d.event.event_id,
                "event_type": d.event.event_type,
                "aggregate_id": d.event.aggregate_id,
                "client_id": d.event.client_id,
                "sink": d.sink,
                "attempts": d.attempts,
                "last_error": d.last_error,
                "dead_lettered_at_ms": d.dead_lettered_at_ms,
            })
        })
        .collect();
    Ok(Json(json!({ "dead_letters": letters })))
}

async fn redrive(
    State(s): State<HttpState>,
    headers: HeaderMap,
    PathParams(event_id): PathParams<String>,
) -> ApiResult {
    let id = identify(&s, &headers, &[Role::Backend])?;
    let mut conn = s.pool.acquire().await.map_err(storage)?;
    let owner: Option<(String,)> =
        sqlx::query_as("SELECT client_id FROM outbox WHERE event_id = $1")
            .bind(&event_id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(storage)?;
    match owner {
        Some((client,)) if id.is_admin() || client == id.id => {}
        // Another client's event is reported as missing, not as forbidden.
        _ => {
            return Err(ApiError::Route(
                StatusCode::NOT_FOUND,
                format!("no event {event_id}"),
            ));
        }
    }
    let revived = custos_events::redrive(&mut conn, &event_id)
        .await
        .map_err(storage)?;
    s.notify.notify_one();
    Ok(Json(json!({ "event_id": event_id, "revived": revived })))
}

#[derive(Deserialize, Default)]
struct ReportParams {
    from: Option<String>,
    to: Option<String>,
    group: Option<String>,
}

/// Builds a report query from `from`/`to`/`group` strings.
pub fn report_query(
    from: Option<&str>,
    to: Option<&str>,
    group: Option<&str>,
) -> Result<ReportQuery, CoordError> {
    Ok(ReportQuery {
        from_ms: match from.filter(|s| !s.is_empty()) {
            Some(f) => reports::parse_bound(f, false)?,
            None => 0,
        },
        to_ms: match to.filter(|s| !s.is_empty()) {
            Some(t) => reports::parse_bound(t, true)?,
            None => i64::MAX,
        },
        group: group
            .filter(|s| !s.is_empty())
            .map(Group::parse)
            .transpose()?,
    })
}

async fn report(
    State(s): State<HttpState>,
    headers: HeaderMap,
    PathParams(name): PathParams<String>,
    QueryParams(p): QueryParams<ReportParams>,
) -> ApiResult {
    identify(&s, &headers, &[Role::Auditor])?;
    let q = report_query(p.from.as_deref(), p.to.as_deref(), p.group.as_deref())?;
    let mut conn = s.pool.acquire().await.map_err(storage)?;
    let r = reports::run(&mut conn, &name, &q).await?;
    Ok(Json(serde_json::to_value(r).map_err(storage)?))
}

#[derive(Deserialize)]
struct WalletParam {
    wallet: Option<String>,
}

fn ledger_err(e: custos_ledger::LedgerError) -> ApiError {
    match e {
        custos_ledger::LedgerError::Db(e) => storage(e),
        other => bad_request(other),
    }
}

async fn balances(
    State(s): State<HttpState>,
    headers: HeaderMap,
    QueryParams(p): QueryParams<WalletParam>,
) -> ApiResult {
    identify(&s, &headers, &[Role::Auditor])?;
    let mut conn = s.pool.acquire().await.map_err(storage)?;
    let b = match p.wallet.as_deref() {
        Some(w) => custos_ledger::wallet_balances(&mut conn, w).await,
        None => custos_ledger::balances(&mut conn).await,
    }
    .map_err(ledger_err)?;
    let rows: Vec<Value> = b
        .into_iter()
        .map(|b| {
            json!({
                "wallet": b.account.wallet, "asset": b.account.asset,
                "kind": b.account.kind.as_str(), "amount": b.amount.to_string(),
            })
        })
        .collect();
    Ok(Json(json!({ "balances": rows })))
}

async fn journal(
    State(s): State<HttpState>,
    headers: HeaderMap,
    QueryParams(p): QueryParams<WalletParam>,
) -> ApiResult {
    identify(&s, &headers, &[Role::Auditor])?;
    let wallet = p.wallet.ok_or_else(|| bad_request("wallet: required"))?;
    let mut conn = s.pool.acquire().await.map_err(storage)?;
    let entries = custos_ledger::journal(&mut conn, &wallet)
        .await
        .map_err(ledger_err)?;
    let rows: Vec<Value> = entries
        .into_iter()
        .map(|e| {
            let postings: Vec<Value> = e
                .postings
                .iter()
                .map(|p| {
                    json!({
                        "wallet": p.account.wallet, "asset": p.account.asset,
                        "kind": p.account.kind.as_str(), "amount": p.amount.to_string(),
                    })
                })
                .collect();
            json!({
                "id": e.id, "reference": e.reference, "kind": e.kind.as_str(),
                "wallet": e.wallet, "created_at_ms": e.created_at_ms, "postings": postings,
            })
        })
        .collect();
    Ok(Json(json!({ "entries": rows })))
}

async fn invariants(State(s): State<HttpState>, headers: HeaderMap) -> ApiResult {
    identify(&s, &headers, &[Role::Auditor])?;
    let mut conn = s.pool.acquire().await.map_err(storage)?;
    let v = custos_ledger::check_invariants(&mut conn)
        .await
        .map_err(ledger_err)?;
    Ok(Json(json!({ "ok": v.is_empty(), "violations": v })))
}

async fn exceptions(State(s): State<HttpState>, headers: HeaderMap) -> ApiResult {
    identify(&s, &headers, &[Role::Auditor])?;
    let mut conn = s.pool.acquire().await.map_err(storage)?;
    let v = super::ledger::exceptions(&mut conn).await?;
    Ok(Json(json!({ "exceptions": v })))
}

#[derive(Deserialize)]
struct DepositBody {
    wallet: String,
    asset: String,
    amount: String,
    reference: String,
}

async fn deposit(
    State(s): State<HttpState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<DepositBody>,
) -> ApiResult {
    let id = identify(&s, &headers, &[Role::Admin])?;
    let amount: u128 = body
        .amount
        .trim()
        .parse()
        .map_err(|_| bad_request("amount: not an integer in base units"))?;
    if body.reference.trim().is_empty() || body.wallet.is_empty() || body.asset.is_empty() {
        return Err(bad_request("wallet, asset and reference are required"));
    }
    let mut tx = s.pool.begin().await.map_err(storage)?;
    let posted =
        custos_ledger::deposit(&mut tx, &body.wallet, &body.asset, amount, &body.reference)
            .await
            .map_err(ledger_err)?;
    tx.commit().await.map_err(storage)?;
    tracing::info!(by = %id.id, wallet = %body.wallet, asset = %body.asset, amount = %amount,
        reference = %body.reference, replayed = posted.replayed, "ledger deposit recorded");
    Ok(Json(
        json!({ "entry_id": posted.entry_id, "replayed": posted.replayed }),
    ))
}

#[derive(Deserialize)]
struct OverdraftBody {
    wallet: String,
    asset: String,
    limit: String,
}

async fn set_overdraft(
    State(s): State<HttpState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<OverdraftBody>,
) -> ApiResult {
    let id = identify(&s, &headers, &[Role::Admin])?;
    let limit = super::ledger::parse_overdraft(&body.limit)
        .map_err(|e| bad_request(format!("limit: {e}")))?;
    if body.wallet.is_empty() || body.asset.is_empty() {
        return Err(bad_request("wallet and asset are required"));
    }
    let mut conn = s.pool.acquire().await.map_err(storage)?;
    custos_ledger::set_overdraft_limit(&mut conn, &body.wallet, &body.asset, limit)
        .await
        .map_err(ledger_err)?;
    tracing::info!(by = %id.id, wallet = %body.wallet, asset = %body.asset, limit = %body.limit,
        "ledger overdraft limit set");
    Ok(Json(json!({
        "wallet": body.wallet, "asset": body.asset, "limit": limit.to_string(),
    })))
}

#[derive(Deserialize)]
struct ReconcileParams {
    chain: Option<String>,
    rpc: Option<String>,
}

/// EVM chain names a `chain=eth` reconciliation covers.
fn evm_chain(requested: &str, key_chain: &str) -> bool {
    match requested {
        "eth" | "evm" => matches!(
            key_chain,
            "ethereum" | "anvil" | "sepolia" | "holesky" | "eth"
        ),
        other => other == key_chain,
    }
}

/// The EVM wallets on `chain` ("eth": every EVM chain) and their balances
/// at the RPC endpoint (`rpc`, admins only, else `[ledger] eth_rpc_url`).
async fn evm_holdings(
    s: &HttpState,
    id: &Identity,
    chain: &str,
    rpc: Option<String>,
) -> Result<
    (
        &'static str,
        Vec<(String, String)>,
        Vec<custos_ledger::OnchainBalance>,
    ),
    ApiError,
> {
    // The coordinator fetches the URL: only admins may name one.
    let url = match rpc.filter(|u| !u.is_empty()) {
        Some(u) if id.is_admin() => u,
        Some(_) => {
            return Err(ApiError::Route(
                StatusCode::FORBIDDEN,
                "rpc: only an admin may name an RPC endpoint; configure [ledger] eth_rpc_url"
                    .into(),
            ));
        }
        // The chain's own endpoint when it is a configured EVM chain.
        None => s
            .chains
            .evm(chain)
            .map(|c| c.settings.rpc_url.clone())
            .or_else(|| s.eth_rpc_url.clone())
            .ok_or_else(|| {
                bad_request(
                    "rpc: no RPC endpoint (pass rpc=URL as admin, configure [ledger] eth_rpc_url, or name a configured EVM chain)",
                )
            })?,
    };
    let rpc = custos_chains::evm::rpc::EvmRpc::new(custos_chains::evm::rpc::RpcConfig::new(&url))
        .map_err(bad_request)?;
    let native = "ETH";
    let keys = s.db.keys().await?;
    let mut wallets = Vec::new();
    let mut onchain = Vec::new();
    for k in keys {
        if k.state != "ready" || !evm_chain(chain, &k.chain) {
            continue;
        }
        let Some(addr) = k.address.clone() else {
            continue;
        };
        // The wallet holds what its own address and every derived deposit
        // address hold: deposits to either are credited to the wallet.
        let mut addresses = vec![addr.clone()];
        addresses.extend(
            crate::derived::list(&s.db, &k.key_id)
                .await?
                .into_iter()
                .map(|d| d.address),
        );
        let mut amount: u128 = 0;
        for a in &addresses {
            let parsed = custos_chains::evm::address::parse_address(a).map_err(|e| {
                ApiError::Route(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("wallet {} address {a}: {e}", k.key_id),
                )
            })?;
            let wei = rpc.balance(parsed).await.map_err(|e| {
                ApiError::Route(
                    StatusCode::BAD_GATEWAY,
                    format!("balance of {} ({a}): {e}", k.key_id),
                )
            })?;
            amount = u128::try_from(wei)
                .ok()
                .and_then(|w| amount.checked_add(w))
                .ok_or_else(|| {
                    ApiError::Route(
                        StatusCode::BAD_GATEWAY,
                        format!("balance of {} exceeds 128 bits", k.key_id),
                    )
                })?;
        }
        onchain.push(custos_ledger::OnchainBalance {
            wallet: k.key_id.clone(),
            asset: native.into(),
            amount,
        });
        wallets.push((k.key_id, addr));
    }
    Ok((native, wallets, onchain))
}

async fn reconcile(
    State(s): State<HttpState>,
    headers: HeaderMap,
    QueryParams(p): QueryParams<ReconcileParams>,
) -> ApiResult {
    let id = identify(&s, &headers, &[Role::Auditor])?;
    let chain = p.chain.unwrap_or_else(|| "eth".into());
    let (native, wallets, onchain) = match s.chains.utxo_holdings(&chain).await {
        // A UTXO chain: the wallets' coins as its node lists them.
        Some(holdings) => {
            let (native, holdings) = holdings.map_err(|e| {
                ApiError::Route(StatusCode::BAD_GATEWAY, format!("chain {chain}: {e}"))
            })?;
            let onchain = holdings
                .iter()
                .map(|h| custos_ledger::OnchainBalance {
                    wallet: h.wallet.clone(),
                    asset: native.into(),
                    amount: u128::from(h.amount),
                })
                .collect();
            let wallets = holdings
                .into_iter()
                .map(|h| (h.wallet, h.address))
                .collect();
            (native, wallets, onchain)
        }
        None => evm_holdings(&s, &id, &chain, p.rpc).await?,
    };
    let wallet_ids: BTreeSet<&str> = wallets.iter().map(|(w, _)| w.as_str()).collect();
    let mut conn = s.pool.acquire().await.map_err(storage)?;
    let all = custos_ledger::balances(&mut conn)
        .await
        .map_err(ledger_err)?;
    let mut skipped = BTreeSet::new();
    let ledger: Vec<custos_ledger::Balance> = all
        .into_iter()
        .filter(|b| wallet_ids.contains(b.account.wallet.as_str()))
        .filter(|b| {
            let native_asset = b.account.asset == native;
            if !native_asset {
                skipped.insert(format!("{}/{}", b.account.wallet, b.account.asset));
            }
            native_asset
        })
        .collect();
    let diffs = custos_ledger::reconcile(&ledger, &onchain);
    let mut rows = Vec::new();
    for (wallet, address) in &wallets {
        let holding = |kind: custos_ledger::AccountKind| -> i128 {
            ledger
                .iter()
                .filter(|b| &b.account.wallet == wallet && b.account.kind == kind)
                .map(|b| b.amount)
                .sum()
        };
        let available = holding(custos_ledger::AccountKind::Available);
        let reserved = holding(custos_ledger::AccountKind::Reserved);
        let chain_amount = onchain
            .iter()
            .find(|o| &o.wallet == wallet)
            .map_or(0, |o| o.amount);
        let ledger_total = available.saturating_add(reserved);
        let delta = i128::try_from(chain_amount)
            .ok()
            .and_then(|c| c.checked_sub(ledger_total));
        rows.push(json!({
            "wallet": wallet, "address": address, "asset": native,
            "ledger": ledger_total.to_string(), "reserved": reserved.to_string(),
            "onchain": chain_amount.to_string(),
            "delta": delta.map(|d| d.to_string()),
            "matches": delta == Some(0),
        }));
    }
    let differences: Vec<Value> = diffs
        .iter()
        .map(|d| {
            json!({
                "wallet": d.wallet, "asset": d.asset, "ledger": d.ledger.to_string(),
                "reserved": d.reserved.to_string(),
                "onchain": d.onchain.map(|o| o.to_string()),
                "delta": d.delta().map(|x| x.to_string()),
            })
        })
        .collect();
    Ok(Json(json!({
        "chain": chain,
        "ok": differences.is_empty(),
        "wallets": rows,
        "differences": differences,
        "skipped": skipped,
    })))
}
