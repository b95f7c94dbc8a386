//! Bounded decompression of a Kafka batch's records section, for the `kafka-protocol` crate's
//! decoder (whose own codecs are off: they inflate without bound). Runs on the connection's
//! shard, on a peer's bytes.
//!
//! Kafka frames each codec its own way: gzip is one (or more) gzip members; snappy is either
//! xerial's framing (the Java client: an 8-byte magic, two versions, then `u32` big-endian sized
//! raw snappy blocks) or one raw snappy block (librdkafka); LZ4 is the LZ4 frame format; zstd is
//! one or more zstd frames. The codecs are the crates the RabbitMQ sub-entries already use
//! (`crate::protocol::compression::sub_entry`), read here to an unknown size instead of to an
//! exact one.
//!
//! Invariants: [`inflate`] never holds more than `budget + 1` inflated bytes (plus a codec's
//! fixed internal buffers: an LZ4 frame's 4 MiB blocks, a zstd window of at most
//! [`ZSTD_WINDOW_LOG_MAX`] bits), fails with [`RecordsError::TooLarge`] past the budget, and
//! subtracts what it inflated from the budget.

use std::cell::Cell;
use std::io::{ErrorKind, Read};

use kafka_protocol::records::Compression as KafkaCompression;

use super::RecordsError;

/// xerial's snappy stream header: the magic, then the version and the compatible version.
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
const XERIAL_HEADER_BYTES: usize = XERIAL_MAGIC.len() + 4 + 4;

/// The largest zstd window accepted (8 MiB): the Kafka clients' levels (librdkafka and the
/// Java client default to 3) use 2 MiB at most; a hostile frame cannot make the decoder allocate
/// more.
pub(super) const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// How much the output grows at a time, at first.
const GROWTH_MIN_BYTES: usize = 16 * 1024;

/// Inflates `data`, compressed with `codec`, taking at most `budget` bytes (and subtracting what
/// it took). `KafkaCompression::None` is not compressed and costs nothing: the caller passes it
/// through.
pub(super) fn inflate(
    codec: KafkaCompression,
    data: &[u8],
    budget: &Cell<usize>,
) -> Result<Vec<u8>, RecordsError> {
    let limit = budget.get();
    let corrupt =
        |what: &str, error: &dyn std::fmt::Display| RecordsError::Corrupt(format!("{what}: {error}"));
    let out = match codec {
        KafkaCompression::None => return Ok(data.to_vec()),
        KafkaCompression::Gzip => read_bounded(flate2::read::MultiGzDecoder::new(data), limit, "gzip")?,
        KafkaCompression::Snappy => snappy(data, limit)?,
        KafkaCompression::Lz4 => read_bounded(lz4_flex::frame::FrameDecoder::new(data), limit, "lz4")?,
        KafkaCompression::Zstd => {
            let mut decoder =
                zstd::stream::read::Decoder::with_buffer(data).map_err(|e| corrupt("zstd", &e))?;
            decoder.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(|e| corrupt("zstd", &e))?;
            read_bounded(decoder, limit, "zstd")?
        }
    };
    debug_assert!(out.len() <= limit);
    budget.set(limit - out.len());
    Ok(out)
}

/// Reads `reader` to its end, failing once more than `limit` bytes came out. The buffer doubles
/// from [`GROWTH_MIN_BYTES`] but never past `limit + 1`.
fn read_bounded(mut reader: impl Read, limit: usize, what: &str) -> Result<Vec<u8>, RecordsError> {
    let cap = limit.saturating_add(1);
    let mut out = Vec::new();
    let mut filled = 0usize;
    loop {
        if filled == out.len() {
            let grow = filled.max(GROWTH_MIN_BYTES).min(cap - filled);
            if grow == 0 {
                return Err(too_large(what, limit));
            }
            out.resize(filled + grow, 0);
        }
        let Some(room) = out.get_mut(filled..) else { break };
        match reader.read(room) {
            Ok(0) => break,
            Ok(read) => filled += read.min(room.len()),
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => return Err(RecordsError::Corrupt(format!("{what}: {error}"))),
        }
    }
    out.truncate(filled);
    if filled > limit {
        return Err(too_large(what, limit));
    }
    Ok(out)
}

fn too_large(what: &str, limit: usize) -> RecordsError {
    RecordsError::TooLarge(format!(
        "{what} records inflate past the {limit} bytes left of the request's limit"
    ))
}

/// Snappy as Kafka clients write it: xerial-framed blocks, or one raw block.
fn snappy(data: &[u8], limit: usize) -> Result<Vec<u8>, RecordsError> {
    let mut out = Vec::new();
    match data.strip_prefix(&XERIAL_MAGIC[..]) {
        Some(_) => {
            let mut rest =
                data.get(XERIAL_HEADER_BYTES..).ok_or_else(|| snappy_corrupt("a short xerial header"))?;
            while !rest.is_empty() {
                let (size, after) = rest
                    .split_first_chunk::<4>()
                    .ok_or_else(|| snappy_corrupt("a short xerial block size"))?;
                let size = u32::from_be_bytes(*size) as usize;
                let block = after.get(..size).ok_or_else(|| snappy_corrupt("a xerial block past the end"))?;
                raw_snappy_block(block, limit, &mut out)?;
                rest = after.get(size..).unwrap_or_default();
            }
        }
        None => raw_snappy_block(data, limit, &mut out)?,
    }
    Ok(out)
}

/// Appends one raw snappy block to `out`, after checking its declared size against `limit`.
fn raw_snappy_block(block: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), RecordsError> {
    let declared = snap::raw::decompress_len(block).map_err(|e| snappy_corrupt(&e.to_string()))?;
    let end = out
        .len()
        .checked_add(declared)
        .filter(|&end| end <= limit)
        .ok_or_else(|| too_large("snappy", limit))?;
    let start = out.len();
    out.resize(end, 0);
    let room = out.get_mut(start..).unwrap_or_default();
    let written =
        snap::raw::Decoder::new().decompress(block, room).map_err(|e| snappy_corrupt(&e.to_string()))?;
    if written != declared {
        return Err(snappy_corrupt("a block shorter than it declares"));
    }
    Ok(())
}

fn snappy_corrupt(reason: &str) -> RecordsError {
    RecordsError::Corrupt(format!("snappy: {reason}"))
}
