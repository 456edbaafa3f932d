//! Coordinator configuration (TOML + `CUSTOS_*` overrides).

use std::net::SocketAddr;
use std::path::PathBuf;

use custos_service::config::{BuildMode, ConfigError, MetricsSettings, refuse_dev_settings};
use custos_service::limits::{LimitSettings, LimitsConfig};
use serde::{Deserialize, Serialize};

/// The whole config file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// Data directory (SQLite database).
    pub data_dir: PathBuf,
    /// The unseal ceremony's socket when `audit.signer.unseal = "ceremony"`
    /// (default `<data_dir>/unseal.sock`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unseal_socket: Option<PathBuf>,
    /// Seal the TLS key files (`tls.key`, `tls.client_key`) with the
    /// software log key's sealer (default true): a plain key file found at
    /// start is replaced by its sealed form. A token log key has no software
    /// sealer: the files then stay plain (logged).
    #[serde(default = "yes")]
    pub seal_key_files: bool,
    /// gRPC API listen address (TLS).
    pub grpc_listen: SocketAddr,
    /// HTTP API listen address (the `/v1` REST routes), over TLS with
    /// `tls.cert` and `tls.key` (plain HTTP only with `[dev] plain_http`).
    pub http_listen: SocketAddr,
    /// Where `/healthz` and `/metrics` are served, apart from the API
    /// (plain HTTP, no token; default `127.0.0.1:7402`).
    #[serde(default = "default_metrics")]
    pub metrics: MetricsSettings,
    /// Rate limits, concurrency and request sizes of the gRPC and HTTP APIs
    /// (each listener its own; see [`CoordinatorConfig::limit_settings`]).
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Threshold for new keys when a request does not say (default 2).
    #[serde(default = "default_threshold")]
    pub default_threshold: u16,
    /// Presignatures kept ready per key (default 4; 0 disables the pool).
    #[serde(default = "default_pool")]
    pub presignature_pool: u32,
    /// Seconds a signer may take to answer a partial-signature request (default 5).
    #[serde(default = "default_partial_timeout")]
    pub partial_timeout_secs: u64,
    /// Seconds a protocol session (keygen, presign, interactive sign) may take (default 120).
    #[serde(default = "default_session_timeout")]
    pub session_timeout_secs: u64,
    /// Seconds the signer group's aux-info ceremony may take before the
    /// coordinator gives up on it and retries with a new group (default 960:
    /// the signers' own `aux_info_timeout_secs` default, 900, plus a margin,
    /// so the signers' timeout, which also stops their work, fires first).
    #[serde(default = "default_aux_info_timeout")]
    pub aux_info_timeout_secs: u64,
    /// Unexplained signing failures (partials that are malformed or do not
    /// combine into a valid signature) that lock a key for signing until an
    /// admin unlocks it (default 3), each within `lock_window_secs` of the
    /// previous (default 86400).
    #[serde(default = "default_lock_after_failures")]
    pub lock_after_failures: u32,
    /// See `lock_after_failures`.
    #[serde(default = "default_lock_window")]
    pub lock_window_secs: u64,
    /// Seconds a shutdown (SIGTERM, Ctrl-C) waits for work in progress
    /// (default 10): gRPC and HTTP calls, the withdrawal step each driver is
    /// in (a signing round included), a presignature or checkpoint round.
    /// Work still running then is cut off, as a crash would cut it (every
    /// withdrawal resumes from its stored state at the next start); closing
    /// the event dispatcher, the audit log and the database takes at most
    /// 3 s more. Keep it below the supervisor's kill timeout.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout_secs: u64,
    /// TLS material.
    pub tls: TlsConfig,
    /// API authentication.
    pub auth: AuthConfig,
    /// The signer group.
    pub signers: Vec<SignerEndpoint>,
    /// Database URL (`sqlite://...` or `postgres://...`); default: SQLite
    /// `coordinator.db` in `data_dir`.
    #[serde(default)]
    pub database_url: Option<String>,
    /// The withdrawal policy bundle. Without it the withdrawal API refuses
    /// every request (FAILED_PRECONDITION).
    #[serde(default)]
    pub policy: Option<PolicyFiles>,
    /// Assets per chain; default: ETH on ethereum and anvil, BTC on bitcoin.
    #[serde(default)]
    pub assets: Vec<crate::withdrawal::assets::AssetConfig>,
    /// Chains with a transaction adapter (`[[chains]]`, kind "evm"); a chain
    /// not listed signs the transfer-intent digest and stops at `signed`.
    #[serde(default)]
    pub chains: Vec<crate::chain::ChainSettings>,
    /// Risk model tunables (custos-risk `RiskConfig`).
    #[serde(default)]
    pub risk: custos_risk::RiskConfig,
    /// Withdrawal engine tunables.
    #[serde(default)]
    pub withdrawals: WithdrawalSettings,
    /// Transparency log.
    #[serde(default)]
    pub audit: AuditSettings,
    /// Switches for development clusters only.
    #[serde(default)]
    pub dev: DevSettings,
    /// The double-entry ledger fed by withdrawal transitions.
    #[serde(default)]
    pub ledger: LedgerSettings,
    /// Event delivery (transactional outbox → NATS JetStream, webhooks).
    #[serde(default)]
    pub events: EventSettings,
    /// Fenced leadership among several coordinators on one PostgreSQL
    /// database (a lease; unused with SQLite, where one coordinator runs).
    #[serde(default)]
    pub leadership: LeadershipSettings,
    /// The approval web app (`/app/` on the HTTP port).
    #[serde(default)]
    pub app: AppSettings,
}

