//! The offline verifier: tampering is detected and located (docs/SECURITY.md
//! cases 19-21), unauthorised signatures are flagged, and the bundle format is
//! pinned by a golden file the CLI tests reuse.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use common::{SoftSigner, T0, build_log, checkpoint, trust, witness};
use custos_audit::entry::{EntryBody, Verdict};
use custos_audit::store::{AppendBatch, LogStore};
use custos_audit::{
    AuditError, Entry, ExportBundle, FailureKind, Log, MemoryStore, RequireSatisfiedDecision,
    verify_bundle,
};
use proptest::prelude::*;

fn verify(b: &ExportBundle) -> custos_audit::Report {
    verify_bundle(b, &trust(), None, &RequireSatisfiedDecision)
}

fn first_bad(r: &custos_audit::Report) -> Option<u64> {
    r.first_failure().and_then(|f| f.entry)
}

#[test]
fn good_bundle_verifies() {
    let log = build_log(6);
    let b = log.export(0, log.size(), None).unwrap();
    let r = verify(&b);
    assert!(r.is_ok(), "{:#?}", r.failures);
    assert_eq!(r.signatures_authorised, 6);
    assert_eq!(r.checkpoints_verified, 7);
    assert_eq!(r.latest_size, Some(log.size()));
    assert!(r.checkpoints_below_quorum.is_empty());
    // Quorum not met with a third unknown-to-the-log witness required: no
    // checkpoint is relied on, so nothing is covered.
    let mut t = trust();
    t.witness_keys.push(common::witness_key(3));
    t.witness_quorum = 3;
    let r = verify_bundle(&b, &t, None, &RequireSatisfiedDecision);
    assert!(!r.is_ok());
    assert_eq!(r.checkpoints_verified, 0);
    assert_eq!(r.checkpoints_below_quorum.len(), 7);
    assert!(
        r.failures
            .iter()
            .any(|f| f.kind == FailureKind::WitnessQuorum),
        "{:#?}",
        r.failures
    );
    assert!(
        r.failures.iter().any(|f| f.kind == FailureKind::Uncovered),
        "{:#?}",
        r.failures
    );
}

/// A checkpoint a witness missed (down or slow that round) is not a failure
/// while later checkpoints with the quorum cover its entries; it is listed,
/// checked against the entries, and never relied on: entries only it covers
/// are uncovered.
#[test]
fn checkpoints_below_the_quorum_are_listed_not_relied_on() {
    let log = build_log(4);
    let b = log.export(0, log.size(), None).unwrap();
    // Strip one witness's cosignature from an early checkpoint.
    let strip = |note: &str| {
        let mut lines: Vec<&str> = note.lines().collect();
        let last = lines.len() - 1;
        lines.remove(last);
        lines.join("\n") + "\n"
    };
    let mut early = b.clone();
    early.checkpoints[1] = strip(&early.checkpoints[1]);
    let r = verify(&early);
    assert!(r.is_ok(), "{:#?}", r.failures);
    assert_eq!(r.checkpoints_below_quorum.len(), 1);
    assert_eq!(r.checkpoints_verified, b.checkpoints.len() - 1);
    // The latest one below the quorum: its entries are not proven.
    let mut late = b.clone();
    let last = late.checkpoints.len() - 1;
    late.checkpoints[last] = strip(&late.checkpoints[last]);
    let r = verify(&late);
    assert!(
        r.failures.iter().any(|f| f.kind == FailureKind::Uncovered),
        "{:#?}",
        r.failures
    );
    assert_ne!(r.latest_size, Some(log.size()));
}

