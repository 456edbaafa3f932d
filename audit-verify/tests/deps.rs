//! The verifier's dependency tree stays free of key backends, servers and
//! databases: an auditor builds and reviews it alone. `cargo tree` of this
//! package, with every feature, must not name any of them; without
//! features it must not name a network client either.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

/// Crates the verifier must never depend on, with why.
const BANNED: &[(&str, &str)] = &[
    ("cryptoki", "PKCS#11"),
    ("custos-hsm", "key backends"),
    ("argon2", "passphrase key derivation"),
    ("tonic", "gRPC server/client"),
    ("axum", "HTTP server"),
    ("sqlx", "database"),
    ("rusqlite", "database"),
    ("libsqlite3-sys", "database"),
    ("tokio-postgres", "database"),
    ("custos-service", "daemon plumbing and the database"),
];

/// Crates only feature `evm-rpc` may bring in.
const NETWORK: &[&str] = &["reqwest", "hyper", "tokio"];

/// The package names in `cargo tree -p custos-audit-verify -e normal`.
fn tree(features: &[&str]) -> Vec<String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let out = Command::new(env!("CARGO"))
        .args(["tree", "-p", "custos-audit-verify", "-e", "normal"])
        .args(["--prefix", "none", "--format", "{p}", "--manifest-path"])
        .arg(manifest)
        .args(features)
        .output()
        .expect("running cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    assert!(names.iter().any(|n| n == "custos-audit"), "{names:?}");
    names
}

#[test]
fn no_key_backend_server_or_database_with_any_feature() {
    let names = tree(&["--all-features"]);
    let found: Vec<String> = BANNED
        .iter()
        .filter(|(name, _)| names.iter().any(|n| n == name))
        .map(|(name, why)| format!("{name} ({why})"))
        .collect();
    assert!(
        found.is_empty(),
        "the verifier depends on {}: see `cargo tree -p custos-audit-verify -e normal --all-features -i <crate>`",
        found.join(", ")
    );
}

#[test]
fn no_network_client_without_the_evm_rpc_feature() {
    let names = tree(&[]);
    let found: Vec<&str> = NETWORK
        .iter()
        .copied()
        .filter(|name| names.iter().any(|n| n == name))
        .collect();
    assert!(found.is_empty(), "the pure verifier depends on {found:?}");
}
