//! A compromised coordinator cannot get a signature: the test talks to the
//! signers directly with the coordinator's own mTLS identity and sends
//! requests that the policy and the approvers did not authorise. Every signer
//! refuses on its own checks (docs/SECURITY.md cases 10-16), before any
//! presignature is touched. Also: velocity limits enforced by the signers'
//! own records after the coordinator's history is wiped.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use custos_devkit::ClusterLayout;
use custos_policy::{
    ActivePolicy, Amount, Approval, ApprovalStatement, Policy, Timestamp, Verdict, Withdrawal,
    evaluate, intent_digest,
};
use custos_proto::custody::GetWithdrawalRequest;
use custos_proto::signer::signer_control_client::SignerControlClient;
use custos_proto::signer::{SignWithdrawalRequest, WithdrawalAuthorization};
use custos_tests::*;
use tonic::Code;
use tonic::transport::Channel;

const LIMIT: Duration = Duration::from_secs(90);

/// SignerControl clients authenticated as the coordinator.
async fn rogue_clients(layout: &ClusterLayout) -> Vec<(String, SignerControlClient<Channel>)> {
    coordinator_signer_clients(layout).await
}

struct Bundle {
    document: Vec<u8>,
    signatures: Vec<u8>,
}

fn bundle(layout: &ClusterLayout) -> Bundle {
    let p = layout.policy.as_ref().unwrap();
    Bundle {
        document: std::fs::read(&p.document).unwrap(),
        signatures: std::fs::read(&p.signatures).unwrap(),
    }
}

/// `document` signed by both demo admins (the cluster's admin set).
fn admin_signed(document: String) -> Bundle {
    Bundle {
        signatures: custos_tests::admin_signatures(document.as_bytes(), &["admin1", "admin2"]),
        document: document.into_bytes(),
    }
}

fn now() -> i64 {
    custos_clock::now_secs()
}

/// Idempotency key of each withdrawal id the test made (the flow policy
/// requires signed requests, whose ids follow from the key).
fn idempotency_keys() -> &'static std::sync::Mutex<std::collections::BTreeMap<String, String>> {
    static KEYS: std::sync::OnceLock<std::sync::Mutex<std::collections::BTreeMap<String, String>>> =
        std::sync::OnceLock::new();
    KEYS.get_or_init(Default::default)
}

/// The withdrawal the payments backend requested with idempotency key `key`
/// (its id is the one the coordinator gives that signed request).
fn withdrawal(key: &str, to: &str, amount: u128) -> Withdrawal {
    let id = custos_policy::request_withdrawal_id(custos_devkit::BACKEND_CLIENT, key);
    idempotency_keys()
        .lock()
        .unwrap()
        .insert(id.clone(), key.to_owned());
    Withdrawal {
        source: None,
        id,
        wallet: "w-hot".into(),
        chain: "ethereum".into(),
        asset: "ETH".into(),
        destination: to.into(),
        amount: Amount(amount),
        fee_cap: Amount(2_100_000_000_000_000),
        initiator: "payments-backend".into(),
        tx_digest: String::new(),
    }
}

/// The statement the policy would produce for `w` and its rule id.
fn statement(doc: &[u8], w: &Withdrawal, expiry: i64) -> (ApprovalStatement, String) {
    let active = ActivePolicy::assumed(Policy::parse(doc).unwrap(), Timestamp(0));
    let mut w = w.clone();
    w.tx_digest = hex::encode(intent_digest(&w));
    let d = evaluate(&active, &w, &[], Timestamp(now()), 0).unwrap();
    let rule = d.rule_id.clone().unwrap();
    (
        ApprovalStatement::for_decision(&d, &w, Timestamp(expiry)).unwrap(),
        rule,
    )
}

fn sign_all(st: &ApprovalStatement, who: &[&str]) -> Vec<Approval> {
    who.iter()
        .map(|w| Approval::sign(st, Verdict::Approve, w, &approver_key(w)).unwrap())
        .collect()
}

fn auth(
    b: &Bundle,
    w: &Withdrawal,
    rule: &str,
    expiry: i64,
    approvals: &[Approval],
) -> WithdrawalAuthorization {
    // The backend's genuine signed request for `w` as it stands.
    let key = idempotency_keys()
        .lock()
        .unwrap()
        .get(&w.id)
        .cloned()
        .unwrap_or_default();
    let request_signature =
        custos_policy::RequestStatement::for_withdrawal(w, &key).sign(&request_key());
    WithdrawalAuthorization {
        idempotency_key: key,
        request_signature,
        withdrawal_json: serde_json::to_vec(w).unwrap(),
        policy_document: b.document.clone(),
        policy_signatures: b.signatures.clone(),
        // As the coordinator ships it: a signer that has not yet learned the
        // bundle the log activated learns it here (a fresh cluster's first
        // requests would otherwise race the signers' first checkpoint).
        latest_policy_document: b.document.clone(),
        latest_policy_signatures: b.signatures.clone(),
        rule_id: rule.into(),
        statement_expiry: expiry,
        risk_score: 0,
        approvals_json: serde_json::to_vec(approvals).unwrap(),
        ..Default::default()
    }
}

