#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Property test: random sequences of deposits, reservations, settlements,
//! releases and replays, each in its own transaction that is committed or
//! rolled back, run against an in-memory model and against SQLite and
//! PostgreSQL. After every step the outcome classes agree; at the end the
//! balances agree and the database's invariant check is clean (entries and assets sum to zero, no
//! negative balance beyond the overdraft, reserved equals open reservations,
//! one outcome per withdrawal).

use std::collections::BTreeMap;

use custos_db::Db;
use custos_db::testdb::{fresh_pg, fresh_sqlite};
use custos_ledger::{
    AccountKind, LedgerError, balances, check_invariants, create_schema, deposit, release, reserve,
    set_overdraft_limit, settle,
};
use proptest::prelude::*;

const WALLETS: [&str; 2] = ["w0", "w1"];
const ASSETS: [&str; 2] = ["eth", "usdc"];
/// `w1` may overdraw `eth` by this much.
const OVERDRAFT: i128 = 50;

#[derive(Clone, Debug)]
enum Op {
    Deposit {
        wallet: usize,
        asset: usize,
        amount: u128,
    },
    Reserve {
        wid: usize,
        wallet: usize,
        asset: usize,
        amount: u128,
    },
    Settle {
        wid: usize,
        fee_asset: usize,
        fee: u128,
    },
    Release {
        wid: usize,
    },
    /// Repeat the n-th earlier step (modulo its length) verbatim.
    Replay {
        step: usize,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Posted,
    Replayed,
    Insufficient,
    NotReserved,
    AlreadyFinalized,
    Mismatch,
}

fn classify(r: Result<custos_ledger::Posted, LedgerError>) -> Outcome {
    match r {
        Ok(p) if p.replayed => Outcome::Replayed,
        Ok(_) => Outcome::Posted,
        Err(LedgerError::InsufficientFunds { .. }) => Outcome::Insufficient,
        Err(LedgerError::NotReserved { .. }) => Outcome::NotReserved,
        Err(LedgerError::AlreadyFinalized { .. }) => Outcome::AlreadyFinalized,
        Err(LedgerError::ReplayMismatch { .. }) => Outcome::Mismatch,
        Err(e) => panic!("unexpected error {e:?}"),
    }
}

/// The reference semantics, written independently of the SQL implementation.
#[derive(Clone, Default, Debug)]
struct Model {
    balances: BTreeMap<(String, String, AccountKind), i128>,
    /// deposit ref -> (wallet, asset, amount)
    deposits: BTreeMap<String, (usize, usize, u128)>,
    /// withdrawal id -> (wallet, asset, amount)
    reserves: BTreeMap<String, (usize, usize, u128)>,
    /// withdrawal id -> Some((fee asset, fee)) for settle, None for release
    outcomes: BTreeMap<String, Option<(usize, u128)>>,
}

impl Model {
    fn get(&self, wallet: usize, asset: usize, kind: AccountKind) -> i128 {
        self.balances
            .get(&(WALLETS[wallet].to_string(), ASSETS[asset].to_string(), kind))
            .copied()
            .unwrap_or_default()
    }

    fn add(&mut self, wallet: usize, asset: usize, kind: AccountKind, amount: i128) {
        *self
            .balances
            .entry((WALLETS[wallet].to_string(), ASSETS[asset].to_string(), kind))
            .or_default() += amount;
    }

    fn floor(wallet: usize, asset: usize) -> i128 {
        if wallet == 1 && asset == 0 {
            -OVERDRAFT
        } else {
            0
        }
    }

