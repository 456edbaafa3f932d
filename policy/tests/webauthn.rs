//! Passkey (WebAuthn) approvals: golden vectors from an independent Python
//! implementation (`vectors/make_webauthn_vectors.py`), bit flips, and
//! passkey approvers counted in a quorum.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use custos_policy::*;
use p256::ecdsa::signature::Signer;
use proptest::prelude::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

const VECTORS: &str = include_str!("vectors/webauthn.json");

fn check_name(c: &PasskeyCheck) -> &'static str {
    match c {
        PasskeyCheck::WrongChallenge => "wrong_challenge",
        PasskeyCheck::OriginNotAllowed { .. } => "origin_not_allowed",
        PasskeyCheck::CrossOrigin => "cross_origin",
        PasskeyCheck::WrongRpId => "wrong_rp_id",
        PasskeyCheck::UserNotVerified => "user_not_verified",
        PasskeyCheck::UserNotPresent => "user_not_present",
        PasskeyCheck::CounterNotIncreased { .. } => "counter_not_increased",
        PasskeyCheck::BadSignature => "bad_signature",
        PasskeyCheck::WrongType { .. } => "wrong_type",
        PasskeyCheck::UnknownCredential => "unknown_credential",
        PasskeyCheck::Malformed { .. } => "malformed",
        _ => "other",
    }
}

fn vector_credential(c: &Value) -> PasskeyCredentialKey {
    let alg = match c["alg"].as_str().unwrap() {
        "es256" => PasskeyAlg::Es256,
        _ => PasskeyAlg::EdDsa,
    };
    PasskeyCredentialKey {
        id: URL_SAFE_NO_PAD
            .decode(c["credential_id"].as_str().unwrap())
            .unwrap(),
        key: PasskeyKey::parse(alg, c["public_key"].as_str().unwrap()).unwrap(),
    }
}

#[test]
fn golden_vectors_from_python() {
    let v: Value = serde_json::from_str(VECTORS).unwrap();
    let rp_id = v["rp_id"].as_str().unwrap();
    let origins: Vec<String> = serde_json::from_value(v["origins"].clone()).unwrap();
    let challenge = hex::decode(v["challenge"].as_str().unwrap()).unwrap();
    let rp = RelyingParty {
        rp_id,
        origins: &origins,
    };
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 26, "vectors lost cases");
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let cred = vector_credential(c);
        let assertion: PasskeyAssertion = serde_json::from_value(c["assertion"].clone()).unwrap();
        let last = u32::try_from(c["last_counter"].as_u64().unwrap()).unwrap();
        let got = verify_passkey_assertion(&cred, rp, &challenge, last, &assertion);
        match (&c["expect"]["ok"], &c["expect"]["err"]) {
            (Value::Number(n), _) => {
                assert_eq!(
                    got,
                    Ok(u32::try_from(n.as_u64().unwrap()).unwrap()),
                    "{name}"
                );
            }
            (_, Value::String(e)) => {
                let err = got.expect_err(name);
                assert_eq!(check_name(&err), e, "{name}: {err}");
            }
            _ => panic!("{name}: bad expectation"),
        }
    }
}

#[test]
fn the_sec1_key_and_the_cose_key_are_the_same_credential() {
    let v: Value = serde_json::from_str(VECTORS).unwrap();
    let case = &v["cases"][0];
    let cose = PasskeyKey::parse(PasskeyAlg::Es256, case["public_key"].as_str().unwrap()).unwrap();
    let sec1 = PasskeyKey::parse(PasskeyAlg::Es256, v["p256_sec1"].as_str().unwrap()).unwrap();
    assert_eq!(cose, sec1);
    // A P-256 COSE key is not an Ed25519 credential, and garbage is refused by name.
    let e = PasskeyKey::parse(PasskeyAlg::EdDsa, case["public_key"].as_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("webauthn_ed25519 needs OKP"), "{e}");
    let e = PasskeyKey::parse(PasskeyAlg::Es256, "a1ff")
        .unwrap_err()
        .to_string();
    assert!(e.contains("COSE public key"), "{e}");
}

