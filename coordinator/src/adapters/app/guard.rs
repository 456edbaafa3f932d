//! The checks on an approval-app request: its session cookie, and for a
//! state-changing request its CSRF token and `Origin` (see
//! [`crate::adapters::custody::caller`] for why each).

use std::time::Instant;

use axum::http::{HeaderMap, StatusCode, header};
use zeroize::Zeroizing;

use super::sessions::{Session, Sessions};
use crate::adapters::http::ApiError;
use crate::custody::CustodyApi;

/// The session cookie's name. The `__Host-` prefix makes browsers accept it
/// only with `Secure`, `Path=/` and no `Domain`: no other host (a sibling
/// subdomain) can set or shadow it.
pub const COOKIE: &str = "__Host-custos_session";

/// The header a state-changing request carries the session's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The session id the request's cookie carries, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<Zeroizing<String>> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == COOKIE && !v.is_empty()).then(|| Zeroizing::new(v.to_owned()))
        })
}

/// The live session the request's cookie names; 401 without a cookie, or
/// when the session is unknown or over.
pub fn signed_in(sessions: &Sessions, headers: &HeaderMap) -> Result<Session, ApiError> {
    let id = session_cookie(headers).ok_or_else(|| {
        ApiError::Route(
            StatusCode::UNAUTHORIZED,
            "session: none; sign in with your passkey".into(),
        )
    })?;
    live_session(sessions, &id)
}

/// The live session `id` names; 401 when it is unknown or over.
pub fn live_session(sessions: &Sessions, id: &str) -> Result<Session, ApiError> {
    sessions.get(id, Instant::now()).ok_or_else(|| {
        ApiError::Route(
            StatusCode::UNAUTHORIZED,
            "session: unknown or expired; sign in again with your passkey".into(),
        )
    })
}

/// The origins the app is served from: the `[webauthn] origins` of the
/// policy in force (its passkeys are scoped to them anyway). Without a
/// policy or a `[webauthn]` section there is none, and every
/// state-changing app request is refused.
pub fn allowed_origins(api: &CustodyApi) -> Vec<String> {
    let Ok(engine) = api.engine() else {
        return Vec::new();
    };
    let now = custos_policy::Timestamp(custos_clock::now_secs());
    engine
        .policy()
        .in_force(now)
        .policy()
        .relying_party()
        .map(|rp| rp.origins.to_vec())
        .unwrap_or_default()
}

/// Refuses (403) a request whose `Origin` is missing or not an app origin.
pub fn check_origin(api: &CustodyApi, headers: &HeaderMap) -> Result<(), ApiError> {
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if origin.is_empty() {
        return Err(ApiError::Route(
            StatusCode::FORBIDDEN,
            "Origin: missing; the approval app's requests carry it".into(),
        ));
    }
    if !allowed_origins(api).iter().any(|o| o == origin) {
        return Err(ApiError::Route(
            StatusCode::FORBIDDEN,
            format!(
                "Origin: {origin:?} is not an origin of the approval app (policy [webauthn] origins)"
            ),
        ));
    }
    Ok(())
}

/// Refuses (403) a state-changing request of `session` without its CSRF
/// token or from another origin.
pub fn check_state_change(
    api: &CustodyApi,
    session: &Session,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let presented = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if presented.is_empty() || !session.csrf_matches(presented) {
        tracing::warn!(approver = %session.approver, "approval app: request without the session's CSRF token refused");
        return Err(ApiError::Route(
            StatusCode::FORBIDDEN,
            "X-CSRF-Token: missing or not this session's; a state-changing request from the approval app carries it".into(),
        ));
    }
    check_origin(api, headers)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_session_cookie_among_others() {
        let mut h = HeaderMap::new();
        assert!(session_cookie(&h).is_none());
        h.append(header::COOKIE, "a=1; theme=dark".parse().unwrap());
        assert!(session_cookie(&h).is_none());
        h.append(
            header::COOKIE,
            format!("x=2; {COOKIE}=abc; y=3").parse().unwrap(),
        );
        assert_eq!(session_cookie(&h).unwrap().as_str(), "abc");
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, format!("{COOKIE}=").parse().unwrap());
        assert!(session_cookie(&h).is_none());
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "custos_session=abc".parse().unwrap());
        assert!(session_cookie(&h).is_none(), "without the __Host- prefix");
    }
}
