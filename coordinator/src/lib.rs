//! The Custos coordinator: orchestrates the signer group (aux info, keys,
//! presignature pools, signing) behind the `custos.v1.Custody` gRPC API.
//! It holds no key share. `main.rs` wires config, TLS and servers.

#![deny(missing_docs)]

pub mod adapters;
pub mod audit;
pub mod auth;
pub mod chain;
pub mod cluster;
pub mod config;
pub mod db;
pub mod error;
pub mod key_lock;
pub mod service;
pub mod signers;
pub mod stages;
pub mod withdrawal;
