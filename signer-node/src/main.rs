//! `custos-signer`: the signer daemon.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::Parser;
use custos_proto::signer::signer_control_server::SignerControlServer;
use custos_service::config::{self, resolve};
use custos_service::daemon::{
    CallCounter, CancellationToken, Drain, Readiness, Tasks, serve_until_signal,
};
use custos_service::limits::{Guard, LimitSettings, Protocol};
use custos_signer_node::config::SignerConfig;
use custos_signer_node::cosigner::Cosigner;
use custos_signer_node::cosigner::bundles::Bundles;
use custos_signer_node::cosigner::journal::Journal;
use custos_signer_node::cosigner::witness::LogWitness;
use custos_signer_node::node::{Node, SessionTimeouts};
use custos_signer_node::p2p::{self, P2pConfig, PinnedPeer};
use custos_signer_node::service::ControlService;
use custos_signer_node::store::Store;
use custos_signer_node::{BUILD_MODE, DEV_BUILD};
use libp2p::{Multiaddr, PeerId};
use tokio::time::Instant;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Server, ServerTlsConfig};

#[derive(Parser)]
#[command(
    name = "custos-signer",
    version,
    about = "Custos threshold signer node"
)]
struct Args {
    /// Config file (TOML); every field can be overridden by CUSTOS_* env vars.
    #[arg(long, short, env = "CUSTOS_SIGNER_CONFIG")]
    config: PathBuf,
    /// JSON logs.
    #[arg(long)]
    log_json: bool,
}

