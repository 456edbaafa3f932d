//! `custos recovery keygen|export|reconstruct`: share backups sealed to the
//! admins' offline recovery key, and the worst case, a key rebuilt from its
//! threshold of backups on an air-gapped machine to sweep the funds.
//!
//! The recovery key's private half is made and kept offline (`keygen`); the
//! signers know only its public half (`[recovery] recipient` in each
//! signer's config) and refuse to seal to anything else. `export` asks the
//! coordinator for every signer's backup of a key (each one logged as a
//! `share_exported` entry first). `reconstruct` never talks to the cluster:
//! it opens the backups, refuses fewer than the key's threshold, prints the
//! key's addresses, and with `--sweep-to` signs a transaction that moves
//! the wallet's ETH to a new address (broadcast with `--rpc --broadcast`,
//! or printed raw for a machine that is online). The reconstructed key
//! lives only in zeroizing memory and is never printed or written.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use custos_chains::evm::address::{address_from_sec1, parse_address, to_checksum};
use custos_chains::evm::asset::Asset;
use custos_chains::evm::rpc::types::BlockTag;
use custos_chains::evm::rpc::{EvmRpc, RpcConfig};
use custos_chains::evm::signature::assemble_signed_any_parity;
use custos_chains::evm::tx::{TransferRequest, build_unsigned, signing_digest};
use custos_chains::utxo::{UtxoNetwork, wallet_address};
use custos_chains::{Address, U256};
use custos_mpc::recovery::{Recipient, RecoveryIdentity, ShareBackup, reconstruct_ecdsa};
use custos_proto::custody::ExportShareBackupsRequest;
use serde_json::json;

use super::conn::{ConnArgs, block_on, rpc};

/// `custos recovery ...`.
#[derive(clap::Subcommand)]
pub enum RecoveryCommand {
    /// Make the admins' recovery key (offline): writes its private half to
    /// --out (mode 0600, never overwritten) and prints the public recipient
    /// to put in every signer's `[recovery] recipient`.
    Keygen(KeygenArgs),
    /// Back up a key: every signer seals its share to the recovery key its
    /// config names; each export is written to the audit log; the backups
    /// (ciphertext) go to --out-dir.
    Export(ExportArgs),
    /// Worst case (t signers lost), on an air-gapped machine: rebuild a key
    /// from its threshold of backups, print its addresses, and optionally
    /// sign a sweep of its ETH to a new address.
    Reconstruct(ReconstructArgs),
    /// Restore a signer on a new host from its backup: the share is sealed
    /// into the data directory of the signer config given, under that
    /// host's own sealer. Then pin the host's new libp2p PeerId and TLS
    /// certificate in the other signers' and the coordinator's configs.
    Restore(RestoreArgs),
}

