//! Crash test of durable consumers and interest retention: the real broker, SIGKILLed again and
//! again (default `--fsync always`) on one data directory, while a producer writes to an
//! interest topic and a durable consumer fetches and acknowledges — every other round with
//! `sync` (the "double ack"), the others without.
//!
//! Checked across all cycles:
//! * nothing acknowledged with `sync` (answered) is ever delivered again;
//! * no fetch returns an offset below a first offset that was durable (read before a `sync`
//!   barrier ack), and the reported first offset never falls below it after a restart;
//! * every message the broker acknowledged is delivered, and acknowledged with effect once;
//!   only a message whose effective ack was not synced may be redelivered (then acked again);
//! * messages no consumer's filter matches are removed at once, also when the broker is killed
//!   right after writing them: once everything is acknowledged the topic is empty.
//!
//! A second test kills the broker right after a consumer is created on an interest topic and a
//! few messages are written (within the 50 ms of the periodic ack-state save): the consumer
//! must keep its interest in them. Every wait is bounded; the whole file takes well under 60 s.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ringbroker::client::{Client, ClientError, ConnectionString};
use ringbroker::protocol::batch::{BatchBuilder, Message};
use ringbroker::protocol::durable::{AckKind, DurableConfig, FetchRequest, Retention, TopicPolicy};
use ringbroker::protocol::messages::{Partitioning, TopicConfig};

const STREAM: &str = "s";
const TOPIC: &str = "q";
const CYCLES: u32 = 15;
const RESTART_TIMEOUT: Duration = Duration::from_secs(20);

async fn connect(broker: &common::Broker) -> Client {
    let mut connection =
        ConnectionString::new(&broker.addr().to_string(), "ringbroker", "ringbroker").expect("url");
    connection.options.timeout = Duration::from_secs(5);
    connection.options.reconnect_retries = 0;
    Client::connect(&connection).await.expect("connect")
}

async fn create_topic(client: &Client) {
    client.create_stream(STREAM, false).await.expect("stream");
    let policy = TopicPolicy { retention: Retention::Interest, ..TopicPolicy::default() };
    let config = TopicConfig { partitions: 1, ..TopicConfig::default() };
    client.create_topic_with_policy(STREAM, TOPIC, config, policy, false).await.expect("topic");
}

fn batch(subjects: &[String]) -> Vec<u8> {
    let mut builder = BatchBuilder::new(0, 0);
    for subject in subjects {
        builder
            .push(&Message { filter_value: Some(subject.as_bytes()), ..Message::payload(b"x") })
            .expect("push");
    }
    builder.finish().expect("batch")
}

/// Produces `subjects` in one batch on partition 0: the offsets, or the error.
async fn produce(client: &Client, subjects: &[String]) -> Result<Vec<u64>, ClientError> {
    let answer = client.produce(STREAM, TOPIC, Partitioning::Partition(0), &[&batch(subjects)]).await?;
    Ok((answer.acks[0].base_offset..=answer.acks[0].last_offset).collect())
}

fn fetch_request(consumer: &str, wait: Duration) -> FetchRequest {
    FetchRequest {
        stream: STREAM.into(),
        topic: TOPIC.into(),
        partition: 0,
        consumer: consumer.into(),
        max_messages: 16,
        max_bytes: 1 << 20,
        expires_us: wait.as_micros() as u64,
        no_wait: wait.is_zero(),
    }
}

/// What the test knows, across cycles.
#[derive(Default)]
struct Model {
    /// Offsets the broker acknowledged, with their subject ("work" or "ignored").
    produced: BTreeMap<u64, bool>,
    /// Deliveries seen per offset.
    delivered: BTreeMap<u64, u32>,
    /// Acks answered with `applied == 1`, per offset, and whether that ack was synced.
    applied: BTreeMap<u64, Vec<bool>>,
    /// Offsets whose ack with `sync` was answered (applied or already).
    synced: BTreeSet<u64>,
    /// A first offset known to be durable.
    durable_first: u64,
    /// Redeliveries of a message whose effective ack was not synced (allowed).
    allowed_redeliveries: u32,
    /// Produces that failed (outcome unknown).
    unknown_produces: u32,
    /// Offsets whose ack failed (outcome unknown: it may have been applied and saved).
    unknown_acks: BTreeSet<u64>,
    violations: Vec<String>,
}

impl Model {
    fn on_delivered(&mut self, offset: u64, subject: &[u8], when: &str) {
        *self.delivered.entry(offset).or_default() += 1;
        if !subject.starts_with(b"work.") {
            self.violations.push(format!("{when}: offset {offset} ({subject:?}) does not match the filter"));
        }
        if self.synced.contains(&offset) {
            self.violations.push(format!("{when}: offset {offset} was acknowledged with sync and came back"));
        }
        if offset < self.durable_first {
            self.violations.push(format!(
                "{when}: offset {offset} is below the durable first offset {}",
                self.durable_first
            ));
        }
        if self.applied.get(&offset).is_some_and(|acks| !acks.is_empty()) {
            self.allowed_redeliveries += 1;
        }
    }
}

