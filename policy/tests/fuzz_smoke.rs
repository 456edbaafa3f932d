//! Runs the cargo-fuzz target's body (`custos_policy::fuzz_parse`) on seeded
//! random and mutated inputs under the stable toolchain, so "no panic on any
//! input" is checked on every test run, not only when someone fuzzes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a panic is a test failure"
)]

mod common;

use common::*;
use custos_policy::*;
use proptest::prelude::*;

fn statement_bytes() -> Vec<u8> {
    ApprovalStatement {
        source: None,
        withdrawal_id: "wd".into(),
        chain: "ethereum".into(),
        asset: "ETH".into(),
        source_wallet: "w".into(),
        destination: EXCHANGE.into(),
        amount: Amount(5),
        fee_cap: Amount(1),
        tx_digest: vec![1; 32],
        policy_hash: PolicyHash([7; 32]),
        rule_id: "r".into(),
        expiry: Timestamp(1),
    }
    .encode()
    .unwrap()
}

proptest! {
    #![proptest_config(seeded(2000, 0xF022))]

    #[test]
    fn random_bytes(data in prop::collection::vec(any::<u8>(), 0..512)) {
        prop_assert!(!fuzz_parse(&data));
    }

    #[test]
    fn mutated_policy(edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8)) {
        let mut doc = FIXTURE.to_vec();
        for (at, byte, op) in edits {
            let len = doc.len();
            let i = at.index(len.max(1));
            match op {
                0 if len > 0 => doc[i.min(len - 1)] = byte,
                1 => doc.insert(i.min(len), byte),
                _ if len > 0 => {
                    doc.remove(i.min(len - 1));
                }
                _ => {}
            }
        }
        prop_assert!(!fuzz_parse(&doc));
    }

    #[test]
    fn mutated_statement(edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6), cut in any::<prop::sample::Index>()) {
        let mut b = statement_bytes();
        for (at, byte) in edits {
            let i = at.index(b.len());
            b[i] = byte;
        }
        let keep = cut.index(b.len() + 1);
        prop_assert!(!fuzz_parse(&b));
        prop_assert!(!fuzz_parse(&b[..keep]));
    }

    #[test]
    fn toml_shaped_noise(s in "(version = [0-9]{1,25}\n|\\[\\[rules\\]\\]\n|id = \"[a-z]{0,3}\"\n|action = \"(allow|block|require_approvals)\"\n|amount = \\{ max = \"?-?[0-9]{0,45}\"? \\}\n|time = \\{ from_hour = [0-9]{1,3}, to_hour = [0-9]{1,3} \\}\n|velocity = \\{ window = \"[0-9]{0,22}[smhd]\", per = \\[\"asset\"\\], max_amount = [0-9]{1,20} \\}\n|risk = \\{ min = [0-9]{1,11} \\}\n){0,12}") {
        prop_assert!(!fuzz_parse(s.as_bytes()));
    }
}

#[test]
fn deep_nesting_does_not_overflow_the_stack() {
    let deep_json = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    fuzz_parse(format!("{{\"version\": {deep_json}}}").as_bytes());
    let deep_toml = format!("version = {}{}", "[".repeat(100_000), "]".repeat(100_000));
    fuzz_parse(deep_toml.as_bytes());
}
