//! Integration tests for the signer ↔ signer transport: real swarms on
//! 127.0.0.1, real TCP, Noise and Yamux.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers outside #[test] fns

mod common;
use common::{free_addr, pinned};

use std::io::{BufRead, BufReader};
use std::net::TcpListener as StdTcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use custos_signer_node::p2p::{
    self, IdentityProblem, InboundMessage, P2pConfig, P2pError, P2pHandle, P2pTask, PinnedPeer,
};
use futures::future::join_all;
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::Receiver;

const TIMEOUT: Duration = Duration::from_secs(3);

struct Node {
    node_id: String,
    key: Keypair,
    addr: Multiaddr,
    handle: P2pHandle,
    rx: Receiver<InboundMessage>,
    task: P2pTask,
}

impl Node {
    fn peer_id(&self) -> PeerId {
        self.key.public().to_peer_id()
    }

    fn pinned(&self) -> PinnedPeer {
        PinnedPeer {
            node_id: self.node_id.clone(),
            peer_id: self.peer_id(),
            addr: self.addr.clone(),
        }
    }
}

async fn start_node(
    node_id: &str,
    key: Keypair,
    addr: Multiaddr,
    peers: Vec<PinnedPeer>,
    max_message_bytes: usize,
) -> Node {
    start_node_with_timeout(node_id, key, addr, peers, max_message_bytes, TIMEOUT).await
}

async fn start_node_with_timeout(
    node_id: &str,
    key: Keypair,
    addr: Multiaddr,
    peers: Vec<PinnedPeer>,
    max_message_bytes: usize,
    request_timeout: Duration,
) -> Node {
    let cfg = P2pConfig {
        identity: key.clone(),
        listen: vec![addr.clone()],
        peers,
        max_message_bytes,
        request_timeout,
    };
    let (handle, rx, task) = p2p::start(cfg).await.unwrap();
    assert_eq!(handle.listen_addrs().await, vec![addr.clone()]);
    Node {
        node_id: node_id.into(),
        key,
        addr,
        handle,
        rx,
        task,
    }
}

/// Two nodes pinning each other.
async fn pair(max_a: usize, max_b: usize) -> (Node, Node) {
    let (ka, kb) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let (aa, ab) = (free_addr(), free_addr());
    let a = start_node(
        "node-a",
        ka.clone(),
        aa.clone(),
        vec![pinned("node-b", &kb, &ab)],
        max_a,
    )
    .await;
    let b = start_node("node-b", kb, ab, vec![pinned("node-a", &ka, &aa)], max_b).await;
    (a, b)
}

async fn recv(rx: &mut Receiver<InboundMessage>) -> InboundMessage {
    tokio::time::timeout(TIMEOUT, rx.recv())
        .await
        .expect("timed out waiting for a message")
        .expect("channel closed")
}

async fn assert_nothing_arrives(rx: &mut Receiver<InboundMessage>) {
    if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
        panic!("unexpected message: {m:?}");
    }
}

fn payload(i: u32, len: usize) -> Vec<u8> {
    let mut v = i.to_be_bytes().to_vec();
    v.extend((0..len).map(|j| (j as u32).wrapping_mul(31).wrapping_add(i) as u8));
    v
}

#[tokio::test]
async fn pinned_nodes_exchange_messages_both_ways_in_order() {
    let (mut a, mut b) = pair(
        p2p::DEFAULT_MAX_MESSAGE_BYTES,
        p2p::DEFAULT_MAX_MESSAGE_BYTES,
    )
    .await;
    const N: u32 = 150;
    let sizes = |i: u32| match i % 5 {
        0 => 0,
        1 => 1,
        2 => 1000,
        3 => 70_000,
        _ => 5,
    };

    // Both directions at once; each side's sends are polled in order.
    let (ha, hb) = (a.handle.clone(), b.handle.clone());
    let (pa, pb) = (a.peer_id(), b.peer_id());
    let send_ab =
        tokio::spawn(
            async move { join_all((0..N).map(|i| ha.send(pb, payload(i, sizes(i))))).await },
        );
    let send_ba = tokio::spawn(async move {
        let mut out = Vec::new();
        for i in 0..N {
            out.push(hb.send(pa, payload(i, sizes(i) * 2)).await);
        }
        out
    });
    for i in 0..N {
        let m = recv(&mut b.rx).await;
        assert_eq!(m.from, a.peer_id());
        assert_eq!(m.payload, payload(i, sizes(i)), "a->b message {i}");
        let m = recv(&mut a.rx).await;
        assert_eq!(m.from, b.peer_id());
        assert_eq!(m.payload, payload(i, sizes(i) * 2), "b->a message {i}");
    }
    for r in send_ab.await.unwrap() {
        r.unwrap();
    }
    for r in send_ba.await.unwrap() {
        r.unwrap();
    }

    // A large message (near the default limit) arrives intact too.
    let big = payload(7, 3 * 1024 * 1024);
    a.handle.send(b.peer_id(), big.clone()).await.unwrap();
    assert_eq!(recv(&mut b.rx).await.payload, big);

    assert_eq!(a.handle.connected_peers().await, vec![b.peer_id()]);
    assert_eq!(b.handle.connected_peers().await, vec![a.peer_id()]);
    assert_eq!(a.handle.node_id(&b.peer_id()), Some("node-b"));
    assert_eq!(a.handle.refused_connections(), 0);
    assert_eq!(b.handle.rejected_messages(), 0);
}

