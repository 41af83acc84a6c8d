//! A NATS connection with its JetStream context, and publishing that waits for the stream's ack.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use async_nats::{Event, HeaderMap, connection::State};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Failures talking to NATS, by what a caller can do about them.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// NATS is not reachable now; try again later.
    #[error("NATS is unavailable: {0}")]
    Unavailable(String),
    /// The stream refused the message (too large, no stream for the subject …).
    #[error("JetStream refused the publish: {0}")]
    Refused(String),
    #[error("invalid definition: {0}")]
    Definition(String),
    #[error("applying definitions failed: {0}")]
    Apply(String),
}

/// The longest any pull request of Hermes waits on the server (the runners' command requests, the
/// scheduler's and the projector's streams). async-nats's default is 30 s, and that is also what a
/// pull whose answer never comes costs: the client asks again only after the expiry and 5 s more
/// (a benchmark replay once stood still for 34 s, as that timer would). At 2 s a quiet consumer
/// costs one pull request every 2 s and an idle heartbeat every second.
pub const PULL_EXPIRES: Duration = Duration::from_secs(2);

/// A connection to NATS and its JetStream context.
#[derive(Clone, Debug)]
pub struct Bus {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    /// The task behind [`Bus::publish_batched`], shared by every clone, started on first use.
    batcher: Arc<OnceLock<mpsc::Sender<crate::batch::Job>>>,
    /// How many times the client has connected: see [`Bus::connections`].
    connections: watch::Receiver<u64>,
}

/// What JetStream said about a published message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub sequence: u64,
    /// The stream had already stored a message with this id.
    pub duplicate: bool,
}

