//! Bodies of retention policies and durable consumers: the topic's [`TopicPolicy`], a durable
//! consumer's [`DurableConfig`], and the requests that create, describe, fetch from and
//! acknowledge on them (kinds 35 and 100–105 in [`super::messages::Kind`]).
//!
//! Pure types, no I/O; the server checks every field ([`DurableConfig::check`],
//! [`TopicPolicy::check`]) before anything is stored. Invariants: durations travel in µs;
//! offsets are partition offsets ("stream sequences"); a consumer sequence counts deliveries of
//! one durable consumer on one partition, redeliveries included, from 1.

use rkyv::{Archive, Deserialize, Serialize};

use super::subject::check_pattern;

/// How long a topic keeps its messages.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Retention {
    /// By age, size and count only.
    #[default]
    Limits,
    /// While some durable consumer whose filter matches has not acknowledged or terminated it.
    Interest,
    /// Until one consumer acknowledges it (consumers' filters may not overlap).
    WorkQueue,
}

/// What a full topic does with a new message.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Discard {
    /// Remove the oldest messages.
    #[default]
    Old,
    /// Refuse the produce with `TopicFull`.
    New,
}

/// A topic's retention settings, on top of its age and size limits.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct TopicPolicy {
    /// Limits, interest or work queue.
    pub retention: Retention,
    /// The most live messages per partition; none = no limit.
    pub max_messages: Option<u64>,
    /// What happens at a limit.
    pub discard: Discard,
    /// Records may carry a TTL header ([`TTL_HEADER`]); refused otherwise.
    pub allow_ttl: bool,
}

/// The record header naming a message's time to live: ASCII decimal milliseconds.
pub const TTL_HEADER: &str = "ringbroker-ttl-ms";

const _: () = assert!(TTL_HEADER.len() == super::batch::TTL_HEADER_KEY.len());

impl TopicPolicy {
    /// Refuses settings that cannot work.
    pub fn check(&self) -> Result<(), String> {
        if self.max_messages == Some(0) {
            return Err("max_messages must be at least 1".into());
        }
        Ok(())
    }

    /// Whether the partition keeps a per-message ledger (removal in the middle, TTLs).
    pub fn tracks_messages(&self) -> bool {
        self.retention != Retention::Limits || self.allow_ttl
    }
}

/// Where a new durable consumer starts.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeliverPolicy {
    /// The first live message.
    #[default]
    All,
    /// The last message.
    Last,
    /// Messages produced after the consumer was created.
    New,
    /// This offset.
    ByOffset(u64),
    /// The first message at or after this time (µs since the epoch).
    ByTime(u64),
}

/// What a consumer must acknowledge.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AckPolicy {
    /// Every message, one by one.
    #[default]
    Explicit,
    /// An acknowledgement covers every earlier message too.
    All,
    /// Nothing: a delivered message is done.
    None,
}

/// The default `ack_wait`: 30 s.
pub const ACK_WAIT_DEFAULT_US: u64 = 30_000_000;
/// The default `max_ack_pending`.
pub const MAX_ACK_PENDING_DEFAULT: u32 = 1000;
/// The largest `max_ack_pending` (bounds the ack state per consumer and partition).
pub const MAX_ACK_PENDING_MAX: u32 = 1 << 20;
/// The most backoff steps.
pub const BACKOFF_STEPS_MAX: usize = 64;
/// The most filter patterns of one consumer.
pub const CONSUMER_FILTERS_MAX: usize = 32;

/// A durable consumer's configuration.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct DurableConfig {
    /// Its name (unique in the topic).
    pub name: String,
    /// Subject patterns over filter values; empty = every message.
    pub filter: Vec<String>,
    /// Where it starts.
    pub deliver: DeliverPolicy,
    /// What it acknowledges.
    pub ack: AckPolicy,
    /// How long a delivered message waits for its acknowledgement before redelivery (µs).
    pub ack_wait_us: u64,
    /// Deliveries per message before it is given up; none = unlimited.
    pub max_deliver: Option<u32>,
    /// Redelivery delays after the 1st, 2nd, … unacknowledged delivery (µs); the last repeats.
    /// Replaces `ack_wait` for redelivery timing when set.
    pub backoff_us: Vec<u64>,
    /// Delivered and unacknowledged messages per partition before delivery stops.
    pub max_ack_pending: u32,
}

