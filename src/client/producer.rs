//! [`Producer`]: the high-level way to write messages. It routes each message to a partition,
//! packs messages into batches per partition, sends each partition's batches straight to the
//! shard that owns it ([`ShardRouter`]), retries what a lost connection interrupted, and reports
//! every failure.
//!
//! Two modes, chosen with [`ProducerBuilder::background`]:
//!
//! * **Background** (the default). [`Producer::send`] routes the messages, waits for room in a
//!   bounded queue ([`ProducerBuilder::queue_capacity`] messages, counted from acceptance to
//!   acknowledgement) and returns; one tokio task per producer drains the queue, fills one open
//!   batch per partition, seals it when it is full or has lingered for
//!   [`ProducerBuilder::linger`], and sends it. [`Producer::flush`] waits until everything
//!   accepted before it is acknowledged; [`Producer::shutdown`] flushes and stops the task.
//!   Dropping the producer without `shutdown` lets the task send what it holds and then end,
//!   with failures only logged.
//! * **Direct**. `send` builds the batches itself, sends every partition's batches at once and
//!   returns when all are acknowledged.
//!
//! Runs on the caller's tokio runtime (the background task is spawned on it). A producer is
//! `Send + Sync`; share it behind an `Arc` to send from many tasks.
//!
//! Invariants:
//! * **Order per partition.** A partition has at most one produce request in flight, and a
//!   retry repeats the same request before anything after it is sent, so the messages of one
//!   partition are appended in the order they were accepted (one sender; concurrent senders'
//!   calls interleave in some order).
//! * **Nothing is dropped silently.** A batch that still fails after its retries is logged and
//!   reported, once, to the next `send` or `flush` (a [`ProducerError::Delivery`] naming how many
//!   messages failed since the last report). A `send` that reports an earlier failure accepts
//!   none of its own messages.
//! * **At least once.** A retried request may have been written before the connection died, so
//!   after retries a message can be stored twice. Only connection errors, the transient
//!   `ShuttingDown` and `TooManyInFlight`, and an unknown partition that a fresh shard map still
//!   lists are retried; a refusal such as `InvalidBatch` or `PermissionDenied` fails at once.
//! * **Bounded.** Messages between acceptance and acknowledgement, batch sizes, batches per
//!   request and pooled batch buffers all have limits named below. Each batch is one buffer
//!   ([`BatchBuilder`]), which the background task reuses after the acknowledgement; pushing a
//!   message copies it into that buffer and allocates only when the buffer has to grow.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use ringbroker::client::{Client, Partitioning, Producer, ProducerMessage};
//! let client = Client::connect_addr("127.0.0.1:7720", "ringbroker", "ringbroker").await?;
//! let producer = Producer::builder(&client, "orders", "created")
//!     .create_if_missing(4)
//!     .linger(Duration::from_millis(5))
//!     .partitioning(Partitioning::Balanced)
//!     .build()
//!     .await?;
//! producer.send_one("hello").await?;
//! producer.send(vec![ProducerMessage::keyed("user-7", "paid")]).await?;
//! producer.shutdown().await?;
//! # Ok(()) }
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::connection::Client;
use super::error::ClientError;
use super::router::{RouterSource, ShardRouter};
use crate::constants::{
    BATCH_BYTES_MAX, BATCH_RECORDS_MAX, FILTER_VALUE_BYTES_MAX, HEADERS_PER_RECORD_MAX, HEADER_KEY_BYTES_MAX,
    KEY_BYTES_MAX,
};
use crate::protocol::batch::{
    BatchBuilder, BatchError, Message, BATCH_BYTES_MIN, BATCH_HEADER_BYTES, BUILDER_CAPACITY_DEFAULT_BYTES,
    RECORD_HEADER_BYTES,
};
use crate::protocol::messages::{Partitioning as WirePartitioning, Status, TopicConfig};

/// Default most messages in one batch.
pub const BATCH_SIZE_DEFAULT: u32 = 1000;

/// Default most bytes in one batch, header included.
pub const BATCH_BYTES_DEFAULT: usize = 1024 * 1024;

/// Default longest time a message waits in an open batch before the batch is sent.
pub const LINGER_DEFAULT: Duration = Duration::from_millis(1);

/// Default number of retries of a request that failed on the connection.
pub const RETRIES_DEFAULT: u32 = 3;

/// Default wait before each retry.
pub const RETRY_INTERVAL_DEFAULT: Duration = Duration::from_secs(1);

/// Default most messages a background producer holds between acceptance and acknowledgement.
pub const QUEUE_MESSAGES_DEFAULT: usize = 100_000;

/// Most batches in one produce request.
pub const REQUEST_BATCHES_MAX: usize = 64;

/// Most batch bytes in one produce request (the server's default frame limit is the largest
/// batch plus 1 MiB, so any request within this fits).
pub const REQUEST_BYTES_MAX: usize = BATCH_BYTES_MAX;

/// Most queued commands the background task takes in one go before it seals and sends.
const DRAIN_COMMANDS_MAX: usize = 1024;

/// Most empty batch buffers the background task keeps for reuse.
const BUILDER_POOL_MAX: usize = 64;

const _: () = assert!(BATCH_SIZE_DEFAULT <= BATCH_RECORDS_MAX && BATCH_SIZE_DEFAULT > 0);
const _: () = assert!(BATCH_BYTES_DEFAULT >= BATCH_BYTES_MIN && BATCH_BYTES_DEFAULT <= BATCH_BYTES_MAX);
const _: () = assert!(REQUEST_BATCHES_MAX > 0 && QUEUE_MESSAGES_DEFAULT > 0);

/// How a producer picks the partition of a message that does not name one itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Partitioning {
    /// Messages with a key go to the key's partition ([`key_partition`]); the others take the
    /// partitions in turn, one message each.
    #[default]
    Balanced,
    /// Every message goes to this partition.
    Partition(u32),
    /// Every message goes to this key's partition, whatever its own key.
    Key(Bytes),
}

