//! cargo-fuzz target `rabbitmq_chunk`: the RabbitMQ Streams listener's data path between frames
//! and batches: published entries into batches (`wire::rabbitmq::entries::build_batches`),
//! RabbitMQ sub-entry batches (codec 3: `validate`, `inflate`), and Deliver frames from stored
//! batches (`wire::rabbitmq::chunk::deliver_frames`), read back by `parse_chunk`. Kept in this
//! file (not in `ringbroker_fuzz`) like `rabbitmq_frame`; docs/fuzzing.md says how to run it.
//!
//! Input layout: byte 0 picks the mode (mod 3), the rest depends on it.
//! * 0, publish: byte 1 flags (bit 0: a named producer; bit 1: `last_stored` = byte 2), byte 3
//!   the subscription's start offset (relative to 100), then a Publish frame body as the
//!   listener decodes it (`codec::decode`, without the size prefix);
//! * 1, stored batches: byte 1 the start offset (relative to 100), then batches back to back;
//!   each one's CRC is recomputed before `validate` (so the fuzzer reaches the checks behind
//!   it), and only the ones `validate` accepts are stored, as on the broker;
//! * 2, hostile Deliver frames: the bytes go to `parse_frames` as a client would read them.
//!
//! Seeds: `fuzz/corpus/rabbitmq_chunk/seed-*`, written by
//! `RINGBROKER_WRITE_SEEDS=1 cargo test --lib wire::rabbitmq::chunk::seeds`.
//!
//! Properties checked (a failure panics, which libFuzzer reports as a crash):
//! * nothing panics, overflows or runs out of memory on any input;
//! * every publishing id is answered exactly once (kept, duplicate or refused); the batches
//!   written are exactly `built.batches`, every one passes `validate`, plain ones inflate, and a
//!   named producer's kept ids strictly increase;
//! * the Deliver frames of validated batches parse back (size, counts, CRC), `chunk_count`
//!   agrees for batches that inflate, and the delivered messages are the stored records in
//!   `[start, next)` (values and offsets), a sub-entry's bytes exactly as stored.

#![no_main]

use ringbroker::protocol::batch::{
    batches, crc32_of, inflate, patch_server_fields, validate, BatchHeader, BATCH_HEADER_BYTES, CODEC_NONE,
    CODEC_RABBITMQ,
};
use ringbroker::wire::rabbitmq::chunk::{chunk_count, deliver_frames, parse_frames, ParsedEntry};
use ringbroker::wire::rabbitmq::codec::{self, Command};
use ringbroker::wire::rabbitmq::entries::{build_batches, publishing_id};

/// What a consumer may inflate to in this target: small, so bombs stay cheap.
const INFLATE_LIMIT_BYTES: usize = 1 << 20;

libfuzzer_sys::fuzz_target!(|data: &[u8]| run(data));

fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 3 {
        0 => publish(rest),
        1 => stored(rest),
        _ => {
            if let Ok(chunks) = parse_frames(rest) {
                for chunk in chunks {
                    let declared: u64 = chunk
                        .entries
                        .iter()
                        .map(|entry| match entry {
                            ParsedEntry::SubEntry { uncompressed_bytes, .. } => {
                                u64::from(*uncompressed_bytes)
                            }
                            ParsedEntry::Simple(_) => 0,
                        })
                        .sum();
                    if declared <= INFLATE_LIMIT_BYTES as u64 {
                        let _ = chunk.messages();
                    }
                }
            }
        }
    }
}

fn publish(data: &[u8]) {
    let [flags, last, start, body @ ..] = data else { return };
    let Ok(frame) = codec::decode(body) else { return };
    let Command::Publish { entries, .. } = frame.command else { return };
    let named = flags & 1 != 0;
    let producer_id = if named { 7 } else { 0 };
    let last_stored = (flags & 2 != 0).then_some(u64::from(*last));
    let mut out = Vec::new();
    let built = build_batches(&entries, producer_id, u32::from(named), last_stored, &mut out);

    let mut answered: Vec<u64> = built.kept.clone();
    answered.extend(&built.duplicates);
    answered.extend(built.refused.iter().map(|(id, _)| *id));
    answered.sort_unstable();
    let mut ids: Vec<u64> = entries.iter().map(publishing_id).collect();
    ids.sort_unstable();
    assert_eq!(answered, ids, "every publishing id answered exactly once");
    if named || last_stored.is_some() {
        assert!(built.kept.windows(2).all(|pair| pair[0] < pair[1]), "named ids increase");
        assert!(built.kept.iter().all(|&id| last_stored.is_none_or(|last| id > last)));
    }
    let mut count = 0;
    for batch in batches(&out) {
        let batch = batch.expect("every batch built validates");
        let header = batch.header();
        assert!(header.first_sequence <= header.last_sequence);
        if header.codec() == CODEC_NONE {
            inflate(batch.as_bytes(), usize::MAX).expect("a plain batch inflates");
        }
        count += 1;
    }
    assert_eq!(count, built.batches);
    deliver_and_check(out, u64::from(*start));
}

