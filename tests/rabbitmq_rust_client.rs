//! The official Rust RabbitMQ Streams client (`rabbitmq-stream-client`, tokio) against the
//! RabbitMQ listener: publish with confirms (every confirmation arrives, once), consume from the
//! first offset and from an offset, named-producer deduplication across producer restarts, and
//! a super stream producer and consumer. Every wait is bounded by a tokio timeout.
//!
//! Runs against a ringbroker started per test; `RMQ_EXTERNAL=host:port` (see
//! `common/rabbitmq.rs`) points it at a running server instead (`RMQ_SKIP=superstream` for one
//! that cannot create super streams). The client (0.11) needs RabbitMQ 3.13 or later: it opens
//! every connection with ExchangeCommandVersions, which RabbitMQ 3.10 closes as an unknown
//! command, so these tests run against ringbroker only here.

mod common;
#[path = "common/rabbitmq.rs"]
mod rabbitmq;

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use rabbitmq::Server;
use rabbitmq_stream_client::error::ProducerPublishError;
use rabbitmq_stream_client::types::{
    HashRoutingMurmurStrategy, Message, OffsetSpecification, RoutingStrategy,
};
use rabbitmq_stream_client::{ConfirmationStatus, Consumer, Environment};
use tokio::sync::mpsc;

/// Bound of one wait for confirmations or deliveries.
const WAIT: Duration = Duration::from_secs(10);
/// How long a test watches for deliveries that must not come.
const QUIET: Duration = Duration::from_millis(500);
/// Whole-test bound.
const TEST_TIMEOUT: Duration = Duration::from_secs(90);

/// Runs `body` on a fresh two-thread runtime, bounded by [`TEST_TIMEOUT`].
fn run(body: impl Future<Output = ()>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        tokio::time::timeout(TEST_TIMEOUT, body).await.expect("the test did not finish in time");
    });
}

/// `future` within [`WAIT`], or a panic naming `what`.
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future).await.unwrap_or_else(|_| panic!("timed out after {WAIT:?}: {what}"))
}

async fn environment(server: &Server) -> Environment {
    let build = Environment::builder()
        .host(&server.host)
        .port(server.port)
        .username(&server.user)
        .password(&server.password)
        .build();
    within("connecting the environment", build).await.expect("environment")
}

fn message(body: &str) -> Message {
    Message::builder().body(body.as_bytes().to_vec()).build()
}

fn numbered(body: &str, publishing_id: u64) -> Message {
    Message::builder().body(body.as_bytes().to_vec()).publishing_id(publishing_id).build()
}

fn bodies(tag: &str, range: std::ops::Range<u64>) -> Vec<String> {
    range.map(|i| format!("{tag}-{i}")).collect()
}

fn body_of(message: &Message) -> String {
    String::from_utf8_lossy(message.data().unwrap_or_default()).into_owned()
}

/// Checks that `statuses` confirm exactly `ids`, each once.
fn assert_confirmed(statuses: &[ConfirmationStatus], ids: impl IntoIterator<Item = u64>) {
    let unconfirmed: Vec<u64> =
        statuses.iter().filter(|s| !s.confirmed()).map(|s| s.publishing_id()).collect();
    assert!(unconfirmed.is_empty(), "not confirmed: {unconfirmed:?}");
    let mut got: Vec<u64> = statuses.iter().map(|s| s.publishing_id()).collect();
    got.sort_unstable();
    assert_eq!(got, ids.into_iter().collect::<Vec<u64>>(), "confirmed publishing ids");
}

/// Publishes `texts` with `batch_send_with_confirm` on an unnamed producer; checks them confirmed.
async fn publish(environment: &Environment, stream: &str, texts: &[String]) {
    let producer = within("producer", environment.producer().build(stream)).await.expect("producer");
    let messages = texts.iter().map(|text| message(text)).collect();
    let statuses =
        within("confirmations", producer.batch_send_with_confirm(messages)).await.expect("publish");
    assert_eq!(statuses.len(), texts.len());
    assert!(statuses.iter().all(ConfirmationStatus::confirmed), "a message was not confirmed");
    within("producer close", producer.close()).await.expect("close producer");
}

