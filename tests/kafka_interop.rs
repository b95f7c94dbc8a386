//! Interoperability of the Kafka listener with the native side, on one broker of two shards:
//!
//! 1. Kafka in, native out: a raw Produce (record batches built with the `kafka-protocol` crate:
//!    per-record keys, headers and create timestamps) and kcat (`-P -K: -H ...`) write keyed
//!    messages to topics of broker stream `kafka`, created natively; the native SDK consumer
//!    reads them back with the same keys, values, headers, offsets and, for the raw ones,
//!    timestamps (milliseconds become microseconds).
//! 2. Native in, Kafka out: the native SDK producer writes keyed messages with headers; a raw
//!    Fetch (decoded with the crate's record batch decoder) and kcat (`-C -e -f '%o %k %s %h'`)
//!    read them with the same keys, values, headers and the offsets the native producer got.
//!
//! Without kcat its parts print SKIP (a failure under `CI=true`); the raw parts always run.
//! Every wait is bounded (tokio timeouts, kcat killed at its timeout).

mod common;
#[path = "common/kafka.rs"]
mod kafka;

use std::future::Future;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use kafka::{record, record_batch, run_bounded, RawClient, Server};
use ringbroker::client::consumer::{AutoCommit, Consumer, PollStrategy, ReceivedMessage};
use ringbroker::client::{Client, Partitioning, Producer, ProducerMessage, ShardRouter};
use ringbroker::protocol::messages::TopicConfig;

/// Messages each part carries.
const COUNT: usize = 500;
/// Records per raw record batch.
const BATCH: usize = 50;
/// The broker stream that holds Kafka topics (the listener's default).
const BROKER_STREAM: &str = "kafka";
/// Bound of one wait.
const WAIT: Duration = Duration::from_secs(20);
/// Bound of one kcat run.
const KCAT_TIMEOUT: Duration = Duration::from_secs(60);
const KCAT_INSTALL: &str = "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat";

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future).await.unwrap_or_else(|_| panic!("timed out after {WAIT:?}: {what}"))
}

async fn native(server: &Server) -> (Client, ShardRouter) {
    let address = server.broker.addr().to_string();
    let client = within("native connect", Client::connect_addr(&address, "ringbroker", "ringbroker")).await;
    let client = client.expect("native connect");
    let router = within("router", ShardRouter::new(client.clone())).await.expect("router");
    (client, router)
}

/// Creates topic `topic` of one partition in the broker stream, natively.
async fn create_topic(client: &Client, topic: &str) {
    within("stream", client.create_stream(BROKER_STREAM, true)).await.expect("create the broker stream");
    let config = TopicConfig { partitions: 1, ..TopicConfig::default() };
    within("topic", client.create_topic(BROKER_STREAM, topic, config, false)).await.expect("create topic");
}

/// Reads partition 0 of `topic` from the first offset: exactly `count` messages.
async fn consume_native(router: &ShardRouter, topic: &str, count: usize) -> Vec<ReceivedMessage> {
    let build = Consumer::builder(router, BROKER_STREAM, topic)
        .consumer_name(format!("{topic}-reader"))
        .partition(0)
        .polling_strategy(PollStrategy::First)
        .auto_commit(AutoCommit::Disabled)
        .polling_interval(Duration::from_millis(20))
        .build();
    let mut consumer = within("native consumer", build).await.expect("native consumer");
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let next = tokio::time::timeout(WAIT, consumer.next()).await;
        let next = next.unwrap_or_else(|_| panic!("{topic}: only {} of {count} messages arrived", out.len()));
        out.push(next.expect("the consumer ended").expect("a message"));
    }
    if let Ok(extra) = tokio::time::timeout(Duration::from_millis(300), consumer.next()).await {
        panic!("{topic}: a message beyond the {count} expected: {:?}", extra.map(|m| m.map(|m| m.offset)));
    }
    within("consumer shutdown", consumer.shutdown()).await.expect("shutdown");
    out
}

fn kcat_present() -> bool {
    if kafka::runs("kcat", &["-V"]) {
        return true;
    }
    kafka::skip_missing("kcat", KCAT_INSTALL);
    false
}

fn kcat(server: &Server, args: &[&str], stdin: &[u8]) -> kafka::Ran {
    let mut command = Command::new("kcat");
    command.arg("-b").arg(server.bootstrap()).args(args).args(["-X", "socket.timeout.ms=10000"]);
    run_bounded(&mut command, stdin, KCAT_TIMEOUT)
}

fn bytes(text: String) -> Bytes {
    Bytes::from(text.into_bytes())
}

/// Part 1a: raw Produce in, native out, with per-record headers and timestamps.
fn raw_in_native_out(runtime: &tokio::runtime::Runtime, server: &Server) {
    const TOPIC: &str = "interop-raw-in";
    let (_client, router) = runtime.block_on(async {
        let (client, router) = native(server).await;
        create_topic(&client, TOPIC).await;
        (client, router)
    });
    let base_ms = 1_700_000_000_000_i64;
    let mut raw = RawClient::connect(server.addr()).expect("connect");
    for (chunk, start) in (0..COUNT).step_by(BATCH).enumerate() {
        let records: Vec<_> = (start..start + BATCH)
            .map(|i| {
                let index = i.to_string();
                let headers: [(&str, &[u8]); 2] = [("index", index.as_bytes()), ("origin", b"raw")];
                record(
                    format!("key-{i}").as_bytes(),
                    format!("value-{i}").as_bytes(),
                    &headers,
                    base_ms + i as i64,
                )
            })
            .collect();
        let answer = raw.produce(TOPIC, 0, record_batch(&records));
        assert_eq!(answer.error_code, 0, "raw produce of batch {chunk}: {answer:?}");
        assert_eq!(answer.base_offset, start as i64, "batch {chunk}'s base offset");
    }
    let got = runtime.block_on(consume_native(&router, TOPIC, COUNT));
    for (i, message) in got.iter().enumerate() {
        assert_eq!(message.offset, i as u64, "message {i}'s offset");
        assert_eq!(message.key, Some(bytes(format!("key-{i}"))), "message {i}'s key");
        assert_eq!(message.payload, bytes(format!("value-{i}")), "message {i}'s value");
        let headers = vec![
            (bytes("index".into()), bytes(i.to_string())),
            (bytes("origin".into()), bytes("raw".into())),
        ];
        assert_eq!(message.headers, headers, "message {i}'s headers");
        assert_eq!(message.timestamp_us, (base_ms as u64 + i as u64) * 1000, "message {i}'s timestamp");
    }
}

