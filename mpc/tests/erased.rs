//! The scheme seam as services drive it (`custos_mpc::scheme(id)`, over
//! bytes): every scheme keygens, precomputes, signs and combines through
//! the same code, the parties agree on the public package and on each pool
//! item's public half, and a bad partial is named by its signer. Signatures
//! are checked by libraries that share no code with the protocols.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use custos_mpc::erased::{KeygenOutput, Precomputed};
use custos_mpc::{MpcError, SchemeId, SessionKind, scheme, sim};
use zeroize::Zeroizing;

fn block_on<T>(f: impl Future<Output = T>) -> T {
    futures::executor::block_on(f)
}

fn keygen(id: SchemeId, t: u16, n: u16) -> Vec<KeygenOutput> {
    let s = scheme(id);
    let aux = s.needs_aux_info().then(|| {
        custos_mpc::fixture::checked_in_aux(n.into())
            .unwrap()
            .iter()
            .map(|a| custos_mpc::protocol::to_secret_bytes(a).unwrap())
            .collect::<Vec<_>>()
    });
    let (ios, router) = sim::connect(n, sim::random_eid(SessionKind::Keygen), None);
    let futs = ios
        .into_iter()
        .enumerate()
        .map(|(i, io)| s.keygen(io, t, aux.as_ref().map(|a| a[i].clone())))
        .collect();
    block_on(sim::run_parties(futs, router)).unwrap()
}

fn precompute(id: SchemeId, keys: &[KeygenOutput], signers: &[u16]) -> Vec<Precomputed> {
    let s = scheme(id);
    let (ios, router) = sim::connect(
        signers.len() as u16,
        sim::random_eid(SessionKind::Presign),
        None,
    );
    let futs = ios
        .into_iter()
        .zip(signers)
        .map(|(io, k)| {
            let share = Zeroizing::new(keys[usize::from(*k)].share.to_vec());
            s.precompute(io, share, signers.to_vec())
        })
        .collect();
    block_on(sim::run_parties(futs, router)).unwrap()
}

/// Signs `message` with `signers` and combines; returns (public key, signature).
fn sign(id: SchemeId, keys: &[KeygenOutput], signers: &[u16], message: &[u8]) -> Vec<u8> {
    let s = scheme(id);
    let pool = precompute(id, keys, signers);
    assert!(pool.windows(2).all(|w| w[0].public == w[1].public));
    let partials: Vec<(u16, Vec<u8>)> = pool
        .iter()
        .zip(signers)
        .map(|(p, k)| {
            let share = &keys[usize::from(*k)].share;
            (*k, s.partial_sign(&p.secret, share, message).unwrap())
        })
        .collect();
    let refs: Vec<(u16, &[u8])> = partials.iter().map(|(k, p)| (*k, p.as_slice())).collect();
    s.combine(&keys[0].public_package, &pool[0].public, message, &refs)
        .unwrap()
}

#[test]
fn every_scheme_signs_through_the_seam_and_independent_libraries_verify() {
    // Ed25519: RFC 8032, checked by ed25519-dalek.
    let keys = keygen(SchemeId::Ed25519, 2, 3);
    assert!(
        keys.windows(2)
            .all(|w| w[0].public_package == w[1].public_package
                && w[0].public_key == w[1].public_key)
    );
    let message = b"a message of any length, signed as is";
    let sig = sign(SchemeId::Ed25519, &keys, &[2, 0], message);
    let vk =
        ed25519_dalek::VerifyingKey::from_bytes(&keys[0].public_key.clone().try_into().unwrap())
            .unwrap();
    vk.verify_strict(
        message,
        &ed25519_dalek::Signature::from_slice(&sig).unwrap(),
    )
    .expect("ed25519-dalek verifies");

    // BIP340 under the taproot output key: libsecp256k1.
    let keys = keygen(SchemeId::SchnorrSecp256k1Taproot, 2, 3);
    let digest = [0x42u8; 32];
    let sig = sign(SchemeId::SchnorrSecp256k1Taproot, &keys, &[1, 2], &digest);
    let secp = secp256k1::Secp256k1::verification_only();
    secp.verify_schnorr(
        &secp256k1::schnorr::Signature::from_byte_array(sig.try_into().unwrap()),
        &digest,
        &secp256k1::XOnlyPublicKey::from_byte_array(keys[0].public_key.clone().try_into().unwrap())
            .unwrap(),
    )
    .expect("libsecp256k1 verifies BIP340");

    // ECDSA through the same code, its stored encodings unchanged: a
    // 33-byte key as the public package, a 33-byte nonce point.
    let keys = keygen(SchemeId::EcdsaSecp256k1, 2, 3);
    assert_eq!(keys[0].public_package, keys[0].public_key);
    assert_eq!(keys[0].public_key.len(), 33);
    let sig = sign(SchemeId::EcdsaSecp256k1, &keys, &[0, 1], &digest);
    let pk = secp256k1::PublicKey::from_slice(&keys[0].public_key).unwrap();
    secp.verify_ecdsa(
        secp256k1::Message::from_digest(digest),
        &secp256k1::ecdsa::Signature::from_compact(&sig).unwrap(),
        &pk,
    )
    .expect("libsecp256k1 verifies ECDSA");
}

#[test]
fn a_bad_partial_is_named_and_messages_are_checked_per_scheme() {
    let id = SchemeId::Ed25519;
    let s = scheme(id);
    let keys = keygen(id, 2, 3);
    let signers = [0u16, 2];
    let pool = precompute(id, &keys, &signers);
    let message = b"m";
    let good = s
        .partial_sign(&pool[0].secret, &keys[0].share, message)
        .unwrap();
    let other = s
        .partial_sign(&pool[1].secret, &keys[2].share, b"another")
        .unwrap();
    // A partial over another message names its signer (keygen index 2).
    let e = s
        .combine(
            &keys[0].public_package,
            &pool[0].public,
            message,
            &[(0, &good), (2, &other)],
        )
        .unwrap_err();
    assert!(
        matches!(e, MpcError::WrongSigningPackage { party: 2 }),
        "{e}"
    );
    // A partial that does not parse names its signer too.
    let e = s
        .combine(
            &keys[0].public_package,
            &pool[0].public,
            message,
            &[(0, &good), (2, b"not json")],
        )
        .unwrap_err();
    assert!(
        matches!(e, MpcError::MalformedPartial { party: 2, .. }),
        "{e}"
    );
    // What each scheme signs.
    assert!(s.check_message(&[]).is_err());
    assert!(s.check_message(&[0; 4097]).is_err());
    assert!(s.check_message(&[0; 4096]).is_ok());
    let ecdsa = scheme(SchemeId::EcdsaSecp256k1);
    assert!(ecdsa.check_message(&[0; 31]).is_err());
    assert!(ecdsa.check_message(&[0; 32]).is_ok());
    assert!(ecdsa.needs_aux_info() && ecdsa.interactive_signing());
    assert!(!s.needs_aux_info() && !s.interactive_signing());
    // A FROST pool item and share never print their secrets.
    assert!(!format!("{:?}", pool[0]).contains(&hex::encode(&pool[0].secret[..8])));
    assert!(format!("{:?}", keys[0]).contains("<redacted>"));
}
