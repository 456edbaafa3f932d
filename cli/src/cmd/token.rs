//! `custos token create|list|revoke`: the coordinator's API tokens.
//!
//! The tokens live hashed in the coordinator's token store file (`[auth]
//! token_store`, custos-credentials); these commands edit that file on the
//! coordinator's host, under its lock, and the running coordinator picks up
//! the change within `auth.token_reload_ms` (default 1 s): rotation is
//! create, switch the client over, revoke the old token, with no restart.
//! A token is printed once, by `create`; nothing can show it again.
//!
//! `create --cert FILE` registers a backend's TLS client certificate instead
//! (mTLS, with the coordinator's `[auth] client_ca`): the store pins that
//! exact certificate's SHA-256 with the client, roles and expiry; it is
//! listed and revoked like a token, and nothing secret is printed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use custos_credentials::{TokenRecord, TokenStatus, now_unix, rfc3339};
use serde_json::json;

/// `custos token ...`.
#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Create an API token for a client and print it (once), or with --cert
    /// register the client's TLS certificate instead.
    Create(CreateArgs),
    /// List the tokens in the store (ids, clients, roles, expiry, status; never a token).
    List(ListArgs),
    /// Revoke a token by id: the coordinator refuses it from its next store reload (about 1 s).
    Revoke(RevokeArgs),
}

/// Which token store to edit.
#[derive(clap::Args, Clone, Debug)]
pub struct StoreArgs {
    /// The coordinator's token store (its config's `auth.token_store`).
    #[arg(long, value_name = "FILE")]
    store: Option<PathBuf>,
    /// Dev cluster directory (`custos dev up`), instead of --store: its coordinator's store.
    #[arg(long, value_name = "DIR", default_value = custos_devkit::DEFAULT_DIR)]
    cluster: PathBuf,
}

impl StoreArgs {
    fn path(&self) -> anyhow::Result<PathBuf> {
        if let Some(p) = &self.store {
            return Ok(p.clone());
        }
        let layout = custos_devkit::ClusterLayout::load(&self.cluster).with_context(|| {
            format!(
                "--cluster {}: no dev cluster there (use --store FILE, the coordinator's `auth.token_store`)",
                self.cluster.display()
            )
        })?;
        Ok(layout.coordinator.token_store)
    }
}

/// Arguments of `custos token create`.
#[derive(clap::Args)]
pub struct CreateArgs {
    /// Client id the token authenticates as (recorded as initiator).
    #[arg(long)]
    client: String,
    /// A role of the token: admin, backend, approver, auditor (repeatable).
    #[arg(long = "role", value_name = "ROLE", required = true)]
    roles: Vec<String>,
    /// Validity from now, e.g. `90d`, `12h`.
    #[arg(long, value_name = "DURATION", default_value = "90d", value_parser = humantime::parse_duration)]
    expires_in: Duration,
    /// No expiry (not recommended; revoke it when it is no longer needed).
    #[arg(long, conflicts_with = "expires_in")]
    no_expiry: bool,
    /// Free text kept with the token (who holds it, what for).
    #[arg(long)]
    note: Option<String>,
    /// Register this TLS client certificate (PEM) instead of creating a
    /// token: the client then calls the gRPC API with the certificate and
    /// its key and no token (the coordinator needs `[auth] client_ca`, the
    /// CA that issued it).
    #[arg(long, value_name = "FILE")]
    cert: Option<PathBuf>,
    /// Print JSON (the token included: handle the output as a secret).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
}

/// Arguments of `custos token list`.
#[derive(clap::Args)]
pub struct ListArgs {
    /// Only this client's tokens.
    #[arg(long)]
    client: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
}

/// Arguments of `custos token revoke`.
#[derive(clap::Args)]
pub struct RevokeArgs {
    /// Token id (16 hex digits, as `custos token list` shows it).
    id: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
}

fn record_json(r: &TokenRecord, now: i64) -> serde_json::Value {
    json!({
        "id": r.id,
        "kind": r.kind,
        "client": r.client,
        "roles": r.roles,
        "created_at": rfc3339(r.created_at),
        "expires_at": r.expires_at.map(rfc3339),
        "revoked_at": r.revoked_at.map(rfc3339),
        "status": r.status(now),
        "note": r.note,
    })
}

