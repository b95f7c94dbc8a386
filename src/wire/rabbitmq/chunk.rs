//! Deliver frames from stored batches: each batch a subscription delivers becomes one Osiris
//! chunk in one RabbitMQ Deliver frame, built around the batch's bytes with one copy of the
//! message values and one CRC pass over them.
//!
//! Runs on the connection's shard, in the subscription pump, on batches the broker validated
//! when they were appended (so only their headers are decoded again here, not their CRC); the
//! record iterator stays bounds-checked, so even bytes that were never validated give an error
//! or garbage messages, never a panic.
//!
//! What a chunk holds (layout: `docs/format.md`, "RabbitMQ Deliver chunks"):
//! * a plain batch: one simple entry per record with an offset in `[start_offset, next_offset)`
//!   (the record's value, as published; keys, filter values and headers are not delivered), and
//!   `ChunkFirstOffset` the first of those offsets, so a batch straddling `start_offset` is
//!   trimmed;
//! * a RabbitMQ sub-entry batch (codec 3): its records section, which is the Osiris sub-batch
//!   entry exactly as the client published it, as the chunk's one entry, with `NumRecords` its
//!   message count. A sub-entry cannot be divided, so it is delivered whole even when
//!   `start_offset` falls inside it, as RabbitMQ delivers whole chunks: clients skip the
//!   messages below the offset they asked for;
//! * a native zstd/LZ4 batch: inflated (bounded by `BATCH_BYTES_MAX`; the broker's only inflate
//!   on this path, since RabbitMQ clients cannot read our codecs) and delivered as a plain one.
//!   One that does not inflate is skipped with a warning: its producer lied, and no client could
//!   read it.
//!
//! Invariants: the frame's size prefix, `NumEntries`, `NumRecords`, `DataLength` and CRC agree
//! with the bytes written (checked by [`parse_chunk`] in the tests and the `rabbitmq_chunk`
//! fuzz target); a chunk holds at most 65,535 entries (`NumEntries` is a `u16`), so a plain
//! batch with more records in range becomes several chunks, one after another; on error `out`
//! is left as it was.

use super::codec::keys;
use crate::constants::BATCH_BYTES_MAX;
use crate::protocol::batch::{
    inflate, validated_view, Batch, BatchError, BatchHeader, Record, BATCH_HEADER_BYTES, CODEC_NONE,
    CODEC_RABBITMQ,
};
use crate::protocol::filter::Filter;

mod parse;
pub use parse::{parse_chunk, parse_frames, ParsedChunk, ParsedEntry};

#[cfg(test)]
mod roundtrip_tests;
#[cfg(test)]
mod seeds;
#[cfg(test)]
mod tests;

/// The chunk's first byte: Osiris magic 5 in the high nibble, chunk format version 0.
pub const OSIRIS_MAGIC_VERSION: u8 = 0x50;

/// Chunk type "user" (the only one a Deliver carries; 1 and 2 are tracking chunks).
pub const CHUNK_TYPE_USER: u8 = 0;

/// Size of the Osiris chunk header: magic and version, type, `u16` entries, `u32` records,
/// `i64` timestamp, `u64` epoch, `u64` first offset, `u32` CRC, `u32` data length, `u32` trailer
/// length, `u8` Bloom filter size, 3 reserved bytes.
pub const CHUNK_HEADER_BYTES: usize = 48;

/// The Osiris epoch written into every chunk. Osiris counts leader elections there; a partition
/// here has one writer that never changes, and clients do not read it.
pub const OSIRIS_EPOCH: u64 = 1;

/// The most entries a chunk holds (`NumEntries` is a `u16`).
pub const CHUNK_ENTRIES_MAX: usize = u16::MAX as usize;

/// Deliver frame bytes before the chunk: size prefix, key, version, subscription id, and in
/// version 2 the committed chunk id.
const FRAME_PREFIX_V1_BYTES: usize = 4 + 2 + 2 + 1;
const FRAME_PREFIX_V2_BYTES: usize = FRAME_PREFIX_V1_BYTES + 8;

/// Why Deliver frames could not be written, or a frame could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkError {
    /// A Deliver version other than 1 and 2.
    UnsupportedVersion(u16),
    /// The stored batch at byte `at` of the input does not decode.
    Batch {
        /// Where the batch starts in the bytes given.
        at: usize,
        /// What is wrong with it.
        error: BatchError,
    },
    /// [`parse_chunk`]: the frame breaks the Deliver or Osiris layout.
    Malformed(&'static str),
}

impl std::fmt::Display for ChunkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnsupportedVersion(version) => write!(f, "Deliver version {version} (1 and 2 are written)"),
            Self::Batch { at, error } => write!(f, "the stored batch at byte {at}: {error}"),
            Self::Malformed(reason) => write!(f, "malformed Deliver frame: {reason}"),
        }
    }
}

impl std::error::Error for ChunkError {}

