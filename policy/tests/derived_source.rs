//! Withdrawals from a derived address of the wallet (HD child key): the
//! path and address are bound by the intent digest and by a version-2
//! approval statement, so approvals of one source never authorise another,
//! and a withdrawal from the wallet's own address encodes as before.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use custos_policy::*;

const CHILD: &str = "0x29379f45F515C494483298225d1B347F73D1babF";

fn from_child(path: &str, address: &str) -> Withdrawal {
    Withdrawal {
        source: Some(DerivedSource {
            path: path.into(),
            address: address.into(),
        }),
        ..wd(5 * ETH)
    }
}

#[test]
fn the_source_is_part_of_the_intent_digest() {
    let own = wd(5 * ETH);
    let a = from_child("m/0/5", CHILD);
    let b = from_child("m/0/6", CHILD);
    let c = from_child("m/0/5", EXCHANGE);
    let digests = [own, a.clone(), b, c].map(|w| intent_digest(&w));
    for i in 0..digests.len() {
        for j in i + 1..digests.len() {
            assert_ne!(digests[i], digests[j], "{i} and {j}");
        }
    }
    assert_eq!(intent_digest(&a), intent_digest(&a.clone()));
    // The JSON of a withdrawal from the wallet's own address is unchanged.
    let json = serde_json::to_string(&wd(1)).unwrap();
    assert!(!json.contains("source"), "{json}");
    let back: Withdrawal = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
    assert_eq!(back, a);
}

#[test]
fn a_derived_source_makes_a_version_2_statement_that_binds_it() {
    let act = active();
    let own = wd(5 * ETH);
    let w = from_child("m/0/5", CHILD);
    w.validate().unwrap();
    let d = decide(&act, &w, &[], wed10(), 0);
    let s = statement(&d, &w, wed10());
    let bytes = s.encode().unwrap();
    assert_eq!(bytes[STATEMENT_MAGIC.len()], STATEMENT_VERSION_DERIVED);
    let back = ApprovalStatement::decode(&bytes).unwrap();
    assert_eq!(back, s);
    assert_eq!(back.source.as_ref().unwrap().path, "m/0/5");
    // The wallet's own address: version 1, as before.
    let d_own = decide(&act, &own, &[], wed10(), 0);
    let s_own = statement(&d_own, &own, wed10());
    assert_eq!(
        s_own.encode().unwrap()[STATEMENT_MAGIC.len()],
        STATEMENT_VERSION
    );
    assert!(s_own.source.is_none());
    // Unknown versions and trailing bytes are refused.
    let mut v3 = bytes.clone();
    v3[STATEMENT_MAGIC.len()] = 3;
    assert!(ApprovalStatement::decode(&v3).is_err());
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(ApprovalStatement::decode(&longer).is_err());

    // Approvals over the statement of one source do not count for another.
    let quorum = |s: &ApprovalStatement| {
        [
            approve(s, "erin", ERIN),
            approve(s, "alice", ALICE),
            approve(s, "bob", BOB),
        ]
    };
    assert!(matches!(
        check_approvals(&act, &d, &s, &quorum(&s), wed10()),
        ApprovalStatus::Satisfied { .. }
    ));
    for other in [
        from_child("m/0/6", CHILD),
        from_child("m/0/5", EXCHANGE),
        own.clone(),
    ] {
        let d2 = decide(&act, &other, &[], wed10(), 0);
        let s2 = statement(&d2, &other, wed10());
        assert!(
            !matches!(
                check_approvals(&act, &d2, &s2, &quorum(&s), wed10()),
                ApprovalStatus::Satisfied { .. }
            ),
            "approvals of {:?} counted for {:?}",
            s.source,
            s2.source
        );
    }
}

#[test]
fn a_source_is_validated() {
    for bad_path in ["", "m", "0/5", "m/0/5'", "m/0/x", "m//5", "m/0/"] {
        let e = from_child(bad_path, CHILD).validate().unwrap_err();
        assert!(
            matches!(
                e,
                PolicyError::InvalidWithdrawal {
                    field: "source.path",
                    ..
                }
            ),
            "{bad_path}: {e}"
        );
    }
    let e = from_child("m/0/5", "bc1qnotanaddress")
        .validate()
        .unwrap_err();
    assert!(
        matches!(
            e,
            PolicyError::InvalidWithdrawal {
                field: "source.address",
                ..
            }
        ),
        "{e}"
    );
    // Not canonical (lower case instead of EIP-55).
    let e = from_child("m/0/5", &CHILD.to_lowercase())
        .validate()
        .unwrap_err();
    assert!(
        matches!(
            e,
            PolicyError::InvalidWithdrawal {
                field: "source.address",
                ..
            }
        ),
        "{e}"
    );
}
