//! The persisted retention and ack state of one partition, kept in a small compacted log.
//!
//! What it owns: [`AckLog`], a [`PartitionLog`] in `<partition dir>/acks/` (1 MiB segments, the
//! broker's fsync policy) holding [`AckChange`]s, and its in-memory mirror, a
//! [`RetentionState`]: the partition's first live offset, the offsets removed from its middle,
//! and per durable consumer its start, its floor and the offsets it has done above the floor.
//! Replaying the log from its start and applying its changes in order rebuilds that state.
//!
//! Which core: the shard that owns the partition, like the partition's own log. The log is
//! `!Send`; [`AckLog::append`] takes `&mut self`, so the owner runs one at a time (behind its
//! partition state or an `async_lock::Mutex`), which keeps the mirror's order of changes the
//! log's order.
//!
//! # Format
//!
//! Every change is one record (a change with more ranges than [`ACK_RANGES_PER_RECORD_MAX`] is
//! split into several records of the same kind, which apply to the same result in order); one
//! [`AckLog::append`] packs its records into as few batches as [`ACK_BATCH_BYTES_TARGET`]
//! allows, appended as one unit (the batch CRC covers the records). A record's key is the
//! consumer's name as UTF-8 (1 to [`ACK_CONSUMER_NAME_BYTES_MAX`] bytes) for a consumer change,
//! or present and empty for a partition change. Its payload is a tag byte, then little-endian
//! `u64` fields:
//!
//! | tag | change     | key      | after the tag                                        |
//! | --: | ---------- | -------- | ---------------------------------------------------- |
//! |   1 | `Start`    | consumer | `start`                                              |
//! |   2 | `Done`     | consumer | 1 to [`ACK_RANGES_PER_RECORD_MAX`] pairs `start, end` |
//! |   3 | `Floor`    | consumer | `floor`                                              |
//! |   4 | `Drop`     | consumer | nothing                                              |
//! |   5 | `Removed`  | empty    | 1 to [`ACK_RANGES_PER_RECORD_MAX`] pairs `start, end` |
//! |   6 | `First`    | empty    | `first`                                              |
//! |   7 | (restore)  | consumer | `start`, `floor`                                     |
//!
//! Tag 7 is written by compaction only and is not an [`AckChange`]: it creates the consumer
//! with `start` and `floor` (nothing done) when it is absent, and only raises a present
//! consumer's floor to `floor` (it never resets, unlike `Start`).
//!
//! A pair is the half-open range `start..end` with `start < end`; empty ranges of a change are
//! not written, and a `Done` or `Removed` change with no non-empty range writes no record. Any
//! other tag, payload length, key (missing, of the wrong kind, too long, not UTF-8) or an empty
//! pair cannot come from this module, so [`AckLog::open`] refuses it with
//! [`StorageError::Corrupt`] (whose `position` then holds the record's *offset*). The format is
//! also drawn in `docs/format.md` ("Ack log").
//!
//! # Compaction
//!
//! Once the log holds more than `max(`[`COMPACTION_RECORDS_MIN`]`, 4 × state size)` records
//! (state size: consumers + removed ranges + every consumer's done ranges), the log rolls, a
//! snapshot is appended to the fresh segment, made durable, and every segment before it is
//! deleted, oldest first. The snapshot is a `First`, the removed ranges as `Removed` records,
//! and per consumer a restore record (tag 7) and its done ranges as `Done` records.
//!
//! Why a restore record and not `Start`: a snapshot spans several batches, so a crash or a
//! failed write can leave a *partial* snapshot in the log, with later appends after it. Had
//! it `Start` (which resets) followed by only some of the consumer's `Done` records, replay
//! would lose done offsets. Every snapshot record instead only adds to what replay already
//! holds, so a partial snapshot is harmless, and a complete one sets the state exactly:
//!
//! Call a replayed state *below* the true one when `first` is no higher, `removed` is a
//! subset, and every consumer present has the true `start`, a floor no higher and done offsets
//! that are done in truth (a consumer may be absent). Replaying any suffix of the log from an
//! empty state stays below the truth: a consumer only appears through `Start` (then it is
//! exact) or a restore record (its true start and floor at that snapshot); later changes keep
//! "below" (`Floor` and `First` raise, `Done` and `Removed` add, `Drop` removes on both sides);
//! and a snapshot's records repeat the truth. A complete snapshot lifts a state below the truth
//! to the truth exactly: `First` and the restore records raise to the true values (creating
//! missing consumers), `Removed` and `Done` add the missing ranges; a consumer present in the
//! replay but not in the snapshot cannot be: it was dropped later, and that `Drop` is replayed
//! too. So a crash anywhere is harmless: until a snapshot is durable nothing is deleted, and
//! what remains before it is always a suffix of the history. A compaction that fails is logged
//! and retried after as many records again; the append that triggered it was already stored
//! and is reported as such.
//!
//! Invariants: the mirror equals the replay of the log; an acknowledged append is as durable
//! as the fsync policy promises, and with `sync` durable whatever the policy (under `--fsync
//! never`, where no write-behind flusher serves this log, it is also written before it is
//! acknowledged, so a process crash cannot take it); an append that failed before its records
//! were written left the mirror untouched; a crash keeps a prefix of the records of an append
//! that was not acknowledged.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use super::ranges::RangeSet;
use super::{FsyncPolicy, LogConfig, PartitionLog, StorageError, StorageResult};
use crate::io::Io;
use crate::protocol::batch::{self, BatchBuilder, BatchError, Message, Record};
use crate::protocol::batch::{BATCH_HEADER_BYTES, RECORD_HEADER_BYTES};

/// Name of the ack log's directory inside the partition directory.
pub const ACKS_DIR_NAME: &str = "acks";

/// The longest consumer name, in bytes (a metadata name).
pub const ACK_CONSUMER_NAME_BYTES_MAX: usize = 255;

/// The most ranges one `Done` or `Removed` record holds; longer lists are split.
pub const ACK_RANGES_PER_RECORD_MAX: usize = 1024;

/// A batch is finished before a record would take it past this size, so a big append or
/// snapshot is several moderate batches, not one of up to `BATCH_BYTES_MAX`.
pub const ACK_BATCH_BYTES_TARGET: usize = 256 * 1024;

/// Segment size of the ack log.
pub const ACKS_SEGMENT_BYTES: u64 = 1024 * 1024;

/// Records the log may hold before a compaction however small the state is.
pub const COMPACTION_RECORDS_MIN: u64 = 1024;

/// With a large state, compaction waits until the log holds this many records per state unit.
const COMPACTION_RECORDS_PER_STATE: u64 = 4;

/// Write chunk of the ack log: its batches are small, so a small chunk saves DMA memory.
const ACKS_WRITE_CHUNK_BYTES: usize = 64 * 1024;

/// Bytes asked for per read while replaying.
const REPLAY_READ_BYTES: usize = 256 * 1024;

