//! Batched payouts: one UTXO transaction paying several approved
//! withdrawals of one wallet, one output each (docs/SECURITY.md case 61).
//!
//! The signing request is the first withdrawal's (the lead's); the others
//! come with it in `batch`, each with everything its own signing request
//! would carry. Every member is verified as the lead is, on this signer's
//! own facts: its policy decision and approvals, its risk, velocity counted
//! with the payouts before it in the batch, its time lock on this signer's
//! clock, its decision in a checkpoint this signer co-signed, no cancel or
//! rejection in the log, and no other transaction for it (neither signed by
//! this signer nor first prepared for it in the log: a member has no
//! signing session of its own, so its first `transaction_prepared` entry is
//! what binds it to this transaction, whichever signer set is asked). The
//! transaction itself is checked against all of them at once: output `i`
//! pays withdrawal `i` exactly, each fee share within its own cap.

use custos_policy::{HistoryEntry, Withdrawal, intent_digest};
use custos_proto::signer::WithdrawalAuthorization;

use super::log_view::tx_hash;
use super::{Cosigner, NodeError, proof_hashes, refused};

/// Most payouts in one batch (the builder's limit too).
pub const MAX_BATCH: usize = custos_chains::utxo::build::MAX_PAYOUTS;

/// A batch member this signer verified.
#[derive(Clone, Debug)]
pub struct BatchMember {
    /// The withdrawal (its intent digest computed here).
    pub withdrawal: Withdrawal,
    /// Its approval statement's hash, hex.
    pub statement_hash: String,
    /// The rule it was approved under.
    pub rule_id: String,
}

/// The withdrawals paid with the lead `w`, in output order after it, as
/// shown (parsed, distinct, from the same wallet, chain and asset).
pub fn batch_withdrawals(
    w: &Withdrawal,
    a: &WithdrawalAuthorization,
) -> Result<Vec<Withdrawal>, NodeError> {
    if a.batch.is_empty() {
        return Ok(Vec::new());
    }
    if a.unsigned_tx.is_empty() {
        return Err(NodeError::InvalidRequest(
            "batch: withdrawals are batched only into a transaction, and unsigned_tx is empty"
                .into(),
        ));
    }
    if a.batch.len() + 1 > MAX_BATCH {
        return Err(NodeError::InvalidRequest(format!(
            "batch: {} payouts, at most {MAX_BATCH}",
            a.batch.len() + 1
        )));
    }
    let mut ids = std::collections::HashSet::from([w.id.clone()]);
    let mut out = Vec::with_capacity(a.batch.len());
    for (i, m) in a.batch.iter().enumerate() {
        let mw: Withdrawal = serde_json::from_slice(&m.withdrawal_json)
            .map_err(|e| NodeError::InvalidRequest(format!("batch[{i}].withdrawal: {e}")))?;
        if !ids.insert(mw.id.clone()) {
            return Err(NodeError::InvalidRequest(format!(
                "batch[{i}]: withdrawal {} is paid twice in one transaction",
                mw.id
            )));
        }
        if mw.wallet != w.wallet || mw.chain != w.chain || mw.asset != w.asset {
            return Err(refused(format!(
                "batch: withdrawal {} pays {} from {} on {}, not {} from {} on {}: a batch is one wallet's payouts of one asset",
                mw.id, mw.asset, mw.wallet, mw.chain, w.asset, w.wallet, w.chain
            )));
        }
        if !m.unsigned_tx.is_empty() || !m.batch.is_empty() || !m.signing_entry.is_empty() {
            return Err(NodeError::InvalidRequest(format!(
                "batch[{i}]: a member carries no transaction, signing entry or batch of its own"
            )));
        }
        out.push(mw);
    }
    Ok(out)
}

/// A withdrawal as velocity history at `now` (an earlier payout of the
/// same batch counts for the ones after it).
fn as_history(w: &Withdrawal, now: i64) -> HistoryEntry {
    HistoryEntry {
        id: w.id.clone(),
        wallet: w.wallet.clone(),
        chain: w.chain.clone(),
        asset: w.asset.clone(),
        destination: w.destination.clone(),
        initiator: w.initiator.clone(),
        amount: w.amount,
        fee_cap: w.fee_cap,
        at: custos_policy::Timestamp(now),
    }
}

/// The same error, saying which member it is about.
fn about(id: &str, e: NodeError) -> NodeError {
    match e {
        NodeError::Refused(m) => NodeError::Refused(format!("batch member {id}: {m}")),
        NodeError::Replay(m) => NodeError::Replay(format!("batch member {id}: {m}")),
        NodeError::InvalidRequest(m) => {
            NodeError::InvalidRequest(format!("batch member {id}: {m}"))
        }
        other => other,
    }
}

impl Cosigner {
    /// Velocity history for `w`, with `earlier` (payouts before it in its
    /// batch) counted and `later` (those after it) not.
    pub(super) fn history_with(
        &self,
        now: i64,
        w: &Withdrawal,
        earlier: &[Withdrawal],
        later: &[String],
    ) -> Result<Vec<HistoryEntry>, NodeError> {
        let mut history = self.history(now, &w.id)?;
        history.retain(|h| !later.contains(&h.id));
        for e in earlier {
            if !history.iter().any(|h| h.id == e.id) {
                history.push(as_history(e, now));
            }
        }
        Ok(history)
    }

