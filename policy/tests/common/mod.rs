//! Shared fixtures for the policy integration tests.
#![allow(dead_code, reason = "each test crate uses a subset")]

use custos_policy::*;

/// The sample policy (a frozen copy of examples/policy.toml).
pub const FIXTURE: &[u8] = include_bytes!("../fixtures/policy.toml");

/// Seeds of the demo keys (examples/keys): alice = 1 … admin2 = 8.
pub const ALICE: u8 = 1;
pub const BOB: u8 = 2;
pub const CAROL: u8 = 3;
pub const DAVE: u8 = 4;
pub const ERIN: u8 = 5;
pub const MALLORY: u8 = 6;
pub const ADMIN1: u8 = 7;
pub const ADMIN2: u8 = 8;
pub const ADMIN3: u8 = 9;

pub const EXCHANGE: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
pub const PAYROLL: &str = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359";
pub const COLD: &str = "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB";
pub const OLD_VENDOR: &str = "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb";
/// Checksummed address in no address book.
pub const STRANGER: &str = "0x52908400098527886E0F7030069857D2E4169EE7";

pub const ETH: u128 = 1_000_000_000_000_000_000;

pub fn key(seed: u8) -> SecretKey {
    SecretKey::from_seed(&Zeroizing::new([seed; 32]))
}

pub fn policy() -> Policy {
    Policy::parse(FIXTURE).unwrap()
}

/// The fixture, in force since 1970 (every address past its cooling period).
pub fn active() -> ActivePolicy {
    ActivePolicy::assumed(policy(), Timestamp(0))
}

pub fn ts(s: &str) -> Timestamp {
    Timestamp::parse(s).unwrap()
}

/// Wednesday 2026-01-07 10:00 UTC: inside the fixture's business hours.
pub fn wed10() -> Timestamp {
    ts("2026-01-07T10:00:00Z")
}

pub fn wd(amount: u128) -> Withdrawal {
    Withdrawal {
        source: None,
        id: "wd-1".into(),
        wallet: "eth-hot-1".into(),
        chain: "ethereum".into(),
        asset: "ETH".into(),
        destination: EXCHANGE.into(),
        amount: Amount(amount),
        fee_cap: Amount(2_100_000_000_000_000),
        initiator: "payments-backend".into(),
        tx_digest: "11".repeat(32),
    }
}

pub fn hist(id: &str, amount: u128, at: Timestamp) -> HistoryEntry {
    HistoryEntry {
        id: id.into(),
        wallet: "eth-hot-1".into(),
        chain: "ethereum".into(),
        asset: "ETH".into(),
        destination: PAYROLL.into(),
        initiator: "payments-backend".into(),
        amount: Amount(amount),
        fee_cap: Amount(0),
        at,
    }
}

pub fn decide(
    a: &ActivePolicy,
    w: &Withdrawal,
    h: &[HistoryEntry],
    now: Timestamp,
    risk: u32,
) -> Decision {
    evaluate(a, w, h, now, risk).unwrap()
}

pub fn rule_of(d: &Decision) -> &str {
    d.rule_id.as_deref().unwrap_or("<default block>")
}

/// The fixture's header (settings, book, approvers, groups) followed by `rules`.
pub fn with_rules(rules: &str) -> Policy {
    let text = std::str::from_utf8(FIXTURE).unwrap();
    let head = &text[..text.find("# 1. Anything").unwrap()];
    Policy::parse(format!("{head}\n{rules}").as_bytes()).unwrap_or_else(|e| panic!("{e}\n{rules}"))
}

/// Proptest settings with a fixed seed: the same cases on every machine.
pub fn seeded(cases: u32, seed: u64) -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases,
        rng_seed: proptest::test_runner::RngSeed::Fixed(seed),
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    }
}

/// The validation errors of the fixture's header followed by `rules`, one a line.
pub fn errs(rules: &str) -> String {
    with_rules_err(rules)
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn with_rules_err(rules: &str) -> Vec<Issue> {
    let text = std::str::from_utf8(FIXTURE).unwrap();
    let head = &text[..text.find("# 1. Anything").unwrap()];
    match Policy::parse(format!("{head}\n{rules}").as_bytes()) {
        Err(PolicyError::Invalid(v)) => v,
        other => panic!("expected validation errors, got {other:?}"),
    }
}

/// Statement for a decision, expiring an hour after `now`.
pub fn statement(d: &Decision, w: &Withdrawal, now: Timestamp) -> ApprovalStatement {
    ApprovalStatement::for_decision(d, w, now.plus(Duration(3600))).unwrap()
}

pub fn approve(s: &ApprovalStatement, id: &str, seed: u8) -> Approval {
    Approval::sign(s, Verdict::Approve, id, &key(seed)).unwrap()
}

pub fn admins(threshold: usize) -> AdminSet {
    AdminSet::new(&AdminSetConfig {
        threshold,
        keys: [ADMIN1, ADMIN2, ADMIN3]
            .iter()
            .map(|&s| key(s).public().to_hex())
            .collect(),
    })
    .unwrap()
}

pub fn signed(doc: &[u8], seeds: &[u8]) -> BundleSignatures {
    let mut s = BundleSignatures::new(PolicyHash::of_document(doc));
    for &k in seeds {
        s.sign(&key(k));
    }
    s
}
