//! The GitHub stand-in of the end-to-end tests (tests/support/github.rs), held to what GitHub
//! documents: the operations `users/get-authenticated`, `repos/list-for-authenticated-user`,
//! `repos/get`, `repos/create-webhook`, `repos/delete-webhook` and `repos/create-commit-status` of
//! GitHub's REST description (github/rest-api-description), and the OAuth web flow of "Authorizing
//! OAuth apps" with the errors of "Troubleshooting OAuth app access token request errors".

mod support;

use reqwest::StatusCode;
use reqwest::blocking::{Client, Response};
use serde_json::{Value, json};
use support::github::{FakeGitHub, Perms};

/// `required` of the description's `simple-user` schema.
const SIMPLE_USER: &[&str] = &[
    "avatar_url",
    "events_url",
    "followers_url",
    "following_url",
    "gists_url",
    "gravatar_id",
    "html_url",
    "id",
    "node_id",
    "login",
    "organizations_url",
    "received_events_url",
    "repos_url",
    "site_admin",
    "starred_url",
    "subscriptions_url",
    "type",
    "url",
];

/// Fields of the `private-user` answer of `GET /user` beyond `simple-user` (its examples).
const PRIVATE_USER: &[&str] = &[
    "name",
    "company",
    "blog",
    "location",
    "email",
    "hireable",
    "bio",
    "twitter_username",
    "public_repos",
    "public_gists",
    "followers",
    "following",
    "created_at",
    "updated_at",
    "private_gists",
    "total_private_repos",
    "owned_private_repos",
    "disk_usage",
    "collaborators",
    "two_factor_authentication",
    "plan",
];

/// Fields of the `repository` schema (and its `repository-items-default-response` example).
const REPOSITORY: &[&str] = &[
    "id",
    "node_id",
    "name",
    "full_name",
    "owner",
    "private",
    "html_url",
    "description",
    "fork",
    "url",
    "archive_url",
    "assignees_url",
    "blobs_url",
    "branches_url",
    "collaborators_url",
    "comments_url",
    "commits_url",
    "compare_url",
    "contents_url",
    "contributors_url",
    "deployments_url",
    "downloads_url",
    "events_url",
    "forks_url",
    "git_commits_url",
    "git_refs_url",
    "git_tags_url",
    "git_url",
    "issue_comment_url",
    "issue_events_url",
    "issues_url",
    "keys_url",
    "labels_url",
    "languages_url",
    "merges_url",
    "milestones_url",
    "notifications_url",
    "pulls_url",
    "releases_url",
    "ssh_url",
    "stargazers_url",
    "statuses_url",
    "subscribers_url",
    "subscription_url",
    "tags_url",
    "teams_url",
    "trees_url",
    "clone_url",
    "mirror_url",
    "hooks_url",
    "svn_url",
    "homepage",
    "language",
    "forks_count",
    "stargazers_count",
    "watchers_count",
    "size",
    "default_branch",
    "open_issues_count",
    "is_template",
    "topics",
    "has_issues",
    "has_projects",
    "has_wiki",
    "has_pages",
    "has_downloads",
    "archived",
    "disabled",
    "visibility",
    "pushed_at",
    "created_at",
    "updated_at",
];

/// Fields of the `hook` schema.
const HOOK: &[&str] = &[
    "type",
    "id",
    "name",
    "active",
    "events",
    "config",
    "updated_at",
    "created_at",
    "url",
    "test_url",
    "ping_url",
    "deliveries_url",
    "last_response",
];

/// `required` of the `status` schema.
const STATUS: &[&str] = &[
    "url",
    "avatar_url",
    "id",
    "node_id",
    "state",
    "description",
    "target_url",
    "context",
    "created_at",
    "updated_at",
    "creator",
];

fn client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

fn has_all(value: &Value, fields: &[&str], what: &str) {
    for f in fields {
        assert!(value.get(f).is_some(), "{what} lacks {f}: {value:#}");
    }
}

