//! Signer ↔ signer transport: libp2p over TCP + Noise + Yamux, pinned peers.
//!
//! # What this module guarantees
//!
//! * **Pinning.** Only peers listed in [`P2pConfig::peers`] can hold a
//!   connection. A connection from any other PeerId is closed right after the
//!   Noise handshake (which proves the remote holds the key of its PeerId),
//!   before a single protocol substream is accepted; each refusal increments
//!   [`P2pHandle::refused_connections`]. We never dial an unpinned peer.
//! * **Acknowledged delivery.** [`P2pHandle::send`] resolves `Ok` only once the
//!   receiving node has placed the message in its inbound channel (the
//!   [`mpsc::Receiver`] returned by [`start`]). After an error, delivery is
//!   unknown in general (the ack can be lost in flight), except for
//!   [`P2pError::NotPinned`] and [`P2pError::MessageTooLarge`] (checked
//!   locally, nothing sent) and a "busy" [`P2pError::Rejected`].
//! * **Per-peer ordering.** Messages to one peer are transmitted one at a time:
//!   the next is written only after the previous one was acknowledged or failed.
//!   So messages from node A to node B are received in the order A's `send`
//!   futures were first polled (awaiting each `send`, or polling several in
//!   order with `join_all`, both qualify). There is no ordering across peers.
//!   When a send to a peer fails because the peer is unreachable, refused us
//!   or timed out, every message queued behind it fails with the same error
//!   instead of being sent after a gap. After a [`P2pError::Rejected`] (the
//!   peer answered "busy" or refused that one message) later messages are
//!   still sent: callers must treat any failed send as a failed session.
//! * **Backpressure.** The inbound channel is bounded. When it is full,
//!   received messages wait (in order) inside the transport and their
//!   acknowledgements are withheld, so senders slow down; nothing is dropped
//!   silently. At most [`MAX_PENDING_PER_PEER`] messages per peer wait this way;
//!   beyond that the peer is answered "busy" and its `send` fails with
//!   [`P2pError::Rejected`]. A waiting message whose sender already gave up
//!   (request timeout) is discarded, logged and counted in
//!   [`P2pHandle::expired_messages`], because its sender was told it failed.
//! * **Size limit.** Inbound messages longer than
//!   [`P2pConfig::max_message_bytes`] are rejected from their length header,
//!   without allocating the claimed size, and counted in
//!   [`P2pHandle::rejected_messages`]; outbound ones are refused locally.
//! * **Reconnect.** Idle connections are kept for an hour. When a connection
//!   is gone (for instance the peer was killed and restarted), the next `send`
//!   dials the pinned address again. A connection on which a send timed out
//!   is closed, so a half-open connection (peer host lost without a TCP
//!   reset, network partition) cannot swallow later messages.
//! * **Addresses.** The pinned address is only used to dial. Inbound
//!   connections are accepted from any address; the PeerId proven in the
//!   Noise handshake is what is checked.
//!
//! Payload bytes are never logged.

mod codec;
mod identity;
mod task;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{Multiaddr, PeerId, allow_block_list, connection_limits, request_response};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use codec::PROTOCOL;
pub use identity::{
    MAX_IDENTITY_BYTES, decode_identity, generate_identity_file, load_identity, write_identity_file,
};

/// Default cap on one message: 8 MiB, well above the largest cggmp21 round
/// message (Paillier proofs are a few hundred KiB).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

/// Default time allowed for a message to be acknowledged, and for a dial
/// (TCP connect + Noise + Yamux) to complete.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Capacity of the inbound channel returned by [`start`].
pub const INBOUND_CHANNEL_CAPACITY: usize = 256;

/// Messages from one peer that may wait for room in a full inbound channel
/// before further ones are answered "busy". Honest peers have at most one
/// message in flight to us, so this only bounds misbehaving ones (and memory:
/// peers × this × `max_message_bytes`).
pub const MAX_PENDING_PER_PEER: usize = 4;

/// Idle connections are kept this long: reconnecting costs a TCP + Noise
/// handshake that rounds should not pay.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(3600);

/// A peer this node may talk to, identified by its public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedPeer {
    /// Human-readable node id used in logs and errors (e.g. `signer-2`).
    pub node_id: String,
    /// The peer's libp2p identity; connections from any other key are refused.
    pub peer_id: PeerId,
    /// Address dialled when a message must be sent and no connection exists.
    pub addr: Multiaddr,
}

/// Transport configuration.
#[derive(Clone)]
pub struct P2pConfig {
    /// This node's identity (see [`load_identity`]).
    pub identity: Keypair,
    /// Addresses to listen on, e.g. `/ip4/0.0.0.0/tcp/7510`.
    pub listen: Vec<Multiaddr>,
    /// The other signers. An entry with this node's own PeerId is ignored, so
    /// one cluster-wide list can be shared by every node.
    pub peers: Vec<PinnedPeer>,
    /// Largest message accepted or sent, in bytes (at most `u32::MAX`).
    pub max_message_bytes: usize,
    /// Time allowed for a message to be acknowledged and for a dial.
    pub request_timeout: Duration,
}

