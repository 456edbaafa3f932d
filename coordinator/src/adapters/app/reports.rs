//! `GET /app/reports/{name}` and `GET /app/reports/{name}/csv`: the
//! reports ([`crate::adapters::reports`]) for the app's reports page, to a
//! signed-in approver.
//!
//! # Design
//! On the REST API the reports need the auditor role. The app's reports
//! page is for treasury, whose approvers are the people signed in here, so
//! an approval-app session may read them too: they are aggregates of the
//! withdrawals its history page already lists, and reading changes
//! nothing (GET only; no CSRF token needed, none is accepted as proof of
//! anything). A compliance officer without a passkey keeps using an
//! auditor token (`custos report`). The JSON answer adds `decimals` per
//! asset so the page draws amounts in units; the CSV is the same table in
//! base units, downloaded as an attachment.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::guard;
use crate::adapters::extract::{PathParams, QueryParams};
use crate::adapters::http::{ApiError, report_query};
use crate::adapters::reports;
use crate::error::CoordError;

/// The range and grouping of a report (as `GET /v1/reports/{name}`).
#[derive(Deserialize, Default)]
pub struct Params {
    from: Option<String>,
    to: Option<String>,
    group: Option<String>,
}

async fn load(
    s: &AppState,
    headers: &HeaderMap,
    name: &str,
    p: &Params,
) -> Result<reports::Report, ApiError> {
    let session = guard::signed_in(&s.sessions, headers)?;
    let q = report_query(p.from.as_deref(), p.to.as_deref(), p.group.as_deref())?;
    let mut conn = s
        .pool
        .acquire()
        .await
        .map_err(|e| CoordError::storage("report", e))?;
    let r = reports::run(&mut conn, name, &q).await?;
    tracing::debug!(approver = %session.approver, report = name, "approval app: report read");
    Ok(r)
}

/// `GET /app/reports/{name}?from=&to=&group=`: the report, and the
/// decimals of each asset it names.
pub async fn json(
    State(s): State<AppState>,
    headers: HeaderMap,
    PathParams(name): PathParams<String>,
    QueryParams(p): QueryParams<Params>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let r = load(&s, &headers, &name, &p).await?;
    let mut decimals = BTreeMap::new();
    if let Ok(engine) = s.api.engine()
        && let Some(at) = r.columns.iter().position(|c| c == "asset")
    {
        for row in &r.rows {
            if let Some(symbol) = row.get(at).and_then(|v| v.as_str())
                && let Some(a) = engine.assets().iter().find(|a| a.symbol == symbol)
            {
                decimals.insert(symbol.to_owned(), a.decimals);
            }
        }
    }
    let mut v = serde_json::to_value(&r).map_err(|e| CoordError::Internal(e.to_string()))?;
    v["decimals"] = json!(decimals);
    Ok(Json(v))
}

/// `GET /app/reports/{name}/csv?from=&to=&group=`: the report as a CSV
/// attachment named after it and its range.
pub async fn csv(
    State(s): State<AppState>,
    headers: HeaderMap,
    PathParams(name): PathParams<String>,
    QueryParams(p): QueryParams<Params>,
) -> Result<Response, ApiError> {
    let r = load(&s, &headers, &name, &p).await?;
    let file = format!(
        "custos-{}-{}-{}.csv",
        r.name,
        reports::day(r.from_ms),
        if r.to_ms == i64::MAX {
            "now".to_owned()
        } else {
            reports::day(r.to_ms.saturating_sub(1))
        }
    );
    let mut response = r.csv().into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    // The name holds only report-name characters, digits and dashes.
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}
