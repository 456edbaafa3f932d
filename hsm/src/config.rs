//! Backend selection for the signer node and the coordinator.
//!
//! ```toml
//! [sealer]
//! backend = "software"
//! passphrase_file = "/etc/custos/passphrase"   # or passphrase_env = "CUSTOS_PASSPHRASE"
//! create_kek = true                            # first start only (default false)
//! # or, instead of passphrase_file/passphrase_env, start sealed and wait for
//! # operators (`custos unseal`): the passphrase or k of n shares of it
//! unseal = "ceremony"
//! kdf = { m_cost_kib = 65536, t_cost = 3, p_cost = 1 }   # at least 19456 / 2 / 1
//!
//! # or
//! [sealer]
//! backend = "pkcs11"
//! module = "/usr/lib/softhsm/libsofthsm2.so"
//! token_label = "custos-node-1"
//! pin_file = "/etc/custos/hsm-pin"             # or pin_env = "CUSTOS_HSM_PIN"
//! kek_label = "custos-kek"
//! create_kek = false
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use custos_audit::LogSigner;
use serde::{Deserialize, Serialize};

use crate::{
    HsmError, KdfParams, LogKeyAlgorithm, Pkcs11Counter, Pkcs11LogSigner, Pkcs11Sealer,
    RollbackCounter, SealedFileCounter, SealedLogSigner, Sealer, SoftwareSealer,
};

/// Which backend seals a node's shares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SealerConfig {
    /// Passphrase-derived KEK (Argon2id + XChaCha20-Poly1305); the embedded default.
    Software(SoftwareConfig),
    /// KEK inside a PKCS#11 token (AES-256-GCM computed by the token).
    Pkcs11(Pkcs11Config),
}

/// Where a passphrase comes from at start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnsealMode {
    /// From `passphrase_file` or `passphrase_env`, unattended (dev clusters,
    /// hosts whose secret store provides the file).
    #[default]
    Auto,
    /// From operators at each start: the node waits sealed until they give
    /// it the passphrase, or k of n Shamir shares of it, through
    /// `custos unseal` on its local socket. No passphrase is stored.
    Ceremony,
}

impl UnsealMode {
    fn is_auto(&self) -> bool {
        *self == UnsealMode::Auto
    }
}

/// Checks that exactly one passphrase source fits `mode`.
fn check_source(mode: UnsealMode, file: Option<&Path>, env: Option<&str>) -> Result<(), HsmError> {
    match (mode, file.is_some() || env.is_some()) {
        (UnsealMode::Ceremony, true) => Err(HsmError::Config(
            "unseal = \"ceremony\" takes the passphrase from operators: remove passphrase_file and passphrase_env".into(),
        )),
        (UnsealMode::Auto, false) => Err(HsmError::Config(
            "exactly one of passphrase_file and passphrase_env must be set (or unseal = \"ceremony\")".into(),
        )),
        _ => Ok(()),
    }
}

/// The passphrase: the one the ceremony gave, or the configured source's.
fn passphrase(
    mode: UnsealMode,
    file: Option<&Path>,
    env: Option<&str>,
    given: Option<&crate::Passphrase>,
) -> Result<crate::Passphrase, HsmError> {
    check_source(mode, file, env)?;
    match (mode, given) {
        (UnsealMode::Ceremony, Some(p)) => Ok(p.clone()),
        (UnsealMode::Ceremony, None) => Err(HsmError::Config(
            "unseal = \"ceremony\": no passphrase was given (the node must wait for `custos unseal`)".into(),
        )),
        (UnsealMode::Auto, _) => crate::Secret::from_file_or_env("passphrase", file, env),
    }
}

