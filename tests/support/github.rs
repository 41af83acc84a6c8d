//! A stand-in for GitHub on 127.0.0.1, for end-to-end tests: the OAuth web flow of github.com
//! (`/login/oauth/authorize`, `/login/oauth/access_token`) and the REST API as GitHub Enterprise
//! Server serves it, every REST path under `/api/v3`.
//!
//! It answers as GitHub's published REST description (github/rest-api-description) and its
//! documentation of the OAuth web flow say: status codes, field names and shapes, the `Link` and
//! `Location` headers, and error bodies `{"message", "documentation_url", "status"}`. Users, OAuth
//! apps, repositories (with each user's permissions), webhooks and commit statuses live in memory;
//! every request received is recorded, body and all.
//!
//! REST operations served (operationIds of the description):
//!
//! | operation                           | request                                              |
//! |-------------------------------------|------------------------------------------------------|
//! | `users/get-authenticated`           | `GET /api/v3/user`                                   |
//! | `repos/list-for-authenticated-user` | `GET /api/v3/user/repos`                             |
//! | `repos/get`                         | `GET /api/v3/repos/{owner}/{repo}`                   |
//! | `repos/list-webhooks`               | `GET /api/v3/repos/{owner}/{repo}/hooks`             |
//! | `repos/create-webhook`              | `POST /api/v3/repos/{owner}/{repo}/hooks`            |
//! | `repos/get-webhook`                 | `GET /api/v3/repos/{owner}/{repo}/hooks/{hook_id}`   |
//! | `repos/delete-webhook`              | `DELETE /api/v3/repos/{owner}/{repo}/hooks/{hook_id}`|
//! | `repos/create-commit-status`        | `POST /api/v3/repos/{owner}/{repo}/statuses/{sha}`   |
//!
//! Any other REST request is answered 404 `{"message":"Not Found",…}`, any other page 404 HTML.
//!
//! Permissions are GitHub's: a repository's owner is its admin; a collaborator has what
//! [`FakeGitHub::grant`] gave; anyone (signed in or not) may read a public repository; a private
//! repository the caller cannot read is 404, and so is a hook operation by a non-admin or a status
//! by someone without push access.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::future::IntoFuture;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// GitHub's page size when `per_page` is not given, and the most it allows.
const PER_PAGE_DEFAULT: usize = 30;
const PER_PAGE_MAX: usize = 100;
/// The most a request body may hold.
const BODY_LIMIT: usize = 16 * 1024 * 1024;
/// The scopes of a user's own token (as a personal access token (classic) would have them).
const USER_TOKEN_SCOPES: &str = "admin:repo_hook, read:user, repo";

const DOCS_REST: &str = "https://docs.github.com/rest";
const DOCS_GET_USER: &str = "https://docs.github.com/rest/users/users#get-the-authenticated-user";
const DOCS_LIST_REPOS: &str =
    "https://docs.github.com/rest/repos/repos#list-repositories-for-the-authenticated-user";
const DOCS_GET_REPO: &str = "https://docs.github.com/rest/repos/repos#get-a-repository";
const DOCS_LIST_HOOKS: &str =
    "https://docs.github.com/rest/repos/webhooks#list-repository-webhooks";
const DOCS_CREATE_HOOK: &str =
    "https://docs.github.com/rest/repos/webhooks#create-a-repository-webhook";
const DOCS_GET_HOOK: &str = "https://docs.github.com/rest/repos/webhooks#get-a-repository-webhook";
const DOCS_DELETE_HOOK: &str =
    "https://docs.github.com/rest/repos/webhooks#delete-a-repository-webhook";
const DOCS_CREATE_STATUS: &str =
    "https://docs.github.com/rest/commits/statuses#create-a-commit-status";
const OAUTH_ERRORS: &str =
    "/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/";

/// A user's permissions on a repository, as the `permissions` object of a repository shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Perms {
    pub admin: bool,
    pub maintain: bool,
    pub push: bool,
    pub triage: bool,
    pub pull: bool,
}

impl Perms {
    /// The role `admin`.
    pub const ADMIN: Perms = Perms {
        admin: true,
        maintain: true,
        push: true,
        triage: true,
        pull: true,
    };
    /// The role `maintain`.
    pub const MAINTAIN: Perms = Perms {
        admin: false,
        maintain: true,
        push: true,
        triage: true,
        pull: true,
    };
    /// The role `write`.
    pub const WRITE: Perms = Perms {
        admin: false,
        maintain: false,
        push: true,
        triage: true,
        pull: true,
    };
    /// The role `triage`.
    pub const TRIAGE: Perms = Perms {
        admin: false,
        maintain: false,
        push: false,
        triage: true,
        pull: true,
    };
    /// The role `read`.
    pub const READ: Perms = Perms {
        admin: false,
        maintain: false,
        push: false,
        triage: false,
        pull: true,
    };
    /// No access: granting it takes a collaborator's access away.
    pub const NONE: Perms = Perms {
        admin: false,
        maintain: false,
        push: false,
        triage: false,
        pull: false,
    };

    fn any(self) -> bool {
        self.admin || self.maintain || self.push || self.triage || self.pull
    }

    fn json(self) -> Value {
        json!({
            "admin": self.admin,
            "maintain": self.maintain,
            "push": self.push,
            "triage": self.triage,
            "pull": self.pull,
        })
    }
}

/// A GitHub user of the stand-in.
#[derive(Clone, Debug)]
pub struct User {
    pub login: String,
    pub id: u64,
    pub node_id: String,
    pub name: String,
    pub avatar_url: String,
    pub html_url: String,
    /// A token of the user's own (scopes `admin:repo_hook, read:user, repo`), good for the REST API.
    pub token: String,
}

/// A repository of the stand-in.
#[derive(Clone, Debug)]
pub struct Repo {
    pub id: u64,
    pub node_id: String,
    /// The login of its owner (a user, or an organization when no user has that login).
    pub owner: String,
    pub name: String,
    pub full_name: String,
    pub private: bool,
    pub html_url: String,
    pub clone_url: String,
    /// Its REST URL, `{api}/repos/{full_name}`.
    pub url: String,
}

