//! Crafted histories shared by the test files.
#![allow(dead_code)]

use custos_risk::RiskRequest;

pub const MIN: u64 = 60_000;
pub const HOUR: u64 = 60 * MIN;
pub const DAY: u64 = 24 * HOUR;
/// 2026-01-01T00:00:00Z.
pub const T0: u64 = 1_767_225_600_000;
/// One USDC in base units.
pub const USDC: u128 = 1_000_000;

pub fn req(wallet: &str, destination: &str, amount: u128, at_ms: u64) -> RiskRequest {
    RiskRequest {
        wallet: wallet.into(),
        chain: "ethereum".into(),
        asset: "USDC".into(),
        destination: destination.into(),
        amount,
        at_ms,
    }
}

pub fn employee(i: usize) -> String {
    format!("0x{:040x}", 0xe000 + i)
}

/// Deterministic ±2 % jitter.
fn jitter(base: u128, salt: u64) -> u128 {
    let j = (salt.wrapping_mul(2_654_435_761) % 41) as u128; // 0..=40
    base * (980 + j) / 1000
}

pub fn salary(i: usize) -> u128 {
    (3_000 + 150 * i as u128) * USDC
}

/// Biweekly payroll: `cycles` batches of 20 salaries (3 000–5 850 USDC, ±2 %),
/// one a minute, each employee at their own address.
pub fn payroll(wallet: &str, cycles: u64) -> Vec<RiskRequest> {
    let mut out = Vec::new();
    for c in 0..cycles {
        let start = T0 + c * 14 * DAY + 9 * HOUR;
        for i in 0..20 {
            out.push(req(
                wallet,
                &employee(i),
                jitter(salary(i), c * 100 + i as u64),
                start + i as u64 * MIN,
            ));
        }
    }
    out
}

/// The time of payroll cycle `c`'s `i`-th payment.
pub fn payroll_at(c: u64, i: usize) -> u64 {
    T0 + c * 14 * DAY + 9 * HOUR + i as u64 * MIN
}

pub fn vendor(i: usize) -> String {
    format!("0x{:040x}", 0xd000 + i)
}

/// An operations hot wallet: 90 days, 4 withdrawals a day (every 6 hours, offset by
/// wallet-specific minutes), 200–800 USDC, to 10 regular vendors.
pub fn ops(wallet: &str, offset_min: u64) -> Vec<RiskRequest> {
    let mut out = Vec::new();
    for k in 0..(90 * 4) {
        let amount = (200 + (k * 37 % 601) as u128) * USDC;
        out.push(req(
            wallet,
            &vendor(k as usize % 10),
            amount,
            T0 + k * 6 * HOUR + offset_min * MIN,
        ));
    }
    out
}

/// Right after the ops history ends.
pub const OPS_END: u64 = T0 + 90 * DAY;
