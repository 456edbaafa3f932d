//! The policy document as written by admins (TOML, or JSON with the same shape).
//!
//! Unknown fields are errors everywhere: a misspelt condition must never silently
//! widen a rule. See `examples/policy.toml` for a complete, commented document.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::value::{Amount, Duration};

/// A whole policy document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDocument {
    /// Monotonic version: an update must carry a higher number than the policy in force.
    pub version: u64,
    /// Free text shown to admins.
    #[serde(default)]
    pub description: String,
    /// Governance delays.
    #[serde(default)]
    pub settings: Settings,
    /// Named sets of wallets.
    #[serde(default)]
    pub wallet_groups: BTreeMap<String, Vec<String>>,
    /// Known destinations.
    #[serde(default)]
    pub address_book: Vec<AddressEntry>,
    /// People who may approve, reject or cancel withdrawals.
    #[serde(default)]
    pub approvers: Vec<Approver>,
    /// Named sets of approvers, referenced by quorums and cancel rights.
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
    /// API clients' request keys. When any is registered, every withdrawal
    /// must carry its initiator's signature over the request (see
    /// [`RequestStatement`](crate::RequestStatement)), and signers evaluate
    /// initiator conditions on the client that signed, not on what the
    /// coordinator says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_keys: Vec<RequestKey>,
    /// Native asset of a chain (`anvil = "ETH"`), the asset its fees are paid
    /// in. Overrides and extends the built-in names (see
    /// [`native_asset`](crate::native_asset)); needed for `evm:<id>` chains.
    /// Fee conditions relative to the amount and velocity limits that count
    /// fees apply to a chain's native asset only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub native_assets: BTreeMap<String, String>,
    /// The relying party for passkey approvals; required when any approver
    /// has a passkey.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webauthn: Option<WebAuthnSettings>,
    /// Ordered rules: the first that matches decides. No match means block.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Keys the admins retire (`retired_keys = ["w-old"]`): the admin
    /// quorum's authorization, verified by each signer itself, to destroy
    /// its share of each once the audit log it witnessed also carries the
    /// key's `key_retired` entry. Adding a key is a tightening (immediate);
    /// removing one is a relaxation (see [`crate::relaxation`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired_keys: Vec<String>,
}

/// Governance delays. The values of the policy *in force* apply to a change, so an
/// update cannot shorten its own delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// How long a newly added address-book entry waits before rules can use it.
    #[serde(default = "default_day")]
    pub whitelist_delay: Duration,
    /// How long a policy update that is not a pure tightening waits before it takes effect.
    #[serde(default = "default_day")]
    pub change_delay: Duration,
    /// Default lifetime of an approval statement when a rule does not set one.
    #[serde(default = "default_day")]
    pub approval_expiry: Duration,
}

fn default_day() -> Duration {
    Duration(86_400)
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            whitelist_delay: default_day(),
            change_delay: default_day(),
            approval_expiry: default_day(),
        }
    }
}

/// One address-book entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressEntry {
    /// Unique id, referenced by rules.
    pub id: String,
    /// Labels shared by several entries (for example `exchange`), referenced by rules.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Chain the address lives on.
    pub chain: String,
    /// The address, checked for the chain.
    pub address: String,
    /// Whether `destination = "whitelisted"` covers this entry.
    #[serde(default = "yes")]
    pub whitelisted: bool,
}

fn yes() -> bool {
    true
}

/// One approver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approver {
    /// Unique id, referenced by groups and carried by approvals.
    pub id: String,
    /// Role (for example `treasury`), matched by `initiator_roles`.
    pub role: String,
    /// Ed25519 public key, 64 hex digits; may be left out when the approver
    /// has a passkey (then they approve with the passkey only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ed25519: String,
    /// A passkey (WebAuthn credential) with an ES256 (P-256) key; needs the
    /// document's `[webauthn]` section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webauthn_p256: Option<PasskeyCredential>,
    /// A passkey with an EdDSA (Ed25519) key; needs `[webauthn]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webauthn_ed25519: Option<PasskeyCredential>,
    /// A revoked approver's approvals are refused; the entry stays for the audit trail.
    #[serde(default)]
    pub revoked: bool,
}

