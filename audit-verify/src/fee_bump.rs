//! Replacements (fee bumps) under a rule with `fee_bumps = "reapprove"`: the
//! rule's quorum must have approved a fee-bump statement naming exactly the
//! replacement transaction that was signed.

use custos_audit::{Entry, EntryBody};
use custos_policy::{
    ActivePolicy, Approval, ApprovalStatus, FeeBumpStatement, Timestamp, check_fee_bump_approvals,
};

use crate::VerifyError;
use crate::approvals::verdict;
use crate::error::ApprovalProblem;

/// The verdicts logged over one fee-bump statement, each with its entry.
struct BumpVerdicts {
    statement: FeeBumpStatement,
    entries: Vec<u64>,
    verdicts: Vec<Approval>,
}

/// The fee-bump approvals logged for the replacement signed as
/// `message_digest` (all must carry the same statement), if any.
fn bump_verdicts(
    history: &[&Entry],
    message_digest: &[u8],
) -> Result<Option<BumpVerdicts>, VerifyError> {
    let mut found: Option<(&[u8], BumpVerdicts)> = None;
    for e in history {
        let EntryBody::FeeBumpApproval {
            approver_id,
            verdict: logged,
            statement,
            signature,
            ..
        } = &e.body
        else {
            continue;
        };
        let Ok(decoded) = FeeBumpStatement::decode(statement) else {
            return Err(VerifyError::FeeBumpStatementUndecodable { entry: e.index });
        };
        if decoded.replacement.as_slice() != message_digest {
            continue;
        }
        let approval = Approval::from_log(approver_id, verdict(logged), signature);
        match &mut found {
            None => {
                found = Some((
                    statement,
                    BumpVerdicts {
                        statement: decoded,
                        entries: vec![e.index],
                        verdicts: vec![approval],
                    },
                ));
            }
            Some((bytes, list)) if *bytes == statement.as_slice() => {
                list.entries.push(e.index);
                list.verdicts.push(approval);
            }
            Some(_) => return Err(VerifyError::FeeBumpStatementDiffers { entry: e.index }),
        }
    }
    Ok(found.map(|(_, list)| list))
}

