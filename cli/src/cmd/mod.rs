//! One module per top-level subcommand.

pub mod approver;
pub mod audit;
pub mod dev;
pub mod demo;
pub mod policy;
