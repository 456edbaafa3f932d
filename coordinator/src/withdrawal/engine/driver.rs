//! The engine's seam between chain families: what happens to a withdrawal
//! from `signing` on (what is signed, how it reaches the chain, what an
//! unsigned transaction held). The state machine, policy, approvals and
//! time locks are the same on every chain; adding a family adds a driver
//! file and its line in [`Engine::driver`], not branches in the engine.

use super::{Engine, Next};
use crate::db::KeyRow;
use crate::error::CoordError;
use crate::withdrawal::store::WithdrawalRow;

/// How withdrawals on one chain family are signed and published.
#[tonic::async_trait]
pub(super) trait FamilyDriver: Send + Sync {
    /// signing → signed | failed: builds the transaction (once, stored
    /// before anything is signed), then signs what it needs signed; waits
    /// while the chain or the signers cannot be reached.
    async fn sign(
        &self,
        engine: &Engine,
        row: &WithdrawalRow,
        key: &KeyRow,
    ) -> Result<Next, CoordError>;

    /// signed → broadcast → confirmed | failed.
    async fn publish(&self, engine: &Engine, row: &WithdrawalRow) -> Result<Next, CoordError>;

    /// Gives back what the withdrawal's unsigned transaction held (an EVM
    /// nonce, UTXO coins) when it ends without a signature.
    async fn release(&self, engine: &Engine, withdrawal_id: &str) -> Result<(), CoordError>;
}
