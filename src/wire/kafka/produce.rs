//! Produce and InitProducerId: Kafka record batches become our batches (`records`) and go to the
//! partition's owner by the native produce path; idempotent producers are our named producers.
//!
//! Runs on the connection's shard. [`prepare`] runs in the reader, so a connection's appends
//! leave in the order its requests came; [`finish`] runs as the request's task. The mapping of
//! idempotence (docs/architecture.md): InitProducerId hands out a Kafka producer id `P`
//! (microsecond clock and shard, unique over restarts); the first batch of `P` at Kafka epoch `E`
//! for topic `T` on a connection joins (or, when none exists, declares) our named producer
//! `kafka-P-E` on `T` (shared access), and every such batch is then written with that producer's
//! id and epoch and Kafka's sequence numbers, so the owner's producer table drops retried batches
//! across connections and restarts, and answers them with the original offsets. A Kafka epoch
//! bump restarts sequences at 0, which a new name gives. The connection renews the leases of
//! the producers it declared while it lives.
//!
//! Invariants: an answer reports success for a partition only once the owner appended (or
//! recognised as duplicate) every batch of it under the fsync policy; a partition whose records
//! do not convert is refused alone, with Kafka's code, and nothing of it is stored.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::errors::{code_of, CORRUPT_MESSAGE, UNKNOWN_TOPIC_OR_PARTITION};
use super::records::{self, ProduceLimits};
use super::state::Conn;
use crate::protocol::messages::{
    AccessMode, BatchAck, Empty, Kind, ProducerDeclare, ProducerDeclared, ProducerHeartbeat, ProducerRef,
    ProducerSequenceInfo, Status,
};
use crate::server::frame_pool::FrameBuf;
use crate::shard::error::{BrokerError, BrokerResult};
use crate::shard::mesh::PartitionKey;
use crate::wire::native_call as call;

/// Where a Kafka batch header keeps the producer id and epoch (RecordBatch v2).
const PRODUCER_ID_AT: usize = 43;

/// One partition of a produce request, converted and ready to append (or refused).
struct Part {
    index: i32,
    outcome: Result<Ready, (i16, String)>,
}

struct Ready {
    key: PartitionKey,
    batches: FrameBuf,
    length: usize,
    count: u32,
    /// What a retry after a fence needs: the topic, the Kafka producer id and the records.
    topic: String,
    kafka_id: Option<KafkaId>,
    records: Bytes,
}

/// A produce request converted in the reader.
pub(crate) struct Prepared {
    acks: i16,
    topics: Vec<(TopicName, Vec<Part>)>,
}

/// Reads the Kafka producer id and epoch of the first batch in `records`, if any (-1: none).
fn peek_producer(records: &[u8]) -> Option<(i64, i16)> {
    let id = records.get(PRODUCER_ID_AT..PRODUCER_ID_AT + 8)?;
    let epoch = records.get(PRODUCER_ID_AT + 8..PRODUCER_ID_AT + 10)?;
    let id = i64::from_be_bytes(id.try_into().ok()?);
    let epoch = i16::from_be_bytes(epoch.try_into().ok()?);
    (id >= 0).then_some((id, epoch))
}

/// Converts every partition's records into our batches (declaring named producers first when a
/// Kafka producer writes to a topic for the first time on this connection).
pub(crate) async fn prepare(conn: &Conn, _version: i16, request: ProduceRequest) -> Prepared {
    let limits = ProduceLimits { max_inflated_bytes: conn.shard.config.max_frame_bytes.saturating_mul(4) };
    let mut topics = Vec::with_capacity(request.topic_data.len());
    for topic in request.topic_data {
        let name = topic.name.0.to_string();
        let mut parts = Vec::with_capacity(topic.partition_data.len());
        for partition in topic.partition_data {
            let outcome =
                convert(conn, &name, partition.index, partition.records.unwrap_or_default(), &limits).await;
            parts.push(Part { index: partition.index, outcome });
        }
        topics.push((topic.name, parts));
    }
    Prepared { acks: request.acks, topics }
}

