//! Request-key algorithms: Ed25519, and ECDSA P-256 for clients whose keys
//! live in a cloud KMS, an HSM or a platform keystore that has no Ed25519.

use p256::ecdsa::signature::Verifier as _;

use crate::document::RequestKey;

/// A parsed request key.
#[derive(Debug, Clone)]
pub(crate) enum RequestVerifier {
    /// Ed25519 over the signing message.
    Ed25519(ed25519_dalek::VerifyingKey),
    /// ECDSA P-256 over SHA-256 of the signing message.
    P256(p256::ecdsa::VerifyingKey),
}

impl RequestVerifier {
    /// The key of `k`: exactly one of `ed25519` and `p256` must be set. The
    /// error names the field at fault.
    pub(crate) fn parse(k: &RequestKey) -> Result<Self, String> {
        match (k.ed25519.is_empty(), k.p256.is_empty()) {
            (false, true) => crate::keys::PublicKey::from_hex(&k.ed25519)
                .map(|key| Self::Ed25519(key.0))
                .map_err(|e| format!("ed25519: {e}")),
            (true, false) => {
                let bytes = hex::decode(k.p256.trim())
                    .map_err(|_| "p256: not hex (expected a SEC1 public key)".to_owned())?;
                p256::ecdsa::VerifyingKey::from_sec1_bytes(&bytes)
                    .map(Self::P256)
                    .map_err(|_| {
                        format!(
                            "p256: {} bytes are not a SEC1 P-256 public key (33 compressed or 65 uncompressed)",
                            bytes.len()
                        )
                    })
            }
            (true, true) => Err("needs a public key: set ed25519 or p256".to_owned()),
            (false, false) => Err("set one of ed25519 and p256, not both".to_owned()),
        }
    }

    /// True when `signature` is this key's over `message`. P-256 signatures
    /// may be DER (what KMS and WebCrypto-to-DER tools return) or the 64-byte
    /// r‖s form.
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            Self::Ed25519(key) => crate::keys::verify(key, message, signature),
            Self::P256(key) => {
                let sig = p256::ecdsa::Signature::from_der(signature)
                    .or_else(|_| p256::ecdsa::Signature::from_slice(signature));
                sig.is_ok_and(|sig| key.verify(message, &sig).is_ok())
            }
        }
    }
}
