//! Derived addresses re-derived: every deposit address the log hands out
//! (kind 24) and every derived source an approval names must be the
//! wallet key's BIP32 child at its path.
//!
//! The derivation here is written from BIP32 with `k256` and HMAC-SHA512,
//! sharing no code with the cluster's (cggmp21's `hd-wallet`): a coordinator
//! that logged an address of its own as a customer's deposit address, or
//! an approval whose source the wallet does not own, is caught. The parent
//! is the key's public key from its `key_created` entry and the chain code
//! its `address_derived` entries carry (the bundle replay already checks
//! that a wallet has one chain code); the address is the chain's format of
//! the child key (`custos_chains::family::wallet_address`).
//!
//! Needs the bundle from entry 0 (the keys' creation entries). Keys of
//! other schemes than secp256k1 ECDSA are counted as not re-derived.

use std::collections::BTreeMap;

use custos_audit::bundle::FailureKind;
use custos_audit::{Entry, EntryBody, ExportBundle, Report};
use custos_policy::ApprovalStatement;
use hmac::{Hmac, Mac};
use k256::elliptic_curve::PrimeField;
use k256::elliptic_curve::sec1::ToEncodedPoint;
use k256::{ProjectivePoint, PublicKey, Scalar};
use sha2::Sha512;

/// What the re-derivation covered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct AddressCheck {
    /// Logged derived addresses re-derived and found right.
    pub rederived: u64,
    /// Derived sources of approvals checked against the derivation.
    pub sources: u64,
    /// Derived addresses of keys this verifier cannot re-derive (another
    /// scheme, or a key created before the bundle starts).
    pub skipped: u64,
}

/// The BIP32 child public key (compressed SEC1) of `parent` at the
/// non-hardened `path` (`m/0/7`). `None` if the path or key is not
/// valid, or an index gives an invalid child (BIP32 would skip it; no such
/// index is known).
pub fn bip32_child(parent: &[u8], chain_code: &[u8], path: &str) -> Option<[u8; 33]> {
    let mut key = PublicKey::from_sec1_bytes(parent).ok()?;
    let mut code: [u8; 32] = chain_code.try_into().ok()?;
    let mut parts = path.split('/');
    if parts.next() != Some("m") {
        return None;
    }
    for part in parts {
        let index: u32 = part.parse().ok()?;
        if index >= 1 << 31 || part != index.to_string() {
            return None;
        }
        let mut mac = Hmac::<Sha512>::new_from_slice(&code).ok()?;
        mac.update(key.to_encoded_point(true).as_bytes());
        mac.update(&index.to_be_bytes());
        let i = mac.finalize().into_bytes();
        let (left, right) = i.split_at(32);
        let tweak: [u8; 32] = left.try_into().ok()?;
        let tweak = Option::<Scalar>::from(Scalar::from_repr(tweak.into()))?;
        let child = ProjectivePoint::GENERATOR * tweak + key.to_projective();
        key = PublicKey::from_affine(child.to_affine()).ok()?;
        code = right.try_into().ok()?;
    }
    key.to_encoded_point(true).as_bytes().try_into().ok()
}

#[derive(Default)]
struct Wallet {
    scheme: String,
    public_key: Vec<u8>,
    chain_code: Option<Vec<u8>>,
}

