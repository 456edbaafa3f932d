//! The EVM chain adapter (Ethereum and EVM-compatible chains).

pub mod address;
pub mod asset;
#[cfg(feature = "rpc")]
pub mod rpc;
pub mod signature;
pub mod tx;
