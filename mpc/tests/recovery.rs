//! Share backups sealed to a recovery key, and reconstruction of a key from
//! its threshold of backups (the worst case: t signers lost), over real
//! cggmp21 key shares from the in-process simulation.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cggmp21::key_share::AnyKeyShare;
use custos_mpc::recovery::{
    BACKUP_FORMAT, BackupHeader, Recipient, RecoveryIdentity, ShareBackup, reconstruct_ecdsa,
};
use custos_mpc::{KeyShare, protocol, sim};
use k256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};

fn keygen(t: u16, n: usize) -> Vec<KeyShare> {
    let aux = custos_mpc::fixture::checked_in_aux(n).unwrap();
    futures::executor::block_on(sim::keygen(t, &aux)).unwrap()
}

fn backup(key_id: &str, share: &KeyShare, to: &Recipient) -> ShareBackup {
    let n = share.core.key_info.public_shares.len();
    let header = BackupHeader {
        format: BACKUP_FORMAT.into(),
        key_id: key_id.into(),
        group_id: "group-1".into(),
        scheme: "ecdsa-secp256k1".into(),
        node_id: format!("signer-{}", share.core.i + 1),
        party_index: share.core.i,
        threshold: share.min_signers(),
        participants: (1..=n).map(|i| format!("signer-{i}")).collect(),
        public_key: hex::encode(protocol::public_key(share)),
        recipient: to.to_string(),
        created_at_ms: 1_764_072_000_000,
    };
    let bytes = protocol::to_secret_bytes(share).unwrap();
    ShareBackup::seal(header, to, &bytes).unwrap()
}