/// One message to produce. The parts are shared [`Bytes`], so building one from a `Vec<u8>` or
/// a `String` does not copy.
///
/// Partition choice, first match wins: `partition`; the producer's
/// [`Partitioning::Partition`] or [`Partitioning::Key`]; this message's `key`; round robin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerMessage {
    /// The record key (at most `KEY_BYTES_MAX` bytes), stored with the record and used for
    /// routing under [`Partitioning::Balanced`].
    pub key: Option<Bytes>,
    /// The filter value (at most `FILTER_VALUE_BYTES_MAX` bytes) consumers may filter on.
    pub filter_value: Option<Bytes>,
    /// Headers as (key, value) pairs: at most `HEADERS_PER_RECORD_MAX`, keys at most
    /// `HEADER_KEY_BYTES_MAX` bytes.
    pub headers: Vec<(Bytes, Bytes)>,
    /// The body.
    pub payload: Bytes,
    /// The partition to write to, overriding the producer's partitioning.
    pub partition: Option<u32>,
}

impl ProducerMessage {
    /// A message with only a payload.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        ProducerMessage { payload: payload.into(), ..ProducerMessage::default() }
    }

    /// A message with a key and a payload.
    pub fn keyed(key: impl Into<Bytes>, payload: impl Into<Bytes>) -> Self {
        ProducerMessage { key: Some(key.into()), payload: payload.into(), ..ProducerMessage::default() }
    }

    /// This message with a key.
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// This message with a filter value.
    pub fn with_filter_value(mut self, value: impl Into<Bytes>) -> Self {
        self.filter_value = Some(value.into());
        self
    }

    /// This message with one more header.
    pub fn with_header(mut self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        self.headers.push((key.into(), value.into()));
        self
    }

    /// This message bound for `partition`.
    pub fn with_partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }
}

impl From<&str> for ProducerMessage {
    fn from(payload: &str) -> Self {
        ProducerMessage::new(Bytes::copy_from_slice(payload.as_bytes()))
    }
}

impl From<String> for ProducerMessage {
    fn from(payload: String) -> Self {
        ProducerMessage::new(payload)
    }
}

impl From<&[u8]> for ProducerMessage {
    fn from(payload: &[u8]) -> Self {
        ProducerMessage::new(Bytes::copy_from_slice(payload))
    }
}

impl From<Vec<u8>> for ProducerMessage {
    fn from(payload: Vec<u8>) -> Self {
        ProducerMessage::new(payload)
    }
}

impl From<Bytes> for ProducerMessage {
    fn from(payload: Bytes) -> Self {
        ProducerMessage::new(payload)
    }
}

/// FNV-1a 64 of a key: the server's key hash (`docs/protocol.md`, section 8).
pub fn key_hash(key: &[u8]) -> u64 {
    key.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The partition the server picks for `key` among `partitions` (at least 1).
pub fn key_partition(key: &[u8], partitions: u32) -> u32 {
    debug_assert!(partitions > 0);
    // The remainder is below `partitions`, so it fits a u32.
    (key_hash(key) % u64::from(partitions.max(1))) as u32
}

/// Why a producer call failed.
#[derive(Debug)]
pub enum ProducerError {
    /// A request outside of sending failed: metadata, creating the stream or topic, or the
    /// topic does not exist.
    Client(ClientError),
    /// The builder's settings cannot work (the text says why).
    InvalidConfig(String),
    /// A message breaks a limit or names a partition the topic lacks; none of the call's
    /// messages was accepted.
    InvalidMessage(String),
    /// Messages could not be delivered, after retries. `partition` and `source` describe the
    /// first failure; `messages` counts every message that failed since the last report. After
    /// a connection error their fate is unknown (they may be stored); after a refusal they
    /// are not stored.
    Delivery {
        /// The partition of the first failed batch.
        partition: u32,
        /// Messages that failed since the last report.
        messages: u64,
        /// What the first failure was.
        source: ClientError,
    },
    /// The producer's background task is gone (the runtime shut down or the task panicked).
    Closed,
}

impl fmt::Display for ProducerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProducerError::Client(error) => write!(f, "{error}"),
            ProducerError::InvalidConfig(reason) => write!(f, "invalid producer settings: {reason}"),
            ProducerError::InvalidMessage(reason) => write!(f, "invalid message: {reason}"),
            ProducerError::Delivery { partition, messages, source } => {
                write!(f, "{messages} messages not delivered (first on partition {partition}): {source}")
            }
            ProducerError::Closed => write!(f, "the producer's background task has stopped"),
        }
    }
}

impl std::error::Error for ProducerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProducerError::Client(error) | ProducerError::Delivery { source: error, .. } => Some(error),
            _ => None,
        }
    }
}

impl From<ClientError> for ProducerError {
    fn from(error: ClientError) -> Self {
        ProducerError::Client(error)
    }
}

/// Configures and builds a [`Producer`]; see [`Producer::builder`].
#[derive(Debug)]
pub struct ProducerBuilder {
    source: RouterSource,
    stream: String,
    topic: String,
    create_partitions: Option<u32>,
    batch_size: u32,
    batch_bytes: usize,
    linger: Duration,
    partitioning: Partitioning,
    retry: RetryPolicy,
    background: bool,
    queue_messages: usize,
}

impl ProducerBuilder {
    /// A builder for a producer on `stream`/`topic` over a [`Client`] or a [`ShardRouter`]
    /// (pass a router to share its shard connections with other producers and consumers).
    pub fn new(source: impl Into<RouterSource>, stream: impl Into<String>, topic: impl Into<String>) -> Self {
        ProducerBuilder {
            source: source.into(),
            stream: stream.into(),
            topic: topic.into(),
            create_partitions: None,
            batch_size: BATCH_SIZE_DEFAULT,
            batch_bytes: BATCH_BYTES_DEFAULT,
            linger: LINGER_DEFAULT,
            partitioning: Partitioning::Balanced,
            retry: RetryPolicy { retries: RETRIES_DEFAULT, interval: RETRY_INTERVAL_DEFAULT },
            background: true,
            queue_messages: QUEUE_MESSAGES_DEFAULT,
        }
    }

    /// Creates the stream and the topic (with `partitions` partitions) when they do not exist.
    /// An existing topic is used as it is, whatever its partition count; a producer that loses
    /// a creation race to another one uses what the winner created.
    pub fn create_if_missing(mut self, partitions: u32) -> Self {
        self.create_partitions = Some(partitions);
        self
    }

    /// Most messages in one batch (default [`BATCH_SIZE_DEFAULT`]; clamped to
    /// `1..=BATCH_RECORDS_MAX`).
    pub fn batch_size(mut self, messages: u32) -> Self {
        self.batch_size = messages.clamp(1, BATCH_RECORDS_MAX);
        self
    }