/// A startup failure and the exit code it warrants.
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
    let cfg: SignerConfig = config::load(path, config::process_env()).map_err(config_error)?;
    cfg.check_build(BUILD_MODE).map_err(config_error)?;
    let data_dir = resolve(path, &cfg.data_dir);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data_dir {}", data_dir.display()))
        .map_err(config_error)?;

    // Fail closed: no sealer, no node.
    let sealer = open_sealer(&cfg, path, &data_dir).await?;
    let store = Store::open(&data_dir, &cfg.node_id, sealer).map_err(|e| Fatal(1, e.into()))?;
    let cosigner = Arc::new(open_cosigner(&cfg, path, &data_dir, &store)?);
    // Refuses requests from a fenced-off coordinator (an older leadership epoch).
    let fence = Arc::new(
        custos_signer_node::fence::EpochFence::open(&data_dir).map_err(|e| Fatal(1, e.into()))?,
    );

    let identity_path = resolve(path, &cfg.identity_key);
    let identity = open_key_file(
        &cfg,
        &store,
        "p2p-identity",
        &identity_path,
        p2p::MAX_IDENTITY_BYTES,
    )
    .and_then(|bytes| p2p::decode_identity(&identity_path, &bytes).map_err(anyhow::Error::from))
    .context("config field `identity_key`")
    .map_err(config_error)?;
    let mut pinned = Vec::new();
    let mut peer_ids = HashMap::new();
    for (i, p) in cfg.peers.iter().enumerate() {
        let peer_id = PeerId::from_str(&p.peer_id)
            .with_context(|| format!("config field `peers[{i}].peer_id`: not a PeerId"))
            .map_err(config_error)?;
        let addr = Multiaddr::from_str(&p.address)
            .with_context(|| format!("config field `peers[{i}].address`: not a multiaddr"))
            .map_err(config_error)?;
        peer_ids.insert(p.node_id.clone(), peer_id);
        pinned.push(PinnedPeer {
            node_id: p.node_id.clone(),
            peer_id,
            addr,
        });
    }
    let listen = cfg
        .p2p_listen
        .iter()
        .map(|a| {
            Multiaddr::from_str(a)
                .with_context(|| format!("config field `p2p_listen`: {a:?} is not a multiaddr"))
        })
        .collect::<anyhow::Result<Vec<_>>>()
        .map_err(config_error)?;

    let tls = &cfg.tls;
    let tls_key = open_key_file(&cfg, &store, "tls-key", &resolve(path, &tls.key), 64 * 1024)
        .context("config field `tls.key`")
        .map_err(config_error)?;
    let identity_tls = custos_service::tls::identity_with_key(
        "tls.cert/tls.key",
        &resolve(path, &tls.cert),
        &tls_key,
    )
    .map_err(config_error)?;
    let client_ca =
        custos_service::tls::certificate("tls.client_ca", &resolve(path, &tls.client_ca))
            .map_err(config_error)?;
    let coordinator_pem = custos_service::tls::pem_bytes(
        "tls.coordinator_cert",
        &resolve(path, &tls.coordinator_cert),
    )
    .map_err(config_error)?;
    let coordinator_der = custos_credentials::certificate_der(&coordinator_pem)
        .map_err(|e| anyhow!("config field `tls.coordinator_cert`: {e}"))
        .map_err(config_error)?;

    let (handle, inbound, p2p_task) = p2p::start(P2pConfig::new(identity, listen, pinned))
        .await
        .map_err(|e| Fatal(1, anyhow!("p2p: {e}")))?;
    let node = Node::new(
        cfg.node_id.clone(),
        store,
        handle.clone(),
        peer_ids,
        SessionTimeouts {
            session: Duration::from_secs(cfg.session_timeout_secs),
            aux_info: Duration::from_secs(cfg.aux_info_timeout_secs),
        },
        cfg.dev.fault_injection,
    );

    // `[dev]` is refused by a release build above; `DEV_BUILD` (a constant)
    // also removes these branches from it.
    let pregenerated = match cfg.dev.primes_file.as_ref().filter(|_| DEV_BUILD) {
        Some(f) => {
            let f = resolve(path, f);
            let bytes = std::fs::read(&f)
                .with_context(|| format!("dev.primes_file {}", f.display()))
                .map_err(config_error)?;
            let mut all: Vec<custos_mpc::Primes> = serde_json::from_slice(&bytes)
                .context("dev.primes_file is not a primes list")
                .map_err(config_error)?;
            if cfg.dev.primes_index >= all.len() {
                return Err(config_error(anyhow!(
                    "dev.primes_index {} out of range",
                    cfg.dev.primes_index
                )));
            }
            Some(all.swap_remove(cfg.dev.primes_index))
        }
        None => None,
    };
    if let Some(f) = cfg.dev.aux_fixture.as_ref().filter(|_| DEV_BUILD) {
        import_aux_fixture(&node, &resolve(path, f), pregenerated.as_ref())?;
    } else if node
        .store()
        .aux_groups()
        .map_err(|e| Fatal(1, e.into()))?
        .is_empty()
    {
        node.ensure_primes(pregenerated)
            .map_err(|e| Fatal(1, e.into()))?;
    }

    let limits = cfg.limit_settings().map_err(config_error)?;
    let control = InterceptedService::new(
        SignerControlServer::new(
            ControlService::new(node.clone(), cosigner, cfg.dev.allow_raw_digest, fence)
                .with_recovery_recipient(cfg.recovery.recipient().map_err(config_error)?),
        )
        .max_decoding_message_size(limits.max_request()),
        PinnedCoordinator(Arc::new(coordinator_der)),
    );
    let metrics = tokio::net::TcpListener::bind(cfg.metrics.listen)
        .await
        .with_context(|| format!("config field `metrics.listen` {}", cfg.metrics.listen))
        .map_err(config_error)?;
    let server = Server::builder()
        .tls_config(
            ServerTlsConfig::new()
                .identity(identity_tls)
                .client_ca_root(client_ca),
        )
        .map_err(|e| config_error(anyhow!("tls: {e}")))?;
    tracing::info!(node_id = %cfg.node_id, peer_id = %handle.local_peer_id(),
        control = %cfg.control_listen, metrics = %cfg.metrics.listen, "signer node started");
    println!(
        "custos-signer {} ready: control {} peer {}",
        cfg.node_id,
        cfg.control_listen,
        handle.local_peer_id()
    );
    serve(
        &cfg,
        Serving {
            node,
            server,
            control,
            limits,
            metrics,
            inbound,
            p2p_task,
        },
    )
    .await
}

