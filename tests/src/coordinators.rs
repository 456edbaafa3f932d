//! More coordinators beside a devkit cluster's own (fenced leadership on
//! one PostgreSQL database): start one, copy its data directory, poll
//! `/healthz`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use custos_devkit::ClusterLayout;

use crate::bin_dir;

/// A coordinator process a test starts itself (beside the devkit's): the
/// cluster's config with its own addresses, data directory and lease name
/// through `CUSTOS_*` overrides. Killed on drop.
pub struct Extra {
    pub child: Child,
    pub log: PathBuf,
    pub layout: ClusterLayout,
    name: String,
    data_dir: PathBuf,
    prefix: Vec<String>,
}

impl Extra {
    /// On loopback: on `base_port`'s three ports when given, else on the
    /// cluster's own (once its coordinator is gone).
    pub fn start(base: &ClusterLayout, name: &str, data_dir: &Path, ports: Option<u16>) -> Extra {
        let mut layout = base.clone();
        if let Some(p) = ports {
            move_coordinator(&mut layout, Ipv4Addr::LOCALHOST, p);
        }
        Extra::spawn(layout, name, data_dir, &[])
    }

    /// On address `ip` (the cluster's coordinator ports), launched through
    /// `prefix` (e.g. `ip netns exec NS`: another host).
    pub fn start_placed(
        base: &ClusterLayout,
        name: &str,
        data_dir: &Path,
        ip: Ipv4Addr,
        prefix: &[String],
    ) -> Extra {
        let mut layout = base.clone();
        move_coordinator(&mut layout, ip, base.coordinator.grpc_listen.port());
        Extra::spawn(layout, name, data_dir, prefix)
    }

