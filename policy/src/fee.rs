//! Fee bounds: how much of a wallet a withdrawal's fee cap may spend.
//!
//! # Design
//!
//! The fee cap (the highest fee the transaction may pay, in the chain's
//! native base units) is chosen by whoever builds the withdrawal, and it is
//! spent on top of the amount. Without a bound, a small auto-allowed payout
//! could carry most of a wallet's native balance as priority fee. A rule's
//! `fee` condition bounds it:
//!
//! - `max`: absolute, native base units, for every asset the rule matches;
//! - `max_per_asset`: absolute, per asset symbol (a token transfer needs more
//!   gas than a native one), native base units of the chain;
//! - `max_bps`: relative to the amount, in basis points, for the chain's native
//!   asset only: a token's amount and a native fee are in different units.
//!
//! Every bound that applies must hold, and a withdrawal to which none applies
//! does not match the rule (fail closed): the condition never lets a fee
//! through unbounded. A failed bound makes the rule not match, like any other
//! condition, so the next rule decides (typically one requiring approvals,
//! with its own, wider bound); the trace names the bound that failed.
//!
//! Parsing never requires a fee bound (a signer must keep loading the policy
//! in force after an upgrade); [`Policy::fee_bound_problems`] is the lint that
//! `custos policy check` applies before admins sign a document.

use std::collections::BTreeSet;

use crate::address::{ChainFamily, chain_kind};
use crate::document::{ActionKind, FeeBound, Rule};
use crate::error::Issue;
use crate::eval::Withdrawal;
use crate::policy::{Policy, effective_chains};

/// Highest `max_bps`: a relative bound above the amount itself is no bound.
pub const MAX_FEE_BPS: u32 = 10_000;

/// `amount * bps / 10_000`, rounded down, without overflow.
pub(crate) fn bps_of(amount: u128, bps: u32) -> u128 {
    let bps = u128::from(bps);
    (amount / 10_000)
        .saturating_mul(bps)
        .saturating_add(amount % 10_000 * bps / 10_000)
}

