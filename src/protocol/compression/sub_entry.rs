//! RabbitMQ sub-entries in our batch format (batch codec 3, [`CODEC_RABBITMQ`]): the writer the
//! RabbitMQ Streams listener stores a compressed sub-entry with, the check [`validate`] runs on
//! one, and the inflater that turns one into ordinary records for native consumers.
//!
//! A RabbitMQ client may publish a *sub-entry*: several messages framed as `u32` big-endian size
//! then bytes, compressed together (gzip, snappy, LZ4 or zstd) and confirmed with one publishing
//! id. The broker never inflates it on produce: the batch's records section is the Osiris
//! sub-batch entry byte for byte (the 11-byte entry header, then the client's compressed bytes),
//! so that the Deliver path copies it into a chunk as it is and RabbitMQ consumers decompress it
//! themselves, as they would from RabbitMQ. The batch header still describes the messages:
//! `record_count` is the sub-entry's message count, and `records_bytes` is the size those
//! messages take once inflated into our record framing (the entry's uncompressed size plus 16
//! bytes per message: a 20-byte record header replaces each 4-byte size), so readers allocate
//! exactly that and the usual bound checks apply unchanged.
//!
//! Pure functions, run on whichever core holds the bytes: the connection's shard writes, every
//! core validates, consumers (SDK, `ringctl`, durable ledgers) inflate.
//!
//! Invariants:
//! * [`write_sub_entry_batch`] only writes batches [`validate`] accepts, or nothing.
//! * `check_sub_entry` (run by `validate`) accepts exactly the batches whose entry header
//!   agrees with the batch header (type bit, a known compression, reserved bits zero, message
//!   count, both sizes), that carry no filter value, Bloom bit or TTL, and whose messages share
//!   one timestamp.
//! * `inflate_sub_entry` (run by `inflate`) writes only inside the slice it is given, whose size
//!   the header fixed before anything was decompressed: a bomb fails once it would pass that
//!   size; decoders keep only their fixed internal buffers (an LZ4 frame's at most two 4 MiB
//!   blocks, snappy's 64 KiB blocks, gzip's 32 KiB window). Nothing panics on hostile input.
//!
//! [`validate`]: crate::protocol::batch::validate

use std::io::{ErrorKind, Read};

use crate::constants::BATCH_BYTES_MAX;
use crate::model::TimestampUs;

use super::super::batch::{
    crc32_of, BatchError, BatchHeader, BATCH_FORMAT_VERSION, BATCH_HEADER_BYTES, CODEC_RABBITMQ,
    FILTER_BLOOM_BYTES, RECORD_HEADER_BYTES,
};

#[cfg(test)]
#[path = "sub_entry_tests.rs"]
pub(crate) mod tests;

/// Size of the Osiris sub-batch entry header that opens a codec-3 records section: the type
/// byte, `u16` message count, `u32` uncompressed size, `u32` data size (all big-endian).
pub const SUB_ENTRY_HEADER_BYTES: usize = 11;

/// RabbitMQ's compression type "none" (stored as plain records by the listener, never as codec 3).
pub const RABBITMQ_NONE: u8 = 0;
/// RabbitMQ's compression type gzip (one gzip member).
pub const RABBITMQ_GZIP: u8 = 1;
/// RabbitMQ's compression type snappy (snappy's framing format, as the Java client writes it).
pub const RABBITMQ_SNAPPY: u8 = 2;
/// RabbitMQ's compression type LZ4 (the LZ4 frame format, as the Java client writes it).
pub const RABBITMQ_LZ4: u8 = 3;
/// RabbitMQ's compression type zstd (zstd frames).
pub const RABBITMQ_ZSTD: u8 = 4;

/// Bytes one message grows by from RabbitMQ's framing (a 4-byte size) to ours (a 20-byte
/// record header with no key, filter value or headers).
const GROWTH_PER_RECORD_BYTES: usize = RECORD_HEADER_BYTES - 4;

/// Bit 7 of the type byte: a sub-batch entry (a simple entry has it clear).
const SUB_BATCH_BIT: u8 = 0x80;
/// Bits 0-3 of the type byte are reserved.
const RESERVED_BITS: u8 = 0x0f;

/// The Osiris sub-batch entry header at the start of a codec-3 records section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubEntryHeader {
    /// RabbitMQ's compression type, 1..=4 in a stored batch.
    pub compression: u8,
    /// Messages in the sub-entry.
    pub records: u16,
    /// Size of the messages in RabbitMQ's framing once decompressed.
    pub uncompressed_bytes: u32,
    /// Size of the compressed data after this header.
    pub data_bytes: u32,
}

