//! EVM transactions as a signer receives them: arbitrary bytes through the
//! strict unsigned and signed decoders, the transfer decoder, and the address
//! and amount parsers. No panic; anything accepted is canonical (re-encodes
//! to the same bytes), amounts round-trip exactly.
#![no_main]

use custos_chains::evm::address::parse_address;
use custos_chains::evm::asset::{format_units, parse_units};
use custos_chains::evm::signature::decode_signed;
use custos_chains::evm::tx::{decode_transfer, decode_unsigned, encode_unsigned, signing_digest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(unsigned) = decode_unsigned(data) {
        assert_eq!(encode_unsigned(&unsigned), data);
        let _ = signing_digest(&unsigned);
        let _ = decode_transfer(&unsigned);
    }
    if let Ok((unsigned, _sender, _hash)) = decode_signed(data) {
        let _ = decode_transfer(&unsigned);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(address) = parse_address(text) {
            assert_eq!(
                address.to_checksum(None).to_lowercase(),
                text.to_lowercase()
            );
        }
        for decimals in [0u8, 6, 18] {
            if let Ok(value) = parse_units(text, decimals) {
                let back = format_units(value, decimals);
                assert_eq!(
                    back.ok().and_then(|b| parse_units(&b, decimals).ok()),
                    Some(value)
                );
            }
        }
    }
});
