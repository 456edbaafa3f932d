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
/// (its RPC hangs meanwhile, its state survives).
pub struct Anvil {
    child: Child,
    /// Its JSON-RPC URL.
    pub url: String,
}

impl Anvil {
    /// Starts anvil with its defaults (chain id 31337, automine).
    pub async fn start() -> Anvil {
        Self::start_with(&[]).await
    }

    /// Starts anvil with `extra` arguments.
    pub async fn start_with(extra: &[&str]) -> Anvil {
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .expect("a free port")
                .local_addr()
                .expect("its address")
                .port();
            let mut child = Command::new(anvil_path())
                .args([
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--silent",
                ])
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("anvil: run scripts/install-anvil.sh or set CUSTOS_ANVIL");
            let url = format!("http://127.0.0.1:{port}");
            let node = rpc(&url);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                if node.chain_id().await.is_ok() {
                    return Anvil { child, url };
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("anvil did not come up");
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
