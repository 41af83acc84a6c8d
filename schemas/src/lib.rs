//! The wire contract of Hermes CI: event and command types, subjects, versions. No I/O.
//!
//! # Layout
//!
//! - [`attempt`]: which attempt owns a build, the one rule every reader applies.
//! - [`ids`]: identifier newtypes (`BuildId`, `RepoName`) and their validation.
//! - [`subjects`]: stream names and subject builders; the only place subjects are spelled.
//! - [`events`]: the envelope and the past-tense facts of the build aggregate and of logs.
//! - [`commands`]: what runners are asked to do (the work queue).
//! - [`webhook`]: the headers under which a GitHub delivery is recorded.
//! - [`github`]: the few fields of GitHub payloads that decide whether and what to build.
//! - [`http`]: the HTTP API's error answer.
//! - [`json_schema`]: the JSON Schema documents generated from these types.
//!
//! # Invariants
//!
//! - **Events are facts in the past tense, never edited.** A change in shape is a new `version`.
//! - **Every event has a deterministic id**, derived from what it records, which is also its
//!   `Nats-Msg-Id`: publishing the same fact twice is dropped by the stream's duplicate window.
//! - **Every build event and log line carries its attempt**, so a reader can tell a superseded attempt.

pub mod attempt;
pub mod commands;
pub mod events;
pub mod github;
pub mod http;
pub mod ids;
pub mod json_schema;
pub mod subjects;
pub mod webhook;

pub use commands::BuildCommand;
pub use events::{
    BuildEvent, BuildStatus, DecodeError, Envelope, Finished, LogEntry, LogEvent, LogLine,
    LogLines, LogStream, TriggerEvent, decode_log,
};
pub use ids::{BuildId, IdError, RepoName};
