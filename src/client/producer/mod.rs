//! [`Producer`]: the high-level way to write messages. It routes each message to a partition,
//! packs messages into batches per partition, sends each partition's batches straight to the
//! shard that owns it ([`ShardRouter`]), retries what a lost connection interrupted, confirms
//! every batch, and reports every failure.
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
//! In both modes [`Producer::send_batch`] sends the caller's messages as one batch per partition
//! and returns the acknowledgements, and [`Producer::send_wait`] sends one message and returns
//! its offset. [`ProducerBuilder::on_confirm`] registers a callback told about every batch
//! (stored, duplicate, or failed; module `confirm`), RabbitMQ-streams style.
//!
//! **Named producers** ([`ProducerBuilder::name`], module `named`): the producer declares its
//! name on the topic, gets an id and an epoch, and numbers its messages per partition after the
//! last sequence the broker stored, so retries (on by default) and restarts never store a
//! message twice. [`ProducerBuilder::exclusive`] makes it the topic's only producer. A newer
//! instance under the same name fences this one: its batches then fail and every later call
//! returns [`ProducerError::Fenced`]. Any producer may compress its batches
//! ([`ProducerBuilder::compression`]); consumers inflate them transparently.
//!
//! Runs on the caller's tokio runtime (the background task, and a named producer's heartbeat
//! task, are spawned on it). A producer is `Send + Sync`; share it behind an `Arc` to send from
//! many tasks.
//!
//! Invariants:
//! * **Order per partition.** A partition has at most one produce request in flight, and a
//!   retry repeats the same request before anything after it is sent, so the messages of one
//!   partition are appended in the order they were accepted (one sender; concurrent senders'
//!   calls interleave in some order).
//! * **Nothing is dropped silently.** A batch that still fails after its retries is logged and
//!   reported, once, to the next `send` or `flush` (a [`ProducerError::Delivery`] naming how many
//!   messages failed since the last report), or to the `send_batch` call it came from. A `send`
//!   that reports an earlier failure accepts none of its own messages.
//! * **Exactly once per named producer and partition; at least once otherwise.** A named
//!   producer's batch carries its id, epoch and a sequence range that starts after everything it
//!   sealed before on that partition, and a retry resends the identical bytes, so the broker
//!   stores each batch once (a retry of a stored batch is acknowledged as a duplicate, which
//!   counts as a success). An anonymous producer's retried request may have been written before
//!   the connection died, so after retries its message can be stored twice. Only connection
//!   errors, the transient `ShuttingDown` and `TooManyInFlight`, and an unknown partition that a
//!   fresh shard map still lists are retried; a refusal such as `InvalidBatch`,
//!   `PermissionDenied` or `ProducerFenced` fails at once.
//! * **Bounded.** Messages between acceptance and acknowledgement, batch sizes, batches per
//!   request and pooled batch buffers all have limits named below. Each batch is one buffer
//!   ([`BatchBuilder`](crate::protocol::batch::BatchBuilder)), which the background task reuses
//!   after the acknowledgement; pushing a message copies it into that buffer and allocates only
//!   when the buffer has to grow.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use ringbroker::client::{Client, Partitioning, Producer, ProducerMessage};
//! use ringbroker::protocol::batch::Compression;
//! let client = Client::connect_addr("127.0.0.1:7720", "ringbroker", "ringbroker").await?;
//! let producer = Producer::builder(&client, "orders", "created")
//!     .create_if_missing(4)
//!     .linger(Duration::from_millis(5))
//!     .partitioning(Partitioning::Balanced)
//!     .name("order-service")
//!     .compression(Compression::Lz4)
//!     .on_confirm(|confirmation| println!("{confirmation:?}"))
//!     .build()
//!     .await?;
//! producer.send_one("hello").await?;
//! producer.send(vec![ProducerMessage::keyed("user-7", "paid")]).await?;
//! let offset = producer.send_wait(ProducerMessage::keyed("user-7", "shipped")).await?;
//! println!("stored at {offset:?}");
//! producer.shutdown().await?;
//! # Ok(()) }
//! ```

mod batching;
mod builder;
mod confirm;
mod delivery;
mod direct;
mod error;
mod message;
mod named;
mod super_stream;
mod worker;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, Semaphore};

use self::delivery::Shared;
use self::message::check_message;
use self::named::HeartbeatGuard;
use self::worker::Command;
use super::router::{RouterSource, ShardRouter};
use crate::constants::{BATCH_BYTES_MAX, BATCH_RECORDS_MAX};
use crate::protocol::batch::BATCH_BYTES_MIN;
use crate::protocol::messages::AccessMode;

