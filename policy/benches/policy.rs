//! Prints how long the policy operations take (`cargo bench -p custos-policy`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmark code"
)]

use std::hint::black_box;
use std::time::Instant;

use custos_policy::*;

const FIXTURE: &[u8] = include_bytes!("../tests/fixtures/policy.toml");
const ETH: u128 = 1_000_000_000_000_000_000;

fn key(seed: u8) -> SecretKey {
    SecretKey::from_seed(&Zeroizing::new([seed; 32]))
}

fn time<T>(name: &str, iters: u32, mut f: impl FnMut() -> T) {
    for _ in 0..iters / 10 + 1 {
        black_box(f());
    }
    let start = Instant::now();
    for _ in 0..iters {
        black_box(f());
    }
    let per = start.elapsed() / iters;
    println!("| {name:<50} | {iters:>7} | {:>12.1?} |", per);
}

fn main() {
    let now = Timestamp::parse("2026-01-07T10:00:00Z").unwrap();
    let active = ActivePolicy::assumed(Policy::parse(FIXTURE).unwrap(), Timestamp(0));
    let w = |amount: u128| Withdrawal {
        source: None,
        id: "wd-1".into(),
        wallet: "eth-hot-1".into(),
        chain: "ethereum".into(),
        asset: "ETH".into(),
        destination: "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed".into(),
        amount: Amount(amount),
        fee_cap: Amount(1),
        initiator: "payments-backend".into(),
        tx_digest: "11".repeat(32),
    };
    let history = |n: usize| -> Vec<HistoryEntry> {
        (0..n)
            .map(|i| HistoryEntry {
                id: format!("h{i}"),
                wallet: if i % 2 == 0 { "eth-hot-1" } else { "eth-hot-2" }.into(),
                chain: "ethereum".into(),
                asset: "ETH".into(),
                destination: "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359".into(),
                initiator: "payments-backend".into(),
                amount: Amount(1000),
                fee_cap: Amount(1),
                at: Timestamp(now.0 - i64::try_from(i).unwrap() * 60),
            })
            .collect()
    };
    let (h100, h10k) = (history(100), history(10_000));
    let big = w(5 * ETH);
    let d = evaluate(&active, &big, &[], now, 0).unwrap();
    let s = ApprovalStatement::for_decision(&d, &big, now.plus(Duration(3600))).unwrap();
    let approvals: Vec<Approval> = [("alice", 1), ("bob", 2), ("dave", 4)]
        .iter()
        .map(|&(id, seed)| Approval::sign(&s, Verdict::Approve, id, &key(seed)).unwrap())
        .collect();
    let admins = AdminSet::new(&AdminSetConfig {
        threshold: 2,
        keys: vec![key(7).public().to_hex(), key(8).public().to_hex()],
    })
    .unwrap();
    let mut sigs = BundleSignatures::new(PolicyHash::of_document(FIXTURE));
    sigs.sign(&key(7));
    sigs.sign(&key(8));

    println!("| operation (sample policy, 7 rules)                 |   iters |      per op  |");
    println!("|----------------------------------------------------|---------|--------------|");
    time("parse + validate policy document", 2_000, || {
        Policy::parse(FIXTURE).unwrap()
    });
    time("verify admin bundle (parse + 2 signatures)", 2_000, || {
        verify_bundle(FIXTURE, &sigs, &admins).unwrap()
    });
    time("evaluate, allow at rule 4, no history", 20_000, || {
        evaluate(&active, &w(ETH / 2), &[], now, 0).unwrap()
    });
    time("evaluate, velocity over 100 history entries", 5_000, || {
        evaluate(&active, &w(ETH / 2), &h100, now, 0).unwrap()
    });
    time("evaluate, velocity over 10k history entries", 200, || {
        evaluate(&active, &w(ETH / 2), &h10k, now, 0).unwrap()
    });
    time("evaluate, falls through to rule 7", 20_000, || {
        evaluate(&active, &big, &[], now, 0).unwrap()
    });
    time("statement encode", 200_000, || s.encode().unwrap());
    time(
        "check_approvals, 3 approvals (3 Ed25519 verifies)",
        5_000,
        || check_approvals(&active, &d, &s, &approvals, now),
    );
}
