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

fn copy(k: &KeygenOutput) -> KeygenOutput {
    KeygenOutput {
        share: k.share.clone(),
        public_key: k.public_key.clone(),
        public_package: k.public_package.clone(),
    }
}

/// Refresh through the seam among every holder (keygen order).
fn refresh(id: SchemeId, keys: &[KeygenOutput]) -> Vec<KeygenOutput> {
    let s = scheme(id);
    let n = keys.len() as u16;
    let (ios, router) = sim::connect(n, sim::random_eid(SessionKind::Refresh), None);
    let futs = ios
        .into_iter()
        .zip(keys)
        .map(|(io, k)| s.refresh(io, k.share.clone(), (0..n).collect()))
        .collect();
    block_on(sim::run_parties(futs, router)).unwrap()
}

/// Repair of `lost` by `helpers` through the seam, against `public_package`.
fn repair(
    id: SchemeId,
    keys: &[KeygenOutput],
    helpers: &[u16],
    lost: u16,
    public_package: &[u8],
) -> Result<KeygenOutput, MpcError> {
    let s = scheme(id);
    let (ios, router) = sim::connect(
        helpers.len() as u16 + 1,
        sim::random_eid(SessionKind::Repair),
        None,
    );
    let futs = ios
        .into_iter()
        .enumerate()
        .map(|(pos, io)| match helpers.get(pos) {
            Some(k) => {
                let help = s.repair_help(
                    io,
                    keys[usize::from(*k)].share.clone(),
                    helpers.to_vec(),
                    lost,
                );
                Box::pin(async move { help.await.map(|()| None) })
                    as std::pin::Pin<
                        Box<dyn Future<Output = Result<Option<KeygenOutput>, MpcError>>>,
                    >
            }
            None => {
                let rec = s.repair_recover(io, public_package.to_vec(), helpers.to_vec(), lost);
                Box::pin(async move { rec.await.map(Some) })
            }
        })
        .collect();
    let out = block_on(sim::run_parties(futs, router))?;
    Ok(out.into_iter().flatten().next().unwrap())
}

#[test]
fn refresh_through_the_seam_keeps_the_key_and_an_old_share_with_a_new_one_fails() {
    for id in [SchemeId::Ed25519, SchemeId::SchnorrSecp256k1Taproot] {
        let s = scheme(id);
        s.check_refreshable().unwrap();
        let old = keygen(id, 2, 3);
        let message = b"before and after a refresh";
        let before = sign(id, &old, &[0, 1], message);
        let new = refresh(id, &old);
        for (o, n) in old.iter().zip(&new) {
            assert_eq!(n.public_key, o.public_key, "{id}: the public key stays");
            assert_ne!(
                n.public_package, o.public_package,
                "{id}: verifying shares change"
            );
            assert_ne!(*n.share, *o.share, "{id}: shares change");
            assert_eq!(s.share_public_package(&n.share).unwrap(), n.public_package);
        }
        assert!(
            new.windows(2)
                .all(|w| w[0].public_package == w[1].public_package)
        );
        // New shares sign under the same key, verified independently.
        let after = sign(id, &new, &[2, 0], message);
        for sig in [&before, &after] {
            independent_verify(id, &new[0].public_key, message, sig);
        }
        // An old share signing with a new one: no signature, the old share's
        // signer is named, whichever package the combiner holds.
        let mixed = vec![copy(&old[0]), copy(&new[1]), copy(&new[2])];
        let pool = precompute(id, &mixed, &[0, 1]);
        let partials: Vec<Vec<u8>> = pool
            .iter()
            .zip([0usize, 1])
            .map(|(p, k)| s.partial_sign(&p.secret, &mixed[k].share, message).unwrap())
            .collect();
        let refs = [(0u16, partials[0].as_slice()), (1, partials[1].as_slice())];
        let e = s
            .combine(&new[0].public_package, &pool[0].public, message, &refs)
            .unwrap_err();
        assert!(
            matches!(&e, MpcError::InvalidSignatureShare { parties } if parties == &[0]),
            "{id}: {e}"
        );
        let e = s
            .combine(&old[0].public_package, &pool[0].public, message, &refs)
            .unwrap_err();
        assert!(
            matches!(&e, MpcError::InvalidSignatureShare { parties } if parties == &[1]),
            "{id}: {e}"
        );
    }
}