/// Reads exactly `count` deliveries as (offset, body): fails on fewer within the wait, or on
/// another one within a moment after.
async fn take(consumer: &mut Consumer, count: usize) -> Vec<(u64, String)> {
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let delivery = within("a delivery", consumer.next()).await.expect("the consumer ended");
        let delivery = delivery.expect("delivery");
        out.push((delivery.offset(), body_of(delivery.message())));
    }
    if let Ok(extra) = tokio::time::timeout(QUIET, consumer.next()).await {
        panic!("a delivery beyond the {count} expected: {:?}", extra.map(|d| d.map(|d| d.offset())));
    }
    out
}

async fn consume(
    environment: &Environment,
    stream: &str,
    from: OffsetSpecification,
    count: usize,
) -> Vec<(u64, String)> {
    let mut consumer =
        within("consumer", environment.consumer().offset(from).build(stream)).await.expect("consumer");
    let got = take(&mut consumer, count).await;
    within("consumer close", consumer.handle().close()).await.expect("close consumer");
    got
}

#[test]
fn publish_with_confirms() {
    let server = rabbitmq::server(2, &[]);
    run(async {
        let environment = environment(&server).await;
        within("create", environment.stream_creator().create("rust-confirms")).await.expect("create stream");
        let producer =
            within("producer", environment.producer().build("rust-confirms")).await.expect("producer");

        // batch_send_with_confirm: an unnamed producer numbers from 0.
        let batch = bodies("batch", 0..100).iter().map(|text| message(text)).collect();
        let statuses =
            within("batch confirmations", producer.batch_send_with_confirm(batch)).await.expect("publish");
        assert_confirmed(&statuses, 0..100);

        // send with a callback per message: every callback runs once, confirmed.
        let (sender, mut receiver) = mpsc::unbounded_channel();
        for text in bodies("send", 100..150) {
            let sender = sender.clone();
            let callback = move |status: Result<ConfirmationStatus, ProducerPublishError>| {
                let sender = sender.clone();
                async move {
                    let _ = sender.send(status);
                }
            };
            within("send", producer.send(message(&text), callback)).await.expect("send");
        }
        let mut statuses = Vec::new();
        while statuses.len() < 50 {
            let status = within("a send confirmation", receiver.recv()).await.expect("callbacks dropped");
            statuses.push(status.expect("confirmation"));
        }
        assert!(tokio::time::timeout(QUIET, receiver.recv()).await.is_err(), "a callback ran twice");
        assert_confirmed(&statuses, 100..150);

        // send_with_confirm: one message, one confirmation.
        let status = within("send_with_confirm", producer.send_with_confirm(message("single"))).await;
        assert_confirmed(&[status.expect("send_with_confirm")], [150]);
        within("producer close", producer.close()).await.expect("close producer");

        let expected: Vec<String> =
            [bodies("batch", 0..100), bodies("send", 100..150), vec!["single".into()]].concat();
        let got = consume(&environment, "rust-confirms", OffsetSpecification::First, expected.len()).await;
        assert_eq!(got.into_iter().map(|(_, body)| body).collect::<Vec<_>>(), expected);
    });
}

#[test]
fn consume_from_first_and_from_an_offset() {
    let server = rabbitmq::server(2, &[]);
    run(async {
        let environment = environment(&server).await;
        within("create", environment.stream_creator().create("rust-consume")).await.expect("create stream");
        let texts = bodies("consume", 0..50);
        publish(&environment, "rust-consume", &texts[..30]).await;
        publish(&environment, "rust-consume", &texts[30..]).await;

        let got = consume(&environment, "rust-consume", OffsetSpecification::First, 50).await;
        let expected: Vec<(u64, String)> = (0..).zip(texts.iter().cloned()).collect();
        assert_eq!(got, expected);

        // From offset 25, inside the first batch.
        let got = consume(&environment, "rust-consume", OffsetSpecification::Offset(25), 25).await;
        assert_eq!(got, expected[25..].to_vec());
    });
}

