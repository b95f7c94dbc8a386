//! The message batch: the unit a producer sends, a segment stores and a consumer receives, byte
//! for byte the same. This module owns the batch format (drawn in `docs/format.md`), its
//! validation, the iterators over a validated batch's records, and the builder producers write
//! batches with.
//!
//! Pure functions over byte slices with no I/O and no shared state: it runs on whichever core
//! holds the bytes (the connection's shard validates, the partition's shard patches and stores).
//!
//! Why it looks like this: one fixed 104-byte little-endian header, then packed records. A single
//! CRC32 covers everything except itself and the two fields the server assigns (base offset and
//! append time), so the partition owner stamps those in place with [`patch_server_fields`] and
//! never re-encodes or re-checksums. Offsets inside a batch are dense (record `i` has offset
//! `base_offset + i`), so a batch is located by its first and last offset alone. The header carries
//! a 256-bit Bloom filter over the records' filter values so the server can skip whole batches no
//! subscriber wants without opening them.
//!
//! Invariants:
//! * Nothing here panics, overflows or allocates per record on untrusted bytes; every decoder
//!   returns a typed [`BatchError`]. (The one assertion callers can trip is
//!   [`patch_server_fields`] on a slice shorter than a header, which is a caller bug.)
//! * A [`Batch`] exists only for bytes that passed [`validate`]: the length matches, the CRC
//!   matches, every record is well formed, and the header's summary fields (maximum timestamp,
//!   filter attribute bit, Bloom bits) agree exactly with the records.
//! * [`BatchBuilder`] only ever produces bytes that [`validate`] accepts, and a failed push leaves
//!   it unchanged.

use std::fmt;
use std::iter::FusedIterator;

use crate::constants::{
    BATCH_BYTES_MAX, BATCH_RECORDS_MAX, FILTER_VALUE_BYTES_MAX, HEADERS_PER_RECORD_MAX,
    HEADER_KEY_BYTES_MAX, KEY_BYTES_MAX,
};
use crate::model::{now_us, Offset, TimestampUs};

/// The four bytes every batch starts with.
pub const BATCH_MAGIC: [u8; 4] = *b"RBAT";

/// The batch format version this module reads and writes (see the version log in
/// `docs/format.md`).
pub const BATCH_FORMAT_VERSION: u16 = 1;

/// Size of the fixed batch header.
pub const BATCH_HEADER_BYTES: usize = 104;

/// Size of the fixed part of each record, before its variable-length parts.
pub const RECORD_HEADER_BYTES: usize = 20;

/// Size of the per-batch filter Bloom filter (256 bits).
pub const FILTER_BLOOM_BYTES: usize = 32;

/// The smallest well-formed batch: a header and one record with nothing but its fixed part.
pub const BATCH_BYTES_MIN: usize = BATCH_HEADER_BYTES + RECORD_HEADER_BYTES;

/// Attribute bits 0-2: the compression codec of the records.
pub const ATTRIBUTE_CODEC_MASK: u16 = 0b0111;

/// Attribute bit 3: at least one record carries a filter value.
pub const ATTRIBUTE_HAS_FILTER_VALUES: u16 = 0b1000;

/// The only codec accepted so far: records are stored uncompressed.
pub const CODEC_NONE: u8 = 0;

/// The capacity [`BatchBuilder::new`] reserves up front.
pub const BUILDER_CAPACITY_DEFAULT_BYTES: usize = 64 * 1024;

/// Attribute bits 4-15 are reserved and must be zero.
const ATTRIBUTE_RESERVED_MASK: u16 = !(ATTRIBUTE_CODEC_MASK | ATTRIBUTE_HAS_FILTER_VALUES);

const RECORD_FLAG_KEY: u8 = 0b01;
const RECORD_FLAG_FILTER_VALUE: u8 = 0b10;
const RECORD_FLAGS_KNOWN: u8 = RECORD_FLAG_KEY | RECORD_FLAG_FILTER_VALUE;

const FILTER_BLOOM_BITS: u32 = (FILTER_BLOOM_BYTES * 8) as u32;
const FILTER_BLOOM_HASHES: u32 = 3;

// Batch header field offsets, in bytes from the start of the batch.
const MAGIC_AT: usize = 0;
const VERSION_AT: usize = 4;
const ATTRIBUTES_AT: usize = 6;
const LENGTH_AT: usize = 8;
const CRC_AT: usize = 12;
const BASE_OFFSET_AT: usize = 16;
const APPEND_TIMESTAMP_AT: usize = 24;
const RECORD_COUNT_AT: usize = 32;
const RESERVED_A_AT: usize = 36;
const FIRST_TIMESTAMP_AT: usize = 40;
const MAX_TIMESTAMP_AT: usize = 48;
const PRODUCER_ID_AT: usize = 56;
const PRODUCER_SEQUENCE_AT: usize = 64;
const RESERVED_B_AT: usize = 68;
const FILTER_BLOOM_AT: usize = 72;
/// The CRC covers `[0, CRC_AT)` and `[CRC_RESUMES_AT, length)`.
const CRC_RESUMES_AT: usize = RECORD_COUNT_AT;

// Record fixed-part field offsets, in bytes from the start of the record.
const RECORD_LENGTH_AT: usize = 0;
const OFFSET_DELTA_AT: usize = 4;
const TIMESTAMP_DELTA_AT: usize = 8;
const FLAGS_AT: usize = 12;
const RECORD_RESERVED_AT: usize = 13;
const HEADER_COUNT_AT: usize = 14;
const PAYLOAD_LENGTH_AT: usize = 16;

