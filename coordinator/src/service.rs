//! The `custos.v1.Custody` gRPC service: decode, call the cluster, map errors.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use custos_audit::EntryBody;
use custos_proto::custody::custody_server::Custody;
use custos_proto::custody::*;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::audit::AuditTrail;
use crate::auth::{Role, identity};
use crate::cluster::Cluster;
use crate::custody::{CustodyApi, audit_error, rfc3339_ms};
use crate::db::KeyRow;
use crate::edge::status;
use crate::rotation::{RotationReport, Rotations};
use crate::withdrawal::{CreateRequest, Engine};

/// gRPC adapter over the [`Cluster`] and the withdrawal [`Engine`].
pub struct CustodyService {
    cluster: Arc<Cluster>,
    api: CustodyApi,
    audit: Arc<AuditTrail>,
    rotations: Rotations,
    allow_sign_digest: bool,
}

impl CustodyService {
    /// Wraps the domain. Without an engine (no policy configured) the
    /// withdrawal API answers FAILED_PRECONDITION.
    pub fn new(
        cluster: Arc<Cluster>,
        engine: Option<Arc<Engine>>,
        audit: Arc<AuditTrail>,
        allow_sign_digest: bool,
    ) -> Self {
        CustodyService {
            rotations: Rotations::new(cluster.clone(), engine.clone(), audit.clone()),
            api: CustodyApi::new(cluster.clone(), engine, audit.clone()),
            cluster,
            audit,
            allow_sign_digest,
        }
    }

    /// The key `key_id` (validated), or NOT_FOUND.
    async fn key_row(&self, key_id: &str) -> Result<KeyRow, Status> {
        crate::cluster::validate_id("key_id", key_id).map_err(status)?;
        self.cluster
            .db
            .key(key_id)
            .await
            .map_err(status)?
            .ok_or_else(|| Status::not_found(format!("key {key_id}")))
    }

    /// Logs a refresh or repair (`key_shares_changed`) and answers with it.
    async fn share_change_logged(
        &self,
        out: crate::cluster::ShareChangeOutcome,
        actor: String,
    ) -> Result<Response<KeyShareChange>, Status> {
        use sha2::Digest;
        let change = match out.change.change.as_str() {
            "refresh" => custos_audit::entry::ShareChange::Refresh,
            _ => custos_audit::entry::ShareChange::Repair,
        };
        let log_index = self
            .audit
            .append(EntryBody::KeySharesChanged {
                key_id: out.key.key_id.clone(),
                change,
                generation: out.change.generation,
                signers: out.change.signers.clone(),
                repaired: out.change.repaired.clone(),
                public_key: out.key.public_key.clone().unwrap_or_default(),
                package_hash: sha2::Sha256::digest(&out.public_package).into(),
                actor: actor.clone(),
            })
            .await
            .map_err(status)?;
        tracing::warn!(key_id = %out.key.key_id, change = %out.change.change, by = %actor,
            log_index, "key share change logged");
        Ok(Response::new(KeyShareChange {
            operation: out.change.change,
            generation: out.change.generation,
            signers: out.change.signers,
            repaired: out.change.repaired,
            log_index,
            key: Some(to_key(&self.cluster, out.key).await),
        }))
    }
}

impl CustodyService {
    /// A rotation report as the API answers it.
    async fn rotation(&self, r: RotationReport) -> KeyRotation {
        let sweep = |address: String, index: i64, asset: String, amount: String| Sweep {
            source_address: address,
            derivation_index: index,
            asset,
            amount,
            ..Sweep::default()
        };
        let remaining = r
            .holdings
            .iter()
            .filter(|h| h.balance > 0)
            .map(|h| {
                sweep(
                    h.address.clone(),
                    h.index.map_or(-1, i64::from),
                    h.asset.clone(),
                    h.balance.to_string(),
                )
            })
            .collect();
        let sweeps = r
            .sweeps
            .into_iter()
            .map(|(s, state)| Sweep {
                withdrawal_id: s.withdrawal_id,
                status: state,
                ..sweep(s.source_address, s.derivation_index, s.asset, s.amount)
            })
            .collect();
        let new_key = match r.new_key {
            Some(k) => Some(to_key(&self.cluster, k).await),
            None => None,
        };
        KeyRotation {
            old_key: Some(to_key(&self.cluster, r.old_key).await),
            new_key,
            state: r.state,
            sweeps,
            remaining,
            log_index: r.lifecycle.rotation_log_index.unwrap_or_default(),
        }
    }
}

