//! Format compatibility: a data directory written by the version-1 broker (batch format 1, commit
//! 35eb21f; `tests/fixtures/v1-data`, made with `ringctl produce` and `ringctl offset store`)
//! opens under the current broker and serves every message, its stored offsets and its metadata;
//! new (version-2) batches append after the old ones in the same segment, and the mixed log
//! survives a restart and a SIGKILL.
//!
//! The fixture: stream `legacy`, topic `events` with 2 partitions. Partition 0 holds
//! `v1-message-0..3000` (batches of 100, two 64 KiB segments) then `v1-keyed-0..500` with key
//! `user-7`; partition 1 holds `v1-p1-0..200`. Consumer `legacy-reader` stored offset 1234 on
//! partition 0.

mod common;

use std::path::Path;

use common::{batch_of, read_partition, Broker, Conn};
use ringbroker::protocol::batch;
use ringbroker::protocol::messages::{ConsumerRef, GetOffset, Kind, OffsetInfo, Partitioning, PollStrategy};

const STREAM: &str = "legacy";
const TOPIC: &str = "events";

fn fixture() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v1-data"))
}

fn expected_v1(partition: u32) -> Vec<(u64, String)> {
    let payloads: Vec<String> = if partition == 0 {
        (0..3000)
            .map(|i| format!("v1-message-{i}"))
            .chain((0..500).map(|i| format!("v1-keyed-{i}")))
            .collect()
    } else {
        (0..200).map(|i| format!("v1-p1-{i}")).collect()
    };
    payloads.into_iter().enumerate().map(|(i, p)| (i as u64, p)).collect()
}

/// Every partition holds the fixture's messages, then `extra` (payload tags appended since).
fn check_contents(conn: &mut Conn, extra: &[(u32, &str, u32)]) {
    for partition in 0..2 {
        let mut expected = expected_v1(partition);
        for (p, tag, count) in extra {
            if *p == partition {
                let base = expected.len() as u64;
                expected.extend((0..*count).map(|i| (base + u64::from(i), format!("{tag}-{i}"))));
            }
        }
        let found = read_partition(conn, STREAM, TOPIC, partition);
        assert_eq!(found.len(), expected.len(), "partition {partition}: message count");
        assert_eq!(found, expected, "partition {partition}: contents");
    }
}

/// The fixture's keyed messages kept their key and their version-1 headers.
fn check_v1_headers(conn: &mut Conn) {
    let (_, payload) = conn.poll_partition(STREAM, TOPIC, 0, PollStrategy::Offset(3000), 50).expect("poll");
    let first = batch::batches(&payload).next().expect("a batch").expect("valid");
    assert_eq!(first.header().version, batch::BATCH_FORMAT_VERSION_1);
    let record = first.records().next().expect("a record");
    assert_eq!(record.key, Some(&b"user-7"[..]));
}

fn stored_offset(conn: &mut Conn) -> Option<u64> {
    let request = GetOffset {
        stream: STREAM.into(),
        topic: TOPIC.into(),
        partition: 0,
        consumer: ConsumerRef::Named("legacy-reader".into()),
    };
    let info: OffsetInfo = conn.call(Kind::OffsetGet, &request).expect("offset get");
    info.stored
}

#[test]
fn version_1_data_opens_serves_and_takes_new_batches() {
    let mut broker = Broker::start_from(2, &["--segment-bytes", "65536"], fixture());
    let mut conn = broker.root();
    check_contents(&mut conn, &[]);
    check_v1_headers(&mut conn);
    assert_eq!(stored_offset(&mut conn), Some(1234));

    // Version-2 batches after the version-1 ones, in the same active segments.
    for (partition, tag) in [(0, "v2-a"), (1, "v2-b")] {
        let answer = conn.produce(STREAM, TOPIC, Partitioning::Partition(partition), &[batch_of(tag, 40)]);
        answer.expect("produce after version-1 batches");
    }
    let extra = [(0, "v2-a", 40), (1, "v2-b", 40)];
    check_contents(&mut conn, &extra);

    drop(conn);
    broker.restart();
    let mut conn = broker.root();
    check_contents(&mut conn, &extra);
    assert_eq!(stored_offset(&mut conn), Some(1234));

    drop(conn);
    broker.kill();
    broker.start_again();
    let mut conn = broker.root();
    check_contents(&mut conn, &extra);
    check_v1_headers(&mut conn);
}
