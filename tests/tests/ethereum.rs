//! Ethereum end to end (issue #7): a real anvil node and a real cluster; the
//! coordinator builds EIP-1559 transactions at signing time, signers parse and
//! check them, the coordinator broadcasts and tracks confirmations.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use custos_chains::evm::rpc::{BlockTag, EvmRpc};
use custos_chains::evm::tx::decode_unsigned_transfer;
use custos_chains::{Address, B256, U256};
use custos_devkit::client::connect_as;
use custos_devkit::{ClusterSpec, StartOptions};
use custos_proto::custody::{
    CreateKeyRequest, DeriveAddressRequest, GetKeyRequest, GetWithdrawalRequest,
    ListDerivedAddressesRequest, Withdrawal,
};
use custos_tests::anvil::{Anvil, rpc};
use custos_tests::eth::{CHAIN, CHAIN_ID, DEV_0, MINI, addr, dev_send, fund};
use custos_tests::*;
use serde_json::json;

const ETH: u128 = 1_000_000_000_000_000_000;
/// Anvil dev accounts 1..3 (in the policy's address book).
const PAYEE_1: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
const PAYEE_2: &str = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC";
const PAYEE_3: &str = "0x90F79bf6EB2c4f870365E785982E1f101E93b906";

/// Deploys MiniToken from dev account 0 (its first transaction: at [`MINI`]).
async fn deploy_mini(rpc: &EvmRpc) -> Address {
    let code = include_str!("../../chains/tests/fixtures/MiniToken.bin.hex").trim();
    let r = dev_send(
        rpc,
        json!({ "from": DEV_0, "data": format!("0x{code}"), "gas": "0x100000" }),
    )
    .await;
    assert!(r.success);
    let token = r.contract_address.unwrap();
    assert_eq!(token, addr(MINI));
    token
}

async fn mini_transfer(rpc: &EvmRpc, to: Address, amount: U256) {
    let data = custos_chains::evm::tx::erc20::transfer_calldata(to, amount);
    let r = dev_send(
        rpc,
        json!({ "from": DEV_0, "to": MINI, "data": format!("0x{}", hex::encode(&data)), "gas": "0x30000" }),
    )
    .await;
    assert!(r.success);
}

/// Mines `blocks` blocks now.
async fn mine(rpc: &EvmRpc, blocks: u64) {
    rpc.request("anvil_mine", json!([format!("0x{blocks:x}")]))
        .await
        .unwrap();
}

/// Turns anvil's mining on each transaction on or off.
async fn automine(rpc: &EvmRpc, on: bool) {
    rpc.request("evm_setAutomine", json!([on])).await.unwrap();
}

