//! The named-producer handlers: ProducerDeclare, ProducerSequence, ProducerDelete,
//! ProducerHeartbeat, ProducerClose and ProducerList.
//!
//! Run on the connection's shard, one task per request; the work happens on the topic's
//! coordinator shard and the partitions' owners (`crate::shard::producer_ops`). Invariants:
//! declaring, heartbeating and closing need the Write right on the stream, reading sequences
//! and listing need Read, deleting needs Manage; a session that declared remembers the
//! coordinator so that its leases end when it closes.

use std::collections::BTreeMap;

use super::handlers::{decode, reply, Context, Reply};
use crate::metadata::auth::{self, Right};
use crate::metadata::catalog::{Stream, Topic};
use crate::protocol::messages::{
    AccessMode, Empty, Kind, PartitionSequence, ProducerDeclare, ProducerDeclared, ProducerHeartbeat,
    ProducerInfo, ProducerList, ProducerListRequest, ProducerRef, ProducerSequenceInfo, Status,
};
use crate::shard::error::{BrokerError, BrokerResult};
use crate::shard::leases::{Holder, TopicKey};
use crate::shard::mesh::{PartitionKey, ProducerOp, ProducerReply};
use crate::shard::producers::{producer_id, ProducerState};

/// Serves one producer kind.
pub async fn dispatch(context: &Context<'_>, kind: Kind, body: &[u8]) -> BrokerResult<Reply> {
    match kind {
        Kind::ProducerDeclare => declare(context, decode(body)?).await,
        Kind::ProducerSequence => sequence(context, decode(body)?).await,
        Kind::ProducerDelete => delete(context, decode(body)?).await,
        Kind::ProducerHeartbeat => heartbeat(context, decode(body)?, false).await,
        Kind::ProducerClose => heartbeat(context, decode(body)?, true).await,
        Kind::ProducerList => list(context, decode(body)?).await,
        other => Err(BrokerError::new(Status::Internal, format!("{other:?} reached the producer handlers"))),
    }
}

fn check_name(name: &str) -> BrokerResult<()> {
    crate::metadata::validate_name(name)
        .map_err(|e| BrokerError::new(Status::InvalidName, format!("producer name: {e}")))
}

fn topic_key(stream: &Stream, topic: &Topic) -> TopicKey {
    TopicKey { stream_id: stream.id, topic_id: topic.id }
}

async fn declare(context: &Context<'_>, request: ProducerDeclare) -> BrokerResult<Reply> {
    context.require(&request.stream, Right::Write)?;
    check_name(&request.name)?;
    let shard = context.shard;
    let catalog = shard.catalog();
    let (stream, topic) = catalog.topic(&request.stream, &request.topic)?;
    let key = topic_key(stream, topic);
    let coordinator = shard.coordinator(key);
    let session = context.session;
    let address = session.address.map_or_else(|| "unknown peer".to_string(), |a| a.to_string());
    let holder = Holder { session: session.id, address };
    session.producer_coordinators.borrow_mut().insert(coordinator);
    let op = ProducerOp::Claim {
        topic: key,
        partitions: topic.partitions,
        name: request.name.clone(),
        access: request.access,
        holder,
    };
    match shard.producer_op(coordinator, op).await? {
        ProducerReply::Declared { id, epoch, sequences } => {
            let partitions = sequences
                .into_iter()
                .enumerate()
                .map(|(partition, last_sequence)| PartitionSequence {
                    partition: partition as u32,
                    last_sequence,
                })
                .collect();
            let session_timeout_ms = shard.config.producer_session_timeout.as_millis() as u64;
            reply(&ProducerDeclared { producer_id: id, epoch, partitions, session_timeout_ms }, Vec::new())
        }
        other => Err(BrokerError::new(Status::Internal, format!("unexpected declare reply {other:?}"))),
    }
}

async fn sequence(context: &Context<'_>, request: ProducerRef) -> BrokerResult<Reply> {
    context.require(&request.stream, Right::Read)?;
    check_name(&request.name)?;
    let shard = context.shard;
    let catalog = shard.catalog();
    let (stream, topic) = catalog.topic(&request.stream, &request.topic)?;
    if request.partition >= topic.partitions {
        return Err(BrokerError::new(
            Status::UnknownPartition,
            format!(
                "topic \"{}\" has partitions 0..{}, not {}",
                topic.name, topic.partitions, request.partition
            ),
        ));
    }
    let key = PartitionKey { stream_id: stream.id, topic_id: topic.id, partition: request.partition };
    let owner = shard.table().owner(key.stream_id, key.topic_id, key.partition);
    let id = producer_id(&request.name);
    match shard.producer_op(owner, ProducerOp::State { key, id }).await? {
        ProducerReply::State(Some(state)) => reply(
            &ProducerSequenceInfo { producer_id: id, epoch: state.epoch, last_sequence: state.last_sequence },
            Vec::new(),
        ),
        ProducerReply::State(None) => Err(unknown(&request.name, &request.topic)),
        other => Err(BrokerError::new(Status::Internal, format!("unexpected sequence reply {other:?}"))),
    }
}

