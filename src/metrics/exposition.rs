//! The Prometheus exposition: a `prometheus-client` [`Collector`] that reads every shard's
//! [`ShardMetrics`] (and the broker-wide counters) at scrape time and encodes them in the
//! classic text format, version 0.0.4 (what `promtool check metrics` validates).
//!
//! Runs on the metrics endpoint thread only. Reads atomics and the `Arc` of each shard's last
//! published figures; never waits on a shard. Invariants: each family is described once (HELP
//! and TYPE) and each series appears once in it (partitions published by two shards for a moment
//! are reported once); every name starts with `ringbroker_`, counters end in `_total`, units are
//! in the names (`_seconds`, `_bytes`).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::figures::{PartitionFigures, ShardFigures};
use super::histogram::Histogram;
use super::shard_metrics::{ShardMetrics, OVERFLOW_LABEL, WIRES_MAX};
use crate::protocol::messages::ServerCounters;

/// The `Content-Type` of what [`render`] writes.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Reads the broker-wide counters (`SharedCounters`, which every shard updates) at scrape time.
pub type BrokerCounters = Box<dyn Fn() -> ServerCounters + Send + Sync>;

/// The collector behind the registry (see the module documentation).
pub struct Exposition {
    shards: Arc<[Arc<ShardMetrics>]>,
    broker: Option<BrokerCounters>,
}

impl fmt::Debug for Exposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exposition").field("shards", &self.shards.len()).finish()
    }
}

/// A registry holding the ringbroker collector, names prefixed `ringbroker_`.
pub fn registry(shards: Arc<[Arc<ShardMetrics>]>, broker: Option<BrokerCounters>) -> Registry {
    let mut registry = Registry::with_prefix("ringbroker");
    registry.register_collector(Box::new(Exposition { shards, broker }));
    registry
}

/// Encodes everything `registry` holds now.
pub fn render(registry: &Registry) -> Result<String, fmt::Error> {
    let mut text = String::with_capacity(16 * 1024);
    prometheus_client::encoding::prometheus_text::encode(&mut text, registry)?;
    Ok(text)
}

type Labels<'a> = [(&'static str, &'a str)];
/// Which histogram of a shard a family reports.
type HistogramOf = fn(&ShardMetrics) -> &Histogram;
/// Which figure of a partition a family reports.
type FigureOf = fn(&PartitionFigures) -> u64;

fn counter(family: &mut MetricEncoder<'_>, labels: &Labels<'_>, value: u64) -> fmt::Result {
    ConstCounter::new(value).encode(family.encode_family(&labels)?)
}

fn gauge(family: &mut MetricEncoder<'_>, labels: &Labels<'_>, value: i64) -> fmt::Result {
    ConstGauge::new(value).encode(family.encode_family(&labels)?)
}

fn gauge_u64(family: &mut MetricEncoder<'_>, labels: &Labels<'_>, value: u64) -> fmt::Result {
    gauge(family, labels, i64::try_from(value).unwrap_or(i64::MAX))
}

fn histogram(family: &mut MetricEncoder<'_>, labels: &Labels<'_>, histogram: &Histogram) -> fmt::Result {
    let snapshot = histogram.snapshot();
    family.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
        snapshot.sum_seconds,
        snapshot.count,
        &snapshot.buckets,
        None,
    )
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let shards: Vec<(String, &ShardMetrics)> =
            self.shards.iter().map(|m| (m.shard.to_string(), m.as_ref())).collect();
        let figures: Vec<(String, Arc<ShardFigures>)> =
            shards.iter().map(|(id, m)| (id.clone(), m.figures())).collect();
        encode_requests(&mut encoder, &shards)?;
        encode_wires(&mut encoder, &shards)?;
        encode_shard_scalars(&mut encoder, &shards, &figures)?;
        encode_partitions(&mut encoder, &figures)?;
        if let Some(broker) = &self.broker {
            encode_broker(&mut encoder, &broker())?;
        }
        Ok(())
    }
}

