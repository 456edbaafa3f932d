//! Signer node configuration (TOML + `CUSTOS_*` overrides).

use std::net::SocketAddr;
use std::path::PathBuf;

use custos_service::config::{BuildMode, ConfigError, MetricsSettings, refuse_dev_settings};
use custos_service::limits::{LimitSettings, LimitsConfig};
use serde::{Deserialize, Serialize};

use crate::node::FaultInjection;

/// The whole config file.
#[derive(Debug, Serialize, Deserialize)]
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
    /// Removed: `/healthz` and `/metrics` are served on `[metrics] listen`.
    /// A config that still sets it is refused naming the new field.
    #[serde(default, skip_serializing)]
    pub http_listen: Option<serde::de::IgnoredAny>,
    /// Where `/healthz` and `/metrics` are served (plain HTTP; default
    /// `127.0.0.1:7610`).
    #[serde(default = "default_metrics")]
    pub metrics: MetricsSettings,
    /// Rate limits, concurrency and request size of the control API
    /// (the coordinator is its one client, keyed by its address).
    #[serde(default)]
    pub limits: LimitsConfig,
    /// TLS material of the control API.
    pub tls: TlsConfig,
    /// The other signers of the group, pinned.
    pub peers: Vec<PeerConfig>,
    /// How shares are sealed at rest.
    pub sealer: custos_hsm::SealerConfig,
    /// Seal the libp2p identity and TLS key files with the sealer (default
    /// true): a plain key file found at start is replaced by its sealed form
    /// (`custos_hsm::open_key_file`).
    #[serde(default = "yes")]
    pub seal_key_files: bool,
    /// The unseal ceremony's socket when `sealer.unseal = "ceremony"`
    /// (default `<data_dir>/unseal.sock`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unseal_socket: Option<PathBuf>,
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
    /// Share backups for disaster recovery.
    #[serde(default)]
    pub recovery: RecoveryConfig,
    /// Development and test settings.
    #[serde(default)]
    pub dev: DevConfig,
}

/// Share backups (`custos recovery export`).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoveryConfig {
    /// The admins' offline recovery key (`custos-recipient1:<hex>`, printed
    /// by `custos recovery keygen`): the only recipient this signer seals
    /// its shares to. Set on the signer's host by its operators, never
    /// taken from a request; without it the signer exports nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
}

impl RecoveryConfig {
    /// The configured recipient, parsed (`None` if unset).
    pub fn recipient(&self) -> Result<Option<custos_mpc::recovery::Recipient>, ConfigError> {
        self.recipient
            .as_deref()
            .map(custos_mpc::recovery::Recipient::parse)
            .transpose()
            .map_err(|e| ConfigError::Field {
                field: "recovery.recipient".into(),
                message: e.to_string(),
            })
    }
}

impl SignerConfig {
    /// A config with the fields a config file must set, every other one at
    /// its default (what a file setting only these gets): how tools that
    /// write configs (the dev cluster) build one, so a new required field
    /// does not compile until they set it.
    #[allow(clippy::too_many_arguments)] // one per required field, named as in the file
    pub fn new(
        node_id: String,
        data_dir: PathBuf,
        identity_key: PathBuf,
        p2p_listen: Vec<String>,
        control_listen: SocketAddr,
        tls: TlsConfig,
        peers: Vec<PeerConfig>,
        sealer: custos_hsm::SealerConfig,
    ) -> Self {
        Self {
            node_id,
            data_dir,
            identity_key,
            p2p_listen,
            control_listen,
            http_listen: None,
            metrics: default_metrics(),
            limits: LimitsConfig::default(),
            tls,
            peers,
            sealer,
            seal_key_files: true,
            unseal_socket: None,
            session_timeout_secs: default_timeout(),
            aux_info_timeout_secs: default_aux_info_timeout(),
            drain_timeout_secs: default_drain_timeout(),
            cosigner: CosignerConfig::default(),
            risk: custos_risk::RiskConfig::default(),
            recovery: RecoveryConfig::default(),
            dev: DevConfig::default(),
        }
    }

    /// Refuses the `[dev]` settings this config sets if `mode` is a release
    /// build (the daemon passes [`crate::BUILD_MODE`]), and removed or
    /// unusable fields.
    pub fn check_build(&self, mode: BuildMode) -> Result<(), ConfigError> {
        if self.http_listen.is_some() {
            return Err(ConfigError::Field {
                field: "http_listen".into(),
                message: "moved: set `[metrics] listen` (health and metrics, plain HTTP)".into(),
            });
        }
        self.limit_settings()?;
        self.recovery.recipient()?;
        self.sealer.check().map_err(|e| ConfigError::Field {
            field: "sealer".into(),
            message: e.to_string(),
        })?;
        refuse_dev_settings(&self.dev.set_fields(), mode)
    }
}

