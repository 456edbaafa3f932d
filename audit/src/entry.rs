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
//! bool      = 0x00 | 0x01
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
//! One table defines the format: the `entry_bodies!` invocation below lists
//! each kind with its tag, name and fields, and generates the enum, the
//! encoder and the decoder from it, each field through the one `Field`
//! implementation of its type (or the codec named after `as`). The encoder
//! and the decoder therefore cannot disagree on a field's order or form;
//! `tests/entry_vectors.rs` pins every kind against independently computed
//! bytes.
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

/// Defines a field-less enum whose values are `u8` tags in entries, and its
/// [`Field`] encoding (an unknown tag is refused naming `$what`).
macro_rules! tagged_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $tag:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl Field for $name {
            fn put(&self, w: &mut Writer) -> Result<(), AuditError> {
                w.u8(match self {
                    $( Self::$variant => $tag, )+
                });
                Ok(())
            }
            fn get(r: &mut Reader<'_>) -> Result<Self, AuditError> {
                match r.u8()? {
                    $( $tag => Ok(Self::$variant), )+
                    t => Err(malformed(format!(concat!("unknown ", $what, " {}"), t))),
                }
            }
        }
    };
}

tagged_enum! {
    /// Address-book change. Tags: `Added` = 1, `Removed` = 2.
    pub enum AddressBookAction ("address-book action") {
        /// Address added (subject to its cooling period).
        Added = 1,
        /// Address removed.
        Removed = 2,
    }
}

tagged_enum! {
    /// Approver verdict. Tags: `Approve` = 1, `Reject` = 2.
    pub enum Verdict ("verdict") {
        /// Approves the statement.
        Approve = 1,
        /// Rejects it (one explicit reject denies the withdrawal).
        Reject = 2,
    }
}

tagged_enum! {
    /// A change of a key's shares (FROST). Tags: `Refresh` = 1, `Repair` = 2.
    pub enum ShareChange ("share change") {
        /// Share refresh without a dealer: every share new, same key.
        Refresh = 1,
        /// A lost share rebuilt by other holders.
        Repair = 2,
    }
}

