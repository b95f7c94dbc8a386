//! `deliver_frames`: the frame layout byte by byte, trimming to `[start_offset, next_offset)`,
//! sub-entry batches whole, native compressed batches inflated, the 65,535-entry split,
//! `chunk_count`, and the errors; `parse_chunk` refuses every tampered or truncated frame.

use super::*;
use crate::protocol::batch::{patch_server_fields, BatchBuilder, Compression, Message};
use crate::protocol::compression::sub_entry::{write_sub_entry_batch, SubEntryBatch, RABBITMQ_GZIP};

const APPEND_US: u64 = 1_700_000_000_123_456;

/// A plain batch of `values` at `base`, each record with a key, a header and (odd ones) a
/// filter value, none of which a RabbitMQ consumer sees.
fn stored(base: u64, values: &[&[u8]], compression: Compression) -> Vec<u8> {
    let mut builder = BatchBuilder::new(0, 0);
    builder.set_compression(compression);
    for (i, value) in values.iter().enumerate() {
        let headers: &[(&[u8], &[u8])] = &[(b"h", b"v")];
        let filter: Option<&[u8]> = if i % 2 == 1 { Some(b"f") } else { None };
        builder
            .push(&Message { key: Some(b"k"), filter_value: filter, headers, ..Message::payload(value) })
            .unwrap();
    }
    let mut bytes = builder.finish().unwrap();
    patch_server_fields(&mut bytes, base, APPEND_US);
    bytes
}

fn deliver(version: u16, batches: &[u8], start: u64, next: u64) -> (u32, Vec<ParsedChunk>) {
    let mut out = vec![0xee];
    let chunks = deliver_frames(7, version, 99, batches, (start, next), None, &mut out).unwrap();
    assert_eq!(out[0], 0xee, "appended after what was there");
    let parsed = parse_frames(&out[1..]).unwrap();
    assert_eq!(parsed.len(), chunks as usize);
    assert_eq!(chunk_count(batches, start, next), chunks);
    (chunks, parsed)
}

fn values(chunk: &ParsedChunk) -> Vec<(u64, Vec<u8>)> {
    chunk.messages().unwrap()
}

#[test]
fn a_version_1_frame_byte_by_byte() {
    let batch = stored(42, &[b"ab", b"c"], Compression::None);
    let mut out = vec![];
    assert_eq!(deliver_frames(7, 1, 99, &batch, (0, 100), None, &mut out), Ok(1));
    let data = [0, 0, 0, 2, b'a', b'b', 0, 0, 0, 1, b'c'];
    let mut expected = vec![];
    expected.extend_from_slice(&((2 + 2 + 1 + 48 + data.len()) as u32).to_be_bytes());
    expected.extend_from_slice(&[0, 8, 0, 1, 7]); // key Deliver, version 1, subscription 7
    expected.extend_from_slice(&[0x50, 0, 0, 2, 0, 0, 0, 2]); // magic/version, user, 2 entries, 2 records
    expected.extend_from_slice(&(APPEND_US as i64 / 1000).to_be_bytes());
    expected.extend_from_slice(&1u64.to_be_bytes()); // epoch
    expected.extend_from_slice(&42u64.to_be_bytes()); // first offset
    expected.extend_from_slice(&crc32fast::hash(&data).to_be_bytes());
    expected.extend_from_slice(&(data.len() as u32).to_be_bytes());
    expected.extend_from_slice(&[0; 8]); // trailer length, Bloom size, reserved
    expected.extend_from_slice(&data);
    assert_eq!(out, expected);
}

#[test]
fn version_2_carries_the_committed_offset() {
    let batch = stored(42, &[b"ab"], Compression::None);
    let (_, chunks) = deliver(2, &batch, 0, 100);
    assert_eq!((chunks[0].version, chunks[0].committed_offset), (2, Some(99)));
    let (_, chunks) = deliver(1, &batch, 0, 100);
    assert_eq!((chunks[0].version, chunks[0].committed_offset), (1, None));
    let mut out = vec![1, 2];
    assert_eq!(
        deliver_frames(7, 3, 0, &batch, (0, 100), None, &mut out),
        Err(ChunkError::UnsupportedVersion(3))
    );
    assert_eq!(out, [1, 2]);
}

