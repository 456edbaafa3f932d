//! Scoring: the signals, their points, and the combined score.

use std::collections::HashSet;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::config::RiskConfig;
use crate::error::Result;
use crate::state::{Limits, RiskRequest, RiskState, WalletHistory, normalise};
use crate::stats::log2_amount;

/// Stable reason codes (what approvers' tooling and policies can key on).
pub mod codes {
    /// The destination is on the configured deny list (score 100).
    pub const DENY_LIST: &str = "deny_list";
    /// The amount is far above the stream's usual amounts (robust z-score).
    pub const AMOUNT_OUTLIER: &str = "amount_outlier";
    /// Too few earlier withdrawals to profile amounts.
    pub const NO_HISTORY: &str = "no_history";
    /// More withdrawals in the velocity window than the stream's busiest earlier one.
    pub const VELOCITY_COUNT: &str = "velocity_count";
    /// More value moved in the velocity window than in the stream's busiest earlier one.
    pub const VELOCITY_AMOUNT: &str = "velocity_amount";
    /// This wallet never paid this destination (or not within memory).
    pub const NEW_DESTINATION: &str = "new_destination";
    /// This wallet paid this destination only a few times.
    pub const RARE_DESTINATION: &str = "rare_destination";
    /// Many distinct wallets pay one freshly seen destination.
    pub const FAN_IN: &str = "fan_in";
    /// Every code, in the order signals are evaluated.
    pub const ALL: [&str; 8] = [
        DENY_LIST,
        AMOUNT_OUTLIER,
        NO_HISTORY,
        VELOCITY_COUNT,
        VELOCITY_AMOUNT,
        NEW_DESTINATION,
        RARE_DESTINATION,
        FAN_IN,
    ];
}

/// Highest score.
pub const MAX_SCORE: u32 = 100;

/// Consistency constant of the MAD against a normal distribution's σ
/// (Iglewicz & Hoaglin's modified z-score).
const MAD_Z: f64 = 0.6745;

/// One signal that fired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskReason {
    /// Stable code, one of [`codes::ALL`].
    pub code: String,
    /// Points it adds to the score.
    pub points: u32,
    /// Plain-words explanation with the numbers, for approvers.
    pub message: String,
}

/// The score of one request and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskAssessment {
    /// 0 (nothing unusual) to 100 (block-worthy).
    pub score: u32,
    /// Signals that fired, in evaluation order (see [`codes::ALL`]).
    pub reasons: Vec<RiskReason>,
}

impl RiskAssessment {
    /// One line: `risk 85/100: amount_outlier +60, new_destination +25`.
    pub fn summary(&self) -> String {
        let mut s = format!("risk {}/{MAX_SCORE}", self.score);
        if self.reasons.is_empty() {
            s.push_str(": no risk signals");
            return s;
        }
        for (i, r) in self.reasons.iter().enumerate() {
            let sep = if i == 0 { ": " } else { ", " };
            let _ = write!(s, "{sep}{} +{}", r.code, r.points);
        }
        s
    }

    /// True when the signal `code` fired.
    pub fn has(&self, code: &str) -> bool {
        self.reasons.iter().any(|r| r.code == code)
    }

    /// Points of the signal `code` (0 when it did not fire).
    pub fn points(&self, code: &str) -> u32 {
        self.reasons
            .iter()
            .filter(|r| r.code == code)
            .map(|r| r.points)
            .sum()
    }
}

/// A validated configuration ready to score: immutable, cheap to share between
/// threads (`Arc<RiskModel>`), independent of the mutable [`RiskState`].
#[derive(Debug, Clone)]
pub struct RiskModel {
    config: RiskConfig,
    deny: HashSet<String>,
}

/// Points from `half` at `start` rising linearly to `full_points` at `full`.
fn ramp(x: f64, start: f64, full: f64, full_points: u32) -> u32 {
    let t = ((x - start) / (full - start)).clamp(0.0, 1.0);
    let p = f64::from(full_points) * (0.5 + 0.5 * t);
    // Round half up; `as` saturates (p is finite and within 0..=100 anyway).
    (p + 0.5).floor() as u32
}

