//! Sign-in challenges and approver sessions of the approval app, kept in
//! this process's memory.
//!
//! # Design
//! Both are short-lived and cheap to lose: a restart signs every approver
//! out (they sign in again with their passkey), and a session grants
//! nothing a passkey does not re-prove, since every approval is itself an
//! assertion the signers verify. So they are not stored in the database;
//! with several coordinators, the active one holds them and a failover
//! signs approvers out.
//!
//! A challenge is 32 random bytes, valid for [`CHALLENGE_TTL`] and taken
//! (removed) by the first sign-in that presents it, whether that sign-in
//! succeeds or not. A session id is 32 random bytes (256 bits), given to
//! the browser once in the cookie and kept here only as its SHA-256, with
//! its own random CSRF token; it ends [`Sessions::ttl`] after sign-in.
//! Both tables are bounded, so unauthenticated callers cannot grow them
//! without limit.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// How long a sign-in challenge may be answered.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(120);
/// Most outstanding challenges; the oldest is dropped beyond.
const MAX_CHALLENGES: usize = 4096;
/// Most live sessions; a sign-in beyond is refused.
const MAX_SESSIONS: usize = 4096;

/// A signed-in approver, as the routes see it.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    /// The approver id (of the policy in force at sign-in).
    pub approver: String,
    /// The token every state-changing request of this session carries in
    /// `X-CSRF-Token`.
    pub csrf: String,
    /// When it ends (Unix seconds).
    pub expires_unix: i64,
    expires: Instant,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("approver", &self.approver)
            .field("csrf", &"<redacted>")
            .field("expires_unix", &self.expires_unix)
            .finish()
    }
}

impl Session {
    /// Whether `presented` is this session's CSRF token. Compares the
    /// tokens' SHA-256 digests, so the time taken says nothing about how
    /// much of the token a guess got right.
    pub fn csrf_matches(&self, presented: &str) -> bool {
        Sha256::digest(presented.as_bytes()) == Sha256::digest(self.csrf.as_bytes())
    }
}

#[derive(Default)]
struct Tables {
    challenges: HashMap<[u8; 32], Instant>,
    /// By SHA-256 of the session id.
    sessions: HashMap<[u8; 32], Session>,
    /// The highest sign counter a sign-in presented, per credential id.
    counters: HashMap<Vec<u8>, u32>,
}

/// The challenges and sessions (see the module documentation).
pub struct Sessions {
    tables: Mutex<Tables>,
    ttl: Duration,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// Why a sign-in could not open a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The challenge is unknown, used or expired.
    #[error(
        "sign-in challenge unknown, already used or older than {}s: request a new one",
        CHALLENGE_TTL.as_secs()
    )]
    Challenge,
    /// Too many live sessions.
    #[error("too many open sessions ({MAX_SESSIONS}); try again later")]
    Full,
}

fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

fn key_of(session_id: &str) -> [u8; 32] {
    Sha256::digest(session_id.as_bytes()).into()
}

