#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Each signal fires on a crafted history and stays silent on a normal one.

mod common;

use common::*;
use custos_risk::{RiskConfig, RiskModel, RiskState, codes};

fn model() -> RiskModel {
    RiskModel::new(RiskConfig::default()).unwrap()
}

fn state(model: &RiskModel, past: &[custos_risk::RiskRequest]) -> RiskState {
    let mut s = model.new_state();
    s.extend(past);
    s
}

#[test]
fn typical_payroll_scores_zero_for_every_payment_of_the_next_run() {
    let m = model();
    let mut s = state(&m, &payroll("payroll", 12));
    for i in 0..20 {
        let r = req("payroll", &employee(i), salary(i), payroll_at(12, i));
        let a = m.score(&s, &r);
        assert_eq!(a.score, 0, "payment {i}: {}", a.summary());
        assert!(a.reasons.is_empty());
        assert_eq!(a.summary(), "risk 0/100: no risk signals");
        s.record(&r);
    }
}

#[test]
fn ops_wallet_normal_day_scores_zero() {
    let m = model();
    let s = state(&m, &ops("ops", 0));
    for (k, dest) in (0..4).map(|k| (k, vendor(k))) {
        let r = req("ops", &dest, 500 * USDC, OPS_END + k as u64 * 6 * HOUR);
        let a = m.score(&s, &r);
        assert_eq!(a.score, 0, "{}", a.summary());
    }
}

#[test]
fn fifty_x_outlier_scores_high() {
    let m = model();
    let s = state(&m, &payroll("payroll", 12));
    // Off-cycle, to a known employee, 50× a typical salary.
    let r = req(
        "payroll",
        &employee(3),
        50 * salary(3),
        payroll_at(11, 0) + 3 * DAY,
    );
    let a = m.score(&s, &r);
    assert!(a.has(codes::AMOUNT_OUTLIER), "{}", a.summary());
    assert_eq!(a.points(codes::AMOUNT_OUTLIER), 60, "full points");
    assert!(a.score >= 60, "{}", a.summary());
    let msg = &a.reasons[0].message;
    assert!(msg.contains("x the median"), "{msg}");
    assert!(msg.contains("robust z"), "{msg}");

    // The same outlier to a brand-new address adds the destination signal.
    let r2 = req(
        "payroll",
        "0x00000000000000000000000000000000000bad01",
        50 * salary(3),
        r.at_ms,
    );
    let a2 = m.score(&s, &r2);
    assert!(a2.score >= 85, "{}", a2.summary());
    assert!(a2.has(codes::NEW_DESTINATION));
}

#[test]
fn modest_raise_is_not_an_outlier_but_five_x_is() {
    let m = model();
    let s = state(&m, &payroll("payroll", 12));
    let at = payroll_at(12, 0);
    let raise = m.score(&s, &req("payroll", &employee(19), salary(19) * 11 / 10, at));
    assert!(!raise.has(codes::AMOUNT_OUTLIER), "{}", raise.summary());
    let five = m.score(&s, &req("payroll", &employee(19), salary(19) * 5, at));
    assert!(five.has(codes::AMOUNT_OUTLIER), "{}", five.summary());
    assert!(five.points(codes::AMOUNT_OUTLIER) >= 30);
}

#[test]
fn small_amounts_are_not_outliers() {
    let m = model();
    let s = state(&m, &payroll("payroll", 12));
    let a = m.score(&s, &req("payroll", &employee(0), USDC, payroll_at(12, 0)));
    assert!(!a.has(codes::AMOUNT_OUTLIER), "{}", a.summary());
}

