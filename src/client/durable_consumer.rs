//! Durable consumers in the shape of async-nats' JetStream pull consumers: bind or create a
//! [`DurableConsumer`], [`fetch`](DurableConsumer::fetch) a batch of [`Message`]s across the
//! topic's partitions, and acknowledge each one (`ack`, `double_ack`, `nak`, `term`,
//! `in_progress`) or many at once with an [`AckBatcher`] (one `Ack` request per partition).
//!
//! Built on the raw requests of [`super::durable`]; runs on the caller's tokio task and uses
//! the consumer's [`Client`] connection for fetches and acknowledgements alike.
//!
//! A fetch visits the partitions round robin, starting after the partition where the previous
//! fetch of this handle stopped, so no partition starves. Each visit asks for what is still
//! missing (`max_messages`, `max_bytes`). The first sweep never waits (`no_wait`); a fetch ends
//! once it holds `max_messages` messages, or `max_bytes` of payload, or every partition in a row
//! came back empty after something was collected. When a whole sweep found nothing and the fetch
//! may wait (`expires`, not `no_wait`), it keeps sweeping with waiting fetches: on a topic of one
//! partition one fetch waits the whole time; with more partitions each waits at most
//! [`FETCH_WAIT_SLICE`], so a message on any partition is seen within about one slice per
//! partition. The fetch is done when `messages()` returns; the stream only hands out what it
//! holds.
//!
//! Invariants: a fetch returns at most `max_messages` messages (each partition is asked for at
//! most what is still missing); a visit that fails ends the fetch with that error and leaves the
//! messages fetched before it unacknowledged (the server redelivers them after `ack_wait`); an
//! [`AckBatcher`] keeps at most [`ACK_BATCH_OFFSETS_MAX`] offsets and puts a partition's offsets
//! back when its request failed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::Stream;
use tokio::time::Instant;

use super::connection::Client;
use super::durable::FetchedMessage;
use super::error::ClientError;
use crate::protocol::durable::{
    AckKind, AckPolicy, AckRequest, AckResponse, DeliverPolicy, DurableConfig, DurableInfo, FetchRequest,
};
use crate::protocol::messages::Kind;

/// `max_messages` of a fetch unless set.
pub const FETCH_MESSAGES_DEFAULT: u32 = 100;
/// The most messages one fetch may ask for.
pub const FETCH_MESSAGES_MAX: u32 = 10_000;
/// `max_bytes` of a fetch unless set (payload bytes; the server sends whole batches).
pub const FETCH_BYTES_DEFAULT: u32 = 4 * 1024 * 1024;
/// `expires` of a fetch unless set.
pub const FETCH_EXPIRES_DEFAULT: Duration = Duration::from_secs(5);
/// The longest one waiting visit of a partition lasts when the topic has several.
pub const FETCH_WAIT_SLICE: Duration = Duration::from_millis(100);
/// The most offsets an [`AckBatcher`] holds before [`AckBatcher::add`] refuses more.
pub const ACK_BATCH_OFFSETS_MAX: usize = 64 * 1024;

const _: () = assert!(FETCH_MESSAGES_DEFAULT <= FETCH_MESSAGES_MAX && FETCH_MESSAGES_DEFAULT > 0);
const _: () = assert!(ACK_BATCH_OFFSETS_MAX > 0);

