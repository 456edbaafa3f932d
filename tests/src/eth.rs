//! A cluster on anvil: the coordinator's `[[chains]]` and assets for the
//! node, the signers' own chain facts, and funding from anvil's unlocked
//! dev account. Shared by the Ethereum tests and the crash storm.

use std::time::Duration;

use custos_chains::Address;
use custos_chains::evm::address::parse_address;
use custos_chains::evm::rpc::{EvmRpc, Receipt};
use custos_devkit::ClusterLayout;
use serde_json::json;

/// anvil's chain id.
pub const CHAIN_ID: u64 = 31337;
/// The chain's name in the cluster's configuration (and so in the log).
pub const CHAIN: &str = "anvil";
/// Dev account 0, which deploys MiniToken first: its contract address.
pub const DEV_0: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
/// MiniToken, deployed by dev account 0 as its first transaction.
pub const MINI: &str = "0x5FbDB2315678afecb367f032d93F642f64180aa3";

/// An address in the tests' constants.
pub fn addr(s: &str) -> Address {
    parse_address(s).unwrap()
}

/// The coordinator config for anvil at `url` (assets and the chain, with
/// more `[[chains]]` settings in `chain_extra`, `key = value` lines).
pub fn chain_toml(url: &str, chain_extra: &str) -> String {
    format!(
        r#"
[[assets]]
chain = "ethereum"
symbol = "ETH"
decimals = 18
default_fee_cap = "2100000000000000"

[[assets]]
chain = "anvil"
symbol = "ETH"
decimals = 18
default_fee_cap = "2100000000000000"

[[assets]]
chain = "anvil"
symbol = "MINI"
decimals = 18
default_fee_cap = "20000000000000000"
contract = "{MINI}"

[[chains]]
name = "anvil"
kind = "evm"
chain_id = {CHAIN_ID}
rpc_url = "{url}"
rpc_timeout_ms = 1000
{chain_extra}

[ledger]
deposit_scan_ms = 300
"#
    )
}

/// The signers' own chain facts (inserted under `[cosigner]`).
pub fn signer_chains(chain_id: u64) -> String {
    format!(
        r#"chains = [{{ name = "anvil", chain_id = {chain_id}, tokens = [{{ symbol = "MINI", contract = "{MINI}" }}] }}]"#
    )
}

/// Points a generated cluster at anvil at `url`: the coordinator's chain
/// and assets (on `database_url` if given, with `coordinator_extra` whole
/// tables appended), and each signer's own chain facts under `[cosigner]`
/// (with `signer_extra` whole tables appended).
pub fn configure(
    layout: &ClusterLayout,
    url: &str,
    database_url: Option<&str>,
    chain_extra: &str,
    coordinator_extra: &str,
    signer_extra: &str,
) {
    let mut cfg = std::fs::read_to_string(&layout.coordinator.config).unwrap();
    if let Some(db) = database_url {
        // Top-level keys go before the first [section].
        cfg = format!("database_url = {db:?}\n{cfg}");
    }
    cfg.push_str(&chain_toml(url, chain_extra));
    cfg.push('\n');
    cfg.push_str(coordinator_extra);
    cfg.push('\n');
    std::fs::write(&layout.coordinator.config, cfg).unwrap();
    for s in &layout.signers {
        let text = std::fs::read_to_string(&s.config).unwrap();
        let mut text = if text.contains("[cosigner]") {
            text.replacen(
                "[cosigner]\n",
                &format!("[cosigner]\n{}\n", signer_chains(CHAIN_ID)),
                1,
            )
        } else {
            format!("{text}\n[cosigner]\n{}\n", signer_chains(CHAIN_ID))
        };
        text.push('\n');
        text.push_str(signer_extra);
        text.push('\n');
        std::fs::write(&s.config, text).unwrap();
    }
}

/// Waits (20 s at most) for the receipt of `hash`.
pub async fn wait_receipt(rpc: &EvmRpc, hash: custos_chains::B256) -> Receipt {
    rpc.wait_for_receipt(hash, Duration::from_millis(50), Duration::from_secs(20))
        .await
        .unwrap()
}

/// Dev account 0 (unlocked in anvil) sends `tx`; returns the receipt.
pub async fn dev_send(rpc: &EvmRpc, tx: serde_json::Value) -> Receipt {
    let hash = rpc
        .request("eth_sendTransaction", json!([tx]))
        .await
        .unwrap();
    wait_receipt(rpc, hash.as_str().unwrap().parse().unwrap()).await
}

/// Dev account 0 pays `wei` to `to`.
pub async fn fund(rpc: &EvmRpc, to: Address, wei: u128) {
    let r = dev_send(
        rpc,
        json!({ "from": DEV_0, "to": to, "value": format!("0x{wei:x}") }),
    )
    .await;
    assert!(r.success);
}
