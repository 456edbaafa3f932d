//! API client authentication: bearer tokens mapped to identities and roles.
//! The identity is recorded as the initiator of every withdrawal it creates.
//!
//! Tokens live hashed in the token store file (`[auth] token_store`,
//! managed by `custos token create|list|revoke`; see custos-credentials).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use custos_credentials::{CredentialError, Refusal, TokenRecord, TokenStore};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
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
    /// The API token it presented (its id; `None` for internal callers).
    pub token_id: Option<String>,
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

/// The token store as loaded: its bytes (to notice a change) and contents.
struct Loaded {
    bytes: Vec<u8>,
    store: TokenStore,
}

/// Bearer tokens checked against the hashed token store (custos-credentials):
/// looked up by id, compared in constant time, refused when revoked or
/// expired. Every use is logged with the token id, never its value.
/// [`Authenticator::reload`] rereads the file when it changed, so tokens can
/// be created and revoked without a restart.
#[derive(Clone)]
pub struct Authenticator {
    path: Arc<PathBuf>,
    loaded: Arc<RwLock<Loaded>>,
    /// Credential ids accepted since the start (each one's first use is
    /// logged at INFO, later ones at DEBUG: a backend presents its token on
    /// every call).
    used: Arc<Mutex<HashSet<String>>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("token_store", &self.path)
            .finish_non_exhaustive()
    }
}

/// The roles of a stored token as [`Role`]s (the store checks the names).
fn roles_of(record: &TokenRecord) -> Vec<Role> {
    record
        .roles
        .iter()
        .filter_map(|r| match r.as_str() {
            "admin" => Some(Role::Admin),
            "backend" => Some(Role::Backend),
            "approver" => Some(Role::Approver),
            "auditor" => Some(Role::Auditor),
            _ => None,
        })
        .collect()
}

impl Authenticator {
    /// The identity of an accepted credential (`what`: "API token", ...),
    /// the outcome logged with the record id, never a secret: refusals at
    /// WARN, a credential's first use since the start at INFO and its later
    /// uses at DEBUG (admin calls are logged under `custos::audit` anyway).
    fn logged(
        &self,
        what: &str,
        checked: Result<&TokenRecord, Refusal>,
    ) -> Result<Identity, Refusal> {
        match checked {
            Ok(record) => {
                let first = self
                    .used
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(record.id.clone());
                if first {
                    tracing::info!(token_id = %record.id, client = %record.client, "{what} accepted (first use since start; later uses are logged at DEBUG)");
                } else {
                    tracing::debug!(token_id = %record.id, client = %record.client, "{what} accepted");
                }
                Ok(Identity {
                    id: record.client.clone(),
                    roles: roles_of(record),
                    token_id: Some(record.id.clone()),
                })
            }
            Err(refusal) => {
                tracing::warn!(reason = %refusal, "{what} refused");
                Err(refusal)
            }
        }
    }

    /// Loads the token store at `path` (its hashes only).
    pub fn open(path: &Path) -> Result<Self, CredentialError> {
        let bytes = std::fs::read(path).map_err(|reason| CredentialError::Io {
            path: path.to_path_buf(),
            reason,
        })?;
        let store = TokenStore::parse(path, &bytes)?;
        Ok(Self {
            path: Arc::new(path.to_path_buf()),
            loaded: Arc::new(RwLock::new(Loaded { bytes, store })),
            used: Arc::default(),
        })
    }

    /// Rereads the store if the file changed. A store that no longer parses
    /// is an error and the previous one stays in force.
    pub fn reload(&self) -> Result<bool, CredentialError> {
        let bytes = std::fs::read(&*self.path).map_err(|reason| CredentialError::Io {
            path: self.path.to_path_buf(),
            reason,
        })?;
        if self.read().bytes == bytes {
            return Ok(false);
        }
        let store = TokenStore::parse(&self.path, &bytes)?;
        let mut w = self.loaded.write().unwrap_or_else(|e| e.into_inner());
        *w = Loaded { bytes, store };
        Ok(true)
    }

