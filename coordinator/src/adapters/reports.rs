//! Reports over the `withdrawals` table and the ledger: plain SQL reads, the
//! aggregation in Rust (amounts are 128-bit decimals, which neither SQLite nor
//! portable PostgreSQL SQL can sum).
//!
//! Every report covers withdrawals *created* in `[from, to)` (Unix ms; the
//! fee report: ledger entries written in that range) and returns a table:
//! `columns` and `rows` of JSON values (amounts as decimal strings, counts as
//! numbers), ordered by the key columns.
//!
//! | name | rows | `group` |
//! |---|---|---|
//! | `volume` | settled withdrawals ([`SETTLED_STATES`]): count and amount per asset | `asset` (default), `wallet`, `day` |
//! | `states` | withdrawals per current state (final for terminal ones) | none, `wallet`, `asset`, `day` |
//! | `approval-latency` | withdrawals that needed approvals and reached a quorum: request (`created_ms`) → quorum (`approved_at`), count, p50, p95, max in ms (nearest-rank percentiles; `approved_at` has second resolution) | none, `wallet`, `asset`, `day` |
//! | `blocked` | every blocked or cancelled withdrawal with its rule and reason | (a list) |
//! | `risk` | risk-score distribution in buckets of 10 (`90-100` last; `unscored`) | none, `wallet`, `asset`, `day` |
//! | `fees` | network fees posted to the ledger's `fees` accounts: entries and amount per asset | `asset` (default), `wallet`, `day` |
//! | `heatmap` | withdrawals per UTC weekday (`1` Monday … `7` Sunday) and hour: all, `blocked` (blocked or cancelled), `high_risk` (score ≥ [`HIGH_RISK_SCORE`]) and `flagged` (either); non-empty cells only | (a grid) |
//!
//! [`Report::csv`] renders any of them as RFC 4180 CSV.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::AnyConnection;

use crate::error::CoordError;

/// The report names.
pub const REPORTS: [&str; 7] = [
    "volume",
    "states",
    "approval-latency",
    "blocked",
    "risk",
    "fees",
    "heatmap",
];

/// The risk score from which the `heatmap` report counts a withdrawal as
/// high-risk: the lower bound of the top three buckets of the `risk`
/// report, below the score the shipped policies block at (80).
pub const HIGH_RISK_SCORE: i64 = 70;

/// The final states of a withdrawal whose value left: `confirmed` (chains
/// with a transaction adapter) and `signed` (chains without one).
pub const SETTLED_STATES: [&str; 2] = ["signed", "confirmed"];

/// How rows are grouped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    /// Per wallet.
    Wallet,
    /// Per asset.
    Asset,
    /// Per UTC day of creation.
    Day,
}

impl Group {
    /// Parses `wallet`, `asset` or `day`.
    pub fn parse(s: &str) -> Result<Group, CoordError> {
        match s {
            "wallet" => Ok(Group::Wallet),
            "asset" => Ok(Group::Asset),
            "day" => Ok(Group::Day),
            other => Err(CoordError::invalid(
                "group",
                format!("`{other}` is not one of wallet, asset, day"),
            )),
        }
    }
}

/// What to report on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportQuery {
    /// Inclusive start, Unix ms.
    pub from_ms: i64,
    /// Exclusive end, Unix ms.
    pub to_ms: i64,
    /// Grouping, if any.
    pub group: Option<Group>,
}

impl Default for ReportQuery {
    fn default() -> Self {
        Self {
            from_ms: 0,
            to_ms: i64::MAX,
            group: None,
        }
    }
}

/// A report as a table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Report name.
    pub name: String,
    /// Inclusive start, Unix ms.
    pub from_ms: i64,
    /// Exclusive end, Unix ms.
    pub to_ms: i64,
    /// Grouping applied.
    pub group: Option<Group>,
    /// Column names.
    pub columns: Vec<String>,
    /// Rows, one value per column.
    pub rows: Vec<Vec<Value>>,
}