impl SubEntryHeader {
    /// Decodes the header at the start of `section`, checking the type bit, the reserved bits
    /// and the compression type (1..=4).
    pub fn decode(section: &[u8]) -> Result<SubEntryHeader, BatchError> {
        let Some(bytes) = section.first_chunk::<SUB_ENTRY_HEADER_BYTES>() else {
            return Err(BatchError::Invalid("the records section is shorter than a sub-entry header"));
        };
        let [kind, r0, r1, u0, u1, u2, u3, d0, d1, d2, d3] = *bytes;
        if kind & SUB_BATCH_BIT == 0 || kind & RESERVED_BITS != 0 {
            return Err(BatchError::Invalid("the sub-entry type byte is not a sub-batch entry's"));
        }
        let compression = (kind >> 4) & 0x07;
        if !(RABBITMQ_GZIP..=RABBITMQ_ZSTD).contains(&compression) {
            return Err(BatchError::Invalid(
                "the sub-entry compression type is not gzip, snappy, lz4 or zstd",
            ));
        }
        Ok(SubEntryHeader {
            compression,
            records: u16::from_be_bytes([r0, r1]),
            uncompressed_bytes: u32::from_be_bytes([u0, u1, u2, u3]),
            data_bytes: u32::from_be_bytes([d0, d1, d2, d3]),
        })
    }

    /// The header's 11 bytes, as Osiris writes them.
    pub fn encode(&self) -> [u8; SUB_ENTRY_HEADER_BYTES] {
        let mut out = [0u8; SUB_ENTRY_HEADER_BYTES];
        out[0] = SUB_BATCH_BIT | ((self.compression & 0x07) << 4);
        out[1..3].copy_from_slice(&self.records.to_be_bytes());
        out[3..7].copy_from_slice(&self.uncompressed_bytes.to_be_bytes());
        out[7..11].copy_from_slice(&self.data_bytes.to_be_bytes());
        out
    }

    /// The size the messages take in our record framing: the uncompressed size plus 16 bytes
    /// per message (the batch header's `records_bytes`).
    pub fn plain_records_bytes(&self) -> u64 {
        u64::from(self.uncompressed_bytes) + u64::from(self.records) * GROWTH_PER_RECORD_BYTES as u64
    }
}

/// A compressed sub-entry to store as one codec-3 batch ([`write_sub_entry_batch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubEntryBatch<'a> {
    /// The producer (0 for an anonymous one).
    pub producer_id: u64,
    /// The producer's epoch.
    pub producer_epoch: u32,
    /// The sub-entry's publishing id: the batch's first and last sequence.
    pub sequence: u64,
    /// The create time of every message.
    pub timestamp_us: TimestampUs,
    /// RabbitMQ's compression type (1..=4).
    pub compression: u8,
    /// Messages in the sub-entry (at least 1).
    pub records: u16,
    /// The client's uncompressed size.
    pub uncompressed_bytes: u32,
    /// The compressed bytes, as the client sent them.
    pub data: &'a [u8],
}

