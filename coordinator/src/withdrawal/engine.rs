//! The withdrawal state machine.
//!
//! Every transition: append the audit entry (fail closed: no entry, no
//! transition), commit the new state (compare-and-set, one transaction with
//! its event row), then act. Transitions that wait (approvals, time locks,
//! unreachable signers) are resumed by a ticker, which is also what resumes
//! every non-terminal withdrawal after a restart.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use custos_audit::EntryBody;
use custos_audit::entry::{DecisionOutcome, Verdict as AuditVerdict};
use custos_policy::{
    Amount, Approval, ApprovalStatement, ApprovalStatus, Decision, HistoryEntry, Outcome,
    PasskeyAssertion, PolicyHash, RequestStatement, Timestamp, Verdict, Withdrawal, check_address,
    check_approvals, check_cancellation, check_sign_counter, evaluate, intent_digest,
    request_withdrawal_id,
};
use custos_proto::signer::{CancelNotice, WithdrawalAuthorization};
use custos_risk::{RiskAssessment, RiskModel, RiskRequest, RiskState};
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::assets::AssetConfig;
use super::bundle::PolicyHolder;
use super::machine::{self, Effect, Event, Route, Work};
use super::state::State;
use super::store::{ApprovalRow, Updates, Val, WithdrawalRow, WithdrawalStore};
use crate::audit::AuditTrail;
use crate::auth::Identity;
use crate::clock::{now_ms, now_secs};
use crate::cluster::Cluster;
use crate::error::CoordError;
use crate::stages::{self, Stage};

mod bump_quorum;
mod digest;
mod driver;
mod evm;
mod intake;
mod message;
mod onchain;
mod utxo;

/// Longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY: usize = 128;
/// Longest memo.
pub const MAX_MEMO: usize = 512;
/// Longest destination string accepted before parsing.
pub const MAX_DESTINATION: usize = 256;
/// Velocity and risk history kept in view.
const HISTORY_WINDOW_MS: i64 = 31 * 86_400_000;

/// A backend's request, as decoded from the API.
#[derive(Clone, Debug, Default)]
pub struct CreateRequest {
    /// Client-chosen idempotency key.
    pub idempotency_key: String,
    /// Wallet id.
    pub wallet: String,
    /// Asset symbol.
    pub asset: String,
    /// Destination address.
    pub destination: String,
    /// Base units, decimal.
    pub amount: String,
    /// Base units, decimal; empty: the asset default.
    pub fee_cap: String,
    /// Free text.
    pub memo: String,
    /// The client's signature over the request statement (hex), required
    /// when the policy registers a request key.
    pub request_signature: String,
    /// Spend from the wallet's derived address at this path (`m/0/5`);
    /// empty: the wallet's own address.
    pub source_path: String,
}

/// An approver's signed verdict, as received.
#[derive(Clone, Debug)]
pub struct SubmittedVerdict {
    /// Withdrawal id.
    pub withdrawal_id: String,
    /// Approver id in the policy.
    pub approver: String,
    /// What they decided.
    pub verdict: Verdict,
    /// Ed25519 signature, hex (empty with `webauthn`).
    pub signature: String,
    /// A passkey approval's assertion instead of `signature`.
    pub webauthn: Option<PasskeyAssertion>,
    /// Free text.
    pub reason: String,
}

/// The policy crate's approval for a stored row (`verdict` as stored).
fn approval_of(a: ApprovalRow, verdict: Verdict) -> Approval {
    Approval {
        approver: a.approver,
        verdict,
        signature: a.signature,
        // Unreadable JSON leaves no assertion: the approval then fails verification.
        webauthn: a
            .webauthn
            .and_then(|j| serde_json::from_str::<PasskeyAssertion>(&j).ok()),
    }
}

/// Tunables.
#[derive(Clone, Debug)]
pub struct FlowSettings {
    /// How often waiting withdrawals are revisited.
    pub tick: Duration,
    /// Added to a time lock on the coordinator's side so signers, whose lock
    /// started when they registered the quorum, are past theirs too.
    pub lock_margin: Duration,
}

/// What a step leaves the withdrawal doing.
/// What a presignature is reserved for.
#[derive(Debug)]
enum PresigUse<'a> {
    /// A withdrawal's signature (recorded on the withdrawal).
    Signing(&'a str),
    /// A fee bump of a withdrawal's transaction (recorded on its
    /// transaction), by the signers that signed it.
    FeeBump(&'a crate::chain::Chains, &'a str, &'a [String]),
    /// One input of a withdrawal's UTXO transaction (recorded on the input).
    Input(&'a crate::chain::Chains, &'a str, u32),
    /// One input of the replacement of a withdrawal's UTXO transaction, by
    /// signers that signed the transaction it replaces.
    BumpInput(&'a crate::chain::Chains, &'a str, u32, &'a [String]),
}

impl PresigUse<'_> {
    /// The signers it must have, if fixed.
    fn signers(&self) -> Option<&[String]> {
        match self {
            PresigUse::Signing(_) | PresigUse::Input(..) => None,
            PresigUse::FeeBump(_, _, s) | PresigUse::BumpInput(_, _, _, s) => Some(s),
        }
    }
}

enum Next {
    Continue,
    Wait,
}

/// A risk score, ready to log and commit.
struct Scored {
    score: u32,
    entry: EntryBody,
    summary: String,
    updates: Updates,
}

/// A policy decision, ready to log and commit (`decision_index` is added
/// once the entry has its index).
struct Decided {
    decision: Decision,
    entry: EntryBody,
    updates: Updates,
    summary: String,
}

/// What evaluating the policy came to.
enum Evaluated {
    Decided(Box<Decided>),
    /// The policy could not be evaluated: the withdrawal fails.
    Failed(String),
}

/// Where a decision routes a withdrawal, the columns that records, and the
/// event's detail.
fn plan_route(decision: &Decision) -> (Route, Updates, String) {
    match &decision.outcome {
        Outcome::Block { reason } => {
            let detail = format!(
                "blocked by rule {}: {}",
                decision.rule_id.as_deref().unwrap_or("(no rule matched)"),
                reason
            );
            (
                Route::Block,
                vec![("reason", Val::Text(Some(detail.clone())))],
                detail,
            )
        }
        Outcome::RequireApprovals => (
            Route::NeedApprovals,
            vec![],
            format!("needs {}", quorum_words(decision)),
        ),
        Outcome::Allow => (
            Route::Allow,
            vec![("approved_at", Val::Int(Some(now_secs())))],
            "allowed by policy without approvals".to_owned(),
        ),
    }
}

/// The withdrawal engine.
pub struct Engine {
    /// Storage.
    pub store: WithdrawalStore,
    cluster: Arc<Cluster>,
    policy: PolicyHolder,
    risk_model: RiskModel,
    risk_state: Mutex<RiskState>,
    audit: Arc<AuditTrail>,
    assets: Vec<AssetConfig>,
    settings: FlowSettings,
    /// Serialises policy evaluation with the velocity history it reads.
    eval_lock: Arc<tokio::sync::Mutex<()>>,
    /// New withdrawals waiting for the next group commit (`intake`).
    intake: Mutex<Vec<intake::Job>>,
    /// Serialises verdicts, so two approvals arriving together both count
    /// (each sees the other) and exactly one of them completes the quorum.
    verdict_lock: tokio::sync::Mutex<()>,
    in_flight: Mutex<HashSet<String>>,
    changes: broadcast::Sender<()>,
    /// Withdrawals per state, refreshed by the ticker (metrics).
    counts: Mutex<Vec<(String, i64)>>,
    /// Chain adapters (`[[chains]]`).
    chains: Arc<crate::chain::Chains>,
    /// The daemon's stop signal: drivers finish the step they are in and
    /// start no other, the ticker stops, watch streams end.
    stop: CancellationToken,
    /// Every task the engine spawns (drivers, intake batches, cancel
    /// notices, watch streams), so shutdown can wait for them.
    tasks: TaskTracker,
}

/// What [`Engine::drain`] came to.
#[derive(Debug, Default)]
pub struct Drained {
    /// Withdrawals whose driver was still in a step at the deadline (cut off
    /// there: the restarted coordinator resumes them from their stored state).
    pub cut_off: Vec<String>,
    /// Tasks still running at the deadline (drivers included).
    pub tasks_left: usize,
}

fn parse_amount(field: &str, s: &str, allow_zero: bool) -> Result<u128, CoordError> {
    if s.is_empty() || s.len() > 39 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CoordError::invalid(
            field,
            format!("{s:?} must be a non-negative integer in base units (decimal digits only)"),
        ));
    }
    let v: u128 = s
        .parse()
        .map_err(|_| CoordError::invalid(field, format!("{s} overflows 128 bits")))?;
    if v == 0 && !allow_zero {
        return Err(CoordError::invalid(field, "must be greater than zero"));
    }
    Ok(v)
}