/// The coordinator's crash window: a checkpoint signed and stored, then the
/// process killed before any witness co-signed it. Later rounds sign and
/// witness a newer checkpoint. The log verifies by its witnessed
/// checkpoints, with a warning naming the unwitnessed one; while the
/// unwitnessed one is the latest, its entries are an unwitnessed tail and
/// fail, naming it, with the witnessed prefix verified; one that disagrees
/// with the entries is a split view even though nothing rests on it.
#[test]
fn an_unwitnessed_checkpoint_is_a_warning_once_superseded_and_a_failure_while_latest() {
    let signer = SoftSigner::from_seed(1);
    let mut log = build_log(2);
    let witnessed = log.size();
    let mut t = T0 + 1_000_000;
    for b in common::withdrawal(2, 1) {
        t += 1000;
        log.append(t, b).unwrap();
    }
    // Stored, never co-signed (the coordinator was killed here).
    log.checkpoint(&signer, t).unwrap();
    let orphan = log.size();

    // While it is the latest: the unwitnessed tail fails, naming it.
    let tail = log.export(0, log.size(), None).unwrap();
    let r = verify(&tail);
    assert!(!r.is_ok());
    assert!(r.warnings.is_empty(), "{:#?}", r.warnings);
    assert_eq!(r.checkpoints_below_quorum, vec![orphan]);
    assert_eq!(r.latest_size, Some(witnessed), "the witnessed prefix");
    assert!(
        r.failures.iter().all(|f| f.kind == FailureKind::Uncovered),
        "only the tail fails: {:#?}",
        r.failures
    );
    let f = r.first_failure().unwrap();
    assert_eq!(f.entry, Some(witnessed));
    assert!(
        f.message
            .contains(&format!("size {orphan} (0 of 2 cosignatures)"))
            && f.message.contains("unwitnessed tail"),
        "{}",
        f.message
    );
    // Exported up to the witnessed prefix, the same log verifies.
    assert!(verify(&log.export(0, witnessed, None).unwrap()).is_ok());

    // A later round signs and witnesses a newer checkpoint.
    for b in common::withdrawal(3, 0) {
        t += 1000;
        log.append(t, b).unwrap();
    }
    let mut ws = [common::witness(1), common::witness(2)];
    checkpoint(&mut log, &signer, &mut ws, t);
    let b = log.export(0, log.size(), None).unwrap();
    let r = verify(&b);
    assert!(r.is_ok(), "{:#?}", r.failures);
    assert_eq!(r.latest_size, Some(log.size()));
    assert_eq!(r.checkpoints_below_quorum, vec![orphan]);
    assert_eq!(r.warnings.len(), 1, "{:#?}", r.warnings);
    let w = &r.warnings[0];
    assert_eq!(
        (w.checkpoint_size, w.cosignatures, w.superseded_by),
        (orphan, 0, log.size())
    );
    assert!(
        w.message.contains(&format!("size {orphan}")),
        "{}",
        w.message
    );

    // The unwitnessed checkpoint replaced by one the log key signed over
    // other content: still a failure, named at its size.
    let mut forked = b.clone();
    let at = forked
        .checkpoints
        .iter()
        .position(|n| n.contains(&format!("\n{orphan}\n")))
        .unwrap();
    forked.checkpoints[at] = forked_checkpoint(&signer, orphan, t);
    let r = verify(&forked);
    assert!(r.warnings.is_empty(), "{:#?}", r.warnings);
    let f = r
        .failures
        .iter()
        .find(|f| f.kind == FailureKind::SplitView)
        .unwrap_or_else(|| panic!("{:#?}", r.failures));
    assert_eq!(f.entry, Some(orphan));
    assert!(
        f.message.contains(&format!("size {orphan}")),
        "{}",
        f.message
    );
}

