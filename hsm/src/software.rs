//! The software backend: a key-encryption key derived from a passphrase with
//! Argon2id, sealing with XChaCha20-Poly1305.
//!
//! The KEK metadata lives in `<dir>/software-kek.json`: the Argon2id
//! parameters, a random salt, a random KEK id and a check value (an HMAC
//! under the derived key over all the other fields), so a wrong passphrase or
//! an edited metadata file is detected at [`SoftwareSealer::open`], before
//! any blob is touched. Argon2id runs once, at open; each seal and unseal is
//! then one AEAD call.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead as _, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::blob::{self, Aead};
use crate::{HsmError, Passphrase, SealContext, Sealer, fsutil};

/// File name of the software KEK metadata inside the sealer's directory.
pub const SOFTWARE_KEK_FILE: &str = "software-kek.json";

const FORMAT: &str = "custos-hsm/software-kek";
const FORMAT_VERSION: u32 = 1;
const BACKEND: &str = "software";
const SALT_LEN: usize = 16;
const KEK_ID_LEN: usize = 16;
const LABEL_SEAL_KEY: &[u8] = b"custos-hsm/software/v1/seal-key";
const LABEL_CHECK: &[u8] = b"custos-hsm/software/v1/check";

/// Argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Iterations.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl Default for KdfParams {
    /// m = 64 MiB, t = 3, p = 1 (above the OWASP and RFC 9106 second recommendation).
    fn default() -> Self {
        KdfParams {
            m_cost_kib: 64 * 1024,
            t_cost: 3,
            p_cost: 1,
        }
    }
}

/// Least Argon2id memory a configured KEK may use, KiB (19 MiB: OWASP's
/// minimum for Argon2id, with [`MIN_KDF_T_COST`]).
pub const MIN_KDF_M_COST_KIB: u32 = 19 * 1024;
/// Fewest Argon2id iterations a configured KEK may use (OWASP's minimum at 19 MiB).
pub const MIN_KDF_T_COST: u32 = 2;

impl KdfParams {
    /// Refuses parameters below OWASP's Argon2id minimum (m = 19 MiB, t = 2,
    /// p = 1), naming the field under `field` (the config table they came
    /// from, e.g. `kdf`). Config loading calls this; the library API
    /// ([`SoftwareSealer::open_with_params`]) does not, so unit tests can keep
    /// [`KdfParams::insecure_fast_for_tests`].
    pub fn check_minimum(self, field: &str) -> Result<(), HsmError> {
        let low = if self.m_cost_kib < MIN_KDF_M_COST_KIB {
            Some(("m_cost_kib", self.m_cost_kib, MIN_KDF_M_COST_KIB))
        } else if self.t_cost < MIN_KDF_T_COST {
            Some(("t_cost", self.t_cost, MIN_KDF_T_COST))
        } else if self.p_cost < 1 {
            Some(("p_cost", self.p_cost, 1))
        } else {
            None
        };
        match low {
            Some((name, value, min)) => Err(HsmError::Config(format!(
                "config field `{field}.{name}` = {value} is below the minimum {min} \
                 (OWASP's Argon2id minimum: m_cost_kib = {MIN_KDF_M_COST_KIB}, t_cost = {MIN_KDF_T_COST}, p_cost = 1)"
            ))),
            None => Ok(()),
        }
    }

    /// Cheap parameters (m = 64 KiB, t = 1, p = 1) so tests stay fast. Never use them in production.
    pub fn insecure_fast_for_tests() -> Self {
        KdfParams {
            m_cost_kib: 64,
            t_cost: 1,
            p_cost: 1,
        }
    }

    fn to_argon2(self) -> Result<argon2::Argon2<'static>, HsmError> {
        // Bound the memory an edited metadata file can make us allocate (4 GiB).
        if self.m_cost_kib > 4 * 1024 * 1024 || self.t_cost > 64 || self.p_cost > 64 {
            return Err(HsmError::Config(format!(
                "Argon2id parameters out of range: {self:?}"
            )));
        }
        let params = argon2::Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(32))
            .map_err(|e| HsmError::Config(format!("Argon2id parameters {self:?}: {e}")))?;
        Ok(argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            params,
        ))
    }

    fn describe(self) -> String {
        format!(
            "argon2id;m={};t={};p={};xchacha20poly1305",
            self.m_cost_kib, self.t_cost, self.p_cost
        )
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    format: String,
    version: u32,
    kdf: String,
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
    salt: String,
    kek_id: String,
    check: String,
}

