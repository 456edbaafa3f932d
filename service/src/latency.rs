//! Latency histograms by stage, for `/metrics`: one fixed set of stages per
//! process, held in a `static` so any module records into it without being
//! wired to it (like a metrics registry). The coordinator times the
//! withdrawal path with one, each signer its online signing with another.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Upper bounds of the buckets, in seconds (from 10 µs: policy takes
/// microseconds, an fsync a fraction of a millisecond, a witness round can
/// take seconds).
pub const BOUNDS: [f64; 14] = [
    0.00001, 0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

struct Histogram {
    /// Per bucket (not cumulative); the last one is +Inf.
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    const fn new() -> Self {
        Self {
            buckets: [const { AtomicU64::new(0) }; BOUNDS.len() + 1],
            sum_ns: AtomicU64::new(0),
        }
    }
}

/// `N` named stages, each a latency histogram, exported as one metric with
/// a `stage` label.
pub struct StageLatencies<const N: usize> {
    metric: &'static str,
    help: &'static str,
    names: [&'static str; N],
    histograms: [Histogram; N],
}

impl<const N: usize> StageLatencies<N> {
    /// Stages `names` (by index) under the histogram `metric`.
    pub const fn new(metric: &'static str, help: &'static str, names: [&'static str; N]) -> Self {
        Self {
            metric,
            help,
            names,
            histograms: [const { Histogram::new() }; N],
        }
    }

    /// Records that stage `index` took `d` (an index out of range is ignored).
    pub fn observe(&self, index: usize, d: Duration) {
        let Some(h) = self.histograms.get(index) else {
            return;
        };
        let secs = d.as_secs_f64();
        let i = BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BOUNDS.len());
        h.buckets[i].fetch_add(1, Ordering::Relaxed);
        h.sum_ns.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Records stage `index` from `started` until now.
    pub fn since(&self, index: usize, started: Instant) {
        self.observe(index, started.elapsed());
    }

    /// Prometheus text: cumulative buckets, sum and count per stage.
    pub fn metrics_text(&self) -> String {
        let metric = self.metric;
        let mut out = format!("# HELP {metric} {}\n# TYPE {metric} histogram\n", self.help);
        for (name, h) in self.names.iter().zip(&self.histograms) {
            let mut cum = 0;
            for (i, b) in BOUNDS.iter().enumerate() {
                cum += h.buckets[i].load(Ordering::Relaxed);
                out.push_str(&format!(
                    "{metric}_bucket{{stage=\"{name}\",le=\"{b}\"}} {cum}\n"
                ));
            }
            cum += h.buckets[BOUNDS.len()].load(Ordering::Relaxed);
            out.push_str(&format!(
                "{metric}_bucket{{stage=\"{name}\",le=\"+Inf\"}} {cum}\n\
                 {metric}_sum{{stage=\"{name}\"}} {}\n\
                 {metric}_count{{stage=\"{name}\"}} {cum}\n",
                h.sum_ns.load(Ordering::Relaxed) as f64 / 1e9
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(text: &str, stage: &str, le: &str) -> u64 {
        let prefix = format!("t_seconds_bucket{{stage=\"{stage}\",le=\"{le}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|n| n.parse().ok())
            .unwrap_or(u64::MAX)
    }

    #[test]
    fn buckets_are_cumulative_per_stage() {
        let s = StageLatencies::new("t_seconds", "test", ["a", "b"]);
        s.observe(1, Duration::from_micros(700));
        s.observe(1, Duration::from_secs(9));
        s.observe(7, Duration::from_secs(1));
        let text = s.metrics_text();
        assert_eq!(count(&text, "b", "0.0005"), 0);
        assert_eq!(count(&text, "b", "0.001"), 1);
        assert_eq!(count(&text, "b", "5"), 1);
        assert_eq!(count(&text, "b", "+Inf"), 2);
        assert_eq!(count(&text, "a", "+Inf"), 0);
        assert!(text.contains("t_seconds_sum{stage=\"b\"} 9.0007"), "{text}");
        assert!(text.contains("t_seconds_count{stage=\"b\"} 2"), "{text}");
        assert!(text.starts_with("# HELP t_seconds test\n# TYPE t_seconds histogram\n"));
    }
}
