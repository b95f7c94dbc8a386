//! The durable-consumer SDK (`client::durable_consumer`) against the real broker binary: a fetch
//! across two partitions acknowledged message by message, double acks emptying an interest
//! topic, a nak redelivered with its delivery count, a fetch that waits for a message on the
//! second partition, batched acknowledgements and `ack_all`, and `info()` figures. Every wait
//! is bounded.

mod common;

use std::time::Duration;

use futures::TryStreamExt;
use ringbroker::client::{Client, DurableConfigExt, DurableConsumer};
use ringbroker::protocol::batch::{BatchBuilder, Message};
use ringbroker::protocol::durable::{AckPolicy, DurableConfig, Retention, TopicPolicy};
use ringbroker::protocol::messages::{Partitioning, Status, TopicConfig};
use tokio::time::timeout;

/// The bound on every step of a test.
const STEP: Duration = Duration::from_secs(20);

async fn start(broker: &common::Broker, retention: Retention) -> Client {
    let client =
        Client::connect_addr(&broker.addr().to_string(), "ringbroker", "ringbroker").await.expect("connect");
    client.create_stream("s", false).await.expect("stream");
    let config = TopicConfig { partitions: 2, ..TopicConfig::default() };
    let policy = TopicPolicy { retention, ..TopicPolicy::default() };
    client.create_topic_with_policy("s", "t", config, policy, false).await.expect("topic");
    client
}

/// Produces `count` messages `p{partition}-{i}` with subject `jobs.{partition}`.
async fn produce(client: &Client, partition: u32, count: u32) {
    let mut builder = BatchBuilder::new(0, 0);
    let subject = format!("jobs.{partition}");
    for i in 0..count {
        let payload = format!("p{partition}-{i}");
        let message =
            Message { filter_value: Some(subject.as_bytes()), ..Message::payload(payload.as_bytes()) };
        builder.push(&message).expect("push");
    }
    let batch = builder.finish().expect("batch");
    client.produce("s", "t", Partitioning::Partition(partition), &[&batch]).await.expect("produce");
}

