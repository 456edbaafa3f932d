//! The record of credited deposits (table `deposit_credits`) and the
//! decision which of them a reorganisation took out of the chain.
//!
//! # Design
//!
//! A deposit is named on its chain by its reference (`<chain>:<txid>:<vout>`,
//! `<chain>:<tx hash>[:log<i>]`). Each time it is credited it gets a row
//! `(reference, generation)`: generation 0 the first time, one more after
//! each reversal, so a transaction that a reorganisation took out and a
//! later block mined again is credited again, under a new ledger reference
//! ([`ledger_reference`]: `<reference>` for generation 0, as before this
//! table existed, and `<reference>#<generation>` after). A rescan of blocks
//! already credited finds the reference's newest row `credited` and credits
//! nothing; only a row `reversed` opens the next generation.
//!
//! A row moves `pending → credited → reversing → reversed`. `pending` and
//! `reversing` are written before the audit entry (kind 25 / 26) is
//! appended, with the log's size then (`log_from`): a retry after a crash
//! looks for the entry from there ([`crate::audit::AuditTrail::logged`])
//! instead of logging it twice. The ledger posting, the outbox event and the
//! row's next state commit in one transaction after the entry is in the log.
//!
//! Reorganisations: each scan asks the chain's node for the canonical
//! block hash at the height of every credited deposit within the last
//! [`REORG_WINDOW`] blocks ([`crate::chain::Chains::canonical_hash`]); a
//! height whose block is now another one reverses the deposits credited in
//! the old block ([`plan`]), and the scan cursor goes back to just above the
//! highest credited block still in the chain, so the new branch is scanned.
//! A height the node does not have (a shorter chain, a node behind) decides
//! nothing yet: only a different block there reverses a credit.

use std::collections::BTreeMap;

use sqlx::{AnyConnection, AnyPool, Row};

use super::Chains;
use crate::clock::now_ms;
use crate::error::CoordError;

/// How many blocks below the chain's head credited deposits are checked for
/// a reorganisation. Deeper reorganisations are not detected: far beyond any
/// the supported chains have had with their usual confirmations.
pub const REORG_WINDOW: u64 = 100;

/// Idempotent DDL.
pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS deposit_credits (
    reference TEXT NOT NULL,
    generation BIGINT NOT NULL,
    chain TEXT NOT NULL,
    wallet TEXT NOT NULL,
    address TEXT NOT NULL,
    asset TEXT NOT NULL,
    amount TEXT NOT NULL,
    block_number BIGINT NOT NULL,
    block_hash TEXT NOT NULL,
    state TEXT NOT NULL,
    posted BIGINT NOT NULL,
    log_from BIGINT NOT NULL,
    reason TEXT NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (reference, generation)
);
CREATE INDEX IF NOT EXISTS deposit_credits_chain ON deposit_credits (chain, state, block_number)";

fn db_err(e: sqlx::Error) -> CoordError {
    CoordError::storage("deposit credits", e)
}

/// Where a credit stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreditState {
    /// About to be logged (kind 25) and credited.
    Pending,
    /// In the log and (with the ledger on) in the ledger.
    Credited,
    /// Its block left the chain: about to be logged (kind 26) and reversed.
    Reversing,
    /// Taken back; the reference may be credited again (next generation).
    Reversed,
}

impl CreditState {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Credited => "credited",
            Self::Reversing => "reversing",
            Self::Reversed => "reversed",
        }
    }

    fn parse(s: &str) -> Result<Self, CoordError> {
        Ok(match s {
            "pending" => Self::Pending,
            "credited" => Self::Credited,
            "reversing" => Self::Reversing,
            "reversed" => Self::Reversed,
            other => {
                return Err(CoordError::Internal(format!(
                    "deposit_credits: unknown state {other:?}"
                )));
            }
        })
    }
}

/// One credit of a deposit, as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credit {
    /// The deposit's reference on its chain.
    pub reference: String,
    /// How many times it was credited and reversed before this one.
    pub generation: u64,
    /// The chain's name.
    pub chain: String,
    /// The wallet (key id) credited.
    pub wallet: String,
    /// The address paid.
    pub address: String,
    /// The asset.
    pub asset: String,
    /// Base units.
    pub amount: u128,
    /// Height of the block it was credited in.
    pub block_number: u64,
    /// That block's hash.
    pub block_hash: String,
    /// Where it stands.
    pub state: CreditState,
    /// Whether the ledger holds its posting (false with the ledger off).
    pub posted: bool,
    /// The log's size before its newest entry was appended: where a retry
    /// looks for that entry.
    pub log_from: u64,
    /// Why it is reversed (empty unless reversing or reversed).
    pub reason: String,
}

