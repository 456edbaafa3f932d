//! Several coordinators on one PostgreSQL database: a second coordinator
//! process beside the devkit's, and their `/healthz` as the lease sees it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use custos_devkit::ClusterLayout;

use crate::bin_dir;

/// `[leadership]` for a coordinator called `name` with a lease of
/// `lease_ms` (renewed every fifth of it, standbys polling every tenth).
pub fn leadership_toml(name: &str, lease_ms: u64) -> String {
    format!(
        "[leadership]\nlease_ms = {lease_ms}\nrenew_ms = {}\npoll_ms = {}\nname = \"{name}\"\n",
        lease_ms / 5,
        lease_ms / 10
    )
}

/// A coordinator process a test starts itself (beside the devkit's): the
/// cluster's config with its own ports, data directory and lease name
/// through `CUSTOS_*` overrides. Killed on drop.
pub struct ExtraCoordinator {
    child: Child,
    name: String,
    data_dir: PathBuf,
    log: PathBuf,
    /// The cluster's layout with this coordinator's addresses.
    pub layout: ClusterLayout,
}

impl ExtraCoordinator {
    /// Starts coordinator `name` on `data_dir`, on the ports from `ports`
    /// (gRPC, HTTP, metrics: three in a row) or the base layout's.
    pub fn start(
        base: &ClusterLayout,
        name: &str,
        data_dir: &Path,
        ports: Option<u16>,
    ) -> ExtraCoordinator {
        let mut layout = base.clone();
        if let Some(p) = ports {
            layout.coordinator.url = format!("https://127.0.0.1:{p}");
            layout.coordinator.http_url = format!("https://127.0.0.1:{}", p + 1);
            layout.coordinator.metrics_listen = SocketAddr::from(([127, 0, 0, 1], p + 2));
            layout.coordinator.grpc_listen = SocketAddr::from(([127, 0, 0, 1], p));
            layout.coordinator.http_listen = SocketAddr::from(([127, 0, 0, 1], p + 1));
        }
        let log = base.dir.join(format!("logs/{name}.log"));
        let child = spawn(&layout, name, data_dir, &log);
        ExtraCoordinator {
            child,
            name: name.to_owned(),
            data_dir: data_dir.to_path_buf(),
            log,
            layout,
        }
    }

    /// Its metrics listener (`/healthz`).
    pub fn metrics(&self) -> SocketAddr {
        self.layout.coordinator.metrics_listen
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
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

    /// Starts it again (killing it first if it runs) on the same ports and
    /// data directory; does not wait (it comes back as a standby or leader).
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn(&self.layout, &self.name, &self.data_dir, &self.log);
    }
}

fn spawn(layout: &ClusterLayout, name: &str, data_dir: &Path, log: &Path) -> Child {
    let c = &layout.coordinator;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut cmd = Command::new(bin_dir().join("custos-coordinator"));
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
    cmd.spawn().unwrap()
}

impl Drop for ExtraCoordinator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Copies the first coordinator's data directory (its sealed log key and
/// the passphrase beside it: every coordinator signs the one log with the
/// one key) into `to`.
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

/// Waits (up to `limit`) until `/healthz` at `addr` satisfies `ok`;
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
