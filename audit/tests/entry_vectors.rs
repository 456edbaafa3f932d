//! Every entry kind against bytes computed independently by
//! `vectors/entries.py` (struct only, written from the documented format):
//! the encoder must produce them byte for byte, and the decoder must give
//! back the same value, so entries already in logs keep verifying.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use custos_audit::Hash;
use custos_audit::entry::{
    AddressBookAction, AdminSignature, DecisionOutcome, Entry, EntryBody, MembershipAction,
    ShareChange, Verdict, WithdrawalStatus,
};

const STATUSES: [(&str, WithdrawalStatus); 15] = [
    ("requested", WithdrawalStatus::Requested),
    ("risk_scored", WithdrawalStatus::RiskScored),
    ("policy_evaluated", WithdrawalStatus::PolicyEvaluated),
    ("blocked", WithdrawalStatus::Blocked),
    ("awaiting_approvals", WithdrawalStatus::AwaitingApprovals),
    ("approved", WithdrawalStatus::Approved),
    ("time_locked", WithdrawalStatus::TimeLocked),
    ("signing", WithdrawalStatus::Signing),
    ("signed", WithdrawalStatus::Signed),
    ("broadcast", WithdrawalStatus::Broadcast),
    ("confirmed", WithdrawalStatus::Confirmed),
    ("rejected", WithdrawalStatus::Rejected),
    ("cancelled", WithdrawalStatus::Cancelled),
    ("expired", WithdrawalStatus::Expired),
    ("failed", WithdrawalStatus::Failed),
];

fn h(n: u8) -> Hash {
    [n; 32]
}