impl P2pConfig {
    /// A configuration with [`DEFAULT_MAX_MESSAGE_BYTES`] and
    /// [`DEFAULT_REQUEST_TIMEOUT`].
    pub fn new(identity: Keypair, listen: Vec<Multiaddr>, peers: Vec<PinnedPeer>) -> Self {
        Self {
            identity,
            listen,
            peers,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

impl fmt::Debug for P2pConfig {
    // Hand-written so the private key never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("P2pConfig")
            .field("peer_id", &self.identity.public().to_peer_id())
            .field("listen", &self.listen)
            .field("peers", &self.peers)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// A message received from a pinned peer.
#[derive(Clone, PartialEq, Eq)]
pub struct InboundMessage {
    /// The authenticated sender (Noise-verified, pinned).
    pub from: PeerId,
    /// Message bytes, exactly as sent.
    pub payload: Vec<u8>,
}

impl fmt::Debug for InboundMessage {
    // Payloads are protocol secrets' neighbours: show the size only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboundMessage")
            .field("from", &self.from)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

/// What is wrong with an identity file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdentityProblem {
    /// The file does not exist.
    Missing,
    /// The file exists but cannot be read (permissions, I/O error, not a file).
    Unreadable(String),
    /// The file was read but is not a protobuf-encoded libp2p keypair.
    NotAKey(String),
    /// Refusing to overwrite an existing identity file.
    AlreadyExists,
    /// Writing the new identity file failed.
    Write(String),
}

impl fmt::Display for IdentityProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityProblem::Missing => f.write_str("file not found"),
            IdentityProblem::Unreadable(e) => write!(f, "file cannot be read: {e}"),
            IdentityProblem::NotAKey(e) => write!(f, "file is not a valid identity key: {e}"),
            IdentityProblem::AlreadyExists => {
                f.write_str("file already exists; refusing to overwrite an identity")
            }
            IdentityProblem::Write(e) => write!(f, "cannot write identity file: {e}"),
        }
    }
}

/// Transport errors. Errors about a pinned peer name its node id
/// ([`P2pHandle::node_id`] maps PeerIds to node ids).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum P2pError {
    /// No connection could be made, or it was lost before the message was
    /// acknowledged.
    #[error("peer {node_id} unreachable: {reason}")]
    PeerUnreachable {
        /// Node id of the peer.
        node_id: String,
        /// What failed (dial error, connection closed, ...).
        reason: String,
    },
    /// The peer did not acknowledge the message in time.
    #[error("peer {node_id} did not acknowledge within {after:?}")]
    Timeout {
        /// Node id of the peer.
        node_id: String,
        /// The configured request timeout.
        after: Duration,
    },
    /// The peer closed the connection right after the secure handshake,
    /// before any message was exchanged on it: almost always because our
    /// PeerId is not in its pinned set.
    #[error(
        "peer {node_id} refused the connection after the handshake: \
         our PeerId {local} is probably not pinned in its configuration"
    )]
    Refused {
        /// Node id of the peer.
        node_id: String,
        /// This node's PeerId, which the peer should pin.
        local: PeerId,
    },
    /// The peer's stream failed or it answered "busy" instead of
    /// acknowledging: the message was not accepted (e.g. it exceeds the peer's
    /// size limit, or its inbound queue is full).
    #[error("peer {node_id} did not accept the message: {reason}")]
    Rejected {
        /// Node id of the peer.
        node_id: String,
        /// Why, as far as can be told from this side.
        reason: String,
    },
    /// The destination is not a pinned peer (or is this node itself).
    #[error("peer {peer_id} is not pinned in this node's configuration")]
    NotPinned {
        /// The unknown PeerId.
        peer_id: PeerId,
    },
    /// The message exceeds `max_message_bytes`; nothing was sent.
    #[error("message of {size} bytes for peer {node_id} exceeds the limit of {max} bytes")]
    MessageTooLarge {
        /// Node id of the destination.
        node_id: String,
        /// Size of the message.
        size: usize,
        /// Configured limit.
        max: usize,
    },
    /// The identity file could not be loaded or written.
    #[error("p2p identity {}: {reason}", path.display())]
    Identity {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong with it.
        reason: IdentityProblem,
    },
    /// Listening on an address failed (in use, not a TCP address, ...).
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// The configuration is invalid.
    #[error("invalid p2p configuration: {0}")]
    Config(String),
    /// The transport task has stopped (shut down or crashed).
    #[error("p2p transport is shut down")]
    Shutdown,
}