/// A request the stand-in received, as it arrived.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// The path, `/api/v3/...` for the REST API.
    pub path: String,
    /// The query string, without `?`.
    pub query: Option<String>,
    /// Every header, names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, when it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The body read as `application/x-www-form-urlencoded`.
    pub fn form(&self) -> Vec<(String, String)> {
        pairs(&self.body)
    }

    /// The query string's parameters.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        pairs(self.query.as_deref().unwrap_or("").as_bytes())
    }
}

/// The stand-in, serving on its own thread and Tokio runtime until dropped.
pub struct FakeGitHub {
    addr: SocketAddr,
    world: Arc<Mutex<World>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeGitHub {
    /// Starts the stand-in on 127.0.0.1 and a port of its own; it accepts connections at once.
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("address");
        let web = format!("http://{addr}");
        let world = Arc::new(Mutex::new(World::new(web)));
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(world.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("fake-github".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    tokio::select! {
                        served = axum::serve(listener, app).into_future() => {
                            if let Err(e) = served {
                                eprintln!("the GitHub stand-in stopped serving: {e}");
                            }
                        }
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime here ends every connection still open.
            })
            .expect("spawn the GitHub stand-in");
        Self {
            addr,
            world,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The web root, `http://127.0.0.1:PORT` (OAuth pages, `html_url`s, clone URLs).
    pub fn web_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The REST API root, `http://127.0.0.1:PORT/api/v3`, as on GitHub Enterprise Server.
    pub fn api_url(&self) -> String {
        format!("http://{}/api/v3", self.addr)
    }

    fn world(&self) -> MutexGuard<'_, World> {
        lock(&self.world)
    }

    /// Registers an OAuth app.
    pub fn add_oauth_app(&self, client_id: &str, client_secret: &str) {
        self.world()
            .apps
            .insert(client_id.to_owned(), client_secret.to_owned());
    }

    /// Adds a user, with an id, an avatar and a token of their own.
    pub fn add_user(&self, login: &str, name: &str) -> User {
        let mut w = self.world();
        let key = login.to_lowercase();
        assert!(
            !w.users.contains_key(&key) && !w.orgs.contains_key(&key),
            "the login {login} is taken"
        );
        let id = w.next_account_id();
        let token = format!("ghp_{}", w.random(36, ALNUM));
        let user = User {
            login: login.to_owned(),
            id,
            node_id: node_id("04:User", id),
            name: name.to_owned(),
            avatar_url: format!("{}/avatars/u/{id}?v=4", w.web),
            html_url: format!("{}/{login}", w.web),
            token: token.clone(),
        };
        w.tokens.insert(
            token,
            Token {
                login: key.clone(),
                scopes: USER_TOKEN_SCOPES.to_owned(),
            },
        );
        let created_at = now();
        w.users.insert(
            key,
            Account {
                user: user.clone(),
                created_at,
            },
        );
        user
    }

    /// Adds the repository `owner/name`. Its owner is the user of that login, or else an
    /// organization of that login (made on first use).
    pub fn add_repo(&self, full_name: &str, private: bool) -> Repo {
        let mut w = self.world();
        let (owner, name) = full_name
            .split_once('/')
            .filter(|(o, n)| !o.is_empty() && !n.is_empty() && !n.contains('/'))
            .unwrap_or_else(|| panic!("{full_name:?} is not owner/name"));
        let key = full_name.to_lowercase();
        assert!(!w.repos.contains_key(&key), "{full_name} exists already");
        let owner_key = owner.to_lowercase();
        if !w.users.contains_key(&owner_key) && !w.orgs.contains_key(&owner_key) {
            let id = w.next_account_id();
            w.orgs.insert(
                owner_key.clone(),
                Org {
                    login: owner.to_owned(),
                    id,
                },
            );
        }
        w.next_repo_id += 1;
        let id = w.next_repo_id;
        let repo = Repo {
            id,
            node_id: node_id("010:Repository", id),
            owner: owner.to_owned(),
            name: name.to_owned(),
            full_name: full_name.to_owned(),
            private,
            html_url: format!("{}/{full_name}", w.web),
            clone_url: format!("{}/{full_name}.git", w.web),
            url: format!("{}/repos/{full_name}", w.api),
        };
        w.repos.insert(
            key,
            RepoRecord {
                repo: repo.clone(),
                owner_key,
                created_at: now(),
            },
        );
        repo
    }

    /// Gives `user` the permissions `perms` on `repo` (`owner/name`), as a collaborator. It
    /// replaces what the user had there, an owner's admin included; [`Perms::NONE`] takes it away.
    pub fn grant(&self, user: &str, repo: &str, perms: Perms) {
        let mut w = self.world();
        let user = user.to_lowercase();
        let repo = repo.to_lowercase();
        assert!(w.users.contains_key(&user), "no user {user}");
        assert!(w.repos.contains_key(&repo), "no repository {repo}");
        w.grants.insert((user, repo), perms);
    }

    /// The user the next `GET /login/oauth/authorize` approves as.
    pub fn sign_in_as(&self, login: &str) {
        let mut w = self.world();
        let key = login.to_lowercase();
        assert!(w.users.contains_key(&key), "no user {login}");
        w.signed_in = Some(key);
    }

    /// The user's own token (see [`User::token`]).
    pub fn token_of(&self, login: &str) -> String {
        self.world()
            .users
            .get(&login.to_lowercase())
            .unwrap_or_else(|| panic!("no user {login}"))
            .user
            .token
            .clone()
    }

    /// The live hooks of `repo`, each as `GET /repos/{owner}/{repo}/hooks/{hook_id}` answers it
    /// (the secret shown as `********`), oldest first.
    pub fn hooks(&self, repo: &str) -> Vec<Value> {
        let w = self.world();
        let key = repo.to_lowercase();
        let Some(record) = w.repos.get(&key) else {
            return Vec::new();
        };
        w.hooks
            .get(&key)
            .map(|hooks| hooks.iter().map(|h| w.hook_json(record, h)).collect())
            .unwrap_or_default()
    }

    /// The `config` of a live hook as its creator sent it, secret included.
    pub fn hook_config(&self, repo: &str, id: u64) -> Option<Value> {
        self.world()
            .hooks
            .get(&repo.to_lowercase())?
            .iter()
            .find(|h| h.id == id)
            .map(|h| Value::Object(h.sent_config.clone()))
    }

    /// Deletes a hook as someone on GitHub would, so that the API no longer knows it.
    pub fn delete_hook_behind_our_back(&self, repo: &str, id: u64) {
        let mut w = self.world();
        let hooks = w.hooks.entry(repo.to_lowercase()).or_default();
        let before = hooks.len();
        hooks.retain(|h| h.id != id);
        assert!(hooks.len() < before, "{repo} has no hook {id}");
    }

    /// The commit statuses created on `repo`, as they were answered, oldest first.
    pub fn statuses(&self, repo: &str) -> Vec<Value> {
        self.world()
            .statuses
            .get(&repo.to_lowercase())
            .cloned()
            .unwrap_or_default()
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.world().requests.clone()
    }
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // The server may be gone already; either way it is stopping.
            stop.send(()).unwrap_or(());
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            eprintln!("the GitHub stand-in's thread panicked");
        }
    }
}

