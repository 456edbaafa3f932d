//! The Custos transparency log: an append-only Merkle tree in the style of
//! RFC 9162 (Certificate Transparency v2), typed log entries, C2SP signed-note
//! checkpoints co-signed by witnesses, and an offline verifier for auditors.
//!
//! # Layers
//!
//! - [`hash`] and [`proof`]: RFC 9162 §2.1 hashing with leaf/node domain
//!   separation and pure proof verification. No storage, no I/O.
//! - [`tree`]: proof *generation* over any source of perfect-subtree hashes,
//!   and [`tree::CompactRange`] for streaming root computation.
//! - [`store`]: the [`LogStore`] trait (synchronous; the coordinator
//!   implements it over its database) and [`MemoryStore`].
//! - [`log`]: [`Log`], which appends encoded entries, keeps every completed
//!   interior node in the store so proofs cost O(log n) lookups, signs
//!   checkpoints through a [`LogSigner`] and exports bundles.
//! - [`entry`]: the typed, versioned canonical entry encoding (format below).
//! - [`WithdrawalStatus`]: the withdrawal lifecycle's states, the one list
//!   the coordinator runs and the log records.
//! - [`note`]: C2SP signed notes, checkpoints, verifier keys, cosignatures.
//! - [`witness`]: the witness state machine that signer nodes run.
//! - [`signer`]: the [`LogSigner`] trait that key backends (`custos-hsm`)
//!   implement for the log and witness keys.
//! - [`bundle`] and [`replay`]: export bundles and the offline verifier.
//! - `sql` and `shared` (feature `sql`): `SqlStore`, the [`LogStore`] in the
//!   coordinator's SQLite or PostgreSQL database, and `SharedLog`, which
//!   drives a log over it from async code.
//!
//! # Trust
//!
//! The coordinator (log operator) is not trusted by the verifier: entries are
//! authenticated only through checkpoints signed by the log key and co-signed
//! by a quorum of witnesses; everything else in a bundle is a claim to check.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod bundle;
pub mod deposits;
pub mod entry;
mod error;
pub mod hash;
pub mod log;
pub mod note;
pub mod proof;
pub mod refusal;
pub mod replay;
#[cfg(feature = "sql")]
pub mod shared;
pub mod signer;
#[cfg(feature = "sql")]
pub mod sql;
mod status;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tree;
pub mod witness;

pub use bundle::{
    ExportBundle, Failure, FailureKind, LoggedRefusal, LoggedRetirement, LoggedShareExport, Report,
    TrustRoots, Warning, verify_bundle,
};
pub use entry::{Entry, EntryBody};
pub use error::AuditError;
pub use hash::{Hash, leaf_hash, node_hash};
pub use log::Log;
pub use note::{Checkpoint, SignedNote, VerifierKey};
pub use replay::{AuthorizationReplay, RequireSatisfiedDecision};
#[cfg(feature = "sql")]
pub use shared::SharedLog;
pub use signer::{LogSigner, SignatureAlgorithm};
#[cfg(feature = "sql")]
pub use sql::SqlStore;
pub use status::WithdrawalStatus;
pub use store::{LogStore, MemoryStore};
pub use witness::Witness;
