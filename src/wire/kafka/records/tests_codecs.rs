//! Kafka's codecs on produce, framed as the clients frame them (gzip; snappy xerial-framed and
//! raw; LZ4 frames; zstd with and without a content size), decompression bombs against the
//! budget, the fuzz seeds, and the one-off cost measurement.

use std::io::Write;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::records::{
    Compression as KafkaCompression, Record as KafkaRecord, RecordBatchEncoder, RecordEncodeOptions,
};

use super::fuzz::check_round_trip;
use super::tests::{idempotent, kafka_record, plain_batch, produce, record, LIMITS, T0_MS};
use super::*;
use crate::protocol::batch::{batches, validate, CODEC_LZ4};

/// How a test client compresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    Gzip,
    SnappyXerial,
    SnappyRaw,
    Lz4,
    ZstdStream,
    ZstdBulk,
}

const CODECS: [Codec; 6] =
    [Codec::Gzip, Codec::SnappyXerial, Codec::SnappyRaw, Codec::Lz4, Codec::ZstdStream, Codec::ZstdBulk];

impl Codec {
    fn kafka(self) -> KafkaCompression {
        match self {
            Codec::Gzip => KafkaCompression::Gzip,
            Codec::SnappyXerial | Codec::SnappyRaw => KafkaCompression::Snappy,
            Codec::Lz4 => KafkaCompression::Lz4,
            Codec::ZstdStream | Codec::ZstdBulk => KafkaCompression::Zstd,
        }
    }

    /// `plain` as the clients frame it.
    fn compress(self, plain: &[u8]) -> Vec<u8> {
        match self {
            Codec::Gzip => {
                let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                encoder.write_all(plain).unwrap();
                encoder.finish().unwrap()
            }
            Codec::SnappyXerial => {
                let mut out = vec![0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0, 0, 0, 0, 1, 0, 0, 0, 1];
                for chunk in plain.chunks(32 * 1024) {
                    let block = snap::raw::Encoder::new().compress_vec(chunk).unwrap();
                    out.extend_from_slice(&(block.len() as u32).to_be_bytes());
                    out.extend_from_slice(&block);
                }
                out
            }
            Codec::SnappyRaw => snap::raw::Encoder::new().compress_vec(plain).unwrap(),
            Codec::Lz4 => {
                let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
                encoder.write_all(plain).unwrap();
                encoder.finish().unwrap()
            }
            // The streaming encoder writes no content size (the Java client); bulk writes one
            // (librdkafka).
            Codec::ZstdStream => zstd::stream::encode_all(plain, 3).unwrap(),
            Codec::ZstdBulk => zstd::bulk::compress(plain, 3).unwrap(),
        }
    }
}

/// One Kafka batch of `records` compressed with `codec`.
fn compressed_batch(records: &[KafkaRecord], codec: Codec) -> Bytes {
    let mut out = BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression: codec.kafka() };
    RecordBatchEncoder::encode_with_custom_compression(
        &mut out,
        records,
        &options,
        Some(|plain: &mut BytesMut, out: &mut BytesMut, _: KafkaCompression| {
            out.put_slice(&codec.compress(plain));
            Ok(())
        }),
    )
    .unwrap();
    out.freeze()
}

#[test]
fn every_codec_round_trips_and_is_stored_as_lz4() {
    let records: Vec<KafkaRecord> = (0..500).map(record).collect();
    let plain = plain_batch(&records);
    let (_, expected) = produce(&plain).unwrap();
    for codec in CODECS {
        let input = compressed_batch(&records, codec);
        assert!(input.len() * 2 < plain.len(), "{codec:?} compresses");
        let (produced, out) = produce(&input).unwrap();
        assert_eq!((produced.batches, produced.records), (1, 500), "{codec:?}");
        let batch = validate(&out).unwrap();
        assert_eq!(batch.header().codec(), CODEC_LZ4, "{codec:?}: compressed input is stored compressed");
        assert!(out.len() * 2 < expected.len(), "{codec:?}: {} against {} plain", out.len(), expected.len());
        let inflated = crate::protocol::batch::inflate(&out, usize::MAX).unwrap();
        let records = |bytes: &[u8]| -> Vec<(Option<Vec<u8>>, Vec<u8>, u64)> {
            validate(bytes)
                .unwrap()
                .records()
                .map(|r| (r.key.map(<[u8]>::to_vec), r.payload.to_vec(), r.timestamp_us))
                .collect()
        };
        assert_eq!(records(&inflated), records(&expected), "{codec:?}");
        check_round_trip(&input);
    }
}

