//! The EVM driver: an EIP-1559 transfer made at `signing` (its nonce taken
//! only then), one signing session, broadcast, tracking, and fee bumps of a
//! stuck transaction (same nonce, higher fees within the approved cap,
//! re-approved where the rule asks).

use super::bump_quorum::BumpQuorum;
use super::digest::stored_digest;
use super::driver::FamilyDriver;
use super::{Engine, Next, PresigUse};
use crate::chain::bump::SignedBump;
use crate::chain::{Chains, EvmChain, Pending, Tracked};
use crate::db::KeyRow;
use crate::error::CoordError;
use crate::stages::{self, Stage};
use crate::withdrawal::state::State;
use crate::withdrawal::store::WithdrawalRow;

/// Drives withdrawals on EVM chains.
pub(super) struct EvmDriver;

impl EvmDriver {
    fn chain<'e>(
        engine: &'e Engine,
        row: &WithdrawalRow,
    ) -> Result<(&'e Chains, &'e EvmChain), CoordError> {
        engine.evm_chain(&row.chain).ok_or_else(|| {
            CoordError::Internal(format!("{}: chain {} is not configured", row.id, row.chain))
        })
    }
}

#[tonic::async_trait]
impl FamilyDriver for EvmDriver {
    async fn sign(
        &self,
        engine: &Engine,
        row: &WithdrawalRow,
        key: &KeyRow,
    ) -> Result<Next, CoordError> {
        let mut row = row.clone();
        if row.unsigned_tx.is_none() {
            let (chains, chain) = Self::chain(engine, &row)?;
            // The transaction (and its nonce) is made only now (chain module docs).
            let asset = engine
                .asset(&row.chain, &row.asset)
                .cloned()
                .ok_or_else(|| {
                    CoordError::Internal(format!(
                        "asset {} on {} is no longer configured",
                        row.asset, row.chain
                    ))
                })?;
            let token = match asset.contract.as_deref() {
                None => None,
                Some(c) => Some(custos_chains::evm::address::parse_address(c).map_err(|e| {
                    CoordError::Internal(format!("asset {} contract: {e}", asset.symbol))
                })?),
            };
            match chains
                .prepare(
                    chain,
                    &row.payment(),
                    key.address.as_deref().unwrap_or_default(),
                    token,
                    asset.decimals,
                )
                .await
            {
                Ok(_) => row = engine.get(&row.id).await?,
                Err(Pending::Storage(e)) => return Err(e),
                Err(Pending::Wait(note)) => {
                    engine.note(&row, State::Signing, &note).await?;
                    return Ok(Next::Wait);
                }
            }
        }
        let digest = match row.unsigned_tx.as_deref().filter(|t| !t.is_empty()) {
            // Signers sign the transaction's own digest (they recompute it).
            Some(tx) => custos_chains::evm::tx::decode_unsigned(tx)
                .map(|u| custos_chains::evm::tx::signing_digest(&u))
                .map_err(|e| {
                    CoordError::Internal(format!("{}: stored transaction: {e}", row.id))
                })?,
            None => stored_digest(&row)?,
        };
        engine.sign_digest(&row, key, &digest).await
    }

    async fn publish(&self, engine: &Engine, row: &WithdrawalRow) -> Result<Next, CoordError> {
        if row.unsigned_tx.as_deref().is_none_or(<[u8]>::is_empty) {
            return Ok(Next::Wait);
        }
        let (chains, chain) = Self::chain(engine, row)?;
        if row.state()? == State::Signed {
            let key = engine.key(row).await?;
            let started = std::time::Instant::now();
            let (_, hash) = chains
                .assemble(
                    &row.payment(),
                    row.stored_signature(),
                    key.address.as_deref().unwrap_or_default(),
                )
                .await?;
            stages::since(Stage::Broadcast, started);
            return engine.broadcasting(row, &hash).await;
        }
        let tracked = chains.track(chain, &row.payment()).await;
        if let Ok(Tracked::Stuck(why)) = &tracked {
            return engine.bump_fee(row, chains, chain, why).await;
        }
        engine
            .settle_tracked(row, chain.settings.confirmations, tracked)
            .await
    }

    async fn release(&self, engine: &Engine, withdrawal_id: &str) -> Result<(), CoordError> {
        engine.chains.release_unsigned(withdrawal_id).await
    }
}