#[test]
fn no_history_is_a_mild_signal() {
    let m = model();
    let mut s = m.new_state();
    // Brand-new wallet: no history, and every destination is new.
    let a = m.score(&s, &req("fresh", &vendor(0), 100 * USDC, T0));
    assert!(a.has(codes::NO_HISTORY));
    assert_eq!(a.points(codes::NO_HISTORY), 10);
    assert!(a.has(codes::NEW_DESTINATION));
    assert_eq!(a.score, 35, "{}", a.summary());
    assert!(!a.has(codes::AMOUNT_OUTLIER));
    // Four earlier withdrawals: still below min_samples (5).
    for k in 0..4 {
        s.record(&req("fresh", &vendor(0), 100 * USDC, T0 + k * DAY));
    }
    let a = m.score(&s, &req("fresh", &vendor(0), 100 * USDC, T0 + 5 * DAY));
    assert!(a.has(codes::NO_HISTORY));
    assert!(
        a.reasons[0].message.contains("only 4 earlier"),
        "{}",
        a.reasons[0].message
    );
    s.record(&req("fresh", &vendor(0), 100 * USDC, T0 + 5 * DAY));
    let a = m.score(&s, &req("fresh", &vendor(0), 100 * USDC, T0 + 6 * DAY));
    assert_eq!(a.score, 0, "{}", a.summary());
}

#[test]
fn burst_of_thirty_in_ten_minutes_flags_velocity() {
    let m = model();
    let mut s = state(&m, &ops("ops", 0));
    let start = OPS_END + 2 * HOUR;
    let mut flagged_at = None;
    let mut last = None;
    for k in 0..30u64 {
        // One every 20 s: 30 withdrawals in 10 minutes, usual amounts and vendors.
        let r = req(
            "ops",
            &vendor(k as usize % 10),
            400 * USDC,
            start + k * 20_000,
        );
        let a = m.score(&s, &r);
        assert!(a.score <= 100);
        if a.has(codes::VELOCITY_COUNT) && flagged_at.is_none() {
            flagged_at = Some(k + 1);
        }
        s.record(&r);
        last = Some(a);
    }
    // Threshold is max(10, 2 × busiest earlier hour (1)) = 10: the 11th flags.
    assert_eq!(flagged_at, Some(11));
    let a = last.unwrap();
    assert_eq!(a.points(codes::VELOCITY_COUNT), 40, "{}", a.summary());
    assert!(a.has(codes::VELOCITY_AMOUNT), "{}", a.summary());
    let msg = &a
        .reasons
        .iter()
        .find(|r| r.code == codes::VELOCITY_COUNT)
        .unwrap()
        .message;
    assert!(
        msg.starts_with("30 USDC withdrawals in the last 60 min"),
        "{msg}"
    );
    assert!(a.score >= 80, "{}", a.summary());
}

#[test]
fn payroll_sized_batch_is_normal_for_payroll_but_not_for_ops() {
    // Velocity is relative to the wallet's own busiest hour: 20 in 20 minutes is a
    // payroll run for the payroll wallet (tested above) but a spike for ops.
    let m = model();
    let mut s = state(&m, &ops("ops", 0));
    let start = OPS_END + 2 * HOUR;
    let mut a = None;
    for k in 0..20u64 {
        let r = req("ops", &vendor(k as usize % 10), 400 * USDC, start + k * MIN);
        a = Some(m.score(&s, &r));
        s.record(&r);
    }
    assert!(a.unwrap().has(codes::VELOCITY_COUNT));
}

#[test]
fn amount_velocity_flags_many_large_withdrawals() {
    let m = model();
    let mut s = state(&m, &ops("ops", 0));
    let start = OPS_END + 2 * HOUR;
    // Three withdrawals of 800 USDC (each within the usual range) in an hour: the
    // busiest earlier hour moved at most 800, so 2 400 > 2 × 800.
    for k in 0..2u64 {
        s.record(&req(
            "ops",
            &vendor(k as usize),
            800 * USDC,
            start + k * 10 * MIN,
        ));
    }
    let a = m.score(&s, &req("ops", &vendor(2), 800 * USDC, start + 20 * MIN));
    assert!(a.has(codes::VELOCITY_AMOUNT), "{}", a.summary());
    assert!(!a.has(codes::VELOCITY_COUNT), "{}", a.summary());
    assert!(!a.has(codes::AMOUNT_OUTLIER), "{}", a.summary());
}