impl DurableConfig {
    /// Defaults for `name`: every message from the first, explicit acks, 30 s, unlimited
    /// deliveries, 1000 pending.
    pub fn new(name: impl Into<String>) -> Self {
        DurableConfig {
            name: name.into(),
            filter: Vec::new(),
            deliver: DeliverPolicy::All,
            ack: AckPolicy::Explicit,
            ack_wait_us: ACK_WAIT_DEFAULT_US,
            max_deliver: None,
            backoff_us: Vec::new(),
            max_ack_pending: MAX_ACK_PENDING_DEFAULT,
        }
    }

    /// Refuses settings that cannot work, saying which.
    pub fn check(&self) -> Result<(), String> {
        if self.filter.len() > CONSUMER_FILTERS_MAX {
            return Err(format!("{} filter patterns, at most {CONSUMER_FILTERS_MAX}", self.filter.len()));
        }
        for pattern in &self.filter {
            check_pattern(pattern).map_err(|e| e.to_string())?;
        }
        if self.ack_wait_us == 0 {
            return Err("ack_wait must be positive".into());
        }
        if self.max_deliver == Some(0) {
            return Err("max_deliver must be at least 1".into());
        }
        if self.backoff_us.len() > BACKOFF_STEPS_MAX || self.backoff_us.contains(&0) {
            return Err(format!("backoff takes 1 to {BACKOFF_STEPS_MAX} positive delays"));
        }
        if self.max_ack_pending == 0 || self.max_ack_pending > MAX_ACK_PENDING_MAX {
            return Err(format!("max_ack_pending must be 1 to {MAX_ACK_PENDING_MAX}"));
        }
        Ok(())
    }

    /// The wait before delivery number `deliveries + 1` of a message delivered `deliveries`
    /// times and not acknowledged (µs).
    pub fn redelivery_wait_us(&self, deliveries: u32) -> u64 {
        match self.backoff_us.len() {
            0 => self.ack_wait_us,
            steps => self.backoff_us[(deliveries.max(1) as usize - 1).min(steps - 1)],
        }
    }
}

/// [`Kind::ConsumerCreate`](super::messages::Kind::ConsumerCreate).
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct DurableCreate {
    /// Stream name.
    pub stream: String,
    /// Topic name.
    pub topic: String,
    /// The consumer.
    pub config: DurableConfig,
    /// Succeed when a consumer of that name and the same configuration exists.
    pub if_missing: bool,
}

/// Names one durable consumer.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct DurableRef {
    /// Stream name.
    pub stream: String,
    /// Topic name.
    pub topic: String,
    /// Consumer name.
    pub name: String,
}

/// A durable consumer's state on one partition.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct DurablePartitionState {
    /// Partition id.
    pub partition: u32,
    /// Every offset below it is done (acknowledged, terminated, given up or not wanted).
    pub ack_floor: u64,
    /// The next offset never delivered.
    pub delivered_to: u64,
    /// Deliveries so far (the last consumer sequence).
    pub consumer_sequence: u64,
    /// Delivered and not yet acknowledged.
    pub ack_pending: u64,
    /// Of those, waiting for redelivery (timed out or nak'ed).
    pub redeliver_pending: u64,
    /// Wanted messages not delivered yet (exact on interest and work-queue topics, an upper
    /// bound on a filtered consumer of a limits topic).
    pub num_pending: u64,
    /// Redeliveries so far.
    pub redelivered: u64,
    /// Messages given up after `max_deliver` deliveries.
    pub max_delivered: u64,
    /// Messages terminated.
    pub terminated: u64,
    /// Messages acknowledged.
    pub acked: u64,
}

