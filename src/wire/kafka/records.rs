//! Placeholder for the Kafka record-batch conversion (being written on branch `kafka-records`):
//! refuses every produce and fetch conversion.

use bytes::{Bytes, BytesMut};

/// Limits of one produce conversion.
pub(crate) struct ProduceLimits {
    /// Decompression-bomb cap: total inflated bytes of one call.
    pub(crate) max_inflated_bytes: usize,
}

/// What a produce conversion wrote.
pub(crate) struct Produced {
    /// Batches written.
    pub(crate) batches: u32,
}

/// What a fetch conversion wrote.
pub(crate) struct Fetched;

/// Why records did not convert.
#[derive(Debug)]
pub(crate) struct RecordsError;

impl RecordsError {
    /// Kafka's code for it.
    pub(crate) fn kafka_code(&self) -> i16 {
        super::errors::INVALID_RECORD
    }
}

impl std::fmt::Display for RecordsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("record conversion is not built yet")
    }
}

/// Kafka record batches to our batches.
pub(crate) fn produce_batches(
    _records: &Bytes,
    _producer: Option<(u64, u32)>,
    _out: &mut Vec<u8>,
    limits: &ProduceLimits,
) -> Result<Produced, RecordsError> {
    let _ = limits.max_inflated_bytes;
    Err(RecordsError)
}

/// Our batches to Kafka record batches.
pub(crate) fn fetch_records(
    _stored: &[u8],
    _offset: u64,
    _max: usize,
    _out: &mut BytesMut,
) -> Result<Fetched, RecordsError> {
    Err(RecordsError)
}
