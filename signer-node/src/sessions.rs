//! Routes protocol frames from peers to the session they belong to.
//!
//! A peer may start a session a moment before we do (the coordinator's
//! requests do not arrive at all signers at once), so frames for an unknown
//! execution id wait in a bounded buffer for a short time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use custos_mpc::{ExecutionId, Inbound};
use futures::channel::mpsc;

/// How long an early frame waits for its session.
const EARLY_FRAME_TTL: Duration = Duration::from_secs(30);
/// Bound on buffered early frames (a flood of junk ids cannot grow memory).
const MAX_EARLY_FRAMES: usize = 512;

struct Session {
    participants: Vec<String>,
    tx: mpsc::Sender<Inbound>,
    received: Vec<u64>,
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
        let (mut tx, rx) = mpsc::channel(1024);
        let mut inner = self.lock();
        let mut received = vec![0; participants.len()];
        let early = std::mem::take(&mut inner.early);
        for (at, id, from, bytes) in early {
            if id == eid {
                if let Some(i) = participants.iter().position(|p| *p == from) {
                    received[i] += 1;
                    let _ = tx.try_send(Inbound {
                        from: i as u16,
                        bytes,
                    });
                }
            } else if at.elapsed() < EARLY_FRAME_TTL {
                inner.early.push((at, id, from, bytes));
            }
        }
        inner.sessions.insert(
            eid,
            Session {
                participants,
                tx,
                received,
            },
        );
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
            s.received[i] += 1;
            if s.tx
                .try_send(Inbound {
                    from: i as u16,
                    bytes,
                })
                .is_err()
            {
                tracing::warn!(peer = from, eid = ?eid, "session inbound queue full or closed, frame dropped");
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