fn require_any<T>(req: &Request<T>, roles: &[Role]) -> Result<crate::auth::Identity, Status> {
    let id = identity(req)?;
    if id.is_admin() || roles.iter().any(|r| id.roles.contains(r)) {
        Ok(id)
    } else {
        Err(Status::permission_denied(format!(
            "client {} needs one of the roles {roles:?}",
            id.id
        )))
    }
}

/// What a share backup of a key must say about itself.
struct ExpectedBackup<'a> {
    key_id: &'a str,
    public_key: String,
    recipient: String,
}

impl ExpectedBackup<'_> {
    /// Parses a signer's backup and checks its public header: this key,
    /// this signer at its keygen index, this recipient.
    fn check(
        &self,
        json: &[u8],
        node: &str,
        index: usize,
    ) -> Result<custos_mpc::recovery::ShareBackup, String> {
        let b = custos_mpc::recovery::ShareBackup::from_json(json).map_err(|e| e.to_string())?;
        let h = &b.header;
        if h.key_id != self.key_id
            || h.node_id != node
            || usize::from(h.party_index) != index
            || h.public_key != self.public_key
            || h.recipient != self.recipient
        {
            return Err(format!(
                "its backup names key {}, signer {} (index {}), recipient {}: not what was asked",
                h.key_id, h.node_id, h.party_index, h.recipient
            ));
        }
        Ok(b)
    }
}

fn to_derived(d: crate::derived::DerivedAddress) -> DerivedAddress {
    DerivedAddress {
        wallet: d.wallet,
        chain: d.chain,
        path: d.path,
        index: d.index,
        address: d.address,
        public_key: d.public_key,
        label: d.label,
        created_at: rfc3339_ms(d.created_ms),
    }
}

async fn to_key(cluster: &Cluster, k: KeyRow) -> Key {
    let ready = cluster
        .db
        .ready_presigs(&k.key_id)
        .await
        .map(|v| v.len() as u32)
        .unwrap_or(0);
    let lock = cluster.locks.status(&k.key_id).await.ok().flatten();
    let change = cluster.db.last_share_change(&k.key_id).await.ok().flatten();
    let life = cluster.db.lifecycle(&k.key_id).await.unwrap_or_default();
    Key {
        retired_at: life.retired_at.unwrap_or_default(),
        successor: life.successor,
        shares_destroyed_by: life.shares_destroyed,
        retirement_log_index: life.retirement_index.unwrap_or_default(),
        rotating_to: life.rotating_to.unwrap_or_default(),
        share_generation: change.as_ref().map_or(0, |c| c.generation),
        last_share_change: change.as_ref().map(describe_change).unwrap_or_default(),
        last_share_change_at: change.map(|c| c.at).unwrap_or_default(),
        signing_locked: lock.as_ref().is_some_and(|l| l.locked_ms.is_some()),
        unexplained_failures: lock.as_ref().map_or(0, |l| l.consecutive),
        last_failure: lock.map(|l| l.last_error).unwrap_or_default(),
        curve: scheme_curve(k.scheme) as i32,
        scheme: scheme_to_proto(k.scheme) as i32,
        key_id: k.key_id,
        threshold: u32::from(k.threshold),
        participants: k.participants,
        public_key: k.public_key.unwrap_or_default(),
        // Kept for clients of the EVM-only API: set on EVM chains only.
        ethereum_address: if matches!(
            custos_chains::family_of(&k.chain),
            Some(custos_chains::ChainFamily::Evm) | None
        ) {
            k.address.clone().unwrap_or_default()
        } else {
            String::new()
        },
        address: k.address.unwrap_or_default(),
        created_at: k.created_at,
        presignatures_ready: ready,
        chain: k.chain,
    }
}

/// `refresh`, or `repair of <signer>`.
fn describe_change(c: &crate::db::ShareChangeRow) -> String {
    if c.repaired.is_empty() {
        c.change.clone()
    } else {
        format!("{} of {}", c.change, c.repaired)
    }
}

