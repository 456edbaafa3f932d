//! Software backend: round trips, binding, tamper detection, re-seal.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers outside #[test] fns

mod common;

use common::*;
use custos_hsm::{
    HsmError, KdfParams, Passphrase, SealContext, Sealer, SoftwareSealer, reseal, reseal_dir,
};

fn open(dir: &std::path::Path, pass: &str) -> SoftwareSealer {
    SoftwareSealer::open_with_params(
        dir,
        &Passphrase::from(pass),
        true,
        KdfParams::insecure_fast_for_tests(),
    )
    .unwrap()
}

#[test]
fn round_trips() {
    let dir = tempfile::tempdir().unwrap();
    assert_round_trips(&open(dir.path(), "pass"));
}

#[test]
fn blob_for_node_a_or_key_k_fails_as_node_b_or_key_k2() {
    let dir = tempfile::tempdir().unwrap();
    assert_context_binding(&open(dir.path(), "pass"));
}

#[test]
fn one_flipped_bit_anywhere_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    assert_every_bit_flip_fails(&open(dir.path(), "pass"), &share_plaintext());
}

#[test]
fn blob_from_another_kek_fails_even_with_the_same_passphrase() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    assert_kek_binding(&open(a.path(), "same"), &open(b.path(), "same"));
}

#[test]
fn reseal_moves_a_blob_to_another_kek() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let (old, new) = (open(a.path(), "old"), open(b.path(), "new"));
    let blob = old.seal(&CTX, b"share bytes").unwrap();
    let moved = reseal(&old, &new, &CTX, &blob).unwrap();
    assert_eq!(&new.unseal(&CTX, &moved).unwrap()[..], b"share bytes");
    assert!(old.unseal(&CTX, &moved).is_err());
    // The context travels unchanged: the new blob is still bound to it.
    let other = SealContext {
        node_id: "node-b",
        ..CTX
    };
    assert!(new.unseal(&other, &moved).is_err());
}

#[test]
fn reseal_dir_rotates_every_blob_atomically_and_resumes() {
    let root = tempfile::tempdir().unwrap();
    let (old, new) = (
        open(&root.path().join("kek-old"), "old"),
        open(&root.path().join("kek-new"), "new"),
    );
    let shares = root.path().join("shares");
    std::fs::create_dir_all(shares.join("key-2")).unwrap();
    let mut expected = Vec::new();
    for (i, rel) in ["key-1.share", "key-1.aux", "key-2/share.bin"]
        .iter()
        .enumerate()
    {
        let key = format!("key-{i}");
        let ctx = SealContext {
            node_id: "node-a",
            key_id: &key,
            share_id: rel,
        };
        let pt = vec![i as u8; 100 + i];
        std::fs::write(shares.join(rel), old.seal(&ctx, &pt).unwrap()).unwrap();
        expected.push((rel.to_string(), key, pt));
    }
    std::fs::write(shares.join("README"), "not a blob").unwrap();

    let report = reseal_dir(&old, &new, &shares, "node-a").unwrap();
    assert_eq!(
        (report.resealed, report.already_current, report.skipped),
        (3, 0, 1)
    );
    for (rel, key, pt) in &expected {
        let ctx = SealContext {
            node_id: "node-a",
            key_id: key,
            share_id: rel,
        };
        let bytes = std::fs::read(shares.join(rel)).unwrap();
        assert_eq!(&new.unseal(&ctx, &bytes).unwrap()[..], &pt[..]);
        assert!(old.unseal(&ctx, &bytes).is_err());
    }
    // No temp files are left, and a second run changes nothing.
    let mut names = Vec::new();
    for e in walk(&shares) {
        names.push(e);
    }
    assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");
    let again = reseal_dir(&old, &new, &shares, "node-a").unwrap();
    assert_eq!((again.resealed, again.already_current), (0, 3));

    // A blob of another node in the directory stops the run with a clear error.
    let foreign = SealContext {
        node_id: "node-b",
        key_id: "k",
        share_id: "s",
    };
    std::fs::write(shares.join("foreign"), old.seal(&foreign, b"x").unwrap()).unwrap();
    let err = reseal_dir(&old, &new, &shares, "node-a").unwrap_err();
    assert!(
        matches!(err, HsmError::SealedBlobInvalid(ref m) if m.contains("node-b")),
        "{err}"
    );
}

