//! Assets and exact amount conversion.
//!
//! Amounts are integers in the asset's base units (wei for ETH, the token's
//! smallest unit for ERC-20) held in a [`U256`]. Human text is a decimal string
//! with at most `decimals` fractional digits: `"1.5"` ETH is
//! `1_500_000_000_000_000_000` wei. Conversion is integer arithmetic only; a
//! value that cannot be represented exactly is refused, never rounded.

use alloy_primitives::{Address, U256};
use serde::{Deserialize, Serialize};

use crate::error::{ChainError, Result};

/// The largest number of decimals whose scale (`10^decimals`) fits a `U256`.
pub const MAX_DECIMALS: u8 = 77;

/// Longest human amount text accepted by [`parse_units`].
const MAX_AMOUNT_TEXT_LEN: usize = 100;

/// Longest symbol accepted in an asset configuration.
const MAX_SYMBOL_LEN: usize = 16;

/// An asset an EVM wallet can hold.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", try_from = "AssetConfig")]
pub enum Asset {
    /// The chain's native coin (ETH on Ethereum), moved by the transaction value.
    Native {
        /// Display symbol, e.g. `ETH`.
        symbol: String,
        /// Decimals of the base unit (18 for ETH).
        decimals: u8,
    },
    /// An ERC-20 token, moved by calling `transfer(address,uint256)` on its contract.
    Erc20 {
        /// The token contract.
        contract: Address,
        /// Display symbol, e.g. `USDC`.
        symbol: String,
        /// The token's `decimals()`.
        decimals: u8,
    },
}

/// The unvalidated serde form of [`Asset`].
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum AssetConfig {
    Native {
        symbol: String,
        decimals: u8,
    },
    Erc20 {
        contract: String,
        symbol: String,
        decimals: u8,
    },
}

impl TryFrom<AssetConfig> for Asset {
    type Error = ChainError;

    fn try_from(config: AssetConfig) -> Result<Self> {
        match config {
            AssetConfig::Native { symbol, decimals } => Self::native(&symbol, decimals),
            AssetConfig::Erc20 {
                contract,
                symbol,
                decimals,
            } => Self::erc20(
                crate::evm::address::parse_address(&contract)?,
                &symbol,
                decimals,
            ),
        }
    }
}

impl Asset {
    /// Native ETH: symbol `ETH`, 18 decimals.
    pub fn eth() -> Self {
        Self::Native {
            symbol: "ETH".to_owned(),
            decimals: 18,
        }
    }

    /// A native coin with its own symbol and decimals (an EVM L2 or sidechain).
    pub fn native(symbol: &str, decimals: u8) -> Result<Self> {
        check_symbol(symbol)?;
        check_decimals(decimals)?;
        Ok(Self::Native {
            symbol: symbol.to_owned(),
            decimals,
        })
    }

    /// An ERC-20 token; the contract must not be the zero address.
    pub fn erc20(contract: Address, symbol: &str, decimals: u8) -> Result<Self> {
        if contract.is_zero() {
            return Err(ChainError::InvalidAsset(
                "ERC-20 contract is the zero address".to_owned(),
            ));
        }
        check_symbol(symbol)?;
        check_decimals(decimals)?;
        Ok(Self::Erc20 {
            contract,
            symbol: symbol.to_owned(),
            decimals,
        })
    }

    /// The display symbol.
    pub fn symbol(&self) -> &str {
        match self {
            Self::Native { symbol, .. } | Self::Erc20 { symbol, .. } => symbol,
        }
    }

    /// Decimals of the base unit.
    pub fn decimals(&self) -> u8 {
        match self {
            Self::Native { decimals, .. } | Self::Erc20 { decimals, .. } => *decimals,
        }
    }

    /// The token contract, `None` for the native coin.
    pub fn token(&self) -> Option<Address> {
        match self {
            Self::Native { .. } => None,
            Self::Erc20 { contract, .. } => Some(*contract),
        }
    }