/// Payload tags, one per kind of [`AckChange`].
const TAG_START: u8 = 1;
const TAG_DONE: u8 = 2;
const TAG_FLOOR: u8 = 3;
const TAG_DROP: u8 = 4;
const TAG_REMOVED: u8 = 5;
const TAG_FIRST: u8 = 6;
/// Written by compaction only: create the consumer if absent, else raise its floor.
const TAG_RESTORE: u8 = 7;

/// Bytes of one encoded range: start and end.
const RANGE_BYTES: usize = 16;

/// The largest payload: a tag and a full list of ranges.
const PAYLOAD_BYTES_MAX: usize = 1 + ACK_RANGES_PER_RECORD_MAX * RANGE_BYTES;

/// The largest record: header, key length and key, payload.
const RECORD_BYTES_MAX: usize = RECORD_HEADER_BYTES + 2 + ACK_CONSUMER_NAME_BYTES_MAX + PAYLOAD_BYTES_MAX;

const _: () = assert!(ACKS_WRITE_CHUNK_BYTES % crate::constants::IO_ALIGNMENT_BYTES == 0);
const _: () = assert!(ACK_CONSUMER_NAME_BYTES_MAX <= crate::constants::KEY_BYTES_MAX);
const _: () = assert!(BATCH_HEADER_BYTES + RECORD_BYTES_MAX <= ACK_BATCH_BYTES_TARGET);
const _: () = assert!(ACK_BATCH_BYTES_TARGET <= crate::constants::BATCH_BYTES_MAX);
const _: () = assert!(ACK_RANGES_PER_RECORD_MAX > 0 && COMPACTION_RECORDS_MIN > 0);

/// What one durable consumer has done on one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumerAcks {
    /// First offset this durable consumer is interested in on this partition.
    pub start: u64,
    /// Every offset below `floor` is done for this consumer (acked, terminated, past
    /// max_deliver, or not matching its filter).
    pub floor: u64,
    /// Done offsets at or above `floor`.
    pub done: RangeSet,
}

impl ConsumerAcks {
    /// A consumer starting at `start`, with nothing done from there on.
    pub fn new(start: u64) -> Self {
        ConsumerAcks { start, floor: start, done: RangeSet::new() }
    }

    /// True when `offset` is done: below the floor or in `done`.
    pub fn is_done(&self, offset: u64) -> bool {
        offset < self.floor || self.done.contains(offset)
    }

    /// The first offset at or above the floor that is not done.
    pub fn first_not_done(&self) -> u64 {
        self.done.first_absent_from(self.floor)
    }

    /// Marks `range` done (the part below the floor is already done).
    fn mark_done(&mut self, range: &Range<u64>) {
        self.done.insert_range(range.start.max(self.floor)..range.end);
    }

    /// Moves the floor up to `floor` (never down), dropping done offsets below it.
    fn raise_floor(&mut self, floor: u64) {
        if floor > self.floor {
            self.floor = floor;
            self.done.remove_below(floor);
        }
    }
}

/// The retention and ack state of one partition, as the ack log rebuilds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionState {
    /// First live offset of the partition (everything below it was removed); 0 when never set.
    pub first: u64,
    /// Offsets >= first removed in the middle (the persisted deleted-set).
    pub removed: RangeSet,
    /// Durable consumers by name.
    pub consumers: BTreeMap<String, ConsumerAcks>,
}

impl RetentionState {
    /// Applies one change, as replay does (see [`AckChange`] for what each one means).
    pub fn apply(&mut self, change: &AckChange) {
        match change {
            AckChange::Start { consumer, start } => {
                self.consumers.insert(consumer.clone(), ConsumerAcks::new(*start));
            }
            AckChange::Done { consumer, ranges } => {
                if let Some(acks) = self.consumers.get_mut(consumer) {
                    ranges.iter().for_each(|range| acks.mark_done(range));
                }
            }
            AckChange::Floor { consumer, floor } => {
                if let Some(acks) = self.consumers.get_mut(consumer) {
                    acks.raise_floor(*floor);
                }
            }
            AckChange::Drop { consumer } => {
                self.consumers.remove(consumer);
            }
            AckChange::Removed { ranges } => {
                for range in ranges {
                    self.removed.insert_range(range.start.max(self.first)..range.end);
                }
            }
            AckChange::First { first } => {
                if *first > self.first {
                    self.first = *first;
                    self.removed.remove_below(*first);
                }
            }
        }
    }

    /// Applies a snapshot's restore record: creates `consumer` with `start` and `floor`
    /// (nothing done) when absent; raises its floor otherwise (never resets).
    fn restore(&mut self, consumer: &str, start: u64, floor: u64) {
        match self.consumers.get_mut(consumer) {
            Some(acks) => acks.raise_floor(floor),
            None => {
                let mut acks = ConsumerAcks::new(start);
                acks.raise_floor(floor);
                self.consumers.insert(consumer.to_owned(), acks);
            }
        }
    }

    /// What compaction weighs the log against: consumers, removed ranges, and every
    /// consumer's done ranges.
    pub fn size(&self) -> u64 {
        let done: usize = self.consumers.values().map(|acks| acks.done.range_count()).sum();
        (self.consumers.len() + self.removed.range_count() + done) as u64
    }
}

/// One change to a [`RetentionState`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckChange {
    /// A consumer appears on this partition (or is reset): start = floor = `start`, done empty.
    Start {
        /// The consumer's name (1 to [`ACK_CONSUMER_NAME_BYTES_MAX`] bytes).
        consumer: String,
        /// Its first offset.
        start: u64,
    },
    /// Offsets done for a consumer (ignored for an unknown consumer; the part below its floor
    /// is already done; empty ranges are ignored).
    Done {
        /// The consumer's name.
        consumer: String,
        /// The offsets done, as half-open ranges in any order.
        ranges: Vec<Range<u64>>,
    },
    /// The consumer's floor moved up to `floor` (done offsets below it are dropped); never
    /// moves down (ignored for an unknown consumer).
    Floor {
        /// The consumer's name.
        consumer: String,
        /// Its new floor.
        floor: u64,
    },
    /// The consumer was deleted.
    Drop {
        /// The consumer's name.
        consumer: String,
    },
    /// Offsets removed from the partition (added to `removed`, those below `first` ignored;
    /// empty ranges are ignored).
    Removed {
        /// The offsets removed, as half-open ranges in any order.
        ranges: Vec<Range<u64>>,
    },
    /// The partition's first live offset moved up to `first` (`removed` below it is dropped);
    /// never moves down.
    First {
        /// The new first live offset.
        first: u64,
    },
}

impl AckChange {
    /// The consumer a change is about; `None` for a partition change.
    fn consumer(&self) -> Option<&str> {
        match self {
            AckChange::Start { consumer, .. }
            | AckChange::Done { consumer, .. }
            | AckChange::Floor { consumer, .. }
            | AckChange::Drop { consumer } => Some(consumer),
            AckChange::Removed { .. } | AckChange::First { .. } => None,
        }
    }
}

/// The ack log of one partition and its mirror. See the module documentation.
pub struct AckLog<I: Io> {
    log: PartitionLog<I>,
    state: RetentionState,
    /// Records in the log from its start: what a reopen would replay. A failed compaction
    /// resets it to 0 to back off, so it then undercounts until the next compaction.
    log_records: u64,
}

