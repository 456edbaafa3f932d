//! Seeded property tests: the same seed runs the same cases on every machine.

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

const WALLETS: &[&str] = &["eth-hot-1", "eth-cold-1", "anvil-hot-1", "eth-hot-2"];
const DESTS: &[&str] = &[EXCHANGE, PAYROLL, COLD, OLD_VENDOR, STRANGER];
const INITIATORS: &[&str] = &["payments-backend", "alice", "dave", "other"];
const APPROVERS: &[(&str, u8)] = &[
    ("alice", ALICE),
    ("bob", BOB),
    ("carol", CAROL),
    ("dave", DAVE),
    ("erin", ERIN),
    ("mallory", MALLORY),
];

fn withdrawal() -> impl Strategy<Value = Withdrawal> {
    (
        0..WALLETS.len(),
        0..DESTS.len(),
        0..INITIATORS.len(),
        1u128..20 * ETH,
        prop::bool::ANY,
    )
        .prop_map(|(w, d, i, amount, usd)| Withdrawal {
            wallet: WALLETS[w].into(),
            destination: DESTS[d].into(),
            initiator: INITIATORS[i].into(),
            asset: if usd { "USDC".into() } else { "ETH".into() },
            ..wd(amount)
        })
}

fn history() -> impl Strategy<Value = Vec<HistoryEntry>> {
    prop::collection::vec((0..WALLETS.len(), 0i64..200_000, 1u128..3 * ETH), 0..12).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(n, (w, ago, amount))| HistoryEntry {
                wallet: WALLETS[w].into(),
                ..hist(&format!("h{n}"), amount, Timestamp(wed10().0 - ago))
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(seeded(256, 0x00C0_5705))]

    #[test]
    fn evaluation_is_deterministic(w in withdrawal(), h in history(), offset in 0i64..14 * 86_400, risk in 0u32..100) {
        let now = Timestamp(wed10().0 + offset);
        let a = active();
        let first = evaluate(&a, &w, &h, now, risk).unwrap();
        // Same inputs, independently re-parsed policy, shuffled history: same decision.
        let b = ActivePolicy::assumed(Policy::parse(FIXTURE).unwrap(), Timestamp(0));
        let mut rev = h.clone();
        rev.reverse();
        prop_assert_eq!(&first, &evaluate(&b, &w, &rev, now, risk).unwrap());
        prop_assert_eq!(first.explain(), evaluate(&a, &w, &h, now, risk).unwrap().explain());
    }

    #[test]
    fn adding_an_approval_never_turns_satisfied_into_missing(
        // Mostly distinct, valid approvers so that `Satisfied` is common; sometimes noise.
        valid in prop::sample::subsequence(vec![0usize, 1, 2, 3, 4], 0..=5).prop_shuffle(),
        noise in prop::collection::vec((0..APPROVERS.len(), prop::bool::weighted(0.1)), 0..2),
        extra in (0..APPROVERS.len(), prop::bool::weighted(0.1)),
    ) {
        let picks: Vec<(usize, bool)> = valid.into_iter().map(|i| (i, false)).chain(noise).collect();
        let a = active();
        let w = wd(5 * ETH);
        let d = decide(&a, &w, &[], wed10(), 0);
        let s = statement(&d, &w, wed10());
        let mk = |(i, reject): (usize, bool)| {
            let (id, seed) = APPROVERS[i];
            Approval::sign(&s, if reject { Verdict::Reject } else { Verdict::Approve }, id, &key(seed)).unwrap()
        };
        let mut list: Vec<Approval> = picks.into_iter().map(mk).collect();
        let before = check_approvals(&a, &d, &s, &list, wed10());
        list.push(mk(extra));
        let after = check_approvals(&a, &d, &s, &list, wed10());
        if matches!(before, ApprovalStatus::Satisfied { .. }) {
            prop_assert!(!matches!(after, ApprovalStatus::Missing { .. }), "{:?} -> {:?}", before, after);
        }
        // And valid progress is monotone: fewer or equal approvals still needed.
        if let (ApprovalStatus::Missing { missing: m0, .. }, ApprovalStatus::Missing { missing: m1, .. }) = (&before, &after) {
            let need = |m: &Vec<MissingTerm>| m.iter().map(|t| t.still_needed).sum::<usize>();
            prop_assert!(need(m1) <= need(m0));
        }
    }

    #[test]
    fn a_duplicated_approver_never_counts_twice(picks in prop::collection::vec(0..5usize, 1..10)) {
        let a = active();
        let w = wd(5 * ETH);
        let d = decide(&a, &w, &[], wed10(), 0);
        let s = statement(&d, &w, wed10());
        let list: Vec<Approval> = picks.iter().map(|&i| approve(&s, APPROVERS[i].0, APPROVERS[i].1)).collect();
        let distinct: std::collections::BTreeSet<usize> = picks.iter().copied().collect();
        match check_approvals(&a, &d, &s, &list, wed10()) {
            ApprovalStatus::Satisfied { approvers } => {
                prop_assert_eq!(distinct.len(), picks.len(), "satisfied despite a duplicate");
                prop_assert!(approvers.len() >= 3);
                let uniq: std::collections::BTreeSet<&String> = approvers.iter().collect();
                prop_assert_eq!(uniq.len(), approvers.len());
            }
            ApprovalStatus::Missing { approvers, .. } => {
                prop_assert_eq!(distinct.len(), picks.len());
                prop_assert!(approvers.len() < 3);
            }
            ApprovalStatus::Invalid { problems } => {
                prop_assert!(distinct.len() < picks.len());
                prop_assert!(problems.iter().all(|p| p.reason.contains("duplicate")));
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }

    #[test]
    fn first_match_order_is_respected(
        rules in prop::collection::vec((0u128..10, 0u128..10, 0usize..3, prop::bool::ANY, 0u32..60, prop::bool::ANY), 1..7),
        amount in 1u128..12,
        wallet in 0usize..3,
        risk in 0u32..100,
    ) {
        let wallets = ["eth-hot-1", "eth-cold-1", "anvil-hot-1"];
        let mut text = String::new();
        for (n, (lo, span, wi, with_wallet, rmin, block)) in rules.iter().enumerate() {
            text.push_str(&format!("[[rules]]\nid = \"r{n}\"\namount = {{ min = {lo}, max = {} }}\nrisk = {{ min = {rmin} }}\n", lo + span));
            if *with_wallet {
                text.push_str(&format!("wallets = [\"{}\"]\n", wallets[*wi]));
            }
            text.push_str(if *block { "action = \"block\"\nreason = \"b\"\n" } else { "action = \"allow\"\n" });
        }
        let p = with_rules(&text);
        let w = Withdrawal { wallet: wallets[wallet].into(), ..wd(amount) };
        let d = decide(&ActivePolicy::assumed(p.clone(), Timestamp(0)), &w, &[], wed10(), risk);
        // The reference: the lowest index whose rule, alone, matches.
        let expected = rules.iter().enumerate().position(|(_, (lo, span, wi, with_wallet, rmin, _))| {
            *lo <= amount && amount <= lo + span && risk >= *rmin && (!with_wallet || wallets[*wi] == wallets[wallet])
        });
        prop_assert_eq!(d.rule_index, expected);
        prop_assert_eq!(d.trace.len(), expected.map_or(rules.len(), |i| i + 1));
    }

    #[test]
    fn velocity_sums_never_overflow(amounts in prop::collection::vec(prop_oneof![Just(u128::MAX), u128::MAX / 2..=u128::MAX, 1u128..1000], 0..8), this in 1u128..=u128::MAX, limit in prop_oneof![Just(u128::MAX), 1u128..=u128::MAX]) {
        let p = with_rules(&format!(
            "[[rules]]\nid = \"v\"\nvelocity = {{ window = \"1d\", per = [\"asset\"], max_amount = \"{limit}\" }}\naction = \"allow\"\n"
        ));
        let a = ActivePolicy::assumed(p, Timestamp(0));
        let h: Vec<HistoryEntry> = amounts.iter().enumerate().map(|(n, &x)| hist(&format!("h{n}"), x, Timestamp(wed10().0 - 60))).collect();
        let d = evaluate(&a, &wd(this), &h, wed10(), 0).unwrap();
        let exact = amounts.iter().try_fold(this, |acc, &x| acc.checked_add(x));
        let within = exact.is_some_and(|s| s <= limit);
        prop_assert_eq!(d.rule_id.is_some(), within, "sum {:?} limit {}", exact, limit);
    }

    #[test]
    fn any_changed_statement_byte_invalidates_its_approvals(pos in any::<prop::sample::Index>(), xor in 1u8..=255) {
        let a = active();
        let w = wd(5 * ETH);
        let d = decide(&a, &w, &[], wed10(), 0);
        let s = statement(&d, &w, wed10());
        let approvals = [approve(&s, "alice", ALICE), approve(&s, "bob", BOB), approve(&s, "dave", DAVE)];
        let ok = matches!(check_approvals(&a, &d, &s, &approvals, wed10()), ApprovalStatus::Satisfied { .. });
        prop_assert!(ok);
        let mut bytes = s.encode().unwrap();
        let i = pos.index(bytes.len());
        bytes[i] ^= xor;
        if let Ok(changed) = ApprovalStatement::decode(&bytes) {
            prop_assert_ne!(&changed, &s);
            let st = check_approvals(&a, &d, &changed, &approvals, wed10());
            prop_assert!(matches!(st, ApprovalStatus::Invalid { .. }), "{:?}", st);
            // Even a checker that skipped the field comparison: no signature verifies.
            for ap in &approvals {
                let single = check_approvals(&a, &d, &changed, std::slice::from_ref(ap), wed10());
                let ApprovalStatus::Invalid { problems } = single else { return Err(TestCaseError::fail("accepted")) };
                prop_assert!(problems.iter().any(|p| p.index == Some(0)));
            }
        }
    }

    #[test]
    fn statement_encoding_round_trips_canonically(
        id in "[a-z0-9-]{1,40}", amount in any::<u128>(), fee in any::<u128>(),
        digest in prop::collection::vec(any::<u8>(), 0..64), expiry in 0i64..4_000_000_000,
    ) {
        let s = ApprovalStatement {
            source: None,
            withdrawal_id: id, chain: "ethereum".into(), asset: "ETH".into(), source_wallet: "w".into(),
            destination: EXCHANGE.into(), amount: Amount(amount), fee_cap: Amount(fee), tx_digest: digest,
            policy_hash: PolicyHash([3; 32]), rule_id: "r".into(), expiry: Timestamp(expiry),
        };
        let b = s.encode().unwrap();
        prop_assert_eq!(ApprovalStatement::decode(&b).unwrap(), s);
        let mut longer = b.clone();
        longer.push(0);
        prop_assert!(ApprovalStatement::decode(&longer).is_err());
        prop_assert!(ApprovalStatement::decode(&b[..b.len() - 1]).is_err());
    }
}
