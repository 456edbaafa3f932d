//! Sends one session's protocol frames to its peers until each has
//! acknowledged them.
//!
//! A send whose acknowledgement did not come back (the peer was not yet
//! listening, a connection dropped, the peer was too busy to answer in time)
//! is resent, in order, with a growing pause, until [`DELIVERY_DEADLINE`];
//! the receiving router drops copies it already has. Only then does the
//! session fail, naming the peer, instead of waiting for its whole timeout
//! with a frame silently missing.
//!
//! Frames still queued when the protocol finishes are delivered too: a
//! party that completes after sending its last message must not take that
//! message with it, or the peers wait for it until they time out.

use std::time::Duration;

use custos_mpc::Outbound;
use custos_mpc::wire::Frame;
use futures::StreamExt;
use futures::channel::mpsc;
use libp2p::PeerId;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::node::FaultInjection;
use crate::p2p::{P2pError, P2pHandle};

/// How long one frame is resent to a peer before the session gives up on
/// that peer.
pub const DELIVERY_DEADLINE: Duration = Duration::from_secs(15);
/// First pause between two attempts; doubled up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(50);
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// A peer that did not acknowledge a frame within the deadline.
#[derive(Debug)]
pub struct Undelivered {
    /// The peer's node id.
    pub node: String,
    /// The last send error.
    pub error: String,
}

/// Forwards `out` to the peers (`peers[j]` is party `j`, `None` for this
/// node). Returns `Ok` once every frame was acknowledged after the protocol
/// dropped its sender, or the first peer that could not be reached.
pub async fn forward(
    p2p: P2pHandle,
    peers: Vec<Option<PeerId>>,
    mut out: mpsc::UnboundedReceiver<Outbound>,
    fault: FaultInjection,
    deadline: Duration,
) -> Result<(), Undelivered> {
    let mut tasks = JoinSet::new();
    let mut queues: Vec<Option<mpsc::UnboundedSender<Vec<u8>>>> = peers
        .iter()
        .map(|peer| {
            peer.map(|peer| {
                let (tx, rx) = mpsc::unbounded();
                tasks.spawn(deliver_in_order(p2p.clone(), peer, rx, deadline));
                tx
            })
        })
        .collect();
    loop {
        tokio::select! {
            frame = out.next() => match frame {
                Some(Outbound { to, bytes }) => {
                    let bytes = corrupt_if_asked(fault, bytes);
                    let targets: Vec<&mpsc::UnboundedSender<Vec<u8>>> = match to {
                        Some(j) => queues.get(usize::from(j)).and_then(Option::as_ref).into_iter().collect(),
                        None => queues.iter().flatten().collect(),
                    };
                    for q in targets {
                        let _ = q.unbounded_send(bytes.clone());
                    }
                }
                // The protocol is done: let each peer's queue drain.
                None => {
                    queues.clear();
                    break;
                }
            },
            Some(done) = tasks.join_next() => fail_on(done)?,
        }
    }
    while let Some(done) = tasks.join_next().await {
        fail_on(done)?;
    }
    Ok(())
}

fn fail_on(
    done: Result<Result<(), Undelivered>, tokio::task::JoinError>,
) -> Result<(), Undelivered> {
    match done {
        Ok(r) => r,
        // Only cancellation (the session ending) stops a delivery task.
        Err(_) => Ok(()),
    }
}

fn corrupt_if_asked(fault: FaultInjection, bytes: Vec<u8>) -> Vec<u8> {
    if crate::DEV_BUILD
        && fault == FaultInjection::CorruptProtocolMessages
        && let Ok(mut f) = Frame::decode(&bytes)
    {
        f.payload = b"{\"corrupted\":true}".to_vec();
        return f.encode();
    }
    bytes
}

/// Sends the frames for one peer one after the other, resending each until
/// acknowledged or the deadline passes.
async fn deliver_in_order(
    p2p: P2pHandle,
    peer: PeerId,
    mut frames: mpsc::UnboundedReceiver<Vec<u8>>,
    deadline: Duration,
) -> Result<(), Undelivered> {
    while let Some(bytes) = frames.next().await {
        let give_up = Instant::now() + deadline;
        let mut pause = FIRST_PAUSE;
        loop {
            let error = match p2p.send(peer, bytes.clone()).await {
                Ok(()) => break,
                Err(e) => e,
            };
            let node = p2p
                .node_id(&peer)
                .map_or_else(|| peer.to_string(), str::to_owned);
            let hopeless = matches!(
                error,
                P2pError::NotPinned { .. } | P2pError::MessageTooLarge { .. } | P2pError::Shutdown
            );
            if hopeless || Instant::now() + pause >= give_up {
                tracing::warn!(peer = %node, error = %error, "protocol frame not delivered");
                return Err(Undelivered {
                    node,
                    error: error.to_string(),
                });
            }
            tracing::debug!(peer = %node, error = %error, "protocol frame not acknowledged, resending");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }
    Ok(())
}
