//! The signer: runs protocol sessions with its peers and keeps their results sealed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use custos_mpc::protocol::{self, from_secret_bytes, to_secret_bytes};
use custos_mpc::wire::Frame;
use custos_mpc::{ExecutionId, KeyShare, MpcError, SchemeId, SessionIo, SessionKind};
use futures::channel::mpsc;
use libp2p::PeerId;

use crate::error::NodeError;
use crate::p2p::{InboundMessage, P2pHandle};
use crate::sessions::SessionRouter;
use crate::store::{KeyMeta, PresigMeta, Store, validate_id};

/// Deliberate misbehaviour, for adversarial tests of the cluster only: a
/// release build ([`crate::BUILD_MODE`]) refuses it in its config and never
/// acts on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FaultInjection {
    /// Behave.
    #[default]
    None,
    /// Replace the payload of every outbound protocol frame with garbage.
    CorruptProtocolMessages,
    /// Issue well-formed partial signatures over another digest (they do
    /// not combine into a valid signature: an unexplained signing failure).
    CorruptPartialSignatures,
}

/// Counts a protocol thread from its spawn until the thread ends (also by unwinding).
struct ThreadCount(Arc<std::sync::atomic::AtomicUsize>);

impl ThreadCount {
    fn enter(counter: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        ThreadCount(counter.clone())
    }
}

