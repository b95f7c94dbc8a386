//! Fetch direction: stored batches, back to back as a poll returns them, into the RecordBatch v2
//! bytes of one FetchResponse partition, one Kafka batch per stored batch. Runs on the
//! connection's shard, on batches the broker validated when it appended them: their headers are
//! decoded again, their CRC is not (the record iterator stays bounds-checked, so bytes that were
//! never validated give an error or garbage records, never a panic). Compressed batches (zstd,
//! LZ4, RabbitMQ sub-entries) are inflated, within `BATCH_BYTES_MAX`.
//!
//! Each stored batch is copied once into a [`Bytes`] (or inflated into one), and every key, value
//! and header value handed to the crate's encoder is a slice of it: no allocation per record
//! beyond the crate's header map, and none for records without headers.
//!
//! Invariants: one Kafka batch per stored batch, or one per [`KAFKA_BATCH_RECORDS_MAX`] records
//! of it; the Kafka batches written carry the stored offsets and create times (µs / 1000),
//! producer id -1 and base sequence -1; into an empty `out`, at least one batch is written when
//! `stored` holds one past the fetch offset; no other batch is written once `max_bytes` would
//! be exceeded; on error `out` is left as it was.

use bytes::{Bytes, BytesMut};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression as KafkaCompression, Record as KafkaRecord, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE,
};

use super::{share, Fetched, RecordsError};
use crate::constants::BATCH_BYTES_MAX;
use crate::protocol::batch::{inflate, validated_view, BatchError, BatchHeader, Record};

/// The only record batch version written (and read).
const MAGIC_V2: i8 = 2;

/// The most records in one Kafka batch written: a stored batch with more (up to
/// `BATCH_RECORDS_MAX`) becomes several Kafka batches, so the crate's records of one batch (about
/// 170 bytes each) stay under a megabyte.
pub(super) const KAFKA_BATCH_RECORDS_MAX: usize = 4096;

/// Appends the Kafka batches for the stored batches of `stored` that end after `fetch_offset` to
/// `out`, stopping before the bytes this call writes would exceed `max_bytes`; but when `out` is
/// empty on entry the first such batch is always written, whatever its size (Kafka's rule since
/// fetch v3: a response makes progress), so a caller filling one response from several polled
/// parts gets that rule for the response as a whole. A compressed batch that does not inflate is skipped
/// with a warning (its producer lied; no client could read it). [`RecordsError::Corrupt`] when a
/// stored batch's header does not decode; `out` is then left as it was.
pub(crate) fn fetch_records(
    stored: &[u8],
    fetch_offset: u64,
    max_bytes: usize,
    out: &mut BytesMut,
) -> Result<Fetched, RecordsError> {
    let start = out.len();
    let mut fetched = Fetched { records: 0, next_offset: fetch_offset, batches: 0 };
    let mut records: Vec<KafkaRecord> = Vec::new();
    let mut rest = stored;
    while !rest.is_empty() {
        let header = match BatchHeader::decode(rest) {
            Ok(header) => header,
            Err(error) => {
                out.truncate(start);
                return Err(stored_corrupt(stored.len() - rest.len(), &error));
            }
        };
        let length = header.length as usize;
        let (Some(bytes), Some(after)) = (rest.get(..length), rest.get(length..)) else {
            out.truncate(start);
            let error = BatchError::Truncated { needed: length, available: rest.len() };
            return Err(stored_corrupt(stored.len() - rest.len(), &error));
        };
        rest = after;
        if header.next_offset() <= fetch_offset {
            continue;
        }
        let Some(plain) = plain_batch(bytes, &header) else {
            fetched.next_offset = header.next_offset();
            continue;
        };
        let before = out.len();
        let kafka_batches = match encode(&plain, &mut records, out) {
            Ok(kafka_batches) => kafka_batches,
            Err(error) => {
                out.truncate(start);
                return Err(error);
            }
        };
        let must_write = start == 0 && fetched.batches == 0;
        if !must_write && out.len() - start > max_bytes {
            out.truncate(before);
            break;
        }
        fetched.batches = fetched.batches.saturating_add(kafka_batches);
        fetched.records += u64::from(header.record_count);
        fetched.next_offset = header.next_offset();
    }
    Ok(fetched)
}

