//! Library-level tests of the adapters on SQLite and PostgreSQL: the hooks
//! inside real store transitions, and the reports over a seeded dataset
//! checked against figures computed here independently.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;

use custos_ledger::{AccountKind, EntryKind};
use serde_json::Value;

use super::events::OutboxHook;
use super::ledger::{LedgerHook, parse_overdraft};
use super::reports::{self, Group, ReportQuery};
use crate::db::Db;
use crate::withdrawal::State;
use crate::withdrawal::store::{Val, WithdrawalRow, WithdrawalStore};

async fn sqlite() -> (Db, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = crate::storage::open(dir.path()).await.unwrap();
    prepare(&db).await;
    (db, dir)
}

async fn pg() -> Db {
    let url = custos_service::db::testdb::fresh_pg_url("adapters")
        .await
        .expect("PostgreSQL (scripts/ensure-services.sh)");
    let db = crate::storage::connect(&url).await.unwrap();
    prepare(&db).await;
    db
}

async fn prepare(db: &Db) {
    super::create_schemas(&custos_service::db::Db {
        pool: db.pool().clone(),
        backend: db.backend(),
    })
    .await
    .unwrap();
}

fn row(id: &str, wallet: &str, amount: u128) -> WithdrawalRow {
    WithdrawalRow {
        id: id.into(),
        client_id: "payments-backend".into(),
        idempotency_key: id.into(),
        request_hash: "h".into(),
        wallet: wallet.into(),
        chain: "anvil".into(),
        asset: "ETH".into(),
        destination: "0x00000000000000000000000000000000000000aa".into(),
        amount: amount.to_string(),
        fee_cap: "0".into(),
        initiator: "payments-backend".into(),
        created_ms: 1_000,
        updated_ms: 1_000,
        ..WithdrawalRow::default()
    }
}

async fn walk(store: &WithdrawalStore, id: &str, path: &[State]) {
    let mut from = State::Requested;
    for to in path {
        let moved = store
            .transition(id, &[from], *to, vec![], &format!("to {to}"))
            .await
            .unwrap();
        assert!(moved.is_some(), "{id}: {from} -> {to}");
        from = *to;
    }
}

const TO_SIGNED: [State; 6] = [
    State::RiskScored,
    State::PolicyEvaluated,
    State::Approved,
    State::TimeLocked,
    State::Signing,
    State::Signed,
];

async fn balance(db: &Db, wallet: &str, kind: AccountKind) -> i128 {
    let mut c = db.pool().acquire().await.unwrap();
    custos_ledger::balance(&mut c, wallet, "ETH", kind)
        .await
        .unwrap()
}

async fn entry_kinds(db: &Db, reference: &str) -> Vec<EntryKind> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT kind FROM ledger_entries WHERE reference = $1 ORDER BY id")
            .bind(reference)
            .fetch_all(db.pool())
            .await
            .unwrap();
    rows.iter()
        .map(|(k,)| EntryKind::parse(k).unwrap())
        .collect()
}

async fn events_of(db: &Db, id: &str) -> Vec<(i64, String, Value)> {
    let rows: Vec<(i64, String, String, String)> = sqlx::query_as(
        "SELECT seq, event_type, payload, client_id FROM outbox WHERE aggregate_id = $1 ORDER BY seq",
    )
    .bind(id)
    .fetch_all(db.pool())
    .await
    .unwrap();
    rows.into_iter()
        .map(|(seq, t, p, client)| {
            assert_eq!(client, "payments-backend");
            (seq, t, serde_json::from_str(&p).unwrap())
        })
        .collect()
}