/// Appends one whole RabbitMQ Deliver frame (4-byte size prefix, key 8, version 1 or 2) per
/// batch in `batches` (whole stored batches back to back, server fields stamped), covering only
/// records with offsets in [start_offset, next_offset) that `filter` (when given) matches exactly
/// (a filtering subscription gets no record it did not ask for); batches with no such record are
/// skipped. Version 2 carries `committed_offset` (the CommittedChunkId). Returns the chunks
/// written: one per batch, more for a plain batch with over 65,535 records in range, none for a
/// native compressed batch that does not inflate.
pub fn deliver_frames(
    subscription_id: u8,
    version: u16,
    committed_offset: u64,
    batches: &[u8],
    (start_offset, next_offset): (u64, u64),
    filter: Option<&Filter>,
    out: &mut Vec<u8>,
) -> Result<u32, ChunkError> {
    let wanted = |record: &Record<'_>| filter.is_none_or(|filter| filter.matches(record.filter_value));
    let prefix = match version {
        1 => Prefix { subscription_id, committed_offset: None },
        2 => Prefix { subscription_id, committed_offset: Some(committed_offset) },
        other => return Err(ChunkError::UnsupportedVersion(other)),
    };
    let restore = out.len();
    let mut chunks = 0u32;
    for stored in StoredBatches::new(batches) {
        let (at, batch) = match stored {
            Ok(stored) => stored,
            Err(error) => {
                out.truncate(restore);
                return Err(error);
            }
        };
        let header = batch.header();
        let Some((from, to)) = overlap(header, start_offset, next_offset) else { continue };
        let written = match header.codec() {
            CODEC_NONE => write_records(&prefix, header, batch.records().filter(wanted), from, to, out),
            // A sub-entry's messages carry no filter value.
            CODEC_RABBITMQ if filter.is_some_and(|filter| !filter.matches(None)) => 0,
            CODEC_RABBITMQ => write_sub_entry(&prefix, &batch, out),
            _ => match inflate(batch.as_bytes(), BATCH_BYTES_MAX) {
                Ok(plain) => match validated_view(&plain) {
                    Ok(plain) => {
                        write_records(&prefix, header, plain.records().filter(wanted), from, to, out)
                    }
                    Err(error) => skip_unreadable(at, header, &error),
                },
                Err(error) => skip_unreadable(at, header, &error),
            },
        };
        chunks = chunks.saturating_add(written);
    }
    Ok(chunks)
}

/// The number of chunks [`deliver_frames`] writes for the same arguments (reading headers
/// only; a native compressed batch that would not inflate still counts), so that a caller can
/// check credit before building anything. Stops at the first batch that does not decode.
pub fn chunk_count(batches: &[u8], start_offset: u64, next_offset: u64) -> u32 {
    let mut chunks = 0u32;
    for stored in StoredBatches::new(batches) {
        let Ok((_, batch)) = stored else { break };
        let header = batch.header();
        let Some((from, to)) = overlap(header, start_offset, next_offset) else { continue };
        let count = if header.codec() == CODEC_RABBITMQ {
            1
        } else {
            ((to - from) as usize).div_ceil(CHUNK_ENTRIES_MAX) as u32
        };
        chunks = chunks.saturating_add(count);
    }
    chunks
}

/// The offsets of `header`'s records inside `[start_offset, next_offset)`, as `[from, to)`, or
/// `None` when there are none.
fn overlap(header: &BatchHeader, start_offset: u64, next_offset: u64) -> Option<(u64, u64)> {
    let from = header.base_offset.max(start_offset);
    let to = header.next_offset().min(next_offset);
    (from < to).then_some((from, to))
}

/// A native compressed batch that does not inflate: warned about, not delivered.
fn skip_unreadable(at: usize, header: &BatchHeader, error: &BatchError) -> u32 {
    let base_offset = header.base_offset;
    tracing::warn!(at, base_offset, %error, "a stored compressed batch does not inflate; not delivered");
    0
}

/// Iterates whole stored batches: each header decoded and its length checked, the CRC not.
struct StoredBatches<'a> {
    bytes: &'a [u8],
    at: usize,
    failed: bool,
}

impl<'a> StoredBatches<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        StoredBatches { bytes, at: 0, failed: false }
    }
}

impl<'a> Iterator for StoredBatches<'a> {
    type Item = Result<(usize, Batch<'a>), ChunkError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.bytes.get(self.at..).filter(|rest| !rest.is_empty() && !self.failed)?;
        let at = self.at;
        let batch = BatchHeader::decode(rest).and_then(|header| {
            let length = header.length as usize;
            let bytes =
                rest.get(..length).ok_or(BatchError::Truncated { needed: length, available: rest.len() })?;
            validated_view(bytes)
        });
        match batch {
            Ok(batch) => {
                self.at += batch.as_bytes().len();
                Some(Ok((at, batch)))
            }
            Err(error) => {
                self.failed = true;
                Some(Err(ChunkError::Batch { at, error }))
            }
        }
    }
}

