//! FROST in the in-process simulation: DKG and signing over (t, n) for
//! BIP340/taproot and Ed25519, signatures checked by independent verifiers
//! (libsecp256k1, ed25519-dalek), culprits named for bad shares, pool items
//! that are used once and print no secret, refresh and repair.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use custos_mpc::MpcError;
use custos_mpc::frost::{
    self, Ed25519, FrostEd25519, FrostKeyShare, FrostPublicKey, FrostSuite, FrostTaproot,
    Secp256k1Tr,
};
use custos_mpc::scheme::{SchemeId, SignatureScheme};
use custos_mpc::sim::{self, Tamper};
use custos_mpc::wire::Frame;
use proptest::prelude::*;

fn block_on<T>(f: impl Future<Output = T>) -> T {
    futures::executor::block_on(f)
}

fn keygen<C: FrostSuite>(t: u16, n: u16) -> Vec<FrostKeyShare<C>> {
    block_on(sim::keygen_with::<frost::Frost<C>>(
        t,
        vec![(); usize::from(n)],
        None,
    ))
    .unwrap()
}

/// BIP340 verification by libsecp256k1 under the x-only group key.
fn verify_bip340(key: &[u8], message: &[u8], sig: &[u8]) {
    let secp = secp256k1::Secp256k1::verification_only();
    let pk = secp256k1::XOnlyPublicKey::from_byte_array(key.try_into().unwrap()).unwrap();
    let sig = secp256k1::schnorr::Signature::from_byte_array(sig.try_into().unwrap());
    secp.verify_schnorr(&sig, message, &pk)
        .expect("libsecp256k1 verifies the BIP340 signature");
}

/// RFC 8032 verification by ed25519-dalek (strict: canonical encodings, no small order).
fn verify_ed25519(key: &[u8], message: &[u8], sig: &[u8]) {
    let vk = ed25519_dalek::VerifyingKey::from_bytes(key.try_into().unwrap()).unwrap();
    let sig = ed25519_dalek::Signature::from_bytes(sig.try_into().unwrap());
    vk.verify_strict(message, &sig)
        .expect("ed25519-dalek verifies the signature");
}

fn independent_verify(scheme: SchemeId, key: &[u8], message: &[u8], sig: &[u8]) {
    match scheme {
        SchemeId::SchnorrSecp256k1Taproot => verify_bip340(key, message, sig),
        SchemeId::Ed25519 => verify_ed25519(key, message, sig),
        other => panic!("not a FROST scheme: {other}"),
    }
}

/// The whole path through the seam, checked by an independent verifier.
fn sign_and_check<S: SignatureScheme>(shares: &[S::KeyShare], signers: &[u16], message: &[u8]) {
    let sig = block_on(sim::sign_with::<S>(shares, signers, message)).unwrap();
    let key = S::public_key(&shares[0]);
    S::verify(&key, message, &sig).unwrap();
    independent_verify(
        S::ID,
        &S::public_key_bytes(&key),
        message,
        &S::signature_bytes(&sig),
    );
    // A signature does not verify over another message.
    let mut other = message.to_vec();
    other[0] ^= 1;
    assert!(matches!(
        S::verify(&key, &other, &sig),
        Err(MpcError::InvalidSignature)
    ));
}

fn keygen_and_sign_matrix<C: FrostSuite>() {
    for (t, n, signer_sets) in [
        (2u16, 3u16, vec![vec![0u16, 1], vec![2, 0], vec![0, 1, 2]]),
        (
            3,
            5,
            vec![vec![0, 1, 2], vec![4, 1, 3], vec![0, 1, 2, 3, 4]],
        ),
    ] {
        let shares = keygen::<C>(t, n);
        let key = shares[0].public().clone();
        for s in &shares {
            assert_eq!(s.public(), &key, "every party holds the same public key");
        }
        for signers in signer_sets {
            sign_and_check::<frost::Frost<C>>(&shares, &signers, &[0x5a; 32]);
        }
        // Fewer than t signers cannot even start.
        let e = block_on(sim::precompute_with::<frost::Frost<C>>(
            &shares,
            &signers_below(t),
            None,
        ))
        .unwrap_err();
        assert!(matches!(e, MpcError::InvalidInput(_)), "{e}");
    }
}

