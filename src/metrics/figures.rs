//! The figures a shard publishes every `--metrics-publish-interval`: per partition it owns
//! (messages, bytes, next offset, segments, consumer lag) and its storage gauges.
//!
//! Plain data: built on the owner shard from state only that core may touch (partitions, stored
//! offsets, durable consumers), then handed over whole through
//! [`ShardMetrics::publish`](super::ShardMetrics::publish); the endpoint thread only reads a
//! published value and never sees one being built. Invariant: `partitions` is sorted by
//! (stream, topic, partition) and holds each partition at most once.

/// What kind of consumer a lag belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConsumerType {
    /// A consumer group (its committed offset).
    Group,
    /// A durable consumer (its acknowledgement floor).
    Durable,
}

impl ConsumerType {
    /// The `consumer_type` label value.
    pub fn label(self) -> &'static str {
        match self {
            ConsumerType::Group => "group",
            ConsumerType::Durable => "durable",
        }
    }
}

/// One consumer's lag on one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerLag {
    /// Group or durable consumer.
    pub consumer_type: ConsumerType,
    /// Its name.
    pub consumer: String,
    /// Messages between its position (committed offset or ack floor) and the partition's next
    /// offset.
    pub lag_messages: u64,
}

/// One partition's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionFigures {
    /// Stream name.
    pub stream: String,
    /// Topic name.
    pub topic: String,
    /// Partition id.
    pub partition: u32,
    /// Live messages.
    pub messages: u64,
    /// Bytes of its segments on disk.
    pub bytes: u64,
    /// The offset the next message gets (readers see below it).
    pub next_offset: u64,
    /// Segments on disk, the active one included.
    pub segments: u64,
    /// Lag of each consumer group of the topic and each durable consumer of the partition.
    pub lags: Vec<ConsumerLag>,
}

/// Everything a shard publishes at once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardFigures {
    /// Per partition, sorted by (stream, topic, partition).
    pub partitions: Vec<PartitionFigures>,
    /// Bytes appended and acknowledged but not yet written (`--fsync never` write-behind), over
    /// the shard's partitions.
    pub write_behind_bytes: u64,
    /// Partitions whose log refuses writes after a failed write or fsync.
    pub poisoned_partitions: u64,
}
