//! `signing` and after on UTXO chains: one signing session per input (see
//! [`crate::chain::utxo`]), then broadcast and tracking to confirmation,
//! with replace-by-fee of a transaction that stays unconfirmed
//! ([`crate::chain::utxo_bump`]) and batched payouts
//! ([`crate::chain::utxo_batch`]: the lead's step drives every withdrawal
//! its transaction pays, members first).

use super::driver::FamilyDriver;
use super::{Engine, Next, PresigUse};
use crate::chain::utxo::{Inputs, UtxoChain};
use crate::chain::{Chains, Pending, Tracked};
use crate::db::KeyRow;
use crate::error::CoordError;
use crate::stages::{self, Stage};
use crate::withdrawal::machine::Event;
use crate::withdrawal::state::State;
use crate::withdrawal::store::{Val, WithdrawalRow};

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
        if let Some(slot) = chains.batch_slot(&row.id).await?
            && slot.lead_id != row.id
        {
            return engine.follow_lead(row, &slot.lead_id).await;
        }
        engine.sign_utxo(row, key, chains, chain).await
    }

    async fn publish(&self, engine: &Engine, row: &WithdrawalRow) -> Result<Next, CoordError> {
        let (chains, chain) = Self::chain(engine, row)?;
        if let Some(slot) = chains.batch_slot(&row.id).await?
            && slot.lead_id != row.id
        {
            return engine.follow_lead(row, &slot.lead_id).await;
        }
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
            if !chain.batch_window_over(&row.id) {
                self.note(
                    &row,
                    State::Signing,
                    &format!(
                        "waiting up to {} ms for other payouts of wallet {} to share its transaction",
                        chain.settings.batch_window_ms, row.wallet
                    ),
                )
                .await?;
                return Ok(Next::Wait);
            }
            match self.prepare_batch(&row, chains, chain, &wallet_key).await? {
                Some(note) => {
                    self.note(&row, State::Signing, &note).await?;
                    return Ok(Next::Wait);
                }
                None => row = self.get(&row.id).await?,
            }
        }
        let rows = self.batch_rows(chains, &row).await?;
        let payments: Vec<_> = rows.iter().map(WithdrawalRow::payment).collect();
        let psbt = row.unsigned_tx.as_deref().unwrap_or_default();
        let checked = chains.checked_utxo(chain, &payments, psbt, &wallet_key)?;
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
            return self.settle_utxo_signed(&rows, &inputs, key.scheme).await;
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
        auth.batch = self.member_authorizations(&rows).await?;
        let started = std::time::Instant::now();
        let signed = self
            .audited_sign(&row, key, &digest, &presig, &signers, auth)
            .await?;
        stages::since(Stage::Signing, started);
        match signed {
            Ok(sig) => {
                let rs = super::input_signature(&sig);
                chains
                    .store_input_signature(Inputs::Current, &row.id, input.index, &rs)
                    .await?;
                if inputs.iter().filter(|i| i.signature.is_none()).count() > 1 {
                    return Ok(Next::Continue);
                }
                let inputs = chains.utxo_inputs(&row.id).await?;
                self.settle_utxo_signed(&rows, &inputs, key.scheme).await
            }
            // Unreachable signers: wait; a refusal or a protocol failure:
            // failed (its coins are released when no input was signed).
            other => self.settle_signing(&row, other).await,
        }
    }

    /// Every input signed: the withdrawals it pays are `signed`, the
    /// members first (the first input's signature, of the wallet key's
    /// `scheme`, stands for the transaction on each row).
    async fn settle_utxo_signed(
        &self,
        rows: &[WithdrawalRow],
        inputs: &[crate::chain::utxo::InputRow],
        scheme: custos_mpc::SchemeId,
    ) -> Result<Next, CoordError> {
        let row = rows
            .first()
            .ok_or_else(|| CoordError::Internal("a transaction pays nobody".into()))?;
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
        let outcome = crate::cluster::SignOutcome {
            r,
            s,
            recovery_id: 0,
            scheme,
            signature: first.to_vec(),
            signers,
            mode: "presignature".into(),
            presig_id: inputs
                .first()
                .and_then(|i| i.presig_id.clone())
                .unwrap_or_default(),
            elapsed: std::time::Duration::ZERO,
        };
        for m in rows.iter().skip(1) {
            if m.state()? == State::Signing {
                self.settle_signing(m, Ok(outcome.clone())).await?;
            }
        }
        self.settle_signing(row, Ok(outcome)).await
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
        let rows = self.batch_rows(chains, row).await?;
        let payments: Vec<_> = rows.iter().map(WithdrawalRow::payment).collect();
        if row.state()? == State::Signed {
            let started = std::time::Instant::now();
            let (_, txid) = chains.assemble_utxo(chain, &payments, &wallet_key).await?;
            stages::since(Stage::Broadcast, started);
            for m in rows.iter().skip(1) {
                if m.state()? == State::Signed {
                    self.broadcasting(m, &txid).await?;
                }
            }
            return self.broadcasting(row, &txid).await;
        }
        let tracked = chains.track_utxo(chain, &row.payment(), &wallet_key).await;
        match &tracked {
            Ok(Tracked::Stuck(why)) => {
                return self.bump_utxo(&rows, &key, chains, chain, why).await;
            }
            Ok(Tracked::Confirmed {
                hash,
                block,
                gas_used,
                fee_paid,
            }) if rows.len() > 1 => {
                // Each withdrawal pays its share of the fee (the builder's
                // and the signers' rule), its ledger settled with it.
                let total = u64::try_from(*fee_paid).unwrap_or(u64::MAX);
                let shares = custos_chains::utxo::fees::fee_shares(total, rows.len());
                for (m, share) in rows.iter().zip(&shares).skip(1) {
                    if m.state()? == State::Broadcast {
                        let mine = Ok(Tracked::Confirmed {
                            hash: hash.clone(),
                            block: *block,
                            gas_used: *gas_used,
                            fee_paid: u128::from(*share),
                        });
                        self.settle_tracked(m, chain.settings.confirmations, mine)
                            .await?;
                    }
                }
                let lead = Ok(Tracked::Confirmed {
                    hash: hash.clone(),
                    block: *block,
                    gas_used: *gas_used,
                    fee_paid: u128::from(shares.first().copied().unwrap_or(total)),
                });
                return self
                    .settle_tracked(row, chain.settings.confirmations, lead)
                    .await;
            }
            Ok(Tracked::Conflicted(why)) => {
                for m in rows.iter().skip(1) {
                    if m.state()? == State::Broadcast {
                        let why = Ok(Tracked::Conflicted(why.clone()));
                        self.settle_tracked(m, chain.settings.confirmations, why)
                            .await?;
                    }
                }
            }
            _ => {}
        }
        self.settle_tracked(row, chain.settings.confirmations, tracked)
            .await
    }

    /// Builds the transaction of `lead` (once its batching window is over),
    /// with the other withdrawals ready to be paid from its wallet when
    /// batching is on; when the batch cannot be paid (coins), `lead` alone.
    /// `Some(note)`: wait.
    async fn prepare_batch(
        &self,
        lead: &WithdrawalRow,
        chains: &Chains,
        chain: &UtxoChain,
        wallet_key: &[u8],
    ) -> Result<Option<String>, CoordError> {
        let mut payments = vec![lead.payment()];
        if chain.settings.batch_window_ms > 0 {
            let room = chain.settings.batch_max_payouts.saturating_sub(1);
            for id in chains
                .batch_candidates(&lead.payment(), &lead.chain, room)
                .await?
            {
                payments.push(self.get(&id).await?.payment());
            }
        }
        let mut built = chains.prepare_utxo(chain, &payments, wallet_key).await;
        if payments.len() > 1 && matches!(built, Err(Pending::Wait(_))) {
            payments.truncate(1);
            built = chains.prepare_utxo(chain, &payments, wallet_key).await;
        }
        match built {
            Ok(_) => {
                let ids: Vec<String> = payments.into_iter().map(|p| p.id).collect();
                if ids.len() > 1 {
                    tracing::info!(lead = %lead.id, members = ?&ids[1..], "withdrawals batched into one transaction");
                }
                chain.batch_window_done(&ids);
                Ok(None)
            }
            Err(Pending::Storage(e)) => Err(e),
            Err(Pending::Wait(note)) => Ok(Some(note)),
        }
    }

    /// The withdrawals `lead`'s transaction pays, in output order (`lead`
    /// first; only `lead` when it is in no batch).
    async fn batch_rows(
        &self,
        chains: &Chains,
        lead: &WithdrawalRow,
    ) -> Result<Vec<WithdrawalRow>, CoordError> {
        let mut rows = vec![lead.clone()];
        for id in chains.batch_members(&lead.id).await? {
            rows.push(self.get(&id).await?);
        }
        Ok(rows)
    }

    /// What the signers get for the other withdrawals a transaction pays
    /// (`rows[1..]`): each one's own authorization, its decision's entry
    /// index (the proof is added with the lead's, at the same tree size).
    async fn member_authorizations(
        &self,
        rows: &[WithdrawalRow],
    ) -> Result<Vec<custos_proto::signer::WithdrawalAuthorization>, CoordError> {
        let mut out = Vec::new();
        for m in rows.iter().skip(1) {
            let mut auth = self.authorization(m).await?;
            auth.unsigned_tx = Vec::new();
            auth.latest_policy_document = Vec::new();
            auth.latest_policy_signatures = Vec::new();
            auth.decision_entry_index = m
                .decision_index
                .and_then(|i| u64::try_from(i).ok())
                .ok_or_else(|| CoordError::Internal(format!("{} has no decision entry", m.id)))?;
            out.push(auth);
        }
        Ok(out)
    }

    /// A member's step: its lead drives the transaction; a member only
    /// fails when its lead failed before paying it.
    pub(super) async fn follow_lead(
        &self,
        row: &WithdrawalRow,
        lead_id: &str,
    ) -> Result<Next, CoordError> {
        let lead = self.get(lead_id).await?;
        let lead_state = lead.state()?;
        let event = match row.state()? {
            State::Signing => Event::SigningFailed,
            State::Broadcast => Event::ChainFailed,
            _ => return Ok(Next::Wait),
        };
        if lead_state.is_terminal() && lead_state != State::Confirmed {
            let detail = format!(
                "paid by the transaction of withdrawal {lead_id}, which ended {}: {}",
                lead_state.as_str(),
                lead.reason.as_deref().unwrap_or("no reason given")
            );
            return self
                .move_to(
                    row,
                    event,
                    vec![("reason", Val::Text(Some(detail.clone())))],
                    &detail,
                )
                .await;
        }
        self.note(
            row,
            row.state()?,
            &format!("paid in one transaction with withdrawal {lead_id}, whose steps drive it"),
        )
        .await?;
        Ok(Next::Wait)
    }

    /// Replaces a stuck transaction by fee: the same coins and outputs, a
    /// higher fee from the change within the cap, each input signed in its
    /// own session by signers that signed the replaced transaction (each
    /// checks that the replacement conflicts with what it signed and pays
    /// more); swapped in once every input is signed. A refusal keeps the
    /// current version and tries again after `resubmit_after_secs`.
    async fn bump_utxo(
        &self,
        rows: &[WithdrawalRow],
        key: &KeyRow,
        chains: &Chains,
        chain: &UtxoChain,
        why: &str,
    ) -> Result<Next, CoordError> {
        let row = rows
            .first()
            .ok_or_else(|| CoordError::Internal("a transaction pays nobody".into()))?;
        if let Some(next) = self.wait_if_locked(row, State::Broadcast, key).await? {
            return Ok(next);
        }
        let now = custos_policy::Timestamp(crate::clock::now_secs());
        let rule = row.rule_id.as_deref().unwrap_or_default();
        if custos_policy::fee_bump_needs_approval(&self.policy.in_force(now), rule) {
            // Fee-bump statements describe EVM replacements; signers refuse
            // a UTXO bump under such a rule, so none is asked for.
            self.note(
                row,
                State::Broadcast,
                &format!("{why}: rule {rule} wants fee bumps re-approved, which UTXO chains do not offer; waiting at the current fee"),
            )
            .await?;
            chains.abandon_utxo_bump(&row.id).await?;
            return Ok(Next::Wait);
        }
        let wallet_key = key.public_key.clone().unwrap_or_default();
        let payments: Vec<_> = rows.iter().map(WithdrawalRow::payment).collect();
        let psbt = match chains
            .prepare_utxo_bump(chain, &payments, &wallet_key)
            .await
        {
            Ok(b) => b,
            Err(Pending::Storage(e)) => return Err(e),
            Err(Pending::Wait(note)) => {
                self.note(row, State::Broadcast, &note).await?;
                return Ok(Next::Wait);
            }
        };
        let checked = chains.checked_utxo(chain, &payments, &psbt, &wallet_key)?;
        let inputs = chains.inputs_of(Inputs::Replacement, &row.id).await?;
        if inputs.len() != checked.digests.len() {
            return Err(CoordError::Internal(format!(
                "{}: {} stored replacement inputs for a transaction of {}",
                row.id,
                inputs.len(),
                checked.digests.len()
            )));
        }
        let Some(input) = inputs.iter().find(|i| i.signature.is_none()) else {
            return self
                .swap_utxo_bump(rows, chains, chain, &psbt, &inputs, &wallet_key, why)
                .await;
        };
        let (presig, signers) = match &input.presig_id {
            Some(p) => (p.clone(), input.signers.clone()),
            None => {
                // The signers of the current version's first input: each of
                // them signed the transaction being replaced.
                let current = chains.utxo_inputs(&row.id).await?;
                let original = current
                    .first()
                    .map(|i| i.signers.clone())
                    .unwrap_or_default();
                let target = PresigUse::BumpInput(chains, &row.id, input.index, &original);
                return match self.take_presig(key, target).await? {
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
        let mut auth = self.bump_authorization(row).await?;
        auth.unsigned_tx = psbt.clone();
        auth.input_index = input.index;
        auth.batch = self.member_authorizations(rows).await?;
        tracing::info!(withdrawal = %row.id, %why, input = input.index, presig = %presig, "signing a UTXO fee bump");
        match self
            .audited_sign(row, key, &digest, &presig, &signers, auth)
            .await?
        {
            Ok(sig) => {
                let rs = super::input_signature(&sig);
                chains
                    .store_input_signature(Inputs::Replacement, &row.id, input.index, &rs)
                    .await?;
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
                chains.abandon_utxo_bump(&row.id).await?;
                Ok(Next::Wait)
            }
        }
    }

    /// Every input of the replacement signed: assembled (each signature
    /// verified), logged as broadcast, swapped in; the next step sends it.
    #[allow(clippy::too_many_arguments)]
    async fn swap_utxo_bump(
        &self,
        rows: &[WithdrawalRow],
        chains: &Chains,
        chain: &UtxoChain,
        psbt: &[u8],
        inputs: &[crate::chain::utxo::InputRow],
        wallet_key: &[u8],
        why: &str,
    ) -> Result<Next, CoordError> {
        let row = rows
            .first()
            .ok_or_else(|| CoordError::Internal("a transaction pays nobody".into()))?;
        let payments: Vec<_> = rows.iter().map(WithdrawalRow::payment).collect();
        let checked = chains.checked_utxo(chain, &payments, psbt, wallet_key)?;
        let signatures: Vec<[u8; 64]> = inputs
            .iter()
            .map(|i| {
                i.signature
                    .as_deref()
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(|| {
                        CoordError::Internal(format!(
                            "{}: replacement input {} not signed",
                            row.id, i.index
                        ))
                    })
            })
            .collect::<Result<_, _>>()?;
        let signed = custos_chains::utxo::assemble_signed(&checked, &signatures, wallet_key)
            .map_err(|e| CoordError::Internal(format!("assembling the fee bump: {e}")))?;
        let txid = signed.txid.to_string();
        for r in rows {
            self.log_broadcast(r, &txid).await?;
        }
        let previous = row.tx_hash.clone().unwrap_or_default();
        if chains
            .commit_utxo_bump(&row.id, psbt, &signed.raw, &txid)
            .await?
        {
            self.note(
                row,
                State::Broadcast,
                &format!(
                    "{why}: replaced by {txid} (fee {} base units, same coins)",
                    checked.fee
                ),
            )
            .await?;
            tracing::info!(withdrawal = %row.id, %previous, replacement = %txid, fee = checked.fee, "UTXO fee bumped");
        }
        Ok(Next::Continue)
    }
}
