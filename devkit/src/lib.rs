//! Generates and runs a local Custos cluster on loopback: a dev CA and TLS
//! certificates, libp2p identities, sealer passphrases, `signer.toml` and
//! `coordinator.toml`, API client tokens, a signed withdrawal policy bundle,
//! then the `custos-signer-N` and `custos-coordinator` processes. Used by `custos dev up/down/status` and the end-to-end tests.
//!
//! ```no_run
//! # async fn demo() -> Result<(), custos_devkit::DevkitError> {
//! use custos_devkit::{Cluster, ClusterSpec, free_base_port, generate};
//! let mut spec = ClusterSpec::new("/tmp/custos-e2e");
//! spec.base_port = free_base_port();
//! let layout = generate(&spec)?;
//! let mut cluster = Cluster::start(layout, std::path::Path::new("target/debug")).await?;
//! cluster.kill_signer("signer-2")?;
//! cluster.restart_signer("signer-2").await?;
//! cluster.stop().await
//! # }
//! ```
//!
//! The cluster directory:
//!
//! ```text
//! ca.pem ca.key                      dev CA (ECDSA P-256; key 0600)
//! cluster.json                       ClusterLayout: every path, address, URL, PeerId
//! pids.json                          running processes (Cluster, custos dev down)
//! logs/<name>.log                    stdout+stderr of each process (appended)
//! coordinator/coordinator.toml       config (rewritten by every generate)
//! coordinator/server.pem|key         gRPC and HTTP API server cert (SAN localhost, 127.0.0.1)
//! coordinator/client.pem|key         client cert towards the signers
//! coordinator/tokens.json            hashed API token store (auth.token_store, 0600):
//!                                    ids, clients, roles, expiry, SHA-256; no token
//! coordinator/admin.token            the admin's API token, `custos_...` (0600)
//! coordinator/<client>.token         API tokens of payments-backend (role backend),
//!                                    approver-cli (approver), auditor (auditor) (0600);
//!                                    the clients' copies, reissued when expired
//! coordinator/data/
//! signer-N/signer.toml               config (rewritten by every generate)
//! signer-N/tls.pem|key               control API cert (SAN signer-N, localhost, 127.0.0.1)
//! signer-N/p2p.key                   libp2p Ed25519 identity (protobuf, 0600; sealed by the node at its first start)
//! signer-N/p2p.key.peer              its PeerId (plain text, read once the key is sealed)
//! signer-N/passphrase                software sealer passphrase (0600)
//! signer-N/data/                     sealed shares etc.
//! policy/policy.toml                 withdrawal policy (ClusterSpec::policy, default
//!                                    examples/demo-policy.toml), exactly as signed
//! policy/policy.toml.sigs.json       its signatures by both demo admin keys
//! policy/admins.toml                 the demo admin set (2 of 2), trusted by all nodes
//! ```
//!
//! Every signer's `[cosigner] log_key` is the coordinator's audit-log verifier key
//! (`custos-coordinator log-key`): installed by [`generate`] when
//! [`ClusterSpec::bin_dir`] is set, else by [`Cluster::start`] before the first start.
//!
//! With [`ClusterSpec::evm_chain`] set (`custos dev up --eth-rpc URL`), the
//! coordinator config also gets ETH on that chain in `[[assets]]` and its
//! `[[chains]]` entry (node URL, chain id, confirmations), every signer's
//! `[cosigner] chains` names the chain and its id, and `cluster.json` records it
//! ([`ClusterLayout::evm_chain`]): withdrawals on it are then broadcast and
//! tracked to `confirmed`.
//!
//! Ports from `base_port` (default 7400): coordinator gRPC `+0`, HTTP API
//! `+1` (TLS, the same certificate as gRPC), health and metrics `+2` (plain);
//! signer `i` (0-based, `signer-{i+1}`): control `+10+i`, libp2p `+110+i`,
//! health and metrics `+210+i` (plain). Every address is on 127.0.0.1
//! unless [`ClusterSpec::placements`] gives a process its own address (and
//! a command prefix such as `ip netns exec NS`: [`Placement`]).
//!
//! Development only: the CA key sits next to the certificates it signs.
#![deny(missing_docs)]

mod certs;
mod chain;
pub mod client;
mod config_file;
mod error;
mod fsutil;
pub mod http;
mod identity;
mod layout;
mod placement;
mod ports;
mod process;

pub use certs::issue_client_certificate;
pub use chain::{DEFAULT_EVM_CHAIN, DEFAULT_UTXO_CHAIN, EvmChain, UtxoChain};
pub use custos_signer_node::node::FaultInjection;
pub use error::DevkitError;
pub use http::{HttpResponse, HttpTarget};
pub use identity::peer_id_of_key_file;
pub use layout::{
    ADMIN_CLIENT, APPROVER_CLIENT, AUDITOR_CLIENT, BACKEND_CLIENT, CLUSTER_FILE, ClientLayout,
    ClusterLayout, ClusterSpec, CoordinatorLayout, DEFAULT_BASE_PORT, DEFAULT_DIR, DEMO_POLICY,
    LAYOUT_FORMAT, MAX_SIGNERS, PIDS_FILE, PRESIGNATURE_POOL, PolicyLayout, SignerLayout, generate,
    install_log_key, signer_id,
};
pub use placement::Placement;
/// File name of the signer daemon.
pub const SIGNER_BIN: &str = "custos-signer";
/// File name of the coordinator daemon.
pub const COORDINATOR_BIN: &str = "custos-coordinator";

pub use ports::{cluster_ports, free_base_port, free_base_port_for, ports_free};
pub use process::{
    Cluster, CoordinatorMode, PidFile, ProcessRecord, ProcessStatus, STOP_GRACE, StartOptions,
    http_get, is_alive, process_status, stop_from_pid_file,
};
