//! What the transparency log says, as far as this signer has witnessed it.
//!
//! Every checkpoint the signer co-signs comes with the entries it adds; the
//! witness checks that they hash to the checkpoint's root and applies them
//! here, in order. So the facts below come from the one log every signer
//! witnesses, not from what the coordinator chooses to forward to this
//! signer: two signers (or two disjoint signer sets) see the same cancels,
//! rejections, signing sessions and policy activations.

use std::collections::BTreeMap;

use custos_audit::entry::Verdict;
use custos_audit::{Entry, EntryBody};
use custos_policy::{Amount, HistoryEntry};
use serde::{Deserialize, Serialize};

/// The newest policy activation in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedPolicy {
    /// Entry index.
    pub index: u64,
    /// Bundle version.
    pub version: u64,
    /// Policy hash, hex.
    pub hash: String,
}

/// The first signing session logged for a withdrawal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedSigning {
    /// Entry index.
    pub index: u64,
    /// Key that signs.
    pub key_id: String,
    /// Signer set.
    pub participants: Vec<String>,
    /// Presignature named.
    pub presignature_id: Option<String>,
    /// Digest, hex.
    pub digest: String,
    /// This signer's clock (Unix seconds) when it witnessed the entry.
    pub witnessed_at: i64,
}

/// The request as logged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedRequest {
    /// Key (wallet).
    pub key_id: String,
    /// Chain.
    pub chain: String,
    /// Asset.
    pub asset: String,
    /// Destination.
    pub destination: String,
    /// Amount in base units, decimal.
    pub amount: String,
    /// Requesting client.
    pub requested_by: String,
}

/// Everything the log says about one withdrawal that a signer acts on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedWithdrawal {
    /// The request.
    #[serde(default)]
    pub requested: Option<LoggedRequest>,
    /// First cancellation: (entry index, by whom).
    #[serde(default)]
    pub cancelled: Option<(u64, String)>,
    /// First rejection: (entry index, approver).
    #[serde(default)]
    pub rejected: Option<(u64, String)>,
    /// The first signing session.
    #[serde(default)]
    pub first_signing: Option<LoggedSigning>,
}

/// The log prefix `[0, size)` as this signer witnessed it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogView {
    /// Entries applied.
    pub size: u64,
    /// The newest policy activation.
    #[serde(default)]
    pub newest_policy: Option<LoggedPolicy>,
    /// Per withdrawal id.
    #[serde(default)]
    pub withdrawals: BTreeMap<String, LoggedWithdrawal>,
}

impl LogView {
    /// Applies the next entry (its index must be `size`); `now` is this
    /// signer's clock.
    pub fn apply(&mut self, entry: &Entry, now: i64) -> Result<(), String> {
        if entry.index != self.size {
            return Err(format!(
                "entry claims index {}, the next is {}",
                entry.index, self.size
            ));
        }
        self.size += 1;
        let index = entry.index;
        match &entry.body {
            EntryBody::PolicyActivated {
                policy_hash,
                policy_version,
                ..
            } if self
                .newest_policy
                .as_ref()
                .is_none_or(|p| *policy_version >= p.version) =>
            {
                self.newest_policy = Some(LoggedPolicy {
                    index,
                    version: *policy_version,
                    hash: hex::encode(policy_hash),
                });
            }
            EntryBody::WithdrawalRequested {
                withdrawal_id,
                key_id,
                chain,
                asset,
                destination,
                amount,
                requested_by,
                ..
            } => {
                let w = self.withdrawals.entry(withdrawal_id.clone()).or_default();
                if w.requested.is_none() {
                    w.requested = Some(LoggedRequest {
                        key_id: key_id.clone(),
                        chain: chain.clone(),
                        asset: asset.clone(),
                        destination: destination.clone(),
                        amount: amount.clone(),
                        requested_by: requested_by.clone(),
                    });
                }
            }
            EntryBody::Cancelled {
                withdrawal_id,
                cancelled_by,
                ..
            } => {
                let w = self.withdrawals.entry(withdrawal_id.clone()).or_default();
                w.cancelled.get_or_insert((index, cancelled_by.clone()));
            }
            EntryBody::Approval {
                withdrawal_id,
                approver_id,
                verdict: Verdict::Reject,
                ..
            } => {
                let w = self.withdrawals.entry(withdrawal_id.clone()).or_default();
                w.rejected.get_or_insert((index, approver_id.clone()));
            }
            EntryBody::SigningSession {
                withdrawal_id,
                key_id,
                participants,
                presignature_id,
                message_digest,
                ..
            } => {
                let w = self.withdrawals.entry(withdrawal_id.clone()).or_default();
                w.first_signing.get_or_insert(LoggedSigning {
                    index,
                    key_id: key_id.clone(),
                    participants: participants.clone(),
                    presignature_id: presignature_id.clone(),
                    digest: hex::encode(message_digest),
                    witnessed_at: now,
                });
            }
            _ => {}
        }
        Ok(())
    }

    /// The log's record of `id`, if any.
    pub fn withdrawal(&self, id: &str) -> Option<&LoggedWithdrawal> {
        self.withdrawals.get(id)
    }

    /// Withdrawals with a logged signing session witnessed since `since`
    /// (this signer's clock), as velocity history: whichever signer set
    /// signed them, they count here.
    pub fn spends_since(&self, since: i64) -> Vec<HistoryEntry> {
        self.withdrawals
            .iter()
            .filter_map(|(id, w)| {
                let s = w.first_signing.as_ref()?;
                let r = w.requested.as_ref()?;
                if s.witnessed_at < since {
                    return None;
                }
                Some(HistoryEntry {
                    id: id.clone(),
                    wallet: r.key_id.clone(),
                    chain: r.chain.clone(),
                    asset: r.asset.clone(),
                    destination: r.destination.clone(),
                    initiator: r.requested_by.clone(),
                    amount: Amount(r.amount.parse().ok()?),
                    // The request entry carries no fee cap; a signer's own
                    // record of the same withdrawal (with its fee cap) is
                    // preferred where it has one.
                    fee_cap: Amount(0),
                    at: custos_policy::Timestamp(s.witnessed_at),
                })
            })
            .collect()
    }
}
