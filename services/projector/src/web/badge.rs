//! `GET /badge/{owner}/{name}.svg` (optional `?branch=`): the state of a repository's last
//! finished build as an SVG badge in the usual two-part shape. `Cache-Control: no-cache`, so
//! GitHub's image proxy asks again. A private repository's badge is `unknown`, whoever asks:
//! it leaks nothing.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use hermes_schemas::RepoName;
use hermes_schemas::events::BuildStatus;
use serde::Deserialize;

use super::{Web, read};
use crate::model::Build;

#[derive(Deserialize)]
pub struct BadgeQuery {
    branch: Option<String>,
}

/// What a badge says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadgeState {
    Passing,
    Failing,
    Errored,
    Running,
    Unknown,
}

impl BadgeState {
    pub fn text(self) -> &'static str {
        match self {
            Self::Passing => "passing",
            Self::Failing => "failing",
            Self::Errored => "errored",
            Self::Running => "running",
            Self::Unknown => "unknown",
        }
    }

    fn colour(self) -> &'static str {
        match self {
            Self::Passing => "#2da44e",
            Self::Failing => "#cf222e",
            Self::Errored => "#bf8700",
            Self::Running => "#0969da",
            Self::Unknown => "#6e7781",
        }
    }
}

/// The badge's state from the builds of its branch, newest first: the last finished build's;
/// `running` while the first is still under way and none has finished; `unknown` with none.
pub fn state(builds: &[Build]) -> BadgeState {
    for b in builds {
        match b.status {
            BuildStatus::Succeeded => return BadgeState::Passing,
            BuildStatus::Failed => return BadgeState::Failing,
            BuildStatus::Errored => return BadgeState::Errored,
            // A canceled build says nothing of the code: look further back.
            BuildStatus::Canceled | BuildStatus::Queued | BuildStatus::Running => {}
        }
    }
    if builds
        .iter()
        .any(|b| matches!(b.status, BuildStatus::Queued | BuildStatus::Running))
    {
        BadgeState::Running
    } else {
        BadgeState::Unknown
    }
}

/// The badge as SVG: `build` on the left, the state on the right (Verdana 11 px widths are
/// approximated at 6.5 px a character, as shields.io's static badges are laid out).
pub fn svg(state: BadgeState) -> String {
    let (label, value) = ("build", state.text());
    let width = |s: &str| (s.len() as f32 * 6.5 + 12.0).round() as u32;
    let (lw, vw) = (width(label), width(value));
    let total = lw + vw;
    // The centres of the two texts, in tenths of a pixel (the text is scaled by .1).
    let (lx, vx) = (lw * 5, (lw + vw / 2) * 10);
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="20" role="img" aria-label="{label}: {value}"><title>{label}: {value}</title><linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient><clipPath id="r"><rect width="{total}" height="20" rx="3" fill="#fff"/></clipPath><g clip-path="url(#r)"><rect width="{lw}" height="20" fill="#555"/><rect x="{lw}" width="{vw}" height="20" fill="{colour}"/><rect width="{total}" height="20" fill="url(#s)"/></g><g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" text-rendering="geometricPrecision" font-size="110"><text aria-hidden="true" x="{lx}" y="150" fill="#010101" fill-opacity=".3" transform="scale(.1)">{label}</text><text x="{lx}" y="140" transform="scale(.1)">{label}</text><text aria-hidden="true" x="{vx}" y="150" fill="#010101" fill-opacity=".3" transform="scale(.1)">{value}</text><text x="{vx}" y="140" transform="scale(.1)">{value}</text></g></svg>"##,
        colour = state.colour(),
    )
}

/// The most builds looked through for the badge's branch.
const LOOK_BACK: usize = 200;

pub async fn badge(
    State(web): State<Arc<Web>>,
    Path((owner, file)): Path<(String, String)>,
    query: Result<Query<BadgeQuery>, QueryRejection>,
) -> Response {
    let answer = |state: BadgeState| {
        (
            [
                (header::CONTENT_TYPE, "image/svg+xml;charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache, max-age=0"),
            ],
            svg(state),
        )
            .into_response()
    };
    let Some(name) = file.strip_suffix(".svg") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Ok(repo) = RepoName::parse(&format!("{owner}/{name}")) else {
        return answer(BadgeState::Unknown);
    };
    let branch = query.ok().and_then(|Query(q)| q.branch);
    let builds = read(&web, move |s| s.builds_of(&repo, None, LOOK_BACK))
        .await
        .unwrap_or_default();
    // A private repository's badge leaks nothing, not even whether it has builds.
    if builds.first().is_none_or(|b| b.private) {
        return answer(BadgeState::Unknown);
    }
    let on_branch: Vec<Build> = builds
        .into_iter()
        .filter(|b| match &branch {
            Some(branch) => b.git_ref == format!("refs/heads/{branch}"),
            None => {
                b.event == hermes_schemas::TriggerEvent::Push
                    && b.git_ref.starts_with("refs/heads/")
            }
        })
        .collect();
    answer(state(&on_branch))
}