tagged_enum! {
    /// Cluster membership change. Tags: `Joined` = 1, `Left` = 2, `KeyRotated` = 3.
    pub enum MembershipAction ("membership action") {
        /// A node joined.
        Joined = 1,
        /// A node left or was removed.
        Left = 2,
        /// A node's identity key changed.
        KeyRotated = 3,
    }
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

/// Defines [`EntryBody`] from one table, and with it `kind`, `kind_name`
/// and the body's encoder and decoder: each field is written and read, in
/// declaration order, by the [`Codec`] after its type (`as C`), or by its
/// type's own [`Field`] encoding.
macro_rules! entry_bodies {
    (
        $(
            $(#[$vmeta:meta])*
            $variant:ident = $kind:literal, $kind_name:literal {
                $( $(#[$fmeta:meta])* $field:ident : $ty:ty $(as $codec:ty)? ),* $(,)?
            }
        ),+ $(,)?
    ) => {
        /// The event an entry records.
        #[derive(Clone, Debug, PartialEq, Eq)]
        #[non_exhaustive]
        pub enum EntryBody {
            $(
                $(#[$vmeta])*
                $variant {
                    $( $(#[$fmeta])* $field: $ty, )*
                },
            )+
        }

        impl EntryBody {
            /// The `kind` tag.
            pub fn kind(&self) -> u16 {
                match self {
                    $( Self::$variant { .. } => $kind, )+
                }
            }

            /// A short name for reports.
            pub fn kind_name(&self) -> &'static str {
                match self {
                    $( Self::$variant { .. } => $kind_name, )+
                }
            }

            /// Writes the body's fields in declaration order.
            fn put(&self, w: &mut Writer) -> Result<(), AuditError> {
                match self {
                    $(
                        Self::$variant { $($field),* } => {
                            $( <codec!($($codec)?) as Codec<$ty>>::put($field, w)?; )*
                        }
                    )+
                }
                Ok(())
            }

            /// Reads the fields of kind `kind` in declaration order.
            fn get(kind: u16, r: &mut Reader<'_>) -> Result<Self, AuditError> {
                Ok(match kind {
                    $(
                        $kind => Self::$variant {
                            $( $field: <codec!($($codec)?) as Codec<$ty>>::get(r)?, )*
                        },
                    )+
                    k => return Err(malformed(format!("unknown entry kind {k}"))),
                })
            }
        }
    };
}

/// The codec of a field: the one named, else [`Plain`] (the type's own).
macro_rules! codec {
    () => {
        Plain
    };
    ($codec:ty) => {
        $codec
    };
}

entry_bodies! {
    /// kind 1: a wallet key was generated.
    KeyCreated = 1, "key_created" {
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
    PolicyActivated = 2, "policy_activated" {
        /// Hash of the canonical policy bundle.
        policy_hash: Hash,
        /// Bundle version number.
        policy_version: u64,
        /// Admin signatures over the bundle.
        admin_signatures: Vec<AdminSignature>,
    },
    /// kind 3: the address book changed.
    AddressBookChanged = 3, "address_book_changed" {
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
    WithdrawalRequested = 4, "withdrawal_requested" {
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
        amount: String as CanonicalAmount,
        /// Digest of the unsigned transaction, when already built.
        tx_digest: Option<Hash>,
        /// Requesting client.
        requested_by: String,
    },
    /// kind 5: a risk score was attached.
    RiskScored = 5, "risk_scored" {
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
    PolicyDecision = 6, "policy_decision" {
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
    Approval = 7, "approval" {
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
    Cancelled = 8, "cancelled" {
        /// Withdrawal identifier.
        withdrawal_id: String,
        /// Who cancelled.
        cancelled_by: String,
        /// Why.
        reason: String,
    },
    /// kind 9: any other lifecycle transition.
    StatusChanged = 9, "status_changed" {
        /// Withdrawal identifier.
        withdrawal_id: String,
        /// New status.
        status: WithdrawalStatus,
        /// Free-text reason.
        reason: String,
    },
    /// kind 10: a signing session started.
    SigningSession = 10, "signing_session" {
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
    SignatureProduced = 11, "signature_produced" {
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
    TransactionBroadcast = 12, "transaction_broadcast" {
        /// Withdrawal identifier.
        withdrawal_id: String,
        /// Chain identifier.
        chain: String,
        /// Transaction id.
        txid: String,
    },
    /// kind 13: a transaction was confirmed.
    Confirmed = 13, "confirmed" {
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
    MembershipChanged = 14, "membership_changed" {
        /// Node identifier.
        node_id: String,
        /// What changed.
        action: MembershipAction,
        /// The node's (new) public key.
        public_key: Vec<u8>,
        /// Admin signatures over the change.
        admin_signatures: Vec<AdminSignature>,
    },
    /// kind 15: a key was locked for signing (repeated unexplained signing
    /// failures) or unlocked by an admin.
    KeyLockChanged = 15, "key_lock_changed" {
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
    FeeBumpApproval = 16, "fee_bump_approval" {
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
    TransactionPrepared = 17, "transaction_prepared" {
        /// Withdrawal identifier.
        withdrawal_id: String,
        /// Chain.
        chain: String,
        /// The unsigned transaction, in the chain's format.
        unsigned_tx: Vec<u8>,
    },
    /// kind 18: a signer refused a withdrawal request, in its own words and
    /// under its own witness key (see [`crate::refusal`]). Signers hold
    /// their signing until their refusals are in the log, so a coordinator
    /// that asks for what the policy forbids cannot hide having asked.
    SigningRefused = 18, "signing_refused" {
        /// Withdrawal identifier (empty if the request could not be decoded).
        withdrawal_id: String,
        /// The refusing signer's node id (its witness key name).
        signer: String,
        /// What was refused: `register_quorum` or `sign_withdrawal`.
        request: String,
        /// The signer's reason.
        reason: String,
        /// The signer's clock when it refused, Unix ms.
        refused_at_ms: u64,
        /// Ed25519 signature by the signer's witness key over
        /// [`crate::refusal::Refusal::message`].
        signature: Vec<u8>,
    },
    /// kind 19: a signer exported its share of a key, sealed to the admins'
    /// offline recovery key (a disaster-recovery backup). Logged by the
    /// coordinator before it hands the backup to the admin who asked.
    ShareExported = 19, "share_exported" {
        /// Key identifier.
        key_id: String,
        /// The signer node whose share it is.
        signer: String,
        /// Its keygen index.
        party_index: u16,
        /// SHA-256 of the recovery key's X25519 public key.
        recipient_fingerprint: Hash,
        /// SHA-256 of the backup's encapsulated key and ciphertext
        /// (`custos_mpc::recovery::ShareBackup::ciphertext_hash`).
        backup_hash: Hash,
        /// The admin client that asked for it.
        actor: String,
    },
    /// kind 20: a key's shares were refreshed (every share new, the same
    /// public key; old shares and their pooled nonce commitments useless)
    /// or one signer's lost share was repaired by others. Logged by the
    /// coordinator once every signer taking part has stored its result.
    KeySharesChanged = 20, "key_shares_changed" {
        /// Key identifier.
        key_id: String,
        /// Refresh or repair.
        change: ShareChange,
        /// The share generation in force afterwards (a refresh adds one;
        /// a repair restores a share of the generation in force).
        generation: u64,
        /// The signers that took part (repair: the helpers, then the
        /// repaired signer).
        signers: Vec<String>,
        /// The repaired signer (empty for a refresh).
        repaired: String,
        /// The group public key (unchanged).
        public_key: Vec<u8>,
        /// SHA-256 of the public package in force afterwards (the verifying
        /// shares the next signatures are checked against).
        package_hash: Hash,
        /// The admin client that asked for it.
        actor: String,
    },
    /// kind 21: a key's rotation by sweep began: a new key on the same
    /// signer group takes over, and every balance of the old key's
    /// addresses is swept to the new key's address through ordinary
    /// withdrawals (policy, approvals, time lock). Logged by the
    /// coordinator once the new key exists, before any sweep is requested.
    KeyRotationStarted = 21, "key_rotation_started" {
        /// The key being rotated out.
        key_id: String,
        /// The key that receives its balances.
        new_key_id: String,
        /// The new key's address on the chain (the sweeps' destination).
        new_address: String,
        /// The admin client that asked for it.
        actor: String,
    },
    /// kind 22: a key was retired: it never signs again. Logged by the
    /// coordinator (after it found every balance of the key's addresses
    /// zero) before it asks any signer to destroy its share; each signer
    /// destroys its share and pool only once it has witnessed this entry,
    /// and refuses to sign with the key from then on.
    KeyRetired = 22, "key_retired" {
        /// The retired key.
        key_id: String,
        /// Its public key.
        public_key: Vec<u8>,
        /// The key that took over its balances (empty: none).
        successor: String,
        /// The admin client that asked for it.
        actor: String,
        /// Why (e.g. `rotated to key-2`).
        reason: String,
    },
    /// kind 23: signers reported their share of a retired key, and every
    /// presignature or nonce commitment pooled under it, destroyed
    /// (overwritten and deleted). Logged by the coordinator as they answer;
    /// a signer that was down is asked again by the next `key retire`.
    KeySharesDestroyed = 23, "key_shares_destroyed" {
        /// The retired key.
        key_id: String,
        /// The signers that destroyed their share in this round.
        signers: Vec<String>,
        /// The key_retired entry they checked before destroying it.
        retirement_index: u64,
    },
    /// kind 24: a deposit address was derived from a wallet key
    /// (non-hardened BIP32 below the key's extended public key). Logged
    /// by the coordinator the first time it records the address, before
    /// it hands the address out, so an auditor re-derives every address
    /// funds were sent to from the key's logged public key and this chain
    /// code, and knows which wallet each belongs to.
    AddressDerived = 24, "address_derived" {
        /// The wallet key.
        key_id: String,
        /// Chain identifier.
        chain: String,
        /// The derivation path (`m/0/7`).
        path: String,
        /// The child's address in the chain's canonical form.
        address: String,
        /// The child's compressed public key (for taproot keys: the
        /// child's internal key, before the BIP86 tweak).
        public_key: Vec<u8>,
        /// The wallet key's chain code the child was derived with.
        chain_code: Vec<u8>,
        /// The client that asked for it.
        actor: String,
    },
    /// kind 25: a confirmed deposit into a wallet's address was credited
    /// to the wallet. Logged before the ledger posting.
    DepositCredited = 25, "deposit_credited" {
        /// Chain identifier.
        chain: String,
        /// The wallet (key) credited.
        key_id: String,
        /// The address paid (the wallet's own or a derived one).
        address: String,
        /// Asset identifier.
        asset: String,
        /// Amount in base units, canonical decimal.
        amount: String as CanonicalAmount,
        /// The ledger's reference (`<chain>:<tx>[:<output or log>]`).
        reference: String,
        /// Height of the block that included it.
        block_number: u64,
        /// That block's hash, as the chain's node prints it.
        block_hash: String,
    },
    /// kind 26: a credited deposit was reversed because its block left
    /// the chain (a reorganisation). Logged before the ledger reversal.
    DepositReversed = 26, "deposit_reversed" {
        /// Chain identifier.
        chain: String,
        /// The wallet (key) the credit is taken back from.
        key_id: String,
        /// Asset identifier.
        asset: String,
        /// Amount in base units, canonical decimal.
        amount: String as CanonicalAmount,
        /// The credit's ledger reference.
        reference: String,
        /// Height of the block the credit was in.
        block_number: u64,
        /// Hash of that block, no longer in the chain.
        block_hash: String,
        /// Why (e.g. `block 812 is now 0xab…`).
        reason: String,
    },
}

impl EntryBody {
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
        self.body.put(&mut w)?;
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
        let body = EntryBody::get(kind, &mut r)?;
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

/// How a value is written in and read from an entry: the one encoding of
/// its type (a field's type picks it unless the table names a [`Codec`]).
trait Field: Sized {
    fn put(&self, w: &mut Writer) -> Result<(), AuditError>;
    fn get(r: &mut Reader<'_>) -> Result<Self, AuditError>;
}

/// An encoding of `T` chosen by name in the table (`field: T as Codec`),
/// for a field whose values are narrower than its type's.
trait Codec<T> {
    fn put(v: &T, w: &mut Writer) -> Result<(), AuditError>;
    fn get(r: &mut Reader<'_>) -> Result<T, AuditError>;
}

/// A field encoded as its type: [`Field`].
struct Plain;

impl<T: Field> Codec<T> for Plain {
    fn put(v: &T, w: &mut Writer) -> Result<(), AuditError> {
        v.put(w)
    }
    fn get(r: &mut Reader<'_>) -> Result<T, AuditError> {
        T::get(r)
    }
}

/// An amount: a `str` holding a canonical decimal integer (checked both
/// ways, so a log never holds two spellings of one amount).
struct CanonicalAmount;

impl Codec<String> for CanonicalAmount {
    fn put(v: &String, w: &mut Writer) -> Result<(), AuditError> {
        check_amount(v)?;
        v.put(w)
    }
    fn get(r: &mut Reader<'_>) -> Result<String, AuditError> {
        let a = String::get(r)?;
        check_amount(&a)?;
        Ok(a)
    }
}

impl Field for u16 {
    fn put(&self, w: &mut Writer) -> Result<(), AuditError> {
        w.u16(*self);
        Ok(())
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, AuditError> {
        r.u16()
    }
}

impl Field for u32 {
    fn put(&self, w: &mut Writer) -> Result<(), AuditError> {
        w.u32(*self);
        Ok(())
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, AuditError> {
        r.u32()
    }
}

impl Field for u64 {
    fn put(&self, w: &mut Writer) -> Result<(), AuditError> {
        w.u64(*self);
        Ok(())
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, AuditError> {
        r.u64()
    }
}

impl Field for bool {
    fn put(&self, w: &mut Writer) -> Result<(), AuditError> {
        w.u8(u8::from(*self));
        Ok(())
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, AuditError> {
        match r.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            t => Err(malformed(format!("boolean {t} is neither 0 nor 1"))),
        }
    }
}

impl Field for Hash {
    fn put(&self, w: &mut Writer) -> Result<(), AuditError> {
        w.0.extend_from_slice(self);
        Ok(())
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, AuditError> {
        r.array()
    }
}

/// `bytes`.
impl Field for Vec<u8> {
    fn put(&self, w: &mut Writer) -> Result<(), AuditError> {
        w.bytes(self)
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, AuditError> {
        r.bytes()
    }
}

/// `str`.
impl Field for String {
    fn put(&self, w: &mut Writer) -> Result<(), AuditError> {
        w.bytes(self.as_bytes())
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, AuditError> {
        String::from_utf8(r.bytes()?).map_err(|_| malformed("invalid UTF-8 in string field".into()))
    }
}

/// A type that may be a `list<T>` item (`Vec<u8>` is `bytes`, not a list).
trait ListItem: Field {}
impl ListItem for String {}
impl ListItem for AdminSignature {}

/// `list<T>`.
impl<T: ListItem> Field for Vec<T> {
    fn put(&self, w: &mut Writer) -> Result<(), AuditError> {
        if self.len() > MAX_LIST {
            return Err(malformed(format!(
                "list of {} items exceeds {MAX_LIST}",
                self.len()
            )));
        }
        w.u32(self.len() as u32);
        self.iter().try_for_each(|item| item.put(w))
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, AuditError> {
        let n = r.u32()? as usize;
        if n > MAX_LIST {
            return Err(malformed(format!("list of {n} items exceeds {MAX_LIST}")));
        }
        (0..n).map(|_| T::get(r)).collect()
    }
}

/// `option<T>`.
impl<T: Field> Field for Option<T> {
    fn put(&self, w: &mut Writer) -> Result<(), AuditError> {
        match self {
            None => {
                w.u8(0);
                Ok(())
            }
            Some(v) => {
                w.u8(1);
                v.put(w)
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, AuditError> {
        match r.u8()? {
            0 => Ok(None),
            1 => T::get(r).map(Some),
            t => Err(malformed(format!("option tag {t} is neither 0 nor 1"))),
        }
    }
}

/// `admin_id:str signature:bytes`.
impl Field for AdminSignature {
    fn put(&self, w: &mut Writer) -> Result<(), AuditError> {
        self.admin_id.put(w)?;
        self.signature.put(w)
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, AuditError> {
        Ok(AdminSignature {
            admin_id: String::get(r)?,
            signature: Vec::get(r)?,
        })
    }
}

/// The tag `1 + position` in [`WithdrawalStatus::ALL`].
impl Field for WithdrawalStatus {
    fn put(&self, w: &mut Writer) -> Result<(), AuditError> {
        w.u8(self.tag());
        Ok(())
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, AuditError> {
        let t = r.u8()?;
        Self::from_tag(t).ok_or_else(|| malformed(format!("unknown withdrawal status {t}")))
    }
}

/// The outcome's tag, then `quorum:u16` for `RequireApprovals`.
impl Field for DecisionOutcome {
    fn put(&self, w: &mut Writer) -> Result<(), AuditError> {
        match self {
            Self::Allow => w.u8(1),
            Self::RequireApprovals { quorum } => {
                w.u8(2);
                quorum.put(w)?;
            }
            Self::Deny => w.u8(3),
        }
        Ok(())
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, AuditError> {
        match r.u8()? {
            1 => Ok(Self::Allow),
            2 => Ok(Self::RequireApprovals { quorum: r.u16()? }),
            3 => Ok(Self::Deny),
            t => Err(malformed(format!("unknown decision outcome {t}"))),
        }
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
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
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
    fn bytes(&mut self) -> Result<Vec<u8>, AuditError> {
        let n = self.u32()? as usize;
        if n > MAX_FIELD {
            return Err(malformed(format!("field of {n} bytes exceeds {MAX_FIELD}")));
        }
        Ok(self.take(n)?.to_vec())
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
