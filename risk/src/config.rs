//! Weights, thresholds and memory bounds of the risk model.

use serde::{Deserialize, Serialize};

use crate::error::{Result, RiskError};

const HOUR: u64 = 3_600;
const DAY: u64 = 24 * HOUR;
/// Longest window accepted (ten years), far from any `u64` millisecond overflow.
const MAX_WINDOW_SECS: u64 = 10 * 366 * DAY;
/// Largest per-stream ring accepted.
pub const MAX_RING_CAPACITY: usize = 65_536;
/// Longest deny-list entry accepted.
pub const MAX_DESTINATION_LEN: usize = 256;

/// Risk model configuration. Every field has a default (`RiskConfig::default()`,
/// or an empty `[risk]` table), so a config file only names what it changes.
///
/// Points are per signal; the score is their sum capped at 100 (a deny-list hit is
/// always 100). See the crate documentation for the combination rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RiskConfig {
    // ---- memory bounds -------------------------------------------------------
    /// Amounts kept per (wallet, chain, asset) stream: the last N withdrawals by time.
    pub ring_capacity: usize,
    /// A stream whose newest withdrawal is older than this is forgotten (treated as
    /// having no history).
    pub history_window_secs: u64,
    /// A (wallet, destination) pair unused for this long is forgotten (new again).
    pub destination_memory_secs: u64,
    /// Most destinations remembered per (wallet, chain); the least recently used are
    /// dropped beyond it.
    pub max_destinations_per_wallet: usize,
    /// A destination no wallet paid for this long leaves the cross-wallet index (its
    /// first-seen time is forgotten).
    pub index_window_secs: u64,

    // ---- amount profile ------------------------------------------------------
    /// Fewer earlier withdrawals than this in the stream: no amount profile, the mild
    /// `no_history` signal fires instead, and `rare_destination` is not judged.
    pub min_samples: usize,
    /// Points of `no_history`.
    pub no_history_points: u32,
    /// Robust z-score (on log2 of the amount, `0.6745 (x - median) / MAD`) above which
    /// `amount_outlier` fires. Only amounts above the median are flagged.
    pub amount_z_threshold: f64,
    /// Robust z-score at which `amount_outlier` reaches its full points.
    pub amount_z_full: f64,
    /// Smallest MAD used, in log2 units (0.1 ≈ 7 %): a wallet that always pays the
    /// same amount would otherwise flag any change at all.
    pub amount_mad_floor_log2: f64,
    /// Full points of `amount_outlier` (half of them at the threshold).
    pub amount_points: u32,

    // ---- velocity --------------------------------------------------------------
    /// Velocity window (the "last hour").
    pub velocity_window_secs: u64,
    /// `velocity_count` never fires at or below this many withdrawals per window.
    pub velocity_min_count: u32,
    /// Velocity fires above `factor ×` the busiest earlier window of the stream.
    pub velocity_factor: f64,
    /// Full points of `velocity_count` (half of them just above the threshold).
    pub velocity_count_points: u32,
    /// Full points of `velocity_amount` (half of them just above the threshold).
    pub velocity_amount_points: u32,

    // ---- destinations ------------------------------------------------------------
    /// Points of `new_destination` (this wallet never paid it, on this chain).
    pub new_destination_points: u32,
    /// A destination paid fewer times than this by the wallet is `rare_destination`.
    pub rare_destination_max_uses: u32,
    /// Points of `rare_destination`.
    pub rare_destination_points: u32,
    /// Denied destinations, in the same normalised form as requests (compared
    /// ASCII-case-insensitively). A hit scores 100.
    pub deny_destinations: Vec<String>,

    // ---- fan-in --------------------------------------------------------------------
    /// Window in which distinct paying wallets are counted.
    pub fan_in_window_secs: u64,
    /// A destination first seen (by any wallet) within this long is "fresh".
    pub fresh_destination_secs: u64,
    /// `fan_in` fires when at least this many distinct wallets (the requesting one
    /// included) pay one fresh destination within the window.
    pub fan_in_min_wallets: u32,
    /// Points of `fan_in`.
    pub fan_in_points: u32,
    /// Paying wallets remembered per destination (the most recent ones).
    pub fan_in_max_tracked_payers: usize,
}

impl Default for RiskConfig {
    fn default() -> Self {
        Self {
            ring_capacity: 512,
            history_window_secs: 180 * DAY,
            destination_memory_secs: 365 * DAY,
            max_destinations_per_wallet: 20_000,
            index_window_secs: 30 * DAY,
            min_samples: 5,
            no_history_points: 10,
            amount_z_threshold: 3.5,
            amount_z_full: 10.0,
            amount_mad_floor_log2: 0.1,
            amount_points: 60,
            velocity_window_secs: HOUR,
            velocity_min_count: 10,
            velocity_factor: 2.0,
            velocity_count_points: 40,
            velocity_amount_points: 40,
            new_destination_points: 25,
            rare_destination_max_uses: 3,
            rare_destination_points: 10,
            deny_destinations: Vec::new(),
            fan_in_window_secs: DAY,
            fresh_destination_secs: 7 * DAY,
            fan_in_min_wallets: 5,
            fan_in_points: 50,
            fan_in_max_tracked_payers: 64,
        }
    }
}

