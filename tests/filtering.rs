//! Filtering by filter value against the real broker binary: raw polls skip whole batches by
//! their header (compressed ones too) and still move `next_offset` past them; the stats counters
//! count what was skipped; a long poll waits through unwanted data; the SDK consumer delivers
//! exactly the wanted messages (with and without `match_unfiltered`) and commits past the rest;
//! a filter over the limits gets `InvalidFilter` and the connection keeps working. Every wait is
//! bounded by a deadline.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use ringbroker::client::consumer::{AutoCommit, Consumer, PollStrategy as SdkStrategy};
use ringbroker::client::{Client, ClientError};
use ringbroker::constants::{FILTER_VALUES_MAX, FILTER_VALUE_BYTES_MAX};
use ringbroker::protocol::batch::{batches, BatchBuilder, BatchHeader, Compression, Message};
use ringbroker::protocol::messages::{
    ConsumerRef, Kind, PartitionTarget, Partitioning, PollRequest, PollResponse, PollStrategy, PollTarget,
    Status,
};

const WAIT: Duration = Duration::from_secs(10);

/// The batches written to partition 0, in order: (filter value of each record, compression).
/// Offsets: A 0..3 eu, B 3..6 us, C 6..8 none, D 8..12 mixed, E 12..14 apac (lz4), F 14..16 eu
/// (zstd).
fn layout() -> Vec<(Vec<Option<&'static str>>, Compression)> {
    vec![
        (vec![Some("eu"); 3], Compression::None),
        (vec![Some("us"); 3], Compression::None),
        (vec![None; 2], Compression::None),
        (vec![Some("eu"), None, Some("us"), Some("apac")], Compression::None),
        (vec![Some("apac"); 2], Compression::Lz4),
        (vec![Some("eu"); 2], Compression::Zstd),
    ]
}

/// Offsets of the records whose value one of `values` is (or none, with `unfiltered`).
fn expected(values: &[&str], unfiltered: bool) -> Vec<u64> {
    let records = layout().into_iter().flat_map(|(records, _)| records);
    let wanted = |value: Option<&str>| value.map_or(unfiltered, |v| values.contains(&v));
    records.enumerate().filter(|(_, value)| wanted(*value)).map(|(offset, _)| offset as u64).collect()
}

/// One batch; payloads are `"{value}-{i}"`, large and repetitive enough to compress.
fn batch(values: &[Option<&str>], compression: Compression) -> Vec<u8> {
    let mut builder = BatchBuilder::new(0, 0);
    builder.set_compression(compression);
    for (i, value) in values.iter().enumerate() {
        let payload = format!("{}-{i}-{}", value.unwrap_or("none"), "x".repeat(300));
        let message =
            Message { filter_value: value.map(str::as_bytes), ..Message::payload(payload.as_bytes()) };
        builder.push(&message).expect("push");
    }
    builder.finish().expect("finish")
}

/// A broker with stream `s`, topic `t` (one partition) holding [`layout`]; returns the stored
/// length of each batch.
fn broker_with_layout() -> (common::Broker, Vec<u64>) {
    let broker = common::Broker::start(2, &["--fsync", "always"]);
    let mut conn = broker.root();
    conn.create_stream("s");
    conn.create_topic("s", "t", 1);
    let mut lengths = Vec::new();
    for (values, compression) in layout() {
        let bytes = batch(&values, compression);
        let header = BatchHeader::decode(&bytes).expect("header");
        assert_eq!(header.is_compressed(), compression != Compression::None, "compression took");
        lengths.push(bytes.len() as u64);
        conn.produce("s", "t", Partitioning::Partition(0), &[bytes]).expect("produce");
    }
    (broker, lengths)
}

fn filtered_poll(strategy: PollStrategy, filter: &[&str], unfiltered: bool, wait_ms: u32) -> PollRequest {
    PollRequest {
        stream: "s".into(),
        topic: "t".into(),
        target: PollTarget::Partition(PartitionTarget { partition: 0, consumer: "raw".into() }),
        strategy,
        max_messages: 1000,
        max_bytes: 4 << 20,
        max_wait_ms: wait_ms,
        auto_commit: false,
        filter: filter.iter().map(|v| v.to_string()).collect(),
        match_unfiltered: unfiltered,
    }
}

