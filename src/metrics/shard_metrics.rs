//! One shard's live counters, gauges and histograms, and the slot its published figures go in.
//!
//! A [`ShardMetrics`] is allocated at start for each shard and shared (`Arc`) between that shard
//! and the metrics endpoint thread. Only the shard writes it (relaxed atomics; a [`WireMetrics`]
//! handle resolves its wire slot once per connection), and the endpoint only reads it: a scrape
//! never waits on a shard, and the shard's hot path takes no lock, allocates nothing and makes no
//! syscall. Label keys are `&'static str` from the code, never from the network.
//!
//! Invariants: counters only grow; a (wire, kind) pair and a wire name each own at most one slot
//! (slots are claimed once through a `OnceLock` and matched by content, never by address), so a
//! scrape never emits the same series twice; when the fixed tables are full, further pairs count
//! in the `overflow` slots instead of allocating; the figures slot's lock is held only to swap or
//! clone one `Arc`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use super::figures::ShardFigures;
use super::histogram::Histogram;

/// Distinct wires one shard can count (native, RabbitMQ, Kafka, room to spare).
pub const WIRES_MAX: usize = 8;
/// Distinct (wire, kind) pairs one shard can count; a power of two.
pub const REQUEST_SLOTS: usize = 256;
/// Label value of the slots that count what did not fit the tables.
pub const OVERFLOW_LABEL: &str = "overflow";

const _: () = assert!(REQUEST_SLOTS.is_power_of_two());

/// Counters of one wire on one shard.
#[derive(Debug, Default)]
pub(crate) struct WireSlot {
    pub(crate) name: OnceLock<&'static str>,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) connections: AtomicI64,
}

/// Requests of one (wire, kind) pair on one shard.
#[derive(Debug, Default)]
pub(crate) struct RequestSlot {
    pub(crate) key: OnceLock<(&'static str, &'static str)>,
    pub(crate) ok: AtomicU64,
    pub(crate) error: AtomicU64,
}

