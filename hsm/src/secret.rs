//! Zeroizing secret bytes (passphrases, PINs) with a redacted `Debug`.

use std::fmt;
use std::path::Path;

use zeroize::Zeroizing;

use crate::HsmError;

/// Secret bytes, wiped from memory on drop; `Debug` prints `<redacted>`.
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

/// A passphrase for the software backend.
pub type Passphrase = Secret;

/// A PKCS#11 user PIN.
pub type Pin = Secret;

impl Secret {
    /// Wraps bytes (which are zeroized when the secret is dropped).
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(Zeroizing::new(bytes))
    }

    /// Reads a secret from a file, trimming one trailing newline (`\n` or `\r\n`).
    ///
    /// Fails if the file cannot be read or the secret is empty.
    pub fn from_file(path: &Path) -> Result<Self, HsmError> {
        let source_name = || format!("file {}", path.display());
        let mut bytes =
            Zeroizing::new(
                std::fs::read(path).map_err(|e| HsmError::SecretUnavailable {
                    source_name: source_name(),
                    reason: e.to_string(),
                })?,
            );
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        }
        let secret = Secret(bytes);
        if secret.is_empty() {
            return Err(HsmError::SecretUnavailable {
                source_name: source_name(),
                reason: "the file holds an empty secret".into(),
            });
        }
        Ok(secret)
    }

    /// Reads a secret from an environment variable.
    ///
    /// Fails if the variable is unset or empty. The value is used as is (no trimming).
    pub fn from_env(var: &str) -> Result<Self, HsmError> {
        let source_name = || format!("environment variable {var}");
        let value = std::env::var_os(var).ok_or_else(|| HsmError::SecretUnavailable {
            source_name: source_name(),
            reason: "not set".into(),
        })?;
        let secret = Secret::new(std::os::unix::ffi::OsStringExt::into_vec(value));
        if secret.is_empty() {
            return Err(HsmError::SecretUnavailable {
                source_name: source_name(),
                reason: "empty".into(),
            });
        }
        Ok(secret)
    }

    /// Reads the secret from exactly one of a file or an environment variable.
    pub(crate) fn from_file_or_env(
        what: &str,
        file: Option<&Path>,
        env: Option<&str>,
    ) -> Result<Self, HsmError> {
        match (file, env) {
            (Some(path), None) => Secret::from_file(path),
            (None, Some(var)) => Secret::from_env(var),
            _ => Err(HsmError::Config(format!(
                "exactly one of {what}_file and {what}_env must be set"
            ))),
        }
    }

    /// The secret bytes. Keep the borrow short and never copy them into a non-zeroizing buffer.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret::new(s.as_bytes().to_vec())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = Secret::from("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn from_file_trims_one_newline_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pass");
        std::fs::write(&p, b"pass phrase\n\n").unwrap();
        assert_eq!(Secret::from_file(&p).unwrap().expose(), b"pass phrase\n");
        std::fs::write(&p, b"pass\r\n").unwrap();
        assert_eq!(Secret::from_file(&p).unwrap().expose(), b"pass");
        std::fs::write(&p, b" pass ").unwrap();
        assert_eq!(Secret::from_file(&p).unwrap().expose(), b" pass ");
        std::fs::write(&p, b"\n").unwrap();
        assert!(matches!(
            Secret::from_file(&p),
            Err(HsmError::SecretUnavailable { .. })
        ));
    }

    #[test]
    fn missing_sources_are_clear_errors_without_values() {
        let err = Secret::from_file(Path::new("/nonexistent/custos/pin")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/custos/pin"), "{err}");
        let err = Secret::from_env("CUSTOS_HSM_TEST_SURELY_UNSET_VAR").unwrap_err();
        assert!(matches!(err, HsmError::SecretUnavailable { .. }));
        assert!(err.to_string().contains("CUSTOS_HSM_TEST_SURELY_UNSET_VAR"));
        let err = Secret::from_file_or_env("pin", None, None).unwrap_err();
        assert!(matches!(err, HsmError::Config(_)));
    }
}
