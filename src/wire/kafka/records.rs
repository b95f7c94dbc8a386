//! Kafka record batches to and from our batches: [`produce_batches`] turns the `records` of one
//! ProduceRequest partition (RecordBatch v2, any of Kafka's codecs) into our batches, ready for
//! the produce path; [`fetch_records`] turns stored batches, as a poll returns them, into the
//! RecordBatch v2 bytes of one FetchResponse partition. Layout and costs: `docs/kafka-records.md`.
//!
//! Runs on the connection's shard: produce in the request reader on a peer's bytes, fetch on
//! batches the broker validated when it appended them. The Kafka side is the `kafka-protocol`
//! crate's decoder and encoder; this module only maps fields and bounds what the crate is given.
//!
//! The mapping, per record: Kafka key = our key (a null key stays absent); Kafka value = our
//! payload (a null value becomes an empty payload: the one lossy case on produce); headers in
//! order (a null header value becomes an empty one; the crate keeps headers in a map, so of
//! duplicate header keys only the last value survives, at the first one's place); timestamp ms
//! = our `timestamp_us / 1000` (a negative or log-append Kafka timestamp becomes the append
//! time). One Kafka batch becomes one of our batches unless our limits force a split.
//!
//! Invariants:
//! * nothing here panics, overflows or allocates without bound on hostile bytes: inflating is
//!   capped by [`ProduceLimits::max_inflated_bytes`] for the whole call, and so are the bytes
//!   written; a batch's record count is checked against the bytes that could hold its records
//!   before the crate decodes them;
//! * every batch [`produce_batches`] appends passes `validate`; on error `out` is left as it was
//!   (both directions);
//! * an idempotent Kafka batch's records keep Kafka's sequence numbers: our batch's first
//!   sequence is the Kafka batch's base sequence, and a split batch's parts continue it; an
//!   anonymous one's batches have producer 0.

use std::fmt;

use bytes::Bytes;

mod fetch;
mod inflate;
mod produce;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_codecs;

pub(crate) use fetch::fetch_records;
pub(crate) use produce::produce_batches;

mod fuzz;
#[doc(hidden)]
pub use fuzz::fuzz_request;

use super::errors::{CORRUPT_MESSAGE, INVALID_RECORD};

/// Kafka's `MESSAGE_TOO_LARGE`.
const MESSAGE_TOO_LARGE: i16 = 10;
/// Kafka's `UNSUPPORTED_FOR_MESSAGE_FORMAT`.
const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;

/// The producer of an idempotent Kafka batch (producer id >= 0), as Kafka numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KafkaProducer {
    /// Kafka's producer id, >= 0.
    pub(crate) id: i64,
    /// Kafka's producer epoch, >= 0.
    pub(crate) epoch: i16,
}

/// What [`produce_batches`] appended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Produced {
    /// Our batches appended to `out`, back to back.
    pub(crate) batches: u32,
    /// Records in them (every Kafka record of the input).
    pub(crate) records: u64,
    /// The producer of the Kafka batches (they all share it), `None` when anonymous.
    pub(crate) producer: Option<KafkaProducer>,
    /// The base sequence of the first Kafka batch, when idempotent.
    pub(crate) first_sequence: Option<i32>,
    /// The sequence of the last record of the last Kafka batch, when idempotent (Kafka's
    /// arithmetic: it wraps from `i32::MAX` to 0; ours is a `u64` and does not wrap).
    pub(crate) last_sequence: Option<i32>,
}

/// The bounds of one [`produce_batches`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProduceLimits {
    /// The most bytes the call may inflate, over all its compressed Kafka batches (the
    /// decompression-bomb cap), and also the most bytes it may append to `out`: our records are
    /// larger than Kafka's smallest (a 20-byte fixed part against 7 bytes), and a batch whose
    /// timestamps go backwards is split at each step back, so the output can outgrow the input.
    /// Past either, the call fails with [`RecordsError::TooLarge`]. Four times the largest
    /// request frame covers every batch a client sends.
    pub(crate) max_inflated_bytes: usize,
}

/// What [`fetch_records`] appended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Fetched {
    /// Records in the Kafka batches written (whole batches: including records below the fetch
    /// offset in the first one, which Kafka clients skip).
    pub(crate) records: u64,
    /// The offset after the last batch written or skipped; the fetch offset when none was.
    pub(crate) next_offset: u64,
    /// Kafka batches written: one per stored batch, more for one of over 4096 records.
    pub(crate) batches: u32,
}

/// Why Kafka records could not be converted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RecordsError {
    /// Bytes that are not a well-formed RecordBatch v2: a CRC-32C mismatch, bad lengths or
    /// counts, a magic byte other than 0, 1 or 2, compressed bytes that do not inflate; or a
    /// stored batch that does not decode.
    Corrupt(String),
    /// Past a limit: [`ProduceLimits`], or a record larger than our largest batch.
    TooLarge(String),
    /// Well formed but not served: message sets (magic 0 and 1), transactional or control
    /// batches.
    Unsupported(String),
    /// A record or batch the broker cannot store as sent: a key, header count or header key over
    /// our limits, a record count that disagrees with the offset deltas, a producer id without
    /// epoch or sequence, batches of one partition with different producers or sequence gaps.
    InvalidRecord(String),
}

impl RecordsError {
    /// The Kafka error code for a ProducePartitionResponse (or FetchResponse partition).
    pub(crate) fn kafka_code(&self) -> i16 {
        match self {
            RecordsError::Corrupt(_) => CORRUPT_MESSAGE,
            RecordsError::TooLarge(_) => MESSAGE_TOO_LARGE,
            RecordsError::Unsupported(_) => UNSUPPORTED_FOR_MESSAGE_FORMAT,
            RecordsError::InvalidRecord(_) => INVALID_RECORD,
        }
    }
}

impl fmt::Display for RecordsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordsError::Corrupt(reason) => write!(f, "corrupt Kafka records: {reason}"),
            RecordsError::TooLarge(reason) => write!(f, "Kafka records too large: {reason}"),
            RecordsError::Unsupported(reason) => write!(f, "unsupported Kafka records: {reason}"),
            RecordsError::InvalidRecord(reason) => write!(f, "invalid Kafka record: {reason}"),
        }
    }
}

impl std::error::Error for RecordsError {}

/// `part` as a slice of `whole` without copying when it lies inside `whole`'s bytes (as the
/// records of a batch held in `whole` do), else as a copy. Never panics.
fn share(whole: &Bytes, part: &[u8]) -> Bytes {
    let at = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    match at.checked_add(part.len()) {
        Some(end) if end <= whole.len() && !part.is_empty() => whole.slice(at..end),
        _ => Bytes::copy_from_slice(part),
    }
}
