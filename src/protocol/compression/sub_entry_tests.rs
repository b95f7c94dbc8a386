//! Codec 3: writing, validating and inflating RabbitMQ sub-entries, with every compression a
//! RabbitMQ client uses, and the hostile cases (lying headers, bombs, messages that do not add up).

use std::io::Write;

use proptest::prelude::*;

use super::*;
use crate::protocol::batch::{patch_server_fields, validate, BatchBuilder, Message, CODEC_NONE};
use crate::protocol::compression::inflate;

const NOW_US: TimestampUs = 1_700_000_000_123_456;

/// Messages in RabbitMQ's sub-entry framing: `u32` big-endian size, then the bytes.
pub(crate) fn rabbit_framing(messages: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for message in messages {
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
    }
    out
}

/// `plain` compressed as a RabbitMQ client would for `compression`.
pub(crate) fn compress(compression: u8, plain: &[u8]) -> Vec<u8> {
    match compression {
        RABBITMQ_GZIP => {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(plain).unwrap();
            encoder.finish().unwrap()
        }
        RABBITMQ_SNAPPY => {
            let mut encoder = snap::write::FrameEncoder::new(Vec::new());
            encoder.write_all(plain).unwrap();
            encoder.into_inner().unwrap()
        }
        RABBITMQ_LZ4 => {
            let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
            encoder.write_all(plain).unwrap();
            encoder.finish().unwrap()
        }
        // The streaming encoder writes no content size, as the Java client's ZstdOutputStream.
        RABBITMQ_ZSTD => zstd::stream::encode_all(plain, 3).unwrap(),
        other => panic!("no compression {other}"),
    }
}

const COMPRESSIONS: [u8; 4] = [RABBITMQ_GZIP, RABBITMQ_SNAPPY, RABBITMQ_LZ4, RABBITMQ_ZSTD];

fn entry<'a>(compression: u8, records: u16, uncompressed: usize, data: &'a [u8]) -> SubEntryBatch<'a> {
    SubEntryBatch {
        producer_id: 77,
        producer_epoch: 3,
        sequence: 41,
        timestamp_us: NOW_US,
        compression,
        records,
        uncompressed_bytes: uncompressed as u32,
        data,
    }
}

fn sub_entry_batch(compression: u8, messages: &[&[u8]]) -> Vec<u8> {
    let plain = rabbit_framing(messages);
    let data = compress(compression, &plain);
    let mut out = Vec::new();
    write_sub_entry_batch(&entry(compression, messages.len() as u16, plain.len(), &data), &mut out).unwrap();
    out
}

/// The plain batch the native builder writes for the same messages, producer and time.
fn native_equivalent(messages: &[&[u8]]) -> Vec<u8> {
    let mut builder = BatchBuilder::new(77, 41);
    builder.set_producer(77, 3);
    for message in messages {
        builder.push(&Message { timestamp_us: Some(NOW_US), ..Message::payload(message) }).unwrap();
    }
    builder.set_last_sequence(41);
    builder.finish().unwrap()
}

/// Re-seals a tampered batch: the length from the bytes (bytes 8..12) and a fresh CRC (12..16),
/// so only the tampered field is wrong.
fn reseal(mut bytes: Vec<u8>) -> Vec<u8> {
    let length = bytes.len() as u32;
    bytes[8..12].copy_from_slice(&length.to_le_bytes());
    let crc32 = crc32_of(&bytes);
    bytes[12..16].copy_from_slice(&crc32.to_le_bytes());
    bytes
}

