//! The canonical approval statement: exactly what an approver signs.
//!
//! Encoding, version 1 (all integers big-endian; see FORMATS.md):
//!
//! ```text
//! magic        25 bytes  "custos.approval-statement"
//! version       1 byte   0x01
//! withdrawal_id str      (u32 length, UTF-8 bytes; every str field is 1..=256 bytes)
//! chain         str
//! asset         str
//! source_wallet str
//! destination   str      canonical form (EIP-55 for EVM, lowercase bech32)
//! amount       16 bytes  u128, base units
//! fee_cap      16 bytes  u128, native base units
//! tx_digest     bytes    (u32 length 0..=1024, raw bytes)
//! policy_hash  32 bytes
//! rule_id       str
//! expiry        8 bytes  i64, Unix seconds UTC
//! ```
//!
//! Version 2 is the statement of a withdrawal from a derived address of the
//! wallet (HD child key): the same fields, with two after `source_wallet`:
//!
//! ```text
//! source_path    str     the derivation path below the wallet key (m/0/5)
//! source_address str     the child key's address, canonical form
//! ```
//!
//! A withdrawal from the wallet's own address keeps version 1, so every
//! statement made before derived addresses encodes as it did.
//!
//! The message signed is `"custos.approval.v1" 0x00 || verdict || statement`,
//! verdict 0x01 approve, 0x02 reject, 0x03 cancel: a signature for one verdict is
//! never valid for another. Decoding refuses trailing bytes, so one statement has
//! exactly one encoding.

use serde::{Deserialize, Serialize};

use crate::error::{PolicyError, Result};
use crate::eval::{Decision, DerivedSource, MAX_FIELD_LEN, Withdrawal};
use crate::policy::PolicyHash;
use crate::value::{Amount, Timestamp};

/// Magic prefix of an encoded statement.
pub const STATEMENT_MAGIC: &[u8; 25] = b"custos.approval-statement";
/// Encoding version of a withdrawal from the wallet's own address.
pub const STATEMENT_VERSION: u8 = 1;
/// Encoding version of a withdrawal from a derived address.
pub const STATEMENT_VERSION_DERIVED: u8 = 2;
/// Domain tag of the signed message.
pub const APPROVAL_SIGN_DOMAIN: &[u8] = b"custos.approval.v1\x00";
/// Longest transaction digest accepted.
pub const MAX_DIGEST_LEN: usize = 1024;

/// What an approver signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalStatement {
    /// Withdrawal id.
    pub withdrawal_id: String,
    /// Chain.
    pub chain: String,
    /// Asset.
    pub asset: String,
    /// Source wallet.
    pub source_wallet: String,
    /// The derived address of the wallet it spends from, if not the
    /// wallet's own (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<DerivedSource>,
    /// Canonical destination address.
    pub destination: String,
    /// Amount, base units.
    pub amount: Amount,
    /// Fee cap, native base units.
    pub fee_cap: Amount,
    /// Digest of the unsigned transaction (hex in JSON).
    #[serde(with = "hex_bytes")]
    pub tx_digest: Vec<u8>,
    /// Hash of the policy the decision was made under.
    pub policy_hash: PolicyHash,
    /// Rule that required the approvals.
    pub rule_id: String,
    /// Approvals over this statement are void at and after this time.
    pub expiry: Timestamp,
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}

/// An approver's verdict on a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Counts toward the quorum.
    Approve,
    /// One reject from an authorised approver denies the withdrawal.
    Reject,
    /// Cancels during a time lock (members of the rule's cancel group).
    Cancel,
}

impl Verdict {
    pub(crate) fn byte(self) -> u8 {
        match self {
            Verdict::Approve => 1,
            Verdict::Reject => 2,
            Verdict::Cancel => 3,
        }
    }
}

pub(crate) fn put_str(out: &mut Vec<u8>, name: &str, s: &str) -> Result<()> {
    if s.is_empty() || s.len() > MAX_FIELD_LEN {
        return Err(PolicyError::Statement(format!(
            "{name} must be 1..={MAX_FIELD_LEN} bytes"
        )));
    }
    put_bytes(out, s.as_bytes());
    Ok(())
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Lengths are bounded by the callers (≤ 1024), so u32 always fits.
    out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(b);
}

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub(crate) fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(PolicyError::Statement(format!("truncated in {what}")));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    pub(crate) fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }
    pub(crate) fn bytes(&mut self, what: &str, max: usize) -> Result<&'a [u8]> {
        let len = u32::from_be_bytes(self.array::<4>(what)?);
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > max {
            return Err(PolicyError::Statement(format!(
                "{what} is {len} bytes, the limit is {max}"
            )));
        }
        self.take(len, what)
    }
    /// Reads and checks the magic and version byte of a `what` encoding.
    pub(crate) fn header(&mut self, magic: &[u8], version: u8, what: &str) -> Result<()> {
        self.header_any(magic, &[version], what).map(|_| ())
    }

    /// As [`Self::header`], for an encoding with several versions; returns
    /// the one read.
    pub(crate) fn header_any(&mut self, magic: &[u8], versions: &[u8], what: &str) -> Result<u8> {
        if self.take(magic.len(), "magic")? != magic {
            return Err(PolicyError::Statement(format!("not {what} (bad magic)")));
        }
        let v = self.array::<1>("version")?[0];
        if !versions.contains(&v) {
            return Err(PolicyError::Statement(format!(
                "unsupported version {v} of {what}"
            )));
        }
        Ok(v)
    }

    /// Refuses trailing bytes: one value has exactly one encoding.
    pub(crate) fn finish(&self) -> Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(PolicyError::Statement(format!(
                "{} trailing bytes",
                self.buf.len()
            )))
        }
    }

    pub(crate) fn string(&mut self, what: &str) -> Result<String> {
        let b = self.bytes(what, MAX_FIELD_LEN)?;
        if b.is_empty() {
            return Err(PolicyError::Statement(format!("{what} is empty")));
        }
        String::from_utf8(b.to_vec())
            .map_err(|_| PolicyError::Statement(format!("{what} is not UTF-8")))
    }
}

