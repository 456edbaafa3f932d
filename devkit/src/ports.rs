//! Finding a free block of loopback ports.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Mutex;

use rand::Rng;

/// Lowest base port scanned by [`free_base_port`].
const SCAN_FROM: u16 = 20000;
/// Highest base port scanned.
const SCAN_TO: u16 = 64500;
/// Distance between candidate bases (a block of 9 signers spans 220 ports).
const STEP: u16 = 500;
/// Signers [`free_base_port`] reserves room for.
const DEFAULT_ROOM: u16 = 9;

/// Bases already handed out by this process (parallel tests in one binary).
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Every port a cluster with `signers` signers at `base` listens on.
pub fn cluster_ports(base: u16, signers: u16) -> Vec<u16> {
    let mut ports = vec![base, base.saturating_add(1), base.saturating_add(2)];
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

/// The kernel's ephemeral port range (outgoing connections take their source
/// port from it, so a listener there can lose a race with any client).
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| {
            let mut it = t.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999))
}

/// Candidate bases: 20000..=64500 in steps of 500, those whose block stays out of
/// the ephemeral range first (all of them if none does).
fn candidates(signers: u16) -> Vec<u16> {
    let span = 210 + signers;
    let (lo, hi) = ephemeral_range();
    let all: Vec<u16> = (SCAN_FROM..=SCAN_TO).step_by(usize::from(STEP)).collect();
    let outside: Vec<u16> = all
        .iter()
        .copied()
        .filter(|&b| u32::from(b) + u32::from(span) < u32::from(lo) || b > hi)
        .filter(|&b| u32::from(b) + u32::from(span) <= 65535)
        .collect();
    if outside.is_empty() { all } else { outside }
}

/// A base port (see [`ClusterSpec::base_port`](crate::ClusterSpec::base_port)) where
/// every port of a cluster of up to 9 signers is free on 127.0.0.1. Scans
/// 20000..=64500 in steps of 500 from a random offset, skipping blocks that
/// overlap the kernel's ephemeral port range, and never returns the same base
/// twice in one process. If none is free (unlikely), returns a random candidate.
pub fn free_base_port() -> u16 {
    free_base_port_for(DEFAULT_ROOM).unwrap_or_else(|| {
        let c = candidates(DEFAULT_ROOM);
        c.get(rand::thread_rng().gen_range(0..c.len().max(1)))
            .copied()
            .unwrap_or(SCAN_FROM)
    })
}

/// Like [`free_base_port`] for `signers` signers; `None` if no candidate is free.
pub fn free_base_port_for(signers: u16) -> Option<u16> {
    let c = candidates(signers);
    let start = rand::thread_rng().gen_range(0..c.len().max(1));
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    let handed = handed.get_or_insert_with(HashSet::new);
    for k in 0..c.len() {
        let base = *c.get((start + k) % c.len())?;
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
