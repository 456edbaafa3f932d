//! Helpers shared by the transport tests.
#![allow(clippy::unwrap_used, dead_code)]

use std::net::TcpListener as StdTcpListener;

use custos_signer_node::p2p::PinnedPeer;
use libp2p::Multiaddr;
use libp2p::identity::Keypair;

/// A loopback address on a port that was free a moment ago. Both nodes of a
/// pair must know each other's address before either starts, so ports are
/// picked up front (a port taken in between fails the test loudly).
pub fn free_addr() -> Multiaddr {
    let l = StdTcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()
}

/// `node_id` with the PeerId of `key`, dialled at `addr`.
pub fn pinned(node_id: &str, key: &Keypair, addr: &Multiaddr) -> PinnedPeer {
    PinnedPeer {
        node_id: node_id.into(),
        peer_id: key.public().to_peer_id(),
        addr: addr.clone(),
    }
}
