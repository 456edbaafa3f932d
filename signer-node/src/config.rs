//! Signer node configuration (TOML + `CUSTOS_*` overrides).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::node::FaultInjection;

/// The whole config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignerConfig {
    /// This node's id (unique in the group; also its party order key).
    pub node_id: String,
    /// Data directory (sealed shares, presignatures, session log).
    pub data_dir: PathBuf,
    /// libp2p identity key file (protobuf-encoded Ed25519 keypair).
    pub identity_key: PathBuf,
    /// libp2p listen multiaddrs, e.g. `/ip4/127.0.0.1/tcp/7510`.
    pub p2p_listen: Vec<String>,
    /// Control gRPC listen address (mTLS), e.g. `127.0.0.1:7410`.
    pub control_listen: SocketAddr,
    /// Health and metrics HTTP listen address.
    #[serde(default)]
    pub http_listen: Option<SocketAddr>,
    /// TLS material of the control API.
    pub tls: TlsConfig,
    /// The other signers of the group, pinned.
    pub peers: Vec<PeerConfig>,
    /// How shares are sealed at rest.
    pub sealer: custos_hsm::SealerConfig,
    /// Seconds a protocol session may take before it aborts (default 120).
    #[serde(default = "default_timeout")]
    pub session_timeout_secs: u64,
    /// Development and test settings.
    #[serde(default)]
    pub dev: DevConfig,
}

fn default_timeout() -> u64 {
    120
}

/// TLS of the control API.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Server certificate (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// CA that issued the coordinator's client certificate.
    pub client_ca: PathBuf,
    /// The coordinator's client certificate: only this exact certificate is accepted.
    pub coordinator_cert: PathBuf,
}

/// A pinned peer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Its node id.
    pub node_id: String,
    /// Its libp2p PeerId (base58).
    pub peer_id: String,
    /// Its libp2p address.
    pub address: String,
}

/// Development and test settings; never needed in production.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevConfig {
    /// JSON file with pregenerated safe primes (test fixtures), to skip generation.
    #[serde(default)]
    pub primes_file: Option<PathBuf>,
    /// Which entry of `primes_file` this node uses.
    #[serde(default)]
    pub primes_index: usize,
    /// Deliberate misbehaviour for adversarial tests.
    #[serde(default)]
    pub fault_injection: FaultInjection,
}