impl ApprovalStatement {
    /// Builds the statement for a decision that matched a rule. `expiry` is chosen by
    /// the caller, usually `now + decision.approval_expiry`.
    pub fn for_decision(
        decision: &Decision,
        withdrawal: &Withdrawal,
        expiry: Timestamp,
    ) -> Result<Self> {
        let rule_id = decision.rule_id.clone().ok_or_else(|| {
            PolicyError::Statement("the decision matched no rule: nothing to approve".into())
        })?;
        if withdrawal.id != decision.withdrawal.id {
            return Err(PolicyError::Statement(
                "withdrawal and decision are for different ids".into(),
            ));
        }
        let tx_digest =
            hex::decode(&withdrawal.tx_digest).map_err(|e| PolicyError::InvalidWithdrawal {
                field: "tx_digest",
                reason: format!("not hex: {e}"),
            })?;
        let s = ApprovalStatement {
            withdrawal_id: withdrawal.id.clone(),
            chain: decision.withdrawal.chain.clone(),
            asset: decision.withdrawal.asset.clone(),
            source_wallet: decision.withdrawal.wallet.clone(),
            source: withdrawal.source.clone(),
            destination: decision.withdrawal.destination.clone(),
            amount: decision.withdrawal.amount,
            fee_cap: withdrawal.fee_cap,
            tx_digest,
            policy_hash: decision.policy_hash,
            rule_id,
            expiry,
        };
        s.encode()?;
        Ok(s)
    }

    /// The canonical bytes (see the module documentation).
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(STATEMENT_MAGIC);
        out.push(match self.source {
            None => STATEMENT_VERSION,
            Some(_) => STATEMENT_VERSION_DERIVED,
        });
        put_str(&mut out, "withdrawal_id", &self.withdrawal_id)?;
        put_str(&mut out, "chain", &self.chain)?;
        put_str(&mut out, "asset", &self.asset)?;
        put_str(&mut out, "source_wallet", &self.source_wallet)?;
        if let Some(source) = &self.source {
            put_str(&mut out, "source_path", &source.path)?;
            put_str(&mut out, "source_address", &source.address)?;
        }
        put_str(&mut out, "destination", &self.destination)?;
        out.extend_from_slice(&self.amount.0.to_be_bytes());
        out.extend_from_slice(&self.fee_cap.0.to_be_bytes());
        if self.tx_digest.len() > MAX_DIGEST_LEN {
            return Err(PolicyError::Statement(format!(
                "tx_digest is longer than {MAX_DIGEST_LEN} bytes"
            )));
        }
        put_bytes(&mut out, &self.tx_digest);
        out.extend_from_slice(&self.policy_hash.0);
        put_str(&mut out, "rule_id", &self.rule_id)?;
        out.extend_from_slice(&self.expiry.0.to_be_bytes());
        Ok(out)
    }

    /// Parses canonical bytes; refuses other versions and trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let derived = r.header_any(
            STATEMENT_MAGIC,
            &[STATEMENT_VERSION, STATEMENT_VERSION_DERIVED],
            "an approval statement",
        )? == STATEMENT_VERSION_DERIVED;
        let s = ApprovalStatement {
            withdrawal_id: r.string("withdrawal_id")?,
            chain: r.string("chain")?,
            asset: r.string("asset")?,
            source_wallet: r.string("source_wallet")?,
            source: if derived {
                Some(DerivedSource {
                    path: r.string("source_path")?,
                    address: r.string("source_address")?,
                })
            } else {
                None
            },
            destination: r.string("destination")?,
            amount: Amount(u128::from_be_bytes(r.array("amount")?)),
            fee_cap: Amount(u128::from_be_bytes(r.array("fee_cap")?)),
            tx_digest: r.bytes("tx_digest", MAX_DIGEST_LEN)?.to_vec(),
            policy_hash: PolicyHash(r.array("policy_hash")?),
            rule_id: r.string("rule_id")?,
            expiry: Timestamp(i64::from_be_bytes(r.array("expiry")?)),
        };
        r.finish()?;
        Ok(s)
    }

    /// The exact bytes an approver signs for `verdict`.
    pub fn signing_message(&self, verdict: Verdict) -> Result<Vec<u8>> {
        let body = self.encode()?;
        let mut m = Vec::with_capacity(APPROVAL_SIGN_DOMAIN.len() + 1 + body.len());
        m.extend_from_slice(APPROVAL_SIGN_DOMAIN);
        m.push(verdict.byte());
        m.extend_from_slice(&body);
        Ok(m)
    }
}
