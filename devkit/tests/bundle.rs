//! `generate`: the withdrawal policy bundle and the audit-log key installation
//! (with stand-in coordinator binaries: shell scripts).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers outside #[test] fns

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use custos_devkit::{ClusterSpec, DEMO_POLICY, DevkitError, generate, install_log_key};
use custos_policy::{AdminSet, BundleSignatures, PolicyHash, verify_bundle};

fn spec(dir: &Path) -> ClusterSpec {
    let mut s = ClusterSpec::new(dir.join("cluster"));
    s.base_port = 33000;
    s
}

// Base64 may contain `+` too.
const KEY_LINE: &str = "custos.local/log+c13443df+AdjmuOBA4ksNyCx9i8NsUHR79lXpgCJ5u/tsyZ2RmI+J";

/// A directory with a `custos-coordinator` script running `body` (sh).
fn fake_coordinator(dir: &Path, body: &str) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let path = bin.join("custos-coordinator");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

fn log_key_of(config: &Path) -> Option<String> {
    let v: toml::Value = toml::from_str(&std::fs::read_to_string(config).unwrap()).unwrap();
    v.get("cosigner")?
        .get("log_key")?
        .as_str()
        .map(String::from)
}

#[test]
fn the_demo_policy_is_installed_signed_by_the_admin_quorum() {
    let tmp = tempfile::tempdir().unwrap();
    let l = generate(&spec(tmp.path())).unwrap();
    let p = l.policy.clone().unwrap();
    let doc = std::fs::read(&p.document).unwrap();
    assert_eq!(doc, DEMO_POLICY.as_bytes(), "exactly the embedded document");
    assert_eq!(p.hash, PolicyHash::of_document(&doc).to_string());
    let sigs: BundleSignatures =
        serde_json::from_slice(&std::fs::read(&p.signatures).unwrap()).unwrap();
    assert_eq!(sigs.signatures.len(), 2);
    let admins = AdminSet::parse(&std::fs::read(&p.admins).unwrap()).unwrap();
    assert_eq!(admins.threshold(), 2);
    verify_bundle(&doc, &sigs, &admins).unwrap();
    // The same admin set as examples/admins.toml.
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/admins.toml");
    let want = AdminSet::parse(&std::fs::read(examples).unwrap()).unwrap();
    assert_eq!(format!("{admins:?}"), format!("{want:?}"));
    // Demo wallets and approvers the CLI demo relies on.
    let text = String::from_utf8(doc).unwrap();
    for needle in [
        "demo-hot",
        "demo-cold",
        "eth-hot-1",
        "alice",
        "bob",
        "delay = \"5s\"",
    ] {
        assert!(text.contains(needle), "{needle}");
    }
}

#[test]
fn another_policy_can_be_installed_and_a_broken_one_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let custom = tmp.path().join("custom.toml");
    let text = DEMO_POLICY.replace("version = 1", "version = 7");
    std::fs::write(&custom, &text).unwrap();
    let mut sp = spec(tmp.path());
    sp.policy = Some(custom.clone());
    let l = generate(&sp).unwrap();
    let p = l.policy.unwrap();
    assert_eq!(std::fs::read_to_string(&p.document).unwrap(), text);
    let sigs: BundleSignatures =
        serde_json::from_slice(&std::fs::read(&p.signatures).unwrap()).unwrap();
    let admins = AdminSet::parse(&std::fs::read(&p.admins).unwrap()).unwrap();
    assert_eq!(
        verify_bundle(text.as_bytes(), &sigs, &admins)
            .unwrap()
            .policy()
            .version(),
        7
    );

    std::fs::write(
        &custom,
        "version = 1\n[[rules]]\nid = \"x\"\nacton = \"allow\"\n",
    )
    .unwrap();
    let err = generate(&sp).unwrap_err();
    assert!(matches!(err, DevkitError::Policy { .. }), "{err}");
    assert!(err.to_string().contains("custom.toml"), "{err}");

    sp.policy = Some(tmp.path().join("missing.toml"));
    assert!(matches!(
        generate(&sp).unwrap_err(),
        DevkitError::InvalidSpec(_)
    ));
}

#[test]
fn generation_with_a_bin_dir_installs_the_log_key_in_every_signer() {
    let tmp = tempfile::tempdir().unwrap();
    // The script checks it is asked the right question.
    let bin = fake_coordinator(
        tmp.path(),
        &format!(
            "[ \"$1\" = log-key ] && [ \"$2\" = --config ] && [ -f \"$3\" ] || {{ echo \"bad args $*\" >&2; exit 2; }}\n\
             echo '{KEY_LINE}'"
        ),
    );
    let mut sp = spec(tmp.path());
    sp.bin_dir = Some(bin);
    let l = generate(&sp).unwrap();
    assert_eq!(l.log_key.as_deref(), Some(KEY_LINE));
    for s in &l.signers {
        assert_eq!(log_key_of(&s.config).as_deref(), Some(KEY_LINE));
    }
    let loaded = custos_devkit::ClusterLayout::load(&l.dir).unwrap();
    assert_eq!(loaded.log_key.as_deref(), Some(KEY_LINE));
}

#[test]
fn a_coordinator_without_log_key_fails_generation_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = fake_coordinator(
        tmp.path(),
        "echo \"error: unrecognized subcommand 'log-key'\" >&2; exit 2",
    );
    let mut sp = spec(tmp.path());
    sp.bin_dir = Some(bin);
    let err = generate(&sp).unwrap_err().to_string();
    assert!(err.contains("too old"), "{err}");
    assert!(err.contains("custos-coordinator"), "{err}");

    let garbage = fake_coordinator(&tmp.path().join("g"), "echo 'hello world'");
    sp.bin_dir = Some(garbage);
    let err = generate(&sp).unwrap_err().to_string();
    assert!(err.contains("not a verifier key"), "{err}");

    sp.bin_dir = Some(tmp.path().join("nowhere"));
    assert!(matches!(
        generate(&sp).unwrap_err(),
        DevkitError::InvalidSpec(_)
    ));
}

#[test]
fn install_log_key_keeps_edited_signer_configs() {
    let tmp = tempfile::tempdir().unwrap();
    let mut l = generate(&spec(tmp.path())).unwrap();
    let cfg = &l.signers[0].config.clone();
    let edited = std::fs::read_to_string(cfg)
        .unwrap()
        .replace("session_timeout_secs = 60", "session_timeout_secs = 61");
    std::fs::write(cfg, edited).unwrap();
    let bin = fake_coordinator(tmp.path(), &format!("echo '{KEY_LINE}'"));
    assert_eq!(install_log_key(&mut l, &bin, &[]).unwrap(), KEY_LINE);
    let v: toml::Value = toml::from_str(&std::fs::read_to_string(cfg).unwrap()).unwrap();
    assert_eq!(v["session_timeout_secs"].as_integer(), Some(61));
    assert_eq!(v["cosigner"]["log_key"].as_str(), Some(KEY_LINE));
    assert_eq!(
        v["cosigner"]["admins"].as_str(),
        Some("../policy/admins.toml")
    );
    // A later generate keeps the installed key while the coordinator holds it.
    std::fs::write(l.coordinator.data_dir.join("log-key.sealed"), b"sealed").unwrap();
    let again = generate(&spec(tmp.path())).unwrap();
    assert_eq!(again.log_key.as_deref(), Some(KEY_LINE));
    assert_eq!(
        log_key_of(&again.signers[2].config).as_deref(),
        Some(KEY_LINE)
    );
}
