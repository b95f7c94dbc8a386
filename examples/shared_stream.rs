//! One stream and topic shared by a producer and a consumer, both made by one call to
//! `RingStream::with_client_from_url`.
//!
//! The consumer runs `consume_messages` with a `MessageConsumer` handler on a tokio task; the
//! producer sends a few messages; the example stops once the handler has seen all of them (or
//! after a timeout), then deletes its stream.
//!
//! Run against a local broker: `cargo run --example shared_stream`
//! (`RINGBROKER_URL` overrides the default `ringbroker://ringbroker:ringbroker@127.0.0.1:7720`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ringbroker::client::{
    Consumer, HandlerError, MessageConsumer, Producer, ProducerMessage, ReceivedMessage, RingStream,
    StreamConfig,
};
use tokio::sync::{oneshot, Notify};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const DEFAULT_URL: &str = "ringbroker://ringbroker:ringbroker@127.0.0.1:7720";
const STREAM: &str = "example-shared";
const TOPIC: &str = "greetings";
const MESSAGES: usize = 12;
/// How long to wait for the consumer to see every message.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(8);

/// Prints every message and counts them; wakes `all_in` when `expected` have arrived.
struct PrintingHandler {
    received: Arc<AtomicUsize>,
    all_in: Arc<Notify>,
    expected: usize,
}

impl MessageConsumer for PrintingHandler {
    async fn consume(&self, message: ReceivedMessage) -> Result<(), HandlerError> {
        println!(
            "  handler: partition {} offset {}: {}",
            message.partition,
            message.offset,
            String::from_utf8_lossy(&message.payload)
        );
        if self.received.fetch_add(1, Ordering::SeqCst) + 1 == self.expected {
            self.all_in.notify_one();
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let url = std::env::var("RINGBROKER_URL").unwrap_or_else(|_| DEFAULT_URL.to_string());
    // Two partitions, a named consumer, and a short polling interval so the demo is snappy.
    let config = StreamConfig::new(STREAM, TOPIC)
        .partitions(2)
        .consumer_name("printer")
        .polling_interval(Duration::from_millis(50));

    println!("connecting and creating {STREAM}/{TOPIC} if missing");
    let (client, producer, consumer) = RingStream::with_client_from_url(&url, &config).await?;

    // Whatever happens in the demo, the stream goes at the end.
    let outcome = demo(producer, consumer).await;
    println!("deleting stream {STREAM}");
    client.delete_stream(STREAM).await?;
    let count = outcome?;
    println!("ok: the consumer received all {count} messages");
    Ok(())
}

/// Consumes on a task while producing; returns how many messages the handler saw.
async fn demo(producer: Producer, mut consumer: Consumer) -> Result<usize, BoxError> {
    // The consumer runs on its own task until the shutdown signal fires.
    let received = Arc::new(AtomicUsize::new(0));
    let all_in = Arc::new(Notify::new());
    let handler = PrintingHandler { received: received.clone(), all_in: all_in.clone(), expected: MESSAGES };
    let (stop, stopped) = oneshot::channel::<()>();
    let consuming = tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        let outcome = consumer.consume_messages(&handler, shutdown).await;
        // Commits per the auto-commit mode and releases the consumer.
        let closed = consumer.shutdown().await;
        outcome?;
        closed?;
        Ok::<(), BoxError>(())
    });

    // One at a time, and a few in one call.
    println!("sending {MESSAGES} messages");
    for i in 0..MESSAGES / 2 {
        producer.send_one(format!("hello #{i}")).await?;
    }
    let rest = (MESSAGES / 2..MESSAGES).map(|i| ProducerMessage::from(format!("hello #{i}"))).collect();
    producer.send(rest).await?;
    // Background mode: `flush` returns once the broker acknowledged everything sent so far.
    producer.flush().await?;

    let all_received = tokio::time::timeout(RECEIVE_TIMEOUT, all_in.notified()).await.is_ok();
    let _ = stop.send(());
    let consumed = consuming.await?;
    producer.shutdown().await?;
    consumed?;

    let count = received.load(Ordering::SeqCst);
    if !all_received || count != MESSAGES {
        return Err(format!("received {count} of {MESSAGES} messages").into());
    }
    Ok(count)
}