#[test]
fn repair_through_the_seam_rebuilds_the_lost_share_exactly() {
    for id in [SchemeId::Ed25519, SchemeId::SchnorrSecp256k1Taproot] {
        let keys = keygen(id, 2, 3);
        let repaired = repair(id, &keys, &[2, 0], 1, &keys[0].public_package).unwrap();
        assert_eq!(
            *repaired.share, *keys[1].share,
            "{id}: the lost share comes back"
        );
        assert_eq!(repaired.public_package, keys[1].public_package);
        let mut with = vec![copy(&keys[0]), repaired, copy(&keys[2])];
        let message = b"signed with a repaired share";
        let sig = sign(id, &with, &[1, 2], message);
        independent_verify(id, &keys[0].public_key, message, &sig);
        // After a refresh, repair against the new package rebuilds the new share.
        let new = refresh(id, &keys);
        let repaired = repair(id, &new, &[0, 2], 1, &new[0].public_package).unwrap();
        assert_eq!(*repaired.share, *new[1].share);
        with[1] = repaired;
        // Repairing against a package the helpers' shares do not belong to
        // (the pre-refresh one) fails the verifying-share check.
        let e = repair(id, &new, &[0, 2], 1, &keys[0].public_package).unwrap_err();
        assert!(e.to_string().contains("does not match"), "{id}: {e}");
        // Too few helpers.
        let e = repair(id, &new, &[0], 1, &new[0].public_package).unwrap_err();
        assert!(matches!(e, MpcError::InvalidInput(_)), "{id}: {e}");
    }
}

#[test]
fn ecdsa_refuses_refresh_and_repair_with_a_typed_error() {
    let s = scheme(SchemeId::EcdsaSecp256k1);
    let e = s.check_refreshable().unwrap_err();
    assert!(
        matches!(
            e,
            MpcError::Unsupported {
                scheme: SchemeId::EcdsaSecp256k1,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("ecdsa-secp256k1"), "{e}");
    let (mut ios, _router) = sim::connect(2, sim::random_eid(SessionKind::Refresh), None);
    let io = ios.remove(0);
    let e = block_on(s.refresh(io, Zeroizing::new(b"{}".to_vec()), vec![0, 1])).unwrap_err();
    assert!(matches!(e, MpcError::Unsupported { .. }), "{e}");
    let io = ios.remove(0);
    let e = block_on(s.repair_recover(io, vec![2; 33], vec![0], 1)).unwrap_err();
    assert!(matches!(e, MpcError::Unsupported { .. }), "{e}");
}

/// BIP340 (libsecp256k1) or RFC 8032 (ed25519-dalek), sharing no code with FROST.
fn independent_verify(id: SchemeId, key: &[u8], message: &[u8], sig: &[u8]) {
    match id {
        SchemeId::Ed25519 => {
            let vk = ed25519_dalek::VerifyingKey::from_bytes(&key.try_into().unwrap()).unwrap();
            vk.verify_strict(message, &ed25519_dalek::Signature::from_slice(sig).unwrap())
                .expect("ed25519-dalek verifies");
        }
        _ => {
            let secp = secp256k1::Secp256k1::verification_only();
            secp.verify_schnorr(
                &secp256k1::schnorr::Signature::from_byte_array(sig.try_into().unwrap()),
                message,
                &secp256k1::XOnlyPublicKey::from_byte_array(key.try_into().unwrap()).unwrap(),
            )
            .expect("libsecp256k1 verifies BIP340");
        }
    }
}
