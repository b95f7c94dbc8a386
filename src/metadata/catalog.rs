//! The catalog: every stream, topic, consumer group and user, and the ops that change them.
//!
//! What it owns: the domain types ([`Catalog`], [`Stream`], [`Topic`], [`User`]), kept apart from
//! the wire types in [`crate::protocol::messages`] (conversions are [`Catalog::stream_info`] and
//! friends), the limits on how many of each may exist, and [`MetadataOp`], the unit of change
//! that the metadata log stores.
//!
//! Which core: the controller shard applies ops (through [`super::MetadataLog::commit`]) and
//! broadcasts the result as an `Arc<Catalog>`; every shard reads its copy. The catalog is plain
//! owned data, `Clone + Send + Sync`.
//!
//! Invariants:
//! * The fields are public for reading; they change only through [`Catalog::apply`], which
//!   validates an op completely before touching anything, so a refused op leaves the catalog as
//!   it was, and an accepted one bumps `revision` by exactly one. Replaying the same ops gives the
//!   same catalog: ops carry their timestamps, nothing reads the clock or a random source.
//! * Map keys equal the `name` of their value. Ids start at 1 and are never reused: a recreated
//!   stream or topic gets a new id, hence a new data directory ([`Catalog::partition_dir`]).
//! * `topic.config.partitions == topic.partitions`, in `1..=PARTITIONS_PER_TOPIC_MAX`.
//! * A super stream (`topic.super_stream`) has one binding key per partition, and its partition
//!   count never changes (see [`super::super_stream`]).
//! * At least one admin user remains once one exists (the last admin cannot be deleted).
//! * Permissions name streams, not ids: they outlive the deletion of the stream and apply again to
//!   a new stream of the same name.
//!
//! Validation rules are part of the replay contract: tightening one later can make an existing
//! metadata log fail to replay, so a stricter rule must apply only to ops logged after it (by a
//! new op format version).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use rkyv::{Archive, Deserialize, Serialize};

use super::durable::{CreateConsumerOp, CreateTopicPolicyOp, DeleteConsumerOp, Durable};
use super::super_stream::{CreateSuperStreamOp, SuperStream};
use super::table::ShardTable;
use super::{auth, validate_name, MetadataError};
use crate::constants::{IO_ALIGNMENT_BYTES, SEGMENT_BYTES_MAX};
use crate::protocol::durable::TopicPolicy;
use crate::protocol::messages::{self, StreamPermission, TopicConfig};

/// The most streams.
pub const STREAMS_MAX: usize = 1024;

/// The most topics in one stream.
pub const TOPICS_PER_STREAM_MAX: usize = 1024;

/// The most partitions in one topic.
pub const PARTITIONS_PER_TOPIC_MAX: u32 = 4096;

/// The most partitions over all topics (each is a directory of files and an open log).
pub const PARTITIONS_MAX: u64 = 65_536;

/// The most users.
pub const USERS_MAX: usize = 1024;

/// The most consumer groups on one topic.
pub const GROUPS_PER_TOPIC_MAX: usize = 1024;

/// The most per-stream permission entries of one user.
pub const PERMISSIONS_PER_USER_MAX: usize = 256;

/// The smallest per-topic segment size (one I/O block).
pub const TOPIC_SEGMENT_BYTES_MIN: u64 = IO_ALIGNMENT_BYTES as u64;

const _: () = assert!(PARTITIONS_PER_TOPIC_MAX as u64 <= PARTITIONS_MAX);
const _: () = assert!(TOPIC_SEGMENT_BYTES_MIN <= SEGMENT_BYTES_MAX);
const _: () = {
    const fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Catalog>();
};

/// Every stream and user. See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    /// Ops applied so far; equals the metadata log's next offset.
    pub revision: u64,
    /// Streams by name.
    pub streams: BTreeMap<String, Stream>,
    /// Users by name.
    pub users: BTreeMap<String, User>,
    /// The id the next stream gets.
    pub next_stream_id: u32,
    /// The id the next user gets.
    pub next_user_id: u32,
}

