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
    #[cfg(any(debug_assertions, feature = "dev"))]
    #[command(subcommand)]
    Dev(cmd::dev::DevCommand),
    /// Request a withdrawal (backend): prints its id, state, risk and rule.
    Withdraw(cmd::withdraw::WithdrawArgs),
    /// List withdrawals, optionally by state or wallet.
    Withdrawals(cmd::withdraw::ListArgs),
    /// Follow withdrawal state changes as they happen (one line per event).
    Watch(cmd::withdraw::WatchArgs),
    /// List withdrawals waiting for approvals (approvers).
    Pending(cmd::approve::PendingArgs),
    /// Show exactly what a withdrawal asks you to approve, decoded from its statement.
    Show(cmd::approve::ShowArgs),
    /// Approve a withdrawal: sign its statement with your key and submit it.
    Approve(cmd::approve::VerdictArgs),
    /// Reject a withdrawal (one authorised rejection denies it).
    Reject(cmd::approve::RejectArgs),
    /// Cancel a withdrawal during its time lock (the rule's cancel group).
    Cancel(cmd::approve::CancelArgs),
    /// Run the main job on the dev cluster: create a wallet key, withdraw a small
    /// amount (signed at once) and a large one (approved by two treasurers, time
    /// locked, signed), verifying each signature.
    #[cfg(any(debug_assertions, feature = "dev"))]
    Demo(cmd::demo::DemoArgs),
    /// Reports over withdrawals and the ledger: volume, states, approval-latency, heatmap,
    /// blocked, risk, fees (from the coordinator's HTTP port).
    Report(cmd::report::ReportArgs),
    /// Ledger balances, invariant check, deposits (admin) and reconciliation with the chain.
    #[command(subcommand)]
    Ledger(cmd::ledger::LedgerCommand),
    /// Wallet keys: show one, or unlock one that repeated unexplained signing
    /// failures locked (admin).
    #[command(subcommand)]
    Key(cmd::key::KeyCommand),
    /// HD-derived deposit addresses of a wallet (m/0/<index>): derive one
    /// (recorded and watched for deposits), list them.
    #[command(subcommand)]
    Address(cmd::address::AddressCommand),
    /// Sign a raw digest (cggmp21 ECDSA) or message (FROST) with a key:
    /// development clusters only (the coordinator's SignDigest).
    Sign(cmd::sign::SignArgs),
    /// The coordinator's API tokens: create (shown once), list, revoke. Edits
    /// its hashed token store; the running coordinator rereads it (no restart).
    #[command(subcommand)]
    Token(cmd::token::TokenCommand),
    /// The unseal ceremony of a node started with `unseal = "ceremony"`:
    /// give it the passphrase or a share (on its local socket), see how far
    /// it is, or split a passphrase into k-of-n shares.
    #[command(subcommand)]
    Unseal(cmd::unseal::UnsealCommand),
    /// Share backups and disaster recovery: make the admins' offline
    /// recovery key, export every signer's share sealed to it (logged), and
    /// rebuild a key from its threshold of backups to sweep its funds.
    #[command(subcommand)]
    Recovery(cmd::recovery::RecoveryCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Policy(c) => cmd::policy::run(c),
        Command::Approver(c) => cmd::approver::run(c),
        Command::Audit(c) => cmd::audit::run(c),
        #[cfg(any(debug_assertions, feature = "dev"))]
        Command::Dev(c) => cmd::dev::run(c),
        Command::Withdraw(a) => cmd::withdraw::withdraw(a),
        Command::Withdrawals(a) => cmd::withdraw::list(a),
        Command::Watch(a) => cmd::withdraw::watch(a),
        Command::Pending(a) => cmd::approve::pending(a),
        Command::Show(a) => cmd::approve::show(a),
        Command::Approve(a) => cmd::approve::approve(a),
        Command::Reject(a) => cmd::approve::reject(a),
        Command::Cancel(a) => cmd::approve::cancel(a),
        #[cfg(any(debug_assertions, feature = "dev"))]
        Command::Demo(a) => cmd::demo::run(a),
        Command::Report(a) => cmd::report::run(a),
        Command::Ledger(c) => cmd::ledger::run(c),
        Command::Key(c) => cmd::key::run(c),
        Command::Address(c) => cmd::address::run(c),
        Command::Sign(a) => cmd::sign::run(a),
        Command::Token(c) => cmd::token::run(c),
        Command::Unseal(c) => cmd::unseal::run(c),
        Command::Recovery(c) => cmd::recovery::run(c),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
