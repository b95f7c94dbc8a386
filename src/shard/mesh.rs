//! The cross-core mesh: one bounded flume channel into every shard, and the messages that travel
//! on it.
//!
//! Every shard holds a [`Mesh`] (senders to all shards, its own receiver). Messages are `Send`:
//! requests for a partition owned elsewhere travel with their frame buffer moved, never copied or
//! re-encoded, and carry a oneshot sender for the reply. Invariant: every message that carries a
//! reply sender is answered exactly once (dropping the sender reads as "shard gone" on the other
//! side); the channels are bounded ([`MESH_QUEUE_DEPTH`]) so a flooded shard pushes back.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::oneshot;

use super::error::{BrokerError, BrokerResult};
use super::groups::{Assignment, GroupKey, GroupSnapshot};
use super::leases::{Holder, LeaseInfo, TopicKey};
use super::producers::ProducerState;
use crate::metadata::catalog::{Catalog, MetadataOp};
use crate::protocol::filter::Filter;
use crate::protocol::messages::{
    AccessMode, BatchAck, OffsetInfo, PartitionStats, PollStrategy, PolledPartition,
};
use crate::server::frame_pool::FrameBuf;

/// Messages queued into one shard before senders wait.
pub const MESH_QUEUE_DEPTH: usize = 1024;

/// Names one partition: ids, not names, so a recreated stream never reaches old data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionKey {
    /// Stream id.
    pub stream_id: u32,
    /// Topic id.
    pub topic_id: u32,
    /// Partition id.
    pub partition: u32,
}

/// A produce request travelling to the partition's owner with its frame buffer.
pub struct ProduceJob {
    /// Target partition.
    pub key: PartitionKey,
    /// The whole request frame as read from the socket (moved, not copied).
    pub frame: FrameBuf,
    /// Where the batches are inside `frame`.
    pub payload: Range<usize>,
    /// Batches in the payload.
    pub batch_count: u32,
    /// Address of the payload when the frame was read, to prove on arrival that the bytes were
    /// not copied on the way.
    pub payload_address: usize,
    /// Where the acknowledgements go.
    pub reply: oneshot::Sender<BrokerResult<Vec<BatchAck>>>,
}

/// What a poll of one partition asks for.
#[derive(Debug, Clone)]
pub struct PollSpec {
    /// Where to start.
    pub strategy: PollStrategy,
    /// Offset-store key of the consumer (`c:<name>` or `g:<group>`), for `Next` and auto-commit.
    pub consumer_key: String,
    /// Stop adding batches once this many messages are included.
    pub max_messages: u32,
    /// Stop adding batches past this many bytes (one batch at least).
    pub max_bytes: u32,
    /// Stop adding batches once this many are included (a subscription's credit; polls send
    /// `u32::MAX`).
    pub max_batches: u32,
    /// Wait this long for data when there is none.
    pub max_wait: Duration,
    /// Store `next_offset` as the consumer's offset after reading.
    pub auto_commit: bool,
    /// Skip batches whose header rules out every wanted filter value (none: read everything).
    pub filter: Option<Arc<Filter>>,
}

/// What a filtered poll skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilterTally {
    /// Whole batches skipped.
    pub batches: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Their records at or after the poll's start.
    pub records: u64,
}

impl FilterTally {
    /// Adds `other`.
    pub fn add(&mut self, other: FilterTally) {
        self.batches += other.batches;
        self.bytes += other.bytes;
        self.records += other.records;
    }
}

/// One partition's poll result: its marks and a copy of its batches.
#[derive(Debug, Clone)]
pub struct PollOutcome {
    /// Marks and payload size.
    pub partition: PolledPartition,
    /// Whole batches.
    pub bytes: Vec<u8>,
    /// What a filtered poll skipped.
    pub filtered: FilterTally,
}

/// Offset operations on a partition's owner.
#[derive(Debug, Clone)]
pub enum OffsetOp {
    /// Store this next offset.
    Store(u64),
    /// Read the stored offset.
    Get,
}

