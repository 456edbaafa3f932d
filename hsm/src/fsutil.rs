//! Sealed blobs and key metadata on disk, through the workspace's one
//! crash-consistent write (`custos-fsutil`), always private (mode 0600), with
//! failures as [`HsmError::Io`] naming the path.

use std::path::Path;

use custos_fsutil::PRIVATE_MODE;
pub(crate) use custos_fsutil::is_temp_name;

use crate::HsmError;

/// Writes `bytes` to `path` atomically with mode 0600, replacing any
/// existing file: after a crash `path` holds the old or the new blob, never a
/// torn one.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), HsmError> {
    custos_fsutil::write_atomic(path, bytes, PRIVATE_MODE).map_err(|e| HsmError::io(path, e))
}

/// Creates `path` with `bytes` atomically (mode 0600), failing with an
/// [`HsmError::Io`] of kind `AlreadyExists` if it exists, so two concurrent
/// creators of a KEK cannot overwrite each other.
pub(crate) fn create_new_atomic(path: &Path, bytes: &[u8]) -> Result<(), HsmError> {
    custos_fsutil::create_new_atomic(path, bytes, PRIVATE_MODE).map_err(|e| HsmError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn create_new_atomic_never_replaces_and_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kek.json");
        create_new_atomic(&p, b"first").unwrap();
        let err = create_new_atomic(&p, b"second").unwrap_err();
        assert!(
            matches!(err, HsmError::Io { ref path, ref source } if path == &p && source.kind() == std::io::ErrorKind::AlreadyExists),
            "{err}"
        );
        assert_eq!(std::fs::read(&p).unwrap(), b"first");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn write_atomic_replaces_privately_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.sealed");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
