//! Property tests: every proof verifies, and any change to a proof, a root or
//! a leaf makes it fail.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use custos_audit::entry::EntryBody;
use custos_audit::proof::{verify_consistency, verify_inclusion};
use custos_audit::{Entry, Log, MemoryStore, leaf_hash};
use proptest::prelude::*;

fn log_of(n: u64) -> Log<MemoryStore> {
    let mut log = Log::open(MemoryStore::new(), common::ORIGIN).unwrap();
    let items = (0..n)
        .map(|i| {
            (
                i,
                EntryBody::Cancelled {
                    withdrawal_id: format!("wd-{i}"),
                    cancelled_by: "x".into(),
                    reason: String::new(),
                },
            )
        })
        .collect();
    log.append_batch(items).unwrap();
    log
}

fn config() -> ProptestConfig {
    // Seeded: failures reproduce on every machine.
    ProptestConfig {
        cases: 64,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x00C0_5705),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn inclusion_proofs_verify(n in 1u64..600, picks in proptest::collection::vec((any::<u64>(), any::<u64>()), 8)) {
        let log = log_of(n);
        for (a, b) in picks {
            let size = 1 + a % n;
            let index = b % size;
            let leaf = leaf_hash(&log.entry(index).unwrap());
            let root = log.root_at(size).unwrap();
            let proof = log.inclusion_proof(index, size).unwrap();
            prop_assert!(proof.len() <= 64 - (size - 1).leading_zeros() as usize);
            prop_assert!(verify_inclusion(index, size, &leaf, &proof, &root).is_ok());
            // Wrong index, wrong leaf, wrong root, altered path: all rejected.
            if size > 1 {
                prop_assert!(verify_inclusion((index + 1) % size, size, &leaf, &proof, &root).is_err());
            }
            prop_assert!(verify_inclusion(index, size, &leaf_hash(b"other"), &proof, &root).is_err());
            prop_assert!(verify_inclusion(index, size, &leaf, &proof, &leaf_hash(b"root")).is_err());
            if let Some(first) = proof.first() {
                let mut bad = proof.clone();
                bad[0] = leaf_hash(first);
                prop_assert!(verify_inclusion(index, size, &leaf, &bad, &root).is_err());
                prop_assert!(verify_inclusion(index, size, &leaf, &proof[1..], &root).is_err());
            }
        }
    }

    #[test]
    fn consistency_proofs_verify(n in 1u64..600, picks in proptest::collection::vec((any::<u64>(), any::<u64>()), 8)) {
        let log = log_of(n);
        for (a, b) in picks {
            let new = 1 + a % n;
            let old = b % (new + 1);
            let (r1, r2) = (log.root_at(old).unwrap(), log.root_at(new).unwrap());
            let proof = log.consistency_proof(old, new).unwrap();
            prop_assert!(verify_consistency(old, new, &r1, &r2, &proof).is_ok());
            if old > 0 && old < new {
                prop_assert!(verify_consistency(old, new, &leaf_hash(b"x"), &r2, &proof).is_err());
                prop_assert!(verify_consistency(old, new, &r1, &leaf_hash(b"x"), &proof).is_err());
                let mut bad = proof.clone();
                let last = bad.len() - 1;
                bad[last] = leaf_hash(&bad[last]);
                prop_assert!(verify_consistency(old, new, &r1, &r2, &bad).is_err());
            }
        }
    }

    #[test]
    fn entries_round_trip_canonically(n in 0u64..40, quorum in 0u16..4) {
        for (i, body) in common::withdrawal(n, quorum).into_iter().chain(common::genesis()).enumerate() {
            let e = Entry { index: i as u64, timestamp_ms: common::T0 + n, body };
            let bytes = e.encode().unwrap();
            prop_assert_eq!(Entry::decode(&bytes).unwrap(), e);
            // Any trailing byte or truncation is rejected: one encoding per value.
            let mut longer = bytes.clone();
            longer.push(0);
            prop_assert!(Entry::decode(&longer).is_err());
            prop_assert!(Entry::decode(&bytes[..bytes.len() - 1]).is_err());
        }
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(e) = Entry::decode(&bytes) {
            prop_assert_eq!(e.encode().unwrap(), bytes);
        }
    }
}

#[test]
fn proofs_at_a_million_entries_are_logarithmic() {
    let log = log_of(1_000_000);
    let size = log.size();
    let root = log.root();
    for index in [0, 1, 499_999, 999_999] {
        let proof = log.inclusion_proof(index, size).unwrap();
        assert!(proof.len() <= 20);
        verify_inclusion(
            index,
            size,
            &leaf_hash(&log.entry(index).unwrap()),
            &proof,
            &root,
        )
        .unwrap();
    }
    let proof = log.consistency_proof(777_777, size).unwrap();
    assert!(proof.len() <= 40);
    verify_consistency(777_777, size, &log.root_at(777_777).unwrap(), &root, &proof).unwrap();
}