/// Settings of the software backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoftwareConfig {
    /// File holding the passphrase (one trailing newline is ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase_file: Option<PathBuf>,
    /// Environment variable holding the passphrase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase_env: Option<String>,
    /// `auto` (default: from the file or variable) or `ceremony` (from
    /// operators at each start, see [`UnsealMode`]).
    #[serde(default, skip_serializing_if = "UnsealMode::is_auto")]
    pub unseal: UnsealMode,
    /// Create the KEK if its metadata file is absent (default false: a
    /// missing KEK file is an error naming it, so a deleted file is never
    /// silently replaced by a new KEK that cannot open the sealed shares).
    /// Set it for the first start only.
    #[serde(default)]
    pub create_kek: bool,
    /// Argon2id parameters for a newly created KEK (default m=64 MiB, t=3,
    /// p=1; below m=19 MiB, t=2, p=1 is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kdf: Option<KdfParams>,
}

/// Settings of the PKCS#11 backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    /// Path of the PKCS#11 module (`.so`).
    pub module: PathBuf,
    /// Label of the token (the slot is looked up by label; slot ids are not stable).
    pub token_label: String,
    /// File holding the user PIN (one trailing newline is ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_file: Option<PathBuf>,
    /// Environment variable holding the user PIN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_env: Option<String>,
    /// Label of the AES-256 key-encryption key on the token.
    pub kek_label: String,
    /// Generate the KEK in the token if no key has `kek_label` (default false: fail closed).
    #[serde(default)]
    pub create_kek: bool,
}

/// Which backend holds the transparency-log signing key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case")]
#[non_exhaustive]
pub enum LogSignerConfig {
    /// An Ed25519 key sealed at rest in `key_file` by a software KEK
    /// (passphrase-derived; its metadata lives beside `key_file`).
    Software {
        /// Where the sealed key is stored.
        key_file: PathBuf,
        /// File holding the passphrase.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        passphrase_file: Option<PathBuf>,
        /// Environment variable holding the passphrase.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        passphrase_env: Option<String>,
        /// `auto` (default) or `ceremony` (see [`UnsealMode`]).
        #[serde(default, skip_serializing_if = "UnsealMode::is_auto")]
        unseal: UnsealMode,
        /// Generate the key (and the KEK) if absent (default false: a missing
        /// key or KEK file is an error naming it). Set it for the first start.
        #[serde(default)]
        create_key: bool,
        /// Argon2id parameters for a newly created KEK (at least m=19 MiB, t=2, p=1).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kdf: Option<KdfParams>,
    },
    /// A key pair inside a PKCS#11 token.
    Pkcs11 {
        /// Path of the PKCS#11 module.
        module: PathBuf,
        /// Label of the token.
        token_label: String,
        /// File holding the user PIN.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pin_file: Option<PathBuf>,
        /// Environment variable holding the user PIN.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pin_env: Option<String>,
        /// Label of the signing key pair.
        key_label: String,
        /// Algorithm: `auto` (Ed25519 if the token has it, else P-256), `ed25519`, `ecdsa_p256`.
        #[serde(default)]
        algorithm: LogKeyAlgorithm,
        /// Generate the key pair if absent (default false).
        #[serde(default)]
        create_key: bool,
    },
}

impl Pkcs11Config {
    pub(crate) fn pin(&self) -> Result<crate::Pin, HsmError> {
        crate::Secret::from_file_or_env("pin", self.pin_file.as_deref(), self.pin_env.as_deref())
    }
}

/// Opens the configured sealer; the signer node calls this at start and
/// refuses to start on any error. The software backend keeps its KEK
/// metadata in `data_dir`.
pub fn open_sealer(cfg: &SealerConfig, data_dir: &Path) -> Result<Box<dyn Sealer>, HsmError> {
    open_sealer_with(cfg, data_dir, None)
}

impl SealerConfig {
    /// How the sealer's secret is obtained at start (PKCS#11: its PIN source).
    pub fn unseal_mode(&self) -> UnsealMode {
        match self {
            SealerConfig::Software(c) => c.unseal,
            SealerConfig::Pkcs11(_) => UnsealMode::Auto,
        }
    }

    /// Checks the settings that need no file or token (passphrase sources,
    /// Argon2 minimum), for config loading.
    pub fn check(&self) -> Result<(), HsmError> {
        match self {
            SealerConfig::Software(c) => {
                c.kdf.unwrap_or_default().check_minimum("kdf")?;
                check_source(
                    c.unseal,
                    c.passphrase_file.as_deref(),
                    c.passphrase_env.as_deref(),
                )
            }
            SealerConfig::Pkcs11(_) => Ok(()),
        }
    }
}

