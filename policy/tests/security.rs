//! docs/SECURITY.md "Authorization" cases 10-14, at the library level. The coordinator
//! and every signer run these same calls; a refusal here is a refusal in both.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a panic is a test failure"
)]

mod common;

use common::*;
use custos_policy::*;

/// A 5 ETH withdrawal under the sample policy: 2 treasury AND 1 security.
fn setup() -> (ActivePolicy, Withdrawal, Decision, ApprovalStatement) {
    let a = active();
    let w = wd(5 * ETH);
    let d = decide(&a, &w, &[], wed10(), 0);
    let s = statement(&d, &w, wed10());
    (a, w, d, s)
}

fn satisfied(st: &ApprovalStatus) -> bool {
    matches!(st, ApprovalStatus::Satisfied { .. })
}

#[test]
fn case_10_too_few_revoked_wrong_group_or_duplicate_approvals_are_refused() {
    let (a, _, d, s) = setup();
    let (alice, bob, dave) = (
        approve(&s, "alice", ALICE),
        approve(&s, "bob", BOB),
        approve(&s, "dave", DAVE),
    );
    let table: Vec<(&str, Vec<Approval>)> = vec![
        ("too few", vec![alice.clone(), dave.clone()]),
        (
            "revoked treasurer as the second",
            vec![alice.clone(), approve(&s, "mallory", MALLORY), dave.clone()],
        ),
        (
            "security officer counted as treasury",
            vec![alice.clone(), approve(&s, "erin", ERIN), dave.clone()],
        ),
        (
            "duplicate treasurer",
            vec![alice.clone(), alice.clone(), dave.clone()],
        ),
        (
            "unknown approver",
            vec![alice.clone(), approve(&s, "eve", 99), dave.clone()],
        ),
    ];
    for (name, list) in table {
        assert!(
            !satisfied(&check_approvals(&a, &d, &s, &list, wed10())),
            "{name} was accepted"
        );
    }
    assert!(satisfied(&check_approvals(
        &a,
        &d,
        &s,
        &[alice, bob, dave],
        wed10()
    )));
}

#[test]
fn case_11_approval_over_digest_x_refused_for_signing_request_y() {
    let (a, w, d, s) = setup();
    let approvals = [
        approve(&s, "alice", ALICE),
        approve(&s, "bob", BOB),
        approve(&s, "dave", DAVE),
    ];
    // The signer rebuilds the statement from the transaction it decoded itself.
    type Mutation = Box<dyn Fn(&mut ApprovalStatement)>;
    let mutations: Vec<(&str, Mutation)> = vec![
        ("digest", Box::new(|s| s.tx_digest[0] ^= 1)),
        (
            "fee cap",
            Box::new(|s| s.fee_cap = Amount(s.fee_cap.0 * 10)),
        ),
        ("expiry", Box::new(|s| s.expiry = Timestamp(s.expiry.0 - 1))),
    ];
    for (name, m) in mutations {
        let mut y = s.clone();
        m(&mut y);
        assert!(
            !satisfied(&check_approvals(&a, &d, &y, &approvals, wed10())),
            "{name}"
        );
    }
    // Different destination, amount or chain: the signer's own decision differs too.
    for w2 in [
        Withdrawal {
            destination: PAYROLL.into(),
            ..w.clone()
        },
        Withdrawal {
            amount: Amount(6 * ETH),
            ..w.clone()
        },
        Withdrawal {
            chain: "anvil".into(),
            destination: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8".into(),
            ..w.clone()
        },
    ] {
        let d2 = decide(&a, &w2, &[], wed10(), 0);
        let s2 = ApprovalStatement::for_decision(&d2, &w2, s.expiry).unwrap();
        assert!(
            !satisfied(&check_approvals(&a, &d2, &s2, &approvals, wed10())),
            "{w2:?}"
        );
    }
}