/// A batched UTXO transaction is prepared by every withdrawal it pays, and
/// only one of them signs: a range holding that signature carries the
/// others' earlier entries as context, for the replay to authorise them.
#[test]
fn context_carries_every_withdrawal_of_a_batched_transaction() {
    let signer = SoftSigner::from_seed(1);
    let mut log = Log::open(MemoryStore::new(), common::ORIGIN).unwrap();
    let mut ws = [witness(1), witness(2)];
    let prepared = |w: &str, tx: &[u8]| EntryBody::TransactionPrepared {
        withdrawal_id: w.into(),
        chain: "litecoin-regtest".into(),
        unsigned_tx: tx.to_vec(),
    };
    let mut t = T0;
    for body in [
        prepared("wd-lead", b"batch"),
        prepared("wd-member", b"batch"),
        prepared("wd-other", b"single"),
    ] {
        t += 1000;
        log.append(t, body).unwrap();
    }
    checkpoint(&mut log, &signer, &mut ws, t);
    let start = log.size();
    let signed = EntryBody::SigningSession {
        withdrawal_id: "wd-lead".into(),
        key_id: "w-ltc".into(),
        execution_id: vec![1; 32],
        participants: vec!["signer-1".into()],
        presignature_id: None,
        message_digest: [2; 32],
    };
    log.append(t + 1000, signed).unwrap();
    checkpoint(&mut log, &signer, &mut ws, t + 1000);
    let b = log.export(start, log.size(), None).unwrap();
    let context: Vec<(u64, String)> = b
        .context
        .iter()
        .map(|c| {
            let e = Entry::decode(&hex::decode(&c.entry).unwrap()).unwrap();
            (
                c.index,
                e.body.withdrawal_id().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        context,
        [(0, "wd-lead".to_owned()), (1, "wd-member".to_owned())]
    );
}

#[test]
fn partial_range_with_previous_checkpoint() {
    let log = build_log(6);
    let cps = log.store().checkpoints(0, log.size()).unwrap();
    let (s1, prev) = cps[1].clone();
    let (s3, _) = cps[3].clone();
    // Range starting at a later checkpoint, connected to the auditor's older one.
    let b = log.export(s3, log.size(), Some(s1)).unwrap();
    let r = verify_bundle(&b, &trust(), Some(&prev), &RequireSatisfiedDecision);
    assert!(r.is_ok(), "{:#?}", r.failures);
    // Context entries (the policy activation, earlier entries of open
    // withdrawals) are proven by inclusion proofs; a forged one is flagged.
    assert!(!b.context.is_empty());
    let mut forged = b.clone();
    let c = &mut forged.context[0];
    let mut raw = hex::decode(&c.entry).unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 1;
    c.entry = hex::encode(raw);
    let r = verify_bundle(&forged, &trust(), Some(&prev), &RequireSatisfiedDecision);
    assert!(
        r.failures
            .iter()
            .any(|f| f.kind == FailureKind::Bundle && f.entry == Some(forged.context[0].index))
    );
    // A bundle relabelled as another log is refused outright.
    let mut other = b.clone();
    other.origin = "other.test/log".into();
    assert!(!verify(&other).is_ok());
    // Without the consistency proof the previous checkpoint cannot be connected.
    let mut b2 = b.clone();
    b2.consistency_proofs.clear();
    let r = verify_bundle(&b2, &trust(), Some(&prev), &RequireSatisfiedDecision);
    assert!(
        r.failures
            .iter()
            .any(|f| f.kind == FailureKind::PreviousCheckpoint)
    );
}

/// Tamper with the bundle the way an operator editing the entries table
/// would; the verifier must name `expected` as the first bad entry.
#[derive(Clone, Debug)]
enum Tamper {
    Change(usize),
    Remove(usize),
    Swap(usize, usize),
    Insert(usize),
}

fn apply(b: &mut ExportBundle, t: &Tamper) -> u64 {
    match *t {
        Tamper::Change(i) => {
            let mut bytes = hex::decode(&b.entries[i]).unwrap();
            let last = bytes.len() - 1;
            bytes[last] ^= 1;
            b.entries[i] = hex::encode(bytes);
            i as u64
        }
        Tamper::Remove(i) => {
            b.entries.remove(i);
            i as u64
        }
        Tamper::Swap(i, j) => {
            b.entries.swap(i, j);
            i.min(j) as u64
        }
        Tamper::Insert(i) => {
            let fake = Entry {
                index: i as u64,
                timestamp_ms: T0,
                body: EntryBody::Approval {
                    withdrawal_id: "wd-1".into(),
                    approver_id: "mallory".into(),
                    verdict: Verdict::Approve,
                    statement: vec![],
                    signature: vec![],
                },
            };
            b.entries.insert(i, hex::encode(fake.encode().unwrap()));
            i as u64
        }
    }
}

fn tamper_strategy(n: usize) -> impl Strategy<Value = Tamper> {
    prop_oneof![
        (0..n).prop_map(Tamper::Change),
        (0..n).prop_map(Tamper::Remove),
        (0..n, 0..n)
            .prop_filter("distinct", |(a, b)| a != b)
            .prop_map(|(a, b)| Tamper::Swap(a, b)),
        (0..=n).prop_map(Tamper::Insert),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, rng_seed: proptest::test_runner::RngSeed::Fixed(0x19_20), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_tampered_entry_is_detected_and_located(t in tamper_strategy(40)) {
        let log = build_log(6);
        prop_assume!(log.size() >= 40);
        let mut b = log.export(0, log.size(), None).unwrap();
        let expected = apply(&mut b, &t);
        let r = verify(&b);
        prop_assert!(!r.is_ok());
        prop_assert_eq!(first_bad(&r), Some(expected), "{:?}: {:#?}", t, r.failures);
    }

    #[test]
    fn tampering_tree_storage_too_is_still_detected(t in tamper_strategy(40)) {
        // The attacker also rewrites the stored leaf hashes: detection stays
        // certain (signed roots), location falls back to checkpoint ranges
        // and index fields and never points after the tampered entry.
        let log = build_log(6);
        let mut b = log.export(0, log.size(), None).unwrap();
        let expected = apply(&mut b, &t);
        b.leaf_hashes = b.entries.iter().map(|e| hex::encode(custos_audit::leaf_hash(&hex::decode(e).unwrap()))).collect();
        let r = verify(&b);
        prop_assert!(!r.is_ok());
        let got = first_bad(&r).unwrap();
        prop_assert!(got <= expected, "{:?}: named {} after {}", t, got, expected);
    }
}

/// A store wrapper that lets the test edit rows behind the log's back.
struct Tamperable(MemoryStore, Vec<(u64, Option<Vec<u8>>)>, Option<u64>);

impl LogStore for Tamperable {
    fn size(&self) -> Result<u64, AuditError> {
        Ok(self.2.unwrap_or(self.0.size()?))
    }
    fn append(&mut self, batch: &AppendBatch<'_>) -> Result<(), AuditError> {
        self.0.append(batch)
    }
    fn entry(&self, index: u64) -> Result<Option<Vec<u8>>, AuditError> {
        match self.1.iter().find(|(i, _)| *i == index) {
            Some((_, v)) => Ok(v.clone()),
            None => self.0.entry(index),
        }
    }
    fn node(&self, level: u8, index: u64) -> Result<Option<[u8; 32]>, AuditError> {
        self.0.node(level, index)
    }
    fn put_checkpoint(&mut self, size: u64, note: &str) -> Result<(), AuditError> {
        self.0.put_checkpoint(size, note)
    }
    fn checkpoint(&self, size: u64) -> Result<Option<String>, AuditError> {
        self.0.checkpoint(size)
    }
    fn checkpoints(&self, from: u64, to: u64) -> Result<Vec<(u64, String)>, AuditError> {
        self.0.checkpoints(from, to)
    }
    fn latest_checkpoint(&self) -> Result<Option<(u64, String)>, AuditError> {
        self.0.latest_checkpoint()
    }
}

fn reopen(
    log: Log<MemoryStore>,
    edits: Vec<(u64, Option<Vec<u8>>)>,
    size: Option<u64>,
) -> Log<Tamperable> {
    Log::open(Tamperable(log.store().clone(), edits, size), common::ORIGIN).unwrap()
}

#[test]
fn edited_row_behind_the_log_is_named() {
    let log = build_log(4);
    let victim = 14;
    let mut e = Entry::decode(&log.entry(victim).unwrap()).unwrap();
    if let EntryBody::Approval { approver_id, .. } = &mut e.body {
        *approver_id = "mallory".into();
    } else {
        e.timestamp_ms += 1;
    }
    let tampered = reopen(log, vec![(victim, Some(e.encode().unwrap()))], None);
    let r = verify(&tampered.export(0, tampered.size(), None).unwrap());
    let f = r.first_failure().unwrap();
    assert_eq!(
        (f.entry, f.kind),
        (Some(victim), FailureKind::EntryMismatch),
        "{:#?}",
        r.failures
    );
}

#[test]
fn dropped_last_entry_and_truncated_tree_are_detected() {
    let log = build_log(4);
    let n = log.size();
    let prev = log.latest_checkpoint().unwrap().unwrap();
    // The operator deletes the last entry row and truncates the tree, then
    // exports without the now-inconvenient checkpoint.
    let store = log.store().clone();
    let truncated = reopen(log, vec![], Some(n - 1));
    assert_eq!(truncated.size(), n - 1);
    let mut b = truncated.export(0, n - 1, None).unwrap();
    // As exported, the last checkpoint (size n) is out of range and omitted;
    // the entries after the previous checkpoint are uncovered.
    let r = verify(&b);
    assert!(!r.is_ok());
    // The auditor's previous checkpoint exposes the truncation exactly.
    let r = verify_bundle(&b, &trust(), Some(&prev), &RequireSatisfiedDecision);
    let f = r
        .failures
        .iter()
        .find(|f| f.kind == FailureKind::EntryMissing)
        .unwrap();
    assert_eq!(f.entry, Some(n - 1), "{:#?}", r.failures);
    // If the old checkpoint is still shipped, the missing entry is named too.
    b.checkpoints.push(store.checkpoint(n).unwrap().unwrap());
    let r = verify(&b);
    assert_eq!(first_bad(&r), Some(n - 1), "{:#?}", r.failures);
}

#[test]
fn rewritten_history_fails_against_previous_checkpoint_and_witnesses() {
    let signer = SoftSigner::from_seed(1);
    let log = build_log(3);
    let n = log.size();
    let prev = log.latest_checkpoint().unwrap().unwrap();
    // Rebuild a different log of the same size with valid log signatures.
    let mut fork = Log::open(MemoryStore::new(), common::ORIGIN).unwrap();
    for i in 0..n - 1 {
        let e = Entry::decode(&log.entry(i).unwrap()).unwrap();
        fork.append(e.timestamp_ms, e.body).unwrap();
    }
    fork.append(
        T0,
        EntryBody::Cancelled {
            withdrawal_id: "wd-2".into(),
            cancelled_by: "m".into(),
            reason: String::new(),
        },
    )
    .unwrap();
    let mut fresh = [witness(1), witness(2)];
    checkpoint(&mut fork, &signer, &mut fresh, T0);
    let b = fork.export(0, n, None).unwrap();
    let r = verify_bundle(&b, &trust(), Some(&prev), &RequireSatisfiedDecision);
    assert!(
        r.failures.iter().any(|f| f.kind == FailureKind::SplitView),
        "{:#?}",
        r.failures
    );
}

#[test]
fn signature_without_satisfied_decision_is_flagged() {
    let signer = SoftSigner::from_seed(1);
    let mut ws = [witness(1), witness(2)];
    let mut log = Log::open(MemoryStore::new(), common::ORIGIN).unwrap();
    for b in common::genesis() {
        log.append(T0, b).unwrap();
    }
    // wd-0: fine. wd-1: decision removed. wd-2: one approval of two.
    // wd-3: denied. wd-4: cancelled before signing. wd-5: rejected by one approver.
    let mut expect = Vec::new();
    for n in 0..6u64 {
        let mut bodies = common::withdrawal(n, if n == 2 || n == 5 { 2 } else { 0 });
        match n {
            1 => {
                bodies.remove(2);
            }
            2 => {
                bodies.remove(3);
            }
            3 => {
                if let EntryBody::PolicyDecision { outcome, .. } = &mut bodies[2] {
                    *outcome = custos_audit::entry::DecisionOutcome::Deny;
                }
            }
            4 => bodies.insert(
                3,
                EntryBody::Cancelled {
                    withdrawal_id: "wd-4".into(),
                    cancelled_by: "ops".into(),
                    reason: "fraud".into(),
                },
            ),
            5 => {
                if let EntryBody::Approval { verdict, .. } = &mut bodies[4] {
                    *verdict = Verdict::Reject;
                }
            }
            _ => {}
        }
        for b in bodies {
            // The session and the signature are both checked.
            let sig = matches!(
                b,
                EntryBody::SignatureProduced { .. } | EntryBody::SigningSession { .. }
            );
            let i = log.append(T0, b).unwrap();
            if sig && n > 0 {
                expect.push(i);
            }
        }
    }
    checkpoint(&mut log, &signer, &mut ws, T0);
    let r = verify(&log.export(0, log.size(), None).unwrap());
    let flagged: Vec<u64> = r
        .failures
        .iter()
        .filter(|f| f.kind == FailureKind::Unauthorized)
        .filter_map(|f| f.entry)
        .collect();
    assert_eq!(flagged, expect, "{:#?}", r.failures);
    assert_eq!(r.signatures_authorised, 1);
    assert_eq!(r.signing_sessions_authorised, 1);
    assert_eq!(first_bad(&r), expect.first().copied());
}

/// docs/SECURITY.md case 47: signers release partials only for signing
/// sessions in the log, so an unauthorised session is reported even when the
/// coordinator never logs the signature it got.
#[test]
fn unauthorised_signing_session_without_a_signature_is_flagged() {
    let signer = SoftSigner::from_seed(1);
    let mut ws = [witness(1), witness(2)];
    let mut log = Log::open(MemoryStore::new(), common::ORIGIN).unwrap();
    for b in common::genesis() {
        log.append(T0, b).unwrap();
    }
    let mut bodies = common::withdrawal(0, 0);
    bodies.retain(|b| {
        !matches!(
            b,
            EntryBody::PolicyDecision { .. } | EntryBody::SignatureProduced { .. }
        )
    });
    let mut session = None;
    for b in bodies {
        let is_session = matches!(b, EntryBody::SigningSession { .. });
        let i = log.append(T0, b).unwrap();
        if is_session {
            session = Some(i);
        }
    }
    checkpoint(&mut log, &signer, &mut ws, T0);
    let r = verify(&log.export(0, log.size(), None).unwrap());
    let session = session.expect("the sample withdrawal has a signing session");
    let f = r
        .failures
        .iter()
        .find(|f| f.kind == FailureKind::Unauthorized)
        .unwrap_or_else(|| panic!("not flagged: {:#?}", r.failures));
    assert_eq!(f.entry, Some(session));
    assert!(f.message.contains("signing session entry"), "{}", f.message);
    assert!(f.message.contains("no policy decision"), "{}", f.message);
    assert_eq!(r.signing_sessions_authorised, 0);
}

/// docs/SECURITY.md case 21: an unwritable log stops the action; nothing changes.
#[test]
fn failed_append_has_no_effect() {
    struct Down(MemoryStore, bool);
    impl LogStore for Down {
        fn size(&self) -> Result<u64, AuditError> {
            self.0.size()
        }
        fn append(&mut self, b: &AppendBatch<'_>) -> Result<(), AuditError> {
            if self.1 {
                Err(AuditError::Storage("disk full".into()))
            } else {
                self.0.append(b)
            }
        }
        fn entry(&self, i: u64) -> Result<Option<Vec<u8>>, AuditError> {
            self.0.entry(i)
        }
        fn node(&self, l: u8, i: u64) -> Result<Option<[u8; 32]>, AuditError> {
            self.0.node(l, i)
        }
        fn put_checkpoint(&mut self, s: u64, n: &str) -> Result<(), AuditError> {
            if self.1 {
                Err(AuditError::Storage("disk full".into()))
            } else {
                self.0.put_checkpoint(s, n)
            }
        }
        fn checkpoint(&self, s: u64) -> Result<Option<String>, AuditError> {
            self.0.checkpoint(s)
        }
        fn checkpoints(&self, f: u64, t: u64) -> Result<Vec<(u64, String)>, AuditError> {
            self.0.checkpoints(f, t)
        }
        fn latest_checkpoint(&self) -> Result<Option<(u64, String)>, AuditError> {
            self.0.latest_checkpoint()
        }
    }
    let mut log = Log::open(Down(MemoryStore::new(), false), common::ORIGIN).unwrap();
    log.append(T0, common::genesis().remove(0)).unwrap();
    let root = log.root();
    log.store();
    let mut down = Log::open(Down(log.store().0.clone(), true), common::ORIGIN).unwrap();
    let err = down
        .append(T0, common::withdrawal(0, 0).remove(0))
        .unwrap_err();
    assert!(matches!(err, AuditError::Storage(_)));
    assert_eq!((down.size(), down.root()), (1, root));
    assert!(down.checkpoint(&SoftSigner::from_seed(1), T0).is_err());
    // A concurrent writer that appended first is detected, not overwritten.
    let mut a = Log::open(MemoryStore::new(), common::ORIGIN).unwrap();
    a.append(T0, common::genesis().remove(0)).unwrap();
    let mut store = a.store().clone();
    let nodes = [(0u8, 0u64, [0u8; 32])];
    let err = store
        .append(&AppendBatch {
            first_index: 0,
            entries: &[vec![1]],
            nodes: &nodes,
        })
        .unwrap_err();
    assert!(matches!(
        err,
        AuditError::AppendConflict {
            expected: 0,
            actual: 1
        }
    ));
}

/// Pins the bundle JSON and checkpoint text byte for byte; the CLI tests
/// tamper with this file. Regenerate with `UPDATE_GOLDEN=1`.
#[test]
fn golden_bundle() {
    let log = build_log(3);
    let b = log.export(0, log.size(), None).unwrap();
    assert!(verify(&b).is_ok());
    let previous = log.store().checkpoint(3).unwrap().unwrap();
    let keys = serde_json::json!({
        "log_key": common::log_key().to_string(),
        "witness_keys": [common::witness_key(1).to_string(), common::witness_key(2).to_string()],
        "previous_checkpoint": previous,
    });
    let bundle_json = serde_json::to_string_pretty(&b).unwrap() + "\n";
    let keys_json = serde_json::to_string_pretty(&keys).unwrap() + "\n";
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(dir.join("bundle_good.json"), &bundle_json).unwrap();
        std::fs::write(dir.join("bundle_keys.json"), &keys_json).unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("bundle_good.json")).unwrap(),
        bundle_json
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("bundle_keys.json")).unwrap(),
        keys_json
    );
}

