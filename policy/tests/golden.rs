//! Known-answer tests: byte formats that are signed or persisted must not drift.
//! A failure here means the format changed: bump its version instead of editing
//! the golden files (set UPDATE_GOLDEN=1 only for a deliberate, new format).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a panic is a test failure"
)]

mod common;

use common::*;
use custos_policy::*;

fn golden(name: &str, actual: &str) {
    let path = format!("{}/tests/golden/{name}", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected =
        std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("missing golden file {path}"));
    assert_eq!(
        actual, expected,
        "golden file {name} differs: the format changed"
    );
}

fn sample_statement() -> ApprovalStatement {
    ApprovalStatement {
        source: None,
        withdrawal_id: "wd-0001".into(),
        chain: "ethereum".into(),
        asset: "ETH".into(),
        source_wallet: "eth-hot-1".into(),
        destination: EXCHANGE.into(),
        amount: Amount(1_500_000_000_000_000_000),
        fee_cap: Amount(2_100_000_000_000_000),
        tx_digest: (0u8..32).collect(),
        policy_hash: PolicyHash([0xab; 32]),
        rule_id: "large-whitelisted".into(),
        expiry: Timestamp(1_767_830_400),
    }
}

#[test]
fn statement_encoding_v1() {
    let s = sample_statement();
    let bytes = s.encode().unwrap();
    golden("statement_v1.hex", &format!("{}\n", hex::encode(&bytes)));
    // Hand-checked layout anchors, independent of the golden file.
    assert_eq!(&bytes[..25], b"custos.approval-statement");
    assert_eq!(bytes[25], 1, "version byte");
    assert_eq!(
        &bytes[26..30],
        &7u32.to_be_bytes(),
        "withdrawal_id length prefix"
    );
    assert_eq!(&bytes[30..37], b"wd-0001");
    assert_eq!(
        &bytes[bytes.len() - 8..],
        &1_767_830_400i64.to_be_bytes(),
        "expiry last"
    );
    assert_eq!(ApprovalStatement::decode(&bytes).unwrap(), s);
    golden(
        "statement_v1.json",
        &format!("{}\n", serde_json::to_string_pretty(&s).unwrap()),
    );
}

#[test]
fn approval_signatures_v1() {
    let s = sample_statement();
    let mut out = String::new();
    for v in [Verdict::Approve, Verdict::Reject, Verdict::Cancel] {
        let m = s.signing_message(v).unwrap();
        let a = Approval::sign(&s, v, "alice", &key(ALICE)).unwrap();
        out.push_str(&format!(
            "{v:?} message {}\n{v:?} signature {}\n",
            hex::encode(&m),
            a.signature
        ));
    }
    golden("approval_v1.txt", &out);
}

#[test]
fn policy_hash_and_bundle_signature_v1() {
    let h = PolicyHash::of_document(FIXTURE);
    assert_eq!(policy().hash(), h);
    let sigs = signed(FIXTURE, &[ADMIN1, ADMIN2]);
    let text = format!(
        "policy_hash {h}\nbundle_message {}\n{}\n",
        hex::encode(bundle_message(&h)),
        serde_json::to_string_pretty(&sigs).unwrap()
    );
    golden("bundle_v1.txt", &text);
    // Also fixes the hash function itself: SHA-256 of domain || bytes.
    use sha2::Digest;
    let mut expect = sha2::Sha256::new();
    expect.update(b"custos.policy.v1\x00");
    expect.update(FIXTURE);
    assert_eq!(h.0, <[u8; 32]>::from(expect.finalize()));
}

#[test]
fn example_policy_is_the_fixture() {
    // The demo's sample and the golden fixture start identical; if the example
    // evolves, copy it into tests/fixtures deliberately and update the golden hash.
    let example = std::fs::read(format!(
        "{}/../examples/policy.toml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let p = Policy::parse(&example).unwrap();
    assert!(
        p.warnings()
            .iter()
            .all(|w| !w.message.contains("unreachable")),
        "{:?}",
        p.warnings()
    );
}

#[test]
fn fee_bump_statement_encoding_v1() {
    let s = FeeBumpStatement {
        withdrawal_id: "wd-0001".into(),
        statement_hash: [0x11; 32],
        chain: "ethereum".into(),
        nonce: 7,
        replaces: [0x22; 32],
        replacement: [0x33; 32],
        max_fee_per_gas: 30_000_000_000,
        max_priority_fee_per_gas: 1_500_000_000,
        gas_limit: 21_000,
        policy_hash: PolicyHash([0xab; 32]),
        rule_id: "large-whitelisted".into(),
        expiry: Timestamp(1_767_830_400),
    };
    let bytes = s.encode().unwrap();
    golden("fee_bump_v1.hex", &format!("{}\n", hex::encode(&bytes)));
    assert_eq!(&bytes[..25], b"custos.fee-bump-statement");
    assert_eq!(bytes[25], 1, "version byte");
    let approve = s.signing_message(Verdict::Approve).unwrap();
    assert_eq!(&approve[..19], b"custos.fee-bump.v1\x00");
    assert_eq!(approve[19], 1);
    let sig = s.sign(Verdict::Approve, "alice", &key(ALICE)).unwrap();
    golden("fee_bump_approval_v1.txt", &format!("{}\n", sig.signature));
}

#[test]
fn history_entry_json_v1() {
    // Velocity history as callers persist and pass it (`custos policy explain
    // --history`). `fee_cap` was added later with a default: the old form, without
    // it, must keep parsing (as a fee cap of 0).
    let e = HistoryEntry {
        fee_cap: Amount(2_100_000_000_000_000),
        ..hist("wd-0000", 4 * ETH, Timestamp(1_767_772_800))
    };
    let json = serde_json::to_string_pretty(&e).unwrap();
    golden("history_entry_v1.json", &format!("{json}\n"));
    assert_eq!(serde_json::from_str::<HistoryEntry>(&json).unwrap(), e);
    let mut old: serde_json::Value = serde_json::from_str(&json).unwrap();
    old.as_object_mut().unwrap().remove("fee_cap");
    let parsed: HistoryEntry = serde_json::from_value(old).unwrap();
    assert_eq!(
        parsed,
        HistoryEntry {
            fee_cap: Amount(0),
            ..e
        }
    );
}
