//! The `kafka_request` fuzz target's harness (`fuzz/fuzz_targets/kafka_request.rs`), kept in the
//! crate because the conversion is crate-private; the unit tests run the same checks. Not part
//! of the broker: only the fuzz target and the tests call it, on whatever thread runs them.
//!
//! Properties (a failure panics, which libFuzzer reports as a crash): nothing panics, overflows
//! or allocates without bound; a Produce request that decodes has every partition's records
//! converted, and when the conversion succeeds, every batch written passes `validate`, the counts
//! and the producer agree with the input, and fetching them back from offset 0 gives Kafka
//! batches the crate decodes into the same keys, values (a null one read back as empty), headers
//! and create times, at dense offsets; a fetch with `max_bytes` 1 still gives one batch.

// A failed property must panic: that is how the harness reports it.
#![allow(clippy::expect_used)]

use std::cell::Cell;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::RequestKind;
use kafka_protocol::records::{Record as KafkaRecord, RecordBatchDecoder, TimestampType};

use super::inflate::inflate;
use super::produce::BATCH_HEADER_BYTES;
use super::{fetch_records, produce_batches, ProduceLimits};
use crate::protocol::batch::{batches, patch_server_fields, BatchHeader};
use crate::wire::kafka::frame::decode_request;

/// The limits the harness converts with: small, so bombs stay cheap.
const LIMITS: ProduceLimits = ProduceLimits { max_inflated_bytes: 1 << 20 };

/// Where a batch's CRC-32C sits, and where the bytes it covers start.
const CRC_AT: usize = 17;
const CRC_COVERS_FROM: usize = 21;

/// Runs the harness on one input. Byte 0 picks the mode: even, the rest is one Kafka request
/// frame without its size prefix (`frame::decode_request`), and every partition of a Produce
/// request is checked; odd, the rest is a partition's records, with every batch's CRC-32C
/// rewritten first so that mutations reach the checks behind it.
#[doc(hidden)]
pub fn fuzz_request(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 1 == 1 {
        check_round_trip(&Bytes::from(reseal(rest)));
        return;
    }
    let Ok(request) = decode_request(Bytes::copy_from_slice(rest)) else { return };
    let RequestKind::Produce(produce) = request.body else { return };
    for topic in &produce.topic_data {
        for partition in &topic.partition_data {
            if let Some(records) = &partition.records {
                check_round_trip(records);
            }
        }
    }
}

/// Converts `records` to our batches and back, checking the properties above.
pub(crate) fn check_round_trip(records: &Bytes) {
    let mut out = vec![0xAB];
    let produced = match produce_batches(records, None, &mut out, &LIMITS) {
        Ok(produced) => produced,
        Err(_) => {
            assert_eq!(out, [0xAB], "a refused conversion leaves out as it was");
            return;
        }
    };
    let mut stored = out.split_off(1);
    let (mut count, mut total) = (0u32, 0u64);
    for batch in batches(&stored) {
        let batch = batch.expect("every batch written validates");
        let header = batch.header();
        if count == 0 {
            let producer = produced.producer.map(|p| (p.id as u64, p.epoch as u32)).unwrap_or((0, 0));
            assert_eq!((header.producer_id, header.producer_epoch), producer);
            if let Some(first) = produced.first_sequence {
                assert_eq!(header.first_sequence, first as u64);
            }
        }
        count += 1;
        total += u64::from(header.record_count);
    }
    assert_eq!((count, total), (produced.batches, produced.records));
    assign_offsets(&mut stored);

    let expected = decode_input(records);
    assert_eq!(expected.len() as u64, produced.records);
    let mut fetched_bytes = BytesMut::new();
    let fetched = fetch_records(&stored, 0, usize::MAX, &mut fetched_bytes).expect("our batches fetch");
    assert_eq!((fetched.records, fetched.next_offset), (total, total));
    assert!(fetched.batches >= count);
    let mut fetched_bytes = fetched_bytes.freeze();
    let mut got = Vec::new();
    while !fetched_bytes.is_empty() {
        let set = RecordBatchDecoder::decode(&mut fetched_bytes).expect("fetched batches decode");
        got.extend(set.records);
    }
    assert_eq!(got.len(), expected.len());
    for (index, (got, expected)) in got.iter().zip(&expected).enumerate() {
        assert_same(index as i64, got, expected);
    }

    let mut one = BytesMut::new();
    let first = fetch_records(&stored, total / 2, 1, &mut one).expect("our batches fetch");
    assert!(first.batches >= 1, "at least one batch, whatever max_bytes says");
    assert!(first.next_offset > total / 2);
}

/// Stamps dense offsets from 0 on batches written back to back, as a partition would.
fn assign_offsets(stored: &mut [u8]) {
    let (mut at, mut offset) = (0usize, 0u64);
    while at < stored.len() {
        let header = BatchHeader::decode(&stored[at..]).expect("header");
        let length = header.length as usize;
        patch_server_fields(&mut stored[at..at + length], offset, 1_000_000);
        offset += u64::from(header.record_count);
        at += length;
    }
}

/// The input's records, decoded by the crate (inflating with the same bounded codecs).
fn decode_input(records: &Bytes) -> Vec<KafkaRecord> {
    let budget = Cell::new(usize::MAX);
    let mut buf = records.clone();
    let mut all = Vec::new();
    while !buf.is_empty() {
        let set = RecordBatchDecoder::decode_with_custom_compression(
            &mut buf,
            Some(|data: &mut Bytes, codec| Ok(Bytes::from(inflate(codec, data, &budget)?))),
        )
        .expect("records that converted decode");
        all.extend(set.records);
    }
    all
}

/// A fetched record against the input record it came from.
fn assert_same(offset: i64, got: &KafkaRecord, expected: &KafkaRecord) {
    assert_eq!(got.offset, offset);
    assert_eq!(got.key, expected.key, "key at {offset}");
    assert_eq!(got.value.as_deref(), Some(expected.value.as_deref().unwrap_or(&[])), "value at {offset}");
    let expected_headers: Vec<(&[u8], &[u8])> =
        expected.headers.iter().map(|(k, v)| (k.as_bytes(), v.as_deref().unwrap_or(&[]))).collect();
    let got_headers: Vec<(&[u8], &[u8])> =
        got.headers.iter().map(|(k, v)| (k.as_bytes(), v.as_deref().unwrap_or(&[]))).collect();
    assert_eq!(got_headers, expected_headers, "headers at {offset}");
    let create_time = expected.timestamp_type == TimestampType::Creation;
    if create_time && (0..=(u64::MAX / 1000) as i64).contains(&expected.timestamp) {
        assert_eq!(got.timestamp, expected.timestamp, "timestamp at {offset}");
    }
    assert_eq!((got.producer_id, got.producer_epoch, got.timestamp_type), (-1, -1, TimestampType::Creation));
}

/// `bytes` with the CRC-32C of every whole batch in it rewritten.
fn reseal(bytes: &[u8]) -> Vec<u8> {
    let mut bytes = bytes.to_vec();
    let mut at = 0usize;
    while let Some(length) = bytes.get(at + 8..at + 12).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    {
        let Some(end) = usize::try_from(length).ok().and_then(|length| (at + 12).checked_add(length)) else {
            break;
        };
        if end > bytes.len() || end < at + BATCH_HEADER_BYTES {
            break;
        }
        let crc = crc32c(&bytes[at + CRC_COVERS_FROM..end]);
        bytes[at + CRC_AT..at + CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        at = end;
    }
    bytes
}

/// CRC-32C (Castagnoli), bit by bit: only the harness uses it, on inputs of a few KB.
pub(crate) fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}