fn text_ok(field: &str, s: &str, max: usize, required: bool) -> Result<(), CoordError> {
    if required && s.is_empty() {
        return Err(CoordError::invalid(field, "required"));
    }
    if s.len() > max {
        return Err(CoordError::invalid(
            field,
            format!("{} bytes, at most {max}", s.len()),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(CoordError::invalid(field, "contains control characters"));
    }
    Ok(())
}

/// Refuses a verdict just added at `index` when `status` finds it (or the
/// statement) unacceptable; problems with earlier verdicts are not its fault.
/// A verdict carries exactly one of an Ed25519 signature (128 hex) and a
/// passkey assertion.
fn check_signature_fields(v: &SubmittedVerdict) -> Result<(), CoordError> {
    match &v.webauthn {
        Some(_) if !v.signature.is_empty() => Err(CoordError::invalid(
            "signature",
            "leave it empty when a webauthn assertion is given",
        )),
        Some(a) => {
            let fields = [
                ("webauthn.credential_id", &a.credential_id),
                ("webauthn.authenticator_data", &a.authenticator_data),
                ("webauthn.client_data_json", &a.client_data_json),
                ("webauthn.signature", &a.signature),
            ];
            for (name, f) in fields {
                if f.is_empty() || f.len() > 8192 {
                    return Err(CoordError::invalid(name, "must be 1..=6144 bytes"));
                }
            }
            Ok(())
        }
        None if v.signature.len() != 128 || hex::decode(&v.signature).is_err() => {
            Err(CoordError::invalid(
                "signature",
                "must be 128 hex characters (Ed25519), or give a webauthn assertion",
            ))
        }
        None => Ok(()),
    }
}

fn refuse_if_invalid(status: &ApprovalStatus, index: usize, what: &str) -> Result<(), CoordError> {
    if let ApprovalStatus::Invalid { problems } = status {
        let mine: Vec<String> = problems
            .iter()
            .filter(|p| p.index.is_none() || p.index == Some(index))
            .map(|p| p.reason.clone())
            .collect();
        if !mine.is_empty() {
            return Err(CoordError::invalid(what, mine.join("; ")));
        }
    }
    Ok(())
}

/// How the audit log records an approve or reject verdict.
fn audit_verdict(v: Verdict) -> AuditVerdict {
    if v == Verdict::Reject {
        AuditVerdict::Reject
    } else {
        AuditVerdict::Approve
    }
}

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Approve => "approve",
        Verdict::Reject => "reject",
        Verdict::Cancel => "cancel",
    }
}

