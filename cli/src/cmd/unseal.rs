//! `custos unseal submit|status|reset|split`: the operators' side of the
//! unseal ceremony (`custos_service::unseal`). Secrets are read from the
//! terminal without echo, or as one line from standard input when it is not
//! a terminal; they are never printed, except the shares `split` makes,
//! which are its output.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use custos_hsm::shamir;
use custos_service::unseal::{UnsealRequest, UnsealStatus, ask};
use serde_json::json;
use zeroize::Zeroizing;

use super::conn::block_on;

/// `custos unseal ...`.
#[derive(clap::Subcommand)]
pub enum UnsealCommand {
    /// Give the sealed node the passphrase or one share of it (prompted, or
    /// one line on standard input); a share is recognised by its
    /// `custos-share1-` prefix.
    Submit(SocketArgs),
    /// Whether the node is sealed and how many shares it holds.
    Status(SocketArgs),
    /// Drop the shares the node holds (a wrong share was given).
    Reset(SocketArgs),
    /// Split a passphrase (prompted twice, or one line on standard input)
    /// into SHARES shares, any THRESHOLD of which unseal the node. Give
    /// each share to a different operator; none is stored.
    Split(SplitArgs),
}

/// The node's unseal socket.
#[derive(clap::Args)]
pub struct SocketArgs {
    /// The node's unseal socket (`unseal_socket` in its config; default
    /// `<data_dir>/unseal.sock`).
    #[arg(long)]
    socket: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `custos unseal split`.
#[derive(clap::Args)]
pub struct SplitArgs {
    /// Shares needed to unseal (at least 2).
    #[arg(long, short = 'k')]
    threshold: u8,
    /// Shares to make (at least THRESHOLD, at most 255).
    #[arg(long, short = 'n')]
    shares: u8,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Reads a secret: prompted without echo on a terminal, else one line of stdin.
fn read_secret(prompt: &str) -> anyhow::Result<Zeroizing<String>> {
    let text = if std::io::stdin().is_terminal() {
        Zeroizing::new(rpassword::prompt_password(prompt).context("cannot read from the terminal")?)
    } else {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read standard input")?;
        line
    };
    let trimmed = Zeroizing::new(text.trim_end_matches(['\n', '\r']).to_owned());
    if trimmed.is_empty() {
        bail!("nothing was entered");
    }
    Ok(trimmed)
}

fn print_status(s: &UnsealStatus, json: bool) -> ExitCode {
    if json {
        println!("{}", json!(s));
    } else {
        let held = match (s.threshold, &s.split) {
            (Some(k), Some(split)) => {
                format!(" ({} of {k} shares of split {split} held)", s.shares)
            }
            _ => String::new(),
        };
        match &s.error {
            Some(e) => eprintln!("{}: {}{held}: refused: {e}", s.daemon, s.state),
            None => println!("{}: {}{held}: {}", s.daemon, s.state, s.message),
        }
    }
    if s.error.is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn send(args: &SocketArgs, request: UnsealRequest) -> anyhow::Result<ExitCode> {
    let status = block_on(async {
        ask(&args.socket, &request).await.with_context(|| {
            format!(
                "cannot reach the unseal socket {} (is the node running and sealed, and are you its user?)",
                args.socket.display()
            )
        })
    })?;
    Ok(print_status(&status, args.json))
}

/// Runs a `custos unseal` subcommand.
pub fn run(command: UnsealCommand) -> anyhow::Result<ExitCode> {
    match command {
        UnsealCommand::Status(a) => send(&a, UnsealRequest::default()),
        UnsealCommand::Reset(a) => send(
            &a,
            UnsealRequest {
                reset: true,
                ..Default::default()
            },
        ),
        UnsealCommand::Submit(a) => {
            let secret = read_secret("passphrase or share: ")?;
            let request = if shamir::is_share_text(&secret) {
                shamir::Share::parse(&secret).context("the share")?;
                UnsealRequest {
                    share: Some(secret),
                    ..Default::default()
                }
            } else {
                UnsealRequest {
                    passphrase: Some(secret),
                    ..Default::default()
                }
            };
            send(&a, request)
        }
        UnsealCommand::Split(a) => split(a),
    }
}

fn split(a: SplitArgs) -> anyhow::Result<ExitCode> {
    let pass = read_secret("passphrase to split: ")?;
    if std::io::stdin().is_terminal() {
        let again = read_secret("again: ")?;
        if *again != *pass {
            bail!("the two entries differ; nothing was split");
        }
    }
    let shares = shamir::split(pass.as_bytes(), a.threshold, a.shares)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let texts: Vec<Zeroizing<String>> = shares.iter().map(|s| s.to_text()).collect();
    if a.json {
        let list: Vec<&str> = texts.iter().map(|t| t.as_str()).collect();
        println!(
            "{}",
            json!({"threshold": a.threshold, "shares": list, "split": shares[0].set_id()})
        );
    } else {
        eprintln!(
            "{} shares of split {}; any {} unseal the node. Give each to one operator, store none together:",
            a.shares,
            shares[0].set_id(),
            a.threshold
        );
        for t in &texts {
            println!("{}", t.as_str());
        }
    }
    Ok(ExitCode::SUCCESS)
}
