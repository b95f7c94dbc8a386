//! Stored consumer offsets of one partition, kept in a small compacted log of their own.
//!
//! What it owns: [`OffsetStore`], the offsets that named consumers and consumer groups stored
//! for ONE partition, held in memory as a sorted map and persisted as a [`PartitionLog`] in
//! `<partition dir>/offsets/` (1 MiB segments, the broker's fsync policy). Keys are opaque
//! strings to this module (the server uses `c:<name>` for consumers and `g:<group>` for groups).
//!
//! Which core: the shard that owns the partition, like the partition's own log. The store is
//! `!Send`; mutations take `&mut self`, so the owner runs one at a time (behind its partition
//! state or an `async_lock::Mutex`), which keeps the map's order of updates the log's order.
//!
//! # Format
//!
//! Every change is one batch holding one record (the batch's CRC covers it): the record key is
//! the consumer key's UTF-8 bytes (1 to [`OFFSET_KEY_BYTES_MAX`]), the payload is the offset as
//! 8 little-endian bytes, or empty for a tombstone (the key was removed). Replaying the log from
//! its start and applying records in order rebuilds the map. Any other payload length, a record
//! without a key, or a key that is empty, too long or not UTF-8 cannot come from this module, so
//! [`OffsetStore::open`] refuses it with [`StorageError::Corrupt`] (whose `position` then holds
//! the record's *offset*: this store reads through the log and never sees byte positions).
//!
//! # Compaction
//!
//! Once the log holds more than `max(`[`COMPACTION_RECORDS_MIN`]`, 4 × entries)` records (what a
//! reopen would replay), the store rolls the log, appends a snapshot (every live entry as a
//! record, in as many batches as needed) to the fresh segment, makes it durable, and deletes
//! every segment before the snapshot. Replaying a snapshot is just applying its records, so a
//! crash anywhere in between is harmless: until the snapshot is durable, nothing is deleted;
//! segments are deleted oldest first, so what remains before the snapshot is always a suffix of
//! the history, whose last word on each key (a value or a tombstone) the snapshot then repeats
//! or supersedes. A compaction that fails is logged and retried after as many records again;
//! the change that triggered it was already stored and is reported as such.
//!
//! Invariants: the map equals the replay of the log; an acknowledged change is as durable as
//! the fsync policy promises (it went through [`PartitionLog::append`]; under `--fsync never`,
//! where no write-behind flusher serves this log, it is also written before it is
//! acknowledged, so a process crash cannot take it); a change that failed left the map
//! untouched; at most [`OFFSET_ENTRIES_MAX`] keys are created through this API.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use super::{FsyncPolicy, LogConfig, PartitionLog, StorageError, StorageResult};
use crate::io::Io;
use crate::model::Offset;
use crate::protocol::batch::{self, BatchBuilder, BatchError, Message, Record};
use crate::protocol::batch::{BATCH_HEADER_BYTES, RECORD_HEADER_BYTES};

/// Name of the offsets log's directory inside the partition directory.
pub const OFFSETS_DIR_NAME: &str = "offsets";

/// The longest consumer key, in bytes.
pub const OFFSET_KEY_BYTES_MAX: usize = 255;

/// The most keys one partition stores; storing a new key beyond it fails with
/// [`OffsetError::TooManyEntries`]. A full snapshot is then about 19 MiB (two batches).
pub const OFFSET_ENTRIES_MAX: usize = 65_536;

/// Segment size of the offsets log.
pub const OFFSETS_SEGMENT_BYTES: u64 = 1024 * 1024;

/// Records the log may hold before a compaction however few entries there are.
pub const COMPACTION_RECORDS_MIN: u64 = 1024;

/// With many entries, compaction waits until the log holds this many records per entry.
const COMPACTION_RECORDS_PER_ENTRY: u64 = 4;

/// Write chunk of the offsets log: its batches are tiny, so a small chunk saves DMA memory.
const OFFSETS_WRITE_CHUNK_BYTES: usize = 64 * 1024;

/// Bytes asked for per read while replaying.
const REPLAY_READ_BYTES: usize = 256 * 1024;

/// Size of a stored offset's payload.
const OFFSET_PAYLOAD_BYTES: usize = 8;