// The header is packed, in field order, with no gaps.
const _: () = assert!(MAGIC_AT == 0 && MAGIC_AT + BATCH_MAGIC.len() == VERSION_AT);
const _: () = assert!(VERSION_AT + 2 == ATTRIBUTES_AT);
const _: () = assert!(ATTRIBUTES_AT + 2 == LENGTH_AT);
const _: () = assert!(LENGTH_AT + 4 == CRC_AT);
const _: () = assert!(CRC_AT + 4 == BASE_OFFSET_AT);
const _: () = assert!(BASE_OFFSET_AT + 8 == APPEND_TIMESTAMP_AT);
const _: () = assert!(APPEND_TIMESTAMP_AT + 8 == RECORD_COUNT_AT);
const _: () = assert!(RECORD_COUNT_AT + 4 == RESERVED_A_AT);
const _: () = assert!(RESERVED_A_AT + 4 == FIRST_TIMESTAMP_AT);
const _: () = assert!(FIRST_TIMESTAMP_AT + 8 == MAX_TIMESTAMP_AT);
const _: () = assert!(MAX_TIMESTAMP_AT + 8 == PRODUCER_ID_AT);
const _: () = assert!(PRODUCER_ID_AT + 8 == PRODUCER_SEQUENCE_AT);
const _: () = assert!(PRODUCER_SEQUENCE_AT + 4 == RESERVED_B_AT);
const _: () = assert!(RESERVED_B_AT + 4 == FILTER_BLOOM_AT);
const _: () = assert!(FILTER_BLOOM_AT + FILTER_BLOOM_BYTES == BATCH_HEADER_BYTES);
// Every 8-byte field is 8-byte aligned, so the records start 8-byte aligned too.
const _: () = assert!(BASE_OFFSET_AT % 8 == 0 && FIRST_TIMESTAMP_AT % 8 == 0);
const _: () = assert!(PRODUCER_ID_AT % 8 == 0 && BATCH_HEADER_BYTES % 8 == 0);
// The CRC gap is exactly the CRC and the two server-assigned fields.
const _: () = assert!(CRC_RESUMES_AT - CRC_AT == 4 + 8 + 8);
// The record's fixed part is packed too.
const _: () = assert!(RECORD_LENGTH_AT == 0 && RECORD_LENGTH_AT + 4 == OFFSET_DELTA_AT);
const _: () = assert!(OFFSET_DELTA_AT + 4 == TIMESTAMP_DELTA_AT);
const _: () = assert!(TIMESTAMP_DELTA_AT + 4 == FLAGS_AT);
const _: () = assert!(FLAGS_AT + 1 == RECORD_RESERVED_AT);
const _: () = assert!(RECORD_RESERVED_AT + 1 == HEADER_COUNT_AT);
const _: () = assert!(HEADER_COUNT_AT + 2 == PAYLOAD_LENGTH_AT);
const _: () = assert!(PAYLOAD_LENGTH_AT + 4 == RECORD_HEADER_BYTES);
// Limits fit the widths the format gives them.
const _: () = assert!(BATCH_BYTES_MIN <= BATCH_BYTES_MAX);
const _: () = assert!(BATCH_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(BATCH_RECORDS_MAX >= 1);
const _: () = assert!(KEY_BYTES_MAX <= u16::MAX as usize);
const _: () = assert!(FILTER_VALUE_BYTES_MAX <= u8::MAX as usize);
const _: () = assert!(HEADER_KEY_BYTES_MAX <= u8::MAX as usize);
const _: () = assert!(HEADERS_PER_RECORD_MAX <= u16::MAX as usize);
// Bloom bit positions are computed in wrapping u32 arithmetic; that equals the exact value mod
// the bit count only because the bit count divides 2^32.
const _: () = assert!(FILTER_BLOOM_BITS.is_power_of_two() && FILTER_BLOOM_BITS <= 1 << 16);

/// Why a batch was rejected, either as bytes ([`validate`], [`batches`]) or while being built
/// ([`BatchBuilder`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// Fewer bytes than needed; from [`batches`] this means "incomplete", not "corrupt".
    Truncated {
        /// Bytes needed to go on: the whole batch when its length is known, else the header.
        needed: usize,
        /// Bytes that were there.
        available: usize,
    },
    /// The bytes do not start with [`BATCH_MAGIC`] (as much of it as there was; missing bytes
    /// are shown as 0).
    BadMagic([u8; 4]),
    /// A format version this build does not read.
    UnsupportedVersion(u16),
    /// A compression codec this build does not read.
    UnsupportedCodec(u8),
    /// A reserved attribute bit or reserved header field is not zero.
    ReservedBitsSet,
    /// The header's length is below [`BATCH_BYTES_MIN`] or above `BATCH_BYTES_MAX`.
    LengthOutOfRange(u32),
    /// The header's length differs from the number of bytes given.
    LengthMismatch {
        /// The length the header states.
        header: u32,
        /// The number of bytes given.
        actual: usize,
    },
    /// The stored CRC differs from the one computed over the bytes.
    CrcMismatch {
        /// The CRC in the header.
        stored: u32,
        /// The CRC of the bytes.
        computed: u32,
    },
    /// The record count is 0 or above `BATCH_RECORDS_MAX`.
    RecordCountOutOfRange(u32),
    /// The base offset is so large that the batch's offsets would not fit a `u64`.
    OffsetOverflow {
        /// The header's base offset.
        base_offset: Offset,
        /// The header's record count.
        record_count: u32,
    },
    /// A record breaks a rule of the format.
    MalformedRecord {
        /// The record's index in the batch.
        index: u32,
        /// Which rule.
        reason: &'static str,
    },
    /// The header disagrees with the records it describes.
    Invalid(&'static str),
    /// The builder holds no records.
    Empty,
    /// Adding the message would make the batch larger than `BATCH_BYTES_MAX`.
    TooLarge {
        /// The size the batch would have had.
        bytes: usize,
        /// The limit.
        bytes_max: usize,
    },
    /// The batch already holds `BATCH_RECORDS_MAX` records.
    TooManyRecords {
        /// The limit.
        records_max: u32,
    },
    /// One part of a message is over its limit.
    FieldTooLarge {
        /// Which part ("key", "filter value", "header count", "header key").
        field: &'static str,
        /// Its length (or count).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A message timestamp is before the batch's first, or more than `u32::MAX` µs after it.
    TimestampOutOfRange {
        /// The batch's first record's timestamp.
        first_timestamp_us: TimestampUs,
        /// The rejected timestamp.
        timestamp_us: TimestampUs,
    },
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { needed, available } => {
                write!(f, "batch truncated: {needed} bytes needed, {available} available")
            }
            Self::BadMagic(magic) => write!(f, "bad batch magic {magic:02x?}, expected \"RBAT\""),
            Self::UnsupportedVersion(version) => write!(
                f,
                "unsupported batch format version {version} (this build reads {BATCH_FORMAT_VERSION})"
            ),
            Self::UnsupportedCodec(codec) => write!(f, "unsupported batch codec {codec}"),
            Self::ReservedBitsSet => f.write_str("reserved batch header bits are not zero"),
            Self::LengthOutOfRange(length) => write!(
                f,
                "batch length {length} outside {BATCH_BYTES_MIN}..={BATCH_BYTES_MAX}"
            ),
            Self::LengthMismatch { header, actual } => {
                write!(f, "batch header says {header} bytes but {actual} were given")
            }
            Self::CrcMismatch { stored, computed } => write!(
                f,
                "batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
            Self::RecordCountOutOfRange(count) => write!(
                f,
                "batch record count {count} outside 1..={BATCH_RECORDS_MAX}"
            ),
            Self::OffsetOverflow { base_offset, record_count } => write!(
                f,
                "batch offsets overflow: base offset {base_offset} + {record_count} records"
            ),
            Self::MalformedRecord { index, reason } => {
                write!(f, "malformed record {index}: {reason}")
            }
            Self::Invalid(reason) => write!(f, "invalid batch: {reason}"),
            Self::Empty => f.write_str("batch has no records"),
            Self::TooLarge { bytes, bytes_max } => {
                write!(f, "batch would be {bytes} bytes, above the limit of {bytes_max}")
            }
            Self::TooManyRecords { records_max } => {
                write!(f, "batch already holds the maximum of {records_max} records")
            }
            Self::FieldTooLarge { field, len, max } => {
                write!(f, "message {field} is {len}, above the limit of {max}")
            }
            Self::TimestampOutOfRange { first_timestamp_us, timestamp_us } => write!(
                f,
                "message timestamp {timestamp_us} µs is outside the batch window \
                 [{first_timestamp_us}, {first_timestamp_us} + {}] µs",
                u32::MAX
            ),
        }
    }
}

impl std::error::Error for BatchError {}

/// The decoded fixed header of a batch. Field meanings are in `docs/format.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Format version; [`BATCH_FORMAT_VERSION`] once decoded.
    pub version: u16,
    /// Codec bits and the has-filter-values bit.
    pub attributes: u16,
    /// Total batch bytes, header and records.
    pub length: u32,
    /// CRC32 (IEEE) over everything but itself and the server-assigned fields.
    pub crc32: u32,
    /// Offset of record 0 in its partition; assigned by the server, 0 from producers.
    pub base_offset: Offset,
    /// When the server appended the batch; assigned by the server, 0 from producers.
    pub append_timestamp_us: TimestampUs,
    /// Number of records, at least 1.
    pub record_count: u32,
    /// The producer's create time of record 0.
    pub first_timestamp_us: TimestampUs,
    /// The latest create time over all records.
    pub max_timestamp_us: TimestampUs,
    /// The producer's id, 0 for an anonymous producer.
    pub producer_id: u64,
    /// The producer's sequence number of record 0.
    pub producer_sequence: u32,
    /// Bloom filter over the records' filter values.
    pub filter_bloom: [u8; FILTER_BLOOM_BYTES],
}

