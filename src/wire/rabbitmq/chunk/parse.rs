//! The reader side of Deliver frames, as a RabbitMQ client reads them: for the tests and the
//! `rabbitmq_chunk` fuzz target, which check every frame [`super::deliver_frames`] writes. The
//! broker itself never parses a chunk.
//!
//! Strict: every field the writer fills must agree with the bytes (size prefix, key, version,
//! magic, chunk type, entry and record counts, data length, CRC, no trailer or Bloom bytes), and
//! every byte must be accounted for. Never panics; allocates one vector per entry, each no
//! larger than the bytes it copies.

use super::{ChunkError, CHUNK_HEADER_BYTES, CHUNK_TYPE_USER, OSIRIS_MAGIC_VERSION};
use crate::protocol::batch::{inflate, validate, BatchError};
use crate::protocol::compression::sub_entry::{write_sub_entry_batch, SubEntryBatch, RABBITMQ_NONE};
use crate::wire::rabbitmq::codec::keys;

/// One Deliver frame, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedChunk {
    /// The subscription the chunk is for.
    pub subscription_id: u8,
    /// The Deliver version (1 or 2).
    pub version: u16,
    /// Version 2's committed chunk id.
    pub committed_offset: Option<u64>,
    /// The chunk's records (a sub-entry counts its messages).
    pub num_records: u32,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The Osiris epoch.
    pub epoch: u64,
    /// The offset of the chunk's first message.
    pub first_offset: u64,
    /// The entries, in order.
    pub entries: Vec<ParsedEntry>,
}

/// One entry of a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedEntry {
    /// One message.
    Simple(Vec<u8>),
    /// A sub-entry, as the publisher sent it.
    SubEntry {
        /// RabbitMQ's compression type.
        compression: u8,
        /// Its messages.
        records: u16,
        /// Its size once decompressed.
        uncompressed_bytes: u32,
        /// The (compressed) messages.
        data: Vec<u8>,
    },
}

impl ParsedChunk {
    /// Every message with its offset (`first_offset` + its index), sub-entries decompressed
    /// (through a codec-3 batch and `inflate`, so with the same bounds).
    pub fn messages(&self) -> Result<Vec<(u64, Vec<u8>)>, ChunkError> {
        let mut values = Vec::new();
        for entry in &self.entries {
            match entry {
                ParsedEntry::Simple(value) => values.push(value.clone()),
                ParsedEntry::SubEntry { compression, records, uncompressed_bytes, data } => {
                    values.extend(sub_entry_messages(*compression, *records, *uncompressed_bytes, data)?);
                }
            }
        }
        Ok(values.into_iter().zip(0u64..).map(|(value, index)| (self.first_offset + index, value)).collect())
    }
}

fn sub_entry_messages(
    compression: u8,
    records: u16,
    uncompressed: u32,
    data: &[u8],
) -> Result<Vec<Vec<u8>>, ChunkError> {
    let failed = |error: BatchError| ChunkError::Batch { at: 0, error };
    if compression == RABBITMQ_NONE {
        let mut rest = data;
        let mut out = Vec::new();
        for _ in 0..records {
            let mut reader = Reader(rest);
            let size = reader.u32()? as usize;
            out.push(reader.take(size)?.to_vec());
            rest = reader.0;
        }
        return if rest.is_empty() && data.len() == uncompressed as usize {
            Ok(out)
        } else {
            Err(ChunkError::Malformed("an uncompressed sub-entry's messages do not add up"))
        };
    }
    let entry = SubEntryBatch {
        producer_id: 0,
        producer_epoch: 0,
        sequence: 0,
        timestamp_us: 0,
        compression,
        records,
        uncompressed_bytes: uncompressed,
        data,
    };
    let mut batch = Vec::new();
    write_sub_entry_batch(&entry, &mut batch).map_err(failed)?;
    let plain = inflate(&batch, usize::MAX).map_err(failed)?;
    let values = validate(&plain).map_err(failed)?.records().map(|record| record.payload.to_vec()).collect();
    Ok(values)
}

