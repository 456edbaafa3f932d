//! UTXO withdrawals end to end (issue #17): a real Litecoin Core regtest node
//! and a real 2-of-3 cluster. The coordinator selects coins from the node's
//! watch-only wallet and builds a PSBT when the withdrawal enters `signing`;
//! each input is signed in its own session (its own presignature and log
//! entry), every signer decoding the PSBT itself; the coordinator assembles
//! the witnesses, broadcasts and tracks confirmations.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use custos_audit::EntryBody;
use custos_chains::utxo::{
    self, BuildRequest, Payout, Transaction, Txid, UtxoAddress, UtxoNetwork, parse_address,
};
use custos_devkit::client::connect_as;
use custos_devkit::{ClusterSpec, StartOptions};
use custos_proto::custody::{
    CreateKeyRequest, CreateWithdrawalRequest, DeriveAddressRequest, GetKeyRequest,
    GetWithdrawalRequest, Withdrawal,
};
use custos_tests::litecoind::Litecoind;
use custos_tests::*;
use serde_json::json;

const CHAIN: &str = "litecoin-regtest";
const NETWORK: UtxoNetwork = UtxoNetwork::LitecoinRegtest;
/// Base units per LTC.
const LTC: u64 = 100_000_000;
/// The asset's default fee cap (0.001 LTC).
const FEE_CAP: u64 = 100_000;

/// A payee outside every wallet of the node: the P2WPKH address of a fixed
/// test key (so the policy's address book can name it).
fn payee() -> UtxoAddress {
    let secp = secp256k1::Secp256k1::new();
    let sk = secp256k1::SecretKey::from_byte_array([12; 32]).unwrap();
    let pk = secp256k1::PublicKey::from_secret_key(&secp, &sk).serialize();
    utxo::wallet_address(NETWORK, &pk).unwrap()
}

/// Allow up to 1 LTC to the address book, 2-of-3 approvals up to 10 LTC,
/// block the rest.
fn policy_text() -> String {
    format!(
        r#"
version = 1
description = "Litecoin e2e test policy"

[settings]
whitelist_delay = "0s"
change_delay = "24h"
approval_expiry = "1h"

[wallet_groups]
hot = ["ltc-hot", "ltc-rogue", "ltc-tr"]
messages = ["msg-ed"]

[[address_book]]
id = "ltc-payee"
labels = ["test"]
chain = "{CHAIN}"
address = "{payee}"

[[approvers]]
id = "alice"
role = "treasury"
ed25519 = "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"

[[approvers]]
id = "bob"
role = "treasury"
ed25519 = "8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394"

[[approvers]]
id = "carol"
role = "treasury"
ed25519 = "ed4928c628d1c2c6eae90338905995612959273a5c63f93636c14614ac8737d1"

[groups]
treasury = ["alice", "bob", "carol"]

[[rules]]
id = "small-ltc-allow"
wallet_groups = ["hot"]
assets = ["LTC"]
destination = "whitelisted"
amount = {{ max = "{small}" }}
action = "allow"

[[rules]]
id = "medium-two-approvals"
assets = ["LTC"]
destination = "whitelisted"
amount = {{ max = "{medium}" }}
action = "require_approvals"
approvals = {{ all = [{{ group = "treasury", count = 2 }}], exclude_initiator = true }}

[[rules]]
id = "message-two-approvals"
wallet_groups = ["messages"]
assets = ["MSG"]
action = "require_approvals"
approvals = {{ all = [{{ group = "treasury", count = 2 }}], exclude_initiator = true }}

[[rules]]
id = "block-everything-else"
action = "block"
reason = "not allowed by the Litecoin test policy"
"#,
        payee = payee().text,
        small = LTC,
        medium = 10 * LTC,
    )
}

