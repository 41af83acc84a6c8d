//! `GET /api/openapi.json`: the OpenAPI 3.1 document of Hermes's HTTP API, generated from the code.
//!
//! The operations come from the `#[utoipa::path]` annotation on each handler (in the gateway,
//! the projector and here), so a route and its description live side by side. The bodies' schemas
//! come from the same `schemars` derives that describe the read model and the events (OpenAPI 3.1
//! schemas are JSON Schema 2020-12), so the document says what the code writes; the annotations
//! refer to them by name (`#/components/schemas/Build`). `tests/openapi.rs` checks the document
//! against the routers' routes and runs schemathesis against a live Hermes.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use utoipa::OpenApi;

/// The document, made once.
static DOCUMENT: LazyLock<Vec<u8>> =
    LazyLock::new(|| serde_json::to_vec_pretty(&document()).unwrap_or_else(|_| b"{}".to_vec()));

/// `/healthz`, `/metrics` and this document.
#[derive(OpenApi)]
#[openapi(paths(healthz, metrics, openapi_json))]
struct Operations;

/// The whole document.
pub fn document() -> Value {
    let mut doc = hermes_projector::api::ApiDoc::openapi();
    doc.merge(hermes_projector::account::ApiDoc::openapi());
    doc.merge(hermes_gateway::ApiDoc::openapi());
    doc.merge(Operations::openapi());
    let mut value = serde_json::to_value(&doc).unwrap_or_default();
    value["info"] = json!({
        "title": "Hermes CI",
        "version": env!("CARGO_PKG_VERSION"),
        "description": "The HTTP API of Hermes CI: GitHub webhooks in, builds and their logs out. \
            Reads answer anyone for public repositories; a private repository's builds only for \
            the API token (`Authorization: Bearer`) or a signed-in user GitHub lets read it. \
            Writes need the API token, or a session cookie with its `X-CSRF-Token`.",
        "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
    });
    value["components"]["schemas"] = Value::Object(schemas());
    value["components"]["securitySchemes"] = json!({
        "apiToken": {"type": "http", "scheme": "bearer", "description": "HERMES_API_TOKEN"},
        "session": {"type": "apiKey", "in": "cookie", "name": hermes_access::auth::COOKIE,
            "description": "The session of a user signed in with GitHub (GET /login)."},
    });
    value["security"] = json!([{}, {"apiToken": []}, {"session": []}]);
    value
}

/// The schemas the operations name, with everything they refer to.
fn schemas() -> Map<String, Value> {
    use hermes_projector::{account, api, model};
    let mut generator = schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = "/components/schemas".into())
        .into_generator();
    let mut named = Map::new();
    let mut name = |n: &str, schema: schemars::Schema| {
        named.insert(n.to_owned(), schema.to_value());
    };
    // A named type's subschema is a reference to its own definition, which the generator keeps;
    // a list is described in place.
    generator.subschema_for::<model::Build>();
    name("Builds", generator.subschema_for::<Vec<model::Build>>());
    generator.subschema_for::<api::LogPage>();
    generator.subschema_for::<api::Readiness>();
    generator.subschema_for::<api::LogStreamEvent>();
    generator.subschema_for::<account::User>();
    generator.subschema_for::<account::Repo>();
    name("Repos", generator.subschema_for::<Vec<account::Repo>>());
    generator.subschema_for::<hermes_schemas::http::ErrorBody>();
    generator.subschema_for::<hermes_gateway::commands::Requested>();
    generator.subschema_for::<hermes_gateway::webhook::Recorded<'static>>();
    let mut all = generator.take_definitions(true);
    all.extend(named);
    all
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    operation_id = "getHealth",
    responses((status = 200, description = "The process is up.", body = String))
)]
pub async fn healthz() -> &'static str {
    "ok\n"
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "getMetrics",
    responses((status = 200, description = "The process's metrics in the Prometheus text format (OpenMetrics when asked for by `Accept`).", content_type = "text/plain; version=0.0.4; charset=utf-8", body = String))
)]
pub async fn metrics(headers: axum::http::HeaderMap) -> Response {
    use hermes_telemetry::metrics;
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let content_type = if openmetrics {
        metrics::OPENMETRICS_CONTENT_TYPE
    } else {
        metrics::PROMETHEUS_CONTENT_TYPE
    };
    ([(header::CONTENT_TYPE, content_type)], metrics::encode()).into_response()
}

#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "operations",
    operation_id = "getOpenApi",
    responses((status = 200, description = "This document.", content_type = "application/json", body = Object))
)]
pub async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_slice(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` of the document names a schema it holds.
    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        let mut refs = 0;
        for (at, _) in text.match_indices("\"$ref\":\"#/components/schemas/") {
            let rest = &text[at + "\"$ref\":\"#/components/schemas/".len()..];
            let name = &rest[..rest.find('"').expect("end of the reference")];
            assert!(
                schemas.contains_key(name),
                "{name} is referred to but missing"
            );
            refs += 1;
        }
        assert!(refs > 10, "{refs} references");
        assert_eq!(doc["openapi"], "3.1.0");
    }
}
