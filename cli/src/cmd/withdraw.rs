//! Backend commands: `custos withdraw`, `custos withdrawals`, `custos watch`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use custos_devkit::BACKEND_CLIENT;
use custos_devkit::client::Client;
use custos_proto::custody::{
    CreateWithdrawalRequest, GetWalletRequest, GetWithdrawalRequest, ListWithdrawalsRequest,
    WatchWithdrawalsRequest, Withdrawal, WithdrawalEvent,
};
use rand::RngCore;

use super::conn::{ConnArgs, block_on, emit, rpc};
use super::view::{self, is_final, rank, summary_line, withdrawal_json};

/// `custos withdraw`: request a withdrawal (role backend).
#[derive(clap::Args)]
pub struct WithdrawArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Source wallet id (= key id), e.g. demo-hot.
    #[arg(long, value_name = "WALLET")]
    wallet: String,
    /// Spend from the wallet's derived address at this path (m/0/<index>,
    /// as `custos address derive` shows it) [default: the wallet's own address].
    #[arg(long, value_name = "PATH")]
    source_path: Option<String>,
    /// Asset symbol configured for the wallet's chain, e.g. ETH.
    #[arg(long, value_name = "SYMBOL")]
    asset: String,
    /// Destination address.
    #[arg(long, value_name = "ADDR")]
    to: String,
    /// Amount in base units (wei, satoshi): digits only.
    #[arg(long, value_name = "BASE_UNITS")]
    amount: String,
    /// Highest fee in the chain's native base units [default: the chain's default].
    #[arg(long, value_name = "N")]
    fee_cap: Option<String>,
    /// Free text shown to approvers (at most 512 characters).
    #[arg(long, value_name = "TEXT")]
    memo: Option<String>,
    /// Idempotency key: retrying with the same key never creates a second
    /// withdrawal [default: random].
    #[arg(long, value_name = "K")]
    idempotency_key: Option<String>,
    /// This client's request key (PKCS#8 PEM, Ed25519 or P-256): signs the request, which the
    /// coordinator and every signer check when the policy registers request
    /// keys ([[request_keys]]).
    #[arg(long, value_name = "PEM")]
    request_key: Option<std::path::PathBuf>,
    /// Wait until the withdrawal reaches this state (or a later one), or ends:
    /// e.g. awaiting_approvals, approved, time_locked, signed. Exits 1 if it
    /// ends elsewhere (blocked, rejected, cancelled, expired, failed).
    #[arg(long, value_name = "STATE")]
    wait: Option<String>,
    /// Seconds --wait may take.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    timeout: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `custos withdrawals`: list withdrawals.
#[derive(clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Only withdrawals in this state.
    #[arg(long, value_name = "S")]
    state: Option<String>,
    /// Only withdrawals from this wallet.
    #[arg(long, value_name = "W")]
    wallet: Option<String>,
    /// Only withdrawals this client or approver initiated.
    #[arg(long, value_name = "ID")]
    initiator: Option<String>,
    /// Stop after this many [default: all pages].
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Print JSON (an array).
    #[arg(long)]
    json: bool,
}

