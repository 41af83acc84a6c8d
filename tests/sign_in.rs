//! The front door, end to end: `hermes up` with sign-in against a local stand-in for GitHub
//! (tests/support/github.rs), a real nats-server, the Docker engine and a local git repository.
//! Sign in, list the repositories (three pages), activate one (its hook's exact body), build a
//! push signed with the repository's own secret, refuse one signed otherwise, keep a private
//! repository's builds from those GitHub does not let read it, let only pushers command them,
//! deactivate, sign out.

mod support;

use std::time::Duration;

use reqwest::blocking::{Client, Response};
use reqwest::redirect::Policy;
use serde_json::Value;
use support::github::{FakeGitHub, Perms};
use support::*;

const CLIENT_ID: &str = "Iv1.hermestest";
const CLIENT_SECRET: &str = "oauth-app-secret";

/// A browser-like client that follows no redirect and keeps its own cookie.
struct Browser {
    http: Client,
    cookie: Option<String>,
    csrf: Option<String>,
}

impl Browser {
    fn new() -> Self {
        Self {
            http: Client::builder()
                .redirect(Policy::none())
                .build()
                .expect("client"),
            cookie: None,
            csrf: None,
        }
    }

    fn get(&self, url: &str) -> Response {
        let mut r = self.http.get(url);
        if let Some(c) = &self.cookie {
            r = r.header("Cookie", c);
        }
        r.send().expect("GET")
    }

    /// A `POST` with the session's cookie and CSRF token (when `csrf`).
    fn post(&self, url: &str, csrf: bool) -> Response {
        let mut r = self.http.post(url);
        if let Some(c) = &self.cookie {
            r = r.header("Cookie", c);
        }
        if let (true, Some(t)) = (csrf, &self.csrf) {
            r = r.header("X-CSRF-Token", t);
        }
        r.send().expect("POST")
    }

    fn location(r: &Response) -> String {
        assert_eq!(r.status(), 302, "a redirect");
        r.headers()["location"].to_str().expect("ascii").to_owned()
    }

    /// Signs in as GitHub's current user: `/login` → GitHub's authorize page → the callback.
    fn sign_in(&mut self, hermes: &Hermes, github: &FakeGitHub) {
        let to_github = Self::location(&self.get(&format!("{}/login", hermes.base)));
        assert!(
            to_github.starts_with(&format!("{}/login/oauth/authorize?", github.web_url())),
            "{to_github}"
        );
        let back = Self::location(&self.get(&to_github));
        assert!(
            back.starts_with(&format!("{}/auth/callback?", hermes.base)),
            "{back}"
        );
        let signed = self.get(&back);
        assert_eq!(Self::location(&signed), "/");
        let set = signed.headers()["set-cookie"].to_str().expect("ascii");
        for part in ["HttpOnly", "SameSite=Lax", "Path=/"] {
            assert!(set.contains(part), "{set}");
        }
        assert!(!set.contains("Secure"), "http public URL: {set}");
        self.cookie = Some(set.split(';').next().expect("name=value").to_owned());
        let user: Value = self
            .get(&format!("{}/api/user", hermes.base))
            .json()
            .expect("user");
        self.csrf = user["csrf_token"].as_str().map(str::to_owned);
    }
}

