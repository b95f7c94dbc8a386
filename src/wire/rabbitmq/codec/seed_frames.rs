//! One valid frame of every client command and variant, written byte by byte: the inputs of
//! the hostile tests (every truncation, trailing bytes, mutations) and the seed corpus of the
//! `rabbitmq_frame` fuzz target (`fuzz/corpus/rabbitmq_frame/seed-*`, frame bodies without the
//! size prefix, checked by `fuzz_seed_corpus_is_current`).

use super::test_bytes::Bytes;
use super::*;

/// An AMQP 1.0 message as clients send it: a `data` section (0x00 0x53 0x75) with a binary.
fn amqp(body: &str) -> Vec<u8> {
    let mut out = vec![0x00, 0x53, 0x75, 0xa0, body.len() as u8];
    out.extend_from_slice(body.as_bytes());
    out
}

/// (name, whole frame with size prefix).
pub(super) fn seed_frames() -> Vec<(&'static str, Vec<u8>)> {
    let f = Bytes::frame;
    vec![
        (
            "peer-properties",
            f(keys::PEER_PROPERTIES, 1)
                .u32(1)
                .i32(2)
                .string("product")
                .string("rstream")
                .string("version")
                .string("0.20")
                .done(),
        ),
        ("sasl-handshake", f(keys::SASL_HANDSHAKE, 1).u32(2).done()),
        (
            "sasl-authenticate",
            f(keys::SASL_AUTHENTICATE, 1).u32(3).string("PLAIN").bytes(b"\0guest\0guest").done(),
        ),
        ("sasl-authenticate-null", f(keys::SASL_AUTHENTICATE, 1).u32(3).string("EXTERNAL").i32(-1).done()),
        ("tune", f(keys::TUNE, 1).u32(1 << 20).u32(60).done()),
        ("tune-response", f(keys::TUNE_RESPONSE, 1).u32(0).u32(0).done()),
        ("open", f(keys::OPEN, 1).u32(4).string("/").done()),
        ("close", f(keys::CLOSE, 1).u32(5).u16(codes::OK).string("bye").done()),
        ("close-response", f(keys::CLOSE_RESPONSE, 1).u32(6).u16(codes::OK).done()),
        ("heartbeat", f(keys::HEARTBEAT, 1).done()),
        (
            "exchange-command-versions",
            f(keys::EXCHANGE_COMMAND_VERSIONS, 1)
                .u32(7)
                .i32(2)
                .u16(8)
                .u16(1)
                .u16(2)
                .u16(3)
                .u16(1)
                .u16(1)
                .done(),
        ),
        ("create", f(keys::CREATE, 1).u32(8).string("orders").i32(1).string("max-age").string("PT1H").done()),
        ("delete", f(keys::DELETE, 1).u32(9).string("orders").done()),
        ("metadata", f(keys::METADATA, 1).u32(10).i32(2).string("orders").string("invoices-0").done()),
        ("stream-stats", f(keys::STREAM_STATS, 1).u32(11).string("orders").done()),
        (
            "declare-publisher",
            f(keys::DECLARE_PUBLISHER, 1).u32(12).u8(1).string("producer-1").string("orders").done(),
        ),
        (
            "declare-publisher-null-reference",
            f(keys::DECLARE_PUBLISHER, 1).u32(13).u8(2).i16(-1).string("orders").done(),
        ),
        (
            "publish-v1",
            f(keys::PUBLISH, 1).u8(1).i32(2).u64(1).bytes(&amqp("hello")).u64(2).bytes(&amqp("world")).done(),
        ),
        (
            "publish-v1-sub-entries",
            f(keys::PUBLISH, 1)
                .u8(1)
                .i32(2)
                .u64(3)
                .u8(0x80)
                .u16(2)
                .u32(18)
                .bytes(&[0, 0, 0, 5, 0, 0x53, 0x77, 0xa1, 0, 0, 0, 0, 5, 0, 0x53, 0x77, 0xa1, 0])
                .u64(4)
                .u8(0x80 | 4 << 4)
                .u16(100)
                .u32(4000)
                .bytes(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0x58])
                .done(),
        ),
        (
            "publish-v2",
            f(keys::PUBLISH, 2)
                .u8(1)
                .i32(3)
                .u64(5)
                .string("eu")
                .bytes(&amqp("eu message"))
                .u64(6)
                .i16(-1)
                .bytes(&amqp("unfiltered"))
                .u64(7)
                .string("")
                .bytes(b"")
                .done(),
        ),
        (
            "query-publisher-sequence",
            f(keys::QUERY_PUBLISHER_SEQUENCE, 1).u32(14).string("producer-1").string("orders").done(),
        ),
        ("delete-publisher", f(keys::DELETE_PUBLISHER, 1).u32(15).u8(1).done()),
        (
            "subscribe",
            f(keys::SUBSCRIBE, 1)
                .u32(16)
                .u8(1)
                .string("orders")
                .u16(4)
                .u64(42)
                .u16(10)
                .i32(3)
                .string("name")
                .string("app")
                .string("filter.0")
                .string("eu")
                .string("match-unfiltered")
                .string("true")
                .done(),
        ),
        (
            "subscribe-no-properties",
            f(keys::SUBSCRIBE, 1).u32(17).u8(2).string("orders").u16(1).u16(1).done(),
        ),
        (
            "subscribe-timestamp",
            f(keys::SUBSCRIBE, 1)
                .u32(18)
                .u8(3)
                .string("orders")
                .u16(5)
                .i64(1_700_000_000_000)
                .u16(2)
                .i32(0)
                .done(),
        ),
        ("credit", f(keys::CREDIT, 1).u8(1).u16(5).done()),
        ("unsubscribe", f(keys::UNSUBSCRIBE, 1).u32(19).u8(1).done()),
        (
            "consumer-update-response",
            f(keys::CONSUMER_UPDATE_RESPONSE, 1).u32(20).u16(codes::OK).u16(4).u64(7).done(),
        ),
        (
            "consumer-update-response-none",
            f(keys::CONSUMER_UPDATE_RESPONSE, 1).u32(21).u16(codes::OK).u16(0).done(),
        ),
        (
            "consumer-update-response-rstream",
            f(keys::CONSUMER_UPDATE_RESPONSE, 1).u32(21).u16(codes::OK).u16(3).u64(0).done(),
        ),
        ("store-offset", f(keys::STORE_OFFSET, 1).string("app").string("orders").u64(99).done()),
        ("query-offset", f(keys::QUERY_OFFSET, 1).u32(22).string("app").string("orders").done()),
        (
            "create-super-stream",
            f(keys::CREATE_SUPER_STREAM, 1)
                .u32(23)
                .string("invoices")
                .i32(2)
                .string("invoices-0")
                .string("invoices-1")
                .i32(2)
                .string("0")
                .string("1")
                .i32(1)
                .string("max-length-bytes")
                .string("1000000")
                .done(),
        ),
        ("delete-super-stream", f(keys::DELETE_SUPER_STREAM, 1).u32(24).string("invoices").done()),
        ("route", f(keys::ROUTE, 1).u32(25).string("customer-7").string("invoices").done()),
        ("partitions", f(keys::PARTITIONS, 1).u32(26).string("invoices").done()),
    ]
}

#[test]
fn every_seed_decodes_and_every_command_has_a_seed() {
    let mut names = std::collections::BTreeSet::new();
    for (name, frame) in seed_frames() {
        let frame = decode(&frame[4..]).unwrap_or_else(|error| panic!("{name}: {error}"));
        let variant = format!("{:?}", frame.command);
        names.insert(variant.split([' ', '{']).next().unwrap_or_default().to_string());
    }
    assert_eq!(names.len(), 27, "one seed per Command variant: {names:?}");
}

/// `fuzz/corpus/rabbitmq_frame/seed-<name>` holds each seed's body; `RINGBROKER_WRITE_SEEDS=1`
/// (re)writes them.
#[test]
fn fuzz_seed_corpus_is_current() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/rabbitmq_frame");
    let write = std::env::var_os("RINGBROKER_WRITE_SEEDS").is_some();
    for (name, frame) in seed_frames() {
        let path = dir.join(format!("seed-{name}"));
        if write {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &frame[4..]).unwrap();
        } else {
            let stored = std::fs::read(&path).unwrap_or_default();
            assert!(stored == frame[4..], "{} is stale; rerun with RINGBROKER_WRITE_SEEDS=1", path.display());
        }
    }
}