/// Sends `a` to every signer at once (register + sign) and asserts each
/// refuses with PERMISSION_DENIED (co-signer checks) and a message
/// containing `why`.
async fn all_refuse(
    signers: &[(String, SignerControlClient<Channel>)],
    a: &WithdrawalAuthorization,
    register: bool,
    why: &str,
) {
    let asks = signers.iter().map(|(node, c)| async move {
        if register {
            let e = c.clone().register_quorum(a.clone()).await.unwrap_err();
            assert_eq!(e.code(), Code::PermissionDenied, "{node} register: {e}");
            assert!(e.message().contains(why), "{node} register: {e}");
        }
        let e = c
            .clone()
            .sign_withdrawal(SignWithdrawalRequest {
                authorization: Some(a.clone()),
                key_id: "w-hot".into(),
                presignature_id: "ps-rogue".into(),
            })
            .await
            .unwrap_err();
        // NOT_FOUND would mean the checks passed and only the presignature was missing.
        assert_eq!(e.code(), Code::PermissionDenied, "{node} sign: {e}");
        assert!(e.message().contains(why), "{node} sign: {e}");
    });
    futures::future::join_all(asks).await;
}

/// A real withdrawal of 5 ETH awaiting two approvals, and the authorization
/// a rogue coordinator would send with alice's and bob's genuine approvals.
async fn pending_with_quorum(
    fc: &FlowCluster,
    b: &Bundle,
    request: &str,
    expiry: i64,
) -> (custos_proto::custody::Withdrawal, WithdrawalAuthorization) {
    let pending = fc
        .backend
        .clone()
        .create_withdrawal(withdrawal_req(request, "w-hot", WHITELISTED, 5 * ETH))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pending.state, "awaiting_approvals", "{}", pending.decision);
    let mut w = withdrawal(request, WHITELISTED, 5 * ETH);
    assert_eq!(w.id, pending.id);
    w.destination = pending.destination.clone();
    w.fee_cap = Amount(pending.fee_cap.parse().unwrap());
    let (st, rule) = statement(&b.document, &w, expiry);
    let a = auth(b, &w, &rule, expiry, &sign_all(&st, &["alice", "bob"]));
    (pending, a)
}

/// signer-3 was down while the coordinator acted, so it heard nothing from
/// it: its refusal of `a` once it has learnt the facts from the entries
/// shipped with the checkpoints it co-signs after its restart (the message
/// names the log entry, which only that path does).
async fn signer3_refusal_from_log(
    layout: &ClusterLayout,
    a: &WithdrawalAuthorization,
) -> tonic::Status {
    let signer3 = rogue_clients(layout)
        .await
        .into_iter()
        .find(|(n, _)| n == "signer-3")
        .unwrap()
        .1;
    refusal_naming("signer-3", "(log entry", || {
        let (mut c, a) = (signer3.clone(), a.clone());
        async move { c.register_quorum(a).await.map(|_| ()) }
    })
    .await
}

