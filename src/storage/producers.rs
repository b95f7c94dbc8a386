//! The durable side of a partition's named-producer table: a small log of declarations,
//! deletions and snapshots, from which (plus the batch headers after the last snapshot) the
//! table is rebuilt on open.
//!
//! What it owns: [`ProducerLog`], a [`PartitionLog`] in `<partition dir>/producers/`, and the
//! encoding of its records. Every change is one batch holding one record whose key names its
//! kind:
//! * `E` (epoch): a declaration gave producer `id` (`name`) epoch `epoch`;
//! * `D` (delete): producer `id` was forgotten; its batches below `at_offset` in the partition
//!   log no longer count;
//! * `S` (snapshot): the whole table as it was once every batch below `replay_from` had been
//!   applied to it and made durable.
//!
//! Replaying starts from the last snapshot (the log is compacted to it: [`ProducerLog::snapshot`]
//! rolls, appends it, fsyncs and deletes the segments before), then applies the `E` and `D`
//! records after it in order. The partition's owner then applies the batch headers from
//! `replay_from` on (skipping batches of deleted producers below their `at_offset`), which is
//! idempotent: applying a batch twice leaves the same table.
//!
//! Which core: the shard owning the partition; `!Send`, one change at a time (`&mut self`).
//! Invariants: an acknowledged change is as durable as the fsync policy promises (under
//! `--fsync never` it is written before it returns, as stored offsets are); a snapshot is only
//! written for batches already durable in the partition log, so a crash can never leave a
//! snapshot that claims a sequence whose batch is gone.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

use super::{FsyncPolicy, LogConfig, PartitionLog, StorageError, StorageResult};
use crate::io::Io;
use crate::model::Offset;
use crate::protocol::batch::{self, BatchBuilder, Message, Record};

/// Name of the producer log's directory inside the partition directory.
pub const PRODUCERS_DIR_NAME: &str = "producers";

/// How many recent batches per producer keep their offsets (duplicates of older ones are
/// acknowledged without offsets).
pub const RECENT_BATCHES: usize = 5;

/// The longest producer name, in bytes (a metadata name).
pub const PRODUCER_NAME_BYTES_MAX: usize = 255;

/// Segment size of the producer log (a snapshot of the largest table fits one segment).
const PRODUCERS_SEGMENT_BYTES: u64 = 16 * 1024 * 1024;

/// Bytes asked for per read while replaying.
const REPLAY_READ_BYTES: usize = 1024 * 1024;

/// Encoded size of one entry without its name and recent batches.
const ENTRY_FIXED_BYTES: usize = 8 + 4 + 1 + 8 + 8 + 2 + 1;

/// Encoded size of one recent batch.
const PLACED_BYTES: usize = 32;

/// The most entries a snapshot may hold (it must fit one batch).
pub const SNAPSHOT_ENTRIES_MAX: usize = (crate::constants::BATCH_BYTES_MAX - 4096)
    / (ENTRY_FIXED_BYTES + PRODUCER_NAME_BYTES_MAX + RECENT_BATCHES * PLACED_BYTES);

/// Where one batch of a producer landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    /// The batch's last sequence.
    pub last_sequence: u64,
    /// Offset of its first record.
    pub base_offset: Offset,
    /// Offset of its last record.
    pub last_offset: Offset,
    /// When it was appended (µs).
    pub append_timestamp_us: u64,
}

/// One named producer on one partition, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerState {
    /// The producer id (a hash of the name, never 0).
    pub id: u64,
    /// The producer's name (empty when it was rebuilt from batches alone).
    pub name: String,
    /// The newest epoch seen (declared or in a batch).
    pub epoch: u32,
    /// The last sequence stored on this partition.
    pub last_sequence: Option<u64>,
    /// Its last [`RECENT_BATCHES`] batches, oldest first.
    pub recent: VecDeque<Placed>,
    /// Last declaration or append (µs), for expiry and least-recently-used eviction.
    pub last_active_us: u64,
}

impl ProducerState {
    /// A producer with nothing stored yet.
    pub fn new(id: u64, name: &str, epoch: u32, now_us: u64) -> Self {
        let name = name.to_string();
        Self { id, name, epoch, last_sequence: None, recent: VecDeque::new(), last_active_us: now_us }
    }

