//! Full authorisation replay for `custos audit verify --policy`: every
//! `signature_produced` entry is checked against the policy documents the
//! auditor supplies, with the same `policy` crate the coordinator and the
//! signers run.
//!
//! # What is re-checked
//!
//! For each signature entry, on top of the structural replay
//! ([`RequireSatisfiedDecision`]: a latest non-denying decision under the
//! policy bundle active at that point of the log, enough distinct approvals,
//! no rejection, no cancellation, a matching signing session):
//!
//! 1. the decision's policy hash is one of the supplied documents (hashed
//!    here, never trusted by name) and, with `--admins`, the activation entry
//!    in force carries a valid admin quorum over that hash;
//! 2. the decision's rule exists in that document and the logged outcome is
//!    the rule's action (`allow`, or `require_approvals` with the rule's total
//!    quorum);
//! 3. re-evaluating the logged request (wallet, chain, asset, destination,
//!    amount, initiator, logged risk score, decision time) with the most
//!    permissive history, no earlier withdrawals and every address-book entry
//!    past its cooling period, matches that rule or an earlier one: a rule the
//!    request cannot match under any history is flagged;
//! 4. for approvals: every approval entry carries the same canonical
//!    statement, its SHA-256 is the signing session's execution id and its
//!    transaction digest is the signed digest; each signature verifies with
//!    the approver's Ed25519 key from the policy over
//!    `signing_message(verdict)`; `check_approvals` (run at the signing
//!    session's time) finds the rule's quorum met by distinct, active,
//!    eligible approvers other than the initiator, no rejection, statement
//!    fields equal to the logged request, policy and rule, not expired;
//!    on chains with a transaction adapter the signed digest is instead the
//!    signing digest of a `transaction_prepared` transaction that pays the
//!    approved destination the approved amount within the approved fee cap,
//!    and the statement's digest is the logged request's transfer intent
//!    (`audit_chain_tx`); a replacement signed under a rule with
//!    `fee_bumps = "reapprove"` needs its own quorum of `fee_bump_approval`
//!    entries over a statement naming exactly that transaction;
//! 5. the rule's time lock: the signing session started at least `delay`
//!    after the quorum was complete (after the decision, for `allow`), by the
//!    log's own timestamps, with one second of tolerance for the coordinator's
//!    whole-second clock.
//!
//! # What is not re-checked
//!
//! Velocity limits and address-book cooling periods depend on history the
//! log does not fully carry (amounts counted per wallet over a window, the
//! policy state's activation times). When re-evaluation matches an *earlier*
//! rule than the logged one, the difference may come from them and is
//! accepted; signers enforce both from their own records. The transaction
//! itself is not decoded: the digest binds the approvals to what was signed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use custos_audit::entry::{DecisionOutcome, Verdict as LogVerdict};
use custos_audit::replay::ReplayContext;
use custos_audit::{
    AuditError, AuthorizationReplay, Entry, EntryBody, ExportBundle, Failure, FailureKind,
    RequireSatisfiedDecision,
};
use custos_policy::{
    ActionKind, ActivePolicy, AdminSet, Amount, Approval, ApprovalStatement, ApprovalStatus,
    BundleSignatures, Decision, FeeBumps, Outcome, Policy, PolicyHash, Timestamp, Verdict,
    Withdrawal, check_approvals, evaluate,
};
use sha2::{Digest, Sha256};

/// A policy document the auditor supplied (or the bundle shipped), keyed by
/// its own hash.
struct Document {
    bytes: Vec<u8>,
    policy: Policy,
    source: String,
}

/// The policy-crate replay (see the module documentation).
pub struct PolicyReplay {
    documents: BTreeMap<String, Document>,
    admins: Option<AdminSet>,
}

fn deny<T>(msg: String) -> Result<T, AuditError> {
    Err(AuditError::Unauthorized(msg))
}

fn secs(ms: u64) -> Timestamp {
    Timestamp(i64::try_from(ms / 1000).unwrap_or(i64::MAX))
}

