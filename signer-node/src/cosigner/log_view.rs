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
use custos_audit::refusal::Refusal;
use custos_audit::{Entry, EntryBody};
use custos_policy::{Amount, HistoryEntry};
use custos_risk::RiskRequest;
use serde::{Deserialize, Serialize};

/// How far the coordinator's clock may run behind this signer's: an entry
/// this signer first sees in a checkpoint was appended after the previous
/// checkpoint it co-signed, so it cannot be older than that (less this).
const CLOCK_SKEW_MS: u64 = 60_000;

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

/// The first transaction logged as prepared for a withdrawal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedPrepared {
    /// Entry index.
    pub index: u64,
    /// SHA-256 of the unsigned transaction, hex.
    pub tx_hash: String,
    /// This signer's clock (Unix seconds) when it witnessed the entry.
    pub witnessed_at: i64,
}

/// SHA-256 of an unsigned transaction, hex: how the view names it.
pub fn tx_hash(unsigned_tx: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(unsigned_tx))
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
    /// Entry index.
    #[serde(default)]
    pub index: u64,
    /// When it was logged, Unix ms: the coordinator's entry time, bounded by
    /// this signer's clock (see [`LogView::entry_time`]).
    #[serde(default)]
    pub at_ms: u64,
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
    /// The first session of each other digest signed for it (the other
    /// inputs of a transaction that spends several coins, and fee bumps).
    #[serde(default)]
    pub other_digests: Vec<LoggedSigning>,
    /// The coordinator's logged risk score (the first one).
    #[serde(default)]
    pub risk_score: Option<u32>,
    /// The first transaction prepared for it: a withdrawal paid in a batch
    /// has no signing session of its own, and this binds it to the batch.
    #[serde(default)]
    pub first_prepared: Option<LoggedPrepared>,
}

impl LoggedWithdrawal {
    /// When this signer first saw it committed to a transaction (its first
    /// signing session, else its first prepared transaction): (entry index,
    /// this signer's clock).
    pub fn committed(&self) -> Option<(u64, i64)> {
        self.first_signing
            .as_ref()
            .map(|s| (s.index, s.witnessed_at))
            .or_else(|| {
                self.first_prepared
                    .as_ref()
                    .map(|p| (p.index, p.witnessed_at))
            })
    }
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
    /// The first signing session naming each presignature, keyed
    /// `key_id/presignature_id`: a presignature is used once ever.
    #[serde(default)]
    pub presignatures: BTreeMap<String, u64>,
    /// This signer's clock (Unix ms) when it co-signed the last checkpoint.
    #[serde(default)]
    pub witnessed_ms: u64,
    /// The last entry time assigned (entry times never go backwards).
    #[serde(default)]
    pub last_at_ms: u64,
    /// Signers' refusals in the log: [`refusal_key`] (the refusal exactly
    /// as logged, with its signature) to its entry index, the newest [`MAX_REFUSALS`] kept (a signer
    /// looks up its own pending refusals here, which are recent).
    #[serde(default)]
    pub refusals: BTreeMap<String, u64>,
    /// Keys the log retired: key id to the index of its first `key_retired`
    /// entry. A retired key never signs again on this signer, and only a
    /// retirement seen here lets the coordinator ask for its share's
    /// destruction.
    #[serde(default)]
    pub retired_keys: BTreeMap<String, u64>,
}

/// Logged refusals remembered by [`LogView::refusals`].
const MAX_REFUSALS: usize = 4096;