#[test]
fn an_idempotent_compressed_batch_among_plain_ones() {
    let first = plain_batch(&idempotent((0..3).map(record).collect(), 9, 1, 0));
    let second = compressed_batch(&idempotent((0..40).map(record).collect(), 9, 1, 3), Codec::ZstdStream);
    let input = Bytes::from([first.as_ref(), second.as_ref()].concat());
    let (produced, out) = produce(&input).unwrap();
    assert_eq!((produced.batches, produced.records, produced.last_sequence), (2, 43, Some(42)));
    let codecs: Vec<u8> = batches(&out).map(|b| b.unwrap().header().codec()).collect();
    assert_eq!(codecs, [0, CODEC_LZ4]);
    check_round_trip(&input);
}

#[test]
fn bombs_stop_at_the_budget() {
    // 8 MiB of zeros in one value: a few KB compressed.
    let bomb = vec![kafka_record(0, T0_MS, None, Some(Bytes::from(vec![0u8; 8 << 20])), Vec::new())];
    let limits = ProduceLimits { max_inflated_bytes: 1 << 20 };
    for codec in CODECS {
        let input = compressed_batch(&bomb, codec);
        assert!(input.len() < 512 << 10, "{codec:?}: {} bytes", input.len());
        let mut out = Vec::new();
        let error = produce_batches(&input, None, &mut out, &limits).unwrap_err();
        assert!(matches!(error, RecordsError::TooLarge(_)), "{codec:?}: {error}");
        assert!(out.is_empty());
    }
    // The budget is the call's: two batches of 600 KiB each pass one by one, not together.
    let half = vec![kafka_record(0, T0_MS, None, Some(Bytes::from(vec![0u8; 600 << 10])), Vec::new())];
    let one = compressed_batch(&half, Codec::Lz4);
    let mut out = Vec::new();
    produce_batches(&one, None, &mut out, &limits).unwrap();
    let two = Bytes::from([one.as_ref(), one.as_ref()].concat());
    let error = produce_batches(&two, None, &mut Vec::new(), &limits).unwrap_err();
    assert!(matches!(error, RecordsError::TooLarge(_)), "{error}");
}

#[test]
fn corrupt_compressed_records_are_corrupt() {
    let records: Vec<KafkaRecord> = (0..50).map(record).collect();
    for codec in CODECS {
        let mut input = compressed_batch(&records, codec).to_vec();
        let end = input.len();
        // Damage the compressed bytes, keep the CRC right: only the codec can tell.
        for byte in &mut input[super::produce::BATCH_HEADER_BYTES + 2..end - 4] {
            *byte = byte.wrapping_mul(31).wrapping_add(7);
        }
        super::tests::reseal_at(&mut input, 0);
        let error = produce(&Bytes::from(input)).unwrap_err();
        assert_eq!(error.kafka_code(), 2, "{codec:?}: {error}");
    }
}