fn sig(admin: &str, byte: u8) -> AdminSignature {
    AdminSignature {
        admin_id: admin.into(),
        signature: vec![byte; 64],
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// The same entries, in the same order, as `entries.py`.
fn bodies() -> Vec<(String, EntryBody)> {
    let mut out: Vec<(String, EntryBody)> = Vec::new();
    let mut add = |name: &str, body: EntryBody| out.push((name.to_owned(), body));
    add(
        "key_created",
        EntryBody::KeyCreated {
            key_id: "key-1".into(),
            scheme: "ecdsa-secp256k1".into(),
            participants: strings(&["signer-1", "signer-2", "signer-3"]),
            threshold: 2,
            public_key: vec![2; 33],
        },
    );
    add(
        "key_created_empty",
        EntryBody::KeyCreated {
            key_id: String::new(),
            scheme: String::new(),
            participants: vec![],
            threshold: 0,
            public_key: vec![],
        },
    );
    add(
        "policy_activated",
        EntryBody::PolicyActivated {
            policy_hash: h(1),
            policy_version: 7,
            admin_signatures: vec![sig("admin-1", 9), sig("admin-2", 10)],
        },
    );
    for (name, action) in [
        ("added", AddressBookAction::Added),
        ("removed", AddressBookAction::Removed),
    ] {
        add(
            &format!("address_book_{name}"),
            EntryBody::AddressBookChanged {
                chain: "anvil".into(),
                address: "0x00000000000000000000000000000000000000aa".into(),
                label: "Trésorerie €".into(),
                action,
                effective_at_ms: 1_764_072_000_000 + 86_400_000,
                admin_signatures: vec![sig("admin-1", 9)],
            },
        );
    }
    for (name, id, amount, tx_digest) in [
        (
            "withdrawal_requested",
            "wd-1",
            "1500000000000000000",
            Some(h(2)),
        ),
        ("withdrawal_requested_zero_no_digest", "wd-2", "0", None),
    ] {
        add(
            name,
            EntryBody::WithdrawalRequested {
                withdrawal_id: id.into(),
                key_id: "key-1".into(),
                chain: "anvil".into(),
                asset: "ETH".into(),
                destination: "0xdest".into(),
                amount: amount.into(),
                tx_digest,
                requested_by: "backend".into(),
            },
        );
    }
    add(
        "risk_scored",
        EntryBody::RiskScored {
            withdrawal_id: "wd-1".into(),
            provider: "builtin".into(),
            score: 4_000_000_000,
            details_hash: h(3),
        },
    );
    for (name, rule, outcome) in [
        ("allow", "small", DecisionOutcome::Allow),
        (
            "approvals",
            "large",
            DecisionOutcome::RequireApprovals { quorum: 3 },
        ),
        ("deny", "blocked", DecisionOutcome::Deny),
    ] {
        add(
            &format!("policy_decision_{name}"),
            EntryBody::PolicyDecision {
                withdrawal_id: "wd-1".into(),
                policy_hash: h(1),
                rule_id: rule.into(),
                outcome,
                explanation_hash: h(4),
            },
        );
    }
    for (name, verdict) in [("approve", Verdict::Approve), ("reject", Verdict::Reject)] {
        add(
            &format!("approval_{name}"),
            EntryBody::Approval {
                withdrawal_id: "wd-1".into(),
                approver_id: "alice".into(),
                verdict,
                statement: b"custos.approval\x01".to_vec(),
                signature: vec![7; 64],
            },
        );
    }
    add(
        "cancelled",
        EntryBody::Cancelled {
            withdrawal_id: "wd-1".into(),
            cancelled_by: "ops".into(),
            reason: String::new(),
        },
    );
    for (name, status) in STATUSES {
        add(
            &format!("status_{name}"),
            EntryBody::StatusChanged {
                withdrawal_id: "wd-1".into(),
                status,
                reason: format!("because {name}"),
            },
        );
    }
    for (name, participants, presig) in [
        (
            "signing_session",
            ["signer-1", "signer-2"],
            Some("presig-9"),
        ),
        ("signing_session_no_presig", ["signer-1", "signer-3"], None),
    ] {
        add(
            name,
            EntryBody::SigningSession {
                withdrawal_id: "wd-1".into(),
                key_id: "key-1".into(),
                execution_id: vec![5; 32],
                participants: strings(&participants),
                presignature_id: presig.map(str::to_owned),
                message_digest: h(6),
            },
        );
    }
    add(
        "signature_produced",
        EntryBody::SignatureProduced {
            withdrawal_id: "wd-1".into(),
            key_id: "key-1".into(),
            execution_id: vec![5; 32],
            message_digest: h(6),
            signature: vec![8; 65],
        },
    );
    add(
        "transaction_broadcast",
        EntryBody::TransactionBroadcast {
            withdrawal_id: "wd-1".into(),
            chain: "anvil".into(),
            txid: "0xfeed".into(),
        },
    );
    add(
        "confirmed",
        EntryBody::Confirmed {
            withdrawal_id: "wd-1".into(),
            chain: "anvil".into(),
            txid: "0xfeed".into(),
            block_height: (1 << 63) + 5,
            confirmations: 12,
        },
    );
    for (name, action) in [
        ("joined", MembershipAction::Joined),
        ("left", MembershipAction::Left),
        ("key_rotated", MembershipAction::KeyRotated),
    ] {
        add(
            &format!("membership_{name}"),
            EntryBody::MembershipChanged {
                node_id: "signer-4".into(),
                action,
                public_key: vec![1; 32],
                admin_signatures: vec![sig("admin-1", 9)],
            },
        );
    }
    add(
        "key_locked",
        EntryBody::KeyLockChanged {
            key_id: "key-1".into(),
            locked: true,
            actor: "coordinator".into(),
            reason: "3 unexplained failures".into(),
        },
    );
    add(
        "key_unlocked",
        EntryBody::KeyLockChanged {
            key_id: "key-1".into(),
            locked: false,
            actor: "admin-1".into(),
            reason: "investigated".into(),
        },
    );
    for (name, verdict) in [("approve", Verdict::Approve), ("reject", Verdict::Reject)] {
        add(
            &format!("fee_bump_approval_{name}"),
            EntryBody::FeeBumpApproval {
                withdrawal_id: "wd-1".into(),
                approver_id: "bob".into(),
                verdict,
                statement: b"custos.fee-bump-statement\x01".to_vec(),
                signature: vec![6; 64],
            },
        );
    }
    add(
        "transaction_prepared",
        EntryBody::TransactionPrepared {
            withdrawal_id: "wd-1".into(),
            chain: "anvil".into(),
            unsigned_tx: vec![0x02, 0xf8, 0x6f],
        },
    );
    add(
        "signing_refused",
        EntryBody::SigningRefused {
            withdrawal_id: "wd-1".into(),
            signer: "signer-2".into(),
            request: "sign_withdrawal".into(),
            reason: "time lock \u{2014} signable in 3 s".into(),
            refused_at_ms: 1_764_072_000_005,
            signature: vec![0x0a; 64],
        },
    );
    add(
        "share_exported",
        EntryBody::ShareExported {
            key_id: "key-1".into(),
            signer: "signer-3".into(),
            party_index: 2,
            recipient_fingerprint: h(11),
            backup_hash: h(12),
            actor: "admin".into(),
        },
    );
    add(
        "key_shares_refreshed",
        EntryBody::KeySharesChanged {
            key_id: "key-2".into(),
            change: ShareChange::Refresh,
            generation: 1,
            signers: vec!["signer-1".into(), "signer-2".into(), "signer-3".into()],
            repaired: String::new(),
            public_key: vec![0x0d; 32],
            package_hash: h(13),
            actor: "admin".into(),
        },
    );
    add(
        "key_share_repaired",
        EntryBody::KeySharesChanged {
            key_id: "key-2".into(),
            change: ShareChange::Repair,
            generation: 1,
            signers: vec!["signer-1".into(), "signer-3".into(), "signer-2".into()],
            repaired: "signer-2".into(),
            public_key: vec![0x0d; 32],
            package_hash: h(14),
            actor: "admin".into(),
        },
    );
    add(
        "key_rotation_started",
        EntryBody::KeyRotationStarted {
            key_id: "key-1".into(),
            new_key_id: "key-3".into(),
            new_address: "0x00000000000000000000000000000000000000bb".into(),
            actor: "admin".into(),
        },
    );
    add(
        "key_retired",
        EntryBody::KeyRetired {
            key_id: "key-1".into(),
            public_key: vec![2; 33],
            successor: "key-3".into(),
            actor: "admin".into(),
            reason: "rotated to key-3".into(),
        },
    );
    add(
        "key_shares_destroyed",
        EntryBody::KeySharesDestroyed {
            key_id: "key-1".into(),
            signers: strings(&["signer-1", "signer-2", "signer-3"]),
            retirement_index: 41,
        },
    );
    add(
        "address_derived",
        EntryBody::AddressDerived {
            key_id: "key-1".into(),
            chain: "ethereum".into(),
            path: "m/0/7".into(),
            address: "0x00000000000000000000000000000000000000cc".into(),
            public_key: vec![3; 33],
            chain_code: vec![0x0e; 32],
            actor: "backend".into(),
        },
    );
    add(
        "deposit_credited",
        EntryBody::DepositCredited {
            chain: "ethereum".into(),
            key_id: "key-1".into(),
            address: "0x00000000000000000000000000000000000000cc".into(),
            asset: "ETH".into(),
            amount: "10000000000000000000".into(),
            reference: "ethereum:0xfeed".into(),
            block_number: 812,
            block_hash: "0xb10c".into(),
        },
    );
    add(
        "deposit_reversed",
        EntryBody::DepositReversed {
            chain: "litecoin".into(),
            key_id: "key-2".into(),
            asset: "LTC".into(),
            amount: "250000".into(),
            reference: "litecoin:ab:1".into(),
            block_number: 1 << 40,
            block_hash: "00ff".into(),
            reason: "block 1099511627776 is now 00ee".into(),
        },
    );
    out
}

fn vectors() -> (u64, Vec<(String, Vec<u8>)>) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/entries.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let t0 = v["t0"].as_u64().unwrap();
    let entries = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                hex::decode(e["hex"].as_str().unwrap()).unwrap(),
            )
        })
        .collect();
    (t0, entries)
}