#[test]
fn only_records_in_range_are_delivered_and_keys_headers_filters_are_not() {
    let batches = [
        stored(10, &[b"a", b"b", b"c"], Compression::None),
        stored(13, &[b"d", b"e"], Compression::None),
        stored(15, &[b"f", b"g", b"h"], Compression::None),
    ]
    .concat();
    let (chunks, parsed) = deliver(1, &batches, 11, 16);
    assert_eq!(chunks, 3);
    let all: Vec<(u64, Vec<u8>)> = parsed.iter().flat_map(values).collect();
    let expected: Vec<(u64, Vec<u8>)> = [(11, "b"), (12, "c"), (13, "d"), (14, "e"), (15, "f")]
        .map(|(o, v)| (o, v.as_bytes().to_vec()))
        .into();
    assert_eq!(all, expected);
    assert_eq!(parsed[0].first_offset, 11, "trimmed to start_offset");
    assert_eq!(parsed[0].timestamp_ms, (APPEND_US / 1000) as i64);
    assert_eq!(parsed[0].epoch, OSIRIS_EPOCH);
    // Batches outside the range are skipped.
    assert_eq!(deliver(1, &batches, 13, 15).0, 1);
    assert_eq!(deliver(1, &batches, 18, 30).0, 0);
    assert_eq!(deliver(1, &batches, 0, 10).0, 0);
    assert_eq!(deliver(1, &batches, 12, 12).0, 0);
    assert_eq!(deliver(1, &[], 0, 100).0, 0);
}

fn sub_entry_stored(base: u64) -> (Vec<u8>, Vec<u8>) {
    let plain = crate::protocol::compression::sub_entry::tests::rabbit_framing(&[b"x1", b"x22", b"x333"]);
    let data = crate::protocol::compression::sub_entry::tests::compress(RABBITMQ_GZIP, &plain);
    let entry = SubEntryBatch {
        producer_id: 0,
        producer_epoch: 0,
        sequence: 5,
        timestamp_us: 1,
        compression: RABBITMQ_GZIP,
        records: 3,
        uncompressed_bytes: plain.len() as u32,
        data: &data,
    };
    let mut batch = vec![];
    write_sub_entry_batch(&entry, &mut batch).unwrap();
    patch_server_fields(&mut batch, base, APPEND_US);
    (batch, data)
}

#[test]
fn a_sub_entry_batch_is_one_whole_entry() {
    let (batch, data) = sub_entry_stored(20);
    for start in [0, 20, 21, 22] {
        let (chunks, parsed) = deliver(2, &batch, start, 100);
        assert_eq!(chunks, 1);
        let chunk = &parsed[0];
        assert_eq!((chunk.first_offset, chunk.num_records), (20, 3), "whole, from {start}");
        let expected = ParsedEntry::SubEntry {
            compression: RABBITMQ_GZIP,
            records: 3,
            uncompressed_bytes: 21,
            data: data.clone(),
        };
        assert_eq!(chunk.entries, [expected]);
        let messages = values(chunk);
        assert_eq!(messages[2], (22, b"x333".to_vec()));
        assert_eq!(
            &(chunk.entries.len(), &batch[BATCH_HEADER_BYTES..BATCH_HEADER_BYTES + 1]),
            &(1, &[0x90][..])
        );
    }
    assert_eq!(deliver(1, &batch, 23, 100).0, 0);
    assert_eq!(deliver(1, &batch, 0, 20).0, 0);
}

#[test]
fn native_compressed_batches_are_inflated() {
    let long: Vec<u8> = (0..3000u32).flat_map(|i| (i % 7).to_le_bytes()).collect();
    for compression in [Compression::Zstd, Compression::Lz4] {
        let batch = stored(5, &[&long, b"two", &long], compression);
        assert!(BatchHeader::decode(&batch).unwrap().is_compressed(), "{compression}");
        let (_, parsed) = deliver(1, &batch, 6, 100);
        assert_eq!(values(&parsed[0]), [(6, b"two".to_vec()), (7, long.clone())], "{compression}");
    }
}