/// Room for one change's batch: header, record header and its varying parts, with slack for
/// the record's length fields.
const CHANGE_BATCH_BYTES_MAX: usize =
    BATCH_HEADER_BYTES + RECORD_HEADER_BYTES + OFFSET_KEY_BYTES_MAX + OFFSET_PAYLOAD_BYTES + 64;

const _: () = assert!(OFFSETS_WRITE_CHUNK_BYTES % crate::constants::IO_ALIGNMENT_BYTES == 0);
const _: () = assert!(OFFSET_KEY_BYTES_MAX <= crate::constants::KEY_BYTES_MAX);
const _: () = assert!(CHANGE_BATCH_BYTES_MAX <= crate::constants::BATCH_BYTES_MAX);
const _: () = assert!(COMPACTION_RECORDS_MIN > 0);

/// Why storing or removing an offset failed.
#[derive(Debug)]
pub enum OffsetError {
    /// The key is empty or longer than [`OFFSET_KEY_BYTES_MAX`] bytes.
    KeyInvalid {
        /// The key's length in bytes.
        bytes: usize,
    },
    /// The partition already stores [`OFFSET_ENTRIES_MAX`] keys.
    TooManyEntries,
    /// The log refused the change; the map is unchanged.
    Storage(StorageError),
}

impl fmt::Display for OffsetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OffsetError::KeyInvalid { bytes } => {
                write!(f, "consumer key of {bytes} bytes: it must have 1 to {OFFSET_KEY_BYTES_MAX} bytes")
            }
            OffsetError::TooManyEntries => {
                write!(f, "the partition already stores {OFFSET_ENTRIES_MAX} consumer offsets")
            }
            OffsetError::Storage(error) => write!(f, "storing the consumer offset failed: {error}"),
        }
    }
}

impl std::error::Error for OffsetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OffsetError::Storage(error) => Some(error),
            _ => None,
        }
    }
}

impl From<StorageError> for OffsetError {
    fn from(error: StorageError) -> Self {
        OffsetError::Storage(error)
    }
}

/// The stored offsets of one partition. See the module documentation.
pub struct OffsetStore<I: Io> {
    log: PartitionLog<I>,
    entries: BTreeMap<String, u64>,
    /// Records in the log from its start: what a reopen would replay. A failed compaction
    /// resets it to 0 to back off, so it then undercounts until the next compaction.
    log_records: u64,
}

impl<I: Io> OffsetStore<I> {
    /// Opens (creating if missing) the offsets log in `<partition_dir>/offsets/` with `fsync`,
    /// lets it recover, and replays it from its start into memory.
    pub async fn open(io: I, partition_dir: &Path, fsync: FsyncPolicy) -> StorageResult<Self> {
        let config = LogConfig {
            segment_bytes: OFFSETS_SEGMENT_BYTES,
            write_chunk_bytes: OFFSETS_WRITE_CHUNK_BYTES,
            fsync,
            ..LogConfig::default()
        };
        // The log logs its own repairs.
        let (log, _repairs) = PartitionLog::open(io, &partition_dir.join(OFFSETS_DIR_NAME), config).await?;
        let mut store = OffsetStore { log, entries: BTreeMap::new(), log_records: 0 };
        if let Err(error) = store.replay().await {
            if let Err(close_error) = store.log.close().await {
                tracing::warn!(dir = %store.log.dir().display(), "closing after a failed replay: {close_error}");
            }
            return Err(error);
        }
        Ok(store)
    }

    /// Applies every record of the log, oldest first.
    async fn replay(&mut self) -> StorageResult<()> {
        let mut offset = self.log.offsets().start;
        while let Some(read) = self.log.read(offset, REPLAY_READ_BYTES).await? {
            if read.first_offset != offset || read.next_offset <= offset {
                return Err(StorageError::Corrupt {
                    position: offset,
                    reason: "offsets log read out of order",
                });
            }
            for found in batch::batches(read.bytes()) {
                let found = found?;
                for record in found.records() {
                    let (key, value) = decode(&record)?;
                    self.apply(key, value);
                    self.log_records += 1;
                }
                offset = found.header().next_offset();
            }
            if offset != read.next_offset {
                return Err(StorageError::Corrupt {
                    position: offset,
                    reason: "offsets log read ends mid-batch",
                });
            }
        }
        assert_eq!(offset, self.log.offsets().dirty_next, "replay reached the end of the offsets log");
        Ok(())
    }

