//! Request and response bodies (rkyv-archived), request kinds and status codes.
//!
//! Pure types, no I/O; used by the server on every shard and by the client. Every body that
//! arrives from the network is checked (rkyv's validating access) before use; message batches
//! never travel inside a body but in the frame's raw payload, so the bytes a producer sends are
//! the bytes appended and the bytes a consumer receives. `docs/protocol.md` lists every kind and
//! status code.
//!
//! Invariants: a kind's numeric value and a status code's value never change once released; new
//! ones are added, old ones retired, never reused.

use std::fmt;

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor::Error as RkyvError;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

pub use super::super_stream::{
    SuperStreamCreate, SuperStreamInfo, SuperStreamLayout, SuperStreamPartition, SuperStreamPartitions,
    SuperStreamRef, SuperStreamRoute, SuperStreamRouted, SuperStreamRouting,
};

/// Request kinds (the frame's `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Kind {
    /// Liveness check; the only request allowed before login. Body: [`Empty`] → [`PingResponse`].
    Ping = 1,
    /// Body: [`LoginRequest`] → [`LoginResponse`].
    Login = 2,
    /// Shard map and partition owners. [`Empty`] → [`MetadataResponse`].
    Metadata = 3,
    /// [`CreateUser`] → [`Empty`].
    UserCreate = 10,
    /// [`NameRef`] → [`Empty`].
    UserDelete = 11,
    /// [`Empty`] → [`UserList`].
    UserList = 12,
    /// [`SetPermissions`] → [`Empty`].
    UserSetPermissions = 13,
    /// [`CreateStream`] → [`StreamInfo`].
    StreamCreate = 20,
    /// [`NameRef`] → [`Empty`].
    StreamDelete = 21,
    /// [`Empty`] → [`StreamList`].
    StreamList = 22,
    /// [`NameRef`] → [`StreamInfo`].
    StreamGet = 23,
    /// [`CreateTopic`] → [`TopicInfo`].
    TopicCreate = 30,
    /// [`TopicRef`] → [`Empty`].
    TopicDelete = 31,
    /// [`NameRef`] (the stream) → [`TopicList`].
    TopicList = 32,
    /// [`TopicRef`] → [`TopicInfo`].
    TopicGet = 33,
    /// [`AddPartitions`] → [`TopicInfo`].
    PartitionsAdd = 34,
    /// [`TopicRef`] → [`TopicState`](super::durable::TopicState): live messages, bytes and
    /// offsets per partition.
    TopicState = 35,
    /// [`ProduceRequest`] + payload of whole batches → [`ProduceResponse`].
    Produce = 40,
    /// [`PollRequest`] → [`PollResponse`] + payload of whole batches.
    Poll = 41,
    /// [`StoreOffset`] → [`Empty`].
    OffsetStore = 42,
    /// [`GetOffset`] → [`OffsetInfo`].
    OffsetGet = 43,
    /// [`GroupRef`] → [`GroupInfo`].
    GroupCreate = 50,
    /// [`GroupRef`] → [`Empty`].
    GroupDelete = 51,
    /// [`JoinGroup`] → [`Membership`].
    GroupJoin = 52,
    /// [`MemberRef`] → [`Empty`].
    GroupLeave = 53,
    /// [`MemberRef`] → [`Membership`] (the current assignment).
    GroupHeartbeat = 54,
    /// [`TopicRef`] → [`GroupList`].
    GroupList = 55,
    /// [`GroupRef`] → [`GroupInfo`].
    GroupDescribe = 56,
    /// [`StatsRequest`] → [`StatsResponse`].
    Stats = 60,
    /// [`ProducerDeclare`] → [`ProducerDeclared`].
    ProducerDeclare = 70,
    /// [`ProducerRef`] → [`ProducerSequenceInfo`]: the last stored sequence on one partition.
    ProducerSequence = 71,
    /// [`ProducerRef`] (partition ignored) → [`Empty`]: forgets a name on every partition.
    ProducerDelete = 72,
    /// [`ProducerHeartbeat`] → [`Empty`]: keeps the session's producer leases alive.
    ProducerHeartbeat = 73,
    /// [`ProducerListRequest`] → [`ProducerList`].
    ProducerList = 74,
    /// [`ProducerClose`] → [`Empty`]: releases the session's lease on a topic.
    ProducerClose = 75,
    /// [`Subscribe`](super::subscriptions::Subscribe) → [`Empty`]: starts a push subscription.
    Subscribe = 80,
    /// [`Credit`](super::subscriptions::Credit) → no answer on success; an error frame (this
    /// kind, the request's correlation id) otherwise.
    Credit = 81,
    /// [`Unsubscribe`](super::subscriptions::Unsubscribe) → [`Empty`].
    Unsubscribe = 82,
    /// Server → client: batches of a subscription ([`Deliver`](super::subscriptions::Deliver)
    /// body, batches in the payload), correlation = the subscription id. A non-zero status ends
    /// the subscription, with an [`ErrorBody`] saying why.
    Deliver = 83,
    /// Server → client request ([`ConsumerUpdate`](super::subscriptions::ConsumerUpdate)): a
    /// single-active-consumer member becomes active or inactive. The client answers with this
    /// kind, the same correlation id and a
    /// [`ConsumerUpdateAnswer`](super::subscriptions::ConsumerUpdateAnswer).
    ConsumerUpdate = 84,
    /// [`SubscribeDurable`](super::subscriptions::SubscribeDurable) → [`Empty`]: starts push
    /// delivery for a durable consumer (credit counts messages).
    SubscribeDurable = 85,
    /// [`SuperStreamCreate`] → [`TopicInfo`]: creates a topic as a super stream.
    SuperStreamCreate = 90,
    /// [`SuperStreamRef`] → [`Empty`]: deletes a super stream (a plain topic is refused).
    SuperStreamDelete = 91,
    /// [`SuperStreamRoute`] → [`SuperStreamRouted`]: the partitions of a routing key.
    SuperStreamRoute = 92,
    /// [`SuperStreamRef`] → [`SuperStreamPartitions`]: the partitions and their binding keys.
    SuperStreamPartitions = 93,
    /// [`DurableCreate`](super::durable::DurableCreate) → [`DurableInfo`](super::durable::DurableInfo).
    ConsumerCreate = 100,
    /// [`DurableRef`](super::durable::DurableRef) → [`Empty`].
    ConsumerDelete = 101,
    /// [`DurableRef`](super::durable::DurableRef) → [`DurableInfo`](super::durable::DurableInfo)
    /// with its state per partition.
    ConsumerInfo = 102,
    /// [`TopicRef`] → [`DurableList`](super::durable::DurableList).
    ConsumerList = 103,
    /// [`FetchRequest`](super::durable::FetchRequest) →
    /// [`FetchResponse`](super::durable::FetchResponse) + payload of whole batches.
    Fetch = 104,
    /// [`AckRequest`](super::durable::AckRequest) → [`AckResponse`](super::durable::AckResponse).
    Ack = 105,
}

