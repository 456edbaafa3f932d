//! The custody API's calls, shared by its two faces: the `custos.v1.Custody`
//! gRPC service ([`crate::service`]) and the REST/JSON routes
//! ([`crate::adapters::custody`]).
//!
//! # Design
//! Each call here checks the caller's roles, validates its arguments, asks
//! the cluster, the withdrawal [`Engine`] or the audit log, and returns the
//! API's view of the result (the `custos.v1` messages, which both faces
//! show) or a [`CoordError`] that each face maps at the edge
//! ([`crate::edge`]). A face only decodes its transport's request into these
//! arguments and encodes the answer, so a backend, an approver or an auditor
//! gets the same answer, the same refusal and the same roles over gRPC and
//! over HTTP.

use std::sync::Arc;

use custos_proto::custody::{
    AddressBookEntry, ApprovalRecord, Checkpoint, ListAddressBookResponse, ListWithdrawalsRequest,
    ListWithdrawalsResponse, LogEntry, Proof, RiskReason, SubmitApprovalRequest, Verdict, Wallet,
    Withdrawal,
};

use crate::audit::AuditTrail;
use crate::auth::{Identity, Role};
use crate::cluster::Cluster;
use crate::db::KeyRow;
use crate::error::CoordError;
use crate::withdrawal::store::{ApprovalRow, WithdrawalRow};
use crate::withdrawal::{CreateRequest, Engine, State, SubmittedVerdict};

/// Every role that may read withdrawals, wallets and the address book.
pub const READERS: &[Role] = &[Role::Backend, Role::Approver, Role::Auditor];

/// Default and largest page of [`CustodyApi::list_withdrawals`].
pub const PAGE_DEFAULT: u32 = 50;
/// See [`PAGE_DEFAULT`].
pub const PAGE_MAX: u32 = 500;

/// Fails unless `who` has one of `roles` (admins have every role).
pub fn authorize(who: &Identity, roles: &[Role]) -> Result<(), CoordError> {
    if who.is_admin() || roles.iter().any(|r| who.roles.contains(r)) {
        Ok(())
    } else {
        Err(CoordError::PermissionDenied(format!(
            "client {} needs one of the roles {roles:?}",
            who.id
        )))
    }
}

/// An audit-log error: a bad argument (`field`) or an unavailable log.
pub fn audit_error(field: &str, e: custos_audit::AuditError) -> CoordError {
    match e {
        custos_audit::AuditError::InvalidArgument(m) => CoordError::invalid(field, m),
        other => CoordError::unavailable(format!("audit log: {other}")),
    }
}

/// RFC 3339 of a Unix time in milliseconds ("" when out of range).
pub fn rfc3339_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// RFC 3339 of a Unix time in seconds ("" when unset).
pub fn rfc3339_s(s: Option<i64>) -> String {
    s.map(|v| rfc3339_ms(v.saturating_mul(1000)))
        .unwrap_or_default()
}

fn to_withdrawal(engine: &Engine, w: WithdrawalRow, approvals: Vec<ApprovalRow>) -> Withdrawal {
    let risk: Vec<RiskReason> = w
        .risk_json
        .as_deref()
        .and_then(|j| serde_json::from_str::<custos_risk::RiskAssessment>(j).ok())
        .map(|a| {
            a.reasons
                .into_iter()
                .map(|r| RiskReason {
                    code: r.code,
                    points: r.points,
                    message: r.message,
                })
                .collect()
        })
        .unwrap_or_default();
    let label = engine.destination_label(&w.chain, &w.destination);
    Withdrawal {
        amount_human: engine.human_amount(&w),
        id: w.id,
        idempotency_key: w.idempotency_key,
        wallet: w.wallet,
        chain: w.chain,
        asset: w.asset,
        destination: w.destination,
        destination_label: label,
        amount: w.amount,
        fee_cap: w.fee_cap,
        initiator: w.initiator,
        memo: w.memo,
        state: w.state,
        risk_score: w
            .risk_score
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(0),
        risk_reasons: risk,
        rule_id: w.rule_id.unwrap_or_default(),
        decision: w.explanation.unwrap_or_default(),
        policy_hash: w.policy_hash.unwrap_or_default(),
        required_approvals: w.required.unwrap_or_default(),
        approvals: approvals
            .into_iter()
            .map(|a| ApprovalRecord {
                approver: a.approver,
                verdict: a.verdict,
                signature: a.signature,
                received_at: rfc3339_ms(a.received_ms),
            })
            .collect(),
        statement: w.statement.unwrap_or_default(),
        unsigned_tx: w.unsigned_tx.unwrap_or_default(),
        tx_digest: w.tx_digest.unwrap_or_default(),
        delay_secs: w
            .delay_secs
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(0),
        time_lock_until: rfc3339_s(w.time_lock_until),
        cancel_group: w.cancel_group.unwrap_or_default(),
        expires_at: rfc3339_s(w.statement_expiry),
        signature_r: w.sig_r.unwrap_or_default(),
        signature_s: w.sig_s.unwrap_or_default(),
        recovery_id: w
            .recovery_id
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(0),
        reason: w.reason.unwrap_or_default(),
        created_at: rfc3339_ms(w.created_ms),
        updated_at: rfc3339_ms(w.updated_ms),
        signer_notes: serde_json::from_str(&w.signer_notes).unwrap_or_default(),
        tx_hash: w.tx_hash.unwrap_or_default(),
        fee_paid: w.fee_paid.unwrap_or_default(),
        fee_bump_statement: Vec::new(),
        fee_bump_approvals: Vec::new(),
        source_path: w.source_path.unwrap_or_default(),
        source_address: w.source_address.unwrap_or_default(),
    }
}

