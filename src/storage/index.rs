//! The sparse offset index and time index of one segment, in memory and in their files.
//!
//! Owned by the segment, on the shard that owns the partition. One entry is taken at the first
//! batch and then whenever at least `interval_bytes` of log have passed since the last entry; each
//! entry names a batch by relative offset, byte position and append timestamp. The offset index
//! file (`.index`) stores (relative offset, position), the time index file (`.timeindex`) stores
//! (timestamp, relative offset); both start with a 16-byte header (docs/format.md).
//!
//! Invariants: relative offsets and positions strictly increase, timestamps never decrease,
//! `base_offset + relative_offset` fits a `u64`, and every position points at the first byte of a
//! batch inside the log's valid length. Index files are hints: recovery keeps only the prefix
//! that satisfies these rules and checks the last entry it keeps against the log itself.

use crate::model::{Offset, TimestampUs};

/// Magic of the offset index file.
pub const OFFSET_INDEX_MAGIC: [u8; 4] = *b"RBIX";
/// Magic of the time index file.
pub const TIME_INDEX_MAGIC: [u8; 4] = *b"RBTX";
/// Version of both index file formats.
pub const INDEX_FORMAT_VERSION: u16 = 1;
/// Bytes of the header at the start of both index files.
pub const INDEX_HEADER_BYTES: usize = 16;
/// Bytes of one offset index entry: relative offset u32, position u32.
pub const OFFSET_ENTRY_BYTES: usize = 8;
/// Bytes of one time index entry: timestamp u64, relative offset u32, reserved u32.
pub const TIME_ENTRY_BYTES: usize = 16;

const _: () = assert!(INDEX_HEADER_BYTES == 4 + 2 + 2 + 8);
const _: () = assert!(OFFSET_ENTRY_BYTES == 4 + 4 && TIME_ENTRY_BYTES == 8 + 4 + 4);

/// One index point: the batch starting at `position` has base offset `base + relative_offset`
/// and was appended at `timestamp_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Offset of the batch relative to the segment's base offset.
    pub relative_offset: u32,
    /// Byte position of the batch in the segment's log file.
    pub position: u32,
    /// Append timestamp of the batch.
    pub timestamp_us: TimestampUs,
}

/// The index of one segment.
#[derive(Debug, Clone)]
pub struct SegmentIndex {
    base_offset: Offset,
    interval_bytes: u32,
    entries: Vec<IndexEntry>,
}

impl SegmentIndex {
    /// An empty index for the segment starting at `base_offset`.
    pub fn new(base_offset: Offset, interval_bytes: u32) -> Self {
        assert!(interval_bytes > 0);
        Self { base_offset, interval_bytes, entries: Vec::new() }
    }

    /// The entries, in order.
    pub fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }

    /// Keeps the first `count` entries.
    pub fn truncate(&mut self, count: usize) {
        self.entries.truncate(count);
    }

    /// Records the batch at `position` if it is the first or far enough past the last entry.
    /// Returns true when an entry was added.
    pub fn observe(&mut self, offset: Offset, position: u64, timestamp_us: TimestampUs) -> bool {
        let due = match self.entries.last() {
            None => true,
            Some(last) => position >= u64::from(last.position) + u64::from(self.interval_bytes),
        };
        if !due {
            return false;
        }
        let relative_offset = offset - self.base_offset;
        assert!(relative_offset <= u64::from(u32::MAX) && position <= u64::from(u32::MAX));
        let entry =
            IndexEntry { relative_offset: relative_offset as u32, position: position as u32, timestamp_us };
        if let Some(last) = self.entries.last() {
            assert!(entry.relative_offset > last.relative_offset && entry.position > last.position);
            assert!(entry.timestamp_us >= last.timestamp_us);
        }
        self.entries.push(entry);
        true
    }

    /// The last entry at or before `offset`: where a scan for `offset` should start.
    /// Returns (offset of that batch, position); (base offset, 0) when none precedes it.
    pub fn lookup_offset(&self, offset: Offset) -> (Offset, u64) {
        let relative = offset.saturating_sub(self.base_offset);
        let count = self.entries.partition_point(|e| u64::from(e.relative_offset) <= relative);
        self.start_at(count)
    }

    /// The last entry appended strictly before `timestamp_us`: where a scan for the first batch
    /// appended at or after it should start. (base offset, 0) when none precedes it.
    pub fn lookup_timestamp(&self, timestamp_us: TimestampUs) -> (Offset, u64) {
        let count = self.entries.partition_point(|e| e.timestamp_us < timestamp_us);
        self.start_at(count)
    }

    fn start_at(&self, count: usize) -> (Offset, u64) {
        match count.checked_sub(1).and_then(|i| self.entries.get(i)) {
            Some(e) => (self.base_offset + u64::from(e.relative_offset), u64::from(e.position)),
            None => (self.base_offset, 0),
        }
    }

    /// The file header of the offset (`time == false`) or time index.
    pub fn encode_header(&self, time: bool) -> [u8; INDEX_HEADER_BYTES] {
        let mut header = [0_u8; INDEX_HEADER_BYTES];
        header[..4].copy_from_slice(if time { &TIME_INDEX_MAGIC } else { &OFFSET_INDEX_MAGIC });
        header[4..6].copy_from_slice(&INDEX_FORMAT_VERSION.to_le_bytes());
        let entry_bytes = if time { TIME_ENTRY_BYTES } else { OFFSET_ENTRY_BYTES } as u16;
        header[6..8].copy_from_slice(&entry_bytes.to_le_bytes());
        header[8..16].copy_from_slice(&self.base_offset.to_le_bytes());
        header
    }

    /// Appends the file encoding of entries `from..` of the offset index to `out`.
    pub fn encode_offset_entries(&self, from: usize, out: &mut Vec<u8>) {
        for e in self.entries.iter().skip(from) {
            out.extend_from_slice(&e.relative_offset.to_le_bytes());
            out.extend_from_slice(&e.position.to_le_bytes());
        }
    }

    /// Appends the file encoding of entries `from..` of the time index to `out`.
    pub fn encode_time_entries(&self, from: usize, out: &mut Vec<u8>) {
        for e in self.entries.iter().skip(from) {
            out.extend_from_slice(&e.timestamp_us.to_le_bytes());
            out.extend_from_slice(&e.relative_offset.to_le_bytes());
            out.extend_from_slice(&0_u32.to_le_bytes());
        }
    }

    /// Rebuilds an index from the bytes of its two files, keeping the longest prefix of entries
    /// that both files agree on and that obeys the invariants with positions below `log_len`.
    /// A file with a wrong header counts as empty.
    pub fn decode(
        base_offset: Offset,
        interval_bytes: u32,
        offset_file: &[u8],
        time_file: &[u8],
        log_len: u64,
    ) -> Self {
        let mut index = Self::new(base_offset, interval_bytes);
        let offsets = entries_after_header(&index.encode_header(false), offset_file);
        let times = entries_after_header(&index.encode_header(true), time_file);
        let pairs = offsets.chunks_exact(OFFSET_ENTRY_BYTES).zip(times.chunks_exact(TIME_ENTRY_BYTES));
        for (o, t) in pairs {
            let relative_offset = read_u32(o, 0);
            let position = read_u32(o, 4);
            let timestamp_us = u64::from(read_u32(t, 0)) | (u64::from(read_u32(t, 4)) << 32);
            let entry = IndexEntry { relative_offset, position, timestamp_us };
            if read_u32(t, 8) != relative_offset || read_u32(t, 12) != 0 {
                break;
            }
            if u64::from(position) >= log_len || !index.follows(&entry) {
                break;
            }
            // An entry whose absolute offset would pass `u64::MAX` is garbage; dropping it here
            // keeps `base_offset + relative_offset` (lookups, recovery) from overflowing.
            if base_offset.checked_add(u64::from(relative_offset)).is_none() {
                break;
            }
            index.entries.push(entry);
        }
        index
    }

    fn follows(&self, entry: &IndexEntry) -> bool {
        match self.entries.last() {
            None => entry.relative_offset == 0 && entry.position == 0,
            Some(last) => {
                entry.relative_offset > last.relative_offset
                    && entry.position > last.position
                    && entry.timestamp_us >= last.timestamp_us
            }
        }
    }
}

