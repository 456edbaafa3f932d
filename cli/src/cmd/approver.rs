//! `custos approver` subcommands.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use custos_policy::{SecretKey, Zeroizing};

/// `custos approver` subcommands.
#[derive(clap::Subcommand)]
pub enum ApproverCommand {
    /// Generate an Ed25519 key (approver or admin): writes a PKCS#8 PEM file readable
    /// only by its owner and prints the public key for the policy's `ed25519` field.
    Keygen {
        /// Where to write the secret key; an existing file is never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Runs a `custos approver` subcommand.
pub fn run(command: ApproverCommand) -> anyhow::Result<ExitCode> {
    match command {
        ApproverCommand::Keygen { out } => keygen(&out),
    }
}

fn keygen(out: &std::path::Path) -> anyhow::Result<ExitCode> {
    let mut seed = Zeroizing::new([0u8; 32]);
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed[..]))
        .context("cannot read randomness from /dev/urandom")?;
    let key = SecretKey::from_seed(&seed);
    let pem = key.to_pem()?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(out)
        .with_context(|| format!("cannot create {} (it must not exist yet)", out.display()))?;
    f.write_all(pem.as_bytes())?;
    f.sync_all()?;
    println!("{}", key.public());
    eprintln!(
        "secret key written to {} (mode 0600); the line above is the public key",
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}
