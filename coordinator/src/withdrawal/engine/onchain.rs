//! After `signed`, on chains with an adapter: broadcast, confirmation
//! tracking, fee bumps of stuck transactions, and failure (receipt status 0,
//! or the nonce used by a transaction that is not this withdrawal's).

use custos_audit::EntryBody;

use super::bump_quorum::BumpQuorum;
use super::{Engine, Next, PresigUse};
use crate::chain::bump::SignedBump;
use crate::chain::{Chains, EvmChain, Pending, Tracked};
use crate::error::CoordError;
use crate::stages::{self, Stage};
use crate::withdrawal::machine::Event;
use crate::withdrawal::state::State;
use crate::withdrawal::store::{Val, WithdrawalRow};

impl Engine {
    /// signed → broadcast → confirmed | failed, for chains with an adapter.
    pub(super) async fn chain_after_signed(&self, row: &WithdrawalRow) -> Result<Next, CoordError> {
        if let Some((chains, chain)) = self.utxo_chain(&row.chain) {
            return self.utxo_after_signed(row, chains, chain).await;
        }
        let Some((chains, chain)) = self.evm_chain(&row.chain) else {
            return Ok(Next::Wait);
        };
        if row.unsigned_tx.as_deref().is_none_or(<[u8]>::is_empty) {
            return Ok(Next::Wait);
        }
        if row.state()? == State::Signed {
            let key = self.key(row).await?;
            let started = std::time::Instant::now();
            let (_, hash) = chains
                .assemble(
                    &row.payment(),
                    row.stored_signature(),
                    key.address.as_deref().unwrap_or_default(),
                )
                .await?;
            stages::since(Stage::Broadcast, started);
            return self.broadcasting(row, &hash).await;
        }
        let tracked = chains.track(chain, &row.payment()).await;
        if let Ok(Tracked::Stuck(why)) = &tracked {
            return self.bump_fee(row, chains, chain, why).await;
        }
        self.settle_tracked(row, chain.settings.confirmations, tracked)
            .await
    }

    /// signed → broadcast: the signed transaction `hash` is logged before
    /// it is sent (the next step sends it).
    pub(super) async fn broadcasting(
        &self,
        row: &WithdrawalRow,
        hash: &str,
    ) -> Result<Next, CoordError> {
        self.log_broadcast(row, hash).await?;
        self.apply(
            row,
            Event::Broadcast,
            vec![("tx_hash", Val::Text(Some(hash.to_owned())))],
            &format!("broadcasting {hash}"),
        )
        .await?;
        Ok(Next::Continue)
    }

    /// What one look at a broadcast transaction does to the withdrawal
    /// (`confirmations`: the chain's setting, for the log).
    pub(super) async fn settle_tracked(
        &self,
        row: &WithdrawalRow,
        confirmations: u64,
        tracked: Result<Tracked, Pending>,
    ) -> Result<Next, CoordError> {
        match tracked {
            Ok(Tracked::Waiting(note)) => {
                self.note(row, State::Broadcast, &note).await?;
                Ok(Next::Wait)
            }
            Ok(Tracked::Stuck(why)) => {
                self.note(row, State::Broadcast, &why).await?;
                Ok(Next::Wait)
            }
            Ok(Tracked::Confirmed {
                hash,
                block,
                gas_used,
                fee_paid,
            }) => {
                self.audit
                    .append(EntryBody::Confirmed {
                        withdrawal_id: row.id.clone(),
                        chain: row.chain.clone(),
                        txid: hash.clone(),
                        block_height: block,
                        confirmations: u32::try_from(confirmations).unwrap_or(u32::MAX),
                    })
                    .await?;
                self.apply(
                    row,
                    Event::Confirmed,
                    vec![
                        ("fee_paid", Val::Text(Some(fee_paid.to_string()))),
                        ("tx_hash", Val::Text(Some(hash.clone()))),
                    ],
                    &format!("{hash} confirmed in block {block} (gas used {gas_used})"),
                )
                .await?;
                Ok(Next::Continue)
            }
            Ok(Tracked::Reverted { hash, block }) => {
                let detail = format!(
                    "{hash} reverted in block {block} (receipt status 0): the transfer did not happen; the fee was paid"
                );
                self.move_to(
                    row,
                    Event::ChainFailed,
                    vec![
                        ("reason", Val::Text(Some(detail.clone()))),
                        ("tx_hash", Val::Text(Some(hash))),
                    ],
                    &detail,
                )
                .await
            }
            Ok(Tracked::NonceTaken { nonce, mined }) => {
                let detail = format!(
                    "nonce {nonce} of wallet {} was used by a transaction that is not this withdrawal's (the account has {mined} mined transactions): none of its versions can be mined; investigate the wallet key",
                    row.wallet
                );
                tracing::error!(withdrawal = %row.id, nonce, "{detail}");
                self.move_to(
                    row,
                    Event::ChainFailed,
                    vec![("reason", Val::Text(Some(detail.clone())))],
                    &detail,
                )
                .await
            }
            Ok(Tracked::Conflicted(detail)) => {
                tracing::error!(withdrawal = %row.id, "{detail}");
                self.move_to(
                    row,
                    Event::ChainFailed,
                    vec![("reason", Val::Text(Some(detail.clone())))],
                    &detail,
                )
                .await
            }
            Err(Pending::Storage(e)) => Err(e),
            Err(Pending::Wait(note)) => {
                self.note(row, State::Broadcast, &note).await?;
                Ok(Next::Wait)
            }
        }
    }

    /// What the signers get for a fee bump: the withdrawal's authorization
    /// with the policy in force now (signers judge a bump by it, not by the
    /// policy of the original decision).
    async fn bump_authorization(
        &self,
        row: &WithdrawalRow,
    ) -> Result<custos_proto::signer::WithdrawalAuthorization, CoordError> {
        let mut auth = self.authorization(row).await?;
        let now = custos_policy::Timestamp(crate::clock::now_secs());
        let hash = self.policy.in_force(now).policy().hash();
        let bundle = self.policy.bundle(&hash).ok_or_else(|| {
            CoordError::FailedPrecondition(format!("policy in force {hash} has no bundle"))
        })?;
        auth.policy_document = bundle.document.clone();
        auth.policy_signatures = bundle.signatures.clone();
        Ok(auth)
    }

    /// The audit entry for a transaction about to be sent (before it is).
    async fn log_broadcast(&self, row: &WithdrawalRow, hash: &str) -> Result<(), CoordError> {
        self.audit
            .append(EntryBody::TransactionBroadcast {
                withdrawal_id: row.id.clone(),
                chain: row.chain.clone(),
                txid: hash.to_owned(),
            })
            .await
            .map(|_| ())
    }

    /// Replaces a stuck transaction: the same transfer at the same nonce
    /// with higher fees within the approved cap, signed by the signers (each
    /// checks it replaces what it signed), then sent by the next step. A
    /// refusal keeps the current version and tries again later.
    async fn bump_fee(
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
            Err(e @ (CoordError::Unavailable(_) | CoordError::DeadlineExceeded(_))) => {
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
