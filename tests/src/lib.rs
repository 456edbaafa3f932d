//! Helpers for end-to-end tests: a real cluster of processes on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

pub mod anvil;
pub mod audit;
pub mod coordinators;
pub mod eth;
/// The Litecoin Core regtest node of the chains crate's tests.
#[path = "../../chains/tests/common/litecoind.rs"]
pub mod litecoind;
pub mod netns;
pub mod pg;
pub mod schnorr;
pub mod storm;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use custos_devkit::client::{Client, connect};
use custos_devkit::{Cluster, ClusterLayout, ClusterSpec, FaultInjection, StartOptions};
use custos_proto::custody::GetClusterStatusRequest;

/// Where cargo put the daemons (`target/<profile>`), next to the test binary's
/// `deps/`; `TESTS_BIN_DIR` overrides it (a target directory shared by several
/// worktrees holds whichever worktree's binaries were built last: copy yours
/// aside and point this at them).
pub fn bin_dir() -> PathBuf {
    let dir = match std::env::var_os("TESTS_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe().unwrap();
            exe.parent().unwrap().parent().unwrap().to_path_buf()
        }
    };
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

/// The checked-in aux info of an `n`-signer group made from [`primes_fixture`].
pub fn aux_fixture(n: u16) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../mpc/tests/fixtures/aux-info-{n}.json"))
}

/// Points `spec` at the public test primes and the aux-info fixture for its
/// number of signers, so the cluster skips the aux-info ceremony (tests whose
/// subject is the ceremony set only `primes_file`). Call after setting
/// `spec.signers`.
pub fn use_fixtures(spec: &mut ClusterSpec) {
    spec.primes_file = Some(primes_fixture());
    spec.aux_fixture = Some(aux_fixture(spec.signers));
}

/// A running cluster with a connected client.
pub struct TestCluster {
    pub cluster: Cluster,
    pub client: Client,
    pub dir: tempfile::TempDir,
}

/// Generates and starts an n-signer cluster and waits until aux info is ready.
pub async fn start(signers: u16, threshold: u16, faults: &[(&str, FaultInjection)]) -> TestCluster {
    start_with_pool(signers, threshold, faults, None).await
}

/// Like [`start`], with the coordinator's presignature pool target set.
pub async fn start_with_pool(
    signers: u16,
    threshold: u16,
    faults: &[(&str, FaultInjection)],
    pool: Option<u32>,
) -> TestCluster {
    let tc = launch(signers, threshold, faults, pool).await;
    tc.wait_aux_ready(Duration::from_secs(600)).await;
    tc
}

/// Like [`start`], with aux info imported from the fixture instead of a ceremony.
pub async fn start_from_fixture(
    signers: u16,
    threshold: u16,
    faults: &[(&str, FaultInjection)],
) -> TestCluster {
    let tc = launch_spec(signers, threshold, faults, None, true).await;
    tc.wait_aux_ready(Duration::from_secs(600)).await;
    tc
}

/// Like [`start_from_fixture`], with the coordinator's presignature pool target set.
pub async fn start_from_fixture_with_pool(signers: u16, threshold: u16, pool: u32) -> TestCluster {
    let tc = launch_spec(signers, threshold, &[], Some(pool), true).await;
    tc.wait_aux_ready(Duration::from_secs(600)).await;
    tc
}

/// Generates and starts a cluster without waiting for aux info (which its
/// signers generate in a real ceremony).
pub async fn launch(
    signers: u16,
    threshold: u16,
    faults: &[(&str, FaultInjection)],
    pool: Option<u32>,
) -> TestCluster {
    launch_spec(signers, threshold, faults, pool, false).await
}

