//! Interoperability of the RabbitMQ Streams listener with the native side, on one broker of two
//! shards over loopback:
//!
//! 1. RabbitMQ in, native out: the official Rust stream client (`rabbitmq-stream-client` 0.11)
//!    creates stream `interop-a` and publishes 1,000 AMQP 1.0 messages with confirms; the native
//!    SDK consumer reads broker stream `rabbitmq`, topic `interop-a`, partition 0 from the first
//!    offset and gets every message once, in order, at offsets 0..999, each value being exactly
//!    the bytes the client encoded (and decoding back to the message published); `ringctl
//!    consume` prints exactly those 1,000 values.
//! 2. Native in, RabbitMQ out: the native SDK producer writes 1,000 AMQP 1.0 messages (encoded
//!    with `rabbitmq-stream-protocol`) to topic `interop-b` (one partition) of stream `rabbitmq`,
//!    created natively; the Rust stream client consumes stream `interop-b` from the first offset
//!    and gets every message once, in order, at the offsets the native producer was given, each
//!    decoding to the message written.
//!
//! Every wait is bounded (tokio timeouts, a deadline on `ringctl`). Needs a ringbroker: with
//! `RMQ_EXTERNAL` set (a foreign server, see `common/rabbitmq.rs`) there is no native side, and
//! the test prints SKIP.

mod common;
#[path = "common/rabbitmq.rs"]
mod rabbitmq;

use std::future::Future;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use rabbitmq::Server;
use rabbitmq_stream_client::types::{Message, OffsetSpecification};
use rabbitmq_stream_client::{ConfirmationStatus, Environment};
use rabbitmq_stream_protocol::codec::{Decoder, Encoder};
use ringbroker::client::consumer::{AutoCommit, Consumer, PollStrategy, ReceivedMessage};
use ringbroker::client::{Client, Partitioning, Producer, ProducerMessage, ShardRouter};
use ringbroker::protocol::messages::TopicConfig;

/// Messages each direction carries.
const COUNT: usize = 1_000;
/// Messages per publish call (RabbitMQ side) and per `send_batch` (native side): ten of each.
const BATCH: usize = 100;
/// The broker stream that holds the RabbitMQ streams (the listener's default).
const BROKER_STREAM: &str = "rabbitmq";
/// Bound of one wait for confirmations, deliveries or a connection.
const WAIT: Duration = Duration::from_secs(15);
/// How long a consumer is watched for a delivery beyond the expected ones.
const QUIET: Duration = Duration::from_millis(500);
/// Bound of one phase of the test.
const PHASE_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound of one `ringctl` run.
const RINGCTL_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `body` on `runtime`, bounded by [`PHASE_TIMEOUT`].
fn run<T>(runtime: &tokio::runtime::Runtime, body: impl Future<Output = T>) -> T {
    runtime.block_on(async {
        tokio::time::timeout(PHASE_TIMEOUT, body).await.expect("the test phase did not finish in time")
    })
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

async fn native_client(server: &Server) -> (Client, ShardRouter) {
    let broker = server.broker.as_ref().expect("a ringbroker started by the test");
    let address = broker.addr().to_string();
    let connect = Client::connect_addr(&address, "ringbroker", "ringbroker");
    let client = within("native connect", connect).await.expect("native connect");
    let router = within("router", ShardRouter::new(client.clone())).await.expect("router");
    (client, router)
}

/// A message's AMQP 1.0 encoding, as the stream client writes it on the wire.
fn encoded(message: &Message) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(message.encoded_size() as usize);
    message.encode(&mut bytes).expect("encode an AMQP message");
    assert_eq!(bytes.len(), message.encoded_size() as usize, "encoded_size agrees with encode");
    bytes
}

/// Decodes a whole stored value as one AMQP 1.0 message (nothing may be left over).
fn decoded(value: &[u8]) -> Message {
    let (rest, message) = Message::decode(value).expect("the value is an AMQP 1.0 message");
    assert!(rest.is_empty(), "{} bytes after the AMQP message", rest.len());
    message
}

/// The body of message `i` of direction `tag`; lengths vary from 14 to 49 bytes.
fn body(tag: &str, i: usize) -> Vec<u8> {
    let mut text = format!("{tag}-{i:04}").into_bytes();
    text.resize(text.len() + i % 36, b'.');
    text
}

/// Message `i` of direction `tag`: a data body, a string message id and one application
/// property, so several AMQP sections travel. Their sizes and contents keep the byte 0x0A
/// (`\n`) out of the encoding, so that `ringctl` prints each message on one line.
fn amqp_message(tag: &str, i: usize) -> Message {
    Message::builder()
        .body(body(tag, i))
        .properties()
        .message_id(format!("{tag}-id-{i}"))
        .message_builder()
        .application_properties()
        .insert("index", format!("i:{i:04}").as_str())
        .message_builder()
        .build()
}

