//! Policy validation: clear errors and useful warnings.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a panic is a test failure"
)]

mod common;

use common::*;
use custos_policy::*;

fn parse_err(text: &str) -> String {
    match Policy::parse(text.as_bytes()) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("accepted: {text}"),
    }
}

#[test]
fn unknown_fields_are_errors_everywhere() {
    // A misspelt condition must not silently widen a rule.
    let e = parse_err(
        "version = 1\n[[rules]]\nid = \"r\"\naction = \"allow\"\nammount = { max = 5 }\n",
    );
    assert!(e.contains("unknown field `ammount`"), "{e}");
    let e = parse_err("version = 1\nextra = true\n");
    assert!(e.contains("unknown field `extra`"), "{e}");
    let e = parse_err(
        "version = 1\n[[rules]]\nid = \"r\"\naction = \"allow\"\namount = { max = 5, maxx = 6 }\n",
    );
    assert!(e.contains("unknown field `maxx`"), "{e}");
    let e = parse_err(
        "{\"version\": 1, \"rules\": [{\"id\": \"r\", \"action\": \"allow\", \"asset\": [\"ETH\"]}]}",
    );
    assert!(
        e.contains("JSON") && e.contains("unknown field `asset`"),
        "{e}"
    );
    let e = parse_err("version = 1\n[[rules]]\nid = \"r\"\naction = \"permit\"\n");
    assert!(e.contains("unknown variant `permit`"), "{e}");
}

