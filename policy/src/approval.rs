//! Checking approvals against a decision.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use sha2::{Digest, Sha256};

use crate::document::{ActionKind, ApprovalMethod, Rule};
use crate::error::Result;
use crate::eval::{Decision, Outcome};
use crate::governance::ActivePolicy;
use crate::keys::{SecretKey, verify};
use crate::policy::Policy;
use crate::quorum::{self, Term};
use crate::statement::{ApprovalStatement, Verdict};
use crate::value::{Duration, Timestamp};
use crate::webauthn::{PasskeyAssertion, RelyingParty, verify_passkey_assertion};

/// An approver's signed verdict on a statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// Approver id in the policy.
    pub approver: String,
    /// What they decided.
    pub verdict: Verdict,
    /// Ed25519 signature over `statement.signing_message(verdict)`, hex; empty
    /// for a passkey approval.
    #[serde(default)]
    pub signature: String,
    /// A passkey approval: the WebAuthn assertion whose challenge is
    /// [`passkey_challenge`](crate::passkey_challenge) of the statement and verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webauthn: Option<PasskeyAssertion>,
}

impl Approval {
    /// Signs `statement` with `key` as approver `approver`.
    pub fn sign(
        statement: &ApprovalStatement,
        verdict: Verdict,
        approver: &str,
        key: &SecretKey,
    ) -> Result<Self> {
        let msg = statement.signing_message(verdict)?;
        Ok(Approval {
            approver: approver.to_string(),
            verdict,
            signature: hex::encode(key.sign(&msg)),
            webauthn: None,
        })
    }

    /// A passkey approval.
    pub fn passkey(approver: &str, verdict: Verdict, assertion: PasskeyAssertion) -> Self {
        Approval {
            approver: approver.to_string(),
            verdict,
            signature: String::new(),
            webauthn: Some(assertion),
        }
    }

    /// The bytes an audit log entry carries as the approval's signature: the
    /// 64 Ed25519 signature bytes, or the passkey assertion
    /// ([`PasskeyAssertion::to_log_bytes`]).
    pub fn log_signature(&self) -> Vec<u8> {
        match &self.webauthn {
            Some(a) => a.to_log_bytes(),
            None => hex::decode(&self.signature).unwrap_or_default(),
        }
    }

    /// Rebuilds an approval from a log entry's fields (the inverse of
    /// [`log_signature`](Self::log_signature)). A malformed passkey record
    /// becomes an approval that fails verification.
    pub fn from_log(approver: &str, verdict: Verdict, signature: &[u8]) -> Self {
        match PasskeyAssertion::from_log_bytes(signature) {
            Some(Ok(a)) => Approval::passkey(approver, verdict, a),
            Some(Err(_)) => Approval {
                approver: approver.to_string(),
                verdict,
                signature: String::new(),
                webauthn: None,
            },
            None => Approval {
                approver: approver.to_string(),
                verdict,
                signature: hex::encode(signature),
                webauthn: None,
            },
        }
    }
}

/// Verifies approval `a` of approver `ai` over `message` (the signing message
/// of its verdict): an Ed25519 signature or a passkey assertion, as the rule's
/// `approval_methods` allow. Passkey counters are not compared here (see
/// [`check_sign_counter`](crate::check_sign_counter)).
pub(crate) fn verify_approval(
    policy: &Policy,
    rule: &Rule,
    ai: usize,
    a: &Approval,
    message: Option<&[u8]>,
) -> std::result::Result<(), String> {
    let allows = |m: ApprovalMethod| {
        rule.approval_methods
            .as_ref()
            .is_none_or(|v| v.contains(&m))
    };
    let Some(message) = message else {
        return Err("the statement cannot be encoded".into());
    };
    match &a.webauthn {
        None => {
            if !allows(ApprovalMethod::Ed25519) {
                return Err(format!(
                    "rule {:?} accepts passkey approvals only; {:?} signed with an Ed25519 key",
                    rule.id, a.approver
                ));
            }
            let sig = hex::decode(&a.signature).unwrap_or_default();
            match policy.approver_key(ai) {
                Some(k) if verify(k, message, &sig) => Ok(()),
                Some(_) => Err(format!(
                    "signature of {:?} does not verify over this statement (signed for another withdrawal, transaction, amount or policy?)",
                    a.approver
                )),
                None => Err(format!("approver {:?} has no ed25519 key", a.approver)),
            }
        }
        Some(assertion) => {
            if !allows(ApprovalMethod::Passkey) {
                return Err(format!(
                    "rule {:?} does not accept passkey approvals",
                    rule.id
                ));
            }
            let Some(rp) = policy.document().webauthn.as_ref() else {
                return Err(
                    "the policy has no [webauthn] section: passkey approvals are not accepted"
                        .into(),
                );
            };
            let id = assertion.credential_id_bytes().map_err(|e| e.to_string())?;
            let Some(cred) = policy.approver_passkeys(ai).iter().find(|c| c.id == id) else {
                return Err(format!(
                    "passkey {:?} is not registered for approver {:?}",
                    assertion.credential_id, a.approver
                ));
            };
            let challenge: [u8; 32] = Sha256::digest(message).into();
            let rp = RelyingParty {
                rp_id: &rp.rp_id,
                origins: &rp.origins,
            };
            verify_passkey_assertion(cred, rp, &challenge, 0, assertion)
                .map(|_| ())
                .map_err(|e| format!("passkey approval of {:?} refused: {e}", a.approver))
        }
    }
}