// ---- State ----

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const HEX: &[u8] = b"0123456789abcdef";

struct Account {
    user: User,
    created_at: String,
}

struct Org {
    login: String,
    id: u64,
}

struct RepoRecord {
    repo: Repo,
    owner_key: String,
    created_at: String,
}

struct Token {
    /// The user's login in lower case.
    login: String,
    scopes: String,
}

struct Code {
    client_id: String,
    login: String,
    scope: String,
    redirect_uri: String,
}

struct Hook {
    id: u64,
    active: bool,
    events: Vec<String>,
    /// The `config` object of the request that made it.
    sent_config: Map<String, Value>,
    created_at: String,
}

struct World {
    web: String,
    api: String,
    random: RandomState,
    entropy: u64,
    next_account_id: u64,
    next_repo_id: u64,
    next_hook_id: u64,
    next_status_id: u64,
    apps: HashMap<String, String>,
    /// By login in lower case.
    users: HashMap<String, Account>,
    orgs: HashMap<String, Org>,
    /// By full name in lower case.
    repos: BTreeMap<String, RepoRecord>,
    grants: HashMap<(String, String), Perms>,
    tokens: HashMap<String, Token>,
    codes: HashMap<String, Code>,
    hooks: HashMap<String, Vec<Hook>>,
    statuses: HashMap<String, Vec<Value>>,
    signed_in: Option<String>,
    requests: Vec<Recorded>,
}