fn window(field: &str, secs: u64) -> Result<()> {
    if secs == 0 || secs > MAX_WINDOW_SECS {
        return Err(RiskError::config(
            field,
            format!("must be between 1 and {MAX_WINDOW_SECS} seconds, got {secs}"),
        ));
    }
    Ok(())
}

fn points(field: &str, p: u32) -> Result<()> {
    if p > 100 {
        return Err(RiskError::config(
            field,
            format!("points must be at most 100, got {p}"),
        ));
    }
    Ok(())
}

fn positive(field: &str, v: f64) -> Result<()> {
    if !v.is_finite() || v <= 0.0 {
        return Err(RiskError::config(
            field,
            format!("must be a finite number above 0, got {v}"),
        ));
    }
    Ok(())
}

impl RiskConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        if self.ring_capacity == 0 || self.ring_capacity > MAX_RING_CAPACITY {
            return Err(RiskError::config(
                "ring_capacity",
                format!(
                    "must be between 1 and {MAX_RING_CAPACITY}, got {}",
                    self.ring_capacity
                ),
            ));
        }
        window("history_window_secs", self.history_window_secs)?;
        window("destination_memory_secs", self.destination_memory_secs)?;
        if self.max_destinations_per_wallet == 0 {
            return Err(RiskError::config(
                "max_destinations_per_wallet",
                "must be at least 1",
            ));
        }
        window("index_window_secs", self.index_window_secs)?;
        if self.min_samples < 3 || self.min_samples > self.ring_capacity {
            return Err(RiskError::config(
                "min_samples",
                format!(
                    "must be between 3 and ring_capacity ({}), got {}",
                    self.ring_capacity, self.min_samples
                ),
            ));
        }
        points("no_history_points", self.no_history_points)?;
        positive("amount_z_threshold", self.amount_z_threshold)?;
        positive("amount_z_full", self.amount_z_full)?;
        if self.amount_z_full <= self.amount_z_threshold {
            return Err(RiskError::config(
                "amount_z_full",
                format!(
                    "must be above amount_z_threshold ({}), got {}",
                    self.amount_z_threshold, self.amount_z_full
                ),
            ));
        }
        positive("amount_mad_floor_log2", self.amount_mad_floor_log2)?;
        points("amount_points", self.amount_points)?;
        window("velocity_window_secs", self.velocity_window_secs)?;
        if !self.velocity_factor.is_finite() || self.velocity_factor < 1.0 {
            return Err(RiskError::config(
                "velocity_factor",
                format!(
                    "must be a finite number of at least 1, got {}",
                    self.velocity_factor
                ),
            ));
        }
        points("velocity_count_points", self.velocity_count_points)?;
        points("velocity_amount_points", self.velocity_amount_points)?;
        points("new_destination_points", self.new_destination_points)?;
        points("rare_destination_points", self.rare_destination_points)?;
        for (i, d) in self.deny_destinations.iter().enumerate() {
            let field = format!("deny_destinations[{i}]");
            if d.is_empty() || d.len() > MAX_DESTINATION_LEN {
                return Err(RiskError::config(
                    field,
                    format!("must be 1 to {MAX_DESTINATION_LEN} bytes long"),
                ));
            }
            if d.chars().any(char::is_whitespace) {
                return Err(RiskError::config(field, "must not contain whitespace"));
            }
        }
        window("fan_in_window_secs", self.fan_in_window_secs)?;
        window("fresh_destination_secs", self.fresh_destination_secs)?;
        if self.fan_in_window_secs > self.index_window_secs {
            return Err(RiskError::config(
                "fan_in_window_secs",
                "must not exceed index_window_secs (payers would be forgotten too early)",
            ));
        }
        if self.fresh_destination_secs > self.index_window_secs {
            return Err(RiskError::config(
                "fresh_destination_secs",
                "must not exceed index_window_secs (first-seen times are only kept that long)",
            ));
        }
        if self.fan_in_min_wallets < 2 {
            return Err(RiskError::config(
                "fan_in_min_wallets",
                format!("must be at least 2, got {}", self.fan_in_min_wallets),
            ));
        }
        points("fan_in_points", self.fan_in_points)?;
        if self.fan_in_max_tracked_payers < self.fan_in_min_wallets as usize {
            return Err(RiskError::config(
                "fan_in_max_tracked_payers",
                format!(
                    "must be at least fan_in_min_wallets ({}), got {}",
                    self.fan_in_min_wallets, self.fan_in_max_tracked_payers
                ),
            ));
        }
        Ok(())
    }
}
