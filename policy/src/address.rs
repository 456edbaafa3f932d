//! Chains and destination addresses: the chain crate's, so that an address
//! accepted here is the one a withdrawal pays and a signer compares.
//!
//! Every chain name maps to a family ([`custos_chains::family`]): EVM
//! addresses must carry a valid EIP-55 checksum when mixed-case; Bitcoin and
//! Litecoin addresses must decode (base58check, bech32 or bech32m) for the
//! chain's network, with a witness version some wallet can spend.

pub use custos_chains::family::{
    ChainFamily, CheckedAddress, family_of as chain_kind, native_asset,
};

/// Checks `address` for `chain` and returns its canonical form, or why it is refused.
pub fn check_address(chain: &str, address: &str) -> Result<CheckedAddress, String> {
    custos_chains::family::check_address(chain, address).map_err(|e| match e {
        custos_chains::ChainError::InvalidAddress(why) => why,
        custos_chains::ChainError::InvalidConfig(why) => why,
        other => other.to_string(),
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
        // Witness version 2: valid bech32m, but no wallet can spend it yet.
        assert!(check_address("bitcoin", "bc1zw508d6qejxtdg4y5r3zarvaryvaxxpcs").is_err());
        assert!(
            check_address(
                "litecoin-regtest",
                "rltc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"
            )
            .is_err()
        );
        assert!(check_address("bitcoin", "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNb").is_err());
        assert!(check_address("bitcoin", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").is_err());
        assert!(check_address("dogecoin", "D1").is_err());
    }
}
