//! The entries of a Publish frame, versions 1 and 2.
//!
//! ```text
//! Publish     => PublisherId:u8 Count:i32 Entry*Count
//! v1 Entry    => PublishingId:u64 (Simple | SubEntry)
//! v2 Entry    => PublishingId:u64 FilterValue:string(nullable) Simple
//! Simple      => 0:1 Size:u31 Message:Size bytes          (a `bytes` whose top bit is clear)
//! SubEntry    => 1:1 Compression:u3 Reserved:u4 Records:u16 UncompressedSize:u32
//!                DataSize:u32 Data:DataSize bytes
//! ```
//!
//! A sub-entry is told from a message by the top bit of the byte after the publishing id
//! (version 1) or after the filter value (version 2). RabbitMQ accepts sub-entries in version 1
//! only (its version 2 parser matches simple messages alone, "TODO handle filter value with
//! sub-batching"), and the Java client refuses to combine sub-entries with filtering, so a
//! version 2 sub-entry is `Malformed`. The reserved low bits of the sub-entry byte are ignored,
//! as RabbitMQ ignores them.
//!
//! Pure, runs on the connection's core. Invariants: the entry count is checked against the
//! bytes left (at least 12 bytes an entry in version 1, 14 in version 2) before the vector is
//! allocated; messages and batch data are borrowed, never copied or decompressed here.

use super::reader::{Reader, MIN_STRING_BYTES};
use super::{DecodeErrorKind, Entry};

type Result<T> = std::result::Result<T, DecodeErrorKind>;

/// The smallest version 1 entry: publishing id and an empty message's size.
const MIN_ENTRY_BYTES_V1: usize = 8 + 4;
/// The smallest version 2 entry: publishing id, null filter value, empty message's size.
const MIN_ENTRY_BYTES_V2: usize = 8 + MIN_STRING_BYTES + 4;

/// The top bit of the byte after the publishing id (and filter value): a sub-entry.
const SUB_ENTRY_FLAG: u8 = 0x80;

/// Reads `Count` entries of a Publish body of `version` (1 or 2).
pub(super) fn entries<'a>(reader: &mut Reader<'a>, version: u16) -> Result<Vec<Entry<'a>>> {
    let filtered = version >= 2;
    let count = reader.count(if filtered { MIN_ENTRY_BYTES_V2 } else { MIN_ENTRY_BYTES_V1 })?;
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        entries.push(entry(reader, filtered)?);
    }
    Ok(entries)
}

fn entry<'a>(reader: &mut Reader<'a>, filtered: bool) -> Result<Entry<'a>> {
    let publishing_id = reader.u64()?;
    let filter_value =
        if filtered { reader.nullable_string()?.filter(|value| !value.is_empty()) } else { None };
    let marker = reader.peek_u8().ok_or(DecodeErrorKind::Truncated)?;
    if marker & SUB_ENTRY_FLAG == 0 {
        let size = reader.u32()?;
        let size = usize::try_from(size).map_err(|_| DecodeErrorKind::Truncated)?;
        return Ok(Entry::Simple { publishing_id, message: reader.take(size)?, filter_value });
    }
    if filtered {
        return Err(DecodeErrorKind::Malformed("sub-entry batch in a version 2 publish"));
    }
    let marker = reader.u8()?;
    let compression = (marker >> 4) & 0x07;
    let records = reader.u16()?;
    let uncompressed_bytes = reader.u32()?;
    let size = reader.u32()?;
    let size = usize::try_from(size).map_err(|_| DecodeErrorKind::Truncated)?;
    let data = reader.take(size)?;
    Ok(Entry::SubEntry { publishing_id, compression, records, uncompressed_bytes, data })
}