    fn spawn(layout: ClusterLayout, name: &str, data_dir: &Path, prefix: &[String]) -> Extra {
        let c = &layout.coordinator;
        let log = layout.dir.join(format!("logs/{name}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let binary = bin_dir().join("custos-coordinator");
        let mut cmd = match prefix.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(binary);
                cmd
            }
            None => Command::new(binary),
        };
        cmd.arg("--config")
            .arg(&c.config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("CUSTOS_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("NO_COLOR", "1")
            .env("CUSTOS_DATA_DIR", data_dir)
            .env("CUSTOS_GRPC_LISTEN", c.grpc_listen.to_string())
            .env("CUSTOS_HTTP_LISTEN", c.http_listen.to_string())
            .env("CUSTOS_METRICS__LISTEN", c.metrics_listen.to_string())
            .env("CUSTOS_LEADERSHIP__NAME", name);
        Extra {
            child: cmd.spawn().unwrap(),
            log,
            name: name.to_owned(),
            data_dir: data_dir.to_path_buf(),
            prefix: prefix.to_vec(),
            layout,
        }
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, reaped: a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again (killing it first if it runs) with the same
    /// addresses, data directory and launch prefix; does not wait (it
    /// comes back as a standby or as the leader).
    pub fn restart(&mut self) {
        self.kill();
        let again = Extra::spawn(
            self.layout.clone(),
            &self.name,
            &self.data_dir,
            &self.prefix,
        );
        let old = std::mem::replace(self, again);
        // `old` holds the reaped child: dropping it kills nothing.
        drop(old);
    }

    pub fn metrics(&self) -> SocketAddr {
        self.layout.coordinator.metrics_listen
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Extra {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `[leadership]` for a coordinator called `name` with a lease of
/// `lease_ms` (renewed every fifth of it, standbys polling every tenth).
pub fn leadership_toml(name: &str, lease_ms: u64) -> String {
    format!(
        "[leadership]\nlease_ms = {lease_ms}\nrenew_ms = {}\npoll_ms = {}\nname = \"{name}\"\n",
        lease_ms / 5,
        lease_ms / 10
    )
}

/// Points `layout`'s coordinator addresses at `ip`, ports `p`, `p+1`, `p+2`.
fn move_coordinator(layout: &mut ClusterLayout, ip: Ipv4Addr, p: u16) {
    let c = &mut layout.coordinator;
    c.url = format!("https://{ip}:{p}");
    c.http_url = format!("https://{ip}:{}", p + 1);
    c.grpc_listen = SocketAddr::from((ip, p));
    c.http_listen = SocketAddr::from((ip, p + 1));
    c.metrics_listen = SocketAddr::from((ip, p + 2));
}

/// Copies a coordinator's data directory (its sealed log key and the
/// passphrase beside it: every coordinator signs the one log with the one
/// key) into `to`.
pub fn copy_data_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().unwrap().is_file() && !name.starts_with("coordinator.db") {
            std::fs::copy(e.path(), to.join(&name)).unwrap();
        }
    }
}

/// `/healthz` of a metrics listener: (status, body), or (0, error).
pub async fn healthz(addr: SocketAddr) -> (u16, String) {
    custos_devkit::http_get(addr, "/healthz")
        .await
        .unwrap_or_else(|e| (0, e.to_string()))
}

/// Waits until `/healthz` at `addr` satisfies `ok`, at most `limit`;
/// returns how long it took.
pub async fn wait_health(
    addr: SocketAddr,
    what: &str,
    limit: Duration,
    ok: impl Fn(u16, &str) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let (code, body) = healthz(addr).await;
        if ok(code, &body) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{addr} never became {what}: {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A withdrawal of 3 ETH from `wallet` that waits for two approvals,
/// approved by alice only (the flow policy); returns its id.
pub async fn half_approved(
    backend: &custos_devkit::client::Client,
    approver: &custos_devkit::client::Client,
    wallet: &str,
    key: &str,
) -> String {
    let w = backend
        .clone()
        .create_withdrawal(crate::withdrawal_req(
            key,
            wallet,
            crate::WHITELISTED,
            3 * crate::ETH,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w.state, "awaiting_approvals", "{w:?}");
    crate::approve(approver, &w, "alice").await;
    w.id
}

/// Asserts that every signer of `layout` has seen coordinator epoch
/// `newer` and refuses a request of epoch `older` (about withdrawal `id`)
/// as fenced, naming both epochs.
pub async fn assert_signers_fence(layout: &ClusterLayout, id: &str, older: u64, newer: u64) {
    use custos_proto::signer::{CancelNotice, StatusRequest, WithdrawalAuthorization};
    for (node, mut signer) in crate::coordinator_signer_clients(layout).await {
        let seen = signer
            .status(StatusRequest {})
            .await
            .unwrap()
            .into_inner()
            .coordinator_epoch;
        assert_eq!(seen, newer, "{node}");
        let e = signer
            .register_cancel(CancelNotice {
                authorization: Some(WithdrawalAuthorization {
                    withdrawal_json: format!(r#"{{"id":"{id}"}}"#).into_bytes(),
                    coordinator_epoch: older,
                    ..Default::default()
                }),
                cancel_json: Vec::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{node}: {e:?}");
        assert!(
            e.message()
                .contains(&format!("coordinator epoch {older} older than {newer}")),
            "{node}: {}",
            e.message()
        );
        assert_eq!(
            e.metadata()
                .get("custos-fenced-epoch")
                .unwrap()
                .to_str()
                .unwrap(),
            newer.to_string()
        );
    }
}

/// Completes a withdrawal [`half_approved`] under an earlier leader on the
/// current one: it still waits for its second approval, bob gives it, and
/// it is signed within `limit`.
pub async fn complete_half_approved(
    backend: &custos_devkit::client::Client,
    approver: &custos_devkit::client::Client,
    id: &str,
    limit: Duration,
) {
    let w = crate::withdrawal(backend, id).await;
    assert_eq!(
        (w.state.as_str(), w.approvals.len()),
        ("awaiting_approvals", 1)
    );
    crate::approve(approver, &w, "bob").await;
    crate::wait_state(backend, id, &["signed"], limit).await;
}
