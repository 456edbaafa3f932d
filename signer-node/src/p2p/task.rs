//! The swarm task: owns the libp2p `Swarm` and serves handle commands.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use libp2p::core::transport::ListenerId;
use libp2p::core::upgrade::Version;
use libp2p::request_response::{
    self, Event as RrEvent, Message, OutboundFailure, OutboundRequestId, ProtocolSupport,
    ResponseChannel,
};
use libp2p::swarm::{ConnectionId, ListenError, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, Swarm, SwarmBuilder, allow_block_list, connection_limits, noise, tcp, yamux,
};
use tokio::sync::{mpsc, oneshot};

use super::codec::{Ack, BytesCodec, PROTOCOL};
use super::{
    Behaviour, BehaviourEvent, Command, Counters, IDLE_CONNECTION_TIMEOUT, InboundMessage,
    MAX_ESTABLISHED_PER_PEER, MAX_PENDING_INCOMING, MAX_PENDING_PER_PEER, P2pConfig, P2pError,
    PinnedPeer,
};

type Reply = oneshot::Sender<Result<(), P2pError>>;

/// Concurrent substreams per connection (see `build_swarm`).
const MAX_STREAMS_PER_CONNECTION: usize = 8;

/// Closed connections remembered for classifying late failure events.
const CLOSED_MEMORY: usize = 64;

