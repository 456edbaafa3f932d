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
