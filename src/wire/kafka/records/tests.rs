//! Kafka records both ways: mapping of keys, values, headers and timestamps, producers and
//! sequences, splits, refusals with their Kafka codes, fetch windows; and properties over random
//! bytes and random records. Codecs and bombs are in `tests_codecs.rs`.

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression as KafkaCompression, Record as KafkaRecord, RecordBatchDecoder, RecordBatchEncoder,
    RecordEncodeOptions, TimestampType,
};
use proptest::prelude::*;

use super::fuzz::{check_round_trip, crc32c};
use super::*;
use crate::protocol::batch::{batches, patch_server_fields, validate, BatchBuilder, Compression, Message};

pub(super) const T0_MS: i64 = 1_700_000_000_000;
pub(super) const LIMITS: ProduceLimits = ProduceLimits { max_inflated_bytes: 64 << 20 };

/// Record `i` of a test batch: a key on even records, a header on every third, a value on all
/// but every fifth, timestamps one millisecond apart.
pub(super) fn record(i: usize) -> KafkaRecord {
    let mut headers = indexless();
    if i % 3 == 0 {
        headers.push(("trace".into(), Some(Bytes::from(format!("t-{i}")))));
        headers.push(("empty".into(), None));
    }
    kafka_record(
        i as i64,
        T0_MS + i as i64,
        (i % 2 == 0).then(|| Bytes::from(format!("key-{i}"))),
        (i % 5 != 4).then(|| Bytes::from(format!("value {i} {}", "x".repeat(i % 40)))),
        headers,
    )
}

fn indexless() -> Vec<(kafka_protocol::protocol::StrBytes, Option<Bytes>)> {
    Vec::new()
}

pub(super) fn kafka_record(
    offset: i64,
    timestamp: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
    headers: Vec<(kafka_protocol::protocol::StrBytes, Option<Bytes>)>,
) -> KafkaRecord {
    KafkaRecord {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset,
        sequence: -1 + offset as i32,
        timestamp,
        key,
        value,
        headers: headers.into_iter().collect(),
    }
}

/// The records made idempotent: producer `id`/`epoch`, sequences from `base_sequence`.
pub(super) fn idempotent(
    mut records: Vec<KafkaRecord>,
    id: i64,
    epoch: i16,
    base_sequence: i32,
) -> Vec<KafkaRecord> {
    for record in &mut records {
        record.producer_id = id;
        record.producer_epoch = epoch;
        record.sequence = base_sequence.wrapping_add(record.offset as i32);
    }
    records
}

/// One uncompressed Kafka batch of `records`, as a client writes it.
pub(super) fn plain_batch(records: &[KafkaRecord]) -> Bytes {
    let mut out = BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression: KafkaCompression::None };
    RecordBatchEncoder::encode(&mut out, records, &options).unwrap();
    out.freeze()
}

/// Rewrites the CRC-32C of the batch starting at `at` (after a deliberate change).
pub(super) fn reseal_at(bytes: &mut [u8], at: usize) {
    let length = i32::from_be_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
    let crc = crc32c(&bytes[at + 21..at + 12 + length]);
    bytes[at + 17..at + 21].copy_from_slice(&crc.to_be_bytes());
}

pub(super) fn produce(records: &Bytes) -> Result<(Produced, Vec<u8>), RecordsError> {
    let mut out = Vec::new();
    produce_batches(records, None, &mut out, &LIMITS).map(|produced| (produced, out))
}

