//! Generates and runs a local Custos cluster on loopback: a dev CA and TLS
//! certificates, libp2p identities, sealer passphrases, `signer.toml` and
//! `coordinator.toml`, then the `custos-signer-N` and `custos-coordinator`
//! processes. Used by `custos dev up/down/status` and the end-to-end tests.
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
//! Development only: the CA key sits next to the certificates it signs.
#![deny(missing_docs)]

mod certs;
pub mod client;
mod error;
mod fsutil;
mod identity;
mod layout;
mod ports;
mod process;

pub use error::DevkitError;
pub use identity::peer_id_of_key_file;
pub use layout::{
    CLUSTER_FILE, ClusterLayout, ClusterSpec, CoordinatorLayout, DEFAULT_BASE_PORT, DEFAULT_DIR,
    LAYOUT_FORMAT, MAX_SIGNERS, PIDS_FILE, PRESIGNATURE_POOL, SignerLayout, generate, signer_id,
};
pub use ports::{cluster_ports, free_base_port, free_base_port_for, ports_free};
pub use process::{
    COORDINATOR_BIN, Cluster, CoordinatorMode, PidFile, ProcessRecord, ProcessStatus, SIGNER_BIN,
    STOP_GRACE, StartOptions, http_get, is_alive, process_status, stop_from_pid_file,
};
