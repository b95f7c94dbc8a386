//! The per-partition figures this shard publishes for the metrics endpoint: messages, bytes,
//! next offset, segments, the lag of every consumer group and durable consumer, and the storage
//! gauges (write-behind bytes, poisoned partitions).
//!
//! Runs on the owner shard, from its publishing timer (`crate::shard::publish_metrics`): it reads
//! state only this core touches and never awaits. Invariants: figures are sorted by (stream,
//! topic, partition) because the catalog's maps are; a lag is `next offset - position`, never
//! negative, with the position at least the first live offset; when a partition's stored
//! offsets are busy (a commit awaiting its fsync), its lags from the previous publication are
//! kept rather than left out, so a series does not blink.

use crate::metadata::catalog::Catalog;
use crate::metrics::{ConsumerLag, ConsumerType, PartitionFigures, ShardFigures};

use super::{PartitionKey, PartitionManager};

impl PartitionManager {
    /// The figures of every partition this shard owns under `catalog`; `previous` is what was
    /// published last.
    pub fn figures(&self, catalog: &Catalog, previous: &ShardFigures) -> ShardFigures {
        let open = self.partitions.borrow();
        let mut figures = ShardFigures::default();
        for stream in catalog.streams.values() {
            for topic in stream.topics.values() {
                for partition in 0..topic.partitions {
                    let key = PartitionKey { stream_id: stream.id, topic_id: topic.id, partition };
                    let Some(p) = open.get(&key) else { continue };
                    let next = p.log.high_watermark();
                    let (bytes, segments) = p.log.size();
                    let retention = p.retention.borrow();
                    let first = retention.first.max(p.log.offsets().start);
                    let lag_from = |position: u64| next.saturating_sub(position.max(first));
                    let mut lags: Vec<ConsumerLag> = Vec::new();
                    match p.offsets.try_lock() {
                        Some(store) => {
                            for group in &topic.groups {
                                let position = store.get(&format!("g:{group}")).unwrap_or(first);
                                lags.push(lag(ConsumerType::Group, group, lag_from(position)));
                            }
                        }
                        None => lags.extend(previous_lags(previous, &stream.name, &topic.name, partition)),
                    }
                    for (name, consumer) in &retention.consumers {
                        lags.push(lag(ConsumerType::Durable, name, lag_from(consumer.floor)));
                    }
                    figures.write_behind_bytes =
                        figures.write_behind_bytes.saturating_add(p.log.write_behind_bytes());
                    figures.poisoned_partitions += u64::from(p.log.poisoned().is_some());
                    figures.partitions.push(PartitionFigures {
                        stream: stream.name.clone(),
                        topic: topic.name.clone(),
                        partition,
                        messages: retention.live_messages(next),
                        bytes,
                        next_offset: next,
                        segments: segments as u64,
                        lags,
                    });
                }
            }
        }
        figures
    }
}

fn lag(consumer_type: ConsumerType, name: &str, lag_messages: u64) -> ConsumerLag {
    ConsumerLag { consumer_type, consumer: name.to_string(), lag_messages }
}

/// The group lags `previous` published for one partition.
fn previous_lags<'a>(
    previous: &'a ShardFigures,
    stream: &'a str,
    topic: &'a str,
    partition: u32,
) -> impl Iterator<Item = ConsumerLag> + 'a {
    let found = previous
        .partitions
        .binary_search_by(|p| {
            (p.stream.as_str(), p.topic.as_str(), p.partition).cmp(&(stream, topic, partition))
        })
        .ok()
        .and_then(|at| previous.partitions.get(at));
    found
        .into_iter()
        .flat_map(|p| p.lags.iter())
        .filter(|lag| lag.consumer_type == ConsumerType::Group)
        .cloned()
}