/// Counters for metrics; shared by the swarm task, codec and handles.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) refused_connections: AtomicU64,
    pub(crate) failed_handshakes: AtomicU64,
    pub(crate) rejected_messages: Arc<AtomicU64>,
    pub(crate) expired_messages: AtomicU64,
}

/// Requests from handles to the swarm task.
pub(crate) enum Command {
    Send {
        to: PeerId,
        payload: Vec<u8>,
        reply: oneshot::Sender<Result<(), P2pError>>,
    },
    ConnectedPeers(oneshot::Sender<Vec<PeerId>>),
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
}

struct Shared {
    local_peer_id: PeerId,
    node_ids: HashMap<PeerId, String>,
    max_message_bytes: usize,
    counters: Arc<Counters>,
}

/// Cheap, cloneable handle to a running transport.
#[derive(Clone)]
pub struct P2pHandle {
    cmd: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
}

impl fmt::Debug for P2pHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("P2pHandle")
            .field("local_peer_id", &self.shared.local_peer_id)
            .finish_non_exhaustive()
    }
}

impl P2pHandle {
    /// This node's PeerId.
    pub fn local_peer_id(&self) -> PeerId {
        self.shared.local_peer_id
    }

    /// Node id of a pinned peer.
    pub fn node_id(&self, peer: &PeerId) -> Option<&str> {
        self.shared.node_ids.get(peer).map(String::as_str)
    }

    /// Sends `payload` to the pinned peer `to` and waits for its
    /// acknowledgement (see the module docs for delivery and ordering).
    /// Dials the peer's pinned address if no connection is up.
    ///
    /// Dropping the returned future before the message is written cancels it.
    pub async fn send(&self, to: PeerId, payload: Vec<u8>) -> Result<(), P2pError> {
        let Some(node_id) = self.shared.node_ids.get(&to) else {
            return Err(P2pError::NotPinned { peer_id: to });
        };
        if payload.len() > self.shared.max_message_bytes {
            return Err(P2pError::MessageTooLarge {
                node_id: node_id.clone(),
                size: payload.len(),
                max: self.shared.max_message_bytes,
            });
        }
        let (reply, rx) = oneshot::channel();
        // Unbounded so that enqueueing is synchronous on first poll: that is
        // what fixes the per-peer order. Callers are local and each waits for
        // its ack, so the queue is bounded by the number of pending sends.
        self.cmd
            .send(Command::Send { to, payload, reply })
            .map_err(|_| P2pError::Shutdown)?;
        rx.await.map_err(|_| P2pError::Shutdown)?
    }

    /// Peers with at least one established connection.
    pub async fn connected_peers(&self) -> Vec<PeerId> {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Command::ConnectedPeers(tx)).is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Addresses actually bound (port 0 resolved).
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Command::ListenAddrs(tx)).is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Inbound connections refused because the remote PeerId is not pinned.
    pub fn refused_connections(&self) -> u64 {
        self.shared
            .counters
            .refused_connections
            .load(Ordering::Relaxed)
    }

    /// Inbound connections that failed before authentication (bad Noise
    /// handshake, garbage bytes, timeouts).
    pub fn failed_handshakes(&self) -> u64 {
        self.shared
            .counters
            .failed_handshakes
            .load(Ordering::Relaxed)
    }

    /// Inbound messages rejected by the codec (oversized, truncated).
    pub fn rejected_messages(&self) -> u64 {
        self.shared
            .counters
            .rejected_messages
            .load(Ordering::Relaxed)
    }

    /// Inbound messages discarded because their sender had already timed out
    /// while they waited for room in the inbound channel.
    pub fn expired_messages(&self) -> u64 {
        self.shared
            .counters
            .expired_messages
            .load(Ordering::Relaxed)
    }
}

/// The running swarm task. Dropping it, or calling [`P2pTask::shutdown`],
/// stops the transport and closes its connections and listeners. Awaiting it
/// waits until the task ends.
#[derive(Debug)]
pub struct P2pTask {
    join: Option<JoinHandle<()>>,
    stop: Option<oneshot::Sender<()>>,
}

impl P2pTask {
    /// Stops the transport and waits until its sockets are closed.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(join) = self.join.take() {
            let _ = join.await;
        }
    }

    /// Whether the task has ended.
    pub fn is_finished(&self) -> bool {
        self.join.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl Future for P2pTask {
    type Output = Result<(), P2pError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(join) = self.join.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        match Pin::new(join).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(res) => {
                self.join = None;
                Poll::Ready(res.map_err(|_| P2pError::Shutdown))
            }
        }
    }
}

impl Drop for P2pTask {
    fn drop(&mut self) {
        if let Some(join) = self.join.take() {
            join.abort();
        }
    }
}

/// The composed behaviour. Field order matters: the allow list and limits
/// are consulted first, so a refused connection never reaches the
/// request-response behaviour.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) allow: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) rr: request_response::Behaviour<codec::BytesCodec>,
}

