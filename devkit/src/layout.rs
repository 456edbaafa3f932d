//! [`ClusterSpec`] → files on disk → [`ClusterLayout`].

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use custos_policy::{BundleSignatures, Policy, PolicyHash, SecretKey, Zeroizing};

use crate::certs::{self, DevCa};
use crate::config_file;
use custos_coordinator::config::{
    AuthConfig, CoordinatorConfig, PolicyFiles, SignerEndpoint, TlsConfig as CoordinatorTls,
};
use custos_hsm::{KdfParams, SealerConfig, SoftwareConfig};
use custos_service::config::MetricsSettings;
use custos_signer_node::config::{PeerConfig, SignerConfig, TlsConfig as SignerTls};
use custos_signer_node::node::FaultInjection;

use crate::chain::{self, EvmChain, UtxoChain};
use crate::fsutil::{self, PUBLIC_MODE};
use crate::identity;
use crate::placement::Placement;
use crate::{COORDINATOR_BIN, DevkitError};

/// Default cluster directory of `custos dev up`.
pub const DEFAULT_DIR: &str = ".custos-dev";
/// Default coordinator gRPC port; every other port is derived from it.
pub const DEFAULT_BASE_PORT: u16 = 7400;
/// Most signers a layout can hold (the port blocks are 100 wide).
pub const MAX_SIGNERS: u16 = 99;
/// Version of the `cluster.json` format.
pub const LAYOUT_FORMAT: u32 = 2;
/// Name of the summary file in the cluster directory.
pub const CLUSTER_FILE: &str = "cluster.json";
/// Name of the pid file in the cluster directory.
pub const PIDS_FILE: &str = "pids.json";

/// Client id of the admin token ([`CoordinatorLayout::admin_token_file`]).
pub const ADMIN_CLIENT: &str = "admin";
/// Generated API client with the `backend` role (creates withdrawals).
pub const BACKEND_CLIENT: &str = "payments-backend";
/// Generated API client with the `approver` role (the `custos` approver commands).
pub const APPROVER_CLIENT: &str = "approver-cli";
/// Generated API client with the `auditor` role (reads the transparency log).
pub const AUDITOR_CLIENT: &str = "auditor";
/// Every generated API client besides the admin: (id, role).
const GENERATED_CLIENTS: [(&str, &str); 3] = [
    (BACKEND_CLIENT, "backend"),
    (APPROVER_CLIENT, "approver"),
    (AUDITOR_CLIENT, "auditor"),
];

/// The policy a generated cluster runs unless [`ClusterSpec::policy`] names another.
pub const DEMO_POLICY: &str = include_str!("../../examples/demo-policy.toml");
/// The demo admin keys (public seeds, `examples/keys/`): every generated policy
/// bundle is signed by both, and the admin set is these two, threshold 2.
const DEMO_ADMIN_KEYS: [&str; 2] = [
    include_str!("../../examples/keys/admin1.pem"),
    include_str!("../../examples/keys/admin2.pem"),
];
/// The coordinator's hashed API token store, in its directory.
const TOKEN_STORE: &str = "tokens.json";
/// How long a generated API token is valid; `custos dev up` issues a new
/// one when it has expired or been revoked.
const DEV_TOKEN_LIFETIME_SECS: i64 = 90 * 24 * 3600;
/// Directory of the policy bundle in the cluster directory.
const POLICY_DIR: &str = "policy";

/// Session timeout written into signer configs.
const SESSION_TIMEOUT_SECS: u64 = 60;
/// Default presignature pool size of the coordinator.
pub const PRESIGNATURE_POOL: u32 = 4;
/// Argon2id for the signers' KEKs: the OWASP minimum (m = 19 MiB, t = 2, p = 1),
/// real but fast enough to start a few nodes on a laptop.
const KDF: KdfParams = KdfParams {
    m_cost_kib: 19456,
    t_cost: 2,
    p_cost: 1,
};

/// What to generate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSpec {
    /// Cluster directory (created if missing).
    pub dir: PathBuf,
    /// Number of signers (default 3).
    pub signers: u16,
    /// Default signing threshold (default 2).
    pub threshold: u16,
    /// Coordinator gRPC port; coordinator HTTP is `+1`, signer `i` (0-based) has
    /// control `+10+i`, libp2p `+110+i`, HTTP `+210+i` (default 7400).
    pub base_port: u16,
    /// Pregenerated safe primes (test fixture) so signers skip generating them;
    /// signer `i` uses entry `i`.
    pub primes_file: Option<PathBuf>,
    /// Aux info of the whole group made once from `primes_file`
    /// (`mpc/tests/fixtures/aux-info-<n>.json`): the signers import it
    /// instead of running the aux-info ceremony (debug builds of dev and test
    /// clusters only; needs `primes_file`). Tests whose subject is the
    /// ceremony leave it unset.
    pub aux_fixture: Option<PathBuf>,
    /// Node id → fault to inject, e.g. `"signer-3"` →
    /// [`FaultInjection::CorruptProtocolMessages`].
    pub fault_injection: HashMap<String, FaultInjection>,
    /// Presignatures the coordinator keeps ready per key (default 4; 0 disables the pool).
    pub presignature_pool: u32,
    /// Withdrawal policy document to install (TOML or JSON); default: the embedded
    /// `examples/demo-policy.toml`. Either way it is signed with the embedded demo
    /// admin keys (`examples/keys/admin1.pem`, `admin2.pem`, 2 of 2).
    pub policy: Option<PathBuf>,
    /// Keep the raw-digest signing paths of a dev cluster: coordinator
    /// `[dev] allow_sign_digest` and signers' `[dev] allow_raw_digest` (default
    /// true: the cluster demo, tests and benchmarks use `SignDigest`). False
    /// generates a locked-down cluster that signs only policy-approved withdrawals.
    pub raw_digest: bool,
    /// Directory of `custos-coordinator`: when set, [`generate`] runs
    /// `custos-coordinator log-key` and writes the audit-log verifier key into every
    /// signer's `[cosigner] log_key` (failing if that does not work). When unset,
    /// [`Cluster::start`](crate::Cluster::start) does it before the first start.
    pub bin_dir: Option<PathBuf>,
    /// An EVM node to sign and broadcast on (default none: withdrawals end
    /// `signed`). When set, the coordinator config gets ETH on that chain in
    /// `[[assets]]` (besides the built-in ones) and a `[[chains]]` entry, every
    /// signer's `[cosigner] chains` names it, and `cluster.json` records it.
    pub evm_chain: Option<EvmChain>,
    /// A Bitcoin-format node to spend on (default none). When set, the
    /// coordinator config gets its native coin in `[[assets]]` and a
    /// `[[chains]]` entry of kind `utxo`, every signer's `[cosigner] chains`
    /// names it, and `cluster.json` records it.
    pub utxo_chain: Option<UtxoChain>,
    /// The admins' recovery key (`custos-recipient1:...`, from `custos
    /// recovery keygen`) written into every signer's `[recovery] recipient`
    /// (default none: the signers export no share backup).
    pub recovery_recipient: Option<String>,
    /// Process name (`coordinator`, `signer-N`) → where it runs: its own
    /// address and a command prefix (default none: every process on
    /// 127.0.0.1, spawned directly). Ports stay those of `base_port`.
    pub placements: BTreeMap<String, Placement>,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            dir: PathBuf::from(DEFAULT_DIR),
            signers: 3,
            threshold: 2,
            base_port: DEFAULT_BASE_PORT,
            primes_file: None,
            aux_fixture: None,
            fault_injection: HashMap::new(),
            presignature_pool: PRESIGNATURE_POOL,
            policy: None,
            raw_digest: true,
            bin_dir: None,
            evm_chain: None,
            utxo_chain: None,
            recovery_recipient: None,
            placements: BTreeMap::new(),
        }
    }
}

