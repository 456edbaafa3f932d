//! Share backup and disaster recovery (issue #19) on one real cluster and
//! a real anvil node, through the real `custos` CLI:
//!
//! 1. the admins make a recovery key offline; every signer's config names
//!    its public half; `custos recovery export` gets each signer's share
//!    sealed to it, and each export is a `share_exported` entry that
//!    `custos audit verify` lists; a recipient the signers were not given is
//!    refused by each of them;
//! 2. signer-3's host is lost (its whole directory wiped): a new host (new
//!    libp2p identity, TLS certificate and sealer) is restored from its
//!    backup with `custos recovery restore`, pinned by the peers, and signs
//!    with signer-1 while signer-2 is down;
//! 3. the worst case: every signer is lost; `custos recovery reconstruct`
//!    refuses one backup, rebuilds the key from two, prints its address,
//!    and its sweep transaction is mined by anvil.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use custos_chains::U256;
use custos_chains::evm::address::parse_address;
use custos_proto::custody::GetKeyRequest;
use custos_tests::anvil::{Anvil, rpc};
use custos_tests::audit::{Outcome, custos, export_and_verify, trust_args};
use custos_tests::*;
use serde_json::json;

const WALLET: &str = "vault-1";
/// Anvil's dev account 0 (unlocked): funds the wallet.
const DEV_0: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
/// Where the sweep goes: a fresh address of the admins.
const RESCUE: &str = "0x000000000000000000000000000000000000bEEF";

