//! One module per top-level subcommand.

pub mod address;
pub mod approve;
pub mod approver;
pub mod audit;
pub mod conn;
#[cfg(any(debug_assertions, feature = "dev"))]
pub mod demo;
#[cfg(any(debug_assertions, feature = "dev"))]
pub mod dev;
pub mod key;
pub mod ledger;
pub mod policy;
pub mod recovery;
pub mod report;
pub mod sign;
pub mod token;
pub mod unseal;
pub mod view;
pub mod withdraw;
