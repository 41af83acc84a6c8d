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
    /// The message is larger than the server's `max_payload`.
    #[error("the message is larger than the server allows: {0}")]
    TooLarge(String),
    /// The subject already had a newer message than the publish expected (an optimistic
    /// concurrency check failed): read again and decide again.
    #[error("another message came first on the subject: {0}")]
    Conflict(String),
    /// The stream refused the message (no stream for the subject …).
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
    client: async_nats::Client,
    js: jetstream::Context,
    /// Set by [`Bus::close`]: a disconnection after it is the one asked for, not news.
    closing: Arc<std::sync::atomic::AtomicBool>,
    /// The task behind [`Bus::publish_batched`], shared by every clone, started on first use.
    batcher: Arc<OnceLock<mpsc::Sender<crate::batch::Job>>>,
    /// How many times the client has connected: see [`Bus::connections`].
    connections: watch::Receiver<u64>,
}

/// Where a reader of a stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The stream's first message still kept.
    First,
    /// Messages stored after the reader began.
    New,
    /// The message at this stream sequence, and after.
    Sequence(u64),
    /// The first message stored at or after this time.
    Time(time::OffsetDateTime),
}

/// What JetStream said about a published message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub sequence: u64,
    /// The stream had already stored a message with this id.
    pub duplicate: bool,
}

