//! The high-level consumer (`ringbroker::client::consumer`) against the real broker binary:
//! auto-commit modes, after-handler commits with a failing handler, consumer groups, init
//! retries, polling strategies and owner routing. Test data comes from the low-level
//! `Client::produce`. Every wait is bounded by a deadline.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;
use ringbroker::client::consumer::{
    AutoCommit, ConsumeError, Consumer, HandlerError, MessageConsumer, PollStrategy, ReceivedMessage,
};
use ringbroker::client::{Client, ClientError, ShardRouter};
use ringbroker::protocol::batch::BatchBuilder;
use ringbroker::protocol::messages::{ConsumerRef, Partitioning, ProduceResponse, Status, TopicConfig};
use tokio::time::{timeout, Instant};

/// The longest any single wait in these tests may take.
const WAIT: Duration = Duration::from_secs(10);
/// Short polling interval so idle consumers notice new data quickly.
const POLLING: Duration = Duration::from_millis(20);

/// A broker with stream `s` and topic `t`, a root client and a router over it (shared by the
/// test's consumers, so each does not log in to the shards again).
async fn start(partitions: u32) -> (common::Broker, Client, ShardRouter) {
    let broker = common::Broker::start(2, &["--fsync", "always"]);
    let client =
        Client::connect_addr(&broker.addr().to_string(), "ringbroker", "ringbroker").await.expect("connect");
    client.create_stream("s", false).await.expect("stream");
    let config = TopicConfig { partitions, ..TopicConfig::default() };
    client.create_topic("s", "t", config, false).await.expect("topic");
    let router = ShardRouter::new(client.clone()).await.expect("router");
    (broker, client, router)
}

/// Produces `batches` batches of `per_batch` messages `"{tag}-{p}-{i}"` to `partition`.
async fn produce(
    client: &Client,
    stream: &str,
    partition: u32,
    tag: &str,
    batches: u32,
    per_batch: u32,
) -> Vec<ProduceResponse> {
    let mut answers = Vec::new();
    for batch in 0..batches {
        let mut builder = BatchBuilder::new(0, 0);
        for i in 0..per_batch {
            builder
                .push_payload(format!("{tag}-{partition}-{}", batch * per_batch + i).as_bytes())
                .expect("push");
        }
        let bytes = builder.finish().expect("finish");
        let answer = client
            .produce(stream, "t", Partitioning::Partition(partition), &[&bytes])
            .await
            .expect("produce");
        answers.push(answer);
    }
    answers
}

/// The next `count` messages of a consumer, within [`WAIT`].
async fn take(consumer: &mut Consumer, count: usize) -> Vec<ReceivedMessage> {
    let deadline = Instant::now() + WAIT;
    let mut messages = Vec::with_capacity(count);
    while messages.len() < count {
        let next = tokio::time::timeout_at(deadline, consumer.next()).await;
        let next = next.unwrap_or_else(|_| panic!("only {} of {count} messages arrived", messages.len()));
        messages.push(next.expect("the stream never ends").expect("message"));
    }
    messages
}

/// Whether a consumer delivers nothing for `quiet`.
async fn stays_quiet(consumer: &mut Consumer, quiet: Duration) -> bool {
    timeout(quiet, consumer.next()).await.is_err()
}

fn offsets(messages: &[ReceivedMessage]) -> Vec<u64> {
    messages.iter().map(|message| message.offset).collect()
}

