//! The `custos` approver and backend commands against a real dev cluster:
//! `custos demo` end to end, then withdraw / show / approve / cancel / reject /
//! watch / withdrawals / audit tail as separate processes.
//!
//! Needs `custos-signer` and `custos-coordinator` next to the test binary's
//! directory (`cargo build --workspace --bins`); skipped with a message otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers outside #[test] fns

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use custos_devkit::{
    Cluster, ClusterSpec, CoordinatorMode, StartOptions, free_base_port, generate,
};
use serde_json::Value;

const EXCHANGE: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
const PAYROLL: &str = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359";

fn bin_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent()?.parent()?.to_path_buf();
    for bin in [custos_devkit::SIGNER_BIN, custos_devkit::COORDINATOR_BIN] {
        if !dir.join(bin).is_file() {
            eprintln!(
                "SKIPPED: {} missing: run `cargo build --workspace --bins` first",
                dir.join(bin).display()
            );
            return None;
        }
    }
    Some(dir)
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn custos(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_custos"))
        .args(args)
        .arg("--cluster")
        .arg(dir)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap()
}

/// Runs and expects success; returns stdout.
fn ok(dir: &Path, args: &[&str]) -> String {
    let out = custos(dir, args);
    assert!(
        out.status.success(),
        "custos {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs and expects failure; returns stderr.
fn fails(dir: &Path, args: &[&str]) -> String {
    let out = custos(dir, args);
    assert!(!out.status.success(), "custos {args:?} succeeded");
    String::from_utf8(out.stderr).unwrap()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn key(name: &str) -> String {
    repo()
        .join(format!("examples/keys/{name}.pem"))
        .display()
        .to_string()
}

fn withdraw(dir: &Path, to: &str, wei: &str, wait: &str) -> Value {
    json(&ok(
        dir,
        &[
            "withdraw", "--wallet", "demo-hot", "--asset", "ETH", "--to", to, "--amount", wei,
            "--wait", wait, "--json",
        ],
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvers_and_backends_drive_withdrawals_through_the_cli() {
    let Some(bins) = bin_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = ClusterSpec::new(tmp.path().join("cluster"));
    spec.base_port = free_base_port();
    spec.primes_file = Some(repo().join("mpc/tests/fixtures/test-primes.json"));
    spec.aux_fixture = Some(repo().join("mpc/tests/fixtures/aux-info-3.json"));
    spec.bin_dir = Some(bins.clone());
    let layout = generate(&spec).unwrap();
    assert!(layout.log_key.is_some());
    let opts = StartOptions::default()
        .coordinator(CoordinatorMode::Required)
        .timeout(Duration::from_secs(120));
    let cluster = Cluster::start_with(layout.clone(), &bins, opts)
        .await
        .unwrap();
    let dir = layout.dir.clone();

    // The demo: wallet demo-hot, a small payout, a large approved one; verified.
    let demo = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || {
            Command::new(env!("CARGO_BIN_EXE_custos"))
                .args(["demo", "--json", "--signatures", "1", "--dir"])
                .arg(&dir)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        demo.status.success(),
        "custos demo: {}",
        String::from_utf8_lossy(&demo.stderr)
    );
    let demo = json(&String::from_utf8(demo.stdout).unwrap());
    assert_eq!(demo["small"]["state"], "signed");
    assert_eq!(demo["large"]["state"], "signed");
    assert_eq!(demo["large"]["rule_id"], "large-whitelisted");
    assert_eq!(demo["verified"], true);

    // The demo wallet's key: not locked, and an unlock of an unlocked key is refused.
    let k = json(&ok(&dir, &["key", "show", "demo-hot", "--json"]));
    assert_eq!(k["signing_locked"], false, "{k}");
    assert_eq!(k["threshold"], 2);
    let e = fails(&dir, &["key", "unlock", "demo-hot", "--reason", "test"]);
    assert!(e.contains("is not locked"), "{e}");
    let e = fails(&dir, &["key", "unlock", "demo-hot", "--reason", " "]);
    assert!(e.contains("--reason"), "{e}");

    // Share maintenance from the CLI (issue 18): FROST keys only. An ECDSA
    // wallet is refused naming its scheme, an unknown key naming it; a
    // FROST key's refresh keeps its public key and `key show` reports it.
    assert_eq!(k["share_generation"], 0, "{k}");
    let e = fails(&dir, &["key", "refresh", "demo-hot"]);
    assert!(e.contains("ecdsa-secp256k1"), "{e}");
    let e = fails(&dir, &["key", "repair", "demo-hot", "--signer", "signer-2"]);
    assert!(e.contains("ecdsa-secp256k1"), "{e}");
    let e = fails(&dir, &["key", "refresh", "no-such-key"]);
    assert!(e.contains("no-such-key"), "{e}");
    let ed = json(&ok(
        &dir,
        &[
            "key",
            "create",
            "cli-ed",
            "--scheme",
            "frost-ed25519",
            "--json",
        ],
    ));
    let refreshed = json(&ok(&dir, &["key", "refresh", "cli-ed", "--json"]));
    assert_eq!(refreshed["operation"], "refresh", "{refreshed}");
    assert_eq!(refreshed["generation"], 1, "{refreshed}");
    assert_eq!(
        refreshed["key"]["public_key"], ed["public_key"],
        "{refreshed}"
    );
    let shown = json(&ok(&dir, &["key", "show", "cli-ed", "--json"]));
    assert_eq!(shown["share_generation"], 1, "{shown}");
    assert_eq!(shown["last_share_change"], "refresh", "{shown}");
    let text = ok(&dir, &["key", "show", "cli-ed"]);
    assert!(
        text.contains("generation 1; last change: refresh"),
        "{text}"
    );
    let help = ok(&dir, &["key", "repair", "--help"]);
    assert!(
        help.contains("--signer") && help.contains("--json"),
        "{help}"
    );

    // A key ceremony from the CLI (issue 19): created by the signer group,
    // listed with its address; a bad id is refused naming it.
    let created = json(&ok(
        &dir,
        &["key", "create", "ops-cold-2", "--chain", "anvil", "--json"],
    ));
    assert_eq!(created["threshold"], 2, "{created}");
    assert_eq!(
        created["participants"].as_array().unwrap().len(),
        3,
        "{created}"
    );
    let address = created["address"].as_str().unwrap().to_owned();
    assert!(
        address.starts_with("0x") && address.len() == 42,
        "{created}"
    );
    let listed = json(&ok(&dir, &["key", "list", "--json"]));
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key_id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"demo-hot") && ids.contains(&"ops-cold-2"),
        "{listed}"
    );
    let table = ok(&dir, &["key", "list"]);
    assert!(
        table.contains(&address) && table.contains("2-of-3"),
        "{table}"
    );
    let e = fails(&dir, &["key", "create", "bad id!", "--chain", "anvil"]);
    assert!(e.contains("key_id"), "{e}");

    // A large withdrawal: shown from its statement, approved by two treasurers,
    // cancelled by security during the time lock.
    let w = withdraw(&dir, PAYROLL, "3000000000000000000", "awaiting_approvals");
    let id = w["id"].as_str().unwrap().to_string();
    assert_eq!(w["state"], "awaiting_approvals");
    let shown = json(&ok(&dir, &["show", &id, "--json"]));
    let review = &shown["review"];
    assert_eq!(review["mismatches"].as_array().unwrap().len(), 0, "{shown}");
    assert_eq!(review["statement"]["amount"], "3000000000000000000");
    assert_eq!(review["amount_human"], "3 ETH");
    assert_eq!(review["address_book"][0]["id"], "payroll");
    assert_eq!(review["statement_sha256"].as_str().unwrap().len(), 64);
    let text = ok(&dir, &["show", &id]);
    assert!(
        text.contains("3 ETH (3000000000000000000 base units)"),
        "{text}"
    );
    assert!(text.contains("payroll (opex), whitelisted"), "{text}");
    let pending = json(&ok(&dir, &["pending", "--approver", "alice", "--json"]));
    assert!(
        pending
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == id.as_str()),
        "{pending}"
    );
    let err = fails(&dir, &["approve", &id, "--key", &key("mallory")]);
    assert!(err.contains("mallory"), "{err}");
    let err = fails(&dir, &["reject", &id, "--key", &key("carol")]);
    assert!(err.contains("--reason"), "{err}");
    let after = json(&ok(
        &dir,
        &["approve", &id, "--key", &key("alice"), "--json"],
    ));
    assert_eq!(after["withdrawal"]["state"], "awaiting_approvals");
    assert_eq!(after["approval"]["approver"], "alice");
    let after = json(&ok(
        &dir,
        &[
            "approve",
            &id,
            "--key",
            &key("bob"),
            "--as",
            "bob",
            "--json",
        ],
    ));
    let state = after["withdrawal"]["state"].as_str().unwrap().to_string();
    assert!(state == "approved" || state == "time_locked", "{after}");
    let cancelled = json(&ok(
        &dir,
        &[
            "cancel",
            &id,
            "--key",
            &key("dave"),
            "--reason",
            "test",
            "--json",
        ],
    ));
    assert_eq!(cancelled["withdrawal"]["state"], "cancelled");
    let err = fails(&dir, &["watch", "--id", &id, "--until", "signed"]);
    assert!(err.contains("cancelled"), "{err}");

    // A rejection.
    let w = withdraw(&dir, EXCHANGE, "1500000000000000000", "awaiting_approvals");
    let rid = w["id"].as_str().unwrap().to_string();
    let rejected = json(&ok(
        &dir,
        &[
            "reject",
            &rid,
            "--key",
            &key("carol"),
            "--reason",
            "not budgeted",
            "--json",
        ],
    ));
    assert_eq!(rejected["withdrawal"]["state"], "rejected");

    // A blocked one: --wait fails naming the state.
    let out = custos(
        &dir,
        &[
            "withdraw",
            "--wallet",
            "demo-hot",
            "--asset",
            "ETH",
            "--to",
            PAYROLL,
            "--amount",
            "1",
            "--fee-cap",
            "x",
        ],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--fee-cap"));
    let blocked = custos(
        &dir,
        &[
            "withdraw",
            "--wallet",
            "demo-hot",
            "--asset",
            "ETH",
            "--to",
            "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
            "--amount",
            "1",
            "--wait",
            "signed",
        ],
    );
    assert!(!blocked.status.success());
    assert!(String::from_utf8_lossy(&blocked.stderr).contains("blocked"));

    // Listing and the event stream.
    let signed = json(&ok(&dir, &["withdrawals", "--state", "signed", "--json"]));
    assert_eq!(signed.as_array().unwrap().len(), 2, "{signed}");
    let events = ok(
        &dir,
        &["watch", "--id", &rid, "--until", "rejected", "--json"],
    );
    let last = json(events.lines().last().unwrap());
    assert_eq!(last["state"], "rejected");
    assert_eq!(last["withdrawal_id"], rid.as_str());

    // The audit log grows consistently while withdrawals happen.
    let tail = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || {
            custos(
                &dir,
                &[
                    "audit",
                    "tail",
                    "--interval-ms",
                    "200",
                    "--count",
                    "2",
                    "--json",
                ],
            )
        }
    });
    let started = Instant::now();
    while !tail.is_finished() && started.elapsed() < Duration::from_secs(60) {
        withdraw(&dir, EXCHANGE, "1000", "signed");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let tail = tail.await.unwrap();
    assert!(
        tail.status.success(),
        "audit tail: {}",
        String::from_utf8_lossy(&tail.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(tail.stdout)
        .unwrap()
        .lines()
        .map(json)
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["log_signature_verified"], true);
    assert_eq!(lines[1]["consistent_with"], lines[0]["size"]);
    assert!(lines[1]["size"].as_u64() > lines[0]["size"].as_u64());

    cluster.stop().await.unwrap();
}
