//! `custos dev up|down|status`: a local cluster on loopback for development
//! (dev CA, keys and configs in `--dir`, daemons detached, logs in `<dir>/logs`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use custos_devkit::{
    COORDINATOR_BIN, Cluster, ClusterLayout, ClusterSpec, CoordinatorMode, EvmChain, ProcessRecord,
    SIGNER_BIN, StartOptions, UtxoChain, generate, process_status, stop_from_pid_file,
};

use super::demo::eth::{dev_up_command, node_chain_id};

/// `custos dev` subcommands.
#[derive(clap::Subcommand)]
pub enum DevCommand {
    /// Generate (or reuse) a local cluster in --dir and start it in the background.
    Up(UpArgs),
    /// Stop the cluster started by `custos dev up` (SIGTERM, SIGKILL after 15 s).
    Down(DirArgs),
    /// Show which processes of the cluster are alive.
    Status(DirArgs),
}

/// Arguments of `custos dev up`.
#[derive(clap::Args)]
pub struct UpArgs {
    /// Cluster directory (keys, certificates, configs, data, logs).
    #[arg(long, default_value = custos_devkit::DEFAULT_DIR)]
    dir: PathBuf,
    /// Number of signers.
    #[arg(long, default_value_t = 3)]
    signers: u16,
    /// Default signing threshold.
    #[arg(long, default_value_t = 2)]
    threshold: u16,
    /// Coordinator gRPC port; the others follow (HTTP +1, signers +10.., libp2p +110.., HTTP +210..).
    #[arg(long, default_value_t = custos_devkit::DEFAULT_BASE_PORT)]
    base_port: u16,
    /// Pregenerated safe primes (JSON test fixture) so signers skip generating them.
    #[arg(long, value_name = "FILE")]
    primes_file: Option<PathBuf>,
    /// Aux info made once from --primes-file (`mpc/tests/fixtures/aux-info-<n>.json`),
    /// imported instead of running the aux-info ceremony (debug builds only: a
    /// release signer refuses it).
    #[arg(long, value_name = "FILE", requires = "primes_file")]
    aux_fixture: Option<PathBuf>,
    /// Directory of custos-signer and custos-coordinator [default: next to this executable].
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Withdrawal policy document to install [default: examples/demo-policy.toml,
    /// built in]; signed with the demo admin keys.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Disable the raw-digest signing paths (SignDigest): only policy-approved
    /// withdrawals can be signed.
    #[arg(long)]
    no_raw_digest: bool,
    /// JSON-RPC URL of an EVM node (e.g. anvil, http://127.0.0.1:8545) to sign,
    /// broadcast and confirm withdrawals on, as chain "anvil" (ETH); see
    /// `custos demo --eth-rpc`.
    #[arg(long, value_name = "URL")]
    eth_rpc: Option<String>,
    /// Chain id of the --eth-rpc node [default: asked from the node with eth_chainId].
    #[arg(long, value_name = "N", requires = "eth_rpc")]
    eth_chain_id: Option<u64>,
    /// JSON-RPC URL, with RPC user and password, of a Litecoin Core regtest
    /// node (http://user:password@127.0.0.1:19443/) to spend LTC on as chain
    /// "litecoin-regtest" through a watch-only wallet the coordinator creates
    /// on it; see `custos demo --ltc-rpc`. Its credentials are written into
    /// the cluster's files: use a throwaway regtest node.
    #[arg(long, value_name = "URL")]
    ltc_rpc: Option<String>,
    /// The admins' recovery key (`custos-recipient1:...` from `custos
    /// recovery keygen`) for every signer's `[recovery] recipient`, so that
    /// `custos recovery export` can back up the keys.
    #[arg(long, value_name = "RECIPIENT")]
    recovery_recipient: Option<String>,
    /// Seconds each process may take to open its port.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    timeout: u64,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `custos dev down` and `custos dev status`.
#[derive(clap::Args)]
pub struct DirArgs {
    /// Cluster directory.
    #[arg(long, default_value = custos_devkit::DEFAULT_DIR)]
    dir: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs a `custos dev` subcommand.
pub fn run(command: DevCommand) -> anyhow::Result<ExitCode> {
    match command {
        DevCommand::Up(args) => up(args),
        DevCommand::Down(args) => down(args),
        DevCommand::Status(args) => status(args),
    }
}

/// Where the daemons are: `--bin-dir`, else the directory of this executable.
fn bin_dir(arg: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let dir = match arg {
        Some(d) => d,
        None => std::env::current_exe()
            .context("cannot locate the custos executable")?
            .parent()
            .map(Path::to_path_buf)
            .context("the custos executable has no parent directory")?,
    };
    if !dir.join(SIGNER_BIN).is_file() {
        bail!(
            "`{SIGNER_BIN}` not found in {}: build the daemons with `cargo build --workspace` \
             (or pass --bin-dir)",
            dir.display()
        );
    }
    Ok(dir)
}

fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    // Already running? Then `up` is a no-op that reports the cluster.
    let running = process_status(&args.dir)?;
    let alive = running.iter().filter(|p| p.alive).count();
    if alive > 0 {
        if alive < running.len() {
            bail!(
                "the dev cluster in {} is partly running ({alive} of {} processes alive): \
                 run `custos dev down --dir {0}` then `custos dev up` again",
                args.dir.display(),
                running.len()
            );
        }
        let layout = ClusterLayout::load(&args.dir)?;
        if let Some(url) = &args.eth_rpc {
            let has_it = layout.evm_chain.as_ref().is_some_and(|c| {
                c.uses_rpc(url) && args.eth_chain_id.is_none_or(|id| id == c.chain_id)
            });
            if !has_it {
                let now = layout.evm_chain.as_ref().map_or_else(
                    || "without an EVM chain".to_string(),
                    |c| format!("with the EVM node {} (chain id {})", c.rpc_url, c.chain_id),
                );
                bail!(
                    "the dev cluster in {} is already running {now}: to use --eth-rpc {url}, \
                     restart it: `custos dev down --dir {0}` then `{}`",
                    args.dir.display(),
                    dev_up_command(&args.dir, layout.base_port, url)
                );
            }
        }
        if let Some(url) = &args.ltc_rpc
            && !layout.utxo_chain.as_ref().is_some_and(|c| c.uses_rpc(url))
        {
            let now = layout.utxo_chain.as_ref().map_or_else(
                || "without a UTXO chain".to_string(),
                |c| format!("with the node {}", custos_db::redact_url(&c.rpc_url)),
            );
            let url = custos_db::redact_url(url);
            bail!(
                "the dev cluster in {} is already running {now}: to use --ltc-rpc {url}, \
                 restart it: `custos dev down --dir {0}` then `custos dev up --dir {0} \
                 --ltc-rpc {url}`",
                args.dir.display(),
            );
        }
        let records: Vec<ProcessRecord> = running.into_iter().map(|p| p.record).collect();
        if !args.json {
            println!("custos dev cluster already running");
        }
        if layout.base_port != args.base_port
            || layout.signers.len() != usize::from(args.signers)
            || layout.threshold != args.threshold
        {
            eprintln!(
                "note: the running cluster keeps its settings; `custos dev down --dir {}` first to change them",
                args.dir.display()
            );
        }
        report(&layout, &records, args.json)?;
        return Ok(ExitCode::SUCCESS);
    }
    // Stale pid file (processes gone): clear it.
    stop_from_pid_file(&args.dir)?;

    let bins = bin_dir(args.bin_dir)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let evm_chain = match (&args.eth_rpc, args.eth_chain_id) {
        (Some(url), Some(id)) => Some(EvmChain::new(url, id)),
        (Some(url), None) => Some(EvmChain::new(url, rt.block_on(node_chain_id(url))?)),
        (None, _) => None,
    };
    let spec = ClusterSpec {
        dir: args.dir.clone(),
        signers: args.signers,
        threshold: args.threshold,
        base_port: args.base_port,
        primes_file: args.primes_file,
        aux_fixture: args.aux_fixture,
        policy: args.policy,
        raw_digest: !args.no_raw_digest,
        // The signers need the coordinator's audit-log key: generation asks the
        // coordinator binary for it (and fails clearly if it cannot).
        bin_dir: bins.join(COORDINATOR_BIN).is_file().then(|| bins.clone()),
        evm_chain,
        utxo_chain: args.ltc_rpc.as_ref().map(UtxoChain::new),
        recovery_recipient: args.recovery_recipient.clone(),
        ..ClusterSpec::default()
    };
    if !bins.join(COORDINATOR_BIN).is_file() {
        eprintln!(
            "warning: `{COORDINATOR_BIN}` not found in {}: starting the signers only",
            bins.display()
        );
    }
    let layout = generate(&spec)?;
    let opts = StartOptions::default()
        .detached(true)
        .coordinator(CoordinatorMode::IfPresent)
        .timeout(Duration::from_secs(args.timeout));
    let cluster = rt.block_on(Cluster::start_with(layout.clone(), &bins, opts))?;
    let records = cluster.detach();
    report(&layout, &records, args.json)?;
    Ok(ExitCode::SUCCESS)
}

fn pid_of(records: &[ProcessRecord], name: &str) -> String {
    records
        .iter()
        .find(|r| r.name == name)
        .map_or_else(|| "not running".to_string(), |r| format!("pid {}", r.pid))
}

fn report(layout: &ClusterLayout, records: &[ProcessRecord], json: bool) -> anyhow::Result<()> {
    if json {
        // The node's RPC password stays in cluster.json, not in the output.
        let mut shown = layout.clone();
        if let Some(chain) = &mut shown.utxo_chain {
            chain.rpc_url = custos_db::redact_url(&chain.rpc_url);
        }
        let out = serde_json::json!({
            "dir": layout.dir,
            "cluster": shown,
            "processes": records,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let c = &layout.coordinator;
    println!(
        "custos dev cluster in {} ({} signers, threshold {})",
        layout.dir.display(),
        layout.signers.len(),
        layout.threshold
    );
    println!(
        "  coordinator  {:<26} {:<12} http {} metrics http://{}",
        c.url,
        pid_of(records, &c.name),
        c.http_url,
        c.metrics_listen
    );
    for s in &layout.signers {
        println!(
            "  {:<12} {:<26} {:<12} peer {}",
            s.node_id,
            s.control_endpoint,
            pid_of(records, &s.node_id),
            s.peer_id
        );
    }
    let dir = layout.dir.display();
    println!();
    println!("  CA certificate  {}", layout.ca_cert.display());
    println!(
        "  admin token     {} (a file; keep it private)",
        c.admin_token_file.display()
    );
    for client in &c.clients {
        println!(
            "  {:<15} {} (role {}; --client {})",
            "client token",
            client.token_file.display(),
            client.roles.join(", "),
            client.id
        );
    }
    println!(
        "  token store     {} (hashes only; `custos token list|create|revoke`)",
        c.token_store.display()
    );
    if let Some(policy) = &layout.policy {
        println!(
            "  policy          {} (hash {})",
            policy.document.display(),
            policy.hash
        );
    }
    if let Some(chain) = &layout.evm_chain {
        println!(
            "  EVM chain       {} (chain id {}) at {}",
            chain.name, chain.chain_id, chain.rpc_url
        );
    }
    if let Some(chain) = &layout.utxo_chain {
        println!(
            "  UTXO chain      {} ({}) at {}",
            chain.name,
            chain.symbol(),
            custos_db::redact_url(&chain.rpc_url)
        );
    }
    println!("  logs            {}/", layout.logs_dir.display());
    println!("  summary         {}/cluster.json", dir);
    println!("  stop with       custos dev down --dir {dir}");
    Ok(())
}

fn down(args: DirArgs) -> anyhow::Result<ExitCode> {
    let stopped = stop_from_pid_file(&args.dir)?;
    if args.json {
        println!("{}", serde_json::json!({ "stopped": stopped }));
    } else if stopped == 0 {
        println!("no dev cluster running in {}", args.dir.display());
    } else {
        println!(
            "stopped {stopped} process{} of the dev cluster in {}",
            if stopped == 1 { "" } else { "es" },
            args.dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn status(args: DirArgs) -> anyhow::Result<ExitCode> {
    let procs = process_status(&args.dir)?;
    if args.json {
        let list: Vec<_> = procs
            .iter()
            .map(|p| {
                serde_json::json!({
                    "name": p.record.name,
                    "pid": p.record.pid,
                    "alive": p.alive,
                    "log": p.record.log,
                })
            })
            .collect();
        println!("{}", serde_json::json!({ "processes": list }));
        return Ok(ExitCode::SUCCESS);
    }
    if procs.is_empty() {
        println!("no dev cluster running in {}", args.dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    for p in &procs {
        println!(
            "  {:<12} pid {:<8} {:<6} log {}",
            p.record.name,
            p.record.pid,
            if p.alive { "alive" } else { "dead" },
            p.record.log.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
