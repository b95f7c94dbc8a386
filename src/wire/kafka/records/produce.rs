//! Produce direction: a ProduceRequest partition's `records` (RecordBatch v2, back to back) into
//! our batches. Runs on the connection's shard, in the request reader, on a peer's bytes.
//!
//! Each Kafka batch's header is read here first (magic, attributes, counts, producer), so that
//! refusals get the right Kafka code and the crate only decodes batches whose record count the
//! bytes could hold; the crate then checks the CRC-32C and decodes the records, inflating through
//! [`super::inflate`]. Invariants: see the parent module.

use std::cell::{Cell, RefCell};

use bytes::Bytes;
use kafka_protocol::records::{Compression as KafkaCompression, Record as KafkaRecord, RecordBatchDecoder};

use super::inflate::inflate;
use super::{KafkaProducer, ProduceLimits, Produced, RecordsError};
use crate::constants::BATCH_BYTES_MAX;
use crate::model::TimestampUs;
use crate::protocol::batch::BATCH_HEADER_BYTES as BATCH_HEADER_BYTES_OURS;
use crate::protocol::batch::{BatchBuilder, BatchError, Compression, Message, RECORD_HEADER_BYTES};

/// Bytes before a batch's length counts: the base offset and the length itself.
const LOG_OVERHEAD_BYTES: usize = 12;
/// The fixed header of a RecordBatch v2, up to and including the record count.
pub(super) const BATCH_HEADER_BYTES: usize = 61;
/// The smallest record: length, attributes, timestamp delta, offset delta, key length, value
/// length and header count, one byte each.
pub(super) const RECORD_BYTES_MIN: usize = 7;

// Field offsets in a RecordBatch v2, from its first byte.
const LENGTH_AT: usize = 8;
const MAGIC_AT: usize = 16;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORD_COUNT_AT: usize = 57;
const _: () = assert!(RECORD_COUNT_AT + 4 == BATCH_HEADER_BYTES && LENGTH_AT + 4 == LOG_OVERHEAD_BYTES);

const ATTRIBUTE_CODEC_MASK: i16 = 0x07;
const ATTRIBUTE_LOG_APPEND_TIME: i16 = 1 << 3;
const ATTRIBUTE_TRANSACTIONAL: i16 = 1 << 4;
const ATTRIBUTE_CONTROL: i16 = 1 << 5;

/// The fields of a Kafka batch header this module acts on.
#[derive(Debug, Clone, Copy)]
struct KafkaHeader {
    /// The whole batch, log overhead included.
    bytes: usize,
    attributes: i16,
    last_offset_delta: i32,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    record_count: i32,
}

/// Appends our batches for the Kafka batches in `records` to `out` and says what they hold.
/// The batches of an idempotent Kafka producer carry `producer` (our producer id and epoch, the
/// named producer the caller declared for it), or when `None` Kafka's own id and epoch; their
/// sequences are Kafka's. An anonymous Kafka producer's batches carry producer 0. On error
/// `out` is left as it was.
pub(crate) fn produce_batches(
    records: &Bytes,
    producer: Option<(u64, u32)>,
    out: &mut Vec<u8>,
    limits: &ProduceLimits,
) -> Result<Produced, RecordsError> {
    let restore = out.len();
    let result = produce_into(records, producer, out, limits);
    if result.is_err() {
        out.truncate(restore);
    }
    result
}

fn produce_into(
    records: &Bytes,
    producer: Option<(u64, u32)>,
    out: &mut Vec<u8>,
    limits: &ProduceLimits,
) -> Result<Produced, RecordsError> {
    if records.is_empty() {
        return Err(RecordsError::Corrupt("no record batch".into()));
    }
    let budget = Cell::new(limits.max_inflated_bytes);
    let start = out.len();
    let mut writer = Writer {
        builder: None,
        out,
        start,
        max_output_bytes: limits.max_inflated_bytes,
        producer,
        batches: 0,
    };
    let mut produced = Produced::default();
    let mut at = 0usize;
    while at < records.len() {
        let rest = records.get(at..).unwrap_or_default();
        let header = read_header(rest)?;
        let batch = records.slice(at..at + header.bytes);
        check_header(&header, (budget.get(), limits.max_inflated_bytes), &batch)?;
        let set = decode(batch, &budget, header.record_count)?;
        account(&mut produced, &header)?;
        writer.convert(&header, &set)?;
        at += header.bytes;
    }
    produced.batches = writer.batches;
    Ok(produced)
}

