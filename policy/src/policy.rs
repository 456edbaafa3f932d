//! Parsing, hashing and validating a policy document into a [`Policy`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::address::{chain_kind, check_address};
use crate::document::{
    ActionKind, Destination, FeeBumps, PolicyDocument, QuorumSpec, Rule, VelocityKey,
};
use crate::error::{Issue, PolicyError, Result};
use crate::quorum::{self, Term};

/// Documents larger than this are refused before parsing.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// Domain separation for the policy hash (see FORMATS.md).
pub const POLICY_HASH_DOMAIN: &[u8] = b"custos.policy.v1\x00";

/// Content address of a policy document: SHA-256 over the domain tag and the exact
/// document bytes. Approvals, bundles and the audit log refer to policies by it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyHash(pub [u8; 32]);

impl PolicyHash {
    /// Hash of raw document bytes.
    pub fn of_document(bytes: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(POLICY_HASH_DOMAIN);
        h.update(bytes);
        PolicyHash(h.finalize().into())
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|e| {
            PolicyError::Value(format!("policy hash {s:?} is not 64 hex digits: {e}"))
        })?;
        Ok(PolicyHash(out))
    }
}

impl fmt::Display for PolicyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PolicyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PolicyHash({self})")
    }
}

impl Serialize for PolicyHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for PolicyHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PolicyHash::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// Destinations a rule can reach, resolved to address-book entry indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DestSet {
    Any,
    Whitelisted,
    Entries(BTreeSet<usize>),
}

/// A rule with its names resolved, ready to evaluate.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub wallets: Option<BTreeSet<String>>,
    pub chains: Option<BTreeSet<String>>,
    pub assets: Option<BTreeSet<String>>,
    pub dest: Option<DestSet>,
    pub initiator_ids: Option<BTreeSet<String>>,
    pub initiator_roles: Option<BTreeSet<String>>,
    pub amount: Option<(u128, u128)>,
    pub days_mask: u8,
    pub hours_mask: u32,
    pub has_time: bool,
    pub risk: Option<(u32, u32)>,
    /// Per quorum term: eligible approver indices (revoked ones included, refused later).
    pub terms: Vec<(String, BTreeSet<usize>, usize)>,
    pub cancel: Option<BTreeSet<usize>>,
}

/// A parsed, validated policy and its hash.
#[derive(Debug, Clone)]
pub struct Policy {
    doc: PolicyDocument,
    hash: PolicyHash,
    keys: Vec<Option<VerifyingKey>>,
    /// Each approver's passkeys (same order as the document's approvers).
    passkeys: Vec<Vec<crate::webauthn::PasskeyCredentialKey>>,
    /// Active request keys by client id.
    pub(crate) request_keys: BTreeMap<String, crate::request_key::RequestVerifier>,
    pub(crate) resolved: Vec<Resolved>,
    /// (chain, canonical address) → entry indices.
    pub(crate) book_index: BTreeMap<(String, String), Vec<usize>>,
    warnings: Vec<Issue>,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Day names accepted in `time.days`, Monday first.
pub fn day_name(i: u8) -> &'static str {
    DAYS.get(usize::from(i)).copied().unwrap_or("?")
}

fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@'))
}

/// Parses raw document bytes: JSON when the first non-blank byte is `{`, TOML otherwise.
pub fn parse_document(bytes: &[u8]) -> Result<PolicyDocument> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(PolicyError::Parse(format!(
            "document is {} bytes, the limit is {MAX_DOCUMENT_BYTES}",
            bytes.len()
        )));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| PolicyError::Parse(format!("document is not UTF-8: {e}")))?;
    if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| PolicyError::Parse(format!("JSON: {e}")))
    } else {
        toml::from_str(text).map_err(|e| PolicyError::Parse(format!("TOML: {e}")))
    }
}

