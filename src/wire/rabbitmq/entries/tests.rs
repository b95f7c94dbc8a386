//! `build_batches`: batching, sequences, deduplication, refusals, and sub-entries plain and
//! compressed; every batch written must pass `validate`.

use super::*;
use crate::protocol::batch::{batches, validate, BatchHeader, CODEC_NONE, CODEC_RABBITMQ};
use crate::protocol::compression::inflate;
use crate::protocol::compression::sub_entry::{RABBITMQ_GZIP, RABBITMQ_ZSTD};

fn simple(id: u64, message: &[u8]) -> Entry<'_> {
    Entry::Simple { publishing_id: id, message, filter_value: None }
}

fn filtered<'a>(id: u64, message: &'a [u8], filter: &'a str) -> Entry<'a> {
    Entry::Simple { publishing_id: id, message, filter_value: Some(filter) }
}

/// Messages in RabbitMQ's sub-entry framing.
fn framing(messages: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for message in messages {
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
    }
    out
}

fn sub_entry(id: u64, compression: u8, records: u16, uncompressed: usize, data: &[u8]) -> Entry<'_> {
    Entry::SubEntry { publishing_id: id, compression, records, uncompressed_bytes: uncompressed as u32, data }
}

/// Each batch's header and record values (inflated when compressed).
type Written = Vec<(BatchHeader, Vec<Vec<u8>>)>;

