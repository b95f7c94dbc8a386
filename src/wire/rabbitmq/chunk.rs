//! Deliver frames: each stored batch becomes one Osiris chunk, the unit RabbitMQ Streams clients
//! read, inside one Deliver frame.
//!
//! Pure functions, run by the subscription pump on the connection's shard. A chunk header is 48
//! bytes (magic and version `0x50`, chunk type 0 = user, entry and record counts, timestamp in
//! ms, epoch, first offset, CRC32 of the data, data and trailer lengths, 4 reserved bytes, the
//! first of which is the Bloom filter size, 0 here). Every delivered record is a simple entry: a
//! big-endian u32 size with the top bit clear, then the value. Keys and headers stay on the
//! native side.
//!
//! Invariants: a chunk holds only the records with offsets in `[start, next)`, so a chunk's first
//! offset can fall inside a batch; a batch with no such record yields no chunk; a compressed
//! native batch is inflated (bounded by its header) before its records are copied. That is the
//! broker's only inflate. One copy of the values and one CRC pass are the cost.

use std::fmt;

use super::codec::keys;
use crate::constants::BATCH_BYTES_MAX;
use crate::protocol::filter::Filter;
use crate::protocol::batch::{inflate, validate, BatchError, BatchHeader, BATCH_HEADER_BYTES};

/// Osiris chunk magic (5) and version (0).
const MAGIC_VERSION: u8 = 0x50;
/// Chunk type of user data.
const CHUNK_TYPE_USER: u8 = 0;
/// Size of an Osiris chunk header.
pub const CHUNK_HEADER_BYTES: usize = 48;

/// A stored batch that cannot be delivered (only a broker bug or corrupt storage gets here).
#[derive(Debug)]
pub struct ChunkError(pub String);

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<BatchError> for ChunkError {
    fn from(error: BatchError) -> Self {
        ChunkError(error.to_string())
    }
}

/// Appends one whole Deliver frame (size prefix included; version 2 carries
/// `committed_offset`) per batch of `batches` holding a record in `[start, next)`; returns how
/// many it wrote.
pub fn deliver_frames(
    subscription_id: u8,
    version: u16,
    committed_offset: u64,
    batches: &[u8],
    (start, next): (u64, u64),
    filter: Option<&Filter>,
    out: &mut Vec<u8>,
) -> Result<u32, ChunkError> {
    let mut written = 0;
    let mut rest = batches;
    while !rest.is_empty() {
        let header = BatchHeader::decode(rest)?;
        let length = header.length as usize;
        let Some((batch, tail)) = rest.split_at_checked(length).filter(|_| length >= BATCH_HEADER_BYTES)
        else {
            return Err(ChunkError(format!(
                "a batch of {length} bytes runs past the {} delivered",
                rest.len()
            )));
        };
        rest = tail;
        let last = header.base_offset.saturating_add(u64::from(header.record_count));
        if last <= start || header.base_offset >= next {
            continue;
        }
        let frame_at = out.len();
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&keys::DELIVER.to_be_bytes());
        out.extend_from_slice(&version.to_be_bytes());
        out.push(subscription_id);
        if version >= 2 {
            out.extend_from_slice(&committed_offset.to_be_bytes());
        }
        if chunk(batch, &header, (start, next), filter, out)? {
            let size =
                u32::try_from(out.len() - frame_at - 4).map_err(|_| ChunkError("chunk too large".into()))?;
            out[frame_at..frame_at + 4].copy_from_slice(&size.to_be_bytes());
            written += 1;
        } else {
            out.truncate(frame_at);
        }
    }
    Ok(written)
}

