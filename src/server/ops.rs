//! Constructors of metadata changes from request fields, so handlers read as one line each.
//!
//! Pure; runs on the connection's shard before the change is sent to the controller. The
//! controller's catalog re-checks everything on apply; names are checked here too so a bad name
//! fails before a round trip.

use crate::metadata::catalog::{
    CreateStreamOp, CreateTopicOp, GroupOp, MetadataOp, NameOp, PartitionsOp, SetPermissionsOp, TopicOp,
};
use crate::metadata::{validate_name, MetadataError};
use crate::protocol::messages::{StreamPermission, TopicConfig};

type OpResult = Result<MetadataOp, MetadataError>;

impl MetadataOp {
    /// Create stream `name`.
    pub fn create_stream(name: &str, created_us: u64) -> OpResult {
        validate_name(name)?;
        Ok(MetadataOp::CreateStream(CreateStreamOp { name: name.to_string(), created_us }))
    }

    /// Delete stream `name` and everything in it.
    pub fn delete_stream(name: &str) -> OpResult {
        Ok(MetadataOp::DeleteStream(NameOp { name: name.to_string() }))
    }

    /// Create topic `name` in `stream`.
    pub fn create_topic(stream: &str, name: &str, config: TopicConfig, created_us: u64) -> OpResult {
        validate_name(name)?;
        let op = CreateTopicOp { stream: stream.to_string(), name: name.to_string(), config, created_us };
        Ok(MetadataOp::CreateTopic(op))
    }

    /// Delete a topic.
    pub fn delete_topic(stream: &str, topic: &str) -> OpResult {
        Ok(MetadataOp::DeleteTopic(TopicOp { stream: stream.to_string(), topic: topic.to_string() }))
    }

    /// Add `count` partitions to a topic.
    pub fn add_partitions(stream: &str, topic: &str, count: u32) -> OpResult {
        Ok(MetadataOp::AddPartitions(PartitionsOp {
            stream: stream.to_string(),
            topic: topic.to_string(),
            count,
        }))
    }

    /// Delete user `name`.
    pub fn delete_user(name: &str) -> OpResult {
        Ok(MetadataOp::DeleteUser(NameOp { name: name.to_string() }))
    }

    /// Replace a user's per-stream rights.
    pub fn set_permissions(user: &str, permissions: Vec<StreamPermission>) -> OpResult {
        Ok(MetadataOp::SetPermissions(SetPermissionsOp { user: user.to_string(), permissions }))
    }

    /// Create consumer group `group` on a topic.
    pub fn create_group(stream: &str, topic: &str, group: &str) -> OpResult {
        validate_name(group)?;
        Ok(MetadataOp::CreateGroup(GroupOp {
            stream: stream.to_string(),
            topic: topic.to_string(),
            group: group.to_string(),
        }))
    }

    /// Delete a consumer group.
    pub fn delete_group(stream: &str, topic: &str, group: &str) -> OpResult {
        Ok(MetadataOp::DeleteGroup(GroupOp {
            stream: stream.to_string(),
            topic: topic.to_string(),
            group: group.to_string(),
        }))
    }
}