/// Answer to `ConsumerCreate` and `ConsumerInfo`.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct DurableInfo {
    /// Stream name.
    pub stream: String,
    /// Topic name.
    pub topic: String,
    /// Its configuration.
    pub config: DurableConfig,
    /// Creation time (µs).
    pub created_us: u64,
    /// Per partition (empty in the answer to a create).
    pub partitions: Vec<DurablePartitionState>,
}

/// Answer to `ConsumerList`.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct DurableList {
    /// Every durable consumer of the topic, by name.
    pub consumers: Vec<DurableInfo>,
}

/// [`Kind::Fetch`](super::messages::Kind::Fetch): a pull of one durable consumer on one
/// partition.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// Stream name.
    pub stream: String,
    /// Topic name.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Consumer name.
    pub consumer: String,
    /// The most messages to deliver (at least 1).
    pub max_messages: u32,
    /// The most batch bytes to send (at least one batch is sent).
    pub max_bytes: u32,
    /// How long to wait for a first message (µs); ignored with `no_wait`.
    pub expires_us: u64,
    /// Answer at once, even with nothing.
    pub no_wait: bool,
}

/// One delivered message.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Its partition offset (stream sequence).
    pub offset: u64,
    /// The consumer sequence of this delivery.
    pub consumer_sequence: u64,
    /// Deliveries of this message so far, this one included.
    pub deliveries: u32,
}

/// Answer to `Fetch`: the messages, whose batches follow in the payload (whole stored batches,
/// in offset order, each at most once; records not listed in `messages` are not delivered).
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct FetchResponse {
    /// Partition.
    pub partition: u32,
    /// The delivered messages, in delivery order (redeliveries first).
    pub messages: Vec<Delivered>,
    /// Wanted messages left after these (see [`DurablePartitionState::num_pending`]).
    pub num_pending: u64,
    /// Delivered and unacknowledged after these.
    pub ack_pending: u64,
}

/// What an acknowledgement says.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckKind {
    /// Processed.
    Ack,
    /// Not processed: redeliver after the delay (µs; 0 = now, or the backoff when it has one).
    Nak(u64),
    /// Never redeliver; done.
    Term,
    /// Still working: restart the ack timer.
    InProgress,
    /// Processed, with every earlier delivered message (ack policy `all`).
    AckAll,
}

/// [`Kind::Ack`](super::messages::Kind::Ack): acknowledgements of one consumer on one
/// partition, batched.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct AckRequest {
    /// Stream name.
    pub stream: String,
    /// Topic name.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Consumer name.
    pub consumer: String,
    /// What they say.
    pub kind: AckKind,
    /// The offsets.
    pub offsets: Vec<u64>,
    /// Answer only once the change is durable ("double ack").
    pub sync: bool,
    /// Why (for `Term`; logged).
    pub reason: String,
}

/// Answer to `Ack`.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckResponse {
    /// Offsets whose state changed.
    pub applied: u32,
    /// Offsets already done (acknowledged before, or removed): nothing to do.
    pub already: u32,
}

/// [`Kind::TopicState`](super::messages::Kind::TopicState): live contents per partition.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionState {
    /// Partition id (`u32::MAX` for the total).
    pub partition: u32,
    /// Live messages.
    pub messages: u64,
    /// Their bytes (stored record bytes).
    pub bytes: u64,
    /// First live offset (`last_offset + 1` when empty).
    pub first_offset: u64,
    /// Last offset ever written (-1 before the first message): an empty partition has
    /// `first_offset == last_offset + 1`.
    pub last_offset: i64,
    /// Append time of the first live message (µs, 0 when empty).
    pub first_timestamp_us: u64,
    /// Append time of the last message written (µs, 0 before any).
    pub last_timestamp_us: u64,
    /// Offsets between first and last removed individually.
    pub num_deleted: u64,
    /// Durable consumers.
    pub consumer_count: u32,
}

/// Answer to `TopicState`.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct TopicState {
    /// Stream name.
    pub stream: String,
    /// Topic name.
    pub topic: String,
    /// Its policy.
    pub policy: TopicPolicy,
    /// Per partition.
    pub partitions: Vec<PartitionState>,
    /// Over all partitions: sums, the lowest first and highest last offset.
    pub total: PartitionState,
}