#[test]
fn new_and_rare_destinations() {
    let m = model();
    let mut past = [ops("ops", 0), payroll("payroll", 6)].concat();
    past.sort_by_key(|r| r.at_ms);
    let mut s = state(&m, &past);
    let at = OPS_END + HOUR;
    let new = "0x00000000000000000000000000000000000c0ffe";
    let a = m.score(&s, &req("ops", new, 500 * USDC, at));
    assert_eq!(a.score, 25, "{}", a.summary());
    assert!(a.has(codes::NEW_DESTINATION));
    assert!(a.reasons[0].message.contains(new));
    s.record(&req("ops", new, 500 * USDC, at));
    // Used once, then twice: rare (fewer than 3 uses).
    for n in 1..=2u64 {
        let a = m.score(&s, &req("ops", new, 500 * USDC, at + n * DAY));
        assert_eq!(a.score, 10, "{}", a.summary());
        assert!(a.has(codes::RARE_DESTINATION));
        assert!(a.reasons[0].message.contains(&format!("only {n} time(s)")));
        s.record(&req("ops", new, 500 * USDC, at + n * DAY));
    }
    // Third use onward: familiar.
    let a = m.score(&s, &req("ops", new, 500 * USDC, at + 3 * DAY));
    assert_eq!(a.score, 0, "{}", a.summary());
    // A destination another wallet pays regularly is still new for this one.
    assert!(
        s.history(&req("payroll", &employee(1), 1, at))
            .destination_use
            .is_some()
    );
    let a = m.score(&s, &req("ops", &employee(1), 500 * USDC, at));
    assert!(a.has(codes::NEW_DESTINATION));
    // Destination memory is per chain.
    let mut other_chain = req("ops", &vendor(1), 500 * USDC, at);
    other_chain.chain = "polygon".into();
    assert!(m.score(&s, &other_chain).has(codes::NEW_DESTINATION));
}

#[test]
fn destination_is_forgotten_after_the_memory_window() {
    let config = RiskConfig {
        destination_memory_secs: 30 * 86_400,
        ..RiskConfig::default()
    };
    let m = RiskModel::new(config).unwrap();
    let s = state(&m, &ops("ops", 0));
    // vendor(0) was last paid on day ~87.5; 40 days later it is new again, and the
    // amount stream (180-day window) is still remembered.
    let a = m.score(&s, &req("ops", &vendor(0), 500 * USDC, OPS_END + 40 * DAY));
    assert!(a.has(codes::NEW_DESTINATION), "{}", a.summary());
    assert!(!a.has(codes::NO_HISTORY), "{}", a.summary());
}

#[test]
fn deny_list_scores_100() {
    let bad = "0x00000000000000000000000000000000000dead1";
    let config = RiskConfig {
        deny_destinations: vec![bad.to_uppercase().replace("0X", "0x")],
        ..RiskConfig::default()
    };
    let m = RiskModel::new(config).unwrap();
    let mut s = state(&m, &ops("ops", 0));
    // Even once the wallet pays it routinely (usual amounts, six times before).
    for _ in 0..6 {
        s.record(&req("ops", bad, 500 * USDC, OPS_END));
    }
    let a = m.score(&s, &req("ops", bad, 500 * USDC, OPS_END + HOUR));
    assert_eq!(a.score, 100, "{}", a.summary());
    assert_eq!(a.reasons[0].code, codes::DENY_LIST);
    assert_eq!(a.reasons[0].points, 100);
    assert!(a.summary().starts_with("risk 100/100: deny_list +100"));
    // ASCII case in the request is folded.
    let a = m.score(&s, &req("ops", &bad.to_uppercase(), 1, OPS_END + HOUR));
    assert_eq!(a.score, 100);
    // Other destinations are unaffected.
    let a = m.score(&s, &req("ops", &vendor(0), 500 * USDC, OPS_END + HOUR));
    assert_eq!(a.score, 0, "{}", a.summary());
}