pub(super) fn build_swarm(
    cfg: &P2pConfig,
    peers: &HashMap<PeerId, PinnedPeer>,
    counters: &Arc<Counters>,
) -> Result<Swarm<Behaviour>, P2pError> {
    let mut allow = allow_block_list::Behaviour::<allow_block_list::AllowedPeers>::default();
    for peer in peers.keys() {
        allow.allow_peer(*peer);
    }
    let limits = connection_limits::Behaviour::new(
        connection_limits::ConnectionLimits::default()
            .with_max_pending_incoming(Some(MAX_PENDING_INCOMING))
            .with_max_established_per_peer(Some(MAX_ESTABLISHED_PER_PEER)),
    );
    let rr = request_response::Behaviour::with_codec(
        BytesCodec::new(cfg.max_message_bytes, counters.rejected_messages.clone()),
        [(PROTOCOL, ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(cfg.request_timeout)
            // Per connection, inbound + outbound. Honest peers keep one
            // message in flight each way; the cap bounds what a misbehaving
            // pinned peer can make us buffer (streams × max_message_bytes).
            .with_max_concurrent_streams(MAX_STREAMS_PER_CONNECTION),
    );
    let behaviour = Behaviour { allow, limits, rr };
    let swarm = SwarmBuilder::with_existing_identity(cfg.identity.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| P2pError::Config(format!("noise setup failed: {e}")))?
        .with_behaviour(|_| behaviour)
        .map_err(|e| P2pError::Config(format!("behaviour setup failed: {e}")))?
        .with_swarm_config(|c| {
            c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT)
                // Every node speaks exactly one protocol, so the stream opener
                // can send its request together with the protocol proposal
                // instead of waiting a round trip for the confirmation.
                .with_substream_upgrade_protocol_override(Version::V1Lazy)
        })
        // Bounds TCP connect + Noise + Yamux for dials and inbound upgrades,
        // so an unreachable host fails a send within the request timeout.
        .with_connection_timeout(cfg.request_timeout)
        .build();
    Ok(swarm)
}

/// Binds every listen address and waits until each reports its real address.
pub(super) async fn listen(
    swarm: &mut Swarm<Behaviour>,
    addrs: &[Multiaddr],
    timeout: Duration,
) -> Result<(Vec<Multiaddr>, Vec<SwarmEvent<BehaviourEvent>>), P2pError> {
    let mut waiting: HashMap<ListenerId, Multiaddr> = HashMap::new();
    for addr in addrs {
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| P2pError::Listen {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
        waiting.insert(id, addr.clone());
    }
    let mut bound = Vec::new();
    let mut other = Vec::new();
    let wait = async {
        while !waiting.is_empty() {
            let Some(ev) = swarm.next().await else {
                return Err(P2pError::Shutdown);
            };
            match ev {
                SwarmEvent::NewListenAddr {
                    listener_id,
                    address,
                } => {
                    waiting.remove(&listener_id);
                    bound.push(address);
                }
                SwarmEvent::ListenerError { listener_id, error }
                | SwarmEvent::ListenerClosed {
                    listener_id,
                    reason: Err(error),
                    ..
                } => {
                    let addr = waiting
                        .get(&listener_id)
                        .cloned()
                        .unwrap_or_else(Multiaddr::empty);
                    return Err(P2pError::Listen {
                        addr,
                        reason: error.to_string(),
                    });
                }
                // Anything else (an early inbound connection) is replayed
                // by the driver so no request goes unanswered.
                ev => other.push(ev),
            }
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(res) => res?,
        Err(_) => {
            let addr = waiting
                .into_values()
                .next()
                .unwrap_or_else(Multiaddr::empty);
            return Err(P2pError::Listen {
                addr,
                reason: format!("listener not ready within {timeout:?}"),
            });
        }
    }
    Ok((bound, other))
}

/// Outbound state for one peer: at most one message on the wire, the rest
/// queued in call order (this is what gives per-peer ordering).
#[derive(Default)]
struct PeerOut {
    in_flight: Option<(OutboundRequestId, Reply)>,
    queue: VecDeque<(Vec<u8>, Reply)>,
}

/// A received message waiting for room in the inbound channel; its ack is
/// withheld until it is delivered.
struct PendingInbound {
    from: PeerId,
    payload: Vec<u8>,
    channel: ResponseChannel<Ack>,
}

pub(super) struct Driver {
    swarm: Swarm<Behaviour>,
    peers: HashMap<PeerId, PinnedPeer>,
    counters: Arc<Counters>,
    inbound: mpsc::Sender<InboundMessage>,
    inbound_closed: bool,
    request_timeout: Duration,
    listen_addrs: Vec<Multiaddr>,
    early_events: Vec<SwarmEvent<BehaviourEvent>>,
    outbound: HashMap<PeerId, PeerOut>,
    pending_inbound: VecDeque<PendingInbound>,
    pending_per_peer: HashMap<PeerId, usize>,
    /// Connections on which at least one message was exchanged: the remote
    /// accepted them, so their loss is "unreachable", not "refused".
    proven: HashSet<ConnectionId>,
    closed: VecDeque<(ConnectionId, bool)>,
    last_dial_error: HashMap<PeerId, String>,
}

impl Driver {
    pub(super) fn new(
        swarm: Swarm<Behaviour>,
        peers: HashMap<PeerId, PinnedPeer>,
        counters: Arc<Counters>,
        inbound: mpsc::Sender<InboundMessage>,
        request_timeout: Duration,
        listen_addrs: Vec<Multiaddr>,
        early_events: Vec<SwarmEvent<BehaviourEvent>>,
    ) -> Self {
        Self {
            swarm,
            peers,
            counters,
            inbound,
            inbound_closed: false,
            request_timeout,
            listen_addrs,
            early_events,
            outbound: HashMap::new(),
            pending_inbound: VecDeque::new(),
            pending_per_peer: HashMap::new(),
            proven: HashSet::new(),
            closed: VecDeque::new(),
            last_dial_error: HashMap::new(),
        }
    }

    pub(super) async fn run(
        mut self,
        mut cmds: mpsc::UnboundedReceiver<Command>,
        mut stop: oneshot::Receiver<()>,
    ) {
        for ev in std::mem::take(&mut self.early_events) {
            self.on_swarm_event(ev);
        }
        let mut cmds_open = true;
        loop {
            let inbound = self.inbound.clone();
            let want_permit = !self.pending_inbound.is_empty() && !self.inbound_closed;
            tokio::select! {
                _ = &mut stop => break,
                ev = self.swarm.select_next_some() => self.on_swarm_event(ev),
                cmd = cmds.recv(), if cmds_open => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    // Every handle is gone; keep serving inbound traffic
                    // until the task itself is stopped.
                    None => cmds_open = false,
                },
                permit = inbound.reserve(), if want_permit => match permit {
                    Ok(permit) => self.deliver_one(permit),
                    Err(_) => self.on_inbound_closed(),
                },
            }
        }
        // Fail whatever is still waiting so callers do not hang.
        for (_, mut out) in self.outbound.drain() {
            if let Some((_, reply)) = out.in_flight.take() {
                let _ = reply.send(Err(P2pError::Shutdown));
            }
            for (_, reply) in out.queue.drain(..) {
                let _ = reply.send(Err(P2pError::Shutdown));
            }
        }
        tracing::info!(peer_id = %self.swarm.local_peer_id(), "p2p transport stopped");
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Send { to, payload, reply } => {
                if !self.peers.contains_key(&to) {
                    let _ = reply.send(Err(P2pError::NotPinned { peer_id: to }));
                    return;
                }
                let out = self.outbound.entry(to).or_default();
                out.queue.push_back((payload, reply));
                if out.in_flight.is_none() {
                    self.start_next(to);
                }
            }
            Command::ConnectedPeers(reply) => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
            Command::ListenAddrs(reply) => {
                let _ = reply.send(self.listen_addrs.clone());
            }
        }
    }

    /// Puts the next live queued message for `peer` on the wire.
    fn start_next(&mut self, peer: PeerId) {
        let Some(pinned) = self.peers.get(&peer) else {
            return;
        };
        let Some(out) = self.outbound.get_mut(&peer) else {
            return;
        };
        if out.in_flight.is_some() {
            return;
        }
        while let Some((payload, reply)) = out.queue.pop_front() {
            if reply.is_closed() {
                // The caller dropped its send future: cancelled, not sent.
                continue;
            }
            let id = self.swarm.behaviour_mut().rr.send_request_with_addresses(
                &peer,
                payload,
                vec![pinned.addr.clone()],
            );
            out.in_flight = Some((id, reply));
            return;
        }
        self.outbound.remove(&peer);
    }

    /// Completes the in-flight message to `peer` (if `id` matches) and
    /// starts the next one.
    fn complete(&mut self, peer: PeerId, id: OutboundRequestId, res: Result<(), P2pError>) {
        let Some(out) = self.outbound.get_mut(&peer) else {
            return;
        };
        match &out.in_flight {
            Some((current, _)) if *current == id => {}
            _ => return,
        }
        let fail_queue = matches!(
            res,
            Err(P2pError::PeerUnreachable { .. }
                | P2pError::Refused { .. }
                | P2pError::Timeout { .. })
        );
        if let Some((_, reply)) = out.in_flight.take() {
            if fail_queue && let Err(e) = &res {
                for (_, queued) in out.queue.drain(..) {
                    let _ = queued.send(Err(e.clone()));
                }
            }
            let _ = reply.send(res);
        }
        self.start_next(peer);
    }

    fn node_id(&self, peer: &PeerId) -> String {
        self.peers
            .get(peer)
            .map_or_else(|| peer.to_string(), |p| p.node_id.clone())
    }

    fn was_proven(&self, conn: ConnectionId) -> bool {
        self.proven.contains(&conn) || self.closed.iter().any(|(c, proven)| *c == conn && *proven)
    }

    fn is_closed(&self, conn: ConnectionId) -> bool {
        self.closed.iter().any(|(c, _)| *c == conn)
    }

    fn classify(&mut self, peer: PeerId, conn: ConnectionId, failure: OutboundFailure) -> P2pError {
        let node_id = self.node_id(&peer);
        match failure {
            OutboundFailure::DialFailure => {
                let addr = self
                    .peers
                    .get(&peer)
                    .map(|p| p.addr.to_string())
                    .unwrap_or_default();
                let detail = self
                    .last_dial_error
                    .remove(&peer)
                    .unwrap_or_else(|| "dial failed".into());
                P2pError::PeerUnreachable {
                    node_id,
                    reason: format!("cannot connect to {addr}: {detail}"),
                }
            }
            OutboundFailure::Timeout => P2pError::Timeout {
                node_id,
                after: self.request_timeout,
            },
            OutboundFailure::ConnectionClosed if !self.was_proven(conn) => P2pError::Refused {
                node_id,
                local: *self.swarm.local_peer_id(),
            },
            OutboundFailure::ConnectionClosed => P2pError::PeerUnreachable {
                node_id,
                reason: "connection closed before the message was acknowledged".into(),
            },
            OutboundFailure::UnsupportedProtocols => P2pError::Rejected {
                node_id,
                reason: format!("peer does not speak {PROTOCOL}"),
            },
            OutboundFailure::Io(e) if self.is_closed(conn) && !self.was_proven(conn) => {
                tracing::debug!(peer = %node_id, error = %e, "stream failed on refused connection");
                P2pError::Refused {
                    node_id,
                    local: *self.swarm.local_peer_id(),
                }
            }
            OutboundFailure::Io(e) if self.is_closed(conn) => P2pError::PeerUnreachable {
                node_id,
                reason: format!("connection lost before the message was acknowledged: {e}"),
            },
            OutboundFailure::Io(e) => P2pError::Rejected {
                node_id,
                reason: format!(
                    "stream closed without acknowledgement ({e}); \
                     the message may exceed the peer's size limit"
                ),
            },
        }
    }

    fn on_swarm_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::Behaviour(BehaviourEvent::Rr(ev)) => self.on_rr_event(ev),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                tracing::debug!(
                    peer = %self.node_id(&peer_id),
                    ?connection_id,
                    remote = %endpoint.get_remote_address(),
                    "p2p connection established"
                );
                if endpoint.is_listener() {
                    // The peer dialled us, so it pins us: losing this
                    // connection is never a refusal.
                    self.proven.insert(connection_id);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                cause,
                ..
            } => {
                let proven = self.proven.remove(&connection_id);
                if self.closed.len() >= CLOSED_MEMORY {
                    self.closed.pop_front();
                }
                self.closed.push_back((connection_id, proven));
                tracing::debug!(
                    peer = %self.node_id(&peer_id),
                    ?connection_id,
                    cause = ?cause,
                    "p2p connection closed"
                );
            }
            SwarmEvent::IncomingConnectionError {
                error,
                send_back_addr,
                peer_id,
                ..
            } => self.on_incoming_error(error, &send_back_addr, peer_id),
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => {
                tracing::debug!(peer = %self.node_id(&peer), error = %error, "p2p dial failed");
                self.last_dial_error
                    .insert(peer, dial_error_summary(&error));
            }
            SwarmEvent::NewListenAddr { address, .. } if !self.listen_addrs.contains(&address) => {
                self.listen_addrs.push(address);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| *a != address);
            }
            SwarmEvent::ListenerError { error, .. } => {
                tracing::warn!(error = %error, "p2p listener error");
            }
            SwarmEvent::ListenerClosed {
                addresses, reason, ..
            } => {
                tracing::warn!(?addresses, ?reason, "p2p listener closed");
                self.listen_addrs.retain(|a| !addresses.contains(a));
            }
            _ => {}
        }
    }

    fn on_incoming_error(&mut self, error: ListenError, from: &Multiaddr, peer: Option<PeerId>) {
        match error {
            ListenError::Denied { cause } => {
                if cause
                    .downcast_ref::<allow_block_list::NotAllowed>()
                    .is_some()
                {
                    self.counters
                        .refused_connections
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        remote = %from,
                        peer_id = ?peer,
                        "refused p2p connection from unpinned peer"
                    );
                } else {
                    tracing::warn!(remote = %from, peer_id = ?peer, cause = %cause, "p2p connection denied");
                }
            }
            other => {
                self.counters
                    .failed_handshakes
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(remote = %from, error = %other, "inbound p2p handshake failed");
            }
        }
    }

    fn on_rr_event(&mut self, ev: RrEvent<Vec<u8>, Ack>) {
        match ev {
            RrEvent::Message {
                peer,
                connection_id,
                message,
            } => {
                self.proven.insert(connection_id);
                match message {
                    Message::Request {
                        request, channel, ..
                    } => self.on_request(peer, request, channel),
                    Message::Response {
                        request_id,
                        response,
                    } => {
                        let res = match response {
                            Ack::Accepted => Ok(()),
                            Ack::Busy => Err(P2pError::Rejected {
                                node_id: self.node_id(&peer),
                                reason: "peer is busy: its inbound queue is full".into(),
                            }),
                        };
                        self.complete(peer, request_id, res);
                    }
                }
            }
            RrEvent::OutboundFailure {
                peer,
                connection_id,
                request_id,
                error,
            } => {
                if matches!(error, OutboundFailure::Timeout) {
                    // A connection that swallowed a message for a whole
                    // request timeout may be half-open (peer host lost,
                    // partition): TCP alone can take hours to notice. Close
                    // it so the next send dials the pinned address afresh.
                    tracing::info!(
                        peer = %self.node_id(&peer),
                        ?connection_id,
                        "closing p2p connection after a send timed out"
                    );
                    self.swarm.close_connection(connection_id);
                }
                let err = self.classify(peer, connection_id, error);
                tracing::debug!(error = %err, "p2p send failed");
                self.complete(peer, request_id, Err(err));
            }
            RrEvent::InboundFailure { peer, error, .. } => {
                tracing::debug!(peer = %self.node_id(&peer), error = %error, "p2p inbound failure");
            }
            RrEvent::ResponseSent { .. } => {}
        }
    }

    fn on_request(&mut self, from: PeerId, payload: Vec<u8>, channel: ResponseChannel<Ack>) {
        if !self.peers.contains_key(&from) {
            // Unreachable while the allow list works; dropping the channel
            // means no ack, so the sender sees a failure.
            tracing::warn!(peer_id = %from, "dropping message from unpinned peer");
            return;
        }
        if self.inbound_closed {
            return;
        }
        if self.pending_inbound.is_empty() {
            match self.inbound.try_send(InboundMessage { from, payload }) {
                Ok(()) => {
                    self.ack(channel, Ack::Accepted);
                    return;
                }
                Err(mpsc::error::TrySendError::Full(msg)) => {
                    self.enqueue(msg.from, msg.payload, channel);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.on_inbound_closed();
                    return;
                }
            }
        }
        self.enqueue(from, payload, channel);
    }

    fn enqueue(&mut self, from: PeerId, payload: Vec<u8>, channel: ResponseChannel<Ack>) {
        let count = self.pending_per_peer.entry(from).or_default();
        if *count >= MAX_PENDING_PER_PEER {
            tracing::warn!(peer = %self.node_id(&from), "inbound queue full, answering busy");
            self.ack(channel, Ack::Busy);
            return;
        }
        *count += 1;
        self.pending_inbound.push_back(PendingInbound {
            from,
            payload,
            channel,
        });
    }

    fn deliver_one(&mut self, permit: mpsc::Permit<'_, InboundMessage>) {
        let Some(p) = self.pending_inbound.pop_front() else {
            return;
        };
        if let Some(count) = self.pending_per_peer.get_mut(&p.from) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.pending_per_peer.remove(&p.from);
            }
        }
        if !p.channel.is_open() {
            // The sender already got a timeout for this message; delivering
            // it now would turn a reported failure into a hidden success.
            self.counters
                .expired_messages
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                peer = %self.node_id(&p.from),
                "discarding inbound message whose sender timed out while the receiver was full"
            );
            return;
        }
        permit.send(InboundMessage {
            from: p.from,
            payload: p.payload,
        });
        self.ack(p.channel, Ack::Accepted);
    }

    fn on_inbound_closed(&mut self) {
        if !self.inbound_closed {
            tracing::warn!(
                "p2p inbound receiver dropped; inbound messages are no longer acknowledged"
            );
        }
        self.inbound_closed = true;
        // Dropping the channels withholds acks: senders see failures.
        self.pending_inbound.clear();
        self.pending_per_peer.clear();
    }

    fn ack(&mut self, channel: ResponseChannel<Ack>, ack: Ack) {
        if self
            .swarm
            .behaviour_mut()
            .rr
            .send_response(channel, ack)
            .is_err()
        {
            tracing::debug!("p2p response channel closed before the ack could be sent");
        }
    }
}

fn dial_error_summary(e: &libp2p::swarm::DialError) -> String {
    // DialError's Display for Transport errors lists each address with its
    // io error; keep it, it is short and contains no secrets.
    e.to_string()
}