impl Metadata {
    /// The bytes the check value authenticates (everything but the check itself).
    fn checked_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        for field in [
            self.format.as_str(),
            &self.version.to_string(),
            &self.kdf,
            &self.m_cost_kib.to_string(),
            &self.t_cost.to_string(),
            &self.p_cost.to_string(),
            &self.salt,
            &self.kek_id,
        ] {
            v.extend_from_slice(&(field.len() as u64).to_be_bytes());
            v.extend_from_slice(field.as_bytes());
        }
        v
    }

    fn params(&self) -> KdfParams {
        KdfParams {
            m_cost_kib: self.m_cost_kib,
            t_cost: self.t_cost,
            p_cost: self.p_cost,
        }
    }
}

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], parts: &[&[u8]]) -> Result<HmacSha256, HsmError> {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key)
        .map_err(|e| HsmError::Crypto(format!("HMAC key: {e}")))?;
    for p in parts {
        mac.update(p);
    }
    Ok(mac)
}

/// Seals with a passphrase-derived KEK. Holds only the derived sealing key
/// (zeroized on drop), never the passphrase.
pub struct SoftwareSealer {
    kek_id: String,
    params: String,
    seal_key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for SoftwareSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftwareSealer")
            .field("kek_id", &self.kek_id)
            .field("params", &self.params)
            .field("seal_key", &"<redacted>")
            .finish()
    }
}

impl SoftwareSealer {
    /// Opens the KEK in `dir` (default, strong Argon2id parameters when creating).
    ///
    /// If the metadata file is absent, creates a new KEK when `create` is true
    /// and fails with [`HsmError::KekMissing`] otherwise. A wrong passphrase
    /// fails here with [`HsmError::WrongPassphrase`].
    pub fn open(dir: &Path, passphrase: &Passphrase, create: bool) -> Result<Self, HsmError> {
        Self::open_with_params(dir, passphrase, create, KdfParams::default())
    }