fn lock(world: &Mutex<World>) -> MutexGuard<'_, World> {
    world
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl World {
    fn new(web: String) -> Self {
        Self {
            api: format!("{web}/api/v3"),
            web,
            random: RandomState::new(),
            entropy: 0,
            next_account_id: 1000,
            next_repo_id: 100_000,
            next_hook_id: 500_000,
            next_status_id: 900_000,
            apps: HashMap::new(),
            users: HashMap::new(),
            orgs: HashMap::new(),
            repos: BTreeMap::new(),
            grants: HashMap::new(),
            tokens: HashMap::new(),
            codes: HashMap::new(),
            hooks: HashMap::new(),
            statuses: HashMap::new(),
            signed_in: None,
            requests: Vec::new(),
        }
    }

    /// Users and organizations share one space of ids, as on GitHub.
    fn next_account_id(&mut self) -> u64 {
        self.next_account_id += 1;
        self.next_account_id
    }

    /// `n` characters of `alphabet`, unpredictable.
    fn random(&mut self, n: usize, alphabet: &[u8]) -> String {
        let base = alphabet.len() as u64;
        let mut out = String::with_capacity(n);
        while out.len() < n {
            self.entropy += 1;
            let mut hasher = self.random.build_hasher();
            hasher.write_u64(self.entropy);
            let mut x = hasher.finish();
            for _ in 0..8 {
                if out.len() == n {
                    break;
                }
                out.push(char::from(alphabet[(x % base) as usize]));
                x /= base;
            }
        }
        out
    }

    fn host(&self) -> &str {
        self.web.trim_start_matches("http://")
    }

    // ---- Permissions ----

    /// What `who` holds on the repository as its owner or a collaborator.
    fn member_perms(&self, who: &str, record: &RepoRecord) -> Option<Perms> {
        let key = (who.to_owned(), record.repo.full_name.to_lowercase());
        match self.grants.get(&key) {
            Some(p) => p.any().then_some(*p),
            None => (record.owner_key == who).then_some(Perms::ADMIN),
        }
    }

    /// What `who` (or anyone, signed out) may do on the repository; `None` when they cannot see it.
    fn perms_for(&self, who: Option<&str>, record: &RepoRecord) -> Option<Perms> {
        who.and_then(|w| self.member_perms(w, record))
            .or((!record.repo.private).then_some(Perms::READ))
    }

    // ---- JSON of GitHub's objects ----

    /// `simple-user` of an account (user or organization) by login in lower case.
    fn account_json(&self, key: &str) -> Value {
        let (login, id, kind, node) = match (self.users.get(key), self.orgs.get(key)) {
            (Some(a), _) => (a.user.login.as_str(), a.user.id, "User", "04:User"),
            (None, Some(o)) => (o.login.as_str(), o.id, "Organization", "012:Organization"),
            (None, None) => (key, 0, "User", "04:User"),
        };
        let api = &self.api;
        json!({
            "login": login,
            "id": id,
            "node_id": node_id(node, id),
            "avatar_url": format!("{}/avatars/u/{id}?v=4", self.web),
            "gravatar_id": "",
            "url": format!("{api}/users/{login}"),
            "html_url": format!("{}/{login}", self.web),
            "followers_url": format!("{api}/users/{login}/followers"),
            "following_url": format!("{api}/users/{login}/following{{/other_user}}"),
            "gists_url": format!("{api}/users/{login}/gists{{/gist_id}}"),
            "starred_url": format!("{api}/users/{login}/starred{{/owner}}{{/repo}}"),
            "subscriptions_url": format!("{api}/users/{login}/subscriptions"),
            "organizations_url": format!("{api}/users/{login}/orgs"),
            "repos_url": format!("{api}/users/{login}/repos"),
            "events_url": format!("{api}/users/{login}/events{{/privacy}}"),
            "received_events_url": format!("{api}/users/{login}/received_events"),
            "type": kind,
            "user_view_type": "public",
            "site_admin": false,
        })
    }

    /// `private-user`: what `GET /user` answers.
    fn private_user_json(&self, key: &str) -> Value {
        let mut user = self.account_json(key);
        let Some(account) = self.users.get(key) else {
            return user;
        };
        let owned: Vec<&RepoRecord> = self.repos.values().filter(|r| r.owner_key == key).collect();
        let public = owned.iter().filter(|r| !r.repo.private).count();
        let private = owned.len() - public;
        let extra = json!({
            "name": account.user.name,
            "company": null,
            "blog": "",
            "location": null,
            "email": null,
            "hireable": null,
            "bio": null,
            "twitter_username": null,
            "public_repos": public,
            "public_gists": 0,
            "followers": 0,
            "following": 0,
            "created_at": account.created_at,
            "updated_at": account.created_at,
            "private_gists": 0,
            "total_private_repos": private,
            "owned_private_repos": private,
            "disk_usage": 0,
            "collaborators": 0,
            "two_factor_authentication": false,
            "plan": {"name": "free", "space": 976_562_499, "private_repos": 10_000, "collaborators": 0},
            "user_view_type": "private",
        });
        if let (Some(user), Value::Object(extra)) = (user.as_object_mut(), extra) {
            user.extend(extra);
        }
        user
    }

    /// `repository` (`full` adds what `full-repository` has besides).
    fn repo_json(&self, record: &RepoRecord, perms: Option<Perms>, full: bool) -> Value {
        let r = &record.repo;
        let f = &r.full_name;
        let u = &r.url;
        let mut repo = json!({
            "id": r.id,
            "node_id": r.node_id,
            "name": r.name,
            "full_name": f,
            "private": r.private,
            "owner": self.account_json(&record.owner_key),
            "html_url": r.html_url,
            "description": null,
            "fork": false,
            "url": u,
        });
        // The hypermedia URLs, as GitHub lists them (one `json!` would be too deep a macro).
        let urls = json!({
            "archive_url": format!("{u}/{{archive_format}}{{/ref}}"),
            "assignees_url": format!("{u}/assignees{{/user}}"),
            "blobs_url": format!("{u}/git/blobs{{/sha}}"),
            "branches_url": format!("{u}/branches{{/branch}}"),
            "collaborators_url": format!("{u}/collaborators{{/collaborator}}"),
            "comments_url": format!("{u}/comments{{/number}}"),
            "commits_url": format!("{u}/commits{{/sha}}"),
            "compare_url": format!("{u}/compare/{{base}}...{{head}}"),
            "contents_url": format!("{u}/contents/{{+path}}"),
            "contributors_url": format!("{u}/contributors"),
            "deployments_url": format!("{u}/deployments"),
            "downloads_url": format!("{u}/downloads"),
            "events_url": format!("{u}/events"),
            "forks_url": format!("{u}/forks"),
            "git_commits_url": format!("{u}/git/commits{{/sha}}"),
            "git_refs_url": format!("{u}/git/refs{{/sha}}"),
            "git_tags_url": format!("{u}/git/tags{{/sha}}"),
            "git_url": format!("git://{}/{f}.git", self.host()),
            "issue_comment_url": format!("{u}/issues/comments{{/number}}"),
            "issue_events_url": format!("{u}/issues/events{{/number}}"),
            "issues_url": format!("{u}/issues{{/number}}"),
            "keys_url": format!("{u}/keys{{/key_id}}"),
            "labels_url": format!("{u}/labels{{/name}}"),
            "languages_url": format!("{u}/languages"),
            "merges_url": format!("{u}/merges"),
            "milestones_url": format!("{u}/milestones{{/number}}"),
            "notifications_url": format!("{u}/notifications{{?since,all,participating}}"),
            "pulls_url": format!("{u}/pulls{{/number}}"),
            "releases_url": format!("{u}/releases{{/id}}"),
            "ssh_url": format!("git@{}:{f}.git", self.host().split(':').next().unwrap_or("")),
            "stargazers_url": format!("{u}/stargazers"),
            "statuses_url": format!("{u}/statuses/{{sha}}"),
            "subscribers_url": format!("{u}/subscribers"),
            "subscription_url": format!("{u}/subscription"),
            "tags_url": format!("{u}/tags"),
            "teams_url": format!("{u}/teams"),
            "trees_url": format!("{u}/git/trees{{/sha}}"),
        });
        let rest = json!({
            "clone_url": r.clone_url,
            "mirror_url": null,
            "hooks_url": format!("{u}/hooks"),
            "svn_url": r.html_url,
            "homepage": null,
            "language": null,
            "forks_count": 0,
            "forks": 0,
            "stargazers_count": 0,
            "watchers_count": 0,
            "watchers": 0,
            "size": 0,
            "default_branch": "main",
            "open_issues_count": 0,
            "open_issues": 0,
            "is_template": false,
            "topics": [],
            "has_issues": true,
            "has_projects": true,
            "has_wiki": true,
            "has_pages": false,
            "has_downloads": true,
            "has_discussions": false,
            "archived": false,
            "disabled": false,
            "visibility": if r.private { "private" } else { "public" },
            "pushed_at": record.created_at,
            "created_at": record.created_at,
            "updated_at": record.created_at,
            "allow_forking": true,
            "web_commit_signoff_required": false,
            "license": null,
        });
        for part in [urls, rest] {
            if let (Some(repo), Value::Object(part)) = (repo.as_object_mut(), part) {
                repo.extend(part);
            }
        }
        let Some(fields) = repo.as_object_mut() else {
            return repo;
        };
        if let Some(p) = perms {
            fields.insert("permissions".into(), p.json());
        }
        if full {
            fields.insert("subscribers_count".into(), json!(0));
            fields.insert("network_count".into(), json!(0));
            if self.orgs.contains_key(&record.owner_key) {
                fields.insert("organization".into(), self.account_json(&record.owner_key));
            }
        }
        repo
    }

    /// `hook`: the secret's value never shows.
    fn hook_json(&self, record: &RepoRecord, hook: &Hook) -> Value {
        let url = format!("{}/hooks/{}", record.repo.url, hook.id);
        let sent = &hook.sent_config;
        let mut config = Map::new();
        config.insert(
            "content_type".into(),
            sent.get("content_type")
                .cloned()
                .unwrap_or_else(|| json!("form")),
        );
        config.insert(
            "insecure_ssl".into(),
            match sent.get("insecure_ssl") {
                Some(Value::Number(n)) => json!(n.to_string()),
                Some(v @ Value::String(_)) => v.clone(),
                _ => json!("0"),
            },
        );
        if let Some(secret) = sent.get("secret").and_then(Value::as_str)
            && !secret.is_empty()
        {
            config.insert("secret".into(), json!("********"));
        }
        config.insert(
            "url".into(),
            sent.get("url").cloned().unwrap_or(Value::Null),
        );
        json!({
            "type": "Repository",
            "id": hook.id,
            "name": "web",
            "active": hook.active,
            "events": hook.events,
            "config": config,
            "updated_at": hook.created_at,
            "created_at": hook.created_at,
            "url": url,
            "test_url": format!("{url}/test"),
            "ping_url": format!("{url}/pings"),
            "deliveries_url": format!("{url}/deliveries"),
            "last_response": {"code": null, "status": "unused", "message": null},
        })
    }

    // ---- Requests ----

    fn answer(&mut self, request: &Recorded) -> Reply {
        if let Some(rest) = request.path.strip_prefix("/api/v3")
            && (rest.is_empty() || rest.starts_with('/'))
        {
            return self.rest(request, rest);
        }
        match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/login/oauth/authorize") => self.authorize(request),
            ("POST", "/login/oauth/access_token") => self.access_token(request),
            ("GET", "/login") => Reply::html(StatusCode::OK, "Sign in to GitHub"),
            _ => Reply::html(StatusCode::NOT_FOUND, "Not Found"),
        }
    }

    /// `GET /login/oauth/authorize`: the signed-in user approves at once.
    fn authorize(&mut self, request: &Recorded) -> Reply {
        let query = request.query_pairs();
        let client_id = first(&query, "client_id").unwrap_or("");
        if !self.apps.contains_key(client_id) {
            return Reply::html(StatusCode::NOT_FOUND, "Not Found");
        }
        let Some(redirect_uri) = first(&query, "redirect_uri").filter(|u| !u.is_empty()) else {
            return Reply::html(
                StatusCode::BAD_REQUEST,
                "redirect_uri is required here: the stand-in registers no callback URL",
            );
        };
        let Some(login) = self.signed_in.clone() else {
            let return_to = format!(
                "{}?{}",
                request.path,
                request.query.as_deref().unwrap_or("")
            );
            let login = form_urlencoded::Serializer::new(String::new())
                .append_pair("client_id", client_id)
                .append_pair("return_to", &return_to)
                .finish();
            return Reply::empty(StatusCode::FOUND)
                .header("location", format!("{}/login?{login}", self.web));
        };
        let code = self.random(20, HEX);
        let scope = first(&query, "scope")
            .unwrap_or("")
            .split([' ', ','])
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(",");
        self.codes.insert(
            code.clone(),
            Code {
                client_id: client_id.to_owned(),
                login,
                scope,
                redirect_uri: redirect_uri.to_owned(),
            },
        );
        let mut back = form_urlencoded::Serializer::new(String::new());
        back.append_pair("code", &code);
        if let Some(state) = first(&query, "state") {
            back.append_pair("state", state);
        }
        let separator = if redirect_uri.contains('?') { '&' } else { '?' };
        Reply::empty(StatusCode::FOUND).header(
            "location",
            format!("{redirect_uri}{separator}{}", back.finish()),
        )
    }

    /// `POST /login/oauth/access_token`: parameters in the query, a form or a JSON body; the
    /// answer is JSON when asked for with `Accept: application/json`, a form otherwise. Errors are
    /// answered 200, as GitHub does.
    fn access_token(&mut self, request: &Recorded) -> Reply {
        let mut params = request.query_pairs();
        let is_json = request
            .header("content-type")
            .is_some_and(|t| t.to_ascii_lowercase().contains("json"));
        if is_json {
            if let Some(Value::Object(body)) = request.json() {
                for (k, v) in body {
                    match v {
                        Value::String(s) => params.push((k, s)),
                        other => params.push((k, other.to_string())),
                    }
                }
            }
        } else {
            params.extend(request.form());
        }
        let wants_json = request
            .header("accept")
            .is_some_and(|a| a.to_ascii_lowercase().contains("application/json"));
        let client_id = first(&params, "client_id").unwrap_or("");
        let secret = first(&params, "client_secret").unwrap_or("");
        if self.apps.get(client_id).is_none_or(|s| s != secret) {
            return oauth_error(
                wants_json,
                "incorrect_client_credentials",
                "The client_id and/or client_secret passed are incorrect.",
                "#incorrect-client-credentials",
            );
        }
        let code = first(&params, "code").unwrap_or("");
        let Some(issued) = self.codes.get(code).filter(|c| c.client_id == client_id) else {
            return oauth_error(
                wants_json,
                "bad_verification_code",
                "The code passed is incorrect or expired.",
                "#bad-verification-code",
            );
        };
        if let Some(uri) = first(&params, "redirect_uri")
            && uri != issued.redirect_uri
        {
            return oauth_error(
                wants_json,
                "redirect_uri_mismatch",
                "The redirect_uri MUST match the registered callback URL for this application.",
                "#redirect-uri-mismatch2",
            );
        }
        let Some(issued) = self.codes.remove(code) else {
            return Reply::html(StatusCode::INTERNAL_SERVER_ERROR, "the code vanished");
        };
        let token = format!("gho_{}", self.random(36, ALNUM));
        self.tokens.insert(
            token.clone(),
            Token {
                login: issued.login,
                scopes: issued.scope.replace(',', ", "),
            },
        );
        let answer = [
            ("access_token", token.as_str()),
            ("token_type", "bearer"),
            ("scope", issued.scope.as_str()),
        ];
        oauth_answer(wants_json, &answer)
    }

    /// The REST API; `path` is what follows `/api/v3`.
    fn rest(&mut self, request: &Recorded, path: &str) -> Reply {
        let caller = match self.authenticate(request) {
            Ok(caller) => caller,
            Err(reply) => return reply,
        };
        let who = caller.as_ref().map(|t| t.login.clone());
        let who = who.as_deref();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let reply = match (request.method.as_str(), segments.as_slice()) {
            ("GET", ["user"]) => self.get_user(who),
            ("GET", ["user", "repos"]) => self.list_user_repos(who, request),
            ("GET", ["repos", owner, name]) => self.get_repo(who, owner, name),
            ("GET", ["repos", owner, name, "hooks"]) => {
                self.list_hooks(who, &format!("{owner}/{name}"), request)
            }
            ("POST", ["repos", owner, name, "hooks"]) => {
                self.create_hook(who, &format!("{owner}/{name}"), request)
            }
            ("GET", ["repos", owner, name, "hooks", id]) => {
                self.get_hook(who, &format!("{owner}/{name}"), id)
            }
            ("DELETE", ["repos", owner, name, "hooks", id]) => {
                self.delete_hook(who, &format!("{owner}/{name}"), id)
            }
            ("POST", ["repos", owner, name, "statuses", sha @ ..])
                if !sha.is_empty() && sha.iter().all(|s| !s.is_empty()) =>
            {
                self.create_status(who, &format!("{owner}/{name}"), &sha.join("/"), request)
            }
            _ => Reply::error(StatusCode::NOT_FOUND, "Not Found", DOCS_REST),
        };
        match caller {
            Some(token) => reply.header("x-oauth-scopes", token.scopes),
            None => reply,
        }
    }

    /// The caller's token, from `Authorization: Bearer <token>` or `token <token>`; a token
    /// GitHub does not know is 401 `Bad credentials`, whatever the path.
    fn authenticate(&self, request: &Recorded) -> Result<Option<Token>, Reply> {
        let Some(value) = request.header("authorization") else {
            return Ok(None);
        };
        let token = value.trim().split_once(' ').and_then(|(scheme, token)| {
            (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token"))
                .then(|| token.trim())
        });
        match token.and_then(|t| self.tokens.get(t)) {
            Some(t) => Ok(Some(Token {
                login: t.login.clone(),
                scopes: t.scopes.clone(),
            })),
            None => Err(Reply::error(
                StatusCode::UNAUTHORIZED,
                "Bad credentials",
                DOCS_REST,
            )),
        }
    }

    fn get_user(&self, who: Option<&str>) -> Reply {
        match who {
            Some(who) => Reply::json(StatusCode::OK, &self.private_user_json(who)),
            None => requires_authentication(DOCS_GET_USER),
        }
    }

    fn list_user_repos(&self, who: Option<&str>, request: &Recorded) -> Reply {
        let Some(who) = who else {
            return requires_authentication(DOCS_LIST_REPOS);
        };
        let query = request.query_pairs();
        let visibility = first(&query, "visibility").unwrap_or("all");
        if !["all", "public", "private"].contains(&visibility) {
            return validation_failed(
                DOCS_LIST_REPOS,
                json!([{"resource": "Repository", "field": "visibility", "code": "invalid"}]),
            );
        }
        let mut listed: Vec<(&RepoRecord, Perms)> = self
            .repos
            .values()
            .filter_map(|r| self.member_perms(who, r).map(|p| (r, p)))
            .filter(|(r, _)| match visibility {
                "public" => !r.repo.private,
                "private" => r.repo.private,
                _ => true,
            })
            .collect();
        // GitHub's defaults: sort by full_name ascending; the other sorts newest first.
        let sort = first(&query, "sort").unwrap_or("full_name");
        let by_name = !["created", "updated", "pushed"].contains(&sort);
        if by_name {
            listed.sort_by_key(|(r, _)| r.repo.full_name.to_lowercase());
        } else {
            listed.sort_by_key(|(r, _)| r.repo.id);
        }
        let ascending = match first(&query, "direction") {
            Some("asc") => true,
            Some("desc") => false,
            _ => by_name,
        };
        if !ascending {
            listed.reverse();
        }
        let url = format!("{}/user/repos", self.api);
        let (page, link) = paginate(&listed, &query, &url);
        let body: Vec<Value> = page
            .iter()
            .map(|(r, p)| self.repo_json(r, Some(*p), false))
            .collect();
        with_link(Reply::json(StatusCode::OK, &Value::Array(body)), link)
    }

    fn get_repo(&self, who: Option<&str>, owner: &str, name: &str) -> Reply {
        let key = format!("{owner}/{name}").to_lowercase();
        let Some(record) = self.repos.get(&key) else {
            return not_found(DOCS_GET_REPO);
        };
        let Some(perms) = self.perms_for(who, record) else {
            return not_found(DOCS_GET_REPO);
        };
        // Signed out, GitHub leaves `permissions` out.
        let perms = who.map(|_| perms);
        Reply::json(StatusCode::OK, &self.repo_json(record, perms, true))
    }

    /// The repository's key when `who` may do what `allowed` asks there; 401 signed out, and 404
    /// otherwise, as GitHub answers.
    fn repo_where(
        &self,
        who: Option<&str>,
        full_name: &str,
        docs: &str,
        allowed: impl Fn(Perms) -> bool,
    ) -> Result<String, Reply> {
        let Some(who) = who else {
            return Err(requires_authentication(docs));
        };
        let key = full_name.to_lowercase();
        let record = self.repos.get(&key).ok_or_else(|| not_found(docs))?;
        match self.perms_for(Some(who), record) {
            Some(p) if allowed(p) => Ok(key),
            _ => Err(not_found(docs)),
        }
    }

    fn list_hooks(&self, who: Option<&str>, full_name: &str, request: &Recorded) -> Reply {
        let key = match self.repo_where(who, full_name, DOCS_LIST_HOOKS, |p| p.admin) {
            Ok(key) => key,
            Err(reply) => return reply,
        };
        let Some(record) = self.repos.get(&key) else {
            return not_found(DOCS_LIST_HOOKS);
        };
        let hooks: Vec<&Hook> = self
            .hooks
            .get(&key)
            .map(|h| h.iter().collect())
            .unwrap_or_default();
        let query = request.query_pairs();
        let url = format!("{}/hooks", record.repo.url);
        let (page, link) = paginate(&hooks, &query, &url);
        let body: Vec<Value> = page.iter().map(|h| self.hook_json(record, h)).collect();
        with_link(Reply::json(StatusCode::OK, &Value::Array(body)), link)
    }

    fn create_hook(&mut self, who: Option<&str>, full_name: &str, request: &Recorded) -> Reply {
        let key = match self.repo_where(who, full_name, DOCS_CREATE_HOOK, |p| p.admin) {
            Ok(key) => key,
            Err(reply) => return reply,
        };
        // The body is optional; without one nothing says where to deliver.
        let body = if request.body.iter().all(u8::is_ascii_whitespace) {
            Value::Object(Map::new())
        } else {
            match serde_json::from_slice::<Value>(&request.body) {
                Ok(v) => v,
                Err(_) => return problems_parsing_json(DOCS_CREATE_HOOK),
            }
        };
        let invalid = |field: &str| {
            validation_failed(
                DOCS_CREATE_HOOK,
                json!([{"resource": "Hook", "field": field, "code": "invalid"}]),
            )
        };
        let Value::Object(body) = body else {
            return problems_parsing_json(DOCS_CREATE_HOOK);
        };
        // The description allows no other property.
        if let Some(other) = body
            .keys()
            .find(|k| !["name", "config", "events", "active"].contains(&k.as_str()))
        {
            return invalid(other);
        }
        match body.get("name") {
            None => {}
            Some(Value::String(name)) if name == "web" => {}
            Some(_) => return invalid("name"),
        }
        let config = match body.get("config") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(config)) => config.clone(),
            Some(_) => return invalid("config"),
        };
        let Some(url) = config
            .get("url")
            .and_then(Value::as_str)
            .filter(|u| !u.trim().is_empty())
            .map(str::to_owned)
        else {
            return validation_failed(
                DOCS_CREATE_HOOK,
                json!([{
                    "resource": "Hook",
                    "code": "custom",
                    "message": "Config must contain URL for webhooks",
                }]),
            );
        };
        let events = match body.get("events") {
            None | Some(Value::Null) => vec!["push".to_owned()],
            Some(Value::Array(events)) => {
                let mut names = Vec::new();
                for e in events {
                    match e.as_str() {
                        Some(e) => names.push(e.to_owned()),
                        None => return invalid("events"),
                    }
                }
                if names.is_empty() {
                    names.push("push".to_owned());
                }
                names
            }
            Some(_) => return invalid("events"),
        };
        let active = match body.get("active") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => return invalid("active"),
        };
        let taken = self.hooks.get(&key).is_some_and(|hooks| {
            hooks.iter().any(|h| {
                h.sent_config.get("url").and_then(Value::as_str) == Some(url.as_str())
                    && h.events.iter().any(|e| events.contains(e))
            })
        });
        if taken {
            return validation_failed(
                DOCS_CREATE_HOOK,
                json!([{
                    "resource": "Hook",
                    "code": "custom",
                    "message": "Hook already exists on this repository",
                }]),
            );
        }
        self.next_hook_id += 1;
        let hook = Hook {
            id: self.next_hook_id,
            active,
            events,
            sent_config: config,
            created_at: now(),
        };
        let Some(record) = self.repos.get(&key) else {
            return not_found(DOCS_CREATE_HOOK);
        };
        let answer = self.hook_json(record, &hook);
        let location = format!("{}/hooks/{}", record.repo.url, hook.id);
        self.hooks.entry(key).or_default().push(hook);
        Reply::json(StatusCode::CREATED, &answer).header("location", location)
    }

    fn get_hook(&self, who: Option<&str>, full_name: &str, id: &str) -> Reply {
        let key = match self.repo_where(who, full_name, DOCS_GET_HOOK, |p| p.admin) {
            Ok(key) => key,
            Err(reply) => return reply,
        };
        let id: Option<u64> = id.parse().ok();
        let hook = self
            .hooks
            .get(&key)
            .and_then(|hooks| hooks.iter().find(|h| Some(h.id) == id));
        match (hook, self.repos.get(&key)) {
            (Some(hook), Some(record)) => {
                Reply::json(StatusCode::OK, &self.hook_json(record, hook))
            }
            _ => not_found(DOCS_GET_HOOK),
        }
    }

    fn delete_hook(&mut self, who: Option<&str>, full_name: &str, id: &str) -> Reply {
        let key = match self.repo_where(who, full_name, DOCS_DELETE_HOOK, |p| p.admin) {
            Ok(key) => key,
            Err(reply) => return reply,
        };
        let Ok(id) = id.parse::<u64>() else {
            return not_found(DOCS_DELETE_HOOK);
        };
        let hooks = self.hooks.entry(key).or_default();
        let before = hooks.len();
        hooks.retain(|h| h.id != id);
        if hooks.len() < before {
            Reply::empty(StatusCode::NO_CONTENT)
        } else {
            not_found(DOCS_DELETE_HOOK)
        }
    }

    fn create_status(
        &mut self,
        who: Option<&str>,
        full_name: &str,
        sha: &str,
        request: &Recorded,
    ) -> Reply {
        let key = match self.repo_where(who, full_name, DOCS_CREATE_STATUS, |p| p.push) {
            Ok(key) => key,
            Err(reply) => return reply,
        };
        let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&request.body) else {
            return problems_parsing_json(DOCS_CREATE_STATUS);
        };
        let invalid = |field: &str, code: &str, message: Option<&str>| {
            let mut error = json!({"resource": "Status", "field": field, "code": code});
            if let (Some(m), Some(e)) = (message, error.as_object_mut()) {
                e.insert("message".into(), json!(m));
            }
            validation_failed(DOCS_CREATE_STATUS, json!([error]))
        };
        let state = match body.get("state") {
            None | Some(Value::Null) => return invalid("state", "missing_field", None),
            Some(Value::String(s))
                if ["error", "failure", "pending", "success"].contains(&s.as_str()) =>
            {
                s.clone()
            }
            Some(_) => return invalid("state", "invalid", None),
        };
        let optional = |field: &str| match body.get(field) {
            None | Some(Value::Null) => Ok(Value::Null),
            Some(v @ Value::String(_)) => Ok(v.clone()),
            Some(_) => Err(field.to_owned()),
        };
        let (target_url, description) = match (optional("target_url"), optional("description")) {
            (Ok(t), Ok(d)) => (t, d),
            (Err(f), _) | (_, Err(f)) => return invalid(&f, "invalid", None),
        };
        if description
            .as_str()
            .is_some_and(|d| d.chars().count() > 140)
        {
            return invalid(
                "description",
                "custom",
                Some("description is too long (maximum is 140 characters)"),
            );
        }
        let context = match body.get("context") {
            None | Some(Value::Null) => "default".to_owned(),
            Some(Value::String(c)) => c.clone(),
            Some(_) => return invalid("context", "invalid", None),
        };
        let Some(record) = self.repos.get(&key) else {
            return not_found(DOCS_CREATE_STATUS);
        };
        let url = format!("{}/statuses/{sha}", record.repo.url);
        let creator_key = who.unwrap_or_default();
        let creator = self.account_json(creator_key);
        self.next_status_id += 1;
        let id = self.next_status_id;
        let at = now();
        let status = json!({
            "url": url,
            "avatar_url": creator["avatar_url"],
            "id": id,
            "node_id": node_id("06:Status", id),
            "state": state,
            "description": description,
            "target_url": target_url,
            "context": context,
            "created_at": at,
            "updated_at": at,
            "creator": creator,
        });
        self.statuses.entry(key).or_default().push(status.clone());
        Reply::json(StatusCode::CREATED, &status).header("location", url)
    }
}