/// A checkpoint of `size` the log key signs over other content (a fork).
fn forked_checkpoint(signer: &SoftSigner, size: u64, now_ms: u64) -> String {
    let mut fork = Log::open(MemoryStore::new(), common::ORIGIN).unwrap();
    for i in 0..size {
        fork.append(
            T0 + i,
            EntryBody::Cancelled {
                withdrawal_id: "x".into(),
                cancelled_by: "m".into(),
                reason: String::new(),
            },
        )
        .unwrap();
    }
    fork.checkpoint(signer, now_ms).unwrap()
}

#[test]
fn two_checkpoints_for_one_size_are_a_split_view() {
    let signer = SoftSigner::from_seed(1);
    let log = build_log(2);
    let mut b = log.export(0, log.size(), None).unwrap();
    // The operator signs a second head for the same size over other content.
    b.checkpoints
        .push(forked_checkpoint(&signer, log.size(), T0));
    let r = verify_bundle(
        &b,
        &custos_audit::TrustRoots {
            witness_quorum: 0,
            ..trust()
        },
        None,
        &RequireSatisfiedDecision,
    );
    assert!(
        r.failures.iter().any(|f| f.kind == FailureKind::SplitView),
        "{:#?}",
        r.failures
    );
}

/// The documented byte format, spelled out field by field.
#[test]
fn entry_encoding_matches_documented_format() {
    let e = Entry {
        index: 5,
        timestamp_ms: 1_764_072_000_000,
        body: EntryBody::Cancelled {
            withdrawal_id: "wd-1".into(),
            cancelled_by: "ops".into(),
            reason: "".into(),
        },
    };
    let mut want = vec![1u8]; // format
    want.extend(8u16.to_be_bytes()); // kind: cancelled
    want.push(1); // kind version
    want.extend(5u64.to_be_bytes());
    want.extend(1_764_072_000_000u64.to_be_bytes());
    for s in ["wd-1", "ops", ""] {
        want.extend((s.len() as u32).to_be_bytes());
        want.extend(s.as_bytes());
    }
    assert_eq!(e.encode().unwrap(), want);
    assert_eq!(
        hex::encode(&want),
        "0100080100000000000000050000019abae28a00000000047764 2d310000000 36f707300000000"
            .replace(' ', "")
    );
}

