//! EVM addresses: derivation from a secp256k1 public key and strict parsing.
//!
//! An address is the last 20 bytes of `keccak256(X || Y)` of the uncompressed
//! public key. Its text form is `0x` followed by 40 hex digits; the canonical
//! form is the EIP-55 mixed-case checksum ([`to_checksum`]).
//!
//! [`parse_address`] accepts an all-lowercase or all-uppercase hex body (no
//! checksum to check) and a mixed-case body only when its EIP-55 checksum is
//! right: a typo in a checksummed address is refused, never silently accepted.

use alloy_primitives::Address;
use k256::elliptic_curve::sec1::ToEncodedPoint;

use crate::error::{ChainError, Result};

/// Length of `0x` + 40 hex digits.
const ADDRESS_TEXT_LEN: usize = 42;

/// The address of a secp256k1 public key given as SEC1 bytes, compressed
/// (33 bytes, `02`/`03` prefix) or uncompressed (65 bytes, `04` prefix).
///
/// Fails on any other length, an unknown prefix, or a point not on the curve
/// (including the identity).
pub fn address_from_sec1(public_key: &[u8]) -> Result<Address> {
    match public_key.len() {
        33 | 65 => {}
        _ => return Err(ChainError::InvalidPublicKey("expected 33 or 65 SEC1 bytes")),
    }
    let key = k256::PublicKey::from_sec1_bytes(public_key)
        .map_err(|_| ChainError::InvalidPublicKey("not a point on secp256k1"))?;
    let uncompressed = key.to_encoded_point(false);
    let xy = uncompressed
        .as_bytes()
        .get(1..)
        .filter(|xy| xy.len() == 64)
        .ok_or(ChainError::InvalidPublicKey("unexpected point encoding"))?;
    Ok(Address::from_raw_public_key(xy))
}

/// The address of a k256 verifying key.
pub fn address_from_verifying_key(key: &k256::ecdsa::VerifyingKey) -> Address {
    Address::from_public_key(key)
}

/// The EIP-55 checksummed text form (`0x` + 40 mixed-case hex digits).
pub fn to_checksum(address: &Address) -> String {
    address.to_checksum(None)
}

/// Parses `0x` + 40 hex digits. All-lowercase and all-uppercase bodies are
/// accepted as is; a mixed-case body must carry a correct EIP-55 checksum.
/// No whitespace, no missing prefix, no other length.
pub fn parse_address(text: &str) -> Result<Address> {
    if text.len() != ADDRESS_TEXT_LEN {
        return Err(ChainError::InvalidAddress(format!(
            "expected 0x followed by 40 hex digits, got {} characters",
            text.chars().count()
        )));
    }
    let body = text
        .strip_prefix("0x")
        .ok_or_else(|| ChainError::InvalidAddress("missing 0x prefix".to_owned()))?;
    if !body.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ChainError::InvalidAddress(
            "contains a character that is not a hex digit".to_owned(),
        ));
    }
    let mut bytes = [0u8; 20];
    for (i, out) in bytes.iter_mut().enumerate() {
        let pair = body
            .get(2 * i..2 * i + 2)
            .ok_or_else(|| ChainError::InvalidAddress("truncated".to_owned()))?;
        *out = u8::from_str_radix(pair, 16)
            .map_err(|_| ChainError::InvalidAddress("not hex".to_owned()))?;
    }
    let address = Address::from(bytes);
    let has_lower = body.bytes().any(|b| b.is_ascii_lowercase());
    let has_upper = body.bytes().any(|b| b.is_ascii_uppercase());
    if has_lower && has_upper && to_checksum(&address) != text {
        return Err(ChainError::InvalidAddress(
            "mixed-case address with a wrong EIP-55 checksum".to_owned(),
        ));
    }
    Ok(address)
}

/// Whether `text` is exactly the EIP-55 checksummed form of an address.
pub fn is_checksummed(text: &str) -> bool {
    parse_address(text).is_ok_and(|a| to_checksum(&a) == text)
}

#[cfg(test)]
mod tests {
    use super::*;

    // EIP-55's own examples.
    const EIP55: [&str; 4] = [
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
    ];

    #[test]
    fn generator_point_has_the_well_known_address() {
        // Private key 1: its public key is the generator point.
        let g = hex::decode("0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798")
            .unwrap();
        assert_eq!(
            to_checksum(&address_from_sec1(&g).unwrap()),
            "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"
        );
    }

    #[test]
    fn eip55_vectors_round_trip() {
        for text in EIP55 {
            let a = parse_address(text).unwrap();
            assert_eq!(to_checksum(&a), text);
            assert!(is_checksummed(text));
            assert_eq!(parse_address(&text.to_lowercase()).unwrap(), a);
            let upper = format!("0x{}", text[2..].to_uppercase());
            assert_eq!(parse_address(&upper).unwrap(), a);
        }
    }

    #[test]
    fn bad_checksum_and_shapes_rejected() {
        // one letter's case flipped
        assert!(parse_address("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD").is_err());
        assert!(parse_address("5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").is_err());
        assert!(parse_address("0X5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").is_err());
        assert!(parse_address("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAe").is_err());
        assert!(parse_address("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAedd").is_err());
        assert!(parse_address("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeg").is_err());
        assert!(parse_address(" 0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAe").is_err());
        assert!(parse_address("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAé").is_err());
        assert!(parse_address("").is_err());
    }

    #[test]
    fn address_from_known_key() {
        // anvil/hardhat dev account 0
        let sk = k256::ecdsa::SigningKey::from_slice(&hex_literal(
            "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
        ))
        .unwrap();
        let vk = sk.verifying_key();
        let expected = parse_address("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266").unwrap();
        let uncompressed = vk.to_encoded_point(false);
        let compressed = vk.to_encoded_point(true);
        assert_eq!(
            address_from_sec1(uncompressed.as_bytes()).unwrap(),
            expected
        );
        assert_eq!(address_from_sec1(compressed.as_bytes()).unwrap(), expected);
        assert_eq!(address_from_verifying_key(vk), expected);
        assert_eq!(
            to_checksum(&expected),
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
        );
    }

    #[test]
    fn bad_public_keys_rejected() {
        assert!(address_from_sec1(&[]).is_err());
        assert!(address_from_sec1(&[0x04; 65]).is_err());
        let mut not_on_curve = [0u8; 65];
        not_on_curve[0] = 0x04;
        assert!(address_from_sec1(&not_on_curve).is_err());
        assert!(address_from_sec1(&[0x05; 33]).is_err());
        assert!(address_from_sec1(&[0x02; 64]).is_err());
    }

    fn hex_literal(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