/// Chainable setters for [`DurableConfig`] (`DurableConfig::new("name").filter("a.>")…`).
pub trait DurableConfigExt: Sized {
    /// Adds a subject pattern to the filter.
    fn filter(self, pattern: impl Into<String>) -> Self;
    /// What the consumer acknowledges.
    fn ack_policy(self, policy: AckPolicy) -> Self;
    /// How long a delivery waits for its acknowledgement (rounded down to µs).
    fn ack_wait(self, wait: Duration) -> Self;
    /// Deliveries per message before it is given up.
    fn max_deliver(self, deliveries: u32) -> Self;
    /// Redelivery delays after the 1st, 2nd, … unacknowledged delivery; the last repeats.
    fn backoff(self, delays: Vec<Duration>) -> Self;
    /// Delivered and unacknowledged messages per partition before delivery stops.
    fn max_ack_pending(self, pending: u32) -> Self;
    /// Where the consumer starts.
    fn deliver(self, policy: DeliverPolicy) -> Self;
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

impl DurableConfigExt for DurableConfig {
    fn filter(mut self, pattern: impl Into<String>) -> Self {
        self.filter.push(pattern.into());
        self
    }
    fn ack_policy(mut self, policy: AckPolicy) -> Self {
        self.ack = policy;
        self
    }
    fn ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait_us = micros(wait);
        self
    }
    fn max_deliver(mut self, deliveries: u32) -> Self {
        self.max_deliver = Some(deliveries);
        self
    }
    fn backoff(mut self, delays: Vec<Duration>) -> Self {
        self.backoff_us = delays.into_iter().map(micros).collect();
        self
    }
    fn max_ack_pending(mut self, pending: u32) -> Self {
        self.max_ack_pending = pending;
        self
    }
    fn deliver(mut self, policy: DeliverPolicy) -> Self {
        self.deliver = policy;
        self
    }
}

/// Who acknowledges: the connection and the consumer's names, shared by its messages.
#[derive(Debug)]
struct Target {
    client: Client,
    stream: String,
    topic: String,
    consumer: String,
}

impl Target {
    async fn ack(
        &self,
        partition: u32,
        kind: AckKind,
        offsets: Vec<u64>,
        sync: bool,
        reason: String,
    ) -> Result<AckResponse, ClientError> {
        debug_assert!(!offsets.is_empty());
        let request = AckRequest {
            stream: self.stream.clone(),
            topic: self.topic.clone(),
            partition,
            consumer: self.consumer.clone(),
            kind,
            offsets,
            sync,
            reason,
        };
        Ok(self.client.request(Kind::Ack, &request, &[]).await?.0)
    }
}

/// A handle on one durable consumer of a topic. Cheap to clone; clones share the round-robin
/// position of [`fetch`](Self::fetch).
#[derive(Debug, Clone)]
pub struct DurableConsumer {
    target: Arc<Target>,
    config: DurableConfig,
    /// Partitions of the topic when the handle was made (or last refreshed by `info`).
    partitions: Arc<AtomicU32>,
    /// The partition the next fetch visits first.
    cursor: Arc<AtomicU32>,
}

impl Client {
    /// Binds to an existing durable consumer (`UnknownConsumer` if there is none).
    pub async fn durable_consumer(
        &self,
        stream: &str,
        topic: &str,
        name: &str,
    ) -> Result<DurableConsumer, ClientError> {
        let info = self.consumer_info(stream, topic, name).await?;
        let partitions = u32::try_from(info.partitions.len()).unwrap_or(u32::MAX);
        Ok(DurableConsumer::new(self, info.config, stream, topic, partitions))
    }

    /// Creates a durable consumer, or binds to an identical existing one; a consumer of that
    /// name with another configuration is refused by the server.
    pub async fn create_durable(
        &self,
        stream: &str,
        topic: &str,
        config: DurableConfig,
    ) -> Result<DurableConsumer, ClientError> {
        config
            .check()
            .map_err(|why| ClientError::InvalidRequest(format!("consumer `{}`: {why}", config.name)))?;
        let info = self.create_consumer(stream, topic, config, true).await?;
        let topic_info = self.get_topic(stream, topic).await?;
        let partitions = u32::try_from(topic_info.partitions.len()).unwrap_or(u32::MAX);
        Ok(DurableConsumer::new(self, info.config, stream, topic, partitions))
    }
}

