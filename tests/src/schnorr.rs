//! Independent verifiers of the FROST schemes' signatures: Ed25519 by
//! Python's `cryptography` (OpenSSL's implementation behind pyca's API) and
//! by the `openssl pkeyutl` command, BIP340 by libsecp256k1 (the `secp256k1`
//! crate). None of them shares code with `frost-ed25519` or
//! `frost-secp256k1-tr`.

use std::path::PathBuf;
use std::process::Command;

/// The Python with `cryptography` the install step provides: its venv
/// (`scripts/install-deps.sh`, when the system Python lacks it), else
/// `python3`.
pub fn python() -> PathBuf {
    let venv = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
        .join(".cache/custos/verify-venv/bin/python3");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// Whether Python's `cryptography` accepts `signature` over `message` under
/// the RFC 8032 key `public_key`.
pub fn ed25519_python(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let script = "import sys\n\
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey\n\
        from cryptography.exceptions import InvalidSignature\n\
        pk, msg, sig = (bytes.fromhex(a) for a in sys.argv[1:4])\n\
        try:\n\
        \x20   Ed25519PublicKey.from_public_bytes(pk).verify(sig, msg)\n\
        \x20   print('valid')\n\
        except InvalidSignature:\n\
        \x20   print('invalid')\n";
    let out = Command::new(python())
        .args([
            "-c",
            script,
            &hex::encode(public_key),
            &hex::encode(message),
            &hex::encode(signature),
        ])
        .output()
        .unwrap_or_else(|e| panic!("python3 with cryptography: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python verifier failed: {}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.trim() == "valid"
}

/// Whether `openssl pkeyutl -verify -rawin` accepts `signature` over
/// `message` under the RFC 8032 key `public_key`.
pub fn ed25519_openssl(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    // SubjectPublicKeyInfo of an Ed25519 key (RFC 8410): a fixed prefix and the key.
    let mut spki = hex::decode("302a300506032b6570032100").unwrap_or_default();
    spki.extend_from_slice(public_key);
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(&spki)
    );
    let (key, msg, sig) = (
        dir.path().join("key.pem"),
        dir.path().join("msg.bin"),
        dir.path().join("sig.bin"),
    );
    for (path, bytes) in [(&key, pem.as_bytes()), (&msg, message), (&sig, signature)] {
        std::fs::write(path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    let out = Command::new("openssl")
        .args(["pkeyutl", "-verify", "-pubin", "-rawin", "-inkey"])
        .arg(&key)
        .arg("-in")
        .arg(&msg)
        .arg("-sigfile")
        .arg(&sig)
        .output()
        .unwrap_or_else(|e| panic!("openssl: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    out.status.success() && stdout.contains("Signature Verified Successfully")
}

/// Whether libsecp256k1 accepts the BIP340 `signature` over `message` under
/// the x-only key `public_key`.
pub fn bip340_libsecp256k1(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let secp = secp256k1::Secp256k1::verification_only();
    let (Ok(pk), Ok(sig)) = (
        <[u8; 32]>::try_from(public_key),
        <[u8; 64]>::try_from(signature),
    ) else {
        return false;
    };
    let Ok(pk) = secp256k1::XOnlyPublicKey::from_byte_array(pk) else {
        return false;
    };
    let sig = secp256k1::schnorr::Signature::from_byte_array(sig);
    secp.verify_schnorr(&sig, message, &pk).is_ok()
}