#[tokio::test]
async fn full_receiver_applies_backpressure_without_dropping() {
    let (a, mut b) = pair(
        p2p::DEFAULT_MAX_MESSAGE_BYTES,
        p2p::DEFAULT_MAX_MESSAGE_BYTES,
    )
    .await;
    let cap = p2p::INBOUND_CHANNEL_CAPACITY as u32;
    // Fill B's channel without reading it: every send is acknowledged.
    for i in 0..cap {
        a.handle.send(b.peer_id(), payload(i, 8)).await.unwrap();
    }
    // The next sends wait for room instead of being dropped.
    let h = a.handle.clone();
    let pb = b.peer_id();
    let more =
        tokio::spawn(
            async move { join_all((cap..cap + 10).map(|i| h.send(pb, payload(i, 8)))).await },
        );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !more.is_finished(),
        "sends must wait while the receiver is full"
    );
    for i in 0..cap + 10 {
        assert_eq!(recv(&mut b.rx).await.payload, payload(i, 8), "message {i}");
    }
    for r in more.await.unwrap() {
        r.unwrap();
    }
    assert_eq!(b.handle.expired_messages(), 0);
}

#[tokio::test]
async fn message_whose_sender_timed_out_is_not_delivered_later() {
    // B never reads until A's send has failed: the waiting message must be
    // discarded (A was told it failed), not delivered behind A's back.
    // B's timeout is the shorter one, so by the time A sees the failure B
    // has already given up on the message (no race in the assertions).
    let (ka, kb) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let (aa, ab) = (free_addr(), free_addr());
    let (ta, tb) = (Duration::from_millis(1500), Duration::from_millis(300));
    let max = p2p::DEFAULT_MAX_MESSAGE_BYTES;
    let a = start_node_with_timeout(
        "node-a",
        ka.clone(),
        aa.clone(),
        vec![pinned("node-b", &kb, &ab)],
        max,
        ta,
    )
    .await;
    let mut b =
        start_node_with_timeout("node-b", kb, ab, vec![pinned("node-a", &ka, &aa)], max, tb).await;
    let cap = p2p::INBOUND_CHANNEL_CAPACITY as u32;
    for i in 0..cap {
        a.handle.send(b.peer_id(), payload(i, 4)).await.unwrap();
    }
    let started = Instant::now();
    let err = a
        .handle
        .send(b.peer_id(), payload(cap, 4))
        .await
        .unwrap_err();
    assert!(started.elapsed() < ta, "{:?}", started.elapsed());
    assert!(err.to_string().contains("node-b"), "{err}");
    for i in 0..cap {
        assert_eq!(recv(&mut b.rx).await.payload, payload(i, 4));
    }
    assert_nothing_arrives(&mut b.rx).await;
    assert_eq!(b.handle.expired_messages(), 1);
    // The link is healthy afterwards.
    a.handle.send(b.peer_id(), vec![9]).await.unwrap();
    assert_eq!(recv(&mut b.rx).await.payload, vec![9]);
}

#[tokio::test]
async fn dropped_receiver_means_no_ack() {
    let (a, b) = pair(
        p2p::DEFAULT_MAX_MESSAGE_BYTES,
        p2p::DEFAULT_MAX_MESSAGE_BYTES,
    )
    .await;
    a.handle.send(b.peer_id(), vec![1]).await.unwrap();
    let Node { rx, handle: hb, .. } = b;
    drop(rx);
    let err = a
        .handle
        .send(hb.local_peer_id(), vec![2])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("node-b"), "{err}");
}