fn encode_requests(encoder: &mut DescriptorEncoder<'_>, shards: &[(String, &ShardMetrics)]) -> fmt::Result {
    let help = "Requests answered, by wire, request kind and status (ok or error)";
    let mut family = encoder.encode_descriptor("requests", help, None, MetricType::Counter)?;
    for (id, metrics) in shards {
        for slot in metrics.requests.iter().chain([&metrics.requests_overflow]) {
            let Some(&(wire, kind)) = slot.key.get() else { continue };
            let (ok, error) = (slot.ok.load(Ordering::Relaxed), slot.error.load(Ordering::Relaxed));
            if wire == OVERFLOW_LABEL && kind == OVERFLOW_LABEL && ok == 0 && error == 0 {
                continue;
            }
            let labels =
                |status| [("shard", id.as_str()), ("wire", wire), ("kind", kind), ("status", status)];
            counter(&mut family, &labels("ok"), ok)?;
            counter(&mut family, &labels("error"), error)?;
        }
    }
    Ok(())
}

fn encode_wires(encoder: &mut DescriptorEncoder<'_>, shards: &[(String, &ShardMetrics)]) -> fmt::Result {
    let wires = || {
        shards.iter().flat_map(|(id, metrics)| {
            metrics.wires.iter().enumerate().filter_map(move |(index, slot)| {
                let name = *slot.name.get()?;
                let used = slot.bytes_in.load(Ordering::Relaxed) > 0
                    || slot.bytes_out.load(Ordering::Relaxed) > 0
                    || slot.connections.load(Ordering::Relaxed) != 0;
                (index < WIRES_MAX || used).then_some((id.as_str(), name, slot))
            })
        })
    };
    let help = "Bytes received from clients (request frames), by wire";
    let mut family = encoder.encode_descriptor("received_bytes", help, None, MetricType::Counter)?;
    for (id, wire, slot) in wires() {
        counter(&mut family, &[("shard", id), ("wire", wire)], slot.bytes_in.load(Ordering::Relaxed))?;
    }
    let help = "Bytes written to clients (responses and pushed deliveries), by wire";
    let mut family = encoder.encode_descriptor("sent_bytes", help, None, MetricType::Counter)?;
    for (id, wire, slot) in wires() {
        counter(&mut family, &[("shard", id), ("wire", wire)], slot.bytes_out.load(Ordering::Relaxed))?;
    }
    let help = "Open client connections, by wire";
    let mut family = encoder.encode_descriptor("connections", help, None, MetricType::Gauge)?;
    for (id, wire, slot) in wires() {
        gauge(&mut family, &[("shard", id), ("wire", wire)], slot.connections.load(Ordering::Relaxed))?;
    }
    Ok(())
}

fn encode_shard_scalars(
    encoder: &mut DescriptorEncoder<'_>,
    shards: &[(String, &ShardMetrics)],
    figures: &[(String, Arc<ShardFigures>)],
) -> fmt::Result {
    let help = "Requests this shard sent to the shard owning their partition";
    let mut family = encoder.encode_descriptor("forwarded_requests", help, None, MetricType::Counter)?;
    for (id, m) in shards {
        counter(&mut family, &[("shard", id)], m.forwarded_requests.load(Ordering::Relaxed))?;
    }
    let help = "Requests read and not yet answered";
    let mut family = encoder.encode_descriptor("in_flight_requests", help, None, MetricType::Gauge)?;
    for (id, m) in shards {
        gauge(&mut family, &[("shard", id)], m.in_flight.load(Ordering::Relaxed))?;
    }
    let histograms: [(&str, &str, HistogramOf); 3] = [
        (
            "produce_ack_duration_seconds",
            "Produces of every wire, from append request to acknowledgement",
            |m| &m.produce_ack,
        ),
        ("poll_duration_seconds", "Poll requests, from dispatch to answer (long-poll wait included)", |m| {
            &m.poll
        }),
        ("storage_fsync_duration_seconds", "fdatasync of partition logs on the append path", |m| &m.fsync),
    ];
    for (name, help, of) in histograms {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
        for (id, m) in shards {
            histogram(&mut family, &[("shard", id)], of(m))?;
        }
    }
    let help = "fdatasync calls on partition logs (group commit makes them fewer than appends)";
    let mut family = encoder.encode_descriptor("storage_fsyncs", help, None, MetricType::Counter)?;
    for (id, m) in shards {
        counter(&mut family, &[("shard", id)], m.fsync.count())?;
    }
    let help = "Appended bytes acknowledged and not yet written (--fsync never), at the last publication";
    let mut family =
        encoder.encode_descriptor("storage_write_behind_bytes", help, None, MetricType::Gauge)?;
    for (id, f) in figures {
        gauge_u64(&mut family, &[("shard", id)], f.write_behind_bytes)?;
    }
    let help = "Partitions refusing writes after a failed write or fsync, at the last publication";
    let mut family =
        encoder.encode_descriptor("storage_poisoned_partitions", help, None, MetricType::Gauge)?;
    for (id, f) in figures {
        gauge_u64(&mut family, &[("shard", id)], f.poisoned_partitions)?;
    }
    Ok(())
}

