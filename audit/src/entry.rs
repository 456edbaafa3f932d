//! Typed, versioned, canonical log entries.
//!
//! # Byte format (version 1)
//!
//! An entry is the Merkle leaf data; its leaf hash is
//! `SHA-256(0x00 || entry bytes)`. All integers are big-endian, fixed width.
//!
//! ```text
//! entry     = format:u8 (=1) kind:u16 kind_version:u8 (=1) index:u64 timestamp_ms:u64 body
//! str       = len:u32 UTF-8 bytes          (len <= 65536)
//! bytes     = len:u32 bytes                (len <= 65536)
//! hash32    = 32 bytes
//! list<T>   = count:u32 T*                 (count <= 4096)
//! option<T> = 0x00 | 0x01 T
//! amount    = str of decimal digits, no sign, no leading zero except "0"
//! enum      = u8 tag (values listed on each type)
//! ```
//!
//! `index` is the entry's own position in the log and `timestamp_ms` the
//! coordinator's clock (Unix milliseconds) when the event was appended. Bodies
//! are the fields of each [`EntryBody`] variant in declaration order; the
//! variant's `kind` tag is given on each variant. Decoding is strict: unknown
//! format, kind or kind version, invalid UTF-8, out-of-range tags, booleans
//! other than 0/1, oversize fields and trailing bytes are all rejected, so
//! every accepted encoding is the unique encoding of its value.
//!
//! A new field or meaning is a new `kind_version` for that kind; old versions
//! stay decodable so old logs still verify.

use crate::AuditError;
use crate::hash::Hash;
pub use crate::status::WithdrawalStatus;

/// Version of the entry envelope.
pub const FORMAT_VERSION: u8 = 1;
const KIND_VERSION: u8 = 1;
const MAX_FIELD: usize = 65536;
const MAX_LIST: usize = 4096;

/// A decoded log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Position in the log.
    pub index: u64,
    /// Coordinator time of the append, Unix milliseconds.
    pub timestamp_ms: u64,
    /// What happened.
    pub body: EntryBody,
}

/// One admin's signature over a change (policy bundle, address book, membership).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminSignature {
    /// Admin identifier.
    pub admin_id: String,
    /// Signature bytes, in the format the policy crate defines.
    pub signature: Vec<u8>,
}

/// Address-book change. Tags: `Added` = 1, `Removed` = 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressBookAction {
    /// Address added (subject to its cooling period).
    Added,
    /// Address removed.
    Removed,
}

/// Policy outcome. Tags: `Allow` = 1, `RequireApprovals` = 2 (followed by
/// `quorum:u16`), `Deny` = 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecisionOutcome {
    /// Allowed without approvals.
    Allow,
    /// Allowed once `quorum` distinct approvers approve (and nobody rejects).
    RequireApprovals {
        /// Distinct approvals required.
        quorum: u16,
    },
    /// Denied.
    Deny,
}

/// Approver verdict. Tags: `Approve` = 1, `Reject` = 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Approves the statement.
    Approve,
    /// Rejects it (one explicit reject denies the withdrawal).
    Reject,
}

/// Cluster membership change. Tags: `Joined` = 1, `Left` = 2, `KeyRotated` = 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MembershipAction {
    /// A node joined.
    Joined,
    /// A node left or was removed.
    Left,
    /// A node's identity key changed.
    KeyRotated,
}

