//! The demo on real chains. `custos dev up --eth-rpc URL` and `custos demo
//! --eth-rpc URL` against a real anvil node: the wallet is funded from anvil's
//! dev account, a 1.5 ETH withdrawal goes through the policy and two
//! approvals, is broadcast and confirmed; the test checks the receipt and the
//! balances on the node itself. `--ltc-rpc URL` likewise against a real
//! Litecoin Core regtest node, in LTC.
//!
//! Needs `custos-signer` and `custos-coordinator` next to the test binary's
//! directory (`cargo build --workspace --bins`; skipped with a message
//! otherwise), anvil (`scripts/install-anvil.sh`, or `CUSTOS_ANVIL`) and
//! litecoind (apt, or `CUSTOS_LITECOIND`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers outside #[test] fns

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use custos_chains::evm::address::parse_address;
use custos_chains::evm::rpc::EvmRpc;
use custos_chains::evm::rpc::quantity::{format_quantity, parse_u256};
use custos_chains::{Address, B256, U256};
use custos_devkit::{ClusterSpec, EvmChain, generate};
use custos_tests::anvil::{Anvil, rpc};
use custos_tests::litecoind::Litecoind;
use serde_json::{Value, json};

/// The demo policy's `anvil-payee` (anvil dev account 1).
const PAYEE: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
/// What `custos demo --eth-rpc` pays out: 1.5 ETH.
const PAYOUT_WEI: u128 = 1_500_000_000_000_000_000;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn bin_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_BIN_EXE_custos"))
        .parent()?
        .to_path_buf();
    for bin in [custos_devkit::SIGNER_BIN, custos_devkit::COORDINATOR_BIN] {
        if !dir.join(bin).is_file() {
            eprintln!(
                "SKIPPED: {} missing: run `cargo build --workspace --bins` first",
                dir.join(bin).display()
            );
            return None;
        }
    }
    Some(dir)
}

/// A temporary cluster directory; `custos dev down` on drop (also when the
/// test fails), then the directory is removed.
struct DevDir {
    tmp: tempfile::TempDir,
}