#[tokio::test]
async fn unpinned_peer_is_refused_after_handshake() {
    let (a, mut b) = pair(
        p2p::DEFAULT_MAX_MESSAGE_BYTES,
        p2p::DEFAULT_MAX_MESSAGE_BYTES,
    )
    .await;
    // C pins B (so it will dial it), but B does not pin C.
    let kc = Keypair::generate_ed25519();
    let c = start_node(
        "node-c",
        kc.clone(),
        free_addr(),
        vec![b.pinned()],
        p2p::DEFAULT_MAX_MESSAGE_BYTES,
    )
    .await;

    let started = Instant::now();
    let err = c
        .handle
        .send(b.peer_id(), b"let me in".to_vec())
        .await
        .unwrap_err();
    assert!(started.elapsed() < TIMEOUT, "refusal must be prompt");
    match &err {
        P2pError::Refused { node_id, local } => {
            assert_eq!(node_id, "node-b");
            assert_eq!(*local, c.peer_id());
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("node-b") && msg.contains("not pinned"),
        "{msg}"
    );
    assert_nothing_arrives(&mut b.rx).await;
    assert!(b.handle.refused_connections() >= 1);
    assert!(!b.handle.connected_peers().await.contains(&c.peer_id()));

    // A second attempt is refused the same way (no state leaks in).
    assert!(matches!(
        c.handle.send(b.peer_id(), vec![1]).await,
        Err(P2pError::Refused { .. })
    ));
    assert_nothing_arrives(&mut b.rx).await;

    // Nobody sends to an unpinned PeerId.
    match b.handle.send(c.peer_id(), vec![1]).await {
        Err(P2pError::NotPinned { peer_id }) => assert_eq!(peer_id, c.peer_id()),
        other => panic!("expected NotPinned, got {other:?}"),
    }
    // The pinned pair is unaffected.
    a.handle.send(b.peer_id(), vec![42]).await.unwrap();
    assert_eq!(recv(&mut b.rx).await.payload, vec![42]);
}

#[tokio::test]
async fn impostor_at_pinned_address_gets_nothing() {
    // B is pinned by A at addr_b, but the process listening there has another
    // key (and would happily accept A). Noise exposes the wrong PeerId and A
    // must not hand it the message.
    let (ka, kb) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let (aa, ab) = (free_addr(), free_addr());
    let a = start_node(
        "node-a",
        ka.clone(),
        aa.clone(),
        vec![pinned("node-b", &kb, &ab)],
        p2p::DEFAULT_MAX_MESSAGE_BYTES,
    )
    .await;
    let mut impostor = start_node(
        "impostor",
        Keypair::generate_ed25519(),
        ab,
        vec![pinned("node-a", &ka, &aa)],
        p2p::DEFAULT_MAX_MESSAGE_BYTES,
    )
    .await;
    let err = a
        .handle
        .send(kb.public().to_peer_id(), b"secret round data".to_vec())
        .await
        .unwrap_err();
    assert!(
        matches!(err, P2pError::PeerUnreachable { ref node_id, .. } if node_id == "node-b"),
        "{err:?}"
    );
    assert_nothing_arrives(&mut impostor.rx).await;
    assert!(a.handle.connected_peers().await.is_empty());
}

#[tokio::test]
async fn three_nodes_all_to_all_keep_per_peer_order() {
    let keys: Vec<Keypair> = (0..3).map(|_| Keypair::generate_ed25519()).collect();
    let addrs: Vec<Multiaddr> = (0..3).map(|_| free_addr()).collect();
    let names = ["n0", "n1", "n2"];
    let mut nodes = Vec::new();
    for i in 0..3 {
        let peers = (0..3)
            .filter(|j| *j != i)
            .map(|j| pinned(names[j], &keys[j], &addrs[j]))
            .collect();
        nodes.push(
            start_node(
                names[i],
                keys[i].clone(),
                addrs[i].clone(),
                peers,
                p2p::DEFAULT_MAX_MESSAGE_BYTES,
            )
            .await,
        );
    }
    const N: u32 = 60;
    // Like a protocol round: each node sends message k to both others
    // concurrently, then moves on to k + 1.
    let mut senders = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let h = node.handle.clone();
        let others: Vec<PeerId> = (0..3)
            .filter(|j| *j != i)
            .map(|j| keys[j].public().to_peer_id())
            .collect();
        senders.push(tokio::spawn(async move {
            for k in 0..N {
                let sends = others.iter().map(|p| h.send(*p, payload(k, 100)));
                for r in join_all(sends).await {
                    r.unwrap();
                }
            }
        }));
    }
    for node in &mut nodes {
        let mut next: std::collections::HashMap<PeerId, u32> = Default::default();
        for _ in 0..2 * N {
            let m = recv(&mut node.rx).await;
            let k = next.entry(m.from).or_default();
            assert_eq!(
                m.payload,
                payload(*k, 100),
                "at {} from {}",
                node.node_id,
                m.from
            );
            *k += 1;
        }
        assert!(next.values().all(|k| *k == N));
    }
    for s in senders {
        s.await.unwrap();
    }
}

