//! Withdrawal events: [`OutboxHook`] writes one outbox row per state change
//! (creation included) in the change's own transaction; [`start_dispatcher`]
//! delivers them to NATS JetStream (when configured) and to registered webhooks.
//!
//! Event type `withdrawal.<state>`; payload
//! `{id, wallet, chain, asset, amount, destination, state, from, detail, initiator, client_id}`;
//! one sequence per withdrawal (`event id = <withdrawal id>:<seq>`), so a
//! consumer sees a withdrawal's states in order and can deduplicate.
//! Deposits: `deposit.credited` and `deposit.reversed` ([`deposit_event`],
//! [`deposit_reversed_event`]), one sequence per credit.

use std::sync::Arc;
use std::time::Duration;

use custos_events::{
    Dispatcher, DispatcherConfig, DispatcherHandle, DispatcherMetrics, Event, EventsError,
    NatsConfig, NatsSink, RetryPolicy,
};
use custos_service::db::Db;
use sqlx::AnyConnection;
use tokio::sync::Notify;

use crate::chain::credits::Credit;
use crate::config::EventSettings;
use crate::error::CoordError;
use crate::withdrawal::State;
use crate::withdrawal::store::{HookFuture, NewWithdrawal, TransitionHook, WithdrawalRow};

/// The event type of a transition to `state`.
pub fn event_type(state: State) -> String {
    format!("withdrawal.{}", state.as_str())
}

/// The event describing `row` entering `to`.
pub fn withdrawal_event(
    row: &WithdrawalRow,
    from: Option<State>,
    to: State,
    detail: &str,
) -> Event {
    let client_id = if row.client_id.is_empty() {
        "unknown".to_owned()
    } else {
        row.client_id.clone()
    };
    Event {
        aggregate_id: row.id.clone(),
        client_id: client_id.clone(),
        event_type: event_type(to),
        payload: serde_json::json!({
            "id": row.id,
            "wallet": row.wallet,
            "chain": row.chain,
            "asset": row.asset,
            "amount": row.amount,
            "destination": row.destination,
            "state": to.as_str(),
            "from": from.map(State::as_str),
            "detail": detail,
            "initiator": row.initiator,
            "client_id": client_id,
        }),
    }
}

/// The event of a deposit credited to its wallet (type `deposit.credited`,
/// one per credit: aggregate `deposit:<ledger reference>`). Deposits belong
/// to no API client: the event goes to the event stream (NATS), not to a
/// client's webhooks. Payload `{wallet, asset, amount, reference, chain,
/// address, block_number, block_hash}`; `reference` is the ledger's (the
/// chain's reference, with `#<n>` when credited again after `n` reversals).
pub fn deposit_event(credit: &Credit) -> Event {
    deposit_change(credit, "deposit.credited", serde_json::Map::new())
}

/// The event of a credit taken back because its block left the chain
/// (type `deposit.reversed`, same aggregate as the credit's event):
/// the credit's payload plus `reason`.
pub fn deposit_reversed_event(credit: &Credit) -> Event {
    let mut more = serde_json::Map::new();
    more.insert("reason".into(), credit.reason.clone().into());
    deposit_change(credit, "deposit.reversed", more)
}

fn deposit_change(
    credit: &Credit,
    event_type: &str,
    more: serde_json::Map<String, serde_json::Value>,
) -> Event {
    let reference = credit.ledger_reference();
    let mut payload = serde_json::json!({
        "wallet": credit.wallet,
        "asset": credit.asset,
        "amount": credit.amount.to_string(),
        "reference": reference,
        "chain": credit.chain,
        "address": credit.address,
        "block_number": credit.block_number,
        "block_hash": credit.block_hash,
    });
    if let Some(p) = payload.as_object_mut() {
        p.extend(more);
    }
    Event {
        aggregate_id: format!("deposit:{reference}"),
        client_id: "custody".to_owned(),
        event_type: event_type.to_owned(),
        payload,
    }
}

/// Enqueues an event for every state change, in the change's transaction.
#[derive(Debug, Default)]
pub struct OutboxHook {
    notify: Option<Arc<Notify>>,
}

impl OutboxHook {
    /// A hook that nudges the dispatcher behind `notify` (if any) after each enqueue.
    pub fn new(notify: Option<Arc<Notify>>) -> Self {
        Self { notify }
    }

    async fn enqueue(
        &self,
        conn: &mut AnyConnection,
        row: &WithdrawalRow,
        from: Option<State>,
        to: State,
        detail: &str,
    ) -> Result<(), CoordError> {
        self.enqueue_event(conn, &withdrawal_event(row, from, to, detail))
            .await
    }

