//! The answer of a standby instance: every API call is refused with the
//! address of the active instance, so that clients go there.
//!
//! # Design
//!
//! A standby redirects, it does not proxy: a proxy would keep a standby in
//! the path of every call (its latency, its failures, its TLS termination
//! in front of the client's own mTLS identity), and a client would not
//! notice that it talks to a standby that may itself be stale. A refusal
//! naming the active instance costs one round trip once per failover, and
//! clients configured with every instance (or a load balancer that routes
//! to the one whose `/healthz` is 200) need no redirect at all.
//!
//! gRPC: `UNAVAILABLE` (trailers-only) with `custos-leader` metadata (the
//! active instance's gRPC address) and `retry-after: 1`; the standard health
//! service (`/grpc.health.v1.Health/`) still answers. HTTP: 503 with a
//! `custos-leader` header (its HTTP address), `Retry-After: 1` and
//! `{"error": ..., "leader": ..., "epoch": ...}`.

use std::sync::{Arc, RwLock};

use axum::http;

use crate::limits::{Protocol, RefusalBody};

/// The header (HTTP) and metadata key (gRPC) naming the active instance.
pub const LEADER_HEADER: &str = "custos-leader";

/// Where the active instance is, as its lease says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leader {
    /// Its gRPC API address (`https://host:port`).
    pub grpc: String,
    /// Its HTTP API address (`https://host:port`).
    pub http: String,
    /// Its leadership epoch.
    pub epoch: u64,
}

/// The last known active instance, shared between the lease poller that
/// updates it and the listeners that answer with it.
#[derive(Clone, Debug, Default)]
pub struct LeaderView(Arc<RwLock<Option<Leader>>>);

impl LeaderView {
    /// Records the active instance (`None`: none holds the lease).
    pub fn set(&self, leader: Option<Leader>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = leader;
    }

    /// The active instance, if one is known.
    pub fn get(&self) -> Option<Leader> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The refusal message for a caller.
    pub fn message(&self) -> String {
        message(self.get().as_ref())
    }
}

/// The refusal message naming `leader`.
pub fn message(leader: Option<&Leader>) -> String {
    match leader {
        Some(l) => format!(
            "this coordinator is a standby: the active coordinator is {} (HTTP {}, epoch {}); retry there",
            l.grpc, l.http, l.epoch
        ),
        None => {
            "this coordinator is a standby and no coordinator holds the lease yet: retry shortly"
                .to_owned()
        }
    }
}

/// The answer to any call on a standby's listener speaking `protocol`
/// (a [`crate::limits::Guard::standby`] gives it to every call but gRPC
/// health checks).
pub fn response<B: RefusalBody>(leader: Option<&Leader>, protocol: Protocol) -> http::Response<B> {
    let message = message(leader);
    let one = http::HeaderValue::from_static("1");
    match protocol {
        Protocol::Grpc => {
            let mut status = tonic::Status::unavailable(message);
            if let Some(v) =
                leader.and_then(|l| tonic::metadata::MetadataValue::try_from(l.grpc.as_str()).ok())
            {
                status.metadata_mut().insert(LEADER_HEADER, v);
            }
            let mut r: http::Response<B> = status.into_http();
            r.headers_mut().insert("retry-after", one);
            r
        }
        Protocol::Http => {
            let body = serde_json::json!({
                "error": message,
                "leader": leader.map(|l| l.http.clone()),
                "epoch": leader.map(|l| l.epoch),
            })
            .to_string();
            let mut r = http::Response::new(B::text(body));
            *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
            r.headers_mut().insert(http::header::RETRY_AFTER, one);
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            if let Some(v) = leader.and_then(|l| http::HeaderValue::try_from(l.http.as_str()).ok())
            {
                r.headers_mut().insert(LEADER_HEADER, v);
            }
            r
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn answers_name_the_leader_in_both_protocols() {
        let view = LeaderView::default();
        let g: http::Response<tonic::body::Body> = response(view.get().as_ref(), Protocol::Grpc);
        assert_eq!(g.headers()["grpc-status"], "14");
        assert!(g.headers().get(LEADER_HEADER).is_none());
        view.set(Some(Leader {
            grpc: "https://10.0.0.5:7400".into(),
            http: "https://10.0.0.5:7401".into(),
            epoch: 7,
        }));
        let leader = view.get();
        let g: http::Response<tonic::body::Body> = response(leader.as_ref(), Protocol::Grpc);
        assert_eq!(g.headers()["grpc-status"], "14"); // UNAVAILABLE
        assert_eq!(g.headers()[LEADER_HEADER], "https://10.0.0.5:7400");
        let h: http::Response<axum::body::Body> = response(leader.as_ref(), Protocol::Http);
        assert_eq!(h.status(), 503);
        assert_eq!(h.headers()[LEADER_HEADER], "https://10.0.0.5:7401");
        assert_eq!(h.headers()["retry-after"], "1");
        assert!(view.message().contains("epoch 7"), "{}", view.message());
    }
}
