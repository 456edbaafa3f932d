//! The generated code in `src/gen` is checked in; this test regenerates it
//! from the `.proto` files and fails if they drifted apart.
//! Regenerate with `CUSTOS_REGENERATE_PROTO=1 cargo test -p custos-proto --test drift`.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

const PROTOS: &[&str] = &[
    "proto/custos/v1/custody.proto",
    "proto/custos/signer/v1/signer.proto",
];

fn generate(out: &Path) {
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .out_dir(out)
        .compile_protos(PROTOS, &["proto"])
        .expect("protoc runs (apt install protobuf-compiler)");
}

#[test]
fn generated_code_matches_protos() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    std::env::set_current_dir(&root).unwrap();
    let checked_in = root.join("src/gen");
    if std::env::var_os("CUSTOS_REGENERATE_PROTO").is_some() {
        generate(&checked_in);
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    generate(tmp.path());
    for entry in std::fs::read_dir(tmp.path()).unwrap() {
        let entry = entry.unwrap();
        let fresh = std::fs::read_to_string(entry.path()).unwrap();
        let name = entry.file_name();
        let old = std::fs::read_to_string(checked_in.join(&name)).unwrap_or_default();
        assert!(
            fresh == old,
            "src/gen/{} is stale: run CUSTOS_REGENERATE_PROTO=1 cargo test -p custos-proto --test drift",
            name.to_string_lossy()
        );
    }
}
