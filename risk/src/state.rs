//! The in-memory history the coordinator keeps and updates after each withdrawal.

use std::borrow::{Borrow, Cow};
use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::config::RiskConfig;
use crate::error::Result;
use crate::stats::{log2_amount, mad_sorted, median_sorted};

/// A withdrawal as the risk model sees it: the request being scored, or a past
/// accepted one being recorded.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskRequest {
    /// Source wallet id.
    pub wallet: String,
    /// Chain name.
    pub chain: String,
    /// Asset symbol.
    pub asset: String,
    /// Destination address, normalised by the caller (lowercase); ASCII upper case
    /// is folded to lower case here too.
    pub destination: String,
    /// Amount in the asset's base units.
    pub amount: u128,
    /// When it was requested (scoring) or accepted (recording), in Unix milliseconds.
    pub at_ms: u64,
}

/// One remembered withdrawal amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Sample {
    /// When, in Unix milliseconds.
    pub at_ms: u64,
    /// Amount in base units.
    pub amount: u128,
}

/// The last `capacity` withdrawals (by time) of one (wallet, chain, asset) stream,
/// kept both in time order (velocity) and in amount order (median, MAD).
///
/// Which samples are kept does not depend on the order they were pushed in: it is
/// always the `capacity` latest by `(at_ms, amount)`.
#[derive(Debug, Clone, PartialEq)]
pub struct AmountProfile {
    capacity: usize,
    /// Ascending by `(at_ms, amount)`.
    by_time: VecDeque<Sample>,
    /// Ascending amounts, and their log2 at the same index.
    amounts: Vec<u128>,
    logs: Vec<f64>,
}

/// Median and MAD of a profile's log2 amounts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Robust {
    pub median_log2: f64,
    pub mad_log2: f64,
    /// The middle amount (upper middle for even counts), for messages.
    pub median_amount: u128,
}

/// The busiest velocity window among a profile's samples up to a cutoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Peak {
    /// Samples at or before the cutoff.
    pub samples: usize,
    /// Most withdrawals in one window.
    pub count: u32,
    /// Largest total amount in one window.
    pub sum: u128,
}

impl AmountProfile {
    /// An empty profile keeping at most `capacity` (at least 1) samples.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            by_time: VecDeque::with_capacity(capacity.min(64)),
            amounts: Vec::with_capacity(capacity.min(64)),
            logs: Vec::with_capacity(capacity.min(64)),
        }
    }

    /// Adds a sample; when full, the oldest is dropped (or the new one, if it is
    /// older than every kept sample). Returns whether the new sample was kept.
    pub fn push(&mut self, at_ms: u64, amount: u128) -> bool {
        let s = Sample { at_ms, amount };
        let mut pos = self.by_time.partition_point(|x| *x <= s);
        if self.by_time.len() >= self.capacity {
            if pos == 0 {
                return false;
            }
            if let Some(old) = self.by_time.pop_front() {
                self.remove_amount(old.amount);
            }
            pos -= 1;
        }
        self.by_time.insert(pos, s);
        let i = self.amounts.partition_point(|&a| a < amount);
        self.amounts.insert(i, amount);
        self.logs.insert(i, log2_amount(amount));
        true
    }

    fn remove_amount(&mut self, amount: u128) {
        let i = self.amounts.partition_point(|&a| a < amount);
        if self.amounts.get(i) == Some(&amount) {
            self.amounts.remove(i);
            self.logs.remove(i);
        }
    }

    fn clear(&mut self) {
        self.by_time.clear();
        self.amounts.clear();
        self.logs.clear();
    }

    /// Samples kept.
    pub fn len(&self) -> usize {
        self.by_time.len()
    }

    /// True when no sample is kept.
    pub fn is_empty(&self) -> bool {
        self.by_time.is_empty()
    }

    /// Most samples kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The kept samples, oldest first.
    pub fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.by_time.iter()
    }

    /// Time of the newest sample.
    pub fn newest_ms(&self) -> Option<u64> {
        self.by_time.back().map(|s| s.at_ms)
    }

    /// True when the newest sample is more than `window_ms` before `at_ms`.
    pub(crate) fn is_stale(&self, at_ms: u64, window_ms: u64) -> bool {
        self.newest_ms()
            .is_none_or(|n| n.saturating_add(window_ms) < at_ms)
    }

    pub(crate) fn robust(&self) -> Option<Robust> {
        let median_log2 = median_sorted(&self.logs)?;
        let mad_log2 = mad_sorted(&self.logs, median_log2)?;
        let median_amount = *self.amounts.get(self.amounts.len() / 2)?;
        Some(Robust {
            median_log2,
            mad_log2,
            median_amount,
        })
    }

    /// Count and (saturating) total of the samples with `from_ms < at_ms <= to_ms`.
    pub(crate) fn window(&self, from_ms: u64, to_ms: u64) -> (u32, u128) {
        let lo = self.by_time.partition_point(|s| s.at_ms <= from_ms);
        let hi = self.by_time.partition_point(|s| s.at_ms <= to_ms);
        if lo >= hi {
            return (0, 0);
        }
        let sum = self
            .by_time
            .range(lo..hi)
            .fold(0u128, |acc, s| acc.saturating_add(s.amount));
        (u32::try_from(hi - lo).unwrap_or(u32::MAX), sum)
    }

    /// The busiest window of length `window_ms` among samples at or before `cutoff_ms`
    /// (by count and, separately, by total amount): windows ending at each sample.
    pub(crate) fn peak_before(&self, cutoff_ms: u64, window_ms: u64) -> Peak {
        let end = self.by_time.partition_point(|s| s.at_ms <= cutoff_ms);
        let mut peak = Peak {
            samples: end,
            ..Peak::default()
        };
        if end == 0 {
            return peak;
        }
        let mut lo = 0usize;
        let mut sum = 0u128;
        for (j, s) in self.by_time.range(..end).enumerate() {
            sum = sum.saturating_add(s.amount);
            while let Some(first) = self.by_time.get(lo) {
                if lo < j && first.at_ms.saturating_add(window_ms) <= s.at_ms {
                    sum = sum.saturating_sub(first.amount);
                    lo += 1;
                } else {
                    break;
                }
            }
            let count = u32::try_from(j + 1 - lo).unwrap_or(u32::MAX);
            peak.count = peak.count.max(count);
            peak.sum = peak.sum.max(sum);
        }
        peak
    }
}

