//! [`ClusterSpec`] → files on disk → [`ClusterLayout`].

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::DevkitError;
use crate::certs::{self, DevCa};
use crate::fsutil::{self, PUBLIC_MODE};
use crate::identity;

/// Default cluster directory of `custos dev up`.
pub const DEFAULT_DIR: &str = ".custos-dev";
/// Default coordinator gRPC port; every other port is derived from it.
pub const DEFAULT_BASE_PORT: u16 = 7400;
/// Most signers a layout can hold (the port blocks are 100 wide).
pub const MAX_SIGNERS: u16 = 99;
/// Version of the `cluster.json` format.
pub const LAYOUT_FORMAT: u32 = 1;
/// Name of the summary file in the cluster directory.
pub const CLUSTER_FILE: &str = "cluster.json";
/// Name of the pid file in the cluster directory.
pub const PIDS_FILE: &str = "pids.json";

/// Session timeout written into signer configs.
const SESSION_TIMEOUT_SECS: u64 = 60;
/// Default presignature pool size of the coordinator.
pub const PRESIGNATURE_POOL: u32 = 4;
/// Argon2id for the signers' KEKs: the OWASP minimum (m = 19 MiB, t = 2, p = 1),
/// real but fast enough to start a few nodes on a laptop.
const KDF: KdfToml = KdfToml {
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
    /// Node id → fault to inject, e.g. `"signer-3"` → `"corrupt-protocol-messages"`.
    pub fault_injection: HashMap<String, String>,
    /// Presignatures the coordinator keeps ready per key (default 4; 0 disables the pool).
    pub presignature_pool: u32,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            dir: PathBuf::from(DEFAULT_DIR),
            signers: 3,
            threshold: 2,
            base_port: DEFAULT_BASE_PORT,
            primes_file: None,
            fault_injection: HashMap::new(),
            presignature_pool: PRESIGNATURE_POOL,
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
        Ok(())
    }
}

/// Node id of signer `i` (0-based): `signer-{i+1}`.
pub fn signer_id(i: u16) -> String {
    format!("signer-{}", u32::from(i) + 1)
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
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
    /// File holding the admin API token.
    pub admin_token_file: PathBuf,
    /// gRPC listen address.
    pub grpc_listen: SocketAddr,
    /// HTTP listen address (approval app, REST, `/healthz`, `/metrics`).
    pub http_listen: SocketAddr,
    /// gRPC URL, e.g. `https://127.0.0.1:7400`.
    pub url: String,
    /// HTTP URL, e.g. `http://127.0.0.1:7401`.
    pub http_url: String,
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
    /// Health/metrics HTTP listen address.
    pub http_listen: SocketAddr,
    /// Health/metrics URL, e.g. `http://127.0.0.1:7610`.
    pub http_url: String,
    /// Fault injected into this node, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault_injection: Option<String>,
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

    /// Log file of the process `name` (`coordinator` or a node id).
    pub fn log_file(&self, name: &str) -> PathBuf {
        self.logs_dir.join(format!("{name}.log"))
    }
}

// ---- config files as written -------------------------------------------------

#[derive(Serialize)]
struct SignerToml {
    node_id: String,
    data_dir: PathBuf,
    identity_key: PathBuf,
    p2p_listen: Vec<String>,
    control_listen: SocketAddr,
    http_listen: SocketAddr,
    session_timeout_secs: u64,
    tls: SignerTlsToml,
    sealer: SealerToml,
    peers: Vec<PeerToml>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dev: Option<DevToml>,
}

#[derive(Serialize)]
struct SignerTlsToml {
    cert: PathBuf,
    key: PathBuf,
    client_ca: PathBuf,
    coordinator_cert: PathBuf,
}

#[derive(Serialize)]
struct SealerToml {
    backend: &'static str,
    passphrase_file: PathBuf,
    kdf: KdfToml,
}

#[derive(Serialize)]
struct KdfToml {
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
}

#[derive(Serialize)]
struct PeerToml {
    node_id: String,
    peer_id: String,
    address: String,
}

#[derive(Serialize)]
struct DevToml {
    #[serde(skip_serializing_if = "Option::is_none")]
    primes_file: Option<PathBuf>,
    primes_index: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    fault_injection: Option<String>,
}

#[derive(Serialize)]
struct CoordinatorToml {
    data_dir: PathBuf,
    grpc_listen: SocketAddr,
    http_listen: SocketAddr,
    default_threshold: u16,
    presignature_pool: u32,
    tls: CoordinatorTlsToml,
    auth: AuthToml,
    signers: Vec<SignerRefToml>,
}

#[derive(Serialize)]
struct CoordinatorTlsToml {
    cert: PathBuf,
    key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    signer_ca: PathBuf,
}

#[derive(Serialize)]
struct AuthToml {
    admin_token_file: PathBuf,
}

#[derive(Serialize)]
struct SignerRefToml {
    node_id: String,
    endpoint: String,
    tls_name: String,
}

