//! The shell every daemon's `main` shares: runtime, exit codes, shutdown.
//!
//! # Shutdown
//!
//! A daemon has one stop signal, a [`CancellationToken`], cancelled on
//! SIGTERM or Ctrl-C ([`shutdown_signal`]). Every background task watches it:
//! its long-lived tasks are spawned into a [`Tasks`] (by name, so the drain
//! can say what finished and what was cut off), its servers stop accepting
//! when it fires and then wait for the calls in flight ([`CallCounter`]
//! counts them). `run` waits for all of it up to one drain deadline, aborts
//! what is left, closes its storage and returns: no task outlives `run`.

use std::collections::HashMap;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
pub use tokio_util::sync::CancellationToken;

/// Default of the daemons' `drain_timeout_secs`: how long a shutdown waits
/// for work in progress. Long enough for a signing round on a loaded host,
/// short enough for a supervisor's default kill timeout (systemd 90 s,
/// Kubernetes 30 s).
pub const DEFAULT_DRAIN_SECS: u64 = 10;

/// How long the runtime waits, once `run` has returned, for blocking threads
/// still running (a protocol computation cut off by the drain deadline stops
/// only at its next stage, and prime generation not at all). They are
/// abandoned after this, so the exit stays bounded; what they were doing is
/// what a crash would have interrupted, which every store survives.
const RUNTIME_GRACE: Duration = Duration::from_secs(1);

/// Runs `run` on a multi-threaded runtime and turns its outcome into the
/// process exit code: `Err((code, error))` prints `error: ...` to stderr and
/// exits with `code` ([`crate::EXIT_CONFIG`] for bad configuration).
pub fn run_main<E: std::fmt::Display>(run: impl Future<Output = Result<(), (u8, E)>>) -> ExitCode {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = rt.block_on(run);
    // Dropping the runtime would wait for every blocking thread, however long.
    rt.shutdown_timeout(RUNTIME_GRACE);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, e)) => {
            eprintln!("error: {e}");
            ExitCode::from(code)
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C, for graceful shutdown.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
    tracing::info!("shutting down");
}

/// A daemon's long-lived background tasks, by name, under one stop signal.
/// What `run` starts here, `run` waits for ([`Tasks::join_until`]).
#[derive(Debug)]
pub struct Tasks {
    stop: CancellationToken,
    set: JoinSet<()>,
    names: HashMap<tokio::task::Id, &'static str>,
}

/// What became of a [`Tasks`] at shutdown, by task name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Joined {
    /// Ended on their own (after finishing what they were doing when the
    /// stop signal came, or earlier).
    pub finished: Vec<&'static str>,
    /// Still running at the deadline: aborted.
    pub cut_off: Vec<&'static str>,
    /// Ended by a panic.
    pub panicked: Vec<&'static str>,
}

impl Tasks {
    /// An empty set whose tasks stop when `stop` is cancelled.
    pub fn new(stop: CancellationToken) -> Self {
        Self {
            stop,
            set: JoinSet::new(),
            names: HashMap::new(),
        }
    }

    /// The stop signal the tasks watch.
    pub fn stop(&self) -> &CancellationToken {
        &self.stop
    }

    /// Spawns `task`, which watches the stop signal itself and ends once it
    /// has finished what it was doing (a round in flight, a request).
    pub fn spawn(
        &mut self,
        name: &'static str,
        task: impl Future<Output = ()> + Send + 'static,
    ) -> &mut Self {
        let handle = self.set.spawn(task);
        self.names.insert(handle.id(), name);
        self
    }

    /// Spawns `task`, which has nothing worth finishing (a poller, a
    /// gauge): it is dropped at its next `.await` once the stop signal comes.
    pub fn spawn_until_stopped(
        &mut self,
        name: &'static str,
        task: impl Future<Output = ()> + Send + 'static,
    ) -> &mut Self {
        let stop = self.stop.clone();
        self.spawn(name, async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = task => {}
            }
        })
    }

    /// Waits for every task until `deadline`, then aborts the rest (and
    /// waits for them to unwind).
    pub async fn join_until(mut self, deadline: Instant) -> Joined {
        let mut joined = Joined::default();
        loop {
            match tokio::time::timeout_at(deadline, self.set.join_next_with_id()).await {
                Ok(None) => break,
                Ok(Some(Ok((id, ())))) => joined.finished.push(self.name(id)),
                Ok(Some(Err(e))) => {
                    let name = self.name(e.id());
                    if e.is_panic() {
                        joined.panicked.push(name);
                    } else {
                        joined.cut_off.push(name);
                    }
                }
                Err(_) => {
                    self.set.abort_all();
                    while let Some(r) = self.set.join_next_with_id().await {
                        match r {
                            Err(e) if e.is_panic() => joined.panicked.push(self.name(e.id())),
                            Err(e) => joined.cut_off.push(self.name(e.id())),
                            Ok((id, ())) => joined.finished.push(self.name(id)),
                        }
                    }
                    break;
                }
            }
        }
        joined
    }

    fn name(&self, id: tokio::task::Id) -> &'static str {
        self.names.get(&id).copied().unwrap_or("(unnamed)")
    }
}

