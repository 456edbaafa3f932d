//! `custos-coordinator`: the coordinator daemon.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::Parser;
use custos_coordinator::audit::AuditTrail;
use custos_coordinator::auth::{Authenticator, Identity, Role};
use custos_coordinator::cluster::{Cluster, Settings};
use custos_coordinator::config::CoordinatorConfig;
use custos_coordinator::db::Db;
use custos_coordinator::service::CustodyService;
use custos_coordinator::signers::Signers;
use custos_coordinator::withdrawal::assets::default_assets;
use custos_coordinator::withdrawal::bundle::PolicyHolder;
use custos_coordinator::withdrawal::store::WithdrawalStore;
use custos_coordinator::withdrawal::{Engine, FlowSettings};
use custos_hsm::LogSignerConfig;
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
    #[arg(long, short, env = "CUSTOS_COORDINATOR_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// JSON logs.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Prints the audit log's verifier key (C2SP note key) for signers'
    /// `[cosigner] log_key` and auditors' `--log-key`; creates the key if absent.
    LogKey,
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

/// The log-signing key config: the configured one, or a development default
/// sealed in the data dir with a generated passphrase.
fn log_signer_config(
    cfg: &CoordinatorConfig,
    path: &std::path::Path,
    data_dir: &std::path::Path,
) -> Result<LogSignerConfig, Fatal> {
    match &cfg.audit.signer {
        Some(LogSignerConfig::Software {
            key_file,
            passphrase_file,
            passphrase_env,
            create_key,
            kdf,
        }) => Ok(LogSignerConfig::Software {
            key_file: resolve(path, key_file),
            passphrase_file: passphrase_file.as_ref().map(|p| resolve(path, p)),
            passphrase_env: passphrase_env.clone(),
            create_key: *create_key,
            kdf: *kdf,
        }),
        Some(other) => Ok(other.clone()),
        None => {
            let pass = data_dir.join("log-key.pass");
            if !pass.exists() {
                let mut b = [0u8; 32];
                rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut b);
                custos_fsutil::write_atomic(
                    &pass,
                    hex::encode(b).as_bytes(),
                    custos_fsutil::PRIVATE_MODE,
                )
                .with_context(|| format!("cannot write {}", pass.display()))
                .map_err(config_error)?;
            }
            Ok(LogSignerConfig::Software {
                key_file: data_dir.join("log-key.sealed"),
                passphrase_file: Some(pass),
                passphrase_env: None,
                create_key: true,
                kdf: None,
            })
        }
    }
}

fn open_log_key(
    cfg: &CoordinatorConfig,
    path: &std::path::Path,
    data_dir: &std::path::Path,
) -> Result<Arc<dyn custos_audit::LogSigner>, Fatal> {
    let c = log_signer_config(cfg, path, data_dir)?;
    let signer = custos_hsm::open_log_signer(&c)
        .map_err(|e| config_error(anyhow!("config field `audit.signer`: {e}")))?;
    Ok(Arc::from(signer))
}