/// A 2-of-3 cluster with the node configured as chain `litecoin-regtest`
/// (`chain_extra`: more `[[chains]]` lines) and wallet keys `wallets` on it;
/// returns the cluster and each wallet's address.
async fn start_ltc(
    node: &Litecoind,
    wallets: &[&str],
    chain_extra: &str,
) -> (FlowCluster, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("ltc-policy.toml");
    std::fs::write(&policy, policy_text()).unwrap();
    let mut spec = ClusterSpec::new(dir.path().join("cluster"));
    spec.base_port = custos_devkit::free_base_port();
    custos_tests::use_fixtures(&mut spec);
    spec.presignature_pool = custos_tests::FLOW_TEST_POOL;
    spec.policy = Some(policy);
    spec.raw_digest = false;
    spec.bin_dir = Some(bin_dir());
    let layout = custos_devkit::generate(&spec).unwrap();
    let mut cfg = std::fs::read_to_string(&layout.coordinator.config).unwrap();
    cfg.push_str(&format!(
        r#"
[ledger]
deposit_scan_ms = 300

[[assets]]
chain = "{CHAIN}"
symbol = "LTC"
decimals = 8
default_fee_cap = "{FEE_CAP}"

[[assets]]
chain = "message"
symbol = "MSG"
decimals = 0
default_fee_cap = "0"

[[chains]]
name = "{CHAIN}"
kind = "utxo"
rpc_url = "{url}"
rpc_timeout_ms = 5000
{chain_extra}
"#,
        url = node.url
    ));
    std::fs::write(&layout.coordinator.config, cfg).unwrap();
    let signer_chains = format!(r#"chains = [{{ name = "{CHAIN}" }}, {{ name = "message" }}]"#);
    for s in &layout.signers {
        let text = std::fs::read_to_string(&s.config).unwrap();
        let text = if text.contains("[cosigner]") {
            text.replacen("[cosigner]\n", &format!("[cosigner]\n{signer_chains}\n"), 1)
        } else {
            format!("{text}\n[cosigner]\n{signer_chains}\n")
        };
        std::fs::write(&s.config, text).unwrap();
    }
    let opts = StartOptions::default().timeout(Duration::from_secs(60));
    let tc = start_layout(dir, layout, opts).await;
    let layout = tc.cluster.layout().clone();
    let mut addresses = Vec::new();
    for w in wallets {
        tc.client
            .clone()
            .create_key(CreateKeyRequest {
                key_id: (*w).to_owned(),
                chain: CHAIN.into(),
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
        assert!(key.ethereum_address.is_empty(), "{key:?}");
        // The neutral field is the chain's own format, and the address of the key.
        let wallet = utxo::wallet_address(NETWORK, &key.public_key).unwrap();
        assert_eq!(key.address, wallet.text);
        addresses.push(key.address);
    }
    let fc = FlowCluster {
        backend: connect_as(&layout, "payments-backend").await.unwrap(),
        approver: connect_as(&layout, "approver-cli").await.unwrap(),
        auditor: connect_as(&layout, "auditor").await.unwrap(),
        tc,
    };
    (fc, addresses)
}

async fn get(fc: &FlowCluster, id: &str) -> Withdrawal {
    fc.backend
        .clone()
        .get_withdrawal(GetWithdrawalRequest { id: id.to_owned() })
        .await
        .unwrap()
        .into_inner()
}

/// Polls until `check` holds (panics on an unexpected end state or after `limit`).
async fn wait_until(
    fc: &FlowCluster,
    id: &str,
    what: &str,
    limit: Duration,
    check: impl Fn(&Withdrawal) -> bool,
) -> Withdrawal {
    let started = Instant::now();
    loop {
        let w = get(fc, id).await;
        if check(&w) {
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
            "withdrawal {id} ended {} ({}), expected {what}; notes: {:?}",
            w.state,
            w.reason,
            w.signer_notes
        );
        assert!(
            started.elapsed() < limit,
            "withdrawal {id} still {} after {limit:?}, expected {what}; notes: {:?}\ncoordinator log (last lines):\n{}",
            w.state,
            w.signer_notes,
            log_tail(fc, 40)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The last `lines` lines of the coordinator's log (what a timeout shows).
fn log_tail(fc: &FlowCluster, lines: usize) -> String {
    let text =
        std::fs::read_to_string(fc.tc.cluster.layout().log_file("coordinator")).unwrap_or_default();
    // Token checks are logged on every call; they say nothing here.
    let all: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("API token accepted"))
        .collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

async fn wait_for(fc: &FlowCluster, id: &str, state: &str) -> Withdrawal {
    wait_until(fc, id, state, Duration::from_secs(120), |w| {
        w.state == state
    })
    .await
}

async fn create(fc: &FlowCluster, key: &str, wallet: &str, amount: u64) -> Withdrawal {
    create_from(fc, key, wallet, "", amount).await
}

/// A withdrawal to the payee from the wallet's derived address at
/// `source_path` ("": its own address).
async fn create_from(
    fc: &FlowCluster,
    key: &str,
    wallet: &str,
    source_path: &str,
    amount: u64,
) -> Withdrawal {
    fc.backend
        .clone()
        .create_withdrawal(CreateWithdrawalRequest {
            idempotency_key: key.to_owned(),
            wallet: wallet.to_owned(),
            asset: "LTC".into(),
            destination: payee().text,
            amount: amount.to_string(),
            source_path: source_path.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// `wallet`'s external LTC balance in the ledger (deposits count negative).
fn external_ltc(fc: &FlowCluster, wallet: &str) -> i128 {
    custos_tests::external_balances(&fc.tc.cluster.layout().dir, wallet)
        .get("LTC")
        .map_or(0, |v| v.parse().unwrap())
}

/// Waits until `wallet`'s external LTC balance is `expected` (`what` was
/// credited).
async fn wait_external(fc: &FlowCluster, wallet: &str, expected: i128, what: &str) {
    let started = Instant::now();
    while external_ltc(fc, wallet) != expected {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what} not credited to {wallet}: {} instead of {expected}",
            external_ltc(fc, wallet)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The transaction `txid` as the coordinator's watch-only wallet sees it.
/// The node's wallet learns a transaction from its mempool asynchronously
/// (a notification after acceptance), so a transaction just sent may be
/// unknown to it for a moment.
async fn watched_tx(node: &Litecoind, txid: &str) -> (Transaction, i64) {
    let txid: Txid = txid.parse().unwrap();
    let started = Instant::now();
    loop {
        if let Some((tx, status)) = node
            .rpc()
            .wallet_transaction(&format!("custos-{CHAIN}"), &txid)
            .await
            .unwrap()
        {
            return (tx, status.confirmations);
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the watch-only wallet does not know {txid}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The tests that kill nothing share one node and one cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ltc_withdrawals_on_one_cluster() {
    let node = Litecoind::start().await;
    // A transaction unconfirmed for 10 s is replaced by fee (the default is
    // 120 s); the other steps mine what they send at once. Withdrawals ready
    // within 3 s of each other share a transaction.
    let (fc, addresses) = start_ltc(
        &node,
        &["ltc-hot", "ltc-rogue", "ltc-hd"],
        "resubmit_after_secs = 10\nbatch_window_ms = 3000",
    )
    .await;
    amounts_beyond_a_transaction_output_are_refused_at_creation(&fc).await;
    several_inputs_and_change_to_a_confirmed_transaction(&fc, &node, &addresses[0]).await;
    a_stuck_transaction_is_replaced_by_fee(&fc, &node, &addresses[0]).await;
    withdrawals_ready_together_share_one_transaction(&fc, &node, &addresses[0]).await;
    deposits_after_the_scan_cursor_are_credited(&fc, &node, &addresses[0]).await;
    signers_refuse_a_psbt_that_differs_from_the_approval(&fc, &addresses[1]).await;
    a_withdrawal_from_a_derived_address(&fc, &node, &addresses[2]).await;
    an_approved_message_signed_by_an_ed25519_key(&fc).await;
    a_taproot_wallet_spends_by_key_path(&fc, &node).await;
    a_withdrawal_from_a_derived_taproot_address(&fc, &node).await;
    // Last: it reorganises the chain.
    deposit_reorg::a_deposit_in_an_invalidated_block_is_reversed_and_credited_again(
        &fc,
        &node,
        &addresses[0],
    )
    .await;
    fc.tc.cluster.stop().await.unwrap();
}

/// HD-derived addresses on a UTXO chain (issue 19): a deposit address of
/// wallet `ltc-hd` is imported into the node's watch-only wallet and what
/// it receives is credited to the wallet; a withdrawal from it spends its
/// coins only (each input signed by signers that derived the child key
/// themselves), sends change back to it, and Litecoin Core accepts and
/// mines the transaction.
async fn a_withdrawal_from_a_derived_address(fc: &FlowCluster, node: &Litecoind, master: &str) {
    let d = fc
        .backend
        .clone()
        .derive_address(DeriveAddressRequest {
            wallet: "ltc-hd".into(),
            index: 3,
            label: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.path, "m/0/3");
    assert!(
        d.address.starts_with("rltc1q") && d.address != master,
        "{d:?}"
    );
    node.pay(&d.address, 0.5).await;
    node.pay(master, 0.25).await;
    node.mine(1).await;
    let credited = format!("deposits to {} and {master}", d.address);
    wait_external(fc, "ltc-hd", -i128::from(75 * LTC / 100), &credited).await;
    let w = create_from(fc, "ltc-hd-1", "ltc-hd", &d.path, LTC / 5).await;
    assert_eq!(w.source_address, d.address);
    // ltc-hd is in no wallet group of the policy: two treasurers approve
    // the version-2 statement, which names the source.
    let w = wait_for(fc, &w.id, "awaiting_approvals").await;
    let s = custos_policy::ApprovalStatement::decode(&w.statement).unwrap();
    assert_eq!(s.source.unwrap().address, d.address);
    approve(&fc.approver, &w, "alice").await;
    approve(&fc.approver, &w, "bob").await;
    let w = wait_for(fc, &w.id, "broadcast").await;
    let (tx, _) = watched_tx(node, &w.tx_hash).await;
    let child = parse_address(NETWORK, &d.address).unwrap();
    assert_eq!(tx.input.len(), 1, "the derived address's one coin: {tx:?}");
    assert_eq!(tx.output[0].value.to_sat(), LTC / 5);
    assert_eq!(tx.output[0].script_pubkey, payee().script_pubkey);
    assert_eq!(
        tx.output[1].script_pubkey, child.script_pubkey,
        "change to the derived address"
    );
    node.mine(1).await;
    wait_for(fc, &w.id, "confirmed").await;
}

/// The chain-neutral `message` chain (issue 18): an Ed25519 FROST wallet
/// signs a message through the withdrawal flow (policy, two approvals over
/// the statement that names the message, the signers' own checks); the
/// signature, on the withdrawal, verifies with Python `cryptography` and
/// `openssl pkeyutl -rawin` over the message itself. A rogue coordinator
/// showing the signers another message than the approved one, or none, gets
/// no signature (SECURITY.md case 75).
async fn an_approved_message_signed_by_an_ed25519_key(fc: &FlowCluster) {
    use custos_proto::custody::Scheme;
    let key = fc
        .tc
        .client
        .clone()
        .create_key(CreateKeyRequest {
            key_id: "msg-ed".into(),
            chain: "message".into(),
            scheme: Scheme::FrostEd25519 as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(key.public_key.len(), 32, "{key:?}");
    assert_eq!(key.address, hex::encode(&key.public_key));
    let message = b"custos: transfer of custody of vault 7 to treasury, 2026-12-07".to_vec();
    let create = |idempotency: &str, destination: String| {
        let mut backend = fc.backend.clone();
        let idempotency = idempotency.to_owned();
        async move {
            backend
                .create_withdrawal(CreateWithdrawalRequest {
                    idempotency_key: idempotency,
                    wallet: "msg-ed".into(),
                    asset: "MSG".into(),
                    destination,
                    amount: "1".into(),
                    ..Default::default()
                })
                .await
        }
    };
    // A destination that is not a message is refused at creation.
    let e = create("msg-bad", "not hex".into()).await.unwrap_err();
    assert!(e.message().contains("destination"), "{e:?}");
    // An ECDSA key signs 32-byte digests only: a message of another length
    // is refused at creation, not left to fail at signing.
    fc.tc
        .client
        .clone()
        .create_key(CreateKeyRequest {
            key_id: "msg-ecdsa".into(),
            chain: "message".into(),
            scheme: Scheme::Cggmp21Ecdsa as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    let e = fc
        .backend
        .clone()
        .create_withdrawal(CreateWithdrawalRequest {
            idempotency_key: "msg-ecdsa-1".into(),
            wallet: "msg-ecdsa".into(),
            asset: "MSG".into(),
            destination: hex::encode(&message),
            amount: "1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    assert!(
        e.message()
            .contains("32-byte digest only: this message is 62 bytes"),
        "{e}"
    );
    let w = create("msg-1", hex::encode_upper(&message))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        w.destination,
        hex::encode(&message),
        "canonical lowercase hex"
    );
    let w = wait_for(fc, &w.id, "awaiting_approvals").await;
    let s = custos_policy::ApprovalStatement::decode(&w.statement).unwrap();
    assert_eq!(
        s.destination,
        hex::encode(&message),
        "approvers see the message"
    );
    approve(&fc.approver, &w, "alice").await;
    approve(&fc.approver, &w, "bob").await;
    let w = wait_for(fc, &w.id, "signed").await;
    let mut signature = w.signature_r.clone();
    signature.extend_from_slice(&w.signature_s);
    assert_eq!(signature.len(), 64, "{w:?}");
    assert!(
        custos_tests::schnorr::ed25519_python(&key.public_key, &message, &signature),
        "python cryptography verifies the message's Ed25519 signature"
    );
    assert!(
        custos_tests::schnorr::ed25519_openssl(&key.public_key, &message, &signature),
        "openssl pkeyutl -rawin verifies the message's Ed25519 signature"
    );
    let mut other = message.clone();
    other[0] ^= 1;
    assert!(!custos_tests::schnorr::ed25519_python(
        &key.public_key,
        &other,
        &signature
    ));
    // Nothing to broadcast: it stays signed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(get(fc, &w.id).await.state, "signed");
    // The log names the message's SHA-256 as the session's digest, and an
    // auditor's replay accepts the signature.
    let digest = custos_chains::message::message_digest(&message);
    let entries = log_entries(&mut fc.auditor.clone()).await;
    assert!(
        entries.iter().any(|e| matches!(&e.body,
            EntryBody::SigningSession { withdrawal_id, message_digest, .. }
                if *withdrawal_id == w.id && message_digest.as_slice() == digest)),
        "signing session with the message digest"
    );
    verify_until(fc, "signature").await;

    // A rogue coordinator (its client certificate, real signers) asks for
    // a message withdrawal with other bytes than its message to sign, or
    // with none (which would have them sign the intent digest instead):
    // every signer refuses before anything else.
    let layout = fc.tc.cluster.layout().clone();
    let signers = coordinator_signer_clients(&layout).await;
    let p = layout.policy.as_ref().unwrap();
    let genuine = custos_policy::Withdrawal {
        id: "rogue-msg".into(),
        wallet: "msg-ed".into(),
        chain: "message".into(),
        asset: "MSG".into(),
        destination: hex::encode(&message),
        amount: custos_policy::Amount(1),
        fee_cap: custos_policy::Amount(0),
        initiator: "payments-backend".into(),
        tx_digest: String::new(),
        source: None,
    };
    let auth = |unsigned_tx: Vec<u8>| custos_proto::signer::WithdrawalAuthorization {
        withdrawal_json: serde_json::to_vec(&genuine).unwrap(),
        unsigned_tx,
        policy_document: std::fs::read(&p.document).unwrap(),
        policy_signatures: std::fs::read(&p.signatures).unwrap(),
        rule_id: "message-two-approvals".into(),
        ..Default::default()
    };
    for (what, unsigned_tx, why) in [
        ("another message", other.clone(), "not the approved message"),
        ("no message", Vec::new(), "signs its approved message"),
    ] {
        let named = refusals_saying(&signers, auth(unsigned_tx), "msg-ed", "p-none", why).await;
        assert_eq!(named, signers.len(), "{what}: every signer names {why:?}");
    }
}

/// A FROST secp256k1-tr wallet on Litecoin (issue 18): its address is P2TR
/// of the group's (tweaked) output key, bech32m `rltc1p`; it is funded by a
/// transaction the project builds (Litecoin Core's wallet makes no bech32m
/// addresses: a local test key's P2WPKH coin pays it, as in
/// `chains/tests/utxo_taproot_litecoind.rs`). A withdrawal from it selects
/// the P2TR coin, each signer recomputes the BIP341 key-path digest
/// (`SIGHASH_DEFAULT`, every prevout's amount and script) and signs with
/// FROST; the coordinator assembles one 64-byte signature per witness and
/// the node accepts and mines the transaction.
async fn a_taproot_wallet_spends_by_key_path(fc: &FlowCluster, node: &Litecoind) {
    use custos_proto::custody::Scheme;
    // An Ed25519 key holds no coins on a UTXO chain.
    let e = fc
        .tc
        .client
        .clone()
        .create_key(CreateKeyRequest {
            key_id: "ltc-ed".into(),
            chain: CHAIN.into(),
            scheme: Scheme::FrostEd25519 as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.message().contains("scheme"), "{e:?}");
    let key = fc
        .tc
        .client
        .clone()
        .create_key(CreateKeyRequest {
            key_id: "ltc-tr".into(),
            chain: CHAIN.into(),
            scheme: Scheme::FrostSecp256k1Tr as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(key.public_key.len(), 32, "x-only output key: {key:?}");
    assert!(key.address.starts_with("rltc1p"), "{key:?}");
    let p2tr = parse_address(NETWORK, &key.address).unwrap();
    assert_eq!(
        p2tr.script_pubkey.as_bytes()[2..],
        key.public_key[..],
        "OP_1 <output key>"
    );
    let validated = node
        .rpc()
        .call(None, "validateaddress", json!([key.address]))
        .await
        .unwrap();
    assert_eq!(validated["witness_version"], json!(1), "{validated}");

    let (fund, checked) = fund_p2tr(node, "fund-ltc-tr", &p2tr, LTC / 2).await;

    // The withdrawal: 0.2 LTC to the payee from the 0.5 LTC P2TR coin,
    // change back to the P2TR address.
    let w = create(fc, "ltc-tr-1", "ltc-tr", LTC / 5).await;
    let w = wait_for(fc, &w.id, "broadcast").await;
    let (tx, _) = watched_tx(node, &w.tx_hash).await;
    assert_eq!(tx.input.len(), 1, "{tx:?}");
    assert_eq!(tx.input[0].previous_output.txid, fund.txid);
    let witness: Vec<&[u8]> = tx.input[0].witness.iter().collect();
    assert_eq!(witness.len(), 1, "key path: one element");
    assert_eq!(witness[0].len(), 64, "SIGHASH_DEFAULT: no sighash byte");
    assert_eq!(tx.output[0].value.to_sat(), LTC / 5);
    assert_eq!(tx.output[0].script_pubkey, payee().script_pubkey);
    assert_eq!(tx.output[1].script_pubkey, p2tr.script_pubkey, "change");
    // The stored signature is that BIP340 signature, and libsecp256k1
    // verifies it under the output key over the BIP341 digest the
    // signers computed.
    let mut signature = w.signature_r.clone();
    signature.extend_from_slice(&w.signature_s);
    assert_eq!(signature, witness[0]);
    let prevout = checked
        .tx
        .output
        .iter()
        .find(|o| o.script_pubkey == p2tr.script_pubkey)
        .unwrap();
    let digests = utxo::taproot::taproot_digests(&tx, std::slice::from_ref(prevout)).unwrap();
    assert!(custos_tests::schnorr::bip340_libsecp256k1(
        &key.public_key,
        &digests[0],
        &signature
    ));
    node.mine(1).await;
    wait_for(fc, &w.id, "confirmed").await;
}

/// Pays `amount` to `address` (a P2TR output, which Litecoin Core's wallet
/// makes no address for) and mines it: the node pays a local key's P2WPKH
/// address; the adapter builds the payout and the local key signs it.
/// Returns the funding transaction and its checked PSBT.
async fn fund_p2tr(
    node: &Litecoind,
    id: &str,
    address: &UtxoAddress,
    amount: u64,
) -> (utxo::SignedUtxoTx, utxo::CheckedUtxoTx) {
    let local = k256::ecdsa::SigningKey::from_slice(&[0x17; 32]).unwrap();
    let sec1 = local.verifying_key().to_sec1_bytes();
    let funding = utxo::wallet_address(NETWORK, &sec1).unwrap();
    let rpc = node.rpc();
    rpc.ensure_watch_wallet("custos-ltc-funding").await.unwrap();
    rpc.watch_address("custos-ltc-funding", &funding.text, false)
        .await
        .unwrap();
    node.pay(&funding.text, 1.0).await;
    node.mine(1).await;
    let coins = rpc.spendable("custos-ltc-funding", 1).await.unwrap();
    let payouts = [Payout {
        withdrawal_id: id.into(),
        script_pubkey: address.script_pubkey.clone(),
        amount,
        fee_cap: FEE_CAP,
    }];
    let unsigned = utxo::build_unsigned(&BuildRequest {
        coins: &coins,
        required: &[],
        payouts: &payouts,
        change_script: &funding.script_pubkey,
        fee_rate_sat_per_kvb: 2_000,
    })
    .unwrap();
    let checked = utxo::check_psbt(
        &unsigned.psbt,
        &payouts,
        std::slice::from_ref(&funding.script_pubkey),
    )
    .unwrap();
    let fund = utxo::assemble_signed(
        &checked,
        &utxo::testing::sign_locally(&local, &checked),
        &sec1,
    )
    .unwrap();
    rpc.send_raw(&fund.raw, fund.txid).await.unwrap();
    node.mine(1).await;
    (fund, checked)
}

/// HD derivation of a FROST taproot wallet (issue 19): a deposit address of
/// `ltc-tr` is P2TR of the BIP86 tweak of its internal key's BIP32 child
/// (`custos_mpc::frost::hd`); what it receives is credited to the wallet;
/// a withdrawal from it (`source_path`) spends that coin only, each signer
/// deriving its child share from its own share and checking the address
/// itself, the coordinator combining with the child's public package; the
/// node accepts and mines the key-path spend. A signer asked directly with
/// a path whose child is not the claimed address refuses, naming both.
async fn a_withdrawal_from_a_derived_taproot_address(fc: &FlowCluster, node: &Litecoind) {
    let derive = |index: u32| {
        let mut backend = fc.backend.clone();
        async move {
            backend
                .derive_address(DeriveAddressRequest {
                    wallet: "ltc-tr".into(),
                    index,
                    label: String::new(),
                })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let d = derive(7).await;
    assert_eq!(d.path, "m/0/7");
    assert!(d.address.starts_with("rltc1p"), "{d:?}");
    let child = parse_address(NETWORK, &d.address).unwrap();
    let child_key = child.script_pubkey.as_bytes()[2..].to_vec();
    let before = external_ltc(fc, "ltc-tr");
    let (fund, checked) = fund_p2tr(node, "fund-ltc-tr-m07", &child, 3 * LTC / 10).await;
    let credited = format!("the deposit to {}", d.address);
    wait_external(fc, "ltc-tr", before - i128::from(3 * LTC / 10), &credited).await;
    let w = create_from(fc, "ltc-tr-hd-1", "ltc-tr", &d.path, LTC / 10).await;
    assert_eq!(w.source_address, d.address);
    let w = wait_for(fc, &w.id, "broadcast").await;
    let (tx, _) = watched_tx(node, &w.tx_hash).await;
    assert_eq!(tx.input.len(), 1, "the derived address's one coin: {tx:?}");
    assert_eq!(tx.input[0].previous_output.txid, fund.txid);
    let witness: Vec<&[u8]> = tx.input[0].witness.iter().collect();
    assert_eq!(witness.len(), 1, "key path: one element");
    assert_eq!(tx.output[0].value.to_sat(), LTC / 10);
    assert_eq!(tx.output[0].script_pubkey, payee().script_pubkey);
    assert_eq!(
        tx.output[1].script_pubkey, child.script_pubkey,
        "change to the derived address"
    );
    // The signature verifies (libsecp256k1) under the child's output key,
    // not the wallet's.
    let prevout = checked
        .tx
        .output
        .iter()
        .find(|o| o.script_pubkey == child.script_pubkey)
        .unwrap();
    let digests = utxo::taproot::taproot_digests(&tx, std::slice::from_ref(prevout)).unwrap();
    assert!(custos_tests::schnorr::bip340_libsecp256k1(
        &child_key,
        &digests[0],
        witness[0]
    ));
    node.mine(1).await;
    wait_for(fc, &w.id, "confirmed").await;

    // A rogue coordinator names m/0/8 with m/0/7's address: every signer
    // derives m/0/8's taproot child itself and refuses, naming both.
    let m08 = derive(8).await;
    let rogue = custos_policy::Withdrawal {
        id: "tr-hd-rogue".into(),
        wallet: "ltc-tr".into(),
        chain: CHAIN.into(),
        asset: "LTC".into(),
        destination: payee().text,
        amount: custos_policy::Amount(u128::from(LTC / 10)),
        fee_cap: custos_policy::Amount(u128::from(FEE_CAP)),
        initiator: "payments-backend".into(),
        tx_digest: String::new(),
        source: None,
    };
    let authorization = custos_tests::claimed_source(rogue, "m/0/8", &d.address);
    let why = format!(
        "source path m/0/8 derives {}, not the source address {}",
        m08.address, d.address
    );
    let signers = coordinator_signer_clients(fc.tc.cluster.layout()).await;
    assert_eq!(
        refusals_saying(&signers, authorization, "ltc-tr", "p-none", &why).await,
        signers.len()
    );
}

/// A Bitcoin-format output carries a u64 of base units: a larger amount or
/// fee cap is refused when the withdrawal is requested, naming the field,
/// and nothing is stored.
async fn amounts_beyond_a_transaction_output_are_refused_at_creation(fc: &FlowCluster) {
    let too_big = (u128::from(u64::MAX) + 1).to_string();
    for (field, amount, fee_cap) in [
        ("amount", too_big.clone(), String::new()),
        ("fee_cap", LTC.to_string(), too_big.clone()),
    ] {
        let e = fc
            .backend
            .clone()
            .create_withdrawal(CreateWithdrawalRequest {
                idempotency_key: format!("ltc-too-big-{field}"),
                wallet: "ltc-hot".into(),
                asset: "LTC".into(),
                destination: payee().text,
                amount,
                fee_cap,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{field}: {e}");
        assert!(
            e.message()
                .contains(&format!("{field}: {too_big} base units"))
                && e.message().contains(CHAIN),
            "{field}: {e}"
        );
    }
    let listed = fc
        .backend
        .clone()
        .list_withdrawals(custos_proto::custody::ListWithdrawalsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.withdrawals.is_empty(), "{:?}", listed.withdrawals);
}

/// Deposits of 0.3 LTC three times; a 0.5 LTC withdrawal (allowed by the
/// policy) spends two of them with change back to the wallet, each input
/// signed in its own logged session; the node accepts and mines it.
async fn several_inputs_and_change_to_a_confirmed_transaction(
    fc: &FlowCluster,
    node: &Litecoind,
    wallet_address: &str,
) {
    for _ in 0..3 {
        node.pay(wallet_address, 0.3).await;
    }
    node.mine(1).await;
    let w = create(fc, "ltc-1", "ltc-hot", LTC / 2).await;
    assert_eq!(w.chain, CHAIN);
    assert_eq!(w.fee_cap, FEE_CAP.to_string());
    let w = wait_for(fc, &w.id, "broadcast").await;
    let (tx, confs) = watched_tx(node, &w.tx_hash).await;
    assert_eq!(confs, 0, "in the mempool");
    assert_eq!(tx.input.len(), 2, "{tx:?}");
    assert_eq!(tx.output.len(), 2, "payout and change: {tx:?}");
    assert_eq!(tx.output[0].value.to_sat(), LTC / 2);
    assert_eq!(tx.output[0].script_pubkey, payee().script_pubkey);
    let wallet = parse_address(NETWORK, wallet_address).unwrap();
    assert_eq!(tx.output[1].script_pubkey, wallet.script_pubkey, "change");
    node.mine(1).await;
    let w = wait_for(fc, &w.id, "confirmed").await;
    let fee = 60 * LTC / 100 - tx.output.iter().map(|o| o.value.to_sat()).sum::<u64>();
    assert!(fee > 0 && fee <= FEE_CAP, "fee {fee}");
    assert_eq!(w.fee_paid, fee.to_string(), "{w:?}");

    // The ledger: the three deposits credited once each (0.9 LTC in from
    // outside, the 0.5 LTC payout out to it), the withdrawal's change to the
    // same address not counted as a deposit.
    let dir = fc.tc.cluster.layout().dir.clone();
    let external = || {
        custos_tests::external_balances(&dir, "ltc-hot")
            .get("LTC")
            .cloned()
    };
    let deposited = (9 * LTC / 10 - LTC / 2).to_string();
    let started = Instant::now();
    while external().as_deref() != Some(&format!("-{deposited}")) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "deposits not credited: external {:?}",
            external()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(external(), Some(format!("-{deposited}")), "credited twice");
    let credited = metric(
        fc.tc.cluster.layout().coordinator.metrics_listen,
        "custos_deposits_credited_total",
    );
    assert_eq!(credited, 3.0, "one per deposit");

    // Reconciliation against the node: the wallet's coins (the unspent
    // deposit and the change) are what the ledger holds for it.
    let out = std::process::Command::new(bin_dir().join("custos"))
        .args([
            "ledger",
            "reconcile",
            "--chain",
            CHAIN,
            "--json",
            "--cluster",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let hot = v["wallets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["wallet"] == "ltc-hot")
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(hot["asset"], "LTC", "{v}");
    assert_eq!(hot["address"], wallet_address, "{v}");
    assert_eq!(
        hot["onchain"],
        (9 * LTC / 10 - LTC / 2 - fee).to_string(),
        "{v}"
    );
    assert_eq!(hot["delta"], "0", "{v}");
    assert_eq!(v["ok"], true, "{v}");

    // The log: one transaction, two signing sessions (one per input, each
    // its own digest and presignature), two signatures.
    let entries = log_entries(&mut fc.auditor.clone()).await;
    let sessions: Vec<_> = entries
        .iter()
        .filter_map(|e| match &e.body {
            EntryBody::SigningSession {
                withdrawal_id,
                presignature_id,
                message_digest,
                ..
            } if *withdrawal_id == w.id => Some((presignature_id.clone(), *message_digest)),
            _ => None,
        })
        .collect();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert_ne!(sessions[0].0, sessions[1].0, "one presignature per input");
    assert_ne!(sessions[0].1, sessions[1].1, "one digest per input");
    let prepared = entries
        .iter()
        .filter(|e| matches!(&e.body, EntryBody::TransactionPrepared { withdrawal_id, .. } if *withdrawal_id == w.id))
        .count();
    assert_eq!(prepared, 1);
    // The confirmation is logged too (in the next checkpoint).
    let started = Instant::now();
    loop {
        let entries = log_entries(&mut fc.auditor.clone()).await;
        let confirmed = entries.iter().any(|e| {
            matches!(&e.body, EntryBody::Confirmed { withdrawal_id, txid, .. } if *withdrawal_id == w.id && *txid == w.tx_hash)
        });
        if confirmed {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no Confirmed entry for {}",
            w.tx_hash
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Exports the log and runs `custos audit verify --policy` (the test
/// policy) until it passes and reports `wanted` (the last entries reach a
/// checkpoint a moment later); panics after a minute with the report.
async fn verify_until(fc: &FlowCluster, wanted: &str) {
    let layout = fc.tc.cluster.layout();
    let policy = layout.dir.parent().unwrap().join("ltc-policy.toml");
    custos_tests::audit::verify_policy_until(&layout.dir, &policy, |o| o.stdout.contains(wanted))
        .await;
}

/// The mempool entry of `txid`: (fee, vsize); `None` if the node has none.
async fn mempool_entry(node: &Litecoind, txid: &str) -> Option<(u64, u64)> {
    let v = node
        .rpc()
        .call(None, "getmempoolentry", json!([txid]))
        .await
        .ok()?;
    let fee = utxo::rpc::coins_to_base_units("getmempoolentry", &v["fees"]["base"]).unwrap();
    Some((fee, v["vsize"].as_u64().unwrap()))
}

/// Replace-by-fee driven by the engine (docs/SECURITY.md case 60): a
/// two-input transaction left unmined past `resubmit_after_secs` is
/// replaced by one spending the same coins, paying the same output, with a
/// fee higher by at least the node's incremental relay fee, each input
/// signed in its own logged session by signers that check it replaces what
/// they signed; the node takes the replacement into its mempool in place of
/// the original, and the replacement is what confirms and what the ledger
/// and the log show.
async fn a_stuck_transaction_is_replaced_by_fee(
    fc: &FlowCluster,
    node: &Litecoind,
    wallet_address: &str,
) {
    for _ in 0..2 {
        node.pay(wallet_address, 0.3).await;
    }
    node.mine(1).await;
    let w = create(fc, "ltc-rbf", "ltc-hot", 45 * LTC / 100).await;
    let w = wait_for(fc, &w.id, "broadcast").await;
    let first_hash = w.tx_hash.clone();
    let (first, _) = watched_tx(node, &first_hash).await;
    assert_eq!(first.input.len(), 2, "{first:?}");
    let started = Instant::now();
    let first_entry = loop {
        if let Some(e) = mempool_entry(node, &first_hash).await {
            break e;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not in the mempool"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let w = wait_until(fc, &w.id, "a replacement", Duration::from_secs(90), |w| {
        w.tx_hash != first_hash && !w.tx_hash.is_empty()
    })
    .await;
    assert_eq!(w.state, "broadcast", "{w:?}");
    assert!(
        w.signer_notes.iter().any(|n| n.contains("replaced by")),
        "{:?}",
        w.signer_notes
    );
    let (next, confs) = watched_tx(node, &w.tx_hash).await;
    assert_eq!(confs, 0);
    let started = Instant::now();
    let next_entry = loop {
        if let Some(e) = mempool_entry(node, &w.tx_hash).await {
            break e;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the replacement is not in the mempool"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        mempool_entry(node, &first_hash).await.is_none(),
        "the original is replaced"
    );
    let coins = |t: &Transaction| {
        let mut c: Vec<_> = t.input.iter().map(|i| i.previous_output).collect();
        c.sort();
        c
    };
    assert_eq!(coins(&first), coins(&next), "same coins");
    assert_eq!(next.output[0], first.output[0], "same payout");
    let info = node
        .rpc()
        .call(None, "getnetworkinfo", json!([]))
        .await
        .unwrap();
    let incremental =
        utxo::rpc::coins_to_base_units("getnetworkinfo", &info["incrementalfee"]).unwrap();
    assert!(
        next_entry.0 >= first_entry.0 + next_entry.1 * incremental / 1000,
        "BIP125 rule 4: {next_entry:?} replacing {first_entry:?} at {incremental} per kvB"
    );
    assert!(next_entry.0 <= FEE_CAP, "within the cap: {next_entry:?}");
    node.mine(1).await;
    let w = wait_for(fc, &w.id, "confirmed").await;
    assert_eq!(w.fee_paid, next_entry.0.to_string(), "{w:?}");
    assert_ne!(w.tx_hash, first_hash);

    // The log: two transactions prepared, two sessions each (one per
    // input), both broadcasts (the last in a later checkpoint).
    let started = Instant::now();
    let entries = loop {
        let entries = log_entries(&mut fc.auditor.clone()).await;
        let broadcasts = entries
            .iter()
            .filter(|e| matches!(&e.body, EntryBody::TransactionBroadcast { withdrawal_id, .. } if *withdrawal_id == w.id))
            .count();
        if broadcasts == 2 || started.elapsed() > Duration::from_secs(60) {
            break entries;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let count = |f: &dyn Fn(&EntryBody) -> bool| entries.iter().filter(|e| f(&e.body)).count();
    assert_eq!(
        count(
            &|b| matches!(b, EntryBody::TransactionPrepared { withdrawal_id, .. } if *withdrawal_id == w.id)
        ),
        2
    );
    assert_eq!(
        count(
            &|b| matches!(b, EntryBody::SigningSession { withdrawal_id, .. } if *withdrawal_id == w.id)
        ),
        4
    );
    assert_eq!(
        count(
            &|b| matches!(b, EntryBody::TransactionBroadcast { withdrawal_id, .. } if *withdrawal_id == w.id)
        ),
        2
    );
    // An auditor replays both versions' sessions against the policy: every
    // signature so far (this withdrawal's four, the first step's two).
    verify_until(fc, "signatures   6 authorised of 6 checked (policy replay").await;
}

/// Batched payouts (docs/SECURITY.md case 61): three withdrawals of one
/// wallet ready to sign within the batching window are paid by one
/// transaction, one output each plus change, signed in the lead's sessions
/// after every signer verified each of them; each is confirmed with its own
/// share of the fee (within its own cap), the log binds each to the
/// transaction, and the ledger still reconciles with the node.
async fn withdrawals_ready_together_share_one_transaction(
    fc: &FlowCluster,
    node: &Litecoind,
    wallet_address: &str,
) {
    node.pay(wallet_address, 0.5).await;
    node.mine(1).await;
    let mut ids = Vec::new();
    for (i, amount) in [10, 11, 12].into_iter().enumerate() {
        let w = create(fc, &format!("ltc-batch-{i}"), "ltc-hot", amount * LTC / 100).await;
        ids.push(w.id);
    }
    let mut ws = Vec::new();
    for id in &ids {
        ws.push(wait_for(fc, id, "broadcast").await);
    }
    let hash = ws[0].tx_hash.clone();
    assert!(
        ws.iter().all(|w| w.tx_hash == hash),
        "one transaction: {ws:?}"
    );
    let (tx, confs) = watched_tx(node, &hash).await;
    assert_eq!(confs, 0);
    let payee = payee().script_pubkey;
    let mut paid: Vec<u64> = tx
        .output
        .iter()
        .filter(|o| o.script_pubkey == payee)
        .map(|o| o.value.to_sat())
        .collect();
    paid.sort_unstable();
    assert_eq!(
        paid,
        vec![10 * LTC / 100, 11 * LTC / 100, 12 * LTC / 100],
        "{tx:?}"
    );
    assert!(
        tx.output.len() <= 4,
        "three payouts and at most one change: {tx:?}"
    );
    let (fee, _) = mempool_entry(node, &hash).await.expect("in the mempool");
    node.mine(1).await;
    let mut shares = Vec::new();
    for id in &ids {
        let w = wait_for(fc, id, "confirmed").await;
        assert_eq!(w.tx_hash, hash);
        shares.push(w.fee_paid.parse::<u64>().unwrap());
    }
    assert_eq!(
        shares.iter().sum::<u64>(),
        fee,
        "the shares are the fee: {shares:?}"
    );
    assert!(
        shares.iter().all(|s| *s <= FEE_CAP && *s >= fee / 3),
        "{shares:?}"
    );

    // The log: each withdrawal has the same transaction prepared; only the
    // lead has signing sessions (one per input).
    let entries = log_entries(&mut fc.auditor.clone()).await;
    let prepared: Vec<_> = entries
        .iter()
        .filter_map(|e| match &e.body {
            EntryBody::TransactionPrepared {
                withdrawal_id,
                unsigned_tx,
                ..
            } if ids.contains(withdrawal_id) => Some(unsigned_tx.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(prepared.len(), 3);
    assert!(prepared.iter().all(|p| *p == prepared[0]));
    let with_sessions: std::collections::BTreeSet<_> = entries
        .iter()
        .filter_map(|e| match &e.body {
            EntryBody::SigningSession { withdrawal_id, .. } if ids.contains(withdrawal_id) => {
                Some(withdrawal_id.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(with_sessions.len(), 1, "the lead signs: {with_sessions:?}");

    // The ledger holds what the node holds for the wallet.
    let out = std::process::Command::new(bin_dir().join("custos"))
        .args([
            "ledger",
            "reconcile",
            "--chain",
            CHAIN,
            "--json",
            "--cluster",
        ])
        .arg(&fc.tc.cluster.layout().dir)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let hot = v["wallets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["wallet"] == "ltc-hot")
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(hot["delta"], "0", "{v}");

    // An auditor replays each member's approval at the lead's session and
    // matches every output to the withdrawal that logged it.
    verify_until(
        fc,
        "batched      3 payouts authorised in 1 batched transactions",
    )
    .await;
}

/// Deposits are read with `listsinceblock` from a cursor that moves only
/// once a scan's deposits are credited: the cursor is stored, and payments
/// in blocks after it (here two, in two blocks) are each credited once.
async fn deposits_after_the_scan_cursor_are_credited(
    fc: &FlowCluster,
    node: &Litecoind,
    wallet_address: &str,
) {
    let layout = fc.tc.cluster.layout();
    let metrics = layout.coordinator.metrics_listen;
    let url = custos_tests::coordinator_sqlite_url(layout);
    let pool = custos_service::db::Db::connect(&url, 1).await.unwrap().pool;
    let cursor = || async {
        sqlx::query_as::<_, (String, String)>(
            "SELECT block_hash, addresses FROM utxo_deposit_cursors WHERE chain = $1",
        )
        .bind(CHAIN)
        .fetch_optional(&pool)
        .await
        .unwrap()
    };
    let (first, covered) = cursor().await.expect("the scan stored its cursor");
    assert!(covered.contains(wallet_address), "{covered}");
    // A cursor block the node does not know (a resynced node) falls back to
    // a scan from the first block instead of stopping deposits.
    let log = layout.log_file("coordinator");
    let unknown = "11".repeat(32);
    let fell_back = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("does not know the deposit cursor's block")
    };
    let started = Instant::now();
    while !fell_back() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no fallback from an unknown cursor block; cursor {:?}; coordinator log:\n{}",
            cursor().await,
            log_tail(fc, 30)
        );
        sqlx::query("UPDATE utxo_deposit_cursors SET block_hash = $1 WHERE chain = $2")
            .bind(&unknown)
            .bind(CHAIN)
            .execute(&pool)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let before = metric(metrics, "custos_deposits_credited_total");
    for _ in 0..2 {
        node.pay(wallet_address, 0.2).await;
        node.mine(1).await;
    }
    let started = Instant::now();
    while metric(metrics, "custos_deposits_credited_total") < before + 2.0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "deposits after the cursor not credited"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        metric(metrics, "custos_deposits_credited_total"),
        before + 2.0,
        "credited once each"
    );
    let (next, _) = cursor().await.unwrap();
    assert_ne!(next, first, "the cursor moved past the credited blocks");
    assert_ne!(next, unknown, "the fallback scan stored a known block");
}

/// A rogue coordinator (the coordinator's own credentials) asks every signer
/// to sign PSBTs that differ from an approved withdrawal: an extra output, a
/// fee above the cap, another amount, another input index. Each is refused
/// by every signer, naming what is wrong.
async fn signers_refuse_a_psbt_that_differs_from_the_approval(
    fc: &FlowCluster,
    wallet_address: &str,
) {
    use custos_policy::{Amount, Withdrawal as PW, intent_digest};
    use custos_proto::signer::WithdrawalAuthorization;

    let layout = fc.tc.cluster.layout().clone();
    let signers = coordinator_signer_clients(&layout).await;
    let p = layout.policy.as_ref().unwrap();
    let document = std::fs::read(&p.document).unwrap();
    let signatures = std::fs::read(&p.signatures).unwrap();
    let key = fc
        .tc
        .client
        .clone()
        .get_key(GetKeyRequest {
            key_id: "ltc-rogue".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let wallet = parse_address(NETWORK, wallet_address).unwrap();
    let mut w = PW {
        id: "rogue-ltc".into(),
        wallet: "ltc-rogue".into(),
        chain: CHAIN.into(),
        asset: "LTC".into(),
        destination: payee().text,
        amount: Amount(u128::from(LTC / 10)),
        fee_cap: Amount(u128::from(FEE_CAP)),
        initiator: "payments-backend".into(),
        tx_digest: String::new(),
        source: None,
    };
    w.tx_digest = hex::encode(intent_digest(&w));
    let coins = utxo::testing::coins(&wallet.script_pubkey, &[LTC / 5, LTC / 5]);
    let payout = |amount: u64| Payout {
        withdrawal_id: w.id.clone(),
        script_pubkey: payee().script_pubkey,
        amount,
        fee_cap: FEE_CAP,
    };
    let build = |payouts: &[Payout], rate: u64, coins: &[utxo::Utxo]| {
        utxo::build_unsigned(&BuildRequest {
            coins,
            required: &[],
            payouts,
            change_script: &wallet.script_pubkey,
            fee_rate_sat_per_kvb: rate,
        })
        .unwrap()
        .psbt
    };
    let auth = |tx: Vec<u8>, input: u32| WithdrawalAuthorization {
        withdrawal_json: serde_json::to_vec(&w).unwrap(),
        unsigned_tx: tx,
        policy_document: document.clone(),
        policy_signatures: signatures.clone(),
        rule_id: "small-ltc-allow".into(),
        statement_expiry: 0,
        risk_score: 0,
        input_index: input,
        ..Default::default()
    };
    let extra = Payout {
        withdrawal_id: "stolen".into(),
        script_pubkey: wallet_addr_of_seed(13).script_pubkey,
        amount: LTC / 20,
        fee_cap: FEE_CAP,
    };
    let cases: Vec<(&str, WithdrawalAuthorization, &str)> = vec![
        (
            "extra output",
            auth(build(&[payout(LTC / 10), extra], 1_000, &coins), 0),
            "outputs beyond",
        ),
        (
            "fee above the cap",
            // Built as if the cap were 1 LTC; the approval says 0.001.
            auth(
                build(
                    &[Payout {
                        fee_cap: LTC,
                        ..payout(LTC / 10)
                    }],
                    5_000_000,
                    &coins,
                ),
                0,
            ),
            "fee",
        ),
        (
            "another amount",
            auth(build(&[payout(LTC / 10 + 1)], 1_000, &coins), 0),
            "output 0: amount",
        ),
        (
            "an input the transaction does not have",
            auth(build(&[payout(LTC / 10)], 1_000, &coins[..1]), 1),
            "input_index 1",
        ),
    ];
    // Batches (case 61): a member of another wallet, and a member's output
    // of another amount than its approval, refused naming the member or
    // the output, before any log check.
    let member = |wallet: &str| {
        let mut m = PW {
            id: "rogue-ltc-2".into(),
            wallet: wallet.into(),
            ..w.clone()
        };
        m.tx_digest = hex::encode(intent_digest(&m));
        WithdrawalAuthorization {
            withdrawal_json: serde_json::to_vec(&m).unwrap(),
            policy_document: document.clone(),
            policy_signatures: signatures.clone(),
            rule_id: "small-ltc-allow".into(),
            ..Default::default()
        }
    };
    let two = |second: u64| {
        build(
            &[
                payout(LTC / 10),
                Payout {
                    withdrawal_id: "rogue-ltc-2".into(),
                    ..payout(second)
                },
            ],
            1_000,
            &coins,
        )
    };
    let mut other_wallet = auth(two(LTC / 10), 0);
    other_wallet.batch = vec![member("ltc-hot")];
    let mut other_amount = auth(two(LTC / 10 + 5), 0);
    other_amount.batch = vec![member("ltc-rogue")];
    let cases = cases.into_iter().chain([
        (
            "a batch member of another wallet",
            other_wallet,
            "a batch is one wallet's payouts",
        ),
        (
            "a batch member paid another amount",
            other_amount,
            "output 1: amount",
        ),
    ]);
    for (what, authorization, why) in cases {
        let named = refusals_saying(&signers, authorization, &key.key_id, "p-none", why).await;
        assert_eq!(named, signers.len(), "{what}: every signer names {why:?}");
    }
}

fn wallet_addr_of_seed(seed: u8) -> UtxoAddress {
    let secp = secp256k1::Secp256k1::new();
    let sk = secp256k1::SecretKey::from_byte_array([seed; 32]).unwrap();
    let pk = secp256k1::PublicKey::from_secret_key(&secp, &sk).serialize();
    utxo::wallet_address(NETWORK, &pk).unwrap()
}

/// Asks every signer directly to sign with `authorization`; each must
/// refuse. Returns how many refusals say `why`.
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
            .expect_err(&format!("{node} signed"));
        if err.message().contains(why) {
            named += 1;
        } else {
            eprintln!("{node}: {}", err.message());
        }
    }
    named
}

/// The node stops while a withdrawal is being built and signed, and again
/// while it is broadcast: the withdrawal waits with a note and completes
/// when the node is back. Then a reorg (`invalidateblock`) takes its block
/// away before the configured 2 confirmations: the withdrawal stays
/// `broadcast` (its transaction back in the mempool, sent again) and is
/// confirmed once mined again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_restart_and_reorg_mid_flow() {
    let mut node = Litecoind::start().await;
    let (fc, addresses) = start_ltc(&node, &["ltc-hot"], "confirmations = 2").await;
    node.pay(&addresses[0], 0.4).await;
    node.mine(1).await;
    node.stop().await;
    let w = create(&fc, "ltc-down", "ltc-hot", LTC / 4).await;
    let w = wait_until(
        &fc,
        &w.id,
        "a note on the node",
        Duration::from_secs(60),
        |w| {
            w.signer_notes
                .iter()
                .any(|n| n.contains("chain litecoin-regtest"))
        },
    )
    .await;
    assert_eq!(w.state, "signing", "{w:?}");
    node.launch().await;
    let w = wait_for(&fc, &w.id, "broadcast").await;
    let (_, confs) = watched_tx(&node, &w.tx_hash).await;
    assert_eq!(confs, 0);
    let blocks = node.mine(1).await;
    let w = wait_until(
        &fc,
        &w.id,
        "1 of 2 confirmations",
        Duration::from_secs(60),
        |w| {
            w.signer_notes
                .iter()
                .any(|n| n.contains("1 of 2 confirmations"))
        },
    )
    .await;
    node.rpc()
        .call(None, "invalidateblock", json!([blocks[0]]))
        .await
        .unwrap();
    // The wallet hears of the disconnected block asynchronously too.
    let started = Instant::now();
    while watched_tx(&node, &w.tx_hash).await.1 != 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still confirmed after the reorg"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let w = wait_until(
        &fc,
        &w.id,
        "back in the mempool",
        Duration::from_secs(60),
        |w| {
            w.signer_notes
                .last()
                .is_some_and(|n| n.contains("in the mempool"))
        },
    )
    .await;
    assert_eq!(w.state, "broadcast");
    node.mine(2).await;
    let w = wait_for(&fc, &w.id, "confirmed").await;
    let (_, confs) = watched_tx(&node, &w.tx_hash).await;
    assert!(confs >= 2, "{confs}");
    fc.tc.cluster.stop().await.unwrap();
}

#[path = "litecoin/deposit_reorg.rs"]
mod deposit_reorg;
