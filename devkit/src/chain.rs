//! An EVM chain a generated cluster signs and broadcasts on ([`EvmChain`]):
//! the coordinator's `[[assets]]` and `[[chains]]` entries and the signers'
//! `[cosigner] chains`.

use custos_chains::family::{ChainFamily, family_of, known_chains, native_asset};
use custos_coordinator::chain::ChainSettings;
use custos_coordinator::withdrawal::assets::{AssetConfig, default_assets};
use custos_signer_node::cosigner::chains::SignerChain;
use serde::{Deserialize, Serialize};

use crate::DevkitError;

/// Chain name of [`EvmChain::new`]: the one the demo policy's rules and its
/// `anvil-payee` address-book entry name.
pub const DEFAULT_EVM_CHAIN: &str = "anvil";

/// An EVM node the cluster uses: recorded in `cluster.json`
/// ([`ClusterLayout::evm_chain`](crate::ClusterLayout::evm_chain)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EvmChain {
    /// Chain name as in keys, assets and the policy (default [`DEFAULT_EVM_CHAIN`]).
    pub name: String,
    /// EIP-155 chain id (the coordinator checks the node against it at start).
    pub chain_id: u64,
    /// JSON-RPC endpoint of the node (`http://` or `https://`).
    pub rpc_url: String,
    /// Blocks (including the transaction's) before a withdrawal is `confirmed`.
    pub confirmations: u64,
}

impl EvmChain {
    /// Chain [`DEFAULT_EVM_CHAIN`] with chain id `chain_id` at `rpc_url`, one confirmation.
    pub fn new(rpc_url: impl Into<String>, chain_id: u64) -> Self {
        EvmChain {
            name: DEFAULT_EVM_CHAIN.to_string(),
            chain_id,
            rpc_url: rpc_url.into(),
            confirmations: 1,
        }
    }

    /// Whether this chain's node is the one at `rpc_url` (a trailing `/` aside).
    pub fn uses_rpc(&self, rpc_url: &str) -> bool {
        same_rpc(&self.rpc_url, rpc_url)
    }

    pub(crate) fn validate(&self) -> Result<(), DevkitError> {
        let bad = |m: String| Err(DevkitError::InvalidSpec(format!("EVM chain: {m}")));
        if let Err(why) = check_rpc_url(&self.rpc_url) {
            return bad(format!("RPC URL {:?} {why}", self.rpc_url));
        }
        if self.name.is_empty()
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return bad(format!(
                "name {:?} must be lowercase letters, digits, `-` or `_`",
                self.name
            ));
        }
        if self.chain_id == 0 {
            return bad("chain id must not be 0".into());
        }
        if self.confirmations == 0 {
            return bad("confirmations must be at least 1".into());
        }
        Ok(())
    }

    /// The coordinator's `[[assets]]` entry for ETH on this chain: its
    /// built-in ETH asset (same decimals and default fee cap).
    pub(crate) fn coordinator_asset(&self) -> AssetConfig {
        let mut eth = default_assets()
            .into_iter()
            .find(|a| a.symbol == "ETH")
            .unwrap_or_else(|| AssetConfig {
                chain: String::new(),
                symbol: "ETH".into(),
                decimals: 18,
                default_fee_cap: String::new(),
                contract: None,
            });
        eth.chain = self.name.clone();
        eth
    }

    /// The coordinator's `[[chains]]` entry.
    pub(crate) fn coordinator_chain(&self) -> ChainSettings {
        let mut chain = ChainSettings::new(self.name.clone(), "evm", self.rpc_url.clone());
        chain.chain_id = self.chain_id;
        chain.confirmations = self.confirmations;
        chain
    }

    /// A signer's `[cosigner] chains` entry (its own view of the chain).
    pub(crate) fn signer_chain(&self) -> SignerChain {
        SignerChain {
            name: self.name.clone(),
            chain_id: Some(self.chain_id),
            native: None,
            tokens: Vec::new(),
        }
    }
}

/// Chain name of [`UtxoChain::new`]: Litecoin Core's regtest, the one the demo
/// policy's LTC rules and its `ltc-payee` address-book entry name.
pub const DEFAULT_UTXO_CHAIN: &str = "litecoin-regtest";

/// Fee cap of a UTXO withdrawal that names none: 0.001 coin, in base units.
pub(crate) const UTXO_DEFAULT_FEE_CAP: &str = "100000";

/// A Bitcoin-format node the cluster spends on (Litecoin Core or Bitcoin
/// Core, regtest in a dev cluster): recorded in `cluster.json`
/// ([`ClusterLayout::utxo_chain`](crate::ClusterLayout::utxo_chain)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct UtxoChain {
    /// Chain name as in keys, assets and the policy; it decides the network
    /// (default [`DEFAULT_UTXO_CHAIN`]).
    pub name: String,
    /// The node's JSON-RPC URL, with its RPC user and password
    /// (`http://user:password@127.0.0.1:19443/`). A dev cluster's files are
    /// not secret: use a regtest node's throwaway credentials only.
    pub rpc_url: String,
    /// Blocks (including the transaction's) before a withdrawal is `confirmed`.
    pub confirmations: u64,
}

impl UtxoChain {
    /// Chain [`DEFAULT_UTXO_CHAIN`] at `rpc_url`, one confirmation.
    pub fn new(rpc_url: impl Into<String>) -> Self {
        UtxoChain {
            name: DEFAULT_UTXO_CHAIN.to_string(),
            rpc_url: rpc_url.into(),
            confirmations: 1,
        }
    }

    /// Whether this chain's node is the one at `rpc_url` (a trailing `/` aside).
    pub fn uses_rpc(&self, rpc_url: &str) -> bool {
        same_rpc(&self.rpc_url, rpc_url)
    }