    fn apply(&mut self, step: usize, op: &Op) -> Outcome {
        match *op {
            Op::Deposit {
                wallet,
                asset,
                amount,
            } => {
                let reference = format!("dep-{step}");
                self.deposit(reference, wallet, asset, amount)
            }
            Op::Reserve {
                wid,
                wallet,
                asset,
                amount,
            } => {
                let wid = format!("wd-{wid}");
                if let Some(existing) = self.reserves.get(&wid) {
                    return if *existing == (wallet, asset, amount) {
                        Outcome::Replayed
                    } else {
                        Outcome::Mismatch
                    };
                }
                let amount_i = amount as i128;
                if self.get(wallet, asset, AccountKind::Available) - amount_i
                    < Self::floor(wallet, asset)
                {
                    return Outcome::Insufficient;
                }
                self.add(wallet, asset, AccountKind::Available, -amount_i);
                self.add(wallet, asset, AccountKind::Reserved, amount_i);
                self.reserves.insert(wid, (wallet, asset, amount));
                Outcome::Posted
            }
            Op::Settle {
                wid,
                fee_asset,
                fee,
            } => {
                let wid = format!("wd-{wid}");
                let Some(&(wallet, asset, amount)) = self.reserves.get(&wid) else {
                    return Outcome::NotReserved;
                };
                match self.outcomes.get(&wid) {
                    Some(Some(existing)) if *existing == (fee_asset, fee) => {
                        return Outcome::Replayed;
                    }
                    Some(Some(_)) => return Outcome::Mismatch,
                    Some(None) => return Outcome::AlreadyFinalized,
                    None => {}
                }
                let fee_i = fee as i128;
                if fee > 0
                    && self.get(wallet, fee_asset, AccountKind::Available) - fee_i
                        < Self::floor(wallet, fee_asset)
                {
                    return Outcome::Insufficient;
                }
                self.add(wallet, asset, AccountKind::Reserved, -(amount as i128));
                self.add(wallet, asset, AccountKind::External, amount as i128);
                if fee > 0 {
                    self.add(wallet, fee_asset, AccountKind::Available, -fee_i);
                    self.add(wallet, fee_asset, AccountKind::Fees, fee_i);
                }
                self.outcomes.insert(wid, Some((fee_asset, fee)));
                Outcome::Posted
            }
            Op::Release { wid } => {
                let wid = format!("wd-{wid}");
                let Some(&(wallet, asset, amount)) = self.reserves.get(&wid) else {
                    return Outcome::NotReserved;
                };
                match self.outcomes.get(&wid) {
                    Some(None) => return Outcome::Replayed,
                    Some(Some(_)) => return Outcome::AlreadyFinalized,
                    None => {}
                }
                self.add(wallet, asset, AccountKind::Reserved, -(amount as i128));
                self.add(wallet, asset, AccountKind::Available, amount as i128);
                self.outcomes.insert(wid, None);
                Outcome::Posted
            }
            Op::Replay { .. } => unreachable!("resolved before apply"),
        }
    }

    fn deposit(&mut self, reference: String, wallet: usize, asset: usize, amount: u128) -> Outcome {
        if let Some(existing) = self.deposits.get(&reference) {
            return if *existing == (wallet, asset, amount) {
                Outcome::Replayed
            } else {
                Outcome::Mismatch
            };
        }
        self.add(wallet, asset, AccountKind::External, -(amount as i128));
        self.add(wallet, asset, AccountKind::Available, amount as i128);
        self.deposits.insert(reference, (wallet, asset, amount));
        Outcome::Posted
    }

    /// The model's own invariants (the SQL side is checked by `check_invariants`).
    fn check(&self) {
        let mut per_asset: BTreeMap<&str, i128> = BTreeMap::new();
        for ((wallet, asset, kind), b) in &self.balances {
            *per_asset.entry(asset).or_default() += b;
            let w = WALLETS.iter().position(|x| x == wallet).unwrap();
            let a = ASSETS.iter().position(|x| x == asset).unwrap();
            match kind {
                AccountKind::Available => assert!(*b >= Self::floor(w, a)),
                AccountKind::Reserved | AccountKind::Fees => assert!(*b >= 0),
                AccountKind::External => {}
            }
        }
        assert!(per_asset.values().all(|s| *s == 0));
        for (wid, (w, a, amount)) in &self.reserves {
            if !self.outcomes.contains_key(wid) {
                assert!(self.get(*w, *a, AccountKind::Reserved) >= *amount as i128);
            }
        }
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..2usize, 0..2usize, 1..1_000u128)
            .prop_map(|(wallet, asset, amount)| Op::Deposit { wallet, asset, amount }),
        4 => (0..4usize, 0..2usize, 0..2usize, 1..400u128)
            .prop_map(|(wid, wallet, asset, amount)| Op::Reserve { wid, wallet, asset, amount }),
        3 => (0..4usize, 0..2usize, 0..60u128)
            .prop_map(|(wid, fee_asset, fee)| Op::Settle { wid, fee_asset, fee }),
        3 => (0..4usize).prop_map(|wid| Op::Release { wid }),
        2 => any::<usize>().prop_map(|step| Op::Replay { step }),
    ]
}

/// (operation, commit?) — about one transaction in six is rolled back.
fn steps() -> impl Strategy<Value = Vec<(Op, bool)>> {
    prop::collection::vec((op(), prop::bool::weighted(0.85)), 1..60)
}

/// Replays resolve to the earlier step they repeat (keeping that step's index
/// so a replayed deposit reuses its reference).
fn resolve(steps: &[(Op, bool)]) -> Vec<(usize, Op, bool)> {
    let mut out: Vec<(usize, Op, bool)> = Vec::new();
    for (i, (op, commit)) in steps.iter().enumerate() {
        match op {
            Op::Replay { step } if !out.is_empty() => {
                let (orig, op, _) = out[step % out.len()].clone();
                out.push((orig, op, *commit));
            }
            Op::Replay { .. } => out.push((i, Op::Release { wid: 0 }, *commit)),
            op => out.push((i, op.clone(), *commit)),
        }
    }
    out
}

