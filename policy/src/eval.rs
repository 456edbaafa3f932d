//! Evaluating a withdrawal against the policy in force.
//!
//! Pure and deterministic: the policy, the withdrawal, the history of past
//! withdrawals, the time and the risk score are all inputs. Every rule is checked
//! in order and every condition of every rule up to the match is recorded, so the
//! decision can explain itself.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::address::check_address;
use crate::document::{ActionKind, VelocityKey};
use crate::error::{PolicyError, Result};
use crate::fee::check_fee;
use crate::governance::ActivePolicy;
use crate::policy::{DestSet, PolicyHash, day_name};
use crate::value::{Amount, Duration, Timestamp};

/// Longest id, wallet, asset or initiator string accepted in a withdrawal.
pub const MAX_FIELD_LEN: usize = 256;

/// A withdrawal request, as the coordinator or a signer sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Withdrawal {
    /// Unique withdrawal id.
    pub id: String,
    /// Source wallet id.
    pub wallet: String,
    /// Chain name.
    pub chain: String,
    /// Asset symbol.
    pub asset: String,
    /// Destination address.
    pub destination: String,
    /// Amount in base units.
    pub amount: Amount,
    /// Highest fee the transaction may pay, in the chain's native base units.
    #[serde(default)]
    pub fee_cap: Amount,
    /// Who asked: an API client id or an approver id.
    pub initiator: String,
    /// Digest of the unsigned transaction, hex (empty until built).
    #[serde(default)]
    pub tx_digest: String,
    /// Set when it spends from a derived address of the wallet (HD child
    /// key) rather than the wallet's own: part of the intent digest and the
    /// approval statement, and every signer derives the address itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<DerivedSource>,
}

/// Where a withdrawal from a derived address spends from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DerivedSource {
    /// The non-hardened derivation path below the wallet key (`m/0/5`).
    pub path: String,
    /// The address of the child key at `path`, in the chain's canonical form.
    pub address: String,
}

/// Longest derivation path text accepted (`m` and 16 indices).
pub const MAX_PATH_LEN: usize = 192;

impl DerivedSource {
    /// Checks the path's shape (`m/<digits>/...`; signers parse it fully
    /// when they derive) and the address on `chain`; returns the source
    /// with the address in canonical form.
    pub fn validate(&self, chain: &str) -> Result<DerivedSource> {
        let shape = self.path.len() <= MAX_PATH_LEN
            && self.path.strip_prefix("m/").is_some_and(|rest| {
                rest.split('/')
                    .all(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
            });
        if !shape {
            return Err(PolicyError::InvalidWithdrawal {
                field: "source.path",
                reason: format!(
                    "must be m/<index>/... (non-hardened, at most {MAX_PATH_LEN} characters)"
                ),
            });
        }
        let address = check_address(chain, &self.address)
            .map(|c| c.canonical)
            .map_err(|reason| PolicyError::InvalidWithdrawal {
                field: "source.address",
                reason,
            })?;
        Ok(DerivedSource {
            path: self.path.clone(),
            address,
        })
    }
}

/// A past withdrawal counted by velocity limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryEntry {
    /// Withdrawal id; an entry with the id being evaluated is ignored (never counted twice).
    pub id: String,
    /// Source wallet id.
    pub wallet: String,
    /// Chain name.
    pub chain: String,
    /// Asset symbol.
    pub asset: String,
    /// Destination address.
    pub destination: String,
    /// Initiator id.
    pub initiator: String,
    /// Amount in base units.
    pub amount: Amount,
    /// Its fee cap, in the chain's native base units (0 when the record
    /// predates fee caps): velocity limits on the native asset count it.
    #[serde(default)]
    pub fee_cap: Amount,
    /// When it was approved for signing.
    pub at: Timestamp,
}

/// What the policy decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Outcome {
    /// Sign (after the delay, if any).
    Allow,
    /// Do not sign.
    Block {
        /// Shown to the initiator.
        reason: String,
    },
    /// Sign once the quorum approves (and the delay passes).
    RequireApprovals,
}