impl Drop for ThreadCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Cancels a session's protocol work when the session ends, however it ends.
struct CancelOnDrop(custos_mpc::CancelToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Where the node is in its one-time setup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrimeState {
    /// Safe primes are being generated (seconds to minutes).
    Generating,
    /// Primes are ready for an aux-info run.
    Ready,
    /// No primes and none being generated (aux info exists).
    Idle,
    /// Generation failed.
    Failed(String),
}

/// How long protocol sessions may take before they abort.
#[derive(Clone, Copy, Debug)]
pub struct SessionTimeouts {
    /// Keygen, presignature and signing sessions.
    pub session: Duration,
    /// The aux-info ceremony (Paillier keys and proofs for every party:
    /// minutes for 5 parties on slow or HSM-backed hosts).
    pub aux_info: Duration,
}

/// A signer node.
pub struct Node {
    /// This node's id.
    pub node_id: String,
    /// Every node of the signer group (this one included), sorted.
    pub group: Vec<String>,
    store: Store,
    p2p: P2pHandle,
    peers: HashMap<String, PeerId>,
    router: SessionRouter,
    timeouts: SessionTimeouts,
    fault: FaultInjection,
    /// Protocol computations still running on blocking threads (a cancelled
    /// session's thread counts until it has really stopped).
    protocol_threads: Arc<std::sync::atomic::AtomicUsize>,
    shares: Mutex<HashMap<String, Arc<KeyShare>>>,
    primes: Mutex<PrimeState>,
    /// Keys whose share is being refreshed or repaired: no pool item is
    /// made for them meanwhile (it would be made under the old share).
    maintenance: Mutex<std::collections::HashSet<String>>,
}

impl Node {
    /// Wires a node together. `peers` maps every other node id to its pinned PeerId.
    pub fn new(
        node_id: String,
        store: Store,
        p2p: P2pHandle,
        peers: HashMap<String, PeerId>,
        timeouts: SessionTimeouts,
        fault: FaultInjection,
    ) -> Arc<Node> {
        let mut group: Vec<String> = peers.keys().cloned().collect();
        group.push(node_id.clone());
        group.sort();
        if crate::DEV_BUILD && fault != FaultInjection::None {
            tracing::warn!(
                ?fault,
                "FAULT INJECTION ENABLED: this node will misbehave on purpose"
            );
        }
        Arc::new(Node {
            node_id,
            group,
            store,
            p2p,
            peers,
            router: SessionRouter::default(),
            timeouts,
            fault,
            protocol_threads: Arc::default(),
            shares: Mutex::new(HashMap::new()),
            primes: Mutex::new(PrimeState::Idle),
            maintenance: Mutex::default(),
        })
    }

    /// The store (for status).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Protocol computations running on blocking threads right now.
    pub fn protocol_threads(&self) -> usize {
        self.protocol_threads
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stores party `index`'s aux info from a dev/test fixture (made from
    /// the public test primes) under the fixture's group id, unless it is
    /// there already; the node's primes, which the fixture was checked
    /// against, are then no longer needed. Returns the group id.
    pub fn import_aux_fixture(
        &self,
        fixture: &custos_mpc::fixture::AuxFixture,
        primes: &custos_mpc::Primes,
    ) -> Result<String, NodeError> {
        let group_id = fixture.group_id()?;
        let mut members = fixture.participants.clone();
        members.sort();
        if members != self.group {
            return Err(NodeError::InvalidRequest(format!(
                "aux-info fixture is for {}, this signer group is {}",
                fixture.participants.join(", "),
                self.group.join(", ")
            )));
        }
        if self.store.get_aux(&group_id)?.is_none() {
            let index = fixture.index_of(&self.node_id)?;
            let aux = fixture.party_for(index, primes)?;
            self.store.put_aux(&group_id, &to_secret_bytes(aux)?)?;
            tracing::info!(%group_id, "aux info imported from the dev fixture");
        }
        self.store.drop_primes()?;
        *self.primes.lock().unwrap_or_else(|p| p.into_inner()) = PrimeState::Idle;
        Ok(group_id)
    }

    /// Feeds frames from the transport into sessions until the transport stops.
    pub async fn route_inbound(
        self: Arc<Self>,
        mut inbound: tokio::sync::mpsc::Receiver<InboundMessage>,
    ) {
        while let Some(msg) = inbound.recv().await {
            let Some(from) = self.p2p.node_id(&msg.from).map(str::to_owned) else {
                continue;
            };
            match Frame::peek_eid(&msg.payload) {
                Some(eid) => self.router.deliver(eid, &from, msg.payload),
                None => tracing::warn!(peer = %from, "unparseable protocol frame dropped"),
            }
        }
    }

    /// Current prime-generation state.
    pub fn prime_state(&self) -> PrimeState {
        self.primes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Makes sure safe primes exist for the next aux-info run: uses stored
    /// ones, else `pregenerated` (dev fixtures), else generates them on a
    /// blocking thread in the background.
    pub fn ensure_primes(
        self: &Arc<Self>,
        pregenerated: Option<custos_mpc::Primes>,
    ) -> Result<(), NodeError> {
        if self.store.get_primes()?.is_some() {
            *self.primes.lock().unwrap_or_else(|p| p.into_inner()) = PrimeState::Ready;
            return Ok(());
        }
        if let Some(p) = pregenerated {
            self.store.put_primes(&to_secret_bytes(&p)?)?;
            *self.primes.lock().unwrap_or_else(|p| p.into_inner()) = PrimeState::Ready;
            return Ok(());
        }
        *self.primes.lock().unwrap_or_else(|p| p.into_inner()) = PrimeState::Generating;
        let node = self.clone();
        tokio::task::spawn_blocking(move || {
            tracing::info!("generating safe primes for aux info (takes a while)");
            let started = std::time::Instant::now();
            let primes = custos_mpc::primes::generate();
            let state = match to_secret_bytes(&primes)
                .map_err(NodeError::from)
                .and_then(|b| node.store.put_primes(&b))
            {
                Ok(()) => {
                    tracing::info!(secs = started.elapsed().as_secs_f64(), "safe primes ready");
                    PrimeState::Ready
                }
                Err(e) => PrimeState::Failed(e.to_string()),
            };
            *node.primes.lock().unwrap_or_else(|p| p.into_inner()) = state;
        });
        Ok(())
    }

    fn check_participants(
        &self,
        list: &[String],
        expect_len: Option<usize>,
    ) -> Result<u16, NodeError> {
        if let Some(n) = expect_len
            && list.len() != n
        {
            return Err(NodeError::InvalidRequest(format!(
                "expected {n} participants, got {}",
                list.len()
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for p in list {
            if !self.group.contains(p) {
                return Err(NodeError::InvalidRequest(format!(
                    "{p} is not a member of this signer group"
                )));
            }
            if !seen.insert(p) {
                return Err(NodeError::InvalidRequest(format!("{p} is listed twice")));
            }
        }
        let me = list
            .iter()
            .position(|p| *p == self.node_id)
            .ok_or_else(|| {
                NodeError::InvalidRequest(format!("{} is not among the participants", self.node_id))
            })?;
        Ok(me as u16)
    }

    /// Runs one session: claims its execution id, wires it to the transport,
    /// runs `protocol` on a blocking thread, enforces the timeout, and maps
    /// failures to the node ids at fault.
    async fn run_session<T, F, Fut>(
        &self,
        kind: SessionKind,
        key_id: &str,
        participants: &[String],
        request: &[u8],
        protocol: F,
    ) -> Result<T, NodeError>
    where
        T: Send + 'static,
        F: FnOnce(SessionIo) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, MpcError>>,
    {
        let me = self.check_participants(participants, None)?;
        let names: Vec<&str> = participants.iter().map(String::as_str).collect();
        let eid = ExecutionId::derive(kind, key_id, &names, request);
        self.store.claim_execution_id(&eid.to_hex())?;
        let inbound = self.router.register(eid, participants.to_vec());
        // If the caller goes away (coordinator cancelled the call), the
        // session must not linger: unregistering ends its inbound stream.
        let guard = Unregister {
            router: &self.router,
            eid,
        };
        let (out_tx, out_rx) = mpsc::unbounded();
        let io = SessionIo {
            eid,
            me,
            parties: participants.len() as u16,
            inbound,
            outbound: out_tx,
            cancel: custos_mpc::CancelToken::new(),
        };
        let limit = match kind {
            SessionKind::AuxInfo => self.timeouts.aux_info,
            _ => self.timeouts.session,
        };
        let mut sender = tokio::spawn(crate::outbound::forward(
            self.p2p.clone(),
            self.peer_ids(participants)?,
            out_rx,
            self.fault,
            crate::outbound::DELIVERY_DEADLINE.min(limit),
        ));
        let cancel = io.cancel.clone();
        let threads = ThreadCount::enter(&self.protocol_threads);
        let mut work = tokio::task::spawn_blocking({
            let cancel = cancel.clone();
            move || {
                let _running = threads;
                custos_mpc::cancel::block_on(&cancel, protocol(io))
            }
        });
        // Stops the computation at its next stage if it is still running
        // (timeout, undeliverable frames, or this future dropped because the
        // caller went away).
        let _cancel_on_exit = CancelOnDrop(cancel);
        let timeout = tokio::time::sleep(limit);
        tokio::pin!(timeout);
        let mut sender_done = false;
        let end = loop {
            tokio::select! {
                r = &mut work => break SessionEnd::Finished(r),
                s = &mut sender, if !sender_done => {
                    sender_done = true;
                    if let Ok(Err(u)) = s {
                        break SessionEnd::Undelivered(u);
                    }
                }
                _ = &mut timeout => break SessionEnd::TimedOut,
            }
        };
        if matches!(end, SessionEnd::Finished(Ok(Ok(_)))) && !sender_done {
            // Our last frames may still be on their way; a peer without them
            // would wait for them until it times out.
            if let Ok(Err(u)) = sender.await {
                tracing::warn!(peer = %u.node, error = %u.error, "last protocol frames of a completed session not delivered");
            }
        } else {
            sender.abort();
        }
        std::mem::forget(guard);
        let counts = self.router.unregister(&eid).unwrap_or_default();
        match end {
            SessionEnd::Finished(Ok(Ok(v))) => Ok(v),
            SessionEnd::Finished(Ok(Err(e))) => Err(self.map_protocol_error(e, participants)),
            SessionEnd::Finished(Err(join)) => {
                Err(NodeError::Internal(format!("session task failed: {join}")))
            }
            SessionEnd::Undelivered(u) => Err(NodeError::PeerUnreachable {
                node: u.node,
                reason: u.error,
            }),
            SessionEnd::TimedOut => {
                // Peers that delivered fewer frames than the most active one stalled.
                let most = counts
                    .iter()
                    .filter(|(n, _)| *n != self.node_id)
                    .map(|(_, c)| *c)
                    .max()
                    .unwrap_or(0);
                let absent = counts
                    .into_iter()
                    .filter(|(n, c)| *n != self.node_id && (*c < most || most == 0))
                    .map(|(n, _)| n)
                    .collect();
                Err(NodeError::Timeout {
                    secs: limit.as_secs(),
                    absent,
                })
            }
        }
    }

    fn peer_ids(&self, participants: &[String]) -> Result<Vec<Option<PeerId>>, NodeError> {
        participants
            .iter()
            .map(|p| {
                if *p == self.node_id {
                    Ok(None)
                } else {
                    self.peers
                        .get(p)
                        .copied()
                        .map(Some)
                        .ok_or_else(|| NodeError::InvalidRequest(format!("unknown peer {p}")))
                }
            })
            .collect()
    }

    fn map_protocol_error(&self, e: MpcError, participants: &[String]) -> NodeError {
        match e {
            MpcError::PeerMisbehaved { party, reason } => NodeError::PeerMisbehaved {
                node: participants
                    .get(usize::from(party))
                    .cloned()
                    .unwrap_or_else(|| format!("party {party}")),
                reason,
            },
            MpcError::InvalidInput(m) => NodeError::InvalidRequest(m),
            MpcError::Transport(m) => NodeError::Protocol(format!("session ended early: {m}")),
            other => NodeError::Protocol(other.to_string()),
        }
    }

    /// Aux-info generation for the whole group (`participants` = the group, in order).
    pub async fn aux_info(&self, group_id: &str, participants: &[String]) -> Result<(), NodeError> {
        validate_id("group id", group_id)?;
        self.check_participants(participants, Some(self.group.len()))?;
        if self.store.get_aux(group_id)?.is_some() {
            return Err(NodeError::Replay(format!(
                "aux info for group {group_id} already exists"
            )));
        }
        let primes_bytes = self
            .store
            .get_primes()?
            .ok_or_else(|| match self.prime_state() {
                PrimeState::Generating => {
                    NodeError::NotReady("safe primes are still being generated".into())
                }
                PrimeState::Failed(e) => {
                    NodeError::NotReady(format!("prime generation failed: {e}"))
                }
                _ => NodeError::NotReady("no safe primes available".into()),
            })?;
        let primes: custos_mpc::Primes = from_secret_bytes(&primes_bytes)?;
        let aux = self
            .run_session(
                SessionKind::AuxInfo,
                group_id,
                participants,
                b"",
                move |io| protocol::run_aux_info(io, primes),
            )
            .await?;
        self.store.put_aux(group_id, &to_secret_bytes(&aux)?)?;
        self.store.drop_primes()?;
        *self.primes.lock().unwrap_or_else(|p| p.into_inner()) = PrimeState::Idle;
        Ok(())
    }

    /// Distributed key generation in `scheme`; returns the key's public key
    /// and the public package combining needs (every honest signer returns
    /// the same bytes). The share is sealed before anything is returned.
    #[allow(clippy::too_many_arguments)]
    pub async fn keygen(
        &self,
        key_id: &str,
        group_id: &str,
        participants: &[String],
        threshold: u16,
        nonce: &[u8],
        scheme_id: SchemeId,
    ) -> Result<KeygenResult, NodeError> {
        validate_id("key id", key_id)?;
        if nonce.len() < 16 {
            return Err(NodeError::InvalidRequest(
                "keygen nonce must be at least 16 bytes".into(),
            ));
        }
        self.check_participants(participants, Some(self.group.len()))?;
        if self.store.key_meta(key_id).is_ok() {
            return Err(NodeError::Replay(format!("key {key_id} already exists")));
        }
        let scheme = custos_mpc::scheme(scheme_id);
        let aux =
            if scheme.needs_aux_info() {
                Some(self.store.get_aux(group_id)?.ok_or_else(|| {
                    NodeError::NotReady(format!("no aux info for group {group_id}"))
                })?)
            } else {
                None
            };
        let out = self
            .run_session(
                SessionKind::Keygen,
                key_id,
                participants,
                &keygen_request(scheme_id, nonce),
                move |io| scheme.keygen(io, threshold, aux),
            )
            .await?;
        // An ECDSA share carries the chain code its signers generated
        // together (HD derivation); FROST keys have none.
        let chain_code = if scheme_id == SchemeId::EcdsaSecp256k1 {
            let share: custos_mpc::KeyShare = from_secret_bytes(&out.share)?;
            custos_mpc::hd::share_chain_code(&share)
        } else {
            None
        };
        let meta = KeyMeta {
            key_id: key_id.to_owned(),
            group_id: group_id.to_owned(),
            threshold,
            participants: participants.to_vec(),
            public_key: hex::encode(&out.public_key),
            chain_code: chain_code.map(hex::encode),
            scheme: scheme_id.name().to_owned(),
            generation: 0,
            public_package: Some(hex::encode(&out.public_package)),
        };
        self.store.put_key(&meta, &out.share)?;
        Ok(KeygenResult {
            public_key: out.public_key,
            public_package: out.public_package,
            chain_code,
        })
    }

    /// The public facts of key `key_id`.
    pub fn key_meta(&self, key_id: &str) -> Result<KeyMeta, NodeError> {
        self.store.key_meta(key_id)
    }

    /// Seals this node's share of `key_id` to `recipient` (the recovery key
    /// its own config names) for a disaster-recovery backup. The share is
    /// unsealed only in memory, for the sealing; nothing is written.
    pub fn export_share(
        &self,
        key_id: &str,
        recipient: &custos_mpc::recovery::Recipient,
        now_ms: u64,
    ) -> Result<custos_mpc::recovery::ShareBackup, NodeError> {
        let meta = self.store.key_meta(key_id)?;
        let scheme = meta.scheme()?;
        if scheme != SchemeId::EcdsaSecp256k1 {
            return Err(NodeError::InvalidRequest(format!(
                "key {key_id} is a {scheme} key: share backups are made of cggmp21 ECDSA keys only"
            )));
        }
        let party_index = meta
            .participants
            .iter()
            .position(|p| *p == self.node_id)
            .and_then(|i| u16::try_from(i).ok())
            .ok_or_else(|| {
                NodeError::Internal(format!(
                    "key {key_id} does not list this node ({}) among its participants",
                    self.node_id
                ))
            })?;
        let share = self.store.key_share(key_id)?;
        let header = custos_mpc::recovery::BackupHeader {
            format: custos_mpc::recovery::BACKUP_FORMAT.to_owned(),
            key_id: key_id.to_owned(),
            group_id: meta.group_id.clone(),
            scheme: custos_mpc::SchemeId::EcdsaSecp256k1.name().to_owned(),
            node_id: self.node_id.clone(),
            party_index,
            threshold: meta.threshold,
            participants: meta.participants.clone(),
            public_key: meta.public_key.clone(),
            recipient: recipient.to_string(),
            created_at_ms: now_ms,
        };
        Ok(custos_mpc::recovery::ShareBackup::seal(
            header, recipient, &share,
        )?)
    }

    /// Retires `key_id` here once `cosigner` finds it authorized (the admin
    /// policy bundle `document`/`signatures` listing it, activated by the
    /// log this signer witnessed, and the log's retirement entry): share and
    /// pool destroyed on disk, the unsealed share dropped from memory
    /// (zeroized with its last holder).
    pub fn retire_key(
        &self,
        cosigner: &crate::cosigner::Cosigner,
        key_id: &str,
        document: &[u8],
        signatures: &[u8],
    ) -> Result<(crate::store::Retirement, crate::store::Destroyed), NodeError> {
        let out = cosigner.retire_key(&self.store, key_id, document, signatures)?;
        self.shares
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key_id);
        Ok(out)
    }

    fn share(&self, key_id: &str) -> Result<(KeyMeta, Arc<KeyShare>), NodeError> {
        let meta = self.store.key_meta(key_id)?;
        self.store.check_not_retired(key_id)?;
        if let Some(s) = self
            .shares
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key_id)
        {
            return Ok((meta, s.clone()));
        }
        let share: KeyShare = from_secret_bytes(&self.store.key_share(key_id)?)?;
        let share = Arc::new(share);
        self.shares
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key_id.to_owned(), share.clone());
        Ok((meta, share))
    }

    fn signer_indices(&self, meta: &KeyMeta, signers: &[String]) -> Result<Vec<u16>, NodeError> {
        if signers.len() != usize::from(meta.threshold) {
            return Err(NodeError::InvalidRequest(format!(
                "key {} needs exactly {} signers, got {}",
                meta.key_id,
                meta.threshold,
                signers.len()
            )));
        }
        signers
            .iter()
            .map(|s| {
                meta.participants
                    .iter()
                    .position(|p| p == s)
                    .map(|i| i as u16)
                    .ok_or_else(|| {
                        NodeError::InvalidRequest(format!(
                            "{s} holds no share of key {}",
                            meta.key_id
                        ))
                    })
            })
            .collect()
    }

    /// Runs one precomputation (a cggmp21 presignature, or a FROST nonce
    /// commitment round) and stores its secret sealed; returns its public
    /// half (the nonce point, or every signer's commitments).
    pub async fn presign(
        &self,
        key_id: &str,
        presig_id: &str,
        signers: &[String],
    ) -> Result<Vec<u8>, NodeError> {
        validate_id("presignature id", presig_id)?;
        if self.in_maintenance(key_id) {
            return Err(NodeError::NotReady(format!(
                "key {key_id}: its share is being refreshed or repaired"
            )));
        }
        let meta = self.store.key_meta(key_id)?;
        let scheme_id = meta.scheme()?;
        let indices = self.signer_indices(&meta, signers)?;
        let (public, secret) = if scheme_id == SchemeId::EcdsaSecp256k1 {
            // ECDSA keeps its typed path: the unsealed share stays cached.
            let (_, share) = self.share(key_id)?;
            let presig = self
                .run_session(
                    SessionKind::Presign,
                    key_id,
                    signers,
                    presig_id.as_bytes(),
                    move |io| async move { protocol::run_presign(io, &share, &indices).await },
                )
                .await?;
            (
                protocol::presignature_nonce(&presig).to_vec(),
                to_secret_bytes(&presig)?,
            )
        } else {
            let scheme = custos_mpc::scheme(scheme_id);
            let share = self.store.key_share(key_id)?;
            let pre = self
                .run_session(
                    SessionKind::Presign,
                    key_id,
                    signers,
                    presig_id.as_bytes(),
                    move |io| scheme.precompute(io, share, indices),
                )
                .await?;
            (pre.public, pre.secret)
        };
        self.store.put_presig(
            key_id,
            presig_id,
            &PresigMeta {
                signers: signers.to_vec(),
            },
            &secret,
        )?;
        Ok(public)
    }

    /// Issues a partial signature over `message` from a stored pool item
    /// (ECDSA: a 32-byte prehash; FROST: the message) for the key's child
    /// at `path` (the master key for `m`; Ed25519 keys have no other). The
    /// pool item is durably marked consumed before the partial exists.
    pub fn partial_sign(
        &self,
        key_id: &str,
        presig_id: &str,
        message: &[u8],
        path: &custos_mpc::DerivationPath,
        request_id: &str,
    ) -> Result<Vec<u8>, NodeError> {
        // Before the pool item is consumed: it is about to be discarded.
        if self.in_maintenance(key_id) {
            return Err(NodeError::NotReady(format!(
                "key {key_id}: its share is being refreshed or repaired"
            )));
        }
        let meta = self.store.key_meta(key_id)?;
        let scheme_id = meta.scheme()?;
        let scheme = custos_mpc::scheme(scheme_id);
        scheme
            .check_message(message)
            .map_err(|e| NodeError::InvalidRequest(e.to_string()))?;
        // Before the pool item is consumed: a key without children (Ed25519)
        // or a key record that cannot derive costs no presignature.
        scheme
            .check_path(path)
            .map_err(|e| NodeError::InvalidRequest(format!("key {key_id}: {e}")))?;
        let master = if path.is_master() || scheme_id != SchemeId::EcdsaSecp256k1 {
            None
        } else {
            Some(meta.extended_public_key()?)
        };
        let usage = format!(
            "request={request_id} digest={} path={path}\n",
            hex::encode(message)
        );
        let (_meta, secret) = self.store.consume_presig(key_id, presig_id, &usage)?;
        let mut message = message.to_vec();
        if crate::DEV_BUILD
            && self.fault == FaultInjection::CorruptPartialSignatures
            && let Some(b) = message.first_mut()
        {
            *b ^= 1;
        }
        let computing = std::time::Instant::now();
        if scheme_id == SchemeId::EcdsaSecp256k1 {
            // ECDSA keeps its typed path: the partial needs no share.
            let presig: custos_mpc::Presignature = from_secret_bytes(&secret)?;
            let digest: [u8; 32] = message
                .as_slice()
                .try_into()
                .map_err(|_| NodeError::InvalidRequest("digest must be 32 bytes".into()))?;
            let partial = match &master {
                None => protocol::issue_partial(presig, &digest),
                Some(xpub) => custos_mpc::hd::issue_partial_derived(presig, xpub, path, &digest)?,
            };
            let bytes =
                serde_json::to_vec(&partial).map_err(|e| NodeError::Internal(e.to_string()));
            crate::stages::since(crate::stages::Stage::Partial, computing);
            return bytes;
        }
        // FROST: the signer derives its child share from its own share.
        let share = self.store.key_share(key_id)?;
        let partial = scheme.partial_sign_at(&secret, &share, &message, path)?;
        crate::stages::since(crate::stages::Stage::Partial, computing);
        Ok(partial)
    }

    /// Interactive signing without a presignature (schemes that have it).
    pub async fn sign(
        &self,
        key_id: &str,
        signers: &[String],
        digest: &[u8; 32],
        request_id: &str,
    ) -> Result<custos_mpc::Signature, NodeError> {
        let scheme_id = self.store.key_meta(key_id)?.scheme()?;
        if scheme_id != SchemeId::EcdsaSecp256k1 {
            return Err(NodeError::InvalidRequest(format!(
                "key {key_id} is a {scheme_id} key: it signs from a nonce commitment round (Presign, then PartialSign), not interactively"
            )));
        }
        let (meta, share) = self.share(key_id)?;
        let indices = self.signer_indices(&meta, signers)?;
        let mut request = request_id.as_bytes().to_vec();
        request.extend_from_slice(digest);
        let digest = *digest;
        self.run_session(
            SessionKind::Sign,
            key_id,
            signers,
            &request,
            move |io| async move { protocol::run_sign(io, &share, &indices, &digest).await },
        )
        .await
    }
}

/// A key's share maintenance (refresh or repair) in progress on this node;
/// ends when dropped.
struct Maintenance<'a> {
    node: &'a Node,
    key_id: String,
}

impl Drop for Maintenance<'_> {
    fn drop(&mut self) {
        self.node
            .maintenance
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key_id);
    }
}

impl Node {
    fn in_maintenance(&self, key_id: &str) -> bool {
        self.maintenance
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(key_id)
    }

    /// Marks `key_id` under maintenance; refuses a second concurrent one.
    fn begin_maintenance(&self, key_id: &str) -> Result<Maintenance<'_>, NodeError> {
        if !self
            .maintenance
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key_id.to_owned())
        {
            return Err(NodeError::NotReady(format!(
                "key {key_id}: a refresh or repair of its share is already running"
            )));
        }
        Ok(Maintenance {
            node: self,
            key_id: key_id.to_owned(),
        })
    }

    /// Share refresh without a dealer (FROST keys): with every holder of
    /// `key_id` (`participants`, exactly the key's holders in keygen
    /// order), new shares of the same key. The new share is sealed and
    /// stored under `generation` (one more than this node's) before the
    /// old one and the key's pool items are dropped; the new public package
    /// is returned. The execution id binds the coordinator's nonce, the
    /// generation and the hash of this node's current public package, so
    /// holders that disagree on the key's state never form a session.
    pub async fn refresh(
        &self,
        key_id: &str,
        participants: &[String],
        nonce: &[u8],
        generation: u64,
    ) -> Result<KeygenResult, NodeError> {
        let meta = self.store.key_meta(key_id)?;
        let scheme_id = meta.scheme()?;
        let scheme = custos_mpc::scheme(scheme_id);
        scheme.check_refreshable().map_err(unsupported)?;
        check_maintenance_nonce(nonce)?;
        if participants != meta.participants.as_slice() {
            return Err(NodeError::InvalidRequest(format!(
                "a refresh of key {key_id} takes every holder in keygen order {:?}, got {participants:?}",
                meta.participants
            )));
        }
        if generation != meta.generation + 1 {
            return Err(NodeError::InvalidRequest(format!(
                "key {key_id}: this signer holds share generation {}, a refresh makes {}, not {generation}",
                meta.generation,
                meta.generation + 1
            )));
        }
        let _busy = self.begin_maintenance(key_id)?;
        // Nothing pooled under the old share survives the refresh, even if
        // it fails half-way.
        self.store.discard_presigs(key_id)?;
        let share = self.store.key_share(key_id)?;
        let package = scheme.share_public_package(&share)?;
        let request = maintenance_request(scheme_id, nonce, &package, generation, &[]);
        let all: Vec<u16> = (0..participants.len() as u16).collect();
        let out = self
            .run_session(
                SessionKind::Refresh,
                key_id,
                participants,
                &request,
                move |io| scheme.refresh(io, share, all),
            )
            .await?;
        if hex::encode(&out.public_key) != meta.public_key {
            return Err(NodeError::Protocol(format!(
                "refresh of key {key_id} produced another public key: old share kept"
            )));
        }
        let new_meta = KeyMeta {
            generation,
            public_package: Some(hex::encode(&out.public_package)),
            ..meta
        };
        self.store.replace_share(&new_meta, &out.share)?;
        self.shares
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key_id);
        tracing::info!(%key_id, generation, "key share refreshed");
        Ok(KeygenResult {
            public_key: out.public_key,
            public_package: out.public_package,
            chain_code: None,
        })
    }

    /// Repair of `lost`'s share of `key_id` by `helpers` (at least the
    /// threshold of the key's other holders; session order: the helpers,
    /// then `lost`). A helper sends its part from its own share; the lost
    /// node rebuilds its share, checks it against its verifying share in
    /// `record.public_package`, and stores it sealed. Every party binds
    /// into the execution id the hash of the public package it holds (the
    /// lost node: the record's), so a record the helpers' shares do not
    /// belong to never forms a session. Returns the public package.
    pub async fn repair(
        &self,
        key_id: &str,
        helpers: &[String],
        lost: &str,
        nonce: &[u8],
        record: &RepairRecord,
    ) -> Result<Vec<u8>, NodeError> {
        validate_id("key id", key_id)?;
        check_maintenance_nonce(nonce)?;
        let mut session = helpers.to_vec();
        session.push(lost.to_owned());
        if helpers.iter().any(|h| h == lost) {
            return Err(NodeError::InvalidRequest(format!(
                "{lost} cannot help repair its own share"
            )));
        }
        if self.node_id == lost {
            return self
                .repair_recover(key_id, helpers, &session, nonce, record)
                .await;
        }
        let meta = self.store.key_meta(key_id)?;
        let scheme_id = meta.scheme()?;
        let scheme = custos_mpc::scheme(scheme_id);
        scheme.check_refreshable().map_err(unsupported)?;
        let (helper_idx, lost_idx) =
            repair_indices(&meta.participants, meta.threshold, helpers, lost)?;
        let _busy = self.begin_maintenance(key_id)?;
        let share = self.store.key_share(key_id)?;
        let package = scheme.share_public_package(&share)?;
        let request =
            maintenance_request(scheme_id, nonce, &package, meta.generation, lost.as_bytes());
        self.run_session(SessionKind::Repair, key_id, &session, &request, move |io| {
            scheme.repair_help(io, share, helper_idx, lost_idx)
        })
        .await?;
        tracing::info!(%key_id, %lost, "helped repair a lost share");
        Ok(package)
    }

    async fn repair_recover(
        &self,
        key_id: &str,
        helpers: &[String],
        session: &[String],
        nonce: &[u8],
        record: &RepairRecord,
    ) -> Result<Vec<u8>, NodeError> {
        let scheme_id = SchemeId::from_name(&record.scheme)
            .map_err(|e| NodeError::InvalidRequest(format!("scheme: {e}")))?;
        let scheme = custos_mpc::scheme(scheme_id);
        scheme.check_refreshable().map_err(unsupported)?;
        // FROST keys have no aux-info group: an empty id is theirs.
        if !record.group_id.is_empty() {
            validate_id("group id", &record.group_id)?;
        }
        self.check_participants(&record.participants, None)?;
        if self.store.key_share(key_id).is_ok() {
            return Err(NodeError::Replay(format!(
                "this signer holds a share of key {key_id}: nothing to repair"
            )));
        }
        if let Ok(old) = self.store.key_meta(key_id)
            && old.generation > record.generation
        {
            return Err(NodeError::InvalidRequest(format!(
                "key {key_id}: this signer recorded share generation {}, newer than the repair's {}",
                old.generation, record.generation
            )));
        }
        let (helper_idx, lost_idx) = repair_indices(
            &record.participants,
            record.threshold,
            helpers,
            &self.node_id,
        )?;
        let _busy = self.begin_maintenance(key_id)?;
        let package = record.public_package.clone();
        let request = maintenance_request(
            scheme_id,
            nonce,
            &package,
            record.generation,
            self.node_id.as_bytes(),
        );
        let out = self
            .run_session(SessionKind::Repair, key_id, session, &request, move |io| {
                scheme.repair_recover(io, package, helper_idx, lost_idx)
            })
            .await?;
        let meta = KeyMeta {
            key_id: key_id.to_owned(),
            group_id: record.group_id.clone(),
            threshold: record.threshold,
            participants: record.participants.clone(),
            public_key: hex::encode(&out.public_key),
            chain_code: None,
            scheme: scheme_id.name().to_owned(),
            generation: record.generation,
            public_package: Some(hex::encode(&out.public_package)),
        };
        // Whatever is left of the lost share (metadata, an unreadable
        // blob) is of this generation or older; the repaired one takes its
        // place.
        match self.store.key_meta(key_id) {
            Ok(old) if old.generation < record.generation => {
                self.store.replace_share(&meta, &out.share)?
            }
            Ok(_) | Err(NodeError::NotFound(_)) => self.store.restore_share(&meta, &out.share)?,
            Err(e) => return Err(e),
        }
        tracing::warn!(%key_id, "lost key share repaired by {} helpers", helpers.len());
        Ok(out.public_package)
    }
}

