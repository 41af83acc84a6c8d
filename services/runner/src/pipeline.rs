//! `Hermes.yaml`: the pipeline config at the repository root.
//!
//! ```yaml
//! name: My super pipeline
//! version: 1.0.0
//! schema: docker        # build the repository's Dockerfile; the build passes when the image builds
//! ```

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

pub const FILE: &str = "Hermes.yaml";

/// The most bytes `Hermes.yaml` may have.
pub const MAX_BYTES: u64 = 64 * 1024;

/// Reads `Hermes.yaml` from the root of a checkout: a regular file of at most [`MAX_BYTES`]
/// ([`crate::checkout::read_file`]). The error is the build's reason, naming the file.
pub async fn read(dir: &Path) -> Result<String, String> {
    crate::checkout::read_file(dir, FILE, MAX_BYTES)
        .await?
        .ok_or_else(|| format!("{FILE} not found at the repository root"))
}

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
    /// The repository's own time limit (`timeout: 10m`); it can only lower the server's.
    pub timeout: Option<Duration>,
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
    #[serde(default)]
    timeout: Option<serde_yaml_ng::Value>,
}

/// Parses the text of `Hermes.yaml`.
pub fn parse(text: &str) -> Result<Pipeline, PipelineError> {
    let raw: Raw = serde_yaml_ng::from_str(text).map_err(|e| PipelineError {
        // The YAML parser places an error at the very end of a file without a final newline on
        // the line after the last; point at the last line instead.
        line: e
            .location()
            .map(|l| l.line().min(text.lines().count().max(1))),
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
    let timeout = match raw.timeout {
        None => None,
        Some(v) => {
            let text = match v {
                serde_yaml_ng::Value::String(s) => s,
                serde_yaml_ng::Value::Number(n) => n.to_string(),
                _ => String::new(),
            };
            Some(parse_duration(&text).map_err(|message| PipelineError {
                line: line_of("timeout"),
                message: format!("timeout: {message}"),
            })?)
        }
    };
    Ok(Pipeline {
        name: raw.name,
        version,
        schema,
        timeout,
    })
}

/// Parses `90`, `90s`, `15m`, `2h` or `500ms` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 15m or 2h"))?;
    let d = match unit.trim() {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("{text:?} is not a duration like 90s, 15m or 2h")),
    };
    if d.is_zero() {
        return Err(format!("{text:?} is not a positive duration"));
    }
    Ok(d)
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
                schema: Schema::Docker,
                timeout: None,
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
    fn timeout_lowers_and_is_checked() {
        let p = parse("name: x\nversion: 1\nschema: docker\ntimeout: 10m\n").expect("valid");
        assert_eq!(p.timeout, Some(Duration::from_secs(600)));
        let e = parse("name: x\nversion: 1\nschema: docker\ntimeout: soon\n").expect_err("bad");
        assert_eq!(e.line, Some(4));
        assert_eq!(parse_duration("90").expect("secs"), Duration::from_secs(90));
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn an_error_at_the_end_points_at_the_last_line() {
        let e = parse("name: x\nvehnaem").expect_err("broken");
        assert_eq!(e.line, Some(2), "{e}");
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
