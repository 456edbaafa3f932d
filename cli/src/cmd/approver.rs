//! `custos approver` subcommands.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use custos_policy::{Approval, ApprovalStatement, SecretKey, Timestamp, Verdict, Zeroizing};

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
    /// Sign an approval statement (from `custos policy statement`): prints what is
    /// being approved in plain words, then the approval as JSON.
    Sign {
        /// Your Ed25519 key (PKCS#8 PEM).
        #[arg(long)]
        key: PathBuf,
        /// Your approver id in the policy.
        #[arg(long)]
        id: String,
        /// The statement: JSON, inline or a path.
        #[arg(long)]
        statement: String,
        /// approve, reject or cancel.
        #[arg(long, default_value = "approve")]
        verdict: String,
    },
}

/// Runs a `custos approver` subcommand.
pub fn run(command: ApproverCommand) -> anyhow::Result<ExitCode> {
    match command {
        ApproverCommand::Keygen { out } => keygen(&out),
        ApproverCommand::Sign {
            key,
            id,
            statement,
            verdict,
        } => sign(&key, &id, &statement, &verdict),
    }
}

fn keygen(out: &std::path::Path) -> anyhow::Result<ExitCode> {
    let mut seed = Zeroizing::new([0u8; 32]);
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed[..]))
        .context("cannot read randomness from /dev/urandom")?;
    let key = SecretKey::from_seed(&seed);
    let pem = key.to_pem()?;
    // Created whole or not at all (a crash leaves no torn key), never over
    // an existing file.
    custos_fsutil::create_new_atomic(out, pem.as_bytes(), custos_fsutil::PRIVATE_MODE)
        .with_context(|| format!("cannot create {} (it must not exist yet)", out.display()))?;
    println!("{}", key.public());
    eprintln!(
        "secret key written to {} (mode 0600); the line above is the public key",
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn sign(
    key: &std::path::Path,
    id: &str,
    statement: &str,
    verdict: &str,
) -> anyhow::Result<ExitCode> {
    let verdict = match verdict {
        "approve" => Verdict::Approve,
        "reject" => Verdict::Reject,
        "cancel" => Verdict::Cancel,
        other => anyhow::bail!("verdict {other:?} must be approve, reject or cancel"),
    };
    let s: ApprovalStatement = super::policy::json_arg(statement, "statement")?;
    let pem = Zeroizing::new(
        std::fs::read_to_string(key)
            .with_context(|| format!("cannot read key {}", key.display()))?,
    );
    let key = SecretKey::from_pem(&pem)?;
    // What the approver is about to sign, in plain words (the statement is the truth,
    // not the screen of whoever sent it).
    eprintln!("{verdict:?} as {id} ({}):", key.public());
    eprintln!("  withdrawal  {}", s.withdrawal_id);
    eprintln!(
        "  amount      {} on {}",
        custos_policy::describe_amount(
            s.amount.0,
            custos_policy::known_decimals(&s.asset),
            &s.asset
        ),
        s.chain
    );
    eprintln!("  from wallet {}", s.source_wallet);
    eprintln!("  to          {}", s.destination);
    eprintln!("  fee cap     {}", s.fee_cap);
    eprintln!("  tx digest   {}", hex::encode(&s.tx_digest));
    eprintln!("  policy      {} rule {}", s.policy_hash, s.rule_id);
    eprintln!("  expires     {}", Timestamp(s.expiry.0));
    let approval = Approval::sign(&s, verdict, id, &key)?;
    println!("{}", serde_json::to_string_pretty(&approval)?);
    Ok(ExitCode::SUCCESS)
}
