//! The withdrawal flow end to end on real processes: each policy action,
//! approvals, time locks, cancellation, idempotency and input validation.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use custos_policy::Verdict as PV;
use custos_proto::custody::{CancelWithdrawalRequest, SignDigestRequest};
use custos_tests::*;
use tonic::Code;

const LIMIT: Duration = Duration::from_secs(90);

#[path = "withdrawals/approval_app.rs"]
mod approval_app;

async fn count(fc: &FlowCluster) -> usize {
    all_withdrawals(&fc.backend).await.len()
}

fn verify_signed(pk: &[u8], w: &custos_proto::custody::Withdrawal) {
    let digest: [u8; 32] = w.tx_digest.clone().try_into().unwrap();
    verify_both(pk, &digest, &w.signature_r, &w.signature_s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_policy_action_end_to_end() {
    let fc = start_flow(&flow_policy(), false, &["w-hot", "w-cold"]).await;
    let pk = wallet_public_key(&fc.tc.client, "w-hot").await;
    let backend = fc.backend.clone();

    // allow: signed with no approval.
    let w = backend
        .clone()
        .create_withdrawal(withdrawal_req("allow-1", "w-hot", WHITELISTED, ETH / 2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w.rule_id, "small-allow", "{}", w.decision);
    assert_eq!(w.destination_label, "exchange-deposit (exchange)");
    assert_eq!(w.amount_human, "0.5 ETH");
    assert!(
        w.risk_score < 80,
        "risk {} {:?}",
        w.risk_score,
        w.risk_reasons
    );
    let signed = wait_state(&backend, &w.id, &["signed"], LIMIT).await;
    verify_signed(&pk, &signed);

    // The same idempotency key and body: the same withdrawal, nothing new.
    let again = backend
        .clone()
        .create_withdrawal(withdrawal_req("allow-1", "w-hot", WHITELISTED, ETH / 2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.id, w.id);
    // The same key with another body is refused.
    let e = backend
        .clone()
        .create_withdrawal(withdrawal_req("allow-1", "w-hot", WHITELISTED, ETH / 4))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e}");
    assert!(e.message().contains("idempotency_key"), "{e}");

    // Concurrent identical requests create one withdrawal.
    let before = count(&fc).await;
    let calls = (0..8).map(|_| {
        let b = backend.clone();
        async move {
            b.clone()
                .create_withdrawal(withdrawal_req("race-1", "w-hot", WHITELISTED, ETH / 10))
                .await
                .unwrap()
                .into_inner()
                .id
        }
    });
    let ids = futures::future::join_all(calls).await;
    assert!(ids.windows(2).all(|p| p[0] == p[1]), "{ids:?}");
    assert_eq!(count(&fc).await, before + 1);
    wait_state(&backend, &ids[0], &["signed"], LIMIT).await;

    // Bad input: INVALID_ARGUMENT naming the field, nothing stored.
    let before = count(&fc).await;
    let cases = [
        (withdrawal_req("bad-1", "nope", WHITELISTED, ETH), "wallet"),
        (
            withdrawal_req("bad-2", "w-hot", "0x1234", ETH),
            "destination",
        ),
        (withdrawal_req("bad-3", "w-hot", WHITELISTED, 0), "amount"),
        (
            {
                let mut r = withdrawal_req("bad-4", "w-hot", WHITELISTED, 1);
                r.amount = "-5".into();
                r
            },
            "amount",
        ),
        (
            {
                let mut r = withdrawal_req("bad-5", "w-hot", WHITELISTED, 1);
                r.amount = "9".repeat(39);
                r
            },
            "amount",
        ),
        (
            {
                let mut r = withdrawal_req("bad-6", "w-hot", WHITELISTED, 1);
                r.asset = "DOGE".into();
                r
            },
            "asset",
        ),
        (
            {
                let mut r = withdrawal_req("bad-7", "w-hot", WHITELISTED, 1);
                r.memo = "x".repeat(10_000);
                r
            },
            "memo",
        ),
        (
            withdrawal_req("", "w-hot", WHITELISTED, 1),
            "idempotency_key",
        ),
    ];
    for (req, field) in cases {
        let e = backend.clone().create_withdrawal(req).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e}");
        assert!(e.message().contains(field), "{field}: {e}");
    }
    assert_eq!(count(&fc).await, before, "bad input must store nothing");

    // block: not whitelisted.
    let b = backend
        .clone()
        .create_withdrawal(withdrawal_req("block-1", "w-hot", NOT_WHITELISTED, 2 * ETH))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(b.state, "blocked", "{}", b.reason);
    assert!(b.reason.contains("block-everything-else"), "{}", b.reason);

    // require 2-of-3 approvals.
    let m = backend
        .clone()
        .create_withdrawal(withdrawal_req("two-1", "w-hot", WHITELISTED, 5 * ETH))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.state, "awaiting_approvals");
    assert_eq!(m.rule_id, "medium-two-approvals");
    let after_one = approve(&fc.approver, &m, "alice").await;
    assert_eq!(after_one.state, "awaiting_approvals");
    // A duplicate approver, a revoked or unknown approver, a forged signature: refused.
    let dup = submit_verdict(&fc.approver, &m, "alice", PV::Approve, "")
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists, "{dup}");
    let outsider = submit_verdict(&fc.approver, &m, "dave", PV::Approve, "")
        .await
        .unwrap_err();
    assert_eq!(outsider.code(), Code::InvalidArgument, "{outsider}");
    let mut forged = m.clone();
    forged.statement = {
        let mut s = custos_policy::ApprovalStatement::decode(&m.statement).unwrap();
        s.amount = custos_policy::Amount(ETH);
        s.encode().unwrap()
    };
    let e = submit_verdict(&fc.approver, &forged, "bob", PV::Approve, "")
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::InvalidArgument,
        "approval over another amount: {e}"
    );
    let quorum = approve(&fc.approver, &m, "bob").await;
    assert!(
        ["approved", "signing", "signed"].contains(&quorum.state.as_str()),
        "{}",
        quorum.state
    );
    let signed = wait_state(&backend, &m.id, &["signed"], LIMIT).await;
    verify_signed(&pk, &signed);
    assert_eq!(signed.approvals.len(), 2);

    // Two approvals arriving at the same moment both count.
    let cc = backend
        .clone()
        .create_withdrawal(withdrawal_req(
            "two-concurrent",
            "w-hot",
            WHITELISTED,
            4 * ETH,
        ))
        .await
        .unwrap()
        .into_inner();
    let (x, y) = tokio::join!(
        submit_verdict(&fc.approver, &cc, "alice", PV::Approve, ""),
        submit_verdict(&fc.approver, &cc, "carol", PV::Approve, "")
    );
    x.unwrap();
    y.unwrap();
    wait_state(&backend, &cc.id, &["signed"], LIMIT).await;

    // An explicit reject denies.
    let r = backend
        .clone()
        .create_withdrawal(withdrawal_req("reject-1", "w-hot", WHITELISTED, 6 * ETH))
        .await
        .unwrap()
        .into_inner();
    approve(&fc.approver, &r, "alice").await;
    let rejected = submit_verdict(&fc.approver, &r, "carol", PV::Reject, "unknown payee")
        .await
        .unwrap();
    assert_eq!(rejected.state, "rejected");
    assert!(rejected.reason.contains("carol"), "{}", rejected.reason);

    // approvals + delay: time locked, cancelled by the security group during the lock.
    let c = backend
        .clone()
        .create_withdrawal(withdrawal_req(
            "delay-cancel",
            "w-hot",
            WHITELISTED,
            20 * ETH,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c.rule_id, "large-approvals-delay");
    approve(&fc.approver, &c, "alice").await;
    approve(&fc.approver, &c, "bob").await;
    let locked = wait_state(&backend, &c.id, &["time_locked"], LIMIT).await;
    assert!(!locked.time_lock_until.is_empty());
    // A treasurer is not in the cancel group.
    let e = submit_verdict(&fc.approver, &c, "carol", PV::Cancel, "")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    let cancelled = submit_verdict(&fc.approver, &c, "dave", PV::Cancel, "suspicious")
        .await
        .unwrap();
    assert_eq!(cancelled.state, "cancelled");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let still = wait_state(&backend, &c.id, &["cancelled"], LIMIT).await;
    assert!(
        still.signature_r.is_empty(),
        "a cancelled withdrawal was signed"
    );

    // approvals + delay: signed after the lock; a cancel after signing is refused.
    let d = backend
        .clone()
        .create_withdrawal(withdrawal_req("delay-sign", "w-hot", WHITELISTED, 30 * ETH))
        .await
        .unwrap()
        .into_inner();
    approve(&fc.approver, &d, "bob").await;
    approve(&fc.approver, &d, "carol").await;
    wait_state(&backend, &d.id, &["time_locked"], LIMIT).await;
    let signed = wait_state(&backend, &d.id, &["signed"], LIMIT).await;
    verify_signed(&pk, &signed);
    let e = submit_verdict(&fc.approver, &d, "dave", PV::Cancel, "too late")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(e.message().contains("already signed"), "{e}");
    let e = backend
        .clone()
        .cancel_withdrawal(CancelWithdrawalRequest {
            id: d.id.clone(),
            reason: "too late".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");

    // Approvals not gathered before the statement expires: expired, and a
    // late approval is refused.
    let e = backend
        .clone()
        .create_withdrawal(withdrawal_req("expire-1", "w-cold", WHITELISTED, 2 * ETH))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(e.rule_id, "cold-short-expiry", "{}", e.decision);
    approve(&fc.approver, &e, "alice").await;
    let expired = wait_state(&backend, &e.id, &["expired"], LIMIT).await;
    assert!(expired.reason.contains("expired"), "{}", expired.reason);
    let late = submit_verdict(&fc.approver, &e, "bob", PV::Approve, "")
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition, "{late}");

    // The raw-digest path is locked down on this cluster.
    let e = fc
        .tc
        .client
        .clone()
        .sign_digest(SignDigestRequest {
            key_id: "w-hot".into(),
            digest: vec![7; 32],
            request_id: "raw-1".into(),
            interactive: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");

    // Roles: an approver cannot create withdrawals.
    let e = fc
        .approver
        .clone()
        .create_withdrawal(withdrawal_req("role-1", "w-hot", WHITELISTED, 1))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");

    passkey_approvals_verified_by_coordinator_and_every_signer(&fc).await;
    // After the passkey test: the browser's authenticators count above it.
    approval_app::approval_app_in_a_browser(&fc, "w-cold").await;
    api_tokens_rotate_revoke_and_expire(&fc).await;
    client_certificates_authenticate_backends(&fc).await;
    fc.tc.cluster.stop().await.unwrap();
}

/// The approval app scenario on a cluster of its own (the shared test
/// above runs it too): for working on the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "every_policy_action_end_to_end runs the scenario on the shared cluster"]
async fn approval_app_alone() {
    let fc = start_flow(&flow_policy(), false, &["w-cold"]).await;
    approval_app::approval_app_in_a_browser(&fc, "w-cold").await;
    fc.tc.cluster.stop().await.unwrap();
}

/// `text` without ANSI colour sequences (the daemons' logs may carry them).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs `custos token <args> --store <store> --json` and returns its JSON.
fn token_cli(store: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(bin_dir().join("custos"))
        .arg("token")
        .args(args)
        .arg("--store")
        .arg(store)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "custos token {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Lists withdrawals with `token` until `ok(result)` holds (the coordinator
/// rereads its token store about every second); returns the last result.
async fn call_with_token(
    fc: &FlowCluster,
    dir: &std::path::Path,
    token: &str,
    ok: impl Fn(&Result<(), tonic::Status>) -> bool,
) -> Result<(), tonic::Status> {
    let layout = &fc.tc.cluster.layout();
    let file = dir.join(format!("t{}", rand::random::<u32>()));
    std::fs::write(&file, token).unwrap();
    retry_until(ok, || async {
        let mut c = custos_devkit::client::connect_with_token_file(
            &layout.coordinator.url,
            &layout.ca_cert,
            &file,
            None,
        )
        .await
        .unwrap();
        c.list_withdrawals(custos_proto::custody::ListWithdrawalsRequest::default())
            .await
            .map(|_| ())
    })
    .await
}

/// Calls `call` until `ok(result)` holds or 10 s have passed; returns the
/// last result.
async fn retry_until<F, Fut>(
    ok: impl Fn(&Result<(), tonic::Status>) -> bool,
    mut call: F,
) -> Result<(), tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>>,
{
    let started = std::time::Instant::now();
    loop {
        let r = call().await;
        if ok(&r) || started.elapsed() > Duration::from_secs(10) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Credentials (SECURITY.md case 31) on the running flow cluster: the store
/// holds hashes only; a second backend token works beside the first, the
/// first revoked is refused by id while its successor works, an expired
/// token is refused by id; every use is logged with the id, never the value.
async fn api_tokens_rotate_revoke_and_expire(fc: &FlowCluster) {
    let layout = &fc.tc.cluster.layout();
    let store = layout.coordinator.token_store.clone();
    let dir = tempfile::tempdir().unwrap();
    let old =
        std::fs::read_to_string(&layout.client("payments-backend").unwrap().token_file).unwrap();
    let old_id = &old["custos_".len().."custos_".len() + 16];

    // Rotation: the successor works while the old token still does.
    let new = token_cli(
        &store,
        &[
            "create",
            "--client",
            "payments-backend",
            "--role",
            "backend",
            "--expires-in",
            "1h",
        ],
    );
    let new_token = new["token"].as_str().unwrap().to_owned();
    let new_id = new["id"].as_str().unwrap().to_owned();
    assert!(new_token.starts_with(&format!("custos_{new_id}_")));
    call_with_token(fc, dir.path(), &new_token, Result::is_ok)
        .await
        .unwrap();
    call_with_token(fc, dir.path(), &old, Result::is_ok)
        .await
        .unwrap();

    // The store: each token's SHA-256, never a token or its secret.
    let text = std::fs::read_to_string(&store).unwrap();
    for t in [&old, &new_token] {
        assert!(
            !text.contains(&t[24..]),
            "plain-text token in {}",
            store.display()
        );
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(t.as_bytes()));
        assert!(text.contains(&sha), "no hash of {}", &t[..23]);
    }

    // Revoked: refused by id, the successor unaffected.
    let revoked = token_cli(&store, &["revoke", old_id]);
    assert_eq!(revoked["status"], "revoked");
    let e = call_with_token(fc, dir.path(), &old, Result::is_err)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    assert!(
        e.message()
            .contains(&format!("API token {old_id} was revoked")),
        "{e}"
    );
    assert!(!e.message().contains(&old[24..]), "the token leaks: {e}");
    call_with_token(fc, dir.path(), &new_token, Result::is_ok)
        .await
        .unwrap();

    // Expired: accepted until its expiry, refused by id after it.
    let short = token_cli(
        &store,
        &[
            "create",
            "--client",
            "auditor",
            "--role",
            "auditor",
            "--expires-in",
            "4s",
        ],
    );
    let short_token = short["token"].as_str().unwrap().to_owned();
    let short_id = short["id"].as_str().unwrap().to_owned();
    call_with_token(fc, dir.path(), &short_token, Result::is_ok)
        .await
        .unwrap();
    let e = call_with_token(fc, dir.path(), &short_token, |r| {
        r.as_ref().is_err_and(|e| e.message().contains("expired"))
    })
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    assert!(
        e.message()
            .contains(&format!("API token {short_id} expired at")),
        "{e}"
    );

    let listed = token_cli(&store, &["list", "--client", "payments-backend"]);
    let statuses: Vec<(&str, &str)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["id"].as_str().unwrap(), t["status"].as_str().unwrap()))
        .collect();
    assert!(statuses.contains(&(old_id, "revoked")), "{statuses:?}");
    assert!(
        statuses.contains(&(new_id.as_str(), "active")),
        "{statuses:?}"
    );

    // The coordinator's log names the tokens it accepted and refused, never a value.
    let log = strip_ansi(&std::fs::read_to_string(layout.log_file("coordinator")).unwrap());
    assert!(
        log.contains(&format!("token_id={new_id}")),
        "no use of {new_id} logged"
    );
    assert!(log.contains(&format!("API token {old_id} was revoked")));
    for t in [&old, &new_token, &short_token] {
        assert!(
            !log.contains(&t[24..]),
            "a token value in the coordinator's log"
        );
    }
}

/// Lists withdrawals over mTLS with the client certificate `name`.pem/.key
/// in `dir` and no token, until `ok(result)` holds (the coordinator rereads
/// its store about every second); returns the last result.
async fn call_with_certificate(
    fc: &FlowCluster,
    dir: &std::path::Path,
    name: &str,
    ok: impl Fn(&Result<(), tonic::Status>) -> bool,
) -> Result<(), tonic::Status> {
    let layout = fc.tc.cluster.layout();
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    retry_until(ok, || async {
        let mut c = custos_devkit::client::connect_with_certificate(
            &layout.coordinator.url,
            &layout.ca_cert,
            (&cert, &key),
            Some("localhost"),
        )
        .await
        .unwrap();
        c.list_withdrawals(custos_proto::custody::ListWithdrawalsRequest::default())
            .await
            .map(|_| ())
    })
    .await
}

/// mTLS for backends (SECURITY.md case 31): a client certificate from the
/// coordinator's client CA authenticates once `custos token create --cert`
/// pins it, as the client and with the roles of its pin (a backend cannot
/// create keys); a certificate from the same CA that nobody pinned is
/// refused naming its fingerprint, as is the pinned one once revoked.
async fn client_certificates_authenticate_backends(fc: &FlowCluster) {
    let layout = fc.tc.cluster.layout().clone();
    let store = layout.coordinator.token_store.clone();
    let dir = tempfile::tempdir().unwrap();
    for name in ["mtls-backend", "stranger"] {
        custos_devkit::issue_client_certificate(
            &layout,
            name,
            &dir.path().join(format!("{name}.pem")),
            &dir.path().join(format!("{name}.key")),
        )
        .unwrap();
    }
    let cert = dir.path().join("mtls-backend.pem");
    let pin = token_cli(
        &store,
        &[
            "create",
            "--client",
            "mtls-backend",
            "--role",
            "backend",
            "--expires-in",
            "1h",
            "--cert",
            cert.to_str().unwrap(),
        ],
    );
    assert_eq!(pin["kind"], "certificate", "{pin}");
    assert!(
        pin.get("token").is_none(),
        "nothing secret is printed: {pin}"
    );
    let id = pin["id"].as_str().unwrap().to_owned();
    call_with_certificate(fc, dir.path(), "mtls-backend", Result::is_ok)
        .await
        .unwrap();

    // Its pin's client and roles: a backend may not create keys.
    let mut c = custos_devkit::client::connect_with_certificate(
        &layout.coordinator.url,
        &layout.ca_cert,
        (&cert, &dir.path().join("mtls-backend.key")),
        Some("localhost"),
    )
    .await
    .unwrap();
    let e = c
        .create_key(custos_proto::custody::CreateKeyRequest {
            key_id: "mtls-key".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    assert!(
        e.message()
            .contains("client mtls-backend needs one of the roles [Admin]"),
        "{e}"
    );

    // Same CA, not pinned: refused by fingerprint.
    let stranger_der = custos_credentials::certificate_der(
        &std::fs::read(dir.path().join("stranger.pem")).unwrap(),
    )
    .unwrap();
    let fingerprint = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&stranger_der));
    let e = call_with_certificate(fc, dir.path(), "stranger", Result::is_err)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    assert!(
        e.message()
            .contains(&format!("sha256:{fingerprint} is not registered")),
        "{e}"
    );

    // Revoked: refused by id from the next store reload.
    let revoked = token_cli(&store, &["revoke", &id]);
    assert_eq!(revoked["status"], "revoked");
    let e = call_with_certificate(fc, dir.path(), "mtls-backend", Result::is_err)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    assert!(
        e.message()
            .contains(&format!("client certificate {id} was revoked")),
        "{e}"
    );
}

/// The flow policy's passkey payee (rule `passkey-two-approvals`: two
/// passkey approvals from frank and grace, Ed25519 refused).
const PASSKEY_PAYEE: &str = "0x90F79bf6EB2c4f870365E785982E1f101E93b906";

/// Passkey approvals (docs/SECURITY.md case 35): two software passkeys
/// answering as a browser would approve a withdrawal and it is signed; an
/// assertion over another statement, from another origin, without user
/// verification or with a replayed counter is refused by the coordinator at
/// submit (nothing stored) and by every signer when a rogue coordinator
/// forwards it anyway. Uses wallet w-cold, so no velocity limit of w-hot
/// moves.
async fn passkey_approvals_verified_by_coordinator_and_every_signer(fc: &FlowCluster) {
    use custos_policy::{Amount, ApprovalStatement};
    let (mut frank, mut grace) = (SoftPasskey::of("frank"), SoftPasskey::of("grace"));
    let create = |key: &'static str| {
        let backend = fc.backend.clone();
        async move {
            backend
                .clone()
                .create_withdrawal(withdrawal_req(key, "w-cold", PASSKEY_PAYEE, 2 * ETH))
                .await
                .unwrap()
                .into_inner()
        }
    };
    let w1 = create("passkey-1").await;
    assert_eq!(w1.rule_id, "passkey-two-approvals", "{}", w1.decision);
    assert_eq!(w1.state, "awaiting_approvals");
    let st1 = ApprovalStatement::decode(&w1.statement).unwrap();
    let mut other = st1.clone();
    other.amount = Amount(3 * ETH);

    // The coordinator refuses at submit, naming the check; nothing is stored.
    let refused = |r: Result<custos_proto::custody::Withdrawal, tonic::Status>, why: &str| {
        let e = r.unwrap_err();
        assert!(e.message().contains(why), "{why}: {e}");
    };
    let a = frank.approve("frank", &other, PASSKEY_ORIGIN, UP_UV);
    refused(
        submit_passkey(&fc.approver, &w1, &a).await,
        "challenge is not this statement's",
    );
    let a = frank.approve("frank", &st1, "https://evil.test", UP_UV);
    refused(
        submit_passkey(&fc.approver, &w1, &a).await,
        "is not an allowed origin",
    );
    let a = frank.approve("frank", &st1, PASSKEY_ORIGIN, 0x01);
    refused(
        submit_passkey(&fc.approver, &w1, &a).await,
        "(UV) flag is clear",
    );
    // An Ed25519 approval under a passkey-only rule.
    let e = submit_verdict(&fc.approver, &w1, "alice", PV::Approve, "")
        .await
        .unwrap_err();
    assert!(e.message().contains("approval"), "{e}");
    let w = withdrawal(&fc.backend, &w1.id).await;
    assert!(
        w.approvals.is_empty(),
        "refused approvals were stored: {:?}",
        w.approvals
    );

    let a = frank.approve("frank", &st1, PASSKEY_ORIGIN, UP_UV);
    let frank_counter = frank.counter;
    submit_passkey(&fc.approver, &w1, &a).await.unwrap();

    // A second withdrawal: frank's passkey cloned (its counter replayed).
    let w2 = create("passkey-2").await;
    let st2 = ApprovalStatement::decode(&w2.statement).unwrap();
    frank.counter = frank_counter - 1;
    let replayed = frank.approve("frank", &st2, PASSKEY_ORIGIN, UP_UV);
    refused(
        submit_passkey(&fc.approver, &w2, &replayed).await,
        &format!("sign counter {frank_counter} is not above the last one seen ({frank_counter})"),
    );

    // grace completes w1's quorum: every signer re-verifies both assertions
    // and w1 is signed.
    let a = grace.approve("grace", &st1, PASSKEY_ORIGIN, UP_UV);
    submit_passkey(&fc.approver, &w1, &a).await.unwrap();
    let signed = wait_state(&fc.backend, &w1.id, &["signed"], LIMIT).await;
    let pk = wallet_public_key(&fc.tc.client, "w-cold").await;
    verify_signed(&pk, &signed);

    // The log carries the assertions: the real `custos audit verify` with
    // the policy replay re-verifies the passkey approvals behind w1's signature.
    custos_tests::audit::settled(fc).await;
    let bundle = custos_tests::audit::export(fc, 0, 0).await;
    let path = fc.tc.dir.path().join("passkey-bundle.json");
    std::fs::write(&path, serde_json::to_vec(&bundle).unwrap()).unwrap();
    let policy_file = flow_policy();
    let admins = fc
        .tc
        .cluster
        .layout()
        .policy
        .as_ref()
        .unwrap()
        .admins
        .clone();
    let o = custos_tests::audit::verify(
        &path,
        &custos_tests::audit::keys(fc).await,
        &[
            "--policy",
            policy_file.to_str().unwrap(),
            "--admins",
            admins.to_str().unwrap(),
        ],
    );
    assert!(o.ok, "{o}");
    let line = o
        .stdout
        .lines()
        .find(|l| l.starts_with("signatures"))
        .unwrap();
    let n = line.split_whitespace().nth(1).unwrap();
    assert!(
        n != "0" && line.contains(&format!("{n} authorised of {n} checked")),
        "{o}"
    );

    // A rogue coordinator forwards w2 with grace's genuine approval and a
    // tampered one of frank's: every signer refuses, naming the check.
    let request = withdrawal_req("passkey-2", "w-cold", PASSKEY_PAYEE, 2 * ETH);
    let grace_w2 = grace.approve("grace", &st2, PASSKEY_ORIGIN, UP_UV);
    let mut other2 = st2.clone();
    other2.amount = Amount(3 * ETH);
    frank.counter = 100;
    let cases = [
        (
            frank.approve("frank", &other2, PASSKEY_ORIGIN, UP_UV),
            "challenge is not this statement's".to_owned(),
        ),
        (
            frank.approve("frank", &st2, "https://evil.test", UP_UV),
            "is not an allowed origin".to_owned(),
        ),
        (
            frank.approve("frank", &st2, PASSKEY_ORIGIN, 0x01),
            "(UV) flag is clear".to_owned(),
        ),
        (
            replayed,
            format!(
                "sign counter {frank_counter} is not above the last one seen ({frank_counter})"
            ),
        ),
    ];
    for (bad, why) in cases {
        let auth = rogue_authorization(fc, &w2, &request, vec![bad, grace_w2.clone()]);
        every_signer_refuses(fc, &auth, "w-cold", &why).await;
    }
}

/// What a rogue coordinator sends signers for withdrawal `w` (created by
/// `request`) with `approvals`: the genuine request, policy and rule, and
/// whatever approvals it likes.
fn rogue_authorization(
    fc: &FlowCluster,
    w: &custos_proto::custody::Withdrawal,
    request: &custos_proto::custody::CreateWithdrawalRequest,
    approvals: Vec<custos_policy::Approval>,
) -> custos_proto::signer::WithdrawalAuthorization {
    use custos_policy::{Amount, ApprovalStatement, Withdrawal as PolicyWithdrawal};
    let layout = fc.tc.cluster.layout();
    let policy = layout.policy.as_ref().unwrap();
    let st = ApprovalStatement::decode(&w.statement).unwrap();
    let pw = PolicyWithdrawal {
        id: w.id.clone(),
        wallet: w.wallet.clone(),
        chain: w.chain.clone(),
        asset: w.asset.clone(),
        destination: w.destination.clone(),
        amount: Amount(w.amount.parse().unwrap()),
        fee_cap: Amount(w.fee_cap.parse().unwrap()),
        initiator: w.initiator.clone(),
        tx_digest: String::new(),
        source: None,
    };
    custos_proto::signer::WithdrawalAuthorization {
        idempotency_key: request.idempotency_key.clone(),
        request_signature: request.request_signature.clone(),
        withdrawal_json: serde_json::to_vec(&pw).unwrap(),
        policy_document: std::fs::read(&policy.document).unwrap(),
        policy_signatures: std::fs::read(&policy.signatures).unwrap(),
        rule_id: w.rule_id.clone(),
        statement_expiry: st.expiry.0,
        risk_score: 0,
        approvals_json: serde_json::to_vec(&approvals).unwrap(),
        ..Default::default()
    }
}

/// Every signer refuses `auth` (registration and signing with `key_id`)
/// with PermissionDenied, naming `why`.
async fn every_signer_refuses(
    fc: &FlowCluster,
    auth: &custos_proto::signer::WithdrawalAuthorization,
    key_id: &str,
    why: &str,
) {
    let signers = coordinator_signer_clients(fc.tc.cluster.layout()).await;
    for (node, c) in &signers {
        let e = c.clone().register_quorum(auth.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{node} register: {e}");
        assert!(e.message().contains(why), "{node} register, {why}: {e}");
        let e = c
            .clone()
            .sign_withdrawal(custos_proto::signer::SignWithdrawalRequest {
                authorization: Some(auth.clone()),
                key_id: key_id.into(),
                presignature_id: "ps-rogue".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{node} sign: {e}");
        assert!(e.message().contains(why), "{node} sign, {why}: {e}");
    }
}