impl BatchHeader {
    /// Decodes and checks a batch header from the start of `bytes`.
    ///
    /// Checks the magic, version, attributes (codec and reserved bits), the length range, the
    /// record count range, the reserved fields, and that the offsets fit a `u64`. Does not check
    /// the CRC, nor that `bytes` holds `length` bytes: that is [`validate`]'s work.
    ///
    /// With fewer than [`BATCH_HEADER_BYTES`] bytes, the leading fields that are present are
    /// still checked, so a short prefix of a valid batch gives [`BatchError::Truncated`] while a
    /// short run of garbage (such as zeros) gives the error that names what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        check_leading_fields(bytes)?;
        let Some(header) = bytes.first_chunk::<BATCH_HEADER_BYTES>() else {
            return Err(BatchError::Truncated {
                needed: BATCH_HEADER_BYTES,
                available: bytes.len(),
            });
        };
        let record_count = u32_at::<RECORD_COUNT_AT>(header);
        if record_count == 0 || record_count > BATCH_RECORDS_MAX {
            return Err(BatchError::RecordCountOutOfRange(record_count));
        }
        if u32_at::<RESERVED_A_AT>(header) != 0 || u32_at::<RESERVED_B_AT>(header) != 0 {
            return Err(BatchError::ReservedBitsSet);
        }
        let base_offset = u64_at::<BASE_OFFSET_AT>(header);
        if base_offset.checked_add(u64::from(record_count)).is_none() {
            return Err(BatchError::OffsetOverflow { base_offset, record_count });
        }
        Ok(BatchHeader {
            version: u16_at::<VERSION_AT>(header),
            attributes: u16_at::<ATTRIBUTES_AT>(header),
            length: u32_at::<LENGTH_AT>(header),
            crc32: u32_at::<CRC_AT>(header),
            base_offset,
            append_timestamp_us: u64_at::<APPEND_TIMESTAMP_AT>(header),
            record_count,
            first_timestamp_us: u64_at::<FIRST_TIMESTAMP_AT>(header),
            max_timestamp_us: u64_at::<MAX_TIMESTAMP_AT>(header),
            producer_id: u64_at::<PRODUCER_ID_AT>(header),
            producer_sequence: u32_at::<PRODUCER_SEQUENCE_AT>(header),
            filter_bloom: array_at::<FILTER_BLOOM_AT, FILTER_BLOOM_BYTES>(header),
        })
    }

    /// Encodes the header verbatim (magic first, reserved fields zero, every other field as it
    /// is, the CRC included). `decode(&h.encode())` returns `h` for any header `decode` accepts.
    pub fn encode(&self) -> [u8; BATCH_HEADER_BYTES] {
        let mut out = [0u8; BATCH_HEADER_BYTES];
        put::<MAGIC_AT, 4>(&mut out, BATCH_MAGIC);
        put::<VERSION_AT, 2>(&mut out, self.version.to_le_bytes());
        put::<ATTRIBUTES_AT, 2>(&mut out, self.attributes.to_le_bytes());
        put::<LENGTH_AT, 4>(&mut out, self.length.to_le_bytes());
        put::<CRC_AT, 4>(&mut out, self.crc32.to_le_bytes());
        put::<BASE_OFFSET_AT, 8>(&mut out, self.base_offset.to_le_bytes());
        put::<APPEND_TIMESTAMP_AT, 8>(&mut out, self.append_timestamp_us.to_le_bytes());
        put::<RECORD_COUNT_AT, 4>(&mut out, self.record_count.to_le_bytes());
        put::<FIRST_TIMESTAMP_AT, 8>(&mut out, self.first_timestamp_us.to_le_bytes());
        put::<MAX_TIMESTAMP_AT, 8>(&mut out, self.max_timestamp_us.to_le_bytes());
        put::<PRODUCER_ID_AT, 8>(&mut out, self.producer_id.to_le_bytes());
        put::<PRODUCER_SEQUENCE_AT, 4>(&mut out, self.producer_sequence.to_le_bytes());
        put::<FILTER_BLOOM_AT, FILTER_BLOOM_BYTES>(&mut out, self.filter_bloom);
        out
    }

    /// The offset of the last record: `base_offset + record_count - 1`. Saturates instead of
    /// overflowing on a hand-made header; [`decode`](Self::decode) rejects headers where it would.
    pub fn last_offset(&self) -> Offset {
        self.next_offset().saturating_sub(1)
    }

    /// The offset after the last record: `base_offset + record_count`.
    pub fn next_offset(&self) -> Offset {
        self.base_offset.saturating_add(u64::from(self.record_count))
    }

    /// The codec the records are stored with ([`CODEC_NONE`] once decoded).
    pub fn codec(&self) -> u8 {
        (self.attributes & ATTRIBUTE_CODEC_MASK) as u8
    }

    /// Whether at least one record carries a filter value.
    pub fn has_filter_values(&self) -> bool {
        self.attributes & ATTRIBUTE_HAS_FILTER_VALUES != 0
    }

    /// Whether some record may carry the filter value `value`. `false` is definite (no record
    /// carries it, and for a validated batch never wrong); `true` may be a false positive.
    pub fn might_contain_filter(&self, value: &[u8]) -> bool {
        self.has_filter_values() && bloom_contains(&self.filter_bloom, value)
    }
}

