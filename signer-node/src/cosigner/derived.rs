//! Withdrawals from a derived address of the wallet (HD child key).
//!
//! The coordinator names the path and the address; neither is trusted. The
//! signer derives the child key itself, from its own record of the wallet
//! key (the public key and chain code its keygen produced, `KeyMeta`), and
//! formats its address with the chain family's own code: a path whose child
//! has another address than the approved one is refused, naming both, before
//! any transaction is read. The child key derived here is then the key the
//! transaction check uses (UTXO inputs must be its coins) and the one the
//! partial signature is issued for.
//!
//! Derivation goes through the key's scheme (`custos_mpc::scheme(..)
//! .derive_public`): an ECDSA key's BIP32 child, a taproot key's child
//! internal key and its BIP86 output key (`custos_mpc::frost::hd`, from
//! the public package this signer recorded with its share); an Ed25519 key
//! has no child and is refused.

use custos_chains::family::wallet_address;
use custos_mpc::DerivationPath;
use custos_policy::DerivedSource;

use crate::error::NodeError;
use crate::store::KeyMeta;

/// The derivation path of `source`, parsed; refuses a path that is not in
/// its one canonical text form (what the approvals signed).
pub fn source_path(wallet: &str, source: &DerivedSource) -> Result<DerivationPath, NodeError> {
    let path: DerivationPath = source
        .path
        .parse()
        .map_err(|e| NodeError::Refused(format!("wallet {wallet}: source path: {e}")))?;
    if path.to_string() != source.path {
        return Err(NodeError::Refused(format!(
            "wallet {wallet}: source path {:?} is not canonical ({path})",
            source.path
        )));
    }
    Ok(path)
}

