//! The Custos coordinator: orchestrates the signer group (aux info, keys,
//! presignature pools, signing) behind the `custos.v1.Custody` gRPC API.
//! It holds no key share. `main.rs` wires config, TLS and servers.

#![deny(missing_docs)]

pub mod adapters;
pub mod audit;
pub mod auth;
pub mod chain;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod custody;

/// This build's mode: [`Dev`](custos_service::config::BuildMode::Dev) in a
/// debug build or with the `dev` feature (optimised demo and benchmark
/// clusters), else `Release`, which refuses every `[dev]` setting at start and
/// compiles out `SignDigest` (the check is a constant, so its branch is
/// removed, yet both modes type-check).
pub const BUILD_MODE: custos_service::config::BuildMode =
    custos_service::config::BuildMode::from_dev(cfg!(any(debug_assertions, feature = "dev")));

/// Whether this build honours development settings: `BUILD_MODE.allows_dev()`.
pub const DEV_BUILD: bool = BUILD_MODE.allows_dev();
pub mod db;
pub mod derived;
pub mod edge;
pub mod error;
pub mod key_lock;
pub mod leadership;
pub mod rotation;
pub mod rounds;
pub mod service;
pub mod signers;
pub mod stages;
pub mod storage;
pub mod withdrawal;
