//! A node's own private key files (its libp2p identity, its TLS key) sealed
//! at rest with the node's sealer.
//!
//! Operators provision such a key as a plain file; at the next start the node
//! reads it and replaces it, atomically, by a sealed blob bound to the node
//! and the key's purpose (so it cannot be swapped with another node's or
//! another purpose's). From then on a copy of the data directory or of the
//! file alone reveals nothing without the sealer (passphrase or HSM). A
//! sealed file is recognised by the blob's magic; a new plain key dropped in
//! its place (a rotated TLS key) is sealed again at the next start.
//!
//! Replacing the file does not scrub the old blocks from the disk: provision
//! keys on an encrypted volume or tmpfs if that matters.

use std::io::Read;
use std::path::Path;

use zeroize::Zeroizing;

use crate::{HsmError, SealContext, Sealer, blob};

/// The key id under which a node's own key files are sealed.
pub const NODE_KEY_ID: &str = "node-key";

/// How a key file was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFileState {
    /// Already sealed.
    Sealed,
    /// Plain on disk; sealed in place now.
    SealedNow,
    /// Plain on disk and left so (sealing not asked for).
    Plain,
}

/// Reads the private key file `path` for `purpose` (e.g. `p2p-identity`,
/// `tls-key`) of node `node_id`: unseals it if sealed, else returns it and,
/// when `seal_plain`, first replaces it by its sealed form. Files above
/// `max_len` bytes are refused.
pub fn open_key_file(
    sealer: &dyn Sealer,
    node_id: &str,
    purpose: &str,
    path: &Path,
    max_len: u64,
    seal_plain: bool,
) -> Result<(Zeroizing<Vec<u8>>, KeyFileState), HsmError> {
    let ctx = SealContext {
        node_id,
        key_id: NODE_KEY_ID,
        share_id: purpose,
    };
    let file = std::fs::File::open(path).map_err(|e| HsmError::io(path, e))?;
    let mut bytes = Zeroizing::new(Vec::new());
    // Sealing adds a header and a tag: allow for them.
    file.take(max_len + 4096)
        .read_to_end(&mut bytes)
        .map_err(|e| HsmError::io(path, e))?;
    if bytes.starts_with(blob::MAGIC) {
        let plain = sealer.unseal(&ctx, &bytes).map_err(|e| {
            HsmError::SealedBlobInvalid(format!("{} ({purpose} of {node_id}): {e}", path.display()))
        })?;
        return Ok((plain, KeyFileState::Sealed));
    }
    if bytes.len() as u64 > max_len {
        return Err(HsmError::Config(format!(
            "{}: {} bytes, larger than any {purpose} key",
            path.display(),
            bytes.len()
        )));
    }
    if !seal_plain {
        return Ok((bytes, KeyFileState::Plain));
    }
    let sealed = sealer.seal(&ctx, &bytes)?;
    custos_fsutil::write_atomic(path, &sealed, custos_fsutil::PRIVATE_MODE)
        .map_err(|e| HsmError::io(path, e))?;
    Ok((bytes, KeyFileState::SealedNow))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KdfParams, Passphrase, SoftwareSealer};

    fn sealer(dir: &Path) -> SoftwareSealer {
        SoftwareSealer::open_with_params(
            dir,
            &Passphrase::from("pw"),
            true,
            KdfParams::insecure_fast_for_tests(),
        )
        .unwrap()
    }

    #[test]
    fn a_plain_key_is_sealed_in_place_and_bound_to_its_purpose() {
        let dir = tempfile::tempdir().unwrap();
        let s = sealer(dir.path());
        let path = dir.path().join("tls.key");
        std::fs::write(&path, b"-----BEGIN PRIVATE KEY-----\nabc\n").unwrap();
        let (k, state) = open_key_file(&s, "n1", "tls-key", &path, 1024, true).unwrap();
        assert_eq!(
            (k.as_slice(), state),
            (
                &b"-----BEGIN PRIVATE KEY-----\nabc\n"[..],
                KeyFileState::SealedNow
            )
        );
        let on_disk = std::fs::read(&path).unwrap();
        assert!(on_disk.starts_with(blob::MAGIC));
        assert!(!on_disk.windows(3).any(|w| w == b"abc"));
        let (k2, state) = open_key_file(&s, "n1", "tls-key", &path, 1024, true).unwrap();
        assert_eq!((k2.as_slice(), state), (k.as_slice(), KeyFileState::Sealed));
        // Another purpose or node cannot open it.
        let e = open_key_file(&s, "n1", "p2p-identity", &path, 1024, true).unwrap_err();
        assert!(e.to_string().contains("p2p-identity of n1"), "{e}");
        assert!(open_key_file(&s, "n2", "tls-key", &path, 1024, true).is_err());
        // Another KEK cannot either.
        let other = tempfile::tempdir().unwrap();
        assert!(open_key_file(&sealer(other.path()), "n1", "tls-key", &path, 1024, true).is_err());
    }

    #[test]
    fn plain_stays_plain_unless_asked_and_size_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let s = sealer(dir.path());
        let path = dir.path().join("id.key");
        std::fs::write(&path, [7u8; 64]).unwrap();
        let (_, state) = open_key_file(&s, "n1", "p2p-identity", &path, 1024, false).unwrap();
        assert_eq!(state, KeyFileState::Plain);
        assert_eq!(std::fs::read(&path).unwrap(), [7u8; 64]);
        assert!(open_key_file(&s, "n1", "p2p-identity", &path, 16, true).is_err());
        let missing = open_key_file(&s, "n1", "x", &dir.path().join("none"), 16, true);
        assert!(missing.unwrap_err().to_string().contains("none"));
    }
}