impl ClusterSpec {
    /// The default spec (3 signers, threshold 2, base port 7400) in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ClusterSpec {
            dir: dir.into(),
            ..ClusterSpec::default()
        }
    }

    fn validate(&self) -> Result<(), DevkitError> {
        let bad = |m: String| Err(DevkitError::InvalidSpec(m));
        if self.signers < 2 || self.signers > MAX_SIGNERS {
            return bad(format!(
                "signers must be 2..={MAX_SIGNERS}, got {}",
                self.signers
            ));
        }
        if self.threshold < 1 || self.threshold > self.signers {
            return bad(format!(
                "threshold must be 1..={} (the number of signers), got {}",
                self.signers, self.threshold
            ));
        }
        if self.base_port == 0 || u32::from(self.base_port) + 210 + u32::from(self.signers) > 65535
        {
            return bad(format!(
                "base_port {} leaves no room for {} signers (needs base_port + 210 + signers <= 65535)",
                self.base_port, self.signers
            ));
        }
        for (name, placement) in &self.placements {
            if name != COORDINATOR_NAME && !(0..self.signers).any(|i| signer_id(i) == *name) {
                return bad(format!("placements names unknown process {name:?}"));
            }
            placement.validate(name)?;
        }
        for id in self.fault_injection.keys() {
            if !(0..self.signers).any(|i| signer_id(i) == *id) {
                return bad(format!("fault_injection names unknown node {id:?}"));
            }
        }
        if let Some(p) = &self.primes_file
            && !p.is_file()
        {
            return bad(format!("primes_file {} does not exist", p.display()));
        }
        if let Some(p) = &self.aux_fixture {
            if !p.is_file() {
                return bad(format!("aux_fixture {} does not exist", p.display()));
            }
            if self.primes_file.is_none() {
                return bad("aux_fixture needs primes_file (the primes it was made from)".into());
            }
        }
        if let Some(p) = &self.policy
            && !p.is_file()
        {
            return bad(format!("policy {} does not exist", p.display()));
        }
        if let Some(d) = &self.bin_dir
            && !d.join(COORDINATOR_BIN).is_file()
        {
            return bad(format!(
                "bin_dir {} has no {COORDINATOR_BIN} (build it with `cargo build --workspace --bins`)",
                d.display()
            ));
        }
        if let Some(chain) = &self.evm_chain {
            chain.validate()?;
        }
        if let Some(chain) = &self.utxo_chain {
            chain.validate()?;
        }
        Ok(())
    }

    /// Where the process `name` runs (the default placement if unplaced).
    fn placement(&self, name: &str) -> Placement {
        self.placements.get(name).cloned().unwrap_or_default()
    }
}

/// Process name of the coordinator (its log is `logs/coordinator.log`).
const COORDINATOR_NAME: &str = "coordinator";

/// Node id of signer `i` (0-based): `signer-{i+1}`.
pub fn signer_id(i: u16) -> String {
    format!("signer-{}", u32::from(i) + 1)
}

/// `ip:port` (127.0.0.1 unless the process is placed elsewhere).
fn on(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(ip, port))
}

/// Where everything of a generated cluster is; serialised as `cluster.json`.
/// Every path is absolute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ClusterLayout {
    /// [`LAYOUT_FORMAT`].
    pub format: u32,
    /// The cluster directory.
    pub dir: PathBuf,
    /// Dev CA certificate (trust anchor for the coordinator's and the signers' TLS).
    pub ca_cert: PathBuf,
    /// Dev CA private key.
    pub ca_key: PathBuf,
    /// Directory of the process logs (`<name>.log`).
    pub logs_dir: PathBuf,
    /// Pid file of the running processes.
    pub pids_file: PathBuf,
    /// Default signing threshold.
    pub threshold: u16,
    /// Base port.
    pub base_port: u16,
    /// The coordinator.
    pub coordinator: CoordinatorLayout,
    /// The signers, in node id order.
    pub signers: Vec<SignerLayout>,
    /// The installed withdrawal policy bundle (absent in layouts written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyLayout>,
    /// The coordinator's audit-log verifier key line (`custos-coordinator log-key`),
    /// as written into every signer's `[cosigner] log_key`; `None` until installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_key: Option<String>,
    /// Whether the raw-digest signing paths are enabled ([`ClusterSpec::raw_digest`]).
    #[serde(default = "yes")]
    pub raw_digest: bool,
    /// The EVM chain the cluster broadcasts on ([`ClusterSpec::evm_chain`]), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evm_chain: Option<EvmChain>,
    /// The Bitcoin-format chain the cluster spends on ([`ClusterSpec::utxo_chain`]), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utxo_chain: Option<UtxoChain>,
}