/// Reads exactly `count` messages of a native consumer within [`WAIT`] each, then checks that
/// nothing more arrives for [`QUIET`].
async fn take_native(consumer: &mut Consumer, count: usize) -> Vec<ReceivedMessage> {
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let next = tokio::time::timeout(WAIT, consumer.next()).await;
        let next = next.unwrap_or_else(|_| panic!("only {} of {count} messages arrived", out.len()));
        out.push(next.expect("the consumer ended").expect("a message"));
    }
    if let Ok(extra) = tokio::time::timeout(QUIET, consumer.next()).await {
        let offset = extra.map(|message| message.map(|m| m.offset));
        panic!("a message beyond the {count} expected: {offset:?}");
    }
    out
}

/// Part 1, RabbitMQ side: creates `stream` and publishes `messages` in batches of [`BATCH`],
/// checking every publishing id confirmed once.
async fn publish_rabbitmq(environment: &Environment, stream: &str, messages: &[Message]) {
    within("create", environment.stream_creator().create(stream)).await.expect("create stream");
    let producer = within("producer", environment.producer().build(stream)).await.expect("producer");
    let mut confirmed = Vec::with_capacity(messages.len());
    for chunk in messages.chunks(BATCH) {
        let publish = producer.batch_send_with_confirm(chunk.to_vec());
        let statuses = within("confirmations", publish).await.expect("publish");
        assert_eq!(statuses.len(), chunk.len(), "one status per message");
        assert!(statuses.iter().all(ConfirmationStatus::confirmed), "a message was not confirmed");
        confirmed.extend(statuses.iter().map(ConfirmationStatus::publishing_id));
    }
    confirmed.sort_unstable();
    assert_eq!(confirmed, (0..messages.len() as u64).collect::<Vec<_>>(), "confirmed publishing ids");
    within("producer close", producer.close()).await.expect("close producer");
}

/// Part 1, native side: reads partition 0 of `topic` from the first offset.
async fn consume_native(router: &ShardRouter, topic: &str, count: usize) -> Vec<ReceivedMessage> {
    let build = Consumer::builder(router, BROKER_STREAM, topic)
        .consumer_name("interop-native-reader")
        .partition(0)
        .polling_strategy(PollStrategy::First)
        .auto_commit(AutoCommit::Disabled)
        .polling_interval(Duration::from_millis(20))
        .build();
    let mut consumer = within("native consumer", build).await.expect("native consumer");
    let got = take_native(&mut consumer, count).await;
    within("native consumer shutdown", consumer.shutdown()).await.expect("shutdown");
    got
}

/// Runs the built `ringctl` against the broker's native port; (success, stdout, stderr). Reads
/// its output while it runs (the output may exceed a pipe buffer) and kills it at the deadline.
fn ringctl(server: &Server, args: &[&str]) -> (bool, String, String) {
    let broker = server.broker.as_ref().expect("a ringbroker started by the test");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringctl"))
        .arg("--server")
        .arg(broker.addr().to_string())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ringctl");
    let pid = child.id();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut stderr = child.stderr.take().expect("stderr");
        let stderr_reader = std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = stderr.read_to_end(&mut text);
            text
        });
        let mut stdout = Vec::new();
        let _ = child.stdout.take().expect("stdout").read_to_end(&mut stdout);
        let stderr = stderr_reader.join().unwrap_or_default();
        let _ = sender.send((child.wait(), stdout, stderr));
    });
    let Ok((status, stdout, stderr)) = receiver.recv_timeout(RINGCTL_TIMEOUT) else {
        // SAFETY: kill(2) on our own child, not reaped yet (its waiter is still blocked).
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        panic!("ringctl {args:?} did not finish within {RINGCTL_TIMEOUT:?}");
    };
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (status.expect("ringctl exit status").success(), text(&stdout), text(&stderr))
}