fn unknown(name: &str, topic: &str) -> BrokerError {
    BrokerError::new(
        Status::UnknownProducer,
        format!("no producer \"{name}\" is known on topic \"{topic}\" (never declared, deleted or expired)"),
    )
}

async fn delete(context: &Context<'_>, request: ProducerRef) -> BrokerResult<Reply> {
    context.require(&request.stream, Right::Manage)?;
    check_name(&request.name)?;
    let shard = context.shard;
    let catalog = shard.catalog();
    let (stream, topic) = catalog.topic(&request.stream, &request.topic)?;
    let key = topic_key(stream, topic);
    let op = ProducerOp::Forget {
        topic: key,
        partitions: topic.partitions,
        name: request.name.clone(),
        session: context.session.id,
    };
    match shard.producer_op(shard.coordinator(key), op).await? {
        ProducerReply::Deleted(true) => reply(&Empty {}, Vec::new()),
        ProducerReply::Deleted(false) => Err(unknown(&request.name, &request.topic)),
        other => Err(BrokerError::new(Status::Internal, format!("unexpected delete reply {other:?}"))),
    }
}

/// ProducerHeartbeat, or ProducerClose when `close`.
async fn heartbeat(context: &Context<'_>, request: ProducerHeartbeat, close: bool) -> BrokerResult<Reply> {
    context.require(&request.stream, Right::Write)?;
    check_name(&request.name)?;
    let shard = context.shard;
    let catalog = shard.catalog();
    let (stream, topic) = catalog.topic(&request.stream, &request.topic)?;
    let key = topic_key(stream, topic);
    let (name, session) = (request.name, context.session.id);
    let op = if close {
        ProducerOp::Release { topic: key, name, session }
    } else {
        ProducerOp::Heartbeat { topic: key, name, session }
    };
    shard.producer_op(shard.coordinator(key), op).await?;
    reply(&Empty {}, Vec::new())
}

async fn list(context: &Context<'_>, request: ProducerListRequest) -> BrokerResult<Reply> {
    let shard = context.shard;
    let catalog = shard.catalog();
    let mut states: Vec<(PartitionKey, ProducerState)> = Vec::new();
    let mut leases = Vec::new();
    for target in 0..shard.shards() {
        match shard.producer_op(target, ProducerOp::List).await? {
            ProducerReply::Listed { states: s, leases: l } => {
                states.extend(s);
                leases.extend(l);
            }
            other => {
                return Err(BrokerError::new(Status::Internal, format!("unexpected list reply {other:?}")))
            }
        }
    }
    // (stream id, topic id, producer id) → the producer as listed.
    let mut producers: BTreeMap<(u32, u32, u64), ProducerInfo> = BTreeMap::new();
    let names: BTreeMap<(u32, u32), (&Stream, &Topic)> = catalog
        .streams
        .values()
        .filter(|s| request.stream.as_ref().is_none_or(|wanted| wanted == &s.name))
        .filter(|s| auth::allowed(&context.user, &s.name, Right::Read))
        .flat_map(|s| s.topics.values().map(move |t| ((s.id, t.id), (s, t))))
        .collect();
    for (key, state) in states {
        let Some(info) = slot(&mut producers, &names, (key.stream_id, key.topic_id, state.id)) else {
            continue;
        };
        if info.name.is_empty() {
            info.name = state.name.clone();
        }
        info.epoch = info.epoch.max(state.epoch);
        if let Some(partition) = info.partitions.get_mut(key.partition as usize) {
            partition.last_sequence = state.last_sequence;
        }
    }
    for lease in leases {
        let key = (lease.topic.stream_id, lease.topic.topic_id, lease.id);
        let Some(info) = slot(&mut producers, &names, key) else { continue };
        info.name = lease.name;
        info.epoch = info.epoch.max(lease.epoch);
        info.access = lease.access;
        info.leased = true;
        info.holder = Some(lease.holder.address);
    }
    reply(&ProducerList { producers: producers.into_values().collect() }, Vec::new())
}

/// The listed producer at `key` (stream id, topic id, producer id), created on first sight;
/// `None` for a topic the user may not see.
fn slot<'a>(
    producers: &'a mut BTreeMap<(u32, u32, u64), ProducerInfo>,
    names: &BTreeMap<(u32, u32), (&Stream, &Topic)>,
    key: (u32, u32, u64),
) -> Option<&'a mut ProducerInfo> {
    let (stream, topic) = names.get(&(key.0, key.1))?;
    Some(producers.entry(key).or_insert_with(|| {
        ProducerInfo {
            stream: stream.name.clone(),
            topic: topic.name.clone(),
            name: String::new(),
            producer_id: key.2,
            epoch: 0,
            access: AccessMode::Shared,
            leased: false,
            holder: None,
            partitions: (0..topic.partitions)
                .map(|partition| PartitionSequence { partition, last_sequence: None })
                .collect(),
        }
    }))
}
