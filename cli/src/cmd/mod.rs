//! One module per top-level subcommand.

pub mod approver;
pub mod audit;
pub mod demo;
pub mod dev;
pub mod policy;
