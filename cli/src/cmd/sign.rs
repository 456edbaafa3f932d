//! `custos sign`: a signature over a raw digest or message from a key of
//! any scheme, on a development cluster (the coordinator's `SignDigest`,
//! which needs `[dev] allow_sign_digest` there and `allow_raw_digest` on the
//! signers; production signatures come only from approved withdrawals).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use custos_proto::custody::{Scheme, SignDigestRequest};
use serde_json::json;

use super::conn::{ConnArgs, block_on, rpc};
use super::key::scheme_name;

/// Arguments of `custos sign`.
#[derive(clap::Args)]
pub struct SignArgs {
    /// Key id.
    key_id: String,
    /// What to sign, hex: a 32-byte prehash for cggmp21 ECDSA keys (signed
    /// as is), the message itself (1 to 4096 bytes) for FROST keys.
    #[arg(long, value_name = "HEX", group = "what")]
    digest: Option<String>,
    /// What to sign, as text (FROST keys: the message's UTF-8 bytes).
    #[arg(long, value_name = "TEXT", group = "what")]
    message: Option<String>,
    /// What to sign, read from a file (FROST keys: the message).
    #[arg(long, value_name = "FILE", group = "what")]
    message_file: Option<PathBuf>,
    /// Request id: the same id never signs twice (a retry returns the
    /// stored signature) [default: a random one].
    #[arg(long)]
    request_id: Option<String>,
    /// Skip the pool: ECDSA runs the interactive protocol, FROST a fresh
    /// nonce commitment round before its signing round.
    #[arg(long)]
    interactive: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: ConnArgs,
}

/// Runs `custos sign`.
pub fn run(a: SignArgs) -> anyhow::Result<ExitCode> {
    let bytes = match (&a.digest, &a.message, &a.message_file) {
        (Some(h), _, _) => hex::decode(h.trim()).context("--digest: not hex")?,
        (_, Some(m), _) => m.as_bytes().to_vec(),
        (_, _, Some(f)) => {
            std::fs::read(f).with_context(|| format!("--message-file {}", f.display()))?
        }
        _ => bail!("say what to sign: --digest HEX, --message TEXT or --message-file FILE"),
    };
    let request_id = a.request_id.clone().unwrap_or_else(|| {
        use rand::RngCore;
        let mut id = [0u8; 8];
        rand::thread_rng().fill_bytes(&mut id);
        format!("cli-{}", hex::encode(id))
    });
    block_on(async move {
        let mut c = a.conn.connect(custos_devkit::ADMIN_CLIENT).await?;
        let r = c
            .sign_digest(SignDigestRequest {
                key_id: a.key_id.clone(),
                digest: bytes.clone(),
                request_id: request_id.clone(),
                interactive: a.interactive,
            })
            .await
            .map_err(rpc("SignDigest"))?
            .into_inner();
        // ECDSA answers from before the scheme-neutral field carry r and s only.
        let signature = if r.signature.is_empty() {
            [r.r.as_slice(), r.s.as_slice()].concat()
        } else {
            r.signature.clone()
        };
        let scheme = scheme_name(if r.scheme == 0 {
            Scheme::Cggmp21Ecdsa as i32
        } else {
            r.scheme
        });
        if a.json {
            println!(
                "{}",
                json!({
                    "key_id": a.key_id,
                    "request_id": request_id,
                    "scheme": scheme,
                    "message": hex::encode(&bytes),
                    "signature": hex::encode(&signature),
                    "r": hex::encode(&r.r),
                    "s": hex::encode(&r.s),
                    "recovery_id": r.recovery_id,
                    "signers": r.signers,
                    "mode": r.mode,
                    "presignature_id": r.presignature_id,
                    "signing_micros": r.signing_micros,
                })
            );
        } else {
            println!("{}", hex::encode(&signature));
            eprintln!(
                "{scheme} signature by {} ({}, {:.1} ms), request {request_id}",
                r.signers.join(", "),
                r.mode,
                r.signing_micros as f64 / 1000.0
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}