impl Bus {
    /// Connects to the servers of `url` (one URL, or several separated by commas, with or
    /// without spaces), retrying in the background if the first attempt fails. Reconnects
    /// forever afterwards, to any server of the list or of the cluster it learns of.
    pub async fn connect(url: &str, name: &str) -> Result<Self, BusError> {
        let servers = server_list(url)?;
        let (connected, connections) = watch::channel(0);
        let closing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let closed = closing.clone();
        let who = name.to_owned();
        let client = async_nats::ConnectOptions::new()
            .name(name)
            // The connection's events, logged here once each with what they mean (the client
            // library's own lines are filtered out by the default log filter).
            .event_callback(move |event| {
                let asked = closed.load(std::sync::atomic::Ordering::Relaxed);
                match &event {
                    Event::Connected => {
                        connected.send_modify(|n| *n += 1);
                        tracing::info!(client = %who, "Connected to NATS.");
                    }
                    Event::Disconnected if !asked => {
                        tracing::warn!(client = %who, "Disconnected from NATS; reconnecting.");
                    }
                    Event::ClientError(e) if !asked => {
                        tracing::warn!(client = %who, error = %e, "NATS connection error.");
                    }
                    Event::ServerError(e) => {
                        tracing::warn!(client = %who, error = %e, "NATS server error.");
                    }
                    Event::SlowConsumer(sid) => {
                        tracing::warn!(client = %who, subscription = sid, "A NATS subscription fell behind; messages were dropped.");
                    }
                    Event::LameDuckMode => {
                        tracing::info!(client = %who, "The NATS server is shutting down; moving to another.");
                    }
                    _ => tracing::debug!(client = %who, event = %event, "NATS event."),
                }
                std::future::ready(())
            })
            .connection_timeout(Duration::from_secs(2))
            .max_reconnects(None)
            .retry_on_initial_connect()
            .connect(servers)
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
            closing,
            batcher: Default::default(),
            connections,
        })
    }

    /// Ends the connection as asked (at shutdown): what is buffered is sent, and the
    /// disconnection that follows is not reported as a fault.
    pub async fn close(&self) {
        self.closing
            .store(true, std::sync::atomic::Ordering::Relaxed);
        // Without a connection nothing can be flushed: a process stopping while NATS is out of
        // reach must not wait for it.
        if self.is_connected()
            && let Err(e) = tokio::time::timeout(Duration::from_secs(2), self.client.flush()).await
        {
            tracing::debug!(error = %e, "Final flush timed out.");
        }
        if let Err(e) = self.client.drain().await {
            tracing::debug!(error = %e, "Draining the NATS connection failed.");
        }
    }

    /// Sends what the client buffers (acks are plain publishes) and waits until the server
    /// has it.
    pub async fn flush(&self) -> Result<(), BusError> {
        self.client.flush().await.map_err(classify)
    }

    /// A fresh inbox subject, for replies.
    pub fn new_inbox(&self) -> String {
        self.client.new_inbox()
    }

    /// Subscribes to `subject` (core NATS: what is published while subscribed).
    pub async fn subscribe(&self, subject: String) -> Result<crate::Subscriber, BusError> {
        self.client.subscribe(subject).await.map_err(classify)
    }

    /// A message received on a plain subscription that a JetStream consumer delivered (the
    /// runner's own request inbox), so that it can be acked.
    pub fn jetstream_message(&self, message: async_nats::Message) -> jetstream::Message {
        jetstream::Message {
            message,
            context: self.js.clone(),
        }
    }

    /// The key-value bucket `bucket`.
    pub async fn key_value(&self, bucket: &str) -> Result<jetstream::kv::Store, BusError> {
        self.js.get_key_value(bucket).await.map_err(classify)
    }

    /// The stream `name` (no info fetched).
    pub async fn stream(&self, name: &str) -> Result<jetstream::stream::Stream<()>, BusError> {
        self.js.get_stream_no_info(name).await.map_err(classify)
    }

    /// What the server says of stream `name` now.
    pub async fn stream_info(&self, name: &str) -> Result<jetstream::stream::Info, BusError> {
        let mut stream = self.js.get_stream(name).await.map_err(classify)?;
        stream.info().await.cloned().map_err(classify)
    }

    /// The sequence of the last message on `subject` in `stream`, `None` when there is none.
    pub async fn last_sequence(
        &self,
        stream: &str,
        subject: &str,
    ) -> Result<Option<u64>, BusError> {
        Ok(self.last_raw(stream, subject).await?.map(|m| m.sequence))
    }

    /// The last message on `subject` in `stream`, `None` when there is none.
    pub async fn last_raw(
        &self,
        stream: &str,
        subject: &str,
    ) -> Result<Option<jetstream::message::StreamMessage>, BusError> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind;
        let stream = self.stream(stream).await?;
        match stream.get_last_raw_message_by_subject(subject).await {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(classify(e)),
        }
    }

    /// The payload of the message at `sequence` in `stream`, `None` when the stream does not hold
    /// it (it expired, or never was).
    pub async fn message_at(&self, stream: &str, sequence: u64) -> Result<Option<Bytes>, BusError> {
        use async_nats::jetstream::stream::RawMessageErrorKind as Kind;
        let stream = self.stream(stream).await?;
        match stream.get_raw_message(sequence).await {
            Ok(m) => Ok(Some(m.payload)),
            Err(e) if e.kind() == Kind::NoMessageFound => Ok(None),
            Err(e)
                if matches!(e.kind(), Kind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::NO_MESSAGE_FOUND) =>
            {
                Ok(None)
            }
            Err(e) => Err(classify(e)),
        }
    }

    /// The durable pull consumer `name` of `stream`, made with `config` when missing, and updated
    /// to it when `update` (the runners' consumer carries the lease they set).
    pub async fn pull_consumer(
        &self,
        stream: &str,
        config: jetstream::consumer::pull::Config,
    ) -> Result<jetstream::consumer::PullConsumer, BusError> {
        let name = config.durable_name.clone().unwrap_or_default();
        let stream = self.stream(stream).await?;
        stream
            .get_or_create_consumer(&name, config)
            .await
            .map_err(classify)
    }

    /// Makes or updates the durable consumer `config` on `stream`.
    pub async fn put_consumer(
        &self,
        stream: &str,
        config: jetstream::consumer::pull::Config,
    ) -> Result<jetstream::consumer::PullConsumer, BusError> {
        let stream = self.stream(stream).await?;
        stream.create_consumer(config).await.map_err(classify)
    }

    /// An ordered consumer of `stream` from sequence `from` (0: the first message), whose pulls
    /// expire after [`PULL_EXPIRES`]: what a reader of the whole stream follows.
    pub async fn ordered_from(
        &self,
        stream: &str,
        from: u64,
    ) -> Result<jetstream::consumer::pull::Ordered, BusError> {
        use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
        let deliver_policy = if from <= 1 {
            DeliverPolicy::All
        } else {
            DeliverPolicy::ByStartSequence {
                start_sequence: from,
            }
        };
        let stream = self.stream(stream).await?;
        let consumer = stream
            .create_consumer(OrderedConfig {
                deliver_policy,
                max_expires: PULL_EXPIRES,
                ..Default::default()
            })
            .await
            .map_err(classify)?;
        consumer.messages().await.map_err(classify)
    }

    /// An ordered consumer of `stream` (only `filter`'s subjects, when given), starting at
    /// `start`: what a tool that reads or follows the streams uses.
    pub async fn read(
        &self,
        stream: &str,
        filter: Option<&str>,
        start: Start,
    ) -> Result<jetstream::consumer::pull::Ordered, BusError> {
        use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
        let deliver_policy = match start {
            Start::First => DeliverPolicy::All,
            Start::New => DeliverPolicy::New,
            Start::Sequence(s) => DeliverPolicy::ByStartSequence {
                start_sequence: s.max(1),
            },
            Start::Time(t) => DeliverPolicy::ByStartTime { start_time: t },
        };
        let stream = self.stream(stream).await?;
        let consumer = stream
            .create_consumer(OrderedConfig {
                deliver_policy,
                filter_subject: filter.unwrap_or_default().to_owned(),
                max_expires: PULL_EXPIRES,
                ..Default::default()
            })
            .await
            .map_err(classify)?;
        consumer.messages().await.map_err(classify)
    }

    /// The message stored at `sequence` in `stream` (subject, headers, payload, time), `None` when
    /// the stream does not hold it (it expired or was taken, or never was).
    pub async fn stored(
        &self,
        stream: &str,
        sequence: u64,
    ) -> Result<Option<jetstream::message::StreamMessage>, BusError> {
        use async_nats::jetstream::stream::RawMessageErrorKind as Kind;
        let stream = self.stream(stream).await?;
        match stream.get_raw_message(sequence).await {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == Kind::NoMessageFound => Ok(None),
            Err(e)
                if matches!(e.kind(), Kind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::NO_MESSAGE_FOUND) =>
            {
                Ok(None)
            }
            Err(e) => Err(BusError::Unavailable(e.to_string())),
        }
    }

    /// What the server says of the durable consumer `name` of `stream` now (`None`: there is
    /// none).
    pub async fn consumer_info(
        &self,
        stream: &str,
        name: &str,
    ) -> Result<Option<jetstream::consumer::Info>, BusError> {
        use async_nats::jetstream::context::ConsumerInfoErrorKind as Kind;
        let stream = self.stream(stream).await?;
        match stream.consumer_info(name).await {
            Ok(info) => Ok(Some(info)),
            Err(e) if matches!(e.kind(), Kind::NotFound) => Ok(None),
            Err(e)
                if matches!(e.kind(), Kind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND) =>
            {
                Ok(None)
            }
            Err(e) => Err(BusError::Unavailable(e.to_string())),
        }
    }

    /// Publishes a message as it was exported: its subject, its headers (its `Nats-Msg-Id`
    /// among them), its bytes; waits for the ack.
    pub async fn publish_raw(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<Published, BusError> {
        let ack = self
            .js
            .send_publish(
                subject,
                PublishMessage::build().headers(headers).payload(payload),
            )
            .await
            .map_err(classify)?;
        ack.await.map(published).map_err(classify)
    }

    /// The servers of the cluster the client is connected to, as it reports them (1 when not
    /// clustered).
    pub fn cluster_servers(&self) -> usize {
        let info = self.client.server_info();
        if info.cluster.is_none() {
            return 1;
        }
        info.connect_urls.len().max(1)
    }

    /// The raw client, for benchmarks that measure NATS itself and for tests.
    #[cfg(feature = "raw")]
    pub fn raw_client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The raw JetStream context, for benchmarks that measure JetStream itself and for tests.
    #[cfg(feature = "raw")]
    pub fn raw_jetstream(&self) -> &jetstream::Context {
        &self.js
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
    /// build stream by subject, with its stream sequence: what a service asks when it must know
    /// whether an attempt started or ended, or what a build was queued with.
    pub async fn last_build_event(
        &self,
        repo: &hermes_schemas::RepoName,
        build: &hermes_schemas::BuildId,
        event: &str,
    ) -> Result<Option<(u64, hermes_schemas::Envelope)>, BusError> {
        let subject = hermes_schemas::subjects::build_event(repo, build, event);
        let Some(m) = self
            .last_raw(hermes_schemas::subjects::BUILDS_STREAM, &subject)
            .await?
        else {
            return Ok(None);
        };
        hermes_schemas::Envelope::decode(&m.payload)
            .map(|e| Some((m.sequence, e)))
            .map_err(|e| BusError::Definition(format!("{subject}: {e}")))
    }

    /// The attempt of the last stored `build.<event>` of a build (`None` when there is none) and
    /// its stream sequence, read from the envelope alone, whatever the type and version of its
    /// data: all the attempt rule needs ([`hermes_schemas::attempt::Ownership::from_last`]), so
    /// an event written by a newer Hermes does not keep a runner from deciding.
    pub async fn last_build_attempt(
        &self,
        repo: &hermes_schemas::RepoName,
        build: &hermes_schemas::BuildId,
        event: &str,
    ) -> Result<Option<(u64, u32)>, BusError> {
        #[derive(serde::Deserialize)]
        struct Attempt {
            attempt: u32,
        }
        let subject = hermes_schemas::subjects::build_event(repo, build, event);
        let Some(m) = self
            .last_raw(hermes_schemas::subjects::BUILDS_STREAM, &subject)
            .await?
        else {
            return Ok(None);
        };
        serde_json::from_slice::<Attempt>(&m.payload)
            .map(|a| Some((m.sequence, a.attempt)))
            .map_err(|e| BusError::Definition(format!("{subject}: {e}")))
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

    /// Applies the stream and consumer definitions of `nats/definitions/`, with what the operator
    /// did not set left as the server has it.
    pub async fn apply_definitions(&self) -> Result<(), BusError> {
        self.apply_definitions_with(crate::definitions::Settings::default())
            .await
    }

    /// Applies the definitions with the operator's `settings`.
    pub async fn apply_definitions_with(
        &self,
        settings: crate::definitions::Settings,
    ) -> Result<(), BusError> {
        crate::definitions::apply(&self.js, settings, self.cluster_servers()).await
    }

    /// Makes the notifier's consumer (on its first start) or updates it.
    pub async fn apply_notifier_consumer(&self) -> Result<(), BusError> {
        crate::definitions::apply_notifier_consumer(&self.js).await
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

    /// Publishes `value` as JSON on `subject` only if the last message on that subject is still
    /// the one at `last` (`None`: there is none): an optimistic concurrency check, answered
    /// [`BusError::Conflict`] when another message came first.
    pub async fn publish_json_if_last<T: serde::Serialize>(
        &self,
        subject: String,
        id: &str,
        value: &T,
        last: Option<u64>,
    ) -> Result<Published, BusError> {
        let payload = serde_json::to_vec(value).map_err(|e| BusError::Refused(e.to_string()))?;
        let message =
            message(id, None, payload.into()).expected_last_subject_sequence(last.unwrap_or(0));
        let ack = self
            .js
            .send_publish(subject, message)
            .await
            .map_err(classify)?;
        ack.await.map(published).map_err(classify)
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

/// What a failure of the client library means for the caller, by its kind: the kinds of
/// async-nats's errors that say NATS is out of reach now, that the message is too large, or that
/// an optimistic concurrency check failed; anything else is JetStream saying no.
pub(crate) fn classify<E: IntoBusError>(e: E) -> BusError {
    e.into_bus_error()
}

/// An async-nats error, told apart by its kind.
pub(crate) trait IntoBusError: std::fmt::Display {
    fn into_bus_error(self) -> BusError;
}

/// Errors whose every kind means "not reachable now" or "refused".
macro_rules! by_kind {
    ($($error:ty => |$kind:ident| $unavailable:expr;)*) => {$(
        impl IntoBusError for $error {
            fn into_bus_error(self) -> BusError {
                let text = self.to_string();
                let $kind = self.kind();
                if $unavailable {
                    BusError::Unavailable(text)
                } else {
                    BusError::Refused(text)
                }
            }
        }
    )*};
}

use async_nats::jetstream::context as ctx;
use async_nats::jetstream::{consumer as cons, stream as strm};

by_kind! {
    ctx::GetStreamError => |k| matches!(k, ctx::GetStreamErrorKind::Request);
    ctx::KeyValueError => |k| matches!(k, ctx::KeyValueErrorKind::GetBucket);
    strm::ConsumerError => |k| matches!(k, strm::ConsumerErrorKind::TimedOut | strm::ConsumerErrorKind::Request);
    strm::LastRawMessageError => |k| matches!(k, strm::LastRawMessageErrorKind::Other);
    ctx::RequestError => |k| matches!(k, ctx::RequestErrorKind::NoResponders | ctx::RequestErrorKind::TimedOut | ctx::RequestErrorKind::Other);
    cons::StreamError => |k| matches!(k, cons::StreamErrorKind::TimedOut | cons::StreamErrorKind::Other);
    async_nats::SubscribeError => |_k| true;
    async_nats::client::FlushError => |_k| true;
}

impl IntoBusError for ctx::PublishError {
    fn into_bus_error(self) -> BusError {
        let text = self.to_string();
        match self.kind() {
            // "No stream" is JetStream's no-responders answer: on a cluster, a stream without a
            // leader for the moment (a node lost, an election under way).
            ctx::PublishErrorKind::TimedOut
            | ctx::PublishErrorKind::BrokenPipe
            | ctx::PublishErrorKind::StreamNotFound => BusError::Unavailable(text),
            ctx::PublishErrorKind::MaxPayloadExceeded => BusError::TooLarge(text),
            ctx::PublishErrorKind::WrongLastSequence
            | ctx::PublishErrorKind::WrongLastMessageId => BusError::Conflict(text),
            ctx::PublishErrorKind::MaxAckPending | ctx::PublishErrorKind::Other => {
                BusError::Refused(text)
            }
        }
    }
}

/// Splits a `NATS_URL` of one or more servers (comma-separated, spaces allowed) into addresses.
pub fn server_list(url: &str) -> Result<Vec<async_nats::ServerAddr>, BusError> {
    let servers: Vec<_> = url
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<async_nats::ServerAddr>()
                .map_err(|e| BusError::Definition(format!("NATS server URL {s:?}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    if servers.is_empty() {
        return Err(BusError::Definition("NATS_URL names no server".into()));
    }
    Ok(servers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_of_servers_is_split_at_commas_with_or_without_spaces() {
        for url in [
            "nats://127.0.0.1:24222,nats://127.0.0.1:24223",
            "nats://127.0.0.1:24222, nats://127.0.0.1:24223",
            " nats://127.0.0.1:24222 ,nats://127.0.0.1:24223,",
        ] {
            let servers = server_list(url).expect("parses");
            assert_eq!(servers.len(), 2, "{url}");
            assert_eq!(servers[1].port(), 24223);
        }
        assert_eq!(
            server_list("127.0.0.1:4222").expect("a bare address").len(),
            1
        );
        assert!(server_list("").is_err());
        assert!(server_list("nats://127.0.0.1:notaport").is_err());
    }
}