impl Policy {
    /// Parses and validates document bytes. Errors list every problem found;
    /// warnings (unreachable or overlapping rules, unchecksummed addresses) are kept
    /// on the policy.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let doc = parse_document(bytes)?;
        Self::from_document(doc, PolicyHash::of_document(bytes))
    }

    /// Validates an already parsed document; `hash` must be the hash of its bytes.
    pub fn from_document(doc: PolicyDocument, hash: PolicyHash) -> Result<Self> {
        let mut v = Validator {
            errors: Vec::new(),
            warnings: Vec::new(),
        };
        let built = v.build(doc, hash);
        match built {
            Some(mut p) if v.errors.is_empty() => {
                p.warnings = v.warnings;
                Ok(p)
            }
            _ => Err(PolicyError::Invalid(v.errors)),
        }
    }

    /// The document as written.
    pub fn document(&self) -> &PolicyDocument {
        &self.doc
    }

    /// Content address of the document bytes.
    pub fn hash(&self) -> PolicyHash {
        self.hash
    }

    /// Document version.
    pub fn version(&self) -> u64 {
        self.doc.version
    }

    /// Non-fatal findings.
    pub fn warnings(&self) -> &[Issue] {
        &self.warnings
    }

    /// Index of an approver by id.
    pub(crate) fn approver_index(&self, id: &str) -> Option<usize> {
        self.doc.approvers.iter().position(|a| a.id == id)
    }

    pub(crate) fn approver_key(&self, idx: usize) -> Option<&VerifyingKey> {
        self.keys.get(idx).and_then(Option::as_ref)
    }

    /// The passkeys registered for approver `idx`.
    pub(crate) fn approver_passkeys(&self, idx: usize) -> &[crate::webauthn::PasskeyCredentialKey] {
        self.passkeys.get(idx).map_or(&[], Vec::as_slice)
    }

    /// The approver (not revoked) whose registered passkey has credential id
    /// `credential_id`, with that passkey: how the approval app resolves a
    /// passkey sign-in to an approver (credential ids are unique across
    /// the document, checked when it is loaded).
    pub fn passkey_owner(
        &self,
        credential_id: &[u8],
    ) -> Option<(&str, &crate::webauthn::PasskeyCredentialKey)> {
        self.doc
            .approvers
            .iter()
            .enumerate()
            .filter(|(_, a)| !a.revoked)
            .find_map(|(i, a)| {
                self.approver_passkeys(i)
                    .iter()
                    .find(|c| c.id == credential_id)
                    .map(|c| (a.id.as_str(), c))
            })
    }

    /// The credential ids of approver `id`'s passkeys (empty when it has
    /// none or is not an approver).
    pub fn passkey_ids(&self, id: &str) -> Vec<Vec<u8>> {
        self.approver_index(id)
            .map(|i| {
                self.approver_passkeys(i)
                    .iter()
                    .map(|c| c.id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The relying party passkeys are verified for (`[webauthn]`), if the
    /// document has one.
    pub fn relying_party(&self) -> Option<crate::webauthn::RelyingParty<'_>> {
        self.doc
            .webauthn
            .as_ref()
            .map(|w| crate::webauthn::RelyingParty {
                rp_id: &w.rp_id,
                origins: &w.origins,
            })
    }

    /// Role of an initiator id, when it is an approver of this policy.
    pub(crate) fn role_of(&self, id: &str) -> Option<&str> {
        self.doc
            .approvers
            .iter()
            .find(|a| a.id == id)
            .map(|a| a.role.as_str())
    }
}

struct Validator {
    errors: Vec<Issue>,
    warnings: Vec<Issue>,
}

impl Validator {
    fn err(&mut self, path: impl Into<String>, msg: impl Into<String>) {
        self.errors.push(Issue::new(path, msg));
    }
    fn warn(&mut self, path: impl Into<String>, msg: impl Into<String>) {
        self.warnings.push(Issue::new(path, msg));
    }

    /// Parses an approver's passkeys; a credential id used twice (by anyone)
    /// is an error: one authenticator would count twice in a quorum.
    fn passkeys(
        &mut self,
        doc: &PolicyDocument,
        path: &str,
        a: &crate::document::Approver,
        seen: &mut BTreeMap<Vec<u8>, String>,
    ) -> Vec<crate::webauthn::PasskeyCredentialKey> {
        use crate::webauthn::{PasskeyAlg, PasskeyAssertion, PasskeyCredentialKey, PasskeyKey};
        let mut out = Vec::new();
        for (field, alg, cred) in [
            ("webauthn_p256", PasskeyAlg::Es256, &a.webauthn_p256),
            ("webauthn_ed25519", PasskeyAlg::EdDsa, &a.webauthn_ed25519),
        ] {
            let Some(cred) = cred else { continue };
            let at = format!("{path}.{field}");
            if doc.webauthn.is_none() {
                self.err(
                    &at,
                    "a passkey needs the document's [webauthn] section (rp_id, origins)",
                );
            }
            let probe = PasskeyAssertion {
                credential_id: cred.credential_id.clone(),
                ..PasskeyAssertion::from_bytes(b"", b"", b"", b"")
            };
            let id = match probe.credential_id_bytes() {
                Ok(id) if (16..=1023).contains(&id.len()) => id,
                Ok(id) => {
                    self.err(
                        &at,
                        format!(
                            "credential_id is {} bytes; WebAuthn ids are 16..=1023",
                            id.len()
                        ),
                    );
                    continue;
                }
                Err(e) => {
                    self.err(&at, format!("credential_id: {e}"));
                    continue;
                }
            };
            if let Some(other) = seen.insert(id.clone(), a.id.clone()) {
                self.err(
                    &at,
                    format!("credential_id is also registered for approver {other:?}"),
                );
            }
            match PasskeyKey::parse(alg, &cred.public_key) {
                Ok(key) => out.push(PasskeyCredentialKey { id, key }),
                Err(e) => self.err(&at, e.to_string()),
            }
        }
        out
    }

    fn webauthn_settings(&mut self, doc: &PolicyDocument) {
        let Some(w) = &doc.webauthn else { return };
        if w.rp_id.is_empty() || w.rp_id.len() > 253 || w.rp_id.contains(['/', ':', ' ']) {
            self.err(
                "webauthn.rp_id",
                "must be a domain name (for example custos.test)",
            );
        }
        if w.origins.is_empty() {
            self.err(
                "webauthn.origins",
                "list at least one origin (https://approve.example.com)",
            );
        }
        for (i, o) in w.origins.iter().enumerate() {
            let ok = (o.starts_with("https://") || o.starts_with("http://localhost"))
                && !o.ends_with('/')
                && o.len() <= 512;
            if !ok {
                self.err(
                    format!("webauthn.origins[{i}]"),
                    format!("{o:?} is not an origin: https://host[:port], no path or trailing slash (http only for localhost)"),
                );
            }
        }
    }

    fn nonempty_list(&mut self, path: &str, list: &Option<Vec<String>>) {
        if list.as_ref().is_some_and(Vec::is_empty) {
            self.err(
                path,
                "empty list matches nothing; leave the field out to match any",
            );
        }
    }

    fn build(&mut self, doc: PolicyDocument, hash: PolicyHash) -> Option<Policy> {
        if doc.version == 0 {
            self.err("version", "must be at least 1");
        }
        // Wallet groups.
        for (name, members) in &doc.wallet_groups {
            if !valid_id(name) {
                self.err(
                    format!("wallet_groups.{name}"),
                    "name must be 1-128 characters of [A-Za-z0-9-_.:@]",
                );
            }
            if members.is_empty() {
                self.err(format!("wallet_groups.{name}"), "group is empty");
            }
        }
        // Address book.
        let mut book_index: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
        let mut entry_ids = BTreeSet::new();
        let mut labels = BTreeSet::new();
        for (i, e) in doc.address_book.iter().enumerate() {
            let path = format!("address_book[{i}] ({})", e.id);
            if !valid_id(&e.id) {
                self.err(&path, "id must be 1-128 characters of [A-Za-z0-9-_.:@]");
            }
            if !entry_ids.insert(e.id.clone()) {
                self.err(&path, format!("duplicate address-book id {:?}", e.id));
            }
            labels.extend(e.labels.iter().cloned());
            match check_address(&e.chain, &e.address) {
                Ok(c) => {
                    if c.unchecksummed {
                        self.warn(
                            &path,
                            format!(
                                "EVM address is not checksummed; write it as {}",
                                c.canonical
                            ),
                        );
                    }
                    let key = (e.chain.clone(), c.canonical.clone());
                    if let Some(prev) = book_index.get(&key) {
                        let others: Vec<&str> = prev
                            .iter()
                            .filter_map(|&p| doc.address_book.get(p))
                            .map(|p| p.id.as_str())
                            .collect();
                        self.err(&path, format!("same address as entry {others:?}"));
                    }
                    book_index.entry(key).or_default().push(i);
                }
                Err(m) => {
                    self.err(&path, m);
                }
            }
        }
        // Approvers.
        let mut keys = Vec::new();
        let mut approver_ids = BTreeSet::new();
        let mut seen_keys = BTreeMap::new();
        let mut passkeys = Vec::new();
        let mut seen_credentials = BTreeMap::new();
        for (i, a) in doc.approvers.iter().enumerate() {
            let path = format!("approvers[{i}] ({})", a.id);
            if !valid_id(&a.id) {
                self.err(&path, "id must be 1-128 characters of [A-Za-z0-9-_.:@]");
            }
            if !approver_ids.insert(a.id.clone()) {
                self.err(&path, format!("duplicate approver id {:?}", a.id));
            }
            if a.role.is_empty() {
                self.err(&path, "role is empty");
            }
            let own_passkeys = self.passkeys(&doc, &path, a, &mut seen_credentials);
            if a.ed25519.is_empty() && own_passkeys.is_empty() {
                self.err(
                    &path,
                    "needs an ed25519 key, a passkey (webauthn_p256, webauthn_ed25519), or both",
                );
            }
            passkeys.push(own_passkeys);
            if a.ed25519.is_empty() {
                keys.push(None);
                continue;
            }
            match crate::keys::PublicKey::from_hex(&a.ed25519) {
                Ok(k) => {
                    if let Some(other) = seen_keys.insert(k.0.to_bytes(), a.id.clone()) {
                        // Two ids, one key: one person would count twice in a quorum.
                        self.err(
                            &path,
                            format!("ed25519 key is also used by approver {other:?}"),
                        );
                    }
                    keys.push(Some(k.0));
                }
                Err(e) => {
                    self.err(&path, format!("ed25519: {e}"));
                    keys.push(None);
                }
            }
        }
        self.webauthn_settings(&doc);
        // Request keys.
        let mut request_keys = BTreeMap::new();
        let mut clients = BTreeSet::new();
        for (i, k) in doc.request_keys.iter().enumerate() {
            let path = format!("request_keys[{i}] ({})", k.client);
            if !valid_id(&k.client) {
                self.err(&path, "client must be 1-128 characters of [A-Za-z0-9-_.:@]");
            }
            if !clients.insert(k.client.clone()) {
                self.err(&path, format!("duplicate client {:?}", k.client));
            }
            match crate::request_key::RequestVerifier::parse(k) {
                Ok(key) if !k.revoked => {
                    request_keys.insert(k.client.clone(), key);
                }
                Ok(_) => {}
                Err(e) => self.err(&path, e),
            }
        }
        // Approver groups.
        let index_of = |id: &str| doc.approvers.iter().position(|a| a.id == id);
        let mut group_members: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
        for (name, members) in &doc.groups {
            let path = format!("groups.{name}");
            if !valid_id(name) {
                self.err(&path, "name must be 1-128 characters of [A-Za-z0-9-_.:@]");
            }
            let mut set = BTreeSet::new();
            for m in members {
                match index_of(m) {
                    Some(i) => {
                        if !set.insert(i) {
                            self.warn(&path, format!("member {m:?} listed twice"));
                        }
                    }
                    None => self.err(&path, format!("unknown approver {m:?}")),
                }
            }
            if set.iter().all(|&i| doc.approvers[i].revoked) {
                self.warn(&path, "group has no active (unrevoked) member");
            }
            group_members.insert(name.clone(), set);
        }
        // Native assets.
        for (chain, asset) in &doc.native_assets {
            let path = format!("native_assets.{chain}");
            if chain_kind(chain).is_none() {
                self.err(&path, format!("unknown chain {chain:?}"));
            }
            if asset.is_empty()
                || asset.len() > crate::eval::MAX_FIELD_LEN
                || asset.chars().any(char::is_control)
            {
                self.err(
                    &path,
                    "asset symbol must be 1-256 characters without control characters",
                );
            }
        }
        // Rules.
        let mut rule_ids = BTreeSet::new();
        let mut resolved = Vec::new();
        for (ri, r) in doc.rules.iter().enumerate() {
            let path = format!("rules[{ri}] ({})", r.id);
            if !valid_id(&r.id) {
                self.err(&path, "id must be 1-128 characters of [A-Za-z0-9-_.:@]");
            }
            if !rule_ids.insert(r.id.clone()) {
                self.err(&path, format!("duplicate rule id {:?}", r.id));
            }
            resolved.push(self.resolve_rule(&doc, &path, r, &group_members, &entry_ids, &labels));
        }
        if doc.rules.is_empty() {
            self.warn("rules", "no rules: every withdrawal is blocked");
        }
        if request_keys.is_empty() {
            for (i, r) in doc.rules.iter().enumerate() {
                if let Some(what) = initiator_condition(r) {
                    self.warn(
                        format!("rules[{i}] ({})", r.id),
                        format!(
                            "{what} depends on the initiator, but no [[request_keys]] prove it: signers take the coordinator's word for who asked"
                        ),
                    );
                }
            }
        }
        let policy = Policy {
            doc,
            hash,
            keys,
            passkeys,
            request_keys,
            resolved,
            book_index,
            warnings: Vec::new(),
        };
        if self.errors.is_empty() {
            self.reachability(&policy);
        }
        Some(policy)
    }

    #[allow(clippy::too_many_arguments)]
    fn resolve_rule(
        &mut self,
        doc: &PolicyDocument,
        path: &str,
        r: &Rule,
        group_members: &BTreeMap<String, BTreeSet<usize>>,
        entry_ids: &BTreeSet<String>,
        labels: &BTreeSet<String>,
    ) -> Resolved {
        for (name, l) in [
            ("wallets", &r.wallets),
            ("wallet_groups", &r.wallet_groups),
            ("chains", &r.chains),
            ("assets", &r.assets),
            ("initiators", &r.initiators),
            ("initiator_roles", &r.initiator_roles),
        ] {
            self.nonempty_list(&format!("{path}.{name}"), l);
        }
        let wallets = if r.wallets.is_none() && r.wallet_groups.is_none() {
            None
        } else {
            let mut set: BTreeSet<String> = r.wallets.iter().flatten().cloned().collect();
            for g in r.wallet_groups.iter().flatten() {
                match doc.wallet_groups.get(g) {
                    Some(ws) => set.extend(ws.iter().cloned()),
                    None => self.err(
                        format!("{path}.wallet_groups"),
                        format!("unknown wallet group {g:?}"),
                    ),
                }
            }
            Some(set)
        };
        if let Some(chains) = &r.chains {
            for c in chains {
                if chain_kind(c).is_none() {
                    self.err(format!("{path}.chains"), format!("unknown chain {c:?}"));
                }
            }
        }
        let dest = r.destination.as_ref().map(|d| match d {
            Destination::Any => DestSet::Any,
            Destination::Whitelisted => DestSet::Whitelisted,
            Destination::Entries(ids) => {
                if ids.is_empty() {
                    self.err(
                        format!("{path}.destination"),
                        "empty entry list matches nothing",
                    );
                }
                let mut set = BTreeSet::new();
                for id in ids {
                    match doc.address_book.iter().position(|e| &e.id == id) {
                        Some(i) if entry_ids.contains(id) => {
                            set.insert(i);
                        }
                        _ => self.err(
                            format!("{path}.destination"),
                            format!("unknown address-book entry {id:?}"),
                        ),
                    }
                }
                DestSet::Entries(set)
            }
            Destination::Labels(ls) => {
                if ls.is_empty() {
                    self.err(
                        format!("{path}.destination"),
                        "empty label list matches nothing",
                    );
                }
                for l in ls {
                    if !labels.contains(l) {
                        self.err(
                            format!("{path}.destination"),
                            format!("no address-book entry has label {l:?}"),
                        );
                    }
                }
                DestSet::Entries(
                    doc.address_book
                        .iter()
                        .enumerate()
                        .filter(|(_, e)| e.labels.iter().any(|l| ls.contains(l)))
                        .map(|(i, _)| i)
                        .collect(),
                )
            }
        });
        let amount = r.amount.map(|a| {
            let lo = a.min.map_or(0, |m| m.0);
            let hi = a.max.map_or(u128::MAX, |m| m.0);
            if lo > hi {
                self.err(
                    format!("{path}.amount"),
                    format!("min {lo} is above max {hi}: matches nothing"),
                );
            }
            (lo, hi)
        });
        let (fee_errors, fee_warnings) = crate::fee::validate_fee(r, path);
        self.errors.extend(fee_errors);
        self.warnings.extend(fee_warnings);
        if let Some(v) = &r.velocity {
            let vp = format!("{path}.velocity");
            if v.window.0 == 0 {
                self.err(&vp, "window must be longer than zero");
            }
            if v.window.0 > crate::value::MAX_VELOCITY_WINDOW_SECS {
                self.err(
                    &vp,
                    format!(
                        "window {}s is longer than the {}s of history signers keep to check it themselves",
                        v.window.0,
                        crate::value::MAX_VELOCITY_WINDOW_SECS
                    ),
                );
            }
            if v.max_amount.is_none() && v.max_count.is_none() {
                self.err(&vp, "set max_amount, max_count or both");
            }
            if v.max_amount.is_some() && !v.per.contains(&VelocityKey::Asset) {
                // Summing wei with satoshi is meaningless.
                self.err(&vp, "max_amount needs \"asset\" in `per`: amounts of different assets cannot be added");
            }
            if r.action == ActionKind::Block {
                self.warn(
                    &vp,
                    "a velocity limit matches while totals stay WITHIN it, so this rule blocks normal traffic \
                     and stops blocking once the limit is exceeded; to block over a limit, put the limit on an \
                     allow/require_approvals rule and add a block rule after it",
                );
            }
            let uniq: BTreeSet<_> = v.per.iter().collect();
            if uniq.len() != v.per.len() {
                self.warn(&vp, "a key is listed twice in `per`");
            }
        }
        let (mut days_mask, mut hours_mask) = (0x7f_u8, 0x00ff_ffff_u32);
        if let Some(t) = &r.time {
            let tp = format!("{path}.time");
            if let Some(days) = &t.days {
                days_mask = 0;
                if days.is_empty() {
                    self.err(&tp, "empty day list matches nothing");
                }
                for d in days {
                    match DAYS.iter().position(|x| x.eq_ignore_ascii_case(d)) {
                        Some(i) => days_mask |= 1 << i,
                        None => self.err(
                            &tp,
                            format!("unknown day {d:?} (use mon, tue, wed, thu, fri, sat, sun)"),
                        ),
                    }
                }
            }
            if t.from_hour > 23 {
                self.err(&tp, format!("from_hour {} must be 0..=23", t.from_hour));
            }
            if t.to_hour == 0 || t.to_hour > 24 {
                self.err(
                    &tp,
                    format!("to_hour {} must be 1..=24 (exclusive end)", t.to_hour),
                );
            }
            hours_mask = 0;
            let (from, to) = (
                u32::from(t.from_hour.min(23)),
                u32::from(t.to_hour.clamp(1, 24)),
            );
            let mut h = from;
            loop {
                hours_mask |= 1 << h;
                h = (h + 1) % 24;
                if h == to % 24 {
                    break;
                }
            }
        }
        let risk = r.risk.map(|k| {
            if k.min > k.max {
                self.err(
                    format!("{path}.risk"),
                    format!("min {} is above max {}: matches nothing", k.min, k.max),
                );
            }
            (k.min, k.max)
        });
        // Action consistency.
        match r.action {
            ActionKind::Block => {
                if r.reason.as_deref().is_none_or(|s| s.trim().is_empty()) {
                    self.err(path, "`block` needs a `reason` shown to the initiator");
                }
                if r.approvals.is_some() || r.delay.is_some() || r.cancel_group.is_some() {
                    self.err(path, "`block` takes no approvals, delay or cancel_group");
                }
            }
            ActionKind::Allow => {
                if r.approvals.is_some() {
                    self.err(
                        path,
                        "`allow` takes no approvals; use action = \"require_approvals\"",
                    );
                }
            }
            ActionKind::RequireApprovals => {
                if r.approvals.is_none() {
                    self.err(path, "`require_approvals` needs an `approvals` quorum");
                }
            }
        }
        if r.action != ActionKind::Block && r.reason.is_some() {
            self.warn(path, "`reason` is only shown for `block` rules");
        }
        if r.action != ActionKind::RequireApprovals && r.fee_bumps == FeeBumps::Reapprove {
            self.err(
                format!("{path}.fee_bumps"),
                "`reapprove` needs action = \"require_approvals\": there is no quorum to ask again",
            );
        }
        if let Some(methods) = &r.approval_methods {
            if methods.is_empty() {
                self.err(
                    format!("{path}.approval_methods"),
                    "empty list accepts no approval; leave it out to accept any",
                );
            }
            if methods.contains(&crate::document::ApprovalMethod::Passkey) && doc.webauthn.is_none()
            {
                self.err(
                    format!("{path}.approval_methods"),
                    "\"passkey\" needs a [webauthn] section (rp_id, origins)",
                );
            }
            if r.action != ActionKind::RequireApprovals {
                self.warn(path, "`approval_methods` has no effect without approvals");
            }
        }
        if r.action != ActionKind::RequireApprovals && r.approval_expiry.is_some() {
            self.warn(path, "`approval_expiry` has no effect without approvals");
        }
        let terms = r
            .approvals
            .as_ref()
            .map(|q| self.check_quorum(doc, path, q, group_members))
            .unwrap_or_default();
        if r.delay.is_some() != r.cancel_group.is_some() {
            self.err(path, "`delay` and `cancel_group` go together: someone must be able to cancel during a time lock");
        }
        let cancel = r
            .cancel_group
            .as_ref()
            .and_then(|g| match group_members.get(g) {
                Some(m) => Some(m.clone()),
                None => {
                    self.err(
                        format!("{path}.cancel_group"),
                        format!("unknown group {g:?}"),
                    );
                    None
                }
            });
        Resolved {
            wallets,
            chains: r.chains.as_ref().map(|l| l.iter().cloned().collect()),
            assets: r.assets.as_ref().map(|l| l.iter().cloned().collect()),
            dest,
            initiator_ids: r.initiators.as_ref().map(|l| l.iter().cloned().collect()),
            initiator_roles: r
                .initiator_roles
                .as_ref()
                .map(|l| l.iter().cloned().collect()),
            amount,
            days_mask,
            hours_mask,
            has_time: r.time.is_some(),
            risk,
            terms,
            cancel,
        }
    }

    fn check_quorum(
        &mut self,
        doc: &PolicyDocument,
        path: &str,
        q: &QuorumSpec,
        group_members: &BTreeMap<String, BTreeSet<usize>>,
    ) -> Vec<(String, BTreeSet<usize>, usize)> {
        let qp = format!("{path}.approvals");
        if q.all.is_empty() {
            self.err(&qp, "quorum has no terms");
        }
        let mut terms = Vec::new();
        for t in &q.all {
            if t.count == 0 {
                self.err(
                    &qp,
                    format!("count for group {:?} must be at least 1", t.group),
                );
            }
            match group_members.get(&t.group) {
                Some(m) => terms.push((
                    t.group.clone(),
                    m.clone(),
                    usize::try_from(t.count).unwrap_or(usize::MAX),
                )),
                None => self.err(&qp, format!("unknown group {:?}", t.group)),
            }
        }
        // Can the active approvers meet it at all, each counting once?
        let active: Vec<usize> = (0..doc.approvers.len())
            .filter(|&i| !doc.approvers[i].revoked)
            .collect();
        let tv: Vec<Term<'_>> = terms
            .iter()
            .map(|(_, e, c)| Term {
                eligible: e,
                count: *c,
            })
            .collect();
        let assigned = quorum::assign(&tv, &active);
        if !quorum::is_full(&tv, &assigned) {
            let detail: Vec<String> = terms
                .iter()
                .zip(&assigned)
                .map(|((g, _, c), a)| format!("{g}: {} of {c}", a.len()))
                .collect();
            self.err(
                &qp,
                format!(
                    "quorum cannot be met by distinct active approvers (best assignment {})",
                    detail.join(", ")
                ),
            );
        } else if q.exclude_initiator {
            // If an approver initiates, they drop out: is there one spare person?
            let tight = active.iter().any(|&skip| {
                let others: Vec<usize> = active.iter().copied().filter(|&i| i != skip).collect();
                !quorum::is_full(&tv, &quorum::assign(&tv, &others))
            });
            if tight {
                self.warn(&qp, "with exclude_initiator, a withdrawal initiated by some approvers can never be approved");
            }
        }
        terms
    }

    /// Unreachable rules (fully covered by an earlier rule) and overlaps between rules
    /// with different actions.
    fn reachability(&mut self, p: &Policy) {
        let rules = &p.doc.rules;
        for j in 0..rules.len() {
            let mut shadowed = false;
            for i in 0..j {
                if covers(p, i, j) {
                    self.warn(
                        format!("rules[{j}] ({})", rules[j].id),
                        format!("unreachable: every withdrawal it matches is matched first by rules[{i}] ({})", rules[i].id),
                    );
                    shadowed = true;
                    break;
                }
            }
            if shadowed {
                continue;
            }
            for i in 0..j {
                if permissiveness(rules[i].action) > permissiveness(rules[j].action)
                    && overlaps(p, i, j)
                    && !intended_fall_through(p, i, j)
                {
                    self.warn(
                        format!("rules[{j}] ({})", rules[j].id),
                        format!(
                            "partly shadowed: some withdrawals it matches are taken first by the more permissive rules[{i}] ({}), which {}",
                            rules[i].id,
                            match rules[i].action {
                                ActionKind::Allow => "allows them",
                                _ => "only requires approvals",
                            }
                        ),
                    );
                }
            }
        }
    }
}

fn permissiveness(a: ActionKind) -> u8 {
    match a {
        ActionKind::Block => 0,
        ActionKind::RequireApprovals => 1,
        ActionKind::Allow => 2,
    }
}

/// The usual tiering patterns, not worth a warning: the earlier, more permissive rule
/// takes only lower amounts, or stops matching past a velocity limit or outside hours.
fn intended_fall_through(p: &Policy, i: usize, j: usize) -> bool {
    let (a, b) = (&p.resolved[i], &p.resolved[j]);
    let a_max = a.amount.map_or(u128::MAX, |r| r.1);
    let b_max = b.amount.map_or(u128::MAX, |r| r.1);
    a_max < b_max
        || (p.doc.rules[i].velocity.is_some() && p.doc.rules[j].velocity.is_none())
        || (a.has_time && !b.has_time)
        // A carve-out: the later rule matches everything the earlier one does, so the
        // earlier one is a deliberate exception to it.
        || covers(p, j, i)
}

/// Chains a rule can match: its `chains`, narrowed by the chains of the address-book
/// entries it names.
pub(crate) fn effective_chains(p: &Policy, r: &Resolved) -> Option<BTreeSet<String>> {
    let from_dest: Option<BTreeSet<String>> = match &r.dest {
        Some(DestSet::Entries(set)) => Some(
            set.iter()
                .filter_map(|&e| p.doc.address_book.get(e))
                .map(|e| e.chain.clone())
                .collect(),
        ),
        _ => None,
    };
    match (&r.chains, from_dest) {
        (Some(c), Some(d)) => Some(c.intersection(&d).cloned().collect()),
        (Some(c), None) => Some(c.clone()),
        (None, d) => d,
    }
}

fn set_covers(a: &Option<BTreeSet<String>>, b: &Option<BTreeSet<String>>) -> bool {
    match (a, b) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => b.is_subset(a),
    }
}

fn set_meets(a: &Option<BTreeSet<String>>, b: &Option<BTreeSet<String>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => !a.is_disjoint(b),
        _ => true,
    }
}