impl Kind {
    /// Every kind, for tables and tests.
    pub const ALL: [Kind; 51] = [
        Kind::Ping,
        Kind::Login,
        Kind::Metadata,
        Kind::UserCreate,
        Kind::UserDelete,
        Kind::UserList,
        Kind::UserSetPermissions,
        Kind::StreamCreate,
        Kind::StreamDelete,
        Kind::StreamList,
        Kind::StreamGet,
        Kind::TopicCreate,
        Kind::TopicDelete,
        Kind::TopicList,
        Kind::TopicGet,
        Kind::PartitionsAdd,
        Kind::TopicState,
        Kind::Produce,
        Kind::Poll,
        Kind::OffsetStore,
        Kind::OffsetGet,
        Kind::GroupCreate,
        Kind::GroupDelete,
        Kind::GroupJoin,
        Kind::GroupLeave,
        Kind::GroupHeartbeat,
        Kind::GroupList,
        Kind::GroupDescribe,
        Kind::Stats,
        Kind::ProducerDeclare,
        Kind::ProducerSequence,
        Kind::ProducerDelete,
        Kind::ProducerHeartbeat,
        Kind::ProducerList,
        Kind::ProducerClose,
        Kind::Subscribe,
        Kind::Credit,
        Kind::Unsubscribe,
        Kind::Deliver,
        Kind::ConsumerUpdate,
        Kind::SubscribeDurable,
        Kind::SuperStreamCreate,
        Kind::SuperStreamDelete,
        Kind::SuperStreamRoute,
        Kind::SuperStreamPartitions,
        Kind::ConsumerCreate,
        Kind::ConsumerDelete,
        Kind::ConsumerInfo,
        Kind::ConsumerList,
        Kind::Fetch,
        Kind::Ack,
    ];

    /// The kind with this wire value.
    pub fn from_u16(value: u16) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| *k as u16 == value)
    }
}

