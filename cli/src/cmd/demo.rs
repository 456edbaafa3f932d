//! `custos demo`: the main job end to end on the local dev cluster: a wallet
//! key, a small withdrawal signed at once, a large one approved by two
//! treasurers, time locked and signed; every signature verified with k256.
//! With `--eth-rpc URL` ([`eth`]): the large one on an EVM node, funded from
//! the node's dev account, broadcast and confirmed, with its receipt. With
//! `--ltc-rpc URL` ([`ltc`]): the large one in LTC on a Litecoin Core regtest
//! node, funded from the node, spent, mined and confirmed.

pub(crate) mod eth;
mod ltc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use custos_devkit::client::{Client, connect_as};
use custos_devkit::{ADMIN_CLIENT, APPROVER_CLIENT, BACKEND_CLIENT};
use custos_policy::{Approval, SecretKey, Timestamp, Verdict, Zeroizing};
use custos_proto::custody::{
    CreateKeyRequest, CreateWithdrawalRequest, Curve, GetClusterStatusRequest, GetKeyRequest,
    GetWithdrawalRequest, Key, ListAddressBookRequest, SignDigestRequest, SubmitApprovalRequest,
    Verdict as ProtoVerdict, Withdrawal,
};
use rand::RngCore;

use super::conn::rpc;
use super::view::{Review, human_amount, is_final, render, warn_mismatches, withdrawal_json};
use super::withdraw::{reached, wait_for};

/// `custos demo` arguments.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Directory of the dev cluster (`custos dev up`).
    #[arg(long, visible_alias = "cluster", default_value = ".custos-dev")]
    dir: PathBuf,
    /// Raw-digest signatures (`SignDigest`, dev clusters only) to time before the
    /// withdrawal flow; 0 skips them (so does --eth-rpc).
    #[arg(long, default_value_t = 3)]
    signatures: u32,
    /// Wallet (key) id to create or reuse; the demo policy's hot wallets are
    /// demo-hot and eth-hot-1 [default: demo-hot; with --eth-rpc: eth-hot-1].
    #[arg(long, value_name = "ID")]
    wallet: Option<String>,
    /// Whitelisted destination in the demo policy [default: exchange-deposit
    /// 0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed; with --eth-rpc: anvil-payee
    /// 0x70997970C51812dc3A010C7d01b50e0d17dc79C8, anvil's dev account 1].
    #[arg(long, value_name = "ADDR")]
    to: Option<String>,
    /// Run the flow on this EVM node (e.g. anvil at http://127.0.0.1:8545), which
    /// the cluster must have been started with (`custos dev up --eth-rpc URL`):
    /// fund the wallet from the node's dev account, withdraw 1.5 ETH through the
    /// policy and two approvals, wait for `confirmed`, print the tx hash, the
    /// receipt and the balance changes.
    #[arg(long, value_name = "URL", conflicts_with = "ltc_rpc")]
    eth_rpc: Option<String>,
    /// Run the flow in LTC on this Litecoin Core regtest node (JSON-RPC URL with
    /// user and password), which the cluster must have been started with
    /// (`custos dev up --ltc-rpc URL`): fund the wallet from a wallet of the
    /// node's own (mining regtest blocks), withdraw 1.5 LTC through the policy
    /// and two approvals, mine the transaction and wait for `confirmed`
    /// [wallet default: ltc-hot-1; --to default: the policy's ltc-payee].
    #[arg(long, value_name = "URL")]
    ltc_rpc: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// Destination of the default demo: the demo policy's `exchange-deposit`.
const EXCHANGE_DEPOSIT: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";

/// Prints a result line on stdout unless the output is JSON.
fn say(json: bool, line: &str) {
    if !json {
        println!("{line}");
    }
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    tokio::runtime::Runtime::new()?.block_on(demo(args))
}