/// How one wallet has used one destination (on one chain).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationUse {
    /// Withdrawals to it (since it was last forgotten).
    pub count: u32,
    /// First of them, Unix milliseconds.
    pub first_ms: u64,
    /// Latest of them, Unix milliseconds.
    pub last_ms: u64,
}

/// Cross-wallet view of one destination (on one chain).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DestinationInfo {
    /// When any wallet first paid it (since it was last forgotten), Unix ms.
    pub first_seen_ms: u64,
    /// When any wallet last paid it, Unix ms.
    pub last_seen_ms: u64,
    /// Recent paying wallets and when each last paid it (pruned to the fan-in
    /// window and to the most recent `fan_in_max_tracked_payers`).
    pub payers: BTreeMap<String, u64>,
}

/// What the model knows relevant to one request: a borrowed view into a
/// [`RiskState`] (from [`RiskState::history`]), or assembled by a caller that keeps
/// its own history.
#[derive(Debug, Clone, Copy, Default)]
pub struct WalletHistory<'a> {
    /// The request's (wallet, chain, asset) amount profile.
    pub amounts: Option<&'a AmountProfile>,
    /// How the wallet used the request's destination before.
    pub destination_use: Option<&'a DestinationUse>,
    /// The request's destination in the cross-wallet index.
    pub destination: Option<&'a DestinationInfo>,
}

#[derive(Debug, Clone, PartialEq, Default)]
struct ChainState {
    assets: HashMap<String, AmountProfile>,
    destinations: HashMap<String, DestinationUse>,
}

/// Memory bounds copied from the config, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub ring_capacity: usize,
    pub history_ms: u64,
    pub destination_memory_ms: u64,
    pub max_destinations: usize,
    pub index_ms: u64,
    pub fan_in_ms: u64,
    pub max_payers: usize,
    pub sweep_interval_ms: u64,
}