#[test]
fn case_12_forged_or_under_signed_bundle_and_early_relaxation_are_refused() {
    let cfg = |t| admins(t);
    assert!(
        verify_bundle(FIXTURE, &signed(FIXTURE, &[ADMIN1]), &cfg(2)).is_err(),
        "under-signed"
    );
    assert!(
        verify_bundle(FIXTURE, &signed(FIXTURE, &[ALICE, BOB]), &cfg(2)).is_err(),
        "signed by non-admins"
    );
    let other = [FIXTURE, b"\n# trailing comment changes the hash\n"].concat();
    assert!(
        verify_bundle(&other, &signed(FIXTURE, &[ADMIN1, ADMIN2]), &cfg(2)).is_err(),
        "signatures for another document"
    );
    // Relaxation: the 2h cold-wallet lock removed.
    let relaxed = std::str::from_utf8(FIXTURE)
        .unwrap()
        .replacen("version = 1", "version = 2", 1)
        .replacen("delay = \"2h\"\ncancel_group = \"security\"\n", "", 1);
    let b = verify_bundle(
        relaxed.as_bytes(),
        &signed(relaxed.as_bytes(), &[ADMIN1, ADMIN2]),
        &cfg(2),
    )
    .unwrap();
    let new_hash = b.policy().hash();
    let mut st = PolicyState::genesis(
        verify_bundle(FIXTURE, &signed(FIXTURE, &[ADMIN1, ADMIN2]), &cfg(2)).unwrap(),
        Timestamp(0),
    );
    assert!(matches!(
        st.propose(b, wed10()).unwrap(),
        UpdateEffect::Delayed(_)
    ));
    assert!(matches!(
        st.policy_for(&new_hash, wed10()),
        Err(PolicyError::NotYetEffective { .. })
    ));
    let d = decide(
        st.in_force(wed10()),
        &Withdrawal {
            wallet: "eth-cold-1".into(),
            destination: COLD.into(),
            ..wd(ETH)
        },
        &[],
        wed10(),
        0,
    );
    assert_eq!(d.delay, Some(Duration(7200)), "old lock still applies");
}

#[test]
fn case_13_new_whitelist_address_inside_cooling_period_is_refused() {
    let t0 = wed10();
    // Genesis at t0: every entry cools for 24 h.
    let st = PolicyState::genesis(
        verify_bundle(FIXTURE, &signed(FIXTURE, &[ADMIN1, ADMIN2]), &admins(2)).unwrap(),
        t0,
    );
    let w = wd(ETH / 2);
    let during = Timestamp(t0.0 + 3600);
    let d = decide(st.in_force(during), &w, &[], during, 0);
    assert_ne!(d.outcome, Outcome::Allow);
    assert!(d.explain().contains("cooling period"));
    // Large amounts to the same address cannot be approved either: rule needs "whitelisted".
    let big = wd(5 * ETH);
    let d = decide(st.in_force(during), &big, &[], during, 0);
    assert!(
        matches!(d.outcome, Outcome::Block { .. }),
        "{}",
        d.explain()
    );
    let after = Timestamp(t0.0 + 86_400);
    assert_eq!(
        decide(st.in_force(after), &w, &[], after, 0).outcome,
        Outcome::Allow
    );
}

#[test]
fn case_14_velocity_split_across_small_withdrawals_is_blocked_also_by_signer_history() {
    let a = active();
    let now = wed10();
    // Ten withdrawals of 0.6 ETH, one minute apart: the 24 h cap is 5 ETH.
    let mut history = Vec::new();
    let mut outcomes = Vec::new();
    for n in 0..10 {
        let at = Timestamp(now.0 + 60 * n);
        let w = Withdrawal {
            id: format!("split-{n}"),
            ..wd(600_000_000_000_000_000)
        };
        let d = decide(&a, &w, &history, at, 0);
        outcomes.push(rule_of(&d).to_string());
        if d.outcome == Outcome::Allow {
            history.push(HistoryEntry {
                id: w.id.clone(),
                ..hist(&w.id, w.amount.0, at)
            });
        }
    }
    // 8 × 0.6 = 4.8 ETH fit; the 9th would make 5.4.
    assert_eq!(
        outcomes.iter().filter(|r| *r == "hot-small").count(),
        8,
        "{outcomes:?}"
    );
    assert_eq!(
        &outcomes[8..],
        ["hot-small-over-limit", "hot-small-over-limit"]
    );
    // A coordinator that "forgets" the history gets Allow; a signer evaluating with
    // its own record of what it signed refuses the same request.
    let w = Withdrawal {
        id: "split-9".into(),
        ..wd(600_000_000_000_000_000)
    };
    let at = Timestamp(now.0 + 600);
    assert_eq!(decide(&a, &w, &[], at, 0).outcome, Outcome::Allow);
    let signer = decide(&a, &w, &history, at, 0);
    assert!(matches!(signer.outcome, Outcome::Block { .. }));
    assert!(
        signer
            .explain()
            .contains("amount limit 5000000000000000000 EXCEEDED"),
        "{}",
        signer.explain()
    );
    // The cap frees up once the window slides past the first withdrawals.
    let next_day = Timestamp(now.0 + 86_400 + 60);
    assert_eq!(
        decide(&a, &w, &history, next_day, 0).outcome,
        Outcome::Allow
    );
}
