//! OffsetCommit and OffsetFetch: a Kafka group's committed offsets are the native consumer
//! group offsets of the same name on the `--kafka-stream` topics.
//!
//! Runs on the group's coordinator shard (`super::serve`), which checks the committing
//! member's generation against the group state; the offsets themselves are stored and read by
//! the native requests (OffsetStore, OffsetGet), which run on each partition's owner. The
//! native group is created on a topic at its first commit there (one metadata commit; later
//! commits find it in the catalog).
//!
//! Invariants: a commit is stored only when the member may commit (generation and membership,
//! or a negative generation with no members); Kafka's committed offset is the next offset to
//! read, which is what the native store keeps; a partition with no stored offset answers -1;
//! the work is bounded by the request's partitions (or, with null topics, the catalog's).

use std::time::Instant;

use futures::future::join_all;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::super::errors::{code_of, ILLEGAL_GENERATION, OFFSET_OUT_OF_RANGE};
use super::members::INVALID_GROUP_ID;
use crate::metadata::catalog::MetadataOp;
use crate::protocol::messages::{ConsumerRef, GetOffset, OffsetInfo, Status, StoreOffset};
use crate::server::handlers::Context;
use crate::shard::error::{BrokerError, BrokerResult};

/// The membership check of a commit: 0 when allowed.
fn may_commit(context: &Context<'_>, group: &str, member_id: &str, generation: i32) -> i16 {
    let coordinator = &context.shard.kafka_groups;
    let checked =
        coordinator.with(group, false, |state| state.check_commit(member_id, generation, Instant::now()));
    match checked {
        Some(code) => code,
        // No live group: a client assigning itself commits with a negative generation; a
        // positive one is from a generation that is over.
        None if generation < 0 => 0,
        None => ILLEGAL_GENERATION,
    }
}

/// Creates native group `group` on topic `topic` unless the catalog has it. The read right
/// (checked by the caller) suffices, as for a native JoinGroup that creates its group.
async fn ensure_group(context: &Context<'_>, stream: &str, topic: &str, group: &str) -> BrokerResult<()> {
    {
        let catalog = context.shard.catalog();
        let (_, found) = catalog.topic(stream, topic)?;
        if found.groups.contains(group) {
            return Ok(());
        }
    }
    match context.shard.commit(MetadataOp::create_group(stream, topic, group)?).await {
        Err(error) if error.status != Status::AlreadyExists => Err(error),
        _ => Ok(()),
    }
}

async fn store(
    context: &Context<'_>,
    stream: &str,
    group: &str,
    topic: &str,
    partition: i32,
    offset: i64,
) -> i16 {
    let (Ok(partition), Ok(offset)) = (u32::try_from(partition), u64::try_from(offset)) else {
        return OFFSET_OUT_OF_RANGE;
    };
    let request = StoreOffset {
        stream: stream.to_string(),
        topic: topic.to_string(),
        partition,
        consumer: ConsumerRef::Group(group.to_string()),
        offset,
    };
    match crate::server::data::store_offset(context, request).await {
        Ok(_) => 0,
        Err(error) => code_of(&error),
    }
}

/// OffsetCommit: every partition's code.
pub(crate) async fn commit(
    context: &Context<'_>,
    stream: &str,
    request: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let group = request.group_id.0.to_string();
    let mut check =
        may_commit(context, &group, request.member_id.as_str(), request.generation_id_or_member_epoch);
    if check == 0 && crate::metadata::validate_name(&group).is_err() {
        check = INVALID_GROUP_ID;
    }
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let topic_code = if check != 0 {
            check
        } else {
            ensure_group(context, stream, &name, &group).await.err().map_or(0, |e| code_of(&e))
        };
        let codes: Vec<i16> = if topic_code != 0 {
            topic.partitions.iter().map(|_| topic_code).collect()
        } else {
            let stores = topic
                .partitions
                .iter()
                .map(|p| store(context, stream, &group, &name, p.partition_index, p.committed_offset));
            join_all(stores).await
        };
        let partitions = topic
            .partitions
            .iter()
            .zip(codes)
            .map(|(p, code)| {
                OffsetCommitResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(code)
            })
            .collect();
        topics.push(OffsetCommitResponseTopic::default().with_name(topic.name).with_partitions(partitions));
    }
    OffsetCommitResponse::default().with_topics(topics)
}

