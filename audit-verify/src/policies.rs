//! The policy documents the auditor trusts, and the admin quorum of every
//! policy activation.
//!
//! A document is known by its own hash, computed here: a log entry naming a
//! policy hash names exactly one document, whoever supplied it. The bundle
//! may ship documents too; they count only when their content hashes to the
//! key they are shipped under. With an admin set, every `policy_activated`
//! entry must carry a valid admin quorum over the document it activates.

use std::collections::BTreeMap;

use custos_audit::{Entry, EntryBody, ExportBundle, Failure, FailureKind, Report};
use custos_policy::{AdminSet, AdminSignature, BundleSignatures, Policy, PolicyHash};

use crate::VerifyError;

/// A policy document with where it came from.
pub(crate) struct Document {
    /// The bytes exactly as the admins signed them.
    bytes: Vec<u8>,
    /// The parsed policy.
    pub(crate) policy: Policy,
    /// Where it came from (a path, or "the bundle").
    source: String,
}

/// The documents by lowercase hex hash, and the admin set if one is trusted.
pub(crate) struct PolicySet {
    documents: BTreeMap<String, Document>,
    admins: Option<AdminSet>,
}

impl PolicySet {
    /// Parses the supplied documents (bytes, where each came from) and adds
    /// the bundle's documents that hash to their key. A supplied document
    /// that does not parse is an error; a shipped one is ignored.
    pub(crate) fn new(
        supplied: Vec<(Vec<u8>, String)>,
        admins: Option<AdminSet>,
        bundle: &ExportBundle,
    ) -> Result<Self, VerifyError> {
        let mut documents = BTreeMap::new();
        for (bytes, source) in supplied {
            let policy = Policy::parse(&bytes).map_err(|e| VerifyError::PolicyDocument {
                origin: source.clone(),
                source: e,
            })?;
            documents.insert(
                policy.hash().to_string(),
                Document {
                    bytes,
                    policy,
                    source,
                },
            );
        }
        for (hash, text) in &bundle.policy_documents {
            let bytes = text.as_bytes().to_vec();
            if let Ok(policy) = Policy::parse(&bytes)
                && policy.hash().to_string() == hash.to_lowercase()
            {
                documents
                    .entry(policy.hash().to_string())
                    .or_insert(Document {
                        bytes,
                        policy,
                        source: "the bundle".into(),
                    });
            }
        }
        Ok(Self { documents, admins })
    }

    /// The documents: (hash, where it came from).
    pub(crate) fn documents(&self) -> impl Iterator<Item = (&str, &str)> {
        self.documents
            .iter()
            .map(|(h, d)| (h.as_str(), d.source.as_str()))
    }

    /// The document with this lowercase hex hash.
    pub(crate) fn get(&self, hash: &str) -> Option<&Document> {
        self.documents.get(hash)
    }

    /// Whether admin signatures are checked.
    pub(crate) fn checks_admins(&self) -> bool {
        self.admins.is_some()
    }

    /// Checks the admin quorum of one `policy_activated` entry (`Ok` without
    /// an admin set).
    pub(crate) fn check_activation(&self, entry: &Entry) -> Result<(), VerifyError> {
        let Some(admins) = &self.admins else {
            return Ok(());
        };
        let EntryBody::PolicyActivated {
            policy_hash,
            admin_signatures,
            ..
        } = &entry.body
        else {
            return Err(VerifyError::NotAnActivation { entry: entry.index });
        };
        let policy = hex::encode(policy_hash);
        let Some(doc) = self.documents.get(&policy) else {
            return Err(VerifyError::ActivationPolicyUnknown {
                entry: entry.index,
                policy,
            });
        };
        let signatures = BundleSignatures {
            policy_hash: PolicyHash(*policy_hash),
            signatures: admin_signatures
                .iter()
                .map(|s| AdminSignature {
                    public_key: s.admin_id.clone(),
                    signature: hex::encode(&s.signature),
                })
                .collect(),
        };
        custos_policy::verify_bundle(&doc.bytes, &signatures, admins)
            .map(|_| ())
            .map_err(|source| VerifyError::AdminQuorum {
                entry: entry.index,
                policy,
                source,
            })
    }

    /// Checks every `policy_activated` entry of the bundle (context and
    /// range) against the admin set, adding an `unauthorized` failure to
    /// `report` for each bad one. Nothing to do without an admin set.
    pub(crate) fn check_activations(&self, bundle: &ExportBundle, report: &mut Report) {
        if self.admins.is_none() {
            return;
        }
        let in_range = bundle.entries.iter().map(String::as_str);
        let context = bundle.context.iter().map(|c| c.entry.as_str());
        for raw in context.chain(in_range) {
            // Undecodable entries are already reported by the bundle verifier.
            let Some(entry) = hex::decode(raw).ok().and_then(|b| Entry::decode(&b).ok()) else {
                continue;
            };
            if !matches!(entry.body, EntryBody::PolicyActivated { .. }) {
                continue;
            }
            if let Err(e) = self.check_activation(&entry) {
                report.failures.push(Failure {
                    entry: Some(entry.index),
                    kind: FailureKind::Unauthorized,
                    message: e.explain(),
                });
            }
        }
    }
}