#[tokio::test]
async fn oversized_messages_are_rejected() {
    // A accepts up to 8 MiB, B only 1 MiB: A's local check passes, B's codec
    // must reject the frame from its header.
    let (mut a, mut b) = pair(8 * 1024 * 1024, 1024 * 1024).await;
    a.handle.send(b.peer_id(), vec![1]).await.unwrap();
    assert_eq!(recv(&mut b.rx).await.payload, vec![1]);

    let err = a
        .handle
        .send(b.peer_id(), vec![0xAB; 2 * 1024 * 1024])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("node-b"), "{err}");
    assert!(
        matches!(err, P2pError::Rejected { .. }),
        "expected Rejected, got {err:?}"
    );
    assert_nothing_arrives(&mut b.rx).await;
    assert_eq!(b.handle.rejected_messages(), 1);

    // Locally oversized: refused before anything is sent.
    match b.handle.send(a.peer_id(), vec![0; 1024 * 1024 + 1]).await {
        Err(P2pError::MessageTooLarge { node_id, size, max }) => {
            assert_eq!(
                (node_id.as_str(), size, max),
                ("node-a", 1024 * 1024 + 1, 1024 * 1024)
            );
        }
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }
    assert_nothing_arrives(&mut a.rx).await;

    // Exactly at the limit still works, both ways.
    let at_limit = vec![0x5A; 1024 * 1024];
    a.handle.send(b.peer_id(), at_limit.clone()).await.unwrap();
    assert_eq!(recv(&mut b.rx).await.payload, at_limit);
    b.handle.send(a.peer_id(), at_limit.clone()).await.unwrap();
    assert_eq!(recv(&mut a.rx).await.payload, at_limit);
}

#[tokio::test]
async fn garbage_on_raw_tcp_does_not_crash_the_node() {
    let (a, mut b) = pair(
        p2p::DEFAULT_MAX_MESSAGE_BYTES,
        p2p::DEFAULT_MAX_MESSAGE_BYTES,
    )
    .await;
    let port = b.addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
        _ => None,
    });
    let sock = format!("127.0.0.1:{}", port.unwrap());

    let mut junk = Vec::new();
    let mut x: u32 = 0x9E37_79B9;
    for _ in 0..65_536 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        junk.push(x as u8);
    }
    let inputs: Vec<Vec<u8>> = vec![
        junk.clone(),
        // A valid multistream-select header for noise, then garbage.
        [
            b"\x13/multistream/1.0.0\n\x07/noise\n".to_vec(),
            junk[..4096].to_vec(),
        ]
        .concat(),
        // A huge length prefix.
        vec![0xff; 16],
        Vec::new(),
    ];
    for bytes in inputs {
        let mut s = tokio::net::TcpStream::connect(&sock).await.unwrap();
        let _ = s.write_all(&bytes).await;
        let _ = s.shutdown().await;
    }
    // Let B process the failed handshakes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(b.handle.failed_handshakes() >= 1);
    assert!(!b.task.is_finished());

    a.handle
        .send(b.peer_id(), b"still alive".to_vec())
        .await
        .unwrap();
    assert_eq!(recv(&mut b.rx).await.payload, b"still alive");
}

