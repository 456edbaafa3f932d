//! The co-signer check: before this signer releases anything for a
//! withdrawal it verifies, on its own, the admin signatures on the policy
//! bundle, the policy decision (re-evaluated with its own clock and its own
//! record of what it signed), the approvals over the statement it rebuilt from
//! the digest it computed itself, the time lock from when *it* saw the
//! quorum, cancellations, replays, and that the decision is in a transparency
//! log checkpoint it witnessed. Nothing from the coordinator is trusted.

pub mod batch;
pub mod bundles;
pub mod chains;
pub mod derived;
pub mod journal;
pub mod log_view;
pub mod refusals;
pub mod retirement;
pub mod witness;

use std::sync::{Arc, Mutex};

use custos_clock::Clock;

use custos_policy::{
    Approval, Authorization, FeeBumpStatement, PolicyHash, SigningClaim, Timestamp, Withdrawal,
    authorize, authorize_fee_bump, check_cancellation, fee_bump_needs_approval, intent_digest,
};
use custos_proto::signer::{CancelNotice, WithdrawalAuthorization};
use custos_risk::{RiskAssessment, RiskModel, RiskRequest, RiskState};

use crate::error::{NodeError, RetirementGap};
use bundles::Bundles;
use journal::{Durability, Journal, SignedRecord, Spend};
use refusals::{PendingRefusal, Refusals};
use witness::LogWitness;

/// Velocity history considered: every window a policy may use
/// (`MAX_VELOCITY_WINDOW_SECS`, checked when a policy is parsed) plus a day.
const HISTORY_SECS: i64 = custos_policy::MAX_VELOCITY_WINDOW_SECS as i64 + 86_400;

/// What was verified for a signing request.
#[derive(Debug)]
pub struct Verified {
    /// The withdrawal, with the digest this signer computed.
    pub withdrawal: Withdrawal,
    /// The digest to sign.
    pub digest: [u8; 32],
    /// What the key signs: the digest, or the approved message on the
    /// `message` chain (`custos_chains::message`).
    pub message: Vec<u8>,
    /// The digests of every input of the transaction (`[digest]` for one).
    pub tx_digests: Vec<[u8; 32]>,
    /// The policy's verdict and the statement.
    pub authorization: Authorization,
}

/// What one signing session signs, as this signer computed it.
struct Signing {
    /// The session's digest (its log entry names it).
    digest: [u8; 32],
    /// The digests of every input of the transaction.
    tx_digests: Vec<[u8; 32]>,
    /// What the key signs (see [`Verified::message`]).
    message: Vec<u8>,
}

/// Most signatures a signer issues for one withdrawal: the first and its
/// fee bumps (all at one nonce, so at most one is ever mined).
pub const MAX_SIGNINGS: u32 = 8;

/// A signature this signer agreed to issue.
#[derive(Debug)]
pub struct Grant {
    /// The withdrawal (its intent digest computed here).
    pub withdrawal: Withdrawal,
    /// The digest to sign.
    pub digest: [u8; 32],
    /// What the key signs (see [`Verified::message`]).
    pub message: Vec<u8>,
    /// The approval statement's hash, hex.
    pub statement_hash: String,
    /// The unsigned transaction signed (empty for an intent digest).
    pub unsigned_tx: Vec<u8>,
    /// For a fee bump: the digest of the transaction it replaces, hex.
    pub replaces: Option<String>,
    /// The rule this signer found the withdrawal approved under.
    pub rule_id: String,
    /// For a fee bump that needed approvals: the approvers counted.
    pub bump_approvers: Vec<String>,
    /// The input of `unsigned_tx` signed (0 for single-digest transactions).
    pub input: u32,
    /// The other withdrawals `unsigned_tx` pays (a batch), verified.
    pub batch: Vec<batch::BatchMember>,
}

/// What to do after the checks.
#[derive(Debug)]
pub enum SignDecision {
    /// Issue a partial from the presignature, then record it.
    Issue(Box<Grant>),
    /// An identical request was already answered: return the same partial.
    Repeat(Vec<u8>),
}

/// A key signs withdrawals only if any two of its signer sets share a
/// signer (t > n/2): that signer's own record refuses the second signing of
/// a withdrawal, so two disjoint sets cannot each sign it (and pay it twice
/// with different nonces).
pub fn check_majority_key(meta: &crate::store::KeyMeta) -> Result<(), NodeError> {
    let n = meta.participants.len();
    if usize::from(meta.threshold) * 2 <= n {
        return Err(refused(format!(
            "key {} is {}-of-{n}: two disjoint signer sets could each sign one withdrawal; keys that sign withdrawals need a threshold above n/2 ({} or more of {n})",
            meta.key_id,
            meta.threshold,
            n / 2 + 1
        )));
    }
    Ok(())
}

/// The withdrawal shown must be the one the log says was requested: same
/// wallet, chain, asset, destination, amount and initiator (the logged
/// decision and approvals name only its id).
fn check_against_request(w: &Withdrawal, r: &log_view::LoggedRequest) -> Result<(), NodeError> {
    let amount = w.amount.0.to_string();
    let fields = [
        ("wallet", w.wallet.as_str(), r.key_id.as_str()),
        ("chain", w.chain.as_str(), r.chain.as_str()),
        ("asset", w.asset.as_str(), r.asset.as_str()),
        ("amount", amount.as_str(), r.amount.as_str()),
        ("initiator", w.initiator.as_str(), r.requested_by.as_str()),
    ];
    for (field, shown, logged) in fields {
        if shown != logged {
            return Err(refused(format!(
                "withdrawal {}: {field} {shown:?} is not the {logged:?} its logged request (entry {}) names",
                w.id, r.index
            )));
        }
    }
    if !w.destination.eq_ignore_ascii_case(&r.destination) {
        return Err(refused(format!(
            "withdrawal {}: destination {} is not the {} its logged request (entry {}) names",
            w.id, w.destination, r.destination, r.index
        )));
    }
    Ok(())
}

