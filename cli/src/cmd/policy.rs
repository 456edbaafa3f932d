//! `custos policy` subcommands: check, hash, sign and explain withdrawal policies.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use custos_policy::{
    ActivePolicy, AdminSet, Approval, ApprovalStatement, ApprovalStatus, BundleSignatures,
    Decision, Duration, HistoryEntry, Outcome, Policy, PolicyError, PolicyHash, SecretKey,
    Timestamp, Withdrawal, check_approvals, evaluate, verify_bundle,
};

/// `custos policy` subcommands.
#[derive(clap::Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy document; with --admins, also check its admin signatures.
    /// Also refuses (exit 1) rules that allow or require approvals for
    /// withdrawals without a sound fee bound (`fee`), as `sign` does.
    Check {
        /// Policy document (TOML or JSON).
        file: PathBuf,
        /// Admin set (threshold and keys) to verify the bundle signatures against.
        #[arg(long)]
        admins: Option<PathBuf>,
        /// Signatures file (default: FILE.sigs.json).
        #[arg(long)]
        signatures: Option<PathBuf>,
    },
    /// Print the policy hash (what approvals, bundles and the audit log refer to).
    Hash {
        /// Policy document.
        file: PathBuf,
    },
    /// Add an admin signature over the policy hash to FILE.sigs.json.
    Sign {
        /// Policy document.
        file: PathBuf,
        /// Admin Ed25519 key (PKCS#8 PEM, from `custos approver keygen`).
        #[arg(long)]
        key: PathBuf,
        /// Signatures file (default: FILE.sigs.json).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Evaluate a withdrawal and say which rule matched and why.
    Explain {
        /// Policy document.
        file: PathBuf,
        /// Withdrawal as inline JSON or a path to a JSON file.
        #[arg(long)]
        withdrawal: String,
        /// History of past withdrawals (JSON array, inline or a path).
        #[arg(long)]
        history: Option<String>,
        /// Evaluation time: RFC 3339 (any offset) or Unix seconds; default now.
        #[arg(long)]
        at: Option<String>,
        /// Risk score of the withdrawal.
        #[arg(long, default_value_t = 0)]
        risk: u32,
        /// When the policy took effect (address-book cooling periods run from here); default 1970.
        #[arg(long)]
        activated_at: Option<String>,
        /// Print the decision as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the approval statement (JSON) approvers sign for a withdrawal.
    Statement {
        /// Policy document.
        file: PathBuf,
        #[command(flatten)]
        input: EvalInput,
        /// Approval lifetime from --at (default: the matched rule's approval_expiry).
        #[arg(long)]
        expiry: Option<String>,
    },
    /// Check approvals (JSON array from `custos approver sign`) against a withdrawal;
    /// exit 0 only when the quorum is satisfied.
    Approvals {
        /// Policy document.
        file: PathBuf,
        #[command(flatten)]
        input: EvalInput,
        /// The statement the approvals were made over (JSON, inline or a path).
        #[arg(long)]
        statement: String,
        /// Approvals: JSON array, inline or a path.
        #[arg(long)]
        approvals: String,
    },
}

/// Inputs of an evaluation.
#[derive(clap::Args)]
pub struct EvalInput {
    /// Withdrawal as inline JSON or a path to a JSON file.
    #[arg(long)]
    withdrawal: String,
    /// History of past withdrawals (JSON array, inline or a path).
    #[arg(long)]
    history: Option<String>,
    /// Evaluation time: RFC 3339 (any offset) or Unix seconds; default now.
    #[arg(long)]
    at: Option<String>,
    /// Risk score of the withdrawal.
    #[arg(long, default_value_t = 0)]
    risk: u32,
    /// When the policy took effect (address-book cooling periods run from here); default 1970.
    #[arg(long)]
    activated_at: Option<String>,
}

/// Runs a `custos policy` subcommand.
pub fn run(command: PolicyCommand) -> anyhow::Result<ExitCode> {
    match command {
        PolicyCommand::Check {
            file,
            admins,
            signatures,
        } => check(&file, admins.as_deref(), signatures.as_deref()),
        PolicyCommand::Hash { file } => {
            let bytes = read(&file)?;
            // Hash what is on disk, but only for a document that parses: a hash of a
            // broken file would be signed or approved in vain.
            custos_policy::parse_document(&bytes)?;
            println!("{}", PolicyHash::of_document(&bytes));
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Sign { file, key, out } => sign(&file, &key, out),
        PolicyCommand::Explain {
            file,
            withdrawal,
            history,
            at,
            risk,
            activated_at,
            json,
        } => {
            let input = EvalInput {
                withdrawal,
                history,
                at,
                risk,
                activated_at,
            };
            let (_, _, decision) = evaluate_input(&file, &input)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&decision)?);
            } else {
                print!("{}", decision.explain());
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Statement {
            file,
            input,
            expiry,
        } => {
            let (_, w, decision) = evaluate_input(&file, &input)?;
            if decision.outcome != Outcome::RequireApprovals {
                eprint!("{}", decision.explain());
                bail!("this withdrawal needs no approvals (see the decision above)");
            }
            let lifetime = match expiry {
                Some(e) => Duration::parse(&e)?,
                None => decision.approval_expiry.unwrap_or(Duration(86_400)),
            };
            let statement = ApprovalStatement::for_decision(
                &decision,
                &w,
                decision.evaluated_at.plus(lifetime),
            )?;
            println!("{}", serde_json::to_string_pretty(&statement)?);
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Approvals {
            file,
            input,
            statement,
            approvals,
        } => {
            let (active, _, decision) = evaluate_input(&file, &input)?;
            let statement: ApprovalStatement = json_arg(&statement, "statement")?;
            let approvals: Vec<Approval> = json_arg(&approvals, "approvals")?;
            let status = check_approvals(
                &active,
                &decision,
                &statement,
                &approvals,
                decision.evaluated_at,
            );
            println!("{}", serde_json::to_string_pretty(&status)?);
            Ok(if matches!(status, ApprovalStatus::Satisfied { .. }) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn sigs_path(file: &Path, explicit: Option<PathBuf>) -> PathBuf {
    explicit.unwrap_or_else(|| {
        let mut s = file.as_os_str().to_owned();
        s.push(".sigs.json");
        PathBuf::from(s)
    })
}

fn check(
    file: &Path,
    admins: Option<&Path>,
    signatures: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let bytes = read(file)?;
    let policy = match Policy::parse(&bytes) {
        Ok(p) => p,
        Err(PolicyError::Invalid(issues)) => {
            eprintln!("{}: INVALID, {} error(s):", file.display(), issues.len());
            for i in &issues {
                eprintln!("  error: {i}");
            }
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => {
            eprintln!("{}: INVALID: {e}", file.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    let fee_problems = policy.fee_bound_problems();
    if !fee_problems.is_empty() {
        eprintln!(
            "{}: REFUSED, {} fee-bound error(s): every rule that allows or requires approvals \
             must bound the fee cap (see policy/FORMATS.md, rule conditions)",
            file.display(),
            fee_problems.len()
        );
        for i in &fee_problems {
            eprintln!("  error: {i}");
        }
        return Ok(ExitCode::FAILURE);
    }
    let doc = policy.document();
    println!(
        "{}: ok, version {}, {} rule(s), {} approver(s), {} address-book entr{}",
        file.display(),
        policy.version(),
        doc.rules.len(),
        doc.approvers.len(),
        doc.address_book.len(),
        if doc.address_book.len() == 1 {
            "y"
        } else {
            "ies"
        }
    );
    println!("hash {}", policy.hash());
    for w in policy.warnings() {
        println!("  warning: {w}");
    }
    if let Some(admins) = admins {
        let set = AdminSet::parse(&read(admins)?)
            .with_context(|| format!("admin set {}", admins.display()))?;
        let sp = signatures
            .map(Path::to_path_buf)
            .unwrap_or_else(|| sigs_path(file, None));
        let sigs: BundleSignatures = serde_json::from_slice(&read(&sp)?)
            .with_context(|| format!("signatures file {} is malformed", sp.display()))?;
        match verify_bundle(&bytes, &sigs, &set) {
            Ok(b) => println!(
                "bundle authorised: {} valid admin signature(s), {} required",
                b.signers().len(),
                set.threshold()
            ),
            Err(e) => {
                eprintln!("bundle NOT authorised: {e}");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn sign(file: &Path, key: &Path, out: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let bytes = read(file)?;
    let policy = Policy::parse(&bytes).context("refusing to sign an invalid policy")?;
    let fee_problems = policy.fee_bound_problems();
    if !fee_problems.is_empty() {
        let list: Vec<String> = fee_problems.iter().map(ToString::to_string).collect();
        bail!(
            "refusing to sign a policy with rules that do not bound the fee cap: {}",
            list.join("; ")
        );
    }
    let pem = custos_policy::Zeroizing::new(
        std::fs::read_to_string(key)
            .with_context(|| format!("cannot read key {}", key.display()))?,
    );
    let key = SecretKey::from_pem(&pem)?;
    let out = sigs_path(file, out);
    let mut sigs = if out.exists() {
        let s: BundleSignatures = serde_json::from_slice(&read(&out)?)
            .with_context(|| format!("signatures file {} is malformed", out.display()))?;
        if s.policy_hash != policy.hash() {
            bail!(
                "{} holds signatures for policy {}, but {} hashes to {}: remove it or choose --out",
                out.display(),
                s.policy_hash,
                file.display(),
                policy.hash()
            );
        }
        s
    } else {
        BundleSignatures::new(policy.hash())
    };
    sigs.sign(&key);
    let json = serde_json::to_vec_pretty(&sigs)?;
    write_atomic(&out, &json)?;
    println!("signed policy {} as admin {}", policy.hash(), key.public());
    println!(
        "{} signature(s) in {}",
        sigs.signatures.len(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes a public file (signatures, documents) through the workspace's one
/// crash-consistent write: a crash leaves the old or the new file.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    custos_fsutil::write_atomic(path, data, custos_fsutil::PUBLIC_MODE)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Inline JSON (starts with `{` or `[`) or a path to a JSON file.
pub(crate) fn json_arg<T: serde::de::DeserializeOwned>(arg: &str, what: &str) -> anyhow::Result<T> {
    let t = arg.trim_start();
    let text = if t.starts_with('{') || t.starts_with('[') {
        arg.to_string()
    } else {
        std::fs::read_to_string(arg).with_context(|| format!("cannot read {what} file {arg}"))?
    };
    serde_json::from_str(&text).with_context(|| format!("{what} JSON is malformed"))
}

fn evaluate_input(
    file: &Path,
    input: &EvalInput,
) -> anyhow::Result<(ActivePolicy, Withdrawal, Decision)> {
    let policy = Policy::parse(&read(file)?)?;
    let w: Withdrawal = json_arg(&input.withdrawal, "withdrawal")?;
    let h: Vec<HistoryEntry> = match &input.history {
        Some(h) => json_arg(h, "history")?,
        None => Vec::new(),
    };
    let now = match &input.at {
        Some(t) => Timestamp::parse(t)?,
        None => Timestamp(custos_clock::now_secs()),
    };
    let since = match &input.activated_at {
        Some(t) => Timestamp::parse(t)?,
        None => Timestamp(0),
    };
    let active = ActivePolicy::assumed(policy, since);
    let decision = evaluate(&active, &w, &h, now, input.risk)?;
    Ok((active, w, decision))
}