fn yes() -> bool {
    true
}

/// The withdrawal policy bundle of a cluster (`policy/` in the cluster directory).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PolicyLayout {
    /// The policy document (`policy.toml`), exactly as signed.
    pub document: PathBuf,
    /// Its admin signatures (`policy.toml.sigs.json`).
    pub signatures: PathBuf,
    /// The admin set (`admins.toml`) the coordinator and every signer trust.
    pub admins: PathBuf,
    /// Policy hash (64 hex digits).
    pub hash: String,
}

/// An API client of the coordinator with its own token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ClientLayout {
    /// Client id (recorded as the initiator of what it creates).
    pub id: String,
    /// Its roles (`backend`, `approver`, `auditor`, `admin`).
    pub roles: Vec<String>,
    /// File holding its bearer token (0600): the client's copy, printed by
    /// `custos dev up`; the coordinator holds only its hash
    /// ([`CoordinatorLayout::token_store`]).
    pub token_file: PathBuf,
}

/// The coordinator's files and addresses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CoordinatorLayout {
    /// Process name (`coordinator`; its log is `logs/coordinator.log`).
    pub name: String,
    /// Its directory.
    pub dir: PathBuf,
    /// `coordinator.toml`.
    pub config: PathBuf,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Server certificate (SAN `localhost`, `127.0.0.1`).
    pub server_cert: PathBuf,
    /// Server key.
    pub server_key: PathBuf,
    /// Client certificate towards the signers.
    pub client_cert: PathBuf,
    /// Client key.
    pub client_key: PathBuf,
    /// File holding the admin API token (the client's copy).
    pub admin_token_file: PathBuf,
    /// The coordinator's hashed token store (`auth.token_store`): every
    /// generated token's id, client, roles, expiry and SHA-256.
    #[serde(default)]
    pub token_store: PathBuf,
    /// Further API clients ([`BACKEND_CLIENT`], [`APPROVER_CLIENT`],
    /// [`AUDITOR_CLIENT`]), each with its own token file.
    #[serde(default)]
    pub clients: Vec<ClientLayout>,
    /// gRPC listen address.
    pub grpc_listen: SocketAddr,
    /// HTTP API listen address (the `/v1` REST routes, TLS).
    pub http_listen: SocketAddr,
    /// gRPC URL, e.g. `https://127.0.0.1:7400`.
    pub url: String,
    /// HTTP API URL, e.g. `https://127.0.0.1:7401` (the cluster's CA, name
    /// `localhost`: [`crate::HttpTarget::coordinator_api`]).
    pub http_url: String,
    /// `/healthz` and `/metrics` (plain HTTP), e.g. `127.0.0.1:7402`.
    pub metrics_listen: SocketAddr,
    /// Command prefix it is spawned with ([`Placement::command_prefix`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command_prefix: Vec<String>,
}

/// A signer's files and addresses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SignerLayout {
    /// Node id, e.g. `signer-1` (also its process name).
    pub node_id: String,
    /// 0-based index (its primes entry).
    pub index: u16,
    /// Its directory.
    pub dir: PathBuf,
    /// `signer.toml`.
    pub config: PathBuf,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Control TLS certificate (SAN node id, `localhost`, `127.0.0.1`).
    pub tls_cert: PathBuf,
    /// Control TLS key.
    pub tls_key: PathBuf,
    /// libp2p identity key (protobuf encoding).
    pub identity_key: PathBuf,
    /// Passphrase of the software sealer.
    pub passphrase_file: PathBuf,
    /// libp2p PeerId (base58).
    pub peer_id: String,
    /// libp2p listen multiaddr.
    pub p2p_listen: String,
    /// Control gRPC listen address.
    pub control_listen: SocketAddr,
    /// Control endpoint URL, e.g. `https://127.0.0.1:7410`.
    pub control_endpoint: String,
    /// `/healthz` and `/metrics` listen address (`[metrics] listen`, plain HTTP).
    pub http_listen: SocketAddr,
    /// Health/metrics URL, e.g. `http://127.0.0.1:7610`.
    pub http_url: String,
    /// Fault injected into this node, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault_injection: Option<FaultInjection>,
    /// Command prefix it is spawned with ([`Placement::command_prefix`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command_prefix: Vec<String>,
}

impl ClusterLayout {
    /// Reads `dir/cluster.json`.
    pub fn load(dir: &Path) -> Result<ClusterLayout, DevkitError> {
        let path = dir.join(CLUSTER_FILE);
        if !path.is_file() {
            return Err(DevkitError::NoLayout {
                dir: dir.to_path_buf(),
            });
        }
        let text = fsutil::read_string(&path)?;
        let layout: ClusterLayout =
            serde_json::from_str(&text).map_err(|e| DevkitError::Format {
                path: path.clone(),
                message: e.to_string(),
            })?;
        if layout.format != LAYOUT_FORMAT {
            return Err(DevkitError::Format {
                path,
                message: format!(
                    "format {} not supported (expected {LAYOUT_FORMAT}); delete the directory and run `custos dev up` again",
                    layout.format
                ),
            });
        }
        Ok(layout)
    }

    /// Writes `dir/cluster.json`.
    pub fn save(&self) -> Result<(), DevkitError> {
        let path = self.dir.join(CLUSTER_FILE);
        let mut text = serde_json::to_string_pretty(self).map_err(|e| DevkitError::Format {
            path: path.clone(),
            message: e.to_string(),
        })?;
        text.push('\n');
        fsutil::write_atomic(&path, text.as_bytes(), PUBLIC_MODE)
    }

