//! The gateway's HTTP errors: `{"error": code, "message": …}` with the status that says what to do.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    /// The request conflicts with the state of what it names (a cancel of an ended build); the
    /// value is added to the answer as `status`.
    #[error("{0}")]
    Conflict(String, Option<String>),
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the event log is unavailable, try again")]
    Unavailable,
    /// GitHub could not be asked, or failed: try again.
    #[error("{0}")]
    BadGateway(String),
    #[error("too many deliveries are being received; try again")]
    Busy,
    #[error("the request was not sent and answered within {0:?}")]
    Timeout(std::time::Duration),
    #[error("internal error")]
    Internal,
}

impl GatewayError {
    /// The `error` code of the answer.
    pub fn code(&self) -> &'static str {
        self.parts().1
    }

    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Conflict(..) => (StatusCode::CONFLICT, "conflict"),
            Self::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::BadGateway(_) => (StatusCode::BAD_GATEWAY, "github_unavailable"),
            Self::Busy => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            Self::Timeout(_) => (StatusCode::REQUEST_TIMEOUT, "timeout"),
            Self::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<hermes_access::Refusal> for GatewayError {
    fn from(r: hermes_access::Refusal) -> Self {
        match r {
            hermes_access::Refusal::Unauthenticated(m) => Self::Unauthorized(m),
            hermes_access::Refusal::Forbidden(m) => Self::Forbidden(m),
            hermes_access::Refusal::Unavailable(e) => e.into(),
        }
    }
}

impl From<hermes_access::AccessError> for GatewayError {
    fn from(e: hermes_access::AccessError) -> Self {
        match e {
            hermes_access::AccessError::Unavailable(_) => Self::Unavailable,
            hermes_access::AccessError::GitHub(e) => e.into(),
            other => {
                tracing::error!(error = %other, "Access check failed.");
                Self::Internal
            }
        }
    }
}

impl From<hermes_github::GitHubError> for GatewayError {
    fn from(e: hermes_github::GitHubError) -> Self {
        use hermes_github::GitHubError as G;
        match e {
            G::BadToken => Self::Unauthorized(
                "GitHub no longer accepts this session's token: sign in again".into(),
            ),
            G::Refused(code, message) => {
                Self::BadGateway(format!("GitHub refused it ({code}): {message}"))
            }
            other => Self::BadGateway(format!("{other}")),
        }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let mut body = hermes_schemas::http::ErrorBody::new(code, self.to_string());
        if let Self::Conflict(_, Some(state)) = &self {
            body.status = Some(state.clone());
        }
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                "www-authenticate",
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("5"));
        }
        resp
    }
}