// ---- Answers ----

/// What the stand-in answers; made into a response at the end.
struct Reply {
    status: StatusCode,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn json(status: StatusCode, value: &Value) -> Self {
        Self {
            status,
            headers: vec![
                ("content-type", "application/json; charset=utf-8".into()),
                ("x-github-media-type", "github.v3; format=json".into()),
            ],
            body: serde_json::to_vec(value).unwrap_or_default(),
        }
    }

    /// GitHub's error body (`basic-error`).
    fn error(status: StatusCode, message: &str, docs: &str) -> Self {
        let body = json!({
            "message": message,
            "documentation_url": docs,
            "status": status.as_u16().to_string(),
        });
        Self::json(status, &body)
    }

    fn html(status: StatusCode, text: &str) -> Self {
        Self {
            status,
            headers: vec![("content-type", "text/html; charset=utf-8".into())],
            body: format!("<!DOCTYPE html><html><body><h1>{text}</h1></body></html>").into_bytes(),
        }
    }

    fn empty(status: StatusCode) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    fn header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut response = Response::new(Body::from(self.body));
        *response.status_mut() = self.status;
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response
                    .headers_mut()
                    .append(HeaderName::from_static(name), value);
            }
        }
        response
    }
}

fn not_found(docs: &str) -> Reply {
    Reply::error(StatusCode::NOT_FOUND, "Not Found", docs)
}

