//! Helpers shared by the integration tests: backend-agnostic sealing checks
//! and a SoftHSM2 fixture (own token directory and `SOFTHSM2_CONF` per test).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use custos_hsm::{HsmError, SealContext, Sealer};

pub const CTX: SealContext<'static> = SealContext {
    node_id: "node-a",
    key_id: "key-K",
    share_id: "share",
};

/// A 4 KiB share-sized plaintext with a recognisable pattern.
pub fn share_plaintext() -> Vec<u8> {
    (0..4096u32)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 3)) as u8)
        .collect()
}

/// Round trips of several sizes, fresh nonces, and no plaintext in the blob.
pub fn assert_round_trips(s: &dyn Sealer) {
    for len in [0usize, 1, 31, 4096, 65_536] {
        let pt: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        let blob = s.seal(&CTX, &pt).unwrap();
        assert_eq!(&s.unseal(&CTX, &blob).unwrap()[..], &pt[..], "len {len}");
        let again = s.seal(&CTX, &pt).unwrap();
        assert_ne!(
            blob, again,
            "two seals of the same plaintext must differ (fresh nonce)"
        );
        if len >= 31 {
            assert!(
                !blob.windows(31).any(|w| w == &pt[..31]),
                "plaintext visible in the blob"
            );
        }
        let info = custos_hsm::blob::inspect(&blob).unwrap();
        assert_eq!(info.backend, s.backend());
        assert_eq!(info.kek_id, s.kek_id());
        assert_eq!(info.context(), CTX);
    }
}

fn assert_invalid(r: Result<zeroize::Zeroizing<Vec<u8>>, HsmError>, what: &str) {
    match r {
        Err(HsmError::SealedBlobInvalid(_)) => {}
        Err(e) => panic!("{what}: expected SealedBlobInvalid, got {e:?}"),
        Ok(_) => panic!("{what}: unsealed although it must not"),
    }
}

/// A blob sealed for node A / key K / share S fails as node B, key K2, share S2,
/// also when the header is rewritten to claim the other context (so the
/// binding is cryptographic, not just a header comparison).
pub fn assert_context_binding(s: &dyn Sealer) {
    let pt = share_plaintext();
    let blob = s.seal(&CTX, &pt).unwrap();
    let others = [
        SealContext {
            node_id: "node-b",
            ..CTX
        },
        SealContext {
            key_id: "key-K2",
            ..CTX
        },
        SealContext {
            share_id: "aux",
            ..CTX
        },
    ];
    for other in &others {
        assert_invalid(s.unseal(other, &blob), &format!("unseal as {other:?}"));
        // Swap attack: rewrite the clear-text context in the header to the
        // other node/key and try to pass it off as that node's blob.
        let forged = rewrite_context(&blob, other);
        assert_invalid(
            s.unseal(other, &forged),
            &format!("forged header {other:?}"),
        );
    }
    assert_eq!(&s.unseal(&CTX, &blob).unwrap()[..], &pt[..]);
}

/// Rebuilds a blob's header with another context (same lengths not required).
pub fn rewrite_context(blob: &[u8], ctx: &SealContext<'_>) -> Vec<u8> {
    let mut pos = 9;
    let mut out = blob[..9].to_vec();
    for _ in 0..2 {
        let n = blob[pos] as usize;
        out.extend_from_slice(&blob[pos..pos + 1 + n]);
        pos += 1 + n;
    }
    let mut field = |out: &mut Vec<u8>, replace: Option<&str>| {
        let n = u16::from_be_bytes([blob[pos], blob[pos + 1]]) as usize;
        match replace {
            None => out.extend_from_slice(&blob[pos..pos + 2 + n]),
            Some(v) => {
                out.extend_from_slice(&(v.len() as u16).to_be_bytes());
                out.extend_from_slice(v.as_bytes());
            }
        }
        pos += 2 + n;
    };
    field(&mut out, None); // params
    field(&mut out, Some(ctx.node_id));
    field(&mut out, Some(ctx.key_id));
    field(&mut out, Some(ctx.share_id));
    out.extend_from_slice(&blob[pos..]);
    out
}