/// For a replacement signed as `message_digest` under `rule_id` (which says
/// `fee_bumps = "reapprove"`): the rule's quorum, in the policy the fee-bump
/// statement names (`policy` finds it among the trusted documents), approved
/// a statement naming exactly this transaction, valid at `at`.
pub(crate) fn check_fee_bump_quorum(
    history: &[&Entry],
    policy: impl Fn(&str) -> Option<ActivePolicy>,
    rule_id: &str,
    initiator: &str,
    message_digest: &[u8],
    at: Timestamp,
) -> Result<(), VerifyError> {
    let Some(bump) = bump_verdicts(history, message_digest)? else {
        return Err(VerifyError::NoFeeBumpApprovals {
            replacement: hex::encode(message_digest),
            rule: rule_id.to_owned(),
        });
    };
    if bump.statement.rule_id != rule_id {
        return Err(VerifyError::FeeBumpRuleMismatch {
            named: bump.statement.rule_id.clone(),
            rule: rule_id.to_owned(),
        });
    }
    let hash = bump.statement.policy_hash.to_string();
    let Some(active) = policy(&hash) else {
        return Err(VerifyError::FeeBumpPolicyUnknown { policy: hash });
    };
    match check_fee_bump_approvals(&active, initiator, &bump.statement, &bump.verdicts, at) {
        ApprovalStatus::Satisfied { .. } => Ok(()),
        ApprovalStatus::Missing { approvers, .. } => Err(VerifyError::FeeBumpQuorumMissing {
            rule: rule_id.to_owned(),
            counted: approvers,
        }),
        ApprovalStatus::Rejected { by } => Err(VerifyError::FeeBumpRejected { by }),
        ApprovalStatus::Invalid { problems } => Err(VerifyError::FeeBumpApprovalsInvalid {
            problems: problems
                .into_iter()
                .map(|p| ApprovalProblem {
                    entry: p.index.and_then(|i| bump.entries.get(i)).copied(),
                    approver: p.approver,
                    reason: p.reason,
                })
                .collect(),
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::chain_tx::tests::{digest, tx};
    use crate::testing::key;
    use custos_audit::entry::Verdict as LogVerdict;
    use custos_policy::{Policy, PolicyHash, Verdict};

    const TO: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";

    fn policy() -> ActivePolicy {
        let doc = format!(
            "version = 1\n\
             [[approvers]]\nid = \"alice\"\nrole = \"treasury\"\ned25519 = \"{}\"\n\
             [[approvers]]\nid = \"bob\"\nrole = \"treasury\"\ned25519 = \"{}\"\n\
             [groups]\ntreasury = [\"alice\", \"bob\"]\n\
             [[rules]]\nid = \"two\"\naction = \"require_approvals\"\n\
             approvals = {{ all = [{{ group = \"treasury\", count = 2 }}] }}\n\
             fee_bumps = \"reapprove\"\n",
            key("alice").public().to_hex(),
            key("bob").public().to_hex()
        );
        ActivePolicy::assumed(Policy::parse(doc.as_bytes()).unwrap(), Timestamp(0))
    }

    fn bump_statement(active: &ActivePolicy, replacement: &[u8]) -> FeeBumpStatement {
        FeeBumpStatement {
            withdrawal_id: "wd-1".into(),
            statement_hash: [3; 32],
            chain: "anvil".into(),
            nonce: 0,
            replaces: [4; 32],
            replacement: replacement.try_into().unwrap(),
            max_fee_per_gas: 2_000_000_000,
            max_priority_fee_per_gas: 2,
            gas_limit: 21_000,
            policy_hash: active.policy().hash(),
            rule_id: "two".into(),
            expiry: Timestamp(1_700_000_000 + 3600),
        }
    }

    fn verdict(index: u64, s: &FeeBumpStatement, who: &str) -> Entry {
        let a = s.sign(Verdict::Approve, who, &key(who)).unwrap();
        Entry {
            index,
            timestamp_ms: 1_700_000_000_000 + index,
            body: EntryBody::FeeBumpApproval {
                withdrawal_id: "wd-1".into(),
                approver_id: who.into(),
                verdict: LogVerdict::Approve,
                statement: s.encode().unwrap(),
                signature: hex::decode(a.signature).unwrap(),
            },
        }
    }

    #[test]
    fn a_reapproved_replacement_needs_its_quorum_over_exactly_it() {
        let active = policy();
        let replacement = digest(&tx(TO, 1, 2_000_000_000));
        let s = bump_statement(&active, &replacement);
        let at = Timestamp(1_700_000_100);
        let run = |entries: &[Entry], d: &[u8]| {
            let history: Vec<&Entry> = entries.iter().collect();
            let p = active.clone();
            check_fee_bump_quorum(
                &history,
                |h| (h == p.policy().hash().to_string()).then(|| p.clone()),
                "two",
                "payments-backend",
                d,
                at,
            )
            .map_err(|e| e.explain())
        };
        let both = [verdict(5, &s, "alice"), verdict(6, &s, "bob")];
        assert_eq!(run(&both, &replacement), Ok(()));
        let e = run(&both[..1], &replacement).unwrap_err();
        assert!(e.contains("too few"), "{e}");
        let e = run(&[], &replacement).unwrap_err();
        assert!(e.contains("no fee_bump_approval entries"), "{e}");
        // Approvals of another replacement do not count for this one.
        let e = run(&both, &[8; 32]).unwrap_err();
        assert!(e.contains("no fee_bump_approval entries"), "{e}");
        // Expired by the time the replacement was signed: the entries are named.
        let late = FeeBumpStatement {
            expiry: Timestamp(at.0 - 1),
            ..s.clone()
        };
        let e = run(
            &[verdict(5, &late, "alice"), verdict(6, &late, "bob")],
            &replacement,
        )
        .unwrap_err();
        assert!(e.contains("expired"), "{e}");
        // A statement naming a policy the auditor was not given.
        let foreign = FeeBumpStatement {
            policy_hash: PolicyHash([0; 32]),
            ..s.clone()
        };
        let e = run(
            &[verdict(5, &foreign, "alice"), verdict(6, &foreign, "bob")],
            &replacement,
        )
        .unwrap_err();
        assert!(e.contains("not among the supplied documents"), "{e}");
    }
}