#[tokio::test]
async fn down_peer_fails_with_its_node_id_and_recovers_after_restart() {
    let (mut a, b) = pair(
        p2p::DEFAULT_MAX_MESSAGE_BYTES,
        p2p::DEFAULT_MAX_MESSAGE_BYTES,
    )
    .await;
    let Node {
        key: kb,
        addr: ab,
        mut rx,
        handle: hb,
        task,
        ..
    } = b;
    let pb = kb.public().to_peer_id();
    a.handle.send(pb, vec![1]).await.unwrap();
    assert_eq!(recv(&mut rx).await.payload, vec![1]);

    task.shutdown().await;
    assert!(matches!(
        hb.send(a.peer_id(), vec![0]).await,
        Err(P2pError::Shutdown)
    ));
    drop(rx);

    let started = Instant::now();
    let err = a.handle.send(pb, vec![2]).await.unwrap_err();
    assert!(started.elapsed() <= TIMEOUT + Duration::from_millis(500));
    assert!(err.to_string().contains("node-b"), "{err}");
    assert!(
        matches!(err, P2pError::PeerUnreachable { ref node_id, .. } if node_id == "node-b"),
        "{err:?}"
    );

    // Same identity, same port.
    let mut b = start_node(
        "node-b",
        kb,
        ab,
        vec![a.pinned()],
        p2p::DEFAULT_MAX_MESSAGE_BYTES,
    )
    .await;
    a.handle.send(pb, vec![3]).await.unwrap();
    assert_eq!(recv(&mut b.rx).await.payload, vec![3]);
    b.handle.send(a.peer_id(), vec![4]).await.unwrap();
    assert_eq!(recv(&mut a.rx).await.payload, vec![4]);
}

/// A TCP relay whose existing connections can be frozen: bytes are read and
/// silently discarded, sockets stay open. This is what a half-open
/// connection (peer host gone, partition) looks like to the sender.
async fn freezable_relay(target: std::net::SocketAddr) -> (Multiaddr, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Connections with an id <= frozen_upto are frozen.
    let frozen_upto = Arc::new(AtomicU64::new(0));
    let frozen = frozen_upto.clone();
    tokio::spawn(async move {
        let mut next_id = 0u64;
        while let Ok((inbound, _)) = listener.accept().await {
            next_id += 1;
            let id = next_id;
            let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                continue;
            };
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            for (mut r, mut w) in [(ri, wo), (ro, wi)] {
                let frozen = frozen.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match r.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if id > frozen.load(AtomicOrdering::SeqCst)
                            && w.write_all(&buf[..n]).await.is_err()
                        {
                            break;
                        }
                    }
                    // Keep the socket open after EOF too: never reset.
                    std::future::pending::<()>().await;
                });
            }
        }
    });
    (
        format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap(),
        frozen_upto,
    )
}

#[tokio::test]
async fn half_open_connection_is_replaced_after_a_timeout() {
    let (ka, kb) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let (aa, ab) = (free_addr(), free_addr());
    let max = p2p::DEFAULT_MAX_MESSAGE_BYTES;
    let mut b = start_node(
        "node-b",
        kb.clone(),
        ab.clone(),
        vec![pinned("node-a", &ka, &aa)],
        max,
    )
    .await;
    let target = format!("127.0.0.1:{}", port_of(&ab)).parse().unwrap();
    let (relay, frozen_upto) = freezable_relay(target).await;
    // A reaches B only through the relay.
    let t = Duration::from_millis(700);
    let a = start_node_with_timeout(
        "node-a",
        ka,
        aa,
        vec![pinned("node-b", &kb, &relay)],
        max,
        t,
    )
    .await;
    a.handle.send(b.peer_id(), vec![1]).await.unwrap();
    assert_eq!(recv(&mut b.rx).await.payload, vec![1]);

    // Partition: the established connection silently eats everything.
    frozen_upto.store(u64::MAX, AtomicOrdering::SeqCst);
    let err = a.handle.send(b.peer_id(), vec![2]).await.unwrap_err();
    assert!(
        matches!(err, P2pError::Timeout { ref node_id, .. } if node_id == "node-b"),
        "{err:?}"
    );
    // Heal for new connections only; the old one stays a black hole.
    frozen_upto.store(1, AtomicOrdering::SeqCst);
    a.handle.send(b.peer_id(), vec![3]).await.unwrap();
    assert_eq!(recv(&mut b.rx).await.payload, vec![3]);
}