impl<I: Io> AckLog<I> {
    /// Opens (creating if missing) the ack log in `<partition_dir>/acks/` with `fsync`, lets it
    /// recover, and replays it from its start. Returns the log and a copy of the state it
    /// rebuilt (the log keeps its own mirror, for snapshots).
    pub async fn open(
        io: I,
        partition_dir: &Path,
        fsync: FsyncPolicy,
    ) -> StorageResult<(Self, RetentionState)> {
        let config = LogConfig {
            segment_bytes: ACKS_SEGMENT_BYTES,
            write_chunk_bytes: ACKS_WRITE_CHUNK_BYTES,
            fsync,
            ..LogConfig::default()
        };
        // The log logs its own repairs.
        let (log, _repairs) = PartitionLog::open(io, &partition_dir.join(ACKS_DIR_NAME), config).await?;
        let mut acks = AckLog { log, state: RetentionState::default(), log_records: 0 };
        if let Err(error) = acks.replay().await {
            if let Err(close_error) = acks.log.close().await {
                tracing::warn!(dir = %acks.log.dir().display(), "closing after a failed replay: {close_error}");
            }
            return Err(error);
        }
        let state = acks.state.clone();
        Ok((acks, state))
    }

    /// Applies every record of the log, oldest first.
    async fn replay(&mut self) -> StorageResult<()> {
        let mut offset = self.log.offsets().start;
        while let Some(read) = self.log.read(offset, REPLAY_READ_BYTES).await? {
            if read.first_offset != offset || read.next_offset <= offset {
                return Err(StorageError::Corrupt { position: offset, reason: "ack log read out of order" });
            }
            for found in batch::batches(read.bytes()) {
                let found = found?;
                for record in found.records() {
                    match decode(&record)? {
                        Replayed::Change(change) => self.state.apply(&change),
                        Replayed::Restore { consumer, start, floor } => {
                            self.state.restore(&consumer, start, floor)
                        }
                    }
                    self.log_records += 1;
                }
                offset = found.header().next_offset();
            }
            if offset != read.next_offset {
                return Err(StorageError::Corrupt {
                    position: offset,
                    reason: "ack log read ends mid-batch",
                });
            }
        }
        assert_eq!(offset, self.log.offsets().dirty_next, "replay reached the end of the ack log");
        Ok(())
    }

    /// The state: the replay of everything appended so far.
    pub fn state(&self) -> &RetentionState {
        &self.state
    }

    /// Writes `changes` (in order, as few batches as possible, appended as one unit), applies
    /// them to the mirror, and returns once they are as durable as the fsync policy promises;
    /// with `sync`, also flushes and fsyncs whatever the policy ("answered once durable").
    /// Empty `changes` with `sync` just syncs. May compact the log.
    ///
    /// Refuses, writing nothing, a consumer name that is empty or longer than
    /// [`ACK_CONSUMER_NAME_BYTES_MAX`] bytes ([`StorageError::Config`]). When the write fails
    /// the mirror is unchanged; when only the final fsync fails the changes are applied (they
    /// are in the log) and the log is poisoned.
    pub async fn append(&mut self, changes: &[AckChange], sync: bool) -> StorageResult<()> {
        for consumer in changes.iter().filter_map(AckChange::consumer) {
            if consumer.is_empty() || consumer.len() > ACK_CONSUMER_NAME_BYTES_MAX {
                return Err(StorageError::Config(format!(
                    "consumer name of {} bytes: it must have 1 to {ACK_CONSUMER_NAME_BYTES_MAX} bytes",
                    consumer.len()
                )));
            }
        }
        let mut batches = Batches::new();
        for change in changes {
            batches.push_change(change)?;
        }
        let records = batches.records();
        let mut finished = batches.finish()?;
        if !finished.is_empty() {
            let mut slices: Vec<&mut [u8]> = finished.iter_mut().map(Vec::as_mut_slice).collect();
            let infos = self.log.append_batches(&mut slices).await?;
            let written = match (infos.first(), infos.last()) {
                (Some(first), Some(last)) => last.last_offset - first.base_offset + 1,
                _ => 0,
            };
            assert_eq!(written, records, "ack log offsets are dense");
            // Under `--fsync never` an append returns once buffered, and nothing else writes
            // this log: write it now, or a process crash would take it.
            if self.log.write_behind() {
                self.log.flush().await?;
            }
            self.log_records += records;
        }
        changes.iter().for_each(|change| self.state.apply(change));
        // Under `always` a written append is already fsynced.
        if sync && (records == 0 || self.log.config().fsync != FsyncPolicy::Always) {
            self.log.sync().await?;
        }
        self.compact_if_due().await;
        Ok(())
    }

    /// Compacts when the log holds more than `max(COMPACTION_RECORDS_MIN, 4 × state size)`
    /// records.
    async fn compact_if_due(&mut self) {
        if self.log_records <= COMPACTION_RECORDS_MIN {
            return;
        }
        let threshold = COMPACTION_RECORDS_MIN.max(COMPACTION_RECORDS_PER_STATE * self.state.size());
        if self.log_records <= threshold {
            return;
        }
        if let Err(error) = self.compact().await {
            // The append that got us here is stored; back off for another threshold of records.
            tracing::warn!(dir = %self.log.dir().display(), "ack log compaction failed: {error}");
            self.log_records = 0;
        }
    }

    /// Rewrites the log as one snapshot of the state and deletes what came before it (see the
    /// module documentation). Runs by itself from [`append`](Self::append); callable directly,
    /// for example before a planned shutdown.
    pub async fn compact(&mut self) -> StorageResult<()> {
        let (snapshot_base, records) = self.append_snapshot().await?;
        if self.log.config().fsync != FsyncPolicy::Always {
            self.log.sync().await?;
        }
        let deleted = self.log.delete_segments_before(snapshot_base).await?;
        assert_eq!(self.log.offsets().start, snapshot_base, "only the snapshot and later remain");
        tracing::debug!(
            dir = %self.log.dir().display(),
            consumers = self.state.consumers.len(),
            records,
            records_before = self.log_records,
            deleted,
            "compacted ack log"
        );
        self.log_records = records;
        Ok(())
    }

    /// Rolls the log and appends a snapshot of the state to the fresh segment (durable as the
    /// policy's appends are). Returns the snapshot's first offset and its record count.
    async fn append_snapshot(&mut self) -> StorageResult<(u64, u64)> {
        // Seals (and fsyncs) everything before the snapshot; the snapshot starts a segment.
        self.log.roll().await?;
        let snapshot_base = self.log.offsets().dirty_next;
        let mut batches = Batches::new();
        batches.push_fields(&[], TAG_FIRST, &[self.state.first])?;
        batches.push_ranges(&[], TAG_REMOVED, self.state.removed.ranges())?;
        append_finished(&self.log, &mut batches).await?;
        for (consumer, acks) in &self.state.consumers {
            let key = consumer.as_bytes();
            batches.push_fields(key, TAG_RESTORE, &[acks.start, acks.floor])?;
            batches.push_ranges(key, TAG_DONE, acks.done.ranges())?;
            append_finished(&self.log, &mut batches).await?;
        }
        let records = batches.records();
        for mut bytes in batches.finish()? {
            self.log.append(&mut bytes).await?;
        }
        let snapshot_next = self.log.offsets().dirty_next;
        assert_eq!(snapshot_next - snapshot_base, records, "the snapshot's records are dense");
        assert_eq!(records, snapshot_records(&self.state), "the snapshot holds the whole state");
        Ok((snapshot_base, records))
    }

