//! Fee-bump approvals (`fee_bumps = "reapprove"`): who may approve a
//! replacement, over what, until when; and that the two kinds of statement
//! never stand in for each other.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a panic is a test failure"
)]

mod common;

use common::*;
use custos_policy::*;

/// The fixture with `fee_bumps = "reapprove"` on `large-whitelisted`.
fn reapproving() -> ActivePolicy {
    let text = std::str::from_utf8(FIXTURE).unwrap().replace(
        "id = \"large-whitelisted\"\n",
        "id = \"large-whitelisted\"\nfee_bumps = \"reapprove\"\n",
    );
    ActivePolicy::assumed(Policy::parse(text.as_bytes()).unwrap(), Timestamp(0))
}

fn bump(a: &ActivePolicy) -> FeeBumpStatement {
    FeeBumpStatement {
        withdrawal_id: "wd-1".into(),
        statement_hash: [7; 32],
        chain: "ethereum".into(),
        nonce: 4,
        replaces: [1; 32],
        replacement: [2; 32],
        max_fee_per_gas: 30_000_000_000,
        max_priority_fee_per_gas: 2_000_000_000,
        gas_limit: 21_000,
        policy_hash: a.policy().hash(),
        rule_id: "large-whitelisted".into(),
        expiry: wed10().plus(Duration(3600)),
    }
}

fn yes(s: &FeeBumpStatement, id: &str, seed: u8) -> Approval {
    s.sign(Verdict::Approve, id, &key(seed)).unwrap()
}

fn check(a: &ActivePolicy, s: &FeeBumpStatement, approvals: &[Approval]) -> ApprovalStatus {
    check_fee_bump_approvals(a, "payments-backend", s, approvals, wed10())
}

