//! Addresses of Bitcoin-format networks: text to output script and back.
//!
//! Accepted destinations: base58 P2PKH and P2SH, segwit v0 (P2WPKH, P2WSH,
//! bech32) and v1 (P2TR, bech32m), each only with its own network's prefix,
//! so a Bitcoin address is refused on Litecoin and a testnet address on
//! mainnet. Other witness versions are refused: coins sent to a version no
//! wallet can spend yet are lost. The canonical text is lowercase bech32 or
//! the base58 string as given (base58 is case-sensitive).
//!
//! Wallet addresses are P2WPKH of the wallet key's compressed public key.

use bitcoin::hashes::Hash;
use bitcoin::key::CompressedPublicKey;
use bitcoin::{PubkeyHash, ScriptBuf, ScriptHash, WitnessProgram, WitnessVersion};

use crate::error::{ChainError, Result};
use crate::utxo::network::UtxoNetwork;

/// Longest address text accepted (bech32 allows 90 characters).
const MAX_ADDRESS_LEN: usize = 90;

/// An address parsed for one network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UtxoAddress {
    /// The output script paying to it.
    pub script_pubkey: ScriptBuf,
    /// Its canonical text.
    pub text: String,
}

fn invalid(text: &str, why: impl std::fmt::Display) -> ChainError {
    // Addresses are public; echoing a bounded prefix helps the operator.
    let shown: String = text.chars().take(MAX_ADDRESS_LEN).collect();
    ChainError::InvalidAddress(format!("{shown:?}: {why}"))
}

/// Parses `text` as an address of `network`.
pub fn parse_address(network: UtxoNetwork, text: &str) -> Result<UtxoAddress> {
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed.len() > MAX_ADDRESS_LEN {
        return Err(invalid(text, "empty or longer than 90 characters"));
    }
    let lower = trimmed.to_ascii_lowercase();
    let hrp_prefix = format!("{}1", network.bech32_hrp());
    if lower.starts_with(&hrp_prefix) {
        return parse_segwit(network, trimmed);
    }
    if let Some(other) = UtxoNetwork::ALL
        .into_iter()
        .filter(|n| *n != network)
        .find(|n| lower.starts_with(&format!("{}1", n.bech32_hrp())))
    {
        return Err(invalid(
            text,
            format!("an address of another network ({other}), not of {network}"),
        ));
    }
    parse_base58(network, trimmed)
}

fn parse_segwit(network: UtxoNetwork, text: &str) -> Result<UtxoAddress> {
    let (hrp, version, program) = bitcoin::bech32::segwit::decode(text)
        .map_err(|e| invalid(text, format!("invalid segwit address: {e}")))?;
    if hrp.to_lowercase() != network.bech32_hrp() {
        return Err(invalid(
            text,
            format!(
                "prefix {} is another network's, not {network}'s",
                hrp.to_lowercase()
            ),
        ));
    }
    let version = WitnessVersion::try_from(version).map_err(|e| invalid(text, e))?;
    match (version, program.len()) {
        (WitnessVersion::V0, 20 | 32) | (WitnessVersion::V1, 32) => {}
        (v, len) => {
            return Err(invalid(
                text,
                format!(
                    "witness version {} with a {len}-byte program is not a supported destination",
                    v.to_num()
                ),
            ));
        }
    }
    let program = WitnessProgram::new(version, &program).map_err(|e| invalid(text, e))?;
    let script_pubkey = ScriptBuf::new_witness_program(&program);
    let text =
        address_of(network, &script_pubkey).ok_or_else(|| invalid(text, "cannot be re-encoded"))?;
    Ok(UtxoAddress {
        script_pubkey,
        text,
    })
}

fn parse_base58(network: UtxoNetwork, text: &str) -> Result<UtxoAddress> {
    let data = bitcoin::base58::decode_check(text).map_err(|e| {
        invalid(
            text,
            format!("neither {network} bech32 nor base58check: {e}"),
        )
    })?;
    let (version, hash) = match data.as_slice() {
        [version, hash @ ..] if hash.len() == 20 => (*version, hash),
        _ => {
            return Err(invalid(
                text,
                "base58 payload is not a version byte and a 20-byte hash",
            ));
        }
    };
    let mut h = [0u8; 20];
    h.copy_from_slice(hash);
    let script_pubkey = if version == network.p2pkh_version() {
        ScriptBuf::new_p2pkh(&PubkeyHash::from_byte_array(h))
    } else if version == network.p2sh_version() {
        ScriptBuf::new_p2sh(&ScriptHash::from_byte_array(h))
    } else {
        return Err(invalid(
            text,
            format!(
                "version byte 0x{version:02x}: an address of another network, not of {network}"
            ),
        ));
    };
    Ok(UtxoAddress {
        script_pubkey,
        text: text.to_owned(),
    })
}

/// The canonical address text of an output script on `network`, `None` for
/// scripts that have no address (OP_RETURN, bare multisig, unknown versions).
pub fn address_of(network: UtxoNetwork, script: &bitcoin::Script) -> Option<String> {
    let bytes = script.as_bytes();
    if script.is_p2pkh() {
        let mut data = vec![network.p2pkh_version()];
        data.extend_from_slice(bytes.get(3..23)?);
        return Some(bitcoin::base58::encode_check(&data));
    }
    if script.is_p2sh() {
        let mut data = vec![network.p2sh_version()];
        data.extend_from_slice(bytes.get(2..22)?);
        return Some(bitcoin::base58::encode_check(&data));
    }
    let version = script.witness_version()?;
    let program = bytes.get(2..)?;
    let hrp = bitcoin::bech32::Hrp::parse(network.bech32_hrp()).ok()?;
    bitcoin::bech32::segwit::encode(hrp, version.into(), program).ok()
}