    /// Enqueues `event` on `conn` (the caller's transaction) and nudges the
    /// dispatcher.
    pub async fn enqueue_event(
        &self,
        conn: &mut AnyConnection,
        event: &Event,
    ) -> Result<(), CoordError> {
        custos_events::enqueue(conn, event)
            .await
            .map_err(outbox_err)?;
        self.nudge();
        Ok(())
    }

    /// The first events of a group commit's new withdrawals, in one go.
    async fn enqueue_new(
        &self,
        conn: &mut AnyConnection,
        batch: &[NewWithdrawal],
    ) -> Result<(), CoordError> {
        let events: Vec<Event> = batch
            .iter()
            .flat_map(|w| {
                w.path
                    .iter()
                    .map(|(from, to, detail)| withdrawal_event(&w.row, *from, *to, detail))
            })
            .collect();
        custos_events::enqueue_first(conn, &events)
            .await
            .map_err(outbox_err)?;
        self.nudge();
        Ok(())
    }

    fn nudge(&self) {
        if let Some(n) = &self.notify {
            // The row becomes visible when the caller commits, after this
            // returns: nudge the dispatcher a moment later (a nudge that comes
            // too early is caught by the next poll).
            let n = Arc::clone(n);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(25)).await;
                n.notify_one();
            });
        }
    }
}

fn outbox_err(e: EventsError) -> CoordError {
    match e {
        EventsError::Db(e) => CoordError::storage("outbox", e),
        other => CoordError::storage("outbox", other),
    }
}

impl TransitionHook for OutboxHook {
    fn on_transition<'a>(
        &'a self,
        conn: &'a mut AnyConnection,
        row: &'a WithdrawalRow,
        from: Option<State>,
        to: State,
        detail: &'a str,
    ) -> HookFuture<'a> {
        Box::pin(self.enqueue(conn, row, from, to, detail))
    }

    fn on_new<'a>(
        &'a self,
        conn: &'a mut AnyConnection,
        batch: &'a [NewWithdrawal],
    ) -> HookFuture<'a> {
        Box::pin(self.enqueue_new(conn, batch))
    }
}

/// `[events] webhook_allow_http` and `webhook_allow_private`.
pub fn destination_policy(s: &EventSettings) -> custos_events::DestinationPolicy {
    custos_events::DestinationPolicy {
        allow_http: s.webhook_allow_http,
        allow_private: s.webhook_allow_private,
    }
}

/// The dispatcher settings `[events]` asks for.
pub fn dispatcher_config(s: &EventSettings) -> DispatcherConfig {
    let defaults = DispatcherConfig::default();
    DispatcherConfig {
        poll_interval: Duration::from_millis(s.poll_ms.max(20)),
        webhook_retry: RetryPolicy {
            base: Duration::from_millis(s.webhook_retry_base_ms.max(1)),
            max: Duration::from_millis(s.webhook_retry_max_ms.max(1)),
            max_attempts: Some(s.webhook_max_attempts.max(1)),
        },
        webhook_timeout: Duration::from_millis(s.webhook_timeout_ms.max(100)),
        webhooks: true,
        destinations: destination_policy(s),
        ..defaults
    }
}

/// A running dispatcher with its nudge handle and counters.
#[derive(Debug)]
pub struct RunningDispatcher {
    /// Nudged after each enqueue.
    pub notify: Arc<Notify>,
    /// Delivery counters.
    pub metrics: Arc<DispatcherMetrics>,
    /// Whether a NATS sink is configured.
    pub nats: bool,
    /// The task (kept so it lives as long as the coordinator; taken by
    /// [`super::Adapters::shutdown`]).
    pub handle: std::sync::Mutex<Option<DispatcherHandle>>,
}

/// Starts the delivery task: webhooks always, NATS when `nats_url` is set. The
/// NATS client connects in the background and the stream is created on first
/// use, so a NATS server that is down delays delivery, never the coordinator.
pub async fn start_dispatcher(db: Db, s: &EventSettings) -> Result<RunningDispatcher, CoordError> {
    let mut dispatcher = Dispatcher::new(db, dispatcher_config(s))
        .map_err(|e| CoordError::Internal(format!("event dispatcher: {e}")))?;
    let nats = match &s.nats_url {
        Some(url) if !url.trim().is_empty() => {
            let sink = NatsSink::connect(NatsConfig {
                url: url.clone(),
                stream: s.stream.clone(),
                subject_prefix: s.subject_prefix.clone(),
                ..NatsConfig::default()
            })
            .await
            .map_err(|e| CoordError::invalid("events.nats_url", e.to_string()))?;
            dispatcher = dispatcher.with_nats(sink);
            true
        }
        _ => false,
    };
    let notify = dispatcher.notifier();
    let metrics = dispatcher.metrics();
    let handle = dispatcher.spawn();
    Ok(RunningDispatcher {
        notify,
        metrics,
        nats,
        handle: std::sync::Mutex::new(Some(handle)),
    })
}
