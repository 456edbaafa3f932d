//! Protocol tests in the in-process simulation: correctness over (t, n) and
//! the adversarial cases of docs/SECURITY.md that this layer can show.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use custos_mpc::protocol::{self, combine, issue_partial, public_key};
use custos_mpc::sim::{self, Tamper};
use custos_mpc::wire::Frame;
use custos_mpc::{AuxInfo, KeyShare, MpcError, Primes};
use rand_core::{OsRng, RngCore};

fn fixture_primes() -> Vec<Primes> {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/test-primes.json"
    ))
    .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn block_on<T>(f: impl Future<Output = T>) -> T {
    futures::executor::block_on(f)
}

/// Verifies with two independent implementations: RustCrypto k256 and libsecp256k1.
fn verify_independently(pk: &[u8; 33], digest: &[u8; 32], sig: &custos_mpc::Signature) {
    use k256::ecdsa::signature::hazmat::PrehashVerifier;
    let vk = k256::ecdsa::VerifyingKey::from_sec1_bytes(pk).unwrap();
    let ksig = k256::ecdsa::Signature::from_slice(&sig.to_bytes()).unwrap();
    vk.verify_prehash(digest, &ksig).expect("k256 verifies");

    let secp = secp256k1::Secp256k1::verification_only();
    let spk = secp256k1::PublicKey::from_slice(pk).unwrap();
    let ssig = secp256k1::ecdsa::Signature::from_compact(&sig.to_bytes()).unwrap();
    let msg = secp256k1::Message::from_digest(*digest);
    secp.verify_ecdsa(msg, &ssig, &spk)
        .expect("libsecp256k1 verifies (low-s)");
}

fn random_digest() -> [u8; 32] {
    let mut d = [0u8; 32];
    OsRng.fill_bytes(&mut d);
    d
}

/// Aux info from a real ceremony over the test primes.
fn aux(n: usize) -> Vec<AuxInfo> {
    let primes = fixture_primes().into_iter().take(n).collect();
    block_on(sim::aux_info(primes, None)).unwrap()
}

/// The checked-in aux info that a ceremony over the test primes made
/// (`tests/aux_fixture.rs`), for tests whose subject is not the ceremony.
fn fixture_aux(n: usize) -> Vec<AuxInfo> {
    custos_mpc::fixture::checked_in_aux(n).unwrap()
}

fn presign_and_sign(shares: &[KeyShare], signers: &[u16]) {
    let pk = public_key(&shares[0]);
    let presigs = block_on(sim::presign(shares, signers, None)).unwrap();
    let digest = random_digest();
    let partials: Vec<_> = presigs
        .into_iter()
        .map(|p| issue_partial(p, &digest))
        .collect();
    let sig = combine(&partials, &pk, &digest).unwrap();
    verify_independently(&pk, &digest, &sig);
}

#[test]
fn two_of_three_presign_and_interactive_signing() {
    let aux = aux(3);
    let shares = block_on(sim::keygen(2, &aux)).unwrap();
    let pk = public_key(&shares[0]);
    assert!(
        shares.iter().all(|s| public_key(s) == pk),
        "all parties agree on the public key"
    );
    for signers in [[0u16, 1], [1, 2], [2, 0]] {
        presign_and_sign(&shares, &signers);
    }
    let digest = random_digest();
    let sig = block_on(sim::sign(&shares, &[0, 2], &digest, None)).unwrap();
    verify_independently(&pk, &digest, &sig);

    // The same aux info serves a second key: keygen is the only per-key cost.
    let second = block_on(sim::keygen(2, &aux)).unwrap();
    assert_ne!(public_key(&second[0]), pk);
    presign_and_sign(&second, &[0, 1]);

    // A corrupted partial signature makes the combined signature fail verification.
    let presigs = block_on(sim::presign(&shares, &[0, 1], None)).unwrap();
    let digest = random_digest();
    let mut partials: Vec<_> = presigs
        .into_iter()
        .map(|p| issue_partial(p, &digest))
        .collect();
    partials[1].sigma += cggmp21::generic_ec::Scalar::one();
    assert!(matches!(
        combine(&partials, &pk, &digest),
        Err(MpcError::InvalidSignature)
    ));
    // Too few partials is not a signature either.
    assert!(combine(&partials[..1], &pk, &digest).is_err());
}

