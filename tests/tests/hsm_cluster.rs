//! A 2-of-3 cluster whose signers seal with PKCS#11 on SoftHSM2 (one token,
//! label and PIN per signer): keygen, signing, nothing in clear on disk, and
//! shares unsealed by the HSM after a signer crashes and restarts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use custos_devkit::{ClusterSpec, StartOptions};
use custos_proto::custody::{CreateKeyRequest, Curve, SignDigestResponse};
use custos_tests::{start_layout, verify_both};

use custos_tests::{pkcs11_table, set_sealer};
/// Fields of a serialized key share, aux info or presignature: never on disk in clear.
const PLAINTEXT_NEEDLES: [&str; 4] = [
    "shared_public_key",
    "public_shares",
    "\"parties\"",
    "\"vss_setup\"",
];

use custos_tests::{digest, sign_req};

/// Writes a SoftHSM2 configuration with its own token directory under `dir`.
fn softhsm_conf(dir: &Path) -> PathBuf {
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
            tokens.display()
        ),
    )
    .unwrap();
    conf
}

fn init_token(conf: &Path, label: &str, pin: &str) {
    let out = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", conf)
        .args(["--init-token", "--free", "--label", label])
        .args(["--pin", pin, "--so-pin", &format!("so-{pin}")])
        .output()
        .expect("softhsm2-util runs");
    assert!(
        out.status.success(),
        "softhsm2-util --init-token {label}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Creates the KEK of `table` in its token with `custos-hsm check` (it opens
/// the sealer exactly as the signer does).
fn provision_kek(conf: &Path, signer_dir: &Path, table: &str) {
    let sealer = signer_dir.join("provision-sealer.toml");
    std::fs::write(&sealer, table).unwrap();
    let tool = custos_tests::bin_dir().join("custos-hsm");
    assert!(
        tool.exists(),
        "{} missing: cargo build --workspace --bins",
        tool.display()
    );
    let out = Command::new(tool)
        .env("SOFTHSM2_CONF", conf)
        .arg("check")
        .arg("--config")
        .arg(&sealer)
        .arg("--data-dir")
        .arg(signer_dir.join("provision"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "custos-hsm check: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok: backend pkcs11"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Every secret file of a signer's data dir is a PKCS#11-sealed blob; the rest is public.
fn assert_only_sealed(node_id: &str, data_dir: &Path, key_id: &str, public_key_hex: &str) {
    let mut files = Vec::new();
    files_under(data_dir, &mut files);
    let mut sealed = 0;
    for f in &files {
        let rel = f
            .strip_prefix(data_dir)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        // The presignature pool refills in the background: a temp file of an
        // atomic write may be renamed away between listing and reading.
        let Ok(bytes) = std::fs::read(f) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        for n in PLAINTEXT_NEEDLES {
            assert!(!text.contains(n), "{node_id}: {rel} holds {n:?} in clear");
        }
        if rel.contains(".sealed.tmp-") {
            // A sealed blob being written (possibly partly): no plaintext
            // above; its header is checked once it lands under its name.
            continue;
        }
        assert_ne!(
            rel, "software-kek.json",
            "{node_id}: a software KEK next to a PKCS#11 sealer"
        );
        if rel.ends_with(".sealed") {
            sealed += 1;
            // Header: magic, version 1, AEAD 2 (AES-256-GCM in the token), backend "pkcs11".
            assert!(bytes.starts_with(b"CSTSEAL"), "{node_id}: {rel} not a blob");
            assert_eq!(bytes[7], 1, "{node_id}: {rel} version");
            assert_eq!(bytes[8], 2, "{node_id}: {rel} not AES-256-GCM");
            assert_eq!(&bytes[9..16], b"\x06pkcs11", "{node_id}: {rel} backend");
            assert!(
                !text.contains(public_key_hex),
                "{node_id}: {rel} holds the public key in clear"
            );
        } else if ["witness.json", "withdrawals.log", "policy-bundles.json"].contains(&rel.as_str())
        {
            // Public co-signer state: witnessed checkpoint roots, the journal of
            // authorised and signed withdrawals (partials are public once sent),
            // admin-signed policy documents. The needles above found no secret.
        } else if rel.starts_with("keys/") {
            // Public metadata only (the public package: the group key and
            // every signer's verifying share, what a signer derives a child
            // address from itself).
            assert_eq!(rel, format!("keys/{key_id}.json"), "{node_id}");
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            let mut fields: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
            fields.sort_unstable();
            assert_eq!(
                fields,
                [
                    "chain_code",
                    "group_id",
                    "key_id",
                    "participants",
                    "public_key",
                    "public_package",
                    "scheme",
                    "threshold"
                ],
                "{node_id}: {rel}"
            );
        } else {
            assert!(
                rel == "sessions.log" || rel.starts_with("consumed/"),
                "{node_id}: unexpected file {rel}"
            );
            assert!(
                !text.contains('{'),
                "{node_id}: {rel} is not a marker or id list"
            );
        }
    }
    let share = format!("keys/{key_id}.sealed");
    assert!(
        data_dir.join(&share).is_file(),
        "{node_id}: {share} missing"
    );
    assert!(
        std::fs::read_dir(data_dir.join("aux")).unwrap().count() > 0,
        "{node_id}: no sealed aux info"
    );
    assert!(sealed >= 2, "{node_id}: {sealed} sealed files");
}

/// Signs, retrying while the restarted signer reconnects to its peers.
async fn sign_retrying(
    client: &mut custos_devkit::client::Client,
    d: &[u8; 32],
    interactive: bool,
) -> SignDigestResponse {
    let mut last = None;
    for _ in 0..40 {
        match client
            .sign_digest(sign_req("hsm-wallet", d, interactive))
            .await
        {
            Ok(r) => return r.into_inner(),
            Err(e) => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    panic!("signing failed after retries: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkcs11_sealed_cluster_signs_and_survives_a_signer_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ClusterSpec::new(dir.path().join("cluster"));
    spec.signers = 3;
    spec.threshold = 2;
    spec.base_port = custos_devkit::free_base_port();
    custos_tests::use_fixtures(&mut spec);
    let layout = custos_devkit::generate(&spec).unwrap();

    // One SoftHSM2 token per signer, each with its own label and PIN, and in its
    // own token directory, like one HSM per signer: SoftHSM2 processes sharing a
    // token directory break each other at start (C_GetTokenInfo fails with
    // CKR_GENERAL_ERROR while another process logs in). Every process gets
    // SOFTHSM2_CONF=softhsm2.conf, relative to its working directory, which is
    // its signer's directory. Each KEK is provisioned up front with the operator
    // tool; the signers then run with `create_kek = false` (fail closed).
    for (i, s) in layout.signers.iter().enumerate() {
        let conf = softhsm_conf(&s.dir);
        let token = format!("custos-{}", s.node_id);
        let pin = format!("{}{}{}{}-pin", i + 1, i + 3, i + 5, i + 7);
        init_token(&conf, &token, &pin);
        let pin_file = s.dir.join("hsm-pin");
        std::fs::write(&pin_file, format!("{pin}\n")).unwrap();
        let kek = format!("kek-{}", s.node_id);
        provision_kek(&conf, &s.dir, &pkcs11_table(&token, &pin_file, &kek, true));
        set_sealer(&s.config, &pkcs11_table(&token, &pin_file, &kek, false));
    }

    let opts = StartOptions::default().env("SOFTHSM2_CONF", "softhsm2.conf");
    let mut tc = start_layout(dir, layout.clone(), opts).await;
    let mut client = tc.client.clone();
    let key = client
        .create_key(CreateKeyRequest {
            key_id: "hsm-wallet".into(),
            curve: Curve::Secp256k1 as i32,
            threshold: 2,
            chain: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(key.public_key.len(), 33);
    assert_eq!(key.participants.len(), 3);
    let d = digest();
    let r = sign_retrying(&mut client, &d, false).await;
    verify_both(&key.public_key, &d, &r.r, &r.s);

    // Nothing secret in clear: only PKCS#11 blobs and public metadata.
    let pk_hex = hex::encode(&key.public_key);
    for s in &layout.signers {
        assert_only_sealed(&s.node_id, &s.data_dir, "hsm-wallet", &pk_hex);
    }

    // Crash signer-2 and restart it: its shares can only come back through the
    // KEK in its token (creating one is not allowed).
    tc.cluster.kill_signer("signer-2").unwrap();
    tc.cluster.restart_signer("signer-2").await.unwrap();

    // Without signer-3, a 2-of-3 signature needs the restarted signer-2.
    tc.cluster.kill_signer("signer-3").unwrap();
    for interactive in [false, true] {
        let d = digest();
        let r = sign_retrying(&mut client, &d, interactive).await;
        verify_both(&key.public_key, &d, &r.r, &r.s);
        assert!(
            r.signers.contains(&"signer-2".to_owned()),
            "{:?}",
            r.signers
        );
        assert!(
            !r.signers.contains(&"signer-3".to_owned()),
            "{:?}",
            r.signers
        );
    }
    assert_only_sealed(
        "signer-2",
        &layout.signers[1].data_dir,
        "hsm-wallet",
        &pk_hex,
    );
    tc.cluster.stop().await.unwrap();
}
