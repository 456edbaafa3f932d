//! `custos audit verify` on the golden bundle of the audit crate and on
//! tampered copies of it: exit 0 when intact, non-zero naming the first bad
//! entry otherwise (docs/SECURITY.md cases 19 and 20).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../audit/tests/vectors")
}

fn keys() -> Value {
    serde_json::from_str(&std::fs::read_to_string(vectors().join("bundle_keys.json")).unwrap())
        .unwrap()
}

fn bundle() -> Value {
    serde_json::from_str(&std::fs::read_to_string(vectors().join("bundle_good.json")).unwrap())
        .unwrap()
}

fn write(name: &str, contents: &str) -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("audit-verify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(bundle: &Value, name: &str, extra: &[&str]) -> Out {
    let k = keys();
    let path = write(name, &serde_json::to_string(bundle).unwrap());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_custos"));
    cmd.args(["audit", "verify"]).arg(&path).args([
        "--log-key",
        k["log_key"].as_str().unwrap(),
        "--witness-key",
    ]);
    for w in k["witness_keys"].as_array().unwrap() {
        cmd.arg(w.as_str().unwrap());
    }
    let out = cmd.args(extra).output().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn flip_last_byte(hex_entry: &Value) -> Value {
    let mut b = hex::decode(hex_entry.as_str().unwrap()).unwrap();
    let last = b.len() - 1;
    b[last] ^= 1;
    Value::String(hex::encode(b))
}

#[test]
fn intact_bundle_passes() {
    let previous = write(
        "previous.note",
        keys()["previous_checkpoint"].as_str().unwrap(),
    );
    let out = run(
        &bundle(),
        "good.json",
        &["--previous", previous.to_str().unwrap()],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("OK"), "{}", out.stdout);
    assert!(
        out.stdout.contains("signatures   3 authorised"),
        "{}",
        out.stdout
    );
}

#[test]
fn edited_entry_is_named() {
    let mut b = bundle();
    b["entries"][14] = flip_last_byte(&b["entries"][14]);
    let out = run(&b, "edited.json", &[]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("first bad entry 14"), "{}", out.stderr);
}

#[test]
fn removed_and_reordered_entries_are_named() {
    let mut b = bundle();
    b["entries"].as_array_mut().unwrap().remove(9);
    let out = run(&b, "removed.json", &[]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("first bad entry 9"), "{}", out.stderr);

    let mut b = bundle();
    b["entries"].as_array_mut().unwrap().swap(5, 7);
    let out = run(&b, "swapped.json", &["--json"]);
    assert_ne!(out.code, 0);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["first_failure"]["entry"], 5, "{}", out.stdout);
}

#[test]
fn truncated_log_is_named_against_previous_checkpoint() {
    // Drop the last entry, its leaf hash and the checkpoint covering it, as
    // an operator truncating the database would.
    let mut b = bundle();
    let latest = b["checkpoints"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();
    let n = b["entries"].as_array().unwrap().len();
    b["entries"].as_array_mut().unwrap().pop();
    b["leaf_hashes"].as_array_mut().unwrap().pop();
    b["checkpoints"].as_array_mut().unwrap().pop();
    let previous = write("latest.note", &latest);
    let out = run(
        &b,
        "truncated.json",
        &["--previous", previous.to_str().unwrap()],
    );
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains(&format!("first bad entry {}", n - 1)),
        "{}",
        out.stderr
    );
}

#[test]
fn signature_without_decision_is_flagged() {
    // Rewriting both the entry and the stored leaf hashes cannot reproduce the
    // signed roots; the decision removal is caught there and by the replay.
    let mut b = bundle();
    let entries = b["entries"].as_array().unwrap().clone();
    let decision = entries
        .iter()
        .position(|e| e.as_str().unwrap().starts_with("010006"))
        .unwrap();
    b["entries"].as_array_mut().unwrap().remove(decision);
    let out = run(&b, "nodecision.json", &["--json"]);
    assert_ne!(out.code, 0);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let kinds: Vec<&str> = v["report"]["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"unauthorized"), "{kinds:?}");
    assert_eq!(v["first_failure"]["entry"], decision as u64);
}

#[test]
fn wrong_keys_and_missing_quorum_fail() {
    let mut b = bundle();
    // A checkpoint whose log signature was tampered with.
    let cp = b["checkpoints"][0].as_str().unwrap().replacen(
        "custos.test/log\n3\n",
        "custos.test/log\n4\n",
        1,
    );
    assert_ne!(cp, b["checkpoints"][0].as_str().unwrap());
    b["checkpoints"][0] = Value::String(cp);
    let out = run(&b, "badcp.json", &[]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(out.stderr.contains("bad signature"), "{}", out.stderr);

    let out = run(&bundle(), "quorum.json", &["--witness-quorum", "3"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("exceeds"), "{}", out.stderr);

    let k = keys();
    let out = Command::new(env!("CARGO_BIN_EXE_custos"))
        .args(["audit", "verify"])
        .arg(vectors().join("bundle_good.json"))
        .args([
            "--log-key",
            k["witness_keys"][0].as_str().unwrap(),
            "--witness-quorum",
            "0",
        ])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
}
