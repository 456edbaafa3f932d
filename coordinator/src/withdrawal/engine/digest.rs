//! Withdrawals on a chain with no adapter configured: the signers sign the
//! digest stored at creation; nothing is broadcast (the client publishes).

use super::driver::FamilyDriver;
use super::{Engine, Next};
use crate::db::KeyRow;
use crate::error::CoordError;
use crate::withdrawal::store::WithdrawalRow;

/// Signs the stored digest; publishing is the client's.
pub(super) struct DigestOnly;

#[tonic::async_trait]
impl FamilyDriver for DigestOnly {
    async fn sign(
        &self,
        engine: &Engine,
        row: &WithdrawalRow,
        key: &KeyRow,
    ) -> Result<Next, CoordError> {
        let digest = stored_digest(row)?;
        engine.sign_digest(row, key, &digest).await
    }

    async fn publish(&self, _: &Engine, _: &WithdrawalRow) -> Result<Next, CoordError> {
        Ok(Next::Wait)
    }

    async fn release(&self, _: &Engine, _: &str) -> Result<(), CoordError> {
        Ok(())
    }
}

/// The digest stored with the withdrawal at creation.
pub(super) fn stored_digest(row: &WithdrawalRow) -> Result<[u8; 32], CoordError> {
    row.tx_digest
        .as_deref()
        .and_then(|d| d.try_into().ok())
        .ok_or_else(|| CoordError::Internal(format!("{} has no digest", row.id)))
}
