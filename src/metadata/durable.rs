//! Retention policies and durable consumers in the catalog: the ops that create a topic with a
//! [`TopicPolicy`] and that create and delete durable consumers, and their validation.
//!
//! Runs where the catalog does (the controller applies, every shard reads). Invariants: a
//! durable consumer's configuration passed [`DurableConfig::check`]; on a work-queue topic no
//! two consumers' filters overlap ([`filters_overlap`]); ops are boxed in
//! [`super::MetadataOp`] so the archived op never grows (see `docs/architecture.md`, storage
//! decision 10).

use rkyv::{Archive, Deserialize, Serialize};

use super::catalog::{Catalog, CreateTopicOp};
use super::MetadataError;
use crate::protocol::durable::{DurableConfig, Retention, TopicPolicy};
use crate::protocol::subject::filters_overlap;

/// The most durable consumers on one topic.
pub const CONSUMERS_PER_TOPIC_MAX: usize = 1024;

/// [`super::MetadataOp::CreateTopicWithPolicy`]: a topic with retention settings.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct CreateTopicPolicyOp {
    /// The topic.
    pub topic: CreateTopicOp,
    /// Its policy.
    pub policy: TopicPolicy,
}

/// [`super::MetadataOp::CreateConsumer`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct CreateConsumerOp {
    /// Stream name.
    pub stream: String,
    /// Topic name.
    pub topic: String,
    /// The consumer.
    pub config: DurableConfig,
    /// Creation time (µs), taken by the controller.
    pub created_us: u64,
}

/// [`super::MetadataOp::DeleteConsumer`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DeleteConsumerOp {
    /// Stream name.
    pub stream: String,
    /// Topic name.
    pub topic: String,
    /// Consumer name.
    pub name: String,
}

/// A durable consumer as the catalog keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durable {
    /// Its configuration.
    pub config: DurableConfig,
    /// Creation time (µs).
    pub created_us: u64,
}

impl Catalog {
    pub(super) fn create_topic_with_policy(&mut self, op: &CreateTopicPolicyOp) -> Result<(), MetadataError> {
        op.policy.check().map_err(MetadataError::InvalidArgument)?;
        self.create_topic(&op.topic)?;
        self.topic_mut(&op.topic.stream, &op.topic.name)?.policy = op.policy.clone();
        Ok(())
    }

    pub(super) fn create_consumer(&mut self, op: &CreateConsumerOp) -> Result<(), MetadataError> {
        super::validate_name(&op.config.name)?;
        op.config.check().map_err(MetadataError::InvalidArgument)?;
        let (_, topic) = self.topic(&op.stream, &op.topic)?;
        if topic.consumers.contains_key(&op.config.name) {
            let name = format!("{}/{}/{}", op.stream, op.topic, op.config.name);
            return Err(MetadataError::AlreadyExists { what: "consumer", name });
        }
        if topic.consumers.len() >= CONSUMERS_PER_TOPIC_MAX {
            return Err(MetadataError::InvalidArgument(format!(
                "topic already has {CONSUMERS_PER_TOPIC_MAX} durable consumers"
            )));
        }
        if topic.policy.retention == Retention::WorkQueue {
            if let Some(other) =
                topic.consumers.values().find(|d| filters_overlap(&d.config.filter, &op.config.filter))
            {
                return Err(MetadataError::FilterOverlap(format!(
                    "work-queue topic `{}/{}`: the filter of `{}` ({:?}) overlaps that of `{}` ({:?}); \
                     a message may go to one consumer only",
                    op.stream,
                    op.topic,
                    op.config.name,
                    op.config.filter,
                    other.config.name,
                    other.config.filter
                )));
            }
        }
        let durable = Durable { config: op.config.clone(), created_us: op.created_us };
        self.topic_mut(&op.stream, &op.topic)?.consumers.insert(op.config.name.clone(), durable);
        Ok(())
    }

    pub(super) fn delete_consumer(&mut self, op: &DeleteConsumerOp) -> Result<(), MetadataError> {
        self.durable(&op.stream, &op.topic, &op.name)?;
        self.topic_mut(&op.stream, &op.topic)?.consumers.remove(&op.name);
        Ok(())
    }

    /// The durable consumer `name` of a topic.
    pub fn durable(&self, stream: &str, topic: &str, name: &str) -> Result<&Durable, MetadataError> {
        let (_, found) = self.topic(stream, topic)?;
        found.consumers.get(name).ok_or_else(|| MetadataError::UnknownConsumer {
            stream: stream.to_string(),
            topic: topic.to_string(),
            name: name.to_string(),
        })
    }
}