/// Writes the `kafka_request` fuzz seeds when `RINGBROKER_WRITE_SEEDS=1`: Produce requests
/// (v3 and v9) with plain, idempotent and every codec's batches, and records inputs (mode 1).
#[test]
fn seeds() {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ApiKey, ProduceRequest, RequestHeader, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};

    let records: Vec<KafkaRecord> = (0..6).map(record).collect();
    let mut inputs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut partitions = vec![plain_batch(&records), plain_batch(&idempotent(records.clone(), 4, 0, 0))];
    partitions.extend(CODECS.iter().map(|&codec| compressed_batch(&records, codec)));
    for version in [3i16, 9] {
        let data = partitions
            .iter()
            .enumerate()
            .map(|(index, records)| {
                PartitionProduceData::default().with_index(index as i32).with_records(Some(records.clone()))
            })
            .collect();
        let topic = TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("t")))
            .with_partition_data(data);
        let request =
            ProduceRequest::default().with_acks(-1).with_timeout_ms(1000).with_topic_data(vec![topic]);
        let mut frame = BytesMut::new();
        let header = RequestHeader::default()
            .with_request_api_key(ApiKey::Produce as i16)
            .with_request_api_version(version)
            .with_correlation_id(1)
            .with_client_id(Some(StrBytes::from_static_str("seed")));
        header.encode(&mut frame, ApiKey::Produce.request_header_version(version)).unwrap();
        request.encode(&mut frame, version).unwrap();
        super::fuzz::fuzz_request(&[[0u8].as_slice(), &frame].concat());
        inputs.push((format!("seed-produce-v{version}"), [[0u8].as_slice(), &frame].concat()));
    }
    for (n, partition) in partitions.iter().enumerate() {
        inputs.push((format!("seed-records-{n}"), [[1u8].as_slice(), partition].concat()));
    }
    if std::env::var_os("RINGBROKER_WRITE_SEEDS").is_some() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/kafka_request");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &inputs {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

/// The conversion's cost per record, 1 KB values, 1000-record batches. Run once, in release:
/// `cargo test --release --lib wire::kafka::records::tests_codecs::cost -- --ignored --nocapture`
#[test]
#[ignore]
fn cost() {
    use std::time::Instant;
    let records: Vec<KafkaRecord> = (0..1000)
        .map(|i| {
            let value: Vec<u8> = (0..1024)
                .map(|j| b"abcdefghijklmnopqrstuvwxyz0123456789 {}\":,"[(i * 7 + j * 13 + j / 5) % 44])
                .collect();
            kafka_record(
                i as i64,
                T0_MS + i as i64,
                Some(Bytes::from(format!("key-{i}"))),
                Some(Bytes::from(value)),
                Vec::new(),
            )
        })
        .collect();
    let rounds = 200;
    for (name, input) in [
        ("plain", plain_batch(&records)),
        ("lz4", compressed_batch(&records, Codec::Lz4)),
        ("zstd", compressed_batch(&records, Codec::ZstdBulk)),
    ] {
        let mut out = Vec::with_capacity(2 << 20);
        let start = Instant::now();
        for _ in 0..rounds {
            out.clear();
            produce_batches(&input, None, &mut out, &LIMITS).unwrap();
        }
        let produce_ns = start.elapsed().as_nanos() as f64 / (rounds * 1000) as f64;
        let stored = out.clone();
        let mut fetched = BytesMut::with_capacity(2 << 20);
        let start = Instant::now();
        for _ in 0..rounds {
            fetched.clear();
            fetch_records(&stored, 0, usize::MAX, &mut fetched).unwrap();
        }
        let fetch_ns = start.elapsed().as_nanos() as f64 / (rounds * 1000) as f64;
        println!(
            "{name:>5}: Kafka batch {} B, stored {} B, fetched {} B; produce {produce_ns:.0} ns/record, fetch {fetch_ns:.0} ns/record",
            input.len(),
            stored.len(),
            fetched.len()
        );
    }
    println!("size_of kafka_protocol Record: {} B", std::mem::size_of::<KafkaRecord>());
}

/// Fuzzing finding, against the unpatched crate (the fuzz workspace missed the vendored one): a
/// Produce v9 frame whose topic array claims 3 × 2^30 entries made the decoder reserve 400 GB.
/// With the vendored crate it is an error.
#[test]
fn finding_a_huge_topic_array_is_refused() {
    super::fuzz::fuzz_request(include_bytes!("finding-topic-array.bin"));
    let frame = Bytes::from_static(&include_bytes!("finding-topic-array.bin")[1..]);
    assert!(crate::wire::kafka::frame::decode_request(frame).is_err());
}

/// Fuzzing finding: a record whose timestamp delta overflows the batch's base timestamp made the
/// crate's `+` panic in debug builds (vendored crate now adds wrapping, as Kafka does).
#[test]
fn finding_a_timestamp_delta_past_i64_does_not_panic() {
    super::fuzz::fuzz_request(include_bytes!("finding-timestamp-overflow.bin"));
}