/// Base offsets of the batches in a poll payload.
fn bases(payload: &[u8]) -> Vec<u64> {
    batches(payload).map(|b| b.expect("valid batch").header().base_offset).collect()
}

#[test]
fn polls_skip_batches_by_header_and_count_them() {
    let (broker, lengths) = broker_with_layout();
    let mut conn = broker.root();
    let request = filtered_poll(PollStrategy::Offset(0), &["eu"], false, 0);
    let (response, payload): (PollResponse, Vec<u8>) = conn.request(Kind::Poll, &request, &[]).expect("poll");
    // B (us), C (no values) and E (apac, compressed) are skipped; D mixes values and is sent.
    assert_eq!(bases(&payload), [0, 8, 14]);
    let marks = &response.partitions[0];
    assert_eq!((marks.start_offset, marks.next_offset, marks.high_watermark), (0, 16, 16));
    let skipped = lengths[1] + lengths[2] + lengths[4];
    assert_eq!(payload.len() as u64, lengths.iter().sum::<u64>() - skipped);

    let stats = conn.stats();
    assert_eq!((stats.server.filtered_batches, stats.server.filtered_bytes), (3, skipped));
    let topic = &stats.streams[0].topics[0];
    assert_eq!((topic.filtered_batches, topic.filtered_bytes), (3, skipped));
    assert_eq!((topic.partitions[0].filtered_batches, topic.partitions[0].filtered_bytes), (3, skipped));

    // Starting inside a skipped batch: nothing before D is sent, the marks keep the start.
    let request = filtered_poll(PollStrategy::Offset(4), &["apac"], false, 0);
    let (response, payload): (PollResponse, Vec<u8>) = conn.request(Kind::Poll, &request, &[]).expect("poll");
    assert_eq!(bases(&payload), [8, 12]);
    assert_eq!((response.partitions[0].start_offset, response.partitions[0].next_offset), (4, 16));

    // match_unfiltered: batches without values are wanted, and so is every batch with values
    // (the header cannot say whether some of its records lack one).
    let request = filtered_poll(PollStrategy::Offset(0), &["eu"], true, 0);
    let (_, payload): (PollResponse, Vec<u8>) = conn.request(Kind::Poll, &request, &[]).expect("poll");
    assert_eq!(bases(&payload), [0, 3, 6, 8, 12, 14]);
    // Nothing wanted at all: an empty answer that still moves past everything, committed.
    let mut request = filtered_poll(PollStrategy::Offset(0), &["nowhere"], false, 0);
    request.auto_commit = true;
    let (response, payload): (PollResponse, Vec<u8>) = conn.request(Kind::Poll, &request, &[]).expect("poll");
    assert!(payload.is_empty());
    assert_eq!(response.partitions[0].next_offset, 16);
    let stored = stored_offset(&mut conn, "raw");
    assert_eq!(stored, Some(16), "auto-commit stores the position past the skipped batches");
    assert_eq!(
        conn.stats().server.filtered_batches,
        3 + 3 + 6,
        "B, C, F skipped for apac; all six for nowhere"
    );
}

fn stored_offset(conn: &mut common::Conn, consumer: &str) -> Option<u64> {
    let request = ringbroker::protocol::messages::GetOffset {
        stream: "s".into(),
        topic: "t".into(),
        partition: 0,
        consumer: ConsumerRef::Named(consumer.into()),
    };
    let info: ringbroker::protocol::messages::OffsetInfo =
        conn.call(Kind::OffsetGet, &request).expect("offset get");
    info.stored
}