async fn launch_spec(
    signers: u16,
    threshold: u16,
    faults: &[(&str, FaultInjection)],
    pool: Option<u32>,
    fixture: bool,
) -> TestCluster {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ClusterSpec::new(dir.path().join("cluster"));
    spec.signers = signers;
    spec.threshold = threshold;
    spec.base_port = custos_devkit::free_base_port();
    spec.primes_file = Some(primes_fixture());
    if fixture {
        use_fixtures(&mut spec);
    }
    for (node, fault) in faults {
        spec.fault_injection.insert((*node).to_owned(), *fault);
    }
    if let Some(pool) = pool {
        spec.presignature_pool = pool;
    }
    let layout = custos_devkit::generate(&spec).unwrap();
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

// ------------------------------------------------------------ withdrawals

use custos_devkit::client::connect_as;
use custos_proto::custody::{
    CreateKeyRequest, CreateWithdrawalRequest, GetWithdrawalRequest, SubmitApprovalRequest,
    Verdict, Withdrawal,
};

/// A whitelisted destination in the test and demo policies (`exchange-deposit`).
pub const WHITELISTED: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
/// The flow policy's cold-storage address (whitelisted; tests that need a
/// second whitelisted destination use it).
pub const COLD_STORAGE: &str = "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB";
/// A valid address that is in no address book.
pub const NOT_WHITELISTED: &str = "0x000000000000000000000000000000000000dEaD";
/// 1 ETH in wei.
pub const ETH: u128 = 1_000_000_000_000_000_000;

/// A cluster running a withdrawal policy, with a client per API role.
pub struct FlowCluster {
    pub tc: TestCluster,
    pub backend: Client,
    pub approver: Client,
    pub auditor: Client,
}

/// Presignatures per key in flow-test clusters (the pool itself is tested in `cluster.rs`).
pub const FLOW_TEST_POOL: u32 = 2;

/// The withdrawal-flow test policy (`tests/fixtures/flow-policy.toml`).
pub fn flow_policy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/flow-policy.toml")
}

/// Starts a 2-of-3 cluster with `policy`, raw-digest signing disabled unless
/// `raw_digest`, waits for aux info and creates wallet `wallet` (ethereum).
pub async fn start_flow(
    policy: &std::path::Path,
    raw_digest: bool,
    wallets: &[&str],
) -> FlowCluster {
    start_flow_on(policy, raw_digest, wallets, FlowSettings::default()).await
}

/// What a flow cluster may change from [`start_flow`]'s defaults.
#[derive(Clone, Copy, Debug, Default)]
pub struct FlowSettings<'a> {
    /// The coordinator's database (e.g. a fresh PostgreSQL database) instead
    /// of its SQLite file.
    pub database_url: Option<&'a str>,
    /// Whole tables appended to every signer's config (e.g. a `[risk]`
    /// table that differs from the coordinator's).
    pub signer_toml: &'a str,
    /// The coordinator's presignature pool target per key instead of
    /// [`FLOW_TEST_POOL`].
    pub presignature_pool: Option<u32>,
    /// Whole tables appended to the coordinator's config (e.g. `[limits]`).
    pub coordinator_toml: &'a str,
    /// The admins' recovery key for every signer's `[recovery] recipient`.
    pub recovery_recipient: Option<&'a str>,
    /// Where each process runs ([`ClusterSpec::placements`]), e.g. each in
    /// its own network namespace ([`netns::Netns::placements`]).
    pub placements: Option<&'a std::collections::BTreeMap<String, custos_devkit::Placement>>,
    /// Top-level keys put before the first table of the coordinator's
    /// config (replacing generated ones; e.g. `session_timeout_secs = 20`).
    pub coordinator_keys: &'a str,
    /// Top-level keys put before the first table of every signer's config
    /// (replacing the generated ones, e.g. `session_timeout_secs`).
    pub signer_keys: &'a str,
}

/// Puts `keys` (top-level `key = value` lines) before the first table of
/// the config file at `path`, replacing the file's own top-level lines of
/// those keys.
fn prepend_toml(path: &std::path::Path, keys: &str) {
    if keys.is_empty() {
        return;
    }
    let key_of = |l: &str| l.split('=').next().unwrap_or_default().trim().to_owned();
    let ours: Vec<String> = keys.lines().map(key_of).collect();
    let cfg = std::fs::read_to_string(path).unwrap();
    let mut out = format!("{}\n", keys.trim_end());
    let mut top = true;
    for line in cfg.lines() {
        top &= !line.trim_start().starts_with('[');
        if !(top && line.contains('=') && ours.contains(&key_of(line))) {
            out.push_str(line);
            out.push('\n');
        }
    }
    std::fs::write(path, out).unwrap();
}

/// Appends `toml` (whole tables) to the config file at `path`.
fn append_toml(path: &std::path::Path, toml: &str) {
    if toml.is_empty() {
        return;
    }
    let mut cfg = std::fs::read_to_string(path).unwrap();
    cfg.push('\n');
    cfg.push_str(toml);
    cfg.push('\n');
    std::fs::write(path, cfg).unwrap();
}

