//! Proof generation over perfect subtrees, and streaming root computation.
//!
//! A *perfect subtree* `(level, index)` is the complete subtree over leaves
//! `[index << level, (index + 1) << level)`. Once the log has that many leaves
//! its hash never changes, so stores keep every one of them (about `2n`
//! hashes). Any RFC 9162 subtree `D[a:b]` that appears in a proof is either a
//! perfect subtree (one lookup) or the ragged right edge of the tree, which
//! decomposes into at most `log2 n` perfect subtrees. Proofs therefore cost
//! O(log² n) lookups in the worst case and never touch all leaves.

use crate::AuditError;
use crate::hash::{Hash, empty_root, node_hash, split_point};

/// Source of perfect-subtree hashes; level 0 holds the leaf hashes.
pub trait NodeSource {
    /// Hash of the perfect subtree `(level, index)`.
    fn perfect_node(&self, level: u8, index: u64) -> Result<Hash, AuditError>;
}

/// `MTH(D[start:start+len])` where `start` is a multiple of the largest power
/// of two not exceeding `len`, as in every subtree of the RFC recursion.
pub fn subtree_root<S: NodeSource + ?Sized>(
    src: &S,
    start: u64,
    len: u64,
) -> Result<Hash, AuditError> {
    if len == 0 {
        return Ok(empty_root());
    }
    // Decompose [start, start+len) into perfect subtrees left to right, then
    // fold them right to left, exactly like MTH's split at the largest power
    // of two.
    let mut parts: Vec<Hash> = Vec::with_capacity(64);
    let mut pos = start;
    let mut remaining = len;
    while remaining > 0 {
        let level = 63 - remaining.leading_zeros();
        let size = 1u64 << level;
        if !pos.is_multiple_of(size) {
            return Err(AuditError::InvalidArgument(format!(
                "unaligned subtree [{start}, +{len})"
            )));
        }
        parts.push(src.perfect_node(level as u8, pos >> level)?);
        pos += size;
        remaining -= size;
    }
    let mut acc = parts.pop().unwrap_or_else(empty_root);
    while let Some(left) = parts.pop() {
        acc = node_hash(&left, &acc);
    }
    Ok(acc)
}

/// RFC 9162 §2.1.3.1 `PATH(index, D[size])`.
pub fn inclusion_proof<S: NodeSource + ?Sized>(
    src: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, AuditError> {
    if index >= size {
        return Err(AuditError::InvalidArgument(format!(
            "leaf index {index} not below tree size {size}"
        )));
    }
    // Walk top-down, collecting siblings; PATH lists them bottom-up.
    let mut siblings = Vec::new();
    let (mut start, mut len, mut m) = (0u64, size, index);
    while len > 1 {
        let k = split_point(len);
        if m < k {
            siblings.push(subtree_root(src, start + k, len - k)?);
            len = k;
        } else {
            siblings.push(subtree_root(src, start, k)?);
            start += k;
            len -= k;
            m -= k;
        }
    }
    siblings.reverse();
    Ok(siblings)
}

/// RFC 9162 §2.1.4.1 `PROOF(old_size, D[new_size])`; empty when
/// `old_size == 0` or `old_size == new_size`.
pub fn consistency_proof<S: NodeSource + ?Sized>(
    src: &S,
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>, AuditError> {
    if old_size > new_size {
        return Err(AuditError::InvalidArgument(format!(
            "old size {old_size} above new size {new_size}"
        )));
    }
    if old_size == 0 || old_size == new_size {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let (mut start, mut len, mut m, mut whole) = (0u64, new_size, old_size, true);
    loop {
        if m == len {
            if !whole {
                out.push(subtree_root(src, start, len)?);
            }
            break;
        }
        let k = split_point(len);
        if m <= k {
            out.push(subtree_root(src, start + k, len - k)?);
            len = k;
        } else {
            out.push(subtree_root(src, start, k)?);
            start += k;
            len -= k;
            m -= k;
            whole = false;
        }
    }
    out.reverse();
    Ok(out)
}

/// The perfect subtrees covering `[0, size)`, largest first: the compact
/// summary of a tree prefix that lets a verifier continue from `size` without
/// the earlier leaves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactRange {
    size: u64,
    /// `(level, hash)` with strictly decreasing levels.
    stack: Vec<(u8, Hash)>,
}

impl CompactRange {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a range from its perfect-subtree hashes (largest first), which
    /// must match the binary decomposition of `size`.
    pub fn from_parts(size: u64, hashes: &[Hash]) -> Result<Self, AuditError> {
        let levels: Vec<u8> = (0..64u8).rev().filter(|b| size >> b & 1 == 1).collect();
        if levels.len() != hashes.len() {
            return Err(AuditError::InvalidArgument(format!(
                "a prefix of {size} leaves has {} perfect subtrees, got {}",
                levels.len(),
                hashes.len()
            )));
        }
        Ok(Self {
            size,
            stack: levels.into_iter().zip(hashes.iter().copied()).collect(),
        })
    }

    /// Reads the range for `[0, size)` from a node source.
    pub fn from_source<S: NodeSource + ?Sized>(src: &S, size: u64) -> Result<Self, AuditError> {
        let mut stack = Vec::new();
        let mut pos = 0u64;
        for level in (0..64u8).rev() {
            if size >> level & 1 == 1 {
                stack.push((level, src.perfect_node(level, pos >> level)?));
                pos += 1 << level;
            }
        }
        Ok(Self { size, stack })
    }

    /// Number of leaves covered.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The perfect-subtree hashes, largest first.
    pub fn parts(&self) -> Vec<Hash> {
        self.stack.iter().map(|(_, h)| *h).collect()
    }

    /// Appends a leaf hash; returns the perfect subtrees it completed (the leaf
    /// itself first) as `(level, index, hash)`, which a store must persist.
    pub fn push(&mut self, leaf: Hash) -> Vec<(u8, u64, Hash)> {
        let index = self.size;
        let mut done = vec![(0u8, index, leaf)];
        let mut cur = (0u8, leaf);
        while let Some(&(level, left)) = self.stack.last() {
            if level != cur.0 {
                break;
            }
            self.stack.pop();
            let merged = (level + 1, node_hash(&left, &cur.1));
            done.push((merged.0, index >> merged.0, merged.1));
            cur = merged;
        }
        self.stack.push(cur);
        self.size += 1;
        done
    }

    /// `MTH` of the covered prefix.
    pub fn root(&self) -> Hash {
        let mut it = self.stack.iter().rev();
        let Some(&(_, mut acc)) = it.next() else {
            return empty_root();
        };
        for (_, left) in it {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::{leaf_hash, root_from_leaf_hashes};

    #[test]
    fn compact_range_matches_reference_root() {
        let leaves: Vec<Hash> = (0u32..70).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut cr = CompactRange::new();
        assert_eq!(cr.root(), root_from_leaf_hashes(&[]));
        for (i, l) in leaves.iter().enumerate() {
            cr.push(*l);
            assert_eq!(
                cr.root(),
                root_from_leaf_hashes(&leaves[..=i]),
                "size {}",
                i + 1
            );
            let again = CompactRange::from_parts(cr.size(), &cr.parts());
            assert_eq!(again.ok().as_ref(), Some(&cr));
        }
    }
}
