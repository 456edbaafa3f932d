//! Fee bounds (`fee`), velocity totals that count fee caps, the `native_assets`
//! table and the `custos policy check` lint on rules without a fee bound.

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

/// A single `allow` rule with `cond` (plus `head` before the rules).
fn one_with(head: &str, cond: &str) -> ActivePolicy {
    ActivePolicy::assumed(
        with_rules(&format!(
            "{head}\n[[rules]]\nid = \"r\"\n{cond}\naction = \"allow\"\n"
        )),
        Timestamp(0),
    )
}

fn one(cond: &str) -> ActivePolicy {
    one_with("", cond)
}

/// `wd(amount)` with this fee cap.
fn fee(amount: u128, fee_cap: u128) -> Withdrawal {
    Withdrawal {
        fee_cap: Amount(fee_cap),
        ..wd(amount)
    }
}

fn token(amount: u128, fee_cap: u128, asset: &str) -> Withdrawal {
    Withdrawal {
        asset: asset.into(),
        ..fee(amount, fee_cap)
    }
}

/// The `fee` check of the first rule, and whether the rule matched.
fn fee_check(a: &ActivePolicy, w: &Withdrawal) -> (bool, String) {
    let d = decide(a, w, &[], wed10(), 0);
    let c = d.trace[0]
        .checks
        .iter()
        .find(|c| c.condition == "fee")
        .expect("a fee check")
        .clone();
    assert_eq!(c.passed, d.trace[0].matched, "{}", d.explain());
    (c.passed, c.detail)
}

#[test]
fn fee_max_is_inclusive_and_named_when_it_fails() {
    let a = one("fee = { max = 1000 }");
    assert!(fee_check(&a, &fee(ETH, 1000)).0);
    assert!(fee_check(&a, &fee(ETH, 0)).0);
    let (ok, detail) = fee_check(&a, &fee(ETH, 1001));
    assert!(!ok);
    assert_eq!(detail, "fee cap 1001 is above fee.max (1000)");
    // The absolute bound applies to tokens too.
    assert!(!fee_check(&a, &token(ETH, 1001, "USDC")).0);
    assert!(fee_check(&a, &token(ETH, 1000, "USDC")).0);
}

#[test]
fn max_bps_bounds_native_withdrawals_relative_to_the_amount() {
    let a = one("fee = { max_bps = 100 }");
    // 1 % of 1 ETH = 10^16 wei.
    assert!(fee_check(&a, &fee(ETH, ETH / 100)).0);
    let (ok, detail) = fee_check(&a, &fee(ETH, ETH / 100 + 1));
    assert!(!ok);
    assert!(
        detail.contains(
            "above fee.max_bps 100 of the amount 1000000000000000000 (10000000000000000)"
        ),
        "{detail}"
    );
    // Rounded down: 1 % of 199 wei is 1 wei.
    assert!(fee_check(&a, &fee(199, 1)).0);
    assert!(!fee_check(&a, &fee(199, 2)).0);
    // No overflow at the top of the range.
    assert!(fee_check(&a, &fee(u128::MAX, u128::MAX / 100)).0);
    // A token: the relative bound does not apply, and with no other bound the rule
    // does not match (fail closed), saying why.
    let (ok, detail) = fee_check(&a, &token(ETH, 1, "USDC"));
    assert!(!ok);
    assert!(
        detail.contains("no bound of this rule applies to USDC on ethereum"),
        "{detail}"
    );
    assert!(
        detail.contains("USDC is not the native asset of ethereum (ETH)"),
        "{detail}"
    );
}

