//! Hosts on one machine: every process of a cluster in its own network
//! namespace with its own address, so tests can cut, flap and degrade the
//! network between them (issue 20).
//!
//! # Design
//!
//! One Linux bridge in the root namespace is the "switch"; each host is a
//! namespace joined to it by a veth pair (`<prefix>-h<i>` in the root
//! namespace, `eth0` inside), on a private /24 chosen per run. The bridge
//! itself holds `.1`, so the test process in the root namespace reaches
//! every host through it, and a small TCP proxy on `.1`
//! ([`Netns::forward`]) lets the hosts reach services of the root namespace
//! (PostgreSQL on 127.0.0.1): a partitioned coordinator then loses its
//! database too, as it would on a real network.
//!
//! - [`Netns::partition`] sets the host's bridge port down: its packets
//!   vanish, nobody gets a reset, TCP just retransmits (a pulled cable or
//!   a dead switch port, not a crashed peer).
//! - [`Netns::flap`] toggles that port on a period until the guard drops.
//! - [`Netns::impair`] delays and drops a share of every packet the host
//!   sends: `tc qdisc ... netem` on its `eth0`, or, on a kernel built
//!   without netem, the same in user space through NFQUEUE (`nfqueue`).
//!
//! Names carry the test process's pid (`cx<pid hex>-...`): a run removes
//! what dead runs left behind before it starts, and [`Drop`] removes
//! everything of its own, panicking test or not (namespaces, links, the
//! processes still in them). Setting up needs root (CAP_SYS_ADMIN and
//! CAP_NET_ADMIN); without it the fixture fails saying so: these tests
//! never skip quietly.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use custos_devkit::Placement;

mod nfqueue;
#[cfg(doc)]
use custos_devkit::ClusterSpec;

/// Prefix of every name this fixture creates.
const NAME_PREFIX: &str = "cx";

/// Adds (`-A`) or deletes (`-D`) the iptables rule of namespace `ns` that
/// queues what it sends on `eth0` to NFQUEUE 0.
fn nfqueue_rule(ns: &str, op: &str) -> Result<String, String> {
    run(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            "iptables",
            op,
            "OUTPUT",
            "-o",
            "eth0",
            "-j",
            "NFQUEUE",
            "--queue-num",
            "0",
            "--queue-bypass",
        ],
    )
}

/// One host: a namespace, its address and its port on the bridge.
#[derive(Clone, Debug)]
pub struct Host {
    /// Process name it is for (`coordinator`, `signer-1`, ...).
    pub name: String,
    /// The network namespace.
    pub netns: String,
    /// Its address on the bridge's /24.
    pub ip: Ipv4Addr,
    /// The root namespace's end of its veth pair (its port on the bridge).
    pub port: String,
}

/// The namespaces, bridge and links of one test run. Removed on drop.
pub struct Netns {
    prefix: String,
    bridge: String,
    gateway: Ipv4Addr,
    hosts: Vec<Host>,
    proxies: Vec<tokio::task::JoinHandle<()>>,
    /// User-space delayers by host, where netem is missing.
    delayers: std::sync::Mutex<BTreeMap<String, nfqueue::Delayer>>,
}

