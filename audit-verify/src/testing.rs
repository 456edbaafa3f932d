//! Helpers for this crate's unit tests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use custos_policy::{SecretKey, Zeroizing};

/// An example key of `examples/keys`.
pub(crate) fn key(name: &str) -> SecretKey {
    let pem = match name {
        "alice" => include_str!("../../examples/keys/alice.pem"),
        "bob" => include_str!("../../examples/keys/bob.pem"),
        "carol" => include_str!("../../examples/keys/carol.pem"),
        "dave" => include_str!("../../examples/keys/dave.pem"),
        "admin1" => include_str!("../../examples/keys/admin1.pem"),
        "admin2" => include_str!("../../examples/keys/admin2.pem"),
        "mallory" => include_str!("../../examples/keys/mallory.pem"),
        other => panic!("no key {other}"),
    };
    SecretKey::from_pem(&Zeroizing::new(pem.to_owned())).unwrap()
}

/// An export bundle of `entries` (from the first one's index), with no
/// checkpoint or proof: what the replay reads of a bundle.
pub(crate) fn bundle(entries: &[custos_audit::Entry]) -> custos_audit::ExportBundle {
    custos_audit::ExportBundle {
        format: custos_audit::bundle::BUNDLE_FORMAT.into(),
        origin: "custos.test/log".into(),
        start: entries.first().map_or(0, |e| e.index),
        prefix: vec![],
        entries: entries
            .iter()
            .map(|e| hex::encode(e.encode().unwrap()))
            .collect(),
        leaf_hashes: vec![],
        checkpoints: vec![],
        consistency_proofs: vec![],
        context: vec![],
        policy_documents: std::collections::BTreeMap::new(),
    }
}

/// A `policy_activated` entry of `policy`, signed by the named admin keys.
pub(crate) fn activation(
    policy: &custos_policy::Policy,
    admins: &[&str],
) -> custos_audit::EntryBody {
    let hash = policy.hash();
    let mut sigs = custos_policy::BundleSignatures::new(hash);
    for admin in admins {
        sigs.sign(&key(admin));
    }
    custos_audit::EntryBody::PolicyActivated {
        policy_hash: hash.0,
        policy_version: 1,
        admin_signatures: sigs
            .signatures
            .iter()
            .map(|s| custos_audit::entry::AdminSignature {
                admin_id: s.public_key.clone(),
                signature: hex::decode(&s.signature).unwrap(),
            })
            .collect(),
    }
}

/// The settings, approvers and groups of the test policies: alice, bob
/// and carol in `treasury`, dave in `security`; wallet group `hot` holds
/// `wallet`. Rules and address book follow.
pub(crate) fn policy_header(wallet: &str) -> String {
    let pk = |n: &str| key(n).public().to_hex();
    let mut out = format!(
        "version = 1\n[settings]\nwhitelist_delay = \"0s\"\nchange_delay = \"24h\"\n\
         approval_expiry = \"1h\"\n[wallet_groups]\nhot = [\"{wallet}\"]\n"
    );
    for (id, role) in [
        ("alice", "treasury"),
        ("bob", "treasury"),
        ("carol", "treasury"),
        ("dave", "security"),
    ] {
        out.push_str(&format!(
            "[[approvers]]\nid = \"{id}\"\nrole = \"{role}\"\ned25519 = \"{}\"\n",
            pk(id)
        ));
    }
    out.push_str("[groups]\ntreasury = [\"alice\", \"bob\", \"carol\"]\nsecurity = [\"dave\"]\n");
    out
}
