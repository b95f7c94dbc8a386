//! Retention beyond limits, and durable consumers, on one partition: the interest and
//! work-queue policies, per-message TTLs, `max_messages` with discard old or new, the
//! deleted-set, and each durable consumer's delivery and acknowledgement state.
//!
//! Owned by the partition on its owner shard ([`Retention`] sits in a `RefCell` of the
//! partition; only that core touches it). Durable state is log-shaped: the consumers' ack floors
//! and done sets, the first live offset and the deleted-set go to the partition's ack log
//! ([`crate::storage::acks`]) in coalesced changes ([`Retention::changes`]); the ledger of live
//! messages is derived from the batches. Invariants:
//! * `first` only grows; every offset below it, and every offset in `removed`, is never
//!   delivered again; `removed` holds only offsets at or above `first`.
//! * On an interest topic a message is live while some consumer whose filter matches it, and
//!   which existed when it was written, has not finished it (ack, term or `max_deliver`).
//! * On a work-queue topic a message is live until it is acknowledged or terminated.
//! * A change that `AckSync` acknowledged is in the ack log before the answer leaves.

use std::collections::BTreeMap;
use std::ops::Range;
use std::rc::Rc;

use crate::protocol::batch::{Batch, BatchHeader};
use crate::protocol::durable::{Retention as Policy, TopicPolicy, TTL_HEADER};
use crate::protocol::subject::filter_matches;
use crate::storage::acks::AckChange;
use crate::storage::ranges::RangeSet;

pub mod consumer;
pub mod fetch;
pub mod ledger;
pub mod open;
pub mod ops;

use consumer::{ConsumerState, Outcome};
use ledger::Ledger;

/// See the module documentation.
#[derive(Debug)]
pub struct Retention {
    /// The topic's policy.
    pub policy: TopicPolicy,
    /// First live offset.
    pub first: u64,
    /// Offsets at or above `first` removed one by one.
    pub removed: RangeSet,
    /// Live messages, when the policy needs them ([`TopicPolicy::tracks_messages`]).
    pub ledger: Option<Ledger>,
    /// Durable consumers by name.
    pub consumers: BTreeMap<String, ConsumerState>,
    /// Append time of the last message (µs).
    pub last_timestamp_us: u64,
    /// Changes not yet in the ack log: consumers started or dropped.
    unsaved: Vec<AckChange>,
    /// Offsets removed since the last save.
    removed_unsaved: RangeSet,
    /// `first` changed since the last save.
    first_unsaved: bool,
}

impl Retention {
    /// The state of a partition whose persisted state says `first` and `removed`.
    pub fn new(policy: TopicPolicy, first: u64, removed: RangeSet) -> Retention {
        Retention {
            policy,
            first,
            removed,
            ledger: None,
            consumers: BTreeMap::new(),
            last_timestamp_us: 0,
            unsaved: Vec::new(),
            removed_unsaved: RangeSet::new(),
            first_unsaved: false,
        }
    }

    /// Whether `offset` was removed (below `first`, or in the deleted-set).
    pub fn is_removed(&self, offset: u64) -> bool {
        offset < self.first
            || self.removed.contains(offset)
            || self
                .ledger
                .as_ref()
                .is_some_and(|l| offset >= l.first() && offset < l.next() && l.get(offset).is_none())
    }

    /// Adds a consumer starting at `start` with its persisted floor and done set; `fresh`
    /// consumers are recorded in the ack log.
    pub fn add_consumer(
        &mut self,
        config: Rc<crate::protocol::durable::DurableConfig>,
        start: u64,
        floor: u64,
        done: RangeSet,
        fresh: bool,
    ) {
        let name = config.name.clone();
        if fresh {
            self.unsaved.push(AckChange::Start { consumer: name.clone(), start });
        }
        let mut state = ConsumerState::new(config, start, floor, done);
        state.skip_to(self.first);
        self.consumers.insert(name, state);
    }

    /// Drops a deleted consumer; on an interest topic what only it held is removed.
    pub fn drop_consumer(&mut self, name: &str) {
        if self.consumers.remove(name).is_some() {
            self.unsaved.push(AckChange::Drop { consumer: name.to_string() });
            if self.policy.retention == Policy::Interest {
                self.sweep_interest();
            }
        }
    }

    /// Removes every live message nobody is interested in (after a consumer left).
    fn sweep_interest(&mut self) {
        let Some(ledger) = &self.ledger else { return };
        let orphans: Vec<u64> = ledger
            .live_offsets()
            .filter(|(offset, meta)| !self.held(*offset, ledger.subject(meta.subject)))
            .map(|(offset, _)| offset)
            .collect();
        for offset in orphans {
            self.remove(offset);
        }
    }