    /// The signer with this node id.
    pub fn signer(&self, node_id: &str) -> Option<&SignerLayout> {
        self.signers.iter().find(|s| s.node_id == node_id)
    }

    /// The generated API client `id` (not the admin: see
    /// [`CoordinatorLayout::admin_token_file`]).
    pub fn client(&self, id: &str) -> Option<&ClientLayout> {
        self.coordinator.clients.iter().find(|c| c.id == id)
    }

    /// Log file of the process `name` (`coordinator` or a node id).
    pub fn log_file(&self, name: &str) -> PathBuf {
        self.logs_dir.join(format!("{name}.log"))
    }
}

// ---- config files as written -------------------------------------------------

fn absolute(path: &Path) -> Result<PathBuf, DevkitError> {
    std::fs::canonicalize(path).map_err(DevkitError::io("cannot resolve", path))
}

// ---- generate -----------------------------------------------------------------

/// Writes (or refreshes) a cluster directory for `spec` and returns its layout.
///
/// Idempotent: existing keys, certificates, passphrases, the admin token and data
/// directories are kept (so PeerIds and sealed shares survive); the config files and
/// `cluster.json` are rewritten from `spec` every time. If the CA is missing it is
/// recreated and every certificate reissued.
pub fn generate(spec: &ClusterSpec) -> Result<ClusterLayout, DevkitError> {
    spec.validate()?;
    fsutil::ensure_private_dir(&spec.dir)?;
    let dir = absolute(&spec.dir)?;
    let primes_file = spec.primes_file.as_deref().map(absolute).transpose()?;
    let aux_fixture = spec.aux_fixture.as_deref().map(absolute).transpose()?;

    let ca_cert = dir.join("ca.pem");
    let ca_key = dir.join("ca.key");
    let ca = DevCa::load_or_create(&ca_cert, &ca_key)?;
    let logs_dir = dir.join("logs");
    fsutil::ensure_dir(&logs_dir)?;

    // Coordinator material.
    let cdir = dir.join("coordinator");
    fsutil::ensure_private_dir(&cdir)?;
    let placed = spec.placement(COORDINATOR_NAME);
    let host = placed.host();
    let coordinator = CoordinatorLayout {
        name: COORDINATOR_NAME.into(),
        config: cdir.join("coordinator.toml"),
        data_dir: cdir.join("data"),
        server_cert: cdir.join("server.pem"),
        server_key: cdir.join("server.key"),
        client_cert: cdir.join("client.pem"),
        client_key: cdir.join("client.key"),
        admin_token_file: cdir.join("admin.token"),
        token_store: cdir.join(TOKEN_STORE),
        clients: GENERATED_CLIENTS
            .iter()
            .map(|(id, role)| ClientLayout {
                id: (*id).to_string(),
                roles: vec![(*role).to_string()],
                token_file: cdir.join(format!("{id}.token")),
            })
            .collect(),
        grpc_listen: on(host, spec.base_port),
        http_listen: on(host, spec.base_port + 1),
        url: format!("https://{host}:{}", spec.base_port),
        http_url: format!("https://{host}:{}", spec.base_port + 1),
        metrics_listen: on(host, spec.base_port + 2),
        command_prefix: placed.command_prefix,
        dir: cdir,
    };
    ca.ensure_leaf(
        &coordinator.server_cert,
        &coordinator.server_key,
        "custos-coordinator",
        &["localhost", "127.0.0.1"],
        certs::SERVER,
    )?;
    ca.ensure_leaf(
        &coordinator.client_cert,
        &coordinator.client_key,
        "custos-coordinator (client)",
        &["custos-coordinator"],
        certs::CLIENT,
    )?;
    ensure_api_token(
        &coordinator.token_store,
        &coordinator.admin_token_file,
        ADMIN_CLIENT,
        &["admin".to_string()],
    )?;
    for c in &coordinator.clients {
        ensure_api_token(&coordinator.token_store, &c.token_file, &c.id, &c.roles)?;
    }
    fsutil::ensure_dir(&coordinator.data_dir)?;

    // Signer material.
    let mut signers = Vec::new();
    for i in 0..spec.signers {
        let node_id = signer_id(i);
        let sdir = dir.join(&node_id);
        fsutil::ensure_private_dir(&sdir)?;
        let tls_cert = sdir.join("tls.pem");
        let tls_key = sdir.join("tls.key");
        ca.ensure_leaf(
            &tls_cert,
            &tls_key,
            &node_id,
            &[&node_id, "localhost", "127.0.0.1"],
            certs::SERVER_AND_CLIENT,
        )?;
        let identity_key = sdir.join("p2p.key");
        let peer_id = identity::load_or_create_identity(&identity_key)?;
        let passphrase_file = sdir.join("passphrase");
        identity::ensure_random_secret(&passphrase_file)?;
        let data_dir = sdir.join("data");
        fsutil::ensure_dir(&data_dir)?;
        let control_port = spec.base_port + 10 + i;
        let http_port = spec.base_port + 210 + i;
        let placed = spec.placement(&node_id);
        let host = placed.host();
        signers.push(SignerLayout {
            index: i,
            config: sdir.join("signer.toml"),
            data_dir,
            tls_cert,
            tls_key,
            identity_key,
            passphrase_file,
            peer_id: peer_id.to_base58(),
            p2p_listen: format!("/ip4/{host}/tcp/{}", spec.base_port + 110 + i),
            control_listen: on(host, control_port),
            control_endpoint: format!("https://{host}:{control_port}"),
            http_listen: on(host, http_port),
            http_url: format!("http://{host}:{http_port}"),
            fault_injection: spec.fault_injection.get(&node_id).cloned(),
            command_prefix: placed.command_prefix,
            dir: sdir,
            node_id,
        });
    }

    // Withdrawal policy bundle (rewritten from the spec every time).
    let policy = write_policy_bundle(&dir.join(POLICY_DIR), spec.policy.as_deref())?;

    // Coordinator config first: `custos-coordinator log-key` reads it.
    let policy_file = |p: &Path| Path::new("..").join(POLICY_DIR).join(file_name(p));
    let mut cfg = CoordinatorConfig::new(
        "data".into(),
        coordinator.grpc_listen,
        coordinator.http_listen,
        CoordinatorTls {
            cert: "server.pem".into(),
            key: "server.key".into(),
            client_cert: "client.pem".into(),
            client_key: "client.key".into(),
            signer_ca: "../ca.pem".into(),
        },
        AuthConfig::new(TOKEN_STORE.into()),
        signers
            .iter()
            .map(|s| SignerEndpoint {
                node_id: s.node_id.clone(),
                endpoint: s.control_endpoint.clone(),
                tls_name: s.node_id.clone(),
            })
            .collect(),
    );
    cfg.default_threshold = spec.threshold;
    cfg.presignature_pool = spec.presignature_pool;
    cfg.metrics = MetricsSettings {
        listen: coordinator.metrics_listen,
    };
    cfg.policy = Some(PolicyFiles {
        document: policy_file(&policy.document),
        signatures: policy_file(&policy.signatures),
        admins: policy_file(&policy.admins),
    });
    cfg.dev.allow_sign_digest = spec.raw_digest;
    // Backends may present a client certificate from the dev CA instead of a
    // token, once pinned (`custos token create --cert`).
    cfg.auth.client_ca = Some("../ca.pem".into());
    // A dev cluster's webhook receivers run on loopback over plain HTTP.
    cfg.events.webhook_allow_http = true;
    cfg.events.webhook_allow_private = true;
    cfg.assets = chain::coordinator_assets(spec.evm_chain.as_ref(), spec.utxo_chain.as_ref());
    cfg.chains = (spec.evm_chain.iter().map(EvmChain::coordinator_chain))
        .chain(spec.utxo_chain.iter().map(UtxoChain::coordinator_chain))
        .collect();
    config_file::write_config(&coordinator.config, &cfg)?;

    // The audit-log verifier key the signers check checkpoints against: fresh
    // from the coordinator binary when we have it, else the one installed by an
    // earlier run as long as the coordinator still has that key.
    let log_key = match &spec.bin_dir {
        Some(bin_dir) => Some(run_log_key(
            &bin_dir.join(COORDINATOR_BIN),
            &coordinator.config,
            &coordinator.dir,
            &[],
        )?),
        None => previous_log_key(&dir, &coordinator.data_dir),
    };

    for s in &signers {
        let peers = signers
            .iter()
            .filter(|p| p.node_id != s.node_id)
            .map(|p| PeerConfig {
                node_id: p.node_id.clone(),
                peer_id: p.peer_id.clone(),
                address: p.p2p_listen.clone(),
            })
            .collect();
        let mut cfg = SignerConfig::new(
            s.node_id.clone(),
            "data".into(),
            "p2p.key".into(),
            vec![s.p2p_listen.clone()],
            s.control_listen,
            SignerTls {
                cert: "tls.pem".into(),
                key: "tls.key".into(),
                client_ca: "../ca.pem".into(),
                coordinator_cert: "../coordinator/client.pem".into(),
            },
            peers,
            SealerConfig::Software(SoftwareConfig {
                passphrase_file: Some("passphrase".into()),
                passphrase_env: None,
                unseal: Default::default(),
                // A fresh data dir gets its KEK at the first start
                // (production configs leave it at its default, false).
                create_kek: true,
                kdf: Some(KDF),
            }),
        );
        cfg.session_timeout_secs = SESSION_TIMEOUT_SECS;
        cfg.metrics = MetricsSettings {
            listen: s.http_listen,
        };
        cfg.cosigner.admins = Some(policy_file(&policy.admins));
        cfg.cosigner.log_key = log_key.clone();
        cfg.cosigner.chains = (spec.evm_chain.iter().map(EvmChain::signer_chain))
            .chain(spec.utxo_chain.iter().map(UtxoChain::signer_chain))
            .collect();
        if primes_file.is_some() {
            cfg.dev.primes_file = primes_file.clone();
            cfg.dev.primes_index = usize::from(s.index);
        }
        cfg.recovery.recipient = spec.recovery_recipient.clone();
        cfg.dev.aux_fixture = aux_fixture.clone();
        cfg.dev.fault_injection = s.fault_injection.unwrap_or_default();
        cfg.dev.allow_raw_digest = spec.raw_digest;
        config_file::write_config(&s.config, &cfg)?;
    }

    let layout = ClusterLayout {
        format: LAYOUT_FORMAT,
        ca_cert,
        ca_key,
        pids_file: dir.join(PIDS_FILE),
        logs_dir,
        threshold: spec.threshold,
        base_port: spec.base_port,
        coordinator,
        signers,
        policy: Some(policy),
        log_key,
        raw_digest: spec.raw_digest,
        evm_chain: spec.evm_chain.clone(),
        utxo_chain: spec.utxo_chain.clone(),
        dir,
    };
    layout.save()?;
    Ok(layout)
}

