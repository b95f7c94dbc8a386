//! Metadata: the broker's catalog (streams, topics, partitions, consumer groups, users), the
//! persisted log of changes to it, the partition→shard table and authentication.
//!
//! What it owns:
//! * [`catalog`]: the [`Catalog`], plain data, and [`MetadataOp`], the unit of change. Every change
//!   goes through [`Catalog::apply`], which validates it completely before touching anything.
//! * [`log`]: the [`MetadataLog`], a [`crate::storage::PartitionLog`] under `data_dir/metadata/`
//!   holding one [`MetadataOp`] per batch, fsynced before a change is acknowledged. Opening it
//!   replays every op into a fresh catalog.
//! * [`super_stream`]: what makes a topic a super stream (routing, binding keys), its ops'
//!   rules and routing a key to partitions.
//! * [`table`]: the [`ShardTable`], a pure function from (stream id, topic id, partition) to the
//!   owning shard.
//! * [`auth`]: argon2id password hashes and the per-stream rights check.
//!
//! Which core: the controller shard alone owns the [`MetadataLog`] and commits ops; after each
//! commit it broadcasts the new catalog to every shard as an `Arc<Catalog>` (the catalog is
//! `Clone + Send` plain data). Every other shard only reads its copy. [`ShardTable`] and [`auth`]
//! are pure and run anywhere.
//!
//! Invariants: the catalog in memory is exactly the replay of the metadata log; an op is either
//! applied to the log and the catalog together or to neither; ids are never reused, so a
//! recreated stream or topic gets a new data directory; names are 1..=[`NAME_BYTES_MAX`] bytes of
//! `[A-Za-z0-9._-]` and never `.` or `..` (they are safe as path components, though paths use ids).

use std::fmt;

use crate::protocol::messages::Status;
use crate::storage::StorageError;

pub mod auth;
pub mod catalog;
pub mod durable;
pub mod log;
pub mod super_stream;
pub mod table;

pub use auth::{
    allowed, check_password_hash, create_user_op, hash_password, root_user_op, verify_password, Right,
};
pub use catalog::{
    Catalog, CreateStreamOp, CreateTopicOp, CreateUserOp, GroupOp, MetadataOp, NameOp, PartitionsOp,
    SetPermissionsOp, Stream, Topic, TopicOp, User,
};
pub use log::MetadataLog;
pub use table::ShardTable;

#[cfg(test)]
mod tests;

/// The longest name of a stream, topic, group or user.
pub const NAME_BYTES_MAX: usize = 255;

