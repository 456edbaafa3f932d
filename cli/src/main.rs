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
    /// Run the main job on the dev cluster: create a key, sign, verify, time it.
    Demo(cmd::demo::DemoArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Policy(c) => cmd::policy::run(c),
        Command::Approver(c) => cmd::approver::run(c),
        Command::Audit(c) => cmd::audit::run(c),
        Command::Dev(c) => cmd::dev::run(c),
        Command::Demo(a) => cmd::demo::run(a),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