/// The ledger's reference of `generation` of the deposit `reference`.
pub fn ledger_reference(reference: &str, generation: u64) -> String {
    if generation == 0 {
        reference.to_owned()
    } else {
        format!("{reference}#{generation}")
    }
}

impl Credit {
    /// Its ledger reference (also the reference in its audit entries).
    pub fn ledger_reference(&self) -> String {
        ledger_reference(&self.reference, self.generation)
    }

    /// The kind 25 entry of this credit.
    pub fn credited_entry(&self) -> custos_audit::EntryBody {
        custos_audit::EntryBody::DepositCredited {
            chain: self.chain.clone(),
            key_id: self.wallet.clone(),
            address: self.address.clone(),
            asset: self.asset.clone(),
            amount: self.amount.to_string(),
            reference: self.ledger_reference(),
            block_number: self.block_number,
            block_hash: self.block_hash.clone(),
        }
    }

    /// The kind 26 entry reversing this credit.
    pub fn reversed_entry(&self) -> custos_audit::EntryBody {
        custos_audit::EntryBody::DepositReversed {
            chain: self.chain.clone(),
            key_id: self.wallet.clone(),
            asset: self.asset.clone(),
            amount: self.amount.to_string(),
            reference: self.ledger_reference(),
            block_number: self.block_number,
            block_hash: self.block_hash.clone(),
            reason: self.reason.clone(),
        }
    }
}

/// The record's columns (a constant: the formatted queries hold no input).
const COLUMNS: &str = "reference, generation, chain, wallet, address, asset, amount, \
    block_number, block_hash, state, posted, log_from, reason";

fn to_i64(v: u64, what: &str) -> Result<i64, CoordError> {
    i64::try_from(v).map_err(|_| CoordError::Internal(format!("deposit credits: {what} {v}")))
}

fn from_row(row: &sqlx::any::AnyRow) -> Result<Credit, CoordError> {
    let reference: String = row.get("reference");
    let bad = |what: &str| CoordError::Internal(format!("deposit credit {reference}: bad {what}"));
    let unsigned = |col: &str| u64::try_from(row.get::<i64, _>(col)).map_err(|_| bad(col));
    Ok(Credit {
        generation: unsigned("generation")?,
        chain: row.get("chain"),
        wallet: row.get("wallet"),
        address: row.get("address"),
        asset: row.get("asset"),
        amount: row
            .get::<String, _>("amount")
            .parse()
            .map_err(|_| bad("amount"))?,
        block_number: unsigned("block_number")?,
        block_hash: row.get("block_hash"),
        state: CreditState::parse(&row.get::<String, _>("state"))?,
        posted: row.get::<i64, _>("posted") != 0,
        log_from: unsigned("log_from")?,
        reason: row.get("reason"),
        reference,
    })
}

/// The newest credit of the deposit `reference`, if it was ever credited.
pub async fn newest(pool: &AnyPool, reference: &str) -> Result<Option<Credit>, CoordError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM deposit_credits WHERE reference = $1
         ORDER BY generation DESC LIMIT 1"
    )))
    .bind(reference)
    .fetch_optional(pool)
    .await
    .map_err(db_err)?
    .as_ref()
    .map(from_row)
    .transpose()
}

/// The credits of `chain` in blocks at or above `floor` that are not
/// reversed: credited (checked for a reorganisation), or pending or being
/// reversed (to finish).
pub async fn recent(pool: &AnyPool, chain: &str, floor: u64) -> Result<Vec<Credit>, CoordError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM deposit_credits
         WHERE chain = $1 AND state <> 'reversed' AND block_number >= $2
         ORDER BY block_number, reference, generation"
    )))
    .bind(chain)
    .bind(to_i64(floor, "height")?)
    .fetch_all(pool)
    .await
    .map_err(db_err)?
    .iter()
    .map(from_row)
    .collect()
}

/// Records `credit` (any state), replacing its row.
pub async fn save(conn: &mut AnyConnection, credit: &Credit) -> Result<(), CoordError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO deposit_credits ({COLUMNS}, updated_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
         ON CONFLICT (reference, generation) DO UPDATE SET
           chain = excluded.chain, wallet = excluded.wallet, address = excluded.address,
           asset = excluded.asset, amount = excluded.amount,
           block_number = excluded.block_number, block_hash = excluded.block_hash,
           state = excluded.state, posted = excluded.posted, log_from = excluded.log_from,
           reason = excluded.reason, updated_ms = excluded.updated_ms"
    )))
    .bind(&credit.reference)
    .bind(to_i64(credit.generation, "generation")?)
    .bind(&credit.chain)
    .bind(&credit.wallet)
    .bind(&credit.address)
    .bind(&credit.asset)
    .bind(credit.amount.to_string())
    .bind(to_i64(credit.block_number, "height")?)
    .bind(&credit.block_hash)
    .bind(credit.state.as_str())
    .bind(i64::from(credit.posted))
    .bind(to_i64(credit.log_from, "log index")?)
    .bind(&credit.reason)
    .bind(now_ms())
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    Ok(())
}