/// The entry bytes of an index file, or nothing when its header is not `expected`.
fn entries_after_header<'a>(expected: &[u8; INDEX_HEADER_BYTES], file: &'a [u8]) -> &'a [u8] {
    match file.split_at_checked(INDEX_HEADER_BYTES) {
        Some((header, entries)) if header == expected => entries,
        _ => &[],
    }
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0_u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SegmentIndex {
        let mut index = SegmentIndex::new(100, 4096);
        let mut position = 0;
        for i in 0..100_u64 {
            index.observe(100 + i * 10, position, 1_000 + i);
            position += 1500;
        }
        index
    }

    fn files(index: &SegmentIndex) -> (Vec<u8>, Vec<u8>) {
        let mut offsets = index.encode_header(false).to_vec();
        index.encode_offset_entries(0, &mut offsets);
        let mut times = index.encode_header(true).to_vec();
        index.encode_time_entries(0, &mut times);
        (offsets, times)
    }

    #[test]
    fn sparse_entries_and_lookups() {
        let index = sample();
        assert!(index.entries().len() < 100 && index.entries().len() > 20);
        assert_eq!(index.lookup_offset(100), (100, 0));
        assert_eq!(index.lookup_offset(99), (100, 0));
        let (offset, position) = index.lookup_offset(555);
        assert!(offset <= 555 && offset > 500, "{offset}");
        assert_eq!(position, (offset - 100) / 10 * 1500);
        let (offset, _) = index.lookup_timestamp(1_050);
        assert!((100 + 45 * 10..100 + 50 * 10).contains(&offset), "{offset}");
        assert_eq!(index.lookup_timestamp(0), (100, 0));
    }

    #[test]
    fn decode_round_trip_and_stale_files() {
        let index = sample();
        let (offsets, times) = files(&index);
        let back = SegmentIndex::decode(100, 4096, &offsets, &times, u64::MAX);
        assert_eq!(back.entries(), index.entries());
        // Entries pointing past the log's end are dropped.
        let short = SegmentIndex::decode(100, 4096, &offsets, &times, 30_000);
        assert!(short.entries().iter().all(|e| e.position < 30_000));
        assert!(short.entries().len() < index.entries().len());
        // A torn tail, a garbage entry, a wrong header.
        let torn = SegmentIndex::decode(100, 4096, &offsets[..offsets.len() - 3], &times, u64::MAX);
        assert_eq!(torn.entries().len(), index.entries().len() - 1);
        let mut garbage = offsets.clone();
        let at = INDEX_HEADER_BYTES + 5 * OFFSET_ENTRY_BYTES;
        garbage[at..at + 8].fill(0);
        assert_eq!(SegmentIndex::decode(100, 4096, &garbage, &times, u64::MAX).entries().len(), 5);
        assert!(SegmentIndex::decode(101, 4096, &offsets, &times, u64::MAX).entries().is_empty());
        assert!(SegmentIndex::decode(100, 4096, &[], &[], u64::MAX).entries().is_empty());
    }
}
