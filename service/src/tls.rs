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

/// A server identity whose private key the caller has read (e.g. unsealed).
pub fn identity_with_key(
    what: &'static str,
    cert: &Path,
    key_pem: &[u8],
) -> Result<tonic::transport::Identity, PemError> {
    Ok(tonic::transport::Identity::from_pem(
        read(what, cert)?,
        key_pem,
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

/// TLS material that could not be turned into a server configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error(transparent)]
    Read(#[from] PemError),
    /// A file holds no usable PEM object of the expected kind.
    #[error("{what} {path}: {message}")]
    Pem {
        /// Which setting ("tls.cert", ...).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// rustls refused the certificate and key (e.g. they do not match).
    #[error("{what}: {message}")]
    Config {
        /// Which settings.
        what: &'static str,
        /// rustls' reason.
        message: String,
    },
}

/// A rustls server configuration for the daemons' HTTP listeners, from the
/// same certificate chain and key files as their gRPC listener (TLS 1.2 and
/// 1.3, ring, no client authentication: callers present API tokens).
pub fn server_config(
    what: &'static str,
    cert: &Path,
    key: &Path,
) -> Result<std::sync::Arc<rustls::ServerConfig>, TlsError> {
    server_config_with_key(what, cert, key, &read(what, key)?)
}

/// [`server_config`] with the key already read (e.g. unsealed) from `key`.
pub fn server_config_with_key(
    what: &'static str,
    cert: &Path,
    key: &Path,
    key_pem: &[u8],
) -> Result<std::sync::Arc<rustls::ServerConfig>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let pem_err = |path: &Path, message: String| TlsError::Pem {
        what,
        path: path.to_owned(),
        message,
    };
    let chain = CertificateDer::pem_slice_iter(&read(what, cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(cert, format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(pem_err(cert, "no CERTIFICATE block".into()));
    }
    let key_der = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| pem_err(key, format!("no usable private key: {e}")))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key_der))
        .map_err(|e| TlsError::Config {
            what,
            message: e.to_string(),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(std::sync::Arc::new(config))
}