/// `custos watch`: follow withdrawal state changes.
#[derive(clap::Args)]
pub struct WatchArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Last event sequence already seen: events after it, then live [default: 0,
    /// from the beginning].
    #[arg(long, value_name = "N", default_value_t = 0)]
    cursor: u64,
    /// Only this withdrawal.
    #[arg(long, value_name = "W")]
    id: Option<String>,
    /// Stop once the watched withdrawal (--id) reaches this state or a later one
    /// (e.g. signed); exit 1 if it ends elsewhere (blocked, rejected, ...).
    #[arg(long, value_name = "STATE", requires = "id")]
    until: Option<String>,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

fn check_state(flag: &str, state: &str) -> anyhow::Result<()> {
    if !view::all_states().contains(&state) {
        bail!(
            "{flag} {state:?} is not a withdrawal state (one of: {})",
            view::all_states().join(", ")
        );
    }
    Ok(())
}

/// Runs `custos withdraw`.
pub fn withdraw(args: WithdrawArgs) -> anyhow::Result<ExitCode> {
    if args.amount.is_empty() || !args.amount.bytes().all(|b| b.is_ascii_digit()) {
        bail!(
            "--amount {:?} must be an integer of base units (wei, satoshi), digits only: 1 ETH is 1000000000000000000",
            args.amount
        );
    }
    if let Some(f) = &args.fee_cap
        && (f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()))
    {
        bail!("--fee-cap {f:?} must be an integer of native base units, digits only");
    }
    if let Some(k) = &args.idempotency_key
        && (k.is_empty() || k.len() > 128)
    {
        bail!("--idempotency-key must be 1..=128 characters");
    }
    if let Some(w) = &args.wait {
        check_state("--wait", w)?;
    }
    block_on(async move {
        let mut client = args.conn.connect(BACKEND_CLIENT).await?;
        let key = args.idempotency_key.clone().unwrap_or_else(|| {
            let mut b = [0u8; 12];
            rand::thread_rng().fill_bytes(&mut b);
            format!("cli-{}", hex::encode(b))
        });
        let request_signature = match &args.request_key {
            None => String::new(),
            Some(path) => {
                let chain = client
                    .get_wallet(GetWalletRequest {
                        wallet_id: args.wallet.clone(),
                    })
                    .await
                    .map_err(rpc("GetWallet"))?
                    .into_inner()
                    .chain;
                let amount: u128 = args.amount.parse()?;
                let statement = custos_policy::RequestStatement {
                    client: BACKEND_CLIENT.to_owned(),
                    idempotency_key: key.clone(),
                    wallet: args.wallet.clone(),
                    asset: args.asset.clone(),
                    destination: custos_policy::canonical_destination(&chain, &args.to),
                    amount,
                    source_path: args.source_path.clone().unwrap_or_default(),
                };
                sign_request("--request-key", path, &statement)?
            }
        };
        let w = client
            .create_withdrawal(CreateWithdrawalRequest {
                idempotency_key: key.clone(),
                wallet: args.wallet.clone(),
                asset: args.asset.clone(),
                destination: args.to.clone(),
                amount: args.amount.clone(),
                fee_cap: args.fee_cap.clone().unwrap_or_default(),
                memo: args.memo.clone().unwrap_or_default(),
                request_signature,
                source_path: args.source_path.clone().unwrap_or_default(),
            })
            .await
            .map_err(rpc("CreateWithdrawal"))?
            .into_inner();
        if !args.json {
            println!("withdrawal {} (idempotency key {key})", w.id);
            print_brief(&w);
        }
        let Some(target) = args.wait.as_deref() else {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&withdrawal_json(&w))?);
            }
            return Ok(ExitCode::SUCCESS);
        };
        let created_state = w.state.clone();
        let progress = |w: &Withdrawal| {
            if !args.json && w.state != created_state {
                eprintln!("  ... {}{}", w.state, lock_note(w));
            }
        };
        let w = wait_for(
            &mut client,
            &w.id,
            target,
            Duration::from_secs(args.timeout),
            progress,
        )
        .await?;
        let reached = reached(&w.state, target);
        if args.json {
            println!("{}", serde_json::to_string_pretty(&withdrawal_json(&w))?);
        } else if w.state != created_state {
            print_brief(&w);
        }
        if reached {
            Ok(ExitCode::SUCCESS)
        } else {
            eprintln!(
                "error: withdrawal {} ended {} without reaching {target}{}",
                w.id,
                w.state,
                if w.reason.is_empty() {
                    String::new()
                } else {
                    format!(": {}", w.reason)
                }
            );
            Ok(ExitCode::FAILURE)
        }
    })
}

fn lock_note(w: &Withdrawal) -> String {
    if w.state == "time_locked" && !w.time_lock_until.is_empty() {
        format!(" until {}", w.time_lock_until)
    } else {
        String::new()
    }
}

