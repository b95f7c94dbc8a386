//! Prometheus metrics (`--metrics-listen`): per-shard counters, gauges and latency histograms
//! kept in atomics, per-partition figures each shard publishes every
//! `--metrics-publish-interval`, and the HTTP endpoint that encodes them (decisions in
//! `docs/metrics.md`, every metric in the README's "Metrics" section).
//!
//! Who runs what: each shard writes only its own [`ShardMetrics`] (allocated at start, one
//! relaxed atomic add per event, no lock or allocation on its hot path) and publishes its
//! [`ShardFigures`] from a timer on its own core; the [`Endpoint`] runs on its own std threads
//! and only reads. Invariants: a scrape never waits on a shard and a shard never waits on a
//! scrape, beyond the swap of one `Arc` under a lock neither side holds for anything else;
//! counters only grow. This module sits low in the module map: it depends on `protocol` (kind
//! names, the broker-wide counters' shape) and is used by `storage`, `shard` and `server`.

use std::net::SocketAddr;
use std::sync::Arc;

pub mod endpoint;
pub mod exposition;
pub mod figures;
pub mod histogram;
pub mod kinds;
pub mod shard_metrics;
#[cfg(test)]
mod tests;

pub use endpoint::Endpoint;
pub use exposition::BrokerCounters;
pub use figures::{ConsumerLag, ConsumerType, PartitionFigures, ShardFigures};
pub use histogram::Histogram;
pub use kinds::native_kind_name;
pub use shard_metrics::{InFlight, OpenConnection, ShardMetrics, WireMetrics};

/// The `wire` label of the native protocol.
pub const WIRE_NATIVE: &str = "native";
/// The `wire` label of the RabbitMQ Streams listener.
pub const WIRE_RABBITMQ: &str = "rabbitmq";
/// The `wire` label of the Kafka listener.
pub const WIRE_KAFKA: &str = "kafka";

/// Every shard's metrics, allocated at start.
#[derive(Debug, Clone)]
pub struct Metrics {
    shards: Arc<[Arc<ShardMetrics>]>,
}

impl Metrics {
    /// Zeroed metrics for shards `0..shards`.
    pub fn new(shards: usize) -> Metrics {
        let shards: Vec<Arc<ShardMetrics>> =
            (0..shards).map(|id| ShardMetrics::new(u16::try_from(id).unwrap_or(u16::MAX))).collect();
        Metrics { shards: Arc::from(shards) }
    }

    /// Shard `id`'s metrics (a detached, unscraped set for an id out of range).
    pub fn shard(&self, id: u16) -> Arc<ShardMetrics> {
        self.shards.get(usize::from(id)).cloned().unwrap_or_else(|| ShardMetrics::new(id))
    }

    /// Starts the endpoint on `listen`, reading the broker-wide counters through `broker`.
    pub fn serve(&self, listen: SocketAddr, broker: Option<BrokerCounters>) -> std::io::Result<Endpoint> {
        Endpoint::start(listen, exposition::registry(self.shards.clone(), broker))
    }

    /// The exposition now, as a scrape would get it.
    pub fn render(&self, broker: Option<BrokerCounters>) -> String {
        exposition::render(&exposition::registry(self.shards.clone(), broker)).unwrap_or_default()
    }
}
