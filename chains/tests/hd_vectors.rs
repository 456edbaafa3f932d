//! HD-derived wallet addresses against an independent BIP32 implementation:
//! 1,000 children of two masters (one with its own chain code, one with the
//! legacy chain code of keys made before HD support), derived by
//! `custos_mpc::hd` from the extended public key alone and formatted by each
//! chain family, compared with `vectors/hd_derivation.json`, which
//! `vectors/make_hd_vectors.py` derives with Python `bip_utils` (the test
//! command re-runs it with `--check`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use custos_chains::family::wallet_address;
use custos_mpc::hd::{DerivationPath, ExtendedPublicKey, legacy_chain_code};
use serde_json::Value;

fn text<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} missing"))
}

#[test]
fn a_thousand_derived_addresses_agree_with_bip_utils() {
    let vectors: Value = serde_json::from_str(include_str!("vectors/hd_derivation.json")).unwrap();
    let mut checked = 0;
    for m in vectors["masters"].as_array().unwrap() {
        let pk = hex::decode(text(m, "public_key")).unwrap();
        let code: [u8; 32] = hex::decode(text(m, "chain_code"))
            .unwrap()
            .try_into()
            .unwrap();
        let master = if m["legacy_chain_code"].as_bool().unwrap() {
            // The Python side computed the legacy chain code from its definition.
            let pk33: [u8; 33] = pk.clone().try_into().unwrap();
            assert_eq!(legacy_chain_code(&pk33), code, "{}", text(m, "name"));
            ExtendedPublicKey::of_key(&pk, None).unwrap()
        } else {
            ExtendedPublicKey::of_key(&pk, Some(code)).unwrap()
        };
        for c in m["children"].as_array().unwrap() {
            let path: DerivationPath = text(c, "path").parse().unwrap();
            assert_eq!(path.to_string(), text(c, "path"));
            let child = master.derive(&path).unwrap();
            let what = format!("{} {path}", text(m, "name"));
            assert_eq!(
                hex::encode(child.public_key()),
                text(c, "public_key"),
                "{what}"
            );
            assert_eq!(
                hex::encode(child.chain_code()),
                text(c, "chain_code"),
                "{what}"
            );
            for chain in ["ethereum", "litecoin-regtest", "bitcoin"] {
                assert_eq!(
                    wallet_address(chain, &child.public_key()).unwrap(),
                    text(c, chain),
                    "{what} on {chain}"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 1000);
}