/// A stream: a namespace of topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    /// Stream id (never reused).
    pub id: u32,
    /// Stream name.
    pub name: String,
    /// Creation time (µs since the epoch).
    pub created_us: u64,
    /// Topics by name.
    pub topics: BTreeMap<String, Topic>,
    /// The id the next topic of this stream gets.
    pub next_topic_id: u32,
}

/// A topic: a set of partitions with shared settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    /// Topic id (unique in its stream, never reused).
    pub id: u32,
    /// Topic name.
    pub name: String,
    /// Creation time (µs since the epoch).
    pub created_us: u64,
    /// Settings; `config.partitions` always equals `partitions`.
    pub config: TopicConfig,
    /// Partition count; partitions are `0..partitions`.
    pub partitions: u32,
    /// Consumer groups by name.
    pub groups: BTreeSet<String>,
    /// Set when the topic is a super stream ([`super::super_stream`]).
    pub super_stream: Option<SuperStream>,
    /// Retention policy ([`super::durable`]).
    pub policy: TopicPolicy,
    /// Durable consumers by name.
    pub consumers: BTreeMap<String, Durable>,
}

/// A user.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// User id (never reused).
    pub id: u32,
    /// User name.
    pub name: String,
    /// argon2id PHC string (see [`auth`]).
    pub password_hash: String,
    /// Administrator: every right, including users and streams.
    pub admin: bool,
    /// Per-stream rights.
    pub permissions: Vec<StreamPermission>,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("password_hash", &"<redacted>")
            .field("admin", &self.admin)
            .field("permissions", &self.permissions)
            .finish()
    }
}

/// One change to the catalog: the unit the metadata log stores (rkyv-archived, one per batch).
///
/// Variants are only ever added, never changed or reordered: the archived form is on disk.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum MetadataOp {
    /// Create a stream.
    CreateStream(CreateStreamOp),
    /// Delete a stream with all its topics (their data directories are the server's to remove).
    DeleteStream(NameOp),
    /// Create a topic.
    CreateTopic(CreateTopicOp),
    /// Delete a topic.
    DeleteTopic(TopicOp),
    /// Add partitions to a topic.
    AddPartitions(PartitionsOp),
    /// Create a user.
    CreateUser(CreateUserOp),
    /// Delete a user.
    DeleteUser(NameOp),
    /// Replace a user's per-stream rights.
    SetPermissions(SetPermissionsOp),
    /// Create a consumer group on a topic.
    CreateGroup(GroupOp),
    /// Delete a consumer group.
    DeleteGroup(GroupOp),
    /// Create a topic as a super stream, with its binding-key table. Boxed: an archived
    /// `MetadataOp` must not grow, or logs written before this variant existed (whose records
    /// are read at `len - size_of::<ArchivedMetadataOp>()`) could no longer be replayed
    /// (`tests/v1_segments.rs` replays such a log).
    CreateSuperStream(Box<CreateSuperStreamOp>),
    /// Delete a topic that is a super stream (refused for a plain topic).
    DeleteSuperStream(TopicOp),
    /// Create a topic with a retention policy (boxed, as `CreateSuperStream`).
    CreateTopicWithPolicy(Box<CreateTopicPolicyOp>),
    /// Create a durable consumer on a topic.
    CreateConsumer(Box<CreateConsumerOp>),
    /// Delete a durable consumer.
    DeleteConsumer(Box<DeleteConsumerOp>),
}

/// [`MetadataOp::CreateStream`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct CreateStreamOp {
    /// Stream name.
    pub name: String,
    /// Creation time (µs since the epoch), taken by the controller.
    pub created_us: u64,
}

/// Names one stream or user ([`MetadataOp::DeleteStream`], [`MetadataOp::DeleteUser`]).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct NameOp {
    /// The name.
    pub name: String,
}

/// [`MetadataOp::CreateTopic`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct CreateTopicOp {
    /// Stream name.
    pub stream: String,
    /// Topic name.
    pub name: String,
    /// Settings; `config.partitions` is the initial partition count.
    pub config: TopicConfig,
    /// Creation time (µs since the epoch), taken by the controller.
    pub created_us: u64,
}

