//! A small HTTP/1.0 client for the daemons' HTTP listeners: the
//! coordinator's API over TLS (server certificate checked against a CA, as
//! the gRPC clients do) and the metrics listeners in plain HTTP.
//!
//! One request per connection (`Connection: close`): what the CLI, the
//! tests and health checks need, with no HTTP client crate.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{ClusterLayout, DevkitError};

/// Where requests go: `host:port`, and the TLS settings if any.
#[derive(Clone)]
pub struct HttpTarget {
    addr: String,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    timeout: Duration,
}

impl std::fmt::Debug for HttpTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTarget")
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

/// An answer: status, headers (names in lower case) and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// Body, as text.
    pub body: String,
}

impl HttpResponse {
    /// The first header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl HttpTarget {
    /// Plain HTTP to `addr` (`host:port`): the metrics listeners.
    pub fn plain(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            tls: None,
            timeout: Duration::from_secs(60),
        }
    }

    /// HTTPS to `addr`, trusting the CA certificate `ca` (PEM) for a server
    /// certificate naming `server_name`.
    pub fn tls(addr: impl Into<String>, ca: &Path, server_name: &str) -> Result<Self, DevkitError> {
        let cert_err = |message: String| DevkitError::Cert {
            path: ca.to_path_buf(),
            message,
        };
        let pem = std::fs::read(ca).map_err(DevkitError::io("cannot read", ca))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| cert_err(format!("not a PEM certificate: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| cert_err(format!("not a usable CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(cert_err("no CERTIFICATE block".into()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| cert_err(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| cert_err(format!("server name {server_name:?}: {e}")))?;
        Ok(Self {
            addr: addr.into(),
            tls: Some((Arc::new(config), name)),
            timeout: Duration::from_secs(60),
        })
    }

    /// `https://host:port` (with `ca`, checked for `host`) or `http://host:port`.
    pub fn from_url(url: &str, ca: Option<&Path>) -> Result<Self, DevkitError> {
        let bad = |message: String| DevkitError::Format {
            path: PathBuf::from(url),
            message,
        };
        if let Some(rest) = url.strip_prefix("https://") {
            let addr = rest.trim_end_matches('/');
            let ca = ca
                .ok_or_else(|| bad("an https URL needs the CA certificate of the server".into()))?;
            let host = match addr.rsplit_once(':') {
                Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
                None => addr,
            };
            Self::tls(addr, ca, host)
        } else if let Some(rest) = url.strip_prefix("http://") {
            Ok(Self::plain(rest.trim_end_matches('/')))
        } else {
            Err(bad("expected an https:// or http:// URL".into()))
        }
    }

    /// A dev cluster's coordinator API: its `http_url`, the cluster's CA,
    /// the name `localhost` (as the gRPC clients check).
    pub fn coordinator_api(layout: &ClusterLayout) -> Result<Self, DevkitError> {
        let url = &layout.coordinator.http_url;
        match url.strip_prefix("https://") {
            Some(rest) => Self::tls(rest.trim_end_matches('/'), &layout.ca_cert, "localhost"),
            None => Self::from_url(url, None),
        }
    }

    /// The same target with another time limit per request (default 60 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// `https://addr` or `http://addr`, for messages.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Sends `method path` with `headers` and `body` (a `Content-Length` is
    /// added when there is a body or the method is POST) and reads the answer.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<HttpResponse, DevkitError> {
        let label = PathBuf::from(format!("{}{path}", self.url()));
        let mut head = format!(
            "{method} {path} HTTP/1.0\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !body.is_empty() || method == "POST" {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect(&self.addr).await?;
            match &self.tls {
                None => exchange(tcp, head.as_bytes(), body).await,
                Some((config, name)) => {
                    let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
                    let tls = connector.connect(name.clone(), tcp).await?;
                    exchange(tls, head.as_bytes(), body).await
                }
            }
        };
        let raw = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer in {:?}", self.timeout),
                )
            })
            .and_then(|r| r)
            .map_err(DevkitError::io("cannot fetch", label.clone()))?;
        parse(&raw).ok_or_else(|| DevkitError::Format {
            path: label,
            message: format!(
                "not an HTTP response: {:?}",
                String::from_utf8_lossy(&raw)
                    .lines()
                    .next()
                    .unwrap_or_default()
            ),
        })
    }
}

async fn exchange(
    mut io: impl AsyncRead + AsyncWrite + Unpin,
    head: &[u8],
    body: &[u8],
) -> std::io::Result<Vec<u8>> {
    io.write_all(head).await?;
    io.write_all(body).await?;
    io.flush().await?;
    let mut buf = Vec::new();
    match io.read_to_end(&mut buf).await {
        Ok(_) => Ok(buf),
        // A TLS server that closes without close_notify after a complete
        // answer (HTTP/1.0, Connection: close): keep what arrived.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => Ok(buf),
        Err(e) => Err(e),
    }
}

fn parse(raw: &[u8]) -> Option<HttpResponse> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some(HttpResponse {
        status,
        headers,
        body: body.to_owned(),
    })
}
