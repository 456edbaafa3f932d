//! A real anvil node (Foundry's local Ethereum node) for tests: on a free
//! loopback port, killed on drop. The binary comes from
//! `scripts/install-anvil.sh` (`.tools/`), `CUSTOS_ANVIL`, or the PATH.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use custos_chains::evm::rpc::{EvmRpc, RpcConfig};

/// The anvil binary to run.
pub fn anvil_path() -> PathBuf {
    if let Some(p) = std::env::var_os("CUSTOS_ANVIL") {
        return PathBuf::from(p);
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../.tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
    if local.is_file() {
        local
    } else {
        PathBuf::from("anvil")
    }
}

/// An RPC client for `url` with a short timeout.
pub fn rpc(url: &str) -> EvmRpc {
    let mut c = RpcConfig::new(url);
    c.timeout = Duration::from_secs(3);
    EvmRpc::new(c).expect("RPC client")
}

/// anvil on a free port, killed on drop; `freeze`/`thaw` stop and resume it
/// (its RPC hangs meanwhile, its state survives); `stop`/`restart` end the
/// process (connections are refused meanwhile) and bring it back on the same
/// port with its chain state, for nodes started with [`Anvil::start_persistent`].
pub struct Anvil {
    child: Child,
    /// Its JSON-RPC URL.
    pub url: String,
    port: u16,
    args: Vec<String>,
    /// Holds the state file of a persistent node.
    _state_dir: Option<tempfile::TempDir>,
}

fn spawn(port: u16, args: &[String]) -> Child {
    Command::new(anvil_path())
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--silent",
        ])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("anvil: run scripts/install-anvil.sh or set CUSTOS_ANVIL")
}

/// Waits until the node at `url` answers; false if `child` exits or 20 s pass.
async fn answers(child: &mut Child, url: &str) -> bool {
    let node = rpc(url);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return false;
        }
        if node.chain_id().await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

impl Anvil {
    /// Starts anvil with its defaults (chain id 31337, automine).
    pub async fn start() -> Anvil {
        Self::start_with(&[]).await
    }

    /// Starts anvil keeping its chain state in a file it writes when it is
    /// stopped, so [`Anvil::restart`] brings the same chain back.
    pub async fn start_persistent() -> Anvil {
        let dir = tempfile::tempdir().expect("a state directory");
        let state = dir.path().join("state.json").to_string_lossy().into_owned();
        let mut a = Self::start_with(&["--state", &state]).await;
        a._state_dir = Some(dir);
        a
    }

    /// Starts anvil with `extra` arguments.
    pub async fn start_with(extra: &[&str]) -> Anvil {
        let args: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .expect("a free port")
                .local_addr()
                .expect("its address")
                .port();
            let mut child = spawn(port, &args);
            let url = format!("http://127.0.0.1:{port}");
            if answers(&mut child, &url).await {
                return Anvil {
                    child,
                    url,
                    port,
                    args,
                    _state_dir: None,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("anvil did not come up");
    }

    /// Ends the process (SIGTERM: a persistent node writes its state) and
    /// waits for it: the port refuses connections until [`Anvil::restart`].
    pub fn stop(&mut self) {
        self.signal("-TERM");
        let _ = self.child.wait();
    }

    /// Starts the node again on the same port (and state file).
    pub async fn restart(&mut self) {
        let mut child = spawn(self.port, &self.args);
        assert!(
            answers(&mut child, &self.url).await,
            "anvil did not come back on port {}",
            self.port
        );
        self.child = child;
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig}");
    }

    /// Stops the process (SIGSTOP): its RPC hangs.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Resumes it (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
