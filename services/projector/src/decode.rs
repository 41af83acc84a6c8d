//! Reading a message of each stream as the event the fold takes, or saying why it cannot:
//! [`Unreadable::Unknown`] (a type or version of a newer Hermes: kept for after an upgrade) or
//! [`Unreadable::Malformed`] (unusable for good: skipped, with an ERROR).

use hermes_schemas::events::LogDecodeError;
use hermes_schemas::{DecodeError, Envelope, LogEvent, LogLine};

/// Why a message is not an event the fold can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    /// A `(type, version)` this code does not know: written by a newer Hermes, readable after an
    /// upgrade.
    #[error("{kind:?} version {version} is unknown to this version of Hermes")]
    Unknown { kind: String, version: u32 },
    /// Not an event of any version: garbage.
    #[error("{0}")]
    Malformed(String),
}

impl Unreadable {
    /// `<type> v<version>` of an unknown event, as the read model keeps it.
    pub fn describe(&self) -> String {
        match self {
            Self::Unknown { kind, version } => format!("{kind} v{version}"),
            Self::Malformed(why) => why.clone(),
        }
    }
}

/// A message's payload as the event it carries.
pub type Decode<T> = fn(&[u8]) -> Result<T, Unreadable>;

/// The readers of the two streams. The projector uses [`Decoders::default`]; tests give one that
/// cannot read some type, as an older Hermes could not.
#[derive(Clone, Copy)]
pub struct Decoders {
    pub builds: Decode<Envelope>,
    pub logs: Decode<LogEvent>,
}

impl Default for Decoders {
    fn default() -> Self {
        Self {
            builds: build_event,
            logs: log_event,
        }
    }
}

/// A build event of any version this code knows, upcast ([`Envelope::decode`]).
pub fn build_event(payload: &[u8]) -> Result<Envelope, Unreadable> {
    Envelope::decode(payload).map_err(|e| match e {
        DecodeError::Unknown { kind, version } => Unreadable::Unknown { kind, version },
        DecodeError::Malformed(e) => Unreadable::Malformed(e.to_string()),
    })
}

/// A log message: most are read straight into one [`LogLine`] or fail at their `type` at once
/// (cheaper than the two-shape [`LogEvent`], which a replay of single lines noticeably paid for);
/// anything else as a [`LogEvent`] (a `log.lines` run fails the first read at its `type`).
pub fn log_event(payload: &[u8]) -> Result<LogEvent, Unreadable> {
    if let Ok(line) = serde_json::from_slice::<LogLine>(payload)
        && line.version == 1
    {
        return Ok(LogEvent { lines: vec![line] });
    }
    hermes_schemas::decode_log(payload)
        .map(|lines| LogEvent { lines })
        .map_err(|e| match e {
            LogDecodeError::UnknownType(kind) => Unreadable::Unknown { kind, version: 1 },
            LogDecodeError::UnknownVersion(kind, version) => Unreadable::Unknown { kind, version },
            other => Unreadable::Malformed(other.to_string()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hermes_schemas::decode_log;

    #[test]
    fn a_log_message_of_either_shape_decodes_as_decode_log_reads_it() {
        let single = br#"{"type":"log.line","version":1,"time":"2026-01-01T00:00:00Z","build_id":"b1","repo":"o/r","attempt":1,"line":7,"stream":"stdout","text":"x"}"#;
        let run = br#"{"type":"log.lines","version":1,"build_id":"b1","repo":"o/r","attempt":1,"first_line":7,"lines":[{"time":"2026-01-01T00:00:00Z","stream":"stderr","text":"a"},{"time":"2026-01-01T00:00:01Z","stream":"stdout","text":"b"}]}"#;
        for payload in [&single[..], &run[..]] {
            let event = log_event(payload).expect("decodes");
            assert_eq!(event.lines, decode_log(payload).expect("decodes"));
        }
        assert_eq!(log_event(run).expect("decodes").lines.len(), 2);
    }

    #[test]
    fn unknown_types_and_versions_are_told_from_garbage() {
        let newer_line = br#"{"type":"log.line","version":2,"time":"2026-01-01T00:00:00Z","build_id":"b1","repo":"o/r","attempt":1,"line":7,"stream":"stdout","text":"x"}"#;
        assert_eq!(
            log_event(newer_line),
            Err(Unreadable::Unknown {
                kind: "log.line".into(),
                version: 2
            })
        );
        let new_type =
            br#"{"type":"log.marker","version":1,"build_id":"b1","repo":"o/r","attempt":1}"#;
        assert!(matches!(
            log_event(new_type),
            Err(Unreadable::Unknown { .. })
        ));
        assert!(matches!(
            log_event(b"{\"type\":"),
            Err(Unreadable::Malformed(_))
        ));
        assert!(matches!(
            log_event(br#"{"type":"build.queued"}"#),
            Err(Unreadable::Malformed(_))
        ));
        let paused = br#"{"id":"b1.1.x","version":1,"time":"2026-01-01T00:00:00Z","build_id":"b1","repo":"o/r","attempt":1,"type":"build.paused","data":{}}"#;
        assert_eq!(
            build_event(paused).map(drop).map_err(|e| e.describe()),
            Err("build.paused v1".to_owned())
        );
        assert!(matches!(build_event(b"[]"), Err(Unreadable::Malformed(_))));
    }
}