async fn hooks_scenario(db: Db) {
    let ledger = Arc::new(LedgerHook::new(parse_overdraft("unlimited").unwrap()));
    let store = WithdrawalStore::new(db.pool().clone())
        .with_hook(ledger.clone())
        .with_hook(Arc::new(OutboxHook::new(None)));

    // Signed: reserve then settle; unfunded, so `available` goes negative
    // within the unlimited overdraft and the flow never stops on the books.
    store.insert(&row("wd-signed", "hot", 700)).await.unwrap();
    walk(&store, "wd-signed", &TO_SIGNED).await;
    assert_eq!(
        entry_kinds(&db, "wd-signed").await,
        [EntryKind::Reserve, EntryKind::Settle]
    );
    assert_eq!(balance(&db, "hot", AccountKind::Available).await, -700);
    assert_eq!(balance(&db, "hot", AccountKind::Reserved).await, 0);
    assert_eq!(balance(&db, "hot", AccountKind::External).await, 700);

    // Blocked: never reserved.
    store.insert(&row("wd-blocked", "hot", 50)).await.unwrap();
    walk(
        &store,
        "wd-blocked",
        &[State::RiskScored, State::PolicyEvaluated, State::Blocked],
    )
    .await;
    assert!(entry_kinds(&db, "wd-blocked").await.is_empty());

    // Cancelled in its time lock: reserve then release.
    store.insert(&row("wd-cancel", "hot", 30)).await.unwrap();
    walk(
        &store,
        "wd-cancel",
        &[
            State::RiskScored,
            State::PolicyEvaluated,
            State::Approved,
            State::TimeLocked,
        ],
    )
    .await;
    assert_eq!(balance(&db, "hot", AccountKind::Reserved).await, 30);
    // A cancel moves from any cancellable state: `from` is then unknown to hooks.
    store
        .transition(
            "wd-cancel",
            &[State::Approved, State::TimeLocked],
            State::Cancelled,
            vec![("reason", Val::Text(Some("by treasury".into())))],
            "cancelled by treasury",
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        entry_kinds(&db, "wd-cancel").await,
        [EntryKind::Reserve, EntryKind::Release]
    );
    assert_eq!(balance(&db, "hot", AccountKind::Reserved).await, 0);
    assert_eq!(balance(&db, "hot", AccountKind::Available).await, -700);

    // Every state change enqueued exactly one event, in order, with the payload.
    let ev = events_of(&db, "wd-signed").await;
    let types: Vec<&str> = ev.iter().map(|(_, t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "withdrawal.requested",
            "withdrawal.risk_scored",
            "withdrawal.policy_evaluated",
            "withdrawal.approved",
            "withdrawal.time_locked",
            "withdrawal.signing",
            "withdrawal.signed",
        ]
    );
    assert_eq!(
        ev.iter().map(|(s, _, _)| *s).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<i64>>()
    );
    let last = &ev.last().unwrap().2;
    assert_eq!(last["amount"], "700");
    assert_eq!(last["wallet"], "hot");
    assert_eq!(last["state"], "signed");
    assert_eq!(last["from"], "signing");
    assert_eq!(last["initiator"], "payments-backend");
    assert_eq!(
        last["destination"],
        "0x00000000000000000000000000000000000000aa"
    );
    let cancel = events_of(&db, "wd-cancel").await;
    let (_, t, p) = cancel.last().unwrap();
    assert_eq!(t, "withdrawal.cancelled");
    assert_eq!(p["detail"], "cancelled by treasury");
    assert_eq!(p["from"], Value::Null);
    assert_eq!(events_of(&db, "wd-blocked").await.len(), 4);

    // A chain transaction: `signed` does not settle, `confirmed` does; a
    // transaction that reverts (broadcast → failed) releases.
    for (id, end) in [("wd-chain", State::Confirmed), ("wd-revert", State::Failed)] {
        store.insert(&row(id, "hot", 10)).await.unwrap();
        walk(&store, id, &TO_SIGNED[..3]).await;
        store
            .transition(
                id,
                &[State::Approved],
                State::Signing,
                vec![("unsigned_tx", Val::Blob(Some(vec![2, 0xf8])))],
                "tx built",
            )
            .await
            .unwrap()
            .unwrap();
        for (from, to) in [
            (State::Signing, State::Signed),
            (State::Signed, State::Broadcast),
        ] {
            store
                .transition(id, &[from], to, vec![], "chain")
                .await
                .unwrap()
                .unwrap();
        }
        assert_eq!(entry_kinds(&db, id).await, [EntryKind::Reserve], "{id}");
        // The adapter records the fee paid at confirmation.
        let fee = if end == State::Confirmed {
            vec![("fee_paid", Val::Text(Some("7".into())))]
        } else {
            vec![]
        };
        store
            .transition(id, &[State::Broadcast], end, fee, "mined")
            .await
            .unwrap()
            .unwrap();
        let outcome = if end == State::Confirmed {
            EntryKind::Settle
        } else {
            EntryKind::Release
        };
        assert_eq!(
            entry_kinds(&db, id).await,
            [EntryKind::Reserve, outcome],
            "{id}"
        );
    }
    assert_eq!(balance(&db, "hot", AccountKind::External).await, 710);
    // The confirmed transaction's fee (7 wei) went from available to fees.
    assert_eq!(balance(&db, "hot", AccountKind::Fees).await, 7);
    assert_eq!(balance(&db, "hot", AccountKind::Available).await, -717);
    let types: Vec<String> = events_of(&db, "wd-chain")
        .await
        .into_iter()
        .map(|(_, t, _)| t)
        .collect();
    assert_eq!(
        types.last().map(String::as_str),
        Some("withdrawal.confirmed")
    );
    assert_eq!(types.len(), 8);

    // A finite overdraft: the shortfall is recorded, the withdrawal proceeds;
    // the settlement reserves again once the funds are there.
    let strict = Arc::new(LedgerHook::new(0));
    let store = WithdrawalStore::new(db.pool().clone())
        .with_hook(strict.clone())
        .with_hook(Arc::new(OutboxHook::new(None)));
    store.insert(&row("wd-short", "cold", 500)).await.unwrap();
    walk(&store, "wd-short", &TO_SIGNED[..3]).await;
    assert_eq!(
        store.get("wd-short").await.unwrap().unwrap().state,
        "approved"
    );
    assert!(entry_kinds(&db, "wd-short").await.is_empty());
    let mut c = db.pool().acquire().await.unwrap();
    let ex = super::ledger::exceptions(&mut c).await.unwrap();
    assert_eq!(ex.len(), 1);
    assert_eq!(ex[0].withdrawal_id, "wd-short");
    assert_eq!(ex[0].kind, "insufficient_funds");
    assert_eq!(
        strict
            .exceptions()
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    custos_ledger::deposit(&mut c, "cold", "ETH", 800, "eth:0xdep:0")
        .await
        .unwrap();
    drop(c);
    store
        .transition(
            "wd-short",
            &[State::Approved],
            State::Signing,
            vec![],
            "no lock",
        )
        .await
        .unwrap()
        .unwrap();
    store
        .transition(
            "wd-short",
            &[State::Signing],
            State::Signed,
            vec![],
            "signed",
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        entry_kinds(&db, "wd-short").await,
        [EntryKind::Reserve, EntryKind::Settle]
    );
    assert_eq!(balance(&db, "cold", AccountKind::Available).await, 300);
    // The wallet first seen under the strict hook keeps its limit of 0, the
    // one seen under the default keeps "unlimited".
    let mut c = db.pool().acquire().await.unwrap();
    assert_eq!(
        custos_ledger::overdraft_limit(&mut c, "cold", "ETH")
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        custos_ledger::overdraft_limit(&mut c, "hot", "ETH")
            .await
            .unwrap(),
        i128::MAX.unsigned_abs()
    );
    let violations = custos_ledger::check_invariants(&mut c).await.unwrap();
    assert!(violations.is_empty(), "{violations:?}");
}

#[tokio::test]
async fn hooks_post_and_enqueue_on_sqlite() {
    let (db, _dir) = sqlite().await;
    hooks_scenario(db).await;
}

#[tokio::test]
async fn hooks_post_and_enqueue_on_postgres() {
    hooks_scenario(pg().await).await;
}

#[test]
fn overdraft_setting() {
    assert_eq!(parse_overdraft("unlimited"), Ok(i128::MAX.unsigned_abs()));
    assert_eq!(parse_overdraft(" 1000 "), Ok(1000));
    assert!(parse_overdraft("-1").is_err());
    assert!(parse_overdraft("lots").is_err());
    assert!(parse_overdraft(&u128::MAX.to_string()).is_err());
}

// ------------------------------------------------------------------ reports

/// A deterministic generator (no dependency on the rand API).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

#[derive(Clone, Debug)]
struct Seed {
    id: String,
    wallet: String,
    asset: String,
    amount: u128,
    state: &'static str,
    created_ms: i64,
    approved_at: Option<i64>,
    outcome: Option<&'static str>,
    risk: Option<i64>,
    reason: Option<String>,
    fee: u128,
}

const DAY_MS: i64 = 86_400_000;
/// 2026-11-01T00:00:00Z.
const T0: i64 = 1_793_491_200_000;

fn dataset() -> Vec<Seed> {
    let mut g = Lcg(42);
    let states = [
        "signed",
        "signed",
        "signed",
        "blocked",
        "cancelled",
        "awaiting_approvals",
        "rejected",
        "expired",
        "failed",
    ];
    (0..120)
        .map(|i| {
            let state = states[g.next(states.len() as u64) as usize];
            let created_ms = T0 + (g.next(10) as i64) * DAY_MS + g.next(DAY_MS as u64) as i64;
            let outcome = match state {
                "blocked" => Some("block"),
                _ if g.next(2) == 0 => Some("require_approvals"),
                _ => Some("allow"),
            };
            let approved =
                matches!(state, "signed" | "failed") || (state == "cancelled" && g.next(2) == 0);
            let approved_at =
                approved.then(|| (created_ms + 1000 + g.next(3_600_000) as i64).div_euclid(1000));
            Seed {
                id: format!("wd-{i:03}"),
                wallet: ["hot", "warm", "cold"][g.next(3) as usize].into(),
                asset: ["ETH", "BTC"][g.next(2) as usize].into(),
                amount: u128::from(g.next(1_000_000) + 1) * 1_000_000_000_000,
                state,
                created_ms,
                approved_at,
                outcome,
                risk: (g.next(10) != 0).then(|| g.next(101) as i64),
                reason: matches!(state, "blocked" | "cancelled").then(|| format!("reason {i}")),
                fee: if state == "signed" {
                    u128::from(g.next(1000))
                } else {
                    0
                },
            }
        })
        .collect()
}

async fn seed(db: &Db, data: &[Seed]) {
    for s in data {
        sqlx::query(
            "INSERT INTO withdrawals (id, client_id, idempotency_key, request_hash, wallet, chain,
                asset, destination, amount, fee_cap, initiator, memo, state, risk_score, outcome,
                rule_id, approved_at, reason, signer_notes, created_ms, updated_ms)
             VALUES ($1, 'c', $1, 'h', $2, 'anvil', $3, '0xdead', $4, '0', 'c', '', $5, $6, $7,
                'r1', $8, $9, '[]', $10, $10)",
        )
        .bind(&s.id)
        .bind(&s.wallet)
        .bind(&s.asset)
        .bind(s.amount.to_string())
        .bind(s.state)
        .bind(s.risk)
        .bind(s.outcome)
        .bind(s.approved_at)
        .bind(s.reason.clone())
        .bind(s.created_ms)
        .execute(db.pool())
        .await
        .unwrap();
        if s.state == "signed" {
            let mut c = db.pool().acquire().await.unwrap();
            custos_ledger::set_overdraft_limit(&mut c, &s.wallet, &s.asset, u64::MAX.into())
                .await
                .unwrap();
            custos_ledger::reserve(&mut c, &s.id, &s.wallet, &s.asset, s.amount)
                .await
                .unwrap();
            custos_ledger::settle(&mut c, &s.id, &s.asset, s.fee)
                .await
                .unwrap();
        }
    }
}