impl DurableConsumer {
    fn new(client: &Client, config: DurableConfig, stream: &str, topic: &str, partitions: u32) -> Self {
        let target = Target {
            client: client.clone(),
            stream: stream.to_string(),
            topic: topic.to_string(),
            consumer: config.name.clone(),
        };
        DurableConsumer {
            target: Arc::new(target),
            config,
            partitions: Arc::new(AtomicU32::new(partitions)),
            cursor: Arc::new(AtomicU32::new(0)),
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.target.consumer
    }

    /// Its stream.
    pub fn stream(&self) -> &str {
        &self.target.stream
    }

    /// Its topic.
    pub fn topic(&self) -> &str {
        &self.target.topic
    }

    /// Its configuration, as the server had it when the handle was made.
    pub fn config(&self) -> &DurableConfig {
        &self.config
    }

    /// The partitions a fetch visits.
    pub fn partitions(&self) -> u32 {
        self.partitions.load(Ordering::Relaxed)
    }

    /// Its configuration and its state on every partition (also refreshes the partition count,
    /// for topics that grew).
    pub async fn info(&self) -> Result<DurableInfo, ClientError> {
        let target = &self.target;
        let info = target.client.consumer_info(&target.stream, &target.topic, &target.consumer).await?;
        if !info.partitions.is_empty() {
            let count = u32::try_from(info.partitions.len()).unwrap_or(u32::MAX);
            self.partitions.store(count, Ordering::Relaxed);
        }
        Ok(info)
    }

    /// A fetch to configure, then run with [`FetchBuilder::messages`].
    pub fn fetch(&self) -> FetchBuilder<'_> {
        FetchBuilder {
            consumer: self,
            max_messages: FETCH_MESSAGES_DEFAULT,
            max_bytes: FETCH_BYTES_DEFAULT,
            expires: FETCH_EXPIRES_DEFAULT,
            no_wait: false,
        }
    }

    /// An empty acknowledgement batcher on this consumer's connection.
    pub fn ack_batcher(&self) -> AckBatcher {
        AckBatcher { target: Arc::clone(&self.target), pending: BTreeMap::new(), count: 0, sync: false }
    }

    /// Acknowledges every delivered message of `partition` up to `offset` (ack policy `all`).
    pub async fn ack_all(&self, partition: u32, offset: u64) -> Result<AckResponse, ClientError> {
        self.target.ack(partition, AckKind::AckAll, vec![offset], false, String::new()).await
    }
}

/// A fetch being configured; see the module documentation for how it visits partitions.
#[derive(Debug)]
#[must_use = "a fetch does nothing until `messages()` is awaited"]
pub struct FetchBuilder<'a> {
    consumer: &'a DurableConsumer,
    max_messages: u32,
    max_bytes: u32,
    expires: Duration,
    no_wait: bool,
}

impl FetchBuilder<'_> {
    /// The most messages (1 to [`FETCH_MESSAGES_MAX`]; clamped).
    pub fn max_messages(mut self, count: u32) -> Self {
        self.max_messages = count.clamp(1, FETCH_MESSAGES_MAX);
        self
    }

    /// The most payload bytes (at least one message is returned when there is one).
    pub fn max_bytes(mut self, bytes: u32) -> Self {
        self.max_bytes = bytes.max(1);
        self
    }

    /// How long to wait when nothing is there yet.
    pub fn expires(mut self, wait: Duration) -> Self {
        self.expires = wait;
        self
    }

    /// Answer at once, even with nothing.
    pub fn no_wait(mut self) -> Self {
        self.no_wait = true;
        self
    }

    /// Runs the fetch and hands out its messages.
    pub async fn messages(self) -> Result<Messages, ClientError> {
        let consumer = self.consumer;
        let partitions = consumer.partitions().max(1);
        let deadline = Instant::now() + if self.no_wait { Duration::ZERO } else { self.expires };
        let mut collected: Vec<Message> = Vec::new();
        let mut bytes = 0_u64;
        let mut empty_in_row = 0_u32;
        let mut partition = consumer.cursor.load(Ordering::Relaxed) % partitions;
        loop {
            let missing = self.max_messages - collected.len() as u32;
            if missing == 0 || bytes >= u64::from(self.max_bytes) {
                break;
            }
            let swept = empty_in_row >= partitions;
            let now = Instant::now();
            if swept && (!collected.is_empty() || now >= deadline) {
                break;
            }
            // Wait only once a whole sweep found nothing.
            let mut wait = if swept { deadline - now } else { Duration::ZERO };
            if partitions > 1 {
                wait = wait.min(FETCH_WAIT_SLICE);
            }
            let request = FetchRequest {
                stream: consumer.target.stream.clone(),
                topic: consumer.target.topic.clone(),
                partition,
                consumer: consumer.target.consumer.clone(),
                max_messages: missing,
                max_bytes: (u64::from(self.max_bytes) - bytes) as u32,
                expires_us: micros(wait),
                no_wait: wait.is_zero(),
            };
            let fetched = consumer.target.client.fetch(&request).await?;
            if fetched.messages.len() > missing as usize {
                return Err(ClientError::Protocol(format!(
                    "asked partition {partition} for {missing} messages, received {}",
                    fetched.messages.len()
                )));
            }
            partition = (partition + 1) % partitions;
            consumer.cursor.store(partition, Ordering::Relaxed);
            if fetched.messages.is_empty() {
                empty_in_row = empty_in_row.saturating_add(1);
                continue;
            }
            empty_in_row = 0;
            for message in fetched.messages {
                bytes += message.payload.len() as u64;
                collected.push(Message {
                    message,
                    target: Arc::clone(&consumer.target),
                    num_pending: fetched.num_pending,
                    ack_pending: fetched.ack_pending,
                });
            }
        }
        debug_assert!(collected.len() <= self.max_messages as usize);
        Ok(Messages { messages: collected.into_iter() })
    }
}

