//! Who a user is, the repositories they may use and how, and repository webhooks.

use hermes_schemas::RepoName;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::client::{GitHub, GitHubError, Token, success};

/// The signed-in user, as `GET /user` describes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub login: String,
    pub id: u64,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub avatar_url: Option<String>,
}

/// What a user may do with a repository, as GitHub's `permissions` says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permissions {
    #[serde(default)]
    pub admin: bool,
    #[serde(default)]
    pub maintain: bool,
    #[serde(default)]
    pub push: bool,
    #[serde(default)]
    pub triage: bool,
    #[serde(default)]
    pub pull: bool,
}

impl Permissions {
    /// May read it (and its builds).
    pub fn read(&self) -> bool {
        self.pull || self.triage || self.push || self.maintain || self.admin
    }

    /// May command its builds (cancel, restart, approve).
    pub fn write(&self) -> bool {
        self.push || self.maintain || self.admin
    }
}

/// A repository as the REST API describes it, with the caller's permissions on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repository {
    pub id: u64,
    pub full_name: String,
    #[serde(default)]
    pub private: bool,
    pub html_url: String,
    #[serde(default)]
    pub permissions: Option<Permissions>,
}

/// A repository webhook GitHub made.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Hook {
    pub id: u64,
}

/// The most pages of `/user/repos` read (100 repositories a page).
const MAX_PAGES: usize = 100;

impl GitHub {
    /// `GET /user`: who the token belongs to.
    pub async fn user(&self, token: &Token) -> Result<User, GitHubError> {
        let answer = self
            .http
            .get(self.url("/user"))
            .bearer_auth(token.expose())
            .send()
            .await;
        decode(success(answer).await?).await
    }

    /// `GET /user/repos`, every page (following the `Link` header's `rel="next"`): the
    /// repositories the token's user may use, each with their permissions.
    pub async fn user_repos(&self, token: &Token) -> Result<Vec<Repository>, GitHubError> {
        let mut out = Vec::new();
        let mut next = Some(self.url("/user/repos?per_page=100"));
        for _ in 0..MAX_PAGES {
            let Some(url) = next.take() else {
                return Ok(out);
            };
            // Only pages of the same API are followed, with the token.
            if !url.starts_with(&self.api_url) {
                return Err(GitHubError::Unexpected(format!(
                    "a Link to {url}, outside the API"
                )));
            }
            let response =
                success(self.http.get(&url).bearer_auth(token.expose()).send().await).await?;
            next = response
                .headers()
                .get(reqwest::header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(next_link);
            let page: Vec<Repository> = decode(response).await?;
            out.extend(page);
        }
        Err(GitHubError::Unexpected(format!(
            "more than {MAX_PAGES} pages of repositories"
        )))
    }

    /// `GET /repos/{owner}/{repo}` with the user's token: the repository and the user's
    /// permissions on it; `None` when GitHub says there is none the token may see.
    pub async fn repository(
        &self,
        token: &Token,
        repo: &RepoName,
    ) -> Result<Option<Repository>, GitHubError> {
        let answer = self
            .http
            .get(self.url(&format!("/repos/{repo}")))
            .bearer_auth(token.expose())
            .send()
            .await;
        match success(answer).await {
            Ok(r) => decode(r).await.map(Some),
            Err(GitHubError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `POST /repos/{owner}/{repo}/hooks`: a webhook for pushes and pull requests, sending JSON
    /// to `url` signed with `secret`.
    pub async fn create_hook(
        &self,
        token: &Token,
        repo: &RepoName,
        url: &str,
        secret: &str,
    ) -> Result<Hook, GitHubError> {
        let body = json!({
            "name": "web",
            "active": true,
            "events": ["push", "pull_request"],
            "config": {
                "url": url,
                "content_type": "json",
                "secret": secret,
                "insecure_ssl": "0",
            },
        });
        let answer = self
            .http
            .post(self.url(&format!("/repos/{repo}/hooks")))
            .bearer_auth(token.expose())
            .json(&body)
            .send()
            .await;
        decode(success(answer).await?).await
    }

    /// `DELETE /repos/{owner}/{repo}/hooks/{id}`: true when it was deleted, false when it was
    /// already gone.
    pub async fn delete_hook(
        &self,
        token: &Token,
        repo: &RepoName,
        id: u64,
    ) -> Result<bool, GitHubError> {
        let answer = self
            .http
            .delete(self.url(&format!("/repos/{repo}/hooks/{id}")))
            .bearer_auth(token.expose())
            .send()
            .await;
        match success(answer).await {
            Ok(_) => Ok(true),
            Err(GitHubError::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

async fn decode<T: serde::de::DeserializeOwned>(r: reqwest::Response) -> Result<T, GitHubError> {
    let bytes = r
        .bytes()
        .await
        .map_err(|e| GitHubError::Unavailable(format!("reading the answer: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| GitHubError::Unexpected(e.to_string()))
}

/// The `rel="next"` URL of a `Link` header (`<url>; rel="next", <url>; rel="last"`).
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| p.trim().eq_ignore_ascii_case("rel=\"next\""));
        let url = url.trim().strip_prefix('<')?.strip_suffix('>')?;
        is_next.then(|| url.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_page_is_read_from_the_link_header() {
        let link = r#"<https://api.github.com/user/repos?page=1&per_page=100>; rel="prev", <https://api.github.com/user/repos?page=3&per_page=100>; rel="next", <https://api.github.com/user/repos?page=5&per_page=100>; rel="last""#;
        assert_eq!(
            next_link(link).as_deref(),
            Some("https://api.github.com/user/repos?page=3&per_page=100")
        );
        assert_eq!(
            next_link(r#"<https://x/y?page=1>; rel="first", <https://x/y?page=4>; rel="prev""#),
            None
        );
        assert_eq!(next_link(""), None);
    }

    #[test]
    fn permissions_read_and_write() {
        let pull = Permissions {
            pull: true,
            ..Permissions::default()
        };
        assert!(pull.read() && !pull.write());
        let push = Permissions {
            push: true,
            ..Permissions::default()
        };
        assert!(push.read() && push.write());
        assert!(!Permissions::default().read());
    }
}