/// With request keys in the policy, the initiator the policy sees must be
/// the client whose signature over exactly this request (wallet, asset,
/// destination, amount, idempotency key, and the source path when it spends
/// from a derived address) verifies, and the withdrawal id must
/// be the one that request derives: one signed request backs one withdrawal.
fn check_signed_request(
    policy: &custos_policy::Policy,
    w: &Withdrawal,
    a: &WithdrawalAuthorization,
) -> Result<(), NodeError> {
    if !policy.requires_signed_requests() {
        return Ok(());
    }
    let id = custos_policy::request_withdrawal_id(&w.initiator, &a.idempotency_key);
    if w.id != id {
        return Err(refused(format!(
            "withdrawal {} is not the withdrawal of initiator {:?}'s request {:?} ({id}): one signed request backs one withdrawal",
            w.id, w.initiator, a.idempotency_key
        )));
    }
    policy
        .verify_request(
            &custos_policy::RequestStatement::for_withdrawal(w, &a.idempotency_key),
            &a.request_signature,
        )
        .map_err(|e| {
            refused(
                e.to_string()
                    .trim_start_matches("signing refused: ")
                    .to_owned(),
            )
        })
}

fn spend(w: &Withdrawal, at: i64) -> Spend {
    Spend {
        wallet: w.wallet.clone(),
        chain: w.chain.clone(),
        asset: w.asset.clone(),
        destination: w.destination.clone(),
        initiator: w.initiator.clone(),
        amount: w.amount.0.to_string(),
        fee_cap: w.fee_cap.0.to_string(),
        at,
    }
}

/// The co-signer state of one signer node.
#[derive(Debug)]
pub struct Cosigner {
    bundles: Option<Bundles>,
    journal: Journal,
    witness: Option<LogWitness>,
    /// Serialises verification with the journal writes it depends on
    /// (velocity, replay).
    lock: Mutex<()>,
    /// Chains whose transactions this signer checks itself.
    chains: Vec<Box<dyn custos_chains::ChainAdapter>>,
    /// The public key (SEC1) of a wallet, from this signer's own key store:
    /// a UTXO transaction may spend only that key's coins.
    wallet_keys: Option<crate::store::KeyDirectory>,
    /// The risk model this signer scores withdrawals with itself.
    risk: RiskModel,
    /// Refusals signed and not yet witnessed in the log.
    refusals: Option<Refusals>,
    /// This signer's clock: time locks, cancels and refusals are measured
    /// on it, never on the coordinator's.
    clock: Arc<dyn Clock>,
}

/// An inclusion proof's hashes (`what` names it in the error).
fn proof_hashes(proof: &[Vec<u8>], what: &str) -> Result<Vec<custos_audit::Hash>, NodeError> {
    proof
        .iter()
        .map(|h| {
            h.as_slice().try_into().map_err(|_| {
                NodeError::InvalidRequest(format!("{what} inclusion proof: hash length"))
            })
        })
        .collect()
}

fn refused(m: impl std::fmt::Display) -> NodeError {
    NodeError::Refused(m.to_string())
}

impl Cosigner {
    /// Wires the parts; without `bundles` (no admin set configured) or
    /// without a witness (no log key configured) every withdrawal is refused.
    pub fn new(bundles: Option<Bundles>, journal: Journal, witness: Option<LogWitness>) -> Self {
        Self {
            bundles,
            journal,
            witness,
            lock: Mutex::new(()),
            chains: Vec::new(),
            wallet_keys: None,
            risk: RiskModel::default(),
            refusals: None,
            clock: custos_clock::system(),
        }
    }

    /// Measures time on `clock` (tests drive a [`custos_clock::ManualClock`]).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// This signer's clock.
    pub fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    /// Now in whole seconds, rounded down.
    fn now_secs(&self) -> i64 {
        self.clock.now_secs()
    }

    /// When a quorum seen now starts its time lock: with a lock, the next
    /// whole second (so, with "now" rounded down, the lock never ends early
    /// by even a fraction of a second); without one, now.
    fn lock_start(&self, has_delay: bool) -> i64 {
        if has_delay {
            self.clock.now_secs_ceil()
        } else {
            self.clock.now_secs()
        }
    }

    /// Keeps refusals until the log carries them, holding signing once one
    /// waits too long (without it refusals are only answered).
    pub fn with_refusals(mut self, refusals: Refusals) -> Self {
        self.refusals = Some(refusals);
        self
    }

    /// Whether the log this signer witnessed carries `pending` exactly, with
    /// its signature (a view being rebuilt answers no).
    fn refusal_logged(&self, pending: &PendingRefusal) -> bool {
        let (refusal, signature) = pending.signed();
        self.witness
            .as_ref()
            .and_then(|w| w.with_view(|v| v.refusal_logged(&refusal, &signature)).ok())
            .unwrap_or(false)
    }

    /// The index of the `key_retired` entry for `key_id` in the log this
    /// signer witnessed, if any (no witness: none known).
    pub fn logged_retirement(&self, key_id: &str) -> Result<Option<u64>, NodeError> {
        match &self.witness {
            Some(w) => w.with_view(|v| v.retirement(key_id)),
            None => Ok(None),
        }
    }

    /// Refuses a key the witnessed log retired, even before this signer
    /// was asked to destroy its share.
    pub fn check_not_retired(&self, key_id: &str) -> Result<(), NodeError> {
        match self.logged_retirement(key_id)? {
            Some(retirement_index) => Err(NodeError::KeyRetired {
                key_id: key_id.to_owned(),
                retirement_index,
            }),
            None => Ok(()),
        }
    }