impl SignerConfig {
    /// `[limits]` over the signer's defaults: its one client, the
    /// coordinator, calls it for every signature, presignature and probe, so
    /// the rate is higher than an API's (1000/s, bursts of 2000); requests up
    /// to what the coordinator's client accepts in answers (64 MiB).
    pub fn limit_settings(&self) -> Result<LimitSettings, ConfigError> {
        self.limits.resolve(
            LimitSettings {
                rate_per_sec: 1000,
                burst: 2000,
                max_request_bytes: 64 * 1024 * 1024,
                ..LimitSettings::default()
            },
            "limits",
        )
    }
}

fn default_metrics() -> MetricsSettings {
    MetricsSettings::loopback(7610)
}

/// What a signer needs to verify withdrawals on its own.
#[derive(Debug, Serialize, Deserialize)]
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
    /// How long a refusal this signer signed may wait for the audit log
    /// before it signs nothing more (seconds, default 300). The coordinator
    /// logs refusals within seconds; one that does not is hiding requests.
    pub refusal_log_grace_secs: u64,
}

impl Default for CosignerConfig {
    fn default() -> Self {
        Self {
            admins: None,
            log_key: None,
            log_origin: "custos.local/log".into(),
            witness_key: None,
            chains: Vec::new(),
            refusal_log_grace_secs: 300,
        }
    }
}

fn yes() -> bool {
    true
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
#[derive(Debug, Serialize, Deserialize)]
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
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Its node id.
    pub node_id: String,
    /// Its libp2p PeerId (base58).
    pub peer_id: String,
    /// Its libp2p address.
    pub address: String,
}

/// Development and test settings; never needed in production, and refused
/// by a release build ([`SignerConfig::check_build`]).
#[derive(Debug, Default, Serialize, Deserialize)]
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

impl DevConfig {
    /// Dotted paths of the fields set to anything but their default.
    pub fn set_fields(&self) -> Vec<&'static str> {
        // Destructured: a new field does not compile until it is listed here.
        let DevConfig {
            primes_file,
            primes_index,
            aux_fixture,
            fault_injection,
            allow_raw_digest,
        } = self;
        [
            ("dev.primes_file", primes_file.is_some()),
            ("dev.primes_index", *primes_index != 0),
            ("dev.aux_fixture", aux_fixture.is_some()),
            (
                "dev.fault_injection",
                *fault_injection != FaultInjection::None,
            ),
            ("dev.allow_raw_digest", *allow_raw_digest),
        ]
        .into_iter()
        .filter_map(|(field, set)| set.then_some(field))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest config the schema accepts, with `dev` as its `[dev]`
    /// table, read by the daemon's loader.
    fn with_dev(dev: &str) -> SignerConfig {
        let text = format!(
            r#"
node_id = "signer-1"
data_dir = "data"
identity_key = "identity.key"
p2p_listen = ["/ip4/127.0.0.1/tcp/7510"]
control_listen = "127.0.0.1:7410"
peers = []
[tls]
cert = "c.pem"
key = "k.pem"
client_ca = "ca.pem"
coordinator_cert = "coord.pem"
[sealer]
backend = "software"
passphrase_file = "pass"
[dev]
{dev}
"#
        );
        // Through the daemon's loader, as `main` reads it.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, &text).unwrap();
        match custos_service::config::load(&path, Vec::new()) {
            Ok(c) => c,
            Err(e) => panic!("{e}\n{text}"),
        }
    }