    /// Flushes and fsyncs every change so far, whatever the policy.
    pub async fn sync(&self) -> StorageResult<()> {
        self.log.sync().await
    }

    /// fsyncs when `--fsync interval` is due (the owner's maintenance timer calls it, so a
    /// change followed by quiet is fsynced within the interval too).
    pub async fn sync_if_due(&self) -> StorageResult<()> {
        self.log.sync_if_due().await
    }

    /// Flushes, fsyncs and closes the log. Later appends fail with [`StorageError::Closed`].
    pub async fn close(&self) -> StorageResult<()> {
        self.log.close().await
    }
}

/// Appends the batches `batches` finished so far (a snapshot's, one at a time, so a large
/// snapshot is never held in memory whole).
async fn append_finished<I: Io>(log: &PartitionLog<I>, batches: &mut Batches) -> StorageResult<()> {
    for mut bytes in std::mem::take(&mut batches.finished) {
        log.append(&mut bytes).await?;
    }
    Ok(())
}

/// The records a snapshot of `state` has.
fn snapshot_records(state: &RetentionState) -> u64 {
    let records_of = |set: &RangeSet| set.range_count().div_ceil(ACK_RANGES_PER_RECORD_MAX) as u64;
    let consumers: u64 = state.consumers.values().map(|acks| 1 + records_of(&acks.done)).sum();
    1 + records_of(&state.removed) + consumers
}

/// Records packed into batches of at most [`ACK_BATCH_BYTES_TARGET`] bytes.
struct Batches {
    builder: BatchBuilder,
    finished: Vec<Vec<u8>>,
    records: u64,
    payload: Vec<u8>,
}

impl Batches {
    fn new() -> Self {
        Batches {
            builder: BatchBuilder::with_capacity(0, 0, ACK_BATCH_BYTES_TARGET),
            finished: Vec::new(),
            records: 0,
            payload: Vec::with_capacity(PAYLOAD_BYTES_MAX),
        }
    }

    /// Records pushed so far.
    fn records(&self) -> u64 {
        self.records
    }

    /// Pushes the record(s) of one change.
    fn push_change(&mut self, change: &AckChange) -> StorageResult<()> {
        match change {
            AckChange::Start { consumer, start } => {
                self.push_fields(consumer.as_bytes(), TAG_START, &[*start])
            }
            AckChange::Done { consumer, ranges } => {
                self.push_ranges(consumer.as_bytes(), TAG_DONE, ranges.iter().cloned())
            }
            AckChange::Floor { consumer, floor } => {
                self.push_fields(consumer.as_bytes(), TAG_FLOOR, &[*floor])
            }
            AckChange::Drop { consumer } => {
                self.payload.clear();
                self.payload.push(TAG_DROP);
                self.push_payload(consumer.as_bytes())
            }
            AckChange::Removed { ranges } => self.push_ranges(&[], TAG_REMOVED, ranges.iter().cloned()),
            AckChange::First { first } => self.push_fields(&[], TAG_FIRST, &[*first]),
        }
    }

    /// Pushes a record of a tag and `u64` fields.
    fn push_fields(&mut self, key: &[u8], tag: u8, fields: &[u64]) -> StorageResult<()> {
        self.payload.clear();
        self.payload.push(tag);
        fields.iter().for_each(|field| self.payload.extend_from_slice(&field.to_le_bytes()));
        self.push_payload(key)
    }

    /// Pushes the non-empty ranges of `ranges` as records of at most
    /// [`ACK_RANGES_PER_RECORD_MAX`] ranges each; none when there is no non-empty range.
    fn push_ranges(
        &mut self,
        key: &[u8],
        tag: u8,
        ranges: impl Iterator<Item = Range<u64>>,
    ) -> StorageResult<()> {
        let mut in_record = 0;
        for range in ranges.filter(|range| !range.is_empty()) {
            if in_record == ACK_RANGES_PER_RECORD_MAX {
                self.push_payload(key)?;
                in_record = 0;
            }
            if in_record == 0 {
                self.payload.clear();
                self.payload.push(tag);
            }
            self.payload.extend_from_slice(&range.start.to_le_bytes());
            self.payload.extend_from_slice(&range.end.to_le_bytes());
            in_record += 1;
        }
        if in_record > 0 {
            self.push_payload(key)?;
        }
        Ok(())
    }

    /// Pushes `self.payload` under `key`, finishing the current batch first when the record
    /// would take it past [`ACK_BATCH_BYTES_TARGET`].
    fn push_payload(&mut self, key: &[u8]) -> StorageResult<()> {
        assert!(key.len() <= ACK_CONSUMER_NAME_BYTES_MAX && self.payload.len() <= PAYLOAD_BYTES_MAX);
        // What `BatchBuilder::push` adds for a record with a key and nothing else.
        let record_bytes = RECORD_HEADER_BYTES + 2 + key.len() + self.payload.len();
        if !self.builder.is_empty() && self.builder.byte_len() + record_bytes > ACK_BATCH_BYTES_TARGET {
            self.finish_batch()?;
        }
        let message = Message { key: Some(key), ..Message::payload(&self.payload) };
        self.builder.push(&message)?;
        self.records += 1;
        assert!(
            self.builder.byte_len() <= ACK_BATCH_BYTES_TARGET,
            "ack batch of {} bytes",
            self.builder.byte_len()
        );
        Ok(())
    }

    fn finish_batch(&mut self) -> Result<(), BatchError> {
        self.finished.push(self.builder.finish_in_place()?.to_vec());
        self.builder.reset(0);
        Ok(())
    }

    /// Every batch, the last one finished now.
    fn finish(mut self) -> Result<Vec<Vec<u8>>, BatchError> {
        if !self.builder.is_empty() {
            self.finish_batch()?;
        }
        Ok(self.finished)
    }
}

/// What a replayed record holds.
enum Replayed {
    /// A change appended through [`AckLog::append`] (or repeated by a snapshot).
    Change(AckChange),
    /// A snapshot's restore record.
    Restore { consumer: String, start: u64, floor: u64 },
}