/// Part 1b: kcat in, native out.
fn kcat_in_native_out(runtime: &tokio::runtime::Runtime, server: &Server) {
    const TOPIC: &str = "interop-kcat-in";
    if !kcat_present() {
        return;
    }
    let (_client, router) = runtime.block_on(async {
        let (client, router) = native(server).await;
        create_topic(&client, TOPIC).await;
        (client, router)
    });
    let input: String = (0..COUNT).map(|i| format!("key-{i}:value-{i}\n")).collect();
    let args =
        ["-P", "-t", TOPIC, "-p", "0", "-K:", "-H", "origin=kcat", "-H", "trace=t-1", "-X", "linger.ms=5"];
    let produced = kcat(server, &args, input.as_bytes());
    assert!(produced.success(), "kcat -P failed: {}", produced.describe());
    let got = runtime.block_on(consume_native(&router, TOPIC, COUNT));
    let headers =
        vec![(bytes("origin".into()), bytes("kcat".into())), (bytes("trace".into()), bytes("t-1".into()))];
    for (i, message) in got.iter().enumerate() {
        assert_eq!(message.offset, i as u64, "message {i}'s offset");
        assert_eq!(message.key, Some(bytes(format!("key-{i}"))), "message {i}'s key");
        assert_eq!(message.payload, bytes(format!("value-{i}")), "message {i}'s value");
        assert_eq!(message.headers, headers, "message {i}'s headers");
    }
}

/// Part 2: native in; raw Fetch and kcat out.
fn native_in_kafka_out(runtime: &tokio::runtime::Runtime, server: &Server) {
    const TOPIC: &str = "interop-native-in";
    let offsets = runtime.block_on(async {
        let (client, router) = native(server).await;
        create_topic(&client, TOPIC).await;
        let build = Producer::builder(&router, BROKER_STREAM, TOPIC).partitioning(Partitioning::Partition(0));
        let producer = within("native producer", build.build()).await.expect("native producer");
        let mut offsets = Vec::with_capacity(COUNT);
        for start in (0..COUNT).step_by(BATCH) {
            let batch = (start..start + BATCH)
                .map(|i| {
                    ProducerMessage::keyed(format!("key-{i}"), format!("value-{i}"))
                        .with_header("index", i.to_string())
                        .with_header("origin", "native")
                })
                .collect();
            for receipt in within("send_batch", producer.send_batch(batch)).await.expect("send_batch") {
                let base = receipt.base_offset().expect("a stored batch has offsets");
                offsets.extend(base..base + u64::from(receipt.messages));
            }
        }
        within("producer shutdown", producer.shutdown()).await.expect("shutdown");
        offsets
    });
    assert_eq!(offsets, (0..COUNT as u64).collect::<Vec<_>>(), "the native producer's offsets");

    let mut raw = RawClient::connect(server.addr()).expect("connect");
    let records = raw.fetch_all(TOPIC, 0, 0);
    assert_eq!(records.len(), COUNT, "raw Fetch returned {} records", records.len());
    for (i, record) in records.iter().enumerate() {
        assert_eq!(record.offset, i as i64, "record {i}'s offset");
        assert_eq!(record.key, Some(bytes(format!("key-{i}"))), "record {i}'s key");
        assert_eq!(record.value, Some(bytes(format!("value-{i}"))), "record {i}'s value");
        let headers: Vec<(String, Option<Bytes>)> =
            record.headers.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        let expected = vec![
            ("index".to_string(), Some(bytes(i.to_string()))),
            ("origin".to_string(), Some(bytes("native".into()))),
        ];
        assert_eq!(headers, expected, "record {i}'s headers");
    }
    let middle = raw.fetch_all(TOPIC, 0, 321);
    assert_eq!(middle.first().map(|r| r.offset), Some(321), "a fetch from the middle starts there");

    if !kcat_present() {
        return;
    }
    let args = ["-C", "-t", TOPIC, "-p", "0", "-e", "-o", "beginning", "-q", "-f", "%o %k %s %h\n"];
    let consumed = kcat(server, &args, b"");
    assert!(consumed.success(), "kcat -C failed: {}", consumed.describe());
    let expected: String =
        (0..COUNT).map(|i| format!("{i} key-{i} value-{i} index={i},origin=native\n")).collect();
    let text = consumed.stdout_text();
    assert_eq!(text.lines().count(), COUNT, "kcat printed {} lines", text.lines().count());
    if text != expected {
        let first = text.lines().zip(expected.lines()).find(|(got, want)| got != want);
        panic!("kcat printed another line than expected: {first:?}");
    }
}

#[test]
fn kafka_and_native_clients_read_each_others_messages() {
    let mut server = kafka::server(2, &[]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    raw_in_native_out(&runtime, &server);
    server.assert_running();
    kcat_in_native_out(&runtime, &server);
    server.assert_running();
    native_in_kafka_out(&runtime, &server);
    server.assert_running();
}
