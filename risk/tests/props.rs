#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Properties over random histories: score range, determinism, rebuild equals
//! incremental, bounded memory, order-independent amount rings.

mod common;

use common::{DAY, HOUR, MIN, T0};
use custos_risk::{AmountProfile, MAX_SCORE, RiskConfig, RiskModel, RiskRequest, RiskState, codes};
use proptest::prelude::*;

/// Small windows and caps, so pruning, eviction and sweeps all happen.
fn tight() -> RiskConfig {
    RiskConfig {
        ring_capacity: 8,
        history_window_secs: 86_400,
        destination_memory_secs: 86_400,
        max_destinations_per_wallet: 3,
        index_window_secs: 2 * 86_400,
        min_samples: 3,
        velocity_min_count: 3,
        fan_in_window_secs: 3_600,
        fresh_destination_secs: 86_400,
        fan_in_min_wallets: 3,
        fan_in_max_tracked_payers: 3,
        deny_destinations: vec!["d7".into()],
        ..RiskConfig::default()
    }
}

#[derive(Debug, Clone)]
struct Step {
    wallet: u8,
    dest: u8,
    asset: u8,
    amount: u128,
    dt_ms: u64,
    back_ms: u64,
}

fn step() -> impl Strategy<Value = Step> {
    (
        0u8..4,
        0u8..9,
        0u8..2,
        prop_oneof![
            4 => 1u128..10_000_000_000,
            1 => any::<u128>(),
            1 => Just(0u128),
        ],
        prop_oneof![3 => 0u64..10 * MIN, 2 => 0u64..6 * HOUR, 1 => 0u64..3 * DAY],
        prop_oneof![9 => Just(0u64), 1 => 0u64..2 * HOUR],
    )
        .prop_map(|(wallet, dest, asset, amount, dt_ms, back_ms)| Step {
            wallet,
            dest,
            asset,
            amount,
            dt_ms,
            back_ms,
        })
}

/// Turns steps into requests; `back_ms` makes some arrive out of time order.
fn requests(steps: &[Step]) -> Vec<RiskRequest> {
    let mut t = T0;
    steps
        .iter()
        .map(|s| {
            t += s.dt_ms;
            RiskRequest {
                wallet: format!("w{}", s.wallet),
                chain: "ethereum".into(),
                asset: if s.asset == 0 { "ETH" } else { "USDC" }.into(),
                destination: format!("d{}", s.dest),
                amount: s.amount,
                at_ms: t - s.back_ms,
            }
        })
        .collect()
}