/// The spec of a flow cluster in `dir` (`<dir>/cluster`), on the default
/// base port: [`start_flow_on`] picks a free one; regenerating a running
/// cluster's files takes its layout's `base_port`.
pub fn flow_spec(
    dir: &std::path::Path,
    policy: &std::path::Path,
    raw_digest: bool,
    settings: FlowSettings<'_>,
) -> ClusterSpec {
    let mut spec = ClusterSpec::new(dir.join("cluster"));
    use_fixtures(&mut spec);
    // Flow tests sign a few withdrawals per wallet: a small pool keeps the
    // background presignature refills off the shared 2 cores.
    spec.presignature_pool = settings.presignature_pool.unwrap_or(FLOW_TEST_POOL);
    spec.policy = Some(policy.to_path_buf());
    spec.raw_digest = raw_digest;
    spec.bin_dir = Some(bin_dir());
    spec.recovery_recipient = settings.recovery_recipient.map(str::to_owned);
    if let Some(p) = settings.placements {
        spec.placements = p.clone();
    }
    spec
}

/// Like [`start_flow`], with `settings`.
pub async fn start_flow_on(
    policy: &std::path::Path,
    raw_digest: bool,
    wallets: &[&str],
    settings: FlowSettings<'_>,
) -> FlowCluster {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = flow_spec(dir.path(), policy, raw_digest, settings);
    spec.base_port = custos_devkit::free_base_port();
    let layout = custos_devkit::generate(&spec).unwrap();
    if let Some(url) = settings.database_url {
        prepend_toml(
            &layout.coordinator.config,
            &format!("database_url = {url:?}"),
        );
    }
    prepend_toml(&layout.coordinator.config, settings.coordinator_keys);
    for s in &layout.signers {
        prepend_toml(&s.config, settings.signer_keys);
        append_toml(&s.config, settings.signer_toml);
    }
    append_toml(&layout.coordinator.config, settings.coordinator_toml);
    let opts = StartOptions::default().timeout(Duration::from_secs(60));
    let tc = start_layout(dir, layout, opts).await;
    let layout = tc.cluster.layout().clone();
    for w in wallets {
        tc.client
            .clone()
            .create_key(CreateKeyRequest {
                key_id: (*w).to_owned(),
                chain: "ethereum".into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    FlowCluster {
        backend: connect_as(&layout, "payments-backend").await.unwrap(),
        approver: connect_as(&layout, "approver-cli").await.unwrap(),
        auditor: connect_as(&layout, "auditor").await.unwrap(),
        tc,
    }
}

/// The payments backend's request key in the flow policy
/// (`[[request_keys]]`): seed 0x42 repeated, a TEST KEY.
pub fn request_key() -> custos_policy::SecretKey {
    custos_policy::SecretKey::from_seed(&custos_policy::Zeroizing::new([0x42; 32]))
}

/// A CreateWithdrawal request for ETH, signed with [`request_key`] as
/// `payments-backend` (policies without request keys ignore the signature).
pub fn withdrawal_req(key: &str, wallet: &str, to: &str, amount: u128) -> CreateWithdrawalRequest {
    withdrawal_req_from(key, wallet, "", to, amount)
}

/// [`withdrawal_req`] spending from the wallet's derived address at
/// `source_path` (empty: the wallet's own address), the path signed too.
pub fn withdrawal_req_from(
    key: &str,
    wallet: &str,
    source_path: &str,
    to: &str,
    amount: u128,
) -> CreateWithdrawalRequest {
    let request_signature = custos_policy::RequestStatement {
        client: custos_devkit::BACKEND_CLIENT.to_owned(),
        idempotency_key: key.to_owned(),
        wallet: wallet.to_owned(),
        asset: "ETH".into(),
        destination: custos_policy::canonical_destination("ethereum", to),
        amount,
        source_path: source_path.to_owned(),
    }
    .sign(&request_key());
    CreateWithdrawalRequest {
        idempotency_key: key.to_owned(),
        wallet: wallet.to_owned(),
        asset: "ETH".into(),
        destination: to.to_owned(),
        amount: amount.to_string(),
        request_signature,
        source_path: source_path.to_owned(),
        ..Default::default()
    }
}

/// The withdrawal `id`, as `client` sees it.
pub async fn withdrawal(client: &Client, id: &str) -> Withdrawal {
    client
        .clone()
        .get_withdrawal(GetWithdrawalRequest { id: id.to_owned() })
        .await
        .unwrap()
        .into_inner()
}

/// The public key of wallet key `key_id` (SEC1 bytes).
pub async fn wallet_public_key(client: &Client, key_id: &str) -> Vec<u8> {
    client
        .clone()
        .get_key(custos_proto::custody::GetKeyRequest {
            key_id: key_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .public_key
}

/// Every withdrawal `client` may see.
pub async fn all_withdrawals(client: &Client) -> Vec<Withdrawal> {
    listed(
        client,
        custos_proto::custody::ListWithdrawalsRequest::default(),
    )
    .await
}

/// Every withdrawal `client` may see that `filter` selects (all pages).
pub async fn listed(
    client: &Client,
    filter: custos_proto::custody::ListWithdrawalsRequest,
) -> Vec<Withdrawal> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .clone()
            .list_withdrawals(custos_proto::custody::ListWithdrawalsRequest {
                page_size: 500,
                page_token: token,
                ..filter.clone()
            })
            .await
            .unwrap()
            .into_inner();
        out.extend(page.withdrawals);
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

/// Polls until the withdrawal is in one of `states` (panics on a terminal
/// state not in the list, or after `limit`).
pub async fn wait_state(client: &Client, id: &str, states: &[&str], limit: Duration) -> Withdrawal {
    let started = Instant::now();
    let terminal = [
        "blocked",
        "signed",
        "rejected",
        "cancelled",
        "expired",
        "failed",
    ];
    loop {
        let w = client
            .clone()
            .get_withdrawal(GetWithdrawalRequest { id: id.to_owned() })
            .await
            .unwrap()
            .into_inner();
        if states.contains(&w.state.as_str()) {
            return w;
        }
        assert!(
            !terminal.contains(&w.state.as_str()),
            "withdrawal {id} ended {} ({}), expected {states:?}; signer notes: {:?}",
            w.state,
            w.reason,
            w.signer_notes
        );
        assert!(
            started.elapsed() < limit,
            "withdrawal {id} still {} after {limit:?}, expected {states:?}; notes: {:?}",
            w.state,
            w.signer_notes
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A demo approver's key (`examples/keys/<who>.pem`).
pub fn approver_key(who: &str) -> custos_policy::SecretKey {
    let pem = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../examples/keys/{who}.pem")),
    )
    .unwrap();
    custos_policy::SecretKey::from_pem(&pem).unwrap()
}

/// Admin signatures (`*.sigs.json`) over the policy `document` by the demo
/// admins `by` (`admin1`, `admin2`: the devkit cluster's admin set needs both).
pub fn admin_signatures(document: &[u8], by: &[&str]) -> Vec<u8> {
    let mut sigs =
        custos_policy::BundleSignatures::new(custos_policy::PolicyHash::of_document(document));
    for who in by {
        sigs.sign(&approver_key(who));
    }
    serde_json::to_vec(&sigs).unwrap()
}

/// Signs `w`'s statement as `who` with `verdict` and submits it.
pub async fn submit_verdict(
    approver: &Client,
    w: &Withdrawal,
    who: &str,
    verdict: custos_policy::Verdict,
    reason: &str,
) -> Result<Withdrawal, tonic::Status> {
    let statement = custos_policy::ApprovalStatement::decode(&w.statement).unwrap();
    let a = custos_policy::Approval::sign(&statement, verdict, who, &approver_key(who)).unwrap();
    let v = match verdict {
        custos_policy::Verdict::Approve => Verdict::Approve,
        custos_policy::Verdict::Reject => Verdict::Reject,
        custos_policy::Verdict::Cancel => Verdict::Cancel,
    };
    approver
        .clone()
        .submit_approval(SubmitApprovalRequest {
            withdrawal_id: w.id.clone(),
            approver: who.to_owned(),
            verdict: v as i32,
            signature: a.signature,
            reason: reason.to_owned(),
            fee_bump_statement: Vec::new(),
            webauthn: None,
        })
        .await
        .map(|r| r.into_inner())
}

/// Approves `w` as `who`.
pub async fn approve(approver: &Client, w: &Withdrawal, who: &str) -> Withdrawal {
    submit_verdict(approver, w, who, custos_policy::Verdict::Approve, "")
        .await
        .unwrap()
}

/// Like [`start_flow`], for benchmarks: the coordinator keeps `pool`
/// presignatures per key, and `risk_toml` (a `[risk]` table) is appended to
/// the coordinator's and every signer's config before the cluster starts
/// (signers score risk themselves, with the same model).
pub async fn start_flow_tuned(
    policy: &std::path::Path,
    wallets: &[&str],
    pool: u32,
    risk_toml: &str,
) -> FlowCluster {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ClusterSpec::new(dir.path().join("cluster"));
    spec.base_port = custos_devkit::free_base_port();
    spec.primes_file = Some(primes_fixture());
    spec.policy = Some(policy.to_path_buf());
    spec.raw_digest = false;
    spec.presignature_pool = pool;
    spec.bin_dir = Some(bin_dir());
    let layout = custos_devkit::generate(&spec).unwrap();
    append_toml(&layout.coordinator.config, risk_toml);
    for s in &layout.signers {
        append_toml(&s.config, risk_toml);
    }
    let opts = StartOptions::default().timeout(Duration::from_secs(60));
    let tc = start_layout(dir, layout, opts).await;
    let layout = tc.cluster.layout().clone();
    for w in wallets {
        tc.client
            .clone()
            .create_key(CreateKeyRequest {
                key_id: (*w).to_owned(),
                chain: "ethereum".into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    FlowCluster {
        backend: connect_as(&layout, "payments-backend").await.unwrap(),
        approver: connect_as(&layout, "approver-cli").await.unwrap(),
        auditor: connect_as(&layout, "auditor").await.unwrap(),
        tc,
    }
}

/// A signer control client.
pub type SignerClient =
    custos_proto::signer::signer_control_client::SignerControlClient<tonic::transport::Channel>;

/// The coordinator's TLS client key as the running coordinator holds it:
/// its first start sealed the file with the dev cluster's log-key sealer,
/// which an attacker on its host (or this test) opens with the passphrase
/// file beside it.
pub fn coordinator_client_key(layout: &ClusterLayout) -> zeroize::Zeroizing<Vec<u8>> {
    let c = &layout.coordinator;
    let bytes = std::fs::read(&c.client_key).unwrap();
    if !bytes.starts_with(custos_hsm::blob::MAGIC) {
        return zeroize::Zeroizing::new(bytes);
    }
    let pass = custos_hsm::Passphrase::from_file(&c.data_dir.join("log-key.pass")).unwrap();
    let sealer = custos_hsm::SoftwareSealer::open(&c.data_dir, &pass, false).unwrap();
    let (key, _) = custos_hsm::open_key_file(
        &sealer,
        "coordinator",
        "tls-client-key",
        &c.client_key,
        64 * 1024,
        false,
    )
    .unwrap();
    key
}

/// SignerControl clients authenticated with the coordinator's own mTLS
/// identity, by node id: what an attacker who owns the coordinator host has.
pub async fn coordinator_signer_clients(layout: &ClusterLayout) -> Vec<(String, SignerClient)> {
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
    let ca = Certificate::from_pem(std::fs::read(&layout.ca_cert).unwrap());
    let id = Identity::from_pem(
        std::fs::read(&layout.coordinator.client_cert).unwrap(),
        coordinator_client_key(layout).as_slice(),
    );
    let mut out = Vec::new();
    for s in &layout.signers {
        let tls = ClientTlsConfig::new()
            .ca_certificate(ca.clone())
            .identity(id.clone())
            .domain_name(s.node_id.clone());
        let ch = Channel::from_shared(s.control_endpoint.clone())
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        out.push((s.node_id.clone(), SignerClient::new(ch)));
    }
    out
}

/// The decoded audit log entries (up to the latest checkpoint).
pub async fn log_entries(client: &mut custos_devkit::client::Client) -> Vec<custos_audit::Entry> {
    use custos_proto::custody::{GetCheckpointRequest, GetLogEntryRequest};
    let size = client
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .unwrap()
        .into_inner()
        .size;
    let mut out = Vec::new();
    for index in 0..size {
        let e = client
            .get_log_entry(GetLogEntryRequest { index })
            .await
            .unwrap()
            .into_inner();
        out.push(custos_audit::Entry::decode(&e.entry).unwrap());
    }
    out
}

/// What the ledger holds of `asset` from the outside world for `wallet`
/// (its deposits minus what it paid out), base units.
pub fn deposited(layout: &ClusterLayout, wallet: &str, asset: &str) -> i128 {
    external_balances(&layout.dir, wallet)
        .get(asset)
        .map_or(0, |b| -b.parse::<i128>().unwrap())
}

/// Waits (30 s at most) until [`deposited`] is `want`; panics naming `what`.
pub async fn wait_deposited(
    layout: &ClusterLayout,
    wallet: &str,
    asset: &str,
    want: i128,
    what: &str,
) {
    let started = Instant::now();
    while deposited(layout, wallet, asset) != want {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what}: {} {asset} deposited into {wallet}, want {want}",
            deposited(layout, wallet, asset)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Polls the log (up to its latest checkpoint) from entry `from` on until
/// an entry's body satisfies `wanted`; returns that body (panics after
/// `limit`, naming `what`). Reads each entry once and waits out the API's
/// rate limit, so it can poll for long.
pub async fn wait_for_entry(
    client: &mut custos_devkit::client::Client,
    from: u64,
    limit: Duration,
    what: &str,
    wanted: impl Fn(&custos_audit::EntryBody) -> bool,
) -> custos_audit::EntryBody {
    use custos_proto::custody::{GetCheckpointRequest, GetLogEntryRequest};
    let started = Instant::now();
    let mut next = from;
    loop {
        assert!(
            started.elapsed() < limit,
            "no {what} in the log after {limit:?}"
        );
        let size = match client.get_checkpoint(GetCheckpointRequest {}).await {
            Ok(c) => c.into_inner().size,
            Err(s) if s.code() == tonic::Code::ResourceExhausted => 0,
            Err(s) => panic!("{s}"),
        };
        while next < size {
            match client
                .get_log_entry(GetLogEntryRequest { index: next })
                .await
            {
                Ok(e) => {
                    let body = custos_audit::Entry::decode(&e.into_inner().entry)
                        .unwrap()
                        .body;
                    if wanted(&body) {
                        return body;
                    }
                    next += 1;
                }
                Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(s) => panic!("{s}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A deposit credit as a step saw it.
pub struct SeenCredit<'a> {
    /// The wallet credited.
    pub wallet: &'a str,
    /// Its asset.
    pub asset: &'a str,
    /// Base units.
    pub amount: i128,
    /// Its ledger reference.
    pub reference: &'a str,
    /// The block it was credited in.
    pub block_hash: &'a str,
}

/// Waits until `credit` is reversed: the wallet's deposits back to `before`,
/// the reversal counter one above `reversed_before`, the kind 26 entry (from
/// log entry `from` on) and a `deposit.reversed` event.
pub async fn wait_reversed(
    fc: &FlowCluster,
    from: u64,
    credit: &SeenCredit<'_>,
    before: i128,
    reversed_before: f64,
) {
    let layout = fc.tc.cluster.layout();
    wait_deposited(layout, credit.wallet, credit.asset, before, "reversed").await;
    assert_eq!(
        metric(
            layout.coordinator.metrics_listen,
            "custos_deposits_reversed_total"
        ),
        reversed_before + 1.0
    );
    wait_for_entry(
        &mut fc.auditor.clone(),
        from,
        Duration::from_secs(30),
        "deposit_reversed",
        |b| {
            matches!(b, custos_audit::EntryBody::DepositReversed { reference, block_hash, amount, .. }
                if reference == credit.reference && block_hash == credit.block_hash
                    && *amount == credit.amount.to_string())
        },
    )
    .await;
    let reversed = outbox_payloads(layout, "deposit.reversed").await;
    assert!(
        reversed
            .iter()
            .any(|p| p["reference"] == credit.reference && p["wallet"] == credit.wallet),
        "{reversed:?}"
    );
}

/// Waits until `wallet` holds `want` of `asset` deposited again and the log
/// (from entry `from` on) has the credit under `reference` (a generation
/// after a reversal: `<reference>#1`); returns its entry's block number and
/// hash.
pub async fn wait_credited_again(
    fc: &FlowCluster,
    from: u64,
    (wallet, asset): (&str, &str),
    want: i128,
    reference: &str,
) -> (u64, String) {
    wait_deposited(
        fc.tc.cluster.layout(),
        wallet,
        asset,
        want,
        "credited again",
    )
    .await;
    let entry = wait_for_entry(
        &mut fc.auditor.clone(),
        from,
        Duration::from_secs(30),
        "deposit_credited again",
        |b| matches!(b, custos_audit::EntryBody::DepositCredited { reference: r, .. } if r == reference),
    )
    .await;
    match entry {
        custos_audit::EntryBody::DepositCredited {
            block_number,
            block_hash,
            ..
        } => (block_number, block_hash),
        other => panic!("{other:?}"),
    }
}

/// After more blocks: `wallet` still holds `want` of `asset` deposited, and
/// the deposits whose references start with `tx` (one transaction's) were
/// announced credited exactly twice (before and after a reversal).
pub async fn assert_credited_twice_in_all(
    layout: &ClusterLayout,
    wallet: &str,
    asset: &str,
    want: i128,
    tx: &str,
) {
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(deposited(layout, wallet, asset), want, "credited twice");
    let credited = outbox_payloads(layout, "deposit.credited").await;
    let of_tx = credited
        .iter()
        .filter(|p| p["reference"].as_str().is_some_and(|r| r.starts_with(tx)))
        .count();
    assert_eq!(of_tx, 2, "{credited:?}");
}

/// The payloads of the coordinator's outbox events of `event_type` (its
/// SQLite database), oldest first.
pub async fn outbox_payloads(layout: &ClusterLayout, event_type: &str) -> Vec<serde_json::Value> {
    let url = coordinator_sqlite_url(layout);
    let pool = custos_service::db::Db::connect(&url, 1).await.unwrap().pool;
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT payload FROM outbox WHERE event_type = $1 ORDER BY id")
            .bind(event_type)
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    rows.iter()
        .map(|(p,)| serde_json::from_str(p).unwrap())
        .collect()
}

/// A gauge or counter from a daemon's `/metrics` (its metrics listener,
/// plain HTTP on loopback).
pub fn metric(http: std::net::SocketAddr, name: &str) -> f64 {
    metric_if_any(http, name).unwrap_or_else(|| panic!("no metric {name} at {http}"))
}

/// Like [`metric`], `None` when the daemon does not export `name` (an
/// older build compared in a benchmark).
pub fn metric_if_any(http: std::net::SocketAddr, name: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&http, Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    body.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
            .map(|v| v.trim().parse::<f64>().unwrap())
    })
}

/// CPU time (user + system) a process has used so far, from `/proc/<pid>/stat`.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // The kernel's USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

// ------------------------------------------------------------ plain helpers

/// `GET path` on a plain HTTP listener (`/healthz`, `/metrics`), blocking:
/// (status, body).
pub fn http_get_blocking(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    // A daemon moving from its sealed listener to its own one is briefly
    // not listening, or resets a connection the closing listener had taken:
    // retry the whole request for a while.
    let started = std::time::Instant::now();
    let text = loop {
        let attempt = std::net::TcpStream::connect(addr).and_then(|mut s| {
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )?;
            let mut text = String::new();
            s.read_to_string(&mut text)?;
            Ok(text)
        });
        match attempt {
            Ok(text) => break text,
            Err(e) if started.elapsed() > Duration::from_secs(10) => panic!("{addr}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (text[9..12].parse().unwrap(), body)
}

/// Runs `custos unseal <args>` with `stdin` as its standard input: (exit
/// success, stdout and stderr together, stdout alone).
pub fn unseal_cli(args: &[&str], stdin: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(bin_dir().join("custos"))
        .arg("unseal")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let all = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.success(), all, stdout)
}

/// A wallet's ledger balances of kind `external` (what came in from
/// outside, negative; what went out, positive) by asset, read with
/// `custos ledger balances` from the dev cluster in `dir`.
pub fn external_balances(
    dir: &std::path::Path,
    wallet: &str,
) -> std::collections::BTreeMap<String, String> {
    let out = std::process::Command::new(bin_dir().join("custos"))
        .args([
            "ledger",
            "balances",
            "--wallet",
            wallet,
            "--json",
            "--cluster",
        ])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["balances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["kind"] == "external")
        .map(|b| {
            (
                b["asset"].as_str().unwrap().to_owned(),
                b["amount"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The URL of a dev cluster coordinator's own SQLite database.
pub fn coordinator_sqlite_url(layout: &ClusterLayout) -> String {
    format!(
        "sqlite://{}",
        layout.coordinator.data_dir.join("coordinator.db").display()
    )
}

/// A software passkey: a P-256 key that answers `navigator.credentials.get()`
/// as a browser does (authenticatorData, clientDataJSON, DER signature), for
/// RP ID `custos.test`. TEST KEYS from public seeds.
pub struct SoftPasskey {
    key: p256::ecdsa::SigningKey,
    id: Vec<u8>,
    /// The sign counter of the next assertion, minus one.
    pub counter: u32,
}

/// The flow policy's passkey origin and RP ID.
pub const PASSKEY_ORIGIN: &str = "https://custos.test";

/// Flags of an assertion: user present and user verified.
pub const UP_UV: u8 = 0x05;

impl SoftPasskey {
    /// The passkey of the flow policy's approver `who` (`frank`, `grace`).
    pub fn of(who: &str) -> Self {
        let seed = match who {
            "frank" => 0xf1,
            _ => 0xf2,
        };
        Self {
            key: p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap(),
            id: vec![seed; 16],
            counter: 0,
        }
    }

    /// Signs an assertion over `challenge` for `origin` with `flags`, the
    /// counter one above the last.
    pub fn assert(
        &mut self,
        challenge: &[u8],
        origin: &str,
        flags: u8,
    ) -> custos_policy::PasskeyAssertion {
        use p256::ecdsa::signature::Signer;
        use sha2::Digest;
        self.counter += 1;
        let mut ad = sha2::Sha256::digest(b"custos.test").to_vec();
        ad.push(flags);
        ad.extend_from_slice(&self.counter.to_be_bytes());
        let challenge = base64_url(challenge);
        let cd = format!(
            r#"{{"type":"webauthn.get","challenge":"{challenge}","origin":"{origin}","crossOrigin":false}}"#
        );
        let mut msg = ad.clone();
        msg.extend_from_slice(&sha2::Sha256::digest(cd.as_bytes()));
        let sig: p256::ecdsa::Signature = self.key.sign(&msg);
        custos_policy::PasskeyAssertion::from_bytes(
            &self.id,
            &ad,
            cd.as_bytes(),
            sig.to_der().as_bytes(),
        )
    }

    /// The approval of `who` over `statement` with this passkey.
    pub fn approve(
        &mut self,
        who: &str,
        statement: &custos_policy::ApprovalStatement,
        origin: &str,
        flags: u8,
    ) -> custos_policy::Approval {
        let challenge =
            custos_policy::passkey_challenge(statement, custos_policy::Verdict::Approve).unwrap();
        custos_policy::Approval::passkey(
            who,
            custos_policy::Verdict::Approve,
            self.assert(&challenge, origin, flags),
        )
    }
}

/// Unpadded base64url, as browsers encode the challenge.
fn base64_url(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Submits a passkey approval to the coordinator over gRPC, as the approval
/// app will (raw assertion bytes).
pub async fn submit_passkey(
    approver: &Client,
    w: &Withdrawal,
    a: &custos_policy::Approval,
) -> Result<Withdrawal, tonic::Status> {
    let p = a.webauthn.as_ref().unwrap();
    let raw = |s: &str| -> Vec<u8> {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .unwrap()
    };
    approver
        .clone()
        .submit_approval(SubmitApprovalRequest {
            withdrawal_id: w.id.clone(),
            approver: a.approver.clone(),
            verdict: Verdict::Approve as i32,
            signature: String::new(),
            reason: String::new(),
            fee_bump_statement: Vec::new(),
            webauthn: Some(custos_proto::custody::WebAuthnAssertion {
                credential_id: raw(&p.credential_id),
                authenticator_data: raw(&p.authenticator_data),
                client_data_json: raw(&p.client_data_json),
                signature: raw(&p.signature),
            }),
        })
        .await
        .map(|r| r.into_inner())
}

/// What a rogue coordinator sends to make the signers sign `w` from the
/// derived `path` while claiming `address` as its source: the withdrawal
/// with that source and its intent digest recomputed, as an authorization.
pub fn claimed_source(
    mut w: custos_policy::Withdrawal,
    path: &str,
    address: &str,
) -> custos_proto::signer::WithdrawalAuthorization {
    w.source = Some(custos_policy::DerivedSource {
        path: path.into(),
        address: address.into(),
    });
    w.tx_digest = hex::encode(custos_policy::intent_digest(&w));
    custos_proto::signer::WithdrawalAuthorization {
        withdrawal_json: serde_json::to_vec(&w).expect("a withdrawal serialises"),
        ..Default::default()
    }
}
