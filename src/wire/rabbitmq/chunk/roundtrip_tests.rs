//! Publish to Deliver, end to end without a broker: Publish frames (written by the
//! `rabbitmq-stream-protocol` client encoder and by ours) → our decoder → `build_batches` →
//! `validate` → offsets stamped as the partition would → `deliver_frames` → `parse_chunk` and
//! the crate's Deliver decoder, which the official Rust client runs. Messages, offsets, filter
//! values, timestamps and CRCs must agree all the way; native readers (`inflate`) see the same
//! messages.

use rabbitmq_stream_protocol::codec::{Decoder, Encoder};
use rabbitmq_stream_protocol::commands::publish::PublishCommand;
use rabbitmq_stream_protocol::message::Message as AmqpMessage;
use rabbitmq_stream_protocol::types::PublishedMessage;
use rabbitmq_stream_protocol::{Request, Response, ResponseKind};

use super::*;
use crate::protocol::batch::{batches, patch_server_fields, validate};
use crate::protocol::compression::sub_entry::tests::{compress, rabbit_framing};
use crate::protocol::compression::sub_entry::{
    RABBITMQ_GZIP, RABBITMQ_LZ4, RABBITMQ_NONE, RABBITMQ_SNAPPY, RABBITMQ_ZSTD,
};
use crate::wire::rabbitmq::codec::{decode, encode_client_frame, Command, Entry, Frame};
use crate::wire::rabbitmq::entries::build_batches;

const APPEND_US: u64 = 1_765_000_000_000_000;

/// Stamps offsets and append times on the batches as the partition does, from `base`.
fn append(mut bytes: Vec<u8>, base: u64) -> Vec<u8> {
    let mut at = 0;
    let mut next = base;
    while at < bytes.len() {
        let header = validate(&bytes[at..at + BatchHeader::decode(&bytes[at..]).unwrap().length as usize])
            .map(|batch| *batch.header())
            .expect("every built batch validates");
        let length = header.length as usize;
        patch_server_fields(&mut bytes[at..at + length], next, APPEND_US + next);
        next += u64::from(header.record_count);
        at += length;
    }
    bytes
}

/// The messages native readers see: offset, value, filter value.
fn native(bytes: &[u8]) -> Vec<(u64, Vec<u8>, Option<Vec<u8>>)> {
    let mut out = vec![];
    for batch in batches(bytes) {
        let plain = inflate(batch.unwrap().as_bytes(), usize::MAX).unwrap();
        let records = validate(&plain)
            .unwrap()
            .records()
            .map(|r| (r.offset, r.payload.to_vec(), r.filter_value.map(<[u8]>::to_vec)));
        out.extend(records.collect::<Vec<_>>());
    }
    out
}

/// Our decoder's entries of a whole Publish frame.
fn entries_of(frame: &[u8]) -> Vec<Entry<'_>> {
    match decode(&frame[4..]).expect("decodes").command {
        Command::Publish { entries, .. } => entries,
        other => panic!("not a Publish: {other:?}"),
    }
}

