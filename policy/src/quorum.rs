//! Assigning distinct approvers to quorum terms.
//!
//! "2 of treasury AND 1 of security" needs three *different* people: someone in both
//! groups fills one slot, never two. This is a bipartite matching of approvers to
//! term slots, solved with augmenting paths (sizes are tiny).

use std::collections::BTreeSet;

/// One term: who is eligible and how many approvals it needs.
pub(crate) struct Term<'a> {
    pub eligible: &'a BTreeSet<usize>,
    pub count: usize,
}

/// Returns, per term, the approvers assigned to it (at most `count` each), maximising
/// the total. Each candidate appears in at most one term.
pub(crate) fn assign(terms: &[Term<'_>], candidates: &[usize]) -> Vec<Vec<usize>> {
    let mut assigned: Vec<Vec<usize>> = vec![Vec::new(); terms.len()];
    let mut seen = BTreeSet::new();
    for &c in candidates {
        if !seen.insert(c) {
            continue;
        }
        let mut visited = vec![false; terms.len()];
        augment(terms, &mut assigned, c, &mut visited);
    }
    assigned
}

fn augment(
    terms: &[Term<'_>],
    assigned: &mut [Vec<usize>],
    c: usize,
    visited: &mut [bool],
) -> bool {
    for t in 0..terms.len() {
        if visited[t] || !terms[t].eligible.contains(&c) {
            continue;
        }
        visited[t] = true;
        if assigned[t].len() < terms[t].count {
            assigned[t].push(c);
            return true;
        }
        // Term full: try to move one of its approvers to another term.
        for k in 0..assigned[t].len() {
            let other = assigned[t][k];
            if augment(terms, assigned, other, visited) {
                assigned[t][k] = c;
                return true;
            }
        }
    }
    false
}

/// True when the assignment fills every term.
pub(crate) fn is_full(terms: &[Term<'_>], assigned: &[Vec<usize>]) -> bool {
    terms.iter().zip(assigned).all(|(t, a)| a.len() >= t.count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_member_fills_only_one_slot() {
        let treasury: BTreeSet<usize> = [0, 1].into();
        let security: BTreeSet<usize> = [1, 2].into();
        let terms = [
            Term {
                eligible: &treasury,
                count: 2,
            },
            Term {
                eligible: &security,
                count: 1,
            },
        ];
        // 1 is in both groups: 0 and 1 fill treasury, security is still missing.
        assert!(!is_full(&terms, &assign(&terms, &[0, 1])));
        // Order of arrival must not matter: 1 first, then 0 still leaves security empty.
        assert!(!is_full(&terms, &assign(&terms, &[1, 0])));
        // Augmenting path: 1 first lands in treasury, 2 arrives, 0 arrives and 1 moves.
        assert!(is_full(&terms, &assign(&terms, &[1, 2, 0])));
        assert!(is_full(&terms, &assign(&terms, &[1, 0, 2])));
        assert!(!is_full(&terms, &assign(&terms, &[1, 1, 1, 0])));
    }
}
