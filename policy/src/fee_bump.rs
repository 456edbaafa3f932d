//! Fee-bump approvals: under a rule with `fee_bumps = "reapprove"`, the
//! replacement of a stuck transaction needs the rule's quorum again, over a
//! statement that names the replacement exactly.
//!
//! Encoding, version 1 (integers big-endian, `str` as in the approval
//! statement; see FORMATS.md):
//!
//! ```text
//! magic                     25 bytes  "custos.fee-bump-statement"
//! version                    1 byte   0x01
//! withdrawal_id            str
//! statement_hash            32 bytes  SHA-256 of the approved withdrawal's approval statement
//! chain                    str
//! nonce                      8 bytes  u64
//! replaces                  32 bytes  signing digest of the transaction being replaced
//! replacement               32 bytes  signing digest of the replacement
//! max_fee_per_gas           16 bytes  u128, wei per gas
//! max_priority_fee_per_gas  16 bytes  u128, wei per gas
//! gas_limit                  8 bytes  u64
//! policy_hash               32 bytes  the policy in force when the bump is approved
//! rule_id                  str        the rule the withdrawal was approved under
//! expiry                     8 bytes  i64, Unix seconds UTC
//! ```
//!
//! The message signed is `"custos.fee-bump.v1" 0x00 || verdict || statement`
//! (approve 0x01, reject 0x02): its own domain, so an approval of a
//! withdrawal is never an approval of a bump, nor the reverse.

use serde::{Deserialize, Serialize};

use crate::approval::{Approval, ApprovalStatus, InvalidApproval, Quorum, count_verdicts};
use crate::document::{ActionKind, FeeBumps};
use crate::error::{PolicyError, Result};
use crate::governance::ActivePolicy;
use crate::keys::SecretKey;
use crate::policy::PolicyHash;
use crate::statement::{Reader, Verdict, put_str};
use crate::value::Timestamp;

/// Magic prefix of an encoded fee-bump statement.
pub const FEE_BUMP_MAGIC: &[u8; 25] = b"custos.fee-bump-statement";
/// Current encoding version.
pub const FEE_BUMP_VERSION: u8 = 1;
/// Domain tag of the signed message.
pub const FEE_BUMP_SIGN_DOMAIN: &[u8] = b"custos.fee-bump.v1\x00";

/// What approvers sign to let a stuck transaction be replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeeBumpStatement {
    /// Withdrawal id.
    pub withdrawal_id: String,
    /// SHA-256 of the approval statement the withdrawal was approved with
    /// (hex in JSON): binds everything approved then.
    #[serde(with = "hex32")]
    pub statement_hash: [u8; 32],
    /// Chain.
    pub chain: String,
    /// Nonce shared by the replaced transaction and its replacement.
    pub nonce: u64,
    /// Signing digest of the transaction replaced (hex in JSON).
    #[serde(with = "hex32")]
    pub replaces: [u8; 32],
    /// Signing digest of the replacement (hex in JSON).
    #[serde(with = "hex32")]
    pub replacement: [u8; 32],
    /// The replacement's max fee per gas, wei.
    pub max_fee_per_gas: u128,
    /// The replacement's max priority fee per gas, wei.
    pub max_priority_fee_per_gas: u128,
    /// Gas limit (unchanged by a bump).
    pub gas_limit: u64,
    /// Policy in force when the bump is approved.
    pub policy_hash: PolicyHash,
    /// Rule the withdrawal was approved under.
    pub rule_id: String,
    /// Approvals over this statement are void at and after this time.
    pub expiry: Timestamp,
}

mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

