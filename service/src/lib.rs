//! Plumbing shared by the Custos daemons: one typed config from a TOML file
//! plus `CUSTOS_*` environment overrides, TLS file loading, logging setup,
//! the API and health/metrics HTTP listeners, rate limits, the drain, and the
//! database layer (re-exported from `custos-db`).

#![deny(missing_docs)]

pub mod config;
pub mod csv;
pub mod daemon;
pub mod http;
pub mod latency;
pub mod limits;
pub mod standby;
pub mod tls;
pub mod unseal;

/// The database layer (`custos-db`), re-exported so the daemons reach it
/// with their other plumbing; libraries depend on `custos-db` directly.
pub use custos_db as db;

/// Exit code for a bad configuration (sysexits `EX_CONFIG`).
pub const EXIT_CONFIG: u8 = 78;

/// Exit code of a coordinator that lost its leadership lease (sysexits
/// `EX_TEMPFAIL`): it stopped acting at once; its supervisor restarts it,
/// and it comes back as a standby.
pub const EXIT_LEASE_LOST: u8 = 75;

/// Sets up `tracing` logging to stderr; `json` for machine-readable logs.
/// Level from `RUST_LOG` (default `info`).
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
