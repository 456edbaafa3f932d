//! The shell every daemon's `main` shares: runtime, exit codes, shutdown.

use std::process::ExitCode;

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
    match rt.block_on(run) {
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

/// Whether an id is safe as a file name and a database key: 1-64 letters,
/// digits, `-`, `_`, `.`, not starting with `.`.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}
