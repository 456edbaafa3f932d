//! Real-time withdrawal risk scoring: rules plus a per-wallet statistical model.
//!
//! Pure and deterministic: no I/O, no clock, no randomness. Time (`at_ms`) and
//! history are inputs, and the only floating-point operations are IEEE-754 basic
//! ones (log2 is computed by hand), so a score is bit-for-bit reproducible.
//!
//! - [`RiskConfig`] (serde, every field defaulted) holds weights, thresholds and
//!   memory bounds; [`RiskModel::new`] validates it.
//! - [`RiskState`] is the coordinator's in-memory history: [`RiskState::record`] after
//!   each accepted withdrawal, [`RiskState::rebuild`] at startup (or
//!   [`RiskModel::new_state`] + [`RiskState::extend`]); build it from the same config
//!   as the model. Memory is bounded by the config: 512 amounts per stream, 20 000
//!   destinations per wallet and chain, 64 payers per destination, and windows (a
//!   stream idle for 180 days, a destination unused by the wallet for a year, or
//!   unpaid by anyone for 30 days, is forgotten).
//! - [`RiskModel::score`] (or [`RiskModel::assess`] with an explicit
//!   [`WalletHistory`] view) returns a [`RiskAssessment`]: a score in 0..=100 and
//!   the [`RiskReason`]s behind it.
//!
//! # Signals
//!
//! Amount and velocity are judged per (wallet, chain, asset) stream; destination use
//! per (wallet, chain); the cross-wallet index per (chain, destination).
//!
//! | code | fires when | points (defaults) |
//! |---|---|---|
//! | `deny_list` | destination on `deny_destinations` | score forced to 100 |
//! | `amount_outlier` | robust z = 0.6745·(log2 amount − median)/max(MAD, floor) above 3.5, over the stream's last 512 amounts | 30 at the threshold → 60 at z ≥ 10 |
//! | `no_history` | fewer than 5 earlier amounts in the stream | 10 |
//! | `velocity_count` | withdrawals in the last hour (this one included) > max(10, 2 × busiest earlier hour) | 20 → 40 at twice the threshold |
//! | `velocity_amount` | ≥ 2 withdrawals in the last hour and their total > 2 × busiest earlier hour's total | 20 → 40 at twice the threshold |
//! | `new_destination` | the wallet never paid the destination on this chain (within a year) | 25 |
//! | `rare_destination` | paid fewer than 3 times before (stream has a profile) | 10 |
//! | `fan_in` | destination first seen (any wallet) within 7 days and ≥ 5 distinct wallets, this one included, paid it within 24 h | 50 |
//!
//! # Combination rule
//!
//! `score = min(100, Σ points)`; a deny-list hit makes it 100. Every signal is
//! evaluated and listed in every case, in the order of [`codes::ALL`].

#![deny(missing_docs)]

mod config;
mod error;
mod model;
mod state;
mod stats;

pub use config::{MAX_DESTINATION_LEN, MAX_RING_CAPACITY, RiskConfig};
pub use error::{Result, RiskError};
pub use model::{MAX_SCORE, RiskAssessment, RiskModel, RiskReason, codes};
pub use state::{
    AmountProfile, DestinationInfo, DestinationUse, RiskRequest, RiskState, Sample, WalletHistory,
};
