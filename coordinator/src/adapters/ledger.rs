//! Ledger postings for withdrawal transitions ([`LedgerHook`]).
//!
//! | transition to | posting |
//! |---|---|
//! | `requested` (creation) | the (wallet, asset) gets the configured default overdraft limit if it has none |
//! | `approved` | `reserve` (available → reserved) |
//! | `confirmed`, or `signed` without a chain transaction ([`settles`]) | `settle` with [`settlement_fee`] (reserved → external, fee available → fees) |
//! | `cancelled`, `failed`, `expired`, `rejected` | `release` (reserved → available) when a reservation exists |
//!
//! The hook runs inside the transition's transaction, so a posting commits
//! with its state change or not at all. It fails only on storage errors: a
//! posting the ledger refuses (a reservation beyond the overdraft limit, a
//! settlement without reservation, a replay mismatch) leaves the ledger
//! untouched (the ledger's savepoint), is recorded in `ledger_exceptions` with
//! the withdrawal id and the reason, counted in
//! `custos_ledger_exceptions_total`, and the withdrawal proceeds. The books
//! follow custody, they do not authorise it: the policy and the signers do.
//! With the default `default_overdraft = "unlimited"` no posting is ever refused
//! for funds; with a finite limit a shortfall is an exception to reconcile.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use custos_ledger::LedgerError;
use custos_service::db::Backend;
use sqlx::AnyConnection;

use crate::clock::now_ms;
use crate::error::CoordError;
use crate::withdrawal::State;
use crate::withdrawal::store::{HookFuture, NewWithdrawal, TransitionHook, WithdrawalRow};

/// Where a withdrawal's reservation is settled: `confirmed` for a chain with
/// a transaction adapter, `signed` for a withdrawal without a chain
/// transaction (its last state).
pub const SETTLEMENT_STATE: State = State::Confirmed;

/// Whether entering `to` settles `row`'s reservation: [`SETTLEMENT_STATE`],
/// or `signed` when the withdrawal carries no chain transaction (no adapter
/// for its chain: nothing is broadcast and `signed` is final).
pub fn settles(row: &WithdrawalRow, to: State) -> bool {
    to == SETTLEMENT_STATE
        || (to == State::Signed && row.unsigned_tx.as_deref().is_none_or(<[u8]>::is_empty))
}

/// Terminal exits that give a reservation back (`failed` includes a
/// transaction that reverted on chain: the value never left).
pub const RELEASE_STATES: [State; 4] = [
    State::Cancelled,
    State::Failed,
    State::Expired,
    State::Rejected,
];

/// The network fee settled with a withdrawal: `(fee asset, base units)`: the
/// fee the chain adapter recorded at confirmation (EVM: receipt gas used ×
/// effective gas price; UTXO: inputs less outputs), in the chain's native
/// asset (`custos_chains::family::native_asset`: ETH, LTC, BTC, ...); zero
/// without a chain transaction.
pub fn settlement_fee(row: &WithdrawalRow) -> (String, u128) {
    match row.fee_paid.as_deref().and_then(|f| f.parse::<u128>().ok()) {
        Some(fee) => (
            custos_chains::family::native_asset(&row.chain)
                .unwrap_or("ETH")
                .to_owned(),
            fee,
        ),
        None => (row.asset.clone(), 0),
    }
}

/// The `default_overdraft` setting: `"unlimited"` or a base-unit amount.
pub fn parse_overdraft(s: &str) -> Result<u128, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("unlimited") {
        return Ok(i128::MAX.unsigned_abs());
    }
    let v: u128 = s
        .parse()
        .map_err(|_| format!("`{s}` is neither \"unlimited\" nor an amount in base units"))?;
    if i128::try_from(v).is_err() {
        return Err(format!("`{s}` exceeds the ledger's range"));
    }
    Ok(v)
}

