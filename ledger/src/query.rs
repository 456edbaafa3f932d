//! Read side: balances, journals, overdraft limits and the invariant check.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;

use crate::{
    AccountKey, AccountKind, Amount, Balance, EntryKind, JournalEntry, LedgerError, Posting,
    parse_i128, parse_limit,
};

/// The overdraft limit of `wallet` for `asset` (0 when none is configured).
pub async fn overdraft_limit(
    conn: &mut AnyConnection,
    wallet: &str,
    asset: &str,
) -> Result<Amount, LedgerError> {
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT max_overdraft FROM ledger_overdrafts WHERE wallet = $1 AND asset = $2",
    )
    .bind(wallet)
    .bind(asset)
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some((limit,)) => parse_limit(&limit),
        None => Ok(0),
    }
}

/// The balance of one account (0 if it was never posted to).
pub async fn balance(
    conn: &mut AnyConnection,
    wallet: &str,
    asset: &str,
    kind: AccountKind,
) -> Result<i128, LedgerError> {
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT balance FROM ledger_accounts WHERE wallet = $1 AND asset = $2 AND kind = $3",
    )
    .bind(wallet)
    .bind(asset)
    .bind(kind.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some((b,)) => parse_i128(&b, "account balance"),
        None => Ok(0),
    }
}

/// Every account's balance, ordered by wallet, asset and kind.
pub async fn balances(conn: &mut AnyConnection) -> Result<Vec<Balance>, LedgerError> {
    let rows: Vec<(String, String, String, String)> =
        sqlx::query_as("SELECT wallet, asset, kind, balance FROM ledger_accounts")
            .fetch_all(&mut *conn)
            .await?;
    to_balances(rows)
}

/// The balances of one wallet's accounts, ordered by asset and kind.
pub async fn wallet_balances(
    conn: &mut AnyConnection,
    wallet: &str,
) -> Result<Vec<Balance>, LedgerError> {
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT wallet, asset, kind, balance FROM ledger_accounts WHERE wallet = $1",
    )
    .bind(wallet)
    .fetch_all(&mut *conn)
    .await?;
    to_balances(rows)
}

fn to_balances(rows: Vec<(String, String, String, String)>) -> Result<Vec<Balance>, LedgerError> {
    let mut out = rows
        .into_iter()
        .map(|(wallet, asset, kind, balance)| {
            Ok(Balance {
                account: AccountKey {
                    wallet,
                    asset,
                    kind: parse_account_kind(&kind)?,
                },
                amount: parse_i128(&balance, "account balance")?,
            })
        })
        .collect::<Result<Vec<_>, LedgerError>>()?;
    out.sort_by(|a, b| a.account.cmp(&b.account));
    Ok(out)
}

fn parse_account_kind(s: &str) -> Result<AccountKind, LedgerError> {
    AccountKind::parse(s).ok_or_else(|| LedgerError::Corrupt(format!("account kind `{s}`")))
}

fn parse_entry_kind(s: &str) -> Result<EntryKind, LedgerError> {
    EntryKind::parse(s).ok_or_else(|| LedgerError::Corrupt(format!("entry kind `{s}`")))
}

/// The journal entries of one wallet with their postings, oldest first.
pub async fn journal(
    conn: &mut AnyConnection,
    wallet: &str,
) -> Result<Vec<JournalEntry>, LedgerError> {
    let entries: Vec<(i64, String, String, String, i64)> = sqlx::query_as(
        "SELECT id, reference, kind, wallet, created_at FROM ledger_entries
         WHERE wallet = $1 ORDER BY id",
    )
    .bind(wallet)
    .fetch_all(&mut *conn)
    .await?;
    let lines: Vec<(i64, String, String, String, String)> = sqlx::query_as(
        "SELECT p.entry_id, a.wallet, a.asset, a.kind, p.amount
         FROM ledger_postings p
         JOIN ledger_accounts a ON a.id = p.account_id
         JOIN ledger_entries e ON e.id = p.entry_id
         WHERE e.wallet = $1 ORDER BY p.id",
    )
    .bind(wallet)
    .fetch_all(&mut *conn)
    .await?;
    let mut postings: BTreeMap<i64, Vec<Posting>> = BTreeMap::new();
    for (entry_id, wallet, asset, kind, amount) in lines {
        postings.entry(entry_id).or_default().push(Posting {
            account: AccountKey {
                wallet,
                asset,
                kind: parse_account_kind(&kind)?,
            },
            amount: parse_i128(&amount, "posting amount")?,
        });
    }
    entries
        .into_iter()
        .map(|(id, reference, kind, wallet, created_at_ms)| {
            Ok(JournalEntry {
                id,
                reference,
                kind: parse_entry_kind(&kind)?,
                wallet,
                created_at_ms,
                postings: postings.remove(&id).unwrap_or_default(),
            })
        })
        .collect()
}

