//! Delay and loss in user space, for kernels built without the netem qdisc
//! (`CONFIG_NET_SCH_NETEM`, missing on some CI and VM kernels).
//!
//! # Design
//!
//! An iptables rule in the host's namespace hands every packet it sends
//! to NFQUEUE (`--queue-bypass`: with no reader they pass untouched); a
//! thread of the test process, moved into that namespace (`setns` moves
//! the calling thread only), reads each packet's id from the queue and
//! gives the kernel its verdict `delay` later, or drops it with
//! probability `loss`. A constant delay keeps the order; a dropped packet
//! is freed silently, as on a lossy link (TCP retransmits it). Only the
//! metadata is copied out: the payload never leaves the kernel.
//!
//! The netlink messages are the few of `nfnetlink_queue` (linux/netfilter/
//! nfnetlink_queue.h) that this needs: bind, copy mode, packet, verdict.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use rand::Rng;

/// `NFNL_SUBSYS_QUEUE << 8`.
const SUBSYS_QUEUE: u16 = 3 << 8;
const MSG_PACKET: u16 = SUBSYS_QUEUE;
const MSG_VERDICT: u16 = SUBSYS_QUEUE | 1;
const MSG_CONFIG: u16 = SUBSYS_QUEUE | 2;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_META: u8 = 1;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const AF_INET: u16 = 2;

/// A delayer running in one namespace; stopping it passes what it holds.
pub(super) struct Delayer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Delayer {
    /// Starts reading queue `queue` of namespace `netns` (its name under
    /// `/run/netns`); returns once it is bound, or why it could not be.
    pub(super) fn start(
        netns: &str,
        queue: u16,
        delay: Duration,
        loss_percent: f64,
    ) -> Result<Delayer, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let path = format!("/run/netns/{netns}");
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || match bind(&path, queue) {
                Ok(sock) => {
                    let _ = tx.send(Ok(()));
                    serve(&sock, queue, delay, loss_percent, &stop);
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            })
        };
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(Delayer {
                stop,
                thread: Some(thread),
            }),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(format!("the NFQUEUE reader did not start: {e}")),
        }
    }
}

impl Drop for Delayer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Moves this thread into the namespace at `path` and binds queue `queue`
/// there, metadata only.
fn bind(path: &str, queue: u16) -> Result<Socket, String> {
    let ns = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("setns {path}: {e}"))?;
    let mut sock = Socket::new(NETLINK_NETFILTER).map_err(|e| format!("netlink socket: {e}"))?;
    sock.bind_auto().map_err(|e| format!("netlink bind: {e}"))?;
    sock.connect(&SocketAddr::new(0, 0))
        .map_err(|e| format!("netlink connect: {e}"))?;
    let mut cmd = [0u8; 4];
    cmd[0] = NFQNL_CFG_CMD_BIND;
    cmd[2..].copy_from_slice(&AF_INET.to_be_bytes());
    request(&sock, queue, NFQA_CFG_CMD, &cmd, "bind")?;
    let mut params = [0u8; 5];
    params[..4].copy_from_slice(&0xffffu32.to_be_bytes());
    params[4] = NFQNL_COPY_META;
    request(&sock, queue, NFQA_CFG_PARAMS, &params, "copy mode")?;
    sock.set_non_blocking(true)
        .map_err(|e| format!("netlink non-blocking: {e}"))?;
    Ok(sock)
}

/// One netlink message of `nfnetlink_queue` for `queue` with one attribute.
fn message(kind: u16, flags: u16, queue: u16, attr: u16, payload: &[u8]) -> Vec<u8> {
    let attr_len = 4 + payload.len();
    let padded = (attr_len + 3) & !3;
    let len = 16 + 4 + padded;
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // sequence
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    m.extend_from_slice(&[0, 0]); // nfgenmsg: AF_UNSPEC, version 0
    m.extend_from_slice(&queue.to_be_bytes());
    m.extend_from_slice(&(attr_len as u16).to_ne_bytes());
    m.extend_from_slice(&attr.to_ne_bytes());
    m.extend_from_slice(payload);
    m.resize(len, 0);
    m
}

/// Sends a config request and waits for the kernel's acknowledgement.
fn request(sock: &Socket, queue: u16, attr: u16, payload: &[u8], what: &str) -> Result<(), String> {
    let m = message(MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, queue, attr, payload);
    sock.send(&m, 0)
        .map_err(|e| format!("NFQUEUE {what}: {e}"))?;
    let mut buf = Vec::with_capacity(8192);
    sock.recv(&mut buf, 0)
        .map_err(|e| format!("NFQUEUE {what}: {e}"))?;
    let kind = buf.get(4..6).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    let code = buf
        .get(16..20)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    match (kind, code) {
        (Some(NLMSG_ERROR), Some(0)) => Ok(()),
        (Some(NLMSG_ERROR), Some(e)) => Err(format!(
            "NFQUEUE {what}: {}",
            std::io::Error::from_raw_os_error(-e)
        )),
        _ => Err(format!("NFQUEUE {what}: unexpected answer {buf:?}")),
    }
}

