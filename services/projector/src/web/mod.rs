//! The web UI: pages rendered by the server from askama templates (`web/templates/`), one
//! stylesheet and one script (`web/static/`), over the same read model the JSON API answers from,
//! so that a page and the API cannot disagree.
//!
//! # Layout
//!
//! - this file: the routes, who may see what, the static assets.
//! - [`views`]: what a template shows of a build or a repository (pure).
//! - [`badge`]: the badge, `/badge/{owner}/{name}.svg`.
//!
//! # Invariants
//!
//! - **A page shows what the API would**: it reads the read model and applies the same access
//!   rule (a private repository's builds only to those GitHub lets read it; others get 404).
//! - **No log line reaches the page as HTML**: the script turns each line into text nodes and
//!   styled spans; the templates escape every value.
//! - A million-line log is never sent whole: the page asks for the lines in view.

pub mod badge;
pub mod views;

use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use hermes_access::{Auth, Caller, Rights, Vault};
use hermes_schemas::RepoName;
use serde::Deserialize;

use crate::model::Build;
use crate::read_model::ReadModel;
use views::{BuildView, RepoView, Viewer};

/// What the pages need.
pub struct Web {
    pub model: ReadModel,
    pub auth: Auth,
    /// Whether sign-in is on (the pages offer it).
    pub sign_in: bool,
    pub vault: Option<Arc<Vault>>,
    /// Where Hermes is reached, for the badge's Markdown (`None`: the page's own origin).
    pub public_url: Option<String>,
}

pub fn router(web: Web) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/repos/{owner}/{name}", get(repo))
        .route("/repos/{owner}/{name}/builds/{number}", get(build))
        .route("/badge/{owner}/{file}", get(badge::badge))
        .route("/static/hermes.css", get(css))
        .route("/static/hermes.js", get(js))
        .with_state(Arc::new(web))
}

/// Changes with the assets, so browsers fetch them again after an upgrade.
pub(crate) const ASSET_VERSION: &str = env!("CARGO_PKG_VERSION");

const CSS: &str = include_str!("../../web/static/hermes.css");
const JS: &str = include_str!("../../web/static/hermes.js");

async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// A page's answer when it cannot be shown.
struct PageError {
    status: StatusCode,
    heading: &'static str,
    message: String,
    viewer: Viewer,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    viewer: &'a Viewer,
    heading: &'a str,
    message: &'a str,
    asset_version: &'static str,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let page = ErrorPage {
            viewer: &self.viewer,
            heading: self.heading,
            message: &self.message,
            asset_version: ASSET_VERSION,
        };
        match page.render() {
            Ok(html) => (self.status, Html(html)).into_response(),
            Err(e) => {
                tracing::error!(error = %e, "Rendering the error page failed.");
                (self.status, self.message).into_response()
            }
        }
    }
}

impl PageError {
    fn not_found(viewer: &Viewer, what: String) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            heading: "Not found",
            message: what,
            viewer: viewer.clone(),
        }
    }

    fn unavailable(viewer: &Viewer) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            heading: "Try again",
            message: "Hermes could not answer just now; reload in a moment.".into(),
            viewer: viewer.clone(),
        }
    }
}

/// Who is looking, as the header shows them, and their caller identity.
async fn viewer(web: &Web, headers: &HeaderMap, here: &str) -> (Viewer, Caller) {
    let caller = match web.auth.identify(headers).await {
        Ok(who) => who.caller,
        Err(_) => Caller::Anonymous,
    };
    let v = Viewer::of(&caller, web.sign_in, here);
    (v, caller)
}

/// What `caller` may do with a repository whose builds say `private` (`None`: no builds).
async fn rights(web: &Web, caller: &Caller, repo: &RepoName, private: bool) -> Option<Rights> {
    web.auth.rights(caller, repo, private).await.ok()
}

fn render<T: Template>(t: &T) -> Response {
    match t.render() {
        Ok(html) => (
            [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
            Html(html),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "Rendering a page failed.");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Runs a read of the read model on the blocking pool.
async fn read<R: Send + 'static>(
    web: &Web,
    f: impl FnOnce(&crate::Store) -> Result<R, crate::StoreError> + Send + 'static,
) -> Option<R> {
    let store = web.model.store();
    match tokio::task::spawn_blocking(move || f(&store)).await {
        Ok(Ok(r)) => Some(r),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "Read model query failed.");
            None
        }
        Err(_) => None,
    }
}

// ---- Home ------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct HomeQuery {
    /// The old link form (`/?build=<id>`, as commit statuses had it): redirected to the build's
    /// page.
    build: Option<String>,
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    viewer: Viewer,
    repos: Vec<RepoView>,
    asset_version: &'static str,
}

/// The most repositories with builds the signed-out home page lists.
const HOME_REPOS: usize = 100;

