//! Consumers added at runtime, including one that starts before its stream exists.
//!
//! 1. The "early" consumer is built with `init_retries` while `example-runtime-consumers` does
//!    not exist yet: its `build()` keeps retrying.
//! 2. A producer built with `create_if_missing` creates the stream and topic and sends; the
//!    waiting consumer's `build()` now succeeds and it reads every message.
//! 3. A "late" consumer is added afterwards with `PollStrategy::First`: it reads the same
//!    messages again from the beginning of each partition (it has a name of its own, so its
//!    offsets are its own).
//!
//! The stream is deleted at the end.
//!
//! Run against a local broker: `cargo run --example consumers_at_runtime`
//! (`RINGBROKER_URL` overrides the default `ringbroker://ringbroker:ringbroker@127.0.0.1:7720`).

use std::time::Duration;

use futures::StreamExt;
use ringbroker::client::consumer::PollStrategy;
use ringbroker::client::{Client, Consumer, Producer, ProducerMessage};
use ringbroker::protocol::messages::Status;
use tokio::time::Instant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const DEFAULT_URL: &str = "ringbroker://ringbroker:ringbroker@127.0.0.1:7720";
const STREAM: &str = "example-runtime-consumers";
const TOPIC: &str = "jobs";
const PARTITIONS: u32 = 2;
const MESSAGES: usize = 10;
/// The early consumer retries this often while the topic is missing...
const INIT_INTERVAL: Duration = Duration::from_millis(250);
/// ...at most this many times (10 s in all).
const INIT_RETRIES: u32 = 40;
/// How long a consumer may take to read every message.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let url = std::env::var("RINGBROKER_URL").unwrap_or_else(|_| DEFAULT_URL.to_string());
    let client = Client::connect(&url.parse()?).await?;
    // The point is to start without the stream, so remove one an interrupted run left behind.
    delete_if_exists(&client, STREAM).await?;

    let outcome = demo(&client).await;

    println!("deleting stream {STREAM}");
    delete_if_exists(&client, STREAM).await?;
    outcome?;
    println!("ok: both consumers read all {MESSAGES} messages");
    Ok(())
}

async fn demo(client: &Client) -> Result<(), BoxError> {
    println!("early consumer: starting before {STREAM} exists (retrying every {INIT_INTERVAL:?})");
    let early_client = client.clone();
    let early = tokio::spawn(async move {
        let started = Instant::now();
        let mut consumer = Consumer::builder(&early_client, STREAM, TOPIC)
            .consumer_name("early")
            .init_retries(INIT_RETRIES, INIT_INTERVAL)
            .polling_interval(Duration::from_millis(50))
            .build()
            .await?;
        println!("early consumer: {STREAM}/{TOPIC} found after {:?}; reading", started.elapsed());
        let read = read_messages(&mut consumer, "early", MESSAGES).await;
        consumer.shutdown().await?;
        read
    });

    // Give the early consumer time to find nothing a few times.
    tokio::time::sleep(Duration::from_secs(1)).await;
    if early.is_finished() {
        return Err(early.await?.err().unwrap_or_else(|| "the early consumer finished too soon".into()));
    }

    println!(
        "producer: creating {STREAM}/{TOPIC} with {PARTITIONS} partitions and sending {MESSAGES} messages"
    );
    let producer = Producer::builder(client, STREAM, TOPIC).create_if_missing(PARTITIONS).build().await?;
    let messages = (0..MESSAGES).map(|i| ProducerMessage::from(format!("job {i}"))).collect();
    producer.send(messages).await?;
    producer.shutdown().await?;

    early.await??;

    println!("late consumer: joining now, reading from the first offset");
    let mut late = Consumer::builder(client, STREAM, TOPIC)
        .consumer_name("late")
        .polling_strategy(PollStrategy::First)
        .polling_interval(Duration::from_millis(50))
        .build()
        .await?;
    let read = read_messages(&mut late, "late", MESSAGES).await;
    late.shutdown().await?;
    read
}

/// Reads `expected` messages with `next().await`, printing each; fails after [`READ_TIMEOUT`].
async fn read_messages(consumer: &mut Consumer, name: &str, expected: usize) -> Result<(), BoxError> {
    let deadline = Instant::now() + READ_TIMEOUT;
    for read in 0..expected {
        let Ok(Some(message)) = tokio::time::timeout_at(deadline, consumer.next()).await else {
            return Err(
                format!("{name} consumer: read {read} of {expected} messages before the timeout").into()
            );
        };
        let message = message?;
        println!(
            "  {name}: partition {} offset {}: {}",
            message.partition,
            message.offset,
            String::from_utf8_lossy(&message.payload)
        );
    }
    println!("{name} consumer: read all {expected} messages");
    Ok(())
}

/// Deletes a stream; a stream that is not there is fine.
async fn delete_if_exists(client: &Client, stream: &str) -> Result<(), BoxError> {
    match client.delete_stream(stream).await {
        Err(error) if error.status() != Some(Status::UnknownStream) => Err(error.into()),
        _ => Ok(()),
    }
}