/// A push of `repo`'s commit to `full_name` (private or not), sent as hook `hook` with `secret`.
fn push(
    hermes: &Hermes,
    repo: &Repo,
    full_name: &str,
    private: bool,
    hook: u64,
    secret: &str,
    delivery: &str,
) -> Response {
    let body = replace(
        &replace(&push_for(repo), "ada-dev/hello-hermes", full_name),
        "\"private\": false",
        &format!("\"private\": {private}"),
    );
    let signature = {
        use hmac::{Hmac, KeyInit, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
        mac.update(&body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    };
    Client::new()
        .post(format!("{}/webhooks/github", hermes.base))
        .header("Content-Type", "application/json")
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", delivery)
        .header("X-GitHub-Hook-ID", hook.to_string())
        .header("X-Hub-Signature-256", signature)
        .body(body)
        .send()
        .expect("POST /webhooks/github")
}

#[test]
fn sign_in_activate_build_and_who_may_see_and_command_a_private_repository() {
    base_image();
    let nats = Nats::start();
    let data = tempfile::tempdir().expect("tempdir");
    let github = FakeGitHub::start();
    github.add_oauth_app(CLIENT_ID, CLIENT_SECRET);
    github.add_user("ada-dev", "Ada Dev");
    github.add_user("mallory", "Mallory");
    github.add_user("pat", "Pat Pull");
    github.add_user("piet", "Piet Push");
    // ada-dev owns 250 repositories (three pages of 100, the most GitHub gives a page), one of
    // them private.
    github.add_repo("ada-dev/secret-app", true);
    for i in 0..249 {
        github.add_repo(&format!("ada-dev/tool-{i:03}"), false);
    }
    github.grant("pat", "ada-dev/secret-app", Perms::READ);
    github.grant("piet", "ada-dev/secret-app", Perms::WRITE);

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let hermes = Hermes::service(
        "up",
        &nats.url(),
        data.path(),
        &[
            ("HERMES_LISTEN", &format!("127.0.0.1:{port}")),
            ("HERMES_PUBLIC_URL", &base),
            ("HERMES_GITHUB_CLIENT_ID", CLIENT_ID),
            ("HERMES_GITHUB_CLIENT_SECRET", CLIENT_SECRET),
            ("HERMES_GITHUB_URL", &github.web_url()),
            ("HERMES_GITHUB_API_URL", &github.api_url()),
            // Sign-in on: the global secret is not needed.
            ("HERMES_GITHUB_WEBHOOK_SECRET", ""),
        ],
    );
    assert_eq!(hermes.base, base);

    // Nobody signed in.
    let mut ada = Browser::new();
    assert_eq!(ada.get(&format!("{base}/api/user")).status(), 401);

    // A wrong or reused state makes no session.
    github.sign_in_as("ada-dev");
    let to_github = Browser::location(&ada.get(&format!("{base}/login")));
    let back = Browser::location(&ada.get(&to_github.replace("state=", "state=x")));
    let r = ada.get(&back);
    assert_eq!(r.status(), 400, "a state never given");
    assert!(r.headers().get("set-cookie").is_none());
    let back = Browser::location(&ada.get(&to_github));
    assert_eq!(ada.get(&back).status(), 302, "the state, once");
    let r = ada.get(&back);
    assert_eq!(r.status(), 400, "the state again");
    assert!(r.headers().get("set-cookie").is_none());

    ada.sign_in(&hermes, &github);
    let user: Value = ada.get(&format!("{base}/api/user")).json().expect("user");
    assert_eq!(user["login"], "ada-dev");
    assert_eq!(user["name"], "Ada Dev");
    assert!(user["csrf_token"].as_str().is_some_and(|t| t.len() >= 32));
    assert!(user["avatar_url"].as_str().is_some());

    // Every page of the user's repositories.
    let repos: Vec<Value> = ada.get(&format!("{base}/api/repos")).json().expect("repos");
    assert_eq!(repos.len(), 250);
    let pages = github
        .requests()
        .iter()
        .filter(|r| r.path == "/api/v3/user/repos")
        .count();
    assert_eq!(pages, 3, "followed the Link header");
    let secret_app = repos
        .iter()
        .find(|r| r["full_name"] == "ada-dev/secret-app")
        .expect("listed");
    assert_eq!(secret_app["private"], true);
    assert_eq!(secret_app["admin"], true);
    assert_eq!(secret_app["active"], false);

    // Activation: needs the CSRF token, then creates the hook with a secret of its own.
    let activate = format!("{base}/api/repos/ada-dev/secret-app/activate");
    assert_eq!(ada.post(&activate, false).status(), 403, "no CSRF token");
    assert!(github.hooks("ada-dev/secret-app").is_empty());
    let r = ada.post(&activate, true);
    assert_eq!(r.status(), 201);
    let answer: Value = r.json().expect("repository");
    assert_eq!(answer["active"], true);
    let hooks = github.hooks("ada-dev/secret-app");
    assert_eq!(hooks.len(), 1);
    let hook_id = hooks[0]["id"].as_u64().expect("hook id");
    let created = github
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.path == "/api/v3/repos/ada-dev/secret-app/hooks")
        .expect("hook created");
    let body = created.json().expect("JSON body");
    let secret = body["config"]["secret"]
        .as_str()
        .expect("a secret")
        .to_owned();
    assert!(secret.len() >= 43, "at least 32 random bytes: {secret}");
    assert_eq!(
        body,
        serde_json::json!({
            "name": "web",
            "active": true,
            "events": ["push", "pull_request"],
            "config": {
                "url": format!("{base}/webhooks/github"),
                "content_type": "json",
                "secret": secret,
                "insecure_ssl": "0",
            },
        })
    );
    assert_eq!(
        ada.post(&activate, true).status(),
        200,
        "again: nothing changes"
    );
    assert_eq!(github.hooks("ada-dev/secret-app").len(), 1);
    // The secret is in no event and no answer.
    assert!(!hermes.logs().contains(&secret), "the secret was logged");

    // A push signed with the repository's secret builds; another secret is 401.
    let repo = Repo::new(&[
        ("Hermes.yaml", HERMES_YAML),
        (
            "Dockerfile",
            "FROM hermes-test-base:latest\nRUN echo private build && sleep 8\n",
        ),
    ]);
    let r = push(
        &hermes,
        &repo,
        "ada-dev/secret-app",
        true,
        hook_id,
        &secret,
        "d-1",
    );
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().expect("answer")["build"]
        .as_str()
        .expect("the build's id")
        .to_owned();
    let wrong = push(
        &hermes,
        &repo,
        "ada-dev/secret-app",
        true,
        hook_id,
        "guess",
        "d-2",
    );
    assert_eq!(wrong.status(), 401);

    // The owner sees it; the API token sees it.
    let build_url = format!("{base}/api/builds/{id}");
    wait_for(Duration::from_secs(60), "the build, for its owner", || {
        (ada.get(&build_url).status() == 200).then_some(())
    });

    // Someone GitHub does not let read the repository is told there is no such build.
    github.sign_in_as("mallory");
    let mut mallory = Browser::new();
    mallory.sign_in(&hermes, &github);
    let anonymous = Browser::new();
    for who in [&mallory, &anonymous] {
        assert_eq!(who.get(&build_url).status(), 404);
        assert_eq!(who.get(&format!("{build_url}/logs")).status(), 404);
        assert_eq!(who.get(&format!("{build_url}/logs/stream")).status(), 404);
        let list: Vec<Value> = who
            .get(&format!("{base}/api/builds?repo=ada-dev/secret-app"))
            .json()
            .expect("a list");
        assert!(list.is_empty(), "{list:?}");
        let all: Vec<Value> = who
            .get(&format!("{base}/api/builds"))
            .json()
            .expect("a list");
        assert!(all.iter().all(|b| b["id"] != id.as_str()), "{all:?}");
    }
    let bad = mallory.post(&format!("{build_url}/cancel"), true);
    assert_eq!(bad.status(), 404, "not even told it exists");

    // A user with pull rights reads it, but may not cancel it.
    github.sign_in_as("pat");
    let mut pat = Browser::new();
    pat.sign_in(&hermes, &github);
    assert_eq!(pat.get(&build_url).status(), 200);
    assert_eq!(pat.get(&format!("{build_url}/logs")).status(), 200);
    let list: Vec<Value> = pat
        .get(&format!("{base}/api/builds?repo=ada-dev/secret-app"))
        .json()
        .expect("a list");
    assert_eq!(list.len(), 1);
    assert_eq!(pat.post(&format!("{build_url}/cancel"), true).status(), 403);

    // A user with push rights cancels it.
    github.sign_in_as("piet");
    let mut piet = Browser::new();
    piet.sign_in(&hermes, &github);
    assert_eq!(
        piet.post(&format!("{build_url}/cancel"), true).status(),
        202
    );
    let done = hermes.wait_build(&id, Duration::from_secs(60), "canceled", |b| {
        b["status"] == "canceled"
    });
    assert_eq!(done["canceled_by"], "piet");

    // Deactivation deletes the hook; its old deliveries are 404 and recorded nowhere.
    let deactivate = format!("{base}/api/repos/ada-dev/secret-app/deactivate");
    assert_eq!(pat.post(&deactivate, true).status(), 403, "only admins");
    let r = ada.post(&deactivate, true);
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().expect("repository")["active"], false);
    assert!(github.hooks("ada-dev/secret-app").is_empty());
    let before = nats.stream_messages("HERMES_WEBHOOKS");
    let old = push(
        &hermes,
        &repo,
        "ada-dev/secret-app",
        true,
        hook_id,
        &secret,
        "d-3",
    );
    assert_eq!(old.status(), 404);
    assert_eq!(nats.stream_messages("HERMES_WEBHOOKS"), before);

    // Logout ends the session on the server: the old cookie no longer works.
    let cookie = ada.cookie.clone();
    let r = ada.post(&format!("{base}/logout"), true);
    assert_eq!(r.status(), 204);
    let mut replay = Browser::new();
    replay.cookie = cookie;
    assert_eq!(replay.get(&format!("{base}/api/user")).status(), 401);
}