    /// Whether some consumer still needs `offset` (interest retention).
    fn held(&self, offset: u64, subject: Option<&[u8]>) -> bool {
        self.consumers
            .values()
            .any(|c| offset >= c.start && !c.is_done(offset) && filter_matches(&c.config.filter, subject))
    }

    /// Records appended batches (already in the log): ledger entries, and on an interest topic
    /// the immediate removal of what no consumer wants.
    pub fn on_append(&mut self, batch: &Batch<'_>, append_us: u64) {
        self.last_timestamp_us = append_us;
        if self.ledger.is_none() {
            return;
        }
        let header = batch.header();
        let per_record = (header.length as u64 / u64::from(header.record_count.max(1))) as u32;
        if batch.is_compressed() {
            for view in record_views(batch, append_us) {
                self.push_record(
                    view.offset,
                    view.bytes.unwrap_or(per_record),
                    view.subject.as_deref(),
                    append_us,
                    view.expires_us,
                );
            }
            return;
        }
        for record in batch.records() {
            let (bytes, expires_us) = measure(&record, append_us);
            self.push_record(record.offset, bytes, record.filter_value, append_us, expires_us);
        }
    }

    fn push_record(
        &mut self,
        offset: u64,
        bytes: u32,
        subject: Option<&[u8]>,
        append_us: u64,
        expires_us: u64,
    ) {
        let Some(ledger) = self.ledger.as_mut() else { return };
        ledger.push(offset, bytes, subject, append_us, expires_us);
        if self.policy.retention == Policy::Interest && !self.held(offset, subject) {
            self.remove(offset);
        }
    }

    /// Removes one message (interest satisfied, acknowledged on a work queue, expired, or past
    /// a limit). False when it was not live.
    pub fn remove(&mut self, offset: u64) -> bool {
        if offset < self.first || self.removed.contains(offset) {
            return false;
        }
        let first = match &mut self.ledger {
            Some(ledger) => {
                if !ledger.remove(offset) {
                    return false;
                }
                ledger.first()
            }
            None => self.first,
        };
        // Removed in the middle: into the deleted-set. At the front, moving `first` says it.
        if offset >= first {
            self.removed.insert(offset);
            self.removed_unsaved.insert(offset);
        }
        for consumer in self.consumers.values_mut() {
            consumer.drop_gone(offset);
        }
        self.set_first(first);
        true
    }

    /// Moves the first live offset up to `first` (limits, segment retention, removal).
    pub fn set_first(&mut self, first: u64) {
        if first <= self.first {
            return;
        }
        self.first = first;
        self.first_unsaved = true;
        self.removed.remove_below(first);
        self.removed_unsaved.remove_below(first);
        if let Some(ledger) = &mut self.ledger {
            ledger.remove_below(first);
        }
        for consumer in self.consumers.values_mut() {
            consumer.gone_below(first);
        }
    }

    /// After `consumer` finished `offset` with `outcome`: on interest and work-queue topics the
    /// message may go.
    pub fn after_done(&mut self, offset: u64, outcome: Outcome) {
        let Some(ledger) = &self.ledger else { return };
        let Some(meta) = ledger.get(offset) else { return };
        let remove = match self.policy.retention {
            Policy::Limits => false,
            Policy::WorkQueue => matches!(outcome, Outcome::Acked | Outcome::Terminated | Outcome::Delivered),
            Policy::Interest => !self.held(offset, ledger.subject(meta.subject)),
        };
        if remove {
            self.remove(offset);
        }
    }

    /// How many more messages fit under `max_messages` with discard `new` (`None`: no limit).
    pub fn room(&self, next: u64) -> Option<u64> {
        let max = self.policy.max_messages?;
        if self.policy.discard != crate::protocol::durable::Discard::New {
            return None;
        }
        Some(max.saturating_sub(self.live_messages(next)))
    }

    /// Live messages, given the partition's next offset.
    pub fn live_messages(&self, next: u64) -> u64 {
        match &self.ledger {
            Some(ledger) => ledger.live().0,
            None => next.saturating_sub(self.first).saturating_sub(self.removed.count_in(self.first..next)),
        }
    }