/// The event an entry records.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EntryBody {
    /// kind 1: a wallet key was generated.
    KeyCreated {
        /// Key identifier.
        key_id: String,
        /// Signature scheme and curve, e.g. `ecdsa-secp256k1`.
        scheme: String,
        /// Signer nodes holding shares.
        participants: Vec<String>,
        /// Shares needed to sign.
        threshold: u16,
        /// The group public key.
        public_key: Vec<u8>,
    },
    /// kind 2: a policy bundle became active.
    PolicyActivated {
        /// Hash of the canonical policy bundle.
        policy_hash: Hash,
        /// Bundle version number.
        policy_version: u64,
        /// Admin signatures over the bundle.
        admin_signatures: Vec<AdminSignature>,
    },
    /// kind 3: the address book changed.
    AddressBookChanged {
        /// Chain identifier.
        chain: String,
        /// Address.
        address: String,
        /// Human label.
        label: String,
        /// Added or removed.
        action: AddressBookAction,
        /// When the change takes effect (end of the cooling period), Unix ms.
        effective_at_ms: u64,
        /// Admin signatures over the change.
        admin_signatures: Vec<AdminSignature>,
    },
    /// kind 4: a withdrawal was requested.
    WithdrawalRequested {
        /// Withdrawal identifier.
        withdrawal_id: String,
        /// Key that would sign.
        key_id: String,
        /// Chain identifier.
        chain: String,
        /// Asset identifier.
        asset: String,
        /// Destination address.
        destination: String,
        /// Amount in base units, canonical decimal.
        amount: String,
        /// Digest of the unsigned transaction, when already built.
        tx_digest: Option<Hash>,
        /// Requesting client.
        requested_by: String,
    },
    /// kind 5: a risk score was attached.
    RiskScored {
        /// Withdrawal identifier.
        withdrawal_id: String,
        /// Scoring provider.
        provider: String,
        /// Score.
        score: u32,
        /// Hash of the provider's detailed answer.
        details_hash: Hash,
    },
    /// kind 6: the policy engine decided.
    PolicyDecision {
        /// Withdrawal identifier.
        withdrawal_id: String,
        /// Policy bundle the decision was made under.
        policy_hash: Hash,
        /// Rule that matched.
        rule_id: String,
        /// Outcome.
        outcome: DecisionOutcome,
        /// Hash of the engine's explanation.
        explanation_hash: Hash,
    },
    /// kind 7: an approver approved or rejected.
    Approval {
        /// Withdrawal identifier.
        withdrawal_id: String,
        /// Approver identifier.
        approver_id: String,
        /// Approve or reject.
        verdict: Verdict,
        /// The canonical statement signed.
        statement: Vec<u8>,
        /// The approver's signature over the statement.
        signature: Vec<u8>,
    },
    /// kind 8: a withdrawal was cancelled.
    Cancelled {
        /// Withdrawal identifier.
        withdrawal_id: String,
        /// Who cancelled.
        cancelled_by: String,
        /// Why.
        reason: String,
    },
    /// kind 9: any other lifecycle transition.
    StatusChanged {
        /// Withdrawal identifier.
        withdrawal_id: String,
        /// New status.
        status: WithdrawalStatus,
        /// Free-text reason.
        reason: String,
    },
    /// kind 10: a signing session started.
    SigningSession {
        /// Withdrawal identifier.
        withdrawal_id: String,
        /// Key used.
        key_id: String,
        /// MPC execution id.
        execution_id: Vec<u8>,
        /// Signer nodes taking part.
        participants: Vec<String>,
        /// Presignature consumed, if any.
        presignature_id: Option<String>,
        /// Digest to sign.
        message_digest: Hash,
    },
    /// kind 11: a signature was produced.
    SignatureProduced {
        /// Withdrawal identifier.
        withdrawal_id: String,
        /// Key used.
        key_id: String,
        /// MPC execution id.
        execution_id: Vec<u8>,
        /// Digest signed.
        message_digest: Hash,
        /// The signature.
        signature: Vec<u8>,
    },
    /// kind 12: a transaction was broadcast.
    TransactionBroadcast {
        /// Withdrawal identifier.
        withdrawal_id: String,
        /// Chain identifier.
        chain: String,
        /// Transaction id.
        txid: String,
    },
    /// kind 13: a transaction was confirmed.
    Confirmed {
        /// Withdrawal identifier.
        withdrawal_id: String,
        /// Chain identifier.
        chain: String,
        /// Transaction id.
        txid: String,
        /// Block height of inclusion.
        block_height: u64,
        /// Confirmations observed.
        confirmations: u32,
    },
    /// kind 14: cluster membership changed.
    MembershipChanged {
        /// Node identifier.
        node_id: String,
        /// What changed.
        action: MembershipAction,
        /// The node's (new) public key.
        public_key: Vec<u8>,
        /// Admin signatures over the change.
        admin_signatures: Vec<AdminSignature>,
    },
    /// A key was locked for signing (repeated unexplained signing failures)
    /// or unlocked by an admin.
    KeyLockChanged {
        /// Key identifier.
        key_id: String,
        /// Locked (`true`) or unlocked.
        locked: bool,
        /// Who: `coordinator` for a lock, the admin client for an unlock.
        actor: String,
        /// Why (the last failure, or the admin's reason).
        reason: String,
    },
    /// kind 16: an approver approved or rejected the replacement of a stuck
    /// transaction (a rule with `fee_bumps = "reapprove"`).
    FeeBumpApproval {
        /// Withdrawal identifier.
        withdrawal_id: String,
        /// Approver identifier.
        approver_id: String,
        /// Approve or reject.
        verdict: Verdict,
        /// The canonical fee-bump statement signed.
        statement: Vec<u8>,
        /// The approver's signature over it.
        signature: Vec<u8>,
    },
    /// kind 17: the unsigned chain transaction a signing session is about to
    /// sign (its signing digest is the session's digest), so an auditor can
    /// decode what was signed and compare it with what was approved.
    TransactionPrepared {
        /// Withdrawal identifier.
        withdrawal_id: String,
        /// Chain.
        chain: String,
        /// The unsigned transaction, in the chain's format.
        unsigned_tx: Vec<u8>,
    },
}

