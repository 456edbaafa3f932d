//! The signature-scheme seam: cggmp21 ECDSA driven through
//! [`SignatureScheme`] in the in-process simulation, signatures checked by
//! libsecp256k1, and the scheme names.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use custos_mpc::scheme::{Cggmp21Ecdsa, SchemeId, SignatureScheme};
use custos_mpc::{AuxInfo, MpcError, sim};

fn block_on<T>(f: impl Future<Output = T>) -> T {
    futures::executor::block_on(f)
}

fn fixture_aux(n: usize) -> Vec<AuxInfo> {
    custos_mpc::fixture::checked_in_aux(n).unwrap()
}

#[test]
fn ecdsa_keygen_presign_sign_and_combine_through_the_seam() {
    let shares = block_on(sim::keygen_with::<Cggmp21Ecdsa>(2, fixture_aux(3), None)).unwrap();
    let digest = [0x11u8; 32];
    let sig = block_on(sim::sign_with::<Cggmp21Ecdsa>(&shares, &[2, 0], &digest)).unwrap();
    let key = Cggmp21Ecdsa::public_key(&shares[0]);
    Cggmp21Ecdsa::verify(&key, &digest, &sig).unwrap();
    // The same bytes the existing API returns, checked by libsecp256k1 (low s).
    assert_eq!(key, custos_mpc::protocol::public_key(&shares[1]));
    let secp = secp256k1::Secp256k1::verification_only();
    let pk = secp256k1::PublicKey::from_slice(&Cggmp21Ecdsa::public_key_bytes(&key)).unwrap();
    let s =
        secp256k1::ecdsa::Signature::from_compact(&Cggmp21Ecdsa::signature_bytes(&sig)).unwrap();
    secp.verify_ecdsa(secp256k1::Message::from_digest(digest), &s, &pk)
        .expect("libsecp256k1 verifies");
    // Another digest does not verify.
    assert!(matches!(
        Cggmp21Ecdsa::verify(&key, &[0x12; 32], &sig),
        Err(MpcError::InvalidSignature)
    ));
    // ECDSA signs 32-byte prehashes only.
    let pool = block_on(sim::precompute_with::<Cggmp21Ecdsa>(&shares, &[0, 1], None)).unwrap();
    let nonce = Cggmp21Ecdsa::presignature_public(&pool[0]);
    assert_eq!(nonce, Cggmp21Ecdsa::presignature_public(&pool[1]));
    let pre = pool.into_iter().next().unwrap();
    let e = Cggmp21Ecdsa::partial_sign(pre, &shares[0], b"not 32 bytes").unwrap_err();
    assert!(e.to_string().contains("32-byte prehash"), "{e}");
}

#[test]
fn scheme_names_round_trip() {
    for s in SchemeId::ALL {
        assert_eq!(SchemeId::from_name(s.name()).unwrap(), s);
    }
    assert_eq!(Cggmp21Ecdsa::ID, SchemeId::EcdsaSecp256k1);
    assert_eq!(Cggmp21Ecdsa::ID.curve(), "secp256k1");
    assert_eq!(Cggmp21Ecdsa::ID.protocol(), "cggmp21");
    assert_eq!(SchemeId::Ed25519.curve(), "ed25519");
    assert!(SchemeId::from_name("rsa").is_err());
}
