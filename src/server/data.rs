//! The data-path handlers: produce, poll, and stored offsets.
//!
//! Run on the connection's shard. A request for a partition this shard owns is served in place;
//! one for a partition owned elsewhere is forwarded over the mesh — a produce moves its whole
//! frame buffer to the owner, so the batch bytes are never copied or re-encoded between shards.
//! Invariants: a produce writes to exactly one partition; poll results hold whole batches; group
//! polls read only the partitions the group assigns to the member.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::handlers::{reply, reply_parts, Context, Reply};
use crate::constants::FILTER_SCAN_BYTES_MAX;
use crate::metadata::auth::Right;
use crate::metadata::catalog::{Stream, Topic};
use crate::protocol::filter::Filter;
use crate::protocol::frame::FrameHeader;
use crate::protocol::messages::{
    ConsumerRef, GetOffset, GroupTarget, OffsetInfo, PartitionTarget, Partitioning, PollRequest,
    PollResponse, PollStrategy, PollTarget, ProduceRequest, ProduceResponse, Status, StoreOffset,
};
use crate::server::frame_pool::FrameBuf;
use crate::shard::error::{BrokerError, BrokerResult};
use crate::shard::mesh::{
    GroupOp, GroupReply, OffsetOp, PartitionKey, PollOutcome, PollSpec, ProduceJob, ShardMessage,
};
use crate::shard::partitions::{LocalPoll, PayloadPart};
use crate::shard::Shard;

/// Longest wait between rounds of a group long poll.
const GROUP_POLL_STEP: Duration = Duration::from_millis(5);

/// The key of a partition, after checking it exists.
pub(crate) fn partition_key(stream: &Stream, topic: &Topic, partition: u32) -> BrokerResult<PartitionKey> {
    if partition >= topic.partitions {
        return Err(BrokerError::new(
            Status::UnknownPartition,
            format!(
                "topic \"{}\" in stream \"{}\" has partitions 0..{}, not {partition}",
                topic.name, stream.name, topic.partitions
            ),
        ));
    }
    Ok(PartitionKey { stream_id: stream.id, topic_id: topic.id, partition })
}

