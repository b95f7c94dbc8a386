//! Durable-consumer and retention semantics against the real broker, through the raw client
//! API: redelivery after `ack_wait`, nak (with and without a delay), backoff, `max_deliver`,
//! term, in-progress, `max_ack_pending`, ack policies `all` and `none`, deliver policies,
//! wildcard filters, work-queue and interest retention (overlap refusal, removal on ack, removal
//! of unwanted messages, consumer deletion), `max_messages` with discard new and old, TTLs,
//! hostile acknowledgements, and fetch + ack on partitions owned by another shard.
//!
//! Every wait is bounded; timing assertions only use lower bounds with small slack (a
//! redelivery must not come early) and generous upper bounds (the fetch's own expiry).

mod common;

use std::future::Future;
use std::time::{Duration, Instant};

use ringbroker::client::durable::Fetched;
use ringbroker::client::{Client, ClientError};
use ringbroker::protocol::batch::{BatchBuilder, Message};
use ringbroker::protocol::durable::{
    AckKind, AckPolicy, AckResponse, DeliverPolicy, Discard, DurableConfig, DurablePartitionState,
    FetchRequest, PartitionState, Retention, TopicPolicy, TTL_HEADER,
};
use ringbroker::protocol::messages::{Partitioning, Status, TopicConfig};

/// Slack for "not before": timers and clocks may round a little.
const EARLY_SLACK: Duration = Duration::from_millis(30);

struct Topic {
    broker: common::Broker,
    client: Client,
    name: String,
}

const STREAM: &str = "s";

async fn connect(addr: &str) -> Client {
    Client::connect_addr(addr, "ringbroker", "ringbroker").await.expect("connect")
}

async fn setup(shards: u16, partitions: u32, policy: TopicPolicy) -> Topic {
    let broker = common::Broker::start(shards, &[]);
    let client = connect(&broker.addr().to_string()).await;
    client.create_stream(STREAM, false).await.expect("stream");
    let config = TopicConfig { partitions, ..TopicConfig::default() };
    client.create_topic_with_policy(STREAM, "t", config, policy, false).await.expect("topic");
    Topic { broker, client, name: "t".to_string() }
}

fn limits() -> TopicPolicy {
    TopicPolicy::default()
}

fn policy(retention: Retention) -> TopicPolicy {
    TopicPolicy { retention, ..TopicPolicy::default() }
}

fn config(name: &str) -> DurableConfig {
    DurableConfig::new(name)
}

/// A message to build: its filter value and its headers.
type Spec<'a> = (Option<&'a str>, &'a [(&'a [u8], &'a [u8])]);