async fn report(db: &Db, name: &str, q: ReportQuery) -> Vec<Vec<Value>> {
    let mut c = db.pool().acquire().await.unwrap();
    reports::run(&mut c, name, &q).await.unwrap().rows
}

fn day_of(ms: i64) -> String {
    reports::day(ms)
}

async fn reports_scenario(db: Db) {
    let data = dataset();
    seed(&db, &data).await;
    let all = ReportQuery::default();

    // Volume per (wallet, asset): signed only.
    let mut vol: BTreeMap<(String, String), (u64, u128)> = BTreeMap::new();
    for s in data.iter().filter(|s| s.state == "signed") {
        let e = vol.entry((s.wallet.clone(), s.asset.clone())).or_default();
        e.0 += 1;
        e.1 += s.amount;
    }
    let rows = report(
        &db,
        "volume",
        ReportQuery {
            group: Some(Group::Wallet),
            ..all
        },
    )
    .await;
    let got: BTreeMap<(String, String), (u64, u128)> = rows
        .iter()
        .map(|r| {
            (
                (r[0].as_str().unwrap().into(), r[1].as_str().unwrap().into()),
                (
                    r[2].as_u64().unwrap(),
                    r[3].as_str().unwrap().parse().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(got, vol);
    assert!(!vol.is_empty());

    // Volume per asset over days 2..=5 (from inclusive, to-date inclusive).
    let from = T0 + 2 * DAY_MS;
    let to = T0 + 6 * DAY_MS;
    let mut per_asset: BTreeMap<String, u128> = BTreeMap::new();
    for s in data
        .iter()
        .filter(|s| s.state == "signed" && s.created_ms >= from && s.created_ms < to)
    {
        *per_asset.entry(s.asset.clone()).or_default() += s.amount;
    }
    let q = super::http::report_query(Some("2026-11-03"), Some("2026-11-06"), None).unwrap();
    assert_eq!((q.from_ms, q.to_ms), (from, to));
    let got: BTreeMap<String, u128> = report(&db, "volume", q)
        .await
        .iter()
        .map(|r| {
            (
                r[0].as_str().unwrap().into(),
                r[2].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, per_asset);

    // Counts by state, per day.
    let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
    for s in &data {
        *counts
            .entry((day_of(s.created_ms), s.state.to_string()))
            .or_default() += 1;
    }
    let got: BTreeMap<(String, String), u64> = report(
        &db,
        "states",
        ReportQuery {
            group: Some(Group::Day),
            ..all
        },
    )
    .await
    .iter()
    .map(|r| {
        (
            (r[0].as_str().unwrap().into(), r[1].as_str().unwrap().into()),
            r[2].as_u64().unwrap(),
        )
    })
    .collect();
    assert_eq!(got, counts);
    assert_eq!(got.values().sum::<u64>(), 120);

    // Approval latency: withdrawals that needed approvals and got a quorum.
    let mut lat: Vec<i64> = data
        .iter()
        .filter(|s| s.outcome == Some("require_approvals"))
        .filter_map(|s| s.approved_at.map(|a| a * 1000 - s.created_ms))
        .collect();
    lat.sort();
    let n = lat.len();
    assert!(n >= 10, "dataset too small: {n}");
    // Nearest rank: the smallest value with at least q*n values at or below it.
    let rank = |q: f64| {
        let mut k = 0;
        while (k as f64) < q * n as f64 {
            k += 1;
        }
        lat[k - 1]
    };
    let rows = report(&db, "approval-latency", all).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][0].as_u64().unwrap() as usize, n);
    assert_eq!(rows[0][1].as_i64().unwrap(), rank(0.5));
    assert_eq!(rows[0][2].as_i64().unwrap(), rank(0.95));
    assert_eq!(rows[0][3].as_i64().unwrap(), *lat.last().unwrap());

    // Blocked and cancelled, with reasons.
    let expected: Vec<(String, String, String)> = {
        let mut v: Vec<&Seed> = data
            .iter()
            .filter(|s| s.state == "blocked" || s.state == "cancelled")
            .collect();
        v.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        v.iter()
            .map(|s| (s.id.clone(), s.state.to_string(), s.reason.clone().unwrap()))
            .collect()
    };
    let got: Vec<(String, String, String)> = report(&db, "blocked", all)
        .await
        .iter()
        .map(|r| {
            (
                r[1].as_str().unwrap().into(),
                r[2].as_str().unwrap().into(),
                r[7].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(got, expected);

    // Risk buckets.
    let mut buckets: BTreeMap<String, u64> = BTreeMap::new();
    for s in &data {
        let b = match s.risk {
            None => "unscored".to_string(),
            Some(r) if r >= 90 => "90-100".to_string(),
            Some(r) => format!("{}-{}", r / 10 * 10, r / 10 * 10 + 9),
        };
        *buckets.entry(b).or_default() += 1;
    }
    let rows = report(&db, "risk", all).await;
    let got: BTreeMap<String, u64> = rows
        .iter()
        .map(|r| (r[0].as_str().unwrap().into(), r[1].as_u64().unwrap()))
        .collect();
    assert_eq!(got, buckets);
    // Ordered by bucket, unscored last.
    let order: Vec<&str> = rows.iter().map(|r| r[0].as_str().unwrap()).collect();
    assert_eq!(order.last().copied(), Some("unscored"));
    assert_eq!(order.first().copied(), Some("0-9"));

    // Fees, per asset (entries written now, so the whole range).
    let mut fees: BTreeMap<String, (u64, i128)> = BTreeMap::new();
    for s in data.iter().filter(|s| s.state == "signed" && s.fee > 0) {
        let e = fees.entry(s.asset.clone()).or_default();
        e.0 += 1;
        e.1 += i128::try_from(s.fee).unwrap();
    }
    let got: BTreeMap<String, (u64, i128)> = report(&db, "fees", all)
        .await
        .iter()
        .map(|r| {
            (
                r[0].as_str().unwrap().into(),
                (
                    r[1].as_u64().unwrap(),
                    r[2].as_str().unwrap().parse().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(got, fees);

    // The heat map: per UTC weekday (1 = Monday) and hour, computed here
    // from days since the epoch (a Thursday) rather than a date library.
    let mut cells: BTreeMap<(u64, u64), [u64; 4]> = BTreeMap::new();
    for s in &data {
        let days = s.created_ms.div_euclid(DAY_MS);
        let weekday = (days + 3).rem_euclid(7) as u64 + 1;
        let hour = (s.created_ms.rem_euclid(DAY_MS) / 3_600_000) as u64;
        let blocked = s.state == "blocked" || s.state == "cancelled";
        let high = s.risk.is_some_and(|r| r >= 70);
        let c = cells.entry((weekday, hour)).or_default();
        c[0] += 1;
        c[1] += u64::from(blocked);
        c[2] += u64::from(high);
        c[3] += u64::from(blocked || high);
    }
    assert!(
        cells.values().any(|c| c[1] > 0) && cells.values().any(|c| c[2] > 0),
        "the dataset has blocked and high-risk withdrawals"
    );
    let got: BTreeMap<(u64, u64), [u64; 4]> = report(&db, "heatmap", all)
        .await
        .iter()
        .map(|r| {
            let n = |i: usize| r[i].as_u64().unwrap();
            ((n(0), n(1)), [n(2), n(3), n(4), n(5)])
        })
        .collect();
    assert_eq!(got, cells);

    let mut c = db.pool().acquire().await.unwrap();
    assert!(matches!(
        reports::run(&mut c, "nope", &all).await,
        Err(crate::error::CoordError::NotFound { kind: "report", .. })
    ));
}

#[tokio::test]
async fn reports_match_independent_figures_on_sqlite() {
    let (db, _dir) = sqlite().await;
    reports_scenario(db).await;
}

#[tokio::test]
async fn reports_match_independent_figures_on_postgres() {
    reports_scenario(pg().await).await;
}
