//! The write operations: each is one balanced journal entry, written inside a
//! savepoint of the caller's transaction.

use std::collections::BTreeMap;

use sqlx::{Any, AnyConnection, Connection, Transaction};

use crate::query::overdraft_limit;
use crate::{AccountKey, AccountKind, Amount, EntryKind, LedgerError, Posted, parse_i128, signed};

/// Records a deposit of `amount` into `wallet`'s `available` account for `asset`
/// (external → available). `reference` identifies the deposit on its chain
/// (e.g. `eth:<tx hash>:<log index>`) and makes the call idempotent.
pub async fn deposit(
    conn: &mut AnyConnection,
    wallet: &str,
    asset: &str,
    amount: Amount,
    reference: &str,
) -> Result<Posted, LedgerError> {
    let signed_amount = signed(amount)?;
    let params = fingerprint(&[wallet, asset, &amount.to_string()]);
    let mut tx = conn.begin().await?;
    let result = async {
        match claim_entry(&mut tx, reference, EntryKind::Deposit, wallet, &params).await? {
            Claim::Existing(entry_id) => Ok(replayed(entry_id)),
            Claim::New(entry_id) => {
                let postings = [
                    (
                        AccountKey::new(wallet, asset, AccountKind::External),
                        -signed_amount,
                    ),
                    (
                        AccountKey::new(wallet, asset, AccountKind::Available),
                        signed_amount,
                    ),
                ];
                apply_postings(&mut tx, entry_id, &postings, Overdraft::Enforced).await?;
                Ok(posted(entry_id))
            }
        }
    }
    .await;
    finish(tx, result).await
}

/// Reverses the deposit credited under `reference` (available → external):
/// its block left the chain, so the coins it recorded are not the wallet's.
/// Keyed by `(reference, deposit_reversal)`, so a repeat returns the first
/// reversal and never posts twice; a reference that has no deposit entry
/// (nothing credited, or a withdrawal id) is refused as
/// [`LedgerError::NotADeposit`].
///
/// The overdraft rule is waived: the reversal records what the chain did,
/// and refusing it would leave the books claiming coins that are gone. When
/// the deposit was already spent, `available` goes negative, which
/// [`crate::check_invariants`] reports and [`reserve`] refuses to spend from.
pub async fn reverse_deposit(
    conn: &mut AnyConnection,
    reference: &str,
) -> Result<Posted, LedgerError> {
    let mut tx = conn.begin().await?;
    let result = async {
        let deposit: Option<(i64, String)> = sqlx::query_as(
            "SELECT id, wallet FROM ledger_entries WHERE reference = $1 AND kind = 'deposit'",
        )
        .bind(reference)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((deposit_id, wallet)) = deposit else {
            return Err(LedgerError::NotADeposit {
                reference: reference.to_string(),
            });
        };
        // The deposit's entry id is the argument compared on replay.
        let params = fingerprint(&[&deposit_id.to_string()]);
        let entry_id = match claim_entry(
            &mut tx,
            reference,
            EntryKind::DepositReversal,
            &wallet,
            &params,
        )
        .await?
        {
            Claim::Existing(entry_id) => return Ok(replayed(entry_id)),
            Claim::New(entry_id) => entry_id,
        };
        let lines: Vec<(String, String, String, String)> = sqlx::query_as(
            "SELECT a.wallet, a.asset, a.kind, p.amount FROM ledger_postings p
             JOIN ledger_accounts a ON a.id = p.account_id
             WHERE p.entry_id = $1 ORDER BY p.id",
        )
        .bind(deposit_id)
        .fetch_all(&mut *tx)
        .await?;
        let mut postings = Vec::with_capacity(lines.len());
        for (wallet, asset, kind, amount) in &lines {
            let kind = AccountKind::parse(kind).ok_or_else(|| {
                LedgerError::Corrupt(format!("deposit {reference}: account kind {kind:?}"))
            })?;
            let amount = parse_i128(amount, "deposit posting")?
                .checked_neg()
                .ok_or(LedgerError::Overflow)?;
            postings.push((AccountKey::new(wallet, asset, kind), amount));
        }
        if postings.is_empty() {
            return Err(LedgerError::Corrupt(format!(
                "deposit {reference} has no postings"
            )));
        }
        apply_postings(&mut tx, entry_id, &postings, Overdraft::Waived).await?;
        Ok(posted(entry_id))
    }
    .await;
    finish(tx, result).await
}

