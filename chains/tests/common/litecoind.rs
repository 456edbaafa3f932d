//! A real Litecoin Core node (`litecoind -regtest`) on free loopback ports,
//! in a fresh data directory, stopped and removed on drop.
//!
//! Litecoin Core is a Bitcoin Core fork with the same transaction format,
//! segwit and sighash rules; only address prefixes differ (`rltc1` here).
//! The binary is `$CUSTOS_LITECOIND`, else `litecoind` on `PATH` (Debian's
//! package, installed by `scripts/install-deps.sh`).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use custos_chains::utxo::rpc::UtxoRpc;
use serde_json::{Value, json};

pub const USER: &str = "custos";
pub const PASSWORD: &str = "regtest-only";
/// The funding wallet (mines and pays deposits).
pub const MINER: &str = "miner";

pub struct Litecoind {
    child: Option<Child>,
    pub datadir: PathBuf,
    pub rpc_port: u16,
    pub url: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

impl Litecoind {
    /// Starts a node, creates the miner wallet and mines 101 blocks so its
    /// first coinbase is spendable.
    pub async fn start() -> Litecoind {
        let datadir =
            std::env::temp_dir().join(format!("custos-ltc-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&datadir).unwrap();
        let rpc_port = free_port();
        let mut node = Litecoind {
            child: None,
            datadir,
            rpc_port,
            url: format!("http://{USER}:{PASSWORD}@127.0.0.1:{rpc_port}/"),
        };
        node.launch().await;
        let rpc = node.rpc();
        rpc.call(None, "createwallet", json!([MINER]))
            .await
            .unwrap();
        let addr = node.miner_address().await;
        node.mine_to(101, &addr).await;
        node
    }

    /// Starts the process on the same data directory and port and waits for RPC.
    pub async fn launch(&mut self) {
        let bin = std::env::var_os("CUSTOS_LITECOIND").unwrap_or_else(|| "litecoind".into());
        let child = Command::new(&bin)
            .arg("-regtest")
            .arg(format!("-datadir={}", self.datadir.display()))
            .arg(format!("-rpcport={}", self.rpc_port))
            .arg(format!("-port={}", free_port()))
            .args([
                "-listen=0",
                "-server=1",
                "-rpcbind=127.0.0.1",
                "-rpcallowip=127.0.0.1",
                &format!("-rpcuser={USER}"),
                &format!("-rpcpassword={PASSWORD}"),
                "-fallbackfee=0.0002",
                // Litecoin Core relays no replacements by default (unlike
                // Bitcoin Core's BIP125); on to exercise fee bumps as on Bitcoin.
                "-mempoolreplacement=1",
                // Shutdown waits for idle keep-alive RPC connections to time out.
                "-rpcservertimeout=1",
                "-txindex=0",
                "-printtoconsole=0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start litecoind ({e}): apt-get install litecoind or set CUSTOS_LITECOIND"));
        self.child = Some(child);
        let rpc = self.rpc();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("litecoind exited with {status}");
            }
            match rpc.chain().await {
                Ok((chain, _)) => {
                    assert_eq!(chain, "regtest");
                    // Wallets created before a restart must be loaded again.
                    for w in self.wallet_dirs() {
                        let _ = rpc.call(None, "loadwallet", json!([w])).await;
                    }
                    return;
                }
                Err(e) if Instant::now() > deadline => panic!("litecoind did not answer: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    fn wallet_dirs(&self) -> Vec<String> {
        let dir = self.datadir.join("regtest").join("wallets");
        std::fs::read_dir(dir)
            .map(|it| {
                it.filter_map(|e| e.ok())
                    .filter(|e| e.path().is_dir())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Stops the node cleanly (`stop`, then waits for the process).
    pub async fn stop(&mut self) {
        let _ = self.rpc().call(None, "stop", json!([])).await;
        if let Some(mut c) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = c.kill();
            let _ = c.wait();
            panic!("litecoind did not stop within 30 s");
        }
    }

    pub fn rpc(&self) -> UtxoRpc {
        UtxoRpc::new(&self.url, Duration::from_secs(30)).unwrap()
    }

    pub async fn miner_address(&self) -> String {
        let v = self
            .rpc()
            .call(Some(MINER), "getnewaddress", json!(["", "bech32"]))
            .await
            .unwrap();
        v.as_str().unwrap().to_owned()
    }

    /// Mines `n` blocks to `address`; returns their hashes.
    pub async fn mine_to(&self, n: u64, address: &str) -> Vec<String> {
        let v = self
            .rpc()
            .call(None, "generatetoaddress", json!([n, address]))
            .await
            .unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|h| h.as_str().unwrap().to_owned())
            .collect()
    }

    pub async fn mine(&self, n: u64) -> Vec<String> {
        let a = self.miner_address().await;
        self.mine_to(n, &a).await
    }

    /// Pays `coins` (decimal, e.g. 1.25) from the miner wallet to `address`.
    pub async fn pay(&self, address: &str, coins: f64) -> String {
        let v: Value = self
            .rpc()
            .call(Some(MINER), "sendtoaddress", json!([address, coins]))
            .await
            .unwrap();
        v.as_str().unwrap().to_owned()
    }
}

impl Drop for Litecoind {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.datadir);
    }
}