impl EntryBody {
    /// The `kind` tag.
    pub fn kind(&self) -> u16 {
        match self {
            Self::KeyCreated { .. } => 1,
            Self::PolicyActivated { .. } => 2,
            Self::AddressBookChanged { .. } => 3,
            Self::WithdrawalRequested { .. } => 4,
            Self::RiskScored { .. } => 5,
            Self::PolicyDecision { .. } => 6,
            Self::Approval { .. } => 7,
            Self::Cancelled { .. } => 8,
            Self::StatusChanged { .. } => 9,
            Self::SigningSession { .. } => 10,
            Self::SignatureProduced { .. } => 11,
            Self::TransactionBroadcast { .. } => 12,
            Self::Confirmed { .. } => 13,
            Self::MembershipChanged { .. } => 14,
            Self::KeyLockChanged { .. } => 15,
            Self::FeeBumpApproval { .. } => 16,
            Self::TransactionPrepared { .. } => 17,
        }
    }

    /// A short name for reports.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::KeyCreated { .. } => "key_created",
            Self::PolicyActivated { .. } => "policy_activated",
            Self::AddressBookChanged { .. } => "address_book_changed",
            Self::WithdrawalRequested { .. } => "withdrawal_requested",
            Self::RiskScored { .. } => "risk_scored",
            Self::PolicyDecision { .. } => "policy_decision",
            Self::Approval { .. } => "approval",
            Self::Cancelled { .. } => "cancelled",
            Self::StatusChanged { .. } => "status_changed",
            Self::SigningSession { .. } => "signing_session",
            Self::SignatureProduced { .. } => "signature_produced",
            Self::TransactionBroadcast { .. } => "transaction_broadcast",
            Self::Confirmed { .. } => "confirmed",
            Self::MembershipChanged { .. } => "membership_changed",
            Self::KeyLockChanged { .. } => "key_lock_changed",
            Self::FeeBumpApproval { .. } => "fee_bump_approval",
            Self::TransactionPrepared { .. } => "transaction_prepared",
        }
    }

    /// The withdrawal this entry concerns, if any.
    pub fn withdrawal_id(&self) -> Option<&str> {
        match self {
            Self::WithdrawalRequested { withdrawal_id, .. }
            | Self::RiskScored { withdrawal_id, .. }
            | Self::PolicyDecision { withdrawal_id, .. }
            | Self::Approval { withdrawal_id, .. }
            | Self::FeeBumpApproval { withdrawal_id, .. }
            | Self::TransactionPrepared { withdrawal_id, .. }
            | Self::Cancelled { withdrawal_id, .. }
            | Self::StatusChanged { withdrawal_id, .. }
            | Self::SigningSession { withdrawal_id, .. }
            | Self::SignatureProduced { withdrawal_id, .. }
            | Self::TransactionBroadcast { withdrawal_id, .. }
            | Self::Confirmed { withdrawal_id, .. } => Some(withdrawal_id),
            _ => None,
        }
    }
}