/// Builds, checks the invariants every call keeps, and returns the result with what was written.
fn build(entries: &[Entry<'_>], producer_id: u64, last: Option<u64>) -> (Built, Written) {
    let mut out = vec![];
    let built = build_batches(entries, producer_id, if producer_id == 0 { 0 } else { 4 }, last, &mut out);
    let mut ids: Vec<u64> = built.kept.clone();
    ids.extend(&built.duplicates);
    ids.extend(built.refused.iter().map(|(id, _)| id));
    ids.sort_unstable();
    let mut all: Vec<u64> = entries.iter().map(publishing_id).collect();
    all.sort_unstable();
    assert_eq!(ids, all, "every id answered exactly once");
    let mut seen = vec![];
    for batch in batches(&out) {
        let batch = batch.expect("every batch validates");
        let header = *batch.header();
        assert!(header.first_sequence <= header.last_sequence);
        assert_eq!(header.producer_id, producer_id);
        let plain = inflate(batch.as_bytes(), usize::MAX).expect("inflates");
        let values = validate(&plain).unwrap().records().map(|r| r.payload.to_vec()).collect();
        seen.push((header, values));
    }
    assert_eq!(seen.len(), built.batches);
    (built, seen)
}

#[test]
fn simple_messages_share_one_batch() {
    let entries = [simple(1, b"a"), filtered(2, b"bb", "eu"), simple(3, b"")];
    let (built, batches) = build(&entries, 0, None);
    assert_eq!(built.kept, [1, 2, 3]);
    assert_eq!(batches.len(), 1);
    let (header, values) = &batches[0];
    assert_eq!((header.first_sequence, header.last_sequence, header.producer_epoch), (1, 3, 0));
    assert_eq!(values, &[b"a".to_vec(), b"bb".to_vec(), vec![]]);
    assert!(header.might_contain_filter(b"eu"));
    assert_eq!(header.first_timestamp_us, header.max_timestamp_us, "one time for the call");
    let mut out = vec![];
    let record_filters: Vec<Option<Vec<u8>>> = {
        build_batches(&entries, 0, 0, None, &mut out);
        validate(&out).unwrap().records().map(|r| r.filter_value.map(<[u8]>::to_vec)).collect()
    };
    assert_eq!(record_filters, [None, Some(b"eu".to_vec()), None]);
}

#[test]
fn named_publishers_drop_ids_at_or_below_the_last() {
    let entries = [simple(3, b"x"), simple(5, b"x"), simple(6, b"a"), simple(6, b"b"), simple(7, b"c")];
    let entries = [&entries[..], &[simple(4, b"x"), simple(9, b"d")]].concat();
    let (built, batches) = build(&entries, 12, Some(5));
    assert_eq!(built.kept, [6, 7, 9]);
    assert_eq!(built.duplicates, [3, 5, 6, 4]);
    assert_eq!(batches.len(), 1);
    assert_eq!((batches[0].0.first_sequence, batches[0].0.last_sequence), (6, 9));
    assert_eq!(batches[0].0.producer_epoch, 4);
    assert_eq!(batches[0].1, [b"a".to_vec(), b"c".to_vec(), b"d".to_vec()]);
    // A named publisher with nothing stored yet still drops repeats within the frame.
    let (built, _) = build(&[simple(1, b"a"), simple(1, b"b"), simple(2, b"c")], 12, None);
    assert_eq!((built.kept, built.duplicates), (vec![1, 2], vec![1]));
    // Everything a duplicate: nothing written.
    let (built, batches) = build(&[simple(1, b"a")], 12, Some(1));
    assert_eq!((built.batches, batches.len(), built.duplicates), (0, 0, vec![1]));
}

#[test]
fn anonymous_ids_going_down_start_a_new_batch() {
    let (built, batches) =
        build(&[simple(5, b"a"), simple(3, b"b"), simple(3, b"c"), simple(4, b"d")], 0, None);
    assert_eq!(built.kept, [5, 3, 3, 4]);
    let ranges: Vec<(u64, u64, u32)> =
        batches.iter().map(|(h, _)| (h.first_sequence, h.last_sequence, h.record_count)).collect();
    assert_eq!(ranges, [(5, 5, 1), (3, 4, 3)]);
}

#[test]
fn batches_split_at_the_byte_limit_and_oversized_messages_are_refused() {
    let big = vec![7u8; 6 << 20];
    let too_big = vec![1u8; BATCH_BYTES_MAX - BATCH_HEADER_BYTES - RECORD_HEADER_BYTES + 1];
    let largest = vec![2u8; BATCH_BYTES_MAX - BATCH_HEADER_BYTES - RECORD_HEADER_BYTES];
    let entries =
        [simple(1, &big), simple(2, &big), simple(3, &too_big), simple(4, &big), simple(5, &largest)];
    let (built, batches) = build(&entries, 0, None);
    assert_eq!(built.kept, [1, 2, 4, 5]);
    assert_eq!(built.refused, [(3, REFUSED_TOO_LARGE)]);
    let counts: Vec<u32> = batches.iter().map(|(h, _)| h.record_count).collect();
    assert_eq!(counts, [2, 1, 1]);
}

/// 17 sub-entries of 65,535 empty messages: 20-byte records reach `BATCH_BYTES_MAX` (at 12
/// sub-entries) before `BATCH_RECORDS_MAX`; no sub-entry is divided between batches.
#[test]
fn batches_split_between_sub_entries() {
    let per_entry = u16::MAX as usize;
    let data = framing(&vec![&b""[..]; per_entry]);
    let count = BATCH_RECORDS_MAX as usize / per_entry + 1;
    let entries: Vec<Entry<'_>> =
        (0..count).map(|i| sub_entry(i as u64, RABBITMQ_NONE, u16::MAX, data.len(), &data)).collect();
    let mut out = vec![];
    let built = build_batches(&entries, 0, 0, None, &mut out);
    assert_eq!((built.kept.len(), built.batches), (count, 2));
    let headers: Vec<BatchHeader> = batches(&out).map(|b| *b.unwrap().header()).collect();
    let fitting = (BATCH_BYTES_MAX - BATCH_HEADER_BYTES) / (per_entry * RECORD_HEADER_BYTES);
    assert_eq!(fitting, 12);
    let shapes: Vec<(u32, u64, u64)> =
        headers.iter().map(|h| (h.record_count, h.first_sequence, h.last_sequence)).collect();
    let per = per_entry as u32;
    assert_eq!(shapes, [(12 * per, 0, 11), ((count as u32 - 12) * per, 12, count as u64 - 1)]);
}

#[test]
fn long_filter_values_are_refused_alone() {
    let long = "f".repeat(256);
    let (built, batches) = build(&[simple(1, b"a"), filtered(2, b"b", &long), simple(3, b"c")], 0, None);
    assert_eq!(built.kept, [1, 3]);
    assert_eq!(built.refused, [(2, REFUSED_MALFORMED)]);
    assert_eq!(batches.len(), 1);
}

#[test]
fn an_uncompressed_sub_entry_becomes_records_sharing_its_id() {
    let data = framing(&[b"m1", b"", b"m333"]);
    let entries = [simple(1, b"s1"), sub_entry(2, RABBITMQ_NONE, 3, data.len(), &data), simple(3, b"s3")];
    let (built, batches) = build(&entries, 8, Some(0));
    assert_eq!(built.kept, [1, 2, 3]);
    assert_eq!(batches.len(), 1);
    let (header, values) = &batches[0];
    assert_eq!((header.first_sequence, header.last_sequence, header.record_count), (1, 3, 5));
    assert_eq!(header.codec(), CODEC_NONE);
    let expected: [&[u8]; 5] = [b"s1", b"m1", b"", b"m333", b"s3"];
    assert_eq!(values, &expected.map(<[u8]>::to_vec));
    // Alone, its records all carry one sequence.
    let (_, batches) = build(&entries[1..2], 8, None);
    assert_eq!(
        (batches[0].0.first_sequence, batches[0].0.last_sequence, batches[0].0.record_count),
        (2, 2, 3)
    );
}

#[test]
fn uncompressed_sub_entries_that_do_not_add_up_are_refused() {
    let data = framing(&[b"abc", b"de"]);
    let mut trailing = data.clone();
    trailing.push(0);
    let mut past = data.clone();
    past[3] = 9;
    let bad = [
        sub_entry(1, RABBITMQ_NONE, 3, data.len(), &data),
        sub_entry(2, RABBITMQ_NONE, 1, data.len(), &data),
        sub_entry(3, RABBITMQ_NONE, 2, data.len() + 1, &data),
        sub_entry(4, RABBITMQ_NONE, 2, trailing.len(), &trailing),
        sub_entry(5, RABBITMQ_NONE, 2, past.len(), &past),
        sub_entry(6, RABBITMQ_NONE, 0, 0, &[]),
        sub_entry(7, RABBITMQ_NONE, 1, 3, &[0, 0, 0]),
    ];
    let (built, batches) = build(&bad, 0, None);
    assert_eq!(built.refused, (1..=7).map(|id| (id, REFUSED_MALFORMED)).collect::<Vec<_>>());
    assert!(batches.is_empty());
    let (built, _) = build(&[sub_entry(8, RABBITMQ_NONE, 2, data.len(), &data)], 0, None);
    assert_eq!(built.kept, [8]);
}

#[test]
fn a_compressed_sub_entry_is_a_batch_of_its_own() {
    let plain = framing(&[b"one", b"two"]);
    let gz = {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&plain).unwrap();
        encoder.finish().unwrap()
    };
    let entries = [
        simple(1, b"a"),
        sub_entry(2, RABBITMQ_GZIP, 2, plain.len(), &gz),
        simple(3, b"b"),
        sub_entry(4, 5, 2, plain.len(), &gz),
        sub_entry(5, RABBITMQ_ZSTD, 0, 0, b"x"),
        sub_entry(6, RABBITMQ_ZSTD, 2, 7, b"x"),
    ];
    let (built, batches) = build(&entries[..3], 3, None);
    assert_eq!(built.kept, [1, 2, 3]);
    let shapes: Vec<(u8, u64, u64, u32)> =
        batches.iter().map(|(h, _)| (h.codec(), h.first_sequence, h.last_sequence, h.record_count)).collect();
    assert_eq!(shapes, [(CODEC_NONE, 1, 1, 1), (CODEC_RABBITMQ, 2, 2, 2), (CODEC_NONE, 3, 3, 1)]);
    assert_eq!(batches[1].1, [b"one".to_vec(), b"two".to_vec()], "native readers inflate it");
    let mut out = vec![];
    let built = build_batches(&entries[3..], 0, 0, None, &mut out);
    assert_eq!(built.refused, [(4, REFUSED_MALFORMED), (5, REFUSED_MALFORMED), (6, REFUSED_MALFORMED)]);
    assert!(out.is_empty());
    // Too large for a batch.
    let huge = vec![0u8; BATCH_BYTES_MAX];
    let built = build_batches(&[sub_entry(7, RABBITMQ_GZIP, 1, 10, &huge)], 0, 0, None, &mut out);
    assert_eq!(built.refused, [(7, REFUSED_TOO_LARGE)]);
}
