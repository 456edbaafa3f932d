//! The edge: the one place where a domain error ([`CoordError`]) becomes an
//! answer, a `tonic::Status` for the gRPC API and a status with a JSON body
//! for the HTTP API. The domain never builds either.
//!
//! The message is the error's `Display` text on both. A signer the error
//! names travels as data too, so clients need not parse messages:
//! - [`custos_proto::CULPRIT_HEADER`] (`custos-culprit`): the one signer at
//!   fault (the refusing or rejecting signer, the unreachable one, the
//!   culprit of an abort);
//! - [`custos_proto::WAITING_FOR_HEADER`] (`custos-waiting-for`): the
//!   signers waited for in vain, comma-separated (too few reachable, a
//!   session timed out).
//!
//! On HTTP they are the JSON fields `culprit` and `waiting_for` beside
//! `error`, and the same headers. A conflict, failed precondition or missing
//! thing names what it is about in `subject` (`{"kind": "key", "id": "k1"}`).

use axum::http::StatusCode;
use serde_json::{Value, json};
use tonic::Code;

use crate::error::{CoordError, SignerRejection};

/// The gRPC code of a domain error.
pub fn grpc_code(e: &CoordError) -> Code {
    match e {
        CoordError::InvalidArgument { .. } => Code::InvalidArgument,
        CoordError::NotFound { .. } => Code::NotFound,
        CoordError::AlreadyExists { .. } => Code::AlreadyExists,
        CoordError::FailedPrecondition { .. } | CoordError::KeyRetired { .. } => {
            Code::FailedPrecondition
        }
        CoordError::Unavailable { .. }
        | CoordError::SignersUnavailable { .. }
        | CoordError::WitnessRound { .. } => Code::Unavailable,
        CoordError::Aborted { .. } => Code::Aborted,
        CoordError::DeadlineExceeded { .. } => Code::DeadlineExceeded,
        CoordError::Refused { .. } | CoordError::PermissionDenied(_) => Code::PermissionDenied,
        // A signer's own rejection keeps the code the signer gave.
        CoordError::SignerRejected { kind, .. } => match kind {
            SignerRejection::InvalidRequest => Code::InvalidArgument,
            SignerRejection::NotFound => Code::NotFound,
            SignerRejection::Replay => Code::AlreadyExists,
            SignerRejection::NotReady => Code::FailedPrecondition,
            _ => Code::Internal,
        },
        _ => Code::Internal,
    }
}