#[test]
fn five_wallets_paying_one_new_address_flags_fan_in() {
    let m = model();
    let wallets: Vec<String> = (0..6).map(|i| format!("hot-{i}")).collect();
    let mut past = Vec::new();
    for (i, w) in wallets.iter().enumerate() {
        past.extend(ops(w, i as u64 * 7));
    }
    let mut s = state(&m, &past);
    let drain = "0x00000000000000000000000000000000000f4e11";
    let start = OPS_END + 3 * HOUR;
    let mut scores = Vec::new();
    for (i, w) in wallets.iter().enumerate() {
        let r = req(w, drain, 500 * USDC, start + i as u64 * 5 * MIN);
        let a = m.score(&s, &r);
        scores.push(a.clone());
        s.record(&r);
    }
    for (i, a) in scores.iter().enumerate() {
        let payers = i + 1;
        assert_eq!(
            a.has(codes::FAN_IN),
            payers >= 5,
            "payer {payers}: {}",
            a.summary()
        );
        assert!(a.has(codes::NEW_DESTINATION));
    }
    let fifth = &scores[4];
    assert_eq!(fifth.score, 75, "{}", fifth.summary());
    let msg = &fifth
        .reasons
        .iter()
        .find(|r| r.code == codes::FAN_IN)
        .unwrap()
        .message;
    assert!(msg.starts_with("5 distinct wallets"), "{msg}");
    assert!(
        scores[5]
            .reasons
            .iter()
            .any(|r| r.message.starts_with("6 distinct wallets"))
    );
    // The same wallet paying again does not count twice.
    let again = m.score(&s, &req(&wallets[0], drain, 500 * USDC, start + HOUR));
    assert!(
        again
            .reasons
            .iter()
            .any(|r| r.message.starts_with("6 distinct wallets"))
    );
}

#[test]
fn an_established_shared_address_is_not_fan_in() {
    // An exchange deposit address every wallet has paid for months: not fresh.
    let m = model();
    let exchange = "0x00000000000000000000000000000000000e8c01";
    let mut past = Vec::new();
    for i in 0..8u64 {
        let w = format!("hot-{i}");
        past.extend(ops(&w, i));
        for d in 0..89u64 {
            past.push(req(
                &w,
                exchange,
                300 * USDC,
                T0 + d * DAY + 20 * HOUR + i * MIN,
            ));
        }
    }
    past.sort_by_key(|r| r.at_ms);
    let s = state(&m, &past);
    for i in 0..8u64 {
        let a = m.score(
            &s,
            &req(&format!("hot-{i}"), exchange, 300 * USDC, OPS_END + HOUR),
        );
        assert!(!a.has(codes::FAN_IN), "{}", a.summary());
        assert_eq!(a.score, 0, "{}", a.summary());
    }
}

#[test]
fn fan_in_needs_payers_within_the_window() {
    let m = model();
    let mut s = m.new_state();
    let drain = "0x00000000000000000000000000000000000f4e12";
    // Four wallets paid it 2 days apart: outside the 24 h fan-in window of each other.
    for i in 0..4u64 {
        s.record(&req(&format!("w{i}"), drain, USDC, T0 + i * 2 * DAY));
    }
    let a = m.score(&s, &req("w9", drain, USDC, T0 + 6 * DAY + HOUR));
    assert!(!a.has(codes::FAN_IN), "{}", a.summary());
}

#[test]
fn idle_stream_is_forgotten() {
    let m = model();
    let s = state(&m, &ops("ops", 0));
    // 200 days later (history window 180 days): no profile, no velocity baseline.
    let a = m.score(&s, &req("ops", &vendor(0), 500 * USDC, OPS_END + 200 * DAY));
    assert!(a.has(codes::NO_HISTORY), "{}", a.summary());
}
