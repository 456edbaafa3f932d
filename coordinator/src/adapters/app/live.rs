//! `GET /app/events`: Server-Sent Events telling a signed-in approver's
//! page that withdrawals changed, so it refetches what it shows.
//!
//! # Design
//! The event carries no data (the page reads the withdrawal through the
//! API, with the session's role checks), so nothing is pushed that a
//! fetch would not show. One is sent after every change the withdrawal
//! engine commits ([`crate::withdrawal::Engine::subscribe`]). A stream
//! ends when its session ends, when the coordinator shuts down (an open
//! stream would otherwise hold the HTTP server's drain), and after
//! [`STREAM_LIMIT`] anyway; the browser's `EventSource` reconnects, and
//! the reconnect is authenticated again.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;

use super::AppState;
use super::guard;
use crate::adapters::http::ApiError;

/// The longest one stream stays open.
pub const STREAM_LIMIT: Duration = Duration::from_secs(60);

/// `GET /app/events`.
pub async fn events(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let session = guard::signed_in(&s.sessions, &headers)?;
    let changes = s.api.engine()?.subscribe();
    let left = Duration::from_secs(
        u64::try_from(
            session
                .expires_unix
                .saturating_sub(custos_clock::now_secs()),
        )
        .unwrap_or(0),
    )
    .min(STREAM_LIMIT);
    let until = tokio::time::Instant::from_std(Instant::now() + left);
    let stop = s.stop.clone();
    let hello = futures::stream::once(async {
        Ok::<_, Infallible>(
            Event::default()
                .event("hello")
                .data("{}")
                .retry(Duration::from_secs(1)),
        )
    });
    let changed = futures::stream::unfold(changes, |mut rx| async move {
        match rx.recv().await {
            Ok(()) | Err(RecvError::Lagged(_)) => Some((
                Ok::<_, Infallible>(Event::default().event("change").data("{}")),
                rx,
            )),
            Err(RecvError::Closed) => None,
        }
    });
    let ends = async move {
        tokio::select! {
            () = tokio::time::sleep_until(until) => {}
            () = stop.cancelled_owned() => {}
        }
    };
    let stream = hello.chain(changed).take_until(Box::pin(ends));
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
