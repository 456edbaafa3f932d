//! `GET /v1/wallets`, `GET /v1/wallets/{id}`: the ready wallets.

use super::caller::Caller;
use axum::Json;
use axum::extract::State;
use custos_proto::custody::Wallet;
use serde_json::{Value, json};

use super::CustodyState;
use crate::adapters::extract::PathParams;
use crate::adapters::http::ApiError;

/// A wallet as JSON.
pub(super) fn wallet_json(w: Wallet) -> Value {
    json!({
        "wallet_id": w.wallet_id,
        "chain": w.chain,
        "address": w.address,
        "assets": w.assets,
        "threshold": w.threshold,
        "participants": w.participants,
    })
}

pub(super) async fn list(
    State(s): State<CustodyState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let who = caller.who;
    let wallets: Vec<Value> = s
        .api
        .list_wallets(&who)
        .await?
        .into_iter()
        .map(wallet_json)
        .collect();
    Ok(Json(json!({ "wallets": wallets })))
}

pub(super) async fn get(
    State(s): State<CustodyState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    let who = caller.who;
    Ok(Json(wallet_json(s.api.get_wallet(&who, &id).await?)))
}
