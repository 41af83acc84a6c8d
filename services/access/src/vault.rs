//! The webhook secret of each repository activated through Hermes, in a NATS key-value bucket,
//! sealed with the [`SecretKey`]. Never in an event: `repo.activated` says that a repository is
//! active, not with what secret.
//!
//! Keys: `hook.<hook id>` (the repository, whether the hook is still Hermes's, and its sealed
//! secret) and `repo.<repository token>` (the hook id of an active repository). A deactivated
//! repository's hook stays, inactive and without its secret, so that a delivery of the old hook
//! is told that the repository is not built here any more.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hermes_nats::Bus;
use hermes_nats::jetstream::kv;
use hermes_schemas::RepoName;
use serde::{Deserialize, Serialize};

use crate::AccessError;
use crate::crypto::SecretKey;

/// The bucket of webhook secrets.
pub const SECRETS_BUCKET: &str = "HERMES_SECRETS";
/// How long a hook looked up is remembered: a webhook delivery does not ask the bucket each time,
/// and a deactivation holds everywhere within this long.
pub const CACHE_FOR: Duration = Duration::from_secs(2);
/// The most hooks remembered.
const CACHED: usize = 4096;

/// A repository's hook, as Hermes made it.
#[derive(Clone, PartialEq, Eq)]
pub struct HookEntry {
    pub hook_id: u64,
    pub repo: RepoName,
    pub repo_id: Option<u64>,
    /// Whether the repository is still activated with this hook.
    pub active: bool,
    /// The hook's secret, while it is active.
    pub secret: Option<Vec<u8>>,
}

impl std::fmt::Debug for HookEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookEntry")
            .field("hook_id", &self.hook_id)
            .field("repo", &self.repo)
            .field("active", &self.active)
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct StoredHook {
    repo: RepoName,
    repo_id: Option<u64>,
    active: bool,
    /// Sealed for this hook's key.
    secret: Option<String>,
}

/// The secrets of the repositories activated through Hermes.
pub struct Vault {
    store: kv::Store,
    key: SecretKey,
    cache: Mutex<HashMap<u64, (Instant, Option<HookEntry>)>>,
}

fn unavailable(e: impl std::fmt::Display) -> AccessError {
    AccessError::Unavailable(e.to_string())
}

fn hook_key(id: u64) -> String {
    format!("hook.{id}")
}

fn repo_key(repo: &RepoName) -> String {
    format!("repo.{}", repo.subject_token().replace('%', "="))
}

impl Vault {
    pub async fn open(bus: &Bus, key: SecretKey) -> Result<Self, AccessError> {
        Ok(Self {
            store: bus.key_value(SECRETS_BUCKET).await.map_err(unavailable)?,
            key,
            cache: Mutex::default(),
        })
    }

    /// The hook `id`, if Hermes made it (remembered for [`CACHE_FOR`]).
    pub async fn hook(&self, id: u64) -> Result<Option<HookEntry>, AccessError> {
        if let Some((at, entry)) = self.cached().get(&id)
            && at.elapsed() < CACHE_FOR
        {
            return Ok(entry.clone());
        }
        let entry = self.read_hook(id).await?;
        let mut cache = self.cached();
        if cache.len() >= CACHED {
            cache.clear();
        }
        cache.insert(id, (Instant::now(), entry.clone()));
        Ok(entry)
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (Instant, Option<HookEntry>)>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn read_hook(&self, id: u64) -> Result<Option<HookEntry>, AccessError> {
        let k = hook_key(id);
        let Some(bytes) = self.store.get(&k).await.map_err(unavailable)? else {
            return Ok(None);
        };
        let stored: StoredHook = serde_json::from_slice(&bytes).map_err(unavailable)?;
        let secret = match (&stored.secret, stored.active) {
            (Some(sealed), true) => Some(self.key.open(sealed, &k)?),
            _ => None,
        };
        Ok(Some(HookEntry {
            hook_id: id,
            repo: stored.repo,
            repo_id: stored.repo_id,
            active: stored.active,
            secret,
        }))
    }

    /// The hook of an active repository.
    pub async fn active_hook(&self, repo: &RepoName) -> Result<Option<u64>, AccessError> {
        let Some(bytes) = self.store.get(repo_key(repo)).await.map_err(unavailable)? else {
            return Ok(None);
        };
        Ok(std::str::from_utf8(&bytes)
            .ok()
            .and_then(|s| s.parse().ok()))
    }

    /// Records that `repo` is active with hook `hook_id` and its `secret`.
    pub async fn activate(
        &self,
        repo: &RepoName,
        repo_id: Option<u64>,
        hook_id: u64,
        secret: &[u8],
    ) -> Result<(), AccessError> {
        let k = hook_key(hook_id);
        let stored = StoredHook {
            repo: repo.clone(),
            repo_id,
            active: true,
            secret: Some(self.key.seal(secret, &k)),
        };
        let value = serde_json::to_vec(&stored).map_err(unavailable)?;
        self.store
            .put(&k, value.into())
            .await
            .map_err(unavailable)?;
        self.store
            .put(repo_key(repo), hook_id.to_string().into())
            .await
            .map_err(unavailable)?;
        self.cached().remove(&hook_id);
        Ok(())
    }

    /// Records that `repo` is no longer active: its hook is kept, inactive, without its secret.
    /// The hook it had, if any.
    pub async fn deactivate(&self, repo: &RepoName) -> Result<Option<u64>, AccessError> {
        let Some(hook_id) = self.active_hook(repo).await? else {
            return Ok(None);
        };
        let stored = StoredHook {
            repo: repo.clone(),
            repo_id: self.read_hook(hook_id).await?.and_then(|h| h.repo_id),
            active: false,
            secret: None,
        };
        let value = serde_json::to_vec(&stored).map_err(unavailable)?;
        self.store
            .put(hook_key(hook_id), value.into())
            .await
            .map_err(unavailable)?;
        self.store
            .delete(repo_key(repo))
            .await
            .map_err(unavailable)?;
        self.cached().remove(&hook_id);
        Ok(Some(hook_id))
    }

    /// The repositories active now, by their key-value keys' names.
    pub async fn active_repos(&self) -> Result<HashSet<String>, AccessError> {
        let mut keys = self.store.keys().await.map_err(unavailable)?;
        let mut out = HashSet::new();
        while let Some(k) = keys.next().await {
            let k = k.map_err(unavailable)?;
            if let Some(token) = k.strip_prefix("repo.") {
                out.insert(token.to_owned());
            }
        }
        Ok(out)
    }

    /// The key under which [`active_repos`](Self::active_repos) names `repo`.
    pub fn repo_token(repo: &RepoName) -> String {
        repo_key(repo)["repo.".len()..].to_owned()
    }
}