/// What [`serve`] runs.
struct Serving {
    node: Arc<Node>,
    server: Server,
    control: InterceptedService<SignerControlServer<ControlService>, PinnedCoordinator>,
    limits: LimitSettings,
    metrics: tokio::net::TcpListener,
    inbound: tokio::sync::mpsc::Receiver<custos_signer_node::p2p::InboundMessage>,
    p2p_task: p2p::P2pTask,
}

/// Accepts only calls from the coordinator's pinned client certificate.
#[derive(Clone)]
struct PinnedCoordinator(Arc<Vec<u8>>);

impl tonic::service::Interceptor for PinnedCoordinator {
    fn call(&mut self, req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        // mTLS already proved a CA-issued client cert; accept only the coordinator's.
        let ok = req
            .peer_certs()
            .and_then(|c| c.first().map(|c| c.as_ref() == self.0.as_slice()))
            .unwrap_or(false);
        if ok {
            Ok(req)
        } else {
            Err(tonic::Status::permission_denied(
                "client certificate is not the pinned coordinator",
            ))
        }
    }
}

/// Opens the sealer: from the configured passphrase or PIN source, or, with
/// `sealer.unseal = "ceremony"`, from operators through `custos unseal`
/// (waiting sealed, `/healthz` saying so, until one gives what opens it).
async fn open_sealer(
    cfg: &SignerConfig,
    path: &std::path::Path,
    data_dir: &std::path::Path,
) -> Result<Box<dyn custos_hsm::Sealer>, Fatal> {
    use custos_service::unseal;
    if cfg.sealer.unseal_mode() == custos_hsm::UnsealMode::Auto {
        return custos_hsm::open_sealer(&cfg.sealer, data_dir)
            .context("sealer (config field `sealer`)")
            .map_err(config_error);
    }
    let socket = cfg
        .unseal_socket
        .as_ref()
        .map(|s| resolve(path, s))
        .unwrap_or_else(|| data_dir.join(unseal::SOCKET_NAME));
    unseal::wait_for_unseal(
        &format!("signer {}", cfg.node_id),
        &socket,
        cfg.metrics.listen,
        |p| custos_hsm::open_sealer_with(&cfg.sealer, data_dir, Some(p)).map_err(|e| e.to_string()),
    )
    .await
    .map_err(|e| Fatal(1, e.into()))
}

/// Reads one of the node's private key files, sealing it in place first if
/// it is plain and `seal_key_files` is on.
fn open_key_file(
    cfg: &SignerConfig,
    store: &Store,
    purpose: &str,
    file: &std::path::Path,
    max_len: u64,
) -> anyhow::Result<zeroize::Zeroizing<Vec<u8>>> {
    let (bytes, state) = custos_hsm::open_key_file(
        store.sealer(),
        &cfg.node_id,
        purpose,
        file,
        max_len,
        cfg.seal_key_files,
    )?;
    match state {
        custos_hsm::KeyFileState::SealedNow => {
            tracing::info!(file = %file.display(), purpose, "key file sealed in place with the node's sealer");
        }
        custos_hsm::KeyFileState::Plain => {
            tracing::warn!(file = %file.display(), purpose, "key file is not sealed (seal_key_files = false)");
        }
        custos_hsm::KeyFileState::Sealed => {}
    }
    Ok(bytes)
}

/// How long the transport and the remaining tasks get to stop once the
/// control calls are drained (or cut off).
const CLOSE_LIMIT: Duration = Duration::from_secs(2);

