//! Custos withdrawal policy engine.
//!
//! Pure and deterministic: no I/O, no clock, no randomness, no async. The same code
//! runs in the coordinator and, independently, in every signer; time, history, the
//! risk score and key seeds are inputs.
//!
//! - [`Policy::parse`] reads and validates a policy document (TOML or JSON).
//! - [`verify_bundle`] checks an admin quorum signed the document's hash.
//! - [`PolicyState`] tracks the policy in force, delayed relaxations and address
//!   cooling periods; [`ActivePolicy`] is one policy with its times.
//! - [`evaluate`] decides; [`Decision::explain`] says why in plain words. A rule's
//!   [`FeeBound`] bounds the withdrawal's fee cap, and velocity totals on a chain's
//!   native asset count fee caps; [`Policy::fee_bound_problems`] is the lint that
//!   `custos policy check` applies to rules without a fee bound.
//! - [`ApprovalStatement`] is what approvers sign; [`check_approvals`] counts them.
//!   Approvers sign with Ed25519 keys or passkeys ([`verify_passkey_assertion`]).
//! - [`FeeBumpStatement`] is what they sign to replace a stuck transaction when a
//!   rule says `fee_bumps = "reapprove"`; [`check_fee_bump_approvals`] counts those.
//!
//! Byte formats (policy hash, bundle signatures, approval statements) are specified
//! in `FORMATS.md` and pinned by golden files in `tests/golden/`.

#![deny(missing_docs)]

mod address;
mod approval;
mod authorize;
mod bundle;
mod document;
mod error;
mod eval;
mod fee;
mod fee_bump;
mod governance;
mod intent;
mod keys;
mod policy;
mod quorum;
mod request;
mod request_key;
mod statement;
mod units;
mod value;
mod webauthn;

pub use address::{ChainFamily, CheckedAddress, chain_kind, check_address, native_asset};
pub use approval::{
    Approval, ApprovalStatus, InvalidApproval, MissingTerm, check_approvals, check_cancellation,
};
pub use authorize::{Authorization, SigningClaim, authorize, statement_hash};
pub use bundle::{
    AdminSet, AdminSetConfig, AdminSignature, BUNDLE_SIGN_DOMAIN, BundleSignatures, VerifiedBundle,
    bundle_message, verify_bundle,
};
pub use document::{
    ActionKind, AddressEntry, AmountRange, ApprovalMethod, Approver, Destination, FeeBound,
    FeeBumps, PasskeyCredential, PolicyDocument, QuorumSpec, QuorumTerm, RequestKey, RiskRange,
    Rule, Settings, TimeWindow, Velocity, VelocityKey, WebAuthnSettings,
};
pub use error::{Issue, PolicyError, Result};
pub use eval::{
    Check, Decision, DerivedSource, HistoryEntry, MAX_FIELD_LEN, MAX_PATH_LEN, Outcome,
    RequiredTerm, RuleTrace, Withdrawal, WithdrawalSummary, evaluate,
};
pub use fee::MAX_FEE_BPS;
pub use fee_bump::{
    FEE_BUMP_MAGIC, FEE_BUMP_SIGN_DOMAIN, FEE_BUMP_VERSION, FeeBumpStatement, authorize_fee_bump,
    check_fee_bump_approvals, fee_bump_needs_approval,
};
pub use governance::{ActivePolicy, PolicyState, UpdateEffect, relaxation};
pub use intent::{INTENT_DOMAIN, INTENT_DOMAIN_DERIVED, intent_digest};
pub use keys::{PublicKey, SecretKey};
pub use policy::{MAX_DOCUMENT_BYTES, POLICY_HASH_DOMAIN, Policy, PolicyHash, parse_document};
pub use request::{
    REQUEST_SIGN_DOMAIN, REQUEST_SIGN_DOMAIN_V2, RequestStatement, canonical_destination,
    request_withdrawal_id,
};
pub use statement::{
    APPROVAL_SIGN_DOMAIN, ApprovalStatement, MAX_DIGEST_LEN, STATEMENT_MAGIC, STATEMENT_VERSION,
    STATEMENT_VERSION_DERIVED, Verdict,
};
pub use units::{describe_amount, format_units, known_decimals, parse_units};
pub use value::{Amount, Duration, MAX_VELOCITY_WINDOW_SECS, Timestamp};
pub use webauthn::{
    PASSKEY_LOG_MAGIC, PasskeyAlg, PasskeyAssertion, PasskeyCheck, PasskeyCredentialKey,
    PasskeyKey, RelyingParty, check_sign_counter, passkey_challenge, verify_passkey_assertion,
};
pub use zeroize::Zeroizing;

/// Fuzzing entry point: parses arbitrary bytes as a policy document, an approval
/// statement and an admin set. Must never panic. Returns true when a decoded
/// statement re-encodes to different bytes (a canonicality bug).
#[doc(hidden)]
pub fn fuzz_parse(data: &[u8]) -> bool {
    if let Ok(p) = Policy::parse(data) {
        let _ = p.warnings().len();
    }
    let _ = AdminSet::parse(data);
    match ApprovalStatement::decode(data) {
        Ok(s) => s.encode().ok().as_deref() != Some(data),
        Err(_) => false,
    }
}
