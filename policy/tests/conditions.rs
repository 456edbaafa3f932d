//! Table tests: each rule condition and action, with boundaries.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a panic is a test failure"
)]

mod common;

use common::*;
use custos_policy::*;

fn outcome_rule(
    p: Policy,
    w: &Withdrawal,
    h: &[HistoryEntry],
    now: Timestamp,
    risk: u32,
) -> String {
    let a = ActivePolicy::assumed(p, Timestamp(0));
    rule_of(&decide(&a, w, h, now, risk)).to_string()
}

/// A single `allow` rule with `cond`, so "matched" = rule id, else default block.
fn one(cond: &str) -> Policy {
    with_rules(&format!(
        "[[rules]]\nid = \"r\"\n{cond}\naction = \"allow\"\n"
    ))
}

#[test]
fn amount_bounds_are_inclusive() {
    let p = || one("amount = { min = 100, max = \"1000000000000000000\" }");
    let cases: &[(u128, bool)] = &[
        (99, false),
        (100, true),
        (101, true),
        (ETH - 1, true),
        (ETH, true),
        (ETH + 1, false),
    ];
    for &(amount, hit) in cases {
        let r = outcome_rule(p(), &wd(amount), &[], wed10(), 0);
        assert_eq!(r == "r", hit, "amount {amount}");
    }
    // Unbounded max reaches u128::MAX.
    assert_eq!(
        outcome_rule(one("amount = { min = 1 }"), &wd(u128::MAX), &[], wed10(), 0),
        "r"
    );
}

#[test]
fn wallet_and_wallet_group() {
    let mut w = wd(1);
    assert_eq!(
        outcome_rule(one("wallets = [\"eth-hot-1\"]"), &w, &[], wed10(), 0),
        "r"
    );
    assert_eq!(
        outcome_rule(one("wallet_groups = [\"hot\"]"), &w, &[], wed10(), 0),
        "r"
    );
    w.wallet = "eth-cold-1".into();
    assert_ne!(
        outcome_rule(one("wallet_groups = [\"hot\"]"), &w, &[], wed10(), 0),
        "r"
    );
    assert_eq!(
        outcome_rule(
            one("wallets = [\"x\"]\nwallet_groups = [\"cold\"]"),
            &w,
            &[],
            wed10(),
            0
        ),
        "r"
    );
}

#[test]
fn chain_and_asset() {
    let w = wd(1);
    assert_eq!(
        outcome_rule(
            one("chains = [\"ethereum\"]\nassets = [\"ETH\"]"),
            &w,
            &[],
            wed10(),
            0
        ),
        "r"
    );
    assert_ne!(
        outcome_rule(one("chains = [\"anvil\"]"), &w, &[], wed10(), 0),
        "r"
    );
    assert_ne!(
        outcome_rule(one("assets = [\"USDC\"]"), &w, &[], wed10(), 0),
        "r"
    );
    // Asset names are exact: no case folding that could merge tokens.
    assert_ne!(
        outcome_rule(one("assets = [\"eth\"]"), &w, &[], wed10(), 0),
        "r"
    );
}

#[test]
fn destinations() {
    let to = |addr: &str| Withdrawal {
        destination: addr.into(),
        ..wd(1)
    };
    let table: &[(&str, &str, bool)] = &[
        ("destination = \"any\"", STRANGER, true),
        ("destination = \"whitelisted\"", EXCHANGE, true),
        ("destination = \"whitelisted\"", STRANGER, false),
        ("destination = \"whitelisted\"", OLD_VENDOR, false), // in the book, not whitelisted
        ("destination = { entries = [\"payroll\"] }", PAYROLL, true),
        ("destination = { entries = [\"payroll\"] }", EXCHANGE, false),
        (
            "destination = { entries = [\"old-vendor\"] }",
            OLD_VENDOR,
            true,
        ), // named explicitly
        ("destination = { labels = [\"opex\"] }", PAYROLL, true),
        ("destination = { labels = [\"opex\"] }", OLD_VENDOR, true),
        ("destination = { labels = [\"exchange\"] }", PAYROLL, false),
    ];
    for &(cond, addr, hit) in table {
        assert_eq!(
            outcome_rule(one(cond), &to(addr), &[], wed10(), 0) == "r",
            hit,
            "{cond} to {addr}"
        );
    }
    // Same address written in lowercase is the same destination.
    assert_eq!(
        outcome_rule(
            one("destination = \"whitelisted\""),
            &to(&EXCHANGE.to_lowercase()),
            &[],
            wed10(),
            0
        ),
        "r"
    );
    // The same address on another chain is not the book entry.
    let other_chain = Withdrawal {
        chain: "polygon".into(),
        ..to(EXCHANGE)
    };
    assert_ne!(
        outcome_rule(
            one("destination = \"whitelisted\""),
            &other_chain,
            &[],
            wed10(),
            0
        ),
        "r"
    );
}

