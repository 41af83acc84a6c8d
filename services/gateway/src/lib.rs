//! The command side: takes GitHub deliveries and every write of the API, checks them, and
//! records them on JetStream.
//!
//! # Layout
//!
//! - [`signature`]: `X-Hub-Signature-256` verification and the [`Secret`] type.
//! - [`webhook`]: `POST /webhooks/github`, verified with the repository's own secret when it was
//!   activated through Hermes, else with the global one.
//! - [`refusals`]: the log of refused deliveries, limited in rate.
//! - [`commands`]: `POST /api/builds/{id}/cancel`, `/restart` and `/approve`.
//! - [`account`]: signing in with GitHub (`/login`, `/auth/callback`), `POST /logout`.
//! - [`repos`]: `POST /api/repos/{owner}/{name}/activate` and `/deactivate`.
//! - [`error`]: [`GatewayError`], the one error type of the HTTP surface.
//!
//! # Invariants
//!
//! - **A delivery is answered 2xx only after JetStream acknowledged it.**
//! - **Nothing is recorded before the signature over the raw body checked out**, with the secret
//!   of the hook that sent it.
//! - **Every `POST` is made by the API token or a signed-in user with the right to it**, and one
//!   authenticated by the session cookie carries the session's CSRF token.
//! - The gateway decides nothing about builds; it only refuses what cannot be a valid request.

pub mod account;
pub mod commands;
pub mod error;
pub mod refusals;
pub mod repos;
pub mod signature;
pub mod webhook;

use std::sync::Arc;

use axum::Router;
use hermes_access::{Auth, Sessions, Vault};
use hermes_github::{GitHub, OAuthApp};
use hermes_nats::Bus;
use hermes_schemas::github::ForkPolicy;

pub use error::GatewayError;
pub use signature::Secret;

/// The largest body accepted; GitHub never sends more than 25 MB.
pub const MAX_BODY: usize = 25 * 1024 * 1024;

/// Signing in with GitHub, when it is on.
#[derive(Clone, Debug)]
pub struct SignIn {
    pub app: OAuthApp,
    pub github: GitHub,
    /// `HERMES_PUBLIC_URL`, without a trailing `/`: the callback's and the webhooks' base.
    pub public_url: String,
}

impl SignIn {
    /// Whether the session cookie must be `Secure` (Hermes is reached over https).
    pub fn secure_cookie(&self) -> bool {
        self.public_url.starts_with("https://")
    }
}

#[derive(Clone)]
pub struct GatewayState {
    pub bus: Bus,
    /// `HERMES_GITHUB_WEBHOOK_SECRET`: verifies the deliveries of repositories not activated
    /// through Hermes. `None`: only activated repositories' deliveries are accepted.
    pub secret: Option<Arc<Secret>>,
    /// Who sent a request: the API token, sessions.
    pub auth: Auth,
    /// The webhook secrets of activated repositories (`None` only in tests without NATS).
    pub vault: Option<Arc<Vault>>,
    /// Signing in and activating repositories, when sign-in is on.
    pub sign_in: Option<SignIn>,
    /// What to do with pull requests from forks (to tell the sender what its delivery makes).
    pub fork_policy: ForkPolicy,
    /// Where browsers and scripts reach Hermes, for the URLs in answers (`None`: paths only).
    pub public_url: Option<String>,
    /// The log of refused deliveries.
    pub refusals: Arc<refusals::Refusals>,
}

impl GatewayState {
    /// A gateway with only a global webhook secret and an API token: what tests and benchmarks
    /// use.
    pub fn new(bus: Bus, secret: Option<Secret>, api_token: Option<&str>) -> Self {
        Self {
            bus,
            secret: secret.map(Arc::new),
            auth: Auth::new(api_token, None, None),
            vault: None,
            sign_in: None,
            fork_policy: ForkPolicy::default(),
            public_url: None,
            refusals: Arc::default(),
        }
    }

    /// The sessions, when sign-in is on.
    pub fn sessions(&self) -> Option<&Sessions> {
        self.auth.sessions()
    }
}

/// What the handlers get: the state behind one `Arc`, so that handing it to a request (which
/// axum does more than once per request) is one reference count, not a copy of two NATS clients.
pub(crate) type Shared = Arc<GatewayState>;

/// The OpenAPI description of the gateway's routes.
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    webhook::receive,
    commands::cancel,
    commands::restart,
    commands::approve,
    repos::activate,
    repos::deactivate,
    account::login,
    account::callback,
    account::logout
))]
pub struct ApiDoc;

/// The gateway's routes.
pub fn router(state: GatewayState) -> Router {
    webhook::routes()
        .merge(commands::routes())
        .merge(account::routes())
        .merge(repos::routes())
        .with_state(Arc::new(state))
}
