//! Push delivery for durable consumers (`SubscribeDurable`) against the real broker binary,
//! through the SDK's [`DurableSubscription`]: every message of two partitions (owned by two
//! shards) pushed and acknowledged, live pushes as data arrives, redelivery through the
//! subscription after `ack_wait` and after a nak, `max_ack_pending` holding pushes back until
//! acks arrive, credit counting messages, and refusals (unknown consumer, credit overflow, a
//! consumer deleted under its subscription).
//!
//! Every wait is bounded; timing assertions use lower bounds with small slack (a redelivery must
//! not come early) and generous upper bounds.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ringbroker::client::{Client, ClientError, DurableSubscription, FetchedMessage};
use ringbroker::protocol::durable::{DurableConfig, TopicPolicy};
use ringbroker::protocol::messages::{Partitioning, Status, TopicConfig};
use ringbroker::protocol::subscriptions::SUBSCRIPTION_CREDIT_MAX;
use tokio::time::timeout;

const STREAM: &str = "s";
const TOPIC: &str = "t";
/// Longest wait for something that must arrive.
const WAIT: Duration = Duration::from_secs(10);
/// How long "nothing arrives" is watched for.
const QUIET: Duration = Duration::from_millis(500);
/// Slack for "not before": timers and clocks may round a little.
const EARLY_SLACK: Duration = Duration::from_millis(30);

async fn setup(broker: &common::Broker, partitions: u32) -> Client {
    let client =
        Client::connect_addr(&broker.addr().to_string(), "ringbroker", "ringbroker").await.expect("connect");
    client.create_stream(STREAM, false).await.expect("stream");
    let config = TopicConfig { partitions, ..TopicConfig::default() };
    client
        .create_topic_with_policy(STREAM, TOPIC, config, TopicPolicy::default(), false)
        .await
        .expect("topic");
    client
}

async fn consumer(client: &Client, config: DurableConfig) {
    client.create_consumer(STREAM, TOPIC, config, false).await.expect("create consumer");
}

/// One batch of `count` messages `tag-i` on `partition`.
async fn produce(client: &Client, partition: u32, tag: &str, count: u32) {
    let batch = common::batch_of(tag, count);
    client.produce(STREAM, TOPIC, Partitioning::Partition(partition), &[&batch]).await.expect("produce");
}

async fn next(subscription: &mut DurableSubscription) -> FetchedMessage {
    match timeout(WAIT, subscription.next()).await {
        Ok(Some(Ok(message))) => message,
        Ok(other) => panic!("expected a message, got {other:?}"),
        Err(_) => panic!("no message within {WAIT:?}"),
    }
}

async fn nothing_arrives(subscription: &mut DurableSubscription, why: &str) {
    if let Ok(next) = timeout(QUIET, subscription.next()).await {
        panic!("nothing should arrive ({why}): {next:?}");
    }
}