/// Reserves `amount` of `asset` in `wallet` for an approved withdrawal
/// (available → reserved). Refused with [`LedgerError::InsufficientFunds`]
/// when `available` would drop below minus the wallet's overdraft limit for
/// that asset (see [`set_overdraft_limit`]; none by default).
pub async fn reserve(
    conn: &mut AnyConnection,
    withdrawal_id: &str,
    wallet: &str,
    asset: &str,
    amount: Amount,
) -> Result<Posted, LedgerError> {
    let signed_amount = signed(amount)?;
    let params = fingerprint(&[wallet, asset, &amount.to_string()]);
    let mut tx = conn.begin().await?;
    let result = async {
        match claim_entry(&mut tx, withdrawal_id, EntryKind::Reserve, wallet, &params).await? {
            Claim::Existing(entry_id) => Ok(replayed(entry_id)),
            Claim::New(entry_id) => {
                let postings = [
                    (
                        AccountKey::new(wallet, asset, AccountKind::Available),
                        -signed_amount,
                    ),
                    (
                        AccountKey::new(wallet, asset, AccountKind::Reserved),
                        signed_amount,
                    ),
                ];
                apply_postings(&mut tx, entry_id, &postings, Overdraft::Enforced).await?;
                Ok(posted(entry_id))
            }
        }
    }
    .await;
    finish(tx, result).await
}

/// Settles a confirmed withdrawal: its reserved amount goes to `external`, and
/// the network fee (`fee_amount` of `fee_asset`, which may differ from the
/// withdrawn asset, e.g. ETH gas for a token transfer) goes from the wallet's
/// `available` to `fees`. A zero fee posts no fee lines.
///
/// The fee is subject to the same overdraft rule as [`reserve`]: a fee the
/// ledger cannot cover means the ledger and the chain disagree, which the
/// coordinator should surface (reconcile) rather than paper over.
pub async fn settle(
    conn: &mut AnyConnection,
    withdrawal_id: &str,
    fee_asset: &str,
    fee_amount: Amount,
) -> Result<Posted, LedgerError> {
    let fee = i128::try_from(fee_amount).map_err(|_| LedgerError::AmountOutOfRange(fee_amount))?;
    let params = fingerprint(&[fee_asset, &fee_amount.to_string()]);
    let mut tx = conn.begin().await?;
    let result = async {
        let reservation =
            match finalize_reservation(&mut tx, withdrawal_id, EntryKind::Settle, &params).await? {
                Finalize::Replayed(entry_id) => return Ok(replayed(entry_id)),
                Finalize::Claimed(reservation) => reservation,
            };
        let entry_id = insert_outcome_entry(
            &mut tx,
            withdrawal_id,
            EntryKind::Settle,
            &reservation.wallet,
            &params,
        )
        .await?;
        let wallet = reservation.wallet.as_str();
        let mut postings = vec![
            (
                AccountKey::new(wallet, &reservation.asset, AccountKind::Reserved),
                -reservation.amount,
            ),
            (
                AccountKey::new(wallet, &reservation.asset, AccountKind::External),
                reservation.amount,
            ),
        ];
        if fee > 0 {
            postings.push((
                AccountKey::new(wallet, fee_asset, AccountKind::Available),
                -fee,
            ));
            postings.push((AccountKey::new(wallet, fee_asset, AccountKind::Fees), fee));
        }
        apply_postings(&mut tx, entry_id, &postings, Overdraft::Enforced).await?;
        Ok(posted(entry_id))
    }
    .await;
    finish(tx, result).await
}

/// Releases a cancelled or failed withdrawal's reservation (reserved → available).
pub async fn release(conn: &mut AnyConnection, withdrawal_id: &str) -> Result<Posted, LedgerError> {
    let params = fingerprint(&[]);
    let mut tx = conn.begin().await?;
    let result =
        async {
            let reservation =
                match finalize_reservation(&mut tx, withdrawal_id, EntryKind::Release, &params)
                    .await?
                {
                    Finalize::Replayed(entry_id) => return Ok(replayed(entry_id)),
                    Finalize::Claimed(reservation) => reservation,
                };
            let entry_id = insert_outcome_entry(
                &mut tx,
                withdrawal_id,
                EntryKind::Release,
                &reservation.wallet,
                &params,
            )
            .await?;
            let wallet = reservation.wallet.as_str();
            let postings = [
                (
                    AccountKey::new(wallet, &reservation.asset, AccountKind::Reserved),
                    -reservation.amount,
                ),
                (
                    AccountKey::new(wallet, &reservation.asset, AccountKind::Available),
                    reservation.amount,
                ),
            ];
            apply_postings(&mut tx, entry_id, &postings, Overdraft::Enforced).await?;
            Ok(posted(entry_id))
        }
        .await;
    finish(tx, result).await
}

