//! Results: what each actor measured, their sum, and the table and JSON made of them.
//!
//! Runs on the main thread after every actor has finished. Invariant: only the measured phase
//! (after warm-up) enters any figure except the `*_all` byte counts; throughput is bytes over
//! the measured phase's length, in MB/s of 10^6 bytes, counting the uncompressed payload; with
//! `--compression` the report adds the bytes the producers put on the wire.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;

use ringbroker::protocol::batch::Compression;

use crate::{Settings, Workload};

/// Highest latency the histograms track (µs); larger samples are clamped to it.
pub const LATENCY_US_MAX: u64 = 600_000_000;
/// Significant decimal digits of the histograms.
const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;

/// An empty latency histogram (1 µs to [`LATENCY_US_MAX`]).
pub fn histogram() -> Result<Histogram<u64>, String> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, LATENCY_SIGNIFICANT_DIGITS)
        .map_err(|error| format!("histogram: {error}"))
}

/// Records one latency sample, clamped into the histogram's range.
pub fn record(histogram: &mut Histogram<u64>, latency_us: u64) {
    histogram.saturating_record(latency_us.clamp(1, LATENCY_US_MAX));
}

/// What an actor does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Produces batches.
    Producer,
    /// Polls them.
    Consumer,
    /// Loopback sender.
    Sender,
    /// Loopback receiver.
    Receiver,
}

impl Role {
    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Role::Producer => "producer",
            Role::Consumer => "consumer",
            Role::Sender => "sender",
            Role::Receiver => "receiver",
        }
    }
}

/// One actor's measured phase.
pub struct ActorResult {
    /// What it did.
    pub role: Role,
    /// Its index among actors of its role.
    pub id: u32,
    /// Payload bytes completed after the warm-up (uncompressed: the messages' bodies).
    pub bytes: u64,
    /// Batch bytes on the wire completed after the warm-up (producers; compressed when the run
    /// compresses; 0 for other roles).
    pub wire_bytes: u64,
    /// Payload bytes completed in the whole run, warm-up included (producers).
    pub bytes_all: u64,
    /// Batch bytes on the wire in the whole run, warm-up included (producers).
    pub wire_bytes_all: u64,
    /// Messages completed after the warm-up.
    pub messages: u64,
    /// When its measured phase began (its start plus the warm-up).
    pub measured_from: Instant,
    /// When it finished.
    pub finished_at: Instant,
    /// Its latency samples after the warm-up (µs).
    pub latency: Histogram<u64>,
}

impl ActorResult {
    /// The length of its measured phase (zero when it ended inside the warm-up).
    pub fn elapsed(&self) -> Duration {
        self.finished_at.saturating_duration_since(self.measured_from)
    }
}

/// Throughput over a phase: (MB/s of 10^6 bytes, messages/s); zeros for an empty phase.
fn rates(bytes: u64, messages: u64, elapsed: Duration) -> (f64, f64) {
    let seconds = elapsed.as_secs_f64();
    if seconds <= 0.0 {
        return (0.0, 0.0);
    }
    (bytes as f64 / 1e6 / seconds, messages as f64 / seconds)
}

/// The report of a run.
pub struct Summary {
    workload: Workload,
    settings: Settings,
    actors: Vec<ActorResult>,
    /// The role whose bytes make the total (each byte counted once).
    counted: Role,
    bytes: u64,
    /// Producers' batch bytes on the wire after the warm-up.
    wire_bytes: u64,
    /// Producers' payload and wire bytes over the whole run, warm-up included.
    bytes_all: u64,
    wire_bytes_all: u64,
    messages: u64,
    elapsed: Duration,
    /// The headline latency: the counted role's, or per-message delivery for end-to-end.
    latency: Histogram<u64>,
    /// Consumer poll latency when both roles ran.
    consumer_latency: Option<Histogram<u64>>,
    /// Producer acknowledgement latency of end-to-end runs: how much of the per-message delay
    /// is spent before the broker acknowledges (write-behind, flush) rather than after.
    producer_latency: Option<Histogram<u64>>,
}

