//! Errors of the coordinator's domain, by who is at fault.
//!
//! A failure a signer caused or reported keeps that signer as data (the
//! `signer`, `culprit`, `reporter`, `waiting_for`, `missing` fields), not
//! only as text: the engine decides on it (a refusal is not an outage) and
//! the edge ([`crate::edge`]) hands it to clients as metadata. Nothing here
//! knows of gRPC or HTTP; [`crate::edge`] is the one place that maps these to
//! `tonic::Status` codes and HTTP statuses.

use std::fmt;
use std::sync::Arc;

/// Why a coordinator operation failed.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoordError {
    /// The caller's input (or the config) is wrong; names the field.
    #[error("invalid argument: {field}: {problem}")]
    InvalidArgument {
        /// The request field or config field (`amount`, `chains[0].rpc_url`).
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// Something the request names does not exist.
    #[error("not found: {kind} {id}")]
    NotFound {
        /// What kind of thing (`key`, `withdrawal`, `wallet`, `report`).
        kind: &'static str,
        /// The id the request gave (with the known ones where that helps).
        id: String,
    },
    /// Something unique was used again (a key id, a request id, an
    /// idempotency key for another request, an approver's second verdict).
    #[error("{kind} {id} {conflict}")]
    AlreadyExists {
        /// What was reused (`key`, `request_id`, `idempotency_key`, `approver`).
        kind: &'static str,
        /// The reused value.
        id: String,
        /// With what it conflicts (`already exists`, `was already used for ...`).
        conflict: String,
    },
    /// The thing the request acts on is not in a state that allows it (a
    /// key not ready or locked, a withdrawal past approvals, a policy that
    /// changed, the cluster's aux info missing).
    #[error("failed precondition: {kind} {id} {reason}")]
    FailedPrecondition {
        /// What kind of thing (`key`, `withdrawal`, `policy`, `cluster`).
        kind: &'static str,
        /// Which one.
        id: String,
        /// Why it cannot be done now (`is locked for signing ...`).
        reason: String,
    },
    /// Something this operation needs cannot be reached: a signer (named),
    /// or a chain node, the lease, the log's witnesses (`signer` is `None`).
    /// Also a signer's refusal of this coordinator as fenced (a newer one
    /// leads): retryable by whoever leads, never a failure of the request.
    #[error("{}", with_signer(.signer, .reason))]
    Unavailable {
        /// The signer that could not be reached or fenced us, if a signer.
        signer: Option<String>,
        /// What failed (`unreachable: ...`, `refused: ...`, `node: ...`).
        reason: String,
    },
    /// Fewer of a session's signers are reachable than it needs.
    #[error(
        "need {needed} signers, {reachable} reachable; unreachable: {}",
        list(.missing)
    )]
    SignersUnavailable {
        /// Signers the session needs.
        needed: usize,
        /// Signers reachable now.
        reachable: usize,
        /// The participants that are not reachable.
        missing: Vec<Unreachable>,
    },
    /// A signing or key-generation session aborted: a signer misbehaved,
    /// reported a peer's misbehaviour, or the signers' results disagree.
    #[error("{}", abort_text(.culprit, .reporter, .reason))]
    Aborted {
        /// The signer that misbehaved, when it is known.
        culprit: Option<String>,
        /// The signer that reported the abort, when the report came from one.
        reporter: Option<String>,
        /// When no single culprit is known: the signers one of which is at
        /// fault (e.g. those whose partials combined to an invalid signature).
        suspects: Vec<String>,
        /// What happened.
        reason: String,
    },
    /// A signer, or a session a signer took part in, did not finish in time.
    #[error("{}", deadline_text(.waiting_for, .reporter, .reason))]
    DeadlineExceeded {
        /// The signers that were waited for (the silent signer itself, or
        /// the peers a reporting signer names as absent).
        waiting_for: Vec<String>,
        /// The signer that reported the session's timeout, if one did.
        reporter: Option<String>,
        /// What timed out.
        reason: String,
    },
    /// Witnesses a checkpoint needed did not co-sign it: each one's own
    /// failure (a refusal, unreachable, silent) is kept. Nothing is signed
    /// under a checkpoint its signers have not co-signed, so whoever needed
    /// it waits and tries again: it counts as unavailable, never as a
    /// failure of the request.
    #[error("witnesses did not co-sign checkpoint {size}: {}", witness_text(.failures))]
    WitnessRound {
        /// The checkpoint's tree size.
        size: u64,
        /// Each required witness that did not co-sign, with why.
        failures: Vec<WitnessFailure>,
    },
    /// A signer refused on its own checks (policy, approvals, time lock,
    /// history, audit log).
    #[error("refused: {signer}: {reason}")]
    Refused {
        /// The refusing signer.
        signer: String,
        /// Its reason, as it gave it.
        reason: String,
    },
    /// A signer rejected the request for a reason of its own other than a
    /// refusal, abort, timeout or outage (a request it finds malformed, a
    /// replay, a key it lacks, a state it is not ready for, its own bug).
    #[error("{signer}: {message}")]
    SignerRejected {
        /// The rejecting signer.
        signer: String,
        /// What kind of rejection it was (keeps the signer's gRPC code).
        kind: SignerRejection,
        /// The signer's message.
        message: String,
    },
    /// The key is retired: it never signs again (its signers destroyed,
    /// or are destroying, their shares).
    #[error(
        "key {key_id} is retired (since {retired_at}): it signs nothing, ever{}",
        successor_text(.successor)
    )]
    KeyRetired {
        /// The retired key.
        key_id: String,
        /// When it was retired (RFC 3339).
        retired_at: String,
        /// The key that took over its balances (empty: none).
        successor: String,
    },
    /// The caller is not allowed to do this.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The database (or the log's store) failed: nothing was signed.
    #[error("storage failure: {during}: {source}")]
    Storage {
        /// What was being done (`withdrawal store`, `ledger deposit d-1`).
        during: String,
        /// The failure itself, kept for its type and its own sources
        /// (shared: the error is `Clone`, a `sqlx::Error` is not).
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// A bug.
    #[error("internal error: {0}")]
    Internal(String),
}