pub use self::builder::ProducerBuilder;
pub use self::confirm::{BatchReceipt, ConfirmHandler, Confirmation};
pub use self::error::ProducerError;
pub use self::message::ProducerMessage;
pub use self::named::HEARTBEAT_INTERVAL_MIN;
pub use self::super_stream::{
    Routing, RoutingKeyFn, SuperStreamProducer, SuperStreamProducerBuilder, ROUTE_CACHE_KEYS_MAX,
};

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

/// Writes messages to one topic, batching per partition and routing each batch to the
/// partition's owner shard. Built with [`Producer::builder`]; see the module docs for the two
/// modes and the guarantees.
pub struct Producer {
    shared: Arc<Shared>,
    mode: Mode,
    /// A named producer's heartbeat task, aborted when the producer goes.
    heartbeat: Option<HeartbeatGuard>,
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
    /// A builder for a producer on `stream`/`topic` over a [`Client`](super::Client) or a
    /// [`ShardRouter`].
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

    /// A named producer's name.
    pub fn name(&self) -> Option<&str> {
        self.shared.named.as_ref().map(|named| named.name.as_str())
    }

    /// A named producer's id, as the broker declared it.
    pub fn producer_id(&self) -> Option<u64> {
        self.shared.named.as_ref().map(|named| named.producer_id)
    }

    /// A named producer's epoch (each declaration of the name raises it).
    pub fn epoch(&self) -> Option<u32> {
        self.shared.named.as_ref().map(|named| named.epoch)
    }

    /// A named producer's access mode.
    pub fn access_mode(&self) -> Option<AccessMode> {
        self.shared.named.as_ref().map(|named| named.access)
    }

    /// Whether a newer instance of this named producer fenced it (every call then fails with
    /// [`ProducerError::Fenced`]).
    pub fn is_fenced(&self) -> bool {
        self.shared.is_fenced()
    }

