//! mTLS clients of the signer group and their last known health.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use custos_proto::signer::StatusRequest;
use custos_proto::signer::signer_control_client::SignerControlClient;
use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::error::CoordError;
use crate::leadership::Leadership;
use custos_proto::FENCED_EPOCH_HEADER;

/// The newer epoch a signer's refusal names, if it refused this
/// coordinator as fenced.
pub fn fenced_epoch(status: &tonic::Status) -> Option<u64> {
    status
        .metadata()
        .get(FENCED_EPOCH_HEADER)?
        .to_str()
        .ok()?
        .parse::<u64>()
        .ok()
}

/// The peer a signer's error names as at fault (`custos-culprit`), if any.
pub fn reported_culprit(status: &tonic::Status) -> Option<String> {
    let v = status
        .metadata()
        .get(custos_proto::CULPRIT_HEADER)?
        .to_str()
        .ok()?;
    (!v.is_empty()).then(|| v.to_owned())
}

/// The peers a signer's timeout says it waited for (`custos-waiting-for`).
pub fn reported_waiting_for(status: &tonic::Status) -> Vec<String> {
    status
        .metadata()
        .get(custos_proto::WAITING_FOR_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(',')
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// One signer, as `[[signers]]` in the coordinator's config names it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignerEndpoint {
    /// Its node id.
    pub node_id: String,
    /// Control API URL, `https://host:port`.
    pub endpoint: String,
    /// Name in its certificate.
    pub tls_name: String,
}

/// Last observed state of a signer.
#[derive(Clone, Debug, Default)]
pub struct Health {
    /// Answered the last probe or call.
    pub reachable: bool,
    /// Its reported state (`aux-ready`, `generating-primes`, ...).
    pub state: String,
    /// Why it is unreachable.
    pub error: String,
    /// Aux-info groups it holds.
    pub aux_groups: Vec<String>,
    /// Its audit-log witness key (C2SP note key line), once seen.
    pub witness_key: String,
    /// Size of the last log checkpoint it co-signed, as it reported it.
    pub witnessed_size: u64,
    /// Refusals it signed that it has not yet witnessed in the log.
    pub unlogged_refusals: Vec<custos_proto::signer::SigningRefusal>,
}

/// One signer.
pub struct Signer {
    /// Config entry.
    pub endpoint: SignerEndpoint,
    client: SignerControlClient<Channel>,
    health: Mutex<(Health, Option<Instant>)>,
    leadership: Arc<Leadership>,
}

impl Signer {
    /// A client for calls (cheap clone of a multiplexed channel).
    pub fn client(&self) -> SignerControlClient<Channel> {
        self.client.clone()
    }

    /// Last known health.
    pub fn health(&self) -> Health {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    /// A refusal naming a newer coordinator epoch than ours ends our
    /// leadership; returns that epoch.
    pub fn fenced(&self, status: &tonic::Status) -> Option<u64> {
        let highest = fenced_epoch(status)?;
        self.leadership.fenced_by(highest);
        Some(highest)
    }

    /// Records that a call failed at the transport level.
    pub fn mark_unreachable(&self, error: &str) {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        h.0.reachable = false;
        h.0.error = error.to_owned();
        h.1 = Some(Instant::now());
    }

    /// Probes the signer now.
    pub async fn probe(&self) -> Health {
        let mut client = self.client();
        let mut req = tonic::Request::new(StatusRequest {});
        req.set_timeout(Duration::from_millis(1500));
        let res = tokio::time::timeout(Duration::from_millis(2000), client.status(req)).await;
        let h = match res {
            Ok(Ok(r)) => {
                let r = r.into_inner();
                Health {
                    reachable: true,
                    state: r.state,
                    error: String::new(),
                    aux_groups: r.aux_groups,
                    witness_key: r.witness_key,
                    witnessed_size: r.witnessed_size,
                    unlogged_refusals: r.unlogged_refusals,
                }
            }
            Ok(Err(s)) => Health {
                reachable: false,
                state: String::new(),
                error: s.message().to_owned(),
                ..Health::default()
            },
            Err(_) => Health {
                reachable: false,
                state: String::new(),
                error: "status probe timed out".into(),
                ..Health::default()
            },
        };
        *self.health.lock().unwrap_or_else(|p| p.into_inner()) = (h.clone(), Some(Instant::now()));
        h
    }
}

#[cfg(test)]
impl Signer {
    /// A signer whose channel is never connected: tests hand the code under
    /// test calls of their own that answer for it. Needs a tokio runtime.
    pub(crate) fn unconnected(node_id: &str) -> Arc<Signer> {
        let channel = Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        Arc::new(Signer {
            endpoint: SignerEndpoint {
                node_id: node_id.to_owned(),
                endpoint: "http://127.0.0.1:1".to_owned(),
                tls_name: node_id.to_owned(),
            },
            client: SignerControlClient::new(channel),
            health: Mutex::new((Health::default(), None)),
            leadership: Arc::new(Leadership::acquired(
                1,
                Instant::now() + Duration::from_secs(3600),
            )),
        })
    }
}

/// The signer group.
pub struct Signers {
    /// In config order.
    pub all: Vec<Arc<Signer>>,
    by_id: HashMap<String, Arc<Signer>>,
    leadership: Arc<Leadership>,
}

impl Signers {
    /// Builds lazy mTLS channels (unreachable signers do not block start).
    /// Every request that changes a signer's state carries `leadership`'s
    /// epoch, and none is sent once it is lost ([`Signers::epoch`]).
    pub fn new(
        endpoints: &[SignerEndpoint],
        ca: Certificate,
        identity: Identity,
        leadership: Arc<Leadership>,
    ) -> Result<Signers, CoordError> {
        let mut all = Vec::new();
        for e in endpoints {
            let tls = ClientTlsConfig::new()
                .ca_certificate(ca.clone())
                .identity(identity.clone())
                .domain_name(e.tls_name.clone());
            let channel = Endpoint::from_shared(e.endpoint.clone())
                .map_err(|err| {
                    CoordError::invalid(
                        format!("signers endpoint {:?}", e.endpoint),
                        err.to_string(),
                    )
                })?
                .tls_config(tls)
                .map_err(|err| {
                    CoordError::invalid(format!("signers tls for {}", e.node_id), err.to_string())
                })?
                .connect_timeout(Duration::from_secs(1))
                .tcp_nodelay(true)
                .connect_lazy();
            let client =
                SignerControlClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
            all.push(Arc::new(Signer {
                endpoint: e.clone(),
                client,
                health: Mutex::new((Health::default(), None)),
                leadership: leadership.clone(),
            }));
        }
        let by_id = all
            .iter()
            .map(|s| (s.endpoint.node_id.clone(), s.clone()))
            .collect();
        Ok(Signers {
            all,
            by_id,
            leadership,
        })
    }

    /// The epoch to send with a request, or `Unavailable` once this
    /// coordinator no longer leads: then nothing is sent.
    pub fn epoch(&self) -> Result<u64, CoordError> {
        self.leadership.check()
    }

    /// This coordinator's leadership.
    pub fn leadership(&self) -> &Arc<Leadership> {
        &self.leadership
    }

    /// A signer by node id.
    pub fn get(&self, node_id: &str) -> Option<&Arc<Signer>> {
        self.by_id.get(node_id)
    }

    /// Node ids in config order, sorted (the group's index order).
    pub fn group(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .all
            .iter()
            .map(|s| s.endpoint.node_id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Probes every signer concurrently.
    pub async fn probe_all(&self) -> Vec<(String, Health)> {
        let probes = self
            .all
            .iter()
            .map(|s| async move { (s.endpoint.node_id.clone(), s.probe().await) });
        futures::future::join_all(probes).await
    }

    /// Keeps health fresh, every second, for as long as it is polled (the
    /// daemon drops it at shutdown: a probe has nothing worth finishing).
    pub async fn probe_forever(self: Arc<Self>) {
        loop {
            self.probe_all().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_fenced_refusal_names_the_newer_epoch() {
        let mut st = tonic::Status::failed_precondition(
            "coordinator epoch 1 older than 2: a newer coordinator leads, request refused",
        );
        assert_eq!(fenced_epoch(&st), None);
        st.metadata_mut().insert(
            FENCED_EPOCH_HEADER,
            tonic::metadata::MetadataValue::from(2u64),
        );
        assert_eq!(fenced_epoch(&st), Some(2));
        // Any other refusal (a policy refusal) leaves the leadership alone.
        let l = Leadership::acquired(1, Instant::now() + Duration::from_secs(60));
        l.fenced_by(fenced_epoch(&st).unwrap());
        assert!(!l.is_active());
        assert!(fenced_epoch(&tonic::Status::permission_denied("time lock")).is_none());
    }
}
