//! The `custos.v1.Custody` gRPC service: decode, call the cluster, map errors.

use std::sync::Arc;

use custos_proto::custody::custody_server::Custody;
use custos_proto::custody::*;
use tonic::{Request, Response, Status};

use crate::cluster::Cluster;
use crate::db::KeyRow;
use crate::error::CoordError;

/// gRPC adapter over the [`Cluster`].
pub struct CustodyService {
    cluster: Arc<Cluster>,
}

impl CustodyService {
    /// Wraps the cluster.
    pub fn new(cluster: Arc<Cluster>) -> Self {
        CustodyService { cluster }
    }
}

/// Maps domain errors to gRPC codes.
pub fn status(e: CoordError) -> Status {
    let msg = e.to_string();
    match e {
        CoordError::InvalidArgument(_) => Status::invalid_argument(msg),
        CoordError::NotFound(_) => Status::not_found(msg),
        CoordError::AlreadyExists(_) => Status::already_exists(msg),
        CoordError::FailedPrecondition(_) => Status::failed_precondition(msg),
        CoordError::Unavailable(_) => Status::unavailable(msg),
        CoordError::Aborted(_) => Status::aborted(msg),
        CoordError::DeadlineExceeded(_) => Status::deadline_exceeded(msg),
        _ => Status::internal(msg),
    }
}

async fn to_key(cluster: &Cluster, k: KeyRow) -> Key {
    let ready = cluster
        .db
        .ready_presigs(&k.key_id)
        .await
        .map(|v| v.len() as u32)
        .unwrap_or(0);
    Key {
        key_id: k.key_id,
        curve: Curve::Secp256k1 as i32,
        threshold: u32::from(k.threshold),
        participants: k.participants,
        public_key: k.public_key.unwrap_or_default(),
        ethereum_address: k.eth_address.unwrap_or_default(),
        created_at: k.created_at,
        presignatures_ready: ready,
    }
}

#[tonic::async_trait]
impl Custody for CustodyService {
    async fn create_key(&self, req: Request<CreateKeyRequest>) -> Result<Response<Key>, Status> {
        let r = req.into_inner();
        match Curve::try_from(r.curve) {
            Ok(Curve::Secp256k1) | Ok(Curve::Unspecified) => {}
            _ => {
                return Err(Status::invalid_argument(format!(
                    "curve: unsupported value {}",
                    r.curve
                )));
            }
        }
        let t = u16::try_from(r.threshold).map_err(|_| {
            Status::invalid_argument(format!("threshold: {} out of range", r.threshold))
        })?;
        let key = self
            .cluster
            .create_key(&r.key_id, t)
            .await
            .map_err(status)?;
        Ok(Response::new(to_key(&self.cluster, key).await))
    }

    async fn get_key(&self, req: Request<GetKeyRequest>) -> Result<Response<Key>, Status> {
        let id = req.into_inner().key_id;
        crate::cluster::validate_id("key_id", &id).map_err(status)?;
        let key = self
            .cluster
            .db
            .key(&id)
            .await
            .map_err(status)?
            .ok_or_else(|| Status::not_found(format!("key {id}")))?;
        Ok(Response::new(to_key(&self.cluster, key).await))
    }

    async fn list_keys(
        &self,
        _: Request<ListKeysRequest>,
    ) -> Result<Response<ListKeysResponse>, Status> {
        let mut keys = Vec::new();
        for k in self.cluster.db.keys().await.map_err(status)? {
            keys.push(to_key(&self.cluster, k).await);
        }
        Ok(Response::new(ListKeysResponse { keys }))
    }

    async fn sign_digest(
        &self,
        req: Request<SignDigestRequest>,
    ) -> Result<Response<SignDigestResponse>, Status> {
        let r = req.into_inner();
        let o = self
            .cluster
            .sign_digest(&r.key_id, &r.digest, &r.request_id, r.interactive)
            .await
            .map_err(status)?;
        Ok(Response::new(SignDigestResponse {
            r: o.r.to_vec(),
            s: o.s.to_vec(),
            recovery_id: u32::from(o.recovery_id),
            signers: o.signers,
            mode: o.mode,
            presignature_id: o.presig_id,
            signing_micros: o.elapsed.as_micros() as u64,
        }))
    }

    async fn get_cluster_status(
        &self,
        _: Request<GetClusterStatusRequest>,
    ) -> Result<Response<ClusterStatus>, Status> {
        let c = &self.cluster;
        let signers = c
            .signers
            .all
            .iter()
            .map(|s| {
                let h = s.health();
                SignerStatus {
                    node_id: s.endpoint.node_id.clone(),
                    endpoint: s.endpoint.endpoint.clone(),
                    reachable: h.reachable,
                    state: h.state,
                    error: h.error,
                }
            })
            .collect();
        Ok(Response::new(ClusterStatus {
            signers,
            threshold: 0,
            aux_info: c.aux_state(),
            keys: c.db.keys().await.map_err(status)?.len() as u32,
            presignatures_ready: c.db.ready_presig_total().await.map_err(status)?,
        }))
    }
}
