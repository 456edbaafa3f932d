//! Double-entry ledger for custody wallets: accounts, balanced postings,
//! reconciliation.
//!
//! Every wallet holds, per asset, four accounts ([`AccountKind`]):
//! `available` (spendable), `reserved` (promised to an approved withdrawal),
//! `fees` (network fees the wallet has paid) and `external` (the rest of the
//! world: deposits come from it, settled withdrawals go to it). An operation
//! writes one journal entry whose postings sum to zero per asset, so the sum of
//! all postings of an asset is always zero and value is never created or lost.
//!
//! A posting's amount is signed: positive increases the account's balance,
//! negative decreases it. Amounts are integers in the asset's base units
//! (`u128` at the API, `i128` for signed balances; an amount above `i128::MAX`
//! is refused as [`LedgerError::AmountOutOfRange`]). They are stored as decimal
//! `TEXT` because neither SQLite nor a portable PostgreSQL column holds 128-bit
//! integers; sums are therefore done in Rust, never in SQL.
//!
//! Writes take `&mut sqlx::AnyConnection` so the coordinator can pass its own
//! transaction (`&mut *tx`): postings then commit or roll back together with
//! its state change. Each operation runs inside a savepoint of that
//! transaction, so a refused operation leaves no trace and the caller's
//! transaction stays usable (PostgreSQL would otherwise poison it).
//!
//! Every operation is keyed by a unique `(reference, kind)`: the withdrawal id
//! for `reserve`/`settle`/`release`, the deposit reference for `deposit` and
//! `deposit_reversal` ([`reverse_deposit`]: a deposit whose block left the
//! chain; a deposit credited again after that is a new reference, see the
//! coordinator's `chain::credits`).
//! Replaying an operation with the same arguments returns the original entry
//! ([`Posted::replayed`]); replaying it with different arguments is refused
//! ([`LedgerError::ReplayMismatch`]).

#![deny(missing_docs)]

mod ops;
mod query;
mod reconcile;

use std::fmt;

use custos_db::{Backend, Db};
use serde::{Deserialize, Serialize};

pub use ops::{deposit, release, reserve, reverse_deposit, set_overdraft_limit, settle};
pub use query::{
    Violation, balance, balances, check_invariants, journal, overdraft_limit, wallet_balances,
};
pub use reconcile::{Difference, OnchainBalance, reconcile};

/// An amount in an asset's base units (wei, satoshi).
pub type Amount = u128;

/// What an account of a wallet holds, per asset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    /// Funds the wallet may spend.
    Available,
    /// Funds promised to approved withdrawals that are not settled or released yet.
    Reserved,
    /// Network fees the wallet has paid (an expense account).
    Fees,
    /// The outside world: the counterpart of deposits and settled withdrawals.
    External,
}

impl AccountKind {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Available => "available",
            Self::Reserved => "reserved",
            Self::Fees => "fees",
            Self::External => "external",
        }
    }

    /// The kind a stored name denotes.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "available" => Some(Self::Available),
            "reserved" => Some(Self::Reserved),
            "fees" => Some(Self::Fees),
            "external" => Some(Self::External),
            _ => None,
        }
    }
}

impl fmt::Display for AccountKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which operation wrote a journal entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// external → available.
    Deposit,
    /// available → reserved, when a withdrawal is approved.
    Reserve,
    /// reserved → external and fee available → fees, when a withdrawal is confirmed.
    Settle,
    /// reserved → available, when a withdrawal is cancelled or fails.
    Release,
    /// available → external, when a deposit's block left the chain (keyed
    /// by the deposit's reference).
    DepositReversal,
}

