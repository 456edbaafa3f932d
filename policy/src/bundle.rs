//! Admin-signed policy bundles.
//!
//! A bundle is the exact policy document bytes plus Ed25519 signatures by admins over
//! `"custos.policy-bundle.v1" 0x00 || policy hash`. The admin keys and the quorum are
//! configured out of band (an [`AdminSet`] in each node's own config), never taken
//! from the bundle, so a bundle cannot vouch for itself.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::{PolicyError, Result};
use crate::keys::{PublicKey, SecretKey, verify};
use crate::policy::{Policy, PolicyHash};

/// Domain tag of the message admins sign.
pub const BUNDLE_SIGN_DOMAIN: &[u8] = b"custos.policy-bundle.v1\x00";

/// The admin keys and how many must sign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSetConfig {
    /// Signatures needed.
    pub threshold: usize,
    /// Admin public keys, hex.
    pub keys: Vec<String>,
}

/// A validated admin set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSet {
    keys: Vec<PublicKey>,
    threshold: usize,
}

impl AdminSet {
    /// Validates keys (distinct, well-formed) and threshold (1..=number of keys).
    pub fn new(config: &AdminSetConfig) -> Result<Self> {
        let mut keys = Vec::new();
        let mut seen = BTreeSet::new();
        for k in &config.keys {
            let pk = PublicKey::from_hex(k)?;
            if !seen.insert(pk.0.to_bytes()) {
                return Err(PolicyError::Key(format!("admin key {k} is listed twice")));
            }
            keys.push(pk);
        }
        if config.threshold == 0 || config.threshold > keys.len() {
            return Err(PolicyError::Key(format!(
                "admin threshold {} must be between 1 and the number of admin keys ({})",
                config.threshold,
                keys.len()
            )));
        }
        Ok(AdminSet {
            keys,
            threshold: config.threshold,
        })
    }

    /// Parses an admin-set file (TOML or JSON: `threshold`, `keys`).
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| PolicyError::Parse("admin set is not UTF-8".into()))?;
        let cfg: AdminSetConfig = if text.trim_start().starts_with('{') {
            serde_json::from_str(text)
                .map_err(|e| PolicyError::Parse(format!("admin set JSON: {e}")))?
        } else {
            toml::from_str(text).map_err(|e| PolicyError::Parse(format!("admin set TOML: {e}")))?
        };
        Self::new(&cfg)
    }

    /// Signatures needed.
    pub fn threshold(&self) -> usize {
        self.threshold
    }
}

/// One admin's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSignature {
    /// Admin public key, hex.
    pub public_key: String,
    /// Ed25519 signature, hex.
    pub signature: String,
}

/// The signatures file kept beside a policy document (`policy.toml.sigs.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleSignatures {
    /// Hash of the document signed.
    pub policy_hash: PolicyHash,
    /// One per admin.
    pub signatures: Vec<AdminSignature>,
}

/// The message admins sign for a policy hash.
pub fn bundle_message(hash: &PolicyHash) -> Vec<u8> {
    let mut m = BUNDLE_SIGN_DOMAIN.to_vec();
    m.extend_from_slice(&hash.0);
    m
}

impl BundleSignatures {
    /// An empty signature list for `hash`.
    pub fn new(hash: PolicyHash) -> Self {
        BundleSignatures {
            policy_hash: hash,
            signatures: Vec::new(),
        }
    }

    /// Adds (or replaces) `key`'s signature.
    pub fn sign(&mut self, key: &SecretKey) {
        let public_key = key.public().to_hex();
        let signature = hex::encode(key.sign(&bundle_message(&self.policy_hash)));
        self.signatures.retain(|s| s.public_key != public_key);
        self.signatures.push(AdminSignature {
            public_key,
            signature,
        });
    }
}

/// A policy whose bundle carries a valid admin quorum. Only [`verify_bundle`] makes one.
#[derive(Debug, Clone)]
pub struct VerifiedBundle {
    policy: Policy,
    signers: Vec<PublicKey>,
}

impl VerifiedBundle {
    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }
    /// Admins whose signatures counted.
    pub fn signers(&self) -> &[PublicKey] {
        &self.signers
    }
    pub(crate) fn into_policy(self) -> Policy {
        self.policy
    }
}

/// Parses and validates `document`, then checks it carries `admins.threshold()`
/// distinct valid admin signatures. Signatures by unknown keys, bad signatures and
/// repeats are ignored (and reported if the quorum is not reached).
pub fn verify_bundle(
    document: &[u8],
    signatures: &BundleSignatures,
    admins: &AdminSet,
) -> Result<VerifiedBundle> {
    let policy = Policy::parse(document)?;
    let hash = policy.hash();
    if signatures.policy_hash != hash {
        return Err(PolicyError::BundleUnauthorized {
            hash: hash.to_string(),
            valid: 0,
            required: admins.threshold,
            problems: vec![format!(
                "signatures are for policy {}, not this document",
                signatures.policy_hash
            )],
        });
    }
    let msg = bundle_message(&hash);
    let mut problems = Vec::new();
    let mut signers: Vec<PublicKey> = Vec::new();
    for s in &signatures.signatures {
        let Ok(pk) = PublicKey::from_hex(&s.public_key) else {
            problems.push(format!("malformed key {}", s.public_key));
            continue;
        };
        if !admins.keys.contains(&pk) {
            problems.push(format!("{} is not an admin key", s.public_key));
            continue;
        }
        if signers.contains(&pk) {
            problems.push(format!("{} signed twice (counted once)", s.public_key));
            continue;
        }
        let sig = hex::decode(&s.signature).unwrap_or_default();
        if !verify(&pk.0, &msg, &sig) {
            problems.push(format!("signature by {} does not verify", s.public_key));
            continue;
        }
        signers.push(pk);
    }
    if signers.len() < admins.threshold {
        return Err(PolicyError::BundleUnauthorized {
            hash: hash.to_string(),
            valid: signers.len(),
            required: admins.threshold,
            problems,
        });
    }
    Ok(VerifiedBundle { policy, signers })
}
