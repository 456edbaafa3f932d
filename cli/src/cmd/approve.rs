//! Approver commands: `custos pending`, `custos show`, `custos approve`,
//! `custos reject`, `custos cancel`. What is shown and signed is decoded from
//! the withdrawal's statement bytes, never taken from the server's plain fields.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use custos_devkit::APPROVER_CLIENT;
use custos_devkit::client::Client;
use custos_policy::{Approval, SecretKey, Verdict, Zeroizing};
use custos_proto::custody::{
    AddressBookEntry, GetWithdrawalRequest, ListAddressBookRequest, ListPendingRequest,
    SubmitApprovalRequest, Withdrawal,
};

use super::conn::{ConnArgs, block_on, rpc};
use super::view::{Review, render, review_json, summary_line, warn_mismatches, withdrawal_json};

/// `custos pending`: withdrawals waiting for approvals.
#[derive(clap::Args)]
pub struct PendingArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Only withdrawals this approver may still act on.
    #[arg(long, value_name = "ID")]
    approver: Option<String>,
    /// Print JSON (an array).
    #[arg(long)]
    json: bool,
}

/// `custos show`: everything about one withdrawal, decoded from its statement.
#[derive(clap::Args)]
pub struct ShowArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Withdrawal id.
    id: String,
    /// Also print the policy evaluation rule by rule (the server's explanation).
    #[arg(long)]
    explain: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `custos approve|reject|cancel`.
#[derive(clap::Args)]
pub struct VerdictArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Withdrawal id.
    id: String,
    /// Your Ed25519 approver key (PKCS#8 PEM). Never printed or logged.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// Your approver id in the policy [default: the key file's stem, alice.pem → alice].
    #[arg(long = "as", value_name = "APPROVER_ID")]
    approver: Option<String>,
    /// Sign even though the server's plain fields differ from the statement
    /// (the statement is what counts; the difference is printed).
    #[arg(long)]
    accept_mismatch: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `custos reject`: like approve, with a mandatory reason.
#[derive(clap::Args)]
pub struct RejectArgs {
    #[command(flatten)]
    verdict: VerdictArgs,
    /// Why (recorded with the rejection).
    #[arg(long, value_name = "TEXT")]
    reason: String,
}

/// `custos cancel`: cancel during the time lock (members of the rule's cancel group).
#[derive(clap::Args)]
pub struct CancelArgs {
    #[command(flatten)]
    verdict: VerdictArgs,
    /// Why (recorded with the cancellation).
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
}

async fn get(client: &mut Client, id: &str) -> anyhow::Result<Withdrawal> {
    Ok(client
        .get_withdrawal(GetWithdrawalRequest { id: id.to_string() })
        .await
        .map_err(rpc(&format!("GetWithdrawal {id}")))?
        .into_inner())
}

/// The address book of `chain`, or why it could not be read.
async fn address_book(client: &mut Client, chain: &str) -> Result<Vec<AddressBookEntry>, String> {
    client
        .list_address_book(ListAddressBookRequest {
            chain: chain.to_string(),
        })
        .await
        .map(|r| r.into_inner().entries)
        .map_err(|s| format!("address book not readable: {:?}: {}", s.code(), s.message()))
}

/// Fetches a withdrawal and reviews its statement (`None` if it has none yet).
async fn review(
    client: &mut Client,
    id: &str,
) -> anyhow::Result<(Withdrawal, Option<Review>, Option<String>)> {
    let w = get(client, id).await?;
    if w.statement.is_empty() {
        return Ok((w, None, None));
    }
    // The chain named by the statement, not by the server's field.
    let chain = custos_policy::ApprovalStatement::decode(&w.statement)
        .map(|s| s.chain)
        .unwrap_or_else(|_| w.chain.clone());
    let (book, note) = match address_book(client, &chain).await {
        Ok(b) => (Some(b), None),
        Err(e) => (None, Some(e)),
    };
    let r = Review::new(&w, book.as_deref())?;
    Ok((w, Some(r), note))
}