    /// Base units → human text, exact (see [`format_units`]).
    pub fn format_amount(&self, base_units: U256) -> Result<String> {
        format_units(base_units, self.decimals())
    }

    /// Human text → base units, exact (see [`parse_units`]).
    pub fn parse_amount(&self, text: &str) -> Result<U256> {
        parse_units(text, self.decimals())
    }
}

fn check_symbol(symbol: &str) -> Result<()> {
    if symbol.is_empty()
        || symbol.len() > MAX_SYMBOL_LEN
        || !symbol
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    {
        return Err(ChainError::InvalidAsset(format!(
            "symbol must be 1 to {MAX_SYMBOL_LEN} ASCII letters, digits, '.' or '-'"
        )));
    }
    Ok(())
}

fn check_decimals(decimals: u8) -> Result<()> {
    if decimals > MAX_DECIMALS {
        return Err(ChainError::InvalidAsset(format!(
            "decimals {decimals} above the maximum {MAX_DECIMALS}"
        )));
    }
    Ok(())
}

fn scale(decimals: u8) -> Result<U256> {
    check_decimals(decimals)?;
    Ok(U256::from(10u8).pow(U256::from(decimals)))
}

/// Base units → human decimal text, exact: no trailing fractional zeros, no
/// decimal point for whole amounts (`1500000000000000000` at 18 decimals is
/// `"1.5"`, `2 * 10^18` is `"2"`, `1` is `"0.000000000000000001"`).
pub fn format_units(base_units: U256, decimals: u8) -> Result<String> {
    let scale = scale(decimals)?;
    let whole = base_units / scale;
    let frac = base_units % scale;
    if frac.is_zero() {
        return Ok(whole.to_string());
    }
    let digits = frac.to_string();
    let zeros = usize::from(decimals).saturating_sub(digits.len());
    let frac_text = format!("{}{}", "0".repeat(zeros), digits);
    let frac_text = frac_text.trim_end_matches('0');
    Ok(format!("{whole}.{frac_text}"))
}

