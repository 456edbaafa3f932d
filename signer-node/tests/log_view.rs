//! The signer's view of the witnessed log: built entry by entry, in order,
//! keeping the first cancel, rejection and signing session of a withdrawal
//! and the newest policy activation (docs/SECURITY.md cases 39-43).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use custos_audit::entry::Verdict;
use custos_audit::{Entry, EntryBody};
use custos_signer_node::cosigner::log_view::LogView;

fn at(index: u64, body: EntryBody) -> Entry {
    Entry {
        index,
        timestamp_ms: 0,
        body,
    }
}

fn requested(id: &str, amount: &str) -> EntryBody {
    EntryBody::WithdrawalRequested {
        withdrawal_id: id.into(),
        key_id: "w-hot".into(),
        chain: "ethereum".into(),
        asset: "ETH".into(),
        destination: "0xabc".into(),
        amount: amount.into(),
        tx_digest: None,
        requested_by: "payments".into(),
    }
}

fn session(id: &str, signers: &[&str], presig: &str) -> EntryBody {
    EntryBody::SigningSession {
        withdrawal_id: id.into(),
        key_id: "w-hot".into(),
        execution_id: vec![1],
        participants: signers.iter().map(|s| (*s).to_owned()).collect(),
        presignature_id: Some(presig.into()),
        message_digest: [7; 32],
    }
}

#[test]
fn the_view_keeps_what_a_signer_must_not_take_from_the_coordinator() {
    let mut v = LogView::default();
    let bodies = vec![
        EntryBody::PolicyActivated {
            policy_hash: [1; 32],
            policy_version: 2,
            admin_signatures: vec![],
        },
        // An older version logged later does not replace the newest.
        EntryBody::PolicyActivated {
            policy_hash: [9; 32],
            policy_version: 1,
            admin_signatures: vec![],
        },
        requested("wd-1", "100"),
        session("wd-1", &["signer-1", "signer-2"], "ps-a"),
        // A second set asked later: the first session stays the record.
        session("wd-1", &["signer-3", "signer-4"], "ps-b"),
        requested("wd-2", "5"),
        EntryBody::Cancelled {
            withdrawal_id: "wd-2".into(),
            cancelled_by: "ops".into(),
            reason: "fraud".into(),
        },
        EntryBody::Cancelled {
            withdrawal_id: "wd-2".into(),
            cancelled_by: "later".into(),
            reason: String::new(),
        },
        EntryBody::Approval {
            withdrawal_id: "wd-3".into(),
            approver_id: "alice".into(),
            verdict: Verdict::Approve,
            statement: vec![],
            signature: vec![],
        },
        EntryBody::Approval {
            withdrawal_id: "wd-3".into(),
            approver_id: "bob".into(),
            verdict: Verdict::Reject,
            statement: vec![],
            signature: vec![],
        },
    ];
    for (i, b) in bodies.into_iter().enumerate() {
        v.apply(&at(i as u64, b), 1_000 + i as i64).unwrap();
    }
    assert_eq!(v.size, 10);
    let p = v.newest_policy.clone().unwrap();
    assert_eq!((p.index, p.version, p.hash), (0, 2, hex::encode([1u8; 32])));
    let first = v.withdrawal("wd-1").unwrap().first_signing.clone().unwrap();
    assert_eq!(first.index, 3);
    assert_eq!(first.participants, vec!["signer-1", "signer-2"]);
    assert_eq!(first.presignature_id.as_deref(), Some("ps-a"));
    assert_eq!(first.witnessed_at, 1_003);
    // Each presignature's first use is remembered, per key (case 44).
    assert_eq!(v.presignature_use("w-hot", "ps-a"), Some(3));
    assert_eq!(v.presignature_use("w-hot", "ps-b"), Some(4));
    assert_eq!(v.presignature_use("w-cold", "ps-a"), None);
    assert_eq!(
        v.withdrawal("wd-2").unwrap().cancelled,
        Some((6, "ops".to_owned()))
    );
    assert_eq!(
        v.withdrawal("wd-3").unwrap().rejected,
        Some((9, "bob".to_owned()))
    );
    assert!(v.withdrawal("wd-3").unwrap().cancelled.is_none());
    // Velocity: withdrawals with a signing session, from when it was witnessed.
    let spends = v.spends_since(1_003);
    assert_eq!(spends.len(), 1);
    assert_eq!((spends[0].id.as_str(), spends[0].amount.0), ("wd-1", 100));
    assert!(v.spends_since(1_004).is_empty());
}