/// Consumer-group operations, answered by the controller shard.
#[derive(Debug, Clone)]
pub enum GroupOp {
    /// Join (creating the member); `partitions` is the topic's current count.
    Join {
        /// The group.
        key: GroupKey,
        /// Partitions of the topic.
        partitions: u32,
        /// Session timeout.
        session_timeout: Duration,
    },
    /// Leave.
    Leave {
        /// The group.
        key: GroupKey,
        /// Member id.
        member_id: u64,
    },
    /// Heartbeat; answers the current assignment.
    Heartbeat {
        /// The group.
        key: GroupKey,
        /// Member id.
        member_id: u64,
    },
    /// The member's current assignment (polls use it).
    Assignment {
        /// The group.
        key: GroupKey,
        /// Member id.
        member_id: u64,
    },
    /// Describe one group.
    Describe {
        /// The group.
        key: GroupKey,
    },
}

/// The controller's answer to a [`GroupOp`].
#[derive(Debug, Clone)]
pub enum GroupReply {
    /// A member's assignment.
    Assignment(Assignment),
    /// A group's state.
    Snapshot(GroupSnapshot),
    /// Done.
    Done,
}

/// Named-producer operations: on a partition's owner shard, or on a topic's coordinator
/// ([`super::leases::coordinator`]).
#[derive(Debug, Clone)]
pub enum ProducerOp {
    /// Owner: the stored state of producer `id` on `key`.
    State {
        /// The partition.
        key: PartitionKey,
        /// Producer id.
        id: u64,
    },
    /// Owner: record a declaration (durably); answers the last stored sequence.
    Declare {
        /// The partition.
        key: PartitionKey,
        /// Producer id.
        id: u64,
        /// Producer name.
        name: String,
        /// The new epoch.
        epoch: u32,
    },
    /// Owner: forget producer `id` on `key`.
    Delete {
        /// The partition.
        key: PartitionKey,
        /// Producer id.
        id: u64,
    },
    /// Coordinator: declare `name` on a topic for a session (lease, new epoch, sequences).
    Claim {
        /// The topic.
        topic: TopicKey,
        /// Its partition count.
        partitions: u32,
        /// Producer name.
        name: String,
        /// Shared or exclusive.
        access: AccessMode,
        /// The declaring session.
        holder: Holder,
    },
    /// Coordinator: keep a session's lease alive.
    Heartbeat {
        /// The topic.
        topic: TopicKey,
        /// Producer name.
        name: String,
        /// The session.
        session: u64,
    },
    /// Coordinator: a session is done with a producer.
    Release {
        /// The topic.
        topic: TopicKey,
        /// Producer name.
        name: String,
        /// The session.
        session: u64,
    },
    /// Coordinator: forget a name on every partition of a topic.
    Forget {
        /// The topic.
        topic: TopicKey,
        /// Its partition count.
        partitions: u32,
        /// Producer name.
        name: String,
        /// The asking session (its own lease does not block the deletion).
        session: u64,
    },
    /// Coordinator: a session closed; release its leases.
    SessionEnded {
        /// The session.
        session: u64,
    },
    /// Any shard: its partitions' producers and the leases it coordinates.
    List,
}

/// The answer to a [`ProducerOp`].
#[derive(Debug, Clone)]
pub enum ProducerReply {
    /// [`ProducerOp::State`].
    State(Option<ProducerState>),
    /// [`ProducerOp::Declare`]: the last stored sequence.
    Sequence(Option<u64>),
    /// [`ProducerOp::Claim`].
    Declared {
        /// Producer id.
        id: u64,
        /// The new epoch.
        epoch: u32,
        /// The last stored sequence per partition.
        sequences: Vec<Option<u64>>,
    },
    /// [`ProducerOp::Delete`] / [`ProducerOp::Forget`]: whether anything was forgotten.
    Deleted(bool),
    /// [`ProducerOp::List`].
    Listed {
        /// Producers of the shard's partitions.
        states: Vec<(PartitionKey, ProducerState)>,
        /// Leases the shard coordinates.
        leases: Vec<LeaseInfo>,
    },
    /// Done.
    Done,
}

