//! The control API: decode, call the node, map errors to gRPC status.

use std::sync::Arc;
use std::time::Instant;

use custos_proto::signer::signer_control_server::SignerControl;
use custos_proto::signer::*;
use tonic::{Request, Response, Status};

use custos_mpc::recovery::Recipient;

use crate::cosigner::{Cosigner, SignDecision};
use crate::error::NodeError;
use crate::fence::EpochFence;
use crate::node::{Node, PrimeState};
use crate::stages::{self, Stage};

/// gRPC adapter over a [`Node`] and its [`Cosigner`].
pub struct ControlService {
    node: Arc<Node>,
    cosigner: Arc<Cosigner>,
    allow_raw_digest: bool,
    recovery_recipient: Option<Recipient>,
    fence: Arc<EpochFence>,
}

impl ControlService {
    /// Wraps a node. `allow_raw_digest` keeps the policy-free `PartialSign`
    /// and `Sign` RPCs (development clusters only: a release build refuses
    /// them whatever it says, see [`crate::BUILD_MODE`]). Every call that
    /// changes state passes `fence` first.
    pub fn new(
        node: Arc<Node>,
        cosigner: Arc<Cosigner>,
        allow_raw_digest: bool,
        fence: Arc<EpochFence>,
    ) -> Self {
        ControlService {
            node,
            cosigner,
            allow_raw_digest,
            recovery_recipient: None,
            fence,
        }
    }

    /// Refuses a request from a fenced-off coordinator (an epoch older than
    /// one already seen); records a newer epoch durably before the request
    /// is acted on.
    async fn admit(&self, epoch: u64, call: &'static str) -> Result<(), Status> {
        let fence = self.fence.clone();
        let started = Instant::now();
        blocking(move || fence.admit(epoch))
            .await
            .inspect(|_| stages::since(Stage::Admit, started))
            .inspect_err(|e| {
                tracing::warn!(call, epoch, refusal = %e.message(), "request from a fenced coordinator refused");
            })
    }

    /// The admins' recovery key this signer seals share backups to
    /// (`[recovery] recipient`); without one it exports nothing.
    pub fn with_recovery_recipient(mut self, recipient: Option<Recipient>) -> Self {
        self.recovery_recipient = recipient;
        self
    }

    fn raw_digest_allowed(&self) -> Result<(), Status> {
        if crate::DEV_BUILD && self.allow_raw_digest {
            Ok(())
        } else {
            Err(Status::permission_denied(
                "raw-digest signing is disabled on this signer: only authorised withdrawals are signed (dev.allow_raw_digest)",
            ))
        }
    }
}

fn majority_key(node: &Node, key_id: &str) -> Result<(), NodeError> {
    crate::cosigner::check_majority_key(&node.key_meta(key_id)?)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, NodeError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(status)
}

fn status(e: NodeError) -> Status {
    let msg = e.to_string();
    match e {
        NodeError::InvalidRequest(_) => Status::invalid_argument(msg),
        NodeError::NotFound(_) => Status::not_found(msg),
        NodeError::Replay(_) => Status::already_exists(msg),
        NodeError::NotReady(_) | NodeError::KeyRetired { .. } => Status::failed_precondition(msg),
        // The peer at fault travels as metadata too, so the coordinator
        // keeps it as data instead of parsing our message.
        NodeError::PeerMisbehaved { node, .. } => {
            with_metadata(Status::aborted(msg), custos_proto::CULPRIT_HEADER, &node)
        }
        NodeError::Timeout { absent, .. } => with_metadata(
            Status::deadline_exceeded(msg),
            custos_proto::WAITING_FOR_HEADER,
            &absent.join(","),
        ),
        NodeError::PeerUnreachable { node, .. } => with_metadata(
            Status::unavailable(msg),
            custos_proto::CULPRIT_HEADER,
            &node,
        ),
        NodeError::Protocol(_) => Status::aborted(msg),
        NodeError::Refused(_)
        | NodeError::SourceMismatch { .. }
        | NodeError::RetirementUnauthorized { .. } => Status::permission_denied(msg),
        NodeError::StaleEpoch { highest, .. } => {
            let mut s = Status::failed_precondition(msg);
            s.metadata_mut().insert(
                custos_proto::FENCED_EPOCH_HEADER,
                tonic::metadata::MetadataValue::from(highest),
            );
            s
        }
        _ => Status::internal(msg),
    }
}

/// `status` with `value` under `key`; a value metadata cannot carry (node
/// ids are ASCII, so never in practice) leaves the message alone to say it.
fn with_metadata(mut status: Status, key: &'static str, value: &str) -> Status {
    if let Ok(v) = value.parse() {
        status.metadata_mut().insert(key, v);
    }
    status
}

