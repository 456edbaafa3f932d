//! `custos demo`: the main job end to end on the local dev cluster.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use custos_proto::custody::{CreateKeyRequest, Curve, GetClusterStatusRequest, SignDigestRequest};
use rand::RngCore;

/// `custos demo` arguments.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Directory of the dev cluster (`custos dev up`).
    #[arg(long, default_value = ".custos-dev")]
    dir: PathBuf,
    /// Signatures to produce.
    #[arg(long, default_value_t = 5)]
    signatures: u32,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
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
    let mut client = custos_devkit::client::connect(&layout).await?;
    let say = |s: String| {
        if !args.json {
            println!("{s}");
        }
    };

    // First run: signers generate safe primes and run aux info (tens of seconds).
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
        if line[9..] != last.get(9..).unwrap_or("")[..] && !args.json {
            eprintln!("{line}");
        }
        last = line;
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("aux info not ready after 30 minutes: {last}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let aux_secs = started.elapsed().as_secs_f64();
    say(format!(
        "signer group ready ({aux_secs:.1}s; reused on later runs)"
    ));

    let t0 = Instant::now();
    let key = client
        .create_key(CreateKeyRequest {
            key_id: String::new(),
            curve: Curve::Secp256k1 as i32,
            threshold: 0,
            chain: String::new(),
        })
        .await?
        .into_inner();
    let keygen_ms = t0.elapsed().as_secs_f64() * 1000.0;
    say(format!(
        "created key {} ({}-of-{}) in {keygen_ms:.1} ms\n  public key {}\n  ethereum address {}",
        key.key_id,
        key.threshold,
        key.participants.len(),
        hex::encode(&key.public_key),
        key.ethereum_address
    ));

    // Let the background pool fill so signing is one round (each presignature
    // is a multi-round protocol of about a second; the coordinator keeps a few per key).
    let want = args.signatures.min(4);
    let pool_wait = Instant::now();
    let mut shown = u32::MAX;
    while pool_wait.elapsed() < Duration::from_secs(60) {
        let k = client
            .get_key(custos_proto::custody::GetKeyRequest {
                key_id: key.key_id.clone(),
            })
            .await?
            .into_inner();
        if k.presignatures_ready != shown && !args.json {
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
    for _ in 0..args.signatures {
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
            .await?
            .into_inner();
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        verify(&key.public_key, &digest, &sig.r, &sig.s)?;
        say(format!(
            "signed {} -> r={}.. s={}.. via {} ({}) in {ms:.2} ms, verified",
            &hex::encode(digest)[..16],
            &hex::encode(&sig.r)[..16],
            &hex::encode(&sig.s)[..16],
            sig.mode,
            sig.signers.join("+")
        ));
        results.push(
            serde_json::json!({"digest": hex::encode(digest), "r": hex::encode(&sig.r), "s": hex::encode(&sig.s),
            "recovery_id": sig.recovery_id, "mode": sig.mode, "signers": sig.signers, "ms": ms}),
        );
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({"key_id": key.key_id, "public_key": hex::encode(&key.public_key),
                "ethereum_address": key.ethereum_address, "aux_wait_secs": aux_secs, "keygen_ms": keygen_ms, "signatures": results})
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Verifies independently of the cluster (RustCrypto k256).
fn verify(public_key: &[u8], digest: &[u8; 32], r: &[u8], s: &[u8]) -> anyhow::Result<()> {
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
