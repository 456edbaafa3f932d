//! `custos policy …` and `custos approver keygen`, run as the real binary.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a panic is a test failure"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use custos_policy::{Decision, Outcome, PolicyHash, SecretKey};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn example(name: &str) -> PathBuf {
    root().join("examples").join(name)
}

fn custos(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_custos"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh directory per test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("custos-policy-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn check_and_hash_the_sample_policy() {
    let file = example("policy.toml");
    let o = custos(&["policy", "check", s(&file)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let expected = PolicyHash::of_document(&std::fs::read(&file).unwrap()).to_string();
    assert!(
        stdout(&o).contains(&format!("hash {expected}")),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("ok, version 1, 7 rule(s)"));
    let h = custos(&["policy", "hash", s(&file)]);
    assert!(h.status.success());
    assert_eq!(stdout(&h).trim(), expected);
}

#[test]
fn check_reports_every_error_and_fails() {
    let d = scratch("invalid");
    let f = d.join("bad.toml");
    std::fs::write(
        &f,
        "version = 1\n[[address_book]]\nid = \"x\"\nchain = \"ethereum\"\naddress = \"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD\"\n\
         [[rules]]\nid = \"r\"\naction = \"block\"\n",
    )
    .unwrap();
    let o = custos(&["policy", "check", s(&f)]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("INVALID, 2 error(s)"), "{e}");
    assert!(e.contains("bad EIP-55 checksum"), "{e}");
    assert!(e.contains("needs a `reason`"), "{e}");
    std::fs::write(&f, "version = 1\nrulez = []\n").unwrap();
    let o = custos(&["policy", "check", s(&f)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("unknown field `rulez`"),
        "{}",
        stderr(&o)
    );
    // No hash for a document that does not parse.
    let h = custos(&["policy", "hash", s(&f)]);
    assert!(!h.status.success());
    assert!(stdout(&h).is_empty());
}

/// `custos policy sign FILE` fails with `reason` and writes no signatures file.
fn sign_is_refused(file: &Path, reason: &str) {
    let o = custos(&[
        "policy",
        "sign",
        s(file),
        "--key",
        s(&example("keys/admin1.pem")),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains(reason), "{}", stderr(&o));
    let mut sigs = file.as_os_str().to_owned();
    sigs.push(".sigs.json");
    assert!(!Path::new(&sigs).exists());
}

/// The sample policy without its `fee` conditions.
fn without_fee_bounds() -> String {
    std::fs::read_to_string(example("policy.toml"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("fee = "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn check_refuses_rules_without_a_fee_bound() {
    let d = scratch("no-fee");
    let f = d.join("p.toml");
    std::fs::write(&f, without_fee_bounds()).unwrap();
    let o = custos(&["policy", "check", s(&f)]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let e = stderr(&o);
    assert!(e.contains("REFUSED, 4 fee-bound error(s)"), "{e}");
    for rule in [
        "rules[1] (cold-to-internal): `require_approvals` rule without a fee bound",
        "rules[3] (hot-small): `allow` rule without a fee bound",
        "rules[5] (btc-small): `allow` rule without a fee bound",
        "rules[6] (large-whitelisted): `require_approvals` rule without a fee bound",
    ] {
        assert!(e.contains(rule), "{rule}\n{e}");
    }
    assert!(!stdout(&o).contains(": ok"), "{}", stdout(&o));
    // The document itself is well-formed: it hashes (signers keep loading such a
    // policy in force), but admins cannot sign it with the CLI.
    assert!(custos(&["policy", "hash", s(&f)]).status.success());
    sign_is_refused(
        &f,
        "refusing to sign a policy with rules that do not bound the fee cap",
    );
    // One absolute number over wei and satoshi: refused, naming the field.
    let text = std::fs::read_to_string(example("policy.toml"))
        .unwrap()
        .replace(
            "fee = { max_per_asset = { ETH = \"50000000000000000\", BTC = 200000 } }",
            "fee = { max = \"50000000000000000\" }",
        );
    std::fs::write(&f, text).unwrap();
    let o = custos(&["policy", "check", s(&f)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("rules[6] (large-whitelisted).fee.max: is in the native base units"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn check_accepts_rules_with_fee_bounds() {
    // Only the fee bounds differ from the refused document above.
    let o = custos(&["policy", "check", s(&example("policy.toml"))]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = custos(&["policy", "check", s(&example("demo-policy.toml"))]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("ok, version 1, 6 rule(s)"),
        "{}",
        stdout(&o)
    );
    // A fee over the hot-wallet bound: the explanation names the bound, and the
    // withdrawal falls through to the block rule after it.
    let w = r#"{"id":"wd-7","wallet":"eth-hot-1","chain":"ethereum","asset":"ETH","destination":"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed","amount":"50000000000000000","fee_cap":"2600000000000000","initiator":"payments-backend"}"#;
    let o = custos(&[
        "policy",
        "explain",
        s(&example("policy.toml")),
        "--withdrawal",
        w,
        "--at",
        "2026-01-07T10:00:00Z",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    // The amount a person reads shows units and base units.
    assert!(
        out.starts_with(
            "Withdrawal wd-7 of 0.05 ETH (50000000000000000 base units) from wallet eth-hot-1"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "FAIL fee: fee cap 2600000000000000 is above fee.max_bps 500 of the amount 50000000000000000 (2500000000000000)"
        ),
        "{out}"
    );
    assert!(
        out.contains("Decision: BLOCK by rule `hot-small-over-limit`"),
        "{out}"
    );
}

#[test]
fn sign_by_admin_quorum_then_verify() {
    let d = scratch("sign");
    let file = d.join("policy.toml");
    std::fs::copy(example("policy.toml"), &file).unwrap();
    let admins = example("admins.toml");
    let k1 = example("keys/admin1.pem");
    let k2 = example("keys/admin2.pem");
    let o = custos(&["policy", "sign", s(&file), "--key", s(&k1)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("1 signature(s)"));
    // One of two admins: not authorised.
    let o = custos(&["policy", "check", s(&file), "--admins", s(&admins)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("1 valid admin signature(s), 2 required"),
        "{}",
        stderr(&o)
    );
    // Signing again with the same key does not add a second signature.
    custos(&["policy", "sign", s(&file), "--key", s(&k1)]);
    let o = custos(&["policy", "check", s(&file), "--admins", s(&admins)]);
    assert_eq!(o.status.code(), Some(1));
    // A non-admin key's signature does not count either.
    custos(&[
        "policy",
        "sign",
        s(&file),
        "--key",
        s(&example("keys/alice.pem")),
    ]);
    assert_eq!(
        custos(&["policy", "check", s(&file), "--admins", s(&admins)])
            .status
            .code(),
        Some(1)
    );
    let o = custos(&["policy", "sign", s(&file), "--key", s(&k2)]);
    assert!(o.status.success());
    let o = custos(&["policy", "check", s(&file), "--admins", s(&admins)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("bundle authorised: 2 valid admin signature(s), 2 required"),
        "{}",
        stdout(&o)
    );
    // Editing the document after signing: the signatures no longer apply.
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str("\n# edited after signing\n");
    std::fs::write(&file, text).unwrap();
    let o = custos(&["policy", "check", s(&file), "--admins", s(&admins)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("signatures are for policy"),
        "{}",
        stderr(&o)
    );
    let o = custos(&["policy", "sign", s(&file), "--key", s(&k1)]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("holds signatures for policy"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn sign_refuses_invalid_policy() {
    let d = scratch("sign-invalid");
    let f = d.join("p.toml");
    std::fs::write(&f, "version = 0\n").unwrap();
    sign_is_refused(&f, "refusing to sign an invalid policy");
}

#[test]
fn explain_prints_the_rule_and_why() {
    let p = example("policy.toml");
    let w = example("withdrawal.json");
    let h = example("history.json");
    let o = custos(&[
        "policy",
        "explain",
        s(&p),
        "--withdrawal",
        s(&w),
        "--history",
        s(&h),
        "--at",
        "2026-01-07T10:00:00Z",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("Rule 4 `hot-small` MATCHED"), "{out}");
    assert!(
        out.contains(
            "total 4504200000000000000 (amounts 4500000000000000000 + fee caps 4200000000000000) in 2 withdrawal(s)"
        ),
        "{out}"
    );
    assert!(out.contains("Decision: ALLOW by rule `hot-small`"), "{out}");
    // Same instant written in another zone: same decision. 05:00 UTC: outside hours.
    let o = custos(&[
        "policy",
        "explain",
        s(&p),
        "--withdrawal",
        s(&w),
        "--at",
        "2026-01-07T15:00:00+05:00",
    ]);
    assert!(stdout(&o).contains("Decision: ALLOW"));
    let o = custos(&[
        "policy",
        "explain",
        s(&p),
        "--withdrawal",
        s(&w),
        "--at",
        "2026-01-07T10:00:00+05:00",
    ]);
    assert!(stdout(&o).contains("outside the hours"), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("Decision: BLOCK by rule `hot-small-over-limit`"),
        "{}",
        stdout(&o)
    );
    // Inline JSON, high risk, JSON output.
    let inline = std::fs::read_to_string(&w).unwrap();
    let o = custos(&[
        "policy",
        "explain",
        s(&p),
        "--withdrawal",
        &inline,
        "--at",
        "1767780000",
        "--risk",
        "90",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let d: Decision = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(d.rule_id.as_deref(), Some("block-high-risk"));
    assert!(matches!(d.outcome, Outcome::Block { .. }));
    // Cooling: the policy activated an hour ago, so entries are not usable yet.
    let o = custos(&[
        "policy",
        "explain",
        s(&p),
        "--withdrawal",
        s(&w),
        "--at",
        "1767780000",
        "--activated-at",
        "1767776400",
    ]);
    assert!(stdout(&o).contains("cooling period"), "{}", stdout(&o));
    // Bad input is an error naming the field, not a decision.
    let bad = inline.replace(
        "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed",
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD",
    );
    let o = custos(&[
        "policy",
        "explain",
        s(&p),
        "--withdrawal",
        &bad,
        "--at",
        "1767780000",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("withdrawal field `destination` is invalid"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn approver_keygen_writes_a_private_key_file() {
    let d = scratch("keygen");
    let f = d.join("me.pem");
    let o = custos(&["approver", "keygen", "--out", s(&f)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let public = stdout(&o).trim().to_string();
    assert_eq!(public.len(), 64);
    let pem = std::fs::read_to_string(&f).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert_eq!(SecretKey::from_pem(&pem).unwrap().public().to_hex(), public);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // Never overwrites, and two keys differ.
    let again = custos(&["approver", "keygen", "--out", s(&f)]);
    assert!(!again.status.success());
    assert_eq!(std::fs::read_to_string(&f).unwrap(), pem);
    let other = custos(&["approver", "keygen", "--out", s(&d.join("other.pem"))]);
    assert_ne!(stdout(&other).trim(), public);
}

#[test]
fn statement_sign_and_check_approvals() {
    let d = scratch("flow");
    let p = example("policy.toml");
    let w = r#"{"id":"wd-9","wallet":"eth-hot-1","chain":"ethereum","asset":"ETH","destination":"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed","amount":"5000000000000000000","fee_cap":"1","initiator":"payments-backend","tx_digest":"abcd"}"#;
    let at = "2026-01-07T10:00:00Z";
    let o = custos(&["policy", "statement", s(&p), "--withdrawal", w, "--at", at]);
    assert!(o.status.success(), "{}", stderr(&o));
    let st = d.join("statement.json");
    std::fs::write(&st, &o.stdout).unwrap();
    assert!(stdout(&o).contains("\"rule_id\": \"large-whitelisted\""));
    assert!(
        stdout(&o).contains("\"expiry\": \"2026-01-07T22:00:00Z\""),
        "12 h rule lifetime: {}",
        stdout(&o)
    );
    let sign = |who: &str| {
        let o = custos(&[
            "approver",
            "sign",
            "--key",
            s(&example(&format!("keys/{who}.pem"))),
            "--id",
            who,
            "--statement",
            s(&st),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("5 ETH (5000000000000000000 base units) on ethereum"),
            "{}",
            stderr(&o)
        );
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let all = serde_json::Value::Array(vec![sign("alice"), sign("bob"), sign("erin")]);
    let approvals = d.join("approvals.json");
    std::fs::write(&approvals, all.to_string()).unwrap();
    let check = |withdrawal: &str, approvals: &Path| {
        custos(&[
            "policy",
            "approvals",
            s(&p),
            "--withdrawal",
            withdrawal,
            "--at",
            at,
            "--statement",
            s(&st),
            "--approvals",
            s(approvals),
        ])
    };
    let o = check(w, &approvals);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("\"status\": \"satisfied\""));
    // Same approvals presented for a bigger amount: refused.
    let o = check(
        &w.replace("5000000000000000000", "6000000000000000000"),
        &approvals,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("\"status\": \"invalid\"") && stdout(&o).contains("statement amount"),
        "{}",
        stdout(&o)
    );
    // A revoked approver's signature: refused.
    let with_mallory = serde_json::Value::Array(vec![sign("alice"), sign("mallory"), sign("erin")]);
    let f = d.join("mallory.json");
    std::fs::write(&f, with_mallory.to_string()).unwrap();
    let o = check(w, &f);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("revoked"), "{}", stdout(&o));
    // A withdrawal that needs no approvals gets no statement.
    let small = w.replace("5000000000000000000", "5");
    let o = custos(&[
        "policy",
        "statement",
        s(&p),
        "--withdrawal",
        &small,
        "--at",
        at,
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("needs no approvals"));
}