/// Names one topic ([`MetadataOp::DeleteTopic`]).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TopicOp {
    /// Stream name.
    pub stream: String,
    /// Topic name.
    pub topic: String,
}

/// [`MetadataOp::AddPartitions`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PartitionsOp {
    /// Stream name.
    pub stream: String,
    /// Topic name.
    pub topic: String,
    /// Partitions to add (at least 1).
    pub count: u32,
}

/// [`MetadataOp::CreateUser`].
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq)]
pub struct CreateUserOp {
    /// User name.
    pub name: String,
    /// argon2id PHC string from [`auth::hash_password`]; never the password itself.
    pub password_hash: String,
    /// Administrator.
    pub admin: bool,
    /// Per-stream rights.
    pub permissions: Vec<StreamPermission>,
}

impl fmt::Debug for CreateUserOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateUserOp")
            .field("name", &self.name)
            .field("password_hash", &"<redacted>")
            .field("admin", &self.admin)
            .field("permissions", &self.permissions)
            .finish()
    }
}

/// [`MetadataOp::SetPermissions`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SetPermissionsOp {
    /// User name.
    pub user: String,
    /// The new rights (replacing the old ones).
    pub permissions: Vec<StreamPermission>,
}

/// Names one consumer group ([`MetadataOp::CreateGroup`], [`MetadataOp::DeleteGroup`]).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct GroupOp {
    /// Stream name.
    pub stream: String,
    /// Topic name.
    pub topic: String,
    /// Group name.
    pub group: String,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog {
            revision: 0,
            streams: BTreeMap::new(),
            users: BTreeMap::new(),
            next_stream_id: 1,
            next_user_id: 1,
        }
    }
}

impl Catalog {
    /// An empty catalog at revision 0 (what replaying an empty metadata log gives).
    pub fn new() -> Catalog {
        Catalog::default()
    }

    /// Applies `op` after validating it completely: on error the catalog is unchanged, on
    /// success `revision` is one higher.
    pub fn apply(&mut self, op: &MetadataOp) -> Result<(), MetadataError> {
        match op {
            MetadataOp::CreateStream(op) => self.create_stream(op)?,
            MetadataOp::DeleteStream(op) => self.delete_stream(op)?,
            MetadataOp::CreateTopic(op) => self.create_topic(op)?,
            MetadataOp::DeleteTopic(op) => self.delete_topic(op)?,
            MetadataOp::AddPartitions(op) => self.add_partitions(op)?,
            MetadataOp::CreateUser(op) => self.create_user(op)?,
            MetadataOp::DeleteUser(op) => self.delete_user(op)?,
            MetadataOp::SetPermissions(op) => self.set_permissions(op)?,
            MetadataOp::CreateGroup(op) => self.create_group(op)?,
            MetadataOp::DeleteGroup(op) => self.delete_group(op)?,
            MetadataOp::CreateSuperStream(op) => self.create_super_stream(op)?,
            MetadataOp::DeleteSuperStream(op) => self.delete_super_stream(op)?,
            MetadataOp::CreateTopicWithPolicy(op) => self.create_topic_with_policy(op)?,
            MetadataOp::CreateConsumer(op) => self.create_consumer(op)?,
            MetadataOp::DeleteConsumer(op) => self.delete_consumer(op)?,
        }
        self.revision += 1;
        #[cfg(debug_assertions)]
        self.assert_invariants();
        Ok(())
    }

    /// The stream named `name`.
    pub fn stream(&self, name: &str) -> Result<&Stream, MetadataError> {
        self.streams.get(name).ok_or_else(|| MetadataError::UnknownStream(name.to_string()))
    }

    /// The topic `topic` of stream `stream`, with its stream.
    pub fn topic(&self, stream: &str, topic: &str) -> Result<(&Stream, &Topic), MetadataError> {
        let found = self.stream(stream)?;
        let unknown = || MetadataError::UnknownTopic { stream: stream.to_string(), topic: topic.to_string() };
        Ok((found, found.topics.get(topic).ok_or_else(unknown)?))
    }