/// The HTTP status of a domain error.
pub fn http_status(e: &CoordError) -> StatusCode {
    match e {
        CoordError::InvalidArgument { .. } => StatusCode::BAD_REQUEST,
        CoordError::NotFound { .. } => StatusCode::NOT_FOUND,
        CoordError::PermissionDenied(_) => StatusCode::FORBIDDEN,
        CoordError::AlreadyExists { .. } => StatusCode::CONFLICT,
        CoordError::FailedPrecondition { .. } | CoordError::KeyRetired { .. } => {
            StatusCode::PRECONDITION_FAILED
        }
        CoordError::Storage { .. }
        | CoordError::Unavailable { .. }
        | CoordError::SignersUnavailable { .. }
        | CoordError::WitnessRound { .. } => StatusCode::SERVICE_UNAVAILABLE,
        CoordError::SignerRejected { kind, .. } => match kind {
            SignerRejection::InvalidRequest => StatusCode::BAD_REQUEST,
            SignerRejection::NotFound => StatusCode::NOT_FOUND,
            SignerRejection::Replay => StatusCode::CONFLICT,
            SignerRejection::NotReady => StatusCode::PRECONDITION_FAILED,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        },
        // A signer's refusal, an abort or a timeout: the server's failure,
        // not the caller's.
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The metadata pairs (header name, value) that carry the signers `e` names.
pub fn culprit_metadata(e: &CoordError) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(c) = e.culprit() {
        out.push((custos_proto::CULPRIT_HEADER, c.to_owned()));
    }
    let absent = e.absent();
    if !absent.is_empty() {
        out.push((custos_proto::WAITING_FOR_HEADER, absent.join(",")));
    }
    out
}

/// Maps a domain error to its gRPC answer.
pub fn status(e: CoordError) -> tonic::Status {
    let mut status = tonic::Status::new(grpc_code(&e), e.to_string());
    for (key, value) in culprit_metadata(&e) {
        // Node ids are ASCII (`validate_id`); a value metadata cannot carry
        // is left to the message, which names the signer too.
        if let Ok(v) = value.parse() {
            status.metadata_mut().insert(key, v);
        }
    }
    status
}

/// The JSON body of a domain error on the HTTP API.
pub fn http_body(e: &CoordError) -> Value {
    let mut body = json!({ "error": e.to_string() });
    if let Some(c) = e.culprit() {
        body["culprit"] = json!(c);
    }
    let absent = e.absent();
    if !absent.is_empty() {
        body["waiting_for"] = json!(absent);
    }
    // What a conflict, precondition or missing thing is about, as data.
    if let Some((kind, id)) = e.subject() {
        body["subject"] = json!({ "kind": kind, "id": id });
    }
    body
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::error::{Unreachable, WitnessFailure};

    fn s(v: &str) -> String {
        v.to_owned()
    }

    /// Every variant: gRPC code, HTTP status, message, culprit metadata.
    #[test]
    fn the_mapping_table() {
        type Row = (
            CoordError,
            Code,
            u16,
            &'static str,
            Option<&'static str>,
            Option<&'static str>,
        );
        let rows: Vec<Row> = vec![
            (
                CoordError::invalid("amount", "must be positive"),
                Code::InvalidArgument,
                400,
                "invalid argument: amount: must be positive",
                None,
                None,
            ),
            (
                CoordError::not_found("withdrawal", "wd-1"),
                Code::NotFound,
                404,
                "not found: withdrawal wd-1",
                None,
                None,
            ),
            (
                CoordError::already_exists("key", "k", "already exists"),
                Code::AlreadyExists,
                409,
                "key k already exists",
                None,
                None,
            ),
            (
                CoordError::precondition("cluster", "aux-info", "is not ready (none)"),
                Code::FailedPrecondition,
                412,
                "failed precondition: cluster aux-info is not ready (none)",
                None,
                None,
            ),
            (
                CoordError::Unavailable {
                    signer: Some(s("signer-2")),
                    reason: s("unreachable: connection refused"),
                },
                Code::Unavailable,
                503,
                "signer-2 unreachable: connection refused",
                Some("signer-2"),
                None,
            ),
            (
                CoordError::unavailable("ethereum node: timeout"),
                Code::Unavailable,
                503,
                "ethereum node: timeout",
                None,
                None,
            ),
            (
                CoordError::SignersUnavailable {
                    needed: 2,
                    reachable: 1,
                    missing: vec![
                        Unreachable {
                            signer: s("signer-2"),
                            endpoint: Some(s("https://127.0.0.1:7411")),
                        },
                        Unreachable {
                            signer: s("signer-3"),
                            endpoint: Some(s("https://127.0.0.1:7412")),
                        },
                    ],
                },
                Code::Unavailable,
                503,
                "need 2 signers, 1 reachable; unreachable: signer-2 (https://127.0.0.1:7411), signer-3 (https://127.0.0.1:7412)",
                None,
                Some("signer-2,signer-3"),
            ),
            (
                CoordError::Aborted {
                    culprit: Some(s("signer-3")),
                    reporter: Some(s("signer-1")),
                    suspects: Vec::new(),
                    reason: s("signer signer-3 misbehaved: malformed protocol message"),
                },
                Code::Aborted,
                500,
                "signer-1 reports: signer signer-3 misbehaved: malformed protocol message",
                Some("signer-3"),
                None,
            ),
            (
                CoordError::aborted("signers disagree on the public key; key discarded"),
                Code::Aborted,
                500,
                "signers disagree on the public key; key discarded",
                None,
                None,
            ),
            (
                CoordError::DeadlineExceeded {
                    waiting_for: vec![s("signer-3")],
                    reporter: Some(s("signer-1")),
                    reason: s("session timed out after 2s waiting for [\"signer-3\"]"),
                },
                Code::DeadlineExceeded,
                500,
                "signer-1: session timed out after 2s waiting for [\"signer-3\"]",
                None,
                Some("signer-3"),
            ),
            (
                CoordError::silent("signer-2", "did not answer"),
                Code::DeadlineExceeded,
                500,
                "signer-2 did not answer",
                None,
                Some("signer-2"),
            ),
            (
                CoordError::Refused {
                    signer: s("signer-1"),
                    reason: s("refused by co-signer checks: time lock"),
                },
                Code::PermissionDenied,
                500,
                "refused: signer-1: refused by co-signer checks: time lock",
                Some("signer-1"),
                None,
            ),
            (
                CoordError::SignerRejected {
                    signer: s("signer-1"),
                    kind: SignerRejection::InvalidRequest,
                    message: s("invalid request: digest"),
                },
                Code::InvalidArgument,
                400,
                "signer-1: invalid request: digest",
                Some("signer-1"),
                None,
            ),
            (
                CoordError::SignerRejected {
                    signer: s("signer-1"),
                    kind: SignerRejection::NotFound,
                    message: s("not found: key k"),
                },
                Code::NotFound,
                404,
                "signer-1: not found: key k",
                Some("signer-1"),
                None,
            ),
            (
                CoordError::SignerRejected {
                    signer: s("signer-1"),
                    kind: SignerRejection::Replay,
                    message: s("replay refused: session"),
                },
                Code::AlreadyExists,
                409,
                "signer-1: replay refused: session",
                Some("signer-1"),
                None,
            ),
            (
                CoordError::SignerRejected {
                    signer: s("signer-1"),
                    kind: SignerRejection::NotReady,
                    message: s("not ready: primes"),
                },
                Code::FailedPrecondition,
                412,
                "signer-1: not ready: primes",
                Some("signer-1"),
                None,
            ),
            (
                CoordError::SignerRejected {
                    signer: s("signer-1"),
                    kind: SignerRejection::Internal,
                    message: s("internal error: x"),
                },
                Code::Internal,
                500,
                "signer-1: internal error: x",
                Some("signer-1"),
                None,
            ),
            (
                CoordError::PermissionDenied(s("admin only")),
                Code::PermissionDenied,
                403,
                "permission denied: admin only",
                None,
                None,
            ),
            (
                CoordError::storage("withdrawal store", sqlx::Error::PoolTimedOut),
                Code::Internal,
                503,
                "storage failure: withdrawal store: pool timed out while waiting for an open connection",
                None,
                None,
            ),
            (
                CoordError::WitnessRound {
                    size: 7,
                    failures: vec![
                        WitnessFailure {
                            witness: s("signer-1"),
                            error: Box::new(CoordError::Refused {
                                signer: s("signer-1"),
                                reason: s("log fork"),
                            }),
                        },
                        WitnessFailure {
                            witness: s("signer-3"),
                            error: Box::new(CoordError::silent(
                                "signer-3",
                                "did not co-sign in time",
                            )),
                        },
                    ],
                },
                Code::Unavailable,
                503,
                "witnesses did not co-sign checkpoint 7: refused: signer-1: log fork; signer-3 did not co-sign in time",
                Some("signer-1"),
                Some("signer-3"),
            ),
            (
                CoordError::Internal(s("bug")),
                Code::Internal,
                500,
                "internal error: bug",
                None,
                None,
            ),
        ];
        for (e, code, http, message, culprit, waiting_for) in rows {
            assert_eq!(http_status(&e).as_u16(), http, "{e}");
            let body = http_body(&e);
            assert_eq!(body["error"], message);
            match e.subject() {
                Some((kind, id)) => {
                    assert_eq!(body["subject"]["kind"], kind, "{e}");
                    assert_eq!(body["subject"]["id"], id, "{e}");
                }
                None => assert!(body.get("subject").is_none(), "{e}"),
            }
            assert_eq!(body["culprit"].as_str(), culprit, "{e}");
            assert_eq!(
                body["waiting_for"].as_array().map(|a| a
                    .iter()
                    .map(|v| v.as_str().unwrap())
                    .collect::<Vec<_>>()
                    .join(",")),
                waiting_for.map(str::to_owned),
                "{e}"
            );
            let st = status(e);
            assert_eq!(st.code(), code, "{message}");
            assert_eq!(st.message(), message);
            let header = |k: &str| st.metadata().get(k).map(|v| v.to_str().unwrap().to_owned());
            assert_eq!(
                header(custos_proto::CULPRIT_HEADER).as_deref(),
                culprit,
                "{message}"
            );
            assert_eq!(
                header(custos_proto::WAITING_FOR_HEADER).as_deref(),
                waiting_for,
                "{message}"
            );
        }
    }
}