/// Keeps `client`'s token in `token_file` if the store accepts it, else
/// issues a new one (hash into `store`, the token itself into `token_file`,
/// 0600). A token file from before hashed tokens (no `custos_` prefix) is
/// replaced the same way.
fn ensure_api_token(
    store: &Path,
    token_file: &Path,
    client: &str,
    roles: &[String],
) -> Result<(), DevkitError> {
    let now = custos_credentials::now_unix();
    let held = std::fs::read_to_string(token_file)
        .ok()
        .map(|t| Zeroizing::new(t.trim().to_owned()));
    let store_err = |e: custos_credentials::CredentialError| DevkitError::Format {
        path: store.to_path_buf(),
        message: e.to_string(),
    };
    let token = custos_credentials::update(store, true, |s| {
        if let Some(t) = &held
            && s.verify(t, now)
                .is_ok_and(|r| r.client == client && r.roles == roles)
        {
            return Ok(None);
        }
        let (_, token) = s.issue(
            client,
            roles,
            now,
            Some(now + DEV_TOKEN_LIFETIME_SECS),
            Some("custos dev up".into()),
        )?;
        Ok(Some(token))
    })
    .map_err(store_err)?;
    match token {
        Some(t) => fsutil::write_atomic(token_file, t.expose().as_bytes(), fsutil::SECRET_MODE),
        None => fsutil::restrict(token_file),
    }
}