/// Calls `ask` until it is refused PERMISSION_DENIED with a message naming
/// `want` (a signer learning a fact from the log does so within a few
/// checkpoint rounds), and returns that refusal; panics after 60 s.
async fn refusal_naming<F, Fut>(who: &str, want: &str, mut ask: F) -> tonic::Status
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>>,
{
    let started = std::time::Instant::now();
    loop {
        let r = ask().await;
        if let Err(e) = &r
            && e.message().contains(want)
        {
            assert_eq!(e.code(), Code::PermissionDenied, "{who}: {e}");
            return e.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{who} never refused naming {want:?}: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Copies the directory tree `from` to `to` (files and directories only).
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compromised_coordinator_gets_no_signature() {
    // The signers' risk model denies cold-storage; the coordinator's does not
    // (as if its risk configuration or database had been tampered with).
    let signer_risk = format!("[risk]\ndeny_destinations = [{COLD_STORAGE:?}]");
    let mut fc = start_flow_on(
        &flow_policy(),
        false,
        &["w-hot"],
        FlowSettings {
            signer_toml: &signer_risk,
            // Four presignatures over rotating pairs: signer-1 holds three,
            // so its snapshot (case 44) holds some that real-1 does not use.
            presignature_pool: Some(4),
            ..Default::default()
        },
    )
    .await;
    let layout = fc.tc.cluster.layout().clone();
    let signers = rogue_clients(&layout).await;
    let b = bundle(&layout);
    let expiry = now() + 3600;

    // Too few approvals (case 10).
    let w = withdrawal("rogue-few", WHITELISTED, 5 * ETH);
    let (st, rule) = statement(&b.document, &w, expiry);
    assert_eq!(rule, "medium-two-approvals");
    let a = auth(&b, &w, &rule, expiry, &sign_all(&st, &["alice"]));
    all_refuse(&signers, &a, true, "too few approvals").await;
    // A duplicate approver does not count twice; a non-member never counts.
    let mut dup = sign_all(&st, &["alice"]);
    dup.extend(sign_all(&st, &["alice"]));
    all_refuse(
        &signers,
        &auth(&b, &w, &rule, expiry, &dup),
        true,
        "approvals",
    )
    .await;
    let outsider = sign_all(&st, &["alice", "dave"]);
    all_refuse(
        &signers,
        &auth(&b, &w, &rule, expiry, &outsider),
        true,
        "approvals",
    )
    .await;

    // Approvals over a different amount, or a different destination (case 11).
    let mut bigger = w.clone();
    bigger.amount = Amount(6 * ETH);
    let a = auth(
        &b,
        &bigger,
        &rule,
        expiry,
        &sign_all(&st, &["alice", "bob"]),
    );
    all_refuse(&signers, &a, true, "invalid approvals").await;
    let mut elsewhere = w.clone();
    elsewhere.destination = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359".into();
    let a = auth(
        &b,
        &elsewhere,
        &rule,
        expiry,
        &sign_all(&st, &["alice", "bob"]),
    );
    all_refuse(&signers, &a, true, "invalid approvals").await;

    // A forged bundle: a relaxed document under the real signatures, and one
    // signed by keys that are not admins (case 12).
    let relaxed = String::from_utf8(b.document.clone()).unwrap().replace(
        "amount = { max = \"1000000000000000000\" }\nfee",
        "amount = { max = \"50000000000000000000\" }\nfee",
    );
    assert!(relaxed.as_bytes() != b.document.as_slice(), "no change");
    let forged = Bundle {
        document: relaxed.clone().into_bytes(),
        signatures: b.signatures.clone(),
    };
    let small = withdrawal("rogue-forged", WHITELISTED, 20 * ETH);
    let a = auth(&forged, &small, "small-allow", expiry, &[]);
    all_refuse(&signers, &a, true, "policy bundle").await;
    let mut self_signed = custos_policy::BundleSignatures::new(
        custos_policy::PolicyHash::of_document(relaxed.as_bytes()),
    );
    self_signed.sign(&approver_key("mallory"));
    self_signed.sign(&approver_key("alice"));
    let forged = Bundle {
        document: relaxed.into_bytes(),
        signatures: serde_json::to_vec(&self_signed).unwrap(),
    };
    let a = auth(&forged, &small, "small-allow", expiry, &[]);
    all_refuse(&signers, &a, true, "policy bundle").await;

    // Before the time lock elapses (case 15): valid approvals for the 1 h rule.
    // (Another wallet: a registered quorum counts toward that wallet's velocity.)
    let mut w = withdrawal("rogue-early", WHITELISTED, 500 * ETH);
    w.wallet = "w-early".into();
    let (st, rule) = statement(&b.document, &w, expiry);
    assert_eq!(rule, "huge-approvals-long-delay");
    let a = auth(&b, &w, &rule, expiry, &sign_all(&st, &["alice", "bob"]));
    // Without registering the quorum first, the lock has not even started.
    all_refuse(&signers, &a, false, "never registered").await;
    for (node, c) in &signers {
        let ack = c
            .clone()
            .register_quorum(a.clone())
            .await
            .unwrap()
            .into_inner();
        assert!(ack.signable_from >= now() + 3500, "{node}: {ack:?}");
    }
    all_refuse(&signers, &a, false, "time lock").await;

    // The time lock is measured on each signer's own clock with no skew
    // allowance (case 46): the 5 s rule refuses at 0 s, 2.5 s and 4.9 s
    // after the quorum was registered, and only the log gate refuses after
    // it (the lock starts at the signer's next whole second, so by 6 s).
    let mut w = withdrawal("rogue-lock", WHITELISTED, 50 * ETH);
    w.wallet = "w-lock".into();
    let (st, rule) = statement(&b.document, &w, expiry);
    assert_eq!(rule, "large-approvals-delay");
    let a = auth(&b, &w, &rule, expiry, &sign_all(&st, &["alice", "bob"]));
    let registered = std::time::Instant::now();
    let mut lock_ends = i64::MAX;
    for (node, c) in &signers {
        let ack = c
            .clone()
            .register_quorum(a.clone())
            .await
            .unwrap_or_else(|e| panic!("{node}: {e}"))
            .into_inner();
        lock_ends = lock_ends.min(ack.signable_from);
    }
    let lock_ends = std::time::UNIX_EPOCH + Duration::from_secs(lock_ends as u64);
    for at in [0.0, 2.5, 4.9] {
        tokio::time::sleep_until((registered + Duration::from_secs_f64(at)).into()).await;
        all_refuse(&signers, &a, false, "time lock").await;
        assert!(
            std::time::SystemTime::now() < lock_ends,
            "the round at {at} s ended after the lock: the test proves nothing"
        );
    }
    tokio::time::sleep_until((registered + Duration::from_millis(6100)).into()).await;
    all_refuse(&signers, &a, false, "co-signed").await;

    // A new statement under the same withdrawal id restarts the time lock
    // (case 29): re-approval cannot inherit the elapsed time of the old one.
    let mut w = withdrawal("rogue-restart", WHITELISTED, 50 * ETH);
    w.wallet = "w-restart".into();
    let (st, rule) = statement(&b.document, &w, expiry);
    let first = auth(&b, &w, &rule, expiry, &sign_all(&st, &["alice", "bob"]));
    let mut first_from = Vec::new();
    for (_, c) in &signers {
        let ack = c.clone().register_quorum(first.clone()).await.unwrap();
        first_from.push(ack.into_inner().signable_from);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = expiry - 60;
    let (st2, _) = statement(&b.document, &w, later);
    let second = auth(&b, &w, &rule, later, &sign_all(&st2, &["alice", "bob"]));
    for ((node, c), from) in signers.iter().zip(&first_from) {
        let ack = c
            .clone()
            .register_quorum(second.clone())
            .await
            .unwrap()
            .into_inner();
        assert!(
            ack.signable_from >= from + 2,
            "{node}: the new statement kept the old lock start ({} vs {from})",
            ack.signable_from
        );
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The first statement's lock has run out; the second's has not.
    all_refuse(&signers, &second, false, "time lock").await;

    // Expired approvals (case 15).
    let w = withdrawal("rogue-expired", WHITELISTED, 5 * ETH);
    let (st, rule) = statement(&b.document, &w, now() - 10);
    let a = auth(&b, &w, &rule, now() - 10, &sign_all(&st, &["alice", "bob"]));
    all_refuse(&signers, &a, true, "expired").await;

    // A fully authorised request is still refused unless its decision is in a
    // log checkpoint the signer witnessed (the coordinator cannot sign off-log).
    let w = withdrawal("rogue-offlog", WHITELISTED, ETH / 10);
    let (_, rule) = statement(&b.document, &w, expiry);
    assert_eq!(rule, "small-allow");
    let a = auth(&b, &w, &rule, expiry, &[]);
    all_refuse(&signers, &a, false, "co-signed").await;

    // A huge fee cap on an allowed payout (case 38): 0.1 ETH carrying a
    // 0.5 ETH fee cap. small-allow bounds the fee cap at 0.01 ETH, so the
    // signers' own evaluation lands on a blocking rule.
    let mut w = withdrawal("rogue-fee", WHITELISTED, ETH / 10);
    w.fee_cap = Amount(ETH / 2);
    let a = auth(&b, &w, "small-allow", expiry, &[]);
    all_refuse(&signers, &a, true, "(rule small-over-limit)").await;

    // A forged initiator (case 37): the payments backend signed this request;
    // the coordinator names another initiator, strips the signature, or uses
    // the one signed request for a second withdrawal. Each signer refuses.
    let w = withdrawal("rogue-initiator", WHITELISTED, ETH / 10);
    let genuine = auth(&b, &w, "small-allow", expiry, &[]);
    let mut other = w.clone();
    other.initiator = "treasury-ops".into();
    let mut a = genuine.clone();
    a.withdrawal_json = serde_json::to_vec(&other).unwrap();
    all_refuse(&signers, &a, true, "initiator \"treasury-ops\"").await;
    let mut a = genuine.clone();
    a.request_signature.clear();
    all_refuse(&signers, &a, true, "no request signature").await;
    let mut second = w.clone();
    second.id =
        custos_policy::request_withdrawal_id(custos_devkit::BACKEND_CLIENT, "rogue-initiator-2");
    let mut a = genuine.clone();
    a.withdrawal_json = serde_json::to_vec(&second).unwrap();
    all_refuse(
        &signers,
        &a,
        true,
        "one signed request backs one withdrawal",
    )
    .await;
    // The same request moved by the coordinator from the wallet's own
    // address to one of its derived addresses (case 77): the backend's
    // signature covers where it spends from.
    let derived = fc
        .backend
        .clone()
        .derive_address(custos_proto::custody::DeriveAddressRequest {
            wallet: "w-hot".into(),
            index: 3,
            label: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    // The coordinator refuses it too, naming the path to sign.
    let mut unsigned_path = withdrawal_req("moved-source", "w-hot", WHITELISTED, ETH / 10);
    unsigned_path.source_path = derived.path.clone();
    let e = fc
        .backend
        .clone()
        .create_withdrawal(unsigned_path)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    assert!(e.message().contains("source path as m/0/3"), "{e}");
    let mut moved = w.clone();
    moved.source = Some(custos_policy::DerivedSource {
        path: derived.path,
        address: derived.address,
    });
    let mut a = genuine.clone();
    a.withdrawal_json = serde_json::to_vec(&moved).unwrap();
    all_refuse(&signers, &a, true, "source m/0/3)").await;

    // A correctly admin-signed relaxation (v2 adds an address) is not in force
    // on the signers until its change delay has passed on their clocks (cases 12, 13).
    let v2 = String::from_utf8(b.document.clone())
        .unwrap()
        .replacen("version = 1", "version = 2", 1)
        .replacen(
            "[[approvers]]",
            "[[address_book]]\nid = \"new-payee\"\nlabels = [\"opex\"]\nchain = \"ethereum\"\naddress = \"0x1111111111111111111111111111111111111111\"\n\n[[approvers]]",
            1,
        );
    let relaxed = admin_signed(v2);
    let w = withdrawal(
        "rogue-new-address",
        "0x1111111111111111111111111111111111111111",
        ETH / 10,
    );
    let a = auth(&relaxed, &w, "small-allow", expiry, &[]);
    all_refuse(&signers, &a, true, "not in force until").await;

    // A snapshot of signer-1's data directory taken before real-1 is signed
    // (case 44, restored below). The rollback counter stays out of it, as it
    // would on an HSM. signer-3 is down while real-1 is signed, so signer-1
    // is one of its signers.
    let snapshot = tempfile::tempdir().unwrap();
    let signer1_data = layout.signers[0].data_dir.clone();
    let held = || {
        std::fs::read_dir(signer1_data.join("presigs/w-hot"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let started = std::time::Instant::now();
    while held() < 2 {
        assert!(
            started.elapsed() < LIMIT,
            "signer-1 holds {} presignatures",
            held()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    fc.tc.cluster.kill_signer("signer-1").unwrap();
    copy_tree(&signer1_data, snapshot.path());
    fc.tc.cluster.restart_signer("signer-1").await.unwrap();
    fc.tc.cluster.kill_signer("signer-3").unwrap();

    // Replay of a completed withdrawal (case 16): signed once through the real
    // flow, then asked again with another presignature.
    let done = fc
        .backend
        .clone()
        .create_withdrawal(withdrawal_req("real-1", "w-hot", WHITELISTED, ETH / 5))
        .await
        .unwrap()
        .into_inner();
    let done = wait_state(&fc.backend, &done.id, &["signed"], LIMIT).await;
    fc.tc.cluster.restart_signer("signer-3").await.unwrap();
    let signers = rogue_clients(&layout).await;
    let mut w = withdrawal("real-1", WHITELISTED, ETH / 5);
    assert_eq!(w.id, done.id);
    w.destination = done.destination.clone();
    w.fee_cap = Amount(done.fee_cap.parse().unwrap());
    let a = auth(&b, &w, &done.rule_id, expiry, &[]);
    let signed_by: Vec<&(String, SignerControlClient<Channel>)> = signers.iter().collect();
    let mut refused = 0;
    for (node, c) in signed_by {
        let e = c
            .clone()
            .sign_withdrawal(SignWithdrawalRequest {
                authorization: Some(a.clone()),
                key_id: "w-hot".into(),
                presignature_id: "ps-replayed".into(),
            })
            .await
            .unwrap_err();
        // Signers that signed it: replay refused; the other: off-log/witness gate.
        assert!(
            matches!(e.code(), Code::AlreadyExists | Code::PermissionDenied),
            "{node}: {e}"
        );
        if e.code() == Code::AlreadyExists {
            assert!(e.message().contains("already signed"), "{node}: {e}");
            refused += 1;
        }
    }
    assert_eq!(
        refused, 2,
        "both signers of the withdrawal refuse the replay"
    );

    // Every partial is preceded by its signing-session entry in a checkpoint
    // the signer co-signed (case 47). The decision of real-1 is genuinely in
    // the witnessed log; the signer that did not sign it is asked with that
    // proof but no signing entry, then with the entry of the real signing
    // (which names other signers and another presignature): it refuses both.
    let mut auditor = fc.tc.client.clone();
    let (size, entries) = loop {
        let cp = auditor
            .get_checkpoint(custos_proto::custody::GetCheckpointRequest {})
            .await
            .unwrap()
            .into_inner();
        // The log's signature and three cosignatures.
        if cp
            .note
            .lines()
            .filter(|l| l.starts_with('\u{2014}'))
            .count()
            >= 4
        {
            let entries = log_entries(&mut auditor).await;
            break (cp.size, entries);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let find = |want: &str| -> u64 {
        entries
            .iter()
            .position(|e| {
                let (kind, id) = match &e.body {
                    custos_audit::EntryBody::PolicyDecision { withdrawal_id, .. } => {
                        ("decision", withdrawal_id)
                    }
                    custos_audit::EntryBody::SigningSession { withdrawal_id, .. } => {
                        ("signing", withdrawal_id)
                    }
                    _ => return false,
                };
                kind == want && *id == done.id
            })
            .unwrap() as u64
    };
    let (decision_index, signing_index) = (find("decision"), find("signing"));
    let custos_audit::EntryBody::SigningSession { participants, .. } =
        &entries[signing_index as usize].body
    else {
        unreachable!()
    };
    let proven = |index: u64| {
        let mut auditor = auditor.clone();
        async move {
            let entry = auditor
                .get_log_entry(custos_proto::custody::GetLogEntryRequest { index })
                .await
                .unwrap()
                .into_inner()
                .entry;
            let proof = auditor
                .get_inclusion_proof(custos_proto::custody::GetInclusionProofRequest {
                    index,
                    size,
                })
                .await
                .unwrap()
                .into_inner()
                .hashes;
            (entry, proof)
        }
    };
    let mut a = a.clone();
    (a.decision_entry, a.inclusion_proof) = proven(decision_index).await;
    a.decision_entry_index = decision_index;
    a.proof_tree_size = size;
    let (outsider, client) = signers
        .iter()
        .find(|(n, _)| !participants.contains(n))
        .unwrap();
    let ask = |a: WithdrawalAuthorization| {
        let mut c = client.clone();
        async move {
            c.sign_withdrawal(SignWithdrawalRequest {
                authorization: Some(a),
                key_id: "w-hot".into(),
                presignature_id: "ps-offlog".into(),
            })
            .await
            .unwrap_err()
        }
    };
    let e = ask(a.clone()).await;
    assert_eq!(e.code(), Code::PermissionDenied, "{outsider}: {e}");
    assert!(
        e.message().contains("no signing-session entry"),
        "{outsider}: {e}"
    );
    (a.signing_entry, a.signing_inclusion_proof) = proven(signing_index).await;
    a.signing_entry_index = signing_index;
    let e = ask(a.clone()).await;
    assert_eq!(e.code(), Code::PermissionDenied, "{outsider}: {e}");
    assert!(
        e.message().contains("logged signing session"),
        "{outsider}: {e}"
    );

    // signer-1's data directory restored from the snapshot (case 44): its
    // journal no longer records real-1 and every presignature it held then
    // is back, unconsumed. A rogue coordinator replays real-1 with the
    // genuine witnessed proofs and one of those presignatures: the signer
    // refuses from the log (real-1's logged session used another one), and
    // while its view is behind the checkpoint its counter holds, it refuses
    // everything.
    assert_eq!(participants, &["signer-1", "signer-2"]);
    let custos_audit::EntryBody::SigningSession {
        presignature_id: used,
        ..
    } = &entries[signing_index as usize].body
    else {
        unreachable!()
    };
    fc.tc.cluster.kill_signer("signer-1").unwrap();
    let counter = signer1_data.join(custos_hsm::ROLLBACK_COUNTER_FILE);
    let counter_bytes = std::fs::read(&counter).unwrap();
    std::fs::remove_dir_all(&signer1_data).unwrap();
    copy_tree(snapshot.path(), &signer1_data);
    std::fs::write(&counter, counter_bytes).unwrap();
    let restored: Vec<String> = std::fs::read_dir(signer1_data.join("presigs/w-hot"))
        .unwrap()
        .map(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .replace(".sealed", "")
        })
        .filter(|id| Some(id) != used.as_ref())
        .collect();
    assert!(!restored.is_empty(), "the snapshot holds presignatures");
    fc.tc.cluster.restart_signer("signer-1").await.unwrap();
    let signer1 = rogue_clients(&layout).await.remove(0).1;
    for presignature_id in &restored {
        let e = signer1
            .clone()
            .sign_withdrawal(SignWithdrawalRequest {
                authorization: Some(a.clone()),
                key_id: "w-hot".into(),
                presignature_id: presignature_id.clone(),
            })
            .await
            .unwrap_err();
        assert!(
            matches!(e.code(), Code::PermissionDenied | Code::FailedPrecondition),
            "restored signer-1, {presignature_id}: {e}"
        );
    }
    // Caught up (the coordinator sees it behind the log and ships it every
    // entry from the start, though the log has not grown), it names the
    // logged session that fixes real-1's presignature.
    // The proofs go against the newest checkpoint, as the coordinator's
    // would: the restored signer knows only what it co-signed since.
    let prove_in = |index: u64, size: u64| {
        let mut auditor = auditor.clone();
        async move {
            auditor
                .get_inclusion_proof(custos_proto::custody::GetInclusionProofRequest {
                    index,
                    size,
                })
                .await
                .unwrap()
                .into_inner()
                .hashes
        }
    };
    let presignature_id = restored[0].clone();
    refusal_naming("restored signer-1", "logged signing session", || {
        let (auditor, signer1, prove_in) = (auditor.clone(), signer1.clone(), &prove_in);
        let (mut a, presignature_id) = (a.clone(), presignature_id.clone());
        async move {
            let size = auditor
                .clone()
                .get_checkpoint(custos_proto::custody::GetCheckpointRequest {})
                .await?
                .into_inner()
                .size;
            a.proof_tree_size = size;
            a.inclusion_proof = prove_in(decision_index, size).await;
            a.signing_inclusion_proof = prove_in(signing_index, size).await;
            signer1
                .clone()
                .sign_withdrawal(SignWithdrawalRequest {
                    authorization: Some(a),
                    key_id: "w-hot".into(),
                    presignature_id,
                })
                .await
                .map(|_| ())
        }
    })
    .await;

    // A dropped cancel (case 42): signer-3 is down while the backend
    // cancels, so the coordinator's notice never reaches it and its own
    // record has no cancel. Once restarted, it learns the cancel from the
    // entries shipped with the next checkpoint it co-signs, and refuses a
    // fully approved quorum for the withdrawal, naming the log entry.
    let (pending, a) = pending_with_quorum(&fc, &b, "cancel-1", expiry).await;
    fc.tc.cluster.kill_signer("signer-3").unwrap();
    fc.backend
        .clone()
        .cancel_withdrawal(custos_proto::custody::CancelWithdrawalRequest {
            id: pending.id.clone(),
            reason: "duplicate payout".into(),
        })
        .await
        .unwrap();
    fc.tc.cluster.restart_signer("signer-3").await.unwrap();
    let refusal = signer3_refusal_from_log(fc.tc.cluster.layout(), &a).await;
    assert!(refusal.message().contains("cancelled by"), "{refusal}");

    // A dropped reject (case 43): the same with approver carol rejecting
    // while signer-3 is down; alice and bob's approvals do not help.
    let (pending, a) = pending_with_quorum(&fc, &b, "reject-1", expiry).await;
    fc.tc.cluster.kill_signer("signer-3").unwrap();
    submit_verdict(
        &fc.approver,
        &pending,
        "carol",
        Verdict::Reject,
        "unknown payee",
    )
    .await
    .unwrap();
    fc.tc.cluster.restart_signer("signer-3").await.unwrap();
    let refusal = signer3_refusal_from_log(fc.tc.cluster.layout(), &a).await;
    assert!(
        refusal.message().contains("rejected by approver carol"),
        "{refusal}"
    );
    // A forged low risk score (case 36): the coordinator scores a payout to
    // cold-storage low and asks for two approvals; the signers score it
    // themselves (100: on their deny list), so block-high-risk is the rule
    // they find, and they refuse the genuine quorum. The refusal is logged.
    let pending = fc
        .backend
        .clone()
        .create_withdrawal(withdrawal_req("risk-1", "w-hot", COLD_STORAGE, 5 * ETH))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pending.state, "awaiting_approvals", "{}", pending.decision);
    assert!(pending.risk_score < 80, "{}", pending.risk_score);
    approve(&fc.approver, &pending, "alice").await;
    approve(&fc.approver, &pending, "bob").await;
    let failed = wait_state(&fc.backend, &pending.id, &["failed"], LIMIT).await;
    assert!(
        failed.reason.contains("block-high-risk") && failed.reason.contains("deny_list"),
        "{}",
        failed.reason
    );
    assert!(failed.signature_r.is_empty());

    // A withheld policy bundle (case 41): the coordinator restarts on an
    // admin-signed v3 that lowers small-allow's limit, which the log records as
    // activated; a request that shows the signers only v1 is refused by
    // each, from the log (they never saw v3).
    let v3 = String::from_utf8(b.document.clone())
        .unwrap()
        .replacen("version = 1", "version = 3", 1)
        .replacen(
            "amount = { max = \"1000000000000000000\" }\nfee",
            "amount = { max = \"500000000000000000\" }\nfee",
            1,
        );
    let v3 = admin_signed(v3);
    let policy = layout.policy.as_ref().unwrap();
    std::fs::write(&policy.document, &v3.document).unwrap();
    std::fs::write(&policy.signatures, &v3.signatures).unwrap();
    fc.tc.cluster.kill_coordinator().unwrap();
    fc.tc.cluster.restart_coordinator().await.unwrap();
    let w = withdrawal("rogue-withheld", WHITELISTED, ETH / 10);
    let a = auth(&b, &w, "small-allow", expiry, &[]);
    for (node, c) in &signers {
        refusal_naming(node, "the log activated policy", || {
            let (mut c, a) = (c.clone(), a.clone());
            async move { c.register_quorum(a).await.map(|_| ()) }
        })
        .await;
    }

    // The coordinator's own view is unchanged: one signature.
    let again = fc
        .backend
        .clone()
        .get_withdrawal(GetWithdrawalRequest {
            id: done.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.signature_r, done.signature_r);

    // Every refusal above is in the log, signed by the signer that made it
    // (the coordinator logs what signers report; a signer whose refusals
    // wait too long signs nothing more), and `custos audit verify --policy`
    // reports each with its reason (case 53).
    let v1 = layout.dir.join("policy-v1.toml");
    let v3_path = layout.dir.join("policy-v3.toml");
    std::fs::write(&v1, &b.document).unwrap();
    std::fs::write(&v3_path, &v3.document).unwrap();
    let reasons = [
        "too few approvals",
        "policy bundle",
        "never registered",
        "time lock",
        "co-signed",
        "(rule small-over-limit)",
        "initiator \"treasury-ops\"",
        "no request signature",
        "one signed request backs one withdrawal",
        "not in force until",
        "expired",
        "block-high-risk",
        "the log activated policy",
    ];
    let mut want: Vec<(&str, &str)> = Vec::new();
    for signer in ["signer-1", "signer-2", "signer-3"] {
        want.extend(reasons.iter().map(|r| (signer, *r)));
    }
    // The restored signer's replay refusal, signer-3's from the log.
    want.push(("signer-1", "logged signing session"));
    want.push(("signer-3", "cancelled by"));
    want.push(("signer-3", "rejected by approver carol"));
    let report = custos_tests::audit::refusals_reported(
        &layout.dir,
        &[
            "--policy",
            v1.to_str().unwrap(),
            "--policy",
            v3_path.to_str().unwrap(),
        ],
        &want,
    )
    .await;
    assert!(report.ok, "{report}");
    assert!(
        report
            .stdout
            .contains("signatures   1 authorised of 1 checked (policy replay"),
        "{report}"
    );
    fc.tc.cluster.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn velocity_enforced_by_signers_after_coordinator_history_is_wiped() {
    let mut fc = start_flow(&flow_policy(), false, &["w-vel"]).await;
    // 3 x 0.9 ETH plus their fee caps come close to the 3 ETH daily limit
    // of rule small-allow (velocity counts fee caps on the native asset).
    // The spends are split across signer sets (case 40): vel-0 and vel-1 are
    // signed while signer-3 is down, vel-2 while signer-1 is down, so no
    // signer but signer-2 has all three in its own record.
    let mut ids = Vec::new();
    for i in 0..3 {
        match i {
            0 => fc.tc.cluster.kill_signer("signer-3").unwrap(),
            2 => {
                fc.tc.cluster.restart_signer("signer-3").await.unwrap();
                fc.tc.cluster.kill_signer("signer-1").unwrap();
            }
            _ => {}
        }
        let w = fc
            .backend
            .clone()
            .create_withdrawal(withdrawal_req(
                &format!("vel-{i}"),
                "w-vel",
                WHITELISTED,
                ETH / 10 * 9,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(w.rule_id, "small-allow", "{}", w.decision);
        wait_state(&fc.backend, &w.id, &["signed"], LIMIT).await;
        ids.push(w.id);
    }
    fc.tc.cluster.restart_signer("signer-1").await.unwrap();
    let entries = log_entries(&mut fc.auditor.clone()).await;
    let sets: Vec<std::collections::BTreeSet<String>> = ids
        .iter()
        .map(|id| {
            entries
                .iter()
                .find_map(|e| match &e.body {
                    custos_audit::EntryBody::SigningSession {
                        withdrawal_id,
                        participants,
                        ..
                    } if withdrawal_id == id => Some(participants.iter().cloned().collect()),
                    _ => None,
                })
                .unwrap()
        })
        .collect();
    let set = |a: &str, b: &str| [a.to_owned(), b.to_owned()].into_iter().collect();
    assert_eq!(sets[0], set("signer-1", "signer-2"));
    assert_eq!(sets[1], set("signer-1", "signer-2"));
    assert_eq!(sets[2], set("signer-2", "signer-3"));
    // The coordinator catches the next one.
    let over = fc
        .backend
        .clone()
        .create_withdrawal(withdrawal_req("vel-3", "w-vel", WHITELISTED, ETH / 2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(over.state, "blocked", "{}", over.decision);
    assert_eq!(over.rule_id, "small-over-limit");

    // Wipe the coordinator's withdrawal history behind its back.
    fc.tc.cluster.kill_coordinator().unwrap();
    let db_path = fc
        .tc
        .cluster
        .layout()
        .coordinator
        .data_dir
        .join("coordinator.db");
    let db = custos_service::db::Db::connect(&format!("sqlite://{}", db_path.display()), 1)
        .await
        .unwrap();
    for t in ["withdrawals", "approvals", "withdrawal_events"] {
        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {t}")))
            .execute(&db.pool)
            .await
            .unwrap();
    }
    db.pool.close().await;
    fc.tc.cluster.restart_coordinator().await.unwrap();
    fc.tc.wait_aux_ready(Duration::from_secs(60)).await;
    // signer-2, the only one whose own record holds all three, is down: the
    // other two refuse only because the log shows them every spend.
    fc.tc.cluster.kill_signer("signer-2").unwrap();

    // Now the coordinator allows it; the signers refuse it from the log.
    let w = fc
        .backend
        .clone()
        .create_withdrawal(withdrawal_req("vel-4", "w-vel", WHITELISTED, ETH / 2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        w.rule_id, "small-allow",
        "the wiped coordinator should allow: {}",
        w.decision
    );
    let failed = wait_state(&fc.backend, &w.id, &["failed"], LIMIT).await;
    assert!(
        failed.reason.contains("refused") && failed.reason.contains("small-over-limit"),
        "{} / {:?}",
        failed.reason,
        failed.signer_notes
    );
    assert!(failed.signature_r.is_empty());
    // Both signers' refusals are in the log and the verifier reports them.
    let flow = flow_policy();
    custos_tests::audit::refusals_reported(
        &fc.tc.cluster.layout().dir.clone(),
        &["--policy", flow.to_str().unwrap()],
        &[
            ("signer-1", "small-over-limit"),
            ("signer-3", "small-over-limit"),
        ],
    )
    .await;
    fc.tc.cluster.stop().await.unwrap();
}

/// The time lock is measured on the signer's own clock, which a test can
/// drive (docs/SECURITY.md case 46, without sleeping and without a cluster):
/// a Cosigner on a ManualClock registers a 5 s quorum, refuses "time lock" at
/// 0, 2.5 and 4.9 s and at the last millisecond before `signable_from`, and
/// from `signable_from` on refuses only for what the time lock does not
/// decide (here: no log witnessed).
#[test]
fn time_lock_runs_on_the_signers_own_clock() {
    use custos_signer_node::cosigner::{Cosigner, bundles::Bundles, journal::Journal};

    let dir = tempfile::tempdir().unwrap();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let admins =
        custos_policy::AdminSet::parse(&std::fs::read(repo.join("examples/admins.toml")).unwrap())
            .unwrap();
    let start_ms = custos_clock::now_ms() / 1000 * 1000 + 400;
    let clock = custos_clock::ManualClock::at_ms(start_ms);
    let cosigner = Cosigner::new(
        Some(Bundles::open(dir.path(), admins).unwrap()),
        Journal::open(dir.path()).unwrap(),
        None,
    )
    .with_clock(clock.clone());
    let b = admin_signed(std::fs::read_to_string(flow_policy()).unwrap());
    let mut w = withdrawal("clock-lock", WHITELISTED, 50 * ETH);
    w.wallet = "w-clock".into();
    let expiry = (start_ms / 1000) as i64 + 3600;
    let (st, rule) = statement(&b.document, &w, expiry);
    assert_eq!(rule, "large-approvals-delay");
    let a = auth(&b, &w, &rule, expiry, &sign_all(&st, &["alice", "bob"]));
    let (_, signable_from) = cosigner.register_quorum(&a).unwrap();
    // The lock starts at the signer's next whole second and lasts 5 s.
    assert_eq!(signable_from, (start_ms / 1000) as i64 + 1 + 5);
    let end_ms = signable_from as u64 * 1000;
    for at_ms in [start_ms, start_ms + 2_500, start_ms + 4_900, end_ms - 1] {
        clock.set_ms(at_ms);
        let e = cosigner
            .authorize_signing(&a, "ps-clock")
            .map(|_| ())
            .unwrap_err();
        assert!(e.to_string().contains("time lock"), "at {at_ms}: {e}");
    }
    clock.set_ms(end_ms);
    let e = cosigner
        .authorize_signing(&a, "ps-clock")
        .map(|_| ())
        .unwrap_err();
    assert!(!e.to_string().contains("time lock"), "{e}");
}

/// One registration round (`RegisterQuorums`) verifies each withdrawal on
/// its own and after the ones before it: a velocity limit counts the
/// earlier withdrawals of the same round, a refusal fails only its own
/// answer, and everything accepted is durable once the round answers.
#[test]
fn one_registration_round_verifies_each_after_the_ones_before_it() {
    use custos_signer_node::cosigner::{Cosigner, bundles::Bundles, journal::Journal};

    let dir = tempfile::tempdir().unwrap();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let admins =
        custos_policy::AdminSet::parse(&std::fs::read(repo.join("examples/admins.toml")).unwrap())
            .unwrap();
    let cosigner = Cosigner::new(
        Some(Bundles::open(dir.path(), admins).unwrap()),
        Journal::open(dir.path()).unwrap(),
        None,
    );
    let b = admin_signed(std::fs::read_to_string(flow_policy()).unwrap());
    let expiry = now() + 3600;
    // Four 0.9 ETH withdrawals from one wallet: the rule's 3 ETH a day
    // allows three (with their fee caps); alone, each would be allowed.
    let mut batch: Vec<WithdrawalAuthorization> = (0..4)
        .map(|i| {
            let mut w = withdrawal(&format!("round-{i}"), WHITELISTED, ETH / 10 * 9);
            w.wallet = "w-vel".into();
            let (_, rule) = statement(&b.document, &w, expiry);
            assert_eq!(rule, "small-allow");
            auth(&b, &w, &rule, expiry, &[])
        })
        .collect();
    // And one whose quorum is short: a 50 ETH withdrawal approved by one.
    let mut big = withdrawal("round-big", WHITELISTED, 50 * ETH);
    big.wallet = "w-round".into();
    let (st, rule) = statement(&b.document, &big, expiry);
    batch.insert(1, auth(&b, &big, &rule, expiry, &sign_all(&st, &["alice"])));

    let answers = cosigner.register_quorums(&batch);
    let outcome: Vec<String> = answers
        .iter()
        .map(|a| match a {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.to_string(),
        })
        .collect();
    assert_eq!(outcome[0], "ok");
    assert!(outcome[1].contains("refused"), "{outcome:?}");
    assert_eq!(&outcome[2..4], ["ok", "ok"], "{outcome:?}");
    assert!(
        outcome[4].contains("small-over-limit"),
        "the fourth 0.9 ETH of the round must meet the limit: {outcome:?}"
    );
    drop(cosigner);
    // What the round accepted survives a restart; what it refused is absent.
    let journal = Journal::open(dir.path()).unwrap();
    let id = |a: &WithdrawalAuthorization| {
        serde_json::from_slice::<Withdrawal>(&a.withdrawal_json)
            .unwrap()
            .id
    };
    for (i, a) in batch.iter().enumerate() {
        let seen = journal.get(&id(a)).quorum_seen.is_some();
        assert_eq!(seen, [0, 2, 3].contains(&i), "withdrawal {i}");
    }
}
