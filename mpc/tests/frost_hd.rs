//! HD children of FROST taproot keys (`custos_mpc::frost::hd`): the child's
//! output key agrees with an independent BIP32 and BIP341 implementation
//! (rust-bitcoin over libsecp256k1: `Xpub::derive_pub`, `tap_tweak`), a
//! 2-of-3 key signs for a child through the protocol with the master key's
//! nonce commitments, the signature verifies as BIP340 under the child's
//! output key (libsecp256k1), and a share derived at another path is named
//! by the combiner. Ed25519 keys have no child below the master.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bitcoin::bip32::{ChainCode, ChildNumber, Fingerprint, Xpub};
use bitcoin::key::{TapTweak, TweakedPublicKey, XOnlyPublicKey};
use bitcoin::secp256k1::{All, PublicKey, Secp256k1};
use bitcoin::{Address, KnownHrp, NetworkKind};
use custos_mpc::frost::{
    self, Ed25519, FrostKeyShare, FrostPublicKey, FrostSuite, FrostTaproot, Secp256k1Tr,
};
use custos_mpc::hd::{DerivationPath, legacy_chain_code};
use custos_mpc::{MpcError, SchemeId, sim};

/// A 2-of-3 key of ciphersuite `C` from the DKG in the simulation.
fn two_of_three<C: FrostSuite>() -> Vec<FrostKeyShare<C>> {
    let dkg = sim::keygen_with::<frost::Frost<C>>(2, vec![(); 3], None);
    futures::executor::block_on(dkg).unwrap()
}

fn path(text: &str) -> DerivationPath {
    text.parse().unwrap()
}

/// rust-bitcoin's BIP32 child of the even-Y internal key `02 || x` with
/// its legacy chain code, x-only.
fn bitcoin_child(secp: &Secp256k1<All>, x: &[u8; 32], indices: &[u32]) -> XOnlyPublicKey {
    let mut base = [0u8; 33];
    base[0] = 2;
    base[1..].copy_from_slice(x);
    let xpub = Xpub {
        network: NetworkKind::Main,
        depth: 0,
        parent_fingerprint: Fingerprint::default(),
        child_number: ChildNumber::Normal { index: 0 },
        public_key: PublicKey::from_slice(&base).unwrap(),
        chain_code: ChainCode::from(legacy_chain_code(&base)),
    };
    let steps: Vec<ChildNumber> = indices
        .iter()
        .map(|i| ChildNumber::from_normal_idx(*i).unwrap())
        .collect();
    xpub.derive_pub(secp, &steps)
        .unwrap()
        .public_key
        .x_only_public_key()
        .0
}

/// rust-bitcoin's BIP86 output key of [`bitcoin_child`].
fn bitcoin_output_key(secp: &Secp256k1<All>, x: &[u8; 32], indices: &[u32]) -> [u8; 32] {
    let (tweaked, _) = bitcoin_child(secp, x, indices).tap_tweak(secp, None);
    tweaked.to_x_only_public_key().serialize()
}

/// 4 keys (internal keys of both parities, in all likelihood) × 250
/// indices: the derived output key and address are rust-bitcoin's.
#[test]
fn a_thousand_taproot_children_agree_with_rust_bitcoin() {
    let secp = Secp256k1::new();
    let mut parities = [0usize; 2];
    for _ in 0..4 {
        let shares = two_of_three::<Secp256k1Tr>();
        let public = shares[0].public();
        let x = frost::hd::internal_key(public).unwrap();
        let dkg = public.dkg_key.serialize().unwrap();
        parities[usize::from(dkg[0] == 3)] += 1;
        // The master path is the wallet's own output key.
        assert_eq!(
            Secp256k1Tr::derive_public(public, &DerivationPath::master()).unwrap(),
            *public
        );
        assert_eq!(
            bitcoin_output_key(&secp, &x, &[]).to_vec(),
            public.key_bytes()
        );
        let scheme = custos_mpc::scheme(SchemeId::SchnorrSecp256k1Taproot);
        let package = serde_json::to_vec(public).unwrap();
        for index in 0..250u32 {
            let p = DerivationPath::from_indices(&[0, index]).unwrap();
            let child = Secp256k1Tr::derive_public(public, &p).unwrap();
            let expected = bitcoin_output_key(&secp, &x, &[0, index]);
            assert_eq!(child.key_bytes(), expected.to_vec(), "m/0/{index}");
            // The child's internal key is rust-bitcoin's BIP32 child, and
            // its output key the BIP86 tweak of it.
            assert_eq!(
                child.dkg_key_bytes(),
                bitcoin_child(&secp, &x, &[0, index]).serialize().to_vec()
            );
            assert_eq!(
                frost::hd::output_key(&child.dkg_key.serialize().unwrap()).unwrap(),
                expected
            );
            // The same through the seam the services use.
            let derived = scheme.derive_public(&package, None, &p).unwrap();
            assert_eq!(derived.public_key, expected.to_vec());
            let decoded: FrostPublicKey<Secp256k1Tr> =
                serde_json::from_slice(&derived.public_package).unwrap();
            assert_eq!(decoded, child);
            // P2TR of our output key is rust-bitcoin's address of its child.
            let ours = Address::p2tr_tweaked(
                TweakedPublicKey::dangerous_assume_tweaked(
                    XOnlyPublicKey::from_slice(&child.key_bytes()).unwrap(),
                ),
                KnownHrp::Regtest,
            );
            let theirs = Address::p2tr(
                &secp,
                bitcoin_child(&secp, &x, &[0, index]),
                None,
                KnownHrp::Regtest,
            );
            assert_eq!(ours, theirs);
        }
    }
    eprintln!("internal keys by parity (even, odd): {parities:?}");
}

