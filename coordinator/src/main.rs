//! `custos-coordinator`: the coordinator daemon.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::Parser;
use custos_coordinator::cluster::{Cluster, Settings};
use custos_coordinator::config::CoordinatorConfig;
use custos_coordinator::db::Db;
use custos_coordinator::service::CustodyService;
use custos_coordinator::signers::Signers;
use custos_proto::custody::custody_server::CustodyServer;
use custos_service::config::{self, resolve};
use tonic::transport::{Server, ServerTlsConfig};

#[derive(Parser)]
#[command(
    name = "custos-coordinator",
    version,
    about = "Custos coordinator: orchestrates the threshold signer group"
)]
struct Args {
    /// Config file (TOML); every field can be overridden by CUSTOS_* env vars.
    #[arg(long, short, env = "CUSTOS_COORDINATOR_CONFIG")]
    config: PathBuf,
    /// JSON logs.
    #[arg(long)]
    log_json: bool,
}

struct Fatal(u8, anyhow::Error);

fn config_error(e: impl Into<anyhow::Error>) -> Fatal {
    Fatal(custos_service::EXIT_CONFIG, e.into())
}

fn main() -> ExitCode {
    let args = Args::parse();
    custos_service::init_logging(args.log_json);
    custos_service::daemon::run_main(async {
        run(args)
            .await
            .map_err(|Fatal(code, e)| (code, format!("{e:#}")))
    })
}

async fn run(args: Args) -> Result<(), Fatal> {
    let path = &args.config;
    let cfg: CoordinatorConfig = config::load(path, config::process_env()).map_err(config_error)?;
    if cfg.signers.is_empty() {
        return Err(config_error(anyhow!(
            "config field `signers`: at least two signers are required"
        )));
    }
    let data_dir = resolve(path, &cfg.data_dir);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data_dir {}", data_dir.display()))
        .map_err(config_error)?;
    let token_path = resolve(path, &cfg.auth.admin_token_file);
    let token = std::fs::read_to_string(&token_path)
        .with_context(|| {
            format!(
                "config field `auth.admin_token_file`: {}",
                token_path.display()
            )
        })
        .map_err(config_error)?
        .trim()
        .to_owned();
    if token.len() < 16 {
        return Err(config_error(anyhow!(
            "config field `auth.admin_token_file`: token shorter than 16 characters"
        )));
    }
    let tls = &cfg.tls;
    let server_id = custos_service::tls::identity(
        "tls.cert/tls.key",
        &resolve(path, &tls.cert),
        &resolve(path, &tls.key),
    )
    .map_err(config_error)?;
    let client_id = custos_service::tls::identity(
        "tls.client_cert/tls.client_key",
        &resolve(path, &tls.client_cert),
        &resolve(path, &tls.client_key),
    )
    .map_err(config_error)?;
    let signer_ca =
        custos_service::tls::certificate("tls.signer_ca", &resolve(path, &tls.signer_ca))
            .map_err(config_error)?;

    let db = Db::open(&data_dir)
        .await
        .map_err(|e| Fatal(1, anyhow!("database: {e}")))?;
    let stale = db
        .fail_stale_presigs()
        .await
        .map_err(|e| Fatal(1, anyhow!("database: {e}")))?;
    if stale > 0 {
        tracing::warn!(
            stale,
            "presignatures interrupted by a restart were discarded"
        );
    }
    let signers = Arc::new(Signers::new(&cfg.signers, signer_ca, client_id).map_err(config_error)?);
    signers.spawn_prober();
    let cluster = Cluster::new(
        db,
        signers,
        Settings {
            default_threshold: cfg.default_threshold,
            pool_target: cfg.presignature_pool,
            partial_timeout: Duration::from_secs(cfg.partial_timeout_secs),
            session_timeout: Duration::from_secs(cfg.session_timeout_secs),
        },
    );
    tokio::spawn(cluster.clone().ensure_aux());
    tokio::spawn(cluster.clone().refill_pool());

    let http = tokio::net::TcpListener::bind(cfg.http_listen)
        .await
        .with_context(|| format!("config field `http_listen` {}", cfg.http_listen))
        .map_err(config_error)?;
    tokio::spawn(custos_service::http::serve(
        http,
        Arc::new(CoordinatorHealth {
            cluster: cluster.clone(),
        }),
        std::future::pending(),
    ));

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<CustodyServer<CustodyService>>()
        .await;
    let expected = format!("Bearer {token}");
    let custody = CustodyServer::with_interceptor(
        CustodyService::new(cluster),
        move |req: tonic::Request<()>| {
            let ok = req
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| constant_eq(v, &expected));
            if ok {
                Ok(req)
            } else {
                Err(tonic::Status::unauthenticated(
                    "missing or wrong admin token (authorization: Bearer ...)",
                ))
            }
        },
    );
    let shutdown = custos_service::daemon::shutdown_signal();
    tracing::info!(grpc = %cfg.grpc_listen, http = %cfg.http_listen, "coordinator started");
    println!(
        "custos-coordinator ready: grpc {} http {}",
        cfg.grpc_listen, cfg.http_listen
    );
    Server::builder()
        .tls_config(ServerTlsConfig::new().identity(server_id))
        .map_err(|e| config_error(anyhow!("tls: {e}")))?
        .add_service(health_service)
        .add_service(custody)
        .serve_with_shutdown(cfg.grpc_listen, shutdown)
        .await
        .with_context(|| format!("gRPC API on {}", cfg.grpc_listen))
        .map_err(|e| Fatal(1, e))?;
    Ok(())
}

/// Compares without an early exit, so timing does not reveal the token.
fn constant_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

struct CoordinatorHealth {
    cluster: Arc<Cluster>,
}

impl custos_service::http::Health for CoordinatorHealth {
    fn ready(&self) -> Result<(), String> {
        match self.cluster.aux_state().as_str() {
            "ready" => Ok(()),
            other => Err(format!("aux info {other}")),
        }
    }
    fn metrics(&self) -> String {
        let m = &self.cluster.metrics;
        let reachable = self
            .cluster
            .signers
            .all
            .iter()
            .filter(|s| s.health().reachable)
            .count();
        let mut out = format!(
            "# TYPE custos_signatures_total counter\ncustos_signatures_total {}\n\
             # TYPE custos_sign_failures_total counter\ncustos_sign_failures_total {}\n\
             # TYPE custos_presignatures_generated_total counter\ncustos_presignatures_generated_total {}\n\
             # TYPE custos_presign_failures_total counter\ncustos_presign_failures_total {}\n\
             # TYPE custos_signers_reachable gauge\ncustos_signers_reachable {reachable}\n",
            m.signatures.load(Ordering::Relaxed),
            m.sign_failures.load(Ordering::Relaxed),
            m.presignatures.load(Ordering::Relaxed),
            m.presign_failures.load(Ordering::Relaxed),
        );
        out.push_str(&m.histogram_text());
        out
    }
}