    /// The native coin's symbol ("LTC", "BTC").
    pub fn symbol(&self) -> &'static str {
        native_asset(&self.name).unwrap_or("LTC")
    }

    pub(crate) fn validate(&self) -> Result<(), DevkitError> {
        let bad = |m: String| Err(DevkitError::InvalidSpec(format!("UTXO chain: {m}")));
        if let Err(why) = check_rpc_url(&self.rpc_url) {
            return bad(format!("RPC URL {:?} {why}", self.rpc_url));
        }
        if !matches!(family_of(&self.name), Some(ChainFamily::Utxo(_))) {
            return bad(format!(
                "name {:?} is not a Bitcoin-format chain (known: {})",
                self.name,
                known_chains()
            ));
        }
        if self.confirmations == 0 {
            return bad("confirmations must be at least 1".into());
        }
        Ok(())
    }

    /// The coordinator's `[[assets]]` entry for the native coin.
    pub(crate) fn coordinator_asset(&self) -> AssetConfig {
        AssetConfig {
            chain: self.name.clone(),
            symbol: self.symbol().into(),
            decimals: 8,
            default_fee_cap: UTXO_DEFAULT_FEE_CAP.into(),
            contract: None,
        }
    }

    /// The coordinator's `[[chains]]` entry (a watch-only wallet on the node).
    pub(crate) fn coordinator_chain(&self) -> ChainSettings {
        let mut chain = ChainSettings::new(self.name.clone(), "utxo", self.rpc_url.clone());
        chain.confirmations = self.confirmations;
        chain
    }

    /// A signer's `[cosigner] chains` entry (the name decides the network).
    pub(crate) fn signer_chain(&self) -> SignerChain {
        SignerChain {
            name: self.name.clone(),
            chain_id: None,
            native: None,
            tokens: Vec::new(),
        }
    }
}

/// The coordinator's `[[assets]]` for these chains: none without a chain
/// (the built-in ones apply), else the built-in ones (which an explicit
/// list replaces) plus each chain's native coin not among them.
pub(crate) fn coordinator_assets(
    evm: Option<&EvmChain>,
    utxo: Option<&UtxoChain>,
) -> Vec<AssetConfig> {
    if evm.is_none() && utxo.is_none() {
        return Vec::new();
    }
    let mut assets = default_assets();
    let extra = evm
        .map(EvmChain::coordinator_asset)
        .into_iter()
        .chain(utxo.map(UtxoChain::coordinator_asset));
    for asset in extra {
        if !assets.iter().any(|a| a.chain == asset.chain) {
            assets.push(asset);
        }
    }
    assets
}

/// Whether two JSON-RPC URLs name the same endpoint (a trailing `/` aside).
fn same_rpc(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// Why `url` is not a usable JSON-RPC endpoint, if it is not.
fn check_rpc_url(url: &str) -> Result<(), &'static str> {
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return Err("is not an http:// or https:// URL (e.g. http://127.0.0.1:8545)");
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains whitespace or control characters");
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':')),
            None => return Err("has an unterminated [IPv6] host"),
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return Err("has no host");
    }
    if let Some(p) = port
        && !matches!(p.parse::<u16>(), Ok(n) if n > 0)
    {
        return Err("has an invalid port");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_urls() {
        for ok in [
            "http://127.0.0.1:8545",
            "https://node.example/v3/key",
            "http://[::1]:8545/",
            "http://localhost",
        ] {
            assert_eq!(check_rpc_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "127.0.0.1:8545",
            "ws://127.0.0.1:8545",
            "http://",
            "http://:8545",
            "http://h:0",
            "http://h:port",
            "http://h :1",
            "http://[::1",
        ] {
            assert!(check_rpc_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_name_the_url() {
        let e = EvmChain::new("localhost:8545", 1).validate();
        let Err(e) = e else {
            panic!("accepted a URL without a scheme")
        };
        assert!(e.to_string().contains("\"localhost:8545\""), "{e}");
        assert!(EvmChain::new("http://h:1", 0).validate().is_err());
    }

    #[test]
    fn assets_keep_the_builtin_ones() {
        assert!(coordinator_assets(None, None).is_empty(), "built-ins apply");
        let anvil = EvmChain::new("http://h:1", 5);
        let a = coordinator_assets(Some(&anvil), None);
        assert_eq!(a.len(), 3);
        let mut other = EvmChain::new("http://h:1", 5);
        other.name = "sepolia".into();
        let a = coordinator_assets(Some(&other), None);
        assert_eq!(a.len(), 4);
        assert_eq!(a[3].chain, "sepolia");
        let ltc = UtxoChain::new("http://u:p@h:1/");
        let a = coordinator_assets(Some(&other), Some(&ltc));
        assert_eq!(a.len(), 5);
        assert_eq!(
            (a[4].chain.as_str(), a[4].symbol.as_str(), a[4].decimals),
            ("litecoin-regtest", "LTC", 8)
        );
        let a = coordinator_assets(None, Some(&ltc));
        assert_eq!(a.len(), 4);
    }

    #[test]
    fn utxo_chain_names_must_be_bitcoin_format() {
        UtxoChain::new("http://u:p@127.0.0.1:19443/")
            .validate()
            .unwrap();
        let mut c = UtxoChain::new("http://h:1");
        c.name = "anvil".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("\"anvil\" is not a Bitcoin-format chain"), "{e}");
        let e = UtxoChain::new("h:1").validate().unwrap_err().to_string();
        assert!(e.contains("UTXO chain: RPC URL \"h:1\""), "{e}");
    }
}