fn json_of(r: Response) -> Value {
    r.json().expect("a JSON body")
}

/// `(rel, url)` of a `Link` header, in order.
fn links(r: &Response) -> Vec<(String, String)> {
    let Some(link) = r.headers().get("link") else {
        return Vec::new();
    };
    link.to_str()
        .expect("ASCII")
        .split(", ")
        .map(|part| {
            let (url, rel) = part.split_once("; ").expect("<url>; rel=\"...\"");
            let url = url.trim_start_matches('<').trim_end_matches('>');
            let rel = rel
                .strip_prefix("rel=\"")
                .and_then(|r| r.strip_suffix('"'))
                .expect("rel=\"...\"");
            (rel.to_owned(), url.to_owned())
        })
        .collect()
}

fn rels(r: &Response) -> Vec<String> {
    links(r).into_iter().map(|(rel, _)| rel).collect()
}

fn assert_error(r: Response, status: StatusCode, message: &str) -> Value {
    assert_eq!(r.status(), status);
    let body = json_of(r);
    assert_eq!(body["message"], message, "{body:#}");
    assert!(
        body["documentation_url"]
            .as_str()
            .is_some_and(|d| d.starts_with("https://docs.github.com/")),
        "{body:#}"
    );
    assert_eq!(body["status"], status.as_str(), "{body:#}");
    body
}

/// Signs `login` in and walks the web flow up to the code.
fn authorize(gh: &FakeGitHub, client_id: &str, redirect: &str, state: &str) -> String {
    let r = client()
        .get(format!("{}/login/oauth/authorize", gh.web_url()))
        .query(&[
            ("client_id", client_id),
            ("redirect_uri", redirect),
            ("scope", "repo admin:repo_hook"),
            ("state", state),
        ])
        .send()
        .expect("authorize");
    assert_eq!(r.status(), StatusCode::FOUND);
    let location = r
        .headers()
        .get("location")
        .expect("Location")
        .to_str()
        .expect("ASCII")
        .to_owned();
    let (base, query) = location.split_once('?').expect("a query");
    assert_eq!(base, redirect);
    let query: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let get = |k: &str| {
        query
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{k} in {location}"))
    };
    assert_eq!(get("state"), state);
    get("code")
}

fn exchange(gh: &FakeGitHub, form: &[(&str, &str)]) -> Value {
    let r = client()
        .post(format!("{}/login/oauth/access_token", gh.web_url()))
        .header("accept", "application/json")
        .form(form)
        .send()
        .expect("access_token");
    // Errors too are answered 200, as GitHub does.
    assert_eq!(r.status(), StatusCode::OK);
    json_of(r)
}