    fn apply(&mut self, key: &str, value: Option<u64>) {
        match value {
            Some(offset) => {
                self.entries.insert(key.to_owned(), offset);
            }
            None => {
                self.entries.remove(key);
            }
        }
    }

    /// Stores `offset` for `key`, returning once the change is as durable as the fsync policy
    /// promises. Storing the value already stored writes nothing. May compact the log.
    pub async fn store(&mut self, key: &str, offset: u64) -> Result<(), OffsetError> {
        check_key(key)?;
        match self.entries.get(key) {
            Some(&stored) if stored == offset => return Ok(()),
            Some(_) => {}
            None if self.entries.len() >= OFFSET_ENTRIES_MAX => return Err(OffsetError::TooManyEntries),
            None => {}
        }
        self.append_change(key, Some(offset)).await?;
        self.apply(key, Some(offset));
        self.compact_if_due().await;
        Ok(())
    }

    /// Removes `key` (a tombstone record). Returns false, writing nothing, when it was not
    /// stored. May compact the log.
    pub async fn remove(&mut self, key: &str) -> Result<bool, OffsetError> {
        check_key(key)?;
        if !self.entries.contains_key(key) {
            return Ok(false);
        }
        self.append_change(key, None).await?;
        self.apply(key, None);
        self.compact_if_due().await;
        Ok(true)
    }

    /// The offset stored for `key`.
    pub fn get(&self, key: &str) -> Option<u64> {
        self.entries.get(key).copied()
    }

    /// Every stored (key, offset), sorted by key.
    pub fn entries(&self) -> impl Iterator<Item = (&str, u64)> + '_ {
        self.entries.iter().map(|(key, &offset)| (key.as_str(), offset))
    }

    /// The number of stored keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no key is stored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends one change as a batch of one record.
    async fn append_change(&mut self, key: &str, value: Option<u64>) -> StorageResult<()> {
        let payload = value.map(u64::to_le_bytes);
        let payload: &[u8] = payload.as_ref().map_or(&[], |bytes| bytes.as_slice());
        let mut builder = BatchBuilder::with_capacity(0, 0, CHANGE_BATCH_BYTES_MAX);
        builder.push(&Message { key: Some(key.as_bytes()), ..Message::payload(payload) })?;
        let mut bytes = builder.finish()?;
        assert!(bytes.len() <= CHANGE_BATCH_BYTES_MAX, "change batch of {} bytes", bytes.len());
        let info = self.log.append(&mut bytes).await?;
        assert_eq!(info.base_offset, info.last_offset, "a change is one record");
        // Under `--fsync never` an append returns once buffered, and nothing else writes this
        // log (the shard's write-behind flusher serves the partition's own log only): write the
        // change now, or a process crash would take every change since the last compaction.
        if self.log.write_behind() {
            self.log.flush().await?;
        }
        self.log_records += 1;
        Ok(())
    }

    /// Compacts when the log holds more than `max(COMPACTION_RECORDS_MIN, 4 × entries)` records.
    async fn compact_if_due(&mut self) {
        let entries = self.entries.len() as u64;
        let threshold = COMPACTION_RECORDS_MIN.max(COMPACTION_RECORDS_PER_ENTRY * entries);
        if self.log_records <= threshold {
            return;
        }
        if let Err(error) = self.compact().await {
            // The change that got us here is stored; back off for another threshold of records.
            tracing::warn!(dir = %self.log.dir().display(), "offsets compaction failed: {error}");
            self.log_records = 0;
        }
    }

    /// Rewrites the log as one snapshot of the live entries and deletes what came before it
    /// (see the module documentation). Runs by itself from [`store`](Self::store) and
    /// [`remove`](Self::remove); callable directly, for example before a planned shutdown.
    pub async fn compact(&mut self) -> StorageResult<()> {
        // Seals (and fsyncs) everything before the snapshot; the snapshot starts a segment.
        self.log.roll().await?;
        let snapshot_base = self.log.offsets().dirty_next;
        let mut builder = BatchBuilder::new(0, 0);
        for (key, offset) in &self.entries {
            let payload = offset.to_le_bytes();
            let message = Message { key: Some(key.as_bytes()), ..Message::payload(&payload) };
            match builder.push(&message) {
                Ok(()) => {}
                Err(BatchError::TooLarge { .. } | BatchError::TooManyRecords { .. })
                    if !builder.is_empty() =>
                {
                    append_snapshot_batch(&self.log, &mut builder).await?;
                    builder.push(&message)?;
                }
                Err(error) => return Err(error.into()),
            }
        }
        if !builder.is_empty() {
            append_snapshot_batch(&self.log, &mut builder).await?;
        }
        let snapshot_next = self.log.offsets().dirty_next;
        assert_eq!(snapshot_next - snapshot_base, self.entries.len() as Offset, "snapshot holds every entry");
        if self.log.config().fsync != FsyncPolicy::Always {
            self.log.sync().await?;
        }
        let deleted = self.log.delete_segments_before(snapshot_base).await?;
        assert_eq!(self.log.offsets().start, snapshot_base, "only the snapshot and later remain");
        tracing::debug!(
            dir = %self.log.dir().display(),
            entries = self.entries.len(),
            records_before = self.log_records,
            deleted,
            "compacted offsets"
        );
        self.log_records = self.entries.len() as u64;
        Ok(())
    }

    /// Flushes and fsyncs every change so far, whatever the policy.
    pub async fn sync(&self) -> StorageResult<()> {
        self.log.sync().await
    }

    /// fsyncs when `--fsync interval` is due (the owner's maintenance timer calls it, so a
    /// commit followed by quiet is fsynced within the interval too).
    pub async fn sync_if_due(&self) -> StorageResult<()> {
        self.log.sync_if_due().await
    }

    /// Flushes, fsyncs and closes the log. Later changes fail with [`StorageError::Closed`].
    pub async fn close(&self) -> StorageResult<()> {
        self.log.close().await
    }
}

