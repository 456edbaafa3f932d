//! `custos approver` subcommands.

use std::process::ExitCode;

/// `custos approver` subcommands.
#[derive(clap::Subcommand)]
pub enum ApproverCommand {}

/// Runs a `custos approver` subcommand.
pub fn run(command: ApproverCommand) -> anyhow::Result<ExitCode> {
    match command {}
}