impl Summary {
    /// Sums the actors' results. Fails when nothing was measured (the run ended in warm-up).
    pub fn new(workload: Workload, settings: &Settings, actors: Vec<ActorResult>) -> Result<Summary, String> {
        let counted = match workload {
            Workload::PinnedConsumer | Workload::BalancedConsumerGroup | Workload::AckConsumer => {
                Role::Consumer
            }
            Workload::Loopback => Role::Receiver,
            _ => Role::Producer,
        };
        let mut latency = histogram()?;
        let mut consumer_latency = histogram()?;
        let mut producer_latency = histogram()?;
        let (mut bytes, mut messages) = (0_u64, 0_u64);
        let (mut wire_bytes, mut bytes_all, mut wire_bytes_all) = (0_u64, 0_u64, 0_u64);
        let mut measured_from: Option<Instant> = None;
        let mut finished_at: Option<Instant> = None;
        for actor in &actors {
            let headline = match workload {
                Workload::EndToEnd => actor.role == Role::Consumer,
                Workload::Loopback => actor.role == Role::Sender,
                _ => actor.role == counted,
            };
            let merged = if headline {
                latency.add(&actor.latency)
            } else if actor.role == Role::Consumer {
                consumer_latency.add(&actor.latency)
            } else if actor.role == Role::Producer {
                producer_latency.add(&actor.latency)
            } else {
                Ok(())
            };
            merged.map_err(|error| format!("merging histograms: {error}"))?;
            if actor.role == Role::Producer {
                wire_bytes += actor.wire_bytes;
                bytes_all += actor.bytes_all;
                wire_bytes_all += actor.wire_bytes_all;
            }
            if actor.role != counted {
                continue;
            }
            bytes += actor.bytes;
            messages += actor.messages;
            measured_from = Some(measured_from.map_or(actor.measured_from, |at| at.min(actor.measured_from)));
            finished_at = Some(finished_at.map_or(actor.finished_at, |at| at.max(actor.finished_at)));
        }
        let elapsed = match (measured_from, finished_at) {
            (Some(from), Some(to)) => to.saturating_duration_since(from),
            _ => Duration::ZERO,
        };
        if messages == 0 || elapsed.is_zero() {
            return Err(format!(
                "nothing was measured: the run ended within its {:.1} s warm-up (raise --batches or --duration, or lower --warmup)",
                settings.warmup.as_secs_f64()
            ));
        }
        let consumer_latency = (workload == Workload::PinnedProducerAndConsumer).then_some(consumer_latency);
        let producer_latency = (workload == Workload::EndToEnd).then_some(producer_latency);
        Ok(Summary {
            workload,
            settings: settings.clone(),
            actors,
            counted,
            bytes,
            wire_bytes,
            bytes_all,
            wire_bytes_all,
            messages,
            elapsed,
            latency,
            consumer_latency,
            producer_latency,
        })
    }

    /// Every actor's result.
    pub fn actors(&self) -> &[ActorResult] {
        &self.actors
    }