/// Response status codes (the frame's `status`). 0 is success; an error response's body is an
/// [`ErrorBody`] with a human-readable message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Status {
    /// Success.
    Ok = 0,
    /// The frame header was refused (bad CRC, version, lengths); the connection is closed.
    BadFrame = 1,
    /// The kind is not known to this server.
    UnknownKind = 2,
    /// The frame exceeds `--max-frame-bytes`; the connection is closed.
    FrameTooLarge = 3,
    /// The body failed validation or does not match the kind.
    MalformedBody = 4,
    /// Login first.
    Unauthenticated = 10,
    /// Wrong user name or password.
    InvalidCredentials = 11,
    /// The user lacks the right for this stream or operation.
    PermissionDenied = 12,
    /// Too many failed logins; wait before trying again.
    LoginThrottled = 13,
    /// No stream by that name.
    UnknownStream = 20,
    /// No topic by that name in the stream.
    UnknownTopic = 21,
    /// No partition with that id in the topic.
    UnknownPartition = 22,
    /// No user by that name.
    UnknownUser = 23,
    /// No consumer group by that name.
    UnknownGroup = 24,
    /// The member id is not (or no longer) in the group.
    UnknownMember = 25,
    /// A resource by that name exists already.
    AlreadyExists = 30,
    /// A name is empty, too long, or uses characters outside `[A-Za-z0-9._-]`.
    InvalidName = 31,
    /// An argument is out of range or inconsistent.
    InvalidArgument = 32,
    /// A message batch failed validation (magic, length, CRC, records).
    InvalidBatch = 40,
    /// The offset is below the partition's first offset.
    OffsetOutOfRange = 41,
    /// The partition could not write (the append was not stored).
    StorageFailed = 50,
    /// The partition is poisoned after a failed fsync and refuses writes.
    PartitionPoisoned = 51,
    /// The disk is full.
    OutOfSpace = 52,
    /// The connection has too many requests in flight.
    TooManyInFlight = 60,
    /// The server has too many connections.
    TooManyConnections = 61,
    /// The server is shutting down.
    ShuttingDown = 62,
    /// A batch of a named producer came from an epoch older than the name's current one: a newer
    /// instance declared the same name. The batch was not written.
    ProducerFenced = 70,
    /// Another producer holds the topic exclusively, or an exclusive declaration met other
    /// producers.
    ProducerBusy = 71,
    /// The producer id or name is not known on this topic (never declared, deleted or expired).
    UnknownProducer = 72,
    /// A named producer's batch whose sequences straddle the last stored sequence (its first is at
    /// or below it, its last above): neither all new nor all duplicate, so it is refused whole.
    SequenceStraddle = 73,
    /// No subscription with that id on this connection.
    UnknownSubscription = 80,
    /// The connection already has a subscription with that id.
    SubscriptionExists = 81,
    /// A credit would take the subscription past `SUBSCRIPTION_CREDIT_MAX`.
    CreditOverflow = 82,
    /// The connection holds `--max-subscriptions` subscriptions already.
    TooManySubscriptions = 83,
    /// The topic exists but is not a super stream.
    NotASuperStream = 90,
    /// No partition of the super stream is bound to the routing key.
    NoRoute = 91,
    /// A poll's filter has too many values or a value that is too long
    /// ([`crate::constants::FILTER_VALUES_MAX`], [`crate::constants::FILTER_VALUE_BYTES_MAX`]).
    InvalidFilter = 95,
    /// No durable consumer of that name on the topic.
    UnknownConsumer = 100,
    /// A work-queue topic refuses a consumer whose filter overlaps another consumer's.
    FilterOverlap = 101,
    /// An acknowledgement names an offset that was never delivered to the consumer.
    NotDelivered = 102,
    /// The topic is at a limit and discards new messages: nothing of the request was written.
    TopicFull = 103,
    /// A record carries a TTL header and the topic does not allow TTLs.
    TtlNotAllowed = 104,
    /// An unexpected server error.
    Internal = 99,
}

impl Status {
    /// Every status, for tables and tests.
    pub const ALL: [Status; 43] = [
        Status::Ok,
        Status::BadFrame,
        Status::UnknownKind,
        Status::FrameTooLarge,
        Status::MalformedBody,
        Status::Unauthenticated,
        Status::InvalidCredentials,
        Status::PermissionDenied,
        Status::LoginThrottled,
        Status::UnknownStream,
        Status::UnknownTopic,
        Status::UnknownPartition,
        Status::UnknownUser,
        Status::UnknownGroup,
        Status::UnknownMember,
        Status::AlreadyExists,
        Status::InvalidName,
        Status::InvalidArgument,
        Status::InvalidBatch,
        Status::OffsetOutOfRange,
        Status::StorageFailed,
        Status::PartitionPoisoned,
        Status::OutOfSpace,
        Status::TooManyInFlight,
        Status::TooManyConnections,
        Status::ShuttingDown,
        Status::ProducerFenced,
        Status::ProducerBusy,
        Status::UnknownProducer,
        Status::SequenceStraddle,
        Status::UnknownSubscription,
        Status::SubscriptionExists,
        Status::CreditOverflow,
        Status::TooManySubscriptions,
        Status::NotASuperStream,
        Status::NoRoute,
        Status::InvalidFilter,
        Status::UnknownConsumer,
        Status::FilterOverlap,
        Status::NotDelivered,
        Status::TopicFull,
        Status::TtlNotAllowed,
        Status::Internal,
    ];