async fn convert(
    conn: &Conn,
    topic: &str,
    index: i32,
    records: Bytes,
    limits: &ProduceLimits,
) -> Result<Ready, (i16, String)> {
    let catalog = conn.shard.catalog();
    let unknown = || (UNKNOWN_TOPIC_OR_PARTITION, format!("no partition {index} of topic \"{topic}\""));
    let (stream, found) = catalog.topic(conn.broker_stream(), topic).map_err(|_| unknown())?;
    let partition = u32::try_from(index).ok().filter(|p| *p < found.partitions).ok_or_else(unknown)?;
    let key = PartitionKey { stream_id: stream.id, topic_id: found.id, partition };
    drop(catalog);
    let kafka_id = peek_producer(&records);
    let producer = match kafka_id {
        Some(kafka_id) => {
            Some(declared(conn, topic, partition, kafka_id).await.map_err(|e| (code_of(&e), e.message))?)
        }
        None => None,
    };
    let (batches, length, count) = build(conn, &records, producer, limits)?;
    Ok(Ready { key, batches, length, count, topic: topic.to_string(), kafka_id, records })
}

/// Converts `records` into our batches, in a pooled frame buffer for the produce path.
fn build(
    conn: &Conn,
    records: &Bytes,
    producer: Option<(u64, u32)>,
    limits: &ProduceLimits,
) -> Result<(FrameBuf, usize, u32), (i16, String)> {
    let mut out = std::mem::take(&mut *conn.scratch.borrow_mut());
    out.clear();
    let converted = records::produce_batches(records, producer, &mut out, limits);
    let built = match converted {
        Ok(produced) if produced.batches > 0 => {
            let mut batches = FrameBuf::take(out.len());
            batches.copy_from_slice(&out);
            Ok((batches, out.len(), produced.batches))
        }
        Ok(_) => Err((CORRUPT_MESSAGE, "no record batch in the partition's records".to_string())),
        Err(error) => Err((error.kafka_code(), error.to_string())),
    };
    *conn.scratch.borrow_mut() = out;
    built
}

/// Our producer id and epoch for Kafka producer `kafka_id` on `topic`, declaring `kafka-<id>-<epoch>`
/// there the first time this connection sees the pair.
async fn declared(
    conn: &Conn,
    topic: &str,
    partition: u32,
    kafka_id: KafkaId,
) -> Result<(u64, u32), BrokerError> {
    let pair = (kafka_id, topic.to_string());
    if let Some(found) = conn.producers.borrow().get(&pair) {
        return Ok(*found);
    }
    let context = conn.context()?;
    // Another connection of the same Kafka producer (one per broker it writes to) may have
    // declared it: join that declaration rather than fence it with a new epoch.
    let current = ProducerRef {
        stream: conn.broker_stream().to_string(),
        topic: topic.to_string(),
        partition,
        name: producer_name(kafka_id),
    };
    match call::<_, ProducerSequenceInfo>(&context, Kind::ProducerSequence, &current).await {
        Ok(info) => {
            let ours = (info.producer_id, info.epoch);
            conn.producers.borrow_mut().insert(pair, ours);
            return Ok(ours);
        }
        Err(error) if error.status == Status::UnknownProducer => {}
        Err(error) => return Err(error),
    }
    let request = ProducerDeclare {
        stream: conn.broker_stream().to_string(),
        topic: topic.to_string(),
        name: producer_name(kafka_id),
        access: AccessMode::Shared,
    };
    let answer: ProducerDeclared = call(&context, Kind::ProducerDeclare, &request).await?;
    let ours = (answer.producer_id, answer.epoch);
    conn.producers.borrow_mut().insert(pair, ours);
    Ok(ours)
}

/// Our producer name for Kafka producer `id`.
fn producer_name((id, epoch): KafkaId) -> String {
    format!("kafka-{id}-{epoch}")
}

