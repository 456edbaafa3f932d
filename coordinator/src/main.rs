//! `custos-coordinator`: the coordinator daemon.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::Parser;
use custos_coordinator::adapters::Adapters;
use custos_coordinator::audit::AuditTrail;
use custos_coordinator::auth::Authenticator;
use custos_coordinator::cluster::{Cluster, Settings};
use custos_coordinator::config::{CoordinatorConfig, PolicyFiles};
use custos_coordinator::leadership::{Leadership, Lease, LeaseFence};
use custos_coordinator::service::CustodyService;
use custos_coordinator::signers::Signers;
use custos_coordinator::withdrawal::assets::default_assets;
use custos_coordinator::withdrawal::bundle::PolicyHolder;
use custos_coordinator::withdrawal::store::WithdrawalStore;
use custos_coordinator::withdrawal::{Engine, FlowSettings};
use custos_hsm::LogSignerConfig;
use custos_proto::custody::custody_server::CustodyServer;
use custos_service::config::{self, resolve};
use custos_service::daemon::{
    CallCounter, CancellationToken, Drain, Readiness, Tasks, serve_until_signal,
};
use custos_service::http::ApiListener;
use custos_service::limits::{ClientOf, Guard, Protocol};
use custos_service::standby::{Leader, LeaderView};
use tonic::service::interceptor::InterceptedService;
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
    path: &Path,
    data_dir: &Path,
) -> Result<LogSignerConfig, Fatal> {
    match &cfg.audit.signer {
        Some(LogSignerConfig::Software {
            key_file,
            passphrase_file,
            passphrase_env,
            unseal,
            create_key,
            kdf,
        }) => Ok(LogSignerConfig::Software {
            key_file: resolve(path, key_file),
            passphrase_file: passphrase_file.as_ref().map(|p| resolve(path, p)),
            passphrase_env: passphrase_env.clone(),
            unseal: *unseal,
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
                unseal: custos_hsm::UnsealMode::Auto,
                create_key: true,
                kdf: None,
            })
        }
    }
}

/// The log key and, for a software key, its sealer (which also seals the
/// coordinator's TLS keys).
type LogKey = (
    Arc<dyn custos_audit::LogSigner>,
    Option<Box<dyn custos_hsm::Sealer>>,
);