    /// The status with this wire value (unknown values map to [`Status::Internal`]).
    pub fn from_u16(value: u16) -> Status {
        Status::ALL.iter().copied().find(|s| *s as u16 == value).unwrap_or(Status::Internal)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}({})", *self as u16)
    }
}

/// Why a body could not be encoded or decoded.
#[derive(Debug)]
pub struct BodyError(pub String);

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed body: {}", self.0)
    }
}

impl std::error::Error for BodyError {}

/// Archives a body.
pub fn encode<T>(value: &T) -> Result<AlignedVec, BodyError>
where
    T: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, RkyvError>>,
{
    rkyv::to_bytes::<RkyvError>(value).map_err(|e| BodyError(e.to_string()))
}

/// Validates and deserialises a body from untrusted bytes (which must be 16-byte aligned, as
/// frame bodies are inside an aligned frame buffer).
pub fn decode<T>(bytes: &[u8]) -> Result<T, BodyError>
where
    T: Archive,
    T::Archived:
        for<'a> CheckBytes<HighValidator<'a, RkyvError>> + Deserialize<T, HighDeserializer<RkyvError>>,
{
    rkyv::from_bytes::<T, RkyvError>(bytes).map_err(|e| BodyError(e.to_string()))
}

/// An empty body.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct Empty {}

/// The body of every error response.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub message: String,
}

/// Answer to [`Kind::Ping`].
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct PingResponse {
    /// Server version.
    pub version: String,
    /// The shard that answered.
    pub shard: u16,
}

/// [`Kind::Login`].
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct LoginRequest {
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
}

/// Answer to [`Kind::Login`].
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct LoginResponse {
    /// The user's id.
    pub user_id: u32,
    /// True for the root (administrator) user.
    pub admin: bool,
}

/// One shard and how to reach it directly.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct ShardAddress {
    /// Shard id.
    pub shard: u16,
    /// `host:port` that lands on this shard; empty when per-shard listeners are off.
    pub address: String,
}

/// Where one partition lives.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct PartitionOwner {
    /// Stream name.
    pub stream: String,
    /// Topic name.
    pub topic: String,
    /// Partition id.
    pub partition: u32,
    /// Owning shard.
    pub shard: u16,
}

/// Answer to [`Kind::Metadata`]: the shard map, for shard-aware clients.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct MetadataResponse {
    /// Revision of the partition→shard table.
    pub revision: u64,
    /// The shard that answered.
    pub shard: u16,
    /// Every shard and its direct address.
    pub shards: Vec<ShardAddress>,
    /// Every partition the user may see and its owner.
    pub partitions: Vec<PartitionOwner>,
}

/// A user's rights on one stream (`*` for every stream).
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct StreamPermission {
    /// Stream name, or `*`.
    pub stream: String,
    /// Poll, get and store offsets, join consumer groups, stats.
    pub read: bool,
    /// Produce.
    pub write: bool,
    /// Create and delete topics and groups in the stream.
    pub manage: bool,
}

/// [`Kind::UserCreate`].
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct CreateUser {
    /// User name.
    pub name: String,
    /// Password (hashed by the server with argon2).
    pub password: String,
    /// Administrator: every right, including users and streams.
    pub admin: bool,
    /// Per-stream rights.
    pub permissions: Vec<StreamPermission>,
}

/// A request that names one thing (user, stream).
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct NameRef {
    /// The name.
    pub name: String,
}

/// One user, as listed.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// User id.
    pub id: u32,
    /// User name.
    pub name: String,
    /// Administrator.
    pub admin: bool,
    /// Per-stream rights.
    pub permissions: Vec<StreamPermission>,
}

/// Answer to [`Kind::UserList`].
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct UserList {
    /// Every user.
    pub users: Vec<UserInfo>,
}

/// [`Kind::UserSetPermissions`]: replaces a user's per-stream rights.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct SetPermissions {
    /// User name.
    pub user: String,
    /// The new rights.
    pub permissions: Vec<StreamPermission>,
}

/// [`Kind::StreamCreate`].
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct CreateStream {
    /// Stream name.
    pub name: String,
    /// Succeed (returning the existing stream) when it exists already.
    pub if_missing: bool,
}

/// Settings of a topic.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct TopicConfig {
    /// Partition count (at least 1).
    pub partitions: u32,
    /// Delete sealed segments older than this (µs); none = keep.
    pub retention_max_age_us: Option<u64>,
    /// Delete the oldest sealed segments while a partition is larger than this.
    pub retention_max_bytes: Option<u64>,
    /// Segment size; none = the server's `--segment-bytes`.
    pub segment_bytes: Option<u64>,
}

