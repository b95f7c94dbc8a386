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
//!   returns a typed [`BatchError`]. (The only assertions callers can trip are in
//!   [`patch_server_fields`], and only through caller bugs: a slice shorter than a header, or
//!   offsets past `u64::MAX`.)
//! * A [`Batch`] exists only for bytes that passed [`validate`]: the length matches, the CRC
//!   matches, every record is well formed, and the header's summary fields (maximum timestamp,
//!   filter attribute bit, Bloom bits) agree exactly with the records.
//! * [`BatchBuilder`] only ever produces bytes that [`validate`] accepts, and a failed push leaves
//!   it unchanged.

use std::fmt;
use std::iter::FusedIterator;

use crate::constants::{
    BATCH_BYTES_MAX, BATCH_RECORDS_MAX, FILTER_VALUE_BYTES_MAX, HEADERS_PER_RECORD_MAX, HEADER_KEY_BYTES_MAX,
    KEY_BYTES_MAX,
};
use crate::model::{now_us, Offset, TimestampUs};

use super::compression::compress_records;
use super::compression::sub_entry::check_sub_entry;
pub use super::compression::{inflate, Compression};

/// The four bytes every batch starts with.
pub const BATCH_MAGIC: [u8; 4] = *b"RBAT";

/// The batch format version this module writes (see the version log in `docs/format.md`).
/// Version 1 is still read, so segments written before version 2 open and serve as they are.
pub const BATCH_FORMAT_VERSION: u16 = 2;

/// The first batch format version: a 104-byte header, a 32-bit producer sequence, no epoch, no
/// compression.
pub const BATCH_FORMAT_VERSION_1: u16 = 1;

/// Size of the fixed batch header of the current version (2): the version-1 header plus the
/// 64-bit first and last producer sequences and 8 reserved bytes.
pub const BATCH_HEADER_BYTES: usize = 128;

/// Size of the version-1 header, which is also the part every version shares (every field
/// before the sequence extension sits at the same place in both).
pub const BATCH_HEADER_V1_BYTES: usize = 104;

/// Size of the fixed part of each record, before its variable-length parts.
pub const RECORD_HEADER_BYTES: usize = 20;

/// Size of the per-batch filter Bloom filter (256 bits).
pub const FILTER_BLOOM_BYTES: usize = 32;

/// The smallest well-formed batch of any version: a version-1 header and one record with nothing
/// but its fixed part.
pub const BATCH_BYTES_MIN: usize = BATCH_HEADER_V1_BYTES + RECORD_HEADER_BYTES;

/// The smallest compressed batch: a header and one byte of compressed records.
const COMPRESSED_BATCH_BYTES_MIN: usize = BATCH_HEADER_BYTES + 1;

/// Attribute bits 0-2: the compression codec of the records.
pub const ATTRIBUTE_CODEC_MASK: u16 = 0b0111;

/// Attribute bit 3: at least one record carries a filter value.
pub const ATTRIBUTE_HAS_FILTER_VALUES: u16 = 0b1000;

/// Attribute bit 4: at least one record carries a TTL header ([`TTL_HEADER_KEY`]).
pub const ATTRIBUTE_HAS_TTL: u16 = 0b1_0000;

/// The record header key of a message's time to live (ASCII decimal milliseconds); batches
/// holding one have [`ATTRIBUTE_HAS_TTL`] set, so the broker refuses them cheaply on topics
/// without TTLs.
pub const TTL_HEADER_KEY: &[u8] = b"ringbroker-ttl-ms";

/// Codec 0: the records are stored as they are.
pub const CODEC_NONE: u8 = 0;

/// Codec 1: the records section is one zstd frame (version 2 and later).
pub const CODEC_ZSTD: u8 = 1;

/// Codec 2: the records section is one LZ4 block, without a frame (version 2 and later); the
/// header's `records_bytes` is its decompressed size.
pub const CODEC_LZ4: u8 = 2;

/// Codec 3: the records section is one RabbitMQ sub-entry exactly as a RabbitMQ Streams client
/// published it (version 2 and later): the Osiris sub-batch entry header, then the client's
/// compressed bytes (gzip, snappy, LZ4 frame or zstd). The broker stores and delivers it as it
/// came; [`inflate`] turns it into ordinary records. Layout and rules:
/// [`super::compression::sub_entry`] and `docs/format.md`.
pub const CODEC_RABBITMQ: u8 = 3;

/// The zstd level producers compress at: level 3 is zstd's own default, a good ratio at several
/// hundred MB/s per core.
pub const ZSTD_LEVEL: i32 = 3;

/// The capacity [`BatchBuilder::new`] reserves up front.
pub const BUILDER_CAPACITY_DEFAULT_BYTES: usize = 64 * 1024;

/// Attribute bits 5-15 are reserved and must be zero.
const ATTRIBUTE_RESERVED_MASK: u16 =
    !(ATTRIBUTE_CODEC_MASK | ATTRIBUTE_HAS_FILTER_VALUES | ATTRIBUTE_HAS_TTL);

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
/// Version 1: reserved (zero). Version 2: `records_bytes`, the records section's uncompressed size.
const RESERVED_A_AT: usize = 36;
const RECORDS_BYTES_AT: usize = RESERVED_A_AT;
const FIRST_TIMESTAMP_AT: usize = 40;
const MAX_TIMESTAMP_AT: usize = 48;
const PRODUCER_ID_AT: usize = 56;
/// Version 1: the 32-bit sequence of record 0. Version 2: the producer epoch.
const PRODUCER_SEQUENCE_AT: usize = 64;
const PRODUCER_EPOCH_AT: usize = PRODUCER_SEQUENCE_AT;
const RESERVED_B_AT: usize = 68;
const FILTER_BLOOM_AT: usize = 72;
// Version 2's extension, after the version-1 header.
const FIRST_SEQUENCE_AT: usize = 104;
const LAST_SEQUENCE_AT: usize = 112;
const RESERVED_C_AT: usize = 120;
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
const _: () = assert!(FILTER_BLOOM_AT + FILTER_BLOOM_BYTES == BATCH_HEADER_V1_BYTES);
const _: () = assert!(BATCH_HEADER_V1_BYTES == FIRST_SEQUENCE_AT);
const _: () = assert!(FIRST_SEQUENCE_AT + 8 == LAST_SEQUENCE_AT && LAST_SEQUENCE_AT + 8 == RESERVED_C_AT);
const _: () = assert!(RESERVED_C_AT + 8 == BATCH_HEADER_BYTES);
const _: () = assert!(FIRST_SEQUENCE_AT % 8 == 0 && BATCH_HEADER_V1_BYTES % 8 == 0);
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
    /// A compression codec this build does not read (or that the batch's version does not have).
    UnsupportedCodec(u8),
    /// A compressed batch's records could not be inflated: corrupt or truncated compressed
    /// bytes, or more or fewer bytes than the header's `records_bytes`, or more than the
    /// reader's limit (a decompression bomb).
    Decompress(String),
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
                "unsupported batch format version {version} (this build reads 1 and {BATCH_FORMAT_VERSION})"
            ),
            Self::UnsupportedCodec(codec) => write!(f, "unsupported batch codec {codec}"),
            Self::Decompress(reason) => write!(f, "compressed batch refused: {reason}"),
            Self::ReservedBitsSet => f.write_str("reserved batch header bits are not zero"),
            Self::LengthOutOfRange(length) => {
                write!(f, "batch length {length} outside {BATCH_BYTES_MIN}..={BATCH_BYTES_MAX}")
            }
            Self::LengthMismatch { header, actual } => {
                write!(f, "batch header says {header} bytes but {actual} were given")
            }
            Self::CrcMismatch { stored, computed } => {
                write!(f, "batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")
            }
            Self::RecordCountOutOfRange(count) => {
                write!(f, "batch record count {count} outside 1..={BATCH_RECORDS_MAX}")
            }
            Self::OffsetOverflow { base_offset, record_count } => {
                write!(f, "batch offsets overflow: base offset {base_offset} + {record_count} records")
            }
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
///
/// Version-1 headers decode into the same struct: their 32-bit sequence becomes
/// `first_sequence`, `last_sequence` is `first_sequence + record_count - 1`, the epoch is 0 and
/// `records_bytes` is the records' size (version 1 has no compression).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Format version: 1 or [`BATCH_FORMAT_VERSION`].
    pub version: u16,
    /// Codec bits and the has-filter-values bit.
    pub attributes: u16,
    /// Total batch bytes, header and records (compressed, if the codec says so).
    pub length: u32,
    /// CRC32 (IEEE) over everything but itself and the server-assigned fields.
    pub crc32: u32,
    /// Offset of record 0 in its partition; assigned by the server, 0 from producers.
    pub base_offset: Offset,
    /// When the server appended the batch; assigned by the server, 0 from producers.
    pub append_timestamp_us: TimestampUs,
    /// Number of records, at least 1.
    pub record_count: u32,
    /// The size of the records section once uncompressed (the section's size when the codec is
    /// none).
    pub records_bytes: u32,
    /// The producer's create time of record 0.
    pub first_timestamp_us: TimestampUs,
    /// The latest create time over all records.
    pub max_timestamp_us: TimestampUs,
    /// The producer's id, 0 for an anonymous producer.
    pub producer_id: u64,
    /// The producer's epoch (0 for anonymous producers and version-1 batches).
    pub producer_epoch: u32,
    /// The producer's sequence of the batch's first record.
    pub first_sequence: u64,
    /// The producer's sequence of the batch's last record (sequences may leave gaps, so this is
    /// not always `first_sequence + record_count - 1`).
    pub last_sequence: u64,
    /// Bloom filter over the records' filter values.
    pub filter_bloom: [u8; FILTER_BLOOM_BYTES],
}