    /// The topic holding `partition`, with its stream; [`MetadataError::UnknownPartition`] when
    /// the topic has no such partition.
    pub fn partition(
        &self,
        stream: &str,
        topic: &str,
        partition: u32,
    ) -> Result<(&Stream, &Topic), MetadataError> {
        let (found_stream, found_topic) = self.topic(stream, topic)?;
        if partition >= found_topic.partitions {
            return Err(MetadataError::UnknownPartition {
                stream: stream.to_string(),
                topic: topic.to_string(),
                partition,
            });
        }
        Ok((found_stream, found_topic))
    }

    /// The topic holding consumer group `group`, with its stream; [`MetadataError::UnknownGroup`]
    /// when the topic has no such group.
    pub fn group(&self, stream: &str, topic: &str, group: &str) -> Result<(&Stream, &Topic), MetadataError> {
        let (found_stream, found_topic) = self.topic(stream, topic)?;
        if !found_topic.groups.contains(group) {
            return Err(unknown_group(stream, topic, group));
        }
        Ok((found_stream, found_topic))
    }

    /// The user named `name`.
    pub fn user(&self, name: &str) -> Result<&User, MetadataError> {
        self.users.get(name).ok_or_else(|| MetadataError::UnknownUser(name.to_string()))
    }

    /// Every partition of every topic, as (stream, topic, partition id), in name order.
    pub fn partitions(&self) -> impl Iterator<Item = (&Stream, &Topic, u32)> + '_ {
        self.streams.values().flat_map(|stream| {
            stream
                .topics
                .values()
                .flat_map(move |topic| (0..topic.partitions).map(move |p| (stream, topic, p)))
        })
    }

    /// The data directory of one partition: `data_dir/streams/{stream_id}/{topic_id}/{partition}`.
    pub fn partition_dir(data_dir: &Path, stream_id: u32, topic_id: u32, partition: u32) -> PathBuf {
        let mut dir = data_dir.join("streams");
        dir.push(stream_id.to_string());
        dir.push(topic_id.to_string());
        dir.push(partition.to_string());
        dir
    }

    /// `stream` as the wire describes it, with every topic and its partition owners.
    pub fn stream_info(&self, stream: &Stream, table: &ShardTable) -> messages::StreamInfo {
        messages::StreamInfo {
            id: stream.id,
            name: stream.name.clone(),
            topics: stream.topics.values().map(|topic| self.topic_info(stream, topic, table)).collect(),
            created_us: stream.created_us,
        }
    }

    /// `topic` of `stream` as the wire describes it, with its partition owners.
    pub fn topic_info(&self, stream: &Stream, topic: &Topic, table: &ShardTable) -> messages::TopicInfo {
        debug_assert_eq!(topic.config.partitions, topic.partitions);
        messages::TopicInfo {
            id: topic.id,
            name: topic.name.clone(),
            config: topic.config.clone(),
            partitions: (0..topic.partitions)
                .map(|id| messages::PartitionInfo { id, shard: table.owner(stream.id, topic.id, id) })
                .collect(),
            groups: topic.groups.iter().cloned().collect(),
            created_us: topic.created_us,
            super_stream: topic.super_stream.as_ref().map(SuperStream::info),
            policy: topic.policy.clone(),
            consumers: topic.consumers.keys().cloned().collect(),
        }
    }

    /// `user` as the wire lists it (without the password hash).
    pub fn user_info(&self, user: &User) -> messages::UserInfo {
        messages::UserInfo {
            id: user.id,
            name: user.name.clone(),
            admin: user.admin,
            permissions: user.permissions.clone(),
        }
    }

    fn create_stream(&mut self, op: &CreateStreamOp) -> Result<(), MetadataError> {
        validate_name(&op.name)?;
        if self.streams.contains_key(&op.name) {
            return Err(MetadataError::AlreadyExists { what: "stream", name: op.name.clone() });
        }
        check_count("streams", self.streams.len(), STREAMS_MAX)?;
        let id = self.next_stream_id;
        let next = next_id("stream", id)?;
        let stream = Stream {
            id,
            name: op.name.clone(),
            created_us: op.created_us,
            topics: BTreeMap::new(),
            next_topic_id: 1,
        };
        self.streams.insert(op.name.clone(), stream);
        self.next_stream_id = next;
        Ok(())
    }

    fn delete_stream(&mut self, op: &NameOp) -> Result<(), MetadataError> {
        self.stream(&op.name)?;
        self.streams.remove(&op.name);
        Ok(())
    }

    pub(super) fn create_topic(&mut self, op: &CreateTopicOp) -> Result<(), MetadataError> {
        let total = self.partition_count();
        let stream = self.stream(&op.stream)?;
        validate_name(&op.name)?;
        if stream.topics.contains_key(&op.name) {
            let name = format!("{}/{}", op.stream, op.name);
            return Err(MetadataError::AlreadyExists { what: "topic", name });
        }
        check_topic_config(&op.config)?;
        check_count("topics in a stream", stream.topics.len(), TOPICS_PER_STREAM_MAX)?;
        check_partition_total(total, op.config.partitions)?;
        let id = stream.next_topic_id;
        let next = next_id("topic", id)?;
        let topic = Topic {
            id,
            name: op.name.clone(),
            created_us: op.created_us,
            config: op.config.clone(),
            partitions: op.config.partitions,
            groups: BTreeSet::new(),
            super_stream: None,
            policy: TopicPolicy::default(),
            consumers: BTreeMap::new(),
        };
        let stream = self.stream_mut(&op.stream)?;
        stream.topics.insert(op.name.clone(), topic);
        stream.next_topic_id = next;
        Ok(())
    }

    fn delete_topic(&mut self, op: &TopicOp) -> Result<(), MetadataError> {
        self.topic(&op.stream, &op.topic)?;
        self.stream_mut(&op.stream)?.topics.remove(&op.topic);
        Ok(())
    }

    fn add_partitions(&mut self, op: &PartitionsOp) -> Result<(), MetadataError> {
        let total = self.partition_count();
        let (_, topic) = self.topic(&op.stream, &op.topic)?;
        if topic.super_stream.is_some() {
            return Err(MetadataError::InvalidArgument(format!(
                "`{}/{}` is a super stream: its partitions are fixed at creation (more would move \
                 every hashed routing key)",
                op.stream, op.topic
            )));
        }
        let partitions = topic.partitions.saturating_add(op.count);
        if op.count == 0 || partitions > PARTITIONS_PER_TOPIC_MAX {
            return Err(MetadataError::InvalidArgument(format!(
                "cannot add {} partitions to {}: a topic has 1..={PARTITIONS_PER_TOPIC_MAX} partitions \
                 and at least one must be added",
                op.count, topic.partitions
            )));
        }
        check_partition_total(total, op.count)?;
        let topic = self.topic_mut(&op.stream, &op.topic)?;
        topic.partitions = partitions;
        topic.config.partitions = partitions;
        Ok(())
    }

    fn create_user(&mut self, op: &CreateUserOp) -> Result<(), MetadataError> {
        validate_name(&op.name)?;
        if self.users.contains_key(&op.name) {
            return Err(MetadataError::AlreadyExists { what: "user", name: op.name.clone() });
        }
        check_count("users", self.users.len(), USERS_MAX)?;
        auth::check_password_hash(&op.password_hash)?;
        check_permissions(&op.permissions)?;
        let id = self.next_user_id;
        let next = next_id("user", id)?;
        let user = User {
            id,
            name: op.name.clone(),
            password_hash: op.password_hash.clone(),
            admin: op.admin,
            permissions: op.permissions.clone(),
        };
        self.users.insert(op.name.clone(), user);
        self.next_user_id = next;
        Ok(())
    }

    fn delete_user(&mut self, op: &NameOp) -> Result<(), MetadataError> {
        let user = self.user(&op.name)?;
        if user.admin && self.users.values().filter(|u| u.admin).count() == 1 {
            return Err(MetadataError::InvalidArgument(format!(
                "cannot delete `{}`: it is the last admin user",
                op.name
            )));
        }
        self.users.remove(&op.name);
        Ok(())
    }

    fn set_permissions(&mut self, op: &SetPermissionsOp) -> Result<(), MetadataError> {
        self.user(&op.user)?;
        check_permissions(&op.permissions)?;
        let user = self.users.get_mut(&op.user).ok_or_else(|| MetadataError::UnknownUser(op.user.clone()))?;
        user.permissions = op.permissions.clone();
        Ok(())
    }

    fn create_group(&mut self, op: &GroupOp) -> Result<(), MetadataError> {
        let (_, topic) = self.topic(&op.stream, &op.topic)?;
        validate_name(&op.group)?;
        if topic.groups.contains(&op.group) {
            let name = format!("{}/{}/{}", op.stream, op.topic, op.group);
            return Err(MetadataError::AlreadyExists { what: "group", name });
        }
        check_count("groups on a topic", topic.groups.len(), GROUPS_PER_TOPIC_MAX)?;
        self.topic_mut(&op.stream, &op.topic)?.groups.insert(op.group.clone());
        Ok(())
    }

    fn delete_group(&mut self, op: &GroupOp) -> Result<(), MetadataError> {
        self.group(&op.stream, &op.topic, &op.group)?;
        self.topic_mut(&op.stream, &op.topic)?.groups.remove(&op.group);
        Ok(())
    }

    fn create_super_stream(&mut self, op: &CreateSuperStreamOp) -> Result<(), MetadataError> {
        let super_stream = op.check()?;
        self.create_topic(&op.topic_op())?;
        self.topic_mut(&op.stream, &op.name)?.super_stream = Some(super_stream);
        Ok(())
    }

    fn delete_super_stream(&mut self, op: &TopicOp) -> Result<(), MetadataError> {
        self.super_stream(&op.stream, &op.topic)?;
        self.delete_topic(op)
    }

    /// The super stream `name` of stream `stream`, with its stream and topic;
    /// [`MetadataError::NotASuperStream`] when the topic is a plain one.
    pub fn super_stream(
        &self,
        stream: &str,
        name: &str,
    ) -> Result<(&Stream, &Topic, &SuperStream), MetadataError> {
        let (found_stream, topic) = self.topic(stream, name)?;
        match &topic.super_stream {
            Some(super_stream) => Ok((found_stream, topic, super_stream)),
            None => {
                Err(MetadataError::NotASuperStream { stream: stream.to_string(), topic: name.to_string() })
            }
        }
    }

    fn stream_mut(&mut self, name: &str) -> Result<&mut Stream, MetadataError> {
        self.streams.get_mut(name).ok_or_else(|| MetadataError::UnknownStream(name.to_string()))
    }

    pub(super) fn topic_mut(&mut self, stream: &str, topic: &str) -> Result<&mut Topic, MetadataError> {
        let unknown = || MetadataError::UnknownTopic { stream: stream.to_string(), topic: topic.to_string() };
        self.stream_mut(stream)?.topics.get_mut(topic).ok_or_else(unknown)
    }

    /// Partitions over all topics.
    fn partition_count(&self) -> u64 {
        self.streams.values().flat_map(|s| s.topics.values()).map(|t| u64::from(t.partitions)).sum()
    }

    /// Checks the invariants of the module documentation (debug builds, after every apply).
    #[cfg(debug_assertions)]
    fn assert_invariants(&self) {
        let mut stream_ids = BTreeSet::new();
        for (name, stream) in &self.streams {
            assert_eq!(name, &stream.name, "stream key");
            assert!(stream.id >= 1 && stream.id < self.next_stream_id, "stream id {}", stream.id);
            assert!(stream_ids.insert(stream.id), "duplicate stream id {}", stream.id);
            let mut topic_ids = BTreeSet::new();
            for (name, topic) in &stream.topics {
                assert_eq!(name, &topic.name, "topic key");
                assert!(topic.id >= 1 && topic.id < stream.next_topic_id, "topic id {}", topic.id);
                assert!(topic_ids.insert(topic.id), "duplicate topic id {}", topic.id);
                assert_eq!(topic.config.partitions, topic.partitions);
                assert!((1..=PARTITIONS_PER_TOPIC_MAX).contains(&topic.partitions));
                assert!(topic.groups.len() <= GROUPS_PER_TOPIC_MAX);
                if let Some(super_stream) = &topic.super_stream {
                    assert_eq!(super_stream.binding_keys.len(), topic.partitions as usize, "binding keys");
                }
            }
            assert!(stream.topics.len() <= TOPICS_PER_STREAM_MAX);
        }
        assert!(self.streams.len() <= STREAMS_MAX);
        assert!(self.partition_count() <= PARTITIONS_MAX);
        let mut user_ids = BTreeSet::new();
        for (name, user) in &self.users {
            assert_eq!(name, &user.name, "user key");
            assert!(user.id >= 1 && user.id < self.next_user_id, "user id {}", user.id);
            assert!(user_ids.insert(user.id), "duplicate user id {}", user.id);
        }
        assert!(self.users.len() <= USERS_MAX);
    }
}