fn port_of(addr: &Multiaddr) -> u16 {
    addr.iter()
        .find_map(|p| match p {
            libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .unwrap()
}

#[tokio::test]
async fn silent_peer_times_out_with_its_node_id() {
    // Accepts TCP but never completes the handshake.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let kb = Keypair::generate_ed25519();
    let addr_b: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
    let cfg = P2pConfig {
        request_timeout: Duration::from_millis(700),
        ..P2pConfig::new(
            Keypair::generate_ed25519(),
            vec![free_addr()],
            vec![pinned("node-b", &kb, &addr_b)],
        )
    };
    let (a, _rx, _task) = p2p::start(cfg).await.unwrap();
    let started = Instant::now();
    let err = a.send(kb.public().to_peer_id(), vec![1]).await.unwrap_err();
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    assert!(err.to_string().contains("node-b"), "{err}");
    assert!(
        matches!(
            err,
            P2pError::Timeout { .. } | P2pError::PeerUnreachable { .. }
        ),
        "{err:?}"
    );
    hold.abort();
}

#[tokio::test]
async fn config_is_validated() {
    let k = Keypair::generate_ed25519();
    let other = Keypair::generate_ed25519();
    let addr = free_addr();
    let dup = vec![pinned("x", &other, &addr), pinned("x", &k, &addr)];
    let err = p2p::start(P2pConfig::new(k.clone(), vec![addr.clone()], dup))
        .await
        .unwrap_err();
    assert!(matches!(err, P2pError::Config(_)), "{err:?}");

    for (bad, why) in [
        ("/dns4/signer-2/tcp/7510", "DNS"),
        ("/ip4/127.0.0.1/udp/7510", "/tcp/"),
        ("/ip4/127.0.0.1/tcp/0", "/tcp/"),
        (
            "/ip4/127.0.0.1/tcp/7510/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN",
            "embeds PeerId",
        ),
    ] {
        let peers = vec![pinned("signer-2", &other, &bad.parse().unwrap())];
        match p2p::start(P2pConfig::new(k.clone(), vec![addr.clone()], peers)).await {
            Err(P2pError::Config(msg)) => {
                assert!(msg.contains("signer-2") && msg.contains(why), "{msg}")
            }
            other => panic!("{bad}: expected Config error, got {:?}", other.map(|_| ())),
        }
    }
    // The pinned PeerId itself may be embedded.
    let with_id: Multiaddr = format!("{addr}/p2p/{}", other.public().to_peer_id())
        .parse()
        .unwrap();
    let (_h, _rx, task) = p2p::start(P2pConfig::new(
        k.clone(),
        vec![free_addr()],
        vec![pinned("signer-2", &other, &with_id)],
    ))
    .await
    .unwrap();
    task.shutdown().await;

    let mut cfg = P2pConfig::new(k.clone(), vec![addr.clone()], vec![]);
    cfg.max_message_bytes = 0;
    assert!(matches!(p2p::start(cfg).await, Err(P2pError::Config(_))));

    // Listening on a port that is taken.
    let taken = StdTcpListener::bind("127.0.0.1:0").unwrap();
    let busy: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", taken.local_addr().unwrap().port())
        .parse()
        .unwrap();
    match p2p::start(P2pConfig::new(k.clone(), vec![busy.clone()], vec![])).await {
        Err(P2pError::Listen { addr, .. }) => assert_eq!(addr, busy),
        other => panic!("expected Listen error, got {:?}", other.map(|_| ())),
    }

    // The node's own entry in a shared cluster list is ignored.
    let (h, _rx, task) = p2p::start(P2pConfig::new(
        k.clone(),
        vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        vec![pinned("me", &k, &addr), pinned("other", &other, &addr)],
    ))
    .await
    .unwrap();
    let bound = h.listen_addrs().await;
    assert_eq!(bound.len(), 1);
    assert!(!bound[0].to_string().ends_with("/tcp/0"), "{bound:?}");
    assert!(matches!(
        h.send(k.public().to_peer_id(), vec![]).await,
        Err(P2pError::NotPinned { .. })
    ));
    task.shutdown().await;
    assert!(matches!(
        h.send(other.public().to_peer_id(), vec![]).await,
        Err(P2pError::Shutdown)
    ));
}

#[test]
fn handle_is_cheap_to_share() {
    fn assert_traits<T: Clone + Send + Sync + 'static>() {}
    assert_traits::<P2pHandle>();
    fn assert_send<T: Send + 'static>() {}
    assert_send::<P2pTask>();
    assert_send::<P2pError>();
}

#[test]
fn identity_file_round_trip_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p2p.key");
    let peer = p2p::generate_identity_file(&path).unwrap();
    let loaded = p2p::load_identity(&path).unwrap();
    assert_eq!(loaded.public().to_peer_id(), peer);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let problem = |p: &std::path::Path| match p2p::load_identity(p) {
        Err(P2pError::Identity { path, reason }) => {
            assert_eq!(path, p);
            reason
        }
        other => panic!(
            "expected identity error, got {:?}",
            other.map(|k| k.public())
        ),
    };

    let missing = dir.path().join("nope.key");
    assert_eq!(problem(&missing), IdentityProblem::Missing);

    let garbage = dir.path().join("garbage.key");
    std::fs::write(&garbage, b"this is not a key\n").unwrap();
    assert!(matches!(problem(&garbage), IdentityProblem::NotAKey(_)));

    let empty = dir.path().join("empty.key");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(problem(&empty), IdentityProblem::NotAKey(_)));

    assert!(matches!(
        problem(dir.path()),
        IdentityProblem::Unreadable(_)
    ));

    // Messages are distinct and name the file.
    let msgs: Vec<String> = [&missing, &garbage]
        .iter()
        .map(|p| p2p::load_identity(p).unwrap_err().to_string())
        .collect();
    assert!(
        msgs[0].contains("nope.key") && msgs[0].contains("not found"),
        "{}",
        msgs[0]
    );
    assert!(
        msgs[1].contains("garbage.key") && msgs[1].contains("not a valid identity key"),
        "{}",
        msgs[1]
    );

    // Never overwrites an existing identity.
    assert!(matches!(
        p2p::generate_identity_file(&path),
        Err(P2pError::Identity {
            reason: IdentityProblem::AlreadyExists,
            ..
        })
    ));
    assert_eq!(
        p2p::load_identity(&path).unwrap().public().to_peer_id(),
        peer
    );
}