/// The compressed form of a SEC1 secp256k1 public key (33 or 65 bytes).
pub fn compressed_key(sec1: &[u8]) -> Result<CompressedPublicKey> {
    let key = bitcoin::secp256k1::PublicKey::from_slice(sec1)
        .map_err(|_| ChainError::InvalidPublicKey("not a SEC1 secp256k1 point"))?;
    Ok(CompressedPublicKey(key))
}

/// The output script of a wallet key: P2WPKH of a SEC1 key (33 or 65
/// bytes, ECDSA), P2TR of an x-only taproot output key (32 bytes, FROST
/// secp256k1-tr) ([`crate::utxo::spend`]).
pub fn wallet_script(public_key: &[u8]) -> Result<ScriptBuf> {
    Ok(crate::utxo::spend::wallet_spend(public_key)?.script())
}

/// The address of a wallet key on `network` (see [`wallet_script`]):
/// bech32 P2WPKH or bech32m P2TR.
pub fn wallet_address(network: UtxoNetwork, public_key: &[u8]) -> Result<UtxoAddress> {
    let script_pubkey = wallet_script(public_key)?;
    let text = address_of(network, &script_pubkey).ok_or(ChainError::InvalidPublicKey(
        "cannot be encoded as an address",
    ))?;
    Ok(UtxoAddress {
        script_pubkey,
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // BIP173 test vectors (mainnet P2WPKH and P2WSH) and BIP350 (P2TR).
    const BC_P2WPKH: &str = "BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4";
    const BC_P2TR: &str = "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0";
    const TB_P2WSH: &str = "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7";

    #[test]
    fn bip173_and_bip350_vectors() {
        let a = parse_address(UtxoNetwork::Bitcoin, BC_P2WPKH).unwrap();
        assert_eq!(a.text, BC_P2WPKH.to_lowercase());
        assert_eq!(
            hex::encode(a.script_pubkey.as_bytes()),
            "0014751e76e8199196d454941c45d1b3a323f1433bd6"
        );
        assert!(
            parse_address(UtxoNetwork::Bitcoin, BC_P2TR)
                .unwrap()
                .script_pubkey
                .is_p2tr()
        );
        assert!(
            parse_address(UtxoNetwork::BitcoinTestnet, TB_P2WSH)
                .unwrap()
                .script_pubkey
                .is_p2wsh()
        );
    }

    #[test]
    fn another_networks_address_is_refused_by_name() {
        let e = parse_address(UtxoNetwork::Litecoin, BC_P2WPKH)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bitcoin"), "{e}");
        let e = parse_address(UtxoNetwork::Bitcoin, TB_P2WSH)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bitcoin-testnet"), "{e}");
        let sk = k256::SecretKey::from_slice(&[9u8; 32]).unwrap();
        let regtest = wallet_address(
            UtxoNetwork::BitcoinRegtest,
            &sk.public_key().to_sec1_bytes(),
        )
        .unwrap();
        let e = parse_address(UtxoNetwork::Bitcoin, &regtest.text)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bitcoin-regtest"), "{e}");
    }

    #[test]
    fn legacy_addresses_round_trip() {
        // Bitcoin's genesis coinbase address.
        let a = parse_address(UtxoNetwork::Bitcoin, "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa").unwrap();
        assert!(a.script_pubkey.is_p2pkh());
        assert_eq!(
            address_of(UtxoNetwork::Bitcoin, &a.script_pubkey).unwrap(),
            a.text
        );
        assert!(
            parse_address(UtxoNetwork::Litecoin, "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa").is_err()
        );
        // A one-character typo fails the checksum.
        assert!(parse_address(UtxoNetwork::Bitcoin, "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNb").is_err());
    }

    #[test]
    fn wallet_address_is_p2wpkh_on_each_network() {
        let sk = k256::SecretKey::from_slice(&[7u8; 32]).unwrap();
        let sec1 = sk.public_key().to_sec1_bytes();
        for n in UtxoNetwork::ALL {
            let a = wallet_address(n, &sec1).unwrap();
            assert!(
                a.text.starts_with(&format!("{}1q", n.bech32_hrp())),
                "{}",
                a.text
            );
            assert_eq!(parse_address(n, &a.text).unwrap(), a);
        }
        let uncompressed =
            k256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&sk.public_key(), false);
        assert_eq!(
            wallet_script(uncompressed.as_bytes()).unwrap(),
            wallet_script(&sec1).unwrap()
        );
    }

    #[test]
    fn unsupported_witness_versions_and_garbage() {
        // BIP350: a v2 address (valid bech32m, but no wallet spends it).
        let e = parse_address(UtxoNetwork::Bitcoin, "bc1zw508d6qejxtdg4y5r3zarvaryvaxxpcs")
            .unwrap_err();
        assert!(e.to_string().contains("witness version 2"), "{e}");
        for bad in [
            "",
            "bc1",
            "0x52908400098527886E0F7030069857D2E4169EE7",
            &"x".repeat(200),
        ] {
            assert!(parse_address(UtxoNetwork::Bitcoin, bad).is_err(), "{bad}");
        }
    }
}