/// `[app]`: the approval web app.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSettings {
    /// How long an approver stays signed in after a passkey sign-in
    /// (default 900 s; 60..=3600): short, so a session left open on an
    /// unattended machine soon ends. Every verdict takes the passkey
    /// anyway.
    #[serde(default = "default_session_ttl")]
    pub session_ttl_secs: u64,
}

impl Default for AppSettings {
    fn default() -> Self {
        Self {
            session_ttl_secs: default_session_ttl(),
        }
    }
}

fn default_session_ttl() -> u64 {
    900
}

impl AppSettings {
    /// Refuses a session lifetime outside 60..=3600 s, naming the field.
    pub fn check(&self) -> Result<(), ConfigError> {
        if (60..=3600).contains(&self.session_ttl_secs) {
            Ok(())
        } else {
            Err(ConfigError::Field {
                field: "app.session_ttl_secs".into(),
                message: format!("{} is outside 60..=3600 seconds", self.session_ttl_secs),
            })
        }
    }
}

impl CoordinatorConfig {
    /// A config with the fields a config file must set, every other one at
    /// its default (what a file setting only these gets): how tools that
    /// write configs (the dev cluster) build one, so a new required field
    /// does not compile until they set it.
    pub fn new(
        data_dir: PathBuf,
        grpc_listen: SocketAddr,
        http_listen: SocketAddr,
        tls: TlsConfig,
        auth: AuthConfig,
        signers: Vec<SignerEndpoint>,
    ) -> Self {
        Self {
            data_dir,
            unseal_socket: None,
            seal_key_files: true,
            grpc_listen,
            http_listen,
            metrics: default_metrics(),
            limits: LimitsConfig::default(),
            default_threshold: default_threshold(),
            presignature_pool: default_pool(),
            partial_timeout_secs: default_partial_timeout(),
            session_timeout_secs: default_session_timeout(),
            aux_info_timeout_secs: default_aux_info_timeout(),
            lock_after_failures: default_lock_after_failures(),
            lock_window_secs: default_lock_window(),
            drain_timeout_secs: default_drain_timeout(),
            tls,
            auth,
            signers,
            database_url: None,
            policy: None,
            assets: Vec::new(),
            chains: Vec::new(),
            risk: custos_risk::RiskConfig::default(),
            withdrawals: WithdrawalSettings::default(),
            audit: AuditSettings::default(),
            dev: DevSettings::default(),
            ledger: LedgerSettings::default(),
            events: EventSettings::default(),
            leadership: LeadershipSettings::default(),
            app: AppSettings::default(),
        }
    }
}