impl Engine {
    /// Replaces a stuck transaction: the same transfer at the same nonce
    /// with higher fees within the approved cap, signed by the signers (each
    /// checks it replaces what it signed), then sent by the next step. A
    /// refusal keeps the current version and tries again later.
    pub(super) async fn bump_fee(
        &self,
        row: &WithdrawalRow,
        chains: &Chains,
        chain: &EvmChain,
        why: &str,
    ) -> Result<Next, CoordError> {
        let key = self.key(row).await?;
        if let Some(next) = self.wait_if_locked(row, State::Broadcast, &key).await? {
            return Ok(next);
        }
        let unsigned_tx = match chains.prepare_bump(chain, &row.payment()).await {
            Ok(b) => b,
            Err(Pending::Storage(e)) => return Err(e),
            Err(Pending::Wait(note)) => {
                self.note(row, State::Broadcast, &note).await?;
                return Ok(Next::Wait);
            }
        };
        let stored = chains
            .stored(&row.id)
            .await?
            .ok_or_else(|| CoordError::Internal(format!("{} lost its transaction", row.id)))?;
        // Approvals first (when the rule wants them): no presignature is
        // reserved while approvers take their time.
        let bump_approvals = match self.bump_quorum(row, chains, &stored, &unsigned_tx).await? {
            BumpQuorum::NotNeeded => None,
            BumpQuorum::Met {
                approvals_json,
                expiry,
            } => Some((approvals_json, expiry)),
            BumpQuorum::Waiting(note) => {
                self.note(row, State::Broadcast, &note).await?;
                return Ok(Next::Wait);
            }
            BumpQuorum::Denied(note) => {
                self.note(row, State::Broadcast, &note).await?;
                chains.abandon_bump(&row.id).await?;
                return Ok(Next::Wait);
            }
        };
        if stored.bump_presig.is_none() {
            // The signers of the first signature: each checks that the bump
            // replaces what it signed.
            let original: Vec<String> =
                serde_json::from_str(row.signers.as_deref().unwrap_or("[]")).unwrap_or_default();
            match self
                .take_presig(&key, PresigUse::FeeBump(chains, &row.id, &original))
                .await?
            {
                Some(true) => {}
                Some(false) => return Ok(Next::Continue),
                None => return Ok(Next::Wait),
            }
        }
        let stored = chains
            .stored(&row.id)
            .await?
            .ok_or_else(|| CoordError::Internal(format!("{} lost its transaction", row.id)))?;
        let presig = stored.bump_presig.unwrap_or_default();
        let signers: Vec<String> =
            serde_json::from_str(stored.bump_signers.as_deref().unwrap_or("[]"))
                .unwrap_or_default();
        let digest = custos_chains::evm::tx::decode_unsigned(&unsigned_tx)
            .map(|u| custos_chains::evm::tx::signing_digest(&u))
            .map_err(|e| CoordError::Internal(format!("{}: fee bump: {e}", row.id)))?;
        let mut auth = self.bump_authorization(row).await?;
        auth.unsigned_tx = unsigned_tx.clone();
        if let Some((approvals_json, expiry)) = bump_approvals {
            auth.fee_bump_approvals_json = approvals_json;
            auth.fee_bump_expiry = expiry;
        }
        tracing::info!(withdrawal = %row.id, %why, presig = %presig, "signing a fee bump");
        match self
            .audited_sign(row, &key, &digest, &presig, &signers, auth)
            .await?
        {
            Ok(sig) => {
                let bump = SignedBump {
                    unsigned_tx,
                    r: sig.r,
                    s: sig.s,
                    recovery_id: sig.recovery_id,
                };
                let (raw, hash) =
                    Chains::assemble_bump(&bump, key.address.as_deref().unwrap_or_default())?;
                self.log_broadcast(row, &hash).await?;
                if chains.commit_bump(&row.id, &bump, &raw, &hash).await? {
                    let previous = stored.tx_hash.unwrap_or_default();
                    self.note(
                        row,
                        State::Broadcast,
                        &format!(
                            "{why}: replaced by {hash} (fee bump {}, same nonce {})",
                            stored.bumps + 1,
                            stored.nonce
                        ),
                    )
                    .await?;
                    tracing::info!(withdrawal = %row.id, %previous, replacement = %hash, "fee bumped");
                }
                Ok(Next::Continue)
            }
            Err(e) if e.is_transient() => {
                self.note(row, State::Broadcast, &format!("fee bump: {e}"))
                    .await?;
                Ok(Next::Wait)
            }
            Err(e) => {
                self.note(
                    row,
                    State::Broadcast,
                    &format!("fee bump refused, the current transaction stays: {e}"),
                )
                .await?;
                chains.abandon_bump(&row.id).await?;
                Ok(Next::Wait)
            }
        }
    }
}