#[test]
fn initiator_by_id_and_role_from_policy() {
    let by = |who: &str| Withdrawal {
        initiator: who.into(),
        ..wd(1)
    };
    let p = || one("initiators = [\"payments-backend\"]");
    assert_eq!(
        outcome_rule(p(), &by("payments-backend"), &[], wed10(), 0),
        "r"
    );
    assert_ne!(outcome_rule(p(), &by("other-client"), &[], wed10(), 0), "r");
    let r = || one("initiator_roles = [\"treasury\"]");
    assert_eq!(outcome_rule(r(), &by("alice"), &[], wed10(), 0), "r");
    assert_ne!(
        outcome_rule(r(), &by("dave"), &[], wed10(), 0),
        "r",
        "dave is security"
    );
    // An API client cannot claim a role: roles come from the policy only.
    assert_ne!(outcome_rule(r(), &by("treasury"), &[], wed10(), 0), "r");
}

#[test]
fn velocity_window_edges() {
    let p = || {
        one(
            "velocity = { window = \"24h\", per = [\"wallet\", \"asset\"], max_amount = 1000, max_count = 3 }",
        )
    };
    let now = wed10();
    let day = Duration(86_400).secs_i64();
    let at = |secs_ago: i64| Timestamp(now.0 - secs_ago);
    // Without a fee cap: ETH totals count fee caps too (see `fees.rs`).
    let wd = |amount: u128| Withdrawal {
        fee_cap: Amount(0),
        ..wd(amount)
    };
    // 600 a second inside the window + 400 now = 1000: at the limit, matches.
    assert_eq!(
        outcome_rule(p(), &wd(400), &[hist("a", 600, at(day - 1))], now, 0),
        "r"
    );
    // 601 + 400 = 1001: over.
    assert_ne!(
        outcome_rule(p(), &wd(400), &[hist("a", 601, at(day - 1))], now, 0),
        "r"
    );
    // Exactly one window ago falls out of the window (it is (now - window, now]).
    assert_eq!(
        outcome_rule(p(), &wd(400), &[hist("a", 900, at(day))], now, 0),
        "r"
    );
    // Count: two earlier + this = 3 ok; three earlier + this = 4 over.
    let two = [hist("a", 1, at(10)), hist("b", 1, at(20))];
    assert_eq!(outcome_rule(p(), &wd(1), &two, now, 0), "r");
    let three = [
        hist("a", 1, at(10)),
        hist("b", 1, at(20)),
        hist("c", 1, at(30)),
    ];
    assert_ne!(outcome_rule(p(), &wd(1), &three, now, 0), "r");
    // The withdrawal itself in the history is not counted twice.
    assert_eq!(
        outcome_rule(p(), &wd(1000), &[hist("wd-1", 1000, at(5))], now, 0),
        "r"
    );
    // Other wallets and assets do not count.
    let mut other = hist("x", 10_000, at(5));
    other.wallet = "eth-hot-2".into();
    let mut usdc = hist("y", 10_000, at(5));
    usdc.asset = "USDC".into();
    assert_eq!(outcome_rule(p(), &wd(10), &[other, usdc], now, 0), "r");
    // Future-dated entries (clock skew) count: the conservative side.
    assert_ne!(
        outcome_rule(p(), &wd(10), &[hist("f", 995, at(-60))], now, 0),
        "r"
    );
}

