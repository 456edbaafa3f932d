//! Which policy is in force, and how updates take effect.
//!
//! - Only admin-verified bundles enter ([`VerifiedBundle`]).
//! - Versions strictly increase.
//! - A pure tightening (see [`relaxation`]) takes effect at once; anything else
//!   waits the `change_delay` of the policy *in force*, so an update cannot shorten
//!   its own delay. Until then approvals naming the new hash are refused.
//! - An address-book entry that is new (id, chain and address not in the policy in
//!   force) is usable by rules only `whitelist_delay` after the update takes effect.
//!
//! The state is plain data: callers persist it and pass it back in (no I/O here).

use crate::bundle::VerifiedBundle;
use crate::document::{ActionKind, PolicyDocument, Rule};
use crate::error::{PolicyError, Result};
use crate::policy::{Policy, PolicyHash};
use crate::value::Timestamp;

/// A policy with the times that govern it.
#[derive(Debug, Clone)]
pub struct ActivePolicy {
    policy: Policy,
    effective_at: Timestamp,
    usable_from: Vec<Timestamp>,
}

impl ActivePolicy {
    /// A first policy (no predecessor): in force from `now`; every address-book entry
    /// waits `whitelist_delay` from `now`.
    pub fn genesis(bundle: VerifiedBundle, now: Timestamp) -> Self {
        Self::assumed(bundle.into_policy(), now)
    }

    /// A policy taken as in force since `since` *without* bundle verification, for
    /// tooling (`custos policy explain`) and tests. Entries are usable from
    /// `since + whitelist_delay`. Nodes must use [`ActivePolicy::genesis`] or [`PolicyState`].
    pub fn assumed(policy: Policy, since: Timestamp) -> Self {
        let delay = policy.document().settings.whitelist_delay;
        let usable_from = vec![since.plus(delay); policy.document().address_book.len()];
        ActivePolicy {
            policy,
            effective_at: since,
            usable_from,
        }
    }

    /// Restores persisted state (values previously read from the accessors).
    pub fn restore(
        bundle: VerifiedBundle,
        effective_at: Timestamp,
        usable_from: Vec<Timestamp>,
    ) -> Result<Self> {
        let policy = bundle.into_policy();
        if usable_from.len() != policy.document().address_book.len() {
            return Err(PolicyError::UpdateRefused(
                "usable_from does not match the address book".into(),
            ));
        }
        Ok(ActivePolicy {
            policy,
            effective_at,
            usable_from,
        })
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }
    /// When it takes (or took) effect.
    pub fn effective_at(&self) -> Timestamp {
        self.effective_at
    }
    /// Per address-book entry, when rules may first use it.
    pub fn usable_from(&self) -> &[Timestamp] {
        &self.usable_from
    }
    /// When entry `i` becomes usable (never, for an unknown index).
    pub fn entry_usable_from(&self, i: usize) -> Timestamp {
        self.usable_from
            .get(i)
            .copied()
            .unwrap_or(Timestamp(i64::MAX))
    }
}

/// How an accepted update takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateEffect {
    /// A pure tightening: in force now.
    Immediate,
    /// A relaxation: pending until this time.
    Delayed(Timestamp),
}

/// The policy in force and at most one pending update.
#[derive(Debug, Clone)]
pub struct PolicyState {
    current: ActivePolicy,
    pending: Option<ActivePolicy>,
}

impl PolicyState {
    /// Starts from a first bundle.
    pub fn genesis(bundle: VerifiedBundle, now: Timestamp) -> Self {
        PolicyState {
            current: ActivePolicy::genesis(bundle, now),
            pending: None,
        }
    }

    /// Restores persisted state.
    pub fn restore(current: ActivePolicy, pending: Option<ActivePolicy>) -> Self {
        PolicyState { current, pending }
    }

    /// Promotes a pending update whose time has come.
    pub fn advance(&mut self, now: Timestamp) {
        if self.pending.as_ref().is_some_and(|p| now >= p.effective_at)
            && let Some(p) = self.pending.take()
        {
            self.current = p;
        }
    }

    /// The policy in force at `now`.
    pub fn in_force(&self, now: Timestamp) -> &ActivePolicy {
        match &self.pending {
            Some(p) if now >= p.effective_at => p,
            _ => &self.current,
        }
    }

    /// The pending update, if any.
    pub fn pending(&self) -> Option<&ActivePolicy> {
        self.pending.as_ref()
    }

    /// The policy a request names, only if it is the one in force at `now`.
    pub fn policy_for(&self, hash: &PolicyHash, now: Timestamp) -> Result<&ActivePolicy> {
        let in_force = self.in_force(now);
        if in_force.policy.hash() == *hash {
            return Ok(in_force);
        }
        match &self.pending {
            Some(p) if p.policy.hash() == *hash => Err(PolicyError::NotYetEffective {
                hash: hash.to_string(),
                effective_at: p.effective_at.0,
                now: now.0,
            }),
            _ => Err(PolicyError::UnknownPolicy(hash.to_string())),
        }
    }