/// `12 s`, `45 min`, `3 h`, `12 d`.
fn human(ms: u64) -> String {
    let s = ms / 1000;
    if s < 120 {
        format!("{s} s")
    } else if s < 2 * 3600 {
        format!("{} min", s / 60)
    } else if s < 2 * 86_400 {
        format!("{} h", s / 3600)
    } else {
        format!("{} d", s / 86_400)
    }
}

impl Default for RiskModel {
    /// The model of the default configuration (which is valid and has an
    /// empty deny list).
    fn default() -> Self {
        Self {
            config: RiskConfig::default(),
            deny: HashSet::new(),
        }
    }
}

impl RiskModel {
    /// Validates `config` and prepares the deny list.
    pub fn new(config: RiskConfig) -> Result<Self> {
        config.validate()?;
        let deny = config
            .deny_destinations
            .iter()
            .map(|d| d.to_ascii_lowercase())
            .collect();
        Ok(Self { config, deny })
    }

    /// The configuration in force.
    pub fn config(&self) -> &RiskConfig {
        &self.config
    }

    /// An empty state with this model's memory bounds.
    pub fn new_state(&self) -> RiskState {
        RiskState::with_limits(Limits::from_config(&self.config))
    }

    /// Scores `request` against `state` (before recording it).
    pub fn score(&self, state: &RiskState, request: &RiskRequest) -> RiskAssessment {
        self.assess(request, &state.history(request))
    }

