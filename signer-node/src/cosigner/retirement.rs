//! Whether a signer may destroy its share of a key: the admins' authority,
//! checked by the signer itself (docs/SECURITY.md case 74).
//!
//! The coordinator writes the audit log, so a `key_retired` entry alone is
//! only its word: a compromised coordinator could log one for a key that
//! still holds funds. Destruction therefore also needs the admin quorum: a
//! policy bundle signed by this signer's own admin set that lists the key
//! under `retired_keys`, is the newest policy the log this signer witnessed
//! activated (not an older or unactivated one), and is in force on this
//! signer's clock (adding a key to `retired_keys` is a tightening, so in
//! force at once unless the same bundle also relaxes something).

use custos_policy::{PolicyHash, Timestamp};

use super::bundles::Bundles;
use super::log_view::LoggedPolicy;
use crate::error::{NodeError, RetirementGap};

/// What the log this signer witnessed says about a key's retirement.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogFacts {
    /// The newest policy activation.
    pub newest_policy: Option<LoggedPolicy>,
    /// The key's `key_retired` entry.
    pub retirement: Option<u64>,
    /// Entries witnessed.
    pub size: u64,
}

/// The index of the key's `key_retired` entry when the retirement of
/// `key_id` is authorized by the bundle `document`/`signatures` and the log
/// facts; otherwise [`NodeError::RetirementUnauthorized`] naming what is
/// missing (or a storage failure remembering a valid bundle).
pub fn authorize(
    bundles: &Bundles,
    facts: &LogFacts,
    key_id: &str,
    document: &[u8],
    signatures: &[u8],
    now: Timestamp,
) -> Result<u64, NodeError> {
    let missing = |missing| NodeError::RetirementUnauthorized {
        key_id: key_id.to_owned(),
        missing,
    };
    if document.is_empty() {
        return Err(missing(RetirementGap::NoBundle));
    }
    let newest = facts
        .newest_policy
        .as_ref()
        .ok_or_else(|| missing(RetirementGap::NoPolicyActivated))?;
    let shown = PolicyHash::of_document(document).to_string();
    if !shown.eq_ignore_ascii_case(&newest.hash) {
        return Err(missing(RetirementGap::NotNewestPolicy {
            shown,
            newest: newest.hash.clone(),
            version: newest.version,
            index: newest.index,
        }));
    }
    let refused = |e| match e {
        NodeError::Refused(m) => missing(RetirementGap::Bundle(m)),
        other => other,
    };
    bundles
        .check_quorum(document, signatures)
        .map_err(refused)?;
    let active = bundles
        .in_force(document, signatures, now)
        .map_err(refused)?;
    let doc = active.policy().document();
    if !doc.retired_keys.iter().any(|k| k == key_id) {
        return Err(missing(RetirementGap::NotListed {
            hash: shown,
            version: doc.version,
        }));
    }
    facts
        .retirement
        .ok_or_else(|| missing(RetirementGap::NotInLog { size: facts.size }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use custos_policy::{AdminSet, AdminSetConfig, BundleSignatures, SecretKey, Zeroizing};

    use super::*;

    fn admin(i: u8) -> SecretKey {
        SecretKey::from_seed(&Zeroizing::new([i; 32]))
    }

    fn doc(version: u64, retired: &str) -> Vec<u8> {
        format!("version = {version}\n{retired}\n").into_bytes()
    }

    fn sigs(document: &[u8], by: &[u8]) -> Vec<u8> {
        let mut s = BundleSignatures::new(PolicyHash::of_document(document));
        for i in by {
            s.sign(&admin(*i));
        }
        serde_json::to_vec(&s).unwrap()
    }

    fn activated(document: &[u8], version: u64, index: u64) -> Option<LoggedPolicy> {
        Some(LoggedPolicy {
            index,
            version,
            hash: PolicyHash::of_document(document).to_string(),
        })
    }

    fn gap(r: Result<u64, NodeError>) -> RetirementGap {
        match r {
            Err(NodeError::RetirementUnauthorized { key_id, missing }) => {
                assert_eq!(key_id, "w-old");
                missing
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn destruction_needs_the_admin_quorum_the_log_activation_and_the_log_entry() {
        let dir = tempfile::tempdir().unwrap();
        let admins = AdminSet::new(&AdminSetConfig {
            threshold: 2,
            keys: (1..=3).map(|i| admin(i).public().to_hex()).collect(),
        })
        .unwrap();
        let bundles = Bundles::open(dir.path(), admins).unwrap();
        let now = Timestamp(1_000_000);
        let v1 = doc(1, "");
        let v2 = doc(2, "retired_keys = [\"w-old\"]");
        let v2_sigs = sigs(&v2, &[1, 3]);
        // The log (written by the coordinator) retired the key at entry 9.
        let mut facts = LogFacts {
            newest_policy: activated(&v1, 1, 0),
            retirement: Some(9),
            size: 10,
        };
        let auth =
            |facts: &LogFacts, d: &[u8], s: &[u8]| authorize(&bundles, facts, "w-old", d, s, now);

        // No bundle at all: the log entry alone is the coordinator's word.
        assert_eq!(gap(auth(&facts, b"", b"")), RetirementGap::NoBundle);
        // The policy in force (v1, admin-signed) does not list the key.
        let e = auth(&facts, &v1, &sigs(&v1, &[1, 2])).unwrap_err();
        assert!(
            e.to_string()
                .contains("does not list it under retired_keys"),
            "{e}"
        );
        assert!(matches!(
            gap(Err(e)),
            RetirementGap::NotListed { version: 1, .. }
        ));
        // An admin-signed v2 the log never activated.
        assert!(matches!(
            gap(auth(&facts, &v2, &v2_sigs)),
            RetirementGap::NotNewestPolicy {
                version: 1,
                index: 0,
                ..
            }
        ));
        // No activation at all.
        let none = LogFacts {
            newest_policy: None,
            ..facts.clone()
        };
        assert_eq!(
            gap(auth(&none, &v2, &v2_sigs)),
            RetirementGap::NoPolicyActivated
        );
        // v2 activated, but shown with one admin signature (quorum is 2),
        // or signed by a key outside this signer's admin set.
        facts.newest_policy = activated(&v2, 2, 8);
        for bad in [sigs(&v2, &[1]), sigs(&v2, &[1, 7]), b"{".to_vec()] {
            match gap(auth(&facts, &v2, &bad)) {
                RetirementGap::Bundle(m) => assert!(!m.is_empty()),
                other => panic!("{other:?}"),
            }
        }
        // An older bundle while v2 is the newest activation.
        assert!(matches!(
            gap(auth(&facts, &v1, &sigs(&v1, &[1, 2]))),
            RetirementGap::NotNewestPolicy {
                version: 2,
                index: 8,
                ..
            }
        ));
        // The admins' v2, but no key_retired entry in the witnessed log.
        let unlogged = LogFacts {
            retirement: None,
            ..facts.clone()
        };
        let e = auth(&unlogged, &v2, &v2_sigs).unwrap_err();
        assert!(e.to_string().contains("does not retire it"), "{e}");
        assert_eq!(gap(Err(e)), RetirementGap::NotInLog { size: 10 });
        // Everything: authorized, naming the log's entry.
        assert_eq!(auth(&facts, &v2, &v2_sigs).unwrap(), 9);
        // A bundle this signer accepted before still needs its quorum in
        // the request.
        assert!(matches!(
            gap(auth(&facts, &v2, &sigs(&v2, &[2]))),
            RetirementGap::Bundle(_)
        ));
        // Another key is not authorized by v2.
        let other = authorize(&bundles, &facts, "w-hot", &v2, &v2_sigs, now).unwrap_err();
        assert!(
            other.to_string().contains("retiring key w-hot refused"),
            "{other}"
        );
    }
}