/// Fetches and acknowledges until `stop`, or until the broker goes away. Every other round acks
/// with sync; every fourth round ends with a barrier (topic state, then an empty sync ack).
async fn consume(client: &Client, model: &Mutex<Model>, stop: &AtomicBool, when: &str) {
    let mut round = 0_u64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let Ok(fetched) = client.fetch(&fetch_request("w", Duration::from_millis(100))).await else { return };
        for message in &fetched.messages {
            let subject = message.filter_value.as_deref().unwrap_or_default();
            model.lock().unwrap().on_delivered(message.offset, subject, when);
        }
        let sync = round % 2 == 0;
        for message in &fetched.messages {
            let answer = client.ack(STREAM, TOPIC, 0, "w", AckKind::Ack, vec![message.offset], sync).await;
            let Ok(answer) = answer else {
                model.lock().unwrap().unknown_acks.insert(message.offset);
                return;
            };
            let mut model = model.lock().unwrap();
            if answer.applied == 1 {
                model.applied.entry(message.offset).or_default().push(sync);
            }
            if sync {
                model.synced.insert(message.offset);
            }
        }
        if round % 4 == 0 {
            let Ok(state) = client.topic_state(STREAM, TOPIC).await else { return };
            if client.ack(STREAM, TOPIC, 0, "w", AckKind::Ack, Vec::new(), true).await.is_err() {
                return;
            }
            let mut model = model.lock().unwrap();
            model.durable_first = model.durable_first.max(state.partitions[0].first_offset);
        }
    }
}

