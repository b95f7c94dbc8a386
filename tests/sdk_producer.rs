//! The builder-style producer (`ringbroker::client::Producer`) against the real broker binary:
//! batching and routing (balanced and keyed) with read-back through the low-level client,
//! creation races, a broker restart mid-stream, shutdown flushing, direct mode, and failures
//! reported instead of dropped. Every loop is bounded by a count and a deadline.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringbroker::client::producer::key_partition;
use ringbroker::client::{
    Client, ClientError, Partitioning, Producer, ProducerError, ProducerMessage, ShardRouter,
};
use ringbroker::protocol::messages::{
    PartitionTarget, Partitioning as WirePartitioning, PollRequest, PollStrategy, PollTarget, Status,
    TopicConfig,
};

/// One stored record: offset, key, payload.
type Stored = (u64, Option<String>, String);

async fn connect(broker: &common::Broker) -> Client {
    Client::connect_addr(&broker.addr().to_string(), "ringbroker", "ringbroker").await.expect("connect")
}

async fn create_topic(client: &Client, stream: &str, topic: &str, partitions: u32) {
    client.create_stream(stream, true).await.expect("create stream");
    let config = TopicConfig { partitions, ..TopicConfig::default() };
    client.create_topic(stream, topic, config, false).await.expect("create topic");
}

/// Every record of one partition, read with the low-level client from offset 0 to the end.
async fn read_partition(client: &Client, stream: &str, topic: &str, partition: u32) -> Vec<Stored> {
    let mut out = Vec::new();
    let mut offset = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    for _ in 0..10_000 {
        let request = PollRequest {
            stream: stream.into(),
            topic: topic.into(),
            target: PollTarget::Partition(PartitionTarget {
                partition,
                consumer: "sdk-producer-test".into(),
            }),
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
            let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
            out.push((record.offset, record.key.map(text), text(record.payload)));
        }
        let marks = &polled.response.partitions[0];
        if polled.is_empty() || marks.next_offset >= marks.high_watermark {
            return out;
        }
        offset = marks.next_offset;
        assert!(Instant::now() < deadline, "reading partition {partition} did not finish");
    }
    panic!("partition {partition} did not end within 10,000 polls");
}

/// Every partition's records.
async fn read_topic(client: &Client, stream: &str, topic: &str, partitions: u32) -> Vec<Vec<Stored>> {
    let mut out = Vec::new();
    for partition in 0..partitions {
        out.push(read_partition(client, stream, topic, partition).await);
    }
    out
}

