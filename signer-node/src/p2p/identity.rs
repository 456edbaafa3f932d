//! The node's libp2p identity key on disk.
//!
//! Format: libp2p's protobuf keypair encoding (what `Keypair::to_protobuf_encoding`
//! produces), so the file is interchangeable with other libp2p tooling.
//! The file holds a private key: it is created with mode 0600, written to a
//! temporary file in the same directory, fsynced, linked into place and the
//! directory fsynced (`custos_fsutil::create_new_atomic`), so a crash never
//! leaves a torn or missing key.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use libp2p::PeerId;
use libp2p::identity::Keypair;
use zeroize::Zeroizing;

use super::{IdentityProblem, P2pError};

/// Larger than any libp2p key encoding (RSA-4096 is ~2.4 KiB); protects
/// against pointing the loader at a huge file by mistake.
const MAX_IDENTITY_FILE_BYTES: u64 = 16 * 1024;

fn err(path: &Path, problem: IdentityProblem) -> P2pError {
    P2pError::Identity {
        path: path.to_path_buf(),
        reason: problem,
    }
}

/// Loads a protobuf-encoded libp2p keypair from `path`.
///
/// Errors distinguish a missing file ([`IdentityProblem::Missing`]), a file
/// that cannot be read ([`IdentityProblem::Unreadable`]) and contents that are
/// not a keypair ([`IdentityProblem::NotAKey`]). A file readable by group or
/// others is loaded but logged as a warning.
pub fn load_identity(path: &Path) -> Result<Keypair, P2pError> {
    let mut file = File::open(path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            err(path, IdentityProblem::Missing)
        } else {
            err(path, IdentityProblem::Unreadable(e.to_string()))
        }
    })?;
    let meta = file
        .metadata()
        .map_err(|e| err(path, IdentityProblem::Unreadable(e.to_string())))?;
    if !meta.is_file() {
        return Err(err(
            path,
            IdentityProblem::Unreadable("not a regular file".into()),
        ));
    }
    if meta.len() > MAX_IDENTITY_FILE_BYTES {
        return Err(err(
            path,
            IdentityProblem::NotAKey(format!(
                "file is {} bytes, larger than any key encoding",
                meta.len()
            )),
        ));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        // Warn rather than refuse: secret mounts (e.g. Kubernetes) often use
        // 0644 inside a private directory.
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{:o}", meta.permissions().mode() & 0o777),
            "p2p identity file is readable by group or others"
        );
    }
    let mut bytes = Zeroizing::new(Vec::new());
    Read::take(&mut file, MAX_IDENTITY_FILE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| err(path, IdentityProblem::Unreadable(e.to_string())))?;
    decode_identity(path, &bytes)
}

/// Largest identity file accepted, bytes (before sealing).
pub const MAX_IDENTITY_BYTES: u64 = MAX_IDENTITY_FILE_BYTES;

/// Decodes the keypair read (or unsealed) from `path`.
pub fn decode_identity(path: &Path, bytes: &[u8]) -> Result<Keypair, P2pError> {
    if bytes.is_empty() {
        return Err(err(path, IdentityProblem::NotAKey("file is empty".into())));
    }
    Keypair::from_protobuf_encoding(bytes).map_err(|e| {
        err(
            path,
            IdentityProblem::NotAKey(format!("not a protobuf-encoded libp2p keypair: {e}")),
        )
    })
}

/// Generates a new Ed25519 identity, writes it to `path` (mode 0600,
/// temp + fsync + link + directory fsync) and returns its [`PeerId`].
///
/// Refuses to overwrite an existing file: replacing a node's identity changes
/// its PeerId and must be a deliberate act (delete the old file first).
pub fn generate_identity_file(path: &Path) -> Result<PeerId, P2pError> {
    let keypair = Keypair::generate_ed25519();
    write_identity_file(path, &keypair)?;
    Ok(keypair.public().to_peer_id())
}

/// Writes `keypair` to `path` like [`generate_identity_file`] does.
pub fn write_identity_file(path: &Path, keypair: &Keypair) -> Result<(), P2pError> {
    let write_err = |e: io::Error| err(path, IdentityProblem::Write(e.to_string()));
    if fs::symlink_metadata(path).is_ok() {
        return Err(err(path, IdentityProblem::AlreadyExists));
    }
    let encoded = Zeroizing::new(keypair.to_protobuf_encoding().map_err(|e| {
        err(
            path,
            IdentityProblem::Write(format!("cannot encode keypair: {e}")),
        )
    })?);
    // Never replaces a file: a concurrent writer that got there first wins
    // and this one reports AlreadyExists, like the check above.
    custos_fsutil::create_new_atomic(path, &encoded, custos_fsutil::PRIVATE_MODE).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            err(path, IdentityProblem::AlreadyExists)
        } else {
            write_err(e)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.key");
        let peer = generate_identity_file(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let kp = load_identity(&path).unwrap();
        assert_eq!(kp.public().to_peer_id(), peer);
        // No temp file left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn refuses_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.key");
        let peer = generate_identity_file(&path).unwrap();
        let e = generate_identity_file(&path).unwrap_err();
        assert!(matches!(
            e,
            P2pError::Identity {
                reason: IdentityProblem::AlreadyExists,
                ..
            }
        ));
        assert_eq!(load_identity(&path).unwrap().public().to_peer_id(), peer);
    }
}
