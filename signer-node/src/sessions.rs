//! Routes protocol frames from peers to the session they belong to.
//!
//! A peer may start a session a moment before we do (the coordinator's
//! requests do not arrive at all signers at once), so frames for an unknown
//! execution id wait in a bounded buffer for a short time.
//!
//! Senders resend a frame whose acknowledgement they did not get (the frame
//! may or may not have arrived), so a session drops a frame it already has
//! from the same peer: delivery is at least once on the wire and exactly once
//! into the protocol. Two different frames of one sender never have the same
//! bytes (each round's message differs), so nothing genuine is dropped.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use custos_mpc::{ExecutionId, Inbound};
use futures::channel::mpsc;
use sha2::{Digest, Sha256};

/// How long an early frame waits for its session.
const EARLY_FRAME_TTL: Duration = Duration::from_secs(30);
/// Bound on buffered early frames (a flood of junk ids cannot grow memory).
const MAX_EARLY_FRAMES: usize = 512;

struct Session {
    participants: Vec<String>,
    tx: mpsc::Sender<Inbound>,
    received: Vec<u64>,
    /// SHA-256 of every frame delivered, per sender index.
    seen: HashSet<(usize, [u8; 32])>,
}

impl Session {
    /// Queues a frame from participant `i` unless it is a resent copy.
    fn accept(&mut self, i: usize, bytes: Vec<u8>) -> Result<(), &'static str> {
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        if !self.seen.insert((i, digest)) {
            return Ok(()); // a resent copy: already delivered
        }
        self.received[i] += 1;
        self.tx
            .try_send(Inbound {
                from: i as u16,
                bytes,
            })
            .map_err(|_| "session inbound queue full or closed, frame dropped")
    }
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<ExecutionId, Session>,
    early: Vec<(Instant, ExecutionId, String, Vec<u8>)>,
}

/// The routing table.
#[derive(Default)]
pub struct SessionRouter {
    inner: Mutex<Inner>,
}

impl SessionRouter {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a session and returns its inbound stream, with any frames
    /// that arrived early already queued.
    pub fn register(&self, eid: ExecutionId, participants: Vec<String>) -> mpsc::Receiver<Inbound> {
        let (tx, rx) = mpsc::channel(1024);
        let mut inner = self.lock();
        let mut session = Session {
            received: vec![0; participants.len()],
            participants,
            tx,
            seen: HashSet::new(),
        };
        let early = std::mem::take(&mut inner.early);
        for (at, id, from, bytes) in early {
            if id == eid {
                if let Some(i) = session.participants.iter().position(|p| *p == from) {
                    let _ = session.accept(i, bytes);
                }
            } else if at.elapsed() < EARLY_FRAME_TTL {
                inner.early.push((at, id, from, bytes));
            }
        }
        inner.sessions.insert(eid, session);
        rx
    }

    /// Removes a session; its inbound stream ends, so a protocol still
    /// waiting on it fails instead of hanging.
    pub fn unregister(&self, eid: &ExecutionId) -> Option<Vec<(String, u64)>> {
        self.lock()
            .sessions
            .remove(eid)
            .map(|s| s.participants.into_iter().zip(s.received).collect())
    }

    /// Delivers a frame from the authenticated node `from`.
    pub fn deliver(&self, eid: ExecutionId, from: &str, bytes: Vec<u8>) {
        let mut inner = self.lock();
        if let Some(s) = inner.sessions.get_mut(&eid) {
            let Some(i) = s.participants.iter().position(|p| p == from) else {
                tracing::warn!(peer = from, eid = ?eid, "frame from a node that is not in the session, dropped");
                return;
            };
            if let Err(why) = s.accept(i, bytes) {
                tracing::warn!(peer = from, eid = ?eid, "{why}");
            }
            return;
        }
        inner
            .early
            .retain(|(at, ..)| at.elapsed() < EARLY_FRAME_TTL);
        if inner.early.len() >= MAX_EARLY_FRAMES {
            tracing::warn!(
                peer = from,
                "early-frame buffer full, frame for an unknown session dropped"
            );
            return;
        }
        inner
            .early
            .push((Instant::now(), eid, from.to_owned(), bytes));
    }
}
