//! A signer's refusal of a withdrawal request, as it signs it for the log.
//!
//! A rogue coordinator can ask signers for what the policy forbids and then
//! keep quiet about it. So a signer signs every refusal with its witness
//! key, keeps it until it has witnessed it in the log (kind 18,
//! [`EntryBody::SigningRefused`]) and signs nothing once one has waited
//! too long. An auditor checks the signature against the witness keys it
//! trusts: the coordinator can neither invent a refusal nor alter one.
//!
//! The signed message is domain-separated from checkpoint cosignatures
//! (which start `cosignature/v1\n`), so one key serves both without a
//! refusal ever being mistaken for a cosignature or the reverse.

use ed25519_dalek::{Signature, Verifier, VerifyingKey};

use crate::entry::EntryBody;
use crate::error::AuditError;
use crate::note::VerifierKey;
use crate::signer::LogSigner;

/// First bytes of every signed refusal.
pub const REFUSAL_DOMAIN: &[u8] = b"custos.signing-refusal/v1\n";

/// What a signer refused, when and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Withdrawal identifier (empty if the request could not be decoded).
    pub withdrawal_id: String,
    /// The refusing signer's node id, its witness key name.
    pub signer: String,
    /// What was refused (`register_quorum`, `sign_withdrawal`).
    pub request: String,
    /// The signer's reason.
    pub reason: String,
    /// The signer's clock, Unix ms.
    pub refused_at_ms: u64,
}

fn put(out: &mut Vec<u8>, field: &[u8]) {
    // Fields are bounded by the gRPC message size, far below 4 GiB.
    let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field);
}

impl Refusal {
    /// The bytes signed: the domain, then each field length-prefixed
    /// (u32 big-endian) in declaration order, the time as u64 big-endian.
    pub fn message(&self) -> Vec<u8> {
        let mut out = REFUSAL_DOMAIN.to_vec();
        put(&mut out, self.withdrawal_id.as_bytes());
        put(&mut out, self.signer.as_bytes());
        put(&mut out, self.request.as_bytes());
        put(&mut out, self.reason.as_bytes());
        out.extend_from_slice(&self.refused_at_ms.to_be_bytes());
        out
    }

    /// Signs the refusal with a witness key.
    pub fn sign(&self, key: &dyn LogSigner) -> Result<Vec<u8>, AuditError> {
        key.sign(&self.message())
    }

    /// The log entry body carrying this refusal and its signature.
    pub fn into_entry(self, signature: Vec<u8>) -> EntryBody {
        EntryBody::SigningRefused {
            withdrawal_id: self.withdrawal_id,
            signer: self.signer,
            request: self.request,
            reason: self.reason,
            refused_at_ms: self.refused_at_ms,
            signature,
        }
    }

    /// The refusal an entry carries, with its signature (`None` for other kinds).
    pub fn from_entry(body: &EntryBody) -> Option<(Refusal, &[u8])> {
        match body {
            EntryBody::SigningRefused {
                withdrawal_id,
                signer,
                request,
                reason,
                refused_at_ms,
                signature,
            } => Some((
                Refusal {
                    withdrawal_id: withdrawal_id.clone(),
                    signer: signer.clone(),
                    request: request.clone(),
                    reason: reason.clone(),
                    refused_at_ms: *refused_at_ms,
                },
                signature,
            )),
            _ => None,
        }
    }

    /// Checks `signature` against the key among `keys` named after the
    /// refusing signer.
    pub fn verify(&self, signature: &[u8], keys: &[VerifierKey]) -> Result<(), AuditError> {
        let key = keys
            .iter()
            .find(|k| k.name() == self.signer)
            .ok_or_else(|| {
                AuditError::MissingSignature(format!("trusted witness {}", self.signer))
            })?;
        let vk = VerifyingKey::from_bytes(key.public_key())
            .map_err(|_| AuditError::BadSignature(self.signer.clone()))?;
        let sig = Signature::from_slice(signature)
            .map_err(|_| AuditError::BadSignature(self.signer.clone()))?;
        vk.verify(&self.message(), &sig)
            .map_err(|_| AuditError::BadSignature(self.signer.clone()))
    }
}