fn verdict_text(v: custos_policy::Verdict) -> &'static str {
    match v {
        custos_policy::Verdict::Approve => "approve",
        custos_policy::Verdict::Reject => "reject",
        custos_policy::Verdict::Cancel => "cancel",
    }
}

/// The API's view of a withdrawal: the row, its approvals and a pending
/// fee bump with its verdicts.
pub async fn view(engine: &Engine, w: WithdrawalRow) -> Result<Withdrawal, CoordError> {
    let approvals = engine.store.approvals(&w.id).await?;
    let bump = engine.pending_fee_bump(&w).await?;
    let mut out = to_withdrawal(engine, w, approvals);
    if let Some((statement, verdicts)) = bump {
        out.fee_bump_statement = statement;
        out.fee_bump_approvals = verdicts
            .into_iter()
            .map(|v| ApprovalRecord {
                approver: v.approval.approver,
                verdict: verdict_text(v.approval.verdict).into(),
                signature: v.approval.signature,
                received_at: rfc3339_ms(v.received_ms),
            })
            .collect();
    }
    Ok(out)
}

/// The custody API over the cluster, the withdrawal engine (absent: no
/// policy configured, every withdrawal call is refused) and the audit log.
#[derive(Clone)]
pub struct CustodyApi {
    cluster: Arc<Cluster>,
    engine: Option<Arc<Engine>>,
    audit: Arc<AuditTrail>,
}

impl std::fmt::Debug for CustodyApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustodyApi")
            .field("engine", &self.engine.is_some())
            .finish_non_exhaustive()
    }
}

impl CustodyApi {
    /// The API over these parts.
    pub fn new(cluster: Arc<Cluster>, engine: Option<Arc<Engine>>, audit: Arc<AuditTrail>) -> Self {
        CustodyApi {
            cluster,
            engine,
            audit,
        }
    }

    /// The cluster.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// The audit trail.
    pub fn audit(&self) -> &Arc<AuditTrail> {
        &self.audit
    }

    /// The withdrawal engine, or FAILED_PRECONDITION without a policy.
    pub fn engine(&self) -> Result<&Arc<Engine>, CoordError> {
        self.engine.as_ref().ok_or_else(|| {
            CoordError::precondition(
                "config section",
                "[policy]",
                "is missing: no withdrawal policy configured, withdrawals are refused",
            )
        })
    }

    /// A backend requests a withdrawal (idempotent per idempotency key).
    pub async fn create_withdrawal(
        &self,
        who: &Identity,
        request: CreateRequest,
    ) -> Result<Withdrawal, CoordError> {
        authorize(who, &[Role::Backend])?;
        let engine = self.engine()?;
        let row = engine.create(who, request).await?;
        view(engine, row).await
    }

    /// One withdrawal; a backend sees only its own (another client's is
    /// answered as one that does not exist).
    pub async fn get_withdrawal(&self, who: &Identity, id: &str) -> Result<Withdrawal, CoordError> {
        authorize(who, READERS)?;
        let engine = self.engine()?;
        let row = engine.get(id).await?;
        if who.roles == [Role::Backend] && row.client_id != who.id {
            return Err(CoordError::not_found("withdrawal", id));
        }
        view(engine, row).await
    }

