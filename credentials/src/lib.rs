//! API tokens of the Custos coordinator: how they are made, stored and checked.
//!
//! # Design
//!
//! A token is `custos_<id>_<secret>`: the `custos_` prefix lets secret
//! scanners recognise a leaked one, `<id>` (16 hex digits) names it in logs,
//! errors and `custos token list` without revealing anything, and `<secret>`
//! is 256 random bits (64 hex digits). It is shown once, when it is created.
//!
//! The coordinator keeps only the SHA-256 of the whole token in a token store
//! file ([`TokenStore`], JSON) next to its config: a plain hash suffices
//! because the token is a 256-bit random value (no dictionary to try), and a
//! stolen store lets nobody authenticate. A presented token is looked up by
//! its id, then its hash is compared with the stored one in constant time
//! ([`subtle`]); only then are revocation and expiry checked, so the answer
//! to a wrong secret never tells whether the id is revoked or expired.
//!
//! Each token belongs to one client id (recorded as the initiator of what it
//! does) and carries its own roles and expiry; a client may hold several
//! valid tokens at once, so rotation is: create the new token, move the
//! client to it, revoke the old one. The coordinator rereads the store when
//! the file changes, so none of this needs a restart.
//!
//! Backends may authenticate with a TLS client certificate instead
//! ([`TokenStore::pin_certificate`]): the store then records the SHA-256 of
//! that exact certificate (DER) with the client, roles and expiry, as a
//! record of kind [`CredentialKind::Certificate`] with its own id, revoked
//! and listed like a token. The TLS handshake proves the client holds the
//! certificate's key and that the configured CA issued it; the pin decides
//! who it is, so a CA-issued certificate nobody pinned opens nothing.
//!
//! This crate does no logging and no networking: the coordinator maps a
//! [`Refusal`] to its gRPC and HTTP answers and logs the token id.

#![deny(missing_docs)]

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Every token starts with this.
pub const TOKEN_PREFIX: &str = "custos_";
/// Hex digits of a token id.
const ID_HEX: usize = 16;
/// Hex digits of a token's secret part (256 bits).
const SECRET_HEX: usize = 64;
/// `format` of a token store file.
pub const STORE_FORMAT: &str = "custos-token-store";
/// `version` of a token store file.
pub const STORE_VERSION: u32 = 1;
/// The roles a token may carry (the coordinator's `Role`s, snake case).
pub const ROLES: [&str; 4] = ["admin", "backend", "approver", "auditor"];

/// What can go wrong reading, writing or editing a token store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The store file could not be read, written or locked.
    #[error("token store {path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why (in the message, so not also a `source`).
        reason: std::io::Error,
    },
    /// The store file is not a valid token store (names the entry and field).
    #[error("token store {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A request to change the store makes no sense (caller's mistake).
    #[error("{0}")]
    Usage(String),
}

/// A token's value. Never logged: `Debug` prints only its id.
pub struct Token(Zeroizing<String>);

impl Token {
    /// The bearer value (`custos_<id>_<secret>`), to show once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Its id.
    pub fn id(&self) -> &str {
        self.0
            .get(TOKEN_PREFIX.len()..TOKEN_PREFIX.len() + ID_HEX)
            .unwrap_or_default()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({}, <redacted>)", self.id())
    }
}

/// One token as stored: everything but its value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    /// Token id (16 hex digits, also inside the token).
    pub id: String,
    /// Client id it authenticates as (recorded as initiator).
    pub client: String,
    /// Its roles (see [`ROLES`]).
    pub roles: Vec<String>,
    /// SHA-256 of the whole token, hex (of the certificate's DER for a
    /// [`CredentialKind::Certificate`]).
    pub sha256: String,
    /// What the client presents (default: an API token).
    #[serde(default, skip_serializing_if = "CredentialKind::is_token")]
    pub kind: CredentialKind,
    /// When it was created, Unix seconds.
    pub created_at: i64,
    /// When it stops being accepted, Unix seconds; `None`: never.
    pub expires_at: Option<i64>,
    /// When it was revoked, Unix seconds.
    #[serde(default)]
    pub revoked_at: Option<i64>,
    /// Free text (who holds it, what for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What a stored credential is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// A bearer token (`custos_<id>_<secret>`).
    #[default]
    Token,
    /// A pinned TLS client certificate.
    Certificate,
}

impl CredentialKind {
    fn is_token(&self) -> bool {
        *self == CredentialKind::Token
    }
}

