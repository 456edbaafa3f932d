//! ERC-20 calldata: `transfer(address,uint256)` and `balanceOf(address)`.
//!
//! `transfer` calldata is exactly 68 bytes: selector `a9059cbb`, the recipient
//! left-padded to 32 bytes with zeros, the amount as a 32-byte big-endian word.
//! Decoding is strict: any other length or dirty padding is refused, and an
//! unknown selector is named (well-known dangerous ones by their signature:
//! `approve`, `transferFrom`, ...).

use alloy_primitives::{Address, Bytes, U256};

use crate::error::{ChainError, Result};

/// `keccak256("transfer(address,uint256)")[..4]`.
pub const TRANSFER_SELECTOR: [u8; 4] = [0xa9, 0x05, 0x9c, 0xbb];
/// `keccak256("balanceOf(address)")[..4]`.
pub const BALANCE_OF_SELECTOR: [u8; 4] = [0x70, 0xa0, 0x82, 0x31];
/// Length of `transfer(address,uint256)` calldata.
pub const TRANSFER_CALLDATA_LEN: usize = 4 + 32 + 32;

/// Selectors that are recognised (to name them in errors) but never accepted.
pub(crate) const KNOWN_SELECTORS: [([u8; 4], &str); 8] = [
    ([0x09, 0x5e, 0xa7, 0xb3], "approve(address,uint256)"),
    (
        [0x23, 0xb8, 0x72, 0xdd],
        "transferFrom(address,address,uint256)",
    ),
    (
        [0x39, 0x50, 0x93, 0x51],
        "increaseAllowance(address,uint256)",
    ),
    (
        [0xd5, 0x05, 0xac, 0xcf],
        "permit(address,address,uint256,uint256,uint8,bytes32,bytes32)",
    ),
    ([0xa2, 0x2c, 0xb4, 0x65], "setApprovalForAll(address,bool)"),
    (
        [0x42, 0x84, 0x2e, 0x0e],
        "safeTransferFrom(address,address,uint256)",
    ),
    ([0x70, 0xa0, 0x82, 0x31], "balanceOf(address)"),
    ([0x18, 0x16, 0x0d, 0xdd], "totalSupply()"),
];

/// `transfer(recipient, amount)` calldata.
pub fn transfer_calldata(recipient: Address, amount: U256) -> Bytes {
    let mut data = Vec::with_capacity(TRANSFER_CALLDATA_LEN);
    data.extend_from_slice(&TRANSFER_SELECTOR);
    data.extend_from_slice(&address_word(recipient));
    data.extend_from_slice(&amount.to_be_bytes::<32>());
    Bytes::from(data)
}

/// `balanceOf(owner)` calldata.
pub fn balance_of_calldata(owner: Address) -> Bytes {
    let mut data = Vec::with_capacity(4 + 32);
    data.extend_from_slice(&BALANCE_OF_SELECTOR);
    data.extend_from_slice(&address_word(owner));
    Bytes::from(data)
}

fn address_word(address: Address) -> [u8; 32] {
    let mut word = [0u8; 32];
    word[12..].copy_from_slice(address.as_slice());
    word
}

/// Parses `transfer(address,uint256)` calldata into `(recipient, amount)`.
pub fn decode_transfer_calldata(data: &[u8]) -> Result<(Address, U256)> {
    let Some(selector) = data.first_chunk::<4>() else {
        return Err(ChainError::UnsupportedCalldata(format!(
            "{} bytes, shorter than a function selector",
            data.len()
        )));
    };
    if *selector != TRANSFER_SELECTOR {
        return Err(ChainError::UnsupportedCalldata(describe_selector(
            *selector,
            data.len(),
        )));
    }
    if data.len() != TRANSFER_CALLDATA_LEN {
        return Err(ChainError::UnsupportedCalldata(format!(
            "transfer(address,uint256) calldata of {} bytes, expected {TRANSFER_CALLDATA_LEN}",
            data.len()
        )));
    }
    let (padding, rest) = data[4..].split_at(12);
    if padding.iter().any(|&b| b != 0) {
        return Err(ChainError::UnsupportedCalldata(
            "transfer(address,uint256) recipient word has non-zero padding".to_owned(),
        ));
    }
    let (recipient, amount) = rest.split_at(20);
    Ok((Address::from_slice(recipient), U256::from_be_slice(amount)))
}

fn describe_selector(selector: [u8; 4], len: usize) -> String {
    let hex: String = selector.iter().map(|b| format!("{b:02x}")).collect();
    match KNOWN_SELECTORS.iter().find(|(s, _)| *s == selector) {
        Some((_, name)) => format!(
            "{name} (selector 0x{hex}, {len} bytes): only transfer(address,uint256) is signed"
        ),
        None => format!(
            "unknown function selector 0x{hex} ({len} bytes): only transfer(address,uint256) is signed"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::keccak256;

    #[test]
    fn selectors_match_their_signatures() {
        assert_eq!(
            keccak256("transfer(address,uint256)")[..4],
            TRANSFER_SELECTOR
        );
        assert_eq!(keccak256("balanceOf(address)")[..4], BALANCE_OF_SELECTOR);
        for (selector, name) in KNOWN_SELECTORS {
            assert_eq!(keccak256(name)[..4], selector, "{name}");
        }
    }

    #[test]
    fn transfer_round_trip_and_strictness() {
        let to = Address::repeat_byte(0xab);
        let amount = U256::from(123_456_789u64);
        let data = transfer_calldata(to, amount);
        assert_eq!(data.len(), TRANSFER_CALLDATA_LEN);
        assert_eq!(decode_transfer_calldata(&data).unwrap(), (to, amount));

        let mut dirty = data.to_vec();
        dirty[4] = 1;
        assert!(decode_transfer_calldata(&dirty).is_err());
        let mut long = data.to_vec();
        long.push(0);
        assert!(decode_transfer_calldata(&long).is_err());
        assert!(decode_transfer_calldata(&data[..67]).is_err());
        assert!(decode_transfer_calldata(&data[..3]).is_err());

        let mut approve = data.to_vec();
        approve[..4].copy_from_slice(&[0x09, 0x5e, 0xa7, 0xb3]);
        let err = decode_transfer_calldata(&approve).unwrap_err().to_string();
        assert!(err.contains("approve(address,uint256)"), "{err}");
        let mut unknown = data.to_vec();
        unknown[..4].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        let err = decode_transfer_calldata(&unknown).unwrap_err().to_string();
        assert!(err.contains("0xdeadbeef"), "{err}");
    }
}