/// Pending inbound handshakes allowed at once: bounds the work an unpinned
/// host can make us do with connection floods.
const MAX_PENDING_INCOMING: u32 = 64;
/// Connections per peer: room for simultaneous dials and a restart racing
/// the old connection's teardown, but not for a connection flood.
const MAX_ESTABLISHED_PER_PEER: u32 = 4;

/// The transport dials plain TCP over IP only (no DNS resolver is built in):
/// catch other address forms at start-up, naming the peer, rather than at
/// the first send of a signing session.
fn check_dial_addr(p: &PinnedPeer) -> Result<(), P2pError> {
    use libp2p::multiaddr::Protocol;
    let bad = |why: &str| P2pError::Config(format!("peer {} address {}: {why}", p.node_id, p.addr));
    let mut parts = p.addr.iter();
    match parts.next() {
        Some(Protocol::Ip4(_) | Protocol::Ip6(_)) => {}
        _ => {
            return Err(bad(
                "must start with /ip4/ or /ip6/ (DNS names are not supported)",
            ));
        }
    }
    match parts.next() {
        Some(Protocol::Tcp(port)) if port != 0 => {}
        _ => return Err(bad("must continue with /tcp/<port> (port not 0)")),
    }
    match parts.next() {
        None => Ok(()),
        Some(Protocol::P2p(id)) if id == p.peer_id && parts.next().is_none() => Ok(()),
        Some(Protocol::P2p(id)) if id != p.peer_id => Err(bad(&format!(
            "embeds PeerId {id}, not the pinned {}",
            p.peer_id
        ))),
        Some(_) => Err(bad("unexpected components after /tcp/<port>")),
    }
}

fn validate(cfg: &P2pConfig, local: PeerId) -> Result<HashMap<PeerId, PinnedPeer>, P2pError> {
    if cfg.max_message_bytes == 0 || u32::try_from(cfg.max_message_bytes).is_err() {
        return Err(P2pError::Config(format!(
            "max_message_bytes must be between 1 and {} (got {})",
            u32::MAX,
            cfg.max_message_bytes
        )));
    }
    if cfg.request_timeout.is_zero() {
        return Err(P2pError::Config(
            "request_timeout must be greater than zero".into(),
        ));
    }
    let mut peers = HashMap::new();
    let mut node_ids = HashSet::new();
    for p in &cfg.peers {
        if p.node_id.is_empty() {
            return Err(P2pError::Config(format!(
                "peer {} has an empty node_id",
                p.peer_id
            )));
        }
        if !node_ids.insert(p.node_id.as_str()) {
            return Err(P2pError::Config(format!(
                "node_id {} is listed twice in peers",
                p.node_id
            )));
        }
        if p.peer_id == local {
            continue;
        }
        check_dial_addr(p)?;
        if peers.insert(p.peer_id, p.clone()).is_some() {
            return Err(P2pError::Config(format!(
                "peer_id {} is listed twice in peers",
                p.peer_id
            )));
        }
    }
    Ok(peers)
}

/// Starts the transport: binds the listen addresses (returning once they are
/// bound, so [`P2pHandle::listen_addrs`] reports real ports) and spawns the
/// swarm task on the current tokio runtime.
pub async fn start(
    cfg: P2pConfig,
) -> Result<(P2pHandle, mpsc::Receiver<InboundMessage>, P2pTask), P2pError> {
    let local = cfg.identity.public().to_peer_id();
    let peers = validate(&cfg, local)?;
    let counters = Arc::new(Counters::default());

    let mut swarm = task::build_swarm(&cfg, &peers, &counters)?;
    let (listen_addrs, early_events) =
        task::listen(&mut swarm, &cfg.listen, cfg.request_timeout).await?;

    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (in_tx, in_rx) = mpsc::channel(INBOUND_CHANNEL_CAPACITY);
    let (stop_tx, stop_rx) = oneshot::channel();
    let shared = Arc::new(Shared {
        local_peer_id: local,
        node_ids: peers
            .iter()
            .map(|(id, p)| (*id, p.node_id.clone()))
            .collect(),
        max_message_bytes: cfg.max_message_bytes,
        counters: counters.clone(),
    });
    tracing::info!(
        peer_id = %local,
        listen = ?listen_addrs,
        pinned = peers.len(),
        "p2p transport started"
    );
    let driver = task::Driver::new(
        swarm,
        peers,
        counters,
        in_tx,
        cfg.request_timeout,
        listen_addrs,
        early_events,
    );
    let join = tokio::spawn(driver.run(cmd_rx, stop_rx));
    Ok((
        P2pHandle {
            cmd: cmd_tx,
            shared,
        },
        in_rx,
        P2pTask {
            join: Some(join),
            stop: Some(stop_tx),
        },
    ))
}