impl Report {
    /// The report as RFC 4180 CSV: a header line of the columns, then one
    /// line per row (strings as they are, numbers in decimal, null empty).
    pub fn csv(&self) -> String {
        let cell = |v: &Value| match v {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| r.iter().map(cell).collect())
            .collect();
        custos_service::csv::table(&self.columns, &rows)
    }
}

/// Parses a range bound: `YYYY-MM-DD` (UTC midnight; with `end`, the next
/// midnight, so a `to` date is inclusive), RFC 3339, or Unix milliseconds.
pub fn parse_bound(s: &str, end: bool) -> Result<i64, CoordError> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let bad = || {
        CoordError::invalid(
            if end { "to" } else { "from" },
            format!("`{s}` is not YYYY-MM-DD, RFC 3339 or Unix ms"),
        )
    };
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(date) = time::Date::parse(s, &fmt) {
        let day = if end {
            date.next_day().ok_or_else(bad)?
        } else {
            date
        };
        let t = day.midnight().assume_utc().unix_timestamp();
        return t.checked_mul(1000).ok_or_else(bad);
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|_| bad())?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).map_err(|_| bad())
}

/// The UTC day (`YYYY-MM-DD`) of a Unix-ms timestamp.
pub fn day(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => {
            let d = t.date();
            format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
        }
        Err(_) => "invalid".into(),
    }
}

/// Nearest-rank percentile of sorted values (`q` in (0, 1]).
pub fn percentile(sorted: &[i64], q: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
    sorted.get(rank - 1).copied()
}

/// The risk bucket of a score: `0-9`, ..., `80-89`, `90-100`, or `unscored`.
pub fn risk_bucket(score: Option<i64>) -> String {
    match score {
        None => "unscored".into(),
        Some(s) => {
            let b = (s.max(0) / 10).min(9);
            if b == 9 {
                "90-100".into()
            } else {
                format!("{}-{}", b * 10, b * 10 + 9)
            }
        }
    }
}

/// One withdrawal as the reports read it.
#[derive(Clone, Debug)]
struct Wd {
    id: String,
    wallet: String,
    asset: String,
    amount: String,
    state: String,
    created_ms: i64,
    approved_at: Option<i64>,
    outcome: Option<String>,
    risk_score: Option<i64>,
    rule_id: Option<String>,
    reason: Option<String>,
}

type WdRow = (
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
);

async fn withdrawals(conn: &mut AnyConnection, q: &ReportQuery) -> Result<Vec<Wd>, CoordError> {
    let rows: Vec<WdRow> = sqlx::query_as(
        "SELECT id, wallet, asset, amount, state, created_ms, approved_at, outcome, risk_score,
                rule_id, reason
         FROM withdrawals WHERE created_ms >= $1 AND created_ms < $2
         ORDER BY created_ms, id",
    )
    .bind(q.from_ms)
    .bind(q.to_ms)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| CoordError::storage("report", e))?;
    Ok(rows
        .into_iter()
        .map(|r| Wd {
            id: r.0,
            wallet: r.1,
            asset: r.2,
            amount: r.3,
            state: r.4,
            created_ms: r.5,
            approved_at: r.6,
            outcome: r.7,
            risk_score: r.8,
            rule_id: r.9,
            reason: r.10,
        })
        .collect())
}

/// Key columns for `group`, when the report also keys on `inner` (e.g. the
/// asset for amounts, the state for counts); `inner_default` is the grouping
/// that adds nothing (asset for amount reports).
fn key_columns(group: Option<Group>, inner: Option<&str>) -> Vec<String> {
    let mut cols: Vec<String> = match group {
        None => vec![],
        Some(Group::Wallet) => vec!["wallet".into()],
        Some(Group::Asset) => vec!["asset".into()],
        Some(Group::Day) => vec!["day".into()],
    };
    if let Some(i) = inner
        && !cols.iter().any(|c| c == i)
    {
        cols.push(i.into());
    }
    cols
}

