//! Helpers for end-to-end tests: a real cluster of processes on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use custos_devkit::client::{Client, connect};
use custos_devkit::{Cluster, ClusterLayout, ClusterSpec, StartOptions};
use custos_proto::custody::GetClusterStatusRequest;

/// Where cargo put the daemons (`target/<profile>`), next to the test binary's `deps/`.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    for bin in ["custos-signer", "custos-coordinator"] {
        assert!(
            dir.join(bin).exists(),
            "{} missing: run `cargo build --workspace --bins` first (scripts/test-all.sh does)",
            dir.join(bin).display()
        );
    }
    dir
}

/// Pregenerated test primes (public fixtures; production nodes generate their own).
pub fn primes_fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../mpc/tests/fixtures/test-primes.json")
}

/// A running cluster with a connected client.
pub struct TestCluster {
    pub cluster: Cluster,
    pub client: Client,
    pub dir: tempfile::TempDir,
}

/// Generates and starts an n-signer cluster and waits until aux info is ready.
pub async fn start(signers: u16, threshold: u16, faults: &[(&str, &str)]) -> TestCluster {
    start_with_pool(signers, threshold, faults, None).await
}

/// Like [`start`], with the coordinator's presignature pool target set.
pub async fn start_with_pool(
    signers: u16,
    threshold: u16,
    faults: &[(&str, &str)],
    pool: Option<u32>,
) -> TestCluster {
    let tc = launch(signers, threshold, faults, pool).await;
    tc.wait_aux_ready(Duration::from_secs(600)).await;
    tc
}

/// Generates and starts a cluster without waiting for aux info.
pub async fn launch(
    signers: u16,
    threshold: u16,
    faults: &[(&str, &str)],
    pool: Option<u32>,
) -> TestCluster {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ClusterSpec::new(dir.path().join("cluster"));
    spec.signers = signers;
    spec.threshold = threshold;
    spec.base_port = custos_devkit::free_base_port();
    spec.primes_file = Some(primes_fixture());
    for (node, fault) in faults {
        spec.fault_injection
            .insert((*node).to_owned(), (*fault).to_owned());
    }
    let layout = custos_devkit::generate(&spec).unwrap();
    if let Some(pool) = pool {
        let cfg = std::fs::read_to_string(&layout.coordinator.config).unwrap();
        let cfg: String = cfg
            .lines()
            .map(|l| {
                if l.starts_with("presignature_pool") {
                    format!("presignature_pool = {pool}")
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&layout.coordinator.config, cfg).unwrap();
    }
    let opts = StartOptions::default().timeout(Duration::from_secs(60));
    launch_layout(dir, layout, opts).await
}

/// Starts a layout generated (and possibly edited) in `dir`, with `opts` (for
/// example extra environment variables), and waits until aux info is ready.
pub async fn start_layout(
    dir: tempfile::TempDir,
    layout: ClusterLayout,
    opts: StartOptions,
) -> TestCluster {
    let tc = launch_layout(dir, layout, opts).await;
    tc.wait_aux_ready(Duration::from_secs(600)).await;
    tc
}

/// Starts a layout without waiting for aux info.
pub async fn launch_layout(
    dir: tempfile::TempDir,
    layout: ClusterLayout,
    opts: StartOptions,
) -> TestCluster {
    let cluster = Cluster::start_with(layout.clone(), &bin_dir(), opts)
        .await
        .unwrap();
    let client = connect(&layout).await.unwrap();
    TestCluster {
        cluster,
        client,
        dir,
    }
}

impl TestCluster {
    /// Polls the coordinator until aux info is ready.
    pub async fn wait_aux_ready(&self, limit: Duration) {
        let started = Instant::now();
        loop {
            let s = self
                .client
                .clone()
                .get_cluster_status(GetClusterStatusRequest {})
                .await
                .unwrap()
                .into_inner();
            if s.aux_info == "ready" {
                return;
            }
            assert!(
                started.elapsed() < limit,
                "aux info not ready after {limit:?}: {}",
                s.aux_info
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Verifies with RustCrypto k256 and with libsecp256k1.
pub fn verify_both(public_key: &[u8], digest: &[u8; 32], r: &[u8], s: &[u8]) {
    use k256::ecdsa::signature::hazmat::PrehashVerifier;
    let mut rs = [0u8; 64];
    rs[..32].copy_from_slice(r);
    rs[32..].copy_from_slice(s);
    let vk = k256::ecdsa::VerifyingKey::from_sec1_bytes(public_key).unwrap();
    vk.verify_prehash(digest, &k256::ecdsa::Signature::from_slice(&rs).unwrap())
        .expect("k256 verifies");
    let secp = secp256k1::Secp256k1::verification_only();
    let pk = secp256k1::PublicKey::from_slice(public_key).unwrap();
    let sig = secp256k1::ecdsa::Signature::from_compact(&rs).unwrap();
    secp.verify_ecdsa(secp256k1::Message::from_digest(*digest), &sig, &pk)
        .expect("libsecp256k1 verifies");
}

/// Ethereum address of a public key, computed here independently of the coordinator.
pub fn eth_address_lower(public_key: &[u8]) -> String {
    use sha3::Digest;
    let pk = secp256k1::PublicKey::from_slice(public_key).unwrap();
    let hash = sha3::Keccak256::digest(&pk.serialize_uncompressed()[1..]);
    format!("0x{}", hex::encode(&hash[12..]))
}

/// A random 32-byte digest.
pub fn digest() -> [u8; 32] {
    use rand::RngCore;
    let mut d = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut d);
    d
}

/// An admin SignDigest request with a fresh random request id.
pub fn sign_req(
    key_id: &str,
    d: &[u8; 32],
    interactive: bool,
) -> custos_proto::custody::SignDigestRequest {
    use rand::RngCore;
    let mut id = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut id);
    custos_proto::custody::SignDigestRequest {
        key_id: key_id.into(),
        digest: d.to_vec(),
        request_id: hex::encode(id),
        interactive,
    }
}

/// The SoftHSM2 PKCS#11 module installed by `scripts/install-deps.sh`.
pub const SOFTHSM2_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// Rewrites `config`'s `[sealer]` table (and its subtables) as `table`.
pub fn set_sealer(config: &std::path::Path, table: &str) {
    let text = std::fs::read_to_string(config).unwrap();
    let mut out = String::new();
    let mut skipping = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            skipping = t == "[sealer]" || t.starts_with("[sealer.");
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(
        !out.contains("backend ="),
        "sealer table not removed:\n{out}"
    );
    out.push_str("\n[sealer]\n");
    out.push_str(table);
    out.push('\n');
    std::fs::write(config, out).unwrap();
}

pub fn pkcs11_table(token: &str, pin_file: &std::path::Path, kek: &str, create: bool) -> String {
    format!(
        "backend = \"pkcs11\"\nmodule = \"{SOFTHSM2_MODULE}\"\ntoken_label = \"{token}\"\npin_file = \"{}\"\nkek_label = \"{kek}\"\ncreate_kek = {create}\n",
        pin_file.display()
    )
}
