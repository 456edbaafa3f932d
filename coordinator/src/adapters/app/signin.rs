//! Passkey sign-in to the approval app: a one-time challenge, a WebAuthn
//! assertion over it verified against the approver's passkey in the policy
//! in force (the same check every signer makes on approvals,
//! [`custos_policy::verify_passkey_assertion`]), then a session cookie.
//!
//! | route | what |
//! |---|---|
//! | `POST /app/session/challenge` | a one-time challenge (hex), the RP ID, its lifetime |
//! | `POST /app/session` `{credential_id, authenticator_data, client_data_json, signature}` (hex) | signs in: sets the session cookie, answers the approver, its CSRF token and passkeys |
//! | `GET /app/session` | the signed-in approver, or 401 |
//! | `POST /app/session/logout` | ends the session (CSRF token required) |

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use custos_policy::{PasskeyAssertion, verify_passkey_assertion};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::guard::{self, COOKIE};
use super::sessions::{CHALLENGE_TTL, Session};
use crate::adapters::extract::JsonBody;
use crate::adapters::http::ApiError;

/// base64url with or without padding (browsers leave it out).
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn refused(code: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError::Route(code, message.into())
}

/// The policy in force, or 503 when the coordinator has none.
fn active_policy(s: &AppState) -> Result<custos_policy::ActivePolicy, ApiError> {
    let engine = s.api.engine()?;
    Ok(engine
        .policy()
        .in_force(custos_policy::Timestamp(custos_clock::now_secs())))
}

/// `POST /app/session/challenge`.
pub async fn challenge(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    guard::check_origin(&s.api, &headers)?;
    let active = active_policy(&s)?;
    let rp_id = active
        .policy()
        .relying_party()
        .map(|rp| rp.rp_id.to_owned())
        .ok_or_else(|| {
            refused(
                StatusCode::CONFLICT,
                "the policy in force has no [webauthn] section: passkey sign-in is off",
            )
        })?;
    let c = s.sessions.issue_challenge(Instant::now());
    Ok(Json(json!({
        "challenge": hex::encode(c),
        "rp_id": rp_id,
        "timeout_ms": CHALLENGE_TTL.as_millis() as u64,
    })))
}

/// A sign-in assertion, each field hex (as the approvals route takes them).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignInBody {
    credential_id: String,
    authenticator_data: String,
    client_data_json: String,
    signature: String,
}

fn hex_field(field: &str, v: &str) -> Result<Vec<u8>, ApiError> {
    hex::decode(v.trim())
        .map_err(|e| refused(StatusCode::BAD_REQUEST, format!("{field}: not hex ({e})")))
}

#[derive(Deserialize)]
struct ClientChallenge {
    challenge: String,
}

/// The challenge a sign-in's clientDataJSON answers (decoded).
fn answered_challenge(client_data_json: &[u8]) -> Result<Vec<u8>, ApiError> {
    let c: ClientChallenge = serde_json::from_slice(client_data_json).map_err(|e| {
        refused(
            StatusCode::BAD_REQUEST,
            format!("client_data_json: not the browser's client data ({e})"),
        )
    })?;
    B64URL.decode(c.challenge.as_bytes()).map_err(|e| {
        refused(
            StatusCode::BAD_REQUEST,
            format!("client_data_json: challenge is not base64url ({e})"),
        )
    })
}

/// The highest sign counter seen for `credential` of `approver`: in
/// sign-ins since the start and in the approvals this coordinator stored.
async fn last_counter(s: &AppState, approver: &str, credential: &[u8]) -> Result<u32, ApiError> {
    let mut last = s.sessions.last_counter(credential);
    for json in s.api.engine()?.store.passkey_assertions(approver).await? {
        let Ok(seen) = serde_json::from_str::<PasskeyAssertion>(&json) else {
            continue;
        };
        if seen.credential_id_bytes().ok().as_deref() == Some(credential) {
            last = last.max(seen.sign_counter().unwrap_or(0));
        }
    }
    Ok(last)
}