/// One partition, as described.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Partition id.
    pub id: u32,
    /// Owning shard.
    pub shard: u16,
}

/// A topic, as described.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Topic id (unique in its stream).
    pub id: u32,
    /// Topic name.
    pub name: String,
    /// Settings.
    pub config: TopicConfig,
    /// Partitions and owners.
    pub partitions: Vec<PartitionInfo>,
    /// Consumer groups of the topic.
    pub groups: Vec<String>,
    /// Creation time (µs).
    pub created_us: u64,
    /// Set when the topic is a super stream: its routing and binding keys.
    pub super_stream: Option<SuperStreamInfo>,
    /// Retention policy, message limit, discard and TTLs.
    pub policy: super::durable::TopicPolicy,
    /// Durable consumers, by name.
    pub consumers: Vec<String>,
}

/// A stream, as described.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// Stream id.
    pub id: u32,
    /// Stream name.
    pub name: String,
    /// Topics.
    pub topics: Vec<TopicInfo>,
    /// Creation time (µs).
    pub created_us: u64,
}

/// Answer to [`Kind::StreamList`].
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct StreamList {
    /// Every stream the user may see.
    pub streams: Vec<StreamInfo>,
}

/// [`Kind::TopicCreate`].
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct CreateTopic {
    /// Stream name.
    pub stream: String,
    /// Topic name.
    pub name: String,
    /// Settings.
    pub config: TopicConfig,
    /// Retention policy, message limit, discard and TTLs.
    pub policy: super::durable::TopicPolicy,
    /// Succeed (returning the existing topic) when it exists already.
    pub if_missing: bool,
}

/// Names one topic.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct TopicRef {
    /// Stream name.
    pub stream: String,
    /// Topic name.
    pub topic: String,
}

/// Answer to [`Kind::TopicList`].
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct TopicList {
    /// Topics of the stream.
    pub topics: Vec<TopicInfo>,
}

/// [`Kind::PartitionsAdd`].
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct AddPartitions {
    /// Stream name.
    pub stream: String,
    /// Topic name.
    pub topic: String,
    /// Partitions to add.
    pub count: u32,
}

/// How a produce request picks its partition.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub enum Partitioning {
    /// Round robin over the topic's partitions (per connection).
    Balanced,
    /// This partition.
    Partition(u32),
    /// A stable hash of this key.
    Key(Vec<u8>),
}

/// [`Kind::Produce`]: the frame payload holds `batch_count` whole batches back to back.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct ProduceRequest {
    /// Stream name.
    pub stream: String,
    /// Topic name.
    pub topic: String,
    /// Partition choice.
    pub partitioning: Partitioning,
    /// Batches in the payload.
    pub batch_count: u32,
}

/// Where one produced batch landed.
///
/// For a named producer's batch that was already stored (a retry), `duplicate` is set and the
/// offsets are the original ones when the partition still remembers them; when it does not,
/// `base_offset`, `last_offset` and `append_timestamp_us` are all `u64::MAX` ([`BatchAck::UNKNOWN`]).
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchAck {
    /// Offset of its first record.
    pub base_offset: u64,
    /// Offset of its last record.
    pub last_offset: u64,
    /// Append timestamp (µs).
    pub append_timestamp_us: u64,
    /// The batch was a duplicate of one already stored and was not written again.
    pub duplicate: bool,
}

impl BatchAck {
    /// The offset value of a duplicate whose original offsets are no longer known.
    pub const UNKNOWN: u64 = u64::MAX;

    /// Whether the offsets are known (false only for a duplicate the partition forgot).
    pub fn has_offsets(&self) -> bool {
        self.base_offset != Self::UNKNOWN
    }
}

/// Answer to [`Kind::Produce`].
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct ProduceResponse {
    /// The partition written.
    pub partition: u32,
    /// One acknowledgement per batch, in order.
    pub acks: Vec<BatchAck>,
}

/// How a named producer shares its topic (Danube's access modes).
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessMode {
    /// Any number of producers may write the topic.
    #[default]
    Shared,
    /// This producer alone may hold the topic; other declarations fail with
    /// [`Status::ProducerBusy`] while its session holds the lease.
    Exclusive,
}

/// [`Kind::ProducerDeclare`]: declares a named producer on a topic.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct ProducerDeclare {
    /// Stream name.
    pub stream: String,
    /// Topic name.
    pub topic: String,
    /// The producer's name (a metadata name: 1-255 bytes of `[A-Za-z0-9._-]`).
    pub name: String,
    /// Shared or exclusive.
    pub access: AccessMode,
}

