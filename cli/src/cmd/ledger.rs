//! `custos ledger`: balances, invariant check, deposits and reconciliation
//! against the chain, through the coordinator's REST API (`/v1/ledger/*`).

use std::process::ExitCode;

use anyhow::anyhow;
use serde_json::{Value, json};

use super::conn::block_on;
use super::report::{HttpArgs, csv, encode, table};

/// `custos ledger` subcommands.
#[derive(clap::Subcommand)]
pub enum LedgerCommand {
    /// Compare ledger balances (available + reserved) with on-chain balances of
    /// every wallet on the chain; exits 1 if any differ.
    Reconcile(ReconcileArgs),
    /// Account balances (available, reserved, fees, external) per wallet and asset.
    Balances(BalancesArgs),
    /// Check the ledger's invariants; exits 1 naming every violation.
    Check(OutputArgs),
    /// Postings the ledger refused (e.g. a reservation beyond the overdraft limit).
    Exceptions(OutputArgs),
    /// Record a deposit (admin): external → available, idempotent per reference.
    Deposit(DepositArgs),
    /// Set how far below zero a wallet's available balance may go (admin).
    Overdraft(OverdraftArgs),
}

/// Arguments of `custos ledger overdraft`.
#[derive(clap::Args)]
pub struct OverdraftArgs {
    /// Wallet id.
    #[arg(long)]
    wallet: String,
    /// Asset symbol.
    #[arg(long)]
    asset: String,
    /// `unlimited`, or base units (0: no overdraft).
    #[arg(long)]
    limit: String,
    #[command(flatten)]
    http: HttpArgs,
}

/// Output switches.
#[derive(clap::Args)]
pub struct OutputArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    http: HttpArgs,
}

/// Arguments of `custos ledger reconcile`.
#[derive(clap::Args)]
pub struct ReconcileArgs {
    /// Chain: `eth` (every EVM wallet) or a chain name (`anvil`, `ethereum`;
    /// a configured UTXO chain such as `litecoin-regtest`: its wallets' coins
    /// as the coordinator's node lists them).
    #[arg(long, default_value = "eth")]
    chain: String,
    /// JSON-RPC URL the coordinator reads balances from [default: its `[ledger]
    /// eth_rpc_url`]; naming one needs the admin client.
    #[arg(long, value_name = "URL")]
    rpc: Option<String>,
    /// Print CSV.
    #[arg(long, conflicts_with = "json")]
    csv: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    http: HttpArgs,
}

/// Arguments of `custos ledger balances`.
#[derive(clap::Args)]
pub struct BalancesArgs {
    /// Only this wallet.
    #[arg(long)]
    wallet: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    http: HttpArgs,
}

/// Arguments of `custos ledger deposit`.
#[derive(clap::Args)]
pub struct DepositArgs {
    /// Wallet id.
    #[arg(long)]
    wallet: String,
    /// Asset symbol as withdrawals name it (e.g. ETH).
    #[arg(long)]
    asset: String,
    /// Amount in base units (wei, satoshi).
    #[arg(long)]
    amount: String,
    /// The deposit's identity on its chain (e.g. `eth:<tx hash>:<log index>`) [default: generated].
    #[arg(long)]
    reference: Option<String>,
    #[command(flatten)]
    http: HttpArgs,
}

/// Runs a `custos ledger` subcommand.
pub fn run(command: LedgerCommand) -> anyhow::Result<ExitCode> {
    match command {
        LedgerCommand::Reconcile(a) => reconcile(a),
        LedgerCommand::Balances(a) => balances(a),
        LedgerCommand::Check(a) => check(a),
        LedgerCommand::Exceptions(a) => exceptions(a),
        LedgerCommand::Deposit(a) => deposit(a),
        LedgerCommand::Overdraft(a) => overdraft(a),
    }
}