#[test]
fn every_compression_inflates_to_the_native_batch() {
    let long = vec![b'x'; 70_000];
    let messages: [&[u8]; 5] = [b"one", b"", b"three", &long, b"\x00\x53\x75\xa0\x02hi"];
    for compression in COMPRESSIONS {
        let mut stored = sub_entry_batch(compression, &messages);
        let header = *validate(&stored).unwrap().header();
        assert_eq!(header.codec(), CODEC_RABBITMQ);
        assert_eq!(header.record_count, 5);
        assert_eq!((header.first_sequence, header.last_sequence), (41, 41));
        assert_eq!(validate(&stored).unwrap().records().count(), 0, "compressed: no records");
        let section = &stored[BATCH_HEADER_BYTES..];
        let sub = SubEntryHeader::decode(section).unwrap();
        assert_eq!(sub.compression, compression);
        assert_eq!(section[0], 0x80 | (compression << 4), "the Osiris type byte");
        assert_eq!(sub.uncompressed_bytes as usize, rabbit_framing(&messages).len());
        patch_server_fields(&mut stored, 1000, 2000);
        let mut expected = native_equivalent(&messages);
        patch_server_fields(&mut expected, 1000, 2000);
        let inflated = inflate(&stored, usize::MAX).unwrap();
        assert_eq!(inflated, expected, "compression {compression}");
        let batch = validate(&inflated).unwrap();
        let values: Vec<&[u8]> = batch.records().map(|record| record.payload).collect();
        assert_eq!(values, messages);
        assert_eq!(batch.records().map(|r| r.offset).collect::<Vec<_>>(), [1000, 1001, 1002, 1003, 1004]);
    }
}

#[test]
fn the_encoded_header_decodes() {
    let header =
        SubEntryHeader { compression: 4, records: 0x1234, uncompressed_bytes: 0x0102_0304, data_bytes: 9 };
    assert_eq!(header.encode(), [0xc0, 0x12, 0x34, 1, 2, 3, 4, 0, 0, 0, 9]);
    assert_eq!(SubEntryHeader::decode(&header.encode()), Ok(header));
}

#[test]
fn the_writer_refuses_what_cannot_be_stored() {
    let mut out = vec![7];
    let refused = [
        entry(RABBITMQ_GZIP, 0, 10, b"x"),
        entry(RABBITMQ_NONE, 1, 10, b"x"),
        entry(5, 1, 10, b"x"),
        entry(RABBITMQ_GZIP, 4, 15, b"x"),
        entry(RABBITMQ_GZIP, 1, BATCH_BYTES_MAX, b"x"),
    ];
    for entry in refused {
        assert!(write_sub_entry_batch(&entry, &mut out).is_err(), "{entry:?}");
        assert_eq!(out, [7], "left as it was");
    }
    let huge = vec![0u8; BATCH_BYTES_MAX];
    let too_large = write_sub_entry_batch(&entry(RABBITMQ_GZIP, 1, 10, &huge), &mut out);
    assert!(matches!(too_large, Err(BatchError::TooLarge { .. })));
    // The largest that fits: records_bytes exactly BATCH_BYTES_MAX - 128.
    let fits = entry(RABBITMQ_GZIP, 1, BATCH_BYTES_MAX - BATCH_HEADER_BYTES - 16, b"x");
    assert!(write_sub_entry_batch(&fits, &mut out).is_ok());
}

#[test]
fn validate_checks_the_entry_header_against_the_batch_header() {
    let good = sub_entry_batch(RABBITMQ_GZIP, &[b"a", b"bc"]);
    assert!(validate(&good).is_ok());
    let at = BATCH_HEADER_BYTES;
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut with = |what: &'static str, change: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = good.clone();
        change(&mut bytes);
        cases.push((what, reseal(bytes)));
    };
    with("simple-entry type bit", &|b| b[at] &= 0x7f);
    with("reserved bits", &|b| b[at] |= 0x01);
    with("compression none", &|b| b[at] = 0x80);
    with("compression 5", &|b| b[at] = 0x80 | (5 << 4));
    with("message count", &|b| b[at + 2] = 3);
    with("data size", &|b| b[at + 10] ^= 1);
    with("uncompressed size", &|b| b[at + 6] ^= 1);
    with("trailing byte", &|b| b.push(0));
    with("record count", &|b| b[32] = 3);
    with("filter bit", &|b| b[6] |= 0b1000);
    with("ttl bit", &|b| b[6] |= 0b1_0000);
    with("bloom bit", &|b| b[72] = 1);
    with("timestamps", &|b| b[48] ^= 1);
    with("section shorter than the entry header", &|b| b.truncate(at + 5));
    for (what, bytes) in cases {
        assert!(validate(&bytes).is_err(), "{what}");
        assert!(inflate(&bytes, usize::MAX).is_err(), "{what}");
    }
    // Version 1 has no codec 3.
    let mut v1 = good.clone();
    v1[4] = 1;
    assert_eq!(BatchHeader::decode(&v1), Err(BatchError::UnsupportedCodec(CODEC_RABBITMQ)));
}