    /// Verifies every member of the lead's batch (module docs); `lead` is
    /// the lead's withdrawal and `tx_digests` the transaction's digests.
    pub(super) fn verify_batch(
        &self,
        a: &WithdrawalAuthorization,
        lead: &Withdrawal,
        tx_digests: &[[u8; 32]],
        now: i64,
    ) -> Result<Vec<BatchMember>, NodeError> {
        if a.batch.is_empty() {
            return Ok(Vec::new());
        }
        let bundles = self
            .bundles
            .as_ref()
            .ok_or_else(|| refused("no admin set configured"))?;
        let shown = batch_withdrawals(lead, a)?;
        let ids: Vec<String> = shown.iter().map(|m| m.id.clone()).collect();
        let tx = hex::encode(&a.unsigned_tx);
        let mut earlier = vec![lead.clone()];
        let mut members = Vec::with_capacity(shown.len());
        for (i, (m_auth, mut m)) in a.batch.iter().zip(shown).enumerate() {
            let later = ids.get(i + 1..).unwrap_or_default();
            m.tx_digest = hex::encode(intent_digest(&m));
            let id = m.id.clone();
            let known = self.journal.get(&id);
            if let Some(s) = &known.signed
                && s.tx != tx
            {
                return Err(about(
                    &id,
                    NodeError::Replay(format!(
                        "already signed by this signer in another transaction (presignature {}); a withdrawal is paid once",
                        s.presig_id
                    )),
                ));
            }
            let authorization = self
                .verify_terms(bundles, &m, m_auth, now, &earlier, later)
                .map_err(|e| about(&id, e))?;
            let statement_hash = self
                .time_lock(&m, &known, &authorization, now)
                .map_err(|e| about(&id, e))?;
            self.check_member_log(a, m_auth, &m, &authorization.decision, tx_digests)
                .map_err(|e| about(&id, e))?;
            earlier.push(m.clone());
            members.push(BatchMember {
                withdrawal: m,
                statement_hash,
                rule_id: authorization.decision.rule_id.clone().unwrap_or_default(),
            });
        }
        Ok(members)
    }

    /// The log gate for a member: its decision in a checkpoint this signer
    /// co-signed (the lead's proof size), its request in view, and this
    /// transaction the first one prepared for it (and any signing session
    /// of its own over one of this transaction's inputs).
    fn check_member_log(
        &self,
        lead: &WithdrawalAuthorization,
        m: &WithdrawalAuthorization,
        w: &Withdrawal,
        decision: &custos_policy::Decision,
        tx_digests: &[[u8; 32]],
    ) -> Result<(), NodeError> {
        let witness = self.witness.as_ref().ok_or_else(|| {
            refused(
                "no audit log key configured ([cosigner] log_key): this signer signs no withdrawal",
            )
        })?;
        witness.check_decision(
            &m.decision_entry,
            m.decision_entry_index,
            &proof_hashes(&m.inclusion_proof, "decision")?,
            lead.proof_tree_size,
            &w.id,
            &decision.policy_hash.0,
            &m.rule_id,
        )?;
        let logged = witness
            .with_view(|v| v.withdrawal(&w.id).cloned())?
            .unwrap_or_default();
        if logged.requested.is_none() {
            return Err(refused(format!(
                "withdrawal {}: its request is not in this signer's view of the log",
                w.id
            )));
        }
        if let Some(first) = &logged.first_signing
            && !tx_digests.iter().any(|d| hex::encode(d) == first.digest)
        {
            return Err(NodeError::Replay(format!(
                "withdrawal {} was first logged for signing at entry {} over digest {}, which is no input of this transaction: a withdrawal is paid once, by one transaction",
                w.id, first.index, first.digest
            )));
        }
        let this = tx_hash(&lead.unsigned_tx);
        match &logged.first_prepared {
            Some(p) if p.tx_hash == this => Ok(()),
            Some(p) => Err(NodeError::Replay(format!(
                "withdrawal {} was first prepared in another transaction (log entry {}, sha256 {}): a withdrawal is paid once, by one transaction",
                w.id, p.index, p.tx_hash
            ))),
            None => Err(refused(format!(
                "withdrawal {}: no transaction_prepared entry for it in this signer's view of the log; a batch member is signed only once the log binds it to the transaction",
                w.id
            ))),
        }
    }

    /// For a fee bump of a batch (or another input of one): every member
    /// shown must be one this signer signed in the transaction being
    /// replaced (`previous_tx`, hex) or already in this replacement.
    pub(super) fn bumped_members(
        &self,
        lead: &Withdrawal,
        a: &WithdrawalAuthorization,
        previous_tx: &str,
    ) -> Result<Vec<BatchMember>, NodeError> {
        let next = hex::encode(&a.unsigned_tx);
        batch_withdrawals(lead, a)?
            .into_iter()
            .map(|mut m| {
                let known = self.journal.get(&m.id);
                let Some(s) = known.signed.filter(|s| s.tx == previous_tx || s.tx == next) else {
                    return Err(about(
                        &m.id,
                        refused(
                            "not paid by the transaction this signer signed, which this one replaces",
                        ),
                    ));
                };
                if let Some(by) = known.cancelled_by {
                    return Err(about(&m.id, refused(format!("cancelled by {by}"))));
                }
                m.tx_digest = hex::encode(intent_digest(&m));
                if m.tx_digest != s.intent {
                    return Err(about(
                        &m.id,
                        NodeError::Replay(
                            "signed by this signer for other terms; a fee bump pays the approved withdrawals unchanged"
                                .into(),
                        ),
                    ));
                }
                Ok(BatchMember {
                    withdrawal: m,
                    statement_hash: s.statement_hash,
                    rule_id: s.rule_id,
                })
            })
            .collect()
    }
}