    /// Calls [`Authenticator::reload`] every `every` until `stop`.
    pub async fn watch(self, every: std::time::Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.reload() {
                Ok(true) => {
                    let n = self.read().store.tokens.len();
                    tracing::info!(tokens = n, store = %self.path.display(), "API token store reloaded");
                }
                Ok(false) => {}
                Err(e) => tracing::error!(
                    error = %e,
                    "API token store not reloaded: the previous one stays in force"
                ),
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Loaded> {
        self.loaded.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks a bearer value at `now` (Unix seconds) and logs the outcome
    /// with the token id.
    pub fn check(&self, presented: &str, now: i64) -> Result<Identity, Refusal> {
        self.logged("API token", self.read().store.verify(presented, now))
    }

    /// The identity a request's `authorization: Bearer <token>` proves, if
    /// any, checked like [`Authenticator::check`] but not logged (the call's
    /// own authentication logs it): what the rate limiter keys a client by
    /// ([`Authenticator::credential_id`]) and the admin audit names.
    pub fn peek(&self, headers: &axum::http::HeaderMap) -> Option<Identity> {
        let presented = zeroize::Zeroizing::new(
            headers
                .get(axum::http::header::AUTHORIZATION)?
                .to_str()
                .ok()?
                .strip_prefix("Bearer ")?
                .trim()
                .to_owned(),
        );
        let loaded = self.read();
        let record = loaded
            .store
            .verify(&presented, custos_credentials::now_unix())
            .ok()?;
        Some(Identity {
            id: record.client.clone(),
            roles: roles_of(record),
            token_id: Some(record.id.clone()),
        })
    }

    /// The id of the valid API token a request presents, if any: a caller
    /// presenting another client's token id with a wrong secret is not
    /// keyed as that client.
    pub fn credential_id(&self, headers: &axum::http::HeaderMap) -> Option<String> {
        self.peek(headers).and_then(|id| id.token_id)
    }

    /// Checks a client certificate (DER) at `now` against the pinned ones
    /// and logs the outcome with the record id.
    pub fn check_certificate(&self, der: &[u8], now: i64) -> Result<Identity, Refusal> {
        self.logged(
            "client certificate",
            self.read().store.verify_certificate(der, now),
        )
    }

    /// Interceptor body: resolves `authorization: Bearer <token>`, or without
    /// one the TLS client certificate the caller presented (mTLS, `[auth]
    /// client_ca`); a refusal is `UNAUTHENTICATED` naming the token id or
    /// the certificate's fingerprint (never a token's value).
    pub fn authenticate(&self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let presented = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("")
            .trim()
            .to_owned();
        let presented = zeroize::Zeroizing::new(presented);
        let now = custos_credentials::now_unix();
        let client_cert = req
            .peer_certs()
            .and_then(|certs| certs.first().map(|c| c.as_ref().to_vec()));
        let id = match client_cert {
            Some(der) if presented.is_empty() => self.check_certificate(&der, now),
            _ => self.check(&presented, now),
        }
        .map_err(|r| Status::unauthenticated(r.to_string()))?;
        req.extensions_mut().insert(id);
        Ok(req)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn req(token: &str) -> Request<()> {
        let mut r = Request::new(());
        if let Ok(v) = format!("Bearer {token}").parse() {
            r.metadata_mut().insert("authorization", v);
        }
        r
    }

    #[test]
    fn maps_tokens_to_identities_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        let now = custos_credentials::now_unix();
        let backend = custos_credentials::update(&path, true, |s| {
            s.issue("payments", &["backend".into()], now, Some(now + 60), None)
        })
        .unwrap()
        .1;
        let a = Authenticator::open(&path).unwrap();
        let r = a.authenticate(req(backend.expose())).unwrap();
        let id = identity(&r).unwrap();
        assert_eq!(id.id, "payments");
        assert_eq!(id.roles, vec![Role::Backend]);
        assert_eq!(id.token_id.as_deref(), Some(backend.id()));
        let e = a.authenticate(req("wrong")).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(a.authenticate(Request::new(())).is_err());
        // The rate limiter's key: the id of a valid token only.
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            "authorization",
            format!("Bearer {}", backend.expose()).parse().unwrap(),
        );
        assert_eq!(a.credential_id(&headers).as_deref(), Some(backend.id()));
        let forged = format!("Bearer custos_{}_{}", backend.id(), "0".repeat(64));
        headers.insert("authorization", forged.parse().unwrap());
        assert_eq!(a.credential_id(&headers), None);

        // Revoked in the file: still accepted until reloaded, then refused by id.
        custos_credentials::update(&path, false, |s| s.revoke(backend.id(), now)).unwrap();
        assert!(a.authenticate(req(backend.expose())).is_ok());
        assert!(a.reload().unwrap());
        let e = a.authenticate(req(backend.expose())).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(e.message().contains(backend.id()), "{}", e.message());
        assert!(e.message().contains("revoked"), "{}", e.message());
        assert!(!e.message().contains(&backend.expose()[24..]));
        // A broken store keeps the previous one in force.
        std::fs::write(&path, "{").unwrap();
        assert!(a.reload().is_err());
        assert!(a.authenticate(req(backend.expose())).is_err());
    }

    #[test]
    fn roles_are_enforced() {
        let backend = Identity {
            id: "b".into(),
            roles: vec![Role::Backend],
            token_id: None,
        };
        assert!(backend.require(Role::Backend).is_ok());
        assert!(backend.require(Role::Approver).is_err());
        let admin = Identity {
            id: "a".into(),
            roles: vec![Role::Admin],
            token_id: None,
        };
        assert!(admin.require(Role::Auditor).is_ok());
    }
}