/// Checks the header fields in `bytes` that are entirely present: the magic (or as much of it as
/// there is), version, attributes and length.
fn check_leading_fields(bytes: &[u8]) -> Result<(), BatchError> {
    if bytes.iter().zip(BATCH_MAGIC).any(|(have, want)| *have != want) {
        let mut magic = [0u8; 4];
        for (slot, byte) in magic.iter_mut().zip(bytes) {
            *slot = *byte;
        }
        return Err(BatchError::BadMagic(magic));
    }
    let mut reader = Reader { bytes, at: VERSION_AT };
    let Ok(version) = reader.u16("") else { return Ok(()) };
    if version != BATCH_FORMAT_VERSION {
        return Err(BatchError::UnsupportedVersion(version));
    }
    let Ok(attributes) = reader.u16("") else { return Ok(()) };
    let codec = (attributes & ATTRIBUTE_CODEC_MASK) as u8;
    if codec != CODEC_NONE {
        return Err(BatchError::UnsupportedCodec(codec));
    }
    if attributes & ATTRIBUTE_RESERVED_MASK != 0 {
        return Err(BatchError::ReservedBitsSet);
    }
    let Ok(length) = reader.u32("") else { return Ok(()) };
    if !(BATCH_BYTES_MIN..=BATCH_BYTES_MAX).contains(&(length as usize)) {
        return Err(BatchError::LengthOutOfRange(length));
    }
    debug_assert_eq!(reader.at, CRC_AT);
    Ok(())
}

/// The CRC32 (IEEE) of a batch as the format defines it: over `[0, 12)` and `[32, len)`, leaving
/// out the CRC field and the server-assigned base offset and append time.
///
/// Meant for a whole batch (`bytes.len() == length`); on shorter input it hashes whatever of the
/// covered ranges is present and never panics.
pub fn crc32_of(bytes: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(bytes.get(..CRC_AT).unwrap_or(bytes));
    hasher.update(bytes.get(CRC_RESUMES_AT..).unwrap_or(&[]));
    hasher.finalize()
}

/// Checks that `bytes` is exactly one whole, well-formed batch and returns a view of it.
///
/// In order: the header ([`BatchHeader::decode`]), `bytes.len() == length`, the CRC, then every
/// record (bounds, dense offset deltas, flags, limits, parts adding up to `record_length`, record
/// lengths adding up to the batch), then the header's summary fields against the records: record
/// 0's timestamp delta is 0, `max_timestamp_us` is the latest record time, the filter attribute
/// bit is set exactly when some record has a filter value, and the Bloom bits are exactly those
/// of the records' filter values.
///
/// Never panics, never allocates; time is linear in the number of records and headers.
pub fn validate(bytes: &[u8]) -> Result<Batch<'_>, BatchError> {
    let header = BatchHeader::decode(bytes)?;
    if bytes.len() != header.length as usize {
        return Err(BatchError::LengthMismatch { header: header.length, actual: bytes.len() });
    }
    let computed = crc32_of(bytes);
    if computed != header.crc32 {
        return Err(BatchError::CrcMismatch { stored: header.crc32, computed });
    }
    let summary = walk_records(bytes, &header)?;
    if summary.max_timestamp_us != header.max_timestamp_us {
        return Err(BatchError::Invalid("max_timestamp_us is not the latest record timestamp"));
    }
    if summary.has_filter_values != header.has_filter_values() {
        return Err(BatchError::Invalid("the filter attribute bit disagrees with the records"));
    }
    if summary.filter_bloom != header.filter_bloom {
        return Err(BatchError::Invalid("the filter bloom disagrees with the records"));
    }
    Ok(Batch { header, bytes })
}

/// What [`validate`] learns from the records to check the header against.
struct RecordsSummary {
    max_timestamp_us: TimestampUs,
    has_filter_values: bool,
    filter_bloom: [u8; FILTER_BLOOM_BYTES],
}

/// Parses every record of a batch whose header and length are already checked.
fn walk_records(bytes: &[u8], header: &BatchHeader) -> Result<RecordsSummary, BatchError> {
    let mut summary = RecordsSummary {
        max_timestamp_us: header.first_timestamp_us,
        has_filter_values: false,
        filter_bloom: [0; FILTER_BLOOM_BYTES],
    };
    let mut at = BATCH_HEADER_BYTES;
    for index in 0..header.record_count {
        let malformed = |reason| BatchError::MalformedRecord { index, reason };
        let record = parse_record(bytes, at, index).map_err(malformed)?;
        if index == 0 && record.timestamp_delta_us != 0 {
            return Err(malformed("record 0 has a timestamp delta other than 0"));
        }
        let timestamp_us = header
            .first_timestamp_us
            .checked_add(u64::from(record.timestamp_delta_us))
            .ok_or_else(|| malformed("timestamp overflows u64"))?;
        summary.max_timestamp_us = summary.max_timestamp_us.max(timestamp_us);
        if let Some(value) = record.filter_value {
            summary.has_filter_values = true;
            bloom_insert(&mut summary.filter_bloom, value);
        }
        debug_assert!(record.end > at);
        at = record.end;
    }
    if at != bytes.len() {
        return Err(BatchError::Invalid("record lengths do not add up to the batch length"));
    }
    Ok(summary)
}

/// Writes the server-assigned fields (bytes 16..32) of a batch in place. The CRC does not cover
/// them, so it stays valid.
///
/// # Panics
/// If `bytes` is shorter than a header, or the offsets `base_offset + record_count` would not fit
/// a `u64`: both are caller bugs, as the caller has validated the batch and assigns offsets.
pub fn patch_server_fields(
    bytes: &mut [u8],
    base_offset: Offset,
    append_timestamp_us: TimestampUs,
) {
    let len = bytes.len();
    let Some(header) = bytes.first_chunk_mut::<BATCH_HEADER_BYTES>() else {
        panic!("patch_server_fields on {len} bytes, fewer than a batch header");
    };
    let record_count = u32_at::<RECORD_COUNT_AT>(header);
    assert!(
        base_offset.checked_add(u64::from(record_count)).is_some(),
        "base offset {base_offset} + {record_count} records overflows"
    );
    put::<BASE_OFFSET_AT, 8>(header, base_offset.to_le_bytes());
    put::<APPEND_TIMESTAMP_AT, 8>(header, append_timestamp_us.to_le_bytes());
    debug_assert_eq!(u64_at::<BASE_OFFSET_AT>(header), base_offset);
}