fn s(v: &Value, k: &str) -> String {
    match v.get(k) {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn reconcile(a: ReconcileArgs) -> anyhow::Result<ExitCode> {
    let client = if a.rpc.is_some() {
        custos_devkit::ADMIN_CLIENT
    } else {
        custos_devkit::AUDITOR_CLIENT
    };
    let api = a.http.api(client)?;
    let mut path = format!("/v1/ledger/reconcile?chain={}", encode(&a.chain));
    if let Some(rpc) = &a.rpc {
        path.push_str(&format!("&rpc={}", encode(rpc)));
    }
    let out = block_on(api.call("GET", &path, None))?;
    let ok = out.get("ok").and_then(Value::as_bool).unwrap_or(false);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let columns: Vec<String> = [
            "wallet", "address", "asset", "ledger", "reserved", "onchain", "delta",
        ]
        .map(String::from)
        .to_vec();
        let wallets = out
            .get("wallets")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let rows: Vec<Vec<String>> = wallets
            .iter()
            .map(|w| {
                [
                    "wallet", "address", "asset", "ledger", "reserved", "onchain", "delta",
                ]
                .iter()
                .map(|k| s(w, k))
                .collect()
            })
            .collect();
        if a.csv {
            print!("{}", csv(&columns, &rows));
        } else {
            print!("{}", table(&columns, &rows));
            let diffs = out
                .get("differences")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            if let Some(skipped) = out.get("skipped").and_then(Value::as_array)
                && !skipped.is_empty()
            {
                let names: Vec<String> = skipped
                    .iter()
                    .map(|v| v.as_str().unwrap_or("").to_owned())
                    .collect();
                println!("not reconciled (tokens): {}", names.join(", "));
            }
            if ok {
                println!("ledger and chain agree ({} wallets)", rows.len());
            } else {
                println!(
                    "{diffs} difference(s): delta = onchain - ledger (a positive delta is an unrecorded deposit)"
                );
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn balances(a: BalancesArgs) -> anyhow::Result<ExitCode> {
    let api = a.http.api(custos_devkit::AUDITOR_CLIENT)?;
    let path = match &a.wallet {
        Some(w) => format!("/v1/ledger/balances?wallet={}", encode(w)),
        None => "/v1/ledger/balances".into(),
    };
    let out = block_on(api.call("GET", &path, None))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    let columns: Vec<String> = ["wallet", "asset", "kind", "amount"]
        .map(String::from)
        .to_vec();
    let rows: Vec<Vec<String>> = out
        .get("balances")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|b| columns.iter().map(|k| s(b, k)).collect())
        .collect();
    print!("{}", table(&columns, &rows));
    Ok(ExitCode::SUCCESS)
}

fn check(a: OutputArgs) -> anyhow::Result<ExitCode> {
    let api = a.http.api(custos_devkit::AUDITOR_CLIENT)?;
    let out = block_on(api.call("GET", "/v1/ledger/invariants", None))?;
    let ok = out.get("ok").and_then(Value::as_bool).unwrap_or(false);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else if ok {
        println!("ledger consistent");
    } else {
        for v in out
            .get("violations")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            println!("violation: {v}");
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn exceptions(a: OutputArgs) -> anyhow::Result<ExitCode> {
    let api = a.http.api(custos_devkit::AUDITOR_CLIENT)?;
    let out = block_on(api.call("GET", "/v1/ledger/exceptions", None))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    let columns: Vec<String> = [
        "withdrawal_id",
        "wallet",
        "asset",
        "state",
        "kind",
        "detail",
    ]
    .map(String::from)
    .to_vec();
    let rows: Vec<Vec<String>> = out
        .get("exceptions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| columns.iter().map(|k| s(e, k)).collect())
        .collect();
    print!("{}", table(&columns, &rows));
    Ok(ExitCode::SUCCESS)
}

fn deposit(a: DepositArgs) -> anyhow::Result<ExitCode> {
    let api = a.http.api(custos_devkit::ADMIN_CLIENT)?;
    let reference = match a.reference {
        Some(r) => r,
        None => {
            let mut b = [0u8; 8];
            rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut b);
            format!("manual:{}", hex::encode(b))
        }
    };
    let body = json!({
        "wallet": a.wallet, "asset": a.asset, "amount": a.amount, "reference": reference,
    });
    let out = block_on(api.call("POST", "/v1/ledger/deposits", Some(&body)))?;
    let entry = out
        .get("entry_id")
        .ok_or_else(|| anyhow!("unexpected answer {out}"))?;
    let replayed = out
        .get("replayed")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    println!(
        "deposit {reference}: entry {entry}{}",
        if replayed { " (already recorded)" } else { "" }
    );
    Ok(ExitCode::SUCCESS)
}

fn overdraft(a: OverdraftArgs) -> anyhow::Result<ExitCode> {
    let api = a.http.api(custos_devkit::ADMIN_CLIENT)?;
    let body = json!({ "wallet": a.wallet, "asset": a.asset, "limit": a.limit });
    let out = block_on(api.call("POST", "/v1/ledger/overdrafts", Some(&body)))?;
    println!(
        "overdraft limit of {}/{}: {}",
        s(&out, "wallet"),
        s(&out, "asset"),
        s(&out, "limit")
    );
    Ok(ExitCode::SUCCESS)
}