#[test]
fn a_long_poll_waits_through_unwanted_data() {
    let (broker, _) = broker_with_layout();
    let addr = broker.addr();
    let producer = std::thread::spawn(move || {
        let mut conn = common::Conn::connect(addr).expect("connect");
        conn.login("ringbroker", "ringbroker").expect("login");
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(60));
            conn.produce("s", "t", Partitioning::Partition(0), &[batch(&[Some("us"); 2], Compression::None)])
                .expect("produce us");
        }
        std::thread::sleep(Duration::from_millis(60));
        conn.produce("s", "t", Partitioning::Partition(0), &[batch(&[Some("eu")], Compression::None)])
            .expect("produce eu");
    });
    let mut conn = broker.root();
    let started = Instant::now();
    let request = filtered_poll(PollStrategy::Offset(16), &["eu"], false, 8_000);
    let (response, payload): (PollResponse, Vec<u8>) = conn.request(Kind::Poll, &request, &[]).expect("poll");
    producer.join().expect("producer thread");
    assert!(started.elapsed() < Duration::from_secs(7), "answered when the wanted batch came");
    assert_eq!(bases(&payload), [26], "only the eu batch, after five us batches");
    let marks = &response.partitions[0];
    assert_eq!((marks.start_offset, marks.next_offset), (16, 27));

    // Only unwanted data comes: the poll answers at its deadline, past what it skipped.
    let addr = broker.addr();
    let producer = std::thread::spawn(move || {
        let mut conn = common::Conn::connect(addr).expect("connect");
        conn.login("ringbroker", "ringbroker").expect("login");
        std::thread::sleep(Duration::from_millis(100));
        conn.produce("s", "t", Partitioning::Partition(0), &[batch(&[Some("us")], Compression::None)])
            .expect("produce us");
    });
    let started = Instant::now();
    let request = filtered_poll(PollStrategy::Offset(27), &["eu"], false, 800);
    let (response, payload): (PollResponse, Vec<u8>) = conn.request(Kind::Poll, &request, &[]).expect("poll");
    producer.join().expect("producer thread");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(750) && waited < Duration::from_secs(5), "waited {waited:?}");
    assert!(payload.is_empty());
    assert_eq!((response.partitions[0].start_offset, response.partitions[0].next_offset), (27, 28));
}

