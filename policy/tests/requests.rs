//! Signed withdrawal requests (docs/SECURITY.md case 37): a request key per
//! API client in the policy, a signature over exactly what was requested,
//! and a withdrawal id derived from the client and its idempotency key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use custos_policy::*;

const BACKEND: u8 = 20;

fn with_keys(keys: &str) -> Policy {
    with_rules(&format!(
        "{keys}\n[[rules]]\nid = \"r\"\naction = \"allow\"\nfee = {{ max = \"10000000000000000\" }}\n"
    ))
}

fn backend_key() -> String {
    format!(
        "[[request_keys]]\nclient = \"payments-backend\"\ned25519 = \"{}\"\n",
        key(BACKEND).public().to_hex()
    )
}

#[test]
fn a_request_verifies_only_for_its_client_key_and_fields() {
    let p = with_keys(&backend_key());
    assert!(p.requires_signed_requests());
    let w = wd(ETH);
    let st = RequestStatement::for_withdrawal(&w, "order-1");
    let sig = st.sign(&key(BACKEND));
    p.verify_request(&st, &sig).unwrap();

    // Any field changed after signing: refused.
    let changed = [
        RequestStatement {
            amount: 2 * ETH,
            ..st.clone()
        },
        RequestStatement {
            destination: PAYROLL.into(),
            ..st.clone()
        },
        RequestStatement {
            wallet: "eth-hot-2".into(),
            ..st.clone()
        },
        RequestStatement {
            asset: "USDC".into(),
            ..st.clone()
        },
        RequestStatement {
            idempotency_key: "order-2".into(),
            ..st.clone()
        },
    ];
    for c in changed {
        let e = p.verify_request(&c, &sig).unwrap_err().to_string();
        assert!(e.contains("does not verify"), "{e}");
    }
    // Another initiator claimed (no key), another client's key, no signature.
    let other = RequestStatement {
        client: "treasury-ops".into(),
        ..st.clone()
    };
    let e = p.verify_request(&other, &sig).unwrap_err().to_string();
    assert!(e.contains("no active request key"), "{e}");
    let e = p
        .verify_request(&st, &st.sign(&key(MALLORY)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not verify"), "{e}");
    let e = p.verify_request(&st, "").unwrap_err().to_string();
    assert!(e.contains("no request signature"), "{e}");
    let e = p.verify_request(&st, "zz").unwrap_err().to_string();
    assert!(e.contains("not hex"), "{e}");
}

#[test]
fn the_destination_is_signed_in_canonical_form() {
    let mut w = wd(ETH);
    w.destination = EXCHANGE.to_lowercase();
    assert_eq!(
        RequestStatement::for_withdrawal(&w, "k").destination,
        EXCHANGE
    );
}

#[test]
fn revoked_keys_sign_nothing_and_bad_keys_are_named() {
    let revoked = format!("{}revoked = true\n", backend_key());
    let p = with_keys(&revoked);
    assert!(p.requires_signed_requests());
    let st = RequestStatement::for_withdrawal(&wd(ETH), "k");
    let e = p
        .verify_request(&st, &st.sign(&key(BACKEND)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no active request key"), "{e}");

    let text = std::str::from_utf8(FIXTURE).unwrap();
    let bad =
        format!("{text}\n[[request_keys]]\nclient = \"payments-backend\"\ned25519 = \"00\"\n");
    let e = Policy::parse(bad.as_bytes()).unwrap_err().to_string();
    assert!(e.contains("request_keys[0] (payments-backend)"), "{e}");
    let dup = format!("{text}\n{}{}", backend_key(), backend_key());
    let e = Policy::parse(dup.as_bytes()).unwrap_err().to_string();
    assert!(e.contains("duplicate client"), "{e}");
}

#[test]
fn withdrawal_ids_follow_from_client_and_idempotency_key() {
    let a = request_withdrawal_id("payments-backend", "order-1");
    assert_eq!(a, request_withdrawal_id("payments-backend", "order-1"));
    assert!(a.starts_with("wd-") && a.len() == 23, "{a}");
    assert_ne!(a, request_withdrawal_id("payments-backend", "order-2"));
    assert_ne!(a, request_withdrawal_id("payments-backen", "dorder-1"));
}

#[test]
fn adding_changing_or_dropping_request_keys_is_a_relaxation() {
    let none = with_keys("");
    let one = with_keys(&backend_key());
    assert!(!none.requires_signed_requests());
    assert!(relaxation(none.document(), one.document()).is_some());
    assert!(relaxation(one.document(), none.document()).is_some());
    assert!(relaxation(one.document(), one.document()).is_none());
    let revoked = with_keys(&format!("{}revoked = true\n", backend_key()));
    assert!(relaxation(one.document(), revoked.document()).is_none());
    assert!(relaxation(revoked.document(), one.document()).is_some());
}

/// A client whose key lives in a KMS or HSM without Ed25519 registers a
/// P-256 key; its ECDSA signatures (DER or r‖s) verify over the same
/// statement, and nothing else does.
#[test]
fn a_p256_request_key_verifies_der_and_raw_signatures() {
    use p256::ecdsa::signature::Signer as _;
    use p256::ecdsa::{Signature, SigningKey};
    let client_key = SigningKey::from_slice(&[7u8; 32]).unwrap();
    let sec1 = hex::encode(client_key.verifying_key().to_encoded_point(true).as_bytes());
    let p = with_keys(&format!(
        "[[request_keys]]\nclient = \"payments-backend\"\np256 = \"{sec1}\"\n"
    ));
    assert!(p.requires_signed_requests());
    let st = RequestStatement::for_withdrawal(&wd(ETH), "order-7");
    let sig: Signature = client_key.sign(&st.signing_message());
    p.verify_request(&st, &hex::encode(sig.to_der().as_bytes()))
        .unwrap();
    p.verify_request(&st, &hex::encode(sig.to_bytes())).unwrap();
    // Another statement, another key, an Ed25519 signature: refused.
    let mut other = st.clone();
    other.amount += 1;
    let e = p
        .verify_request(&other, &hex::encode(sig.to_bytes()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not verify"), "{e}");
    let mallory = SigningKey::from_slice(&[9u8; 32]).unwrap();
    let forged: Signature = mallory.sign(&st.signing_message());
    assert!(
        p.verify_request(&st, &hex::encode(forged.to_bytes()))
            .is_err()
    );
    assert!(p.verify_request(&st, &st.sign(&key(BACKEND))).is_err());

    // The document names a bad key, both keys or none.
    let text = std::str::from_utf8(FIXTURE).unwrap();
    for (entry, wanted) in [
        (
            "p256 = \"02ff\"",
            "p256: 2 bytes are not a SEC1 P-256 public key",
        ),
        ("p256 = \"xyz\"", "p256: not hex"),
        ("", "needs a public key: set ed25519 or p256"),
        (
            &format!(
                "p256 = \"{sec1}\"\ned25519 = \"{}\"",
                key(BACKEND).public().to_hex()
            ),
            "set one of ed25519 and p256, not both",
        ),
    ] {
        let doc = format!("{text}\n[[request_keys]]\nclient = \"payments-backend\"\n{entry}\n");
        let e = Policy::parse(doc.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("request_keys[0] (payments-backend)"), "{e}");
        assert!(e.contains(wanted), "{wanted}: {e}");
    }

    // Swapping the P-256 key is a relaxation (a new way to initiate).
    let swapped = with_keys(&format!(
        "[[request_keys]]\nclient = \"payments-backend\"\np256 = \"{}\"\n",
        hex::encode(mallory.verifying_key().to_encoded_point(true).as_bytes())
    ));
    assert!(relaxation(p.document(), swapped.document()).is_some());
    assert!(relaxation(p.document(), p.document()).is_none());
}