/// Why one approval (or the statement, when `index` is `None`) was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvalidApproval {
    /// Position in the approvals list; `None` for a problem with the statement itself.
    pub index: Option<usize>,
    /// Approver id as claimed.
    pub approver: String,
    /// Plain-words reason.
    pub reason: String,
}

/// A quorum term still short of approvals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingTerm {
    /// Group.
    pub group: String,
    /// Approvals still needed from it.
    pub still_needed: usize,
    /// Active members who have not approved and are allowed to.
    pub could_approve: Vec<String>,
}

/// The result of [`check_approvals`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum ApprovalStatus {
    /// The quorum is met (or the decision needs none).
    Satisfied {
        /// Approvers counted.
        approvers: Vec<String>,
    },
    /// Valid so far, not enough.
    Missing {
        /// Approvers counted so far.
        approvers: Vec<String>,
        /// What is still needed, and from whom.
        missing: Vec<MissingTerm>,
    },
    /// An authorised approver rejected: the withdrawal is denied.
    Rejected {
        /// Who rejected.
        by: Vec<String>,
    },
    /// Something submitted is not acceptable; nothing counts until it is removed.
    Invalid {
        /// Every problem found.
        problems: Vec<InvalidApproval>,
    },
}

fn statement_problems(
    decision: &Decision,
    s: &ApprovalStatement,
    now: Timestamp,
    max_lifetime: Option<Duration>,
) -> Vec<String> {
    let w = &decision.withdrawal;
    let mut p = Vec::new();
    let mut cmp = |name: &str, got: &str, want: &str| {
        if got != want {
            p.push(format!(
                "statement {name} is {got:?}, the withdrawal's is {want:?}"
            ));
        }
    };
    cmp("withdrawal_id", &s.withdrawal_id, &w.id);
    cmp("chain", &s.chain, &w.chain);
    cmp("asset", &s.asset, &w.asset);
    cmp("source_wallet", &s.source_wallet, &w.wallet);
    cmp("destination", &s.destination, &w.destination);
    cmp("amount", &s.amount.to_string(), &w.amount.to_string());
    if s.policy_hash != decision.policy_hash {
        p.push(format!(
            "statement names policy {}, the policy in force is {}",
            s.policy_hash, decision.policy_hash
        ));
    }
    if decision.rule_id.as_deref() != Some(s.rule_id.as_str()) {
        p.push(format!(
            "statement names rule {:?}, the decision matched {:?}",
            s.rule_id,
            decision.rule_id.as_deref().unwrap_or("no rule")
        ));
    }
    if max_lifetime.is_some() && now >= s.expiry {
        p.push(format!("approvals expired at {}", s.expiry));
    }
    if let Some(max) = max_lifetime
        && s.expiry > now.plus(max)
    {
        p.push(format!(
            "statement expiry {} is further away than the rule's approval lifetime of {max}",
            s.expiry
        ));
    }
    if s.encode().is_err() {
        p.push("statement cannot be encoded (field too long or empty)".into());
    }
    p
}

