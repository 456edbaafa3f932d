//! `custos audit` subcommands: offline verification of transparency-log
//! export bundles, and following a live log's checkpoints (`tail`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use custos_audit::{ExportBundle, TrustRoots, VerifierKey};
use custos_audit_verify::{PolicyReplay, Verification};
use custos_policy::AdminSet;

/// `custos audit` subcommands.
#[derive(clap::Subcommand)]
pub enum AuditCommand {
    /// Verify an export bundle offline: recompute the tree, check every
    /// checkpoint signature and witness quorum, consistency with your previous
    /// checkpoint, and that every signature followed a satisfied decision.
    /// With --policy, replay each signature's authorisation with the policy
    /// engine: the decision's policy document and rule, the approvers' Ed25519
    /// signatures over the statement, the quorum, no rejection, the signed
    /// digest and the time lock. Exits 1 naming the first bad entry.
    #[command(after_help = VERIFY_HELP)]
    Verify(VerifyArgs),
    /// Download an export bundle (ExportAuditBundle, auditor role) to a file,
    /// and the checkpoint it ends at (your next --previous).
    Export(ExportArgs),
    /// Print the log key and the signers' witness keys as the coordinator
    /// reports them (GetClusterStatus), as `custos audit verify` options
    /// (`--log-key`, one `--witness-key` per signer, and `--witness-quorum` =
    /// the signing threshold: a signature needs its decision in a checkpoint
    /// co-signed by the signers of that round, while the third signer may only
    /// co-sign a later checkpoint). Compare the keys with ones obtained out of
    /// band before trusting them: the coordinator is the party being audited.
    Keys(KeysArgs),
    /// Follow the coordinator's log: print each new checkpoint (size, root,
    /// cosigners) and verify it is consistent with the previous one (RFC 9162
    /// consistency proof). Exits 1 naming the sizes if a proof fails.
    Tail(TailArgs),
}

/// Arguments of `custos audit tail`.
#[derive(clap::Args)]
pub struct TailArgs {
    #[command(flatten)]
    conn: super::conn::ConnArgs,
    /// Poll interval, milliseconds.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    interval_ms: u64,
    /// The log's verifier key (`name+keyid+base64`) or a file holding it, to check
    /// each checkpoint's log signature [default with --cluster: the key installed
    /// in the dev cluster's signers].
    #[arg(long, value_name = "PUB")]
    log_key: Option<String>,
    /// Log origin the checkpoints must name (with a log key).
    #[arg(long, value_name = "ORIGIN", default_value = "custos.local/log")]
    origin: String,
    /// Stop after this many new checkpoints [default: follow forever].
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// One JSON object per checkpoint, one per line.
    #[arg(long)]
    json: bool,
}

/// Arguments of `custos audit export`.
#[derive(clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    conn: super::conn::ConnArgs,
    /// Where to write the bundle (JSON).
    #[arg(long, short, value_name = "FILE")]
    out: PathBuf,
    /// First entry index.
    #[arg(long, value_name = "N", default_value_t = 0)]
    from: u64,
    /// One past the last entry [default: the latest checkpoint's size].
    #[arg(long, value_name = "N")]
    to: Option<u64>,
    /// Size of your previous checkpoint, to ship a consistency proof from it.
    #[arg(long, value_name = "N")]
    previous_size: Option<u64>,
    /// Also write the latest checkpoint note here (keep it for the next --previous
    /// once the bundle verifies).
    #[arg(long, value_name = "FILE")]
    checkpoint: Option<PathBuf>,
}

