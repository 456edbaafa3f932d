//! PKCS#11 backend (placeholder, filled in next).

use std::path::Path;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{HsmError, LogSigner, Pin, Pkcs11Config, SealContext, Sealer, SignatureAlgorithm};

/// Key algorithm of a PKCS#11 log-signing key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LogKeyAlgorithm {
    /// Ed25519 if the token supports it, else ECDSA P-256.
    #[default]
    Auto,
    /// Ed25519 (`CKM_EDDSA`).
    Ed25519,
    /// ECDSA on P-256 over a SHA-256 digest computed client-side.
    EcdsaP256,
}

/// Seals with an AES-256 KEK inside a PKCS#11 token.
#[derive(Debug)]
pub struct Pkcs11Sealer {}

impl Pkcs11Sealer {
    /// Opens the KEK on the configured token.
    pub fn open(_cfg: &Pkcs11Config) -> Result<Self, HsmError> {
        Err(HsmError::Config("pkcs11 backend not built yet".into()))
    }
}

impl Sealer for Pkcs11Sealer {
    fn backend(&self) -> &'static str {
        "pkcs11"
    }
    fn kek_id(&self) -> String {
        String::new()
    }
    fn seal(&self, _ctx: &SealContext<'_>, _plaintext: &[u8]) -> Result<Vec<u8>, HsmError> {
        Err(HsmError::Config("pkcs11 backend not built yet".into()))
    }
    fn unseal(
        &self,
        _ctx: &SealContext<'_>,
        _sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        Err(HsmError::Config("pkcs11 backend not built yet".into()))
    }
}

/// Signs with a key pair inside a PKCS#11 token.
#[derive(Debug)]
pub struct Pkcs11LogSigner {}

impl Pkcs11LogSigner {
    /// Opens (or creates) the log-signing key.
    pub fn open(
        _module: &Path,
        _token_label: &str,
        _pin: &Pin,
        _key_label: &str,
        _algorithm: LogKeyAlgorithm,
        _create: bool,
    ) -> Result<Self, HsmError> {
        Err(HsmError::Config("pkcs11 backend not built yet".into()))
    }
}

impl LogSigner for Pkcs11LogSigner {
    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::Ed25519
    }
    fn public_key(&self) -> Vec<u8> {
        Vec::new()
    }
    fn sign(&self, _message: &[u8]) -> Result<Vec<u8>, HsmError> {
        Err(HsmError::Config("pkcs11 backend not built yet".into()))
    }
}
