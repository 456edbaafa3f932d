//! The one error type of the crate.

use std::path::PathBuf;

/// Everything that can go wrong generating or running a dev cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevkitError {
    /// The [`ClusterSpec`](crate::ClusterSpec) is unusable.
    #[error("invalid cluster spec: {0}")]
    InvalidSpec(String),
    /// A file or directory operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done ("cannot write", "cannot read", ...).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Certificate or TLS key generation/parsing failed.
    #[error("certificate {}: {message}", path.display())]
    Cert {
        /// The certificate or key file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A libp2p identity key file is unusable.
    #[error("p2p identity {}: {message}", path.display())]
    Identity {
        /// The key file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A generated or loaded file (TOML/JSON) could not be (de)serialised.
    #[error("{}: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// `cluster.json` is missing: no layout was generated in this directory.
    #[error("no dev cluster in {} (cluster.json missing): run `custos dev up` first", dir.display())]
    NoLayout {
        /// The cluster directory.
        dir: PathBuf,
    },
    /// A daemon binary is missing.
    #[error("`{name}` not found at {}: build it with `cargo build --workspace`", path.display())]
    MissingBinary {
        /// Binary name, e.g. `custos-signer`.
        name: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// Processes of a previous start of this cluster directory are still alive.
    #[error(
        "the dev cluster in {} is already running ({alive} processes alive): `custos dev down --dir {0}` first",
        dir.display()
    )]
    AlreadyRunning {
        /// The cluster directory.
        dir: PathBuf,
        /// How many of its processes are alive.
        alive: usize,
    },
    /// A port the cluster needs is already taken.
    #[error(
        "{name}: {addr} is already in use (another dev cluster? run `custos dev down` or pick another base port)"
    )]
    PortInUse {
        /// Process that needs the port.
        name: String,
        /// The address.
        addr: std::net::SocketAddr,
    },
    /// A process could not be spawned.
    #[error("cannot spawn {name} ({}): {source}", binary.display())]
    Spawn {
        /// Process name, e.g. `signer-1`.
        name: String,
        /// The binary.
        binary: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A process exited while the cluster was starting.
    #[error("{name} exited during start ({status}); log {}:\n{tail}", log.display())]
    ProcessExited {
        /// Process name.
        name: String,
        /// Exit status as text.
        status: String,
        /// Its log file.
        log: PathBuf,
        /// The last lines of its log.
        tail: String,
    },
    /// A process did not open its port in time.
    #[error("{name} did not accept connections on {addr} within {secs} s; log {}:\n{tail}", log.display())]
    StartTimeout {
        /// Process name.
        name: String,
        /// The address waited for.
        addr: std::net::SocketAddr,
        /// The timeout.
        secs: u64,
        /// Its log file.
        log: PathBuf,
        /// The last lines of its log.
        tail: String,
    },
    /// The policy document (or a demo admin key) to install is unusable.
    #[error("policy {}: {message}", path.display())]
    Policy {
        /// The document (or key).
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// `custos-coordinator log-key` did not give the audit-log verifier key.
    #[error("cannot get the audit-log key from {}: {message}", binary.display())]
    LogKey {
        /// The coordinator binary.
        binary: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// No process of that name in this cluster.
    #[error("unknown node {0:?}")]
    UnknownNode(String),
    /// Sending a signal failed.
    #[error("cannot signal pid {pid}: {message}")]
    Signal {
        /// The process id.
        pid: u32,
        /// What went wrong.
        message: String,
    },
}

impl DevkitError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> DevkitError {
        let path = path.into();
        move |source| DevkitError::Io {
            action,
            path,
            source,
        }
    }
}