/// Arguments of `custos recovery restore`.
#[derive(clap::Args)]
pub struct RestoreArgs {
    /// The private recovery key file (from `keygen`), brought to the new
    /// host for the restore only.
    #[arg(long, value_name = "FILE")]
    identity: PathBuf,
    /// This signer's backup file.
    #[arg(long, value_name = "FILE")]
    backup: PathBuf,
    /// The new host's signer config (its node id must be the backup's; its
    /// `data_dir` and `[sealer]` receive the share; relative paths are taken
    /// from the config's directory, where the daemon runs; the file is read
    /// without `CUSTOS_*` overrides). The sealer must
    /// open without a ceremony (passphrase file or environment, PKCS#11 PIN).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `custos recovery keygen`.
#[derive(clap::Args)]
pub struct KeygenArgs {
    /// Where to write the private recovery key (must not exist).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `custos recovery export`.
#[derive(clap::Args)]
pub struct ExportArgs {
    /// Key (wallet) id.
    #[arg(long = "key", value_name = "KEY")]
    key_id: String,
    /// The recovery key's recipient (`custos-recipient1:...`, from `keygen`):
    /// each signer refuses one that is not the recipient its config names.
    #[arg(long, value_name = "RECIPIENT")]
    recipient: String,
    /// Directory for the backups, one `<key>.<signer>.backup.json` each
    /// (created if missing; existing backups are not overwritten).
    #[arg(long, value_name = "DIR")]
    out_dir: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Arguments of `custos recovery reconstruct`.
#[derive(clap::Args)]
pub struct ReconstructArgs {
    /// The private recovery key file (from `keygen`).
    #[arg(long, value_name = "FILE")]
    identity: PathBuf,
    /// Backup files of one key, at least its threshold, from distinct signers.
    #[arg(required = true, value_name = "BACKUP")]
    backups: Vec<PathBuf>,
    /// Sign a transaction moving the wallet's ETH to this address.
    #[arg(long, value_name = "ADDRESS")]
    sweep_to: Option<String>,
    /// An EVM node: chain id, nonce, balance and fees are asked of it when
    /// not given (an online machine; offline, give them all).
    #[arg(long, value_name = "URL")]
    rpc: Option<String>,
    /// Send the signed sweep through --rpc and wait for its receipt.
    #[arg(long, requires = "rpc")]
    broadcast: bool,
    /// EIP-155 chain id [default: asked of --rpc].
    #[arg(long)]
    chain_id: Option<u64>,
    /// The wallet's next nonce [default: asked of --rpc, pending].
    #[arg(long)]
    nonce: Option<u64>,
    /// Max fee per gas, wei [default: --rpc's estimate].
    #[arg(long)]
    max_fee_per_gas: Option<u128>,
    /// Max priority fee per gas, wei [default: --rpc's estimate].
    #[arg(long)]
    priority_fee_per_gas: Option<u128>,
    /// Gas limit.
    #[arg(long, default_value_t = custos_chains::evm::tx::request::NATIVE_TRANSFER_GAS)]
    gas_limit: u64,
    /// Wei to send [default: the balance (asked of --rpc) minus the most
    /// the fee can be].
    #[arg(long)]
    amount: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs a `custos recovery` subcommand.
pub fn run(command: RecoveryCommand) -> anyhow::Result<ExitCode> {
    match command {
        RecoveryCommand::Keygen(a) => keygen(a),
        RecoveryCommand::Export(a) => block_on(export(a)),
        RecoveryCommand::Reconstruct(a) => block_on(reconstruct(a)),
        RecoveryCommand::Restore(a) => restore(a),
    }
}

fn keygen(a: KeygenArgs) -> anyhow::Result<ExitCode> {
    let id = RecoveryIdentity::generate();
    let text = id.to_text();
    custos_fsutil::create_new_atomic(&a.out, text.as_bytes(), 0o600).with_context(|| {
        format!(
            "--out {}: cannot create it (it must not exist)",
            a.out.display()
        )
    })?;
    let r = id.recipient();
    if a.json {
        println!(
            "{}",
            json!({"identity_file": a.out, "recipient": r.to_string(), "fingerprint": r.fingerprint()})
        );
    } else {
        println!(
            "recovery key written to {} (0600): keep it offline",
            a.out.display()
        );
        println!("recipient   {r}");
        println!("fingerprint {}", r.fingerprint());
        println!("put the recipient in every signer's config: [recovery] recipient = \"{r}\"");
    }
    Ok(ExitCode::SUCCESS)
}

async fn export(a: ExportArgs) -> anyhow::Result<ExitCode> {
    let recipient = Recipient::parse(&a.recipient).context("--recipient")?;
    std::fs::create_dir_all(&a.out_dir)
        .with_context(|| format!("--out-dir {}", a.out_dir.display()))?;
    let mut c = a.conn.connect(custos_devkit::ADMIN_CLIENT).await?;
    let out = c
        .export_share_backups(ExportShareBackupsRequest {
            key_id: a.key_id.clone(),
            recipient: recipient.to_string(),
        })
        .await
        .map_err(rpc("ExportShareBackups"))?
        .into_inner();
    let mut written = Vec::new();
    for b in &out.backups {
        // Checked here too: the file must be a backup of this key.
        let parsed = ShareBackup::from_json(&b.backup_json)
            .with_context(|| format!("the backup of {}", b.node_id))?;
        if parsed.header.key_id != a.key_id || parsed.header.node_id != b.node_id {
            bail!(
                "the coordinator returned a backup of {} by {} for {} by {}",
                parsed.header.key_id,
                parsed.header.node_id,
                a.key_id,
                b.node_id
            );
        }
        let path = a
            .out_dir
            .join(format!("{}.{}.backup.json", a.key_id, b.node_id));
        custos_fsutil::create_new_atomic(&path, &b.backup_json, 0o600)
            .with_context(|| format!("{}: cannot create it (it must not exist)", path.display()))?;
        written.push(json!({
            "signer": b.node_id,
            "file": path,
            "backup_hash": b.backup_hash,
            "log_index": b.log_index,
        }));
    }
    if a.json {
        println!(
            "{}",
            json!({"key_id": a.key_id, "recipient_fingerprint": recipient.fingerprint(),
                   "backups": written, "failures": out.failures})
        );
    } else {
        for (w, b) in written.iter().zip(&out.backups) {
            println!(
                "{}  {}  (audit entry {}, backup {})",
                b.node_id,
                w["file"].as_str().unwrap_or_default(),
                b.log_index,
                &b.backup_hash[..16.min(b.backup_hash.len())]
            );
        }
        for f in &out.failures {
            eprintln!("not exported: {f}");
        }
    }
    Ok(if out.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn restore(a: RestoreArgs) -> anyhow::Result<ExitCode> {
    use custos_signer_node::config::SignerConfig;
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(&a.identity)
            .with_context(|| format!("--identity {}", a.identity.display()))?,
    );
    let identity = RecoveryIdentity::parse(&text)
        .with_context(|| format!("--identity {}", a.identity.display()))?;
    let backup = read_backup(&a.backup)?;
    let config = std::path::absolute(&a.config)
        .with_context(|| format!("--config {}", a.config.display()))?;
    // The file alone: the restore's own environment is not the daemon's.
    let cfg: SignerConfig = custos_service::config::load(&config, Vec::new())
        .with_context(|| format!("--config {}", config.display()))?;
    if cfg.node_id != backup.header.node_id {
        bail!(
            "--backup {} is signer {}'s share and --config {} is {}: restore each signer from its own backup",
            a.backup.display(),
            backup.header.node_id,
            config.display(),
            cfg.node_id
        );
    }
    if cfg.sealer.unseal_mode() != custos_hsm::UnsealMode::Auto {
        bail!(
            "--config {}: the restore must open the sealer itself: give it `sealer.passphrase_file` or `passphrase_env` for the restore (the daemon may use the ceremony afterwards)",
            config.display()
        );
    }
    let share = backup.open_ecdsa(&identity)?;
    drop(identity);
    // Relative paths as the daemon, run from the config's directory, reads them.
    if let Some(dir) = config.parent() {
        std::env::set_current_dir(dir).with_context(|| format!("{}", dir.display()))?;
    }
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("data_dir {}", cfg.data_dir.display()))?;
    let sealer = custos_hsm::open_sealer(&cfg.sealer, &cfg.data_dir)
        .context("sealer (config field `sealer`)")?;
    let store = custos_signer_node::store::Store::open(&cfg.data_dir, &cfg.node_id, sealer)?;
    let meta =
        custos_signer_node::recovery::restore_share(&store, &cfg.node_id, &backup.header, &share)?;
    drop(share);
    if a.json {
        println!(
            "{}",
            json!({"key_id": meta.key_id, "node_id": cfg.node_id, "group_id": meta.group_id,
                   "public_key": meta.public_key, "data_dir": std::path::absolute(&cfg.data_dir)?})
        );
    } else {
        println!(
            "share of key {} restored for {} into {} (sealed by its {} sealer)",
            meta.key_id,
            cfg.node_id,
            cfg.data_dir.display(),
            store.sealer_backend()
        );
        println!(
            "next: pin this host's libp2p PeerId in the other signers' [[peers]] and its TLS certificate in the coordinator's config, restart them, then start this signer"
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn read_backup(path: &Path) -> anyhow::Result<ShareBackup> {
    let bytes = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
    ShareBackup::from_json(&bytes).with_context(|| format!("{}", path.display()))
}

fn wei(text: &str, what: &str) -> anyhow::Result<U256> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        bail!("{what}: {text:?} is not a whole number of wei");
    }
    U256::from_str_radix(text, 10).map_err(|e| anyhow::anyhow!("{what}: {e}"))
}

async fn reconstruct(a: ReconstructArgs) -> anyhow::Result<ExitCode> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(&a.identity)
            .with_context(|| format!("--identity {}", a.identity.display()))?,
    );
    let identity = RecoveryIdentity::parse(&text)
        .with_context(|| format!("--identity {}", a.identity.display()))?;
    let backups = a
        .backups
        .iter()
        .map(|p| read_backup(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let key = reconstruct_ecdsa(&identity, &backups)?;
    let wallet = address_from_sec1(&key.public_key)?;
    let mut report = json!({
        "key_id": key.key_id,
        "public_key": hex::encode(key.public_key),
        "from_signers": key.from_nodes,
        "ethereum_address": to_checksum(&wallet),
        "bitcoin_address": wallet_address(UtxoNetwork::Bitcoin, &key.public_key)?.text,
        "litecoin_address": wallet_address(UtxoNetwork::Litecoin, &key.public_key)?.text,
    });
    if !a.json {
        println!(
            "key {} rebuilt from the backups of {} (checked against its public key)",
            key.key_id,
            key.from_nodes.join(", ")
        );
        println!("  public key        {}", hex::encode(key.public_key));
        println!("  ethereum address  {}", to_checksum(&wallet));
        println!(
            "  bitcoin address   {}",
            report["bitcoin_address"].as_str().unwrap_or_default()
        );
        println!(
            "  litecoin address  {}",
            report["litecoin_address"].as_str().unwrap_or_default()
        );
    }
    if let Some(to) = &a.sweep_to {
        let sweep = sweep(&a, to, wallet, &key.secret).await?;
        report["sweep"] = sweep;
    }
    if a.json {
        println!("{report}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Builds, signs and (with `--broadcast`) sends the ETH sweep.
async fn sweep(
    a: &ReconstructArgs,
    to: &str,
    wallet: Address,
    secret: &[u8; 32],
) -> anyhow::Result<serde_json::Value> {
    let recipient = parse_address(to).context("--sweep-to")?;
    let node = match &a.rpc {
        Some(url) => Some(EvmRpc::new(RpcConfig::new(url)).context("--rpc")?),
        None => None,
    };
    let need = |what: &str| anyhow::anyhow!("{what}: give it, or --rpc URL to ask a node");
    let chain_id = match (a.chain_id, &node) {
        (Some(c), _) => c,
        (None, Some(n)) => n.chain_id().await.context("--rpc: chain id")?,
        (None, None) => return Err(need("--chain-id")),
    };
    let nonce = match (a.nonce, &node) {
        (Some(v), _) => v,
        (None, Some(n)) => n
            .transaction_count(wallet, BlockTag::Pending)
            .await
            .context("--rpc: nonce")?,
        (None, None) => return Err(need("--nonce")),
    };
    let (max_fee, tip) = match (a.max_fee_per_gas, a.priority_fee_per_gas, &node) {
        (Some(m), Some(t), _) => (m, t),
        (m, t, Some(n)) => {
            let f = n.estimate_fees().await.context("--rpc: fees")?;
            (
                m.unwrap_or(f.max_fee_per_gas),
                t.unwrap_or(f.max_priority_fee_per_gas),
            )
        }
        (_, _, None) => return Err(need("--max-fee-per-gas and --priority-fee-per-gas")),
    };
    let fee_cap = U256::from(a.gas_limit) * U256::from(max_fee);
    let amount = match (&a.amount, &node) {
        (Some(v), _) => wei(v, "--amount")?,
        (None, Some(n)) => {
            let balance = n.balance(wallet).await.context("--rpc: balance")?;
            if balance <= fee_cap {
                bail!(
                    "{} holds {balance} wei, not more than the fee cap {fee_cap} wei: nothing to sweep",
                    to_checksum(&wallet)
                );
            }
            balance - fee_cap
        }
        (None, None) => return Err(need("--amount")),
    };
    let request = TransferRequest {
        chain_id,
        from: wallet,
        recipient,
        asset: Asset::eth(),
        amount,
        nonce,
        gas_limit: a.gas_limit,
        max_fee_per_gas: max_fee,
        max_priority_fee_per_gas: tip,
    };
    let unsigned = build_unsigned(&request)?;
    let digest = signing_digest(&unsigned);
    let sk = k256::ecdsa::SigningKey::from_slice(secret)
        .map_err(|_| anyhow::anyhow!("the reconstructed key is not a valid secp256k1 key"))?;
    let (sig, _) = sk
        .sign_prehash_recoverable(&digest)
        .map_err(|e| anyhow::anyhow!("signing the sweep: {e}"))?;
    drop(sk);
    let bytes = sig.to_bytes();
    let mut r = [0u8; 32];
    let mut s = [0u8; 32];
    r.copy_from_slice(&bytes[..32]);
    s.copy_from_slice(&bytes[32..]);
    let signed = assemble_signed_any_parity(&unsigned, r, s, wallet)?;
    let mut out = json!({
        "from": to_checksum(&wallet),
        "to": to_checksum(&recipient),
        "amount_wei": amount.to_string(),
        "chain_id": chain_id,
        "nonce": nonce,
        "gas_limit": a.gas_limit,
        "max_fee_per_gas": max_fee.to_string(),
        "max_priority_fee_per_gas": tip.to_string(),
        "tx_hash": signed.hash.to_string(),
        "raw": format!("0x{}", hex::encode(&signed.raw)),
    });
    if !a.json {
        println!(
            "sweep {} wei to {} (nonce {nonce}, chain {chain_id}, fee at most {fee_cap} wei)",
            amount,
            to_checksum(&recipient)
        );
        println!("  tx hash  {}", signed.hash);
        if !a.broadcast {
            println!("  raw      0x{}", hex::encode(&signed.raw));
        }
    }
    if a.broadcast {
        let Some(node) = &node else {
            bail!("--broadcast needs --rpc URL");
        };
        node.send_raw_transaction(&signed.raw)
            .await
            .context("broadcasting the sweep")?;
        let receipt = node
            .wait_for_receipt(
                signed.hash,
                Duration::from_millis(250),
                Duration::from_secs(120),
            )
            .await
            .context("waiting for the sweep's receipt")?;
        if !receipt.success {
            bail!(
                "the sweep {} was mined in block {} but reverted",
                signed.hash,
                receipt.block_number
            );
        }
        out["block"] = json!(receipt.block_number);
        out["status"] = json!("mined");
        if !a.json {
            println!("  mined in block {} (status 1)", receipt.block_number);
        }
    }
    Ok(out)
}