    /// Most bytes in one batch, header included (default [`BATCH_BYTES_DEFAULT`]; clamped to
    /// `BATCH_BYTES_MIN..=BATCH_BYTES_MAX`). A single message larger than this still goes, alone.
    pub fn batch_bytes(mut self, bytes: usize) -> Self {
        self.batch_bytes = bytes.clamp(BATCH_BYTES_MIN, BATCH_BYTES_MAX);
        self
    }

    /// How long a background producer lets a batch fill before sending it (default
    /// [`LINGER_DEFAULT`]). Zero sends whatever has been queued as soon as the task sees it.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Another name for [`linger`](Self::linger).
    pub fn send_interval(self, interval: Duration) -> Self {
        self.linger(interval)
    }

    /// How messages that name no partition are spread (default [`Partitioning::Balanced`]).
    pub fn partitioning(mut self, partitioning: Partitioning) -> Self {
        self.partitioning = partitioning;
        self
    }

    /// Retries a failed produce request up to `count` times, `interval` apart (default
    /// [`RETRIES_DEFAULT`] times, [`RETRY_INTERVAL_DEFAULT`] apart): after connection errors
    /// and the other transient failures the module docs list, never after a refusal. Each
    /// attempt reconnects as the client's own options allow.
    pub fn retries(mut self, count: u32, interval: Duration) -> Self {
        self.retry = RetryPolicy { retries: count, interval };
        self
    }

    /// Whether `send` queues for a background task (default `true`) or sends before returning.
    pub fn background(mut self, background: bool) -> Self {
        self.background = background;
        self
    }

    /// Most messages a background producer holds between acceptance and acknowledgement
    /// (default [`QUEUE_MESSAGES_DEFAULT`]); `send` waits for room beyond it.
    pub fn queue_capacity(mut self, messages: usize) -> Self {
        self.queue_messages = messages.clamp(1, u32::MAX as usize);
        self
    }

    /// Builds the producer: sets up the router, creates the stream and topic if asked, checks
    /// that the topic exists, opens the connections to the shards that own its partitions
    /// ([`ShardRouter::connect_owners`]) and, in background mode, starts the task (on the
    /// current tokio runtime).
    pub async fn build(self) -> Result<Producer, ProducerError> {
        let router = self.source.into_router().await?;
        if let Some(partitions) = self.create_partitions {
            if partitions == 0 {
                return Err(ProducerError::InvalidConfig(
                    "create_if_missing needs at least 1 partition".into(),
                ));
            }
            ensure_topic(&router, &self.stream, &self.topic, partitions).await?;
        }
        let partitions = router.partitions(&self.stream, &self.topic).await?;
        router.connect_owners(&self.stream, &self.topic).await?;
        if let Partitioning::Partition(partition) = self.partitioning {
            if partition >= partitions {
                return Err(ProducerError::InvalidConfig(format!(
                    "partition {partition} does not exist: {}/{} has {partitions}",
                    self.stream, self.topic
                )));
            }
        }
        let shared = Arc::new(Shared {
            router,
            stream: self.stream,
            topic: self.topic,
            limits: Limits { batch_size: self.batch_size, batch_bytes: self.batch_bytes },
            linger: self.linger,
            partitioning: self.partitioning,
            retry: self.retry,
            round_robin: AtomicU64::new(0),
            failure: Mutex::new(None),
        });
        let mode = if self.background {
            let permits = Arc::new(Semaphore::new(self.queue_messages.min(Semaphore::MAX_PERMITS)));
            let (commands, receiver) = mpsc::channel(self.queue_messages);
            let worker = Worker::new(shared.clone(), permits.clone());
            let task = tokio::spawn(worker.run(receiver));
            Mode::Background { commands, permits, capacity: self.queue_messages, task }
        } else {
            Mode::Direct
        };
        Ok(Producer { shared, mode })
    }
}

/// Creates the stream and topic unless the topic is already visible; a lost creation race
/// (`AlreadyExists`) counts as success.
async fn ensure_topic(
    router: &ShardRouter,
    stream: &str,
    topic: &str,
    partitions: u32,
) -> Result<(), ClientError> {
    match router.partitions(stream, topic).await {
        Ok(_) => return Ok(()),
        Err(error) if matches!(error.status(), Some(Status::UnknownStream | Status::UnknownTopic)) => {}
        Err(error) => return Err(error),
    }
    let base = router.base();
    tolerate_existing(base.create_stream(stream, true).await.map(drop))?;
    let config = TopicConfig { partitions, ..TopicConfig::default() };
    tolerate_existing(base.create_topic(stream, topic, config, true).await.map(drop))?;
    tracing::debug!(%stream, %topic, partitions, "stream and topic ensured");
    router.refresh().await
}

fn tolerate_existing(outcome: Result<(), ClientError>) -> Result<(), ClientError> {
    match outcome {
        Err(error) if error.status() == Some(Status::AlreadyExists) => Ok(()),
        other => other,
    }
}

/// Writes messages to one topic, batching per partition and routing each batch to the
/// partition's owner shard. Built with [`Producer::builder`]; see the module docs for the two
/// modes and the guarantees.
pub struct Producer {
    shared: Arc<Shared>,
    mode: Mode,
}

enum Mode {
    Direct,
    Background {
        commands: mpsc::Sender<Command>,
        /// One permit per message the producer may still accept.
        permits: Arc<Semaphore>,
        capacity: usize,
        task: tokio::task::JoinHandle<()>,
    },
}

impl Producer {
    /// A builder for a producer on `stream`/`topic` over a [`Client`] or a [`ShardRouter`].
    pub fn builder(
        source: impl Into<RouterSource>,
        stream: impl Into<String>,
        topic: impl Into<String>,
    ) -> ProducerBuilder {
        ProducerBuilder::new(source, stream, topic)
    }

    /// The router the producer sends through.
    pub fn router(&self) -> &ShardRouter {
        &self.shared.router
    }

    /// The stream written to.
    pub fn stream(&self) -> &str {
        &self.shared.stream
    }

    /// The topic written to.
    pub fn topic(&self) -> &str {
        &self.shared.topic
    }

    /// Whether `send` hands messages to a background task.
    pub fn is_background(&self) -> bool {
        matches!(self.mode, Mode::Background { .. })
    }

