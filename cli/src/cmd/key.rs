//! `custos key create|list|show|unlock|refresh|repair|rotate|retire`: key
//! ceremonies for security admins (distributed key generation on the signer
//! group, in cggmp21 ECDSA or FROST), the keys and their addresses, a key's
//! state, unlocking a key that repeated unexplained signing failures
//! locked, the share maintenance of FROST keys (refresh, repair of a lost
//! share), rotation by sweep to a new key and retirement.

use std::process::ExitCode;

use anyhow::bail;
use custos_proto::custody::{
    CreateKeyRequest, Curve, GetKeyRequest, Key, KeyRotation, KeyShareChange, ListKeysRequest,
    RefreshKeyRequest, RepairKeyShareRequest, RetireKeyRequest, RotateKeyRequest, Scheme, Sweep,
    UnlockKeyRequest,
};
use serde_json::json;

use super::conn::{ConnArgs, block_on, rpc};

/// `custos key ...`.
#[derive(clap::Subcommand)]
pub enum KeyCommand {
    /// Create a key: the signer group runs a distributed key generation (no
    /// machine ever holds the whole key); prints its public key and address.
    /// cggmp21 ECDSA keys are wallet keys on a chain (--chain); FROST keys
    /// (--scheme frost-ed25519 | frost-secp256k1-tr) sign digests and
    /// messages (`custos sign`, or `--chain message` withdrawals), and
    /// frost-secp256k1-tr keys hold P2TR coins on Bitcoin-format chains.
    Create(CreateArgs),
    /// List the keys: threshold, signers, chain and address.
    List(ListArgs),
    /// Show a key: threshold, signers, address, presignatures and whether it is locked for signing.
    Show(ShowArgs),
    /// Unlock a key locked after repeated unexplained signing failures (admin;
    /// the reason is written to the audit log before the key signs again).
    Unlock(UnlockArgs),
    /// Refresh a FROST key's shares without a dealer (admin): every signer
    /// holding a share must be up; they jointly re-randomise their shares.
    /// The public key and addresses stay; every share changes, and old
    /// shares (a stolen backup, a retired disk) and the nonce commitments
    /// pooled under them become useless. Logged (key_shares_changed).
    Refresh(RefreshArgs),
    /// Repair a signer's lost share of a FROST key (admin): at least the
    /// threshold of the other holders rebuild it on that signer without
    /// learning it. The signer must be running with its share gone (a new
    /// disk, a wiped data directory). Logged (key_shares_changed).
    Repair(RepairArgs),
    /// Rotate a key by sweep (admin): a new key on the same signers (same
    /// scheme, threshold and chain) receives every balance of every address
    /// of the old one through ordinary withdrawals (policy, approvals, time
    /// lock). Run it again (or with --wait) to follow the sweeps; once
    /// everything is swept the old key is retired. Logged
    /// (key_rotation_started, then the sweeps, then key_retired).
    Rotate(RotateArgs),
    /// Retire a key (admin): refused while it still holds funds (tokens, or
    /// more of the native coin than one transfer's fee) or has open
    /// withdrawals. Logged (key_retired); every signer, on seeing that in
    /// the log it witnessed, destroys its share and presignatures and
    /// refuses the key ever after (key_shares_destroyed).
    Retire(RetireArgs),
}