/// The key of a refusal in [`LogView::refusals`]: SHA-256 of its signed
/// message and its signature (hex), so a logged entry that kept the
/// signature but changed a field does not count as this refusal.
pub fn refusal_key(refusal: &Refusal, signature: &[u8]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(refusal.message());
    h.update(signature);
    hex::encode(h.finalize())
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
        let at_ms = self.entry_time(entry.timestamp_ms, now);
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
                        index,
                        at_ms,
                    });
                }
            }
            EntryBody::RiskScored {
                withdrawal_id,
                score,
                ..
            } => {
                let w = self.withdrawals.entry(withdrawal_id.clone()).or_default();
                w.risk_score.get_or_insert(*score);
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
                if let Some(p) = presignature_id {
                    self.presignatures
                        .entry(format!("{key_id}/{p}"))
                        .or_insert(index);
                }
                let w = self.withdrawals.entry(withdrawal_id.clone()).or_default();
                let session = LoggedSigning {
                    index,
                    key_id: key_id.clone(),
                    participants: participants.clone(),
                    presignature_id: presignature_id.clone(),
                    digest: hex::encode(message_digest),
                    witnessed_at: now,
                };
                match &w.first_signing {
                    None => w.first_signing = Some(session),
                    Some(first)
                        if first.digest != session.digest
                            && !w.other_digests.iter().any(|s| s.digest == session.digest) =>
                    {
                        w.other_digests.push(session);
                    }
                    Some(_) => {}
                }
            }
            EntryBody::TransactionPrepared {
                withdrawal_id,
                unsigned_tx,
                ..
            } => {
                let w = self.withdrawals.entry(withdrawal_id.clone()).or_default();
                w.first_prepared.get_or_insert(LoggedPrepared {
                    index,
                    tx_hash: tx_hash(unsigned_tx),
                    witnessed_at: now,
                });
            }
            EntryBody::KeyRetired { key_id, .. } => {
                self.retired_keys.entry(key_id.clone()).or_insert(index);
            }
            EntryBody::SigningRefused { .. } => {
                if let Some((refusal, signature)) = Refusal::from_entry(&entry.body) {
                    self.refusals
                        .insert(refusal_key(&refusal, signature), entry.index);
                }
                while self.refusals.len() > MAX_REFUSALS {
                    let oldest = self
                        .refusals
                        .iter()
                        .min_by_key(|(_, i)| **i)
                        .map(|(k, _)| k.clone());
                    if let Some(k) = oldest {
                        self.refusals.remove(&k);
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The index of the entry that retired `key_id`, if the log retired it.
    pub fn retirement(&self, key_id: &str) -> Option<u64> {
        self.retired_keys.get(key_id).copied()
    }

    /// Whether the refusal with this signature is in the log.
    pub fn refusal_logged(&self, refusal: &Refusal, signature: &[u8]) -> bool {
        self.refusals.contains_key(&refusal_key(refusal, signature))
    }

    /// An entry's time as this signer accepts it: the coordinator's
    /// timestamp, but never later than this signer's clock (`now`, seconds),
    /// never earlier than the previous checkpoint it co-signed (less
    /// [`CLOCK_SKEW_MS`]), and never before the entry before it. So a
    /// coordinator cannot date history out of a velocity window.
    fn entry_time(&mut self, timestamp_ms: u64, now: i64) -> u64 {
        let upper = u64::try_from(now.saturating_add(1))
            .unwrap_or(0)
            .saturating_mul(1000);
        let floor = self
            .last_at_ms
            .max(self.witnessed_ms.saturating_sub(CLOCK_SKEW_MS));
        let at = timestamp_ms.max(floor).min(upper);
        self.last_at_ms = self.last_at_ms.max(at);
        at
    }

    /// Marks the end of a checkpoint's entries, co-signed at `now` (seconds).
    pub fn witnessed(&mut self, now: i64) {
        let ms = u64::try_from(now).unwrap_or(0).saturating_mul(1000);
        self.witnessed_ms = self.witnessed_ms.max(ms);
    }

    /// What this signer scores a withdrawal's risk on: the withdrawals whose
    /// signing session the log shows before `id`'s request (what the
    /// coordinator had seen signed when it scored it), each at its request
    /// time, and the time of `id`'s request (`None` when it is not logged).
    pub fn risk_inputs(&self, id: &str) -> (Vec<RiskRequest>, Option<u64>) {
        let request = self.withdrawal(id).and_then(|w| w.requested.as_ref());
        let before = request.map_or(self.size, |r| r.index);
        let history = self
            .withdrawals
            .iter()
            .filter(|(other, _)| other.as_str() != id)
            .filter_map(|(_, w)| {
                let (index, _) = w.committed()?;
                let r = w.requested.as_ref()?;
                (index < before).then(|| {
                    Some(RiskRequest {
                        wallet: r.key_id.clone(),
                        chain: r.chain.clone(),
                        asset: r.asset.clone(),
                        destination: r.destination.to_lowercase(),
                        amount: r.amount.parse().ok()?,
                        at_ms: r.at_ms,
                    })
                })?
            })
            .collect();
        (history, request.map(|r| r.at_ms))
    }

    /// The first signing-session entry that names presignature
    /// `presignature_id` of key `key_id`.
    pub fn presignature_use(&self, key_id: &str, presignature_id: &str) -> Option<u64> {
        self.presignatures
            .get(&format!("{key_id}/{presignature_id}"))
            .copied()
    }

    /// The first signing session logged for digest `digest` (hex) of `id`.
    pub fn first_session_for(&self, id: &str, digest: &str) -> Option<&LoggedSigning> {
        let w = self.withdrawal(id)?;
        w.first_signing
            .iter()
            .chain(&w.other_digests)
            .find(|s| s.digest == digest)
    }

    /// The log's record of `id`, if any.
    pub fn withdrawal(&self, id: &str) -> Option<&LoggedWithdrawal> {
        self.withdrawals.get(id)
    }

    /// Withdrawals with a logged signing session (or, paid in a batch, a
    /// prepared transaction) witnessed since `since` (this signer's clock),
    /// as velocity history: whichever signer set signed them, they count here.
    pub fn spends_since(&self, since: i64) -> Vec<HistoryEntry> {
        self.withdrawals
            .iter()
            .filter_map(|(id, w)| {
                let (_, witnessed_at) = w.committed()?;
                let r = w.requested.as_ref()?;
                if witnessed_at < since {
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
                    at: custos_policy::Timestamp(witnessed_at),
                })
            })
            .collect()
    }
}