    /// The human report: totals, latency percentiles, one line per actor.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let (mb_per_s, msgs_per_s) = rates(self.bytes, self.messages, self.elapsed);
        let roles: Vec<String> = [Role::Producer, Role::Consumer, Role::Sender, Role::Receiver]
            .iter()
            .filter_map(|role| {
                let count = self.actors.iter().filter(|actor| actor.role == *role).count();
                (count > 0).then(|| format!("{count} {}", role.name()))
            })
            .collect();
        let _ = writeln!(
            out,
            "{:<30} {:<26} {:>12} {:>14} {:>9} {:>10} {:>12}",
            "workload", "actors", "messages", "bytes", "elapsed", "MB/s", "msg/s"
        );
        let _ = writeln!(
            out,
            "{:<30} {:<26} {:>12} {:>14} {:>8.2}s {:>10.1} {:>12.0}",
            self.workload.name(),
            roles.join(", "),
            self.messages,
            self.bytes,
            self.elapsed.as_secs_f64(),
            mb_per_s,
            msgs_per_s
        );
        let _ = writeln!(out, "(totals count {} bytes once each)", self.counted.name());
        if let Some(line) = self.wire_line() {
            out.push_str(&line);
        }
        let latency_name = match self.workload {
            Workload::EndToEnd => "end-to-end per message",
            Workload::PinnedConsumer if self.settings.subscribe_credits.is_some() => "delivery wait",
            Workload::PinnedConsumer | Workload::BalancedConsumerGroup => "poll response",
            Workload::Loopback => "loopback chunk write",
            _ => "produce ack",
        };
        out.push_str(&latency_line(latency_name, &self.latency));
        if let Some(consumer) = &self.consumer_latency {
            let name =
                if self.settings.subscribe_credits.is_some() { "delivery wait" } else { "poll response" };
            out.push_str(&latency_line(name, consumer));
        }
        if let Some(producer) = &self.producer_latency {
            out.push_str(&latency_line("produce ack", producer));
        }
        let _ = writeln!(
            out,
            "{:<10} {:>4} {:>12} {:>14} {:>9} {:>10} {:>12}",
            "role", "id", "messages", "bytes", "elapsed", "MB/s", "msg/s"
        );
        for actor in &self.actors {
            let (mb_per_s, msgs_per_s) = rates(actor.bytes, actor.messages, actor.elapsed());
            let _ = writeln!(
                out,
                "{:<10} {:>4} {:>12} {:>14} {:>8.2}s {:>10.1} {:>12.0}",
                actor.role.name(),
                actor.id,
                actor.messages,
                actor.bytes,
                actor.elapsed().as_secs_f64(),
                mb_per_s,
                msgs_per_s
            );
        }
        out
    }

    /// With compression, the producers' bytes on the wire next to their payload bytes.
    fn wire_line(&self) -> Option<String> {
        if self.settings.compression == Compression::None || self.wire_bytes == 0 {
            return None;
        }
        let (wire_mb_per_s, _) = rates(self.wire_bytes, 0, self.elapsed);
        Some(format!(
            "wire ({}): {:.1} MB/s, {} bytes for {} payload bytes (ratio {:.2}); whole run {} wire bytes for {} payload bytes\n",
            self.settings.compression,
            wire_mb_per_s,
            self.wire_bytes,
            self.producer_payload_bytes(),
            ratio(self.producer_payload_bytes(), self.wire_bytes),
            self.wire_bytes_all,
            self.bytes_all,
        ))
    }

    /// The producers' payload bytes after the warm-up.
    fn producer_payload_bytes(&self) -> u64 {
        self.actors.iter().filter(|actor| actor.role == Role::Producer).map(|actor| actor.bytes).sum()
    }

    /// The JSON report (same figures as the table).
    pub fn json(&self) -> serde_json::Value {
        let (mb_per_s, msgs_per_s) = rates(self.bytes, self.messages, self.elapsed);
        let actors: Vec<serde_json::Value> = self
            .actors
            .iter()
            .map(|actor| {
                let (mb_per_s, msgs_per_s) = rates(actor.bytes, actor.messages, actor.elapsed());
                json!({
                    "role": actor.role.name(),
                    "id": actor.id,
                    "mb_per_s": mb_per_s,
                    "msgs_per_s": msgs_per_s,
                    "bytes": actor.bytes,
                    "messages": actor.messages,
                    "elapsed_s": actor.elapsed().as_secs_f64(),
                })
            })
            .collect();
        let mut document = json!({
            "workload": self.workload.name(),
            "settings": self.settings,
            "total": {
                "mb_per_s": mb_per_s,
                "msgs_per_s": msgs_per_s,
                "bytes": self.bytes,
                "messages": self.messages,
                "elapsed_s": self.elapsed.as_secs_f64(),
                "counted_role": self.counted.name(),
                "wire_bytes": self.wire_bytes,
                "wire_mb_per_s": rates(self.wire_bytes, 0, self.elapsed).0,
                "producer_bytes_all": self.bytes_all,
                "wire_bytes_all": self.wire_bytes_all,
            },
            "actors": actors,
            "latency_us": latency_json(&self.latency),
        });
        if let (Some(consumer), Some(object)) = (&self.consumer_latency, document.as_object_mut()) {
            object.insert("consumer_latency_us".to_string(), latency_json(consumer));
        }
        if let (Some(producer), Some(object)) = (&self.producer_latency, document.as_object_mut()) {
            object.insert("producer_latency_us".to_string(), latency_json(producer));
        }
        document
    }
}

/// Payload bytes per wire byte (0 without wire bytes).
fn ratio(payload: u64, wire: u64) -> f64 {
    if wire == 0 {
        return 0.0;
    }
    payload as f64 / wire as f64
}

/// p50, p90, p99, p99.9, p99.99 and max of a histogram (zeros when empty).
fn percentiles(histogram: &Histogram<u64>) -> [u64; 6] {
    if histogram.is_empty() {
        return [0; 6];
    }
    [
        histogram.value_at_quantile(0.50),
        histogram.value_at_quantile(0.90),
        histogram.value_at_quantile(0.99),
        histogram.value_at_quantile(0.999),
        histogram.value_at_quantile(0.9999),
        histogram.max(),
    ]
}

fn latency_line(name: &str, histogram: &Histogram<u64>) -> String {
    let [p50, p90, p99, p999, p9999, max] = percentiles(histogram);
    format!(
        "latency µs ({name}, {} samples): p50 {p50}  p90 {p90}  p99 {p99}  p99.9 {p999}  p99.99 {p9999}  max {max}\n",
        histogram.len()
    )
}

fn latency_json(histogram: &Histogram<u64>) -> serde_json::Value {
    let [p50, p90, p99, p999, p9999, max] = percentiles(histogram);
    json!({
        "p50": p50, "p90": p90, "p99": p99, "p999": p999, "p9999": p9999, "max": max,
        "samples": histogram.len(),
    })
}