/// One term of a required quorum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequiredTerm {
    /// Approver group.
    pub group: String,
    /// Distinct approvals needed from it.
    pub count: u32,
}

/// The result of one condition of one rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// Condition name (`wallet`, `amount`, …).
    pub condition: String,
    /// Whether it held.
    pub passed: bool,
    /// Plain-words reason.
    pub detail: String,
}

/// How one rule fared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleTrace {
    /// Rule id.
    pub rule_id: String,
    /// The rule's description, if any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// True when every condition held.
    pub matched: bool,
    /// Every condition the rule sets, in a fixed order.
    pub checks: Vec<Check>,
}

/// The withdrawal fields a decision binds, destination in canonical form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithdrawalSummary {
    /// Withdrawal id.
    pub id: String,
    /// Source wallet.
    pub wallet: String,
    /// Chain.
    pub chain: String,
    /// Asset.
    pub asset: String,
    /// Canonical destination address.
    pub destination: String,
    /// Amount.
    pub amount: Amount,
    /// Initiator id.
    pub initiator: String,
}

/// The outcome of [`evaluate`].
///
/// A decision received from another component is a claim, not a fact: signers
/// re-evaluate with their own inputs, and [`crate::check_approvals`] reads the quorum,
/// the initiator exclusion and the approval lifetime from the policy, not from here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Hash of the policy evaluated.
    pub policy_hash: PolicyHash,
    /// Its version.
    pub policy_version: u64,
    /// What was evaluated.
    pub withdrawal: WithdrawalSummary,
    /// When.
    pub evaluated_at: Timestamp,
    /// Risk score used.
    pub risk_score: u32,
    /// Id of the matched rule; `None` when nothing matched (default block).
    pub rule_id: Option<String>,
    /// Position of the matched rule.
    pub rule_index: Option<usize>,
    /// The action.
    pub outcome: Outcome,
    /// Quorum terms (empty unless approvals are required).
    pub quorum: Vec<RequiredTerm>,
    /// The initiator's own approval is refused.
    pub exclude_initiator: bool,
    /// Time lock before signing.
    pub delay: Option<Duration>,
    /// Group that may cancel during the time lock.
    pub cancel_group: Option<String>,
    /// Longest lifetime of approvals for this decision.
    pub approval_expiry: Option<Duration>,
    /// Every rule checked, up to and including the match.
    pub trace: Vec<RuleTrace>,
}

impl Decision {
    /// Earliest time signing may start when the approvals were complete at
    /// `approved_at` (for `allow`, the time of the decision): the time lock.
    pub fn signable_from(&self, approved_at: Timestamp) -> Timestamp {
        self.delay.map_or(approved_at, |d| approved_at.plus(d))
    }