fn group_key(group: Option<Group>, wallet: &str, asset: &str, created_ms: i64) -> Vec<String> {
    match group {
        None => vec![],
        Some(Group::Wallet) => vec![wallet.to_owned()],
        Some(Group::Asset) => vec![asset.to_owned()],
        Some(Group::Day) => vec![day(created_ms)],
    }
}

/// Appends `inner` unless the group already is that column.
fn with_inner(
    mut key: Vec<String>,
    group: Option<Group>,
    inner_is_asset: bool,
    v: &str,
) -> Vec<String> {
    if !(inner_is_asset && group == Some(Group::Asset)) {
        key.push(v.to_owned());
    }
    key
}

fn strings(key: Vec<String>) -> Vec<Value> {
    key.into_iter().map(Value::String).collect()
}

/// Runs report `name`.
pub async fn run(
    conn: &mut AnyConnection,
    name: &str,
    q: &ReportQuery,
) -> Result<Report, CoordError> {
    if q.from_ms > q.to_ms {
        return Err(CoordError::invalid(
            "from",
            "the range starts after it ends",
        ));
    }
    let (columns, rows) = match name {
        "volume" => volume(conn, q).await?,
        "states" => states(conn, q).await?,
        "approval-latency" => approval_latency(conn, q).await?,
        "blocked" => blocked(conn, q).await?,
        "risk" => risk(conn, q).await?,
        "fees" => fees(conn, q).await?,
        "heatmap" => heatmap(conn, q).await?,
        other => {
            return Err(CoordError::not_found(
                "report",
                format!("`{other}` (reports: {})", REPORTS.join(", ")),
            ));
        }
    };
    Ok(Report {
        name: name.to_owned(),
        from_ms: q.from_ms,
        to_ms: q.to_ms,
        group: q.group,
        columns,
        rows,
    })
}

type Table = (Vec<String>, Vec<Vec<Value>>);

async fn volume(conn: &mut AnyConnection, q: &ReportQuery) -> Result<Table, CoordError> {
    let group = q.group.or(Some(Group::Asset));
    let mut acc: BTreeMap<Vec<String>, (u64, u128)> = BTreeMap::new();
    for w in withdrawals(conn, q).await? {
        if !SETTLED_STATES.contains(&w.state.as_str()) {
            continue;
        }
        let amount: u128 = w.amount.parse().map_err(|_| {
            CoordError::Internal(format!("withdrawal {} has amount {:?}", w.id, w.amount))
        })?;
        let key = with_inner(
            group_key(group, &w.wallet, &w.asset, w.created_ms),
            group,
            true,
            &w.asset,
        );
        let slot = acc.entry(key).or_default();
        slot.0 += 1;
        slot.1 = slot.1.saturating_add(amount);
    }
    let mut columns = key_columns(group, Some("asset"));
    columns.extend(["count".into(), "amount".into()]);
    let rows = acc
        .into_iter()
        .map(|(k, (n, sum))| {
            let mut r = strings(k);
            r.push(json!(n));
            r.push(Value::String(sum.to_string()));
            r
        })
        .collect();
    Ok((columns, rows))
}

async fn states(conn: &mut AnyConnection, q: &ReportQuery) -> Result<Table, CoordError> {
    let mut acc: BTreeMap<Vec<String>, u64> = BTreeMap::new();
    for w in withdrawals(conn, q).await? {
        let mut key = group_key(q.group, &w.wallet, &w.asset, w.created_ms);
        key.push(w.state.clone());
        *acc.entry(key).or_default() += 1;
    }
    let mut columns = key_columns(q.group, Some("state"));
    columns.push("count".into());
    let rows = acc
        .into_iter()
        .map(|(k, n)| {
            let mut r = strings(k);
            r.push(json!(n));
            r
        })
        .collect();
    Ok((columns, rows))
}

