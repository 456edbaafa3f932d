//! The JSON form of API messages that both the REST face
//! (`/v1/withdrawals`) and `custos ... --json` print: one mapping, so a
//! script reads the same fields from either. Bytes are hex.

use serde_json::{Value, json};

use crate::custody::{ApprovalRecord, Withdrawal};

fn approval(a: &ApprovalRecord) -> Value {
    json!({
        "approver": a.approver,
        "verdict": a.verdict,
        "signature": a.signature,
        "received_at": a.received_at,
    })
}

/// A withdrawal as JSON: the gRPC message's fields, bytes in hex.
pub fn withdrawal(w: &Withdrawal) -> Value {
    let risk: Vec<Value> = w
        .risk_reasons
        .iter()
        .map(|r| json!({ "code": r.code, "points": r.points, "message": r.message }))
        .collect();
    json!({
        "id": w.id,
        "idempotency_key": w.idempotency_key,
        "wallet": w.wallet,
        "chain": w.chain,
        "asset": w.asset,
        "destination": w.destination,
        "destination_label": w.destination_label,
        "amount": w.amount,
        "amount_human": w.amount_human,
        "fee_cap": w.fee_cap,
        "initiator": w.initiator,
        "memo": w.memo,
        "source_path": w.source_path,
        "source_address": w.source_address,
        "state": w.state,
        "risk_score": w.risk_score,
        "risk_reasons": risk,
        "rule_id": w.rule_id,
        "decision": w.decision,
        "policy_hash": w.policy_hash,
        "required_approvals": w.required_approvals,
        "approvals": w.approvals.iter().map(approval).collect::<Vec<_>>(),
        "statement": hex::encode(&w.statement),
        "unsigned_tx": hex::encode(&w.unsigned_tx),
        "tx_digest": hex::encode(&w.tx_digest),
        "delay_secs": w.delay_secs,
        "time_lock_until": w.time_lock_until,
        "cancel_group": w.cancel_group,
        "expires_at": w.expires_at,
        "signature_r": hex::encode(&w.signature_r),
        "signature_s": hex::encode(&w.signature_s),
        "recovery_id": w.recovery_id,
        "reason": w.reason,
        "created_at": w.created_at,
        "updated_at": w.updated_at,
        "signer_notes": w.signer_notes,
        "tx_hash": w.tx_hash,
        "fee_paid": w.fee_paid,
        "fee_bump_statement": hex::encode(&w.fee_bump_statement),
        "fee_bump_approvals": w.fee_bump_approvals.iter().map(approval).collect::<Vec<_>>(),
    })
}
