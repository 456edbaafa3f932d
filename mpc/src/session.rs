//! Adapts a service's byte channels to a `round_based` party, checking each
//! inbound frame and remembering who broke the rules.

use std::sync::{Arc, Mutex};

use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use round_based::{Incoming, MessageDestination, MessageType, Outgoing};
use serde::{Serialize, de::DeserializeOwned};

use crate::eid::ExecutionId;
use crate::wire::Frame;

/// A frame received from a peer the transport authenticated.
#[derive(Debug)]
pub struct Inbound {
    /// Session-local index of the authenticated sender (mapped by the service
    /// from the transport identity, never taken from the frame).
    pub from: u16,
    /// The encoded [`Frame`].
    pub bytes: Vec<u8>,
}

/// A frame the protocol wants sent.
#[derive(Debug)]
pub struct Outbound {
    /// `None`: every other participant; `Some(j)`: only party `j`.
    pub to: Option<u16>,
    /// The encoded [`Frame`].
    pub bytes: Vec<u8>,
}

/// Everything one party needs to run one session.
pub struct SessionIo {
    /// The session's execution id, derived by this party itself.
    pub eid: ExecutionId,
    /// This party's session-local index.
    pub me: u16,
    /// Number of parties in the session.
    pub parties: u16,
    /// Frames from peers.
    pub inbound: mpsc::Receiver<Inbound>,
    /// Frames to peers.
    pub outbound: mpsc::UnboundedSender<Outbound>,
    /// Set by the session's owner to stop the protocol work (see [`crate::cancel`]).
    pub cancel: crate::cancel::CancelToken,
}

/// What the session observed about peers, for error attribution.
#[derive(Debug, Default)]
pub struct Observed {
    /// First misbehaviour seen: (party, reason).
    pub culprit: Option<(u16, String)>,
    /// Messages received per party, to name the absent ones on a timeout.
    pub received: Vec<u64>,
}

/// Shared handle on [`Observed`].
pub type ObservedHandle = Arc<Mutex<Observed>>;

/// Error surfaced into the protocol when an inbound frame is rejected.
#[derive(Debug, thiserror::Error)]
#[error("party {party}: {reason}")]
pub struct DeliveryError {
    /// Culprit.
    pub party: u16,
    /// Why its frame was rejected.
    pub reason: String,
}

/// Error surfaced into the protocol when the outbound channel is gone.
#[derive(Debug, thiserror::Error)]
#[error("outbound channel closed")]
pub struct SendClosed;

/// Builds the `round_based` delivery for message type `M` and the handle
/// through which the caller learns who misbehaved.
#[allow(clippy::type_complexity)]
pub(crate) fn delivery<M>(
    io: SessionIo,
) -> (
    impl futures::Stream<Item = Result<Incoming<M>, DeliveryError>> + Unpin,
    impl futures::Sink<Outgoing<M>, Error = SendClosed> + Unpin,
    ObservedHandle,
)
where
    M: Serialize + DeserializeOwned,
{
    let SessionIo {
        eid,
        me,
        parties,
        inbound,
        outbound,
        cancel: _,
    } = io;
    let observed: ObservedHandle = Arc::new(Mutex::new(Observed {
        culprit: None,
        received: vec![0; usize::from(parties)],
    }));

    let obs = observed.clone();
    let mut next_id = 0u64;
    let incoming = inbound.map(move |Inbound { from, bytes }| {
        let checked = check_frame::<M>(eid, me, parties, from, &bytes);
        let mut o = obs.lock().unwrap_or_else(|p| p.into_inner());
        match checked {
            Ok((msg, msg_type)) => {
                if let Some(c) = o.received.get_mut(usize::from(from)) {
                    *c += 1;
                }
                next_id += 1;
                Ok(Incoming {
                    id: next_id,
                    sender: from,
                    msg_type,
                    msg,
                })
            }
            Err(reason) => {
                if o.culprit.is_none() {
                    o.culprit = Some((from, reason.clone()));
                }
                Err(DeliveryError {
                    party: from,
                    reason,
                })
            }
        }
    });

    let outgoing = outbound
        .sink_map_err(|_| SendClosed)
        .with(move |out: Outgoing<M>| {
            let to = match out.recipient {
                MessageDestination::AllParties => None,
                MessageDestination::OneParty(j) => Some(j),
            };
            let frame = serde_json::to_vec(&out.msg)
                .map(|payload| Outbound {
                    to,
                    bytes: Frame {
                        eid,
                        sender: me,
                        recipient: to,
                        payload,
                    }
                    .encode(),
                })
                .map_err(|_| SendClosed);
            futures::future::ready(frame)
        });
    (incoming, Box::pin(outgoing), observed)
}

/// Checks one inbound frame: it must parse, belong to this execution, come
/// from the party the transport authenticated, be addressed to us, and hold a
/// well-formed round message.
fn check_frame<M: DeserializeOwned>(
    eid: ExecutionId,
    me: u16,
    parties: u16,
    from: u16,
    bytes: &[u8],
) -> Result<(M, MessageType), String> {
    if from >= parties || from == me {
        return Err(format!("sender index {from} is not a peer in this session"));
    }
    let frame = Frame::decode(bytes).map_err(|e| format!("malformed frame: {e}"))?;
    if frame.eid != eid {
        return Err(format!(
            "message from another session (execution id {}), replay rejected",
            &frame.eid.to_hex()[..16]
        ));
    }
    if frame.sender != from {
        return Err(format!("frame claims to be from party {}", frame.sender));
    }
    let msg_type = match frame.recipient {
        None => MessageType::Broadcast,
        Some(r) if r == me => MessageType::P2P,
        Some(r) => return Err(format!("p2p message addressed to party {r}, not to us")),
    };
    let msg = serde_json::from_slice(&frame.payload)
        .map_err(|e| format!("malformed protocol message: {e}"))?;
    Ok((msg, msg_type))
}
