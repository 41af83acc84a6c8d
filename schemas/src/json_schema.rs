//! The JSON Schema documents of the wire contract, as written to `schemas/json/`.

use schemars::schema_for;

use crate::commands::{ApproveBuild, BuildCommand, CancelBuild, RestartBuild};
use crate::events::{Envelope, LogLine, LogLines};

/// `(file name, pretty JSON)` for every committed schema file.
pub fn all() -> Vec<(&'static str, String)> {
    let docs = [
        ("build-event.schema.json", schema_for!(Envelope)),
        ("log-line.schema.json", schema_for!(LogLine)),
        ("log-lines.schema.json", schema_for!(LogLines)),
        ("build-command.schema.json", schema_for!(BuildCommand)),
        ("cancel-build.schema.json", schema_for!(CancelBuild)),
        ("restart-build.schema.json", schema_for!(RestartBuild)),
        ("approve-build.schema.json", schema_for!(ApproveBuild)),
        (
            "repo-event.schema.json",
            schema_for!(crate::events::repo::RepoEnvelope),
        ),
    ];
    docs.into_iter()
        .map(|(name, schema)| {
            let mut text = serde_json::to_string_pretty(&schema).expect("a schema is plain JSON");
            text.push('\n');
            (name, text)
        })
        .collect()
}
