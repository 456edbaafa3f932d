//! Batched UTXO payouts: one transaction paying several withdrawals.
//!
//! # What the log holds
//!
//! Withdrawals of one wallet and asset on a UTXO chain, each requested,
//! decided and approved on its own, may be paid by one PSBT: output `i`
//! pays the `i`-th withdrawal, then at most one change output goes back to
//! the script the inputs spend. Every such withdrawal logs a
//! `transaction_prepared` entry with the same bytes before the
//! transaction's first signing session; only one of them (the lead) has
//! signing sessions and signatures, one per input.
//!
//! # What is checked
//!
//! The lead's signature authorises every output at once, so when the signed
//! digest is an input digest of a PSBT that other withdrawals prepared too:
//! - every output other than change pays one of those withdrawals exactly
//!   its logged destination and amount, and each of them is paid; each
//!   payout's fee share is within that withdrawal's approved fee cap
//!   (`custos_chains::utxo::check_psbt` over all payouts in output order);
//! - every other withdrawal is authorised as if it had been signed at the
//!   transaction's first signing session: not cancelled, not denied, its
//!   decision under the active policy, steps 1 to 5 of the replay, its
//!   approvals' digest its own transfer intent (`grant`);
//! - every one of them prepared the transaction before that session.
//!
//! A PSBT only the signed withdrawal prepared that pays more than one
//! output besides change is checked the same way, so the output nobody
//! prepared is named. A withdrawal decided `allow` has no approved fee cap
//! in the log; its fee share is not re-checked (the signers check it
//! against the request).
//!
//! # Where the other withdrawals come from
//!
//! The replay of one signature sees its own withdrawal's entries only, so
//! [`BatchIndex`] is built once from the bundle (range and context): the
//! shared transactions and the entries of the withdrawals that prepared
//! them. Those entries are the bundle's own, which the bundle verifier
//! proves (tree, checkpoints, context inclusion) in the same run: a forged
//! one fails the verification there. The exporter must put the entries of
//! every withdrawal of a batch in the bundle or its context.

use std::collections::{BTreeSet, HashMap};

use custos_audit::{Entry, EntryBody, ExportBundle};
use custos_chains::family::{ChainFamily, family_of};
use custos_chains::utxo::{self, Payout, UtxoNetwork};
use custos_policy::{ActionKind, Amount};
use sha2::{Digest, Sha256};

use crate::VerifyError;
use crate::chain_tx::check_intent;
use crate::decision::secs;
use crate::grant::Grant;
use crate::policies::PolicySet;

/// The UTXO transactions several withdrawals prepared, and those
/// withdrawals' entries.
#[derive(Default)]
pub(crate) struct BatchIndex {
    /// SHA-256 of the bytes → the first `transaction_prepared` entry of
    /// each withdrawal that logged them, in log order (two or more).
    shared: HashMap<[u8; 32], Vec<Preparer>>,
    /// Every entry of those withdrawals, in log order.
    histories: HashMap<String, Vec<Entry>>,
}

/// A withdrawal that prepared a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Preparer {
    /// The withdrawal.
    pub(crate) withdrawal: String,
    /// Its `transaction_prepared` entry.
    pub(crate) entry: u64,
}

impl BatchIndex {
    /// Indexes the bundle's entries (context first). Entries that do not
    /// decode are skipped: the bundle verifier reports them.
    pub(crate) fn new(bundle: &ExportBundle) -> Self {
        let context = bundle.context.iter().map(|c| c.entry.as_str());
        let entries: Vec<Entry> = context
            .chain(bundle.entries.iter().map(String::as_str))
            .filter_map(|raw| hex::decode(raw).ok())
            .filter_map(|bytes| Entry::decode(&bytes).ok())
            .collect();
        let mut by_bytes: HashMap<[u8; 32], Vec<Preparer>> = HashMap::new();
        for e in &entries {
            let EntryBody::TransactionPrepared {
                withdrawal_id,
                chain,
                unsigned_tx,
            } = &e.body
            else {
                continue;
            };
            if !matches!(family_of(chain), Some(ChainFamily::Utxo(_))) {
                continue;
            }
            let list = by_bytes
                .entry(Sha256::digest(unsigned_tx).into())
                .or_default();
            if list.iter().all(|p| &p.withdrawal != withdrawal_id) {
                list.push(Preparer {
                    withdrawal: withdrawal_id.clone(),
                    entry: e.index,
                });
            }
        }
        by_bytes.retain(|_, list| list.len() > 1);
        let batched: BTreeSet<&str> = by_bytes
            .values()
            .flatten()
            .map(|p| p.withdrawal.as_str())
            .collect();
        let mut histories: HashMap<String, Vec<Entry>> = HashMap::new();
        for e in &entries {
            if let Some(w) = e.body.withdrawal_id().filter(|w| batched.contains(w)) {
                histories.entry(w.to_owned()).or_default().push(e.clone());
            }
        }
        Self {
            shared: by_bytes,
            histories,
        }
    }