    /// Sends one message; see [`send`](Self::send).
    pub async fn send_one(&self, message: impl Into<ProducerMessage>) -> Result<(), ProducerError> {
        let message = message.into();
        self.shared.take_failure()?;
        check_message(0, &message)?;
        let partitions = self.shared.router.partitions(&self.shared.stream, &self.shared.topic).await?;
        let partition = self.shared.route(&message, partitions)?;
        match &self.mode {
            Mode::Direct => self.shared.send_direct(vec![message], vec![partition]).await,
            Mode::Background { commands, permits, .. } => {
                enqueue(commands, permits, 1, Command::One { partition, message }).await
            }
        }
    }

    /// Sends messages, in order. Background mode: returns once all are queued (waiting for
    /// room); they are acknowledged later (see [`flush`](Self::flush)). Direct mode: returns
    /// once every partition has acknowledged them.
    ///
    /// Errors: a failure of earlier messages not reported yet ([`ProducerError::Delivery`]),
    /// in which case none of these messages was accepted; a message over a limit
    /// ([`ProducerError::InvalidMessage`], none accepted); in direct mode, this call's own
    /// delivery failures (partitions that succeeded keep their messages).
    pub async fn send(&self, messages: Vec<ProducerMessage>) -> Result<(), ProducerError> {
        self.shared.take_failure()?;
        if messages.is_empty() {
            return Ok(());
        }
        for (index, message) in messages.iter().enumerate() {
            check_message(index, message)?;
        }
        let partitions = self.shared.router.partitions(&self.shared.stream, &self.shared.topic).await?;
        let routes = messages
            .iter()
            .map(|message| self.shared.route(message, partitions))
            .collect::<Result<Vec<u32>, ProducerError>>()?;
        match &self.mode {
            Mode::Direct => self.shared.send_direct(messages, routes).await,
            Mode::Background { commands, permits, capacity, .. } => {
                send_chunks(commands, permits, *capacity, messages, routes).await
            }
        }
    }

    /// Waits until every message accepted before this call is acknowledged, then reports the
    /// first failure not reported yet, if any.
    pub async fn flush(&self) -> Result<(), ProducerError> {
        match &self.mode {
            Mode::Direct => self.shared.take_failure(),
            Mode::Background { commands, .. } => {
                let (reply, answer) = oneshot::channel();
                commands.send(Command::Flush(reply)).await.map_err(|_| ProducerError::Closed)?;
                answer.await.map_err(|_| ProducerError::Closed)?
            }
        }
    }

    /// Flushes, then stops the background task; everything accepted has been sent (or reported
    /// as failed) when this returns.
    pub async fn shutdown(self) -> Result<(), ProducerError> {
        let flushed = self.flush().await;
        if let Mode::Background { commands, task, .. } = self.mode {
            drop(commands);
            if task.await.is_err() {
                return Err(ProducerError::Closed);
            }
        }
        flushed?;
        self.shared.take_failure()
    }
}

impl fmt::Debug for Producer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("stream", &self.shared.stream)
            .field("topic", &self.shared.topic)
            .field("background", &self.is_background())
            .field("partitioning", &self.shared.partitioning)
            .finish()
    }
}

/// Queues one command holding `messages` messages, after taking a permit for each.
async fn enqueue(
    commands: &mpsc::Sender<Command>,
    permits: &Semaphore,
    messages: u32,
    command: Command,
) -> Result<(), ProducerError> {
    permits.acquire_many(messages).await.map_err(|_| ProducerError::Closed)?.forget();
    if commands.send(command).await.is_err() {
        permits.add_permits(messages as usize);
        return Err(ProducerError::Closed);
    }
    Ok(())
}

/// Queues messages in chunks no larger than the queue, so a call larger than the queue waits
/// for room chunk by chunk instead of forever.
async fn send_chunks(
    commands: &mpsc::Sender<Command>,
    permits: &Semaphore,
    capacity: usize,
    mut messages: Vec<ProducerMessage>,
    mut routes: Vec<u32>,
) -> Result<(), ProducerError> {
    debug_assert_eq!(messages.len(), routes.len());
    while !messages.is_empty() {
        let (chunk, chunk_routes) = if messages.len() <= capacity {
            (std::mem::take(&mut messages), std::mem::take(&mut routes))
        } else {
            (messages.drain(..capacity).collect(), routes.drain(..capacity).collect())
        };
        // `capacity` fits a u32 (the builder clamps it).
        let count = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
        enqueue(commands, permits, count, Command::Many { partitions: chunk_routes, messages: chunk })
            .await?;
    }
    Ok(())
}

/// Checks a message against the format's limits, so the background task never meets one it
/// cannot batch.
fn check_message(index: usize, message: &ProducerMessage) -> Result<(), ProducerError> {
    let over = |what: &str, len: usize, max: usize| {
        ProducerError::InvalidMessage(format!("message {index}: {what} is {len}, at most {max}"))
    };
    if let Some(key) = &message.key {
        if key.len() > KEY_BYTES_MAX {
            return Err(over("key bytes", key.len(), KEY_BYTES_MAX));
        }
    }
    if let Some(value) = &message.filter_value {
        if value.len() > FILTER_VALUE_BYTES_MAX {
            return Err(over("filter value bytes", value.len(), FILTER_VALUE_BYTES_MAX));
        }
    }
    if message.headers.len() > HEADERS_PER_RECORD_MAX {
        return Err(over("header count", message.headers.len(), HEADERS_PER_RECORD_MAX));
    }
    if let Some((key, _)) = message.headers.iter().find(|(key, _)| key.len() > HEADER_KEY_BYTES_MAX) {
        return Err(over("header key bytes", key.len(), HEADER_KEY_BYTES_MAX));
    }
    let batch_bytes = record_bytes(message).saturating_add(BATCH_HEADER_BYTES);
    if batch_bytes > BATCH_BYTES_MAX {
        return Err(over("batch bytes with this message alone", batch_bytes, BATCH_BYTES_MAX));
    }
    Ok(())
}

/// The size of a message's record in a batch (`docs/format.md`).
fn record_bytes(message: &ProducerMessage) -> usize {
    let key = message.key.as_ref().map_or(0, |key| 2 + key.len());
    let filter = message.filter_value.as_ref().map_or(0, |value| 1 + value.len());
    let headers = message.headers.iter().fold(0_usize, |bytes, (key, value)| {
        bytes.saturating_add(1 + key.len() + 4).saturating_add(value.len())
    });
    RECORD_HEADER_BYTES
        .saturating_add(key + filter)
        .saturating_add(headers)
        .saturating_add(message.payload.len())
}

