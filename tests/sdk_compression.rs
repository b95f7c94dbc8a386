//! Compressed batches through the SDK against the real broker binary: a producer with
//! `.compression(lz4 | zstd)` writes batches the broker stores compressed (checked on the raw
//! poll answer's batch headers), and the SDK consumer reads every message back intact — payload,
//! key, filter value and headers, in order. Every wait is bounded by a deadline.

mod common;

use std::time::Duration;

use futures::StreamExt;
use ringbroker::client::consumer::{AutoCommit, Consumer, PollStrategy, ReceivedMessage};
use ringbroker::client::{Client, Partitioning, Producer, ProducerMessage};
use ringbroker::protocol::batch::{batches, Compression};
use ringbroker::protocol::messages::{PollStrategy as WireStrategy, TopicConfig};
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(10);
const MESSAGES: usize = 600;

async fn connect(broker: &common::Broker) -> Client {
    Client::connect_addr(&broker.addr().to_string(), "ringbroker", "ringbroker").await.expect("connect")
}

/// A compressible, JSON-like record with a few varying fields.
fn order(i: usize) -> String {
    format!(
        r#"{{"order_id":{i},"customer":"customer-{:05}","status":"paid","items":[{{"sku":"SKU-{:04}","quantity":{},"price_cents":{}}}],"currency":"EUR","note":"{}"}}"#,
        i % 97,
        i % 13,
        1 + i % 5,
        100 + (i * 37) % 9000,
        "x".repeat(i % 40)
    )
}

fn message(i: usize) -> ProducerMessage {
    let mut message = ProducerMessage::keyed(format!("customer-{}", i % 7), order(i));
    if i % 3 == 0 {
        message = message.with_filter_value(format!("region-{}", i % 4));
    }
    if i % 2 == 0 {
        message = message.with_header("trace", format!("t-{i}")).with_header("empty", "");
    }
    message
}

fn check(received: &ReceivedMessage, expected: &ProducerMessage, i: usize) {
    assert_eq!(received.payload, expected.payload, "message {i}: payload");
    assert_eq!(received.key, expected.key, "message {i}: key");
    assert_eq!(received.filter_value, expected.filter_value, "message {i}: filter value");
    assert_eq!(received.headers, expected.headers, "message {i}: headers");
}

/// The codec bits of every batch stored in partition 0, read raw (the SDK's poll inflates, so
/// this goes through the tests' blocking connection).
async fn stored_codecs(broker: &common::Broker, stream: &str) -> Vec<u8> {
    let mut conn = broker.root();
    let stream = stream.to_string();
    tokio::task::spawn_blocking(move || {
        let (_, payload) = conn
            .poll_partition_bytes(&stream, "t", 0, WireStrategy::Offset(0), 100_000, 16 << 20)
            .expect("raw poll");
        batches(&payload).map(|batch| batch.expect("a valid stored batch").header().codec()).collect()
    })
    .await
    .expect("raw poll task")
}

async fn round_trip(compression: Compression) {
    let broker = common::Broker::start(2, &["--fsync", "always"]);
    let client = connect(&broker).await;
    let stream = format!("compressed-{compression}");
    client.create_stream(&stream, false).await.expect("stream");
    let config = TopicConfig { partitions: 1, ..TopicConfig::default() };
    client.create_topic(&stream, "t", config, false).await.expect("topic");

    let producer = Producer::builder(&client, stream.as_str(), "t")
        .compression(compression)
        .partitioning(Partitioning::Partition(0))
        .batch_size(100)
        .build()
        .await
        .expect("producer");
    let expected: Vec<ProducerMessage> = (0..MESSAGES).map(message).collect();
    producer.send(expected[..MESSAGES / 2].to_vec()).await.expect("send");
    // The other half in one confirmed batch.
    let receipts = producer.send_batch(expected[MESSAGES / 2..].to_vec()).await.expect("send_batch");
    assert_eq!(receipts.len(), 1, "one batch for one partition");
    assert_eq!(receipts[0].messages as usize, MESSAGES - MESSAGES / 2);
    assert_eq!(receipts[0].base_offset(), Some((MESSAGES / 2) as u64), "after everything sent before");
    producer.shutdown().await.expect("shutdown");

    let codecs = stored_codecs(&broker, &stream).await;
    assert_eq!(codecs.len(), 4, "three batches of 100 and one of 300: {codecs:?}");
    let codec = compression.codec().expect("a codec");
    assert!(codecs.iter().all(|stored| *stored == codec), "stored compressed with {compression}: {codecs:?}");

    let mut consumer = Consumer::builder(&client, &stream, "t")
        .consumer_name("reader")
        .partition(0)
        .polling_strategy(PollStrategy::First)
        .auto_commit(AutoCommit::Disabled)
        .polling_interval(Duration::from_millis(20))
        .build()
        .await
        .expect("consumer");
    let deadline = Instant::now() + WAIT;
    for (i, expected) in expected.iter().enumerate() {
        let next = tokio::time::timeout_at(deadline, consumer.next()).await;
        let received = next.unwrap_or_else(|_| panic!("only {i} of {MESSAGES} messages arrived"));
        let received = received.expect("the stream never ends").expect("message");
        assert_eq!(received.offset, i as u64);
        check(&received, expected, i);
    }
    consumer.shutdown().await.expect("consumer shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lz4_batches_round_trip_through_producer_and_consumer() {
    round_trip(Compression::Lz4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_batches_round_trip_through_producer_and_consumer() {
    round_trip(Compression::Zstd).await;
}
