//! placeholder

pub mod p2p;
