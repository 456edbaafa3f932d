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

/// Runs `server` (which stops accepting when `stop` is cancelled) until
/// SIGTERM or Ctrl-C, or until it ends by itself (it failed); then cancels
/// `stop` and gives the server until the drain deadline, `drain` from now, to
/// finish its calls in flight ([`drain_server`]). Returns the server's
/// result (`None`: cut off at the deadline) and the deadline, which the
/// rest of the daemon's drain shares.
pub async fn serve_until_signal<T>(
    what: &str,
    server: impl Future<Output = T>,
    calls: &CallCounter,
    stop: &CancellationToken,
    drain: Duration,
) -> (Option<T>, Instant) {
    tokio::pin!(server);
    let failed = tokio::select! {
        () = shutdown_signal() => None,
        r = &mut server => Some(r),
    };
    stop.cancel();
    let deadline = Instant::now() + drain;
    let served = match failed {
        Some(r) => Some(r),
        None => drain_server(what, server, calls, deadline).await,
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