#[test]
fn three_of_five_keygen_and_signing() {
    // The 5-party ceremony itself runs for real in custos-tests::cluster.
    let aux = fixture_aux(5);
    let shares = block_on(sim::keygen(3, &aux)).unwrap();
    let pk = public_key(&shares[0]);
    presign_and_sign(&shares, &[4, 0, 2]);
    let digest = random_digest();
    let sig = block_on(sim::sign(&shares, &[1, 3, 4], &digest, None)).unwrap();
    verify_independently(&pk, &digest, &sig);
    // Two signers are not enough for a 3-of-5 key.
    assert!(matches!(
        block_on(sim::presign(&shares, &[0, 1], None)),
        Err(MpcError::InvalidInput(_))
    ));
}

/// Records every frame of a session, to replay later.
type FrameLog = Arc<Mutex<Vec<(u16, u16, Vec<u8>)>>>;

fn recorder() -> (Tamper, FrameLog) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    (
        Arc::new(move |from, to, bytes: &mut Vec<u8>| {
            l.lock().unwrap().push((from, to, bytes.clone()))
        }),
        log,
    )
}

fn culprit(err: MpcError) -> (u16, String) {
    match err {
        MpcError::PeerMisbehaved { party, reason } => (party, reason),
        other => panic!("expected a named culprit, got {other:?}"),
    }
}

#[test]
fn adversarial_frames_abort_and_name_the_peer() {
    let aux = fixture_aux(3);
    let shares = block_on(sim::keygen(2, &aux)).unwrap();

    // A message from another session replayed into this one (case 2).
    let (rec, log) = recorder();
    block_on(sim::presign(&shares, &[0, 1], Some(rec))).unwrap();
    let old = log.lock().unwrap().clone();
    let replay: Tamper = Arc::new(move |from, _to, bytes: &mut Vec<u8>| {
        if from == 1 {
            *bytes = old.iter().find(|(f, _, _)| *f == 1).unwrap().2.clone();
        }
    });
    let (party, reason) =
        culprit(block_on(sim::presign(&shares, &[0, 1], Some(replay))).err_only());
    assert_eq!(party, 1);
    assert!(reason.contains("another session"), "{reason}");

    // The same replay re-wrapped under this session's id: the crate's proofs,
    // bound to the execution id, reject it (case 2/3).
    let (rec, log) = recorder();
    block_on(sim::presign(&shares, &[0, 1], Some(rec))).unwrap();
    let old = log.lock().unwrap().clone();
    let counter = Arc::new(Mutex::new(0usize));
    let rewrap: Tamper = Arc::new(move |from, _to, bytes: &mut Vec<u8>| {
        if from == 1 {
            let mut n = counter.lock().unwrap();
            let current = Frame::decode(bytes).unwrap();
            let theirs: Vec<_> = old.iter().filter(|(f, _, _)| *f == 1).collect();
            if let Some((_, _, b)) = theirs.get(*n) {
                let mut f = Frame::decode(b).unwrap();
                f.eid = current.eid;
                *bytes = f.encode();
            }
            *n += 1;
        }
    });
    let err = block_on(sim::presign(&shares, &[0, 1], Some(rewrap))).err_only();
    assert!(
        matches!(
            err,
            MpcError::PeerMisbehaved { party: 1, .. } | MpcError::Aborted(_)
        ),
        "{err:?}"
    );

    // A frame claiming to come from another party (case 3).
    let spoof: Tamper = Arc::new(|from, _to, bytes: &mut Vec<u8>| {
        if from == 0 {
            let mut f = Frame::decode(bytes).unwrap();
            f.sender = 1;
            *bytes = f.encode();
        }
    });
    let (party, reason) = culprit(block_on(sim::presign(&shares, &[0, 1], Some(spoof))).err_only());
    assert_eq!(party, 0);
    assert!(reason.contains("claims to be from party 1"), "{reason}");

    // Malformed payloads and truncated frames (case 6).
    let garble: Tamper = Arc::new(|from, _to, bytes: &mut Vec<u8>| {
        if from == 1 {
            let mut f = Frame::decode(bytes).unwrap();
            f.payload = b"{\"not\": \"a round message\"}".to_vec();
            *bytes = f.encode();
        }
    });
    let (party, reason) =
        culprit(block_on(sim::sign(&shares, &[2, 1], &random_digest(), Some(garble))).err_only());
    assert_eq!(party, 1);
    assert!(reason.contains("malformed protocol message"), "{reason}");
    let truncate: Tamper = Arc::new(|from, _to, bytes: &mut Vec<u8>| {
        if from == 0 {
            bytes.truncate(10);
        }
    });
    let (party, reason) =
        culprit(block_on(sim::presign(&shares, &[0, 1], Some(truncate))).err_only());
    assert_eq!(party, 0);
    assert!(reason.contains("malformed frame"), "{reason}");
}