/// A broken ledger invariant, as found by [`check_invariants`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Violation {
    /// A journal entry whose postings do not sum to zero in one asset.
    UnbalancedEntry {
        /// The entry.
        entry_id: i64,
        /// The asset.
        asset: String,
        /// The non-zero sum.
        sum: i128,
    },
    /// All postings of an asset do not sum to zero.
    UnbalancedAsset {
        /// The asset.
        asset: String,
        /// The non-zero sum.
        sum: i128,
    },
    /// A journal entry without postings.
    EmptyEntry {
        /// The entry.
        entry_id: i64,
    },
    /// An account's cached balance differs from the sum of its postings.
    BalanceMismatch {
        /// The account.
        account: AccountKey,
        /// The cached balance.
        cached: i128,
        /// The sum of its postings.
        postings: i128,
    },
    /// `available` below minus its overdraft limit, or a negative
    /// `reserved`/`fees` balance.
    NegativeBalance {
        /// The account.
        account: AccountKey,
        /// Its balance.
        balance: i128,
        /// The overdraft limit in force (0 for accounts that have none).
        overdraft_limit: Amount,
    },
    /// A settle or release without a reservation.
    OutcomeWithoutReserve {
        /// The withdrawal id.
        withdrawal_id: String,
        /// The outcome found.
        outcome: EntryKind,
    },
    /// Both a settle and a release for one withdrawal.
    DoubleOutcome {
        /// The withdrawal id.
        withdrawal_id: String,
    },
    /// A reservation's `finalized_by` does not name the outcome entry that exists.
    FinalizationMismatch {
        /// The withdrawal id.
        withdrawal_id: String,
        /// What the reservation says finalized it.
        finalized_by: Option<String>,
        /// The outcome entry present, if any.
        outcome: Option<EntryKind>,
    },
    /// A wallet's `reserved` balance differs from the sum of its open reservations.
    ReservedMismatch {
        /// The wallet.
        wallet: String,
        /// The asset.
        asset: String,
        /// The `reserved` account balance.
        reserved: i128,
        /// The sum of reservations not yet settled or released.
        open_reservations: i128,
    },
    /// A sum left the signed 128-bit range.
    Overflow {
        /// What was being summed.
        what: String,
    },
}

fn add(sum: &mut i128, amount: i128, what: impl FnOnce() -> String, out: &mut Vec<Violation>) {
    match sum.checked_add(amount) {
        Some(s) => *sum = s,
        None => out.push(Violation::Overflow { what: what() }),
    }
}