/// `[leadership]`: with `database_url` on PostgreSQL, coordinators sharing
/// the database elect one active coordinator through a lease row; every new
/// holder gets a higher epoch, which signers check (README, "Several
/// coordinators"). A standby answers API calls with the active one's
/// address and takes over once the lease expires: within `lease_ms` plus
/// `poll_ms` of the last renewal, plus its own start. Ignored with SQLite.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeadershipSettings {
    /// How long a lease lasts without renewal, milliseconds (default 5000):
    /// the longest a dead or paused leader keeps a standby waiting. A leader
    /// that could not renew for this long stops acting at once.
    pub lease_ms: u64,
    /// How often the leader renews, milliseconds (default 1000; at most a
    /// third of `lease_ms`, so one failed renewal does not lose the lease).
    pub renew_ms: u64,
    /// How often a standby tries to take the lease, milliseconds (default 500).
    pub poll_ms: u64,
    /// This coordinator's name in the lease (default: host name and process
    /// id): shown by standbys and in the logs.
    pub name: Option<String>,
    /// The gRPC address clients should use for this coordinator when it
    /// leads (default `https://<grpc_listen>`): standbys answer with it.
    pub advertise_grpc: Option<String>,
    /// The HTTP API address clients should use (default `https://<http_listen>`).
    pub advertise_http: Option<String>,
}

impl Default for LeadershipSettings {
    fn default() -> Self {
        Self {
            lease_ms: 5000,
            renew_ms: 1000,
            poll_ms: 500,
            name: None,
            advertise_grpc: None,
            advertise_http: None,
        }
    }
}

impl LeadershipSettings {
    /// Refuses unusable timings, naming the field.
    pub fn check(&self) -> Result<(), ConfigError> {
        let field = |f: &str, message: String| ConfigError::Field {
            field: format!("leadership.{f}"),
            message,
        };
        if !(500..=600_000).contains(&self.lease_ms) {
            return Err(field(
                "lease_ms",
                format!("{} is outside 500..=600000", self.lease_ms),
            ));
        }
        if self.renew_ms < 50 || self.renew_ms.saturating_mul(3) > self.lease_ms {
            return Err(field(
                "renew_ms",
                format!(
                    "{} must be at least 50 and at most a third of lease_ms ({})",
                    self.renew_ms, self.lease_ms
                ),
            ));
        }
        if self.poll_ms < 50 || self.poll_ms > self.lease_ms {
            return Err(field(
                "poll_ms",
                format!(
                    "{} must be at least 50 and at most lease_ms ({})",
                    self.poll_ms, self.lease_ms
                ),
            ));
        }
        Ok(())
    }
}

/// The policy bundle files.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFiles {
    /// Policy document (TOML or JSON), exactly as the admins signed it.
    pub document: PathBuf,
    /// Its admin signatures (`custos policy sign` output, `*.sigs.json`).
    pub signatures: PathBuf,
    /// The admin set (threshold and keys), configured out of band.
    pub admins: PathBuf,
}

/// Withdrawal engine tunables.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WithdrawalSettings {
    /// How often waiting withdrawals are revisited, milliseconds (default 500).
    pub tick_ms: u64,
    /// Seconds added to each time lock on the coordinator's side (default 1).
    pub lock_margin_secs: u64,
}

impl Default for WithdrawalSettings {
    fn default() -> Self {
        Self {
            tick_ms: 500,
            lock_margin_secs: 1,
        }
    }
}

/// Transparency log settings.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// Log origin line in checkpoints (default `custos.local/log`).
    pub origin: String,
    /// The log-signing key (custos-hsm `LogSignerConfig`: a sealed software
    /// key or a PKCS#11 key pair). Default (development): an Ed25519 key
    /// sealed in `data_dir/log-key.sealed` with a random passphrase kept in
    /// `data_dir/log-key.pass`; production configs name a token or a
    /// passphrase held elsewhere.
    pub signer: Option<custos_hsm::LogSignerConfig>,
    /// Longest interval between checkpoints while the log grows,
    /// milliseconds (default 1000).
    pub checkpoint_ms: u64,
    /// Entries appended since the last checkpoint that bring the next one
    /// forward (default 256): under load checkpoints come sooner and each
    /// witness round ships fewer entries; idle, one per `checkpoint_ms`.
    pub checkpoint_entries: u64,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            origin: "custos.local/log".into(),
            signer: None,
            checkpoint_ms: 1000,
            checkpoint_entries: 256,
        }
    }
}