/// [`open_sealer`] with the passphrase an unseal ceremony gave (`unseal =
/// "ceremony"`; ignored otherwise).
pub fn open_sealer_with(
    cfg: &SealerConfig,
    data_dir: &Path,
    given: Option<&crate::Passphrase>,
) -> Result<Box<dyn Sealer>, HsmError> {
    match cfg {
        SealerConfig::Software(c) => {
            let kdf = c.kdf.unwrap_or_default();
            kdf.check_minimum("kdf")?;
            let pass = passphrase(
                c.unseal,
                c.passphrase_file.as_deref(),
                c.passphrase_env.as_deref(),
                given,
            )?;
            Ok(Box::new(SoftwareSealer::open_with_params(
                data_dir,
                &pass,
                c.create_kek,
                kdf,
            )?))
        }
        SealerConfig::Pkcs11(c) => Ok(Box::new(Pkcs11Sealer::open(c)?)),
    }
}

/// File name of the software backend's rollback counter in the data directory.
pub const ROLLBACK_COUNTER_FILE: &str = "rollback-counter.sealed";

/// Opens node `node_id`'s rollback counter for its sealer configuration: a
/// data object labelled `custos-rollback-<node_id>` on the PKCS#11 token,
/// or `data_dir/rollback-counter.sealed` sealed by `sealer` (software).
pub fn open_rollback_counter(
    cfg: &SealerConfig,
    sealer: Arc<dyn Sealer>,
    data_dir: &Path,
    node_id: &str,
) -> Result<Box<dyn RollbackCounter>, HsmError> {
    match cfg {
        SealerConfig::Software(_) => Ok(Box::new(SealedFileCounter::new(
            &data_dir.join(ROLLBACK_COUNTER_FILE),
            sealer,
            node_id,
        ))),
        SealerConfig::Pkcs11(c) => Ok(Box::new(Pkcs11Counter::open(
            &c.module,
            &c.token_label,
            &c.pin()?,
            &format!("custos-rollback-{node_id}"),
        )?)),
    }
}

/// Opens the configured log signer (fail closed on any error).
pub fn open_log_signer(cfg: &LogSignerConfig) -> Result<Box<dyn LogSigner>, HsmError> {
    open_log_signer_with(cfg, None)
}

impl LogSignerConfig {
    /// How the key's secret is obtained at start (PKCS#11: its PIN source).
    pub fn unseal_mode(&self) -> UnsealMode {
        match self {
            LogSignerConfig::Software { unseal, .. } => *unseal,
            LogSignerConfig::Pkcs11 { .. } => UnsealMode::Auto,
        }
    }
}

/// [`open_log_signer`] with the passphrase an unseal ceremony gave.
pub fn open_log_signer_with(
    cfg: &LogSignerConfig,
    given: Option<&crate::Passphrase>,
) -> Result<Box<dyn LogSigner>, HsmError> {
    open_log_key(cfg, given).map(|k| k.signer)
}

/// An opened log-signing key and, for the software backend, the sealer
/// protecting it, which the coordinator also seals its TLS keys with.
pub struct OpenedLogKey {
    /// The log signer.
    pub signer: Box<dyn LogSigner>,
    /// The software KEK that seals it (none for a token key).
    pub sealer: Option<Box<dyn Sealer>>,
}

impl std::fmt::Debug for OpenedLogKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedLogKey")
            .field("sealer", &self.sealer.as_ref().map(|s| s.backend()))
            .finish_non_exhaustive()
    }
}

