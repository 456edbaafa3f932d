//! The one clock of Custos: wall time as Unix milliseconds or seconds.
//!
//! Every crate that stamps or compares times reads it here, so there is one
//! place that decides how time is read and one way for tests to drive it:
//! code that decides on time (a signer's time lock, its refusals' grace
//! period) holds an `Arc<dyn Clock>` that is [`SystemClock`] in the daemons
//! and a [`ManualClock`] in tests, which then prove a time lock without
//! sleeping through it. Code that only stamps records calls [`now_ms`].

#![deny(missing_docs)]

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Now, Unix milliseconds (0 before 1970).
    fn now_ms(&self) -> u64;

    /// Now, whole Unix seconds, rounded down.
    fn now_secs(&self) -> i64 {
        i64::try_from(self.now_ms() / 1000).unwrap_or(i64::MAX)
    }

    /// Now, whole Unix seconds, rounded up: the first whole second not
    /// before now (a time lock started here never ends early by a fraction).
    fn now_secs_ceil(&self) -> i64 {
        i64::try_from(self.now_ms().div_ceil(1000)).unwrap_or(i64::MAX)
    }
}

/// The operating system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// The system clock as a shared [`Clock`].
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// Now on the system clock, Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemClock.now_ms()
}

/// Now on the system clock, Unix milliseconds, signed (for SQL columns).
pub fn now_ms_i64() -> i64 {
    i64::try_from(now_ms()).unwrap_or(i64::MAX)
}

/// Now on the system clock, whole Unix seconds.
pub fn now_secs() -> i64 {
    SystemClock.now_secs()
}

/// A clock that moves only when told to: for tests of time-based decisions.
#[derive(Debug, Default)]
pub struct ManualClock {
    ms: AtomicU64,
}

impl ManualClock {
    /// A clock reading `ms` (Unix milliseconds).
    pub fn at_ms(ms: u64) -> Arc<Self> {
        Arc::new(Self {
            ms: AtomicU64::new(ms),
        })
    }

    /// Sets the time.
    pub fn set_ms(&self, ms: u64) {
        self.ms.store(ms, Ordering::SeqCst);
    }

    /// Moves the time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.ms.fetch_add(by, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.ms.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_seconds_and_milliseconds_agree() {
        let (ms, s) = (now_ms(), now_secs());
        assert!(ms > 1_700_000_000_000, "{ms}");
        assert!((s - (ms / 1000) as i64).abs() <= 1, "{s} {ms}");
    }

    #[test]
    fn manual_clock_moves_only_when_told_and_rounds_both_ways() {
        let c = ManualClock::at_ms(1_000_500);
        assert_eq!(c.now_secs(), 1_000);
        assert_eq!(c.now_secs_ceil(), 1_001);
        c.advance(Duration::from_millis(500));
        assert_eq!(c.now_ms(), 1_001_000);
        assert_eq!((c.now_secs(), c.now_secs_ceil()), (1_001, 1_001));
        c.set_ms(0);
        assert_eq!(c.now_secs(), 0);
    }
}