/// Signs `message` with signers {0, 2} of `shares`, each deriving its
/// child share at its own path; combines under the child at `paths[0]`.
fn sign_at(
    shares: &[FrostKeyShare<Secp256k1Tr>],
    paths: [&DerivationPath; 2],
    message: &[u8],
) -> Result<(FrostPublicKey<Secp256k1Tr>, Vec<u8>), MpcError> {
    let signers = [0u16, 2];
    let pool =
        futures::executor::block_on(sim::precompute_with::<FrostTaproot>(shares, &signers, None))
            .unwrap();
    let commitments = frost::presignature_public(&pool[0]);
    let partials: Vec<_> = pool
        .into_iter()
        .zip(signers)
        .zip(paths)
        .map(|((pre, k), p)| {
            frost::partial_sign_at(pre, &shares[usize::from(k)], message, p).unwrap()
        })
        .collect();
    let child = Secp256k1Tr::derive_public(shares[0].public(), paths[0])?;
    let sig = frost::combine(&child, &commitments, message, &partials)?;
    Ok((child, frost::signature_bytes(&sig)))
}

fn verify_bip340(key: &[u8], message: &[u8], sig: &[u8]) -> bool {
    let secp = secp256k1::Secp256k1::verification_only();
    let pk = secp256k1::XOnlyPublicKey::from_byte_array(key.try_into().unwrap()).unwrap();
    let sig = secp256k1::schnorr::Signature::from_byte_array(sig.try_into().unwrap());
    secp.verify_schnorr(&sig, message, &pk).is_ok()
}

#[test]
fn a_two_of_three_taproot_key_signs_for_its_child_and_names_a_wrong_path() {
    let shares = two_of_three::<Secp256k1Tr>();
    let m07 = path("m/0/7");
    let message = [0x42u8; 32];
    for _ in 0..3 {
        let (child, sig) = sign_at(&shares, [&m07, &m07], &message).unwrap();
        assert_ne!(child.key_bytes(), shares[0].public().key_bytes());
        assert!(
            verify_bip340(&child.key_bytes(), &message, &sig),
            "libsecp256k1 verifies under the child's output key"
        );
        assert!(!verify_bip340(
            &shares[0].public().key_bytes(),
            &message,
            &sig
        ));
    }
    // Signer 2 derives m/0/8: its share is invalid for m/0/7's package and
    // the combiner names it (keygen index 2).
    let m08 = path("m/0/8");
    let e = sign_at(&shares, [&m07, &m08], &message).unwrap_err();
    assert!(
        matches!(&e, MpcError::InvalidSignatureShare { parties } if parties == &[2]),
        "{e}"
    );
    // A derived share is still the party's (same index), and its key
    // package belongs to the child's public package.
    let derived = Secp256k1Tr::derive_share(&shares[1], &m07).unwrap();
    assert_eq!(derived.index(), 1);
    assert_eq!(
        derived.public(),
        &Secp256k1Tr::derive_public(shares[1].public(), &m07).unwrap()
    );
    assert!(!format!("{derived:?}").contains("signing_share"));
}

#[test]
fn ed25519_keys_refuse_a_path_below_the_master() {
    let shares = two_of_three::<Ed25519>();
    let p = path("m/0/7");
    for e in [
        Ed25519::derive_public(shares[0].public(), &p).unwrap_err(),
        Ed25519::derive_share(&shares[0], &p).unwrap_err(),
        custos_mpc::scheme(SchemeId::Ed25519)
            .check_path(&p)
            .unwrap_err(),
    ] {
        assert!(
            matches!(
                e,
                MpcError::Unsupported {
                    scheme: SchemeId::Ed25519,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("SLIP-10"), "{e}");
    }
    custos_mpc::scheme(SchemeId::Ed25519)
        .check_path(&DerivationPath::master())
        .unwrap();
    assert_eq!(
        Ed25519::derive_public(shares[0].public(), &DerivationPath::master()).unwrap(),
        *shares[0].public()
    );
}
