//! `custos dev up|status|down`, run as the real binary against real signers.
//!
//! Needs `custos-signer` in the same target directory (`cargo build -p
//! custos-signer-node`); skipped with a message otherwise.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a panic is a test failure"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn custos(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_custos"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "custos-dev-cli-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = custos_devkit::stop_from_pid_file(&self.0.join("cluster"));
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn down_and_status_without_a_cluster_succeed() {
    let tmp = TempDir::new("empty");
    let dir = tmp.0.join("cluster");
    let dir = dir.to_str().unwrap();
    let out = ok(&custos(&["dev", "down", "--dir", dir]));
    assert!(out.contains("no dev cluster running"), "{out}");
    let out = ok(&custos(&["dev", "status", "--dir", dir]));
    assert!(out.contains("no dev cluster running"), "{out}");
}

#[test]
fn missing_daemons_are_named() {
    let tmp = TempDir::new("nobin");
    let dir = tmp.0.join("cluster");
    let o = custos(&[
        "dev",
        "up",
        "--dir",
        dir.to_str().unwrap(),
        "--bin-dir",
        tmp.0.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("custos-signer") && err.contains("cargo build --workspace"),
        "{err}"
    );
}

#[test]
fn up_status_down() {
    let bins = Path::new(env!("CARGO_BIN_EXE_custos"))
        .parent()
        .unwrap()
        .to_path_buf();
    if !bins.join("custos-signer").is_file() {
        eprintln!(
            "SKIPPED: no custos-signer in {}: `cargo build -p custos-signer-node`",
            bins.display()
        );
        return;
    }
    let tmp = TempDir::new("up");
    let dir = tmp.0.join("cluster");
    let dir_s = dir.to_str().unwrap();
    let base = custos_devkit::free_base_port().to_string();
    let primes =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../mpc/tests/fixtures/test-primes.json");
    let mut args = vec!["dev", "up", "--dir", dir_s, "--base-port", &base, "--json"];
    let primes_s = primes.to_string_lossy().into_owned();
    if primes.is_file() {
        args.extend(["--primes-file", &primes_s]);
    }
    let out = ok(&custos(&args));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let procs = v["processes"].as_array().unwrap();
    assert!(procs.len() >= 3, "{out}");
    assert_eq!(v["cluster"]["signers"].as_array().unwrap().len(), 3);
    assert_eq!(
        v["cluster"]["coordinator"]["url"],
        format!("https://127.0.0.1:{base}")
    );
    // The processes outlive `custos dev up`.
    let status: serde_json::Value =
        serde_json::from_str(&ok(&custos(&["dev", "status", "--dir", dir_s, "--json"]))).unwrap();
    let listed = status["processes"].as_array().unwrap();
    assert_eq!(listed.len(), procs.len());
    assert!(listed.iter().all(|p| p["alive"] == true), "{status}");
    // `up` again: reports the running cluster.
    let again = ok(&custos(&[
        "dev",
        "up",
        "--dir",
        dir_s,
        "--base-port",
        &base,
    ]));
    assert!(again.contains("already running"), "{again}");
    // Human output names the essentials and never a secret.
    let token = std::fs::read_to_string(dir.join("coordinator/admin.token")).unwrap();
    assert!(!again.contains(token.trim()));
    assert!(
        again.contains("custos dev down") && again.contains("ca.pem"),
        "{again}"
    );

    let out = ok(&custos(&["dev", "down", "--dir", dir_s]));
    assert!(out.contains(&format!("stopped {}", procs.len())), "{out}");
    let out = ok(&custos(&["dev", "down", "--dir", dir_s]));
    assert!(out.contains("no dev cluster running"), "{out}");
}