/// Two coordinator replicas writing one store: the stale one gets a
/// conflict (its action must not happen), refreshes and continues.
#[test]
fn log_recovers_from_append_conflict() {
    use std::cell::RefCell;
    use std::rc::Rc;
    struct Shared(Rc<RefCell<MemoryStore>>);
    impl LogStore for Shared {
        fn size(&self) -> Result<u64, AuditError> {
            self.0.borrow().size()
        }
        fn append(&mut self, b: &AppendBatch<'_>) -> Result<(), AuditError> {
            self.0.borrow_mut().append(b)
        }
        fn entry(&self, i: u64) -> Result<Option<Vec<u8>>, AuditError> {
            self.0.borrow().entry(i)
        }
        fn node(&self, l: u8, i: u64) -> Result<Option<[u8; 32]>, AuditError> {
            self.0.borrow().node(l, i)
        }
        fn put_checkpoint(&mut self, s: u64, n: &str) -> Result<(), AuditError> {
            self.0.borrow_mut().put_checkpoint(s, n)
        }
        fn checkpoint(&self, s: u64) -> Result<Option<String>, AuditError> {
            self.0.borrow().checkpoint(s)
        }
        fn checkpoints(&self, f: u64, t: u64) -> Result<Vec<(u64, String)>, AuditError> {
            self.0.borrow().checkpoints(f, t)
        }
        fn latest_checkpoint(&self) -> Result<Option<(u64, String)>, AuditError> {
            self.0.borrow().latest_checkpoint()
        }
    }
    let store = Rc::new(RefCell::new(MemoryStore::new()));
    let mut a = Log::open(Shared(store.clone()), common::ORIGIN).unwrap();
    let mut b = Log::open(Shared(store.clone()), common::ORIGIN).unwrap();
    a.append(T0, common::genesis().remove(0)).unwrap();
    let err = b.append(T0, common::genesis().remove(1)).unwrap_err();
    assert!(
        matches!(
            err,
            AuditError::AppendConflict {
                expected: 0,
                actual: 1
            }
        ),
        "{err}"
    );
    assert_eq!(store.borrow().size().unwrap(), 1);
    b.refresh().unwrap();
    assert_eq!(b.append(T0, common::genesis().remove(1)).unwrap(), 1);
    a.refresh().unwrap();
    assert_eq!(a.root(), b.root());
    assert_eq!(b.root(), b.root_at(2).unwrap());
}

