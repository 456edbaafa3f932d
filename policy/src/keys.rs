//! Ed25519 keys for approvers and admins.
//!
//! Secret keys are stored as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`, readable by
//! OpenSSL). They live in zeroizing memory and never print: `Debug` is redacted.

use std::fmt;

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use crate::error::{PolicyError, Result};

/// An Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(pub VerifyingKey);

impl PublicKey {
    /// Parses 64 hex digits (an optional `ed25519:` prefix is accepted).
    pub fn from_hex(s: &str) -> Result<Self> {
        let s = s.strip_prefix("ed25519:").unwrap_or(s);
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s, &mut bytes)
            .map_err(|e| PolicyError::Key(format!("public key must be 64 hex digits: {e}")))?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| PolicyError::Key("public key is not a valid Ed25519 point".into()))?;
        if key.is_weak() {
            // Small-order keys admit signatures that verify for many messages.
            return Err(PolicyError::Key("public key has small order".into()));
        }
        Ok(PublicKey(key))
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.to_bytes())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

/// An Ed25519 secret key (approver or admin). Zeroized on drop; `Debug` is redacted.
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// Builds a key from 32 secret bytes. The caller supplies the randomness (this
    /// crate does no I/O); the seed buffer is zeroized by its owner.
    pub fn from_seed(seed: &Zeroizing<[u8; 32]>) -> Self {
        SecretKey(SigningKey::from_bytes(seed))
    }

    /// Parses a PKCS#8 PEM private key.
    pub fn from_pem(pem: &str) -> Result<Self> {
        SigningKey::from_pkcs8_pem(pem)
            .map(SecretKey)
            .map_err(|_| PolicyError::Key("not an Ed25519 PKCS#8 PEM private key".into()))
    }

    /// PKCS#8 PEM encoding, in zeroizing memory.
    pub fn to_pem(&self) -> Result<Zeroizing<String>> {
        self.0
            .to_pkcs8_pem(Default::default())
            .map_err(|e| PolicyError::Key(format!("PKCS#8 encoding failed: {e}")))
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    pub(crate) fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.0.sign(msg).to_bytes()
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(<redacted>, public {})", self.public())
    }
}

/// Verifies an Ed25519 signature strictly (no malleable or small-order forms).
pub(crate) fn verify(key: &VerifyingKey, msg: &[u8], sig: &[u8]) -> bool {
    let Ok(bytes) = <[u8; 64]>::try_from(sig) else {
        return false;
    };
    key.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(&bytes))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_and_redacted_debug() {
        let k = SecretKey::from_seed(&Zeroizing::new([7u8; 32]));
        let pem = k.to_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let back = SecretKey::from_pem(&pem).unwrap();
        assert_eq!(back.public(), k.public());
        let dbg = format!("{k:?}");
        assert!(dbg.contains("<redacted>"));
        assert!(!dbg.contains(&hex::encode([7u8; 32])));
        assert!(
            SecretKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .is_err()
        );
    }

    #[test]
    fn public_key_parsing() {
        let k = SecretKey::from_seed(&Zeroizing::new([1u8; 32])).public();
        assert_eq!(PublicKey::from_hex(&k.to_hex()).unwrap(), k);
        assert_eq!(
            PublicKey::from_hex(&format!("ed25519:{}", k.to_hex())).unwrap(),
            k
        );
        assert!(PublicKey::from_hex("00").is_err());
        // The identity point has small order.
        let mut id = [0u8; 32];
        id[0] = 1;
        assert!(PublicKey::from_hex(&hex::encode(id)).is_err());
    }
}