/// Part 1: RabbitMQ in, native SDK and `ringctl` out.
fn rabbitmq_in_native_out(runtime: &tokio::runtime::Runtime, server: &Server) {
    const TOPIC: &str = "interop-a";
    let messages: Vec<Message> = (0..COUNT).map(|i| amqp_message(TOPIC, i)).collect();
    let expected: Vec<Vec<u8>> = messages.iter().map(encoded).collect();
    let got = run(runtime, async {
        let environment = environment(server).await;
        publish_rabbitmq(&environment, TOPIC, &messages).await;
        let (_client, router) = native_client(server).await;
        consume_native(&router, TOPIC, COUNT).await
    });

    assert_eq!(got.len(), COUNT);
    for (i, (record, bytes)) in got.iter().zip(&expected).enumerate() {
        assert_eq!((record.partition, record.offset), (0, i as u64), "message {i}'s place");
        assert!(&record.payload[..] == bytes.as_slice(), "message {i}: the value is not the bytes published");
        let message = decoded(&record.payload);
        assert_eq!(message.data(), Some(&body(TOPIC, i)[..]), "message {i}'s body");
        assert_eq!(message, messages[i], "message {i} decodes to the one published");
        assert_eq!(record.key, None, "message {i} has no key");
    }

    // ringctl prints each value as a line (lossy UTF-8); no value holds a newline byte, so
    // exactly 1,000 lines.
    assert!(expected.iter().all(|bytes| !bytes.contains(&b'\n')), "a value holds a newline byte");
    let printed: String =
        expected.iter().map(|bytes| format!("{}\n", String::from_utf8_lossy(bytes))).collect();
    let (success, stdout, stderr) = ringctl(server, &["consume", BROKER_STREAM, TOPIC, "--from", "first"]);
    assert!(success, "ringctl consume failed: {stderr}");
    assert_eq!(stdout.lines().count(), COUNT, "ringctl printed lines");
    assert!(stdout == printed, "ringctl consume printed something else than the 1,000 values");
}

/// Part 2: native SDK in, RabbitMQ out.
fn native_in_rabbitmq_out(runtime: &tokio::runtime::Runtime, server: &Server) {
    const TOPIC: &str = "interop-b";
    let messages: Vec<Message> = (0..COUNT).map(|i| amqp_message(TOPIC, i)).collect();
    let values: Vec<Vec<u8>> = messages.iter().map(encoded).collect();
    run(runtime, async {
        let (client, router) = native_client(server).await;
        within("stream", client.create_stream(BROKER_STREAM, true)).await.expect("create stream");
        let config = TopicConfig { partitions: 1, ..TopicConfig::default() };
        let create = client.create_topic(BROKER_STREAM, TOPIC, config, false);
        within("topic", create).await.expect("create topic");

        let build = Producer::builder(&router, BROKER_STREAM, TOPIC).partitioning(Partitioning::Partition(0));
        let producer = within("native producer", build.build()).await.expect("native producer");
        let mut offsets = Vec::with_capacity(COUNT);
        for chunk in values.chunks(BATCH) {
            let batch = chunk.iter().map(|value| ProducerMessage::new(value.clone())).collect();
            let receipts = within("send_batch", producer.send_batch(batch)).await.expect("send_batch");
            for receipt in receipts {
                assert_eq!(receipt.partition, 0, "the only partition");
                let base = receipt.base_offset().expect("a stored batch has offsets");
                offsets.extend(base..base + u64::from(receipt.messages));
            }
        }
        within("native producer shutdown", producer.shutdown()).await.expect("shutdown");
        assert_eq!(offsets.len(), COUNT, "every message acknowledged once");
        assert!(offsets.windows(2).all(|pair| pair[0] < pair[1]), "offsets rise: {offsets:?}");

        let environment = environment(server).await;
        let build = environment.consumer().offset(OffsetSpecification::First).build(TOPIC);
        let mut consumer = within("stream consumer", build).await.expect("stream consumer");
        for (i, (&offset, message)) in offsets.iter().zip(&messages).enumerate() {
            let delivery = within("a delivery", consumer.next()).await.expect("the consumer ended");
            let delivery = delivery.unwrap_or_else(|error| panic!("delivery {i}: {error:?}"));
            assert_eq!(delivery.offset(), offset, "delivery {i}'s offset");
            assert_eq!(delivery.message().data(), Some(&body(TOPIC, i)[..]), "delivery {i}'s body");
            assert_eq!(delivery.message(), message, "delivery {i} is the message written");
            assert!(encoded(delivery.message()) == values[i], "delivery {i} re-encodes to the value");
        }
        if let Ok(extra) = tokio::time::timeout(QUIET, consumer.next()).await {
            panic!("a delivery beyond the {COUNT} expected: {:?}", extra.map(|d| d.map(|d| d.offset())));
        }
        within("stream consumer close", consumer.handle().close()).await.expect("close consumer");
    });
}

#[test]
fn rabbitmq_and_native_clients_read_each_others_messages() {
    let mut server = rabbitmq::server(2, &[]);
    if server.broker.is_none() {
        eprintln!("SKIP: RMQ_EXTERNAL names a foreign server; this test needs ringbroker's native side");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rabbitmq_in_native_out(&runtime, &server);
    server.assert_running();
    native_in_rabbitmq_out(&runtime, &server);
    server.assert_running();
}
