//! Named (idempotent) SDK producers against the real broker binary: a producer restarted under
//! the same name continues its per-partition sequences (nothing stored twice, read back in
//! order, a compressed run included); `send_wait` returns offsets and `on_confirm` hears of every batch once; an exclusive producer
//! keeps a second one out until it shuts down; a zombie (an older instance of a re-declared
//! name) is fenced. Producers that stand for different processes use different connections,
//! since leases belong to the connection. Every wait is bounded.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringbroker::client::{
    Client, Confirmation, ConnectionString, Partitioning, Producer, ProducerError, ProducerMessage,
};
use ringbroker::protocol::batch::Compression;
use ringbroker::protocol::messages::{
    PartitionTarget, PollRequest, PollStrategy, PollTarget, Status, TopicConfig,
};

const STREAM: &str = "named";
const TOPIC: &str = "events";

async fn connect(addr: std::net::SocketAddr) -> Client {
    let url: ConnectionString = format!(
        "ringbroker://ringbroker:ringbroker@{addr}?timeout_ms=5000&reconnect_retries=5&reconnect_interval_ms=50"
    )
    .parse()
    .expect("url");
    Client::connect(&url).await.expect("connect")
}

async fn create_topic(client: &Client, partitions: u32) {
    client.create_stream(STREAM, true).await.expect("create stream");
    let config = TopicConfig { partitions, ..TopicConfig::default() };
    client.create_topic(STREAM, TOPIC, config, false).await.expect("create topic");
}

/// Every payload of one partition, in offset order (offsets checked dense from 0), read with
/// the SDK's poll, which inflates compressed batches.
async fn payloads(broker: &common::Broker, partition: u32) -> Vec<String> {
    let client = connect(broker.addr()).await;
    let (mut out, mut offset) = (Vec::new(), 0);
    for _ in 0..10_000 {
        let request = PollRequest {
            stream: STREAM.into(),
            topic: TOPIC.into(),
            target: PollTarget::Partition(PartitionTarget { partition, consumer: "check".into() }),
            strategy: PollStrategy::Offset(offset),
            max_messages: 5_000,
            max_bytes: 4 << 20,
            max_wait_ms: 0,
            auto_commit: false,
            filter: Vec::new(),
            match_unfiltered: false,
        };
        let polled = client.poll(&request).await.expect("poll");
        for record in polled.records() {
            let record = record.expect("valid record").record;
            assert_eq!(record.offset, out.len() as u64, "partition {partition}: dense offsets");
            out.push(String::from_utf8_lossy(record.payload).into_owned());
        }
        let marks = &polled.response.partitions[0];
        if polled.is_empty() || marks.next_offset >= marks.high_watermark {
            return out;
        }
        offset = marks.next_offset;
    }
    panic!("partition {partition} did not end within 10,000 polls");
}

/// The sequence number in a payload `"{tag}:{key}:{n}"`.
fn numbers_by_key(payloads: &[String]) -> BTreeMap<String, Vec<u32>> {
    let mut by_key: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for payload in payloads {
        let mut parts = payload.splitn(3, ':');
        let (_, key, number) = (parts.next(), parts.next().expect("key"), parts.next().expect("number"));
        by_key.entry(key.to_string()).or_default().push(number.parse().expect("number"));
    }
    by_key
}

