//! Running a generated cluster: spawning, waiting, signalling, pid file.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::fsutil::{self, PUBLIC_MODE};
use crate::layout::{ClusterLayout, PIDS_FILE, listen_addrs};
use crate::{COORDINATOR_BIN, DevkitError, SIGNER_BIN};

/// Grace period between SIGTERM and SIGKILL: above the daemons' default
/// `drain_timeout_secs` (10) plus their closing (3), so a graceful stop is
/// never cut short by the kill.
pub const STOP_GRACE: Duration = Duration::from_secs(15);
/// Lines of a log quoted in start errors.
const TAIL_LINES: usize = 30;

/// Whether [`Cluster::start_with`] starts the coordinator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum CoordinatorMode {
    /// Start it if its binary is in `bin_dir`, else skip it with a warning.
    #[default]
    IfPresent,
    /// Start it; a missing binary is an error.
    Required,
    /// Signers only.
    Skip,
}

/// How to start a cluster.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StartOptions {
    /// How long each process may take to accept TCP on its port (default 60 s).
    pub timeout: Duration,
    /// Whether to start the coordinator.
    pub coordinator: CoordinatorMode,
    /// Put every process in its own process group, so that a terminal's Ctrl-C
    /// does not reach it; use with [`Cluster::detach`] (`custos dev up`).
    pub detached: bool,
    /// Extra environment variables for every process started (signers and
    /// coordinator, restarts included), e.g. `SOFTHSM2_CONF` for a PKCS#11 sealer.
    /// Applied after the stray `CUSTOS_*` variables are removed.
    pub env: Vec<(OsString, OsString)>,
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions {
            timeout: Duration::from_secs(60),
            coordinator: CoordinatorMode::IfPresent,
            detached: false,
            env: Vec::new(),
        }
    }
}

impl StartOptions {
    /// Sets [`StartOptions::timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    /// Sets [`StartOptions::coordinator`].
    pub fn coordinator(mut self, mode: CoordinatorMode) -> Self {
        self.coordinator = mode;
        self
    }
    /// Sets [`StartOptions::detached`].
    pub fn detached(mut self, detached: bool) -> Self {
        self.detached = detached;
        self
    }
    /// Adds a variable to [`StartOptions::env`].
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

/// One line of `pids.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// `coordinator` or a node id.
    pub name: String,
    /// Process id.
    pub pid: u32,
    /// The binary it runs (`argv[0]`, checked before signalling it).
    pub binary: PathBuf,
    /// Its log file.
    pub log: PathBuf,
}

/// `pids.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PidFile {
    /// The processes started, coordinator first.
    pub processes: Vec<ProcessRecord>,
}

impl PidFile {
    /// Reads `dir/pids.json`; `None` if absent.
    pub fn load(dir: &Path) -> Result<Option<PidFile>, DevkitError> {
        let path = dir.join(PIDS_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let text = fsutil::read_string(&path)?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| DevkitError::Format {
                path,
                message: e.to_string(),
            })
    }