/// Re-derives every logged derived address and approved derived source
/// of `bundle` (which must start at entry 0; otherwise nothing is checked),
/// adding a [`FailureKind::AddressConflict`] failure to `report` for each
/// one the wallet's key does not derive.
pub fn check(bundle: &ExportBundle, report: &mut Report) -> AddressCheck {
    let mut out = AddressCheck::default();
    if bundle.start != 0 {
        return out;
    }
    let entries: Vec<Entry> = bundle
        .entries
        .iter()
        .filter_map(|h| hex::decode(h).ok())
        .filter_map(|b| Entry::decode(&b).ok())
        .collect();
    let mut wallets: BTreeMap<String, Wallet> = BTreeMap::new();
    for e in &entries {
        match &e.body {
            EntryBody::KeyCreated {
                key_id,
                scheme,
                public_key,
                ..
            } => {
                let w = wallets.entry(key_id.clone()).or_default();
                w.scheme = scheme.clone();
                w.public_key = public_key.clone();
            }
            EntryBody::AddressDerived {
                key_id, chain_code, ..
            } => {
                wallets.entry(key_id.clone()).or_default().chain_code = Some(chain_code.clone());
            }
            _ => {}
        }
    }
    let derive = |key_id: &str, path: &str| -> Result<Option<[u8; 33]>, String> {
        let Some(w) = wallets.get(key_id) else {
            return Ok(None);
        };
        if w.public_key.is_empty() || !matches!(w.scheme.as_str(), "ecdsa-secp256k1" | "") {
            return Ok(None);
        }
        let Some(code) = &w.chain_code else {
            return Err(format!(
                "no address_derived entry gives key {key_id}'s chain code"
            ));
        };
        bip32_child(&w.public_key, code, path)
            .map(Some)
            .ok_or_else(|| format!("{path} is not a derivation path of key {key_id}"))
    };
    let fail = |report: &mut Report, index: u64, why: String| {
        report.fail(Some(index), FailureKind::AddressConflict, why);
    };
    for e in &entries {
        match &e.body {
            EntryBody::AddressDerived {
                key_id,
                chain,
                path,
                address,
                public_key,
                ..
            } => match derive(key_id, path) {
                Ok(None) => out.skipped += 1,
                Err(why) => fail(
                    report,
                    e.index,
                    format!("address_derived entry {}: {why}", e.index),
                ),
                Ok(Some(child)) => {
                    let formatted = custos_chains::family::wallet_address(chain, &child);
                    if child.as_slice() != public_key.as_slice()
                        || formatted.as_deref().ok() != Some(address.as_str())
                    {
                        fail(
                            report,
                            e.index,
                            format!(
                                "address_derived entry {}: key {key_id} at {path} derives {} ({}), the entry says {address} ({})",
                                e.index,
                                formatted.unwrap_or_else(|e| e.to_string()),
                                hex::encode(child),
                                hex::encode(public_key)
                            ),
                        );
                    } else {
                        out.rederived += 1;
                    }
                }
            },
            EntryBody::Approval {
                withdrawal_id,
                statement,
                ..
            } => {
                let Ok(s) = ApprovalStatement::decode(statement) else {
                    continue;
                };
                let Some(source) = &s.source else {
                    continue;
                };
                let checked = derive(&s.source_wallet, &source.path).and_then(|child| {
                    let Some(child) = child else {
                        return Ok(false);
                    };
                    let formatted = custos_chains::family::wallet_address(&s.chain, &child)
                        .map_err(|e| e.to_string())?;
                    if formatted == source.address {
                        Ok(true)
                    } else {
                        Err(format!(
                            "key {} at {} derives {formatted}, not {}",
                            s.source_wallet, source.path, source.address
                        ))
                    }
                });
                match checked {
                    Ok(true) => out.sources += 1,
                    Ok(false) => {}
                    Err(why) => fail(
                        report,
                        e.index,
                        format!(
                            "approval entry {} of withdrawal {withdrawal_id}: the approved source: {why}",
                            e.index
                        ),
                    ),
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bitcoin::bip32::{ChainCode, ChildNumber, Fingerprint, Xpub};
    use bitcoin::secp256k1::{self, Secp256k1};
    use sha2::{Digest, Sha256};

    /// The compressed public key of secret `seed`.
    fn public_of(seed: &[u8]) -> Vec<u8> {
        k256::SecretKey::from_slice(seed)
            .unwrap()
            .public_key()
            .to_encoded_point(true)
            .as_bytes()
            .to_vec()
    }

    #[test]
    fn bip32_children_agree_with_rust_bitcoin() {
        let secp = Secp256k1::verification_only();
        for k in 0u32..40 {
            let seed = Sha256::digest(k.to_be_bytes());
            let parent = public_of(&seed);
            let code: [u8; 32] = Sha256::digest(seed).into();
            let xpub = Xpub {
                network: bitcoin::NetworkKind::Main,
                depth: 0,
                parent_fingerprint: Fingerprint::default(),
                child_number: ChildNumber::from_normal_idx(0).unwrap(),
                public_key: secp256k1::PublicKey::from_slice(&parent).unwrap(),
                chain_code: ChainCode::from(code),
            };
            for i in [0, 1, k, 1000 + k, (1 << 31) - 1] {
                let path = [
                    ChildNumber::from_normal_idx(0).unwrap(),
                    ChildNumber::from_normal_idx(i).unwrap(),
                ];
                let want = xpub
                    .derive_pub(&secp, &path)
                    .unwrap()
                    .public_key
                    .serialize();
                assert_eq!(bip32_child(&parent, &code, &format!("m/0/{i}")), Some(want));
            }
            assert_eq!(
                bip32_child(&parent, &code, "m").unwrap().to_vec(),
                parent,
                "m is the key itself"
            );
        }
        let parent = public_of(&[7; 32]);
        for bad in ["", "0/1", "m/2147483648", "m/01", "m/x", "m/1/"] {
            assert_eq!(bip32_child(&parent, &[1; 32], bad), None, "{bad}");
        }
        assert_eq!(bip32_child(&parent, &[1; 31], "m/1"), None);
        assert_eq!(bip32_child(&[5; 33], &[1; 32], "m/1"), None);
    }

    fn entry(index: u64, body: EntryBody) -> Entry {
        Entry {
            index,
            timestamp_ms: 1,
            body,
        }
    }

    #[test]
    fn a_logged_address_the_key_does_not_derive_fails() {
        let parent = public_of(&[7; 32]);
        let code = [4u8; 32];
        let child = |i: u32| bip32_child(&parent, &code, &format!("m/0/{i}")).unwrap();
        let address = |pk: &[u8]| custos_chains::family::wallet_address("anvil", pk).unwrap();
        let derived = |i: u32, pk: [u8; 33], address: String| EntryBody::AddressDerived {
            key_id: "w".into(),
            chain: "anvil".into(),
            path: format!("m/0/{i}"),
            address,
            public_key: pk.to_vec(),
            chain_code: code.to_vec(),
            actor: "backend".into(),
        };
        let created = EntryBody::KeyCreated {
            key_id: "w".into(),
            scheme: "ecdsa-secp256k1".into(),
            participants: vec![],
            threshold: 2,
            public_key: parent.clone(),
        };
        // A coordinator's own address logged as m/0/2 (with its own key,
        // or with the right key but another address).
        let foreign = bip32_child(&parent, &[5; 32], "m/0/2").unwrap();
        let entries = [
            entry(0, created),
            entry(1, derived(1, child(1), address(&child(1)))),
            entry(2, derived(2, foreign, address(&foreign))),
            entry(3, derived(3, child(3), address(&foreign))),
        ];
        let mut report = Report::default();
        let got = check(&crate::testing::bundle(&entries), &mut report);
        assert_eq!((got.rederived, got.skipped), (1, 0));
        let failed: Vec<_> = report.failures.iter().map(|f| f.entry).collect();
        assert_eq!(failed, [Some(2), Some(3)], "{:#?}", report.failures);
        assert!(
            report.failures[0]
                .message
                .contains("key w at m/0/2 derives")
        );
        // Not from entry 0: nothing to derive from, nothing checked.
        let mut report = Report::default();
        let got = check(&crate::testing::bundle(&entries[1..]), &mut report);
        assert_eq!(got, AddressCheck::default());
        assert!(report.is_ok());
    }
}
