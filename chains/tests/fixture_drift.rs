#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The checked-in token bytecode is what its assembly listing assembles to
//! (python3 is a declared dev dependency: scripts/install-deps.sh).

use std::process::Command;

#[test]
fn mini_token_bytecode_matches_its_listing() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let out = Command::new("python3")
        .arg(dir.join("evm_asm.py"))
        .arg(dir.join("MiniToken.asm"))
        .output()
        .expect("python3 (scripts/install-deps.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let assembled = String::from_utf8(out.stdout).unwrap();
    let checked_in = std::fs::read_to_string(dir.join("MiniToken.bin.hex")).unwrap();
    assert_eq!(assembled.trim(), checked_in.trim());
}