fn status<T: std::fmt::Debug>(result: Result<T, ClientError>) -> Status {
    match result {
        Err(error) => error.status().unwrap_or_else(|| panic!("not a server error: {error:?}")),
        Ok(value) => panic!("expected a refusal, got {value:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_every_message_of_two_partitions_and_acks_them() {
    let broker = common::Broker::start(2, &[]);
    let client = setup(&broker, 2).await;
    consumer(&client, DurableConfig::new("c")).await;
    for partition in 0..2 {
        for batch in 0..2 {
            produce(&client, partition, &format!("p{partition}b{batch}"), 5).await;
        }
    }
    let mut subscription = client.subscribe_durable(STREAM, TOPIC, "c", None, 8).await.expect("subscribe");
    let mut seen = BTreeSet::new();
    let mut live_sent = false;
    while seen.len() < 40 {
        let message = next(&mut subscription).await;
        assert_eq!(message.deliveries, 1, "first deliveries only: {message:?}");
        let payload = String::from_utf8_lossy(&message.payload).into_owned();
        let batch = message.offset / 5;
        let expected = format!("p{}b{batch}-{}", message.partition, message.offset % 5);
        assert_eq!(payload, expected);
        assert!(seen.insert((message.partition, message.offset)), "delivered twice: {message:?}");
        subscription.ack(&message).await.expect("ack");
        // Half the messages arrive while the subscription waits: pushed live.
        if seen.len() == 20 && !live_sent {
            live_sent = true;
            for partition in 0..2 {
                for batch in 2..4 {
                    produce(&client, partition, &format!("p{partition}b{batch}"), 5).await;
                }
            }
        }
    }
    let expected: BTreeSet<(u32, u64)> = (0..2).flat_map(|p| (0..20).map(move |o| (p, o))).collect();
    assert_eq!(seen, expected);
    nothing_arrives(&mut subscription, "everything was acknowledged").await;
    let info = client.consumer_info(STREAM, TOPIC, "c").await.expect("info");
    for state in &info.partitions {
        assert_eq!((state.ack_floor, state.ack_pending, state.num_pending), (20, 0, 0), "{state:?}");
    }
    subscription.unsubscribe().await.expect("unsubscribe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_and_naked_messages_are_pushed_again() {
    let broker = common::Broker::start(1, &[]);
    let client = setup(&broker, 1).await;
    let ack_wait = Duration::from_millis(300);
    consumer(&client, DurableConfig { ack_wait_us: ack_wait.as_micros() as u64, ..DurableConfig::new("c") })
        .await;
    produce(&client, 0, "m", 2).await;
    let mut subscription =
        client.subscribe_durable(STREAM, TOPIC, "c", Some(0), 10).await.expect("subscribe");
    let first = next(&mut subscription).await;
    let delivered = Instant::now();
    let second = next(&mut subscription).await;
    assert_eq!((first.offset, first.deliveries, second.offset, second.deliveries), (0, 1, 1, 1));
    subscription.ack(&second).await.expect("ack");

    // Offset 0 is not acknowledged: it comes again through the subscription after ack_wait.
    let again = next(&mut subscription).await;
    assert!(delivered.elapsed() + EARLY_SLACK >= ack_wait, "redelivered after {:?}", delivered.elapsed());
    assert_eq!((again.offset, again.deliveries, again.consumer_sequence), (0, 2, 3), "{again:?}");
    assert_eq!(String::from_utf8_lossy(&again.payload), "m-0");

    // A nak without delay: at once, long before ack_wait.
    let naked = Instant::now();
    subscription.nak(&again, Duration::ZERO).await.expect("nak");
    let third = next(&mut subscription).await;
    assert!(naked.elapsed() < ack_wait, "a nak'ed message came after {:?}", naked.elapsed());
    assert_eq!((third.offset, third.deliveries), (0, 3));
    subscription.ack(&third).await.expect("ack");
    tokio::time::sleep(ack_wait).await;
    nothing_arrives(&mut subscription, "everything was acknowledged").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_ack_pending_holds_pushes_until_acks_arrive() {
    let broker = common::Broker::start(1, &[]);
    let client = setup(&broker, 1).await;
    consumer(&client, DurableConfig { max_ack_pending: 3, ..DurableConfig::new("c") }).await;
    produce(&client, 0, "m", 10).await;
    let mut subscription =
        client.subscribe_durable(STREAM, TOPIC, "c", Some(0), 100).await.expect("subscribe");
    let mut held = Vec::new();
    for expected in 0..3 {
        let message = next(&mut subscription).await;
        assert_eq!(message.offset, expected);
        held.push(message);
    }
    nothing_arrives(&mut subscription, "3 pending, at max_ack_pending").await;
    subscription.ack(&held[1]).await.expect("ack");
    assert_eq!(next(&mut subscription).await.offset, 3, "one slot freed, one more");
    nothing_arrives(&mut subscription, "at max_ack_pending again").await;
    subscription.ack(&held[0]).await.expect("ack");
    subscription.ack(&held[2]).await.expect("ack");
    let more = [next(&mut subscription).await.offset, next(&mut subscription).await.offset];
    assert_eq!(more, [4, 5]);
    let info = client.consumer_info(STREAM, TOPIC, "c").await.expect("info");
    assert_eq!(info.partitions[0].ack_pending, 3, "{:?}", info.partitions[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credit_counts_messages() {
    let broker = common::Broker::start(1, &[]);
    let client = setup(&broker, 1).await;
    consumer(&client, DurableConfig::new("c")).await;
    produce(&client, 0, "m", 6).await;
    let mut subscription = client.subscribe_durable(STREAM, TOPIC, "c", Some(0), 0).await.expect("subscribe");
    nothing_arrives(&mut subscription, "no credit").await;
    subscription.credit(2).await.expect("credit");
    assert_eq!(next(&mut subscription).await.offset, 0);
    assert_eq!(next(&mut subscription).await.offset, 1);
    // Two credits, two messages of the one six-message batch: the server holds the rest.
    tokio::time::sleep(QUIET).await;
    let info = client.consumer_info(STREAM, TOPIC, "c").await.expect("info");
    assert_eq!((info.partitions[0].delivered_to, info.partitions[0].ack_pending), (2, 2));
    // Taking messages grants their credit back: the rest follows.
    let rest: Vec<u64> = [
        next(&mut subscription).await.offset,
        next(&mut subscription).await.offset,
        next(&mut subscription).await.offset,
        next(&mut subscription).await.offset,
    ]
    .to_vec();
    assert_eq!(rest, vec![2, 3, 4, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_a_deleted_consumer() {
    let broker = common::Broker::start(2, &[]);
    let client = setup(&broker, 2).await;
    let unknown = client.subscribe_durable(STREAM, TOPIC, "nobody", None, 10).await;
    assert_eq!(status(unknown), Status::UnknownConsumer);
    consumer(&client, DurableConfig::new("c")).await;
    let overflow = client.subscribe_durable(STREAM, TOPIC, "c", None, SUBSCRIPTION_CREDIT_MAX + 1).await;
    assert_eq!(status(overflow), Status::CreditOverflow);
    let missing_partition = client.subscribe_durable(STREAM, TOPIC, "c", Some(7), 10).await;
    assert!(missing_partition.is_err(), "partition 7 of a 2-partition topic");

    // The connection survived the refusals; a consumer deleted under its subscription ends it.
    let mut subscription = client.subscribe_durable(STREAM, TOPIC, "c", None, 10).await.expect("subscribe");
    produce(&client, 1, "m", 1).await;
    assert_eq!(next(&mut subscription).await.partition, 1);
    client.delete_consumer(STREAM, TOPIC, "c").await.expect("delete");
    match timeout(WAIT, subscription.next()).await.expect("the end in time") {
        Some(Err(error)) => assert_eq!(error.status(), Some(Status::UnknownConsumer), "{error:?}"),
        other => panic!("expected the subscription to end, got {other:?}"),
    }
    assert!(subscription.next().await.is_none(), "ended");
}
