//! The HTTP API's own shapes that are not events: what every error answer carries.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Every `4xx`/`5xx` answer of the API: a stable machine code and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "Error")]
pub struct ErrorBody {
    /// `not_found`, `bad_request`, `unauthorized`, `forbidden`, `conflict`, `payload_too_large`,
    /// `timeout`, `busy`, `unavailable`, `github_unavailable` or `internal`.
    pub error: String,
    /// What went wrong and, where there is one, what to do.
    pub message: String,
    /// The build's status, on a `409` (a cancel of a build that has ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

impl ErrorBody {
    pub fn new(error: &str, message: impl Into<String>) -> Self {
        Self {
            error: error.to_owned(),
            message: message.into(),
            status: None,
        }
    }
}
