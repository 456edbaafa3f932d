//! Assets the coordinator accepts per chain, with decimals for human amounts.

use serde::{Deserialize, Serialize};

/// One asset on one chain.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetConfig {
    /// Chain name as in the policy ("ethereum", "anvil").
    pub chain: String,
    /// Symbol ("ETH").
    pub symbol: String,
    /// Decimals of the base unit (18 for ETH).
    pub decimals: u8,
    /// Fee cap used when a request gives none, in the chain's native base units.
    #[serde(default)]
    pub default_fee_cap: String,
    /// ERC-20 contract (EIP-55 or lowercase hex); none: the chain's native coin.
    #[serde(default)]
    pub contract: Option<String>,
}

/// The built-in assets when the config lists none.
pub fn default_assets() -> Vec<AssetConfig> {
    let eth = |chain: &str| AssetConfig {
        chain: chain.into(),
        symbol: "ETH".into(),
        decimals: 18,
        // 21000 gas at 100 gwei.
        default_fee_cap: "2100000000000000".into(),
        contract: None,
    };
    vec![
        eth("ethereum"),
        eth("anvil"),
        AssetConfig {
            chain: "bitcoin".into(),
            symbol: "BTC".into(),
            decimals: 8,
            default_fee_cap: "50000".into(),
            contract: None,
        },
    ]
}
