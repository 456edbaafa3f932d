//! Re-sealing (KEK rotation): moving sealed blobs from one sealer to another
//! with the plaintext only ever in (zeroized) memory.

use std::path::Path;

use crate::{HsmError, SealContext, Sealer, blob, fsutil};

/// Unseals `blob` with `from` and seals the plaintext with `to`, bound to the same `ctx`.
pub fn reseal(
    from: &dyn Sealer,
    to: &dyn Sealer,
    ctx: &SealContext<'_>,
    blob: &[u8],
) -> Result<Vec<u8>, HsmError> {
    let plaintext = from.unseal(ctx, blob)?;
    let sealed = to.seal(ctx, &plaintext)?;
    // Prove the new blob opens before the caller replaces the old one.
    let check = to.unseal(ctx, &sealed)?;
    if check.as_slice() != plaintext.as_slice() {
        return Err(HsmError::Crypto(
            "re-sealed blob does not round-trip".into(),
        ));
    }
    Ok(sealed)
}

/// What [`reseal_dir`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResealReport {
    /// Blobs moved to the new KEK.
    pub resealed: usize,
    /// Blobs already under the new KEK (left as they were; a re-run after a crash resumes).
    pub already_current: usize,
    /// Files that are not sealed blobs (left untouched).
    pub skipped: usize,
}

/// Re-seals every sealed blob in `dir` (recursively) that belongs to `node_id`
/// from `from` to `to`, each file replaced atomically (temp + fsync + rename +
/// dir fsync). Blobs already under `to`'s KEK are left alone, so an
/// interrupted run can simply be repeated. The context of each blob is read
/// from its header and authenticated by unsealing. A blob bound to another
/// node, or one that fails to unseal, stops the run with an error (blobs
/// already re-sealed stay re-sealed and valid).
///
/// Run it while the node is stopped.
pub fn reseal_dir(
    from: &dyn Sealer,
    to: &dyn Sealer,
    dir: &Path,
    node_id: &str,
) -> Result<ResealReport, HsmError> {
    let mut report = ResealReport::default();
    let mut files = Vec::new();
    collect_files(dir, &mut files)?;
    files.sort();
    for path in files {
        let bytes = std::fs::read(&path).map_err(|e| HsmError::io(&path, e))?;
        if !bytes.starts_with(blob::MAGIC) {
            report.skipped += 1;
            continue;
        }
        let info = blob::inspect(&bytes)
            .map_err(|e| HsmError::SealedBlobInvalid(format!("{}: {e}", path.display())))?;
        if info.node_id != node_id {
            return Err(HsmError::SealedBlobInvalid(format!(
                "{} is bound to node {:?}, not {node_id:?}",
                path.display(),
                info.node_id
            )));
        }
        if info.backend == to.backend() && info.kek_id == to.kek_id() {
            report.already_current += 1;
            continue;
        }
        let sealed = reseal(from, to, &info.context(), &bytes).map_err(|e| with_path(e, &path))?;
        fsutil::write_atomic(&path, &sealed)?;
        report.resealed += 1;
    }
    Ok(report)
}

fn with_path(e: HsmError, path: &Path) -> HsmError {
    match e {
        HsmError::SealedBlobInvalid(r) => {
            HsmError::SealedBlobInvalid(format!("{}: {r}", path.display()))
        }
        other => other,
    }
}

fn collect_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<(), HsmError> {
    for entry in std::fs::read_dir(dir).map_err(|e| HsmError::io(dir, e))? {
        let entry = entry.map_err(|e| HsmError::io(dir, e))?;
        let path = entry.path();
        let ft = entry.file_type().map_err(|e| HsmError::io(&path, e))?;
        if ft.is_dir() {
            collect_files(&path, out)?;
        } else if ft.is_file() && !fsutil::is_temp_name(&entry.file_name().to_string_lossy()) {
            out.push(path);
        }
    }
    Ok(())
}