/// A validated batch: its decoded header and its bytes. Only [`validate`] (and [`batches`]) make
/// one, so everything it hands out comes from bytes that passed every check.
#[derive(Clone, Copy)]
pub struct Batch<'a> {
    header: BatchHeader,
    bytes: &'a [u8],
}

impl<'a> Batch<'a> {
    /// The decoded header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The batch's bytes, exactly `header().length` of them.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The records, in offset order.
    pub fn records(&self) -> RecordIter<'a> {
        RecordIter {
            bytes: self.bytes,
            at: BATCH_HEADER_BYTES,
            index: 0,
            record_count: self.header.record_count,
            base_offset: self.header.base_offset,
            first_timestamp_us: self.header.first_timestamp_us,
        }
    }
}

impl fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("header", &self.header)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

/// One record of a validated batch, borrowing from the batch's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The record's offset in its partition: the batch's base offset plus its index.
    pub offset: Offset,
    /// The producer's create time of the record.
    pub timestamp_us: TimestampUs,
    /// The message key, if it has one.
    pub key: Option<&'a [u8]>,
    /// The filter value, if it has one.
    pub filter_value: Option<&'a [u8]>,
    /// The message body.
    pub payload: &'a [u8],
    headers: &'a [u8],
    header_count: u16,
}

impl<'a> Record<'a> {
    /// The record's headers, as (key, value) pairs in the order the producer gave them.
    pub fn headers(&self) -> HeaderIter<'a> {
        HeaderIter { reader: Reader { bytes: self.headers, at: 0 }, remaining: self.header_count }
    }

    /// How many headers the record has.
    pub fn header_count(&self) -> usize {
        usize::from(self.header_count)
    }
}

/// Iterator over the records of a [`Batch`]. The batch was validated, so it yields exactly
/// `record_count` records; should anything still look wrong it stops early instead of panicking.
#[derive(Debug, Clone)]
pub struct RecordIter<'a> {
    bytes: &'a [u8],
    at: usize,
    index: u32,
    record_count: u32,
    base_offset: Offset,
    first_timestamp_us: TimestampUs,
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        if self.index >= self.record_count {
            return None;
        }
        let record = self.next_record();
        debug_assert!(record.is_some(), "record {} of a validated batch did not parse", self.index);
        if record.is_none() {
            self.index = self.record_count;
        }
        record
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let remaining = (self.record_count - self.index.min(self.record_count)) as usize;
        (remaining, Some(remaining))
    }
}

impl FusedIterator for RecordIter<'_> {}

impl<'a> RecordIter<'a> {
    fn next_record(&mut self) -> Option<Record<'a>> {
        let raw = parse_record(self.bytes, self.at, self.index).ok()?;
        let offset = self.base_offset.checked_add(u64::from(self.index))?;
        let timestamp_us = self.first_timestamp_us.checked_add(u64::from(raw.timestamp_delta_us))?;
        self.at = raw.end;
        self.index += 1;
        Some(Record {
            offset,
            timestamp_us,
            key: raw.key,
            filter_value: raw.filter_value,
            payload: raw.payload,
            headers: raw.headers,
            header_count: raw.header_count,
        })
    }
}

/// Iterator over a record's headers, yielding (key, value).
#[derive(Debug, Clone)]
pub struct HeaderIter<'a> {
    reader: Reader<'a>,
    remaining: u16,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        match parse_header(&mut self.reader) {
            Ok(header) => {
                self.remaining -= 1;
                Some(header)
            }
            Err(_) => {
                self.remaining = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::from(self.remaining), Some(usize::from(self.remaining)))
    }
}

impl FusedIterator for HeaderIter<'_> {}

/// Iterates the batches in `bytes`, a concatenation of batches such as a segment or a fetch
/// response. See [`BatchIter`].
pub fn batches(bytes: &[u8]) -> BatchIter<'_> {
    BatchIter { rest: bytes, stopped: false }
}

/// Iterator over concatenated batches, validating each one; made by [`batches`].
///
/// Yields `Ok` for each whole valid batch and stops after the first error. When the tail is the
/// start of a batch that is simply incomplete (a prefix of something that could still become
/// valid), the error is [`BatchError::Truncated`]; anything else means corruption. Either way
/// [`remaining`](Self::remaining) then starts at the failing batch.
#[derive(Debug, Clone)]
pub struct BatchIter<'a> {
    rest: &'a [u8],
    stopped: bool,
}

impl<'a> BatchIter<'a> {
    /// The bytes not yet consumed: after an error, from the start of the batch that failed.
    pub fn remaining(&self) -> &'a [u8] {
        self.rest
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Result<Batch<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.stopped || self.rest.is_empty() {
            return None;
        }
        let result = next_batch(self.rest);
        match &result {
            Ok(batch) => {
                let consumed = batch.as_bytes().len();
                debug_assert!(consumed >= BATCH_BYTES_MIN && consumed <= self.rest.len());
                self.rest = self.rest.get(consumed..).unwrap_or_default();
            }
            Err(_) => self.stopped = true,
        }
        Some(result)
    }
}

impl FusedIterator for BatchIter<'_> {}

/// Validates the batch at the start of `bytes`, which may continue past it.
fn next_batch(bytes: &[u8]) -> Result<Batch<'_>, BatchError> {
    let header = BatchHeader::decode(bytes)?;
    let length = header.length as usize;
    let Some(batch) = bytes.get(..length) else {
        return Err(BatchError::Truncated { needed: length, available: bytes.len() });
    };
    validate(batch)
}

/// A record's parts, as parsed from the batch bytes.
struct RawRecord<'a> {
    /// Position in the batch just after the record.
    end: usize,
    timestamp_delta_us: u32,
    key: Option<&'a [u8]>,
    filter_value: Option<&'a [u8]>,
    headers: &'a [u8],
    header_count: u16,
    payload: &'a [u8],
}

