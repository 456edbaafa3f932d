//! The policy bundle the coordinator enforces: loaded from the config, checked
//! against the admin set, and remembered with the time it was first seen so a
//! restart does not restart address-book cooling periods.

use std::collections::HashMap;
use std::path::Path;
use std::sync::RwLock;

use custos_policy::{
    ActivePolicy, AdminSet, BundleSignatures, PolicyHash, PolicyState, Timestamp, verify_bundle,
};
use sqlx::{AnyPool, Row};

use crate::error::CoordError;

/// Idempotent DDL.
pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS policy_bundles (
    policy_hash TEXT PRIMARY KEY,
    document TEXT NOT NULL,
    signatures TEXT NOT NULL,
    first_seen BIGINT NOT NULL
)";

/// A bundle's bytes, as sent to signers.
#[derive(Clone, Debug)]
pub struct BundleBytes {
    /// Policy document, exactly as signed.
    pub document: Vec<u8>,
    /// `*.sigs.json`.
    pub signatures: Vec<u8>,
}

/// The policy in force and every bundle it may name.
#[derive(Debug)]
pub struct PolicyHolder {
    state: RwLock<PolicyState>,
    bundles: HashMap<PolicyHash, BundleBytes>,
    /// The configured bundle: the newest activation this coordinator logged.
    configured: PolicyHash,
}

fn refused(what: &str, e: impl std::fmt::Display) -> CoordError {
    CoordError::precondition("policy", "bundle", format!("is refused: {what}: {e}"))
}

impl PolicyHolder {
    /// Loads the bundle named by the config, verifies it with the admin set and
    /// restores the governance state from every bundle seen before.
    pub async fn load(
        pool: &AnyPool,
        document: &Path,
        signatures: &Path,
        admins: &Path,
        now: Timestamp,
    ) -> Result<Self, CoordError> {
        let read = |p: &Path, field: &str| {
            std::fs::read(p).map_err(|e| {
                CoordError::invalid(
                    format!("config field `policy.{field}`"),
                    format!("{}: {e}", p.display()),
                )
            })
        };
        let admin_set = AdminSet::parse(&read(admins, "admins")?)
            .map_err(|e| CoordError::invalid("config field `policy.admins`", e.to_string()))?;
        let doc = read(document, "document")?;
        let sigs = read(signatures, "signatures")?;
        verify(&doc, &sigs, &admin_set)
            .map_err(|e| CoordError::invalid("config field `policy.document`", e.to_string()))?;
        let hash = PolicyHash::of_document(&doc);
        sqlx::query(SCHEMA)
            .execute(pool)
            .await
            .map_err(|e| CoordError::storage("policy bundles", e))?;
        let known = sqlx::query("SELECT policy_hash FROM policy_bundles WHERE policy_hash = $1")
            .bind(hash.to_string())
            .fetch_optional(pool)
            .await
            .map_err(|e| CoordError::storage("policy bundles", e))?;
        if known.is_none() {
            sqlx::query(
                "INSERT INTO policy_bundles (policy_hash, document, signatures, first_seen) VALUES ($1, $2, $3, $4)",
            )
            .bind(hash.to_string())
            .bind(String::from_utf8_lossy(&doc).into_owned())
            .bind(String::from_utf8_lossy(&sigs).into_owned())
            .bind(now.0)
            .execute(pool)
            .await
            .map_err(|e| CoordError::storage("policy bundles", e))?;
        }
        let rows = sqlx::query(
            "SELECT document, signatures, first_seen FROM policy_bundles ORDER BY first_seen, policy_hash",
        )
        .fetch_all(pool)
        .await
        .map_err(|e| CoordError::storage("policy bundles", e))?;
        let mut state: Option<PolicyState> = None;
        let mut bundles = HashMap::new();
        for r in rows {
            let d: String = r.get(0);
            let s: String = r.get(1);
            let seen = Timestamp(r.get::<i64, _>(2));
            let verified = verify(d.as_bytes(), s.as_bytes(), &admin_set)?;
            bundles.insert(
                verified.policy().hash(),
                BundleBytes {
                    document: d.into_bytes(),
                    signatures: s.into_bytes(),
                },
            );
            match &mut state {
                None => state = Some(PolicyState::genesis(verified, seen)),
                Some(st) => {
                    // An older or equal version stored earlier is simply skipped.
                    let _ = st.propose(verified, seen);
                }
            }
        }
        let state = state.ok_or_else(|| CoordError::Internal("no policy bundle stored".into()))?;
        Ok(Self {
            state: RwLock::new(state),
            bundles,
            configured: hash,
        })
    }

    /// The policy in force at `now`.
    pub fn in_force(&self, now: Timestamp) -> ActivePolicy {
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        st.advance(now);
        st.in_force(now).clone()
    }

    /// The configured bundle (the newest activation logged), which signers
    /// must know before they sign under any policy.
    pub fn latest(&self) -> Option<&BundleBytes> {
        self.bundles.get(&self.configured)
    }

    /// The bundle bytes for a policy hash.
    pub fn bundle(&self, hash: &PolicyHash) -> Option<&BundleBytes> {
        self.bundles.get(hash)
    }
}

/// The audit entry for a bundle the coordinator has not used before, or
/// `None` if it is already known (appended when it was first loaded).
pub async fn activation_entry(
    pool: &AnyPool,
    document: &Path,
    signatures: &Path,
) -> Result<Option<custos_audit::EntryBody>, CoordError> {
    let doc = std::fs::read(document)
        .map_err(|e| CoordError::invalid("config field `policy.document`", e.to_string()))?;
    let sigs = std::fs::read(signatures)
        .map_err(|e| CoordError::invalid("config field `policy.signatures`", e.to_string()))?;
    let hash = PolicyHash::of_document(&doc);
    sqlx::query(SCHEMA)
        .execute(pool)
        .await
        .map_err(|e| CoordError::storage("policy bundles", e))?;
    let known = sqlx::query("SELECT policy_hash FROM policy_bundles WHERE policy_hash = $1")
        .bind(hash.to_string())
        .fetch_optional(pool)
        .await
        .map_err(|e| CoordError::storage("policy bundles", e))?;
    if known.is_some() {
        return Ok(None);
    }
    let parsed: BundleSignatures = serde_json::from_slice(&sigs)
        .map_err(|e| refused("policy signatures are not valid JSON", e))?;
    let version = custos_policy::Policy::parse(&doc)
        .map(|p| p.version())
        .map_err(|e| refused("policy document", e))?;
    Ok(Some(custos_audit::EntryBody::PolicyActivated {
        policy_hash: hash.0,
        policy_version: version,
        admin_signatures: parsed
            .signatures
            .iter()
            .map(|s| custos_audit::entry::AdminSignature {
                admin_id: s.public_key.clone(),
                signature: hex::decode(&s.signature).unwrap_or_default(),
            })
            .collect(),
    }))
}

fn verify(
    doc: &[u8],
    sigs: &[u8],
    admins: &AdminSet,
) -> Result<custos_policy::VerifiedBundle, CoordError> {
    let sigs: BundleSignatures = serde_json::from_slice(sigs)
        .map_err(|e| refused("policy signatures are not valid JSON", e))?;
    verify_bundle(doc, &sigs, admins).map_err(|e| refused("policy bundle", e))
}
