//! The approval app in a real headless Chromium (Debian's `chromium`,
//! driven by `playwright-core`: `tests/browser/approval_app.js`) with CDP
//! virtual authenticators holding the flow policy's passkeys (frank and
//! grace): sign in with a passkey, the pending list, the detail page decoded
//! from the statement, two passkey approvals watched live through the time
//! lock to the signature, a reject with its reason, a cancel during the
//! time lock; a request without a session gets 401 and no data, a POST
//! without the CSRF token or from another origin is refused, and every page
//! carries the strict Content-Security-Policy.
//!
//! The screenshots go to `$CUSTOS_SCREENSHOT_DIR` (default: the test's temp
//! directory); `CUSTOS_SCREENSHOT_DIR=$PWD/docs` refreshes the README's.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use custos_proto::custody::GetKeyRequest;
use custos_tests::*;
use serde_json::Value;

/// The flow policy's `app-payee` (rule `passkey-approvals-lock`: two
/// passkey approvals, an 8 s time lock the passkey group may cancel).
const APP_PAYEE: &str = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC";

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// Runs the browser script; its output lines by step (the last of each).
async fn run_browser(env: &[(&str, String)]) -> (BTreeMap<String, Value>, String) {
    let dir = browser_dir();
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "{} missing: run scripts/install-deps.sh (npm ci in tests/browser)",
        dir.join("node_modules/playwright-core").display()
    );
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium missing: run scripts/install-deps.sh (Debian's chromium)"
    );
    let mut cmd = tokio::process::Command::new("node");
    cmd.current_dir(&dir)
        .arg("approval_app.js")
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .expect("the browser script within 5 min")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let log = format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let mut steps = BTreeMap::new();
    for line in stdout.lines() {
        if let Ok(v) = serde_json::from_str::<Value>(line)
            && let Some(step) = v["step"].as_str()
        {
            steps.insert(step.to_owned(), v.clone());
        }
    }
    assert!(
        out.status.success() && steps.contains_key("done"),
        "browser script failed:\n{log}"
    );
    (steps, log)
}

/// Creates a withdrawal to the app payee from `wallet`, awaiting passkey
/// approvals.
async fn create(fc: &FlowCluster, key: &str, wallet: &str, amount: u128) -> String {
    let w = fc
        .backend
        .clone()
        .create_withdrawal(withdrawal_req(key, wallet, APP_PAYEE, amount))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w.rule_id, "passkey-approvals-lock", "{}", w.decision);
    assert_eq!(w.state, "awaiting_approvals", "{}", w.decision);
    w.id
}