/// Appends the chunk of `batch`'s records in `[start, next)`; false when there is none.
fn chunk(
    batch: &[u8],
    header: &BatchHeader,
    (start, next): (u64, u64),
    filter: Option<&Filter>,
    out: &mut Vec<u8>,
) -> Result<bool, ChunkError> {
    let inflated;
    let plain = if header.is_compressed() {
        inflated = inflate(batch, BATCH_BYTES_MAX)?;
        &inflated[..]
    } else {
        batch
    };
    let batch = validate(plain)?;
    let header_at = out.len();
    out.extend_from_slice(&[0; CHUNK_HEADER_BYTES]);
    let data_at = out.len();
    let (mut entries, mut first) = (0_u32, None);
    let wanted = |record: &crate::protocol::batch::Record<'_>| {
        (start..next).contains(&record.offset) && filter.is_none_or(|filter| filter.matches(record.filter_value))
    };
    for record in batch.records().filter(wanted) {
        let size = u32::try_from(record.payload.len()).ok().filter(|size| size >> 31 == 0);
        let size = size.ok_or_else(|| ChunkError("a record too large for a simple entry".into()))?;
        out.extend_from_slice(&size.to_be_bytes());
        out.extend_from_slice(record.payload);
        entries += 1;
        first.get_or_insert(record.offset);
    }
    let Some(first) = first else {
        out.truncate(header_at);
        return Ok(false);
    };
    let data_len = u32::try_from(out.len() - data_at).map_err(|_| ChunkError("chunk too large".into()))?;
    let crc = crc32fast::hash(&out[data_at..]);
    let entry_count =
        u16::try_from(entries).map_err(|_| ChunkError(format!("{entries} records in one chunk")))?;
    let timestamp_ms = header.append_timestamp_us / 1000;
    let head = &mut out[header_at..data_at];
    head[0] = MAGIC_VERSION;
    head[1] = CHUNK_TYPE_USER;
    head[2..4].copy_from_slice(&entry_count.to_be_bytes());
    head[4..8].copy_from_slice(&entries.to_be_bytes());
    head[8..16].copy_from_slice(&timestamp_ms.to_be_bytes());
    head[16..24].copy_from_slice(&0_u64.to_be_bytes());
    head[24..32].copy_from_slice(&first.to_be_bytes());
    head[32..36].copy_from_slice(&crc.to_be_bytes());
    head[36..40].copy_from_slice(&data_len.to_be_bytes());
    // Trailer length 0, then the Bloom filter size (0) and three reserved bytes.
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::{patch_server_fields, BatchBuilder};

    fn stored(base: u64, values: &[&[u8]]) -> Vec<u8> {
        let mut builder = BatchBuilder::new(0, 0);
        for value in values {
            builder.push_payload(value).expect("push");
        }
        let mut bytes = builder.finish().expect("finish");
        patch_server_fields(&mut bytes, base, 1_700_000_000_123_456);
        bytes
    }

    /// (first offset, timestamp ms, values) of each Deliver frame in `frames`.
    fn parse(mut frames: &[u8], version: u16) -> Vec<(u64, u64, Vec<Vec<u8>>)> {
        let mut chunks = Vec::new();
        while !frames.is_empty() {
            let size = u32::from_be_bytes(frames[..4].try_into().unwrap()) as usize;
            let frame = &frames[4..4 + size];
            assert_eq!(u16::from_be_bytes([frame[0], frame[1]]), keys::DELIVER);
            assert_eq!(u16::from_be_bytes([frame[2], frame[3]]), version);
            let chunk = &frame[if version >= 2 { 13 } else { 5 }..];
            assert_eq!((chunk[0], chunk[1]), (MAGIC_VERSION, CHUNK_TYPE_USER));
            let entries = u16::from_be_bytes([chunk[2], chunk[3]]);
            let first = u64::from_be_bytes(chunk[24..32].try_into().unwrap());
            let timestamp = u64::from_be_bytes(chunk[8..16].try_into().unwrap());
            let crc = u32::from_be_bytes(chunk[32..36].try_into().unwrap());
            let data_len = u32::from_be_bytes(chunk[36..40].try_into().unwrap()) as usize;
            let data = &chunk[CHUNK_HEADER_BYTES..];
            assert_eq!(data.len(), data_len);
            assert_eq!(crc32fast::hash(data), crc);
            let mut values = Vec::new();
            let mut rest = data;
            for _ in 0..entries {
                let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
                values.push(rest[4..4 + len].to_vec());
                rest = &rest[4 + len..];
            }
            assert!(rest.is_empty());
            chunks.push((first, timestamp, values));
            frames = &frames[4 + size..];
        }
        chunks
    }

    #[test]
    fn one_chunk_per_batch_trimmed_to_the_window() {
        let batches =
            [stored(10, &[b"a", b"b", b"c"]), stored(13, &[b"d"]), stored(14, &[b"e", b"f"])].concat();
        let mut out = Vec::new();
        let written = deliver_frames(3, 1, 0, &batches, (11, 15), None, &mut out).expect("deliver");
        assert_eq!(written, 3);
        let chunks = parse(&out, 1);
        assert_eq!(chunks[0], (11, 1_700_000_000_123, vec![b"b".to_vec(), b"c".to_vec()]));
        assert_eq!(chunks[1].2, vec![b"d".to_vec()]);
        assert_eq!((chunks[2].0, &chunks[2].2), (14, &vec![b"e".to_vec()]));
    }

    #[test]
    fn version_two_carries_the_committed_offset_and_empty_windows_write_nothing() {
        let batches = stored(0, &[b"x"]);
        let mut out = Vec::new();
        assert_eq!(deliver_frames(1, 2, 41, &batches, (1, 5), None, &mut out).expect("deliver"), 0);
        assert!(out.is_empty());
        deliver_frames(1, 2, 41, &batches, (0, 1), None, &mut out).expect("deliver");
        assert_eq!(u64::from_be_bytes(out[9..17].try_into().unwrap()), 41);
        assert_eq!(parse(&out, 2)[0].2, vec![b"x".to_vec()]);
    }

    #[test]
    fn truncated_input_is_an_error() {
        let batches = stored(0, &[b"x"]);
        let mut out = Vec::new();
        assert!(deliver_frames(1, 1, 0, &batches[..batches.len() - 1], (0, 1), None, &mut out).is_err());
    }
}
