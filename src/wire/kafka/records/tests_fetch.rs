//! Kafka records on fetch: offsets, times and headers as stored, the fetch offset and
//! `max_bytes` windows, compressed stored batches, large batches split into several Kafka
//! batches, and stored bytes that do not decode.

use bytes::BytesMut;
use kafka_protocol::records::{Record as KafkaRecord, RecordBatchDecoder};

use super::*;
use crate::protocol::batch::{patch_server_fields, validate, BatchBuilder, Compression, Message};

/// Our batches, built natively, with offsets from `base`.
fn stored(batch_sizes: &[usize], base: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offset = base;
    for (n, &size) in batch_sizes.iter().enumerate() {
        let mut builder = BatchBuilder::new(0, 0);
        for i in 0..size {
            let payload = format!("batch {n} record {i}");
            let headers: &[(&[u8], &[u8])] = &[(b"k\xff", b"v"), (b"dup", b"1"), (b"dup", b"2")];
            let message = Message {
                key: Some(b"key"),
                headers,
                timestamp_us: Some(5_000_123),
                ..Message::payload(payload.as_bytes())
            };
            builder.push(&message).unwrap();
        }
        let mut bytes = builder.finish().unwrap();
        patch_server_fields(&mut bytes, offset, 9);
        offset += size as u64;
        out.extend_from_slice(&bytes);
    }
    out
}

fn decode_all(bytes: BytesMut) -> Vec<KafkaRecord> {
    let mut bytes = bytes.freeze();
    let mut all = Vec::new();
    while !bytes.is_empty() {
        all.extend(RecordBatchDecoder::decode(&mut bytes).unwrap().records);
    }
    all
}

#[test]
fn fetch_keeps_offsets_and_times_and_maps_headers_lossily() {
    let stored = stored(&[3, 4], 100);
    let mut out = BytesMut::new();
    let fetched = fetch_records(&stored, 0, usize::MAX, &mut out).unwrap();
    assert_eq!(fetched, Fetched { records: 7, next_offset: 107, batches: 2 });
    let records = decode_all(out);
    assert_eq!(records.iter().map(|r| r.offset).collect::<Vec<_>>(), (100..107).collect::<Vec<_>>());
    let first = &records[0];
    assert_eq!((first.timestamp, first.producer_id, first.key.as_deref()), (5_000, -1, Some(&b"key"[..])));
    assert_eq!(first.value.as_deref(), Some(&b"batch 0 record 0"[..]));
    let headers: Vec<(&str, Option<&[u8]>)> =
        first.headers.iter().map(|(k, v)| (&**k, v.as_deref())).collect();
    // A non-UTF-8 key is written lossily; of duplicate keys the last value stays, in the first place.
    assert_eq!(headers, [("k\u{fffd}", Some(&b"v"[..])), ("dup", Some(&b"2"[..]))]);
}

#[test]
fn fetch_skips_what_ends_before_the_offset_and_stops_at_max_bytes() {
    let stored = stored(&[3, 4, 5], 0);
    let mut out = BytesMut::new();
    let fetched = fetch_records(&stored, 3, usize::MAX, &mut out).unwrap();
    assert_eq!((fetched.batches, fetched.records, fetched.next_offset), (2, 9, 12));
    assert_eq!(decode_all(out)[0].offset, 3);
    // A batch straddling the offset is written whole.
    let mut out = BytesMut::new();
    fetch_records(&stored, 5, usize::MAX, &mut out).unwrap();
    assert_eq!(decode_all(out)[0].offset, 3);
    // Into an empty out one batch always comes, into a started one only what fits.
    let mut out = BytesMut::new();
    let fetched = fetch_records(&stored, 0, 1, &mut out).unwrap();
    assert_eq!((fetched.batches, fetched.next_offset), (1, 3));
    let fetched = fetch_records(&stored, 3, 1, &mut out).unwrap();
    assert_eq!((fetched.batches, fetched.next_offset), (0, 3));
    let one = out.len();
    let mut out = BytesMut::new();
    let fetched = fetch_records(&stored, 0, one * 2 + one / 2, &mut out).unwrap();
    assert_eq!(fetched.batches, 2);
    // Past the end: nothing.
    let fetched = fetch_records(&stored, 12, usize::MAX, &mut BytesMut::new()).unwrap();
    assert_eq!(fetched, Fetched { records: 0, next_offset: 12, batches: 0 });
}

#[test]
fn fetch_inflates_compressed_batches_and_refuses_garbage() {
    let mut stored = Vec::new();
    for compression in [Compression::Lz4, Compression::Zstd] {
        let mut builder = BatchBuilder::new(0, 0);
        builder.set_compression(compression);
        for i in 0..200 {
            builder
                .push(&Message {
                    timestamp_us: Some(1_000_000),
                    ..Message::payload(format!("{{\"n\":{i}}}").as_bytes())
                })
                .unwrap();
        }
        let mut bytes = builder.finish().unwrap();
        assert!(validate(&bytes).unwrap().is_compressed());
        patch_server_fields(&mut bytes, (stored.len() as u64 > 0) as u64 * 200, 1);
        stored.extend_from_slice(&bytes);
    }
    let mut out = BytesMut::new();
    let fetched = fetch_records(&stored, 0, usize::MAX, &mut out).unwrap();
    assert_eq!((fetched.batches, fetched.records), (2, 400));
    let records = decode_all(out);
    assert_eq!(records[399].value.as_deref(), Some(&b"{\"n\":199}"[..]));
    assert_eq!(records[399].offset, 399);
    let mut out = BytesMut::from(&b"xy"[..]);
    let error = fetch_records(b"garbage that is not a batch", 0, 100, &mut out).unwrap_err();
    assert_eq!((error.kafka_code(), &out[..]), (2, &b"xy"[..]));
}

#[test]
fn a_stored_batch_of_many_records_becomes_several_kafka_batches() {
    let stored = stored(&[10_000], 50);
    let mut out = BytesMut::new();
    let fetched = fetch_records(&stored, 0, usize::MAX, &mut out).unwrap();
    assert_eq!(fetched, Fetched { records: 10_000, next_offset: 10_050, batches: 3 });
    let mut bytes = out.freeze();
    let infos = RecordBatchDecoder::decode_batch_info(&mut bytes.clone()).unwrap();
    let shape: Vec<(i64, i32, i32, i64)> =
        infos.iter().map(|i| (i.min_offset, i.record_count, i.base_sequence, i.producer_id)).collect();
    assert_eq!(shape, [(50, 4096, -1, -1), (4146, 4096, -1, -1), (8242, 1808, -1, -1)]);
    let offsets: Vec<i64> =
        decode_all(BytesMut::from(&bytes.split_off(0)[..])).iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (50..10_050).collect::<Vec<i64>>());
}
