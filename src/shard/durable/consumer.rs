//! One durable consumer on one partition: what it was delivered, what is pending its
//! acknowledgement and when it is redelivered, and what is done.
//!
//! Lives in the partition's [`super::Retention`] on the owner shard. Invariants: every offset
//! below `floor` is done; at and above it, an offset below `cursor` is pending, in `done`, or
//! was never wanted (filtered out, removed, expired); `pending` and `done` are disjoint;
//! `floor == min(first pending, cursor)` after every change; `pending.len()` stays at most
//! `max_ack_pending` (redeliveries never add to it).

use std::collections::BTreeMap;
use std::rc::Rc;

use crate::protocol::durable::{AckPolicy, DurableConfig, DurablePartitionState};
use crate::storage::ranges::RangeSet;

/// A delivered, unacknowledged message.
#[derive(Debug, Clone, Copy)]
pub struct Pending {
    /// Deliveries so far.
    pub deliveries: u32,
    /// When it is redelivered (µs).
    pub due_us: u64,
    /// The consumer sequence of its last delivery.
    pub sequence: u64,
}

/// How a message stopped being pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged.
    Acked,
    /// Terminated.
    Terminated,
    /// Given up after `max_deliver` deliveries.
    MaxDelivered,
    /// Delivered under ack policy `none`.
    Delivered,
}

/// See the module documentation.
#[derive(Debug)]
pub struct ConsumerState {
    /// Its configuration (from the catalog).
    pub config: Rc<DurableConfig>,
    /// The first offset it wants.
    pub start: u64,
    /// Everything below is done.
    pub floor: u64,
    /// Done offsets at or above `floor`.
    pub done: RangeSet,
    /// The next offset never looked at.
    pub cursor: u64,
    /// Delivered and unacknowledged, by offset.
    pub pending: BTreeMap<u64, Pending>,
    /// No pending message is due before this (µs; a lower bound).
    next_due_us: u64,
    /// Deliveries so far.
    pub sequence: u64,
    /// Changed since it was last persisted.
    pub dirty: bool,
    /// Counters since the partition was opened.
    pub redelivered: u64,
    /// Given up after `max_deliver`.
    pub max_delivered: u64,
    /// Terminated.
    pub terminated: u64,
    /// Acknowledged.
    pub acked: u64,
}

impl ConsumerState {
    /// A consumer starting at `start`, with what was persisted (`floor`, `done`).
    pub fn new(config: Rc<DurableConfig>, start: u64, floor: u64, done: RangeSet) -> ConsumerState {
        let floor = floor.max(start);
        ConsumerState {
            config,
            start,
            floor,
            done,
            cursor: floor,
            pending: BTreeMap::new(),
            next_due_us: u64::MAX,
            sequence: 0,
            dirty: false,
            redelivered: 0,
            max_delivered: 0,
            terminated: 0,
            acked: 0,
        }
    }

    /// Whether `offset` is done for this consumer.
    pub fn is_done(&self, offset: u64) -> bool {
        offset < self.floor || self.done.contains(offset)
    }

    /// Whether the consumer may take a new message (below `max_ack_pending`).
    pub fn may_take(&self) -> bool {
        self.config.ack == AckPolicy::None || self.pending.len() < self.config.max_ack_pending as usize
    }

    /// Records the first delivery of `offset` (the cursor has reached it); returns its
    /// sequence. Under ack policy `none` it is done at once.
    pub fn deliver_new(&mut self, offset: u64, now_us: u64) -> u64 {
        debug_assert!(offset >= self.cursor);
        self.cursor = offset + 1;
        self.sequence += 1;
        if self.config.ack == AckPolicy::None {
            self.mark_done(offset);
        } else {
            let due_us = now_us.saturating_add(self.config.redelivery_wait_us(1));
            self.pending.insert(offset, Pending { deliveries: 1, due_us, sequence: self.sequence });
            self.next_due_us = self.next_due_us.min(due_us);
        }
        self.sequence
    }

    /// Moves the cursor past offsets it does not want (filtered out, removed, expired).
    pub fn skip_to(&mut self, offset: u64) {
        if offset > self.cursor {
            self.cursor = offset;
            self.settle();
        }
    }