impl Limits {
    pub(crate) fn from_config(c: &RiskConfig) -> Self {
        let ms = |s: u64| s.saturating_mul(1000);
        let shortest = c
            .history_window_secs
            .min(c.destination_memory_secs)
            .min(c.index_window_secs)
            .min(c.fan_in_window_secs);
        Self {
            ring_capacity: c.ring_capacity,
            history_ms: ms(c.history_window_secs),
            destination_memory_ms: ms(c.destination_memory_secs),
            max_destinations: c.max_destinations_per_wallet,
            index_ms: ms(c.index_window_secs),
            fan_in_ms: ms(c.fan_in_window_secs),
            max_payers: c.fan_in_max_tracked_payers,
            sweep_interval_ms: ms(shortest / 4).max(60_000),
        }
    }
}

/// Folds ASCII upper case to lower case, allocating only when there is some.
pub(crate) fn normalise(destination: &str) -> Cow<'_, str> {
    if destination.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(destination.to_ascii_lowercase())
    } else {
        Cow::Borrowed(destination)
    }
}

/// The coordinator's in-memory risk history: per-stream amount rings, per-wallet
/// destination use, and the cross-wallet destination index.
///
/// Updated with [`RiskState::record`] after each accepted withdrawal (scoring never
/// rescans history); rebuilt at startup with [`RiskState::rebuild`], which is exactly
/// `record` applied in order. Memory is bounded: `ring_capacity` samples per stream,
/// `max_destinations_per_wallet` per wallet and chain, `fan_in_max_tracked_payers` per
/// destination, and everything older than its window (relative to the latest
/// recorded time) is swept periodically. Scoring applies the same windows itself, so
/// when sweeps happen never changes a score for a time at or after the latest record.
#[derive(Debug, Clone, PartialEq)]
pub struct RiskState {
    limits: Limits,
    /// wallet → chain → state.
    wallets: HashMap<String, HashMap<String, ChainState>>,
    /// chain → destination → info.
    index: HashMap<String, HashMap<String, DestinationInfo>>,
    watermark_ms: u64,
    next_sweep_ms: u64,
    recorded: u64,
}

