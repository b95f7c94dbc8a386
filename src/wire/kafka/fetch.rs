//! Fetch (with Kafka's long poll: `max_wait_ms` and `min_bytes`) and ListOffsets (earliest,
//! latest, by time), over the native poll of each partition's owner.
//!
//! Runs as the request's task on the connection's shard. A fetch polls every asked partition at
//! its offset without waiting; when that yields fewer than `min_bytes`, it waits (up to
//! `max_wait_ms`) for the first partition to get data, then polls them all again. Stored batches
//! become Kafka record batches once, here (`records::fetch_records`). Fetch sessions (KIP-227)
//! are not kept: every answer carries session id 0, which tells clients to send full requests.
//!
//! Invariants: only records at or above a partition's fetch offset are counted against its
//! limits (the first batch may start below it, as Kafka's do); a fetch offset past the end or
//! before the start is answered with OFFSET_OUT_OF_RANGE so the client resets it.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{
    BrokerId, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse, TopicName,
};

use super::errors::{code_of, OFFSET_OUT_OF_RANGE, UNKNOWN_TOPIC_OR_PARTITION};
use super::state::Conn;
use crate::protocol::messages::PollStrategy;
use crate::server::data::poll_partition;
use crate::shard::error::{BrokerError, BrokerResult};
use crate::shard::mesh::PartitionKey;
use crate::shard::mesh::PollSpec;
use crate::shard::partitions::LocalPoll;

/// The longest wait a fetch may ask for (Kafka clients ask for 500 ms by default).
const MAX_WAIT_CAP: Duration = Duration::from_secs(30);

/// One asked partition.
struct Asked {
    topic: usize,
    partition: i32,
    offset: i64,
    max_bytes: usize,
    key: Result<PartitionKey, i16>,
}

/// Fetch.
pub(crate) async fn fetch(conn: &Conn, version: i16, request: FetchRequest) -> FetchResponse {
    let asked = asked_partitions(conn, &request);
    let max_wait = Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0)).min(MAX_WAIT_CAP);
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    let total_max = match request.max_bytes {
        n if n > 0 && version >= 3 => n as usize,
        _ => usize::MAX,
    };
    let started = Instant::now();
    let mut results = poll_all(conn, &asked, total_max).await;
    let got: usize = results.iter().map(|r| r.as_ref().map_or(0, |p| p.bytes.len())).sum();
    if got < min_bytes.max(1) && !max_wait.is_zero() {
        let remaining = max_wait.saturating_sub(started.elapsed());
        if wait_for_data(conn, &asked, remaining).await {
            results = poll_all(conn, &asked, total_max).await;
        }
    }
    let mut topics: Vec<FetchableTopicResponse> = request
        .topics
        .iter()
        .map(|t| FetchableTopicResponse::default().with_topic(t.topic.clone()))
        .collect();
    for (asked, result) in asked.iter().zip(results) {
        let mut data = PartitionData::default().with_partition_index(asked.partition);
        if version >= 4 {
            data.last_stable_offset = -1;
            data.aborted_transactions = None;
        }
        if version >= 5 {
            data.log_start_offset = -1;
        }
        if version >= 11 {
            data.preferred_read_replica = BrokerId(-1);
        }
        match result {
            Ok(polled) => {
                data.high_watermark = polled.high_watermark as i64;
                if version >= 4 {
                    data.last_stable_offset = polled.high_watermark as i64;
                }
                data.records = Some(polled.bytes);
            }
            Err(code) => {
                data.error_code = code;
                data.high_watermark = -1;
                data.records = Some(Bytes::new());
            }
        }
        if let Some(topic) = topics.get_mut(asked.topic) {
            topic.partitions.push(data);
        }
    }
    conn.shard.metrics.polled(started.elapsed());
    FetchResponse::default().with_responses(topics)
}