/// Parses record `index` starting at `at` in `batch`, checking every rule of the record layout
/// that does not need the header. Shared by [`validate`] and [`RecordIter`], so the iterator
/// reads records exactly the way they were checked.
fn parse_record(batch: &[u8], at: usize, index: u32) -> Result<RawRecord<'_>, &'static str> {
    let rest = batch.get(at..).ok_or("record starts past the end of the batch")?;
    let record_length = Reader { bytes: rest, at: RECORD_LENGTH_AT }
        .u32("record header runs past the end of the batch")? as usize;
    if record_length < RECORD_HEADER_BYTES {
        return Err("record_length is smaller than the record header");
    }
    let record = rest.get(..record_length).ok_or("record_length runs past the end of the batch")?;
    let mut reader = Reader { bytes: record, at: OFFSET_DELTA_AT };
    const SHORT: &str = "record header runs past record_length";
    if reader.u32(SHORT)? != index {
        return Err("offset_delta is not the record's index in the batch");
    }
    let timestamp_delta_us = reader.u32(SHORT)?;
    let flags = reader.u8(SHORT)?;
    if flags & !RECORD_FLAGS_KNOWN != 0 {
        return Err("undefined record flag bits are set");
    }
    if reader.u8(SHORT)? != 0 {
        return Err("reserved record byte is not zero");
    }
    let header_count = reader.u16(SHORT)?;
    if usize::from(header_count) > HEADERS_PER_RECORD_MAX {
        return Err("header_count is above HEADERS_PER_RECORD_MAX");
    }
    let payload_length = reader.u32(SHORT)? as usize;
    debug_assert_eq!(reader.at, RECORD_HEADER_BYTES);

    let key = if flags & RECORD_FLAG_KEY != 0 {
        let len = usize::from(reader.u16("key length runs past the record")?);
        if len > KEY_BYTES_MAX {
            return Err("key is longer than KEY_BYTES_MAX");
        }
        Some(reader.take(len, "key runs past the record")?)
    } else {
        None
    };
    let filter_value = if flags & RECORD_FLAG_FILTER_VALUE != 0 {
        let len = usize::from(reader.u8("filter value length runs past the record")?);
        if len > FILTER_VALUE_BYTES_MAX {
            return Err("filter value is longer than FILTER_VALUE_BYTES_MAX");
        }
        Some(reader.take(len, "filter value runs past the record")?)
    } else {
        None
    };
    let headers_at = reader.at;
    for _ in 0..header_count {
        parse_header(&mut reader)?;
    }
    let headers = record.get(headers_at..reader.at).ok_or("headers run past the record")?;
    let payload = reader.take(payload_length, "payload runs past the record")?;
    if reader.at != record.len() {
        return Err("record parts do not add up to record_length");
    }
    let end = at.checked_add(record_length).ok_or("record_length overflows")?;
    Ok(RawRecord { end, timestamp_delta_us, key, filter_value, headers, header_count, payload })
}

/// Parses one (key, value) header at the reader's position.
fn parse_header<'a>(reader: &mut Reader<'a>) -> Result<(&'a [u8], &'a [u8]), &'static str> {
    let key_len = usize::from(reader.u8("header key length runs past the record")?);
    if key_len > HEADER_KEY_BYTES_MAX {
        return Err("header key is longer than HEADER_KEY_BYTES_MAX");
    }
    let key = reader.take(key_len, "header key runs past the record")?;
    let value_len = reader.u32("header value length runs past the record")? as usize;
    let value = reader.take(value_len, "header value runs past the record")?;
    Ok((key, value))
}

/// A bounds-checked little-endian cursor. Every read returns the given reason instead of
/// panicking when the bytes run out.
#[derive(Debug, Clone)]
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize, reason: &'static str) -> Result<&'a [u8], &'static str> {
        let end = self.at.checked_add(len).ok_or(reason)?;
        let taken = self.bytes.get(self.at..end).ok_or(reason)?;
        self.at = end;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, reason: &'static str) -> Result<[u8; N], &'static str> {
        self.take(N, reason)?.try_into().map_err(|_| reason)
    }

    fn u8(&mut self, reason: &'static str) -> Result<u8, &'static str> {
        self.array::<1>(reason).map(|[byte]| byte)
    }

    fn u16(&mut self, reason: &'static str) -> Result<u16, &'static str> {
        self.array(reason).map(u16::from_le_bytes)
    }

    fn u32(&mut self, reason: &'static str) -> Result<u32, &'static str> {
        self.array(reason).map(u32::from_le_bytes)
    }
}

/// Reads `N` bytes at the constant offset `AT` of a header; out-of-range offsets fail to compile.
fn array_at<const AT: usize, const N: usize>(header: &[u8; BATCH_HEADER_BYTES]) -> [u8; N] {
    const { assert!(AT + N <= BATCH_HEADER_BYTES) };
    let mut out = [0u8; N];
    out.copy_from_slice(&header[AT..AT + N]);
    out
}

fn u16_at<const AT: usize>(header: &[u8; BATCH_HEADER_BYTES]) -> u16 {
    u16::from_le_bytes(array_at::<AT, 2>(header))
}

fn u32_at<const AT: usize>(header: &[u8; BATCH_HEADER_BYTES]) -> u32 {
    u32::from_le_bytes(array_at::<AT, 4>(header))
}

fn u64_at<const AT: usize>(header: &[u8; BATCH_HEADER_BYTES]) -> u64 {
    u64::from_le_bytes(array_at::<AT, 8>(header))
}

/// Writes `N` bytes at the constant offset `AT` of a header; out-of-range offsets fail to compile.
fn put<const AT: usize, const N: usize>(header: &mut [u8; BATCH_HEADER_BYTES], value: [u8; N]) {
    const { assert!(AT + N <= BATCH_HEADER_BYTES) };
    header[AT..AT + N].copy_from_slice(&value);
}

/// 64-bit FNV-1a.
fn fnv1a_64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(PRIME))
}

/// The Bloom bit positions of a filter value: `(h1 + i * h2) mod 256` for i in 0..3, with
/// `h1` the low and `h2` the high 32 bits (forced odd) of its FNV-1a hash.
fn bloom_bits(value: &[u8]) -> impl Iterator<Item = u32> {
    let hash = fnv1a_64(value);
    let h1 = hash as u32;
    let h2 = (hash >> 32) as u32 | 1;
    (0..FILTER_BLOOM_HASHES).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % FILTER_BLOOM_BITS)
}

/// Bit `b` of the Bloom filter is bit `b % 8` (least significant first) of byte `b / 8`.
fn bloom_byte_and_mask(bit: u32) -> (usize, u8) {
    ((bit / 8) as usize, 1u8 << (bit % 8))
}

fn bloom_insert(bloom: &mut [u8; FILTER_BLOOM_BYTES], value: &[u8]) {
    for bit in bloom_bits(value) {
        let (byte, mask) = bloom_byte_and_mask(bit);
        if let Some(slot) = bloom.get_mut(byte) {
            *slot |= mask;
        }
    }
}

fn bloom_contains(bloom: &[u8; FILTER_BLOOM_BYTES], value: &[u8]) -> bool {
    bloom_bits(value).all(|bit| {
        let (byte, mask) = bloom_byte_and_mask(bit);
        bloom.get(byte).is_some_and(|slot| slot & mask != 0)
    })
}

/// One message for [`BatchBuilder::push`], borrowing its parts.
///
/// ```
/// use ringbroker::protocol::batch::Message;
/// let message = Message { key: Some(b"user-7"), ..Message::payload(b"hello") };
/// assert_eq!(message.payload, b"hello");
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Message<'a> {
    /// The key (at most `KEY_BYTES_MAX` bytes); `Some(&[])` is an empty key, not no key.
    pub key: Option<&'a [u8]>,
    /// The filter value (at most `FILTER_VALUE_BYTES_MAX` bytes).
    pub filter_value: Option<&'a [u8]>,
    /// Headers as (key, value) pairs: at most `HEADERS_PER_RECORD_MAX`, keys at most
    /// `HEADER_KEY_BYTES_MAX` bytes.
    pub headers: &'a [(&'a [u8], &'a [u8])],
    /// The body.
    pub payload: &'a [u8],
    /// The create time; `None` means now (see [`BatchBuilder::push`]).
    pub timestamp_us: Option<TimestampUs>,
}