impl Entry {
    /// The canonical encoding. Fails only on values the format cannot hold
    /// (oversize fields, a non-canonical amount).
    pub fn encode(&self) -> Result<Vec<u8>, AuditError> {
        let mut w = Writer(Vec::with_capacity(128));
        w.u8(FORMAT_VERSION);
        w.u16(self.body.kind());
        w.u8(KIND_VERSION);
        w.u64(self.index);
        w.u64(self.timestamp_ms);
        match &self.body {
            EntryBody::KeyCreated {
                key_id,
                scheme,
                participants,
                threshold,
                public_key,
            } => {
                w.str(key_id)?;
                w.str(scheme)?;
                w.list(participants, |w, p| w.str(p))?;
                w.u16(*threshold);
                w.bytes(public_key)?;
            }
            EntryBody::PolicyActivated {
                policy_hash,
                policy_version,
                admin_signatures,
            } => {
                w.hash(policy_hash);
                w.u64(*policy_version);
                w.admin_sigs(admin_signatures)?;
            }
            EntryBody::AddressBookChanged {
                chain,
                address,
                label,
                action,
                effective_at_ms,
                admin_signatures,
            } => {
                w.str(chain)?;
                w.str(address)?;
                w.str(label)?;
                w.u8(match action {
                    AddressBookAction::Added => 1,
                    AddressBookAction::Removed => 2,
                });
                w.u64(*effective_at_ms);
                w.admin_sigs(admin_signatures)?;
            }
            EntryBody::WithdrawalRequested {
                withdrawal_id,
                key_id,
                chain,
                asset,
                destination,
                amount,
                tx_digest,
                requested_by,
            } => {
                w.str(withdrawal_id)?;
                w.str(key_id)?;
                w.str(chain)?;
                w.str(asset)?;
                w.str(destination)?;
                check_amount(amount)?;
                w.str(amount)?;
                w.opt(tx_digest.as_ref(), |w, h| {
                    w.hash(h);
                    Ok(())
                })?;
                w.str(requested_by)?;
            }
            EntryBody::RiskScored {
                withdrawal_id,
                provider,
                score,
                details_hash,
            } => {
                w.str(withdrawal_id)?;
                w.str(provider)?;
                w.u32(*score);
                w.hash(details_hash);
            }
            EntryBody::PolicyDecision {
                withdrawal_id,
                policy_hash,
                rule_id,
                outcome,
                explanation_hash,
            } => {
                w.str(withdrawal_id)?;
                w.hash(policy_hash);
                w.str(rule_id)?;
                match outcome {
                    DecisionOutcome::Allow => w.u8(1),
                    DecisionOutcome::RequireApprovals { quorum } => {
                        w.u8(2);
                        w.u16(*quorum);
                    }
                    DecisionOutcome::Deny => w.u8(3),
                }
                w.hash(explanation_hash);
            }
            EntryBody::Approval {
                withdrawal_id,
                approver_id,
                verdict,
                statement,
                signature,
            }
            | EntryBody::FeeBumpApproval {
                withdrawal_id,
                approver_id,
                verdict,
                statement,
                signature,
            } => {
                w.str(withdrawal_id)?;
                w.str(approver_id)?;
                w.u8(match verdict {
                    Verdict::Approve => 1,
                    Verdict::Reject => 2,
                });
                w.bytes(statement)?;
                w.bytes(signature)?;
            }
            EntryBody::Cancelled {
                withdrawal_id,
                cancelled_by,
                reason,
            } => {
                w.str(withdrawal_id)?;
                w.str(cancelled_by)?;
                w.str(reason)?;
            }
            EntryBody::StatusChanged {
                withdrawal_id,
                status,
                reason,
            } => {
                w.str(withdrawal_id)?;
                w.u8(status.tag());
                w.str(reason)?;
            }
            EntryBody::SigningSession {
                withdrawal_id,
                key_id,
                execution_id,
                participants,
                presignature_id,
                message_digest,
            } => {
                w.str(withdrawal_id)?;
                w.str(key_id)?;
                w.bytes(execution_id)?;
                w.list(participants, |w, p| w.str(p))?;
                w.opt(presignature_id.as_ref(), |w, p| w.str(p))?;
                w.hash(message_digest);
            }
            EntryBody::SignatureProduced {
                withdrawal_id,
                key_id,
                execution_id,
                message_digest,
                signature,
            } => {
                w.str(withdrawal_id)?;
                w.str(key_id)?;
                w.bytes(execution_id)?;
                w.hash(message_digest);
                w.bytes(signature)?;
            }
            EntryBody::TransactionBroadcast {
                withdrawal_id,
                chain,
                txid,
            } => {
                w.str(withdrawal_id)?;
                w.str(chain)?;
                w.str(txid)?;
            }
            EntryBody::Confirmed {
                withdrawal_id,
                chain,
                txid,
                block_height,
                confirmations,
            } => {
                w.str(withdrawal_id)?;
                w.str(chain)?;
                w.str(txid)?;
                w.u64(*block_height);
                w.u32(*confirmations);
            }
            EntryBody::MembershipChanged {
                node_id,
                action,
                public_key,
                admin_signatures,
            } => {
                w.str(node_id)?;
                w.u8(match action {
                    MembershipAction::Joined => 1,
                    MembershipAction::Left => 2,
                    MembershipAction::KeyRotated => 3,
                });
                w.bytes(public_key)?;
                w.admin_sigs(admin_signatures)?;
            }
            EntryBody::KeyLockChanged {
                key_id,
                locked,
                actor,
                reason,
            } => {
                w.str(key_id)?;
                w.u8(u8::from(*locked));
                w.str(actor)?;
                w.str(reason)?;
            }
            EntryBody::TransactionPrepared {
                withdrawal_id,
                chain,
                unsigned_tx,
            } => {
                w.str(withdrawal_id)?;
                w.str(chain)?;
                w.bytes(unsigned_tx)?;
            }
        }
        Ok(w.0)
    }