/// Every single-bit flip anywhere in the blob, and every truncation and an
/// extension, fails with `SealedBlobInvalid` (no panic, no other error).
pub fn assert_every_bit_flip_fails(s: &dyn Sealer, plaintext: &[u8]) {
    let blob = s.seal(&CTX, plaintext).unwrap();
    for i in 0..blob.len() {
        for bit in 0..8 {
            let mut b = blob.clone();
            b[i] ^= 1 << bit;
            assert_invalid(s.unseal(&CTX, &b), &format!("bit {bit} of byte {i}"));
        }
    }
    for n in [0, 1, 8, blob.len() / 2, blob.len() - 17, blob.len() - 1] {
        assert_invalid(s.unseal(&CTX, &blob[..n]), &format!("truncated to {n}"));
    }
    let mut longer = blob.clone();
    longer.push(0);
    assert_invalid(s.unseal(&CTX, &longer), "extended by one byte");
    assert_eq!(&s.unseal(&CTX, &blob).unwrap()[..], plaintext);
}

/// A blob from sealer `a` does not unseal under sealer `b` (another KEK),
/// even with the header rewritten to name `b`'s KEK.
pub fn assert_kek_binding(a: &dyn Sealer, b: &dyn Sealer) {
    assert_ne!(a.kek_id(), b.kek_id());
    let blob = a.seal(&CTX, b"secret share").unwrap();
    assert_invalid(b.unseal(&CTX, &blob), "other KEK");
    let forged = rewrite_kek_id(&blob, &b.kek_id());
    assert_invalid(b.unseal(&CTX, &forged), "other KEK, forged header");
}

pub fn rewrite_kek_id(blob: &[u8], kek_id: &str) -> Vec<u8> {
    let backend_len = blob[9] as usize;
    let kek_pos = 10 + backend_len;
    let old_len = blob[kek_pos] as usize;
    let mut out = blob[..kek_pos].to_vec();
    out.push(kek_id.len() as u8);
    out.extend_from_slice(kek_id.as_bytes());
    out.extend_from_slice(&blob[kek_pos + 1 + old_len..]);
    out
}

// ---------------------------------------------------------------- SoftHSM2

pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub const SO_PIN: &str = "so-pin-1234";
/// Set in child processes: the test directory (the conf is `<dir>/softhsm2.conf`).
pub const CHILD_ENV: &str = "CUSTOS_HSM_TEST_DIR";

/// A SoftHSM2 installation private to one test: its own token directory and conf.
pub struct SoftHsm {
    pub dir: tempfile::TempDir,
}

impl SoftHsm {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        custos_hsm::testing::SoftHsm2::create(dir.path()).unwrap();
        SoftHsm { dir }
    }

    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("softhsm2.conf")
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Initialises a new token with `softhsm2-util` (the slot id it gets is random).
    pub fn init_token(&self, label: &str, pin: &str) {
        custos_hsm::testing::SoftHsm2::create(self.dir.path())
            .unwrap()
            .init_token(label, pin, SO_PIN)
            .unwrap();
    }

    /// Runs the `#[ignore]`d test `name` of this test binary in a child process
    /// whose `SOFTHSM2_CONF` points at this installation (SoftHSM2 reads it at
    /// `C_Initialize`, once per process; `std::env::set_var` is `unsafe`).
    pub fn run_child(&self, name: &str, extra_env: &[(&str, &str)]) -> String {
        let exe = std::env::current_exe().unwrap();
        let mut cmd = Command::new(exe);
        cmd.args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SOFTHSM2_CONF", self.conf())
        .env(CHILD_ENV, self.path());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("--- child {name}:\n{stdout}");
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "child {name} failed:\n{stdout}\n{stderr}"
        );
        stdout
    }
}

/// In a child process: the test directory. `None` when run directly (the
/// child tests are `#[ignore]`d; with `--include-ignored` they do nothing).
pub fn child_dir() -> Option<PathBuf> {
    std::env::var_os(CHILD_ENV).map(PathBuf::from)
}
