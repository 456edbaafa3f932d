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
