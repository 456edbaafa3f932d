//! Transactional outbox and event delivery to NATS JetStream and signed webhooks.
//!
//! The coordinator calls [`enqueue`] inside the same database transaction as
//! the state change the event describes, so an event exists if and only if
//! the change committed. A [`Dispatcher`] (a tokio task) then delivers every
//! outbox row to each configured sink, at least once, in order per aggregate
//! (withdrawal): event `n + 1` is not sent to a sink before that sink
//! acknowledged event `n`. Delivery state is recorded per (event, sink) in the
//! database, so a restarted dispatcher resumes where the last one stopped.
//! A sink that is down never blocks the caller: the backlog grows and is
//! exposed through [`DispatcherMetrics`].
//!
//! Sinks:
//! - [`NatsSink`]: JetStream, subject `<prefix>.<event type>`, header
//!   `Nats-Msg-Id` = event id so the stream drops redeliveries within its
//!   duplicate window; an event counts as delivered once the publish ack arrives.
//! - webhooks registered per API client ([`register_webhook`]): an HTTP POST of
//!   the event as JSON, signed as described in [`webhook`]; retried with
//!   exponential backoff, then dead-lettered ([`dead_letters`], [`redrive`]).
//!
//! Receivers must deduplicate on the event id (`Custos-Event-Id`): at-least-once
//! means a crash between a sink's acknowledgement and the durable record of it
//! causes one more delivery.

#![deny(missing_docs)]

pub mod destination;
mod dispatcher;
mod nats;
mod outbox;
pub mod webhook;

pub use destination::{DestinationPolicy, check_destination};
pub use dispatcher::{
    Dispatcher, DispatcherConfig, DispatcherHandle, DispatcherMetrics, MetricsSnapshot, RetryPolicy,
};
pub use nats::{NatsConfig, NatsSink};
pub use outbox::{
    DeadLetter, DeliveryState, Event, StoredEvent, Webhook, create_schema, dead_letters,
    delivery_state, enqueue, enqueue_first, redrive, register_webhook, schema, set_webhook_active,
    webhooks,
};
pub use webhook::{REPLAY_WINDOW_SECS, sign_webhook, verify_webhook};

/// Why an outbox or delivery operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// An event type that cannot be a NATS subject suffix (`[a-z0-9_-]` tokens
    /// separated by dots).
    #[error("invalid event type `{0}`")]
    InvalidEventType(String),
    /// An aggregate id that is empty, or an empty client id.
    #[error("invalid {0}")]
    InvalidId(&'static str),
    /// A payload that does not serialize, or a stored one that does not parse.
    #[error("payload: {0}")]
    Payload(#[from] serde_json::Error),
    /// Concurrent writers kept taking the next sequence number of an aggregate.
    #[error("could not allocate a sequence number for aggregate {0}")]
    SequenceContention(String),
    /// A webhook registration with an unusable URL or a short secret.
    #[error("invalid webhook: {0}")]
    InvalidWebhook(String),
    /// A NATS connection, stream or publish failure.
    #[error("nats: {0}")]
    Nats(String),
    /// A webhook delivery failure (transport error or non-2xx status).
    #[error("webhook: {0}")]
    WebhookDelivery(String),
    /// A received webhook whose signature or timestamp does not verify.
    #[error("webhook verification failed: {0}")]
    WebhookVerification(&'static str),
    /// Stored data that does not parse.
    #[error("corrupt outbox data: {0}")]
    Corrupt(String),
}

pub(crate) use custos_clock::now_ms_i64 as now_ms;
