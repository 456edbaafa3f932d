//! Chain names, their families, native assets and address checking: the
//! one place that knows which chain speaks which format.
//!
//! A chain's name decides its family. EVM: the built-in names and
//! `evm:<chain id>` for any other EVM chain. UTXO: the networks of
//! [`UtxoNetwork`] (`bitcoin`, `bitcoin-testnet`, `bitcoin-signet`,
//! `bitcoin-regtest`, `litecoin`, `litecoin-testnet`, `litecoin-regtest`).
//! Policies, the coordinator and the signers all check addresses through
//! [`check_address`], so an address accepted in an address book is the one a
//! withdrawal pays and a signer compares.

use std::fmt;

use crate::error::{ChainError, Result};
use crate::evm::address::{parse_address as parse_evm, to_checksum};
use crate::utxo::address::parse_address as parse_utxo;
use crate::utxo::network::UtxoNetwork;

/// How a chain's addresses, transactions and digests work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChainFamily {
    /// Ethereum and EVM-compatible chains: accounts, EIP-1559 transactions.
    Evm,
    /// Bitcoin-format chains: coins, segwit transactions, on one network.
    Utxo(UtxoNetwork),
    /// The chain-neutral `message` chain: the key signs an approved message
    /// ([`crate::message`]); nothing is broadcast.
    Message,
}

impl ChainFamily {
    /// The largest amount, in base units, one transaction output or fee of
    /// this family can carry (EVM values are 256-bit, so every `u128` fits;
    /// a Bitcoin-format output value is a `u64`).
    pub fn max_base_units(self) -> u128 {
        match self {
            Self::Evm => u128::MAX,
            Self::Utxo(_) => u128::from(u64::MAX),
            Self::Message => u128::MAX,
        }
    }
}

impl fmt::Display for ChainFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Evm => f.write_str("evm"),
            Self::Utxo(n) => write!(f, "utxo ({n})"),
            Self::Message => f.write_str("message"),
        }
    }
}

/// EVM chains known by name.
pub const EVM_CHAINS: &[&str] = &[
    "ethereum",
    "sepolia",
    "holesky",
    "polygon",
    "arbitrum",
    "optimism",
    "base",
    "bsc",
    "avalanche",
    "anvil",
];

/// The family of a chain name, `None` for a name no family knows.
pub fn family_of(chain: &str) -> Option<ChainFamily> {
    if chain == crate::message::MESSAGE_CHAIN {
        return Some(ChainFamily::Message);
    }
    if chain == "bitcoin-signet" {
        return Some(ChainFamily::Utxo(UtxoNetwork::BitcoinTestnet));
    }
    if let Ok(n) = chain.parse::<UtxoNetwork>() {
        return Some(ChainFamily::Utxo(n));
    }
    if EVM_CHAINS.contains(&chain) {
        return Some(ChainFamily::Evm);
    }
    chain
        .strip_prefix("evm:")
        .filter(|id| !id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|id| id.parse::<u64>().ok())
        .map(|_| ChainFamily::Evm)
}

/// The names [`family_of`] knows, for error messages.
pub fn known_chains() -> String {
    let utxo: Vec<&str> = UtxoNetwork::ALL.iter().map(|n| n.name()).collect();
    format!(
        "{}, bitcoin-signet, {}, {}, or evm:<chain id>",
        utxo.join(", "),
        crate::message::MESSAGE_CHAIN,
        EVM_CHAINS.join(", ")
    )
}

/// The built-in symbol of a chain's native asset (the asset its fees are
/// paid in): `BTC` on Bitcoin networks, `LTC` on Litecoin, `ETH` on
/// Ethereum, its testnets, anvil and the Ethereum L2s, `POL`, `BNB`, `AVAX`
/// on Polygon, BSC and Avalanche. `None` for `evm:<id>` chains and unknown
/// names: a policy names those in its `native_assets` table.
pub fn native_asset(chain: &str) -> Option<&'static str> {
    match family_of(chain)? {
        ChainFamily::Utxo(
            UtxoNetwork::Bitcoin | UtxoNetwork::BitcoinTestnet | UtxoNetwork::BitcoinRegtest,
        ) => Some("BTC"),
        ChainFamily::Utxo(_) => Some("LTC"),
        ChainFamily::Message => Some(crate::message::MESSAGE_ASSET),
        ChainFamily::Evm => match chain {
            "ethereum" | "sepolia" | "holesky" | "anvil" | "arbitrum" | "optimism" | "base" => {
                Some("ETH")
            }
            "polygon" => Some("POL"),
            "bsc" => Some("BNB"),
            "avalanche" => Some("AVAX"),
            _ => None,
        },
    }
}

/// How an address was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedAddress {
    /// Canonical form: EIP-55 for EVM, lowercase for bech32, unchanged for base58.
    pub canonical: String,
    /// True when an EVM address was written without a checksum (all one case).
    pub unchecksummed: bool,
}

