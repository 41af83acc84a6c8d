//! `hermes_schemas::github::decide(event, body)` on arbitrary bytes.
//!
//! Input: the first byte picks the event (`byte % 8`: 0 push, 1 pull_request, 2 ping, 3 star,
//! 4 issues, 5 check_run, 6 the empty name, 7 an arbitrary name of `next byte % 16` bytes taken
//! from the input); the rest is the body. The seeds start with an ASCII digit ('0' is push,
//! '1' pull_request …) followed by a GitHub payload.
//!
//! Checks: `decide` never panics; events other than push and pull_request are always skipped;
//! a `Build` carries a repository that round-trips through `RepoName::parse` and whose subject
//! token is free of `.`, `*`, `>` and whitespace (and decodes back to the name), a commit of 40
//! or 64 lowercase hex digits, a ref and a clone URL without control characters.

#![no_main]

use hermes_schemas::events::TriggerEvent;
use hermes_schemas::github::{Decision, decide};
use hermes_schemas::ids::RepoName;
use libfuzzer_sys::fuzz_target;

const EVENTS: [&str; 7] = ["push", "pull_request", "ping", "star", "issues", "check_run", ""];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (event, body): (String, &[u8]) = match usize::from(selector % 8) {
        7 => {
            let Some((&n, rest)) = rest.split_first() else {
                return;
            };
            let n = usize::from(n % 16).min(rest.len());
            let (name, body) = rest.split_at(n);
            (String::from_utf8_lossy(name).into_owned(), body)
        }
        i => (EVENTS[i].to_owned(), rest),
    };

    let result = decide(&event, body);
    let builds = matches!(event.as_str(), "push" | "pull_request");
    if !builds {
        assert!(
            matches!(result, Ok(Decision::Skip(_))),
            "event {event:?} must be skipped unread, got {result:?}"
        );
        return;
    }
    let Ok(Decision::Build(req)) = result else {
        return;
    };

    // The repository round-trips and is a safe subject token.
    let reparsed = RepoName::parse(req.repo.as_str());
    assert_eq!(reparsed.as_ref(), Ok(&req.repo), "repo {:?} does not round-trip", req.repo);
    let token = req.repo.subject_token();
    assert!(
        !token.contains(|c: char| matches!(c, '.' | '*' | '>') || c.is_whitespace()),
        "subject token {token:?} of {:?} breaks a subject",
        req.repo
    );
    assert_eq!(
        percent_decode(&token).as_deref(),
        Some(req.repo.as_str()),
        "subject token {token:?} does not decode back to the repository"
    );

    // The commit is a full lowercase object id.
    let sha = req.commit.as_str();
    assert!(
        (sha.len() == 40 || sha.len() == 64)
            && sha.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "commit {sha:?} is not 40 or 64 lowercase hex digits"
    );

    // The ref and the clone URL are one line of text.
    assert!(
        !req.git_ref.is_empty() && !req.git_ref.chars().any(char::is_control),
        "git ref {:?} has control characters",
        req.git_ref
    );
    assert!(
        !req.clone_url.is_empty()
            && !req
                .clone_url
                .chars()
                .any(|c| c.is_control() || c.is_whitespace()),
        "clone URL {:?} is not one word of printable text",
        req.clone_url
    );

    // The trigger is the event's.
    match event.as_str() {
        "push" => assert!(req.trigger == TriggerEvent::Push && req.pull_request.is_none()),
        _ => assert!(req.trigger == TriggerEvent::PullRequest && req.pull_request.is_some()),
    }
});

/// Undoes `subject_token`'s `%XX` escapes; `None` when the token is not well formed.
fn percent_decode(token: &str) -> Option<String> {
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
