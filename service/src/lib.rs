//! Plumbing shared by the Custos daemons: one typed config from a TOML file
//! plus `CUSTOS_*` environment overrides, TLS file loading, logging setup,
//! and the health/metrics HTTP endpoint.

#![deny(missing_docs)]

pub mod config;
pub mod daemon;
pub mod db;
pub mod http;
pub mod tls;

/// Exit code for a bad configuration (sysexits `EX_CONFIG`).
pub const EXIT_CONFIG: u8 = 78;

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