fn quorum_words(d: &Decision) -> String {
    d.quorum
        .iter()
        .map(|t| format!("{} of {}", t.count, t.group))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The policy crate's view of a stored withdrawal.
pub fn policy_withdrawal(row: &WithdrawalRow) -> Result<Withdrawal, CoordError> {
    Ok(Withdrawal {
        id: row.id.clone(),
        wallet: row.wallet.clone(),
        chain: row.chain.clone(),
        asset: row.asset.clone(),
        destination: row.destination.clone(),
        amount: Amount(parse_amount("amount", &row.amount, false)?),
        fee_cap: Amount(parse_amount("fee_cap", &row.fee_cap, true)?),
        initiator: row.initiator.clone(),
        tx_digest: row
            .tx_digest
            .as_deref()
            .map(hex::encode)
            .unwrap_or_default(),
        source: row.source(),
    })
}

impl Engine {
    /// Wires the engine; call [`Engine::run`] to start resuming withdrawals.
    /// Once `stop` is cancelled the engine starts no new step;
    /// [`Engine::drain`] waits for the ones in progress.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: WithdrawalStore,
        cluster: Arc<Cluster>,
        policy: PolicyHolder,
        risk_model: RiskModel,
        risk_state: RiskState,
        audit: Arc<AuditTrail>,
        chains: Arc<crate::chain::Chains>,
        assets: Vec<AssetConfig>,
        settings: FlowSettings,
        stop: CancellationToken,
    ) -> Arc<Self> {
        let (changes, _) = broadcast::channel(64);
        Arc::new(Self {
            store,
            cluster,
            policy,
            risk_model,
            risk_state: Mutex::new(risk_state),
            audit,
            assets,
            settings,
            eval_lock: Arc::new(tokio::sync::Mutex::new(())),
            intake: Mutex::new(Vec::new()),
            verdict_lock: tokio::sync::Mutex::new(()),
            in_flight: Mutex::new(HashSet::new()),
            changes,
            counts: Mutex::new(Vec::new()),
            chains,
            stop,
            tasks: TaskTracker::new(),
        })
    }

    /// Spawns `task` where [`Engine::drain`] waits for it.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task);
    }

    /// Spawns `task`, dropped at its next `.await` once the engine stops
    /// (a watch stream: nothing in it is worth finishing, and a stream that
    /// never ends would hold the gRPC server's drain to its deadline).
    pub fn spawn_until_stopped(&self, task: impl Future<Output = ()> + Send + 'static) {
        let stop = self.stop.clone();
        self.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = task => {}
            }
        });
    }

    /// Drives `id` in a tracked task, unless the engine is stopping: every
    /// state is stored before it is acted on, so the restarted coordinator's
    /// ticker picks the withdrawal up where it is.
    fn spawn_advance(self: &Arc<Self>, id: String) {
        if !self.stop.is_cancelled() {
            self.spawn(self.clone().advance(id));
        }
    }

    /// After the stop signal: waits until every driver has finished the step
    /// it was in (a transition commits before it acts, so each stops at a
    /// stored state) and every other engine task has ended, or until
    /// `deadline`. Logs what was drained and what was cut off.
    pub async fn drain(&self, deadline: tokio::time::Instant) -> Drained {
        self.tasks.close();
        let driving = self.in_flight_ids();
        let done = tokio::time::timeout_at(deadline, self.tasks.wait())
            .await
            .is_ok();
        if done {
            tracing::info!(withdrawals = ?driving, "withdrawal engine drained: every step in progress finished");
            return Drained::default();
        }
        let cut_off = self.in_flight_ids();
        let tasks_left = self.tasks.len();
        tracing::warn!(
            withdrawals = ?cut_off,
            tasks = tasks_left,
            "drain deadline reached: withdrawal steps still in progress are cut off (resumed from their stored state at the next start)"
        );
        Drained {
            cut_off,
            tasks_left,
        }
    }

    fn in_flight_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        ids.sort();
        ids
    }

    /// What drives withdrawals on `chain` from `signing` on: its family's
    /// driver, or signing the stored digest where no chain is configured.
    fn driver(&self, chain: &str) -> &'static dyn driver::FamilyDriver {
        match self.chains.family(chain) {
            Some(custos_chains::ChainFamily::Evm) => &evm::EvmDriver,
            Some(custos_chains::ChainFamily::Utxo(_)) => &utxo::UtxoDriver,
            Some(custos_chains::ChainFamily::Message) => &message::MessageDriver,
            None => &digest::DigestOnly,
        }
    }

    /// The EVM adapter for a withdrawal's chain, if one is configured.
    fn evm_chain(&self, chain: &str) -> Option<(&crate::chain::Chains, &crate::chain::EvmChain)> {
        let chains = self.chains.as_ref();
        chains.evm(chain).map(|c| (chains, c))
    }

    /// The configured UTXO chain `chain`, if any.
    fn utxo_chain(
        &self,
        chain: &str,
    ) -> Option<(&crate::chain::Chains, &crate::chain::utxo::UtxoChain)> {
        let chains = self.chains.as_ref();
        chains.utxo(chain).map(|c| (chains, c))
    }

    /// Rebuilds the risk model's state from stored history.
    pub async fn rebuild_risk_state(
        store: &WithdrawalStore,
        model: &RiskModel,
    ) -> Result<RiskState, CoordError> {
        let rows = store.history_since(now_ms() - HISTORY_WINDOW_MS).await?;
        let past: Vec<RiskRequest> = rows.iter().filter_map(risk_request).collect();
        RiskState::rebuild(model.config(), past).map_err(|e| CoordError::Internal(e.to_string()))
    }

    /// Withdrawals per state as of the last tick.
    pub fn state_counts(&self) -> Vec<(String, i64)> {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A receiver nudged after every committed change (WatchWithdrawals).
    pub fn subscribe(&self) -> broadcast::Receiver<()> {
        self.changes.subscribe()
    }

    /// The policy holder (address book reads).
    pub fn policy(&self) -> &PolicyHolder {
        &self.policy
    }

    /// The asset config for (chain, symbol).
    pub fn asset(&self, chain: &str, symbol: &str) -> Option<&AssetConfig> {
        self.assets
            .iter()
            .find(|a| a.chain == chain && a.symbol == symbol)
    }

    /// Every configured asset.
    pub fn assets(&self) -> &[AssetConfig] {
        &self.assets
    }

    /// The ERC-20 tokens configured (deposit detection reads their logs).
    pub fn tokens(&self) -> Vec<crate::chain::evm_deposits::Token> {
        self.assets
            .iter()
            .filter_map(|a| {
                a.contract
                    .as_ref()
                    .map(|c| crate::chain::evm_deposits::Token {
                        chain: a.chain.clone(),
                        symbol: a.symbol.clone(),
                        contract: c.clone(),
                    })
            })
            .collect()
    }

    /// Assets configured for a chain.
    pub fn assets_on(&self, chain: &str) -> Vec<String> {
        self.assets
            .iter()
            .filter(|a| a.chain == chain)
            .map(|a| a.symbol.clone())
            .collect()
    }

    /// The admins' authorization to retire `key_id`, as signers check it
    /// before destroying their shares: the bundle of the policy in force,
    /// which must list the key under `retired_keys` and be the newest
    /// activation (signers accept no older one).
    pub fn retirement_bundle(
        &self,
        key_id: &str,
    ) -> Result<super::bundle::BundleBytes, CoordError> {
        let active = self.policy.in_force(Timestamp(now_secs()));
        let hash = active.policy().hash();
        let doc = active.policy().document();
        if !doc.retired_keys.iter().any(|k| k == key_id) {
            return Err(CoordError::precondition(
                "key",
                key_id,
                format!(
                    "is not listed under retired_keys by the policy in force ({hash}, version {}): the admins must list {key_id} under retired_keys in a signed policy bundle and activate it before the key retires",
                    doc.version
                ),
            ));
        }
        if let Some(latest) = self.policy.latest()
            && PolicyHash::of_document(&latest.document) != hash
        {
            return Err(CoordError::precondition(
                "key",
                key_id,
                format!(
                    "is listed under retired_keys by the policy in force ({hash}), but the newest activated policy ({}) is not in force yet: signers accept only the newest",
                    PolicyHash::of_document(&latest.document)
                ),
            ));
        }
        self.policy.bundle(&hash).cloned().ok_or_else(|| {
            CoordError::precondition("policy", hash.to_string(), "is no longer known")
        })
    }

    /// The address-book entries of the policy in force (all chains when
    /// `chain` is empty), with when each becomes usable, and the policy hash.
    pub fn address_book(&self, chain: &str) -> (Vec<(custos_policy::AddressEntry, i64)>, String) {
        let active = self.policy.in_force(Timestamp(now_secs()));
        let doc = active.policy().document();
        let entries = doc
            .address_book
            .iter()
            .enumerate()
            .filter(|(_, e)| chain.is_empty() || e.chain == chain)
            .map(|(i, e)| (e.clone(), active.entry_usable_from(i).0))
            .collect();
        (entries, active.policy().hash().to_string())
    }

    /// The address-book id of a destination, if it is in the book.
    pub fn destination_label(&self, chain: &str, destination: &str) -> String {
        let (entries, _) = self.address_book(chain);
        entries
            .into_iter()
            .find(|(e, _)| {
                check_address(chain, &e.address)
                    .map(|c| c.canonical.eq_ignore_ascii_case(destination))
                    .unwrap_or(false)
            })
            .map(|(e, _)| {
                if e.labels.is_empty() {
                    e.id
                } else {
                    format!("{} ({})", e.id, e.labels.join(", "))
                }
            })
            .unwrap_or_default()
    }

    /// Amount in human units, when the asset is known.
    pub fn human_amount(&self, row: &WithdrawalRow) -> String {
        match (
            self.asset(&row.chain, &row.asset),
            row.amount.parse::<u128>(),
        ) {
            (Some(a), Ok(v)) => custos_policy::format_units(v, a.decimals, &a.symbol),
            _ => format!("{} {} base units", row.amount, row.asset),
        }
    }

    // ------------------------------------------------------------- create

    /// Validates and records a request, then drives it to its first waiting
    /// state (awaiting approvals, blocked, time lock, or signing in the background).
    pub async fn create(
        self: &Arc<Self>,
        client: &Identity,
        req: CreateRequest,
    ) -> Result<WithdrawalRow, CoordError> {
        text_ok(
            "idempotency_key",
            &req.idempotency_key,
            MAX_IDEMPOTENCY_KEY,
            true,
        )?;
        text_ok("wallet", &req.wallet, 64, true)?;
        text_ok("asset", &req.asset, 32, true)?;
        text_ok("destination", &req.destination, MAX_DESTINATION, true)?;
        text_ok("memo", &req.memo, MAX_MEMO, false)?;
        let amount = parse_amount("amount", &req.amount, false)?;
        let key = self.cluster.db.key(&req.wallet).await?;
        if let Some(k) = &key {
            self.cluster.check_not_retired(k).await?;
        }
        let key = key.filter(|k| k.state == "ready").ok_or_else(|| {
            CoordError::invalid("wallet", format!("unknown wallet {:?}", req.wallet))
        })?;
        let asset = self.asset(&key.chain, &req.asset).ok_or_else(|| {
            CoordError::invalid(
                "asset",
                format!(
                    "{:?} is not supported on {} (supported: {})",
                    req.asset,
                    key.chain,
                    self.assets_on(&key.chain).join(", ")
                ),
            )
        })?;
        let fee_cap = if req.fee_cap.is_empty() {
            parse_amount("fee_cap", &asset.default_fee_cap, true).unwrap_or(0)
        } else {
            parse_amount("fee_cap", &req.fee_cap, true)?
        };
        let destination = check_address(&key.chain, &req.destination)
            .map_err(|e| CoordError::invalid("destination", e.to_string()))?
            .canonical;
        // Refused now, not at signing: an ECDSA key signs a 32-byte digest
        // only, so a message of another length could never be signed.
        if key.chain == custos_chains::message::MESSAGE_CHAIN
            && key.scheme == custos_mpc::SchemeId::EcdsaSecp256k1
        {
            let message = custos_chains::message::parse_message(&destination)
                .map_err(|e| CoordError::invalid("destination", e.to_string()))?;
            if message.len() != 32 {
                return Err(CoordError::invalid(
                    "destination",
                    format!(
                        "wallet {} is an ECDSA key, which signs a 32-byte digest only: this message is {} bytes (hash it first, or use an Ed25519 or taproot key)",
                        req.wallet,
                        message.len()
                    ),
                ));
            }
        }
        // Refused now, not found at signing: a payout the chain's
        // transaction format cannot carry would wait forever.
        if let Some(family) = custos_chains::family_of(&key.chain) {
            for (field, value) in [("amount", amount), ("fee_cap", fee_cap)] {
                if value > family.max_base_units() {
                    return Err(CoordError::invalid(
                        field,
                        format!(
                            "{value} base units is more than a {} transaction can carry ({})",
                            key.chain,
                            family.max_base_units()
                        ),
                    ));
                }
            }
        }
        // A derived source: the coordinator derives its address from the
        // key's extended public key (every signer derives it again itself).
        // Only a recorded address may be a source: it is one the log holds
        // (`address_derived`), so an auditor re-derives every source, and
        // the only kind that can have received a deposit.
        let source = if req.source_path.is_empty() {
            None
        } else {
            let path: custos_mpc::DerivationPath =
                req.source_path.parse().map_err(|e: custos_mpc::MpcError| {
                    CoordError::invalid("source_path", e.to_string())
                })?;
            if path.is_master() {
                return Err(CoordError::invalid(
                    "source_path",
                    "m is the wallet's own address: leave source_path empty",
                ));
            }
            let address = crate::derived::derive(&key, &path)?.address;
            let recorded = crate::derived::get(self.store.pool(), &key.key_id, &path.to_string())
                .await?
                .ok_or_else(|| {
                    CoordError::invalid(
                        "source_path",
                        format!(
                            "{path} is not a derived address of wallet {}: derive it first (DeriveAddress, `custos address derive`)",
                            key.key_id
                        ),
                    )
                })?;
            if recorded.address != address {
                return Err(CoordError::Internal(format!(
                    "wallet {} {path}: recorded address {} differs from the derivation {address}",
                    key.key_id, recorded.address
                )));
            }
            Some((path.to_string(), address))
        };
        let mut body = serde_json::json!({
            "wallet": req.wallet, "asset": req.asset, "destination": destination,
            "amount": amount.to_string(), "fee_cap": fee_cap.to_string(), "memo": req.memo,
        });
        // Only when set, so requests without one hash as they always did.
        if let Some((path, _)) = &source {
            body["source_path"] = serde_json::Value::from(path.clone());
        }
        let request_hash = hex::encode(sha256(body.to_string().as_bytes()));
        // A policy with request keys: the client must have signed exactly
        // this request, and its id follows from the client and idempotency
        // key (signers check both, so one signature backs one withdrawal).
        let active = self.policy.in_force(Timestamp(now_secs()));
        let (id, request_signature) = if active.policy().requires_signed_requests() {
            let statement = RequestStatement {
                client: client.id.clone(),
                idempotency_key: req.idempotency_key.clone(),
                wallet: req.wallet.clone(),
                asset: req.asset.clone(),
                destination: destination.clone(),
                amount,
                source_path: source.as_ref().map(|(p, _)| p.clone()).unwrap_or_default(),
            };
            active
                .policy()
                .verify_request(&statement, &req.request_signature)
                .map_err(|e| {
                    CoordError::PermissionDenied(format!(
                        "request_signature: {} (sign the destination as {destination}{})",
                        e.to_string().trim_start_matches("signing refused: "),
                        match &source {
                            Some((path, _)) => format!(" and the source path as {path}"),
                            None => String::new(),
                        }
                    ))
                })?;
            (
                request_withdrawal_id(&client.id, &req.idempotency_key),
                Some(req.request_signature.clone()),
            )
        } else {
            let mut id_bytes = [0u8; 10];
            rand::thread_rng().fill_bytes(&mut id_bytes);
            (format!("wd-{}", hex::encode(id_bytes)), None)
        };
        let row = WithdrawalRow {
            id,
            request_signature,
            client_id: client.id.clone(),
            idempotency_key: req.idempotency_key.clone(),
            request_hash,
            wallet: req.wallet.clone(),
            chain: key.chain.clone(),
            asset: req.asset.clone(),
            destination,
            amount: amount.to_string(),
            fee_cap: fee_cap.to_string(),
            initiator: client.id.clone(),
            memo: req.memo.clone(),
            source_path: source.as_ref().map(|(p, _)| p.clone()),
            source_address: source.map(|(_, a)| a),
            state: State::Requested.as_str().into(),
            created_ms: now_ms(),
            updated_ms: now_ms(),
            ..WithdrawalRow::default()
        };
        // Risk and policy run before the call returns (the caller sees
        // blocked / awaiting_approvals / approved), in a group commit with
        // every request that arrives meanwhile; signer rounds continue in
        // the background. A repeated idempotency key is answered there too,
        // from one lookup for the whole batch.
        let row = self.clone().admit(row).await?;
        // Only a withdrawal with work to do is driven on: one awaiting
        // approvals waits for verdicts, and a new one has none yet (a
        // driver would only read it and its verdicts back, once for every
        // request of a burst).
        if !matches!(
            machine::work(row.state()?),
            Work::Nothing | Work::AwaitVerdicts
        ) {
            self.spawn_advance(row.id.clone());
        }
        Ok(row)
    }

    /// One withdrawal.
    pub async fn get(&self, id: &str) -> Result<WithdrawalRow, CoordError> {
        self.store
            .get(id)
            .await?
            .ok_or_else(|| CoordError::not_found("withdrawal", id))
    }

    // ------------------------------------------------------------ driving

    /// Drives a withdrawal until it waits. Only one driver per withdrawal runs
    /// at a time; a second call returns at once.
    pub async fn advance(self: Arc<Self>, id: String) {
        self.drive(id).await;
    }

    /// Drives a withdrawal until it waits.
    async fn drive(self: Arc<Self>, id: String) {
        {
            let mut f = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            if !f.insert(id.clone()) {
                return;
            }
        }
        let _guard = InFlight(self.clone(), id.clone());
        loop {
            // Between steps is where a stop is safe: the last step's state
            // is stored, and nothing of the next one has happened.
            if self.stop.is_cancelled() {
                return;
            }
            let row = match self.store.get(&id).await {
                Ok(Some(r)) => r,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(withdrawal = %id, error = %e, "cannot load withdrawal");
                    return;
                }
            };
            match self.step(&row).await {
                Ok(Next::Continue) => {
                    let _ = self.changes.send(());
                }
                Ok(Next::Wait) => return,
                Err(e) => {
                    // Storage or audit failure: nothing happened; the ticker retries.
                    tracing::warn!(withdrawal = %id, state = %row.state, error = %e, "withdrawal step failed; will retry");
                    return;
                }
            }
        }
    }

    /// The chains the engine signs on (the deposit watcher reads them too).
    pub fn chains(&self) -> &Arc<crate::chain::Chains> {
        &self.chains
    }

    /// Revisits waiting withdrawals until the stop signal (time locks,
    /// expiries, retries, and every non-terminal withdrawal after a restart).
    pub async fn run(self: Arc<Self>) {
        // The first pass after a start visits every open withdrawal, those
        // awaiting approvals too: a verdict stored just before a crash may
        // already settle one.
        let mut first = true;
        while !self.stop.is_cancelled() {
            match self.store.non_terminal().await {
                Ok(rows) => {
                    let now = now_secs();
                    for row in rows {
                        let due = match row.state().map(machine::work) {
                            Ok(Work::AwaitVerdicts) => {
                                first || row.statement_expiry.is_some_and(|e| now >= e)
                            }
                            Ok(Work::AwaitTimeLock) => {
                                row.time_lock_until.is_some_and(|t| now >= t)
                                    || row.statement_expiry.is_some_and(|e| now >= e)
                            }
                            _ => true,
                        };
                        if due {
                            self.spawn_advance(row.id.clone());
                        }
                    }
                    first = false;
                }
                Err(e) => tracing::warn!(error = %e, "cannot list open withdrawals"),
            }
            if let Ok(c) = self.store.count_by_state().await {
                *self.counts.lock().unwrap_or_else(|p| p.into_inner()) = c;
            }
            tokio::select! {
                _ = self.stop.cancelled() => {}
                _ = tokio::time::sleep(self.settings.tick) => {}
            }
        }
    }

    async fn step(self: &Arc<Self>, row: &WithdrawalRow) -> Result<Next, CoordError> {
        match machine::work(row.state()?) {
            Work::Score => self.score(row).await,
            Work::Decide => self.decide(row).await,
            Work::Route => {
                let _g = self.eval_lock.lock().await;
                self.route(row).await
            }
            Work::AwaitVerdicts => match self.expire_if_due(row).await? {
                Next::Wait => self.settle_stored_verdicts(row).await,
                moved => Ok(moved),
            },
            Work::RegisterQuorum => self.register_quorum(row).await,
            Work::AwaitTimeLock => {
                if let Next::Continue = self.expire_if_due(row).await? {
                    return Ok(Next::Continue);
                }
                if row.time_lock_until.is_some_and(|t| now_secs() >= t) {
                    self.move_to(row, Event::TimeLockElapsed, vec![], "time lock elapsed")
                        .await
                } else {
                    Ok(Next::Wait)
                }
            }
            Work::Sign => self.sign(row).await,
            Work::Publish => self.driver(&row.chain).publish(self, row).await,
            Work::Nothing => Ok(Next::Wait),
        }
    }

    /// The driver of [`machine::next`]: executes `event`'s transition for
    /// `row` in the machine's order (status entry, compare-and-set commit,
    /// then the effects that act). Returns the committed row, or `None` when
    /// someone else moved the withdrawal first (a cancel, another driver):
    /// then nothing was acted on and the caller looks again.
    async fn apply(
        &self,
        row: &WithdrawalRow,
        event: Event,
        updates: Updates,
        detail: &str,
    ) -> Result<Option<WithdrawalRow>, CoordError> {
        let from = row.state()?;
        let t = machine::next(from, event).map_err(|e| {
            CoordError::precondition("withdrawal", row.id.clone(), format!("refuses: {e}"))
        })?;
        let mut committed = None;
        let mut updates = Some(updates);
        for effect in &t.effects {
            match effect {
                Effect::LogStatus => {
                    self.audit
                        .append(EntryBody::StatusChanged {
                            withdrawal_id: row.id.clone(),
                            status: t.to.audit_status(),
                            reason: detail.to_owned(),
                        })
                        .await?;
                }
                Effect::Commit => {
                    committed = self
                        .store
                        .transition(
                            &row.id,
                            &[from],
                            t.to,
                            updates.take().unwrap_or_default(),
                            detail,
                        )
                        .await?;
                    if committed.is_none() {
                        return Ok(None);
                    }
                }
                Effect::RecordRisk => {
                    if let Some(req) = risk_request(row) {
                        self.risk_state
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .record(&req);
                    }
                }
                Effect::ReleaseNonce => {
                    self.driver(&row.chain).release(self, &row.id).await?;
                }
                // The caller holds what the signers must be told (the
                // cancel's signature); see `finish_cancel`.
                Effect::NotifySigners | Effect::Continue => {}
            }
        }
        Ok(committed)
    }

    /// [`Engine::apply`] for a step of the driver loop.
    async fn move_to(
        &self,
        row: &WithdrawalRow,
        event: Event,
        updates: Updates,
        detail: &str,
    ) -> Result<Next, CoordError> {
        self.apply(row, event, updates, detail).await?;
        // Look again either way: the new state's work (or someone else's
        // move) decides whether to wait.
        Ok(Next::Continue)
    }

    async fn expire_if_due(&self, row: &WithdrawalRow) -> Result<Next, CoordError> {
        match row.statement_expiry {
            Some(e) if now_secs() >= e => {
                let detail = format!("approvals expired at {}", Timestamp(e));
                self.move_to(
                    row,
                    Event::Expired,
                    vec![("reason", Val::Text(Some(detail.clone())))],
                    &detail,
                )
                .await
            }
            _ => Ok(Next::Wait),
        }
    }

    async fn score(&self, row: &WithdrawalRow) -> Result<Next, CoordError> {
        let scored = self.assess(row)?;
        self.audit.append(scored.entry).await?;
        self.apply(row, Event::Scored, scored.updates, &scored.summary)
            .await?;
        Ok(Next::Continue)
    }

    /// The risk model's score of `row`, with its log entry and columns.
    fn assess(&self, row: &WithdrawalRow) -> Result<Scored, CoordError> {
        let req = risk_request(row).ok_or_else(|| CoordError::Internal("stored amount".into()))?;
        let started = std::time::Instant::now();
        let assessment: RiskAssessment = {
            let st = self.risk_state.lock().unwrap_or_else(|p| p.into_inner());
            self.risk_model.score(
                &st,
                &RiskRequest {
                    at_ms: u64::try_from(now_ms()).unwrap_or(0),
                    ..req
                },
            )
        };
        stages::since(Stage::Risk, started);
        let json =
            serde_json::to_string(&assessment).map_err(|e| CoordError::Internal(e.to_string()))?;
        Ok(Scored {
            score: assessment.score,
            entry: EntryBody::RiskScored {
                withdrawal_id: row.id.clone(),
                provider: "custos-risk/1".into(),
                score: assessment.score,
                details_hash: custos_audit::Hash::from(sha256(json.as_bytes())),
            },
            summary: assessment.summary(),
            updates: vec![
                ("risk_score", Val::Int(Some(i64::from(assessment.score)))),
                ("risk_json", Val::Text(Some(json))),
            ],
        })
    }

    async fn velocity_history(&self, wallet: &str) -> Result<Vec<HistoryEntry>, CoordError> {
        let rows = self
            .store
            .velocity_history(wallet, now_ms() - HISTORY_WINDOW_MS)
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                Some(HistoryEntry {
                    id: r.id.clone(),
                    wallet: r.wallet.clone(),
                    chain: r.chain.clone(),
                    asset: r.asset.clone(),
                    destination: r.destination.clone(),
                    initiator: r.initiator.clone(),
                    amount: Amount(r.amount.parse().ok()?),
                    fee_cap: Amount(r.fee_cap.parse().unwrap_or(0)),
                    at: Timestamp(r.approved_at?),
                })
            })
            .collect())
    }

    /// Evaluates the policy and, under the same lock, routes the decision so
    /// that an `allow` counts toward velocity before the next evaluation.
    async fn decide(&self, row: &WithdrawalRow) -> Result<Next, CoordError> {
        let _g = self.eval_lock.lock().await;
        let now = Timestamp(now_secs());
        let active = self.policy.in_force(now);
        let history = self.velocity_history(&row.wallet).await?;
        match self.evaluate_row(row, &active, &history, now)? {
            Evaluated::Failed(detail) => {
                self.move_to(
                    row,
                    Event::EvaluationFailed,
                    vec![("reason", Val::Text(Some(detail.clone())))],
                    &detail,
                )
                .await
            }
            Evaluated::Decided(d) => {
                let decision_index = self.audit.append(d.entry).await?;
                let mut updates = d.updates;
                updates.push((
                    "decision_index",
                    Val::Int(i64::try_from(decision_index).ok()),
                ));
                match self.apply(row, Event::Decided, updates, &d.summary).await? {
                    Some(r) => self.route(&r).await,
                    None => Ok(Next::Continue),
                }
            }
        }
    }

    /// The policy's decision on `row` (risk already scored) against
    /// `history`, with its log entry and columns; pure but for the clock
    /// read by the caller.
    fn evaluate_row(
        &self,
        row: &WithdrawalRow,
        active: &custos_policy::ActivePolicy,
        history: &[HistoryEntry],
        now: Timestamp,
    ) -> Result<Evaluated, CoordError> {
        let mut w = policy_withdrawal(row)?;
        // No transaction adapter yet for this chain: the transfer-intent digest.
        let digest = intent_digest(&w);
        w.tx_digest = hex::encode(digest);
        let score = u32::try_from(row.risk_score.unwrap_or(100)).unwrap_or(100);
        let started = std::time::Instant::now();
        let evaluated = evaluate(active, &w, history, now, score);
        stages::since(Stage::Policy, started);
        let decision = match evaluated {
            Ok(d) => d,
            Err(e) => return Ok(Evaluated::Failed(format!("policy evaluation failed: {e}"))),
        };
        let explanation = decision.explain();
        let lifetime = decision
            .approval_expiry
            .unwrap_or(active.policy().document().settings.approval_expiry);
        let expiry = now.plus(lifetime);
        let (outcome, audit_outcome) = match &decision.outcome {
            Outcome::Allow => ("allow", DecisionOutcome::Allow),
            Outcome::RequireApprovals => (
                "require_approvals",
                DecisionOutcome::RequireApprovals {
                    quorum: u16::try_from(decision.quorum.iter().map(|t| t.count).sum::<u32>())
                        .unwrap_or(u16::MAX),
                },
            ),
            Outcome::Block { .. } => ("block", DecisionOutcome::Deny),
        };
        let statement = match decision.outcome {
            Outcome::Block { .. } => None,
            _ => Some(
                ApprovalStatement::for_decision(&decision, &w, expiry)
                    .and_then(|s| s.encode())
                    .map_err(|e| CoordError::Internal(format!("statement: {e}")))?,
            ),
        };
        let decision_json =
            serde_json::to_string(&decision).map_err(|e| CoordError::Internal(e.to_string()))?;
        let entry = EntryBody::PolicyDecision {
            withdrawal_id: row.id.clone(),
            policy_hash: custos_audit::Hash::from(decision.policy_hash.0),
            rule_id: decision.rule_id.clone().unwrap_or_default(),
            outcome: audit_outcome,
            explanation_hash: custos_audit::Hash::from(sha256(explanation.as_bytes())),
        };
        let summary = format!(
            "{outcome} by rule {}",
            decision.rule_id.as_deref().unwrap_or("(none)")
        );
        let updates = vec![
            ("rule_id", Val::Text(decision.rule_id.clone())),
            ("outcome", Val::Text(Some(outcome.into()))),
            ("explanation", Val::Text(Some(explanation))),
            ("decision_json", Val::Text(Some(decision_json))),
            (
                "policy_hash",
                Val::Text(Some(decision.policy_hash.to_string())),
            ),
            ("required", Val::Text(Some(quorum_words(&decision)))),
            ("delay_secs", Val::Int(decision.delay.map(|d| d.secs_i64()))),
            ("cancel_group", Val::Text(decision.cancel_group.clone())),
            ("statement", Val::Blob(statement)),
            ("statement_expiry", Val::Int(Some(expiry.0))),
            ("tx_digest", Val::Blob(Some(digest.to_vec()))),
        ];
        Ok(Evaluated::Decided(Box::new(Decided {
            decision,
            entry,
            updates,
            summary,
        })))
    }

    /// policy_evaluated → blocked | awaiting_approvals | approved.
    async fn route(&self, row: &WithdrawalRow) -> Result<Next, CoordError> {
        let (route, updates, detail) = plan_route(&self.decision(row)?);
        self.move_to(row, Event::Routed(route), updates, &detail)
            .await
    }

    fn decision(&self, row: &WithdrawalRow) -> Result<Decision, CoordError> {
        let json = row
            .decision_json
            .as_deref()
            .ok_or_else(|| CoordError::Internal(format!("{} has no decision", row.id)))?;
        serde_json::from_str(json)
            .map_err(|e| CoordError::Internal(format!("stored decision: {e}")))
    }

    fn statement(&self, row: &WithdrawalRow) -> Result<ApprovalStatement, CoordError> {
        let bytes = row.statement.as_deref().ok_or_else(|| {
            CoordError::precondition("withdrawal", row.id.clone(), "has nothing to approve")
        })?;
        ApprovalStatement::decode(bytes)
            .map_err(|e| CoordError::Internal(format!("stored statement: {e}")))
    }

    /// Everything a signer needs to verify the withdrawal itself.
    pub async fn authorization(
        &self,
        row: &WithdrawalRow,
    ) -> Result<WithdrawalAuthorization, CoordError> {
        let w = policy_withdrawal(row)?;
        let hash = PolicyHash::from_hex(row.policy_hash.as_deref().unwrap_or_default())
            .map_err(|e| CoordError::Internal(format!("stored policy hash: {e}")))?;
        let bundle = self.policy.bundle(&hash).ok_or_else(|| {
            CoordError::precondition("policy", hash.to_string(), "is no longer known")
        })?;
        let latest = self.policy.latest().unwrap_or(bundle);
        let approvals: Vec<Approval> = self
            .store
            .approvals(&row.id)
            .await?
            .into_iter()
            .filter(|a| a.verdict == "approve")
            .map(|a| approval_of(a, Verdict::Approve))
            .collect();
        Ok(WithdrawalAuthorization {
            withdrawal_json: serde_json::to_vec(&w)
                .map_err(|e| CoordError::Internal(e.to_string()))?,
            unsigned_tx: row.unsigned_tx.clone().unwrap_or_default(),
            policy_document: bundle.document.clone(),
            policy_signatures: bundle.signatures.clone(),
            rule_id: row.rule_id.clone().unwrap_or_default(),
            idempotency_key: row.idempotency_key.clone(),
            request_signature: row.request_signature.clone().unwrap_or_default(),
            statement_expiry: row.statement_expiry.unwrap_or(0),
            risk_score: u32::try_from(row.risk_score.unwrap_or(100)).unwrap_or(100),
            approvals_json: serde_json::to_vec(&approvals)
                .map_err(|e| CoordError::Internal(e.to_string()))?,
            latest_policy_document: latest.document.clone(),
            latest_policy_signatures: latest.signatures.clone(),
            ..WithdrawalAuthorization::default()
        })
    }

    /// approved → time_locked | signing, once enough signers registered the quorum.
    async fn register_quorum(&self, row: &WithdrawalRow) -> Result<Next, CoordError> {
        let key = self.key(row).await?;
        let auth = self.authorization(row).await?;
        let started = std::time::Instant::now();
        let results = self.cluster.register_quorum(&key.participants, auth).await;
        stages::since(Stage::Registration, started);
        let mut accepted = 0usize;
        let mut refusals = Vec::new();
        let mut unreachable = 0usize;
        for (node, r) in &results {
            match r {
                Ok(_) => accepted += 1,
                Err(CoordError::Refused { reason, .. }) => {
                    refusals.push(format!("{node}: {reason}"))
                }
                Err(e) => {
                    unreachable += 1;
                    tracing::info!(withdrawal = %row.id, %node, error = %e, "signer did not register the quorum yet");
                }
            }
        }
        let t = usize::from(key.threshold);
        if accepted + unreachable < t {
            let detail = format!("signers refused: {}", refusals.join("; "));
            return self
                .move_to(
                    row,
                    Event::SignersRefused,
                    vec![
                        ("reason", Val::Text(Some(detail.clone()))),
                        (
                            "signer_notes",
                            Val::Text(Some(serde_json::to_string(&refusals).unwrap_or_default())),
                        ),
                    ],
                    &detail,
                )
                .await;
        }
        if accepted < t {
            return Ok(Next::Wait);
        }
        let delay = row.delay_secs.unwrap_or(0);
        if delay <= 0 {
            return self
                .move_to(
                    row,
                    Event::QuorumRegistered { time_lock: false },
                    vec![],
                    "quorum registered with signers",
                )
                .await;
        }
        let until =
            now_secs() + delay + i64::try_from(self.settings.lock_margin.as_secs()).unwrap_or(1);
        self.move_to(
            row,
            Event::QuorumRegistered { time_lock: true },
            vec![("time_lock_until", Val::Int(Some(until)))],
            &format!("time lock until {}", Timestamp(until)),
        )
        .await
    }

    /// The key `row` spends with, as the chain drivers use it: the
    /// wallet's key, or for a withdrawal from a derived address the child
    /// key (its public key and address; the key id, presignature pool and
    /// lock stay the wallet's, the signers derive the child themselves).
    async fn key(&self, row: &WithdrawalRow) -> Result<crate::db::KeyRow, CoordError> {
        let key = self
            .cluster
            .db
            .key(&row.wallet)
            .await?
            .ok_or_else(|| CoordError::Internal(format!("wallet {} vanished", row.wallet)))?;
        let Some(source) = row.source() else {
            return Ok(key);
        };
        let path: custos_mpc::DerivationPath = source
            .path
            .parse()
            .map_err(|e| CoordError::Internal(format!("{}: stored source path: {e}", row.id)))?;
        let child = crate::derived::derive(&key, &path)?;
        if child.address != source.address {
            return Err(CoordError::Internal(format!(
                "{}: source path {} derives {}, not the stored {}",
                row.id, source.path, child.address, source.address
            )));
        }
        // Combining verifies against the child key: its public package
        // (a FROST child's verifying shares), not the master's.
        Ok(crate::db::KeyRow {
            public_key: Some(child.public_key),
            public_package: Some(child.public_package),
            address: Some(child.address),
            ..key
        })
    }

    /// A locked key (repeated unexplained signing failures) signs nothing:
    /// the withdrawal waits, with a note, until an admin unlocks it.
    async fn wait_if_locked(
        &self,
        row: &WithdrawalRow,
        state: State,
        key: &crate::db::KeyRow,
    ) -> Result<Option<Next>, CoordError> {
        match self.cluster.locks.check(&key.key_id).await {
            Ok(()) => Ok(None),
            Err(e @ CoordError::FailedPrecondition { .. }) => {
                self.note(row, state, &e.to_string()).await?;
                Ok(Some(Next::Wait))
            }
            Err(e) => Err(e),
        }
    }

    /// Reserves a ready presignature of `key` (or makes one) with `reserve`,
    /// which consumes it durably and records it where it will be used.
    /// `Some(true)`: reserved; `Some(false)`: lost a race (step again);
    /// `None`: none can be had now (wait for the tick).
    async fn take_presig(
        &self,
        key: &crate::db::KeyRow,
        target: PresigUse<'_>,
    ) -> Result<Option<bool>, CoordError> {
        let only = target.signers();
        let same = |signers: &[String]| {
            only.is_none_or(|o| {
                let mut a = o.to_vec();
                let mut b = signers.to_vec();
                a.sort();
                b.sort();
                a == b
            })
        };
        for (presig, signers) in self.cluster.usable_presigs(key).await? {
            if same(&signers) && self.reserve_for(&target, &presig, &signers).await? {
                return Ok(Some(true));
            }
        }
        match self.cluster.presign_among(key, only).await {
            Ok((presig, signers)) => Ok(Some(self.reserve_for(&target, &presig, &signers).await?)),
            Err(e) => {
                tracing::info!(target = ?target, error = %e, "no presignature yet");
                Ok(None)
            }
        }
    }

    async fn reserve_for(
        &self,
        target: &PresigUse<'_>,
        presig: &str,
        signers: &[String],
    ) -> Result<bool, CoordError> {
        match target {
            PresigUse::Signing(id) => self.store.reserve_presig(id, presig, signers).await,
            PresigUse::FeeBump(chains, id, _) => {
                chains.reserve_bump_presig(id, presig, signers).await
            }
            PresigUse::Input(chains, id, index) => {
                chains
                    .reserve_input_presig(
                        crate::chain::utxo::Inputs::Current,
                        id,
                        *index,
                        presig,
                        signers,
                    )
                    .await
            }
            PresigUse::BumpInput(chains, id, index, _) => {
                chains
                    .reserve_input_presig(
                        crate::chain::utxo::Inputs::Replacement,
                        id,
                        *index,
                        presig,
                        signers,
                    )
                    .await
            }
        }
    }

    /// Logs the signing session, has it witnessed by the signers (with the
    /// policy decision), asks them for their partials with the proofs, and
    /// logs the signature. A signer releases its partial only for a signing
    /// session in a checkpoint it co-signed, so every signature that can
    /// exist is in the log. The outer error is the audit log's (nothing was
    /// signed, or the signature is not used); the inner one the signers'
    /// (a witness round that did not complete is `Unavailable`: retried).
    async fn audited_sign(
        &self,
        row: &WithdrawalRow,
        key: &crate::db::KeyRow,
        digest: &[u8; 32],
        presig: &str,
        signers: &[String],
        auth: WithdrawalAuthorization,
    ) -> Result<Result<crate::cluster::SignOutcome, CoordError>, CoordError> {
        self.audited_sign_message(row, key, digest, digest, presig, signers, auth)
            .await
    }

    /// [`Self::audited_sign`] where the key signs `message` and the log
    /// names its `digest` (the `message` chain: the message and its SHA-256).
    #[allow(clippy::too_many_arguments)]
    async fn audited_sign_message(
        &self,
        row: &WithdrawalRow,
        key: &crate::db::KeyRow,
        digest: &[u8; 32],
        message: &[u8],
        presig: &str,
        signers: &[String],
        mut auth: WithdrawalAuthorization,
    ) -> Result<Result<crate::cluster::SignOutcome, CoordError>, CoordError> {
        let statement_hash = row.statement.as_deref().map(sha256).unwrap_or_default();
        // Logged once per transaction: the first input's session carries it.
        if !auth.unsigned_tx.is_empty() && auth.input_index == 0 {
            // What is signed, for auditors to decode and compare with the
            // approval: once for each withdrawal it pays (a batch's members
            // have no signing session of their own; this entry binds each
            // of them to the transaction, for the signers and the auditors).
            let mut ids = vec![row.id.clone()];
            for m in &auth.batch {
                let w: custos_policy::Withdrawal = serde_json::from_slice(&m.withdrawal_json)
                    .map_err(|e| CoordError::Internal(format!("batch member: {e}")))?;
                ids.push(w.id);
            }
            for id in ids {
                self.audit
                    .append(EntryBody::TransactionPrepared {
                        withdrawal_id: id,
                        chain: row.chain.clone(),
                        unsigned_tx: auth.unsigned_tx.clone(),
                    })
                    .await?;
            }
        }
        let decision_index = row
            .decision_index
            .and_then(|i| u64::try_from(i).ok())
            .ok_or_else(|| CoordError::Internal(format!("{} has no decision entry", row.id)))?;
        let session = EntryBody::SigningSession {
            withdrawal_id: row.id.clone(),
            key_id: key.key_id.clone(),
            execution_id: statement_hash.to_vec(),
            participants: signers.to_vec(),
            presignature_id: Some(presig.to_owned()),
            message_digest: custos_audit::Hash::from(*digest),
        };
        // A retry of this very session (same presignature, signers and
        // digest) reuses its entry: signers refuse a presignature under a
        // second one (found by the crash storm: a witness round cut short
        // by a killed signer left the withdrawal unsignable).
        let signing_index = match self.audit.logged(decision_index, &session).await? {
            Some(i) => i,
            None => self.audit.append(session).await?,
        };
        // One witness round covers the decision and the signing session.
        // A witness round that fails keeps each witness's failure (typed,
        // the refusing one as culprit) and counts as unavailable: the
        // withdrawal waits with a note and signs once the witnesses co-sign.
        let size = match self.audit.witness_through(signing_index, signers).await {
            Ok(s) => s,
            Err(e @ CoordError::Storage { .. }) => return Err(e),
            Err(e) if e.is_transient() => return Ok(Err(e)),
            Err(e) => {
                return Ok(Err(CoordError::unavailable(format!(
                    "witness round before signing: {e}"
                ))));
            }
        };
        let (decision, decision_proof) = self.audit.entry_with_proof(decision_index, size).await?;
        let (signing, signing_proof) = self.audit.entry_with_proof(signing_index, size).await?;
        auth.decision_entry_index = decision_index;
        auth.decision_entry = decision;
        auth.inclusion_proof = decision_proof;
        auth.signing_entry_index = signing_index;
        auth.signing_entry = signing;
        auth.signing_inclusion_proof = signing_proof;
        auth.proof_tree_size = size;
        for m in &mut auth.batch {
            let (entry, proof) = self
                .audit
                .entry_with_proof(m.decision_entry_index, size)
                .await?;
            m.decision_entry = entry;
            m.inclusion_proof = proof;
        }
        let outcome = self
            .cluster
            .sign_withdrawal(key, message, presig, signers, auth)
            .await;
        if let Ok(sig) = &outcome {
            // ECDSA `r || s || recovery id`; other schemes their standard
            // encoding (BIP340 `R.x || s`, Ed25519 `R || S`).
            let signature = if sig.scheme == custos_mpc::SchemeId::EcdsaSecp256k1 {
                let mut signature = sig.r.to_vec();
                signature.extend_from_slice(&sig.s);
                signature.push(sig.recovery_id);
                signature
            } else {
                sig.signature.clone()
            };
            self.audit
                .append(EntryBody::SignatureProduced {
                    withdrawal_id: row.id.clone(),
                    key_id: key.key_id.clone(),
                    execution_id: statement_hash.to_vec(),
                    message_digest: custos_audit::Hash::from(*digest),
                    signature,
                })
                .await?;
        }
        Ok(outcome)
    }

    /// signing → signed | failed (retries while signers are unreachable):
    /// the chain family's driver builds what is signed.
    async fn sign(&self, row: &WithdrawalRow) -> Result<Next, CoordError> {
        let key = self.key(row).await?;
        if let Some(next) = self.wait_if_locked(row, State::Signing, &key).await? {
            return Ok(next);
        }
        self.driver(&row.chain).sign(self, row, &key).await
    }

    /// Signs `digest` for `row` in one session from a presignature reserved
    /// for the withdrawal (reserving one first), then settles the outcome.
    async fn sign_digest(
        &self,
        row: &WithdrawalRow,
        key: &crate::db::KeyRow,
        digest: &[u8; 32],
    ) -> Result<Next, CoordError> {
        self.sign_message(row, key, digest, digest).await
    }

    /// [`Self::sign_digest`] where the key signs `message` and the log names
    /// its `digest` (the `message` chain).
    async fn sign_message(
        &self,
        row: &WithdrawalRow,
        key: &crate::db::KeyRow,
        digest: &[u8; 32],
        message: &[u8],
    ) -> Result<Next, CoordError> {
        let unsigned_tx = row.unsigned_tx.clone();
        let mut row = row.clone();
        if row.presig_id.is_none() {
            match self.take_presig(key, PresigUse::Signing(&row.id)).await? {
                Some(true) => {
                    row = self.get(&row.id).await?;
                    // What the driver made to sign, kept over the reload.
                    if row.unsigned_tx.is_none() {
                        row.unsigned_tx = unsigned_tx;
                    }
                }
                Some(false) => return Ok(Next::Continue),
                None => return Ok(Next::Wait),
            }
        }
        let presig = row.presig_id.clone().unwrap_or_default();
        let signers: Vec<String> =
            serde_json::from_str(row.signers.as_deref().unwrap_or("[]")).unwrap_or_default();
        let auth = self.authorization(&row).await?;
        let started = std::time::Instant::now();
        let signed = self
            .audited_sign_message(&row, key, digest, message, &presig, &signers, auth)
            .await?;
        stages::since(Stage::Signing, started);
        self.settle_signing(&row, signed).await
    }

    /// What one signing session's outcome does to the withdrawal: signed,
    /// waiting (signers unreachable: retried), or failed.
    async fn settle_signing(
        &self,
        row: &WithdrawalRow,
        signed: Result<crate::cluster::SignOutcome, CoordError>,
    ) -> Result<Next, CoordError> {
        match signed {
            Ok(sig) => {
                let (r, s, recovery_id) = stored_parts(&sig);
                self.apply(
                    row,
                    Event::Signed,
                    vec![
                        ("sig_r", Val::Blob(Some(r))),
                        ("sig_s", Val::Blob(Some(s))),
                        ("recovery_id", Val::Int(Some(i64::from(recovery_id)))),
                    ],
                    &format!("signed by {}", sig.signers.join(", ")),
                )
                .await?;
                Ok(Next::Continue)
            }
            Err(e) if e.is_transient() => {
                self.note(row, State::Signing, &e.to_string()).await?;
                Ok(Next::Wait)
            }
            Err(e) => {
                let detail = format!("signing failed: {e}");
                self.note(row, State::Signing, &e.to_string()).await?;
                // No signature exists: the machine releases its nonce.
                self.move_to(
                    row,
                    Event::SigningFailed,
                    vec![("reason", Val::Text(Some(detail.clone())))],
                    &detail,
                )
                .await
            }
        }
    }

    async fn note(&self, row: &WithdrawalRow, state: State, note: &str) -> Result<(), CoordError> {
        let mut notes: Vec<String> = serde_json::from_str(&row.signer_notes).unwrap_or_default();
        if notes.last().map(String::as_str) == Some(note) {
            return Ok(());
        }
        notes.push(note.to_owned());
        if notes.len() > 20 {
            notes.remove(0);
        }
        self.store
            .update(
                &row.id,
                state,
                vec![(
                    "signer_notes",
                    Val::Text(Some(serde_json::to_string(&notes).unwrap_or_default())),
                )],
            )
            .await?;
        Ok(())
    }

    // ---------------------------------------------------------- approvals

    /// Verifies and records an approver's signed verdict, then moves the
    /// withdrawal on if it completes (or denies) the quorum.
    pub async fn submit(
        self: &Arc<Self>,
        v: SubmittedVerdict,
    ) -> Result<WithdrawalRow, CoordError> {
        let _serialised = self.verdict_lock.lock().await;
        let row = self.get(&v.withdrawal_id).await?;
        let state = row.state()?;
        text_ok("approver", &v.approver, 64, true)?;
        text_ok("reason", &v.reason, MAX_MEMO, false)?;
        check_signature_fields(&v)?;
        let statement = self.statement(&row)?;
        let decision = self.decision(&row)?;
        let now = Timestamp(now_secs());
        let active = self.policy.in_force(now);
        if active.policy().hash() != decision.policy_hash {
            return Err(CoordError::precondition(
                "withdrawal",
                row.id.clone(),
                "was evaluated under a policy that is no longer in force (the policy changed); request it again",
            ));
        }
        let new = Approval {
            approver: v.approver.clone(),
            verdict: v.verdict,
            signature: v.signature.clone(),
            webauthn: v.webauthn.clone(),
        };
        if v.verdict == Verdict::Cancel {
            // A passkey cancellation (the approval app's) is verified like
            // a passkey approval, by check_cancellation here and by every
            // signer; its counter is compared too, though a replayed cancel
            // could only cancel.
            self.check_passkey_counter(&new).await?;
            return self
                .cancel_signed(row, state, &active, &decision, &statement, new, &v.reason)
                .await;
        }
        if state != State::AwaitingApprovals {
            return Err(CoordError::precondition(
                "withdrawal",
                row.id.clone(),
                format!("is {state}: approvals are accepted only while awaiting_approvals"),
            ));
        }
        let mut all = self.stored_verdicts(&row.id).await?;
        if all.iter().any(|a| a.approver == new.approver) {
            return Err(CoordError::already_exists(
                "approver",
                new.approver.clone(),
                format!("already gave a verdict on withdrawal {}", row.id),
            ));
        }
        all.push(new.clone());
        let status = check_approvals(&active, &decision, &statement, &all, now);
        refuse_if_invalid(
            &status,
            all.len() - 1,
            &format!("approval by {}", new.approver),
        )?;
        self.check_passkey_counter(&new).await?;
        let signature = new.log_signature();
        self.audit
            .append(EntryBody::Approval {
                withdrawal_id: row.id.clone(),
                approver_id: new.approver.clone(),
                verdict: audit_verdict(new.verdict),
                statement: row.statement.clone().unwrap_or_default(),
                signature,
            })
            .await?;
        let stored = self
            .store
            .add_approval(
                &row.id,
                &ApprovalRow {
                    approver: new.approver.clone(),
                    verdict: verdict_name(new.verdict).into(),
                    signature: new.signature.clone(),
                    reason: v.reason.clone(),
                    received_ms: now_ms(),
                    webauthn: new
                        .webauthn
                        .as_ref()
                        .and_then(|a| serde_json::to_string(a).ok()),
                },
            )
            .await?;
        if !stored {
            return Err(CoordError::already_exists(
                "approver",
                new.approver.clone(),
                format!("already gave a verdict on withdrawal {}", row.id),
            ));
        }
        let _ = self.changes.send(());
        if let Next::Continue = self.settle(&row, status, &v.reason).await? {
            self.spawn_advance(row.id.clone());
        }
        let _ = self.changes.send(());
        self.get(&row.id).await
    }

    /// Refuses a passkey approval whose sign counter is not above the last
    /// one this coordinator stored for the credential (an early error: every
    /// signer compares counters again in its own storage).
    async fn check_passkey_counter(&self, new: &Approval) -> Result<(), CoordError> {
        let Some(assertion) = &new.webauthn else {
            return Ok(());
        };
        let bad = |e: custos_policy::PolicyError| CoordError::invalid("webauthn", e.to_string());
        let id = assertion.credential_id_bytes().map_err(bad)?;
        let counter = assertion.sign_counter().map_err(bad)?;
        let mut last = 0;
        for json in self.store.passkey_assertions(&new.approver).await? {
            let Ok(seen) = serde_json::from_str::<PasskeyAssertion>(&json) else {
                continue;
            };
            if seen.credential_id_bytes().ok().as_deref() == Some(id.as_slice()) {
                last = last.max(seen.sign_counter().unwrap_or(0));
            }
        }
        check_sign_counter(last, counter).map_err(|e| {
            CoordError::invalid(
                "webauthn",
                format!("passkey approval of {} refused: {e}", new.approver),
            )
        })
    }

    /// The approve and reject verdicts stored for a withdrawal.
    async fn stored_verdicts(&self, id: &str) -> Result<Vec<Approval>, CoordError> {
        Ok(self
            .store
            .approvals(id)
            .await?
            .into_iter()
            .filter_map(|a| {
                let verdict = match a.verdict.as_str() {
                    "approve" => Verdict::Approve,
                    "reject" => Verdict::Reject,
                    _ => return None,
                };
                Some(approval_of(a, verdict))
            })
            .collect())
    }

    /// Moves a withdrawal awaiting approvals on to `approved` or `rejected`
    /// when its stored verdicts settle it; `reason` is the last rejecter's.
    async fn settle(
        self: &Arc<Self>,
        row: &WithdrawalRow,
        status: ApprovalStatus,
        reason: &str,
    ) -> Result<Next, CoordError> {
        match status {
            ApprovalStatus::Satisfied { approvers } => {
                let detail = format!("quorum reached: {}", approvers.join(", "));
                self.move_to(
                    row,
                    Event::QuorumReached,
                    vec![("approved_at", Val::Int(Some(now_secs())))],
                    &detail,
                )
                .await?;
                Ok(Next::Continue)
            }
            ApprovalStatus::Rejected { by } => {
                let detail = format!(
                    "rejected by {}{}",
                    by.join(", "),
                    if reason.is_empty() {
                        String::new()
                    } else {
                        format!(": {reason}")
                    }
                );
                self.move_to(
                    row,
                    Event::Rejected,
                    vec![("reason", Val::Text(Some(detail.clone())))],
                    &detail,
                )
                .await
            }
            _ => Ok(Next::Wait),
        }
    }

    /// A withdrawal awaiting approvals whose stored verdicts already settle
    /// it: the verdict was stored but the coordinator stopped before moving
    /// it on (a crash between the two steps of [`Engine::submit`]). Checked
    /// on the first tick after a start; the verdicts were verified when they
    /// arrived and are checked again here against the policy in force.
    async fn settle_stored_verdicts(
        self: &Arc<Self>,
        row: &WithdrawalRow,
    ) -> Result<Next, CoordError> {
        let verdicts = self.stored_verdicts(&row.id).await?;
        if verdicts.is_empty() {
            return Ok(Next::Wait);
        }
        let statement = self.statement(row)?;
        let decision = self.decision(row)?;
        let now = Timestamp(now_secs());
        let active = self.policy.in_force(now);
        if active.policy().hash() != decision.policy_hash {
            return Ok(Next::Wait);
        }
        let status = check_approvals(&active, &decision, &statement, &verdicts, now);
        let reason = self
            .store
            .approvals(&row.id)
            .await?
            .into_iter()
            .rev()
            .find(|a| a.verdict == "reject")
            .map(|a| a.reason)
            .unwrap_or_default();
        self.settle(row, status, &reason).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn cancel_signed(
        &self,
        row: WithdrawalRow,
        state: State,
        active: &custos_policy::ActivePolicy,
        decision: &Decision,
        statement: &ApprovalStatement,
        cancel: Approval,
        reason: &str,
    ) -> Result<WithdrawalRow, CoordError> {
        if !state.cancellable() {
            return Err(not_cancellable(&row, state));
        }
        let by = check_cancellation(active, decision, statement, &cancel).map_err(|e| {
            CoordError::invalid(
                format!("cancellation by {}", cancel.approver),
                e.to_string(),
            )
        })?;
        let cancel_json =
            serde_json::to_vec(&cancel).map_err(|e| CoordError::Internal(e.to_string()))?;
        self.finish_cancel(&row, &by, reason, cancel_json, Some(&cancel))
            .await
    }

    /// A backend cancels its own request (or an admin any), before signing.
    pub async fn cancel_by_client(
        &self,
        who: &Identity,
        id: &str,
        reason: &str,
    ) -> Result<WithdrawalRow, CoordError> {
        text_ok("reason", reason, MAX_MEMO, false)?;
        let row = self.get(id).await?;
        if row.client_id != who.id && !who.is_admin() {
            return Err(CoordError::not_found("withdrawal", id));
        }
        let state = row.state()?;
        if !state.cancellable() {
            return Err(not_cancellable(&row, state));
        }
        self.finish_cancel(&row, &who.id, reason, Vec::new(), None)
            .await
    }

    async fn finish_cancel(
        &self,
        row: &WithdrawalRow,
        by: &str,
        reason: &str,
        cancel_json: Vec<u8>,
        signed: Option<&Approval>,
    ) -> Result<WithdrawalRow, CoordError> {
        let detail = format!(
            "cancelled by {by}{}",
            if reason.is_empty() {
                String::new()
            } else {
                format!(": {reason}")
            }
        );
        self.audit
            .append(EntryBody::Cancelled {
                withdrawal_id: row.id.clone(),
                cancelled_by: by.to_owned(),
                reason: reason.to_owned(),
            })
            .await?;
        // The withdrawal may move on meanwhile (approved → time_locked): the
        // cancel still applies while the new state is cancellable.
        let mut current = row.clone();
        loop {
            let state = current.state()?;
            if !state.cancellable() {
                return Err(not_cancellable(&current, state));
            }
            let updates = vec![("reason", Val::Text(Some(detail.clone())))];
            if self
                .apply(&current, Event::Cancel, updates, &detail)
                .await?
                .is_some()
            {
                break;
            }
            current = self.get(&row.id).await?;
        }
        if let Some(c) = signed {
            self.store
                .add_approval(
                    &row.id,
                    &ApprovalRow {
                        approver: c.approver.clone(),
                        verdict: "cancel".into(),
                        signature: c.signature.clone(),
                        reason: reason.to_owned(),
                        received_ms: now_ms(),
                        webauthn: None,
                    },
                )
                .await?;
        }
        let _ = self.changes.send(());
        // The machine's `NotifySigners`, done here because only this path
        // holds the cancel's signature. Signers also refuse on their own
        // clock and log view; this makes them refuse even a coordinator that
        // later forgets the cancel.
        if let (Ok(key), Ok(auth)) = (self.key(row).await, self.authorization(row).await) {
            let notice = CancelNotice {
                authorization: Some(auth),
                cancel_json,
            };
            let cluster = self.cluster.clone();
            self.spawn(async move {
                cluster.register_cancel(&key.participants, notice).await;
            });
        }
        self.get(&row.id).await
    }
}