async fn forwarded_requests(client: &Client) -> u64 {
    client.stats(None).await.expect("stats").server.forwarded_requests
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_producer_spreads_balanced_and_keeps_key_order() {
    let broker = common::Broker::start(2, &["--fsync", "always"]);
    let client = connect(&broker).await;
    create_topic(&client, "sdk", "balanced", 4).await;
    create_topic(&client, "sdk", "keyed", 4).await;
    let router = ShardRouter::new(client.clone()).await.expect("router");
    let forwarded_before = forwarded_requests(&client).await;

    const BALANCED: usize = 2_000;
    let balanced = Producer::builder(&router, "sdk", "balanced")
        .linger(Duration::from_millis(2))
        .batch_size(100)
        .build()
        .await
        .expect("balanced producer");
    for chunk in 0..BALANCED / 100 {
        let messages =
            (chunk * 100..(chunk + 1) * 100).map(|i| ProducerMessage::from(format!("b-{i}"))).collect();
        balanced.send(messages).await.expect("send");
    }
    balanced.flush().await.expect("flush balanced");

    const KEYS: usize = 16;
    const PER_KEY: usize = 150;
    let keyed = Producer::builder(&router, "sdk", "keyed")
        .linger(Duration::from_millis(1))
        .batch_size(64)
        .build()
        .await
        .expect("keyed producer");
    for sequence in 0..PER_KEY {
        for key in 0..KEYS {
            let message = ProducerMessage::keyed(format!("key-{key}"), format!("{key}:{sequence}"));
            keyed.send_one(message).await.expect("send_one");
        }
    }
    keyed.shutdown().await.expect("shutdown keyed");
    balanced.shutdown().await.expect("shutdown balanced");
    assert_eq!(
        forwarded_requests(&client).await,
        forwarded_before,
        "every produce went straight to its owner shard"
    );

    // Balanced: everything once, spread evenly (one message per partition in turn).
    let partitions = read_topic(&client, "sdk", "balanced", 4).await;
    assert_eq!(partitions.iter().map(Vec::len).collect::<Vec<_>>(), [BALANCED / 4; 4]);
    let seen: HashSet<&str> = partitions.iter().flatten().map(|(_, _, payload)| payload.as_str()).collect();
    assert_eq!(seen.len(), BALANCED);
    assert!((0..BALANCED).all(|i| seen.contains(format!("b-{i}").as_str())));

    // Keyed: each key in its hash partition, in the order sent, nothing lost.
    let partitions = read_topic(&client, "sdk", "keyed", 4).await;
    let mut by_key: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (partition, records) in partitions.iter().enumerate() {
        for (_, key, payload) in records {
            let key = key.clone().expect("keyed records keep their key");
            assert_eq!(
                key_partition(key.as_bytes(), 4) as usize,
                partition,
                "{key} in partition {partition}"
            );
            let (owner, sequence) = payload.split_once(':').expect("payload");
            assert_eq!(format!("key-{owner}"), key);
            by_key.entry(key).or_default().push(sequence.parse().expect("sequence"));
        }
    }
    assert_eq!(by_key.len(), KEYS);
    for (key, sequences) in &by_key {
        assert_eq!(sequences, &(0..PER_KEY).collect::<Vec<_>>(), "{key}: all, in order");
    }

    // The client-side hash is the server's: a server-routed keyed produce lands alike.
    for key in ["key-0", "key-5", "another"] {
        let mut batch = ringbroker::protocol::batch::BatchBuilder::new(0, 0);
        batch.push_payload(b"probe").expect("push");
        let bytes = batch.finish().expect("finish");
        let response = client
            .produce("sdk", "keyed", WirePartitioning::Key(key.as_bytes().to_vec()), &[&bytes])
            .await
            .expect("server-routed produce");
        assert_eq!(response.partition, key_partition(key.as_bytes(), 4), "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_racing_to_create_a_topic_both_succeed() {
    let broker = common::Broker::start(2, &["--fsync", "always"]);
    let client = connect(&broker).await;
    // One router for both (each direct connection costs a login, slow in debug builds).
    let router = ShardRouter::new(client.clone()).await.expect("router");
    let build = |name: &'static str| {
        let router = router.clone();
        async move {
            let producer =
                Producer::builder(router, "race", "created").create_if_missing(3).build().await.expect(name);
            let messages = (0..100).map(|i| ProducerMessage::from(format!("{name}-{i}"))).collect();
            producer.send(messages).await.expect("send");
            producer.shutdown().await.expect("shutdown");
        }
    };
    let first = tokio::spawn(build("first"));
    let second = tokio::spawn(build("second"));
    first.await.expect("first producer");
    second.await.expect("second producer");

    let topic = client.get_topic("race", "created").await.expect("topic exists");
    assert_eq!(topic.partitions.len(), 3);
    let stored: HashSet<String> =
        read_topic(&client, "race", "created", 3).await.into_iter().flatten().map(|(_, _, p)| p).collect();
    for name in ["first", "second"] {
        assert!((0..100).all(|i| stored.contains(&format!("{name}-{i}"))), "all of {name}'s messages");
    }
    assert_eq!(stored.len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_a_broker_restart_mid_stream() {
    let mut broker = common::Broker::start(2, &["--fsync", "always"]);
    let client = connect(&broker).await;
    create_topic(&client, "restart", "events", 4).await;
    let producer = Arc::new(
        Producer::builder(&client, "restart", "events")
            .retries(40, Duration::from_millis(100))
            .linger(Duration::from_millis(1))
            .build()
            .await
            .expect("producer"),
    );

    // The producer sends rounds of 20 messages and flushes each; a round counts as acknowledged
    // only when both its send and its flush returned Ok.
    const ROUNDS_BEFORE: usize = 5;
    const ROUNDS_AFTER: usize = 20;
    let rounds_done = Arc::new(AtomicUsize::new(0));
    let restarted = Arc::new(AtomicBool::new(false));
    let sender = {
        let (producer, rounds_done, restarted) = (producer.clone(), rounds_done.clone(), restarted.clone());
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(15);
            let (mut acknowledged, mut failures, mut rounds_after) = (Vec::new(), Vec::new(), 0);
            for round in 0..5_000 {
                let payloads: Vec<String> = (0..20).map(|i| format!("r{round}-{i}")).collect();
                let messages = payloads.iter().map(|p| ProducerMessage::from(p.as_str())).collect();
                let sent = producer.send(messages).await;
                let flushed = producer.flush().await;
                match (sent, flushed) {
                    (Ok(()), Ok(())) => acknowledged.extend(payloads),
                    outcome => failures.push(format!("round {round}: {outcome:?}")),
                }
                rounds_done.fetch_add(1, Ordering::Release);
                if restarted.load(Ordering::Acquire) {
                    rounds_after += 1;
                    if rounds_after >= ROUNDS_AFTER {
                        break;
                    }
                }
                assert!(Instant::now() < deadline, "the producer loop did not finish in time");
            }
            (acknowledged, failures)
        })
    };

    let deadline = Instant::now() + Duration::from_secs(10);
    while rounds_done.load(Ordering::Acquire) < ROUNDS_BEFORE {
        assert!(Instant::now() < deadline, "the first rounds did not finish");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let broker = tokio::task::spawn_blocking(move || {
        broker.restart();
        broker
    })
    .await
    .expect("restart");
    restarted.store(true, Ordering::Release);
    let (acknowledged, failures) = sender.await.expect("sender task");
    assert!(failures.is_empty(), "retries carry the producer over the restart: {failures:?}");
    assert!(acknowledged.len() >= (ROUNDS_BEFORE + ROUNDS_AFTER) * 20);
    Arc::into_inner(producer).expect("the sender is done").shutdown().await.expect("shutdown");

    let stored: HashSet<String> =
        read_topic(&client, "restart", "events", 4).await.into_iter().flatten().map(|(_, _, p)| p).collect();
    let missing: Vec<&String> = acknowledged.iter().filter(|payload| !stored.contains(*payload)).collect();
    assert!(missing.is_empty(), "{} acknowledged messages lost, e.g. {:?}", missing.len(), missing.first());
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_everything_accepted() {
    let broker = common::Broker::start(2, &["--fsync", "always"]);
    let client = connect(&broker).await;
    create_topic(&client, "shutdown", "events", 2).await;
    // A linger far longer than the test: only shutdown can make these go.
    let producer = Producer::builder(&client, "shutdown", "events")
        .linger(Duration::from_secs(60))
        .batch_size(10_000)
        .build()
        .await
        .expect("producer");
    for i in 0..500 {
        producer.send_one(format!("s-{i}")).await.expect("send_one");
    }
    let started = Instant::now();
    producer.shutdown().await.expect("shutdown");
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown did not wait for the linger");
    let partitions = read_topic(&client, "shutdown", "events", 2).await;
    assert_eq!(partitions.iter().map(Vec::len).collect::<Vec<_>>(), [250, 250]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_mode_and_explicit_partitions() {
    let broker = common::Broker::start(2, &["--fsync", "always"]);
    let client = connect(&broker).await;
    create_topic(&client, "direct", "events", 3).await;
    let producer = Producer::builder(&client, "direct", "events")
        .background(false)
        .partitioning(Partitioning::Partition(2))
        .batch_size(7)
        .build()
        .await
        .expect("producer");
    let messages = (0..50).map(|i| ProducerMessage::from(format!("d-{i}"))).collect();
    producer.send(messages).await.expect("send");
    // Acknowledged on return: readable at once, all in partition 2 and in order.
    let stored = read_partition(&client, "direct", "events", 2).await;
    let payloads: Vec<&str> = stored.iter().map(|(_, _, p)| p.as_str()).collect();
    assert_eq!(payloads, (0..50).map(|i| format!("d-{i}")).collect::<Vec<_>>());
    // A message's own partition wins over the producer's partitioning.
    producer.send_one(ProducerMessage::from("to-zero").with_partition(0)).await.expect("send_one");
    assert_eq!(read_partition(&client, "direct", "events", 0).await.len(), 1);
    let refused = producer.send_one(ProducerMessage::from("nowhere").with_partition(3)).await;
    assert!(matches!(refused, Err(ProducerError::InvalidMessage(_))), "{refused:?}");
    let unknown = Producer::builder(&client, "direct", "missing").build().await;
    assert!(matches!(unknown, Err(ProducerError::Client(ref e)) if e.status() == Some(Status::UnknownTopic)));
    producer.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_are_reported_once() {
    let broker = common::Broker::start(2, &["--fsync", "always"]);
    let client = connect(&broker).await;
    create_topic(&client, "failing", "events", 2).await;
    let producer = Producer::builder(&client, "failing", "events")
        .retries(2, Duration::from_millis(10))
        .build()
        .await
        .expect("producer");
    producer.send_one("kept").await.expect("send_one");
    producer.flush().await.expect("flush");
    client.delete_topic("failing", "events").await.expect("delete topic");
    let lost = (0..5).map(|i| ProducerMessage::from(format!("lost-{i}"))).collect();
    producer.send(lost).await.expect("accepted: the failure shows later");
    match producer.flush().await {
        Err(ProducerError::Delivery { messages, source: ClientError::Server { status, .. }, .. }) => {
            assert_eq!(messages, 5);
            assert_eq!(status, Status::UnknownTopic, "a refusal is not retried");
        }
        other => panic!("the failure must be reported: {other:?}"),
    }
    producer.flush().await.expect("each failure is reported once");
    producer.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_direct_listeners_the_router_uses_the_base_client() {
    let broker = common::Broker::start(2, &["--fsync", "always", "--shard-port-base", "0"]);
    let client = connect(&broker).await;
    create_topic(&client, "shared", "events", 2).await;
    let router = ShardRouter::new(client.clone()).await.expect("router");
    let base_address = client.connection_string().address();
    for partition in 0..2 {
        let routed = router.client_for("shared", "events", partition).await.expect("client_for");
        assert_eq!(routed.connection_string().address(), base_address, "partition {partition}");
    }
    let unknown = router.client_for("shared", "missing", 0).await.expect("unknown topics go to the base");
    assert_eq!(unknown.connection_string().address(), base_address);
    let error = router.partitions("shared", "missing").await.expect_err("no such topic");
    assert_eq!(error.status(), Some(Status::UnknownTopic));

    let producer = Producer::builder(&router, "shared", "events").build().await.expect("producer");
    let messages = (0..10).map(|i| ProducerMessage::from(format!("x-{i}"))).collect();
    producer.send(messages).await.expect("send");
    producer.shutdown().await.expect("shutdown");
    let stored = read_topic(&client, "shared", "events", 2).await;
    assert_eq!(stored.iter().map(Vec::len).collect::<Vec<_>>(), [5, 5]);
}