#[test]
fn the_oauth_web_flow_gives_a_token_once_per_code() {
    let gh = FakeGitHub::start();
    gh.add_oauth_app("Iv1.client", "s3cret");
    gh.add_oauth_app("Iv1.other", "other-secret");
    gh.add_user("octocat", "Mona Lisa Octocat");
    gh.sign_in_as("octocat");
    let redirect = "http://127.0.0.1:9/auth/callback";

    let code = authorize(&gh, "Iv1.client", redirect, "st&te 1");
    let answer = exchange(
        &gh,
        &[
            ("client_id", "Iv1.client"),
            ("client_secret", "s3cret"),
            ("code", &code),
            ("redirect_uri", redirect),
        ],
    );
    let token = answer["access_token"].as_str().expect("access_token");
    assert!(token.starts_with("gho_"), "{answer}");
    assert_eq!(answer["token_type"], "bearer");
    assert_eq!(answer["scope"], "repo,admin:repo_hook");
    assert_eq!(answer.as_object().map(|o| o.len()), Some(3), "{answer}");

    let me = json_of(
        client()
            .get(format!("{}/user", gh.api_url()))
            .bearer_auth(token)
            .send()
            .expect("user"),
    );
    assert_eq!(me["login"], "octocat");

    // A code works once.
    let again = exchange(
        &gh,
        &[
            ("client_id", "Iv1.client"),
            ("client_secret", "s3cret"),
            ("code", &code),
        ],
    );
    assert_eq!(again["error"], "bad_verification_code", "{again}");
    assert!(again["error_description"].is_string() && again["error_uri"].is_string());
    assert!(again.get("access_token").is_none());

    // A wrong secret, a code of another app, a redirect_uri other than the authorized one.
    let code = authorize(&gh, "Iv1.client", redirect, "2");
    let wrong_secret = exchange(
        &gh,
        &[
            ("client_id", "Iv1.client"),
            ("client_secret", "nope"),
            ("code", &code),
        ],
    );
    assert_eq!(wrong_secret["error"], "incorrect_client_credentials");
    let other_app = exchange(
        &gh,
        &[
            ("client_id", "Iv1.other"),
            ("client_secret", "other-secret"),
            ("code", &code),
        ],
    );
    assert_eq!(other_app["error"], "bad_verification_code");
    let other_redirect = exchange(
        &gh,
        &[
            ("client_id", "Iv1.client"),
            ("client_secret", "s3cret"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:9/elsewhere"),
        ],
    );
    assert_eq!(other_redirect["error"], "redirect_uri_mismatch");

    // Without `Accept: application/json` the answer is a form; a JSON body is read too.
    let r = client()
        .post(format!("{}/login/oauth/access_token", gh.web_url()))
        .json(&json!({"client_id": "Iv1.client", "client_secret": "s3cret", "code": code}))
        .send()
        .expect("access_token");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .expect("ASCII")
            .starts_with("application/x-www-form-urlencoded")
    );
    let form: Vec<(String, String)> = form_urlencoded::parse(r.text().expect("body").as_bytes())
        .into_owned()
        .collect();
    assert!(
        form.iter()
            .any(|(k, v)| k == "access_token" && v.starts_with("gho_")),
        "{form:?}"
    );
    assert!(form.contains(&("token_type".into(), "bearer".into())));

    // An unknown app is a 404 page.
    let r = client()
        .get(format!("{}/login/oauth/authorize", gh.web_url()))
        .query(&[("client_id", "Iv1.unknown"), ("redirect_uri", redirect)])
        .send()
        .expect("authorize");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // The exchange is recorded as it was sent.
    let exchanges: Vec<_> = gh
        .requests()
        .into_iter()
        .filter(|r| r.path == "/login/oauth/access_token")
        .collect();
    assert_eq!(exchanges.len(), 6);
    assert!(
        exchanges[0]
            .form()
            .contains(&("client_secret".into(), "s3cret".into()))
    );
    assert_eq!(exchanges[0].header("accept"), Some("application/json"));
}

#[test]
fn get_user_needs_a_good_token() {
    let gh = FakeGitHub::start();
    let user = gh.add_user("octocat", "Mona Lisa Octocat");
    gh.add_repo("octocat/public", false);
    gh.add_repo("octocat/secret", true);
    let url = format!("{}/user", gh.api_url());

    let r = client().get(&url).send().expect("user");
    assert_error(r, StatusCode::UNAUTHORIZED, "Requires authentication");
    let r = client()
        .get(&url)
        .bearer_auth("ghp_unknown")
        .send()
        .expect("user");
    assert_error(r, StatusCode::UNAUTHORIZED, "Bad credentials");

    for scheme in ["Bearer", "token"] {
        let r = client()
            .get(&url)
            .header("authorization", format!("{scheme} {}", user.token))
            .send()
            .expect("user");
        assert_eq!(r.status(), StatusCode::OK);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .expect("ASCII")
                .starts_with("application/json")
        );
        let me = json_of(r);
        has_all(&me, SIMPLE_USER, "private-user");
        has_all(&me, PRIVATE_USER, "private-user");
        assert_eq!(me["login"], "octocat");
        assert_eq!(me["id"], user.id);
        assert_eq!(me["node_id"], user.node_id);
        assert_eq!(me["avatar_url"], user.avatar_url);
        assert_eq!(me["html_url"], format!("{}/octocat", gh.web_url()));
        assert_eq!(me["type"], "User");
        assert_eq!(me["site_admin"], false);
        assert_eq!(me["name"], "Mona Lisa Octocat");
        assert_eq!(me["public_repos"], 1);
        assert_eq!(me["owned_private_repos"], 1);
    }
    assert_eq!(gh.token_of("octocat"), user.token);
}

