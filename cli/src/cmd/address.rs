//! `custos address derive|list`: HD-derived deposit addresses of a wallet
//! (its child key `m/0/<index>`, non-hardened BIP32), recorded by the
//! coordinator and watched for deposits credited to the wallet.

use std::process::ExitCode;

use custos_devkit::BACKEND_CLIENT;
use custos_proto::custody::{DeriveAddressRequest, DerivedAddress, ListDerivedAddressesRequest};
use serde_json::json;

use super::conn::{ConnArgs, block_on, rpc};

/// `custos address ...`.
#[derive(clap::Subcommand)]
pub enum AddressCommand {
    /// The deposit address `index` of a wallet (path m/0/<index>), in its
    /// chain's format; the same wallet and index always give the same
    /// address. Recorded and watched for deposits (role backend).
    Derive(DeriveArgs),
    /// The derived addresses recorded for a wallet (or every wallet).
    List(ListArgs),
}

/// Arguments of `custos address derive`.
#[derive(clap::Args)]
pub struct DeriveArgs {
    /// Wallet (key) id.
    #[arg(long)]
    wallet: String,
    /// Index below 2^31 (non-hardened): the path is m/0/<index>.
    #[arg(long)]
    index: u32,
    /// Your reference for it (a customer id), at most 128 bytes.
    #[arg(long, default_value = "")]
    label: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Arguments of `custos address list`.
#[derive(clap::Args)]
pub struct ListArgs {
    /// Only this wallet's.
    #[arg(long)]
    wallet: Option<String>,
    /// Print JSON (one array).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Runs a `custos address` subcommand.
pub fn run(command: AddressCommand) -> anyhow::Result<ExitCode> {
    block_on(async move {
        match command {
            AddressCommand::Derive(a) => {
                let mut c = a.conn.connect(BACKEND_CLIENT).await?;
                let d = c
                    .derive_address(DeriveAddressRequest {
                        wallet: a.wallet,
                        index: a.index,
                        label: a.label,
                    })
                    .await
                    .map_err(rpc("DeriveAddress"))?
                    .into_inner();
                if a.json {
                    println!("{}", to_json(&d));
                } else {
                    println!("{}", d.address);
                    println!(
                        "  wallet {} ({}), path {}{}",
                        d.wallet,
                        d.chain,
                        d.path,
                        if d.label.is_empty() {
                            String::new()
                        } else {
                            format!(", label {}", d.label)
                        }
                    );
                }
            }
            AddressCommand::List(a) => {
                let mut c = a.conn.connect(BACKEND_CLIENT).await?;
                let all = c
                    .list_derived_addresses(ListDerivedAddressesRequest {
                        wallet: a.wallet.unwrap_or_default(),
                    })
                    .await
                    .map_err(rpc("ListDerivedAddresses"))?
                    .into_inner()
                    .addresses;
                if a.json {
                    let list: Vec<_> = all.iter().map(to_json).collect();
                    println!("{}", serde_json::Value::Array(list));
                } else if all.is_empty() {
                    println!("no derived addresses (derive one with `custos address derive`)");
                } else {
                    println!(
                        "{:<20} {:<18} {:<14} {:<64} label",
                        "wallet", "chain", "path", "address"
                    );
                    for d in &all {
                        println!(
                            "{:<20} {:<18} {:<14} {:<64} {}",
                            d.wallet, d.chain, d.path, d.address, d.label
                        );
                    }
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn to_json(d: &DerivedAddress) -> serde_json::Value {
    json!({
        "wallet": d.wallet,
        "chain": d.chain,
        "path": d.path,
        "index": d.index,
        "address": d.address,
        "public_key": hex::encode(&d.public_key),
        "label": d.label,
        "created_at": d.created_at,
    })
}
