//! Everything Hermes does with NATS: connecting, the stream and consumer definitions (data in
//! `nats/definitions/`), publishing with `Nats-Msg-Id`, and starting a local `nats-server`.
//!
//! # Layout
//!
//! - [`definitions`]: the stream and consumer definitions, applied idempotently at start.
//! - [`bus`]: [`Bus`], a connection with its JetStream context; publish helpers that wait for the ack.
//! - `batch`: the task behind `Bus::publish_batched`, which hands the publishes of many tasks to
//!   the connection together.
//! - [`server`]: finds and starts a `nats-server` with JetStream for `hermes up` and for tests.
//!
//! # Invariants
//!
//! - **This crate is the only one that names `async-nats` types in its public API**, apart from the
//!   message and consumer types re-exported from [`jetstream`].
//! - **Every publish carries a `Nats-Msg-Id` and is awaited until JetStream acknowledged it.**

mod batch;
pub mod bus;
pub mod definitions;
pub mod server;

pub use async_nats::jetstream;
pub use async_nats::{HeaderMap, HeaderValue, Subscriber};
pub use bus::{Bus, BusError, PULL_EXPIRES, Start};