impl<'a> Message<'a> {
    /// A message with only a payload: no key, filter value or headers, timestamped at push.
    pub fn payload(payload: &'a [u8]) -> Self {
        Message { payload, ..Message::default() }
    }
}

/// Builds one batch in a single growable buffer, ready to send as is.
///
/// The buffer is reserved up front (the header's room included) and records are appended in
/// place; nothing is allocated per message unless the buffer outgrows its reservation. Each
/// [`push`](Self::push) either appends the whole record or, on error, leaves the builder as it
/// was, so a producer whose batch is full ([`BatchError::TooLarge`]) sends it and pushes the same
/// message into the next one.
///
/// Two ways to finish: [`finish`](Self::finish) hands over the buffer; or, to reuse one buffer,
/// [`finish_in_place`](Self::finish_in_place) fills in the header and lends the bytes out, and
/// [`reset`](Self::reset) then empties the builder for the next batch, keeping its capacity.
///
/// ```
/// use ringbroker::protocol::batch::{validate, BatchBuilder, Message};
/// let mut builder = BatchBuilder::new(7, 0);
/// builder.push(&Message { key: Some(b"k"), ..Message::payload(b"one") })?;
/// builder.push_payload(b"two")?;
/// let next_sequence = builder.next_producer_sequence();
/// let bytes = builder.finish_in_place()?;
/// let batch = validate(bytes)?;
/// assert_eq!(batch.records().map(|r| r.payload).collect::<Vec<_>>(), [b"one", b"two"]);
/// builder.reset(next_sequence);
/// assert!(builder.is_empty());
/// # Ok::<(), ringbroker::protocol::batch::BatchError>(())
/// ```
#[derive(Clone)]
pub struct BatchBuilder {
    /// Room for the header (zeros until finished), then the records.
    buffer: Vec<u8>,
    producer_id: u64,
    producer_sequence: u32,
    record_count: u32,
    first_timestamp_us: TimestampUs,
    max_timestamp_us: TimestampUs,
    filter_bloom: [u8; FILTER_BLOOM_BYTES],
    has_filter_values: bool,
}

impl BatchBuilder {
    /// An empty builder for `producer_id` (0 = anonymous) whose first record has sequence number
    /// `producer_sequence`, reserving [`BUILDER_CAPACITY_DEFAULT_BYTES`].
    pub fn new(producer_id: u64, producer_sequence: u32) -> Self {
        Self::with_capacity(producer_id, producer_sequence, BUILDER_CAPACITY_DEFAULT_BYTES)
    }

    /// Like [`new`](Self::new), reserving `capacity_bytes` (clamped to
    /// `BATCH_BYTES_MIN..=BATCH_BYTES_MAX`) for the whole batch, header included.
    pub fn with_capacity(producer_id: u64, producer_sequence: u32, capacity_bytes: usize) -> Self {
        let mut buffer = Vec::with_capacity(capacity_bytes.clamp(BATCH_BYTES_MIN, BATCH_BYTES_MAX));
        buffer.resize(BATCH_HEADER_BYTES, 0);
        BatchBuilder {
            buffer,
            producer_id,
            producer_sequence,
            record_count: 0,
            first_timestamp_us: 0,
            max_timestamp_us: 0,
            filter_bloom: [0; FILTER_BLOOM_BYTES],
            has_filter_values: false,
        }
    }

    /// Appends one message as the next record.
    ///
    /// Rejects, leaving the builder unchanged: a part over its limit ([`BatchError::FieldTooLarge`]);
    /// a batch that would exceed `BATCH_BYTES_MAX` ([`BatchError::TooLarge`]) or
    /// `BATCH_RECORDS_MAX` records ([`BatchError::TooManyRecords`]); an explicit timestamp before
    /// the first record's or more than `u32::MAX` µs (about 71 minutes) after it
    /// ([`BatchError::TimestampOutOfRange`]).
    ///
    /// A message without a timestamp gets the wall clock, but never earlier than the first
    /// record's: a clock stepping backwards must not make pushes fail.
    pub fn push(&mut self, message: &Message<'_>) -> Result<(), BatchError> {
        let record_bytes = record_bytes_of(message)?;
        let batch_bytes = self.buffer.len().saturating_add(record_bytes);
        if batch_bytes > BATCH_BYTES_MAX {
            return Err(BatchError::TooLarge { bytes: batch_bytes, bytes_max: BATCH_BYTES_MAX });
        }
        if self.record_count >= BATCH_RECORDS_MAX {
            return Err(BatchError::TooManyRecords { records_max: BATCH_RECORDS_MAX });
        }
        let (timestamp_us, timestamp_delta_us) = self.timestamp_of(message.timestamp_us)?;

        self.buffer.reserve(record_bytes);
        self.write_record(message, record_bytes, timestamp_delta_us);
        assert_eq!(self.buffer.len(), batch_bytes, "record length miscounted");
        if self.record_count == 0 {
            self.first_timestamp_us = timestamp_us;
        }
        self.max_timestamp_us = self.max_timestamp_us.max(timestamp_us);
        if let Some(value) = message.filter_value {
            self.has_filter_values = true;
            bloom_insert(&mut self.filter_bloom, value);
        }
        self.record_count += 1;
        Ok(())
    }

    /// Appends a message with only a payload, timestamped now.
    pub fn push_payload(&mut self, payload: &[u8]) -> Result<(), BatchError> {
        self.push(&Message::payload(payload))
    }

    /// The number of records pushed.
    pub fn record_count(&self) -> u32 {
        self.record_count
    }

    /// The size the batch has if finished now, header included.
    pub fn byte_len(&self) -> usize {
        self.buffer.len()
    }

    /// Whether no record has been pushed.
    pub fn is_empty(&self) -> bool {
        self.record_count == 0
    }

    /// The producer id written into the header.
    pub fn producer_id(&self) -> u64 {
        self.producer_id
    }

    /// The producer sequence number of this batch's first record.
    pub fn producer_sequence(&self) -> u32 {
        self.producer_sequence
    }

    /// The sequence number the next batch starts at: this one's plus its record count
    /// (wrapping, as producer sequences do).
    pub fn next_producer_sequence(&self) -> u32 {
        self.producer_sequence.wrapping_add(self.record_count)
    }