/// The child public key `source` spends from (its scheme's key bytes:
/// compressed SEC1, or a taproot child's x-only output key), derived by
/// this signer from `meta` (the wallet key it holds a share of); refuses
/// unless its address on `chain` is exactly `source.address`. Ed25519
/// wallets have no derived address (refused).
pub fn derived_source_key(
    meta: &KeyMeta,
    chain: &str,
    source: &DerivedSource,
) -> Result<Vec<u8>, NodeError> {
    let path = source_path(&meta.key_id, source)?;
    let child = custos_mpc::scheme(meta.scheme()?)
        .derive_public(&meta.package()?, meta.chain_code()?, &path)
        .map_err(|e| NodeError::Refused(format!("wallet {}: {e}", meta.key_id)))?;
    let derived = wallet_address(chain, &child.public_key).map_err(|e| {
        NodeError::Refused(format!(
            "wallet {}: no address on chain {chain}: {e}",
            meta.key_id
        ))
    })?;
    if derived != source.address {
        return Err(NodeError::SourceMismatch {
            wallet: meta.key_id.clone(),
            path: source.path.clone(),
            derived,
            claimed: source.address.clone(),
        });
    }
    Ok(child.public_key)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The BIP32 test vector 1 key m/0H: its child m/1 has a known address
    /// (chains/tests/vectors/hd_derivation.json, from Python bip_utils).
    fn meta() -> KeyMeta {
        KeyMeta {
            key_id: "hot".into(),
            group_id: "g".into(),
            threshold: 2,
            participants: vec!["a".into(), "b".into(), "c".into()],
            public_key: "035a784662a4a20a65bf6aab9ae98a6c068a81c52e4b032c0fb5400c706cfccc56".into(),
            chain_code: Some(
                "47fdacbd0f1097043b78c63c20c34ef4ed9a111d980047ad16282c7ae6236141".into(),
            ),
            scheme: "ecdsa-secp256k1".into(),
            generation: 0,
            public_package: None,
        }
    }

    fn source(path: &str, address: &str) -> DerivedSource {
        DerivedSource {
            path: path.into(),
            address: address.into(),
        }
    }

    #[test]
    fn the_signer_derives_the_address_itself_and_refuses_a_mismatch() {
        let m1 = "0x29379f45F515C494483298225d1B347F73D1babF";
        let key = derived_source_key(&meta(), "anvil", &source("m/1", m1)).unwrap();
        assert_eq!(
            hex::encode(key),
            "03501e454bf00751f24b1b489aa925215d66af2234e3891c3b21a52bedb3cd711c"
        );
        // The same address claimed for another path: refused, naming both.
        match derived_source_key(&meta(), "anvil", &source("m/2", m1)) {
            Err(NodeError::SourceMismatch {
                wallet,
                path,
                derived,
                claimed,
            }) => {
                assert_eq!((wallet.as_str(), path.as_str()), ("hot", "m/2"));
                assert_eq!(claimed, m1);
                assert_ne!(derived, m1);
                assert!(derived.starts_with("0x"));
            }
            other => panic!("{other:?}"),
        }
        // On a UTXO chain the address is its P2WPKH.
        derived_source_key(
            &meta(),
            "litecoin-regtest",
            &source("m/1", "rltc1qhm6697d9d2224vfyt8mj4kw03ncec7a7l097h0"),
        )
        .unwrap();
        assert!(matches!(
            derived_source_key(&meta(), "litecoin-regtest", &source("m/1", m1)),
            Err(NodeError::SourceMismatch { .. })
        ));
        // Paths that are not canonical, or hardened, are refused.
        for bad in ["m/01", "m/1'", "m/2147483648", "1", "m/1/"] {
            assert!(
                matches!(
                    derived_source_key(&meta(), "anvil", &source(bad, m1)),
                    Err(NodeError::Refused(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_key_without_a_chain_code_derives_with_the_legacy_one() {
        let mut m = meta();
        m.chain_code = None;
        let xpub = m.extended_public_key().unwrap();
        let pk: [u8; 33] = hex::decode(&m.public_key).unwrap().try_into().unwrap();
        assert_eq!(xpub.chain_code(), custos_mpc::hd::legacy_chain_code(&pk));
        let child = xpub.derive(&"m/0/3".parse().unwrap()).unwrap();
        let address = wallet_address("anvil", &child.public_key()).unwrap();
        assert_eq!(
            derived_source_key(&m, "anvil", &source("m/0/3", &address)).unwrap(),
            child.public_key().to_vec()
        );
    }

    #[test]
    fn a_taproot_wallet_derives_its_child_output_key() {
        use custos_mpc::frost::{Ed25519, Frost, FrostSuite, Secp256k1Tr};
        let shares = futures::executor::block_on(
            custos_mpc::sim::keygen_with::<Frost<Secp256k1Tr>>(2, vec![(); 3], None),
        )
        .unwrap();
        let public = shares[0].public();
        let mut m = meta();
        m.scheme = "schnorr-secp256k1-taproot".into();
        m.public_key = hex::encode(public.key_bytes());
        m.chain_code = None;
        m.public_package = Some(hex::encode(serde_json::to_vec(public).unwrap()));
        let m07 = Secp256k1Tr::derive_public(public, &"m/0/7".parse().unwrap()).unwrap();
        let address = wallet_address("litecoin-regtest", &m07.key_bytes()).unwrap();
        assert!(address.starts_with("rltc1p"), "{address}");
        let chain = "litecoin-regtest";
        assert_eq!(
            derived_source_key(&m, chain, &source("m/0/7", &address)).unwrap(),
            m07.key_bytes()
        );
        assert!(matches!(
            derived_source_key(&m, chain, &source("m/0/8", &address)),
            Err(NodeError::SourceMismatch { .. })
        ));
        // A record from before FROST HD holds no package: refused, saying so.
        let old = KeyMeta {
            public_package: None,
            ..m.clone()
        };
        match derived_source_key(&old, chain, &source("m/0/7", &address)) {
            Err(NodeError::Refused(why)) => assert!(why.contains("refresh"), "{why}"),
            other => panic!("{other:?}"),
        }
        // An Ed25519 wallet has no derived address.
        let ed = futures::executor::block_on(custos_mpc::sim::keygen_with::<Frost<Ed25519>>(
            2,
            vec![(); 3],
            None,
        ))
        .unwrap();
        let ed_meta = KeyMeta {
            scheme: "ed25519".into(),
            public_key: hex::encode(ed[0].public().key_bytes()),
            public_package: Some(hex::encode(serde_json::to_vec(ed[0].public()).unwrap())),
            ..m
        };
        match derived_source_key(&ed_meta, "message", &source("m/0/7", "00")) {
            Err(NodeError::Refused(why)) => assert!(why.contains("SLIP-10"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