fn stored_corrupt(at: usize, error: &BatchError) -> RecordsError {
    RecordsError::Corrupt(format!("the stored batch at byte {at}: {error}"))
}

/// The stored batch as plain bytes to slice records from: a copy, or its inflated form; `None`
/// (warned about) for a compressed batch that does not inflate.
fn plain_batch(bytes: &[u8], header: &BatchHeader) -> Option<Bytes> {
    if !header.is_compressed() {
        return Some(Bytes::copy_from_slice(bytes));
    }
    match inflate(bytes, BATCH_BYTES_MAX) {
        Ok(plain) => Some(Bytes::from(plain)),
        Err(error) => {
            let base_offset = header.base_offset;
            tracing::warn!(base_offset, %error, "a stored compressed batch does not inflate; not fetched");
            None
        }
    }
}

/// Appends the Kafka batches holding the records of the plain batch `plain`: one, or one per
/// [`KAFKA_BATCH_RECORDS_MAX`] records, so the crate's records of a batch stay small.
fn encode(plain: &Bytes, records: &mut Vec<KafkaRecord>, out: &mut BytesMut) -> Result<u32, RecordsError> {
    let batch = validated_view(plain).map_err(|error| stored_corrupt(0, &error))?;
    let header = batch.header();
    let base_offset = header.base_offset;
    let options = RecordEncodeOptions { version: MAGIC_V2, compression: KafkaCompression::None };
    let mut stored = batch.records();
    let (mut written, mut kafka_batches) = (0usize, 0u32);
    loop {
        records.clear();
        for (index, record) in stored.by_ref().take(KAFKA_BATCH_RECORDS_MAX).enumerate() {
            records.push(kafka_record(plain, &record, index as i32)?);
        }
        if records.is_empty() {
            break;
        }
        written += records.len();
        kafka_batches += 1;
        RecordBatchEncoder::encode(out, records.iter(), &options).map_err(|error| {
            RecordsError::Corrupt(format!("encoding the batch at offset {base_offset}: {error:#}"))
        })?;
    }
    if written != header.record_count as usize {
        return Err(RecordsError::Corrupt(format!(
            "the stored batch at offset {base_offset} holds {written} of its {} records",
            header.record_count
        )));
    }
    Ok(kafka_batches)
}

/// Stored record `index` of a Kafka batch as the crate's record. Its sequence is chosen so that
/// the encoder keeps the batch whole (it splits where `offset - sequence` changes) and writes
/// base sequence -1.
fn kafka_record(plain: &Bytes, record: &Record<'_>, index: i32) -> Result<KafkaRecord, RecordsError> {
    let offset = i64::try_from(record.offset)
        .map_err(|_| RecordsError::Corrupt(format!("offset {} past Kafka's i64", record.offset)))?;
    let mut kafka = KafkaRecord {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
        producer_id: NO_PRODUCER_ID,
        producer_epoch: NO_PRODUCER_EPOCH,
        timestamp_type: TimestampType::Creation,
        offset,
        sequence: NO_SEQUENCE.wrapping_add(index),
        timestamp: (record.timestamp_us / 1000) as i64,
        key: record.key.map(|key| share(plain, key)),
        value: Some(share(plain, record.payload)),
        headers: Default::default(),
    };
    if record.header_count() > 0 {
        kafka.headers.reserve(record.header_count());
        for (key, value) in record.headers() {
            let key = match StrBytes::from_utf8(share(plain, key)) {
                Ok(key) => key,
                Err(_) => StrBytes::from_string(String::from_utf8_lossy(key).into_owned()),
            };
            kafka.headers.insert(key, Some(share(plain, value)));
        }
    }
    Ok(kafka)
}