impl Bus {
    /// Connects to `url` (a comma-separated list of servers is allowed), retrying in the background
    /// if the first attempt fails after `initial` elapsed. Reconnects forever afterwards.
    pub async fn connect(url: &str, name: &str) -> Result<Self, BusError> {
        let (connected, connections) = watch::channel(0);
        let client = async_nats::ConnectOptions::new()
            .name(name)
            // async-nats logs every event itself; this only counts the connections.
            .event_callback(move |event| {
                if matches!(event, Event::Connected) {
                    connected.send_modify(|n| *n += 1);
                }
                std::future::ready(())
            })
            .connection_timeout(Duration::from_secs(2))
            .max_reconnects(None)
            .retry_on_initial_connect()
            .connect(url)
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(5))
            .max_ack_inflight(4096)
            .backpressure_on_inflight(true)
            .build(client.clone());
        Ok(Self {
            client,
            js,
            batcher: Default::default(),
            connections,
        })
    }

    /// Counts the client's connections: 1 once the first is up, one more after each reconnect.
    /// What lives only in the server's memory (an ordered consumer, a waiting pull request) may be
    /// gone after a reconnect; a task that holds such a thing watches this to start it again.
    pub fn connections(&self) -> watch::Receiver<u64> {
        self.connections.clone()
    }

    /// Connects, waits until the connection is up (at most `within`) and applies the definitions:
    /// what a test or a tool does before its first publish.
    pub async fn connect_with_definitions(
        url: &str,
        name: &str,
        within: Duration,
    ) -> Result<Self, BusError> {
        let bus = Self::connect(url, name).await?;
        bus.wait_connected(within).await?;
        bus.apply_definitions().await?;
        Ok(bus)
    }

    /// Pulls from the durable consumer `consumer` of `stream` and hands each message to `handle`,
    /// one at a time and in order, until `shutdown` (checked between messages: a handler may
    /// watch it itself). Each pull expires after [`PULL_EXPIRES`]; one that fails is asked again a
    /// second later. An error only when the stream or consumer cannot be found at the start.
    pub async fn consume<F, Fut>(
        &self,
        stream: &str,
        consumer: &str,
        shutdown: &CancellationToken,
        mut handle: F,
    ) -> Result<(), BusError>
    where
        F: FnMut(jetstream::Message) -> Fut,
        Fut: Future<Output = ()>,
    {
        let unavailable = |e: &dyn std::fmt::Display| BusError::Unavailable(e.to_string());
        let stream = self
            .js
            .get_stream_no_info(stream)
            .await
            .map_err(|e| unavailable(&e))?;
        let consumer: jetstream::consumer::PullConsumer = stream
            .get_consumer(consumer)
            .await
            .map_err(|e| unavailable(&e))?;
        loop {
            let pull = consumer
                .stream()
                .expires(PULL_EXPIRES)
                .heartbeat(PULL_EXPIRES / 2);
            let mut messages = match pull.messages().await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot pull messages, retrying.");
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            loop {
                let next = tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    next = messages.next() => next,
                };
                match next {
                    Some(Ok(msg)) => handle(msg).await,
                    Some(Err(e)) => tracing::debug!(error = %e, "Pull stream hiccup."),
                    None => break,
                }
            }
        }
    }

    /// The last stored `build.<event>` of a build (`None` when there is none), read from the
    /// build stream by subject: what a service asks when it must know whether an attempt started
    /// or ended, or what a build was queued with.
    pub async fn last_build_event(
        &self,
        repo: &hermes_schemas::RepoName,
        build: &hermes_schemas::BuildId,
        event: &str,
    ) -> Result<Option<hermes_schemas::Envelope>, BusError> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind;
        let unavailable = |e: &dyn std::fmt::Display| BusError::Unavailable(e.to_string());
        let stream = self
            .js
            .get_stream_no_info(hermes_schemas::subjects::BUILDS_STREAM)
            .await
            .map_err(|e| unavailable(&e))?;
        let subject = hermes_schemas::subjects::build_event(repo, build, event);
        match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(m) => serde_json::from_slice(&m.payload)
                .map(Some)
                .map_err(|e| BusError::Definition(format!("{subject}: not a build event: {e}"))),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(unavailable(&e)),
        }
    }

    /// Waits until the connection is up, at most `within`.
    pub async fn wait_connected(&self, within: Duration) -> Result<(), BusError> {
        let deadline = tokio::time::Instant::now() + within;
        while !self.is_connected() {
            if tokio::time::Instant::now() >= deadline {
                return Err(BusError::Unavailable("not connected".into()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    /// Applies the stream and consumer definitions of `nats/definitions/`.
    pub async fn apply_definitions(&self) -> Result<(), BusError> {
        crate::definitions::apply(&self.js).await
    }

    /// Publishes `payload` with `Nats-Msg-Id: id` and waits for JetStream's ack.
    pub async fn publish(
        &self,
        subject: String,
        id: &str,
        headers: Option<HeaderMap>,
        payload: Bytes,
    ) -> Result<Published, BusError> {
        let ack = self.publish_nowait(subject, id, headers, payload).await?;
        ack.await
    }

    /// Sends the publish and returns a future of its ack, so that a caller can keep many in flight.
    /// The future must be awaited: a dropped ack is a message whose storage nobody checked.
    pub async fn publish_nowait(
        &self,
        subject: String,
        id: &str,
        headers: Option<HeaderMap>,
        payload: Bytes,
    ) -> Result<impl Future<Output = Result<Published, BusError>> + use<>, BusError> {
        let fut = self
            .js
            .send_publish(subject, message(id, headers, payload))
            .await
            .map_err(classify)?;
        Ok(async move { fut.await.map(published).map_err(classify) })
    }

    /// Like [`Bus::publish`], for callers that publish from many tasks at once (the webhook
    /// handlers): the publish goes through one task that hands what is waiting to the connection
    /// together (the `batch` module says why and what it measured). Messages keep the order in
    /// which they were queued. The task starts with the first call, on its runtime.
    pub async fn publish_batched(
        &self,
        subject: String,
        id: &str,
        headers: Option<HeaderMap>,
        payload: Bytes,
    ) -> Result<Published, BusError> {
        let tx = self
            .batcher
            .get_or_init(|| crate::batch::start(self.js.clone()));
        crate::batch::publish(tx, subject, id, headers, payload).await
    }

    /// Serialises `value` as JSON and publishes it.
    pub async fn publish_json<T: serde::Serialize>(
        &self,
        subject: String,
        id: &str,
        value: &T,
    ) -> Result<Published, BusError> {
        let payload = serde_json::to_vec(value).map_err(|e| BusError::Refused(e.to_string()))?;
        self.publish(subject, id, None, payload.into()).await
    }
}

/// What JetStream's ack says, as [`Published`].
pub(crate) fn published(ack: jetstream::publish::PublishAck) -> Published {
    Published {
        sequence: ack.sequence,
        duplicate: ack.duplicate,
    }
}

/// The message to publish: the caller's header map as it is (no copy of each header into a new
/// map), the payload, and `Nats-Msg-Id: id`.
pub(crate) fn message(id: &str, headers: Option<HeaderMap>, payload: Bytes) -> PublishMessage {
    match headers {
        Some(h) => PublishMessage::build().headers(h),
        None => PublishMessage::build(),
    }
    .payload(payload)
    .message_id(id)
}

pub(crate) fn classify<E: std::fmt::Display + std::fmt::Debug>(e: E) -> BusError {
    let text = e.to_string();
    // Time-outs, broken connections and "no responders" mean the stream is out of reach now;
    // anything else is JetStream saying no to this message.
    let lower = text.to_ascii_lowercase();
    if lower.contains("timed out")
        || lower.contains("timeout")
        || lower.contains("no responders")
        || lower.contains("disconnect")
        || lower.contains("broken pipe")
        || lower.contains("connection")
    {
        BusError::Unavailable(text)
    } else {
        BusError::Refused(text)
    }
}
