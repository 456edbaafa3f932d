//! Admin-signed bundles and how updates take effect (docs/SECURITY.md cases 12 and 13).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a panic is a test failure"
)]

mod common;

use common::*;
use custos_policy::*;

const HOUR: i64 = 3600;

fn bundle(doc: &[u8], seeds: &[u8]) -> VerifiedBundle {
    verify_bundle(doc, &signed(doc, seeds), &admins(2)).unwrap()
}

/// The fixture with `from` replaced by `to` and the version bumped to `version`.
fn edit(from: &str, to: &str, version: u64) -> Vec<u8> {
    let text = std::str::from_utf8(FIXTURE).unwrap();
    assert!(text.contains(from), "fixture lacks {from:?}");
    text.replacen(from, to, 1)
        .replacen("version = 1", &format!("version = {version}"), 1)
        .into_bytes()
}

#[test]
fn bundle_signed_by_enough_admins_verifies() {
    let b = bundle(FIXTURE, &[ADMIN1, ADMIN3]);
    assert_eq!(b.signers().len(), 2);
    assert_eq!(b.policy().hash(), PolicyHash::of_document(FIXTURE));
}

#[test]
fn bundle_signed_by_too_few_admins_is_refused() {
    let cases: Vec<(&str, BundleSignatures)> = vec![
        ("none", signed(FIXTURE, &[])),
        ("one of two", signed(FIXTURE, &[ADMIN1])),
        ("one admin twice", {
            let mut s = signed(FIXTURE, &[ADMIN1]);
            let again = s.signatures[0].clone();
            s.signatures.push(again);
            s
        }),
        ("admin + outsider", signed(FIXTURE, &[ADMIN1, ALICE])),
    ];
    for (name, sigs) in cases {
        match verify_bundle(FIXTURE, &sigs, &admins(2)) {
            Err(PolicyError::BundleUnauthorized {
                valid, required: 2, ..
            }) => assert!(valid < 2, "{name}"),
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn forged_or_mismatched_bundles_are_refused() {
    // Signatures valid for the original, presented with a modified document.
    let sigs = signed(FIXTURE, &[ADMIN1, ADMIN2]);
    let tampered = edit(
        "count = 2 }, { group = \"security\"",
        "count = 1 }, { group = \"security\"",
        1,
    );
    let e = verify_bundle(&tampered, &sigs, &admins(2)).unwrap_err();
    assert!(e.to_string().contains("signatures are for policy"), "{e}");
    // Correct hash field, signature bytes flipped.
    let mut bad = signed(&tampered, &[ADMIN1, ADMIN2]);
    let mut raw = hex::decode(&bad.signatures[1].signature).unwrap();
    raw[10] ^= 1;
    bad.signatures[1].signature = hex::encode(raw);
    assert!(matches!(
        verify_bundle(&tampered, &bad, &admins(2)),
        Err(PolicyError::BundleUnauthorized { valid: 1, .. })
    ));
    // An approval signature is not an admin signature: different domain.
    let h = PolicyHash::of_document(FIXTURE);
    let mut s = BundleSignatures::new(h);
    s.sign(&key(ADMIN1));
    s.signatures.push(AdminSignature {
        public_key: key(ADMIN2).public().to_hex(),
        signature: "00".repeat(64),
    });
    assert!(verify_bundle(FIXTURE, &s, &admins(2)).is_err());
    // An invalid policy is refused even when signed.
    let broken = b"version = 1\n[[rules]]\nid = \"x\"\naction = \"block\"\n";
    assert!(matches!(
        verify_bundle(broken, &signed(broken, &[ADMIN1, ADMIN2]), &admins(2)),
        Err(PolicyError::Invalid(_))
    ));
}

#[test]
fn admin_set_validation() {
    let k = key(ADMIN1).public().to_hex();
    assert!(
        AdminSet::new(&AdminSetConfig {
            threshold: 0,
            keys: vec![k.clone()]
        })
        .is_err()
    );
    assert!(
        AdminSet::new(&AdminSetConfig {
            threshold: 2,
            keys: vec![k.clone()]
        })
        .is_err()
    );
    assert!(
        AdminSet::new(&AdminSetConfig {
            threshold: 1,
            keys: vec![k.clone(), k.clone()]
        })
        .is_err()
    );
    let example = std::fs::read(format!(
        "{}/../examples/admins.toml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    assert_eq!(AdminSet::parse(&example).unwrap().threshold(), 2);
}

#[test]
fn relaxation_waits_for_the_change_delay() {
    let t0 = wed10();
    let mut st = PolicyState::genesis(bundle(FIXTURE, &[ADMIN1, ADMIN2]), Timestamp(0));
    // Relaxation: large withdrawals need only one treasurer.
    let relaxed = edit(
        "approval_expiry = \"12h\"",
        "approval_expiry = \"12h\"\n# relaxed\n",
        2,
    );
    let relaxed = String::from_utf8(relaxed).unwrap().replacen(
        "approvals = { all = [{ group = \"treasury\", count = 2 }, { group = \"security\", count = 1 }], exclude_initiator = true }\napproval_expiry",
        "approvals = { all = [{ group = \"treasury\", count = 1 }], exclude_initiator = true }\napproval_expiry",
        1,
    );
    let rb = bundle(relaxed.as_bytes(), &[ADMIN1, ADMIN2]);
    let new_hash = rb.policy().hash();
    let old_hash = PolicyHash::of_document(FIXTURE);
    assert_eq!(
        st.propose(rb, t0).unwrap(),
        UpdateEffect::Delayed(Timestamp(t0.0 + 24 * HOUR))
    );
    // Inside the delay the old policy stays in force and the new hash is refused.
    assert_eq!(
        st.in_force(Timestamp(t0.0 + 24 * HOUR - 1)).policy().hash(),
        old_hash
    );
    assert!(matches!(
        st.policy_for(&new_hash, Timestamp(t0.0 + HOUR)),
        Err(PolicyError::NotYetEffective { .. })
    ));
    // A withdrawal evaluated under the relaxed policy before its time: approvals
    // naming the new hash do not satisfy the policy in force.
    let w = wd(5 * ETH);
    let early = Timestamp(t0.0 + HOUR);
    let in_force = st.in_force(early);
    let d_old = decide(in_force, &w, &[], early, 0);
    let pending = st.pending().unwrap();
    let d_new = decide(pending, &w, &[], early, 0);
    let s_new = statement(&d_new, &w, early);
    let one = [approve(&s_new, "alice", ALICE)];
    assert!(matches!(
        check_approvals(pending, &d_new, &s_new, &one, early),
        ApprovalStatus::Satisfied { .. }
    ));
    assert!(matches!(
        check_approvals(in_force, &d_old, &s_new, &one, early),
        ApprovalStatus::Invalid { .. }
    ));
    // After the delay the relaxed policy is in force.
    let later = Timestamp(t0.0 + 24 * HOUR);
    assert_eq!(
        st.policy_for(&new_hash, later).unwrap().policy().version(),
        2
    );
    assert!(matches!(
        st.policy_for(&old_hash, later),
        Err(PolicyError::UnknownPolicy(_))
    ));
    st.advance(later);
    assert!(st.pending().is_none());
}

#[test]
fn tightening_takes_effect_at_once() {
    let t0 = wed10();
    let mut st = PolicyState::genesis(bundle(FIXTURE, &[ADMIN1, ADMIN2]), Timestamp(0));
    // Insert a block rule at the top and revoke bob.
    let tighter = String::from_utf8(edit(
        "# 1. Anything",
        "[[rules]]\nid = \"freeze\"\nwallets = [\"eth-hot-1\"]\naction = \"block\"\nreason = \"incident\"\n\n# 1. Anything",
        2,
    ))
    .unwrap()
    .replacen(
        "ed25519 = \"8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394\"",
        "ed25519 = \"8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394\"\nrevoked = true",
        1,
    );
    assert_eq!(
        relaxation(
            policy().document(),
            Policy::parse(tighter.as_bytes()).unwrap().document()
        ),
        None
    );
    assert_eq!(
        st.propose(bundle(tighter.as_bytes(), &[ADMIN1, ADMIN2]), t0)
            .unwrap(),
        UpdateEffect::Immediate
    );
    let d = decide(st.in_force(t0), &wd(1), &[], t0, 0);
    assert_eq!(rule_of(&d), "freeze");
}

#[test]
fn versions_must_increase() {
    let mut st = PolicyState::genesis(bundle(FIXTURE, &[ADMIN1, ADMIN2]), Timestamp(0));
    let same_version = edit("description = \"", "description = \"v1 again: ", 1);
    let e = st
        .propose(bundle(&same_version, &[ADMIN1, ADMIN2]), wed10())
        .unwrap_err();
    assert!(e.to_string().contains("must increase the version"), "{e}");
}

#[test]
fn relaxation_classifier() {
    let base = policy();
    let cases: &[(&str, &str, bool)] = &[
        (
            "whitelist_delay = \"24h\"",
            "whitelist_delay = \"1h\"",
            true,
        ),
        (
            "whitelist_delay = \"24h\"",
            "whitelist_delay = \"48h\"",
            false,
        ),
        ("change_delay = \"24h\"", "change_delay = \"0s\"", true),
        (
            "revoked = true   # left the company; kept for the audit trail",
            "revoked = false",
            true,
        ),
        (
            "security = [\"dave\", \"erin\"]",
            "security = [\"dave\"]",
            false,
        ),
        (
            "security = [\"dave\", \"erin\"]",
            "security = [\"dave\", \"erin\", \"alice\"]",
            true,
        ),
        (
            "address = \"0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb\"\nwhitelisted = false",
            "address = \"0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb\"",
            true,
        ),
        (
            "amount = { max = 1000000 }",
            "amount = { max = 2000000 }",
            true,
        ),
        ("risk = { min = 80 }", "risk = { min = 90 }", true),
        (
            "action = \"allow\"\n\n# 4.",
            "action = \"block\"\nreason = \"paused\"\n\n# 4.",
            false,
        ),
        // Narrowing a block rule lets withdrawals through: a relaxation.
        (
            "reason = \"cold wallets only pay internal addresses\"",
            "reason = \"cold wallets only pay internal addresses\"\nrisk = { max = 50 }",
            true,
        ),
    ];
    for (from, to, relaxes) in cases {
        let p = Policy::parse(&edit(from, to, 2)).unwrap_or_else(|e| panic!("{to}: {e}"));
        assert_eq!(
            relaxation(base.document(), p.document()).is_some(),
            *relaxes,
            "{from} -> {to}"
        );
    }
}

#[test]
fn new_whitelist_address_cools_down_before_use() {
    let t0 = wed10();
    let mut st = PolicyState::genesis(bundle(FIXTURE, &[ADMIN1, ADMIN2]), Timestamp(0));
    let newbie = "0x52908400098527886E0F7030069857D2E4169EE7";
    let added = edit(
        "[[approvers]]",
        &format!(
            "[[address_book]]\nid = \"new-payee\"\nchain = \"ethereum\"\naddress = \"{newbie}\"\n\n[[approvers]]"
        ),
        2,
    );
    // Adding an address is a relaxation: 24 h change delay, then 24 h cooling.
    let effect = st.propose(bundle(&added, &[ADMIN1, ADMIN2]), t0).unwrap();
    let eff = Timestamp(t0.0 + 24 * HOUR);
    assert_eq!(effect, UpdateEffect::Delayed(eff));
    let w = Withdrawal {
        destination: newbie.into(),
        ..wd(ETH / 2)
    };
    let usable = Timestamp(eff.0 + 24 * HOUR);
    // Thursday 11:00 and Friday 10:59:59 (cooling): the allow rule refuses the entry and
    // the withdrawal falls to the hot-wallet block; Friday 11:00: usable.
    for (at, expect_rule) in [
        (Timestamp(eff.0 + HOUR), "hot-small-over-limit"),
        (Timestamp(usable.0 - 1), "hot-small-over-limit"),
        (usable, "hot-small"),
    ] {
        let d = decide(st.in_force(at), &w, &[], at, 0);
        assert_eq!(rule_of(&d), expect_rule, "at {at}");
        if at < usable {
            assert!(
                d.explain()
                    .contains("new-payee is in its cooling period until 2026-01-09T10:00:00Z"),
                "{}",
                d.explain()
            );
        }
    }
    // Before the update takes effect the address is simply unknown.
    let d = decide(st.in_force(t0), &w, &[], t0, 0);
    assert!(
        d.explain().contains("not in the address book"),
        "{}",
        d.explain()
    );
    // Existing entries keep their earlier usable time across updates.
    let ap = st.in_force(usable);
    let idx = ap
        .policy()
        .document()
        .address_book
        .iter()
        .position(|e| e.id == "exchange-deposit")
        .unwrap();
    assert_eq!(ap.entry_usable_from(idx), Timestamp(24 * HOUR));
}

#[test]
fn genesis_entries_also_cool_down() {
    let t0 = wed10();
    let st = PolicyState::genesis(bundle(FIXTURE, &[ADMIN1, ADMIN2]), t0);
    let d = decide(st.in_force(t0), &wd(1), &[], t0, 0);
    assert_eq!(rule_of(&d), "hot-small-over-limit");
    assert!(
        d.explain()
            .contains("cooling period until 2026-01-08T10:00:00Z"),
        "{}",
        d.explain()
    );
    let next_day = Timestamp(t0.0 + 24 * HOUR);
    assert_eq!(
        rule_of(&decide(st.in_force(next_day), &wd(1), &[], next_day, 0)),
        "hot-small"
    );
}

#[test]
fn newly_whitelisted_entry_cools_down_like_a_new_one() {
    let t0 = wed10();
    let mut st = PolicyState::genesis(bundle(FIXTURE, &[ADMIN1, ADMIN2]), Timestamp(0));
    let flipped = edit(
        "address = \"0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb\"\nwhitelisted = false",
        "address = \"0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb\"",
        2,
    );
    let effect = st.propose(bundle(&flipped, &[ADMIN1, ADMIN2]), t0).unwrap();
    let eff = Timestamp(t0.0 + 24 * HOUR);
    assert_eq!(effect, UpdateEffect::Delayed(eff));
    let ap = st.pending().unwrap();
    let book = &ap.policy().document().address_book;
    let old_vendor = book.iter().position(|e| e.id == "old-vendor").unwrap();
    let payroll = book.iter().position(|e| e.id == "payroll").unwrap();
    assert_eq!(
        ap.entry_usable_from(old_vendor),
        Timestamp(eff.0 + 24 * HOUR)
    );
    assert_eq!(
        ap.entry_usable_from(payroll),
        Timestamp(24 * HOUR),
        "unchanged entries keep their time"
    );
}

/// Listing a key under `retired_keys` only restricts (it authorizes the
/// destruction of its shares): in force at once. Taking one off is a
/// relaxation, and an older document without the field keeps its hash.
#[test]
fn retiring_a_key_is_a_tightening_and_unretiring_a_relaxation() {
    let t0 = wed10();
    let mut st = PolicyState::genesis(bundle(FIXTURE, &[ADMIN1, ADMIN2]), Timestamp(0));
    let retired = edit(
        "\n[settings]",
        "retired_keys = [\"eth-old\"]\n\n[settings]",
        2,
    );
    let p2 = Policy::parse(&retired).unwrap();
    assert_eq!(p2.document().retired_keys, vec!["eth-old".to_owned()]);
    assert_eq!(policy().document().retired_keys, Vec::<String>::new());
    assert_eq!(relaxation(policy().document(), p2.document()), None);
    assert_eq!(
        st.propose(bundle(&retired, &[ADMIN1, ADMIN2]), t0).unwrap(),
        UpdateEffect::Immediate
    );
    let unretired = String::from_utf8(retired.clone())
        .unwrap()
        .replacen("retired_keys = [\"eth-old\"]\n", "", 1)
        .replacen("version = 2", "version = 3", 1);
    let p3 = Policy::parse(unretired.as_bytes()).unwrap();
    let why = relaxation(p2.document(), p3.document()).unwrap();
    assert!(why.contains("eth-old"), "{why}");
    assert!(matches!(
        st.propose(bundle(unretired.as_bytes(), &[ADMIN1, ADMIN2]), t0)
            .unwrap(),
        UpdateEffect::Delayed(_)
    ));
}
