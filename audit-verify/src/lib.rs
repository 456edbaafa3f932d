//! The auditor's offline verifier: given an export of the transparency log
//! (`custos audit export`), the keys the auditor trusts and, for the full
//! replay, the policy documents and admin set, it proves that every
//! signature in the log was authorised by the policy in force, and reports
//! the first entry where it was not, naming the rule broken.
//!
//! `custos audit verify` is a printer around this crate; an auditor can
//! run the same checks from their own code, or build this crate alone.
//!
//! # Layers
//!
//! - The bundle itself (checkpoint signatures, witness quorum, Merkle tree,
//!   consistency with the auditor's previous checkpoint, the structural
//!   replay) is `custos_audit::verify_bundle`; [`verify`] runs it.
//! - [`PolicyReplay`] re-checks each signature's authorisation with the
//!   policy engine (the steps are listed on its module, [`replay`]): the
//!   decision's document and rule (`decision`), the re-evaluated request,
//!   the approvals and their quorum (`approvals`), the chain transaction
//!   built from an approved intent (`chain_tx`), the quorum of a re-approved
//!   fee bump (`fee_bump`) and the time lock; with an admin set, the admin
//!   quorum of every policy activation (`policies`). A UTXO transaction
//!   that pays several withdrawals (a batch, `batch`) is checked against
//!   all of them, and each one the signature did not name is authorised as
//!   of the transaction's first signing session (`grant`).
//! - [`onchain`] compares each EVM wallet's mined nonces with the
//!   transactions the log prepared.
//! - [`VerifyError`] is the one error type: each variant names the entry and
//!   the rule it breaks.
//!
//! # Dependencies
//!
//! No key backend (PKCS#11, Argon2), no server framework (tonic, axum), no
//! database (sqlx): `tests/deps.rs` fails if one appears in
//! `cargo tree -p custos-audit-verify --all-features`. Asking chain nodes
//! for mined nonces ([`onchain::query`]) needs an HTTP client (reqwest,
//! tokio); it is behind the feature `evm-rpc`, off by default, which the CLI
//! turns on. To build the pure verifier alone:
//!
//! ```text
//! cargo build -p custos-audit-verify            # pure: no network client
//! cargo build -p custos-audit-verify --features evm-rpc
//! ```
//!
//! # Example
//!
//! Verifying an exported log against the keys the auditor pinned out of
//! band (here the audit crate's golden bundle):
//!
//! ```
//! use custos_audit::{ExportBundle, TrustRoots, VerifierKey};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../audit/tests/vectors"));
//! let bundle: ExportBundle =
//!     serde_json::from_str(&std::fs::read_to_string(dir.join("bundle_good.json"))?)?;
//! let pinned: serde_json::Value =
//!     serde_json::from_str(&std::fs::read_to_string(dir.join("bundle_keys.json"))?)?;
//! let key = |v: &serde_json::Value| VerifierKey::parse(v.as_str().unwrap_or_default());
//! let witness_keys = pinned["witness_keys"]
//!     .as_array()
//!     .into_iter()
//!     .flatten()
//!     .map(key)
//!     .collect::<Result<Vec<_>, _>>()?;
//! let trust = TrustRoots {
//!     log_key: key(&pinned["log_key"])?,
//!     witness_quorum: witness_keys.len(),
//!     witness_keys,
//! };
//! // The last checkpoint this auditor verified: the export must extend it.
//! let previous = pinned["previous_checkpoint"].as_str();
//!
//! // Structural replay only: no policy documents given.
//! let outcome = custos_audit_verify::verify(&bundle, &trust, previous, None);
//! match outcome.report.first_failure() {
//!     None => println!("{} signatures authorised", outcome.report.signatures_authorised),
//!     Some(f) => println!("first bad entry {:?}: {}", f.entry, f.message),
//! }
//! assert!(outcome.is_ok());
//! # Ok(())
//! # }
//! ```
//!
//! The full replay takes the policy documents in force during the range,
//! exactly as the admins signed them, and the admin set the auditor trusts:
//!
//! ```no_run
//! use custos_audit::{ExportBundle, TrustRoots};
//! use custos_audit_verify::{PolicyReplay, verify};
//! use custos_policy::AdminSet;
//!
//! fn full_replay(
//!     bundle: &ExportBundle,
//!     trust: &TrustRoots,
//! ) -> Result<bool, Box<dyn std::error::Error>> {
//!     let admins = AdminSet::parse(&std::fs::read("admins.toml")?)?;
//!     let policy = PolicyReplay::new(
//!         vec![(std::fs::read("policy.toml")?, "policy.toml".to_owned())],
//!         Some(admins),
//!         bundle,
//!     )?;
//!     let outcome = verify(bundle, trust, None, Some(&policy));
//!     for failure in &outcome.report.failures {
//!         eprintln!("entry {:?}: {}", failure.entry, failure.message);
//!     }
//!     Ok(outcome.is_ok())
//! }
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod addresses;
mod approvals;
mod batch;
mod chain_tx;
mod decision;
mod error;
mod fee_bump;
mod grant;
pub mod onchain;
mod policies;
pub mod replay;
mod report;
#[cfg(test)]
mod testing;

pub use error::{ApprovalProblem, VerifyError};
pub use replay::{BatchCount, PolicyReplay};
pub use report::{ReplayMode, Verification, verify};