impl CoordinatorConfig {
    /// Refuses the `[dev]` settings this config sets if `mode` is a release
    /// build (the daemon passes [`crate::BUILD_MODE`]), and unusable limits.
    pub fn check_build(&self, mode: BuildMode) -> Result<(), ConfigError> {
        self.limit_settings()?;
        self.leadership.check()?;
        self.app.check()?;
        if let Some(custos_hsm::LogSignerConfig::Software {
            unseal,
            passphrase_file,
            passphrase_env,
            ..
        }) = &self.audit.signer
        {
            let both = *unseal == custos_hsm::UnsealMode::Ceremony
                && (passphrase_file.is_some() || passphrase_env.is_some());
            if both {
                return Err(ConfigError::Field {
                    field: "audit.signer.unseal".into(),
                    message: "\"ceremony\" takes the passphrase from operators: remove passphrase_file and passphrase_env".into(),
                });
            }
        }
        refuse_dev_settings(&self.dev.set_fields(), mode)
    }

    /// `[limits]` over the API defaults
    /// ([`custos_service::limits::LimitSettings::default`]: per client and
    /// route 100 requests/s, bursts of 200; 512 calls in flight; 4 MiB).
    pub fn limit_settings(&self) -> Result<LimitSettings, ConfigError> {
        self.limits.resolve(LimitSettings::default(), "limits")
    }
}

fn yes() -> bool {
    true
}

fn default_metrics() -> MetricsSettings {
    MetricsSettings::loopback(7402)
}

/// Development-only switches (never in production configs; a release build
/// refuses them, see [`CoordinatorConfig::check_build`]).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DevSettings {
    /// Keeps the admin `SignDigest` RPC (raw digests, no policy) for the
    /// cluster demo and benchmarks. Signers must allow it too.
    pub allow_sign_digest: bool,
    /// Serves the HTTP API (`http_listen`) over plain HTTP instead of TLS,
    /// for tools of a dev cluster that speak no TLS.
    pub plain_http: bool,
}

impl DevSettings {
    /// Dotted paths of the fields set to anything but their default.
    pub fn set_fields(&self) -> Vec<&'static str> {
        // Destructured: a new field does not compile until it is listed here.
        let DevSettings {
            allow_sign_digest,
            plain_http,
        } = self;
        [
            ("dev.allow_sign_digest", *allow_sign_digest),
            ("dev.plain_http", *plain_http),
        ]
        .into_iter()
        .filter_map(|(field, set)| set.then_some(field))
        .collect()
    }
}

fn default_threshold() -> u16 {
    2
}
fn default_pool() -> u32 {
    4
}
fn default_lock_after_failures() -> u32 {
    3
}
fn default_lock_window() -> u64 {
    86_400
}
fn default_partial_timeout() -> u64 {
    5
}
fn default_session_timeout() -> u64 {
    120
}
fn default_aux_info_timeout() -> u64 {
    960
}
fn default_drain_timeout() -> u64 {
    custos_service::daemon::DEFAULT_DRAIN_SECS
}

/// TLS material.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Server certificate for API clients (PEM).
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// Client certificate presented to signers (mTLS).
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
    /// CA of the signers' server certificates.
    pub signer_ca: PathBuf,
}