#[test]
fn a_native_compressed_batch_that_does_not_inflate_is_skipped() {
    let batch = stored(5, &[&[3u8; 4000], b"x"], Compression::Zstd);
    let mut lying = batch.clone();
    // records_bytes one larger, CRC resealed: valid to the broker, refused by inflate.
    let records_bytes = u32::from_le_bytes(lying[36..40].try_into().unwrap()) + 1;
    lying[36..40].copy_from_slice(&records_bytes.to_le_bytes());
    let crc = crate::protocol::batch::crc32_of(&lying);
    lying[12..16].copy_from_slice(&crc.to_le_bytes());
    let both = [lying, stored(7, &[b"after"], Compression::None)].concat();
    let mut out = vec![];
    assert_eq!(deliver_frames(7, 1, 0, &both, (0, 100), None, &mut out), Ok(1));
    assert_eq!(values(&parse_chunk(&out).unwrap()), [(7, b"after".to_vec())]);
    assert_eq!(chunk_count(&both, 0, 100), 2, "headers only: counted");
}

#[test]
fn more_than_65535_records_make_several_chunks() {
    let count = CHUNK_ENTRIES_MAX + 10;
    let mut builder = BatchBuilder::with_capacity(0, 0, count * 21 + 128);
    for i in 0..count {
        builder.push(&Message { timestamp_us: Some(1), ..Message::payload(&[(i % 251) as u8]) }).unwrap();
    }
    let mut batch = builder.finish().unwrap();
    patch_server_fields(&mut batch, 1000, APPEND_US);
    let (chunks, parsed) = deliver(1, &batch, 1000, u64::MAX);
    assert_eq!(chunks, 2);
    assert_eq!((parsed[0].entries.len(), parsed[0].first_offset), (CHUNK_ENTRIES_MAX, 1000));
    assert_eq!((parsed[1].entries.len(), parsed[1].first_offset), (10, 1000 + CHUNK_ENTRIES_MAX as u64));
    assert_eq!(values(&parsed[1])[9], (1000 + count as u64 - 1, vec![((count - 1) % 251) as u8]));
    // Exactly 65,535 in range: one chunk.
    assert_eq!(deliver(1, &batch, 1010, u64::MAX).0, 1);
}

#[test]
fn bad_stored_bytes_fail_and_leave_out_as_it_was() {
    let good = stored(1, &[b"a"], Compression::None);
    for bad in [
        [good.clone(), good[..good.len() - 1].to_vec()].concat(),
        [good.clone(), vec![0; 200]].concat(),
        [good.clone(), b"RBAT".to_vec()].concat(),
    ] {
        let mut out = vec![9];
        let error = deliver_frames(1, 1, 0, &bad, (0, 100), None, &mut out).unwrap_err();
        assert!(matches!(error, ChunkError::Batch { at, .. } if at == good.len()), "{error}");
        assert_eq!(out, [9]);
        assert_eq!(chunk_count(&bad, 0, 100), 1, "counts up to the bad batch");
    }
}

#[test]
fn parse_refuses_every_truncation_and_tampered_field() {
    let (batch, _) = sub_entry_stored(20);
    let mixed = [stored(10, &[b"ab", b"c"], Compression::None), batch].concat();
    for version in [1, 2] {
        let mut out = vec![];
        deliver_frames(3, version, 4, &mixed, (0, 100), None, &mut out).unwrap();
        let first = u32::from_be_bytes(out[..4].try_into().unwrap()) as usize + 4;
        for frame in [&out[..first], &out[first..]] {
            assert!(parse_chunk(frame).is_ok());
            for cut in 0..frame.len() {
                assert!(parse_chunk(&frame[..cut]).is_err(), "cut at {cut}");
            }
            let mut longer = frame.to_vec();
            longer.push(0);
            assert!(parse_chunk(&longer).is_err());
            // Every byte but the values and the timestamp, epoch and offsets, flipped.
            let header_at = if version == 1 { 9 } else { 17 };
            let free = (header_at + 8)..(header_at + 32);
            for at in 0..header_at + CHUNK_HEADER_BYTES {
                if free.contains(&at) || (version == 2 && (9..17).contains(&at)) || at == 8 {
                    continue;
                }
                let mut tampered = frame.to_vec();
                tampered[at] ^= 0x01;
                assert!(parse_chunk(&tampered).is_err(), "version {version}, byte {at}");
            }
            let mut tampered = frame.to_vec();
            let last = tampered.len() - 1;
            tampered[last] ^= 0x01;
            assert!(parse_chunk(&tampered).is_err(), "the CRC covers the data");
        }
    }
}
