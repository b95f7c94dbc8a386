//! Producers added at runtime while a consumer runs.
//!
//! A consumer (which creates `example-runtime-producers` itself with `create_if_missing`) runs
//! `consume_messages` on a task, committing after each handled message
//! (`AutoCommit::AfterHandler`). Then three producers are started one after another; each sends a
//! few messages tagged with a `producer` header and shuts down. The consumer must receive every
//! message of every producer. The stream is deleted at the end.
//!
//! Run against a local broker: `cargo run --example producers_at_runtime`
//! (`RINGBROKER_URL` overrides the default `ringbroker://ringbroker:ringbroker@127.0.0.1:7720`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringbroker::client::{
    AutoCommit, Client, Consumer, HandlerError, MessageConsumer, Producer, ProducerMessage, ReceivedMessage,
};
use ringbroker::protocol::messages::Status;
use tokio::sync::{oneshot, Notify};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const DEFAULT_URL: &str = "ringbroker://ringbroker:ringbroker@127.0.0.1:7720";
const STREAM: &str = "example-runtime-producers";
const TOPIC: &str = "events";
const PRODUCERS: usize = 3;
const MESSAGES_EACH: usize = 5;
/// How long to wait, after the last producer, for the consumer to see everything.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Counts messages per `producer` header; wakes `all_in` once `expected` have arrived.
struct Tally {
    per_producer: Mutex<BTreeMap<String, usize>>,
    all_in: Notify,
    expected: usize,
}

/// The handler: shares the tally with `demo`, which waits on it.
struct Collector(Arc<Tally>);

impl MessageConsumer for Collector {
    async fn consume(&self, message: ReceivedMessage) -> Result<(), HandlerError> {
        let producer = message
            .headers
            .iter()
            .find(|(key, _)| key.as_ref() == b"producer")
            .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
            .ok_or("a message without a producer header")?;
        println!(
            "  consumer: partition {} offset {} from {producer}: {}",
            message.partition,
            message.offset,
            String::from_utf8_lossy(&message.payload)
        );
        let total = {
            let mut per_producer = self.0.per_producer.lock().expect("tally lock");
            *per_producer.entry(producer).or_default() += 1;
            per_producer.values().sum::<usize>()
        };
        if total == self.0.expected {
            self.0.all_in.notify_one();
        }
        Ok(())
    }
}

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
    println!("ok: the consumer received every message of all {PRODUCERS} producers");
    Ok(())
}

async fn demo(client: &Client) -> Result<(), BoxError> {
    let mut consumer = Consumer::builder(client, STREAM, TOPIC)
        .consumer_name("collector")
        .create_if_missing(2)
        .auto_commit(AutoCommit::AfterHandler)
        .polling_interval(Duration::from_millis(50))
        .build()
        .await?;
    println!("consumer: running on {STREAM}/{TOPIC}");
    let tally = Arc::new(Tally {
        per_producer: Mutex::new(BTreeMap::new()),
        all_in: Notify::new(),
        expected: PRODUCERS * MESSAGES_EACH,
    });
    let handler = Collector(tally.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let consuming = tokio::spawn(async move {
        let outcome = consumer
            .consume_messages(&handler, async {
                let _ = stopped.await;
            })
            .await;
        consumer.shutdown().await?;
        outcome?;
        Ok::<(), BoxError>(())
    });

    // Producers come and go while the consumer keeps running.
    for n in 1..=PRODUCERS {
        let name = format!("producer-{n}");
        let producer = Producer::builder(client, STREAM, TOPIC).build().await?;
        println!("{name}: started, sending {MESSAGES_EACH} messages");
        for i in 0..MESSAGES_EACH {
            let message = ProducerMessage::from(format!("message {i}")).with_header("producer", name.clone());
            producer.send_one(message).await?;
        }
        producer.shutdown().await?;
        println!("{name}: shut down");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let all_in = tokio::time::timeout(RECEIVE_TIMEOUT, tally.all_in.notified()).await.is_ok();
    let _ = stop.send(());
    consuming.await??;

    let per_producer = tally.per_producer.lock().expect("tally lock").clone();
    println!("received per producer: {per_producer:?}");
    let complete =
        per_producer.len() == PRODUCERS && per_producer.values().all(|&count| count == MESSAGES_EACH);
    if !all_in || !complete {
        return Err(format!("expected {MESSAGES_EACH} messages from each of {PRODUCERS} producers").into());
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
