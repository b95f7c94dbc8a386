//! [`ProducerBuilder`]: the producer's settings and [`build`](ProducerBuilder::build), which
//! prepares the router, the topic and, in background mode, the task.
//!
//! Runs on the caller's task. Invariants: every setting is clamped to its limits here, so the
//! producer never meets an out-of-range one; a named producer is declared (and its heartbeats
//! started) before `build` returns, so its first batch already carries its id and epoch.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};

use super::batching::{Limits, Stamp};
use super::confirm::{Confirmation, Confirmer};
use super::delivery::{RetryPolicy, Shared};
use super::named::{self, HeartbeatGuard};
use super::worker::Worker;
use super::{
    Mode, Partitioning, Producer, ProducerError, BATCH_BYTES_DEFAULT, BATCH_SIZE_DEFAULT, LINGER_DEFAULT,
    QUEUE_MESSAGES_DEFAULT, RETRIES_DEFAULT, RETRY_INTERVAL_DEFAULT,
};
use crate::client::error::ClientError;
use crate::client::router::{RouterSource, ShardRouter};
use crate::constants::{BATCH_BYTES_MAX, BATCH_RECORDS_MAX};
use crate::protocol::batch::{Compression, BATCH_BYTES_MIN};
use crate::protocol::messages::{AccessMode, Status, TopicConfig};

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
    name: Option<String>,
    access: Option<AccessMode>,
    compression: Compression,
    confirm: Confirmer,
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
            name: None,
            access: None,
            compression: Compression::None,
            confirm: Confirmer::default(),
        }
    }

    /// Makes this a named, idempotent producer: `build` declares `name` on the topic
    /// (`ProducerDeclare`: 1-255 bytes of `[A-Za-z0-9._-]`, unique per topic) and continues each
    /// partition's sequence after the last one the broker stored, so a producer restarted under
    /// the same name never stores a message twice, and retries (on by default) are safe: a
    /// retried batch the broker already stored is acknowledged as a duplicate. Declaring raises
    /// the name's epoch, which fences an older instance still running. Every batch goes to an
    /// explicit partition (routing stays client-side).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// How a named producer shares the topic (default [`AccessMode::Shared`]); requires a
    /// [`name`](Self::name).
    pub fn access_mode(mut self, access: AccessMode) -> Self {
        self.access = Some(access);
        self
    }

    /// Makes the named producer the topic's only one: `build` fails with `ProducerBusy` while
    /// another session holds it, and others fail while this one does (until
    /// [`shutdown`](Producer::shutdown), a lost connection, or the lease's session timeout).
    /// Requires a [`name`](Self::name).
    pub fn exclusive(self) -> Self {
        self.access_mode(AccessMode::Exclusive)
    }

    /// Compresses every batch's records with `compression` (default none); a batch that would
    /// not shrink goes uncompressed. Consumers inflate transparently.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Calls `handler` once per batch with what became of it (module `confirm`): its partition,
    /// offsets (or duplicate), message count, or the error. It runs on the producer's task and
    /// should return quickly.
    pub fn on_confirm(mut self, handler: impl Fn(Confirmation) + Send + Sync + 'static) -> Self {
        self.confirm = Confirmer::new(Some(Arc::new(handler)));
        self
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
    ///
    /// A named producer is declared on the router's base connection, which then holds its lease;
    /// a heartbeat task keeps the lease alive (every third of the session timeout) until the
    /// producer shuts down or is dropped.
    pub async fn build(self) -> Result<Producer, ProducerError> {
        if self.access.is_some() && self.name.is_none() {
            return Err(ProducerError::InvalidConfig(
                "an access mode (exclusive) needs a named producer: set .name(..)".into(),
            ));
        }
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
        let (named, first_sequences) = match &self.name {
            Some(name) => {
                let access = self.access.unwrap_or_default();
                let (named, sequences) =
                    named::declare(router.base(), &self.stream, &self.topic, name, access).await?;
                (Some(named), sequences)
            }
            None => (None, Vec::new()),
        };
        let stamp = Stamp {
            producer_id: named.as_ref().map_or(0, |named| named.producer_id),
            epoch: named.as_ref().map_or(0, |named| named.epoch),
            compression: self.compression,
        };
        let heartbeat_interval = named.as_ref().map(named::Named::heartbeat_interval);
        let background = self.background;
        let shared = Arc::new(Shared {
            router,
            stream: self.stream,
            topic: self.topic,
            limits: Limits { batch_size: self.batch_size, batch_bytes: self.batch_bytes, stamp },
            linger: self.linger,
            partitioning: self.partitioning,
            retry: self.retry,
            round_robin: AtomicU64::new(0),
            failure: Mutex::new(None),
            named,
            fenced: Mutex::new(None),
            confirm: self.confirm,
            direct_sequences: tokio::sync::Mutex::new(if background {
                Vec::new()
            } else {
                first_sequences.clone()
            }),
        });
        let heartbeat = heartbeat_interval.map(|interval| {
            HeartbeatGuard(tokio::spawn(named::heartbeats(Arc::downgrade(&shared), interval)))
        });
        let mode = if background {
            let permits = Arc::new(Semaphore::new(self.queue_messages.min(Semaphore::MAX_PERMITS)));
            let (commands, receiver) = mpsc::channel(self.queue_messages);
            let worker = Worker::new(shared.clone(), permits.clone(), first_sequences);
            let task = tokio::spawn(worker.run(receiver));
            Mode::Background { commands, permits, capacity: self.queue_messages, task }
        } else {
            Mode::Direct
        };
        Ok(Producer { shared, mode, heartbeat })
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