#[test]
fn velocity_per_destination_and_initiator() {
    let p = || {
        one("velocity = { window = \"1h\", per = [\"destination\", \"initiator\"], max_count = 1 }")
    };
    let now = wed10();
    // History went to PAYROLL; this goes to EXCHANGE: separate buckets.
    assert_eq!(
        outcome_rule(p(), &wd(1), &[hist("a", 1, Timestamp(now.0 - 5))], now, 0),
        "r"
    );
    let mut same = hist("a", 1, Timestamp(now.0 - 5));
    same.destination = EXCHANGE.to_lowercase();
    assert_ne!(outcome_rule(p(), &wd(1), &[same.clone()], now, 0), "r");
    same.initiator = "someone-else".into();
    assert_eq!(outcome_rule(p(), &wd(1), &[same], now, 0), "r");
}

#[test]
fn time_window_edges_and_time_zones() {
    let p = || {
        one(
            "time = { days = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"], from_hour = 6, to_hour = 20 }",
        )
    };
    let table: &[(&str, bool)] = &[
        ("2026-01-07T05:59:59Z", false),
        ("2026-01-07T06:00:00Z", true),
        ("2026-01-07T19:59:59Z", true),
        ("2026-01-07T20:00:00Z", false),
        ("2026-01-10T10:00:00Z", false), // Saturday
        ("2026-01-11T10:00:00Z", false), // Sunday
        ("2026-01-12T10:00:00Z", true),  // Monday
        // Offsets are converted to UTC before the check:
        ("2026-01-07T10:00:00+05:00", false), // 05:00 UTC
        ("2026-01-07T01:30:00-05:00", true),  // 06:30 UTC
        ("2026-01-09T23:30:00-05:00", false), // Saturday 04:30 UTC
        ("2026-01-12T00:30:00+09:00", false), // Sunday 15:30 UTC
        ("1767780000", true),                 // Unix seconds: 2026-01-07 10:00 UTC
    ];
    for &(t, hit) in table {
        assert_eq!(outcome_rule(p(), &wd(1), &[], ts(t), 0) == "r", hit, "{t}");
    }
}

#[test]
fn time_window_wrapping_midnight() {
    let p = || one("time = { from_hour = 22, to_hour = 6 }");
    for (t, hit) in [
        ("2026-01-07T21:59:59Z", false),
        ("2026-01-07T22:00:00Z", true),
        ("2026-01-08T03:00:00Z", true),
        ("2026-01-08T05:59:59Z", true),
        ("2026-01-08T06:00:00Z", false),
    ] {
        assert_eq!(outcome_rule(p(), &wd(1), &[], ts(t), 0) == "r", hit, "{t}");
    }
}

#[test]
fn risk_range_inclusive() {
    let p = || one("risk = { min = 10, max = 50 }");
    for (risk, hit) in [(9, false), (10, true), (50, true), (51, false)] {
        assert_eq!(
            outcome_rule(p(), &wd(1), &[], wed10(), risk) == "r",
            hit,
            "risk {risk}"
        );
    }
}

#[test]
fn actions_and_default_block() {
    let a = active();
    // allow
    let d = decide(&a, &wd(ETH / 2), &[], wed10(), 0);
    assert_eq!((rule_of(&d), &d.outcome), ("hot-small", &Outcome::Allow));
    // block with the reason shown to the initiator
    let d = decide(&a, &wd(ETH / 2), &[], wed10(), 95);
    assert_eq!(rule_of(&d), "block-high-risk");
    assert_eq!(
        d.outcome,
        Outcome::Block {
            reason: "risk score too high: contact compliance".into()
        }
    );
    // require approvals: quorum, exclusion, delay, cancel group and expiry carried over
    let d = decide(&a, &wd(5 * ETH), &[], wed10(), 0);
    assert_eq!(rule_of(&d), "large-whitelisted");
    assert_eq!(d.outcome, Outcome::RequireApprovals);
    assert_eq!(
        d.quorum,
        vec![
            RequiredTerm {
                group: "treasury".into(),
                count: 2
            },
            RequiredTerm {
                group: "security".into(),
                count: 1
            }
        ]
    );
    assert!(d.exclude_initiator);
    assert_eq!(d.delay, Some(Duration(3600)));
    assert_eq!(d.cancel_group.as_deref(), Some("security"));
    assert_eq!(d.approval_expiry, Some(Duration(12 * 3600)));
    // no rule: default block
    let stranger = Withdrawal {
        destination: STRANGER.into(),
        ..wd(5 * ETH)
    };
    let d = decide(&a, &stranger, &[], wed10(), 0);
    assert_eq!(d.rule_id, None);
    assert!(matches!(d.outcome, Outcome::Block { .. }));
    assert!(d.explain().contains("no rule matched"));
}

