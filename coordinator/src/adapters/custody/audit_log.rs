//! The transparency log: `GET /v1/audit/checkpoint` (the latest signed
//! checkpoint, a C2SP note), `GET /v1/audit/entries/{index}` and
//! `GET /v1/audit/proofs/inclusion?index=&size=`.

use super::caller::Caller;
use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::CustodyState;
use crate::adapters::extract::{PathParams, QueryParams};
use crate::adapters::http::ApiError;

pub(super) async fn checkpoint(
    State(s): State<CustodyState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let who = caller.who;
    let c = s.api.checkpoint(&who).await?;
    Ok(Json(json!({ "note": c.note, "size": c.size })))
}

pub(super) async fn entry(
    State(s): State<CustodyState>,
    caller: Caller,
    PathParams(index): PathParams<u64>,
) -> Result<Json<Value>, ApiError> {
    let who = caller.who;
    let e = s.api.log_entry(&who, index).await?;
    // The decoded entry as an object (null when it does not decode).
    let decoded: Value = serde_json::from_str(&e.json).unwrap_or(Value::Null);
    Ok(Json(json!({
        "index": e.index,
        "entry": hex::encode(&e.entry),
        "decoded": decoded,
    })))
}

#[derive(Deserialize)]
pub(super) struct ProofQuery {
    index: u64,
    #[serde(default)]
    size: u64,
}

pub(super) async fn inclusion_proof(
    State(s): State<CustodyState>,
    caller: Caller,
    QueryParams(q): QueryParams<ProofQuery>,
) -> Result<Json<Value>, ApiError> {
    let who = caller.who;
    let p = s.api.inclusion_proof(&who, q.index, q.size).await?;
    let hashes: Vec<String> = p.hashes.iter().map(hex::encode).collect();
    Ok(Json(
        json!({ "index": q.index, "size": p.size, "hashes": hashes }),
    ))
}