#[test]
fn json_documents_are_accepted() {
    let p = Policy::parse(br#" {"version": 3, "rules": [{"id": "all", "action": "allow", "amount": {"max": "340282366920938463463374607431768211455"}}]}"#).unwrap();
    assert_eq!(p.version(), 3);
    assert_eq!(
        p.document().rules[0].amount.unwrap().max,
        Some(Amount(u128::MAX))
    );
}

#[test]
fn bad_addresses() {
    let book = |chain: &str, addr: &str| {
        format!(
            "version = 1\n[[address_book]]\nid = \"x\"\nchain = \"{chain}\"\naddress = \"{addr}\"\n"
        )
    };
    let e = parse_err(&book(
        "ethereum",
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD",
    ));
    assert!(
        e.contains("bad EIP-55 checksum")
            && e.contains("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"),
        "{e}"
    );
    let e = parse_err(&book(
        "bitcoin",
        "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7",
    ));
    assert!(e.contains("another network"), "{e}");
    let e = parse_err(&book(
        "bitcoin-testnet",
        "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa",
    ));
    assert!(e.contains("another network"), "{e}");
    let e = parse_err(&book(
        "bitcoin",
        "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5",
    ));
    assert!(e.contains("segwit address") && e.contains("invalid"), "{e}");
    let e = parse_err(&book("solana", "abc"));
    assert!(e.contains("unknown chain"), "{e}");
    // Lowercase EVM: accepted with a warning that shows the checksummed form.
    let p =
        Policy::parse(book("ethereum", "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed").as_bytes())
            .unwrap();
    assert!(
        p.warnings()
            .iter()
            .any(|w| w.message.contains("not checksummed"))
    );
    // Same address twice under two ids.
    let twice = format!(
        "{}\n[[address_book]]\nid = \"y\"\nchain = \"ethereum\"\naddress = \"{}\"\n",
        book("ethereum", EXCHANGE),
        EXCHANGE.to_lowercase()
    );
    assert!(parse_err(&twice).contains("same address as entry"));
}

#[test]
fn quorums_that_cannot_be_met() {
    // security has 2 active members.
    let e = errs(
        "[[rules]]\nid = \"q\"\naction = \"require_approvals\"\napprovals = { all = [{ group = \"security\", count = 3 }] }\n",
    );
    assert!(
        e.contains("quorum cannot be met") && e.contains("security: 2 of 3"),
        "{e}"
    );
    // treasury has 4 members but mallory is revoked: 4 cannot be met.
    let e = errs(
        "[[rules]]\nid = \"q\"\naction = \"require_approvals\"\napprovals = { all = [{ group = \"treasury\", count = 4 }] }\n",
    );
    assert!(e.contains("quorum cannot be met"), "{e}");
    let e = errs(
        "[[rules]]\nid = \"q\"\naction = \"require_approvals\"\napprovals = { all = [{ group = \"legal\", count = 1 }] }\n",
    );
    assert!(e.contains("unknown group \"legal\""), "{e}");
    let e = errs(
        "[[rules]]\nid = \"q\"\naction = \"require_approvals\"\napprovals = { all = [{ group = \"security\", count = 0 }] }\n",
    );
    assert!(e.contains("at least 1"), "{e}");
    let e = errs("[[rules]]\nid = \"q\"\naction = \"require_approvals\"\n");
    assert!(e.contains("needs an `approvals` quorum"), "{e}");
    // Exactly all members with exclude_initiator: a warning, since a member initiating blocks it.
    let p = with_rules(
        "[[rules]]\nid = \"q\"\naction = \"require_approvals\"\napprovals = { all = [{ group = \"security\", count = 2 }], exclude_initiator = true }\n",
    );
    assert!(
        p.warnings()
            .iter()
            .any(|w| w.message.contains("can never be approved")),
        "{:?}",
        p.warnings()
    );
}

#[test]
fn amounts_that_overflow_or_make_no_sense() {
    let e = parse_err(
        "version = 1\n[[rules]]\nid = \"r\"\naction = \"allow\"\namount = { max = \"340282366920938463463374607431768211456\" }\n",
    );
    assert!(e.contains("overflows 128 bits"), "{e}");
    let e = parse_err(
        "version = 1\n[[rules]]\nid = \"r\"\naction = \"allow\"\namount = { max = -5 }\n",
    );
    assert!(e.contains("negative"), "{e}");
    let e = parse_err(
        "version = 1\n[[rules]]\nid = \"r\"\naction = \"allow\"\namount = { max = 1.5 }\n",
    );
    assert!(e.contains("not an integer"), "{e}");
    let e = errs("[[rules]]\nid = \"r\"\naction = \"allow\"\namount = { min = 10, max = 9 }\n");
    assert!(e.contains("min 10 is above max 9"), "{e}");
    let e = errs(
        "[[rules]]\nid = \"r\"\naction = \"allow\"\nvelocity = { window = \"1h\", per = [\"wallet\"], max_amount = 5 }\n",
    );
    assert!(e.contains("needs \"asset\""), "{e}");
    // Signers check velocity from the history they keep (30 days and a day):
    // a longer window could not be checked by them.
    let e = errs(
        "[[rules]]\nid = \"r\"\naction = \"allow\"\nvelocity = { window = \"31d\", per = [\"asset\"], max_count = 5 }\n",
    );
    assert!(e.contains("longer than the 2592000s of history"), "{e}");
    // 30 days is allowed (with_rules panics on errors).
    with_rules(
        "[[rules]]\nid = \"r\"\naction = \"allow\"\nvelocity = { window = \"30d\", per = [\"asset\"], max_count = 5 }\n",
    );
    let e = parse_err("version = 1\n[settings]\nwhitelist_delay = \"99999d\"\n");
    assert!(e.contains("ten-year"), "{e}");
}

#[test]
fn other_rule_errors_are_all_reported() {
    let e = errs(
        "[[rules]]\nid = \"a\"\naction = \"block\"\n\
         [[rules]]\nid = \"a\"\naction = \"allow\"\nassets = []\ndelay = \"1h\"\n\
         [[rules]]\nid = \"c\"\naction = \"allow\"\ntime = { days = [\"funday\"], from_hour = 25 }\nchains = [\"dogecoin\"]\n\
         [[rules]]\nid = \"d\"\naction = \"allow\"\ndestination = { entries = [\"nope\"] }\nwallet_groups = [\"warm\"]\n",
    );
    for needle in [
        "needs a `reason`",
        "duplicate rule id \"a\"",
        "empty list matches nothing",
        "`delay` and `cancel_group` go together",
        "unknown day \"funday\"",
        "from_hour 25",
        "unknown chain \"dogecoin\"",
        "unknown address-book entry \"nope\"",
        "unknown wallet group \"warm\"",
    ] {
        assert!(e.contains(needle), "missing {needle:?} in:\n{e}");
    }
}

#[test]
fn approver_errors() {
    let text = std::str::from_utf8(FIXTURE).unwrap();
    // bob reuses alice's key: one person would count twice.
    let dup = text.replacen(
        "8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394",
        "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c",
        1,
    );
    assert!(parse_err(&dup).contains("also used by approver \"alice\""));
    let bad = text.replacen(
        "8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394",
        "zz",
        1,
    );
    assert!(parse_err(&bad).contains("64 hex digits"));
    let ghost = text.replacen(
        "security = [\"dave\", \"erin\"]",
        "security = [\"dave\", \"erin\", \"ghost\"]",
        1,
    );
    assert!(parse_err(&ghost).contains("unknown approver \"ghost\""));
}

#[test]
fn unreachable_and_shadowed_rules_are_warnings() {
    let p = with_rules(
        "[[rules]]\nid = \"everything-hot\"\nwallet_groups = [\"hot\"]\naction = \"allow\"\n\
         [[rules]]\nid = \"hot-eth-block\"\nwallets = [\"eth-hot-1\"]\nassets = [\"ETH\"]\naction = \"block\"\nreason = \"never reached\"\n\
         [[rules]]\nid = \"vendor-block\"\ndestination = { entries = [\"payroll\"] }\naction = \"block\"\nreason = \"partly reached\"\n",
    );
    let w: Vec<String> = p.warnings().iter().map(ToString::to_string).collect();
    assert!(
        w.iter()
            .any(|m| m.contains("rules[1] (hot-eth-block)") && m.contains("unreachable")),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|m| m.contains("rules[2] (vendor-block)") && m.contains("partly shadowed")),
        "{w:?}"
    );
    // The sample policy uses only intended tiering; its warnings are that
    // its two `exclude_initiator` rules trust the coordinator's initiator
    // without request keys, and registering one silences them.
    let w: Vec<String> = policy()
        .warnings()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(w.len(), 2, "{w:?}");
    for (m, rule) in w.iter().zip([
        "rules[1] (cold-to-internal)",
        "rules[6] (large-whitelisted)",
    ]) {
        assert!(
            m.contains(rule)
                && m.contains(
                    "`exclude_initiator` depends on the initiator, but no [[request_keys]] prove it"
                ),
            "{w:?}"
        );
    }
    let text = std::str::from_utf8(FIXTURE).unwrap();
    let keyed = format!(
        "{text}\n[[request_keys]]\nclient = \"payments-backend\"\ned25519 = \"{}\"\n",
        key(20).public().to_hex()
    );
    let p = Policy::parse(keyed.as_bytes()).unwrap();
    assert!(p.warnings().is_empty(), "{:?}", p.warnings());
}