    /// Decodes a canonical encoding, rejecting anything non-canonical.
    pub fn decode(bytes: &[u8]) -> Result<Self, AuditError> {
        let mut r = Reader(bytes);
        let format = r.u8()?;
        if format != FORMAT_VERSION {
            return Err(malformed(format!("unknown entry format {format}")));
        }
        let kind = r.u16()?;
        let kind_version = r.u8()?;
        if kind_version != KIND_VERSION {
            return Err(malformed(format!(
                "unknown version {kind_version} of entry kind {kind}"
            )));
        }
        let index = r.u64()?;
        let timestamp_ms = r.u64()?;
        let body = match kind {
            1 => EntryBody::KeyCreated {
                key_id: r.str()?,
                scheme: r.str()?,
                participants: r.list(|r| r.str())?,
                threshold: r.u16()?,
                public_key: r.bytes()?,
            },
            2 => EntryBody::PolicyActivated {
                policy_hash: r.hash()?,
                policy_version: r.u64()?,
                admin_signatures: r.admin_sigs()?,
            },
            3 => EntryBody::AddressBookChanged {
                chain: r.str()?,
                address: r.str()?,
                label: r.str()?,
                action: match r.u8()? {
                    1 => AddressBookAction::Added,
                    2 => AddressBookAction::Removed,
                    t => return Err(malformed(format!("unknown address-book action {t}"))),
                },
                effective_at_ms: r.u64()?,
                admin_signatures: r.admin_sigs()?,
            },
            4 => EntryBody::WithdrawalRequested {
                withdrawal_id: r.str()?,
                key_id: r.str()?,
                chain: r.str()?,
                asset: r.str()?,
                destination: r.str()?,
                amount: {
                    let a = r.str()?;
                    check_amount(&a)?;
                    a
                },
                tx_digest: r.opt(|r| r.hash())?,
                requested_by: r.str()?,
            },
            5 => EntryBody::RiskScored {
                withdrawal_id: r.str()?,
                provider: r.str()?,
                score: r.u32()?,
                details_hash: r.hash()?,
            },
            6 => EntryBody::PolicyDecision {
                withdrawal_id: r.str()?,
                policy_hash: r.hash()?,
                rule_id: r.str()?,
                outcome: match r.u8()? {
                    1 => DecisionOutcome::Allow,
                    2 => DecisionOutcome::RequireApprovals { quorum: r.u16()? },
                    3 => DecisionOutcome::Deny,
                    t => return Err(malformed(format!("unknown decision outcome {t}"))),
                },
                explanation_hash: r.hash()?,
            },
            7 => {
                let (withdrawal_id, approver_id, verdict, statement, signature) =
                    r.signed_verdict()?;
                EntryBody::Approval {
                    withdrawal_id,
                    approver_id,
                    verdict,
                    statement,
                    signature,
                }
            }
            16 => {
                let (withdrawal_id, approver_id, verdict, statement, signature) =
                    r.signed_verdict()?;
                EntryBody::FeeBumpApproval {
                    withdrawal_id,
                    approver_id,
                    verdict,
                    statement,
                    signature,
                }
            }
            8 => EntryBody::Cancelled {
                withdrawal_id: r.str()?,
                cancelled_by: r.str()?,
                reason: r.str()?,
            },
            9 => EntryBody::StatusChanged {
                withdrawal_id: r.str()?,
                status: {
                    let t = r.u8()?;
                    WithdrawalStatus::from_tag(t)
                        .ok_or_else(|| malformed(format!("unknown withdrawal status {t}")))?
                },
                reason: r.str()?,
            },
            10 => EntryBody::SigningSession {
                withdrawal_id: r.str()?,
                key_id: r.str()?,
                execution_id: r.bytes()?,
                participants: r.list(|r| r.str())?,
                presignature_id: r.opt(|r| r.str())?,
                message_digest: r.hash()?,
            },
            11 => EntryBody::SignatureProduced {
                withdrawal_id: r.str()?,
                key_id: r.str()?,
                execution_id: r.bytes()?,
                message_digest: r.hash()?,
                signature: r.bytes()?,
            },
            12 => EntryBody::TransactionBroadcast {
                withdrawal_id: r.str()?,
                chain: r.str()?,
                txid: r.str()?,
            },
            13 => EntryBody::Confirmed {
                withdrawal_id: r.str()?,
                chain: r.str()?,
                txid: r.str()?,
                block_height: r.u64()?,
                confirmations: r.u32()?,
            },
            14 => EntryBody::MembershipChanged {
                node_id: r.str()?,
                action: match r.u8()? {
                    1 => MembershipAction::Joined,
                    2 => MembershipAction::Left,
                    3 => MembershipAction::KeyRotated,
                    t => return Err(malformed(format!("unknown membership action {t}"))),
                },
                public_key: r.bytes()?,
                admin_signatures: r.admin_sigs()?,
            },
            15 => EntryBody::KeyLockChanged {
                key_id: r.str()?,
                locked: match r.u8()? {
                    0 => false,
                    1 => true,
                    t => return Err(malformed(format!("key lock flag {t}"))),
                },
                actor: r.str()?,
                reason: r.str()?,
            },
            17 => EntryBody::TransactionPrepared {
                withdrawal_id: r.str()?,
                chain: r.str()?,
                unsigned_tx: r.bytes()?,
            },
            k => return Err(malformed(format!("unknown entry kind {k}"))),
        };
        if !r.0.is_empty() {
            return Err(malformed(format!("{} trailing bytes", r.0.len())));
        }
        Ok(Entry {
            index,
            timestamp_ms,
            body,
        })
    }
}

