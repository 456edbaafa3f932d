//! An authenticated gRPC client of a local cluster's coordinator.

use std::time::Duration;

use custos_proto::custody::custody_client::CustodyClient;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::ClusterLayout;

/// Adds the admin bearer token to every call.
#[derive(Clone)]
pub struct BearerToken(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl Interceptor for BearerToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// The coordinator client type.
pub type Client = CustodyClient<InterceptedService<Channel, BearerToken>>;

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to the coordinator at {url}: {reason}")]
pub struct ConnectError {
    /// Coordinator URL.
    pub url: String,
    /// Why.
    pub reason: String,
}

/// Connects to the cluster's coordinator over TLS with the admin token.
pub async fn connect(layout: &ClusterLayout) -> Result<Client, ConnectError> {
    let url = layout.coordinator.url.clone();
    let err = |reason: String| ConnectError {
        url: url.clone(),
        reason,
    };
    let ca = std::fs::read(&layout.ca_cert)
        .map_err(|e| err(format!("CA {}: {e}", layout.ca_cert.display())))?;
    let token = std::fs::read_to_string(&layout.coordinator.admin_token_file).map_err(|e| {
        err(format!(
            "admin token {}: {e}",
            layout.coordinator.admin_token_file.display()
        ))
    })?;
    let value = format!("Bearer {}", token.trim())
        .parse()
        .map_err(|_| err("admin token is not ASCII".into()))?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    let channel = Endpoint::from_shared(url.clone())
        .map_err(|e| err(e.to_string()))?
        .tls_config(tls)
        .map_err(|e| err(e.to_string()))?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| err(format!("{e} (is the cluster up? `custos dev up`)")))?;
    Ok(CustodyClient::with_interceptor(channel, BearerToken(value))
        .max_decoding_message_size(16 * 1024 * 1024))
}
