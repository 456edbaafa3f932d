//! `signing` and after on UTXO chains: one signing session per input (see
//! [`crate::chain::utxo`]), then broadcast and tracking to confirmation.

use super::driver::FamilyDriver;
use super::{Engine, Next, PresigUse};
use crate::chain::utxo::UtxoChain;
use crate::chain::{Chains, Pending};
use crate::db::KeyRow;
use crate::error::CoordError;
use crate::stages::{self, Stage};
use crate::withdrawal::state::State;
use crate::withdrawal::store::WithdrawalRow;

/// Drives withdrawals on UTXO chains.
pub(super) struct UtxoDriver;

impl UtxoDriver {
    fn chain<'e>(
        engine: &'e Engine,
        row: &WithdrawalRow,
    ) -> Result<(&'e Chains, &'e UtxoChain), CoordError> {
        engine.utxo_chain(&row.chain).ok_or_else(|| {
            CoordError::Internal(format!("{}: chain {} is not configured", row.id, row.chain))
        })
    }
}

#[tonic::async_trait]
impl FamilyDriver for UtxoDriver {
    async fn sign(
        &self,
        engine: &Engine,
        row: &WithdrawalRow,
        key: &KeyRow,
    ) -> Result<Next, CoordError> {
        let (chains, chain) = Self::chain(engine, row)?;
        engine.sign_utxo(row, key, chains, chain).await
    }

    async fn publish(&self, engine: &Engine, row: &WithdrawalRow) -> Result<Next, CoordError> {
        let (chains, chain) = Self::chain(engine, row)?;
        engine.utxo_after_signed(row, chains, chain).await
    }

    async fn release(&self, engine: &Engine, withdrawal_id: &str) -> Result<(), CoordError> {
        engine.chains.release_unsigned_utxo(withdrawal_id).await
    }
}

impl Engine {
    /// signing → signed | failed on a UTXO chain: builds the transaction
    /// (once), then signs its inputs one session each, in order; the
    /// withdrawal is `signed` when every input is.
    async fn sign_utxo(
        &self,
        row: &WithdrawalRow,
        key: &KeyRow,
        chains: &Chains,
        chain: &UtxoChain,
    ) -> Result<Next, CoordError> {
        let wallet_key = key.public_key.clone().unwrap_or_default();
        let mut row = row.clone();
        if row.unsigned_tx.is_none() {
            match chains
                .prepare_utxo(chain, &row.payment(), &wallet_key)
                .await
            {
                Ok(_) => row = self.get(&row.id).await?,
                Err(Pending::Storage(e)) => return Err(e),
                Err(Pending::Wait(note)) => {
                    self.note(&row, State::Signing, &note).await?;
                    return Ok(Next::Wait);
                }
            }
        }
        let psbt = row.unsigned_tx.as_deref().unwrap_or_default();
        let checked = chains.checked_utxo(chain, &row.payment(), psbt, &wallet_key)?;
        let inputs = chains.utxo_inputs(&row.id).await?;
        if inputs.len() != checked.digests.len() {
            return Err(CoordError::Internal(format!(
                "{}: {} stored inputs for a transaction of {}",
                row.id,
                inputs.len(),
                checked.digests.len()
            )));
        }
        let Some(input) = inputs.iter().find(|i| i.signature.is_none()) else {
            // Every input signed (a crash after the last one was stored).
            return self.settle_utxo_signed(&row, &inputs).await;
        };
        let (presig, signers) = match &input.presig_id {
            Some(p) => (p.clone(), input.signers.clone()),
            None => {
                let target = PresigUse::Input(chains, &row.id, input.index);
                return match self.take_presig(key, target).await? {
                    // Reserved, or lost a race: step again.
                    Some(_) => Ok(Next::Continue),
                    None => Ok(Next::Wait),
                };
            }
        };
        let digest = usize::try_from(input.index)
            .ok()
            .and_then(|i| checked.digests.get(i))
            .copied()
            .ok_or_else(|| CoordError::Internal(format!("{}: input index", row.id)))?;
        let mut auth = self.authorization(&row).await?;
        auth.input_index = input.index;
        let started = std::time::Instant::now();
        let signed = self
            .audited_sign(&row, key, &digest, &presig, &signers, auth)
            .await?;
        stages::since(Stage::Signing, started);
        match signed {
            Ok(sig) => {
                let mut rs = sig.r.to_vec();
                rs.extend_from_slice(&sig.s);
                chains
                    .store_input_signature(&row.id, input.index, &rs)
                    .await?;
                if inputs.iter().filter(|i| i.signature.is_none()).count() > 1 {
                    return Ok(Next::Continue);
                }
                let inputs = chains.utxo_inputs(&row.id).await?;
                self.settle_utxo_signed(&row, &inputs).await
            }
            // Unreachable signers: wait; a refusal or a protocol failure:
            // failed (its coins are released when no input was signed).
            other => self.settle_signing(&row, other).await,
        }
    }

    /// Every input signed: the withdrawal is `signed` (the first input's
    /// signature stands for it on the withdrawal's row).
    async fn settle_utxo_signed(
        &self,
        row: &WithdrawalRow,
        inputs: &[crate::chain::utxo::InputRow],
    ) -> Result<Next, CoordError> {
        let first = inputs
            .first()
            .and_then(|i| i.signature.as_deref())
            .filter(|s| s.len() == 64)
            .ok_or_else(|| CoordError::Internal(format!("{}: input 0 is not signed", row.id)))?;
        let mut signers: Vec<String> = inputs.iter().flat_map(|i| i.signers.clone()).collect();
        signers.sort();
        signers.dedup();
        let mut r = [0u8; 32];
        let mut s = [0u8; 32];
        r.copy_from_slice(&first[..32]);
        s.copy_from_slice(&first[32..]);
        self.settle_signing(
            row,
            Ok(crate::cluster::SignOutcome {
                r,
                s,
                recovery_id: 0,
                signers,
                mode: "presignature".into(),
                presig_id: inputs
                    .first()
                    .and_then(|i| i.presig_id.clone())
                    .unwrap_or_default(),
                elapsed: std::time::Duration::ZERO,
            }),
        )
        .await
    }

    /// signed → broadcast → confirmed | failed on a UTXO chain.
    async fn utxo_after_signed(
        &self,
        row: &WithdrawalRow,
        chains: &Chains,
        chain: &UtxoChain,
    ) -> Result<Next, CoordError> {
        let key = self.key(row).await?;
        let wallet_key = key.public_key.clone().unwrap_or_default();
        if row.state()? == State::Signed {
            let started = std::time::Instant::now();
            let (_, txid) = chains
                .assemble_utxo(chain, &row.payment(), &wallet_key)
                .await?;
            stages::since(Stage::Broadcast, started);
            return self.broadcasting(row, &txid).await;
        }
        let tracked = chains.track_utxo(chain, &row.payment(), &wallet_key).await;
        self.settle_tracked(row, chain.settings.confirmations, tracked)
            .await
    }
}