fn signers_below(t: u16) -> Vec<u16> {
    (0..t - 1).collect()
}

#[test]
fn frost_schemes_are_named() {
    assert_eq!(FrostTaproot::ID, SchemeId::SchnorrSecp256k1Taproot);
    assert_eq!(FrostTaproot::ID.curve(), "secp256k1");
    assert_eq!(FrostEd25519::ID.name(), "ed25519");
    assert_eq!(FrostEd25519::ID.protocol(), "frost");
}

#[test]
fn taproot_two_of_three_and_three_of_five_verify_under_libsecp256k1() {
    keygen_and_sign_matrix::<Secp256k1Tr>();
}

#[test]
fn ed25519_two_of_three_and_three_of_five_verify_under_ed25519_dalek() {
    keygen_and_sign_matrix::<Ed25519>();
}

/// A partial whose share was replaced (a signer sending garbage, or the
/// network rewriting it) fails the combine naming that signer.
fn tampered_share_names_its_sender<C: FrostSuite>() {
    let shares = keygen::<C>(3, 5);
    let signers = [4u16, 0, 2];
    let message = b"withdrawal 42";
    let presigs = block_on(sim::precompute_with::<frost::Frost<C>>(
        &shares, &signers, None,
    ))
    .unwrap();
    let public = frost::presignature_public(&presigs[0]);
    let mut partials: Vec<_> = presigs
        .into_iter()
        .zip(signers)
        .map(|(p, k)| frost::partial_sign(p, &shares[usize::from(k)], message).unwrap())
        .collect();
    let key = shares[0].public();
    let good = frost::combine(key, &public, message, &partials).unwrap();
    frost::verify(key, message, &good).unwrap();

    // Signer 0's share replaced by signer 2's.
    let bad_share = partials[2].share;
    partials[1].share = bad_share;
    match frost::combine(key, &public, message, &partials) {
        Err(MpcError::InvalidSignatureShare { parties }) => assert_eq!(parties, vec![0]),
        other => panic!("expected signer 0 named, got {other:?}"),
    }
    // Two bad shares: both named.
    partials[0].share = bad_share;
    match frost::combine(key, &public, message, &partials) {
        Err(MpcError::InvalidSignatureShare { mut parties }) => {
            parties.sort();
            assert_eq!(parties, vec![0, 4]);
        }
        other => panic!("expected signers 0 and 4 named, got {other:?}"),
    }
    // A partial over another message is told apart from a bad share.
    let presigs = block_on(sim::precompute_with::<frost::Frost<C>>(
        &shares, &signers, None,
    ))
    .unwrap();
    let public = frost::presignature_public(&presigs[0]);
    let partials: Vec<_> = presigs
        .into_iter()
        .zip(signers)
        .map(|(p, k)| {
            let m: &[u8] = if k == 2 { b"other" } else { message };
            frost::partial_sign(p, &shares[usize::from(k)], m).unwrap()
        })
        .collect();
    let e = frost::combine(key, &public, message, &partials).unwrap_err();
    assert!(
        matches!(e, MpcError::WrongSigningPackage { party: 2 }),
        "{e}"
    );
    // Missing and foreign partials.
    let e = frost::combine(key, &public, message, &partials[..2]).unwrap_err();
    assert!(e.to_string().contains("2 partials for 3 signers"), "{e}");
}

#[test]
fn a_tampered_signature_share_names_its_sender_taproot() {
    tampered_share_names_its_sender::<Secp256k1Tr>();
}

#[test]
fn a_tampered_signature_share_names_its_sender_ed25519() {
    tampered_share_names_its_sender::<Ed25519>();
}