    /// Fills in the header (length, counts, timestamps, producer, Bloom bits, CRC) and returns
    /// the finished batch, handing over the buffer. [`BatchError::Empty`] without records.
    pub fn finish(mut self) -> Result<Vec<u8>, BatchError> {
        self.finish_in_place()?;
        Ok(self.buffer)
    }

    /// Fills in the header and lends out the finished batch, keeping the buffer for
    /// [`reset`](Self::reset). More pushes after this are allowed; finishing again rewrites the
    /// header to cover them. [`BatchError::Empty`] without records.
    pub fn finish_in_place(&mut self) -> Result<&[u8], BatchError> {
        if self.record_count == 0 {
            return Err(BatchError::Empty);
        }
        let length = u32::try_from(self.buffer.len()).map_err(|_| BatchError::TooLarge {
            bytes: self.buffer.len(),
            bytes_max: BATCH_BYTES_MAX,
        })?;
        let mut header = BatchHeader {
            version: BATCH_FORMAT_VERSION,
            attributes: if self.has_filter_values { ATTRIBUTE_HAS_FILTER_VALUES } else { 0 },
            length,
            crc32: 0,
            base_offset: 0,
            append_timestamp_us: 0,
            record_count: self.record_count,
            first_timestamp_us: self.first_timestamp_us,
            max_timestamp_us: self.max_timestamp_us,
            producer_id: self.producer_id,
            producer_sequence: self.producer_sequence,
            filter_bloom: self.filter_bloom,
        };
        *head_of(&mut self.buffer) = header.encode();
        header.crc32 = crc32_of(&self.buffer);
        put::<CRC_AT, 4>(head_of(&mut self.buffer), header.crc32.to_le_bytes());
        debug_assert_eq!(validate(&self.buffer).map(|batch| *batch.header()), Ok(header));
        Ok(&self.buffer)
    }

    /// Empties the builder for the next batch, whose first record will have sequence number
    /// `producer_sequence` (usually [`next_producer_sequence`](Self::next_producer_sequence)).
    /// Keeps the buffer's capacity.
    pub fn reset(&mut self, producer_sequence: u32) {
        self.buffer.clear();
        self.buffer.resize(BATCH_HEADER_BYTES, 0);
        self.producer_sequence = producer_sequence;
        self.record_count = 0;
        self.first_timestamp_us = 0;
        self.max_timestamp_us = 0;
        self.filter_bloom = [0; FILTER_BLOOM_BYTES];
        self.has_filter_values = false;
    }

    /// The timestamp a message gets and its delta from the first record's.
    fn timestamp_of(
        &self,
        requested_us: Option<TimestampUs>,
    ) -> Result<(TimestampUs, u32), BatchError> {
        if self.record_count == 0 {
            return Ok((requested_us.unwrap_or_else(now_us), 0));
        }
        let first_timestamp_us = self.first_timestamp_us;
        let timestamp_us = requested_us.unwrap_or_else(|| now_us().max(first_timestamp_us));
        timestamp_us
            .checked_sub(first_timestamp_us)
            .and_then(|delta| u32::try_from(delta).ok())
            .map(|delta| (timestamp_us, delta))
            .ok_or(BatchError::TimestampOutOfRange { first_timestamp_us, timestamp_us })
    }

    /// Appends a record whose parts [`record_bytes_of`] has checked and measured.
    fn write_record(&mut self, message: &Message<'_>, record_bytes: usize, timestamp_delta_us: u32) {
        let mut flags = 0;
        if message.key.is_some() {
            flags |= RECORD_FLAG_KEY;
        }
        if message.filter_value.is_some() {
            flags |= RECORD_FLAG_FILTER_VALUE;
        }
        let out = &mut self.buffer;
        out.extend_from_slice(&length_u32(record_bytes).to_le_bytes());
        out.extend_from_slice(&self.record_count.to_le_bytes());
        out.extend_from_slice(&timestamp_delta_us.to_le_bytes());
        out.extend_from_slice(&[flags, 0]);
        out.extend_from_slice(&(message.headers.len() as u16).to_le_bytes());
        out.extend_from_slice(&length_u32(message.payload.len()).to_le_bytes());
        if let Some(key) = message.key {
            out.extend_from_slice(&(key.len() as u16).to_le_bytes());
            out.extend_from_slice(key);
        }
        if let Some(value) = message.filter_value {
            out.push(value.len() as u8);
            out.extend_from_slice(value);
        }
        for (key, value) in message.headers {
            out.push(key.len() as u8);
            out.extend_from_slice(key);
            out.extend_from_slice(&length_u32(value.len()).to_le_bytes());
            out.extend_from_slice(value);
        }
        out.extend_from_slice(message.payload);
    }
}

impl fmt::Debug for BatchBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchBuilder")
            .field("producer_id", &self.producer_id)
            .field("producer_sequence", &self.producer_sequence)
            .field("record_count", &self.record_count)
            .field("byte_len", &self.buffer.len())
            .field("capacity", &self.buffer.capacity())
            .finish()
    }
}

/// The header room at the start of a builder's buffer.
fn head_of(buffer: &mut [u8]) -> &mut [u8; BATCH_HEADER_BYTES] {
    match buffer.first_chunk_mut::<BATCH_HEADER_BYTES>() {
        Some(head) => head,
        None => unreachable!("the builder's buffer always holds room for the header"),
    }
}

/// A length the builder has already bounded by `BATCH_BYTES_MAX`, which fits a `u32`.
fn length_u32(len: usize) -> u32 {
    debug_assert!(len <= BATCH_BYTES_MAX);
    len as u32
}

/// Checks a message's parts against their limits and returns the size of its record.
fn record_bytes_of(message: &Message<'_>) -> Result<usize, BatchError> {
    let too_large = BatchError::TooLarge { bytes: usize::MAX, bytes_max: BATCH_BYTES_MAX };
    let mut bytes = RECORD_HEADER_BYTES;
    if let Some(key) = message.key {
        check_limit("key", key.len(), KEY_BYTES_MAX)?;
        bytes += 2 + key.len();
    }
    if let Some(value) = message.filter_value {
        check_limit("filter value", value.len(), FILTER_VALUE_BYTES_MAX)?;
        bytes += 1 + value.len();
    }
    check_limit("header count", message.headers.len(), HEADERS_PER_RECORD_MAX)?;
    for (key, value) in message.headers {
        check_limit("header key", key.len(), HEADER_KEY_BYTES_MAX)?;
        bytes = bytes
            .checked_add(1 + key.len() + 4)
            .and_then(|bytes| bytes.checked_add(value.len()))
            .ok_or(too_large.clone())?;
    }
    bytes.checked_add(message.payload.len()).ok_or(too_large)
}

fn check_limit(field: &'static str, len: usize, max: usize) -> Result<(), BatchError> {
    if len > max {
        return Err(BatchError::FieldTooLarge { field, len, max });
    }
    Ok(())
}
