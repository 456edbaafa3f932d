//! `custos policy` subcommands.

use std::process::ExitCode;

/// `custos policy` subcommands.
#[derive(clap::Subcommand)]
pub enum PolicyCommand {}

/// Runs a `custos policy` subcommand.
pub fn run(command: PolicyCommand) -> anyhow::Result<ExitCode> {
    match command {}
}