    /// Like [`SoftwareSealer::open`], with the Argon2id parameters to use if a
    /// new KEK is created (an existing KEK keeps the parameters it was made with).
    pub fn open_with_params(
        dir: &Path,
        passphrase: &Passphrase,
        create: bool,
        params: KdfParams,
    ) -> Result<Self, HsmError> {
        if passphrase.is_empty() {
            return Err(HsmError::Config("the passphrase is empty".into()));
        }
        let path = dir.join(SOFTWARE_KEK_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => Self::load(&path, &bytes, passphrase),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !create {
                    return Err(HsmError::KekMissing {
                        what: format!("software KEK file {}", path.display()),
                    });
                }
                Self::create(dir, &path, passphrase, params)
            }
            Err(e) => Err(HsmError::io(&path, e)),
        }
    }

    fn create(
        dir: &Path,
        path: &Path,
        passphrase: &Passphrase,
        params: KdfParams,
    ) -> Result<Self, HsmError> {
        let mut salt = [0u8; SALT_LEN];
        OsRng.fill_bytes(&mut salt);
        let mut kek_id = [0u8; KEK_ID_LEN];
        OsRng.fill_bytes(&mut kek_id);
        let (sealer, bytes) = Self::derive_new(passphrase, params, &salt, &kek_id)?;
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| HsmError::io(dir, e))?;
        }
        // Never overwrite a KEK another process created meanwhile: that would
        // orphan every blob sealed under it. If one appeared, open that one.
        match fsutil::create_new_atomic(path, &bytes) {
            Ok(()) => Ok(sealer),
            Err(HsmError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::AlreadyExists =>
            {
                let existing = std::fs::read(path).map_err(|e| HsmError::io(path, e))?;
                Self::load(path, &existing, passphrase)
            }
            Err(e) => Err(e),
        }
    }

    /// Derives a new KEK and its metadata file contents (deterministic given salt and id).
    fn derive_new(
        passphrase: &Passphrase,
        params: KdfParams,
        salt: &[u8],
        kek_id: &[u8],
    ) -> Result<(Self, Vec<u8>), HsmError> {
        let mut meta = Metadata {
            format: FORMAT.into(),
            version: FORMAT_VERSION,
            kdf: "argon2id".into(),
            m_cost_kib: params.m_cost_kib,
            t_cost: params.t_cost,
            p_cost: params.p_cost,
            salt: hex::encode(salt),
            kek_id: hex::encode(kek_id),
            check: String::new(),
        };
        let master = derive_master(passphrase, params, salt)?;
        meta.check = hex::encode(
            hmac(&master[..], &[LABEL_CHECK, &meta.checked_bytes()])?
                .finalize()
                .into_bytes(),
        );
        let sealer = Self::from_master(&master, &meta)?;
        let mut bytes = serde_json::to_vec_pretty(&meta)
            .map_err(|e| HsmError::Crypto(format!("serialising KEK metadata: {e}")))?;
        bytes.push(b'\n');
        Ok((sealer, bytes))
    }

    fn load(path: &Path, bytes: &[u8], passphrase: &Passphrase) -> Result<Self, HsmError> {
        let bad = |reason: String| HsmError::KekMetadataInvalid {
            path: path.to_path_buf(),
            reason,
        };
        let meta: Metadata = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if meta.format != FORMAT || meta.version != FORMAT_VERSION || meta.kdf != "argon2id" {
            return Err(bad(format!(
                "unsupported format {:?} version {} kdf {:?}",
                meta.format, meta.version, meta.kdf
            )));
        }
        let salt = hex::decode(&meta.salt).map_err(|e| bad(format!("salt: {e}")))?;
        if salt.len() < SALT_LEN {
            return Err(bad("salt shorter than 16 bytes".into()));
        }
        let kek_id = hex::decode(&meta.kek_id).map_err(|e| bad(format!("kek_id: {e}")))?;
        if kek_id.len() != KEK_ID_LEN {
            return Err(bad("kek_id must be 16 bytes".into()));
        }
        let check = hex::decode(&meta.check).map_err(|e| bad(format!("check: {e}")))?;
        let master =
            derive_master(passphrase, meta.params(), &salt).map_err(|e| bad(e.to_string()))?;
        hmac(&master[..], &[LABEL_CHECK, &meta.checked_bytes()])?
            .verify_slice(&check)
            .map_err(|_| HsmError::WrongPassphrase {
                path: path.to_path_buf(),
            })?;
        Self::from_master(&master, &meta)
    }

    fn from_master(master: &[u8; 32], meta: &Metadata) -> Result<Self, HsmError> {
        let mut seal_key = Zeroizing::new([0u8; 32]);
        seal_key.copy_from_slice(
            &hmac(master, &[LABEL_SEAL_KEY, meta.kek_id.as_bytes()])?
                .finalize()
                .into_bytes(),
        );
        Ok(SoftwareSealer {
            kek_id: format!("software:{}", meta.kek_id),
            params: meta.params().describe(),
            seal_key,
        })
    }

    /// Path of the KEK metadata file for a sealer directory.
    pub fn metadata_path(dir: &Path) -> PathBuf {
        dir.join(SOFTWARE_KEK_FILE)
    }

    fn cipher(&self) -> Result<XChaCha20Poly1305, HsmError> {
        XChaCha20Poly1305::new_from_slice(&self.seal_key[..])
            .map_err(|e| HsmError::Crypto(format!("cipher key: {e}")))
    }

    /// Seals with a given nonce: only for known-answer tests.
    pub(crate) fn seal_with_nonce(
        &self,
        ctx: &SealContext<'_>,
        plaintext: &[u8],
        nonce: &[u8; 24],
    ) -> Result<Vec<u8>, HsmError> {
        let mut out = blob::encode_header(
            Aead::XChaCha20Poly1305,
            BACKEND,
            &self.kek_id,
            &self.params,
            ctx,
            nonce,
        )?;
        let ct = self
            .cipher()?
            .encrypt(
                &XNonce::from(*nonce),
                Payload {
                    msg: plaintext,
                    aad: &out,
                },
            )
            .map_err(|_| HsmError::Crypto("XChaCha20-Poly1305 encryption failed".into()))?;
        out.extend_from_slice(&ct);
        Ok(out)
    }
}

