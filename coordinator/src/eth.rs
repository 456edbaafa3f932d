//! Ethereum facts about a secp256k1 key: address (EIP-55) and recovery id.

use sha3::{Digest, Keccak256};

/// EIP-55 checksummed address of a SEC1 public key (compressed or not).
pub fn address(public_key: &[u8]) -> Option<String> {
    let pk = k256::PublicKey::from_sec1_bytes(public_key).ok()?;
    let uncompressed = k256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&pk, false);
    let hash = Keccak256::digest(&uncompressed.as_bytes()[1..]);
    Some(checksum(&hex::encode(&hash[12..])))
}

/// Applies EIP-55 mixed-case checksumming to 40 lowercase hex characters.
pub fn checksum(lower_hex: &str) -> String {
    let hash = hex::encode(Keccak256::digest(lower_hex.as_bytes()));
    let mut out = String::from("0x");
    for (c, h) in lower_hex.chars().zip(hash.chars()) {
        if c.is_ascii_alphabetic() && h.to_digit(16).unwrap_or(0) >= 8 {
            out.push(c.to_ascii_uppercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The recovery id (0/1) that recovers `public_key` from the signature, if any.
pub fn recovery_id(public_key: &[u8], digest: &[u8; 32], r: &[u8; 32], s: &[u8; 32]) -> Option<u8> {
    let mut rs = [0u8; 64];
    rs[..32].copy_from_slice(r);
    rs[32..].copy_from_slice(s);
    let sig = k256::ecdsa::Signature::from_slice(&rs).ok()?;
    let expected = k256::ecdsa::VerifyingKey::from_sec1_bytes(public_key).ok()?;
    (0u8..2).find(|v| {
        k256::ecdsa::RecoveryId::from_byte(*v)
            .and_then(|id| k256::ecdsa::VerifyingKey::recover_from_prehash(digest, &sig, id).ok())
            .is_some_and(|k| k == expected)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eip55_vectors() {
        // From EIP-55.
        for a in [
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        ] {
            assert_eq!(checksum(&a[2..].to_ascii_lowercase()), a);
        }
    }

    #[test]
    fn address_of_known_key() {
        // Private key 1 -> generator point -> well-known address.
        let g = hex::decode("0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798")
            .unwrap();
        assert_eq!(
            address(&g).unwrap(),
            "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"
        );
    }
}