#[test]
fn oversized_and_non_utf8_documents() {
    assert!(matches!(
        Policy::parse(&vec![b' '; MAX_DOCUMENT_BYTES + 1]),
        Err(PolicyError::Parse(_))
    ));
    assert!(matches!(
        Policy::parse(&[0xff, 0xfe, 0x00]),
        Err(PolicyError::Parse(_))
    ));
    assert!(matches!(
        Policy::parse(b"version = 0"),
        Err(PolicyError::Invalid(_))
    ));
}

#[test]
fn json_form_of_the_sample_is_equivalent() {
    // The JSON serialisation of a parsed document is itself a valid document with the
    // same meaning (different bytes, so a different hash).
    let p = policy();
    let json = serde_json::to_vec_pretty(p.document()).unwrap();
    let q = Policy::parse(&json).unwrap();
    assert_eq!(q.document(), p.document());
    assert_ne!(q.hash(), p.hash());
    let (a, b) = (
        ActivePolicy::assumed(p, Timestamp(0)),
        ActivePolicy::assumed(q, Timestamp(0)),
    );
    for amount in [1, ETH, 5 * ETH] {
        let (x, y) = (
            decide(&a, &wd(amount), &[], wed10(), 0),
            decide(&b, &wd(amount), &[], wed10(), 0),
        );
        assert_eq!(
            (x.rule_id, x.outcome, x.trace),
            (y.rule_id, y.outcome, y.trace)
        );
    }
}

#[test]
fn velocity_on_a_block_rule_is_flagged() {
    let p = with_rules(
        "[[rules]]\nid = \"b\"\naction = \"block\"\nreason = \"limit\"\n\
         velocity = { window = \"1d\", per = [\"asset\"], max_amount = 5 }\n",
    );
    assert!(
        p.warnings()
            .iter()
            .any(|w| w.message.contains("matches while totals stay WITHIN")),
        "{:?}",
        p.warnings()
    );
}
