//! Reconciliation of ledger balances against balances observed on chain.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{AccountKind, Amount, Balance};

/// A wallet's balance of one asset as read from its chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnchainBalance {
    /// The wallet id.
    pub wallet: String,
    /// The asset id, as the ledger names it.
    pub asset: String,
    /// The balance in base units.
    pub amount: Amount,
}

/// A (wallet, asset) whose ledger holding differs from the chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    /// The wallet id.
    pub wallet: String,
    /// The asset id.
    pub asset: String,
    /// What the ledger says the wallet holds: `available + reserved` (fees and
    /// settled withdrawals have left the wallet).
    pub ledger: i128,
    /// The part of `ledger` that is reserved: withdrawals broadcast but not yet
    /// settled explain a chain balance lower by up to this much (plus fees).
    pub reserved: i128,
    /// The chain's balance; `None` when the chain side reported nothing for a
    /// (wallet, asset) the ledger holds.
    pub onchain: Option<Amount>,
}

impl Difference {
    /// `onchain - ledger`: positive when the chain holds more than the ledger
    /// knows of (an unrecorded deposit), negative when less. `None` when the
    /// chain side is missing or the difference leaves the i128 range.
    pub fn delta(&self) -> Option<i128> {
        let onchain = i128::try_from(self.onchain?).ok()?;
        onchain.checked_sub(self.ledger)
    }
}

/// Compares the ledger's holdings with the chain's, per (wallet, asset), and
/// returns every mismatch ordered by wallet and asset.
///
/// The ledger holding is `available + reserved`. A (wallet, asset) missing on
/// one side counts as zero there, except that a non-zero ledger holding the
/// chain side did not report is returned with `onchain: None` (an unread
/// balance is not a zero balance). Several chain balances for one (wallet,
/// asset), e.g. several addresses, are added up (saturating).
pub fn reconcile(
    ledger_balances: &[Balance],
    onchain_balances: &[OnchainBalance],
) -> Vec<Difference> {
    // (ledger holding, reserved part)
    let mut ledger: BTreeMap<(&str, &str), (i128, i128)> = BTreeMap::new();
    for b in ledger_balances {
        let slot = ledger
            .entry((b.account.wallet.as_str(), b.account.asset.as_str()))
            .or_default();
        match b.account.kind {
            AccountKind::Available => slot.0 = slot.0.saturating_add(b.amount),
            AccountKind::Reserved => {
                slot.0 = slot.0.saturating_add(b.amount);
                slot.1 = slot.1.saturating_add(b.amount);
            }
            AccountKind::Fees | AccountKind::External => {}
        }
    }
    let mut chain: BTreeMap<(&str, &str), Amount> = BTreeMap::new();
    for b in onchain_balances {
        let slot = chain
            .entry((b.wallet.as_str(), b.asset.as_str()))
            .or_default();
        *slot = slot.saturating_add(b.amount);
    }

    let mut keys: Vec<(&str, &str)> = ledger.keys().chain(chain.keys()).copied().collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter()
        .filter_map(|key| {
            let (holding, reserved) = ledger.get(&key).copied().unwrap_or_default();
            let onchain = chain.get(&key).copied();
            let matches = match onchain {
                Some(amount) => i128::try_from(amount).is_ok_and(|a| a == holding),
                None => holding == 0,
            };
            (!matches).then(|| Difference {
                wallet: key.0.to_string(),
                asset: key.1.to_string(),
                ledger: holding,
                reserved,
                onchain,
            })
        })
        .collect()
}
