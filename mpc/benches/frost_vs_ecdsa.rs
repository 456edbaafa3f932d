//! FROST (BIP340/taproot, Ed25519) against cggmp21 ECDSA, in process, through
//! the signature-scheme seam, for 2-of-3 and 3-of-5.
//!
//! `cargo bench -p custos-mpc --bench frost_vs_ecdsa -- [--signatures N]`
//!
//! Per scheme: key generation (ECDSA over the checked-in aux info, so
//! without the Paillier ceremony), the precomputation that fills the pool
//! (ECDSA presignature; FROST nonce commitments), and online signing: every
//! signer's partial from its pool item plus the verified combine. Prints
//! p50/p99 in milliseconds and the FROST/ECDSA ratios.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::{Duration, Instant};

use custos_mpc::frost::{FrostEd25519, FrostTaproot};
use custos_mpc::scheme::{Cggmp21Ecdsa, SignatureScheme};
use custos_mpc::{AuxInfo, sim};
use rand_core::{OsRng, RngCore};

fn block<T>(f: impl Future<Output = T>) -> T {
    futures::executor::block_on(f)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

struct Figures {
    keygen_p50: f64,
    precompute_p50: f64,
    online_p50: f64,
    online_p99: f64,
}

fn measure<S: SignatureScheme>(
    t: u16,
    setups: impl Fn() -> Vec<S::KeygenSetup>,
    signatures: usize,
) -> Figures {
    let mut keygen = Vec::new();
    let mut shares = None;
    for _ in 0..5 {
        let setups = setups();
        let s = Instant::now();
        shares = Some(block(sim::keygen_with::<S>(t, setups, None)).unwrap());
        keygen.push(ms(s.elapsed()));
    }
    let shares = shares.unwrap();
    let signers: Vec<u16> = (0..t).collect();
    let key = S::public_key(&shares[0]);

    let mut precompute = Vec::new();
    let mut online = Vec::new();
    for _ in 0..signatures {
        let s = Instant::now();
        let pool = block(sim::precompute_with::<S>(&shares, &signers, None)).unwrap();
        precompute.push(ms(s.elapsed()));
        let public = S::presignature_public(&pool[0]);
        let mut message = [0u8; 32];
        OsRng.fill_bytes(&mut message);

        let s = Instant::now();
        let partials: Vec<_> = pool
            .into_iter()
            .zip(&signers)
            .map(|(p, k)| S::partial_sign(p, &shares[usize::from(*k)], &message).unwrap())
            .collect();
        let sig = S::combine(&key, &public, &message, &partials).unwrap();
        online.push(ms(s.elapsed()));
        std::hint::black_box(sig);
    }
    Figures {
        keygen_p50: pct(&keygen, 0.5),
        precompute_p50: pct(&precompute, 0.5),
        online_p50: pct(&online, 0.5),
        online_p99: pct(&online, 0.99),
    }
}

fn fixture_aux(n: u16) -> Vec<AuxInfo> {
    custos_mpc::fixture::checked_in_aux(n.into()).unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let signatures = args
        .iter()
        .position(|a| a == "--signatures")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(20usize);
    println!("in process, {signatures} signatures per row, times in ms");
    println!(
        "{:<28} {:>7} {:>10} {:>12} {:>11} {:>11}",
        "scheme", "t-of-n", "keygen p50", "precomp p50", "online p50", "online p99"
    );
    for (t, n) in [(2u16, 3u16), (3, 5)] {
        let row = |name: &str, f: &Figures| {
            println!(
                "{:<28} {:>7} {:>10.2} {:>12.2} {:>11.3} {:>11.3}",
                name,
                format!("{t}-of-{n}"),
                f.keygen_p50,
                f.precompute_p50,
                f.online_p50,
                f.online_p99
            );
        };
        let aux = fixture_aux(n);
        let ecdsa = measure::<Cggmp21Ecdsa>(t, || aux.clone(), signatures);
        row("ecdsa-secp256k1 (cggmp21)", &ecdsa);
        let tr = measure::<FrostTaproot>(t, || vec![(); usize::from(n)], signatures);
        row("schnorr-secp256k1-taproot", &tr);
        let ed = measure::<FrostEd25519>(t, || vec![(); usize::from(n)], signatures);
        row("ed25519 (frost)", &ed);
        for (name, f) in [("taproot", &tr), ("ed25519", &ed)] {
            println!(
                "  {t}-of-{n} FROST {name} / ECDSA: online p50 {:.3}x, precompute+online p50 {:.4}x",
                f.online_p50 / ecdsa.online_p50,
                (f.precompute_p50 + f.online_p50) / (ecdsa.precompute_p50 + ecdsa.online_p50)
            );
        }
    }
}