impl RequestSlot {
    fn count(&self, ok: bool) {
        let counter = if ok { &self.ok } else { &self.error };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct ShardMetrics {
    /// The shard these figures belong to.
    pub shard: u16,
    /// By wire; the last slot is the overflow.
    pub(crate) wires: [WireSlot; WIRES_MAX + 1],
    /// Open addressing over the content hash of (wire, kind).
    pub(crate) requests: [RequestSlot; REQUEST_SLOTS],
    /// Requests of pairs that found no free slot.
    pub(crate) requests_overflow: RequestSlot,
    pub(crate) forwarded_requests: AtomicU64,
    pub(crate) in_flight: AtomicI64,
    /// Produces of every wire, from the append request to its acknowledgement (successful ones).
    pub produce_ack: Histogram,
    /// Poll requests, from dispatch to answer, long-poll wait included.
    pub poll: Histogram,
    /// fdatasync of partition logs on the append path; its count is the fsync counter. Shared
    /// with the partition logs of this shard, which observe into it.
    pub fsync: Arc<Histogram>,
    figures: Mutex<Arc<ShardFigures>>,
}

impl ShardMetrics {
    /// Fresh metrics of `shard` (all zero, nothing published).
    pub fn new(shard: u16) -> Arc<ShardMetrics> {
        let wires: [WireSlot; WIRES_MAX + 1] = std::array::from_fn(|_| WireSlot::default());
        let _ = wires[WIRES_MAX].name.set(OVERFLOW_LABEL);
        // The native wire is always there, so its series exist before the first connection.
        let _ = wires[0].name.set(super::WIRE_NATIVE);
        let requests_overflow = RequestSlot::default();
        let _ = requests_overflow.key.set((OVERFLOW_LABEL, OVERFLOW_LABEL));
        Arc::new(ShardMetrics {
            shard,
            wires,
            requests: std::array::from_fn(|_| RequestSlot::default()),
            requests_overflow,
            forwarded_requests: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
            produce_ack: Histogram::default(),
            poll: Histogram::default(),
            fsync: Arc::new(Histogram::default()),
            figures: Mutex::new(Arc::new(ShardFigures::default())),
        })
    }

    /// The handle a connection of `wire` counts through (resolve it once per connection).
    pub fn wire(self: &Arc<Self>, wire: &'static str) -> WireMetrics {
        WireMetrics { metrics: self.clone(), slot: self.wire_slot(wire) }
    }

    fn wire_slot(&self, wire: &'static str) -> usize {
        for (index, slot) in self.wires.iter().take(WIRES_MAX).enumerate() {
            match slot.name.get() {
                Some(name) if *name == wire => return index,
                Some(_) => continue,
                None => {
                    if slot.name.set(wire).is_ok() || slot.name.get() == Some(&wire) {
                        return index;
                    }
                }
            }
        }
        WIRES_MAX
    }

    /// Counts one answered request of `kind` on `wire` (`ok`: answered with success).
    pub fn request(&self, wire: &'static str, kind: &'static str, ok: bool) {
        self.request_slot(wire, kind).count(ok);
    }

    fn request_slot(&self, wire: &'static str, kind: &'static str) -> &RequestSlot {
        let mask = REQUEST_SLOTS - 1;
        let start = key_hash(wire, kind) as usize & mask;
        for probe in 0..REQUEST_SLOTS {
            let Some(slot) = self.requests.get((start + probe) & mask) else { break };
            match slot.key.get() {
                Some(key) if *key == (wire, kind) => return slot,
                Some(_) => continue,
                None => {
                    if slot.key.set((wire, kind)).is_ok() || slot.key.get() == Some(&(wire, kind)) {
                        return slot;
                    }
                }
            }
        }
        &self.requests_overflow
    }

    /// Counts one request sent to another shard.
    pub fn forwarded(&self) {
        self.forwarded_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request in flight until the guard drops.
    pub fn in_flight(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(&self.in_flight)
    }

    /// A produce was acknowledged `elapsed` after its dispatch.
    pub fn produce_acked(&self, elapsed: Duration) {
        self.produce_ack.observe(elapsed);
    }

    /// A poll was answered `elapsed` after its dispatch.
    pub fn polled(&self, elapsed: Duration) {
        self.poll.observe(elapsed);
    }

    /// Replaces the published figures (the lock covers the pointer swap only; the old figures
    /// are dropped after it is released).
    pub fn publish(&self, figures: ShardFigures) {
        let figures = Arc::new(figures);
        let old =
            std::mem::replace(&mut *self.figures.lock().unwrap_or_else(PoisonError::into_inner), figures);
        drop(old);
    }

    /// The figures published last (empty before the first publication).
    pub fn figures(&self) -> Arc<ShardFigures> {
        self.figures.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// FNV-1a over the wire, a separator, and the kind.
fn key_hash(wire: &str, kind: &str) -> u64 {
    let step = |hash: u64, byte: u8| (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
    let hash = wire.bytes().fold(0xcbf2_9ce4_8422_2325_u64, step);
    kind.bytes().fold(step(hash, 0xff), step)
}

/// A request in flight; the gauge goes down when this drops.
#[derive(Debug)]
pub struct InFlight<'a>(&'a AtomicI64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One wire's counters on one shard, resolved once (per connection): every count is a single
/// relaxed add.
#[derive(Debug, Clone)]
pub struct WireMetrics {
    metrics: Arc<ShardMetrics>,
    slot: usize,
}

impl WireMetrics {
    fn slot(&self) -> Option<&WireSlot> {
        self.metrics.wires.get(self.slot)
    }

    /// The wire's name.
    pub fn name(&self) -> &'static str {
        self.slot().and_then(|slot| slot.name.get().copied()).unwrap_or(OVERFLOW_LABEL)
    }

    /// `bytes` arrived from a client.
    pub fn bytes_in(&self, bytes: u64) {
        if let Some(slot) = self.slot() {
            slot.bytes_in.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// `bytes` were written to a client.
    pub fn bytes_out(&self, bytes: u64) {
        if let Some(slot) = self.slot() {
            slot.bytes_out.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// Counts an open connection until the guard drops.
    pub fn connection(&self) -> OpenConnection {
        if let Some(slot) = self.slot() {
            slot.connections.fetch_add(1, Ordering::Relaxed);
        }
        OpenConnection(self.clone())
    }

    /// Counts one answered request of `kind` on this wire.
    pub fn request(&self, kind: &'static str, ok: bool) {
        self.metrics.request(self.name(), kind, ok);
    }

    /// The shard's metrics.
    pub fn shard(&self) -> &Arc<ShardMetrics> {
        &self.metrics
    }
}

/// An open connection; the gauge goes down when this drops.
#[derive(Debug)]
pub struct OpenConnection(WireMetrics);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if let Some(slot) = self.0.slot() {
            slot.connections.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_match_by_content_not_address() {
        let metrics = ShardMetrics::new(3);
        let kind: &'static str = Box::leak(String::from("produce").into_boxed_str());
        metrics.request("native", "produce", true);
        metrics.request("native", kind, false);
        let claimed: Vec<_> = metrics.requests.iter().filter(|s| s.key.get().is_some()).collect();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].ok.load(Ordering::Relaxed), 1);
        assert_eq!(claimed[0].error.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn full_table_counts_in_overflow() {
        let metrics = ShardMetrics::new(0);
        for i in 0..REQUEST_SLOTS + 10 {
            let kind: &'static str = Box::leak(format!("kind{i}").into_boxed_str());
            metrics.request("native", kind, true);
        }
        assert!(metrics.requests.iter().all(|s| s.key.get().is_some()));
        assert_eq!(metrics.requests_overflow.ok.load(Ordering::Relaxed), 10);
        metrics.request("native", "kind0", true);
        assert_eq!(metrics.requests_overflow.ok.load(Ordering::Relaxed), 10, "known pairs keep their slot");
    }

    #[test]
    fn wires_guards_and_overflow() {
        let metrics = ShardMetrics::new(0);
        let native = metrics.wire("native");
        assert_eq!(metrics.wire("native").slot, native.slot);
        {
            let _a = native.connection();
            let _b = metrics.wire("native").connection();
            assert_eq!(metrics.wires[native.slot].connections.load(Ordering::Relaxed), 2);
            let _c = metrics.in_flight();
            assert_eq!(metrics.in_flight.load(Ordering::Relaxed), 1);
        }
        assert_eq!(metrics.wires[native.slot].connections.load(Ordering::Relaxed), 0);
        assert_eq!(metrics.in_flight.load(Ordering::Relaxed), 0);
        for i in 0..WIRES_MAX + 2 {
            let name: &'static str = Box::leak(format!("w{i}").into_boxed_str());
            metrics.wire(name).bytes_in(1);
        }
        assert_eq!(metrics.wires[WIRES_MAX].bytes_in.load(Ordering::Relaxed), 3, "native took one slot");
        assert_eq!(metrics.wire("w100").name(), OVERFLOW_LABEL);
    }

    #[test]
    fn publish_swaps_the_figures() {
        let metrics = ShardMetrics::new(0);
        assert_eq!(*metrics.figures(), ShardFigures::default());
        let held = metrics.figures();
        metrics.publish(ShardFigures { poisoned_partitions: 2, ..ShardFigures::default() });
        assert_eq!(metrics.figures().poisoned_partitions, 2);
        assert_eq!(held.poisoned_partitions, 0, "a reader keeps what it took");
    }
}