    /// A page of withdrawals, newest first; a backend's own only.
    pub async fn list_withdrawals(
        &self,
        who: &Identity,
        r: &ListWithdrawalsRequest,
    ) -> Result<ListWithdrawalsResponse, CoordError> {
        authorize(who, READERS)?;
        let engine = self.engine()?;
        let states = if r.state.is_empty() {
            Vec::new()
        } else {
            vec![State::parse(&r.state).ok_or_else(|| {
                CoordError::invalid("state", format!("unknown state {:?}", r.state))
            })?]
        };
        let limit = match r.page_size {
            0 => PAGE_DEFAULT,
            n if n > PAGE_MAX => {
                return Err(CoordError::invalid(
                    "page_size",
                    format!("at most {PAGE_MAX}"),
                ));
            }
            n => n,
        };
        let limit = i64::from(limit);
        let offset: i64 = if r.page_token.is_empty() {
            0
        } else {
            r.page_token
                .parse()
                .ok()
                .filter(|o: &i64| *o >= 0)
                .ok_or_else(|| {
                    CoordError::invalid("page_token", "not a token from a previous page")
                })?
        };
        let initiator = if who.roles == [Role::Backend] {
            Some(who.id.clone())
        } else if r.initiator.is_empty() {
            None
        } else {
            Some(r.initiator.clone())
        };
        let rows = engine
            .store
            .list(
                (!r.wallet.is_empty()).then_some(r.wallet.as_str()),
                &states,
                initiator.as_deref(),
                offset,
                limit + 1,
            )
            .await?;
        let more = rows.len() as i64 > limit;
        let mut withdrawals = Vec::new();
        for row in rows
            .into_iter()
            .take(usize::try_from(limit).unwrap_or(PAGE_DEFAULT as usize))
        {
            withdrawals.push(view(engine, row).await?);
        }
        Ok(ListWithdrawalsResponse {
            withdrawals,
            next_page_token: if more {
                offset.saturating_add(limit).to_string()
            } else {
                String::new()
            },
        })
    }

    /// Withdrawals awaiting approvals or in their time lock; with
    /// `approver`, only those it has not given a verdict on yet.
    pub async fn list_pending(
        &self,
        who: &Identity,
        approver: &str,
    ) -> Result<ListWithdrawalsResponse, CoordError> {
        authorize(who, &[Role::Approver, Role::Auditor])?;
        let engine = self.engine()?;
        let rows = engine
            .store
            .list(
                None,
                &[State::AwaitingApprovals, State::TimeLocked],
                None,
                0,
                i64::from(PAGE_MAX),
            )
            .await?;
        let mut withdrawals = Vec::new();
        for row in rows {
            let w = view(engine, row).await?;
            if approver.is_empty() || !w.approvals.iter().any(|a| a.approver == approver) {
                withdrawals.push(w);
            }
        }
        Ok(ListWithdrawalsResponse {
            withdrawals,
            next_page_token: String::new(),
        })
    }

    /// An approver's signed verdict (Ed25519 or passkey) on a withdrawal,
    /// or on its pending fee bump when `fee_bump_statement` is set.
    pub async fn submit_approval(
        &self,
        who: &Identity,
        r: SubmitApprovalRequest,
    ) -> Result<Withdrawal, CoordError> {
        authorize(who, &[Role::Approver])?;
        let engine = self.engine()?;
        let verdict = match Verdict::try_from(r.verdict) {
            Ok(Verdict::Approve) => custos_policy::Verdict::Approve,
            Ok(Verdict::Reject) => custos_policy::Verdict::Reject,
            Ok(Verdict::Cancel) => custos_policy::Verdict::Cancel,
            _ => {
                return Err(CoordError::invalid(
                    "verdict",
                    "must be APPROVE, REJECT or CANCEL",
                ));
            }
        };
        let submitted = SubmittedVerdict {
            withdrawal_id: r.withdrawal_id,
            approver: r.approver,
            verdict,
            signature: r.signature,
            webauthn: r.webauthn.map(|a| {
                custos_policy::PasskeyAssertion::from_bytes(
                    &a.credential_id,
                    &a.authenticator_data,
                    &a.client_data_json,
                    &a.signature,
                )
            }),
            reason: r.reason,
        };
        let row = if r.fee_bump_statement.is_empty() {
            engine.submit(submitted).await
        } else {
            engine
                .submit_bump_verdict(submitted, &r.fee_bump_statement)
                .await
        }?;
        view(engine, row).await
    }

    /// A backend cancels its own withdrawal (an admin any) before signing.
    pub async fn cancel_withdrawal(
        &self,
        who: &Identity,
        id: &str,
        reason: &str,
    ) -> Result<Withdrawal, CoordError> {
        authorize(who, &[Role::Backend])?;
        let engine = self.engine()?;
        let row = engine.cancel_by_client(who, id, reason).await?;
        view(engine, row).await
    }

    fn wallet(&self, k: KeyRow) -> Wallet {
        let assets = self
            .engine
            .as_ref()
            .map(|e| e.assets_on(&k.chain))
            .unwrap_or_default();
        Wallet {
            wallet_id: k.key_id,
            chain: k.chain,
            address: k.address.unwrap_or_default(),
            assets,
            threshold: u32::from(k.threshold),
            participants: k.participants,
        }
    }