#[test]
fn named_producer_dedup_across_restarts() {
    let server = rabbitmq::server(2, &[]);
    run(async {
        let environment = environment(&server).await;
        within("create", environment.stream_creator().create("rust-dedup")).await.expect("create stream");
        let texts = bodies("dedup", 0..18);
        let named = || environment.producer().name("rust-dedup-producer");

        // First run: ids 0-9.
        let mut producer = within("producer", named().build("rust-dedup")).await.expect("producer");
        let messages = (0..10).map(|i| numbered(&texts[i as usize], i)).collect();
        let statuses =
            within("confirmations", producer.batch_send_with_confirm(messages)).await.expect("publish");
        assert_confirmed(&statuses, 0..10);
        within("close", producer.close()).await.expect("close");

        // Restart: 5-9 again (already stored) and 10-14 new; all confirmed, duplicates dropped.
        let mut producer = within("producer", named().build("rust-dedup")).await.expect("producer");
        let messages = (5..15).map(|i| numbered(&texts[i as usize], i)).collect();
        let statuses =
            within("confirmations", producer.batch_send_with_confirm(messages)).await.expect("publish");
        assert_confirmed(&statuses, 5..15);
        within("close", producer.close()).await.expect("close");

        // Restart without ids: the client asks for the last stored id (14) and goes on at 15.
        let mut producer = within("producer", named().build("rust-dedup")).await.expect("producer");
        let messages = texts[15..].iter().map(|text| message(text)).collect();
        let statuses =
            within("confirmations", producer.batch_send_with_confirm(messages)).await.expect("publish");
        assert_confirmed(&statuses, 15..18);
        within("close", producer.close()).await.expect("close");

        let got = consume(&environment, "rust-dedup", OffsetSpecification::First, texts.len()).await;
        assert_eq!(got.into_iter().map(|(_, body)| body).collect::<Vec<_>>(), texts);
    });
}

fn routing_key(message: &Message) -> String {
    body_of(message)
}

#[test]
fn super_stream_producer_and_consumer() {
    let server = rabbitmq::server(2, &[]);
    if !server.has("superstream") {
        return;
    }
    run(async {
        let environment = environment(&server).await;
        let creator = environment.stream_creator().create_super_stream("rust-super", 3, None);
        within("create super stream", creator).await.expect("create super stream");
        let strategy = RoutingStrategy::HashRoutingStrategy(HashRoutingMurmurStrategy {
            routing_extractor: &routing_key,
        });
        let build = environment.super_stream_producer(strategy).build("rust-super");
        let mut producer = within("super stream producer", build).await.expect("super stream producer");

        let texts = bodies("super", 0..30);
        let (sender, mut receiver) = mpsc::unbounded_channel();
        for text in &texts {
            let sender = sender.clone();
            let callback = move |status: Result<ConfirmationStatus, ProducerPublishError>| {
                let sender = sender.clone();
                async move {
                    let _ = sender.send(status);
                }
            };
            within("send", producer.send(message(text), callback)).await.expect("send");
        }
        for _ in 0..texts.len() {
            let status = within("a confirmation", receiver.recv()).await.expect("callbacks dropped");
            assert!(status.expect("confirmation").confirmed(), "not confirmed");
        }
        assert!(tokio::time::timeout(QUIET, receiver.recv()).await.is_err(), "a callback ran twice");
        within("close", producer.close()).await.expect("close producer");

        let mut builder = environment.super_stream_consumer().offset(OffsetSpecification::First);
        let build = builder.build("rust-super");
        let mut consumer = within("super stream consumer", build).await.expect("super stream consumer");
        let (mut received, mut partitions) = (Vec::new(), BTreeSet::new());
        while received.len() < texts.len() {
            let delivery = within("a delivery", consumer.next()).await.expect("the consumer ended");
            let delivery = delivery.expect("delivery");
            partitions.insert(delivery.stream().clone());
            received.push(body_of(delivery.message()));
        }
        assert!(tokio::time::timeout(QUIET, consumer.next()).await.is_err(), "a delivery too many");
        within("close", consumer.handle().close()).await.expect("close consumer");
        received.sort();
        let mut expected = texts.clone();
        expected.sort();
        assert_eq!(received, expected, "every message once");
        let all: BTreeSet<String> = (0..3).map(|i| format!("rust-super-{i}")).collect();
        assert_eq!(partitions, all, "30 keys spread over the 3 partitions");

        within("delete super stream", environment.delete_super_stream("rust-super")).await.expect("delete");
    });
}