#[test]
fn every_applicable_bound_must_hold() {
    let a = one("fee = { max = 5000, max_bps = 100 }");
    // 1 % of 100 000 = 1000, below the absolute 5000.
    assert!(fee_check(&a, &fee(100_000, 1000)).0);
    let (ok, detail) = fee_check(&a, &fee(100_000, 1001));
    assert!(!ok);
    assert_eq!(
        detail,
        "fee cap 1001 is above fee.max_bps 100 of the amount 100000 (1000); within fee.max (5000)"
    );
    // 1 % of 10^7 = 10^5, above the absolute 5000.
    let (ok, detail) = fee_check(&a, &fee(10_000_000, 5001));
    assert!(!ok);
    assert!(
        detail.starts_with("fee cap 5001 is above fee.max (5000)"),
        "{detail}"
    );
    // A token: only the absolute bound applies.
    let (ok, detail) = fee_check(&a, &token(100_000, 5000, "USDC"));
    assert!(ok, "{detail}");
    assert!(detail.contains("fee.max_bps does not apply"), "{detail}");
}

#[test]
fn max_per_asset_bounds_each_asset_and_nothing_else() {
    let a = one("fee = { max_per_asset = { ETH = 3000, USDC = 9000 } }");
    assert!(fee_check(&a, &fee(ETH, 3000)).0);
    let (ok, detail) = fee_check(&a, &fee(ETH, 3001));
    assert!(!ok);
    assert_eq!(detail, "fee cap 3001 is above fee.max_per_asset.ETH (3000)");
    assert!(fee_check(&a, &token(ETH, 9000, "USDC")).0);
    assert!(!fee_check(&a, &token(ETH, 9001, "USDC")).0);
    // An asset the table does not name: no bound, no match.
    let (ok, detail) = fee_check(&a, &token(ETH, 1, "DAI"));
    assert!(!ok);
    assert!(
        detail.contains("no bound of this rule applies to DAI"),
        "{detail}"
    );
    // With `max` as well, the lower of the two applies.
    let a = one("fee = { max = 5000, max_per_asset = { USDC = 9000 } }");
    assert!(!fee_check(&a, &token(ETH, 5001, "USDC")).0);
    assert!(!fee_check(&a, &token(ETH, 5001, "DAI")).0);
    assert!(fee_check(&a, &token(ETH, 5000, "DAI")).0);
}

#[test]
fn native_assets_table_names_the_native_asset_of_other_chains() {
    let on_devnet = |fee_cap: u128| Withdrawal {
        chain: "evm:31337".into(),
        ..fee(ETH, fee_cap)
    };
    // No built-in native asset for evm:<id>: max_bps cannot apply, the rule does not match.
    let a = one("fee = { max_bps = 100 }");
    let (ok, detail) = fee_check(&a, &on_devnet(1));
    assert!(!ok);
    assert!(detail.contains("(none known)"), "{detail}");
    let a = one_with(
        "[native_assets]\n\"evm:31337\" = \"ETH\"",
        "fee = { max_bps = 100 }",
    );
    assert_eq!(a.policy().native_asset("evm:31337"), Some("ETH"));
    assert!(fee_check(&a, &on_devnet(ETH / 100)).0);
    assert!(!fee_check(&a, &on_devnet(ETH / 100 + 1)).0);
    // The table overrides the built-in name.
    let a = one_with(
        "[native_assets]\nethereum = \"WEIRD\"",
        "fee = { max_bps = 100 }",
    );
    assert!(!fee_check(&a, &fee(ETH, 1)).0, "ETH is no longer native");
    assert!(fee_check(&a, &token(ETH, 1, "WEIRD")).0);
    // Built-in names.
    for (chain, asset) in [
        ("ethereum", Some("ETH")),
        ("anvil", Some("ETH")),
        ("bitcoin", Some("BTC")),
        ("bitcoin-regtest", Some("BTC")),
        ("polygon", Some("POL")),
        ("evm:1", None),
    ] {
        assert_eq!(native_asset(chain), asset, "{chain}");
    }
}