/// The scenario, on `fc` (a flow cluster with `wallet` ready).
pub async fn approval_app_in_a_browser(fc: &FlowCluster, wallet: &str) {
    let approve = create(fc, "app-approve", wallet, 2 * ETH).await;
    let reject = create(fc, "app-reject", wallet, 5 * ETH / 2).await;
    let cancel = create(fc, "app-cancel", wallet, 3 * ETH).await;
    let layout = fc.tc.cluster.layout();
    let target = layout
        .coordinator
        .http_url
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_owned();
    let shots = std::env::var_os("CUSTOS_SCREENSHOT_DIR")
        .map_or_else(|| fc.tc.dir.path().to_path_buf(), PathBuf::from);
    let (s, log) = run_browser(&[
        ("APP_TARGET", target),
        (
            "APP_CERT",
            layout.coordinator.server_cert.display().to_string(),
        ),
        ("APP_W_APPROVE", approve.clone()),
        ("APP_W_REJECT", reject.clone()),
        ("APP_W_CANCEL", cancel.clone()),
        ("APP_SCREENSHOTS", shots.display().to_string()),
    ])
    .await;

    // The page and its headers.
    let h = &s["headers"];
    assert_eq!(h["status"], 200, "{log}");
    assert_eq!(
        h["csp"],
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'",
        "{log}"
    );
    assert_eq!(h["nosniff"], "nosniff");
    assert_eq!(h["referrer"], "no-referrer");
    assert_eq!(h["frame"], "DENY");
    // Without a session: 401 and no data.
    for (path, call) in s["unauthenticated"]["calls"].as_object().unwrap() {
        assert_eq!(call["status"], 401, "{path}: {call}");
        let body = call["body"].as_str().unwrap();
        assert!(
            !body.contains(&approve) && !body.contains("withdrawals\""),
            "{path} leaked data: {body}"
        );
    }
    // Enrollment: the policy lines of a new passkey, in a form the policy
    // document takes.
    let enrolled = s["enrolled"]["text"].as_str().unwrap();
    assert!(enrolled.contains("id = \"heidi\""), "{enrolled}");
    let field = |name: &str| -> String {
        let at = enrolled.find(&format!("{name} = \"")).unwrap() + name.len() + 4;
        enrolled[at..].split('"').next().unwrap().to_owned()
    };
    custos_policy::PasskeyKey::parse(custos_policy::PasskeyAlg::Es256, &field("public_key"))
        .unwrap_or_else(|e| panic!("{e}: {enrolled}"));
    assert!(
        enrolled.contains("webauthn_p256 = { credential_id = ")
            && field("credential_id").len() >= 16,
        "{enrolled}"
    );
    // Signed in; the session cookie.
    let c = &s["cookie"];
    assert_eq!(c["httpOnly"], true, "{c}");
    assert_eq!(c["secure"], true, "{c}");
    assert_eq!(c["sameSite"], "Strict", "{c}");
    assert_eq!(c["path"], "/", "{c}");
    let lifetime = c["lifetime"].as_i64().unwrap();
    assert!((880..=900).contains(&lifetime), "15 min session: {c}");
    // The pending list.
    let listed: Vec<&str> = s["pending"]["listed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for id in [&approve, &reject, &cancel] {
        assert!(listed.contains(&id.as_str()), "{id} not listed: {listed:?}");
    }
    // CSRF and session checks: refused, nothing recorded.
    let x = &s["csrf"];
    for (case, code, why) in [
        ("no_token", 403, "X-CSRF-Token"),
        ("wrong_token", 403, "X-CSRF-Token"),
        ("foreign_origin", 403, "not an origin of the approval app"),
        ("no_origin", 403, "Origin: missing"),
        (
            "as_other_approver",
            403,
            "cannot give a verdict as \\\"grace\\\"",
        ),
        ("forged_session", 401, "unknown or expired"),
    ] {
        assert_eq!(x[case]["status"], code, "{case}: {x}");
        let body = x[case]["body"].as_str().unwrap();
        assert!(body.contains(why), "{case}: {body}");
    }
    // The detail page, decoded from the statement in the browser.
    let f = &s["detail"]["fields"];
    assert_eq!(f["withdrawal_id"], approve.as_str(), "{f}");
    assert_eq!(f["wallet"], wallet, "{f}");
    assert_eq!(f["chain"], "ethereum", "{f}");
    assert_eq!(f["asset"], "ETH", "{f}");
    assert_eq!(f["amount_base"], (2 * ETH).to_string(), "{f}");
    assert_eq!(f["amount_units"], "2 ETH", "{f}");
    assert_eq!(f["destination"], APP_PAYEE, "{f}");
    assert_eq!(f["label"], "app-payee (passkey-lock)", "{f}");
    assert_eq!(f["rule"], "passkey-approvals-lock", "{f}");
    assert!(
        f["fee_cap"].as_str().unwrap().parse::<u128>().unwrap() > 0,
        "{f}"
    );
    assert_eq!(f["state"], "awaiting_approvals", "{f}");
    assert_eq!(f["mismatch_hidden"], true, "{f}");
    assert!(
        f["risk"].as_str().unwrap().parse::<u32>().unwrap() < 80,
        "{f}"
    );
    // Approved by both; the page followed the time lock to the signature
    // without a reload.
    let l = &s["live"];
    assert_eq!(l["not_reloaded"], true, "{l}");
    assert_eq!(l["approvers"], serde_json::json!(["frank", "grace"]), "{l}");
    assert_eq!(l["seen"][1], "signed", "{l}");
    if l["seen"][0] == "time_locked" {
        assert!(
            l["countdown"].as_str().unwrap().ends_with("s left") || l["countdown"] == "elapsed",
            "{l}"
        );
    }
    let signed = withdrawal(&fc.backend, &approve).await;
    assert_eq!(signed.state, "signed");
    let pk = fc
        .tc
        .client
        .clone()
        .get_key(GetKeyRequest {
            key_id: wallet.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .public_key;
    let digest: [u8; 32] = signed.tx_digest.clone().try_into().unwrap();
    verify_both(&pk, &digest, &signed.signature_r, &signed.signature_s);
    assert!(
        signed.approvals.iter().all(|a| a.verdict == "approve"),
        "{:?}",
        signed.approvals
    );
    // Rejected with its reason; cancelled during the lock.
    assert_eq!(s["rejected"]["state"], "rejected", "{log}");
    assert!(
        s["rejected"]["reason"]
            .as_str()
            .unwrap()
            .contains("destination not agreed with treasury"),
        "{log}"
    );
    let r = withdrawal(&fc.backend, &reject).await;
    assert_eq!(r.state, "rejected");
    assert_eq!(s["cancelled"]["state"], "cancelled", "{log}");
    assert!(
        s["cancelled"]["reason"]
            .as_str()
            .unwrap()
            .contains("payee asked to stop"),
        "{log}"
    );
    let c = withdrawal(&fc.backend, &cancel).await;
    assert_eq!(c.state, "cancelled", "{}", c.reason);
    assert!(c.reason.contains("grace"), "{}", c.reason);
    // History and sign-out.
    let rows = s["history"]["rows"].as_array().unwrap();
    for (id, state) in [
        (&approve, "signed"),
        (&reject, "rejected"),
        (&cancel, "cancelled"),
    ] {
        assert!(
            rows.iter().any(|r| r[0] == id.as_str() && r[1] == state),
            "{id} {state}: {rows:?}"
        );
    }
    assert_eq!(s["signed_out"]["status"], 401, "{log}");
}