#[test]
fn user_repos_come_in_pages_walked_by_their_link_header() {
    let gh = FakeGitHub::start();
    gh.add_user("octocat", "Mona");
    gh.add_user("hubot", "Hubot");
    for i in 0..70 {
        let name = format!("acme/repo-{i:02}");
        gh.add_repo(&name, i % 2 == 0);
        let perms = match i % 3 {
            0 => Perms::ADMIN,
            1 => Perms::WRITE,
            _ => Perms::READ,
        };
        gh.grant("octocat", &name, perms);
    }
    // Neither a public repository without a grant nor someone else's private one is listed.
    gh.add_repo("acme/public-elsewhere", false);
    gh.add_repo("hubot/private", true);
    let token = gh.token_of("octocat");

    let mut url = format!("{}/user/repos?per_page=30", gh.api_url());
    let mut sizes = Vec::new();
    let mut names = Vec::new();
    let mut rels_seen = Vec::new();
    // At most a page more than there should be, so that a Link loop fails instead of spinning.
    for _ in 0..4 {
        let r = client()
            .get(&url)
            .bearer_auth(&token)
            .send()
            .expect("repos");
        assert_eq!(r.status(), StatusCode::OK);
        rels_seen.push(rels(&r));
        let next = links(&r)
            .into_iter()
            .find(|(rel, _)| rel == "next")
            .map(|(_, u)| u);
        for (_, u) in links(&r) {
            assert!(
                u.starts_with(&format!("{}/user/repos?", gh.api_url())),
                "{u}"
            );
            assert!(u.contains("per_page=30"), "{u}");
        }
        let page = json_of(r);
        let page = page.as_array().expect("an array");
        sizes.push(page.len());
        for repo in page {
            has_all(repo, REPOSITORY, "repository");
            has_all(&repo["owner"], SIMPLE_USER, "owner");
            let perms = &repo["permissions"];
            for p in ["admin", "maintain", "push", "triage", "pull"] {
                assert!(perms[p].is_boolean(), "{perms}");
            }
            assert_eq!(perms["pull"], true);
            names.push(repo["full_name"].as_str().expect("full_name").to_owned());
        }
        match next {
            Some(next) => url = next,
            None => break,
        }
    }
    assert_eq!(sizes, [30, 30, 10]);
    assert_eq!(
        rels_seen,
        [
            vec!["next", "last"],
            vec!["prev", "next", "last", "first"],
            vec!["prev", "first"],
        ]
    );
    let expected: Vec<String> = (0..70).map(|i| format!("acme/repo-{i:02}")).collect();
    assert_eq!(names, expected, "sorted by full_name, each once");

    // The last page's links, as GitHub writes them.
    let r = client()
        .get(&url)
        .bearer_auth(&token)
        .send()
        .expect("repos");
    let api = gh.api_url();
    assert_eq!(
        r.headers()["link"].to_str().expect("ASCII"),
        format!(
            "<{api}/user/repos?per_page=30&page=2>; rel=\"prev\", \
             <{api}/user/repos?per_page=30&page=1>; rel=\"first\""
        )
    );

    // Defaults: 30 a page; at most 100 a page, and then no Link.
    let r = client()
        .get(format!("{api}/user/repos"))
        .bearer_auth(&token)
        .send()
        .expect("repos");
    assert_eq!(
        links(&r),
        [
            ("next".into(), format!("{api}/user/repos?page=2")),
            ("last".into(), format!("{api}/user/repos?page=3")),
        ]
    );
    assert_eq!(json_of(r).as_array().map(Vec::len), Some(30));
    let r = client()
        .get(format!("{api}/user/repos?per_page=500"))
        .bearer_auth(&token)
        .send()
        .expect("repos");
    assert!(r.headers().get("link").is_none());
    assert_eq!(json_of(r).as_array().map(Vec::len), Some(70));

    let r = client()
        .get(format!("{api}/user/repos"))
        .send()
        .expect("repos");
    assert_error(r, StatusCode::UNAUTHORIZED, "Requires authentication");
}