/// Native OffsetGet (a data request: it runs through the data handler, not `native_call`'s
/// admin dispatcher).
async fn stored(context: &Context<'_>, request: GetOffset) -> BrokerResult<OffsetInfo> {
    let (body, _) = crate::server::data::get_offset(context, request).await?;
    crate::protocol::messages::decode(&body).map_err(|e| BrokerError::new(Status::Internal, e.to_string()))
}

/// One partition's committed offset: (offset or -1, code).
async fn committed(
    context: &Context<'_>,
    stream: &str,
    group: &str,
    topic: &str,
    partition: i32,
) -> (i64, i16) {
    let Ok(partition) = u32::try_from(partition) else {
        return (-1, 0);
    };
    let request = GetOffset {
        stream: stream.to_string(),
        topic: topic.to_string(),
        partition,
        consumer: ConsumerRef::Group(group.to_string()),
    };
    match stored(context, request).await {
        Ok(info) => (info.stored.and_then(|o| i64::try_from(o).ok()).unwrap_or(-1), 0),
        Err(error) if matches!(error.status, Status::UnknownGroup | Status::UnknownTopic) => (-1, 0),
        Err(error) => (-1, code_of(&error)),
    }
}

fn partition_answer(index: i32, (offset, code): (i64, i16)) -> OffsetFetchResponsePartition {
    OffsetFetchResponsePartition::default()
        .with_partition_index(index)
        .with_committed_offset(offset)
        .with_metadata(Some(StrBytes::default()))
        .with_error_code(code)
}

/// OffsetFetch: the asked partitions (-1 where nothing is stored), or with null topics every
/// partition with a stored offset on the topics that have the group.
pub(crate) async fn fetch(
    context: &Context<'_>,
    stream: &str,
    request: OffsetFetchRequest,
) -> OffsetFetchResponse {
    let group = request.group_id.0.to_string();
    let has_group = |topic: &str| {
        let catalog = context.shard.catalog();
        catalog.topic(stream, topic).is_ok_and(|(_, t)| t.groups.contains(&group))
    };
    let mut topics = Vec::new();
    match request.topics {
        Some(asked) => {
            for topic in asked {
                let name = topic.name.0.to_string();
                let answers: Vec<(i64, i16)> = if has_group(&name) {
                    join_all(
                        topic.partition_indexes.iter().map(|&p| committed(context, stream, &group, &name, p)),
                    )
                    .await
                } else {
                    topic.partition_indexes.iter().map(|_| (-1, 0)).collect()
                };
                let partitions = topic
                    .partition_indexes
                    .iter()
                    .zip(answers)
                    .map(|(&p, answer)| partition_answer(p, answer))
                    .collect();
                topics.push(
                    OffsetFetchResponseTopic::default().with_name(topic.name).with_partitions(partitions),
                );
            }
        }
        None => {
            let catalog = context.shard.catalog();
            let mine: Vec<(String, u32)> = catalog
                .stream(stream)
                .map(|s| {
                    s.topics
                        .values()
                        .filter(|t| t.groups.contains(&group))
                        .map(|t| (t.name.clone(), t.partitions))
                        .collect()
                })
                .unwrap_or_default();
            drop(catalog);
            for (name, count) in mine {
                let indexes: Vec<i32> = (0..count).filter_map(|p| i32::try_from(p).ok()).collect();
                let answers =
                    join_all(indexes.iter().map(|&p| committed(context, stream, &group, &name, p))).await;
                let partitions: Vec<OffsetFetchResponsePartition> = indexes
                    .iter()
                    .zip(answers)
                    .filter(|(_, (offset, _))| *offset >= 0)
                    .map(|(&p, answer)| partition_answer(p, answer))
                    .collect();
                if !partitions.is_empty() {
                    let name = TopicName(StrBytes::from_string(name));
                    topics.push(
                        OffsetFetchResponseTopic::default().with_name(name).with_partitions(partitions),
                    );
                }
            }
        }
    }
    OffsetFetchResponse::default().with_topics(topics)
}