    /// Retires `key_id` on this signer, on this signer's own evidence only
    /// (the coordinator's word is not enough; see [`retirement::authorize`]):
    /// the admin policy bundle `document`/`signatures` must carry a quorum
    /// of this signer's admin set, be the newest policy the log it witnessed
    /// activated (in force on its clock) and list the key under
    /// `retired_keys`, and that log must carry the key's `key_retired`
    /// entry. Records the retirement in the store (refusing the key from
    /// then on), destroys the share and pool, and journals what was
    /// destroyed. A key this signer already recorded as retired (so
    /// authorized before) only has an interrupted destruction finished.
    pub fn retire_key(
        &self,
        store: &crate::store::Store,
        key_id: &str,
        document: &[u8],
        signatures: &[u8],
    ) -> Result<(crate::store::Retirement, crate::store::Destroyed), NodeError> {
        crate::store::validate_id("key id", key_id)?;
        let recorded = store.retirement(key_id)?;
        let retirement_index = match &recorded {
            Some(r) => r.retirement_index,
            None => {
                let unauthorized = |missing| NodeError::RetirementUnauthorized {
                    key_id: key_id.to_owned(),
                    missing,
                };
                let witness = self
                    .witness
                    .as_ref()
                    .ok_or_else(|| unauthorized(RetirementGap::NoWitness))?;
                let bundles = self
                    .bundles
                    .as_ref()
                    .ok_or_else(|| unauthorized(RetirementGap::NoAdminSet))?;
                let facts = witness.with_view(|v| retirement::LogFacts {
                    newest_policy: v.newest_policy.clone(),
                    retirement: v.retirement(key_id),
                    size: v.size,
                })?;
                retirement::authorize(
                    bundles,
                    &facts,
                    key_id,
                    document,
                    signatures,
                    Timestamp(self.now_secs()),
                )?
            }
        };
        let retirement = match recorded {
            Some(r) => r,
            None => crate::store::Retirement {
                retirement_index,
                at: self.now_secs(),
            },
        };
        let destroyed = store.retire_key(key_id, &retirement)?;
        self.journal.key_retired(
            key_id,
            retirement.retirement_index,
            self.now_secs(),
            destroyed.shares,
            destroyed.presignatures,
        )?;
        tracing::warn!(
            key_id,
            retirement_index,
            shares = destroyed.shares,
            presignatures = destroyed.presignatures,
            "key retired: share and pool destroyed"
        );
        Ok((retirement, destroyed))
    }

    /// Signs and keeps this signer's refusal of `request` for `a`: a policy
    /// refusal or a replay, not a malformed request or a fault of its own.
    /// Best effort: the refusal itself stands whatever happens here.
    pub fn record_refusal(&self, a: &WithdrawalAuthorization, request: &str, err: &NodeError) {
        if !matches!(
            err,
            NodeError::Refused(_) | NodeError::Replay(_) | NodeError::SourceMismatch { .. }
        ) {
            return;
        }
        let (Some(w), Some(store)) = (&self.witness, &self.refusals) else {
            return;
        };
        // The id even of a request too malformed to be a withdrawal.
        let withdrawal_id = serde_json::from_slice::<serde_json::Value>(&a.withdrawal_json)
            .ok()
            .and_then(|v| v.get("id").and_then(|id| id.as_str()).map(str::to_owned))
            .map(|id| id.chars().take(256).collect())
            .unwrap_or_default();
        let refusal = custos_audit::refusal::Refusal {
            withdrawal_id,
            signer: w.name().to_owned(),
            request: request.to_owned(),
            reason: refusals::bounded_reason(&err.to_string()),
            refused_at_ms: self.clock.now_ms(),
        };
        let kept = w
            .sign_refusal(&refusal)
            .and_then(|sig| store.record(refusal.clone(), &sig));
        match kept {
            Ok(()) => tracing::warn!(
                withdrawal = %refusal.withdrawal_id,
                request,
                reason = %refusal.reason,
                "refused; the signed refusal waits for the audit log"
            ),
            Err(e) => tracing::error!(
                withdrawal = %refusal.withdrawal_id,
                error = %e,
                "refused, but the refusal could not be kept for the log"
            ),
        }
    }

