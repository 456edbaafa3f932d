//! An EVM chain a generated cluster signs and broadcasts on ([`EvmChain`]):
//! the coordinator's `[[assets]]` and `[[chains]]` entries and the signers'
//! `[cosigner] chains`.

use serde::{Deserialize, Serialize};

use crate::DevkitError;

/// Chain name of [`EvmChain::new`]: the one the demo policy's rules and its
/// `anvil-payee` address-book entry name.
pub const DEFAULT_EVM_CHAIN: &str = "anvil";

/// Fee cap of an ETH withdrawal that names none: 21000 gas at 100 gwei, in wei
/// (the coordinator's built-in default).
pub(crate) const ETH_DEFAULT_FEE_CAP: &str = "2100000000000000";

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
        self.rpc_url.trim_end_matches('/') == rpc_url.trim_end_matches('/')
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

    /// The coordinator's `[[assets]]`: its built-in ones (which an explicit list
    /// replaces) plus ETH on this chain if it is not among them.
    pub(crate) fn coordinator_assets(&self) -> Vec<AssetToml> {
        let mut assets: Vec<AssetToml> = ["ethereum", "anvil"]
            .into_iter()
            .map(|chain| AssetToml::eth(chain.to_string()))
            .collect();
        assets.push(AssetToml {
            chain: "bitcoin".into(),
            symbol: "BTC".into(),
            decimals: 8,
            default_fee_cap: "50000".into(),
        });
        if !assets.iter().any(|a| a.chain == self.name) {
            assets.push(AssetToml::eth(self.name.clone()));
        }
        assets
    }

    /// The coordinator's `[[chains]]` entry.
    pub(crate) fn coordinator_chain(&self) -> ChainToml {
        ChainToml {
            name: self.name.clone(),
            kind: "evm",
            chain_id: self.chain_id,
            rpc_url: self.rpc_url.clone(),
            confirmations: self.confirmations,
        }
    }

    /// A signer's `[cosigner] chains` entry (its own view of the chain).
    pub(crate) fn signer_chain(&self) -> SignerChainToml {
        SignerChainToml {
            name: self.name.clone(),
            chain_id: self.chain_id,
        }
    }
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

#[derive(Serialize)]
pub(crate) struct AssetToml {
    chain: String,
    symbol: String,
    decimals: u8,
    default_fee_cap: String,
}

impl AssetToml {
    fn eth(chain: String) -> AssetToml {
        AssetToml {
            chain,
            symbol: "ETH".into(),
            decimals: 18,
            default_fee_cap: ETH_DEFAULT_FEE_CAP.into(),
        }
    }
}

#[derive(Serialize)]
pub(crate) struct ChainToml {
    name: String,
    kind: &'static str,
    chain_id: u64,
    rpc_url: String,
    confirmations: u64,
}

#[derive(Serialize)]
pub(crate) struct SignerChainToml {
    name: String,
    chain_id: u64,
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
        let a = EvmChain::new("http://h:1", 5).coordinator_assets();
        assert_eq!(a.len(), 3);
        let mut other = EvmChain::new("http://h:1", 5);
        other.name = "sepolia".into();
        let a = other.coordinator_assets();
        assert_eq!(a.len(), 4);
        assert_eq!(a[3].chain, "sepolia");
    }
}
