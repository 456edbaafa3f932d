//! The Custos signer node: holds sealed key shares, runs cggmp21 sessions
//! with its pinned peers over libp2p, and answers the coordinator's control
//! API over mTLS. `main.rs` wires these together.

#![deny(missing_docs)]

pub mod config;
pub mod cosigner;
pub mod error;
pub mod node;
pub mod outbound;
pub mod p2p;
pub mod service;
pub mod sessions;
pub mod store;
