//! The crash storm (issue #20): under a steady load of withdrawals on
//! anvil, a random process (either coordinator, any signer, PostgreSQL) is
//! killed every few seconds and brought back as a supervisor would; then
//! every withdrawal must end, none be paid twice, the wallet's nonces be
//! consecutive, the ledger reconcile with the node and the exported log
//! pass `custos audit verify --policy`.
//!
//! One driver for the short form in the test suite
//! (`tests/tests/crash_storm.rs`) and the long run
//! (`cargo bench -p custos-tests --bench crash_storm`).
//!
//! Everything runs on loopback: two coordinators on a PostgreSQL server of
//! the storm's own ([`crate::pg::PrivatePg`]: the shared one serves other
//! tests and is never restarted), three signers (2-of-3) and anvil.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use custos_chains::evm::rpc::{BlockTag, EvmRpc};
use custos_chains::evm::tx::decode_unsigned_transfer;
use custos_chains::{B256, U256};
use custos_devkit::client::{Client, connect_as};
use custos_devkit::{ClusterLayout, ClusterSpec, StartOptions};
use custos_proto::custody::{
    CreateKeyRequest, GetKeyRequest, GetWithdrawalRequest, ListWithdrawalsRequest, Withdrawal,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::anvil::{Anvil, rpc};
use crate::coordinators::{Extra, copy_data_dir, healthz, leadership_toml, wait_health};
use crate::pg::PrivatePg;
use crate::{ETH, FlowCluster, TestCluster, bin_dir, eth, start_layout, use_fixtures};

/// The storm's wallet (in the Ethereum test policy's hot group).
const WALLET: &str = "w-crash";
/// Anvil dev account 3: the payee (in the policy's address book).
const PAYEE: &str = "0x90F79bf6EB2c4f870365E785982E1f101E93b906";
/// The lease: a dead leader is replaced within about this long.
const LEASE_MS: u64 = 2000;
/// Presignatures kept per key.
const POOL: u32 = 4;
/// A burst of withdrawals from one wallet is what the risk model's velocity
/// signals flag; the storm measures crash recovery, not the risk model.
const RISK: &str = "[risk]\nvelocity_count_points = 0\nvelocity_amount_points = 0\n";
/// How long a client call may keep failing over before the storm fails.
const CALL_LIMIT: Duration = Duration::from_secs(90);
/// How long the cluster may take to be whole again after one kill.
const RECOVERY_LIMIT: Duration = Duration::from_secs(90);
/// Withdrawals the load keeps open at most.
const MAX_OPEN: usize = 8;
/// The end states.
const TERMINAL: [&str; 6] = [
    "confirmed",
    "failed",
    "blocked",
    "rejected",
    "cancelled",
    "expired",
];

/// How hard and how long.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Kills in all.
    pub kills: usize,
    /// From one kill to the next (at least the recovery in between).
    pub interval: Duration,
    /// One new withdrawal per this long, while the kills go on.
    pub load_every: Duration,
    /// Seed of the target choice (printed, to replay a run).
    pub seed: u64,
    /// How long the withdrawals may take to end after the last kill.
    pub drain_limit: Duration,
}

/// What is killed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// The coordinator the devkit started (`coord-a`).
    CoordinatorA,
    /// The second coordinator (`coord-b`).
    CoordinatorB,
    /// Signer `signer-N`.
    Signer(u16),
    /// The database server (`pg_ctl stop -m immediate`, then start).
    Postgres,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::CoordinatorA => f.write_str("coordinator-a"),
            Target::CoordinatorB => f.write_str("coordinator-b"),
            Target::Signer(n) => write!(f, "signer-{n}"),
            Target::Postgres => f.write_str("postgresql"),
        }
    }
}