    /// Applies a stored batch (idempotent: a batch already applied changes nothing).
    pub fn apply(&mut self, epoch: u32, placed: Placed) {
        self.epoch = self.epoch.max(epoch);
        self.last_active_us = self.last_active_us.max(placed.append_timestamp_us);
        if self.last_sequence.is_some_and(|last| last >= placed.last_sequence) {
            return;
        }
        self.last_sequence = Some(placed.last_sequence);
        self.recent.push_back(placed);
        while self.recent.len() > RECENT_BATCHES {
            self.recent.pop_front();
        }
    }
}

/// What [`ProducerLog::open`] recovered.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The table after the last snapshot and the changes after it.
    pub entries: BTreeMap<u64, ProducerState>,
    /// Apply the partition's batch headers from this offset on.
    pub replay_from: Offset,
    /// Producers deleted after the snapshot: their batches below the offset are ignored.
    pub deleted: Vec<(u64, Offset)>,
}

/// The producer log of one partition. See the module documentation.
pub struct ProducerLog<I: Io> {
    log: PartitionLog<I>,
    /// Records since the last snapshot.
    changes: u64,
}

impl<I: Io> ProducerLog<I> {
    /// Opens (creating if missing) `<partition_dir>/producers/` and replays it.
    pub async fn open(io: I, partition_dir: &Path, fsync: FsyncPolicy) -> StorageResult<(Self, Recovered)> {
        let config = LogConfig {
            segment_bytes: PRODUCERS_SEGMENT_BYTES,
            write_chunk_bytes: 64 * 1024,
            fsync,
            ..LogConfig::default()
        };
        let (log, _repairs) = PartitionLog::open(io, &partition_dir.join(PRODUCERS_DIR_NAME), config).await?;
        let mut store = ProducerLog { log, changes: 0 };
        match store.replay().await {
            Ok(recovered) => Ok((store, recovered)),
            Err(error) => {
                let _ = store.log.close().await;
                Err(error)
            }
        }
    }

    async fn replay(&mut self) -> StorageResult<Recovered> {
        let mut recovered = Recovered::default();
        let mut offset = self.log.offsets().start;
        while let Some(read) = self.log.read(offset, REPLAY_READ_BYTES).await? {
            for found in batch::batches(read.bytes()) {
                let found = found?;
                for record in found.records() {
                    apply(&mut recovered, &record)?;
                    self.changes += 1;
                }
                offset = found.header().next_offset();
            }
            if offset != read.next_offset {
                return Err(StorageError::Corrupt {
                    position: offset,
                    reason: "producer log read ends mid-batch",
                });
            }
        }
        Ok(recovered)
    }

    /// Records a declaration's epoch.
    pub async fn record_epoch(&mut self, id: u64, name: &str, epoch: u32, now_us: u64) -> StorageResult<()> {
        let mut payload = Vec::with_capacity(20 + name.len());
        payload.extend_from_slice(&id.to_le_bytes());
        payload.extend_from_slice(&epoch.to_le_bytes());
        payload.extend_from_slice(&now_us.to_le_bytes());
        payload.extend_from_slice(name.as_bytes());
        self.append(b"E", &payload).await
    }

    /// Records that producer `id` was forgotten while the partition log ended at `at_offset`.
    pub async fn record_delete(&mut self, id: u64, at_offset: Offset) -> StorageResult<()> {
        let mut payload = Vec::with_capacity(16);
        payload.extend_from_slice(&id.to_le_bytes());
        payload.extend_from_slice(&at_offset.to_le_bytes());
        self.append(b"D", &payload).await
    }