/// Waits until the withdrawal is broadcast and the node has its current
/// transaction in its pool; returns the withdrawal then.
async fn wait_in_pool(fc: &FlowCluster, rpc: &EvmRpc, id: &str) -> Withdrawal {
    wait_for(fc, id, "broadcast", Duration::from_secs(120)).await;
    let started = Instant::now();
    loop {
        let w = get(fc, id).await;
        if let Ok(hash) = w.tx_hash.parse::<B256>()
            && rpc.transaction_exists(hash).await.unwrap()
        {
            return w;
        }
        assert_eq!(w.state, "broadcast", "{id}: {:?}", w.signer_notes);
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{id}: transaction never reached the node; notes {:?}",
            w.signer_notes
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls the withdrawal until `check` holds (panics after `limit`).
async fn wait_until(
    fc: &FlowCluster,
    id: &str,
    limit: Duration,
    what: &str,
    check: impl Fn(&Withdrawal) -> bool,
) -> Withdrawal {
    let started = Instant::now();
    loop {
        let w = get(fc, id).await;
        if check(&w) {
            return w;
        }
        assert!(
            started.elapsed() < limit,
            "{id}: not {what} after {limit:?}: state {} notes {:?}",
            w.state,
            w.signer_notes
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A 2-of-3 cluster on `eth-policy.toml` with anvil configured, and wallets
/// on chain "anvil"; returns the cluster and each wallet's address.
async fn start_eth(anvil: &Anvil, wallets: &[&str]) -> (FlowCluster, Vec<Address>) {
    start_eth_on(anvil, wallets, None).await
}

/// [`start_eth`] with the coordinator on the database at `database_url`.
async fn start_eth_on(
    anvil: &Anvil,
    wallets: &[&str],
    database_url: Option<&str>,
) -> (FlowCluster, Vec<Address>) {
    start_eth_with(anvil, wallets, database_url, "").await
}

/// [`start_eth_on`] with more `[[chains]]` settings.
async fn start_eth_with(
    anvil: &Anvil,
    wallets: &[&str],
    database_url: Option<&str>,
    chain_extra: &str,
) -> (FlowCluster, Vec<Address>) {
    start_eth_policy(anvil, wallets, database_url, chain_extra, None).await
}

/// The Ethereum test policy (`fixtures/eth-policy.toml`).
fn eth_policy_text() -> String {
    std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/eth-policy.toml"),
    )
    .unwrap()
}

/// [`start_eth_with`] on the policy document `policy_text` (default: the
/// Ethereum test policy).
async fn start_eth_policy(
    anvil: &Anvil,
    wallets: &[&str],
    database_url: Option<&str>,
    chain_extra: &str,
    policy_text: Option<&str>,
) -> (FlowCluster, Vec<Address>) {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("eth-policy.toml");
    std::fs::write(
        &policy,
        policy_text.map_or_else(eth_policy_text, str::to_owned),
    )
    .unwrap();
    let mut spec = ClusterSpec::new(dir.path().join("cluster"));
    spec.base_port = custos_devkit::free_base_port();
    custos_tests::use_fixtures(&mut spec);
    spec.presignature_pool = custos_tests::FLOW_TEST_POOL;
    spec.policy = Some(policy);
    spec.raw_digest = false;
    spec.bin_dir = Some(bin_dir());
    let layout = custos_devkit::generate(&spec).unwrap();
    custos_tests::eth::configure(&layout, &anvil.url, database_url, chain_extra, "", "");
    let opts = StartOptions::default().timeout(Duration::from_secs(60));
    let tc = start_layout(dir, layout, opts).await;
    let layout = tc.cluster.layout().clone();
    let mut addresses = Vec::new();
    for w in wallets {
        tc.client
            .clone()
            .create_key(CreateKeyRequest {
                key_id: (*w).to_owned(),
                chain: "anvil".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let key = tc
            .client
            .clone()
            .get_key(GetKeyRequest {
                key_id: (*w).to_owned(),
            })
            .await
            .unwrap()
            .into_inner();
        addresses.push(addr(&key.ethereum_address));
    }
    let fc = FlowCluster {
        backend: connect_as(&layout, "payments-backend").await.unwrap(),
        approver: connect_as(&layout, "approver-cli").await.unwrap(),
        auditor: connect_as(&layout, "auditor").await.unwrap(),
        tc,
    };
    (fc, addresses)
}

/// A withdrawal as the auditor reads it (every client's: the backend's, and
/// the admin's rotation sweeps).
async fn get(fc: &FlowCluster, id: &str) -> Withdrawal {
    fc.auditor
        .clone()
        .get_withdrawal(GetWithdrawalRequest { id: id.to_owned() })
        .await
        .unwrap()
        .into_inner()
}

/// Polls until `state` (panics on another end state or after `limit`).
async fn wait_for(fc: &FlowCluster, id: &str, state: &str, limit: Duration) -> Withdrawal {
    let started = Instant::now();
    loop {
        let w = get(fc, id).await;
        if w.state == state {
            return w;
        }
        assert!(
            ![
                "blocked",
                "rejected",
                "cancelled",
                "expired",
                "failed",
                "confirmed"
            ]
            .contains(&w.state.as_str()),
            "withdrawal {id} ended {} ({}), expected {state}; notes: {:?}",
            w.state,
            w.reason,
            w.signer_notes
        );
        assert!(
            started.elapsed() < limit,
            "withdrawal {id} still {} after {limit:?}, expected {state}; notes: {:?}",
            w.state,
            w.signer_notes
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create(
    fc: &FlowCluster,
    key: &str,
    wallet: &str,
    asset: &str,
    to: &str,
    amount: u128,
) -> Withdrawal {
    let mut req = withdrawal_req(key, wallet, to, amount);
    req.asset = asset.into();
    fc.backend
        .clone()
        .create_withdrawal(req)
        .await
        .unwrap()
        .into_inner()
}

/// Creates `n` ETH withdrawals from `w-many` to payee 3 at once (request
/// `i` of `amount(i)` wei); returns their ids in request order.
async fn create_concurrently(
    fc: &FlowCluster,
    prefix: &str,
    n: u128,
    amount: impl Fn(u128) -> u128,
) -> Vec<String> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let backend = fc.backend.clone();
            let mut req = withdrawal_req(&format!("{prefix}-{i}"), "w-many", PAYEE_3, amount(i));
            req.asset = "ETH".into();
            tokio::spawn(async move {
                backend
                    .clone()
                    .create_withdrawal(req)
                    .await
                    .unwrap()
                    .into_inner()
                    .id
            })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    ids
}

/// The confirmed transaction of a withdrawal: (hash, nonce, receipt).
async fn confirmed_tx(
    fc: &FlowCluster,
    rpc: &EvmRpc,
    id: &str,
) -> (B256, u64, custos_chains::evm::rpc::Receipt) {
    let w = wait_for(fc, id, "confirmed", Duration::from_secs(90)).await;
    let (_, decoded) = decode_unsigned_transfer(&w.unsigned_tx).unwrap();
    let hash = find_hash(&w).unwrap_or_else(|| panic!("no tx hash in {w:?}"));
    let receipt = rpc.transaction_receipt(hash).await.unwrap().unwrap();
    (hash, decoded.nonce, receipt)
}

/// The tx hash, recomputed from the withdrawal's signature and transaction
/// (the sender must recover to the transaction's own signer: decoded below).
fn find_hash(w: &Withdrawal) -> Option<B256> {
    let (unsigned, _) = decode_unsigned_transfer(&w.unsigned_tx).ok()?;
    let r: [u8; 32] = w.signature_r.as_slice().try_into().ok()?;
    let s: [u8; 32] = w.signature_s.as_slice().try_into().ok()?;
    let v = u8::try_from(w.recovery_id).ok()?;
    match custos_chains::evm::signature::assemble_signed(&unsigned, r, s, v, Address::ZERO) {
        Ok(signed) => Some(signed.hash),
        Err(custos_chains::ChainError::WrongSigner { recovered, .. }) => {
            custos_chains::evm::signature::assemble_signed(&unsigned, r, s, v, recovered)
                .ok()
                .map(|t| t.hash)
        }
        Err(_) => None,
    }
}

/// The tests that need the default configuration and kill nothing share one
/// anvil and one cluster (each on its own wallet, so nonces stay separate).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn default_configuration_on_one_cluster() {
    let anvil = Anvil::start().await;
    let rpc = rpc(&anvil.url);
    // First transaction of the dev account: the token address the config expects.
    let token = deploy_mini(&rpc).await;
    let (mut fc, wallets) = start_eth(
        &anvil,
        &["w-eth", "w-tok", "w-many", "w-dep", "w-hd", "w-rot"],
    )
    .await;
    deposits_are_credited_from_the_blocks(&fc, &rpc, wallets[3]).await;
    // Before any withdrawal: its rollback takes back its own block only.
    deposit_reorg::a_deposit_in_a_reverted_block_is_reversed_and_credited_again(
        &fc, &rpc, wallets[3],
    )
    .await;
    eth_and_erc20_withdrawals_through_the_full_flow(&fc, &rpc, token, wallets[0], wallets[1]).await;
    ten_concurrent_withdrawals_get_consecutive_nonces(&fc, &rpc, wallets[2]).await;
    onchain_transactions_match_the_log(&fc, &rpc, &anvil.url, wallets[2]).await;
    // After the on-chain count above: a derived address's transactions are
    // not the master address's nonces.
    withdrawal_from_a_derived_address(&fc, &rpc, &anvil.url, wallets[4]).await;
    rotation::a_key_rotated_by_sweep_is_emptied_and_retired(&mut fc, &rpc, token, wallets[5]).await;
    fc.tc.cluster.stop().await.unwrap();
}

/// HD-derived addresses (issue 19): a deposit address of wallet `w-hd` is
/// derived, recorded and listed (gRPC and `custos address`), a payment to
/// it is credited to the wallet's ledger account, and a withdrawal from it
/// (its path and address in the intent digest and a version-2 approval
/// statement, every signer deriving the child key itself from its own share
/// record) is signed, mined by anvil as sent from the derived address, and
/// replayed by `custos audit verify --policy`.
async fn withdrawal_from_a_derived_address(
    fc: &FlowCluster,
    rpc: &EvmRpc,
    url: &str,
    master: Address,
) {
    let derive = |index: u32, label: &str| {
        let mut backend = fc.backend.clone();
        let req = DeriveAddressRequest {
            wallet: "w-hd".into(),
            index,
            label: label.into(),
        };
        async move { backend.derive_address(req).await }
    };
    let d = derive(7, "customer-7").await.unwrap().into_inner();
    assert_eq!(
        (d.path.as_str(), d.index, d.chain.as_str()),
        ("m/0/7", 7, CHAIN)
    );
    let child = addr(&d.address);
    assert_ne!(child, master);
    // Idempotent; a second label for the index is refused; hardened refused.
    assert_eq!(derive(7, "").await.unwrap().into_inner(), d);
    let e = derive(7, "customer-8").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e}");
    let e = derive(1 << 31, "").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    let other = derive(8, "").await.unwrap().into_inner();
    let listed = fc
        .auditor
        .clone()
        .list_derived_addresses(ListDerivedAddressesRequest {
            wallet: "w-hd".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .addresses;
    assert_eq!(listed, vec![d.clone(), other]);
    let layout = fc.tc.cluster.layout();
    let out = std::process::Command::new(bin_dir().join("custos"))
        .args(["address", "list", "--wallet", "w-hd", "--json", "--cluster"])
        .arg(&layout.dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cli[0]["address"], json!(d.address), "{cli}");
    assert_eq!(cli[0]["label"], json!("customer-7"), "{cli}");

    // A deposit to the derived address is the wallet's.
    fund(rpc, child, 2 * ETH).await;
    let want: std::collections::BTreeMap<String, String> =
        [("ETH".to_owned(), format!("-{}", 2 * ETH))].into();
    let started = Instant::now();
    while external_balances(&layout.dir, "w-hd") != want {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "deposit to {} not credited to w-hd: {:?}",
            d.address,
            external_balances(&layout.dir, "w-hd")
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // A withdrawal from it: the node takes the transaction as the derived
    // address's (its signature recovers to it), at its own nonce 0.
    // Only a recorded (so logged) derived address may be a source.
    let e = fc
        .backend
        .clone()
        .create_withdrawal(withdrawal_req_from("hd-0", "w-hd", "m/0/9", PAYEE_3, 1))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    assert!(
        e.message()
            .contains("m/0/9 is not a derived address of wallet w-hd: derive it first"),
        "{e}"
    );
    let before = rpc.balance(addr(PAYEE_3)).await.unwrap();
    let req = withdrawal_req_from("hd-1", "w-hd", &d.path, PAYEE_3, ETH / 10);
    let w = fc
        .backend
        .clone()
        .create_withdrawal(req)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (w.source_path.as_str(), w.source_address.as_str()),
        ("m/0/7", d.address.as_str())
    );
    if !w.statement.is_empty() {
        let s = custos_policy::ApprovalStatement::decode(&w.statement).unwrap();
        assert_eq!(s.source.unwrap().address, d.address);
    }
    // A payout from a wallet without history may need the treasurers: they
    // approve the version-2 statement that names the source.
    if w.state == "awaiting_approvals" {
        approve(&fc.approver, &w, "alice").await;
        approve(&fc.approver, &w, "bob").await;
    }
    let (_, nonce, receipt) = confirmed_tx(fc, rpc, &w.id).await;
    assert!(receipt.success);
    assert_eq!(receipt.from, child);
    assert_eq!(nonce, 0);
    assert_eq!(
        rpc.balance(addr(PAYEE_3)).await.unwrap(),
        before + U256::from(ETH / 10)
    );
    assert_eq!(
        rpc.transaction_count(master, BlockTag::Latest)
            .await
            .unwrap(),
        0,
        "the master address sent nothing"
    );
    // Reconciled: the wallet's on-chain holdings count its derived
    // addresses too, where its deposit went and its payout came from.
    let started = Instant::now();
    loop {
        let out = std::process::Command::new(bin_dir().join("custos"))
            .args([
                "ledger",
                "reconcile",
                "--chain",
                CHAIN,
                "--json",
                "--cluster",
            ])
            .arg(&layout.dir)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let row = v["wallets"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["wallet"] == "w-hd").cloned())
            .unwrap_or_default();
        if row["matches"] == json!(true) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "w-hd does not reconcile: {row} ({})",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // A rogue coordinator (docs/SECURITY.md case 67) names path m/0/8 with
    // the address of m/0/7: every signer derives m/0/8 itself and refuses,
    // naming the path, what it derives and the address claimed, before it
    // reads anything else of the request.
    let mut rogue: custos_policy::Withdrawal =
        serde_json::from_slice(&policy_withdrawal_json(&get(fc, &w.id).await, ETH / 10)).unwrap();
    rogue.id = "hd-rogue".into();
    let authorization = custos_tests::claimed_source(rogue, "m/0/8", &d.address);
    let signers = rogue_clients(layout).await;
    let why = format!(
        "source path m/0/8 derives {}, not the source address {}",
        listed[1].address, d.address
    );
    for (node, c) in &signers {
        let e = c
            .clone()
            .register_quorum(authorization.clone())
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{node}: {e}");
        assert!(e.message().contains(&why), "{node}: {e}");
    }
    assert_eq!(
        refusals_saying(&signers, authorization, "w-hd", "ps-hd-rogue", &why).await,
        signers.len()
    );

    // The auditor's replay authorises it like every other signature, and
    // re-derives both logged addresses (and the approved source, if the
    // withdrawal needed approvals) from the key's logged public key and
    // chain code with its own BIP32.
    let policy = layout.dir.parent().unwrap().join("eth-policy.toml");
    custos_tests::audit::verify_policy_until(&layout.dir, &policy, |o| {
        custos_tests::audit::all_signatures_authorised(o)
            && o.stdout.contains("source path m/0/8 derives")
            && o.stdout
                .contains("addresses    2 derived; 2 re-derived from their key and chain code")
            // The deposits so far, the reorganised one among them, are in
            // the log, each reversal matching a credit.
            && deposits_logged(&o.stdout).is_some_and(|(credited, reversed)| {
                reversed >= 1 && credited > reversed
            })
    })
    .await;
    // The derived address's nonces are its own: the payout is its nonce 0
    // (found by the logged signature recovering to it), the master address
    // mined nothing.
    let rpc_arg = format!("{CHAIN}={url}");
    let trust = custos_tests::audit::trust_args(&layout.dir);
    let o = custos_tests::audit::export_and_verify(
        &layout.dir,
        &trust,
        &["--evm-rpc", rpc_arg.as_str()],
    );
    // (Not `o.ok`: the impersonated w-many transaction of an earlier step
    // stays outside the log.)
    for line in [
        format!(
            "on chain     {CHAIN} w-hd m/0/7 {}: 1 mined, 1 logged",
            d.address.to_lowercase()
        ),
        format!("on chain     {CHAIN} w-hd {master:#x}: 0 mined, 0 logged"),
    ] {
        assert!(o.stdout.contains(&line), "{line}\n{o}");
    }
}

/// The `deposits` line of `custos audit verify`: (credited, reversed).
fn deposits_logged(report: &str) -> Option<(u64, u64)> {
    let line = report.lines().find(|l| l.starts_with("deposits     "))?;
    let mut numbers = line
        .split_whitespace()
        .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok());
    Some((numbers.next()?, numbers.next()?))
}

/// Deposit detection on EVM chains (issue 19): ETH sent to a wallet and
/// ERC-20 `Transfer`s to it are read from anvil's blocks and credited to the
/// ledger once each, after the chain's confirmations; later scans credit
/// nothing twice.
async fn deposits_are_credited_from_the_blocks(fc: &FlowCluster, rpc: &EvmRpc, wallet: Address) {
    fund(rpc, wallet, 2 * ETH).await;
    fund(rpc, wallet, ETH / 4).await;
    mini_transfer(rpc, wallet, U256::from(5 * ETH)).await;
    let want: std::collections::BTreeMap<String, String> = [
        ("ETH".to_owned(), format!("-{}", 2 * ETH + ETH / 4)),
        ("MINI".to_owned(), format!("-{}", 5 * ETH)),
    ]
    .into();
    let started = Instant::now();
    while external_balances(&fc.tc.cluster.layout().dir, "w-dep") != want {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "deposits not credited: {:?}",
            external_balances(&fc.tc.cluster.layout().dir, "w-dep")
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    mine(rpc, 3).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        external_balances(&fc.tc.cluster.layout().dir, "w-dep"),
        want,
        "credited twice"
    );
    // One `deposit.credited` event each, in the outbox with the credit.
    let url = coordinator_sqlite_url(fc.tc.cluster.layout());
    let pool = custos_service::db::Db::connect(&url, 1).await.unwrap().pool;
    let events: Vec<(String,)> = sqlx::query_as(
        "SELECT payload FROM outbox WHERE event_type = 'deposit.credited' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let w_dep: Vec<serde_json::Value> = events
        .iter()
        .map(|(p,)| serde_json::from_str::<serde_json::Value>(p).unwrap())
        .filter(|p| p["wallet"] == "w-dep")
        .collect();
    assert_eq!(w_dep.len(), 3, "{w_dep:?}");
    assert!(
        w_dep
            .iter()
            .any(|p| p["asset"] == "MINI" && p["amount"] == (5 * ETH).to_string())
    );
}

/// `custos audit verify --evm-rpc` (docs/SECURITY.md case 47): every nonce
/// the wallets mined is a transaction the log prepared; a transaction sent
/// from a wallet's address outside the log (anvil's account impersonation
/// stands in for a signature made off the log) is named with its nonce.
async fn onchain_transactions_match_the_log(
    fc: &FlowCluster,
    rpc: &EvmRpc,
    url: &str,
    wallet: Address,
) {
    let layout = fc.tc.cluster.layout();
    let cluster = layout.dir.to_str().unwrap().to_owned();
    let bundle = layout.dir.join("onchain-bundle.json");
    let custos = |args: &[&str]| {
        let out = std::process::Command::new(bin_dir().join("custos"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, trust, err) = custos(&["audit", "keys", "--cluster", &cluster]);
    assert!(ok, "{err}");
    let verify = |chain: &str, extra: &[&str]| {
        let (ok, _, err) = custos(&[
            "audit",
            "export",
            "--cluster",
            &cluster,
            "--out",
            bundle.to_str().unwrap(),
        ]);
        assert!(ok, "{err}");
        let mut args = vec!["audit", "verify", bundle.to_str().unwrap()];
        args.extend(trust.split_whitespace());
        let rpc_arg = format!("{chain}={url}");
        args.extend(["--evm-rpc", rpc_arg.as_str()]);
        args.extend(extra);
        custos(&args)
    };
    // A misspelt chain is named, not reported as ten unlogged nonces.
    let (ok, out, err) = verify("ethereum", &[]);
    assert!(!ok, "{out}\n{err}");
    assert!(
        err.contains("the log names no withdrawal on chain \"ethereum\" (its chains: anvil)"),
        "{err}"
    );
    let (ok, out, err) = verify(CHAIN, &[]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("10 mined, 10 logged"), "{out}");

    let mined = rpc
        .transaction_count(wallet, BlockTag::Latest)
        .await
        .unwrap();
    rpc.request("anvil_impersonateAccount", json!([wallet]))
        .await
        .unwrap();
    let r = dev_send(
        rpc,
        json!({ "from": wallet, "to": PAYEE_3, "value": "0x1" }),
    )
    .await;
    assert!(r.success);
    let (ok, out, err) = verify(CHAIN, &[]);
    assert!(!ok, "{out}\n{err}");
    assert!(
        err.contains(&format!("nonce(s) [{mined}] have no logged transaction")),
        "{out}\n{err}"
    );
    // Scripts reading --json see the same verdict as the exit status.
    let (ok, out, err) = verify(CHAIN, &["--json"]);
    assert!(!ok, "{out}\n{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["ok"], json!(false), "{out}");
    assert_eq!(
        json["onchain_unlogged"].as_array().map(Vec::len),
        Some(1),
        "{out}"
    );
}

async fn eth_and_erc20_withdrawals_through_the_full_flow(
    fc: &FlowCluster,
    rpc: &EvmRpc,
    token: Address,
    w_eth: Address,
    w_tok: Address,
) {
    fund(rpc, w_eth, 5 * ETH).await;
    fund(rpc, w_tok, ETH).await;
    mini_transfer(rpc, w_tok, U256::from(500u64) * U256::from(ETH)).await;

    // 1.5 ETH needs two approvals; approvals bind the statement (intent + fee cap).
    let payee = addr(PAYEE_1);
    let before_payee = rpc.balance(payee).await.unwrap();
    let before_wallet = rpc.balance(w_eth).await.unwrap();
    let w = create(fc, "eth-1", "w-eth", "ETH", PAYEE_1, 3 * ETH / 2).await;
    let w = wait_for(fc, &w.id, "awaiting_approvals", Duration::from_secs(20)).await;
    assert!(w.unsigned_tx.is_empty(), "no transaction before signing");
    approve(&fc.approver, &w, "alice").await;
    approve(&fc.approver, &w, "bob").await;
    let (hash, nonce, receipt) = confirmed_tx(fc, rpc, &w.id).await;
    assert!(receipt.success);
    assert_eq!(receipt.from, w_eth);
    assert_eq!(nonce, 0);
    let amount = U256::from(3 * ETH / 2);
    assert_eq!(rpc.balance(payee).await.unwrap(), before_payee + amount);
    assert_eq!(
        rpc.balance(w_eth).await.unwrap(),
        before_wallet - amount - receipt.fee_paid_wei()
    );
    let done = get(fc, &w.id).await;
    assert!(done.unsigned_tx.len() > 10);
    println!("eth withdrawal {} → tx {hash:#x}", done.id);

    // ERC-20: 123 MINI to payee 2; balanceOf moves by exactly that.
    let payee2 = addr(PAYEE_2);
    let amount = U256::from(123u64) * U256::from(ETH);
    let w = create(fc, "tok-1", "w-tok", "MINI", PAYEE_2, 123 * ETH).await;
    let (_, _, receipt) = confirmed_tx(fc, rpc, &w.id).await;
    assert!(receipt.success);
    assert_eq!(receipt.to, Some(token));
    assert_eq!(rpc.erc20_balance(token, payee2).await.unwrap(), amount);
    assert_eq!(
        rpc.erc20_balance(token, w_tok).await.unwrap(),
        U256::from(500u64) * U256::from(ETH) - amount
    );
}

async fn ten_concurrent_withdrawals_get_consecutive_nonces(
    fc: &FlowCluster,
    rpc: &EvmRpc,
    wallet: Address,
) {
    fund(rpc, wallet, 5 * ETH).await;
    let before = rpc.balance(addr(PAYEE_3)).await.unwrap();
    let ids = create_concurrently(fc, "many", 10, |i| ETH / 100 + i).await;
    let mut nonces = Vec::new();
    let mut total = U256::ZERO;
    for (i, id) in ids.into_iter().enumerate() {
        let (_, nonce, receipt) = confirmed_tx(fc, rpc, &id).await;
        assert!(receipt.success);
        nonces.push(nonce);
        total += U256::from(ETH / 100 + i as u128);
    }
    nonces.sort_unstable();
    assert_eq!(
        nonces,
        (0..10).collect::<Vec<u64>>(),
        "consecutive, no gap, no duplicate"
    );
    assert_eq!(
        rpc.transaction_count(wallet, BlockTag::Latest)
            .await
            .unwrap(),
        10
    );
    assert_eq!(rpc.balance(addr(PAYEE_3)).await.unwrap(), before + total);
}

/// Approves `w` while the node is unreachable, then checks that signing
/// waits with a note naming the chain and nothing is built or signed.
async fn approve_while_node_is_down(fc: &FlowCluster, w: &Withdrawal) {
    approve(&fc.approver, w, "alice").await;
    approve(&fc.approver, w, "bob").await;
    let started = Instant::now();
    loop {
        let now = get(fc, &w.id).await;
        assert!(
            !["signed", "broadcast", "confirmed", "failed"].contains(&now.state.as_str()),
            "{now:?}"
        );
        if now.signer_notes.iter().any(|n| n.contains("chain anvil")) {
            assert_eq!(now.state, "signing");
            assert!(now.unsigned_tx.is_empty());
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{now:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // It keeps waiting (and retrying) while the node is away.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(get(fc, &w.id).await.state, "signing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn anvil_down_mid_flow_waits_with_a_note_and_completes() {
    let mut anvil = Anvil::start_persistent().await;
    let rpc = rpc(&anvil.url);
    let (fc, wallets) = start_eth(&anvil, &["w-down"]).await;
    fund(&rpc, wallets[0], 5 * ETH).await;
    // A hung node (SIGSTOP: connections accepted, no answer).
    let w = create(&fc, "down-1", "w-down", "ETH", PAYEE_1, 3 * ETH / 2).await;
    let w = wait_for(&fc, &w.id, "awaiting_approvals", Duration::from_secs(20)).await;
    anvil.freeze();
    approve_while_node_is_down(&fc, &w).await;
    anvil.thaw();
    let (_, nonce, receipt) = confirmed_tx(&fc, &rpc, &w.id).await;
    assert!(receipt.success);
    assert_eq!(nonce, 0);
    // A stopped node (the process ends, connections are refused), back
    // later on the same port with its chain.
    let before = rpc.balance(addr(PAYEE_1)).await.unwrap();
    let w = create(&fc, "down-2", "w-down", "ETH", PAYEE_1, 3 * ETH / 2).await;
    let w = wait_for(&fc, &w.id, "awaiting_approvals", Duration::from_secs(20)).await;
    anvil.stop();
    approve_while_node_is_down(&fc, &w).await;
    anvil.restart().await;
    let (_, nonce, receipt) = confirmed_tx(&fc, &rpc, &w.id).await;
    assert!(receipt.success);
    assert_eq!(
        nonce, 1,
        "the restarted node kept the chain, and the next nonce was used"
    );
    assert_eq!(
        rpc.balance(addr(PAYEE_1)).await.unwrap(),
        before + U256::from(3 * ETH / 2)
    );
    fc.tc.cluster.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coordinator_killed_before_broadcast_rebroadcasts_the_same_tx() {
    let anvil = Anvil::start().await;
    let rpc = rpc(&anvil.url);
    let (mut fc, wallets) = start_eth(&anvil, &["w-crash"]).await;
    let wallet = wallets[0];
    fund(&rpc, wallet, 5 * ETH).await;
    let w = create(&fc, "crash-1", "w-crash", "ETH", PAYEE_2, 3 * ETH / 2).await;
    let w = wait_for(&fc, &w.id, "awaiting_approvals", Duration::from_secs(20)).await;
    approve(&fc.approver, &w, "alice").await;
    approve(&fc.approver, &w, "bob").await;
    // Freeze anvil as soon as the transaction exists: signing goes on, the
    // broadcast cannot happen.
    let started = Instant::now();
    let tx = loop {
        let now = get(&fc, &w.id).await;
        if !now.unsigned_tx.is_empty() {
            anvil.freeze();
            break now.unsigned_tx;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{now:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let signed = wait_for(&fc, &w.id, "broadcast", Duration::from_secs(60)).await;
    assert_eq!(signed.unsigned_tx, tx);
    let hash = find_hash(&signed).unwrap();
    // It waits in `broadcast`, saying the node is unreachable.
    let started = Instant::now();
    loop {
        let now = get(&fc, &w.id).await;
        assert_eq!(now.state, "broadcast");
        if now.signer_notes.iter().any(|n| n.contains("chain anvil")) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{now:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    fc.tc.cluster.kill_coordinator().unwrap();
    anvil.thaw();
    fc.tc.cluster.restart_coordinator().await.unwrap();
    let (hash2, nonce, receipt) = confirmed_tx(&fc, &rpc, &w.id).await;
    assert_eq!(hash2, hash, "the stored raw transaction, not a new one");
    assert_eq!(nonce, 0);
    assert!(receipt.success);
    let done = get(&fc, &w.id).await;
    assert_eq!(done.unsigned_tx, tx, "never rebuilt");
    assert_eq!(done.signature_r, signed.signature_r, "never re-signed");
    assert_eq!(
        rpc.transaction_count(wallet, BlockTag::Latest)
            .await
            .unwrap(),
        1,
        "broadcast once"
    );
    fc.tc.cluster.stop().await.unwrap();
}

/// The withdrawal `w` as the policy crate sees it, for `amount`, JSON (what
/// a coordinator sends the signers).
fn policy_withdrawal_json(w: &Withdrawal, amount: u128) -> Vec<u8> {
    let mut pw = custos_policy::Withdrawal {
        id: w.id.clone(),
        wallet: w.wallet.clone(),
        chain: w.chain.clone(),
        asset: w.asset.clone(),
        destination: w.destination.clone(),
        amount: custos_policy::Amount(amount),
        fee_cap: custos_policy::Amount(w.fee_cap.parse().unwrap()),
        initiator: w.initiator.clone(),
        tx_digest: String::new(),
        source: None,
    };
    pw.tx_digest = hex::encode(custos_policy::intent_digest(&pw));
    serde_json::to_vec(&pw).unwrap()
}

/// Asks every signer directly (as a rogue coordinator would) to sign with
/// `authorization`; each must refuse. Returns how many refusals say `why`.
async fn refusals_saying(
    signers: &[(String, SignerClient)],
    authorization: custos_proto::signer::WithdrawalAuthorization,
    key_id: &str,
    presignature_id: &str,
    why: &str,
) -> usize {
    let mut named = 0;
    for (node, client) in signers {
        let err = client
            .clone()
            .sign_withdrawal(custos_proto::signer::SignWithdrawalRequest {
                authorization: Some(authorization.clone()),
                key_id: key_id.into(),
                presignature_id: presignature_id.into(),
            })
            .await
            .expect_err(&format!("{node} signed ({presignature_id})"));
        if err.message().contains(why) {
            named += 1;
        }
    }
    named
}

/// SignerControl clients authenticated as the coordinator (a compromised
/// coordinator host), as in tests/tests/cosigner.rs.
async fn rogue_clients(layout: &custos_devkit::ClusterLayout) -> Vec<(String, SignerClient)> {
    coordinator_signer_clients(layout).await
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// An unsigned EIP-1559 transfer as the coordinator would build it.
fn unsigned(
    chain_id: u64,
    asset: custos_chains::evm::asset::Asset,
    recipient: Address,
    amount: U256,
    gas_limit: u64,
    max_fee_per_gas: u128,
) -> Vec<u8> {
    let tx = custos_chains::evm::tx::build_unsigned(&custos_chains::evm::tx::TransferRequest {
        chain_id,
        from: Address::repeat_byte(0x11),
        recipient,
        asset,
        amount,
        nonce: 0,
        gas_limit,
        max_fee_per_gas,
        max_priority_fee_per_gas: 1,
    })
    .unwrap();
    custos_chains::evm::tx::encode_unsigned(&tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signers_refuse_a_transaction_that_differs_from_the_approval() {
    use custos_chains::evm::asset::Asset;
    use custos_policy::{
        ActivePolicy, Amount, Approval, ApprovalStatement, Policy, Timestamp, Verdict,
        Withdrawal as PW, evaluate, intent_digest,
    };
    use custos_proto::signer::{SignWithdrawalRequest, WithdrawalAuthorization};

    let anvil = Anvil::start().await;
    let (fc, _) = start_eth(&anvil, &[]).await;
    let layout = fc.tc.cluster.layout().clone();
    let signers = rogue_clients(&layout).await;
    let p = layout.policy.as_ref().unwrap();
    let document = std::fs::read(&p.document).unwrap();
    let signatures = std::fs::read(&p.signatures).unwrap();
    let expiry = unix_now() + 3600;
    let fee_cap: u128 = 2_100_000_000_000_000;

    // An approved withdrawal: 1.5 ETH, or 200 MINI, to payee 1, on anvil.
    let approved = |id: &str, asset: &str, amount: u128| {
        let mut w = PW {
            id: id.into(),
            wallet: "w-rogue".into(),
            chain: "anvil".into(),
            asset: asset.into(),
            destination: PAYEE_1.into(),
            amount: Amount(amount),
            fee_cap: Amount(fee_cap),
            initiator: "payments-backend".into(),
            tx_digest: String::new(),
            source: None,
        };
        w.tx_digest = hex::encode(intent_digest(&w));
        let active = ActivePolicy::assumed(Policy::parse(&document).unwrap(), Timestamp(0));
        let d = evaluate(&active, &w, &[], Timestamp(unix_now()), 0).unwrap();
        let rule = d.rule_id.clone().unwrap();
        let st = ApprovalStatement::for_decision(&d, &w, Timestamp(expiry)).unwrap();
        let approvals: Vec<Approval> = ["alice", "bob"]
            .iter()
            .map(|who| Approval::sign(&st, Verdict::Approve, who, &approver_key(who)).unwrap())
            .collect();
        (w, rule, approvals)
    };
    let auth = |w: &PW, rule: &str, approvals: &[Approval], tx: Vec<u8>| WithdrawalAuthorization {
        withdrawal_json: serde_json::to_vec(w).unwrap(),
        unsigned_tx: tx,
        policy_document: document.clone(),
        policy_signatures: signatures.clone(),
        // As the coordinator does: the newest logged bundle rides along, or a
        // signer whose log view already shows its activation refuses.
        latest_policy_document: document.clone(),
        latest_policy_signatures: signatures.clone(),
        rule_id: rule.into(),
        statement_expiry: expiry,
        risk_score: 0,
        approvals_json: serde_json::to_vec(approvals).unwrap(),
        ..Default::default()
    };

    let eth_amount = U256::from(3 * ETH / 2);
    let (w, rule, approvals) = approved("rogue-eth", "ETH", 3 * ETH / 2);
    assert_eq!(rule, "medium-two-approvals");
    let good = unsigned(
        CHAIN_ID,
        Asset::eth(),
        addr(PAYEE_1),
        eth_amount,
        21_000,
        1_000_000_000,
    );
    let mini = Asset::erc20(addr(MINI), "MINI", 18).unwrap();
    let mini_amount = U256::from(200u64) * U256::from(ETH);
    let (tw, trule, tapprovals) = approved("rogue-mini", "MINI", 200 * ETH);
    assert_eq!(trule, "mini-token-allow");
    let good_token = unsigned(
        CHAIN_ID,
        mini.clone(),
        addr(PAYEE_1),
        mini_amount,
        60_000,
        1_000_000_000,
    );
    let other_token = Asset::erc20(Address::repeat_byte(0x77), "MINI", 18).unwrap();

    let cases: Vec<(&str, WithdrawalAuthorization, &str)> = vec![
        (
            "other recipient",
            auth(
                &w,
                &rule,
                &approvals,
                unsigned(
                    CHAIN_ID,
                    Asset::eth(),
                    addr(PAYEE_2),
                    eth_amount,
                    21_000,
                    1_000_000_000,
                ),
            ),
            "field to",
        ),
        (
            "other value",
            auth(
                &w,
                &rule,
                &approvals,
                unsigned(
                    CHAIN_ID,
                    Asset::eth(),
                    addr(PAYEE_1),
                    eth_amount * U256::from(2u8),
                    21_000,
                    1_000_000_000,
                ),
            ),
            "field value",
        ),
        (
            "other chain id",
            auth(
                &w,
                &rule,
                &approvals,
                unsigned(
                    1,
                    Asset::eth(),
                    addr(PAYEE_1),
                    eth_amount,
                    21_000,
                    1_000_000_000,
                ),
            ),
            "field chain_id",
        ),
        (
            "fee cap above the approved one",
            auth(
                &w,
                &rule,
                &approvals,
                unsigned(
                    CHAIN_ID,
                    Asset::eth(),
                    addr(PAYEE_1),
                    eth_amount,
                    21_000,
                    1_000_000_000_000,
                ),
            ),
            "field fee_cap",
        ),
        (
            "ETH approved, token transfer built",
            auth(
                &w,
                &rule,
                &approvals,
                unsigned(
                    CHAIN_ID,
                    mini.clone(),
                    addr(PAYEE_1),
                    eth_amount,
                    60_000,
                    1_000_000_000,
                ),
            ),
            "field to",
        ),
        (
            "calldata recipient",
            auth(
                &tw,
                &trule,
                &tapprovals,
                unsigned(
                    CHAIN_ID,
                    mini.clone(),
                    addr(PAYEE_3),
                    mini_amount,
                    60_000,
                    1_000_000_000,
                ),
            ),
            "field recipient",
        ),
        (
            "calldata amount",
            auth(
                &tw,
                &trule,
                &tapprovals,
                unsigned(
                    CHAIN_ID,
                    mini.clone(),
                    addr(PAYEE_1),
                    mini_amount + U256::from(1u8),
                    60_000,
                    1_000_000_000,
                ),
            ),
            "field amount",
        ),
        (
            "other token contract",
            auth(
                &tw,
                &trule,
                &tapprovals,
                unsigned(
                    CHAIN_ID,
                    other_token,
                    addr(PAYEE_1),
                    mini_amount,
                    60_000,
                    1_000_000_000,
                ),
            ),
            "field to",
        ),
        (
            "garbage bytes",
            auth(&w, &rule, &approvals, vec![0x02, 0xc0]),
            "unsigned_tx",
        ),
    ];
    for (what, a, why) in &cases {
        for (node, c) in &signers {
            let e = c.clone().register_quorum(a.clone()).await.unwrap_err();
            assert_eq!(
                e.code(),
                tonic::Code::PermissionDenied,
                "{what}: {node} register: {e}"
            );
            assert!(e.message().contains(why), "{what}: {node} register: {e}");
            let e = c
                .clone()
                .sign_withdrawal(SignWithdrawalRequest {
                    authorization: Some(a.clone()),
                    key_id: "w-rogue".into(),
                    presignature_id: "ps-rogue".into(),
                })
                .await
                .unwrap_err();
            assert_eq!(
                e.code(),
                tonic::Code::PermissionDenied,
                "{what}: {node} sign: {e}"
            );
            assert!(e.message().contains(why), "{what}: {node} sign: {e}");
        }
    }
    // The matching transactions pass the same checks (the quorum registers).
    for (node, c) in &signers {
        c.clone()
            .register_quorum(auth(&w, &rule, &approvals, good.clone()))
            .await
            .unwrap_or_else(|e| panic!("{node}: good ETH tx refused: {e}"));
        c.clone()
            .register_quorum(auth(&tw, &trule, &tapprovals, good_token.clone()))
            .await
            .unwrap_or_else(|e| panic!("{node}: good token tx refused: {e}"));
    }
    fc.tc.cluster.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_transaction_is_resent_byte_for_byte() {
    let anvil = Anvil::start().await;
    let rpc = rpc(&anvil.url);
    let (fc, wallets) = start_eth(&anvil, &["w-eth"]).await;
    let wallet = wallets[0];
    fund(&rpc, wallet, 5 * ETH).await;
    // No mining: the transaction stays pending until we drop it.
    rpc.request("evm_setAutomine", json!([false]))
        .await
        .unwrap();
    let w = create(&fc, "drop-1", "w-eth", "ETH", PAYEE_1, ETH / 2).await;
    let started = Instant::now();
    let sent = loop {
        let now = get(&fc, &w.id).await;
        if now.state == "broadcast" && now.signer_notes.iter().any(|n| n.contains("pending")) {
            break now;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let hash = find_hash(&sent).unwrap();
    assert!(rpc.transaction_exists(hash).await.unwrap());
    rpc.request("anvil_dropTransaction", json!([hash]))
        .await
        .unwrap();
    assert!(!rpc.transaction_exists(hash).await.unwrap(), "dropped");
    // The coordinator notices and sends the same bytes again.
    let started = Instant::now();
    while !rpc.transaction_exists(hash).await.unwrap() {
        assert!(started.elapsed() < Duration::from_secs(30), "not resent");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rpc.request("evm_setAutomine", json!([true])).await.unwrap();
    rpc.request("evm_mine", json!([])).await.unwrap();
    let (hash2, nonce, receipt) = confirmed_tx(&fc, &rpc, &w.id).await;
    assert_eq!(hash2, hash);
    assert_eq!(nonce, 0);
    assert!(receipt.success);
    assert_eq!(receipt.from, wallet);
    fc.tc.cluster.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nonces_on_postgresql() {
    let url = custos_service::db::testdb::fresh_pg_url("custos_eth")
        .await
        .expect("PostgreSQL reachable (scripts/ensure-services.sh starts it)");
    let anvil = Anvil::start().await;
    let rpc = rpc(&anvil.url);
    let (mut fc, wallets) = start_eth_on(&anvil, &["w-many"], Some(&url)).await;
    fund(&rpc, wallets[0], 5 * ETH).await;
    let ids = create_concurrently(&fc, "pg", 4, |i| ETH / 10 + i).await;
    let mut nonces = Vec::new();
    for id in ids {
        nonces.push(confirmed_tx(&fc, &rpc, &id).await.1);
    }
    nonces.sort_unstable();
    assert_eq!(nonces, vec![0, 1, 2, 3]);
    // A restarted coordinator on the same database takes the next nonce.
    fc.tc.cluster.kill_coordinator().unwrap();
    fc.tc.cluster.restart_coordinator().await.unwrap();
    let w = create(&fc, "pg-after", "w-many", "ETH", PAYEE_3, ETH / 10).await;
    assert_eq!(confirmed_tx(&fc, &rpc, &w.id).await.1, 4);
    fc.tc.cluster.stop().await.unwrap();
}

/// How many signatures the signers' journals hold for withdrawal `id`.
fn journal_signatures(layout: &custos_devkit::ClusterLayout, id: &str) -> usize {
    layout
        .signers
        .iter()
        .map(|s| {
            std::fs::read_to_string(s.data_dir.join("withdrawals.log"))
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("\"event\":\"signed\"") && l.contains(id))
                .count()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stuck_transaction_is_replaced_with_a_higher_fee_within_its_cap() {
    use custos_chains::evm::tx::{
        ReplacementFees, TransferRequest, build_unsigned, decode_unsigned, encode_unsigned,
        with_fees,
    };
    use custos_proto::signer::WithdrawalAuthorization;

    let anvil = Anvil::start().await;
    let rpc = rpc(&anvil.url);
    let (fc, addrs) = start_eth_with(
        &anvil,
        &["w-eth"],
        None,
        "resubmit_after_secs = 2\nfee_bump_percent = 25",
    )
    .await;
    let wallet = addrs[0];
    fund(&rpc, wallet, 3 * ETH).await;
    let payee_before = rpc.balance(addr(PAYEE_1)).await.unwrap();
    // Nothing is mined from now on until the test says so: the transaction
    // stays in the pool, as one priced under the market would.
    automine(&rpc, false).await;

    let w = create(&fc, "bump-1", "w-eth", "ETH", PAYEE_1, ETH / 2).await;
    let first = wait_in_pool(&fc, &rpc, &w.id).await;
    let (_, first_tx) = decode_unsigned_transfer(&first.unsigned_tx).unwrap();
    let bumped = wait_until(&fc, &w.id, Duration::from_secs(60), "replaced", |x| {
        x.tx_hash != first.tx_hash && !x.tx_hash.is_empty()
    })
    .await;
    let bumped = wait_in_pool(&fc, &rpc, &bumped.id).await;
    assert!(
        bumped
            .signer_notes
            .iter()
            .any(|n| n.contains("replaced by") && n.contains("same nonce")),
        "{:?}",
        bumped.signer_notes
    );
    let (_, bumped_tx) = decode_unsigned_transfer(&bumped.unsigned_tx).unwrap();
    assert_eq!(bumped_tx.nonce, first_tx.nonce);
    assert_eq!(bumped_tx.gas_limit, first_tx.gas_limit);
    assert_eq!(
        (bumped_tx.to, bumped_tx.value),
        (first_tx.to, first_tx.value)
    );
    assert!(
        bumped_tx.max_fee_per_gas * 100 >= first_tx.max_fee_per_gas * 125,
        "{} vs {}",
        bumped_tx.max_fee_per_gas,
        first_tx.max_fee_per_gas
    );
    assert!(bumped_tx.max_priority_fee_per_gas > first_tx.max_priority_fee_per_gas);
    assert!(bumped_tx.fee_cap_wei <= U256::from(2_100_000_000_000_000u128));

    mine(&rpc, 1).await;
    let done = wait_for(&fc, &w.id, "confirmed", Duration::from_secs(60)).await;
    let hash: B256 = done.tx_hash.parse().unwrap();
    let receipt = rpc.transaction_receipt(hash).await.unwrap().unwrap();
    assert!(receipt.success);
    assert_ne!(done.tx_hash, first.tx_hash, "a replacement was mined");
    assert!(
        rpc.transaction_receipt(first.tx_hash.parse().unwrap())
            .await
            .unwrap()
            .is_none(),
        "the replaced version is not mined"
    );
    // One transaction left the wallet; the payee got the amount exactly once.
    assert_eq!(
        rpc.transaction_count(wallet, BlockTag::Latest)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        rpc.balance(addr(PAYEE_1)).await.unwrap(),
        payee_before + U256::from(ETH / 2)
    );
    assert_eq!(done.fee_paid, receipt.fee_paid_wei().to_string());
    assert_eq!(
        rpc.balance(wallet).await.unwrap(),
        U256::from(3 * ETH - ETH / 2) - receipt.fee_paid_wei()
    );
    let layout = fc.tc.cluster.layout().clone();
    let signed = journal_signatures(&layout, &w.id);
    assert!(signed >= 4, "2 signers × (first + bump), got {signed}");

    // A coordinator that asks for "fee bumps" that are not: every signer
    // refuses, naming the field, and records nothing.
    let current = decode_unsigned(&done.unsigned_tx).unwrap();
    let cur = decode_unsigned_transfer(&done.unsigned_tx).unwrap().1;
    let higher = ReplacementFees {
        max_fee_per_gas: cur.max_fee_per_gas * 3,
        max_priority_fee_per_gas: cur.max_priority_fee_per_gas * 3,
    };
    let rebuilt = |nonce: u64, recipient: &str, fees: ReplacementFees| {
        encode_unsigned(
            &build_unsigned(&TransferRequest {
                chain_id: CHAIN_ID,
                from: wallet,
                recipient: addr(recipient),
                asset: custos_chains::evm::asset::Asset::eth(),
                amount: U256::from(ETH / 2),
                nonce,
                gas_limit: cur.gas_limit,
                max_fee_per_gas: fees.max_fee_per_gas,
                max_priority_fee_per_gas: fees.max_priority_fee_per_gas,
            })
            .unwrap(),
        )
    };
    let policy_w = |amount: u128| policy_withdrawal_json(&done, amount);
    let over_cap = ReplacementFees {
        max_fee_per_gas: 2_100_000_000_000_000 / u128::from(cur.gas_limit) + 1,
        max_priority_fee_per_gas: cur.max_priority_fee_per_gas * 3,
    };
    let cases: Vec<(&str, Vec<u8>, Vec<u8>, &str)> = vec![
        (
            "another nonce",
            policy_w(ETH / 2),
            rebuilt(cur.nonce + 1, PAYEE_1, higher),
            "field nonce",
        ),
        (
            "fees not raised",
            policy_w(ETH / 2),
            encode_unsigned(
                &with_fees(
                    &current,
                    ReplacementFees {
                        max_fee_per_gas: cur.max_fee_per_gas / 2,
                        max_priority_fee_per_gas: cur.max_priority_fee_per_gas / 2,
                    },
                )
                .unwrap(),
            ),
            "field max_fee_per_gas",
        ),
        (
            "above the approved fee cap",
            policy_w(ETH / 2),
            encode_unsigned(&with_fees(&current, over_cap).unwrap()),
            "field fee_cap",
        ),
        (
            "another recipient",
            policy_w(ETH / 2),
            rebuilt(cur.nonce, PAYEE_2, higher),
            "field to:",
        ),
        (
            "another amount, in the withdrawal too",
            policy_w(ETH),
            rebuilt(cur.nonce, PAYEE_1, higher),
            "other terms",
        ),
    ];
    let signers = rogue_clients(&layout).await;
    for (i, (what, withdrawal_json, tx, field)) in cases.into_iter().enumerate() {
        let auth = WithdrawalAuthorization {
            withdrawal_json,
            unsigned_tx: tx,
            rule_id: done.rule_id.clone(),
            ..Default::default()
        };
        let named = refusals_saying(
            &signers,
            auth,
            "w-eth",
            &format!("ps-rogue-bump-{i}"),
            field,
        )
        .await;
        assert!(named >= 2, "{what}: the signers that signed name {field}");
    }
    assert_eq!(
        journal_signatures(&layout, &w.id),
        signed,
        "nothing recorded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn confirmations_are_counted_and_reverted_or_displaced_transactions_fail() {
    let anvil = Anvil::start().await;
    let rpc = rpc(&anvil.url);
    let (fc, addrs) = start_eth_with(
        &anvil,
        &["w-eth", "w-tok", "w-many"],
        None,
        "confirmations = 3",
    )
    .await;
    let token = deploy_mini(&rpc).await;
    fund(&rpc, addrs[0], 2 * ETH).await;
    fund(&rpc, addrs[1], ETH).await;
    fund(&rpc, addrs[2], ETH).await;
    mini_transfer(&rpc, addrs[1], U256::from(500u64) * U256::from(ETH)).await;
    automine(&rpc, false).await;

    // 1. Three confirmations: mined is not enough.
    let a = create(&fc, "conf-1", "w-eth", "ETH", PAYEE_1, ETH / 4).await;
    let a = wait_in_pool(&fc, &rpc, &a.id).await;
    mine(&rpc, 1).await;
    let one = wait_until(&fc, &a.id, Duration::from_secs(30), "1 of 3", |w| {
        w.signer_notes
            .iter()
            .any(|n| n.contains("1 of 3 confirmations"))
    })
    .await;
    assert_eq!(one.state, "broadcast");
    mine(&rpc, 1).await;
    wait_until(&fc, &a.id, Duration::from_secs(30), "2 of 3", |w| {
        w.signer_notes
            .iter()
            .any(|n| n.contains("2 of 3 confirmations"))
    })
    .await;
    assert_eq!(get(&fc, &a.id).await.state, "broadcast");
    mine(&rpc, 1).await;
    let a = wait_for(&fc, &a.id, "confirmed", Duration::from_secs(30)).await;
    let receipt = rpc
        .transaction_receipt(a.tx_hash.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(receipt.success);

    // 2. An ERC-20 transfer that reverts when mined (the token's code is
    // replaced by `REVERT` after the transaction was built): receipt status
    // 0 → failed, naming the hash.
    let b = create(&fc, "revert-1", "w-tok", "MINI", PAYEE_2, 100 * ETH).await;
    let b = wait_in_pool(&fc, &rpc, &b.id).await;
    rpc.request("anvil_setCode", json!([token, "0x60006000fd"]))
        .await
        .unwrap();
    mine(&rpc, 1).await;
    let b = wait_for(&fc, &b.id, "failed", Duration::from_secs(30)).await;
    assert!(
        b.reason.contains("receipt status 0") && b.reason.contains(&b.tx_hash),
        "{}",
        b.reason
    );
    let receipt = rpc
        .transaction_receipt(b.tx_hash.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(!receipt.success);

    // 3. The nonce used by something that is not this withdrawal's
    // transaction (dropped from the pool, and the account's nonce moved on):
    // failed, saying so, instead of waiting forever.
    let c = create(&fc, "displaced-1", "w-many", "ETH", PAYEE_3, ETH / 10).await;
    let c = wait_in_pool(&fc, &rpc, &c.id).await;
    rpc.request("anvil_dropTransaction", json!([c.tx_hash]))
        .await
        .unwrap();
    rpc.request("anvil_setNonce", json!([addrs[2], "0x1"]))
        .await
        .unwrap();
    mine(&rpc, 1).await;
    let c = wait_for(&fc, &c.id, "failed", Duration::from_secs(30)).await;
    assert!(
        c.reason.contains("nonce 0") && c.reason.contains("not this withdrawal's"),
        "{}",
        c.reason
    );
}

#[path = "ethereum/deposit_reorg.rs"]
mod deposit_reorg;
#[path = "ethereum/fee_bump_approvals.rs"]
mod fee_bump_approvals;
#[path = "ethereum/rotation.rs"]
mod rotation;
