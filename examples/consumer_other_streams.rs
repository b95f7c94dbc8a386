//! One consumer per stream: three streams, each with its own topic, filled first by a producer;
//! then one consumer per stream reads its own stream as a `futures::Stream`
//! (`consumer.next().await`), all three at the same time.
//!
//! One `ShardRouter` is shared by every producer and consumer, so the shard map and the direct
//! connections to the shards are opened once. The streams are deleted at the end.
//!
//! Run against a local broker: `cargo run --example consumer_other_streams`
//! (`RINGBROKER_URL` overrides the default `ringbroker://ringbroker:ringbroker@127.0.0.1:7720`).

use std::time::Duration;

use futures::StreamExt;
use ringbroker::client::consumer::PollStrategy;
use ringbroker::client::{Client, Consumer, ProducerMessage, RingStream, ShardRouter, StreamConfig};
use ringbroker::protocol::messages::Status;
use tokio::time::Instant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const DEFAULT_URL: &str = "ringbroker://ringbroker:ringbroker@127.0.0.1:7720";
/// (stream, topic, partitions, messages to produce)
const STREAMS: [(&str, &str, u32, usize); 3] = [
    ("example-consume-orders", "created", 3, 12),
    ("example-consume-payments", "settled", 2, 8),
    ("example-consume-audit", "events", 1, 5),
];
/// How long each consumer may take to read its stream.
const READ_TIMEOUT: Duration = Duration::from_secs(8);

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let url = std::env::var("RINGBROKER_URL").unwrap_or_else(|_| DEFAULT_URL.to_string());
    let client = Client::connect(&url.parse()?).await?;
    // Start clean, in case an earlier run was interrupted.
    for (stream, ..) in STREAMS {
        delete_if_exists(&client, stream).await?;
    }

    let outcome = demo(&client).await;

    for (stream, ..) in STREAMS {
        println!("deleting stream {stream}");
        delete_if_exists(&client, stream).await?;
    }
    outcome?;
    println!("ok: every consumer read exactly its own stream");
    Ok(())
}

async fn demo(client: &Client) -> Result<(), BoxError> {
    let router = ShardRouter::new(client.clone()).await?;
    let configs: Vec<StreamConfig> = STREAMS
        .iter()
        .map(|&(stream, topic, partitions, _)| {
            StreamConfig::new(stream, topic)
                .partitions(partitions)
                .consumer_name("reader")
                .polling_strategy(PollStrategy::First)
                .polling_interval(Duration::from_millis(50))
        })
        .collect();

    // Produce first: one producer per stream (each creates its stream and topic).
    for (config, &(_, _, _, count)) in configs.iter().zip(&STREAMS) {
        let producer = RingStream::producer(&router, config).await?;
        let messages = (0..count)
            .map(|i| ProducerMessage::from(format!("{}/{} #{i}", config.stream, config.topic)))
            .collect();
        producer.send(messages).await?;
        // `shutdown` flushes: everything sent is acknowledged when it returns.
        producer.shutdown().await?;
        println!("produced {count} messages to {}/{}", config.stream, config.topic);
    }

    // Then one consumer per stream, each on its own task.
    let mut readers = Vec::new();
    for (config, &(_, _, _, count)) in configs.iter().zip(&STREAMS) {
        let consumer = RingStream::consumer(&router, config).await?;
        readers.push(tokio::spawn(read_all(consumer, count)));
    }
    for reader in readers {
        reader.await??;
    }
    Ok(())
}

/// Reads `expected` messages from the consumer's stream with `next().await` and checks that each
/// belongs to it.
async fn read_all(mut consumer: Consumer, expected: usize) -> Result<(), BoxError> {
    let name = format!("{}/{}", consumer.stream(), consumer.topic());
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut read = 0;
    while read < expected {
        let next = tokio::time::timeout_at(deadline, consumer.next()).await;
        let Ok(Some(message)) = next else {
            return Err(format!("{name}: read {read} of {expected} messages before the timeout").into());
        };
        let message = message?;
        let payload = String::from_utf8_lossy(&message.payload);
        if !payload.starts_with(&name) {
            return Err(format!("{name}: got a message of another stream: {payload}").into());
        }
        println!("  [{name}] partition {} offset {}: {payload}", message.partition, message.offset);
        read += 1;
    }
    consumer.shutdown().await?;
    println!("{name}: read all {read} messages");
    Ok(())
}

/// Deletes a stream; a stream that is not there is fine.
async fn delete_if_exists(client: &Client, stream: &str) -> Result<(), BoxError> {
    match client.delete_stream(stream).await {
        Err(error) if error.status() != Some(Status::UnknownStream) => Err(error.into()),
        _ => Ok(()),
    }
}