/// A signer's rejection that is not a refusal on its co-signer checks, by
/// the kind of fault it reports (so the edge can keep the signer's code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignerRejection {
    /// The signer finds the request malformed or inconsistent.
    InvalidRequest,
    /// Something the request names does not exist on the signer.
    NotFound,
    /// The request repeats a session or presignature.
    Replay,
    /// The signer cannot serve this yet (aux info missing, primes).
    NotReady,
    /// The signer failed internally (or answered with a code we do not
    /// interpret).
    Internal,
}

/// A witness that did not co-sign a checkpoint, and its failure.
#[derive(Clone, Debug)]
pub struct WitnessFailure {
    /// The witness's node id.
    pub witness: String,
    /// What went wrong with it (names it too).
    pub error: Box<CoordError>,
}

/// A participant that could not be reached, and where we looked for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreachable {
    /// Its node id.
    pub signer: String,
    /// Its configured endpoint, or `None` when it is not configured.
    pub endpoint: Option<String>,
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.endpoint {
            Some(e) => write!(f, "{} ({e})", self.signer),
            None => write!(f, "{} (not configured)", self.signer),
        }
    }
}

impl CoordError {
    /// The one signer at fault, if the error names one: the refusing,
    /// rejecting or unreachable signer, or the culprit of an abort.
    pub fn culprit(&self) -> Option<&str> {
        match self {
            CoordError::Refused { signer, .. } | CoordError::SignerRejected { signer, .. } => {
                Some(signer)
            }
            CoordError::Unavailable { signer, .. } => signer.as_deref(),
            CoordError::Aborted { culprit, .. } => culprit.as_deref(),
            // A witness that refused is at fault; one out of reach is absent.
            CoordError::WitnessRound { failures, .. } => failures
                .iter()
                .find(|f| matches!(*f.error, CoordError::Refused { .. }))
                .map(|f| f.witness.as_str()),
            _ => None,
        }
    }

