//! Chains and destination addresses.
//!
//! Every chain name maps to an address family so that addresses can be checked
//! where they are written (policy address book) and where they arrive (withdrawals):
//! EVM addresses must carry a valid EIP-55 checksum when mixed-case; Bitcoin
//! addresses must decode (Base58Check or bech32/bech32m) for the chain's network.

use sha3::{Digest, Keccak256};

/// Bitcoin networks, which decide the address prefixes accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitcoinNetwork {
    /// `bitcoin`: `1…`, `3…`, `bc1…`.
    Mainnet,
    /// `bitcoin-testnet`, `bitcoin-signet`: `m…`/`n…`, `2…`, `tb1…`.
    Testnet,
    /// `bitcoin-regtest`: as testnet but `bcrt1…`.
    Regtest,
}

/// The address family of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainKind {
    /// Ethereum and EVM-compatible chains.
    Evm,
    /// Bitcoin on a given network.
    Bitcoin(BitcoinNetwork),
}

const EVM_CHAINS: &[&str] = &[
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

/// Maps a chain name to its address family. EVM chains not in the built-in list can be
/// named `evm:<chain id>` (for example `evm:31337`).
pub fn chain_kind(chain: &str) -> Option<ChainKind> {
    match chain {
        "bitcoin" => Some(ChainKind::Bitcoin(BitcoinNetwork::Mainnet)),
        "bitcoin-testnet" | "bitcoin-signet" => Some(ChainKind::Bitcoin(BitcoinNetwork::Testnet)),
        "bitcoin-regtest" => Some(ChainKind::Bitcoin(BitcoinNetwork::Regtest)),
        c if EVM_CHAINS.contains(&c) => Some(ChainKind::Evm),
        c => c
            .strip_prefix("evm:")
            .filter(|id| !id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|id| id.parse::<u64>().ok())
            .map(|_| ChainKind::Evm),
    }
}

/// The built-in symbol of a chain's native asset (the asset its fees are paid
/// in), as the wallet service names it: `BTC` on Bitcoin networks, `ETH` on
/// Ethereum, its testnets, anvil and the Ethereum L2s, `POL`, `BNB`, `AVAX` on
/// Polygon, BSC and Avalanche. `None` for `evm:<id>` chains and unknown names:
/// a policy names those in its `native_assets` table.
pub fn native_asset(chain: &str) -> Option<&'static str> {
    match chain {
        "bitcoin" | "bitcoin-testnet" | "bitcoin-signet" | "bitcoin-regtest" => Some("BTC"),
        "ethereum" | "sepolia" | "holesky" | "anvil" | "arbitrum" | "optimism" | "base" => {
            Some("ETH")
        }
        "polygon" => Some("POL"),
        "bsc" => Some("BNB"),
        "avalanche" => Some("AVAX"),
        _ => None,
    }
}

/// How an address was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedAddress {
    /// Canonical form: EIP-55 for EVM, lowercase for bech32, unchanged for Base58.
    pub canonical: String,
    /// True when an EVM address was written without a checksum (all one case).
    pub unchecksummed: bool,
}

/// Checks `address` for `chain` and returns its canonical form, or why it is refused.
pub fn check_address(chain: &str, address: &str) -> Result<CheckedAddress, String> {
    match chain_kind(chain) {
        None => Err(format!(
            "unknown chain {chain:?} (known: bitcoin, bitcoin-testnet, bitcoin-signet, bitcoin-regtest, {}, or evm:<chain id>)",
            EVM_CHAINS.join(", ")
        )),
        Some(ChainKind::Evm) => check_evm(address),
        Some(ChainKind::Bitcoin(net)) => check_bitcoin(net, address),
    }
}