    /// Refusals this signer signed that the log does not carry yet.
    pub fn unlogged_refusals(&self) -> Vec<PendingRefusal> {
        let Some(store) = &self.refusals else {
            return Vec::new();
        };
        store
            .unlogged(|p| self.refusal_logged(p))
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "pending refusals unreadable");
                Vec::new()
            })
    }

    /// The risk model this signer scores withdrawals with (default: the
    /// default `RiskConfig`).
    pub fn with_risk(mut self, risk: RiskModel) -> Self {
        self.risk = risk;
        self
    }

    /// The chains whose unsigned transactions this signer parses and checks.
    pub fn with_chains(mut self, chains: &[chains::SignerChain]) -> Self {
        self.chains = chains::adapters(chains);
        self
    }

    /// Where this signer looks up a wallet's public key (its key store).
    pub fn with_wallet_keys(mut self, keys: crate::store::KeyDirectory) -> Self {
        self.wallet_keys = Some(keys);
        self
    }

    /// The wallet's public key from this signer's store (empty if unknown:
    /// a check that needs it then refuses).
    fn wallet_key(&self, wallet: &str) -> Vec<u8> {
        self.wallet_keys
            .as_ref()
            .and_then(|k| k.public_key(wallet))
            .unwrap_or_default()
    }

    /// The public key `w` spends from: the wallet's own key, or for a
    /// withdrawal from a derived address the child key at its path, which
    /// this signer derives itself and whose address must be the approved
    /// source address ([`derived`]).
    fn spending_key(&self, w: &Withdrawal) -> Result<Vec<u8>, NodeError> {
        let Some(source) = &w.source else {
            return Ok(self.wallet_key(&w.wallet));
        };
        let meta = self
            .wallet_keys
            .as_ref()
            .ok_or_else(|| refused("no key store: cannot derive a source address"))?
            .key_meta(&w.wallet)
            .map_err(|e| refused(format!("wallet {}: {e}", w.wallet)))?;
        derived::derived_source_key(&meta, &w.chain, source)
    }

    /// The digest to sign: the intent digest, or for a transaction the
    /// digest of the bytes this signer parsed and checked against `w` (the
    /// approved fields).
    fn signing_digest(
        &self,
        w: &Withdrawal,
        a: &WithdrawalAuthorization,
    ) -> Result<[u8; 32], NodeError> {
        self.signing_digests(w, a).map(|s| s.digest)
    }

    /// The digest to sign (of input `a.input_index`) and the digests of
    /// every input of the transaction it belongs to.
    fn signing_digests(
        &self,
        w: &Withdrawal,
        a: &WithdrawalAuthorization,
    ) -> Result<Signing, NodeError> {
        // First where it spends from: a derived source is checked even
        // when there is no transaction to read.
        let key = self.spending_key(w)?;
        if a.unsigned_tx.is_empty() {
            if a.input_index != 0 {
                return Err(NodeError::InvalidRequest(format!(
                    "input_index {}: there is no transaction, only the intent digest",
                    a.input_index
                )));
            }
            let d = intent_digest(w);
            Ok(Signing {
                digest: d,
                tx_digests: vec![d],
                message: d.to_vec(),
            })
        } else {
            let mut ws = vec![w.clone()];
            ws.extend(batch::batch_withdrawals(w, a)?);
            // One transaction spends from one address.
            if let Some(m) = ws.iter().find(|m| m.source != w.source) {
                return Err(refused(format!(
                    "batch member {} spends from another source than {}",
                    m.id, w.id
                )));
            }
            chains::check_transaction(&self.chains, &ws, &a.unsigned_tx, &key, a.input_index)
                .map(|c| Signing {
                    digest: c.digest,
                    tx_digests: c.checked.digests,
                    message: c.message,
                })
                .map_err(refused)
        }
    }

    /// The witness, if configured.
    pub fn witness(&self) -> Option<&LogWitness> {
        self.witness.as_ref()
    }

    /// Checks everything but the time lock and the log; `now` is this signer's clock.
    fn verify(&self, a: &WithdrawalAuthorization, now: i64) -> Result<Verified, NodeError> {
        let bundles = self.bundles.as_ref().ok_or_else(|| {
            refused("no admin set configured ([cosigner] admins): this signer signs no withdrawal")
        })?;
        let mut w: Withdrawal = serde_json::from_slice(&a.withdrawal_json)
            .map_err(|e| NodeError::InvalidRequest(format!("withdrawal: {e}")))?;
        // Recompute the digest from what is signed; the claimed one is ignored.
        // Approvals bind the transfer intent (with the fee cap); a transaction
        // is checked field by field against it (and a batch's other payouts).
        let Signing {
            digest,
            tx_digests,
            message,
        } = self.signing_digests(&w, a)?;
        w.tx_digest = hex::encode(intent_digest(&w));
        // The payouts after it in a batch do not count against it (they are
        // checked with it counted), even once this signer recorded them.
        let later: Vec<String> = batch::batch_withdrawals(&w, a)?
            .into_iter()
            .map(|m| m.id)
            .collect();
        let authorization = self.verify_terms(bundles, &w, a, now, &[], &later)?;
        Ok(Verified {
            withdrawal: w,
            digest,
            message,
            tx_digests,
            authorization,
        })
    }

    /// The policy's verdict on `w` (its intent digest set) as `a` shows it:
    /// the log's facts first (which may bring a newer bundle), the signed
    /// request, cancellation, this signer's own risk score and velocity
    /// history (with `earlier`, payouts before it in its batch, and without
    /// `later`, those after it), the approvals.
    fn verify_terms(
        &self,
        bundles: &Bundles,
        w: &Withdrawal,
        a: &WithdrawalAuthorization,
        now: i64,
        earlier: &[Withdrawal],
        later: &[String],
    ) -> Result<Authorization, NodeError> {
        // First what the witnessed log says (it may bring a newer bundle,
        // which a tightening puts in force at once).
        self.check_logged_facts(w, bundles, a, now)?;
        let active = bundles.in_force(&a.policy_document, &a.policy_signatures, Timestamp(now))?;
        check_signed_request(active.policy(), w, a)?;
        let approvals: Vec<Approval> = if a.approvals_json.is_empty() {
            Vec::new()
        } else {
            serde_json::from_slice(&a.approvals_json)
                .map_err(|e| NodeError::InvalidRequest(format!("approvals: {e}")))?
        };
        let known = self.journal.get(&w.id);
        if let Some(by) = known.cancelled_by {
            return Err(refused(format!(
                "withdrawal {} was cancelled by {by}",
                w.id
            )));
        }
        let history = self.history_with(now, w, earlier, later)?;
        // The policy sees the higher of this signer's own score and the
        // coordinator's (claimed or logged): a coordinator cannot lower it.
        let (own, logged) = self.own_risk(w, now)?;
        let risk_score = own.score.max(a.risk_score).max(logged.unwrap_or(0));
        let authorization = authorize(
            &active,
            &SigningClaim {
                withdrawal: w,
                rule_id: &a.rule_id,
                statement_expiry: Timestamp(a.statement_expiry),
                risk_score,
                approvals: &approvals,
            },
            &history,
            Timestamp(now),
        )
        .map_err(|e| {
            let mut m = e
                .to_string()
                .trim_start_matches("signing refused: ")
                .to_owned();
            if own.score > a.risk_score {
                m.push_str(&format!(
                    " (this signer's own {}; the coordinator claimed {})",
                    own.summary(),
                    a.risk_score
                ));
            }
            refused(m)
        })?;
        self.record_passkeys(&approvals)?;
        Ok(authorization)
    }

    /// The time lock of `w` on this signer's clock: from when this signer
    /// registered the quorum over this statement, plus the rule's delay.
    /// Returns the statement's hash (hex).
    fn time_lock(
        &self,
        w: &Withdrawal,
        known: &journal::Known,
        authorization: &Authorization,
        now: i64,
    ) -> Result<String, NodeError> {
        let delay = authorization
            .decision
            .delay
            .map(|d| d.secs_i64())
            .unwrap_or(0);
        let statement_hash = hex::encode(authorization.statement_hash);
        let seen = match &known.quorum_seen {
            Some((t, seen_hash)) if *seen_hash == statement_hash => *t,
            _ if delay == 0 => {
                self.journal
                    .quorum_seen(&w.id, now, &statement_hash, Durability::Now)?
            }
            Some(_) => {
                return Err(refused(format!(
                    "time lock: the quorum registered with this signer for withdrawal {} was over another statement; this statement's {delay}s delay has not started here",
                    w.id
                )));
            }
            None => {
                return Err(refused(format!(
                    "time lock: the quorum of withdrawal {} was never registered with this signer, so its {delay}s delay has not run here",
                    w.id
                )));
            }
        };
        // Both times come from this signer's own clock: no skew allowance
        // (a coordinator's clock plays no part in it).
        let from = seen + delay;
        if now < from {
            return Err(refused(format!(
                "time lock: withdrawal {} may be signed from {} by this signer's clock ({}s to go)",
                w.id,
                Timestamp(from),
                from - now
            )));
        }
        Ok(statement_hash)
    }

    /// Compares the sign counters of the passkey approvals (verified by
    /// `authorize`) with the ones this signer recorded, and records them.
    fn record_passkeys(&self, approvals: &[Approval]) -> Result<(), NodeError> {
        let mut uses = Vec::new();
        for a in approvals {
            let Some(p) = &a.webauthn else { continue };
            let bad =
                |e: custos_policy::PolicyError| refused(format!("approval of {}: {e}", a.approver));
            uses.push(journal::PasskeyUse {
                credential: hex::encode(p.credential_id_bytes().map_err(bad)?),
                counter: p.sign_counter().map_err(bad)?,
                assertion: hex::encode(p.digest().map_err(bad)?),
            });
        }
        self.journal
            .passkeys_seen(&uses)
            .map_err(|e| refused(format!("invalid approvals: {e}")))
    }

    /// What the witnessed log says against this withdrawal: a cancel or a
    /// rejection the coordinator may not have forwarded, or a newer policy
    /// bundle it has not shown this signer.
    fn check_logged_facts(
        &self,
        w: &Withdrawal,
        bundles: &Bundles,
        a: &WithdrawalAuthorization,
        now: i64,
    ) -> Result<(), NodeError> {
        let Some(witness) = &self.witness else {
            return Ok(()); // signing is refused without a witness anyway
        };
        let id = w.id.as_str();
        let (logged, newest) =
            witness.with_view(|v| (v.withdrawal(id).cloned(), v.newest_policy.clone()))?;
        if let Some(r) = logged.as_ref().and_then(|l| l.requested.as_ref()) {
            check_against_request(w, r)?;
        }
        if let Some(l) = &logged {
            if let Some((index, by)) = &l.cancelled {
                return Err(refused(format!(
                    "withdrawal {id} was cancelled by {by} (log entry {index})"
                )));
            }
            if let Some((index, by)) = &l.rejected {
                return Err(refused(format!(
                    "withdrawal {id} was rejected by approver {by} (log entry {index})"
                )));
            }
        }
        if let Some(p) = newest
            && !bundles.knows(&p.hash)
        {
            // The coordinator ships the newest bundle with every request;
            // learning it starts its relaxation delay on this signer's clock.
            if !a.latest_policy_document.is_empty()
                && PolicyHash::of_document(&a.latest_policy_document)
                    .to_string()
                    .eq_ignore_ascii_case(&p.hash)
            {
                return bundles.learn(
                    &a.latest_policy_document,
                    &a.latest_policy_signatures,
                    Timestamp(now),
                );
            }
            return Err(refused(format!(
                "the log activated policy {} (version {}, entry {}), which the coordinator has not shown this signer: it signs under no older policy",
                p.hash, p.version, p.index
            )));
        }
        Ok(())
    }

    /// This signer's own risk assessment of `w`, from the signed withdrawals
    /// its witnessed log shows before `w`'s request (at the request's logged
    /// time, else now), and the coordinator's logged score.
    fn own_risk(
        &self,
        w: &Withdrawal,
        now: i64,
    ) -> Result<(RiskAssessment, Option<u32>), NodeError> {
        let (history, at_ms, logged) = match &self.witness {
            Some(witness) => witness.with_view(|v| {
                let (history, at_ms) = v.risk_inputs(&w.id);
                let logged = v.withdrawal(&w.id).and_then(|l| l.risk_score);
                (history, at_ms, logged)
            })?,
            None => (Vec::new(), None, None),
        };
        let state = RiskState::rebuild(self.risk.config(), history)
            .map_err(|e| NodeError::Internal(format!("risk history: {e}")))?;
        let at_ms = at_ms.unwrap_or_else(|| u64::try_from(now).unwrap_or(0).saturating_mul(1000));
        let request = RiskRequest {
            wallet: w.wallet.clone(),
            chain: w.chain.clone(),
            asset: w.asset.clone(),
            destination: w.destination.to_lowercase(),
            amount: w.amount.0,
            at_ms,
        };
        Ok((self.risk.score(&state, &request), logged))
    }

    /// Velocity history: this signer's own record, plus every withdrawal the
    /// witnessed log shows a signing session for (whichever signers signed
    /// it), counted from when this signer witnessed it.
    fn history(
        &self,
        now: i64,
        exclude: &str,
    ) -> Result<Vec<custos_policy::HistoryEntry>, NodeError> {
        let since = now - HISTORY_SECS;
        let mut history = self.journal.history(since, exclude);
        if let Some(witness) = &self.witness {
            let logged = witness.with_view(|v| v.spends_since(since))?;
            for h in logged {
                if h.id != exclude && !history.iter().any(|o| o.id == h.id) {
                    history.push(h);
                }
            }
        }
        Ok(history)
    }

    /// Verifies a completed quorum and records when this signer saw it;
    /// returns the time from which it will sign (its own clock).
    pub fn register_quorum(&self, a: &WithdrawalAuthorization) -> Result<(String, i64), NodeError> {
        self.register_quorums(std::slice::from_ref(a))
            .pop()
            .unwrap_or_else(|| Err(NodeError::Internal("no registration result".into())))
    }

    /// [`Cosigner::register_quorum`] for several withdrawals, in order: each
    /// is verified on its own, after the records of those before it (a
    /// velocity limit counts them), and all records are made durable by one
    /// fsync before any answer is given. A failed fsync fails them all.
    pub fn register_quorums(
        &self,
        batch: &[WithdrawalAuthorization],
    ) -> Vec<Result<(String, i64), NodeError>> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let answers: Vec<_> = batch.iter().map(|a| self.record_quorum(a)).collect();
        if answers.iter().any(Result::is_ok)
            && let Err(e) = self.journal.sync()
        {
            // Nothing recorded may be acted on: every answer is the failure.
            let (path, message) = match e {
                NodeError::Storage { path, message } => (path, message),
                other => (String::new(), other.to_string()),
            };
            return answers
                .iter()
                .map(|_| {
                    Err(NodeError::Storage {
                        path: path.clone(),
                        message: message.clone(),
                    })
                })
                .collect();
        }
        answers
    }

    /// Verifies one quorum and writes (not yet durably) what it records.
    fn record_quorum(&self, a: &WithdrawalAuthorization) -> Result<(String, i64), NodeError> {
        let now = self.now_secs();
        let v = self.verify(a, now)?;
        let hash = hex::encode(v.authorization.statement_hash);
        let start = self.lock_start(
            v.authorization
                .decision
                .delay
                .is_some_and(|d| d.secs_i64() > 0),
        );
        let seen =
            self.journal
                .quorum_seen(&v.withdrawal.id, start, &hash, Durability::Deferred)?;
        self.journal.authorized(
            &v.withdrawal.id,
            spend(&v.withdrawal, now),
            Durability::Deferred,
        )?;
        Ok((
            hash,
            v.authorization.decision.signable_from(Timestamp(seen)).0,
        ))
    }

    /// Records a cancellation: signed by the cancel group (verified here), or
    /// the coordinator's own (a backend withdrawing its request) — either way
    /// it only ever removes authority.
    pub fn register_cancel(&self, n: &CancelNotice) -> Result<(), NodeError> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let a = n
            .authorization
            .as_ref()
            .ok_or_else(|| NodeError::InvalidRequest("authorization missing".into()))?;
        let w: Withdrawal = serde_json::from_slice(&a.withdrawal_json)
            .map_err(|e| NodeError::InvalidRequest(format!("withdrawal: {e}")))?;
        let by = if n.cancel_json.is_empty() {
            "coordinator".to_owned()
        } else {
            let cancel: Approval = serde_json::from_slice(&n.cancel_json)
                .map_err(|e| NodeError::InvalidRequest(format!("cancel: {e}")))?;
            let now = self.now_secs();
            // Verify against this signer's own view of the decision.
            match self.verify(a, now) {
                Ok(v) => check_cancellation(
                    &self.active_for(a, now)?,
                    &v.authorization.decision,
                    &v.authorization.statement,
                    &cancel,
                )
                .map_err(refused)?,
                Err(_) => cancel.approver.clone(),
            }
        };
        self.journal.cancelled(&w.id, self.now_secs(), &by)
    }

    fn active_for(
        &self,
        a: &WithdrawalAuthorization,
        now: i64,
    ) -> Result<custos_policy::ActivePolicy, NodeError> {
        let bundles = self
            .bundles
            .as_ref()
            .ok_or_else(|| refused("no admin set configured"))?;
        bundles.in_force(&a.policy_document, &a.policy_signatures, Timestamp(now))
    }

    /// All checks before a partial signature leaves this node.
    pub fn authorize_signing(
        &self,
        a: &WithdrawalAuthorization,
        presig_id: &str,
    ) -> Result<(SignDecision, std::sync::MutexGuard<'_, ()>), NodeError> {
        let guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(store) = &self.refusals {
            store.check_logged(self.clock.now_ms(), |p| self.refusal_logged(p))?;
        }
        let now = self.now_secs();
        let w: Withdrawal = serde_json::from_slice(&a.withdrawal_json)
            .map_err(|e| NodeError::InvalidRequest(format!("withdrawal: {e}")))?;
        // A message is signed only as the bytes checked against the approved
        // one, never as an intent digest in its place (registering the
        // quorum, before signing, has no bytes and checks the intent).
        if a.unsigned_tx.is_empty()
            && custos_chains::family_of(&w.chain) == Some(custos_chains::ChainFamily::Message)
        {
            return Err(refused(format!(
                "withdrawal {}: a message withdrawal signs its approved message, and none was given (unsigned_tx is empty)",
                w.id
            )));
        }
        self.check_not_retired(&w.wallet)?;
        let known = self.journal.get(&w.id);
        if let Some(s) = &known.signed {
            let digest = self
                .signing_digest(&w, a)
                .map(hex::encode)
                .unwrap_or_default();
            if let Some(r) = known.inputs.get(&a.input_index)
                && r.presig_id == presig_id
                && r.digest == digest
                && known.cancelled_by.is_none()
            {
                let partial = hex::decode(&r.partial)
                    .map_err(|_| NodeError::Internal("stored partial".into()))?;
                return Ok((SignDecision::Repeat(partial), guard));
            }
            let same_tx = !a.unsigned_tx.is_empty() && hex::encode(&a.unsigned_tx) == s.tx;
            if same_tx && !known.inputs.contains_key(&a.input_index) && known.signings > 1 {
                // Another input of a replacement this signer already
                // accepted as a fee bump: its own session, in the log.
                let grant = self.bump_input(&w, a, s, &known)?;
                self.check_log(
                    a,
                    &grant.withdrawal,
                    &grant.digest,
                    &[grant.digest],
                    presig_id,
                    None,
                )?;
                return Ok((SignDecision::Issue(Box::new(grant)), guard));
            } else if same_tx && !known.inputs.contains_key(&a.input_index) {
                // Another input of the transaction this signer signed: its
                // own session, verified in full below like the first.
            } else if !a.unsigned_tx.is_empty() && !s.tx.is_empty() && !same_tx {
                let grant = self.fee_bump(&w, a, s, &known, now)?;
                // The approvals were checked at the first signature; the
                // replacement's own signing must be in the log too.
                self.check_log(
                    a,
                    &grant.withdrawal,
                    &grant.digest,
                    &[grant.digest],
                    presig_id,
                    None,
                )?;
                return Ok((SignDecision::Issue(Box::new(grant)), guard));
            } else {
                return Err(NodeError::Replay(format!(
                    "withdrawal {} (input {}) was already signed by this signer (presignature {}); a withdrawal is signed once",
                    w.id, a.input_index, s.presig_id
                )));
            }
        }
        let v = self.verify(a, now)?;
        let statement_hash = self.time_lock(&v.withdrawal, &known, &v.authorization, now)?;
        self.check_log(
            a,
            &v.withdrawal,
            &v.digest,
            &v.tx_digests,
            presig_id,
            Some(&v.authorization.decision),
        )?;
        let batch = self.verify_batch(a, &v.withdrawal, &v.tx_digests, now)?;
        Ok((
            SignDecision::Issue(Box::new(Grant {
                withdrawal: v.withdrawal,
                digest: v.digest,
                message: v.message,
                statement_hash,
                unsigned_tx: a.unsigned_tx.clone(),
                replaces: None,
                rule_id: v.authorization.decision.rule_id.clone().unwrap_or_default(),
                bump_approvers: Vec::new(),
                input: a.input_index,
                batch,
            })),
            guard,
        ))
    }

    /// The log gate: the withdrawal's decision (when `decision` is given,
    /// matched against the policy and rule this signer found) and this very
    /// signing session are in a checkpoint this signer co-signed.
    fn check_log(
        &self,
        a: &WithdrawalAuthorization,
        w: &Withdrawal,
        digest: &[u8; 32],
        tx_digests: &[[u8; 32]],
        presig_id: &str,
        decision: Option<&custos_policy::Decision>,
    ) -> Result<(), NodeError> {
        let witness = self.witness.as_ref().ok_or_else(|| {
            refused(
                "no audit log key configured ([cosigner] log_key): this signer signs no withdrawal",
            )
        })?;
        let hashes = proof_hashes;
        if let Some(d) = decision {
            witness.check_decision(
                &a.decision_entry,
                a.decision_entry_index,
                &hashes(&a.inclusion_proof, "decision")?,
                a.proof_tree_size,
                &w.id,
                &d.policy_hash.0,
                &a.rule_id,
            )?;
        }
        if a.signing_entry.is_empty() {
            return Err(refused(format!(
                "withdrawal {}: no signing-session entry was shown; this signer signs only what the log it co-signed already records",
                w.id
            )));
        }
        let participants = witness.check_signing(
            &a.signing_entry,
            a.signing_entry_index,
            &hashes(&a.signing_inclusion_proof, "signing")?,
            a.proof_tree_size,
            &witness::SigningFacts {
                withdrawal_id: &w.id,
                key_id: &w.wallet,
                digest,
                presignature_id: presig_id,
            },
        )?;
        // A presignature is used once ever: the log names every one a
        // signing used, so consumed markers restored from a snapshot (or
        // lost) cannot bring one back (two signatures with one nonce would
        // reveal the key).
        if let Some(first) = witness.with_view(|v| v.presignature_use(&w.wallet, presig_id))?
            && first != a.signing_entry_index
        {
            return Err(NodeError::Replay(format!(
                "presignature {presig_id} of key {} was already used by the signing session in log entry {first}: a presignature signs once, ever",
                w.wallet
            )));
        }
        if decision.is_none() {
            return Ok(()); // a fee bump: its own session, after the first
        }
        if witness
            .with_view(|v| v.withdrawal(&w.id).and_then(|l| l.requested.clone()))?
            .is_none()
        {
            return Err(refused(format!(
                "withdrawal {}: its request is not in this signer's view of the log",
                w.id
            )));
        }
        // One transaction per withdrawal, whichever signers are asked: the
        // first session in the log decides the transaction (this one must
        // have its digest among its inputs'), and the first session of each
        // digest decides that input's signer set and presignature.
        let not_in_view = || {
            refused(format!(
                "withdrawal {}: signing entry {} is not in this signer's view of the log",
                w.id, a.signing_entry_index
            ))
        };
        let first = witness
            .with_view(|v| v.withdrawal(&w.id).and_then(|l| l.first_signing.clone()))?
            .ok_or_else(not_in_view)?;
        if !tx_digests.iter().any(|d| hex::encode(d) == first.digest) {
            return Err(NodeError::Replay(format!(
                "withdrawal {} was first logged for signing at entry {} by {} with presignature {} over digest {}, which is no input of this transaction: a withdrawal is signed once, as one transaction",
                w.id,
                first.index,
                first.participants.join(", "),
                first.presignature_id.unwrap_or_default(),
                first.digest
            )));
        }
        let digest_hex = hex::encode(digest);
        let session = witness
            .with_view(|v| v.first_session_for(&w.id, &digest_hex).cloned())?
            .ok_or_else(not_in_view)?;
        if session.index == a.signing_entry_index
            || (session.participants == participants
                && session.presignature_id.as_deref() == Some(presig_id))
        {
            return Ok(());
        }
        Err(NodeError::Replay(format!(
            "withdrawal {} (input {}) was first logged for signing at entry {} by {} with presignature {}: each input is signed once, by one signer set",
            w.id,
            a.input_index,
            session.index,
            session.participants.join(", "),
            session.presignature_id.unwrap_or_default()
        )))
    }

    /// A fee bump of a transaction this signer already signed: the same
    /// approved withdrawal (intent digest), the new transaction within the
    /// approved fee cap, and a replacement of the signed one (same transfer,
    /// nonce and gas limit, higher fees). The approvals and time lock were
    /// verified at the first signature; at one nonce only one version can be
    /// mined, so no new approval is needed for a bump within the cap, unless
    /// the rule says `fee_bumps = "reapprove"` in the policy in force: then
    /// the rule's quorum must have approved the fee-bump statement this
    /// signer builds from its own record and the replacement it decoded.
    fn fee_bump(
        &self,
        w: &Withdrawal,
        a: &WithdrawalAuthorization,
        signed: &SignedRecord,
        known: &journal::Known,
        now: i64,
    ) -> Result<Grant, NodeError> {
        if let Some(by) = &known.cancelled_by {
            return Err(refused(format!(
                "withdrawal {} was cancelled by {by}",
                w.id
            )));
        }
        if known.signings >= MAX_SIGNINGS {
            return Err(NodeError::Replay(format!(
                "withdrawal {} was already signed {} times (the first signature and its fee bumps): no more",
                w.id, known.signings
            )));
        }
        let mut w = w.clone();
        w.tx_digest = hex::encode(intent_digest(&w));
        if signed.intent.is_empty() || w.tx_digest != signed.intent {
            return Err(NodeError::Replay(format!(
                "withdrawal {} was already signed by this signer for other terms; a fee bump must be for the approved withdrawal unchanged",
                w.id
            )));
        }
        let key = self.wallet_key(&w.wallet);
        let batch = self.bumped_members(&w, a, &signed.tx)?;
        let mut ws = vec![w.clone()];
        ws.extend(batch.iter().map(|m| m.withdrawal.clone()));
        let checked =
            chains::check_transaction(&self.chains, &ws, &a.unsigned_tx, &key, a.input_index)
                .map_err(refused)?;
        let previous = hex::decode(&signed.tx)
            .map_err(|_| NodeError::Internal("journal: stored transaction".into()))?;
        chains::check_fee_bump(&self.chains, &ws, &previous, &key, &checked).map_err(refused)?;
        let bump_approvers = self.fee_bump_approvals(&w, a, signed, &checked, now)?;
        Ok(Grant {
            batch,
            withdrawal: w,
            digest: checked.digest,
            message: checked.message.clone(),
            statement_hash: signed.statement_hash.clone(),
            unsigned_tx: a.unsigned_tx.clone(),
            replaces: Some(signed.digest.clone()),
            rule_id: signed.rule_id.clone(),
            bump_approvers,
            input: a.input_index,
        })
    }

    /// Another input of a fee bump this signer already accepted (the very
    /// bytes it checked as a replacement and signed an input of): the
    /// withdrawal unchanged and not cancelled, the input in the transaction.
    fn bump_input(
        &self,
        w: &Withdrawal,
        a: &WithdrawalAuthorization,
        signed: &SignedRecord,
        known: &journal::Known,
    ) -> Result<Grant, NodeError> {
        if let Some(by) = &known.cancelled_by {
            return Err(refused(format!(
                "withdrawal {} was cancelled by {by}",
                w.id
            )));
        }
        let mut w = w.clone();
        w.tx_digest = hex::encode(intent_digest(&w));
        if signed.intent.is_empty() || w.tx_digest != signed.intent {
            return Err(NodeError::Replay(format!(
                "withdrawal {} was already signed by this signer for other terms; a fee bump must be for the approved withdrawal unchanged",
                w.id
            )));
        }
        let batch = self.bumped_members(&w, a, &signed.tx)?;
        let mut ws = vec![w.clone()];
        ws.extend(batch.iter().map(|m| m.withdrawal.clone()));
        let checked = chains::check_transaction(
            &self.chains,
            &ws,
            &a.unsigned_tx,
            &self.wallet_key(&w.wallet),
            a.input_index,
        )
        .map_err(refused)?;
        Ok(Grant {
            batch,
            withdrawal: w,
            digest: checked.digest,
            message: checked.message,
            statement_hash: signed.statement_hash.clone(),
            unsigned_tx: a.unsigned_tx.clone(),
            replaces: None,
            rule_id: signed.rule_id.clone(),
            bump_approvers: Vec::new(),
            input: a.input_index,
        })
    }

    /// The approvals a fee bump needs under the policy in force (verified
    /// here from its admin signatures): none for `fee_bumps = "within_cap"`,
    /// otherwise the rule's quorum over the statement built here.
    fn fee_bump_approvals(
        &self,
        w: &Withdrawal,
        a: &WithdrawalAuthorization,
        signed: &SignedRecord,
        checked: &chains::CheckedTx,
        now: i64,
    ) -> Result<Vec<String>, NodeError> {
        let active = self.active_for(a, now)?;
        if signed.rule_id.is_empty() {
            return Err(refused(format!(
                "withdrawal {} was signed before this signer recorded its rule: a fee bump cannot be checked against the policy",
                w.id
            )));
        }
        if !fee_bump_needs_approval(&active, &signed.rule_id) {
            return Ok(Vec::new());
        }
        let hash32 = |hex_text: &str, what: &str| -> Result<[u8; 32], NodeError> {
            let mut out = [0u8; 32];
            hex::decode_to_slice(hex_text, &mut out)
                .map_err(|_| NodeError::Internal(format!("journal: stored {what}")))?;
            Ok(out)
        };
        let custos_chains::CheckedDetail::Evm(d) = &checked.checked.detail else {
            return Err(refused(format!(
                "withdrawal {}: fee bumps that need approvals are defined for EVM transactions only",
                w.id
            )));
        };
        let statement = FeeBumpStatement {
            withdrawal_id: w.id.clone(),
            statement_hash: hash32(&signed.statement_hash, "statement hash")?,
            chain: w.chain.clone(),
            nonce: d.nonce,
            replaces: hash32(&signed.digest, "digest")?,
            replacement: checked.digest,
            max_fee_per_gas: d.max_fee_per_gas,
            max_priority_fee_per_gas: d.max_priority_fee_per_gas,
            gas_limit: d.gas_limit,
            policy_hash: active.policy().hash(),
            rule_id: signed.rule_id.clone(),
            expiry: Timestamp(a.fee_bump_expiry),
        };
        let approvals: Vec<Approval> = if a.fee_bump_approvals_json.is_empty() {
            Vec::new()
        } else {
            serde_json::from_slice(&a.fee_bump_approvals_json)
                .map_err(|e| NodeError::InvalidRequest(format!("fee_bump_approvals: {e}")))?
        };
        // The initiator as this signer recorded it (the intent digest does
        // not cover it): the initiator never approves their own bump.
        let approvers = authorize_fee_bump(
            &active,
            &signed.initiator,
            &statement,
            &approvals,
            Timestamp(now),
        )
        .map_err(|e| {
            refused(format!(
                "rule {} needs approvals for a fee bump: {}",
                signed.rule_id,
                e.to_string().trim_start_matches("signing refused: ")
            ))
        })?;
        self.record_passkeys(&approvals)?;
        Ok(approvers)
    }

    /// Records what was signed (before the partial is returned): for the
    /// lead and for every other withdrawal the transaction pays.
    pub fn record_signed(
        &self,
        g: &Grant,
        presig_id: &str,
        partial: &[u8],
    ) -> Result<(), NodeError> {
        let at = self.now_secs();
        let record = |w: &Withdrawal, statement_hash: &str, rule_id: &str| SignedRecord {
            presig_id: presig_id.to_owned(),
            digest: hex::encode(g.digest),
            statement_hash: statement_hash.to_owned(),
            partial: hex::encode(partial),
            intent: hex::encode(intent_digest(w)),
            tx: hex::encode(&g.unsigned_tx),
            rule_id: rule_id.to_owned(),
            input: g.input,
            wallet: w.wallet.clone(),
            chain: w.chain.clone(),
            asset: w.asset.clone(),
            destination: w.destination.clone(),
            initiator: w.initiator.clone(),
            amount: w.amount.0.to_string(),
            fee_cap: w.fee_cap.0.to_string(),
            at,
        };
        // Members first: if this stops half-way, the lead (whose record
        // answers a repeated request) is not recorded yet and is asked again.
        for m in &g.batch {
            self.journal.signed(
                &m.withdrawal.id,
                record(&m.withdrawal, &m.statement_hash, &m.rule_id),
            )?;
        }
        self.journal.signed(
            &g.withdrawal.id,
            record(&g.withdrawal, &g.statement_hash, &g.rule_id),
        )
    }
}
