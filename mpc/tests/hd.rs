//! HD-derived child keys signed through the threshold protocol: the
//! master key's presignatures sign for any non-hardened child, every
//! signer must use the same path, and keys made before HD support (no
//! chain code) derive with the deterministic legacy chain code.
//! Derivation itself is checked against an independent BIP32
//! implementation in `chains/tests/hd_vectors.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use custos_mpc::hd::{self, DerivationPath, ExtendedPublicKey, issue_partial_derived};
use custos_mpc::protocol::{combine, public_key};
use custos_mpc::{KeyShare, MpcError, sim};

fn block_on<T>(f: impl Future<Output = T>) -> T {
    futures::executor::block_on(f)
}

/// Verifies with RustCrypto k256, independently of cggmp21.
fn verify_k256(pk: &[u8; 33], digest: &[u8; 32], sig: &custos_mpc::Signature) {
    use k256::ecdsa::signature::hazmat::PrehashVerifier;
    let vk = k256::ecdsa::VerifyingKey::from_sec1_bytes(pk).unwrap();
    let ksig = k256::ecdsa::Signature::from_slice(&sig.to_bytes()).unwrap();
    vk.verify_prehash(digest, &ksig).expect("k256 verifies");
}

fn sign_derived(
    shares: &[KeyShare],
    master: &ExtendedPublicKey,
    paths: &[DerivationPath],
    digest: &[u8; 32],
) -> Result<custos_mpc::Signature, MpcError> {
    let signers = [0u16, 2];
    let presigs = block_on(sim::presign(shares, &signers, None)).unwrap();
    let partials: Vec<_> = presigs
        .into_iter()
        .zip(paths)
        .map(|(p, path)| issue_partial_derived(p, master, path, digest).unwrap())
        .collect();
    let child = master.derive(&paths[0])?;
    combine(&partials, &child.public_key(), digest)
}

#[test]
fn child_keys_sign_from_the_master_keys_presignatures() {
    let aux = custos_mpc::fixture::checked_in_aux(3).unwrap();
    let shares = block_on(sim::keygen(2, &aux)).unwrap();
    // Keys carry a chain code generated jointly at keygen; every party has the same.
    let code = hd::share_chain_code(&shares[0]).expect("new keys carry a chain code");
    assert!(shares.iter().all(|s| hd::share_chain_code(s) == Some(code)));
    assert_ne!(code, hd::legacy_chain_code(&public_key(&shares[0])));
    let master = ExtendedPublicKey::of_share(&shares[0]).unwrap();
    assert_eq!(master.chain_code(), code);

    let digest = [0x5a; 32];
    for text in ["m/0/7", "m/3", "m/1/2/3/2147483647"] {
        let path: DerivationPath = text.parse().unwrap();
        let sig = sign_derived(&shares, &master, &[path.clone(), path.clone()], &digest).unwrap();
        let child = master.derive(&path).unwrap();
        assert_ne!(child.public_key(), master.public_key());
        verify_k256(&child.public_key(), &digest, &sig);
    }
    // The master path signs for the master key, as before.
    let m = DerivationPath::master();
    let sig = sign_derived(&shares, &master, &[m.clone(), m], &digest).unwrap();
    verify_k256(&master.public_key(), &digest, &sig);

    // Signers that disagree on the path produce no valid signature.
    let a: DerivationPath = "m/0/7".parse().unwrap();
    let b: DerivationPath = "m/0/8".parse().unwrap();
    let e = sign_derived(&shares, &master, &[a, b], &digest).unwrap_err();
    assert!(matches!(e, MpcError::InvalidSignature), "{e}");
}

#[test]
fn keys_without_a_chain_code_derive_with_the_legacy_one() {
    let aux = custos_mpc::fixture::checked_in_aux(3).unwrap();
    let shares: Vec<KeyShare> = block_on(sim::keygen(2, &aux))
        .unwrap()
        .into_iter()
        .map(|s| {
            // A share as keys generated before HD support are stored.
            let mut dirty = s.into_inner();
            dirty.core.key_info.chain_code = None;
            let json = serde_json::to_string(&dirty).unwrap();
            assert!(!json.contains("chain_code"));
            KeyShare::validate(dirty).unwrap()
        })
        .collect();
    assert_eq!(hd::share_chain_code(&shares[1]), None);
    let pk = public_key(&shares[1]);
    let master = ExtendedPublicKey::of_share(&shares[1]).unwrap();
    assert_eq!(master.chain_code(), hd::legacy_chain_code(&pk));
    let path: DerivationPath = "m/0/42".parse().unwrap();
    let digest = [0xa5; 32];
    let sig = sign_derived(&shares, &master, &[path.clone(), path.clone()], &digest).unwrap();
    verify_k256(&master.derive(&path).unwrap().public_key(), &digest, &sig);
}
