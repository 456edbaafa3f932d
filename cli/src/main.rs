//! `custos`: the command line tool for approvers, admins, auditors and developers.

use clap::{Parser, Subcommand};

mod cmd;

#[derive(Parser)]
#[command(
    name = "custos",
    version,
    about = "Custos MPC custody cluster: admin, approver, auditor and dev commands"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check, hash, sign and explain withdrawal policies.
    #[command(subcommand)]
    Policy(cmd::policy::PolicyCommand),
    /// Approver key management.
    #[command(subcommand)]
    Approver(cmd::approver::ApproverCommand),
    /// Verify the transparency log offline (auditors).
    #[command(subcommand)]
    Audit(cmd::audit::AuditCommand),
    /// Run a local development cluster on loopback (up, down, status).
    #[command(subcommand)]
    Dev(cmd::dev::DevCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Policy(c) => cmd::policy::run(c),
        Command::Approver(c) => cmd::approver::run(c),
        Command::Audit(c) => cmd::audit::run(c),
        Command::Dev(c) => cmd::dev::run(c),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
