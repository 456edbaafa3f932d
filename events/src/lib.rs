//! Transactional outbox and event delivery to NATS JetStream and signed webhooks