/// Serves the control API until SIGTERM or Ctrl-C (or until the server
/// fails), then drains: no new calls; calls in progress (protocol sessions
/// included) finish until `drain_timeout_secs` with the peer transport still
/// up, since their frames travel on it; then the transport stops, and with
/// it inbound routing.
async fn serve(cfg: &SignerConfig, s: Serving) -> Result<(), Fatal> {
    let stop = CancellationToken::new();
    let mut tasks = Tasks::new(stop.clone());
    // Not stopped by the signal: sessions being drained still need their
    // frames. It ends when the transport closes the channel.
    tasks.spawn("inbound frames", s.node.clone().route_inbound(s.inbound));
    // The coordinator is the one client (pinned certificate): keyed by its address.
    let guard = Guard::new(
        "control",
        Protocol::Grpc,
        s.limits,
        Arc::new(|_| None),
        Some(stop.clone()),
    );
    // /healthz and /metrics, up through the drain, closed once it is over.
    let metrics_closed = CancellationToken::new();
    let h = Arc::new(SignerHealth {
        node: s.node.clone(),
        guard: guard.clone(),
    });
    let metrics = custos_service::http::serve_metrics(
        s.metrics,
        h,
        stop.clone(),
        metrics_closed.clone().cancelled_owned(),
    );
    tasks.spawn("metrics server", async move {
        if let Err(e) = metrics.await {
            tracing::error!(error = %e, "metrics server failed");
        }
    });
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let readiness = Readiness::serving(
        health_reporter,
        &[<SignerControlServer<ControlService> as tonic::server::NamedService>::NAME],
    )
    .await;
    let calls = CallCounter::default();
    let accepting = CancellationToken::new();
    let mut server = s.server.layer(guard);
    let grpc = server
        .add_service(calls.wrap(health_service))
        .add_service(calls.wrap(s.control))
        .serve_with_shutdown(cfg.control_listen, accepting.clone().cancelled_owned());
    let (served, _) = serve_until_signal(
        grpc,
        Drain {
            what: "control API",
            calls: &calls,
            readiness: &readiness,
            stop: &stop,
            accepting: &accepting,
            timeout: Duration::from_secs(cfg.drain_timeout_secs),
        },
    )
    .await;
    if tokio::time::timeout(CLOSE_LIMIT, s.p2p_task.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("p2p transport did not stop in time: closed by the exit");
    }
    metrics_closed.cancel();
    tasks.join_until(Instant::now() + CLOSE_LIMIT).await.log();
    match served {
        Some(Err(e)) => Err(Fatal(
            1,
            anyhow::Error::new(e).context(format!("control API on {}", cfg.control_listen)),
        )),
        _ => {
            tracing::info!("signer node stopped");
            Ok(())
        }
    }
}

/// `[dev] aux_fixture`: imports this node's aux info from the fixture.
/// Only a dev build (see `SignerConfig::check_build`) of a dev cluster may:
/// the fixture's Paillier keys come from public primes, so a node that takes
/// it must already be running on the public test primes it was made from
/// (`[dev] primes_file`).
fn import_aux_fixture(
    node: &Node,
    file: &std::path::Path,
    primes: Option<&custos_mpc::Primes>,
) -> Result<(), Fatal> {
    let Some(primes) = primes else {
        return Err(config_error(anyhow!(
            "config field `dev.aux_fixture` needs a dev cluster: set `dev.primes_file` to the \
             public test primes the fixture was made from (this node would otherwise replace \
             its own secret primes with public ones)"
        )));
    };
    let bytes = std::fs::read(file)
        .with_context(|| format!("config field `dev.aux_fixture`: {}", file.display()))
        .map_err(config_error)?;
    let fixture = custos_mpc::fixture::AuxFixture::parse(&bytes)
        .map_err(|e| config_error(anyhow!("config field `dev.aux_fixture`: {e}")))?;
    let group_id = node
        .import_aux_fixture(&fixture, primes)
        .map_err(|e| config_error(anyhow!("config field `dev.aux_fixture`: {e}")))?;
    tracing::warn!(%group_id, "DEV CLUSTER: aux info from a public fixture, keys are not secret");
    Ok(())
}

