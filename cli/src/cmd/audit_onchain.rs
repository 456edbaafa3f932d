//! `custos audit verify --evm-rpc CHAIN=URL`: every transaction an EVM
//! wallet of the log has mined must be one the log shows prepared (and so
//! signed through a logged signing session).
//!
//! An EVM account's transactions are numbered by nonce: when the chain says
//! the wallet's address has mined N transactions, nonces 0..N were each
//! signed by the wallet's key. A nonce no `transaction_prepared` entry of
//! the log names is a signature made outside the log, which the signers'
//! log gate should have made impossible. Needs a bundle from the start of
//! the log (the keys' creation entries and every transaction).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, bail};
use custos_audit::{Entry, EntryBody, ExportBundle};
use custos_chains::evm::address::address_from_sec1;
use custos_chains::evm::rpc::BlockTag;
use custos_chains::evm::rpc::{EvmRpc, RpcConfig};
use custos_chains::evm::tx::decode_unsigned;

/// One wallet on one chain, as the chain and the log see it.
#[derive(Debug, serde::Serialize)]
pub struct WalletNonces {
    /// Chain name (as in the log).
    pub chain: String,
    /// Key id (wallet).
    pub key_id: String,
    /// The wallet's EVM address.
    pub address: String,
    /// Transactions the chain says the address mined.
    pub mined: u64,
    /// Mined nonces no logged transaction names.
    pub unlogged: Vec<u64>,
}

/// Parses `CHAIN=URL`.
pub fn parse_rpc(text: &str) -> anyhow::Result<(String, String)> {
    match text.split_once('=') {
        Some((chain, url)) if !chain.is_empty() && !url.is_empty() => {
            Ok((chain.to_owned(), url.to_owned()))
        }
        _ => bail!("--evm-rpc {text:?}: expected CHAIN=URL, e.g. ethereum=http://127.0.0.1:8545"),
    }
}

/// Compares each secp256k1 key's mined nonces on each `rpcs` chain with the
/// nonces of the transactions the log prepared for it.
pub async fn check(
    bundle: &ExportBundle,
    rpcs: &[(String, String)],
) -> anyhow::Result<Vec<WalletNonces>> {
    if bundle.start != 0 {
        bail!(
            "--evm-rpc needs a bundle from the start of the log (this one starts at entry {}): keys and earlier transactions would be missing",
            bundle.start
        );
    }
    let mut keys: BTreeMap<String, String> = BTreeMap::new();
    let mut wallet_of: BTreeMap<String, String> = BTreeMap::new();
    let mut logged: BTreeMap<(String, String), BTreeSet<u64>> = BTreeMap::new();
    let mut chains: BTreeSet<String> = BTreeSet::new();
    for (i, hex_entry) in bundle.entries.iter().enumerate() {
        let bytes = hex::decode(hex_entry).with_context(|| format!("entry {i}: not hex"))?;
        let entry = Entry::decode(&bytes).with_context(|| format!("entry {i}"))?;
        match entry.body {
            EntryBody::KeyCreated {
                key_id,
                scheme,
                public_key,
                ..
            } if scheme == "ecdsa-secp256k1" => {
                if let Ok(a) = address_from_sec1(&public_key) {
                    keys.insert(key_id, format!("{a:#x}"));
                }
            }
            EntryBody::WithdrawalRequested {
                withdrawal_id,
                key_id,
                chain,
                ..
            } => {
                chains.insert(chain);
                wallet_of.insert(withdrawal_id, key_id);
            }
            EntryBody::TransactionPrepared {
                withdrawal_id,
                chain,
                unsigned_tx,
            } => {
                let (Some(key), Ok(tx)) =
                    (wallet_of.get(&withdrawal_id), decode_unsigned(&unsigned_tx))
                else {
                    continue;
                };
                logged
                    .entry((chain, key.clone()))
                    .or_default()
                    .insert(tx.as_eip1559().nonce);
            }
            _ => {}
        }
    }
    // A misspelt chain name would report every mined nonce as unlogged.
    if let Some((chain, _)) = rpcs.iter().find(|(c, _)| !chains.contains(c)) {
        bail!(
            "--evm-rpc {chain}=...: the log names no withdrawal on chain {chain:?} (its chains: {})",
            if chains.is_empty() {
                "none".to_owned()
            } else {
                chains.iter().cloned().collect::<Vec<_>>().join(", ")
            }
        );
    }
    let mut out = Vec::new();
    for (chain, url) in rpcs {
        let rpc = EvmRpc::new(RpcConfig::new(url)).with_context(|| format!("--evm-rpc {chain}"))?;
        for (key_id, address) in &keys {
            let a = address
                .parse()
                .with_context(|| format!("address of {key_id}"))?;
            let mined = rpc
                .transaction_count(a, BlockTag::Latest)
                .await
                .with_context(|| format!("{chain}: eth_getTransactionCount({address})"))?;
            let have = logged.get(&(chain.clone(), key_id.clone()));
            let unlogged = (0..mined)
                .filter(|n| !have.is_some_and(|h| h.contains(n)))
                .collect();
            out.push(WalletNonces {
                chain: chain.clone(),
                key_id: key_id.clone(),
                address: address.clone(),
                mined,
                unlogged,
            });
        }
    }
    Ok(out)
}
