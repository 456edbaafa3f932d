//! `custos key create|list|show|unlock`: key ceremonies for security admins
//! (distributed key generation on the signer group), the keys and their
//! addresses, a key's state, and unlocking a key that repeated unexplained
//! signing failures locked.

use std::process::ExitCode;

use anyhow::bail;
use custos_proto::custody::{
    CreateKeyRequest, Curve, GetKeyRequest, Key, ListKeysRequest, UnlockKeyRequest,
};
use serde_json::json;

use super::conn::{ConnArgs, block_on, rpc};

/// `custos key ...`.
#[derive(clap::Subcommand)]
pub enum KeyCommand {
    /// Create a wallet key: the signer group runs a distributed key
    /// generation (no machine ever holds the whole key); prints its address.
    Create(CreateArgs),
    /// List the keys: threshold, signers, chain and address.
    List(ListArgs),
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

/// Arguments of `custos key create`.
#[derive(clap::Args)]
pub struct CreateArgs {
    /// Key (wallet) id: letters, digits, '-', '_', '.'; at most 64 [default:
    /// the coordinator picks one].
    key_id: Option<String>,
    /// The chain the wallet pays on ("ethereum", "anvil", "litecoin-regtest", ...).
    #[arg(long)]
    chain: String,
    /// Signers needed to sign [default: the cluster's threshold].
    #[arg(long)]
    threshold: Option<u32>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Arguments of `custos key list`.
#[derive(clap::Args)]
pub struct ListArgs {
    /// Print JSON (one array).
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
            KeyCommand::Create(a) => {
                let mut c = a.conn.connect(custos_devkit::ADMIN_CLIENT).await?;
                let what = a.key_id.clone().unwrap_or_else(|| "a new key".into());
                eprintln!(
                    "creating {what} on {}: distributed key generation on the signer group...",
                    a.chain
                );
                let started = std::time::Instant::now();
                let call = c.create_key(CreateKeyRequest {
                    key_id: a.key_id.unwrap_or_default(),
                    curve: Curve::Secp256k1.into(),
                    threshold: a.threshold.unwrap_or(0),
                    chain: a.chain,
                });
                tokio::pin!(call);
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
                tick.tick().await;
                let k = loop {
                    tokio::select! {
                        r = &mut call => break r.map_err(rpc("CreateKey"))?,
                        _ = tick.tick() => eprintln!("  still running ({} s)", started.elapsed().as_secs()),
                    }
                };
                eprintln!("created in {:.1} s", started.elapsed().as_secs_f64());
                (k.into_inner(), a.json)
            }
            KeyCommand::List(a) => {
                let mut c = a.conn.connect(custos_devkit::ADMIN_CLIENT).await?;
                let keys = c
                    .list_keys(ListKeysRequest {})
                    .await
                    .map_err(rpc("ListKeys"))?
                    .into_inner()
                    .keys;
                print_list(&keys, a.json);
                return Ok(ExitCode::SUCCESS);
            }
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

fn key_json(k: &Key) -> serde_json::Value {
    json!({
        "key_id": k.key_id,
        "threshold": k.threshold,
        "participants": k.participants,
        "public_key": hex::encode(&k.public_key),
        "address": k.address,
        "ethereum_address": k.ethereum_address,
        "chain": k.chain,
        "created_at": k.created_at,
        "presignatures_ready": k.presignatures_ready,
        "signing_locked": k.signing_locked,
        "unexplained_failures": k.unexplained_failures,
        "last_failure": k.last_failure,
    })
}

fn print_list(keys: &[Key], as_json: bool) {
    if as_json {
        let all: Vec<serde_json::Value> = keys.iter().map(key_json).collect();
        println!("{}", serde_json::Value::Array(all));
        return;
    }
    if keys.is_empty() {
        println!("no keys (create one with `custos key create --chain ...`)");
        return;
    }
    println!(
        "{:<20} {:<7} {:<18} {:<44} {:>7}  state",
        "key", "t-of-n", "chain", "address", "presigs"
    );
    for k in keys {
        println!(
            "{:<20} {:<7} {:<18} {:<44} {:>7}  {}",
            k.key_id,
            format!("{}-of-{}", k.threshold, k.participants.len()),
            k.chain,
            k.address,
            k.presignatures_ready,
            if k.signing_locked { "LOCKED" } else { "active" }
        );
    }
}

fn print_key(k: &Key, as_json: bool) {
    if as_json {
        println!("{}", key_json(k));
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
    println!("  address             {}", k.address);
    println!("  created             {}", k.created_at);
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