/// Decodes a replayed record.
fn decode(record: &Record<'_>) -> StorageResult<Replayed> {
    let corrupt = |reason: &'static str| {
        tracing::error!(offset = record.offset, "ack log: {reason}");
        StorageError::Corrupt { position: record.offset, reason }
    };
    let key = record.key.ok_or_else(|| corrupt("ack record without a key"))?;
    let (&tag, fields) =
        record.payload.split_first().ok_or_else(|| corrupt("ack record with an empty payload"))?;
    let consumer = || -> StorageResult<String> {
        if key.is_empty() || key.len() > ACK_CONSUMER_NAME_BYTES_MAX {
            return Err(corrupt("ack consumer record key length out of range"));
        }
        let name = std::str::from_utf8(key).map_err(|_| corrupt("ack consumer record key is not UTF-8"))?;
        Ok(name.to_owned())
    };
    let partition = || -> StorageResult<()> {
        if !key.is_empty() {
            return Err(corrupt("ack partition record with a non-empty key"));
        }
        Ok(())
    };
    let value = || -> StorageResult<u64> {
        <[u8; 8]>::try_from(fields)
            .map(u64::from_le_bytes)
            .map_err(|_| corrupt("ack record payload is not a tag and 8 bytes"))
    };
    let pair = || -> StorageResult<(u64, u64)> {
        let pair = <[u8; 16]>::try_from(fields)
            .map_err(|_| corrupt("ack restore payload is not a tag and 16 bytes"))?;
        let (start, floor) = pair.split_at(8);
        let start = u64::from_le_bytes(start.try_into().map_err(|_| corrupt("ack restore start"))?);
        let floor = u64::from_le_bytes(floor.try_into().map_err(|_| corrupt("ack restore floor"))?);
        Ok((start, floor))
    };
    let ranges = || -> StorageResult<Vec<Range<u64>>> {
        let pairs = fields.len() / RANGE_BYTES;
        if fields.len() % RANGE_BYTES != 0 || pairs == 0 || pairs > ACK_RANGES_PER_RECORD_MAX {
            return Err(corrupt("ack record payload is not a tag and 1 to ACK_RANGES_PER_RECORD_MAX ranges"));
        }
        let mut ranges = Vec::with_capacity(pairs);
        for pair in fields.chunks_exact(RANGE_BYTES) {
            let (start, end) = pair.split_at(8);
            let start = u64::from_le_bytes(start.try_into().map_err(|_| corrupt("ack range start"))?);
            let end = u64::from_le_bytes(end.try_into().map_err(|_| corrupt("ack range end"))?);
            if start >= end {
                return Err(corrupt("ack record holds an empty range"));
            }
            ranges.push(start..end);
        }
        Ok(ranges)
    };
    let change = match tag {
        TAG_START => AckChange::Start { consumer: consumer()?, start: value()? },
        TAG_DONE => AckChange::Done { consumer: consumer()?, ranges: ranges()? },
        TAG_FLOOR => AckChange::Floor { consumer: consumer()?, floor: value()? },
        TAG_DROP if fields.is_empty() => AckChange::Drop { consumer: consumer()? },
        TAG_DROP => return Err(corrupt("ack drop record payload is not a lone tag")),
        TAG_REMOVED => {
            partition()?;
            AckChange::Removed { ranges: ranges()? }
        }
        TAG_FIRST => {
            partition()?;
            AckChange::First { first: value()? }
        }
        TAG_RESTORE => {
            let (start, floor) = pair()?;
            return Ok(Replayed::Restore { consumer: consumer()?, start, floor });
        }
        _ => return Err(corrupt("ack record with an unknown tag")),
    };
    Ok(Replayed::Change(change))
}