/// Appends `message` to `builder` as the next record, borrowing its parts (the header pairs
/// sit in an array on the stack).
fn push_message(builder: &mut BatchBuilder, message: &ProducerMessage) -> Result<(), BatchError> {
    let record = Message {
        key: message.key.as_deref(),
        filter_value: message.filter_value.as_deref(),
        headers: &[],
        payload: &message.payload,
        timestamp_us: None,
    };
    if message.headers.is_empty() {
        return builder.push(&record);
    }
    if message.headers.len() > HEADERS_PER_RECORD_MAX {
        let (field, len, max) = ("header count", message.headers.len(), HEADERS_PER_RECORD_MAX);
        return Err(BatchError::FieldTooLarge { field, len, max });
    }
    let mut pairs: [(&[u8], &[u8]); HEADERS_PER_RECORD_MAX] = [(&[], &[]); HEADERS_PER_RECORD_MAX];
    for (pair, (key, value)) in pairs.iter_mut().zip(&message.headers) {
        *pair = (key, value);
    }
    builder.push(&Message { headers: &pairs[..message.headers.len()], ..record })
}

/// Batch limits.
#[derive(Debug, Clone, Copy)]
struct Limits {
    batch_size: u32,
    batch_bytes: usize,
}

impl Limits {
    fn new_builder(&self) -> BatchBuilder {
        BatchBuilder::with_capacity(0, 0, self.batch_bytes.min(BUILDER_CAPACITY_DEFAULT_BYTES))
    }
}

/// Adds `message` to the open batch `open` (taking a buffer from `pool`, or a new one, when
/// there is none). Hands the open batch to `seal` first when the message would overflow it,
/// and after it when it is full. Fails only for a message no batch can hold.
fn append(
    open: &mut Option<BatchBuilder>,
    message: &ProducerMessage,
    limits: Limits,
    pool: &mut Vec<BatchBuilder>,
    mut seal: impl FnMut(BatchBuilder),
) -> Result<(), BatchError> {
    let record = record_bytes(message);
    if let Some(full) = open
        .take_if(|batch| !batch.is_empty() && batch.byte_len().saturating_add(record) > limits.batch_bytes)
    {
        seal(full);
    }
    let builder = open.get_or_insert_with(|| pool.pop().unwrap_or_else(|| limits.new_builder()));
    if let Err(error) = push_message(builder, message) {
        if builder.is_empty() {
            return Err(error);
        }
        // The batch hit a format limit first (size, records, time span): send it and retry.
        if let Some(full) = open.take() {
            seal(full);
        }
        push_message(open.insert(pool.pop().unwrap_or_else(|| limits.new_builder())), message)?;
    }
    if let Some(full) = open.take_if(|batch| batch.record_count() >= limits.batch_size) {
        seal(full);
    }
    Ok(())
}

/// How often and how far apart a failed request is tried again.
#[derive(Debug, Clone, Copy)]
struct RetryPolicy {
    retries: u32,
    interval: Duration,
}

/// Whether a failed request may succeed if sent again: its connection failed, or the server
/// was stopping or too busy to take it.
fn is_retryable(error: &ClientError) -> bool {
    error.is_connection_error()
        || matches!(error.status(), Some(Status::ShuttingDown | Status::TooManyInFlight))
}

/// A failure not reported to the user yet.
struct Failure {
    partition: u32,
    messages: u64,
    source: ClientError,
}

/// What the producer handle and its task share.
struct Shared {
    router: ShardRouter,
    stream: String,
    topic: String,
    limits: Limits,
    linger: Duration,
    partitioning: Partitioning,
    retry: RetryPolicy,
    round_robin: AtomicU64,
    failure: Mutex<Option<Failure>>,
}