/// FNV-1a 64 of a message key: the stable hash behind key partitioning (documented in
/// docs/protocol.md; clients may compute it to route themselves).
pub fn key_hash(key: &[u8]) -> u64 {
    key.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Produce: picks the partition, appends there (forwarding the frame buffer when another shard
/// owns it), answers the offsets.
pub async fn produce(
    context: &Context<'_>,
    request: ProduceRequest,
    header: FrameHeader,
    frame: FrameBuf,
) -> BrokerResult<Reply> {
    context.require(&request.stream, Right::Write)?;
    let shard = context.shard;
    let catalog = shard.catalog();
    let (stream, topic) = catalog.topic(&request.stream, &request.topic)?;
    let partition = match &request.partitioning {
        Partitioning::Balanced => {
            let cursor = context.session.round_robin.get();
            context.session.round_robin.set(cursor.wrapping_add(1));
            cursor % topic.partitions
        }
        Partitioning::Partition(id) => *id,
        Partitioning::Key(key) => (key_hash(key) % u64::from(topic.partitions)) as u32,
    };
    let key = partition_key(stream, topic, partition)?;
    let acks = produce_on_owner(shard, key, frame, header.payload_range(), request.batch_count).await?;
    reply(&ProduceResponse { partition, acks }, Vec::new())
}

/// Appends the `batch_count` batches at `payload` of `frame` to partition `key`, on this shard
/// when it owns the partition, else on the owner (the buffer moves; nothing is copied). Every
/// wire's produce path comes through here, so the produce-acknowledgement latency is taken here.
pub(crate) async fn produce_on_owner(
    shard: &Shard,
    key: PartitionKey,
    frame: FrameBuf,
    payload: std::ops::Range<usize>,
    batch_count: u32,
) -> BrokerResult<Vec<crate::protocol::messages::BatchAck>> {
    let started = Instant::now();
    let owner = shard.table().owner(key.stream_id, key.topic_id, key.partition);
    let acks = if owner == shard.id {
        shard.partitions.produce(key, frame, payload, batch_count).await
    } else {
        shard.counters.forwarded_requests.fetch_add(1, Ordering::Relaxed);
        shard.metrics.forwarded();
        let payload_address = frame[payload.clone()].as_ptr() as usize;
        shard
            .mesh
            .ask(owner, |reply| {
                ShardMessage::Produce(ProduceJob { key, frame, payload, batch_count, payload_address, reply })
            })
            .await
    };
    if acks.is_ok() {
        shard.metrics.produce_acked(started.elapsed());
    }
    acks
}

/// Polls one partition on its owner. On this shard the answer keeps the segment read buffers
/// (sent from as they are); from another shard it arrives as one copy.
pub(crate) async fn poll_partition(
    shard: &Shard,
    key: PartitionKey,
    spec: PollSpec,
) -> BrokerResult<LocalPoll> {
    let owner = shard.table().owner(key.stream_id, key.topic_id, key.partition);
    let outcome = if owner == shard.id {
        shard.partitions.poll(key, &spec).await?
    } else {
        shard.counters.forwarded_requests.fetch_add(1, Ordering::Relaxed);
        shard.metrics.forwarded();
        let PollOutcome { partition, bytes, filtered } =
            shard.mesh.ask(owner, |reply| ShardMessage::Poll { key, spec, reply }).await?;
        let parts = if bytes.is_empty() { Vec::new() } else { vec![PayloadPart::Owned(bytes)] };
        LocalPoll { partition, parts, filtered }
    };
    if outcome.filtered.batches > 0 {
        shard.counters.filtered_batches.fetch_add(outcome.filtered.batches, Ordering::Relaxed);
        shard.counters.filtered_bytes.fetch_add(outcome.filtered.bytes, Ordering::Relaxed);
    }
    Ok(outcome)
}

/// The filter of a poll request, checked against the limits (none without values).
fn poll_filter(request: &PollRequest) -> BrokerResult<Option<Arc<Filter>>> {
    filter_of(&request.filter, request.match_unfiltered)
}

/// A poll's or subscription's filter, checked against the limits (none without values).
pub(crate) fn filter_of(values: &[String], match_unfiltered: bool) -> BrokerResult<Option<Arc<Filter>>> {
    if values.is_empty() {
        return Ok(None);
    }
    let filter = Filter::new(values, match_unfiltered)
        .map_err(|e| BrokerError::new(Status::InvalidFilter, e.to_string()))?;
    Ok(Some(Arc::new(filter)))
}

/// Checks a consumer or group name.
fn check_name(kind: &str, name: &str) -> BrokerResult<()> {
    crate::metadata::validate_name(name)
        .map_err(|e| BrokerError::new(Status::InvalidName, format!("{kind} name: {e}")))
}

/// Poll: one partition as a named consumer, or a group member's assignment.
pub async fn poll(context: &Context<'_>, request: PollRequest) -> BrokerResult<Reply> {
    let started = Instant::now();
    context.require(&request.stream, Right::Read)?;
    let shard = context.shard;
    let catalog = shard.catalog();
    let (stream, topic) = catalog.topic(&request.stream, &request.topic)?;
    let max_wait = Duration::from_millis(u64::from(request.max_wait_ms)).min(shard.config.max_poll_wait);
    let filter = poll_filter(&request)?;
    let spec = |consumer_key: String, max_wait: Duration| PollSpec {
        strategy: request.strategy,
        consumer_key,
        max_messages: request.max_messages,
        max_bytes: request.max_bytes,
        max_batches: u32::MAX,
        max_wait,
        auto_commit: request.auto_commit,
        filter: filter.clone(),
    };
    let outcomes = match &request.target {
        PollTarget::Partition(PartitionTarget { partition, consumer }) => {
            check_name("consumer", consumer)?;
            let key = partition_key(stream, topic, *partition)?;
            vec![poll_partition(shard, key, spec(format!("c:{consumer}"), max_wait)).await?]
        }
        PollTarget::Group(GroupTarget { group, member_id }) => {
            let group_key = group_key(topic_group(stream, topic, group)?, group);
            let op = GroupOp::Assignment { key: group_key, member_id: *member_id };
            let GroupReply::Assignment(assignment) = shard.group(op).await? else {
                return Err(BrokerError::new(
                    Status::Internal,
                    "controller answered a group assignment oddly",
                ));
            };
            let keys = assignment
                .partitions
                .iter()
                .map(|&p| partition_key(stream, topic, p))
                .collect::<BrokerResult<Vec<_>>>()?;
            poll_group(shard, &keys, &spec(format!("g:{group}"), Duration::ZERO), max_wait).await?
        }
    };
    let mut payload = Vec::with_capacity(outcomes.iter().map(|o| o.parts.len()).sum());
    let mut partitions = Vec::with_capacity(outcomes.len());
    for outcome in outcomes {
        payload.extend(outcome.parts);
        partitions.push(outcome.partition);
    }
    context.shard.metrics.polled(started.elapsed());
    reply_parts(&PollResponse { partitions }, payload)
}

/// Polls each assigned partition in turn within the message and byte budget; when none has data,
/// tries again every few milliseconds until `max_wait` has passed. A filtered partition that
/// skipped batches in one round goes on from there in the next, and its answer keeps the start
/// of its first round.
async fn poll_group(
    shard: &Shard,
    keys: &[PartitionKey],
    spec: &PollSpec,
    max_wait: Duration,
) -> BrokerResult<Vec<LocalPoll>> {
    let deadline = Instant::now() + max_wait;
    // Per partition: (where its first round began, where the next round goes on).
    let mut resume: Vec<Option<(u64, u64)>> = vec![None; keys.len()];
    loop {
        let mut outcomes = Vec::with_capacity(keys.len());
        let (mut messages, mut bytes, mut skipped) = (0_u64, 0_usize, 0_u64);
        for (&key, resume) in keys.iter().zip(resume.iter_mut()) {
            let mut partition_spec = spec.clone();
            partition_spec.max_messages = spec.max_messages.saturating_sub(messages as u32).max(1);
            partition_spec.max_bytes = (spec.max_bytes as usize).saturating_sub(bytes).max(1) as u32;
            if let Some((_, at)) = *resume {
                partition_spec.strategy = PollStrategy::Offset(at);
            }
            let mut outcome = poll_partition(shard, key, partition_spec).await?;
            let marks = &mut outcome.partition;
            let read = marks.next_offset.saturating_sub(marks.start_offset);
            messages += read.saturating_sub(outcome.filtered.records);
            bytes += marks.payload_bytes as usize;
            skipped += outcome.filtered.bytes;
            if marks.next_offset > marks.start_offset {
                let began = resume.map_or(marks.start_offset, |(began, _)| began);
                *resume = Some((began, marks.next_offset));
            }
            if let Some((began, _)) = *resume {
                marks.start_offset = began;
            }
            outcomes.push(outcome);
            if messages >= u64::from(spec.max_messages) || bytes >= spec.max_bytes as usize {
                break;
            }
        }
        let now = Instant::now();
        // A round that skipped a scan budget's worth answers, so the member sees its progress.
        if bytes > 0 || now >= deadline || skipped >= FILTER_SCAN_BYTES_MAX as u64 {
            return Ok(outcomes);
        }
        glommio::timer::sleep(GROUP_POLL_STEP.min(deadline - now)).await;
    }
}

/// The stored-offset key of a consumer, checking that a group exists.
fn consumer_key(stream: &Stream, topic: &Topic, consumer: &ConsumerRef) -> BrokerResult<String> {
    match consumer {
        ConsumerRef::Named(name) => {
            check_name("consumer", name)?;
            Ok(format!("c:{name}"))
        }
        ConsumerRef::Group(group) => {
            topic_group(stream, topic, group)?;
            Ok(format!("g:{group}"))
        }
    }
}

/// Checks that `group` exists on the topic; returns (stream id, topic id).
pub fn topic_group(stream: &Stream, topic: &Topic, group: &str) -> BrokerResult<(u32, u32)> {
    if topic.groups.contains(group) {
        return Ok((stream.id, topic.id));
    }
    Err(BrokerError::new(
        Status::UnknownGroup,
        format!("topic \"{}\" in stream \"{}\" has no consumer group \"{group}\"", topic.name, stream.name),
    ))
}

/// The coordinator key of a group.
pub fn group_key((stream_id, topic_id): (u32, u32), group: &str) -> crate::shard::groups::GroupKey {
    crate::shard::controller::group_key(stream_id, topic_id, group)
}

/// Runs an offset operation on the partition's owner.
pub async fn offset_on_owner(
    shard: &Shard,
    key: PartitionKey,
    consumer_key: String,
    op: OffsetOp,
) -> BrokerResult<OffsetInfo> {
    let owner = shard.table().owner(key.stream_id, key.topic_id, key.partition);
    if owner == shard.id {
        return shard.partitions.offset(key, &consumer_key, op).await;
    }
    shard.mesh.ask(owner, |reply| ShardMessage::Offset { key, consumer_key, op, reply }).await
}

/// OffsetStore.
pub async fn store_offset(context: &Context<'_>, request: StoreOffset) -> BrokerResult<Reply> {
    // Committing consumption progress is part of reading (as in Kafka): the read right suffices.
    context.require(&request.stream, Right::Read)?;
    let catalog = context.shard.catalog();
    let (stream, topic) = catalog.topic(&request.stream, &request.topic)?;
    let key = partition_key(stream, topic, request.partition)?;
    let consumer = consumer_key(stream, topic, &request.consumer)?;
    offset_on_owner(context.shard, key, consumer, OffsetOp::Store(request.offset)).await?;
    reply(&crate::protocol::messages::Empty {}, Vec::new())
}

/// OffsetGet.
pub async fn get_offset(context: &Context<'_>, request: GetOffset) -> BrokerResult<Reply> {
    context.require(&request.stream, Right::Read)?;
    let catalog = context.shard.catalog();
    let (stream, topic) = catalog.topic(&request.stream, &request.topic)?;
    let key = partition_key(stream, topic, request.partition)?;
    let consumer = consumer_key(stream, topic, &request.consumer)?;
    let info = offset_on_owner(context.shard, key, consumer, OffsetOp::Get).await?;
    reply(&info, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hash_is_fnv1a_64() {
        assert_eq!(key_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(key_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(key_hash(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
