//! The approval app in a real headless Chromium (Debian's `chromium`,
//! driven by `playwright-core`: `tests/browser/approval_app.js`) with CDP
//! virtual authenticators holding the flow policy's passkeys (frank and
//! grace): sign in with a passkey, the pending list, the detail page decoded
//! from the statement, two passkey approvals watched live through the time
//! lock to the signature, a reject with its reason, a cancel during the
//! time lock; a request without a session gets 401 and no data, a POST
//! without the CSRF token or from another origin is refused, and every page
//! carries the strict Content-Security-Policy. Bad input: a replayed
//! sign-in, an unknown passkey, and approvals the browser made but that were
//! tampered with (another amount in the statement shown, UV flag cleared,
//! another origin, a malformed signature, a cloned passkey's old counter) or
//! sent from a page left open past the statement's expiry: the page shows
//! why, nothing is recorded, and every signer refuses the same assertions
//! from a rogue coordinator. The reports page: its charts against the
//! withdrawals the auditor lists, and its CSV downloads.
//!
//! The screenshots go to `$CUSTOS_SCREENSHOT_DIR` (default: the test's temp
//! directory); `CUSTOS_SCREENSHOT_DIR=$PWD/docs` refreshes the README's.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use custos_tests::*;
use serde_json::Value;

/// The flow policy's `app-payee` (rule `passkey-approvals-lock`: two
/// passkey approvals, an 8 s time lock the passkey group may cancel).
const APP_PAYEE: &str = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC";

