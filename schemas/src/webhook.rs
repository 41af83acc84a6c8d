//! How a GitHub delivery is recorded on `HERMES_WEBHOOKS`.
//!
//! The message payload is the delivery's JSON document, byte for byte (for a form-encoded delivery,
//! the JSON of its `payload` field). What came in the HTTP headers travels in these NATS headers,
//! so the body is never re-encoded.

/// `X-GitHub-Event`.
pub const EVENT: &str = "Hermes-GitHub-Event";
/// `X-GitHub-Delivery`.
pub const DELIVERY: &str = "Hermes-GitHub-Delivery";
/// `X-GitHub-Hook-ID`.
pub const HOOK_ID: &str = "Hermes-GitHub-Hook-ID";
/// RFC 3339 time the gateway accepted the delivery.
pub const RECEIVED_AT: &str = "Hermes-Received-At";

/// The dedupe key of a delivery: hook id and delivery id, since one GitHub event is delivered
/// with the same delivery id to every hook that subscribes to it.
pub fn delivery_key(hook_id: &str, delivery: &str) -> String {
    format!("{hook_id}:{delivery}")
}
