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
    /// Seconds the aux-info ceremony may take before it aborts (default 900:
    /// a 5-party group on slow or HSM-backed hosts takes minutes). A timed-out
    /// ceremony's computation is cancelled, and the coordinator retries.
    #[serde(default = "default_aux_info_timeout")]
    pub aux_info_timeout_secs: u64,
    /// Seconds a shutdown (SIGTERM, Ctrl-C) waits for the control calls in
    /// progress, protocol sessions included (default 10); the peer transport
    /// stays up meanwhile so those sessions can finish. A session still
    /// running then is cut off, as a crash would cut it: its peers time out
    /// and the coordinator retries with other signers or later.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout_secs: u64,
    /// Withdrawal co-signer checks.
    #[serde(default)]
    pub cosigner: CosignerConfig,
    /// The risk model this signer scores withdrawals with itself (custos-risk
    /// `RiskConfig`, the coordinator's `[risk]` table format): the policy is
    /// evaluated on the higher of its score and the coordinator's.
    #[serde(default)]
    pub risk: custos_risk::RiskConfig,
    /// Development and test settings.
    #[serde(default)]
    pub dev: DevConfig,
}

/// What a signer needs to verify withdrawals on its own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CosignerConfig {
    /// Admin set (threshold and Ed25519 keys) that must sign policy bundles.
    /// Without it the signer refuses every withdrawal.
    pub admins: Option<PathBuf>,
    /// The coordinator's audit-log verifier key (C2SP note key line, as
    /// printed by `custos-coordinator log-key`). Without it the signer
    /// refuses every withdrawal: decisions must be in a log it witnessed.
    pub log_key: Option<String>,
    /// Log origin (default `custos.local/log`).
    pub log_origin: String,
    /// This node's witness signing key, sealed with `sealer`; created on first
    /// start. Default: `witness-key.sealed` in data_dir.
    pub witness_key: Option<PathBuf>,
    /// Chains whose transactions this signer parses and checks itself
    /// (`chains = [{ name = "anvil", chain_id = 31337, tokens = [...] }]`).
    /// A withdrawal carrying a transaction on a chain not listed is refused.
    pub chains: Vec<crate::cosigner::chains::SignerChain>,
}

impl Default for CosignerConfig {
    fn default() -> Self {
        Self {
            admins: None,
            log_key: None,
            log_origin: "custos.local/log".into(),
            witness_key: None,
            chains: Vec::new(),
        }
    }
}

fn default_timeout() -> u64 {
    120
}

fn default_drain_timeout() -> u64 {
    custos_service::daemon::DEFAULT_DRAIN_SECS
}

fn default_aux_info_timeout() -> u64 {
    900
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
    /// Aux info of the whole group made once from `primes_file`
    /// (`mpc/tests/fixtures/aux-info-<n>.json`), imported sealed instead of
    /// running the ceremony. Debug builds only, and only with `primes_file`
    /// (a dev cluster, whose Paillier primes are public anyway).
    #[serde(default)]
    pub aux_fixture: Option<PathBuf>,
    /// Deliberate misbehaviour for adversarial tests.
    #[serde(default)]
    pub fault_injection: FaultInjection,
    /// Keeps the raw-digest `PartialSign`/`Sign` RPCs (no policy checks) for
    /// the cluster demo and benchmarks.
    #[serde(default)]
    pub allow_raw_digest: bool,
}