#[test]
fn records_keep_keys_values_headers_and_timestamps() {
    let records: Vec<KafkaRecord> = (0..1000).map(record).collect();
    let input = plain_batch(&records);
    let (produced, out) = produce(&input).unwrap();
    assert_eq!(
        produced,
        Produced { batches: 1, records: 1000, producer: None, first_sequence: None, last_sequence: None }
    );
    let batch = validate(&out).unwrap();
    assert!(!batch.is_compressed(), "uncompressed input stays uncompressed");
    assert_eq!((batch.header().producer_id, batch.header().first_sequence), (0, 0));
    for (ours, kafka) in batch.records().zip(&records) {
        assert_eq!(ours.key, kafka.key.as_deref());
        assert_eq!(ours.payload, kafka.value.as_deref().unwrap_or(b""), "a null value is stored empty");
        assert_eq!(ours.timestamp_us, kafka.timestamp as u64 * 1000);
        let headers: Vec<(&[u8], &[u8])> = ours.headers().collect();
        let expected: Vec<(&[u8], &[u8])> =
            kafka.headers.iter().map(|(k, v)| (k.as_bytes(), v.as_deref().unwrap_or(b""))).collect();
        assert_eq!(headers, expected);
    }
    check_round_trip(&input);
}

#[test]
fn idempotent_batches_keep_their_producer_and_sequences() {
    let records = idempotent((0..10).map(record).collect(), 5, 2, 100);
    let input = plain_batch(&records);
    let (produced, out) = produce(&input).unwrap();
    assert_eq!(produced.producer, Some(KafkaProducer { id: 5, epoch: 2 }));
    assert_eq!((produced.first_sequence, produced.last_sequence), (Some(100), Some(109)));
    let header = *validate(&out).unwrap().header();
    assert_eq!((header.producer_id, header.producer_epoch), (5, 2));
    assert_eq!((header.first_sequence, header.last_sequence), (100, 109));
    // With the caller's own producer for it.
    let mut ours = Vec::new();
    produce_batches(&input, Some((77, 9)), &mut ours, &LIMITS).unwrap();
    let header = *validate(&ours).unwrap().header();
    assert_eq!((header.producer_id, header.producer_epoch, header.first_sequence), (77, 9, 100));
    // An anonymous batch ignores the caller's producer.
    let mut anonymous = Vec::new();
    produce_batches(&plain_batch(&[record(0)]), Some((77, 9)), &mut anonymous, &LIMITS).unwrap();
    assert_eq!(validate(&anonymous).unwrap().header().producer_id, 0);
    check_round_trip(&input);
}

#[test]
fn sequences_wrap_as_kafka_counts_them() {
    let records = idempotent((0..4).map(record).collect(), 1, 0, i32::MAX - 1);
    let (produced, out) = produce(&plain_batch(&records)).unwrap();
    assert_eq!((produced.first_sequence, produced.last_sequence), (Some(i32::MAX - 1), Some(1)));
    let header = *validate(&out).unwrap().header();
    assert_eq!(header.last_sequence, i32::MAX as u64 + 2, "ours do not wrap");
}

#[test]
fn several_batches_of_one_producer_must_follow_each_other() {
    let first = plain_batch(&idempotent((0..3).map(record).collect(), 5, 0, 10));
    let next = plain_batch(&idempotent((0..2).map(record).collect(), 5, 0, 13));
    let gap = plain_batch(&idempotent((0..2).map(record).collect(), 5, 0, 20));
    let other = plain_batch(&idempotent((0..2).map(record).collect(), 6, 0, 13));
    let joined = |a: &Bytes, b: &Bytes| Bytes::from([a.as_ref(), b.as_ref()].concat());
    let (produced, out) = produce(&joined(&first, &next)).unwrap();
    assert_eq!((produced.batches, produced.records), (2, 5));
    assert_eq!((produced.first_sequence, produced.last_sequence), (Some(10), Some(14)));
    assert_eq!(batches(&out).count(), 2);
    assert!(matches!(produce(&joined(&first, &gap)), Err(RecordsError::InvalidRecord(_))));
    assert!(matches!(produce(&joined(&first, &other)), Err(RecordsError::InvalidRecord(_))));
    check_round_trip(&joined(&first, &next));
}

