//! The stores reach their database through `custos-db` alone: `cargo tree`
//! of `custos-ledger`, `custos-events` and `custos-audit` (every feature,
//! so the SQL store is in) names no server, no logging setup and no daemon
//! plumbing. A store that starts depending on `custos-service` again, or a
//! `custos-db` that grows a server dependency, fails here.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

/// Crates the stores must not depend on, with why.
const BANNED: &[(&str, &str)] = &[
    ("axum", "HTTP server"),
    ("tonic", "gRPC server/client"),
    ("tracing-subscriber", "the daemons' logging setup"),
    ("custos-service", "daemon plumbing"),
];

/// The package names in `cargo tree -p <package> -e normal --all-features`.
fn tree(package: &str) -> Vec<String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let out = Command::new(env!("CARGO"))
        .args(["tree", "-p", package, "-e", "normal", "--all-features"])
        .args(["--prefix", "none", "--format", "{p}", "--manifest-path"])
        .arg(manifest)
        .output()
        .expect("running cargo tree");
    assert!(
        out.status.success(),
        "cargo tree -p {package} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// `package`'s tree holds `custos-db` and none of [`BANNED`].
fn check(package: &str) {
    let names = tree(package);
    assert!(
        names.iter().any(|n| n == "custos-db"),
        "{package} does not use custos-db: {names:?}"
    );
    let found: Vec<String> = BANNED
        .iter()
        .filter(|(name, _)| names.iter().any(|n| n == name))
        .map(|(name, why)| format!("{name} ({why})"))
        .collect();
    assert!(
        found.is_empty(),
        "{package} depends on {}: see `cargo tree -p {package} -e normal --all-features -i <crate>`",
        found.join(", ")
    );
}

#[test]
fn ledger_has_no_server_in_its_tree() {
    check("custos-ledger");
}

#[test]
fn events_has_no_server_in_its_tree() {
    check("custos-events");
}

#[test]
fn audit_sql_store_has_no_server_in_its_tree() {
    check("custos-audit");
}

#[test]
fn the_db_crate_itself_is_only_a_database() {
    let names = tree("custos-db");
    let found: Vec<&str> = BANNED
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| names.iter().any(|n| n == name))
        .collect();
    assert!(found.is_empty(), "custos-db depends on {found:?}");
}
