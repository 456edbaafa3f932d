//! Table tests for approvals: who may approve, over what, until when.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a panic is a test failure"
)]

mod common;

use common::*;
use custos_policy::*;

struct Case {
    a: ActivePolicy,
    w: Withdrawal,
    d: Decision,
    s: ApprovalStatement,
}

/// A 5 ETH hot withdrawal: rule `large-whitelisted` (2 treasury AND 1 security,
/// initiator excluded, 12 h approval lifetime, 1 h delay cancellable by security).
fn large() -> Case {
    let a = active();
    let w = wd(5 * ETH);
    let d = decide(&a, &w, &[], wed10(), 0);
    assert_eq!(rule_of(&d), "large-whitelisted");
    let s = statement(&d, &w, wed10());
    Case { a, w, d, s }
}

fn check(c: &Case, approvals: &[Approval]) -> ApprovalStatus {
    check_approvals(&c.a, &c.d, &c.s, approvals, wed10())
}

fn reasons(st: &ApprovalStatus) -> Vec<String> {
    match st {
        ApprovalStatus::Invalid { problems } => problems.iter().map(|p| p.reason.clone()).collect(),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn quorum_progression_names_who_can_still_approve() {
    let c = large();
    let alice = approve(&c.s, "alice", ALICE);
    let bob = approve(&c.s, "bob", BOB);
    let dave = approve(&c.s, "dave", DAVE);
    match check(&c, &[]) {
        ApprovalStatus::Missing { approvers, missing } => {
            assert!(approvers.is_empty());
            assert_eq!(missing[0].group, "treasury");
            assert_eq!(missing[0].still_needed, 2);
            // mallory is revoked: never offered.
            assert_eq!(missing[0].could_approve, vec!["alice", "bob", "carol"]);
            assert_eq!(missing[1].could_approve, vec!["dave", "erin"]);
        }
        other => panic!("{other:?}"),
    }
    match check(&c, &[alice.clone(), dave.clone()]) {
        ApprovalStatus::Missing { approvers, missing } => {
            assert_eq!(approvers, vec!["alice", "dave"]);
            assert_eq!(missing.len(), 1);
            assert_eq!(
                (missing[0].group.as_str(), missing[0].still_needed),
                ("treasury", 1)
            );
            assert_eq!(missing[0].could_approve, vec!["bob", "carol"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        check(&c, &[alice, bob, dave]),
        ApprovalStatus::Satisfied {
            approvers: vec!["alice".into(), "bob".into(), "dave".into()]
        }
    );
}

#[test]
fn revoked_unknown_and_wrong_group_approvers_are_refused() {
    let c = large();
    let ok = [approve(&c.s, "alice", ALICE), approve(&c.s, "dave", DAVE)];
    let table: &[(Approval, &str)] = &[
        (approve(&c.s, "mallory", MALLORY), "revoked"),
        (approve(&c.s, "zed", 42), "not an approver of this policy"),
        // Right name, wrong key: someone signing as bob.
        (approve(&c.s, "bob", ERIN), "does not verify"),
    ];
    for (bad, why) in table {
        let mut list = ok.to_vec();
        list.push(bad.clone());
        let r = reasons(&check(&c, &list));
        assert!(r.iter().any(|m| m.contains(why)), "{why}: {r:?}");
    }
    // Wrong group: a rule needing only security, approved by treasury.
    let p = with_rules(
        "[[rules]]\nid = \"sec\"\naction = \"require_approvals\"\napprovals = { all = [{ group = \"security\", count = 1 }] }\n",
    );
    let a = ActivePolicy::assumed(p, Timestamp(0));
    let w = wd(1);
    let d = decide(&a, &w, &[], wed10(), 0);
    let s = statement(&d, &w, wed10());
    let r = check_approvals(&a, &d, &s, &[approve(&s, "alice", ALICE)], wed10());
    assert!(
        reasons(&r)[0].contains("in none of the groups rule \"sec\" needs (security)"),
        "{r:?}"
    );
    assert!(matches!(
        check_approvals(&a, &d, &s, &[approve(&s, "erin", ERIN)], wed10()),
        ApprovalStatus::Satisfied { .. }
    ));
}

#[test]
fn duplicate_approver_never_counts_twice() {
    let c = large();
    let alice = approve(&c.s, "alice", ALICE);
    let r = check(
        &c,
        &[alice.clone(), alice.clone(), approve(&c.s, "dave", DAVE)],
    );
    assert!(
        reasons(&r)
            .iter()
            .any(|m| m.contains("duplicate approval from \"alice\""))
    );
}

#[test]
fn person_in_two_groups_fills_one_slot() {
    // erin in both groups; 2 treasury AND 1 security needs three distinct people.
    let text = std::str::from_utf8(FIXTURE).unwrap().replace(
        "treasury = [\"alice\", \"bob\", \"carol\", \"mallory\"]",
        "treasury = [\"alice\", \"bob\", \"carol\", \"mallory\", \"erin\"]",
    );
    let head = &text[..text.find("# 1. Anything").unwrap()];
    let p = Policy::parse(format!("{head}\n[[rules]]\nid = \"q\"\naction = \"require_approvals\"\napprovals = {{ all = [{{ group = \"treasury\", count = 2 }}, {{ group = \"security\", count = 1 }}] }}\n").as_bytes()).unwrap();
    let a = ActivePolicy::assumed(p, Timestamp(0));
    let w = wd(1);
    let d = decide(&a, &w, &[], wed10(), 0);
    let s = statement(&d, &w, wed10());
    let two = [approve(&s, "erin", ERIN), approve(&s, "alice", ALICE)];
    assert!(matches!(
        check_approvals(&a, &d, &s, &two, wed10()),
        ApprovalStatus::Missing { .. }
    ));
    let three = [
        approve(&s, "erin", ERIN),
        approve(&s, "alice", ALICE),
        approve(&s, "bob", BOB),
    ];
    assert!(matches!(
        check_approvals(&a, &d, &s, &three, wed10()),
        ApprovalStatus::Satisfied { .. }
    ));
}

#[test]
fn initiator_cannot_approve_own_withdrawal() {
    let a = active();
    let w = Withdrawal {
        initiator: "alice".into(),
        ..wd(5 * ETH)
    };
    let d = decide(&a, &w, &[], wed10(), 0);
    let s = statement(&d, &w, wed10());
    let r = check_approvals(&a, &d, &s, &[approve(&s, "alice", ALICE)], wed10());
    assert!(reasons(&r)[0].contains("initiated this withdrawal"));
    // alice is also no longer offered as a possible approver.
    match check_approvals(&a, &d, &s, &[], wed10()) {
        ApprovalStatus::Missing { missing, .. } => {
            assert_eq!(missing[0].could_approve, vec!["bob", "carol"])
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn approval_for_a_different_withdrawal_or_policy_is_refused() {
    let c = large();
    // Approvals made over another withdrawal's statement.
    let other_w = Withdrawal {
        id: "wd-2".into(),
        ..c.w.clone()
    };
    let other_s = statement(
        &c.d,
        &Withdrawal {
            id: c.w.id.clone(),
            ..other_w.clone()
        },
        wed10(),
    );
    let mut forged = other_s.clone();
    forged.withdrawal_id = "wd-2".into();
    let foreign = [
        approve(&forged, "alice", ALICE),
        approve(&forged, "bob", BOB),
        approve(&forged, "dave", DAVE),
    ];
    let r = reasons(&check(&c, &foreign));
    assert_eq!(r.len(), 3, "{r:?}");
    assert!(r.iter().all(|m| m.contains("does not verify")));
    // The statement presented names another withdrawal: refused before signatures.
    let r = reasons(&check_approvals(&c.a, &c.d, &forged, &foreign, wed10()));
    assert!(
        r.iter()
            .any(|m| m.contains("statement withdrawal_id is \"wd-2\"")),
        "{r:?}"
    );
    // Another policy hash.
    let mut s2 = c.s.clone();
    s2.policy_hash = PolicyHash([9; 32]);
    let list = [
        approve(&s2, "alice", ALICE),
        approve(&s2, "bob", BOB),
        approve(&s2, "dave", DAVE),
    ];
    let r = reasons(&check_approvals(&c.a, &c.d, &s2, &list, wed10()));
    assert!(
        r.iter().any(|m| m.contains("statement names policy 0909")),
        "{r:?}"
    );
    // Another rule id.
    let mut s3 = c.s.clone();
    s3.rule_id = "hot-small".into();
    let r = reasons(&check_approvals(&c.a, &c.d, &s3, &[], wed10()));
    assert!(
        r.iter()
            .any(|m| m.contains("statement names rule \"hot-small\"")),
        "{r:?}"
    );
}

#[test]
fn digest_amount_or_destination_swapped_after_approval_is_refused() {
    let c = large();
    let good = [
        approve(&c.s, "alice", ALICE),
        approve(&c.s, "bob", BOB),
        approve(&c.s, "dave", DAVE),
    ];
    assert!(matches!(check(&c, &good), ApprovalStatus::Satisfied { .. }));
    // The signer decodes the transaction itself and finds digest Y, not X.
    let mut y = c.s.clone();
    y.tx_digest = vec![0x22; 32];
    assert!(
        reasons(&check_approvals(&c.a, &c.d, &y, &good, wed10()))
            .iter()
            .all(|m| m.contains("does not verify"))
    );
    let mut fee = c.s.clone();
    fee.fee_cap = Amount(c.s.fee_cap.0 + 1);
    assert!(matches!(
        check_approvals(&c.a, &c.d, &fee, &good, wed10()),
        ApprovalStatus::Invalid { .. }
    ));
    // Amount changed in the withdrawal: the re-evaluated decision no longer matches the statement.
    let w2 = wd(5 * ETH + 1);
    let d2 = decide(&c.a, &w2, &[], wed10(), 0);
    let r = reasons(&check_approvals(&c.a, &d2, &c.s, &good, wed10()));
    assert!(r.iter().any(|m| m.contains("statement amount")), "{r:?}");
}

#[test]
fn expiry_is_enforced_and_bounded_by_the_rule() {
    let c = large();
    let good = [
        approve(&c.s, "alice", ALICE),
        approve(&c.s, "bob", BOB),
        approve(&c.s, "dave", DAVE),
    ];
    let just_before = Timestamp(c.s.expiry.0 - 1);
    assert!(matches!(
        check_approvals(&c.a, &c.d, &c.s, &good, just_before),
        ApprovalStatus::Satisfied { .. }
    ));
    let r = reasons(&check_approvals(&c.a, &c.d, &c.s, &good, c.s.expiry));
    assert!(r.iter().any(|m| m.contains("expired")), "{r:?}");
    // A statement claiming a 2-day lifetime under a 12 h rule.
    let long =
        ApprovalStatement::for_decision(&c.d, &c.w, wed10().plus(Duration(2 * 86_400))).unwrap();
    let list = [
        approve(&long, "alice", ALICE),
        approve(&long, "bob", BOB),
        approve(&long, "dave", DAVE),
    ];
    let r = reasons(&check_approvals(&c.a, &c.d, &long, &list, wed10()));
    assert!(
        r.iter()
            .any(|m| m.contains("further away than the rule's approval lifetime")),
        "{r:?}"
    );
}

#[test]
fn one_authorised_reject_denies() {
    let c = large();
    let reject = Approval::sign(&c.s, Verdict::Reject, "carol", &key(CAROL)).unwrap();
    let list = [
        approve(&c.s, "alice", ALICE),
        approve(&c.s, "bob", BOB),
        approve(&c.s, "dave", DAVE),
        reject,
    ];
    assert_eq!(
        check(&c, &list),
        ApprovalStatus::Rejected {
            by: vec!["carol".into()]
        }
    );
    // A reject signature cannot be replayed as an approval (verdict is signed).
    let mut flipped = Approval::sign(&c.s, Verdict::Reject, "carol", &key(CAROL)).unwrap();
    flipped.verdict = Verdict::Approve;
    assert!(matches!(
        check(&c, &[flipped]),
        ApprovalStatus::Invalid { .. }
    ));
    // A revoked approver's reject is refused, not honoured.
    let r = Approval::sign(&c.s, Verdict::Reject, "mallory", &key(MALLORY)).unwrap();
    assert!(matches!(check(&c, &[r]), ApprovalStatus::Invalid { .. }));
}

#[test]
fn cancellation_during_time_lock() {
    let c = large();
    let by = |id: &str, seed: u8| Approval::sign(&c.s, Verdict::Cancel, id, &key(seed)).unwrap();
    assert_eq!(
        check_cancellation(&c.a, &c.d, &c.s, &by("erin", ERIN)),
        Ok("erin".into())
    );
    assert!(
        check_cancellation(&c.a, &c.d, &c.s, &by("alice", ALICE))
            .unwrap_err()
            .contains("not in cancel group")
    );
    assert!(
        check_cancellation(&c.a, &c.d, &c.s, &by("dave", ERIN))
            .unwrap_err()
            .contains("does not verify")
    );
    // An approval is not a cancellation.
    assert!(check_cancellation(&c.a, &c.d, &c.s, &approve(&c.s, "erin", ERIN)).is_err());
    // A cancel signature is not an approval.
    assert!(matches!(
        check(&c, &[by("dave", DAVE)]),
        ApprovalStatus::Invalid { .. }
    ));
}

#[test]
fn allow_needs_no_approvals_and_block_accepts_none() {
    let a = active();
    let w = wd(1);
    let d = decide(&a, &w, &[], wed10(), 0);
    assert_eq!(d.outcome, Outcome::Allow);
    let s = statement(&d, &w, wed10());
    assert_eq!(
        check_approvals(&a, &d, &s, &[], wed10()),
        ApprovalStatus::Satisfied { approvers: vec![] }
    );
    let d = decide(&a, &w, &[], wed10(), 99);
    let s = statement(&d, &w, wed10());
    assert!(matches!(
        check_approvals(&a, &d, &s, &[approve(&s, "alice", ALICE)], wed10()),
        ApprovalStatus::Invalid { .. }
    ));
}

#[test]
fn approvals_json_round_trip() {
    let c = large();
    let a = approve(&c.s, "alice", ALICE);
    let j = serde_json::to_string(&a).unwrap();
    assert!(j.contains("\"verdict\":\"approve\""));
    assert_eq!(serde_json::from_str::<Approval>(&j).unwrap(), a);
    let sj = serde_json::to_string(&c.s).unwrap();
    assert_eq!(serde_json::from_str::<ApprovalStatement>(&sj).unwrap(), c.s);
}

#[test]
fn a_forged_decision_cannot_loosen_the_rule() {
    let a = active();
    let w = Withdrawal {
        initiator: "alice".into(),
        ..wd(5 * ETH)
    };
    let d = decide(&a, &w, &[], wed10(), 0);
    let s = statement(&d, &w, wed10());
    // Someone hands over a decision claiming the initiator may approve and a long lifetime.
    let mut forged = d.clone();
    forged.exclude_initiator = false;
    forged.approval_expiry = Some(Duration(30 * 86_400));
    forged.quorum = vec![RequiredTerm {
        group: "treasury".into(),
        count: 1,
    }];
    let list = [
        approve(&s, "alice", ALICE),
        approve(&s, "bob", BOB),
        approve(&s, "dave", DAVE),
    ];
    let r = reasons(&check_approvals(&a, &forged, &s, &list, wed10()));
    assert!(
        r.iter().any(|m| m.contains("initiated this withdrawal")),
        "{r:?}"
    );
    // Quorum comes from the policy: bob alone is not enough whatever the decision says.
    let only_bob = [approve(&s, "bob", BOB), approve(&s, "dave", DAVE)];
    assert!(matches!(
        check_approvals(&a, &forged, &s, &only_bob, wed10()),
        ApprovalStatus::Missing { .. }
    ));
    let long =
        ApprovalStatement::for_decision(&forged, &w, wed10().plus(Duration(20 * 86_400))).unwrap();
    let r = reasons(&check_approvals(&a, &forged, &long, &[], wed10()));
    assert!(
        r.iter().any(|m| m.contains("approval lifetime of 12h")),
        "{r:?}"
    );
    // A decision pointing at an `allow` rule index cannot become an approval decision.
    let mut wrong_rule = d.clone();
    wrong_rule.rule_index = Some(3);
    assert!(matches!(
        check_approvals(&a, &wrong_rule, &s, &list, wed10()),
        ApprovalStatus::Invalid { .. }
    ));
}

#[test]
fn time_lock_end() {
    let c = large();
    let approved = wed10();
    assert_eq!(c.d.signable_from(approved), Timestamp(approved.0 + 3600));
    let d = decide(&c.a, &wd(1), &[], wed10(), 0);
    assert_eq!(d.signable_from(approved), approved);
}