const HEADER: &str = "# Generated by custos-devkit (`custos dev up`): rewritten on every run, edit the\n# ClusterSpec instead. Relative paths are relative to this file's directory.\n\n";

fn write_toml(path: &Path, value: &impl Serialize) -> Result<(), DevkitError> {
    let body = toml::to_string(value).map_err(|e| DevkitError::Format {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    fsutil::write_atomic(path, format!("{HEADER}{body}").as_bytes(), PUBLIC_MODE)
}

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

    let ca_cert = dir.join("ca.pem");
    let ca_key = dir.join("ca.key");
    let ca = DevCa::load_or_create(&ca_cert, &ca_key)?;
    let logs_dir = dir.join("logs");
    fsutil::ensure_dir(&logs_dir)?;

    // Coordinator material.
    let cdir = dir.join("coordinator");
    fsutil::ensure_private_dir(&cdir)?;
    let coordinator = CoordinatorLayout {
        name: "coordinator".into(),
        config: cdir.join("coordinator.toml"),
        data_dir: cdir.join("data"),
        server_cert: cdir.join("server.pem"),
        server_key: cdir.join("server.key"),
        client_cert: cdir.join("client.pem"),
        client_key: cdir.join("client.key"),
        admin_token_file: cdir.join("admin.token"),
        grpc_listen: loopback(spec.base_port),
        http_listen: loopback(spec.base_port + 1),
        url: format!("https://127.0.0.1:{}", spec.base_port),
        http_url: format!("http://127.0.0.1:{}", spec.base_port + 1),
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
    identity::ensure_random_secret(&coordinator.admin_token_file)?;
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
        signers.push(SignerLayout {
            index: i,
            config: sdir.join("signer.toml"),
            data_dir,
            tls_cert,
            tls_key,
            identity_key,
            passphrase_file,
            peer_id: peer_id.to_base58(),
            p2p_listen: format!("/ip4/127.0.0.1/tcp/{}", spec.base_port + 110 + i),
            control_listen: loopback(control_port),
            control_endpoint: format!("https://127.0.0.1:{control_port}"),
            http_listen: loopback(http_port),
            http_url: format!("http://127.0.0.1:{http_port}"),
            fault_injection: spec.fault_injection.get(&node_id).cloned(),
            dir: sdir,
            node_id,
        });
    }

    // Configs (always rewritten).
    for s in &signers {
        let peers = signers
            .iter()
            .filter(|p| p.node_id != s.node_id)
            .map(|p| PeerToml {
                node_id: p.node_id.clone(),
                peer_id: p.peer_id.clone(),
                address: p.p2p_listen.clone(),
            })
            .collect();
        let dev = (primes_file.is_some() || s.fault_injection.is_some()).then(|| DevToml {
            primes_file: primes_file.clone(),
            primes_index: s.index,
            fault_injection: s.fault_injection.clone(),
        });
        let cfg = SignerToml {
            node_id: s.node_id.clone(),
            data_dir: "data".into(),
            identity_key: "p2p.key".into(),
            p2p_listen: vec![s.p2p_listen.clone()],
            control_listen: s.control_listen,
            http_listen: s.http_listen,
            session_timeout_secs: SESSION_TIMEOUT_SECS,
            tls: SignerTlsToml {
                cert: "tls.pem".into(),
                key: "tls.key".into(),
                client_ca: "../ca.pem".into(),
                coordinator_cert: "../coordinator/client.pem".into(),
            },
            sealer: SealerToml {
                backend: "software",
                passphrase_file: "passphrase".into(),
                kdf: KDF,
            },
            peers,
            dev,
        };
        write_toml(&s.config, &cfg)?;
    }
    let cfg = CoordinatorToml {
        data_dir: "data".into(),
        grpc_listen: coordinator.grpc_listen,
        http_listen: coordinator.http_listen,
        default_threshold: spec.threshold,
        presignature_pool: spec.presignature_pool,
        tls: CoordinatorTlsToml {
            cert: "server.pem".into(),
            key: "server.key".into(),
            client_cert: "client.pem".into(),
            client_key: "client.key".into(),
            signer_ca: "../ca.pem".into(),
        },
        auth: AuthToml {
            admin_token_file: "admin.token".into(),
        },
        signers: signers
            .iter()
            .map(|s| SignerRefToml {
                node_id: s.node_id.clone(),
                endpoint: s.control_endpoint.clone(),
                tls_name: s.node_id.clone(),
            })
            .collect(),
    };
    write_toml(&coordinator.config, &cfg)?;

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
        dir,
    };
    layout.save()?;
    Ok(layout)
}

/// Every (process name, address) a layout listens on, for port checks.
pub(crate) fn listen_addrs(layout: &ClusterLayout) -> BTreeMap<String, Vec<SocketAddr>> {
    let mut m = BTreeMap::new();
    m.insert(
        layout.coordinator.name.clone(),
        vec![
            layout.coordinator.grpc_listen,
            layout.coordinator.http_listen,
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
            v.push(loopback(p));
        }
        m.insert(s.node_id.clone(), v);
    }
    m
}