/// The flow policy's `app-expiry-payee` (rule `passkey-short-expiry`:
/// passkey approvals that expire after 2 s).
const EXPIRY_PAYEE: &str = "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc";

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
    let tamper = create(fc, "app-tamper", wallet, 3 * ETH / 2).await;
    let expired = fc
        .backend
        .clone()
        .create_withdrawal(withdrawal_req("app-expired", wallet, EXPIRY_PAYEE, ETH))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        expired.rule_id, "passkey-short-expiry",
        "{}",
        expired.decision
    );
    let expired = wait_state(&fc.backend, &expired.id, &["expired"], super::LIMIT)
        .await
        .id;
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
        ("APP_W_EXPIRED", expired.clone()),
        ("APP_W_TAMPER", tamper.clone()),
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
        enrolled.contains("role = \"treasury\"")
            && enrolled.contains("webauthn_p256 = { credential_id = ")
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
    // A replayed sign-in and an unknown passkey: refused, with the reason.
    let b = &s["bad_sign_in"];
    assert_eq!(b["replayed"]["status"], 401, "{b}");
    assert!(
        b["replayed"]["body"]
            .as_str()
            .unwrap()
            .contains("sign-in challenge unknown, already used"),
        "{b}"
    );
    let unknown = b["unknown"]["message"].as_str().unwrap();
    assert!(
        unknown.starts_with("Sign-in failed: credential_id: ")
            && unknown.contains("is not the passkey of any approver of the policy in force"),
        "{b}"
    );
    assert_eq!(b["unknown"]["nav_hidden"], true, "{b}");
    assert_eq!(b["unknown"]["pending_status"], 401, "{b}");
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
    let pk = wallet_public_key(&fc.tc.client, wallet).await;
    let digest: [u8; 32] = signed.tx_digest.clone().try_into().unwrap();
    verify_both(&pk, &digest, &signed.signature_r, &signed.signature_s);
    assert!(
        signed.approvals.iter().all(|a| a.verdict == "approve"),
        "{:?}",
        signed.approvals
    );
    // Tampered and bad approvals: the page shows the reason; nothing is
    // recorded; every signer refuses the browser's tampered assertions.
    let t = &s["tampered"];
    let tamper_w = withdrawal(&fc.backend, &tamper).await;
    assert_eq!(tamper_w.state, "awaiting_approvals");
    assert!(tamper_w.approvals.is_empty(), "{:?}", tamper_w.approvals);
    let tamper_req = withdrawal_req("app-tamper", wallet, APP_PAYEE, 3 * ETH / 2);
    // grace's genuine approval completes the quorum, so each signer gets as
    // far as frank's assertion (and its counter).
    let mut grace = SoftPasskey::of("grace");
    grace.counter = 1_000_000;
    let grace_ok = grace.approve(
        "grace",
        &custos_policy::ApprovalStatement::decode(&tamper_w.statement).unwrap(),
        PASSKEY_ORIGIN,
        UP_UV,
    );
    for (case, shown, signers_say) in [
        (
            "changed_amount",
            "challenge is not this statement's",
            Some("challenge is not this statement's"),
        ),
        (
            "uv_cleared",
            "(UV) flag is clear",
            Some("(UV) flag is clear"),
        ),
        (
            "wrong_origin",
            "\"https://evil.test\" is not an allowed origin",
            Some("is not an allowed origin"),
        ),
        ("malformed", "webauthn.signature", None),
        (
            "replayed_counter",
            "sign counter 2 is not above the last one seen",
            Some("sign counter 2 is not above the last one seen"),
        ),
        ("expired", "expired", None),
    ] {
        let message = t["cases"][case]["message"].as_str().unwrap();
        assert!(
            message.starts_with("Refused: ") && message.contains(shown),
            "{case}: the page shows {message:?}, not {shown:?}"
        );
        let Some(why) = signers_say else { continue };
        let a = &t["cases"][case]["webauthn"];
        let field = |k: &str| {
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                hex::decode(a[k].as_str().unwrap()).unwrap(),
            )
        };
        let approval = custos_policy::Approval {
            approver: "frank".into(),
            verdict: custos_policy::Verdict::Approve,
            signature: String::new(),
            webauthn: Some(custos_policy::PasskeyAssertion {
                credential_id: field("credential_id"),
                authenticator_data: field("authenticator_data"),
                client_data_json: field("client_data_json"),
                signature: field("signature"),
            }),
        };
        let auth = super::rogue_authorization(
            fc,
            &tamper_w,
            &tamper_req,
            vec![approval, grace_ok.clone()],
        );
        super::every_signer_refuses(fc, &auth, wallet, why).await;
    }
    assert_eq!(t["approvals_after"][&tamper], 0, "{t}");
    assert_eq!(t["approvals_after"][&expired], 0, "{t}");
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
    // Reports: the charts and CSVs agree with the withdrawals the auditor
    // lists (every withdrawal of this test is inside the page's 30 days).
    reports_agree_with_the_withdrawals(fc, &s["reports"]).await;
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
    // Two approvers enrolled in this run approve on a cluster whose
    // policy names their passkeys.
    enrolled_approvers_approve(fc, &s["enrolled"]["approvers"]).await;
    // The withdrawal that only got tampered approvals: withdrawn.
    fc.backend
        .clone()
        .cancel_withdrawal(custos_proto::custody::CancelWithdrawalRequest {
            id: tamper.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// The CSV's rows as maps from column to cell.
fn csv_rows(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
    let head: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines
        .map(|l| {
            head.iter()
                .map(|h| (*h).to_owned())
                .zip(l.split(',').map(str::to_owned))
                .collect()
        })
        .collect()
}

async fn reports_agree_with_the_withdrawals(fc: &FlowCluster, r: &Value) {
    let all = all_withdrawals(&fc.auditor).await;
    let charts = r["charts"].as_array().unwrap();
    let chart = |name: &str| {
        charts
            .iter()
            .find(|c| c["report"] == name)
            .unwrap_or_else(|| panic!("no {name} chart: {r}"))
    };
    for c in charts {
        assert_eq!(c["error"], "", "{c}");
    }
    // Volume: settled ETH per the list, as the bars and the CSV say.
    let settled: u128 = all
        .iter()
        .filter(|w| w.asset == "ETH" && ["signed", "confirmed"].contains(&w.state.as_str()))
        .map(|w| w.amount.parse::<u128>().unwrap())
        .sum();
    assert!(settled >= 2 * ETH, "the approved withdrawal is settled");
    let bars: u128 = chart("volume")["bars"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["asset"] == "ETH")
        .map(|b| b["amount"].as_str().unwrap().parse::<u128>().unwrap())
        .sum();
    assert_eq!(bars, settled, "volume bars: {r}");
    let volume = &r["csv"]["volume"];
    let file = volume["file"].as_str().unwrap();
    assert!(
        file.starts_with("custos-volume-") && file.ends_with(".csv"),
        "{file}"
    );
    let text = volume["text"].as_str().unwrap();
    assert!(text.starts_with("day,asset,count,amount\r\n"), "{text}");
    let csv: u128 = csv_rows(text)
        .iter()
        .filter(|row| row["asset"] == "ETH")
        .map(|row| row["amount"].parse::<u128>().unwrap())
        .sum();
    assert_eq!(csv, settled, "volume CSV: {text}");
    // Approval latency: the app's two quorums (approve, cancel) at least.
    assert!(
        !chart("approval-latency")["bars"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{r}"
    );
    // Heat map: every withdrawal counted once; flagged = blocked, cancelled
    // or high-risk, in the cell of its UTC weekday and hour.
    let text = r["csv"]["heatmap"]["text"].as_str().unwrap();
    assert!(
        text.starts_with("weekday,hour,count,blocked,high_risk,flagged\r\n"),
        "{text}"
    );
    let cells = csv_rows(text);
    let sum = |col: &str| -> u64 { cells.iter().map(|c| c[col].parse::<u64>().unwrap()).sum() };
    assert_eq!(sum("count"), all.len() as u64, "{text}");
    let flagged = all
        .iter()
        .filter(|w| ["blocked", "cancelled"].contains(&w.state.as_str()) || w.risk_score >= 70)
        .count() as u64;
    assert!(flagged >= 1, "the cancelled withdrawal at least");
    assert_eq!(sum("flagged"), flagged, "{text}");
    let hot: u64 = chart("heatmap")["hot"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[2].as_u64().unwrap())
        .sum();
    assert_eq!(hot, flagged, "heat map cells: {r}");
    assert_eq!(chart("heatmap")["cells"], 7 * 24, "{r}");
    // A bad range: a clear error.
    assert_eq!(r["bad_range"]["status"], 400, "{r}");
    assert!(
        r["bad_range"]["body"]
            .as_str()
            .unwrap()
            .contains("`2026-13-01` is not YYYY-MM-DD"),
        "{r}"
    );
}

/// The admin's part of enrollment, then the approvers': ivan's and judy's
/// policy lines from the enrollment page go into a copy of the flow policy
/// as the `passkeys` group (in place of frank and grace), a second cluster
/// starts under it, and both approve a withdrawal in the browser with the
/// passkeys their authenticators made at enrollment; it is signed.
async fn enrolled_approvers_approve(fc: &FlowCluster, enrolled: &Value) {
    let mut policy = std::fs::read_to_string(flow_policy()).unwrap();
    let group = "passkeys = [\"frank\", \"grace\"]";
    assert!(policy.contains(group), "the flow policy's passkeys group");
    policy = policy.replace(group, "passkeys = [\"ivan\", \"judy\"]");
    let mut credentials = serde_json::Map::new();
    let mut lines = String::new();
    for who in ["ivan", "judy"] {
        let text = enrolled[who]["text"].as_str().unwrap();
        lines.push_str(text);
        lines.push_str("\n\n");
        credentials.insert(who.into(), enrolled[who]["credential"].clone());
    }
    policy = policy.replacen("[groups]", &format!("{lines}[groups]"), 1);
    let path = fc.tc.dir.path().join("enrolled-policy.toml");
    std::fs::write(&path, &policy).unwrap();
    let fb = start_flow(&path, false, &["w-cold"]).await;
    let id = create(&fb, "app-enrolled", "w-cold", 2 * ETH).await;
    let layout = fb.tc.cluster.layout();
    let (s, log) = run_browser(&[
        ("APP_MODE", "enrolled".into()),
        (
            "APP_TARGET",
            layout
                .coordinator
                .http_url
                .trim_start_matches("https://")
                .trim_end_matches('/')
                .to_owned(),
        ),
        (
            "APP_CERT",
            layout.coordinator.server_cert.display().to_string(),
        ),
        ("APP_W_APPROVE", id.clone()),
        ("APP_CREDENTIALS", Value::Object(credentials).to_string()),
        ("APP_SCREENSHOTS", fb.tc.dir.path().display().to_string()),
    ])
    .await;
    let a = &s["enrolled_approved"];
    assert_eq!(a["approvers"], serde_json::json!(["ivan", "judy"]), "{log}");
    let signed = withdrawal(&fb.backend, &id).await;
    assert_eq!(signed.state, "signed", "{log}");
    let approvers: Vec<&str> = signed
        .approvals
        .iter()
        .map(|a| a.approver.as_str())
        .collect();
    assert_eq!(approvers, ["ivan", "judy"]);
    let pk = wallet_public_key(&fb.tc.client, "w-cold").await;
    let digest: [u8; 32] = signed.tx_digest.clone().try_into().unwrap();
    verify_both(&pk, &digest, &signed.signature_r, &signed.signature_s);
    fb.tc.cluster.stop().await.unwrap();
}
