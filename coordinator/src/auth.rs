//! API client authentication: bearer tokens mapped to identities and roles.
//! The identity is recorded as the initiator of every withdrawal it creates.

use std::sync::Arc;

use serde::Deserialize;
use tonic::{Request, Status};

/// What a client may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including key creation and (dev-only) raw digest signing.
    Admin,
    /// Custodial backend: create, read, cancel its own withdrawals.
    Backend,
    /// Approver client: list pending withdrawals and submit signed verdicts.
    Approver,
    /// Auditor: read the transparency log.
    Auditor,
}

/// An authenticated API client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Client id (recorded as initiator).
    pub id: String,
    /// Its roles.
    pub roles: Vec<Role>,
}

impl Identity {
    /// Has the admin role.
    pub fn is_admin(&self) -> bool {
        self.roles.contains(&Role::Admin)
    }

    /// Fails unless the identity has `role` (admins have every role).
    pub fn require(&self, role: Role) -> Result<(), Status> {
        if self.is_admin() || self.roles.contains(&role) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "client {} lacks the {role:?} role",
                self.id
            )))
        }
    }
}

/// The identity a request was authenticated as (set by [`Authenticator`]).
pub fn identity<T>(req: &Request<T>) -> Result<Identity, Status> {
    req.extensions()
        .get::<Identity>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no client identity"))
}

/// Token → identity table, checked in constant time per entry.
#[derive(Clone)]
pub struct Authenticator {
    clients: Arc<Vec<(String, Identity)>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field(
                "clients",
                &self.clients.iter().map(|(_, i)| &i.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Compares without an early exit, so timing does not reveal the token.
fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Authenticator {
    /// Builds the table from (token, identity) pairs.
    pub fn new(clients: Vec<(String, Identity)>) -> Self {
        Self {
            clients: Arc::new(clients),
        }
    }

    /// Interceptor body: resolves `authorization: Bearer <token>`.
    pub fn authenticate(&self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let presented = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let mut found = None;
        for (token, id) in self.clients.iter() {
            if constant_eq(token.as_bytes(), presented.as_bytes()) {
                found = Some(id.clone());
            }
        }
        match found {
            Some(id) if !presented.is_empty() => {
                req.extensions_mut().insert(id);
                Ok(req)
            }
            _ => Err(Status::unauthenticated(
                "missing or unknown API token (authorization: Bearer ...)",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Authenticator {
        Authenticator::new(vec![
            (
                "admin-token-0123456789".into(),
                Identity {
                    id: "admin".into(),
                    roles: vec![Role::Admin],
                },
            ),
            (
                "backend-token-0123456789".into(),
                Identity {
                    id: "payments".into(),
                    roles: vec![Role::Backend],
                },
            ),
        ])
    }

    fn req(token: &str) -> Request<()> {
        let mut r = Request::new(());
        if let Ok(v) = format!("Bearer {token}").parse() {
            r.metadata_mut().insert("authorization", v);
        }
        r
    }

    #[test]
    fn maps_tokens_to_identities() {
        let a = auth();
        let r = a.authenticate(req("backend-token-0123456789")).ok();
        let id = r.as_ref().and_then(|r| identity(r).ok());
        assert_eq!(id.map(|i| i.id), Some("payments".to_string()));
        assert!(a.authenticate(req("wrong")).is_err());
        assert!(a.authenticate(Request::new(())).is_err());
    }

    #[test]
    fn roles_are_enforced() {
        let backend = Identity {
            id: "b".into(),
            roles: vec![Role::Backend],
        };
        assert!(backend.require(Role::Backend).is_ok());
        assert!(backend.require(Role::Approver).is_err());
        let admin = Identity {
            id: "a".into(),
            roles: vec![Role::Admin],
        };
        assert!(admin.require(Role::Auditor).is_ok());
    }
}