/// EIP-55 checksum form of 40 lowercase hex digits.
fn eip55(lower_hex: &str) -> String {
    let hash = Keccak256::digest(lower_hex.as_bytes());
    let mut out = String::with_capacity(42);
    out.push_str("0x");
    for (i, c) in lower_hex.chars().enumerate() {
        let nibble = (hash[i / 2] >> (if i % 2 == 0 { 4 } else { 0 })) & 0x0f;
        if c.is_ascii_alphabetic() && nibble >= 8 {
            out.push(c.to_ascii_uppercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn check_evm(address: &str) -> Result<CheckedAddress, String> {
    let hex_part = address
        .strip_prefix("0x")
        .ok_or_else(|| format!("EVM address {address:?} must start with 0x"))?;
    if hex_part.len() != 40 || !hex_part.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "EVM address {address:?} must be 0x followed by 40 hex digits"
        ));
    }
    let lower = hex_part.to_ascii_lowercase();
    let canonical = eip55(&lower);
    let one_case = hex_part == lower || hex_part == hex_part.to_ascii_uppercase();
    if !one_case && canonical != address {
        return Err(format!(
            "EVM address {address:?} has a bad EIP-55 checksum (a typo?); checksummed form of these digits is {canonical}"
        ));
    }
    Ok(CheckedAddress {
        canonical,
        unchecksummed: one_case,
    })
}

fn check_bitcoin(net: BitcoinNetwork, address: &str) -> Result<CheckedAddress, String> {
    let lower = address.to_ascii_lowercase();
    let segwit_prefix = match net {
        BitcoinNetwork::Mainnet => "bc1",
        BitcoinNetwork::Testnet => "tb1",
        BitcoinNetwork::Regtest => "bcrt1",
    };
    if lower.starts_with("bc1") || lower.starts_with("tb1") || lower.starts_with("bcrt1") {
        if !lower.starts_with(segwit_prefix) {
            return Err(format!(
                "Bitcoin address {address:?} is for another network (expected {segwit_prefix}…)"
            ));
        }
        let (hrp, _version, _program) = bech32::segwit::decode(address)
            .map_err(|e| format!("Bitcoin segwit address {address:?} is invalid: {e}"))?;
        let ok = match net {
            BitcoinNetwork::Mainnet => hrp.is_valid_on_mainnet(),
            BitcoinNetwork::Testnet => hrp.is_valid_on_testnet(),
            BitcoinNetwork::Regtest => hrp.is_valid_on_regtest(),
        };
        if !ok {
            return Err(format!(
                "Bitcoin address {address:?} is for another network"
            ));
        }
        return Ok(CheckedAddress {
            canonical: lower,
            unchecksummed: false,
        });
    }
    let bytes = bs58::decode(address)
        .with_check(None)
        .into_vec()
        .map_err(|e| format!("Bitcoin address {address:?} is invalid (Base58Check): {e}"))?;
    if bytes.len() != 21 {
        return Err(format!(
            "Bitcoin address {address:?} has a payload of {} bytes, expected 21",
            bytes.len()
        ));
    }
    let allowed: &[u8] = match net {
        BitcoinNetwork::Mainnet => &[0x00, 0x05],
        BitcoinNetwork::Testnet | BitcoinNetwork::Regtest => &[0x6f, 0xc4],
    };
    if !allowed.contains(&bytes[0]) {
        return Err(format!(
            "Bitcoin address {address:?} is for another network (version byte {:#04x})",
            bytes[0]
        ));
    }
    Ok(CheckedAddress {
        canonical: address.to_string(),
        unchecksummed: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eip55_reference_vectors() {
        // Vectors from EIP-55 itself.
        for a in [
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
            "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
            "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
        ] {
            let c = check_address("ethereum", a).unwrap();
            assert_eq!(c.canonical, a);
            assert!(!c.unchecksummed);
        }
        let lower =
            check_address("ethereum", "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed").unwrap();
        assert_eq!(
            lower.canonical,
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
        );
        assert!(lower.unchecksummed);
        // One letter's case flipped: a checksum error, not a silent acceptance.
        assert!(check_address("ethereum", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD").is_err());
        assert!(check_address("ethereum", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeA").is_err());
        assert!(check_address("ethereum", "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").is_err());
        assert!(check_address("evm:31337", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").is_ok());
        assert!(check_address("evm:", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").is_err());
    }

    #[test]
    fn bitcoin_addresses_per_network() {
        // BIP-173 / BIP-350 vectors and well-known Base58 addresses.
        let main_ok = [
            "BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4",
            "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0",
            "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa",
            "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy",
        ];
        for a in main_ok {
            assert!(check_address("bitcoin", a).is_ok(), "{a}");
            assert!(
                check_address("bitcoin-testnet", a).is_err(),
                "{a} must not pass on testnet"
            );
        }
        assert!(
            check_address(
                "bitcoin-testnet",
                "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7"
            )
            .is_ok()
        );
        assert!(check_address("bitcoin-testnet", "mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn").is_ok());
        assert!(
            check_address(
                "bitcoin-regtest",
                "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
            )
            .is_ok()
        );
        // Bad checksum, v0 with bech32m, mixed case.
        assert!(check_address("bitcoin", "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5").is_err());
        assert!(check_address("bitcoin", "bc1zw508d6qejxtdg4y5r3zarvaryvaxxpcs").is_ok());
        assert!(check_address("bitcoin", "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNb").is_err());
        assert!(check_address("bitcoin", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").is_err());
        assert!(check_address("dogecoin", "D1").is_err());
    }
}