/// The API's scheme of a key.
fn scheme_to_proto(id: custos_mpc::SchemeId) -> Scheme {
    match id {
        custos_mpc::SchemeId::EcdsaSecp256k1 => Scheme::Cggmp21Ecdsa,
        custos_mpc::SchemeId::SchnorrSecp256k1Taproot => Scheme::FrostSecp256k1Tr,
        custos_mpc::SchemeId::Ed25519 => Scheme::FrostEd25519,
        // A scheme this API does not name yet.
        _ => Scheme::Unspecified,
    }
}

/// The key scheme a request asks for (unspecified: cggmp21 ECDSA).
fn scheme_from_proto(value: i32) -> Result<custos_mpc::SchemeId, Status> {
    match Scheme::try_from(value) {
        Ok(Scheme::Unspecified | Scheme::Cggmp21Ecdsa) => Ok(custos_mpc::SchemeId::EcdsaSecp256k1),
        Ok(Scheme::FrostSecp256k1Tr) => Ok(custos_mpc::SchemeId::SchnorrSecp256k1Taproot),
        Ok(Scheme::FrostEd25519) => Ok(custos_mpc::SchemeId::Ed25519),
        Err(_) => Err(Status::invalid_argument(format!(
            "scheme: unsupported value {value}"
        ))),
    }
}

/// The curve a scheme works on.
fn scheme_curve(id: custos_mpc::SchemeId) -> Curve {
    match id.curve() {
        "ed25519" => Curve::Ed25519,
        _ => Curve::Secp256k1,
    }
}

#[tonic::async_trait]
impl Custody for CustodyService {
    async fn create_key(&self, req: Request<CreateKeyRequest>) -> Result<Response<Key>, Status> {
        require_any(&req, &[Role::Admin])?;
        let r = req.into_inner();
        let scheme = scheme_from_proto(r.scheme)?;
        match Curve::try_from(r.curve) {
            Ok(Curve::Unspecified) => {}
            Ok(c) if c == scheme_curve(scheme) => {}
            _ => {
                return Err(Status::invalid_argument(format!(
                    "curve: unsupported value {} for scheme {scheme}",
                    r.curve
                )));
            }
        }
        // A key without a chain: ECDSA keys get Ethereum's, keys of the
        // other schemes none (they sign digests and messages). A chain a
        // scheme cannot spend on is refused by `Cluster::create_key`.
        let chain = match (r.chain.is_empty(), scheme) {
            (true, custos_mpc::SchemeId::EcdsaSecp256k1) => "ethereum".to_string(),
            (true, _) => String::new(),
            (false, _) => r.chain.clone(),
        };
        if !chain.is_empty() && custos_policy::chain_kind(&chain).is_none() {
            return Err(Status::invalid_argument(format!(
                "chain: unknown chain {chain:?}"
            )));
        }
        let t = u16::try_from(r.threshold).map_err(|_| {
            Status::invalid_argument(format!("threshold: {} out of range", r.threshold))
        })?;
        let key = self
            .cluster
            .create_key(&r.key_id, t, &chain, scheme)
            .await
            .map_err(status)?;
        self.audit
            .append(EntryBody::KeyCreated {
                key_id: key.key_id.clone(),
                scheme: key.scheme.name().into(),
                participants: key.participants.clone(),
                threshold: key.threshold,
                public_key: key.public_key.clone().unwrap_or_default(),
            })
            .await
            .map_err(status)?;
        Ok(Response::new(to_key(&self.cluster, key).await))
    }

    async fn get_key(&self, req: Request<GetKeyRequest>) -> Result<Response<Key>, Status> {
        require_any(
            &req,
            &[Role::Admin, Role::Backend, Role::Approver, Role::Auditor],
        )?;
        let key = self.key_row(&req.into_inner().key_id).await?;
        Ok(Response::new(to_key(&self.cluster, key).await))
    }