/// Runs `custos pending`.
pub fn pending(args: PendingArgs) -> anyhow::Result<ExitCode> {
    block_on(async move {
        let mut client = args.conn.connect(APPROVER_CLIENT).await?;
        let list = client
            .list_pending(ListPendingRequest {
                approver: args.approver.clone().unwrap_or_default(),
            })
            .await
            .map_err(rpc("ListPending"))?
            .into_inner()
            .withdrawals;
        if args.json {
            let v: Vec<_> = list.iter().map(withdrawal_json).collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else if list.is_empty() {
            println!("nothing pending");
        } else {
            for w in &list {
                let so_far = w
                    .approvals
                    .iter()
                    .filter(|a| a.verdict == "approve")
                    .count();
                println!(
                    "{}\n    needs {} (approved so far: {so_far}); rule {}; expires {}",
                    summary_line(w),
                    w.required_approvals,
                    w.rule_id,
                    w.expires_at
                );
            }
            println!("\nreview one with `custos show ID` before approving it");
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Runs `custos show`.
pub fn show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    block_on(async move {
        let mut client = args.conn.connect(APPROVER_CLIENT).await?;
        let (w, review, note) = review(&mut client, &args.id).await?;
        if let Some(r) = &review {
            warn_mismatches(r);
        }
        if args.json {
            let mut v = serde_json::json!({ "withdrawal": withdrawal_json(&w) });
            if let Some(r) = &review {
                v["review"] = review_json(r);
            }
            if let Some(n) = &note {
                v["address_book_error"] = serde_json::json!(n);
            }
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            if review.is_none() {
                println!("(no approval statement: nothing to approve for this withdrawal)");
            }
            print!("{}", render(&w, review.as_ref(), note.as_deref()));
            if args.explain && !w.decision.is_empty() {
                println!(
                    "\npolicy evaluation (from the server):\n{}",
                    w.decision.trim_end()
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Approver id from `--as` or the key file's stem.
fn approver_id(args: &VerdictArgs) -> anyhow::Result<String> {
    if let Some(id) = &args.approver {
        if id.is_empty() {
            bail!("--as must not be empty");
        }
        return Ok(id.clone());
    }
    args.key
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .map(String::from)
        .with_context(|| {
            format!(
                "--key {}: cannot derive an approver id from the file name; pass --as APPROVER_ID",
                args.key.display()
            )
        })
}

fn load_key(path: &Path) -> anyhow::Result<SecretKey> {
    let pem = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("--key {}: cannot read it", path.display()))?,
    );
    SecretKey::from_pem(&pem).with_context(|| format!("--key {}", path.display()))
}

/// Fetches, decodes, signs `verdict` over the statement and submits it.
async fn submit(
    args: &VerdictArgs,
    verdict: Verdict,
    reason: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let approver = approver_id(args)?;
    let key = load_key(&args.key)?;
    let mut client = args.conn.connect(APPROVER_CLIENT).await?;
    let (w, review, note) = review(&mut client, &args.id).await?;
    let Some(review) = review else {
        bail!(
            "withdrawal {} ({}) has no approval statement: there is nothing to {}",
            w.id,
            w.state,
            verb(verdict)
        );
    };
    // A statement about another withdrawal must never be signed for this one.
    if review.statement.withdrawal_id != args.id {
        bail!(
            "the server sent a statement for withdrawal {:?} when asked for {:?}: refusing to sign",
            review.statement.withdrawal_id,
            args.id
        );
    }
    warn_mismatches(&review);
    if !review.mismatches.is_empty() && !args.accept_mismatch {
        bail!(
            "not signing: the server's fields differ from the statement (above); \
             re-run with --accept-mismatch to sign the statement as decoded"
        );
    }
    // What is about to be signed, before signing it.
    if !args.json {
        eprintln!(
            "{} as {approver} (key {}):",
            verb(verdict).to_uppercase(),
            key.public()
        );
        eprint!("{}", render(&w, Some(&review), note.as_deref()));
    }
    let approval = Approval::sign(&review.statement, verdict, &approver, &key)?;
    drop(key);
    let proto_verdict = match verdict {
        Verdict::Approve => custos_proto::custody::Verdict::Approve,
        Verdict::Reject => custos_proto::custody::Verdict::Reject,
        Verdict::Cancel => custos_proto::custody::Verdict::Cancel,
    };
    let after = client
        .submit_approval(SubmitApprovalRequest {
            withdrawal_id: args.id.clone(),
            approver: approver.clone(),
            verdict: proto_verdict as i32,
            signature: approval.signature.clone(),
            reason: reason.unwrap_or_default().to_string(),
        })
        .await
        .map_err(rpc("SubmitApproval"))?
        .into_inner();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "approval": approval,
                "statement_sha256": review.statement_hash,
                "withdrawal": withdrawal_json(&after),
            }))?
        );
    } else {
        println!(
            "{} {} by {approver}: now {}",
            past(verdict),
            after.id,
            after.state
        );
        let so_far: Vec<String> = after
            .approvals
            .iter()
            .map(|a| format!("{} ({})", a.approver, a.verdict))
            .collect();
        if !so_far.is_empty() {
            println!("  verdicts so far: {}", so_far.join(", "));
        }
        if !after.time_lock_until.is_empty()
            && matches!(after.state.as_str(), "approved" | "time_locked")
        {
            println!("  time lock until {}", after.time_lock_until);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn verb(v: Verdict) -> &'static str {
    match v {
        Verdict::Approve => "approve",
        Verdict::Reject => "reject",
        Verdict::Cancel => "cancel",
    }
}

fn past(v: Verdict) -> &'static str {
    match v {
        Verdict::Approve => "approved",
        Verdict::Reject => "rejected",
        Verdict::Cancel => "cancelled",
    }
}

/// Runs `custos approve`.
pub fn approve(args: VerdictArgs) -> anyhow::Result<ExitCode> {
    block_on(async move { submit(&args, Verdict::Approve, None).await })
}

/// Runs `custos reject`.
pub fn reject(args: RejectArgs) -> anyhow::Result<ExitCode> {
    if args.reason.trim().is_empty() {
        bail!("--reason must say why");
    }
    block_on(async move { submit(&args.verdict, Verdict::Reject, Some(&args.reason)).await })
}

/// Runs `custos cancel`.
pub fn cancel(args: CancelArgs) -> anyhow::Result<ExitCode> {
    block_on(async move { submit(&args.verdict, Verdict::Cancel, args.reason.as_deref()).await })
}