fn err(r: Result<impl std::fmt::Debug, custos_mpc::MpcError>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn any_threshold_of_backups_reconstructs_the_key_and_fewer_are_refused() {
    let shares = keygen(2, 3);
    let id = RecoveryIdentity::generate();
    let to = id.recipient();
    let backups: Vec<ShareBackup> = shares.iter().map(|s| backup("w-1", s, &to)).collect();
    // Through the file format.
    let backups: Vec<ShareBackup> = backups
        .iter()
        .map(|b| ShareBackup::from_json(&b.to_json().unwrap()).unwrap())
        .collect();
    let pk = protocol::public_key(&shares[0]);
    for pair in [[0, 1], [1, 2], [2, 0]] {
        let chosen = [backups[pair[0]].clone(), backups[pair[1]].clone()];
        let key = reconstruct_ecdsa(&id, &chosen).unwrap();
        assert_eq!(key.public_key, pk);
        // The secret signs under the cluster's public key (checked by k256).
        let sk = k256::ecdsa::SigningKey::from_slice(key.secret.as_ref()).unwrap();
        let (sig, _): (k256::ecdsa::Signature, _) = sk.sign_prehash(&[7u8; 32]).unwrap();
        k256::ecdsa::VerifyingKey::from_sec1_bytes(&pk)
            .unwrap()
            .verify_prehash(&[7u8; 32], &sig)
            .unwrap();
        assert!(!format!("{key:?}").contains(&hex::encode(key.secret.as_ref())));
    }
    // All three work too.
    assert_eq!(reconstruct_ecdsa(&id, &backups).unwrap().public_key, pk);
    // Fewer than t: refused, naming how many it needs.
    let e = err(reconstruct_ecdsa(&id, &backups[..1]));
    assert!(e.contains("needs 2 backups") && e.contains("got 1"), "{e}");
    assert!(err(reconstruct_ecdsa(&id, &[])).contains("threshold"));
    // The same signer twice does not count twice.
    let e = err(reconstruct_ecdsa(
        &id,
        &[backups[0].clone(), backups[0].clone()],
    ));
    assert!(e.contains("same signer"), "{e}");
    // A backup of another key.
    let other = keygen(2, 3);
    let e = err(reconstruct_ecdsa(
        &id,
        &[backups[0].clone(), backup("w-2", &other[1], &to)],
    ));
    assert!(e.contains("different keys"), "{e}");
    // Another key's backup under this key's header: the header is bound, so
    // relabelling fails to open; a share swapped in by a sealer that lies
    // about the header fails the header check.
    let mut relabelled = backup("w-2", &other[1], &to);
    relabelled.header.key_id = "w-1".into();
    relabelled.header.public_key = hex::encode(pk);
    let e = err(reconstruct_ecdsa(&id, &[backups[0].clone(), relabelled]));
    assert!(e.contains("does not open"), "{e}");
    let mut lying = backups[1].header.clone();
    lying.node_id = "signer-2".into();
    let lie =
        ShareBackup::seal(lying, &to, &protocol::to_secret_bytes(&other[1]).unwrap()).unwrap();
    let e = err(reconstruct_ecdsa(&id, &[backups[0].clone(), lie]));
    assert!(e.contains("does not match its header"), "{e}");
}

#[test]
fn a_backup_opens_only_with_its_recovery_key_and_unaltered() {
    let shares = keygen(2, 3);
    let id = RecoveryIdentity::generate();
    let b = backup("w-1", &shares[0], &id.recipient());
    let opened = b.open_ecdsa(&id).unwrap();
    assert_eq!(opened.core.i, 0);
    // Another recovery key: refused before decryption, naming the recipient.
    let other = RecoveryIdentity::generate();
    let e = err(b.open(&other));
    assert!(e.contains("not to this recovery key"), "{e}");
    // The other key presented as if it were the recipient: decryption fails.
    let mut forged = b.clone();
    forged.header.recipient = other.recipient().to_string();
    assert!(err(forged.open(&other)).contains("does not open"));
    // Any header field edited, or one ciphertext bit flipped: does not open.
    let mut edits: Vec<ShareBackup> = Vec::new();
    let mut e1 = b.clone();
    e1.header.party_index = 1;
    edits.push(e1);
    let mut e2 = b.clone();
    e2.header.node_id = "signer-3".into();
    edits.push(e2);
    let mut e3 = b.clone();
    e3.header.threshold = 1;
    edits.push(e3);
    let mut e4 = b.clone();
    e4.header.created_at_ms += 1;
    edits.push(e4);
    let mut e5 = b.clone();
    let mut ct = hex::decode(&e5.ciphertext).unwrap();
    ct[10] ^= 1;
    e5.ciphertext = hex::encode(ct);
    edits.push(e5);
    for e in edits {
        assert!(err(e.open(&id)).contains("does not open"));
    }
    // The ciphertext hash changes with the ciphertext.
    let again = backup("w-1", &shares[0], &id.recipient());
    assert_ne!(again.ciphertext_hash(), b.ciphertext_hash());
}

#[test]
fn recovery_keys_round_trip_as_text_and_bad_text_is_named() {
    let id = RecoveryIdentity::generate();
    let text = id.to_text();
    let back = RecoveryIdentity::parse(&text).unwrap();
    assert_eq!(back.recipient(), id.recipient());
    assert_eq!(format!("{id:?}"), "RecoveryIdentity(<redacted>)");
    let r = id.recipient().to_string();
    assert!(r.starts_with("custos-recipient1:"));
    assert_eq!(Recipient::parse(&r).unwrap(), id.recipient());
    assert_eq!(id.recipient().fingerprint().len(), 64);
    assert!(err(Recipient::parse("age1qqq")).contains("must start with custos-recipient1:"));
    assert!(err(Recipient::parse("custos-recipient1:zz")).contains("not hex"));
    assert!(err(Recipient::parse("custos-recipient1:abcd")).contains("32 bytes"));
    // A recipient given where the identity is expected.
    assert!(err(RecoveryIdentity::parse(&r)).contains("is this a recipient"));
    assert!(err(RecoveryIdentity::parse("# nothing\n")).contains("holds no key"));
    assert!(err(ShareBackup::from_json(b"{}")).contains("not a Custos share backup"));
}

/// A backup sealed by `vectors/backup.py` (RFC 9180 written out with plain
/// X25519, HMAC and ChaCha20-Poly1305, no HPKE library) opens here: the
/// format, the header's associated data and the HPKE suite agree with an
/// independent implementation, and backups made today keep opening.
#[test]
fn an_independently_sealed_backup_opens() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/backup_v1.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let id = RecoveryIdentity::parse(v["identity"].as_str().unwrap()).unwrap();
    assert_eq!(id.recipient().to_string(), v["recipient"]);
    assert_eq!(id.recipient().fingerprint(), v["fingerprint"]);
    let backup =
        ShareBackup::from_json(serde_json::to_string(&v["backup"]).unwrap().as_bytes()).unwrap();
    assert_eq!(hex::encode(backup.ciphertext_hash()), v["ciphertext_hash"]);
    let plain = backup.open(&id).unwrap();
    assert_eq!(hex::encode(plain.as_slice()), v["plaintext_hex"]);
    // The same bytes under an edited header do not open.
    let mut edited = backup.clone();
    edited.header.group_id = "group-8".into();
    assert!(err(edited.open(&id)).contains("does not open"));
}
