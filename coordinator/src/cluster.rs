//! Orchestration: aux info once per group, keys, the presignature pool, signing.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::key_lock::KeyLocks;
use custos_mpc::MpcError;
use std::time::{Duration, Instant};

use custos_proto::signer::signer_control_client::SignerControlClient;
use custos_proto::signer::{
    AuxInfoRequest, KeygenRequest, PartialSignRequest, PresignRequest, QuorumRegistrationResult,
    QuorumRegistrationResults, QuorumRegistrations, SignRequest, WithdrawalAuthorization,
};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rand::RngCore;
use tonic::Code;
use tonic::transport::Channel;

use crate::db::{Db, KeyRow};
use crate::error::{CoordError, SignerRejection, Unreachable};
use crate::rounds::GroupRounds;
use crate::signers::{Signer, Signers};
use crate::stages::{self, Stage};

mod maintenance;
mod retire;
pub use maintenance::ShareChangeOutcome;
pub use retire::Destruction;

/// Tunables from the config.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Threshold for keys that do not say.
    pub default_threshold: u16,
    /// Ready presignatures kept per key.
    pub pool_target: u32,
    /// Deadline for one partial signature.
    pub partial_timeout: Duration,
    /// Deadline for one protocol session.
    pub session_timeout: Duration,
    /// Deadline for the aux-info ceremony.
    pub aux_info_timeout: Duration,
    /// Unexplained signing failures that lock a key (docs/SECURITY.md promise 3),
    /// each within `lock_window` of the previous.
    pub lock_after_failures: u32,
    /// See `lock_after_failures`.
    pub lock_window: Duration,
}

/// A produced signature.
#[derive(Clone, Debug)]
pub struct SignOutcome {
    /// r (ECDSA keys; zero for other schemes).
    pub r: [u8; 32],
    /// s (low-s; ECDSA keys; zero for other schemes).
    pub s: [u8; 32],
    /// Ethereum recovery id (ECDSA keys).
    pub recovery_id: u8,
    /// The key's signature scheme.
    pub scheme: custos_mpc::SchemeId,
    /// The signature in the scheme's standard encoding (ECDSA `r || s`,
    /// BIP340 `R.x || s`, Ed25519 `R || S`).
    pub signature: Vec<u8>,
    /// Signers that took part.
    pub signers: Vec<String>,
    /// `presignature` or `interactive`.
    pub mode: String,
    /// Presignature used, if any.
    pub presig_id: String,
    /// Time in the signing round.
    pub elapsed: Duration,
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct Metrics {
    /// Signatures produced.
    pub signatures: AtomicU64,
    /// Sign requests that failed.
    pub sign_failures: AtomicU64,
    /// Presignatures generated.
    pub presignatures: AtomicU64,
    /// Presignature generations that failed.
    pub presign_failures: AtomicU64,
    /// Signing latency histogram buckets (ms): 1, 2, 5, 10, 25, 50, 100, 250, 1000, +Inf.
    pub latency_buckets: [AtomicU64; 10],
    /// Sum of signing latency in microseconds.
    pub latency_sum_us: AtomicU64,
}

const BUCKETS_MS: [f64; 9] = [1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0];

impl Metrics {
    fn observe(&self, d: Duration) {
        let ms = d.as_secs_f64() * 1000.0;
        let i = BUCKETS_MS.iter().position(|b| ms <= *b).unwrap_or(9);
        self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Prometheus text for the histogram.
    pub fn histogram_text(&self) -> String {
        let mut out = String::from("# TYPE custos_signing_latency_seconds histogram\n");
        let mut cum = 0;
        for (i, b) in BUCKETS_MS.iter().enumerate() {
            cum += self.latency_buckets[i].load(Ordering::Relaxed);
            out.push_str(&format!(
                "custos_signing_latency_seconds_bucket{{le=\"{}\"}} {cum}\n",
                b / 1000.0
            ));
        }
        cum += self.latency_buckets[9].load(Ordering::Relaxed);
        out.push_str(&format!(
            "custos_signing_latency_seconds_bucket{{le=\"+Inf\"}} {cum}\n"
        ));
        out.push_str(&format!(
            "custos_signing_latency_seconds_sum {}\ncustos_signing_latency_seconds_count {cum}\n",
            self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6
        ));
        out
    }
}

/// The coordinator's domain.
pub struct Cluster {
    /// Database.
    pub db: Db,
    /// Signer group.
    pub signers: Arc<Signers>,
    settings: Settings,
    aux_state: Mutex<String>,
    rotation: AtomicUsize,
    /// Metrics.
    pub metrics: Metrics,
    /// Keys locked after repeated unexplained signing failures.
    pub locks: KeyLocks,
    /// Where locks are logged (set once the log is open).
    audit: Arc<crate::audit::AuditTrail>,
    /// Quorum registrations to the same signers, sent in shared rounds.
    registrations: GroupRounds<Vec<String>, WithdrawalAuthorization, Registered>,
    /// Keys whose shares are being refreshed or repaired (no pool refill).
    maintenance: Mutex<std::collections::HashSet<String>>,
}

/// Each signer's answer to one quorum registration: the time from which it
/// will sign, or the error naming it.
pub type Registered = Vec<(String, Result<i64, CoordError>)>;

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// Validates a caller-supplied id.
pub fn validate_id(field: &str, id: &str) -> Result<(), CoordError> {
    if custos_service::daemon::is_valid_id(id) {
        Ok(())
    } else {
        Err(CoordError::invalid(
            field,
            format!("{id:?} must be 1-64 characters of letters, digits, '-', '_', '.'"),
        ))
    }
}

/// Maps a signer's reply to our error, naming the signer; notes on the
/// signer what the reply says about it (unreachable, or our leadership fenced).
fn signer_error(signer: &Signer, s: &tonic::Status) -> CoordError {
    let fenced = signer.fenced(s).is_some();
    // A signer that reports a peer it cannot reach answered us: it is the
    // peer that is unreachable (from it), not the reporter.
    if !fenced
        && matches!(
            s.code(),
            Code::Unavailable | Code::Unknown | Code::Cancelled
        )
        && crate::signers::reported_culprit(s).is_none()
    {
        signer.mark_unreachable(s.message());
    }
    signer_failure(&signer.endpoint.node_id, fenced, s)
}

/// The error for signer `node`'s failed answer `s`, keeping the signer (and
/// the peer or peers its answer names) as data. `fenced`: the answer refuses
/// us as a coordinator whose leadership is over.
fn signer_failure(node: &str, fenced: bool, s: &tonic::Status) -> CoordError {
    let signer = node.to_owned();
    let message = s.message().to_owned();
    // A fenced coordinator's request: retryable by whoever leads now (never
    // a failure of the withdrawal), and our leadership is over.
    if fenced {
        return CoordError::Unavailable {
            signer: Some(signer),
            reason: format!("refused: {message}"),
        };
    }
    let rejected = |kind| CoordError::SignerRejected {
        signer: node.to_owned(),
        kind,
        message: message.clone(),
    };
    match s.code() {
        Code::Unavailable | Code::Unknown | Code::Cancelled => {
            match crate::signers::reported_culprit(s).filter(|peer| *peer != signer) {
                // The signer answered: the peer it names is the one it
                // could not reach.
                Some(peer) => CoordError::Unavailable {
                    signer: Some(peer),
                    reason: format!("unreachable from {signer}: {message}"),
                },
                None => CoordError::Unavailable {
                    signer: Some(signer),
                    reason: format!("unreachable: {message}"),
                },
            }
        }
        Code::DeadlineExceeded => CoordError::DeadlineExceeded {
            waiting_for: crate::signers::reported_waiting_for(s),
            reporter: Some(signer),
            reason: message,
        },
        Code::Aborted => CoordError::Aborted {
            culprit: crate::signers::reported_culprit(s),
            reporter: Some(signer),
            suspects: Vec::new(),
            reason: message,
        },
        Code::PermissionDenied => CoordError::Refused {
            signer,
            reason: message,
        },
        Code::InvalidArgument => rejected(SignerRejection::InvalidRequest),
        Code::FailedPrecondition => rejected(SignerRejection::NotReady),
        Code::AlreadyExists => rejected(SignerRejection::Replay),
        Code::NotFound => rejected(SignerRejection::NotFound),
        _ => rejected(SignerRejection::Internal),
    }
}

/// Runs one call per participant concurrently; the first failure aborts the
/// rest (a misbehaving peer is reported by the honest ones within moments,
/// no need to wait for the culprit's own timeout).
async fn all_or_first_error<T, F, Fut>(
    signers: Vec<Arc<Signer>>,
    deadline: Duration,
    call: F,
) -> Result<Vec<T>, CoordError>
where
    F: Fn(Arc<Signer>) -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let mut pending: FuturesUnordered<_> = signers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let fut = call(s.clone());
            let s = s.clone();
            async move {
                let r = tokio::time::timeout(deadline, fut).await;
                (i, s, r)
            }
        })
        .collect();
    let mut out: Vec<Option<T>> = (0..signers.len()).map(|_| None).collect();
    while let Some((i, s, r)) = pending.next().await {
        match r {
            Ok(Ok(v)) => out[i] = Some(v),
            Ok(Err(status)) => {
                let e = signer_error(&s, &status);
                // A peer-misbehaviour report names the culprit: prefer it.
                if matches!(e, CoordError::Aborted { .. }) {
                    return Err(e);
                }
                // Give the others a moment to report who caused it.
                if let Ok(Some((_, s2, Ok(Err(st2))))) =
                    tokio::time::timeout(Duration::from_secs(2), pending.next()).await
                {
                    let e2 = signer_error(&s2, &st2);
                    if matches!(e2, CoordError::Aborted { .. }) {
                        return Err(e2);
                    }
                }
                return Err(e);
            }
            Err(_) => {
                return Err(CoordError::silent(
                    &s.endpoint.node_id,
                    format!("did not answer within {}s", deadline.as_secs()),
                ));
            }
        }
    }
    out.into_iter()
        .map(|v| v.ok_or_else(|| CoordError::Internal("missing result".into())))
        .collect()
}

