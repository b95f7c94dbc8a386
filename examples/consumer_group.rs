//! A consumer group of two members sharing a topic of four partitions.
//!
//! Both members join the group `workers` before anything is produced; the broker splits the
//! four partitions between them, and each member shows its share (`consumer.assignment()`).
//! Then 100 messages are produced and both members consume at the same time. Each prints how
//! many messages it got; together they must have every message exactly once. The stream is
//! deleted at the end.
//!
//! Run against a local broker: `cargo run --example consumer_group`
//! (`RINGBROKER_URL` overrides the default `ringbroker://ringbroker:ringbroker@127.0.0.1:7720`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ringbroker::client::{Client, Consumer, Producer, ProducerMessage, ReceivedMessage, ShardRouter};
use ringbroker::protocol::messages::Status;
use tokio::time::Instant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const DEFAULT_URL: &str = "ringbroker://ringbroker:ringbroker@127.0.0.1:7720";
const STREAM: &str = "example-group";
const TOPIC: &str = "tasks";
const GROUP: &str = "workers";
const PARTITIONS: u32 = 4;
const MESSAGES: usize = 100;
/// A short session, so members heartbeat (and see a rebalance) every second.
const SESSION_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the members' views of the assignment may take to settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the members may take to consume everything.
const CONSUME_TIMEOUT: Duration = Duration::from_secs(8);
/// After the last message, how long the members keep polling to catch any duplicate.
const LINGER: Duration = Duration::from_millis(300);

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let url = std::env::var("RINGBROKER_URL").unwrap_or_else(|_| DEFAULT_URL.to_string());
    let client = Client::connect(&url.parse()?).await?;
    // Start clean, in case an earlier run was interrupted.
    delete_if_exists(&client, STREAM).await?;

    let outcome = demo(&client).await;

    println!("deleting stream {STREAM}");
    delete_if_exists(&client, STREAM).await?;
    outcome?;
    println!("ok: the group consumed all {MESSAGES} messages, each exactly once");
    Ok(())
}

async fn demo(client: &Client) -> Result<(), BoxError> {
    let router = ShardRouter::new(client.clone()).await?;
    // The producer creates the topic; the group needs it to exist before members join.
    let producer = Producer::builder(&router, STREAM, TOPIC).create_if_missing(PARTITIONS).build().await?;

    let first = join(&router).await?;
    println!(
        "member a joined (id {}): holds {:?}",
        first.member_id().unwrap_or_default(),
        first.assignment().unwrap_or_default()
    );
    let second = join(&router).await?;
    println!(
        "member b joined (id {}): holds {:?}",
        second.member_id().unwrap_or_default(),
        second.assignment().unwrap_or_default()
    );
    // Member a learns of the rebalance at its next heartbeat.
    let (a, b) = settled_assignment(&first, &second).await?;
    println!("assignment settled: member a holds {a:?}, member b holds {b:?}");

    println!("producing {MESSAGES} messages over {PARTITIONS} partitions");
    let messages = (0..MESSAGES).map(|i| ProducerMessage::from(format!("task {i}"))).collect();
    producer.send(messages).await?;
    producer.shutdown().await?;

    // Both members consume at once until everything has arrived (plus a short linger).
    let total = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let member_a = tokio::spawn(consume("a", first, total.clone(), stop.clone()));
    let member_b = tokio::spawn(consume("b", second, total.clone(), stop.clone()));
    let deadline = Instant::now() + CONSUME_TIMEOUT;
    while total.load(Ordering::SeqCst) < MESSAGES && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(LINGER).await;
    stop.store(true, Ordering::SeqCst);
    let (first, got_a) = member_a.await??;
    let (second, got_b) = member_b.await??;
    first.shutdown().await?;
    second.shutdown().await?;

    for (name, got, held) in [("a", &got_a, &a), ("b", &got_b, &b)] {
        let mut per_partition: BTreeMap<u32, usize> = BTreeMap::new();
        for message in got {
            *per_partition.entry(message.partition).or_default() += 1;
        }
        println!("member {name}: {} messages (per partition {per_partition:?})", got.len());
        if let Some(stray) = per_partition.keys().find(|partition| !held.contains(partition)) {
            return Err(format!("member {name} read partition {stray}, which it does not hold").into());
        }
    }
    check_exactly_once(got_a.iter().chain(&got_b))
}

/// A new member of the group.
async fn join(router: &ShardRouter) -> Result<Consumer, BoxError> {
    let member = Consumer::builder(router, STREAM, TOPIC)
        .group(GROUP)
        .session_timeout(SESSION_TIMEOUT)
        .polling_interval(Duration::from_millis(50))
        .build()
        .await?;
    Ok(member)
}

/// Waits until the two members' assignments split the partitions between them.
async fn settled_assignment(a: &Consumer, b: &Consumer) -> Result<(Vec<u32>, Vec<u32>), BoxError> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let held_a = a.assignment().unwrap_or_default();
        let held_b = b.assignment().unwrap_or_default();
        let mut all: Vec<u32> = held_a.iter().chain(&held_b).copied().collect();
        all.sort_unstable();
        if all == (0..PARTITIONS).collect::<Vec<u32>>() {
            return Ok((held_a, held_b));
        }
        if Instant::now() >= deadline {
            return Err(format!("the assignment did not settle: a {held_a:?}, b {held_b:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One member's loop: reads with `next()` until told to stop; gives back the member and what it
/// read.
async fn consume(
    name: &'static str,
    mut member: Consumer,
    total: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> Result<(Consumer, Vec<ReceivedMessage>), BoxError> {
    let mut got = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        // A short wait so the stop flag is seen; an unfinished poll carries on at the next call.
        let Ok(next) = tokio::time::timeout(Duration::from_millis(100), member.next()).await else {
            continue;
        };
        let message = next.ok_or("the consumer stream ended")??;
        if got.is_empty() {
            println!(
                "  member {name}: first message at partition {} offset {}",
                message.partition, message.offset
            );
        }
        got.push(message);
        total.fetch_add(1, Ordering::SeqCst);
    }
    Ok((member, got))
}

/// Every message `task 0` .. `task 99` arrived once, and no (partition, offset) came twice.
fn check_exactly_once<'a>(messages: impl Iterator<Item = &'a ReceivedMessage>) -> Result<(), BoxError> {
    let mut per_task: BTreeMap<String, usize> = BTreeMap::new();
    let mut positions = BTreeSet::new();
    for message in messages {
        if !positions.insert((message.partition, message.offset)) {
            return Err(
                format!("partition {} offset {} arrived twice", message.partition, message.offset).into()
            );
        }
        *per_task.entry(String::from_utf8_lossy(&message.payload).into_owned()).or_default() += 1;
    }
    let missing: Vec<usize> =
        (0..MESSAGES).filter(|i| !per_task.contains_key(&format!("task {i}"))).collect();
    if !missing.is_empty() || per_task.len() != MESSAGES || per_task.values().any(|&count| count != 1) {
        return Err(format!(
            "not exactly once: {} distinct of {MESSAGES}, missing {missing:?}",
            per_task.len()
        )
        .into());
    }
    Ok(())
}

/// Deletes a stream; a stream that is not there is fine.
async fn delete_if_exists(client: &Client, stream: &str) -> Result<(), BoxError> {
    match client.delete_stream(stream).await {
        Err(error) if error.status() != Some(Status::UnknownStream) => Err(error.into()),
        _ => Ok(()),
    }
}