#[test]
fn timestamps_going_back_or_too_far_split_the_batch_with_consecutive_sequences() {
    let mut records: Vec<KafkaRecord> = (0..6).map(record).collect();
    records[2].timestamp = T0_MS - 50; // before the first: a new batch starts here
    records[4].timestamp = T0_MS + 5 * 3_600_000; // 5 h later: past our u32 µs window
    records[5].timestamp = T0_MS + 5 * 3_600_000 + 1;
    let input = plain_batch(&idempotent(records, 3, 1, 40));
    let (produced, out) = produce(&input).unwrap();
    assert_eq!((produced.batches, produced.records), (3, 6));
    let ranges: Vec<(u64, u64, u32)> = batches(&out)
        .map(|b| b.unwrap())
        .map(|b| (b.header().first_sequence, b.header().last_sequence, b.header().record_count))
        .collect();
    assert_eq!(ranges, [(40, 41, 2), (42, 43, 2), (44, 45, 2)]);
    check_round_trip(&input);
}

#[test]
fn a_batch_larger_than_ours_splits_and_a_record_larger_than_ours_is_refused() {
    let big = Bytes::from(vec![7u8; 6 << 20]);
    let records: Vec<KafkaRecord> =
        (0..3).map(|i| kafka_record(i, T0_MS, None, Some(big.clone()), Vec::new())).collect();
    let (produced, out) = produce(&plain_batch(&records)).unwrap();
    assert_eq!((produced.batches, produced.records), (2, 3));
    assert!(batches(&out).all(|b| b.is_ok()));
    let huge = kafka_record(0, T0_MS, None, Some(Bytes::from(vec![1u8; 17 << 20])), Vec::new());
    let error = produce(&plain_batch(&[huge])).unwrap_err();
    assert!(matches!(error, RecordsError::TooLarge(_)), "{error}");
    assert_eq!(error.kafka_code(), 10);
}

#[test]
fn negative_and_log_append_timestamps_become_the_append_time() {
    let before = crate::model::now_us();
    let mut records: Vec<KafkaRecord> = (0..3).map(record).collect();
    for record in &mut records {
        record.timestamp = -1;
    }
    let (_, out) = produce(&plain_batch(&records)).unwrap();
    assert!(validate(&out).unwrap().records().all(|r| r.timestamp_us >= before));
    let mut log_append = plain_batch(&(0..3).map(record).collect::<Vec<_>>()).to_vec();
    log_append[22] |= 1 << 3;
    reseal_at(&mut log_append, 0);
    let (_, out) = produce(&Bytes::from(log_append)).unwrap();
    assert!(validate(&out).unwrap().records().all(|r| r.timestamp_us >= before));
}