fn requires_authentication(docs: &str) -> Reply {
    Reply::error(StatusCode::UNAUTHORIZED, "Requires authentication", docs)
}

fn problems_parsing_json(docs: &str) -> Reply {
    Reply::error(StatusCode::BAD_REQUEST, "Problems parsing JSON", docs)
}

/// 422 with GitHub's `validation-error` body.
fn validation_failed(docs: &str, errors: Value) -> Reply {
    let body = json!({
        "message": "Validation Failed",
        "errors": errors,
        "documentation_url": docs,
        "status": "422",
    });
    Reply::json(StatusCode::UNPROCESSABLE_ENTITY, &body)
}

fn oauth_answer(wants_json: bool, fields: &[(&str, &str)]) -> Reply {
    if wants_json {
        let body: Map<String, Value> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        let mut reply = Reply::json(StatusCode::OK, &Value::Object(body));
        reply.headers.retain(|(n, _)| *n == "content-type");
        reply
    } else {
        let mut form = form_urlencoded::Serializer::new(String::new());
        for (k, v) in fields {
            form.append_pair(k, v);
        }
        Reply {
            status: StatusCode::OK,
            headers: vec![(
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8".into(),
            )],
            body: form.finish().into_bytes(),
        }
    }
}

fn oauth_error(wants_json: bool, error: &str, description: &str, anchor: &str) -> Reply {
    let uri = format!("{OAUTH_ERRORS}{anchor}");
    oauth_answer(
        wants_json,
        &[
            ("error", error),
            ("error_description", description),
            ("error_uri", &uri),
        ],
    )
}