/// Parses exactly one whole Deliver frame, size prefix included.
pub fn parse_chunk(frame: &[u8]) -> Result<ParsedChunk, ChunkError> {
    let mut reader = Reader(frame);
    let size = reader.u32()? as usize;
    if size != reader.0.len() {
        return Err(ChunkError::Malformed("the size prefix differs from the bytes after it"));
    }
    if reader.u16()? != keys::DELIVER {
        return Err(ChunkError::Malformed("the key is not Deliver"));
    }
    let version = reader.u16()?;
    let subscription_id = reader.u8()?;
    let committed_offset = match version {
        1 => None,
        2 => Some(reader.u64()?),
        other => return Err(ChunkError::UnsupportedVersion(other)),
    };
    if reader.0.len() < CHUNK_HEADER_BYTES {
        return Err(ChunkError::Malformed("shorter than an Osiris chunk header"));
    }
    if reader.u8()? != OSIRIS_MAGIC_VERSION {
        return Err(ChunkError::Malformed("not Osiris magic 5, version 0"));
    }
    if reader.u8()? != CHUNK_TYPE_USER {
        return Err(ChunkError::Malformed("not a user chunk"));
    }
    let num_entries = reader.u16()?;
    let num_records = reader.u32()?;
    let timestamp_ms = reader.u64()? as i64;
    let epoch = reader.u64()?;
    let first_offset = reader.u64()?;
    let crc32 = reader.u32()?;
    let data_length = reader.u32()? as usize;
    if reader.u32()? != 0 || reader.u32()? != 0 {
        return Err(ChunkError::Malformed("a trailer, Bloom filter or reserved bytes"));
    }
    let data = reader.0;
    if data.len() != data_length {
        return Err(ChunkError::Malformed("DataLength differs from the bytes after the header"));
    }
    if crc32fast::hash(data) != crc32 {
        return Err(ChunkError::Malformed("the CRC differs from the data's"));
    }
    let (entries, records) = parse_entries(data, num_entries)?;
    if records != u64::from(num_records) {
        return Err(ChunkError::Malformed("NumRecords differs from the entries' records"));
    }
    Ok(ParsedChunk {
        subscription_id,
        version,
        committed_offset,
        num_records,
        timestamp_ms,
        epoch,
        first_offset,
        entries,
    })
}

/// Parses the Deliver frames back to back in `bytes`.
pub fn parse_frames(bytes: &[u8]) -> Result<Vec<ParsedChunk>, ChunkError> {
    let mut chunks = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let size = Reader(rest).u32()? as usize;
        let frame =
            rest.get(..size.saturating_add(4)).ok_or(ChunkError::Malformed("a frame runs past the bytes"))?;
        chunks.push(parse_chunk(frame)?);
        rest = &rest[frame.len()..];
    }
    Ok(chunks)
}

/// Parses exactly `count` entries filling `data`; returns them and their record count.
fn parse_entries(data: &[u8], count: u16) -> Result<(Vec<ParsedEntry>, u64), ChunkError> {
    let mut reader = Reader(data);
    let mut entries = Vec::new();
    let mut records = 0u64;
    for _ in 0..count {
        let kind = *reader.0.first().ok_or(ChunkError::Malformed("fewer entries than NumEntries"))?;
        if kind & 0x80 == 0 {
            let size = reader.u32()? as usize;
            entries.push(ParsedEntry::Simple(reader.take(size)?.to_vec()));
            records += 1;
            continue;
        }
        reader.u8()?;
        if kind & 0x0f != 0 {
            return Err(ChunkError::Malformed("reserved bits of a sub-entry are set"));
        }
        let sub_records = reader.u16()?;
        let uncompressed_bytes = reader.u32()?;
        let size = reader.u32()? as usize;
        let data = reader.take(size)?.to_vec();
        entries.push(ParsedEntry::SubEntry {
            compression: (kind >> 4) & 0x07,
            records: sub_records,
            uncompressed_bytes,
            data,
        });
        records += u64::from(sub_records);
    }
    if !reader.0.is_empty() {
        return Err(ChunkError::Malformed("bytes after the last entry"));
    }
    Ok((entries, records))
}

/// A big-endian cursor that fails instead of panicking.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], ChunkError> {
        if len > self.0.len() {
            return Err(ChunkError::Malformed("a field runs past the frame"));
        }
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ChunkError> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, ChunkError> {
        self.array::<1>().map(|[byte]| byte)
    }

    fn u16(&mut self) -> Result<u16, ChunkError> {
        self.array().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Result<u32, ChunkError> {
        self.array().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Result<u64, ChunkError> {
        self.array().map(u64::from_be_bytes)
    }
}