/// DDL for the table of postings the ledger refused.
pub fn exceptions_schema(backend: Backend) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS ledger_exceptions (
            id {},
            withdrawal_id TEXT NOT NULL,
            wallet TEXT NOT NULL,
            asset TEXT NOT NULL,
            state TEXT NOT NULL,
            kind TEXT NOT NULL,
            detail TEXT NOT NULL,
            created_at BIGINT NOT NULL
        );
        CREATE INDEX IF NOT EXISTS ledger_exceptions_wd ON ledger_exceptions (withdrawal_id)",
        backend.serial_pk()
    )
}

/// Posts withdrawal transitions to the ledger.
#[derive(Debug)]
pub struct LedgerHook {
    default_overdraft: u128,
    exceptions: Arc<AtomicU64>,
}

impl LedgerHook {
    /// A hook giving new (wallet, asset) pairs `default_overdraft` (base units;
    /// see [`parse_overdraft`]).
    pub fn new(default_overdraft: u128) -> Self {
        // The ledger refuses limits above i128::MAX; so does parse_overdraft.
        let default_overdraft = default_overdraft.min(i128::MAX.unsigned_abs());
        Self {
            default_overdraft,
            exceptions: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Refused postings since start (metrics).
    pub fn exceptions(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.exceptions)
    }

    async fn post(
        &self,
        conn: &mut AnyConnection,
        row: &WithdrawalRow,
        to: State,
    ) -> Result<(), CoordError> {
        if to == State::Requested {
            return self.ensure_overdraft(conn, row).await;
        }
        if to == State::Approved {
            self.ensure_overdraft(conn, row).await?;
            let amount = match row.amount.parse::<u128>() {
                Ok(a) => a,
                Err(_) => {
                    return self
                        .exception(
                            conn,
                            row,
                            to,
                            "bad_amount",
                            &format!("amount {:?}", row.amount),
                        )
                        .await;
                }
            };
            let r = custos_ledger::reserve(conn, &row.id, &row.wallet, &row.asset, amount).await;
            return self.outcome(conn, row, to, "reserve", r).await;
        }
        if settles(row, to) {
            let (fee_asset, fee) = settlement_fee(row);
            let r = custos_ledger::settle(conn, &row.id, &fee_asset, fee).await;
            if let Err(LedgerError::NotReserved { .. }) = r {
                // The reservation was refused at approval (a shortfall already
                // recorded): try again, funds may have arrived since.
                let amount = row.amount.parse::<u128>().unwrap_or(0);
                let reserved =
                    custos_ledger::reserve(conn, &row.id, &row.wallet, &row.asset, amount).await;
                if reserved.is_err() {
                    return self.outcome(conn, row, to, "settle", reserved).await;
                }
                let r = custos_ledger::settle(conn, &row.id, &fee_asset, fee).await;
                return self.outcome(conn, row, to, "settle", r).await;
            }
            return self.outcome(conn, row, to, "settle", r).await;
        }
        if RELEASE_STATES.contains(&to) {
            return match custos_ledger::release(conn, &row.id).await {
                // Never reserved (ended before approval, or the reservation was refused).
                Err(LedgerError::NotReserved { .. }) => Ok(()),
                r => self.outcome(conn, row, to, "release", r).await,
            };
        }
        Ok(())
    }

    /// Storage errors fail the transition; refusals become exceptions.
    async fn outcome<T>(
        &self,
        conn: &mut AnyConnection,
        row: &WithdrawalRow,
        to: State,
        op: &str,
        r: Result<T, LedgerError>,
    ) -> Result<(), CoordError> {
        match r {
            Ok(_) => Ok(()),
            Err(LedgerError::Db(e)) => Err(CoordError::storage(format!("ledger {op}"), e)),
            Err(e) => {
                let kind = match &e {
                    LedgerError::InsufficientFunds { .. } => "insufficient_funds",
                    LedgerError::NotReserved { .. } => "not_reserved",
                    LedgerError::AlreadyFinalized { .. } => "already_finalized",
                    LedgerError::ReplayMismatch { .. } => "replay_mismatch",
                    _ => "refused",
                };
                self.exception(conn, row, to, kind, &format!("{op}: {e}"))
                    .await
            }
        }
    }

    async fn exception(
        &self,
        conn: &mut AnyConnection,
        row: &WithdrawalRow,
        to: State,
        kind: &str,
        detail: &str,
    ) -> Result<(), CoordError> {
        tracing::warn!(withdrawal = %row.id, wallet = %row.wallet, asset = %row.asset,
            state = %to, kind, detail, "ledger refused a posting; recorded as an exception");
        self.exceptions.fetch_add(1, Ordering::Relaxed);
        sqlx::query(
            "INSERT INTO ledger_exceptions (withdrawal_id, wallet, asset, state, kind, detail, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&row.id)
        .bind(&row.wallet)
        .bind(&row.asset)
        .bind(to.as_str())
        .bind(kind)
        .bind(detail)
        .bind(now_ms())
        .execute(&mut *conn)
        .await
        .map_err(|e| CoordError::storage("ledger exception", e))?;
        Ok(())
    }

    /// Gives a (wallet, asset) seen for the first time the default overdraft
    /// limit. One `INSERT ... ON CONFLICT DO NOTHING` on the ledger's
    /// `ledger_overdrafts` table: a limit an admin set (even concurrently) is
    /// never overwritten.
    async fn ensure_overdraft(
        &self,
        conn: &mut AnyConnection,
        row: &WithdrawalRow,
    ) -> Result<(), CoordError> {
        sqlx::query(
            "INSERT INTO ledger_overdrafts (wallet, asset, max_overdraft) VALUES ($1, $2, $3)
             ON CONFLICT (wallet, asset) DO NOTHING",
        )
        .bind(&row.wallet)
        .bind(&row.asset)
        .bind(self.default_overdraft.to_string())
        .execute(&mut *conn)
        .await
        .map_err(|e| CoordError::storage("ledger overdraft", e))?;
        Ok(())
    }
}

impl TransitionHook for LedgerHook {
    fn on_transition<'a>(
        &'a self,
        conn: &'a mut AnyConnection,
        row: &'a WithdrawalRow,
        _from: Option<State>,
        to: State,
        _detail: &'a str,
    ) -> HookFuture<'a> {
        Box::pin(self.post(conn, row, to))
    }

