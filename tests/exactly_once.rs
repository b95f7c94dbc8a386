//! Exactly-once producing against the real broker, with answers really lost: a loopback proxy
//! (`common::proxy`) swallows the broker's answer to a produce after the broker has stored the
//! batch and cuts the connection; the named producer sends the very same batch again, and the
//! partition must hold it once, the retry being acknowledged as a duplicate with the original
//! offsets. The same after a SIGKILL and restart of the broker.

mod common;

use std::time::Duration;

use common::proxy::Proxy;
use common::{read_partition, Broker};
use ringbroker::client::{Client, ConnectionString};
use ringbroker::protocol::batch::BatchBuilder;
use ringbroker::protocol::messages::{AccessMode, Kind, Partitioning, ProducerDeclare, ProducerDeclared};

const STREAM: &str = "once";
const TOPIC: &str = "events";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// A broker without per-shard direct ports, so that every request goes through the proxy.
fn broker() -> Broker {
    let mut broker = Broker::start(2, &["--shard-port-base", "0"]);
    let mut conn = broker.root();
    conn.create_stream(STREAM);
    conn.create_topic(STREAM, TOPIC, 2);
    drop(conn);
    let _ = &mut broker;
    broker
}

async fn connect(addr: std::net::SocketAddr) -> Client {
    let url: ConnectionString =
        format!("ringbroker://ringbroker:ringbroker@{addr}?timeout_ms=5000&reconnect_retries=5&reconnect_interval_ms=50")
            .parse()
            .expect("url");
    Client::connect(&url).await.expect("connect")
}

async fn declare(client: &Client, name: &str) -> ProducerDeclared {
    let request = ProducerDeclare {
        stream: STREAM.into(),
        topic: TOPIC.into(),
        name: name.into(),
        access: AccessMode::Shared,
    };
    client.declare_producer(&request).await.expect("declare")
}

fn batch(declared: &ProducerDeclared, first_sequence: u64, tag: &str, count: u32) -> Vec<u8> {
    let mut builder = BatchBuilder::new(declared.producer_id, first_sequence);
    builder.set_producer(declared.producer_id, declared.epoch);
    for i in 0..count {
        builder.push_payload(format!("{tag}-{i}").as_bytes()).expect("push");
    }
    builder.finish().expect("finish")
}

/// Sends `bytes` until it is answered, as a retrying producer does; returns the answer and the
/// number of attempts.
async fn send_until_answered(
    client: &Client,
    partition: u32,
    bytes: &[u8],
) -> (ringbroker::protocol::messages::BatchAck, u32) {
    for attempt in 1..=20 {
        match client.produce(STREAM, TOPIC, Partitioning::Partition(partition), &[bytes]).await {
            Ok(response) => return (response.acks[0], attempt),
            Err(error) => {
                assert!(!matches!(error, ringbroker::client::ClientError::Server { .. }), "refused: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    panic!("no answer after 20 attempts");
}

#[test]
fn a_lost_answer_is_retried_and_stored_once() {
    let broker = broker();
    let proxy = Proxy::start(broker.addr());
    runtime().block_on(async {
        let client = connect(proxy.addr()).await;
        let declared = declare(&client, "lossy").await;
        assert_ne!(declared.producer_id, 0);
        assert!(declared.partitions.iter().all(|p| p.last_sequence.is_none()));

        let first = batch(&declared, 0, "first", 10);
        let (ack, attempts) = send_until_answered(&client, 0, &first).await;
        assert_eq!((attempts, ack.duplicate, ack.base_offset, ack.last_offset), (1, false, 0, 9));

        proxy.lose_answers(Kind::Produce as u16, 1);
        let second = batch(&declared, 10, "second", 5);
        let (ack, attempts) = send_until_answered(&client, 0, &second).await;
        assert_eq!(proxy.lost(), 1, "the proxy swallowed the first answer");
        assert!(attempts >= 2, "the first attempt lost its answer");
        assert!(ack.duplicate, "the retry is acknowledged as a duplicate: {ack:?}");
        assert_eq!((ack.base_offset, ack.last_offset), (10, 14), "with the original offsets");

        // The producer goes on after the retry.
        let third = batch(&declared, 15, "third", 3);
        let (ack, _) = send_until_answered(&client, 0, &third).await;
        assert_eq!((ack.duplicate, ack.base_offset), (false, 15));
        let sequence = client.producer_sequence(STREAM, TOPIC, 0, "lossy").await.expect("sequence");
        assert_eq!(sequence.last_sequence, Some(17));
    });
    let mut conn = broker.root();
    let stored = read_partition(&mut conn, STREAM, TOPIC, 0);
    let payloads: Vec<&str> = stored.iter().map(|(_, p)| p.as_str()).collect();
    let expected: Vec<String> = (0..10)
        .map(|i| format!("first-{i}"))
        .chain((0..5).map(|i| format!("second-{i}")))
        .chain((0..3).map(|i| format!("third-{i}")))
        .collect();
    assert_eq!(payloads, expected, "every batch is stored exactly once");
}

#[test]
fn resends_after_a_kill_are_deduplicated() {
    let mut broker = broker();
    let rt = runtime();
    let batches: Vec<Vec<u8>> = rt.block_on(async {
        let client = connect(broker.addr()).await;
        let declared = declare(&client, "survivor").await;
        let mut sent = Vec::new();
        for (index, partition) in [0_u32, 1, 0, 1, 0, 0, 0, 0, 0].iter().enumerate() {
            let bytes = batch(&declared, index as u64 * 100, &format!("b{index}"), 4);
            let (ack, _) = send_until_answered(&client, *partition, &bytes).await;
            assert!(!ack.duplicate);
            sent.push(bytes);
        }
        sent
    });
    broker.kill();
    broker.start_again();
    rt.block_on(async {
        let client = connect(broker.addr()).await;
        // The same instance resends everything it sent (same epoch, same sequences).
        let partitions = [0_u32, 1, 0, 1, 0, 0, 0, 0, 0];
        for (index, (bytes, partition)) in batches.iter().zip(partitions).enumerate() {
            let (ack, _) = send_until_answered(&client, partition, bytes).await;
            assert!(ack.duplicate, "a resend after the restart is a duplicate: {ack:?}");
            // Partition 0 remembers the offsets of its last 5 batches of this producer: batches
            // 0 and 2 are older, so their duplicates come without offsets.
            let remembered = !(index == 0 || index == 2);
            assert_eq!(ack.has_offsets(), remembered, "batch {index}: {ack:?}");
        }
        // A restarted producer under the same name continues from the stored sequences.
        let declared = declare(&client, "survivor").await;
        let last: Vec<Option<u64>> = declared.partitions.iter().map(|p| p.last_sequence).collect();
        assert_eq!(last, [Some(803), Some(303)]);
    });
    let mut conn = broker.root();
    assert_eq!(read_partition(&mut conn, STREAM, TOPIC, 0).len(), 7 * 4);
    assert_eq!(read_partition(&mut conn, STREAM, TOPIC, 1).len(), 2 * 4);
}