    /// A plain-words explanation: the outcome, then why each rule did or did not match.
    pub fn explain(&self) -> String {
        let mut s = String::new();
        let w = &self.withdrawal;
        let _ = writeln!(
            s,
            "Withdrawal {} of {} from wallet {} to {} on {}, initiated by {}, at {} (risk score {}).",
            w.id,
            crate::describe_amount(w.amount.0, crate::known_decimals(&w.asset), &w.asset),
            w.wallet,
            w.destination,
            w.chain,
            w.initiator,
            self.evaluated_at,
            self.risk_score
        );
        let _ = writeln!(
            s,
            "Policy version {} ({}).",
            self.policy_version, self.policy_hash
        );
        for (i, t) in self.trace.iter().enumerate() {
            let verdict = if t.matched {
                "MATCHED"
            } else {
                "did not match"
            };
            let about = if t.description.is_empty() {
                String::new()
            } else {
                format!(" ({})", t.description)
            };
            let _ = writeln!(s, "Rule {} `{}`{about} {verdict}:", i + 1, t.rule_id);
            if t.checks.is_empty() {
                let _ = writeln!(s, "  - no conditions: matches every withdrawal");
            }
            for c in &t.checks {
                let mark = if c.passed { "ok  " } else { "FAIL" };
                let _ = writeln!(s, "  {mark} {}: {}", c.condition, c.detail);
            }
        }
        match &self.outcome {
            Outcome::Allow => {
                let _ = write!(
                    s,
                    "Decision: ALLOW by rule `{}`",
                    self.rule_id.as_deref().unwrap_or("?")
                );
            }
            Outcome::Block { reason } => match &self.rule_id {
                Some(r) => {
                    let _ = write!(s, "Decision: BLOCK by rule `{r}`: {reason}");
                }
                None => {
                    let _ = write!(s, "Decision: BLOCK: {reason}");
                }
            },
            Outcome::RequireApprovals => {
                let terms: Vec<String> = self
                    .quorum
                    .iter()
                    .map(|t| format!("{} of group `{}`", t.count, t.group))
                    .collect();
                let _ = write!(
                    s,
                    "Decision: REQUIRE APPROVALS by rule `{}`: {}{}",
                    self.rule_id.as_deref().unwrap_or("?"),
                    terms.join(" AND "),
                    if self.exclude_initiator {
                        " (the initiator's own approval does not count)"
                    } else {
                        ""
                    }
                );
                if let Some(e) = self.approval_expiry {
                    let _ = write!(s, "; approvals expire after {e}");
                }
            }
        }
        if let Some(d) = self.delay {
            let _ = write!(
                s,
                "; then a time lock of {d} during which group `{}` may cancel",
                self.cancel_group.as_deref().unwrap_or("?")
            );
        }
        s.push_str(".\n");
        s
    }
}

fn field(name: &'static str, v: &str) -> Result<()> {
    if v.is_empty() || v.len() > MAX_FIELD_LEN || v.chars().any(char::is_control) {
        return Err(PolicyError::InvalidWithdrawal {
            field: name,
            reason: format!("must be 1-{MAX_FIELD_LEN} characters without control characters"),
        });
    }
    Ok(())
}

impl Withdrawal {
    /// Checks the fields and returns the canonical destination.
    pub fn validate(&self) -> Result<String> {
        field("id", &self.id)?;
        field("wallet", &self.wallet)?;
        field("chain", &self.chain)?;
        field("asset", &self.asset)?;
        field("initiator", &self.initiator)?;
        if self.amount.0 == 0 {
            return Err(PolicyError::InvalidWithdrawal {
                field: "amount",
                reason: "must be above zero".into(),
            });
        }
        if !self.tx_digest.is_empty() {
            hex::decode(&self.tx_digest).map_err(|e| PolicyError::InvalidWithdrawal {
                field: "tx_digest",
                reason: format!("not hex: {e}"),
            })?;
        }
        if let Some(source) = &self.source
            && source.validate(&self.chain)? != *source
        {
            return Err(PolicyError::InvalidWithdrawal {
                field: "source.address",
                reason: "not in canonical form".into(),
            });
        }
        check_address(&self.chain, &self.destination)
            .map(|c| c.canonical)
            .map_err(|reason| PolicyError::InvalidWithdrawal {
                field: "destination",
                reason,
            })
    }
}

struct Canon<'a> {
    e: &'a HistoryEntry,
    destination: String,
}