/// A passkey registered for an approver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasskeyCredential {
    /// The credential id, base64url (`PublicKeyCredential.id` at registration).
    pub credential_id: String,
    /// The public key, hex: the COSE_Key from the registration's attested
    /// credential data, or the raw key (SEC1 point for P-256, 32 bytes for Ed25519).
    pub public_key: String,
}

/// The WebAuthn relying party passkey approvals are made for. Signers verify
/// assertions against this admin-signed section only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebAuthnSettings {
    /// RP ID: the domain the passkeys are scoped to (for example `custos.test`).
    pub rp_id: String,
    /// Origins the approval app is served from, exactly as browsers report
    /// them (`https://approve.custos.test`).
    pub origins: Vec<String>,
}

/// How an approval may be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalMethod {
    /// An Ed25519 signature (the CLI).
    Ed25519,
    /// A passkey assertion (WebAuthn).
    Passkey,
}

/// An API client's request key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestKey {
    /// The client's id (its API identity, the withdrawal's initiator).
    pub client: String,
    /// Ed25519 public key, 64 hex digits (this or `p256`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ed25519: String,
    /// ECDSA P-256 public key, SEC1 hex (33 or 65 bytes), for clients whose
    /// keys live where Ed25519 is not offered (cloud KMS, HSM, platform
    /// keystores); it signs SHA-256 of the request's signing message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub p256: String,
    /// A revoked key signs nothing; the entry stays for the audit trail.
    #[serde(default)]
    pub revoked: bool,
}

/// One rule. Every condition left out matches anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique id, carried by approval statements.
    pub id: String,
    /// Free text shown in explanations.
    #[serde(default)]
    pub description: String,
    /// Source wallets (ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wallets: Option<Vec<String>>,
    /// Source wallet groups (names from `wallet_groups`); united with `wallets`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wallet_groups: Option<Vec<String>>,
    /// Chains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chains: Option<Vec<String>>,
    /// Asset symbols as the wallet service names them (`ETH`, `USDC`, `BTC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assets: Option<Vec<String>>,
    /// Destination condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<Destination>,
    /// Initiator ids (API clients or approvers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiators: Option<Vec<String>>,
    /// Initiator roles, looked up in `approvers` (never taken from the request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiator_roles: Option<Vec<String>>,
    /// Amount per transaction, inclusive bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<AmountRange>,
    /// Bounds on the withdrawal's fee cap; the rule matches only while the fee
    /// cap stays within every bound that applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fee: Option<FeeBound>,
    /// Rolling-window limits; the rule matches while the totals including this
    /// withdrawal stay within them. For the chain's native asset, totals count
    /// amounts plus fee caps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub velocity: Option<Velocity>,
    /// UTC days and hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<TimeWindow>,
    /// Risk score range, inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<RiskRange>,
    /// What happens on a match.
    pub action: ActionKind,
    /// For `block`: the reason shown to the initiator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For `require_approvals`: the quorum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals: Option<QuorumSpec>,
    /// Time lock between approval (or match, for `allow`) and signing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<Duration>,
    /// Group whose members may cancel during the delay (required with `delay`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_group: Option<String>,
    /// Lifetime of approvals for this rule (defaults to `settings.approval_expiry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_expiry: Option<Duration>,
    /// How approvals for this rule may be given (default: any). With
    /// `["passkey"]`, Ed25519 approvals and rejections are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_methods: Option<Vec<ApprovalMethod>>,
    /// What replacing a stuck transaction with a higher fee needs (chains
    /// with fee bumps, such as EVM).
    #[serde(default, skip_serializing_if = "FeeBumps::is_within_cap")]
    pub fee_bumps: FeeBumps,
}

/// What a fee bump of a rule's transaction needs.
///
/// A bump is always the same transfer at the same nonce, so at most one
/// version is ever mined, and never above the approved fee cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeeBumps {
    /// Bumps within the approved fee cap need no new approval (the approvals
    /// bound the cap).
    #[default]
    WithinCap,
    /// Every bump needs the rule's quorum again, over a
    /// [`FeeBumpStatement`](crate::FeeBumpStatement) naming the replacement.
    /// Only for `require_approvals` rules.
    Reapprove,
}