impl Sessions {
    /// Empty tables; sessions last `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            tables: Mutex::new(Tables::default()),
            ttl,
        }
    }

    /// How long a session lasts.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new one-time challenge.
    pub fn issue_challenge(&self, now: Instant) -> [u8; 32] {
        let c = random32();
        let mut t = self.lock();
        t.challenges
            .retain(|_, issued| now.saturating_duration_since(*issued) < CHALLENGE_TTL);
        if t.challenges.len() >= MAX_CHALLENGES
            && let Some(oldest) = t
                .challenges
                .iter()
                .min_by_key(|(_, issued)| **issued)
                .map(|(k, _)| *k)
        {
            t.challenges.remove(&oldest);
        }
        t.challenges.insert(c, now);
        c
    }

    /// Takes `challenge` (it cannot be presented again): fails unless it
    /// was issued here less than [`CHALLENGE_TTL`] ago and not taken yet.
    pub fn take_challenge(&self, challenge: &[u8], now: Instant) -> Result<(), SessionError> {
        let key: [u8; 32] = challenge.try_into().map_err(|_| SessionError::Challenge)?;
        match self.lock().challenges.remove(&key) {
            Some(issued) if now.saturating_duration_since(issued) < CHALLENGE_TTL => Ok(()),
            _ => Err(SessionError::Challenge),
        }
    }

    /// The highest sign counter sign-ins presented for `credential`.
    pub fn last_counter(&self, credential: &[u8]) -> u32 {
        self.lock().counters.get(credential).copied().unwrap_or(0)
    }

    /// Opens a session for `approver`, whose sign-in presented `counter`
    /// for `credential`; returns the session id (for the cookie, shown
    /// nowhere else) and the session.
    pub fn open(
        &self,
        approver: &str,
        credential: &[u8],
        counter: u32,
        now: Instant,
        now_unix: i64,
    ) -> Result<(Zeroizing<String>, Session), SessionError> {
        let id = Zeroizing::new(URL_SAFE_NO_PAD.encode(random32()));
        let session = Session {
            approver: approver.to_owned(),
            csrf: URL_SAFE_NO_PAD.encode(random32()),
            expires_unix: now_unix.saturating_add(i64::try_from(self.ttl.as_secs()).unwrap_or(0)),
            expires: now + self.ttl,
        };
        let mut t = self.lock();
        t.sessions.retain(|_, s| s.expires > now);
        if t.sessions.len() >= MAX_SESSIONS {
            return Err(SessionError::Full);
        }
        let last = t.counters.entry(credential.to_vec()).or_insert(0);
        *last = (*last).max(counter);
        t.sessions.insert(key_of(&id), session.clone());
        Ok((id, session))
    }

    /// The live session `session_id` names, if any.
    pub fn get(&self, session_id: &str, now: Instant) -> Option<Session> {
        let key = key_of(session_id);
        let mut t = self.lock();
        match t.sessions.get(&key) {
            Some(s) if s.expires > now => Some(s.clone()),
            Some(_) => {
                t.sessions.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends a session (sign-out).
    pub fn close(&self, session_id: &str) -> bool {
        self.lock().sessions.remove(&key_of(session_id)).is_some()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn a_challenge_is_taken_once_and_expires() {
        let s = Sessions::new(Duration::from_secs(900));
        let t0 = Instant::now();
        let c = s.issue_challenge(t0);
        assert_eq!(s.take_challenge(&c, t0), Ok(()));
        assert_eq!(s.take_challenge(&c, t0), Err(SessionError::Challenge));
        let c = s.issue_challenge(t0);
        assert_eq!(
            s.take_challenge(&c, t0 + CHALLENGE_TTL),
            Err(SessionError::Challenge)
        );
        assert_eq!(
            s.take_challenge(&[0u8; 32], t0),
            Err(SessionError::Challenge)
        );
        assert_eq!(s.take_challenge(b"short", t0), Err(SessionError::Challenge));
    }

    #[test]
    fn sessions_expire_and_close() {
        let s = Sessions::new(Duration::from_secs(900));
        let t0 = Instant::now();
        let (id, session) = s.open("frank", b"cred", 7, t0, 1000).unwrap();
        assert_eq!(id.len(), 43, "256 bits, base64url");
        assert_eq!(session.expires_unix, 1900);
        assert_eq!(s.get(&id, t0).unwrap().approver, "frank");
        assert!(s.get("another", t0).is_none());
        assert!(session.csrf_matches(&session.csrf));
        assert!(!session.csrf_matches("guess"));
        assert!(!format!("{session:?}").contains(&session.csrf));
        assert_eq!(s.last_counter(b"cred"), 7);
        assert!(s.get(&id, t0 + Duration::from_secs(900)).is_none());
        let (id, _) = s.open("frank", b"cred", 3, t0, 1000).unwrap();
        assert_eq!(s.last_counter(b"cred"), 7, "counters only grow");
        assert!(s.close(&id));
        assert!(s.get(&id, t0).is_none());
    }
}