#[test]
fn every_publish_shape_reaches_rabbitmq_and_native_readers_alike() {
    let batch_messages: [&[u8]; 3] = [b"sub-1", b"", b"sub-333"];
    let plain = rabbit_framing(&batch_messages);
    let compressed: Vec<(u8, Vec<u8>)> = [RABBITMQ_GZIP, RABBITMQ_SNAPPY, RABBITMQ_LZ4, RABBITMQ_ZSTD]
        .iter()
        .map(|&c| (c, compress(c, &plain)))
        .collect();
    let mut v1 = vec![
        Entry::Simple { publishing_id: 1, message: b"first", filter_value: None },
        Entry::SubEntry {
            publishing_id: 2,
            compression: RABBITMQ_NONE,
            records: 3,
            uncompressed_bytes: plain.len() as u32,
            data: &plain,
        },
    ];
    for (i, (compression, data)) in compressed.iter().enumerate() {
        v1.push(Entry::SubEntry {
            publishing_id: 3 + i as u64,
            compression: *compression,
            records: 3,
            uncompressed_bytes: plain.len() as u32,
            data,
        });
    }
    v1.push(Entry::Simple { publishing_id: 7, message: b"last", filter_value: None });
    let v1_frame = encode_client_frame(&Frame {
        key: keys::PUBLISH,
        version: 1,
        command: Command::Publish { publisher_id: 1, entries: v1 },
    });
    let v2 = vec![
        Entry::Simple { publishing_id: 8, message: b"eu-1", filter_value: Some("eu") },
        Entry::Simple { publishing_id: 9, message: b"none", filter_value: None },
    ];
    let v2_frame = encode_client_frame(&Frame {
        key: keys::PUBLISH,
        version: 2,
        command: Command::Publish { publisher_id: 1, entries: v2 },
    });

    let mut stored = vec![];
    let built = build_batches(&entries_of(&v1_frame), 77, 2, Some(0), &mut stored);
    assert_eq!(built.kept, [1, 2, 3, 4, 5, 6, 7]);
    let built2 = build_batches(&entries_of(&v2_frame), 77, 2, Some(7), &mut stored);
    assert_eq!(built2.kept, [8, 9]);
    // [first, sub-1, "", sub-333] plain; four sub-entries; [last]; [eu-1, none].
    assert_eq!(built.batches + built2.batches, 7);
    let stored = append(stored, 100);

    let mut expected: Vec<(u64, Vec<u8>)> = vec![(100, b"first".to_vec())];
    let mut offset = 101;
    for _ in 0..5 {
        for message in batch_messages {
            expected.push((offset, message.to_vec()));
            offset += 1;
        }
    }
    for message in [&b"last"[..], b"eu-1", b"none"] {
        expected.push((offset, message.to_vec()));
        offset += 1;
    }
    let natively: Vec<(u64, Vec<u8>)> = native(&stored).into_iter().map(|(o, v, _)| (o, v)).collect();
    assert_eq!(natively, expected, "native readers");
    let filters: Vec<Option<Vec<u8>>> = native(&stored).into_iter().map(|(_, _, f)| f).collect();
    assert_eq!(filters.iter().filter(|f| f.is_some()).count(), 1);
    assert_eq!(filters[filters.len() - 2], Some(b"eu".to_vec()));

    for version in [1, 2] {
        let mut out = vec![];
        let chunks = deliver_frames(4, version, 115, &stored, (0, u64::MAX), None, &mut out).unwrap();
        assert_eq!(chunks, 7);
        let parsed = parse_frames(&out).unwrap();
        let delivered: Vec<(u64, Vec<u8>)> =
            parsed.iter().flat_map(|chunk| chunk.messages().unwrap()).collect();
        assert_eq!(delivered, expected, "RabbitMQ consumers, version {version}");
        for chunk in &parsed {
            assert_eq!(chunk.timestamp_ms, ((APPEND_US + chunk.first_offset) / 1000) as i64);
            assert_eq!(chunk.subscription_id, 4);
            assert_eq!(chunk.committed_offset, (version == 2).then_some(115));
        }
        let kinds: Vec<usize> = parsed.iter().map(|chunk| chunk.entries.len()).collect();
        assert_eq!(kinds, [4, 1, 1, 1, 1, 1, 2], "plain records are simple entries, sub-entries one entry");
        // Subscribing from inside the plain batch trims it; from inside a sub-entry, it comes whole.
        let mut out = vec![];
        deliver_frames(4, version, 0, &stored, (102, u64::MAX), None, &mut out).unwrap();
        let parsed = parse_frames(&out).unwrap();
        assert_eq!(parsed[0].first_offset, 102);
        assert_eq!(parsed[0].entries.len(), 2);
        let mut out = vec![];
        deliver_frames(4, version, 0, &stored, (105, u64::MAX), None, &mut out).unwrap();
        assert_eq!(parse_frames(&out).unwrap()[0].first_offset, 104);
    }
}

fn amqp(body: &str) -> (AmqpMessage, Vec<u8>) {
    let message = AmqpMessage::builder().body(body.as_bytes().to_vec()).build();
    let mut bytes = Vec::new();
    message.encode(&mut bytes).expect("the crate encodes AMQP");
    (message, bytes)
}

/// The official Rust client's codec publishes; ours stores and delivers; its Deliver decoder
/// (version 1, simple entries, AMQP bodies) reads the chunk back.
#[test]
fn the_rust_client_codec_reads_what_it_published() {
    let bodies = ["hello", "", "a somewhat longer message body, still AMQP 1.0 data"];
    for publish_version in [1, 2] {
        let published: Vec<PublishedMessage> = bodies
            .iter()
            .zip(10u64..)
            .map(|(body, id)| {
                PublishedMessage::new(id, amqp(body).0, (publish_version == 2).then(|| "eu".to_string()))
            })
            .collect();
        let request: Request = PublishCommand::new(3, published, publish_version).into();
        let mut frame = Vec::new();
        request.encode(&mut frame).unwrap();
        let mut stored = vec![];
        let built = build_batches(&entries_of(&frame), 0, 0, None, &mut stored);
        assert_eq!(built.kept, [10, 11, 12]);
        let stored = append(stored, 500);
        let mut out = vec![];
        assert_eq!(deliver_frames(9, 1, 0, &stored, (501, u64::MAX), None, &mut out), Ok(1));
        let (rest, response) = Response::decode(&out).expect("the crate decodes our Deliver");
        assert!(rest.is_empty(), "{} bytes left", rest.len());
        let ResponseKind::Deliver(deliver) = response.kind_ref() else { panic!("not a Deliver") };
        assert_eq!((deliver.subscription_id, deliver.chunk_first_offset), (9, 501));
        let data: Vec<Option<&[u8]>> = deliver.messages.iter().map(|m| m.data()).collect();
        assert_eq!(data, [Some(&b""[..]), Some(bodies[2].as_bytes())]);
        // And our parser reads the same frame, AMQP bytes as published.
        assert_eq!(parse_chunk(&out).unwrap().messages().unwrap()[1], (502, amqp(bodies[2]).1));
    }
}