/// Evaluates `bound` for `w`; `native` is the native asset of `w`'s chain, if
/// known. Returns whether every applicable bound holds, and why.
pub(crate) fn check_fee(bound: &FeeBound, w: &Withdrawal, native: Option<&str>) -> (bool, String) {
    let fee = w.fee_cap.0;
    // (name of the bound, limit)
    let mut limits: Vec<(String, u128)> = Vec::new();
    if let Some(m) = bound.max {
        limits.push(("fee.max".into(), m.0));
    }
    if let Some(m) = bound.max_per_asset.as_ref().and_then(|t| t.get(&w.asset)) {
        limits.push((format!("fee.max_per_asset.{}", w.asset), m.0));
    }
    let mut notes = Vec::new();
    if let Some(bps) = bound.max_bps {
        if native == Some(w.asset.as_str()) {
            limits.push((
                format!("fee.max_bps {bps} of the amount {}", w.amount),
                bps_of(w.amount.0, bps),
            ));
        } else {
            notes.push(format!(
                "fee.max_bps does not apply: {} is not the native asset of {} ({})",
                w.asset,
                w.chain,
                native.unwrap_or("none known")
            ));
        }
    }
    if limits.is_empty() {
        notes.insert(
            0,
            format!(
                "fee cap {fee}: no bound of this rule applies to {} on {}, so the rule does not match",
                w.asset, w.chain
            ),
        );
        return (false, notes.join("; "));
    }
    let (over, within): (Vec<_>, Vec<_>) = limits.iter().partition(|(_, l)| fee > *l);
    let show = |v: &[&(String, u128)]| {
        v.iter()
            .map(|(n, l)| format!("{n} ({l})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut detail = if over.is_empty() {
        format!("fee cap {fee} is within {}", show(&within))
    } else {
        format!("fee cap {fee} is above {}", show(&over))
    };
    if !over.is_empty() && !within.is_empty() {
        detail.push_str(&format!("; within {}", show(&within)));
    }
    for n in notes {
        detail.push_str("; ");
        detail.push_str(&n);
    }
    (over.is_empty(), detail)
}

/// Parse-time checks of a rule's `fee`: (errors, warnings), each with its path.
/// Only documents that use `fee` can fail them, so older documents still load.
pub(crate) fn validate_fee(r: &Rule, path: &str) -> (Vec<Issue>, Vec<Issue>) {
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    let Some(f) = &r.fee else {
        return (errors, warnings);
    };
    let fp = format!("{path}.fee");
    if f.max.is_none() && f.max_per_asset.is_none() && f.max_bps.is_none() {
        errors.push(Issue::new(
            &fp,
            "set max, max_per_asset, max_bps or several",
        ));
    }
    if let Some(t) = &f.max_per_asset {
        if t.is_empty() {
            errors.push(Issue::new(
                format!("{fp}.max_per_asset"),
                "empty table bounds nothing; leave it out",
            ));
        }
        for asset in t.keys() {
            if asset.is_empty() {
                errors.push(Issue::new(
                    format!("{fp}.max_per_asset"),
                    "empty asset symbol",
                ));
            } else if r.assets.as_ref().is_some_and(|a| !a.contains(asset)) {
                warnings.push(Issue::new(
                    format!("{fp}.max_per_asset"),
                    format!(
                        "asset {asset:?} is not in the rule's `assets`: this bound never applies"
                    ),
                ));
            }
        }
    }
    if let Some(bps) = f.max_bps
        && (bps == 0 || bps > MAX_FEE_BPS)
    {
        errors.push(Issue::new(
            format!("{fp}.max_bps"),
            format!(
                "{bps} must be 1..={MAX_FEE_BPS} (basis points of the amount: 100 = 1 %, 10000 = the amount itself)"
            ),
        ));
    }
    if f.max.is_none() && f.max_per_asset.is_none() && f.max_bps.is_some() {
        warnings.push(Issue::new(
            &fp,
            "only max_bps: it bounds the chain's native asset only, so withdrawals of other assets \
             (tokens) never match this rule; add max or max_per_asset to bound them",
        ));
    }
    if r.action == ActionKind::Block {
        warnings.push(Issue::new(
            &fp,
            "a fee bound matches while the fee cap stays WITHIN it, so this block rule stops blocking \
             withdrawals whose fee cap is over it; put the bound on the allow/require_approvals rules",
        ));
    }
    (errors, warnings)
}

/// Address families whose native units differ by orders of magnitude.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Family {
    Evm,
    Bitcoin,
}

fn family(chain: &str) -> Option<Family> {
    chain_kind(chain).and_then(|k| match k {
        ChainFamily::Evm => Some(Family::Evm),
        ChainFamily::Utxo(_) => Some(Family::Bitcoin),
        // Signing a message pays no fee.
        ChainFamily::Message => None,
    })
}

impl Policy {
    /// The native asset of `chain` (the asset its fees are paid in): the
    /// document's `native_assets` entry, else the built-in name
    /// ([`native_asset`](crate::native_asset)).
    pub fn native_asset(&self, chain: &str) -> Option<&str> {
        self.document()
            .native_assets
            .get(chain)
            .map(String::as_str)
            .or_else(|| crate::address::native_asset(chain))
    }

    /// Rules that can send funds without a sound fee bound, as `custos policy
    /// check` refuses them (the parser accepts them, so a policy in force keeps
    /// loading after an upgrade):
    ///
    /// - an `allow` or `require_approvals` rule without a `fee` condition: the
    ///   fee cap of what it allows is whatever the coordinator chose;
    /// - a `fee.max` on a rule that can match both EVM and Bitcoin chains (or
    ///   any chain): one number cannot bound wei and satoshi alike.
    pub fn fee_bound_problems(&self) -> Vec<Issue> {
        let mut out = Vec::new();
        for (i, (r, res)) in self.document().rules.iter().zip(&self.resolved).enumerate() {
            if r.action == ActionKind::Block {
                continue;
            }
            let path = format!("rules[{i}] ({})", r.id);
            let Some(f) = &r.fee else {
                out.push(Issue::new(
                    path,
                    format!(
                        "`{}` rule without a fee bound: the fee cap of what it lets through is \
                         whatever the coordinator chose; add `fee = {{ max = \"…\" }}` (native base \
                         units), `max_per_asset` or `max_bps`",
                        if r.action == ActionKind::Allow {
                            "allow"
                        } else {
                            "require_approvals"
                        }
                    ),
                ));
                continue;
            };
            if f.max.is_some() {
                let families: Option<BTreeSet<Family>> = effective_chains(self, res)
                    .map(|cs| cs.iter().filter_map(|c| family(c)).collect());
                if families.is_none_or(|f| f.len() > 1) {
                    out.push(Issue::new(
                        format!("{path}.fee.max"),
                        "is in the native base units of the withdrawal's chain, and this rule can match \
                         both EVM and Bitcoin chains (wei and satoshi): restrict `chains` or use \
                         max_per_asset",
                    ));
                }
            }
        }
        out
    }
}
