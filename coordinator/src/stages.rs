//! Where a withdrawal's time goes: one latency histogram per stage
//! (`custos_stage_latency_seconds{stage=...}` on `/metrics`), and the sizes
//! of the intake's group commits. Process-wide, like a metrics registry:
//! every module records into it without being wired to it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A stage of the withdrawal path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Scoring the risk.
    Risk,
    /// Evaluating the policy.
    Policy,
    /// One durable audit append (one entry or a batch).
    LogAppend,
    /// Signing a checkpoint with the log key.
    Checkpoint,
    /// Collecting witness cosignatures on a checkpoint.
    WitnessRound,
    /// A group commit of new withdrawals (decide, log, store).
    Intake,
    /// Registering an approved quorum with the signers.
    Registration,
    /// The threshold signature, from reservation to the combined signature.
    Signing,
    /// Assembling and broadcasting a signed transaction.
    Broadcast,
}

impl Stage {
    const ALL: [Stage; 9] = [
        Stage::Risk,
        Stage::Policy,
        Stage::LogAppend,
        Stage::Checkpoint,
        Stage::WitnessRound,
        Stage::Intake,
        Stage::Registration,
        Stage::Signing,
        Stage::Broadcast,
    ];

    fn name(self) -> &'static str {
        match self {
            Stage::Risk => "risk",
            Stage::Policy => "policy",
            Stage::LogAppend => "log_append",
            Stage::Checkpoint => "checkpoint",
            Stage::WitnessRound => "witness_round",
            Stage::Intake => "intake",
            Stage::Registration => "registration",
            Stage::Signing => "signing",
            Stage::Broadcast => "broadcast",
        }
    }
}

/// Upper bounds of the buckets, in seconds (from 10 µs: risk and policy
/// take microseconds, a witness round can take seconds).
const BOUNDS: [f64; 14] = [
    0.00001, 0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

struct Histogram {
    /// Per bucket (not cumulative); the last one is +Inf.
    buckets: [AtomicU64; 15],
    sum_ns: AtomicU64,
}

impl Histogram {
    const fn new() -> Self {
        Self {
            buckets: [const { AtomicU64::new(0) }; 15],
            sum_ns: AtomicU64::new(0),
        }
    }
}

struct Registry {
    stages: [Histogram; 9],
    intake_batches: AtomicU64,
    intake_requests: AtomicU64,
}

static REGISTRY: Registry = Registry {
    stages: [const { Histogram::new() }; 9],
    intake_batches: AtomicU64::new(0),
    intake_requests: AtomicU64::new(0),
};

/// Records that `stage` took `d`.
pub fn observe(stage: Stage, d: Duration) {
    let secs = d.as_secs_f64();
    let i = BOUNDS
        .iter()
        .position(|b| secs <= *b)
        .unwrap_or(BOUNDS.len());
    let h = &REGISTRY.stages[stage as usize];
    h.buckets[i].fetch_add(1, Ordering::Relaxed);
    h.sum_ns.fetch_add(
        u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
}

/// Records `stage` from `started` until now.
pub fn since(stage: Stage, started: Instant) {
    observe(stage, started.elapsed());
}

/// Records one intake group commit of `requests` withdrawals.
pub fn intake_batch(requests: usize) {
    REGISTRY.intake_batches.fetch_add(1, Ordering::Relaxed);
    REGISTRY
        .intake_requests
        .fetch_add(requests as u64, Ordering::Relaxed);
}

/// Prometheus text for every stage and the intake batch counters.
pub fn metrics_text() -> String {
    let mut out = String::from(
        "# HELP custos_stage_latency_seconds Time spent per stage of the withdrawal path.\n\
         # TYPE custos_stage_latency_seconds histogram\n",
    );
    for stage in Stage::ALL {
        let h = &REGISTRY.stages[stage as usize];
        let name = stage.name();
        let mut cum = 0;
        for (i, b) in BOUNDS.iter().enumerate() {
            cum += h.buckets[i].load(Ordering::Relaxed);
            out.push_str(&format!(
                "custos_stage_latency_seconds_bucket{{stage=\"{name}\",le=\"{b}\"}} {cum}\n"
            ));
        }
        cum += h.buckets[BOUNDS.len()].load(Ordering::Relaxed);
        out.push_str(&format!(
            "custos_stage_latency_seconds_bucket{{stage=\"{name}\",le=\"+Inf\"}} {cum}\n\
             custos_stage_latency_seconds_sum{{stage=\"{name}\"}} {}\n\
             custos_stage_latency_seconds_count{{stage=\"{name}\"}} {cum}\n",
            h.sum_ns.load(Ordering::Relaxed) as f64 / 1e9
        ));
    }
    out.push_str(&format!(
        "# TYPE custos_intake_batches_total counter\ncustos_intake_batches_total {}\n\
         # TYPE custos_intake_requests_total counter\ncustos_intake_requests_total {}\n",
        REGISTRY.intake_batches.load(Ordering::Relaxed),
        REGISTRY.intake_requests.load(Ordering::Relaxed),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(text: &str, stage: &str, le: &str) -> u64 {
        let prefix =
            format!("custos_stage_latency_seconds_bucket{{stage=\"{stage}\",le=\"{le}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|n| n.parse().ok())
            .unwrap_or(u64::MAX)
    }

    #[test]
    fn buckets_are_cumulative_per_stage() {
        // Other tests in this process may record too: compare differences.
        let before = metrics_text();
        observe(Stage::Checkpoint, Duration::from_micros(700));
        observe(Stage::Checkpoint, Duration::from_secs(9));
        let after = metrics_text();
        let delta = |le| count(&after, "checkpoint", le) - count(&before, "checkpoint", le);
        assert_eq!(delta("0.0005"), 0);
        assert_eq!(delta("0.001"), 1);
        assert_eq!(delta("5"), 1);
        assert_eq!(delta("+Inf"), 2);
        assert!(after.contains("custos_stage_latency_seconds_count{stage=\"witness_round\"}"));
    }
}
