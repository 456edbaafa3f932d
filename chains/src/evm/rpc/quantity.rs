//! Ethereum JSON-RPC hex encodings: quantities (`0x1a`, no leading zeros) and
//! data (`0x` + even-length hex).

use alloy_primitives::{Address, B256, U256};

/// Longest quantity accepted: `0x` + 64 hex digits (a U256).
const MAX_QUANTITY_LEN: usize = 66;

/// Parses a hex quantity into a U256. Leading zeros are tolerated (some
/// nodes emit them); an empty body, a missing prefix or non-hex is not.
pub fn parse_u256(text: &str) -> Result<U256, String> {
    if text.len() > MAX_QUANTITY_LEN {
        return Err("quantity longer than 256 bits".to_owned());
    }
    let body = text
        .strip_prefix("0x")
        .ok_or_else(|| "quantity without 0x prefix".to_owned())?;
    if body.is_empty() || !body.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("quantity is not hex".to_owned());
    }
    U256::from_str_radix(body, 16).map_err(|e| format!("quantity: {e}"))
}

/// Parses a hex quantity that must fit a u64.
pub fn parse_u64(text: &str) -> Result<u64, String> {
    u64::try_from(parse_u256(text)?).map_err(|_| "quantity above u64".to_owned())
}

/// Parses a hex quantity that must fit a u128.
pub fn parse_u128(text: &str) -> Result<u128, String> {
    u128::try_from(parse_u256(text)?).map_err(|_| "quantity above u128".to_owned())
}

/// Formats a quantity (`0x0`, `0x1a`).
pub fn format_quantity(value: U256) -> String {
    format!("{value:#x}")
}

/// Parses `0x` + even-length hex.
pub fn parse_data(text: &str) -> Result<Vec<u8>, String> {
    let body = text
        .strip_prefix("0x")
        .ok_or_else(|| "data without 0x prefix".to_owned())?;
    if body.len() % 2 != 0 {
        return Err("data of odd length".to_owned());
    }
    (0..body.len())
        .step_by(2)
        .map(|i| {
            body.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| "data is not hex".to_owned())
        })
        .collect()
}

/// Formats `0x` + lowercase hex.
pub fn format_data(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 + 2 * bytes.len());
    out.push_str("0x");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Parses a 32-byte hash.
pub fn parse_b256(text: &str) -> Result<B256, String> {
    let bytes = parse_data(text)?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map(B256::from)
        .map_err(|_| "hash is not 32 bytes".to_owned())
}

/// Parses a 20-byte address (any case: node output is not checksummed).
pub fn parse_address(text: &str) -> Result<Address, String> {
    let bytes = parse_data(&text.to_ascii_lowercase())?;
    <[u8; 20]>::try_from(bytes.as_slice())
        .map(Address::from)
        .map_err(|_| "address is not 20 bytes".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_u64("0x0").unwrap(), 0);
        assert_eq!(parse_u64("0x1a").unwrap(), 26);
        assert_eq!(parse_u64("0x001a").unwrap(), 26);
        assert!(parse_u64("1a").is_err());
        assert!(parse_u64("0x").is_err());
        assert!(parse_u64("0xg").is_err());
        assert!(parse_u64("0x10000000000000000").is_err());
        assert_eq!(parse_u128("0x10000000000000000").unwrap(), 1u128 << 64);
        assert_eq!(format_quantity(U256::ZERO), "0x0");
        assert_eq!(format_quantity(U256::from(26)), "0x1a");
        assert!(parse_u256(&format!("0x{}", "f".repeat(65))).is_err());
    }

    #[test]
    fn data() {
        assert_eq!(parse_data("0x").unwrap(), Vec::<u8>::new());
        assert_eq!(parse_data("0x0aFF").unwrap(), vec![0x0a, 0xff]);
        assert!(parse_data("0x0").is_err());
        assert!(parse_data("0xzz").is_err());
        assert!(parse_data("0xé0").is_err());
        assert_eq!(format_data(&[0x0a, 0xff]), "0x0aff");
        assert!(parse_b256("0x00").is_err());
        assert!(parse_address(&format!("0x{}", "Ab".repeat(20))).is_ok());
    }
}