/// Appends the builder's batch and empties the builder.
async fn append_snapshot_batch<I: Io>(
    log: &PartitionLog<I>,
    builder: &mut BatchBuilder,
) -> StorageResult<()> {
    let records = u64::from(builder.record_count());
    let mut bytes = builder.finish_in_place()?.to_vec();
    let info = log.append(&mut bytes).await?;
    assert_eq!(info.last_offset - info.base_offset + 1, records, "snapshot batch offsets are dense");
    builder.reset(0);
    Ok(())
}

fn check_key(key: &str) -> Result<(), OffsetError> {
    if key.is_empty() || key.len() > OFFSET_KEY_BYTES_MAX {
        return Err(OffsetError::KeyInvalid { bytes: key.len() });
    }
    Ok(())
}

/// The key and value (`None` for a tombstone) of a replayed record.
fn decode<'a>(record: &Record<'a>) -> StorageResult<(&'a str, Option<u64>)> {
    let corrupt = |reason: &'static str| {
        tracing::error!(offset = record.offset, "offsets log: {reason}");
        StorageError::Corrupt { position: record.offset, reason }
    };
    let key = record.key.ok_or_else(|| corrupt("offset record without a key"))?;
    if key.is_empty() || key.len() > OFFSET_KEY_BYTES_MAX {
        return Err(corrupt("offset record key length out of range"));
    }
    let key = std::str::from_utf8(key).map_err(|_| corrupt("offset record key is not UTF-8"))?;
    let value = match <[u8; OFFSET_PAYLOAD_BYTES]>::try_from(record.payload) {
        Ok(bytes) => Some(u64::from_le_bytes(bytes)),
        Err(_) if record.payload.is_empty() => None,
        Err(_) => return Err(corrupt("offset record payload is neither 8 bytes nor empty")),
    };
    Ok((key, value))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use futures_lite::future::block_on;

    use super::*;
    use crate::io::fault::FaultIo;

    const PARTITION_DIR: &str = "/data/1/2/0";

    fn partition_dir() -> PathBuf {
        PathBuf::from(PARTITION_DIR)
    }

    fn open(io: &FaultIo, fsync: FsyncPolicy) -> OffsetStore<FaultIo> {
        block_on(OffsetStore::open(io.clone(), &partition_dir(), fsync)).expect("open offsets")
    }

    fn store(offsets: &mut OffsetStore<FaultIo>, key: &str, offset: u64) {
        block_on(offsets.store(key, offset)).expect("store");
    }

    fn snapshot(offsets: &OffsetStore<FaultIo>) -> Vec<(String, u64)> {
        offsets.entries().map(|(key, offset)| (key.to_string(), offset)).collect()
    }

    #[test]
    fn store_get_overwrite_remove() {
        let io = FaultIo::new();
        let mut offsets = open(&io, FsyncPolicy::Always);
        assert!(offsets.is_empty());
        store(&mut offsets, "g:b", 7);
        store(&mut offsets, "c:a", 3);
        assert_eq!(offsets.get("g:b"), Some(7));
        assert_eq!(offsets.get("c:a"), Some(3));
        assert_eq!(offsets.get("c:zzz"), None);
        store(&mut offsets, "c:a", 9);
        assert_eq!(offsets.get("c:a"), Some(9));
        assert_eq!(snapshot(&offsets), [("c:a".to_string(), 9), ("g:b".to_string(), 7)]);

        // The same value again writes nothing.
        let next = offsets.log.offsets().dirty_next;
        store(&mut offsets, "c:a", 9);
        assert_eq!(offsets.log.offsets().dirty_next, next);

        assert!(block_on(offsets.remove("c:a")).expect("remove"));
        assert!(!block_on(offsets.remove("c:a")).expect("remove again"));
        assert_eq!(offsets.log.offsets().dirty_next, next + 1, "one tombstone");
        assert_eq!(offsets.get("c:a"), None);
        assert_eq!(offsets.len(), 1);
        assert!(io.list_dirs().contains(&partition_dir().join(OFFSETS_DIR_NAME)));
        block_on(offsets.close()).expect("close");
    }

    #[test]
    fn reopen_after_close_and_after_a_clean_crash() {
        let io = FaultIo::new();
        let mut offsets = open(&io, FsyncPolicy::Always);
        store(&mut offsets, "c:one", 1);
        store(&mut offsets, "c:two", 2);
        store(&mut offsets, "c:gone", 3);
        block_on(offsets.remove("c:gone")).expect("remove");
        store(&mut offsets, "c:one", u64::MAX);
        let expected = snapshot(&offsets);
        block_on(offsets.close()).expect("close");
        assert!(matches!(
            block_on(offsets.store("c:one", 5)),
            Err(OffsetError::Storage(StorageError::Closed))
        ));
        assert_eq!(offsets.get("c:one"), Some(u64::MAX), "a failed store leaves the map as it was");

        let mut offsets = open(&io, FsyncPolicy::Always);
        assert_eq!(snapshot(&offsets), expected);
        // Under `always`, every acknowledged store survives power loss.
        store(&mut offsets, "g:three", 3);
        let expected = snapshot(&offsets);
        io.crash_clean();
        drop(offsets);
        let offsets = open(&io, FsyncPolicy::Always);
        assert_eq!(snapshot(&offsets), expected);
    }

    #[test]
    fn sync_makes_stores_under_never_durable() {
        let io = FaultIo::new();
        let mut offsets = open(&io, FsyncPolicy::Never);
        store(&mut offsets, "c:a", 1);
        store(&mut offsets, "c:b", 2);
        block_on(offsets.sync()).expect("sync");
        let expected = snapshot(&offsets);
        io.crash_clean();
        drop(offsets);
        assert_eq!(snapshot(&open(&io, FsyncPolicy::Never)), expected);
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
    fn stores_under_never_are_written_before_they_return() {
        let io = FaultIo::new();
        let mut offsets = open(&io, FsyncPolicy::Never);
        store(&mut offsets, "g:a", 5);
        store(&mut offsets, "c:b", 9);
        block_on(offsets.remove("c:b")).expect("remove");
        store(&mut offsets, "g:a", 6);
        let expected = snapshot(&offsets);
        assert_eq!(expected, [("g:a".to_string(), 6)]);
        let image = process_crash_image(&io);
        drop(offsets);
        assert_eq!(snapshot(&open(&image, FsyncPolicy::Never)), expected);
    }

    #[test]
    fn compaction_bounds_the_log() {
        let io = FaultIo::new();
        let mut offsets = open(&io, FsyncPolicy::Always);
        let mut expected = BTreeMap::new();
        for i in 0..10_000u64 {
            let key = format!("g:group-{}", i % 5);
            store(&mut offsets, &key, i);
            expected.insert(key, i);
        }
        assert!(block_on(offsets.remove("g:group-4")).expect("remove"));
        expected.remove("g:group-4");
        let expected: Vec<(String, u64)> = expected.into_iter().collect();
        assert_eq!(snapshot(&offsets), expected);
        let marks = offsets.log.offsets();
        assert!(marks.start > 0, "old segments were deleted");
        assert!(marks.dirty_next - marks.start <= COMPACTION_RECORDS_MIN + 5, "log holds {marks:?}");
        assert!(offsets.log.size().1 <= 2, "segments: {}", offsets.log.size().1);
        block_on(offsets.close()).expect("close");

        let offsets = open(&io, FsyncPolicy::Always);
        assert_eq!(snapshot(&offsets), expected);
        assert!(offsets.log.offsets().start > 0);
        assert!(offsets.log_records <= COMPACTION_RECORDS_MIN + 5, "replayed {}", offsets.log_records);
    }

    #[test]
    fn compaction_with_many_entries_and_none() {
        let io = FaultIo::new();
        let mut offsets = open(&io, FsyncPolicy::Never);
        for i in 0..3_000u64 {
            store(&mut offsets, &format!("c:{i:0>200}"), i);
        }
        // 3000 entries: the threshold is 12000 records, not reached.
        assert_eq!(offsets.log.offsets().start, 0);
        block_on(offsets.compact()).expect("compact");
        assert_eq!(offsets.log.offsets().start, 3_000);
        assert_eq!(offsets.log_records, 3_000);
        let expected = snapshot(&offsets);
        block_on(offsets.close()).expect("close");
        let mut offsets = open(&io, FsyncPolicy::Never);
        assert_eq!(snapshot(&offsets), expected);
        for i in 0..3_000u64 {
            assert!(block_on(offsets.remove(&format!("c:{i:0>200}"))).expect("remove"));
        }
        // Removing shrinks the threshold, so compactions also ran on their own in between.
        block_on(offsets.compact()).expect("compact an empty store");
        let marks = offsets.log.offsets();
        assert!(marks.start > 6_000);
        assert_eq!(marks.start, marks.dirty_next, "an empty snapshot leaves an empty log");
        assert_eq!(offsets.log.size().1, 1);
        io.crash_clean();
        drop(offsets);
        let offsets = open(&io, FsyncPolicy::Never);
        assert!(offsets.is_empty());
        assert_eq!(offsets.log_records, 0);
    }

    #[test]
    fn keys_are_validated() {
        let io = FaultIo::new();
        let mut offsets = open(&io, FsyncPolicy::Always);
        let longest = "k".repeat(OFFSET_KEY_BYTES_MAX);
        store(&mut offsets, &longest, 1);
        let too_long = "k".repeat(OFFSET_KEY_BYTES_MAX + 1);
        assert!(matches!(block_on(offsets.store(&too_long, 1)), Err(OffsetError::KeyInvalid { bytes: 256 })));
        assert!(matches!(block_on(offsets.store("", 1)), Err(OffsetError::KeyInvalid { bytes: 0 })));
        assert!(matches!(block_on(offsets.remove(&too_long)), Err(OffsetError::KeyInvalid { .. })));
        block_on(offsets.close()).expect("close");
        assert_eq!(open(&io, FsyncPolicy::Always).get(&longest), Some(1));
    }

    #[test]
    fn entry_limit() {
        let io = FaultIo::new();
        let mut offsets = open(&io, FsyncPolicy::Never);
        for i in 0..OFFSET_ENTRIES_MAX {
            offsets.entries.insert(format!("c:{i}"), 0);
        }
        assert!(matches!(block_on(offsets.store("c:new", 1)), Err(OffsetError::TooManyEntries)));
        store(&mut offsets, "c:7", 1);
        assert_eq!(offsets.get("c:7"), Some(1));
    }

    /// Appends raw records straight to the offsets log, as a bug or tampering would.
    fn append_raw(io: &FaultIo, message: Message<'_>) {
        let config = LogConfig { segment_bytes: OFFSETS_SEGMENT_BYTES, ..LogConfig::default() };
        let dir = partition_dir().join(OFFSETS_DIR_NAME);
        let (log, _) = block_on(PartitionLog::open(io.clone(), &dir, config)).expect("open log");
        let mut builder = BatchBuilder::new(0, 0);
        builder.push(&message).expect("push");
        let mut bytes = builder.finish().expect("finish");
        block_on(log.append(&mut bytes)).expect("append");
        block_on(log.close()).expect("close");
    }

    #[test]
    fn bad_records_are_refused_on_open() {
        let cases: [(Message<'_>, &str); 4] = [
            (Message { key: Some(b"c:a"), ..Message::payload(b"1234") }, "payload"),
            (Message::payload(&[0; 8]), "without a key"),
            (Message { key: Some(b""), ..Message::payload(&[0; 8]) }, "key length"),
            (Message { key: Some(&[0xff, 0xfe]), ..Message::payload(&[0; 8]) }, "UTF-8"),
        ];
        for (message, expected) in cases {
            let io = FaultIo::new();
            let mut offsets = open(&io, FsyncPolicy::Always);
            store(&mut offsets, "c:good", 1);
            block_on(offsets.close()).expect("close");
            append_raw(&io, message);
            match block_on(OffsetStore::open(io.clone(), &partition_dir(), FsyncPolicy::Always)) {
                Err(StorageError::Corrupt { position, reason }) => {
                    assert_eq!(position, 1, "the bad record's offset");
                    assert!(reason.contains(expected), "{reason}");
                }
                Err(error) => panic!("expected Corrupt, got {error}"),
                Ok(_) => panic!("a bad record was accepted ({expected})"),
            }
        }
    }

    /// Stores under `always` with one fsync failing at a seeded point (possibly inside a
    /// compaction), then a seeded crash: every acknowledged value survives, and the one store
    /// that failed left either its old or its new value.
    #[test]
    fn failed_fsync_and_crash_keep_acknowledged_values() {
        // About one fsync per store; the first compaction (at the 1025th store) issues the
        // fsyncs numbered about 1024 to 1030, so those are all tried, plus some spread out.
        let failing_syncs = (1_020..1_036u64).chain((1..=8).map(|k| k * 311));
        for (seed, failing_sync) in (1u64..).zip(failing_syncs) {
            let io = FaultIo::new();
            let mut offsets = open(&io, FsyncPolicy::Always);
            io.fail_sync(failing_sync);
            let mut acknowledged: BTreeMap<String, u64> = BTreeMap::new();
            let mut uncertain = None;
            for i in 0..2_500u64 {
                let key = format!("g:{}", (i * seed) % 7);
                match block_on(offsets.store(&key, i)) {
                    Ok(()) => {
                        acknowledged.insert(key, i);
                    }
                    Err(_) => {
                        uncertain = Some((key, i));
                        break;
                    }
                }
            }
            // A failed fsync of a log file poisons it and fails a store; one of an index file
            // (during the compaction's roll) only fails the compaction, and storing goes on.
            assert!(io.syncs() > failing_sync, "seed {seed}: the failing fsync was reached");
            io.crash(seed);
            drop(offsets);
            io.clear_faults();
            let offsets = open(&io, FsyncPolicy::Always);
            for (key, value) in &acknowledged {
                let found = offsets.get(key);
                let allowed = match &uncertain {
                    Some((uncertain_key, new)) if uncertain_key == key => found == Some(*new),
                    _ => false,
                };
                assert!(found == Some(*value) || allowed, "seed {seed}: {key} is {found:?}, stored {value}");
            }
            assert!(offsets.len() <= acknowledged.len() + 1, "seed {seed}: no invented keys");
        }
    }
}