impl Joined {
    /// Logs the outcome: one line, a warning when anything was cut off or panicked.
    pub fn log(&self) {
        if self.cut_off.is_empty() && self.panicked.is_empty() {
            tracing::info!(finished = ?self.finished, "background tasks drained");
        } else {
            tracing::warn!(
                finished = ?self.finished,
                cut_off = ?self.cut_off,
                panicked = ?self.panicked,
                "background tasks not all drained"
            );
        }
    }
}

/// The calls a server is handling right now: what a drain waits for, and
/// what it reports as cut off if the deadline comes first.
#[derive(Clone, Debug, Default)]
pub struct CallCounter(Arc<AtomicUsize>);

impl CallCounter {
    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    /// `service`, counting its calls here (from the request until the
    /// response head; a streaming response's body is the service's business).
    pub fn wrap<S>(&self, service: S) -> Counted<S> {
        Counted {
            inner: service,
            calls: self.clone(),
        }
    }
}

/// Decrements the counter when the call ends, however it ends.
struct InCall(Arc<AtomicUsize>);

impl Drop for InCall {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A gRPC service whose calls a [`CallCounter`] counts.
#[derive(Clone, Debug)]
pub struct Counted<S> {
    inner: S,
    calls: CallCounter,
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for Counted<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, R> tonic::codegen::Service<R> for Counted<S>
where
    S: tonic::codegen::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        self.calls.0.fetch_add(1, Ordering::SeqCst);
        let guard = InCall(self.calls.0.clone());
        let call = self.inner.call(req);
        Box::pin(async move {
            let _guard = guard;
            call.await
        })
    }
}

/// What a daemon's gRPC health service says: SERVING while it runs,
/// NOT_SERVING from the moment its drain starts, so that load balancers
/// and supervisors stop sending it work while calls in flight finish.
#[derive(Clone)]
pub struct Readiness {
    reporter: tonic_health::server::HealthReporter,
    services: Vec<&'static str>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("services", &self.services)
            .finish_non_exhaustive()
    }
}

impl Readiness {
    /// Marks the server (`""`) and each of `services` (their gRPC names,
    /// `NamedService::NAME`) SERVING in `reporter`.
    pub async fn serving(
        reporter: tonic_health::server::HealthReporter,
        services: &[&'static str],
    ) -> Self {
        let r = Self {
            reporter,
            services: services.to_vec(),
        };
        r.set(tonic_health::ServingStatus::Serving).await;
        r
    }

    /// Marks them all NOT_SERVING.
    pub async fn draining(&self) {
        self.set(tonic_health::ServingStatus::NotServing).await;
    }

    async fn set(&self, status: tonic_health::ServingStatus) {
        for name in std::iter::once("").chain(self.services.iter().copied()) {
            self.reporter.set_service_status(name, status).await;
        }
    }
}

/// How a gRPC server drains (see [`serve_until_signal`]).
#[derive(Clone, Copy, Debug)]
pub struct Drain<'a> {
    /// The server's name in logs ("gRPC API").
    pub what: &'a str,
    /// Its calls in flight.
    pub calls: &'a CallCounter,
    /// Its health service.
    pub readiness: &'a Readiness,
    /// The daemon's stop signal: cancelled when the drain starts (the
    /// server's [`crate::limits::Guard`] then refuses new calls).
    pub stop: &'a CancellationToken,
    /// The server's own shutdown: cancelled once the calls in flight have
    /// finished (or at the deadline); the server then stops accepting.
    pub accepting: &'a CancellationToken,
    /// How long the drain may take (`drain_timeout_secs`).
    pub timeout: Duration,
}

/// Runs `server` (which stops accepting when `drain.accepting` is
/// cancelled) until SIGTERM or Ctrl-C, or until it ends by itself (it
/// failed); see [`serve_until`].
pub async fn serve_until_signal<T>(
    server: impl Future<Output = T>,
    drain: Drain<'_>,
) -> (Option<T>, Instant) {
    serve_until(server, drain, shutdown_signal()).await
}