/// Appends one codec-3 batch holding `entry` to `out` and returns its length. Refuses, leaving
/// `out` as it was: no messages or an unknown compression (`Invalid`); an uncompressed size too
/// small for the message count (`Invalid`); a batch or inflated records section past
/// `BATCH_BYTES_MAX` (`TooLarge`).
pub fn write_sub_entry_batch(entry: &SubEntryBatch<'_>, out: &mut Vec<u8>) -> Result<usize, BatchError> {
    if entry.records == 0 {
        return Err(BatchError::Invalid("a sub-entry holds no messages"));
    }
    if !(RABBITMQ_GZIP..=RABBITMQ_ZSTD).contains(&entry.compression) {
        return Err(BatchError::Invalid("the sub-entry compression type is not gzip, snappy, lz4 or zstd"));
    }
    let length = BATCH_HEADER_BYTES.saturating_add(SUB_ENTRY_HEADER_BYTES).saturating_add(entry.data.len());
    if length > BATCH_BYTES_MAX {
        return Err(BatchError::TooLarge { bytes: length, bytes_max: BATCH_BYTES_MAX });
    }
    let sub_header = SubEntryHeader {
        compression: entry.compression,
        records: entry.records,
        uncompressed_bytes: entry.uncompressed_bytes,
        data_bytes: entry.data.len() as u32,
    };
    let records_bytes = sub_header.plain_records_bytes();
    if u64::from(entry.uncompressed_bytes) < u64::from(entry.records) * 4 {
        return Err(BatchError::Invalid("the sub-entry's uncompressed size cannot hold its messages"));
    }
    if records_bytes > (BATCH_BYTES_MAX - BATCH_HEADER_BYTES) as u64 {
        let bytes = BATCH_HEADER_BYTES.saturating_add(records_bytes as usize);
        return Err(BatchError::TooLarge { bytes, bytes_max: BATCH_BYTES_MAX });
    }
    let header = BatchHeader {
        version: BATCH_FORMAT_VERSION,
        attributes: u16::from(CODEC_RABBITMQ),
        length: length as u32,
        crc32: 0,
        base_offset: 0,
        append_timestamp_us: 0,
        record_count: u32::from(entry.records),
        records_bytes: records_bytes as u32,
        first_timestamp_us: entry.timestamp_us,
        max_timestamp_us: entry.timestamp_us,
        producer_id: entry.producer_id,
        producer_epoch: entry.producer_epoch,
        first_sequence: entry.sequence,
        last_sequence: entry.sequence,
        filter_bloom: [0; FILTER_BLOOM_BYTES],
    };
    let start = out.len();
    out.reserve(length);
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(&sub_header.encode());
    out.extend_from_slice(entry.data);
    let crc32 = crc32_of(&out[start..]);
    out[start..start + BATCH_HEADER_BYTES].copy_from_slice(&BatchHeader { crc32, ..header }.encode());
    debug_assert_eq!(out.len() - start, length);
    debug_assert!(super::super::batch::validate(&out[start..]).is_ok());
    Ok(length)
}

/// Checks a codec-3 batch (header decoded, length and CRC checked) against its sub-entry header.
pub(crate) fn check_sub_entry(header: &BatchHeader, batch: &[u8]) -> Result<(), BatchError> {
    let section = batch.get(BATCH_HEADER_BYTES..).unwrap_or_default();
    let sub = SubEntryHeader::decode(section)?;
    if u32::from(sub.records) != header.record_count {
        return Err(BatchError::Invalid("the sub-entry's message count differs from the record count"));
    }
    if sub.data_bytes as usize != section.len() - SUB_ENTRY_HEADER_BYTES {
        return Err(BatchError::Invalid("the sub-entry's data size differs from the bytes after it"));
    }
    if sub.plain_records_bytes() != u64::from(header.records_bytes) {
        return Err(BatchError::Invalid("records_bytes is not the sub-entry's size in our framing"));
    }
    if header.has_filter_values() || header.has_ttl() || header.filter_bloom != [0; FILTER_BLOOM_BYTES] {
        return Err(BatchError::Invalid("a sub-entry batch carries a filter value, Bloom bit or TTL"));
    }
    if header.first_timestamp_us != header.max_timestamp_us {
        return Err(BatchError::Invalid("the messages of a sub-entry batch do not share one timestamp"));
    }
    Ok(())
}

/// Inflates the records section of a validated codec-3 batch into `out`, which has exactly the
/// header's `records_bytes`: decompresses the messages into the tail of `out`, then rewrites
/// them in place, front to back, into our records (no key, filter value or headers; timestamp
/// delta 0). Refuses with [`BatchError::Decompress`] data that is corrupt, that inflates to
/// more or fewer bytes than the entry says, or whose messages do not add up to it.
pub(crate) fn inflate_sub_entry(section: &[u8], out: &mut [u8]) -> Result<usize, BatchError> {
    let sub = SubEntryHeader::decode(section)?;
    let data = section.get(SUB_ENTRY_HEADER_BYTES..).unwrap_or_default();
    if sub.plain_records_bytes() != out.len() as u64 {
        return Err(BatchError::Decompress("the output does not have the sub-entry's size".into()));
    }
    let growth = usize::from(sub.records) * GROWTH_PER_RECORD_BYTES;
    let Some(tail) = out.get_mut(growth..) else {
        return Err(BatchError::Decompress("the output is shorter than the record headers".into()));
    };
    decompress_exact(sub.compression, data, tail)?;
    reframe_in_place(out, sub.records)?;
    Ok(out.len())
}

