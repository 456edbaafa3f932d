//! Amounts, durations and timestamps: the scalar values of policies and withdrawals.
//!
//! Amounts are unsigned integers in the asset's base units (wei, satoshi), carried as
//! `u128`. TOML integers are limited to `i64`, so amounts may also be written as
//! decimal strings (`"5000000000000000000"`). Durations are seconds or strings such as
//! `"24h"`, `"90m"`, `"1d12h"`. Timestamps are Unix seconds or RFC 3339 strings with
//! any UTC offset; they are always converted to UTC Unix seconds.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{PolicyError, Result};

/// An amount in base units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(pub u128);

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Amount {
    /// Parses a decimal string of base units: digits only, no sign, no exponent.
    pub fn parse(s: &str) -> Result<Self> {
        if s.is_empty() || s.len() > 39 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PolicyError::Value(format!(
                "amount {s:?} is not a decimal integer of base units (digits only, at most 39)"
            )));
        }
        s.parse::<u128>()
            .map(Amount)
            .map_err(|_| PolicyError::Value(format!("amount {s} overflows 128 bits")))
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        // As a string: JSON consumers and TOML cannot hold 128-bit integers.
        s.serialize_str(&self.0.to_string())
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Amount;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a non-negative integer amount in base units (number or decimal string)",
                )
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Amount, E> {
                Ok(Amount(u128::from(v)))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> std::result::Result<Amount, E> {
                Ok(Amount(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Amount, E> {
                u128::try_from(v)
                    .map(Amount)
                    .map_err(|_| E::custom(format!("amount {v} is negative")))
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> std::result::Result<Amount, E> {
                u128::try_from(v)
                    .map(Amount)
                    .map_err(|_| E::custom(format!("amount {v} is negative")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<Amount, E> {
                Err(E::custom(format!(
                    "amount {v} is not an integer: amounts are base units, write them as a decimal string"
                )))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Amount, E> {
                Amount::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration in whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub u64);

/// Durations above this are refused: ten years is far beyond any sane delay and
/// keeps `now + delay` far from `i64` overflow.
pub const MAX_DURATION_SECS: u64 = 10 * 366 * 86_400;

/// Longest velocity window a policy may use: 30 days. Signers keep their own
/// history of signed withdrawals at least this long (plus a day), so every
/// window a policy can name is covered by what a signer can check itself.
pub const MAX_VELOCITY_WINDOW_SECS: u64 = 30 * 86_400;

impl Duration {
    /// Seconds as `i64` (always fits: durations are capped at ten years).
    pub fn secs_i64(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }

    /// Parses `"3600"`, `"90s"`, `"15m"`, `"24h"`, `"7d"` or combinations like `"1d12h"`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            PolicyError::Value(format!(
                "duration {s:?} is malformed: use seconds or units s, m, h, d (e.g. \"24h\", \"1d12h\")"
            ))
        };
        if s.is_empty() {
            return Err(bad());
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return s.parse::<u64>().map_err(|_| bad()).and_then(Self::checked);
        }
        let mut total: u64 = 0;
        let mut digits = String::new();
        for c in s.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let unit = match c {
                's' => 1,
                'm' => 60,
                'h' => 3_600,
                'd' => 86_400,
                _ => return Err(bad()),
            };
            if digits.is_empty() {
                return Err(bad());
            }
            let n: u64 = digits.parse().map_err(|_| bad())?;
            digits.clear();
            total = n
                .checked_mul(unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(bad)?;
        }
        if !digits.is_empty() {
            return Err(bad());
        }
        Self::checked(total)
    }

    fn checked(secs: u64) -> Result<Self> {
        if secs > MAX_DURATION_SECS {
            return Err(PolicyError::Value(format!(
                "duration of {secs} s exceeds the ten-year maximum"
            )));
        }
        Ok(Duration(secs))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        if s == 0 {
            return f.write_str("0s");
        }
        let (d, h, m, sec) = (s / 86_400, s % 86_400 / 3_600, s % 3_600 / 60, s % 60);
        for (n, u) in [(d, "d"), (h, "h"), (m, "m"), (sec, "s")] {
            if n > 0 {
                write!(f, "{n}{u}")?;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration: seconds or a string such as \"24h\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Duration, E> {
                Duration::checked(v).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Duration, E> {
                let v = u64::try_from(v).map_err(|_| E::custom("duration is negative"))?;
                Duration::checked(v).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Duration, E> {
                Duration::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A point in time: Unix seconds, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

/// Earliest and latest accepted timestamps (years 1970 and 9999): keeps every
/// `timestamp ± duration` computation far from overflow.
const MIN_TS: i64 = 0;
const MAX_TS: i64 = 253_402_300_799;

impl Timestamp {
    /// Parses Unix seconds or an RFC 3339 timestamp with any UTC offset.
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            let v: i64 = s
                .parse()
                .map_err(|_| PolicyError::Value(format!("timestamp {s} is out of range")))?;
            return Self::checked(v);
        }
        let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map_err(|e| {
                PolicyError::Value(format!(
                    "timestamp {s:?} is neither Unix seconds nor RFC 3339 (e.g. 2026-01-05T09:00:00Z): {e}"
                ))
            })?;
        Self::checked(t.unix_timestamp())
    }

    fn checked(v: i64) -> Result<Self> {
        if (MIN_TS..=MAX_TS).contains(&v) {
            Ok(Timestamp(v))
        } else {
            Err(PolicyError::Value(format!(
                "timestamp {v} is outside 1970..9999"
            )))
        }
    }

    /// This time plus a duration (saturating; durations are bounded so this never saturates in practice).
    pub fn plus(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(d.secs_i64()))
    }

    /// UTC weekday, 0 = Monday .. 6 = Sunday.
    pub fn weekday(self) -> u8 {
        // 1970-01-01 was a Thursday (index 3).
        let days = self.0.div_euclid(86_400);
        u8::try_from((days + 3).rem_euclid(7)).unwrap_or(0)
    }

    /// UTC hour of day, 0..=23.
    pub fn hour(self) -> u8 {
        u8::try_from(self.0.rem_euclid(86_400) / 3_600).unwrap_or(0)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match time::OffsetDateTime::from_unix_timestamp(self.0)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            }) {
            Some(s) => f.write_str(&s),
            None => write!(f, "@{}", self.0),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a timestamp: Unix seconds or an RFC 3339 string")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Timestamp, E> {
                let v = i64::try_from(v).map_err(|_| E::custom("timestamp out of range"))?;
                Timestamp::checked(v).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Timestamp, E> {
                Timestamp::checked(v).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Timestamp, E> {
                Timestamp::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}
