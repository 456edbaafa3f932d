//! Witnesses: co-sign only consistent growth; refuse rollbacks and split
//! views (docs/SECURITY.md case 20); signers fail closed on unwitnessed entries.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use common::{ORIGIN, SoftSigner, T0, build_log, checkpoint, withdrawal, witness};
use custos_audit::entry::EntryBody;
use custos_audit::{AuditError, Log, LogStore, MemoryStore, Witness};

fn fork_of(log: &Log<MemoryStore>, keep: u64) -> Log<MemoryStore> {
    // Same history up to `keep`, then a different entry: what an operator who
    // truncates and rewrites the database would publish.
    let mut fork = Log::open(MemoryStore::new(), ORIGIN).unwrap();
    for i in 0..keep {
        let e = custos_audit::Entry::decode(&log.entry(i).unwrap()).unwrap();
        fork.append(e.timestamp_ms, e.body).unwrap();
    }
    fork.append(
        T0,
        EntryBody::Cancelled {
            withdrawal_id: "wd-0".into(),
            cancelled_by: "mallory".into(),
            reason: "rewritten".into(),
        },
    )
    .unwrap();
    fork
}

#[test]
fn witness_cosigns_consistent_growth_and_verifies_cosignature() {
    let log = build_log(3);
    // build_log's witnesses co-signed every checkpoint; check the latest.
    let note = log.latest_checkpoint().unwrap().unwrap();
    let v =
        custos_audit::note::VerifiedCheckpoint::verify(&note, &common::log_key(), ORIGIN).unwrap();
    assert_eq!(
        v.valid_cosigners(&[
            common::witness_key(1),
            common::witness_key(2),
            common::witness_key(3)
        ])
        .len(),
        2
    );
}

#[test]
fn witness_refuses_split_view_rollback_and_bad_proof() {
    let signer = SoftSigner::from_seed(1);
    let mut log = build_log(2);
    let mut w = witness(7);
    let seen = log.latest_checkpoint().unwrap().unwrap();
    w.cosign(&seen, &[], T0 / 1000).unwrap();
    let size = log.size();

    // Split view: same size, different root.
    let mut fork = fork_of(&log, size - 1);
    assert_eq!(fork.size(), size);
    let forked = fork.checkpoint(&signer, T0).unwrap();
    let err = w.cosign(&forked, &[], T0 / 1000).unwrap_err();
    assert!(
        matches!(err, AuditError::SplitView { size: s, .. } if s == size),
        "{err}"
    );

    // The fork grows past the witnessed size: its consistency proof cannot
    // connect to the root the witness saw.
    fork.append(
        T0,
        EntryBody::Cancelled {
            withdrawal_id: "x".into(),
            cancelled_by: "m".into(),
            reason: String::new(),
        },
    )
    .unwrap();
    let grown = fork.checkpoint(&signer, T0).unwrap();
    let proof = fork.consistency_proof(size, fork.size()).unwrap();
    let err = w.cosign(&grown, &proof, T0 / 1000).unwrap_err();
    assert!(matches!(err, AuditError::InvalidProof(_)), "{err}");

    // Rollback: an older checkpoint.
    let old = log.store().checkpoint(3).unwrap().unwrap();
    let err = w.cosign(&old, &[], T0 / 1000).unwrap_err();
    assert!(
        matches!(err, AuditError::StaleCheckpoint { seen, offered: 3 } if seen == size),
        "{err}"
    );

    // A checkpoint not signed by the log key.
    let rogue = fork.checkpoint(&SoftSigner::from_seed(99), T0).unwrap();
    assert!(w.cosign(&rogue, &[], T0 / 1000).is_err());

    // State unchanged by the refusals; honest growth still accepted.
    assert_eq!(w.state(), Some(seen.as_str()));
    for b in withdrawal(9, 0) {
        log.append(T0, b).unwrap();
    }
    let next = log.checkpoint(&signer, T0).unwrap();
    let proof = log.consistency_proof(size, log.size()).unwrap();
    w.cosign(&next, &proof, T0 / 1000).unwrap();
    assert_eq!(w.last().map(|c| c.size), Some(log.size()));

    // Restarted from persisted state, it still refuses the fork.
    let state = w.state().unwrap().to_owned();
    let mut w2 = Witness::new(
        "witness-7.custos.test",
        SoftSigner::from_seed(17),
        ORIGIN,
        common::log_key(),
        Some(&state),
    )
    .unwrap();
    assert!(w2.cosign(&grown, &proof, T0 / 1000).is_err());
}

#[test]
fn signer_fails_closed_unless_decision_is_witnessed() {
    let signer = SoftSigner::from_seed(1);
    let mut log = build_log(1);
    let mut w = witness(8);
    assert!(matches!(
        w.check_included(&log.entry(0).unwrap(), 0, &[]),
        Err(AuditError::NotWitnessed { .. })
    ));
    let note = log.latest_checkpoint().unwrap().unwrap();
    w.cosign(&note, &[], T0 / 1000).unwrap();
    let size = log.size();
    // The decision entry of withdrawal 0 (genesis has 3 entries, then request, risk, decision).
    let idx = 5;
    let decision = log.entry(idx).unwrap();
    assert!(matches!(
        custos_audit::Entry::decode(&decision).unwrap().body,
        EntryBody::PolicyDecision { .. }
    ));
    w.check_included(&decision, idx, &log.inclusion_proof(idx, size).unwrap())
        .unwrap();
    let proof = log.inclusion_proof(idx, size).unwrap();
    assert!(w.witnessed_decision(&decision, idx, &proof, "wd-0").is_ok());
    // The same decision offered for another withdrawal, or another entry
    // offered as the decision, is refused.
    assert!(matches!(
        w.witnessed_decision(&decision, idx, &proof, "wd-9"),
        Err(AuditError::Unauthorized(_))
    ));
    let request = log.entry(3).unwrap();
    assert!(
        w.witnessed_decision(&request, 3, &log.inclusion_proof(3, size).unwrap(), "wd-0")
            .is_err()
    );
    // A decision appended after the witnessed checkpoint is refused until a new
    // checkpoint is witnessed.
    let late = log.append(T0, withdrawal(5, 0).remove(2)).unwrap();
    let late_bytes = log.entry(late).unwrap();
    assert!(
        w.check_included(
            &late_bytes,
            late,
            &log.inclusion_proof(late, late + 1).unwrap()
        )
        .is_err()
    );
    // A forged entry with a valid-looking proof is refused.
    assert!(
        w.check_included(b"forged", idx, &log.inclusion_proof(idx, size).unwrap())
            .is_err()
    );
    let mut ws = [w];
    checkpoint(&mut log, &signer, &mut ws, T0);
    ws[0]
        .check_included(
            &late_bytes,
            late,
            &log.inclusion_proof(late, log.size()).unwrap(),
        )
        .unwrap();
}
