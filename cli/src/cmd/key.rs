//! `custos key show|unlock`: a wallet key's state, and unlocking a key that
//! repeated unexplained signing failures locked (admins).

use std::process::ExitCode;

use anyhow::bail;
use custos_proto::custody::{GetKeyRequest, Key, UnlockKeyRequest};
use serde_json::json;

use super::conn::{ConnArgs, block_on, rpc};

/// `custos key ...`.
#[derive(clap::Subcommand)]
pub enum KeyCommand {
    /// Show a key: threshold, signers, address, presignatures and whether it is locked for signing.
    Show(ShowArgs),
    /// Unlock a key locked after repeated unexplained signing failures (admin;
    /// the reason is written to the audit log before the key signs again).
    Unlock(UnlockArgs),
}

/// Arguments of `custos key show`.
#[derive(clap::Args)]
pub struct ShowArgs {
    /// Key (wallet) id.
    key_id: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Arguments of `custos key unlock`.
#[derive(clap::Args)]
pub struct UnlockArgs {
    /// Key (wallet) id.
    key_id: String,
    /// Why it is safe to sign again (what caused the failures, what was done).
    #[arg(long)]
    reason: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Runs a `custos key` subcommand.
pub fn run(command: KeyCommand) -> anyhow::Result<ExitCode> {
    block_on(async move {
        let (key, json) = match command {
            KeyCommand::Show(a) => {
                let mut c = a.conn.connect(custos_devkit::ADMIN_CLIENT).await?;
                let k = c
                    .get_key(GetKeyRequest { key_id: a.key_id })
                    .await
                    .map_err(rpc("GetKey"))?;
                (k.into_inner(), a.json)
            }
            KeyCommand::Unlock(a) => {
                if a.reason.trim().is_empty() {
                    bail!("--reason: say why the key may sign again (it is logged)");
                }
                let mut c = a.conn.connect(custos_devkit::ADMIN_CLIENT).await?;
                let k = c
                    .unlock_key(UnlockKeyRequest {
                        key_id: a.key_id,
                        reason: a.reason,
                    })
                    .await
                    .map_err(rpc("UnlockKey"))?;
                (k.into_inner(), a.json)
            }
        };
        print_key(&key, json);
        Ok(ExitCode::SUCCESS)
    })
}

fn print_key(k: &Key, as_json: bool) {
    if as_json {
        let v = json!({
            "key_id": k.key_id,
            "threshold": k.threshold,
            "participants": k.participants,
            "public_key": hex::encode(&k.public_key),
            "ethereum_address": k.ethereum_address,
            "chain": k.chain,
            "created_at": k.created_at,
            "presignatures_ready": k.presignatures_ready,
            "signing_locked": k.signing_locked,
            "unexplained_failures": k.unexplained_failures,
            "last_failure": k.last_failure,
        });
        println!("{v}");
        return;
    }
    println!(
        "key {} ({}-of-{}, chain {})",
        k.key_id,
        k.threshold,
        k.participants.len(),
        k.chain
    );
    println!("  signers             {}", k.participants.join(", "));
    println!("  ethereum address    {}", k.ethereum_address);
    println!("  presignatures ready {}", k.presignatures_ready);
    if k.signing_locked {
        println!(
            "  LOCKED for signing after {} unexplained failures; last: {}",
            k.unexplained_failures, k.last_failure
        );
    } else if k.unexplained_failures > 0 {
        println!(
            "  signing             allowed ({} recent unexplained failures; last: {})",
            k.unexplained_failures, k.last_failure
        );
    } else {
        println!("  signing             allowed");
    }
}