fn status_word(s: TokenStatus) -> &'static str {
    match s {
        TokenStatus::Active => "active",
        TokenStatus::Expired => "expired",
        TokenStatus::Revoked => "revoked",
    }
}

/// Runs a `custos token` subcommand.
pub fn run(command: TokenCommand) -> anyhow::Result<ExitCode> {
    let now = now_unix();
    match command {
        TokenCommand::Create(a) => {
            let path = a.store.path()?;
            let expires_at = if a.no_expiry {
                None
            } else {
                let secs = i64::try_from(a.expires_in.as_secs()).unwrap_or(i64::MAX);
                if secs == 0 {
                    bail!("--expires-in must be longer than a second");
                }
                Some(now.saturating_add(secs))
            };
            if let Some(cert) = &a.cert {
                let pem = std::fs::read(cert)
                    .with_context(|| format!("--cert {}: cannot read it", cert.display()))?;
                let der = custos_credentials::certificate_der(&pem)
                    .map_err(|e| anyhow::anyhow!("--cert {}: {e}", cert.display()))?;
                let record = custos_credentials::update(&path, true, |s| {
                    s.pin_certificate(&a.client, &a.roles, &der, now, expires_at, a.note.clone())
                })
                .with_context(|| {
                    format!("cannot register the certificate in {}", path.display())
                })?;
                if a.json {
                    println!("{}", record_json(&record, now));
                } else {
                    println!(
                        "certificate {} (sha256:{}) for client {} ({})\nexpires   {}\nstore     {}",
                        record.id,
                        record.sha256,
                        record.client,
                        record.roles.join(", "),
                        record
                            .expires_at
                            .map(rfc3339)
                            .unwrap_or_else(|| "never".into()),
                        path.display()
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            let (record, token) = custos_credentials::update(&path, true, |s| {
                s.issue(&a.client, &a.roles, now, expires_at, a.note.clone())
            })
            .with_context(|| format!("cannot create a token in {}", path.display()))?;
            if a.json {
                let mut v = record_json(&record, now);
                v["token"] = json!(token.expose());
                println!("{v}");
            } else {
                println!(
                    "token {} for client {} ({})",
                    record.id,
                    record.client,
                    record.roles.join(", ")
                );
                println!(
                    "expires   {}",
                    record
                        .expires_at
                        .map(rfc3339)
                        .unwrap_or_else(|| "never".into())
                );
                println!("store     {}", path.display());
                println!();
                println!("{}", token.expose());
                println!();
                println!("This is the only time the token is shown: hand it to the client now.");
            }
        }
        TokenCommand::List(a) => {
            let path = a.store.path()?;
            let store = custos_credentials::TokenStore::load(&path)?;
            let rows: Vec<&TokenRecord> = store
                .tokens
                .iter()
                .filter(|t| a.client.as_ref().is_none_or(|c| *c == t.client))
                .collect();
            if a.json {
                let v: Vec<_> = rows.iter().map(|r| record_json(r, now)).collect();
                println!("{}", serde_json::Value::Array(v));
            } else if rows.is_empty() {
                println!("no tokens in {}", path.display());
            } else {
                println!(
                    "{:<16}  {:<11}  {:<20}  {:<16}  {:<8}  {:<20}  note",
                    "id", "kind", "client", "roles", "status", "expires"
                );
                for r in rows {
                    let kind = match r.kind {
                        custos_credentials::CredentialKind::Token => "token",
                        custos_credentials::CredentialKind::Certificate => "certificate",
                    };
                    println!(
                        "{:<16}  {kind:<11}  {:<20}  {:<16}  {:<8}  {:<20}  {}",
                        r.id,
                        r.client,
                        r.roles.join(","),
                        status_word(r.status(now)),
                        r.expires_at.map(rfc3339).unwrap_or_else(|| "never".into()),
                        r.note.as_deref().unwrap_or("")
                    );
                }
            }
        }
        TokenCommand::Revoke(a) => {
            let path = a.store.path()?;
            let record = custos_credentials::update(&path, false, |s| s.revoke(&a.id, now))
                .with_context(|| format!("cannot revoke in {}", path.display()))?;
            if a.json {
                println!("{}", record_json(&record, now));
            } else {
                println!(
                    "revoked token {} of client {}: the coordinator refuses it from its next store reload",
                    record.id, record.client
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
