//! The Custos signer node: holds sealed key shares, runs cggmp21 sessions
//! with its pinned peers over libp2p, and answers the coordinator's control
//! API over mTLS. `main.rs` wires these together.

#![deny(missing_docs)]

pub mod config;

/// This build's mode: [`Dev`](custos_service::config::BuildMode::Dev) in a
/// debug build or with the `dev` feature (optimised demo and benchmark
/// clusters), else `Release`, which refuses every `[dev]` setting at start and
/// compiles out fault injection and raw-digest signing (the checks below are
/// constants, so their branches are removed, yet both modes type-check).
pub const BUILD_MODE: custos_service::config::BuildMode =
    custos_service::config::BuildMode::from_dev(cfg!(any(debug_assertions, feature = "dev")));

/// Whether this build honours development settings: `BUILD_MODE.allows_dev()`.
pub const DEV_BUILD: bool = BUILD_MODE.allows_dev();
pub mod cosigner;
pub mod error;
pub mod fence;
pub mod node;
pub mod outbound;
pub mod p2p;
pub mod recovery;
pub mod service;
pub mod sessions;
pub mod stages;
pub mod store;