/// Arguments of `custos key rotate`.
#[derive(clap::Args)]
pub struct RotateArgs {
    /// The key to rotate out.
    key_id: String,
    /// The new key's id [default: <key>-r<unix seconds>] (first call only).
    #[arg(long)]
    new_key_id: Option<String>,
    /// Only show where the rotation stands: create, request and retire nothing.
    #[arg(long)]
    status: bool,
    /// Keep following the sweeps (every 3 s) and retire the key once they
    /// are done; gives up after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    wait: Option<u64>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Arguments of `custos key retire`.
#[derive(clap::Args)]
pub struct RetireArgs {
    /// Key id.
    key_id: String,
    /// Why (logged) [default: "retired by an admin", or the rotation].
    #[arg(long, default_value = "")]
    reason: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Arguments of `custos key refresh`.
#[derive(clap::Args)]
pub struct RefreshArgs {
    /// Key id (a FROST key: frost-secp256k1-tr or frost-ed25519).
    key_id: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Arguments of `custos key repair`.
#[derive(clap::Args)]
pub struct RepairArgs {
    /// Key id (a FROST key: frost-secp256k1-tr or frost-ed25519).
    key_id: String,
    /// The signer whose share is rebuilt (node id, e.g. signer-2).
    #[arg(long)]
    signer: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: ConnArgs,
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
    /// The chain the wallet pays on ("ethereum", "anvil", "litecoin-regtest",
    /// ...); needed for cggmp21 ECDSA keys, none for FROST keys.
    #[arg(long)]
    chain: Option<String>,
    /// Threshold signature scheme: cggmp21 ECDSA over secp256k1 (wallets
    /// on EVM and Bitcoin-format chains), FROST BIP340 Schnorr with a
    /// taproot-tweaked key, or FROST Ed25519.
    #[arg(long, value_enum, default_value_t = SchemeArg::Cggmp21Ecdsa)]
    scheme: SchemeArg,
    /// Signers needed to sign [default: the cluster's threshold].
    #[arg(long)]
    threshold: Option<u32>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

/// `--scheme` of `custos key create`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchemeArg {
    /// cggmp21 threshold ECDSA over secp256k1.
    Cggmp21Ecdsa,
    /// FROST (RFC 9591) BIP340 Schnorr, taproot-tweaked key (BIP86).
    FrostSecp256k1Tr,
    /// FROST (RFC 9591) Ed25519 (RFC 8032 signatures).
    FrostEd25519,
}

impl SchemeArg {
    fn proto(self) -> Scheme {
        match self {
            SchemeArg::Cggmp21Ecdsa => Scheme::Cggmp21Ecdsa,
            SchemeArg::FrostSecp256k1Tr => Scheme::FrostSecp256k1Tr,
            SchemeArg::FrostEd25519 => Scheme::FrostEd25519,
        }
    }
}

/// The CLI's name of a key's scheme.
pub fn scheme_name(value: i32) -> &'static str {
    match Scheme::try_from(value) {
        Ok(Scheme::FrostSecp256k1Tr) => "frost-secp256k1-tr",
        Ok(Scheme::FrostEd25519) => "frost-ed25519",
        _ => "cggmp21-ecdsa",
    }
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
                let chain = a.chain.unwrap_or_default();
                if a.scheme == SchemeArg::Cggmp21Ecdsa && chain.is_empty() {
                    bail!("--chain: a cggmp21 ECDSA key is a wallet key on a chain: name it");
                }
                // A FROST key may name a chain its scheme spends on
                // (frost-secp256k1-tr on Bitcoin-format chains, any on
                // `message`); the coordinator refuses the others.
                let on = if chain.is_empty() {
                    String::new()
                } else {
                    format!(" on {chain}")
                };
                eprintln!(
                    "creating {what}{on} ({}): distributed key generation on the signer group...",
                    scheme_name(a.scheme.proto() as i32)
                );
                let started = std::time::Instant::now();
                let call = c.create_key(CreateKeyRequest {
                    key_id: a.key_id.unwrap_or_default(),
                    curve: Curve::Unspecified.into(),
                    threshold: a.threshold.unwrap_or(0),
                    chain,
                    scheme: a.scheme.proto().into(),
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
            KeyCommand::Refresh(a) => {
                let mut c = a.conn.connect(custos_devkit::ADMIN_CLIENT).await?;
                eprintln!(
                    "refreshing the shares of {} on every signer holding one...",
                    a.key_id
                );
                let out = c
                    .refresh_key(RefreshKeyRequest { key_id: a.key_id })
                    .await
                    .map_err(rpc("RefreshKey"))?;
                print_change(&out.into_inner(), a.json);
                return Ok(ExitCode::SUCCESS);
            }
            KeyCommand::Repair(a) => {
                if a.signer.trim().is_empty() {
                    bail!("--signer: name the signer whose share is repaired");
                }
                let mut c = a.conn.connect(custos_devkit::ADMIN_CLIENT).await?;
                eprintln!(
                    "repairing {}'s share of {} with the other holders...",
                    a.signer, a.key_id
                );
                let out = c
                    .repair_key_share(RepairKeyShareRequest {
                        key_id: a.key_id,
                        signer: a.signer,
                    })
                    .await
                    .map_err(rpc("RepairKeyShare"))?;
                print_change(&out.into_inner(), a.json);
                return Ok(ExitCode::SUCCESS);
            }
            KeyCommand::Rotate(a) => return rotate(a).await,
            KeyCommand::Retire(a) => {
                let mut c = a.conn.connect(custos_devkit::ADMIN_CLIENT).await?;
                eprintln!(
                    "retiring {}: every signer destroys its share once the log shows the retirement...",
                    a.key_id
                );
                let k = c
                    .retire_key(RetireKeyRequest {
                        key_id: a.key_id,
                        reason: a.reason,
                    })
                    .await
                    .map_err(rpc("RetireKey"))?
                    .into_inner();
                print_key(&k, a.json);
                return Ok(if k.shares_destroyed_by.len() == k.participants.len() {
                    ExitCode::SUCCESS
                } else {
                    eprintln!(
                        "not every signer confirmed yet: run `custos key retire {}` again once they are up",
                        k.key_id
                    );
                    ExitCode::from(3)
                });
            }
        };
        print_key(&key, json);
        Ok(ExitCode::SUCCESS)
    })
}

/// `custos key rotate`: one call, or (--wait) follows the sweeps and
/// retires the key when they are done.
async fn rotate(a: RotateArgs) -> anyhow::Result<ExitCode> {
    let c = a.conn.connect(custos_devkit::ADMIN_CLIENT).await?;
    let call = |status_only: bool| {
        let req = RotateKeyRequest {
            key_id: a.key_id.clone(),
            new_key_id: a.new_key_id.clone().unwrap_or_default(),
            status_only,
        };
        let mut c = c.clone();
        async move {
            c.rotate_key(req)
                .await
                .map_err(rpc("RotateKey"))
                .map(|r| r.into_inner())
        }
    };
    if !a.status {
        eprintln!(
            "rotating {}: new key on the same signers, sweeps through the withdrawal flow...",
            a.key_id
        );
    }
    let mut r = call(a.status).await?;
    let Some(limit) = a.wait else {
        print_rotation(&r, a.json);
        return Ok(ExitCode::SUCCESS);
    };
    let started = std::time::Instant::now();
    let mut last = String::new();
    loop {
        let line = progress(&r);
        if line != last && !a.json {
            eprintln!("  [{:>4} s] {line}", started.elapsed().as_secs());
            last = line;
        }
        match r.state.as_str() {
            "retired" => break,
            "swept" => {
                eprintln!("  every balance swept: retiring {}...", a.key_id);
                r = call(false).await?;
                continue;
            }
            "pending" if !a.status => {
                eprintln!("  requesting the next sweeps...");
                r = call(false).await?;
            }
            _ => {}
        }
        if started.elapsed().as_secs() >= limit {
            print_rotation(&r, a.json);
            eprintln!("still {} after {limit} s", r.state);
            return Ok(ExitCode::from(3));
        }
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        r = call(true).await?;
    }
    print_rotation(&r, a.json);
    Ok(ExitCode::SUCCESS)
}

/// One line of rotation progress: sweeps by state.
fn progress(r: &KeyRotation) -> String {
    let mut by: std::collections::BTreeMap<&str, usize> = Default::default();
    for s in &r.sweeps {
        *by.entry(s.status.as_str()).or_default() += 1;
    }
    let states: Vec<String> = by.iter().map(|(s, n)| format!("{n} {s}")).collect();
    format!(
        "{}: {} sweep(s){}",
        r.state,
        r.sweeps.len(),
        if states.is_empty() {
            String::new()
        } else {
            format!(" ({})", states.join(", "))
        }
    )
}

fn sweep_json(s: &Sweep) -> serde_json::Value {
    json!({
        "source_address": s.source_address,
        "derivation_index": s.derivation_index,
        "asset": s.asset,
        "amount": s.amount,
        "withdrawal_id": s.withdrawal_id,
        "status": s.status,
    })
}

fn print_rotation(r: &KeyRotation, as_json: bool) {
    if as_json {
        println!(
            "{}",
            json!({
                "state": r.state,
                "old_key": r.old_key.as_ref().map(key_json),
                "new_key": r.new_key.as_ref().map(key_json),
                "sweeps": r.sweeps.iter().map(sweep_json).collect::<Vec<_>>(),
                "remaining": r.remaining.iter().map(sweep_json).collect::<Vec<_>>(),
                "log_index": r.log_index,
            })
        );
        return;
    }
    let old = r.old_key.as_ref().map_or("", |k| k.key_id.as_str());
    let new = r.new_key.as_ref();
    println!(
        "rotation of {old} to {}: {}",
        new.map_or("(no new key yet)", |k| k.key_id.as_str()),
        r.state
    );
    if let Some(k) = new {
        println!("  new address         {}", k.address);
    }
    if r.log_index > 0 {
        println!("  audit log entry     {}", r.log_index);
    }
    for s in &r.sweeps {
        let from = if s.derivation_index < 0 {
            s.source_address.clone()
        } else {
            format!("{} (m/0/{})", s.source_address, s.derivation_index)
        };
        println!(
            "  sweep {} {} {} from {from}: {}",
            s.withdrawal_id, s.amount, s.asset, s.status
        );
    }
    for s in &r.remaining {
        println!("  still on {}: {} {}", s.source_address, s.amount, s.asset);
    }
    match r.state.as_str() {
        "sweeping" => println!(
            "  sweeps go through the policy (approve them with `custos approve`); run `custos key rotate {old}` again to follow"
        ),
        "pending" => println!(
            "  balances left to sweep (the native coin after the tokens): `custos key rotate {old}` requests them"
        ),
        "swept" => println!("  nothing left to sweep: `custos key rotate {old}` retires the key"),
        _ => {}
    }
    if let Some(k) = &r.old_key
        && !k.retired_at.is_empty()
    {
        println!(
            "  retired             {} (shares destroyed by {})",
            k.retired_at,
            if k.shares_destroyed_by.is_empty() {
                "no signer yet".to_owned()
            } else {
                k.shares_destroyed_by.join(", ")
            }
        );
    }
}

fn print_change(c: &KeyShareChange, as_json: bool) {
    if as_json {
        println!(
            "{}",
            json!({
                "operation": c.operation,
                "generation": c.generation,
                "signers": c.signers,
                "repaired": c.repaired,
                "log_index": c.log_index,
                "key": c.key.as_ref().map(key_json),
            })
        );
        return;
    }
    let key_id = c.key.as_ref().map_or("", |k| k.key_id.as_str());
    if c.operation == "refresh" {
        println!(
            "refreshed the shares of {key_id}: share generation {}, signers {}",
            c.generation,
            c.signers.join(", ")
        );
    } else {
        println!(
            "repaired {}'s share of {key_id} (share generation {}), signers {}",
            c.repaired,
            c.generation,
            c.signers.join(", ")
        );
    }
    if let Some(k) = &c.key {
        println!(
            "  public key          {} (unchanged)",
            hex::encode(&k.public_key)
        );
    }
    println!("  audit log entry     {}", c.log_index);
}

fn key_json(k: &Key) -> serde_json::Value {
    json!({
        "key_id": k.key_id,
        "scheme": scheme_name(k.scheme),
        "curve": if k.curve == Curve::Ed25519 as i32 { "ed25519" } else { "secp256k1" },
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
        "share_generation": k.share_generation,
        "last_share_change": k.last_share_change,
        "last_share_change_at": k.last_share_change_at,
        "retired_at": k.retired_at,
        "successor": k.successor,
        "shares_destroyed_by": k.shares_destroyed_by,
        "retirement_log_index": k.retirement_log_index,
        "rotating_to": k.rotating_to,
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
            if !k.retired_at.is_empty() {
                "RETIRED"
            } else if k.signing_locked {
                "LOCKED"
            } else if !k.rotating_to.is_empty() {
                "rotating"
            } else {
                "active"
            }
        );
    }
}

fn print_key(k: &Key, as_json: bool) {
    if as_json {
        println!("{}", key_json(k));
        return;
    }
    let chain = if k.chain.is_empty() {
        "none".to_owned()
    } else {
        k.chain.clone()
    };
    println!(
        "key {} ({}-of-{}, {}, chain {chain})",
        k.key_id,
        k.threshold,
        k.participants.len(),
        scheme_name(k.scheme),
    );
    println!("  signers             {}", k.participants.join(", "));
    println!("  public key          {}", hex::encode(&k.public_key));
    println!("  address             {}", k.address);
    println!("  created             {}", k.created_at);
    println!("  presignatures ready {}", k.presignatures_ready);
    if k.last_share_change.is_empty() {
        println!(
            "  shares              generation {} (as created)",
            k.share_generation
        );
    } else {
        println!(
            "  shares              generation {}; last change: {} at {}",
            k.share_generation, k.last_share_change, k.last_share_change_at
        );
    }
    if !k.rotating_to.is_empty() {
        println!("  rotating to         {}", k.rotating_to);
    }
    if !k.retired_at.is_empty() {
        println!(
            "  retired             {} (audit log entry {}){}",
            k.retired_at,
            k.retirement_log_index,
            if k.successor.is_empty() {
                String::new()
            } else {
                format!(", balances moved to {}", k.successor)
            }
        );
        let missing: Vec<&String> = k
            .participants
            .iter()
            .filter(|p| !k.shares_destroyed_by.contains(p))
            .collect();
        println!(
            "  shares destroyed    {}{}",
            if k.shares_destroyed_by.is_empty() {
                "by no signer yet".to_owned()
            } else {
                format!("by {}", k.shares_destroyed_by.join(", "))
            },
            if missing.is_empty() {
                String::new()
            } else {
                format!(
                    "; waiting for {}",
                    missing
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
        println!("  signing             refused: the key is retired");
        return;
    }
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