impl DevDir {
    fn new() -> DevDir {
        DevDir {
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> PathBuf {
        self.tmp.path().join("cluster")
    }

    fn arg(&self) -> String {
        self.path().display().to_string()
    }
}

impl Drop for DevDir {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_custos"))
            .args(["dev", "down", "--dir"])
            .arg(self.path())
            .output();
    }
}

fn custos(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_custos"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap()
}

/// Runs and expects success; returns stdout.
fn ok(args: &[&str]) -> String {
    let out = custos(args);
    assert!(
        out.status.success(),
        "custos {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs and expects failure; returns stderr.
fn fails(args: &[&str]) -> String {
    let out = custos(args);
    assert!(
        !out.status.success(),
        "custos {args:?} succeeded:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

async fn balance_at(node: &EvmRpc, address: Address, block: u64) -> U256 {
    let v = node
        .request(
            "eth_getBalance",
            json!([address, format_quantity(U256::from(block))]),
        )
        .await
        .unwrap();
    parse_u256(v.as_str().unwrap()).unwrap()
}

/// Runs `custos demo --eth-rpc` (blocking, off the runtime) and checks what it
/// reports against the node: receipt, hash on chain, the payee's balance.
async fn demo_on_chain(dir: &str, url: &str, node: &EvmRpc) -> Value {
    let args: Vec<String> = ["demo", "--dir", dir, "--eth-rpc", url, "--json"]
        .map(String::from)
        .to_vec();
    let out = tokio::task::spawn_blocking(move || {
        ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    let v = json_of(&out);
    assert_eq!(v["withdrawal"]["state"], "confirmed", "{v}");
    assert_eq!(v["withdrawal"]["rule_id"], "large-whitelisted", "{v}");
    assert_eq!(v["withdrawal"]["amount"], PAYOUT_WEI.to_string());
    assert_eq!(v["approvals"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["receipt"]["status"], 1, "{v}");
    assert_eq!(v["verified"], true);

    // The hash is on chain, mined in the block the demo reports.
    let hash: B256 = v["tx_hash"].as_str().unwrap().parse().unwrap();
    let receipt = node.transaction_receipt(hash).await.unwrap().unwrap();
    assert!(receipt.success);
    assert_eq!(v["receipt"]["block_number"], receipt.block_number);
    assert_eq!(v["receipt"]["gas_used"], receipt.gas_used);
    assert_eq!(v["receipt"]["fee"], receipt.fee_paid_wei().to_string());
    let sender = parse_address(v["ethereum_address"].as_str().unwrap()).unwrap();
    assert_eq!(receipt.from, sender);

    // The payee got exactly the amount; the sender paid it and the fee.
    let payee = parse_address(PAYEE).unwrap();
    let block = receipt.block_number;
    let payee_rise =
        balance_at(node, payee, block).await - balance_at(node, payee, block - 1).await;
    assert_eq!(payee_rise, U256::from(PAYOUT_WEI));
    let sender_drop =
        balance_at(node, sender, block - 1).await - balance_at(node, sender, block).await;
    assert_eq!(sender_drop, U256::from(PAYOUT_WEI) + receipt.fee_paid_wei());
    assert_eq!(v["balances"]["payee"]["change"], PAYOUT_WEI.to_string());
    assert_eq!(v["balances"]["sender"]["change"], format!("-{sender_drop}"));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_withdraws_on_anvil_through_policy_and_approvals() {
    let Some(_bins) = bin_dir() else { return };
    let anvil = Anvil::start().await;
    let node = rpc(&anvil.url);
    let dev = DevDir::new();
    let dir = dev.arg();
    let base = custos_devkit::free_base_port().to_string();

    // The chain id comes from the node; cluster.json records the chain.
    let up = json_of(&ok_owned(dev_up(&dir, &base, &["--eth-rpc", &anvil.url])));
    assert_eq!(up["cluster"]["evm_chain"]["name"], "anvil", "{up}");
    assert_eq!(up["cluster"]["evm_chain"]["chain_id"], 31337, "{up}");
    assert_eq!(up["cluster"]["evm_chain"]["rpc_url"], anvil.url.as_str());

    // First run: the fresh wallet is funded from the dev account.
    let first = demo_on_chain(&dir, &anvil.url, &node).await;
    assert_eq!(first["key_id"], "eth-hot-1");
    assert_eq!(first["chain"], "anvil");
    let funding = &first["funding"];
    assert_eq!(
        funding["from"],
        "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    );
    let fund_hash: B256 = funding["tx_hash"].as_str().unwrap().parse().unwrap();
    assert!(node.transaction_exists(fund_hash).await.unwrap());

    // A rerun reuses the wallet and its balance: no funding, next nonce.
    let second = demo_on_chain(&dir, &anvil.url, &node).await;
    assert_eq!(second["funding"], Value::Null, "{second}");
    assert_eq!(second["ethereum_address"], first["ethereum_address"]);
    assert_ne!(second["tx_hash"], first["tx_hash"]);

    // The ledger reconciles with the node out of the box: the funding was
    // credited as a deposit from anvil's blocks (issue 19), the payouts and
    // fees debited; reconcile takes the configured chain's own endpoint.
    let started = std::time::Instant::now();
    loop {
        let out = custos(&[
            "ledger",
            "reconcile",
            "--chain",
            "anvil",
            "--json",
            "--cluster",
            &dir,
        ]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if out.status.success() && v["ok"] == true {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "ledger and anvil disagree: {v} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Another node: refused, naming the cluster's node and how to restart.
    let other = "http://127.0.0.1:1";
    let err = fails(&["demo", "--dir", &dir, "--eth-rpc", other]);
    assert!(
        err.contains(&anvil.url) && err.contains(other) && err.contains("custos dev down"),
        "{err}"
    );
    let err = fails(&["dev", "up", "--dir", &dir, "--eth-rpc", other]);
    assert!(
        err.contains("already running")
            && err.contains(&format!("--base-port {base} --eth-rpc {other}")),
        "{err}"
    );
    // Without the flag, `up` reports the running cluster with its chain.
    let again = ok(&["dev", "up", "--dir", &dir, "--base-port", &base]);
    assert!(
        again.contains("already running") && again.contains(&anvil.url),
        "{again}"
    );

    drop(dev);
    drop(anvil);
}

/// `custos dev up` of a fixture-backed cluster in `dir` on `base`, with
/// `extra` arguments, as JSON.
fn dev_up(dir: &str, base: &str, extra: &[&str]) -> Vec<String> {
    let primes = repo().join("mpc/tests/fixtures/test-primes.json");
    let aux = repo().join("mpc/tests/fixtures/aux-info-3.json");
    let mut args: Vec<String> = ["dev", "up", "--dir", dir, "--base-port", base]
        .map(String::from)
        .to_vec();
    args.extend(["--primes-file".into(), primes.display().to_string()]);
    args.extend(["--aux-fixture".into(), aux.display().to_string()]);
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args.push("--json".into());
    args
}

fn ok_owned(args: Vec<String>) -> String {
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The LTC demo on a real Litecoin Core regtest node: the wallet is funded
/// from a node wallet the demo mines to, 1.5 LTC goes through the policy and
/// two approvals, is signed input by input, broadcast and mined; the node's
/// own wallets show the payout and the confirmation. A rerun funds and
/// spends again; another node is refused by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_withdraws_ltc_on_litecoin_core_through_policy_and_approvals() {
    let Some(_bins) = bin_dir() else { return };
    let node = Litecoind::start().await;
    let dev = DevDir::new();
    let dir = dev.arg();
    let base = custos_devkit::free_base_port().to_string();
    let up = json_of(&ok_owned(dev_up(&dir, &base, &["--ltc-rpc", &node.url])));
    assert_eq!(
        up["cluster"]["utxo_chain"]["name"], "litecoin-regtest",
        "{up}"
    );
    assert!(
        !up.to_string().contains(custos_tests::litecoind::PASSWORD),
        "{up}"
    );

    let demo = |dir: String, url: String| async move {
        let out = tokio::task::spawn_blocking(move || {
            ok(&["demo", "--dir", &dir, "--ltc-rpc", &url, "--json"])
        })
        .await
        .unwrap();
        json_of(&out)
    };
    let mut txids = Vec::new();
    for run in 0..2 {
        let v = demo(dir.clone(), node.url.clone()).await;
        assert_eq!(v["withdrawal"]["state"], "confirmed", "run {run}: {v}");
        assert_eq!(v["withdrawal"]["rule_id"], "ltc-large-whitelisted", "{v}");
        assert_eq!(v["withdrawal"]["asset"], "LTC", "{v}");
        assert_eq!(v["withdrawal"]["amount"], "150000000", "{v}");
        assert_eq!(v["approvals"].as_array().unwrap().len(), 2, "{v}");
        assert_eq!(v["key_id"], "ltc-hot-1");
        assert!(v["address"].as_str().unwrap().starts_with("rltc1q"), "{v}");

        // On the node: the funding paid the wallet, the payout is mined and
        // pays the policy's ltc-payee exactly 1.5 LTC.
        let rpc = node.rpc();
        let funding: custos_chains::utxo::Txid =
            v["funding"]["txid"].as_str().unwrap().parse().unwrap();
        assert!(
            rpc.wallet_transaction("custos-demo-funds", &funding)
                .await
                .unwrap()
                .is_some()
        );
        let txid: custos_chains::utxo::Txid = v["txid"].as_str().unwrap().parse().unwrap();
        let (tx, status) = rpc
            .wallet_transaction("custos-litecoin-regtest", &txid)
            .await
            .unwrap()
            .expect("the watch-only wallet knows the payout");
        assert!(status.confirmations >= 1, "{status:?}");
        let payee = custos_chains::utxo::parse_address(
            custos_chains::utxo::UtxoNetwork::LitecoinRegtest,
            "rltc1qdmm5875nd4709xuh7f65k9d46laea9qlz5vn5j",
        )
        .unwrap();
        assert!(
            tx.output
                .iter()
                .any(|o| o.script_pubkey == payee.script_pubkey && o.value.to_sat() == 150_000_000),
            "{tx:?}"
        );
        assert_eq!(v["withdrawal"]["fee_paid"], v["fee"], "{v}");
        txids.push(txid);
    }
    assert_ne!(txids[0], txids[1]);

    // Another node: refused by `demo` and by `dev up` while running.
    let other = "http://custos:x@127.0.0.1:1/";
    let err = fails(&["demo", "--dir", &dir, "--ltc-rpc", other]);
    assert!(
        err.contains("another Litecoin node") && err.contains("custos dev down"),
        "{err}"
    );
    let err = fails(&["dev", "up", "--dir", &dir, "--ltc-rpc", other]);
    assert!(
        err.contains("already running") && !err.contains(":x@"),
        "{err}"
    );

    drop(dev);
    drop(node);
}

#[test]
fn demo_refuses_a_node_the_cluster_was_not_started_with() {
    let dev = DevDir::new();
    let dir = dev.arg();
    let url = "http://127.0.0.1:1";
    // A cluster generated without a chain (the check reads cluster.json, before
    // any connection).
    let mut spec = ClusterSpec::new(dev.path());
    spec.base_port = 31500;
    generate(&spec).unwrap();
    let err = fails(&["demo", "--dir", &dir, "--eth-rpc", url]);
    assert!(err.contains("without an EVM chain"), "{err}");
    assert!(
        err.contains(&format!(
            "custos dev up --dir {dir} --base-port 31500 --eth-rpc {url}"
        )),
        "{err}"
    );

    // One generated with another node.
    spec.evm_chain = Some(EvmChain::new("http://127.0.0.1:2", 31337));
    generate(&spec).unwrap();
    let err = fails(&["demo", "--dir", &dir, "--eth-rpc", url]);
    assert!(
        err.contains("http://127.0.0.1:2") && err.contains(url),
        "{err}"
    );
}

#[test]
fn dev_up_names_a_bad_or_unreachable_node() {
    let Some(bins) = bin_dir() else { return };
    let bins = bins.display().to_string();
    let dev = DevDir::new();
    let dir = dev.arg();
    let up = |eth: &[&str]| {
        let mut args = vec!["dev", "up", "--dir", &dir, "--bin-dir", &bins];
        args.extend_from_slice(eth);
        fails(&args)
    };
    let err = up(&["--eth-rpc", "localhost:8545", "--eth-chain-id", "31337"]);
    assert!(
        err.contains("\"localhost:8545\"") && err.contains("http://"),
        "{err}"
    );
    let err = up(&["--eth-rpc", "http://127.0.0.1:1"]);
    assert!(
        err.contains("http://127.0.0.1:1") && err.contains("eth_chainId"),
        "{err}"
    );
}

#[test]
fn help_shows_the_flags() {
    let help = ok(&["demo", "--help"]);
    assert!(help.contains("--eth-rpc <URL>"), "{help}");
    let help = ok(&["dev", "up", "--help"]);
    assert!(
        help.contains("--eth-rpc <URL>") && help.contains("--eth-chain-id <N>"),
        "{help}"
    );
}