fn list(set: &BTreeSet<String>) -> String {
    set.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// Evaluates `withdrawal` against the policy in force.
///
/// `history` holds withdrawals already approved for signing (the caller's own
/// record: a signer passes what it has signed); entries with the same id as
/// `withdrawal` are ignored. `now` is the evaluation time; `risk_score` is required
/// (a caller without a score must not evaluate: fail closed).
pub fn evaluate(
    active: &ActivePolicy,
    withdrawal: &Withdrawal,
    history: &[HistoryEntry],
    now: Timestamp,
    risk_score: u32,
) -> Result<Decision> {
    let policy = active.policy();
    let destination = withdrawal.validate()?;
    let mut canon = Vec::with_capacity(history.len());
    for (index, e) in history.iter().enumerate() {
        let destination = check_address(&e.chain, &e.destination)
            .map(|c| c.canonical)
            .map_err(|reason| PolicyError::InvalidHistory { index, reason })?;
        canon.push(Canon { e, destination });
    }
    let doc = policy.document();
    let matching_entries: Vec<usize> = policy
        .book_index
        .get(&(withdrawal.chain.clone(), destination.clone()))
        .cloned()
        .unwrap_or_default();
    let initiator_role = policy.role_of(&withdrawal.initiator);
    let native = policy.native_asset(&withdrawal.chain);
    let is_native = native == Some(withdrawal.asset.as_str());

    let mut trace = Vec::new();
    let mut matched = None;
    for (ri, (rule, res)) in doc.rules.iter().zip(&policy.resolved).enumerate() {
        let mut checks = Vec::new();
        let mut push = |condition: &str, passed: bool, detail: String| {
            checks.push(Check {
                condition: condition.into(),
                passed,
                detail,
            });
        };
        if let Some(ws) = &res.wallets {
            let ok = ws.contains(&withdrawal.wallet);
            push(
                "wallet",
                ok,
                format!(
                    "wallet {} {} [{}]",
                    withdrawal.wallet,
                    if ok { "is in" } else { "is not in" },
                    list(ws)
                ),
            );
        }
        if let Some(cs) = &res.chains {
            let ok = cs.contains(&withdrawal.chain);
            push(
                "chain",
                ok,
                format!(
                    "chain {} {} [{}]",
                    withdrawal.chain,
                    if ok { "is in" } else { "is not in" },
                    list(cs)
                ),
            );
        }
        if let Some(a) = &res.assets {
            let ok = a.contains(&withdrawal.asset);
            push(
                "asset",
                ok,
                format!(
                    "asset {} {} [{}]",
                    withdrawal.asset,
                    if ok { "is in" } else { "is not in" },
                    list(a)
                ),
            );
        }
        if let Some(d) = &res.dest {
            let (ok, detail) = destination_check(active, d, &matching_entries, now);
            push("destination", ok, detail);
        }
        if res.initiator_ids.is_some() || res.initiator_roles.is_some() {
            let by_id = res
                .initiator_ids
                .as_ref()
                .is_some_and(|s| s.contains(&withdrawal.initiator));
            let by_role = match (initiator_role, &res.initiator_roles) {
                (Some(role), Some(roles)) => roles.contains(role),
                _ => false,
            };
            let ok = by_id || by_role;
            let role = initiator_role.map_or("no role".to_string(), |r| format!("role {r}"));
            push(
                "initiator",
                ok,
                format!(
                    "initiator {} ({role}) {} the initiators [{}] / roles [{}]",
                    withdrawal.initiator,
                    if ok { "is among" } else { "is not among" },
                    res.initiator_ids.as_ref().map(list).unwrap_or_default(),
                    res.initiator_roles.as_ref().map(list).unwrap_or_default(),
                ),
            );
        }
        if let Some((lo, hi)) = res.amount {
            let a = withdrawal.amount.0;
            let ok = lo <= a && a <= hi;
            // What a person reads: units and base units.
            let asset = &withdrawal.asset;
            let shown = |v: u128| crate::describe_amount(v, crate::known_decimals(asset), asset);
            let hi_s = if hi == u128::MAX {
                "unbounded".to_string()
            } else {
                shown(hi)
            };
            let detail = if a < lo {
                format!("amount {} is below the minimum {}", shown(a), shown(lo))
            } else if a > hi {
                format!("amount {} is above the maximum {}", shown(a), shown(hi))
            } else {
                format!("amount {} is within [{}, {hi_s}]", shown(a), shown(lo))
            };
            push("amount", ok, detail);
        }
        if let Some(f) = &rule.fee {
            let (ok, detail) = check_fee(f, withdrawal, native);
            push("fee", ok, detail);
        }
        if let Some(v) = &rule.velocity {
            let since = now.0.saturating_sub(v.window.secs_i64());
            let per_asset = v.per.contains(&VelocityKey::Asset);
            let mut amounts: Option<u128> = Some(withdrawal.amount.0);
            // Fees are counted only for the native asset: it is what they are paid in.
            let mut fees: Option<u128> = Some(if is_native { withdrawal.fee_cap.0 } else { 0 });
            let mut count: u64 = 1;
            for h in &canon {
                let e = h.e;
                if e.id == withdrawal.id || e.at.0 <= since {
                    continue;
                }
                // Every key but the asset itself (for `asset`: the same chain).
                let others = v.per.iter().all(|k| match k {
                    VelocityKey::Wallet => e.wallet == withdrawal.wallet,
                    VelocityKey::Asset => e.chain == withdrawal.chain,
                    VelocityKey::Destination => {
                        e.chain == withdrawal.chain && h.destination == destination
                    }
                    VelocityKey::Initiator => e.initiator == withdrawal.initiator,
                });
                if !others {
                    continue;
                }
                if !per_asset || e.asset == withdrawal.asset {
                    // An overflowing total is certainly over any limit: never wrap.
                    amounts = amounts.and_then(|s| s.checked_add(e.amount.0));
                    count = count.saturating_add(1);
                }
                // A token withdrawal on this chain paid its fee in the native asset too.
                if is_native && e.chain == withdrawal.chain {
                    fees = fees.and_then(|s| s.checked_add(e.fee_cap.0));
                }
            }
            let sum = amounts.zip(fees).and_then(|(a, f)| a.checked_add(f));
            let amount_ok = match (v.max_amount, sum) {
                (None, _) => true,
                (Some(m), Some(s)) => s <= m.0,
                (Some(_), None) => false,
            };
            let count_ok = v.max_count.is_none_or(|m| count <= m);
            let per: Vec<&str> = v
                .per
                .iter()
                .map(|k| match k {
                    VelocityKey::Wallet => "wallet",
                    VelocityKey::Asset => "asset",
                    VelocityKey::Destination => "destination",
                    VelocityKey::Initiator => "initiator",
                })
                .collect();
            let big = || "more than 2^128".to_string();
            let sum_s = sum.map_or_else(big, |s| s.to_string());
            let parts = if is_native {
                format!(
                    " (amounts {} + fee caps {})",
                    amounts.map_or_else(big, |s| s.to_string()),
                    fees.map_or_else(big, |s| s.to_string())
                )
            } else {
                String::new()
            };
            let mut detail = format!(
                "over the last {} per [{}], including this one: total {sum_s}{parts} in {count} withdrawal(s)",
                v.window,
                per.join(", ")
            );
            if let Some(m) = v.max_amount {
                let _ = write!(
                    detail,
                    "; amount limit {m} {}",
                    if amount_ok { "kept" } else { "EXCEEDED" }
                );
            }
            if let Some(m) = v.max_count {
                let _ = write!(
                    detail,
                    "; count limit {m} {}",
                    if count_ok { "kept" } else { "EXCEEDED" }
                );
            }
            push("velocity", amount_ok && count_ok, detail);
        }
        if res.has_time {
            let (d, h) = (now.weekday(), now.hour());
            let day_ok = res.days_mask & (1 << d) != 0;
            let hour_ok = res.hours_mask & (1 << h) != 0;
            let t = rule.time.as_ref();
            push(
                "time",
                day_ok && hour_ok,
                format!(
                    "{now} is {} {h:02}h UTC; window {} {:02}h-{:02}h UTC: {}",
                    day_name(d),
                    t.and_then(|t| t.days.as_ref())
                        .map_or("every day".to_string(), |ds| ds.join(",")),
                    t.map_or(0, |t| t.from_hour),
                    t.map_or(24, |t| t.to_hour),
                    match (day_ok, hour_ok) {
                        (true, true) => "inside",
                        (false, _) => "wrong day",
                        (true, false) => "outside the hours",
                    }
                ),
            );
        }
        if let Some((lo, hi)) = res.risk {
            let ok = lo <= risk_score && risk_score <= hi;
            let hi_s = if hi == u32::MAX {
                "unbounded".to_string()
            } else {
                hi.to_string()
            };
            push(
                "risk",
                ok,
                format!(
                    "risk score {risk_score} {} [{lo}, {hi_s}]",
                    if ok { "is within" } else { "is outside" }
                ),
            );
        }
        let all = checks.iter().all(|c| c.passed);
        trace.push(RuleTrace {
            rule_id: rule.id.clone(),
            description: rule.description.clone(),
            matched: all,
            checks,
        });
        if all {
            matched = Some(ri);
            break;
        }
    }

    let summary = WithdrawalSummary {
        id: withdrawal.id.clone(),
        wallet: withdrawal.wallet.clone(),
        chain: withdrawal.chain.clone(),
        asset: withdrawal.asset.clone(),
        destination,
        amount: withdrawal.amount,
        initiator: withdrawal.initiator.clone(),
    };
    let mut decision = Decision {
        policy_hash: policy.hash(),
        policy_version: policy.version(),
        withdrawal: summary,
        evaluated_at: now,
        risk_score,
        rule_id: None,
        rule_index: None,
        outcome: Outcome::Block {
            reason: "no rule matched: blocked by default".into(),
        },
        quorum: Vec::new(),
        exclude_initiator: false,
        delay: None,
        cancel_group: None,
        approval_expiry: None,
        trace,
    };
    if let Some(ri) = matched {
        let rule = &doc.rules[ri];
        decision.rule_id = Some(rule.id.clone());
        decision.rule_index = Some(ri);
        decision.delay = rule.delay;
        decision.cancel_group = rule.cancel_group.clone();
        decision.outcome = match rule.action {
            ActionKind::Allow => Outcome::Allow,
            ActionKind::Block => Outcome::Block {
                reason: rule.reason.clone().unwrap_or_default(),
            },
            ActionKind::RequireApprovals => {
                if let Some(q) = &rule.approvals {
                    decision.quorum = q
                        .all
                        .iter()
                        .map(|t| RequiredTerm {
                            group: t.group.clone(),
                            count: t.count,
                        })
                        .collect();
                    decision.exclude_initiator = q.exclude_initiator;
                }
                decision.approval_expiry =
                    Some(rule.approval_expiry.unwrap_or(doc.settings.approval_expiry));
                Outcome::RequireApprovals
            }
        };
    }
    Ok(decision)
}

fn destination_check(
    active: &ActivePolicy,
    d: &DestSet,
    entries: &[usize],
    now: Timestamp,
) -> (bool, String) {
    let book = &active.policy().document().address_book;
    if matches!(d, DestSet::Any) {
        return (true, "any destination is allowed".into());
    }
    if entries.is_empty() {
        return (false, "destination is not in the address book".into());
    }
    let mut reasons = Vec::new();
    for &i in entries {
        let Some(e) = book.get(i) else { continue };
        let wanted = match d {
            DestSet::Any => true,
            DestSet::Whitelisted => e.whitelisted,
            DestSet::Entries(set) => set.contains(&i),
        };
        if !wanted {
            reasons.push(match d {
                DestSet::Whitelisted => format!("address-book entry {} is not whitelisted", e.id),
                _ => format!("address-book entry {} is not one this rule names", e.id),
            });
            continue;
        }
        let usable_from = active.entry_usable_from(i);
        if now < usable_from {
            reasons.push(format!(
                "address-book entry {} is in its cooling period until {usable_from} (new addresses wait before use)",
                e.id
            ));
            continue;
        }
        return (
            true,
            format!(
                "destination is address-book entry {} ({})",
                e.id,
                e.labels.join(", ")
            ),
        );
    }
    (false, reasons.join("; "))
}
