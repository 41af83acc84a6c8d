//! What a signed-in user may do with a repository, as GitHub says (`permissions` of
//! `GET /repos/{owner}/{repo}`, and of every repository of `GET /user/repos`), remembered for
//! at most [`TTL`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hermes_github::{GitHub, Repository};
use hermes_schemas::RepoName;

use crate::{AccessError, Caller, Rights, Session};

/// The longest GitHub's answer about a user's permissions is used.
pub const TTL: Duration = Duration::from_secs(5 * 60);
/// The most answers remembered; past it the memory starts again.
const REMEMBERED: usize = 10_000;

type Answers<K, V> = Mutex<HashMap<K, (Instant, V)>>;

/// Permissions, asked of GitHub with each user's own token.
pub struct Permissions {
    github: GitHub,
    on_repo: Answers<(String, String), Option<hermes_github::Permissions>>,
    repos: Answers<String, Arc<Vec<Repository>>>,
}

fn recall<K: std::hash::Hash + Eq, V: Clone>(answers: &Answers<K, V>, k: &K) -> Option<V> {
    let answers = answers.lock().unwrap_or_else(|e| e.into_inner());
    answers
        .get(k)
        .filter(|(at, _)| at.elapsed() < TTL)
        .map(|(_, v)| v.clone())
}

fn remember<K: std::hash::Hash + Eq, V>(answers: &Answers<K, V>, k: K, v: V) {
    let mut answers = answers.lock().unwrap_or_else(|e| e.into_inner());
    if answers.len() >= REMEMBERED {
        answers.clear();
    }
    answers.insert(k, (Instant::now(), v));
}

impl Permissions {
    pub fn new(github: GitHub) -> Self {
        Self {
            github,
            on_repo: Mutex::default(),
            repos: Mutex::default(),
        }
    }

    pub fn github(&self) -> &GitHub {
        &self.github
    }

    /// The user's permissions on `repo`; `None` when GitHub shows them no such repository.
    pub async fn on_repo(
        &self,
        session: &Session,
        repo: &RepoName,
    ) -> Result<Option<hermes_github::Permissions>, AccessError> {
        let k = (session.login.clone(), repo.as_str().to_ascii_lowercase());
        if let Some(p) = recall(&self.on_repo, &k) {
            return Ok(p);
        }
        let p = self
            .github
            .repository(&session.token, repo)
            .await?
            .map(|r| r.permissions.unwrap_or_default());
        remember(&self.on_repo, k, p);
        Ok(p)
    }

    /// Every repository the user may use, with their permissions (every page of `/user/repos`).
    pub async fn repos(&self, session: &Session) -> Result<Arc<Vec<Repository>>, AccessError> {
        if let Some(r) = recall(&self.repos, &session.login) {
            return Ok(r);
        }
        let repos = Arc::new(self.github.user_repos(&session.token).await?);
        remember(&self.repos, session.login.clone(), repos.clone());
        Ok(repos)
    }

    /// Forgets what was learnt of `session`'s user (after they changed something on GitHub).
    pub fn forget(&self, session: &Session) {
        self.repos
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&session.login);
        self.on_repo
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(login, _), _| *login != session.login);
    }

    /// What `caller` may do with `repo`, which is `private` or not.
    pub async fn rights(
        &self,
        caller: &Caller,
        repo: &RepoName,
        private: bool,
    ) -> Result<Rights, AccessError> {
        Ok(match caller {
            Caller::ApiToken => Rights::ALL,
            Caller::Anonymous if private => Rights::NONE,
            Caller::Anonymous => Rights::PUBLIC,
            Caller::User(session) => match self.on_repo(session, repo).await? {
                Some(p) => Rights::from_github(p, private),
                None if private => Rights::NONE,
                None => Rights::PUBLIC,
            },
        })
    }
}