fn digest(bytes: &[u8]) -> Result<[u8; 32], Status> {
    bytes.try_into().map_err(|_| {
        Status::invalid_argument(format!("digest must be 32 bytes, got {}", bytes.len()))
    })
}

fn u16_field(name: &str, v: u32) -> Result<u16, Status> {
    u16::try_from(v).map_err(|_| Status::invalid_argument(format!("{name} {v} out of range")))
}

#[tonic::async_trait]
impl SignerControl for ControlService {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let n = &self.node;
        let aux_groups = n.store().aux_groups().map_err(status)?;
        let state = match (n.prime_state(), aux_groups.is_empty()) {
            (PrimeState::Generating, _) => "generating-primes".to_owned(),
            (PrimeState::Failed(e), _) => format!("failed: {e}"),
            (PrimeState::Ready, true) => "primes-ready".to_owned(),
            (_, false) => "aux-ready".to_owned(),
            (PrimeState::Idle, true) => "idle".to_owned(),
        };
        Ok(Response::new(StatusResponse {
            node_id: n.node_id.clone(),
            peer_id: String::new(),
            state,
            aux_groups,
            keys: n.store().key_count().map_err(status)? as u32,
            presignatures: n.store().presig_total() as u32,
            primes_ready: u32::from(n.prime_state() == PrimeState::Ready),
            coordinator_epoch: self.fence.highest(),
            witnessed_size: self.cosigner.witness().map(|w| w.size()).unwrap_or(0),
            witness_key: self
                .cosigner
                .witness()
                .map(|w| w.verifier_key())
                .unwrap_or_default(),
            // Pruning what the log now carries rewrites refusals.json.
            unlogged_refusals: {
                let cos = self.cosigner.clone();
                blocking(move || Ok(cos.unlogged_refusals())).await?
            }
            .into_iter()
            .map(|p| SigningRefusal {
                signature: hex::decode(&p.signature).unwrap_or_default(),
                withdrawal_id: p.withdrawal_id,
                signer: p.signer,
                request: p.request,
                reason: p.reason,
                refused_at_ms: p.refused_at_ms,
            })
            .collect(),
        }))
    }

    async fn aux_info(
        &self,
        req: Request<AuxInfoRequest>,
    ) -> Result<Response<AuxInfoResponse>, Status> {
        let r = req.into_inner();
        self.admit(r.coordinator_epoch, "aux_info").await?;
        self.node
            .aux_info(&r.group_id, &r.participants)
            .await
            .map_err(status)?;
        Ok(Response::new(AuxInfoResponse {}))
    }

    async fn keygen(
        &self,
        req: Request<KeygenRequest>,
    ) -> Result<Response<KeygenResponse>, Status> {
        let r = req.into_inner();
        self.admit(r.coordinator_epoch, "keygen").await?;
        let t = u16_field("threshold", r.threshold)?;
        let scheme = if r.scheme.is_empty() {
            custos_mpc::SchemeId::EcdsaSecp256k1
        } else {
            custos_mpc::SchemeId::from_name(&r.scheme)
                .map_err(|e| Status::invalid_argument(format!("scheme: {e}")))?
        };
        let out = self
            .node
            .keygen(&r.key_id, &r.group_id, &r.participants, t, &r.nonce, scheme)
            .await
            .map_err(status)?;
        Ok(Response::new(KeygenResponse {
            public_key: out.public_key,
            public_package: out.public_package,
            scheme: scheme.name().to_owned(),
            chain_code: out.chain_code.map(|c| c.to_vec()).unwrap_or_default(),
        }))
    }

    async fn presign(
        &self,
        req: Request<PresignRequest>,
    ) -> Result<Response<PresignResponse>, Status> {
        let r = req.into_inner();
        self.admit(r.coordinator_epoch, "presign").await?;
        self.cosigner.check_not_retired(&r.key_id).map_err(status)?;
        let nonce = self
            .node
            .presign(&r.key_id, &r.presignature_id, &r.signers)
            .await
            .map_err(status)?;
        Ok(Response::new(PresignResponse { nonce_point: nonce }))
    }

    async fn partial_sign(
        &self,
        req: Request<PartialSignRequest>,
    ) -> Result<Response<PartialSignResponse>, Status> {
        self.raw_digest_allowed()?;
        let started = Instant::now();
        let r = req.into_inner();
        self.admit(r.coordinator_epoch, "partial_sign").await?;
        self.cosigner.check_not_retired(&r.key_id).map_err(status)?;
        let node = self.node.clone();
        // Unsealing and fsync are blocking work. The node checks the
        // message's length against the key's scheme.
        let partial = tokio::task::spawn_blocking(move || {
            node.partial_sign(
                &r.key_id,
                &r.presignature_id,
                &r.digest,
                &custos_mpc::DerivationPath::master(),
                &r.request_id,
            )
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(status)?;
        stages::since(Stage::Request, started);
        Ok(Response::new(PartialSignResponse {
            partial_signature: partial,
        }))
    }

    async fn sign(&self, req: Request<SignRequest>) -> Result<Response<SignResponse>, Status> {
        self.raw_digest_allowed()?;
        let r = req.into_inner();
        self.admit(r.coordinator_epoch, "sign").await?;
        self.cosigner.check_not_retired(&r.key_id).map_err(status)?;
        let d = digest(&r.digest)?;
        let sig = self
            .node
            .sign(&r.key_id, &r.signers, &d, &r.request_id)
            .await
            .map_err(status)?;
        Ok(Response::new(SignResponse {
            r: sig.r.to_vec(),
            s: sig.s.to_vec(),
        }))
    }

    async fn register_quorum(
        &self,
        req: Request<WithdrawalAuthorization>,
    ) -> Result<Response<AuthorizationAck>, Status> {
        let a = req.into_inner();
        self.admit(a.coordinator_epoch, "register_quorum").await?;
        let cos = self.cosigner.clone();
        let (statement_hash, signable_from) = blocking(move || {
            cos.register_quorum(&a)
                .inspect_err(|e| cos.record_refusal(&a, "register_quorum", e))
        })
        .await?;
        Ok(Response::new(AuthorizationAck {
            statement_hash,
            signable_from,
        }))
    }

    async fn register_quorums(
        &self,
        req: Request<QuorumRegistrations>,
    ) -> Result<Response<QuorumRegistrationResults>, Status> {
        let r = req.into_inner();
        if r.authorizations.len() > custos_proto::MAX_QUORUM_REGISTRATIONS {
            return Err(Status::invalid_argument(format!(
                "{} registrations in one batch: at most {}",
                r.authorizations.len(),
                custos_proto::MAX_QUORUM_REGISTRATIONS
            )));
        }
        if let Some(i) = r
            .authorizations
            .iter()
            .position(|a| a.coordinator_epoch != r.coordinator_epoch)
        {
            return Err(Status::invalid_argument(format!(
                "authorizations[{i}]: coordinator_epoch differs from the batch's ({})",
                r.coordinator_epoch
            )));
        }
        self.admit(r.coordinator_epoch, "register_quorums").await?;
        let cos = self.cosigner.clone();
        let results = blocking(move || {
            let answers = cos.register_quorums(&r.authorizations);
            Ok::<_, NodeError>(
                r.authorizations
                    .iter()
                    .zip(answers)
                    .map(|(a, answer)| match answer {
                        Ok((statement_hash, signable_from)) => QuorumRegistrationResult {
                            ack: Some(AuthorizationAck {
                                statement_hash,
                                signable_from,
                            }),
                            ..QuorumRegistrationResult::default()
                        },
                        Err(e) => {
                            cos.record_refusal(a, "register_quorum", &e);
                            let st = status(e);
                            QuorumRegistrationResult {
                                ack: None,
                                code: st.code() as i32,
                                message: st.message().to_owned(),
                            }
                        }
                    })
                    .collect(),
            )
        })
        .await?;
        Ok(Response::new(QuorumRegistrationResults { results }))
    }

    async fn register_cancel(
        &self,
        req: Request<CancelNotice>,
    ) -> Result<Response<AuthorizationAck>, Status> {
        let n = req.into_inner();
        let epoch = n.authorization.as_ref().map_or(0, |a| a.coordinator_epoch);
        self.admit(epoch, "register_cancel").await?;
        let cos = self.cosigner.clone();
        blocking(move || cos.register_cancel(&n)).await?;
        Ok(Response::new(AuthorizationAck::default()))
    }

    async fn sign_withdrawal(
        &self,
        req: Request<SignWithdrawalRequest>,
    ) -> Result<Response<PartialSignResponse>, Status> {
        let started = Instant::now();
        let mut r = req.into_inner();
        let a = r
            .authorization
            .take()
            .ok_or_else(|| Status::invalid_argument("authorization: missing"))?;
        self.admit(a.coordinator_epoch, "sign_withdrawal").await?;
        let cos = self.cosigner.clone();
        let node = self.node.clone();
        let partial = blocking(move || {
            sign_withdrawal(&node, &cos, &r, &a)
                .inspect_err(|e| cos.record_refusal(&a, "sign_withdrawal", e))
        })
        .await?;
        stages::since(Stage::Request, started);
        Ok(Response::new(PartialSignResponse {
            partial_signature: partial,
        }))
    }

    async fn cosign(
        &self,
        req: Request<CosignRequest>,
    ) -> Result<Response<CosignResponse>, Status> {
        let r = req.into_inner();
        self.admit(r.coordinator_epoch, "cosign").await?;
        let cos = self.cosigner.clone();
        let line = blocking(move || {
            let w = cos
                .witness()
                .ok_or_else(|| NodeError::NotReady("no audit log key configured".into()))?;
            let proof = r
                .consistency_proof
                .iter()
                .map(|h| {
                    h.as_slice().try_into().map_err(|_| {
                        NodeError::InvalidRequest("consistency proof hash length".into())
                    })
                })
                .collect::<Result<Vec<custos_audit::Hash>, _>>()?;
            let now = u64::try_from(cos.clock().now_secs()).unwrap_or(0);
            w.cosign(&r.checkpoint, &proof, r.from_size, now, &r.entries)
        })
        .await?;
        Ok(Response::new(CosignResponse {
            cosignatures: vec![line],
        }))
    }

    async fn export_share(
        &self,
        req: Request<ExportShareRequest>,
    ) -> Result<Response<ExportShareResponse>, Status> {
        let r = req.into_inner();
        self.admit(r.coordinator_epoch, "export_share").await?;
        let configured = self.recovery_recipient.ok_or_else(|| {
            Status::failed_precondition(
                "this signer has no recovery key configured ([recovery] recipient): it exports no share",
            )
        })?;
        let asked = Recipient::parse(&r.recipient)
            .map_err(|e| Status::invalid_argument(format!("recipient: {e}")))?;
        if asked != configured {
            return Err(Status::permission_denied(format!(
                "recipient {} is not this signer's recovery key (fingerprint {}): refused",
                asked.fingerprint(),
                configured.fingerprint()
            )));
        }
        let node = self.node.clone();
        let now_ms = self.cosigner.clock().now_ms();
        let backup = blocking(move || node.export_share(&r.key_id, &configured, now_ms)).await?;
        let json = backup
            .to_json()
            .map_err(|e| Status::internal(e.to_string()))?;
        tracing::warn!(
            key_id = %backup.header.key_id,
            recipient = %configured.fingerprint(),
            backup = %hex::encode(backup.ciphertext_hash()),
            "share exported, sealed to the recovery key"
        );
        Ok(Response::new(ExportShareResponse { backup_json: json }))
    }

    async fn refresh_shares(
        &self,
        req: Request<RefreshSharesRequest>,
    ) -> Result<Response<RefreshSharesResponse>, Status> {
        let r = req.into_inner();
        self.admit(r.coordinator_epoch, "refresh_shares").await?;
        let out = self
            .node
            .refresh(&r.key_id, &r.participants, &r.nonce, r.generation)
            .await
            .map_err(status)?;
        Ok(Response::new(RefreshSharesResponse {
            public_key: out.public_key,
            public_package: out.public_package,
            generation: r.generation,
        }))
    }

    async fn repair_share(
        &self,
        req: Request<RepairShareRequest>,
    ) -> Result<Response<RepairShareResponse>, Status> {
        let r = req.into_inner();
        self.admit(r.coordinator_epoch, "repair_share").await?;
        let record = crate::node::RepairRecord {
            scheme: r.scheme,
            group_id: r.group_id,
            threshold: u16_field("threshold", r.threshold)?,
            participants: r.participants,
            public_package: r.public_package,
            generation: r.generation,
        };
        let package = self
            .node
            .repair(&r.key_id, &r.helpers, &r.lost, &r.nonce, &record)
            .await
            .map_err(status)?;
        Ok(Response::new(RepairShareResponse {
            public_package: package,
        }))
    }

    async fn retire_key(
        &self,
        req: Request<RetireKeyRequest>,
    ) -> Result<Response<RetireKeyResponse>, Status> {
        self.retire(req.into_inner()).await.map(Response::new)
    }
}

impl ControlService {
    /// `RetireKey`: this signer's own check of the retirement (the admin
    /// quorum's signed policy listing the key, activated by the log it
    /// witnessed, and the log's `key_retired` entry), then the destruction
    /// of its share and pool.
    async fn retire(&self, r: RetireKeyRequest) -> Result<RetireKeyResponse, Status> {
        self.admit(r.coordinator_epoch, "retire_key").await?;
        let cos = self.cosigner.clone();
        let node = self.node.clone();
        let (retirement, destroyed) = blocking(move || {
            node.retire_key(&cos, &r.key_id, &r.policy_document, &r.policy_signatures)
        })
        .await?;
        Ok(RetireKeyResponse {
            retirement_index: retirement.retirement_index,
            shares_destroyed: u32::try_from(destroyed.shares).unwrap_or(u32::MAX),
            presignatures_destroyed: u32::try_from(destroyed.presignatures).unwrap_or(u32::MAX),
        })
    }
}

/// The checks and the partial signature of one `SignWithdrawal`.
fn sign_withdrawal(
    node: &Node,
    cos: &Cosigner,
    r: &SignWithdrawalRequest,
    a: &WithdrawalAuthorization,
) -> Result<Vec<u8>, NodeError> {
    // Before anything else: a minority key never signs a withdrawal, so
    // what the request claims is not even read. (An unknown key is left to
    // the checks below, which name what is wrong.)
    match node.key_meta(&r.key_id) {
        Ok(meta) => crate::cosigner::check_majority_key(&meta)?,
        Err(NodeError::NotFound(_)) => {}
        Err(e) => return Err(e),
    }
    let checking = Instant::now();
    let (decision, _serialised) = cos.authorize_signing(a, &r.presignature_id)?;
    stages::since(Stage::Checks, checking);
    match decision {
        SignDecision::Repeat(p) => Ok(p),
        SignDecision::Issue(v) => {
            if r.key_id != v.withdrawal.wallet {
                return Err(NodeError::Refused(format!(
                    "key {} is not the key of wallet {}",
                    r.key_id, v.withdrawal.wallet
                )));
            }
            majority_key(node, &r.key_id)?;
            let usage = match &v.replaces {
                None if v.input > 0 => format!(
                    "withdrawal={} input={} statement={}",
                    v.withdrawal.id, v.input, v.statement_hash
                ),
                None => format!(
                    "withdrawal={} statement={}",
                    v.withdrawal.id, v.statement_hash
                ),
                Some(old) if v.bump_approvers.is_empty() => format!(
                    "withdrawal={} statement={} fee-bump-of={old}",
                    v.withdrawal.id, v.statement_hash
                ),
                Some(old) => format!(
                    "withdrawal={} statement={} fee-bump-of={old} fee-bump-approved-by={}",
                    v.withdrawal.id,
                    v.statement_hash,
                    v.bump_approvers.join(",")
                ),
            };
            // The child key of a derived source, from the path this signer
            // checked against the approved address itself (Cosigner::verify).
            let path = match &v.withdrawal.source {
                None => custos_mpc::DerivationPath::master(),
                Some(source) => {
                    crate::cosigner::derived::source_path(&v.withdrawal.wallet, source)?
                }
            };
            let partial =
                node.partial_sign(&r.key_id, &r.presignature_id, &v.message, &path, &usage)?;
            // Recorded before it leaves: velocity and replay see it even after a crash.
            let journaling = Instant::now();
            cos.record_signed(&v, &r.presignature_id, &partial)?;
            stages::since(Stage::Journal, journaling);
            Ok(partial)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(st: &Status, key: &str) -> Option<String> {
        st.metadata()
            .get(key)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// The peer at fault travels as metadata beside the message.
    #[test]
    fn an_answer_names_the_peer_at_fault() {
        let st = status(NodeError::PeerMisbehaved {
            node: "signer-3".into(),
            reason: "malformed protocol message".into(),
        });
        assert_eq!(st.code(), tonic::Code::Aborted);
        assert_eq!(
            header(&st, custos_proto::CULPRIT_HEADER).as_deref(),
            Some("signer-3")
        );
        let st = status(NodeError::Timeout {
            secs: 2,
            absent: vec!["signer-2".into(), "signer-3".into()],
        });
        assert_eq!(st.code(), tonic::Code::DeadlineExceeded);
        assert_eq!(
            header(&st, custos_proto::WAITING_FOR_HEADER).as_deref(),
            Some("signer-2,signer-3")
        );
        let st = status(NodeError::PeerUnreachable {
            node: "signer-2".into(),
            reason: "connection refused".into(),
        });
        assert_eq!(st.code(), tonic::Code::Unavailable);
        assert_eq!(
            header(&st, custos_proto::CULPRIT_HEADER).as_deref(),
            Some("signer-2")
        );
        let st = status(NodeError::Refused("time lock".into()));
        assert_eq!(header(&st, custos_proto::CULPRIT_HEADER), None);
    }
}
