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
//!
//! A withdrawal from a derived address of the wallet binds where it spends
//! from too, under its own domain (so no v1 digest equals a v2 one):
//!
//! ```text
//! digest = SHA-256( "custos.transfer-intent.v2" 0x00
//!                   || the same fields as v1
//!                   || str source_path || str source_address )
//! ```

use sha2::{Digest, Sha256};

use crate::eval::Withdrawal;

/// Domain separator of the transfer-intent digest.
pub const INTENT_DOMAIN: &[u8] = b"custos.transfer-intent.v1";
/// Domain separator of the digest of a withdrawal from a derived address.
pub const INTENT_DOMAIN_DERIVED: &[u8] = b"custos.transfer-intent.v2";

/// The transfer-intent digest of `w` (its `tx_digest` and `initiator` are not
/// part of it).
pub fn intent_digest(w: &Withdrawal) -> [u8; 32] {
    let put = |h: &mut Sha256, s: &str| {
        h.update(u32::try_from(s.len()).unwrap_or(u32::MAX).to_be_bytes());
        h.update(s.as_bytes());
    };
    let mut h = Sha256::new();
    h.update(match w.source {
        None => INTENT_DOMAIN,
        Some(_) => INTENT_DOMAIN_DERIVED,
    });
    h.update([0u8]);
    for s in [&w.id, &w.wallet, &w.chain, &w.asset, &w.destination] {
        put(&mut h, s);
    }
    h.update(w.amount.0.to_be_bytes());
    h.update(w.fee_cap.0.to_be_bytes());
    if let Some(source) = &w.source {
        put(&mut h, &source.path);
        put(&mut h, &source.address);
    }
    h.finalize().into()
}