    /// The signers this operation waited for in vain: the unreachable
    /// participants, or those a session timed out waiting for.
    pub fn absent(&self) -> Vec<&str> {
        match self {
            CoordError::SignersUnavailable { missing, .. } => {
                missing.iter().map(|m| m.signer.as_str()).collect()
            }
            CoordError::DeadlineExceeded { waiting_for, .. } => {
                waiting_for.iter().map(String::as_str).collect()
            }
            CoordError::WitnessRound { failures, .. } => failures
                .iter()
                .filter(|f| f.error.is_transient())
                .map(|f| f.witness.as_str())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Whether a signer or dependency is out of reach (or too few signers
    /// are reachable): the operation may succeed later unchanged.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            CoordError::Unavailable { .. }
                | CoordError::SignersUnavailable { .. }
                | CoordError::WitnessRound { .. }
        )
    }

    /// Whether the operation may succeed later unchanged: something out of
    /// reach ([`Self::is_unavailable`]) or too slow (a timeout).
    pub fn is_transient(&self) -> bool {
        self.is_unavailable() || matches!(self, CoordError::DeadlineExceeded { .. })
    }

    /// The caller's `field` is wrong: `problem`.
    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> CoordError {
        CoordError::InvalidArgument {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// Storage failed while doing `during`.
    pub fn storage(
        during: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> CoordError {
        CoordError::Storage {
            during: during.into(),
            source: Arc::new(source),
        }
    }

    /// The `kind` named `id` does not exist.
    pub fn not_found(kind: &'static str, id: impl Into<String>) -> CoordError {
        CoordError::NotFound {
            kind,
            id: id.into(),
        }
    }

    /// A dependency (not a signer) is unavailable.
    pub fn unavailable(reason: impl Into<String>) -> CoordError {
        CoordError::Unavailable {
            signer: None,
            reason: reason.into(),
        }
    }

    /// `kind` `id` was already used: `conflict` says with what.
    pub fn already_exists(
        kind: &'static str,
        id: impl Into<String>,
        conflict: impl Into<String>,
    ) -> CoordError {
        CoordError::AlreadyExists {
            kind,
            id: id.into(),
            conflict: conflict.into(),
        }
    }

    /// `kind` `id` is in no state for this: `reason`.
    pub fn precondition(
        kind: &'static str,
        id: impl Into<String>,
        reason: impl Into<String>,
    ) -> CoordError {
        CoordError::FailedPrecondition {
            kind,
            id: id.into(),
            reason: reason.into(),
        }
    }

    /// What an [`CoordError::AlreadyExists`] or
    /// [`CoordError::FailedPrecondition`] is about (`("key", "k1")`), or a
    /// [`CoordError::NotFound`]'s missing thing.
    pub fn subject(&self) -> Option<(&'static str, &str)> {
        match self {
            CoordError::AlreadyExists { kind, id, .. }
            | CoordError::FailedPrecondition { kind, id, .. }
            | CoordError::NotFound { kind, id } => Some((kind, id)),
            _ => None,
        }
    }

    /// A session aborted without a single named culprit.
    pub fn aborted(reason: impl Into<String>) -> CoordError {
        CoordError::Aborted {
            culprit: None,
            reporter: None,
            suspects: Vec::new(),
            reason: reason.into(),
        }
    }

    /// `signer` did not answer in time: `reason` says what it did not do.
    pub fn silent(signer: &str, reason: impl Into<String>) -> CoordError {
        CoordError::DeadlineExceeded {
            waiting_for: vec![signer.to_owned()],
            reporter: None,
            reason: reason.into(),
        }
    }
}

fn with_signer(signer: &Option<String>, reason: &str) -> String {
    match signer {
        Some(s) => format!("{s} {reason}"),
        None => reason.to_owned(),
    }
}

fn witness_text(failures: &[WitnessFailure]) -> String {
    failures
        .iter()
        .map(|f| {
            let text = f.error.to_string();
            // Name the witness once: most errors name it already.
            if text.contains(f.witness.as_str()) {
                text
            } else {
                format!("{}: {text}", f.witness)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn list(items: &[Unreachable]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn successor_text(successor: &str) -> String {
    if successor.is_empty() {
        String::new()
    } else {
        format!("; its balances moved to key {successor}")
    }
}

fn abort_text(culprit: &Option<String>, reporter: &Option<String>, reason: &str) -> String {
    match (reporter, culprit) {
        (Some(r), _) => format!("{r} reports: {reason}"),
        (None, Some(c)) => format!("{c} {reason}"),
        (None, None) => reason.to_owned(),
    }
}

fn deadline_text(waiting_for: &[String], reporter: &Option<String>, reason: &str) -> String {
    match reporter {
        Some(r) => format!("{r}: {reason}"),
        None if waiting_for.is_empty() => reason.to_owned(),
        None => format!("{} {reason}", waiting_for.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_name_the_signers_as_before() {
        let cases = [
            (
                CoordError::Unavailable {
                    signer: Some("signer-2".into()),
                    reason: "unreachable: connection refused".into(),
                },
                "signer-2 unreachable: connection refused",
            ),
            (
                CoordError::unavailable("bitcoin node: timeout"),
                "bitcoin node: timeout",
            ),
            (
                CoordError::SignersUnavailable {
                    needed: 2,
                    reachable: 1,
                    missing: vec![
                        Unreachable {
                            signer: "signer-2".into(),
                            endpoint: Some("https://127.0.0.1:7411".into()),
                        },
                        Unreachable {
                            signer: "signer-9".into(),
                            endpoint: None,
                        },
                    ],
                },
                "need 2 signers, 1 reachable; unreachable: signer-2 (https://127.0.0.1:7411), signer-9 (not configured)",
            ),
            (
                CoordError::Aborted {
                    culprit: Some("signer-3".into()),
                    reporter: Some("signer-1".into()),
                    suspects: Vec::new(),
                    reason: "signer signer-3 misbehaved: malformed protocol message".into(),
                },
                "signer-1 reports: signer signer-3 misbehaved: malformed protocol message",
            ),
            (
                CoordError::Aborted {
                    culprit: Some("signer-2".into()),
                    reporter: None,
                    suspects: Vec::new(),
                    reason: "returned a malformed partial signature".into(),
                },
                "signer-2 returned a malformed partial signature",
            ),
            (
                CoordError::silent("signer-2", "did not answer within 5s"),
                "signer-2 did not answer within 5s",
            ),
            (
                CoordError::DeadlineExceeded {
                    waiting_for: vec!["signer-3".into()],
                    reporter: Some("signer-1".into()),
                    reason: "session timed out after 2s waiting for [\"signer-3\"]".into(),
                },
                "signer-1: session timed out after 2s waiting for [\"signer-3\"]",
            ),
            (
                CoordError::Refused {
                    signer: "signer-1".into(),
                    reason: "refused by co-signer checks: time lock".into(),
                },
                "refused: signer-1: refused by co-signer checks: time lock",
            ),
            (
                CoordError::SignerRejected {
                    signer: "signer-1".into(),
                    kind: SignerRejection::NotFound,
                    message: "not found: key k".into(),
                },
                "signer-1: not found: key k",
            ),
        ];
        for (e, text) in cases {
            assert_eq!(e.to_string(), text);
        }
    }

    #[test]
    fn storage_keeps_what_and_the_source() {
        let e = CoordError::storage("withdrawal store", sqlx::Error::PoolTimedOut);
        assert!(
            e.to_string()
                .starts_with("storage failure: withdrawal store: "),
            "{e}"
        );
        let CoordError::Storage { source, .. } = &e else {
            panic!("{e:?}");
        };
        assert!(matches!(
            source.downcast_ref::<sqlx::Error>(),
            Some(sqlx::Error::PoolTimedOut)
        ));
        assert!(std::error::Error::source(&e).is_some());
        let e = CoordError::not_found("withdrawal", "wd-1");
        assert_eq!(e.to_string(), "not found: withdrawal wd-1");
        assert_eq!(e.subject(), Some(("withdrawal", "wd-1")));
    }

    #[test]
    fn a_witness_round_keeps_each_witness_and_stays_retryable() {
        let e = CoordError::WitnessRound {
            size: 12,
            failures: vec![
                WitnessFailure {
                    witness: "signer-2".into(),
                    error: Box::new(CoordError::Refused {
                        signer: "signer-2".into(),
                        reason: "checkpoint 12 is not consistent with 9".into(),
                    }),
                },
                WitnessFailure {
                    witness: "signer-3".into(),
                    error: Box::new(CoordError::silent("signer-3", "did not co-sign in time")),
                },
            ],
        };
        assert_eq!(
            e.to_string(),
            "witnesses did not co-sign checkpoint 12: refused: signer-2: checkpoint 12 is not consistent with 9; signer-3 did not co-sign in time"
        );
        assert_eq!(e.culprit(), Some("signer-2"));
        assert_eq!(e.absent(), ["signer-3"]);
        assert!(e.is_unavailable() && e.is_transient());
    }

    #[test]
    fn conflicts_and_preconditions_keep_their_subject() {
        let e = CoordError::already_exists("key", "k1", "already exists");
        assert_eq!(e.to_string(), "key k1 already exists");
        assert_eq!(e.subject(), Some(("key", "k1")));
        let e = CoordError::precondition("key", "k1", "is locked for signing");
        assert_eq!(
            e.to_string(),
            "failed precondition: key k1 is locked for signing"
        );
        assert_eq!(e.subject(), Some(("key", "k1")));
        assert_eq!(e.culprit(), None);
    }

    #[test]
    fn culprit_and_absent_are_data() {
        let e = CoordError::Aborted {
            culprit: Some("signer-3".into()),
            reporter: Some("signer-1".into()),
            suspects: Vec::new(),
            reason: "x".into(),
        };
        assert_eq!(e.culprit(), Some("signer-3"));
        let e = CoordError::DeadlineExceeded {
            waiting_for: vec!["signer-2".into(), "signer-3".into()],
            reporter: Some("signer-1".into()),
            reason: "x".into(),
        };
        assert_eq!(e.culprit(), None);
        assert_eq!(e.absent(), ["signer-2", "signer-3"]);
        assert!(CoordError::unavailable("x").culprit().is_none());
    }
}