fn not_cancellable(row: &WithdrawalRow, state: State) -> CoordError {
    match state {
        State::Signing | State::Signed | State::Broadcast | State::Confirmed => {
            CoordError::precondition(
                "withdrawal",
                row.id.clone(),
                format!(
                    "is already {state}: cancel refused (a signature may exist; it cannot be recalled)"
                ),
            )
        }
        _ => CoordError::precondition(
            "withdrawal",
            row.id.clone(),
            format!("is {state}: nothing to cancel"),
        ),
    }
}

fn same_request(prev: WithdrawalRow, new: &WithdrawalRow) -> Result<WithdrawalRow, CoordError> {
    if prev.request_hash == new.request_hash {
        Ok(prev)
    } else {
        Err(CoordError::already_exists(
            "idempotency_key",
            format!("{:?}", new.idempotency_key),
            format!(
                "was already used for a different request (withdrawal {})",
                prev.id
            ),
        ))
    }
}

fn risk_request(row: &WithdrawalRow) -> Option<RiskRequest> {
    Some(RiskRequest {
        wallet: row.wallet.clone(),
        chain: row.chain.clone(),
        asset: row.asset.clone(),
        destination: row.destination.to_lowercase(),
        amount: row.amount.parse().ok()?,
        at_ms: u64::try_from(row.created_ms).ok()?,
    })
}