#[test]
fn get_repo_shows_the_callers_permissions_and_hides_private_ones() {
    let gh = FakeGitHub::start();
    let owner = gh.add_user("octocat", "Mona");
    gh.add_user("hubot", "Hubot");
    let private = gh.add_repo("octocat/secret", true);
    let public = gh.add_repo("acme/open", false);
    let get = |full_name: &str, token: Option<&str>| {
        let mut r = client().get(format!("{}/repos/{full_name}", gh.api_url()));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().expect("repo")
    };
    let hubot = gh.token_of("hubot");

    // A private repository the caller cannot read does not exist for them.
    assert_error(
        get("octocat/secret", Some(&hubot)),
        StatusCode::NOT_FOUND,
        "Not Found",
    );
    assert_error(
        get("octocat/secret", None),
        StatusCode::NOT_FOUND,
        "Not Found",
    );
    assert_error(
        get("octocat/nothing", Some(&hubot)),
        StatusCode::NOT_FOUND,
        "Not Found",
    );

    // Its owner is its admin.
    let r = get("octocat/secret", Some(&owner.token));
    assert_eq!(r.status(), StatusCode::OK);
    let repo = json_of(r);
    has_all(&repo, REPOSITORY, "full-repository");
    assert_eq!(repo["id"], private.id);
    assert_eq!(repo["full_name"], "octocat/secret");
    assert_eq!(repo["private"], true);
    assert_eq!(repo["visibility"], "private");
    assert_eq!(repo["owner"]["login"], "octocat");
    assert_eq!(repo["owner"]["id"], owner.id);
    assert_eq!(repo["html_url"], private.html_url);
    assert_eq!(repo["clone_url"], private.clone_url);
    assert_eq!(repo["url"], private.url);
    assert_eq!(
        repo["permissions"],
        json!({"admin": true, "maintain": true, "push": true, "triage": true, "pull": true})
    );

    // A collaborator sees what was granted; names are not case sensitive.
    gh.grant("hubot", "octocat/secret", Perms::TRIAGE);
    let repo = json_of(get("OctoCat/Secret", Some(&hubot)));
    assert_eq!(
        repo["permissions"],
        json!({"admin": false, "maintain": false, "push": false, "triage": true, "pull": true})
    );

    // A public repository is there for anyone: pull only, and no permissions signed out.
    let repo = json_of(get("acme/open", Some(&hubot)));
    assert_eq!(repo["id"], public.id);
    assert_eq!(repo["owner"]["type"], "Organization");
    assert_eq!(
        repo["permissions"],
        json!({"admin": false, "maintain": false, "push": false, "triage": false, "pull": true})
    );
    let r = get("acme/open", None);
    assert_eq!(r.status(), StatusCode::OK);
    assert!(json_of(r).get("permissions").is_none());
}