impl RiskState {
    /// An empty state with the memory bounds of `config` (validated).
    pub fn new(config: &RiskConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self::with_limits(Limits::from_config(config)))
    }

    pub(crate) fn with_limits(limits: Limits) -> Self {
        Self {
            limits,
            wallets: HashMap::new(),
            index: HashMap::new(),
            watermark_ms: 0,
            next_sweep_ms: 0,
            recorded: 0,
        }
    }

    /// A state holding `past` withdrawals (pass them in the order they were
    /// accepted, oldest first): identical to `new` followed by `record` of each.
    pub fn rebuild<I>(config: &RiskConfig, past: I) -> Result<Self>
    where
        I: IntoIterator,
        I::Item: Borrow<RiskRequest>,
    {
        let mut state = Self::new(config)?;
        state.extend(past);
        Ok(state)
    }

    /// Records each of `past`, in order.
    pub fn extend<I>(&mut self, past: I)
    where
        I: IntoIterator,
        I::Item: Borrow<RiskRequest>,
    {
        for w in past {
            self.record(w.borrow());
        }
    }

    /// Latest `at_ms` recorded (0 when empty).
    pub fn watermark_ms(&self) -> u64 {
        self.watermark_ms
    }

    /// Withdrawals recorded since creation.
    pub fn recorded(&self) -> u64 {
        self.recorded
    }

    /// Wallets currently remembered.
    pub fn wallet_count(&self) -> usize {
        self.wallets.len()
    }

    /// Destinations currently in the cross-wallet index (all chains).
    pub fn indexed_destinations(&self) -> usize {
        self.index.values().map(HashMap::len).sum()
    }

    /// The view of this state relevant to `request` (no copying).
    pub fn history(&self, request: &RiskRequest) -> WalletHistory<'_> {
        let dest = normalise(&request.destination);
        let chain = self
            .wallets
            .get(&request.wallet)
            .and_then(|w| w.get(&request.chain));
        WalletHistory {
            amounts: chain.and_then(|c| c.assets.get(&request.asset)),
            destination_use: chain.and_then(|c| c.destinations.get(dest.as_ref())),
            destination: self
                .index
                .get(&request.chain)
                .and_then(|m| m.get(dest.as_ref())),
        }
    }

    /// Adds one accepted withdrawal. Call it after the withdrawal is accepted, and
    /// score a request before recording it (never after).
    pub fn record(&mut self, w: &RiskRequest) {
        let at = w.at_ms;
        let l = self.limits;
        self.watermark_ms = self.watermark_ms.max(at);
        self.recorded = self.recorded.saturating_add(1);
        let dest = normalise(&w.destination);

        let chain = self
            .wallets
            .entry(w.wallet.clone())
            .or_default()
            .entry(w.chain.clone())
            .or_default();

        // Amount ring.
        let profile = chain
            .assets
            .entry(w.asset.clone())
            .or_insert_with(|| AmountProfile::new(l.ring_capacity));
        if !profile.is_empty() && profile.is_stale(at, l.history_ms) {
            profile.clear();
        }
        profile.push(at, w.amount);

        // This wallet's use of the destination.
        let fresh_use = DestinationUse {
            count: 0,
            first_ms: at,
            last_ms: at,
        };
        let used = chain
            .destinations
            .entry(dest.clone().into_owned())
            .or_insert(fresh_use);
        if used.last_ms.saturating_add(l.destination_memory_ms) < at {
            *used = fresh_use;
        }
        used.count = used.count.saturating_add(1);
        used.first_ms = used.first_ms.min(at);
        used.last_ms = used.last_ms.max(at);
        if chain.destinations.len() > l.max_destinations {
            let horizon = self.watermark_ms;
            chain
                .destinations
                .retain(|_, u| u.last_ms.saturating_add(l.destination_memory_ms) >= horizon);
            while chain.destinations.len() > l.max_destinations {
                let oldest = chain
                    .destinations
                    .iter()
                    .min_by(|a, b| (a.1.last_ms, a.0).cmp(&(b.1.last_ms, b.0)))
                    .map(|(k, _)| k.clone());
                match oldest {
                    Some(k) => chain.destinations.remove(&k),
                    None => break,
                };
            }
        }

        // Cross-wallet index.
        let info = self
            .index
            .entry(w.chain.clone())
            .or_default()
            .entry(dest.into_owned())
            .or_insert_with(|| DestinationInfo {
                first_seen_ms: at,
                last_seen_ms: at,
                payers: BTreeMap::new(),
            });
        if info.last_seen_ms.saturating_add(l.index_ms) < at {
            *info = DestinationInfo {
                first_seen_ms: at,
                last_seen_ms: at,
                payers: BTreeMap::new(),
            };
        }
        info.first_seen_ms = info.first_seen_ms.min(at);
        info.last_seen_ms = info.last_seen_ms.max(at);
        let last = info.payers.entry(w.wallet.clone()).or_insert(at);
        *last = (*last).max(at);
        prune_payers(info, self.watermark_ms, l);

        if self.watermark_ms >= self.next_sweep_ms {
            self.sweep();
            self.next_sweep_ms = self.watermark_ms.saturating_add(l.sweep_interval_ms);
        }
    }

    /// Drops everything no score at or after the watermark can use any more.
    fn sweep(&mut self) {
        let now = self.watermark_ms;
        let l = self.limits;
        self.wallets.retain(|_, chains| {
            chains.retain(|_, c| {
                c.assets.retain(|_, p| !p.is_stale(now, l.history_ms));
                c.destinations
                    .retain(|_, u| u.last_ms.saturating_add(l.destination_memory_ms) >= now);
                !(c.assets.is_empty() && c.destinations.is_empty())
            });
            !chains.is_empty()
        });
        self.index.retain(|_, dests| {
            dests.retain(|_, info| {
                if info.last_seen_ms.saturating_add(l.index_ms) < now {
                    return false;
                }
                prune_payers(info, now, l);
                true
            });
            !dests.is_empty()
        });
    }
}

/// Drops payers outside the fan-in window of any score at or after `now`, then the
/// least recent beyond the cap.
fn prune_payers(info: &mut DestinationInfo, now: u64, l: Limits) {
    if info.payers.is_empty() {
        return;
    }
    if info.last_seen_ms.saturating_add(l.fan_in_ms) <= now {
        // Every payer paid at or before `last_seen_ms`: all are out of the window.
        info.payers.clear();
        return;
    }
    info.payers
        .retain(|_, last| last.saturating_add(l.fan_in_ms) > now);
    while info.payers.len() > l.max_payers {
        let oldest = info
            .payers
            .iter()
            .min_by(|a, b| (a.1, a.0).cmp(&(b.1, b.0)))
            .map(|(k, _)| k.clone());
        match oldest {
            Some(k) => info.payers.remove(&k),
            None => break,
        };
    }
}