fn stored(data: &[u8]) {
    let Some((&start, mut rest)) = data.split_first() else { return };
    let mut stored = Vec::new();
    while let Ok(header) = BatchHeader::decode(rest) {
        let Some(bytes) = rest.get(..header.length as usize) else { break };
        let mut bytes = bytes.to_vec();
        rest = &rest[bytes.len()..];
        let crc = crc32_of(&bytes);
        bytes[12..16].copy_from_slice(&crc.to_le_bytes());
        if validate(&bytes).is_ok() {
            let _ = inflate(&bytes, INFLATE_LIMIT_BYTES);
            stored.extend_from_slice(&bytes);
        }
    }
    deliver_and_check(stored, u64::from(start));
}

/// Stamps offsets from 100 as a partition would, delivers from `100 + start`, and checks the
/// chunks against the stored records.
fn deliver_and_check(mut stored: Vec<u8>, start: u64) {
    let (start, next) = (100 + start, 100 + 3 * start / 2 + 7);
    let mut at = 0;
    let mut offset = 100;
    let mut expected: Vec<Expected> = Vec::new();
    while at < stored.len() {
        let header = BatchHeader::decode(&stored[at..]).expect("stored batches decode");
        let length = header.length as usize;
        patch_server_fields(&mut stored[at..at + length], offset, 1_000_000 + offset);
        let bytes = &stored[at..at + length];
        let in_range = offset < next && start < offset + u64::from(header.record_count);
        if in_range && header.codec() == CODEC_RABBITMQ {
            expected.push(Expected::SubEntry(offset, bytes[BATCH_HEADER_BYTES..].to_vec()));
        } else if in_range {
            match inflate(bytes, usize::MAX) {
                Ok(plain) => {
                    let batch = validate(&plain).expect("inflated batches validate");
                    for record in batch.records().filter(|r| r.offset >= start && r.offset < next) {
                        expected.push(Expected::Simple(record.offset, record.payload.to_vec()));
                    }
                }
                Err(_) => expected.push(Expected::Unreadable),
            }
        }
        offset += u64::from(header.record_count);
        at += length;
    }
    for version in [1, 2] {
        let mut out = vec![];
        let chunks =
            deliver_frames(3, version, 5, &stored, (start, next), None, &mut out).expect("stored batches deliver");
        let parsed = parse_frames(&out).expect("our frames parse");
        assert_eq!(parsed.len(), chunks as usize);
        if !expected.iter().any(|e| matches!(e, Expected::Unreadable)) {
            assert_eq!(chunk_count(&stored, start, next), chunks);
        }
        let mut delivered = Vec::new();
        for chunk in &parsed {
            assert_eq!((chunk.subscription_id, chunk.version), (3, version));
            for (index, entry) in chunk.entries.iter().enumerate() {
                delivered.push(match entry {
                    ParsedEntry::Simple(value) => {
                        Expected::Simple(chunk.first_offset + index as u64, value.clone())
                    }
                    ParsedEntry::SubEntry { compression, records, uncompressed_bytes, data } => {
                        let mut bytes = vec![0x80 | (compression << 4)];
                        bytes.extend_from_slice(&records.to_be_bytes());
                        bytes.extend_from_slice(&uncompressed_bytes.to_be_bytes());
                        bytes.extend_from_slice(&(data.len() as u32).to_be_bytes());
                        bytes.extend_from_slice(data);
                        Expected::SubEntry(chunk.first_offset, bytes)
                    }
                });
            }
        }
        let readable: Vec<&Expected> =
            expected.iter().filter(|e| !matches!(e, Expected::Unreadable)).collect();
        assert_eq!(delivered.iter().collect::<Vec<_>>(), readable, "delivered messages are the stored ones");
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Expected {
    Simple(u64, Vec<u8>),
    SubEntry(u64, Vec<u8>),
    Unreadable,
}
