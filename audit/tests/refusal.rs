//! A signer's signed refusal (docs/SECURITY.md case 53): it verifies only
//! unaltered and under the witness key of the signer it names.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use common::{SoftSigner, witness_key};
use custos_audit::AuditError;
use custos_audit::refusal::{REFUSAL_DOMAIN, Refusal};

fn refusal() -> Refusal {
    Refusal {
        withdrawal_id: "wd-1".into(),
        signer: "witness-1.custos.test".into(),
        request: "sign_withdrawal".into(),
        reason: "time lock: signable in 3 s".into(),
        refused_at_ms: 1_700_000_000_000,
    }
}

#[test]
fn signed_refusal_verifies_only_unaltered_and_under_its_signers_key() {
    // witness_key(i) is SoftSigner::from_seed(10 + i) named witness-i.
    let key = SoftSigner::from_seed(11);
    let keys = vec![witness_key(1), witness_key(2)];
    let r = refusal();
    let sig = r.sign(&key).unwrap();
    r.verify(&sig, &keys).unwrap();
    let body = r.clone().into_entry(sig.clone());
    let (back, back_sig) = Refusal::from_entry(&body).unwrap();
    assert_eq!(back, r);
    assert_eq!(back_sig, sig.as_slice());
    let mut altered = r.clone();
    altered.reason = "nothing to see".into();
    assert!(matches!(
        altered.verify(&sig, &keys),
        Err(AuditError::BadSignature(s)) if s == "witness-1.custos.test"
    ));
    let mut reattributed = r.clone();
    reattributed.signer = "witness-2.custos.test".into();
    assert!(reattributed.verify(&sig, &keys).is_err());
    let mut unknown = r;
    unknown.signer = "witness-9.custos.test".into();
    assert!(matches!(
        unknown.verify(&sig, &keys),
        Err(AuditError::MissingSignature(_))
    ));
}

#[test]
fn message_is_domain_separated_and_unambiguous() {
    let a = refusal();
    assert!(a.message().starts_with(REFUSAL_DOMAIN));
    // Moving bytes between fields changes the message.
    let mut b = a.clone();
    b.withdrawal_id = "wd-1w".into();
    b.signer = "itness-1.custos.test".into();
    assert_ne!(a.message(), b.message());
}