/// A combined, verified signature.
#[derive(Clone, Debug)]
struct Combined {
    signature: Vec<u8>,
    /// ECDSA keys: `r`, `s` and the Ethereum recovery id.
    ecdsa: Option<([u8; 32], [u8; 32], u8)>,
}

/// Combines the signers' partial signatures through the key's scheme (the
/// `custos_mpc` seam); the combined signature is verified, so a bad partial
/// is reported instead of producing an invalid signature: by its signer
/// where the scheme can tell (a partial that does not parse; FROST's
/// cheater detection), else with the signer set.
fn combine_partials(
    key: &KeyRow,
    partials: &[Vec<u8>],
    signer_ids: &[String],
    message: &[u8],
    presig_id: &str,
    presig_public: &[u8],
) -> Result<Combined, CoordError> {
    let scheme = custos_mpc::scheme(key.scheme);
    let package = key
        .combine_package()
        .ok_or_else(|| CoordError::Internal("stored public key".into()))?;
    let indexed = signer_ids
        .iter()
        .zip(partials)
        .map(|(n, p)| {
            key.participants
                .iter()
                .position(|x| x == n)
                .and_then(|k| u16::try_from(k).ok())
                .map(|k| (k, p.as_slice()))
                .ok_or_else(|| {
                    CoordError::Internal(format!("{n} holds no share of key {}", key.key_id))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let node = |k: u16| key.participants.get(usize::from(k)).cloned();
    let aborted =
        |culprit: Option<String>, suspects: Vec<String>, reason: String| CoordError::Aborted {
            culprit,
            reporter: None,
            suspects,
            reason,
        };
    let signature = scheme
        .combine(package, presig_public, message, &indexed)
        .map_err(|e| match e {
            MpcError::MalformedPartial { party, .. } => aborted(
                node(party),
                Vec::new(),
                "returned a malformed partial signature".into(),
            ),
            MpcError::WrongSigningPackage { party } => aborted(
                node(party),
                Vec::new(),
                format!(
                    "signed another message or other nonce commitments than presignature {presig_id} holds (discarded, not retried)"
                ),
            ),
            MpcError::InvalidSignatureShare { parties } => {
                let named: Vec<String> = parties.iter().filter_map(|k| node(*k)).collect();
                aborted(
                    named.first().cloned(),
                    named.clone(),
                    format!(
                        "sent an invalid signature share for presignature {presig_id} (signers at fault: {}; discarded, not retried)",
                        named.join(", ")
                    ),
                )
            }
            MpcError::InvalidInput(m) | MpcError::InvalidState(m) => {
                CoordError::Internal(format!("combining for key {}: {m}", key.key_id))
            }
            _ => aborted(
                None,
                signer_ids.to_vec(),
                format!(
                    "combined signature from presignature {presig_id} does not verify: a partial from one of {} was invalid (presignature discarded, not retried)",
                    signer_ids.join(", ")
                ),
            ),
        })?;
    // ECDSA signatures also travel as r, s and the recovery id EVM
    // transactions need.
    let ecdsa = if key.scheme == custos_mpc::SchemeId::EcdsaSecp256k1 {
        let (r, s) = split_rs(&signature)
            .ok_or_else(|| CoordError::Internal("an ECDSA signature is not 64 bytes".into()))?;
        let public_key = key.public_key.as_deref().unwrap_or_default();
        let digest: &[u8; 32] = message
            .try_into()
            .map_err(|_| CoordError::Internal("an ECDSA digest is not 32 bytes".into()))?;
        let recovery_id = custos_chains::evm::signature::recovery_id(public_key, digest, &r, &s)
            .ok_or_else(|| CoordError::Internal("signature verifies but recovers no key".into()))?;
        Some((r, s, recovery_id))
    } else {
        None
    };
    Ok(Combined { signature, ecdsa })
}

fn split_rs(signature: &[u8]) -> Option<([u8; 32], [u8; 32])> {
    let r = signature.get(..32)?.try_into().ok()?;
    let s = signature.get(32..64)?.try_into().ok()?;
    (signature.len() == 64).then_some((r, s))
}

/// The outcome of a signing from a presignature.
fn outcome(
    key: &KeyRow,
    combined: Combined,
    signer_ids: &[String],
    mode: &str,
    presig_id: &str,
) -> SignOutcome {
    let (r, s, recovery_id) = combined.ecdsa.unwrap_or(([0; 32], [0; 32], 0));
    SignOutcome {
        r,
        s,
        recovery_id,
        scheme: key.scheme,
        signature: combined.signature,
        signers: signer_ids.to_vec(),
        mode: mode.to_owned(),
        presig_id: presig_id.to_owned(),
        elapsed: Duration::ZERO,
    }
}

/// Refuses a wallet key whose scheme its chain cannot spend with: EVM
/// accounts are ECDSA; Bitcoin-format coins are P2WPKH (ECDSA) or P2TR
/// (BIP340, FROST secp256k1-tr); the `message` chain signs with any key.
fn check_scheme_for_chain(chain: &str, scheme: custos_mpc::SchemeId) -> Result<(), CoordError> {
    use custos_chains::ChainFamily;
    use custos_mpc::SchemeId;
    let fits = match custos_chains::family_of(chain) {
        None | Some(ChainFamily::Message) => true,
        Some(ChainFamily::Evm) => scheme == SchemeId::EcdsaSecp256k1,
        Some(ChainFamily::Utxo(_)) => scheme != SchemeId::Ed25519,
    };
    if fits {
        Ok(())
    } else {
        Err(CoordError::invalid(
            "scheme",
            format!("a {scheme} key cannot hold coins on chain {chain}"),
        ))
    }
}

/// An interactive signature whose `which` component is malformed: the
/// signature is the first signer's answer, so that signer is the culprit.
fn malformed_signature(ids: &[String], which: &str) -> CoordError {
    CoordError::Aborted {
        culprit: ids.first().cloned(),
        reporter: None,
        suspects: Vec::new(),
        reason: format!("returned a malformed {which}"),
    }
}

impl Cluster {
    /// Wires the domain.
    pub fn new(
        db: Db,
        signers: Arc<Signers>,
        audit: Arc<crate::audit::AuditTrail>,
        settings: Settings,
    ) -> Arc<Cluster> {
        let locks = KeyLocks::new(
            db.pool().clone(),
            settings.lock_after_failures,
            settings.lock_window,
        );
        Arc::new(Cluster {
            locks,
            audit,
            db,
            signers,
            settings,
            aux_state: Mutex::new("none".into()),
            rotation: AtomicUsize::new(0),
            metrics: Metrics::default(),
            registrations: GroupRounds::new(custos_proto::MAX_QUORUM_REGISTRATIONS),
            maintenance: Mutex::default(),
        })
    }

    /// The combined signature of `key`, counted: a failure no one can
    /// explain counts toward locking the key.
    async fn counted(
        &self,
        key_id: &str,
        combined: Result<Combined, CoordError>,
    ) -> Result<Combined, CoordError> {
        match combined {
            Ok(sig) => Ok(sig),
            Err(e) => {
                match self.locks.failure(key_id, &e.to_string()).await {
                    Ok(Some(n)) => {
                        tracing::error!(key_id, failures = n, error = %e, "key locked for signing");
                        // The lock is stored; logging it must not undo it.
                        if let Err(le) = self
                            .audit
                            .append(custos_audit::EntryBody::KeyLockChanged {
                                key_id: key_id.to_owned(),
                                locked: true,
                                actor: "coordinator".into(),
                                reason: format!("{n} unexplained signing failures; last: {e}"),
                            })
                            .await
                        {
                            tracing::error!(key_id, error = %le, "key lock not logged");
                        }
                    }
                    Ok(None) => {}
                    Err(se) => {
                        tracing::error!(key_id, error = %se, "signing failure not counted")
                    }
                }
                Err(e)
            }
        }
    }

    /// Refuses a retired key, naming it (typed: [`CoordError::KeyRetired`]).
    /// The signers refuse it on their own too; this only answers early.
    pub async fn check_not_retired(&self, key: &KeyRow) -> Result<(), CoordError> {
        if key.state != "retired" {
            return Ok(());
        }
        let l = self.db.lifecycle(&key.key_id).await?;
        Err(CoordError::KeyRetired {
            key_id: key.key_id.clone(),
            retired_at: l.retired_at.unwrap_or_default(),
            successor: l.successor,
        })
    }

    /// Threshold of new keys when a request does not say.
    pub fn default_threshold(&self) -> u16 {
        self.settings.default_threshold
    }

    /// `none`, `waiting: ...`, `running`, `ready`, `failed: ...`.
    pub fn aux_state(&self) -> String {
        self.aux_state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_aux_state(&self, s: impl Into<String>) {
        *self.aux_state.lock().unwrap_or_else(|p| p.into_inner()) = s.into();
    }

    /// Makes sure the signer group has aux info: waits until every signer
    /// is reachable and has primes, then runs the ceremony once. Retries
    /// with a fresh group id on failure.
    pub async fn ensure_aux(self: Arc<Self>) {
        loop {
            match self.db.ready_group().await {
                Ok(Some(_)) => {
                    self.set_aux_state("ready");
                    return;
                }
                Ok(None) => {}
                Err(e) => {
                    self.set_aux_state(format!("failed: {e}"));
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
            }
            let health = self.signers.probe_all().await;
            if let Some(group_id) = common_fixture_group(&health) {
                // Dev and test clusters import their aux info from a fixture
                // (the signers accept it only in a debug build of a dev
                // cluster): adopt the group every signer reports.
                let participants = self.signers.group();
                match self.db.set_group(&group_id, &participants, "ready").await {
                    Ok(()) => {
                        tracing::info!(%group_id, "aux info adopted from the signers' dev fixture");
                        self.set_aux_state("ready");
                        return;
                    }
                    Err(e) => {
                        self.set_aux_state(format!("failed: {e}"));
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        continue;
                    }
                }
            }
            let not_ready: Vec<String> = health
                .iter()
                .filter(|(_, h)| {
                    !h.reachable || !(h.state == "primes-ready" || h.state == "aux-ready")
                })
                .map(|(n, h)| {
                    if h.reachable {
                        format!("{n} {}", h.state)
                    } else {
                        format!("{n} unreachable")
                    }
                })
                .collect();
            if !not_ready.is_empty() {
                self.set_aux_state(format!("waiting: {}", not_ready.join(", ")));
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            let group_id = format!("group-{}", random_hex(6));
            let participants = self.signers.group();
            self.set_aux_state("running");
            tracing::info!(%group_id, "running aux-info generation for the signer group");
            if let Err(e) = self.db.set_group(&group_id, &participants, "running").await {
                self.set_aux_state(format!("failed: {e}"));
                continue;
            }
            let members: Vec<Arc<Signer>> = participants
                .iter()
                .filter_map(|n| self.signers.get(n).cloned())
                .collect();
            let epoch = match self.signers.epoch() {
                Ok(e) => e,
                Err(e) => {
                    self.set_aux_state(format!("failed: {e}"));
                    return;
                }
            };
            let req = AuxInfoRequest {
                group_id: group_id.clone(),
                participants: participants.clone(),
                coordinator_epoch: epoch,
            };
            let result = all_or_first_error(members, self.settings.aux_info_timeout, |s| {
                let req = req.clone();
                async move { s.client().aux_info(req).await.map(|_| ()) }
            })
            .await;
            match result {
                Ok(_) => {
                    if let Err(e) = self.db.set_group(&group_id, &participants, "ready").await {
                        self.set_aux_state(format!("failed: {e}"));
                        continue;
                    }
                    tracing::info!(%group_id, "aux info ready");
                    self.set_aux_state("ready");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "aux-info generation failed; retrying");
                    let _ = self.db.set_group(&group_id, &participants, "failed").await;
                    self.set_aux_state(format!("failed: {e}"));
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
            }
        }
    }

    /// Creates a key in `scheme` with every signer of the group. Schemes
    /// whose key generation needs aux info (cggmp21) wait for the group's;
    /// the others (FROST) run their DKG on the configured signers directly.
    pub async fn create_key(
        &self,
        key_id: &str,
        threshold: u16,
        chain: &str,
        scheme_id: custos_mpc::SchemeId,
    ) -> Result<KeyRow, CoordError> {
        let key_id = if key_id.is_empty() {
            format!("key-{}", random_hex(8))
        } else {
            key_id.to_owned()
        };
        validate_id("key_id", &key_id)?;
        let threshold = if threshold == 0 {
            self.settings.default_threshold
        } else {
            threshold
        };
        let n = self.signers.all.len() as u16;
        if threshold < 2 || threshold > n {
            return Err(CoordError::invalid(
                "threshold",
                format!("{threshold} must be between 2 and {n}"),
            ));
        }
        if !chain.is_empty() && usize::from(threshold) * 2 <= usize::from(n) {
            // Signers refuse withdrawals on such a key (two disjoint signer
            // sets could each sign one withdrawal): say so before keygen.
            return Err(CoordError::invalid(
                "threshold",
                format!(
                    "a wallet key for chain {chain} needs more than half of the {n} signers ({} or more), not {threshold}",
                    n / 2 + 1
                ),
            ));
        }
        check_scheme_for_chain(chain, scheme_id)?;
        let scheme = custos_mpc::scheme(scheme_id);
        let (group_id, participants) = if scheme.needs_aux_info() {
            self.db.ready_group().await?.ok_or_else(|| {
                CoordError::precondition(
                    "cluster",
                    "aux-info",
                    format!("is not ready ({})", self.aux_state()),
                )
            })?
        } else {
            (String::new(), self.signers.group())
        };
        let members = self.require_live(&participants, participants.len()).await?;
        let epoch = self.signers.epoch()?;
        self.db
            .insert_key(
                &key_id,
                &group_id,
                threshold,
                &participants,
                chain,
                scheme_id,
            )
            .await?;
        let mut nonce = vec![0u8; 32];
        rand::thread_rng().fill_bytes(&mut nonce);
        let req = KeygenRequest {
            key_id: key_id.clone(),
            group_id,
            participants: participants.clone(),
            threshold: u32::from(threshold),
            nonce,
            coordinator_epoch: epoch,
            scheme: scheme_id.name().to_owned(),
        };
        let result = all_or_first_error(members, self.settings.session_timeout, |s| {
            let req = req.clone();
            async move {
                s.client().keygen(req).await.map(|r| {
                    let r = r.into_inner();
                    (r.public_key, r.public_package, r.scheme, r.chain_code)
                })
            }
        })
        .await;
        let keys = match result {
            Ok(k) => k,
            Err(e) => {
                self.db.finish_key(&key_id, None, None, None).await?;
                return Err(e);
            }
        };
        let first = keys.first().cloned().unwrap_or_default();
        // The chain code too: addresses derived with another chain code
        // than the signers' shares carry could not be spent.
        if keys.iter().any(|k| *k != first) || first.2 != scheme_id.name() {
            self.db.finish_key(&key_id, None, None, None).await?;
            return Err(CoordError::Aborted {
                culprit: None,
                reporter: None,
                suspects: participants.clone(),
                reason: "signers disagree on the public key or its chain code; key discarded"
                    .into(),
            });
        }
        let (public_key, package, _, chain_code) = first;
        // ECDSA keys carry a chain code for HD derivation; FROST keys none.
        let chain_code = (scheme_id == custos_mpc::SchemeId::EcdsaSecp256k1).then_some(chain_code);
        if chain_code.as_ref().is_some_and(|c| c.len() != 32) {
            self.db.finish_key(&key_id, None, None, None).await?;
            return Err(CoordError::Aborted {
                culprit: None,
                reporter: None,
                suspects: participants.clone(),
                reason: format!(
                    "signers returned a chain code of {} bytes, not 32; key discarded",
                    chain_code.as_ref().map_or(0, Vec::len)
                ),
            });
        }
        // The wallet's address in its chain's format (EIP-55, or P2WPKH on
        // a UTXO chain); an ECDSA key without a chain gets its Ethereum
        // address, a key of another scheme without a chain none.
        let on = match (chain.is_empty(), scheme_id) {
            (false, _) => Some(chain),
            (true, custos_mpc::SchemeId::EcdsaSecp256k1) => Some("ethereum"),
            (true, _) => None,
        };
        let address = on
            .map(|on| {
                custos_chains::family::wallet_address(on, &public_key)
                    .map_err(|e| CoordError::Internal(format!("key {key_id} on {on}: {e}")))
            })
            .transpose()?;
        self.db
            .finish_key(
                &key_id,
                Some((&public_key, &package)),
                chain_code.as_deref(),
                address.as_deref(),
            )
            .await?;
        self.db
            .key(&key_id)
            .await?
            .ok_or_else(|| CoordError::Internal("key vanished".into()))
    }

    /// The participants that are reachable, or an error naming those that are not.
    async fn require_live(
        &self,
        participants: &[String],
        need: usize,
    ) -> Result<Vec<Arc<Signer>>, CoordError> {
        let pick = || -> (Vec<Arc<Signer>>, Vec<Unreachable>) {
            let mut live = Vec::new();
            let mut down = Vec::new();
            for p in participants {
                match self.signers.get(p) {
                    Some(s) if s.health().reachable => live.push(s.clone()),
                    Some(s) => down.push(Unreachable {
                        signer: p.clone(),
                        endpoint: Some(s.endpoint.endpoint.clone()),
                    }),
                    None => down.push(Unreachable {
                        signer: p.clone(),
                        endpoint: None,
                    }),
                }
            }
            (live, down)
        };
        let (live, _) = pick();
        if live.len() >= need {
            return Ok(live);
        }
        // The cache may be stale: probe now before refusing.
        for p in participants {
            if let Some(s) = self.signers.get(p)
                && !s.health().reachable
            {
                s.probe().await;
            }
        }
        let (live, missing) = pick();
        if live.len() >= need {
            return Ok(live);
        }
        Err(CoordError::SignersUnavailable {
            needed: need,
            reachable: live.len(),
            missing,
        })
    }

    /// Signs a digest (ECDSA) or message (FROST): from a pooled
    /// presignature or nonce commitments when one is ready with live
    /// signers, else interactively (ECDSA) or from a fresh commitment round
    /// (FROST). A request id signs at most once.
    pub async fn sign_digest(
        &self,
        key_id: &str,
        digest: &[u8],
        request_id: &str,
        interactive: bool,
    ) -> Result<SignOutcome, CoordError> {
        validate_id("key_id", key_id)?;
        if request_id.is_empty() || request_id.len() > 128 {
            return Err(CoordError::invalid(
                "request_id",
                "must be 1-128 characters",
            ));
        }
        if digest.is_empty() || digest.len() > custos_mpc::erased::MAX_MESSAGE {
            return Err(CoordError::invalid(
                "digest",
                format!(
                    "must be 1-{} bytes, got {}",
                    custos_mpc::erased::MAX_MESSAGE,
                    digest.len()
                ),
            ));
        }
        let key = self
            .db
            .key(key_id)
            .await?
            .ok_or_else(|| CoordError::not_found("key", key_id))?;
        custos_mpc::scheme(key.scheme)
            .check_message(digest)
            .map_err(|e| CoordError::invalid("digest", e.to_string()))?;
        self.check_not_retired(&key).await?;
        let public_key = match (&key.state[..], &key.public_key) {
            ("ready", Some(pk)) => pk.clone(),
            _ => {
                return Err(CoordError::precondition(
                    "key",
                    key_id,
                    format!("is {}", key.state),
                ));
            }
        };
        self.locks.check(key_id).await?;
        let began = Instant::now();
        let begun = self.db.begin_sign(request_id, key_id, digest).await?;
        stages::since(Stage::SignCommit, began);
        if let Some(prev) = begun {
            return self.previous_outcome(request_id, &key, digest, prev);
        }
        let started = Instant::now();
        let result = self
            .sign_attempts(&key, &public_key, digest, request_id, interactive)
            .await;
        match result {
            Ok(mut outcome) => {
                outcome.elapsed = started.elapsed();
                let finishing = Instant::now();
                let ecdsa = (outcome.scheme == custos_mpc::SchemeId::EcdsaSecp256k1).then_some((
                    &outcome.r[..],
                    &outcome.s[..],
                    outcome.recovery_id,
                ));
                self.db
                    .finish_sign(
                        request_id,
                        &outcome.mode,
                        &outcome.signers,
                        ecdsa,
                        Some(&outcome.signature),
                        None,
                    )
                    .await?;
                stages::since(Stage::SignCommit, finishing);
                self.metrics.signatures.fetch_add(1, Ordering::Relaxed);
                self.metrics.observe(outcome.elapsed);
                Ok(outcome)
            }
            Err(e) => {
                self.metrics.sign_failures.fetch_add(1, Ordering::Relaxed);
                self.db
                    .finish_sign(request_id, "", &[], None, None, Some(&e.to_string()))
                    .await?;
                Err(e)
            }
        }
    }

    fn previous_outcome(
        &self,
        request_id: &str,
        key: &KeyRow,
        digest: &[u8],
        prev: crate::db::SignRow,
    ) -> Result<SignOutcome, CoordError> {
        if prev.key_id != key.key_id || prev.digest != digest {
            return Err(CoordError::already_exists(
                "request_id",
                request_id,
                "was already used for a different key or digest",
            ));
        }
        if prev.state != "signed" {
            return Err(CoordError::precondition(
                "request_id",
                request_id,
                format!(
                    "was already attempted ({}{}); a request is never signed twice",
                    prev.state,
                    prev.error.map(|e| format!(": {e}")).unwrap_or_default()
                ),
            ));
        }
        // Rows from before the signature column hold ECDSA r and s only.
        let signature = match (&prev.signature, &prev.r, &prev.s) {
            (Some(sig), _, _) => sig.clone(),
            (None, Some(r), Some(s)) => [r.as_slice(), s.as_slice()].concat(),
            _ => return Err(CoordError::Internal("stored signature".into())),
        };
        let (r, s) = match (&prev.r, &prev.s) {
            (Some(r), Some(s)) => (
                r.clone()
                    .try_into()
                    .map_err(|_| CoordError::Internal("stored r".into()))?,
                s.clone()
                    .try_into()
                    .map_err(|_| CoordError::Internal("stored s".into()))?,
            ),
            _ => ([0; 32], [0; 32]),
        };
        Ok(SignOutcome {
            r,
            s,
            recovery_id: prev
                .recovery_id
                .and_then(|v| u8::try_from(v).ok())
                .unwrap_or(0),
            scheme: key.scheme,
            signature,
            signers: serde_json::from_str(prev.signers.as_deref().unwrap_or("[]"))
                .unwrap_or_default(),
            mode: prev.mode.unwrap_or_default(),
            presig_id: prev.presig_id.unwrap_or_default(),
            elapsed: Duration::ZERO,
        })
    }

    async fn sign_attempts(
        &self,
        key: &KeyRow,
        public_key: &[u8],
        digest: &[u8],
        request_id: &str,
        interactive: bool,
    ) -> Result<SignOutcome, CoordError> {
        let t = usize::from(key.threshold);
        let scheme = custos_mpc::scheme(key.scheme);
        let mut last_err = None;
        for _attempt in 0..3 {
            let live = self.require_live(&key.participants, t).await?;
            let live_ids: Vec<String> = live.iter().map(|s| s.endpoint.node_id.clone()).collect();
            // Take the first ready presignature whose signers are all live;
            // concurrent requests race for each row, and a loser moves on to
            // the next one (exactly one request can win a presignature).
            let mut pooled = None;
            let mut fresh = false;
            if !interactive {
                for (presig_id, signers) in self.db.ready_presigs(&key.key_id).await? {
                    if !signers.iter().all(|s| live_ids.contains(s)) {
                        continue;
                    }
                    let taking = Instant::now();
                    let taken = self.db.take_presig(&presig_id, request_id).await?;
                    stages::since(Stage::SignCommit, taking);
                    if taken {
                        pooled = Some((presig_id, signers));
                        break;
                    }
                }
            }
            if pooled.is_none() && !scheme.interactive_signing() {
                // No interactive protocol (FROST): a commitment round among
                // live signers now, then the signing round from it. The
                // subset rotates, as for pool refills, so every live signer
                // (a repaired one too) takes its turn.
                let ids: Vec<String> = self.rotated(live_ids.clone()).into_iter().take(t).collect();
                match self.presign_among(key, Some(&ids)).await {
                    Ok((presig_id, signers)) => {
                        if self.db.take_presig(&presig_id, request_id).await? {
                            pooled = Some((presig_id, signers));
                            fresh = true;
                        } else {
                            continue;
                        }
                    }
                    Err(e) if e.is_unavailable() || e.is_transient() => {
                        last_err = Some(e);
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            if let Some((presig_id, signers)) = pooled {
                match self
                    .sign_with_presig(key, digest, request_id, &presig_id, &signers)
                    .await
                {
                    Ok(mut o) => {
                        if fresh {
                            o.mode = "interactive".into();
                        }
                        return Ok(o);
                    }
                    Err(e) if e.is_transient() => {
                        // The presignature is burned (consumed on the signers that answered); try again.
                        tracing::warn!(%presig_id, error = %e, "presignature signing failed; retrying");
                        last_err = Some(e);
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            let digest: &[u8; 32] = digest
                .try_into()
                .map_err(|_| CoordError::invalid("digest", "must be 32 bytes"))?;
            let signers: Vec<Arc<Signer>> = live.into_iter().take(t).collect();
            match self
                .sign_interactive(key, public_key, digest, request_id, signers)
                .await
            {
                Ok(o) => return Ok(o),
                Err(e) if e.is_unavailable() => {
                    last_err = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| CoordError::unavailable("no signing attempt succeeded")))
    }

    /// The public half of a presignature the coordinator stored when its
    /// signers agreed on it.
    async fn presig_public(&self, presig_id: &str) -> Result<Vec<u8>, CoordError> {
        self.db.presig_public(presig_id).await?.ok_or_else(|| {
            CoordError::Internal(format!("presignature {presig_id} has no public half"))
        })
    }

    async fn sign_with_presig(
        &self,
        key: &KeyRow,
        digest: &[u8],
        request_id: &str,
        presig_id: &str,
        signer_ids: &[String],
    ) -> Result<SignOutcome, CoordError> {
        let signers: Vec<Arc<Signer>> = signer_ids
            .iter()
            .filter_map(|n| self.signers.get(n).cloned())
            .collect();
        let presig_public = self.presig_public(presig_id).await?;
        let req = PartialSignRequest {
            key_id: key.key_id.clone(),
            presignature_id: presig_id.to_owned(),
            digest: digest.to_vec(),
            request_id: request_id.to_owned(),
            coordinator_epoch: self.signers.epoch()?,
        };
        let calling = Instant::now();
        let partials = all_or_first_error(signers, self.settings.partial_timeout, |s| {
            let req = req.clone();
            async move {
                s.client()
                    .partial_sign(req)
                    .await
                    .map(|r| r.into_inner().partial_signature)
            }
        })
        .await?;
        stages::since(Stage::SignerCalls, calling);
        let combined = self
            .combine_counted(
                key,
                &partials,
                signer_ids,
                digest,
                presig_id,
                &presig_public,
            )
            .await?;
        Ok(outcome(
            key,
            combined,
            signer_ids,
            "presignature",
            presig_id,
        ))
    }

    async fn sign_interactive(
        &self,
        key: &KeyRow,
        public_key: &[u8],
        digest: &[u8; 32],
        request_id: &str,
        signers: Vec<Arc<Signer>>,
    ) -> Result<SignOutcome, CoordError> {
        let ids: Vec<String> = signers.iter().map(|s| s.endpoint.node_id.clone()).collect();
        let req = SignRequest {
            key_id: key.key_id.clone(),
            signers: ids.clone(),
            digest: digest.to_vec(),
            request_id: request_id.to_owned(),
            coordinator_epoch: self.signers.epoch()?,
        };
        let sigs = all_or_first_error(signers, self.settings.session_timeout, |s| {
            let req = req.clone();
            async move { s.client().sign(req).await.map(|r| r.into_inner()) }
        })
        .await?;
        let first = sigs
            .first()
            .ok_or_else(|| CoordError::Internal("no signature".into()))?;
        let r: [u8; 32] = first
            .r
            .clone()
            .try_into()
            .map_err(|_| malformed_signature(&ids, "r"))?;
        let s: [u8; 32] = first
            .s
            .clone()
            .try_into()
            .map_err(|_| malformed_signature(&ids, "s"))?;
        let recovery_id = custos_chains::evm::signature::recovery_id(public_key, digest, &r, &s)
            .ok_or_else(|| CoordError::Aborted {
                culprit: None,
                reporter: None,
                suspects: ids.clone(),
                reason: format!("signature from {} does not verify", ids.join(", ")),
            })?;
        Ok(SignOutcome {
            r,
            s,
            recovery_id,
            scheme: key.scheme,
            signature: [r, s].concat(),
            signers: ids,
            mode: "interactive".into(),
            presig_id: String::new(),
            elapsed: Duration::ZERO,
        })
    }

    /// Keeps each ready key's pool of presignatures at the target size
    /// until `stop` is cancelled. A presignature round in progress then
    /// finishes (its signers are mid-protocol; one cut off is discarded at
    /// the next start as interrupted), and no other starts.
    pub async fn refill_pool(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        if self.settings.pool_target == 0 {
            return;
        }
        while !stop.is_cancelled() {
            let did = self.refill_once().await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "presignature refill failed");
                false
            });
            if !did {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
        }
    }

    async fn refill_once(&self) -> Result<bool, CoordError> {
        for key in self.db.keys().await? {
            if key.state != "ready" || self.in_maintenance(&key.key_id) {
                continue;
            }
            if self.db.ready_presigs(&key.key_id).await?.len() as u32 >= self.settings.pool_target {
                continue;
            }
            if let Err(e) = self.presign_now(&key).await {
                tracing::debug!(key_id = %key.key_id, error = %e, "presignature refill skipped");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            return Ok(true);
        }
        Ok(false)
    }

    /// `live` rotated by the next step of the cluster's rotation, so that
    /// taking its first t spreads work over every live signer.
    fn rotated<T>(&self, mut live: Vec<T>) -> Vec<T> {
        let shift = self.rotation.fetch_add(1, Ordering::Relaxed) % live.len().max(1);
        live.rotate_left(shift);
        live
    }

    /// Generates one presignature for `key` now with a rotating subset of live
    /// signers; returns its id and signers once every signer reports the same
    /// nonce point.
    pub async fn presign_now(&self, key: &KeyRow) -> Result<(String, Vec<String>), CoordError> {
        self.presign_among(key, None).await
    }

    /// [`Self::presign_now`], with exactly the signers `only` when given (a
    /// fee bump is signed by the signers that signed the transaction it
    /// replaces: they are the ones that can check it replaces it).
    pub async fn presign_among(
        &self,
        key: &KeyRow,
        only: Option<&[String]>,
    ) -> Result<(String, Vec<String>), CoordError> {
        let t = usize::from(key.threshold);
        let chosen: Vec<Arc<Signer>> = match only {
            Some(ids) => {
                if ids.len() != t {
                    return Err(CoordError::Internal(format!(
                        "a presignature needs {t} signers, not {}",
                        ids.join(", ")
                    )));
                }
                self.require_live(ids, t).await?
            }
            None => {
                // Rotate subsets so every signer's presignatures are spread.
                let live = self.require_live(&key.participants, t).await?;
                self.rotated(live).into_iter().take(t).collect()
            }
        };
        let ids: Vec<String> = chosen.iter().map(|s| s.endpoint.node_id.clone()).collect();
        let epoch = self.signers.epoch()?;
        let presig_id = format!("ps-{}", random_hex(10));
        self.db.insert_presig(&presig_id, &key.key_id, &ids).await?;
        let req = PresignRequest {
            key_id: key.key_id.clone(),
            presignature_id: presig_id.clone(),
            signers: ids.clone(),
            coordinator_epoch: epoch,
        };
        let result = all_or_first_error(chosen, self.settings.session_timeout, |s| {
            let req = req.clone();
            async move {
                s.client()
                    .presign(req)
                    .await
                    .map(|r| r.into_inner().nonce_point)
            }
        })
        .await;
        match result {
            Ok(nonces) if nonces.windows(2).all(|w| w[0] == w[1]) => {
                self.db
                    .set_presig(&presig_id, "ready", nonces.first().map(Vec::as_slice))
                    .await?;
                self.metrics.presignatures.fetch_add(1, Ordering::Relaxed);
                Ok((presig_id, ids))
            }
            Ok(_) => {
                self.db.set_presig(&presig_id, "failed", None).await?;
                self.metrics
                    .presign_failures
                    .fetch_add(1, Ordering::Relaxed);
                Err(CoordError::Aborted {
                    culprit: None,
                    reporter: None,
                    suspects: ids.clone(),
                    reason: format!(
                        "signers {} disagree on the nonce of presignature {presig_id}; discarded",
                        ids.join(", ")
                    ),
                })
            }
            Err(e) => {
                self.db.set_presig(&presig_id, "failed", None).await?;
                self.metrics
                    .presign_failures
                    .fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Ready presignatures of `key` whose signers are all reachable now.
    pub async fn usable_presigs(
        &self,
        key: &KeyRow,
    ) -> Result<Vec<(String, Vec<String>)>, CoordError> {
        let t = usize::from(key.threshold);
        let live = self.require_live(&key.participants, t).await?;
        let live_ids: Vec<String> = live.iter().map(|s| s.endpoint.node_id.clone()).collect();
        Ok(self
            .db
            .ready_presigs(&key.key_id)
            .await?
            .into_iter()
            .filter(|(_, signers)| signers.iter().all(|s| live_ids.contains(s)))
            .collect())
    }

    /// Asks the presignature's signers for their partials for an authorised
    /// withdrawal (each verifies the authorisation itself) and combines them
    /// over `message` (a transaction's digest, or the approved message on the
    /// `message` chain).
    pub async fn sign_withdrawal(
        &self,
        key: &KeyRow,
        message: &[u8],
        presig_id: &str,
        signer_ids: &[String],
        mut authorization: custos_proto::signer::WithdrawalAuthorization,
    ) -> Result<SignOutcome, CoordError> {
        authorization.coordinator_epoch = self.signers.epoch()?;
        self.check_not_retired(key).await?;
        if key.public_key.is_none() {
            return Err(CoordError::precondition(
                "key",
                key.key_id.clone(),
                "is not ready",
            ));
        }
        self.locks.check(&key.key_id).await?;
        let presig_public = self.presig_public(presig_id).await?;
        let signers: Vec<Arc<Signer>> = signer_ids
            .iter()
            .filter_map(|n| self.signers.get(n).cloned())
            .collect();
        if signers.len() != signer_ids.len() {
            return Err(CoordError::Internal(format!(
                "presignature {presig_id} names signers that are not configured: {}",
                signer_ids.join(", ")
            )));
        }
        let req = custos_proto::signer::SignWithdrawalRequest {
            authorization: Some(authorization),
            key_id: key.key_id.clone(),
            presignature_id: presig_id.to_owned(),
        };
        let started = Instant::now();
        let partials = all_or_first_error(signers, self.settings.partial_timeout, |s| {
            let req = req.clone();
            async move {
                s.client()
                    .sign_withdrawal(req)
                    .await
                    .map(|r| r.into_inner().partial_signature)
            }
        })
        .await?;
        stages::since(Stage::SignerCalls, started);
        let combined = self
            .combine_counted(
                key,
                &partials,
                signer_ids,
                message,
                presig_id,
                &presig_public,
            )
            .await?;
        self.metrics.signatures.fetch_add(1, Ordering::Relaxed);
        self.metrics.observe(started.elapsed());
        let mut o = outcome(key, combined, signer_ids, "presignature", presig_id);
        o.elapsed = started.elapsed();
        Ok(o)
    }

    /// Combines a presignature's partials (timed as the `combine` stage);
    /// a failure counts toward the key's lock.
    async fn combine_counted(
        &self,
        key: &KeyRow,
        partials: &[Vec<u8>],
        signer_ids: &[String],
        digest: &[u8],
        presig_id: &str,
        presig_public: &[u8],
    ) -> Result<Combined, CoordError> {
        let combining = Instant::now();
        let combined =
            combine_partials(key, partials, signer_ids, digest, presig_id, presig_public);
        stages::since(Stage::Combine, combining);
        self.counted(&key.key_id, combined).await
    }

    /// Calls every participant at once with `call`, each within `timeout`;
    /// returns each answer, a failure mapped to the error naming the signer.
    async fn fan_out<T, F, Fut>(
        &self,
        participants: &[String],
        timeout: Duration,
        call: F,
    ) -> Vec<(String, Result<T, CoordError>)>
    where
        F: Fn(SignerControlClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let calls = participants.iter().map(|n| {
            let signer = self.signers.get(n).cloned();
            let request = signer.as_ref().map(|s| call(s.client()));
            async move {
                let (Some(s), Some(request)) = (signer, request) else {
                    return (
                        n.clone(),
                        Err(CoordError::Internal(format!("{n} not configured"))),
                    );
                };
                let r = match tokio::time::timeout(timeout, request).await {
                    Ok(Ok(answer)) => Ok(answer.into_inner()),
                    Ok(Err(st)) => Err(signer_error(&s, &st)),
                    Err(_) => Err(CoordError::silent(n, "did not answer")),
                };
                (n.clone(), r)
            }
        });
        futures::future::join_all(calls).await
    }

    /// Registers a completed quorum with every participant; returns each
    /// signer's answer (a refusal is `CoordError::Refused`, naming it).
    /// Registrations with the same signers made meanwhile share one round
    /// (one `RegisterQuorums` call per signer).
    pub async fn register_quorum(
        &self,
        participants: &[String],
        authorization: WithdrawalAuthorization,
    ) -> Registered {
        let mut group = participants.to_vec();
        group.sort();
        let missing = || {
            participants
                .iter()
                .map(|n| {
                    let e = CoordError::Internal(format!("{n} gave no answer for a registration"));
                    (n.clone(), Err(e))
                })
                .collect()
        };
        self.registrations
            .submit(
                &group,
                authorization,
                |batch| self.registration_round(participants, batch),
                missing,
            )
            .await
    }

    /// One registration round: every participant verifies and records the
    /// whole batch in one call; the answers, per authorization.
    async fn registration_round(
        &self,
        participants: &[String],
        mut batch: Vec<WithdrawalAuthorization>,
    ) -> Vec<Registered> {
        let started = Instant::now();
        let size = batch.len();
        let epoch = match self.signers.epoch() {
            Ok(epoch) => epoch,
            Err(e) => {
                let every: Registered = participants
                    .iter()
                    .map(|n| (n.clone(), Err(e.clone())))
                    .collect();
                return vec![every; size];
            }
        };
        for a in &mut batch {
            a.coordinator_epoch = epoch;
        }
        let request = QuorumRegistrations {
            authorizations: batch,
            coordinator_epoch: epoch,
        };
        let answers = self
            .fan_out(participants, self.settings.partial_timeout, |c| {
                register_all(c, request.clone())
            })
            .await;
        stages::registration_round(size);
        stages::since(Stage::Registration, started);
        let mut per_item: Vec<Registered> = vec![Vec::new(); size];
        for (node, answer) in answers {
            let results = answer.and_then(|r| {
                if r.results.len() == size {
                    Ok(r.results)
                } else {
                    Err(CoordError::SignerRejected {
                        signer: node.clone(),
                        kind: SignerRejection::Internal,
                        message: format!("answered {} registrations for {size}", r.results.len()),
                    })
                }
            });
            match results {
                Ok(results) => {
                    for (slot, r) in per_item.iter_mut().zip(results) {
                        slot.push((node.clone(), registration_answer(&node, r)));
                    }
                }
                Err(e) => {
                    for slot in &mut per_item {
                        slot.push((node.clone(), Err(e.clone())));
                    }
                }
            }
        }
        per_item
    }

    /// Tells every participant a withdrawal was cancelled (best effort: logs
    /// failures; signers learn the cancel from the log anyway).
    pub async fn register_cancel(
        &self,
        participants: &[String],
        mut notice: custos_proto::signer::CancelNotice,
    ) {
        match (self.signers.epoch(), notice.authorization.as_mut()) {
            (Ok(epoch), Some(a)) => a.coordinator_epoch = epoch,
            (Ok(_), None) => {}
            (Err(e), _) => {
                tracing::warn!(error = %e, "cancellation not sent to the signers");
                return;
            }
        }
        let answers = self
            .fan_out(participants, self.settings.partial_timeout, |mut c| {
                let n = notice.clone();
                async move { c.register_cancel(n).await }
            })
            .await;
        for (node, r) in answers {
            if let Err(e) = r {
                tracing::warn!(node = %node, error = %e, "signer did not take the cancellation");
            }
        }
    }
}

/// One signer's `RegisterQuorums` answer for `request`; a signer from
/// before batched rounds (`Unimplemented`) is asked one registration at a
/// time, its answers gathered the same way.
async fn register_all(
    mut c: SignerControlClient<Channel>,
    request: QuorumRegistrations,
) -> Result<tonic::Response<QuorumRegistrationResults>, tonic::Status> {
    match c.register_quorums(request.clone()).await {
        Err(st) if st.code() == Code::Unimplemented => {
            let mut results = Vec::with_capacity(request.authorizations.len());
            for a in request.authorizations {
                results.push(match c.register_quorum(a).await {
                    Ok(ack) => QuorumRegistrationResult {
                        ack: Some(ack.into_inner()),
                        ..QuorumRegistrationResult::default()
                    },
                    Err(st) => QuorumRegistrationResult {
                        ack: None,
                        code: st.code() as i32,
                        message: st.message().to_owned(),
                    },
                });
            }
            Ok(tonic::Response::new(QuorumRegistrationResults { results }))
        }
        other => other,
    }
}

/// Signer `node`'s answer to one registration of a round: the time it will
/// sign from, or its refusal mapped as the single call's would be.
fn registration_answer(node: &str, r: QuorumRegistrationResult) -> Result<i64, CoordError> {
    match r.ack {
        Some(ack) if r.code == 0 => Ok(ack.signable_from),
        _ => {
            let code = Code::from(r.code);
            let code = if code == Code::Ok {
                Code::Internal
            } else {
                code
            };
            Err(signer_failure(
                node,
                false,
                &tonic::Status::new(code, r.message),
            ))
        }
    }
}

/// The fixture aux-info group (`fixture-<n>-...`) that every signer reports
/// holding, if all of them are reachable and agree on one.
fn common_fixture_group(health: &[(String, crate::signers::Health)]) -> Option<String> {
    let (_, first) = health.first()?;
    first
        .aux_groups
        .iter()
        .filter(|g| g.starts_with("fixture-"))
        .find(|g| {
            health
                .iter()
                .all(|(_, h)| h.reachable && h.aux_groups.contains(g))
        })
        .cloned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn with(mut st: tonic::Status, key: &'static str, value: &str) -> tonic::Status {
        st.metadata_mut().insert(key, value.parse().unwrap());
        st
    }

    /// A signer that cannot reach a peer names the peer (its answer says
    /// so in `custos-culprit`): the error blames the peer, not the reporter.
    #[test]
    fn an_unreachable_peer_is_blamed_not_its_reporter() {
        let st = with(
            tonic::Status::unavailable("peer signer-3 unreachable: dial failed"),
            custos_proto::CULPRIT_HEADER,
            "signer-3",
        );
        let e = signer_failure("signer-1", false, &st);
        assert!(matches!(
            &e,
            CoordError::Unavailable { signer: Some(p), reason }
                if p == "signer-3" && reason.contains("unreachable from signer-1")
        ));
        assert_eq!(e.culprit(), Some("signer-3"));
        assert!(e.is_unavailable());
        // Without the header, the reporter is the one not reached.
        let e = signer_failure(
            "signer-1",
            false,
            &tonic::Status::unavailable("tcp connect error"),
        );
        assert_eq!(e.culprit(), Some("signer-1"));
    }

    /// A signer's answer keeps the signer, and the peer its answer blames,
    /// as data; the text is what it was.
    #[test]
    fn a_signers_failure_keeps_who() {
        let st = with(
            tonic::Status::aborted("signer signer-3 misbehaved: malformed protocol message"),
            custos_proto::CULPRIT_HEADER,
            "signer-3",
        );
        let e = signer_failure("signer-1", false, &st);
        assert!(matches!(
            &e,
            CoordError::Aborted { culprit: Some(c), reporter: Some(r), .. }
                if c == "signer-3" && r == "signer-1"
        ));
        assert_eq!(
            e.to_string(),
            "signer-1 reports: signer signer-3 misbehaved: malformed protocol message"
        );

        let st = with(
            tonic::Status::deadline_exceeded(
                "session timed out after 2s waiting for [\"signer-2\", \"signer-3\"]",
            ),
            custos_proto::WAITING_FOR_HEADER,
            "signer-2,signer-3",
        );
        let e = signer_failure("signer-1", false, &st);
        assert!(matches!(
            &e,
            CoordError::DeadlineExceeded { waiting_for, reporter: Some(r), .. }
                if waiting_for == &["signer-2", "signer-3"] && r == "signer-1"
        ));
        assert!(
            e.to_string()
                .starts_with("signer-1: session timed out after 2s")
        );

        let e = signer_failure(
            "signer-2",
            false,
            &tonic::Status::permission_denied("refused by co-signer checks: time lock"),
        );
        assert!(matches!(
            &e,
            CoordError::Refused { signer, reason }
                if signer == "signer-2" && reason == "refused by co-signer checks: time lock"
        ));
        assert_eq!(
            e.to_string(),
            "refused: signer-2: refused by co-signer checks: time lock"
        );

        let e = signer_failure(
            "signer-2",
            false,
            &tonic::Status::unavailable("connection refused"),
        );
        assert!(matches!(
            &e,
            CoordError::Unavailable { signer: Some(s), .. } if s == "signer-2"
        ));
        assert_eq!(e.to_string(), "signer-2 unreachable: connection refused");

        let fenced = tonic::Status::failed_precondition("coordinator epoch 1 older than 2");
        let e = signer_failure("signer-2", true, &fenced);
        assert!(matches!(&e, CoordError::Unavailable { signer: Some(s), .. } if s == "signer-2"));
        assert_eq!(
            e.to_string(),
            "signer-2 refused: coordinator epoch 1 older than 2"
        );

        for (code, kind, answered) in [
            (
                Code::InvalidArgument,
                SignerRejection::InvalidRequest,
                Code::InvalidArgument,
            ),
            (Code::NotFound, SignerRejection::NotFound, Code::NotFound),
            (
                Code::AlreadyExists,
                SignerRejection::Replay,
                Code::AlreadyExists,
            ),
            (
                Code::FailedPrecondition,
                SignerRejection::NotReady,
                Code::FailedPrecondition,
            ),
            (Code::Internal, SignerRejection::Internal, Code::Internal),
            (
                Code::ResourceExhausted,
                SignerRejection::Internal,
                Code::Internal,
            ),
        ] {
            let e = signer_failure("signer-3", false, &tonic::Status::new(code, "why"));
            assert!(matches!(
                &e,
                CoordError::SignerRejected { signer, kind: k, .. } if signer == "signer-3" && *k == kind
            ));
            assert_eq!(e.to_string(), "signer-3: why");
            // The client gets the code it got before the variant existed.
            assert_eq!(crate::edge::grpc_code(&e), answered, "{code:?}");
        }
    }

    /// The fan-out names the signer that refused, or that stayed silent, in
    /// the typed field, and prefers a report naming a misbehaving peer.
    #[tokio::test]
    async fn the_fan_out_names_the_signer_at_fault() {
        let signers = || {
            ["signer-1", "signer-2", "signer-3"]
                .map(Signer::unconnected)
                .to_vec()
        };
        // signer-2 refuses.
        let e = all_or_first_error(signers(), Duration::from_secs(5), |s| async move {
            match s.endpoint.node_id.as_str() {
                "signer-2" => Err(tonic::Status::permission_denied(
                    "refused by co-signer checks: velocity",
                )),
                _ => Ok(()),
            }
        })
        .await
        .unwrap_err();
        assert_eq!(e.culprit(), Some("signer-2"), "{e}");
        assert!(matches!(e, CoordError::Refused { .. }), "{e}");

        // signer-3 never answers: the deadline names it.
        let e = all_or_first_error(signers(), Duration::from_millis(50), |s| async move {
            if s.endpoint.node_id == "signer-3" {
                std::future::pending::<()>().await;
            }
            Ok(())
        })
        .await
        .unwrap_err();
        assert!(
            matches!(&e, CoordError::DeadlineExceeded { waiting_for, reporter: None, .. } if waiting_for == &["signer-3"]),
            "{e}"
        );
        assert_eq!(e.to_string(), "signer-3 did not answer within 0s");

        // signer-1 fails first (an internal error), signer-2 reports that
        // signer-3 misbehaved: the abort naming the culprit wins.
        let e = all_or_first_error(signers(), Duration::from_secs(5), |s| async move {
            match s.endpoint.node_id.as_str() {
                "signer-1" => Err::<(), _>(tonic::Status::internal("session failed")),
                "signer-2" => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Err(with(
                        tonic::Status::aborted("signer signer-3 misbehaved: bad proof"),
                        custos_proto::CULPRIT_HEADER,
                        "signer-3",
                    ))
                }
                _ => std::future::pending().await,
            }
        })
        .await
        .unwrap_err();
        assert!(
            matches!(&e, CoordError::Aborted { culprit: Some(c), reporter: Some(r), .. } if c == "signer-3" && r == "signer-2"),
            "{e}"
        );
    }

    /// Invalid input names its field as data; the text is as before.
    #[test]
    fn invalid_input_names_the_field() {
        let e = validate_id("key_id", "no spaces").unwrap_err();
        assert!(
            matches!(&e, CoordError::InvalidArgument { field, .. } if field == "key_id"),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "invalid argument: key_id: \"no spaces\" must be 1-64 characters of letters, digits, '-', '_', '.'"
        );
    }

    /// A bad partial names its signer; an invalid combination names the set.
    #[test]
    fn a_bad_partial_names_its_signer() {
        let ids = vec!["signer-1".to_owned(), "signer-2".to_owned()];
        let key = KeyRow {
            key_id: "k".into(),
            group_id: "g".into(),
            threshold: 2,
            participants: ids.clone(),
            public_key: Some(vec![2; 33]),
            address: None,
            state: "ready".into(),
            created_at: String::new(),
            chain: String::new(),
            scheme: custos_mpc::SchemeId::EcdsaSecp256k1,
            public_package: None,
            chain_code: None,
        };
        let e = combine_partials(
            &key,
            &[b"not json".to_vec(), b"{}".to_vec()],
            &ids,
            &[0; 32],
            "ps-1",
            &[2; 33],
        )
        .unwrap_err();
        assert!(
            matches!(&e, CoordError::Aborted { culprit: Some(c), .. } if c == "signer-1"),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            "signer-1 returned a malformed partial signature"
        );
        let e = malformed_signature(&ids, "r");
        assert_eq!(e.culprit(), Some("signer-1"));
        assert_eq!(e.to_string(), "signer-1 returned a malformed r");
    }
}