fn file_name(path: &Path) -> PathBuf {
    path.file_name().map(PathBuf::from).unwrap_or_default()
}

/// Writes `policy.toml` (the given document or [`DEMO_POLICY`]), its admin
/// signatures (both demo admin keys) and the admin set into `dir`.
fn write_policy_bundle(dir: &Path, source: Option<&Path>) -> Result<PolicyLayout, DevkitError> {
    fsutil::ensure_dir(dir)?;
    let (bytes, origin) = match source {
        Some(path) => (fsutil::read(path)?, path.to_path_buf()),
        None => (
            DEMO_POLICY.as_bytes().to_vec(),
            PathBuf::from("examples/demo-policy.toml (embedded)"),
        ),
    };
    // Refuse a document the daemons would refuse, naming the file, before any
    // daemon starts on it.
    let parsed = Policy::parse(&bytes).map_err(|e| DevkitError::Policy {
        path: origin.clone(),
        message: e.to_string(),
    })?;
    let hash = PolicyHash::of_document(&bytes);
    debug_assert_eq!(parsed.hash(), hash);
    let mut signatures = BundleSignatures::new(hash);
    let mut admin_keys = Vec::new();
    for (i, pem) in DEMO_ADMIN_KEYS.iter().enumerate() {
        let key = SecretKey::from_pem(&Zeroizing::new((*pem).to_string())).map_err(|e| {
            DevkitError::Policy {
                path: PathBuf::from(format!("examples/keys/admin{}.pem (embedded)", i + 1)),
                message: e.to_string(),
            }
        })?;
        signatures.sign(&key);
        admin_keys.push(key.public().to_hex());
    }
    let document = dir.join("policy.toml");
    let signatures_file = dir.join("policy.toml.sigs.json");
    let admins = dir.join("admins.toml");
    fsutil::write_atomic(&document, &bytes, PUBLIC_MODE)?;
    let mut sigs_json =
        serde_json::to_string_pretty(&signatures).map_err(|e| DevkitError::Format {
            path: signatures_file.clone(),
            message: e.to_string(),
        })?;
    sigs_json.push('\n');
    fsutil::write_atomic(&signatures_file, sigs_json.as_bytes(), PUBLIC_MODE)?;
    let admin_set = format!(
        "# Generated by custos-devkit: the demo admin set (examples/keys/admin1.pem and\n\
         # admin2.pem; DEMO KEYS, their seeds are public). Bundles need both.\n\
         threshold = {}\nkeys = [\n{}]\n",
        admin_keys.len(),
        admin_keys
            .iter()
            .map(|k| format!("  \"{k}\",\n"))
            .collect::<String>()
    );
    fsutil::write_atomic(&admins, admin_set.as_bytes(), PUBLIC_MODE)?;
    Ok(PolicyLayout {
        document,
        signatures: signatures_file,
        admins,
        hash: hash.to_string(),
    })
}

/// The log key an earlier `generate` or start installed, if the coordinator still
/// holds the sealed key it belongs to.
fn previous_log_key(dir: &Path, coordinator_data: &Path) -> Option<String> {
    if !coordinator_data.join("log-key.sealed").is_file() {
        return None;
    }
    ClusterLayout::load(dir).ok()?.log_key
}

/// How long `custos-coordinator log-key` may take (it may create and seal the key).
const LOG_KEY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs `<coordinator_bin> log-key --config <config>` (in `cwd`, without stray
/// `CUSTOS_*` variables, plus `env`) and returns the verifier key line it prints.
pub(crate) fn run_log_key(
    coordinator_bin: &Path,
    config: &Path,
    cwd: &Path,
    env: &[(std::ffi::OsString, std::ffi::OsString)],
) -> Result<String, DevkitError> {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let fail = |message: String| DevkitError::LogKey {
        binary: coordinator_bin.to_path_buf(),
        message,
    };
    if !coordinator_bin.is_file() {
        return Err(DevkitError::MissingBinary {
            name: COORDINATOR_BIN.into(),
            path: coordinator_bin.to_path_buf(),
        });
    }
    let mut cmd = Command::new(coordinator_bin);
    cmd.arg("log-key")
        .arg("--config")
        .arg(config)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CUSTOS_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("NO_COLOR", "1");
    cmd.envs(env.iter().cloned());
    let mut child = cmd
        .spawn()
        .map_err(|e| fail(format!("cannot run it: {e}")))?;
    let deadline = std::time::Instant::now() + LOG_KEY_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(format!(
                    "`log-key` did not finish within {} s",
                    LOG_KEY_TIMEOUT.as_secs()
                )));
            }
            Err(e) => return Err(fail(format!("wait: {e}"))),
        }
    };
    // The outputs are a line or a short error: they fit the pipe buffers, so
    // reading after the exit cannot deadlock.
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut stdout);
    }
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    if !status.success() {
        let hint = if stderr.contains("unrecognized subcommand")
            || stderr.contains("unexpected argument")
        {
            " (this custos-coordinator is too old for the `log-key` subcommand: rebuild it with `cargo build --workspace --bins`)"
        } else {
            ""
        };
        return Err(fail(format!(
            "`log-key --config {}` failed ({status}){hint}: {}",
            config.display(),
            stderr.trim()
        )));
    }
    let line = stdout
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or_default()
        .to_string();
    // A verifier key is `name+keyid+base64`: anything else is not what we asked for.
    let mut parts = line.splitn(3, '+');
    let well_formed = matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some(name), Some(id), Some(key))
            if !name.is_empty()
                && id.len() == 8
                && id.bytes().all(|b| b.is_ascii_hexdigit())
                && !key.is_empty()
    );
    if !well_formed || line.chars().any(char::is_whitespace) {
        return Err(fail(format!(
            "`log-key` printed {line:?}, not a verifier key line (name+keyid+base64)"
        )));
    }
    Ok(line)
}