/// Locks a std mutex, recovering it if a panicking thread poisoned it (the failure slot is
/// always consistent).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// The partition of `message` among `partitions`.
    fn route(&self, message: &ProducerMessage, partitions: u32) -> Result<u32, ProducerError> {
        if partitions == 0 {
            return Err(ProducerError::InvalidMessage(format!(
                "{}/{} has no partitions",
                self.stream, self.topic
            )));
        }
        let partition = match (message.partition, &self.partitioning) {
            (Some(partition), _) => partition,
            (None, Partitioning::Partition(partition)) => *partition,
            (None, Partitioning::Key(key)) => key_partition(key, partitions),
            (None, Partitioning::Balanced) => match &message.key {
                Some(key) => key_partition(key, partitions),
                None => (self.round_robin.fetch_add(1, Ordering::Relaxed) % u64::from(partitions)) as u32,
            },
        };
        if partition >= partitions {
            return Err(ProducerError::InvalidMessage(format!(
                "partition {partition} does not exist: {}/{} has {partitions}",
                self.stream, self.topic
            )));
        }
        Ok(partition)
    }

    /// Logs a delivery failure and keeps it for the next `send` or `flush`.
    fn record_failure(&self, partition: u32, messages: u64, source: ClientError) {
        tracing::error!(
            stream = %self.stream, topic = %self.topic, partition, messages, error = %source,
            "messages not delivered"
        );
        let mut failure = lock(&self.failure);
        match failure.as_mut() {
            Some(earlier) => earlier.messages = earlier.messages.saturating_add(messages),
            None => *failure = Some(Failure { partition, messages, source }),
        }
    }

    /// Reports (and forgets) the failure kept since the last report.
    fn take_failure(&self) -> Result<(), ProducerError> {
        match lock(&self.failure).take() {
            Some(Failure { partition, messages, source }) => {
                Err(ProducerError::Delivery { partition, messages, source })
            }
            None => Ok(()),
        }
    }

    /// Sends finished batches to one partition's owner as one request, retrying connection
    /// failures as configured.
    async fn deliver(&self, partition: u32, batches: &[&[u8]]) -> Result<(), ClientError> {
        let (stream, topic) = (self.stream.as_str(), self.topic.as_str());
        let mut attempt = 0;
        loop {
            let outcome = match self.router.client_for(stream, topic, partition).await {
                Ok(client) => produce(&client, stream, topic, partition, batches).await,
                Err(error) => Err(error),
            };
            let error = match outcome {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            if attempt >= self.retry.retries || !self.may_retry(&error, partition).await {
                return Err(error);
            }
            attempt += 1;
            tracing::warn!(%stream, %topic, partition, attempt, %error, "produce failed; retrying");
            tokio::time::sleep(self.retry.interval).await;
        }
    }

    /// Whether a produce that failed with `error` may succeed if sent again: after a
    /// connection error, `ShuttingDown` or `TooManyInFlight`; or after `UnknownStream`,
    /// `UnknownTopic` or `UnknownPartition` when a fresh shard map still lists the partition (a
    /// stale map, or a shard still opening its partitions after a restart). Refusals such as
    /// `InvalidBatch` or `PermissionDenied` never are.
    async fn may_retry(&self, error: &ClientError, partition: u32) -> bool {
        if is_retryable(error) {
            return true;
        }
        if !matches!(
            error.status(),
            Some(Status::UnknownStream | Status::UnknownTopic | Status::UnknownPartition)
        ) {
            return false;
        }
        match self.router.refresh().await {
            Ok(()) => self.router.owner(&self.stream, &self.topic, partition).is_some(),
            Err(refresh_error) => is_retryable(&refresh_error),
        }
    }

    /// Direct mode: batches the messages per partition and sends every partition's batches
    /// at once, each partition's requests one after another.
    async fn send_direct(
        &self,
        messages: Vec<ProducerMessage>,
        routes: Vec<u32>,
    ) -> Result<(), ProducerError> {
        let mut slots: HashMap<u32, usize> = HashMap::new();
        let mut partitions: Vec<(u32, Vec<BatchBuilder>)> = Vec::new();
        let mut open: Vec<Option<BatchBuilder>> = Vec::new();
        let mut no_pool = Vec::new();
        for (message, partition) in messages.iter().zip(routes) {
            let slot = *slots.entry(partition).or_insert_with(|| {
                partitions.push((partition, Vec::new()));
                open.push(None);
                partitions.len() - 1
            });
            let sealed = &mut partitions[slot].1;
            append(&mut open[slot], message, self.limits, &mut no_pool, |batch| sealed.push(batch))
                .map_err(|error| ProducerError::InvalidMessage(error.to_string()))?;
        }
        for ((_, sealed), open) in partitions.iter_mut().zip(open) {
            sealed.extend(open.filter(|batch| !batch.is_empty()));
        }
        let sends = partitions.iter_mut().map(|(partition, batches)| self.deliver_all(*partition, batches));
        let mut failure: Option<Failure> = None;
        for (partition, messages, source) in
            futures::future::join_all(sends).await.into_iter().filter_map(Result::err)
        {
            tracing::error!(
                stream = %self.stream, topic = %self.topic, partition, messages, error = %source,
                "messages not delivered"
            );
            match failure.as_mut() {
                Some(first) => first.messages = first.messages.saturating_add(messages),
                None => failure = Some(Failure { partition, messages, source }),
            }
        }
        match failure {
            Some(Failure { partition, messages, source }) => {
                Err(ProducerError::Delivery { partition, messages, source })
            }
            None => Ok(()),
        }
    }

    /// Sends one partition's batches in requests of at most [`REQUEST_BATCHES_MAX`] batches and
    /// [`REQUEST_BYTES_MAX`] bytes, in order, stopping at the first failure (which counts the
    /// messages not delivered).
    async fn deliver_all(
        &self,
        partition: u32,
        batches: &mut [BatchBuilder],
    ) -> Result<(), (u32, u64, ClientError)> {
        let mut start = 0;
        while start < batches.len() {
            let end = start + request_len(batches[start..].iter().map(BatchBuilder::byte_len));
            let request = &mut batches[start..end];
            let outcome = match finished(request) {
                Ok(slices) => self.deliver(partition, &slices).await,
                Err(error) => Err(error),
            };
            if let Err(error) = outcome {
                let lost = batches[start..].iter().map(|batch| u64::from(batch.record_count())).sum();
                return Err((partition, lost, error));
            }
            start = end;
        }
        Ok(())
    }
}

/// One produce request to `partition` on `client`; checks the answer names that partition.
async fn produce(
    client: &Client,
    stream: &str,
    topic: &str,
    partition: u32,
    batches: &[&[u8]],
) -> Result<(), ClientError> {
    let response = client.produce(stream, topic, WirePartitioning::Partition(partition), batches).await?;
    if response.partition != partition {
        return Err(ClientError::Protocol(format!(
            "produce to partition {partition} answered for partition {}",
            response.partition
        )));
    }
    Ok(())
}

/// How many of the leading batches (given by size) go into one request: at least one, at most
/// [`REQUEST_BATCHES_MAX`], and no more than [`REQUEST_BYTES_MAX`] bytes unless alone.
fn request_len(sizes: impl Iterator<Item = usize>) -> usize {
    let mut count = 0;
    let mut bytes = 0_usize;
    for size in sizes.take(REQUEST_BATCHES_MAX) {
        bytes = bytes.saturating_add(size);
        if count > 0 && bytes > REQUEST_BYTES_MAX {
            break;
        }
        count += 1;
    }
    count
}

/// Finishes each batch in place (header and CRC, once) and lends out their bytes.
fn finished(batches: &mut [BatchBuilder]) -> Result<Vec<&[u8]>, ClientError> {
    let slices =
        batches.iter_mut().map(BatchBuilder::finish_in_place).collect::<Result<Vec<&[u8]>, BatchError>>()?;
    Ok(slices)
}

/// What the handle sends its background task.
enum Command {
    /// One routed message (no vectors for the common single send).
    One { partition: u32, message: ProducerMessage },
    /// Routed messages, `partitions[i]` for `messages[i]`.
    Many { partitions: Vec<u32>, messages: Vec<ProducerMessage> },
    /// Answer once everything queued before is acknowledged.
    Flush(oneshot::Sender<Result<(), ProducerError>>),
}

/// One partition's batches in the background task.
#[derive(Default)]
struct PartitionQueue {
    /// The batch being filled.
    open: Option<BatchBuilder>,
    /// When the open batch got its first message.
    opened_at: Option<Instant>,
    /// Full batches waiting to be sent, oldest first.
    sealed: VecDeque<BatchBuilder>,
    /// Whether a request for this partition is out (at most one, for order).
    in_flight: bool,
    /// Batches sealed so far.
    sealed_total: u64,
    /// Batches acknowledged or failed so far (they settle in the order they were sealed).
    settled_total: u64,
}