async fn run(args: Args) -> Result<(), Fatal> {
    let path = &args
        .config
        .clone()
        .ok_or_else(|| config_error(anyhow!("--config FILE is required")))?;
    let cfg: CoordinatorConfig = config::load(path, config::process_env()).map_err(config_error)?;
    if let Some(Command::LogKey) = args.command {
        let data_dir = resolve(path, &cfg.data_dir);
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create data_dir {}", data_dir.display()))
            .map_err(config_error)?;
        let signer = open_log_key(&cfg, path, &data_dir)?;
        let key = custos_audit::note::VerifierKey::from_signer(
            &cfg.audit.origin,
            custos_audit::note::SIG_TYPE_ED25519,
            signer.as_ref(),
        )
        .map_err(|e| Fatal(1, anyhow!("log key: {e}")))?;
        println!("{key}");
        return Ok(());
    }
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

    let db = match &cfg.database_url {
        Some(url) => Db::connect(url).await,
        None => Db::open(&data_dir).await,
    }
    .map_err(|e| Fatal(1, anyhow!("database: {e}")))?;
    let mut clients = vec![(
        token.clone(),
        Identity {
            id: "admin".into(),
            roles: vec![Role::Admin],
        },
    )];
    for (i, c) in cfg.auth.clients.iter().enumerate() {
        if !custos_service::daemon::is_valid_id(&c.id) {
            return Err(config_error(anyhow!(
                "config field `auth.clients[{i}].id`: {:?} is not a valid id",
                c.id
            )));
        }
        let p = resolve(path, &c.token_file);
        let t = std::fs::read_to_string(&p)
            .with_context(|| {
                format!(
                    "config field `auth.clients[{i}].token_file`: {}",
                    p.display()
                )
            })
            .map_err(config_error)?
            .trim()
            .to_owned();
        if t.len() < 16 {
            return Err(config_error(anyhow!(
                "config field `auth.clients[{i}].token_file`: token shorter than 16 characters"
            )));
        }
        clients.push((
            t,
            Identity {
                id: c.id.clone(),
                roles: c.roles.clone(),
            },
        ));
    }
    let authenticator = Authenticator::new(clients);
    let log_signer = open_log_key(&cfg, path, &data_dir)?;
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
            aux_info_timeout: Duration::from_secs(cfg.aux_info_timeout_secs),
            lock_after_failures: cfg.lock_after_failures,
            lock_window: Duration::from_secs(cfg.lock_window_secs),
        },
    );
    tokio::spawn(cluster.clone().ensure_aux());
    tokio::spawn(cluster.clone().refill_pool());

    let service_db = custos_service::db::Db {
        pool: cluster.db.pool().clone(),
        backend: cluster.db.backend(),
    };
    let log = custos_audit::shared::SharedLog::open(service_db, &cfg.audit.origin)
        .await
        .map_err(|e| Fatal(1, anyhow!("audit log: {e}")))?;
    let audit = Arc::new(
        AuditTrail::new(log, log_signer, cluster.signers.clone())
            .map_err(|e| Fatal(1, anyhow!("audit log: {e}")))?,
    );
    tracing::info!(log_key = %audit.verifier_key(), "audit log open");
    cluster.set_audit(audit.clone());
    tokio::spawn(
        audit
            .clone()
            .run_checkpointer(Duration::from_millis(cfg.audit.checkpoint_ms.max(100))),
    );
    // --- adapters (ledger, outbox, reports) ---
    // Ledger/outbox schemas, the event dispatcher (NATS when `[events] nats_url`
    // is set, webhooks always), and the hooks attached to the withdrawal store
    // below; the HTTP port serves the adapter routes and metrics.
    let adapters = Arc::new(
        custos_coordinator::adapters::Adapters::start(
            &cluster.db,
            authenticator.clone(),
            &cfg.ledger,
            &cfg.events,
        )
        .await
        .map_err(|e| match e {
            custos_coordinator::error::CoordError::InvalidArgument(m) => {
                config_error(anyhow!("config field {m}"))
            }
            other => Fatal(1, anyhow!("adapters: {other}")),
        })?,
    );
    // --- end adapters ---
    let engine = match &cfg.policy {
        None => {
            tracing::warn!("no [policy] configured: the withdrawal API refuses every request");
            None
        }
        Some(p) => {
            let now = custos_policy::Timestamp(
                i64::try_from(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0),
                )
                .unwrap_or(0),
            );
            // A bundle used for the first time is logged before it takes effect.
            if let Some(entry) = custos_coordinator::withdrawal::bundle::activation_entry(
                cluster.db.pool(),
                &resolve(path, &p.document),
                &resolve(path, &p.signatures),
            )
            .await
            .map_err(|e| config_error(anyhow!("{e}")))?
            {
                audit
                    .append(entry)
                    .await
                    .map_err(|e| Fatal(1, anyhow!("{e}")))?;
            }
            let holder = PolicyHolder::load(
                cluster.db.pool(),
                &resolve(path, &p.document),
                &resolve(path, &p.signatures),
                &resolve(path, &p.admins),
                now,
            )
            .await
            .map_err(|e| config_error(anyhow!("{e}")))?;
            let model = custos_risk::RiskModel::new(cfg.risk.clone())
                .map_err(|e| config_error(anyhow!("config field `risk`: {e}")))?;
            // adapters: ledger and outbox hooks run in every transition's transaction.
            let store = adapters.attach(WithdrawalStore::new(cluster.db.pool().clone()));
            let risk_state = Engine::rebuild_risk_state(&store, &model)
                .await
                .map_err(|e| Fatal(1, anyhow!("risk history: {e}")))?;
            let assets = if cfg.assets.is_empty() {
                default_assets()
            } else {
                cfg.assets.clone()
            };
            let engine = Engine::new(
                store,
                cluster.clone(),
                holder,
                model,
                risk_state,
                audit.clone(),
                assets,
                FlowSettings {
                    tick: Duration::from_millis(cfg.withdrawals.tick_ms.max(50)),
                    lock_margin: Duration::from_secs(cfg.withdrawals.lock_margin_secs),
                },
            );
            let chains =
                custos_coordinator::chain::Chains::new(&cfg.chains, cluster.db.pool().clone())
                    .map_err(|e| config_error(anyhow!("{e}")))?;
            chains
                .check_nodes()
                .await
                .map_err(|e| config_error(anyhow!("{e}")))?;
            engine.set_chains(Arc::new(chains));
            tokio::spawn(engine.clone().run());
            Some(engine)
        }
    };

    let http = tokio::net::TcpListener::bind(cfg.http_listen)
        .await
        .with_context(|| format!("config field `http_listen` {}", cfg.http_listen))
        .map_err(config_error)?;
    // adapters: /healthz and /metrics (plus adapter metrics) and the /v1 REST routes.
    tokio::spawn(adapters.serve_http(
        http,
        Arc::new(CoordinatorHealth {
            cluster: cluster.clone(),
            audit: audit.clone(),
            engine: engine.clone(),
        }),
    ));

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<CustodyServer<CustodyService>>()
        .await;
    let custody = CustodyServer::with_interceptor(
        CustodyService::new(cluster, engine, audit, cfg.dev.allow_sign_digest),
        move |req: tonic::Request<()>| authenticator.authenticate(req),
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

struct CoordinatorHealth {
    cluster: Arc<Cluster>,
    audit: Arc<AuditTrail>,
    engine: Option<Arc<Engine>>,
}

impl custos_service::http::Health for CoordinatorHealth {
    fn ready(&self) -> Result<(), String> {
        if !self.audit.healthy() {
            return Err("audit log unwritable: withdrawals stopped".into());
        }
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
        out.push_str(&custos_coordinator::stages::metrics_text());
        out.push_str(&format!(
            "# TYPE custos_audit_appends_total counter\ncustos_audit_appends_total {}\n\
             # TYPE custos_audit_append_failures_total counter\ncustos_audit_append_failures_total {}\n\
             # TYPE custos_audit_healthy gauge\ncustos_audit_healthy {}\n",
            self.audit.appends.load(Ordering::Relaxed),
            self.audit.append_failures.load(Ordering::Relaxed),
            u8::from(self.audit.healthy()),
        ));
        if let Some(e) = &self.engine {
            out.push_str("# TYPE custos_withdrawals gauge\n");
            for (state, n) in e.state_counts() {
                out.push_str(&format!("custos_withdrawals{{state=\"{state}\"}} {n}\n"));
            }
        }
        out
    }
}