/// Where a token stands at a given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenStatus {
    /// Accepted.
    Active,
    /// Past its expiry.
    Expired,
    /// Revoked.
    Revoked,
}

impl TokenRecord {
    /// Its status at `now` (Unix seconds).
    pub fn status(&self, now: i64) -> TokenStatus {
        if self.revoked_at.is_some() {
            TokenStatus::Revoked
        } else if self.expires_at.is_some_and(|e| now >= e) {
            TokenStatus::Expired
        } else {
            TokenStatus::Active
        }
    }
}

/// Why a presented token was refused. The messages name the token id, never
/// its value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// No token was presented.
    #[error("missing API token (authorization: Bearer custos_...)")]
    Missing,
    /// Not of the form `custos_<id>_<secret>`.
    #[error("malformed API token: expected custos_<16 hex id>_<64 hex secret>")]
    Malformed,
    /// No token with this id, or its secret does not match.
    #[error("unknown API token {id}")]
    Unknown {
        /// The presented token's id.
        id: String,
    },
    /// Past its expiry.
    #[error("API token {id} expired at {at}")]
    Expired {
        /// The token id.
        id: String,
        /// When (RFC 3339).
        at: String,
    },
    /// Revoked.
    #[error("API token {id} was revoked at {at}")]
    Revoked {
        /// The token id.
        id: String,
        /// When (RFC 3339).
        at: String,
    },
    /// A pinned client certificate past its pin's expiry.
    #[error("client certificate {id} expired at {at}")]
    CertificateExpired {
        /// The pin's id.
        id: String,
        /// When (RFC 3339).
        at: String,
    },
    /// A pinned client certificate whose pin was revoked.
    #[error("client certificate {id} was revoked at {at}")]
    CertificateRevoked {
        /// The pin's id.
        id: String,
        /// When (RFC 3339).
        at: String,
    },
    /// A client certificate no record pins.
    #[error("client certificate sha256:{sha256} is not registered (custos token create --cert)")]
    UnknownCertificate {
        /// SHA-256 of the certificate (DER), hex.
        sha256: String,
    },
}

/// The DER of the first certificate in PEM text (what a certificate pin and
/// a TLS peer compare), or why there is none.
pub fn certificate_der(pem: &[u8]) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let text = std::str::from_utf8(pem).map_err(|_| "not PEM text".to_owned())?;
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .map(str::trim)
        .collect();
    if body.is_empty() {
        return Err("no CERTIFICATE block".into());
    }
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| format!("CERTIFICATE block is not base64: {e}"))
}

/// Unix seconds as RFC 3339 (UTC), or the number if out of range.
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// The current time, Unix seconds.
pub fn now_unix() -> i64 {
    custos_clock::now_secs()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Splits `custos_<id>_<secret>` into its id, checking the shape.
fn parse_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    (hex(id, ID_HEX) && hex(secret, SECRET_HEX)).then_some(id)
}

fn random_hex(bytes: usize) -> Zeroizing<String> {
    let mut b = Zeroizing::new(vec![0u8; bytes]);
    OsRng.fill_bytes(&mut b);
    Zeroizing::new(hex::encode(&*b))
}

/// The token store file: every token's record, never a token value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenStore {
    /// [`STORE_FORMAT`].
    pub format: String,
    /// [`STORE_VERSION`].
    pub version: u32,
    /// The tokens, oldest first.
    pub tokens: Vec<TokenRecord>,
}

impl Default for TokenStore {
    fn default() -> Self {
        TokenStore {
            format: STORE_FORMAT.into(),
            version: STORE_VERSION,
            tokens: Vec::new(),
        }
    }
}