/// Checks the ledger's invariants over the whole database and returns every
/// violation found (empty when the ledger is consistent):
/// each entry and each asset sums to zero; cached balances equal their
/// postings; no `available` below its overdraft floor and no negative
/// `reserved`/`fees`; every settle/release has a reservation, at most one of
/// them exists per withdrawal and the reservation records which; each
/// `reserved` balance equals the sum of its open reservations.
///
/// It reads every posting: meant for tests, the CLI and periodic audits, not
/// for the hot path.
pub async fn check_invariants(conn: &mut AnyConnection) -> Result<Vec<Violation>, LedgerError> {
    let mut out = Vec::new();

    let accounts: Vec<(i64, String, String, String, String)> =
        sqlx::query_as("SELECT id, wallet, asset, kind, balance FROM ledger_accounts")
            .fetch_all(&mut *conn)
            .await?;
    let mut account_by_id: BTreeMap<i64, (AccountKey, i128)> = BTreeMap::new();
    for (id, wallet, asset, kind, balance) in accounts {
        let key = AccountKey {
            wallet,
            asset,
            kind: parse_account_kind(&kind)?,
        };
        account_by_id.insert(id, (key, parse_i128(&balance, "account balance")?));
    }

    let postings: Vec<(i64, i64, String, String)> =
        sqlx::query_as("SELECT entry_id, account_id, asset, amount FROM ledger_postings")
            .fetch_all(&mut *conn)
            .await?;
    let mut per_entry: BTreeMap<(i64, String), i128> = BTreeMap::new();
    let mut per_asset: BTreeMap<String, i128> = BTreeMap::new();
    let mut per_account: BTreeMap<i64, i128> = BTreeMap::new();
    let mut entry_amounts: BTreeMap<i64, Vec<(i64, i128)>> = BTreeMap::new();
    for (entry_id, account_id, asset, amount) in postings {
        let amount = parse_i128(&amount, "posting amount")?;
        add(
            per_entry.entry((entry_id, asset.clone())).or_default(),
            amount,
            || format!("entry {entry_id}"),
            &mut out,
        );
        add(
            per_asset.entry(asset.clone()).or_default(),
            amount,
            || format!("asset {asset}"),
            &mut out,
        );
        add(
            per_account.entry(account_id).or_default(),
            amount,
            || format!("account {account_id}"),
            &mut out,
        );
        entry_amounts
            .entry(entry_id)
            .or_default()
            .push((account_id, amount));
    }
    for ((entry_id, asset), sum) in &per_entry {
        if *sum != 0 {
            out.push(Violation::UnbalancedEntry {
                entry_id: *entry_id,
                asset: asset.clone(),
                sum: *sum,
            });
        }
    }
    for (asset, sum) in per_asset {
        if sum != 0 {
            out.push(Violation::UnbalancedAsset { asset, sum });
        }
    }

    let limits: Vec<(String, String, String)> =
        sqlx::query_as("SELECT wallet, asset, max_overdraft FROM ledger_overdrafts")
            .fetch_all(&mut *conn)
            .await?;
    let mut limit_of: BTreeMap<(String, String), Amount> = BTreeMap::new();
    for (wallet, asset, limit) in limits {
        limit_of.insert((wallet, asset), parse_limit(&limit)?);
    }
    for (id, (account, cached)) in &account_by_id {
        let from_postings = per_account.get(id).copied().unwrap_or_default();
        if *cached != from_postings {
            out.push(Violation::BalanceMismatch {
                account: account.clone(),
                cached: *cached,
                postings: from_postings,
            });
        }
        let limit = match account.kind {
            AccountKind::Available => limit_of
                .get(&(account.wallet.clone(), account.asset.clone()))
                .copied()
                .unwrap_or_default(),
            _ => 0,
        };
        let floor = i128::try_from(limit).map_or(i128::MIN, |l| -l);
        if account.kind != AccountKind::External && *cached < floor {
            out.push(Violation::NegativeBalance {
                account: account.clone(),
                balance: *cached,
                overdraft_limit: limit,
            });
        }
    }

    let entries: Vec<(i64, String, String, Option<String>)> =
        sqlx::query_as("SELECT id, reference, kind, finalized_by FROM ledger_entries")
            .fetch_all(&mut *conn)
            .await?;
    let mut reserves: BTreeMap<String, (i64, Option<String>)> = BTreeMap::new();
    let mut outcomes: BTreeMap<String, BTreeSet<EntryKind>> = BTreeMap::new();
    for (id, reference, kind, finalized_by) in entries {
        if !entry_amounts.contains_key(&id) {
            out.push(Violation::EmptyEntry { entry_id: id });
        }
        match parse_entry_kind(&kind)? {
            EntryKind::Reserve => {
                reserves.insert(reference, (id, finalized_by));
            }
            outcome @ (EntryKind::Settle | EntryKind::Release) => {
                outcomes.entry(reference).or_default().insert(outcome);
            }
            // A reversal's deposit is checked by `reverse_deposit` when it
            // posts (it mirrors the deposit's postings).
            EntryKind::Deposit | EntryKind::DepositReversal => {}
        }
    }
    for (withdrawal_id, kinds) in &outcomes {
        if !reserves.contains_key(withdrawal_id) {
            for outcome in kinds {
                out.push(Violation::OutcomeWithoutReserve {
                    withdrawal_id: withdrawal_id.clone(),
                    outcome: *outcome,
                });
            }
        }
        if kinds.len() > 1 {
            out.push(Violation::DoubleOutcome {
                withdrawal_id: withdrawal_id.clone(),
            });
        }
    }
    let mut open: BTreeMap<(String, String), i128> = BTreeMap::new();
    for (withdrawal_id, (reserve_id, finalized_by)) in &reserves {
        let outcome = outcomes
            .get(withdrawal_id)
            .and_then(|k| k.iter().next().copied());
        let recorded = finalized_by.as_deref().and_then(EntryKind::parse);
        if recorded != outcome || (finalized_by.is_some() && recorded.is_none()) {
            out.push(Violation::FinalizationMismatch {
                withdrawal_id: withdrawal_id.clone(),
                finalized_by: finalized_by.clone(),
                outcome,
            });
        }
        if finalized_by.is_none() {
            for (account_id, amount) in entry_amounts.get(reserve_id).into_iter().flatten() {
                if let Some((account, _)) = account_by_id.get(account_id)
                    && account.kind == AccountKind::Reserved
                {
                    let key = (account.wallet.clone(), account.asset.clone());
                    add(
                        open.entry(key).or_default(),
                        *amount,
                        || format!("open reservations of {withdrawal_id}"),
                        &mut out,
                    );
                }
            }
        }
    }
    for (account, cached) in account_by_id.values() {
        if account.kind == AccountKind::Reserved {
            let key = (account.wallet.clone(), account.asset.clone());
            let expected = open.remove(&key).unwrap_or_default();
            if *cached != expected {
                out.push(Violation::ReservedMismatch {
                    wallet: account.wallet.clone(),
                    asset: account.asset.clone(),
                    reserved: *cached,
                    open_reservations: expected,
                });
            }
        }
    }
    for ((wallet, asset), expected) in open {
        out.push(Violation::ReservedMismatch {
            wallet,
            asset,
            reserved: 0,
            open_reservations: expected,
        });
    }
    Ok(out)
}