fn flip(s: &str, bit: usize) -> Option<String> {
    let mut b = URL_SAFE_NO_PAD.decode(s).unwrap();
    let n = b.len() * 8;
    let i = bit % n;
    b[i / 8] ^= 1 << (i % 8);
    Some(URL_SAFE_NO_PAD.encode(b))
}

proptest! {
    #![proptest_config(seeded(512, 0x0057_AB1E))]

    /// Any single-bit change to the authenticator data, the client data or the
    /// signature is refused (ES256 and EdDSA).
    #[test]
    fn any_single_bit_flip_is_refused(which in 0usize..2, field in 0usize..3, bit in 0usize..4096) {
        let v: Value = serde_json::from_str(VECTORS).unwrap();
        let origins: Vec<String> = serde_json::from_value(v["origins"].clone()).unwrap();
        let challenge = hex::decode(v["challenge"].as_str().unwrap()).unwrap();
        let name = ["es256_valid", "eddsa_valid"][which];
        let c = v["cases"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap();
        let cred = vector_credential(c);
        let mut a: PasskeyAssertion = serde_json::from_value(c["assertion"].clone()).unwrap();
        let rp = RelyingParty { rp_id: v["rp_id"].as_str().unwrap(), origins: &origins };
        prop_assert!(verify_passkey_assertion(&cred, rp, &challenge, 0, &a).is_ok());
        match field {
            0 => a.authenticator_data = flip(&a.authenticator_data, bit).unwrap(),
            1 => a.client_data_json = flip(&a.client_data_json, bit).unwrap(),
            _ => a.signature = flip(&a.signature, bit).unwrap(),
        }
        // A flip in the counter's bytes may raise the counter, so only the
        // last-counter-0 verification can accept it if the signature held: it must not.
        prop_assert!(verify_passkey_assertion(&cred, rp, &challenge, 0, &a).is_err());
    }
}

// ------------------------------------------------------------ in a quorum

/// A software authenticator: a P-256 key that answers as a browser does for
/// origin `https://custos.test`.
struct SoftPasskey {
    key: p256::ecdsa::SigningKey,
    id: Vec<u8>,
    counter: u32,
}

impl SoftPasskey {
    fn new(seed: u8) -> Self {
        Self {
            key: p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap(),
            id: vec![seed; 16],
            counter: 0,
        }
    }

    fn toml(&self) -> String {
        format!(
            "webauthn_p256 = {{ credential_id = \"{}\", public_key = \"{}\" }}",
            URL_SAFE_NO_PAD.encode(&self.id),
            hex::encode(self.key.verifying_key().to_encoded_point(false).as_bytes())
        )
    }

    fn assert(&mut self, challenge: &[u8], origin: &str, flags: u8) -> PasskeyAssertion {
        self.counter += 1;
        let mut ad = Sha256::digest(b"custos.test").to_vec();
        ad.push(flags);
        ad.extend_from_slice(&self.counter.to_be_bytes());
        let cd = format!(
            r#"{{"type":"webauthn.get","challenge":"{}","origin":"{origin}","crossOrigin":false}}"#,
            URL_SAFE_NO_PAD.encode(challenge)
        );
        let mut msg = ad.clone();
        msg.extend_from_slice(&Sha256::digest(cd.as_bytes()));
        let sig: p256::ecdsa::Signature = self.key.sign(&msg);
        PasskeyAssertion::from_bytes(&self.id, &ad, cd.as_bytes(), sig.to_der().as_bytes())
    }
}

fn passkey_policy(alice: &SoftPasskey, bob: &SoftPasskey, methods: &str) -> Policy {
    let text = std::str::from_utf8(FIXTURE).unwrap();
    let head = &text[..text.find("[[approvers]]").unwrap()];
    let doc = format!(
        r#"{head}
[webauthn]
rp_id = "custos.test"
origins = ["https://custos.test"]

[[approvers]]
id = "alice"
role = "treasury"
{}

[[approvers]]
id = "bob"
role = "treasury"
ed25519 = "{}"
{}

[[approvers]]
id = "carol"
role = "treasury"
ed25519 = "{}"

[groups]
treasury = ["alice", "bob", "carol"]

[[rules]]
id = "two-treasurers"
destination = "whitelisted"
action = "require_approvals"
approvals = {{ all = [{{ group = "treasury", count = 2 }}] }}
{methods}
"#,
        alice.toml(),
        key(BOB).public().to_hex(),
        bob.toml(),
        key(CAROL).public().to_hex(),
    );
    Policy::parse(doc.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{doc}"))
}

fn bob_says(bob: &mut SoftPasskey, challenge: &[u8], origin: &str, flags: u8) -> Approval {
    Approval::passkey(
        "bob",
        Verdict::Approve,
        bob.assert(challenge, origin, flags),
    )
}

fn refusal(status: &ApprovalStatus) -> String {
    match status {
        ApprovalStatus::Invalid { problems } => problems
            .iter()
            .map(|p| p.reason.clone())
            .collect::<Vec<_>>()
            .join("; "),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn two_passkey_approvals_meet_a_quorum_and_tampering_is_refused() {
    let (mut alice, mut bob) = (SoftPasskey::new(0xa1), SoftPasskey::new(0xb0));
    let policy = passkey_policy(&alice, &bob, "approval_methods = [\"passkey\"]");
    let active = ActivePolicy::assumed(policy, Timestamp(0));
    let w = wd(5 * ETH);
    let d = decide(&active, &w, &[], wed10(), 10);
    assert_eq!(rule_of(&d), "two-treasurers");
    let s = statement(&d, &w, wed10());
    let challenge = passkey_challenge(&s, Verdict::Approve).unwrap();
    let a = Approval::passkey(
        "alice",
        Verdict::Approve,
        alice.assert(&challenge, "https://custos.test", 0x05),
    );
    let b = bob_says(&mut bob, &challenge, "https://custos.test", 0x05);
    let ok = check_approvals(&active, &d, &s, &[a.clone(), b.clone()], wed10());
    assert_eq!(
        ok,
        ApprovalStatus::Satisfied {
            approvers: vec!["alice".into(), "bob".into()]
        }
    );

    let with_alice = |second: Approval| {
        refusal(&check_approvals(
            &active,
            &d,
            &s,
            &[a.clone(), second],
            wed10(),
        ))
    };
    // Over another statement (another amount): the challenge differs.
    let mut other = s.clone();
    other.amount = Amount(6 * ETH);
    let wrong = passkey_challenge(&other, Verdict::Approve).unwrap();
    let bad = bob_says(&mut bob, &wrong, "https://custos.test", 0x05);
    let r = with_alice(bad);
    assert!(r.contains("challenge is not this statement's"), "{r}");
    // An approve assertion does not count as a reject, nor the other way round.
    let mut as_reject = b.clone();
    as_reject.verdict = Verdict::Reject;
    let r = with_alice(as_reject);
    assert!(r.contains("challenge"), "{r}");
    // From another origin.
    let bad = bob_says(&mut bob, &challenge, "https://evil.test", 0x05);
    let r = with_alice(bad);
    assert!(
        r.contains("origin \"https://evil.test\" is not an allowed origin"),
        "{r}"
    );
    // Without user verification.
    let bad = bob_says(&mut bob, &challenge, "https://custos.test", 0x01);
    let r = with_alice(bad);
    assert!(r.contains("(UV) flag is clear"), "{r}");
    // Alice's passkey presented as bob's.
    let mut stolen = a.clone();
    stolen.approver = "bob".into();
    let r = with_alice(stolen);
    assert!(r.contains("is not registered for approver \"bob\""), "{r}");
    // The rule takes passkeys only: bob's valid Ed25519 signature is refused.
    let ed = approve(&s, "bob", BOB);
    let r = with_alice(ed);
    assert!(r.contains("accepts passkey approvals only"), "{r}");

    // Without approval_methods, a passkey and an Ed25519 approval mix.
    let mixed = ActivePolicy::assumed(passkey_policy(&alice, &bob, ""), Timestamp(0));
    let d = decide(&mixed, &w, &[], wed10(), 10);
    let s = statement(&d, &w, wed10());
    let challenge = passkey_challenge(&s, Verdict::Approve).unwrap();
    let a = Approval::passkey(
        "alice",
        Verdict::Approve,
        alice.assert(&challenge, "https://custos.test", 0x05),
    );
    let ok = check_approvals(
        &mixed,
        &d,
        &s,
        &[a.clone(), approve(&s, "carol", CAROL)],
        wed10(),
    );
    assert!(matches!(ok, ApprovalStatus::Satisfied { .. }), "{ok:?}");

    // The log form round-trips, and so does the JSON form a browser posts.
    assert_eq!(
        Approval::from_log("alice", Verdict::Approve, &a.log_signature()),
        a
    );
    let json = serde_json::to_string(&a).unwrap();
    assert_eq!(serde_json::from_str::<Approval>(&json).unwrap(), a);
    // Counters as the stateful callers compare them.
    let n = a.webauthn.as_ref().unwrap().sign_counter().unwrap();
    assert!(check_sign_counter(n - 1, n).is_ok());
    assert!(check_sign_counter(n, n).is_err());
}

#[test]
fn passkey_configuration_is_validated() {
    let alice = SoftPasskey::new(0xa1);
    let text = std::str::from_utf8(FIXTURE).unwrap();
    let head = &text[..text.find("[[approvers]]").unwrap()];
    let parse = |extra: &str, approver: &str| {
        Policy::parse(
            format!(
                "{head}\n{extra}\n[[approvers]]\nid = \"alice\"\nrole = \"treasury\"\n{approver}\n"
            )
            .as_bytes(),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    };
    let rp = "[webauthn]\nrp_id = \"custos.test\"\norigins = [\"https://custos.test\"]\n";
    assert_eq!(parse(rp, &alice.toml()), Ok(()));
    let e = parse("", &alice.toml()).unwrap_err();
    assert!(e.contains("needs the document's [webauthn] section"), "{e}");
    let e = parse(rp, "").unwrap_err();
    assert!(e.contains("needs an ed25519 key, a passkey"), "{e}");
    let e = parse(
        "[webauthn]\nrp_id = \"custos.test\"\norigins = [\"custos.test/\"]\n",
        &alice.toml(),
    )
    .unwrap_err();
    assert!(e.contains("webauthn.origins[0]"), "{e}");
    let e = parse(
        rp,
        "webauthn_p256 = { credential_id = \"AAAA\", public_key = \"04\" }",
    )
    .unwrap_err();
    assert!(e.contains("credential_id is 3 bytes"), "{e}");
}

// ------------------------------------------------------------ sign-in

/// The approval app resolves a sign-in's credential id to its approver
/// through the policy in force: the registered passkey and its approver, no
/// one for an unknown id, no one for a revoked approver.
#[test]
fn passkey_owner_finds_unrevoked_approvers() {
    let (alice, bob) = (SoftPasskey::new(0xa1), SoftPasskey::new(0xb1));
    let p = passkey_policy(&alice, &bob, "");
    let (who, cred) = p.passkey_owner(&bob.id).unwrap();
    assert_eq!(who, "bob");
    assert_eq!(cred.id, bob.id);
    assert_eq!(p.passkey_owner(&alice.id).unwrap().0, "alice");
    assert!(p.passkey_owner(&[0x77; 16]).is_none());
    assert_eq!(p.passkey_ids("bob"), vec![bob.id.clone()]);
    assert!(p.passkey_ids("carol").is_empty());
    let rp = p.relying_party().unwrap();
    assert_eq!(rp.rp_id, "custos.test");
    assert_eq!(rp.origins, ["https://custos.test".to_owned()]);
    // A sign-in assertion over a server challenge verifies with the key found.
    let mut bob = bob;
    let challenge = [9u8; 32];
    let a = bob.assert(&challenge, "https://custos.test", 0x05);
    let (_, cred) = p.passkey_owner(&bob.id).unwrap();
    assert_eq!(verify_passkey_assertion(cred, rp, &challenge, 0, &a), Ok(1));
    // Revoked: the passkey no longer signs anyone in.
    let mut revoked = p.document().clone();
    revoked.approvers[1].revoked = true;
    let bytes = toml::to_string(&revoked).unwrap();
    let p2 = Policy::parse(bytes.as_bytes()).unwrap();
    assert!(p2.passkey_owner(&bob.id).is_none());
    assert_eq!(p2.passkey_owner(&alice.id).unwrap().0, "alice");
}