struct SignerHealth {
    node: Arc<Node>,
    guard: Guard,
}

impl custos_service::http::Health for SignerHealth {
    fn ready(&self) -> Result<(), String> {
        self.node
            .store()
            .aux_groups()
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    fn metrics(&self) -> String {
        format!(
            "# TYPE custos_signer_presignatures gauge\ncustos_signer_presignatures {}\n# TYPE custos_signer_keys gauge\ncustos_signer_keys {}\n# TYPE custos_signer_protocol_threads gauge\ncustos_signer_protocol_threads {}\n",
            self.node.store().presig_total(),
            self.node.store().key_count().unwrap_or(0),
            self.node.protocol_threads()
        ) + &custos_service::limits::metrics_text(std::slice::from_ref(&self.guard))
            + &custos_signer_node::stages::metrics_text()
    }
}

/// The co-signer checks: admin set, own journal, witness of the audit log.
fn open_cosigner(
    cfg: &custos_signer_node::config::SignerConfig,
    path: &std::path::Path,
    data_dir: &std::path::Path,
    store: &Store,
) -> Result<Cosigner, Fatal> {
    let c = &cfg.cosigner;
    let bundles = match &c.admins {
        None => {
            tracing::warn!("no [cosigner] admins configured: every withdrawal will be refused");
            None
        }
        Some(f) => {
            let f = resolve(path, f);
            let bytes = std::fs::read(&f)
                .with_context(|| format!("config field `cosigner.admins`: {}", f.display()))
                .map_err(config_error)?;
            let admins = custos_policy::AdminSet::parse(&bytes)
                .map_err(|e| config_error(anyhow!("config field `cosigner.admins`: {e}")))?;
            Some(Bundles::open(data_dir, admins).map_err(|e| Fatal(1, e.into()))?)
        }
    };
    let journal = Journal::open(data_dir).map_err(|e| Fatal(1, e.into()))?;
    let witness = match &c.log_key {
        None => {
            tracing::warn!("no [cosigner] log_key configured: every withdrawal will be refused");
            None
        }
        Some(k) => {
            let key_path = c
                .witness_key
                .as_ref()
                .map(|p| resolve(path, p))
                .unwrap_or_else(|| data_dir.join("witness-key.sealed"));
            let key = custos_hsm::SealedLogSigner::open(store.sealer(), &key_path, true)
                .map_err(|e| config_error(anyhow!("config field `cosigner.witness_key`: {e}")))?;
            let counter = custos_hsm::open_rollback_counter(
                &cfg.sealer,
                store.shared_sealer(),
                data_dir,
                &cfg.node_id,
            )
            .context("rollback counter (config field `sealer`)")
            .map_err(config_error)?;
            Some(
                LogWitness::open(data_dir, &cfg.node_id, key, &c.log_origin, k, counter)
                    .map_err(|e| config_error(anyhow!("config field `cosigner.log_key`: {e}")))?,
            )
        }
    };
    custos_signer_node::cosigner::chains::validate(&c.chains)
        .map_err(|e| config_error(anyhow!("config field `cosigner.chains`: {e}")))?;
    let risk = custos_risk::RiskModel::new(cfg.risk.clone())
        .map_err(|e| config_error(anyhow!("config table `risk`: {e}")))?;
    let refusals =
        custos_signer_node::cosigner::refusals::Refusals::open(data_dir, c.refusal_log_grace_secs)
            .map_err(|e| Fatal(1, e.into()))?;
    Ok(Cosigner::new(bundles, journal, witness)
        .with_refusals(refusals)
        .with_chains(&c.chains)
        .with_wallet_keys(store.key_directory())
        .with_risk(risk))
}