#[cfg(test)]
// Lists of one range are what the tests mean, not a mistyped `Vec` of offsets.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use std::time::Duration;

    use futures_lite::future::block_on;

    use super::*;
    use crate::io::fault::FaultIo;

    const PARTITION_DIR: &str = "/data/1/2/0";

    fn partition_dir() -> PathBuf {
        PathBuf::from(PARTITION_DIR)
    }

    fn open(io: &FaultIo, fsync: FsyncPolicy) -> AckLog<FaultIo> {
        let (acks, state) =
            block_on(AckLog::open(io.clone(), &partition_dir(), fsync)).expect("open ack log");
        assert_eq!(&state, acks.state(), "open returns the mirror's state");
        acks
    }

    fn append(acks: &mut AckLog<FaultIo>, changes: &[AckChange], sync: bool) {
        block_on(acks.append(changes, sync)).expect("append");
    }

    fn start(consumer: &str, start: u64) -> AckChange {
        AckChange::Start { consumer: consumer.to_string(), start }
    }

    fn done(consumer: &str, ranges: &[Range<u64>]) -> AckChange {
        AckChange::Done { consumer: consumer.to_string(), ranges: ranges.to_vec() }
    }

    fn floor(consumer: &str, floor: u64) -> AckChange {
        AckChange::Floor { consumer: consumer.to_string(), floor }
    }

    fn drop_consumer(consumer: &str) -> AckChange {
        AckChange::Drop { consumer: consumer.to_string() }
    }

    fn removed(ranges: &[Range<u64>]) -> AckChange {
        AckChange::Removed { ranges: ranges.to_vec() }
    }

    fn applied(changes: &[AckChange]) -> RetentionState {
        let mut state = RetentionState::default();
        changes.iter().for_each(|change| state.apply(change));
        state
    }

    /// Every batch of the ack log as (record count, bytes).
    fn raw_batches(acks: &AckLog<FaultIo>) -> Vec<(u32, usize)> {
        let mut out = Vec::new();
        let mut offset = acks.log.offsets().start;
        while let Some(read) = block_on(acks.log.read(offset, REPLAY_READ_BYTES)).expect("read") {
            for found in batch::batches(read.bytes()) {
                let found = found.expect("a valid batch");
                out.push((found.header().record_count, found.as_bytes().len()));
                offset = found.header().next_offset();
            }
        }
        out
    }

    /// A xorshift64 generator: seeded, replayable, no dependency.
    struct Xorshift(u64);

    impl Xorshift {
        fn below(&mut self, bound: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % bound
        }

        fn ranges(&mut self) -> Vec<Range<u64>> {
            (0..1 + self.below(4))
                .map(|_| {
                    let start = self.below(300);
                    start..start + self.below(6)
                })
                .collect()
        }

        fn change(&mut self) -> AckChange {
            let consumer = format!("consumer-{}", self.below(4));
            match self.below(12) {
                0 => start(&consumer, self.below(100)),
                1..=5 => AckChange::Done { consumer, ranges: self.ranges() },
                6 | 7 => floor(&consumer, self.below(300)),
                8 => drop_consumer(&consumer),
                9 | 10 => AckChange::Removed { ranges: self.ranges() },
                _ => AckChange::First { first: self.below(300) },
            }
        }
    }

    #[test]
    fn apply_follows_the_documented_rules() {
        let mut state = applied(&[
            start("a", 10),
            done("a", &[5..12, 14..15]),
            done("nobody", &[1..2]),
            floor("nobody", 3),
        ]);
        let a = &state.consumers["a"];
        assert_eq!((a.start, a.floor), (10, 10));
        assert_eq!(a.done.ranges().collect::<Vec<_>>(), [10..12, 14..15], "below the floor is already done");
        assert!(a.is_done(3) && a.is_done(11) && !a.is_done(12) && a.is_done(14));
        assert_eq!(a.first_not_done(), 12);
        assert_eq!(state.consumers.len(), 1, "changes for unknown consumers are ignored");

        state.apply(&floor("a", 12));
        state.apply(&floor("a", 11));
        let a = &state.consumers["a"];
        assert_eq!(a.floor, 12, "the floor never moves down");
        assert_eq!(a.done.ranges().collect::<Vec<_>>(), [14..15]);

        state.apply(&start("a", 50));
        assert_eq!(state.consumers["a"], ConsumerAcks::new(50), "start resets");
        state.apply(&drop_consumer("a"));
        assert!(state.consumers.is_empty());

        state.apply(&removed(&[3..5, 8..9]));
        state.apply(&AckChange::First { first: 4 });
        state.apply(&AckChange::First { first: 2 });
        assert_eq!(state.first, 4, "first never moves down");
        assert_eq!(state.removed.ranges().collect::<Vec<_>>(), [4..5, 8..9]);
        state.apply(&removed(&[0..6]));
        assert_eq!(state.removed.ranges().collect::<Vec<_>>(), [4..6, 8..9], "below first is ignored");
        assert_eq!(state.size(), 2);
    }

    #[test]
    fn replay_equals_the_applied_state() {
        let policies =
            [FsyncPolicy::Always, FsyncPolicy::Interval(Duration::from_secs(3600)), FsyncPolicy::Never];
        for (seed, fsync) in (1u64..).zip(policies) {
            let io = FaultIo::new();
            let mut acks = open(&io, fsync);
            let mut random = Xorshift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut model = RetentionState::default();
            let mut records = 0;
            let mut writing_appends = 0;
            for step in 0..300 {
                let changes: Vec<AckChange> = (0..1 + random.below(5)).map(|_| random.change()).collect();
                changes.iter().for_each(|change| model.apply(change));
                let before = acks.log.offsets().dirty_next;
                append(&mut acks, &changes, step % 7 == 0);
                let written = acks.log.offsets().dirty_next - before;
                writing_appends += usize::from(written > 0);
                records += written;
                assert_eq!(acks.state(), &model, "seed {seed} step {step}");
            }
            assert_eq!(acks.log.offsets().start, 0, "no compaction yet");
            assert_eq!(acks.log_records, records);
            // Some appends hold only empty ranges and write nothing.
            assert!(writing_appends > 250, "{writing_appends} appends wrote");
            assert_eq!(raw_batches(&acks).len(), writing_appends, "small appends are one batch each");
            block_on(acks.close()).expect("close");
            let reopened = open(&io, fsync);
            assert_eq!(reopened.state(), &model, "seed {seed}");
            assert_eq!(reopened.log_records, records);
        }
    }

    /// What a process crash leaves: every byte written survives, nothing the process buffered.
    fn process_crash_image(io: &FaultIo) -> FaultIo {
        let image = FaultIo::new();
        for path in io.list_paths() {
            image.set_file_bytes(&path, &io.file_bytes(&path).expect("a listed file"));
        }
        image
    }

    #[test]
    fn appends_under_never_are_written_and_sync_makes_them_durable() {
        let io = FaultIo::new();
        let mut acks = open(&io, FsyncPolicy::Never);
        append(&mut acks, &[start("a", 0), done("a", &[0..3])], false);
        let written = acks.state().clone();
        assert_eq!(open(&process_crash_image(&io), FsyncPolicy::Never).state(), &written);
        append(&mut acks, &[floor("a", 3)], true);
        let synced = acks.state().clone();
        io.crash_clean();
        drop(acks);
        assert_eq!(open(&io, FsyncPolicy::Never).state(), &synced);
    }

    #[test]
    fn sync_makes_appends_under_interval_durable() {
        let io = FaultIo::new();
        let fsync = FsyncPolicy::Interval(Duration::from_secs(3600));
        let mut acks = open(&io, fsync);
        append(&mut acks, &[start("a", 5)], true);
        let synced = acks.state().clone();
        append(&mut acks, &[done("a", &[5..6])], false);
        io.crash_clean();
        drop(acks);
        let mut acks = open(&io, fsync);
        assert_eq!(acks.state(), &synced, "without sync the last append was lost");

        append(&mut acks, &[done("a", &[5..9])], false);
        let next = acks.log.offsets().dirty_next;
        append(&mut acks, &[], true);
        assert_eq!(acks.log.offsets().dirty_next, next, "an empty append writes nothing");
        let synced = acks.state().clone();
        io.crash_clean();
        drop(acks);
        assert_eq!(open(&io, fsync).state(), &synced, "an empty append with sync syncs");
    }

    #[test]
    fn compaction_keeps_the_state_and_deletes_old_segments() {
        let io = FaultIo::new();
        let mut acks = open(&io, FsyncPolicy::Always);
        let mut model = RetentionState::default();
        let setup = [start("a", 0), start("b", 0), start("c", 100)];
        append(&mut acks, &setup, false);
        setup.iter().for_each(|change| model.apply(change));
        for i in 0..6_000u64 {
            let consumer = ["a", "b", "c"][(i % 3) as usize];
            let mut changes = vec![done(consumer, &[i..i + 1]), removed(&[i + 10..i + 11])];
            if i % 50 == 49 {
                changes.push(floor(consumer, i - 20));
                changes.push(AckChange::First { first: i });
            }
            append(&mut acks, &changes, false);
            changes.iter().for_each(|change| model.apply(change));
        }
        assert_eq!(acks.state(), &model);
        let marks = acks.log.offsets();
        assert!(marks.start > 0, "old segments were deleted");
        let threshold = COMPACTION_RECORDS_MIN.max(4 * model.size());
        assert!(marks.dirty_next - marks.start <= threshold + 4, "log holds {marks:?}");
        assert!(acks.log.size().1 <= 2, "segments: {}", acks.log.size().1);
        block_on(acks.close()).expect("close");

        let acks = open(&io, FsyncPolicy::Always);
        assert_eq!(acks.state(), &model);
        assert!(acks.log.offsets().start > 0);
        assert!(acks.log_records <= threshold + 4, "replayed {}", acks.log_records);
    }

    #[test]
    fn large_state_snapshot_is_split_and_reopens() {
        let io = FaultIo::new();
        let mut acks = open(&io, FsyncPolicy::Never);
        let done_ranges: Vec<Range<u64>> = (0..5_000u64).map(|i| 1_000 + 3 * i..1_002 + 3 * i).collect();
        let removed_ranges: Vec<Range<u64>> = (0..3_000u64).map(|i| 2 * i..2 * i + 1).collect();
        let changes = [
            start("big", 1_000),
            done("big", &done_ranges),
            start("small", 0),
            floor("small", 7),
            removed(&removed_ranges),
            AckChange::First { first: 10 },
        ];
        append(&mut acks, &changes, false);
        let expected = applied(&changes);
        assert_eq!(acks.state(), &expected);
        assert_eq!(expected.consumers["big"].done.range_count(), 5_000);
        block_on(acks.compact()).expect("compact");
        // First, 3 Removed (2995 ranges), big: restore, 5 Done; small: restore.
        assert_eq!(acks.log_records, 1 + 3 + 1 + 5 + 1);
        assert_eq!(acks.log.offsets().dirty_next - acks.log.offsets().start, acks.log_records);
        assert_eq!(acks.log.size().1, 1, "the snapshot alone remains");
        for (records, bytes) in raw_batches(&acks) {
            assert!(bytes <= ACK_BATCH_BYTES_TARGET, "snapshot batch of {records} records, {bytes} bytes");
        }
        assert_eq!(acks.state(), &expected, "compaction changes nothing");
        io.crash_clean();
        drop(acks);
        let mut acks = open(&io, FsyncPolicy::Never);
        assert_eq!(acks.state(), &expected, "the snapshot was made durable");
        append(&mut acks, &[drop_consumer("big")], true);
        block_on(acks.compact()).expect("compact again");
        assert_eq!(acks.log_records, 1 + 3 + 1);
        block_on(acks.close()).expect("close");
        let mut expected = expected;
        expected.apply(&drop_consumer("big"));
        assert_eq!(open(&io, FsyncPolicy::Never).state(), &expected);
    }

    #[test]
    fn large_range_lists_are_split() {
        let io = FaultIo::new();
        let mut acks = open(&io, FsyncPolicy::Always);
        let done_ranges: Vec<Range<u64>> = (0..20_000u64).map(|i| 2 * i..2 * i + 1).collect();
        // Empty ranges are not written.
        let mut removed_ranges: Vec<Range<u64>> = (0..1_025u64).map(|i| 5 * i..5 * i + 2).collect();
        removed_ranges.push(7..7);
        let changes = [start("a", 0), done("a", &done_ranges), removed(&removed_ranges), removed(&[9..9])];
        append(&mut acks, &changes, false);
        // Start, 20 Done records of 1024 ranges or fewer, 2 Removed records, nothing for 9..9.
        assert_eq!(acks.log_records, 1 + 20 + 2);
        let batches = raw_batches(&acks);
        assert_eq!(batches.iter().map(|&(records, _)| u64::from(records)).sum::<u64>(), 23);
        assert!(batches.len() >= 2, "{} KiB of records need several batches", 20 * 16);
        for (records, bytes) in &batches {
            assert!(*bytes <= ACK_BATCH_BYTES_TARGET, "batch of {records} records, {bytes} bytes");
        }
        let expected = applied(&changes);
        assert_eq!(acks.state(), &expected);
        assert_eq!(expected.consumers["a"].done.len(), 20_000);
        block_on(acks.close()).expect("close");
        assert_eq!(open(&io, FsyncPolicy::Always).state(), &expected);
    }

    /// Seeded crashes after unsynced appends: the log recovers a prefix of the appends (a torn
    /// tail is cut off), never less than what was synced.
    #[test]
    fn a_crash_recovers_a_prefix() {
        let mut recovered_counts = std::collections::BTreeSet::new();
        for seed in 1..=24u64 {
            let io = FaultIo::new();
            let mut acks = open(&io, FsyncPolicy::Never);
            let mut random = Xorshift(seed.wrapping_mul(0x2545_F491_4F6C_DD1D));
            let mut states = vec![acks.state().clone()];
            for step in 0..40 {
                let changes: Vec<AckChange> = (0..1 + random.below(3)).map(|_| random.change()).collect();
                append(&mut acks, &changes, step == 9);
                states.push(acks.state().clone());
            }
            io.crash(seed);
            drop(acks);
            let acks = open(&io, FsyncPolicy::Never);
            let found = states.iter().rposition(|state| state == acks.state());
            let Some(found) = found else { panic!("seed {seed}: recovered a state no prefix had") };
            assert!(found >= 10, "seed {seed}: recovered {found} appends, 10 were synced");
            recovered_counts.insert(found);
        }
        assert!(recovered_counts.len() > 1, "crashes kept different prefixes: {recovered_counts:?}");
    }

    #[test]
    fn a_torn_write_fails_the_append_and_leaves_the_state() {
        let io = FaultIo::new();
        let mut acks = open(&io, FsyncPolicy::Always);
        append(&mut acks, &[start("a", 0), done("a", &[0..4])], false);
        let before = acks.state().clone();
        io.tear_write(0, 100);
        assert!(block_on(acks.append(&[floor("a", 4)], false)).is_err());
        assert_eq!(acks.state(), &before, "a failed append changes nothing");
        io.crash(7);
        drop(acks);
        io.clear_faults();
        assert_eq!(open(&io, FsyncPolicy::Always).state(), &before);
    }

    #[test]
    fn consumer_names_are_validated_and_closed_logs_refuse() {
        let io = FaultIo::new();
        let mut acks = open(&io, FsyncPolicy::Always);
        let longest = "n".repeat(ACK_CONSUMER_NAME_BYTES_MAX);
        append(&mut acks, &[start(&longest, 3)], false);
        let next = acks.log.offsets().dirty_next;
        for bad in [String::new(), "n".repeat(ACK_CONSUMER_NAME_BYTES_MAX + 1)] {
            let changes = [AckChange::First { first: 1 }, drop_consumer(&bad)];
            assert!(matches!(block_on(acks.append(&changes, false)), Err(StorageError::Config(_))));
        }
        assert_eq!(acks.log.offsets().dirty_next, next, "nothing was written");
        assert_eq!(acks.state().first, 0);
        block_on(acks.close()).expect("close");
        assert!(matches!(
            block_on(acks.append(&[drop_consumer(&longest)], false)),
            Err(StorageError::Closed)
        ));
        assert!(acks.state().consumers.contains_key(&longest), "a failed append changes nothing");
        assert_eq!(open(&io, FsyncPolicy::Always).state().consumers[&longest], ConsumerAcks::new(3));
    }

    #[test]
    fn restore_creates_or_only_raises_the_floor() {
        let mut state = applied(&[start("a", 5), done("a", &[8..9]), floor("a", 6)]);
        state.restore("a", 5, 7);
        state.restore("a", 5, 6);
        let a = &state.consumers["a"];
        assert_eq!((a.start, a.floor), (5, 7), "a present consumer's floor only rises");
        assert_eq!(a.done.ranges().collect::<Vec<_>>(), [8..9], "restore never resets");
        state.restore("b", 3, 4);
        assert_eq!(state.consumers["b"], ConsumerAcks { start: 3, floor: 4, done: RangeSet::new() });
    }

    /// A state whose snapshot spans two batches, one consumer's records straddling them.
    fn state_of_several_batches() -> Vec<AckChange> {
        let mut changes = vec![
            AckChange::First { first: 100 },
            removed(&(0..3_000u64).map(|i| 100 + 2 * i..101 + 2 * i).collect::<Vec<_>>()),
        ];
        for c in 0..4u64 {
            let name = format!("consumer-{c}");
            let ranges: Vec<Range<u64>> = (0..6_000u64).map(|i| 200 + 3 * i..201 + 3 * i + c % 2).collect();
            changes.extend([start(&name, 100), done(&name, &ranges), floor(&name, 150 + c)]);
        }
        changes
    }

    /// Every file of the ack log with its bytes.
    fn files(io: &FaultIo) -> BTreeMap<PathBuf, Vec<u8>> {
        let dir = partition_dir().join(ACKS_DIR_NAME);
        let paths = io.list_paths().into_iter().filter(|path| path.starts_with(&dir));
        paths.map(|path| (path.clone(), io.file_bytes(&path).expect("a listed file"))).collect()
    }

    /// A crash while a snapshot is being written leaves a partial snapshot (its segment cut at
    /// any byte: the batches before the cut survive). Neither that, nor more appends after it
    /// and a later compaction interrupted between its segment deletions (emulated by restoring
    /// a suffix of the deleted segments), loses anything.
    #[test]
    fn a_partial_snapshot_is_harmless() {
        let io = FaultIo::new();
        let mut acks = open(&io, FsyncPolicy::Never);
        append(&mut acks, &state_of_several_batches(), true);
        let truth = acks.state().clone();
        let (base, records) = block_on(acks.append_snapshot()).expect("append a snapshot");
        block_on(acks.log.flush()).expect("write the snapshot");
        let snapshot_path = partition_dir().join(ACKS_DIR_NAME).join(format!("{base:020}.log"));
        let snapshot = io.file_bytes(&snapshot_path).expect("the snapshot's segment");
        let mut partial = 0;
        for cut in (0..snapshot.len()).step_by(snapshot.len() / 9) {
            let io = process_crash_image(&io);
            io.set_file_bytes(&snapshot_path, &snapshot[..cut]);
            let mut acks = open(&io, FsyncPolicy::Never);
            assert_eq!(acks.state(), &truth, "cut at {cut}: reopened");
            let kept = acks.log.offsets().dirty_next.saturating_sub(base);
            partial += usize::from(kept > 0 && kept < records);

            let later = [
                drop_consumer("consumer-0"),
                done("consumer-1", &[150..210, 20_000..20_005]),
                floor("consumer-2", 1_000),
                start("consumer-3", 500),
                done("consumer-3", &[600..601]),
                start("late", 7),
                AckChange::First { first: 2_000 },
            ];
            append(&mut acks, &later, true);
            let truth = acks.state().clone();
            let before = files(&io);
            block_on(acks.compact()).expect("compact");
            let after = files(&io);
            let mut deleted: Vec<PathBuf> =
                before.keys().filter(|path| !after.contains_key(*path)).cloned().collect();
            deleted.sort_by_key(|path| path.file_stem().map(|stem| stem.to_owned()));
            assert!(!deleted.is_empty(), "cut at {cut}: the compaction deleted segments");
            for keep_from in 0..=deleted.len() {
                let image = process_crash_image(&io);
                for path in &deleted[keep_from..] {
                    image.set_file_bytes(path, &before[path]);
                }
                let reopened = open(&image, FsyncPolicy::Never);
                let restored = deleted.len() - keep_from;
                assert_eq!(reopened.state(), &truth, "cut at {cut}: {restored} deleted files restored");
            }
        }
        assert!(partial >= 2, "{partial} cuts left a partial snapshot");
    }

    /// Appends one raw record straight to the ack log, as a bug or tampering would.
    fn append_raw(io: &FaultIo, key: Option<&[u8]>, payload: &[u8]) {
        let config = LogConfig { segment_bytes: ACKS_SEGMENT_BYTES, ..LogConfig::default() };
        let dir = partition_dir().join(ACKS_DIR_NAME);
        let (log, _) = block_on(PartitionLog::open(io.clone(), &dir, config)).expect("open log");
        let mut builder = BatchBuilder::new(0, 0);
        builder.push(&Message { key, ..Message::payload(payload) }).expect("push");
        let mut bytes = builder.finish().expect("finish");
        block_on(log.append(&mut bytes)).expect("append");
        block_on(log.close()).expect("close");
    }

    /// A bad record to append: its key, its payload, and part of the reason it is refused for.
    type BadRecord<'a> = (Option<&'a [u8]>, Vec<u8>, &'static str);

    #[test]
    fn bad_records_are_refused_on_open() {
        let pair = |start: u64, end: u64| [start.to_le_bytes(), end.to_le_bytes()].concat();
        let with_tag = |tag: u8, rest: &[u8]| [&[tag][..], rest].concat();
        let too_many = with_tag(TAG_DONE, &pair(0, 1).repeat(ACK_RANGES_PER_RECORD_MAX + 1));
        // (key, payload, what the refusal says)
        let cases: Vec<BadRecord<'_>> = vec![
            (Some(b"c"), with_tag(9, &[0; 8]), "unknown tag"),
            (Some(b"c"), vec![], "empty payload"),
            (None, with_tag(TAG_START, &[0; 8]), "without a key"),
            (Some(b"c"), with_tag(TAG_START, &[1, 2, 3]), "8 bytes"),
            (Some(b"c"), with_tag(TAG_FLOOR, &[0; 9]), "8 bytes"),
            (Some(b""), with_tag(TAG_START, &[0; 8]), "key length"),
            (Some(&[0xff, 0xfe]), with_tag(TAG_FLOOR, &[0; 8]), "UTF-8"),
            (Some(b"c"), with_tag(TAG_DROP, &[0]), "lone tag"),
            (Some(b"c"), with_tag(TAG_DONE, &[]), "ranges"),
            (Some(b"c"), with_tag(TAG_DONE, &[0; 15]), "ranges"),
            (Some(b"c"), too_many, "ranges"),
            (Some(b"c"), with_tag(TAG_DONE, &pair(5, 5)), "empty range"),
            (Some(b""), with_tag(TAG_REMOVED, &pair(6, 2)), "empty range"),
            (Some(b"c"), with_tag(TAG_FIRST, &[0; 8]), "non-empty key"),
            (Some(b"c"), with_tag(TAG_REMOVED, &pair(1, 2)), "non-empty key"),
            (Some(b"c"), with_tag(TAG_RESTORE, &[0; 8]), "16 bytes"),
            (Some(b""), with_tag(TAG_RESTORE, &[0; 16]), "key length"),
        ];
        for (key, payload, expected) in cases {
            let io = FaultIo::new();
            let mut acks = open(&io, FsyncPolicy::Always);
            append(&mut acks, &[start("good", 1)], false);
            block_on(acks.close()).expect("close");
            append_raw(&io, key, &payload);
            match block_on(AckLog::open(io.clone(), &partition_dir(), FsyncPolicy::Always)) {
                Err(StorageError::Corrupt { position, reason }) => {
                    assert_eq!(position, 1, "the bad record's offset");
                    assert!(reason.contains(expected), "{reason} (expected {expected})");
                }
                Err(error) => panic!("expected Corrupt, got {error}"),
                Ok(_) => panic!("a bad record was accepted ({expected})"),
            }
        }
        // The good forms of the same records are accepted.
        let io = FaultIo::new();
        drop(open(&io, FsyncPolicy::Always));
        append_raw(&io, Some(b""), &with_tag(TAG_REMOVED, &pair(1, 2)));
        append_raw(&io, Some(b"c"), &with_tag(TAG_DROP, &[]));
        assert_eq!(open(&io, FsyncPolicy::Always).state().removed.len(), 1);
    }
}
