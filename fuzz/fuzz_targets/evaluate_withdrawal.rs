//! Arbitrary withdrawal JSON evaluated against the sample policy: refused or decided,
//! never a panic; and the decision is deterministic.
#![no_main]

use custos_policy::{ActivePolicy, Policy, Timestamp, Withdrawal, evaluate};
use libfuzzer_sys::fuzz_target;

const POLICY: &[u8] = include_bytes!("../../examples/policy.toml");

fuzz_target!(|data: &[u8]| {
    let Ok(policy) = Policy::parse(POLICY) else {
        return;
    };
    let active = ActivePolicy::assumed(policy, Timestamp(0));
    let Ok(w) = serde_json::from_slice::<Withdrawal>(data) else {
        return;
    };
    let now = Timestamp(1_767_780_000 + i64::from(data.len() as u32) * 3_613);
    let risk = u32::from(data.first().copied().unwrap_or(0));
    if let Ok(d) = evaluate(&active, &w, &[], now, risk) {
        assert_eq!(Some(d), evaluate(&active, &w, &[], now, risk).ok());
    }
});