/// Sets `[cosigner] log_key` in every signer config of `layout` to the key the
/// coordinator binary in `bin_dir` reports, and records it in `cluster.json`.
/// [`Cluster::start`](crate::Cluster::start) calls it when generation did not.
pub fn install_log_key(
    layout: &mut ClusterLayout,
    bin_dir: &Path,
    env: &[(std::ffi::OsString, std::ffi::OsString)],
) -> Result<String, DevkitError> {
    let line = run_log_key(
        &bin_dir.join(COORDINATOR_BIN),
        &layout.coordinator.config,
        &layout.coordinator.dir,
        env,
    )?;
    for s in &layout.signers {
        // Edit in place: tests may have changed other parts of the config (sealer).
        let text = fsutil::read_string(&s.config)?;
        let mut table: toml::Table = toml::from_str(&text).map_err(|e| DevkitError::Format {
            path: s.config.clone(),
            message: e.to_string(),
        })?;
        let cosigner = table
            .entry("cosigner")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(cosigner) = cosigner.as_table_mut() else {
            return Err(DevkitError::Format {
                path: s.config.clone(),
                message: "`cosigner` is not a table".into(),
            });
        };
        cosigner.insert("log_key".into(), toml::Value::String(line.clone()));
        config_file::write_table(&s.config, &table)?;
    }
    layout.log_key = Some(line.clone());
    layout.save()?;
    Ok(line)
}