    async fn list_keys(
        &self,
        req: Request<ListKeysRequest>,
    ) -> Result<Response<ListKeysResponse>, Status> {
        require_any(
            &req,
            &[Role::Admin, Role::Backend, Role::Approver, Role::Auditor],
        )?;
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
        require_any(&req, &[Role::Admin])?;
        if !(crate::DEV_BUILD && self.allow_sign_digest) {
            return Err(Status::permission_denied(
                "SignDigest is disabled: signatures come only from approved withdrawals (dev.allow_sign_digest enables it on development clusters)",
            ));
        }
        let r = req.into_inner();
        let o = self
            .cluster
            .sign_digest(&r.key_id, &r.digest, &r.request_id, r.interactive)
            .await
            .map_err(status)?;
        // r, s and the recovery id are ECDSA's; every scheme has `signature`.
        let ecdsa = o.scheme == custos_mpc::SchemeId::EcdsaSecp256k1;
        Ok(Response::new(SignDigestResponse {
            r: if ecdsa { o.r.to_vec() } else { Vec::new() },
            s: if ecdsa { o.s.to_vec() } else { Vec::new() },
            recovery_id: u32::from(o.recovery_id),
            signature: o.signature,
            scheme: scheme_to_proto(o.scheme) as i32,
            signers: o.signers,
            mode: o.mode,
            presignature_id: o.presig_id,
            signing_micros: o.elapsed.as_micros() as u64,
        }))
    }

    async fn unlock_key(&self, req: Request<UnlockKeyRequest>) -> Result<Response<Key>, Status> {
        let who = require_any(&req, &[Role::Admin])?;
        let r = req.into_inner();
        let reason = r.reason.trim();
        if reason.is_empty() || reason.len() > 1024 {
            return Err(Status::invalid_argument(
                "reason: say in 1-1024 characters why the key may sign again (it is logged)",
            ));
        }
        let key = self.key_row(&r.key_id).await?;
        let locked = self
            .cluster
            .locks
            .status(&key.key_id)
            .await
            .map_err(status)?
            .is_some_and(|l| l.locked_ms.is_some());
        if !locked {
            return Err(Status::failed_precondition(format!(
                "key {} is not locked",
                key.key_id
            )));
        }
        // Logged before it takes effect: an unlock weakens the cluster.
        self.audit
            .append(EntryBody::KeyLockChanged {
                key_id: key.key_id.clone(),
                locked: false,
                actor: who.id.clone(),
                reason: reason.to_owned(),
            })
            .await
            .map_err(status)?;
        self.cluster
            .locks
            .unlock(&key.key_id)
            .await
            .map_err(status)?;
        tracing::warn!(key_id = %key.key_id, by = %who.id, %reason, "key unlocked for signing");
        Ok(Response::new(to_key(&self.cluster, key).await))
    }

    async fn export_share_backups(
        &self,
        req: Request<ExportShareBackupsRequest>,
    ) -> Result<Response<ExportShareBackupsResponse>, Status> {
        let who = require_any(&req, &[Role::Admin])?;
        let r = req.into_inner();
        let recipient = custos_mpc::recovery::Recipient::parse(&r.recipient)
            .map_err(|e| Status::invalid_argument(format!("recipient: {e}")))?;
        let key = self.key_row(&r.key_id).await?;
        let Some(public_key) = key.public_key.as_ref().filter(|_| key.state == "ready") else {
            return Err(Status::failed_precondition(format!(
                "key {} is {}, not ready: nothing to back up",
                key.key_id, key.state
            )));
        };
        let expected = ExpectedBackup {
            key_id: &key.key_id,
            public_key: hex::encode(public_key),
            recipient: recipient.to_string(),
        };
        let mut out = ExportShareBackupsResponse::default();
        for (index, node) in key.participants.iter().enumerate() {
            let Some(signer) = self.cluster.signers.get(node) else {
                out.failures
                    .push(format!("{node}: not a signer of this coordinator"));
                continue;
            };
            let answer = signer
                .client()
                .export_share(custos_proto::signer::ExportShareRequest {
                    key_id: key.key_id.clone(),
                    recipient: r.recipient.clone(),
                    coordinator_epoch: self.cluster.signers.epoch().map_err(status)?,
                })
                .await;
            let json = match answer {
                Ok(a) => a.into_inner().backup_json,
                Err(e) => {
                    out.failures.push(format!("{node}: {}", e.message()));
                    continue;
                }
            };
            let backup = match expected.check(&json, node, index) {
                Ok(b) => b,
                Err(e) => {
                    out.failures.push(format!("{node}: {e}"));
                    continue;
                }
            };
            let backup_hash = backup.ciphertext_hash();
            // Logged before the admin gets it: every copy of a share that
            // leaves a signer is in the log.
            let log_index = self
                .audit
                .append(EntryBody::ShareExported {
                    key_id: key.key_id.clone(),
                    signer: node.clone(),
                    party_index: backup.header.party_index,
                    recipient_fingerprint: recipient.fingerprint_bytes(),
                    backup_hash,
                    actor: who.id.clone(),
                })
                .await
                .map_err(status)?;
            tracing::warn!(key_id = %key.key_id, signer = %node, by = %who.id,
                recipient = %recipient.fingerprint(), "share backup exported");
            out.backups.push(ShareBackupFile {
                node_id: node.clone(),
                backup_json: json,
                backup_hash: hex::encode(backup_hash),
                log_index,
            });
        }
        Ok(Response::new(out))
    }