async fn approval_latency(conn: &mut AnyConnection, q: &ReportQuery) -> Result<Table, CoordError> {
    let mut acc: BTreeMap<Vec<String>, Vec<i64>> = BTreeMap::new();
    for w in withdrawals(conn, q).await? {
        let Some(approved_at) = w.approved_at else {
            continue;
        };
        if w.outcome.as_deref() != Some("require_approvals") {
            continue;
        }
        let latency = approved_at
            .saturating_mul(1000)
            .saturating_sub(w.created_ms)
            .max(0);
        let key = group_key(q.group, &w.wallet, &w.asset, w.created_ms);
        acc.entry(key).or_default().push(latency);
    }
    let mut columns = key_columns(q.group, None);
    columns.extend([
        "count".into(),
        "p50_ms".into(),
        "p95_ms".into(),
        "max_ms".into(),
    ]);
    let rows = acc
        .into_iter()
        .map(|(k, mut v)| {
            v.sort_unstable();
            let mut r = strings(k);
            r.push(json!(v.len()));
            r.push(json!(percentile(&v, 0.50)));
            r.push(json!(percentile(&v, 0.95)));
            r.push(json!(v.last()));
            r
        })
        .collect();
    Ok((columns, rows))
}

async fn blocked(conn: &mut AnyConnection, q: &ReportQuery) -> Result<Table, CoordError> {
    let columns = [
        "day", "id", "state", "wallet", "asset", "amount", "rule", "reason",
    ]
    .map(String::from)
    .to_vec();
    let rows = withdrawals(conn, q)
        .await?
        .into_iter()
        .filter(|w| w.state == "blocked" || w.state == "cancelled")
        .map(|w| {
            vec![
                Value::String(day(w.created_ms)),
                Value::String(w.id),
                Value::String(w.state),
                Value::String(w.wallet),
                Value::String(w.asset),
                Value::String(w.amount),
                Value::String(w.rule_id.unwrap_or_default()),
                Value::String(w.reason.unwrap_or_default()),
            ]
        })
        .collect();
    Ok((columns, rows))
}

async fn risk(conn: &mut AnyConnection, q: &ReportQuery) -> Result<Table, CoordError> {
    let mut acc: BTreeMap<Vec<String>, (u64, u64)> = BTreeMap::new();
    for w in withdrawals(conn, q).await? {
        let mut key = group_key(q.group, &w.wallet, &w.asset, w.created_ms);
        let bucket = risk_bucket(w.risk_score);
        // Sort buckets numerically: the lower bound first (unscored last).
        let order = w.risk_score.map_or(u64::MAX, |s| {
            u64::try_from((s.max(0) / 10).min(9)).unwrap_or(0)
        });
        key.push(format!("{order:020}"));
        key.push(bucket);
        let slot = acc.entry(key).or_default();
        slot.0 += 1;
        slot.1 = order;
    }
    let mut columns = key_columns(q.group, Some("bucket"));
    columns.push("count".into());
    let rows = acc
        .into_iter()
        .map(|(mut k, (n, _))| {
            // Drop the sort column.
            let bucket = k.pop().unwrap_or_default();
            k.pop();
            k.push(bucket);
            let mut r = strings(k);
            r.push(json!(n));
            r
        })
        .collect();
    Ok((columns, rows))
}

async fn fees(conn: &mut AnyConnection, q: &ReportQuery) -> Result<Table, CoordError> {
    let group = q.group.or(Some(Group::Asset));
    let lines: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT a.wallet, a.asset, p.amount, e.created_at
         FROM ledger_postings p
         JOIN ledger_accounts a ON a.id = p.account_id
         JOIN ledger_entries e ON e.id = p.entry_id
         WHERE a.kind = 'fees' AND e.created_at >= $1 AND e.created_at < $2
         ORDER BY p.id",
    )
    .bind(q.from_ms)
    .bind(q.to_ms)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| CoordError::storage("report", e))?;
    let mut acc: BTreeMap<Vec<String>, (u64, i128)> = BTreeMap::new();
    for (wallet, asset, amount, at) in lines {
        let amount: i128 = amount
            .parse()
            .map_err(|_| CoordError::Internal(format!("ledger posting amount {amount:?}")))?;
        let key = with_inner(group_key(group, &wallet, &asset, at), group, true, &asset);
        let slot = acc.entry(key).or_default();
        slot.0 += 1;
        slot.1 = slot.1.saturating_add(amount);
    }
    let mut columns = key_columns(group, Some("asset"));
    columns.extend(["entries".into(), "amount".into()]);
    let rows = acc
        .into_iter()
        .map(|(k, (n, sum))| {
            let mut r = strings(k);
            r.push(json!(n));
            r.push(Value::String(sum.to_string()));
            r
        })
        .collect();
    Ok((columns, rows))
}

