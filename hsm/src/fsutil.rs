//! Crash-consistent file writes: temp file + fsync + rename + directory fsync.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rand_core::{OsRng, RngCore};

use crate::HsmError;

/// Writes `bytes` to `path` atomically with mode 0600 (temp file + fsync +
/// rename + directory fsync): a reader, or a restart after a crash, sees
/// either the old file or the new one, never a torn one. Use it to store
/// sealed blobs.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), HsmError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| HsmError::Config(format!("{} is not a file path", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{:016x}",
        name.to_string_lossy(),
        OsRng.next_u64()
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| HsmError::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| HsmError::io(&tmp, e))?;
        f.sync_all().map_err(|e| HsmError::io(&tmp, e))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| HsmError::io(path, e))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Creates `path` with `bytes` atomically, failing with `AlreadyExists` (as
/// [`HsmError::Io`]) if it exists: written to a temp file, fsynced, then
/// hard-linked into place (link never replaces an existing file), so two
/// concurrent creators cannot overwrite each other.
pub(crate) fn create_new_atomic(path: &Path, bytes: &[u8]) -> Result<(), HsmError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| HsmError::Config(format!("{} is not a file path", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{:016x}",
        name.to_string_lossy(),
        OsRng.next_u64()
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| HsmError::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| HsmError::io(&tmp, e))?;
        f.sync_all().map_err(|e| HsmError::io(&tmp, e))?;
        drop(f);
        std::fs::hard_link(&tmp, path).map_err(|e| HsmError::io(path, e))
    })();
    let _ = std::fs::remove_file(&tmp);
    result?;
    sync_dir(dir)
}

/// Fsyncs a directory so a rename or create in it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), HsmError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| HsmError::io(dir, e))
}

/// Whether `name` is a temporary file left by [`write_atomic`].
pub(crate) fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn create_new_atomic_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kek.json");
        create_new_atomic(&p, b"first").unwrap();
        let err = create_new_atomic(&p, b"second").unwrap_err();
        assert!(
            matches!(err, HsmError::Io { ref source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists),
            "{err}"
        );
        assert_eq!(std::fs::read(&p).unwrap(), b"first");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp() {
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