    /// Sends one message; see [`send`](Self::send).
    pub async fn send_one(&self, message: impl Into<ProducerMessage>) -> Result<(), ProducerError> {
        let message = message.into();
        self.shared.take_failure()?;
        check_message(0, &message)?;
        let partitions = self.shared.router.partitions(&self.shared.stream, &self.shared.topic).await?;
        let partition = self.shared.route(&message, partitions)?;
        match &self.mode {
            Mode::Direct => {
                self.shared.send_direct(vec![message], vec![partition], self.shared.limits).await.map(drop)
            }
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
    /// ([`ProducerError::InvalidMessage`], none accepted); a fenced named producer
    /// ([`ProducerError::Fenced`], none accepted); in direct mode, this call's own delivery
    /// failures (partitions that succeeded keep their messages).
    pub async fn send(&self, messages: Vec<ProducerMessage>) -> Result<(), ProducerError> {
        self.shared.take_failure()?;
        if messages.is_empty() {
            return Ok(());
        }
        let routes = self.routes(&messages).await?;
        match &self.mode {
            Mode::Direct => self.shared.send_direct(messages, routes, self.shared.limits).await.map(drop),
            Mode::Background { commands, permits, capacity, .. } => {
                send_chunks(commands, permits, *capacity, messages, routes).await
            }
        }
    }

    /// Sends messages as one batch per partition (more only where a partition's share breaks
    /// the format's limits) and returns once every batch is confirmed: one receipt per batch,
    /// with where it landed. In background mode the batches follow whatever the producer holds
    /// for their partitions, and at most [`queue_capacity`](ProducerBuilder::queue_capacity)
    /// messages fit one call.
    ///
    /// Errors as [`send`](Self::send); a failure of these batches is reported here (not to a
    /// later call), as [`ProducerError::Delivery`] counting this call's failed messages, or as
    /// [`ProducerError::Fenced`]. Partitions that succeeded keep their messages.
    pub async fn send_batch(
        &self,
        messages: Vec<ProducerMessage>,
    ) -> Result<Vec<BatchReceipt>, ProducerError> {
        self.shared.take_failure()?;
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let routes = self.routes(&messages).await?;
        match &self.mode {
            Mode::Direct => self.shared.send_direct(messages, routes, self.shared.limits.widest()).await,
            Mode::Background { commands, permits, capacity, .. } => {
                if messages.len() > *capacity {
                    return Err(ProducerError::InvalidMessage(format!(
                        "send_batch of {} messages: at most the queue capacity, {capacity}",
                        messages.len()
                    )));
                }
                let answers = queue_batches(commands, permits, messages, routes).await?;
                self.collect_receipts(answers).await
            }
        }
    }

    /// Sends one message and returns its offset once the broker has confirmed it (`None` only
    /// for a named producer's retry of a message the partition stored before but whose offset
    /// it no longer remembers). See [`send_batch`](Self::send_batch).
    pub async fn send_wait(&self, message: impl Into<ProducerMessage>) -> Result<Option<u64>, ProducerError> {
        let receipts = self.send_batch(vec![message.into()]).await?;
        debug_assert_eq!(receipts.len(), 1);
        Ok(receipts.first().and_then(BatchReceipt::base_offset))
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

    /// Flushes, then stops the background task and, for a named producer, its heartbeats, and
    /// releases its lease (`ProducerClose`); everything accepted has been sent (or reported as
    /// failed) when this returns.
    pub async fn shutdown(self) -> Result<(), ProducerError> {
        let flushed = self.flush().await;
        let Producer { shared, mode, heartbeat } = self;
        let mut stopped = Ok(());
        if let Mode::Background { commands, task, .. } = mode {
            drop(commands);
            if task.await.is_err() {
                stopped = Err(ProducerError::Closed);
            }
        }
        drop(heartbeat);
        if let Some(named) = shared.named.as_ref().filter(|_| !shared.is_fenced()) {
            named::close(named, &shared.stream, &shared.topic).await;
        }
        stopped?;
        flushed?;
        shared.take_failure()
    }

    /// Checks the messages and routes each to its partition.
    async fn routes(&self, messages: &[ProducerMessage]) -> Result<Vec<u32>, ProducerError> {
        for (index, message) in messages.iter().enumerate() {
            check_message(index, message)?;
        }
        let partitions = self.shared.router.partitions(&self.shared.stream, &self.shared.topic).await?;
        messages.iter().map(|message| self.shared.route(message, partitions)).collect()
    }

    /// Waits for every partition's answer to a background `send_batch`.
    async fn collect_receipts(
        &self,
        answers: Vec<(u32, oneshot::Receiver<worker::BatchOutcome>)>,
    ) -> Result<Vec<BatchReceipt>, ProducerError> {
        let mut receipts = Vec::new();
        let mut failure: Option<(u32, u64, crate::client::ClientError)> = None;
        for (partition, answer) in answers {
            match answer.await.map_err(|_| ProducerError::Closed)? {
                Ok(partition_receipts) => receipts.extend(partition_receipts),
                Err((messages, source)) => match failure.as_mut() {
                    Some(first) => first.1 = first.1.saturating_add(messages),
                    None => failure = Some((partition, messages, source)),
                },
            }
        }
        match failure {
            Some((partition, messages, source)) => {
                Err(self.shared.delivery_error(partition, messages, source))
            }
            None => Ok(receipts),
        }
    }
}

impl fmt::Debug for Producer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("stream", &self.shared.stream)
            .field("topic", &self.shared.topic)
            .field("background", &self.is_background())
            .field("partitioning", &self.shared.partitioning)
            .field("name", &self.name())
            .field("epoch", &self.epoch())
            .field("compression", &self.shared.limits.stamp.compression)
            .finish()
    }
}

/// Queues a `send_batch` call's messages, one command per partition (in partition order), after
/// taking a permit for each message; the answers to wait for.
async fn queue_batches(
    commands: &mpsc::Sender<Command>,
    permits: &Semaphore,
    messages: Vec<ProducerMessage>,
    routes: Vec<u32>,
) -> Result<Vec<(u32, oneshot::Receiver<worker::BatchOutcome>)>, ProducerError> {
    debug_assert_eq!(messages.len(), routes.len());
    let mut per_partition: BTreeMap<u32, Vec<ProducerMessage>> = BTreeMap::new();
    for (message, partition) in messages.into_iter().zip(routes) {
        per_partition.entry(partition).or_default().push(message);
    }
    let total: usize = per_partition.values().map(Vec::len).sum();
    // The caller checked `total` against the queue capacity, which fits a u32.
    let count =
        u32::try_from(total).map_err(|_| ProducerError::InvalidMessage("too many messages".into()))?;
    permits.acquire_many(count).await.map_err(|_| ProducerError::Closed)?.forget();
    let mut answers = Vec::with_capacity(per_partition.len());
    let mut unsent = total;
    for (partition, messages) in per_partition {
        let (reply, answer) = oneshot::channel();
        let len = messages.len();
        if commands.send(Command::Batch { partition, messages, reply }).await.is_err() {
            permits.add_permits(unsent);
            return Err(ProducerError::Closed);
        }
        unsent -= len;
        answers.push((partition, answer));
    }
    Ok(answers)
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