fn malformed(msg: String) -> AuditError {
    AuditError::MalformedEntry(msg)
}

fn check_amount(a: &str) -> Result<(), AuditError> {
    let digits = !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit());
    if !digits || (a.len() > 1 && a.starts_with('0')) {
        return Err(malformed(format!(
            "amount {a:?} is not a canonical decimal integer"
        )));
    }
    Ok(())
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn hash(&mut self, h: &Hash) {
        self.0.extend_from_slice(h);
    }
    fn bytes(&mut self, b: &[u8]) -> Result<(), AuditError> {
        if b.len() > MAX_FIELD {
            return Err(malformed(format!(
                "field of {} bytes exceeds {MAX_FIELD}",
                b.len()
            )));
        }
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
        Ok(())
    }
    fn str(&mut self, s: &str) -> Result<(), AuditError> {
        self.bytes(s.as_bytes())
    }
    fn list<T>(
        &mut self,
        items: &[T],
        f: impl Fn(&mut Self, &T) -> Result<(), AuditError>,
    ) -> Result<(), AuditError> {
        if items.len() > MAX_LIST {
            return Err(malformed(format!(
                "list of {} items exceeds {MAX_LIST}",
                items.len()
            )));
        }
        self.u32(items.len() as u32);
        items.iter().try_for_each(|i| f(self, i))
    }
    fn opt<T>(
        &mut self,
        v: Option<&T>,
        f: impl Fn(&mut Self, &T) -> Result<(), AuditError>,
    ) -> Result<(), AuditError> {
        match v {
            None => {
                self.u8(0);
                Ok(())
            }
            Some(v) => {
                self.u8(1);
                f(self, v)
            }
        }
    }
    fn admin_sigs(&mut self, sigs: &[AdminSignature]) -> Result<(), AuditError> {
        self.list(sigs, |w, s| {
            w.str(&s.admin_id)?;
            w.bytes(&s.signature)
        })
    }
}