/// Whether `id` is a valid client id (letters, digits, '-', '_', '.'; at
/// most 64; not starting with '.').
pub fn is_valid_client_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl TokenStore {
    /// Parses and checks a store (`path` only names it in errors).
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self, CredentialError> {
        let bad = |reason: String| CredentialError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let store: TokenStore = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if store.format != STORE_FORMAT || store.version != STORE_VERSION {
            return Err(bad(format!(
                "unsupported format {:?} version {} (expected {STORE_FORMAT:?} version {STORE_VERSION})",
                store.format, store.version
            )));
        }
        store.check().map_err(bad)?;
        Ok(store)
    }

    /// Every record well-formed, ids unique; names the first bad entry.
    fn check(&self) -> Result<(), String> {
        let mut ids = std::collections::HashSet::new();
        for (i, t) in self.tokens.iter().enumerate() {
            let at = |field: &str| format!("tokens[{i}].{field}");
            if t.id.len() != ID_HEX || !t.id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("{}: {:?} is not a token id", at("id"), t.id));
            }
            if !ids.insert(t.id.as_str()) {
                return Err(format!("{}: {} appears twice", at("id"), t.id));
            }
            if !is_valid_client_id(&t.client) {
                return Err(format!(
                    "{}: {:?} is not a valid id",
                    at("client"),
                    t.client
                ));
            }
            if t.roles.is_empty() {
                return Err(format!("{}: no role", at("roles")));
            }
            if let Some(r) = t.roles.iter().find(|r| !ROLES.contains(&r.as_str())) {
                return Err(format!(
                    "{}: unknown role {r:?} (one of {})",
                    at("roles"),
                    ROLES.join(", ")
                ));
            }
            // A stored value that is not a SHA-256 (say, a token pasted in
            // plain text) is refused, never compared.
            if t.sha256.len() != 64 || !t.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "{}: not a SHA-256 hash (64 hex digits); the store holds hashes only, create tokens with `custos token create`",
                    at("sha256")
                ));
            }
        }
        Ok(())
    }

    /// Reads the store at `path`.
    pub fn load(path: &Path) -> Result<Self, CredentialError> {
        let bytes = std::fs::read(path).map_err(|reason| CredentialError::Io {
            path: path.to_path_buf(),
            reason,
        })?;
        Self::parse(path, &bytes)
    }

    /// The store's file contents.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Creates a token for `client` with `roles`, valid until `expires_at`
    /// (Unix seconds; `None`: no expiry), and records its hash. Returns the
    /// record and the token (its only copy).
    pub fn issue(
        &mut self,
        client: &str,
        roles: &[String],
        now: i64,
        expires_at: Option<i64>,
        note: Option<String>,
    ) -> Result<(TokenRecord, Token), CredentialError> {
        check_grant(client, roles, now, expires_at)?;
        let (id, token) = loop {
            let id = random_hex(ID_HEX / 2);
            if !self.tokens.iter().any(|t| t.id == *id) {
                let secret = random_hex(SECRET_HEX / 2);
                let token = Token(Zeroizing::new(format!(
                    "{TOKEN_PREFIX}{}_{}",
                    id.as_str(),
                    secret.as_str()
                )));
                break (id.to_string(), token);
            }
        };
        let record = self.record(
            id,
            client,
            roles,
            sha256_hex(token.expose().as_bytes()),
            CredentialKind::Token,
            (now, expires_at, note),
        );
        Ok((record, token))
    }

    /// Pins the client certificate `cert_der` for `client` with `roles`,
    /// valid until `expires_at`, and returns its record (its id names it in
    /// logs and `custos token revoke`). A certificate pinned and in force
    /// already is refused, naming that record.
    pub fn pin_certificate(
        &mut self,
        client: &str,
        roles: &[String],
        cert_der: &[u8],
        now: i64,
        expires_at: Option<i64>,
        note: Option<String>,
    ) -> Result<TokenRecord, CredentialError> {
        check_grant(client, roles, now, expires_at)?;
        let sha256 = sha256_hex(cert_der);
        if let Some(t) = self.tokens.iter().find(|t| {
            t.kind == CredentialKind::Certificate
                && t.sha256 == sha256
                && t.status(now) == TokenStatus::Active
        }) {
            return Err(CredentialError::Usage(format!(
                "this certificate (sha256:{sha256}) is already registered as {} for client {}",
                t.id, t.client
            )));
        }
        let id = loop {
            let id = random_hex(ID_HEX / 2);
            if !self.tokens.iter().any(|t| t.id == *id) {
                break id.to_string();
            }
        };
        Ok(self.record(
            id,
            client,
            roles,
            sha256,
            CredentialKind::Certificate,
            (now, expires_at, note),
        ))
    }

    /// Adds a record and returns it.
    fn record(
        &mut self,
        id: String,
        client: &str,
        roles: &[String],
        sha256: String,
        kind: CredentialKind,
        (created_at, expires_at, note): (i64, Option<i64>, Option<String>),
    ) -> TokenRecord {
        let mut roles = roles.to_vec();
        roles.sort();
        roles.dedup();
        let record = TokenRecord {
            id,
            client: client.to_owned(),
            roles,
            sha256,
            kind,
            created_at,
            expires_at,
            revoked_at: None,
            note,
        };
        self.tokens.push(record.clone());
        record
    }

    /// The record pinning the client certificate `cert_der`, if it is in
    /// force at `now` (the TLS layer has checked the chain and the key).
    pub fn verify_certificate(&self, cert_der: &[u8], now: i64) -> Result<&TokenRecord, Refusal> {
        let sha256 = sha256_hex(cert_der);
        let mut pins = self
            .tokens
            .iter()
            .filter(|t| t.kind == CredentialKind::Certificate && t.sha256 == sha256);
        // A certificate pinned again after a revocation: the record in force wins.
        let first = pins.next().ok_or(Refusal::UnknownCertificate {
            sha256: sha256.clone(),
        })?;
        let record = std::iter::once(first)
            .chain(pins)
            .find(|t| t.status(now) == TokenStatus::Active)
            .unwrap_or(first);
        in_force(record, now).map_err(|refusal| match refusal {
            Refusal::Expired { id, at } => Refusal::CertificateExpired { id, at },
            Refusal::Revoked { id, at } => Refusal::CertificateRevoked { id, at },
            other => other,
        })
    }
}