    /// Applies TTL expiry and `max_messages` with discard `old`; returns how many went.
    pub fn enforce(&mut self, now_us: u64, next: u64) -> u64 {
        let mut gone = 0;
        if let Some(ledger) = &self.ledger {
            for offset in ledger.expired(now_us, 65_536) {
                gone += u64::from(self.remove(offset));
            }
        }
        if let (Some(max), crate::protocol::durable::Discard::Old) =
            (self.policy.max_messages, self.policy.discard)
        {
            match &self.ledger {
                Some(ledger) => {
                    for offset in ledger.oldest_beyond(max) {
                        gone += u64::from(self.remove(offset));
                    }
                }
                None => {
                    let live = self.live_messages(next);
                    if live > max {
                        let before = self.first;
                        self.set_first(next - max);
                        gone += self.first - before;
                    }
                }
            }
        }
        gone
    }

    /// The changes to persist since the last call: consumers started or dropped, floors and
    /// done sets of consumers that changed, removals and the first offset.
    pub fn changes(&mut self) -> Vec<AckChange> {
        let mut changes = std::mem::take(&mut self.unsaved);
        if self.first_unsaved {
            changes.push(AckChange::First { first: self.first });
            self.first_unsaved = false;
        }
        if !self.removed_unsaved.is_empty() {
            let ranges: Vec<Range<u64>> = self.removed_unsaved.ranges().collect();
            changes.push(AckChange::Removed { ranges });
            self.removed_unsaved = RangeSet::new();
        }
        for (name, consumer) in &mut self.consumers {
            if !consumer.dirty {
                continue;
            }
            consumer.dirty = false;
            changes.push(AckChange::Floor { consumer: name.clone(), floor: consumer.floor });
            if !consumer.done.is_empty() {
                changes.push(AckChange::Done {
                    consumer: name.clone(),
                    ranges: consumer.done.ranges().collect(),
                });
            }
        }
        changes
    }

    /// Puts back changes whose write failed (they are idempotent: a later save repeats them).
    pub fn restore(&mut self, changes: Vec<AckChange>) {
        self.unsaved.splice(0..0, changes);
    }

    /// Whether [`changes`](Self::changes) would return anything.
    pub fn has_changes(&self) -> bool {
        !self.unsaved.is_empty()
            || self.first_unsaved
            || !self.removed_unsaved.is_empty()
            || self.consumers.values().any(|c| c.dirty)
    }

    /// Wanted messages of `consumer` not delivered yet: exact with a ledger up to
    /// [`PENDING_SCAN_MAX`] messages past the cursor (beyond, the rest counts as wanted);
    /// otherwise an upper bound.
    pub fn num_pending(&self, consumer: &ConsumerState, next: u64) -> u64 {
        let from = consumer.cursor.max(self.first);
        match &self.ledger {
            Some(ledger) => {
                let scan_end = next.min(from.saturating_add(PENDING_SCAN_MAX));
                let filtered = !consumer.config.filter.is_empty();
                let counted = (from..scan_end)
                    .filter(|offset| match ledger.get(*offset) {
                        Some(meta) => {
                            !consumer.is_done(*offset)
                                && (!filtered
                                    || filter_matches(&consumer.config.filter, ledger.subject(meta.subject)))
                        }
                        None => false,
                    })
                    .count() as u64;
                counted + next.saturating_sub(scan_end)
            }
            None => next.saturating_sub(from),
        }
    }
}

/// Messages past a consumer's cursor that `num_pending` looks at one by one.
pub const PENDING_SCAN_MAX: u64 = 65_536;

/// What retention needs to know of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordInfo {
    /// Its offset.
    pub offset: u64,
    /// Its filter value.
    pub subject: Option<Vec<u8>>,
    /// Its bytes (key, filter value, headers, payload); unknown in a compressed batch.
    pub bytes: Option<u32>,
    /// When it expires (µs; 0 = never).
    pub expires_us: u64,
}