async fn consumer(client: &Client, config: DurableConfig) -> DurableConsumer {
    timeout(STEP, client.create_durable("s", "t", config)).await.expect("in time").expect("create")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_spans_both_partitions_and_each_ack_counts() {
    let broker = common::Broker::start(2, &[]);
    let client = start(&broker, Retention::Limits).await;
    produce(&client, 0, 5).await;
    produce(&client, 1, 5).await;
    let durable = consumer(&client, DurableConfig::new("worker").ack_wait(Duration::from_secs(30))).await;
    assert_eq!(durable.partitions(), 2);
    let info = durable.info().await.expect("info");
    assert_eq!(info.partitions.iter().map(|p| p.num_pending).collect::<Vec<_>>(), vec![5, 5]);

    // Three at a time: round robin from where the previous fetch stopped.
    let first: Vec<_> = durable.fetch().max_messages(3).no_wait().messages().await.expect("fetch").collect();
    assert_eq!(first.len(), 3);
    assert!(first.iter().all(|m| m.partition == 0), "the first fetch starts at partition 0");
    let second: Vec<_> = durable.fetch().max_messages(3).no_wait().messages().await.expect("fetch").collect();
    assert!(second.iter().all(|m| m.partition == 1), "the next one starts after it: {second:?}");

    let mut messages =
        durable.fetch().max_messages(10).expires(Duration::from_secs(2)).messages().await.expect("fetch");
    let mut seen = Vec::new();
    while let Some(message) = timeout(STEP, messages.try_next()).await.expect("in time").expect("message") {
        let info = message.info();
        assert_eq!((info.stream, info.topic, info.consumer), ("s", "t", "worker"));
        assert_eq!(info.delivered, 1);
        assert_eq!(message.payload, format!("p{}-{}", message.partition, message.offset).as_bytes());
        seen.push((message.partition, message.offset));
    }
    assert_eq!(seen.len(), 4, "the 4 not fetched yet: {seen:?}");
    for message in first.iter().chain(&second) {
        assert_eq!(message.ack().await.expect("ack").applied, 1);
    }
    let info = durable.info().await.expect("info");
    for state in &info.partitions {
        // 3 acknowledged, the 2 of the third fetch still pending.
        assert_eq!((state.acked, state.ack_pending, state.num_pending), (3, 2, 0), "{state:?}");
        assert_eq!(state.delivered_to, 5);
    }
    let empty = durable.fetch().max_messages(10).no_wait().messages().await.expect("fetch");
    assert!(empty.is_empty(), "everything was delivered");

    // Binding by name sees the same consumer; an unknown name is refused.
    let bound = client.durable_consumer("s", "t", "worker").await.expect("bind");
    assert_eq!(bound.config().ack_wait_us, 30_000_000);
    let unknown = client.durable_consumer("s", "t", "nobody").await.expect_err("unknown");
    assert_eq!(unknown.status(), Some(Status::UnknownConsumer));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_acks_empty_an_interest_topic_and_a_nak_is_redelivered() {
    let broker = common::Broker::start(2, &[]);
    let client = start(&broker, Retention::Interest).await;
    let durable = consumer(&client, DurableConfig::new("processor").filter("jobs.>")).await;
    produce(&client, 0, 2).await;
    produce(&client, 1, 2).await;
    assert_eq!(client.topic_state("s", "t").await.expect("state").total.messages, 4);

    let messages =
        durable.fetch().max_messages(4).expires(Duration::from_secs(2)).messages().await.expect("fetch");
    let messages: Vec<_> = messages.collect();
    assert_eq!(messages.len(), 4);
    let (keep, nak) = messages.split_at(3);
    for message in keep {
        message.double_ack().await.expect("double ack");
    }
    let state = client.topic_state("s", "t").await.expect("state");
    assert_eq!(state.total.messages, 1, "double acks are applied when answered");

    let naked = (nak[0].partition, nak[0].offset, nak[0].consumer_sequence);
    nak[0].nak(None).await.expect("nak");
    let again: Vec<_> = durable
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .expect("fetch")
        .collect();
    assert_eq!(again.len(), 1);
    let info = again[0].info();
    assert_eq!((info.partition, info.stream_sequence), (naked.0, naked.1));
    assert_eq!(info.delivered, 2, "redelivered");
    assert!(info.consumer_sequence > naked.2, "a new consumer sequence");

    // A nak with a delay: not there at once, there after the delay.
    again[0].nak(Some(Duration::from_millis(300))).await.expect("nak later");
    let none = durable.fetch().max_messages(1).no_wait().messages().await.expect("fetch");
    assert!(none.is_empty());
    let later: Vec<_> = durable
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(3))
        .messages()
        .await
        .expect("fetch")
        .collect();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].deliveries, 3);
    later[0].term_with("giving up in the test").await.expect("term");
    let state = client.topic_state("s", "t").await.expect("state");
    assert_eq!(state.total.messages, 0, "terminated: nobody else wants it");
    let info = durable.info().await.expect("info");
    let terminated: u64 = info.partitions.iter().map(|p| p.terminated).sum();
    let acked: u64 = info.partitions.iter().map(|p| p.acked).sum();
    let redelivered: u64 = info.partitions.iter().map(|p| p.redelivered).sum();
    assert_eq!((acked, terminated, redelivered), (3, 1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_fetch_sees_a_message_on_the_other_partition() {
    let broker = common::Broker::start(2, &[]);
    let client = start(&broker, Retention::Limits).await;
    let durable = consumer(&client, DurableConfig::new("waiter")).await;
    let producer = client.clone();
    let late = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        produce(&producer, 1, 1).await;
    });
    let started = std::time::Instant::now();
    let messages: Vec<_> =
        timeout(STEP, durable.fetch().max_messages(5).expires(Duration::from_secs(10)).messages())
            .await
            .expect("in time")
            .expect("fetch")
            .collect();
    late.await.expect("producer");
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].partition, 1);
    assert!(started.elapsed() < Duration::from_secs(5), "ended when the message came, not at expiry");
    messages[0].in_progress().await.expect("in progress");
    messages[0].ack().await.expect("ack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_acks_travel_one_request_per_partition_and_ack_all_covers_earlier_ones() {
    let broker = common::Broker::start(2, &[]);
    let client = start(&broker, Retention::WorkQueue).await;
    produce(&client, 0, 6).await;
    produce(&client, 1, 6).await;
    let durable = consumer(&client, DurableConfig::new("batch").filter("jobs.0")).await;
    let mut batcher = durable.ack_batcher().double_ack(true);
    let messages: Vec<_> = durable
        .fetch()
        .max_messages(100)
        .expires(Duration::from_secs(1))
        .messages()
        .await
        .expect("fetch")
        .collect();
    assert_eq!(messages.len(), 6, "only jobs.0");
    for message in &messages {
        batcher.add(message).expect("add");
    }
    assert_eq!(batcher.len(), 6);
    let answer = batcher.flush().await.expect("flush");
    assert_eq!((answer.applied, answer.already), (6, 0));
    assert!(batcher.is_empty());
    let state = client.topic_state("s", "t").await.expect("state");
    assert_eq!((state.partitions[0].messages, state.partitions[1].messages), (0, 6));

    let all = consumer(&client, DurableConfig::new("all").filter("jobs.1").ack_policy(AckPolicy::All)).await;
    let messages: Vec<_> = all
        .fetch()
        .max_messages(100)
        .expires(Duration::from_secs(1))
        .messages()
        .await
        .expect("fetch")
        .collect();
    assert_eq!(messages.len(), 6);
    let last = messages.iter().map(|m| m.offset).max().expect("some");
    let answer = all.ack_all(1, last).await.expect("ack all");
    assert_eq!(answer.applied, 6);
    let state = client.topic_state("s", "t").await.expect("state");
    assert_eq!(state.total.messages, 0, "a work queue is empty once everything is acknowledged");
}