/// The ISO weekday (1 = Monday) and hour of a Unix-ms timestamp, in UTC.
pub fn weekday_hour(ms: i64) -> Option<(u8, u8)> {
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)).ok()?;
    Some((t.weekday().number_from_monday(), t.hour()))
}

async fn heatmap(conn: &mut AnyConnection, q: &ReportQuery) -> Result<Table, CoordError> {
    // (weekday, hour) -> (all, blocked, high risk, either)
    let mut acc: BTreeMap<(u8, u8), [u64; 4]> = BTreeMap::new();
    for w in withdrawals(conn, q).await? {
        let Some(cell) = weekday_hour(w.created_ms) else {
            continue;
        };
        let blocked = w.state == "blocked" || w.state == "cancelled";
        let high = w.risk_score.is_some_and(|s| s >= HIGH_RISK_SCORE);
        let slot = acc.entry(cell).or_default();
        slot[0] += 1;
        slot[1] += u64::from(blocked);
        slot[2] += u64::from(high);
        slot[3] += u64::from(blocked || high);
    }
    let columns = [
        "weekday",
        "hour",
        "count",
        "blocked",
        "high_risk",
        "flagged",
    ]
    .map(String::from)
    .to_vec();
    let rows = acc
        .into_iter()
        .map(|((d, h), n)| {
            let mut r = vec![json!(d), json!(h)];
            r.extend(n.iter().map(|v| json!(v)));
            r
        })
        .collect();
    Ok((columns, rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weekdays_hours_and_csv() {
        // 1970-01-01 was a Thursday; 2026-12-07 a Monday.
        assert_eq!(weekday_hour(0), Some((4, 0)));
        assert_eq!(weekday_hour(3_600_000 * 23 + 59_999), Some((4, 23)));
        let monday = parse_bound("2026-12-07T13:30:00Z", false).unwrap_or_default();
        assert_eq!(weekday_hour(monday), Some((1, 13)));
        let r = Report {
            name: "blocked".into(),
            from_ms: 0,
            to_ms: 1,
            group: None,
            columns: vec!["id".into(), "reason".into(), "count".into(), "p50".into()],
            rows: vec![vec![
                json!("w-1"),
                json!("over \"limit\", daily"),
                json!(3),
                Value::Null,
            ]],
        };
        assert_eq!(
            r.csv(),
            "id,reason,count,p50\r\nw-1,\"over \"\"limit\"\", daily\",3,\r\n"
        );
    }

    #[test]
    fn bounds_and_days() {
        assert_eq!(parse_bound("1970-01-02", false).ok(), Some(86_400_000));
        assert_eq!(parse_bound("1970-01-01", true).ok(), Some(86_400_000));
        assert_eq!(parse_bound("1234", false).ok(), Some(1234));
        assert_eq!(parse_bound("1970-01-01T00:00:01Z", false).ok(), Some(1000));
        assert!(parse_bound("yesterday", false).is_err());
        assert_eq!(day(86_400_000 * 365), "1971-01-01");
    }

    #[test]
    fn percentiles_and_buckets() {
        let v = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100];
        assert_eq!(percentile(&v, 0.5), Some(50));
        assert_eq!(percentile(&v, 0.95), Some(100));
        assert_eq!(percentile(&[7], 0.95), Some(7));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(risk_bucket(Some(0)), "0-9");
        assert_eq!(risk_bucket(Some(42)), "40-49");
        assert_eq!(risk_bucket(Some(100)), "90-100");
        assert_eq!(risk_bucket(None), "unscored");
    }
}