async fn home(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    query: Result<Query<HomeQuery>, QueryRejection>,
) -> Result<Response, PageError> {
    let (viewer, caller) = viewer(&web, &headers, "/").await;
    if let Ok(Query(HomeQuery { build: Some(id) })) = query {
        let lookup = id.clone();
        let found = read(&web, move |s| s.build(&lookup)).await.flatten();
        let Some(b) = found else {
            return Err(PageError::not_found(
                &viewer,
                format!("No build with id {id}."),
            ));
        };
        let may = rights(&web, &caller, &b.repo, b.private).await;
        if !may.is_some_and(|r| r.read) {
            return Err(PageError::not_found(
                &viewer,
                format!("No build with id {id}."),
            ));
        }
        return Ok(Redirect::to(&views::build_path(&b)).into_response());
    }
    let repos = match &caller {
        Caller::User(session) => {
            let Some(p) = web.auth.permissions() else {
                return Err(PageError::unavailable(&viewer));
            };
            let Ok(theirs) = p.repos(session).await else {
                return Err(PageError::unavailable(&viewer));
            };
            let active = match &web.vault {
                Some(v) => v.active_repos().await.unwrap_or_default(),
                None => Default::default(),
            };
            let names: Vec<String> = theirs.iter().map(|r| r.full_name.clone()).collect();
            let last = read(&web, move |s| {
                names
                    .iter()
                    .map(|n| match RepoName::parse(n) {
                        Ok(r) => s.last_build(&r),
                        Err(_) => Ok(None),
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .await
            .ok_or_else(|| PageError::unavailable(&viewer))?;
            let mut repos: Vec<RepoView> = theirs
                .iter()
                .zip(last)
                .map(|(r, last)| {
                    let token = RepoName::parse(&r.full_name)
                        .map(|n| Vault::repo_token(&n))
                        .unwrap_or_default();
                    RepoView {
                        full_name: r.full_name.clone(),
                        private: r.private,
                        admin: r.permissions.unwrap_or_default().admin,
                        active: active.contains(&token),
                        last: last.as_ref().map(BuildView::of),
                        activity: last.map(|b| b.created_at),
                    }
                })
                .collect();
            repos.sort_by(|a, b| {
                b.activity
                    .cmp(&a.activity)
                    .then_with(|| a.full_name.to_lowercase().cmp(&b.full_name.to_lowercase()))
            });
            repos
        }
        // Signed out (or the API token, which is no one to show repositories to): the public
        // repositories with builds, newest activity first.
        _ => read(&web, |s| s.recent_repos(HOME_REPOS))
            .await
            .ok_or_else(|| PageError::unavailable(&viewer))?
            .into_iter()
            .filter(|b| !b.private || matches!(caller, Caller::ApiToken))
            .map(|b| RepoView {
                full_name: b.repo.to_string(),
                private: b.private,
                admin: false,
                active: false,
                activity: Some(b.created_at),
                last: Some(BuildView::of(&b)),
            })
            .collect(),
    };
    Ok(render(&HomePage {
        viewer,
        repos,
        asset_version: ASSET_VERSION,
    }))
}

// ---- A repository ---------------------------------------------------------------------------

#[derive(Deserialize)]
struct RepoQuery {
    /// Builds numbered below this (the next page).
    before: Option<u64>,
    /// `rows`: only the rows of the table, for the page's live refresh.
    part: Option<String>,
}

/// Builds on a page of a repository.
pub const REPO_PAGE: usize = 25;

#[derive(Template)]
#[template(path = "repo_rows.html")]
struct RepoRows<'a> {
    repo: &'a str,
    builds: &'a [BuildView],
    live: bool,
}

#[derive(Template)]
#[template(path = "repo.html")]
struct RepoPage<'a> {
    viewer: Viewer,
    repo: &'a str,
    private: bool,
    github_url: String,
    rows: String,
    builds: &'a [BuildView],
    page_before: Option<u64>,
    older: Option<u64>,
    public_url: String,
    asset_version: &'static str,
}

/// The repository named by a path, and whether `caller` may read it: `None` for a repository
/// that is not there for them (unknown, or private and not theirs).
async fn readable_repo(
    web: &Web,
    caller: &Caller,
    repo: &RepoName,
) -> Option<(Option<Build>, Rights)> {
    let name = repo.clone();
    let last = read(web, move |s| s.last_build(&name)).await?;
    match &last {
        Some(b) => {
            let r = rights(web, caller, repo, b.private).await?;
            r.read.then_some((last, r))
        }
        // No builds: there only for someone GitHub shows it to.
        None => match caller {
            Caller::User(_) => {
                let r = rights(web, caller, repo, true).await?;
                r.read.then_some((None, r))
            }
            _ => None,
        },
    }
}

async fn repo(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path((owner, name)): Path<(String, String)>,
    query: Result<Query<RepoQuery>, QueryRejection>,
) -> Result<Response, PageError> {
    let here = format!("/repos/{owner}/{name}");
    let (viewer, caller) = viewer(&web, &headers, &here).await;
    let missing = || PageError::not_found(&viewer, format!("No repository {owner}/{name} here."));
    let repo = RepoName::parse(&format!("{owner}/{name}")).map_err(|_| missing())?;
    let Query(q) = query.unwrap_or(Query(RepoQuery {
        before: None,
        part: None,
    }));
    let (last, _) = readable_repo(&web, &caller, &repo)
        .await
        .ok_or_else(missing)?;
    let name_for_read = repo.clone();
    let before = q.before;
    let page = read(&web, move |s| {
        s.builds_of(&name_for_read, before, REPO_PAGE + 1)
    })
    .await
    .ok_or_else(|| PageError::unavailable(&viewer))?;
    let older = (page.len() > REPO_PAGE).then(|| page[REPO_PAGE - 1].number);
    let builds: Vec<BuildView> = page.iter().take(REPO_PAGE).map(BuildView::of).collect();
    let live = q.before.is_none();
    let rows = RepoRows {
        repo: repo.as_str(),
        builds: &builds,
        live,
    }
    .render()
    .map_err(|_| PageError::unavailable(&viewer))?;
    if q.part.as_deref() == Some("rows") {
        return Ok(([(header::CACHE_CONTROL, "no-store")], Html(rows)).into_response());
    }
    let html_url = last
        .as_ref()
        .and_then(|b| b.html_url.as_deref())
        .and_then(|u| u.split("/commit/").next())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("https://github.com/{repo}"));
    Ok(render(&RepoPage {
        viewer,
        repo: repo.as_str(),
        private: last.as_ref().is_some_and(|b| b.private),
        github_url: html_url,
        rows,
        builds: &builds,
        page_before: q.before,
        older,
        public_url: web.public_url.clone().unwrap_or_default(),
        asset_version: ASSET_VERSION,
    }))
}

// ---- A build --------------------------------------------------------------------------------

#[derive(Deserialize)]
struct BuildQuery {
    /// The attempt whose log to show (default: the current one).
    attempt: Option<u32>,
    /// `facts`: only the facts, for the page's live refresh.
    part: Option<String>,
}

#[derive(Template)]
#[template(path = "build_facts.html")]
struct BuildFacts<'a> {
    b: &'a BuildView,
    can_command: bool,
    live: bool,
    shown_attempt: u32,
}