fn reasons(st: &ApprovalStatus) -> String {
    match st {
        ApprovalStatus::Invalid { problems } => problems
            .iter()
            .map(|p| p.reason.clone())
            .collect::<Vec<_>>()
            .join(" | "),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn the_rule_decides_whether_a_bump_needs_approval() {
    let a = reapproving();
    assert!(fee_bump_needs_approval(&a, "large-whitelisted"));
    // The plain fixture: bumps within the cap need nothing new.
    assert!(!fee_bump_needs_approval(&active(), "large-whitelisted"));
    // A rule the policy in force no longer has: fail closed.
    assert!(fee_bump_needs_approval(&a, "no-such-rule"));
}

#[test]
fn the_rules_quorum_approves_a_bump() {
    let a = reapproving();
    let s = bump(&a);
    let (alice, bob, dave) = (
        yes(&s, "alice", ALICE),
        yes(&s, "bob", BOB),
        yes(&s, "dave", DAVE),
    );
    match check(&a, &s, &[alice.clone(), bob.clone()]) {
        ApprovalStatus::Missing { missing, .. } => assert_eq!(missing[0].group, "security"),
        other => panic!("{other:?}"),
    }
    match check(&a, &s, &[alice.clone(), bob.clone(), dave.clone()]) {
        ApprovalStatus::Satisfied { approvers } => {
            assert_eq!(approvers, vec!["alice", "bob", "dave"]);
        }
        other => panic!("{other:?}"),
    }
    let ok = authorize_fee_bump(&a, "payments-backend", &s, &[alice, bob, dave], wed10());
    assert_eq!(ok.unwrap().len(), 3);
}

#[test]
fn one_reject_denies_a_bump() {
    let a = reapproving();
    let s = bump(&a);
    let carol = s.sign(Verdict::Reject, "carol", &key(CAROL)).unwrap();
    let all = [
        yes(&s, "alice", ALICE),
        yes(&s, "bob", BOB),
        yes(&s, "dave", DAVE),
        carol,
    ];
    assert_eq!(
        check(&a, &s, &all),
        ApprovalStatus::Rejected {
            by: vec!["carol".into()]
        }
    );
    let e = authorize_fee_bump(&a, "payments-backend", &s, &all, wed10()).unwrap_err();
    assert!(e.to_string().contains("fee bump: rejected by carol"), "{e}");
}

#[test]
fn an_approval_binds_the_exact_replacement() {
    let a = reapproving();
    let s = bump(&a);
    let approvals = [
        yes(&s, "alice", ALICE),
        yes(&s, "bob", BOB),
        yes(&s, "dave", DAVE),
    ];
    let variants: Vec<(&str, FeeBumpStatement)> = vec![
        (
            "replacement",
            FeeBumpStatement {
                replacement: [3; 32],
                ..s.clone()
            },
        ),
        (
            "replaces",
            FeeBumpStatement {
                replaces: [9; 32],
                ..s.clone()
            },
        ),
        (
            "fee",
            FeeBumpStatement {
                max_fee_per_gas: s.max_fee_per_gas * 2,
                ..s.clone()
            },
        ),
        (
            "tip",
            FeeBumpStatement {
                max_priority_fee_per_gas: 1,
                ..s.clone()
            },
        ),
        (
            "nonce",
            FeeBumpStatement {
                nonce: 5,
                ..s.clone()
            },
        ),
        (
            "gas",
            FeeBumpStatement {
                gas_limit: 60_000,
                ..s.clone()
            },
        ),
        (
            "statement",
            FeeBumpStatement {
                statement_hash: [8; 32],
                ..s.clone()
            },
        ),
        (
            "withdrawal",
            FeeBumpStatement {
                withdrawal_id: "wd-2".into(),
                ..s.clone()
            },
        ),
        (
            "chain",
            FeeBumpStatement {
                chain: "anvil".into(),
                ..s.clone()
            },
        ),
    ];
    for (what, other) in variants {
        let r = reasons(&check(&a, &other, &approvals));
        assert!(r.contains("does not verify"), "{what}: {r}");
    }
}

#[test]
fn statements_of_the_other_kind_do_not_count() {
    let a = reapproving();
    let s = bump(&a);
    // A withdrawal approval whose statement carries the bump's bytes as its
    // digest is still signed under the withdrawal domain.
    let w = wd(5 * ETH);
    let d = decide(&a, &w, &[], wed10(), 0);
    let st = statement(&d, &w, wed10());
    let withdrawal_approval = approve(&st, "alice", ALICE);
    let r = reasons(&check(&a, &s, &[withdrawal_approval]));
    assert!(r.contains("does not verify"), "{r}");
    // And a bump approval is no withdrawal approval.
    let bump_approval = yes(&s, "alice", ALICE);
    match check_approvals(&a, &d, &st, &[bump_approval], wed10()) {
        ApprovalStatus::Invalid { problems } => {
            assert!(problems[0].reason.contains("does not verify"));
        }
        other => panic!("{other:?}"),
    }
    assert!(s.signing_message(Verdict::Cancel).is_err());
}

#[test]
fn who_may_approve_a_bump_follows_the_rule() {
    let a = reapproving();
    let s = bump(&a);
    // mallory is revoked, "payments-backend" initiated, zed is unknown,
    // alice twice counts once.
    let mallory = yes(&s, "mallory", MALLORY);
    let r = reasons(&check(&a, &s, &[mallory]));
    assert!(r.contains("revoked"), "{r}");
    let r = reasons(&check(&a, &s, &[yes(&s, "zed", ERIN)]));
    assert!(r.contains("not an approver"), "{r}");
    let r = reasons(&check(
        &a,
        &s,
        &[yes(&s, "alice", ALICE), yes(&s, "alice", ALICE)],
    ));
    assert!(r.contains("duplicate"), "{r}");
    let forged = Approval {
        signature: yes(&s, "bob", BOB).signature,
        ..yes(&s, "alice", ALICE)
    };
    let r = reasons(&check(&a, &s, &[forged]));
    assert!(r.contains("does not verify"), "{r}");
    let r = reasons(&check_fee_bump_approvals(
        &a,
        "alice",
        &s,
        &[yes(&s, "alice", ALICE)],
        wed10(),
    ));
    assert!(r.contains("initiated this withdrawal"), "{r}");
}

#[test]
fn bump_statements_expire_name_the_policy_and_a_quorum_rule() {
    let a = reapproving();
    let s = bump(&a);
    let late = check_fee_bump_approvals(&a, "payments-backend", &s, &[], s.expiry);
    assert!(reasons(&late).contains("expired"));
    let far = FeeBumpStatement {
        expiry: wed10().plus(Duration(13 * 3600)),
        ..s.clone()
    };
    assert!(reasons(&check(&a, &far, &[])).contains("approval lifetime"));
    let stale = FeeBumpStatement {
        policy_hash: PolicyHash([0; 32]),
        ..s.clone()
    };
    assert!(reasons(&check(&a, &stale, &[])).contains("policy in force"));
    for rule in ["hot-small", "no-such-rule"] {
        let other = FeeBumpStatement {
            rule_id: rule.into(),
            ..s.clone()
        };
        assert!(
            reasons(&check(&a, &other, &[])).contains("nobody can approve"),
            "{rule}"
        );
    }
}

#[test]
fn reapprove_is_only_for_rules_with_a_quorum() {
    let issues = with_rules(
        "[[rules]]\nid = \"ok\"\naction = \"require_approvals\"\napprovals = { all = [{ group = \"treasury\", count = 1 }] }\nfee_bumps = \"reapprove\"\n",
    );
    assert_eq!(issues.document().rules[0].fee_bumps, FeeBumps::Reapprove);
    let errs =
        with_rules_err("[[rules]]\nid = \"a\"\naction = \"allow\"\nfee_bumps = \"reapprove\"\n");
    assert!(
        errs.iter().any(|i| i.to_string().contains("fee_bumps")),
        "{errs:?}"
    );
    let errs = Policy::parse(
        b"version = 1\n[[rules]]\nid = \"a\"\naction = \"allow\"\nfee_bumps = \"sometimes\"\n",
    );
    assert!(errs.is_err());
}

#[test]
fn a_relaxation_of_fee_bumps_is_delayed() {
    let strict = reapproving();
    let lax = active();
    assert!(relaxation(strict.policy().document(), lax.policy().document()).is_some());
}

#[test]
fn the_encoding_is_canonical_and_pinned() {
    let a = reapproving();
    let s = bump(&a);
    let bytes = s.encode().unwrap();
    assert_eq!(FeeBumpStatement::decode(&bytes).unwrap(), s);
    assert_eq!(&bytes[..25], FEE_BUMP_MAGIC);
    assert_eq!(bytes[25], FEE_BUMP_VERSION);
    // 26 + (4 + 4) + 32 + (4 + 8) + 8 + 32 + 32 + 16 + 16 + 8 + 32 + (4 + 17) + 8
    assert_eq!(bytes.len(), 251);
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(FeeBumpStatement::decode(&trailing).is_err());
    for cut in 0..bytes.len() {
        assert!(FeeBumpStatement::decode(&bytes[..cut]).is_err(), "{cut}");
    }
    let mut other_version = bytes.clone();
    other_version[25] = 2;
    assert!(FeeBumpStatement::decode(&other_version).is_err());
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(serde_json::from_str::<FeeBumpStatement>(&json).unwrap(), s);
}