#[test]
fn bad_filters_get_a_clear_status_and_the_connection_survives() {
    let (broker, _) = broker_with_layout();
    let mut conn = broker.root();
    let many: Vec<String> = (0..=FILTER_VALUES_MAX).map(|i| format!("v{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let request = filtered_poll(PollStrategy::Offset(0), &many, false, 0);
    let failure = conn.request::<_, PollResponse>(Kind::Poll, &request, &[]).expect_err("too many values");
    assert_eq!(failure.status, Status::InvalidFilter);
    assert!(failure.message.contains("at most 32"), "{}", failure.message);
    let long = "x".repeat(FILTER_VALUE_BYTES_MAX + 1);
    let request = filtered_poll(PollStrategy::Offset(0), &["eu", &long], false, 0);
    let failure = conn.request::<_, PollResponse>(Kind::Poll, &request, &[]).expect_err("value too long");
    assert_eq!(failure.status, Status::InvalidFilter);
    assert!(failure.message.contains("filter value 1"), "{}", failure.message);
    conn.ping().expect("the connection still works");
    let request = filtered_poll(PollStrategy::Offset(0), &many[..FILTER_VALUES_MAX], false, 0);
    let (response, _): (PollResponse, Vec<u8>) =
        conn.request(Kind::Poll, &request, &[]).expect("at the limit");
    assert_eq!(response.partitions[0].next_offset, 16);
}

async fn connect(broker: &common::Broker) -> Client {
    Client::connect_addr(&broker.addr().to_string(), "ringbroker", "ringbroker").await.expect("connect")
}

/// Reads with an SDK consumer until `count` messages came; returns their offsets and the
/// consumer's position once it settled on `end` (or whatever it reached by the deadline).
async fn sdk_read(client: &Client, name: &str, filter: &[&str], unfiltered: bool, count: usize) -> Vec<u64> {
    let mut consumer = Consumer::builder(client, "s", "t")
        .consumer_name(name)
        .polling_strategy(SdkStrategy::First)
        .auto_commit(AutoCommit::Disabled)
        .polling_interval(Duration::from_millis(20))
        .filter(filter.iter().copied())
        .match_unfiltered(unfiltered)
        .build()
        .await
        .expect("consumer");
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut offsets = Vec::new();
    while offsets.len() < count {
        let next = tokio::time::timeout_at(deadline, consumer.next()).await;
        let message = next.unwrap_or_else(|_| panic!("{name}: only {offsets:?} arrived"));
        let message = message.expect("the stream never ends").expect("message");
        let value = message.filter_value.as_deref().map(|v| String::from_utf8_lossy(v).into_owned());
        assert!(value.as_deref().map_or(unfiltered, |v| filter.contains(&v)), "{name}: got {value:?}");
        offsets.push(message.offset);
    }
    // Nothing else arrives, and the position moves past the filtered-out tail.
    let extra = tokio::time::timeout(Duration::from_millis(300), consumer.next()).await;
    assert!(extra.is_err(), "{name}: an unwanted message arrived: {extra:?}");
    assert_eq!(consumer.consumed_offsets(), BTreeMap::from([(0, 16)]), "{name}: position");
    consumer.commit().await.expect("commit");
    consumer.shutdown().await.expect("shutdown");
    offsets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_consumer_delivers_exactly_the_wanted_messages() {
    let (broker, _) = broker_with_layout();
    let client = connect(&broker).await;
    let cases: [(&str, &[&str], bool); 5] = [
        ("eu", &["eu"], false),
        ("us", &["us"], false),
        ("eu-apac", &["eu", "apac"], false),
        ("eu-unfiltered", &["eu"], true),
        ("none-unfiltered", &["nowhere"], true),
    ];
    for (name, values, unfiltered) in cases {
        let want = expected(values, unfiltered);
        let got = sdk_read(&client, name, values, unfiltered, want.len()).await;
        assert_eq!(got, want, "{name}");
        let info = client.get_offset("s", "t", 0, ConsumerRef::Named(name.into())).await.expect("offset");
        assert_eq!(info.stored, Some(16), "{name}: the commit moved past the filtered-out messages");
    }
    let refused = Consumer::builder(&client, "s", "t")
        .consumer_name("bad")
        .filter((0..=FILTER_VALUES_MAX).map(|i| format!("v{i}")))
        .build()
        .await;
    assert!(matches!(refused, Err(ClientError::InvalidRequest(_))), "{refused:?}");
    let refused =
        Consumer::builder(&client, "s", "t").consumer_name("bad").match_unfiltered(true).build().await;
    assert!(matches!(refused, Err(ClientError::InvalidRequest(_))), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_group_member_reads_exactly_and_the_group_moves_on() {
    let (broker, _) = broker_with_layout();
    let client = connect(&broker).await;
    let mut consumer = Consumer::builder(&client, "s", "t")
        .group("g")
        .polling_strategy(SdkStrategy::First)
        .auto_commit(AutoCommit::AfterPoll)
        .polling_interval(Duration::from_millis(20))
        .filter(["us"])
        .build()
        .await
        .expect("consumer");
    let want = expected(&["us"], false);
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut got = Vec::new();
    while got.len() < want.len() {
        let next = tokio::time::timeout_at(deadline, consumer.next()).await.expect("in time");
        got.push(next.expect("never ends").expect("message").offset);
    }
    assert_eq!(got, want);
    let deadline = Instant::now() + WAIT;
    loop {
        let info = client.get_offset("s", "t", 0, ConsumerRef::Group("g".into())).await.expect("offset");
        if info.stored == Some(16) {
            break;
        }
        assert!(Instant::now() < deadline, "the group's offset stayed at {:?}", info.stored);
        let _ = tokio::time::timeout(Duration::from_millis(50), consumer.next()).await;
    }
    consumer.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_group_member_does_not_rescan_what_it_skipped() {
    let broker = common::Broker::start(2, &["--fsync", "always"]);
    let mut conn = broker.root();
    conn.create_stream("s");
    conn.create_topic("s", "t", 1);
    let unwanted: Vec<Vec<u8>> = (0..3).map(|_| batch(&[Some("us"); 2], Compression::None)).collect();
    conn.produce("s", "t", Partitioning::Partition(0), &unwanted).expect("produce");
    let client = connect(&broker).await;
    let mut consumer = Consumer::builder(&client, "s", "t")
        .group("g")
        .polling_strategy(SdkStrategy::First)
        .polling_interval(Duration::from_millis(20))
        .filter(["eu"])
        .build()
        .await
        .expect("consumer");
    // Many polls: each answers at its deadline, having moved past the unwanted batches.
    let nothing = tokio::time::timeout(Duration::from_millis(500), consumer.next()).await;
    assert!(nothing.is_err(), "nothing wanted is there: {nothing:?}");
    let stats = client.stats(None).await.expect("stats");
    assert_eq!(stats.server.filtered_batches, 3, "each unwanted batch is skipped once, not once per poll");
    let info = client.get_offset("s", "t", 0, ConsumerRef::Group("g".into())).await.expect("offset");
    assert_eq!(info.stored, Some(6));
    consumer.shutdown().await.expect("shutdown");
}
