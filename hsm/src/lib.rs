//! Key protection for Custos: sealing signer shares at rest and signing the
//! transparency log, behind traits whose implementations never return key
//! material.
//!
//! Backends: a software key-encryption key derived from a passphrase (the
//! embedded default) and PKCS#11 (an HSM; SoftHSM2 in tests).

use zeroize::Zeroizing;

/// What a sealed blob is bound to. Sealing authenticates all three fields as
/// associated data, so a blob cannot be moved to another node, key or share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealContext<'a> {
    /// The signer node that owns the blob.
    pub node_id: &'a str,
    /// The key (wallet key, aux-info group, ...) the blob belongs to.
    pub key_id: &'a str,
    /// Which secret of that key this blob holds (e.g. `share`, `aux`, a presignature id).
    pub share_id: &'a str,
}

/// Seals and unseals secrets with a key-encryption key the caller never sees.
pub trait Sealer: Send + Sync {
    /// Backend name written into blob headers (`software`, `pkcs11`).
    fn backend(&self) -> &'static str;
    /// Identifies the key-encryption key (so a re-seal can tell old blobs from new).
    fn kek_id(&self) -> String;
    /// Seals `plaintext` bound to `ctx`.
    fn seal(&self, ctx: &SealContext<'_>, plaintext: &[u8]) -> Result<Vec<u8>, HsmError>;
    /// Unseals a blob produced by [`Sealer::seal`] with the same `ctx`.
    fn unseal(&self, ctx: &SealContext<'_>, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, HsmError>;
}

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HsmError {
    /// The sealed blob is corrupt, was sealed under another key, or is bound to another context.
    #[error("sealed blob invalid: {0}")]
    SealedBlobInvalid(String),
}
