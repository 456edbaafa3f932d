//! `custos-hsm`: operator tool for the sealing backends.
//!
//! ```text
//! custos-hsm check   --config SEALER.toml --data-dir DIR
//! custos-hsm reseal  --from SEALER.toml --from-data-dir DIR --to SEALER.toml --to-data-dir DIR
//!                    --shares DIR --node-id ID
//! custos-hsm inspect FILE...
//! ```
//!
//! A sealer configuration file holds one [`custos_hsm::SealerConfig`] table
//! (`backend = "software" | "pkcs11"`, ...). `check` opens the sealer exactly
//! as the signer node does at start and exits non-zero with the error if it
//! cannot (fail closed). `reseal` moves every sealed blob of a node from one
//! backend/KEK to another; plaintext never touches the disk.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use custos_hsm::{HsmError, Sealer, SealerConfig, blob, open_sealer, reseal_dir};

const USAGE: &str = "usage:
  custos-hsm check   --config SEALER.toml --data-dir DIR
  custos-hsm reseal  --from SEALER.toml --from-data-dir DIR --to SEALER.toml --to-data-dir DIR --shares DIR --node-id ID
  custos-hsm inspect FILE...";

/// Exit codes: 0 success, 1 operation failed (sealer refused to open, blob invalid, ...),
/// 64 bad usage, 78 unreadable or invalid configuration file.
const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 64;
const EXIT_CONFIG: u8 = 78;

enum Failure {
    Usage(String),
    Config(String),
    Failed(String),
}

impl From<HsmError> for Failure {
    fn from(e: HsmError) -> Self {
        match e {
            HsmError::Config(_) => Failure::Config(e.to_string()),
            other => Failure::Failed(other.to_string()),
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("check") => check(&args[1..]),
        Some("reseal") => reseal(&args[1..]),
        Some("inspect") => inspect(&args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => Err(Failure::Usage("missing or unknown command".into())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(m)) => {
            eprintln!("error: {m}\n{USAGE}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::Config(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(Failure::Failed(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn flags(args: &[String], known: &[&str]) -> Result<HashMap<String, String>, Failure> {
    let mut out = HashMap::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let name = a
            .strip_prefix("--")
            .filter(|n| known.contains(n))
            .ok_or_else(|| Failure::Usage(format!("unexpected argument {a:?}")))?;
        let value = it
            .next()
            .ok_or_else(|| Failure::Usage(format!("--{name} needs a value")))?;
        if out.insert(name.to_owned(), value.clone()).is_some() {
            return Err(Failure::Usage(format!("--{name} given twice")));
        }
    }
    for k in known {
        if !out.contains_key(*k) {
            return Err(Failure::Usage(format!("--{k} is required")));
        }
    }
    Ok(out)
}

fn load_config(path: &Path) -> Result<SealerConfig, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::Config(format!("cannot read {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| Failure::Config(format!("{}: {e}", path.display())))
}

fn open(config: &str, data_dir: &str) -> Result<Box<dyn Sealer>, Failure> {
    let cfg = load_config(Path::new(config))?;
    Ok(open_sealer(&cfg, Path::new(data_dir))?)
}

fn check(args: &[String]) -> Result<(), Failure> {
    let f = flags(args, &["config", "data-dir"])?;
    let sealer = open(&f["config"], &f["data-dir"])?;
    println!("ok: backend {} kek {}", sealer.backend(), sealer.kek_id());
    Ok(())
}

fn reseal(args: &[String]) -> Result<(), Failure> {
    let f = flags(
        args,
        &[
            "from",
            "from-data-dir",
            "to",
            "to-data-dir",
            "shares",
            "node-id",
        ],
    )?;
    let from = open(&f["from"], &f["from-data-dir"])?;
    let to = open(&f["to"], &f["to-data-dir"])?;
    if from.kek_id() == to.kek_id() {
        return Err(Failure::Usage("--from and --to open the same KEK".into()));
    }
    let report = reseal_dir(&*from, &*to, &PathBuf::from(&f["shares"]), &f["node-id"])?;
    println!(
        "resealed {} blob(s) from {} to {}; {} already current; {} other file(s) skipped",
        report.resealed,
        from.kek_id(),
        to.kek_id(),
        report.already_current,
        report.skipped
    );
    Ok(())
}

fn inspect(args: &[String]) -> Result<(), Failure> {
    if args.is_empty() {
        return Err(Failure::Usage("inspect needs at least one file".into()));
    }
    for file in args {
        let bytes = std::fs::read(file).map_err(|e| Failure::Failed(format!("{file}: {e}")))?;
        let info = blob::inspect(&bytes).map_err(|e| Failure::Failed(format!("{file}: {e}")))?;
        println!(
            "{file}: v{} {:?} backend={} kek={} params={} node={} key={} share={}",
            info.version,
            info.aead,
            info.backend,
            info.kek_id,
            info.params,
            info.node_id,
            info.key_id,
            info.share_id
        );
    }
    Ok(())
}