/// Appends the prepared batches on their owners and builds the answer (`None` for acks=0).
pub(crate) async fn finish(conn: &Conn, version: i16, prepared: Prepared) -> Option<ProduceResponse> {
    let mut responses = Vec::with_capacity(prepared.topics.len());
    for (name, parts) in prepared.topics {
        let mut partition_responses = Vec::with_capacity(parts.len());
        for part in parts {
            let mut response =
                PartitionProduceResponse::default().with_index(part.index).with_base_offset(-1);
            response.log_append_time_ms = -1;
            if version >= 5 {
                response.log_start_offset = -1;
            }
            match part.outcome {
                Ok(ready) => {
                    let appended = append(conn, ready).await;
                    match appended {
                        Ok(acks) => {
                            if let Some(first) = acks.first().filter(|a| a.has_offsets()) {
                                response.base_offset = first.base_offset as i64;
                            }
                        }
                        Err(error) => {
                            response.error_code = code_of(&error);
                            if version >= 8 {
                                response.error_message = Some(StrBytes::from_string(error.message));
                            }
                        }
                    }
                }
                Err((code, message)) => {
                    response.error_code = code;
                    if version >= 8 {
                        response.error_message = Some(StrBytes::from_string(message));
                    }
                }
            }
            partition_responses.push(response);
        }
        responses.push(
            TopicProduceResponse::default().with_name(name).with_partition_responses(partition_responses),
        );
    }
    (prepared.acks != 0).then(|| ProduceResponse::default().with_responses(responses))
}

/// Appends on the owner. A batch fenced because another connection of the same Kafka producer
/// declared it after this one did, or refused because the declaration lapsed (its lease holder
/// went away), is rebuilt once with the current declaration and sent again.
async fn append(conn: &Conn, ready: Ready) -> BrokerResult<Vec<BatchAck>> {
    let Ready { key, batches, length, count, topic, kafka_id, records } = ready;
    let first = crate::server::data::produce_on_owner(&conn.shard, key, batches, 0..length, count).await;
    let (Err(error), Some(kafka_id)) = (&first, kafka_id) else { return first };
    if !matches!(error.status, Status::ProducerFenced | Status::UnknownProducer) {
        return first;
    }
    conn.producers.borrow_mut().remove(&(kafka_id, topic.clone()));
    let producer = declared(conn, &topic, key.partition, kafka_id).await?;
    let limits = ProduceLimits { max_inflated_bytes: conn.shard.config.max_frame_bytes.saturating_mul(4) };
    let (batches, length, count) = build(conn, &records, Some(producer), &limits)
        .map_err(|(_, message)| BrokerError::new(Status::InvalidBatch, message))?;
    crate::server::data::produce_on_owner(&conn.shard, key, batches, 0..length, count).await
}

/// InitProducerId for idempotent producers: a fresh Kafka producer id, epoch 0. Transactional
/// ids are refused (transactions are not served).
pub(crate) async fn init_producer_id(
    conn: &Conn,
    _version: i16,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
    if request.transactional_id.is_some() {
        return InitProducerIdResponse::default()
            .with_error_code(TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
    }
    InitProducerIdResponse::default()
        .with_producer_id(ProducerId(new_producer_id(conn.shard.id)))
        .with_producer_epoch(0)
}

/// A Kafka producer id unique over the broker's shards and restarts: the microsecond clock
/// (strictly increasing per shard) with the shard id in the low 8 bits.
fn new_producer_id(shard: u16) -> i64 {
    thread_local! {
        static LAST: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    let now = crate::model::now_us();
    let micros = LAST.with(|last| {
        let next = now.max(last.get() + 1);
        last.set(next);
        next
    });
    ((micros << 8 | u64::from(shard & 0xff)) & (i64::MAX as u64)) as i64
}

/// Renews the leases of the named producers this connection declared, every third of the
/// producer session timeout, until the connection ends.
pub(crate) async fn keep_alive(
    conn: std::rc::Rc<Conn>,
    closed: std::rc::Rc<crate::server::connection::Flow>,
) {
    let lease = (conn.shard.config.producer_session_timeout / 3).max(Duration::from_millis(100));
    while !closed.closed.get() {
        glommio::timer::sleep(lease).await;
        let declared: Vec<(KafkaId, String)> = conn.producers.borrow().keys().cloned().collect();
        let Ok(context) = conn.context() else { continue };
        for (kafka_id, topic) in declared {
            let request = ProducerHeartbeat {
                stream: conn.broker_stream().to_string(),
                topic,
                name: producer_name(kafka_id),
            };
            if let Err(error) = call::<_, Empty>(&context, Kind::ProducerHeartbeat, &request).await {
                tracing::debug!(%error.message, "renewing a Kafka producer's lease failed");
            }
        }
    }
}

/// The declared producers of a connection: (Kafka id, topic) → our (id, epoch).
pub(crate) type Declared = HashMap<(KafkaId, String), (u64, u32)>;

/// A Kafka producer id and epoch.
pub(crate) type KafkaId = (i64, i16);
