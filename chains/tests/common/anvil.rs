//! A real anvil node on a free loopback port, killed on drop.
//!
//! The binary is `$CUSTOS_ANVIL`, else the one `scripts/install-anvil.sh`
//! installs under `.tools/`, else `anvil` on `PATH`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use custos_chains::evm::rpc::{EvmRpc, RpcConfig};

/// anvil's default chain id.
pub const CHAIN_ID: u64 = 31337;

/// Dev account 0 (funded with 10000 ETH by anvil).
pub const DEV_KEY_0: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

const NPM_PATH: &str = ".tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil";

pub fn anvil_path() -> PathBuf {
    if let Some(p) = std::env::var_os("CUSTOS_ANVIL") {
        return PathBuf::from(p);
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(NPM_PATH);
    if local.is_file() {
        return local;
    }
    PathBuf::from("anvil")
}

pub struct Anvil {
    child: Child,
    pub url: String,
}

impl Anvil {
    /// Starts anvil and waits until it answers `eth_chainId`.
    pub async fn start() -> Anvil {
        let path = anvil_path();
        let mut last_error = String::new();
        // A port found free can be taken before anvil binds it: retry.
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(&path)
                .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--silent"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot start anvil at {} ({e}): run scripts/install-anvil.sh or set CUSTOS_ANVIL",
                        path.display()
                    )
                });
            let url = format!("http://127.0.0.1:{port}");
            let mut config = RpcConfig::new(&url);
            config.timeout = Duration::from_secs(2);
            let rpc = EvmRpc::new(config).unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last_error = format!("anvil exited with {status}");
                    break;
                }
                match rpc.chain_id().await {
                    Ok(id) => {
                        assert_eq!(id, CHAIN_ID);
                        return Anvil { child, url };
                    }
                    Err(e) => last_error = e.to_string(),
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        panic!("anvil did not come up: {last_error}");
    }

    pub fn rpc(&self) -> EvmRpc {
        EvmRpc::new(RpcConfig::new(&self.url)).unwrap()
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}
