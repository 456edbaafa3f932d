//! Where a withdrawal's time goes: one latency histogram per stage
//! (`custos_stage_latency_seconds{stage=...}` on `/metrics`), and the sizes
//! of the intake's group commits. Process-wide, like a metrics registry:
//! every module records into it without being wired to it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use custos_service::latency::StageLatencies;

/// A stage of the withdrawal path, and of the online signing inside it.
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
    /// The store part of a group commit: one transaction with every new
    /// row, its transitions, events and hooks.
    IntakeStore,
    /// Registering an approved quorum with the signers.
    Registration,
    /// The threshold signature, from reservation to the combined signature.
    Signing,
    /// Assembling and broadcasting a signed transaction.
    Broadcast,
    /// Online signing: the coordinator's durable bookkeeping of one request
    /// (request row, presignature taken, outcome), each a committed write.
    SignCommit,
    /// Online signing: the calls to the signers for their partial
    /// signatures (TLS gRPC; the signers unseal and mark the presignature
    /// consumed meanwhile), until the last one answered.
    SignerCalls,
    /// Online signing: combining the partials and verifying the signature.
    Combine,
}

/// Each stage's name on `/metrics`, in the order of [`Stage`] (a stage is
/// its index here).
const NAMES: [&str; 13] = [
    "risk",
    "policy",
    "log_append",
    "checkpoint",
    "witness_round",
    "intake",
    "intake_store",
    "registration",
    "signing",
    "broadcast",
    "sign_commit",
    "signer_calls",
    "combine",
];

static STAGES: StageLatencies<{ NAMES.len() }> = StageLatencies::new(
    "custos_stage_latency_seconds",
    "Time spent per stage of the withdrawal path.",
    NAMES,
);

/// How many group rounds ran and how many items they carried.
struct Rounds {
    rounds: AtomicU64,
    items: AtomicU64,
    /// Metric names: rounds, items.
    names: (&'static str, &'static str),
}

impl Rounds {
    const fn new(rounds: &'static str, items: &'static str) -> Self {
        Self {
            rounds: AtomicU64::new(0),
            items: AtomicU64::new(0),
            names: (rounds, items),
        }
    }

    fn record(&self, items: usize) {
        self.rounds.fetch_add(1, Ordering::Relaxed);
        self.items.fetch_add(items as u64, Ordering::Relaxed);
    }

    fn metrics_text(&self) -> String {
        let (rounds, items) = self.names;
        format!(
            "# TYPE {rounds} counter\n{rounds} {}\n# TYPE {items} counter\n{items} {}\n",
            self.rounds.load(Ordering::Relaxed),
            self.items.load(Ordering::Relaxed),
        )
    }
}

static INTAKE: Rounds = Rounds::new(
    "custos_intake_batches_total",
    "custos_intake_requests_total",
);
static REGISTRATION: Rounds = Rounds::new(
    "custos_registration_rounds_total",
    "custos_registrations_total",
);

/// Records that `stage` took `d`.
pub fn observe(stage: Stage, d: Duration) {
    STAGES.observe(stage as usize, d);
}

/// Records `stage` from `started` until now.
pub fn since(stage: Stage, started: Instant) {
    observe(stage, started.elapsed());
}

/// Records one intake group commit of `requests` withdrawals.
pub fn intake_batch(requests: usize) {
    INTAKE.record(requests);
}

/// Records one registration round (one call per signer) carrying
/// `registrations` approved quorums.
pub fn registration_round(registrations: usize) {
    REGISTRATION.record(registrations);
}

/// Prometheus text for every stage and the group-round counters.
pub fn metrics_text() -> String {
    let mut out = STAGES.metrics_text();
    out.push_str(&INTAKE.metrics_text());
    out.push_str(&REGISTRATION.metrics_text());
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
    fn every_stage_is_exported_by_its_name() {
        // Other tests in this process may record too: compare differences.
        let before = metrics_text();
        observe(Stage::Checkpoint, Duration::from_micros(700));
        observe(Stage::Checkpoint, Duration::from_secs(9));
        let after = metrics_text();
        let delta = |le| count(&after, "checkpoint", le) - count(&before, "checkpoint", le);
        assert_eq!(delta("0.001"), 1);
        assert_eq!(delta("+Inf"), 2);
        assert_eq!(Stage::Combine as usize, NAMES.len() - 1);
        for name in NAMES {
            assert!(
                after.contains(&format!(
                    "custos_stage_latency_seconds_count{{stage=\"{name}\"}}"
                )),
                "{name}"
            );
        }
        assert!(after.contains("custos_intake_batches_total "));
        assert!(after.contains("# TYPE custos_registrations_total counter\n"));
    }
}