/// The outcome of one background request.
struct Delivered {
    partition: u32,
    batches: Vec<BatchBuilder>,
    messages: u64,
    result: Result<(), ClientError>,
}

/// A flush waiting for batches: it is answered once each listed partition has settled the
/// given number of batches.
struct FlushWaiter {
    targets: Vec<(u32, u64)>,
    reply: oneshot::Sender<Result<(), ProducerError>>,
}

type Delivery = Pin<Box<dyn Future<Output = Delivered> + Send>>;

/// The background task's state (lives on that task only).
struct Worker {
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    queues: Vec<PartitionQueue>,
    pool: Vec<BatchBuilder>,
    deliveries: FuturesUnordered<Delivery>,
    flushes: Vec<FlushWaiter>,
}

impl Worker {
    fn new(shared: Arc<Shared>, permits: Arc<Semaphore>) -> Worker {
        Worker {
            shared,
            permits,
            queues: Vec::new(),
            pool: Vec::new(),
            deliveries: FuturesUnordered::new(),
            flushes: Vec::new(),
        }
    }

    /// Runs until the handle is gone and everything it queued is settled.
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut open = true;
        loop {
            let deadline = self.next_deadline();
            let wake_at = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                command = commands.recv(), if open => match command {
                    Some(command) => {
                        self.handle(command);
                        for _ in 0..DRAIN_COMMANDS_MAX {
                            let Ok(command) = commands.try_recv() else { break };
                            self.handle(command);
                        }
                    }
                    None => open = false,
                },
                Some(delivered) = self.deliveries.next(), if !self.deliveries.is_empty() => {
                    self.settle(delivered);
                }
                () = tokio::time::sleep_until(wake_at.into()), if deadline.is_some() => {}
                else => {
                    // Unreachable: with the queue closed and nothing out, the check below
                    // has already ended the loop.
                    debug_assert!(false, "producer task with nothing to wait for");
                    tracing::error!(stream = %self.shared.stream, "producer task stopped with nothing to wait for");
                    return;
                }
            }
            if open {
                self.seal_lingered(Instant::now());
            } else {
                self.seal_all();
            }
            self.dispatch();
            self.answer_flushes();
            if !open && self.deliveries.is_empty() && self.queues.iter().all(|queue| queue.sealed.is_empty())
            {
                debug_assert!(self.flushes.is_empty());
                tracing::debug!(stream = %self.shared.stream, topic = %self.shared.topic, "producer task done");
                return;
            }
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::One { partition, message } => self.add(partition, &message),
            Command::Many { partitions, messages } => {
                for (partition, message) in partitions.into_iter().zip(&messages) {
                    self.add(partition, message);
                }
            }
            Command::Flush(reply) => {
                self.seal_all();
                let targets = self
                    .queues
                    .iter()
                    .enumerate()
                    .filter(|(_, queue)| queue.settled_total < queue.sealed_total)
                    .map(|(partition, queue)| (partition as u32, queue.sealed_total))
                    .collect();
                self.flushes.push(FlushWaiter { targets, reply });
            }
        }
    }

    /// Puts one routed message into its partition's open batch.
    fn add(&mut self, partition: u32, message: &ProducerMessage) {
        let index = partition as usize;
        if self.queues.len() <= index {
            self.queues.resize_with(index + 1, PartitionQueue::default);
        }
        let queue = &mut self.queues[index];
        let (sealed, sealed_total) = (&mut queue.sealed, &mut queue.sealed_total);
        let appended = append(&mut queue.open, message, self.shared.limits, &mut self.pool, |batch| {
            sealed.push_back(batch);
            *sealed_total += 1;
        });
        match appended {
            Ok(()) => {
                let first = queue.open.as_ref().is_some_and(|batch| batch.record_count() == 1);
                if first {
                    queue.opened_at = Some(Instant::now());
                }
            }
            Err(error) => {
                // `send` checked the limits, so this is not expected; report it all the same.
                self.permits.add_permits(1);
                self.shared.record_failure(partition, 1, ClientError::from(error));
            }
        }
    }

    /// When the oldest open batch's linger runs out.
    fn next_deadline(&self) -> Option<Instant> {
        self.queues
            .iter()
            .filter(|queue| queue.open.as_ref().is_some_and(|batch| !batch.is_empty()))
            .filter_map(|queue| queue.opened_at)
            .min()
            .and_then(|opened_at| opened_at.checked_add(self.shared.linger))
    }

    fn seal_lingered(&mut self, now: Instant) {
        let linger = self.shared.linger;
        for queue in &mut self.queues {
            if queue.opened_at.is_some_and(|opened_at| now.saturating_duration_since(opened_at) >= linger) {
                seal(queue);
            }
        }
    }

    fn seal_all(&mut self) {
        self.queues.iter_mut().for_each(seal);
    }

    /// Starts a request for every partition that has sealed batches and none out.
    fn dispatch(&mut self) {
        for (index, queue) in self.queues.iter_mut().enumerate() {
            if queue.in_flight || queue.sealed.is_empty() {
                continue;
            }
            let count = request_len(queue.sealed.iter().map(BatchBuilder::byte_len));
            let mut batches: Vec<BatchBuilder> = queue.sealed.drain(..count).collect();
            let messages = batches.iter().map(|batch| u64::from(batch.record_count())).sum();
            queue.in_flight = true;
            let shared = self.shared.clone();
            let partition = index as u32;
            self.deliveries.push(Box::pin(async move {
                let result = match finished(&mut batches) {
                    Ok(slices) => shared.deliver(partition, &slices).await,
                    Err(error) => Err(error),
                };
                Delivered { partition, batches, messages, result }
            }));
        }
    }

    /// Books a finished request: frees its messages' queue room, keeps its failure, and
    /// recycles its buffers.
    fn settle(&mut self, delivered: Delivered) {
        let Delivered { partition, batches, messages, result } = delivered;
        let queue = &mut self.queues[partition as usize];
        debug_assert!(queue.in_flight);
        queue.in_flight = false;
        queue.settled_total += batches.len() as u64;
        debug_assert!(queue.settled_total <= queue.sealed_total);
        self.permits.add_permits(usize::try_from(messages).unwrap_or(usize::MAX));
        if let Err(error) = result {
            self.shared.record_failure(partition, messages, error);
        }
        for mut batch in batches {
            if self.pool.len() >= BUILDER_POOL_MAX {
                break;
            }
            batch.reset(0);
            self.pool.push(batch);
        }
    }

    /// Answers the flushes whose batches have all settled.
    fn answer_flushes(&mut self) {
        let queues = &self.queues;
        let (done, waiting): (Vec<FlushWaiter>, Vec<FlushWaiter>) =
            std::mem::take(&mut self.flushes).into_iter().partition(|waiter| {
                waiter
                    .targets
                    .iter()
                    .all(|(partition, target)| queues[*partition as usize].settled_total >= *target)
            });
        self.flushes = waiting;
        for waiter in done {
            let _ = waiter.reply.send(self.shared.take_failure());
        }
    }
}

