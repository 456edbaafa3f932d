//! One verification run: the bundle verifier with the chosen replay, the
//! admin quorum of activations, and the on-chain comparison, in one result.

use custos_audit::{
    AuthorizationReplay, ExportBundle, Report, RequireSatisfiedDecision, TrustRoots, verify_bundle,
};

use crate::VerifyError;
use crate::addresses::AddressCheck;
use crate::onchain::WalletNonces;
use crate::replay::{BatchCount, PolicyReplay};

/// How far the authorisation replay went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub enum ReplayMode {
    /// A satisfied decision, approvals and a session before each signature
    /// (no policy documents given).
    #[serde(rename = "structural")]
    Structural,
    /// The policy engine's replay against the trusted documents.
    #[serde(rename = "policy")]
    Policy,
    /// The policy replay, and the admin quorum of every activation.
    #[serde(rename = "policy+admins")]
    PolicyAndAdmins,
}

impl ReplayMode {
    /// The name the CLI prints (`structural`, `policy`, `policy+admins`).
    pub fn as_str(self) -> &'static str {
        match self {
            ReplayMode::Structural => "structural",
            ReplayMode::Policy => "policy",
            ReplayMode::PolicyAndAdmins => "policy+admins",
        }
    }
}

/// What a verification found.
#[derive(Clone, Debug)]
pub struct Verification {
    /// The bundle verifier's report, with the replay's and the activations'
    /// failures.
    pub report: Report,
    /// How far the replay went.
    pub replay: ReplayMode,
    /// Batched UTXO transactions whose every payout the policy replay
    /// authorised (zero without one).
    pub batches: BatchCount,
    /// Derived addresses and approved derived sources re-derived from the
    /// keys ([`crate::addresses`]).
    pub addresses: AddressCheck,
    /// The on-chain comparison, when chains were asked
    /// ([`crate::onchain::query`]; empty otherwise).
    pub onchain: Vec<WalletNonces>,
}

impl Verification {
    /// Wallets whose mined nonces include some the log never prepared.
    pub fn outside_log(&self) -> Vec<VerifyError> {
        self.onchain
            .iter()
            .filter_map(WalletNonces::outside_log)
            .collect()
    }

    /// No failure in the report and no nonce signed outside the log.
    pub fn is_ok(&self) -> bool {
        self.report.is_ok() && self.onchain.iter().all(|w| w.unlogged.is_empty())
    }
}

/// Verifies `bundle` against `trust` (and `previous`, the auditor's last
/// checkpoint note), replaying each signature's authorisation with `policy`
/// if given, else structurally. Never fails: every problem is in the
/// report, the first bad entry in [`Report::first_failure`]. Set
/// [`Verification::onchain`] from [`crate::onchain::query`] to add the
/// on-chain comparison.
pub fn verify(
    bundle: &ExportBundle,
    trust: &TrustRoots,
    previous: Option<&str>,
    policy: Option<&PolicyReplay>,
) -> Verification {
    let replay: &dyn AuthorizationReplay = match policy {
        Some(r) => r,
        None => &RequireSatisfiedDecision,
    };
    let mut report = verify_bundle(bundle, trust, previous, replay);
    let addresses = crate::addresses::check(bundle, &mut report);
    let mode = match policy {
        Some(r) => {
            r.check_activations(bundle, &mut report);
            if r.checks_admins() {
                ReplayMode::PolicyAndAdmins
            } else {
                ReplayMode::Policy
            }
        }
        None => ReplayMode::Structural,
    };
    Verification {
        report,
        replay: mode,
        addresses,
        batches: policy
            .map(PolicyReplay::batches_authorised)
            .unwrap_or_default(),
        onchain: Vec::new(),
    }
}