/// Checks `approvals` over `statement` for `decision`.
///
/// `statement` must be built by the checker from its own view of the withdrawal and
/// transaction (a signer decodes the unsigned transaction itself): a signature made
/// over anything else does not verify. Any unacceptable approval (unknown, revoked,
/// wrong group, duplicate, initiator, bad signature) makes the result `Invalid`.
pub fn check_approvals(
    active: &ActivePolicy,
    decision: &Decision,
    statement: &ApprovalStatement,
    approvals: &[Approval],
    now: Timestamp,
) -> ApprovalStatus {
    let policy = active.policy();
    let invalid = |reason: String| ApprovalStatus::Invalid {
        problems: vec![InvalidApproval {
            index: None,
            approver: String::new(),
            reason,
        }],
    };
    match &decision.outcome {
        Outcome::Allow => {
            return ApprovalStatus::Satisfied {
                approvers: Vec::new(),
            };
        }
        Outcome::Block { reason } => {
            return invalid(format!("the decision blocks this withdrawal: {reason}"));
        }
        Outcome::RequireApprovals => {}
    }
    if decision.policy_hash != policy.hash() {
        return invalid(format!(
            "decision was made under policy {}, not {}",
            decision.policy_hash,
            policy.hash()
        ));
    }
    let Some((res, rule)) = decision
        .rule_index
        .and_then(|i| policy.resolved.get(i).zip(policy.document().rules.get(i)))
    else {
        return invalid("decision names no rule of this policy".into());
    };
    // Everything that decides who may approve comes from the policy itself, never from
    // the decision's own fields: a decision received from elsewhere may be forged.
    if decision.rule_id.as_deref() != Some(rule.id.as_str())
        || rule.action != ActionKind::RequireApprovals
    {
        return invalid(format!(
            "decision does not match rule {:?} of this policy",
            rule.id
        ));
    }
    let max_lifetime = rule
        .approval_expiry
        .unwrap_or(policy.document().settings.approval_expiry);
    let problems: Vec<InvalidApproval> =
        statement_problems(decision, statement, now, Some(max_lifetime))
            .into_iter()
            .map(|reason| InvalidApproval {
                index: None,
                approver: String::new(),
                reason,
            })
            .collect();
    let messages = [Verdict::Approve, Verdict::Reject].map(|v| statement.signing_message(v).ok());
    count_verdicts(
        &Quorum {
            policy,
            resolved: res,
            rule,
            initiator: &decision.withdrawal.initiator,
        },
        &messages,
        approvals,
        problems,
    )
}

/// The quorum of one `require_approvals` rule of a policy, for one initiator.
pub(crate) struct Quorum<'a> {
    pub policy: &'a crate::policy::Policy,
    pub resolved: &'a crate::policy::Resolved,
    pub rule: &'a crate::document::Rule,
    pub initiator: &'a str,
}