/// Checks `address` for `chain` and returns its canonical form.
pub fn check_address(chain: &str, address: &str) -> Result<CheckedAddress> {
    match family_of(chain) {
        None => Err(ChainError::InvalidConfig(format!(
            "unknown chain {chain:?} (known: {})",
            known_chains()
        ))),
        Some(ChainFamily::Evm) => {
            let parsed = parse_evm(address).map_err(|e| match e {
                ChainError::InvalidAddress(why) if why.contains("EIP-55") => {
                    // The digits are probably right and one letter's case is
                    // off: show what the checksummed form would be.
                    let fixed = parse_evm(&address.to_ascii_lowercase())
                        .map(|a| to_checksum(&a))
                        .unwrap_or_default();
                    ChainError::InvalidAddress(format!(
                        "EVM address {address:?} has a bad EIP-55 checksum (a typo?); checksummed form of these digits is {fixed}"
                    ))
                }
                ChainError::InvalidAddress(why) => {
                    ChainError::InvalidAddress(format!("EVM address {address:?}: {why}"))
                }
                other => other,
            })?;
            let canonical = to_checksum(&parsed);
            Ok(CheckedAddress {
                unchecksummed: canonical != address,
                canonical,
            })
        }
        Some(ChainFamily::Utxo(network)) => Ok(CheckedAddress {
            canonical: parse_utxo(network, address)?.text,
            unchecksummed: false,
        }),
        Some(ChainFamily::Message) => crate::message::check_message_address(address),
    }
}

/// The address of the wallet whose key is `sec1` (a SEC1 secp256k1 public
/// key) on `chain`: EIP-55 on EVM chains, P2WPKH (bech32) on UTXO chains.
pub fn wallet_address(chain: &str, sec1: &[u8]) -> Result<String> {
    match family_of(chain) {
        None => Err(ChainError::InvalidConfig(format!(
            "unknown chain {chain:?} (known: {})",
            known_chains()
        ))),
        Some(ChainFamily::Evm) => {
            crate::evm::address::address_from_sec1(sec1).map(|a| to_checksum(&a))
        }
        Some(ChainFamily::Utxo(network)) => {
            crate::utxo::address::wallet_address(network, sec1).map(|a| a.text)
        }
        // A message wallet's "address" is its public key, hex.
        Some(ChainFamily::Message) => Ok(crate::message::canonical(sec1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_native_assets() {
        assert_eq!(family_of("anvil"), Some(ChainFamily::Evm));
        assert_eq!(family_of("evm:31337"), Some(ChainFamily::Evm));
        assert_eq!(family_of("evm:"), None);
        assert_eq!(family_of("evm:x1"), None);
        assert_eq!(
            family_of("litecoin-regtest"),
            Some(ChainFamily::Utxo(UtxoNetwork::LitecoinRegtest))
        );
        assert_eq!(
            family_of("bitcoin-signet"),
            Some(ChainFamily::Utxo(UtxoNetwork::BitcoinTestnet))
        );
        assert_eq!(family_of("dogecoin"), None);
        assert_eq!(family_of("message"), Some(ChainFamily::Message));
        assert_eq!(native_asset("message"), Some("MSG"));
        assert_eq!(
            check_address("message", "C0FFEE").unwrap().canonical,
            "c0ffee"
        );
        assert_eq!(native_asset("litecoin"), Some("LTC"));
        assert_eq!(native_asset("bitcoin-regtest"), Some("BTC"));
        assert_eq!(native_asset("bsc"), Some("BNB"));
        assert_eq!(native_asset("evm:5"), None);
    }

    #[test]
    fn addresses_per_family() {
        let a = check_address("ethereum", "0x52908400098527886e0f7030069857d2e4169ee7").unwrap();
        assert_eq!(a.canonical, "0x52908400098527886E0F7030069857D2E4169EE7");
        assert!(a.unchecksummed);
        let e = check_address("ethereum", "0x52908400098527886E0F7030069857D2E4169Ee7")
            .unwrap_err()
            .to_string();
        assert!(e.contains("EIP-55"), "{e}");
        let b = check_address("bitcoin", "BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4").unwrap();
        assert_eq!(b.canonical, "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4");
        assert!(check_address("litecoin", "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4").is_err());
        // A wallet's own address in its chain's format, accepted by the check.
        let key = hex::decode("0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798")
            .unwrap();
        let evm = wallet_address("anvil", &key).unwrap();
        assert_eq!(evm, "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf");
        let ltc = wallet_address("litecoin-regtest", &key).unwrap();
        assert!(ltc.starts_with("rltc1q"), "{ltc}");
        assert_eq!(
            check_address("litecoin-regtest", &ltc).unwrap().canonical,
            ltc
        );
        assert!(wallet_address("dogecoin", &key).is_err());
        let e = check_address("dogecoin", "D...").unwrap_err().to_string();
        assert!(
            e.contains("litecoin-regtest") && e.contains("evm:<chain id>"),
            "{e}"
        );
    }
}