fn print_brief(w: &Withdrawal) {
    println!("  state    {}", w.state);
    println!(
        "  risk     {}{}",
        w.risk_score,
        if w.risk_reasons.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                w.risk_reasons
                    .iter()
                    .map(|r| r.code.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    if !w.rule_id.is_empty() {
        println!("  rule     {}", w.rule_id);
    }
    if !w.required_approvals.is_empty() {
        println!("  needs    {}", w.required_approvals);
    }
    if !w.reason.is_empty() {
        println!("  reason   {}", w.reason);
    }
}

/// Whether `state` is `target` or past it on the way to confirmed.
pub fn reached(state: &str, target: &str) -> bool {
    state == target || matches!((rank(state), rank(target)), (Some(s), Some(t)) if s >= t)
}

/// Polls the withdrawal until it reaches `target` (or later) or a final state;
/// calls `progress` on every state change. Polling (not the event stream) so
/// that a short-lived state passed between two looks still counts as reached.
pub async fn wait_for(
    client: &mut Client,
    id: &str,
    target: &str,
    timeout: Duration,
    mut progress: impl FnMut(&Withdrawal),
) -> anyhow::Result<Withdrawal> {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let w = client
            .get_withdrawal(GetWithdrawalRequest { id: id.to_string() })
            .await
            .map_err(rpc("GetWithdrawal"))?
            .into_inner();
        if w.state != last {
            progress(&w);
            last = w.state.clone();
        }
        if reached(&w.state, target) || is_final(&w.state) {
            return Ok(w);
        }
        if started.elapsed() > timeout {
            bail!(
                "withdrawal {id} still {} after {} s (waiting for {target})",
                w.state,
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs `custos withdrawals`.
pub fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    if let Some(s) = &args.state {
        check_state("--state", s)?;
    }
    block_on(async move {
        let mut client = args.conn.connect(BACKEND_CLIENT).await?;
        let mut all = Vec::new();
        let mut page_token = String::new();
        let limit = args.limit.unwrap_or(usize::MAX);
        loop {
            let page = client
                .list_withdrawals(ListWithdrawalsRequest {
                    wallet: args.wallet.clone().unwrap_or_default(),
                    state: args.state.clone().unwrap_or_default(),
                    initiator: args.initiator.clone().unwrap_or_default(),
                    page_size: u32::try_from(limit.min(500)).unwrap_or(500),
                    page_token: page_token.clone(),
                })
                .await
                .map_err(rpc("ListWithdrawals"))?
                .into_inner();
            all.extend(page.withdrawals);
            if page.next_page_token.is_empty() || all.len() >= limit {
                break;
            }
            page_token = page.next_page_token;
        }
        all.truncate(limit);
        if args.json {
            let list: Vec<_> = all.iter().map(withdrawal_json).collect();
            println!("{}", serde_json::to_string_pretty(&list)?);
        } else if all.is_empty() {
            println!("no withdrawals");
        } else {
            for w in &all {
                println!("{}", summary_line(w));
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn event_json(e: &WithdrawalEvent) -> serde_json::Value {
    serde_json::json!({
        "sequence": e.sequence,
        "withdrawal_id": e.withdrawal_id,
        "state": e.state,
        "at": e.at,
        "detail": e.detail,
    })
}

/// Runs `custos watch`.
pub fn watch(args: WatchArgs) -> anyhow::Result<ExitCode> {
    if let Some(s) = &args.until {
        check_state("--until", s)?;
    }
    block_on(async move {
        let mut client = args.conn.connect(BACKEND_CLIENT).await?;
        let mut stream = client
            .watch_withdrawals(WatchWithdrawalsRequest {
                cursor: args.cursor,
                withdrawal_id: args.id.clone().unwrap_or_default(),
            })
            .await
            .map_err(rpc("WatchWithdrawals"))?
            .into_inner();
        while let Some(e) = stream.message().await.map_err(rpc("WatchWithdrawals"))? {
            let line = if args.json {
                event_json(&e).to_string()
            } else {
                format!(
                    "#{:<6} {} {:<28} {:<18} {}",
                    e.sequence, e.at, e.withdrawal_id, e.state, e.detail
                )
            };
            if !emit(&line) {
                return Ok(ExitCode::SUCCESS);
            }
            if let Some(until) = &args.until {
                if reached(&e.state, until) {
                    return Ok(ExitCode::SUCCESS);
                }
                if is_final(&e.state) {
                    eprintln!(
                        "error: withdrawal {} ended {} without reaching {until}",
                        e.withdrawal_id, e.state
                    );
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        if !args.json {
            eprintln!("the coordinator closed the stream; resume with --cursor <last #>");
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Signs `statement` with the request key in the PEM file `path` (given as
/// `flag`, named in errors): an Ed25519 key signs the message itself, a
/// P-256 key signs its SHA-256 (DER signature), as the policy's
/// `[[request_keys]]` entry expects.
fn sign_request(
    flag: &str,
    path: &std::path::Path,
    statement: &custos_policy::RequestStatement,
) -> anyhow::Result<String> {
    use p256::ecdsa::signature::Signer as _;
    use p256::pkcs8::DecodePrivateKey as _;
    let pem = super::approve::read_pem(flag, path)?;
    if let Ok(key) = custos_policy::SecretKey::from_pem(&pem) {
        return Ok(statement.sign(&key));
    }
    let key = p256::ecdsa::SigningKey::from_pkcs8_pem(&pem).map_err(|_| {
        anyhow::anyhow!(
            "{flag} {}: not an Ed25519 or P-256 private key in PKCS#8 PEM",
            path.display()
        )
    })?;
    let signature: p256::ecdsa::Signature = key.sign(&statement.signing_message());
    Ok(hex::encode(signature.to_der().as_bytes()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use custos_policy::{Policy, RequestStatement, SecretKey};
    use p256::pkcs8::{EncodePrivateKey as _, LineEnding};

    /// The flow test policy with its payments-backend key replaced by `entry`.
    fn policy(entry: &str) -> Policy {
        let text = include_str!("../../../tests/fixtures/flow-policy.toml");
        let start = text.find("[[request_keys]]").unwrap();
        let end = start + text[start..].find("\n\n").unwrap();
        let doc = format!(
            "{}[[request_keys]]\nclient = \"payments-backend\"\n{entry}{}",
            &text[..start],
            &text[end..]
        );
        Policy::parse(doc.as_bytes()).unwrap()
    }

    fn statement() -> RequestStatement {
        RequestStatement {
            client: BACKEND_CLIENT.to_owned(),
            idempotency_key: "order-1".into(),
            wallet: "w-eth".into(),
            asset: "ETH".into(),
            destination: "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed".into(),
            amount: 1_000,
            source_path: String::new(),
        }
    }

    #[test]
    fn request_keys_sign_from_ed25519_and_p256_pem_files() {
        let dir = tempfile::tempdir().unwrap();
        let st = statement();

        let ed = SecretKey::from_seed(&custos_policy::Zeroizing::new([0x42; 32]));
        let ed_pem = dir.path().join("ed25519.pem");
        std::fs::write(&ed_pem, ed.to_pem().unwrap().as_bytes()).unwrap();
        let sig = sign_request("--request-key", &ed_pem, &st).unwrap();
        policy(&format!("ed25519 = \"{}\"\n", ed.public().to_hex()))
            .verify_request(&st, &sig)
            .unwrap();

        let p = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
        let p_pem = dir.path().join("p256.pem");
        std::fs::write(&p_pem, p.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes()).unwrap();
        let sig = sign_request("--request-key", &p_pem, &st).unwrap();
        let sec1 = hex::encode(p.verifying_key().to_encoded_point(true).as_bytes());
        let registered = policy(&format!("p256 = \"{sec1}\"\n"));
        registered.verify_request(&st, &sig).unwrap();
        let mut other = st.clone();
        other.amount += 1;
        assert!(registered.verify_request(&other, &sig).is_err());

        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a key").unwrap();
        let e = sign_request("--request-key", &junk, &st)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("junk.pem: not an Ed25519 or P-256 private key in PKCS#8 PEM"),
            "{e}"
        );
        let e = sign_request("--request-key", &dir.path().join("missing.pem"), &st)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.pem: cannot read it"), "{e}");
    }
}
