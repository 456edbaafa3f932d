//! `custos audit` subcommands: offline verification of transparency-log
//! export bundles.
//!
//! `custos audit tail` (following new checkpoints) needs the coordinator's
//! checkpoint API and comes with it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use custos_audit::{
    ExportBundle, RequireSatisfiedDecision, TrustRoots, VerifierKey, verify_bundle,
};

/// `custos audit` subcommands.
#[derive(clap::Subcommand)]
pub enum AuditCommand {
    /// Verify an export bundle offline: recompute the tree, check every
    /// checkpoint signature and witness quorum, consistency with your previous
    /// checkpoint, and that every signature followed a satisfied decision.
    /// Exits 1 naming the first bad entry.
    Verify(VerifyArgs),
}

/// Arguments of `custos audit verify`.
#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The export bundle (JSON).
    bundle: PathBuf,
    /// The log's verifier key (`name+keyid+base64`), or a file holding it.
    #[arg(long, value_name = "PUB")]
    log_key: String,
    /// Witness verifier keys (cosignature/v1 vkeys), or files holding them.
    #[arg(long = "witness-key", value_name = "PUB", num_args = 1..)]
    witness_keys: Vec<String>,
    /// Valid witness cosignatures each checkpoint needs [default: all given keys].
    #[arg(long, value_name = "N")]
    witness_quorum: Option<usize>,
    /// The last checkpoint you verified (signed note file): the bundle must extend it.
    #[arg(long, value_name = "CHECKPOINT")]
    previous: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs a `custos audit` subcommand.
pub fn run(command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Verify(args) => verify(args),
    }
}

/// A key given inline or as a path to a file containing it.
fn read_key(arg: &str) -> anyhow::Result<VerifierKey> {
    let text = if Path::new(arg).is_file() {
        std::fs::read_to_string(arg).with_context(|| format!("reading key file {arg}"))?
    } else {
        arg.to_owned()
    };
    VerifierKey::parse(&text).with_context(|| format!("invalid verifier key {arg:?}"))
}

fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let log_key = read_key(&args.log_key).context("--log-key")?;
    let witness_keys = args
        .witness_keys
        .iter()
        .map(|k| read_key(k))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let witness_quorum = match (args.witness_quorum, witness_keys.len()) {
        (Some(q), n) if q > n => bail!("--witness-quorum {q} exceeds the {n} witness keys given"),
        (Some(q), _) => q,
        // Fail closed: no witnesses must be asked for explicitly.
        (None, 0) => bail!(
            "give at least one --witness-key, or --witness-quorum 0 to accept unwitnessed checkpoints"
        ),
        (None, n) => n,
    };
    let file = std::fs::File::open(&args.bundle)
        .with_context(|| format!("opening {}", args.bundle.display()))?;
    let bundle: ExportBundle = serde_json::from_reader(std::io::BufReader::new(file))
        .with_context(|| format!("{} is not an export bundle", args.bundle.display()))?;
    let previous = match &args.previous {
        Some(p) => {
            Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?)
        }
        None => None,
    };
    let trust = TrustRoots {
        log_key,
        witness_keys,
        witness_quorum,
    };
    let report = verify_bundle(
        &bundle,
        &trust,
        previous.as_deref(),
        &RequireSatisfiedDecision,
    );

    if args.json {
        let out = serde_json::json!({
            "ok": report.is_ok(),
            "first_failure": report.first_failure(),
            "report": &report,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "bundle       {} entries [{}, {})",
            report.origin, report.start, report.end
        );
        println!(
            "checkpoints  {} verified with witness quorum {} of {}; latest size {} root {}",
            report.checkpoints_verified,
            trust.witness_quorum,
            trust.witness_keys.len(),
            report.latest_size.map_or("-".into(), |s| s.to_string()),
            report.latest_root.as_deref().unwrap_or("-"),
        );
        let kinds: Vec<String> = report
            .entry_kinds
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        println!("entries      {}", kinds.join(" "));
        println!("signatures   {} authorised", report.signatures_authorised);
        for f in report.failures.iter().take(20) {
            let at = f.entry.map_or(String::new(), |e| format!("entry {e} "));
            eprintln!(
                "  {at}[{}] {}",
                serde_json::to_value(f.kind)?.as_str().unwrap_or("?"),
                f.message
            );
        }
        if report.failures.len() > 20 {
            eprintln!("  ... {} more", report.failures.len() - 20);
        }
    }
    match report.first_failure() {
        None => {
            if !args.json {
                println!("OK");
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(f) => {
            match f.entry {
                Some(e) => eprintln!("FAIL: first bad entry {e}: {}", f.message),
                None => eprintln!("FAIL: {}", f.message),
            }
            Ok(ExitCode::FAILURE)
        }
    }
}
