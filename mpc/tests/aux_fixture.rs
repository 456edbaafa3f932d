//! The checked-in aux-info fixtures (`tests/fixtures/aux-info-<n>.json`):
//! valid, made from the public test primes, and usable for keygen and
//! signing. `CUSTOS_REGENERATE_AUX_FIXTURES=1 cargo test -p custos-mpc
//! --release --test aux_fixture -- --ignored` makes them anew.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use custos_mpc::fixture::AuxFixture;
use custos_mpc::{MpcError, Primes, sim};

/// Group sizes the dev and test clusters use.
const SIZES: [usize; 3] = [3, 4, 5];

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn test_primes() -> Vec<Primes> {
    let bytes = std::fs::read(fixtures_dir().join("test-primes.json")).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn load(n: usize) -> AuxFixture {
    let bytes = std::fs::read(fixtures_dir().join(format!("aux-info-{n}.json"))).unwrap();
    AuxFixture::parse(&bytes).unwrap()
}

fn node_ids(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("signer-{i}")).collect()
}

#[test]
fn fixtures_are_made_from_the_test_primes_for_the_dev_node_ids() {
    let primes = test_primes();
    for n in SIZES {
        let f = load(n);
        assert_eq!(f.participants, node_ids(n));
        let id = f.group_id().unwrap();
        assert!(id.starts_with(&format!("fixture-{n}-")), "{id}");
        for (i, p) in primes.iter().take(n).enumerate() {
            f.party_for(i, p).unwrap();
        }
        // Another party's primes are refused.
        let err = f.party_for(0, &primes[1]).err().unwrap();
        assert!(err.to_string().contains("not made from"), "{err}");
    }
}

#[test]
fn a_fixture_with_a_foreign_party_or_edited_modulus_is_refused() {
    let f = load(3);
    let json = String::from_utf8(f.to_json().unwrap()).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    // Party 1's view of party 2's public data differs from party 0's.
    v["parties"][1]["parties"][2] = v["parties"][1]["parties"][0].clone();
    let err = AuxFixture::parse(v.to_string().as_bytes()).err().unwrap();
    assert!(matches!(err, MpcError::InvalidInput(_)), "{err}");
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["format"] = 7.into();
    let err = AuxFixture::parse(v.to_string().as_bytes()).err().unwrap();
    assert!(err.to_string().contains("format 7"), "{err}");
    assert!(AuxFixture::parse(b"{}").is_err());
}

#[test]
fn fixture_aux_info_signs_a_verifiable_signature() {
    use k256::ecdsa::signature::hazmat::PrehashVerifier;
    let f = load(3);
    futures::executor::block_on(async {
        let shares = sim::keygen(2, &f.parties).await.unwrap();
        let digest = [7u8; 32];
        let sig = sim::sign(&shares[..2], &[0, 1], &digest, None)
            .await
            .unwrap();
        let pk = custos_mpc::protocol::public_key(&shares[0]);
        let vk = k256::ecdsa::VerifyingKey::from_sec1_bytes(&pk).unwrap();
        let ksig = k256::ecdsa::Signature::from_slice(&sig.to_bytes()).unwrap();
        vk.verify_prehash(&digest, &ksig).unwrap();
    });
}

#[test]
#[ignore = "regenerates the checked-in fixtures (minutes)"]
fn regenerate_aux_fixtures() {
    if std::env::var_os("CUSTOS_REGENERATE_AUX_FIXTURES").is_none() {
        return;
    }
    let primes = test_primes();
    for n in SIZES {
        let parties =
            futures::executor::block_on(sim::aux_info(primes[..n].to_vec(), None)).unwrap();
        let f = AuxFixture::new(node_ids(n), parties).unwrap();
        std::fs::write(
            fixtures_dir().join(format!("aux-info-{n}.json")),
            f.to_json().unwrap(),
        )
        .unwrap();
    }
}