impl PolicyReplay {
    /// Reads the `--policy` files and the `--admins` file. Documents shipped
    /// in the bundle are added too when their content hashes to their key
    /// (a hash names exactly one document, whoever ships it).
    pub fn load(
        files: &[PathBuf],
        admins: Option<&Path>,
        bundle: &ExportBundle,
    ) -> anyhow::Result<Self> {
        let mut supplied = Vec::with_capacity(files.len());
        for f in files {
            let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
            supplied.push((bytes, f.display().to_string()));
        }
        let admins = match admins {
            Some(p) => {
                let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
                Some(
                    AdminSet::parse(&bytes)
                        .with_context(|| format!("{} is not an admin set", p.display()))?,
                )
            }
            None => None,
        };
        Self::new(supplied, admins, bundle)
    }

    /// From document bytes (with where each came from) and an admin set.
    pub fn new(
        supplied: Vec<(Vec<u8>, String)>,
        admins: Option<AdminSet>,
        bundle: &ExportBundle,
    ) -> anyhow::Result<Self> {
        let mut documents = BTreeMap::new();
        for (bytes, source) in supplied {
            let policy = Policy::parse(&bytes)
                .with_context(|| format!("{source} is not a valid policy document"))?;
            documents.insert(
                policy.hash().to_string(),
                Document {
                    bytes,
                    policy,
                    source,
                },
            );
        }
        for (hash, text) in &bundle.policy_documents {
            let bytes = text.as_bytes().to_vec();
            if let Ok(policy) = Policy::parse(&bytes)
                && policy.hash().to_string() == hash.to_lowercase()
            {
                documents
                    .entry(policy.hash().to_string())
                    .or_insert(Document {
                        bytes,
                        policy,
                        source: "the bundle".into(),
                    });
            }
        }
        Ok(Self { documents, admins })
    }

    /// The supplied documents: (hash, where it came from).
    pub fn documents(&self) -> impl Iterator<Item = (&str, &str)> {
        self.documents
            .iter()
            .map(|(h, d)| (h.as_str(), d.source.as_str()))
    }

    /// Whether admin signatures are checked.
    pub fn checks_admins(&self) -> bool {
        self.admins.is_some()
    }

    /// Checks the admin quorum of one `policy_activated` entry (with
    /// `--admins`; `Ok` without).
    fn check_activation(&self, entry: &Entry) -> Result<(), String> {
        let Some(admins) = &self.admins else {
            return Ok(());
        };
        let EntryBody::PolicyActivated {
            policy_hash,
            admin_signatures,
            ..
        } = &entry.body
        else {
            return Err(format!("entry {} is not a policy activation", entry.index));
        };
        let hash = hex::encode(policy_hash);
        let Some(doc) = self.documents.get(&hash) else {
            return Err(format!(
                "policy activation entry {}: policy {hash} is not among the supplied documents \
                 (--policy), so its admin signatures cannot be checked",
                entry.index
            ));
        };
        let sigs = BundleSignatures {
            policy_hash: PolicyHash(*policy_hash),
            signatures: admin_signatures
                .iter()
                .map(|s| custos_policy::AdminSignature {
                    public_key: s.admin_id.clone(),
                    signature: hex::encode(&s.signature),
                })
                .collect(),
        };
        custos_policy::verify_bundle(&doc.bytes, &sigs, admins)
            .map(|_| ())
            .map_err(|e| format!("policy activation entry {}: {e}", entry.index))
    }

    /// Checks every `policy_activated` entry of the bundle (range and
    /// context) against `--admins`, adding a failure for each bad one.
    pub fn check_activations(&self, bundle: &ExportBundle, report: &mut custos_audit::Report) {
        if self.admins.is_none() {
            return;
        }
        let in_range = bundle.entries.iter().map(String::as_str);
        let context = bundle.context.iter().map(|c| c.entry.as_str());
        for raw in context.chain(in_range) {
            // Undecodable entries are already reported by the verifier.
            let Some(entry) = hex::decode(raw).ok().and_then(|b| Entry::decode(&b).ok()) else {
                continue;
            };
            if !matches!(entry.body, EntryBody::PolicyActivated { .. }) {
                continue;
            }
            if let Err(message) = self.check_activation(&entry) {
                report.failures.push(Failure {
                    entry: Some(entry.index),
                    kind: FailureKind::Unauthorized,
                    message,
                });
            }
        }
    }
}