#[test]
fn hooks_are_made_and_deleted_by_admins_only() {
    let gh = FakeGitHub::start();
    let owner = gh.add_user("octocat", "Mona");
    gh.add_user("hubot", "Hubot");
    let repo = gh.add_repo("octocat/hello", true);
    gh.grant("hubot", "octocat/hello", Perms::MAINTAIN);
    let hooks_url = format!("{}/repos/octocat/hello/hooks", gh.api_url());
    let body = json!({
        "name": "web",
        "active": true,
        "events": ["push", "pull_request"],
        "config": {
            "url": "http://127.0.0.1:9/webhooks/github",
            "content_type": "json",
            "secret": "It's a Secret to Everybody",
            "insecure_ssl": "0",
        },
    });
    let create = |token: Option<&str>, body: &Value| {
        let mut r = client().post(&hooks_url).json(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().expect("create hook")
    };

    assert_error(
        create(Some(&gh.token_of("hubot")), &body),
        StatusCode::NOT_FOUND,
        "Not Found",
    );
    assert_error(
        create(None, &body),
        StatusCode::UNAUTHORIZED,
        "Requires authentication",
    );
    let no_url = json!({"name": "web", "config": {"content_type": "json"}});
    let failed = assert_error(
        create(Some(&owner.token), &no_url),
        StatusCode::UNPROCESSABLE_ENTITY,
        "Validation Failed",
    );
    assert!(failed["errors"].is_array(), "{failed:#}");
    assert!(gh.hooks("octocat/hello").is_empty());

    let r = create(Some(&owner.token), &body);
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r.headers()["location"].to_str().expect("ASCII").to_owned();
    let hook = json_of(r);
    has_all(&hook, HOOK, "hook");
    let id = hook["id"].as_u64().expect("id");
    assert_eq!(hook["type"], "Repository");
    assert_eq!(hook["name"], "web");
    assert_eq!(hook["active"], true);
    assert_eq!(hook["events"], json!(["push", "pull_request"]));
    assert_eq!(
        hook["config"],
        json!({
            "url": "http://127.0.0.1:9/webhooks/github",
            "content_type": "json",
            "secret": "********",
            "insecure_ssl": "0",
        })
    );
    assert_eq!(
        hook["last_response"],
        json!({"code": null, "status": "unused", "message": null})
    );
    let url = format!("{}/hooks/{id}", repo.url);
    assert_eq!(hook["url"], url);
    assert_eq!(location, url);
    assert_eq!(hook["ping_url"], format!("{url}/pings"));
    assert_eq!(hook["test_url"], format!("{url}/test"));
    assert_eq!(hook["deliveries_url"], format!("{url}/deliveries"));
    assert_eq!(gh.hooks("octocat/hello"), std::slice::from_ref(&hook));
    assert_eq!(
        gh.hook_config("octocat/hello", id).expect("config")["secret"],
        "It's a Secret to Everybody"
    );

    // The request is recorded byte for byte.
    let sent = gh
        .requests()
        .into_iter()
        .rfind(|r| r.method == "POST" && r.path == "/api/v3/repos/octocat/hello/hooks")
        .expect("recorded");
    assert_eq!(sent.body, serde_json::to_vec(&body).expect("JSON"));
    assert_eq!(sent.json(), Some(body.clone()));
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {}", owner.token).as_str())
    );

    // The same config and events again is refused.
    assert_error(
        create(Some(&owner.token), &body),
        StatusCode::UNPROCESSABLE_ENTITY,
        "Validation Failed",
    );
    let listed = json_of(
        client()
            .get(&hooks_url)
            .bearer_auth(&owner.token)
            .send()
            .expect("hooks"),
    );
    assert_eq!(listed, json!([hook]));

    // Delete: 204, then 404; by someone not admin: 404.
    let delete = |token: &str, id: u64| {
        client()
            .delete(format!("{hooks_url}/{id}"))
            .bearer_auth(token)
            .send()
            .expect("delete hook")
    };
    assert_error(
        delete(&gh.token_of("hubot"), id),
        StatusCode::NOT_FOUND,
        "Not Found",
    );
    let r = delete(&owner.token, id);
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(r.text().expect("body").is_empty());
    assert!(gh.hooks("octocat/hello").is_empty());
    assert_error(delete(&owner.token, id), StatusCode::NOT_FOUND, "Not Found");

    // A hook deleted on GitHub behind the client's back is 404 to it too.
    let hook = json_of(create(Some(&owner.token), &body));
    let id = hook["id"].as_u64().expect("id");
    gh.delete_hook_behind_our_back("octocat/hello", id);
    assert_error(delete(&owner.token, id), StatusCode::NOT_FOUND, "Not Found");
}