    /// The ready wallet `id` (`field` names the argument), or NOT_FOUND.
    pub async fn wallet_row(&self, field: &str, id: &str) -> Result<KeyRow, CoordError> {
        crate::cluster::validate_id(field, id)?;
        self.cluster
            .db
            .key(id)
            .await?
            .filter(|k| k.state == "ready")
            .ok_or_else(|| CoordError::not_found("wallet", id))
    }

    /// The ready wallets.
    pub async fn list_wallets(&self, who: &Identity) -> Result<Vec<Wallet>, CoordError> {
        authorize(who, READERS)?;
        Ok(self
            .cluster
            .db
            .keys()
            .await?
            .into_iter()
            .filter(|k| k.state == "ready")
            .map(|k| self.wallet(k))
            .collect())
    }

    /// One ready wallet.
    pub async fn get_wallet(&self, who: &Identity, id: &str) -> Result<Wallet, CoordError> {
        authorize(who, READERS)?;
        let k = self.wallet_row("wallet_id", id).await?;
        Ok(self.wallet(k))
    }

    /// The address book of the policy in force (`chain`: only that chain's;
    /// empty: all), with when each entry is usable, and the policy's hash.
    pub fn address_book(
        &self,
        who: &Identity,
        chain: &str,
    ) -> Result<ListAddressBookResponse, CoordError> {
        authorize(who, READERS)?;
        let engine = self.engine()?;
        let (entries, hash) = engine.address_book(chain);
        Ok(ListAddressBookResponse {
            entries: entries
                .into_iter()
                .map(|(e, usable)| AddressBookEntry {
                    id: e.id,
                    labels: e.labels,
                    chain: e.chain,
                    address: e.address,
                    whitelisted: e.whitelisted,
                    usable_from: rfc3339_s(Some(usable)),
                })
                .collect(),
            policy_hash: hash,
        })
    }

    /// The latest signed checkpoint of the audit log (empty before the first).
    pub async fn checkpoint(&self, who: &Identity) -> Result<Checkpoint, CoordError> {
        authorize(who, &[Role::Auditor, Role::Approver, Role::Backend])?;
        let note = self
            .audit
            .log()
            .latest_checkpoint()
            .await
            .map_err(|e| audit_error("checkpoint", e))?
            .unwrap_or_default();
        let size = crate::audit::note_size(&note).unwrap_or(0);
        Ok(Checkpoint { note, size })
    }

    /// The size of the latest checkpoint, FAILED_PRECONDITION before the first.
    pub async fn latest_size(&self) -> Result<u64, CoordError> {
        let note = self
            .audit
            .log()
            .latest_checkpoint()
            .await
            .map_err(|e| audit_error("checkpoint", e))?
            .ok_or_else(|| CoordError::precondition("audit log", "checkpoint", "none yet"))?;
        crate::audit::note_size(&note)
            .ok_or_else(|| CoordError::Internal("stored checkpoint unreadable".into()))
    }

    /// Log entry `index`: its canonical encoding and a readable JSON text.
    pub async fn log_entry(&self, who: &Identity, index: u64) -> Result<LogEntry, CoordError> {
        authorize(who, &[Role::Auditor])?;
        let size = self.audit.log().size().await;
        if index >= size {
            return Err(CoordError::not_found(
                "log entry",
                format!("{index} (log size {size})"),
            ));
        }
        let entry = self
            .audit
            .log()
            .entry(index)
            .await
            .map_err(|e| audit_error("index", e))?;
        let json = custos_audit::Entry::decode(&entry)
            .map(|e| {
                serde_json::json!({
                    "index": e.index,
                    "timestamp_ms": e.timestamp_ms,
                    "kind": e.body.kind_name(),
                    "withdrawal_id": e.body.withdrawal_id(),
                    "body": format!("{:?}", e.body),
                })
                .to_string()
            })
            .unwrap_or_default();
        Ok(LogEntry { index, entry, json })
    }

    /// The inclusion proof of entry `index` in the tree of `size` entries
    /// (0: the latest checkpoint's).
    pub async fn inclusion_proof(
        &self,
        who: &Identity,
        index: u64,
        size: u64,
    ) -> Result<Proof, CoordError> {
        authorize(who, &[Role::Auditor])?;
        let size = if size == 0 {
            self.latest_size().await?
        } else {
            size
        };
        let proof = self
            .audit
            .log()
            .inclusion_proof(index, size)
            .await
            .map_err(|e| audit_error("index, size", e))?;
        Ok(Proof {
            hashes: proof.iter().map(|h| h.to_vec()).collect(),
            size,
        })
    }
}