/// API authentication.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The hashed API token store (JSON; `custos token create --store FILE`):
    /// each token's id, client, roles, expiry and SHA-256, never a token.
    /// Reread when it changes, so tokens are created and revoked without a
    /// restart.
    pub token_store: Option<PathBuf>,
    /// How often the token store is checked for changes, ms (default 1000).
    #[serde(default = "default_token_reload_ms")]
    pub token_reload_ms: u64,
    /// CA (PEM) whose client certificates the gRPC API accepts as an
    /// alternative to a bearer token (mTLS, for backends). A certificate
    /// authenticates only once pinned in the token store (`custos token
    /// create --cert FILE`), which gives it its client id and roles. Unset
    /// (default): no client certificates are asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
    /// Removed: a plain-text admin token. A config that still sets it is
    /// refused with the migration steps (see [`AuthConfig::plain_text_fields`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token_file: Option<PathBuf>,
    /// Removed: API clients with plain-text token files (refused likewise).
    #[serde(default, skip_serializing)]
    pub clients: Option<serde::de::IgnoredAny>,
}

impl AuthConfig {
    /// Tokens from the hashed store `token_store`, reloaded at the default interval.
    pub fn new(token_store: PathBuf) -> Self {
        Self {
            token_store: Some(token_store),
            token_reload_ms: default_token_reload_ms(),
            client_ca: None,
            admin_token_file: None,
            clients: None,
        }
    }

    /// The removed plain-text token fields this config still sets.
    ///
    /// They are refused at load rather than hashed automatically: hashing at
    /// load would leave the plain-text files on disk and the daemon still
    /// reading them, and the old tokens have no id, prefix or expiry (and,
    /// having sat in plain text, should be treated as exposed). The operator
    /// issues new tokens with `custos token create` and deletes the files.
    pub fn plain_text_fields(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.admin_token_file.is_some() {
            v.push("auth.admin_token_file");
        }
        if self.clients.is_some() {
            v.push("auth.clients");
        }
        v
    }
}

fn default_token_reload_ms() -> u64 {
    1000
}

/// One signer (`[[signers]]`): defined with the signer clients, which
/// config depends on, not the other way round.
pub use crate::signers::SignerEndpoint;

/// `[ledger]`: postings for every withdrawal (reserve on `approved`, settle on
/// the settlement state, release on cancellation or failure).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerSettings {
    /// Post withdrawals to the ledger (default true).
    pub enabled: bool,
    /// Overdraft limit given to a (wallet, asset) the first time a withdrawal
    /// names it: `"unlimited"` (default: the books never hold a withdrawal
    /// up, a negative `available` shows as a reconciliation difference) or a
    /// base-unit amount (`"0"`: no overdraft; a reservation the books cannot
    /// cover is recorded as a ledger exception and the withdrawal proceeds).
    /// Existing limits are never changed by this setting.
    pub default_overdraft: String,
    /// JSON-RPC URL of the EVM node `GET /v1/ledger/reconcile?chain=eth`
    /// reads balances from (admins may pass another one per request).
    pub eth_rpc_url: Option<String>,
    /// How often confirmed deposits into the wallets are read from the
    /// nodes and credited, each once (UTXO chains: `<chain>:<txid>:<vout>`;
    /// EVM chains: `<chain>:<tx hash>` for ETH, `<chain>:<tx hash>:log<n>`
    /// for a configured ERC-20), ms (default 5000).
    pub deposit_scan_ms: u64,
}

impl Default for LedgerSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            default_overdraft: "unlimited".into(),
            eth_rpc_url: None,
            deposit_scan_ms: 5000,
        }
    }
}

/// `[events]`: delivery of the outbox written with every withdrawal transition.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventSettings {
    /// NATS server URL (e.g. `nats://127.0.0.1:4222`); unset: no NATS sink
    /// (webhooks are always delivered).
    pub nats_url: Option<String>,
    /// JetStream stream, created if missing (default `CUSTOS_EVENTS`).
    pub stream: String,
    /// Subject prefix: events go to `<prefix>.withdrawal.<state>` (default `custos.events`).
    pub subject_prefix: String,
    /// Outbox poll interval when nothing nudges the dispatcher, ms (default 500).
    pub poll_ms: u64,
    /// Delay after a webhook's first failed attempt, doubled after each further one, ms (default 1000).
    pub webhook_retry_base_ms: u64,
    /// Cap on that delay, ms (default 300000).
    pub webhook_retry_max_ms: u64,
    /// Attempts before a webhook delivery is dead-lettered (default 10).
    pub webhook_max_attempts: u32,
    /// Per-request timeout of webhook deliveries, ms (default 10000).
    pub webhook_timeout_ms: u64,
    /// Accept plain `http://` webhooks (default false; dev clusters only).
    pub webhook_allow_http: bool,
    /// Accept webhooks on loopback, private, link-local and other non-public
    /// addresses (default false: a webhook must not reach the coordinator's
    /// own network or the cloud metadata endpoint).
    pub webhook_allow_private: bool,
}

