//! The stream builder: one call that connects, creates the stream and topic when missing, and
//! returns a client, a producer and a consumer for them.
//!
//! Runs on the caller's tokio runtime. The producer and consumer share one [`ShardRouter`], so
//! they share the shard map and the direct connections to the shards. Invariant: the topic
//! exists (with at least [`StreamConfig::partitions`] partitions when this call created it) when
//! the builder returns.

use std::time::Duration;

use super::consumer::{AutoCommit, Consumer, PollStrategy};
use super::producer::{Partitioning, Producer, ProducerError};
use super::router::ShardRouter;
use super::{Client, ClientError, ConnectionString};

/// What the stream builder creates and how the producer and consumer behave.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// Stream name.
    pub stream: String,
    /// Topic name.
    pub topic: String,
    /// Partitions of the topic when it has to be created.
    pub partitions: u32,
    /// Consumer name (offsets are stored under it), used when `group` is `None`.
    pub consumer_name: String,
    /// Consume as a member of this consumer group instead of as a named consumer.
    pub group: Option<String>,
    /// Where the consumer starts.
    pub polling_strategy: PollStrategy,
    /// How the consumer stores its offsets.
    pub auto_commit: AutoCommit,
    /// How long the consumer waits when a poll finds nothing.
    pub polling_interval: Duration,
    /// Messages per producer batch and per consumer poll.
    pub batch_size: u32,
    /// How long the producer waits to fill a batch.
    pub linger: Duration,
    /// How the producer picks partitions.
    pub partitioning: Partitioning,
}

impl StreamConfig {
    /// Settings for `stream` / `topic` with defaults: 1 partition, consumer `"default"`, strategy
    /// `Next`, auto-commit after each poll, 100 ms polling interval, batches of 1000, 1 ms linger,
    /// balanced partitioning.
    pub fn new(stream: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            stream: stream.into(),
            topic: topic.into(),
            partitions: 1,
            consumer_name: "default".to_string(),
            group: None,
            polling_strategy: PollStrategy::Next,
            auto_commit: AutoCommit::AfterPoll,
            polling_interval: Duration::from_millis(100),
            batch_size: 1000,
            linger: Duration::from_millis(1),
            partitioning: Partitioning::Balanced,
        }
    }

    /// Sets the partition count used when the topic is created.
    pub fn partitions(mut self, partitions: u32) -> Self {
        self.partitions = partitions;
        self
    }

    /// Consumes as the named consumer.
    pub fn consumer_name(mut self, name: impl Into<String>) -> Self {
        self.consumer_name = name.into();
        self
    }

    /// Consumes as a member of `group`.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Sets where the consumer starts.
    pub fn polling_strategy(mut self, strategy: PollStrategy) -> Self {
        self.polling_strategy = strategy;
        self
    }

    /// Sets the auto-commit mode.
    pub fn auto_commit(mut self, mode: AutoCommit) -> Self {
        self.auto_commit = mode;
        self
    }

    /// Sets the consumer's polling interval.
    pub fn polling_interval(mut self, interval: Duration) -> Self {
        self.polling_interval = interval;
        self
    }

    /// Sets messages per batch and per poll.
    pub fn batch_size(mut self, messages: u32) -> Self {
        self.batch_size = messages;
        self
    }

    /// Sets the producer's linger.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Sets the producer's partitioning.
    pub fn partitioning(mut self, partitioning: Partitioning) -> Self {
        self.partitioning = partitioning;
        self
    }
}

/// Builds clients, producers and consumers for one stream and topic.
#[derive(Debug)]
pub struct RingStream;

impl RingStream {
    /// Connects to `url` (`ringbroker://user:pass@host:port`) and returns a client, a producer
    /// and a consumer for the configured stream and topic, creating them when missing.
    pub async fn with_client_from_url(
        url: &str,
        config: &StreamConfig,
    ) -> Result<(Client, Producer, Consumer), ProducerError> {
        let target: ConnectionString = url.parse()?;
        let client = Client::connect(&target).await?;
        let (producer, consumer) = Self::build(&client, config).await?;
        Ok((client, producer, consumer))
    }

    /// A producer and a consumer over an existing client, creating the stream and topic when
    /// missing.
    pub async fn build(
        client: &Client,
        config: &StreamConfig,
    ) -> Result<(Producer, Consumer), ProducerError> {
        let router = ShardRouter::new(client.clone()).await?;
        let producer = Self::producer(&router, config).await?;
        let consumer = Self::consumer(&router, config).await?;
        Ok((producer, consumer))
    }

    /// A producer for the configured stream and topic (created when missing).
    pub async fn producer(router: &ShardRouter, config: &StreamConfig) -> Result<Producer, ProducerError> {
        Producer::builder(router, config.stream.clone(), config.topic.clone())
            .create_if_missing(config.partitions)
            .batch_size(config.batch_size)
            .linger(config.linger)
            .partitioning(config.partitioning.clone())
            .build()
            .await
    }

    /// A consumer for the configured stream and topic (created when missing).
    pub async fn consumer(router: &ShardRouter, config: &StreamConfig) -> Result<Consumer, ClientError> {
        let builder = Consumer::builder(router, &config.stream, &config.topic)
            .create_if_missing(config.partitions)
            .polling_strategy(config.polling_strategy)
            .auto_commit(config.auto_commit)
            .polling_interval(config.polling_interval)
            .batch_size(config.batch_size);
        let builder = match &config.group {
            Some(group) => builder.group(group.clone()),
            None => builder.consumer_name(config.consumer_name.clone()),
        };
        builder.build().await
    }
}
