//! Transport-agnostic threshold signing for Custos: ECDSA (secp256k1) over
//! `cggmp21`, and Schnorr over FROST ([`frost`]: BIP340/taproot and Ed25519),
//! both behind one seam ([`scheme::SignatureScheme`]).
//!
//! Services own the network; this crate owns the protocol. A session is a
//! [`SessionIo`]: a stream of authenticated inbound frames and a sink of
//! outbound frames, both tagged with session-local party indices. The
//! [`session`] adapter decodes frames into `round_based` messages, checks
//! that each one belongs to this execution and really comes from the party
//! the transport authenticated, and records the culprit when it does not, so
//! an abort can name who misbehaved.
//!
//! Costs shape the API: auxiliary info (Paillier keys, safe primes) is
//! generated once per signer group and reused for every key of that group;
//! key generation is then milliseconds, presignatures are pooled, and online
//! signing from a presignature is a local computation plus a combine.

#![deny(missing_docs)]

pub mod cancel;
pub mod eid;
pub mod erased;
mod error;
pub mod fixture;
pub mod frost;
pub mod hd;
pub mod primes;
pub mod protocol;
pub mod recovery;
pub mod scheme;
pub mod session;
pub mod sim;
pub mod wire;

pub use cancel::CancelToken;
pub use eid::{ExecutionId, SessionKind};
pub use erased::{ThresholdScheme, scheme};
pub use error::MpcError;
pub use hd::{DerivationPath, ExtendedPublicKey};
pub use protocol::{
    AuxInfo, IncompleteKeyShare, KeyShare, PartialSignature, Presignature, Primes, Signature,
};
pub use scheme::{Cggmp21Ecdsa, SchemeId, SignatureScheme};
pub use session::{Inbound, Outbound, SessionIo};
