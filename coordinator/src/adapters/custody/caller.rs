//! Who is calling a custody route: an API client by its bearer token, or
//! an approver signed in to the approval app by its session cookie.
//!
//! # Design
//! A browser sends the session cookie with every request to this origin,
//! also when another site makes it send one; so a cookie alone proves
//! nothing for a state-changing request. Such a request (any method but
//! GET and HEAD) must also carry the session's CSRF token in
//! `X-CSRF-Token`, which only the app's own script can read, and an
//! `Origin` the policy's `[webauthn] origins` names (the app's origin).
//! `SameSite=Strict` on the cookie is a third, browser-side, layer. A
//! request with an `Authorization` header is authenticated by its token
//! only, whatever cookie comes along.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{Method, header};

use super::CustodyState;
use crate::adapters::app::guard;
use crate::adapters::http::{ApiError, authenticate};
use crate::auth::{Identity, Role};

/// The authenticated caller of a custody route.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Its identity; its roles are checked by the call itself. An app
    /// session's identity is its approver with the approver role only
    /// (and no token id).
    pub who: Identity,
    /// Whether it came through an approval-app session.
    pub session: bool,
}

impl FromRequestParts<CustodyState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        s: &CustodyState,
    ) -> Result<Self, Self::Rejection> {
        let cookie = guard::session_cookie(&parts.headers);
        match cookie {
            Some(id) if !parts.headers.contains_key(header::AUTHORIZATION) => {
                let session = guard::live_session(&s.sessions, &id)?;
                if !matches!(parts.method, Method::GET | Method::HEAD) {
                    guard::check_state_change(&s.api, &session, &parts.headers)?;
                }
                Ok(Caller {
                    who: Identity {
                        id: session.approver,
                        roles: vec![Role::Approver],
                        token_id: None,
                    },
                    session: true,
                })
            }
            _ => Ok(Caller {
                who: authenticate(&s.auth, &parts.headers)?,
                session: false,
            }),
        }
    }
}