/// Rewrites the JSON payload of frames `from → to` with `edit`.
fn rewrite(from: u16, to: u16, edit: fn(&mut serde_json::Value)) -> Tamper {
    Arc::new(move |f, t, bytes: &mut Vec<u8>| {
        if f != from || t != to {
            return;
        }
        let mut frame = Frame::decode(bytes).unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&frame.payload).unwrap();
        edit(&mut v);
        frame.payload = serde_json::to_vec(&v).unwrap();
        *bytes = frame.encode();
    })
}

/// Another scalar: the first byte of its hex encoding changed.
fn alter(hex: &str) -> String {
    let b = u8::from_str_radix(&hex[..2], 16).unwrap();
    format!("{:02x}{}", b ^ 0x01, &hex[2..])
}

fn culprit(e: MpcError) -> u16 {
    match e {
        MpcError::PeerMisbehaved { party, .. } => party,
        other => panic!("expected a named culprit, got {other:?}"),
    }
}

/// A DKG secret share (round 2) or proof of knowledge (round 1) altered in
/// flight aborts the DKG naming the sender.
fn bad_dkg_messages_name_the_sender<C: FrostSuite>() {
    fn other_share(v: &mut serde_json::Value) {
        if let Some(s) = v.pointer_mut("/Round2/package/signing_share") {
            *s = serde_json::Value::String(alter(s.as_str().unwrap()));
        }
    }
    fn other_proof(v: &mut serde_json::Value) {
        if let Some(s) = v.pointer_mut("/Round1/proof_of_knowledge") {
            let hex = s.as_str().unwrap().to_owned();
            let (r, z) = hex.split_at(hex.len() - 64);
            *s = serde_json::Value::String(format!("{r}{}", alter(z)));
        }
    }
    let e = block_on(sim::keygen_with::<frost::Frost<C>>(
        2,
        vec![(); 3],
        Some(rewrite(2, 0, other_share)),
    ))
    .unwrap_err();
    assert_eq!(culprit(e), 2);
    let e = block_on(sim::keygen_with::<frost::Frost<C>>(
        2,
        vec![(); 3],
        Some(rewrite(1, 2, other_proof)),
    ))
    .unwrap_err();
    assert_eq!(culprit(e), 1);
    // A frame that claims another sender.
    let spoof: Tamper = Arc::new(|f, t, bytes: &mut Vec<u8>| {
        if f == 1 && t == 0 {
            let mut frame = Frame::decode(bytes).unwrap();
            frame.sender = 2;
            *bytes = frame.encode();
        }
    });
    let e = block_on(sim::keygen_with::<frost::Frost<C>>(
        2,
        vec![(); 3],
        Some(spoof),
    ))
    .unwrap_err();
    assert_eq!(culprit(e), 1);
}

#[test]
fn bad_dkg_messages_name_the_sender_taproot() {
    bad_dkg_messages_name_the_sender::<Secp256k1Tr>();
}

#[test]
fn bad_dkg_messages_name_the_sender_ed25519() {
    bad_dkg_messages_name_the_sender::<Ed25519>();
}

