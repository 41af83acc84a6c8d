//! Signing in with GitHub: the OAuth web flow of an OAuth app, with the `oauth2` crate.
//!
//! `GET {web}/login/oauth/authorize` with `client_id`, `redirect_uri`, `scope`, a fresh `state`
//! and a PKCE challenge; GitHub sends the user back with `code` and `state`; the code is
//! exchanged (`POST {web}/login/oauth/access_token`, `Accept: application/json`, client id and
//! secret in the body) for the user's token.

use oauth2::basic::BasicClient;
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse, TokenUrl,
};

use crate::client::{GitHubError, REQUEST_TIMEOUT, Token, checked_url};

/// What Hermes asks a user to allow: reading their private repositories and their
/// organisations' (`repo`, `read:org`), and managing repository webhooks (`admin:repo_hook`).
pub const SCOPES: &[&str] = &["repo", "admin:repo_hook", "read:org"];

/// An OAuth app on one GitHub (`https://github.com`, or an Enterprise Server).
#[derive(Clone)]
pub struct OAuthApp {
    web_url: String,
    client_id: String,
    client_secret: String,
    redirect_url: String,
    http: oauth2::reqwest::Client,
}

impl std::fmt::Debug for OAuthApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthApp")
            .field("web_url", &self.web_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"***")
            .field("redirect_url", &self.redirect_url)
            .finish()
    }
}

/// Where to send the user to sign in, and what to keep until they come back.
#[derive(Debug)]
pub struct Authorize {
    /// GitHub's authorize page, with every parameter.
    pub url: String,
    /// The `state` the callback must bring back (single use).
    pub state: String,
    /// The PKCE verifier of the challenge in `url`, for the code exchange.
    pub pkce_verifier: String,
}

impl OAuthApp {
    pub fn new(
        web_url: &str,
        client_id: &str,
        client_secret: &str,
        redirect_url: &str,
    ) -> Result<Self, GitHubError> {
        let http = oauth2::reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            // The OAuth 2.0 security best practice: never follow redirects from the token
            // endpoint.
            .redirect(oauth2::reqwest::redirect::Policy::none())
            .user_agent("hermes-ci")
            .build()
            .map_err(|e| GitHubError::Config(format!("HTTP client: {e}")))?;
        let app = Self {
            web_url: checked_url(web_url)?,
            client_id: client_id.trim().to_owned(),
            client_secret: client_secret.trim().to_owned(),
            redirect_url: checked_url(redirect_url)?,
            http,
        };
        app.client()?;
        Ok(app)
    }

    fn client(
        &self,
    ) -> Result<
        BasicClient<
            oauth2::EndpointSet,
            oauth2::EndpointNotSet,
            oauth2::EndpointNotSet,
            oauth2::EndpointNotSet,
            oauth2::EndpointSet,
        >,
        GitHubError,
    > {
        let config = |e: &dyn std::fmt::Display| GitHubError::Config(e.to_string());
        Ok(BasicClient::new(ClientId::new(self.client_id.clone()))
            .set_client_secret(ClientSecret::new(self.client_secret.clone()))
            .set_auth_type(AuthType::RequestBody)
            .set_auth_uri(
                AuthUrl::new(format!("{}/login/oauth/authorize", self.web_url))
                    .map_err(|e| config(&e))?,
            )
            .set_token_uri(
                TokenUrl::new(format!("{}/login/oauth/access_token", self.web_url))
                    .map_err(|e| config(&e))?,
            )
            .set_redirect_uri(RedirectUrl::new(self.redirect_url.clone()).map_err(|e| config(&e))?))
    }

    /// A fresh authorize URL, with a new random `state` and PKCE challenge.
    pub fn authorize(&self) -> Result<Authorize, GitHubError> {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state) = self
            .client()?
            .authorize_url(CsrfToken::new_random)
            .add_scopes(SCOPES.iter().map(|s| Scope::new((*s).to_owned())))
            .set_pkce_challenge(challenge)
            .url();
        Ok(Authorize {
            url: url.to_string(),
            state: state.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        })
    }

    /// Exchanges the callback's `code` for the user's token.
    pub async fn exchange(&self, code: &str, pkce_verifier: &str) -> Result<Token, GitHubError> {
        let answer = self
            .client()?
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
            .request_async(&self.http)
            .await;
        match answer {
            Ok(token) => Ok(Token::new(token.access_token().secret().clone())),
            Err(oauth2::RequestTokenError::ServerResponse(e)) => Err(GitHubError::Refused(
                400,
                format!("the sign-in was refused: {e}"),
            )),
            // GitHub answers a bad or used code with 200 and an `error` body, which is not a
            // token: read as a refusal too.
            Err(oauth2::RequestTokenError::Parse(_, body)) => Err(GitHubError::Refused(
                400,
                format!(
                    "the sign-in was refused: {}",
                    github_error(&body).unwrap_or_else(|| "no token in GitHub's answer".into())
                ),
            )),
            Err(oauth2::RequestTokenError::Request(e)) => Err(GitHubError::Unavailable(format!(
                "the token exchange failed: {e}"
            ))),
            Err(e) => Err(GitHubError::Unexpected(e.to_string())),
        }
    }
}

/// GitHub's `error` and `error_description` of an OAuth error body.
fn github_error(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let code = v.get("error")?.as_str()?;
    let description = v
        .get("error_description")
        .and_then(|d| d.as_str())
        .unwrap_or("");
    Some(format!("{code}: {description}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authorize_url_has_every_parameter_and_a_fresh_state() {
        let app = OAuthApp::new(
            "https://github.example.com/",
            "Iv1.abc",
            "s3cret",
            "https://ci.example.com/auth/callback",
        )
        .expect("app");
        let a = app.authorize().expect("url");
        let b = app.authorize().expect("url");
        assert_ne!(a.state, b.state);
        assert!(a.state.len() >= 16);
        let url = reqwest::Url::parse(&a.url).expect("a URL");
        assert_eq!(url.path(), "/login/oauth/authorize");
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["client_id"], "Iv1.abc");
        assert_eq!(q["redirect_uri"], "https://ci.example.com/auth/callback");
        assert_eq!(q["state"], a.state);
        assert_eq!(q["scope"], "repo admin:repo_hook read:org");
        assert_eq!(q["code_challenge_method"], "S256");
        assert!(!a.url.contains("s3cret"));
        assert!(!format!("{app:?}").contains("s3cret"));
    }

    #[test]
    fn githubs_error_body_is_read() {
        assert_eq!(
            github_error(br#"{"error":"bad_verification_code","error_description":"The code passed is incorrect or expired."}"#).as_deref(),
            Some("bad_verification_code: The code passed is incorrect or expired.")
        );
        assert_eq!(github_error(b"nope"), None);
    }
}