async fn run_db(conn: &mut sqlx::AnyConnection, step: usize, op: &Op) -> Outcome {
    use sqlx::Connection;
    let mut tx = conn.begin().await.unwrap();
    let r = match *op {
        Op::Deposit {
            wallet,
            asset,
            amount,
        } => {
            deposit(
                &mut tx,
                WALLETS[wallet],
                ASSETS[asset],
                amount,
                &format!("dep-{step}"),
            )
            .await
        }
        Op::Reserve {
            wid,
            wallet,
            asset,
            amount,
        } => {
            reserve(
                &mut tx,
                &format!("wd-{wid}"),
                WALLETS[wallet],
                ASSETS[asset],
                amount,
            )
            .await
        }
        Op::Settle {
            wid,
            fee_asset,
            fee,
        } => settle(&mut tx, &format!("wd-{wid}"), ASSETS[fee_asset], fee).await,
        Op::Release { wid } => release(&mut tx, &format!("wd-{wid}")).await,
        Op::Replay { .. } => unreachable!(),
    };
    // The caller's transaction is the unit: commit or roll back the lot.
    let outcome = classify(r);
    tx.commit().await.unwrap();
    outcome
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The model alone over many sequences: its invariants always hold.
    #[test]
    fn model_keeps_invariants(steps in steps()) {
        let mut model = Model::default();
        for (step, op, commit) in resolve(&steps) {
            let mut next = model.clone();
            next.apply(step, &op);
            if commit {
                model = next;
            }
            model.check();
        }
    }
}

/// Runs `steps` against `db` and the model side by side, then compares the
/// balances and runs the database's invariant check.
async fn matches_model(db: &Db, steps: &[(Op, bool)]) {
    create_schema(db).await.unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    set_overdraft_limit(&mut conn, "w1", "eth", OVERDRAFT as u128)
        .await
        .unwrap();
    let mut model = Model::default();
    for (step, op, commit) in resolve(steps) {
        let mut next = model.clone();
        let expected = next.apply(step, &op);
        let got = if commit {
            run_db(&mut conn, step, &op).await
        } else {
            run_then_rollback(&mut conn, step, &op).await
        };
        assert_eq!(got, expected, "step {step}: {op:?}");
        if commit {
            model = next;
        }
    }
    let mut db_balances: BTreeMap<(String, String, AccountKind), i128> = BTreeMap::new();
    for b in balances(&mut conn).await.unwrap() {
        if b.amount != 0 {
            db_balances.insert(
                (b.account.wallet, b.account.asset, b.account.kind),
                b.amount,
            );
        }
    }
    model.balances.retain(|_, b| *b != 0);
    assert_eq!(db_balances, model.balances);
    model.check();
    let violations = check_invariants(&mut conn).await.unwrap();
    assert!(violations.is_empty(), "{violations:?}");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// The SQLite ledger behaves like the model, step by step, including
    /// rolled-back transactions and replays.
    #[test]
    fn sqlite_matches_model(steps in steps()) {
        runtime().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let db = fresh_sqlite(dir.path(), "model").await.unwrap();
            matches_model(&db, &steps).await;
        });
    }
}

proptest! {
    // Each case creates a PostgreSQL database: fewer cases.
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    /// The same on PostgreSQL (which must be reachable: the test fails otherwise).
    #[test]
    fn postgres_matches_model(steps in steps()) {
        runtime().block_on(async {
            let db = fresh_pg("ledger_model")
                .await
                .expect("PostgreSQL on 127.0.0.1:5432 (run scripts/ensure-services.sh)");
            matches_model(&db, &steps).await;
            db.pool.close().await;
        });
    }
}

/// Runs the operation in a transaction that is then dropped without commit:
/// the outcome must be what a commit would have given, and nothing may stay.
async fn run_then_rollback(conn: &mut sqlx::AnyConnection, step: usize, op: &Op) -> Outcome {
    use sqlx::Connection;
    let before = balances(conn).await.unwrap();
    let outcome = {
        let mut tx = conn.begin().await.unwrap();
        let r = match *op {
            Op::Deposit {
                wallet,
                asset,
                amount,
            } => {
                deposit(
                    &mut tx,
                    WALLETS[wallet],
                    ASSETS[asset],
                    amount,
                    &format!("dep-{step}"),
                )
                .await
            }
            Op::Reserve {
                wid,
                wallet,
                asset,
                amount,
            } => {
                reserve(
                    &mut tx,
                    &format!("wd-{wid}"),
                    WALLETS[wallet],
                    ASSETS[asset],
                    amount,
                )
                .await
            }
            Op::Settle {
                wid,
                fee_asset,
                fee,
            } => settle(&mut tx, &format!("wd-{wid}"), ASSETS[fee_asset], fee).await,
            Op::Release { wid } => release(&mut tx, &format!("wd-{wid}")).await,
            Op::Replay { .. } => unreachable!(),
        };
        classify(r)
        // tx dropped here
    };
    let after = balances(conn).await.unwrap();
    let nonzero = |v: Vec<custos_ledger::Balance>| {
        v.into_iter().filter(|b| b.amount != 0).collect::<Vec<_>>()
    };
    assert_eq!(
        nonzero(after),
        nonzero(before),
        "rolled-back step {step} left a trace"
    );
    outcome
}
