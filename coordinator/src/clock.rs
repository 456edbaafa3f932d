//! The coordinator's one clock: wall time as Unix milliseconds or seconds.
//! Every module that stamps or compares times reads it here, so there is
//! one place to change how time is read.

/// Current time, Unix ms (signed, as the database stores it).
pub use custos_clock::now_ms_i64 as now_ms;
pub use custos_clock::now_secs;