// ---------------------------------------------------------------------------
// SIGKILL + restart with a real child process.

const CHILD_ENV: &str = "CUSTOS_P2P_TEST_CHILD";

/// Not a test on its own: the body of the child process spawned by
/// `killed_peer_is_reachable_after_restart`. Runs a node that drains its
/// inbound channel until it is killed.
#[tokio::test]
#[ignore = "helper process for killed_peer_is_reachable_after_restart"]
async fn child_node_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.split('|');
    let (key_path, listen, peer_id, peer_addr) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let key = p2p::load_identity(std::path::Path::new(key_path)).unwrap();
    let cfg = P2pConfig::new(
        key,
        vec![listen.parse().unwrap()],
        vec![PinnedPeer {
            node_id: "parent".into(),
            peer_id: peer_id.parse().unwrap(),
            addr: peer_addr.parse().unwrap(),
        }],
    );
    let (_h, mut rx, _task) = p2p::start(cfg).await.unwrap();
    println!("READY");
    while rx.recv().await.is_some() {}
}

fn spawn_child(spec: &str) -> Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_node_process",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, spec)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "child did not start");
        match lines.next() {
            // libtest prints "test name ... " without a newline first.
            Some(Ok(l)) if l.ends_with("READY") => break,
            Some(_) => {}
            None => panic!("child exited before READY"),
        }
    }
    // Keep draining the child's stdout so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    child
}

#[tokio::test]
async fn killed_peer_is_reachable_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("child.key");
    let child_peer = p2p::generate_identity_file(&key_path).unwrap();
    let child_addr = free_addr();

    let ka = Keypair::generate_ed25519();
    let aa = free_addr();
    let a = start_node(
        "parent",
        ka.clone(),
        aa.clone(),
        vec![PinnedPeer {
            node_id: "child".into(),
            peer_id: child_peer,
            addr: child_addr.clone(),
        }],
        p2p::DEFAULT_MAX_MESSAGE_BYTES,
    )
    .await;
    let spec = format!(
        "{}|{}|{}|{}",
        key_path.display(),
        child_addr,
        ka.public().to_peer_id(),
        aa
    );

    let mut child = spawn_child(&spec);
    a.handle.send(child_peer, vec![1]).await.unwrap();

    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let err = a.handle.send(child_peer, vec![2]).await.unwrap_err();
    assert!(err.to_string().contains("child"), "{err}");

    let mut child = spawn_child(&spec);
    // The very next send after the restart must work.
    a.handle.send(child_peer, vec![3]).await.unwrap();
    a.handle.send(child_peer, vec![4]).await.unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
}