impl EntryKind {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deposit => "deposit",
            Self::Reserve => "reserve",
            Self::Settle => "settle",
            Self::Release => "release",
            Self::DepositReversal => "deposit_reversal",
        }
    }

    /// The kind a stored name denotes.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "deposit" => Some(Self::Deposit),
            "reserve" => Some(Self::Reserve),
            "settle" => Some(Self::Settle),
            "release" => Some(Self::Release),
            "deposit_reversal" => Some(Self::DepositReversal),
            _ => None,
        }
    }
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One account: a wallet's holding of one asset of one kind.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AccountKey {
    /// The wallet id.
    pub wallet: String,
    /// The asset id (e.g. `eth`, `eth:0xa0b8...` for a token).
    pub asset: String,
    /// Which of the wallet's accounts for that asset.
    pub kind: AccountKind,
}

impl AccountKey {
    /// The account of `wallet` for `asset` of the given kind.
    pub fn new(wallet: &str, asset: &str, kind: AccountKind) -> Self {
        Self {
            wallet: wallet.to_string(),
            asset: asset.to_string(),
            kind,
        }
    }
}

/// An account and its balance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    /// The account.
    pub account: AccountKey,
    /// Its balance in base units; negative only for `external`, or for
    /// `available` within a configured overdraft limit.
    pub amount: i128,
}

/// One line of a journal entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posting {
    /// The account the posting moves value into (positive) or out of (negative).
    pub account: AccountKey,
    /// Signed amount in base units.
    pub amount: i128,
}

/// A journal entry: one operation's balanced postings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Database id, increasing in write order.
    pub id: i64,
    /// The withdrawal id, or the deposit reference.
    pub reference: String,
    /// The operation.
    pub kind: EntryKind,
    /// The wallet the operation concerns.
    pub wallet: String,
    /// When it was written, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// Its postings; they sum to zero per asset.
    pub postings: Vec<Posting>,
}

/// The result of a write operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Posted {
    /// The journal entry that records the operation.
    pub entry_id: i64,
    /// Whether the entry already existed (the call was a replay and wrote nothing).
    pub replayed: bool,
}

/// Why a ledger operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The operation would take `available` below minus the wallet's overdraft limit.
    #[error(
        "insufficient funds in {wallet}/{asset}: available {available}, requested {requested}, overdraft limit {overdraft_limit}"
    )]
    InsufficientFunds {
        /// The wallet.
        wallet: String,
        /// The asset.
        asset: String,
        /// The available balance before the operation.
        available: i128,
        /// The amount the operation takes out of `available`.
        requested: Amount,
        /// The configured overdraft limit (0 when none).
        overdraft_limit: Amount,
    },
    /// `reverse_deposit` of a reference the ledger holds no deposit under.
    #[error("{reference} is not a deposit in the ledger: nothing to reverse")]
    NotADeposit {
        /// The reference asked for.
        reference: String,
    },
    /// `settle` or `release` for a withdrawal that was never reserved.
    #[error("withdrawal {withdrawal_id} has no reservation")]
    NotReserved {
        /// The withdrawal id.
        withdrawal_id: String,
    },
    /// `settle` after `release` or the reverse: a withdrawal has one outcome.
    #[error("withdrawal {withdrawal_id} was already finalized by {existing}")]
    AlreadyFinalized {
        /// The withdrawal id.
        withdrawal_id: String,
        /// The outcome already recorded.
        existing: EntryKind,
    },
    /// The `(reference, kind)` key exists with different arguments: a caller bug
    /// or a reused id, never silently accepted.
    #[error("{kind} {reference} was already posted with different arguments")]
    ReplayMismatch {
        /// The withdrawal id or deposit reference.
        reference: String,
        /// The operation.
        kind: EntryKind,
    },
    /// Zero amounts make no entry (a fee of zero is allowed and posts nothing).
    #[error("amount must be positive")]
    ZeroAmount,
    /// The amount does not fit the signed 128-bit balances.
    #[error("amount {0} exceeds the ledger's range (i128::MAX)")]
    AmountOutOfRange(Amount),
    /// A balance would leave the signed 128-bit range.
    #[error("balance overflow")]
    Overflow,
    /// The stored data does not parse or contradicts itself.
    #[error("corrupt ledger data: {0}")]
    Corrupt(String),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// Idempotent DDL for the ledger tables (`;`-separated, for [`Db::execute_ddl`]).
