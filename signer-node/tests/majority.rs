//! Withdrawal keys need t > n/2 so that any two signer sets share a signer
//! whose own record refuses a second signing (docs/SECURITY.md case 39).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use custos_signer_node::cosigner::check_majority_key;
use custos_signer_node::error::NodeError;
use custos_signer_node::store::KeyMeta;

fn key(t: u16, n: usize) -> KeyMeta {
    KeyMeta {
        key_id: format!("k-{t}-of-{n}"),
        group_id: "g".into(),
        threshold: t,
        participants: (1..=n).map(|i| format!("signer-{i}")).collect(),
        public_key: String::new(),
        chain_code: None,
        scheme: "ecdsa-secp256k1".into(),
        generation: 0,
        public_package: None,
    }
}

#[test]
fn only_majority_keys_sign_withdrawals() {
    for (t, n) in [(2, 3), (3, 4), (3, 5), (4, 6), (5, 5)] {
        check_majority_key(&key(t, n)).unwrap_or_else(|e| panic!("{t}-of-{n}: {e}"));
    }
    for (t, n) in [(2, 4), (2, 5), (3, 6), (1, 2)] {
        match check_majority_key(&key(t, n)) {
            Err(NodeError::Refused(m)) => {
                assert!(m.contains(&format!("{t}-of-{n}")), "{m}");
                assert!(m.contains(&format!("{} or more of {n}", n / 2 + 1)), "{m}");
            }
            other => panic!("{t}-of-{n}: {other:?}"),
        }
    }
}