    /// Pending offsets due for redelivery at `now_us`, oldest first, at most `limit`.
    pub fn due(&mut self, now_us: u64, limit: usize) -> Vec<u64> {
        if now_us < self.next_due_us || limit == 0 {
            return Vec::new();
        }
        let due: Vec<u64> =
            self.pending.iter().filter(|(_, p)| p.due_us <= now_us).map(|(o, _)| *o).take(limit).collect();
        if due.len() < limit {
            self.next_due_us =
                self.pending.values().map(|p| p.due_us).filter(|&d| d > now_us).min().unwrap_or(u64::MAX);
        }
        due
    }

    /// When the next pending message is due (µs), if any.
    pub fn next_due(&self) -> Option<u64> {
        self.pending.values().map(|p| p.due_us).min()
    }

    /// Redelivers `offset` (pending and due): its deliveries grow, or, at `max_deliver`, it is
    /// given up (`None`).
    pub fn redeliver(&mut self, offset: u64, now_us: u64) -> Option<(u64, u32)> {
        let max_deliver = self.config.max_deliver;
        let pending = self.pending.get_mut(&offset)?;
        if max_deliver.is_some_and(|max| pending.deliveries >= max) {
            self.pending.remove(&offset);
            self.max_delivered += 1;
            self.mark_done(offset);
            return None;
        }
        self.sequence += 1;
        pending.deliveries += 1;
        pending.sequence = self.sequence;
        pending.due_us = now_us.saturating_add(self.config.redelivery_wait_us(pending.deliveries));
        self.next_due_us = self.next_due_us.min(pending.due_us);
        self.redelivered += 1;
        Some((self.sequence, pending.deliveries))
    }

    /// Ends the pending state of `offset` with `outcome`; false when it was not pending.
    pub fn finish(&mut self, offset: u64, outcome: Outcome) -> bool {
        if self.pending.remove(&offset).is_none() {
            return false;
        }
        match outcome {
            Outcome::Acked => self.acked += 1,
            Outcome::Terminated => self.terminated += 1,
            Outcome::MaxDelivered => self.max_delivered += 1,
            Outcome::Delivered => {}
        }
        self.mark_done(offset);
        true
    }

    /// Sets when a pending `offset` is redelivered; false when it is not pending.
    pub fn reschedule(&mut self, offset: u64, due_us: u64) -> bool {
        let Some(pending) = self.pending.get_mut(&offset) else { return false };
        pending.due_us = due_us;
        self.next_due_us = self.next_due_us.min(due_us);
        true
    }

    /// Forgets a pending offset that no longer exists (removed by a limit); it counts as done.
    pub fn drop_gone(&mut self, offset: u64) {
        if self.pending.remove(&offset).is_some() {
            self.mark_done(offset);
        }
    }

    /// Everything below `first` is gone from the partition.
    pub fn gone_below(&mut self, first: u64) {
        while self.pending.first_key_value().is_some_and(|(offset, _)| *offset < first) {
            self.pending.pop_first();
        }
        if self.cursor < first {
            self.cursor = first;
        }
        self.settle();
    }

    fn mark_done(&mut self, offset: u64) {
        if offset >= self.floor {
            self.done.insert(offset);
        }
        self.settle();
    }

    /// Restores `floor == min(first pending, cursor)` and drops done offsets below it.
    fn settle(&mut self) {
        let floor =
            self.pending.keys().next().copied().unwrap_or(self.cursor).min(self.cursor).max(self.floor);
        if floor != self.floor {
            self.floor = floor;
            self.done.remove_below(floor);
        }
        self.dirty = true;
    }

    /// Its state, as `ConsumerInfo` reports it (`num_pending` is the caller's).
    pub fn report(&self, partition: u32, num_pending: u64) -> DurablePartitionState {
        DurablePartitionState {
            partition,
            ack_floor: self.floor,
            delivered_to: self.cursor,
            consumer_sequence: self.sequence,
            ack_pending: self.pending.len() as u64,
            redeliver_pending: self.pending.values().filter(|p| p.due_us <= crate::model::now_us()).count()
                as u64,
            num_pending,
            redelivered: self.redelivered,
            max_delivered: self.max_delivered,
            terminated: self.terminated,
            acked: self.acked,
        }
    }
}
