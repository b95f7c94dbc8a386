//! RabbitMQ stream names and the broker's topics: stream `S` is topic `S` (one partition) of the
//! `--rabbitmq-stream` broker stream; a super stream `X` is its topic `X`, and partition `i` of it
//! is the RabbitMQ stream `X-<binding key i>`, as RabbitMQ names a super stream's members.
//!
//! Pure lookups in the shard's catalog copy; run on the connection's shard. Invariant: a name
//! resolves to at most one partition (a plain topic's own name wins over a member name).

use super::codec::codes;
use crate::metadata::catalog::Catalog;
use crate::shard::mesh::PartitionKey;

/// The partition a RabbitMQ stream name stands for.
#[derive(Debug, Clone)]
pub(super) struct Target {
    /// The topic (the stream itself, or the super stream holding it).
    pub(super) topic: String,
    /// Its partition (0 for a plain stream).
    pub(super) partition: u32,
    /// The partition's key.
    pub(super) key: PartitionKey,
}

/// The partition behind RabbitMQ stream `name`, or `STREAM_DOES_NOT_EXIST`.
pub(super) fn resolve(catalog: &Catalog, broker_stream: &str, name: &str) -> Result<Target, u16> {
    let stream = catalog.stream(broker_stream).map_err(|_| codes::STREAM_DOES_NOT_EXIST)?;
    let target = |topic: &crate::metadata::catalog::Topic, partition: u32| Target {
        topic: topic.name.clone(),
        partition,
        key: PartitionKey { stream_id: stream.id, topic_id: topic.id, partition },
    };
    if let Some(topic) = stream.topics.get(name) {
        if topic.super_stream.is_none() && topic.partitions >= 1 {
            return Ok(target(topic, 0));
        }
    }
    for (at, _) in name.rmatch_indices('-') {
        let (owner, key) = (&name[..at], &name[at + 1..]);
        let Some(topic) = stream.topics.get(owner) else { continue };
        let Some(super_stream) = &topic.super_stream else { continue };
        if let Some(partition) = super_stream.binding_keys.iter().position(|bound| bound == key) {
            return Ok(target(topic, partition as u32));
        }
    }
    Err(codes::STREAM_DOES_NOT_EXIST)
}

/// The RabbitMQ names of super stream `name`'s member streams, in partition order; `None` when
/// `name` is not a super stream.
pub(super) fn members(catalog: &Catalog, broker_stream: &str, name: &str) -> Option<Vec<String>> {
    let (_, topic) = catalog.topic(broker_stream, name).ok()?;
    let super_stream = topic.super_stream.as_ref()?;
    Some(super_stream.binding_keys.iter().map(|key| format!("{name}-{key}")).collect())
}

/// A RabbitMQ publisher reference or consumer name as a broker name: kept when it is a valid
/// metadata name, else hex-encoded behind `rmq.` (still unique, still stable across restarts).
pub(super) fn broker_name(name: &str) -> String {
    if crate::metadata::validate_name(name).is_ok() {
        return name.to_string();
    }
    let mut encoded = String::with_capacity(4 + name.len() * 2);
    encoded.push_str("rmq.");
    for byte in name.bytes().take(125) {
        encoded.push_str(&format!("{byte:02x}"));
    }
    encoded
}