async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let layout = custos_devkit::ClusterLayout::load(&args.dir).with_context(|| {
        format!(
            "no dev cluster in {} (run `custos dev up` first)",
            args.dir.display()
        )
    })?;
    // A cluster without that chain: say so before doing anything.
    let chain = match &args.eth_rpc {
        Some(url) => Some(eth::cluster_chain(&layout, &args.dir, url)?),
        None => None,
    };
    let utxo_chain = match &args.ltc_rpc {
        Some(url) => Some(ltc::cluster_chain(&layout, &args.dir, url)?),
        None => None,
    };
    let started = Instant::now();
    let mut client = connect_as(&layout, ADMIN_CLIENT).await?;
    let aux_secs = wait_group_ready(&mut client, args.json).await?;
    if let Some(chain) = chain {
        return eth::run(&layout, &chain, &args, client, aux_secs, started).await;
    }
    if let Some(chain) = utxo_chain {
        return ltc::run(&layout, &chain, &args, client, aux_secs, started).await;
    }
    let say = |s: String| say(args.json, &s);
    let wallet = args.wallet.clone().unwrap_or_else(|| "demo-hot".into());
    let to = args.to.clone().unwrap_or_else(|| EXCHANGE_DEPOSIT.into());

    // The wallet: a threshold key on ethereum (wallet id = key id). A rerun
    // reuses it (its history then counts toward the policy's daily limit).
    let (key, keygen_ms) = ensure_key(&mut client, &wallet, "ethereum", args.json).await?;

    let mut raw = Vec::new();
    if args.signatures > 0 && layout.raw_digest {
        raw = raw_digest_signatures(&mut client, &key, args.signatures, args.json).await?;
    } else if args.signatures > 0 {
        say("raw-digest signing is disabled in this cluster: skipping it".into());
    }

    // The withdrawal flow, as the payments backend and two treasury approvers.
    let mut backend = connect_as(&layout, BACKEND_CLIENT).await?;
    let mut approver = connect_as(&layout, APPROVER_CLIENT).await?;

    say(format!(
        "\n1) small withdrawal: {} to {to} (policy: allowed without approvals)",
        human_amount(SMALL_WEI, "ETH").unwrap_or_default(),
    ));
    let small = create(
        &mut backend,
        &wallet,
        &to,
        (SMALL_WEI, "ETH"),
        "demo: small payout",
    )
    .await?;
    say(format!(
        "   {} {} risk {} rule {}",
        small.id, small.state, small.risk_score, small.rule_id
    ));
    if small.state == "blocked" {
        bail!(
            "the small withdrawal {} was blocked{}\n(the demo policy lets a hot wallet pay 5 ETH \
             in 20 withdrawals a day, and every demo run uses 2.1 ETH: run \
             `custos demo --wallet eth-hot-1` for another hot wallet, or start a fresh cluster)",
            small.id,
            reason(&small)
        );
    }
    let small = wait_until(&mut backend, &small.id, "signed", args.json).await?;
    verify_withdrawal(&key, &small)?;
    say(format!(
        "   signed: tx digest {} r={}.. s={}.., verified against the wallet key",
        hex::encode(&small.tx_digest),
        hex::encode(small.signature_r.get(..8).unwrap_or_default()),
        hex::encode(small.signature_s.get(..8).unwrap_or_default()),
    ));

    say(format!(
        "\n2) large withdrawal: {} to {to} (policy: 2 treasury approvals, then a time lock)",
        human_amount(LARGE_WEI, "ETH").unwrap_or_default(),
    ));
    let large = create(
        &mut backend,
        &wallet,
        &to,
        (LARGE_WEI, "ETH"),
        "demo: large transfer",
    )
    .await?;
    let (review, approvals) =
        approve_as_treasurers(&mut backend, &mut approver, &large, args.json).await?;
    let large = wait_until(&mut backend, &large.id, "signed", args.json).await?;
    verify_withdrawal(&key, &large)?;
    say(format!(
        "   signed after the time lock: tx digest {} verified against the wallet key",
        hex::encode(&large.tx_digest)
    ));
    say(format!(
        "\ndone in {:.1}s. Try: custos pending, custos show ID, custos withdrawals, custos audit tail",
        started.elapsed().as_secs_f64()
    ));

    if args.json {
        print_result(
            &key,
            aux_secs,
            keygen_ms,
            serde_json::json!({
                "raw_digest_signatures": raw,
                "small": withdrawal_json(&small),
                "large": withdrawal_json(&large),
                "large_statement_sha256": review.statement_hash,
                "approvals": approvals,
            }),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the `--json` result: the wallet, the waits and `verified`, plus the
/// fields of `rest` (an object).
fn print_result(key: &Key, aux_secs: f64, keygen_ms: f64, rest: serde_json::Value) {
    let mut out = serde_json::json!({
        "key_id": key.key_id,
        "public_key": hex::encode(&key.public_key),
        "ethereum_address": key.ethereum_address,
        "address": key.address,
        "aux_wait_secs": aux_secs,
        "keygen_ms": keygen_ms,
        "verified": true,
    });
    if let (Some(out), serde_json::Value::Object(rest)) = (out.as_object_mut(), rest) {
        out.extend(rest);
    }
    println!("{out}");
}

/// Waits until the signer group is ready (on the first run, signers generate
/// safe primes and run aux info: minutes), showing progress; returns the wait.
async fn wait_group_ready(client: &mut Client, json: bool) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let s = client
            .get_cluster_status(GetClusterStatusRequest {})
            .await?
            .into_inner();
        if s.aux_info == "ready" {
            break;
        }
        let line = format!(
            "[{:>5.1}s] preparing signer group: aux info {}; {}",
            started.elapsed().as_secs_f64(),
            s.aux_info,
            s.signers
                .iter()
                .map(|g| format!(
                    "{}={}",
                    g.node_id,
                    if g.reachable { &g.state } else { "unreachable" }
                ))
                .collect::<Vec<_>>()
                .join(" ")
        );
        if line[9..] != last.get(9..).unwrap_or("")[..] && !json {
            eprintln!("{line}");
        }
        last = line;
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("aux info not ready after 30 minutes: {last}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let aux_secs = started.elapsed().as_secs_f64();
    say(
        json,
        &format!("signer group ready ({aux_secs:.1}s; reused on later runs)"),
    );
    Ok(aux_secs)
}

/// Creates the wallet `id` (a threshold key on `chain`; wallet id = key id) or
/// reuses it; returns it with the key generation time (0 when reused).
async fn ensure_key(
    client: &mut Client,
    id: &str,
    chain: &str,
    json: bool,
) -> anyhow::Result<(Key, f64)> {
    let t0 = Instant::now();
    let key = match client
        .create_key(CreateKeyRequest {
            key_id: id.to_string(),
            curve: Curve::Secp256k1 as i32,
            threshold: 0,
            chain: chain.into(),
            ..Default::default()
        })
        .await
    {
        Ok(k) => k.into_inner(),
        Err(s) if s.code() == tonic::Code::AlreadyExists => {
            say(json, &format!("wallet {id} exists: reusing it"));
            let key = client
                .get_key(GetKeyRequest {
                    key_id: id.to_string(),
                })
                .await
                .map_err(rpc("GetKey"))?
                .into_inner();
            if !key.chain.is_empty() && key.chain != chain {
                bail!(
                    "wallet {id} exists on chain {}, not {chain}: pick another --wallet",
                    key.chain
                );
            }
            key
        }
        Err(s) => return Err(rpc("CreateKey")(s)),
    };
    let keygen_ms = t0.elapsed().as_secs_f64() * 1000.0;
    say(
        json,
        &format!(
            "wallet {} on {chain} ({}-of-{}, {keygen_ms:.1} ms)\n  public key {}\n  address {}",
            key.key_id,
            key.threshold,
            key.participants.len(),
            hex::encode(&key.public_key),
            key.address
        ),
    );
    Ok((key, keygen_ms))
}

/// Waits until the large withdrawal `w` asks for approvals, shows what the
/// approvers sign (decoded from the statement bytes, cross-checked against the
/// server's fields) and approves it as the demo treasurers alice and bob.
/// Returns the review and one JSON record per approval.
async fn approve_as_treasurers(
    backend: &mut Client,
    approver: &mut Client,
    w: &Withdrawal,
    json: bool,
) -> anyhow::Result<(Review, Vec<serde_json::Value>)> {
    say(
        json,
        &format!(
            "   {} {} risk {} rule {}",
            w.id, w.state, w.risk_score, w.rule_id
        ),
    );
    let w = wait_for(backend, &w.id, "awaiting_approvals", WAIT, |w| {
        progress(w, json)
    })
    .await?;
    if w.state != "awaiting_approvals" {
        bail!(
            "withdrawal {} is {} instead of awaiting_approvals{}",
            w.id,
            w.state,
            reason(&w)
        );
    }
    // What the approvers see: decoded from the statement bytes.
    let w = approver
        .get_withdrawal(GetWithdrawalRequest { id: w.id.clone() })
        .await
        .map_err(rpc("GetWithdrawal"))?
        .into_inner();
    let book = approver
        .list_address_book(ListAddressBookRequest {
            chain: w.chain.clone(),
        })
        .await
        .ok()
        .map(|r| r.into_inner().entries);
    let review = Review::new(&w, book.as_deref())?;
    if review.statement.withdrawal_id != w.id {
        bail!(
            "the statement names withdrawal {}",
            review.statement.withdrawal_id
        );
    }
    warn_mismatches(&review);
    if !review.mismatches.is_empty() {
        bail!("the server's fields differ from the statement: the demo does not approve");
    }
    say(
        json,
        "   what the approvers sign (decoded from the statement):",
    );
    if !json {
        print!("{}", render(&w, Some(&review), None));
    }
    let mut approvals = Vec::new();
    for (id, pem) in DEMO_APPROVERS {
        let secret = SecretKey::from_pem(&Zeroizing::new(pem.to_string()))?;
        let approval = Approval::sign(&review.statement, Verdict::Approve, id, &secret)?;
        let after = approver
            .submit_approval(SubmitApprovalRequest {
                withdrawal_id: w.id.clone(),
                approver: id.to_string(),
                verdict: ProtoVerdict::Approve as i32,
                signature: approval.signature.clone(),
                reason: String::new(),
                fee_bump_statement: Vec::new(),
                webauthn: None,
            })
            .await
            .map_err(rpc("SubmitApproval"))?
            .into_inner();
        say(json, &format!("   {id} approved: now {}", after.state));
        approvals.push(serde_json::json!({"approver": id, "state_after": after.state}));
    }
    Ok((review, approvals))
}

/// 0.1 ETH: within the demo policy's `hot-small` rule.
const SMALL_WEI: u128 = 100_000_000_000_000_000;
/// 2 ETH: the demo policy's `large-whitelisted` rule (2 treasury approvals, 5 s lock).
const LARGE_WEI: u128 = 2_000_000_000_000_000_000;
/// How long one withdrawal may take to get where the demo waits for it.
const WAIT: Duration = Duration::from_secs(300);
/// Treasury approvers of the demo policy. DEMO KEYS: their seeds are public.
const DEMO_APPROVERS: [(&str, &str); 2] = [
    ("alice", include_str!("../../../examples/keys/alice.pem")),
    ("bob", include_str!("../../../examples/keys/bob.pem")),
];

fn reason(w: &Withdrawal) -> String {
    if w.reason.is_empty() {
        String::new()
    } else {
        format!(": {}", w.reason)
    }
}

async fn create(
    backend: &mut Client,
    wallet: &str,
    to: &str,
    (base_units, asset): (u128, &str),
    memo: &str,
) -> anyhow::Result<Withdrawal> {
    let mut b = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut b);
    Ok(backend
        .create_withdrawal(CreateWithdrawalRequest {
            idempotency_key: format!("demo-{}", hex::encode(b)),
            wallet: wallet.to_string(),
            asset: asset.into(),
            destination: to.to_string(),
            amount: base_units.to_string(),
            fee_cap: String::new(),
            memo: memo.into(),
            request_signature: String::new(),
            source_path: String::new(),
        })
        .await
        .map_err(rpc("CreateWithdrawal"))?
        .into_inner())
}

fn progress(w: &Withdrawal, json: bool) {
    if !json {
        eprintln!("   ... {}", w.state);
    }
}

/// Waits for `target` (`signed`, or `confirmed` on a chain), showing each
/// state, the time-lock countdown and new signer notes; fails on any other end.
async fn wait_until(
    client: &mut Client,
    id: &str,
    target: &str,
    json: bool,
) -> anyhow::Result<Withdrawal> {
    let started = Instant::now();
    let mut last = String::new();
    let mut last_left = i64::MIN;
    let mut notes = 0;
    loop {
        let w = client
            .get_withdrawal(GetWithdrawalRequest { id: id.to_string() })
            .await
            .map_err(rpc("GetWithdrawal"))?
            .into_inner();
        if w.state != last {
            progress(&w, json);
            last = w.state.clone();
        }
        for note in w.signer_notes.iter().skip(notes) {
            if !json {
                eprintln!("   ... note: {note}");
            }
        }
        notes = notes.max(w.signer_notes.len());
        if w.state == "time_locked"
            && let Ok(until) = Timestamp::parse(&w.time_lock_until)
        {
            let now = custos_clock::now_secs();
            let left = (until.0 - now).max(0);
            if left != last_left && !json {
                eprintln!(
                    "   ... time lock: {left}s left (until {})",
                    w.time_lock_until
                );
                last_left = left;
            }
        }
        if reached(&w.state, target) {
            // A withdrawal with a chain transaction carries its signatures in
            // it (a UTXO spend has one per input), checked by the node.
            if w.tx_hash.is_empty() && (w.signature_r.is_empty() || w.tx_digest.is_empty()) {
                bail!("withdrawal {id} is {} but carries no signature", w.state);
            }
            return Ok(w);
        }
        if is_final(&w.state) {
            bail!("withdrawal {id} ended {}{}", w.state, reason(&w));
        }
        if started.elapsed() > WAIT {
            bail!(
                "withdrawal {id} still {} after {} s (waiting for {target})",
                w.state,
                WAIT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The raw-digest path (`SignDigest`, dev clusters only): pool wait and timings.
async fn raw_digest_signatures(
    client: &mut Client,
    key: &Key,
    count: u32,
    json: bool,
) -> anyhow::Result<Vec<serde_json::Value>> {
    // Let the background pool fill so signing is one round (each presignature
    // is a multi-round protocol of about a second; the coordinator keeps a few per key).
    let want = count.min(4);
    let pool_wait = Instant::now();
    let mut shown = u32::MAX;
    while pool_wait.elapsed() < Duration::from_secs(60) {
        let k = client
            .get_key(GetKeyRequest {
                key_id: key.key_id.clone(),
            })
            .await
            .map_err(rpc("GetKey"))?
            .into_inner();
        if k.presignatures_ready != shown && !json {
            eprintln!(
                "[{:>5.1}s] presignature pool {}/{want}",
                pool_wait.elapsed().as_secs_f64(),
                k.presignatures_ready
            );
            shown = k.presignatures_ready;
        }
        if k.presignatures_ready >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut results = Vec::new();
    for _ in 0..count {
        let mut digest = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut digest);
        let mut rid = [0u8; 8];
        rand::thread_rng().fill_bytes(&mut rid);
        let t = Instant::now();
        let sig = client
            .sign_digest(SignDigestRequest {
                key_id: key.key_id.clone(),
                digest: digest.to_vec(),
                request_id: format!("demo-{}", hex::encode(rid)),
                interactive: false,
            })
            .await
            .map_err(rpc("SignDigest"))?
            .into_inner();
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        verify(&key.public_key, &digest, &sig.r, &sig.s)?;
        if !json {
            println!(
                "raw digest {} -> r={}.. s={}.. via {} ({}) in {ms:.2} ms, verified",
                &hex::encode(digest)[..16],
                hex::encode(sig.r.get(..8).unwrap_or_default()),
                hex::encode(sig.s.get(..8).unwrap_or_default()),
                sig.mode,
                sig.signers.join("+")
            );
        }
        results.push(
            serde_json::json!({"digest": hex::encode(digest), "r": hex::encode(&sig.r), "s": hex::encode(&sig.s),
            "recovery_id": sig.recovery_id, "mode": sig.mode, "signers": sig.signers, "ms": ms}),
        );
    }
    Ok(results)
}

/// Verifies independently of the cluster (RustCrypto k256).
fn verify(public_key: &[u8], digest: &[u8], r: &[u8], s: &[u8]) -> anyhow::Result<()> {
    use k256::ecdsa::signature::hazmat::PrehashVerifier;
    let vk = k256::ecdsa::VerifyingKey::from_sec1_bytes(public_key).context("public key")?;
    let mut rs = Vec::with_capacity(64);
    rs.extend_from_slice(r);
    rs.extend_from_slice(s);
    let sig = k256::ecdsa::Signature::from_slice(&rs).context("signature encoding")?;
    vk.verify_prehash(digest, &sig)
        .context("signature does NOT verify")?;
    Ok(())
}

/// Verifies a signed withdrawal's signature over its tx digest with the wallet key.
fn verify_withdrawal(key: &Key, w: &Withdrawal) -> anyhow::Result<()> {
    verify(
        &key.public_key,
        &w.tx_digest,
        &w.signature_r,
        &w.signature_s,
    )
    .with_context(|| format!("withdrawal {}", w.id))
}