fn asked_partitions(conn: &Conn, request: &FetchRequest) -> Vec<Asked> {
    let catalog = conn.shard.catalog();
    let mut asked = Vec::new();
    for (index, topic) in request.topics.iter().enumerate() {
        let found = catalog.topic(conn.broker_stream(), topic.topic.0.as_str()).ok();
        for partition in &topic.partitions {
            let key = match found {
                Some((stream, found)) => u32::try_from(partition.partition)
                    .ok()
                    .filter(|p| *p < found.partitions)
                    .map(|p| PartitionKey { stream_id: stream.id, topic_id: found.id, partition: p })
                    .ok_or(UNKNOWN_TOPIC_OR_PARTITION),
                None => Err(UNKNOWN_TOPIC_OR_PARTITION),
            };
            asked.push(Asked {
                topic: index,
                partition: partition.partition,
                offset: partition.fetch_offset,
                max_bytes: usize::try_from(partition.partition_max_bytes).unwrap_or(0).max(1),
                key,
            });
        }
    }
    asked
}

/// One partition's answer: its Kafka record batches and end.
struct Polled {
    bytes: Bytes,
    high_watermark: u64,
}

async fn poll_all(conn: &Conn, asked: &[Asked], total_max: usize) -> Vec<Result<Polled, i16>> {
    let mut results = Vec::with_capacity(asked.len());
    let mut budget = total_max;
    for partition in asked {
        let result = match partition.key {
            Err(code) => Err(code),
            Ok(key) => {
                let limit = partition.max_bytes.min(budget.max(1));
                poll_one(conn, key, partition.offset, limit).await
            }
        };
        if let Ok(polled) = &result {
            budget = budget.saturating_sub(polled.bytes.len());
        }
        results.push(result);
    }
    results
}

async fn poll_one(conn: &Conn, key: PartitionKey, offset: i64, max_bytes: usize) -> Result<Polled, i16> {
    let Ok(offset) = u64::try_from(offset) else { return Err(OFFSET_OUT_OF_RANGE) };
    let spec = spec(PollStrategy::Offset(offset), max_bytes, Duration::ZERO);
    let polled = poll_partition(&conn.shard, key, spec).await.map_err(|e| code_of(&e))?;
    let high_watermark = polled.partition.high_watermark;
    if offset > high_watermark {
        return Err(OFFSET_OUT_OF_RANGE);
    }
    let mut out = BytesMut::new();
    for part in &polled.parts {
        let room = max_bytes.saturating_sub(out.len());
        if room == 0 {
            break;
        }
        if let Err(error) = super::records::fetch_records(part.bytes(), offset, room, &mut out) {
            tracing::warn!(%error, "a stored batch did not convert to Kafka records");
            if out.is_empty() {
                return Err(super::errors::CORRUPT_MESSAGE);
            }
            break;
        }
    }
    Ok(Polled { bytes: out.freeze(), high_watermark })
}

fn spec(strategy: PollStrategy, max_bytes: usize, max_wait: Duration) -> PollSpec {
    PollSpec {
        strategy,
        consumer_key: String::new(),
        max_messages: u32::MAX,
        max_bytes: u32::try_from(max_bytes).unwrap_or(u32::MAX),
        max_batches: u32::MAX,
        max_wait,
        auto_commit: false,
        filter: None,
    }
}

/// Waits up to `wait` for data at any asked partition's offset; true when some arrived.
async fn wait_for_data(conn: &Conn, asked: &[Asked], wait: Duration) -> bool {
    if wait.is_zero() {
        return false;
    }
    let waits: Vec<_> = asked
        .iter()
        .filter_map(|a| Some((a.key.ok()?, u64::try_from(a.offset).ok()?)))
        .map(|(key, offset)| {
            Box::pin(async move {
                let polled: BrokerResult<LocalPoll> =
                    poll_partition(&conn.shard, key, spec(PollStrategy::Offset(offset), 1, wait)).await;
                polled.map(|p| !p.parts.is_empty()).unwrap_or(false)
            })
        })
        .collect();
    if waits.is_empty() {
        glommio::timer::sleep(wait).await;
        return false;
    }
    let (arrived, _, _) = futures::future::select_all(waits).await;
    arrived
}

