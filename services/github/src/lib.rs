//! Everything Hermes asks of GitHub over HTTP: commit statuses, the OAuth sign-in, who a user is,
//! which repositories they may read, push to or administer, and repository webhooks.
//!
//! # Layout
//!
//! - [`client`]: [`GitHub`], one REST API (github.com's or an Enterprise Server's), the
//!   [`Token`] type, and what an answer means ([`GitHubError`]).
//! - [`rest`]: the user, their repositories (every page, by the `Link` header), a repository's
//!   permissions, webhooks.
//! - [`statuses`]: commit statuses, and whether a refused one is worth sending again.
//! - [`oauth`]: the OAuth web flow (authorize URL with state and PKCE, the code exchange), with
//!   the `oauth2` crate.
//!
//! # Invariants
//!
//! - **A token is never logged or shown**: [`Token`]'s `Debug` prints `***`, and it travels only
//!   in an `Authorization` header the HTTP client marks sensitive.
//! - reqwest is used nowhere else in Hermes.

pub mod client;
pub mod oauth;
pub mod rest;
pub mod statuses;

pub use client::{GitHub, GitHubError, Token};
pub use oauth::OAuthApp;
pub use rest::{Hook, Permissions, Repository, User};
pub use statuses::{CommitStatus, Sent, State};
