//! Withdrawals: create, get, list, list pending, submit a verdict, cancel.

use super::caller::Caller;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use custos_proto::custody::{
    ListWithdrawalsRequest, ListWithdrawalsResponse, SubmitApprovalRequest, Verdict,
    WebAuthnAssertion, Withdrawal,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{CustodyState, hex_field};
use crate::adapters::extract::{JsonBody, PathParams, QueryParams};
use crate::adapters::http::ApiError;
use crate::withdrawal::CreateRequest;

/// A withdrawal as JSON (`custos_proto::json`, shared with the CLI).
pub(super) fn withdrawal_json(w: Withdrawal) -> Value {
    custos_proto::json::withdrawal(&w)
}

fn page_json(p: ListWithdrawalsResponse) -> Value {
    let withdrawals: Vec<Value> = p.withdrawals.into_iter().map(withdrawal_json).collect();
    json!({ "withdrawals": withdrawals, "next_page_token": p.next_page_token })
}

/// `POST /v1/withdrawals`: `CreateWithdrawalRequest` as JSON.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateBody {
    idempotency_key: String,
    wallet: String,
    asset: String,
    destination: String,
    amount: String,
    #[serde(default)]
    fee_cap: String,
    #[serde(default)]
    memo: String,
    #[serde(default)]
    request_signature: String,
    #[serde(default)]
    source_path: String,
}

pub(super) async fn create(
    State(s): State<CustodyState>,
    caller: Caller,
    JsonBody(b): JsonBody<CreateBody>,
) -> Result<Json<Value>, ApiError> {
    let who = caller.who;
    let request = CreateRequest {
        idempotency_key: b.idempotency_key,
        wallet: b.wallet,
        asset: b.asset,
        destination: b.destination,
        amount: b.amount,
        fee_cap: b.fee_cap,
        memo: b.memo,
        request_signature: b.request_signature,
        source_path: b.source_path,
    };
    let w = s.api.create_withdrawal(&who, request).await?;
    Ok(Json(withdrawal_json(w)))
}

pub(super) async fn get(
    State(s): State<CustodyState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    let who = caller.who;
    Ok(Json(withdrawal_json(
        s.api.get_withdrawal(&who, &id).await?,
    )))
}

#[derive(Deserialize)]
pub(super) struct ListQuery {
    #[serde(default)]
    wallet: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    initiator: String,
    #[serde(default)]
    page_size: u32,
    #[serde(default)]
    page_token: String,
}

pub(super) async fn list(
    State(s): State<CustodyState>,
    caller: Caller,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let who = caller.who;
    let r = ListWithdrawalsRequest {
        wallet: q.wallet,
        state: q.state,
        initiator: q.initiator,
        page_size: q.page_size,
        page_token: q.page_token,
    };
    Ok(Json(page_json(s.api.list_withdrawals(&who, &r).await?)))
}

#[derive(Deserialize)]
pub(super) struct PendingQuery {
    #[serde(default)]
    approver: String,
}

pub(super) async fn pending(
    State(s): State<CustodyState>,
    caller: Caller,
    QueryParams(q): QueryParams<PendingQuery>,
) -> Result<Json<Value>, ApiError> {
    let who = caller.who;
    Ok(Json(page_json(
        s.api.list_pending(&who, &q.approver).await?,
    )))
}

/// A verdict's name on the wire.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub(super) enum VerdictName {
    Approve,
    Reject,
    Cancel,
}

/// A passkey assertion, each field hex.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AssertionBody {
    credential_id: String,
    authenticator_data: String,
    client_data_json: String,
    signature: String,
}

/// `POST /v1/withdrawals/{id}/approvals`: `SubmitApprovalRequest` as JSON.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ApprovalBody {
    approver: String,
    verdict: VerdictName,
    #[serde(default)]
    signature: String,
    #[serde(default)]
    reason: String,
    /// Hex; set to give the verdict on the pending fee bump.
    #[serde(default)]
    fee_bump_statement: String,
    #[serde(default)]
    webauthn: Option<AssertionBody>,
}

pub(super) async fn submit_approval(
    State(s): State<CustodyState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
    JsonBody(b): JsonBody<ApprovalBody>,
) -> Result<Json<Value>, ApiError> {
    // An approver signed in to the approval app gives verdicts as itself
    // only (its passkey's assertion is checked anyway; this names the
    // mistake before any verification).
    if caller.session && b.approver != caller.who.id {
        return Err(ApiError::Route(
            StatusCode::FORBIDDEN,
            format!(
                "approver: this session is {}'s and cannot give a verdict as {:?}",
                caller.who.id, b.approver
            ),
        ));
    }
    let who = caller.who;
    let webauthn = match b.webauthn {
        None => None,
        Some(a) => Some(WebAuthnAssertion {
            credential_id: hex_field("webauthn.credential_id", &a.credential_id)?,
            authenticator_data: hex_field("webauthn.authenticator_data", &a.authenticator_data)?,
            client_data_json: hex_field("webauthn.client_data_json", &a.client_data_json)?,
            signature: hex_field("webauthn.signature", &a.signature)?,
        }),
    };
    let verdict = match b.verdict {
        VerdictName::Approve => Verdict::Approve,
        VerdictName::Reject => Verdict::Reject,
        VerdictName::Cancel => Verdict::Cancel,
    };
    let r = SubmitApprovalRequest {
        withdrawal_id: id,
        approver: b.approver,
        verdict: verdict as i32,
        signature: b.signature,
        reason: b.reason,
        fee_bump_statement: hex_field("fee_bump_statement", &b.fee_bump_statement)?,
        webauthn,
    };
    Ok(Json(withdrawal_json(s.api.submit_approval(&who, r).await?)))
}

/// `POST /v1/withdrawals/{id}/cancel`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CancelBody {
    #[serde(default)]
    reason: String,
}

pub(super) async fn cancel(
    State(s): State<CustodyState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
    JsonBody(b): JsonBody<CancelBody>,
) -> Result<Json<Value>, ApiError> {
    let who = caller.who;
    let w = s.api.cancel_withdrawal(&who, &id, &b.reason).await?;
    Ok(Json(withdrawal_json(w)))
}
