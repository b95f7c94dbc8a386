//! The seed corpus of the `rabbitmq_chunk` fuzz target (`fuzz/corpus/rabbitmq_chunk/seed-*`;
//! the input layout is in `fuzz/fuzz_targets/rabbitmq_chunk.rs`): Publish frames with every
//! entry shape, stored batches of every codec, and the Deliver frames we write for them.
//! `fuzz_seed_corpus_is_current` checks the files; `RINGBROKER_WRITE_SEEDS=1` rewrites them.

use std::path::PathBuf;

use super::*;
use crate::protocol::batch::{patch_server_fields, BatchBuilder, Compression, Message};
use crate::protocol::compression::sub_entry::tests::{compress, rabbit_framing};
use crate::protocol::compression::sub_entry::{
    write_sub_entry_batch, SubEntryBatch, RABBITMQ_GZIP, RABBITMQ_LZ4, RABBITMQ_NONE, RABBITMQ_SNAPPY,
    RABBITMQ_ZSTD,
};
use crate::wire::rabbitmq::codec::{encode_client_frame, Command, Entry, Frame};

const MODE_PUBLISH: u8 = 0;
const MODE_STORED: u8 = 1;
const MODE_FRAMES: u8 = 2;

fn publish_body(version: u16, entries: Vec<Entry<'_>>) -> Vec<u8> {
    let frame = encode_client_frame(&Frame {
        key: keys::PUBLISH,
        version,
        command: Command::Publish { publisher_id: 1, entries },
    });
    frame[4..].to_vec()
}

fn sub_entry_batch(compression: u8, plain: &[u8]) -> Vec<u8> {
    let data = compress(compression, plain);
    let entry = SubEntryBatch {
        producer_id: 0,
        producer_epoch: 0,
        sequence: 9,
        timestamp_us: 1_000,
        compression,
        records: 3,
        uncompressed_bytes: plain.len() as u32,
        data: &data,
    };
    let mut out = vec![];
    write_sub_entry_batch(&entry, &mut out).unwrap();
    out
}

fn plain_batch(compression: Compression) -> Vec<u8> {
    let mut builder = BatchBuilder::new(0, 0);
    builder.set_compression(compression);
    for i in 0..6u64 {
        let value = format!("message number {i}, repeated enough to compress: aaaaaaaaaaaaaaaa");
        let filter: Option<&[u8]> = if i % 2 == 0 { Some(b"eu") } else { None };
        builder
            .push(&Message {
                filter_value: filter,
                timestamp_us: Some(1_000 + i),
                ..Message::payload(value.as_bytes())
            })
            .unwrap();
    }
    builder.finish().unwrap()
}

/// (name, input) pairs.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let messages: [&[u8]; 3] = [b"\x00\x53\x75\xa0\x05hello", b"", b"third message"];
    let plain = rabbit_framing(&messages);
    let compressed: Vec<(u8, Vec<u8>)> = [RABBITMQ_GZIP, RABBITMQ_SNAPPY, RABBITMQ_LZ4, RABBITMQ_ZSTD]
        .iter()
        .map(|&c| (c, compress(c, &plain)))
        .collect();
    let mut v1 = vec![
        Entry::Simple { publishing_id: 1, message: messages[0], filter_value: None },
        Entry::SubEntry {
            publishing_id: 2,
            compression: RABBITMQ_NONE,
            records: 3,
            uncompressed_bytes: plain.len() as u32,
            data: &plain,
        },
        Entry::Simple { publishing_id: 2, message: b"again", filter_value: None },
    ];
    for (i, (compression, data)) in compressed.iter().enumerate() {
        let uncompressed_bytes = plain.len() as u32;
        v1.push(Entry::SubEntry {
            publishing_id: 3 + i as u64,
            compression: *compression,
            records: 3,
            uncompressed_bytes,
            data,
        });
    }
    let v2 = vec![
        Entry::Simple { publishing_id: 10, message: b"eu", filter_value: Some("eu") },
        Entry::Simple { publishing_id: 9, message: b"down", filter_value: None },
        Entry::Simple { publishing_id: 11, message: b"us", filter_value: Some("us") },
    ];
    let with = |mode: u8, head: &[u8], body: &[u8]| [&[mode][..], head, body].concat();

    let mut stored = vec![plain_batch(Compression::None)];
    stored.extend(
        [RABBITMQ_GZIP, RABBITMQ_SNAPPY, RABBITMQ_LZ4, RABBITMQ_ZSTD].map(|c| sub_entry_batch(c, &plain)),
    );
    stored.push(plain_batch(Compression::Zstd));
    stored.push(plain_batch(Compression::Lz4));
    let mut frames_v1 = vec![];
    let mut frames_v2 = vec![];
    let mut offset = 0;
    let mut stamped = vec![];
    for batch in &stored {
        let mut batch = batch.clone();
        patch_server_fields(&mut batch, offset, 1_000_000 + offset);
        offset += u64::from(BatchHeader::decode(&batch).unwrap().record_count);
        stamped.extend_from_slice(&batch);
    }
    deliver_frames(1, 1, 0, &stamped, (2, u64::MAX), None, &mut frames_v1).unwrap();
    deliver_frames(1, 2, 30, &stamped, (0, u64::MAX), None, &mut frames_v2).unwrap();

    vec![
        ("seed-publish-v1-anonymous", with(MODE_PUBLISH, &[0, 0, 2], &publish_body(1, v1.clone()))),
        ("seed-publish-v1-named", with(MODE_PUBLISH, &[3, 1, 0], &publish_body(1, v1))),
        ("seed-publish-v2-filters", with(MODE_PUBLISH, &[1, 0, 1], &publish_body(2, v2))),
        ("seed-stored-every-codec", with(MODE_STORED, &[3], &stored.concat())),
        ("seed-stored-sub-entry", with(MODE_STORED, &[0], &stored[1])),
        ("seed-frames-v1", with(MODE_FRAMES, &[], &frames_v1)),
        ("seed-frames-v2", with(MODE_FRAMES, &[], &frames_v2)),
    ]
}

#[test]
fn fuzz_seed_corpus_is_current() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/rabbitmq_chunk");
    let write = std::env::var_os("RINGBROKER_WRITE_SEEDS").is_some();
    if write {
        std::fs::create_dir_all(&dir).unwrap();
    }
    for (name, bytes) in seeds() {
        let path = dir.join(name);
        if write {
            std::fs::write(&path, &bytes).unwrap();
        }
        let on_disk = std::fs::read(&path).unwrap_or_default();
        assert!(
            on_disk == bytes,
            "{name} is stale: RINGBROKER_WRITE_SEEDS=1 cargo test --lib wire::rabbitmq::chunk::seeds"
        );
    }
    // The frames seeds parse, with every message.
    let frames = &seeds()[5].1[1..];
    let parsed = parse_frames(frames).unwrap();
    let messages: usize = parsed.iter().map(|chunk| chunk.messages().unwrap().len()).sum();
    assert_eq!(messages, 6 - 2 + 4 * 3 + 6 + 6);
}
