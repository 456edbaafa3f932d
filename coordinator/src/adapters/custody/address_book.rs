//! `GET /v1/address-book?chain=`: the address book of the policy in force.

use super::caller::Caller;
use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::CustodyState;
use crate::adapters::extract::QueryParams;
use crate::adapters::http::ApiError;

#[derive(Deserialize)]
pub(super) struct BookQuery {
    #[serde(default)]
    chain: String,
}

pub(super) async fn list(
    State(s): State<CustodyState>,
    caller: Caller,
    QueryParams(q): QueryParams<BookQuery>,
) -> Result<Json<Value>, ApiError> {
    let who = caller.who;
    let book = s.api.address_book(&who, &q.chain)?;
    let entries: Vec<Value> = book
        .entries
        .into_iter()
        .map(|e| {
            json!({
                "id": e.id,
                "labels": e.labels,
                "chain": e.chain,
                "address": e.address,
                "whitelisted": e.whitelisted,
                "usable_from": e.usable_from,
            })
        })
        .collect();
    Ok(Json(
        json!({ "entries": entries, "policy_hash": book.policy_hash }),
    ))
}