struct Reader<'a>(&'a [u8]);

/// An approval-like entry's fields: withdrawal, approver, verdict,
/// statement, signature.
type SignedVerdict = (String, String, Verdict, Vec<u8>, Vec<u8>);

impl Reader<'_> {
    /// The fields shared by approvals of withdrawals and of fee bumps.
    fn signed_verdict(&mut self) -> Result<SignedVerdict, AuditError> {
        Ok((
            self.str()?,
            self.str()?,
            match self.u8()? {
                1 => Verdict::Approve,
                2 => Verdict::Reject,
                t => return Err(malformed(format!("unknown verdict {t}"))),
            },
            self.bytes()?,
            self.bytes()?,
        ))
    }

    fn take(&mut self, n: usize) -> Result<&[u8], AuditError> {
        if self.0.len() < n {
            return Err(malformed(format!(
                "truncated: need {n} bytes, {} left",
                self.0.len()
            )));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], AuditError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, AuditError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, AuditError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, AuditError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, AuditError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn hash(&mut self) -> Result<Hash, AuditError> {
        self.array()
    }
    fn bytes(&mut self) -> Result<Vec<u8>, AuditError> {
        let n = self.u32()? as usize;
        if n > MAX_FIELD {
            return Err(malformed(format!("field of {n} bytes exceeds {MAX_FIELD}")));
        }
        Ok(self.take(n)?.to_vec())
    }
    fn str(&mut self) -> Result<String, AuditError> {
        String::from_utf8(self.bytes()?)
            .map_err(|_| malformed("invalid UTF-8 in string field".into()))
    }
    fn list<T>(
        &mut self,
        f: impl Fn(&mut Self) -> Result<T, AuditError>,
    ) -> Result<Vec<T>, AuditError> {
        let n = self.u32()? as usize;
        if n > MAX_LIST {
            return Err(malformed(format!("list of {n} items exceeds {MAX_LIST}")));
        }
        (0..n).map(|_| f(self)).collect()
    }
    fn opt<T>(
        &mut self,
        f: impl Fn(&mut Self) -> Result<T, AuditError>,
    ) -> Result<Option<T>, AuditError> {
        match self.u8()? {
            0 => Ok(None),
            1 => f(self).map(Some),
            t => Err(malformed(format!("option tag {t} is neither 0 nor 1"))),
        }
    }
    fn admin_sigs(&mut self) -> Result<Vec<AdminSignature>, AuditError> {
        self.list(|r| {
            Ok(AdminSignature {
                admin_id: r.str()?,
                signature: r.bytes()?,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn key_lock_entries_round_trip_and_reject_a_bad_flag() {
        let entry = |body: EntryBody| Entry {
            index: 7,
            timestamp_ms: 1_700_000_000_000,
            body,
        };
        for locked in [true, false] {
            let e = entry(EntryBody::KeyLockChanged {
                key_id: "w-1".into(),
                locked,
                actor: "coordinator".into(),
                reason: "3 unexplained signing failures".into(),
            });
            let bytes = e.encode().unwrap();
            assert_eq!(Entry::decode(&bytes).unwrap(), e);
            assert_eq!(e.body.kind(), 15);
            assert_eq!(e.body.withdrawal_id(), None);
        }
        let mut bytes = entry(EntryBody::KeyLockChanged {
            key_id: "k".into(),
            locked: true,
            actor: "a".into(),
            reason: "r".into(),
        })
        .encode()
        .unwrap();
        // The flag follows the key id "k".
        let at = bytes.iter().position(|b| *b == b'k').unwrap() + 1;
        assert_eq!(bytes[at], 1);
        bytes[at] = 2;
        assert!(Entry::decode(&bytes).is_err());
    }

    #[test]
    fn fee_bump_approvals_round_trip_under_their_own_kind() {
        let e = Entry {
            index: 9,
            timestamp_ms: 1_700_000_000_000,
            body: EntryBody::FeeBumpApproval {
                withdrawal_id: "wd-1".into(),
                approver_id: "alice".into(),
                verdict: Verdict::Approve,
                statement: b"custos.fee-bump-statement\x01".to_vec(),
                signature: vec![7; 64],
            },
        };
        let bytes = e.encode().unwrap();
        assert_eq!(Entry::decode(&bytes).unwrap(), e);
        assert_eq!(e.body.kind(), 16);
        assert_eq!(e.body.kind_name(), "fee_bump_approval");
        assert_eq!(e.body.withdrawal_id(), Some("wd-1"));
    }

    #[test]
    fn prepared_transactions_round_trip() {
        let e = Entry {
            index: 3,
            timestamp_ms: 1_700_000_000_000,
            body: EntryBody::TransactionPrepared {
                withdrawal_id: "wd-1".into(),
                chain: "anvil".into(),
                unsigned_tx: vec![0x02, 0xf8, 0x6f],
            },
        };
        let bytes = e.encode().unwrap();
        assert_eq!(Entry::decode(&bytes).unwrap(), e);
        assert_eq!(e.body.kind(), 17);
        assert_eq!(e.body.withdrawal_id(), Some("wd-1"));
    }
}