fn check(config: RiskConfig, reqs: &[RiskRequest]) -> Result<(), TestCaseError> {
    let model = RiskModel::new(config.clone()).unwrap();
    let mut state = model.new_state();
    let mut scores = Vec::new();
    for r in reqs {
        let a = model.score(&state, r);
        prop_assert!(a.score <= MAX_SCORE, "{}", a.summary());
        // Deterministic: same inputs, same assessment (and on a copy of the state).
        prop_assert_eq!(&a, &model.score(&state, r));
        prop_assert_eq!(&a, &model.score(&state.clone(), r));
        prop_assert_eq!(&a, &model.assess(r, &state.history(r)));
        // Combination rule.
        let sum: u32 = a.reasons.iter().map(|x| x.points).sum();
        if a.has(codes::DENY_LIST) {
            prop_assert_eq!(a.score, 100);
        } else {
            prop_assert_eq!(a.score, sum.min(100));
        }
        for reason in &a.reasons {
            prop_assert!(codes::ALL.contains(&reason.code.as_str()));
            prop_assert!(!reason.message.is_empty());
        }
        // Serde round trip.
        let json = serde_json::to_string(&a).unwrap();
        prop_assert_eq!(
            &serde_json::from_str::<custos_risk::RiskAssessment>(&json).unwrap(),
            &a
        );
        scores.push(a);
        state.record(r);
        // Memory bounds.
        let h = state.history(r);
        prop_assert!(h.amounts.map_or(0, AmountProfile::len) <= config.ring_capacity);
        prop_assert!(
            h.destination.map_or(0, |d| d.payers.len()) <= config.fan_in_max_tracked_payers
        );
    }
    // Rebuild from the same list == incremental, and scores the same afterwards.
    let rebuilt = RiskState::rebuild(&config, reqs).unwrap();
    prop_assert_eq!(&rebuilt, &state);
    prop_assert_eq!(rebuilt.recorded(), reqs.len() as u64);
    if let Some(last) = reqs.last() {
        let mut probe = last.clone();
        probe.at_ms += 30 * MIN;
        prop_assert_eq!(model.score(&rebuilt, &probe), model.score(&state, &probe));
    }
    // Replaying: scoring the same sequence again gives the same assessments.
    let mut again = model.new_state();
    for (r, a) in reqs.iter().zip(&scores) {
        prop_assert_eq!(&model.score(&again, r), a);
        again.record(r);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn default_config_properties(steps in prop::collection::vec(step(), 0..120)) {
        check(RiskConfig::default(), &requests(&steps))?;
    }

    #[test]
    fn tight_config_properties(steps in prop::collection::vec(step(), 0..160)) {
        check(tight(), &requests(&steps))?;
    }

    #[test]
    fn amount_ring_keeps_the_latest_whatever_the_push_order(
        samples in prop::collection::vec((0u64..50, 0u128..20), 0..60),
        cap in 1usize..12,
        salt in any::<u64>(),
    ) {
        let mut a = AmountProfile::new(cap);
        for (t, x) in &samples {
            a.push(*t, *x);
        }
        let mut shuffled = samples.clone();
        shuffled.sort_by_key(|(t, x)| (t ^ salt).wrapping_mul(31).wrapping_add(*x as u64));
        let mut b = AmountProfile::new(cap);
        for (t, x) in &shuffled {
            b.push(*t, *x);
        }
        prop_assert_eq!(&a, &b);
        let mut want = samples.clone();
        want.sort();
        let want: Vec<_> = want.iter().rev().take(cap).rev().copied().collect();
        let got: Vec<_> = a.samples().map(|s| (s.at_ms, s.amount)).collect();
        prop_assert_eq!(got, want);
    }
}

#[test]
fn destination_index_is_pruned_by_window() {
    let config = RiskConfig {
        index_window_secs: 86_400,
        fan_in_window_secs: 3_600,
        fresh_destination_secs: 3_600,
        destination_memory_secs: 86_400,
        history_window_secs: 86_400,
        ..RiskConfig::default()
    };
    let mut s = RiskState::new(&config).unwrap();
    // 20 000 distinct destinations, one a minute from 4 wallets, over ~14 days.
    for i in 0..20_000u64 {
        s.record(&RiskRequest {
            wallet: format!("w{}", i % 4),
            chain: "ethereum".into(),
            asset: "ETH".into(),
            destination: format!("0x{i:040x}"),
            amount: 1,
            at_ms: T0 + i * MIN,
        });
    }
    // Only about a day (1 440 minutes) plus one sweep interval is kept.
    let kept = s.indexed_destinations();
    assert!((1_440..=1_440 + 400).contains(&kept), "{kept}");
    assert_eq!(s.wallet_count(), 4);
    // A year later, one record sweeps everything else away.
    s.record(&RiskRequest {
        wallet: "w9".into(),
        chain: "ethereum".into(),
        asset: "ETH".into(),
        destination: "0xnew".into(),
        amount: 1,
        at_ms: T0 + 365 * DAY,
    });
    assert_eq!(s.indexed_destinations(), 1);
    assert_eq!(s.wallet_count(), 1);
}

#[test]
fn per_wallet_destinations_are_capped() {
    let config = RiskConfig {
        max_destinations_per_wallet: 100,
        ..RiskConfig::default()
    };
    let model = RiskModel::new(config).unwrap();
    let mut s = model.new_state();
    let r = |i: u64| RiskRequest {
        wallet: "w".into(),
        chain: "ethereum".into(),
        asset: "ETH".into(),
        destination: format!("0x{i:040x}"),
        amount: 1,
        at_ms: T0 + i * MIN,
    };
    for i in 0..1_000 {
        s.record(&r(i));
    }
    // The 100 most recent are remembered, the older ones are new again.
    assert!(s.history(&r(999)).destination_use.is_some());
    assert!(s.history(&r(900)).destination_use.is_some());
    assert!(s.history(&r(899)).destination_use.is_none());
    let mut again = r(0);
    again.at_ms = T0 + 1_000 * MIN;
    assert!(model.score(&s, &again).has(codes::NEW_DESTINATION));
}
