//! Real-time withdrawal risk scoring: rules plus a per-wallet statistical model
