//! One module per top-level subcommand.

pub mod approve;
pub mod approver;
pub mod audit;
pub mod audit_chain_tx;
pub mod audit_onchain;
pub mod audit_replay;
pub mod conn;
pub mod demo;
pub mod dev;
pub mod key;
pub mod ledger;
pub mod policy;
pub mod report;
pub mod view;
pub mod withdraw;