/// Sets how far below zero `wallet`'s `available` balance of `asset` may go
/// (0 removes the allowance). Takes effect for later operations only.
pub async fn set_overdraft_limit(
    conn: &mut AnyConnection,
    wallet: &str,
    asset: &str,
    limit: Amount,
) -> Result<(), LedgerError> {
    i128::try_from(limit).map_err(|_| LedgerError::AmountOutOfRange(limit))?;
    sqlx::query(
        "INSERT INTO ledger_overdrafts (wallet, asset, max_overdraft) VALUES ($1, $2, $3)
         ON CONFLICT (wallet, asset) DO UPDATE SET max_overdraft = excluded.max_overdraft",
    )
    .bind(wallet)
    .bind(asset)
    .bind(limit.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Commits the operation's savepoint on success, rolls it back on failure so a
/// refused operation leaves nothing behind and the caller's transaction stays usable.
async fn finish<T>(
    tx: Transaction<'_, Any>,
    result: Result<T, LedgerError>,
) -> Result<T, LedgerError> {
    match result {
        Ok(value) => {
            tx.commit().await?;
            Ok(value)
        }
        Err(e) => {
            // The operation's error is the one worth reporting; if the rollback
            // itself fails the connection is broken and the caller's commit fails too.
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

fn posted(entry_id: i64) -> Posted {
    Posted {
        entry_id,
        replayed: false,
    }
}

fn replayed(entry_id: i64) -> Posted {
    Posted {
        entry_id,
        replayed: true,
    }
}

/// A canonical, unambiguous string of an operation's arguments, compared on replay.
fn fingerprint(parts: &[&str]) -> String {
    parts
        .iter()
        .map(|p| format!("{}:{p}", p.len()))
        .collect::<Vec<_>>()
        .join(",")
}

use custos_clock::now_ms_i64 as now_ms;

enum Claim {
    New(i64),
    Existing(i64),
}

/// Inserts the entry row for `(reference, kind)`, or finds the existing one.
/// `ON CONFLICT DO NOTHING` rather than catching the unique violation: on
/// PostgreSQL a failed statement would abort the caller's whole transaction,
/// and a concurrent inserter is waited for instead of raced.
async fn claim_entry(
    conn: &mut AnyConnection,
    reference: &str,
    kind: EntryKind,
    wallet: &str,
    params: &str,
) -> Result<Claim, LedgerError> {
    let inserted: Option<(i64,)> = sqlx::query_as(
        "INSERT INTO ledger_entries (reference, kind, wallet, params, created_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (reference, kind) DO NOTHING RETURNING id",
    )
    .bind(reference)
    .bind(kind.as_str())
    .bind(wallet)
    .bind(params)
    .bind(now_ms())
    .fetch_optional(&mut *conn)
    .await?;
    if let Some((id,)) = inserted {
        return Ok(Claim::New(id));
    }
    existing_entry(conn, reference, kind, params)
        .await
        .map(Claim::Existing)
}

/// The id of the existing `(reference, kind)` entry, if its arguments match.
async fn existing_entry(
    conn: &mut AnyConnection,
    reference: &str,
    kind: EntryKind,
    params: &str,
) -> Result<i64, LedgerError> {
    let existing: Option<(i64, String)> =
        sqlx::query_as("SELECT id, params FROM ledger_entries WHERE reference = $1 AND kind = $2")
            .bind(reference)
            .bind(kind.as_str())
            .fetch_optional(&mut *conn)
            .await?;
    match existing {
        Some((id, stored)) if stored == params => Ok(id),
        Some(_) => Err(LedgerError::ReplayMismatch {
            reference: reference.to_string(),
            kind,
        }),
        None => Err(LedgerError::Corrupt(format!(
            "{kind} {reference}: entry neither inserted nor found"
        ))),
    }
}

/// A reserved withdrawal's wallet, asset and amount.
struct Reservation {
    wallet: String,
    asset: String,
    amount: i128,
}

enum Finalize {
    Claimed(Reservation),
    Replayed(i64),
}

/// Marks the withdrawal's reservation as finalized by `outcome`. The
/// conditional UPDATE is the mutual exclusion between settle and release: on
/// PostgreSQL a concurrent second outcome waits for the row lock and then
/// finds `finalized_by` set; on SQLite writers are serialized anyway.
async fn finalize_reservation(
    conn: &mut AnyConnection,
    withdrawal_id: &str,
    outcome: EntryKind,
    params: &str,
) -> Result<Finalize, LedgerError> {
    let updated = sqlx::query(
        "UPDATE ledger_entries SET finalized_by = $1
         WHERE reference = $2 AND kind = 'reserve' AND finalized_by IS NULL",
    )
    .bind(outcome.as_str())
    .bind(withdrawal_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let row: Option<(i64, String, Option<String>)> = sqlx::query_as(
        "SELECT id, wallet, finalized_by FROM ledger_entries WHERE reference = $1 AND kind = 'reserve'",
    )
    .bind(withdrawal_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((reserve_id, wallet, finalized_by)) = row else {
        return Err(LedgerError::NotReserved {
            withdrawal_id: withdrawal_id.to_string(),
        });
    };
    if updated == 0 {
        let existing = finalized_by
            .as_deref()
            .and_then(EntryKind::parse)
            .ok_or_else(|| {
                LedgerError::Corrupt(format!(
                    "reservation {withdrawal_id}: bad finalized_by {finalized_by:?}"
                ))
            })?;
        if existing != outcome {
            return Err(LedgerError::AlreadyFinalized {
                withdrawal_id: withdrawal_id.to_string(),
                existing,
            });
        }
        return existing_entry(conn, withdrawal_id, outcome, params)
            .await
            .map(Finalize::Replayed);
    }
    let lines: Vec<(String, String)> = sqlx::query_as(
        "SELECT a.asset, p.amount FROM ledger_postings p
         JOIN ledger_accounts a ON a.id = p.account_id
         WHERE p.entry_id = $1 AND a.kind = 'reserved'",
    )
    .bind(reserve_id)
    .fetch_all(&mut *conn)
    .await?;
    match lines.as_slice() {
        [(asset, amount)] => Ok(Finalize::Claimed(Reservation {
            wallet,
            asset: asset.clone(),
            amount: parse_i128(amount, "reserved posting")?,
        })),
        _ => Err(LedgerError::Corrupt(format!(
            "reservation {withdrawal_id} has {} reserved postings",
            lines.len()
        ))),
    }
}

/// Inserts a settle/release entry after its reservation was claimed; a
/// conflict here means an outcome entry exists without `finalized_by`.
async fn insert_outcome_entry(
    conn: &mut AnyConnection,
    withdrawal_id: &str,
    kind: EntryKind,
    wallet: &str,
    params: &str,
) -> Result<i64, LedgerError> {
    match claim_entry(conn, withdrawal_id, kind, wallet, params).await? {
        Claim::New(id) => Ok(id),
        Claim::Existing(_) => Err(LedgerError::Corrupt(format!(
            "{kind} {withdrawal_id} exists but its reservation was not finalized"
        ))),
    }
}

/// Whether an entry's postings are held to the balance rules ([`check_balance`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Overdraft {
    /// Every operation the wallet's owner causes.
    Enforced,
    /// A fact of the chain the books must record whatever the balance
    /// ([`reverse_deposit`]).
    Waived,
}

/// Writes `postings` for `entry_id` and updates the cached balances.
///
/// Accounts are locked in ascending id order (a no-op UPDATE takes the row
/// lock on PostgreSQL) before their balances are read, so concurrent
/// operations on one wallet neither lose updates nor deadlock; the checks run
/// on the locked balances.
async fn apply_postings(
    conn: &mut AnyConnection,
    entry_id: i64,
    postings: &[(AccountKey, i128)],
    overdraft: Overdraft,
) -> Result<(), LedgerError> {
    // Defensive: the callers build balanced entries; refuse anything else.
    let mut per_asset: BTreeMap<&str, i128> = BTreeMap::new();
    for (account, amount) in postings {
        let sum = per_asset.entry(account.asset.as_str()).or_default();
        *sum = sum.checked_add(*amount).ok_or(LedgerError::Overflow)?;
    }
    if let Some((asset, sum)) = per_asset.iter().find(|(_, sum)| **sum != 0) {
        return Err(LedgerError::Corrupt(format!(
            "entry {entry_id} unbalanced in {asset} by {sum}"
        )));
    }

    let mut ids: BTreeMap<AccountKey, i64> = BTreeMap::new();
    for (account, _) in postings {
        if !ids.contains_key(account) {
            let id = ensure_account(conn, account).await?;
            ids.insert(account.clone(), id);
        }
    }
    let mut deltas: BTreeMap<i64, (AccountKey, i128)> = BTreeMap::new();
    for (account, amount) in postings {
        let id = account_id(&ids, account)?;
        let slot = deltas.entry(id).or_insert_with(|| (account.clone(), 0));
        slot.1 = slot.1.checked_add(*amount).ok_or(LedgerError::Overflow)?;
    }

    // BTreeMap iteration is in ascending id order: the lock order.
    let mut new_balances = Vec::with_capacity(deltas.len());
    for (id, (account, delta)) in &deltas {
        sqlx::query("UPDATE ledger_accounts SET balance = balance WHERE id = $1")
            .bind(*id)
            .execute(&mut *conn)
            .await?;
        let (stored,): (String,) =
            sqlx::query_as("SELECT balance FROM ledger_accounts WHERE id = $1")
                .bind(*id)
                .fetch_one(&mut *conn)
                .await?;
        let old = parse_i128(&stored, "account balance")?;
        let new = old.checked_add(*delta).ok_or(LedgerError::Overflow)?;
        check_balance(conn, account, old, *delta, new, overdraft).await?;
        new_balances.push((*id, new));
    }

    for (id, new) in new_balances {
        sqlx::query("UPDATE ledger_accounts SET balance = $1 WHERE id = $2")
            .bind(new.to_string())
            .bind(id)
            .execute(&mut *conn)
            .await?;
    }
    for (account, amount) in postings {
        let id = account_id(&ids, account)?;
        sqlx::query(
            "INSERT INTO ledger_postings (entry_id, account_id, asset, amount) VALUES ($1, $2, $3, $4)",
        )
        .bind(entry_id)
        .bind(id)
        .bind(account.asset.as_str())
        .bind(amount.to_string())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The balance rules: `available` may not be taken below minus the overdraft
/// limit unless `overdraft` is waived (raising it is always allowed, even
/// while still below); `reserved`
/// and `fees` never go negative by construction, so a negative one is corruption.
async fn check_balance(
    conn: &mut AnyConnection,
    account: &AccountKey,
    old: i128,
    delta: i128,
    new: i128,
    overdraft: Overdraft,
) -> Result<(), LedgerError> {
    match account.kind {
        AccountKind::Available if delta < 0 && overdraft == Overdraft::Enforced => {
            let limit = overdraft_limit(conn, &account.wallet, &account.asset).await?;
            let floor = i128::try_from(limit)
                .map_err(|_| LedgerError::AmountOutOfRange(limit))?
                .checked_neg()
                .ok_or(LedgerError::Overflow)?;
            if new < floor {
                return Err(LedgerError::InsufficientFunds {
                    wallet: account.wallet.clone(),
                    asset: account.asset.clone(),
                    available: old,
                    requested: delta.unsigned_abs(),
                    overdraft_limit: limit,
                });
            }
        }
        AccountKind::Reserved | AccountKind::Fees if new < 0 => {
            return Err(LedgerError::Corrupt(format!(
                "{} {}/{} would become {new}",
                account.kind, account.wallet, account.asset
            )));
        }
        _ => {}
    }
    Ok(())
}

/// The id of an account, created with a zero balance if missing.
async fn ensure_account(
    conn: &mut AnyConnection,
    account: &AccountKey,
) -> Result<i64, LedgerError> {
    sqlx::query(
        "INSERT INTO ledger_accounts (wallet, asset, kind, balance) VALUES ($1, $2, $3, '0')
         ON CONFLICT (wallet, asset, kind) DO NOTHING",
    )
    .bind(account.wallet.as_str())
    .bind(account.asset.as_str())
    .bind(account.kind.as_str())
    .execute(&mut *conn)
    .await?;
    let (id,): (i64,) = sqlx::query_as(
        "SELECT id FROM ledger_accounts WHERE wallet = $1 AND asset = $2 AND kind = $3",
    )
    .bind(account.wallet.as_str())
    .bind(account.asset.as_str())
    .bind(account.kind.as_str())
    .fetch_one(&mut *conn)
    .await?;
    Ok(id)
}

fn account_id(ids: &BTreeMap<AccountKey, i64>, account: &AccountKey) -> Result<i64, LedgerError> {
    ids.get(account)
        .copied()
        .ok_or_else(|| LedgerError::Corrupt(format!("account {account:?} not resolved")))
}
