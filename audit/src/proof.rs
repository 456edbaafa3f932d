//! Proof verification, RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2
//! (consistency). Pure functions over hashes.

use crate::AuditError;
use crate::hash::{Hash, node_hash};

fn bad(reason: &str) -> AuditError {
    AuditError::InvalidProof(reason.to_owned())
}

/// Recomputes the root of a tree of `size` leaves from the leaf hash at
/// `index` and its inclusion proof.
pub fn root_from_inclusion_proof(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
) -> Result<Hash, AuditError> {
    if index >= size {
        return Err(bad("leaf index beyond tree size"));
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return Err(bad("inclusion proof too long"));
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(bad("inclusion proof too short"));
    }
    Ok(r)
}

/// Verifies that `leaf` is at `index` in the tree of `size` leaves with `root`.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), AuditError> {
    if root_from_inclusion_proof(index, size, leaf, proof)? != *root {
        return Err(bad("inclusion proof does not lead to the root"));
    }
    Ok(())
}

/// Verifies that the tree of `old_size` leaves with `old_root` is a prefix of
/// the tree of `new_size` leaves with `new_root`.
///
/// Size 0 is consistent with every tree (with an empty proof): the empty tree
/// is a prefix of all trees, and RFC 9162 leaves this case undefined.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), AuditError> {
    if old_size > new_size {
        return Err(bad("old tree larger than new tree"));
    }
    if old_size == 0 {
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(bad("non-empty proof from the empty tree"))
        };
    }
    if old_size == new_size {
        if !proof.is_empty() {
            return Err(bad("non-empty proof between equal sizes"));
        }
        return if old_root == new_root {
            Ok(())
        } else {
            Err(bad("different roots for the same size"))
        };
    }
    let (first, rest): (Hash, &[Hash]) = if old_size.is_power_of_two() {
        (*old_root, proof)
    } else {
        match proof.split_first() {
            Some((f, r)) => (*f, r),
            None => return Err(bad("empty consistency proof")),
        }
    };
    let (mut fn_, mut sn) = (old_size - 1, new_size - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (first, first);
    for c in rest {
        if sn == 0 {
            return Err(bad("consistency proof too long"));
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(bad("consistency proof too short"));
    }
    if fr != *old_root {
        return Err(bad("consistency proof does not lead to the old root"));
    }
    if sr != *new_root {
        return Err(bad("consistency proof does not lead to the new root"));
    }
    Ok(())
}