fn with_link(reply: Reply, link: Option<String>) -> Reply {
    match link {
        Some(link) => reply.header("link", link),
        None => reply,
    }
}

/// The page `page` of `items` at `per_page` (GitHub's defaults: page 1, 30 a page, at most 100),
/// and the `Link` header GitHub writes for it: `prev`, `next`, `last`, `first`, each the request's
/// URL with its `page` set; none when everything fits one page.
fn paginate<'a, T>(
    items: &'a [T],
    query: &[(String, String)],
    url: &str,
) -> (&'a [T], Option<String>) {
    let per_page = first(query, "per_page")
        .and_then(|p| p.trim().parse::<usize>().ok())
        .filter(|p| *p > 0)
        .map_or(PER_PAGE_DEFAULT, |p| p.min(PER_PAGE_MAX));
    let page = first(query, "page")
        .and_then(|p| p.trim().parse::<usize>().ok())
        .filter(|p| *p > 0)
        .unwrap_or(1);
    let last = items.len().div_ceil(per_page).max(1);
    let start = (page - 1).saturating_mul(per_page).min(items.len());
    let end = start.saturating_add(per_page).min(items.len());
    let mut links = Vec::new();
    let mut link = |page: usize, rel: &str| {
        links.push(format!("<{}>; rel=\"{rel}\"", page_url(url, query, page)));
    };
    if page > 1 {
        link(page - 1, "prev");
    }
    if page < last {
        link(page + 1, "next");
        link(last, "last");
    }
    if page > 1 {
        link(1, "first");
    }
    let header = (!links.is_empty()).then(|| links.join(", "));
    (&items[start..end], header)
}