#[test]
fn a_fee_over_the_bound_falls_through_to_the_next_rule() {
    let p = with_rules(
        "[[rules]]\nid = \"small-fee\"\nassets = [\"ETH\"]\nfee = { max = 1000 }\naction = \"allow\"\n\
         [[rules]]\nid = \"big-fee\"\nassets = [\"ETH\"]\nfee = { max = 100000 }\naction = \"require_approvals\"\n\
         approvals = { all = [{ group = \"treasury\", count = 2 }] }\n",
    );
    let a = ActivePolicy::assumed(p, Timestamp(0));
    let d = decide(&a, &fee(ETH, 1000), &[], wed10(), 0);
    assert_eq!(d.outcome, Outcome::Allow);
    let d = decide(&a, &fee(ETH, 1001), &[], wed10(), 0);
    assert_eq!(rule_of(&d), "big-fee");
    assert_eq!(d.outcome, Outcome::RequireApprovals);
    assert!(
        d.explain()
            .contains("FAIL fee: fee cap 1001 is above fee.max (1000)"),
        "{}",
        d.explain()
    );
    let d = decide(&a, &fee(ETH, 100_001), &[], wed10(), 0);
    assert_eq!(rule_of(&d), "<default block>");
}

fn entry(id: &str, asset: &str, amount: u128, fee_cap: u128) -> HistoryEntry {
    HistoryEntry {
        asset: asset.into(),
        fee_cap: Amount(fee_cap),
        ..hist(id, amount, Timestamp(wed10().0 - 60))
    }
}

#[test]
fn velocity_totals_count_fee_caps_of_the_native_asset() {
    let a = one(
        "velocity = { window = \"24h\", per = [\"wallet\", \"asset\"], max_amount = 10000, max_count = 5 }",
    );
    let matched = |w: &Withdrawal, h: &[HistoryEntry]| {
        let d = decide(&a, w, h, wed10(), 0);
        (d.trace[0].matched, d.trace[0].checks[0].detail.clone())
    };
    // 5000 + 3000 (this one) + 1000 + 1000 (history) = 10 000: at the limit.
    let (ok, detail) = matched(&fee(5000, 3000), &[entry("h1", "ETH", 1000, 1000)]);
    assert!(ok, "{detail}");
    assert!(
        detail.contains("total 10000 (amounts 6000 + fee caps 4000) in 2 withdrawal(s)"),
        "{detail}"
    );
    // One more wei of fee in the history: over.
    assert!(!matched(&fee(5000, 3000), &[entry("h1", "ETH", 1000, 1001)]).0);
    // One more wei of fee on this withdrawal: over.
    assert!(!matched(&fee(5000, 3001), &[entry("h1", "ETH", 1000, 1000)]).0);
    // A token withdrawal from the same wallet on the same chain paid its fee in
    // ETH: its fee cap counts toward the ETH limit, its amount and count do not.
    let h = [
        entry("h1", "ETH", 1000, 1000),
        entry("h2", "USDC", 1_000_000, 1),
    ];
    let (ok, detail) = matched(&fee(5000, 3000), &h);
    assert!(!ok, "{detail}");
    assert!(
        detail.contains("total 10001 (amounts 6000 + fee caps 4001) in 2 withdrawal(s)"),
        "{detail}"
    );
    // Another chain's fees are in other units: never counted.
    let other_chain = HistoryEntry {
        chain: "anvil".into(),
        ..entry("h3", "ETH", 1, 1_000_000)
    };
    assert!(
        matched(
            &fee(5000, 3000),
            &[entry("h1", "ETH", 1000, 1000), other_chain]
        )
        .0
    );
    // Another wallet's fees do not count either.
    let other_wallet = HistoryEntry {
        wallet: "eth-hot-2".into(),
        ..entry("h4", "USDC", 1, 1_000_000)
    };
    assert!(
        matched(
            &fee(5000, 3000),
            &[entry("h1", "ETH", 1000, 1000), other_wallet]
        )
        .0
    );
}

#[test]
fn token_velocity_totals_count_amounts_only() {
    let a =
        one("velocity = { window = \"24h\", per = [\"wallet\", \"asset\"], max_amount = 10000 }");
    let h = [entry("h1", "USDC", 4000, 1_000_000)];
    let d = decide(&a, &token(6000, 1_000_000, "USDC"), &h, wed10(), 0);
    assert!(d.trace[0].matched, "{}", d.explain());
    assert!(
        d.trace[0].checks[0].detail.contains("total 10000 in 2"),
        "{}",
        d.explain()
    );
}