async fn open_log_key(
    cfg: &CoordinatorConfig,
    path: &Path,
    data_dir: &Path,
) -> Result<LogKey, Fatal> {
    let c = log_signer_config(cfg, path, data_dir)?;
    let opened = if c.unseal_mode() == custos_hsm::UnsealMode::Auto {
        custos_hsm::open_log_key(&c, None)
            .map_err(|e| config_error(anyhow!("config field `audit.signer`: {e}")))?
    } else {
        // `unseal = "ceremony"`: wait sealed for operators (`custos unseal`).
        let socket = cfg
            .unseal_socket
            .as_ref()
            .map(|s| resolve(path, s))
            .unwrap_or_else(|| data_dir.join(custos_service::unseal::SOCKET_NAME));
        custos_service::unseal::wait_for_unseal("coordinator", &socket, cfg.metrics.listen, |p| {
            custos_hsm::open_log_key(&c, Some(p)).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| Fatal(1, e.into()))?
    };
    Ok((Arc::from(opened.signer), opened.sealer))
}

/// The node id the coordinator's own key files are sealed under.
const COORDINATOR_NODE_ID: &str = "coordinator";

/// Reads one of the coordinator's TLS private keys (`field`), sealing it in
/// place with the log key's sealer first if it is plain and
/// `seal_key_files` is on.
fn open_key_file(
    cfg: &CoordinatorConfig,
    sealer: Option<&dyn custos_hsm::Sealer>,
    field: &str,
    purpose: &str,
    file: &Path,
) -> Result<zeroize::Zeroizing<Vec<u8>>, Fatal> {
    let read_plain = || {
        std::fs::read(file)
            .map(zeroize::Zeroizing::new)
            .with_context(|| format!("config field `{field}`: {}", file.display()))
            .map_err(config_error)
    };
    let Some(sealer) = sealer.filter(|_| cfg.seal_key_files) else {
        if cfg.seal_key_files {
            tracing::warn!(file = %file.display(), "the log key is on a token: TLS key files stay plain");
        }
        return read_plain();
    };
    let (bytes, state) =
        custos_hsm::open_key_file(sealer, COORDINATOR_NODE_ID, purpose, file, 64 * 1024, true)
            .map_err(|e| config_error(anyhow!("config field `{field}`: {e}")))?;
    if state == custos_hsm::KeyFileState::SealedNow {
        tracing::info!(file = %file.display(), purpose, "key file sealed in place with the log key's sealer");
    }
    Ok(bytes)
}

async fn run(args: Args) -> Result<(), Fatal> {
    let path = &args
        .config
        .clone()
        .ok_or_else(|| config_error(anyhow!("--config FILE is required")))?;
    let cfg: CoordinatorConfig = config::load(path, config::process_env()).map_err(config_error)?;
    cfg.check_build(custos_coordinator::BUILD_MODE)
        .map_err(config_error)?;
    if let Some(Command::LogKey) = args.command {
        return print_log_key(&cfg, path).await;
    }
    if cfg.signers.is_empty() {
        return Err(config_error(anyhow!(
            "config field `signers`: at least two signers are required"
        )));
    }
    let stop = CancellationToken::new();
    let Some(mut parts) = build(&cfg, path, &stop).await? else {
        tracing::info!("standby stopped");
        return Ok(());
    };
    let leadership = parts.leadership.clone();
    let holder = parts.holder.take();
    let served = serve(parts, &cfg, stop).await;
    if let Some(h) = holder {
        h.release(&leadership).await;
    }
    served
}

/// The task renewing the lease of an active coordinator.
struct Holder {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Lease>,
}

impl Holder {
    /// Renews `lease` for `leadership` until [`Holder::release`]. If the
    /// leadership is lost, the process exits at once with
    /// [`custos_service::EXIT_LEASE_LOST`]: every engine loop, signing round
    /// and checkpoint stops with it, and its supervisor restarts it as a
    /// standby. Requests already on their way carry the old epoch, which
    /// signers refuse once they have seen the new leader's.
    fn start(leadership: Arc<Leadership>, lease: Lease, renew: Duration) -> Self {
        let stop = CancellationToken::new();
        let hold_stop = stop.clone();
        let task = tokio::spawn(async move {
            if let Some(reason) = leadership.hold(&lease, renew, hold_stop).await {
                tracing::error!(
                    epoch = leadership.epoch(),
                    %reason,
                    "lost the leadership lease: this coordinator stops acting now (exit {}; its supervisor restarts it as a standby)",
                    custos_service::EXIT_LEASE_LOST
                );
                std::process::exit(i32::from(custos_service::EXIT_LEASE_LOST));
            }
            lease
        });
        Self { stop, task }
    }

    /// Stops renewing and gives the lease up, so a standby takes over at
    /// its next poll (a clean shutdown).
    async fn release(self, leadership: &Leadership) {
        self.stop.cancel();
        let Ok(lease) = self.task.await else {
            return;
        };
        if !leadership.is_active() {
            return;
        }
        match lease.release(leadership.epoch()).await {
            Ok(true) => tracing::info!(epoch = leadership.epoch(), "leadership lease released"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "leadership lease not released: it expires by itself")
            }
        }
    }
}

/// `custos-coordinator log-key`.
async fn print_log_key(cfg: &CoordinatorConfig, path: &Path) -> Result<(), Fatal> {
    let data_dir = data_dir(cfg, path)?;
    let (signer, _) = open_log_key(cfg, path, &data_dir).await?;
    let key = custos_audit::note::VerifierKey::from_signer(
        &cfg.audit.origin,
        custos_audit::note::SIG_TYPE_ED25519,
        signer.as_ref(),
    )
    .map_err(|e| Fatal(1, anyhow!("log key: {e}")))?;
    println!("{key}");
    Ok(())
}

fn data_dir(cfg: &CoordinatorConfig, path: &Path) -> Result<PathBuf, Fatal> {
    let data_dir = resolve(path, &cfg.data_dir);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data_dir {}", data_dir.display()))
        .map_err(config_error)?;
    Ok(data_dir)
}