/// A codec-3 batch holding `data` whose header claims `records` messages of `uncompressed` bytes.
fn lying(compression: u8, records: u16, uncompressed: usize, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_sub_entry_batch(&entry(compression, records, uncompressed, data), &mut out).unwrap();
    out
}

#[test]
fn lying_sizes_and_counts_fail_to_inflate() {
    let plain = rabbit_framing(&[b"alpha", b"beta", b"gamma"]);
    for compression in COMPRESSIONS {
        let data = compress(compression, &plain);
        let n = plain.len();
        for (records, uncompressed) in [(3, n - 1), (3, n + 1), (2, n), (4, n), (1, n)] {
            let batch = lying(compression, records, uncompressed, &data);
            assert!(validate(&batch).is_ok(), "the broker cannot tell without inflating");
            let error = inflate(&batch, usize::MAX).unwrap_err();
            assert!(
                matches!(error, BatchError::Decompress(_)),
                "{compression} {records} {uncompressed}: {error}"
            );
        }
        // A size field pointing past the data.
        let mut bad = plain.clone();
        bad[3] = 200;
        let batch = lying(compression, 3, n, &compress(compression, &bad));
        assert!(matches!(inflate(&batch, usize::MAX), Err(BatchError::Decompress(_))));
        // Truncated compressed bytes (cut into the data: LZ4 frames may end without their
        // end mark).
        let mut corrupt = data.clone();
        let middle = corrupt.len() / 2;
        corrupt[middle] ^= 0x55;
        for data in [&data[..data.len() - 9], &data[..1]] {
            let batch = lying(compression, 3, n, data);
            assert!(inflate(&batch, usize::MAX).is_err(), "{compression}");
        }
        // Flipped bits: gzip and snappy carry checksums; LZ4 and zstd frames need not, so a flip
        // may inflate to other bytes (then the messages are what the client sent, garbled, or do
        // not add up), but never panics.
        let result = inflate(&lying(compression, 3, n, &corrupt), usize::MAX);
        if matches!(compression, RABBITMQ_GZIP | RABBITMQ_SNAPPY) {
            assert!(result.is_err(), "{compression}");
        }
        // Another codec's bytes.
        let other = if compression == RABBITMQ_GZIP { RABBITMQ_ZSTD } else { RABBITMQ_GZIP };
        let batch = lying(other, 3, n, &data);
        assert!(inflate(&batch, usize::MAX).is_err(), "{compression} read as {other}");
        // The reader's limit.
        let good = lying(compression, 3, n, &data);
        assert!(matches!(inflate(&good, 64), Err(BatchError::Decompress(_))));
        assert!(inflate(&good, BATCH_HEADER_BYTES + n + 48).is_ok());
    }
}

#[test]
fn a_bomb_stops_at_the_declared_size() {
    let zeros = vec![0u8; 16 << 20];
    for compression in COMPRESSIONS {
        let data = compress(compression, &zeros);
        assert!(data.len() < 1 << 20, "{compression}: {} bytes", data.len());
        let bomb = lying(compression, 1, 1024, &data);
        let error = inflate(&bomb, usize::MAX).unwrap_err();
        assert!(matches!(error, BatchError::Decompress(_)), "{compression}: {error}");
    }
}

#[test]
fn inflated_batches_have_no_codec_bits() {
    let batch = sub_entry_batch(RABBITMQ_LZ4, &[b"m"]);
    let inflated = inflate(&batch, usize::MAX).unwrap();
    assert_eq!(BatchHeader::decode(&inflated).unwrap().codec(), CODEC_NONE);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// The in-place rewrite gives exactly the native builder's batch, for any messages.
    #[test]
    fn any_messages_inflate_to_the_native_batch(
        messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..40),
        compression in proptest::sample::select(COMPRESSIONS.to_vec()),
    ) {
        let messages: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        let stored = sub_entry_batch(compression, &messages);
        prop_assert!(validate(&stored).is_ok());
        prop_assert_eq!(inflate(&stored, usize::MAX).unwrap(), native_equivalent(&messages));
    }
}
