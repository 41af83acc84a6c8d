//! Who is asking, and what GitHub lets them do: sessions of users signed in with GitHub, the
//! per-repository webhook secrets, and the permission checks every reader and command applies.
//!
//! # Layout
//!
//! - [`auth`]: who sent a request (the API token, a session cookie, nobody), the CSRF rule, and
//!   the session cookie.
//! - [`crypto`]: [`SecretKey`], the AEAD (XChaCha20-Poly1305) that seals what is stored
//!   secret: webhook secrets and the sessions' GitHub tokens.
//! - [`sessions`]: sessions and single-use OAuth states, in NATS key-value buckets, so that every
//!   Hermes process (gateway, projectors) sees the same sessions and a logout ends one everywhere.
//! - [`vault`]: the webhook secret of each repository activated through Hermes, by hook id.
//! - [`permissions`]: what a signed-in user may do with a repository, as GitHub says, cached for
//!   at most [`permissions::TTL`].
//! - this file: [`Caller`], and the rules of who may read, command and administer.
//!
//! # Invariants
//!
//! - **A private repository's builds are shown only to the API token and to users GitHub lets
//!   read the repository**; everyone else is told there is no such build (404), so its name does
//!   not leak.
//! - **Secrets never leave in the clear**: webhook secrets and GitHub tokens are sealed before
//!   they are stored, never logged, never in an event, never in an API answer. A session cookie
//!   is a random id; the store keys sessions by its hash.
//! - Hermes keeps no users of its own: identity and permissions come from GitHub.

pub mod auth;
pub mod crypto;
pub mod permissions;
pub mod sessions;
pub mod vault;

pub use auth::{Auth, Identified, Refusal};
pub use crypto::SecretKey;
pub use permissions::Permissions as PermissionCache;
pub use sessions::{Session, Sessions};
pub use vault::{HookEntry, Vault};

use hermes_github::Permissions;

/// Why access could not be decided, or was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The key-value store is out of reach: try again.
    #[error("the session store is unavailable: {0}")]
    Unavailable(String),
    /// GitHub could not answer: try again.
    #[error("GitHub could not be asked: {0}")]
    GitHub(#[from] hermes_github::GitHubError),
    /// A stored value that does not open with this key (another key, or tampered with).
    #[error("a sealed value does not open: {0}")]
    Sealed(String),
    /// The secret key is missing or malformed.
    #[error("secret key: {0}")]
    Key(String),
}

/// Who is asking.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The bearer `HERMES_API_TOKEN`: the operator's scripts, allowed everything.
    ApiToken,
    /// A user signed in with GitHub.
    User(Session),
    /// Nobody in particular.
    Anonymous,
}

impl Caller {
    /// The name the caller's commands are recorded under: a GitHub login, or `api-token`.
    pub fn name(&self) -> Option<String> {
        match self {
            Self::ApiToken => Some("api-token".into()),
            Self::User(s) => Some(s.login.clone()),
            Self::Anonymous => None,
        }
    }
}

/// What a caller may do with a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rights {
    pub read: bool,
    pub write: bool,
    pub admin: bool,
}

impl Rights {
    pub const ALL: Self = Self {
        read: true,
        write: true,
        admin: true,
    };
    pub const NONE: Self = Self {
        read: false,
        write: false,
        admin: false,
    };

    /// A public repository: anyone reads it.
    pub const PUBLIC: Self = Self {
        read: true,
        write: false,
        admin: false,
    };

    /// From GitHub's permissions, on a repository that is `private` or not.
    pub fn from_github(p: Permissions, private: bool) -> Self {
        Self {
            read: p.read() || !private,
            write: p.write(),
            admin: p.admin,
        }
    }
}