/// Opens the log key (with the passphrase an unseal ceremony gave, if any)
/// and keeps its sealer.
pub fn open_log_key(
    cfg: &LogSignerConfig,
    given: Option<&crate::Passphrase>,
) -> Result<OpenedLogKey, HsmError> {
    match cfg {
        LogSignerConfig::Software {
            key_file,
            passphrase_file,
            passphrase_env,
            unseal,
            create_key,
            kdf,
        } => {
            let kdf = kdf.unwrap_or_default();
            kdf.check_minimum("kdf")?;
            let pass = passphrase(
                *unseal,
                passphrase_file.as_deref(),
                passphrase_env.as_deref(),
                given,
            )?;
            let dir = match key_file.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            let sealer = SoftwareSealer::open_with_params(dir, &pass, *create_key, kdf)?;
            let signer = SealedLogSigner::open(&sealer, key_file, *create_key)?;
            Ok(OpenedLogKey {
                signer: Box::new(signer),
                sealer: Some(Box::new(sealer)),
            })
        }
        LogSignerConfig::Pkcs11 {
            module,
            token_label,
            pin_file,
            pin_env,
            key_label,
            algorithm,
            create_key,
        } => {
            let pin =
                crate::Secret::from_file_or_env("pin", pin_file.as_deref(), pin_env.as_deref())?;
            let signer = Pkcs11LogSigner::open(
                module,
                token_label,
                &pin,
                key_label,
                *algorithm,
                *create_key,
            )?;
            Ok(OpenedLogKey {
                signer: Box::new(signer),
                sealer: None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_backends_from_toml() {
        let sw: SealerConfig = toml::from_str(
            r#"
            backend = "software"
            passphrase_file = "/etc/custos/pass"
            "#,
        )
        .unwrap();
        assert_eq!(
            sw,
            SealerConfig::Software(SoftwareConfig {
                passphrase_file: Some("/etc/custos/pass".into()),
                passphrase_env: None,
                unseal: UnsealMode::Auto,
                create_kek: false,
                kdf: None,
            })
        );
        let hsm: SealerConfig = toml::from_str(
            r#"
            backend = "pkcs11"
            module = "/usr/lib/softhsm/libsofthsm2.so"
            token_label = "node-1"
            pin_env = "CUSTOS_HSM_PIN"
            kek_label = "custos-kek"
            "#,
        )
        .unwrap();
        let SealerConfig::Pkcs11(c) = &hsm else {
            panic!("{hsm:?}")
        };
        assert!(!c.create_kek, "creation must be opt-in");
        assert_eq!(c.pin_env.as_deref(), Some("CUSTOS_HSM_PIN"));
        let back: SealerConfig = toml::from_str(&toml::to_string(&hsm).unwrap()).unwrap();
        assert_eq!(back, hsm);
    }

    #[test]
    fn kdf_below_the_owasp_minimum_is_refused_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let pass = dir.path().join("pass");
        std::fs::write(&pass, "pw\n").unwrap();
        for (kdf, field) in [
            (
                KdfParams::insecure_fast_for_tests(),
                "`kdf.m_cost_kib` = 64",
            ),
            (
                KdfParams {
                    m_cost_kib: 19456,
                    t_cost: 1,
                    p_cost: 1,
                },
                "`kdf.t_cost` = 1",
            ),
            (
                KdfParams {
                    m_cost_kib: 19455,
                    t_cost: 9,
                    p_cost: 1,
                },
                "`kdf.m_cost_kib` = 19455",
            ),
        ] {
            let cfg = SealerConfig::Software(SoftwareConfig {
                passphrase_file: Some(pass.clone()),
                passphrase_env: None,
                unseal: UnsealMode::Auto,
                create_kek: true,
                kdf: Some(kdf),
            });
            let err = open_sealer(&cfg, dir.path()).err().unwrap();
            assert!(matches!(err, HsmError::Config(_)), "{err}");
            assert!(err.to_string().contains(field), "{err}");
            assert!(!dir.path().join(crate::SOFTWARE_KEK_FILE).exists());
        }
        assert!(KdfParams::default().check_minimum("kdf").is_ok());
    }

    #[test]
    fn unknown_fields_and_backends_are_rejected() {
        let typo = toml::from_str::<SealerConfig>(
            r#"
            backend = "pkcs11"
            module = "/m.so"
            token_label = "t"
            pin_fiel = "/p"
            kek_label = "k"
            "#,
        );
        assert!(typo.is_err());
        assert!(toml::from_str::<SealerConfig>("backend = \"tpm\"").is_err());
    }

    #[test]
    fn software_log_signer_from_config() {
        let dir = tempfile::tempdir().unwrap();
        let pass = dir.path().join("pass");
        std::fs::write(&pass, "pw\n").unwrap();
        let text = format!(
            "backend = \"software\"\nkey_file = \"{}\"\npassphrase_file = \"{}\"\nkdf = {{ m_cost_kib = 19456, t_cost = 2, p_cost = 1 }}\n",
            dir.path().join("log.key").display(),
            pass.display()
        );
        // Creation is opt-in: an absent key is an error naming its KEK file.
        let cfg: LogSignerConfig = toml::from_str(&text).unwrap();
        let err = open_log_signer(&cfg).err().unwrap();
        assert!(matches!(err, HsmError::KekMissing { .. }), "{err}");
        assert!(err.to_string().contains("software-kek.json"), "{err}");
        // Argon2id below OWASP's minimum is refused, naming the field.
        let weak: LogSignerConfig = toml::from_str(
            &text
                .replace("m_cost_kib = 19456", "m_cost_kib = 64")
                .replace("t_cost = 2", "t_cost = 1"),
        )
        .unwrap();
        let err = open_log_signer(&weak).err().unwrap();
        assert!(err.to_string().contains("`kdf.m_cost_kib` = 64"), "{err}");
        let cfg: LogSignerConfig = toml::from_str(&format!("{text}create_key = true\n")).unwrap();
        let a = open_log_signer(&cfg).unwrap();
        let b = open_log_signer(&cfg).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        std::fs::write(&pass, "other\n").unwrap();
        let err = open_log_signer(&cfg).err().unwrap();
        assert!(matches!(err, HsmError::WrongPassphrase { .. }), "{err}");
    }

    #[test]
    fn software_sealer_from_config_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        let pass = dir.path().join("pass");
        std::fs::write(&pass, "correct horse\n").unwrap();
        let mut cfg = SoftwareConfig {
            passphrase_file: Some(pass.clone()),
            passphrase_env: None,
            unseal: UnsealMode::Auto,
            create_kek: false,
            kdf: Some(KdfParams {
                m_cost_kib: crate::MIN_KDF_M_COST_KIB,
                t_cost: crate::MIN_KDF_T_COST,
                p_cost: 1,
            }),
        };
        let data = dir.path().join("data");
        let err = open_sealer(&SealerConfig::Software(cfg.clone()), &data)
            .err()
            .unwrap();
        assert!(matches!(err, HsmError::KekMissing { .. }), "{err}");
        cfg.create_kek = true;
        let s = open_sealer(&SealerConfig::Software(cfg.clone()), &data).unwrap();
        assert_eq!(s.backend(), "software");
        std::fs::write(&pass, "wrong horse\n").unwrap();
        let err = open_sealer(&SealerConfig::Software(cfg.clone()), &data)
            .err()
            .unwrap();
        assert!(matches!(err, HsmError::WrongPassphrase { .. }), "{err}");
        // A deleted KEK file is not recreated without create_kek, and the
        // error names the file.
        std::fs::remove_file(data.join(crate::SOFTWARE_KEK_FILE)).unwrap();
        let mut no_create = cfg.clone();
        no_create.create_kek = false;
        let err = open_sealer(&SealerConfig::Software(no_create), &data)
            .err()
            .unwrap();
        assert!(matches!(err, HsmError::KekMissing { .. }), "{err}");
        assert!(err.to_string().contains("software-kek.json"), "{err}");
        assert!(!data.join(crate::SOFTWARE_KEK_FILE).exists());
        cfg.passphrase_env = Some("X".into());
        let err = open_sealer(&SealerConfig::Software(cfg), &data)
            .err()
            .unwrap();
        assert!(matches!(err, HsmError::Config(_)), "{err}");
    }
}
