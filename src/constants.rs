//! Every limit and size in one place, units last, with compile-time checks of their relations.
//!
//! Pure constants; no core affinity. Invariant: every buffer, batch and queue in the crate is
//! bounded by a constant declared here (or by a flag whose default is declared here).

/// The alignment of every O_DIRECT write position and length.
pub const IO_ALIGNMENT_BYTES: usize = 4096;

/// The largest message batch accepted on the wire or written to a segment.
pub const BATCH_BYTES_MAX: usize = 16 * 1024 * 1024;

/// The most records one batch may hold.
pub const BATCH_RECORDS_MAX: u32 = 1 << 20;

/// The longest message key.
pub const KEY_BYTES_MAX: usize = 4096;

/// The longest filter value.
pub const FILTER_VALUE_BYTES_MAX: usize = 255;

/// The most filter values one poll may ask for (each at most [`FILTER_VALUE_BYTES_MAX`]).
pub const FILTER_VALUES_MAX: usize = 32;

/// The most batch bytes a filtered poll looks at (returned or skipped) before it answers, so a
/// consumer whose values are rare cannot make one poll scan a whole partition; it answers with
/// the position reached and the consumer polls on from there.
pub const FILTER_SCAN_BYTES_MAX: usize = 32 * 1024 * 1024;

/// The most headers on one message.
pub const HEADERS_PER_RECORD_MAX: usize = 64;

/// The longest header key.
pub const HEADER_KEY_BYTES_MAX: usize = 255;

/// Default size at which the active segment is sealed and a new one started.
pub const SEGMENT_BYTES_DEFAULT: u64 = 1024 * 1024 * 1024;

/// The largest segment size a log accepts (positions inside a segment are `u32`).
pub const SEGMENT_BYTES_MAX: u64 = u32::MAX as u64;

/// Default spacing of sparse index entries, in log bytes. Sealed segments keep their index in
/// memory (16 bytes an entry), so this trades memory (0.05% of the data) against the bytes a read
/// scans past before its batch (at most this much, inside one `READ_SCAN_BYTES_MIN` read).
pub const INDEX_INTERVAL_BYTES_DEFAULT: u32 = 32 * 1024;

/// The smallest read issued while looking for a batch by offset or timestamp.
pub const READ_SCAN_BYTES_MIN: usize = 2 * INDEX_INTERVAL_BYTES_DEFAULT as usize;

/// Default capacity of one aligned write chunk of the segment writer.
pub const WRITE_CHUNK_BYTES_DEFAULT: usize = 1024 * 1024;

/// The most unflushed bytes one partition may buffer before appenders wait for the disk
/// (`--write-behind-bytes`). Two 1 MiB write chunks in flight keep the disk busy (dd here:
/// 1.3 GB/s at one 1 MiB write in flight, 2.3 GB/s at two); more only queues: every byte behind
/// the disk adds to acknowledgement and end-to-end latency (issue 14: 4 -> 2 MiB, paced
/// end-to-end p99 27 -> 18 ms, 8 ms at 1 MiB, with no produce throughput lost on 2 partitions).
pub const DIRTY_BYTES_MAX_DEFAULT: usize = 2 * 1024 * 1024;

/// Default bytes of each read planned ahead of a sequential consumer (`--prefetch-bytes`).
pub const PREFETCH_BYTES_DEFAULT: usize = 4 * 1024 * 1024;

/// Default growth of the batch cache into its budget (`--cache-growth`), bytes per second over
/// all shards: 64 MiB/s costs about 7% of one core in page faults on our VM (1.1 s per GiB of
/// fresh memory) and under 1% on bare metal; 6 GiB is reached in about 90 s.
pub const CACHE_GROWTH_DEFAULT: usize = 64 * 1024 * 1024;

/// Default reads planned ahead of a sequential consumer, all in flight (`--prefetch-depth`):
/// with 4 MiB reads, 16 MiB ahead, enough to keep an NVMe device's queue busy.
pub const PREFETCH_DEPTH_DEFAULT: usize = 4;

/// Index entries buffered before the active segment's index files are written out.
pub const INDEX_FLUSH_ENTRIES: usize = 256;

/// Bytes read per step while recovery scans a segment.
pub const RECOVERY_READ_BYTES: usize = 4 * 1024 * 1024;

const _: () = assert!(IO_ALIGNMENT_BYTES.is_power_of_two());
const _: () = assert!(WRITE_CHUNK_BYTES_DEFAULT % IO_ALIGNMENT_BYTES == 0);
const _: () = assert!(BATCH_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(SEGMENT_BYTES_DEFAULT <= SEGMENT_BYTES_MAX);
const _: () = assert!(RECOVERY_READ_BYTES >= 2 * IO_ALIGNMENT_BYTES);
const _: () = assert!(FILTER_VALUES_MAX > 0 && FILTER_VALUE_BYTES_MAX <= u8::MAX as usize);
const _: () = assert!(FILTER_SCAN_BYTES_MAX >= BATCH_BYTES_MAX);
