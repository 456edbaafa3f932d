//! One module per top-level subcommand.

pub mod approve;
pub mod approver;
pub mod audit;
pub mod conn;
pub mod demo;
pub mod dev;
pub mod key;
pub mod ledger;
pub mod policy;
pub mod report;
pub mod token;
pub mod view;
pub mod withdraw;
