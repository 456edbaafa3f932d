//! Key protection for Custos: sealing signer shares at rest and signing the
//! transparency log, behind traits whose implementations never return key
//! material.
//!
//! Backends: a software key-encryption key derived from a passphrase (the
//! embedded default, [`SoftwareSealer`]) and PKCS#11 (an HSM; SoftHSM2 in
//! tests, [`Pkcs11Sealer`] and [`Pkcs11LogSigner`]).
//!
//! Every sealed blob has one versioned, self-describing format (see
//! [`blob`]): a header naming the backend, the key-encryption key, the
//! algorithm and its parameters and the [`SealContext`] the blob is bound to,
//! followed by the AEAD ciphertext. The whole header is the associated data,
//! so a blob cannot be moved to another node, key, share or KEK, and one
//! flipped bit anywhere makes it fail to unseal.
//!
//! A node calls [`open_sealer`] with its [`SealerConfig`] at start and
//! refuses to start on any error (fail closed): each failure cause (missing
//! module, missing token, wrong PIN, missing KEK, wrong passphrase) is a
//! distinct [`HsmError`] variant.
//!
//! # Operations
//!
//! - Software backend: the KEK metadata (`software-kek.json`: Argon2id
//!   parameters, salt, KEK id, check value) lives in the node's data
//!   directory; Argon2id (m = 64 MiB, t = 3 by default; a config below
//!   OWASP's minimum, m = 19 MiB and t = 2, is refused naming the field)
//!   runs once at start, a wrong passphrase fails there. The KEK is created
//!   only when `create_kek = true` (default false): a deleted metadata file
//!   is an error naming it, never silently replaced by a new KEK. Back the
//!   file up with the sealed shares: without it (and the passphrase) they
//!   cannot be unsealed.
//! - PKCS#11 backend: the token is found by label; the KEK (AES-256,
//!   `CKA_SENSITIVE`, not `CKA_EXTRACTABLE`, random `CKA_ID`) is found by
//!   label, or generated when `create_kek = true` (leave it false once the
//!   KEK exists, so a wrong token fails closed instead of getting a new KEK).
//!   An existing key that is extractable or not sensitive is refused. AES-GCM
//!   IVs are random (96 bits): stay well below 2^32 seals per KEK.
//! - Rotation: stop the node, open the old and the new sealer, run
//!   [`reseal_dir`] over the share directory (it is resumable), then switch
//!   the configuration. Plaintext only exists in zeroized memory.
//! - Rollback counters ([`open_rollback_counter`]): a data object on the
//!   token, or a sealed file, holding a value a restored snapshot cannot
//!   rewind (see [`RollbackCounter`]).
//! - Log signing: [`open_log_signer`] with a [`LogSignerConfig`]: a token key
//!   pair ([`Pkcs11LogSigner`], Ed25519, or P-256 where the token lacks it) or
//!   an Ed25519 key sealed by the software backend ([`SealedLogSigner`]).
//!   Both implement [`custos_audit::LogSigner`]: the trait belongs to the
//!   log, so the log and its offline verifier need no key backend; a signing
//!   failure reaches the log as `AuditError::Signer` with the [`HsmError`] as
//!   its source.

#![deny(missing_docs)]

pub mod blob;
mod config;
mod counter;
mod error;
mod fsutil;
mod key_file;
mod logsign;
mod pkcs11;
mod reseal;
mod secret;
pub mod shamir;
mod software;
pub mod testing;

pub use config::{
    LogSignerConfig, OpenedLogKey, Pkcs11Config, ROLLBACK_COUNTER_FILE, SealerConfig,
    SoftwareConfig, UnsealMode, open_log_key, open_log_signer, open_log_signer_with,
    open_rollback_counter, open_sealer, open_sealer_with,
};
pub use counter::{CounterValue, Pkcs11Counter, RollbackCounter, SealedFileCounter};
pub use error::HsmError;
pub use key_file::{KeyFileState, NODE_KEY_ID, open_key_file};
pub use logsign::SealedLogSigner;
pub use pkcs11::{LogKeyAlgorithm, Pkcs11LogSigner, Pkcs11Sealer, pkcs11_context};
pub use reseal::{ResealReport, reseal, reseal_dir};
pub use secret::{Passphrase, Pin, Secret};
pub use software::{
    KdfParams, MIN_KDF_M_COST_KIB, MIN_KDF_T_COST, SOFTWARE_KEK_FILE, SoftwareSealer,
};

use std::sync::Arc;

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

macro_rules! forward_impls {
    ($($ptr:ident),*) => {$(
        impl<S: Sealer + ?Sized> Sealer for $ptr<S> {
            fn backend(&self) -> &'static str {
                (**self).backend()
            }
            fn kek_id(&self) -> String {
                (**self).kek_id()
            }
            fn seal(&self, ctx: &SealContext<'_>, plaintext: &[u8]) -> Result<Vec<u8>, HsmError> {
                (**self).seal(ctx, plaintext)
            }
            fn unseal(
                &self,
                ctx: &SealContext<'_>,
                sealed: &[u8],
            ) -> Result<Zeroizing<Vec<u8>>, HsmError> {
                (**self).unseal(ctx, sealed)
            }
        }
    )*};
}

forward_impls!(Box, Arc);
