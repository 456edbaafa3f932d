//! Crash-consistent file writes for every Custos crate that persists state:
//! sealed shares and keys (`custos-hsm`, `custos-signer-node`), generated
//! development material (`custos-devkit`) and signed policy files (the CLI).
//!
//! One implementation so there is one place to get durability right: write a
//! temporary file in the target's directory (same file system, so the rename
//! is atomic) created with the final mode (a secret is never readable by
//! others, not even briefly), fsync it, rename (or hard-link) it into place,
//! then fsync the directory so the new name itself survives a crash.
//!
//! The functions return the plain [`std::io::Error`]; callers map it into
//! their own error type and name the path they were writing. This crate has
//! no dependencies so that every crate can use it.

#![deny(missing_docs)]

use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Mode of files holding secrets (sealed blobs, private keys, passphrases).
pub const PRIVATE_MODE: u32 = 0o600;
/// Mode of files anyone on the host may read (certificates, configs, signed
/// policies).
pub const PUBLIC_MODE: u32 = 0o644;

/// How often a temp name is redrawn when it already exists (only a leftover
/// of a crashed writer can collide, so a second draw practically always wins).
const TEMP_NAME_ATTEMPTS: u32 = 4;

/// Writes `bytes` to `path` atomically, replacing any existing file: a
/// reader, or a restart after a crash, sees either the old file or the new
/// one, never a torn one.
///
/// The file is created with `mode` (filtered by the process umask, which can
/// only make it stricter). On error the temporary file is removed and `path`
/// is left as it was, except when only the final directory fsync failed: the
/// new file is then in place but may not survive a crash.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let (dir, tmp, file) = create_temp(path, mode)?;
    let placed = fill(file, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)
}

/// Creates `path` with `bytes` atomically, failing with
/// [`io::ErrorKind::AlreadyExists`] if it exists: the temporary file is
/// hard-linked into place (a link never replaces an existing file), so of two
/// concurrent creators exactly one wins and neither overwrites the other.
pub fn create_new_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let (dir, tmp, file) = create_temp(path, mode)?;
    let linked = fill(file, bytes).and_then(|()| std::fs::hard_link(&tmp, path));
    // The temporary name goes in every case: on success `path` holds the data.
    let _ = std::fs::remove_file(&tmp);
    linked?;
    sync_dir(dir)
}

/// Fsyncs a directory so that a create, rename or removal in it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Whether `name` (a file name, not a path) is a temporary file left by
/// [`write_atomic`] or [`create_new_atomic`] after a crash; directory scans
/// skip such files and may delete them.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

/// The directory `path` is in (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Creates a fresh temporary file `.<name>.tmp-<16 hex digits>` next to
/// `path` with `mode`; returns the directory, the temp path and the open file.
fn create_temp(path: &Path, mode: u32) -> io::Result<(&Path, PathBuf, File)> {
    let dir = parent_dir(path);
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} does not name a file", path.display()),
        )
    })?;
    let mut attempt = 0;
    loop {
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp-{:016x}", temp_suffix()));
        let tmp = dir.join(tmp_name);
        // create_new: never follow or reuse a file someone else put there.
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
        {
            Ok(file) => return Ok((dir, tmp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                attempt += 1;
                if attempt >= TEMP_NAME_ATTEMPTS {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Writes `bytes` to the new temp file and fsyncs it, so the rename never
/// publishes a name whose data is still only in the page cache.
fn fill(mut file: File, bytes: &[u8]) -> io::Result<()> {
    file.write_all(bytes)?;
    file.sync_all()
}

/// A temp-name suffix unique among live writers: the process id and a
/// per-process counter, mixed by the standard library's randomly keyed hasher
/// so a leftover of an earlier process with the same id does not collide.
fn temp_suffix() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn write_atomic_replaces_with_mode_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.sealed");
        write_atomic(&p, b"one", PRIVATE_MODE).unwrap();
        assert_eq!(mode_of(&p), 0o600);
        write_atomic(&p, b"two", PRIVATE_MODE).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(mode_of(&p), 0o600);
        assert_eq!(names(dir.path()), ["f.sealed"]);
    }

    #[test]
    fn write_atomic_gives_the_replacement_its_own_mode() {
        // A public file rewritten as a secret must not keep the looser mode.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key.pem");
        std::fs::write(&p, b"old").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic(&p, b"secret", PRIVATE_MODE).unwrap();
        assert_eq!(mode_of(&p), 0o600);
        let q = dir.path().join("cert.pem");
        write_atomic(&q, b"public", PUBLIC_MODE).unwrap();
        // The umask may clear bits, never add them.
        assert_eq!(mode_of(&q) & !0o644, 0);
        assert_eq!(mode_of(&q) & 0o600, 0o600);
        assert_eq!(names(dir.path()), ["cert.pem", "key.pem"]);
    }

    #[test]
    fn a_failed_write_leaves_the_target_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        // Renaming a file over a non-empty directory fails.
        let p = dir.path().join("occupied");
        std::fs::create_dir(&p).unwrap();
        std::fs::write(p.join("inside"), b"x").unwrap();
        assert!(write_atomic(&p, b"data", PRIVATE_MODE).is_err());
        assert!(p.is_dir());
        assert_eq!(names(dir.path()), ["occupied"]);
    }

    #[test]
    fn a_path_without_file_name_is_refused() {
        let err = write_atomic(Path::new("/"), b"x", PRIVATE_MODE).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn create_new_atomic_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kek.json");
        create_new_atomic(&p, b"first", PRIVATE_MODE).unwrap();
        let err = create_new_atomic(&p, b"second", PRIVATE_MODE).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
        assert_eq!(std::fs::read(&p).unwrap(), b"first");
        assert_eq!(mode_of(&p), 0o600);
        assert_eq!(names(dir.path()), ["kek.json"]);
    }

    #[test]
    fn temp_names_are_recognised_and_distinct() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        let (_, a, _fa) = create_temp(&p, PRIVATE_MODE).unwrap();
        let (_, b, _fb) = create_temp(&p, PRIVATE_MODE).unwrap();
        assert_ne!(a, b);
        for t in [&a, &b] {
            let name = t.file_name().unwrap().to_string_lossy();
            assert!(is_temp_name(&name), "{name}");
        }
        assert!(!is_temp_name("x"));
        assert!(!is_temp_name(".hidden"));
    }
}
