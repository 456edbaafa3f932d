//! TLS material from PEM files, with errors naming the file.

use std::path::{Path, PathBuf};

/// A PEM file that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {what} {path}: {source}")]
pub struct PemError {
    /// Which setting ("tls.cert", ...).
    pub what: &'static str,
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|source| PemError {
        what,
        path: path.to_owned(),
        source,
    })
}

/// A certificate chain and key, as tonic wants them.
pub fn identity(
    what: &'static str,
    cert: &Path,
    key: &Path,
) -> Result<tonic::transport::Identity, PemError> {
    Ok(tonic::transport::Identity::from_pem(
        read(what, cert)?,
        read(what, key)?,
    ))
}

/// A CA certificate, as tonic wants it.
pub fn certificate(
    what: &'static str,
    path: &Path,
) -> Result<tonic::transport::Certificate, PemError> {
    Ok(tonic::transport::Certificate::from_pem(read(what, path)?))
}

/// Raw file contents (e.g. a pinned client certificate to compare against).
pub fn pem_bytes(what: &'static str, path: &Path) -> Result<Vec<u8>, PemError> {
    read(what, path)
}
