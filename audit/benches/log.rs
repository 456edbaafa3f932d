//! `cargo bench -p custos-audit --bench log`: append throughput with
//! checkpointing, and proof generation at 10^6 entries (in-memory store).
//!
//! Plain `harness = false` timing loop: the figures we need are coarse
//! (per-second and per-proof), and this runs on a shared machine.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::Instant;

use custos_audit::entry::EntryBody;
use custos_audit::proof::{verify_consistency, verify_inclusion};
use custos_audit::{AuditError, LogSigner, SignatureAlgorithm};
use custos_audit::{Log, MemoryStore, leaf_hash};
use ed25519_dalek::{Signer, SigningKey};

struct SoftSigner(SigningKey);

impl LogSigner for SoftSigner {
    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::Ed25519
    }
    fn public_key(&self) -> Vec<u8> {
        self.0.verifying_key().to_bytes().to_vec()
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, AuditError> {
        Ok(self.0.sign(message).to_bytes().to_vec())
    }
}

fn body(i: u64) -> EntryBody {
    EntryBody::SignatureProduced {
        withdrawal_id: format!("wd-{i:012}"),
        key_id: "key-1".into(),
        execution_id: i.to_be_bytes().repeat(4),
        message_digest: leaf_hash(&i.to_be_bytes()),
        signature: vec![0x30; 64],
    }
}

/// A tiny deterministic generator (splitmix64) so runs are comparable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn main() {
    let signer = SoftSigner(SigningKey::from_bytes(&[7; 32]));
    let appends: u64 = std::env::var("AUDIT_BENCH_APPENDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let big: u64 = std::env::var("AUDIT_BENCH_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);

    for every in [100u64, 1000] {
        let mut log = Log::open(MemoryStore::new(), "bench.custos/log").unwrap();
        let t = Instant::now();
        for i in 0..appends {
            log.append(i, body(i)).unwrap();
            if (i + 1) % every == 0 {
                log.checkpoint(&signer, i).unwrap();
            }
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "append one at a time, checkpoint every {every:>4}: {appends} entries in {s:.2} s = {:.0} appends/s",
            appends as f64 / s
        );
    }

    let mut log = Log::open(MemoryStore::new(), "bench.custos/log").unwrap();
    let t = Instant::now();
    let mut i = 0;
    while i < big {
        let n = (big - i).min(10_000);
        log.append_batch((i..i + n).map(|j| (j, body(j))).collect())
            .unwrap();
        log.checkpoint(&signer, i).unwrap();
        i += n;
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "append in batches of 10000 with a checkpoint per batch: {big} entries in {s:.2} s = {:.0} appends/s",
        big as f64 / s
    );

    let size = log.size();
    let root = log.root();
    let mut rng = Rng(42);
    let rounds = 10_000u32;
    let picks: Vec<u64> = (0..rounds).map(|_| rng.next() % size).collect();
    let t = Instant::now();
    let mut total_len = 0;
    for &idx in &picks {
        total_len += log.inclusion_proof(idx, size).unwrap().len();
    }
    let per = t.elapsed().as_secs_f64() / f64::from(rounds);
    println!(
        "inclusion proof at size {size}: {:.2} us per proof (avg {} hashes)",
        per * 1e6,
        total_len / rounds as usize
    );
    let proofs: Vec<_> = picks
        .iter()
        .take(1000)
        .map(|&i| (i, log.inclusion_proof(i, size).unwrap()))
        .collect();
    let leaves: Vec<_> = proofs
        .iter()
        .map(|(i, _)| leaf_hash(&log.entry(*i).unwrap()))
        .collect();
    let t = Instant::now();
    for ((i, p), l) in proofs.iter().zip(&leaves) {
        verify_inclusion(*i, size, l, p, &root).unwrap();
    }
    println!(
        "inclusion proof verification: {:.2} us per proof",
        t.elapsed().as_secs_f64() / 1000.0 * 1e6
    );

    let pairs: Vec<(u64, u64)> = (0..rounds)
        .map(|_| {
            let new = 1 + rng.next() % size;
            (1 + rng.next() % new, new)
        })
        .collect();
    let t = Instant::now();
    for &(old, new) in &pairs {
        log.consistency_proof(old, new).unwrap();
    }
    println!(
        "consistency proof, random sizes up to {size}: {:.2} us per proof",
        t.elapsed().as_secs_f64() / f64::from(rounds) * 1e6
    );
    let (old, new) = (size / 3, size);
    let (r1, r2) = (log.root_at(old).unwrap(), log.root_at(new).unwrap());
    let p = log.consistency_proof(old, new).unwrap();
    let t = Instant::now();
    for _ in 0..1000 {
        verify_consistency(old, new, &r1, &r2, &p).unwrap();
    }
    println!(
        "consistency proof verification: {:.2} us per proof",
        t.elapsed().as_secs_f64() / 1000.0 * 1e6
    );

    let t = Instant::now();
    let bundle = log.export(0, size, None).unwrap();
    let export_s = t.elapsed().as_secs_f64();
    let json = serde_json::to_vec(&bundle).unwrap();
    println!(
        "export of {size} entries: {export_s:.2} s, {} MB JSON",
        json.len() / 1_000_000
    );

    // Offline verification of the whole export (replay disabled: these bench
    // entries have no decisions).
    struct AllowAll;
    impl custos_audit::AuthorizationReplay for AllowAll {
        fn check_signature(
            &self,
            _: &custos_audit::replay::ReplayContext<'_>,
        ) -> Result<(), custos_audit::AuditError> {
            Ok(())
        }
    }
    let trust = custos_audit::TrustRoots {
        log_key: custos_audit::VerifierKey::from_signer(
            "bench.custos/log",
            custos_audit::note::SIG_TYPE_ED25519,
            &signer,
        )
        .unwrap(),
        witness_keys: vec![],
        witness_quorum: 0,
    };
    let t = Instant::now();
    let report = custos_audit::verify_bundle(&bundle, &trust, None, &AllowAll);
    assert!(report.is_ok(), "{:?}", report.first_failure());
    println!(
        "verify_bundle over {size} entries and {} checkpoints: {:.2} s",
        report.checkpoints_verified,
        t.elapsed().as_secs_f64()
    );
}