fn derive_master(
    passphrase: &Passphrase,
    params: KdfParams,
    salt: &[u8],
) -> Result<Zeroizing<[u8; 32]>, HsmError> {
    let mut master = Zeroizing::new([0u8; 32]);
    params
        .to_argon2()?
        .hash_password_into(passphrase.expose(), salt, &mut master[..])
        .map_err(|e| HsmError::Crypto(format!("Argon2id: {e}")))?;
    Ok(master)
}

impl Sealer for SoftwareSealer {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn kek_id(&self) -> String {
        self.kek_id.clone()
    }

    fn seal(&self, ctx: &SealContext<'_>, plaintext: &[u8]) -> Result<Vec<u8>, HsmError> {
        let mut nonce = [0u8; 24];
        OsRng.fill_bytes(&mut nonce);
        self.seal_with_nonce(ctx, plaintext, &nonce)
    }

    fn unseal(&self, ctx: &SealContext<'_>, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        let p = blob::parse_for(sealed, Aead::XChaCha20Poly1305, BACKEND, &self.kek_id, ctx)?;
        if p.params != self.params {
            return Err(HsmError::SealedBlobInvalid(format!(
                "sealed with parameters {:?}, this KEK uses {:?}",
                p.params, self.params
            )));
        }
        let nonce: [u8; 24] = p
            .nonce
            .try_into()
            .map_err(|_| HsmError::SealedBlobInvalid("bad nonce length".into()))?;
        self.cipher()?
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: p.ciphertext,
                    aad: p.header,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| {
                HsmError::SealedBlobInvalid("authentication failed (corrupt or tampered)".into())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTX: SealContext<'static> = SealContext {
        node_id: "node-a",
        key_id: "key-1",
        share_id: "share",
    };

    fn open(dir: &Path, pass: &str, create: bool) -> Result<SoftwareSealer, HsmError> {
        SoftwareSealer::open_with_params(
            dir,
            &Passphrase::from(pass),
            create,
            KdfParams::insecure_fast_for_tests(),
        )
    }

    #[test]
    fn default_params_are_strong() {
        let p = KdfParams::default();
        assert!(p.m_cost_kib >= 64 * 1024 && p.t_cost >= 3);
    }

    #[test]
    fn wrong_passphrase_is_detected_at_open() {
        let dir = tempfile::tempdir().unwrap();
        open(dir.path(), "right", true).unwrap();
        let err = open(dir.path(), "wrong", false).unwrap_err();
        assert!(matches!(err, HsmError::WrongPassphrase { .. }), "{err}");
        assert!(!err.to_string().contains("wrong".repeat(2).as_str()));
        open(dir.path(), "right", false).unwrap();
    }

    #[test]
    fn missing_kek_without_create_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = open(dir.path(), "p", false).unwrap_err();
        assert!(matches!(err, HsmError::KekMissing { .. }), "{err}");
        assert!(!SoftwareSealer::metadata_path(dir.path()).exists());
    }

    #[test]
    fn edited_metadata_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        open(dir.path(), "p", true).unwrap();
        let path = SoftwareSealer::metadata_path(dir.path());
        let text = std::fs::read_to_string(&path).unwrap();
        // Lowering the cost parameters changes the derived key and the check fails.
        let edited = text.replace("\"t_cost\": 1", "\"t_cost\": 2");
        assert_ne!(edited, text);
        std::fs::write(&path, edited).unwrap();
        assert!(matches!(
            open(dir.path(), "p", false),
            Err(HsmError::WrongPassphrase { .. })
        ));
        std::fs::write(&path, "{not json").unwrap();
        assert!(matches!(
            open(dir.path(), "p", false),
            Err(HsmError::KekMetadataInvalid { .. })
        ));
    }

    #[test]
    fn sealer_debug_is_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), "p", true).unwrap();
        let d = format!("{s:?}");
        assert!(d.contains("<redacted>"));
        assert!(!d.contains(&hex::encode(&s.seal_key[..])));
    }

    #[test]
    fn concurrent_creators_end_with_one_kek() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| open(dir.path(), "p", true).unwrap().kek_id()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(ids.iter().all(|id| id == &ids[0]), "{ids:?}");
        assert_eq!(open(dir.path(), "p", false).unwrap().kek_id(), ids[0]);
    }

    #[test]
    fn reopened_sealer_unseals() {
        let dir = tempfile::tempdir().unwrap();
        let blob = open(dir.path(), "p", true)
            .unwrap()
            .seal(&CTX, b"secret")
            .unwrap();
        let again = open(dir.path(), "p", false).unwrap();
        assert_eq!(&again.unseal(&CTX, &blob).unwrap()[..], b"secret");
    }
}