/// Everything the coordinator serves, built and checked before it listens.
struct Parts {
    /// Whether this coordinator may act (always, with SQLite), and its epoch.
    leadership: Arc<Leadership>,
    /// The lease renewal (PostgreSQL).
    holder: Option<Holder>,
    cluster: Arc<Cluster>,
    audit: Arc<AuditTrail>,
    adapters: Arc<Adapters>,
    engine: Option<Arc<Engine>>,
    authenticator: Authenticator,
    /// The gRPC API's TLS: its certificate, and the CA of the client
    /// certificates it asks for (optional: tokens work without one).
    grpc_tls: ServerTlsConfig,
    http: ApiListener,
    metrics: tokio::net::TcpListener,
}

/// Reads the config's files, opens the database and the audit log, starts
/// the adapters and wires the engine (which starts no step once `stop` is
/// cancelled). Spawns nothing that runs on: [`serve`] does.
async fn build(
    cfg: &CoordinatorConfig,
    path: &Path,
    stop: &CancellationToken,
) -> Result<Option<Parts>, Fatal> {
    let data_dir = data_dir(cfg, path)?;
    let authenticator = authenticator(cfg, path)?;
    let (log_signer, key_sealer) = open_log_key(cfg, path, &data_dir).await?;
    let tls = &cfg.tls;
    let server_key = open_key_file(
        cfg,
        key_sealer.as_deref(),
        "tls.key",
        "tls-key",
        &resolve(path, &tls.key),
    )?;
    let server_id = custos_service::tls::identity_with_key(
        "tls.cert/tls.key",
        &resolve(path, &tls.cert),
        &server_key,
    )
    .map_err(config_error)?;
    let mut grpc_tls = ServerTlsConfig::new().identity(server_id);
    if let Some(ca) = &cfg.auth.client_ca {
        let ca = custos_service::tls::certificate("auth.client_ca", &resolve(path, ca))
            .map_err(config_error)?;
        grpc_tls = grpc_tls.client_ca_root(ca).client_auth_optional(true);
    }
    let client_key = open_key_file(
        cfg,
        key_sealer.as_deref(),
        "tls.client_key",
        "tls-client-key",
        &resolve(path, &tls.client_key),
    )?;
    let client_id = custos_service::tls::identity_with_key(
        "tls.client_cert/tls.client_key",
        &resolve(path, &tls.client_cert),
        &client_key,
    )
    .map_err(config_error)?;
    let signer_ca =
        custos_service::tls::certificate("tls.signer_ca", &resolve(path, &tls.signer_ca))
            .map_err(config_error)?;
    // The HTTP API takes the same tokens as gRPC: TLS with the same
    // certificate, plain only in a dev cluster that asks for it.
    let plain_http = cfg.dev.plain_http && custos_coordinator::BUILD_MODE.allows_dev();
    let http_tls = if plain_http {
        None
    } else {
        Some(
            custos_service::tls::server_config_with_key(
                "tls.cert/tls.key",
                &resolve(path, &tls.cert),
                &resolve(path, &tls.key),
                &server_key,
            )
            .map_err(config_error)?,
        )
    };

    // Several coordinators on PostgreSQL: wait as a standby until this one
    // holds the lease; nothing below runs (no schema change, no recovery
    // of interrupted work) before it does.
    let (leadership, holder) = match cfg.database_url.as_deref() {
        Some(url)
            if custos_service::db::Backend::of_url(url)
                == Some(custos_service::db::Backend::Postgres) =>
        {
            let Some((leadership, lease)) =
                stand_by(cfg, url, &grpc_tls, http_tls.clone(), plain_http).await?
            else {
                return Ok(None);
            };
            let holder = Holder::start(
                leadership.clone(),
                lease,
                Duration::from_millis(cfg.leadership.renew_ms),
            );
            (leadership, Some(holder))
        }
        _ => (Arc::new(Leadership::single()), None),
    };

    let db = match &cfg.database_url {
        Some(url) => custos_coordinator::storage::connect(url).await,
        None => custos_coordinator::storage::open(&data_dir).await,
    }
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
    let signers = Arc::new(
        Signers::new(&cfg.signers, signer_ca, client_id, leadership.clone())
            .map_err(config_error)?,
    );
    // The log comes before the cluster, which records key locks in it.
    let service_db = custos_service::db::Db {
        pool: db.pool().clone(),
        backend: db.backend(),
    };
    let log = custos_audit::shared::SharedLog::open(service_db, &cfg.audit.origin)
        .await
        .map_err(|e| Fatal(1, anyhow!("audit log: {e}")))?;
    let audit = Arc::new(
        AuditTrail::new(log, log_signer, signers.clone())
            .map_err(|e| Fatal(1, anyhow!("audit log: {e}")))?,
    );
    tracing::info!(log_key = %audit.verifier_key(), "audit log open");
    let cluster = Cluster::new(
        db,
        signers,
        audit.clone(),
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
    // --- adapters (ledger, outbox, reports) ---
    // Ledger/outbox schemas, the event dispatcher (NATS when `[events] nats_url`
    // is set, webhooks always), and the hooks attached to the withdrawal store
    // below; the HTTP port serves the adapter routes and metrics.
    let chains = Arc::new(
        custos_coordinator::chain::Chains::new(&cfg.chains, cluster.db.pool().clone())
            .map_err(|e| config_error(anyhow!("{e}")))?,
    );
    chains
        .check_nodes()
        .await
        .map_err(|e| config_error(anyhow!("{e}")))?;
    let adapters = Arc::new(
        Adapters::start(
            &cluster.db,
            authenticator.clone(),
            &cfg.ledger,
            &cfg.events,
            chains.clone(),
        )
        .await
        .map_err(|e| match e {
            custos_coordinator::error::CoordError::InvalidArgument { field, problem } => {
                config_error(anyhow!("config field {field}: {problem}"))
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
            Some(build_engine(cfg, path, p, (&cluster, &audit, &adapters), chains, stop).await?)
        }
    };

    let http = tokio::net::TcpListener::bind(cfg.http_listen)
        .await
        .with_context(|| format!("config field `http_listen` {}", cfg.http_listen))
        .map_err(config_error)?;
    let http = match http_tls {
        None => {
            tracing::warn!(listen = %cfg.http_listen, "DEV CLUSTER: HTTP API without TLS");
            ApiListener::plain(http)
        }
        Some(tls) => ApiListener::tls(http, tls),
    };
    let metrics = tokio::net::TcpListener::bind(cfg.metrics.listen)
        .await
        .with_context(|| format!("config field `metrics.listen` {}", cfg.metrics.listen))
        .map_err(config_error)?;
    Ok(Some(Parts {
        leadership,
        holder,
        cluster,
        audit,
        adapters,
        engine,
        authenticator,
        grpc_tls,
        http,
        metrics,
    }))
}

/// The API token store (`auth.token_store`). A config still naming
/// plain-text token files is refused with the way to migrate.
fn authenticator(cfg: &CoordinatorConfig, path: &Path) -> Result<Authenticator, Fatal> {
    let plain = cfg.auth.plain_text_fields();
    if let Some(field) = plain.first() {
        return Err(config_error(anyhow!(
            "config field `{field}`: plain-text API tokens are no longer accepted \
             (fields {}). Issue hashed tokens, shown once, with \
             `custos token create --store FILE --client ID --role ROLE` for the admin and \
             every client, set `auth.token_store = \"FILE\"`, remove {} and delete the old \
             token files (see the README, API tokens)",
            plain.join(", "),
            plain.join(" and "),
        )));
    }
    let Some(store) = &cfg.auth.token_store else {
        return Err(config_error(anyhow!(
            "config field `auth.token_store` is required: the hashed API token store \
             (`custos token create --store FILE ...`)"
        )));
    };
    Authenticator::open(&resolve(path, store))
        .map_err(|e| config_error(anyhow!("config field `auth.token_store`: {e}")))
}

/// The withdrawal engine for the policy bundle `p`: logs a bundle used for
/// the first time, rebuilds the risk history and checks the chain nodes.
async fn build_engine(
    cfg: &CoordinatorConfig,
    path: &Path,
    p: &PolicyFiles,
    (cluster, audit, adapters): (&Arc<Cluster>, &Arc<AuditTrail>, &Adapters),
    chains: Arc<custos_coordinator::chain::Chains>,
    stop: &CancellationToken,
) -> Result<Arc<Engine>, Fatal> {
    let now = custos_policy::Timestamp(custos_clock::now_secs());
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
    let mut store = adapters.attach(WithdrawalStore::new(cluster.db.pool().clone()));
    // Under a lease, every transition also checks it in its own transaction.
    let leadership = cluster.signers.leadership();
    if leadership.leased() {
        store = store.with_hook(Arc::new(LeaseFence::new(leadership.epoch())));
    }
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
        chains,
        assets,
        FlowSettings {
            tick: Duration::from_millis(cfg.withdrawals.tick_ms.max(50)),
            lock_margin: Duration::from_secs(cfg.withdrawals.lock_margin_secs),
        },
        stop.clone(),
    );
    Ok(engine)
}

/// How long closing takes at most once the drain is over: the event
/// dispatcher's round, the audit log's last append, the database pool.
const CLOSE_LIMIT: Duration = Duration::from_secs(1);

/// Starts the background tasks and the servers, runs until SIGTERM or
/// Ctrl-C (or until the gRPC server fails), then drains: no new calls,
/// calls and withdrawal steps in progress finish until
/// `drain_timeout_secs`, what is left is cut off and named; then the event
/// dispatcher, the audit log and the database are closed.
async fn serve(p: Parts, cfg: &CoordinatorConfig, stop: CancellationToken) -> Result<(), Fatal> {
    let mut tasks = Tasks::new(stop.clone());
    tasks
        .spawn_until_stopped("signer prober", p.cluster.signers.clone().probe_forever())
        // Aux info is set up once; a ceremony cut off is retried with a new
        // group at the next start (the signers abort theirs with the call).
        .spawn_until_stopped("aux-info setup", p.cluster.clone().ensure_aux())
        .spawn(
            "presignature refill",
            p.cluster.clone().refill_pool(stop.clone()),
        )
        .spawn(
            "checkpointer",
            p.audit.clone().run_checkpointer(
                custos_coordinator::audit::CheckpointPace {
                    longest: Duration::from_millis(cfg.audit.checkpoint_ms.max(100)),
                    entries: cfg.audit.checkpoint_entries.max(1),
                },
                stop.clone(),
            ),
        )
        .spawn_until_stopped("adapter gauges", p.adapters.refresh_gauges())
        .spawn(
            "API token store reload",
            p.authenticator.clone().watch(
                Duration::from_millis(cfg.auth.token_reload_ms.max(100)),
                stop.clone(),
            ),
        );
    if let Some(e) = &p.engine {
        tasks.spawn("withdrawal ticker", e.clone().run());
        // Deposits are logged and announced with the ledger off too (only
        // not posted): the audit log is the custody record.
        if e.chains().has_utxo() || e.chains().has_evm() {
            tasks.spawn_until_stopped(
                "deposit watcher",
                p.adapters.clone().credit_deposits_forever(
                    e.chains().clone(),
                    e.tokens(),
                    p.audit.clone(),
                    Duration::from_millis(cfg.ledger.deposit_scan_ms.max(100)),
                ),
            );
        }
    }
    let limits = cfg.limit_settings().map_err(config_error)?;
    let client_of: ClientOf = {
        let auth = p.authenticator.clone();
        Arc::new(move |headers| auth.credential_id(headers))
    };
    let grpc_guard = Guard::new(
        "grpc",
        Protocol::Grpc,
        limits.clone(),
        client_of.clone(),
        Some(stop.clone()),
    );
    let http_guard = Guard::new("http", Protocol::Http, limits.clone(), client_of, None);
    // /healthz and /metrics on their own listener, up through the drain
    // (answering "shutting down"), closed once it is over.
    let metrics_closed = CancellationToken::new();
    let health = p.adapters.with_metrics(Arc::new(CoordinatorHealth {
        leadership: p.leadership.clone(),
        cluster: p.cluster.clone(),
        audit: p.audit.clone(),
        engine: p.engine.clone(),
        guards: vec![grpc_guard.clone(), http_guard.clone()],
    }));
    let metrics = custos_service::http::serve_metrics(
        p.metrics,
        health,
        stop.clone(),
        metrics_closed.clone().cancelled_owned(),
    );
    tasks.spawn("metrics server", async move {
        if let Err(e) = metrics.await {
            tracing::error!(error = %e, "metrics server failed");
        }
    });
    // adapters: the /v1 REST routes on the API listener.
    let tls = p.http.is_tls();
    let http = custos_service::http::serve_api(
        p.http,
        p.adapters.api_router(
            custos_coordinator::custody::CustodyApi::new(
                p.cluster.clone(),
                p.engine.clone(),
                p.audit.clone(),
            ),
            custos_coordinator::adapters::app::AppConfig {
                session_ttl: Duration::from_secs(cfg.app.session_ttl_secs),
                stop: stop.clone(),
            },
            http_guard,
            limits.max_request(),
        ),
        stop.clone().cancelled_owned(),
    );
    tasks.spawn("HTTP API", async move {
        if let Err(e) = http.await {
            tracing::error!(error = %e, "HTTP API failed");
        }
    });

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let readiness = Readiness::serving(
        health_reporter,
        &[<CustodyServer<CustodyService> as tonic::server::NamedService>::NAME],
    )
    .await;
    let authenticator = p.authenticator;
    let custody = InterceptedService::new(
        CustodyServer::new(CustodyService::new(
            p.cluster.clone(),
            p.engine.clone(),
            p.audit.clone(),
            cfg.dev.allow_sign_digest,
        ))
        .max_decoding_message_size(limits.max_request()),
        move |req: tonic::Request<()>| authenticator.authenticate(req),
    );
    let calls = CallCounter::default();
    let accepting = CancellationToken::new();
    let grpc = Server::builder()
        .tls_config(p.grpc_tls)
        .map_err(|e| config_error(anyhow!("tls: {e}")))?
        .layer(grpc_guard)
        .add_service(calls.wrap(health_service))
        .add_service(calls.wrap(custody))
        .serve_with_shutdown(cfg.grpc_listen, accepting.clone().cancelled_owned());
    tracing::info!(grpc = %cfg.grpc_listen, http = %cfg.http_listen, http_tls = tls,
        metrics = %cfg.metrics.listen, "coordinator started");
    println!(
        "custos-coordinator ready: grpc {} http {} metrics {}",
        cfg.grpc_listen, cfg.http_listen, cfg.metrics.listen
    );
    let (served, deadline) = serve_until_signal(
        grpc,
        Drain {
            what: "gRPC API",
            calls: &calls,
            readiness: &readiness,
            stop: &stop,
            accepting: &accepting,
            timeout: Duration::from_secs(cfg.drain_timeout_secs),
        },
    )
    .await;
    // The API no longer answers: the metrics listener closes with the rest
    // (given the same deadline, not what is left after the engine's drain).
    metrics_closed.cancel();
    if let Some(e) = &p.engine {
        e.drain(deadline).await;
    }
    tasks.join_until(deadline).await.log();
    close(&p.adapters, &p.audit, &p.cluster).await;
    match served {
        Some(Err(e)) => Err(Fatal(
            1,
            anyhow::Error::new(e).context(format!("gRPC API on {}", cfg.grpc_listen)),
        )),
        _ => {
            tracing::info!("coordinator stopped");
            Ok(())
        }
    }
}

/// Stops event delivery, waits for the audit log's last append and closes
/// the database pool, each within [`CLOSE_LIMIT`].
async fn close(adapters: &Adapters, audit: &AuditTrail, cluster: &Cluster) {
    adapters.shutdown(CLOSE_LIMIT).await;
    if tokio::time::timeout(CLOSE_LIMIT, audit.close())
        .await
        .is_err()
    {
        tracing::warn!("audit log still busy (a step cut off by the drain): not closed cleanly");
    }
    // Waits for connections still in use; one held by work that was cut off
    // is closed by the exit.
    if tokio::time::timeout(CLOSE_LIMIT, cluster.db.pool().close())
        .await
        .is_err()
    {
        tracing::warn!("database connections still in use: closed by the exit");
    } else {
        tracing::info!("database closed");
    }
}

struct CoordinatorHealth {
    leadership: Arc<Leadership>,
    cluster: Arc<Cluster>,
    audit: Arc<AuditTrail>,
    engine: Option<Arc<Engine>>,
    /// The API listeners' guards (their refusal counters).
    guards: Vec<Guard>,
}

impl custos_service::http::Health for CoordinatorHealth {
    fn role(&self) -> Option<String> {
        self.leadership.role()
    }
    fn ready(&self) -> Result<(), String> {
        if !self.leadership.is_active() {
            return Err(format!(
                "lost the leadership lease (epoch {}): stopping",
                self.leadership.epoch()
            ));
        }
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
             # TYPE custos_audit_healthy gauge\ncustos_audit_healthy {}\n\
             # TYPE custos_signer_refusals_logged_total counter\ncustos_signer_refusals_logged_total {}\n",
            self.audit.appends.load(Ordering::Relaxed),
            self.audit.append_failures.load(Ordering::Relaxed),
            u8::from(self.audit.healthy()),
            self.audit.refusals_logged.load(Ordering::Relaxed),
        ));
        out.push_str(&custos_service::limits::metrics_text(&self.guards));
        out.push_str(&self.leadership.metrics_text());
        if let Some(e) = &self.engine {
            out.push_str("# TYPE custos_withdrawals gauge\n");
            for (state, n) in e.state_counts() {
                out.push_str(&format!("custos_withdrawals{{state=\"{state}\"}} {n}\n"));
            }
        }
        out
    }
}