/// A message to a shard.
pub enum ShardMessage {
    /// Append batches to an owned partition.
    Produce(ProduceJob),
    /// Read from an owned partition.
    Poll {
        /// The partition.
        key: PartitionKey,
        /// What to read.
        spec: PollSpec,
        /// Where the data goes.
        reply: oneshot::Sender<BrokerResult<PollOutcome>>,
    },
    /// Store or read a consumer offset of an owned partition.
    Offset {
        /// The partition.
        key: PartitionKey,
        /// `c:<name>` or `g:<group>`.
        consumer_key: String,
        /// What to do.
        op: OffsetOp,
        /// The answer.
        reply: oneshot::Sender<BrokerResult<OffsetInfo>>,
    },
    /// A durable-consumer or retention operation on an owned partition.
    Durable {
        /// The partition.
        key: PartitionKey,
        /// What to do.
        op: super::durable::ops::DurableOp,
        /// The answer (batches copied into one buffer).
        reply: oneshot::Sender<BrokerResult<super::durable::ops::SentReply>>,
    },
    /// Statistics of every owned partition.
    Stats {
        /// The answer.
        reply: oneshot::Sender<Vec<(PartitionKey, PartitionStats)>>,
    },
    /// Controller only: validate, persist and broadcast a metadata change.
    Commit {
        /// The change.
        op: MetadataOp,
        /// The catalog after it.
        reply: oneshot::Sender<BrokerResult<Arc<Catalog>>>,
    },
    /// Controller only: a consumer-group operation.
    Group {
        /// The operation.
        op: GroupOp,
        /// The answer.
        reply: oneshot::Sender<BrokerResult<GroupReply>>,
    },
    /// A named-producer operation.
    Producer {
        /// The operation.
        op: ProducerOp,
        /// The answer.
        reply: oneshot::Sender<BrokerResult<ProducerReply>>,
    },
    /// To a topic's coordinator: a single-active membership change (answered once recorded).
    Sac {
        /// The change.
        op: super::sac::SacOp,
        /// The answer.
        reply: oneshot::Sender<BrokerResult<()>>,
    },
    /// To a member's connection shard: activate or deactivate its subscription on a partition
    /// (answered once its client answered).
    SacMember {
        /// The change.
        update: super::sac::MemberUpdate,
        /// The answer.
        reply: oneshot::Sender<BrokerResult<()>>,
    },
    /// To a Kafka group's coordinator shard: a group request of the Kafka listener (JoinGroup,
    /// SyncGroup, Heartbeat, LeaveGroup, OffsetCommit or OffsetFetch) from a connection on
    /// another shard, answered with its response.
    KafkaGroup {
        /// The request's version.
        version: i16,
        /// The user the connection runs as.
        user: String,
        /// The decoded request.
        request: Box<kafka_protocol::messages::RequestKind>,
        /// The answer.
        reply: oneshot::Sender<BrokerResult<kafka_protocol::messages::ResponseKind>>,
    },
    /// From the controller: a new catalog; open and close partitions to match, then ack.
    Catalog {
        /// The catalog.
        catalog: Arc<Catalog>,
        /// Sent once this shard serves the new catalog.
        ack: oneshot::Sender<()>,
    },
    /// Stop serving, close every partition (flush, fsync), then ack.
    Shutdown {
        /// Sent once closed.
        ack: oneshot::Sender<()>,
    },
}

/// The senders into every shard, and this shard's receiver.
#[derive(Clone)]
pub struct Mesh {
    senders: Vec<flume::Sender<ShardMessage>>,
}

/// Creates the channels of an `n`-shard mesh: the senders (cloned into every shard) and one
/// receiver per shard.
pub fn mesh(n: usize) -> (Mesh, Vec<flume::Receiver<ShardMessage>>) {
    let (senders, receivers) = (0..n).map(|_| flume::bounded(MESH_QUEUE_DEPTH)).unzip();
    (Mesh { senders }, receivers)
}

impl Mesh {
    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.senders.len()
    }

    /// Sends `message` to `shard`, waiting while its queue is full.
    pub async fn send(&self, shard: u16, message: ShardMessage) -> BrokerResult<()> {
        let sender = self.senders.get(shard as usize).ok_or_else(|| BrokerError::shard_gone(shard))?;
        sender.send_async(message).await.map_err(|_| BrokerError::shard_gone(shard))
    }

    /// Sends a request built around a fresh reply channel and waits for the answer.
    pub async fn ask<T>(
        &self,
        shard: u16,
        build: impl FnOnce(oneshot::Sender<BrokerResult<T>>) -> ShardMessage,
    ) -> BrokerResult<T> {
        let (reply, answer) = oneshot::channel();
        self.send(shard, build(reply)).await?;
        answer.await.map_err(|_| BrokerError::shard_gone(shard))?
    }
}