/// Runs `server` until `signal` resolves (or the server ends by itself),
/// then drains it:
///
/// 1. health checks answer NOT_SERVING and `stop` is cancelled (background
///    tasks stop; the server's guard refuses new calls, `UNAVAILABLE`);
/// 2. the server keeps answering until its calls in flight have finished,
///    or until the drain deadline, `timeout` from the signal;
/// 3. it stops accepting and is given until the deadline to close
///    ([`drain_server`]).
///
/// Returns the server's result (`None`: cut off at the deadline) and the
/// deadline, which the rest of the daemon's drain shares.
pub async fn serve_until<T>(
    server: impl Future<Output = T>,
    drain: Drain<'_>,
    signal: impl Future<Output = ()>,
) -> (Option<T>, Instant) {
    tokio::pin!(server);
    let failed = tokio::select! {
        () = signal => None,
        r = &mut server => Some(r),
    };
    drain.readiness.draining().await;
    drain.stop.cancel();
    let deadline = Instant::now() + drain.timeout;
    if let Some(r) = failed {
        drain.accepting.cancel();
        return (Some(r), deadline);
    }
    let in_flight = drain.calls.in_flight();
    tracing::info!(
        server = drain.what,
        in_flight,
        "draining: health NOT_SERVING, new calls refused"
    );
    let ended = loop {
        if drain.calls.in_flight() == 0 || Instant::now() >= deadline {
            break None;
        }
        tokio::select! {
            r = &mut server => break Some(r),
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    };
    drain.accepting.cancel();
    let served = match ended {
        Some(r) => Some(r),
        None => drain_server(drain.what, server, drain.calls, deadline).await,
    };
    (served, deadline)
}

/// Waits until `server`, already told to stop, has finished its calls in
/// flight, or until `deadline`; logs which. Returns the server's result, or
/// `None` if the deadline came first (the server future is then dropped:
/// its connections end with the runtime).
pub async fn drain_server<T>(
    what: &str,
    server: impl Future<Output = T>,
    calls: &CallCounter,
    deadline: Instant,
) -> Option<T> {
    let waiting = calls.in_flight();
    match tokio::time::timeout_at(deadline, server).await {
        Ok(r) => {
            tracing::info!(server = what, calls_drained = waiting, "server drained");
            Some(r)
        }
        Err(_) => {
            tracing::warn!(
                server = what,
                calls_cut_off = calls.in_flight(),
                "drain deadline reached: calls still in flight are cut off"
            );
            None
        }
    }
}

/// Whether an id is safe as a file name and a database key: 1-64 letters,
/// digits, `-`, `_`, `.`, not starting with `.`.
pub fn is_valid_id(id: &str) -> bool {
    custos_credentials::is_valid_client_id(id)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn tasks_report_what_finished_and_what_was_cut_off() {
        let stop = CancellationToken::new();
        let mut tasks = Tasks::new(stop.clone());
        let s = stop.clone();
        tasks.spawn("obeys", async move { s.cancelled().await });
        tasks.spawn_until_stopped("poller", std::future::pending());
        tasks.spawn("stubborn", std::future::pending());
        stop.cancel();
        let j = tasks
            .join_until(Instant::now() + Duration::from_millis(200))
            .await;
        let mut finished = j.finished.clone();
        finished.sort();
        assert_eq!(finished, ["obeys", "poller"]);
        assert_eq!(j.cut_off, ["stubborn"]);
        assert!(j.panicked.is_empty());
    }

    #[tokio::test]
    async fn counted_calls_are_in_flight_until_they_end() {
        use tonic::codegen::Service;
        let calls = CallCounter::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let rx = Arc::new(tokio::sync::Mutex::new(Some(rx)));
        let mut svc = calls.wrap(tower_fn(move |()| {
            let rx = rx.clone();
            async move {
                if let Some(rx) = rx.lock().await.take() {
                    let _ = rx.await;
                }
                Ok::<_, std::convert::Infallible>(())
            }
        }));
        let call = tokio::spawn(svc.call(()));
        tokio::task::yield_now().await;
        assert_eq!(calls.in_flight(), 1);
        tx.send(()).unwrap();
        call.await.unwrap().unwrap();
        assert_eq!(calls.in_flight(), 0);
    }

    /// Holds the calls that carry `x-test-hold` until the gate opens.
    #[derive(Clone)]
    struct Hold<S> {
        inner: S,
        gate: Arc<tokio::sync::Semaphore>,
    }

    impl<S: tonic::server::NamedService> tonic::server::NamedService for Hold<S> {
        const NAME: &'static str = S::NAME;
    }

    impl<S, B> tonic::codegen::Service<axum::http::Request<B>> for Hold<S>
    where
        S: tonic::codegen::Service<axum::http::Request<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        B: Send + 'static,
    {
        type Response = S::Response;
        type Error = S::Error;
        type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;
        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
            self.inner.poll_ready(cx)
        }
        fn call(&mut self, req: axum::http::Request<B>) -> Self::Future {
            let hold = req.headers().contains_key("x-test-hold");
            let gate = self.gate.clone();
            let mut inner = self.inner.clone();
            Box::pin(async move {
                if hold {
                    let _ = gate.acquire().await;
                }
                inner.call(req).await
            })
        }
    }

    /// A real tonic server drained by [`serve_until`]: after the signal, with
    /// a call still in flight, health checks are answered NOT_SERVING and
    /// other new calls are refused UNAVAILABLE; once the call finishes the
    /// server stops and `serve_until` returns.
    #[tokio::test]
    async fn health_answers_not_serving_while_draining() {
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::health_client::HealthClient;
        use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (reporter, health) = tonic_health::server::health_reporter();
        let readiness = Readiness::serving(reporter, &["test.Service"]).await;
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let calls = CallCounter::default();
        let stop = CancellationToken::new();
        let accepting = CancellationToken::new();
        let guard = crate::limits::Guard::new(
            "test",
            crate::limits::Protocol::Grpc,
            crate::limits::LimitSettings::default(),
            Arc::new(|_| None),
            Some(stop.clone()),
        );
        let server = tonic::transport::Server::builder()
            .layer(guard.clone())
            .add_service(calls.wrap(Hold {
                inner: health,
                gate: gate.clone(),
            }))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                accepting.clone().cancelled_owned(),
            );
        let (signal_tx, signal_rx) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn({
            let (calls, stop, accepting, readiness) = (
                calls.clone(),
                stop.clone(),
                accepting.clone(),
                readiness.clone(),
            );
            async move {
                let drain = Drain {
                    what: "test",
                    calls: &calls,
                    readiness: &readiness,
                    stop: &stop,
                    accepting: &accepting,
                    timeout: Duration::from_secs(20),
                };
                serve_until(server, drain, async {
                    let _ = signal_rx.await;
                })
                .await
                .0
            }
        });

        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let check = |hold: bool| {
            let mut client = HealthClient::new(channel.clone());
            async move {
                let mut req = tonic::Request::new(HealthCheckRequest {
                    service: String::new(),
                });
                if hold {
                    req.metadata_mut()
                        .insert("x-test-hold", "1".parse().unwrap());
                }
                client.check(req).await.map(|r| r.into_inner())
            }
        };
        let status = |r: &HealthCheckResponse| ServingStatus::try_from(r.status).unwrap();
        assert_eq!(status(&check(false).await.unwrap()), ServingStatus::Serving);

        let held = tokio::spawn(check(true));
        while calls.in_flight() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        signal_tx.send(()).unwrap();
        while !stop.is_cancelled() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Draining, one call in flight: the server still answers, NOT_SERVING.
        let during = check(false).await.unwrap();
        assert_eq!(status(&during), ServingStatus::NotServing);
        // Any other method is refused UNAVAILABLE with a retry hint.
        let mut other = tonic::client::Grpc::new(channel.clone());
        other.ready().await.unwrap();
        let e = other
            .unary::<(), (), _>(
                tonic::Request::new(()),
                "/test.Service/Work".parse().unwrap(),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e}");
        assert_eq!(e.metadata().get("retry-after").unwrap(), "1");
        assert!(!serving.is_finished());

        // The call in flight finishes (answered, NOT_SERVING by now), then
        // the server stops.
        gate.add_permits(1);
        let held = held.await.unwrap().unwrap();
        assert_eq!(status(&held), ServingStatus::NotServing);
        drop(other);
        drop(channel);
        let served = tokio::time::timeout(Duration::from_secs(10), serving)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(served, Some(Ok(()))), "{served:?}");
        assert!(accepting.is_cancelled());
        assert_eq!(
            guard.refused().draining.load(Ordering::Relaxed),
            1,
            "{}",
            crate::limits::metrics_text(std::slice::from_ref(&guard))
        );
    }

    /// A minimal service from a closure (tower's `service_fn`, without tower).
    fn tower_fn<F, Fut>(f: F) -> FnService<F>
    where
        F: FnMut(()) -> Fut,
    {
        FnService(f)
    }

    struct FnService<F>(F);

    impl<F, Fut, T, E> tonic::codegen::Service<()> for FnService<F>
    where
        F: FnMut(()) -> Fut,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        type Response = T;
        type Error = E;
        type Future = Fut;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), E>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, req: ()) -> Fut {
            (self.0)(req)
        }
    }
}
