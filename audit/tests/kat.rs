//! Known-answer tests against vectors computed independently by
//! `vectors/gen.py` (hashlib, RFC recursions) including the published RFC 6962
//! reference roots.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use custos_audit::hash::root_from_leaf_hashes;
use custos_audit::proof::{verify_consistency, verify_inclusion};
use custos_audit::tree::{
    CompactRange, NodeSource, consistency_proof, inclusion_proof, subtree_root,
};
use custos_audit::{AuditError, Hash, leaf_hash};
use serde_json::Value;

/// Every perfect subtree, built by pushing leaves through a compact range.
struct Levels(Vec<Vec<Hash>>);

impl Levels {
    fn new(leaves: &[Hash]) -> Self {
        let mut levels: Vec<Vec<Hash>> = Vec::new();
        let mut cr = CompactRange::new();
        for l in leaves {
            for (level, index, hash) in cr.push(*l) {
                let level = usize::from(level);
                if levels.len() <= level {
                    levels.push(Vec::new());
                }
                assert_eq!(levels[level].len() as u64, index);
                levels[level].push(hash);
            }
        }
        Self(levels)
    }
}

impl NodeSource for Levels {
    fn perfect_node(&self, level: u8, index: u64) -> Result<Hash, AuditError> {
        self.0
            .get(usize::from(level))
            .and_then(|l| l.get(index as usize))
            .copied()
            .ok_or_else(|| AuditError::Corrupt("missing".into()))
    }
}

fn hx(v: &Value) -> Hash {
    hex::decode(v.as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

fn hashes(v: &Value) -> Vec<Hash> {
    v.as_array().unwrap().iter().map(hx).collect()
}

fn check_set(set: &Value) {
    let leaves: Vec<Hash> = set["leaves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| leaf_hash(&hex::decode(l.as_str().unwrap()).unwrap()))
        .collect();
    let levels = Levels::new(&leaves);
    let roots = hashes(&set["roots"]);
    for (n, root) in roots.iter().enumerate() {
        assert_eq!(
            &root_from_leaf_hashes(&leaves[..n]),
            root,
            "reference root {n}"
        );
        assert_eq!(
            &subtree_root(&levels, 0, n as u64).unwrap(),
            root,
            "stored root {n}"
        );
    }
    for case in set["inclusion"].as_array().unwrap() {
        let (m, n) = (
            case["index"].as_u64().unwrap(),
            case["size"].as_u64().unwrap(),
        );
        let want = hashes(&case["path"]);
        assert_eq!(
            inclusion_proof(&levels, m, n).unwrap(),
            want,
            "PATH({m}, {n})"
        );
        verify_inclusion(m, n, &leaves[m as usize], &want, &roots[n as usize]).unwrap();
    }
    for case in set["consistency"].as_array().unwrap() {
        let (m, n) = (case["old"].as_u64().unwrap(), case["new"].as_u64().unwrap());
        let want = hashes(&case["proof"]);
        assert_eq!(
            consistency_proof(&levels, m, n).unwrap(),
            want,
            "PROOF({m}, {n})"
        );
        verify_consistency(m, n, &roots[m as usize], &roots[n as usize], &want).unwrap();
    }
}

fn vectors() -> Value {
    serde_json::from_str(include_str!("vectors/tree.json")).unwrap()
}

#[test]
fn rfc6962_reference_vectors() {
    let v = vectors();
    // The published roots, also asserted by gen.py.
    assert_eq!(
        hex::encode(hx(&v["rfc6962"]["roots"][8])),
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    );
    check_set(&v["rfc6962"]);
}

#[test]
fn generated_vectors() {
    check_set(&vectors()["generated"]);
}
