//! Where a signer's time goes when it signs: one latency histogram per
//! stage (`custos_signer_stage_latency_seconds{stage=...}` on `/metrics`),
//! so the online path's breakdown (unseal, the consumed marker's fsync, the
//! arithmetic, the co-signer checks) shows in production as in benchmarks.

use std::time::Instant;

use custos_service::latency::StageLatencies;

/// A stage of a signer's part in online signing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Checking the coordinator's epoch against the fence.
    Admit,
    /// The co-signer checks of a withdrawal (log proofs, policy, approvals,
    /// time lock, history, journal).
    Checks,
    /// Reading and unsealing the presignature.
    Unseal,
    /// Writing and fsyncing the presignature's consumed marker (and its
    /// directory) before anything is computed from it.
    ConsumeMarker,
    /// The partial signature's arithmetic.
    Partial,
    /// Journaling the partial before it leaves (withdrawals).
    Journal,
    /// The whole request inside the signer, from decoding to the answer.
    Request,
}

/// Each stage's name on `/metrics`, in the order of [`Stage`] (a stage is
/// its index here).
const NAMES: [&str; 7] = [
    "admit",
    "checks",
    "unseal",
    "consume_marker",
    "partial",
    "journal",
    "request",
];

static STAGES: StageLatencies<{ NAMES.len() }> = StageLatencies::new(
    "custos_signer_stage_latency_seconds",
    "Time a signer spends per stage of online signing.",
    NAMES,
);

/// Records `stage` from `started` until now.
pub fn since(stage: Stage, started: Instant) {
    STAGES.since(stage as usize, started);
}

/// Prometheus text for every stage.
pub fn metrics_text() -> String {
    STAGES.metrics_text()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stage_is_exported_by_its_name() {
        since(Stage::Unseal, Instant::now());
        let text = metrics_text();
        assert_eq!(Stage::Request as usize, NAMES.len() - 1);
        for name in NAMES {
            assert!(
                text.contains(&format!(
                    "custos_signer_stage_latency_seconds_count{{stage=\"{name}\"}}"
                )),
                "{name}"
            );
        }
    }
}
