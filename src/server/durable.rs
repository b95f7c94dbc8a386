//! Handlers of the durable-consumer and retention kinds: `TopicState`, `ConsumerCreate`,
//! `ConsumerDelete`, `ConsumerInfo`, `ConsumerList`, `Fetch` and `Ack`.
//!
//! Run on the connection's shard. Consumer configuration is metadata (committed through the
//! controller, so every shard's catalog has it); fetches, acks and per-partition state run on
//! the partition's owner shard ([`crate::shard::durable::ops`]), forwarded over the mesh when
//! that is another shard. Invariant: every request checks the user's right on its stream first.

use std::sync::atomic::Ordering;

use super::data::partition_key;
use super::handlers::{decode, reply, reply_parts, Context, Reply};
use crate::metadata::auth::Right;
use crate::metadata::catalog::{Catalog, MetadataOp};
use crate::metadata::durable::{CreateConsumerOp, DeleteConsumerOp};
use crate::protocol::durable::{
    AckRequest, DurableCreate, DurableInfo, DurableList, DurableRef, FetchRequest, PartitionState, TopicState,
};
use crate::protocol::messages::{Empty, Kind, Status, TopicRef};
use crate::shard::durable::ops::{self, DurableOp, DurableReply};
use crate::shard::error::{BrokerError, BrokerResult};
use crate::shard::mesh::{PartitionKey, ShardMessage};
use crate::shard::Shard;

/// Every kind of this module.
pub async fn dispatch(context: &Context<'_>, kind: Kind, body: &[u8]) -> BrokerResult<Reply> {
    match kind {
        Kind::TopicState => topic_state(context, decode(body)?).await,
        Kind::ConsumerCreate => create(context, decode(body)?).await,
        Kind::ConsumerDelete => {
            let request: DurableRef = decode(body)?;
            context.require(&request.stream, Right::Manage)?;
            let op = DeleteConsumerOp { stream: request.stream, topic: request.topic, name: request.name };
            context.shard.commit(MetadataOp::DeleteConsumer(Box::new(op))).await?;
            reply(&Empty {}, Vec::new())
        }
        Kind::ConsumerInfo => {
            let request: DurableRef = decode(body)?;
            context.require(&request.stream, Right::Read)?;
            let info = describe(context.shard, &context.shard.catalog(), &request, true).await?;
            reply(&info, Vec::new())
        }
        Kind::ConsumerList => {
            let request: TopicRef = decode(body)?;
            context.require(&request.stream, Right::Read)?;
            let catalog = context.shard.catalog();
            let (_, topic) = catalog.topic(&request.stream, &request.topic)?;
            let mut consumers = Vec::with_capacity(topic.consumers.len());
            for name in topic.consumers.keys() {
                let named = DurableRef {
                    stream: request.stream.clone(),
                    topic: request.topic.clone(),
                    name: name.clone(),
                };
                consumers.push(describe(context.shard, &catalog, &named, false).await?);
            }
            reply(&DurableList { consumers }, Vec::new())
        }
        Kind::Fetch => fetch(context, decode(body)?).await,
        Kind::Ack => ack(context, decode(body)?).await,
        _ => Err(BrokerError::new(Status::Internal, format!("{kind:?} reached the durable dispatcher"))),
    }
}

async fn create(context: &Context<'_>, request: DurableCreate) -> BrokerResult<Reply> {
    context.require(&request.stream, Right::Manage)?;
    let catalog = context.shard.catalog();
    let existing = catalog.durable(&request.stream, &request.topic, &request.config.name).ok().cloned();
    let catalog = match existing {
        Some(durable) if request.if_missing && durable.config == request.config => catalog,
        _ => {
            let op = CreateConsumerOp {
                stream: request.stream.clone(),
                topic: request.topic.clone(),
                config: request.config.clone(),
                created_us: crate::model::now_us(),
            };
            context.shard.commit(MetadataOp::CreateConsumer(Box::new(op))).await?
        }
    };
    let named = DurableRef { stream: request.stream, topic: request.topic, name: request.config.name };
    reply(&describe(context.shard, &catalog, &named, false).await?, Vec::new())
}

