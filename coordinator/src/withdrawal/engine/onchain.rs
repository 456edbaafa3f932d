//! After `signed`, what every chain family shares: the broadcast entry
//! logged before a transaction is sent, and what a look at a sent
//! transaction does to the withdrawal (confirmed, reverted, conflicted,
//! still waiting).

use custos_audit::EntryBody;

use super::{Engine, Next};
use crate::chain::{Pending, Tracked};
use crate::error::CoordError;
use crate::withdrawal::machine::Event;
use crate::withdrawal::state::State;
use crate::withdrawal::store::{Val, WithdrawalRow};

impl Engine {
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
    pub(super) async fn bump_authorization(
        &self,
        row: &WithdrawalRow,
    ) -> Result<custos_proto::signer::WithdrawalAuthorization, CoordError> {
        let mut auth = self.authorization(row).await?;
        let now = custos_policy::Timestamp(crate::clock::now_secs());
        let hash = self.policy.in_force(now).policy().hash();
        let bundle = self.policy.bundle(&hash).ok_or_else(|| {
            CoordError::precondition("policy", hash.to_string(), "is in force but has no bundle")
        })?;
        auth.policy_document = bundle.document.clone();
        auth.policy_signatures = bundle.signatures.clone();
        Ok(auth)
    }

    /// The audit entry for a transaction about to be sent (before it is).
    pub(super) async fn log_broadcast(
        &self,
        row: &WithdrawalRow,
        hash: &str,
    ) -> Result<(), CoordError> {
        self.audit
            .append(EntryBody::TransactionBroadcast {
                withdrawal_id: row.id.clone(),
                chain: row.chain.clone(),
                txid: hash.to_owned(),
            })
            .await
            .map(|_| ())
    }
}