    /// Scores `request` against an explicit history view. Pure: the same request,
    /// view and config always give the same assessment.
    ///
    /// Combination rule: score = min(100, Σ points of the signals that fired); a
    /// deny-list hit makes it 100 whatever else fired. Every signal is still
    /// evaluated and listed, so approvers see the whole picture.
    pub fn assess(&self, req: &RiskRequest, history: &WalletHistory<'_>) -> RiskAssessment {
        let c = &self.config;
        let at = req.at_ms;
        let mut reasons = Vec::new();
        let mut push = |code: &str, points: u32, message: String| {
            reasons.push(RiskReason {
                code: code.to_owned(),
                points,
                message,
            });
        };
        let dest = normalise(&req.destination);

        // (4) Deny list.
        let denied = self.deny.contains(dest.as_ref());
        if denied {
            push(
                codes::DENY_LIST,
                MAX_SCORE,
                format!("destination {dest} is on the deny list"),
            );
        }

        let history_ms = c.history_window_secs.saturating_mul(1000);
        let profile = history.amounts.filter(|p| !p.is_stale(at, history_ms));
        let n = profile.map_or(0, |p| p.len());

        // (1) Amount against the stream's usual distribution.
        if n < c.min_samples {
            push(
                codes::NO_HISTORY,
                c.no_history_points,
                format!(
                    "only {n} earlier {} withdrawal(s) on {} from wallet {} (profiling needs {}); amount not compared",
                    req.asset, req.chain, req.wallet, c.min_samples
                ),
            );
        } else if let Some(r) = profile.and_then(|p| p.robust()) {
            let x = log2_amount(req.amount);
            let mad = r.mad_log2.max(c.amount_mad_floor_log2);
            let z = MAD_Z * (x - r.median_log2) / mad;
            if z > c.amount_z_threshold {
                let ratio = req.amount as f64 / (r.median_amount.max(1) as f64);
                push(
                    codes::AMOUNT_OUTLIER,
                    ramp(z, c.amount_z_threshold, c.amount_z_full, c.amount_points),
                    format!(
                        "amount {} is {ratio:.1}x the median {} of the last {n} {} withdrawals (robust z {z:.1} on log amount, threshold {:.1})",
                        req.amount, r.median_amount, req.asset, c.amount_z_threshold
                    ),
                );
            }
        }

        // (2) Velocity.
        let win_ms = c.velocity_window_secs.saturating_mul(1000);
        let from = at.saturating_sub(win_ms);
        let (recent, recent_sum) = profile.map_or((0, 0), |p| p.window(from, at));
        let count = recent.saturating_add(1);
        let sum = recent_sum.saturating_add(req.amount);
        let peak = profile
            .map(|p| p.peak_before(from, win_ms))
            .unwrap_or_default();
        let win = human(win_ms);
        let count_threshold =
            f64::from(c.velocity_min_count).max(c.velocity_factor * f64::from(peak.count));
        if f64::from(count) > count_threshold {
            push(
                codes::VELOCITY_COUNT,
                ramp(
                    f64::from(count) / count_threshold,
                    1.0,
                    2.0,
                    c.velocity_count_points,
                ),
                format!(
                    "{count} {} withdrawals in the last {win} including this one; busiest earlier {win} had {}, threshold {count_threshold:.0}",
                    req.asset, peak.count
                ),
            );
        }
        if count >= 2 && peak.samples >= c.min_samples && peak.sum > 0 {
            let sum_threshold = c.velocity_factor * peak.sum as f64;
            if sum as f64 > sum_threshold {
                push(
                    codes::VELOCITY_AMOUNT,
                    ramp(
                        sum as f64 / sum_threshold,
                        1.0,
                        2.0,
                        c.velocity_amount_points,
                    ),
                    format!(
                        "{sum} {} base units in {count} withdrawals in the last {win} including this one; busiest earlier {win} moved {}, threshold {:.1}x that",
                        req.asset, peak.sum, c.velocity_factor
                    ),
                );
            }
        }

        // (3) New or rarely used destination for this wallet.
        let memory_ms = c.destination_memory_secs.saturating_mul(1000);
        let used = history
            .destination_use
            .filter(|u| u.last_ms.saturating_add(memory_ms) >= at);
        match used {
            None => push(
                codes::NEW_DESTINATION,
                c.new_destination_points,
                format!(
                    "first withdrawal from wallet {} to {dest} on {}",
                    req.wallet, req.chain
                ),
            ),
            Some(u) if u.count < c.rare_destination_max_uses && n >= c.min_samples => push(
                codes::RARE_DESTINATION,
                c.rare_destination_points,
                format!(
                    "wallet {} paid {dest} only {} time(s) before, last {} ago",
                    req.wallet,
                    u.count,
                    human(at.saturating_sub(u.last_ms))
                ),
            ),
            Some(_) => {}
        }

        // (5) Fan-in: many wallets paying one fresh destination.
        let index_ms = c.index_window_secs.saturating_mul(1000);
        let info = history
            .destination
            .filter(|i| i.last_seen_ms.saturating_add(index_ms) >= at);
        let fresh_ms = c.fresh_destination_secs.saturating_mul(1000);
        let first_seen = info.map_or(at, |i| i.first_seen_ms);
        if first_seen.saturating_add(fresh_ms) > at {
            let fan_ms = c.fan_in_window_secs.saturating_mul(1000);
            let mut payers = 0u32;
            let mut includes_self = false;
            if let Some(i) = info {
                for (wallet, last) in &i.payers {
                    if last.saturating_add(fan_ms) > at {
                        payers = payers.saturating_add(1);
                        includes_self |= *wallet == req.wallet;
                    }
                }
            }
            if !includes_self {
                payers = payers.saturating_add(1);
            }
            if payers >= c.fan_in_min_wallets {
                push(
                    codes::FAN_IN,
                    c.fan_in_points,
                    format!(
                        "{payers} distinct wallets (this one included) paid {dest} on {} in the last {}; first seen {} ago",
                        req.chain,
                        human(fan_ms),
                        human(at.saturating_sub(first_seen))
                    ),
                );
            }
        }

        let score = if denied {
            MAX_SCORE
        } else {
            reasons
                .iter()
                .fold(0u32, |acc, r| acc.saturating_add(r.points))
                .min(MAX_SCORE)
        };
        RiskAssessment { score, reasons }
    }
}