/// Every (process name, address) a layout listens on, for port checks.
pub(crate) fn listen_addrs(layout: &ClusterLayout) -> BTreeMap<String, Vec<SocketAddr>> {
    let mut m = BTreeMap::new();
    m.insert(
        layout.coordinator.name.clone(),
        vec![
            layout.coordinator.grpc_listen,
            layout.coordinator.http_listen,
            layout.coordinator.metrics_listen,
        ],
    );
    for s in &layout.signers {
        let p2p_port = s
            .p2p_listen
            .rsplit('/')
            .next()
            .and_then(|p| p.parse::<u16>().ok());
        let mut v = vec![s.control_listen, s.http_listen];
        if let Some(p) = p2p_port {
            v.push(SocketAddr::new(s.control_listen.ip(), p));
        }
        m.insert(s.node_id.clone(), v);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_toml(path: &Path) -> toml::Table {
        toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn an_evm_chain_reaches_every_config_and_the_layout() {
        let tmp = tempfile::tempdir().unwrap();
        let mut spec = ClusterSpec::new(tmp.path().join("cluster"));
        spec.base_port = 34000;
        spec.evm_chain = Some(EvmChain::new("http://127.0.0.1:8545", 31337));
        let layout = generate(&spec).unwrap();
        assert_eq!(layout.evm_chain, spec.evm_chain);
        assert_eq!(ClusterLayout::load(&layout.dir).unwrap(), layout);

        let c = read_toml(&layout.coordinator.config);
        let chains = c["chains"].as_array().unwrap();
        assert_eq!(chains.len(), 1);
        assert_eq!(chains[0]["name"].as_str(), Some("anvil"));
        assert_eq!(chains[0]["kind"].as_str(), Some("evm"));
        assert_eq!(chains[0]["chain_id"].as_integer(), Some(31337));
        assert_eq!(chains[0]["rpc_url"].as_str(), Some("http://127.0.0.1:8545"));
        // One confirmation is the daemon's default, so it is not written.
        assert!(chains[0].get("confirmations").is_none());
        let typed: CoordinatorConfig =
            toml::from_str(&std::fs::read_to_string(&layout.coordinator.config).unwrap()).unwrap();
        assert_eq!(typed.chains[0].confirmations, 1);
        let assets = c["assets"].as_array().unwrap();
        assert!(assets.iter().any(|a| a["chain"].as_str() == Some("anvil")
            && a["symbol"].as_str() == Some("ETH")
            && a["decimals"].as_integer() == Some(18)));
        // The built-in assets stay (an explicit list replaces them).
        assert!(
            assets
                .iter()
                .any(|a| a["chain"].as_str() == Some("ethereum"))
        );
        for s in &layout.signers {
            let t = read_toml(&s.config);
            let chains = t["cosigner"]["chains"].as_array().unwrap();
            assert_eq!(chains.len(), 1);
            assert_eq!(chains[0]["name"].as_str(), Some("anvil"));
            assert_eq!(chains[0]["chain_id"].as_integer(), Some(31337));
        }

        // Without it: none of that, and cluster.json says so.
        spec.evm_chain = None;
        let layout = generate(&spec).unwrap();
        assert_eq!(layout.evm_chain, None);
        let c = read_toml(&layout.coordinator.config);
        assert!(!c.contains_key("chains") && !c.contains_key("assets"));
        let t = read_toml(&layout.signers[0].config);
        assert!(!t["cosigner"].as_table().unwrap().contains_key("chains"));
        let json = std::fs::read_to_string(layout.dir.join(CLUSTER_FILE)).unwrap();
        assert!(!json.contains("evm_chain"), "{json}");
    }

    #[test]
    fn a_utxo_chain_reaches_every_config_and_the_layout() {
        let tmp = tempfile::tempdir().unwrap();
        let mut spec = ClusterSpec::new(tmp.path().join("cluster"));
        spec.base_port = 34500;
        spec.evm_chain = Some(EvmChain::new("http://127.0.0.1:8545", 31337));
        spec.utxo_chain = Some(UtxoChain::new("http://u:p@127.0.0.1:19443/"));
        let layout = generate(&spec).unwrap();
        assert_eq!(layout.utxo_chain, spec.utxo_chain);
        assert_eq!(ClusterLayout::load(&layout.dir).unwrap(), layout);

        let c: CoordinatorConfig =
            toml::from_str(&std::fs::read_to_string(&layout.coordinator.config).unwrap()).unwrap();
        let kinds: Vec<_> = c
            .chains
            .iter()
            .map(|c| (c.name.as_str(), c.kind.as_str()))
            .collect();
        assert_eq!(kinds, [("anvil", "evm"), ("litecoin-regtest", "utxo")]);
        assert_eq!(c.chains[1].rpc_url, "http://u:p@127.0.0.1:19443/");
        let ltc = c
            .assets
            .iter()
            .find(|a| a.chain == "litecoin-regtest")
            .unwrap();
        assert_eq!((ltc.symbol.as_str(), ltc.decimals), ("LTC", 8));
        for s in &layout.signers {
            let t: SignerConfig =
                toml::from_str(&std::fs::read_to_string(&s.config).unwrap()).unwrap();
            let names: Vec<_> = t.cosigner.chains.iter().map(|c| c.name.as_str()).collect();
            assert_eq!(names, ["anvil", "litecoin-regtest"]);
            assert_eq!(t.cosigner.chains[1].chain_id, None);
        }
    }

    #[test]
    fn a_placed_process_binds_and_advertises_its_own_address() {
        let tmp = tempfile::tempdir().unwrap();
        let mut spec = ClusterSpec::new(tmp.path().join("cluster"));
        spec.base_port = 35000;
        // Unplaced: exactly the loopback layout of before.
        let before = generate(&spec).unwrap();
        assert_eq!(before.coordinator.url, "https://127.0.0.1:35000");
        assert_eq!(before.signers[1].p2p_listen, "/ip4/127.0.0.1/tcp/35111");
        assert!(before.signers.iter().all(|s| s.command_prefix.is_empty()));
        let json = std::fs::read_to_string(before.dir.join(CLUSTER_FILE)).unwrap();
        assert!(!json.contains("command_prefix"), "{json}");

        let ns =
            |n: &str| -> Vec<String> { ["ip", "netns", "exec", n].map(str::to_owned).to_vec() };
        let c_ip = Ipv4Addr::new(10, 77, 3, 2);
        let s2_ip = Ipv4Addr::new(10, 77, 3, 4);
        spec.placements
            .insert("coordinator".into(), Placement::new(c_ip, ns("x-c")));
        spec.placements
            .insert("signer-2".into(), Placement::new(s2_ip, ns("x-s2")));
        let layout = generate(&spec).unwrap();
        assert_eq!(ClusterLayout::load(&layout.dir).unwrap(), layout);
        let c = &layout.coordinator;
        assert_eq!(c.url, "https://10.77.3.2:35000");
        assert_eq!(c.http_url, "https://10.77.3.2:35001");
        assert_eq!(c.metrics_listen, on(c_ip, 35002));
        assert_eq!(c.command_prefix, ns("x-c"));
        let s2 = layout.signer("signer-2").unwrap();
        assert_eq!(s2.control_endpoint, "https://10.77.3.4:35011");
        assert_eq!(s2.p2p_listen, "/ip4/10.77.3.4/tcp/35111");
        assert_eq!(s2.http_listen, on(s2_ip, 35211));
        assert_eq!(s2.command_prefix, ns("x-s2"));
        // The others stay on loopback, spawned directly.
        let s1 = layout.signer("signer-1").unwrap();
        assert_eq!(s1.control_endpoint, "https://127.0.0.1:35010");
        assert!(s1.command_prefix.is_empty());

        // The configs say the same: the coordinator binds its address and
        // dials signer-2 there (by its node id as TLS name), signer-2 binds
        // its own, and its peers dial it there.
        let cfg: CoordinatorConfig =
            toml::from_str(&std::fs::read_to_string(&c.config).unwrap()).unwrap();
        assert_eq!(cfg.grpc_listen, on(c_ip, 35000));
        assert_eq!(cfg.metrics.listen, on(c_ip, 35002));
        let e = cfg
            .signers
            .iter()
            .find(|e| e.node_id == "signer-2")
            .unwrap();
        assert_eq!(
            (e.endpoint.as_str(), e.tls_name.as_str()),
            ("https://10.77.3.4:35011", "signer-2")
        );
        let t: SignerConfig =
            toml::from_str(&std::fs::read_to_string(&s2.config).unwrap()).unwrap();
        assert_eq!(t.control_listen, on(s2_ip, 35011));
        assert_eq!(t.p2p_listen, vec!["/ip4/10.77.3.4/tcp/35111".to_owned()]);
        let t1: SignerConfig =
            toml::from_str(&std::fs::read_to_string(&s1.config).unwrap()).unwrap();
        let peer = t1.peers.iter().find(|p| p.node_id == "signer-2").unwrap();
        assert_eq!(peer.address, "/ip4/10.77.3.4/tcp/35111");
        // Port checks look at each process's own addresses.
        let addrs = listen_addrs(&layout);
        assert!(addrs["signer-2"].iter().all(|a| a.ip() == s2_ip));
        assert!(addrs["signer-2"].contains(&on(s2_ip, 35111)));

        // A placement of a process the cluster does not have is refused.
        spec.placements
            .insert("signer-9".into(), Placement::new(s2_ip, Vec::new()));
        let err = generate(&spec).unwrap_err().to_string();
        assert!(err.contains("signer-9"), "{err}");
    }

    #[test]
    fn a_bad_rpc_url_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let mut spec = ClusterSpec::new(tmp.path().join("cluster"));
        spec.evm_chain = Some(EvmChain::new("127.0.0.1:8545", 31337));
        let err = generate(&spec).unwrap_err().to_string();
        assert!(
            err.contains("\"127.0.0.1:8545\"") && err.contains("http://"),
            "{err}"
        );
        assert!(!tmp.path().join("cluster").exists(), "nothing written");
    }
}