/// The latest policy decision in `history`, with its position.
fn latest_decision<'a>(history: &[&'a Entry]) -> Option<(usize, &'a Entry)> {
    history
        .iter()
        .enumerate()
        .rev()
        .find(|(_, e)| matches!(e.body, EntryBody::PolicyDecision { .. }))
        .map(|(i, e)| (i, *e))
}

fn quorum_total(rule: &custos_policy::Rule) -> u32 {
    rule.approvals
        .as_ref()
        .map_or(0, |q| q.all.iter().map(|t| t.count).sum())
}

impl AuthorizationReplay for PolicyReplay {
    fn check_signature(&self, ctx: &ReplayContext<'_>) -> Result<(), AuditError> {
        RequireSatisfiedDecision.check_signature(ctx)?;
        let EntryBody::SignatureProduced {
            withdrawal_id,
            execution_id,
            message_digest,
            ..
        } = &ctx.signature.body
        else {
            return deny("not a signature entry".into());
        };
        let Some((pos, decision)) = latest_decision(ctx.history) else {
            return deny(format!("no policy decision for withdrawal {withdrawal_id}"));
        };
        let EntryBody::PolicyDecision {
            policy_hash,
            rule_id,
            outcome,
            ..
        } = &decision.body
        else {
            return deny("internal: decision lookup".into());
        };
        let hash = hex::encode(policy_hash);

        // 1. The policy document, and the admin quorum of its activation.
        let Some(doc) = self.documents.get(&hash) else {
            return deny(format!(
                "decision entry {} was made under policy {hash}, which is not among the supplied \
                 documents (--policy)",
                decision.index
            ));
        };
        if let Some(activation) = ctx.policies.iter().rev().find(|p| p.index < decision.index) {
            self.check_activation(activation).or_else(deny::<()>)?;
        }
        let policy = &doc.policy;

        // 2. The rule and the logged outcome.
        let document = policy.document();
        let Some(rule_index) = document.rules.iter().position(|r| r.id == *rule_id) else {
            return deny(format!(
                "decision entry {} names rule {rule_id:?}, which policy {hash} does not have",
                decision.index
            ));
        };
        let rule = &document.rules[rule_index];
        let consistent = match (rule.action, outcome) {
            (ActionKind::Allow, DecisionOutcome::Allow) => true,
            (ActionKind::RequireApprovals, DecisionOutcome::RequireApprovals { quorum }) => {
                u32::from(*quorum) == quorum_total(rule)
            }
            _ => false,
        };
        if !consistent {
            return deny(format!(
                "decision entry {} logs {outcome:?} but rule {rule_id} of policy {hash} says {} \
                 (quorum {})",
                decision.index,
                serde_json::to_value(rule.action)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                quorum_total(rule)
            ));
        }

        // 3. Re-evaluate the logged request.
        let before = &ctx.history[..pos];
        let Some(EntryBody::WithdrawalRequested {
            key_id,
            chain,
            asset,
            destination,
            amount,
            requested_by,
            ..
        }) = before
            .iter()
            .find(|e| matches!(e.body, EntryBody::WithdrawalRequested { .. }))
            .map(|e| &e.body)
        else {
            return deny(format!(
                "no withdrawal_requested entry for withdrawal {withdrawal_id} in the bundle or its \
                 context: the decision cannot be re-evaluated"
            ));
        };
        let Some(risk_score) = before.iter().rev().find_map(|e| match &e.body {
            EntryBody::RiskScored { score, .. } => Some(*score),
            _ => None,
        }) else {
            return deny(format!(
                "no risk_scored entry for withdrawal {withdrawal_id} before decision entry {}",
                decision.index
            ));
        };
        let Ok(amount) = amount.parse::<u128>() else {
            return deny(format!("amount {amount:?} of withdrawal {withdrawal_id}"));
        };
        let after = &ctx.history[pos + 1..];
        let approvals: Vec<&Entry> = after
            .iter()
            .copied()
            .filter(|e| matches!(e.body, EntryBody::Approval { .. }))
            .collect();
        let statement = match approvals.first().map(|e| &e.body) {
            Some(EntryBody::Approval { statement, .. }) => Some(
                ApprovalStatement::decode(statement)
                    .or_else(|e| deny(format!("approval entry {}: {e}", approvals[0].index)))?,
            ),
            _ => None,
        };
        let withdrawal = Withdrawal {
            id: withdrawal_id.clone(),
            wallet: key_id.clone(),
            chain: chain.clone(),
            asset: asset.clone(),
            destination: destination.clone(),
            amount: Amount(amount),
            fee_cap: statement.as_ref().map_or(Amount(0), |s| s.fee_cap),
            initiator: requested_by.clone(),
            tx_digest: String::new(),
        };
        let now = secs(decision.timestamp_ms);
        // Every address-book entry usable at `now`, no history: the most
        // permissive inputs, under which any rule that really matched matches.
        let cooling = document.settings.whitelist_delay.0;
        let since = Timestamp(
            now.0
                .saturating_sub(i64::try_from(cooling).unwrap_or(i64::MAX)),
        );
        let active = ActivePolicy::assumed(policy.clone(), since);
        let mut reevaluated = match evaluate(&active, &withdrawal, &[], now, risk_score) {
            Ok(d) => d,
            Err(e) => {
                return deny(format!(
                    "re-evaluating withdrawal {withdrawal_id} (decision entry {}): {e}",
                    decision.index
                ));
            }
        };
        match reevaluated.rule_index {
            Some(i) if i <= rule_index => {}
            _ => {
                return deny(format!(
                    "decision entry {} claims rule {rule_id}, which withdrawal {withdrawal_id} \
                     cannot match under any history: re-evaluation matched {}",
                    decision.index,
                    reevaluated.rule_id.as_deref().unwrap_or("no rule")
                ));
            }
        }

        // The signing session of this signature.
        let Some(session) = after.iter().rev().find(|e| {
            matches!(&e.body, EntryBody::SigningSession { execution_id: x, message_digest: d, .. }
                if x == execution_id && d == message_digest)
        }) else {
            return deny(format!(
                "no signing session for this execution id follows decision entry {}",
                decision.index
            ));
        };

        // 4. Approvals.
        let mut quorum_at_ms = decision.timestamp_ms;
        if rule.action == ActionKind::RequireApprovals {
            let (Some(statement), Some(first)) = (statement, approvals.first()) else {
                return deny(format!(
                    "decision entry {} requires approvals and none was logged",
                    decision.index
                ));
            };
            let EntryBody::Approval {
                statement: first_bytes,
                ..
            } = &first.body
            else {
                return deny("internal: approval lookup".into());
            };
            let mut list = Vec::with_capacity(approvals.len());
            for e in &approvals {
                let EntryBody::Approval {
                    approver_id,
                    verdict,
                    statement: bytes,
                    signature,
                    ..
                } = &e.body
                else {
                    continue;
                };
                if bytes != first_bytes {
                    return deny(format!(
                        "approval entry {} signs another statement than approval entry {}",
                        e.index, first.index
                    ));
                }
                list.push(Approval {
                    approver: approver_id.clone(),
                    verdict: match verdict {
                        LogVerdict::Approve => Verdict::Approve,
                        LogVerdict::Reject => Verdict::Reject,
                    },
                    signature: hex::encode(signature),
                });
            }
            if statement.tx_digest.as_slice() != message_digest.as_slice() {
                // A chain transaction built from the approved intent.
                super::audit_chain_tx::check_prepared_transaction(
                    ctx.history,
                    &withdrawal,
                    &statement,
                    message_digest.as_slice(),
                )
                .or_else(|m| deny(format!("approval entry {}: {m}", first.index)))?;
            }
            let statement_hash: [u8; 32] = Sha256::digest(first_bytes).into();
            if statement_hash.as_slice() != execution_id.as_slice() {
                return deny(format!(
                    "the statement of approval entry {} hashes to {}, the signing execution id is {}",
                    first.index,
                    hex::encode(statement_hash),
                    hex::encode(execution_id)
                ));
            }
            // The decision for the logged rule, with the re-evaluated
            // (canonical) withdrawal summary. `check_approvals` reads the
            // quorum, groups, initiator exclusion and lifetime from the policy.
            reevaluated.rule_id = Some(rule.id.clone());
            reevaluated.rule_index = Some(rule_index);
            reevaluated.outcome = Outcome::RequireApprovals;
            let decision_for_rule: &Decision = &reevaluated;
            // A replacement (fee bump) is signed later: the approvals count
            // as of the withdrawal's first signing session.
            let replacement = ctx
                .history
                .iter()
                .any(|e| matches!(e.body, EntryBody::SignatureProduced { .. }));
            let first_session = after
                .iter()
                .find(|e| matches!(&e.body, EntryBody::SigningSession { .. }))
                .map_or(session.timestamp_ms, |e| e.timestamp_ms);
            let at = secs(first_session);
            if replacement && rule.fee_bumps == FeeBumps::Reapprove {
                let documents = &self.documents;
                super::audit_chain_tx::check_fee_bump_quorum(
                    ctx.history,
                    |hash| {
                        documents
                            .get(hash)
                            .map(|d| ActivePolicy::assumed(d.policy.clone(), Timestamp(0)))
                    },
                    rule_id,
                    requested_by,
                    message_digest.as_slice(),
                    secs(session.timestamp_ms),
                )
                .or_else(deny::<()>)?;
            }
            match check_approvals(&active, decision_for_rule, &statement, &list, at) {
                ApprovalStatus::Satisfied { .. } => {}
                ApprovalStatus::Missing { approvers, missing } => {
                    let needs: Vec<String> = missing
                        .iter()
                        .map(|m| format!("{} more from {}", m.still_needed, m.group))
                        .collect();
                    return deny(format!(
                        "too few valid approvals for rule {rule_id}: counted [{}], needs {}",
                        approvers.join(", "),
                        needs.join(" and ")
                    ));
                }
                ApprovalStatus::Rejected { by } => {
                    return deny(format!("rejected by {}", by.join(", ")));
                }
                ApprovalStatus::Invalid { problems } => {
                    let p: Vec<String> = problems
                        .iter()
                        .map(|p| match p.index.and_then(|i| approvals.get(i)) {
                            Some(e) => {
                                format!("approval entry {} ({}): {}", e.index, p.approver, p.reason)
                            }
                            None => p.reason.clone(),
                        })
                        .collect();
                    return deny(format!("invalid approvals: {}", p.join("; ")));
                }
            }
            // When the quorum was first complete (for the time lock).
            for n in 1..=list.len() {
                if matches!(
                    check_approvals(&active, decision_for_rule, &statement, &list[..n], at),
                    ApprovalStatus::Satisfied { .. }
                ) {
                    quorum_at_ms = approvals[n - 1].timestamp_ms;
                    break;
                }
            }
        }

        // 5. The time lock, by the log's own clock.
        if let Some(delay) = rule.delay {
            let due = quorum_at_ms.saturating_add(delay.0.saturating_mul(1000));
            if session.timestamp_ms.saturating_add(1000) < due {
                return deny(format!(
                    "signing session entry {} started {} ms after the quorum (entry time {} ms), \
                     before rule {rule_id}'s {}s time lock",
                    session.index,
                    session.timestamp_ms.saturating_sub(quorum_at_ms),
                    quorum_at_ms,
                    delay.0
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use custos_audit::entry::AdminSignature as LogAdminSignature;
    use custos_policy::{AdminSetConfig, SecretKey, Zeroizing};

    const T0: u64 = 1_764_072_000_000;
    const ETH: u128 = 1_000_000_000_000_000_000;
    const TO: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
    const DIGEST: [u8; 32] = [7; 32];

    fn key(name: &str) -> SecretKey {
        let pem = match name {
            "alice" => include_str!("../../../examples/keys/alice.pem"),
            "bob" => include_str!("../../../examples/keys/bob.pem"),
            "carol" => include_str!("../../../examples/keys/carol.pem"),
            "dave" => include_str!("../../../examples/keys/dave.pem"),
            "admin1" => include_str!("../../../examples/keys/admin1.pem"),
            "admin2" => include_str!("../../../examples/keys/admin2.pem"),
            "mallory" => include_str!("../../../examples/keys/mallory.pem"),
            other => panic!("no key {other}"),
        };
        SecretKey::from_pem(&Zeroizing::new(pem.to_owned())).unwrap()
    }

    fn document() -> Vec<u8> {
        let pk = |n: &str| key(n).public().to_hex();
        format!(
            r#"
version = 1
[settings]
whitelist_delay = "0s"
change_delay = "24h"
approval_expiry = "1h"
[wallet_groups]
hot = ["w-hot"]
[[address_book]]
id = "exchange"
chain = "ethereum"
address = "{TO}"
[[approvers]]
id = "alice"
role = "treasury"
ed25519 = "{}"
[[approvers]]
id = "bob"
role = "treasury"
ed25519 = "{}"
[[approvers]]
id = "carol"
role = "treasury"
ed25519 = "{}"
[[approvers]]
id = "dave"
role = "security"
ed25519 = "{}"
[groups]
treasury = ["alice", "bob", "carol"]
security = ["dave"]
[[rules]]
id = "small"
wallet_groups = ["hot"]
destination = "whitelisted"
amount = {{ max = "1000000000000000000" }}
action = "allow"
[[rules]]
id = "two"
destination = "whitelisted"
amount = {{ max = "10000000000000000000" }}
action = "require_approvals"
approvals = {{ all = [{{ group = "treasury", count = 2 }}], exclude_initiator = true }}
[[rules]]
id = "locked"
destination = "whitelisted"
action = "require_approvals"
approvals = {{ all = [{{ group = "treasury", count = 2 }}] }}
delay = "60s"
cancel_group = "security"
[[rules]]
id = "rest"
action = "block"
reason = "not whitelisted"
"#,
            pk("alice"),
            pk("bob"),
            pk("carol"),
            pk("dave")
        )
        .into_bytes()
    }

    fn policy() -> Policy {
        Policy::parse(&document()).unwrap()
    }

    fn admin_set(keys: &[&str], threshold: usize) -> AdminSet {
        AdminSet::new(&AdminSetConfig {
            threshold,
            keys: keys.iter().map(|k| key(k).public().to_hex()).collect(),
        })
        .unwrap()
    }

    fn empty_bundle() -> ExportBundle {
        ExportBundle {
            format: custos_audit::bundle::BUNDLE_FORMAT.into(),
            origin: "custos.test/log".into(),
            start: 0,
            prefix: vec![],
            entries: vec![],
            leaf_hashes: vec![],
            checkpoints: vec![],
            consistency_proofs: vec![],
            context: vec![],
            policy_documents: BTreeMap::new(),
        }
    }

    fn replay(admins: Option<AdminSet>) -> PolicyReplay {
        PolicyReplay::new(vec![(document(), "test".into())], admins, &empty_bundle()).unwrap()
    }

    /// A withdrawal's life in the log.
    struct Case {
        amount: u128,
        /// Rule and outcome the decision entry claims [default: the evaluation's].
        claim: Option<(&'static str, DecisionOutcome)>,
        /// (approver, verdict, signer key): who signs what is logged.
        approvals: Vec<(&'static str, Verdict, &'static str)>,
        /// Statement amount the approvers actually signed [default: the real one].
        signed_amount: Option<u128>,
        /// Digest the signature entry says was signed.
        signed_digest: [u8; 32],
        /// Milliseconds from the last approval to the signing session.
        session_after_ms: u64,
    }

    impl Default for Case {
        fn default() -> Self {
            Case {
                amount: 5 * ETH,
                claim: None,
                approvals: vec![
                    ("alice", Verdict::Approve, "alice"),
                    ("bob", Verdict::Approve, "bob"),
                ],
                signed_amount: None,
                signed_digest: DIGEST,
                session_after_ms: 1000,
            }
        }
    }

    fn entry(index: u64, ms: u64, body: EntryBody) -> Entry {
        Entry {
            index,
            timestamp_ms: ms,
            body,
        }
    }

    /// Entries 0..: activation, request, risk, decision, approvals, session,
    /// signature.
    fn log(case: &Case) -> Vec<Entry> {
        let p = policy();
        let hash = p.hash();
        let mut sigs = BundleSignatures::new(hash);
        sigs.sign(&key("admin1"));
        sigs.sign(&key("admin2"));
        let mut out = vec![entry(
            0,
            T0,
            EntryBody::PolicyActivated {
                policy_hash: hash.0,
                policy_version: 1,
                admin_signatures: sigs
                    .signatures
                    .iter()
                    .map(|s| LogAdminSignature {
                        admin_id: s.public_key.clone(),
                        signature: hex::decode(&s.signature).unwrap(),
                    })
                    .collect(),
            },
        )];
        let w = Withdrawal {
            id: "wd-1".into(),
            wallet: "w-hot".into(),
            chain: "ethereum".into(),
            asset: "ETH".into(),
            destination: TO.into(),
            amount: Amount(case.amount),
            fee_cap: Amount(0),
            initiator: "payments-backend".into(),
            tx_digest: hex::encode(DIGEST),
        };
        out.push(entry(
            1,
            T0 + 1000,
            EntryBody::WithdrawalRequested {
                withdrawal_id: w.id.clone(),
                key_id: w.wallet.clone(),
                chain: w.chain.clone(),
                asset: w.asset.clone(),
                destination: w.destination.clone(),
                amount: case.amount.to_string(),
                tx_digest: None,
                requested_by: w.initiator.clone(),
            },
        ));
        out.push(entry(
            2,
            T0 + 2000,
            EntryBody::RiskScored {
                withdrawal_id: w.id.clone(),
                provider: "test".into(),
                score: 10,
                details_hash: [0; 32],
            },
        ));
        let active = ActivePolicy::assumed(p.clone(), secs(T0));
        let decision = evaluate(&active, &w, &[], secs(T0 + 3000), 10).unwrap();
        let real_rule = decision.rule_id.clone().unwrap();
        let (rule_id, outcome) = case.claim.unwrap_or(match decision.outcome {
            Outcome::Allow => ("", DecisionOutcome::Allow),
            _ => ("", DecisionOutcome::RequireApprovals { quorum: 2 }),
        });
        let rule_id = if rule_id.is_empty() {
            real_rule
        } else {
            rule_id.to_owned()
        };
        out.push(entry(
            3,
            T0 + 3000,
            EntryBody::PolicyDecision {
                withdrawal_id: w.id.clone(),
                policy_hash: hash.0,
                rule_id: rule_id.clone(),
                outcome,
                explanation_hash: [0; 32],
            },
        ));
        let mut statement = ApprovalStatement::for_decision(
            &decision,
            &w,
            secs(T0 + 3000).plus(custos_policy::Duration(3600)),
        )
        .unwrap();
        statement.rule_id = rule_id;
        let logged = statement.encode().unwrap();
        let mut signed = statement.clone();
        if let Some(a) = case.signed_amount {
            signed.amount = Amount(a);
        }
        let mut ms = T0 + 3000;
        for (who, verdict, signer) in &case.approvals {
            ms += 1000;
            let a = Approval::sign(&signed, *verdict, who, &key(signer)).unwrap();
            out.push(entry(
                out.len() as u64,
                ms,
                EntryBody::Approval {
                    withdrawal_id: w.id.clone(),
                    approver_id: (*who).to_owned(),
                    verdict: match verdict {
                        Verdict::Reject => LogVerdict::Reject,
                        _ => LogVerdict::Approve,
                    },
                    statement: logged.clone(),
                    signature: hex::decode(a.signature).unwrap(),
                },
            ));
        }
        let execution_id: [u8; 32] = Sha256::digest(&logged).into();
        ms += case.session_after_ms;
        out.push(entry(
            out.len() as u64,
            ms,
            EntryBody::SigningSession {
                withdrawal_id: w.id.clone(),
                key_id: "w-hot".into(),
                execution_id: execution_id.to_vec(),
                participants: vec!["signer-1".into(), "signer-2".into()],
                presignature_id: None,
                message_digest: case.signed_digest,
            },
        ));
        out.push(entry(
            out.len() as u64,
            ms + 500,
            EntryBody::SignatureProduced {
                withdrawal_id: w.id,
                key_id: "w-hot".into(),
                execution_id: execution_id.to_vec(),
                message_digest: case.signed_digest,
                signature: vec![1; 65],
            },
        ));
        out
    }

    fn check(replay: &PolicyReplay, case: &Case) -> Result<(), String> {
        let entries = log(case);
        let (signature, rest) = entries.split_last().unwrap();
        let history: Vec<&Entry> = rest[1..].iter().collect();
        let policies: Vec<&Entry> = vec![&rest[0]];
        let docs = BTreeMap::new();
        replay
            .check_signature(&ReplayContext {
                index: signature.index,
                signature,
                history: &history,
                policies: &policies,
                policy_documents: &docs,
            })
            .map_err(|e| e.to_string())
    }

    fn denied(replay: &PolicyReplay, case: &Case, why: &str) {
        match check(replay, case) {
            Ok(()) => panic!("accepted; expected {why:?}"),
            Err(e) => assert!(e.contains(why), "{e}\nexpected: {why}"),
        }
    }

    #[test]
    fn an_authorised_quorum_passes() {
        let admins = admin_set(&["admin1", "admin2"], 2);
        check(&replay(Some(admins)), &Case::default()).unwrap();
        check(
            &replay(None),
            &Case {
                amount: ETH / 2,
                approvals: vec![],
                ..Case::default()
            },
        )
        .unwrap();
        // A time-locked rule signed after its delay.
        check(
            &replay(None),
            &Case {
                amount: 50 * ETH,
                session_after_ms: 61_000,
                ..Case::default()
            },
        )
        .unwrap();
    }

    #[test]
    fn a_forged_or_foreign_approval_is_flagged() {
        let r = replay(None);
        // Bob's key signed another amount than the logged statement.
        denied(
            &r,
            &Case {
                signed_amount: Some(ETH),
                ..Case::default()
            },
            "does not verify",
        );
        // Mallory signing as bob.
        let mut c = Case::default();
        c.approvals[1] = ("bob", Verdict::Approve, "mallory");
        denied(&r, &c, "approval entry 5 (bob)");
        // Dave is not in the treasury group.
        let mut c = Case::default();
        c.approvals[1] = ("dave", Verdict::Approve, "dave");
        denied(&r, &c, "none of the groups");
        // Carol rejected: the structural replay already refuses.
        let mut c = Case::default();
        c.approvals.push(("carol", Verdict::Reject, "carol"));
        denied(&r, &c, "rejected");
    }

    #[test]
    fn the_signature_must_be_of_the_approved_digest() {
        denied(
            &replay(None),
            &Case {
                signed_digest: [8; 32],
                ..Case::default()
            },
            "is neither the signed digest",
        );
    }

    #[test]
    fn the_decision_must_follow_the_policy() {
        let r = replay(None);
        // 5 ETH can never match the 1 ETH allow rule.
        denied(
            &r,
            &Case {
                claim: Some(("small", DecisionOutcome::Allow)),
                approvals: vec![],
                ..Case::default()
            },
            "cannot match under any history",
        );
        // The rule needs approvals, the log says allow.
        denied(
            &r,
            &Case {
                claim: Some(("two", DecisionOutcome::Allow)),
                approvals: vec![],
                ..Case::default()
            },
            "logs Allow but rule two",
        );
        // A quorum of one where the rule says two.
        denied(
            &r,
            &Case {
                claim: Some(("two", DecisionOutcome::RequireApprovals { quorum: 1 })),
                approvals: vec![("alice", Verdict::Approve, "alice")],
                ..Case::default()
            },
            "quorum 2",
        );
        // Signed inside the time lock.
        denied(
            &r,
            &Case {
                amount: 50 * ETH,
                session_after_ms: 10_000,
                ..Case::default()
            },
            "time lock",
        );
    }

    #[test]
    fn the_policy_and_its_admins_must_be_known() {
        let none = PolicyReplay::new(vec![], None, &empty_bundle()).unwrap();
        denied(&none, &Case::default(), "not among the supplied documents");
        let strangers = replay(Some(admin_set(&["mallory"], 1)));
        denied(&strangers, &Case::default(), "policy activation entry 0");
        // A document shipped in the bundle counts when it hashes to its key.
        let mut b = empty_bundle();
        b.policy_documents.insert(
            policy().hash().to_string(),
            String::from_utf8(document()).unwrap(),
        );
        let shipped = PolicyReplay::new(vec![], None, &b).unwrap();
        check(&shipped, &Case::default()).unwrap();
        let mut b = empty_bundle();
        b.policy_documents
            .insert("00".repeat(32), String::from_utf8(document()).unwrap());
        let mislabelled = PolicyReplay::new(vec![], None, &b).unwrap();
        assert_eq!(mislabelled.documents().count(), 0);
    }
}