fn range_covers(a: Option<(u128, u128)>, b: Option<(u128, u128)>) -> bool {
    let (a, b) = (a.unwrap_or((0, u128::MAX)), b.unwrap_or((0, u128::MAX)));
    a.0 <= b.0 && b.1 <= a.1
}

fn range_meets(a: Option<(u128, u128)>, b: Option<(u128, u128)>) -> bool {
    let (a, b) = (a.unwrap_or((0, u128::MAX)), b.unwrap_or((0, u128::MAX)));
    a.0 <= b.1 && b.0 <= a.1
}

fn widen(r: Option<(u32, u32)>) -> Option<(u128, u128)> {
    r.map(|(a, b)| (u128::from(a), u128::from(b)))
}

/// Destination sets as entry sets (`None` = any address at all).
fn dest_entries(p: &Policy, d: &Option<DestSet>) -> Option<BTreeSet<usize>> {
    match d {
        None | Some(DestSet::Any) => None,
        Some(DestSet::Whitelisted) => Some(
            p.doc
                .address_book
                .iter()
                .enumerate()
                .filter(|(_, e)| e.whitelisted)
                .map(|(i, _)| i)
                .collect(),
        ),
        Some(DestSet::Entries(s)) => Some(s.clone()),
    }
}

fn initiators_open(r: &Resolved) -> bool {
    r.initiator_ids.is_none() && r.initiator_roles.is_none()
}

