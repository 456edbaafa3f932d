//! The transfer-intent digest: what is signed for a chain without a
//! transaction adapter, and the reference digest of a withdrawal.
//!
//! ```text
//! digest = SHA-256( "custos.transfer-intent.v1" 0x00
//!                   || str id || str wallet || str chain || str asset
//!                   || str destination || u128 amount || u128 fee_cap )
//! ```
//! `str` = u32 big-endian length then UTF-8 bytes; integers big-endian. Every
//! signer recomputes it from the withdrawal it verified, so approvers, the
//! coordinator and the signers agree on exactly one digest per withdrawal.

use sha2::{Digest, Sha256};

use crate::eval::Withdrawal;

/// Domain separator of the transfer-intent digest.
pub const INTENT_DOMAIN: &[u8] = b"custos.transfer-intent.v1";

/// The transfer-intent digest of `w` (its `tx_digest` and `initiator` are not
/// part of it).
pub fn intent_digest(w: &Withdrawal) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(INTENT_DOMAIN);
    h.update([0u8]);
    for s in [&w.id, &w.wallet, &w.chain, &w.asset, &w.destination] {
        h.update(u32::try_from(s.len()).unwrap_or(u32::MAX).to_be_bytes());
        h.update(s.as_bytes());
    }
    h.update(w.amount.0.to_be_bytes());
    h.update(w.fee_cap.0.to_be_bytes());
    h.finalize().into()
}
