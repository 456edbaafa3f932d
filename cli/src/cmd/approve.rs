//! Approver commands: `custos pending`, `custos show`, `custos approve`,
//! `custos reject`, `custos cancel`. What is shown and signed is decoded from
//! the withdrawal's statement bytes, never taken from the server's plain fields.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use custos_devkit::APPROVER_CLIENT;
use custos_devkit::client::Client;
use custos_policy::{Approval, FeeBumpStatement, SecretKey, Verdict, Zeroizing};
use custos_proto::custody::{
    AddressBookEntry, GetWithdrawalRequest, ListAddressBookRequest, ListPendingRequest,
    SubmitApprovalRequest, Withdrawal,
};
use sha2::Digest;

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
    /// Give the verdict on the fee bump waiting for approvals (the
    /// replacement of a stuck transaction, under a rule with
    /// `fee_bumps = "reapprove"`) instead of on the withdrawal.
    #[arg(long)]
    fee_bump: bool,
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
            if let Some(bump) = FeeBumpReview::of(&w)? {
                v["fee_bump"] = bump.json(&w);
            }
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            if review.is_none() {
                println!("(no approval statement: nothing to approve for this withdrawal)");
            }
            print!("{}", render(&w, review.as_ref(), note.as_deref()));
            if let Some(bump) = FeeBumpReview::of(&w)? {
                print!("{}", bump.render(&w));
            }
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

/// The PEM file given as `flag` (named in errors), kept zeroized.
pub(crate) fn read_pem(flag: &str, path: &Path) -> anyhow::Result<Zeroizing<String>> {
    Ok(Zeroizing::new(std::fs::read_to_string(path).with_context(
        || format!("{flag} {}: cannot read it", path.display()),
    )?))
}

/// The Ed25519 key in the PEM file given as `flag` (named in errors).
fn load_key(flag: &str, path: &Path) -> anyhow::Result<SecretKey> {
    let pem = read_pem(flag, path)?;
    SecretKey::from_pem(&pem).with_context(|| format!("{flag} {}", path.display()))
}