/// What every Deliver frame of one call starts with.
struct Prefix {
    subscription_id: u8,
    /// Version 2's committed chunk id; `None` writes version 1.
    committed_offset: Option<u64>,
}

/// The fields of one chunk's header that depend on its contents.
struct ChunkFields {
    entries: usize,
    records: u32,
    timestamp_ms: i64,
    first_offset: u64,
}

/// Writes the frame prefix and a zeroed chunk header; returns where the frame starts.
fn begin_chunk(prefix: &Prefix, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&keys::DELIVER.to_be_bytes());
    match prefix.committed_offset {
        None => {
            out.extend_from_slice(&1u16.to_be_bytes());
            out.push(prefix.subscription_id);
        }
        Some(committed) => {
            out.extend_from_slice(&2u16.to_be_bytes());
            out.push(prefix.subscription_id);
            out.extend_from_slice(&committed.to_be_bytes());
        }
    }
    out.extend_from_slice(&[0; CHUNK_HEADER_BYTES]);
    start
}

/// Fills in the chunk header and the frame's size once the entries are written.
fn finish_chunk(prefix: &Prefix, start: usize, fields: &ChunkFields, out: &mut [u8]) {
    let header_at =
        start + if prefix.committed_offset.is_some() { FRAME_PREFIX_V2_BYTES } else { FRAME_PREFIX_V1_BYTES };
    let data_at = header_at + CHUNK_HEADER_BYTES;
    let data = out.get(data_at..).unwrap_or_default();
    let crc32 = crc32fast::hash(data);
    let data_length = data.len() as u32;
    let mut header = [0u8; CHUNK_HEADER_BYTES];
    header[0] = OSIRIS_MAGIC_VERSION;
    header[1] = CHUNK_TYPE_USER;
    header[2..4].copy_from_slice(&(fields.entries as u16).to_be_bytes());
    header[4..8].copy_from_slice(&fields.records.to_be_bytes());
    header[8..16].copy_from_slice(&fields.timestamp_ms.to_be_bytes());
    header[16..24].copy_from_slice(&OSIRIS_EPOCH.to_be_bytes());
    header[24..32].copy_from_slice(&fields.first_offset.to_be_bytes());
    header[32..36].copy_from_slice(&crc32.to_be_bytes());
    header[36..40].copy_from_slice(&data_length.to_be_bytes());
    // Trailer length, Bloom filter size and reserved bytes stay 0: no trailer or filter bytes.
    let frame_size = (out.len() - start - 4) as u32;
    if let Some(slot) = out.get_mut(header_at..data_at) {
        slot.copy_from_slice(&header);
    }
    if let Some(slot) = out.get_mut(start..start + 4) {
        slot.copy_from_slice(&frame_size.to_be_bytes());
    }
}

/// The chunk timestamp: the batch's append time in milliseconds.
fn timestamp_ms(header: &BatchHeader) -> i64 {
    i64::try_from(header.append_timestamp_us / 1000).unwrap_or(i64::MAX)
}

/// Writes the records of `records` with offsets in `[from, to)` as simple entries, at most
/// [`CHUNK_ENTRIES_MAX`] per chunk; returns the chunks written.
fn write_records<'a>(
    prefix: &Prefix,
    header: &BatchHeader,
    records: impl Iterator<Item = Record<'a>>,
    from: u64,
    to: u64,
    out: &mut Vec<u8>,
) -> u32 {
    let mut records =
        records.skip_while(|record| record.offset < from).take_while(|record| record.offset < to);
    let mut chunks = 0;
    let mut next = records.next();
    while let Some(first) = next {
        let start = begin_chunk(prefix, out);
        let mut entries = 0;
        let mut record = Some(first);
        while let Some(current) = record {
            // Values are at most BATCH_BYTES_MAX bytes, far below the 31-bit entry size.
            out.extend_from_slice(&(current.payload.len() as u32).to_be_bytes());
            out.extend_from_slice(current.payload);
            entries += 1;
            record = if entries < CHUNK_ENTRIES_MAX { records.next() } else { None };
        }
        let fields = ChunkFields {
            entries,
            records: entries as u32,
            timestamp_ms: timestamp_ms(header),
            first_offset: first.offset,
        };
        finish_chunk(prefix, start, &fields, out);
        chunks += 1;
        next = if entries == CHUNK_ENTRIES_MAX { records.next() } else { None };
    }
    chunks
}

/// Writes a codec-3 batch's records section (the Osiris sub-batch entry) as a chunk's one entry.
fn write_sub_entry(prefix: &Prefix, batch: &Batch<'_>, out: &mut Vec<u8>) -> u32 {
    let header = batch.header();
    let start = begin_chunk(prefix, out);
    out.extend_from_slice(batch.as_bytes().get(BATCH_HEADER_BYTES..).unwrap_or_default());
    let fields = ChunkFields {
        entries: 1,
        records: header.record_count,
        timestamp_ms: timestamp_ms(header),
        first_offset: header.base_offset,
    };
    finish_chunk(prefix, start, &fields, out);
    1
}