fn keyed(tag: &str, key: u32, number: u32) -> ProducerMessage {
    ProducerMessage::keyed(format!("k{key}"), format!("{tag}:k{key}:{number}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_named_producer_continues_its_sequences() {
    let broker = common::Broker::start(2, &["--fsync", "always"]);
    let client = connect(broker.addr()).await;
    create_topic(&client, 2).await;

    const KEYS: u32 = 6;
    const PER_RUN: u32 = 50;
    let mut epochs = Vec::new();
    let mut stored_last = Vec::new();
    for run in 0..2 {
        // A fresh connection per run, as a restarted process would have.
        let connection = connect(broker.addr()).await;
        // The second run compresses: deduplication reads only the (plain) batch header.
        let compression = if run == 0 { Compression::None } else { Compression::Lz4 };
        let producer = Producer::builder(&connection, STREAM, TOPIC)
            .name("orders-service")
            .compression(compression)
            .batch_size(16)
            .build()
            .await
            .expect("named producer");
        assert_eq!(producer.name(), Some("orders-service"));
        epochs.push(producer.epoch().expect("an epoch"));
        for number in run * PER_RUN..(run + 1) * PER_RUN {
            let messages = (0..KEYS).map(|key| keyed("run", key, number)).collect();
            producer.send(messages).await.expect("send");
        }
        producer.shutdown().await.expect("shutdown");
        let mut last = Vec::new();
        for partition in 0..2 {
            let info = client.producer_sequence(STREAM, TOPIC, partition, "orders-service").await;
            last.push(info.expect("sequence").last_sequence);
        }
        stored_last.push(last);
    }
    assert!(epochs[1] > epochs[0], "a new declaration raises the epoch: {epochs:?}");

    let mut total = 0;
    for partition in 0..2_u32 {
        let stored = payloads(&broker, partition).await;
        total += stored.len();
        // Sequences are dense per partition: the last stored one counts the partition's messages.
        let messages = stored.len() as u64;
        assert_eq!(stored_last[1][partition as usize], messages.checked_sub(1), "partition {partition}");
        let first_run = stored_last[0][partition as usize].map_or(0, |last| last + 1);
        assert_eq!(first_run * 2, messages, "partition {partition}: both runs wrote the same keys");
        for (key, numbers) in numbers_by_key(&stored) {
            assert_eq!(numbers, (0..2 * PER_RUN).collect::<Vec<_>>(), "{key}: every message once, in order");
        }
    }
    assert_eq!(total, (KEYS * 2 * PER_RUN) as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_wait_returns_offsets_and_every_batch_is_confirmed_once() {
    let broker = common::Broker::start(2, &["--fsync", "always"]);
    let client = connect(broker.addr()).await;
    create_topic(&client, 2).await;
    let confirmations: Arc<Mutex<Vec<Confirmation>>> = Arc::new(Mutex::new(Vec::new()));
    let sink = confirmations.clone();
    let producer = Producer::builder(&client, STREAM, TOPIC)
        .name("confirmed")
        .partitioning(Partitioning::Partition(1))
        .batch_size(100)
        .linger(Duration::from_millis(1))
        .on_confirm(move |confirmation| sink.lock().expect("lock").push(confirmation))
        .build()
        .await
        .expect("named producer");
    for expected in 0..3_u64 {
        let offset = producer.send_wait(format!("wait-{expected}")).await.expect("send_wait");
        assert_eq!(offset, Some(expected));
    }
    let messages = (0..250).map(|i| ProducerMessage::from(format!("bulk-{i}"))).collect();
    producer.send(messages).await.expect("send");
    producer.flush().await.expect("flush");
    let receipts = producer.send_batch((0..40).map(|i| ProducerMessage::from(format!("b-{i}"))).collect());
    let receipts = receipts.await.expect("send_batch");
    assert_eq!(receipts.len(), 1);
    assert_eq!((receipts[0].partition, receipts[0].messages, receipts[0].base_offset()), (1, 40, Some(253)));
    producer.shutdown().await.expect("shutdown");

    let confirmations = std::mem::take(&mut *confirmations.lock().expect("lock"));
    assert!(confirmations.iter().all(|c| c.is_confirmed() && !c.is_duplicate() && c.partition == 1));
    let messages: u32 = confirmations.iter().map(|c| c.messages).sum();
    assert_eq!(messages, 3 + 250 + 40, "every message confirmed once");
    assert!(confirmations.len() > 3 + 3, "the 250 took at least 3 batches of 100");
    // Batches confirmed in order, offsets and sequences adjoining (dense sequences from 0).
    let mut next = 0;
    for confirmation in confirmations.iter() {
        let (first, last) = confirmation.offsets().expect("offsets");
        assert_eq!((first, last - first + 1), (next, u64::from(confirmation.messages)));
        assert_eq!(confirmation.sequences, Some((first, last)), "sequences match offsets here");
        next = last + 1;
    }
    assert_eq!(payloads(&broker, 1).await.len(), 293);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusive_producer_keeps_others_out_until_it_shuts_down() {
    let broker = common::Broker::start(2, &["--fsync", "always"]);
    let first_connection = connect(broker.addr()).await;
    create_topic(&first_connection, 2).await;
    let first = Producer::builder(&first_connection, STREAM, TOPIC)
        .name("leader")
        .exclusive()
        .build()
        .await
        .expect("the first exclusive producer");
    first.send_wait("from the leader").await.expect("send_wait");

    let second_connection = connect(broker.addr()).await;
    let second = || Producer::builder(&second_connection, STREAM, TOPIC).name("follower").exclusive().build();
    match second().await {
        Err(ProducerError::Client(error)) => {
            assert_eq!(error.status(), Some(Status::ProducerBusy), "{error}")
        }
        other => panic!("a second exclusive producer must be refused: {other:?}"),
    }
    let shared = Producer::builder(&second_connection, STREAM, TOPIC).name("bystander").build().await;
    assert!(matches!(&shared, Err(ProducerError::Client(e)) if e.is_producer_busy()), "{shared:?}");
    let unnamed = Producer::builder(&second_connection, STREAM, TOPIC).exclusive().build().await;
    assert!(matches!(unnamed, Err(ProducerError::InvalidConfig(_))), "exclusive needs a name");

    first.shutdown().await.expect("shutdown releases the lease");
    let second = second().await.expect("the topic is free after the first shut down");
    second.send_wait("from the follower").await.expect("send_wait");
    second.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_instance_of_a_redeclared_name_is_fenced() {
    let broker = common::Broker::start(2, &["--fsync", "always"]);
    let zombie_connection = connect(broker.addr()).await;
    create_topic(&zombie_connection, 1).await;
    let zombie =
        Producer::builder(&zombie_connection, STREAM, TOPIC).name("worker").build().await.expect("first");
    assert_eq!(zombie.send_wait("before").await.expect("send_wait"), Some(0));

    let successor_connection = connect(broker.addr()).await;
    let successor =
        Producer::builder(&successor_connection, STREAM, TOPIC).name("worker").build().await.expect("second");
    assert!(successor.epoch() > zombie.epoch());
    assert_eq!(successor.producer_id(), zombie.producer_id(), "the name keeps its id");

    let fenced = zombie.send_wait("zombie").await;
    assert!(matches!(&fenced, Err(ProducerError::Fenced { name, .. }) if name == "worker"), "{fenced:?}");
    assert!(zombie.is_fenced());
    let again = zombie.send_one("zombie again").await;
    assert!(matches!(again, Err(ProducerError::Fenced { .. })), "fenced for good: {again:?}");
    assert!(zombie.flush().await.is_err_and(|error| error.is_fenced()));
    assert!(zombie.shutdown().await.is_err_and(|error| error.is_fenced()));

    assert_eq!(successor.send_wait("after").await.expect("the successor writes"), Some(1));
    successor.shutdown().await.expect("shutdown");
    assert_eq!(payloads(&broker, 0).await, ["before", "after"], "nothing of the zombie after the fence");
}