    /// The withdrawals that prepared `unsigned_tx`, when the entry
    /// `prepared` is one of theirs and another withdrawal prepared it too;
    /// empty otherwise.
    pub(crate) fn preparers(&self, unsigned_tx: &[u8], prepared: u64) -> &[Preparer] {
        let key: [u8; 32] = Sha256::digest(unsigned_tx).into();
        match self.shared.get(&key) {
            Some(list) if list.iter().any(|p| p.entry == prepared) => list,
            _ => &[],
        }
    }

    /// A withdrawal's entries before entry `before`, in log order.
    fn history(&self, withdrawal: &str, before: u64) -> Vec<&Entry> {
        self.histories
            .get(withdrawal)
            .into_iter()
            .flatten()
            .filter(|e| e.index < before)
            .collect()
    }
}

/// A batched transaction whose payouts and other withdrawals were all
/// authorised, for the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Authorised {
    /// The signed withdrawal's `transaction_prepared` entry.
    pub(crate) prepared: u64,
    /// Withdrawals it pays, the signed one included.
    pub(crate) payouts: usize,
}

/// What looking for the signed digest among the signed withdrawal's
/// batched transactions found.
#[derive(Default)]
pub(crate) struct Lookup {
    /// The batched transaction with the digest, everything in it authorised.
    pub(crate) found: Option<Authorised>,
    /// Why a batched transaction of the withdrawal could not be checked
    /// (the first one), when none had the digest.
    pub(crate) refusal: Option<VerifyError>,
}

/// One signature's view of the batches: the index, the trusted policies,
/// the policy activations before the signature.
pub(crate) struct Batches<'a> {
    pub(crate) index: &'a BatchIndex,
    pub(crate) policies: &'a PolicySet,
    pub(crate) activations: &'a [&'a Entry],
}

impl Batches<'_> {
    /// Looks for `digest`, signed for `signer` at signing session
    /// `session`, among the inputs of the batched transactions `signer`
    /// prepared. Where found, checks the transaction's payouts and
    /// authorises every other withdrawal it pays (module docs).
    ///
    /// # Errors
    ///
    /// The first rule the transaction that has the digest breaks: an
    /// unprepared output, a missing payout, a late or unauthorised member.
    pub(crate) fn lookup(
        &self,
        signer: &Grant<'_>,
        session: &Entry,
        digest: &[u8],
    ) -> Result<Lookup, VerifyError> {
        let mut lookup = Lookup::default();
        let Some(ChainFamily::Utxo(network)) = family_of(&signer.withdrawal.chain) else {
            return Ok(lookup);
        };
        for e in signer.history {
            let EntryBody::TransactionPrepared { unsigned_tx, .. } = &e.body else {
                continue;
            };
            if repeats(signer.history, e.index, unsigned_tx) {
                // Logged again: checked at its first entry.
                continue;
            }
            let shared = self.index.preparers(unsigned_tx, e.index);
            let alone;
            let preparers = if !shared.is_empty() {
                shared
            } else if pays_several(unsigned_tx) {
                // Only the signer prepared it, yet it pays others: named
                // here, output by output.
                alone = [Preparer {
                    withdrawal: signer.withdrawal.id.clone(),
                    entry: e.index,
                }];
                &alone[..]
            } else {
                continue;
            };
            // The transaction's first signing session: every output is
            // authorised by then.
            let first = signer
                .history
                .iter()
                .find(|s| s.index > e.index && matches!(s.body, EntryBody::SigningSession { .. }))
                .copied()
                .unwrap_or(session);
            let tx = Transaction {
                unsigned_tx,
                prepared: e.index,
                network,
                preparers,
                first,
            };
            match self.check(&tx, signer, digest) {
                Ok(Some(found)) => {
                    lookup.found = Some(found);
                    return Ok(lookup);
                }
                Ok(None) => {}
                Err(Checked::Signed(err)) => return Err(err),
                Err(Checked::Unproven(err)) => {
                    lookup.refusal.get_or_insert(err);
                }
            }
        }
        Ok(lookup)
    }

    /// Checks one batched transaction: `None` if `digest` is not one of its
    /// input digests.
    fn check(
        &self,
        tx: &Transaction<'_>,
        signer: &Grant<'_>,
        digest: &[u8],
    ) -> Result<Option<Authorised>, Checked> {
        let members: Vec<&Preparer> = tx
            .preparers
            .iter()
            .filter(|p| p.withdrawal != signer.withdrawal.id)
            .collect();
        if let Some(late) = members.iter().find(|p| p.entry > tx.first.index) {
            return Err(Checked::Unproven(VerifyError::BatchPreparedLate {
                withdrawal: late.withdrawal.clone(),
                prepared: late.entry,
                session: tx.first.index,
            }));
        }
        let histories: Vec<Vec<&Entry>> = members
            .iter()
            .map(|m| self.index.history(&m.withdrawal, tx.first.index))
            .collect();
        let mut grants = Vec::with_capacity(members.len());
        for (m, history) in members.iter().zip(&histories) {
            let grant = Grant::replay(self.policies, history, &m.withdrawal, self.activations)
                .map_err(|e| Checked::Unproven(tx.member_error(m, e)))?;
            grants.push(grant);
        }
        let mut claims = vec![Claim::of(signer, tx.prepared)];
        claims.extend(
            grants
                .iter()
                .zip(&members)
                .map(|(g, m)| Claim::of(g, m.entry)),
        );
        let digests = tx.check_payouts(&claims).map_err(Checked::Unproven)?;
        if !digests.iter().any(|d| d.as_slice() == digest) {
            return Ok(None);
        }
        for (grant, m) in grants.iter().zip(&members) {
            authorise_member(grant, self.activations, tx.first, digest)
                .map_err(|e| Checked::Signed(tx.member_error(m, e)))?;
        }
        Ok(Some(Authorised {
            prepared: tx.prepared,
            payouts: claims.len(),
        }))
    }
}