    /// Changes recorded since the last snapshot.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Writes `entries` as a snapshot valid for batches from `replay_from` on, makes it durable
    /// and deletes everything before it. The caller has made every batch below `replay_from`
    /// durable first.
    pub async fn snapshot<'a>(
        &mut self,
        replay_from: Offset,
        entries: impl ExactSizeIterator<Item = &'a ProducerState>,
    ) -> StorageResult<()> {
        if entries.len() > SNAPSHOT_ENTRIES_MAX {
            return Err(StorageError::Corrupt { position: 0, reason: "producer snapshot too large" });
        }
        let mut payload = Vec::with_capacity(16 + entries.len() * 64);
        payload.extend_from_slice(&replay_from.to_le_bytes());
        payload.extend_from_slice(&(entries.len() as u64).to_le_bytes());
        for entry in entries {
            encode_entry(&mut payload, entry);
        }
        self.log.roll().await?;
        let base = self.log.offsets().dirty_next;
        self.append(b"S", &payload).await?;
        if self.log.config().fsync != FsyncPolicy::Always {
            self.log.sync().await?;
        }
        self.log.delete_segments_before(base).await?;
        self.changes = 0;
        Ok(())
    }

    async fn append(&mut self, kind: &[u8], payload: &[u8]) -> StorageResult<()> {
        let mut builder = BatchBuilder::with_capacity(0, 0, payload.len() + 512);
        builder.push(&Message { key: Some(kind), ..Message::payload(payload) })?;
        let mut bytes = builder.finish()?;
        self.log.append(&mut bytes).await?;
        if self.log.write_behind() {
            self.log.flush().await?;
        }
        self.changes += 1;
        Ok(())
    }

    /// fsyncs when `--fsync interval` is due.
    pub async fn sync_if_due(&self) -> StorageResult<()> {
        self.log.sync_if_due().await
    }

    /// Flushes, fsyncs and closes the log.
    pub async fn close(&self) -> StorageResult<()> {
        self.log.close().await
    }
}

fn encode_entry(out: &mut Vec<u8>, entry: &ProducerState) {
    out.extend_from_slice(&entry.id.to_le_bytes());
    out.extend_from_slice(&entry.epoch.to_le_bytes());
    out.push(u8::from(entry.last_sequence.is_some()));
    out.extend_from_slice(&entry.last_sequence.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&entry.last_active_us.to_le_bytes());
    let name = &entry.name.as_bytes()[..entry.name.len().min(PRODUCER_NAME_BYTES_MAX)];
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(name);
    out.push(entry.recent.len() as u8);
    for placed in &entry.recent {
        out.extend_from_slice(&placed.last_sequence.to_le_bytes());
        out.extend_from_slice(&placed.base_offset.to_le_bytes());
        out.extend_from_slice(&placed.last_offset.to_le_bytes());
        out.extend_from_slice(&placed.append_timestamp_us.to_le_bytes());
    }
}

/// A cursor over a record's payload that fails as corruption.
struct Reader<'a> {
    bytes: &'a [u8],
    offset: Offset,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> StorageResult<&'a [u8]> {
        if self.bytes.len() < n {
            return Err(StorageError::Corrupt {
                position: self.offset,
                reason: "producer record is truncated",
            });
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> StorageResult<[u8; N]> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u64(&mut self) -> StorageResult<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> StorageResult<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u16(&mut self) -> StorageResult<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u8(&mut self) -> StorageResult<u8> {
        Ok(self.take(1)?[0])
    }
    fn name(&mut self, len: usize) -> StorageResult<String> {
        let offset = self.offset;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| StorageError::Corrupt { position: offset, reason: "producer name is not UTF-8" })
    }
}

fn decode_entry(reader: &mut Reader<'_>) -> StorageResult<ProducerState> {
    let id = reader.u64()?;
    let epoch = reader.u32()?;
    let has_last = reader.u8()? != 0;
    let last = reader.u64()?;
    let last_active_us = reader.u64()?;
    let name_len = reader.u16()? as usize;
    let name = reader.name(name_len)?;
    let recent_len = reader.u8()? as usize;
    let mut recent = VecDeque::with_capacity(recent_len);
    for _ in 0..recent_len {
        recent.push_back(Placed {
            last_sequence: reader.u64()?,
            base_offset: reader.u64()?,
            last_offset: reader.u64()?,
            append_timestamp_us: reader.u64()?,
        });
    }
    let last_sequence = has_last.then_some(last);
    Ok(ProducerState { id, name, epoch, last_sequence, recent, last_active_us })
}