/// docs/SECURITY.md case 53: a signer's refusal, signed with its witness
/// key, is reported by the verifier with its reason; one the coordinator
/// made up or altered is a failure naming the entry.
#[test]
fn signed_refusals_are_reported_and_forged_ones_flagged() {
    use custos_audit::refusal::Refusal;

    let signer = SoftSigner::from_seed(1);
    let mut ws = [witness(1), witness(2)];
    let mut log = Log::open(MemoryStore::new(), common::ORIGIN).unwrap();
    for b in common::genesis() {
        log.append(T0, b).unwrap();
    }
    let refusal = |reason: &str| Refusal {
        withdrawal_id: "wd-7".into(),
        signer: "witness-1.custos.test".into(),
        request: "sign_withdrawal".into(),
        reason: reason.into(),
        refused_at_ms: T0 + 3,
    };
    let genuine = refusal("time lock: signable in 3 s");
    let sig = genuine.sign(&SoftSigner::from_seed(11)).unwrap();
    let good = log
        .append(T0, genuine.clone().into_entry(sig.clone()))
        .unwrap();
    // The coordinator rewords it, keeping the signature.
    let altered = log
        .append(T0, refusal("operator error").into_entry(sig))
        .unwrap();
    checkpoint(&mut log, &signer, &mut ws, T0);
    let r = verify(&log.export(0, log.size(), None).unwrap());
    assert_eq!(r.refusals.len(), 2);
    assert_eq!(r.refusals[0].entry, good);
    assert_eq!(r.refusals[0].reason, "time lock: signable in 3 s");
    assert_eq!(r.refusals[0].withdrawal_id, "wd-7");
    let flagged: Vec<_> = r
        .failures
        .iter()
        .filter(|f| f.kind == FailureKind::RefusalSignature)
        .map(|f| f.entry)
        .collect();
    assert_eq!(flagged, vec![Some(altered)], "{:#?}", r.failures);
    assert_eq!(r.entry_kinds.get("signing_refused"), Some(&2));
}