struct InFlight(Arc<Engine>, String);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.1);
    }
}

/// The 64 bytes stored per input of a UTXO transaction (`r || s`, or the
/// BIP340 signature), what `custos_chains::utxo::assemble_signed` takes.
fn input_signature(sig: &crate::cluster::SignOutcome) -> Vec<u8> {
    let (mut r, s, _) = stored_parts(sig);
    r.extend_from_slice(&s);
    r
}

/// How a signature is stored on its withdrawal (`sig_r`, `sig_s`,
/// `recovery_id`, shown by `GetWithdrawal` as `signature_r`, `signature_s`):
/// ECDSA's `r`, `s` and recovery id; a Schnorr signature's two 32-byte
/// halves (BIP340 `R.x` and `s`, Ed25519 `R` and `S`) and 0.
fn stored_parts(sig: &crate::cluster::SignOutcome) -> (Vec<u8>, Vec<u8>, u8) {
    if sig.scheme == custos_mpc::SchemeId::EcdsaSecp256k1 {
        return (sig.r.to_vec(), sig.s.to_vec(), sig.recovery_id);
    }
    let half = sig.signature.len() / 2;
    let (r, s) = sig.signature.split_at(half);
    (r.to_vec(), s.to_vec(), 0)
}

#[cfg(test)]
mod tests {
    use super::{parse_amount, text_ok};
    use proptest::prelude::*;