    fn on_new<'a>(
        &'a self,
        conn: &'a mut AnyConnection,
        batch: &'a [NewWithdrawal],
    ) -> HookFuture<'a> {
        Box::pin(async move {
            // Creation only makes sure the pair has its overdraft row: once
            // per (wallet, asset) of the batch, not once per withdrawal.
            let mut seen = std::collections::HashSet::new();
            for w in batch {
                if seen.insert((w.row.wallet.as_str(), w.row.asset.as_str())) {
                    self.ensure_overdraft(&mut *conn, &w.row).await?;
                }
                for (_, to, _) in w.path.iter().filter(|(from, _, _)| from.is_some()) {
                    self.post(&mut *conn, &w.row, *to).await?;
                }
            }
            Ok(())
        })
    }
}

/// A refused posting, as recorded.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LedgerException {
    /// The withdrawal.
    pub withdrawal_id: String,
    /// Its wallet.
    pub wallet: String,
    /// Its asset.
    pub asset: String,
    /// The state it moved to.
    pub state: String,
    /// `insufficient_funds`, `not_reserved`, ...
    pub kind: String,
    /// The ledger's message.
    pub detail: String,
    /// Unix ms.
    pub created_at_ms: i64,
}

/// Every recorded exception, oldest first.
pub async fn exceptions(conn: &mut AnyConnection) -> Result<Vec<LedgerException>, CoordError> {
    let rows: Vec<(String, String, String, String, String, String, i64)> = sqlx::query_as(
        "SELECT withdrawal_id, wallet, asset, state, kind, detail, created_at
         FROM ledger_exceptions ORDER BY id",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| CoordError::storage("ledger exceptions", e))?;
    Ok(rows
        .into_iter()
        .map(
            |(withdrawal_id, wallet, asset, state, kind, detail, created_at_ms)| LedgerException {
                withdrawal_id,
                wallet,
                asset,
                state,
                kind,
                detail,
                created_at_ms,
            },
        )
        .collect())
}