/// What the lost node needs to know of the key it lost (from the
/// coordinator's record; the helpers check the public package through the
/// execution id).
#[derive(Clone, Debug)]
pub struct RepairRecord {
    /// Scheme name.
    pub scheme: String,
    /// The signer group.
    pub group_id: String,
    /// Threshold.
    pub threshold: u16,
    /// Holders in keygen index order.
    pub participants: Vec<String>,
    /// The key's public package (generation `generation`).
    pub public_package: Vec<u8>,
    /// The share generation the helpers hold.
    pub generation: u64,
}

fn unsupported(e: MpcError) -> NodeError {
    NodeError::InvalidRequest(e.to_string())
}

fn check_maintenance_nonce(nonce: &[u8]) -> Result<(), NodeError> {
    if nonce.len() < 16 {
        return Err(NodeError::InvalidRequest(
            "refresh and repair nonces must be at least 16 bytes".into(),
        ));
    }
    Ok(())
}

/// Keygen indices of the helpers and of the lost holder, checked against
/// the key's holders and threshold.
fn repair_indices(
    participants: &[String],
    threshold: u16,
    helpers: &[String],
    lost: &str,
) -> Result<(Vec<u16>, u16), NodeError> {
    let index = |node: &str| {
        participants
            .iter()
            .position(|p| p == node)
            .map(|i| i as u16)
            .ok_or_else(|| NodeError::InvalidRequest(format!("{node} holds no share of this key")))
    };
    let helper_idx = helpers
        .iter()
        .map(|h| index(h))
        .collect::<Result<Vec<_>, _>>()?;
    if helpers.len() < usize::from(threshold) {
        return Err(NodeError::InvalidRequest(format!(
            "a repair needs at least {threshold} helpers, got {}",
            helpers.len()
        )));
    }
    Ok((helper_idx, index(lost)?))
}