#[test]
fn refusals_carry_kafka_codes_and_leave_out_as_it_was() {
    let good = plain_batch(&(0..5).map(record).collect::<Vec<_>>());
    let changed = |at: usize, value: u8, reseal: bool| {
        let mut bytes = good.to_vec();
        bytes[at] = value;
        if reseal {
            reseal_at(&mut bytes, 0);
        }
        Bytes::from(bytes)
    };
    let cases: Vec<(&str, Bytes, i16)> = vec![
        ("empty", Bytes::new(), 2),
        ("crc", changed(good.len() - 1, good[good.len() - 1] ^ 1, false), 2),
        ("magic 1", changed(16, 1, false), 43),
        ("magic 0", changed(16, 0, false), 43),
        ("magic 3", changed(16, 3, false), 2),
        ("codec 6", changed(22, 6, true), 2),
        ("transactional", changed(22, 1 << 4, true), 43),
        ("control", changed(22, 1 << 5, true), 43),
        ("transactional, damaged", changed(22, 1 << 4, false), 2),
        ("count", changed(60, 9, true), 87),
        ("huge count", changed(57, 0x7f, true), 87),
        (
            "count past the bytes",
            {
                let mut bytes = good.to_vec();
                bytes[23..27].copy_from_slice(&99_999i32.to_be_bytes());
                bytes[57..61].copy_from_slice(&100_000i32.to_be_bytes());
                reseal_at(&mut bytes, 0);
                Bytes::from(bytes)
            },
            2,
        ),
        ("length", changed(11, 200, false), 2),
        ("negative length", changed(8, 0x80, false), 2),
        ("epoch without producer", changed(52, 3, true), 0),
    ];
    for (name, input, code) in cases {
        let mut out = vec![1, 2, 3];
        match produce_batches(&input, None, &mut out, &LIMITS) {
            Ok(_) => assert_eq!(code, 0, "{name} converted"),
            Err(error) => {
                assert_eq!(error.kafka_code(), code, "{name}: {error}");
                assert_eq!(out, [1, 2, 3], "{name}: out untouched");
            }
        }
    }
    // A producer id with a negative epoch or sequence.
    let mut bad = idempotent((0..2).map(record).collect(), 5, 0, 0);
    bad[0].producer_epoch = -1;
    bad[1].producer_epoch = -1;
    assert!(matches!(produce(&plain_batch(&bad)), Err(RecordsError::InvalidRecord(_))));
    // Keys and headers over our limits.
    let long_key = kafka_record(0, T0_MS, Some(Bytes::from(vec![b'k'; 5000])), None, Vec::new());
    let many_headers =
        kafka_record(0, T0_MS, None, None, (0..65).map(|i| (format!("h{i}").into(), None)).collect());
    for record in [long_key, many_headers] {
        let error = produce(&plain_batch(&[record])).unwrap_err();
        assert!(matches!(error, RecordsError::InvalidRecord(_)), "{error}");
    }
}

#[test]
fn truncated_and_garbage_input_is_refused_without_panicking() {
    let good = plain_batch(&(0..20).map(record).collect::<Vec<_>>());
    for end in 0..good.len() {
        assert!(produce(&good.slice(..end)).is_err(), "prefix of {end} bytes");
    }
    let mut trailing = good.to_vec();
    trailing.extend_from_slice(&[0, 0, 0]);
    assert!(produce(&Bytes::from(trailing)).is_err());
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..2000 {
        let len = (state % 200) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let _ = produce(&Bytes::from(bytes));
    }
}

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

#[test]
fn a_record_count_whose_decoded_records_pass_the_limit_is_too_large() {
    let records: Vec<KafkaRecord> =
        (0..2000).map(|i| kafka_record(i, T0_MS, None, None, Vec::new())).collect();
    let input = plain_batch(&records);
    let small = ProduceLimits { max_inflated_bytes: 100 << 10 };
    let error = produce_batches(&input, None, &mut Vec::new(), &small).unwrap_err();
    assert!(matches!(error, RecordsError::TooLarge(_)), "{error}");
    assert_eq!(produce(&input).unwrap().0.records, 2000);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400), seal in any::<bool>()) {
        super::fuzz::fuzz_request(&[[u8::from(seal)].as_slice(), &bytes].concat());
        let _ = produce(&Bytes::from(bytes));
    }

    #[test]
    fn random_records_round_trip(
        records in proptest::collection::vec(
            (proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
             proptest::option::of(proptest::collection::vec(any::<u8>(), 0..60)),
             -1i64..10_000,
             proptest::collection::vec(("[a-z]{0,6}", proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8))), 0..3)),
            1..40),
        producer in proptest::option::of((0i64..1000, 0i16..10, 0i32..i32::MAX)),
    ) {
        let records: Vec<KafkaRecord> = records
            .into_iter()
            .enumerate()
            .map(|(i, (key, value, timestamp, headers))| {
                let headers = headers.into_iter().map(|(k, v)| (k.into(), v.map(Bytes::from))).collect();
                kafka_record(i as i64, T0_MS + timestamp, key.map(Bytes::from), value.map(Bytes::from), headers)
            })
            .collect();
        let records = match producer {
            Some((id, epoch, sequence)) => idempotent(records, id, epoch, sequence),
            None => records,
        };
        check_round_trip(&plain_batch(&records));
    }
}