/// Rewrites `records` messages in RabbitMQ framing, which start `16 × records` bytes into `out`
/// and end at its end, into our records from the start of `out`. Writing record `i` never
/// reaches the bytes of message `i + 1`: record `i` starts `16 × (records - i)` bytes before
/// message `i` and is 16 bytes longer.
fn reframe_in_place(out: &mut [u8], records: u16) -> Result<(), BatchError> {
    let failed = |reason: &str| BatchError::Decompress(format!("sub-entry messages: {reason}"));
    let end = out.len();
    let mut read = usize::from(records) * GROWTH_PER_RECORD_BYTES;
    let mut write = 0usize;
    for index in 0..u32::from(records) {
        let size_at =
            read.checked_add(4).filter(|&at| at <= end).ok_or_else(|| failed("a size runs past the data"))?;
        let size_bytes = out.get(read..size_at).and_then(|b| <[u8; 4]>::try_from(b).ok());
        let size = size_bytes.map(u32::from_be_bytes).ok_or_else(|| failed("a size runs past the data"))?;
        let stop = size_at.checked_add(size as usize).filter(|&stop| stop <= end);
        let stop = stop.ok_or_else(|| failed("a message runs past the data"))?;
        let record_end = write + RECORD_HEADER_BYTES + size as usize;
        if record_end > stop {
            return Err(failed("the layout invariant broke"));
        }
        out.copy_within(size_at..stop, write + RECORD_HEADER_BYTES);
        let record_length = (RECORD_HEADER_BYTES as u32).saturating_add(size);
        let mut header = [0u8; RECORD_HEADER_BYTES];
        header[0..4].copy_from_slice(&record_length.to_le_bytes());
        header[4..8].copy_from_slice(&index.to_le_bytes());
        header[16..20].copy_from_slice(&size.to_le_bytes());
        if let Some(slot) = out.get_mut(write..write + RECORD_HEADER_BYTES) {
            slot.copy_from_slice(&header);
        }
        read = stop;
        write = record_end;
        debug_assert_eq!(write + (u32::from(records) - index - 1) as usize * GROWTH_PER_RECORD_BYTES, read);
    }
    if read != end {
        return Err(failed("they do not add up to the uncompressed size"));
    }
    Ok(())
}

/// Decompresses `data` with RabbitMQ's `compression` into exactly `out`.
fn decompress_exact(compression: u8, data: &[u8], out: &mut [u8]) -> Result<(), BatchError> {
    match compression {
        RABBITMQ_GZIP => read_exactly(flate2::read::GzDecoder::new(data), out, "gzip"),
        RABBITMQ_SNAPPY => read_exactly(snap::read::FrameDecoder::new(data), out, "snappy"),
        RABBITMQ_LZ4 => read_exactly(lz4_flex::frame::FrameDecoder::new(data), out, "lz4"),
        RABBITMQ_ZSTD => {
            let failed = |error: std::io::Error| BatchError::Decompress(format!("zstd: {error}"));
            let mut decompressor = zstd::bulk::Decompressor::new().map_err(failed)?;
            let written = decompressor.decompress_to_buffer(data, out).map_err(failed)?;
            if written != out.len() {
                return Err(BatchError::Decompress(format!(
                    "zstd: the data inflated to {written} bytes, the sub-entry says {}",
                    out.len()
                )));
            }
            Ok(())
        }
        other => Err(BatchError::Decompress(format!("unknown RabbitMQ compression type {other}"))),
    }
}

/// Reads `reader` to its end into exactly `out`: fewer bytes, or any byte past `out`, fail.
fn read_exactly(mut reader: impl Read, out: &mut [u8], what: &str) -> Result<(), BatchError> {
    let failed = |reason: String| BatchError::Decompress(format!("{what}: {reason}"));
    let mut filled = 0;
    while let Some(rest) = out.get_mut(filled..).filter(|rest| !rest.is_empty()) {
        match reader.read(rest) {
            Ok(0) => {
                return Err(failed(format!(
                    "the data inflated to {filled} bytes, the sub-entry says {}",
                    out.len()
                )))
            }
            Ok(read) => filled += read.min(rest.len()),
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => return Err(failed(error.to_string())),
        }
    }
    let mut probe = [0u8; 1];
    loop {
        match reader.read(&mut probe) {
            Ok(0) => return Ok(()),
            Ok(_) => {
                return Err(failed(format!("the data inflates past the {filled} bytes the sub-entry says")))
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => return Err(failed(error.to_string())),
        }
    }
}