fn session_json(s: &AppState, session: &Session) -> Result<Value, ApiError> {
    let active = active_policy(s)?;
    let credentials: Vec<String> = active
        .policy()
        .passkey_ids(&session.approver)
        .iter()
        .map(hex::encode)
        .collect();
    let rp_id = active
        .policy()
        .relying_party()
        .map(|rp| rp.rp_id.to_owned())
        .unwrap_or_default();
    Ok(json!({
        "approver": session.approver,
        "rp_id": rp_id,
        "csrf_token": session.csrf,
        "expires_at": crate::custody::rfc3339_s(Some(session.expires_unix)),
        "credentials": credentials,
    }))
}

/// The cookie that carries session `id` for `max_age` seconds (0: delete it).
fn cookie(id: &str, max_age: u64) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(&format!(
        "{COOKIE}={id}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age}"
    ))
    .map_err(|e| {
        refused(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("session cookie: {e}"),
        )
    })
}

/// `POST /app/session`: signs in with a passkey.
pub async fn sign_in(
    State(s): State<AppState>,
    headers: HeaderMap,
    JsonBody(b): JsonBody<SignInBody>,
) -> Result<Response, ApiError> {
    guard::check_origin(&s.api, &headers)?;
    let credential_id = hex_field("credential_id", &b.credential_id)?;
    let authenticator_data = hex_field("authenticator_data", &b.authenticator_data)?;
    let client_data_json = hex_field("client_data_json", &b.client_data_json)?;
    let signature = hex_field("signature", &b.signature)?;
    // The challenge is spent by this attempt, whatever its outcome.
    let challenge = answered_challenge(&client_data_json)?;
    let now = Instant::now();
    s.sessions
        .take_challenge(&challenge, now)
        .map_err(|e| refused(StatusCode::UNAUTHORIZED, e.to_string()))?;
    let active = active_policy(&s)?;
    let policy = active.policy();
    let rp = policy.relying_party().ok_or_else(|| {
        refused(
            StatusCode::CONFLICT,
            "the policy in force has no [webauthn] section: passkey sign-in is off",
        )
    })?;
    let Some((approver, credential)) = policy.passkey_owner(&credential_id) else {
        tracing::warn!(credential = %hex::encode(&credential_id), "approval app: sign-in with an unknown passkey refused");
        return Err(refused(
            StatusCode::UNAUTHORIZED,
            format!(
                "credential_id: {} is not the passkey of any approver of the policy in force",
                hex::encode(&credential_id)
            ),
        ));
    };
    let approver = approver.to_owned();
    let assertion = PasskeyAssertion::from_bytes(
        &credential_id,
        &authenticator_data,
        &client_data_json,
        &signature,
    );
    let last = last_counter(&s, &approver, &credential_id).await?;
    let counter =
        verify_passkey_assertion(credential, rp, &challenge, last, &assertion).map_err(|e| {
            tracing::warn!(%approver, reason = %e, "approval app: passkey sign-in refused");
            refused(
                StatusCode::UNAUTHORIZED,
                format!("passkey sign-in of {approver} refused: {e}"),
            )
        })?;
    let (id, session) = s
        .sessions
        .open(
            &approver,
            &credential_id,
            counter,
            now,
            custos_clock::now_secs(),
        )
        .map_err(|e| refused(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    tracing::info!(%approver, expires = session.expires_unix, "approval app: approver signed in");
    let body = session_json(&s, &session)?;
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie(&id, s.sessions.ttl().as_secs())?);
    Ok(response)
}

/// `GET /app/session`.
pub async fn current(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let id = guard::session_cookie(&headers).ok_or_else(|| {
        refused(
            StatusCode::UNAUTHORIZED,
            "session: none; sign in with your passkey",
        )
    })?;
    let session = guard::live_session(&s.sessions, &id)?;
    Ok(Json(session_json(&s, &session)?))
}

/// `POST /app/session/logout`.
pub async fn logout(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let id = guard::session_cookie(&headers).ok_or_else(|| {
        refused(
            StatusCode::UNAUTHORIZED,
            "session: none; sign in with your passkey",
        )
    })?;
    let session = guard::live_session(&s.sessions, &id)?;
    guard::check_state_change(&s.api, &session, &headers)?;
    s.sessions.close(&id);
    tracing::info!(approver = %session.approver, "approval app: approver signed out");
    let mut response = Json(json!({ "signed_out": session.approver })).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie("", 0)?);
    Ok(response)
}