#[test]
fn reseal_dir_stops_on_a_tampered_blob_and_keeps_it() {
    let root = tempfile::tempdir().unwrap();
    let (old, new) = (
        open(&root.path().join("o"), "old"),
        open(&root.path().join("n"), "new"),
    );
    let shares = root.path().join("shares");
    std::fs::create_dir(&shares).unwrap();
    let mut blob = old.seal(&CTX, b"share").unwrap();
    let last = blob.len() - 1;
    blob[last] ^= 1;
    std::fs::write(shares.join("bad"), &blob).unwrap();
    let err = reseal_dir(&old, &new, &shares, CTX.node_id).unwrap_err();
    assert!(matches!(err, HsmError::SealedBlobInvalid(_)), "{err}");
    assert_eq!(std::fs::read(shares.join("bad")).unwrap(), blob);
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out
}

#[test]
fn reseal_dir_finishes_an_interrupted_rotation() {
    // As after a kill -9 half-way: some blobs already moved, others not.
    let root = tempfile::tempdir().unwrap();
    let (old, new) = (
        open(&root.path().join("o"), "old"),
        open(&root.path().join("n"), "new"),
    );
    let shares = root.path().join("shares");
    std::fs::create_dir(&shares).unwrap();
    for i in 0..6 {
        let key = format!("k{i}");
        let ctx = SealContext {
            node_id: "node-a",
            key_id: &key,
            share_id: "share",
        };
        let sealer: &dyn Sealer = if i % 2 == 0 { &old } else { &new };
        std::fs::write(
            shares.join(&key),
            sealer.seal(&ctx, key.as_bytes()).unwrap(),
        )
        .unwrap();
    }
    // A temp file left by the interrupted write is ignored.
    std::fs::write(shares.join(".k0.tmp-0123456789abcdef"), b"partial").unwrap();
    let r = reseal_dir(&old, &new, &shares, "node-a").unwrap();
    assert_eq!((r.resealed, r.already_current, r.skipped), (3, 3, 0));
    for i in 0..6 {
        let key = format!("k{i}");
        let ctx = SealContext {
            node_id: "node-a",
            key_id: &key,
            share_id: "share",
        };
        let b = std::fs::read(shares.join(&key)).unwrap();
        assert_eq!(&new.unseal(&ctx, &b).unwrap()[..], key.as_bytes());
    }
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn sealer() -> &'static SoftwareSealer {
        static S: std::sync::OnceLock<(tempfile::TempDir, SoftwareSealer)> =
            std::sync::OnceLock::new();
        let (_, s) = S.get_or_init(|| {
            let d = tempfile::tempdir().unwrap();
            let s = open(d.path(), "prop");
            (d, s)
        });
        s
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 512,
            rng_algorithm: proptest::test_runner::RngAlgorithm::ChaCha,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x00c0_5705),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Arbitrary bytes never panic the parser or the unsealer.
        #[test]
        fn arbitrary_bytes_are_rejected(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = custos_hsm::blob::inspect(&bytes);
            prop_assert!(sealer().unseal(&CTX, &bytes).is_err());
        }

        /// Any edit (overwrite a byte range, insert or delete bytes) of a valid blob fails.
        #[test]
        fn edited_blobs_are_rejected(
            pt in proptest::collection::vec(any::<u8>(), 0..256),
            pos in any::<proptest::sample::Index>(),
            patch in proptest::collection::vec(any::<u8>(), 1..8),
            op in 0u8..3,
        ) {
            let blob = sealer().seal(&CTX, &pt).unwrap();
            let i = pos.index(blob.len());
            let mut edited = blob.clone();
            match op {
                0 => {
                    for (k, b) in patch.iter().enumerate() {
                        if let Some(x) = edited.get_mut(i + k) {
                            *x = b.wrapping_add(1).wrapping_add(*x); // differs unless b == 255
                        }
                    }
                }
                1 => { edited.splice(i..i, patch.iter().copied()); }
                _ => { edited.drain(i..(i + patch.len()).min(edited.len())); }
            }
            prop_assume!(edited != blob);
            prop_assert!(matches!(sealer().unseal(&CTX, &edited), Err(HsmError::SealedBlobInvalid(_))));
        }
    }
}