/// Reads and checks the lengths of the Kafka batch at the start of `rest`.
fn read_header(rest: &[u8]) -> Result<KafkaHeader, RecordsError> {
    let Some(&magic) = rest.get(MAGIC_AT) else {
        return Err(RecordsError::Corrupt(format!(
            "{} bytes left, a batch header is {BATCH_HEADER_BYTES}",
            rest.len()
        )));
    };
    match magic {
        2 => {}
        0 | 1 => return Err(RecordsError::Unsupported(format!("message set v{magic}: send RecordBatch v2"))),
        other => return Err(RecordsError::Corrupt(format!("magic byte {other}"))),
    }
    let Some(fixed) = rest.first_chunk::<BATCH_HEADER_BYTES>() else {
        return Err(RecordsError::Corrupt(format!(
            "{} bytes left, a batch header is {BATCH_HEADER_BYTES}",
            rest.len()
        )));
    };
    let i16_at = |at: usize| i16::from_be_bytes([fixed[at], fixed[at + 1]]);
    let i32_at = |at: usize| i32::from_be_bytes([fixed[at], fixed[at + 1], fixed[at + 2], fixed[at + 3]]);
    let length = i32_at(LENGTH_AT);
    let bytes = usize::try_from(length)
        .ok()
        .and_then(|length| length.checked_add(LOG_OVERHEAD_BYTES))
        .filter(|&bytes| (BATCH_HEADER_BYTES..=rest.len()).contains(&bytes))
        .ok_or_else(|| {
            RecordsError::Corrupt(format!("batch length {length} with {} bytes left", rest.len()))
        })?;
    let mut producer_id = [0u8; 8];
    producer_id.copy_from_slice(&fixed[PRODUCER_ID_AT..PRODUCER_ID_AT + 8]);
    Ok(KafkaHeader {
        bytes,
        attributes: i16_at(ATTRIBUTES_AT),
        last_offset_delta: i32_at(LAST_OFFSET_DELTA_AT),
        producer_id: i64::from_be_bytes(producer_id),
        producer_epoch: i16_at(PRODUCER_EPOCH_AT),
        base_sequence: i32_at(BASE_SEQUENCE_AT),
        record_count: i32_at(RECORD_COUNT_AT),
    })
}

/// The header's rules. A batch breaking one may just be damaged, so the CRC decides between
/// that rule's error and [`RecordsError::Corrupt`] (the crate checks it without inflating).
fn check_header(
    header: &KafkaHeader,
    (budget, limit): (usize, usize),
    batch: &Bytes,
) -> Result<(), RecordsError> {
    let Err(error) = header_rules(header, budget, limit) else { return Ok(()) };
    match RecordBatchDecoder::decode_batch_info(&mut batch.clone()) {
        Ok(_) => Err(error),
        Err(crc) => Err(RecordsError::Corrupt(format!("{crc:#}"))),
    }
}

fn header_rules(header: &KafkaHeader, budget: usize, limit: usize) -> Result<(), RecordsError> {
    let attributes = header.attributes;
    if attributes & (ATTRIBUTE_TRANSACTIONAL | ATTRIBUTE_CONTROL) != 0 {
        return Err(RecordsError::Unsupported(
            "transactional and control batches (no transactions here)".into(),
        ));
    }
    let codec = attributes & ATTRIBUTE_CODEC_MASK;
    if codec > KafkaCompression::Zstd as i16 {
        return Err(RecordsError::Corrupt(format!("compression codec {codec}")));
    }
    let count = header.record_count;
    if count < 1 || header.last_offset_delta != count - 1 {
        return Err(RecordsError::InvalidRecord(format!(
            "{count} records with last offset delta {}",
            header.last_offset_delta
        )));
    }
    // Every record takes RECORD_BYTES_MIN bytes, inflated or not: a count the bytes cannot hold
    // would only make the crate reserve room for records that are not there.
    let room = if codec == 0 { header.bytes - BATCH_HEADER_BYTES } else { budget };
    if count as usize > room / RECORD_BYTES_MIN {
        return Err(RecordsError::Corrupt(format!("{count} records in {room} bytes")));
    }
    // The crate holds a batch's records decoded, each `size_of::<KafkaRecord>()` bytes however
    // small it is on the wire: that too must fit the call's limit.
    let decoded_bytes = (count as usize).saturating_mul(std::mem::size_of::<KafkaRecord>());
    if decoded_bytes > limit {
        return Err(RecordsError::TooLarge(format!(
            "{count} records would take {decoded_bytes} bytes decoded"
        )));
    }
    match (header.producer_id, header.producer_epoch, header.base_sequence) {
        (-1, _, _) => Ok(()),
        (id, epoch, sequence) if id >= 0 && epoch >= 0 && sequence >= 0 => Ok(()),
        (id, epoch, sequence) => Err(RecordsError::InvalidRecord(format!(
            "producer id {id} with epoch {epoch} and base sequence {sequence}"
        ))),
    }
}