/// Arguments of `custos audit keys`.
#[derive(clap::Args)]
pub struct KeysArgs {
    #[command(flatten)]
    conn: super::conn::ConnArgs,
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
    /// Valid witness cosignatures a checkpoint needs to be relied on [default:
    /// all given keys]; checkpoints with fewer are listed and checked against
    /// the entries, but prove nothing. The log is judged by its witnessed
    /// checkpoints: an unwitnessed one that a witnessed one supersedes is a
    /// warning; entries only unwitnessed checkpoints cover (the unwitnessed
    /// tail after a coordinator crash, until it is co-signed) fail, naming
    /// them.
    #[arg(long, value_name = "N")]
    witness_quorum: Option<usize>,
    /// The last checkpoint you verified (signed note file): the bundle must extend it.
    #[arg(long, value_name = "CHECKPOINT")]
    previous: Option<PathBuf>,
    /// A policy document (TOML or JSON, exactly as the admins signed it) named by
    /// the log's policy activations and decisions; repeat for each bundle in
    /// force during the range. Turns on the full replay of every signature's
    /// authorisation with the policy engine [default: structural replay only].
    #[arg(long = "policy", value_name = "FILE")]
    policies: Vec<PathBuf>,
    /// The admin set (`threshold`, `keys`; TOML or JSON) you trust: every policy
    /// activation entry must carry an admin quorum over its document (needs --policy).
    #[arg(long, value_name = "FILE", requires = "policies")]
    admins: Option<PathBuf>,
    /// An EVM chain's JSON-RPC endpoint (`CHAIN=URL`, repeatable; needs a
    /// bundle from the start of the log): every transaction each wallet has
    /// mined there must be one the log prepared, or its nonce is reported as
    /// a signature made outside the log.
    #[arg(long = "evm-rpc", value_name = "CHAIN=URL")]
    evm_rpcs: Vec<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs a `custos audit` subcommand.
pub fn run(command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Verify(args) => verify(args),
        AuditCommand::Tail(args) => tail(args),
        AuditCommand::Export(args) => export(args),
        AuditCommand::Keys(args) => keys(args),
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

/// Reads the `--policy` documents and the `--admins` set.
fn policy_replay(
    files: &[PathBuf],
    admins: Option<&Path>,
    bundle: &ExportBundle,
) -> anyhow::Result<PolicyReplay> {
    let mut supplied = Vec::with_capacity(files.len());
    for f in files {
        let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        supplied.push((bytes, f.display().to_string()));
    }
    let admins = match admins {
        Some(p) => {
            let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            Some(
                AdminSet::parse(&bytes)
                    .with_context(|| format!("{} is not an admin set", p.display()))?,
            )
        }
        None => None,
    };
    Ok(PolicyReplay::new(supplied, admins, bundle)?)
}

/// Parses `--evm-rpc CHAIN=URL`.
fn parse_rpc(text: &str) -> anyhow::Result<(String, String)> {
    match text.split_once('=') {
        Some((chain, url)) if !chain.is_empty() && !url.is_empty() => {
            Ok((chain.to_owned(), url.to_owned()))
        }
        _ => bail!("--evm-rpc {text:?}: expected CHAIN=URL, e.g. ethereum=http://127.0.0.1:8545"),
    }
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
    let policy = if args.policies.is_empty() {
        None
    } else {
        Some(policy_replay(
            &args.policies,
            args.admins.as_deref(),
            &bundle,
        )?)
    };
    let rpcs = args
        .evm_rpcs
        .iter()
        .map(|t| parse_rpc(t))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut outcome =
        custos_audit_verify::verify(&bundle, &trust, previous.as_deref(), policy.as_ref());
    if !rpcs.is_empty() {
        outcome.onchain = super::conn::block_on(async {
            Ok(custos_audit_verify::onchain::query(&bundle, &rpcs).await?)
        })?;
    }
    let unlogged: Vec<String> = outcome
        .outside_log()
        .iter()
        .map(ToString::to_string)
        .collect();
    let report = &outcome.report;
    if args.json {
        let out = serde_json::json!({
            // The verdict of the exit status: the log's report and the
            // on-chain comparison both.
            "ok": outcome.is_ok(),
            "first_failure": report.first_failure(),
            "replay": outcome.replay.as_str(),
            "report": report,
            "addresses": &outcome.addresses,
            "onchain": &outcome.onchain,
            "onchain_unlogged": &unlogged,
            "batches": outcome.batches,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_verification(&outcome, &trust, policy.as_ref(), &unlogged)?;
    }
    if report.first_failure().is_none()
        && let Some(u) = unlogged.first()
    {
        eprintln!("FAIL: {u}");
        return Ok(ExitCode::FAILURE);
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

/// The text report of `custos audit verify` (without the verdict line).
fn print_verification(
    outcome: &Verification,
    trust: &TrustRoots,
    policy: Option<&PolicyReplay>,
    unlogged: &[String],
) -> anyhow::Result<()> {
    let report = &outcome.report;
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
    if !report.checkpoints_below_quorum.is_empty() {
        let sizes: Vec<String> = report
            .checkpoints_below_quorum
            .iter()
            .map(u64::to_string)
            .collect();
        println!(
            "             {} more below the quorum (a witness missed them), not relied on: sizes {}",
            sizes.len(),
            sizes.join(" ")
        );
    }
    for w in &report.warnings {
        println!("warning      {}", w.message);
    }
    let kinds: Vec<String> = report
        .entry_kinds
        .iter()
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
    println!("entries      {}", kinds.join(" "));
    let how = match policy {
        Some(r) => format!(
            "policy replay: decision, rule, approver signatures, quorum, digest and time lock \
             re-checked against {} policy document(s){}",
            r.documents().count(),
            if r.checks_admins() {
                ", admin signatures checked"
            } else {
                ""
            }
        ),
        None => "structural replay; add --policy to re-check approvals with the policy engine"
            .to_owned(),
    };
    let signatures = report
        .entry_kinds
        .get("signature_produced")
        .copied()
        .unwrap_or(0);
    println!(
        "signatures   {} authorised of {signatures} checked ({how})",
        report.signatures_authorised
    );
    let sessions = report
        .entry_kinds
        .get("signing_session")
        .copied()
        .unwrap_or(0);
    println!(
        "sessions     {} authorised of {sessions} signing sessions checked",
        report.signing_sessions_authorised
    );
    if outcome.batches.transactions > 0 {
        println!(
            "batched      {} payouts authorised in {} batched transactions",
            outcome.batches.payouts, outcome.batches.transactions
        );
    }
    if !report.refusals.is_empty() {
        println!(
            "refusals     {} signed by signers (requests they would not sign):",
            report.refusals.len()
        );
        for r in &report.refusals {
            let what = if r.withdrawal_id.is_empty() {
                "an undecodable request".to_owned()
            } else {
                format!("withdrawal {}", r.withdrawal_id)
            };
            println!(
                "  entry {} {} refused {} of {what}: {}",
                r.entry, r.signer, r.request, r.reason
            );
        }
    }
    if !report.share_exports.is_empty() {
        println!(
            "backups      {} share export(s) sealed to a recovery key:",
            report.share_exports.len()
        );
        for x in &report.share_exports {
            println!(
                "  entry {} {} exported its share of {} for {} (recipient {}, backup {})",
                x.entry,
                x.signer,
                x.key_id,
                x.actor,
                &x.recipient_fingerprint[..16.min(x.recipient_fingerprint.len())],
                &x.backup_hash[..16.min(x.backup_hash.len())]
            );
        }
    }
    if !report.retirements.is_empty() {
        println!("retired      {} key(s):", report.retirements.len());
        for r in &report.retirements {
            let to = if r.successor.is_empty() {
                String::new()
            } else {
                format!(", successor {}", r.successor)
            };
            let destroyed = if r.shares_destroyed_by.is_empty() {
                "no share destruction logged yet".to_owned()
            } else {
                format!("shares destroyed by {}", r.shares_destroyed_by.join(", "))
            };
            println!(
                "  entry {} key {} retired by {} ({}{to}); {destroyed}",
                r.entry, r.key_id, r.actor, r.reason
            );
        }
    }
    let d = &report.deposits;
    if d.addresses_derived + d.credited + d.reversed > 0 {
        let a = &outcome.addresses;
        println!(
            "addresses    {} derived; {} re-derived from their key and chain code, {} approved sources checked{}",
            d.addresses_derived,
            a.rederived,
            a.sources,
            if a.skipped > 0 {
                format!(", {} of other schemes not re-derived", a.skipped)
            } else {
                String::new()
            }
        );
        println!(
            "deposits     {} credited, {} reversed (reorganisation)",
            d.credited, d.reversed
        );
        for (wallet_asset, net) in &d.net {
            println!("  net {wallet_asset}: {net} base units");
        }
    }
    for w in &outcome.onchain {
        println!(
            "on chain     {} {}{} {}: {} mined, {} logged",
            w.chain,
            w.key_id,
            if w.path == "m" {
                String::new()
            } else {
                format!(" {}", w.path)
            },
            w.address,
            w.mined,
            w.mined - w.unlogged.len() as u64
        );
    }
    for u in unlogged {
        eprintln!("  [onchain] {u}");
    }
    if let Some(r) = policy {
        for (hash, source) in r.documents() {
            println!("policy       {hash}  ({source})");
        }
    }
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
    Ok(())
}

fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    use super::conn::rpc;
    use custos_proto::custody::{ExportAuditBundleRequest, GetCheckpointRequest};

    super::conn::block_on(async move {
        let mut client = args.conn.connect(custos_devkit::AUDITOR_CLIENT).await?;
        let cp = client
            .get_checkpoint(GetCheckpointRequest {})
            .await
            .map_err(rpc("GetCheckpoint"))?
            .into_inner();
        let to = args.to.unwrap_or(cp.size);
        let bundle = client
            .export_audit_bundle(ExportAuditBundleRequest {
                from: args.from,
                to,
                previous_size: args.previous_size.unwrap_or(0),
            })
            .await
            .map_err(rpc("ExportAuditBundle"))?
            .into_inner();
        let parsed: ExportBundle = serde_json::from_slice(&bundle.json)
            .context("the coordinator's answer is not an export bundle")?;
        // Whole or not at all: an auditor must never verify half a bundle.
        custos_fsutil::write_atomic(&args.out, &bundle.json, 0o644)
            .with_context(|| format!("writing {}", args.out.display()))?;
        if let Some(path) = &args.checkpoint {
            custos_fsutil::write_atomic(path, cp.note.as_bytes(), 0o644)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        println!(
            "wrote {}: entries [{}, {}), {} checkpoints",
            args.out.display(),
            parsed.start,
            parsed.start + parsed.entries.len() as u64,
            parsed.checkpoints.len()
        );
        Ok(ExitCode::SUCCESS)
    })
}

fn keys(args: KeysArgs) -> anyhow::Result<ExitCode> {
    use super::conn::rpc;
    use custos_proto::custody::GetClusterStatusRequest;

    super::conn::block_on(async move {
        let mut client = args.conn.connect(custos_devkit::AUDITOR_CLIENT).await?;
        let st = client
            .get_cluster_status(GetClusterStatusRequest {})
            .await
            .map_err(rpc("GetClusterStatus"))?
            .into_inner();
        if st.log_key.is_empty() {
            bail!("the coordinator reports no log key");
        }
        println!("--log-key {}", st.log_key);
        for s in &st.signers {
            if s.witness_key.is_empty() {
                eprintln!("note: {} reports no witness key ({})", s.node_id, s.state);
            } else {
                println!("--witness-key {}", s.witness_key);
            }
        }
        // The coordinator may not report its threshold; a dev cluster's layout has it.
        let threshold = match st.threshold {
            0 if args.conn.endpoint.is_none() => args
                .conn
                .layout()
                .map(|l| u32::from(l.threshold))
                .unwrap_or(0),
            t => t,
        };
        if threshold > 0 {
            println!("--witness-quorum {threshold}");
        } else {
            eprintln!(
                "note: the coordinator does not report its signing threshold: pass \
                 --witness-quorum (the number of signers in a signing round) yourself"
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Usage notes shown after `custos audit verify --help`.
const VERIFY_HELP: &str = "\
Examples:
  custos audit keys > trust.args       # the keys as the coordinator reports them:
                                       # check them against your own records
  custos audit export --out bundle.json --checkpoint next-checkpoint.txt
  custos audit verify bundle.json \\
      --log-key 'custos.local/log+1234abcd+AB...' \\
      --witness-key signer-1.pub --witness-key signer-2.pub --witness-key signer-3.pub \\
      --witness-quorum 2 \\
      --previous last-checkpoint.txt \\
      --policy policy.toml --admins admins.toml
  custos audit verify bundle.json $(cat trust.args) --policy policy.toml

Exit status 0: every entry is committed by checkpoints signed by the log key and
co-signed by the witness quorum, the bundle extends --previous, and every
signature was authorised. Exit status 1: the first bad entry is named.";

/// One checkpoint as fetched.
struct Seen {
    size: u64,
    root: custos_audit::Hash,
}

fn tail(args: TailArgs) -> anyhow::Result<ExitCode> {
    use super::conn::rpc;
    use custos_audit::note::VerifiedCheckpoint;
    use custos_audit::{Checkpoint, SignedNote};
    use custos_proto::custody::{GetCheckpointRequest, GetConsistencyProofRequest};

    if args.interval_ms == 0 {
        bail!("--interval-ms must be at least 1");
    }
    let log_key = match &args.log_key {
        Some(k) => Some(read_key(k).context("--log-key")?),
        None if args.conn.endpoint.is_none() => args
            .conn
            .layout()
            .ok()
            .and_then(|l| l.log_key)
            .map(|k| VerifierKey::parse(&k))
            .transpose()
            .context("the dev cluster's log key (cluster.json)")?,
        None => None,
    };
    if log_key.is_none() && !args.json {
        eprintln!("note: no log key (--log-key): checkpoint signatures are not verified");
    }
    super::conn::block_on(async move {
        let mut client = args.conn.connect(custos_devkit::AUDITOR_CLIENT).await?;
        let mut previous: Option<Seen> = None;
        let mut shown = 0u64;
        loop {
            let cp = client
                .get_checkpoint(GetCheckpointRequest {})
                .await
                .map_err(rpc("GetCheckpoint"))?
                .into_inner();
            if cp.note.trim().is_empty() {
                // No checkpoint signed yet (a fresh log): look again later.
                tokio::time::sleep(std::time::Duration::from_millis(args.interval_ms)).await;
                continue;
            }
            let note =
                SignedNote::parse(&cp.note).context("the checkpoint is not a signed note")?;
            let checkpoint = match &log_key {
                Some(key) => {
                    VerifiedCheckpoint::verify(&cp.note, key, &args.origin)
                        .with_context(|| {
                            format!(
                                "checkpoint of size {}: log signature or origin invalid",
                                cp.size
                            )
                        })?
                        .checkpoint
                }
                None => Checkpoint::parse_text(&note.text).context("checkpoint text")?,
            };
            if checkpoint.size != cp.size {
                bail!(
                    "the server says size {} but its checkpoint note says {}",
                    cp.size,
                    checkpoint.size
                );
            }
            let is_new = previous.as_ref().is_none_or(|p| p.size != checkpoint.size);
            if let Some(p) = &previous {
                if checkpoint.size < p.size {
                    eprintln!(
                        "FAIL: the log shrank from size {} to {}",
                        p.size, checkpoint.size
                    );
                    return Ok(ExitCode::FAILURE);
                }
                if checkpoint.size == p.size && checkpoint.root != p.root {
                    eprintln!(
                        "FAIL: two different roots for size {}: {} and {}",
                        p.size,
                        hex::encode(p.root),
                        hex::encode(checkpoint.root)
                    );
                    return Ok(ExitCode::FAILURE);
                }
                if checkpoint.size > p.size {
                    let proof = client
                        .get_consistency_proof(GetConsistencyProofRequest {
                            old_size: p.size,
                            new_size: checkpoint.size,
                        })
                        .await
                        .map_err(rpc("GetConsistencyProof"))?
                        .into_inner();
                    let hashes = proof
                        .hashes
                        .iter()
                        .map(|h| custos_audit::Hash::try_from(h.as_slice()))
                        .collect::<Result<Vec<_>, _>>();
                    let verdict = match hashes {
                        Ok(hashes) => custos_audit::proof::verify_consistency(
                            p.size,
                            checkpoint.size,
                            &p.root,
                            &checkpoint.root,
                            &hashes,
                        )
                        .map_err(|e| e.to_string()),
                        Err(_) => Err("a proof hash is not 32 bytes".to_string()),
                    };
                    if let Err(e) = verdict {
                        eprintln!(
                            "FAIL: consistency proof from size {} to size {} does not verify: {e}",
                            p.size, checkpoint.size
                        );
                        return Ok(ExitCode::FAILURE);
                    }
                }
            }
            if is_new {
                let key_name = log_key.as_ref().map(|k| k.name().to_string());
                let cosigners: Vec<String> = note
                    .signatures
                    .iter()
                    .filter(|s| match &key_name {
                        Some(n) => s.name != *n,
                        // Without the key, the log's own line is the first.
                        None => false,
                    })
                    .map(|s| s.name.clone())
                    .collect();
                let cosigners = if key_name.is_none() {
                    note.signatures
                        .iter()
                        .skip(1)
                        .map(|s| s.name.clone())
                        .collect()
                } else {
                    cosigners
                };
                let consistent = previous.as_ref().map(|p| p.size);
                let line = if args.json {
                    serde_json::json!({
                            "size": checkpoint.size,
                            "root": hex::encode(checkpoint.root),
                            "timestamp_ms": checkpoint.timestamp_ms,
                            "origin": checkpoint.origin,
                            "log_signature_verified": log_key.is_some(),
                            "cosigners": cosigners,
                        "consistent_with": consistent,
                    })
                    .to_string()
                } else {
                    format!(
                        "size {:<8} root {}  cosigned by {}{}",
                        checkpoint.size,
                        hex::encode(checkpoint.root),
                        if cosigners.is_empty() {
                            "nobody".to_string()
                        } else {
                            cosigners.join(", ")
                        },
                        match consistent {
                            Some(old) => format!("  (consistent with {old})"),
                            None => String::new(),
                        }
                    )
                };
                if !super::conn::emit(&line) {
                    return Ok(ExitCode::SUCCESS);
                }
                shown += 1;
                previous = Some(Seen {
                    size: checkpoint.size,
                    root: checkpoint.root,
                });
                if args.count.is_some_and(|c| shown >= c) {
                    return Ok(ExitCode::SUCCESS);
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(args.interval_ms)).await;
        }
    })
}