/// The packet ids in a buffer of netlink messages.
fn packet_ids(buf: &[u8]) -> Vec<u32> {
    let mut ids = Vec::new();
    let mut at = 0;
    while at + 16 <= buf.len() {
        let len = u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
        let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
        if len < 16 || at + len > buf.len() {
            break;
        }
        if kind == MSG_PACKET {
            let mut a = at + 20;
            while a + 4 <= at + len {
                let alen = usize::from(u16::from_ne_bytes([buf[a], buf[a + 1]]));
                let atype = u16::from_ne_bytes([buf[a + 2], buf[a + 3]]) & 0x7fff;
                if alen < 4 || a + alen > at + len {
                    break;
                }
                if atype == NFQA_PACKET_HDR && alen >= 8 {
                    ids.push(u32::from_be_bytes([
                        buf[a + 4],
                        buf[a + 5],
                        buf[a + 6],
                        buf[a + 7],
                    ]));
                }
                a += (alen + 3) & !3;
            }
        }
        at += (len + 3) & !3;
    }
    ids
}

fn verdict(sock: &Socket, queue: u16, id: u32, v: u32) {
    let mut hdr = [0u8; 8];
    hdr[..4].copy_from_slice(&v.to_be_bytes());
    hdr[4..].copy_from_slice(&id.to_be_bytes());
    let _ = sock.send(
        &message(MSG_VERDICT, NLM_F_REQUEST, queue, NFQA_VERDICT_HDR, &hdr),
        0,
    );
}

/// Holds each queued packet `delay`, drops `loss_percent` of them, until
/// `stop`; then lets every held packet go.
fn serve(sock: &Socket, queue: u16, delay: Duration, loss_percent: f64, stop: &AtomicBool) {
    let mut held: VecDeque<(Instant, u32)> = VecDeque::new();
    let mut buf = Vec::with_capacity(1 << 16);
    let mut rng = rand::thread_rng();
    while !stop.load(Ordering::Relaxed) {
        buf.clear();
        let got = sock.recv(&mut buf, 0).is_ok();
        let now = Instant::now();
        for id in packet_ids(&buf) {
            if rng.gen_range(0.0..100.0) < loss_percent {
                verdict(sock, queue, id, NF_DROP);
            } else {
                held.push_back((now + delay, id));
            }
        }
        while held.front().is_some_and(|(due, _)| *due <= now) {
            if let Some((_, id)) = held.pop_front() {
                verdict(sock, queue, id, NF_ACCEPT);
            }
        }
        if !got {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    for (_, id) in held {
        verdict(sock, queue, id, NF_ACCEPT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_message_is_laid_out_as_the_kernel_reads_it() {
        let m = message(
            MSG_VERDICT,
            NLM_F_REQUEST,
            7,
            NFQA_VERDICT_HDR,
            &[1, 2, 3, 4, 5, 6, 7, 8],
        );
        assert_eq!(m.len(), 32);
        assert_eq!(u32::from_ne_bytes(m[..4].try_into().unwrap()), 32);
        assert_eq!(&m[18..20], &[0, 7], "queue number, big-endian");
        assert_eq!(u16::from_ne_bytes([m[20], m[21]]), 12, "attribute length");
        // A 5-byte attribute is padded to 8.
        let m = message(MSG_CONFIG, NLM_F_REQUEST, 0, NFQA_CFG_PARAMS, &[0; 5]);
        assert_eq!(m.len(), 32);
        assert_eq!(u16::from_ne_bytes([m[20], m[21]]), 9);
    }

    #[test]
    fn packet_ids_are_read_from_each_message() {
        let mut hdr = [0u8; 7];
        hdr[..4].copy_from_slice(&0x0102_0304u32.to_be_bytes());
        let mut buf = message(MSG_PACKET, 0, 0, NFQA_PACKET_HDR, &hdr);
        hdr[..4].copy_from_slice(&9u32.to_be_bytes());
        buf.extend(message(MSG_PACKET, 0, 0, NFQA_PACKET_HDR, &hdr));
        assert_eq!(packet_ids(&buf), vec![0x0102_0304, 9]);
        assert!(packet_ids(&buf[..10]).is_empty());
    }
}
