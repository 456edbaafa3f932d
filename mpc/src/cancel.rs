//! Cancelling protocol work that runs on a blocking thread.
//!
//! Why: tokio cannot stop a `spawn_blocking` task, and cggmp21's aux-info
//! ceremony computes for seconds between its network awaits (Paillier proofs
//! for every peer). A session that timed out used to keep burning CPU until
//! its next receive, and on a busy 2-core host that made the next attempt
//! time out too. The protocols report their progress to a tracer at every
//! stage; [`CancelTracer`] checks the session's [`CancelToken`] there and
//! unwinds the blocking thread when the session was cancelled. The unwind
//! carries [`Cancelled`] (no panic message, no hook) and [`block_on`]
//! catches exactly that payload and turns it into [`MpcError::Cancelled`].

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cggmp21::progress::{Event, Tracer};

use crate::error::MpcError;

/// Shared flag: set once, when the session's owner gives up on it.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A fresh, not cancelled token.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the protocol work to stop at its next stage boundary.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Unwind payload of a cancelled protocol thread.
#[derive(Debug)]
pub struct Cancelled;

/// A cggmp21 progress tracer that stops the protocol once its token is cancelled.
pub(crate) struct CancelTracer(pub(crate) CancelToken);

impl Tracer for CancelTracer {
    fn trace_event(&mut self, _event: Event) {
        if self.0.is_cancelled() {
            std::panic::resume_unwind(Box::new(Cancelled));
        }
    }
}

/// Runs a protocol future to completion on the current (blocking) thread;
/// a cancellation through its [`CancelTracer`] ends it with
/// [`MpcError::Cancelled`]. Any other panic keeps unwinding.
pub fn block_on<T>(
    token: &CancelToken,
    fut: impl Future<Output = Result<T, MpcError>>,
) -> Result<T, MpcError> {
    if token.is_cancelled() {
        return Err(MpcError::Cancelled);
    }
    match std::panic::catch_unwind(AssertUnwindSafe(|| futures::executor::block_on(fut))) {
        Ok(result) => result,
        Err(payload) if payload.is::<Cancelled>() => Err(MpcError::Cancelled),
        Err(payload) => std::panic::resume_unwind(payload),
    }
}