/// The figures of a storm.
#[derive(Debug, Default)]
pub struct Report {
    /// Withdrawals requested (each idempotency key once).
    pub withdrawals: usize,
    /// How many ended in each state.
    pub states: BTreeMap<String, usize>,
    /// Each kill and how long until the cluster was whole again.
    pub kills: Vec<(Target, Duration)>,
    /// Client calls repeated (on the other coordinator, or after a crash).
    pub client_retries: usize,
    /// Transactions the wallet sent (its nonce on the node).
    pub wallet_nonce: u64,
    /// From the first kill to the last.
    pub storm: Duration,
    /// From the last kill until every withdrawal ended.
    pub drain: Duration,
    /// Warnings of `custos audit verify` (checkpoints a crash left
    /// unwitnessed, superseded by witnessed ones).
    pub verify_warnings: usize,
    /// The verifier's line on signatures.
    pub verify_signatures: String,
    /// Seed of the target choice.
    pub seed: u64,
    /// Each withdrawal that ended other than confirmed: id, state, reason.
    pub not_confirmed: Vec<String>,
}

fn pct(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let mut v = v.to_vec();
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

impl Report {
    /// Recovery p50 and p99 of the kills of which `pick` holds.
    pub fn recovery(&self, pick: impl Fn(&Target) -> bool) -> (usize, Duration, Duration) {
        let v: Vec<Duration> = self
            .kills
            .iter()
            .filter(|(t, _)| pick(t))
            .map(|(_, d)| *d)
            .collect();
        (v.len(), pct(&v, 0.5), pct(&v, 0.99))
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        writeln!(
            f,
            "crash storm (seed {}): {} kills in {:.1} s, {} withdrawals",
            self.seed,
            self.kills.len(),
            self.storm.as_secs_f64(),
            self.withdrawals
        )?;
        let states: Vec<String> = self
            .states
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        writeln!(f, "  end states     {}", states.join(", "))?;
        type Pick = fn(&Target) -> bool;
        let kinds: [(&str, Pick); 4] = [
            ("all", |_| true),
            ("coordinators", |t| {
                matches!(t, Target::CoordinatorA | Target::CoordinatorB)
            }),
            ("signers", |t| matches!(t, Target::Signer(_))),
            ("postgresql", |t| matches!(t, Target::Postgres)),
        ];
        for (name, pick) in kinds {
            let (n, p50, p99) = self.recovery(pick);
            writeln!(
                f,
                "  recovery       {name:<13} {n:>3} kills  p50 {:>7.0} ms  p99 {:>7.0} ms",
                ms(p50),
                ms(p99)
            )?;
        }
        writeln!(
            f,
            "  after the last kill every withdrawal ended in {:.1} s; {} client calls repeated",
            self.drain.as_secs_f64(),
            self.client_retries
        )?;
        writeln!(
            f,
            "  nothing lost: one withdrawal per request, none paid twice, wallet nonces 0..{} consecutive, ledger reconciled",
            self.wallet_nonce
        )?;
        for w in &self.not_confirmed {
            writeln!(f, "  not confirmed  {w}")?;
        }
        write!(
            f,
            "  audit verify --policy: passed, {} ({} warnings of checkpoints left unwitnessed by a crash)",
            self.verify_signatures.trim(),
            self.verify_warnings
        )
    }
}

/// Whether a failed call may succeed on the other coordinator or later
/// (a standby, a process gone, a database restarting).
fn retryable(e: &tonic::Status) -> bool {
    use tonic::Code::*;
    matches!(
        e.code(),
        Unavailable | Unknown | Cancelled | DeadlineExceeded | Internal | ResourceExhausted
    )
}

/// One API client per coordinator, used as a backend would: the call goes
/// to the other coordinator when one is a standby or gone.
#[derive(Clone)]
struct Failover {
    clients: [Client; 2],
    retries: Arc<AtomicUsize>,
}

impl Failover {
    async fn connect(
        a: &ClusterLayout,
        b: &ClusterLayout,
        id: &str,
        retries: &Arc<AtomicUsize>,
    ) -> Self {
        Failover {
            clients: [
                connect_as(a, id).await.unwrap(),
                connect_as(b, id).await.unwrap(),
            ],
            retries: retries.clone(),
        }
    }

    async fn call<T, F, Fut>(&self, what: &str, f: F) -> Result<T, tonic::Status>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let started = Instant::now();
        let mut i = 0usize;
        loop {
            match f(self.clients[i % 2].clone()).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(e) if retryable(&e) => {
                    assert!(
                        started.elapsed() < CALL_LIMIT,
                        "{what}: no coordinator answered for {CALL_LIMIT:?}: {e:?}"
                    );
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Every withdrawal, page by page.
    async fn list(&self) -> Vec<Withdrawal> {
        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let page = self
                .call("list withdrawals", |mut c| {
                    let page_token = token.clone();
                    async move {
                        c.list_withdrawals(ListWithdrawalsRequest {
                            page_size: 500,
                            page_token,
                            ..Default::default()
                        })
                        .await
                    }
                })
                .await
                .unwrap();
            all.extend(page.withdrawals);
            if page.next_page_token.is_empty() {
                return all;
            }
            token = page.next_page_token;
        }
    }

    async fn get(&self, id: &str) -> Withdrawal {
        self.call(id, |mut c| {
            let id = id.to_owned();
            async move { c.get_withdrawal(GetWithdrawalRequest { id }).await }
        })
        .await
        .unwrap()
    }
}

/// The storm's processes.
struct Storm {
    tc: TestCluster,
    b: Extra,
    pg: PrivatePg,
    anvil: Anvil,
    policy: PathBuf,
    backend: Failover,
    approver: Failover,
}

impl Storm {
    async fn start(retries: &Arc<AtomicUsize>) -> Storm {
        let anvil = Anvil::start().await;
        let pg = PrivatePg::start("storm");
        let db = pg.url("storm");
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("eth-policy.toml");
        std::fs::copy(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/eth-policy.toml"),
            &policy,
        )
        .unwrap();
        let mut spec = ClusterSpec::new(dir.path().join("cluster"));
        spec.base_port = custos_devkit::free_base_port();
        use_fixtures(&mut spec);
        spec.presignature_pool = POOL;
        spec.policy = Some(policy.clone());
        spec.raw_digest = false;
        spec.bin_dir = Some(bin_dir());
        let layout = custos_devkit::generate(&spec).unwrap();
        eth::configure(
            &layout,
            &anvil.url,
            Some(&db),
            "",
            &format!("{}\n{RISK}", leadership_toml("coord-a", LEASE_MS)),
            RISK,
        );
        let opts = StartOptions::default().timeout(Duration::from_secs(60));
        let tc = start_layout(dir, layout, opts).await;
        let layout = tc.cluster.layout().clone();
        tc.client
            .clone()
            .create_key(CreateKeyRequest {
                key_id: WALLET.into(),
                chain: eth::CHAIN.into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let b_dir = tc.dir.path().join("coordinator-b");
        copy_data_dir(&layout.coordinator.data_dir, &b_dir);
        let b = Extra::start(
            &layout,
            "coord-b",
            &b_dir,
            Some(custos_devkit::free_base_port()),
        );
        wait_health(b.metrics(), "a standby", RECOVERY_LIMIT, |c, body| {
            c == 503 && body.contains("standby")
        })
        .await;
        let backend = Failover::connect(&layout, &b.layout, "payments-backend", retries).await;
        let approver = Failover::connect(&layout, &b.layout, "approver-cli", retries).await;
        Storm {
            tc,
            b,
            pg,
            anvil,
            policy,
            backend,
            approver,
        }
    }

    fn layout(&self) -> &ClusterLayout {
        self.tc.cluster.layout()
    }

    fn rpc(&self) -> EvmRpc {
        rpc(&self.anvil.url)
    }

    async fn wallet(&self) -> custos_chains::Address {
        let key = self
            .tc
            .client
            .clone()
            .get_key(GetKeyRequest {
                key_id: WALLET.into(),
            })
            .await
            .unwrap()
            .into_inner();
        eth::addr(&key.ethereum_address)
    }

    fn signer_ids(&self) -> Vec<String> {
        self.layout()
            .signers
            .iter()
            .map(|s| s.node_id.clone())
            .collect()
    }

    /// SIGKILL (or an immediate database stop) of `t`, then its restart as
    /// a supervisor would do it.
    async fn kill_and_restart(&mut self, t: Target) {
        match t {
            Target::CoordinatorA => {
                self.tc.cluster.kill_coordinator().unwrap();
                self.tc.cluster.restart_coordinator_process().await.unwrap();
            }
            Target::CoordinatorB => {
                self.b.kill();
                self.b.restart();
            }
            Target::Signer(n) => {
                let id = format!("signer-{n}");
                self.tc.cluster.kill_signer(&id).unwrap();
                self.tc.cluster.restart_signer(&id).await.unwrap();
            }
            Target::Postgres => {
                self.pg.crash();
                self.pg.start_again();
            }
        }
    }

    /// Restarts whatever exited on its own (a coordinator that lost its
    /// lease exits 75 for its supervisor to restart it as a standby).
    async fn supervise(&mut self) {
        if !self.tc.cluster.is_running("coordinator") {
            self.tc.cluster.restart_coordinator_process().await.unwrap();
        }
        if !self.b.is_running() {
            self.b.restart();
        }
        for id in self.signer_ids() {
            if !self.tc.cluster.is_running(&id) {
                self.tc.cluster.restart_signer(&id).await.unwrap();
            }
        }
    }

    /// Whether the cluster is whole: every signer healthy, one coordinator
    /// active and the other a standby, and the API answering from the
    /// database.
    async fn whole(&mut self) -> Result<(), String> {
        for s in self.layout().signers.clone() {
            let (code, body) = healthz(s.http_listen).await;
            if code != 200 {
                return Err(format!("{}: {code} {body}", s.node_id));
            }
        }
        let (a, a_body) = healthz(self.layout().coordinator.metrics_listen).await;
        let (b, b_body) = healthz(self.b.metrics()).await;
        if !matches!((a, b), (200, 503) | (503, 200)) {
            return Err(format!("coordinators: a {a} {a_body}; b {b} {b_body}"));
        }
        let mut api = self.backend.clients[usize::from(a != 200)].clone();
        api.list_withdrawals(ListWithdrawalsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("API: {e:?}"))?;
        Ok(())
    }

    /// Waits until [`Storm::whole`], restarting what exits meanwhile;
    /// returns how long it took and what was missing last.
    async fn wait_whole(&mut self, after: &str) -> (Duration, String) {
        let started = Instant::now();
        let mut missing = String::new();
        loop {
            self.supervise().await;
            let why = match self.whole().await {
                Ok(()) => return (started.elapsed(), missing),
                Err(why) => why,
            };
            missing.clone_from(&why);
            assert!(
                started.elapsed() < RECOVERY_LIMIT,
                "the cluster was not whole {RECOVERY_LIMIT:?} after {after}: {why}\ncoordinator-a: {}\ncoordinator-b: {}",
                tail(
                    &std::fs::read_to_string(self.layout().log_file("coordinator"))
                        .unwrap_or_default()
                ),
                tail(&self.b.log())
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Hands the leadership to coordinator A (the one the cluster
    /// directory names, which the CLI uses): B is stopped gracefully if it
    /// leads, and comes back as a standby.
    async fn lead_with_a(&mut self) {
        if healthz(self.b.metrics()).await.0 == 200 {
            let pid = self.b.child.id().to_string();
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status();
            let started = Instant::now();
            while self.b.is_running() && started.elapsed() < Duration::from_secs(30) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            self.b.restart();
        }
        self.wait_whole("the hand-over to coordinator A").await;
        assert_eq!(
            healthz(self.layout().coordinator.metrics_listen).await.0,
            200
        );
    }
}

fn tail(log: &str) -> &str {
    let mut at = log.len().saturating_sub(4000);
    while !log.is_char_boundary(at) {
        at += 1;
    }
    &log[at..]
}

/// Creates the withdrawal for `key`, failing over between coordinators; a
/// repeated request (after a crash) must come back as the same withdrawal.
async fn request(backend: &Failover, key: &str, amount: u128) -> Withdrawal {
    let mut req = crate::withdrawal_req(key, WALLET, PAYEE, amount);
    req.asset = "ETH".into();
    backend
        .call(key, |mut c| {
            let req = req.clone();
            async move { c.create_withdrawal(req).await }
        })
        .await
        .unwrap_or_else(|e| panic!("{key}: refused: {e:?}"))
}

/// Approves `w` as alice and bob (the quorum of the policy's medium rule).
/// A refusal (already approved, no longer awaiting) is left to the check
/// at the end: the withdrawal's state says whether the quorum was reached.
async fn approve_both(approver: &Failover, w: &Withdrawal) {
    for who in ["alice", "bob"] {
        let statement = custos_policy::ApprovalStatement::decode(&w.statement).unwrap();
        let a = custos_policy::Approval::sign(
            &statement,
            custos_policy::Verdict::Approve,
            who,
            &crate::approver_key(who),
        )
        .unwrap();
        let req = custos_proto::custody::SubmitApprovalRequest {
            withdrawal_id: w.id.clone(),
            approver: who.to_owned(),
            verdict: custos_proto::custody::Verdict::Approve as i32,
            signature: a.signature,
            reason: String::new(),
            fee_bump_statement: Vec::new(),
            webauthn: None,
        };
        let _ = approver
            .call(&w.id, |mut c| {
                let req = req.clone();
                async move { c.submit_approval(req).await }
            })
            .await;
    }
}

/// The steady load: one withdrawal every `every` until `stop`, while fewer
/// than [`MAX_OPEN`] are open (the storm measures recovery, not how long a
/// backlog takes); every fourth needs two approvals (given at once).
/// Returns (key, id, amount).
async fn load(
    backend: Failover,
    approver: Failover,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> Vec<(String, String, u128)> {
    let mut made = Vec::new();
    let mut open: Vec<String> = Vec::new();
    let mut i: u128 = 0;
    while !stop.load(Ordering::Relaxed) {
        let mut still = Vec::new();
        for id in open {
            if !TERMINAL.contains(&backend.get(&id).await.state.as_str()) {
                still.push(id);
            }
        }
        open = still;
        if open.len() >= MAX_OPEN {
            tokio::time::sleep(every).await;
            continue;
        }
        i += 1;
        let key = format!("storm-{i}");
        let amount = if i.is_multiple_of(4) {
            2 * ETH + i
        } else {
            ETH / 100 + i
        };
        let w = request(&backend, &key, amount).await;
        // The same request again: the same withdrawal, not a second one.
        let again = request(&backend, &key, amount).await;
        assert_eq!(again.id, w.id, "{key} made two withdrawals");
        if w.state == "awaiting_approvals" {
            let approver = approver.clone();
            tokio::spawn(async move { approve_both(&approver, &w).await });
        }
        open.push(again.id.clone());
        made.push((key, again.id, amount));
        tokio::time::sleep(every).await;
    }
    made
}

/// Runs a storm and checks what must hold after it; panics naming what did
/// not. Returns its figures.
pub async fn run(settings: Settings) -> Report {
    let retries = Arc::new(AtomicUsize::new(0));
    let mut s = Storm::start(&retries).await;
    let rpc = s.rpc();
    let wallet = s.wallet().await;
    let payee = eth::addr(PAYEE);
    eth::fund(&rpc, wallet, 10_000 * ETH / 10).await;
    let payee_before = rpc.balance(payee).await.unwrap();
    eprintln!(
        "crash storm: {} kills every {:?}, a withdrawal every {:?}, seed {}",
        settings.kills, settings.interval, settings.load_every, settings.seed
    );

    // The kills: every kind of target once first (in a random order), then
    // at random.
    let mut rng = StdRng::seed_from_u64(settings.seed);
    let mut all = vec![Target::CoordinatorA, Target::CoordinatorB, Target::Postgres];
    all.extend((1..=3).map(Target::Signer));
    let mut plan = all.clone();
    plan.shuffle(&mut rng);
    while plan.len() < settings.kills {
        plan.push(all[rng.gen_range(0..all.len())]);
    }
    plan.truncate(settings.kills);

    let stop = Arc::new(AtomicBool::new(false));
    let loader = tokio::spawn(load(
        s.backend.clone(),
        s.approver.clone(),
        settings.load_every,
        stop.clone(),
    ));
    let mut report = Report {
        seed: settings.seed,
        ..Default::default()
    };
    let storm_started = Instant::now();
    for (k, t) in plan.into_iter().enumerate() {
        let next = storm_started + settings.interval * u32::try_from(k).unwrap();
        tokio::time::sleep_until(tokio::time::Instant::from_std(next)).await;
        let killed = Instant::now();
        s.kill_and_restart(t).await;
        let (_, missing) = s.wait_whole(&format!("kill {} of {t}", k + 1)).await;
        let took = killed.elapsed();
        let mut line = format!("kill {:>2}: {t:<14} whole again after {took:?}", k + 1);
        if took > Duration::from_secs(5) {
            line.push_str(&format!(
                " (last missing: {})",
                missing.chars().take(200).collect::<String>()
            ));
        }
        eprintln!("{line}");
        report.kills.push((t, took));
        if loader.is_finished() {
            break;
        }
    }
    report.storm = storm_started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let made = loader
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));

    // Every withdrawal ends: the ones awaiting approvals are approved again
    // (an approval lost to a crash before it was stored is given again).
    let drain_started = Instant::now();
    let mut approved_again = BTreeSet::new();
    let ws = loop {
        s.supervise().await;
        let ws = s.backend.list().await;
        let open: Vec<&Withdrawal> = ws
            .iter()
            .filter(|w| !TERMINAL.contains(&w.state.as_str()))
            .collect();
        if open.is_empty() {
            break ws;
        }
        for w in &open {
            if w.state == "awaiting_approvals" && approved_again.insert(w.id.clone()) {
                approve_both(&s.approver, w).await;
            }
        }
        let states: Vec<String> = open
            .iter()
            .map(|w| format!("{} {} {:?}", w.id, w.state, w.signer_notes))
            .collect();
        assert!(
            drain_started.elapsed() < settings.drain_limit,
            "{} withdrawals still open {:?} after the storm: {states:#?}",
            open.len(),
            settings.drain_limit
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    report.drain = drain_started.elapsed();

    // Nothing lost and nothing doubled: one withdrawal per request.
    let by_key: BTreeMap<&str, &str> = made
        .iter()
        .map(|(k, id, _)| (k.as_str(), id.as_str()))
        .collect();
    let ids: BTreeSet<&str> = ws.iter().map(|w| w.id.as_str()).collect();
    assert_eq!(ws.len(), made.len(), "withdrawals listed vs requested");
    for (key, id) in &by_key {
        assert!(ids.contains(id), "{key}: withdrawal {id} is missing");
    }
    report.withdrawals = ws.len();
    for w in &ws {
        *report.states.entry(w.state.clone()).or_default() += 1;
        // A retried signing session reuses its logged entry; a second
        // entry for one presignature is refused by the signers as a
        // replay (a crash must not make a withdrawal unsignable so).
        assert!(
            !w.reason
                .contains("was already used by the signing session in log entry"),
            "{}: a retry logged its session twice: {}",
            w.id,
            w.reason
        );
        if w.state != "confirmed" {
            report.not_confirmed.push(format!(
                "{} {}: {} {:?}",
                w.id, w.state, w.reason, w.signer_notes
            ));
        }
    }

    // None paid twice: the confirmed withdrawals' nonces are exactly
    // 0..n, the wallet sent exactly n transactions, each confirmed one's
    // transaction succeeded, and the payee received exactly their sum.
    let amounts: BTreeMap<&str, u128> = made.iter().map(|(_, id, a)| (id.as_str(), *a)).collect();
    let mut nonces = Vec::new();
    let mut paid: u128 = 0;
    for w in ws.iter().filter(|w| w.state == "confirmed") {
        let (_, tx) = decode_unsigned_transfer(&w.unsigned_tx).unwrap();
        nonces.push(tx.nonce);
        let hash: B256 = w
            .tx_hash
            .parse()
            .unwrap_or_else(|_| panic!("{}: tx hash {:?}", w.id, w.tx_hash));
        let receipt = rpc.transaction_receipt(hash).await.unwrap();
        assert!(
            receipt.is_some_and(|r| r.success),
            "{}: transaction {hash} not mined successfully",
            w.id
        );
        paid += amounts[w.id.as_str()];
    }
    nonces.sort_unstable();
    let n = u64::try_from(nonces.len()).unwrap();
    assert_eq!(
        nonces,
        (0..n).collect::<Vec<_>>(),
        "nonces of the confirmed withdrawals"
    );
    report.wallet_nonce = rpc
        .transaction_count(wallet, BlockTag::Latest)
        .await
        .unwrap();
    assert_eq!(
        report.wallet_nonce, n,
        "the wallet sent a transaction no confirmed withdrawal owns"
    );
    let payee_after = rpc.balance(payee).await.unwrap();
    assert_eq!(
        payee_after - payee_before,
        U256::from(paid),
        "the payee received other than the confirmed withdrawals' sum"
    );

    // The ledger balances and agrees with the node; the log verifies.
    s.lead_with_a().await;
    let dir = s.layout().dir.to_str().unwrap().to_owned();
    let started = Instant::now();
    loop {
        let o = crate::audit::custos(&[
            "ledger",
            "reconcile",
            "--rpc",
            &s.anvil.url,
            "--cluster",
            &dir,
        ]);
        if o.ok && o.stdout.contains("ledger and chain agree") {
            break;
        }
        // Deposits are credited by a scan: give it a moment.
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "ledger reconcile: {o}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let fc = FlowCluster {
        backend: connect_as(s.layout(), "payments-backend").await.unwrap(),
        approver: connect_as(s.layout(), "approver-cli").await.unwrap(),
        auditor: connect_as(s.layout(), "auditor").await.unwrap(),
        tc: s.tc,
    };
    crate::audit::settled(&fc).await;
    let layout_dir = fc.tc.cluster.layout().dir.clone();
    let trust = crate::audit::trust_args(&layout_dir);
    let policy = s.policy.to_str().unwrap().to_owned();
    let started = Instant::now();
    let outcome = loop {
        let o = crate::audit::export_and_verify(&layout_dir, &trust, &["--policy", &policy]);
        if o.ok {
            break o;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "custos audit verify --policy after the storm: {o}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    report.verify_warnings = outcome
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("warning"))
        .count();
    report.verify_signatures = outcome
        .stdout
        .lines()
        .find(|l| l.contains("authorised of"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        authorised_all(&report.verify_signatures),
        "not every signature authorised: {outcome}"
    );
    report.client_retries = retries.load(Ordering::Relaxed);
    drop(fc);
    drop(s.b);
    report
}

/// Whether a verifier line `signatures   N authorised of M checked ...` has
/// N = M > 0.
fn authorised_all(line: &str) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    let Some(at) = words.iter().position(|w| *w == "authorised") else {
        return false;
    };
    let n = at.checked_sub(1).and_then(|i| words.get(i));
    let m = words.get(at + 2);
    matches!((n, m), (Some(n), Some(m)) if n == m && *n != "0")
}