/// Decodes one whole Kafka batch (CRC-32C checked by the crate), inflating within `budget`.
fn decode(mut batch: Bytes, budget: &Cell<usize>, count: i32) -> Result<Vec<KafkaRecord>, RecordsError> {
    let failure: RefCell<Option<RecordsError>> = RefCell::new(None);
    // The crate wants an `anyhow` error back; `?` makes one of ours, and the typed error is kept
    // aside for the answer.
    let decoded = RecordBatchDecoder::decode_with_custom_compression(
        &mut batch,
        Some(|data: &mut Bytes, codec: KafkaCompression| {
            if codec == KafkaCompression::None {
                return Ok(data.clone());
            }
            let plain = inflate(codec, data, budget).inspect_err(|error| {
                *failure.borrow_mut() = Some(error.clone());
            })?;
            Ok(Bytes::from(plain))
        }),
    );
    match decoded {
        Ok(set) if set.records.len() == count as usize => Ok(set.records),
        Ok(set) => {
            Err(RecordsError::Corrupt(format!("{} records decoded, {count} declared", set.records.len())))
        }
        Err(error) => {
            Err(failure.into_inner().unwrap_or_else(|| RecordsError::Corrupt(format!("{error:#}"))))
        }
    }
}

/// Adds a Kafka batch's producer and sequences to `produced`: every batch of the call must have
/// the same producer, and an idempotent producer's batches must follow each other.
fn account(produced: &mut Produced, header: &KafkaHeader) -> Result<(), RecordsError> {
    let producer = (header.producer_id >= 0)
        .then_some(KafkaProducer { id: header.producer_id, epoch: header.producer_epoch });
    let last = header.base_sequence.wrapping_add(header.last_offset_delta);
    let last = if last < 0 { last.wrapping_sub(i32::MIN) } else { last };
    if produced.records > 0 {
        if produced.producer != producer {
            return Err(RecordsError::InvalidRecord(
                "batches of one partition from different producers".into(),
            ));
        }
        if let Some(previous) = produced.last_sequence {
            let expected = if previous == i32::MAX { 0 } else { previous + 1 };
            if header.base_sequence != expected {
                return Err(RecordsError::InvalidRecord(format!(
                    "base sequence {} after {previous}",
                    header.base_sequence
                )));
            }
        }
    } else {
        produced.producer = producer;
        produced.first_sequence = producer.map(|_| header.base_sequence);
    }
    produced.last_sequence = producer.map(|_| last);
    produced.records += header.record_count as u64;
    Ok(())
}

/// Our batches being written for one call.
struct Writer<'o> {
    /// Made for the first Kafka batch, with room for exactly its records; reused after.
    builder: Option<BatchBuilder>,
    out: &'o mut Vec<u8>,
    /// `out`'s length before the call.
    start: usize,
    max_output_bytes: usize,
    /// Our producer for idempotent Kafka batches, when the caller gave one.
    producer: Option<(u64, u32)>,
    batches: u32,
}