    #[test]
    fn amounts_are_strict() {
        assert_eq!(parse_amount("amount", "1500", false).ok(), Some(1500));
        for bad in [
            "",
            "0",
            "-1",
            "+1",
            "1.5",
            "1e18",
            " 1",
            "0x10",
            &"9".repeat(40),
        ] {
            let e = parse_amount("amount", bad, false)
                .err()
                .map(|e| e.to_string());
            assert!(
                e.as_deref().is_some_and(|m| m.contains("amount")),
                "{bad:?}: {e:?}"
            );
        }
        assert_eq!(parse_amount("fee_cap", "0", true).ok(), Some(0));
        // u128::MAX fits; one more does not.
        assert!(parse_amount("amount", &u128::MAX.to_string(), false).is_ok());
        assert!(parse_amount("amount", "340282366920938463463374607431768211456", false).is_err());
    }

    proptest! {
        // Any input: no panic; accepted amounts are exactly the canonical
        // decimal digits of a positive u128 (modulo leading zeros).
        #[test]
        fn amount_parser_total(s in ".{0,64}") {
            if let Ok(v) = parse_amount("amount", &s, false) {
                prop_assert!(v > 0);
                prop_assert!(s.bytes().all(|b| b.is_ascii_digit()));
                prop_assert_eq!(s.trim_start_matches('0'), v.to_string());
            }
        }

        #[test]
        fn text_fields_bounded(s in "\\PC{0,300}", max in 1usize..200) {
            match text_ok("memo", &s, max, false) {
                Ok(()) => prop_assert!(s.len() <= max),
                Err(e) => prop_assert!(e.to_string().contains("memo")),
            }
        }
    }
}