#[test]
fn pool_items_and_shares_print_no_secret() {
    let shares = keygen::<Secp256k1Tr>(2, 3);
    let presigs = block_on(sim::precompute_with::<FrostTaproot>(&shares, &[0, 1], None)).unwrap();
    let pre = &presigs[0];
    let stored =
        String::from_utf8(custos_mpc::protocol::to_secret_bytes(pre).unwrap().to_vec()).unwrap();
    let v: serde_json::Value = serde_json::from_str(&stored).unwrap();
    let hiding = v.pointer("/nonces/hiding").unwrap().as_str().unwrap();
    let debug = format!("{pre:?}");
    assert!(debug.contains("<redacted>"), "{debug}");
    assert!(!debug.contains(hiding), "{debug}");

    let share = &shares[0];
    let stored = String::from_utf8(
        custos_mpc::protocol::to_secret_bytes(share)
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&stored).unwrap();
    let secret = v
        .pointer("/key_package/signing_share")
        .unwrap()
        .as_str()
        .unwrap();
    let debug = format!("{share:?}");
    assert!(
        debug.contains("<redacted>") && !debug.contains(secret),
        "{debug}"
    );
    // A stored share and pool item load back and still sign.
    let share: FrostKeyShare<Secp256k1Tr> = custos_mpc::protocol::from_secret_bytes(
        &custos_mpc::protocol::to_secret_bytes(share).unwrap(),
    )
    .unwrap();
    let mut it = presigs.into_iter();
    let pre0 = it.next().unwrap();
    let public = frost::presignature_public(&pre0);
    let pre0: frost::FrostPresignature<Secp256k1Tr> = custos_mpc::protocol::from_secret_bytes(
        &custos_mpc::protocol::to_secret_bytes(&pre0).unwrap(),
    )
    .unwrap();
    let partials = vec![
        frost::partial_sign(pre0, &share, b"m").unwrap(),
        frost::partial_sign(it.next().unwrap(), &shares[1], b"m").unwrap(),
    ];
    frost::combine(share.public(), &public, b"m", &partials).unwrap();
}

/// A pool item belongs to its own signer.
#[test]
fn a_pool_item_signs_only_with_its_own_share() {
    let shares = keygen::<Ed25519>(2, 3);
    let presigs = block_on(sim::precompute_with::<FrostEd25519>(&shares, &[0, 1], None)).unwrap();
    let pre = presigs.into_iter().next().unwrap();
    let e = frost::partial_sign(pre, &shares[1], b"m").unwrap_err();
    assert!(e.to_string().contains("presignature of party 0"), "{e}");
}

fn refresh_keeps_the_key_and_old_shares_do_not_mix<C: FrostSuite>() {
    let old = keygen::<C>(2, 3);
    let key_before = old[0].public().clone();
    let new = block_on(sim::frost_refresh(&old, &[0, 1, 2], None)).unwrap();
    for s in &new {
        assert_eq!(s.public().verifying_key(), key_before.verifying_key());
        assert_eq!(s.public().dkg_key, key_before.dkg_key);
        assert_ne!(
            s.public().package.verifying_shares(),
            key_before.package.verifying_shares(),
            "verifying shares change"
        );
    }
    sign_and_check::<frost::Frost<C>>(&new, &[1, 2], b"after refresh");
    // An old share and a new share: the old signer is named, whichever
    // public package the combiner holds.
    let mixed = [
        keygen_index_share(&old, 0),
        keygen_index_share(&new, 1),
        keygen_index_share(&new, 2),
    ];
    let presigs = block_on(sim::precompute_with::<frost::Frost<C>>(
        &mixed,
        &[0, 1],
        None,
    ))
    .unwrap();
    let public = frost::presignature_public(&presigs[0]);
    let partials: Vec<_> = presigs
        .into_iter()
        .zip([0usize, 1])
        .map(|(p, k)| frost::partial_sign(p, &mixed[k], b"mix").unwrap())
        .collect();
    match frost::combine(new[0].public(), &public, b"mix", &partials) {
        Err(MpcError::InvalidSignatureShare { parties }) => assert_eq!(parties, vec![0]),
        other => panic!("old share must not combine with new ones: {other:?}"),
    }
    match frost::combine(&key_before, &public, b"mix", &partials) {
        Err(MpcError::InvalidSignatureShare { parties }) => assert_eq!(parties, vec![1]),
        other => panic!("new share must not combine under the old package: {other:?}"),
    }
}

/// A copy of party `k`'s share through its stored form (shares are not `Clone`).
fn keygen_index_share<C: FrostSuite>(shares: &[FrostKeyShare<C>], k: usize) -> FrostKeyShare<C> {
    custos_mpc::protocol::from_secret_bytes(
        &custos_mpc::protocol::to_secret_bytes(&shares[k]).unwrap(),
    )
    .unwrap()
}