#[test]
fn first_match_wins_in_document_order() {
    let p = with_rules(
        "[[rules]]\nid = \"first\"\naction = \"block\"\nreason = \"stop\"\namount = { min = 10 }\n\
         [[rules]]\nid = \"second\"\naction = \"allow\"\n",
    );
    assert_eq!(outcome_rule(p.clone(), &wd(10), &[], wed10(), 0), "first");
    assert_eq!(outcome_rule(p, &wd(9), &[], wed10(), 0), "second");
}

#[test]
fn explanation_names_failed_conditions_of_earlier_rules() {
    let d = decide(&active(), &wd(5 * ETH), &[], wed10(), 0);
    let text = d.explain();
    assert!(text.contains("Rule 4 `hot-small` did not match"), "{text}");
    assert!(
        text.contains(
            "FAIL amount: amount 5 ETH (5000000000000000000 base units) is above the maximum 1 ETH (1000000000000000000 base units)"
        ),
        "{text}"
    );
    assert!(
        text.contains("Rule 7 `large-whitelisted` MATCHED"),
        "{text}"
    );
    assert!(text.contains("REQUIRE APPROVALS"), "{text}");
    assert!(
        text.contains("2 of group `treasury` AND 1 of group `security`"),
        "{text}"
    );
    // Every rule before the match appears in the trace, and only those.
    assert_eq!(d.trace.len(), 7);
    assert!(d.trace[..6].iter().all(|t| !t.matched));
}

#[test]
fn invalid_withdrawals_are_refused_not_blocked() {
    let a = active();
    let bad_addr = Withdrawal {
        destination: "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD".into(),
        ..wd(1)
    };
    assert!(matches!(
        evaluate(&a, &bad_addr, &[], wed10(), 0),
        Err(PolicyError::InvalidWithdrawal {
            field: "destination",
            ..
        })
    ));
    let zero = wd(0);
    assert!(matches!(
        evaluate(&a, &zero, &[], wed10(), 0),
        Err(PolicyError::InvalidWithdrawal {
            field: "amount",
            ..
        })
    ));
    let btc_on_eth = Withdrawal {
        destination: "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4".into(),
        ..wd(1)
    };
    assert!(evaluate(&a, &btc_on_eth, &[], wed10(), 0).is_err());
    let mut bad_hist = hist("h", 1, wed10());
    bad_hist.destination = "nope".into();
    assert!(matches!(
        evaluate(&a, &wd(1), &[bad_hist], wed10(), 0),
        Err(PolicyError::InvalidHistory { index: 0, .. })
    ));
}

#[test]
fn withdrawal_json_amounts() {
    let w: Withdrawal = serde_json::from_str(
        r#"{"id":"w","wallet":"eth-hot-1","chain":"ethereum","asset":"ETH","destination":"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed","amount":"340282366920938463463374607431768211455","initiator":"c"}"#,
    )
    .unwrap();
    assert_eq!(w.amount, Amount(u128::MAX));
    for bad in [
        "\"340282366920938463463374607431768211456\"",
        "-1",
        "1.5",
        "\"1e18\"",
        "\"+5\"",
        "\" 5\"",
    ] {
        let j = format!(
            r#"{{"id":"w","wallet":"a","chain":"ethereum","asset":"ETH","destination":"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed","amount":{bad},"initiator":"c"}}"#
        );
        assert!(
            serde_json::from_str::<Withdrawal>(&j).is_err(),
            "{bad} accepted"
        );
    }
}