/// ListOffsets: -2 earliest, -1 latest, else the first offset whose record timestamp (the
/// producer's create time, as Kafka's time index has it) is at or after that time (ms), with
/// that record's timestamp; -1 when there is none.
pub(crate) async fn list_offsets(
    conn: &Conn,
    version: i16,
    request: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in topic.partitions {
            let mut answer = ListOffsetsPartitionResponse::default()
                .with_partition_index(partition.partition_index)
                .with_timestamp(-1)
                .with_offset(-1);
            if version >= 4 {
                answer.leader_epoch = 0;
            }
            match offset_for(conn, &topic.name, partition.partition_index, partition.timestamp).await {
                Ok((offset, timestamp)) => {
                    answer.offset = offset;
                    answer.timestamp = timestamp;
                }
                Err(error) => answer.error_code = code_of(&error),
            }
            partitions.push(answer);
        }
        topics.push(ListOffsetsTopicResponse::default().with_name(topic.name).with_partitions(partitions));
    }
    ListOffsetsResponse::default().with_topics(topics)
}

async fn offset_for(
    conn: &Conn,
    topic: &TopicName,
    partition: i32,
    timestamp: i64,
) -> BrokerResult<(i64, i64)> {
    let key = {
        let catalog = conn.shard.catalog();
        let (stream, found) = catalog.topic(conn.broker_stream(), topic.0.as_str())?;
        let partition = u32::try_from(partition).ok().filter(|p| *p < found.partitions).ok_or_else(|| {
            BrokerError::new(crate::protocol::messages::Status::UnknownPartition, "no such partition")
        })?;
        PartitionKey { stream_id: stream.id, topic_id: found.id, partition }
    };
    match timestamp {
        -2 => {
            let polled =
                poll_partition(&conn.shard, key, spec(PollStrategy::First, 1, Duration::ZERO)).await?;
            let end = polled.partition.high_watermark as i64;
            Ok((if polled.parts.is_empty() { end } else { polled.partition.start_offset as i64 }, -1))
        }
        t if t >= 0 => by_time(conn, key, (t as u64).saturating_mul(1000)).await,
        _ => {
            let polled =
                poll_partition(&conn.shard, key, spec(PollStrategy::Last, 1, Duration::ZERO)).await?;
            Ok((polled.partition.high_watermark as i64, -1))
        }
    }
}

/// How much of a partition a by-time lookup reads at most, in polls of [`SCAN_POLL_BYTES`].
const SCAN_POLLS_MAX: usize = 4096;
/// Bytes per poll of a by-time lookup.
const SCAN_POLL_BYTES: usize = 1 << 20;

/// The first record at or after `target_us`: batches whose newest record is older are skipped by
/// their header (the batch header keeps the maximum timestamp); the first batch that may hold
/// one is opened (inflated when compressed).
async fn by_time(conn: &Conn, key: PartitionKey, target_us: u64) -> BrokerResult<(i64, i64)> {
    use crate::protocol::batch::{batches, inflate, validated_view};
    let mut strategy = PollStrategy::First;
    for _ in 0..SCAN_POLLS_MAX {
        let polled =
            poll_partition(&conn.shard, key, spec(strategy, SCAN_POLL_BYTES, Duration::ZERO)).await?;
        if polled.parts.is_empty() {
            break;
        }
        for part in &polled.parts {
            for batch in batches(part.bytes()) {
                let Ok(batch) = batch else { break };
                let header = *batch.header();
                if header.max_timestamp_us < target_us {
                    continue;
                }
                let fallback = (header.base_offset as i64, (header.max_timestamp_us / 1000) as i64);
                let Ok(plain) = inflate(batch.as_bytes(), crate::constants::BATCH_BYTES_MAX * 64) else {
                    return Ok(fallback);
                };
                let Ok(view) = validated_view(&plain) else { return Ok(fallback) };
                let found = view.records().find(|r| r.timestamp_us >= target_us);
                return Ok(found.map_or(fallback, |r| (r.offset as i64, (r.timestamp_us / 1000) as i64)));
            }
        }
        if polled.partition.next_offset >= polled.partition.high_watermark {
            break;
        }
        strategy = PollStrategy::Offset(polled.partition.next_offset);
    }
    Ok((-1, -1))
}
