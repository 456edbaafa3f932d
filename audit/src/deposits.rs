//! What the log says flowed into the wallets: deposit addresses derived
//! (kind 24) and deposits credited (kind 25) or reversed (kind 26).
//!
//! The bundle replay checks what needs no chain code: one address per
//! wallet and path, one owner per address, one chain code per wallet, a
//! deposit credited at most once until it is reversed, and a reversal that
//! takes back exactly a credit the log holds. Re-deriving each address from
//! the key's public key and chain code needs the chains' address formats,
//! so `custos-audit-verify` does it.
//!
//! A bundle that starts after entry 0 may reverse a credit logged before
//! it: that is only checked when the bundle holds the whole log.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::bundle::{FailureKind, Report};
use crate::entry::{Entry, EntryBody};

/// Totals of the log's deposits, for the auditor to compare with the
/// ledger and the chains.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DepositSummary {
    /// Distinct deposit addresses derived.
    pub addresses_derived: u64,
    /// Deposits credited (a credit reversed and credited again counts twice).
    pub credited: u64,
    /// Credits reversed.
    pub reversed: u64,
    /// Net credited per wallet and asset (`wallet/asset` → base units).
    pub net: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Credit {
    entry: u64,
    key_id: String,
    asset: String,
    amount: String,
    block_number: u64,
    block_hash: String,
}

/// Replay state over the entries in log order.
#[derive(Debug, Default)]
pub(crate) struct DepositReplay {
    /// (key, path) → (address, child public key).
    derived: BTreeMap<(String, String), (String, Vec<u8>)>,
    /// (chain, address) → (key, path).
    owners: BTreeMap<(String, String), (String, String)>,
    chain_codes: BTreeMap<String, Vec<u8>>,
    /// Credits not reversed, by reference.
    open: BTreeMap<String, Credit>,
    net: BTreeMap<String, i128>,
    /// Whether the bundle holds the log from entry 0.
    whole_log: bool,
}

impl DepositReplay {
    pub(crate) fn new(whole_log: bool) -> Self {
        Self {
            whole_log,
            ..Self::default()
        }
    }

    /// Notes one entry; failures go to `report`.
    pub(crate) fn note(&mut self, report: &mut Report, e: &Entry) {
        match &e.body {
            EntryBody::AddressDerived {
                key_id,
                chain,
                path,
                address,
                public_key,
                chain_code,
                ..
            } => self.derived(
                report, e.index, key_id, chain, path, address, public_key, chain_code,
            ),
            EntryBody::DepositCredited {
                chain,
                key_id,
                address,
                asset,
                amount,
                reference,
                block_number,
                block_hash,
            } => {
                if let Some((owner, path)) = self.owners.get(&(chain.clone(), address.clone()))
                    && owner != key_id
                {
                    report.fail(
                        Some(e.index),
                        FailureKind::DepositMismatch,
                        format!(
                            "deposit_credited entry {}: {address} on {chain} is {owner}'s {path}, credited to {key_id}",
                            e.index
                        ),
                    );
                }
                if let Some(earlier) = self.open.get(reference) {
                    report.fail(
                        Some(e.index),
                        FailureKind::DepositMismatch,
                        format!(
                            "deposit_credited entry {}: {reference} was already credited at entry {} and not reversed",
                            e.index, earlier.entry
                        ),
                    );
                    return;
                }
                self.open.insert(
                    reference.clone(),
                    Credit {
                        entry: e.index,
                        key_id: key_id.clone(),
                        asset: asset.clone(),
                        amount: amount.clone(),
                        block_number: *block_number,
                        block_hash: block_hash.clone(),
                    },
                );
                report.deposits.credited += 1;
                self.add(key_id, asset, amount, 1);
            }
            EntryBody::DepositReversed {
                key_id,
                asset,
                amount,
                reference,
                block_number,
                block_hash,
                ..
            } => {
                let reversed = Credit {
                    entry: 0,
                    key_id: key_id.clone(),
                    asset: asset.clone(),
                    amount: amount.clone(),
                    block_number: *block_number,
                    block_hash: block_hash.clone(),
                };
                match self.open.remove(reference) {
                    Some(credit) if Credit { entry: 0, ..credit.clone() } == reversed => {
                        report.deposits.reversed += 1;
                        self.add(key_id, asset, amount, -1);
                    }
                    Some(credit) => report.fail(
                        Some(e.index),
                        FailureKind::DepositMismatch,
                        format!(
                            "deposit_reversed entry {}: {reference} reverses {amount} {asset} of {key_id} in block {block_number} {block_hash}, but entry {} credited {} {} to {} in block {} {}",
                            e.index,
                            credit.entry,
                            credit.amount,
                            credit.asset,
                            credit.key_id,
                            credit.block_number,
                            credit.block_hash
                        ),
                    ),
                    None if self.whole_log => report.fail(
                        Some(e.index),
                        FailureKind::DepositMismatch,
                        format!(
                            "deposit_reversed entry {}: {reference} is not a credited deposit",
                            e.index
                        ),
                    ),
                    None => {}
                }
            }
            _ => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn derived(
        &mut self,
        report: &mut Report,
        index: u64,
        key_id: &str,
        chain: &str,
        path: &str,
        address: &str,
        public_key: &[u8],
        chain_code: &[u8],
    ) {
        let mut fail = |why: String| {
            report.fail(
                Some(index),
                FailureKind::AddressConflict,
                format!("address_derived entry {index}: {why}"),
            );
        };
        match self.chain_codes.get(key_id) {
            Some(code) if code.as_slice() != chain_code => {
                return fail(format!(
                    "key {key_id} derived with chain code {}, earlier with {}",
                    hex::encode(chain_code),
                    hex::encode(code)
                ));
            }
            Some(_) => {}
            None => {
                self.chain_codes
                    .insert(key_id.to_owned(), chain_code.to_vec());
            }
        }
        let at = (key_id.to_owned(), path.to_owned());
        if let Some((earlier, earlier_key)) = self.derived.get(&at) {
            if earlier != address || earlier_key.as_slice() != public_key {
                fail(format!("{key_id} {path} is {address}, earlier {earlier}"));
            }
            // The same derivation logged again (two callers at once).
            return;
        }
        let place = (chain.to_owned(), address.to_owned());
        if let Some((owner, owner_path)) = self.owners.get(&place) {
            return fail(format!(
                "{address} on {chain} is {key_id} {path}, earlier {owner} {owner_path}"
            ));
        }
        self.owners.insert(place, at.clone());
        self.derived
            .insert(at, (address.to_owned(), public_key.to_vec()));
        report.deposits.addresses_derived += 1;
    }

    fn add(&mut self, key_id: &str, asset: &str, amount: &str, sign: i128) {
        // The entry decoder accepted only canonical decimals (u128).
        let units = amount
            .parse::<u128>()
            .map_or(0, |u| i128::try_from(u).unwrap_or(i128::MAX));
        let net = self.net.entry(format!("{key_id}/{asset}")).or_default();
        *net = net.saturating_add(sign.saturating_mul(units));
    }

    /// Writes the net totals into `report`.
    pub(crate) fn finish(self, report: &mut Report) {
        report.deposits.net = self
            .net
            .into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect();
    }
}