    async fn rotate_key(
        &self,
        req: Request<RotateKeyRequest>,
    ) -> Result<Response<KeyRotation>, Status> {
        let who = require_any(&req, &[Role::Admin])?;
        let r = req.into_inner();
        if !r.new_key_id.is_empty() {
            crate::cluster::validate_id("new_key_id", &r.new_key_id).map_err(status)?;
        }
        let report = self
            .rotations
            .rotate(&who, &r.key_id, &r.new_key_id, r.status_only)
            .await
            .map_err(status)?;
        Ok(Response::new(self.rotation(report).await))
    }

    async fn retire_key(&self, req: Request<RetireKeyRequest>) -> Result<Response<Key>, Status> {
        let who = require_any(&req, &[Role::Admin])?;
        let r = req.into_inner();
        if r.reason.len() > 1024 {
            return Err(Status::invalid_argument(
                "reason: at most 1024 characters (it is logged)",
            ));
        }
        let report = self
            .rotations
            .retire(&r.key_id, &who.id, &r.reason)
            .await
            .map_err(status)?;
        Ok(Response::new(to_key(&self.cluster, report.old_key).await))
    }

    async fn refresh_key(
        &self,
        req: Request<RefreshKeyRequest>,
    ) -> Result<Response<KeyShareChange>, Status> {
        let who = require_any(&req, &[Role::Admin])?;
        let r = req.into_inner();
        crate::cluster::validate_id("key_id", &r.key_id).map_err(status)?;
        let out = self.cluster.refresh_key(&r.key_id).await.map_err(status)?;
        self.share_change_logged(out, who.id.clone()).await
    }

    async fn repair_key_share(
        &self,
        req: Request<RepairKeyShareRequest>,
    ) -> Result<Response<KeyShareChange>, Status> {
        let who = require_any(&req, &[Role::Admin])?;
        let r = req.into_inner();
        crate::cluster::validate_id("key_id", &r.key_id).map_err(status)?;
        if r.signer.is_empty() {
            return Err(Status::invalid_argument(
                "signer: name the signer whose share is repaired",
            ));
        }
        let out = self
            .cluster
            .repair_key_share(&r.key_id, &r.signer)
            .await
            .map_err(status)?;
        self.share_change_logged(out, who.id.clone()).await
    }

