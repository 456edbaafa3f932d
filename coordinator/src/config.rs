//! Coordinator configuration (TOML + `CUSTOS_*` overrides).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// The whole config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// Data directory (SQLite database).
    pub data_dir: PathBuf,
    /// gRPC API listen address (TLS).
    pub grpc_listen: SocketAddr,
    /// HTTP listen address (`/healthz`, `/metrics`).
    pub http_listen: SocketAddr,
    /// Threshold for new keys when a request does not say (default 2).
    #[serde(default = "default_threshold")]
    pub default_threshold: u16,
    /// Presignatures kept ready per key (default 4; 0 disables the pool).
    #[serde(default = "default_pool")]
    pub presignature_pool: u32,
    /// Seconds a signer may take to answer a partial-signature request (default 5).
    #[serde(default = "default_partial_timeout")]
    pub partial_timeout_secs: u64,
    /// Seconds a protocol session (keygen, presign, interactive sign) may take (default 120).
    #[serde(default = "default_session_timeout")]
    pub session_timeout_secs: u64,
    /// TLS material.
    pub tls: TlsConfig,
    /// API authentication.
    pub auth: AuthConfig,
    /// The signer group.
    pub signers: Vec<SignerEndpoint>,
}

fn default_threshold() -> u16 {
    2
}
fn default_pool() -> u32 {
    4
}
fn default_partial_timeout() -> u64 {
    5
}
fn default_session_timeout() -> u64 {
    120
}

/// TLS material.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Server certificate for API clients (PEM).
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// Client certificate presented to signers (mTLS).
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
    /// CA of the signers' server certificates.
    pub signer_ca: PathBuf,
}

/// API authentication.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// File with the admin bearer token.
    pub admin_token_file: PathBuf,
}

/// One signer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignerEndpoint {
    /// Its node id.
    pub node_id: String,
    /// Control API URL, `https://host:port`.
    pub endpoint: String,
    /// Name in its certificate.
    pub tls_name: String,
}