impl Drop for Worker {
    /// Closes the queue's permits when the task ends, normally or by a panic, so a `send`
    /// waiting for room gets [`ProducerError::Closed`] instead of waiting forever.
    fn drop(&mut self) {
        self.permits.close();
    }
}

/// Moves a partition's open batch, if it holds anything, to its sealed list.
fn seal(queue: &mut PartitionQueue) {
    if let Some(batch) = queue.open.take_if(|batch| !batch.is_empty()) {
        queue.sealed.push_back(batch);
        queue.sealed_total += 1;
    }
    queue.opened_at = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::validate;

    #[test]
    fn key_hash_is_the_servers() {
        for key in [&b""[..], b"a", b"user-7", b"\xff\x00\x10 some longer key"] {
            assert_eq!(key_hash(key), crate::server::data::key_hash(key));
        }
        assert_eq!(key_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(key_hash(b"a"), 0xaf63_dc4c_8601_ec8c, "the published FNV-1a 64 test vector");
        assert!((0..1000).all(|i| key_partition(format!("k{i}").as_bytes(), 7) < 7));
    }

    #[test]
    fn record_bytes_matches_the_builder() {
        let messages = [
            ProducerMessage::from("plain"),
            ProducerMessage::keyed("key", "payload").with_filter_value("f").with_header("h", "value"),
            ProducerMessage::new(vec![0_u8; 1000]).with_header("", "").with_header("x", vec![1_u8; 70]),
        ];
        let mut builder = BatchBuilder::new(0, 0);
        for message in &messages {
            let before = builder.byte_len();
            push_message(&mut builder, message).expect("push");
            assert_eq!(builder.byte_len() - before, record_bytes(message));
            check_message(0, message).expect("within the limits");
        }
        let bytes = builder.finish().expect("finish");
        let batch = validate(&bytes).expect("valid");
        let records: Vec<_> = batch.records().collect();
        assert_eq!(records[1].key, Some(&b"key"[..]));
        assert_eq!(records[1].headers().collect::<Vec<_>>(), [(&b"h"[..], &b"value"[..])]);
        assert_eq!(records[2].payload.len(), 1000);
    }

    #[test]
    fn messages_over_a_limit_are_refused() {
        let key = ProducerMessage::keyed(vec![0_u8; KEY_BYTES_MAX + 1], "x");
        assert!(
            matches!(check_message(3, &key), Err(ProducerError::InvalidMessage(m)) if m.contains("message 3"))
        );
        let mut headers = ProducerMessage::from("x");
        headers.headers = vec![(Bytes::new(), Bytes::new()); HEADERS_PER_RECORD_MAX + 1];
        assert!(check_message(0, &headers).is_err());
        assert!(push_message(&mut BatchBuilder::new(0, 0), &headers).is_err());
        let huge = ProducerMessage::new(vec![0_u8; BATCH_BYTES_MAX]);
        assert!(check_message(0, &huge).is_err());
    }

    #[test]
    fn append_seals_by_count_and_bytes() {
        let limits = Limits { batch_size: 3, batch_bytes: 400 };
        let mut open = None;
        let mut sealed = Vec::new();
        let mut pool = Vec::new();
        for i in 0..7 {
            let message = ProducerMessage::from(format!("m{i}"));
            append(&mut open, &message, limits, &mut pool, |batch| sealed.push(batch)).expect("append");
        }
        assert_eq!(sealed.iter().map(BatchBuilder::record_count).collect::<Vec<_>>(), [3, 3]);
        assert_eq!(open.as_ref().map(BatchBuilder::record_count), Some(1));
        // 150-byte payloads: two records (2 × 170) plus the header exceed 400 bytes.
        let mut open = None;
        let mut sealed = Vec::new();
        for _ in 0..5 {
            let message = ProducerMessage::new(vec![7_u8; 150]);
            append(&mut open, &message, limits, &mut pool, |batch| sealed.push(batch)).expect("append");
        }
        assert_eq!(sealed.len(), 4);
        assert!(sealed.iter().all(|batch| batch.record_count() == 1 && batch.byte_len() <= 400));
        // A message larger than batch_bytes still goes, alone.
        let mut open = None;
        let big = ProducerMessage::new(vec![1_u8; 1000]);
        append(&mut open, &big, limits, &mut pool, |_| {}).expect("a lone large message");
        assert_eq!(open.as_ref().map(BatchBuilder::record_count), Some(1));
    }

    #[test]
    fn requests_are_bounded_in_batches_and_bytes() {
        assert_eq!(request_len([10; 3].into_iter()), 3);
        assert_eq!(request_len([10; 500].into_iter()), REQUEST_BATCHES_MAX);
        assert_eq!(request_len([REQUEST_BYTES_MAX + 1, 10].into_iter()), 1, "a lone large batch still goes");
        assert_eq!(request_len([REQUEST_BYTES_MAX / 2, REQUEST_BYTES_MAX / 2, 1].into_iter()), 2);
        assert_eq!(request_len(std::iter::empty()), 0);
    }

    #[test]
    fn conversions_share_or_copy_the_payload() {
        assert_eq!(ProducerMessage::from("a").payload, Bytes::from_static(b"a"));
        assert_eq!(ProducerMessage::from(String::from("b")).payload, Bytes::from_static(b"b"));
        assert_eq!(ProducerMessage::from(vec![b'c']).payload, Bytes::from_static(b"c"));
        assert_eq!(ProducerMessage::from(&b"d"[..]).payload, Bytes::from_static(b"d"));
        let message = ProducerMessage::keyed("k", "v").with_partition(2);
        assert_eq!((message.key.as_deref(), message.partition), (Some(&b"k"[..]), Some(2)));
    }
}