fn json_of(o: &Outcome) -> serde_json::Value {
    assert!(o.ok, "{o}");
    serde_json::from_str(o.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {o}"))
}

/// Signs a digest with the signers the coordinator can reach, retrying
/// while it learns who is up; returns the signers that signed.
async fn sign_until_ok(fc: &FlowCluster, public_key: &[u8]) -> Vec<String> {
    let started = Instant::now();
    loop {
        let d = digest();
        match fc
            .tc
            .client
            .clone()
            .sign_digest(sign_req(WALLET, &d, true))
            .await
        {
            Ok(r) => {
                let r = r.into_inner();
                verify_both(public_key, &d, &r.r, &r.s);
                return r.signers;
            }
            Err(e) => assert!(
                started.elapsed() < Duration::from_secs(60),
                "no signature after a minute: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `custos recovery export --json` of the wallet to `recipient` into `dir`.
fn export(cluster: &str, recipient: &str, dir: &std::path::Path) -> Outcome {
    custos(&[
        "recovery",
        "export",
        "--cluster",
        cluster,
        "--key",
        WALLET,
        "--recipient",
        recipient,
        "--out-dir",
        dir.to_str().unwrap(),
        "--json",
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_restore_a_signer_then_reconstruct_and_sweep_after_losing_all() {
    let work = tempfile::tempdir().unwrap();
    let identity = work.path().join("recovery.key");
    let id_path = identity.to_str().unwrap();
    let made = json_of(&custos(&["recovery", "keygen", "--out", id_path, "--json"]));
    let recipient = made["recipient"].as_str().unwrap().to_owned();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&identity).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    // Never overwritten.
    assert!(!custos(&["recovery", "keygen", "--out", id_path]).ok);

    let settings = FlowSettings {
        recovery_recipient: Some(&recipient),
        ..FlowSettings::default()
    };
    let fc = start_flow_on(&flow_policy(), true, &[WALLET], settings).await;
    let cluster_dir = fc.tc.cluster.layout().dir.clone();
    let cluster = cluster_dir.to_str().unwrap().to_owned();
    let key = fc
        .tc
        .client
        .clone()
        .get_key(GetKeyRequest {
            key_id: WALLET.into(),
        })
        .await
        .unwrap()
        .into_inner();

    // 1. Export. A recipient the signers were not configured with: each refuses.
    let stranger = custos_mpc::recovery::RecoveryIdentity::generate().recipient();
    let refused = export(&cluster, &stranger.to_string(), &work.path().join("wrong"));
    assert!(!refused.ok, "{refused}");
    let r: serde_json::Value = serde_json::from_str(refused.stdout.trim()).unwrap();
    assert_eq!(r["backups"].as_array().unwrap().len(), 0, "{refused}");
    let failures = r["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 3, "{refused}");
    assert!(
        failures.iter().all(|f| f
            .as_str()
            .unwrap()
            .contains("is not this signer's recovery key")),
        "{refused}"
    );
    let backups_dir = work.path().join("backups");
    let exported = json_of(&export(&cluster, &recipient, &backups_dir));
    assert_eq!(exported["failures"], json!([]));
    let files: Vec<String> = exported["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["file"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(files.len(), 3);
    for (i, f) in files.iter().enumerate() {
        let b: serde_json::Value = serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap();
        assert_eq!(b["node_id"], format!("signer-{}", i + 1));
        assert_eq!(b["public_key"], hex::encode(&key.public_key));
        // Ciphertext only: no share field in the clear.
        assert!(b.get("x").is_none() && b.get("core").is_none());
    }
    // Each export is in the log, listed by the auditor's verifier.
    let trust = trust_args(&cluster_dir);
    let started = Instant::now();
    let report = loop {
        let o = export_and_verify(&cluster_dir, &trust, &[]);
        if o.ok && o.stdout.contains("3 share export(s)") {
            break o;
        }
        assert!(started.elapsed() < Duration::from_secs(90), "{o}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    for n in 1..=3 {
        assert!(
            report.stdout.contains(&format!(
                "signer-{n} exported its share of {WALLET} for admin"
            )),
            "{report}"
        );
    }

    // 2. signer-3's host is lost: everything in its directory is gone. The
    // new host gets a new libp2p identity, TLS certificate and passphrase
    // (devkit's generation, as an operator provisions a host), the peers
    // pin the new identity, and the share comes back from the backup.
    let mut cluster_handle = fc.tc.cluster;
    cluster_handle.stop_signer("signer-3").await.unwrap();
    let s3 = cluster_handle.layout().signers[2].clone();
    let old_peer = std::fs::read(&s3.identity_key).unwrap();
    std::fs::remove_dir_all(s3.config.parent().unwrap()).unwrap();
    let mut spec = flow_spec(fc.tc.dir.path(), &flow_policy(), true, settings);
    spec.base_port = cluster_handle.layout().base_port;
    custos_devkit::generate(&spec).unwrap();
    assert_ne!(std::fs::read(&s3.identity_key).unwrap(), old_peer);
    let s3_config = s3.config.to_str().unwrap();
    // Another signer's backup is refused.
    let wrong = custos(&[
        "recovery",
        "restore",
        "--identity",
        id_path,
        "--backup",
        &files[0],
        "--config",
        s3_config,
    ]);
    assert!(
        !wrong.ok && wrong.stderr.contains("signer-1's share"),
        "{wrong}"
    );
    let restored = json_of(&custos(&[
        "recovery",
        "restore",
        "--identity",
        id_path,
        "--backup",
        &files[2],
        "--config",
        s3_config,
        "--json",
    ]));
    assert_eq!(restored["node_id"], "signer-3");
    assert_eq!(restored["public_key"], hex::encode(&key.public_key));
    for n in ["signer-1", "signer-2", "signer-3"] {
        cluster_handle.restart_signer(n).await.unwrap();
    }
    // signer-2 down: only signer-1 with the restored signer-3 can sign.
    cluster_handle.stop_signer("signer-2").await.unwrap();
    let fc = FlowCluster {
        tc: TestCluster {
            cluster: cluster_handle,
            client: fc.tc.client,
            dir: fc.tc.dir,
        },
        ..fc
    };
    let signers = sign_until_ok(&fc, &key.public_key).await;
    assert!(signers.contains(&"signer-3".to_owned()), "{signers:?}");

    // 3. Every signer lost.
    let mut cluster_handle = fc.tc.cluster;
    for n in ["signer-1", "signer-3"] {
        cluster_handle.stop_signer(n).await.unwrap();
    }
    for s in &cluster_handle.layout().signers {
        std::fs::remove_dir_all(&s.data_dir).unwrap();
    }
    let anvil = Anvil::start().await;
    let node = rpc(&anvil.url);
    // Fewer backups than the threshold: refused, naming how many it needs.
    let one = custos(&["recovery", "reconstruct", "--identity", id_path, &files[0]]);
    assert!(!one.ok && one.stderr.contains("needs 2 backups"), "{one}");
    // Two: the key and its address, before any chain is involved.
    let offline = json_of(&custos(&[
        "recovery",
        "reconstruct",
        "--identity",
        id_path,
        &files[0],
        &files[2],
        "--json",
    ]));
    assert_eq!(offline["ethereum_address"], key.ethereum_address);
    assert_eq!(offline["public_key"], hex::encode(&key.public_key));
    let wallet = parse_address(&key.ethereum_address).unwrap();
    let funded = U256::from(3 * ETH);
    let hash = node
        .request(
            "eth_sendTransaction",
            json!([{ "from": DEV_0, "to": wallet, "value": format!("0x{:x}", 3 * ETH) }]),
        )
        .await
        .unwrap();
    node.wait_for_receipt(
        hash.as_str().unwrap().parse().unwrap(),
        Duration::from_millis(50),
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    assert_eq!(node.balance(wallet).await.unwrap(), funded);
    let swept = json_of(&custos(&[
        "recovery",
        "reconstruct",
        "--identity",
        id_path,
        &files[1],
        &files[2],
        "--sweep-to",
        RESCUE,
        "--rpc",
        &anvil.url,
        "--broadcast",
        "--json",
    ]));
    let sweep = &swept["sweep"];
    assert_eq!(sweep["status"], "mined", "{swept}");
    let rescue = parse_address(RESCUE).unwrap();
    let amount = U256::from_str_radix(sweep["amount_wei"].as_str().unwrap(), 10).unwrap();
    assert_eq!(node.balance(rescue).await.unwrap(), amount);
    // Everything but the fee left the wallet.
    let left = node.balance(wallet).await.unwrap();
    let fee_cap = U256::from(21_000u64)
        * U256::from_str_radix(sweep["max_fee_per_gas"].as_str().unwrap(), 10).unwrap();
    assert!(
        left + amount + fee_cap >= funded && left < fee_cap,
        "{swept}"
    );
    // The identity file and the backups are all that was needed: no signer ran.
    assert!(
        cluster_handle
            .layout()
            .signers
            .iter()
            .all(|s| !s.data_dir.exists())
    );
    cluster_handle.stop().await.unwrap();
}
