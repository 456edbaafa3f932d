//! The NATS JetStream sink.

use std::time::Duration;

use async_nats::jetstream;
use tokio::sync::Mutex;

use crate::EventsError;
use crate::outbox::StoredEvent;

/// Where and how events are published to JetStream.
#[derive(Clone, Debug)]
pub struct NatsConfig {
    /// Server URL(s), e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// The stream, created if missing (file storage).
    pub stream: String,
    /// Subject prefix; an event goes to `<prefix>.<event type>` and the
    /// stream captures `<prefix>.>`.
    pub subject_prefix: String,
    /// The name delivery state is recorded under (one per independent stream).
    pub sink_name: String,
    /// How long to wait for a publish acknowledgement.
    pub ack_timeout: Duration,
    /// The stream's deduplication window for new streams: redeliveries of an
    /// event id within it are dropped by the server.
    pub duplicate_window: Duration,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            stream: "CUSTOS_EVENTS".into(),
            subject_prefix: "custos.events".into(),
            sink_name: "nats".into(),
            ack_timeout: Duration::from_secs(5),
            duplicate_window: Duration::from_secs(600),
        }
    }
}

/// Publishes events to a JetStream stream with `Nats-Msg-Id` = event id.
///
/// The client reconnects on its own; the stream is (re)ensured lazily before
/// the first publish and after any failure, so a sink built while NATS is
/// down starts working when it comes back.
pub struct NatsSink {
    config: NatsConfig,
    js: jetstream::Context,
    stream_ready: Mutex<bool>,
}

impl std::fmt::Debug for NatsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSink")
            .field("stream", &self.config.stream)
            .field("subject_prefix", &self.config.subject_prefix)
            .field("sink_name", &self.config.sink_name)
            .finish_non_exhaustive()
    }
}

impl NatsSink {
    /// Connects (without waiting for the server to be up: the client keeps
    /// retrying in the background) and prepares the JetStream context.
    pub async fn connect(config: NatsConfig) -> Result<Self, EventsError> {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(config.url.as_str())
            .await
            .map_err(|e| EventsError::Nats(format!("connect: {e}")))?;
        let mut js = jetstream::new(client);
        js.set_timeout(config.ack_timeout);
        Ok(Self {
            config,
            js,
            stream_ready: Mutex::new(false),
        })
    }

    /// The sink name delivery state is recorded under.
    pub fn name(&self) -> &str {
        &self.config.sink_name
    }

    /// The subject an event type is published on.
    pub fn subject(&self, event_type: &str) -> String {
        format!("{}.{event_type}", self.config.subject_prefix)
    }

    async fn ensure_stream(&self) -> Result<(), EventsError> {
        let mut ready = self.stream_ready.lock().await;
        if *ready {
            return Ok(());
        }
        let config = jetstream::stream::Config {
            name: self.config.stream.clone(),
            subjects: vec![format!("{}.>", self.config.subject_prefix)],
            storage: jetstream::stream::StorageType::File,
            duplicate_window: self.config.duplicate_window,
            ..Default::default()
        };
        tokio::time::timeout(
            self.config.ack_timeout,
            self.js.get_or_create_stream(config),
        )
        .await
        .map_err(|_| EventsError::Nats("stream lookup timed out".into()))?
        .map_err(|e| EventsError::Nats(format!("stream {}: {e}", self.config.stream)))?;
        *ready = true;
        Ok(())
    }

    /// Publishes one event and waits for the stream's acknowledgement (a
    /// duplicate acknowledgement counts: the stream already holds the event).
    pub async fn publish(&self, event: &StoredEvent) -> Result<(), EventsError> {
        self.ensure_stream().await?;
        let result = self.publish_once(event).await;
        if result.is_err() {
            // The stream may have been deleted, or the server restarted
            // without its store: check it again before the next attempt.
            *self.stream_ready.lock().await = false;
        }
        result
    }

    async fn publish_once(&self, event: &StoredEvent) -> Result<(), EventsError> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", event.event_id.as_str());
        let body = event.wire_body()?;
        let publish = async {
            let ack = self
                .js
                .publish_with_headers(self.subject(&event.event_type), headers, body.into())
                .await
                .map_err(|e| EventsError::Nats(format!("publish: {e}")))?;
            ack.await
                .map_err(|e| EventsError::Nats(format!("publish ack: {e}")))
        };
        tokio::time::timeout(self.config.ack_timeout, publish)
            .await
            .map_err(|_| EventsError::Nats("publish ack timed out".into()))??;
        Ok(())
    }
}