/// What a reorganisation check decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Indices (into the credits checked) of those to reverse, with why.
    pub reverse: Vec<(usize, String)>,
    /// The height the scan starts again at, when something was reversed.
    pub rescan_from: Option<u64>,
}

/// Which of `credits` (height and block hash each) a reorganisation took
/// out of the chain, given the canonical block hash at each height the node
/// has (`canonical`; a height it lacks decides nothing), and where the scan
/// starts again: just above the highest credit still in the chain below the
/// lowest one reversed (the fork is above it), else at `floor` (the bottom
/// of the window checked).
pub fn plan(credits: &[(u64, &str)], canonical: &BTreeMap<u64, String>, floor: u64) -> Plan {
    let mut out = Plan::default();
    let mut lowest_gone: Option<u64> = None;
    for (i, (height, hash)) in credits.iter().enumerate() {
        if let Some(now) = canonical.get(height)
            && now != hash
        {
            out.reverse.push((
                i,
                format!("block {height} {hash} left the chain: block {height} is now {now}"),
            ));
            lowest_gone = Some(lowest_gone.map_or(*height, |l| l.min(*height)));
        }
    }
    if let Some(gone) = lowest_gone {
        let kept_below = credits
            .iter()
            .filter(|(h, hash)| *h < gone && canonical.get(h).is_some_and(|c| c == hash))
            .map(|(h, _)| *h)
            .max();
        out.rescan_from = Some(kept_below.map_or(floor, |h| h + 1).min(gone));
    }
    out
}

impl Chains {
    /// The chains deposits are scanned on, by name.
    pub fn deposit_chains(&self) -> Vec<String> {
        self.evm
            .iter()
            .map(|c| c.settings.name.clone())
            .chain(self.utxo.iter().map(|c| c.settings.name.clone()))
            .collect()
    }

    /// The height of `chain`'s newest block, as its node sees it.
    pub async fn deposit_head(&self, chain: &str) -> Result<u64, CoordError> {
        if let Some(c) = self.evm(chain) {
            c.head().await
        } else if let Some(c) = self.utxo(chain) {
            c.head().await
        } else {
            Err(CoordError::not_found("chain", chain))
        }
    }

    /// The hash of the block at `height` in `chain`'s canonical chain, in
    /// the form the deposit scans record; `None` when the node has no block
    /// there (yet). One question per chain family: EVM
    /// `eth_getBlockByNumber`, UTXO `getblockhash`.
    pub async fn canonical_hash(
        &self,
        chain: &str,
        height: u64,
    ) -> Result<Option<String>, CoordError> {
        if let Some(c) = self.evm(chain) {
            c.block_hash_at(height).await
        } else if let Some(c) = self.utxo(chain) {
            c.block_hash_at(height).await
        } else {
            Err(CoordError::not_found("chain", chain))
        }
    }

