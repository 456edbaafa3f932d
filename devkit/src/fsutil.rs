//! Small file helpers: atomic writes, private modes.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::DevkitError;

/// Mode of files holding secrets (private keys, passphrases, tokens).
pub(crate) const SECRET_MODE: u32 = custos_fsutil::PRIVATE_MODE;
/// Mode of public files (certificates, configs).
pub(crate) const PUBLIC_MODE: u32 = custos_fsutil::PUBLIC_MODE;

/// Creates `dir` (and parents) if missing.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), DevkitError> {
    fs::create_dir_all(dir).map_err(DevkitError::io("cannot create directory", dir))
}

/// Creates `dir` restricted to its owner if missing (an existing directory,
/// e.g. `--dir .`, keeps its mode).
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<(), DevkitError> {
    if dir.is_dir() {
        return Ok(());
    }
    ensure_dir(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(DevkitError::io("cannot set permissions of", dir))
}

/// Writes `contents` to `path` with `mode` through the workspace's one
/// crash-consistent write (`custos_fsutil::write_atomic`: temporary file in
/// the same directory created with `mode`, so a secret is never readable by
/// others, fsync, rename, directory fsync).
pub(crate) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), DevkitError> {
    custos_fsutil::write_atomic(path, contents, mode).map_err(DevkitError::io("cannot write", path))
}

/// Reads a whole file.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, DevkitError> {
    fs::read(path).map_err(DevkitError::io("cannot read", path))
}

/// Reads a whole UTF-8 file.
pub(crate) fn read_string(path: &Path) -> Result<String, DevkitError> {
    fs::read_to_string(path).map_err(DevkitError::io("cannot read", path))
}

/// Makes sure an existing secret file is private (an older or hand-made file
/// may have a looser mode).
pub(crate) fn restrict(path: &Path) -> Result<(), DevkitError> {
    let mode = fs::metadata(path)
        .map_err(DevkitError::io("cannot stat", path))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(SECRET_MODE))
            .map_err(DevkitError::io("cannot set permissions of", path))?;
    }
    Ok(())
}

/// The last `max_lines` lines of a (log) file, at most 8 KiB; empty if unreadable.
pub(crate) fn tail(path: &Path, max_lines: usize) -> String {
    let Ok(bytes) = fs::read(path) else {
        return String::new();
    };
    let start = bytes.len().saturating_sub(8192);
    let text = String::from_utf8_lossy(&bytes[start..]);
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(max_lines);
    lines[from..].join("\n")
}