/// The request bytes a refresh's or repair's execution id binds: scheme,
/// the coordinator's nonce, the hash of the public package the party holds
/// (or, repairing, was given), the generation, and the repaired node.
fn maintenance_request(
    scheme: SchemeId,
    nonce: &[u8],
    package: &[u8],
    generation: u64,
    lost: &[u8],
) -> Vec<u8> {
    use sha2::Digest;
    let digest: [u8; 32] = sha2::Sha256::digest(package).into();
    let generation = generation.to_be_bytes();
    let fields: [&[u8]; 5] = [scheme.name().as_bytes(), nonce, &digest, &generation, lost];
    let mut out = Vec::new();
    for field in fields {
        out.extend_from_slice(&(field.len() as u64).to_be_bytes());
        out.extend_from_slice(field);
    }
    out
}

/// What a key generation returns to the coordinator.
#[derive(Clone, Debug)]
pub struct KeygenResult {
    /// The key's public key (the scheme's verifier encoding).
    pub public_key: Vec<u8>,
    /// What combining needs (see `custos_mpc::erased::KeygenOutput`).
    pub public_package: Vec<u8>,
    /// The chain code of an ECDSA key (HD derivation).
    pub chain_code: Option<[u8; 32]>,
}

/// The request bytes a keygen's execution id binds: the coordinator's
/// nonce, and for schemes other than cggmp21 ECDSA (whose execution ids
/// are as they always were) the scheme's name too, so one nonce can never
/// start the same session in two schemes.
fn keygen_request(scheme: SchemeId, nonce: &[u8]) -> Vec<u8> {
    if scheme == SchemeId::EcdsaSecp256k1 {
        return nonce.to_vec();
    }
    let name = scheme.name().as_bytes();
    let mut out = Vec::with_capacity(8 + name.len() + nonce.len());
    out.extend_from_slice(&(name.len() as u64).to_be_bytes());
    out.extend_from_slice(name);
    out.extend_from_slice(nonce);
    out
}

/// How a session's wait ended.
enum SessionEnd<T> {
    Finished(Result<Result<T, MpcError>, tokio::task::JoinError>),
    Undelivered(crate::outbound::Undelivered),
    TimedOut,
}

struct Unregister<'a> {
    router: &'a SessionRouter,
    eid: ExecutionId,
}

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        self.router.unregister(&self.eid);
    }
}

impl From<MpcError> for NodeError {
    fn from(e: MpcError) -> Self {
        NodeError::Internal(e.to_string())
    }
}