///
/// Tables:
/// - `ledger_accounts(id, wallet, asset, kind, balance)`: `balance` is a signed
///   decimal cache of the sum of the account's postings (checked by
///   [`check_invariants`]), kept so a reservation check does not scan history.
/// - `ledger_overdrafts(wallet, asset, max_overdraft)`: how far below zero
///   `available` may go; absent means 0.
/// - `ledger_entries(id, reference, kind, wallet, params, finalized_by, created_at)`:
///   unique `(reference, kind)`; `params` is the canonical argument string
///   compared on replay; `finalized_by` is set on a `reserve` entry by its
///   `settle` or `release` (the row lock that makes the two exclusive).
/// - `ledger_postings(id, entry_id, account_id, asset, amount)`: `amount` signed decimal.
pub fn schema(backend: Backend) -> String {
    let pk = backend.serial_pk();
    format!(
        "CREATE TABLE IF NOT EXISTS ledger_accounts (
            id {pk},
            wallet TEXT NOT NULL,
            asset TEXT NOT NULL,
            kind TEXT NOT NULL,
            balance TEXT NOT NULL,
            UNIQUE (wallet, asset, kind)
        );
        CREATE TABLE IF NOT EXISTS ledger_overdrafts (
            wallet TEXT NOT NULL,
            asset TEXT NOT NULL,
            max_overdraft TEXT NOT NULL,
            PRIMARY KEY (wallet, asset)
        );
        CREATE TABLE IF NOT EXISTS ledger_entries (
            id {pk},
            reference TEXT NOT NULL,
            kind TEXT NOT NULL,
            wallet TEXT NOT NULL,
            params TEXT NOT NULL,
            finalized_by TEXT,
            created_at BIGINT NOT NULL,
            UNIQUE (reference, kind)
        );
        CREATE INDEX IF NOT EXISTS ledger_entries_wallet ON ledger_entries (wallet);
        CREATE TABLE IF NOT EXISTS ledger_postings (
            id {pk},
            entry_id BIGINT NOT NULL REFERENCES ledger_entries (id),
            account_id BIGINT NOT NULL REFERENCES ledger_accounts (id),
            asset TEXT NOT NULL,
            amount TEXT NOT NULL
        );
        CREATE INDEX IF NOT EXISTS ledger_postings_entry ON ledger_postings (entry_id);
        CREATE INDEX IF NOT EXISTS ledger_postings_account ON ledger_postings (account_id)"
    )
}

/// Creates the ledger tables if they are missing.
pub async fn create_schema(db: &Db) -> Result<(), LedgerError> {
    db.execute_ddl(&schema(db.backend)).await?;
    Ok(())
}

/// Parses a stored signed decimal.
pub(crate) fn parse_i128(s: &str, what: &str) -> Result<i128, LedgerError> {
    s.parse::<i128>()
        .map_err(|_| LedgerError::Corrupt(format!("{what}: `{s}` is not an integer")))
}

/// Parses a stored unsigned decimal.
pub(crate) fn parse_u128(s: &str, what: &str) -> Result<u128, LedgerError> {
    s.parse::<u128>()
        .map_err(|_| LedgerError::Corrupt(format!("{what}: `{s}` is not an amount")))
}

/// Parses a stored overdraft limit.
pub(crate) fn parse_limit(s: &str) -> Result<Amount, LedgerError> {
    parse_u128(s, "overdraft limit")
}

/// A positive API amount as a signed posting amount.
pub(crate) fn signed(amount: Amount) -> Result<i128, LedgerError> {
    if amount == 0 {
        return Err(LedgerError::ZeroAmount);
    }
    i128::try_from(amount).map_err(|_| LedgerError::AmountOutOfRange(amount))
}