    /// Accepts a verified update at `now`, replacing any pending one.
    pub fn propose(&mut self, bundle: VerifiedBundle, now: Timestamp) -> Result<UpdateEffect> {
        self.advance(now);
        let new = bundle.into_policy();
        let cur = &self.current.policy;
        let floor = self
            .pending
            .as_ref()
            .map_or(cur.version(), |p| p.policy.version().max(cur.version()));
        if new.version() <= floor {
            return Err(PolicyError::UpdateRefused(format!(
                "version {} is not above {floor}: updates must increase the version",
                new.version()
            )));
        }
        let settings = cur.document().settings;
        let (effect, effective_at) = match relaxation(cur.document(), new.document()) {
            None => (UpdateEffect::Immediate, now),
            Some(_) => {
                let at = now.plus(settings.change_delay);
                (UpdateEffect::Delayed(at), at)
            }
        };
        let old_book = &cur.document().address_book;
        let usable_from = new
            .document()
            .address_book
            .iter()
            .map(|e| {
                old_book
                    .iter()
                    // Newly whitelisted counts as new: it cools down like an added address.
                    .position(|o| {
                        o.id == e.id
                            && o.chain == e.chain
                            && o.address == e.address
                            && (o.whitelisted || !e.whitelisted)
                    })
                    .map(|i| self.current.entry_usable_from(i))
                    .unwrap_or_else(|| effective_at.plus(settings.whitelist_delay))
            })
            .collect();
        let active = ActivePolicy {
            policy: new,
            effective_at,
            usable_from,
        };
        match effect {
            UpdateEffect::Immediate => {
                self.current = active;
                self.pending = None;
            }
            UpdateEffect::Delayed(_) => self.pending = Some(active),
        }
        Ok(effect)
    }
}

/// Why `new` is not a pure tightening of `old`, or `None` when it is.
///
/// Tightenings (immediate): raising delays; listing keys under `retired_keys`;
/// removing address-book entries or their whitelisting; removing approvers from groups; revoking approvers; inserting
/// `block` rules anywhere; turning a rule into a `block` rule. Everything else
/// (including harmless-looking edits) counts as a relaxation and is delayed:
/// erring towards the delay is the safe side.
pub fn relaxation(old: &PolicyDocument, new: &PolicyDocument) -> Option<String> {
    let (s, t) = (&old.settings, &new.settings);
    if t.whitelist_delay < s.whitelist_delay
        || t.change_delay < s.change_delay
        || t.approval_expiry > s.approval_expiry
    {
        return Some("settings relaxed".into());
    }
    if new.wallet_groups != old.wallet_groups {
        return Some("wallet groups changed".into());
    }
    if new.webauthn != old.webauthn {
        // Another RP ID or origin is another place passkeys may approve from.
        return Some("webauthn relying party changed".into());
    }
    // Retiring a key only restricts (the key never signs again, and its
    // shares may be destroyed); taking a key off the list is a relaxation.
    if let Some(k) = old
        .retired_keys
        .iter()
        .find(|k| !new.retired_keys.contains(k))
    {
        return Some(format!("key {k:?} taken off retired_keys"));
    }
    if new.native_assets != old.native_assets {
        // Decides where relative fee bounds apply and which velocity totals
        // count fees: a change can loosen either.
        return Some("native assets changed".into());
    }
    for e in &new.address_book {
        let kept = old.address_book.iter().any(|o| {
            o.id == e.id
                && o.chain == e.chain
                && o.address == e.address
                && o.labels == e.labels
                && (o.whitelisted || !e.whitelisted)
        });
        if !kept {
            return Some(format!("address-book entry {:?} added or changed", e.id));
        }
    }
    for a in &new.approvers {
        let kept = old.approvers.iter().any(|o| {
            o.id == a.id
                && o.ed25519 == a.ed25519
                && o.role == a.role
                && o.webauthn_p256 == a.webauthn_p256
                && o.webauthn_ed25519 == a.webauthn_ed25519
                && (!o.revoked || a.revoked)
        });
        if !kept {
            return Some(format!("approver {:?} added, changed or reinstated", a.id));
        }
    }
    // A new or changed request key is a new way to initiate; dropping the
    // last one turns request signing off.
    if !old.request_keys.is_empty() && new.request_keys.is_empty() {
        return Some("request signing turned off".into());
    }
    for k in &new.request_keys {
        let kept = old.request_keys.iter().any(|o| {
            o.client == k.client
                && o.ed25519 == k.ed25519
                && o.p256 == k.p256
                && (!o.revoked || k.revoked)
        });
        if !kept {
            return Some(format!(
                "request key of client {:?} added, changed or reinstated",
                k.client
            ));
        }
    }
    for (g, members) in &new.groups {
        match old.groups.get(g) {
            Some(om) if members.iter().all(|m| om.contains(m)) => {}
            _ => return Some(format!("group {g:?} added or grown")),
        }
    }
    let mut j = 0;
    for r in &new.rules {
        let old_next = old.rules.get(j);
        if old_next == Some(r) {
            j += 1;
        } else if r.action == ActionKind::Block {
            // Same id and same conditions: a rule turned into a block. Anything else
            // is a new block rule inserted here (and `old_next` must still follow).
            if old_next.is_some_and(|o| o.id == r.id && same_conditions(o, r)) {
                j += 1;
            }
        } else {
            return Some(format!("rule {:?} added, changed or moved", r.id));
        }
    }
    if j != old.rules.len() {
        return Some("a rule was removed".into());
    }
    None
}

/// True when two rules match exactly the same withdrawals.
fn same_conditions(a: &Rule, b: &Rule) -> bool {
    let strip = |r: &Rule| Rule {
        description: String::new(),
        action: ActionKind::Block,
        reason: None,
        approvals: None,
        delay: None,
        cancel_group: None,
        approval_expiry: None,
        fee_bumps: crate::document::FeeBumps::WithinCap,
        approval_methods: None,
        ..r.clone()
    };
    strip(a) == strip(b)
}