/// Conservative: true only when rule `i` surely matches everything rule `j` matches.
fn covers(p: &Policy, i: usize, j: usize) -> bool {
    let (a, b) = (&p.resolved[i], &p.resolved[j]);
    let (ra, rb) = (&p.doc.rules[i], &p.doc.rules[j]);
    let dest_ok = match (dest_entries(p, &a.dest), dest_entries(p, &b.dest)) {
        (None, _) => true,
        (Some(_), None) => false,
        // Cooling periods apply equally to both; entry sets decide.
        (Some(x), Some(y)) => y.is_subset(&x),
    };
    let initiator_ok = initiators_open(a)
        || (a.initiator_ids == b.initiator_ids && a.initiator_roles == b.initiator_roles);
    set_covers(&a.wallets, &b.wallets)
        && set_covers(&a.chains, &b.chains)
        && set_covers(&a.assets, &b.assets)
        && dest_ok
        && initiator_ok
        && range_covers(a.amount, b.amount)
        && range_covers(widen(a.risk), widen(b.risk))
        && (a.days_mask & b.days_mask) == b.days_mask
        && (a.hours_mask & b.hours_mask) == b.hours_mask
        && (ra.velocity.is_none() || ra.velocity == rb.velocity)
        && (ra.fee.is_none() || ra.fee == rb.fee)
}