/// Counts approvals and rejections whose signatures verify over `messages`
/// (the approve and the reject message) against `q`; `problems` found so
/// far make the result `Invalid`.
pub(crate) fn count_verdicts(
    q: &Quorum<'_>,
    messages: &[Option<Vec<u8>>; 2],
    approvals: &[Approval],
    mut problems: Vec<InvalidApproval>,
) -> ApprovalStatus {
    let (policy, res, rule) = (q.policy, q.resolved, q.rule);
    let exclude_initiator = rule.approvals.as_ref().is_some_and(|q| q.exclude_initiator);
    let eligible: BTreeSet<usize> = res
        .terms
        .iter()
        .flat_map(|(_, e, _)| e.iter().copied())
        .collect();
    let doc = policy.document();
    let mut seen = BTreeSet::new();
    let mut approved = Vec::new();
    let mut rejected = Vec::new();
    for (index, a) in approvals.iter().enumerate() {
        let mut bad = |reason: String| {
            problems.push(InvalidApproval {
                index: Some(index),
                approver: a.approver.clone(),
                reason,
            });
        };
        if !seen.insert(a.approver.clone()) {
            bad(format!(
                "duplicate approval from {:?}: each approver counts once",
                a.approver
            ));
            continue;
        }
        let Some(ai) = policy.approver_index(&a.approver) else {
            bad(format!(
                "{:?} is not an approver of this policy",
                a.approver
            ));
            continue;
        };
        if doc.approvers[ai].revoked {
            bad(format!("approver {:?} is revoked", a.approver));
            continue;
        }
        if !eligible.contains(&ai) {
            let groups: Vec<&str> = res.terms.iter().map(|(g, _, _)| g.as_str()).collect();
            bad(format!(
                "approver {:?} is in none of the groups rule {:?} needs ({})",
                a.approver,
                rule.id,
                groups.join(", ")
            ));
            continue;
        }
        if exclude_initiator && a.approver == q.initiator {
            bad(format!(
                "{:?} initiated this withdrawal and may not approve it",
                a.approver
            ));
            continue;
        }
        let msg = match a.verdict {
            Verdict::Approve => &messages[0],
            Verdict::Reject => &messages[1],
            Verdict::Cancel => {
                bad("a cancellation is not an approval; use check_cancellation".into());
                continue;
            }
        };
        if let Err(reason) = verify_approval(policy, rule, ai, a, msg.as_deref()) {
            bad(reason);
            continue;
        }
        match a.verdict {
            Verdict::Reject => rejected.push(a.approver.clone()),
            _ => approved.push(ai),
        }
    }
    if !problems.is_empty() {
        return ApprovalStatus::Invalid { problems };
    }
    if !rejected.is_empty() {
        return ApprovalStatus::Rejected { by: rejected };
    }
    let terms: Vec<Term<'_>> = res
        .terms
        .iter()
        .map(|(_, e, c)| Term {
            eligible: e,
            count: *c,
        })
        .collect();
    let assigned = quorum::assign(&terms, &approved);
    let names =
        |v: &[usize]| -> Vec<String> { v.iter().map(|&i| doc.approvers[i].id.clone()).collect() };
    let mut counted: Vec<usize> = assigned.iter().flatten().copied().collect();
    counted.sort_unstable();
    if quorum::is_full(&terms, &assigned) {
        return ApprovalStatus::Satisfied {
            approvers: names(&counted),
        };
    }
    let approved_set: BTreeSet<usize> = approved.iter().copied().collect();
    let missing = res
        .terms
        .iter()
        .zip(&assigned)
        .filter(|((_, _, c), a)| a.len() < *c)
        .map(|((g, e, c), a)| MissingTerm {
            group: g.clone(),
            still_needed: c - a.len(),
            could_approve: e
                .iter()
                .filter(|&&i| {
                    let own = exclude_initiator && doc.approvers[i].id == q.initiator;
                    !(approved_set.contains(&i) || doc.approvers[i].revoked || own)
                })
                .map(|&i| doc.approvers[i].id.clone())
                .collect(),
        })
        .collect();
    ApprovalStatus::Missing {
        approvers: names(&counted),
        missing,
    }
}

/// Checks a cancellation during a time lock: a valid `cancel` signature over the
/// statement from an active member of the decision's cancel group. Returns the
/// canceller's id, or why the cancellation is refused.
pub fn check_cancellation(
    active: &ActivePolicy,
    decision: &Decision,
    statement: &ApprovalStatement,
    cancel: &Approval,
) -> std::result::Result<String, String> {
    let policy = active.policy();
    if cancel.verdict != Verdict::Cancel {
        return Err("not a cancellation".into());
    }
    let (res, rule) = decision
        .rule_index
        .and_then(|i| policy.resolved.get(i).zip(policy.document().rules.get(i)))
        .filter(|(_, r)| decision.rule_id.as_deref() == Some(r.id.as_str()))
        .ok_or("decision names no rule of this policy")?;
    let members = res
        .cancel
        .as_ref()
        .ok_or("the matched rule has no time lock to cancel")?;
    // Expiry does not matter: cancelling a stale withdrawal is always harmless.
    let problems = statement_problems(decision, statement, Timestamp(0), None);
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    let ai = policy
        .approver_index(&cancel.approver)
        .ok_or_else(|| format!("{:?} is not an approver of this policy", cancel.approver))?;
    if policy.document().approvers[ai].revoked {
        return Err(format!("approver {:?} is revoked", cancel.approver));
    }
    if !members.contains(&ai) {
        return Err(format!(
            "approver {:?} is not in cancel group {:?}",
            cancel.approver,
            decision.cancel_group.as_deref().unwrap_or("")
        ));
    }
    let msg = statement
        .signing_message(Verdict::Cancel)
        .map_err(|e| e.to_string())?;
    verify_approval(policy, rule, ai, cancel, Some(&msg))
        .map_err(|e| format!("cancellation refused: {e}"))?;
    Ok(cancel.approver.clone())
}