/// The messages of one fetch, in the order they were fetched: a [`Stream`] of
/// `Result<Message, ClientError>` (as async-nats hands them out; every item is `Ok`, the fetch
/// having finished) and an [`Iterator`] of [`Message`].
#[derive(Debug)]
pub struct Messages {
    messages: std::vec::IntoIter<Message>,
}

impl Messages {
    /// Messages not handed out yet.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Whether every message was handed out (or the fetch found none).
    pub fn is_empty(&self) -> bool {
        self.messages.len() == 0
    }
}

impl Iterator for Messages {
    type Item = Message;
    fn next(&mut self) -> Option<Message> {
        self.messages.next()
    }
}

impl Stream for Messages {
    type Item = Result<Message, ClientError>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::task::Poll::Ready(self.messages.next().map(Ok))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.messages.size_hint()
    }
}

/// A fetched message with its delivery metadata; derefs to the [`FetchedMessage`].
#[derive(Debug, Clone)]
pub struct Message {
    message: FetchedMessage,
    target: Arc<Target>,
    num_pending: u64,
    ack_pending: u64,
}

/// Where a message came from and how often it was delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageInfo<'a> {
    /// Stream name.
    pub stream: &'a str,
    /// Topic name.
    pub topic: &'a str,
    /// Consumer name.
    pub consumer: &'a str,
    /// Partition.
    pub partition: u32,
    /// Partition offset.
    pub stream_sequence: u64,
    /// The consumer sequence of this delivery (per partition).
    pub consumer_sequence: u64,
    /// Deliveries so far, this one included.
    pub delivered: u32,
    /// Wanted messages of the partition left after its fetch.
    pub pending: u64,
    /// Delivered and unacknowledged on the partition after its fetch.
    pub ack_pending: u64,
    /// The producer's timestamp (µs).
    pub timestamp_us: u64,
}

impl std::ops::Deref for Message {
    type Target = FetchedMessage;
    fn deref(&self) -> &FetchedMessage {
        &self.message
    }
}

impl Message {
    /// The message without its acknowledgement handle.
    pub fn into_inner(self) -> FetchedMessage {
        self.message
    }