impl BatchHeader {
    /// Decodes and checks a batch header from the start of `bytes`.
    ///
    /// Checks the magic, version, attributes (codec and reserved bits), the length range, the
    /// record count range, the reserved fields, that the offsets fit a `u64`, that the sequences
    /// are ordered and that `records_bytes` fits. Does not check the CRC, nor that `bytes` holds
    /// `length` bytes: that is [`validate`]'s work.
    ///
    /// With fewer bytes than the version's header, the leading fields that are present are still
    /// checked, so a short prefix of a valid batch gives [`BatchError::Truncated`] while a short
    /// run of garbage (such as zeros) gives the error that names what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        check_leading_fields(bytes)?;
        let Some(prefix) = bytes.first_chunk::<BATCH_HEADER_V1_BYTES>() else {
            return Err(BatchError::Truncated { needed: BATCH_HEADER_V1_BYTES, available: bytes.len() });
        };
        let version = u16_at::<VERSION_AT>(prefix);
        let header_bytes = header_bytes_of(version);
        if bytes.len() < header_bytes {
            return Err(BatchError::Truncated { needed: header_bytes, available: bytes.len() });
        }
        let record_count = u32_at::<RECORD_COUNT_AT>(prefix);
        if record_count == 0 || record_count > BATCH_RECORDS_MAX {
            return Err(BatchError::RecordCountOutOfRange(record_count));
        }
        let base_offset = u64_at::<BASE_OFFSET_AT>(prefix);
        if base_offset.checked_add(u64::from(record_count)).is_none() {
            return Err(BatchError::OffsetOverflow { base_offset, record_count });
        }
        if u32_at::<RESERVED_B_AT>(prefix) != 0 {
            return Err(BatchError::ReservedBitsSet);
        }
        let length = u32_at::<LENGTH_AT>(prefix);
        let attributes = u16_at::<ATTRIBUTES_AT>(prefix);
        let (records_bytes, producer_epoch, first_sequence, last_sequence) =
            if version == BATCH_FORMAT_VERSION_1 {
                if u32_at::<RESERVED_A_AT>(prefix) != 0 {
                    return Err(BatchError::ReservedBitsSet);
                }
                let first = u64::from(u32_at::<PRODUCER_SEQUENCE_AT>(prefix));
                let records = length.saturating_sub(BATCH_HEADER_V1_BYTES as u32);
                (records, 0, first, first + u64::from(record_count) - 1)
            } else {
                let extension = &bytes[BATCH_HEADER_V1_BYTES..BATCH_HEADER_BYTES];
                let word = |at: usize| {
                    let start = at - BATCH_HEADER_V1_BYTES;
                    let mut out = [0u8; 8];
                    out.copy_from_slice(&extension[start..start + 8]);
                    u64::from_le_bytes(out)
                };
                if word(RESERVED_C_AT) != 0 {
                    return Err(BatchError::ReservedBitsSet);
                }
                let (first, last) = (word(FIRST_SEQUENCE_AT), word(LAST_SEQUENCE_AT));
                if first > last {
                    return Err(BatchError::Invalid("first_sequence is above last_sequence"));
                }
                let records = u32_at::<RECORDS_BYTES_AT>(prefix);
                check_records_bytes(attributes, length, records, record_count)?;
                (records, u32_at::<PRODUCER_EPOCH_AT>(prefix), first, last)
            };
        Ok(BatchHeader {
            version,
            attributes,
            length,
            crc32: u32_at::<CRC_AT>(prefix),
            base_offset,
            append_timestamp_us: u64_at::<APPEND_TIMESTAMP_AT>(prefix),
            record_count,
            records_bytes,
            first_timestamp_us: u64_at::<FIRST_TIMESTAMP_AT>(prefix),
            max_timestamp_us: u64_at::<MAX_TIMESTAMP_AT>(prefix),
            producer_id: u64_at::<PRODUCER_ID_AT>(prefix),
            producer_epoch,
            first_sequence,
            last_sequence,
            filter_bloom: array_at::<FILTER_BLOOM_AT, FILTER_BLOOM_BYTES>(prefix),
        })
    }

    /// Encodes the header verbatim for its version (magic first, reserved fields zero, every
    /// other field as it is, the CRC included). The first [`header_bytes`](Self::header_bytes)
    /// bytes are the header; for a version-1 header the rest is zero. `decode(&h.encode())`
    /// returns `h` for any header `decode` accepts.
    pub fn encode(&self) -> [u8; BATCH_HEADER_BYTES] {
        let mut out = [0u8; BATCH_HEADER_BYTES];
        let prefix = head_of(&mut out);
        put::<MAGIC_AT, 4>(prefix, BATCH_MAGIC);
        put::<VERSION_AT, 2>(prefix, self.version.to_le_bytes());
        put::<ATTRIBUTES_AT, 2>(prefix, self.attributes.to_le_bytes());
        put::<LENGTH_AT, 4>(prefix, self.length.to_le_bytes());
        put::<CRC_AT, 4>(prefix, self.crc32.to_le_bytes());
        put::<BASE_OFFSET_AT, 8>(prefix, self.base_offset.to_le_bytes());
        put::<APPEND_TIMESTAMP_AT, 8>(prefix, self.append_timestamp_us.to_le_bytes());
        put::<RECORD_COUNT_AT, 4>(prefix, self.record_count.to_le_bytes());
        put::<FIRST_TIMESTAMP_AT, 8>(prefix, self.first_timestamp_us.to_le_bytes());
        put::<MAX_TIMESTAMP_AT, 8>(prefix, self.max_timestamp_us.to_le_bytes());
        put::<PRODUCER_ID_AT, 8>(prefix, self.producer_id.to_le_bytes());
        put::<FILTER_BLOOM_AT, FILTER_BLOOM_BYTES>(prefix, self.filter_bloom);
        if self.version == BATCH_FORMAT_VERSION_1 {
            put::<PRODUCER_SEQUENCE_AT, 4>(prefix, (self.first_sequence as u32).to_le_bytes());
        } else {
            put::<RECORDS_BYTES_AT, 4>(prefix, self.records_bytes.to_le_bytes());
            put::<PRODUCER_EPOCH_AT, 4>(prefix, self.producer_epoch.to_le_bytes());
            out[FIRST_SEQUENCE_AT..FIRST_SEQUENCE_AT + 8].copy_from_slice(&self.first_sequence.to_le_bytes());
            out[LAST_SEQUENCE_AT..LAST_SEQUENCE_AT + 8].copy_from_slice(&self.last_sequence.to_le_bytes());
        }
        out
    }

    /// Size of this header: 104 bytes for version 1, [`BATCH_HEADER_BYTES`] for version 2.
    pub fn header_bytes(&self) -> usize {
        header_bytes_of(self.version)
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

    /// The codec the records are stored with.
    pub fn codec(&self) -> u8 {
        (self.attributes & ATTRIBUTE_CODEC_MASK) as u8
    }

    /// Whether the records section is compressed (readers must [`inflate`] the batch first).
    pub fn is_compressed(&self) -> bool {
        self.codec() != CODEC_NONE
    }

    /// Whether at least one record carries a filter value.
    pub fn has_filter_values(&self) -> bool {
        self.attributes & ATTRIBUTE_HAS_FILTER_VALUES != 0
    }

    /// Whether at least one record carries a TTL header.
    pub fn has_ttl(&self) -> bool {
        self.attributes & ATTRIBUTE_HAS_TTL != 0
    }

    /// Whether some record may carry the filter value `value`. `false` is definite (no record
    /// carries it, and for a validated batch never wrong); `true` may be a false positive.
    pub fn might_contain_filter(&self, value: &[u8]) -> bool {
        self.has_filter_values() && bloom_contains(&self.filter_bloom, value)
    }
}

/// The header size of a format version (`check_leading_fields` has accepted the version).
fn header_bytes_of(version: u16) -> usize {
    if version == BATCH_FORMAT_VERSION_1 {
        BATCH_HEADER_V1_BYTES
    } else {
        BATCH_HEADER_BYTES
    }
}

/// Checks a version-2 header's `records_bytes` against its codec and length: equal to the
/// records' size when uncompressed; when compressed, room for every record's fixed part and no
/// more than a whole batch may hold (the bound a reader inflates to).
fn check_records_bytes(
    attributes: u16,
    length: u32,
    records_bytes: u32,
    record_count: u32,
) -> Result<(), BatchError> {
    let codec = (attributes & ATTRIBUTE_CODEC_MASK) as u8;
    if codec == CODEC_NONE {
        if records_bytes as usize != (length as usize).saturating_sub(BATCH_HEADER_BYTES) {
            return Err(BatchError::Invalid("records_bytes differs from the records' size"));
        }
        return Ok(());
    }
    let floor = u64::from(record_count) * RECORD_HEADER_BYTES as u64;
    if u64::from(records_bytes) < floor || records_bytes as usize > BATCH_BYTES_MAX - BATCH_HEADER_BYTES {
        return Err(BatchError::Invalid("records_bytes is out of range for the record count"));
    }
    Ok(())
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
    let Some(version) = read_le(bytes, VERSION_AT).map(u16::from_le_bytes) else {
        return Ok(());
    };
    if version != BATCH_FORMAT_VERSION && version != BATCH_FORMAT_VERSION_1 {
        return Err(BatchError::UnsupportedVersion(version));
    }
    let mut length_min = header_bytes_of(version) + RECORD_HEADER_BYTES;
    if let Some(attributes) = read_le(bytes, ATTRIBUTES_AT).map(u16::from_le_bytes) {
        let codec = (attributes & ATTRIBUTE_CODEC_MASK) as u8;
        let known =
            codec == CODEC_NONE || (version >= 2 && matches!(codec, CODEC_ZSTD | CODEC_LZ4 | CODEC_RABBITMQ));
        if !known {
            return Err(BatchError::UnsupportedCodec(codec));
        }
        if attributes & ATTRIBUTE_RESERVED_MASK != 0 {
            return Err(BatchError::ReservedBitsSet);
        }
        if codec != CODEC_NONE {
            length_min = COMPRESSED_BATCH_BYTES_MIN;
        }
    }
    if let Some(length) = read_le(bytes, LENGTH_AT).map(u32::from_le_bytes) {
        if !(length_min..=BATCH_BYTES_MAX).contains(&(length as usize)) {
            return Err(BatchError::LengthOutOfRange(length));
        }
    }
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

/// A view of a batch that already passed [`validate`] in this process (the broker's own
/// appends): the header and length are checked again, the CRC and the records are not (the
/// record iterator still bounds-checks every record, so bytes that were never validated give
/// garbage records, never a panic).
pub fn validated_view(bytes: &[u8]) -> Result<Batch<'_>, BatchError> {
    let header = BatchHeader::decode(bytes)?;
    if bytes.len() != header.length as usize {
        return Err(BatchError::LengthMismatch { header: header.length, actual: bytes.len() });
    }
    Ok(Batch { header, bytes })
}