#[test]
fn entries_must_come_in_order() {
    let mut v = LogView::default();
    v.apply(&at(0, requested("wd-1", "1")), 0).unwrap();
    let e = v.apply(&at(2, requested("wd-2", "1")), 0).unwrap_err();
    assert!(e.contains("index 2") && e.contains("next is 1"), "{e}");
    let e = v.apply(&at(0, requested("wd-2", "1")), 0).unwrap_err();
    assert!(e.contains("next is 1"), "{e}");
    assert_eq!(v.size, 1);
}

#[test]
fn entry_times_are_bounded_by_the_signers_clock_and_never_go_back() {
    let mut v = LogView::default();
    // Witnessed at t = 1,000 s: the coordinator's times are kept when they
    // are not in the future of the signer's clock.
    let mut e = at(0, requested("wd-1", "1"));
    e.timestamp_ms = 999_000;
    v.apply(&e, 1_000).unwrap();
    v.witnessed(1_000);
    assert_eq!(
        v.withdrawal("wd-1")
            .unwrap()
            .requested
            .as_ref()
            .unwrap()
            .at_ms,
        999_000
    );
    // A time in the future is pulled back to the signer's clock.
    let mut e = at(1, requested("wd-2", "1"));
    e.timestamp_ms = 5_000_000;
    v.apply(&e, 1_010).unwrap();
    assert_eq!(
        v.withdrawal("wd-2")
            .unwrap()
            .requested
            .as_ref()
            .unwrap()
            .at_ms,
        1_011_000
    );
    v.witnessed(1_010);
    // An entry in a later checkpoint cannot be dated before the previous
    // checkpoint (less a minute of skew), nor before the entry before it.
    let mut e = at(2, requested("wd-3", "1"));
    e.timestamp_ms = 1;
    v.apply(&e, 2_000).unwrap();
    assert_eq!(
        v.withdrawal("wd-3")
            .unwrap()
            .requested
            .as_ref()
            .unwrap()
            .at_ms,
        1_011_000
    );
}

#[test]
fn risk_history_is_what_was_signed_before_the_request() {
    let mut v = LogView::default();
    let bodies = vec![
        requested("wd-1", "100"),
        session("wd-1", &["signer-1", "signer-2"], "ps-a"),
        requested("wd-2", "200"),
        // Requested but never signed: not history.
        requested("wd-3", "300"),
        requested("wd-4", "400"),
        EntryBody::RiskScored {
            withdrawal_id: "wd-4".into(),
            provider: "custos-risk/1".into(),
            score: 12,
            details_hash: [0; 32],
        },
        // Signed after wd-4 was requested: the coordinator had not seen it
        // when it scored wd-4.
        session("wd-2", &["signer-1", "signer-2"], "ps-b"),
    ];
    for (i, b) in bodies.into_iter().enumerate() {
        let mut e = at(i as u64, b);
        e.timestamp_ms = 1_000_000 + i as u64;
        v.apply(&e, 2_000).unwrap();
    }
    let (history, at_ms) = v.risk_inputs("wd-4");
    assert_eq!(at_ms, Some(1_000_004));
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].amount, 100);
    assert_eq!(history[0].at_ms, 1_000_000);
    assert_eq!(v.withdrawal("wd-4").unwrap().risk_score, Some(12));
    // A withdrawal the log has no request for is scored on everything signed.
    let (history, at_ms) = v.risk_inputs("wd-9");
    assert_eq!(at_ms, None);
    assert_eq!(history.len(), 2);
}

/// docs/SECURITY.md case 53: a signer's pending refusal counts as logged only
/// when the log carries it exactly; a coordinator that keeps the signature
/// but rewords the refusal has not logged it.
#[test]
fn a_refusal_counts_as_logged_only_as_signed() {
    use custos_audit::refusal::Refusal;

    let genuine = Refusal {
        withdrawal_id: "wd-1".into(),
        signer: "signer-1".into(),
        request: "sign_withdrawal".into(),
        reason: "time lock: 3 s to go".into(),
        refused_at_ms: 1_000,
    };
    let signature = vec![5; 64];
    let mut reworded = genuine.clone();
    reworded.reason = "operator error".into();
    let mut v = LogView::default();
    v.apply(&at(0, reworded.clone().into_entry(signature.clone())), 10)
        .unwrap();
    assert!(v.refusal_logged(&reworded, &signature));
    assert!(!v.refusal_logged(&genuine, &signature));
    v.apply(&at(1, genuine.clone().into_entry(signature.clone())), 10)
        .unwrap();
    assert!(v.refusal_logged(&genuine, &signature));
}