    /// Where it came from and how often it was delivered.
    pub fn info(&self) -> MessageInfo<'_> {
        MessageInfo {
            stream: &self.target.stream,
            topic: &self.target.topic,
            consumer: &self.target.consumer,
            partition: self.message.partition,
            stream_sequence: self.message.offset,
            consumer_sequence: self.message.consumer_sequence,
            delivered: self.message.deliveries,
            pending: self.num_pending,
            ack_pending: self.ack_pending,
            timestamp_us: self.message.timestamp_us,
        }
    }

    async fn send(&self, kind: AckKind, sync: bool, reason: String) -> Result<AckResponse, ClientError> {
        self.target.ack(self.message.partition, kind, vec![self.message.offset], sync, reason).await
    }

    /// Processed (with ack policy `all`, every earlier message of the partition too).
    pub async fn ack(&self) -> Result<AckResponse, ClientError> {
        self.send(AckKind::Ack, false, String::new()).await
    }

    /// Processed, answered once the acknowledgement is durable.
    pub async fn double_ack(&self) -> Result<AckResponse, ClientError> {
        self.send(AckKind::Ack, true, String::new()).await
    }

    /// Not processed: redeliver after `delay` (none: at once, or after the consumer's backoff).
    pub async fn nak(&self, delay: Option<Duration>) -> Result<AckResponse, ClientError> {
        self.send(AckKind::Nak(delay.map_or(0, micros)), false, String::new()).await
    }

    /// Never redeliver.
    pub async fn term(&self) -> Result<AckResponse, ClientError> {
        self.send(AckKind::Term, false, String::new()).await
    }

    /// Never redeliver, saying why (the server logs it).
    pub async fn term_with(&self, reason: impl Into<String>) -> Result<AckResponse, ClientError> {
        self.send(AckKind::Term, false, reason.into()).await
    }

    /// Still working: restart the acknowledgement timer.
    pub async fn in_progress(&self) -> Result<AckResponse, ClientError> {
        self.send(AckKind::InProgress, false, String::new()).await
    }
}

/// Acknowledgements collected per partition and sent as one `Ack` request per partition on
/// [`flush`](Self::flush) (the partitions' requests pipelined on the one connection).
#[derive(Debug)]
pub struct AckBatcher {
    target: Arc<Target>,
    /// Partition → offsets to acknowledge.
    pending: BTreeMap<u32, Vec<u64>>,
    count: usize,
    sync: bool,
}

impl AckBatcher {
    /// Flushes as double acks (answered once durable).
    pub fn double_ack(mut self, sync: bool) -> Self {
        self.sync = sync;
        self
    }

    /// Collects one message's acknowledgement. Refused when [`ACK_BATCH_OFFSETS_MAX`] offsets
    /// are waiting (flush first) or the message is another consumer's.
    pub fn add(&mut self, message: &Message) -> Result<(), ClientError> {
        let (theirs, ours) = (&message.target, &self.target);
        if (&theirs.stream, &theirs.topic, &theirs.consumer) != (&ours.stream, &ours.topic, &ours.consumer) {
            return Err(ClientError::InvalidRequest(format!(
                "a message of consumer `{}` of {}/{} in the ack batch of `{}`",
                theirs.consumer, theirs.stream, theirs.topic, ours.consumer
            )));
        }
        self.add_offset(message.partition, message.offset)
    }

    /// Collects an acknowledgement of `offset` on `partition`.
    pub fn add_offset(&mut self, partition: u32, offset: u64) -> Result<(), ClientError> {
        if self.count >= ACK_BATCH_OFFSETS_MAX {
            return Err(ClientError::InvalidRequest(format!(
                "{ACK_BATCH_OFFSETS_MAX} acknowledgements are waiting: flush first"
            )));
        }
        self.pending.entry(partition).or_default().push(offset);
        self.count += 1;
        Ok(())
    }

    /// Acknowledgements waiting.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether none are waiting.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Sends what was collected, one request per partition; answers the sums. On failure the
    /// failed partitions' offsets stay collected and the first error is returned.
    pub async fn flush(&mut self) -> Result<AckResponse, ClientError> {
        let batches = std::mem::take(&mut self.pending);
        self.count = 0;
        let target = &self.target;
        let sync = self.sync;
        let sends = batches.into_iter().map(|(partition, offsets)| async move {
            let answer = target.ack(partition, AckKind::Ack, offsets.clone(), sync, String::new()).await;
            (partition, offsets, answer)
        });
        let mut total = AckResponse { applied: 0, already: 0 };
        let mut first_error = None;
        for (partition, offsets, answer) in futures::future::join_all(sends).await {
            match answer {
                Ok(answer) => {
                    total.applied += answer.applied;
                    total.already += answer.already;
                }
                Err(error) => {
                    self.count += offsets.len();
                    self.pending.insert(partition, offsets);
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(total),
        }
    }

    /// Acknowledges every delivered message of `partition` up to `offset` (ack policy `all`),
    /// at once.
    pub async fn ack_all(&self, partition: u32, offset: u64) -> Result<AckResponse, ClientError> {
        self.target.ack(partition, AckKind::AckAll, vec![offset], self.sync, String::new()).await
    }
}
