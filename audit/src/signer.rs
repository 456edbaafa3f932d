//! The log-signing key seen from the log: the [`LogSigner`] trait that key
//! backends implement.
//!
//! The trait lives here, in the crate that uses it, and not in `custos-hsm`
//! that implements it (software and PKCS#11 keys), so the log and its offline
//! verifier do not depend on any key backend (no PKCS#11 module, no Argon2).

use std::sync::Arc;

use crate::AuditError;

/// Signature algorithm of a [`LogSigner`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignatureAlgorithm {
    /// Ed25519 over the message (RFC 8032).
    Ed25519,
    /// ECDSA P-256 over SHA-256 of the message, DER-free `r || s` (64 bytes).
    EcdsaP256Sha256,
}

/// Signs transparency-log checkpoints with a key that never leaves its backend.
///
/// Implementations report a backend failure as [`AuditError::Signer`] with
/// the backend's own error as its source (see [`AuditError::signer`]).
pub trait LogSigner: Send + Sync {
    /// The algorithm this signer uses.
    fn algorithm(&self) -> SignatureAlgorithm;
    /// The public key: 32 bytes for Ed25519, SEC1 compressed (33 bytes) for P-256.
    fn public_key(&self) -> Vec<u8>;
    /// Signs `message` (the implementation hashes it if the algorithm needs it).
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, AuditError>;
}

macro_rules! forward_impls {
    ($($ptr:ident),*) => {$(
        impl<S: LogSigner + ?Sized> LogSigner for $ptr<S> {
            fn algorithm(&self) -> SignatureAlgorithm {
                (**self).algorithm()
            }
            fn public_key(&self) -> Vec<u8> {
                (**self).public_key()
            }
            fn sign(&self, message: &[u8]) -> Result<Vec<u8>, AuditError> {
                (**self).sign(message)
            }
        }
    )*};
}

forward_impls!(Box, Arc);

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("token unplugged")]
    struct Unplugged;

    struct Failing;

    impl LogSigner for Failing {
        fn algorithm(&self) -> SignatureAlgorithm {
            SignatureAlgorithm::Ed25519
        }
        fn public_key(&self) -> Vec<u8> {
            vec![0; 32]
        }
        fn sign(&self, _message: &[u8]) -> Result<Vec<u8>, AuditError> {
            Err(AuditError::signer(Unplugged))
        }
    }

    #[test]
    fn a_backend_failure_keeps_its_cause_through_a_pointer() {
        let signer: Arc<dyn LogSigner> = Arc::new(Box::new(Failing));
        let err = signer.sign(b"checkpoint").unwrap_err();
        assert_eq!(err.to_string(), "log signer failed: token unplugged");
        let cause = std::error::Error::source(&err).unwrap();
        assert!(cause.downcast_ref::<Unplugged>().is_some(), "{cause:?}");
    }
}
