//! Webhook signing, verification and delivery.
//!
//! Every webhook request is a `POST` of the event as JSON
//! (`{"id", "type", "aggregate_id", "seq", "created_at_ms", "data"}`) with:
//!
//! - `Custos-Event-Id`: the event id; receivers deduplicate on it (delivery
//!   is at least once);
//! - `Custos-Timestamp`: Unix seconds at sending time (each retry is re-signed);
//! - `Custos-Signature`: `v1=<hex HMAC-SHA256(secret, timestamp + "." + body)>`
//!   (several comma-separated `v1=` values may appear during secret rotation).
//!
//! Receivers must check the signature over the raw body and refuse a
//! timestamp more than [`REPLAY_WINDOW_SECS`] (5 minutes) away from their own
//! clock, which bounds how long a captured request can be replayed;
//! [`verify_webhook`] does both. A 2xx answer acknowledges the event; anything
//! else (or no answer within the timeout) is retried with exponential backoff
//! and finally dead-lettered.

use hmac::{Hmac, Mac};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use sha2::Sha256;

use crate::EventsError;
use crate::outbox::{StoredEvent, Webhook};

/// Header carrying the event id.
pub const HEADER_EVENT_ID: &str = "Custos-Event-Id";
/// Header carrying the Unix timestamp (seconds) the request was signed at.
pub const HEADER_TIMESTAMP: &str = "Custos-Timestamp";
/// Header carrying the signature(s).
pub const HEADER_SIGNATURE: &str = "Custos-Signature";
/// How far a request's timestamp may be from the receiver's clock, in seconds.
pub const REPLAY_WINDOW_SECS: u64 = 300;

fn mac(secret: &str, timestamp: u64, body: &[u8]) -> Result<Hmac<Sha256>, EventsError> {
    // HMAC takes keys of any length, so this error is unreachable in
    // practice; it is still an error rather than a silent fallback key.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .map_err(|_| EventsError::InvalidWebhook("unusable secret".into()))?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(mac)
}

/// The `Custos-Signature` value for `body` sent at `timestamp` (Unix seconds).
pub fn sign_webhook(secret: &str, timestamp: u64, body: &[u8]) -> Result<String, EventsError> {
    Ok(format!(
        "v1={}",
        hex::encode(mac(secret, timestamp, body)?.finalize().into_bytes())
    ))
}

/// Verifies a received webhook: the `Custos-Timestamp` is within
/// [`REPLAY_WINDOW_SECS`] of `now_unix` and one `v1=` value of
/// `Custos-Signature` is the HMAC of `timestamp.body` under `secret`
/// (compared in constant time). Returns the event id on success.
pub fn verify_webhook(
    secret: &str,
    headers: &HeaderMap,
    body: &[u8],
    now_unix: u64,
) -> Result<String, EventsError> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or(EventsError::WebhookVerification("missing header"))
    };
    let event_id = header(HEADER_EVENT_ID)?;
    let timestamp: u64 = header(HEADER_TIMESTAMP)?
        .trim()
        .parse()
        .map_err(|_| EventsError::WebhookVerification("bad timestamp"))?;
    if timestamp.abs_diff(now_unix) > REPLAY_WINDOW_SECS {
        return Err(EventsError::WebhookVerification(
            "timestamp outside the replay window",
        ));
    }
    let signatures = header(HEADER_SIGNATURE)?;
    let expected = mac(secret, timestamp, body)?;
    let valid = signatures
        .split(',')
        .filter_map(|s| s.trim().strip_prefix("v1="))
        .filter_map(|h| hex::decode(h).ok())
        .any(|sig| expected.clone().verify_slice(&sig).is_ok());
    if valid {
        Ok(event_id.to_string())
    } else {
        Err(EventsError::WebhookVerification("signature mismatch"))
    }
}

fn unix_now() -> u64 {
    custos_clock::now_ms() / 1000
}

/// POSTs `event` to `webhook`; `Ok` only on a 2xx answer.
pub(crate) async fn deliver(
    client: &reqwest::Client,
    webhook: &Webhook,
    event: &StoredEvent,
    config: &crate::DispatcherConfig,
) -> Result<(), EventsError> {
    // The resolver keeps names to public addresses; an IP literal is checked here.
    crate::destination::check_url(&webhook.url, webhook.destinations(config.destinations))
        .map_err(|e| EventsError::WebhookDelivery(e.to_string()))?;
    let timeout = config.webhook_timeout;
    let body = event.wire_body()?;
    let timestamp = unix_now();
    let signature = sign_webhook(&webhook.secret, timestamp, &body)?;
    let value = |s: &str| {
        HeaderValue::from_str(s)
            .map_err(|_| EventsError::WebhookDelivery("bad header value".into()))
    };
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(HEADER_EVENT_ID, value(&event.event_id)?);
    headers.insert(HEADER_TIMESTAMP, value(&timestamp.to_string())?);
    headers.insert(HEADER_SIGNATURE, value(&signature)?);
    let response = client
        .post(&webhook.url)
        .headers(headers)
        .body(body)
        .timeout(timeout)
        .send()
        .await
        // `without_url`: the URL may carry credentials or tokens.
        .map_err(|e| EventsError::WebhookDelivery(e.without_url().to_string()))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(EventsError::WebhookDelivery(format!("status {status}")))
    }
}
