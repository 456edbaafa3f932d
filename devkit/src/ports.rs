//! Finding a free block of loopback ports.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Mutex;

use rand::Rng;

/// Lowest base port scanned by [`free_base_port`].
const SCAN_FROM: u16 = 20000;
/// Highest base port scanned (exclusive).
const SCAN_TO: u16 = 60000;
/// Distance between candidate bases.
const STEP: u16 = 1000;
/// Signers [`free_base_port`] reserves room for.
const DEFAULT_ROOM: u16 = 9;

/// Bases already handed out by this process (parallel tests in one binary).
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Every port a cluster with `signers` signers at `base` listens on.
pub fn cluster_ports(base: u16, signers: u16) -> Vec<u16> {
    let mut ports = vec![base, base.saturating_add(1)];
    for i in 0..signers {
        for off in [10, 110, 210] {
            ports.push(base.saturating_add(off).saturating_add(i));
        }
    }
    ports
}

/// Whether every port is free on 127.0.0.1 right now.
pub fn ports_free(ports: &[u16]) -> bool {
    ports
        .iter()
        .all(|&p| TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, p))).is_ok())
}

/// A base port (see [`ClusterSpec::base_port`](crate::ClusterSpec::base_port)) where
/// every port of a cluster of up to 9 signers is free on 127.0.0.1, scanning
/// 20000..60000 in steps of 1000 from a random offset; never the same base twice
/// in one process. If none is free (unlikely), returns a random candidate.
pub fn free_base_port() -> u16 {
    free_base_port_for(DEFAULT_ROOM).unwrap_or_else(|| {
        SCAN_FROM + STEP * rand::thread_rng().gen_range(0..(SCAN_TO - SCAN_FROM) / STEP)
    })
}

/// Like [`free_base_port`] for `signers` signers; `None` if no candidate is free.
pub fn free_base_port_for(signers: u16) -> Option<u16> {
    let candidates = (SCAN_TO - SCAN_FROM) / STEP;
    let start = rand::thread_rng().gen_range(0..candidates);
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    let handed = handed.get_or_insert_with(HashSet::new);
    for k in 0..candidates {
        let base = SCAN_FROM + STEP * ((start + k) % candidates);
        if handed.contains(&base) {
            continue;
        }
        if ports_free(&cluster_ports(base, signers)) {
            handed.insert(base);
            return Some(base);
        }
    }
    None
}