#[test]
fn retirements_are_reported_and_a_signing_session_after_one_fails() {
    let signer = SoftSigner::from_seed(1);
    let mut ws = [witness(1), witness(2)];
    let mut log = Log::open(MemoryStore::new(), common::ORIGIN).unwrap();
    for b in common::genesis() {
        log.append(T0, b).unwrap();
    }
    for b in common::withdrawal(1, 0) {
        log.append(T0, b).unwrap();
    }
    let retired = log
        .append(
            T0 + 1,
            EntryBody::KeyRetired {
                key_id: "key-1".into(),
                public_key: vec![2; 33],
                successor: "key-2".into(),
                actor: "admin".into(),
                reason: "rotated to key-2".into(),
            },
        )
        .unwrap();
    log.append(
        T0 + 2,
        EntryBody::KeySharesDestroyed {
            key_id: "key-1".into(),
            signers: vec!["signer-1".into(), "signer-2".into()],
            retirement_index: retired,
        },
    )
    .unwrap();
    checkpoint(&mut log, &signer, &mut ws, T0 + 2);
    let r = verify(&log.export(0, log.size(), None).unwrap());
    assert!(r.is_ok(), "{:#?}", r.failures);
    assert_eq!(r.retirements.len(), 1);
    let got = &r.retirements[0];
    assert_eq!(
        (got.entry, got.key_id.as_str(), got.successor.as_str()),
        (retired, "key-1", "key-2")
    );
    assert_eq!(got.shares_destroyed_by, ["signer-1", "signer-2"]);

    // A coordinator that signs with it afterwards is caught.
    let first = log.size();
    for b in common::withdrawal(2, 0) {
        log.append(T0 + 3, b).unwrap();
    }
    checkpoint(&mut log, &signer, &mut ws, T0 + 3);
    let r = verify(&log.export(0, log.size(), None).unwrap());
    let used: Vec<_> = r
        .failures
        .iter()
        .filter(|f| f.kind == FailureKind::RetiredKeyUsed)
        .collect();
    assert_eq!(used.len(), 1, "{:#?}", r.failures);
    assert!(used[0].entry.is_some_and(|e| e > first));
    assert!(used[0].message.contains("key key-1 was retired at entry"));
}