    /// Every `[dev]` field, set, goes through the one check: a release build
    /// refuses it naming it, a dev build takes it.
    #[test]
    fn release_build_refuses_every_dev_field() {
        let cases = [
            ("primes_file", r#"primes_file = "primes.json""#),
            ("primes_index", "primes_index = 1"),
            ("aux_fixture", r#"aux_fixture = "aux-info-3.json""#),
            (
                "fault_injection",
                r#"fault_injection = "corrupt-protocol-messages""#,
            ),
            (
                "fault_injection",
                r#"fault_injection = "corrupt-partial-signatures""#,
            ),
            ("allow_raw_digest", "allow_raw_digest = true"),
        ];
        for (field, line) in cases {
            let cfg = with_dev(line);
            assert_eq!(cfg.dev.set_fields(), [format!("dev.{field}")], "{line}");
            cfg.check_build(BuildMode::Dev).unwrap();
            let e = cfg.check_build(BuildMode::Release).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!(
                    "config field `dev.{field}` is a development setting and this is a release build"
                )),
                "{line}: {e}"
            );
        }
        // Every field named by set_fields has a case above.
        let all = with_dev(
            "primes_file = \"p\"\nprimes_index = 2\naux_fixture = \"a\"\n\
             fault_injection = \"corrupt-protocol-messages\"\nallow_raw_digest = true",
        );
        let mut named: Vec<String> = cases.iter().map(|(f, _)| format!("dev.{f}")).collect();
        named.dedup();
        assert_eq!(all.dev.set_fields(), named);
        let e = all.check_build(BuildMode::Release).unwrap_err().to_string();
        assert!(
            e.contains("also set: dev.primes_index, dev.aux_fixture"),
            "{e}"
        );

        // Defaults, written out or absent, are not development settings.
        for dev in [
            "",
            "primes_index = 0\nfault_injection = \"none\"\nallow_raw_digest = false",
        ] {
            let cfg = with_dev(dev);
            assert!(cfg.dev.set_fields().is_empty(), "{dev}");
            cfg.check_build(BuildMode::Release).unwrap();
        }
    }

    /// `[metrics]` and `[limits]` default to loopback and the signer's own
    /// limits; the removed `http_listen` is refused naming its replacement.
    #[test]
    fn metrics_listener_and_limits() {
        let cfg = with_dev("");
        assert_eq!(cfg.metrics.listen.to_string(), "127.0.0.1:7610");
        let limits = cfg.limit_settings().unwrap();
        assert_eq!((limits.rate_per_sec, limits.burst), (1000, 2000));
        assert_eq!(limits.max_request_bytes, 64 * 1024 * 1024);
        cfg.check_build(BuildMode::Release).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let minimal = |extra: &str| {
            format!(
                "{extra}node_id = \"s\"\ndata_dir = \"d\"\nidentity_key = \"i\"\n\
                 p2p_listen = []\ncontrol_listen = \"127.0.0.1:7410\"\npeers = []\n\
                 [tls]\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"a\"\n\
                 coordinator_cert = \"o\"\n[sealer]\nbackend = \"software\"\n\
                 passphrase_file = \"p\"\n"
            )
        };
        std::fs::write(&path, minimal("http_listen = \"127.0.0.1:7610\"\n")).unwrap();
        let cfg: SignerConfig = custos_service::config::load(&path, Vec::new()).unwrap();
        let e = cfg.check_build(BuildMode::Dev).unwrap_err().to_string();
        assert!(
            e.contains("`http_listen`") && e.contains("[metrics] listen"),
            "{e}"
        );
        std::fs::write(&path, minimal("")).unwrap();
        let env = vec![("CUSTOS_LIMITS__BURST".to_owned(), "0".to_owned())];
        let cfg: SignerConfig = custos_service::config::load(&path, env).unwrap();
        let e = cfg.check_build(BuildMode::Dev).unwrap_err().to_string();
        assert!(e.contains("`limits.burst`"), "{e}");
    }

    /// `[recovery] recipient` is checked at start: a malformed one is
    /// refused naming the field; unset, the signer exports nothing.
    #[test]
    fn recovery_recipient_is_checked_at_start() {
        let cfg = with_dev("");
        assert!(cfg.recovery.recipient().unwrap().is_none());
        let id = custos_mpc::recovery::RecoveryIdentity::generate();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let text = |recipient: &str| {
            format!(
                "node_id = \"s\"\ndata_dir = \"d\"\nidentity_key = \"i\"\n\
                 p2p_listen = []\ncontrol_listen = \"127.0.0.1:7410\"\npeers = []\n\
                 [tls]\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"a\"\n\
                 coordinator_cert = \"o\"\n[sealer]\nbackend = \"software\"\n\
                 passphrase_file = \"p\"\n[recovery]\nrecipient = \"{recipient}\"\n"
            )
        };
        std::fs::write(&path, text(&id.recipient().to_string())).unwrap();
        let cfg: SignerConfig = custos_service::config::load(&path, Vec::new()).unwrap();
        cfg.check_build(BuildMode::Release).unwrap();
        assert_eq!(cfg.recovery.recipient().unwrap(), Some(id.recipient()));
        std::fs::write(&path, text("age1notours")).unwrap();
        let cfg: SignerConfig = custos_service::config::load(&path, Vec::new()).unwrap();
        let e = cfg.check_build(BuildMode::Dev).unwrap_err().to_string();
        assert!(e.contains("`recovery.recipient`"), "{e}");
    }
}
