//! The `message` chain (`custos_chains::message`): the wallet key signs the
//! approved message itself. What is sent to the signers is the message
//! bytes, decoded from the approved destination; each signer decodes the
//! approved destination again and refuses other bytes. The signing session's
//! log entry names the message's SHA-256. Nothing is broadcast: the
//! withdrawal ends `signed`, its signature on the row.

use custos_chains::message::{message_digest, parse_message};

use super::driver::FamilyDriver;
use super::{Engine, Next};
use crate::db::KeyRow;
use crate::error::CoordError;
use crate::withdrawal::store::WithdrawalRow;

/// Signs approved messages; nothing to publish or release.
pub(super) struct MessageDriver;

#[tonic::async_trait]
impl FamilyDriver for MessageDriver {
    async fn sign(
        &self,
        engine: &Engine,
        row: &WithdrawalRow,
        key: &KeyRow,
    ) -> Result<Next, CoordError> {
        let message = parse_message(&row.destination)
            .map_err(|e| CoordError::Internal(format!("{}: stored message: {e}", row.id)))?;
        let digest = message_digest(&message);
        let mut row = row.clone();
        row.unsigned_tx = Some(message.clone());
        engine.sign_message(&row, key, &digest, &message).await
    }

    async fn publish(&self, _: &Engine, _: &WithdrawalRow) -> Result<Next, CoordError> {
        Ok(Next::Wait)
    }

    async fn release(&self, _: &Engine, _: &str) -> Result<(), CoordError> {
        Ok(())
    }
}