/// Applies one replayed record.
fn apply(recovered: &mut Recovered, record: &Record<'_>) -> StorageResult<()> {
    let mut reader = Reader { bytes: record.payload, offset: record.offset };
    match record.key {
        Some(b"E") => {
            let (id, epoch, at) = (reader.u64()?, reader.u32()?, reader.u64()?);
            let len = reader.bytes.len();
            let name = reader.name(len)?;
            let entry =
                recovered.entries.entry(id).or_insert_with(|| ProducerState::new(id, &name, epoch, at));
            entry.epoch = entry.epoch.max(epoch);
            entry.name = name;
            entry.last_active_us = entry.last_active_us.max(at);
        }
        Some(b"D") => {
            let (id, at) = (reader.u64()?, reader.u64()?);
            recovered.entries.remove(&id);
            recovered.deleted.push((id, at));
        }
        Some(b"S") => {
            let replay_from = reader.u64()?;
            let count = reader.u64()?;
            let mut entries = BTreeMap::new();
            for _ in 0..count {
                let entry = decode_entry(&mut reader)?;
                entries.insert(entry.id, entry);
            }
            *recovered = Recovered { entries, replay_from, deleted: Vec::new() };
        }
        _ => {
            return Err(StorageError::Corrupt {
                position: record.offset,
                reason: "unknown producer record kind",
            })
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use futures_lite::future::block_on;

    use super::*;
    use crate::io::fault::FaultIo;

    fn dir() -> PathBuf {
        PathBuf::from("/data/1/2/0")
    }

    fn placed(last_sequence: u64, base_offset: u64) -> Placed {
        Placed { last_sequence, base_offset, last_offset: base_offset + 1, append_timestamp_us: 7 }
    }

    #[test]
    fn apply_is_idempotent_and_keeps_the_last_five() {
        let mut state = ProducerState::new(9, "p", 1, 0);
        for i in 0..8 {
            state.apply(1, placed(i * 10, i * 2));
            state.apply(1, placed(i * 10, i * 2));
        }
        assert_eq!(state.last_sequence, Some(70));
        assert_eq!(state.recent.len(), RECENT_BATCHES);
        assert_eq!(state.recent.front().map(|p| p.last_sequence), Some(30));
        state.apply(3, placed(5, 100));
        assert_eq!((state.epoch, state.last_sequence), (3, Some(70)));
    }

    #[test]
    fn epochs_deletes_and_snapshots_survive_a_reopen() {
        let io = FaultIo::new();
        block_on(async {
            let (mut log, recovered) =
                ProducerLog::open(io.clone(), &dir(), FsyncPolicy::Always).await.unwrap();
            assert!(recovered.entries.is_empty());
            log.record_epoch(1, "one", 1, 10).await.unwrap();
            log.record_epoch(2, "two", 1, 10).await.unwrap();
            log.record_epoch(1, "one", 2, 20).await.unwrap();
            log.close().await.unwrap();

            let (mut log, recovered) =
                ProducerLog::open(io.clone(), &dir(), FsyncPolicy::Always).await.unwrap();
            assert_eq!(recovered.entries[&1].epoch, 2);
            assert_eq!(recovered.entries[&2].name, "two");
            let mut one = recovered.entries[&1].clone();
            one.apply(2, placed(41, 100));
            log.snapshot(102, [one.clone(), recovered.entries[&2].clone()].iter()).await.unwrap();
            log.record_delete(2, 150).await.unwrap();
            log.record_epoch(3, "three", 1, 30).await.unwrap();
            log.close().await.unwrap();

            let (log, recovered) = ProducerLog::open(io.clone(), &dir(), FsyncPolicy::Always).await.unwrap();
            assert_eq!(recovered.replay_from, 102);
            assert_eq!(recovered.entries.get(&1), Some(&one));
            assert!(!recovered.entries.contains_key(&2));
            assert_eq!(recovered.deleted, vec![(2, 150)]);
            assert_eq!(recovered.entries[&3].epoch, 1);
            assert_eq!(log.changes(), 3, "the snapshot compacted what came before it");
            log.close().await.unwrap();
        });
    }
}