impl FeeBumpStatement {
    /// The canonical bytes (see the module documentation).
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(320);
        out.extend_from_slice(FEE_BUMP_MAGIC);
        out.push(FEE_BUMP_VERSION);
        put_str(&mut out, "withdrawal_id", &self.withdrawal_id)?;
        out.extend_from_slice(&self.statement_hash);
        put_str(&mut out, "chain", &self.chain)?;
        out.extend_from_slice(&self.nonce.to_be_bytes());
        out.extend_from_slice(&self.replaces);
        out.extend_from_slice(&self.replacement);
        out.extend_from_slice(&self.max_fee_per_gas.to_be_bytes());
        out.extend_from_slice(&self.max_priority_fee_per_gas.to_be_bytes());
        out.extend_from_slice(&self.gas_limit.to_be_bytes());
        out.extend_from_slice(&self.policy_hash.0);
        put_str(&mut out, "rule_id", &self.rule_id)?;
        out.extend_from_slice(&self.expiry.0.to_be_bytes());
        Ok(out)
    }

    /// Parses canonical bytes; refuses other versions and trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        r.header(FEE_BUMP_MAGIC, FEE_BUMP_VERSION, "a fee-bump statement")?;
        let s = FeeBumpStatement {
            withdrawal_id: r.string("withdrawal_id")?,
            statement_hash: r.array("statement_hash")?,
            chain: r.string("chain")?,
            nonce: u64::from_be_bytes(r.array("nonce")?),
            replaces: r.array("replaces")?,
            replacement: r.array("replacement")?,
            max_fee_per_gas: u128::from_be_bytes(r.array("max_fee_per_gas")?),
            max_priority_fee_per_gas: u128::from_be_bytes(r.array("max_priority_fee_per_gas")?),
            gas_limit: u64::from_be_bytes(r.array("gas_limit")?),
            policy_hash: PolicyHash(r.array("policy_hash")?),
            rule_id: r.string("rule_id")?,
            expiry: Timestamp(i64::from_be_bytes(r.array("expiry")?)),
        };
        r.finish()?;
        Ok(s)
    }

    /// The exact bytes an approver signs for `verdict` (approve or reject).
    pub fn signing_message(&self, verdict: Verdict) -> Result<Vec<u8>> {
        if verdict == Verdict::Cancel {
            return Err(PolicyError::Statement(
                "a fee bump is approved or rejected, not cancelled".into(),
            ));
        }
        let body = self.encode()?;
        let mut m = Vec::with_capacity(FEE_BUMP_SIGN_DOMAIN.len() + 1 + body.len());
        m.extend_from_slice(FEE_BUMP_SIGN_DOMAIN);
        m.push(verdict.byte());
        m.extend_from_slice(&body);
        Ok(m)
    }

    /// Signs this statement with `key` as approver `approver`.
    pub fn sign(&self, verdict: Verdict, approver: &str, key: &SecretKey) -> Result<Approval> {
        let msg = self.signing_message(verdict)?;
        Ok(Approval {
            approver: approver.to_string(),
            verdict,
            signature: hex::encode(key.sign(&msg)),
            webauthn: None,
        })
    }
}

/// Whether a fee bump of a withdrawal approved under `rule_id` needs new
/// approvals under the policy in force. A rule missing from that policy
/// counts as needing them (and then cannot get them): fail closed.
pub fn fee_bump_needs_approval(active: &ActivePolicy, rule_id: &str) -> bool {
    active
        .policy()
        .document()
        .rules
        .iter()
        .find(|r| r.id == rule_id)
        .is_none_or(|r| r.fee_bumps == FeeBumps::Reapprove)
}

/// Checks `approvals` over a fee-bump `statement` against the quorum of its
/// rule in the policy in force; `initiator` is the withdrawal's initiator.
///
/// `statement` must be built by the checker from its own view (a signer
/// decodes the replacement and takes the replaced digest and the approval
/// statement's hash from its own record). Refused as `Invalid` when the
/// statement names another policy, a rule that is not a `require_approvals`
/// rule of it, or has expired or lives longer than the rule allows.
pub fn check_fee_bump_approvals(
    active: &ActivePolicy,
    initiator: &str,
    statement: &FeeBumpStatement,
    approvals: &[Approval],
    now: Timestamp,
) -> ApprovalStatus {
    let policy = active.policy();
    let statement_problem = |reason: String| InvalidApproval {
        index: None,
        approver: String::new(),
        reason,
    };
    let found = policy
        .document()
        .rules
        .iter()
        .position(|r| r.id == statement.rule_id)
        .and_then(|i| policy.resolved.get(i).zip(policy.document().rules.get(i)));
    let Some((resolved, rule)) = found.filter(|(_, r)| r.action == ActionKind::RequireApprovals)
    else {
        return ApprovalStatus::Invalid {
            problems: vec![statement_problem(format!(
                "rule {:?} is not a require_approvals rule of the policy in force: nobody can approve this fee bump",
                statement.rule_id
            ))],
        };
    };
    let mut problems = Vec::new();
    if statement.policy_hash != policy.hash() {
        problems.push(statement_problem(format!(
            "fee-bump statement names policy {}, the policy in force is {}",
            statement.policy_hash,
            policy.hash()
        )));
    }
    let lifetime = rule
        .approval_expiry
        .unwrap_or(policy.document().settings.approval_expiry);
    if now >= statement.expiry {
        problems.push(statement_problem(format!(
            "fee-bump approvals expired at {}",
            statement.expiry
        )));
    }
    if statement.expiry > now.plus(lifetime) {
        problems.push(statement_problem(format!(
            "fee-bump statement expiry {} is further away than the rule's approval lifetime of {lifetime}",
            statement.expiry
        )));
    }
    if statement.encode().is_err() {
        problems.push(statement_problem(
            "fee-bump statement cannot be encoded (field too long or empty)".into(),
        ));
    }
    let messages = [Verdict::Approve, Verdict::Reject].map(|v| statement.signing_message(v).ok());
    count_verdicts(
        &Quorum {
            policy,
            resolved,
            rule,
            initiator,
        },
        &messages,
        approvals,
        problems,
    )
}

/// [`check_fee_bump_approvals`] as a yes or no: the approvers counted, or
/// [`PolicyError::Refused`] saying what is missing or wrong.
pub fn authorize_fee_bump(
    active: &ActivePolicy,
    initiator: &str,
    statement: &FeeBumpStatement,
    approvals: &[Approval],
    now: Timestamp,
) -> Result<Vec<String>> {
    crate::authorize::require_satisfied(
        check_fee_bump_approvals(active, initiator, statement, approvals, now),
        "fee bump: ",
    )
}