/// Known-answer test of the on-disk formats (KEK metadata and sealed blob).
///
/// The golden files were produced by this code with fixed salt, KEK id and
/// nonce; they must keep unsealing, and re-encoding must reproduce them byte
/// for byte. Regenerate only for a deliberate format change (bump the
/// version): `CUSTOS_REGEN_GOLDEN=1 cargo test -p custos-hsm golden`.
#[cfg(test)]
mod golden {
    use super::*;

    const PASSPHRASE: &str = "custos golden passphrase";
    const SALT: [u8; 16] = *b"custos-salt-0001";
    const KEK_ID: [u8; 16] = *b"custos-kek-id-01";
    const NONCE: [u8; 24] = *b"custos-golden-nonce-0001";
    const PLAINTEXT: &[u8] = b"golden share: 0123456789abcdef0123456789abcdef";
    const CTX: SealContext<'static> = SealContext {
        node_id: "node-golden",
        key_id: "key-golden",
        share_id: "share",
    };

    fn golden_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/software-v1")
    }

    fn generate() -> (Vec<u8>, Vec<u8>) {
        let (sealer, meta) = SoftwareSealer::derive_new(
            &Passphrase::from(PASSPHRASE),
            KdfParams::insecure_fast_for_tests(),
            &SALT,
            &KEK_ID,
        )
        .unwrap();
        let blob = sealer.seal_with_nonce(&CTX, PLAINTEXT, &NONCE).unwrap();
        (meta, blob)
    }

    #[test]
    fn golden_files_unseal_and_reencode_identically() {
        let dir = golden_dir();
        let (meta, blob) = generate();
        if std::env::var_os("CUSTOS_REGEN_GOLDEN").is_some() {
            std::fs::write(dir.join(SOFTWARE_KEK_FILE), &meta).unwrap();
            std::fs::write(dir.join("share.blob"), &blob).unwrap();
        }
        let golden_meta = std::fs::read(dir.join(SOFTWARE_KEK_FILE)).unwrap();
        let golden_blob = std::fs::read(dir.join("share.blob")).unwrap();

        // Old files still open and unseal.
        let sealer = SoftwareSealer::open(&dir, &Passphrase::from(PASSPHRASE), false).unwrap();
        assert_eq!(sealer.kek_id(), format!("software:{}", hex::encode(KEK_ID)));
        assert_eq!(&sealer.unseal(&CTX, &golden_blob).unwrap()[..], PLAINTEXT);

        // The encoder reproduces them byte for byte.
        assert_eq!(meta, golden_meta, "KEK metadata format changed");
        assert_eq!(blob, golden_blob, "sealed blob format changed");

        // The header layout, spelled out.
        let info = blob::inspect(&golden_blob).unwrap();
        assert_eq!(info.backend, "software");
        assert_eq!(info.params, "argon2id;m=64;t=1;p=1;xchacha20poly1305");
        assert_eq!(info.context(), CTX);
        assert_eq!(&golden_blob[..8], b"CSTSEAL\x01");
        assert_eq!(golden_blob[8], 1, "algorithm code of XChaCha20-Poly1305");
        assert_eq!(
            golden_blob.len(),
            8 + 1
                + (1 + 8)
                + (1 + 41)
                + (2 + 39)
                + (2 + 11)
                + (2 + 10)
                + (2 + 5)
                + (1 + 24)
                + PLAINTEXT.len()
                + 16
        );
    }
}