/// Why a batched transaction failed.
enum Checked {
    /// Before its digests were known: it may not be the signed one.
    Unproven(VerifyError),
    /// It has the signed digest.
    Signed(VerifyError),
}

/// A batched transaction the signed withdrawal prepared.
struct Transaction<'a> {
    /// The PSBT.
    unsigned_tx: &'a [u8],
    /// The signed withdrawal's `transaction_prepared` entry of it.
    prepared: u64,
    network: UtxoNetwork,
    /// Every withdrawal that prepared it, in log order.
    preparers: &'a [Preparer],
    /// Its first signing session.
    first: &'a Entry,
}

impl Transaction<'_> {
    fn member_error(&self, member: &Preparer, source: VerifyError) -> VerifyError {
        VerifyError::BatchMember {
            member: member.withdrawal.clone(),
            prepared: member.entry,
            session: self.first.index,
            source: Box::new(source),
        }
    }

    fn refused(&self, source: custos_chains::ChainError) -> VerifyError {
        VerifyError::BatchRefused {
            prepared: self.prepared,
            withdrawals: self
                .preparers
                .iter()
                .map(|p| p.withdrawal.clone())
                .collect(),
            source: Box::new(source),
        }
    }

    /// Matches each output to the claim it pays (the rest must be change)
    /// and checks the PSBT against all of them in output order; returns the
    /// input digests.
    fn check_payouts(&self, claims: &[Claim]) -> Result<Vec<[u8; 32]>, VerifyError> {
        let outputs = utxo::check::psbt_outputs(self.unsigned_tx).map_err(|e| self.refused(e))?;
        let own = utxo::spent_script(self.unsigned_tx).map_err(|e| self.refused(e))?;
        let mut used = vec![false; outputs.len()];
        let mut payouts: Vec<(usize, Payout)> = Vec::with_capacity(claims.len());
        let mut unpaid = Vec::new();
        for claim in claims {
            let payout = claim.payout(self.network)?;
            let hit = outputs
                .iter()
                .enumerate()
                .position(|(i, (script, amount))| {
                    !used[i] && *script == payout.script_pubkey && Some(*amount) == claim.amount()
                });
            match hit {
                Some(i) => {
                    used[i] = true;
                    payouts.push((i, payout));
                }
                None => unpaid.push((claim, payout)),
            }
        }
        if let Some((claim, payout)) = unpaid.first() {
            let paid = outputs
                .iter()
                .enumerate()
                .find(|(i, (script, _))| !used[*i] && *script == payout.script_pubkey)
                .map(|(i, (_, amount))| (i, *amount));
            return Err(VerifyError::BatchPayoutMissing {
                withdrawal: claim.withdrawal.clone(),
                prepared: claim.prepared,
                destination: claim.destination.clone(),
                requested: claim.amount,
                paid,
            });
        }
        // Anything else goes back to the spent script (`check_psbt` allows
        // one such output, above dust).
        if let Some((i, (script, amount))) = outputs
            .iter()
            .enumerate()
            .find(|(i, (script, _))| !used[*i] && *script != own)
        {
            return Err(VerifyError::BatchOutputUnprepared {
                prepared: self.prepared,
                output: i,
                pays: utxo::address_of(self.network, script)
                    .unwrap_or_else(|| format!("script {}", hex::encode(script.as_bytes()))),
                amount: *amount,
            });
        }
        payouts.sort_by_key(|(i, _)| *i);
        let payouts: Vec<Payout> = payouts.into_iter().map(|(_, p)| p).collect();
        utxo::check_psbt(self.unsigned_tx, &payouts, std::slice::from_ref(&own))
            .map(|c| c.digests)
            .map_err(|e| self.refused(e))
    }
}