#[test]
fn commit_statuses_are_created_by_those_who_may_push() {
    let gh = FakeGitHub::start();
    let owner = gh.add_user("octocat", "Mona");
    gh.add_user("reader", "Reader");
    let repo = gh.add_repo("octocat/hello", false);
    gh.grant("reader", "octocat/hello", Perms::READ);
    let sha = "6dcb09b5b57875f334f61aebed695e2e4193db5e";
    let url = format!("{}/repos/octocat/hello/statuses/{sha}", gh.api_url());
    let body = json!({
        "state": "success",
        "target_url": "https://example.com/build/status",
        "description": "The build succeeded!",
        "context": "continuous-integration/hermes",
    });

    let r = client()
        .post(&url)
        .bearer_auth(&owner.token)
        .json(&body)
        .send()
        .expect("status");
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r.headers()["location"].to_str().expect("ASCII").to_owned();
    let status = json_of(r);
    has_all(&status, STATUS, "status");
    has_all(&status["creator"], SIMPLE_USER, "creator");
    assert_eq!(status["url"], format!("{}/statuses/{sha}", repo.url));
    assert_eq!(location, format!("{}/statuses/{sha}", repo.url));
    assert_eq!(status["state"], "success");
    assert_eq!(status["description"], "The build succeeded!");
    assert_eq!(status["target_url"], "https://example.com/build/status");
    assert_eq!(status["context"], "continuous-integration/hermes");
    assert_eq!(status["creator"]["login"], "octocat");
    assert_eq!(status["avatar_url"], owner.avatar_url);
    assert_eq!(gh.statuses("octocat/hello"), [status]);

    // `context` defaults to "default"; `state` must be one of the four.
    let r = client()
        .post(&url)
        .bearer_auth(&owner.token)
        .json(&json!({"state": "pending"}))
        .send()
        .expect("status");
    let status = json_of(r);
    assert_eq!(status["context"], "default");
    assert_eq!(status["description"], Value::Null);
    let r = client()
        .post(&url)
        .bearer_auth(&owner.token)
        .json(&json!({"state": "done"}))
        .send()
        .expect("status");
    assert_error(r, StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed");

    // Reading is not enough; signed out is 401.
    let r = client()
        .post(&url)
        .bearer_auth(gh.token_of("reader"))
        .json(&body)
        .send()
        .expect("status");
    assert_error(r, StatusCode::NOT_FOUND, "Not Found");
    let r = client().post(&url).json(&body).send().expect("status");
    assert_error(r, StatusCode::UNAUTHORIZED, "Requires authentication");
    assert_eq!(gh.statuses("octocat/hello").len(), 2);
}

#[test]
fn anything_else_is_not_found() {
    let gh = FakeGitHub::start();
    let user = gh.add_user("octocat", "Mona");
    gh.add_repo("octocat/hello", false);
    for (method, path) in [
        ("GET", "/repos/octocat/hello/issues"),
        ("PUT", "/user"),
        ("POST", "/repos/octocat/hello"),
        ("GET", "/orgs/acme"),
        ("GET", ""),
    ] {
        let r = client()
            .request(
                method.parse().expect("method"),
                format!("{}{path}", gh.api_url()),
            )
            .bearer_auth(&user.token)
            .send()
            .expect("request");
        assert_error(r, StatusCode::NOT_FOUND, "Not Found");
    }
    // REST paths live under /api/v3 only.
    let r = client()
        .get(format!("{}/user", gh.web_url()))
        .bearer_auth(&user.token)
        .send()
        .expect("request");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(gh.requests().len(), 6);
}