    fn save(&self, path: &Path) -> Result<(), DevkitError> {
        let mut text = serde_json::to_string_pretty(self).map_err(|e| DevkitError::Format {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        text.push('\n');
        fsutil::write_atomic(path, text.as_bytes(), PUBLIC_MODE)
    }
}

/// A pid file entry and whether its process is alive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessStatus {
    /// The entry.
    pub record: ProcessRecord,
    /// Alive (and still running the recorded binary).
    pub alive: bool,
}

/// The processes of `dir/pids.json` and whether each is alive (empty if no pid file).
pub fn process_status(dir: &Path) -> Result<Vec<ProcessStatus>, DevkitError> {
    Ok(PidFile::load(dir)?
        .unwrap_or_default()
        .processes
        .into_iter()
        .map(|record| ProcessStatus {
            alive: is_alive(&record),
            record,
        })
        .collect())
}

/// Whether `record`'s process is alive and still runs the recorded binary (a
/// recycled pid is not ours). Zombies count as dead.
pub fn is_alive(record: &ProcessRecord) -> bool {
    let proc_dir = PathBuf::from(format!("/proc/{}", record.pid));
    if Path::new("/proc/self").exists() {
        let Ok(stat) = std::fs::read_to_string(proc_dir.join("stat")) else {
            return false;
        };
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        if matches!(state, Some('Z') | Some('X') | None) {
            return false;
        }
        let Ok(cmdline) = std::fs::read(proc_dir.join("cmdline")) else {
            return false;
        };
        let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
        let argv0 = Path::new(std::ffi::OsStr::new(&*String::from_utf8_lossy(argv0)))
            .file_name()
            .map(|n| n.to_os_string());
        return argv0.is_some() && argv0.as_deref() == record.binary.file_name();
    }
    // Not Linux: best effort.
    signal(record.pid, "0").is_ok()
}

/// Sends `kill -<sig> <pid>`.
fn signal(pid: u32, sig: &str) -> Result<(), DevkitError> {
    let out = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| DevkitError::Signal {
            pid,
            message: format!("cannot run `kill`: {e}"),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(DevkitError::Signal {
            pid,
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Stops the processes of `dir/pids.json` (SIGTERM, then SIGKILL after
/// [`STOP_GRACE`]) and removes the file. Returns how many were alive;
/// 0 (not an error) if there is no pid file.
pub fn stop_from_pid_file(dir: &Path) -> Result<usize, DevkitError> {
    let Some(pids) = PidFile::load(dir)? else {
        return Ok(0);
    };
    let alive: Vec<&ProcessRecord> = pids.processes.iter().filter(|r| is_alive(r)).collect();
    for r in &alive {
        // It may exit between the check and the signal: only fail if it is still there.
        if let Err(e) = signal(r.pid, "TERM")
            && is_alive(r)
        {
            return Err(e);
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline && alive.iter().any(|r| is_alive(r)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for r in alive.iter().filter(|r| is_alive(r)) {
        tracing::warn!(name = %r.name, pid = r.pid, "did not stop after SIGTERM: SIGKILL");
        let _ = signal(r.pid, "KILL");
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && alive.iter().any(|r| is_alive(r)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Some(r) = alive.iter().find(|r| is_alive(r)) {
        return Err(DevkitError::Signal {
            pid: r.pid,
            message: format!("{} still alive after SIGKILL", r.name),
        });
    }
    let path = dir.join(PIDS_FILE);
    std::fs::remove_file(&path).map_err(DevkitError::io("cannot remove", path))?;
    Ok(alive.len())
}

/// How one process is launched.
#[derive(Debug)]
struct Proc {
    binary: PathBuf,
    config: PathBuf,
    cwd: PathBuf,
    /// Accepting TCP here means started.
    ready_addr: SocketAddr,
    /// Every address it listens on (checked free before a start).
    listens: Vec<SocketAddr>,
    /// Program and arguments its command line is appended to (empty:
    /// spawned directly; see [`crate::Placement`]).
    prefix: Vec<String>,
    child: Option<Child>,
}

impl Proc {
    /// The addresses to check free in this network namespace before a
    /// start: none for a process launched through a prefix, which may run
    /// in another namespace or host (`ip netns exec`), where binding here
    /// says nothing about its ports.
    fn local_listens(&self) -> &[SocketAddr] {
        if self.prefix.is_empty() {
            &self.listens
        } else {
            &[]
        }
    }
}

/// A running local cluster. Dropping it kills every process (SIGKILL, reaped),
/// unless [`Cluster::detach`]ed; prefer [`Cluster::stop`].
#[derive(Debug)]
pub struct Cluster {
    layout: ClusterLayout,
    opts: StartOptions,
    /// By name; `coordinator` and the node ids.
    procs: BTreeMap<String, Proc>,
    detached: bool,
}

const COORDINATOR: &str = "coordinator";

impl Cluster {
    /// Starts the signers, then the coordinator if `bin_dir` has it (see
    /// [`Cluster::start_with`]).
    pub async fn start(layout: ClusterLayout, bin_dir: &Path) -> Result<Cluster, DevkitError> {
        Cluster::start_with(layout, bin_dir, StartOptions::default()).await
    }

    /// Installs the coordinator's audit-log key into the signer configs if the
    /// layout has none yet ([`install_log_key`](crate::install_log_key)), starts
    /// `custos-signer` for every signer, waits until each accepts TCP
    /// on its control port, then `custos-coordinator` (per
    /// [`StartOptions::coordinator`]) and waits for its gRPC port. Logs go to
    /// `logs/<name>.log` (appended), pids to `pids.json`. On error every process
    /// started is killed; the error names the process and quotes its log.
    pub async fn start_with(
        mut layout: ClusterLayout,
        bin_dir: &Path,
        opts: StartOptions,
    ) -> Result<Cluster, DevkitError> {
        let signer_bin = bin_dir.join(SIGNER_BIN);
        if !signer_bin.is_file() {
            return Err(DevkitError::MissingBinary {
                name: SIGNER_BIN.into(),
                path: signer_bin,
            });
        }
        let coordinator_bin = bin_dir.join(COORDINATOR_BIN);
        let with_coordinator = match opts.coordinator {
            CoordinatorMode::Skip => false,
            _ if coordinator_bin.is_file() => true,
            CoordinatorMode::Required => {
                return Err(DevkitError::MissingBinary {
                    name: COORDINATOR_BIN.into(),
                    path: coordinator_bin,
                });
            }
            _ => {
                tracing::warn!(
                    path = %coordinator_bin.display(),
                    "custos-coordinator not built: starting the signers only"
                );
                false
            }
        };
        // Two node processes must never share a data directory.
        let alive = process_status(&layout.dir)?
            .iter()
            .filter(|p| p.alive)
            .count();
        if alive > 0 {
            return Err(DevkitError::AlreadyRunning {
                dir: layout.dir.clone(),
                alive,
            });
        }
        // Signers refuse withdrawals without the coordinator's log key: install it
        // now if generation could not (it did not know where the binary is).
        if with_coordinator && layout.log_key.is_none() {
            crate::layout::install_log_key(&mut layout, bin_dir, &opts.env)?;
        }
        let addrs = listen_addrs(&layout);
        let mut procs = BTreeMap::new();
        for s in &layout.signers {
            procs.insert(
                s.node_id.clone(),
                Proc {
                    binary: signer_bin.clone(),
                    config: s.config.clone(),
                    cwd: s.dir.clone(),
                    ready_addr: s.control_listen,
                    listens: addrs.get(&s.node_id).cloned().unwrap_or_default(),
                    prefix: s.command_prefix.clone(),
                    child: None,
                },
            );
        }
        if with_coordinator {
            let c = &layout.coordinator;
            procs.insert(
                COORDINATOR.into(),
                Proc {
                    binary: coordinator_bin,
                    config: c.config.clone(),
                    cwd: c.dir.clone(),
                    ready_addr: c.grpc_listen,
                    listens: addrs.get(&c.name).cloned().unwrap_or_default(),
                    prefix: c.command_prefix.clone(),
                    child: None,
                },
            );
        }
        // Fail fast and clearly if something (an old cluster?) holds a port.
        for (name, p) in &procs {
            for addr in p.local_listens() {
                if std::net::TcpListener::bind(addr).is_err() {
                    return Err(DevkitError::PortInUse {
                        name: name.clone(),
                        addr: *addr,
                    });
                }
            }
        }
        let mut cluster = Cluster {
            layout,
            opts,
            procs,
            detached: false,
        };
        let signers: Vec<String> = cluster
            .layout
            .signers
            .iter()
            .map(|s| s.node_id.clone())
            .collect();
        for name in &signers {
            cluster.spawn(name)?;
        }
        cluster.write_pids()?;
        cluster.wait_ready(&signers).await?;
        if with_coordinator {
            let names = [COORDINATOR.to_string()];
            cluster.spawn(COORDINATOR)?;
            cluster.write_pids()?;
            cluster.wait_ready(&names).await?;
        }
        Ok(cluster)
    }

    /// The layout this cluster runs.
    pub fn layout(&self) -> &ClusterLayout {
        &self.layout
    }

    /// Whether the coordinator was started (its binary existed).
    pub fn has_coordinator(&self) -> bool {
        self.procs.contains_key(COORDINATOR)
    }

    /// The pid of a running process (`coordinator` or a node id).
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.procs.get(name)?.child.as_ref().map(Child::id)
    }

    /// Whether the process (`coordinator` or a node id) was started and has not
    /// exited (a node that crashed on its own counts as not running).
    pub fn is_running(&mut self, name: &str) -> bool {
        self.procs
            .get_mut(name)
            .and_then(|p| p.child.as_mut())
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The running processes, as written to `pids.json`.
    pub fn records(&self) -> Vec<ProcessRecord> {
        let mut v: Vec<ProcessRecord> = self
            .procs
            .iter()
            .filter_map(|(name, p)| {
                p.child.as_ref().map(|c| ProcessRecord {
                    name: name.clone(),
                    pid: c.id(),
                    binary: p.binary.clone(),
                    log: self.layout.log_file(name),
                })
            })
            .collect();
        // Coordinator first (it is stopped first).
        v.sort_by_key(|r| r.name != COORDINATOR);
        v
    }

    /// Lets the processes run on after this value (and this program) is gone;
    /// `pids.json` stays for [`stop_from_pid_file`]. Returns the records.
    pub fn detach(mut self) -> Vec<ProcessRecord> {
        let records = self.records();
        self.detached = true;
        for p in self.procs.values_mut() {
            // Dropping a std `Child` neither kills nor waits for it.
            drop(p.child.take());
        }
        records
    }

    /// SIGKILLs a signer (and reaps it): a crash.
    pub fn kill_signer(&mut self, node_id: &str) -> Result<(), DevkitError> {
        self.signer_name(node_id)?;
        self.kill(node_id)
    }

    /// Stops a signer gracefully (SIGTERM, SIGKILL after [`STOP_GRACE`]).
    pub async fn stop_signer(&mut self, node_id: &str) -> Result<(), DevkitError> {
        self.signer_name(node_id)?;
        self.terminate(&[node_id.to_string()]).await?;
        self.write_pids()
    }

    /// Starts a signer again (stopping it gracefully first if it runs) and waits for
    /// its control port. Its keys and data are kept.
    pub async fn restart_signer(&mut self, node_id: &str) -> Result<(), DevkitError> {
        self.signer_name(node_id)?;
        self.restart(node_id).await
    }

    /// SIGKILLs the coordinator (and reaps it).
    pub fn kill_coordinator(&mut self) -> Result<(), DevkitError> {
        self.coordinator_name()?;
        self.kill(COORDINATOR)
    }

    /// SIGTERMs `name` (`coordinator` or a node id) and waits up to `grace`
    /// for it to exit. Returns its exit status, or `None` if it had to be
    /// SIGKILLed (reaped either way) or was not running.
    pub async fn terminate_within(
        &mut self,
        name: &str,
        grace: Duration,
    ) -> Result<Option<ExitStatus>, DevkitError> {
        let stopped = self
            .terminate_all_within(&[name.to_string()], grace)
            .await?;
        self.write_pids()?;
        Ok(stopped.into_iter().next().flatten())
    }

    /// Starts the coordinator again (stopping it gracefully first if it
    /// runs) and waits until it is active: on PostgreSQL a coordinator
    /// restarted after a kill -9 waits as a standby until its old lease
    /// expires (`[leadership] lease_ms`).
    pub async fn restart_coordinator(&mut self) -> Result<(), DevkitError> {
        self.coordinator_name()?;
        self.restart(COORDINATOR).await?;
        self.wait_not_standby().await
    }

    /// Starts the coordinator again (stopping it gracefully first if it
    /// runs) and waits for its gRPC port only: beside another coordinator
    /// it may come back as a standby (which also listens, naming the leader).
    pub async fn restart_coordinator_process(&mut self) -> Result<(), DevkitError> {
        self.coordinator_name()?;
        self.restart(COORDINATOR).await
    }

    /// Polls the coordinator's `/healthz` until it no longer says it is a
    /// standby (within the start timeout).
    async fn wait_not_standby(&mut self) -> Result<(), DevkitError> {
        let addr = self.layout.coordinator.metrics_listen;
        let deadline = Instant::now() + self.opts.timeout;
        loop {
            match http_get(addr, "/healthz").await {
                Ok((_, body)) if !body.contains("standby") => return Ok(()),
                _ if Instant::now() >= deadline => {
                    let log = self.layout.log_file(COORDINATOR);
                    return Err(DevkitError::StartTimeout {
                        tail: fsutil::tail(&log, TAIL_LINES),
                        name: COORDINATOR.into(),
                        addr,
                        secs: self.opts.timeout.as_secs(),
                        log,
                    });
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Stops everything: SIGTERM (coordinator first), SIGKILL whatever still
    /// runs after [`STOP_GRACE`]; removes `pids.json`.
    pub async fn stop(mut self) -> Result<(), DevkitError> {
        let mut names: Vec<String> = self.records().into_iter().map(|r| r.name).collect();
        if names.first().map(String::as_str) == Some(COORDINATOR) {
            self.terminate(&names[..1]).await?;
            names.remove(0);
        }
        self.terminate(&names).await?;
        self.remove_pids()
    }

    // ---- internals ----

    fn signer_name(&self, node_id: &str) -> Result<(), DevkitError> {
        if node_id != COORDINATOR && self.procs.contains_key(node_id) {
            Ok(())
        } else {
            Err(DevkitError::UnknownNode(node_id.into()))
        }
    }

    fn coordinator_name(&self) -> Result<(), DevkitError> {
        if self.procs.contains_key(COORDINATOR) {
            Ok(())
        } else {
            Err(DevkitError::UnknownNode(format!(
                "{COORDINATOR} (not started: {COORDINATOR_BIN} missing or skipped)"
            )))
        }
    }

    fn proc_mut(&mut self, name: &str) -> Result<&mut Proc, DevkitError> {
        self.procs
            .get_mut(name)
            .ok_or_else(|| DevkitError::UnknownNode(name.into()))
    }

    fn spawn(&mut self, name: &str) -> Result<(), DevkitError> {
        let log_path = self.layout.log_file(name);
        let detached = self.opts.detached;
        let extra_env = self.opts.env.clone();
        let p = self.proc_mut(name)?;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(DevkitError::io("cannot open log", &log_path))?;
        let now = custos_clock::now_secs();
        writeln!(
            log,
            "==== custos-devkit: starting {name}: {}{} --config {} (unix time {now}) ====",
            p.prefix.iter().map(|a| format!("{a} ")).collect::<String>(),
            p.binary.display(),
            p.config.display()
        )
        .map_err(DevkitError::io("cannot write log", &log_path))?;
        let stderr = log
            .try_clone()
            .map_err(DevkitError::io("cannot open log", &log_path))?;
        // With a prefix (`ip netns exec NS`), the wrapper execs the daemon
        // in place: the child's pid is the daemon's.
        let mut cmd = match p.prefix.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&p.binary);
                c
            }
            None => Command::new(&p.binary),
        };
        cmd.arg("--config")
            .arg(&p.config)
            .current_dir(&p.cwd)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr);
        // The generated config is the whole truth: no stray CUSTOS_* overrides.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("CUSTOS_") {
                cmd.env_remove(key);
            }
        }
        // Plain text in the log files (no ANSI colours); overridable via `env`.
        cmd.env("NO_COLOR", "1");
        cmd.envs(extra_env);
        if detached {
            cmd.process_group(0);
        }
        let child = cmd.spawn().map_err(|source| DevkitError::Spawn {
            name: name.into(),
            binary: p
                .prefix
                .first()
                .map_or_else(|| p.binary.clone(), PathBuf::from),
            source,
        })?;
        tracing::debug!(name, pid = child.id(), "started");
        p.child = Some(child);
        Ok(())
    }

    async fn wait_ready(&mut self, names: &[String]) -> Result<(), DevkitError> {
        let timeout = self.opts.timeout;
        let deadline = Instant::now() + timeout;
        let mut pending: Vec<String> = names.to_vec();
        while !pending.is_empty() {
            let mut still = Vec::new();
            for name in pending {
                let log = self.layout.log_file(&name);
                let p = self.proc_mut(&name)?;
                let addr = p.ready_addr;
                let Some(child) = p.child.as_mut() else {
                    continue;
                };
                if let Ok(Some(status)) = child.try_wait() {
                    p.child = None;
                    return Err(DevkitError::ProcessExited {
                        tail: fsutil::tail(&log, TAIL_LINES),
                        name,
                        status: status.to_string(),
                        log,
                    });
                }
                let connect = tokio::net::TcpStream::connect(addr);
                match tokio::time::timeout(Duration::from_millis(500), connect).await {
                    Ok(Ok(_)) => {}
                    _ if Instant::now() >= deadline => {
                        return Err(DevkitError::StartTimeout {
                            tail: fsutil::tail(&log, TAIL_LINES),
                            name,
                            addr,
                            secs: timeout.as_secs(),
                            log,
                        });
                    }
                    _ => still.push(name),
                }
            }
            pending = still;
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    fn kill(&mut self, name: &str) -> Result<(), DevkitError> {
        if let Some(mut child) = self.proc_mut(name)?.child.take() {
            let pid = child.id();
            // A node that already died on its own only needs reaping.
            if matches!(child.try_wait(), Ok(None)) {
                child.kill().map_err(|e| DevkitError::Signal {
                    pid,
                    message: e.to_string(),
                })?;
            }
            child.wait().map_err(|e| DevkitError::Signal {
                pid,
                message: format!("wait: {e}"),
            })?;
        }
        self.write_pids()
    }

    /// SIGTERM to `names`, wait up to [`STOP_GRACE`], SIGKILL the rest; reaps all.
    async fn terminate(&mut self, names: &[String]) -> Result<(), DevkitError> {
        self.terminate_all_within(names, STOP_GRACE)
            .await
            .map(|_| ())
    }

    /// SIGTERM to `names`, wait up to `grace`, SIGKILL the rest; reaps all.
    /// Returns, per running process, its exit status if it exited by itself.
    async fn terminate_all_within(
        &mut self,
        names: &[String],
        grace: Duration,
    ) -> Result<Vec<Option<ExitStatus>>, DevkitError> {
        let mut children: Vec<(String, Child)> = Vec::new();
        for name in names {
            if let Some(child) = self.proc_mut(name)?.child.take() {
                children.push((name.clone(), child));
            }
        }
        for (_, child) in &mut children {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = signal(child.id(), "TERM");
            }
        }
        let deadline = Instant::now() + grace;
        loop {
            let mut running = false;
            for (_, child) in &mut children {
                running |= matches!(child.try_wait(), Ok(None));
            }
            if !running || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut statuses = Vec::with_capacity(children.len());
        for (name, child) in &mut children {
            let exited = matches!(child.try_wait(), Ok(Some(_)));
            if !exited {
                tracing::warn!(name = %name, "did not stop after SIGTERM: SIGKILL");
                let _ = child.kill();
            }
            let pid = child.id();
            let status = child.wait().map_err(|e| DevkitError::Signal {
                pid,
                message: format!("wait: {e}"),
            })?;
            statuses.push(exited.then_some(status));
        }
        Ok(statuses)
    }

    async fn restart(&mut self, name: &str) -> Result<(), DevkitError> {
        self.terminate(&[name.to_string()]).await?;
        let listens = self.proc_mut(name)?.local_listens().to_vec();
        // The old process is reaped, so its ports are free; a short grace for the
        // kernel all the same.
        let deadline = Instant::now() + Duration::from_secs(5);
        for addr in listens {
            while std::net::TcpListener::bind(addr).is_err() {
                if Instant::now() >= deadline {
                    return Err(DevkitError::PortInUse {
                        name: name.into(),
                        addr,
                    });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        self.spawn(name)?;
        self.write_pids()?;
        self.wait_ready(&[name.to_string()]).await
    }

    fn write_pids(&self) -> Result<(), DevkitError> {
        PidFile {
            processes: self.records(),
        }
        .save(&self.layout.pids_file)
    }

    fn remove_pids(&self) -> Result<(), DevkitError> {
        match std::fs::remove_file(&self.layout.pids_file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(DevkitError::io("cannot remove", &self.layout.pids_file)(e))
            }
            _ => Ok(()),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        let mut any = false;
        for p in self.procs.values_mut() {
            if let Some(mut child) = p.child.take() {
                any = true;
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if any || self.layout.pids_file.exists() {
            let _ = self.remove_pids();
        }
    }
}

/// `GET path` on `addr` (plain HTTP/1.0); returns the status code and body.
/// For health checks in tests: `http_get(signer.http_listen, "/healthz")`
/// (the daemons' metrics listeners); the coordinator's API is TLS
/// ([`crate::http::HttpTarget::coordinator_api`]).
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), DevkitError> {
    let r = crate::http::HttpTarget::plain(addr.to_string())
        .with_timeout(Duration::from_secs(10))
        .request("GET", path, &[], &[])
        .await?;
    Ok((r.status, r.body))
}