impl Default for EventSettings {
    fn default() -> Self {
        Self {
            nats_url: None,
            stream: "CUSTOS_EVENTS".into(),
            subject_prefix: "custos.events".into(),
            poll_ms: 500,
            webhook_retry_base_ms: 1000,
            webhook_retry_max_ms: 300_000,
            webhook_max_attempts: 10,
            webhook_timeout_ms: 10_000,
            webhook_allow_http: false,
            webhook_allow_private: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
data_dir = "data"
grpc_listen = "127.0.0.1:7400"
http_listen = "127.0.0.1:7401"
signers = []
[tls]
cert = "c.pem"
key = "k.pem"
client_cert = "cc.pem"
client_key = "ck.pem"
signer_ca = "ca.pem"
[auth]
token_store = "tokens.json"
"#;

    /// Every `[dev]` field, set in the file or by a `CUSTOS_DEV__*` override
    /// and read by the daemon's loader, goes through the one check: a
    /// release build refuses it naming it, a dev build takes it.
    #[test]
    fn release_build_refuses_every_dev_field() {
        let dir = tempfile::tempdir().unwrap();
        let load = |text: &str, env: &[(&str, &str)]| -> CoordinatorConfig {
            let path = dir.path().join("config.toml");
            std::fs::write(&path, text).unwrap();
            let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
            custos_service::config::load(&path, env).unwrap()
        };
        for (field, key, env_var) in [
            (
                "dev.allow_sign_digest",
                "allow_sign_digest",
                "CUSTOS_DEV__ALLOW_SIGN_DIGEST",
            ),
            ("dev.plain_http", "plain_http", "CUSTOS_DEV__PLAIN_HTTP"),
        ] {
            let in_file = load(&format!("{MINIMAL}[dev]\n{key} = true\n"), &[]);
            let by_env = load(MINIMAL, &[(env_var, "true")]);
            for cfg in [in_file, by_env] {
                assert_eq!(cfg.dev.set_fields(), [field]);
                cfg.check_build(BuildMode::Dev).unwrap();
                let e = cfg.check_build(BuildMode::Release).unwrap_err();
                assert!(
                    matches!(&e, ConfigError::DevSetting { field: f, .. } if f == field),
                    "{e}"
                );
            }
        }
        for cfg in [
            load(MINIMAL, &[]),
            load(&format!("{MINIMAL}[dev]\nallow_sign_digest = false\n"), &[]),
        ] {
            assert!(cfg.dev.set_fields().is_empty());
            cfg.check_build(BuildMode::Release).unwrap();
        }
    }

    /// `[metrics]` and `[limits]` have loopback and API defaults; a bad
    /// limit is refused naming its field.
    #[test]
    fn metrics_and_limits_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, MINIMAL).unwrap();
        let cfg: CoordinatorConfig = custos_service::config::load(&path, vec![]).unwrap();
        assert_eq!(cfg.metrics.listen.to_string(), "127.0.0.1:7402");
        assert_eq!(cfg.limit_settings().unwrap(), LimitSettings::default());
        let env = vec![("CUSTOS_LIMITS__RATE_PER_SEC".to_owned(), "0".to_owned())];
        let cfg: CoordinatorConfig = custos_service::config::load(&path, env).unwrap();
        let e = cfg.check_build(BuildMode::Dev).unwrap_err().to_string();
        assert!(e.contains("`limits.rate_per_sec`"), "{e}");
    }
}