/// This coordinator's name in the lease: `[leadership] name`, or the host
/// name and process id.
fn lease_holder(cfg: &CoordinatorConfig) -> String {
    cfg.leadership.name.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "coordinator".to_owned());
        format!("{host}-{}", std::process::id())
    })
}

/// The standby's `/healthz` (503, naming the active coordinator) and
/// `/metrics` (the lease's epoch, not active).
struct StandbyHealth {
    view: LeaderView,
}

impl custos_service::http::Health for StandbyHealth {
    fn ready(&self) -> Result<(), String> {
        Err(self.view.message())
    }
    fn metrics(&self) -> String {
        let epoch = self.view.get().map_or(0, |l| l.epoch);
        custos_coordinator::leadership::metrics_text(epoch, false)
    }
}

/// Servers of a standby: every API call is answered with the active
/// coordinator's address (`custos_service::standby`).
struct StandbyServers {
    done: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl StandbyServers {
    async fn start(
        cfg: &CoordinatorConfig,
        view: &LeaderView,
        grpc_tls: &ServerTlsConfig,
        http_tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Result<Self, Fatal> {
        let done = CancellationToken::new();
        let (reporter, health_service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        reporter
            .set_service_status(
                <CustodyServer<CustodyService> as tonic::server::NamedService>::NAME,
                tonic_health::ServingStatus::NotServing,
            )
            .await;
        let grpc = Server::builder()
            .tls_config(grpc_tls.clone())
            .map_err(|e| config_error(anyhow!("tls: {e}")))?
            .layer(Guard::standby("grpc", Protocol::Grpc, view.clone()))
            .add_service(health_service)
            .serve_with_shutdown(cfg.grpc_listen, done.clone().cancelled_owned());
        let http = tokio::net::TcpListener::bind(cfg.http_listen)
            .await
            .with_context(|| format!("config field `http_listen` {}", cfg.http_listen))
            .map_err(config_error)?;
        let http = match http_tls {
            Some(tls) => ApiListener::tls(http, tls),
            None => ApiListener::plain(http),
        };
        let router = axum::Router::new()
            .fallback(|| async { axum::http::StatusCode::SERVICE_UNAVAILABLE })
            .layer(Guard::standby("http", Protocol::Http, view.clone()));
        let http = custos_service::http::serve_api(http, router, done.clone().cancelled_owned());
        let metrics = tokio::net::TcpListener::bind(cfg.metrics.listen)
            .await
            .with_context(|| format!("config field `metrics.listen` {}", cfg.metrics.listen))
            .map_err(config_error)?;
        let metrics = custos_service::http::serve_metrics(
            metrics,
            Arc::new(StandbyHealth { view: view.clone() }),
            CancellationToken::new(),
            done.clone().cancelled_owned(),
        );
        let tasks = vec![
            tokio::spawn(async move {
                if let Err(e) = grpc.await {
                    tracing::error!(error = %e, "standby gRPC listener failed");
                }
            }),
            tokio::spawn(async move {
                if let Err(e) = http.await {
                    tracing::error!(error = %e, "standby HTTP listener failed");
                }
            }),
            tokio::spawn(async move {
                if let Err(e) = metrics.await {
                    tracing::error!(error = %e, "standby metrics listener failed");
                }
            }),
        ];
        Ok(Self { done, tasks })
    }

    /// Closes the listeners (cutting off connections still open after a
    /// second), so the active coordinator can bind them.
    async fn stop(self) {
        self.done.cancel();
        for mut t in self.tasks {
            if tokio::time::timeout(Duration::from_secs(1), &mut t)
                .await
                .is_err()
            {
                t.abort();
                let _ = t.await;
            }
        }
    }
}

/// Waits as a standby until this coordinator takes the lease: answers API
/// calls with the active coordinator's address meanwhile. Returns the
/// leadership and the lease, or `None` on SIGTERM / Ctrl-C.
async fn stand_by(
    cfg: &CoordinatorConfig,
    url: &str,
    grpc_tls: &ServerTlsConfig,
    http_tls: Option<Arc<rustls::ServerConfig>>,
    plain_http: bool,
) -> Result<Option<(Arc<Leadership>, Lease)>, Fatal> {
    let l = &cfg.leadership;
    let db = custos_service::db::Db::connect(url, 2)
        .await
        .map_err(|e| Fatal(1, anyhow!("database: {e}")))?;
    let holder = lease_holder(cfg);
    let grpc_address = l
        .advertise_grpc
        .clone()
        .unwrap_or_else(|| format!("https://{}", cfg.grpc_listen));
    let http_address = l.advertise_http.clone().unwrap_or_else(|| {
        let scheme = if plain_http { "http" } else { "https" };
        format!("{scheme}://{}", cfg.http_listen)
    });
    let duration = Duration::from_millis(l.lease_ms);
    let lease = Lease::open(
        &db,
        &holder,
        (grpc_address.as_str(), http_address.as_str()),
        duration,
    )
    .await
    .map_err(|e| Fatal(1, anyhow!("{e}")))?;
    let view = LeaderView::default();
    let mut servers: Option<StandbyServers> = None;
    let shutdown = custos_service::daemon::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let sent = std::time::Instant::now();
        match lease.try_acquire().await {
            Ok(Some(epoch)) => {
                if let Some(s) = servers.take() {
                    s.stop().await;
                }
                let leadership = Arc::new(Leadership::acquired(epoch, sent + duration));
                tracing::info!(epoch, %holder, grpc = %grpc_address, "this coordinator holds the leadership lease: active");
                println!("custos-coordinator active: leadership epoch {epoch}");
                return Ok(Some((leadership, lease)));
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "leadership lease: cannot reach the database"),
        }
        match lease.current().await {
            Ok(row) => {
                let leader = row.filter(|r| r.live).map(|r| Leader {
                    grpc: r.grpc_address,
                    http: r.http_address,
                    epoch: r.epoch,
                });
                if view.get() != leader {
                    tracing::info!(leader = %view_text(leader.as_ref()), "standby: the active coordinator");
                }
                view.set(leader);
            }
            Err(e) => tracing::warn!(error = %e, "leadership lease: cannot read it"),
        }
        if servers.is_none() {
            servers = Some(StandbyServers::start(cfg, &view, grpc_tls, http_tls.clone()).await?);
            tracing::info!(%holder, grpc = %cfg.grpc_listen, http = %cfg.http_listen,
                metrics = %cfg.metrics.listen, "coordinator started as a standby");
            println!(
                "custos-coordinator standby: grpc {} http {} metrics {}",
                cfg.grpc_listen, cfg.http_listen, cfg.metrics.listen
            );
        }
        tokio::select! {
            () = &mut shutdown => {
                if let Some(s) = servers.take() {
                    s.stop().await;
                }
                db.pool.close().await;
                return Ok(None);
            }
            () = tokio::time::sleep(Duration::from_millis(l.poll_ms)) => {}
        }
    }
}

fn view_text(leader: Option<&Leader>) -> String {
    leader.map_or_else(
        || "none".to_owned(),
        |l| format!("{} (epoch {})", l.grpc, l.epoch),
    )
}