fn derived(key: &str, path: &str, address: &str, code: u8) -> EntryBody {
    EntryBody::AddressDerived {
        key_id: key.into(),
        chain: "anvil".into(),
        path: path.into(),
        address: address.into(),
        public_key: vec![3; 33],
        chain_code: vec![code; 32],
        actor: "backend".into(),
    }
}

fn credit(key: &str, address: &str, amount: &str, reference: &str, block: &str) -> EntryBody {
    EntryBody::DepositCredited {
        chain: "anvil".into(),
        key_id: key.into(),
        address: address.into(),
        asset: "ETH".into(),
        amount: amount.into(),
        reference: reference.into(),
        block_number: 7,
        block_hash: block.into(),
    }
}

fn reversal(key: &str, amount: &str, reference: &str, block: &str) -> EntryBody {
    EntryBody::DepositReversed {
        chain: "anvil".into(),
        key_id: key.into(),
        asset: "ETH".into(),
        amount: amount.into(),
        reference: reference.into(),
        block_number: 7,
        block_hash: block.into(),
        reason: "block 7 is now 0xbb".into(),
    }
}

/// The failures of `kind` in a verification of `bodies` after genesis, by
/// the position of the offending body in `bodies`.
fn deposit_failures(
    bodies: Vec<EntryBody>,
    kind: FailureKind,
) -> (custos_audit::Report, Vec<usize>) {
    let signer = SoftSigner::from_seed(1);
    let mut ws = [witness(1), witness(2)];
    let mut log = Log::open(MemoryStore::new(), common::ORIGIN).unwrap();
    for b in common::genesis() {
        log.append(T0, b).unwrap();
    }
    let first = log.size();
    for b in bodies {
        log.append(T0 + 1, b).unwrap();
    }
    checkpoint(&mut log, &signer, &mut ws, T0 + 2);
    let r = verify(&log.export(0, log.size(), None).unwrap());
    let at = r
        .failures
        .iter()
        .filter(|f| f.kind == kind)
        .map(|f| usize::try_from(f.entry.unwrap() - first).unwrap())
        .collect();
    (r, at)
}

#[test]
fn deposits_and_derived_addresses_are_totalled_and_conflicts_fail() {
    let (r, _) = deposit_failures(
        vec![
            derived("key-1", "m/0/1", "0xa1", 9),
            // The same derivation logged twice (two callers at once) is fine.
            derived("key-1", "m/0/1", "0xa1", 9),
            derived("key-1", "m/0/2", "0xa2", 9),
            credit("key-1", "0xa1", "5", "anvil:0x01", "0xaa"),
            credit("key-1", "0xa2", "7", "anvil:0x02", "0xaa"),
            reversal("key-1", "5", "anvil:0x01", "0xaa"),
            // Mined again after the reorg: credited again.
            credit("key-1", "0xa1", "5", "anvil:0x01", "0xbb"),
        ],
        FailureKind::DepositMismatch,
    );
    assert!(r.is_ok(), "{:#?}", r.failures);
    assert_eq!(r.deposits.addresses_derived, 2);
    assert_eq!((r.deposits.credited, r.deposits.reversed), (3, 1));
    assert_eq!(
        r.deposits.net.get("key-1/ETH").map(String::as_str),
        Some("12")
    );
    assert_eq!(r.entry_kinds.get("deposit_reversed"), Some(&1));

    let (_, at) = deposit_failures(
        vec![
            derived("key-1", "m/0/1", "0xa1", 9),
            derived("key-1", "m/0/1", "0xa9", 9),
            derived("key-1", "m/0/3", "0xa3", 8),
            derived("key-2", "m/0/1", "0xa1", 7),
        ],
        FailureKind::AddressConflict,
    );
    assert_eq!(
        at,
        [1, 2, 3],
        "another address, another chain code, another owner"
    );

    let (_, at) = deposit_failures(
        vec![
            derived("key-1", "m/0/1", "0xa1", 9),
            credit("key-1", "0xa1", "5", "anvil:0x01", "0xaa"),
            credit("key-1", "0xa1", "5", "anvil:0x01", "0xaa"),
            credit("key-2", "0xa1", "5", "anvil:0x03", "0xaa"),
            reversal("key-1", "6", "anvil:0x01", "0xaa"),
            reversal("key-1", "5", "anvil:0x04", "0xaa"),
        ],
        FailureKind::DepositMismatch,
    );
    assert_eq!(
        at,
        [2, 3, 4, 5],
        "credited twice, to another wallet, a reversal of another amount, of nothing"
    );
}
