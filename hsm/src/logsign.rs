//! A software Ed25519 log signer whose key rests sealed by any [`Sealer`]
//! (the embedded default for a coordinator without an HSM).

use std::fmt;
use std::path::Path;

use custos_audit::{AuditError, LogSigner, SignatureAlgorithm};
use ed25519_dalek::{Signer as _, SigningKey};
use rand_core::OsRng;
use zeroize::Zeroizing;

use crate::{HsmError, SealContext, Sealer, fsutil};

/// What the sealed log-signing key is bound to.
const CTX: SealContext<'static> = SealContext {
    node_id: "coordinator",
    key_id: "log-signing-key",
    share_id: "ed25519-seed",
};

/// Ed25519 log signer with its seed sealed at rest; the seed is only in
/// (zeroized-on-drop) memory and never returned.
pub struct SealedLogSigner {
    key: SigningKey,
}

impl fmt::Debug for SealedLogSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedLogSigner")
            .field(
                "public_key",
                &hex::encode(self.key.verifying_key().as_bytes()),
            )
            .finish_non_exhaustive()
    }
}

impl SealedLogSigner {
    /// Loads the key sealed at `path`, or, if the file is absent and `create`
    /// is true, generates one and writes it sealed (atomically).
    pub fn open(sealer: &dyn Sealer, path: &Path, create: bool) -> Result<Self, HsmError> {
        match std::fs::read(path) {
            Ok(blob) => {
                let seed = sealer.unseal(&CTX, &blob)?;
                let seed: Zeroizing<[u8; 32]> =
                    Zeroizing::new(seed.as_slice().try_into().map_err(|_| {
                        HsmError::SealedBlobInvalid("log key is not 32 bytes".into())
                    })?);
                Ok(SealedLogSigner {
                    key: SigningKey::from_bytes(&seed),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !create {
                    return Err(HsmError::KekMissing {
                        what: format!("sealed log-signing key {}", path.display()),
                    });
                }
                let key = SigningKey::generate(&mut OsRng);
                let seed = Zeroizing::new(key.to_bytes());
                let blob = sealer.seal(&CTX, &seed[..])?;
                fsutil::write_atomic(path, &blob)?;
                Ok(SealedLogSigner { key })
            }
            Err(e) => Err(HsmError::io(path, e)),
        }
    }
}

impl LogSigner for SealedLogSigner {
    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::Ed25519
    }

    fn public_key(&self) -> Vec<u8> {
        self.key.verifying_key().to_bytes().to_vec()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, AuditError> {
        // Software Ed25519 signing cannot fail once the key is loaded.
        Ok(self.key.sign(message).to_bytes().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KdfParams, Passphrase, SoftwareSealer};

    #[test]
    fn key_is_sealed_at_rest_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = SoftwareSealer::open_with_params(
            dir.path(),
            &Passphrase::from("p"),
            true,
            KdfParams::insecure_fast_for_tests(),
        )
        .unwrap();
        let path = dir.path().join("log-key.sealed");
        assert!(matches!(
            SealedLogSigner::open(&sealer, &path, false),
            Err(HsmError::KekMissing { .. })
        ));
        let s = SealedLogSigner::open(&sealer, &path, true).unwrap();
        let seed = s.key.to_bytes();
        let on_disk = std::fs::read(&path).unwrap();
        assert!(!on_disk.windows(32).any(|w| w == seed));
        let again = SealedLogSigner::open(&sealer, &path, false).unwrap();
        assert_eq!(again.public_key(), s.public_key());
        let sig = ed25519_dalek::Signature::from_slice(&again.sign(b"m").unwrap()).unwrap();
        let vk =
            ed25519_dalek::VerifyingKey::from_bytes(&s.public_key().try_into().unwrap()).unwrap();
        vk.verify_strict(b"m", &sig).unwrap();
        assert!(!format!("{s:?}").contains(&hex::encode(seed)));
    }
}
