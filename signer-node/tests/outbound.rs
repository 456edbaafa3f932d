//! Session frame delivery over the real transport: resends until a peer
//! acknowledges, in order, to the end of the protocol; names a peer that
//! never does; the receiving router keeps one copy of a resent frame.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers outside #[test] fns

mod common;
use common::{free_addr, pinned};

use std::time::{Duration, Instant};

use custos_mpc::{ExecutionId, Outbound, SessionKind};
use custos_signer_node::node::FaultInjection;
use custos_signer_node::outbound::forward;
use custos_signer_node::p2p::{self, InboundMessage, P2pConfig, P2pHandle, P2pTask, PinnedPeer};
use custos_signer_node::sessions::SessionRouter;
use futures::StreamExt;
use futures::channel::mpsc;
use libp2p::Multiaddr;
use libp2p::identity::Keypair;
use tokio::sync::mpsc::Receiver;

async fn start(
    key: &Keypair,
    addr: &Multiaddr,
    peer: PinnedPeer,
) -> (P2pHandle, Receiver<InboundMessage>, P2pTask) {
    p2p::start(P2pConfig {
        identity: key.clone(),
        listen: vec![addr.clone()],
        peers: vec![peer],
        max_message_bytes: p2p::DEFAULT_MAX_MESSAGE_BYTES,
        request_timeout: Duration::from_secs(2),
    })
    .await
    .unwrap()
}

fn frame(i: u32) -> Vec<u8> {
    let mut v = i.to_be_bytes().to_vec();
    v.extend(std::iter::repeat_n(i as u8, 64));
    v
}

/// Node A (party 0) with node B (party 1) pinned; B is only addressed.
struct Pair {
    a: P2pHandle,
    _a_task: P2pTask,
    kb: Keypair,
    ab: Multiaddr,
    ka: Keypair,
    aa: Multiaddr,
}

async fn a_only() -> Pair {
    let (ka, kb) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let (aa, ab) = (free_addr(), free_addr());
    let (a, _rx, task) = start(&ka, &aa, pinned("node-b", &kb, &ab)).await;
    Pair {
        a,
        _a_task: task,
        kb,
        ab,
        ka,
        aa,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_reach_a_peer_that_starts_late_in_order_even_after_the_protocol_ended() {
    let p = a_only().await;
    let (tx, rx) = mpsc::unbounded();
    let peers = vec![None, Some(p.kb.public().to_peer_id())];
    let sender = tokio::spawn(forward(
        p.a.clone(),
        peers,
        rx,
        FaultInjection::None,
        Duration::from_secs(10),
    ));
    // The protocol sends everything and finishes before the peer listens.
    for i in 0..20 {
        let to = if i % 2 == 0 { None } else { Some(1) };
        tx.unbounded_send(Outbound {
            to,
            bytes: frame(i),
        })
        .unwrap();
    }
    drop(tx);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (_b, mut b_rx, _b_task) = start(&p.kb, &p.ab, pinned("node-a", &p.ka, &p.aa)).await;
    let mut got = Vec::new();
    while got.len() < 20 {
        let m = tokio::time::timeout(Duration::from_secs(10), b_rx.recv())
            .await
            .expect("every frame arrives once the peer listens")
            .unwrap();
        got.push(m.payload);
    }
    // A resent frame may arrive twice (its first ack was lost); the
    // router drops such copies. Order is kept.
    got.dedup();
    assert_eq!(got, (0..20).map(frame).collect::<Vec<_>>());
    tokio::time::timeout(Duration::from_secs(10), sender)
        .await
        .expect("forwarding ends once the queue is drained")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_acknowledges_is_named_within_the_deadline() {
    let p = a_only().await;
    let (tx, rx) = mpsc::unbounded();
    let started = Instant::now();
    let sender = tokio::spawn(forward(
        p.a.clone(),
        vec![None, Some(p.kb.public().to_peer_id())],
        rx,
        FaultInjection::None,
        Duration::from_secs(2),
    ));
    tx.unbounded_send(Outbound {
        to: None,
        bytes: frame(1),
    })
    .unwrap();
    // The protocol is still running (sender kept): the failure must come
    // from the delivery deadline, not from the protocol ending.
    let err = tokio::time::timeout(Duration::from_secs(10), sender)
        .await
        .expect("fails fast")
        .unwrap()
        .unwrap_err();
    assert_eq!(err.node, "node-b", "{err:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(5),
        "gave up after {took:?}"
    );
    drop(tx);
}

#[test]
fn the_router_keeps_one_copy_of_a_resent_frame() {
    let router = SessionRouter::default();
    let parties = vec!["signer-1".to_owned(), "signer-2".to_owned()];
    let eid = ExecutionId::derive(SessionKind::Sign, "k", &["signer-1", "signer-2"], b"r");
    // One copy arrives before the session exists, one after, one more later.
    router.deliver(eid, "signer-2", frame(7));
    let mut rx = router.register(eid, parties);
    router.deliver(eid, "signer-2", frame(7));
    router.deliver(eid, "signer-2", frame(8));
    router.deliver(eid, "signer-2", frame(7));
    let counts = router.unregister(&eid).unwrap();
    let got: Vec<Vec<u8>> = futures::executor::block_on(async {
        let mut v = Vec::new();
        while let Some(m) = rx.next().await {
            assert_eq!(m.from, 1);
            v.push(m.bytes);
        }
        v
    });
    assert_eq!(got, vec![frame(7), frame(8)]);
    assert_eq!(
        counts,
        vec![("signer-1".to_owned(), 0), ("signer-2".to_owned(), 2)]
    );
}
