//! Protobuf messages and tonic services of Custos, generated from `proto/`
//! and checked in (`tests/drift.rs` fails if they drift from the `.proto` files).

#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// The coordinator's public API.
pub mod custody {
    include!("gen/custos.v1.rs");
}

/// The signer nodes' control API.
pub mod signer {
    include!("gen/custos.signer.v1.rs");
}

pub mod json;

/// The most quorum registrations one `RegisterQuorums` call may carry: the
/// coordinator sends at most as many, a signer refuses more (each is a few
/// kilobytes: the policy bundle, approvals and an inclusion proof).
pub const MAX_QUORUM_REGISTRATIONS: usize = 128;

/// Metadata on a signer's refusal of a request from a fenced coordinator
/// (a `coordinator_epoch` older than one the signer has seen): that newer
/// epoch, in decimal, so the coordinator knows at once it no longer leads.
pub const FENCED_EPOCH_HEADER: &str = "custos-fenced-epoch";

/// Metadata on an error that names the signer at fault (a peer that
/// misbehaved or could not be reached, a signer that refused): its node id.
/// Signers set it on their answers; the coordinator keeps it as data and
/// sets it on its own answers to clients.
pub const CULPRIT_HEADER: &str = "custos-culprit";

/// Metadata on a timeout or outage naming the signers that were waited for
/// in vain: their node ids, comma-separated.
pub const WAITING_FOR_HEADER: &str = "custos-waiting-for";