    /// Moves `chain`'s deposit scan back so that its blocks from `height`
    /// on are read again (never forward).
    pub async fn rewind_deposit_scan(&self, chain: &str, height: u64) -> Result<(), CoordError> {
        if self.evm(chain).is_some() {
            self.rewind_evm_cursor(chain, height).await
        } else if let Some(c) = self.utxo(chain) {
            self.rewind_utxo_cursor(c, height).await
        } else {
            Err(CoordError::not_found("chain", chain))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn canon(pairs: &[(u64, &str)]) -> BTreeMap<u64, String> {
        pairs.iter().map(|(h, s)| (*h, (*s).to_owned())).collect()
    }

    #[test]
    fn nothing_moves_while_every_block_is_canonical() {
        let credits = [(10, "a"), (12, "b"), (12, "b")];
        let p = plan(&credits, &canon(&[(10, "a"), (12, "b")]), 5);
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn a_height_the_node_lacks_decides_nothing() {
        // A shorter chain after a rollback, or a node behind: no reversal
        // until another block stands at that height.
        let p = plan(&[(10, "a"), (12, "b")], &canon(&[(10, "a")]), 5);
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn credits_in_replaced_blocks_are_reversed_and_the_scan_rewinds_above_the_last_kept() {
        let credits = [(8, "x"), (10, "a"), (12, "b"), (12, "b"), (15, "c")];
        let p = plan(
            &credits,
            &canon(&[(8, "x"), (10, "a"), (12, "B"), (15, "C")]),
            5,
        );
        let reversed: Vec<usize> = p.reverse.iter().map(|(i, _)| *i).collect();
        assert_eq!(reversed, [2, 3, 4]);
        assert!(
            p.reverse[0].1.contains("block 12 is now B"),
            "{:?}",
            p.reverse
        );
        // The fork is above block 10 (still canonical): blocks 11.. again.
        assert_eq!(p.rescan_from, Some(11));
    }

    #[test]
    fn without_a_kept_credit_below_the_scan_rewinds_to_the_window() {
        let p = plan(&[(10, "a"), (11, "b")], &canon(&[(10, "A"), (11, "b")]), 3);
        assert_eq!(p.reverse.len(), 1);
        assert_eq!(p.reverse[0].0, 0);
        assert_eq!(p.rescan_from, Some(3));
    }

    #[test]
    fn a_kept_credit_above_the_fork_does_not_hide_it() {
        // A credit at 11 still canonical while 10 changed cannot happen on
        // one chain, but a node answering from two branches must not make
        // the scan skip block 10.
        let p = plan(&[(10, "a"), (11, "b")], &canon(&[(10, "A"), (11, "b")]), 3);
        assert_eq!(p.rescan_from, Some(3));
        let p = plan(&[(9, "z"), (10, "a")], &canon(&[(9, "z"), (10, "A")]), 3);
        assert_eq!(p.rescan_from, Some(10));
    }

    #[test]
    fn ledger_references_carry_the_generation_after_a_reversal() {
        assert_eq!(ledger_reference("ltc:ab:0", 0), "ltc:ab:0");
        assert_eq!(ledger_reference("ltc:ab:0", 2), "ltc:ab:0#2");
    }

    fn credit(reference: &str, generation: u64, block: u64, state: CreditState) -> Credit {
        Credit {
            reference: reference.to_owned(),
            generation,
            chain: "anvil".to_owned(),
            wallet: "w".to_owned(),
            address: "0xab".to_owned(),
            asset: "ETH".to_owned(),
            amount: u128::MAX,
            block_number: block,
            block_hash: format!("0x{block}"),
            state,
            posted: true,
            log_from: 7,
            reason: String::new(),
        }
    }

    /// The record round-trips (a u128 amount, every state), its newest
    /// generation is the one a scan compares with, and the reorganisation
    /// check sees credited and reversing rows of its window only.
    async fn recorded(pool: AnyPool) {
        assert_eq!(newest(&pool, "anvil:0x1").await.unwrap(), None);
        let mut conn = pool.acquire().await.unwrap();
        let mut first = credit("anvil:0x1", 0, 10, CreditState::Pending);
        save(&mut conn, &first).await.unwrap();
        first.state = CreditState::Credited;
        save(&mut conn, &first).await.unwrap();
        assert_eq!(
            newest(&pool, "anvil:0x1").await.unwrap().as_ref(),
            Some(&first)
        );
        first.state = CreditState::Reversed;
        first.reason = "block 10 left the chain".to_owned();
        save(&mut conn, &first).await.unwrap();
        let again = credit("anvil:0x1", 1, 12, CreditState::Credited);
        save(&mut conn, &again).await.unwrap();
        assert_eq!(
            newest(&pool, "anvil:0x1").await.unwrap(),
            Some(again.clone())
        );
        assert_eq!(again.ledger_reference(), "anvil:0x1#1");
        let old = credit("anvil:0x0", 0, 3, CreditState::Credited);
        save(&mut conn, &old).await.unwrap();
        let going = credit("anvil:0x2", 0, 11, CreditState::Reversing);
        save(&mut conn, &going).await.unwrap();
        let window = recent(&pool, "anvil", 5).await.unwrap();
        assert_eq!(window, [going, again]);
        let waiting = credit("anvil:0x3", 0, 13, CreditState::Pending);
        save(&mut conn, &waiting).await.unwrap();
        assert_eq!(recent(&pool, "anvil", 13).await.unwrap(), [waiting]);
        assert!(recent(&pool, "other", 0).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn credits_are_recorded_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::storage::open(dir.path()).await.unwrap();
        // Idempotent DDL: a second run is harmless.
        db.sql().execute_ddl(SCHEMA).await.unwrap();
        recorded(db.pool().clone()).await;
    }

    #[tokio::test]
    async fn credits_are_recorded_on_postgres() {
        let url = custos_service::db::testdb::fresh_pg_url("credits")
            .await
            .expect("PostgreSQL (scripts/ensure-services.sh)");
        let db = crate::storage::connect(&url).await.unwrap();
        db.sql().execute_ddl(SCHEMA).await.unwrap();
        recorded(db.pool().clone()).await;
    }
}
