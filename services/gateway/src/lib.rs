//! The command side: takes GitHub deliveries, checks them, and records them on JetStream.
//!
//! # Layout
//!
//! - [`signature`]: `X-Hub-Signature-256` verification and the [`Secret`] type.
//! - [`webhook`]: `POST /webhooks/github`.
//! - [`commands`]: `POST /api/builds/{id}/cancel` and `/restart`.
//! - [`error`]: [`GatewayError`], the one error type of the HTTP surface.
//!
//! # Invariants
//!
//! - **A delivery is answered 2xx only after JetStream acknowledged it.**
//! - **Nothing is recorded before the signature over the raw body checked out.**
//! - The gateway decides nothing about builds; it only refuses what cannot be a valid delivery.

pub mod commands;
pub mod error;
pub mod signature;
pub mod webhook;

use std::sync::Arc;

use axum::Router;
use hermes_nats::Bus;

pub use error::GatewayError;
pub use signature::Secret;

/// The largest body accepted; GitHub never sends more than 25 MB.
pub const MAX_BODY: usize = 25 * 1024 * 1024;

#[derive(Clone)]
pub struct GatewayState {
    pub bus: Bus,
    pub secret: Arc<Secret>,
    /// `HERMES_API_TOKEN`: the bearer token of the API's commands; `None` disables them.
    pub api_token: Option<Arc<Secret>>,
}

/// What the handlers get: the state behind one `Arc`, so that handing it to a request (which
/// axum does more than once per request) is one reference count, not a copy of two NATS clients.
pub(crate) type Shared = Arc<GatewayState>;

/// The gateway's routes.
pub fn router(state: GatewayState) -> Router {
    webhook::routes()
        .merge(commands::routes())
        .with_state(Arc::new(state))
}
