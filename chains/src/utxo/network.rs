//! Network parameters of the Bitcoin-format chains Custos signs for.
//!
//! Litecoin uses Bitcoin's transaction format, script, segwit and sighash
//! rules unchanged; only the address prefixes differ. So one adapter serves
//! both, and a chain is one of these parameter sets.

use std::fmt;
use std::str::FromStr;

use crate::error::ChainError;

/// A Bitcoin-format network: what its addresses look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UtxoNetwork {
    /// Bitcoin mainnet (`bc1...`).
    Bitcoin,
    /// Bitcoin testnet and signet (`tb1...`).
    BitcoinTestnet,
    /// Bitcoin regtest (`bcrt1...`).
    BitcoinRegtest,
    /// Litecoin mainnet (`ltc1...`).
    Litecoin,
    /// Litecoin testnet (`tltc1...`).
    LitecoinTestnet,
    /// Litecoin regtest (`rltc1...`).
    LitecoinRegtest,
}

impl UtxoNetwork {
    /// Every network, for error messages and tests.
    pub const ALL: [UtxoNetwork; 6] = [
        Self::Bitcoin,
        Self::BitcoinTestnet,
        Self::BitcoinRegtest,
        Self::Litecoin,
        Self::LitecoinTestnet,
        Self::LitecoinRegtest,
    ];

    /// The config name ("bitcoin", "litecoin-regtest", ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Bitcoin => "bitcoin",
            Self::BitcoinTestnet => "bitcoin-testnet",
            Self::BitcoinRegtest => "bitcoin-regtest",
            Self::Litecoin => "litecoin",
            Self::LitecoinTestnet => "litecoin-testnet",
            Self::LitecoinRegtest => "litecoin-regtest",
        }
    }

    /// The human-readable part of its segwit (bech32/bech32m) addresses.
    pub fn bech32_hrp(self) -> &'static str {
        match self {
            Self::Bitcoin => "bc",
            Self::BitcoinTestnet => "tb",
            Self::BitcoinRegtest => "bcrt",
            Self::Litecoin => "ltc",
            Self::LitecoinTestnet => "tltc",
            Self::LitecoinRegtest => "rltc",
        }
    }

    /// Version byte of its base58 pay-to-public-key-hash addresses.
    pub fn p2pkh_version(self) -> u8 {
        match self {
            Self::Bitcoin => 0x00,
            Self::Litecoin => 0x30,
            _ => 0x6f,
        }
    }

    /// Version byte of its base58 pay-to-script-hash addresses.
    pub fn p2sh_version(self) -> u8 {
        match self {
            Self::Bitcoin => 0x05,
            Self::Litecoin => 0x32,
            Self::BitcoinTestnet | Self::BitcoinRegtest => 0xc4,
            Self::LitecoinTestnet | Self::LitecoinRegtest => 0x3a,
        }
    }

    /// Whether its nodes relay BIP125 replacements by default. Litecoin Core
    /// does not (`-mempoolreplacement` defaults to 0), so a fee bump there
    /// reaches only nodes configured for it; Bitcoin Core does.
    pub fn relays_replacements(self) -> bool {
        matches!(
            self,
            Self::Bitcoin | Self::BitcoinTestnet | Self::BitcoinRegtest
        )
    }

    /// The `chain` field of the node's `getblockchaininfo` on this network,
    /// checked at start so that a node of another network is refused.
    pub fn node_chain(self) -> &'static str {
        match self {
            Self::Bitcoin | Self::Litecoin => "main",
            Self::BitcoinTestnet | Self::LitecoinTestnet => "test",
            Self::BitcoinRegtest | Self::LitecoinRegtest => "regtest",
        }
    }
}

impl fmt::Display for UtxoNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for UtxoNetwork {
    type Err = ChainError;

    fn from_str(s: &str) -> Result<Self, ChainError> {
        Self::ALL
            .into_iter()
            .find(|n| n.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|n| n.name()).collect();
                ChainError::InvalidConfig(format!(
                    "unknown UTXO network {s:?}; expected one of {}",
                    names.join(", ")
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for n in UtxoNetwork::ALL {
            assert_eq!(n.name().parse::<UtxoNetwork>().ok(), Some(n));
        }
        let err = "dogecoin"
            .parse::<UtxoNetwork>()
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("dogecoin") && e.contains("litecoin-regtest")));
    }
}
