//! Withdrawals: from a backend's request to a signature, through risk
//! scoring, the policy, approvals and time locks.

pub mod assets;
pub mod bundle;
pub mod engine;
pub mod machine;
pub mod state;
pub mod store;

pub use engine::{CreateRequest, Engine, FlowSettings, SubmittedVerdict};
pub use state::State;