/// A consumer's configuration and, with `states`, its state on every partition.
async fn describe(
    shard: &Shard,
    catalog: &Catalog,
    named: &DurableRef,
    states: bool,
) -> BrokerResult<DurableInfo> {
    let durable = catalog.durable(&named.stream, &named.topic, &named.name)?;
    let (stream, topic) = catalog.topic(&named.stream, &named.topic)?;
    let mut partitions = Vec::new();
    if states {
        for partition in 0..topic.partitions {
            let key = partition_key(stream, topic, partition)?;
            match run(shard, key, DurableOp::Info(named.name.clone())).await? {
                DurableReply::Info(state) => partitions.push(state),
                _ => return Err(unexpected()),
            }
        }
    }
    Ok(DurableInfo {
        stream: named.stream.clone(),
        topic: named.topic.clone(),
        config: durable.config.clone(),
        created_us: durable.created_us,
        partitions,
    })
}

async fn topic_state(context: &Context<'_>, request: TopicRef) -> BrokerResult<Reply> {
    context.require(&request.stream, Right::Read)?;
    let catalog = context.shard.catalog();
    let (stream, topic) = catalog.topic(&request.stream, &request.topic)?;
    let mut partitions = Vec::with_capacity(topic.partitions as usize);
    for partition in 0..topic.partitions {
        let key = partition_key(stream, topic, partition)?;
        match run(context.shard, key, DurableOp::State).await? {
            DurableReply::State(state) => partitions.push(state),
            _ => return Err(unexpected()),
        }
    }
    let total = total_of(&partitions);
    let state = TopicState {
        stream: request.stream,
        topic: request.topic,
        policy: topic.policy.clone(),
        partitions,
        total,
    };
    reply(&state, Vec::new())
}

/// Sums over partitions: the lowest first and the highest last offset, the earliest first and
/// the latest last timestamp.
fn total_of(partitions: &[PartitionState]) -> PartitionState {
    let mut total = PartitionState { partition: u32::MAX, last_offset: -1, ..PartitionState::default() };
    total.first_offset = partitions.iter().map(|p| p.first_offset).min().unwrap_or(0);
    for p in partitions {
        total.messages += p.messages;
        total.bytes += p.bytes;
        total.last_offset = total.last_offset.max(p.last_offset);
        if p.messages > 0
            && (total.first_timestamp_us == 0 || p.first_timestamp_us < total.first_timestamp_us)
        {
            total.first_timestamp_us = p.first_timestamp_us;
        }
        total.last_timestamp_us = total.last_timestamp_us.max(p.last_timestamp_us);
        total.num_deleted += p.num_deleted;
        total.consumer_count = total.consumer_count.max(p.consumer_count);
    }
    total
}

async fn fetch(context: &Context<'_>, request: FetchRequest) -> BrokerResult<Reply> {
    context.require(&request.stream, Right::Read)?;
    let key =
        consumer_partition(context, &request.stream, &request.topic, request.partition, &request.consumer)?;
    match run(context.shard, key, DurableOp::Fetch(request)).await? {
        DurableReply::Fetched(response, parts) => reply_parts(&response, parts),
        _ => Err(unexpected()),
    }
}

async fn ack(context: &Context<'_>, request: AckRequest) -> BrokerResult<Reply> {
    context.require(&request.stream, Right::Read)?;
    let key =
        consumer_partition(context, &request.stream, &request.topic, request.partition, &request.consumer)?;
    match run(context.shard, key, DurableOp::Ack(request)).await? {
        DurableReply::Acked(answer) => reply(&answer, Vec::new()),
        _ => Err(unexpected()),
    }
}

/// The partition of a request naming a durable consumer, after checking both exist.
fn consumer_partition(
    context: &Context<'_>,
    stream: &str,
    topic: &str,
    partition: u32,
    consumer: &str,
) -> BrokerResult<PartitionKey> {
    let catalog = context.shard.catalog();
    catalog.durable(stream, topic, consumer)?;
    let (found_stream, found_topic) = catalog.topic(stream, topic)?;
    partition_key(found_stream, found_topic, partition)
}

/// Runs `op` on the partition's owner (also the standing fetch of a durable push
/// subscription, [`super::subscriptions`]).
pub(crate) async fn run(shard: &Shard, key: PartitionKey, op: DurableOp) -> BrokerResult<DurableReply> {
    let owner = shard.table().owner(key.stream_id, key.topic_id, key.partition);
    if owner == shard.id {
        return ops::run(shard, key, op).await;
    }
    shard.counters.forwarded_requests.fetch_add(1, Ordering::Relaxed);
    shard.metrics.forwarded();
    let sent = shard.mesh.ask(owner, |reply| ShardMessage::Durable { key, op, reply }).await?;
    Ok(sent.into_local())
}

pub(crate) fn unexpected() -> BrokerError {
    BrokerError::new(Status::Internal, "the owner shard answered another operation")
}