fn batch(messages: &[Spec<'_>]) -> Vec<u8> {
    let mut builder = BatchBuilder::new(0, 0);
    for (subject, headers) in messages {
        let message =
            Message { filter_value: subject.map(str::as_bytes), headers, ..Message::payload(b"body") };
        builder.push(&message).expect("push");
    }
    builder.finish().expect("batch")
}

impl Topic {
    async fn produce_on(&self, partition: u32, batches: &[Vec<u8>]) -> Result<Vec<u64>, ClientError> {
        let slices: Vec<&[u8]> = batches.iter().map(Vec::as_slice).collect();
        let answer =
            self.client.produce(STREAM, &self.name, Partitioning::Partition(partition), &slices).await?;
        Ok(answer.acks.iter().flat_map(|a| a.base_offset..=a.last_offset).collect())
    }

    /// One message with `subject` on partition 0; its offset.
    async fn publish(&self, subject: &str) -> u64 {
        self.produce_on(0, &[batch(&[(Some(subject), &[])])]).await.expect("produce")[0]
    }

    /// `count` messages without subject on partition 0 (one batch each); their offsets.
    async fn publish_n(&self, count: usize) -> Vec<u64> {
        let mut offsets = Vec::new();
        for _ in 0..count {
            offsets.extend(self.produce_on(0, &[batch(&[(None, &[])])]).await.expect("produce"));
        }
        offsets
    }

    async fn consumer(&self, config: DurableConfig) {
        self.client.create_consumer(STREAM, &self.name, config, false).await.expect("create consumer");
    }

    async fn fetch_on(
        &self,
        name: &str,
        partition: u32,
        max: u32,
        wait: Duration,
    ) -> Result<Fetched, ClientError> {
        let request = FetchRequest {
            stream: STREAM.into(),
            topic: self.name.clone(),
            partition,
            consumer: name.into(),
            max_messages: max,
            max_bytes: 1 << 20,
            expires_us: wait.as_micros() as u64,
            no_wait: wait.is_zero(),
        };
        self.client.fetch(&request).await
    }

    /// Offsets fetched on partition 0.
    async fn fetch(&self, name: &str, max: u32, wait: Duration) -> Vec<u64> {
        offsets(&self.fetch_on(name, 0, max, wait).await.expect("fetch"))
    }

    async fn ack(&self, name: &str, kind: AckKind, offsets: Vec<u64>) -> Result<AckResponse, ClientError> {
        self.client.ack(STREAM, &self.name, 0, name, kind, offsets, true).await
    }

    async fn state(&self) -> PartitionState {
        self.client.topic_state(STREAM, &self.name).await.expect("state").partitions[0].clone()
    }

    async fn info(&self, name: &str) -> DurablePartitionState {
        self.client.consumer_info(STREAM, &self.name, name).await.expect("info").partitions[0].clone()
    }
}

fn offsets(fetched: &Fetched) -> Vec<u64> {
    fetched.messages.iter().map(|m| m.offset).collect()
}

fn status<T: std::fmt::Debug>(result: Result<T, ClientError>) -> Status {
    match result {
        Err(error) => error.status().unwrap_or_else(|| panic!("not a server error: {error:?}")),
        Ok(value) => panic!("expected a refusal, got {value:?}"),
    }
}

/// Polls `check` until it holds, for at most `timeout`; panics with `what` otherwise.
async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let outcome = check().await;
        match outcome {
            Ok(()) => return,
            Err(why) if Instant::now() >= deadline => panic!("{what}: not within {timeout:?}: {why}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

const NOW: Duration = Duration::ZERO;
const LONG: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_messages_are_redelivered_after_ack_wait() {
    let t = setup(1, 1, limits()).await;
    t.consumer(DurableConfig { ack_wait_us: 300_000, ..config("c") }).await;
    t.publish_n(1).await;
    let first = t.fetch_on("c", 0, 10, NOW).await.expect("fetch");
    let delivered = Instant::now();
    assert_eq!(offsets(&first), vec![0]);
    assert_eq!((first.messages[0].deliveries, first.messages[0].consumer_sequence), (1, 1));
    assert_eq!(t.fetch("c", 10, NOW).await, Vec::<u64>::new(), "nothing is due yet");

    let again = t.fetch_on("c", 0, 10, LONG).await.expect("fetch");
    assert!(
        delivered.elapsed() + EARLY_SLACK >= Duration::from_millis(300),
        "redelivered early: {:?}",
        delivered.elapsed()
    );
    assert_eq!(offsets(&again), vec![0], "the same offset");
    assert_eq!((again.messages[0].deliveries, again.messages[0].consumer_sequence), (2, 2));

    let answer = t.ack("c", AckKind::Ack, vec![0]).await.expect("ack");
    assert_eq!((answer.applied, answer.already), (1, 0));
    let info = t.info("c").await;
    assert_eq!((info.ack_floor, info.ack_pending, info.redelivered, info.acked), (1, 0, 1, 1));
    assert_eq!(t.fetch("c", 10, Duration::from_millis(500)).await, Vec::<u64>::new(), "acked: never again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nak_redelivers_after_its_delay_or_at_once() {
    let t = setup(1, 1, limits()).await;
    t.consumer(config("c")).await; // ack_wait 30 s: only naks bring messages back here
    t.publish_n(2).await;
    assert_eq!(t.fetch("c", 10, NOW).await, vec![0, 1]);
    let naked = Instant::now();
    assert_eq!(t.ack("c", AckKind::Nak(400_000), vec![0]).await.expect("nak").applied, 1);
    assert_eq!(t.ack("c", AckKind::Nak(0), vec![1]).await.expect("nak").applied, 1);

    let at_once = t.fetch_on("c", 0, 10, NOW).await.expect("fetch");
    assert_eq!(offsets(&at_once), vec![1], "nak(0) comes back at once, nak(400 ms) not yet");
    assert_eq!(at_once.messages[0].deliveries, 2);

    let later = t.fetch_on("c", 0, 10, LONG).await.expect("fetch");
    assert!(
        naked.elapsed() + EARLY_SLACK >= Duration::from_millis(400),
        "nak delay not kept: {:?}",
        naked.elapsed()
    );
    assert_eq!(offsets(&later), vec![0]);
    assert_eq!(later.messages[0].deliveries, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backoff_governs_redelivery_times() {
    let t = setup(1, 1, limits()).await;
    let backoff = vec![200_000, 600_000];
    t.consumer(DurableConfig { backoff_us: backoff, ..config("c") }).await;
    t.publish_n(1).await;
    let mut last = Instant::now();
    assert_eq!(t.fetch("c", 1, NOW).await, vec![0]);
    // After the 1st delivery 200 ms, after the 2nd 600 ms, then the last step repeats.
    for (delivery, wait_ms) in [(2, 200), (3, 600), (4, 600)] {
        let fetched = t.fetch_on("c", 0, 1, LONG).await.expect("fetch");
        let waited = last.elapsed();
        last = Instant::now();
        assert_eq!(offsets(&fetched), vec![0], "delivery {delivery}");
        assert_eq!(fetched.messages[0].deliveries, delivery);
        assert!(
            waited + EARLY_SLACK >= Duration::from_millis(wait_ms),
            "delivery {delivery} came after {waited:?}, before its backoff of {wait_ms} ms"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_deliver_gives_up_and_counts_it() {
    let t = setup(1, 1, limits()).await;
    t.consumer(DurableConfig { ack_wait_us: 200_000, max_deliver: Some(2), ..config("c") }).await;
    t.publish_n(1).await;
    assert_eq!(t.fetch("c", 1, NOW).await, vec![0]);
    let second = t.fetch_on("c", 0, 1, LONG).await.expect("fetch");
    assert_eq!((offsets(&second), second.messages[0].deliveries), (vec![0], 2));
    assert_eq!(t.fetch("c", 1, Duration::from_millis(800)).await, Vec::<u64>::new(), "no third delivery");
    let info = t.info("c").await;
    assert_eq!(info.max_delivered, 1, "given up, and counted: {info:?}");
    assert_eq!((info.ack_pending, info.ack_floor, info.acked), (0, 1, 0), "{info:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn term_is_never_redelivered() {
    let t = setup(1, 1, limits()).await;
    t.consumer(DurableConfig { ack_wait_us: 200_000, ..config("c") }).await;
    t.publish_n(2).await;
    assert_eq!(t.fetch("c", 2, NOW).await, vec![0, 1]);
    assert_eq!(t.ack("c", AckKind::Term, vec![0]).await.expect("term").applied, 1);
    assert_eq!(t.fetch("c", 10, LONG).await, vec![1], "only the unterminated one comes back");
    let info = t.info("c").await;
    assert_eq!((info.terminated, info.ack_pending), (1, 1), "{info:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_progress_restarts_the_ack_timer() {
    let t = setup(1, 1, limits()).await;
    t.consumer(DurableConfig { ack_wait_us: 500_000, ..config("c") }).await;
    t.publish_n(1).await;
    assert_eq!(t.fetch("c", 1, NOW).await, vec![0]);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(t.ack("c", AckKind::InProgress, vec![0]).await.expect("wip").applied, 1);
    let touched = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await; // 650 ms after delivery: past ack_wait
    assert_eq!(t.fetch("c", 1, NOW).await, Vec::<u64>::new(), "in progress: not due yet");
    let fetched = t.fetch_on("c", 0, 1, LONG).await.expect("fetch");
    assert!(
        touched.elapsed() + EARLY_SLACK >= Duration::from_millis(500),
        "came {:?} after in-progress",
        touched.elapsed()
    );
    assert_eq!((offsets(&fetched), fetched.messages[0].deliveries), (vec![0], 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_ack_pending_bounds_deliveries() {
    let t = setup(1, 1, limits()).await;
    t.consumer(DurableConfig { max_ack_pending: 3, ..config("c") }).await;
    t.publish_n(10).await;
    let fetched = t.fetch_on("c", 0, 10, NOW).await.expect("fetch");
    assert_eq!(offsets(&fetched), vec![0, 1, 2]);
    assert_eq!(fetched.ack_pending, 3);
    assert_eq!(t.fetch("c", 10, Duration::from_millis(200)).await, Vec::<u64>::new(), "at the limit");
    t.ack("c", AckKind::Ack, vec![1]).await.expect("ack");
    assert_eq!(t.fetch("c", 10, NOW).await, vec![3], "one slot freed, one more");
    assert_eq!(t.fetch("c", 10, NOW).await, Vec::<u64>::new());
    // A waiting fetch is woken by the ack that frees a slot.
    let client = connect(&t.broker.addr().to_string()).await;
    let ack = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        client.ack(STREAM, "t", 0, "c", AckKind::Ack, vec![0], false).await.expect("ack")
    };
    let (fetched, _) = tokio::join!(t.fetch("c", 10, LONG), ack);
    assert_eq!(fetched, vec![4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_policy_all_is_cumulative_and_ack_all_needs_it() {
    let t = setup(1, 1, limits()).await;
    t.consumer(DurableConfig { ack: AckPolicy::All, ..config("all") }).await;
    t.consumer(config("explicit")).await;
    t.publish_n(5).await;
    assert_eq!(t.fetch("all", 10, NOW).await, vec![0, 1, 2, 3, 4]);
    assert_eq!(t.ack("all", AckKind::AckAll, vec![2]).await.expect("ack all").applied, 3);
    let info = t.info("all").await;
    assert_eq!((info.ack_floor, info.ack_pending, info.acked), (3, 2, 3), "{info:?}");
    // Under policy all a plain ack is cumulative too.
    assert_eq!(t.ack("all", AckKind::Ack, vec![4]).await.expect("ack").applied, 2);
    assert_eq!(t.info("all").await.ack_floor, 5);

    assert_eq!(t.fetch("explicit", 10, NOW).await, vec![0, 1, 2, 3, 4]);
    assert_eq!(status(t.ack("explicit", AckKind::AckAll, vec![4]).await), Status::InvalidArgument);
    assert_eq!(t.info("explicit").await.ack_pending, 5, "the refused AckAll changed nothing");
    assert_eq!(t.ack("explicit", AckKind::Ack, vec![3]).await.expect("ack").applied, 1);
    let info = t.info("explicit").await;
    assert_eq!((info.ack_floor, info.ack_pending), (0, 4), "explicit acks are one by one: {info:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_policy_none_delivers_once() {
    let t = setup(1, 1, limits()).await;
    t.consumer(DurableConfig { ack: AckPolicy::None, ack_wait_us: 200_000, ..config("c") }).await;
    t.publish_n(3).await;
    assert_eq!(t.fetch("c", 10, NOW).await, vec![0, 1, 2]);
    assert_eq!(t.fetch("c", 10, Duration::from_millis(700)).await, Vec::<u64>::new(), "never redelivered");
    let info = t.info("c").await;
    assert_eq!((info.ack_floor, info.ack_pending), (3, 0), "{info:?}");
    assert_eq!(status(t.ack("c", AckKind::Ack, vec![0]).await), Status::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_policies_on_a_limits_topic() {
    let t = setup(1, 1, limits()).await;
    t.publish_n(5).await;
    for (name, deliver) in [
        ("all", DeliverPolicy::All),
        ("last", DeliverPolicy::Last),
        ("new", DeliverPolicy::New),
        ("from2", DeliverPolicy::ByOffset(2)),
    ] {
        t.consumer(DurableConfig { deliver, ..config(name) }).await;
    }
    assert_eq!(t.fetch("new", 10, NOW).await, Vec::<u64>::new(), "new: nothing before its creation");
    t.publish_n(1).await;
    assert_eq!(t.fetch("all", 10, NOW).await, vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(t.fetch("last", 10, NOW).await, vec![4, 5]);
    assert_eq!(t.fetch("new", 10, NOW).await, vec![5]);
    assert_eq!(t.fetch("from2", 10, NOW).await, vec![2, 3, 4, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_filters_on_a_limits_topic() {
    let t = setup(1, 1, limits()).await;
    // One batch of several subjects, then single messages.
    let subjects = ["a.b", "a.b.c", "b.x", "a", "a.c"];
    let many: Vec<Spec<'_>> = subjects.iter().map(|s| (Some(*s), &[][..])).collect();
    assert_eq!(t.produce_on(0, &[batch(&many)]).await.expect("produce"), vec![0, 1, 2, 3, 4]);
    for subject in subjects {
        t.publish(subject).await;
    }
    t.consumer(DurableConfig { filter: vec!["a.*".into()], ..config("star") }).await;
    t.consumer(DurableConfig { filter: vec!["a.>".into()], ..config("tail") }).await;
    t.consumer(DurableConfig { filter: vec!["b.*".into(), "a".into()], ..config("two") }).await;
    let cases = [("star", vec![0, 4, 5, 9]), ("tail", vec![0, 1, 4, 5, 6, 9]), ("two", vec![2, 3, 7, 8])];
    for (name, want) in cases {
        // Small fetches, so a budget runs out inside the batch.
        let mut got = Vec::new();
        for _ in 0..20 {
            let fetched = t.fetch_on(name, 0, 1, NOW).await.expect("fetch");
            if fetched.messages.is_empty() {
                break;
            }
            for message in &fetched.messages {
                let subject = std::str::from_utf8(message.filter_value.as_deref().unwrap_or_default())
                    .unwrap()
                    .to_string();
                assert_eq!(
                    subject,
                    subjects[message.offset as usize % 5],
                    "{name}: offset {} has its own record",
                    message.offset
                );
            }
            got.extend(offsets(&fetched));
        }
        assert_eq!(got, want, "consumer {name}");
        assert_eq!(t.info(name).await.ack_pending, want.len() as u64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_queue_refuses_overlap_and_removes_what_is_acked() {
    let t = setup(1, 1, policy(Retention::WorkQueue)).await;
    t.consumer(DurableConfig { filter: vec!["jobs.a.>".into()], ..config("wa") }).await;
    let overlapping = DurableConfig { filter: vec!["jobs.*.x".into()], ..config("wx") };
    assert_eq!(
        status(t.client.create_consumer(STREAM, "t", overlapping, false).await),
        Status::FilterOverlap
    );
    let everything = config("all");
    assert_eq!(status(t.client.create_consumer(STREAM, "t", everything, false).await), Status::FilterOverlap);
    t.consumer(DurableConfig { filter: vec!["jobs.b.>".into()], ..config("wb") }).await;

    t.publish("jobs.a.1").await;
    t.publish("jobs.b.1").await;
    t.publish("other.1").await;
    assert_eq!((t.state().await.messages, t.state().await.first_offset), (3, 0));

    assert_eq!(t.fetch("wa", 10, NOW).await, vec![0]);
    t.ack("wa", AckKind::Ack, vec![0]).await.expect("ack");
    let state = t.state().await;
    assert_eq!((state.messages, state.first_offset), (2, 1), "{state:?}");

    assert_eq!(t.fetch("wb", 10, NOW).await, vec![1]);
    t.ack("wb", AckKind::Ack, vec![1]).await.expect("ack");
    let state = t.state().await;
    assert_eq!(
        (state.messages, state.first_offset),
        (1, 2),
        "no consumer matches other.1: it stays: {state:?}"
    );
    // A nak'ed message is not done: it stays.
    t.publish("jobs.a.2").await;
    assert_eq!(t.fetch("wa", 10, NOW).await, vec![3]);
    t.ack("wa", AckKind::Nak(0), vec![3]).await.expect("nak");
    assert_eq!(t.state().await.messages, 2);
    assert_eq!(t.fetch("wa", 10, NOW).await, vec![3]);
    t.ack("wa", AckKind::Term, vec![3]).await.expect("term");
    assert_eq!(t.state().await.messages, 1, "terminated: removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interest_removes_what_no_filter_matches() {
    let t = setup(1, 1, policy(Retention::Interest)).await;
    t.consumer(DurableConfig { filter: vec!["keep.>".into()], ..config("i") }).await;
    t.publish("keep.1").await;
    t.publish("drop.1").await;
    t.publish("keep.2").await;
    let state = t.state().await;
    assert_eq!((state.messages, state.first_offset, state.num_deleted), (2, 0, 1), "{state:?}");
    assert_eq!(t.fetch("i", 10, NOW).await, vec![0, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_consumer_removes_what_only_it_held() {
    let t = setup(1, 1, policy(Retention::Interest)).await;
    t.consumer(config("c1")).await;
    t.consumer(DurableConfig { filter: vec!["x.>".into()], ..config("c2") }).await;
    t.publish("x.1").await;
    t.publish("y.1").await;
    t.publish("x.2").await;
    assert_eq!(t.state().await.messages, 3);
    assert_eq!(t.fetch("c1", 10, NOW).await, vec![0, 1, 2]);
    t.ack("c1", AckKind::Ack, vec![0, 1]).await.expect("ack");
    let state = t.state().await;
    assert_eq!((state.messages, state.first_offset), (2, 0), "x.1 is c2's, x.2 both's: {state:?}");
    t.client.delete_consumer(STREAM, "t", "c2").await.expect("delete");
    let state = t.state().await;
    assert_eq!(
        (state.messages, state.first_offset, state.consumer_count),
        (1, 2, 1),
        "x.1 went with c2: {state:?}"
    );
    t.client.delete_consumer(STREAM, "t", "c1").await.expect("delete");
    let state = t.state().await;
    assert_eq!((state.messages, state.first_offset), (0, 3), "nobody left: {state:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_messages_with_discard_new_refuses_whole_requests() {
    let full = TopicPolicy { max_messages: Some(5), discard: Discard::New, ..TopicPolicy::default() };
    let t = setup(1, 1, full).await;
    let one = || batch(&[(None, &[])]);
    let three = batch(&[(None, &[]), (None, &[]), (None, &[])]);
    assert_eq!(t.produce_on(0, std::slice::from_ref(&three)).await.expect("3 fit"), vec![0, 1, 2]);
    assert_eq!(status(t.produce_on(0, &[three]).await), Status::TopicFull, "3 into room for 2");
    assert_eq!(
        status(t.produce_on(0, &[one(), one(), one()]).await),
        Status::TopicFull,
        "3 batches into room for 2"
    );
    let state = t.state().await;
    assert_eq!((state.messages, state.last_offset), (3, 2), "nothing of a refused request was written");
    assert_eq!(t.produce_on(0, &[one(), one()]).await.expect("2 fit"), vec![3, 4]);
    assert_eq!(status(t.produce_on(0, &[one()]).await), Status::TopicFull, "the 6th");
    let state = t.state().await;
    assert_eq!((state.messages, state.first_offset, state.last_offset), (5, 0, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_messages_with_discard_old_drops_the_oldest() {
    for retention in [Retention::Limits, Retention::Interest] {
        let old =
            TopicPolicy { retention, max_messages: Some(5), discard: Discard::Old, ..TopicPolicy::default() };
        let t = setup(1, 1, old).await;
        t.consumer(config("c")).await;
        t.publish_n(8).await;
        eventually(&format!("{retention:?}: 5 live"), Duration::from_secs(3), || async {
            let state = t.state().await;
            match (state.messages, state.first_offset, state.last_offset) {
                (5, 3, 7) => Ok(()),
                _ => Err(format!("{state:?}")),
            }
        })
        .await;
        assert_eq!(t.fetch("c", 10, NOW).await, vec![3, 4, 5, 6, 7], "{retention:?}");
        t.publish_n(1).await;
        eventually(&format!("{retention:?}: still 5"), Duration::from_secs(3), || async {
            let state = t.state().await;
            match (state.messages, state.first_offset) {
                (5, 4) => Ok(()),
                _ => Err(format!("{state:?}")),
            }
        })
        .await;
        // The discarded pending message is never redelivered; the rest still can be acked.
        let info = t.info("c").await;
        assert_eq!(info.ack_pending, 4, "{retention:?}: {info:?}");
        assert_eq!(t.ack("c", AckKind::Ack, vec![3]).await.expect("ack of a discarded offset").already, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_expires_messages() {
    let allow = TopicPolicy { allow_ttl: true, ..TopicPolicy::default() };
    let t = setup(1, 1, allow).await;
    t.consumer(DurableConfig { ack_wait_us: 300_000, ..config("early") }).await;
    t.consumer(config("late")).await;
    let ttl: &[(&[u8], &[u8])] = &[(TTL_HEADER.as_bytes(), b"200")];
    let long_ttl: &[(&[u8], &[u8])] = &[(TTL_HEADER.as_bytes(), b"60000")];
    t.produce_on(0, &[batch(&[(None, ttl)])]).await.expect("produce");
    t.produce_on(0, &[batch(&[(None, &[])])]).await.expect("produce");
    t.produce_on(0, &[batch(&[(None, long_ttl)])]).await.expect("produce");
    assert_eq!(t.state().await.messages, 3);
    // Fetched before it expires, not acked: never redelivered once expired.
    assert_eq!(t.fetch("early", 1, NOW).await, vec![0]);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(t.fetch("late", 10, NOW).await, vec![1, 2], "expired: not delivered");
    eventually("expired message removed", Duration::from_secs(3), || async {
        let state = t.state().await;
        match (state.messages, state.first_offset) {
            (2, 1) => Ok(()),
            _ => Err(format!("{state:?}")),
        }
    })
    .await;
    let again = t.fetch("early", 10, Duration::from_millis(800)).await;
    assert!(!again.contains(&0), "an expired message was redelivered: {again:?}");

    let plain = setup(1, 1, limits()).await;
    assert_eq!(status(plain.produce_on(0, &[batch(&[(None, ttl)])]).await), Status::TtlNotAllowed);
    assert_eq!(plain.state().await.last_offset, -1, "nothing written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_acks_are_refused_without_effect() {
    let t = setup(1, 1, policy(Retention::WorkQueue)).await;
    t.consumer(config("c")).await;
    t.publish_n(3).await;
    assert_eq!(status(t.ack("nope", AckKind::Ack, vec![0]).await), Status::UnknownConsumer);
    assert_eq!(status(t.fetch_on("nope", 0, 1, NOW).await), Status::UnknownConsumer);
    assert_eq!(t.fetch("c", 1, NOW).await, vec![0]);
    assert_eq!(status(t.ack("c", AckKind::Ack, vec![2]).await), Status::NotDelivered, "not yet delivered");
    assert_eq!(status(t.ack("c", AckKind::Ack, vec![999]).await), Status::NotDelivered, "beyond the end");
    assert_eq!(status(t.ack("c", AckKind::Ack, vec![u64::MAX]).await), Status::NotDelivered);
    assert_eq!(status(t.ack("c", AckKind::Term, vec![0, 2]).await), Status::NotDelivered, "one bad offset");
    let info = t.info("c").await;
    assert_eq!((info.ack_pending, info.acked, info.terminated), (1, 0, 0), "nothing applied: {info:?}");
    assert_eq!(t.state().await.messages, 3);
    let answer = t.ack("c", AckKind::Ack, vec![0]).await.expect("ack");
    assert_eq!((answer.applied, answer.already), (1, 0));
    let answer = t.ack("c", AckKind::Ack, vec![0]).await.expect("ack again");
    assert_eq!((answer.applied, answer.already), (0, 1));
    let answer = t.ack("c", AckKind::Nak(0), vec![0]).await.expect("nak of an acked offset");
    assert_eq!((answer.applied, answer.already), (0, 1));
    assert_eq!(t.fetch("c", 10, NOW).await, vec![1, 2], "the nak did not bring it back");
    assert!(t
        .client
        .ack(STREAM, "t", 7, "c", AckKind::Ack, vec![0], false)
        .await
        .unwrap_err()
        .status()
        .is_some());

    t.client.delete_consumer(STREAM, "t", "c").await.expect("delete");
    assert_eq!(status(t.ack("c", AckKind::Ack, vec![1]).await), Status::UnknownConsumer);
    assert_eq!(status(t.fetch_on("c", 0, 1, NOW).await), Status::UnknownConsumer);
    assert_eq!(status(t.client.consumer_info(STREAM, "t", "c").await), Status::UnknownConsumer);
    assert_eq!(t.state().await.messages, 2, "a work queue keeps unacknowledged messages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_and_ack_on_every_partition_of_two_shards() {
    let t = setup(2, 4, policy(Retention::Interest)).await;
    t.consumer(DurableConfig { ack_wait_us: 300_000, ..config("c") }).await;
    for partition in 0..4 {
        let three = batch(&[(None, &[]), (None, &[]), (None, &[])]);
        assert_eq!(t.produce_on(partition, &[three]).await.expect("produce"), vec![0, 1, 2]);
    }
    // Through each shard's own listener, so half the partitions are forwarded either way.
    let direct = [
        connect(&t.broker.shard_addr(0).to_string()).await,
        connect(&t.broker.shard_addr(1).to_string()).await,
    ];
    for partition in 0..4 {
        let client = &direct[partition as usize % 2];
        let other = &direct[(partition as usize + 1) % 2];
        let request = FetchRequest {
            stream: STREAM.into(),
            topic: "t".into(),
            partition,
            consumer: "c".into(),
            max_messages: 2,
            max_bytes: 1 << 20,
            expires_us: 0,
            no_wait: true,
        };
        let fetched = client.fetch(&request).await.expect("fetch");
        assert_eq!(offsets(&fetched), vec![0, 1], "partition {partition}");
        assert!(fetched.messages.iter().all(|m| m.partition == partition && m.payload.as_ref() == b"body"));
        let answer =
            other.ack(STREAM, "t", partition, "c", AckKind::Ack, vec![0, 1], true).await.expect("ack");
        assert_eq!(answer.applied, 2);
        let fetched = other.fetch(&request).await.expect("fetch");
        assert_eq!(offsets(&fetched), vec![2]);
        other.ack(STREAM, "t", partition, "c", AckKind::Nak(0), vec![2], false).await.expect("nak");
        let fetched = client.fetch(&request).await.expect("fetch");
        assert_eq!((offsets(&fetched), fetched.messages[0].deliveries), (vec![2], 2));
        client.ack(STREAM, "t", partition, "c", AckKind::Ack, vec![2], true).await.expect("ack");
    }
    let info = t.client.consumer_info(STREAM, "t", "c").await.expect("info");
    assert_eq!(info.partitions.len(), 4);
    for state in &info.partitions {
        assert_eq!(
            (state.ack_floor, state.acked, state.ack_pending, state.redelivered),
            (3, 3, 0, 1),
            "{state:?}"
        );
    }
    let state = t.client.topic_state(STREAM, "t").await.expect("state");
    assert_eq!((state.total.messages, state.total.first_offset, state.total.last_offset), (0, 3, 2));
}