/// Whether `history` has a `transaction_prepared` entry of `unsigned_tx`
/// before entry `index`.
fn repeats(history: &[&Entry], index: u64, unsigned_tx: &[u8]) -> bool {
    history.iter().any(|e| {
        e.index < index
            && matches!(&e.body, EntryBody::TransactionPrepared { unsigned_tx: t, .. }
                if t.as_slice() == unsigned_tx)
    })
}

/// Whether `psbt` pays more than one output outside the script its inputs
/// spend (false if it does not decode: the single-payout check names why).
fn pays_several(psbt: &[u8]) -> bool {
    let (Ok(outputs), Ok(own)) = (utxo::check::psbt_outputs(psbt), utxo::spent_script(psbt)) else {
        return false;
    };
    outputs.iter().filter(|(script, _)| *script != own).count() > 1
}

/// What a withdrawal asks a batched transaction to pay it.
struct Claim {
    withdrawal: String,
    /// Its `transaction_prepared` entry.
    prepared: u64,
    destination: String,
    amount: Amount,
    /// The approved fee cap; `None` without approvals (`allow`): the log
    /// does not carry the cap then.
    fee_cap: Option<Amount>,
}

impl Claim {
    fn of(grant: &Grant<'_>, prepared: u64) -> Self {
        Claim {
            withdrawal: grant.withdrawal.id.clone(),
            prepared,
            destination: grant.withdrawal.destination.clone(),
            amount: grant.withdrawal.amount,
            fee_cap: grant.approvals.approved_fee_cap(),
        }
    }

    /// The amount in base units, if it fits an output.
    fn amount(&self) -> Option<u64> {
        u64::try_from(self.amount.0).ok()
    }

    fn payout(&self, network: UtxoNetwork) -> Result<Payout, VerifyError> {
        let destination = utxo::parse_address(network, &self.destination).map_err(|source| {
            VerifyError::BatchDestination {
                withdrawal: self.withdrawal.clone(),
                destination: self.destination.clone(),
                source: Box::new(source),
            }
        })?;
        Ok(Payout {
            withdrawal_id: self.withdrawal.clone(),
            script_pubkey: destination.script_pubkey,
            amount: self.amount().unwrap_or(u64::MAX),
            fee_cap: self
                .fee_cap
                .map_or(u64::MAX, |c| u64::try_from(c.0).unwrap_or(u64::MAX)),
        })
    }
}

/// A withdrawal paid by the signed transaction, authorised as if signed at
/// `session` (the transaction's first signing session) with `digest`.
fn authorise_member(
    grant: &Grant<'_>,
    activations: &[&Entry],
    session: &Entry,
    digest: &[u8],
) -> Result<(), VerifyError> {
    grant.check_structure(activations)?;
    let quorum_at_ms = match grant.rule.rule.action {
        ActionKind::RequireApprovals => {
            let quorum = grant.quorum()?;
            // Its approvals bind its own transfer intent.
            check_intent(
                &grant.withdrawal,
                &quorum.statement,
                digest,
                quorum.first.index,
            )?;
            grant.check_quorum(&quorum, secs(session.timestamp_ms))?
        }
        _ => grant.decision.entry.timestamp_ms,
    };
    grant.check_time_lock(session, quorum_at_ms)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