/// Human decimal text → base units, exact.
///
/// Grammar: `DIGITS [ "." DIGITS ]` with ASCII digits only, at most
/// `decimals` fractional digits, at most 100 characters. Refused: signs,
/// exponents, whitespace, separators, an empty part on either side of the
/// point, more fractional digits than the asset has (even zeros, which would
/// hide a misplaced point), and values above `U256::MAX`.
pub fn parse_units(text: &str, decimals: u8) -> Result<U256> {
    let scale = scale(decimals)?;
    if text.is_empty() {
        return Err(ChainError::InvalidAmount("empty".to_owned()));
    }
    if text.len() > MAX_AMOUNT_TEXT_LEN {
        return Err(ChainError::InvalidAmount(format!(
            "longer than {MAX_AMOUNT_TEXT_LEN} characters"
        )));
    }
    let (whole, frac) = match text.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (text, None),
    };
    let digits_only = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits_only(whole) {
        return Err(ChainError::InvalidAmount(
            "expected digits before the decimal point".to_owned(),
        ));
    }
    let overflow = || ChainError::InvalidAmount("too large".to_owned());
    let whole_value = U256::from_str_radix(whole, 10).map_err(|_| overflow())?;
    let mut value = whole_value.checked_mul(scale).ok_or_else(overflow)?;
    if let Some(frac) = frac {
        if !digits_only(frac) {
            return Err(ChainError::InvalidAmount(
                "expected digits after the decimal point".to_owned(),
            ));
        }
        if frac.len() > usize::from(decimals) {
            return Err(ChainError::InvalidAmount(format!(
                "more than {decimals} fractional digits"
            )));
        }
        let frac_value = U256::from_str_radix(frac, 10).map_err(|_| overflow())?;
        let pad = u8::try_from(usize::from(decimals) - frac.len()).map_err(|_| overflow())?;
        let frac_scaled = frac_value
            .checked_mul(U256::from(10u8).pow(U256::from(pad)))
            .ok_or_else(overflow)?;
        value = value.checked_add(frac_scaled).ok_or_else(overflow)?;
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_examples() {
        let wei = |s: &str| U256::from_str_radix(s, 10).unwrap();
        assert_eq!(format_units(wei("1500000000000000000"), 18).unwrap(), "1.5");
        assert_eq!(format_units(wei("2000000000000000000"), 18).unwrap(), "2");
        assert_eq!(
            format_units(U256::from(1), 18).unwrap(),
            "0.000000000000000001"
        );
        assert_eq!(format_units(U256::ZERO, 18).unwrap(), "0");
        assert_eq!(format_units(U256::from(123_456), 0).unwrap(), "123456");
        assert_eq!(format_units(U256::from(1_000_001), 6).unwrap(), "1.000001");
        assert!(format_units(U256::MAX, 77).unwrap().starts_with(
            "1.1579208923731619542357098500868790785326998466564056403945758400791312963993"
        ));
        assert!(format_units(U256::ONE, 78).is_err());
    }

    #[test]
    fn parse_examples() {
        assert_eq!(
            parse_units("1.5", 18).unwrap(),
            U256::from(1_500_000_000_000_000_000u128)
        );
        assert_eq!(parse_units("0.000001", 6).unwrap(), U256::from(1));
        assert_eq!(parse_units("42", 0).unwrap(), U256::from(42));
        assert_eq!(parse_units("007.10", 2).unwrap(), U256::from(710));
        for bad in [
            "",
            ".",
            "1.",
            ".5",
            "-1",
            "+1",
            "1e18",
            " 1",
            "1 ",
            "1,5",
            "1_000",
            "1.2.3",
            "0x10",
            "١",
            "1.0000001",
        ] {
            assert!(parse_units(bad, 6).is_err(), "{bad:?} accepted");
        }
        assert!(parse_units("1.0", 0).is_err());
        let max = U256::MAX.to_string();
        assert_eq!(parse_units(&max, 0).unwrap(), U256::MAX);
        assert!(parse_units(&format!("{max}0"), 0).is_err());
        assert!(parse_units(&max, 1).is_err());
        assert!(parse_units(&"9".repeat(101), 0).is_err());
    }

    #[test]
    fn round_trip_edges() {
        for decimals in [0u8, 1, 6, 8, 18, 36, 77] {
            for v in [U256::ZERO, U256::ONE, U256::from(10u8), U256::MAX] {
                let text = format_units(v, decimals).unwrap();
                assert_eq!(
                    parse_units(&text, decimals).unwrap(),
                    v,
                    "{text} @ {decimals}"
                );
            }
        }
    }

    #[test]
    fn asset_config_serde() {
        let a: Asset = serde_json::from_str(
            r#"{"kind":"erc20","contract":"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed","symbol":"USDC","decimals":6}"#,
        )
        .unwrap();
        assert_eq!(a.decimals(), 6);
        assert_eq!(a.symbol(), "USDC");
        assert!(a.token().is_some());
        assert_eq!(a.format_amount(U256::from(1_500_000)).unwrap(), "1.5");
        let bad_checksum = r#"{"kind":"erc20","contract":"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD","symbol":"USDC","decimals":6}"#;
        assert!(serde_json::from_str::<Asset>(bad_checksum).is_err());
        let zero = r#"{"kind":"erc20","contract":"0x0000000000000000000000000000000000000000","symbol":"X","decimals":6}"#;
        assert!(serde_json::from_str::<Asset>(zero).is_err());
        let eth: Asset =
            serde_json::from_str(r#"{"kind":"native","symbol":"ETH","decimals":18}"#).unwrap();
        assert_eq!(eth, Asset::eth());
        assert!(
            serde_json::from_str::<Asset>(r#"{"kind":"native","symbol":"ETH","decimals":99}"#)
                .is_err()
        );
        assert!(
            serde_json::from_str::<Asset>(r#"{"kind":"native","symbol":"","decimals":18}"#)
                .is_err()
        );
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Asset>(&json).unwrap(), a);
    }
}