#[test]
fn history_without_fee_caps_still_parses() {
    let old = r#"[{"id":"wd-0","wallet":"eth-hot-1","chain":"ethereum","asset":"ETH",
        "destination":"0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359","initiator":"payments-backend",
        "amount":"4000000000000000000","at":"2026-01-07T08:00:00Z"}]"#;
    let h: Vec<HistoryEntry> = serde_json::from_str(old).unwrap();
    assert_eq!(h[0].fee_cap, Amount(0));
}

fn warnings(rules: &str) -> String {
    with_rules(rules)
        .warnings()
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn malformed_fee_conditions_are_errors_naming_the_field() {
    let rule = |fee: &str| format!("[[rules]]\nid = \"r\"\nfee = {fee}\naction = \"allow\"\n");
    let e = errs(&rule("{}"));
    assert!(
        e.contains("rules[0] (r).fee: set max, max_per_asset, max_bps or several"),
        "{e}"
    );
    for bps in ["0", "10001"] {
        let e = errs(&rule(&format!("{{ max_bps = {bps} }}")));
        assert!(e.contains("rules[0] (r).fee.max_bps: "), "{e}");
        assert!(e.contains("must be 1..=10000"), "{e}");
    }
    let e = errs(&rule("{ max_per_asset = {} }"));
    assert!(
        e.contains("rules[0] (r).fee.max_per_asset: empty table"),
        "{e}"
    );
    // Unknown fields are parse errors, like everywhere else.
    let text = std::str::from_utf8(FIXTURE).unwrap().replace(
        "risk = { min = 80 }",
        "risk = { min = 80 }\nfee = { maximum = 1 }",
    );
    let e = Policy::parse(text.as_bytes()).unwrap_err().to_string();
    assert!(e.contains("unknown field `maximum`"), "{e}");
    let e = errs("[native_assets]\nmoon = \"MOON\"\n[[rules]]\nid = \"r\"\naction = \"allow\"\n");
    assert!(
        e.contains("native_assets.moon: unknown chain \"moon\""),
        "{e}"
    );
    let e = errs("[native_assets]\nethereum = \"\"\n[[rules]]\nid = \"r\"\naction = \"allow\"\n");
    assert!(e.contains("native_assets.ethereum: asset symbol"), "{e}");
}

#[test]
fn doubtful_fee_conditions_are_warnings() {
    let w = warnings("[[rules]]\nid = \"r\"\nfee = { max_bps = 50 }\naction = \"allow\"\n");
    assert!(w.contains("rules[0] (r).fee: only max_bps"), "{w}");
    let w = warnings(
        "[[rules]]\nid = \"r\"\nassets = [\"ETH\"]\nfee = { max_per_asset = { USDC = 5 } }\naction = \"allow\"\n",
    );
    assert!(
        w.contains("asset \"USDC\" is not in the rule's `assets`"),
        "{w}"
    );
    let w =
        warnings("[[rules]]\nid = \"b\"\nfee = { max = 5 }\naction = \"block\"\nreason = \"no\"\n");
    assert!(w.contains("stops blocking"), "{w}");
}

fn lint(rules: &str) -> Vec<String> {
    with_rules(rules)
        .fee_bound_problems()
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn policy_check_lint_refuses_rules_without_a_fee_bound() {
    // The frozen fixture predates fee bounds: it still parses (a signer keeps
    // loading it), but the lint names every allow/approval rule.
    let p = policy();
    let problems: Vec<String> = p
        .fee_bound_problems()
        .iter()
        .map(|i| i.path.clone())
        .collect();
    assert_eq!(
        problems,
        [
            "rules[1] (cold-to-internal)",
            "rules[3] (hot-small)",
            "rules[5] (btc-small)",
            "rules[6] (large-whitelisted)",
        ]
    );
    let l = lint("[[rules]]\nid = \"r\"\naction = \"allow\"\n");
    assert_eq!(l.len(), 1);
    assert!(
        l[0].starts_with("rules[0] (r): `allow` rule without a fee bound"),
        "{l:?}"
    );
    // Block rules need none.
    assert!(lint("[[rules]]\nid = \"b\"\naction = \"block\"\nreason = \"no\"\n").is_empty());
    // One chain family: fine.
    assert!(
        lint("[[rules]]\nid = \"r\"\nchains = [\"ethereum\", \"anvil\"]\nfee = { max = 5 }\naction = \"allow\"\n")
            .is_empty()
    );
    // Destination entries narrow the chains too.
    assert!(
        lint("[[rules]]\nid = \"r\"\ndestination = { entries = [\"payroll\"] }\nfee = { max = 5 }\naction = \"allow\"\n")
            .is_empty()
    );
    // fee.max over wei and satoshi alike: refused.
    for rules in [
        "[[rules]]\nid = \"r\"\nfee = { max = 5 }\naction = \"allow\"\n",
        "[[rules]]\nid = \"r\"\nchains = [\"ethereum\", \"bitcoin\"]\nfee = { max = 5 }\naction = \"allow\"\n",
    ] {
        let l = lint(rules);
        assert_eq!(l.len(), 1, "{l:?}");
        assert!(l[0].starts_with("rules[0] (r).fee.max: "), "{l:?}");
        assert!(l[0].contains("wei and satoshi"), "{l:?}");
    }
    // Per asset, or relative: fine on any chain.
    assert!(lint("[[rules]]\nid = \"r\"\nfee = { max_per_asset = { ETH = 5, BTC = 1 } }\naction = \"allow\"\n").is_empty());
    assert!(lint("[[rules]]\nid = \"r\"\nfee = { max_bps = 5 }\naction = \"allow\"\n").is_empty());
}

#[test]
fn the_example_policies_bound_every_fee() {
    for name in ["policy.toml", "demo-policy.toml"] {
        let path = format!("{}/../examples/{name}", env!("CARGO_MANIFEST_DIR"));
        let p = Policy::parse(&std::fs::read(&path).unwrap()).unwrap();
        assert!(
            p.fee_bound_problems().is_empty(),
            "{name}: {:?}",
            p.fee_bound_problems()
        );
    }
}

#[test]
fn changing_native_assets_is_a_relaxation() {
    let old = policy().document().clone();
    let mut new = old.clone();
    new.version += 1;
    assert_eq!(relaxation(&old, &new), None);
    new.native_assets.insert("evm:31337".into(), "ETH".into());
    assert_eq!(
        relaxation(&old, &new).as_deref(),
        Some("native assets changed")
    );
    // Adding a fee bound changes the rule: delayed like any rule change
    // (a withdrawal it no longer matches falls through to the next rule).
    let mut new = old.clone();
    new.rules[3].fee = Some(FeeBound {
        max: Some(Amount(1)),
        max_per_asset: None,
        max_bps: None,
    });
    assert!(relaxation(&old, &new).is_some());
}

/// The sample policy as shipped (with fee bounds), in force since 1970.
fn example() -> ActivePolicy {
    let path = format!("{}/../examples/policy.toml", env!("CARGO_MANIFEST_DIR"));
    ActivePolicy::assumed(
        Policy::parse(&std::fs::read(path).unwrap()).unwrap(),
        Timestamp(0),
    )
}

const ASSETS: &[(&str, &str)] = &[
    ("ethereum", "ETH"),
    ("ethereum", "USDC"),
    ("anvil", "ETH"),
    ("bitcoin", "BTC"),
];
const BTC_DEST: &str = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4";

fn any_withdrawal() -> impl Strategy<Value = Withdrawal> {
    (
        0..ASSETS.len(),
        prop::sample::select(vec!["eth-hot-1", "eth-cold-1", "anvil-hot-1", "btc-hot-1"]),
        1u128..3 * ETH,
        prop_oneof![
            0u128..100_000_000_000_000_000,
            Just(u128::MAX),
            0u128..1_000_000
        ],
    )
        .prop_map(|(i, wallet, amount, fee_cap)| {
            let (chain, asset) = ASSETS[i];
            Withdrawal {
                wallet: wallet.into(),
                chain: chain.into(),
                asset: asset.into(),
                destination: match chain {
                    "bitcoin" => BTC_DEST.into(),
                    "anvil" => "0x70997970C51812dc3A010C7d01b50e0d17dc79C8".into(),
                    _ => EXCHANGE.into(),
                },
                ..fee(amount, fee_cap)
            }
        })
}

fn any_history() -> impl Strategy<Value = Vec<HistoryEntry>> {
    prop::collection::vec(
        (
            0..ASSETS.len(),
            1u128..2 * ETH,
            0u128..ETH / 10,
            0i64..100_000,
        ),
        0..8,
    )
    .prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(n, (i, amount, fee_cap, ago))| {
                let (chain, asset) = ASSETS[i];
                HistoryEntry {
                    chain: chain.into(),
                    asset: asset.into(),
                    destination: if chain == "bitcoin" {
                        BTC_DEST.into()
                    } else {
                        PAYROLL.into()
                    },
                    fee_cap: Amount(fee_cap),
                    ..hist(&format!("h{n}"), amount, Timestamp(wed10().0 - ago))
                }
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(seeded(512, 0x00FE_E5CA))]

    /// Whatever rule lets a withdrawal through (allow or approvals), its fee cap
    /// is within every bound of that rule that applies: a fee over the bound is
    /// never auto-allowed. Checked against an independent computation.
    #[test]
    fn a_fee_over_the_bound_never_gets_through(w in any_withdrawal(), h in any_history(), risk in 0u32..100) {
        let a = example();
        let d = evaluate(&a, &w, &h, wed10(), risk).unwrap();
        if d.outcome == Outcome::Allow || d.outcome == Outcome::RequireApprovals {
            let i = d.rule_index.unwrap();
            let rule = &a.policy().document().rules[i];
            let f = rule.fee.as_ref().expect("every rule that lets withdrawals through bounds fees");
            let native = a.policy().native_asset(&w.chain) == Some(w.asset.as_str());
            let mut bounded = false;
            if let Some(m) = f.max {
                prop_assert!(w.fee_cap <= m);
                bounded = true;
            }
            if let Some(m) = f.max_per_asset.as_ref().and_then(|t| t.get(&w.asset)) {
                prop_assert!(w.fee_cap <= *m);
                bounded = true;
            }
            if let (Some(bps), true) = (f.max_bps, native) {
                // fee * 10 000 <= amount * bps (an overflowing fee is over any limit).
                let within = w.fee_cap.0.checked_mul(10_000).is_some_and(|l| {
                    w.amount.0.checked_mul(u128::from(bps)).is_none_or(|r| l <= r)
                });
                prop_assert!(within, "over max_bps: {}", d.explain());
                bounded = true;
            }
            prop_assert!(bounded, "no bound applied: {}", d.explain());
        }
    }

    /// An allowed native withdrawal under a velocity limit keeps amounts plus
    /// fee caps (its own and its chain's history's) within the limit.
    #[test]
    fn allowed_native_totals_include_fees(w in any_withdrawal(), h in any_history()) {
        let a = example();
        let d = evaluate(&a, &w, &h, wed10(), 0).unwrap();
        if d.rule_id.as_deref() == Some("hot-small") {
            let since = wed10().0 - 86_400;
            let counted: u128 = h
                .iter()
                .filter(|e| e.at.0 > since && e.wallet == w.wallet && e.chain == w.chain)
                .map(|e| if e.asset == w.asset { e.amount.0 + e.fee_cap.0 } else { e.fee_cap.0 })
                .sum();
            prop_assert!(counted + w.amount.0 + w.fee_cap.0 <= 5 * ETH, "{}", d.explain());
        }
    }
}
