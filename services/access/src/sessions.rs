//! Sessions of users signed in with GitHub, and the single-use `state` of each sign-in, in NATS
//! key-value buckets shared by every Hermes process.
//!
//! A session cookie holds a random id of 32 bytes; the bucket keys the session by the id's
//! SHA-256, so reading the bucket gives no cookie. The session's GitHub token is sealed with the
//! [`SecretKey`]. Ending a session deletes it: the old cookie no longer finds it, in any process.

use std::time::Duration;

use hermes_github::{Token, User};
use hermes_nats::Bus;
use hermes_nats::jetstream::kv;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::AccessError;
use crate::crypto::{SecretKey, random_token};

/// The bucket of sessions; its stream keeps a session at most [`SESSION_LIFETIME`].
pub const SESSIONS_BUCKET: &str = "HERMES_SESSIONS";
/// The bucket of sign-ins under way; its stream keeps a `state` at most [`STATE_LIFETIME`].
pub const STATES_BUCKET: &str = "HERMES_OAUTH";
/// How long a session lasts (the sessions bucket's `max_age`).
pub const SESSION_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long a sign-in may take between `/login` and `/auth/callback`.
pub const STATE_LIFETIME: Duration = Duration::from_secs(600);

/// A signed-in user's session.
#[derive(Clone)]
pub struct Session {
    pub login: String,
    pub user_id: u64,
    pub name: Option<String>,
    pub avatar_url: Option<String>,
    /// What a `POST` authenticated by this session's cookie must send as `X-CSRF-Token`.
    pub csrf_token: String,
    /// The user's GitHub token, to ask GitHub what they may do.
    pub token: Token,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("login", &self.login)
            .field("csrf_token", &"***")
            .field("token", &self.token)
            .finish()
    }
}

/// What the bucket holds of a session.
#[derive(Serialize, Deserialize)]
struct Stored {
    login: String,
    user_id: u64,
    name: Option<String>,
    avatar_url: Option<String>,
    csrf_token: String,
    /// The GitHub token, sealed for this session's key.
    token: String,
}

/// What the bucket holds of a sign-in under way.
#[derive(Serialize, Deserialize)]
struct StoredState {
    /// The PKCE verifier, sealed for this state's key.
    pkce_verifier: String,
    /// The page to return to once signed in (a path of this site).
    #[serde(default)]
    next: Option<String>,
}

/// A sign-in's state, taken: what the callback needs.
#[derive(Debug)]
pub struct SignInState {
    pub pkce_verifier: String,
    /// The page to return to (a path of this site), `/` when none was given.
    pub next: String,
}

/// Sessions and sign-ins, shared by every process through NATS.
#[derive(Clone)]
pub struct Sessions {
    sessions: kv::Store,
    states: kv::Store,
    key: SecretKey,
}

fn unavailable(e: impl std::fmt::Display) -> AccessError {
    AccessError::Unavailable(e.to_string())
}

/// The bucket key of a cookie id or state: `<prefix>.<hex SHA-256>`.
fn hashed(prefix: &str, secret: &str) -> String {
    format!(
        "{prefix}.{}",
        hex::encode(Sha256::digest(secret.as_bytes()))
    )
}

impl Sessions {
    pub async fn open(bus: &Bus, key: SecretKey) -> Result<Self, AccessError> {
        Ok(Self {
            sessions: bus.key_value(SESSIONS_BUCKET).await.map_err(unavailable)?,
            states: bus.key_value(STATES_BUCKET).await.map_err(unavailable)?,
            key,
        })
    }

    /// Keeps a sign-in's `state` (and its PKCE verifier, and the page to return to) until the
    /// callback takes it.
    pub async fn begin_sign_in(
        &self,
        state: &str,
        pkce_verifier: &str,
        next: Option<&str>,
    ) -> Result<(), AccessError> {
        let k = hashed("st", state);
        let value = serde_json::to_vec(&StoredState {
            pkce_verifier: self.key.seal(pkce_verifier.as_bytes(), &k),
            next: next.map(str::to_owned),
        })
        .map_err(unavailable)?;
        self.states
            .create(&k, value.into())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Takes a sign-in's `state` for good: what the callback needs the first time, `None` for a
    /// state never given, or given and taken already.
    pub async fn take_state(&self, state: &str) -> Result<Option<SignInState>, AccessError> {
        let k = hashed("st", state);
        let Some(entry) = self.states.entry(&k).await.map_err(unavailable)? else {
            return Ok(None);
        };
        if entry.operation != kv::Operation::Put {
            return Ok(None);
        }
        // Only the first taker deletes the revision it read.
        if self
            .states
            .delete_expect_revision(&k, Some(entry.revision))
            .await
            .is_err()
        {
            return Ok(None);
        }
        let stored: StoredState = serde_json::from_slice(&entry.value).map_err(unavailable)?;
        let verifier = self.key.open(&stored.pkce_verifier, &k)?;
        Ok(Some(SignInState {
            pkce_verifier: String::from_utf8_lossy(&verifier).into_owned(),
            next: stored.next.unwrap_or_else(|| "/".to_owned()),
        }))
    }

    /// Starts a session for `user` with their GitHub `token`: the cookie's id and the session.
    pub async fn create(
        &self,
        user: &User,
        token: &Token,
    ) -> Result<(String, Session), AccessError> {
        let id = random_token(32);
        let k = hashed("s", &id);
        let session = Session {
            login: user.login.clone(),
            user_id: user.id,
            name: user.name.clone(),
            avatar_url: user.avatar_url.clone(),
            csrf_token: random_token(32),
            token: token.clone(),
        };
        let stored = Stored {
            login: session.login.clone(),
            user_id: session.user_id,
            name: session.name.clone(),
            avatar_url: session.avatar_url.clone(),
            csrf_token: session.csrf_token.clone(),
            token: self.key.seal(token.expose().as_bytes(), &k),
        };
        let value = serde_json::to_vec(&stored).map_err(unavailable)?;
        self.sessions
            .create(&k, value.into())
            .await
            .map_err(unavailable)?;
        Ok((id, session))
    }

    /// The session of a cookie's id, if it is live.
    pub async fn get(&self, id: &str) -> Result<Option<Session>, AccessError> {
        // A cookie id is URL-safe base64 of 32 bytes; anything else names no session.
        if id.len() != 43
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Ok(None);
        }
        let k = hashed("s", id);
        let Some(bytes) = self.sessions.get(&k).await.map_err(unavailable)? else {
            return Ok(None);
        };
        let stored: Stored = serde_json::from_slice(&bytes).map_err(unavailable)?;
        let token = self.key.open(&stored.token, &k)?;
        Ok(Some(Session {
            login: stored.login,
            user_id: stored.user_id,
            name: stored.name,
            avatar_url: stored.avatar_url,
            csrf_token: stored.csrf_token,
            token: Token::new(String::from_utf8_lossy(&token).into_owned()),
        }))
    }

    /// Ends the session of a cookie's id, everywhere.
    pub async fn end(&self, id: &str) -> Result<(), AccessError> {
        self.sessions
            .delete(hashed("s", id))
            .await
            .map_err(unavailable)
    }
}

/// Whether `given` equals `expected`, in a time that does not depend on where they differ.
pub fn same_secret(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hashes_of_the_secret_and_comparisons_are_exact() {
        let k = hashed("s", "abc");
        assert!(k.starts_with("s.") && k.len() == 2 + 64);
        assert!(!k.contains("abc"));
        assert!(same_secret("token", "token"));
        assert!(!same_secret("token", "tokeN"));
        assert!(!same_secret("token", "token2"));
    }
}
