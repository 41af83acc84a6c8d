//! `Hermes.yaml`: the pipeline config at the repository root.
//!
//! ```yaml
//! name: My super pipeline
//! version: 1.0.0
//! schema: docker        # build the repository's Dockerfile; the build passes when the image builds
//! ```

use serde::Deserialize;

pub const FILE: &str = "Hermes.yaml";

/// What a pipeline does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schema {
    /// Build the repository's `Dockerfile`.
    Docker,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pipeline {
    pub name: String,
    pub version: String,
    pub schema: Schema,
}

/// Why `Hermes.yaml` cannot be used; the message names the file and, where known, the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{FILE}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct PipelineError {
    pub line: Option<usize>,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: String,
    version: serde_yaml_ng::Value,
    schema: String,
}

/// Parses the text of `Hermes.yaml`.
pub fn parse(text: &str) -> Result<Pipeline, PipelineError> {
    let raw: Raw = serde_yaml_ng::from_str(text).map_err(|e| PipelineError {
        line: e.location().map(|l| l.line()),
        message: e.to_string(),
    })?;
    let line_of = |key: &str| {
        text.lines()
            .position(|l| l.trim_start().starts_with(&format!("{key}:")))
            .map(|i| i + 1)
    };
    let version = match raw.version {
        serde_yaml_ng::Value::String(s) => s,
        serde_yaml_ng::Value::Number(n) => n.to_string(),
        _ => {
            return Err(PipelineError {
                line: line_of("version"),
                message: "version must be a string or a number".into(),
            });
        }
    };
    let schema = match raw.schema.as_str() {
        "docker" => Schema::Docker,
        other => {
            return Err(PipelineError {
                line: line_of("schema"),
                message: format!("unknown schema {other:?}; supported: \"docker\""),
            });
        }
    };
    Ok(Pipeline {
        name: raw.name,
        version,
        schema,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proof_of_concept_file_parses() {
        let p = parse("name: My super pipeline\nversion: 1.0.0\nschema: docker\n").expect("valid");
        assert_eq!(
            p,
            Pipeline {
                name: "My super pipeline".into(),
                version: "1.0.0".into(),
                schema: Schema::Docker
            }
        );
        assert_eq!(
            parse("name: x\nversion: 2\nschema: docker\n")
                .expect("numeric version")
                .version,
            "2"
        );
    }

    #[test]
    fn unknown_schema_names_the_line() {
        let e = parse("name: x\nversion: 1\nschema: buildah\n").expect_err("unknown schema");
        assert_eq!(e.line, Some(3));
        assert_eq!(
            e.to_string(),
            "Hermes.yaml:3: unknown schema \"buildah\"; supported: \"docker\""
        );
    }

    #[test]
    fn malformed_yaml_and_missing_fields_say_where() {
        let e = parse("name: x\nversion: [1\nschema: docker\n").expect_err("malformed");
        assert!(e.line.is_some(), "{e}");
        let e = parse("name: x\nschema: docker\n").expect_err("missing version");
        assert!(e.message.contains("version"), "{e}");
        let e = parse("name: x\nversion: 1\nschema: docker\nstpes: []\n").expect_err("unknown key");
        assert!(e.message.contains("stpes"), "{e}");
    }
}
