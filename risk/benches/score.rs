//! Prints how long scoring and recording take (`cargo bench -p custos-risk`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmark code"
)]

use std::hint::black_box;
use std::time::Instant;

use custos_risk::{RiskConfig, RiskModel, RiskRequest, RiskState};

const MIN: u64 = 60_000;
const HOUR: u64 = 60 * MIN;
const DAY: u64 = 24 * HOUR;
const T0: u64 = 1_767_225_600_000;
const USDC: u128 = 1_000_000;

fn req(wallet: &str, destination: String, amount: u128, at_ms: u64) -> RiskRequest {
    RiskRequest {
        wallet: wallet.into(),
        chain: "ethereum".into(),
        asset: "USDC".into(),
        destination,
        amount,
        at_ms,
    }
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
    println!("| {name:<58} | {iters:>7} | {:>10.2?} |", per);
}

/// 100 000 destinations paid by 500 wallets over the last 20 days, plus a wallet
/// with `n` earlier withdrawals to 20 regular destinations, plus a fresh address
/// paid by 10 wallets in the last hour.
fn history(n: usize) -> Vec<RiskRequest> {
    let end = T0 + 20 * DAY;
    let mut past = Vec::new();
    for i in 0..100_000u64 {
        past.push(req(
            &format!("w{}", i % 500),
            format!("0x{:040x}", i),
            (100 + i as u128 % 900) * USDC,
            T0 + i * (20 * DAY / 100_000),
        ));
    }
    for k in 0..n as u64 {
        past.push(req(
            "bench",
            format!("0x{:040x}", 0xb000 + k % 20),
            (200 + (k * 37 % 601) as u128) * USDC,
            end - (n as u64 - k) * 2 * HOUR,
        ));
    }
    for w in 0..10u64 {
        past.push(req(
            &format!("w{w}"),
            "0xfresh".into(),
            USDC,
            end - HOUR + w * MIN,
        ));
    }
    past.sort_by_key(|r| r.at_ms);
    past
}

fn main() {
    let model = RiskModel::new(RiskConfig::default()).unwrap();
    println!("| operation | iterations | time per op |");
    println!("|---|---:|---:|");
    let end = T0 + 20 * DAY;
    for n in [10usize, 500] {
        let past = history(n);
        let start = Instant::now();
        let state = RiskState::rebuild(model.config(), &past).unwrap();
        let rebuild = start.elapsed();
        assert!(state.indexed_destinations() >= 100_000);
        let normal = req("bench", format!("0x{:040x}", 0xb003), 450 * USDC, end);
        let risky = req("bench", "0xfresh".into(), 90_000 * USDC, end);
        let a = model.score(&state, &normal);
        let b = model.score(&state, &risky);
        println!(
            "<!-- n={n}: normal -> {} | risky -> {} -->",
            a.summary(),
            b.summary()
        );
        time(
            &format!("score, {n} history, 100k index, normal (score {})", a.score),
            200_000,
            || model.score(&state, &normal),
        );
        time(
            &format!(
                "score, {n} history, 100k index, 3 signals (score {})",
                b.score
            ),
            200_000,
            || model.score(&state, &risky),
        );
        let mut s = state.clone();
        let mut t = end;
        let mut k = 0u64;
        time(&format!("record, {n} history, 100k index"), 200_000, || {
            t += 1_000;
            k += 1;
            s.record(&req(
                "bench",
                format!("0x{:040x}", 0xb000 + k % 20),
                450 * USDC,
                t,
            ));
        });
        println!(
            "| {:<58} | {:>7} | {:>10.2?} |",
            format!("rebuild {} withdrawals (total)", past.len()),
            1,
            rebuild
        );
    }
}