/// The last sequence a named producer stored on one partition.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionSequence {
    /// Partition id.
    pub partition: u32,
    /// The last stored sequence, or `None` when nothing is stored for the producer there.
    pub last_sequence: Option<u64>,
}

/// Answer to [`Kind::ProducerDeclare`].
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct ProducerDeclared {
    /// The producer id to write into every batch header (never 0).
    pub producer_id: u64,
    /// The epoch to write into every batch header; batches of older epochs are fenced.
    pub epoch: u32,
    /// The last stored sequence on every partition of the topic, in partition order.
    pub partitions: Vec<PartitionSequence>,
    /// How long the lease lasts without a heartbeat (ms); heartbeat well within it.
    pub session_timeout_ms: u64,
}

/// [`Kind::ProducerSequence`] and [`Kind::ProducerDelete`]: a named producer on a topic.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct ProducerRef {
    /// Stream name.
    pub stream: String,
    /// Topic name.
    pub topic: String,
    /// Partition id (ignored by [`Kind::ProducerDelete`]).
    pub partition: u32,
    /// The producer's name.
    pub name: String,
}

/// Answer to [`Kind::ProducerSequence`].
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerSequenceInfo {
    /// The producer id the name maps to.
    pub producer_id: u64,
    /// The current epoch on the partition.
    pub epoch: u32,
    /// The last stored sequence, or `None` when nothing is stored for the producer there.
    pub last_sequence: Option<u64>,
}

/// [`Kind::ProducerHeartbeat`]: keeps every lease this session holds alive. Leases are also kept
/// alive by produce requests of the session.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct ProducerHeartbeat {
    /// Stream name.
    pub stream: String,
    /// Topic name.
    pub topic: String,
    /// The producer's name.
    pub name: String,
}

/// [`Kind::ProducerClose`]: the session is done with this producer; an exclusive lease is
/// released at once (it is released on disconnect too).
pub type ProducerClose = ProducerHeartbeat;

/// [`Kind::ProducerList`]: named producers of one stream (or all).
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct ProducerListRequest {
    /// Only this stream (all when none).
    pub stream: Option<String>,
}

/// One named producer as [`Kind::ProducerList`] shows it.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct ProducerInfo {
    /// Stream name.
    pub stream: String,
    /// Topic name.
    pub topic: String,
    /// The producer's name.
    pub name: String,
    /// Its id.
    pub producer_id: u64,
    /// Its current epoch.
    pub epoch: u32,
    /// Its access mode at the last declaration.
    pub access: AccessMode,
    /// Whether a session holds a lease on the topic for it now (exclusive holders are listed
    /// with `access == Exclusive`).
    pub leased: bool,
    /// The holder's peer address, when leased.
    pub holder: Option<String>,
    /// The last stored sequence per partition.
    pub partitions: Vec<PartitionSequence>,
}

/// Answer to [`Kind::ProducerList`].
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct ProducerList {
    /// Every known named producer.
    pub producers: Vec<ProducerInfo>,
}

/// Where a poll starts.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollStrategy {
    /// At this offset.
    Offset(u64),
    /// At the first batch appended at or after this time (µs).
    Timestamp(u64),
    /// At the partition's first offset.
    First,
    /// At the last batch.
    Last,
    /// After the consumer's (or group's) stored offset; at the first offset when none is stored.
    Next,
}

/// Who polls: a named consumer on one partition, or a group member on its assignment.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub enum PollTarget {
    /// One partition, as a named consumer.
    Partition(PartitionTarget),
    /// The partitions a group member holds.
    Group(GroupTarget),
}

/// A named consumer on one partition (the name keys its stored offsets).
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct PartitionTarget {
    /// Partition id.
    pub partition: u32,
    /// Consumer name.
    pub consumer: String,
}

/// A group member polling the partitions it holds.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct GroupTarget {
    /// Group name.
    pub group: String,
    /// Member id from [`Kind::GroupJoin`].
    pub member_id: u64,
}

/// [`Kind::Poll`].
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct PollRequest {
    /// Stream name.
    pub stream: String,
    /// Topic name.
    pub topic: String,
    /// Who polls.
    pub target: PollTarget,
    /// Where to start.
    pub strategy: PollStrategy,
    /// Stop adding batches once this many messages are included (whole batches are returned).
    pub max_messages: u32,
    /// Stop adding batches past this many bytes (at least one batch is returned).
    pub max_bytes: u32,
    /// Long poll: wait up to this long for data when none is there.
    pub max_wait_ms: u32,
    /// Store the offset after the last returned message as the consumer's (group's) offset.
    pub auto_commit: bool,
    /// Filter values: when not empty, the owner skips whole batches whose header shows that no
    /// record carries one of them (and batches without filter values, unless
    /// `match_unfiltered`). At most [`crate::constants::FILTER_VALUES_MAX`] values of at most
    /// [`crate::constants::FILTER_VALUE_BYTES_MAX`] bytes each. Skipped batches still move
    /// `next_offset`; batches that are sent may hold other records too (filter exactly).
    pub filter: Vec<String>,
    /// With `filter`: records without a filter value are wanted too. Ignored without `filter`.
    pub match_unfiltered: bool,
}