/// A record's refusal at `now` if it is revoked or expired.
fn in_force(record: &TokenRecord, now: i64) -> Result<&TokenRecord, Refusal> {
    if let Some(at) = record.revoked_at {
        return Err(Refusal::Revoked {
            id: record.id.clone(),
            at: rfc3339(at),
        });
    }
    match record.expires_at {
        Some(at) if now >= at => Err(Refusal::Expired {
            id: record.id.clone(),
            at: rfc3339(at),
        }),
        _ => Ok(record),
    }
}

/// Checks what a new credential grants, naming what is wrong.
fn check_grant(
    client: &str,
    roles: &[String],
    now: i64,
    expires_at: Option<i64>,
) -> Result<(), CredentialError> {
    {
        if !is_valid_client_id(client) {
            return Err(CredentialError::Usage(format!(
                "client id {client:?} is not valid (letters, digits, '-', '_', '.'; at most 64)"
            )));
        }
        if roles.is_empty() {
            return Err(CredentialError::Usage(
                "a token needs at least one role".into(),
            ));
        }
        if let Some(r) = roles.iter().find(|r| !ROLES.contains(&r.as_str())) {
            return Err(CredentialError::Usage(format!(
                "unknown role {r:?} (one of {})",
                ROLES.join(", ")
            )));
        }
        if expires_at.is_some_and(|e| e <= now) {
            return Err(CredentialError::Usage(
                "the expiry must be in the future".into(),
            ));
        }
        Ok(())
    }
}

impl TokenStore {
    /// Marks token `id` revoked at `now`. Revoking a revoked token is an error
    /// naming when it was revoked.
    pub fn revoke(&mut self, id: &str, now: i64) -> Result<TokenRecord, CredentialError> {
        let t = self
            .tokens
            .iter_mut()
            .find(|t| t.id == id)
            .ok_or_else(|| CredentialError::Usage(format!("no token with id {id}")))?;
        if let Some(at) = t.revoked_at {
            return Err(CredentialError::Usage(format!(
                "token {id} was already revoked at {}",
                rfc3339(at)
            )));
        }
        t.revoked_at = Some(now);
        Ok(t.clone())
    }

    /// Checks a presented bearer token at `now`: its record if it is known,
    /// matches in constant time, is not revoked and has not expired.
    pub fn verify(&self, presented: &str, now: i64) -> Result<&TokenRecord, Refusal> {
        if presented.is_empty() {
            return Err(Refusal::Missing);
        }
        let id = parse_id(presented).ok_or(Refusal::Malformed)?;
        let unknown = || Refusal::Unknown { id: id.to_owned() };
        let record = self
            .tokens
            .iter()
            .find(|t| t.id == id && t.kind == CredentialKind::Token)
            .ok_or_else(unknown)?;
        let stored = hex::decode(&record.sha256).map_err(|_| unknown())?;
        let digest = Sha256::digest(presented.as_bytes());
        if !bool::from(digest[..].ct_eq(&stored[..])) {
            return Err(unknown());
        }
        in_force(record, now)
    }
}

/// Opens (creating) `<store>.lock` and takes an exclusive lock on it, held
/// until the returned file is dropped: concurrent `custos token` runs edit
/// the store one after the other.
fn lock(path: &Path) -> Result<File, CredentialError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    let io = |reason| CredentialError::Io {
        path: lock_path.clone(),
        reason,
    };
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io)?;
    file.lock().map_err(io)?;
    Ok(file)
}