#[derive(Template)]
#[template(path = "build.html")]
struct BuildPage<'a> {
    viewer: Viewer,
    b: &'a BuildView,
    facts: String,
    live: bool,
    pinned: bool,
    shown_attempt: u32,
    total_lines: u64,
    download_name: String,
    asset_version: &'static str,
}

async fn build(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path((owner, name, number)): Path<(String, String, String)>,
    query: Result<Query<BuildQuery>, QueryRejection>,
) -> Result<Response, PageError> {
    let here = format!("/repos/{owner}/{name}/builds/{number}");
    let (viewer, caller) = viewer(&web, &headers, &here).await;
    let missing = || {
        PageError::not_found(
            &viewer,
            format!("No build {number} of {owner}/{name} here."),
        )
    };
    let repo = RepoName::parse(&format!("{owner}/{name}")).map_err(|_| missing())?;
    let number: u64 = number.parse().map_err(|_| missing())?;
    let Query(q) = query.unwrap_or(Query(BuildQuery {
        attempt: None,
        part: None,
    }));
    let lookup = repo.clone();
    let found = read(&web, move |s| s.build_by_number(&lookup, number))
        .await
        .ok_or_else(|| PageError::unavailable(&viewer))?;
    let b = found.ok_or_else(missing)?;
    let r = rights(&web, &caller, &repo, b.private)
        .await
        .ok_or_else(|| PageError::unavailable(&viewer))?;
    if !r.read {
        return Err(missing());
    }
    let view = BuildView::of(&b);
    let pinned = q.attempt.is_some_and(|a| a != b.attempt);
    let shown_attempt = match q.attempt {
        Some(a) if b.attempts.iter().any(|x| x.attempt == a) => a,
        _ => b.attempt,
    };
    let live = !b.status.is_final();
    let facts = BuildFacts {
        b: &view,
        can_command: r.write,
        live,
        shown_attempt,
    }
    .render()
    .map_err(|_| PageError::unavailable(&viewer))?;
    if q.part.as_deref() == Some("facts") {
        return Ok(([(header::CACHE_CONTROL, "no-store")], Html(facts)).into_response());
    }
    let id = b.id.to_string();
    let total_lines = read(&web, move |s| s.log_count(&id, shown_attempt))
        .await
        .unwrap_or(0);
    Ok(render(&BuildPage {
        viewer,
        download_name: format!("{}-{}.log", repo.as_str().replace('/', "-"), b.number),
        b: &view,
        facts,
        live: live && !pinned,
        pinned,
        shown_attempt,
        total_lines,
        asset_version: ASSET_VERSION,
    }))
}