#[test]
fn every_kind_encodes_and_decodes_as_the_independent_vectors() {
    let (t0, vectors) = vectors();
    let bodies = bodies();
    assert_eq!(
        bodies.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        vectors.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        "entries.py and this test list different entries"
    );
    let mut kinds: Vec<u16> = Vec::new();
    for (i, ((name, body), (_, want))) in bodies.into_iter().zip(vectors).enumerate() {
        let entry = Entry {
            index: i as u64,
            timestamp_ms: t0 + i as u64,
            body,
        };
        assert_eq!(
            hex::encode(entry.encode().unwrap()),
            hex::encode(&want),
            "encoding of {name}"
        );
        assert_eq!(Entry::decode(&want).unwrap(), entry, "decoding of {name}");
        kinds.push(entry.body.kind());
    }
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(
        kinds,
        (1..=26).collect::<Vec<u16>>(),
        "every kind is covered"
    );
}

#[test]
fn every_vector_refuses_truncation_and_trailing_bytes() {
    let (_, vectors) = vectors();
    for (name, bytes) in vectors {
        for cut in 0..bytes.len() {
            assert!(
                Entry::decode(&bytes[..cut]).is_err(),
                "{name} decoded from its first {cut} bytes"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(
            Entry::decode(&longer).is_err(),
            "{name} with a trailing byte"
        );
    }
}