/// Liberal: false only when no withdrawal can match both rules.
fn overlaps(p: &Policy, i: usize, j: usize) -> bool {
    let (a, b) = (&p.resolved[i], &p.resolved[j]);
    let dest_ok = match (dest_entries(p, &a.dest), dest_entries(p, &b.dest)) {
        (Some(x), Some(y)) => !x.is_disjoint(&y),
        _ => true,
    };
    let initiators_ok = match (
        &a.initiator_ids,
        &b.initiator_ids,
        &a.initiator_roles,
        &b.initiator_roles,
    ) {
        (Some(x), Some(y), None, None) => !x.is_disjoint(y),
        _ => true,
    };
    set_meets(&a.wallets, &b.wallets)
        && set_meets(&effective_chains(p, a), &effective_chains(p, b))
        && set_meets(&a.assets, &b.assets)
        && dest_ok
        && initiators_ok
        && range_meets(a.amount, b.amount)
        && range_meets(widen(a.risk), widen(b.risk))
        && (a.days_mask & b.days_mask) != 0
        && (a.hours_mask & b.hours_mask) != 0
}

/// The condition of `r` that reads the withdrawal's initiator, if any.
fn initiator_condition(r: &crate::document::Rule) -> Option<&'static str> {
    if r.initiators.is_some() {
        Some("`initiators`")
    } else if r.initiator_roles.is_some() {
        Some("`initiator_roles`")
    } else if r
        .velocity
        .as_ref()
        .is_some_and(|v| v.per.contains(&crate::document::VelocityKey::Initiator))
    {
        Some("velocity `per = [\"initiator\"]`")
    } else if r.approvals.as_ref().is_some_and(|q| q.exclude_initiator) {
        Some("`exclude_initiator`")
    } else {
        None
    }
}