/// Fetches, decodes, signs `verdict` over the statement and submits it.
async fn submit(
    args: &VerdictArgs,
    verdict: Verdict,
    reason: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let approver = approver_id(args)?;
    let key = load_key("--key", &args.key)?;
    let mut client = args.conn.connect(APPROVER_CLIENT).await?;
    if args.fee_bump {
        return submit_fee_bump(args, &mut client, verdict, reason, &approver, &key).await;
    }
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
            fee_bump_statement: Vec::new(),
            webauthn: None,
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

/// A pending fee bump, decoded from the statement bytes (what is signed),
/// with the fees of the transaction it replaces for comparison.
struct FeeBumpReview {
    statement: FeeBumpStatement,
    /// Max fee per gas of the transaction in flight, if it decodes.
    current_max_fee: Option<u128>,
}

impl FeeBumpReview {
    /// The pending fee bump of `w`, if any; an error if its statement does
    /// not decode or is not about `w`'s approved statement.
    fn of(w: &Withdrawal) -> anyhow::Result<Option<Self>> {
        if w.fee_bump_statement.is_empty() {
            return Ok(None);
        }
        let statement = FeeBumpStatement::decode(&w.fee_bump_statement)
            .context("the server's fee-bump statement does not decode")?;
        if statement.withdrawal_id != w.id {
            bail!(
                "the server sent a fee-bump statement for withdrawal {:?} with withdrawal {:?}: refusing it",
                statement.withdrawal_id,
                w.id
            );
        }
        let approved: [u8; 32] = sha2::Sha256::digest(&w.statement).into();
        if statement.statement_hash != approved {
            bail!(
                "the fee-bump statement of {} is not about the approval statement the withdrawal was approved with: refusing it",
                w.id
            );
        }
        let current_max_fee = custos_chains::evm::tx::decode_unsigned_transfer(&w.unsigned_tx)
            .ok()
            .map(|(_, d)| d.max_fee_per_gas);
        Ok(Some(Self {
            statement,
            current_max_fee,
        }))
    }

    fn most_fee(&self) -> u128 {
        self.statement
            .max_fee_per_gas
            .saturating_mul(u128::from(self.statement.gas_limit))
    }

    fn render(&self, w: &Withdrawal) -> String {
        let s = &self.statement;
        let before = self
            .current_max_fee
            .map_or_else(|| "?".to_owned(), |f| f.to_string());
        let verdicts: Vec<String> = w
            .fee_bump_approvals
            .iter()
            .map(|a| format!("{} ({})", a.approver, a.verdict))
            .collect();
        format!(
            "\nfee bump awaiting approvals (rule {} says fee_bumps = \"reapprove\"):\n  \
             replaces the transaction in flight at nonce {} on {}: same transfer, same gas limit {}\n  \
             max fee per gas {before} -> {} wei, priority fee {} wei\n  \
             most it can pay: {} wei (approved fee cap {} wei)\n  \
             replacement digest 0x{}; approvals void after {}\n  \
             verdicts so far: {}\n  \
             approve with `custos approve {} --fee-bump --key KEY`\n",
            s.rule_id,
            s.nonce,
            s.chain,
            s.gas_limit,
            s.max_fee_per_gas,
            s.max_priority_fee_per_gas,
            self.most_fee(),
            w.fee_cap,
            hex::encode(s.replacement),
            s.expiry,
            if verdicts.is_empty() {
                "none".to_owned()
            } else {
                verdicts.join(", ")
            },
            w.id
        )
    }

    fn json(&self, w: &Withdrawal) -> serde_json::Value {
        serde_json::json!({
            "statement": self.statement,
            "statement_hex": hex::encode(&w.fee_bump_statement),
            "current_max_fee_per_gas": self.current_max_fee.map(|f| f.to_string()),
            "most_fee_wei": self.most_fee().to_string(),
            "verdicts": w.fee_bump_approvals.iter().map(|a| serde_json::json!({
                "approver": a.approver, "verdict": a.verdict, "received_at": a.received_at,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Signs `verdict` over the pending fee-bump statement and submits it.
async fn submit_fee_bump(
    args: &VerdictArgs,
    client: &mut Client,
    verdict: Verdict,
    reason: Option<&str>,
    approver: &str,
    key: &SecretKey,
) -> anyhow::Result<ExitCode> {
    if verdict == Verdict::Cancel {
        bail!("--fee-bump: a fee bump is approved or rejected, not cancelled");
    }
    let w = get(client, &args.id).await?;
    let Some(bump) = FeeBumpReview::of(&w)? else {
        bail!(
            "withdrawal {} ({}) has no fee bump awaiting approvals",
            w.id,
            w.state
        );
    };
    if !args.json {
        eprintln!(
            "{} FEE BUMP as {approver} (key {}):\n{}",
            verb(verdict).to_uppercase(),
            key.public(),
            summary_line(&w)
        );
        eprint!("{}", bump.render(&w));
    }
    let approval = bump.statement.sign(verdict, approver, key)?;
    let proto_verdict = match verdict {
        Verdict::Reject => custos_proto::custody::Verdict::Reject,
        _ => custos_proto::custody::Verdict::Approve,
    };
    let after = client
        .submit_approval(SubmitApprovalRequest {
            withdrawal_id: args.id.clone(),
            approver: approver.to_owned(),
            verdict: proto_verdict as i32,
            signature: approval.signature.clone(),
            reason: reason.unwrap_or_default().to_string(),
            fee_bump_statement: w.fee_bump_statement.clone(),
            webauthn: None,
        })
        .await
        .map_err(rpc("SubmitApproval (fee bump)"))?
        .into_inner();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "fee_bump_approval": approval,
                "withdrawal": withdrawal_json(&after),
            }))?
        );
    } else {
        println!(
            "fee bump of {} {} by {approver}: withdrawal {}",
            after.id,
            past(verdict),
            after.state
        );
    }
    Ok(ExitCode::SUCCESS)
}