/// One partition's share of a poll answer.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct PolledPartition {
    /// Partition id.
    pub partition: u32,
    /// The offset the poll started at (records below it in the first batch are to be skipped).
    pub start_offset: u64,
    /// The offset after the last returned record.
    pub next_offset: u64,
    /// The partition's end (offset after the last visible record).
    pub high_watermark: u64,
    /// Bytes of this partition's batches in the payload.
    pub payload_bytes: u32,
    /// Offset ranges `[from, to)` in `[start_offset, next_offset)` removed one by one (acknowledged
    /// on a work queue, no longer of interest, expired): their records are in the batches but are
    /// not part of the answer. Empty on limits topics.
    pub removed: Vec<[u64; 2]>,
}

/// Whether `offset` lies in one of a poll answer's removed ranges ([`PolledPartition::removed`]).
pub fn is_removed(removed: &[[u64; 2]], offset: u64) -> bool {
    removed.iter().any(|[from, to]| (*from..*to).contains(&offset))
}

/// Answer to [`Kind::Poll`]: the payload holds each partition's batches in the listed order.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct PollResponse {
    /// Partitions with data (or with none, showing their marks).
    pub partitions: Vec<PolledPartition>,
}

/// Whose offset: a named consumer or a consumer group.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub enum ConsumerRef {
    /// A named single consumer.
    Named(String),
    /// A consumer group.
    Group(String),
}

/// [`Kind::OffsetStore`]: the next offset the consumer will read.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct StoreOffset {
    /// Stream name.
    pub stream: String,
    /// Topic name.
    pub topic: String,
    /// Partition id.
    pub partition: u32,
    /// Whose offset.
    pub consumer: ConsumerRef,
    /// The next offset to read.
    pub offset: u64,
}

/// [`Kind::OffsetGet`].
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct GetOffset {
    /// Stream name.
    pub stream: String,
    /// Topic name.
    pub topic: String,
    /// Partition id.
    pub partition: u32,
    /// Whose offset.
    pub consumer: ConsumerRef,
}

/// Answer to [`Kind::OffsetGet`].
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct OffsetInfo {
    /// The stored next offset, if any.
    pub stored: Option<u64>,
    /// The partition's end.
    pub high_watermark: u64,
}

/// Names one consumer group.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct GroupRef {
    /// Stream name.
    pub stream: String,
    /// Topic name.
    pub topic: String,
    /// Group name.
    pub group: String,
    /// With [`Kind::GroupCreate`]: succeed when it exists already.
    pub if_missing: bool,
}

/// [`Kind::GroupJoin`].
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct JoinGroup {
    /// Stream name.
    pub stream: String,
    /// Topic name.
    pub topic: String,
    /// Group name.
    pub group: String,
    /// Create the group when missing.
    pub create_if_missing: bool,
    /// Session timeout: without a heartbeat for this long the member is removed (ms).
    pub session_timeout_ms: u32,
}

/// Names one member of a group.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct MemberRef {
    /// Stream name.
    pub stream: String,
    /// Topic name.
    pub topic: String,
    /// Group name.
    pub group: String,
    /// Member id.
    pub member_id: u64,
}

/// A member's place in its group.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// Member id.
    pub member_id: u64,
    /// Bumped on every rebalance.
    pub generation: u64,
    /// Partitions this member holds now.
    pub partitions: Vec<u32>,
}

/// One member, as described.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// Member id.
    pub member_id: u64,
    /// Partitions held.
    pub partitions: Vec<u32>,
    /// Milliseconds since the last heartbeat.
    pub idle_ms: u64,
}

/// A group's offset on one partition.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffset {
    /// Partition id.
    pub partition: u32,
    /// Stored next offset.
    pub offset: u64,
}

/// A group, as described.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    /// Group name.
    pub name: String,
    /// Rebalance generation.
    pub generation: u64,
    /// Members and their assignments.
    pub members: Vec<MemberInfo>,
    /// Stored offsets.
    pub offsets: Vec<PartitionOffset>,
}

/// Answer to [`Kind::GroupList`].
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct GroupList {
    /// Groups of the topic.
    pub groups: Vec<GroupInfo>,
}

/// [`Kind::Stats`].
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct StatsRequest {
    /// Only this stream (all when none).
    pub stream: Option<String>,
}