/// Each record's offset, filter value, size and expiry (a compressed batch is inflated, within
/// the batch size limit; sizes are then left to the caller).
pub fn record_views(batch: &Batch<'_>, append_us: u64) -> Vec<RecordInfo> {
    let mut out = Vec::with_capacity(batch.header().record_count as usize);
    let mut push = |batch: &Batch<'_>| {
        let compressed = batch.header().is_compressed();
        for record in batch.records() {
            let mut bytes = record.payload.len() + record.key.map_or(0, <[u8]>::len);
            bytes += record.filter_value.map_or(0, <[u8]>::len);
            let mut expires_us = 0;
            for (key, value) in record.headers() {
                bytes += key.len() + value.len();
                if key == TTL_HEADER.as_bytes() {
                    expires_us =
                        parse_ttl_ms(value).map_or(0, |ms| append_us.saturating_add(ms.saturating_mul(1000)));
                }
            }
            let size = (!compressed).then_some(bytes as u32);
            let subject = record.filter_value.map(<[u8]>::to_vec);
            out.push(RecordInfo { offset: record.offset, subject, bytes: size, expires_us });
        }
    };
    if batch.is_compressed() {
        match crate::protocol::compression::inflate(batch.as_bytes(), crate::constants::BATCH_BYTES_MAX * 4) {
            Ok(plain) => match crate::protocol::batch::validate(&plain) {
                Ok(inner) => push(&inner),
                Err(error) => {
                    tracing::warn!(%error, "an appended compressed batch does not inflate to a valid batch")
                }
            },
            Err(error) => tracing::warn!(%error, "an appended compressed batch does not inflate"),
        }
        // Records a bad batch could not show are still counted.
        let header = batch.header();
        if out.is_empty() {
            for offset in header.base_offset..header.next_offset() {
                out.push(RecordInfo { offset, subject: None, bytes: None, expires_us: 0 });
            }
        }
    } else {
        push(batch);
    }
    out
}

/// A record's bytes (key, filter value, headers, payload) and its expiry (µs; 0 = never).
fn measure(record: &crate::protocol::batch::Record<'_>, append_us: u64) -> (u32, u64) {
    let mut bytes = record.payload.len() + record.key.map_or(0, <[u8]>::len);
    bytes += record.filter_value.map_or(0, <[u8]>::len);
    let mut expires_us = 0;
    if record.header_count() > 0 {
        for (key, value) in record.headers() {
            bytes += key.len() + value.len();
            if key == TTL_HEADER.as_bytes() {
                expires_us =
                    parse_ttl_ms(value).map_or(0, |ms| append_us.saturating_add(ms.saturating_mul(1000)));
            }
        }
    }
    (u32::try_from(bytes).unwrap_or(u32::MAX), expires_us)
}

/// A TTL header's value: ASCII decimal milliseconds.
pub fn parse_ttl_ms(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

/// The header of the batch at the start of `bytes`.
pub fn header_at(bytes: &[u8]) -> Option<BatchHeader> {
    BatchHeader::decode(bytes).ok()
}

/// Checks a produce against the policy before anything is written: TTL headers need a topic
/// that allows them, and `max_messages` with discard `new` refuses what does not fit.
pub fn admit<'a>(
    retention: &Retention,
    next: u64,
    batches: impl Iterator<Item = &'a [u8]>,
) -> crate::shard::error::BrokerResult<()> {
    use crate::protocol::messages::Status;
    use crate::shard::error::BrokerError;
    let room = retention.room(next);
    if retention.policy.allow_ttl && room.is_none() {
        return Ok(());
    }
    let mut records = 0_u64;
    for (index, bytes) in batches.enumerate() {
        let Some(header) = header_at(bytes) else { continue };
        if header.has_ttl() && !retention.policy.allow_ttl {
            return Err(BrokerError::new(
                Status::TtlNotAllowed,
                format!("batch {index} has records with a TTL header ({TTL_HEADER}); this topic does not allow TTLs (create it with TTLs allowed)"),
            ));
        }
        records += u64::from(header.record_count);
    }
    if let Some(room) = room {
        if records > room {
            return Err(BrokerError::new(
                Status::TopicFull,
                format!(
                    "the partition holds {} of at most {} messages and discards new ones: {records} more do not fit",
                    retention.live_messages(next),
                    retention.policy.max_messages.unwrap_or(0)
                ),
            ));
        }
    }
    Ok(())
}

/// Records batches just appended (their offsets and append times patched in).
/// `last_append_us` is the append time of the last of them (from the log's answer), all an
/// untracked partition needs: its batches are not decoded again.
pub fn appended<'a>(retention: &mut Retention, batches: impl Iterator<Item = &'a [u8]>, last_append_us: u64) {
    if retention.ledger.is_none() {
        retention.last_timestamp_us = retention.last_timestamp_us.max(last_append_us);
        return;
    }
    for bytes in batches {
        // Validated by the produce path before it was appended.
        match crate::protocol::batch::validated_view(bytes) {
            Ok(batch) => {
                let append_us = batch.header().append_timestamp_us;
                retention.on_append(&batch, append_us);
            }
            Err(error) => tracing::error!(%error, "an appended batch does not validate"),
        }
    }
}