fn encode_partitions(
    encoder: &mut DescriptorEncoder<'_>,
    figures: &[(String, Arc<ShardFigures>)],
) -> fmt::Result {
    let mut partitions: BTreeMap<(&str, &str, u32), &PartitionFigures> = BTreeMap::new();
    for (_, shard) in figures {
        for p in &shard.partitions {
            partitions.entry((p.stream.as_str(), p.topic.as_str(), p.partition)).or_insert(p);
        }
    }
    let ids: Vec<String> = partitions.values().map(|p| p.partition.to_string()).collect();
    let rows = || {
        partitions.values().zip(&ids).map(|(p, id)| {
            (p, [("stream", p.stream.as_str()), ("topic", p.topic.as_str()), ("partition", id.as_str())])
        })
    };
    let gauges: [(&str, &str, FigureOf); 4] = [
        ("partition_messages", "Live messages in the partition", |p| p.messages),
        ("partition_bytes", "Bytes of the partition's segments on disk", |p| p.bytes),
        ("partition_next_offset", "Offset the partition's next message gets", |p| p.next_offset),
        ("partition_segments", "Segments of the partition on disk, the active one included", |p| p.segments),
    ];
    for (name, help, of) in gauges {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (p, labels) in rows() {
            gauge_u64(&mut family, &labels, of(p))?;
        }
    }
    let help = "Messages between a consumer group's committed offset (or a durable consumer's ack floor) \
                and the partition's next offset";
    let mut family = encoder.encode_descriptor("consumer_lag_messages", help, None, MetricType::Gauge)?;
    for (p, [stream, topic, partition]) in rows() {
        for lag in &p.lags {
            let labels = [
                stream,
                topic,
                partition,
                ("consumer_type", lag.consumer_type.label()),
                ("consumer", lag.consumer.as_str()),
            ];
            gauge_u64(&mut family, &labels, lag.lag_messages)?;
        }
    }
    Ok(())
}

fn encode_broker(encoder: &mut DescriptorEncoder<'_>, broker: &ServerCounters) -> fmt::Result {
    let family = encoder.encode_descriptor(
        "shards",
        "Shards running (one pinned core each)",
        None,
        MetricType::Gauge,
    )?;
    ConstGauge::new(i64::from(broker.shards)).encode(family)?;
    let family =
        encoder.encode_descriptor("subscriptions", "Push subscriptions open now", None, MetricType::Gauge)?;
    ConstGauge::new(i64::try_from(broker.subscriptions).unwrap_or(i64::MAX)).encode(family)?;
    let counters: [(&str, &str, u64); 6] = [
        ("deliveries", "Deliver frames queued for push subscriptions", broker.deliveries),
        ("delivered_bytes", "Batch bytes in those Deliver frames", broker.delivered_bytes),
        (
            "forwarded_zero_copy_bytes",
            "Forwarded produce bytes that reached the owner shard in the buffer they were read into",
            broker.forwarded_bytes_zero_copy,
        ),
        (
            "forwarded_copied_bytes",
            "Forwarded produce bytes that had to be copied between shards (stays 0)",
            broker.forwarded_bytes_copied,
        ),
        ("filtered_batches", "Batches filtered polls skipped", broker.filtered_batches),
        ("filtered_bytes", "Bytes of the batches filtered polls skipped", broker.filtered_bytes),
    ];
    for (name, help, value) in counters {
        let family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        ConstCounter::new(value).encode(family)?;
    }
    Ok(())
}