/// Why a metadata operation failed. [`MetadataError::status`] gives the wire status.
#[derive(Debug)]
pub enum MetadataError {
    /// No stream by that name.
    UnknownStream(String),
    /// No topic by that name in the stream.
    UnknownTopic {
        /// Stream name.
        stream: String,
        /// Topic name.
        topic: String,
    },
    /// The topic has no partition with that id.
    UnknownPartition {
        /// Stream name.
        stream: String,
        /// Topic name.
        topic: String,
        /// The partition asked for.
        partition: u32,
    },
    /// No user by that name.
    UnknownUser(String),
    /// No consumer group by that name in the topic.
    UnknownGroup {
        /// Stream name.
        stream: String,
        /// Topic name.
        topic: String,
        /// Group name.
        group: String,
    },
    /// A resource by that name exists already.
    AlreadyExists {
        /// "stream", "topic", "user" or "group".
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// A name breaks the naming rule (see [`validate_name`]).
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The topic exists but is not a super stream.
    NotASuperStream {
        /// Stream name.
        stream: String,
        /// Topic name.
        topic: String,
    },
    /// No durable consumer by that name on the topic.
    UnknownConsumer {
        /// Stream name.
        stream: String,
        /// Topic name.
        topic: String,
        /// Consumer name.
        name: String,
    },
    /// A work-queue consumer's filter overlaps another's.
    FilterOverlap(String),
    /// An argument is out of range or inconsistent (limits, last admin, malformed hash).
    InvalidArgument(String),
    /// The metadata log failed.
    Storage(StorageError),
    /// Replaying the metadata log found an op that does not decode or apply: the log and the
    /// code disagree, and starting with a partial catalog would silently lose resources.
    Replay {
        /// Offset of the op in the metadata log.
        offset: u64,
        /// What went wrong.
        reason: String,
    },
}

impl MetadataError {
    /// The wire status this error is reported with.
    pub fn status(&self) -> Status {
        match self {
            MetadataError::UnknownStream(_) => Status::UnknownStream,
            MetadataError::UnknownTopic { .. } => Status::UnknownTopic,
            MetadataError::UnknownPartition { .. } => Status::UnknownPartition,
            MetadataError::UnknownUser(_) => Status::UnknownUser,
            MetadataError::UnknownGroup { .. } => Status::UnknownGroup,
            MetadataError::AlreadyExists { .. } => Status::AlreadyExists,
            MetadataError::InvalidName { .. } => Status::InvalidName,
            MetadataError::InvalidArgument(_) => Status::InvalidArgument,
            MetadataError::UnknownConsumer { .. } => Status::UnknownConsumer,
            MetadataError::FilterOverlap(_) => Status::FilterOverlap,
            MetadataError::NotASuperStream { .. } => Status::NotASuperStream,
            MetadataError::Storage(error) => match error {
                StorageError::Poisoned { .. } => Status::PartitionPoisoned,
                StorageError::Io(io) if io.is_out_of_space() => Status::OutOfSpace,
                StorageError::Closed => Status::ShuttingDown,
                _ => Status::StorageFailed,
            },
            MetadataError::Replay { .. } => Status::Internal,
        }
    }
}

impl fmt::Display for MetadataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetadataError::UnknownStream(stream) => write!(f, "stream `{stream}` does not exist"),
            MetadataError::UnknownTopic { stream, topic } => {
                write!(f, "topic `{topic}` does not exist in stream `{stream}`")
            }
            MetadataError::UnknownPartition { stream, topic, partition } => {
                write!(f, "partition {partition} does not exist in topic `{stream}/{topic}`")
            }
            MetadataError::UnknownUser(user) => write!(f, "user `{user}` does not exist"),
            MetadataError::UnknownGroup { stream, topic, group } => {
                write!(f, "consumer group `{group}` does not exist in topic `{stream}/{topic}`")
            }
            MetadataError::AlreadyExists { what, name } => write!(f, "{what} `{name}` already exists"),
            MetadataError::InvalidName { name, reason } => {
                write!(f, "invalid name `{}`: {reason}", name.escape_debug())
            }
            MetadataError::InvalidArgument(reason) => write!(f, "invalid argument: {reason}"),
            MetadataError::UnknownConsumer { stream, topic, name } => {
                write!(f, "durable consumer `{name}` does not exist in topic `{stream}/{topic}`")
            }
            MetadataError::FilterOverlap(reason) => f.write_str(reason),
            MetadataError::NotASuperStream { stream, topic } => {
                write!(f, "topic `{topic}` in stream `{stream}` is not a super stream")
            }
            MetadataError::Storage(error) => write!(f, "metadata log: {error}"),
            MetadataError::Replay { offset, reason } => {
                write!(f, "metadata log op at offset {offset} cannot be replayed: {reason}")
            }
        }
    }
}

impl std::error::Error for MetadataError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MetadataError::Storage(error) => Some(error),
            _ => None,
        }
    }
}

impl From<StorageError> for MetadataError {
    fn from(error: StorageError) -> Self {
        MetadataError::Storage(error)
    }
}

/// Checks the naming rule shared by streams, topics, groups and users: 1..=[`NAME_BYTES_MAX`]
/// bytes of `[A-Za-z0-9._-]`, and not `.` or `..`.
pub fn validate_name(name: &str) -> Result<(), MetadataError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > NAME_BYTES_MAX {
        Some("longer than 255 bytes")
    } else if name == "." || name == ".." {
        Some("`.` and `..` are reserved")
    } else if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        Some("only A-Z, a-z, 0-9, `.`, `_` and `-` are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(MetadataError::InvalidName { name: truncated(name), reason }),
        None => Ok(()),
    }
}

/// At most [`NAME_BYTES_MAX`] bytes of `name` (cut at a character boundary), so an error never
/// carries an unbounded string back to a client.
fn truncated(name: &str) -> String {
    let mut end = name.len().min(NAME_BYTES_MAX);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
}

const _: () = assert!(NAME_BYTES_MAX == 255, "the InvalidName message names the limit");