async fn named(router: &ShardRouter, name: &str, mode: AutoCommit) -> Consumer {
    Consumer::builder(router, "s", "t")
        .consumer_name(name)
        .polling_strategy(PollStrategy::Next)
        .auto_commit(mode)
        .batch_size(5)
        .polling_interval(POLLING)
        .build()
        .await
        .expect("build consumer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_auto_commit_mode_resumes_where_it_promises() {
    let (_broker, client, router) = start(1).await;
    produce(&client, "s", 0, "m", 10, 5).await;
    let modes = [
        ("disabled", AutoCommit::Disabled, 0),
        ("interval", AutoCommit::Interval(Duration::from_secs(3600)), 10),
        ("after-poll", AutoCommit::AfterPoll, 10),
        ("after-handler", AutoCommit::AfterHandler, 10),
    ];
    for (name, mode, resume_at) in modes {
        let mut consumer = named(&router, name, mode).await;
        assert_eq!(offsets(&take(&mut consumer, 10).await), (0..10).collect::<Vec<_>>(), "{name}");
        consumer.shutdown().await.expect("shutdown");
        let stored = client.get_offset("s", "t", 0, ConsumerRef::Named(name.into())).await.expect("offset");
        assert_eq!(stored.stored, (resume_at > 0).then_some(resume_at), "{name}");

        let mut again = named(&router, name, AutoCommit::Disabled).await;
        let resumed = take(&mut again, 5).await;
        assert_eq!(offsets(&resumed), (resume_at..resume_at + 5).collect::<Vec<_>>(), "{name}");
        assert_eq!(&resumed[0].payload[..], format!("m-0-{resume_at}").as_bytes());
        again.shutdown().await.expect("shutdown");
    }

    // A short interval commits while the consumer keeps running.
    let mut ticking = named(&router, "ticking", AutoCommit::Interval(Duration::from_millis(20))).await;
    take(&mut ticking, 15).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let info =
            client.get_offset("s", "t", 0, ConsumerRef::Named("ticking".into())).await.expect("offset");
        if info.stored == Some(15) {
            break;
        }
        assert!(Instant::now() < deadline, "the interval commit never stored 15 (stored {:?})", info.stored);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ticking.shutdown().await.expect("shutdown");
}

/// Records what it handled; fails once on `fail_at`; signals when `last` was handled.
struct Recorder {
    handled: Mutex<Vec<u64>>,
    fail_at: Option<u64>,
    last: u64,
    done: tokio::sync::Notify,
}

impl MessageConsumer for Recorder {
    async fn consume(&self, message: ReceivedMessage) -> Result<(), HandlerError> {
        if Some(message.offset) == self.fail_at {
            return Err(format!("cannot handle offset {}", message.offset).into());
        }
        self.handled.lock().expect("lock").push(message.offset);
        if message.offset == self.last {
            self.done.notify_one();
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_handler_commit_loses_nothing_when_the_handler_fails() {
    let (_broker, client, router) = start(1).await;
    produce(&client, "s", 0, "h", 10, 3).await; // Offsets 0..30.
    let build = || named(&router, "worker", AutoCommit::AfterHandler);

    let mut first = build().await;
    let failing =
        Recorder { handled: Mutex::default(), fail_at: Some(17), last: 29, done: Default::default() };
    let outcome =
        timeout(WAIT, first.consume_messages(&failing, std::future::pending())).await.expect("ends");
    match outcome {
        Err(ConsumeError::Handler { partition: 0, offset: 17, .. }) => {}
        other => panic!("expected the handler failure on offset 17, got {other:?}"),
    }
    assert_eq!(first.consumed_offsets(), BTreeMap::from([(0, 17)]), "the failed message is not consumed");
    first.shutdown().await.expect("shutdown");
    let handled_first = failing.handled.into_inner().expect("lock");
    assert_eq!(handled_first, (0..17).collect::<Vec<_>>());
    let stored = client.get_offset("s", "t", 0, ConsumerRef::Named("worker".into())).await.expect("offset");
    assert_eq!(stored.stored, Some(17), "everything handled is committed, the failed message is not");

    let mut second = build().await;
    let working = Recorder { handled: Mutex::default(), fail_at: None, last: 29, done: Default::default() };
    let outcome =
        timeout(WAIT, second.consume_messages(&working, working.done.notified())).await.expect("ends");
    outcome.expect("the second consumer handles the rest");
    second.shutdown().await.expect("shutdown");
    let handled_second = working.handled.into_inner().expect("lock");
    assert_eq!(handled_second.first(), Some(&17), "the failed message comes first");
    assert_eq!(handled_second, (17..30).collect::<Vec<_>>());
    let union: BTreeSet<u64> = handled_first.into_iter().chain(handled_second).collect();
    assert_eq!(union, (0..30).collect::<BTreeSet<_>>(), "nothing lost");
}

/// Reads from two consumers at once until `count` messages arrived in all.
async fn take_from_both(
    a: &mut Consumer,
    b: &mut Consumer,
    count: usize,
) -> (Vec<ReceivedMessage>, Vec<ReceivedMessage>) {
    let deadline = Instant::now() + WAIT;
    let (mut from_a, mut from_b) = (Vec::new(), Vec::new());
    while from_a.len() + from_b.len() < count {
        let received = tokio::time::timeout_at(deadline, async {
            tokio::select! {
                message = a.next() => (true, message),
                message = b.next() => (false, message),
            }
        })
        .await;
        let (is_a, message) =
            received.unwrap_or_else(|_| panic!("{} + {} of {count} arrived", from_a.len(), from_b.len()));
        let message = message.expect("never ends").expect("message");
        if is_a {
            from_a.push(message)
        } else {
            from_b.push(message)
        }
    }
    (from_a, from_b)
}

fn keys(messages: &[ReceivedMessage]) -> Vec<(u32, u64)> {
    messages.iter().map(|message| (message.partition, message.offset)).collect()
}

fn partitions_of(messages: &[ReceivedMessage]) -> BTreeSet<u32> {
    messages.iter().map(|message| message.partition).collect()
}

async fn member(router: &ShardRouter, group: &str, mode: AutoCommit) -> Consumer {
    Consumer::builder(router, "s", "t")
        .group(group)
        .auto_commit(mode)
        .batch_size(10)
        .polling_interval(POLLING)
        .build()
        .await
        .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_two_splits_the_partitions_and_one_takes_over_when_the_other_leaves() {
    let (_broker, client, router) = start(4).await;
    let mut a = member(&router, "g", AutoCommit::AfterPoll).await;
    let mut b = member(&router, "g", AutoCommit::AfterPoll).await;
    for partition in 0..4 {
        produce(&client, "s", partition, "one", 2, 5).await;
    }
    let (from_a, from_b) = take_from_both(&mut a, &mut b, 40).await;
    let mut all = keys(&from_a);
    all.extend(keys(&from_b));
    all.sort_unstable();
    let expected: Vec<(u32, u64)> = (0..4).flat_map(|p| (0..10).map(move |o| (p, o))).collect();
    assert_eq!(all, expected, "every message exactly once");
    assert!(!from_a.is_empty() && !from_b.is_empty(), "both members read");
    assert!(partitions_of(&from_a).is_disjoint(&partitions_of(&from_b)), "a partition has one reader");
    assert!(stays_quiet(&mut a, Duration::from_millis(100)).await && stays_quiet(&mut b, POLLING).await);

    a.shutdown().await.expect("a leaves");
    // A poll `a` abandoned may still wait on the server (up to its long-poll wait): let it end.
    tokio::time::sleep(POLLING * 5).await;
    for partition in 0..4 {
        produce(&client, "s", partition, "two", 1, 5).await;
    }
    let rest = take(&mut b, 20).await;
    let mut rest = keys(&rest);
    rest.sort_unstable();
    let expected: Vec<(u32, u64)> = (0..4).flat_map(|p| (10..15).map(move |o| (p, o))).collect();
    assert_eq!(rest, expected, "the remaining member takes over every partition");
    b.shutdown().await.expect("b leaves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_member_with_client_side_commits_resumes_from_the_group_offsets() {
    let (_broker, client, router) = start(2).await;
    for partition in 0..2 {
        produce(&client, "s", partition, "c", 2, 5).await;
    }
    let mut first = member(&router, "h", AutoCommit::AfterHandler).await;
    let mut seen = keys(&take(&mut first, 20).await);
    seen.sort_unstable();
    assert_eq!(seen, (0..2).flat_map(|p| (0..10).map(move |o| (p, o))).collect::<Vec<_>>());
    first.shutdown().await.expect("shutdown commits and leaves");
    for partition in 0..2 {
        let info =
            client.get_offset("s", "t", partition, ConsumerRef::Group("h".into())).await.expect("offset");
        assert_eq!(info.stored, Some(10));
    }

    for partition in 0..2 {
        produce(&client, "s", partition, "d", 1, 2).await;
    }
    let mut second = member(&router, "h", AutoCommit::Disabled).await;
    let mut resumed = keys(&take(&mut second, 4).await);
    resumed.sort_unstable();
    assert_eq!(resumed, [(0, 10), (0, 11), (1, 10), (1, 11)]);
    assert!(stays_quiet(&mut second, Duration::from_millis(100)).await);
    second.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_built_before_its_stream_exists_starts_once_it_does() {
    let broker = common::Broker::start(2, &["--fsync", "always"]);
    let client =
        Client::connect_addr(&broker.addr().to_string(), "ringbroker", "ringbroker").await.expect("connect");
    let without_retries = Consumer::builder(&client, "late", "t").consumer_name("early").build().await;
    assert!(matches!(
        without_retries.map(drop),
        Err(ClientError::Server { status: Status::UnknownStream, .. })
    ));

    let consumer_client = client.clone();
    let consumer = tokio::spawn(async move {
        let mut consumer = Consumer::builder(&consumer_client, "late", "t")
            .consumer_name("early")
            .init_retries(50, Duration::from_millis(100))
            .polling_interval(POLLING)
            .build()
            .await
            .expect("built once the stream exists");
        let messages = take(&mut consumer, 6).await;
        consumer.shutdown().await.expect("shutdown");
        messages
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!consumer.is_finished(), "the consumer waits for the stream");
    client.create_stream("late", false).await.expect("stream");
    let config = TopicConfig { partitions: 2, ..TopicConfig::default() };
    client.create_topic("late", "t", config, false).await.expect("topic");
    for partition in 0..2 {
        produce(&client, "late", partition, "late", 1, 3).await;
    }
    let messages = timeout(WAIT, consumer).await.expect("in time").expect("consumer task");
    let mut payloads: Vec<String> =
        messages.iter().map(|m| String::from_utf8_lossy(&m.payload).into_owned()).collect();
    payloads.sort_unstable();
    assert_eq!(payloads, ["late-0-0", "late-0-1", "late-0-2", "late-1-0", "late-1-1", "late-1-2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_strategies_pick_the_first_message_and_later_polls_continue() {
    let (_broker, client, router) = start(1).await;
    let mut acks = Vec::new();
    for tag in ["a", "b", "c"] {
        acks.extend(produce(&client, "s", 0, tag, 1, 5).await); // Offsets 0..5, 5..10, 10..15.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let second_batch_appended_us = acks[1].acks[0].append_timestamp_us;
    client.store_offset("s", "t", 0, ConsumerRef::Named("resumer".into()), 9).await.expect("store");

    let cases = [
        ("first", PollStrategy::First, 0),
        ("last", PollStrategy::Last, 14),
        ("offset", PollStrategy::Offset(7), 7),
        ("timestamp", PollStrategy::Timestamp(second_batch_appended_us), 5),
        ("resumer", PollStrategy::Next, 9),
        ("newcomer", PollStrategy::Next, 0),
    ];
    for (name, strategy, first) in cases {
        let mut consumer = Consumer::builder(&router, "s", "t")
            .consumer_name(name)
            .polling_strategy(strategy)
            .auto_commit(AutoCommit::Disabled)
            .batch_size(3)
            .polling_interval(POLLING)
            .build()
            .await
            .expect("build");
        let count = (15 - first).min(3) as usize;
        let messages = take(&mut consumer, count).await;
        assert_eq!(offsets(&messages), (first..first + count as u64).collect::<Vec<_>>(), "{name}");
        consumer.shutdown().await.expect("shutdown");
    }

    // After `Last`, the next poll continues from where the first ended, not from the new end.
    let mut tail = Consumer::builder(&router, "s", "t")
        .consumer_name("tail")
        .polling_strategy(PollStrategy::Last)
        .auto_commit(AutoCommit::Disabled)
        .polling_interval(POLLING)
        .build()
        .await
        .expect("build");
    assert_eq!(offsets(&take(&mut tail, 1).await), [14]);
    produce(&client, "s", 0, "d", 2, 2).await;
    assert_eq!(offsets(&take(&mut tail, 4).await), [15, 16, 17, 18]);
    tail.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_consumer_reads_every_partition_from_its_owner_shard() {
    let (_broker, client, router) = start(4).await;
    for partition in 0..4 {
        produce(&client, "s", partition, "r", 2, 3).await;
    }
    let forwarded = || async { client.stats(None).await.expect("stats").server.forwarded_requests };
    let before = forwarded().await;
    let per_stats_request = forwarded().await - before;
    let mut consumer = named(&router, "router", AutoCommit::AfterPoll).await;
    let messages = take(&mut consumer, 24).await;
    let mut per_partition: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for message in &messages {
        per_partition.entry(message.partition).or_default().push(message.offset);
    }
    for partition in 0..4 {
        assert_eq!(per_partition.get(&partition), Some(&(0..6).collect::<Vec<_>>()), "partition {partition}");
    }
    assert!(stays_quiet(&mut consumer, Duration::from_millis(100)).await);
    consumer.shutdown().await.expect("shutdown");
    let after = forwarded().await;
    assert!(
        after - before <= 2 * per_stats_request,
        "polls and commits went to their owners ({} forwarded)",
        after - before
    );
}