/// Writes work and ignored messages until `stop` or an error.
async fn produce_loop(client: &Client, model: &Mutex<Model>, stop: &AtomicBool, seed: &mut u64) {
    while !stop.load(Ordering::Relaxed) {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let count = 1 + (*seed >> 33) % 3;
        let subjects: Vec<String> = (0..count)
            .map(|i| if (*seed >> (40 + i)) % 4 == 0 { format!("ignored.{i}") } else { format!("work.{i}") })
            .collect();
        match produce(client, &subjects).await {
            Ok(offsets) => {
                let mut model = model.lock().unwrap();
                for (offset, subject) in offsets.into_iter().zip(&subjects) {
                    model.produced.insert(offset, subject.starts_with("work."));
                }
            }
            Err(_) => {
                model.lock().unwrap().unknown_produces += 1;
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_acks_survive_kill_9_and_removed_messages_stay_removed() {
    let started = Instant::now();
    let mut broker = common::Broker::start(1, &[]);
    {
        let client = connect(&broker).await;
        create_topic(&client).await;
        let config = DurableConfig {
            filter: vec!["work.>".into()],
            ack_wait_us: 2_000_000,
            ..DurableConfig::new("w")
        };
        client.create_consumer(STREAM, TOPIC, config, false).await.expect("consumer");
        // The consumer's start must be in the ack log before the first kill.
        client.ack(STREAM, TOPIC, 0, "w", AckKind::Ack, Vec::new(), true).await.expect("barrier");
    }
    let model = Mutex::new(Model::default());
    let mut seed = 0x5eed_u64;
    for cycle in 0..CYCLES {
        let when = format!("cycle {cycle}");
        let client = connect(&broker).await;
        let state = client.topic_state(STREAM, TOPIC).await.expect("state").partitions[0].clone();
        {
            let mut model = model.lock().unwrap();
            if state.first_offset < model.durable_first {
                let durable = model.durable_first;
                model.violations.push(format!(
                    "{when}: first offset {} fell below the durable {durable}",
                    state.first_offset
                ));
            }
        }
        let stop = AtomicBool::new(false);
        let run_ms = 300 + (cycle as u64 * 137) % 500;
        let killer = async {
            tokio::time::sleep(Duration::from_millis(run_ms)).await;
            if cycle % 3 == 2 {
                // Messages nobody wants, removed in memory and killed before the periodic save.
                let ignored: Vec<String> = (0..4).map(|i| format!("ignored.burst.{i}")).collect();
                if let Ok(offsets) = produce(&client, &ignored).await {
                    let mut model = model.lock().unwrap();
                    offsets.into_iter().for_each(|o| {
                        model.produced.insert(o, false);
                    });
                }
            }
            broker.kill();
            stop.store(true, Ordering::Relaxed);
        };
        let producer = produce_loop(&client, &model, &stop, &mut seed);
        let consumer = consume(&client, &model, &stop, &when);
        tokio::time::timeout(Duration::from_secs(20), async { tokio::join!(killer, producer, consumer) })
            .await
            .expect("a cycle ended");
        drop(client);
        broker.start_again_retrying(RESTART_TIMEOUT, "error");
    }

    // Drain without crashes: everything left is delivered, acked with sync, and removed.
    let client = connect(&broker).await;
    let drain_deadline = Instant::now() + Duration::from_secs(15);
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_millis(2500) {
        assert!(Instant::now() < drain_deadline, "the drain did not finish");
        let fetched = client.fetch(&fetch_request("w", Duration::from_millis(200))).await.expect("fetch");
        if !fetched.messages.is_empty() {
            quiet_since = Instant::now();
        }
        for message in &fetched.messages {
            let subject = message.filter_value.as_deref().unwrap_or_default();
            model.lock().unwrap().on_delivered(message.offset, subject, "drain");
            let answer = client
                .ack(STREAM, TOPIC, 0, "w", AckKind::Ack, vec![message.offset], true)
                .await
                .expect("ack");
            let mut model = model.lock().unwrap();
            if answer.applied == 1 {
                model.applied.entry(message.offset).or_default().push(true);
            }
            model.synced.insert(message.offset);
        }
    }
    let model = model.into_inner().unwrap();
    let work: Vec<u64> = model.produced.iter().filter(|(_, work)| **work).map(|(o, _)| *o).collect();
    let never_delivered: Vec<u64> =
        work.iter().copied().filter(|o| !model.delivered.contains_key(o)).collect();
    let mut problems = model.violations.clone();
    if !never_delivered.is_empty() {
        problems.push(format!("acknowledged by the broker, never delivered: {never_delivered:?}"));
    }
    for (offset, acks) in &model.applied {
        // An effective ack after an effective synced ack means a synced ack was lost.
        if acks.len() > 1 && acks[..acks.len() - 1].iter().any(|synced| *synced) {
            problems.push(format!("offset {offset}: acknowledged with effect {acks:?}"));
        }
    }
    // An ack whose answer was lost may have taken effect: then it is rightly never redelivered.
    let not_acked: Vec<u64> = work
        .iter()
        .copied()
        .filter(|o| !model.applied.contains_key(o) && !model.unknown_acks.contains(o))
        .collect();
    if !not_acked.is_empty() {
        problems.push(format!("never acknowledged with effect: {not_acked:?}"));
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    let state = loop {
        let state = client.topic_state(STREAM, TOPIC).await.expect("state").partitions[0].clone();
        if state.messages == 0 || Instant::now() > deadline {
            break state;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    if state.messages != 0 {
        problems
            .push(format!("everything is acknowledged, yet {} messages are live: {state:?}", state.messages));
    }
    if (state.first_offset as i64) < state.last_offset + 1 {
        problems.push(format!("empty topic with first {} ≠ last + 1: {state:?}", state.first_offset));
    }
    eprintln!(
        "{CYCLES} cycles in {:?}: {} produced ({} work), {} delivered, {} synced, {} allowed redeliveries, {} produces and {} acks with unknown outcome",
        started.elapsed(),
        model.produced.len(),
        work.len(),
        model.delivered.values().sum::<u32>(),
        model.synced.len(),
        model.allowed_redeliveries,
        model.unknown_produces,
        model.unknown_acks.len(),
    );
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
    assert!(work.len() > 100, "too little traffic to mean anything: {}", work.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_created_just_before_a_kill_keeps_its_interest() {
    let mut broker = common::Broker::start(1, &[]);
    let client = connect(&broker).await;
    create_topic(&client).await;
    drop(client);
    for round in 0..3 {
        let client = connect(&broker).await;
        let name = format!("c{round}");
        let config = DurableConfig { filter: vec!["work.>".into()], ..DurableConfig::new(name.as_str()) };
        client.create_consumer(STREAM, TOPIC, config, false).await.expect("consumer");
        let subjects: Vec<String> = ["work.a", "ignored.b", "work.c"].iter().map(|s| s.to_string()).collect();
        let offsets = produce(&client, &subjects).await.expect("produce");
        // Killed at once: before the 50 ms save of the ack state.
        broker.kill();
        drop(client);
        broker.start_again_retrying(RESTART_TIMEOUT, "error");
        let client = connect(&broker).await;
        let fetched = client.fetch(&fetch_request(&name, Duration::ZERO)).await.expect("fetch");
        let got: Vec<u64> = fetched.messages.iter().map(|m| m.offset).collect();
        assert_eq!(got, vec![offsets[0], offsets[2]], "round {round}: the new consumer's messages");
        for offset in got {
            client.ack(STREAM, TOPIC, 0, &name, AckKind::Ack, vec![offset], true).await.expect("ack");
        }
        // Every consumer of earlier rounds was created before these messages and wants them too.
        for earlier in 0..round {
            let earlier = format!("c{earlier}");
            let fetched = client.fetch(&fetch_request(&earlier, Duration::ZERO)).await.expect("fetch");
            let got: Vec<u64> = fetched.messages.iter().map(|m| m.offset).collect();
            assert_eq!(got, vec![offsets[0], offsets[2]], "round {round}: consumer {earlier}");
            client.ack(STREAM, TOPIC, 0, &earlier, AckKind::Ack, got, true).await.expect("ack");
        }
        let state = client.topic_state(STREAM, TOPIC).await.expect("state").partitions[0].clone();
        assert_eq!(state.messages, 0, "round {round}: all acknowledged, the ignored one removed: {state:?}");
    }
}