/// Checks that `bytes` is exactly one whole, well-formed batch and returns a view of it.
///
/// A compressed batch is checked as far as the broker can without inflating it: the header, the
/// length and the CRC (which covers the compressed bytes), and for a RabbitMQ sub-entry
/// ([`CODEC_RABBITMQ`]) its entry header against the batch header. Its records, and the header's
/// summary fields against them, are checked by [`inflate`], on the consumer.
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
    if header.codec() == CODEC_RABBITMQ {
        check_sub_entry(&header, bytes)?;
    }
    if header.is_compressed() {
        return Ok(Batch { header, bytes });
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
    if summary.has_ttl != header.has_ttl() {
        return Err(BatchError::Invalid("the TTL attribute bit disagrees with the records"));
    }
    Ok(Batch { header, bytes })
}

/// What [`validate`] learns from the records to check the header against.
struct RecordsSummary {
    max_timestamp_us: TimestampUs,
    has_filter_values: bool,
    filter_bloom: [u8; FILTER_BLOOM_BYTES],
    has_ttl: bool,
}

/// Parses every record of a batch whose header and length are already checked.
fn walk_records(bytes: &[u8], header: &BatchHeader) -> Result<RecordsSummary, BatchError> {
    let mut summary = RecordsSummary {
        max_timestamp_us: header.first_timestamp_us,
        has_filter_values: false,
        filter_bloom: [0; FILTER_BLOOM_BYTES],
        has_ttl: false,
    };
    let mut at = header.header_bytes();
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
        if record.header_count > 0 && !summary.has_ttl {
            let mut headers = HeaderIter {
                reader: Reader { bytes: record.headers, at: 0 },
                remaining: record.header_count,
            };
            summary.has_ttl = headers.any(|(key, _)| key == TTL_HEADER_KEY);
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
pub fn patch_server_fields(bytes: &mut [u8], base_offset: Offset, append_timestamp_us: TimestampUs) {
    let len = bytes.len();
    let Some(header) = bytes.first_chunk_mut::<BATCH_HEADER_V1_BYTES>() else {
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
#[derive(Clone, Copy, PartialEq, Eq)]
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

    /// Whether the records are compressed: then [`records`](Self::records) is empty, and a
    /// reader [`inflate`]s the batch to read them.
    pub fn is_compressed(&self) -> bool {
        self.header.is_compressed()
    }

    /// The records, in offset order (none for a compressed batch: see [`inflate`]).
    pub fn records(&self) -> RecordIter<'a> {
        RecordIter {
            bytes: self.bytes,
            at: self.header.header_bytes(),
            index: 0,
            record_count: if self.is_compressed() { 0 } else { self.header.record_count },
            base_offset: self.header.base_offset,
            first_timestamp_us: self.header.first_timestamp_us,
        }
    }
}

impl fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch").field("header", &self.header).field("bytes", &self.bytes.len()).finish()
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
        let array = read_le(self.bytes, self.at).ok_or(reason)?;
        self.at += N;
        Ok(array)
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

/// The `N` bytes at `at`, if all are there.
fn read_le<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// Reads `N` bytes at the constant offset `AT` of a header; out-of-range offsets fail to compile.
fn array_at<const AT: usize, const N: usize>(header: &[u8; BATCH_HEADER_V1_BYTES]) -> [u8; N] {
    const { assert!(AT + N <= BATCH_HEADER_V1_BYTES) };
    let mut out = [0u8; N];
    out.copy_from_slice(&header[AT..AT + N]);
    out
}

fn u16_at<const AT: usize>(header: &[u8; BATCH_HEADER_V1_BYTES]) -> u16 {
    u16::from_le_bytes(array_at::<AT, 2>(header))
}

fn u32_at<const AT: usize>(header: &[u8; BATCH_HEADER_V1_BYTES]) -> u32 {
    u32::from_le_bytes(array_at::<AT, 4>(header))
}

fn u64_at<const AT: usize>(header: &[u8; BATCH_HEADER_V1_BYTES]) -> u64 {
    u64::from_le_bytes(array_at::<AT, 8>(header))
}

/// Writes `N` bytes at the constant offset `AT` of a header; out-of-range offsets fail to compile.
fn put<const AT: usize, const N: usize>(header: &mut [u8; BATCH_HEADER_V1_BYTES], value: [u8; N]) {
    const { assert!(AT + N <= BATCH_HEADER_V1_BYTES) };
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

/// The Bloom filter of a batch whose only filter value is `value`: the bits every batch holding
/// `value` has set (for precomputed matching, see [`super::filter`]).
pub fn bloom_of(value: &[u8]) -> [u8; FILTER_BLOOM_BYTES] {
    let mut bloom = [0; FILTER_BLOOM_BYTES];
    bloom_insert(&mut bloom, value);
    bloom
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
/// let next_sequence = builder.next_sequence();
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
    /// The compressed batch of the last finish, when the builder compresses.
    compressed: Vec<u8>,
    compression: Compression,
    producer_id: u64,
    producer_epoch: u32,
    first_sequence: u64,
    /// Set by [`set_last_sequence`](Self::set_last_sequence); else the last record's
    /// sequence is `first_sequence + record_count - 1`.
    last_sequence: Option<u64>,
    record_count: u32,
    first_timestamp_us: TimestampUs,
    max_timestamp_us: TimestampUs,
    filter_bloom: [u8; FILTER_BLOOM_BYTES],
    has_filter_values: bool,
    has_ttl: bool,
}

impl BatchBuilder {
    /// An empty builder for `producer_id` (0 = anonymous) whose first record has sequence number
    /// `first_sequence`, reserving [`BUILDER_CAPACITY_DEFAULT_BYTES`].
    pub fn new(producer_id: u64, first_sequence: u64) -> Self {
        Self::with_capacity(producer_id, first_sequence, BUILDER_CAPACITY_DEFAULT_BYTES)
    }

    /// Like [`new`](Self::new), reserving `capacity_bytes` (clamped to
    /// `BATCH_BYTES_MIN..=BATCH_BYTES_MAX`) for the whole batch, header included.
    pub fn with_capacity(producer_id: u64, first_sequence: u64, capacity_bytes: usize) -> Self {
        let mut buffer = Vec::with_capacity(capacity_bytes.clamp(BATCH_BYTES_MIN, BATCH_BYTES_MAX));
        buffer.resize(BATCH_HEADER_BYTES, 0);
        BatchBuilder {
            buffer,
            compressed: Vec::new(),
            compression: Compression::None,
            producer_id,
            producer_epoch: 0,
            first_sequence,
            last_sequence: None,
            record_count: 0,
            first_timestamp_us: 0,
            max_timestamp_us: 0,
            filter_bloom: [0; FILTER_BLOOM_BYTES],
            has_filter_values: false,
            has_ttl: false,
        }
    }

    /// Compresses the records of every batch finished from now on with `compression`. A batch
    /// whose records do not shrink is stored uncompressed.
    pub fn set_compression(&mut self, compression: Compression) {
        self.compression = compression;
    }

    /// The codec batches are compressed with.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// The producer id and epoch written into the header (a named producer's, from its
    /// declaration).
    pub fn set_producer(&mut self, producer_id: u64, producer_epoch: u32) {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
    }

    /// Sets the sequence of the batch's last record explicitly (at least the first record's):
    /// sequences may leave gaps, as RabbitMQ publishing ids do, and several records may share one
    /// (the messages of a RabbitMQ sub-entry share its publishing id), so it may be below
    /// `first_sequence + record_count - 1`.
    pub fn set_last_sequence(&mut self, last_sequence: u64) {
        self.last_sequence = Some(last_sequence);
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
        if message.headers.iter().any(|(key, _)| *key == TTL_HEADER_KEY) {
            self.has_ttl = true;
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

    /// The producer epoch written into the header.
    pub fn producer_epoch(&self) -> u32 {
        self.producer_epoch
    }

    /// The producer sequence number of this batch's first record.
    pub fn first_sequence(&self) -> u64 {
        self.first_sequence
    }

    /// The producer sequence number of this batch's last record: the one
    /// [`set_last_sequence`](Self::set_last_sequence) gave (never below the first's), else
    /// `first_sequence + record_count - 1` (the first's when empty).
    pub fn last_sequence(&self) -> u64 {
        let dense = self.first_sequence.wrapping_add(u64::from(self.record_count.max(1) - 1));
        self.last_sequence.map_or(dense, |last| last.max(self.first_sequence))
    }

    /// The sequence number the next batch starts at: this one's last plus one.
    pub fn next_sequence(&self) -> u64 {
        self.last_sequence().wrapping_add(1)
    }

    /// Fills in the header (length, counts, timestamps, producer, Bloom bits, CRC), compresses
    /// the records when a codec is set, and returns the finished batch, handing over the buffer.
    /// [`BatchError::Empty`] without records.
    pub fn finish(mut self) -> Result<Vec<u8>, BatchError> {
        self.finish_in_place()?;
        if self.compressed.is_empty() {
            Ok(self.buffer)
        } else {
            Ok(self.compressed)
        }
    }

    /// Fills in the header and lends out the finished batch, keeping the buffer for
    /// [`reset`](Self::reset). More pushes after this are allowed; finishing again rewrites the
    /// header to cover them. [`BatchError::Empty`] without records.
    pub fn finish_in_place(&mut self) -> Result<&[u8], BatchError> {
        if self.record_count == 0 {
            return Err(BatchError::Empty);
        }
        let length = u32::try_from(self.buffer.len())
            .map_err(|_| BatchError::TooLarge { bytes: self.buffer.len(), bytes_max: BATCH_BYTES_MAX })?;
        let mut header = BatchHeader {
            version: BATCH_FORMAT_VERSION,
            attributes: if self.has_filter_values { ATTRIBUTE_HAS_FILTER_VALUES } else { 0 }
                | if self.has_ttl { ATTRIBUTE_HAS_TTL } else { 0 },
            length,
            crc32: 0,
            base_offset: 0,
            append_timestamp_us: 0,
            record_count: self.record_count,
            records_bytes: length - BATCH_HEADER_BYTES as u32,
            first_timestamp_us: self.first_timestamp_us,
            max_timestamp_us: self.max_timestamp_us,
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            first_sequence: self.first_sequence,
            last_sequence: self.last_sequence(),
            filter_bloom: self.filter_bloom,
        };
        self.compressed.clear();
        if let Some(codec) = self.compression.codec() {
            compress_records(&self.buffer[BATCH_HEADER_BYTES..], codec, &mut self.compressed);
            let compressed_length = BATCH_HEADER_BYTES + self.compressed.len();
            if compressed_length < self.buffer.len() {
                header.attributes |= u16::from(codec);
                header.length = compressed_length as u32;
                let mut batch = Vec::with_capacity(compressed_length);
                batch.extend_from_slice(&header.encode());
                batch.extend_from_slice(&self.compressed);
                header.crc32 = crc32_of(&batch);
                put::<CRC_AT, 4>(head_of(&mut batch), header.crc32.to_le_bytes());
                debug_assert_eq!(validate(&batch).map(|batch| *batch.header()), Ok(header));
                self.compressed = batch;
                return Ok(&self.compressed);
            }
            self.compressed.clear();
        }
        self.buffer[..BATCH_HEADER_BYTES].copy_from_slice(&header.encode());
        header.crc32 = crc32_of(&self.buffer);
        put::<CRC_AT, 4>(head_of(&mut self.buffer), header.crc32.to_le_bytes());
        debug_assert_eq!(validate(&self.buffer).map(|batch| *batch.header()), Ok(header));
        Ok(&self.buffer)
    }

    /// Empties the builder for the next batch, whose first record will have sequence number
    /// `first_sequence` (usually [`next_sequence`](Self::next_sequence)). Keeps the buffers'
    /// capacity, the producer and the compression.
    pub fn reset(&mut self, first_sequence: u64) {
        self.buffer.clear();
        self.buffer.resize(BATCH_HEADER_BYTES, 0);
        self.compressed.clear();
        self.first_sequence = first_sequence;
        self.last_sequence = None;
        self.record_count = 0;
        self.first_timestamp_us = 0;
        self.max_timestamp_us = 0;
        self.filter_bloom = [0; FILTER_BLOOM_BYTES];
        self.has_filter_values = false;
        self.has_ttl = false;
    }

    /// The timestamp a message gets and its delta from the first record's.
    fn timestamp_of(&self, requested_us: Option<TimestampUs>) -> Result<(TimestampUs, u32), BatchError> {
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
            .field("producer_epoch", &self.producer_epoch)
            .field("first_sequence", &self.first_sequence)
            .field("compression", &self.compression)
            .field("record_count", &self.record_count)
            .field("byte_len", &self.buffer.len())
            .field("capacity", &self.buffer.capacity())
            .finish()
    }
}

/// The fields every version shares, at the start of a header-sized buffer.
fn head_of(buffer: &mut [u8]) -> &mut [u8; BATCH_HEADER_V1_BYTES] {
    match buffer.first_chunk_mut::<BATCH_HEADER_V1_BYTES>() {
        Some(head) => head,
        None => unreachable!("a header buffer always holds the version-1 prefix"),
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

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST_US: TimestampUs = 1_700_000_000_000_000;

    /// Recomputes and stores the CRC, so a test reaches the checks behind it.
    fn fix_crc(bytes: &mut [u8]) {
        let crc = crc32_of(bytes);
        if let Some(field) = bytes.get_mut(CRC_AT..CRC_AT + 4) {
            field.copy_from_slice(&crc.to_le_bytes());
        }
    }

    /// Writes `value` at `at`, fixes the CRC and validates.
    fn corrupt(bytes: &[u8], at: usize, value: &[u8]) -> Result<(), BatchError> {
        let mut bytes = bytes.to_vec();
        bytes[at..at + value.len()].copy_from_slice(value);
        fix_crc(&mut bytes);
        validate(&bytes).map(|_| ())
    }

    fn is_malformed(result: Result<(), BatchError>) -> bool {
        matches!(result, Err(BatchError::MalformedRecord { index: 0, .. }))
    }

    fn malformed_reason(result: Result<(), BatchError>) -> &'static str {
        match result {
            Err(BatchError::MalformedRecord { reason, .. }) => reason,
            other => panic!("expected MalformedRecord, got {other:?}"),
        }
    }

    const TRACE: [u8; 300] = [0xab; 300];
    const HEADERS: &[(&[u8], &[u8])] = &[(b"content-type", b"text/plain"), (b"", b""), (b"trace", &TRACE)];

    fn sample_messages() -> Vec<Message<'static>> {
        vec![
            Message {
                key: Some(b"user-1"),
                filter_value: Some(b"eu"),
                headers: HEADERS,
                payload: b"hello",
                timestamp_us: Some(FIRST_US),
            },
            Message { timestamp_us: Some(FIRST_US + 5), ..Message::payload(b"") },
            Message {
                key: Some(b""),
                filter_value: Some(b""),
                timestamp_us: Some(FIRST_US + 3),
                ..Message::payload(&[7u8; 1000])
            },
            Message {
                filter_value: Some(b"us"),
                headers: &HEADERS[..1],
                timestamp_us: Some(FIRST_US + 1),
                ..Message::payload(b"x")
            },
        ]
    }

    fn build(producer_id: u64, sequence: u64, messages: &[Message<'_>]) -> Vec<u8> {
        let mut builder = BatchBuilder::new(producer_id, sequence);
        for message in messages {
            builder.push(message).unwrap();
        }
        builder.finish().unwrap()
    }

    fn sample_batch() -> Vec<u8> {
        build(42, 1000, &sample_messages())
    }

    /// One record: key "abc", header ("h", "val"), payload "payload". The record starts at 128:
    /// length 128, offset delta 132, timestamp delta 136, flags 140, reserved 141, header count
    /// 142, payload length 144, key length 148, key 150, header key length 153, header key 154,
    /// header value length 155, header value 159, payload 162..169.
    fn one_record_batch() -> Vec<u8> {
        let headers: &[(&[u8], &[u8])] = &[(b"h", b"val")];
        let message = Message {
            key: Some(b"abc"),
            headers,
            timestamp_us: Some(FIRST_US),
            ..Message::payload(b"payload")
        };
        let bytes = build(0, 0, &[message]);
        assert_eq!(bytes.len(), 169);
        bytes
    }

    fn inside(outer: &[u8], inner: &[u8]) -> bool {
        let outer_range = outer.as_ptr_range();
        let inner_range = inner.as_ptr_range();
        outer_range.start <= inner_range.start && inner_range.end <= outer_range.end
    }

    /// Everything a validated batch promises, checked through the public API.
    fn assert_consistent(batch: &Batch<'_>) {
        let header = batch.header();
        let bytes = batch.as_bytes();
        assert_eq!(bytes.len(), header.length as usize);
        assert_eq!(crc32_of(bytes), header.crc32);
        assert_eq!(BatchHeader::decode(bytes).as_ref(), Ok(header));
        if header.is_compressed() {
            // Only the header and CRC are checked before inflating; inflating never panics.
            assert_eq!(batch.records().count(), 0);
            if let Ok(plain) = inflate(bytes, 1 << 20) {
                assert_consistent(&validate(&plain).unwrap());
            }
            return;
        }
        let mut total_bytes = header.header_bytes();
        let mut count = 0u32;
        let mut max_timestamp_us = 0;
        let records = batch.records();
        assert_eq!(records.size_hint(), (header.record_count as usize, Some(header.record_count as usize)));
        for (index, record) in records.enumerate() {
            assert_eq!(record.offset, header.base_offset + index as u64);
            assert!(record.timestamp_us >= header.first_timestamp_us);
            assert!(record.timestamp_us <= header.max_timestamp_us);
            if index == 0 {
                assert_eq!(record.timestamp_us, header.first_timestamp_us);
            }
            max_timestamp_us = max_timestamp_us.max(record.timestamp_us);
            let mut size = RECORD_HEADER_BYTES
                + record.key.map_or(0, |key| 2 + key.len())
                + record.filter_value.map_or(0, |value| 1 + value.len())
                + record.payload.len();
            let mut header_count = 0;
            for (key, value) in record.headers() {
                assert!(inside(bytes, key) && inside(bytes, value));
                assert!(key.len() <= HEADER_KEY_BYTES_MAX);
                size += 1 + key.len() + 4 + value.len();
                header_count += 1;
            }
            assert_eq!(header_count, record.header_count());
            assert!(header_count <= HEADERS_PER_RECORD_MAX);
            assert!(inside(bytes, record.payload));
            if let Some(key) = record.key {
                assert!(inside(bytes, key) && key.len() <= KEY_BYTES_MAX);
            }
            if let Some(value) = record.filter_value {
                assert!(inside(bytes, value));
                assert!(header.might_contain_filter(value), "bloom false negative");
            }
            total_bytes += size;
            count += 1;
        }
        assert_eq!(count, header.record_count);
        assert_eq!(total_bytes, bytes.len());
        assert_eq!(max_timestamp_us, header.max_timestamp_us);
    }

    #[test]
    fn round_trip_keeps_every_part() {
        let messages = sample_messages();
        let bytes = build(42, 1000, &messages);
        let batch = validate(&bytes).unwrap();
        assert_consistent(&batch);
        let header = batch.header();
        assert_eq!(header.version, BATCH_FORMAT_VERSION);
        assert_eq!(header.attributes, ATTRIBUTE_HAS_FILTER_VALUES);
        assert_eq!(header.codec(), CODEC_NONE);
        assert_eq!(header.length as usize, bytes.len());
        assert_eq!(header.base_offset, 0);
        assert_eq!(header.append_timestamp_us, 0);
        assert_eq!(header.record_count, 4);
        assert_eq!(header.first_timestamp_us, FIRST_US);
        assert_eq!(header.max_timestamp_us, FIRST_US + 5);
        assert_eq!(header.producer_id, 42);
        assert_eq!(
            (header.first_sequence, header.last_sequence),
            (1000, 1000 + u64::from(header.record_count) - 1)
        );
        assert_eq!((header.last_offset(), header.next_offset()), (3, 4));

        let records: Vec<Record<'_>> = batch.records().collect();
        assert_eq!(records.len(), messages.len());
        for (index, (record, message)) in records.iter().zip(&messages).enumerate() {
            assert_eq!(record.offset, index as u64);
            assert_eq!(Some(record.timestamp_us), message.timestamp_us);
            assert_eq!(record.key, message.key);
            assert_eq!(record.filter_value, message.filter_value);
            assert_eq!(record.payload, message.payload);
            assert!(record.headers().eq(message.headers.iter().copied()));
        }
        assert_eq!(records[1].payload, b"");
        assert_eq!(records[2].key, Some(&b""[..]));
    }

    #[test]
    fn payload_only_and_most_headers_round_trip() {
        let mut builder = BatchBuilder::with_capacity(0, 0, 0);
        builder.push_payload(b"").unwrap();
        builder.push_payload(b"second").unwrap();
        let keys: Vec<[u8; 1]> = (0..HEADERS_PER_RECORD_MAX as u8).map(|i| [i]).collect();
        let headers: Vec<(&[u8], &[u8])> = keys.iter().map(|key| (&key[..], &b"v"[..])).collect();
        builder.push(&Message { headers: &headers, ..Message::payload(b"3") }).unwrap();
        let bytes = builder.finish().unwrap();
        let batch = validate(&bytes).unwrap();
        assert_consistent(&batch);
        assert_eq!(batch.header().attributes, 0);
        assert!(!batch.header().might_contain_filter(b""));
        let records: Vec<_> = batch.records().collect();
        assert_eq!(records[0].payload, b"");
        assert_eq!((records[0].key, records[0].filter_value), (None, None));
        assert_eq!(records[1].payload, b"second");
        assert_eq!(records[2].header_count(), HEADERS_PER_RECORD_MAX);
        assert!(records[2].headers().eq(headers.iter().copied()));
        // Defaulted timestamps never run backwards from the first record.
        assert!(records.iter().all(|record| record.timestamp_us >= records[0].timestamp_us));
    }

    #[test]
    fn header_encode_decode_round_trip() {
        let bytes = sample_batch();
        let header = BatchHeader::decode(&bytes).unwrap();
        assert_eq!(header.encode(), bytes[..BATCH_HEADER_BYTES]);
        assert_eq!(BatchHeader::decode(&header.encode()), Ok(header));
        // decode needs only the header, not the records.
        assert_eq!(BatchHeader::decode(&bytes[..BATCH_HEADER_BYTES]), Ok(header));
    }

    #[test]
    fn patch_server_fields_keeps_crc_valid() {
        let mut bytes = sample_batch();
        let crc_before = BatchHeader::decode(&bytes).unwrap().crc32;
        patch_server_fields(&mut bytes, 1_000_000, 77);
        let batch = validate(&bytes).unwrap();
        assert_consistent(&batch);
        let header = batch.header();
        assert_eq!((header.base_offset, header.append_timestamp_us), (1_000_000, 77));
        assert_eq!((header.last_offset(), header.next_offset()), (1_000_003, 1_000_004));
        assert_eq!(header.crc32, crc_before);
        let offsets: Vec<Offset> = batch.records().map(|record| record.offset).collect();
        assert_eq!(offsets, [1_000_000, 1_000_001, 1_000_002, 1_000_003]);

        let last_base = u64::MAX - u64::from(header.record_count);
        patch_server_fields(&mut bytes, last_base, u64::MAX);
        let batch = validate(&bytes).unwrap();
        assert_eq!(batch.header().next_offset(), u64::MAX);
        assert_consistent(&batch);
    }

    #[test]
    #[should_panic(expected = "fewer than a batch header")]
    fn patch_server_fields_refuses_a_short_slice() {
        patch_server_fields(&mut [0u8; BATCH_HEADER_V1_BYTES - 1], 0, 0);
    }

    #[test]
    #[should_panic(expected = "overflows")]
    fn patch_server_fields_refuses_overflowing_offsets() {
        let mut bytes = sample_batch();
        patch_server_fields(&mut bytes, u64::MAX - 1, 0);
    }

    #[test]
    fn bloom_matches_the_documented_derivation() {
        // FNV-1a 64 reference values.
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        // h1 = 0x84222325, h2 = 0xcbf29ce5: bits 0x25, 0x25 + 0xe5, 0x25 + 2 * 0xe5 (mod 256).
        assert_eq!(bloom_bits(b"").collect::<Vec<_>>(), [37, 10, 239]);
        let mut bloom = [0u8; FILTER_BLOOM_BYTES];
        bloom_insert(&mut bloom, b"");
        let mut expected = [0u8; FILTER_BLOOM_BYTES];
        expected[37 / 8] |= 1 << (37 % 8);
        expected[10 / 8] |= 1 << (10 % 8);
        expected[239 / 8] |= 1 << (239 % 8);
        assert_eq!(bloom, expected);
    }

    #[test]
    fn bloom_has_no_false_negatives() {
        let values: Vec<String> = (0..300).map(|i| format!("tenant-{i}")).collect();
        let mut builder = BatchBuilder::new(1, 0);
        for value in &values {
            let message = Message { filter_value: Some(value.as_bytes()), ..Message::payload(b"") };
            builder.push(&message).unwrap();
        }
        let bytes = builder.finish().unwrap();
        let batch = validate(&bytes).unwrap();
        assert!(values.iter().all(|value| batch.header().might_contain_filter(value.as_bytes())));

        // With one value the filter is sparse: almost every other value is ruled out.
        let message = Message { filter_value: Some(b"eu-west"), ..Message::payload(b"") };
        let bytes = build(0, 0, &[message]);
        let header = *validate(&bytes).unwrap().header();
        assert!(header.might_contain_filter(b"eu-west"));
        let false_positives = values.iter().filter(|v| header.might_contain_filter(v.as_bytes()));
        assert!(false_positives.count() < 5);
    }

    #[test]
    fn batches_iterates_a_concatenation() {
        let first = sample_batch();
        let mut second = one_record_batch();
        patch_server_fields(&mut second, 4, 9);
        let third = build(0, 0, &[Message::payload(b"z")]);
        let stream = [first.as_slice(), &second, &third].concat();
        let mut iter = batches(&stream);
        let found: Vec<Batch<'_>> = iter.by_ref().map(Result::unwrap).collect();
        assert_eq!(found.len(), 3);
        assert_eq!(found[0].as_bytes(), first);
        assert_eq!(found[1].as_bytes(), second);
        assert_eq!(found[1].header().base_offset, 4);
        assert_eq!(found[2].as_bytes(), third);
        assert!(iter.remaining().is_empty());
        assert!(iter.next().is_none());
        assert!(batches(&[]).next().is_none());
    }

    #[test]
    fn batches_reports_an_incomplete_tail_as_truncated() {
        let first = sample_batch();
        let second = one_record_batch();
        for cut in [1, 50, BATCH_HEADER_V1_BYTES, BATCH_HEADER_BYTES, second.len() - 1] {
            let stream = [first.as_slice(), &second[..cut]].concat();
            let mut iter = batches(&stream);
            assert!(iter.next().unwrap().is_ok());
            let needed = match cut {
                _ if cut < BATCH_HEADER_V1_BYTES => BATCH_HEADER_V1_BYTES,
                _ if cut < BATCH_HEADER_BYTES => BATCH_HEADER_BYTES,
                _ => second.len(),
            };
            assert_eq!(
                iter.next(),
                Some(Err(BatchError::Truncated { needed, available: cut })),
                "cut at {cut}"
            );
            assert_eq!(iter.remaining(), &second[..cut]);
            assert!(iter.next().is_none());
        }
    }

    #[test]
    fn batches_stops_at_the_first_corrupt_batch() {
        let first = sample_batch();
        let mut second = one_record_batch();
        second[140] ^= 1;
        let stream = [first.as_slice(), &second, &first].concat();
        let mut iter = batches(&stream);
        assert!(iter.next().unwrap().is_ok());
        assert!(matches!(iter.next(), Some(Err(BatchError::CrcMismatch { .. }))));
        assert_eq!(iter.remaining().len(), second.len() + first.len());
        assert!(iter.next().is_none());

        // A zero-filled tail is corruption, not an incomplete batch.
        let zeros = [0u8; 4096];
        assert_eq!(batches(&zeros).next(), Some(Err(BatchError::BadMagic([0; 4]))));
        assert_eq!(batches(&zeros[..2]).next(), Some(Err(BatchError::BadMagic([0; 4]))));
    }

    #[test]
    fn every_truncation_point_is_rejected() {
        let bytes = sample_batch();
        for cut in 0..bytes.len() {
            let prefix = &bytes[..cut];
            let expected = if cut < BATCH_HEADER_V1_BYTES {
                BatchError::Truncated { needed: BATCH_HEADER_V1_BYTES, available: cut }
            } else if cut < BATCH_HEADER_BYTES {
                BatchError::Truncated { needed: BATCH_HEADER_BYTES, available: cut }
            } else {
                BatchError::LengthMismatch { header: bytes.len() as u32, actual: cut }
            };
            assert_eq!(validate(prefix).unwrap_err(), expected, "cut at {cut}");
            let mut iter = batches(prefix);
            if cut > 0 {
                assert!(matches!(iter.next(), Some(Err(BatchError::Truncated { .. }))));
            }
            assert!(iter.next().is_none());
        }
    }

    #[test]
    fn hostile_headers_are_rejected() {
        let bytes = sample_batch();
        let with = |at: usize, value: &[u8]| {
            let mut bytes = bytes.clone();
            bytes[at..at + value.len()].copy_from_slice(value);
            validate(&bytes).map(|_| ())
        };
        assert_eq!(with(MAGIC_AT, b"RBAX"), Err(BatchError::BadMagic(*b"RBAX")));
        assert_eq!(with(VERSION_AT, &3u16.to_le_bytes()), Err(BatchError::UnsupportedVersion(3)));
        assert_eq!(with(VERSION_AT, &0u16.to_le_bytes()), Err(BatchError::UnsupportedVersion(0)));
        assert_eq!(with(ATTRIBUTES_AT, &[0b1100, 0]), Err(BatchError::UnsupportedCodec(4)));
        assert_eq!(with(ATTRIBUTES_AT, &[0b1111, 0]), Err(BatchError::UnsupportedCodec(7)));
        assert_eq!(with(ATTRIBUTES_AT, &[0b10_1000, 0]), Err(BatchError::ReservedBitsSet));
        assert_eq!(with(ATTRIBUTES_AT, &[0b1000, 0x80]), Err(BatchError::ReservedBitsSet));
        assert_eq!(with(RESERVED_C_AT + 7, &[1]), Err(BatchError::ReservedBitsSet));
        assert_eq!(
            with(RECORDS_BYTES_AT, &[1]),
            Err(BatchError::Invalid("records_bytes differs from the records' size"))
        );
        assert_eq!(
            with(FIRST_SEQUENCE_AT, &u64::MAX.to_le_bytes()),
            Err(BatchError::Invalid("first_sequence is above last_sequence"))
        );
        assert_eq!(with(RESERVED_B_AT + 3, &[0x80]), Err(BatchError::ReservedBitsSet));
        for length in [0, 50, BATCH_BYTES_MIN as u32 - 1, BATCH_BYTES_MAX as u32 + 1, u32::MAX] {
            assert_eq!(with(LENGTH_AT, &length.to_le_bytes()), Err(BatchError::LengthOutOfRange(length)));
        }
        let longer = bytes.len() as u32 + 1;
        let mut claims_more = bytes.clone();
        claims_more[RECORDS_BYTES_AT..RECORDS_BYTES_AT + 4]
            .copy_from_slice(&(longer - BATCH_HEADER_BYTES as u32).to_le_bytes());
        claims_more[LENGTH_AT..CRC_AT].copy_from_slice(&longer.to_le_bytes());
        assert_eq!(
            validate(&claims_more).map(|_| ()),
            Err(BatchError::LengthMismatch { header: longer, actual: bytes.len() })
        );
        assert_eq!(
            with(LENGTH_AT, &longer.to_le_bytes()),
            Err(BatchError::Invalid("records_bytes differs from the records' size"))
        );
        let mut stream = bytes.clone();
        stream[LENGTH_AT..CRC_AT].copy_from_slice(&longer.to_le_bytes());
        stream[RECORDS_BYTES_AT..RECORDS_BYTES_AT + 4]
            .copy_from_slice(&(longer - BATCH_HEADER_BYTES as u32).to_le_bytes());
        assert!(matches!(batches(&stream).next(), Some(Err(BatchError::Truncated { .. }))));
        for count in [0, BATCH_RECORDS_MAX + 1, u32::MAX] {
            assert_eq!(
                with(RECORD_COUNT_AT, &count.to_le_bytes()),
                Err(BatchError::RecordCountOutOfRange(count))
            );
        }
        assert_eq!(
            with(BASE_OFFSET_AT, &(u64::MAX - 3).to_le_bytes()),
            Err(BatchError::OffsetOverflow { base_offset: u64::MAX - 3, record_count: 4 })
        );
        // More records claimed than present (CRC fixed so the walk is reached).
        assert!(matches!(
            corrupt(&bytes, RECORD_COUNT_AT, &5u32.to_le_bytes()),
            Err(BatchError::MalformedRecord { index: 4, .. })
        ));
        assert_eq!(
            corrupt(&bytes, RECORD_COUNT_AT, &3u32.to_le_bytes()),
            Err(BatchError::Invalid("record lengths do not add up to the batch length"))
        );
    }

    #[test]
    fn every_single_bit_flip_outside_the_server_fields_is_caught() {
        let bytes = one_record_batch();
        for at in 0..bytes.len() {
            for bit in 0..8 {
                let mut flipped = bytes.clone();
                flipped[at] ^= 1 << bit;
                let result = validate(&flipped);
                if (BASE_OFFSET_AT..CRC_RESUMES_AT).contains(&at) {
                    // Not covered by the CRC: the flip is a different, still valid base offset
                    // or append time.
                    assert_consistent(&result.unwrap());
                } else {
                    assert!(result.is_err(), "flip of bit {bit} at byte {at} accepted");
                }
            }
        }
        // Flips that only the CRC can see, one per region.
        let field_regions = [
            CRC_AT,
            FIRST_TIMESTAMP_AT,
            MAX_TIMESTAMP_AT,
            PRODUCER_ID_AT,
            PRODUCER_EPOCH_AT,
            FILTER_BLOOM_AT,
            LAST_SEQUENCE_AT,
            BATCH_HEADER_BYTES + TIMESTAMP_DELTA_AT,
            164,
        ];
        for at in field_regions {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x10;
            assert!(matches!(validate(&flipped), Err(BatchError::CrcMismatch { .. })), "byte {at}");
        }
    }

    #[test]
    fn hostile_records_are_rejected() {
        let bytes = one_record_batch();
        let record = BATCH_HEADER_BYTES;
        assert!(validate(&bytes).is_ok());
        assert_eq!(
            malformed_reason(corrupt(&bytes, record, &u32::MAX.to_le_bytes())),
            "record_length runs past the end of the batch"
        );
        assert_eq!(
            malformed_reason(corrupt(&bytes, record, &42u32.to_le_bytes())),
            "record_length runs past the end of the batch"
        );
        assert_eq!(
            malformed_reason(corrupt(&bytes, record, &19u32.to_le_bytes())),
            "record_length is smaller than the record header"
        );
        assert_eq!(
            malformed_reason(corrupt(&bytes, record, &40u32.to_le_bytes())),
            "payload runs past the record"
        );
        assert_eq!(
            malformed_reason(corrupt(&bytes, record + OFFSET_DELTA_AT, &[1])),
            "offset_delta is not the record's index in the batch"
        );
        assert_eq!(
            malformed_reason(corrupt(&bytes, record + TIMESTAMP_DELTA_AT, &[1])),
            "record 0 has a timestamp delta other than 0"
        );
        assert_eq!(
            malformed_reason(corrupt(&bytes, record + FLAGS_AT, &[0b101])),
            "undefined record flag bits are set"
        );
        assert!(is_malformed(corrupt(&bytes, record + FLAGS_AT, &[0])));
        assert_eq!(
            malformed_reason(corrupt(&bytes, record + RECORD_RESERVED_AT, &[1])),
            "reserved record byte is not zero"
        );
        assert_eq!(
            malformed_reason(corrupt(&bytes, record + HEADER_COUNT_AT, &65u16.to_le_bytes())),
            "header_count is above HEADERS_PER_RECORD_MAX"
        );
        assert!(is_malformed(corrupt(&bytes, record + HEADER_COUNT_AT, &2u16.to_le_bytes())));
        assert!(is_malformed(corrupt(&bytes, record + HEADER_COUNT_AT, &0u16.to_le_bytes())));
        assert_eq!(
            malformed_reason(corrupt(&bytes, record + PAYLOAD_LENGTH_AT, &u32::MAX.to_le_bytes())),
            "payload runs past the record"
        );
        assert_eq!(
            malformed_reason(corrupt(&bytes, record + PAYLOAD_LENGTH_AT, &6u32.to_le_bytes())),
            "record parts do not add up to record_length"
        );
        assert_eq!(
            malformed_reason(corrupt(&bytes, 148, &u16::MAX.to_le_bytes())),
            "key is longer than KEY_BYTES_MAX"
        );
        assert_eq!(malformed_reason(corrupt(&bytes, 148, &100u16.to_le_bytes())), "key runs past the record");
        assert_eq!(malformed_reason(corrupt(&bytes, 153, &[200])), "header key runs past the record");
        assert_eq!(
            malformed_reason(corrupt(&bytes, 155, &u32::MAX.to_le_bytes())),
            "header value runs past the record"
        );
    }

    #[test]
    fn header_summary_must_match_the_records() {
        let bytes = one_record_batch();
        let max_timestamp = (FIRST_US + 1).to_le_bytes();
        assert_eq!(
            corrupt(&bytes, MAX_TIMESTAMP_AT, &max_timestamp),
            Err(BatchError::Invalid("max_timestamp_us is not the latest record timestamp"))
        );
        assert_eq!(
            corrupt(&bytes, ATTRIBUTES_AT, &ATTRIBUTE_HAS_FILTER_VALUES.to_le_bytes()),
            Err(BatchError::Invalid("the filter attribute bit disagrees with the records"))
        );
        assert_eq!(
            corrupt(&bytes, FILTER_BLOOM_AT + 5, &[0x04]),
            Err(BatchError::Invalid("the filter bloom disagrees with the records"))
        );
        // Bytes after the last record.
        let mut longer = bytes.clone();
        longer.push(0);
        let length = longer.len() as u32;
        longer[LENGTH_AT..CRC_AT].copy_from_slice(&length.to_le_bytes());
        longer[RECORDS_BYTES_AT..RECORDS_BYTES_AT + 4]
            .copy_from_slice(&(length - BATCH_HEADER_BYTES as u32).to_le_bytes());
        fix_crc(&mut longer);
        assert_eq!(
            validate(&longer).map(|_| ()),
            Err(BatchError::Invalid("record lengths do not add up to the batch length"))
        );
        // A second record whose offset delta repeats the first's.
        let mut builder = BatchBuilder::new(0, 0);
        builder.push_payload(b"a").unwrap();
        builder.push_payload(b"b").unwrap();
        let two = builder.finish().unwrap();
        let second = BATCH_HEADER_BYTES + RECORD_HEADER_BYTES + 1;
        assert!(matches!(
            corrupt(&two, second + OFFSET_DELTA_AT, &[0]),
            Err(BatchError::MalformedRecord { index: 1, .. })
        ));
        // A record time past u64::MAX.
        let mut late = two.clone();
        late[second + TIMESTAMP_DELTA_AT] = 2;
        assert_eq!(
            corrupt(&late, FIRST_TIMESTAMP_AT, &(u64::MAX - 1).to_le_bytes()),
            Err(BatchError::MalformedRecord { index: 1, reason: "timestamp overflows u64" })
        );
    }

    #[test]
    fn builder_enforces_limits_and_stays_unchanged_on_error() {
        let mut builder = BatchBuilder::new(3, 10);
        builder.push(&Message { timestamp_us: Some(FIRST_US), ..Message::payload(b"a") }).unwrap();
        let before = builder.clone().finish().unwrap();
        let big_key = vec![0u8; KEY_BYTES_MAX + 1];
        let big_filter = vec![0u8; FILTER_VALUE_BYTES_MAX + 1];
        let big_header_key = vec![0u8; HEADER_KEY_BYTES_MAX + 1];
        let bad_header: &[(&[u8], &[u8])] = &[(&big_header_key, b"")];
        let many_headers = vec![(&b"k"[..], &b"v"[..]); HEADERS_PER_RECORD_MAX + 1];
        let huge_payload = vec![0u8; BATCH_BYTES_MAX];
        let rejected = [
            (Message { key: Some(&big_key), ..Message::payload(b"") }, "key"),
            (Message { filter_value: Some(&big_filter), ..Message::payload(b"") }, "filter value"),
            (Message { headers: bad_header, ..Message::payload(b"") }, "header key"),
            (Message { headers: &many_headers, ..Message::payload(b"") }, "header count"),
        ];
        for (message, field) in rejected {
            assert!(
                matches!(builder.push(&message), Err(BatchError::FieldTooLarge { field: f, .. }) if f == field)
            );
        }
        assert!(matches!(
            builder.push_payload(&huge_payload),
            Err(BatchError::TooLarge { bytes_max: BATCH_BYTES_MAX, .. })
        ));
        let early = Message { timestamp_us: Some(FIRST_US - 1), ..Message::payload(b"") };
        assert_eq!(
            builder.push(&early),
            Err(BatchError::TimestampOutOfRange { first_timestamp_us: FIRST_US, timestamp_us: FIRST_US - 1 })
        );
        let late_us = FIRST_US + u64::from(u32::MAX) + 1;
        let late = Message { timestamp_us: Some(late_us), ..Message::payload(b"") };
        assert!(matches!(builder.push(&late), Err(BatchError::TimestampOutOfRange { .. })));
        assert_eq!(builder.record_count(), 1);
        assert_eq!(builder.clone().finish().unwrap(), before);

        let latest_us = FIRST_US + u64::from(u32::MAX);
        builder.push(&Message { timestamp_us: Some(latest_us), ..Message::payload(b"") }).unwrap();
        let bytes = builder.finish().unwrap();
        let batch = validate(&bytes).unwrap();
        assert_eq!(batch.header().max_timestamp_us, latest_us);
        assert_consistent(&batch);
    }

    #[test]
    fn defaulted_timestamps_never_precede_the_first() {
        let future_us = now_us() + 3_600_000_000;
        let mut builder = BatchBuilder::new(0, 0);
        builder.push(&Message { timestamp_us: Some(future_us), ..Message::payload(b"") }).unwrap();
        builder.push_payload(b"now").unwrap();
        let bytes = builder.finish().unwrap();
        let batch = validate(&bytes).unwrap();
        assert!(batch.records().all(|record| record.timestamp_us == future_us));
    }

    #[test]
    fn builder_fills_up_to_the_byte_limit() {
        let payload = [0x5a; 1024];
        let mut builder = BatchBuilder::with_capacity(0, 0, BATCH_BYTES_MAX);
        let error = loop {
            if let Err(error) = builder.push_payload(&payload) {
                break error;
            }
        };
        assert!(matches!(error, BatchError::TooLarge { .. }));
        let full_len = builder.byte_len();
        assert!(full_len <= BATCH_BYTES_MAX);
        assert!(full_len + RECORD_HEADER_BYTES + payload.len() > BATCH_BYTES_MAX);
        let bytes = builder.finish().unwrap();
        assert_eq!(bytes.len(), full_len);
        assert_consistent(&validate(&bytes).unwrap());
    }

    #[test]
    fn builder_can_be_reused() {
        let mut builder = BatchBuilder::new(9, 100);
        assert!(builder.is_empty());
        assert_eq!(builder.byte_len(), BATCH_HEADER_BYTES);
        assert_eq!(builder.finish_in_place(), Err(BatchError::Empty));
        builder.push_payload(b"one").unwrap();
        let first = builder.finish_in_place().unwrap().to_vec();
        assert_eq!(validate(&first).unwrap().header().record_count, 1);
        // More pushes after finishing are covered by the next finish.
        builder.push_payload(b"two").unwrap();
        let both = builder.finish_in_place().unwrap().to_vec();
        assert_eq!(validate(&both).unwrap().header().record_count, 2);
        assert_eq!(builder.next_sequence(), 102);

        let capacity = builder.buffer.capacity();
        builder.reset(builder.next_sequence());
        assert!(builder.is_empty());
        assert_eq!(builder.buffer.capacity(), capacity);
        assert_eq!(builder.first_sequence(), 102);
        builder.push(&Message { filter_value: Some(b"f"), ..Message::payload(b"three") }).unwrap();
        let third = builder.finish_in_place().unwrap();
        let header = *validate(third).unwrap().header();
        assert_eq!((header.producer_id, header.first_sequence, header.record_count), (9, 102, 1));
        assert!(header.has_filter_values());
        builder.reset(0);
        builder.push_payload(b"four").unwrap();
        let header = *validate(builder.finish_in_place().unwrap()).unwrap().header();
        assert_eq!(header.filter_bloom, [0; FILTER_BLOOM_BYTES]);
        assert_eq!(header.attributes, 0);
        assert_eq!(BatchBuilder::new(0, 0).finish(), Err(BatchError::Empty));
    }

    /// Version 1 bytes as the format document draws them. If this test fails, the format
    /// changed: bump the version and keep reading the old one.
    fn fixture_messages() -> [Message<'static>; 2] {
        const HEADERS: &[(&[u8], &[u8])] = &[(b"h", b"v")];
        [
            Message {
                key: Some(b"k"),
                filter_value: Some(b"f"),
                headers: HEADERS,
                payload: b"hi",
                timestamp_us: Some(1_000_000),
            },
            Message { timestamp_us: Some(1_000_002), ..Message::payload(b"") },
        ]
    }

    fn hex_bytes(hex: &str) -> Vec<u8> {
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
    }

    /// Version-1 batches (what segments written before version 2 hold) still validate and serve
    /// the same records: the fixture bytes were written by the version-1 builder.
    #[test]
    fn fixture_v1_bytes_still_validate() {
        let bytes = hex_bytes(&FIXTURE_V1_HEX.concat());
        let batch = validate(&bytes).unwrap();
        let header = *batch.header();
        assert_eq!((header.version, header.header_bytes()), (BATCH_FORMAT_VERSION_1, BATCH_HEADER_V1_BYTES));
        assert_eq!(header.crc32, 0x7a7a_45bb);
        assert_eq!((header.producer_id, header.producer_epoch), (0x0102_0304_0506_0708, 0));
        assert_eq!((header.first_sequence, header.last_sequence), (9, 10));
        assert_eq!(header.records_bytes as usize, bytes.len() - BATCH_HEADER_V1_BYTES);
        assert_eq!(&header.encode()[..BATCH_HEADER_V1_BYTES], &bytes[..BATCH_HEADER_V1_BYTES]);
        assert_consistent(&batch);
        let records: Vec<_> = batch.records().collect();
        let messages = fixture_messages();
        assert_eq!(records.len(), 2);
        for (record, message) in records.iter().zip(&messages) {
            assert_eq!(
                (record.key, record.filter_value, record.payload),
                (message.key, message.filter_value, message.payload)
            );
            assert_eq!(Some(record.timestamp_us), message.timestamp_us);
        }
        assert_eq!(records[0].headers().collect::<Vec<_>>(), [(&b"h"[..], &b"v"[..])]);
        assert_eq!(batches(&[bytes.clone(), bytes].concat()).filter(Result::is_ok).count(), 2);
    }

    #[test]
    fn fixture_v2_bytes_are_stable() {
        let mut builder = BatchBuilder::new(0x0102_0304_0506_0708, 9);
        builder.set_producer(0x0102_0304_0506_0708, 3);
        for message in fixture_messages() {
            builder.push(&message).unwrap();
        }
        builder.set_last_sequence(12);
        let mut bytes = builder.finish().unwrap();
        patch_server_fields(&mut bytes, 5, 6);
        let expected_hex: String = FIXTURE_V2_HEX.concat();
        let actual_hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
        assert_eq!(actual_hex, expected_hex);
        let batch = validate(&bytes).unwrap();
        assert_eq!(
            batch.header().crc32,
            u32::from_le_bytes(hex_bytes(FIXTURE_V2_HEX[4]).try_into().unwrap())
        );
        assert_eq!((batch.header().first_sequence, batch.header().last_sequence), (9, 12));
        assert_consistent(&batch);
        // Filter value "f": FNV-1a gives bits 217, 38 and 115.
        assert_eq!(bloom_bits(b"f").collect::<Vec<_>>(), [217, 38, 115]);
    }

    /// The fixture batch field by field (also drawn in `docs/format.md`); checked against an
    /// independent CRC32 and FNV-1a implementation when written.
    const FIXTURE_V1_HEX: [&str; 34] = [
        "52424154",                         //   0: magic "RBAT"
        "0100",                             //   4: version 1
        "0800",                             //   6: attributes: has filter values
        "9e000000",                         //   8: length 158
        "bb457a7a",                         //  12: crc32 0x7a7a45bb
        "0500000000000000",                 //  16: base_offset 5
        "0600000000000000",                 //  24: append_timestamp_us 6
        "02000000",                         //  32: record_count 2
        "00000000",                         //  36: reserved
        "40420f0000000000",                 //  40: first_timestamp_us 1_000_000
        "42420f0000000000",                 //  48: max_timestamp_us 1_000_002
        "0807060504030201",                 //  56: producer_id 0x0102030405060708
        "09000000",                         //  64: producer_sequence 9
        "00000000",                         //  68: reserved
        "00000000400000000000000000000800", //  72: filter bloom, bytes 0..16
        "00000000000000000000000200000000", //  88: filter bloom, bytes 16..32
        "22000000",                         // 104: record 0: record_length 34
        "00000000",                         // 108: offset_delta 0
        "00000000",                         // 112: timestamp_delta_us 0
        "03",                               // 116: flags: key, filter value
        "00",                               // 117: reserved
        "0100",                             // 118: header_count 1
        "02000000",                         // 120: payload_length 2
        "01006b",                           // 124: key: length 1, "k"
        "0166",                             // 127: filter value: length 1, "f"
        "01680100000076",                   // 129: header: key length 1, "h", length 1, "v"
        "6869",                             // 136: payload "hi"
        "14000000",                         // 138: record 1: record_length 20
        "01000000",                         // 142: offset_delta 1
        "02000000",                         // 146: timestamp_delta_us 2
        "00",                               // 150: flags: none
        "00",                               // 151: reserved
        "0000",                             // 152: header_count 0
        "00000000",                         // 154: payload_length 0
    ];

    /// The version-2 fixture field by field (also drawn in `docs/format.md`): the v1 fixture's
    /// records, producer epoch 3, sequences 9..=12 (a gap: two records, four sequence numbers).
    const FIXTURE_V2_HEX: [&str; 37] = [
        "52424154",                         //   0: magic "RBAT"
        "0200",                             //   4: version 2
        "0800",                             //   6: attributes: has filter values, codec none
        "b6000000",                         //   8: length 182
        "b490936d",                         //  12: crc32 0x6d9390b4
        "0500000000000000",                 //  16: base_offset 5
        "0600000000000000",                 //  24: append_timestamp_us 6
        "02000000",                         //  32: record_count 2
        "36000000",                         //  36: records_bytes 54
        "40420f0000000000",                 //  40: first_timestamp_us 1_000_000
        "42420f0000000000",                 //  48: max_timestamp_us 1_000_002
        "0807060504030201",                 //  56: producer_id 0x0102030405060708
        "03000000",                         //  64: producer_epoch 3
        "00000000",                         //  68: reserved
        "00000000400000000000000000000800", //  72: filter bloom, bytes 0..16
        "00000000000000000000000200000000", //  88: filter bloom, bytes 16..32
        "0900000000000000",                 // 104: first_sequence 9
        "0c00000000000000",                 // 112: last_sequence 12
        "0000000000000000",                 // 120: reserved
        "22000000",                         // 128: record 0: record_length 34
        "00000000",                         // 132: offset_delta 0
        "00000000",                         // 136: timestamp_delta_us 0
        "03",                               // 140: flags: key, filter value
        "00",                               // 141: reserved
        "0100",                             // 142: header_count 1
        "02000000",                         // 144: payload_length 2
        "01006b",                           // 148: key: length 1, "k"
        "0166",                             // 151: filter value: length 1, "f"
        "01680100000076",                   // 153: header: key length 1, "h", length 1, "v"
        "6869",                             // 160: payload "hi"
        "14000000",                         // 162: record 1: record_length 20
        "01000000",                         // 166: offset_delta 1
        "02000000",                         // 170: timestamp_delta_us 2
        "00",                               // 174: flags: none
        "00",                               // 175: reserved
        "0000",                             // 176: header_count 0
        "00000000",                         // 178: payload_length 0
    ];

    #[test]
    fn errors_display_their_context() {
        let shown = [
            BatchError::Truncated { needed: 104, available: 3 }.to_string(),
            BatchError::BadMagic(*b"XBAT").to_string(),
            BatchError::CrcMismatch { stored: 1, computed: 2 }.to_string(),
            BatchError::MalformedRecord { index: 7, reason: "why" }.to_string(),
            BatchError::TimestampOutOfRange { first_timestamp_us: 5, timestamp_us: 4 }.to_string(),
        ];
        assert!(shown[0].contains("104") && shown[0].contains('3'));
        assert!(shown[1].contains("58"));
        assert!(shown[2].contains("0x00000001") && shown[2].contains("0x00000002"));
        assert!(shown[3].contains("record 7") && shown[3].contains("why"));
        assert!(shown[4].contains('4') && shown[4].contains('5'));
    }

    /// xorshift64: tiny, seedable, good enough to pick mutations.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
        const BYTES: [u8; 6] = [0, 1, 0x7f, 0x80, 0xfe, 0xff];
        let len = bytes.len();
        let at = if rng.below(2) == 0 || len <= BATCH_HEADER_BYTES {
            rng.below(len)
        } else {
            BATCH_HEADER_BYTES + rng.below((len - BATCH_HEADER_BYTES).min(64))
        };
        match rng.below(7) {
            _ if len == 0 => bytes.push(rng.next() as u8),
            0 => bytes[at] ^= 1 << rng.below(8),
            1 => bytes[at] = rng.next() as u8,
            2 => bytes[at] = BYTES[rng.below(BYTES.len())],
            3 | 4 => {
                let words = [
                    0,
                    1,
                    19,
                    20,
                    21,
                    64,
                    65,
                    255,
                    256,
                    4096,
                    4097,
                    len as u32,
                    len.saturating_sub(BATCH_HEADER_BYTES) as u32,
                    0x8000_0000,
                    u32::MAX - 1,
                    u32::MAX,
                ];
                let word = words[rng.below(words.len())].to_le_bytes();
                let at = at.min(len.saturating_sub(4));
                for (slot, byte) in bytes[at..].iter_mut().zip(word) {
                    *slot = byte;
                }
            }
            5 => bytes.truncate(rng.below(len)),
            _ => {
                for _ in 0..1 + rng.below(64) {
                    bytes.push(rng.next() as u8);
                }
            }
        }
    }

    fn seed() -> u64 {
        let seed = match std::env::var("RINGBROKER_SEED") {
            Ok(text) => text.parse().expect("RINGBROKER_SEED must be a u64"),
            Err(_) => now_us(),
        };
        eprintln!("batch mutation seed {seed} (replay with RINGBROKER_SEED={seed})");
        seed
    }

    #[test]
    fn random_mutations_never_panic_and_accepted_batches_are_consistent() {
        let seed = seed();
        let mut rng = Rng((seed ^ 0x9e37_79b9_7f4a_7c15).max(1));
        let mut mixed = Vec::new();
        for i in 0..40u8 {
            let key = [i; 3];
            let filter = [b'a' + i % 5];
            let headers: &[(&[u8], &[u8])] = &[(b"i", b"dx"), (b"", b"")];
            let message = Message {
                key: (i % 2 == 0).then_some(&key[..]),
                filter_value: (i % 3 == 0).then_some(&filter[..]),
                headers: &headers[..usize::from(i % 3)],
                payload: &[i; 40][..usize::from(i)],
                timestamp_us: Some(FIRST_US + u64::from(i % 7)),
            };
            mixed.push(build(0, 0, &[message]));
        }
        let mut builder = BatchBuilder::new(5, 5);
        for bytes in &mixed {
            let batch = validate(bytes).unwrap();
            let record = batch.records().next().unwrap();
            let headers: Vec<_> = record.headers().collect();
            builder
                .push(&Message {
                    key: record.key,
                    filter_value: record.filter_value,
                    headers: &headers,
                    payload: record.payload,
                    timestamp_us: Some(record.timestamp_us),
                })
                .unwrap();
        }
        let bases = [sample_batch(), one_record_batch(), builder.finish().unwrap()];
        let (mut accepted, mut rejected) = (0u32, 0u32);
        let mut reasons = std::collections::BTreeMap::<String, u32>::new();
        for _ in 0..20_000 {
            let mut bytes = bases[rng.below(bases.len())].clone();
            for _ in 0..1 + rng.below(3) {
                mutate(&mut rng, &mut bytes);
            }
            if rng.below(4) != 0 {
                if rng.below(2) == 0 && bytes.len() >= CRC_AT {
                    let length = bytes.len() as u32;
                    bytes[LENGTH_AT..CRC_AT].copy_from_slice(&length.to_le_bytes());
                }
                fix_crc(&mut bytes);
            }
            let _ = BatchHeader::decode(&bytes);
            match validate(&bytes) {
                Ok(batch) => {
                    accepted += 1;
                    assert_consistent(&batch);
                }
                Err(error) => {
                    rejected += 1;
                    assert!(!error.to_string().is_empty());
                    let reason = match error {
                        BatchError::MalformedRecord { reason, .. } => reason.to_string(),
                        BatchError::Invalid(reason) => reason.to_string(),
                        other => format!("{other:?}").split([' ', '(']).next().unwrap().into(),
                    };
                    *reasons.entry(reason).or_default() += 1;
                }
            }
            let stream = [bytes.as_slice(), &bases[0]].concat();
            let mut iter = batches(&stream);
            while let Some(result) = iter.next() {
                match result {
                    Ok(batch) => assert_consistent(&batch),
                    Err(_) => assert!(iter.next().is_none()),
                }
            }
            assert!(iter.remaining().len() <= stream.len());
        }
        eprintln!("accepted {accepted}, rejected {rejected}: {reasons:#?}");
        assert!(accepted > 100 && rejected > 100, "seed {seed}: mutations too weak or too strong");
    }
}