impl Writer<'_> {
    /// Writes one Kafka batch's records as one of our batches, or several where our limits
    /// (size, count, timestamp window) force a split.
    fn convert(&mut self, header: &KafkaHeader, records: &[KafkaRecord]) -> Result<(), RecordsError> {
        let builder = self.builder.get_or_insert_with(|| {
            BatchBuilder::with_capacity(0, 0, BATCH_HEADER_BYTES_OURS.saturating_add(stored_size(records)))
        });
        let idempotent = header.producer_id >= 0;
        let kafka = (header.producer_id as u64, header.producer_epoch as u32);
        let (id, epoch) = if idempotent { self.producer.unwrap_or(kafka) } else { (0, 0) };
        builder.set_producer(id, epoch);
        builder.reset(if idempotent { header.base_sequence as u64 } else { 0 });
        let compressed = header.attributes & ATTRIBUTE_CODEC_MASK != 0;
        builder.set_compression(if compressed { Compression::Lz4 } else { Compression::None });
        let log_append = header.attributes & ATTRIBUTE_LOG_APPEND_TIME != 0;
        let mut headers: Vec<(&[u8], &[u8])> = Vec::new();
        for record in records {
            headers.clear();
            headers.extend(
                record.headers.iter().map(|(key, value)| (key.as_bytes(), value.as_deref().unwrap_or(&[]))),
            );
            let message = Message {
                key: record.key.as_deref(),
                filter_value: None,
                headers: &headers,
                payload: record.value.as_deref().unwrap_or(&[]),
                timestamp_us: if log_append { None } else { timestamp_us(record.timestamp) },
            };
            match builder.push(&message) {
                Ok(()) => {}
                Err(BatchError::TooLarge { .. } | BatchError::TooManyRecords { .. })
                | Err(BatchError::TimestampOutOfRange { .. })
                    if !builder.is_empty() =>
                {
                    flush(builder, self.out, self.start, self.max_output_bytes)?;
                    self.batches = self.batches.saturating_add(1);
                    builder.push(&message).map_err(refused)?;
                }
                Err(error) => return Err(refused(error)),
            }
        }
        flush(builder, self.out, self.start, self.max_output_bytes)?;
        self.batches = self.batches.saturating_add(1);
        Ok(())
    }
}

/// Appends the batch `builder` holds to `out` (which held `start` bytes before the call, and may
/// grow by `max_output_bytes`) and empties the builder for the next part.
fn flush(
    builder: &mut BatchBuilder,
    out: &mut Vec<u8>,
    start: usize,
    max_output_bytes: usize,
) -> Result<(), RecordsError> {
    let next_sequence = builder.next_sequence();
    let batch = builder.finish_in_place().map_err(refused)?;
    let written = out.len() - start;
    if written.saturating_add(batch.len()) > max_output_bytes {
        return Err(RecordsError::TooLarge(format!(
            "the batches would take more than {max_output_bytes} bytes"
        )));
    }
    debug_assert!(crate::protocol::batch::validate(batch).is_ok());
    out.extend_from_slice(batch);
    builder.reset(next_sequence);
    Ok(())
}

/// The bytes `records` take as our records (exactly, when none is refused).
fn stored_size(records: &[KafkaRecord]) -> usize {
    records
        .iter()
        .map(|record| {
            let key = record.key.as_ref().map_or(0, |key| 2 + key.len());
            let headers = record.headers.iter().map(|(k, v)| 5 + k.len() + v.as_ref().map_or(0, Bytes::len));
            let headers = headers.fold(0usize, usize::saturating_add);
            let value = record.value.as_ref().map_or(0, Bytes::len);
            (RECORD_HEADER_BYTES + key).saturating_add(headers).saturating_add(value)
        })
        .fold(0usize, usize::saturating_add)
}

/// A Kafka timestamp (ms) as ours (µs); a negative one (-1: none) means the append time.
fn timestamp_us(timestamp_ms: i64) -> Option<TimestampUs> {
    u64::try_from(timestamp_ms).ok().map(|ms| ms.saturating_mul(1000))
}

/// Why our builder refused a record, as Kafka sees it.
fn refused(error: BatchError) -> RecordsError {
    match error {
        BatchError::TooLarge { bytes, .. } => RecordsError::TooLarge(format!(
            "a record needs a batch of {bytes} bytes, above our limit of {BATCH_BYTES_MAX}"
        )),
        other => RecordsError::InvalidRecord(other.to_string()),
    }
}