/// `url` with the request's query, its `page` replaced (or added at the end).
fn page_url(url: &str, query: &[(String, String)], page: usize) -> String {
    let page = page.to_string();
    let mut out = form_urlencoded::Serializer::new(String::new());
    let mut placed = false;
    for (k, v) in query {
        if k == "page" {
            if !placed {
                out.append_pair("page", &page);
                placed = true;
            }
        } else {
            out.append_pair(k, v);
        }
    }
    if !placed {
        out.append_pair("page", &page);
    }
    format!("{url}?{}", out.finish())
}

// ---- Small things ----

async fn answer(State(world): State<Arc<Mutex<World>>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, BODY_LIMIT)
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    let recorded = Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    };
    let mut world = lock(&world);
    world.requests.push(recorded.clone());
    world.answer(&recorded).into_response()
}

fn pairs(bytes: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(bytes).into_owned().collect()
}

fn first<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Now, as GitHub writes times: `2011-01-26T19:01:12Z`.
fn now() -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::now_utc()
        .format(format)
        .unwrap_or_default()
}

/// A legacy global node id, as GitHub makes them: base64 of `{kind}{id}` (`MDQ6VXNlcjE=` is
/// `04:User1`).
fn node_id(kind: &str, id: u64) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = format!("{kind}{id}").into_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (b(0) << 16) | (b(1) << 8) | b(2);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(TABLE[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}