    async fn get_cluster_status(
        &self,
        req: Request<GetClusterStatusRequest>,
    ) -> Result<Response<ClusterStatus>, Status> {
        identity(&req)?;
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
                    witness_key: h.witness_key,
                }
            })
            .collect();
        Ok(Response::new(ClusterStatus {
            signers,
            threshold: u32::from(c.default_threshold()),
            aux_info: c.aux_state(),
            keys: c.db.keys().await.map_err(status)?.len() as u32,
            presignatures_ready: c.db.ready_presig_total().await.map_err(status)?,
            log_key: self.audit.verifier_key(),
        }))
    }

    async fn create_withdrawal(
        &self,
        req: Request<CreateWithdrawalRequest>,
    ) -> Result<Response<Withdrawal>, Status> {
        let who = identity(&req)?;
        let r = req.into_inner();
        let request = CreateRequest {
            idempotency_key: r.idempotency_key,
            wallet: r.wallet,
            asset: r.asset,
            destination: r.destination,
            amount: r.amount,
            fee_cap: r.fee_cap,
            memo: r.memo,
            request_signature: r.request_signature,
            source_path: r.source_path,
        };
        let w = self.api.create_withdrawal(&who, request).await;
        Ok(Response::new(w.map_err(status)?))
    }

    async fn get_withdrawal(
        &self,
        req: Request<GetWithdrawalRequest>,
    ) -> Result<Response<Withdrawal>, Status> {
        let who = identity(&req)?;
        let w = self.api.get_withdrawal(&who, &req.into_inner().id).await;
        Ok(Response::new(w.map_err(status)?))
    }

    async fn list_withdrawals(
        &self,
        req: Request<ListWithdrawalsRequest>,
    ) -> Result<Response<ListWithdrawalsResponse>, Status> {
        let who = identity(&req)?;
        let page = self.api.list_withdrawals(&who, req.get_ref()).await;
        Ok(Response::new(page.map_err(status)?))
    }

    async fn cancel_withdrawal(
        &self,
        req: Request<CancelWithdrawalRequest>,
    ) -> Result<Response<Withdrawal>, Status> {
        let who = identity(&req)?;
        let r = req.into_inner();
        let w = self.api.cancel_withdrawal(&who, &r.id, &r.reason).await;
        Ok(Response::new(w.map_err(status)?))
    }

    type WatchWithdrawalsStream =
        Pin<Box<dyn Stream<Item = Result<WithdrawalEvent, Status>> + Send + 'static>>;

    async fn watch_withdrawals(
        &self,
        req: Request<WatchWithdrawalsRequest>,
    ) -> Result<Response<Self::WatchWithdrawalsStream>, Status> {
        require_any(&req, &[Role::Backend, Role::Approver, Role::Auditor])?;
        let engine = self.api.engine().map_err(status)?.clone();
        let r = req.into_inner();
        let mut cursor = i64::try_from(r.cursor)
            .map_err(|_| Status::invalid_argument("cursor: out of range"))?;
        let only = (!r.withdrawal_id.is_empty()).then_some(r.withdrawal_id);
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let mut nudges = engine.subscribe();
        // Ends with the engine's stop signal, so an open watch does not hold
        // the server's drain: the client sees the stream end and reconnects
        // from its cursor.
        let streaming = engine.clone();
        streaming.spawn_until_stopped(async move {
            loop {
                let batch = match engine
                    .store
                    .events_after(cursor, only.as_deref(), 200)
                    .await
                {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = tx.send(Err(status(e))).await;
                        return;
                    }
                };
                let empty = batch.is_empty();
                for e in batch {
                    cursor = e.seq;
                    let ev = WithdrawalEvent {
                        sequence: u64::try_from(e.seq).unwrap_or(0),
                        withdrawal_id: e.withdrawal_id,
                        state: e.state,
                        at: rfc3339_ms(e.at_ms),
                        detail: e.detail,
                    };
                    if tx.send(Ok(ev)).await.is_err() {
                        return;
                    }
                }
                if empty {
                    // Woken by a commit, or re-poll (a commit from elsewhere).
                    let _ = tokio::time::timeout(Duration::from_millis(500), nudges.recv()).await;
                    if tx.is_closed() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn list_wallets(
        &self,
        req: Request<ListWalletsRequest>,
    ) -> Result<Response<ListWalletsResponse>, Status> {
        let who = identity(&req)?;
        let wallets = self.api.list_wallets(&who).await.map_err(status)?;
        Ok(Response::new(ListWalletsResponse { wallets }))
    }

    async fn get_wallet(&self, req: Request<GetWalletRequest>) -> Result<Response<Wallet>, Status> {
        let who = identity(&req)?;
        let w = self.api.get_wallet(&who, &req.into_inner().wallet_id).await;
        Ok(Response::new(w.map_err(status)?))
    }

    async fn derive_address(
        &self,
        req: Request<DeriveAddressRequest>,
    ) -> Result<Response<DerivedAddress>, Status> {
        let who = require_any(&req, &[Role::Backend])?;
        let r = req.into_inner();
        let key = self
            .api
            .wallet_row("wallet", &r.wallet)
            .await
            .map_err(status)?;
        let d = crate::derived::derive_address(
            &self.cluster.db,
            &key,
            r.index,
            &r.label,
            custos_clock::now_ms_i64(),
            &who.id,
            async |entry| self.audit.append(entry).await,
        )
        .await
        .map_err(status)?;
        Ok(Response::new(to_derived(d)))
    }

    async fn list_derived_addresses(
        &self,
        req: Request<ListDerivedAddressesRequest>,
    ) -> Result<Response<ListDerivedAddressesResponse>, Status> {
        require_any(&req, &[Role::Backend, Role::Approver, Role::Auditor])?;
        let wallet = req.into_inner().wallet;
        if !wallet.is_empty() {
            self.api
                .wallet_row("wallet", &wallet)
                .await
                .map_err(status)?;
        }
        let addresses = crate::derived::list(&self.cluster.db, &wallet)
            .await
            .map_err(status)?
            .into_iter()
            .map(to_derived)
            .collect();
        Ok(Response::new(ListDerivedAddressesResponse { addresses }))
    }

    async fn list_address_book(
        &self,
        req: Request<ListAddressBookRequest>,
    ) -> Result<Response<ListAddressBookResponse>, Status> {
        let who = identity(&req)?;
        let book = self.api.address_book(&who, &req.into_inner().chain);
        Ok(Response::new(book.map_err(status)?))
    }

    async fn list_pending(
        &self,
        req: Request<ListPendingRequest>,
    ) -> Result<Response<ListWithdrawalsResponse>, Status> {
        let who = identity(&req)?;
        let pending = self
            .api
            .list_pending(&who, &req.into_inner().approver)
            .await;
        Ok(Response::new(pending.map_err(status)?))
    }

    async fn submit_approval(
        &self,
        req: Request<SubmitApprovalRequest>,
    ) -> Result<Response<Withdrawal>, Status> {
        let who = identity(&req)?;
        let w = self.api.submit_approval(&who, req.into_inner()).await;
        Ok(Response::new(w.map_err(status)?))
    }

    async fn get_checkpoint(
        &self,
        req: Request<GetCheckpointRequest>,
    ) -> Result<Response<Checkpoint>, Status> {
        let who = identity(&req)?;
        Ok(Response::new(
            self.api.checkpoint(&who).await.map_err(status)?,
        ))
    }

    async fn get_log_entry(
        &self,
        req: Request<GetLogEntryRequest>,
    ) -> Result<Response<LogEntry>, Status> {
        let who = identity(&req)?;
        let entry = self.api.log_entry(&who, req.into_inner().index).await;
        Ok(Response::new(entry.map_err(status)?))
    }

    async fn get_inclusion_proof(
        &self,
        req: Request<GetInclusionProofRequest>,
    ) -> Result<Response<Proof>, Status> {
        let who = identity(&req)?;
        let r = req.into_inner();
        let proof = self.api.inclusion_proof(&who, r.index, r.size).await;
        Ok(Response::new(proof.map_err(status)?))
    }

    async fn get_consistency_proof(
        &self,
        req: Request<GetConsistencyProofRequest>,
    ) -> Result<Response<Proof>, Status> {
        require_any(&req, &[Role::Auditor])?;
        let r = req.into_inner();
        let proof = self
            .audit
            .log()
            .consistency_proof(r.old_size, r.new_size)
            .await
            .map_err(|e| status(audit_error("size", e)))?;
        Ok(Response::new(Proof {
            hashes: proof.iter().map(|h| h.to_vec()).collect(),
            size: r.new_size,
        }))
    }

    async fn export_audit_bundle(
        &self,
        req: Request<ExportAuditBundleRequest>,
    ) -> Result<Response<AuditBundle>, Status> {
        require_any(&req, &[Role::Auditor])?;
        let r = req.into_inner();
        let to = if r.to == 0 {
            self.api.latest_size().await.map_err(status)?
        } else {
            r.to
        };
        let bundle = self
            .audit
            .log()
            .export(r.from, to, (r.previous_size > 0).then_some(r.previous_size))
            .await
            .map_err(|e| status(audit_error("size", e)))?;
        let json = serde_json::to_vec_pretty(&bundle)
            .map_err(|e| Status::internal(format!("bundle encoding: {e}")))?;
        Ok(Response::new(AuditBundle { json }))
    }
}