#[test]
fn refresh_keeps_the_key_and_old_shares_do_not_mix_taproot() {
    refresh_keeps_the_key_and_old_shares_do_not_mix::<Secp256k1Tr>();
}

#[test]
fn refresh_keeps_the_key_and_old_shares_do_not_mix_ed25519() {
    refresh_keeps_the_key_and_old_shares_do_not_mix::<Ed25519>();
}

fn repair_rebuilds_a_lost_share<C: FrostSuite>() {
    let shares = keygen::<C>(3, 5);
    let public: FrostPublicKey<C> = shares[0].public().clone();
    let lost = 3u16;
    let repaired = block_on(sim::frost_repair(&shares, &[0, 4, 1], lost, &public, None)).unwrap();
    assert_eq!(repaired.index(), lost);
    assert_eq!(repaired.public(), &public);
    // The repaired party signs with two others.
    let mut with_repaired: Vec<FrostKeyShare<C>> =
        (0..5).map(|k| keygen_index_share(&shares, k)).collect();
    with_repaired[3] = repaired;
    sign_and_check::<frost::Frost<C>>(&with_repaired, &[3, 2, 0], b"after repair");
    // Too few helpers cannot repair.
    let e = block_on(sim::frost_repair(&shares, &[0, 1], lost, &public, None)).unwrap_err();
    assert!(matches!(e, MpcError::InvalidInput(_)), "{e}");
    // A helper's altered sigma is caught against the verifying share.
    fn bump(v: &mut serde_json::Value) {
        if let Some(s) = v.pointer_mut("/Sigma") {
            *s = serde_json::Value::String(alter(s.as_str().unwrap()));
        }
    }
    let e = block_on(sim::frost_repair(
        &shares,
        &[0, 4, 1],
        lost,
        &public,
        Some(rewrite(1, 3, bump)),
    ))
    .unwrap_err();
    assert!(e.to_string().contains("does not match"), "{e}");
}

#[test]
fn repair_rebuilds_a_lost_share_taproot() {
    repair_rebuilds_a_lost_share::<Secp256k1Tr>();
}

#[test]
fn repair_rebuilds_a_lost_share_ed25519() {
    repair_rebuilds_a_lost_share::<Ed25519>();
}

/// The taproot group key is BIP341's tweak of the DKG's joint key with an
/// empty script tree, as libsecp256k1 computes it.
#[test]
fn taproot_group_key_is_the_bip86_tweak_of_the_dkg_key() {
    use sha2::{Digest, Sha256};
    for _ in 0..4 {
        let shares = keygen::<Secp256k1Tr>(2, 3);
        let public = shares[0].public();
        let internal: [u8; 32] = public.dkg_key_bytes().try_into().unwrap();
        let secp = secp256k1::Secp256k1::new();
        let p = secp256k1::XOnlyPublicKey::from_byte_array(internal).unwrap();
        let tag = Sha256::digest(b"TapTweak");
        let t: [u8; 32] = Sha256::new()
            .chain_update(tag)
            .chain_update(tag)
            .chain_update(internal)
            .finalize()
            .into();
        let scalar = secp256k1::Scalar::from_be_bytes(t).unwrap();
        let (q, _parity) = p.add_tweak(&secp, &scalar).unwrap();
        assert_eq!(q.serialize().to_vec(), public.key_bytes());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Whatever the message, both schemes' signatures verify independently.
    #[test]
    fn any_message_signs_and_verifies(message in proptest::collection::vec(any::<u8>(), 1..200)) {
        thread_local! {
            static KEYS: (Vec<FrostKeyShare<Secp256k1Tr>>, Vec<FrostKeyShare<Ed25519>>) =
                (keygen(2, 3), keygen(2, 3));
        }
        KEYS.with(|(tr, ed)| {
            sign_and_check::<FrostTaproot>(tr, &[2, 1], &message);
            sign_and_check::<FrostEd25519>(ed, &[0, 2], &message);
        });
    }
}
