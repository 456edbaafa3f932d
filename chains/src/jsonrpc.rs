//! The parts of a JSON-RPC exchange both node clients share: reading a
//! bounded body and taking `result` or the typed error out of the reply.

use serde_json::Value;

use crate::error::{ChainError, Result};

/// Reads the whole body, refusing more than `limit` bytes.
pub(crate) async fn read_body(
    mut response: reqwest::Response,
    limit: usize,
    method: &'static str,
    transport: impl Fn(reqwest::Error) -> ChainError,
) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(&transport)? {
        if bytes.len() + chunk.len() > limit {
            return Err(ChainError::RpcMalformed {
                method,
                reason: format!("response larger than {} MiB", limit / (1024 * 1024)),
            });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// The node's error object as [`ChainError::RpcError`] (message cut at 500
/// characters), `None` when the reply has no error.
pub(crate) fn error_of(method: &'static str, reply: &Value) -> Option<ChainError> {
    let error = reply.get("error").filter(|e| !e.is_null())?;
    let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("")
        .chars()
        .take(500)
        .collect();
    Some(ChainError::RpcError {
        method,
        code,
        message,
    })
}

/// The `result` of a reply to request `id`.
pub(crate) fn result_of(method: &'static str, reply: &Value, id: u64) -> Result<Value> {
    if reply.get("id").and_then(Value::as_u64) != Some(id) {
        return Err(ChainError::RpcMalformed {
            method,
            reason: "response id does not match the request".into(),
        });
    }
    reply
        .get("result")
        .cloned()
        .ok_or(ChainError::RpcMalformed {
            method,
            reason: "neither result nor error".into(),
        })
}