/// Reads the store at `path` (an absent file is an empty store when
/// `create`), applies `edit` and writes it back atomically (mode 0600), all
/// under the store's lock. Nothing is written if `edit` fails.
pub fn update<T>(
    path: &Path,
    create: bool,
    edit: impl FnOnce(&mut TokenStore) -> Result<T, CredentialError>,
) -> Result<T, CredentialError> {
    let _lock = lock(path)?;
    let mut store = match std::fs::read(path) {
        Ok(bytes) => TokenStore::parse(path, &bytes)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => TokenStore::default(),
        Err(reason) => {
            return Err(CredentialError::Io {
                path: path.to_path_buf(),
                reason,
            });
        }
    };
    let out = edit(&mut store)?;
    custos_fsutil::write_atomic(path, &store.to_bytes(), custos_fsutil::PRIVATE_MODE).map_err(
        |reason| CredentialError::Io {
            path: path.to_path_buf(),
            reason,
        },
    )?;
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn roles(r: &[&str]) -> Vec<String> {
        r.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn tokens_are_prefixed_random_and_stored_as_hashes_only() {
        let mut s = TokenStore::default();
        let (rec, tok) = s
            .issue("payments", &roles(&["backend"]), 100, Some(200), None)
            .unwrap();
        let v = tok.expose();
        assert!(v.starts_with("custos_"), "{v}");
        assert_eq!(v.len(), 7 + 16 + 1 + 64);
        assert_eq!(tok.id(), rec.id);
        assert_eq!(parse_id(v), Some(rec.id.as_str()));
        assert_eq!(rec.sha256, sha256_hex(v.as_bytes()));
        let bytes = String::from_utf8(s.to_bytes()).unwrap();
        let secret = &v[7 + 16 + 1..];
        assert!(!bytes.contains(secret), "the token's secret is stored");
        assert!(!format!("{tok:?}").contains(secret), "Debug leaks");
        let (_, other) = s
            .issue("payments", &roles(&["backend"]), 100, None, None)
            .unwrap();
        assert_ne!(other.expose(), v);
    }

    #[test]
    fn verify_checks_hash_revocation_and_expiry() {
        let mut s = TokenStore::default();
        let (old, old_tok) = s
            .issue("payments", &roles(&["backend"]), 100, Some(200), None)
            .unwrap();
        let (_, new_tok) = s
            .issue("payments", &roles(&["backend"]), 100, Some(300), None)
            .unwrap();
        assert_eq!(s.verify(old_tok.expose(), 150).unwrap().id, old.id);
        assert_eq!(
            s.verify(old_tok.expose(), 200),
            Err(Refusal::Expired {
                id: old.id.clone(),
                at: rfc3339(200)
            })
        );
        s.revoke(&old.id, 160).unwrap();
        let r = s.verify(old_tok.expose(), 170).unwrap_err();
        assert!(matches!(r, Refusal::Revoked { ref id, .. } if *id == old.id));
        assert!(r.to_string().contains(&old.id));
        assert!(!r.to_string().contains(&old_tok.expose()[24..]));
        assert!(
            s.verify(new_tok.expose(), 170).is_ok(),
            "the successor works"
        );
        assert!(s.revoke(&old.id, 180).is_err(), "revoked twice");
        // A wrong secret under a known id: unknown, not "revoked".
        let forged = format!("{}{}", &old_tok.expose()[..24], "0".repeat(64));
        assert_eq!(
            s.verify(&forged, 170),
            Err(Refusal::Unknown { id: old.id.clone() })
        );
        assert_eq!(s.verify("", 1), Err(Refusal::Missing));
        assert_eq!(s.verify("plain-old-token-0123", 1), Err(Refusal::Malformed));
    }

    #[test]
    fn a_plain_text_token_in_the_store_is_refused() {
        let mut s = TokenStore::default();
        let (_, tok) = s
            .issue("payments", &roles(&["backend"]), 100, None, None)
            .unwrap();
        s.tokens[0].sha256 = tok.expose().to_owned();
        let err = TokenStore::parse(Path::new("t.json"), &s.to_bytes()).unwrap_err();
        assert!(err.to_string().contains("tokens[0].sha256"), "{err}");
        let text = String::from_utf8(TokenStore::default().to_bytes())
            .unwrap()
            .replace("\"tokens\": []", "\"tokens\": [], \"token\": \"x\"");
        assert!(TokenStore::parse(Path::new("t.json"), text.as_bytes()).is_err());
    }

    #[test]
    fn bad_requests_are_refused() {
        let mut s = TokenStore::default();
        assert!(s.issue("a b", &roles(&["backend"]), 1, None, None).is_err());
        assert!(s.issue("a", &[], 1, None, None).is_err());
        assert!(s.issue("a", &roles(&["root"]), 1, None, None).is_err());
        assert!(
            s.issue("a", &roles(&["admin"]), 10, Some(10), None)
                .is_err()
        );
        assert!(s.revoke("0123456789abcdef", 1).is_err());
    }

    #[test]
    fn update_creates_edits_and_keeps_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        assert!(
            update(&path, false, |_| Ok(())).is_err(),
            "absent, no create"
        );
        let id = update(&path, true, |s| {
            Ok(s.issue("admin", &roles(&["admin"]), 1, None, None)?.0.id)
        })
        .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        update(&path, false, |s| s.revoke(&id, 2)).unwrap();
        let s = TokenStore::load(&path).unwrap();
        assert_eq!(s.tokens[0].status(3), TokenStatus::Revoked);
        // A failed edit writes nothing.
        let before = std::fs::read(&path).unwrap();
        assert!(update(&path, false, |s| s.revoke(&id, 4)).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    /// A pinned certificate authenticates as its client with its roles;
    /// another certificate, a revoked or expired pin do not; a pin is never
    /// a bearer token (its id with any secret is unknown); a pin survives the
    /// file round trip, tokens keep their old shape.
    #[test]
    fn pinned_client_certificates() {
        let mut s = TokenStore {
            format: STORE_FORMAT.into(),
            version: STORE_VERSION,
            tokens: Vec::new(),
        };
        let cert = b"DER of a client certificate";
        let backend = vec!["backend".to_owned()];
        let pin = s
            .pin_certificate("payments", &backend, cert, 10, Some(100), None)
            .unwrap();
        assert_eq!(pin.kind, CredentialKind::Certificate);
        assert_eq!(pin.sha256, sha256_hex(cert));
        assert_eq!(s.verify_certificate(cert, 50).unwrap().client, "payments");
        let other = s.verify_certificate(b"another", 50).unwrap_err();
        assert_eq!(
            other.to_string(),
            format!(
                "client certificate sha256:{} is not registered (custos token create --cert)",
                sha256_hex(b"another")
            )
        );
        assert_eq!(
            s.verify_certificate(cert, 100).unwrap_err().to_string(),
            format!(
                "client certificate {} expired at 1970-01-01T00:01:40Z",
                pin.id
            )
        );
        let e = s
            .pin_certificate("payments", &backend, cert, 20, None, None)
            .unwrap_err();
        assert!(e.to_string().contains(&pin.id), "{e}");
        let as_token = format!("{TOKEN_PREFIX}{}_{}", pin.id, "0".repeat(SECRET_HEX));
        assert_eq!(
            s.verify(&as_token, 50).unwrap_err(),
            Refusal::Unknown { id: pin.id.clone() }
        );

        // Revoked, then pinned again: the new record is in force.
        s.revoke(&pin.id, 30).unwrap();
        assert!(matches!(
            s.verify_certificate(cert, 40),
            Err(Refusal::CertificateRevoked { .. })
        ));
        let again = s
            .pin_certificate("payments", &backend, cert, 40, None, None)
            .unwrap();
        assert_eq!(s.verify_certificate(cert, 50).unwrap().id, again.id);

        let pem = "junk\n-----BEGIN CERTIFICATE-----\nREVS\nIG9m\n-----END CERTIFICATE-----\n";
        assert_eq!(certificate_der(pem.as_bytes()).unwrap(), b"DER of");
        assert_eq!(certificate_der(b"x").unwrap_err(), "no CERTIFICATE block");

        let (_, token) = s.issue("other", &backend, 10, None, None).unwrap();
        let text = String::from_utf8(s.to_bytes()).unwrap();
        assert_eq!(
            text.matches("\"kind\": \"certificate\"").count(),
            2,
            "{text}"
        );
        assert!(!text.contains("\"kind\": \"token\""), "{text}");
        let back = TokenStore::parse(Path::new("t.json"), text.as_bytes()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.verify(token.expose(), 50).unwrap().client, "other");
    }
}