fn unknown_group(stream: &str, topic: &str, group: &str) -> MetadataError {
    MetadataError::UnknownGroup {
        stream: stream.to_string(),
        topic: topic.to_string(),
        group: group.to_string(),
    }
}

/// Refuses to add one more of `what` when `count` of them exist already.
fn check_count(what: &str, count: usize, count_max: usize) -> Result<(), MetadataError> {
    if count >= count_max {
        return Err(MetadataError::InvalidArgument(format!("too many {what}: at most {count_max}")));
    }
    Ok(())
}

/// The id after `id`, or an error once ids of `what` are exhausted (ids are never reused).
fn next_id(what: &str, id: u32) -> Result<u32, MetadataError> {
    id.checked_add(1).ok_or_else(|| MetadataError::InvalidArgument(format!("{what} ids are exhausted")))
}

fn check_partition_total(total: u64, adding: u32) -> Result<(), MetadataError> {
    if total + u64::from(adding) > PARTITIONS_MAX {
        return Err(MetadataError::InvalidArgument(format!(
            "too many partitions: {total} exist, {adding} more would exceed {PARTITIONS_MAX}"
        )));
    }
    Ok(())
}

fn check_topic_config(config: &TopicConfig) -> Result<(), MetadataError> {
    let problem = if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&config.partitions) {
        Some(format!("partitions {} outside 1..={PARTITIONS_PER_TOPIC_MAX}", config.partitions))
    } else if config
        .segment_bytes
        .is_some_and(|b| !(TOPIC_SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&b))
    {
        Some(format!("segment bytes outside {TOPIC_SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}"))
    } else if config.retention_max_age_us == Some(0) || config.retention_max_bytes == Some(0) {
        Some("a retention limit of 0 would delete everything; leave it unset to keep data".to_string())
    } else {
        None
    };
    match problem {
        Some(reason) => Err(MetadataError::InvalidArgument(reason)),
        None => Ok(()),
    }
}

fn check_permissions(permissions: &[StreamPermission]) -> Result<(), MetadataError> {
    if permissions.len() > PERMISSIONS_PER_USER_MAX {
        return Err(MetadataError::InvalidArgument(format!(
            "too many permission entries: at most {PERMISSIONS_PER_USER_MAX}"
        )));
    }
    let mut streams = BTreeSet::new();
    for permission in permissions {
        if permission.stream != "*" {
            validate_name(&permission.stream)?;
        }
        if !streams.insert(permission.stream.as_str()) {
            return Err(MetadataError::InvalidArgument(format!(
                "stream `{}` is listed twice in the permissions",
                permission.stream
            )));
        }
    }
    Ok(())
}