/// Runs `program args`, returning its stderr on failure.
fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{program}`: {e} (iproute2 installs `ip` and `tc`: scripts/install-deps.sh)"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `ip args`, panicking with the command and its error.
fn ip(args: &[&str]) {
    if let Err(e) = run("ip", args) {
        panic!("{e}");
    }
}

/// The pid a name of this fixture was made by (`cx<hex>-...`).
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NAME_PREFIX)?;
    let (hex, _) = rest.split_once('-')?;
    u32::from_str_radix(hex, 16).ok()
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Kills every process still in namespace `ns` (SIGKILL) and waits a moment.
fn kill_in(ns: &str) {
    let Ok(pids) = run("ip", &["netns", "pids", ns]) else {
        return;
    };
    for pid in pids.split_whitespace() {
        let _ = run("kill", &["-KILL", pid]);
    }
}

/// Removes namespaces and links left by runs whose process is gone.
fn remove_stale() {
    if let Ok(list) = run("ip", &["netns", "list"]) {
        for ns in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if owner_pid(ns).is_some_and(|p| !pid_alive(p)) {
                kill_in(ns);
                let _ = run("ip", &["netns", "del", ns]);
            }
        }
    }
    if let Ok(links) = run("ip", &["-o", "link", "show"]) {
        for l in links.lines() {
            // `12: cx1f2e-h0@if3: <...>`
            let Some(name) = l.split(": ").nth(1) else {
                continue;
            };
            let name = name.split('@').next().unwrap_or(name);
            if owner_pid(name).is_some_and(|p| !pid_alive(p)) {
                let _ = run("ip", &["link", "del", name]);
            }
        }
    }
}

/// A /24 of 10.0.0.0/8 that no address or route of this machine touches,
/// starting from one derived from the pid (parallel runs differ).
fn free_subnet(pid: u32) -> [u8; 2] {
    let used = format!(
        "{}\n{}",
        run("ip", &["-4", "-o", "addr", "show"]).unwrap_or_default(),
        run("ip", &["-4", "route", "show", "table", "all"]).unwrap_or_default()
    );
    for k in 0..2000u32 {
        let n = pid.wrapping_add(k.wrapping_mul(7919)) % (56 * 250);
        let (a, b) = ((200 + n / 250) as u8, (1 + n % 250) as u8);
        if !used.contains(&format!("10.{a}.{b}.")) {
            return [a, b];
        }
    }
    panic!("no free 10.x.y.0/24 for the namespace bridge");
}

impl Netns {
    /// One namespace per name in `hosts`, each with its own address, all on
    /// one bridge. Panics (saying why) if this process may not create
    /// namespaces: the tests need root.
    pub fn new(hosts: &[&str]) -> Netns {
        remove_stale();
        let pid = std::process::id();
        let prefix = format!("{NAME_PREFIX}{pid:x}");
        let [a, b] = free_subnet(pid);
        let gateway = Ipv4Addr::new(10, a, b, 1);
        let mut net = Netns {
            bridge: format!("{prefix}-br"),
            prefix,
            gateway,
            hosts: Vec::new(),
            proxies: Vec::new(),
            delayers: Default::default(),
        };
        // The first namespace tells whether we may: fail loudly if not.
        let probe = format!("{}-probe", net.prefix);
        if let Err(e) = run("ip", &["netns", "add", &probe]) {
            panic!(
                "the network-namespace tests need root (CAP_SYS_ADMIN, CAP_NET_ADMIN) and \
                 iproute2; run them as root (CI does): {e}"
            );
        }
        let _ = run("ip", &["netns", "del", &probe]);
        ip(&["link", "add", &net.bridge, "type", "bridge"]);
        ip(&["addr", "add", &format!("{gateway}/24"), "dev", &net.bridge]);
        ip(&["link", "set", &net.bridge, "up"]);
        for (i, name) in hosts.iter().enumerate() {
            let host = Host {
                name: (*name).to_owned(),
                netns: format!("{}-{name}", net.prefix),
                ip: Ipv4Addr::new(10, a, b, u8::try_from(i + 2).unwrap()),
                port: format!("{}-h{i}", net.prefix),
            };
            ip(&["netns", "add", &host.netns]);
            net.hosts.push(host.clone());
            ip(&[
                "link",
                "add",
                &host.port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &host.netns,
            ]);
            ip(&["link", "set", &host.port, "master", &net.bridge]);
            ip(&["link", "set", &host.port, "up"]);
            let n = &host.netns;
            ip(&[
                "-n",
                n,
                "addr",
                "add",
                &format!("{}/24", host.ip),
                "dev",
                "eth0",
            ]);
            ip(&["-n", n, "link", "set", "eth0", "up"]);
            ip(&["-n", n, "link", "set", "lo", "up"]);
        }
        net
    }

    /// The bridge's address: the root namespace as the hosts see it.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// The host for process `name`.
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    /// `ip netns exec <its namespace>`: what to launch `name`'s process with.
    pub fn command_prefix(&self, name: &str) -> Vec<String> {
        ["ip", "netns", "exec", &self.host(name).netns]
            .map(str::to_owned)
            .to_vec()
    }

    /// Every host as a placement ([`ClusterSpec::placements`]): the process
    /// of its name binds its address inside its namespace.
    pub fn placements(&self) -> BTreeMap<String, Placement> {
        self.hosts
            .iter()
            .map(|h| {
                (
                    h.name.clone(),
                    Placement::new(h.ip, self.command_prefix(&h.name)),
                )
            })
            .collect()
    }

    /// Cuts `name` off: its bridge port goes down and its packets vanish
    /// (no reset reaches either side).
    pub fn partition(&self, name: &str) {
        ip(&["link", "set", &self.host(name).port, "down"]);
    }

    /// Reconnects `name` after [`Netns::partition`].
    pub fn heal(&self, name: &str) {
        ip(&["link", "set", &self.host(name).port, "up"]);
    }

    /// Toggles `name`'s link: down for `down`, up for `up`, over and over
    /// until the guard is dropped, which leaves it up.
    pub fn flap(&self, name: &str, down: Duration, up: Duration) -> Flapping {
        let port = self.host(name).port.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let flips = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let thread = {
            let (stop, flips, port) = (stop.clone(), flips.clone(), port.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _ = run("ip", &["link", "set", &port, "down"]);
                    std::thread::sleep(down);
                    let _ = run("ip", &["link", "set", &port, "up"]);
                    flips.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(up);
                }
            })
        };
        Flapping {
            stop,
            flips,
            port,
            thread: Some(thread),
        }
    }

    /// Delays every packet `name` sends by `delay` and drops `loss_percent`
    /// of them, until [`Netns::clear_impairment`]; returns how (`netem`, or
    /// `nfqueue` where the kernel has no netem). Errors name what is missing.
    pub fn impair(
        &self,
        name: &str,
        delay: Duration,
        loss_percent: f64,
    ) -> Result<&'static str, String> {
        let ns = &self.host(name).netns;
        let netem = run(
            "tc",
            &[
                "-n",
                ns,
                "qdisc",
                "replace",
                "dev",
                "eth0",
                "root",
                "netem",
                "delay",
                &format!("{}ms", delay.as_millis()),
                "loss",
                &format!("{loss_percent}%"),
            ],
        );
        match netem {
            Ok(_) => return Ok("netem"),
            Err(e) if !e.contains("qdisc kind is unknown") => return Err(e),
            Err(_) => {}
        }
        // No netem in this kernel: queue what the host sends to a reader
        // of ours that holds each packet (`--queue-bypass`: without a
        // reader, packets pass).
        let delayer = nfqueue::Delayer::start(ns, 0, delay, loss_percent)?;
        nfqueue_rule(ns, "-A").map_err(|e| {
            format!("this kernel has no netem qdisc, and queueing to user space failed: {e}")
        })?;
        self.delayers
            .lock()
            .unwrap()
            .insert(name.to_owned(), delayer);
        Ok("nfqueue")
    }

    /// Removes [`Netns::impair`]'s delay and loss.
    pub fn clear_impairment(&self, name: &str) {
        let ns = &self.host(name).netns;
        let _ = run("tc", &["-n", ns, "qdisc", "del", "dev", "eth0", "root"]);
        let _ = nfqueue_rule(ns, "-D");
        // Stopping the reader lets what it holds go.
        self.delayers.lock().unwrap().remove(name);
    }

    /// Listens on the gateway address (a free port) and forwards every
    /// connection to `target` in the root namespace; returns the address
    /// the hosts should use. Runs on the current tokio runtime until the
    /// fixture drops.
    pub async fn forward(&mut self, target: SocketAddr) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind((self.gateway, 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        self.proxies.push(tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        // A transparent hop: no Nagle delay of its own on
                        // small request/response traffic.
                        let _ = inbound.set_nodelay(true);
                        let _ = outbound.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
        addr
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for p in &self.proxies {
            p.abort();
        }
        if let Ok(mut d) = self.delayers.lock() {
            d.clear();
        }
        // Processes first (a namespace with processes in it outlives its
        // name), then the namespaces (their veth ends take the pairs with
        // them), then the bridge.
        for h in &self.hosts {
            kill_in(&h.netns);
        }
        for h in &self.hosts {
            let _ = run("ip", &["netns", "del", &h.netns]);
            let _ = run("ip", &["link", "del", &h.port]);
        }
        let _ = run("ip", &["link", "del", &self.bridge]);
    }
}

/// A link being toggled by [`Netns::flap`]; dropping it stops the toggling
/// and leaves the link up.
pub struct Flapping {
    stop: Arc<AtomicBool>,
    flips: Arc<std::sync::atomic::AtomicU32>,
    port: String,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flapping {
    /// Down-up cycles done so far.
    pub fn flips(&self) -> u32 {
        self.flips.load(Ordering::Relaxed)
    }
}

impl Drop for Flapping {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = run("ip", &["link", "set", &self.port, "up"]);
    }
}

/// `url` (`scheme://user@host:port/db`) with its `host:port` replaced by `addr`.
pub fn rehost_url(url: &str, addr: SocketAddr) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..].find('/').map_or(url.len(), |i| start + i);
    let host_start = url[start..end].rfind('@').map_or(start, |i| start + i + 1);
    format!("{}{addr}{}", &url[..host_start], &url[end..])
}

/// The `host:port` of `url` (`scheme://user@host:port/db`).
pub fn url_addr(url: &str) -> SocketAddr {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..].find('/').map_or(url.len(), |i| start + i);
    let host_start = url[start..end].rfind('@').map_or(start, |i| start + i + 1);
    url[host_start..end].parse().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_their_owner_pid() {
        assert_eq!(owner_pid("cx1f2e-h0"), Some(0x1f2e));
        assert_eq!(owner_pid("cx1f2e-signer-1"), Some(0x1f2e));
        assert_eq!(owner_pid("cxzz-h0"), None);
        assert_eq!(owner_pid("eth0"), None);
        assert!(format!("{NAME_PREFIX}{:x}-h12", u32::MAX >> 10).len() <= 15);
    }

    #[test]
    fn a_database_url_is_pointed_at_the_proxy() {
        let url = "postgres://postgres@127.0.0.1:5432/custos_x";
        assert_eq!(url_addr(url), "127.0.0.1:5432".parse().unwrap());
        assert_eq!(
            rehost_url(url, "10.200.3.1:41000".parse().unwrap()),
            "postgres://postgres@10.200.3.1:41000/custos_x"
        );
    }
}