/// Statistics of one partition.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct PartitionStats {
    /// Partition id.
    pub id: u32,
    /// Owning shard.
    pub shard: u16,
    /// First live offset.
    pub first_offset: u64,
    /// Offset after the last visible record.
    pub next_offset: u64,
    /// Offset after the last fsynced record.
    pub committed_offset: u64,
    /// Live messages (`next_offset - first_offset` less those removed one by one).
    pub messages: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// Segments.
    pub segments: u32,
    /// Named consumers with a stored offset here.
    pub consumers: Vec<String>,
    /// Why the partition refuses writes, if it does.
    pub poisoned: Option<String>,
    /// Named producers tracked on the partition.
    pub producers: u32,
    /// Producer entries evicted since start (least recently used past
    /// `--max-producers-per-partition`, or idle past `--producer-expiry`).
    pub producer_evictions: u64,
    /// Duplicate batches acknowledged without being written, since start.
    pub duplicate_batches: u64,
    /// Batches filtered polls skipped here (their headers ruled out every wanted value), since
    /// start.
    pub filtered_batches: u64,
    /// Bytes of those batches.
    pub filtered_bytes: u64,
}

/// Statistics of one topic.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct TopicStats {
    /// Topic name.
    pub name: String,
    /// Partitions.
    pub partitions: Vec<PartitionStats>,
    /// Consumer groups with members and offsets.
    pub groups: Vec<GroupInfo>,
    /// Total messages.
    pub messages: u64,
    /// Total bytes.
    pub bytes: u64,
    /// Batches skipped by filtered polls, over the partitions.
    pub filtered_batches: u64,
    /// Bytes of those batches.
    pub filtered_bytes: u64,
}

/// Statistics of one stream.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct StreamStats {
    /// Stream name.
    pub name: String,
    /// Topics.
    pub topics: Vec<TopicStats>,
    /// Total messages.
    pub messages: u64,
    /// Total bytes.
    pub bytes: u64,
}

/// Server-wide counters.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct ServerCounters {
    /// Shards running.
    pub shards: u16,
    /// Open connections (all shards).
    pub connections: u64,
    /// Requests forwarded to another shard.
    pub forwarded_requests: u64,
    /// Forwarded produce payload bytes that arrived at the owner in the very buffer the
    /// receiving shard read them into (no copy between shards).
    pub forwarded_bytes_zero_copy: u64,
    /// Forwarded produce payload bytes that had to be copied (should stay 0).
    pub forwarded_bytes_copied: u64,
    /// Push subscriptions open now (all shards).
    pub subscriptions: u64,
    /// `Deliver` frames queued for subscriptions since start.
    pub deliveries: u64,
    /// Batch bytes in those frames.
    pub delivered_bytes: u64,
    /// Batches filtered polls skipped (all shards, since start).
    pub filtered_batches: u64,
    /// Bytes of those batches: what filtering kept off the network.
    pub filtered_bytes: u64,
}

/// Answer to [`Kind::Stats`].
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct StatsResponse {
    /// Streams.
    pub streams: Vec<StreamStats>,
    /// Server counters.
    pub server: ServerCounters,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_statuses_round_trip_and_are_unique() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_u16(kind as u16), Some(kind));
        }
        let mut kinds: Vec<u16> = Kind::ALL.iter().map(|k| *k as u16).collect();
        kinds.dedup();
        assert_eq!(kinds.len(), Kind::ALL.len());
        assert_eq!(Kind::from_u16(999), None);
        for status in Status::ALL {
            assert_eq!(Status::from_u16(status as u16), status);
        }
    }

    #[test]
    fn bodies_round_trip_and_garbage_is_refused() {
        let request = PollRequest {
            stream: "orders".into(),
            topic: "created".into(),
            target: PollTarget::Group(GroupTarget { group: "billing".into(), member_id: 7 }),
            strategy: PollStrategy::Next,
            max_messages: 100,
            max_bytes: 1 << 20,
            max_wait_ms: 500,
            auto_commit: true,
            filter: vec!["eu".into(), "us".into()],
            match_unfiltered: true,
        };
        let bytes = encode(&request).expect("encode");
        assert_eq!(decode::<PollRequest>(&bytes).expect("decode"), request);
        let mut aligned = AlignedVec::<16>::new();
        let mut state = 0x2545_F491_4F6C_DD1D_u64;
        for len in 0..400 {
            aligned.clear();
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                aligned.push(state as u8);
            }
            let _ = decode::<PollRequest>(&aligned);
            let _ = decode::<CreateTopic>(&aligned);
        }
        for cut in 0..bytes.len() {
            aligned.clear();
            aligned.extend_from_slice(&bytes[..cut]);
            assert!(decode::<PollRequest>(&aligned).is_err(), "truncated at {cut}");
        }
    }
}