impl FeeBumps {
    /// True for the default.
    pub fn is_within_cap(&self) -> bool {
        *self == FeeBumps::WithinCap
    }
}

/// What a rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// Sign (after `delay`, if any).
    Allow,
    /// Refuse, with `reason`.
    Block,
    /// Sign once the quorum has approved (and `delay` has passed).
    RequireApprovals,
}

/// Destination condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Destination {
    /// Any address, in the book or not.
    Any,
    /// Any whitelisted address-book entry past its cooling period.
    Whitelisted,
    /// Named address-book entries (ids), past their cooling period.
    Entries(Vec<String>),
    /// Address-book entries carrying any of these labels, past their cooling period.
    Labels(Vec<String>),
}

/// Inclusive amount bounds in base units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmountRange {
    /// Lowest amount matched (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<Amount>,
    /// Highest amount matched (default unbounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Amount>,
}

/// Bounds on a withdrawal's fee cap (the highest fee its transaction may pay,
/// in the chain's native base units: wei, satoshi).
///
/// Every bound that applies must hold. `max` and `max_per_asset` apply to every
/// withdrawal the rule matches; `max_bps` only when the asset is the chain's
/// native asset (a token's amount and the native fee are in different units).
/// A withdrawal to which no bound applies does not match the rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeeBound {
    /// Highest fee cap, native base units, whatever the asset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Amount>,
    /// Highest fee cap per asset symbol, native base units of the chain the
    /// asset is withdrawn on (a token transfer costs more gas than a native one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_asset: Option<BTreeMap<String, Amount>>,
    /// Highest fee cap relative to the amount, in basis points (1..=10000;
    /// 100 = 1 %), for withdrawals of the chain's native asset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bps: Option<u32>,
}

/// Dimensions a velocity limit is counted per.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VelocityKey {
    /// Same source wallet.
    Wallet,
    /// Same chain and asset.
    Asset,
    /// Same destination address.
    Destination,
    /// Same initiator.
    Initiator,
}

/// A rolling-window limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Velocity {
    /// Window length; history entries newer than `now - window` count.
    pub window: Duration,
    /// History entries count only when equal to this withdrawal on these keys.
    #[serde(default)]
    pub per: Vec<VelocityKey>,
    /// Highest total (history plus this withdrawal) still matched. When the
    /// withdrawal's asset is its chain's native asset, the total counts each
    /// withdrawal's amount plus its fee cap, and the fee caps of other assets'
    /// withdrawals on the same chain that match the other keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_amount: Option<Amount>,
    /// Highest count (history plus this withdrawal) still matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_count: Option<u64>,
}

/// Days and hours, UTC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeWindow {
    /// Days (`mon` … `sun`), UTC; default every day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<Vec<String>>,
    /// First hour matched, 0..=23, UTC (default 0).
    #[serde(default)]
    pub from_hour: u8,
    /// Hour the window ends, exclusive, 1..=24, UTC (default 24). When
    /// `to_hour <= from_hour` the window wraps past midnight.
    #[serde(default = "h24")]
    pub to_hour: u8,
}

fn h24() -> u8 {
    24
}

/// Inclusive risk-score bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskRange {
    /// Lowest score matched (default 0).
    #[serde(default)]
    pub min: u32,
    /// Highest score matched (default unbounded).
    #[serde(default = "max_u32")]
    pub max: u32,
}

fn max_u32() -> u32 {
    u32::MAX
}

/// A quorum: every term must be met, by distinct approvers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuorumSpec {
    /// Terms combined with AND.
    pub all: Vec<QuorumTerm>,
    /// The initiator's own approval does not count (and is refused).
    #[serde(default)]
    pub exclude_initiator: bool,
}

/// `count` approvals from members of `group`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuorumTerm {
    /// Group name.
    pub group: String,
    /// Approvals needed from it.
    pub count: u32,
}