#[test]
fn equivocated_broadcast_is_caught_by_the_echo_round() {
    // Keygen needs no aux info and is fast; 3 parties so one can be lied to.
    let (rec, log) = recorder();
    let aux_free = |tamper| {
        let (ios, router) =
            sim::connect(3, sim::random_eid(custos_mpc::SessionKind::Keygen), tamper);
        let futs = ios
            .into_iter()
            .map(|io| protocol::run_keygen(io, 2))
            .collect();
        block_on(sim::run_parties(futs, router))
    };
    aux_free(Some(rec)).unwrap();
    let old = log.lock().unwrap().clone();
    // Party 0 shows party 2 a different round-1 broadcast than party 1 sees.
    let sent = Arc::new(Mutex::new(false));
    let equivocate: Tamper = Arc::new(move |from, to, bytes: &mut Vec<u8>| {
        let mut done = sent.lock().unwrap();
        if from == 0 && to == 2 && !*done {
            *done = true;
            let current = Frame::decode(bytes).unwrap();
            let (_, _, b) = old.iter().find(|(f, t, _)| *f == 0 && *t == 2).unwrap();
            let mut f = Frame::decode(b).unwrap();
            f.eid = current.eid;
            *bytes = f.encode();
        }
    });
    let err = aux_free(Some(equivocate)).err_only();
    let text = err.to_string();
    assert!(
        text.contains("reliab")
            || text.contains("decommit")
            || matches!(err, MpcError::PeerMisbehaved { .. }),
        "{text}"
    );
}

#[test]
fn a_bad_paillier_modulus_is_rejected_and_the_peer_named() {
    // Party 1 brings "primes" that are composite with a small factor: its
    // modulus then has small factors, and the Π-mod / Π-fac proofs fail (case 1).
    use cggmp21::rug::Integer;
    let mut primes = fixture_primes();
    let (_, q) = primes[1].clone().split();
    // Same bit length as a real prime, divisible by 3.
    let bits = q.significant_bits();
    let bad_p = Integer::from(3) * ((Integer::from(1) << (bits - 2)) + 1u32);
    primes[1] = Primes::new(bad_p, q).expect("size check passes: only the proofs can catch it");
    let primes: Vec<Primes> = primes.into_iter().take(3).collect();
    // With such a modulus party 1's own Π-mod prover sometimes finds no
    // residue and gives up before sending anything: that run shows nothing
    // about the other parties' checks, so it is run again (the odds of
    // several such runs in a row are small).
    let mut named = None;
    for _ in 0..6 {
        match block_on(sim::aux_info(primes.clone(), None)).err_only() {
            MpcError::Aborted(m) if m.contains("couldn't prove") => continue,
            err => {
                named = Some(culprit(err));
                break;
            }
        }
    }
    let (party, reason) = named.expect("party 1 produced a proof in one of 6 runs");
    assert_eq!(party, 1, "{reason}");

    // A modulus below the minimum size cannot even be offered.
    assert!(Primes::new(Integer::from(1000003u32), Integer::from(1000033u32)).is_none());
}

/// `unwrap_err` for results whose success type (secret) has no `Debug`.
trait ErrOnly {
    fn err_only(self) -> MpcError;
}

impl<T> ErrOnly for Result<T, MpcError> {
    fn err_only(self) -> MpcError {
        match self {
            Ok(_) => panic!("expected the session to fail"),
            Err(e) => e,
        }
    }
}
