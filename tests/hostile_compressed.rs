//! Hostile compressed batches through the real broker binary. A producer may send a compressed
//! batch whose header and CRC are right but whose records section is a decompression bomb, is
//! cut short, is labelled with the wrong codec or declares a wrong uncompressed length. The
//! broker never inflates, so it stores these as they came; the SDK consumer must refuse each one
//! with an error that names the partition and offset, deliver every message before it, keep the
//! other partitions flowing, and never be killed by it. The broker keeps serving throughout.
//! Every wait is bounded by a deadline.

mod common;

use std::time::Duration;

use futures::StreamExt;
use ringbroker::client::consumer::{AutoCommit, Consumer, PollStrategy};
use ringbroker::client::{Client, ClientError};
use ringbroker::protocol::batch::{crc32_of, BatchBuilder, BatchHeader, Compression, BATCH_HEADER_BYTES};
use ringbroker::protocol::messages::{Partitioning, TopicConfig};
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(10);
const STREAM: &str = "hostile";
const TOPIC: &str = "t";
/// Where the header keeps the uncompressed size of the records section (`docs/format.md`).
const RECORDS_BYTES_AT: usize = 36;
/// Where the header keeps the codec bits (the low byte of `attributes`).
const ATTRIBUTES_AT: usize = 6;

/// A compressible batch of `count` JSON-like messages tagged `tag`, compressed with `codec`.
fn batch(tag: &str, count: usize, codec: Compression) -> Vec<u8> {
    let mut builder = BatchBuilder::new(0, 0);
    builder.set_compression(codec);
    for i in 0..count {
        let payload = format!(r#"{{"tag":"{tag}","index":{i},"note":"{}"}}"#, "compressible ".repeat(8));
        builder.push_payload(payload.as_bytes()).expect("push");
    }
    let bytes = builder.finish().expect("finish");
    assert!(BatchHeader::decode(&bytes).expect("header").is_compressed(), "{tag} compresses");
    bytes
}

/// Gives a tampered batch a matching length and CRC, so that only its records are wrong.
fn reseal(mut bytes: Vec<u8>) -> Vec<u8> {
    let length = u32::try_from(bytes.len()).expect("small");
    bytes[8..12].copy_from_slice(&length.to_le_bytes());
    let crc = crc32_of(&bytes);
    bytes[12..16].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// The hostile batches, one per partition 0..4, by name.
fn hostile() -> Vec<(&'static str, Vec<u8>)> {
    // A bomb: 64 MiB of zeros in one zstd frame of a few KB, declared as 1 KiB.
    let mut bomb = batch("bomb", 10, Compression::Zstd);
    bomb.truncate(BATCH_HEADER_BYTES);
    bomb.extend(zstd::bulk::compress(&vec![0_u8; 64 << 20], 3).expect("zstd"));
    bomb[RECORDS_BYTES_AT..RECORDS_BYTES_AT + 4].copy_from_slice(&1024_u32.to_le_bytes());
    // Truncated: the LZ4 block loses its last 16 bytes.
    let mut truncated = batch("truncated", 50, Compression::Lz4);
    truncated.truncate(truncated.len() - 16);
    // The wrong codec: zstd bytes labelled LZ4.
    let mut wrong_codec = batch("wrong-codec", 50, Compression::Zstd);
    let lz4 = Compression::Lz4.codec().expect("a codec");
    wrong_codec[ATTRIBUTES_AT] = (wrong_codec[ATTRIBUTES_AT] & !0b111) | lz4;
    // A lying uncompressed length: 7 bytes short of what the records inflate to.
    let mut lying = batch("lying", 50, Compression::Zstd);
    let declared = u32::from_le_bytes(lying[RECORDS_BYTES_AT..RECORDS_BYTES_AT + 4].try_into().expect("4"));
    lying[RECORDS_BYTES_AT..RECORDS_BYTES_AT + 4].copy_from_slice(&(declared - 7).to_le_bytes());
    vec![
        ("bomb", reseal(bomb)),
        ("truncated", reseal(truncated)),
        ("wrong-codec", reseal(wrong_codec)),
        ("lying-length", reseal(lying)),
    ]
}

async fn produce(client: &Client, partition: u32, bytes: &[u8]) -> u64 {
    let answer =
        client.produce(STREAM, TOPIC, Partitioning::Partition(partition), &[bytes]).await.unwrap_or_else(
            |error| panic!("partition {partition}: the broker stores what it cannot inflate: {error}"),
        );
    answer.acks[0].base_offset
}

/// Reads partition `partition` from the first offset: exactly `good` messages, then an error
/// naming the partition and the bad batch's offset, again on the next read (the consumer stays
/// at the bad batch rather than skip it).
async fn read_until_refused(client: &Client, partition: u32, good: usize, bad_offset: u64, name: &str) {
    let mut consumer = Consumer::builder(client, STREAM, TOPIC)
        .consumer_name(format!("reader-{partition}"))
        .partition(partition)
        .polling_strategy(PollStrategy::First)
        .auto_commit(AutoCommit::Disabled)
        .polling_interval(Duration::from_millis(20))
        .build()
        .await
        .expect("consumer");
    let deadline = Instant::now() + WAIT;
    for i in 0..good {
        let next = tokio::time::timeout_at(deadline, consumer.next()).await.expect("in time");
        let message =
            next.expect("never ends").unwrap_or_else(|error| panic!("{name}: message {i}: {error}"));
        assert_eq!(message.offset, i as u64, "{name}");
        assert!(String::from_utf8_lossy(&message.payload).contains(r#""tag":"good""#), "{name}");
    }
    for attempt in 0..2 {
        let next = tokio::time::timeout_at(deadline, consumer.next()).await.expect("in time");
        match next.expect("never ends") {
            Err(ClientError::Protocol(reason)) => {
                let expected = format!("partition {partition}: the compressed batch at offset {bad_offset}");
                assert!(reason.contains(&expected), "{name} (read {attempt}): {reason}");
            }
            other => panic!("{name} (read {attempt}): expected a refused batch, got {other:?}"),
        }
    }
    consumer.shutdown().await.expect("consumer shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_compressed_batches_fail_in_the_consumer_and_the_broker_keeps_serving() {
    let broker = common::Broker::start(2, &["--fsync", "always"]);
    let client =
        Client::connect_addr(&broker.addr().to_string(), "ringbroker", "ringbroker").await.expect("connect");
    client.create_stream(STREAM, false).await.expect("stream");
    let config = TopicConfig { partitions: 5, ..TopicConfig::default() };
    client.create_topic(STREAM, TOPIC, config, false).await.expect("topic");

    // Partitions 0..4: a good batch of 20, then one hostile batch, then another good batch.
    let good = batch("good", 20, Compression::Zstd);
    let cases = hostile();
    for (partition, (_, bytes)) in (0_u32..).zip(&cases) {
        assert_eq!(produce(&client, partition, &good).await, 0);
        assert_eq!(produce(&client, partition, bytes).await, 20);
        produce(&client, partition, &good).await;
    }
    // Partition 4: good batches only.
    for _ in 0..3 {
        produce(&client, 4, &good).await;
    }

    for (partition, (name, _)) in (0_u32..).zip(&cases) {
        read_until_refused(&client, partition, 20, 20, name).await;
    }

    // A consumer of the whole topic still gets every readable message: the good batches of
    // partition 4 and those before each hostile batch, in order per partition.
    let mut all = Consumer::builder(&client, STREAM, TOPIC)
        .consumer_name("all")
        .polling_strategy(PollStrategy::First)
        .auto_commit(AutoCommit::Disabled)
        .polling_interval(Duration::from_millis(20))
        .build()
        .await
        .expect("consumer");
    let deadline = Instant::now() + WAIT;
    let mut per_partition = [0_u64; 5];
    let mut errors = 0;
    while per_partition.iter().sum::<u64>() < 4 * 20 + 60 {
        let next = tokio::time::timeout_at(deadline, all.next()).await;
        let next = next.unwrap_or_else(|_| panic!("in time: {per_partition:?}, {errors} errors"));
        match next.expect("never ends") {
            Ok(message) => {
                let seen = &mut per_partition[message.partition as usize];
                assert_eq!(message.offset, *seen, "in order on partition {}", message.partition);
                *seen += 1;
            }
            Err(ClientError::Protocol(reason)) if reason.contains("compressed batch") => errors += 1,
            Err(error) => panic!("unexpected error: {error}"),
        }
    }
    assert_eq!(per_partition, [20, 20, 20, 20, 60]);
    all.shutdown().await.expect("shutdown");

    // The broker still serves: a plain batch is stored after everything else and read back,
    // and its stats count every message stored, hostile ones included.
    let after = common::batch_of("after", 5);
    assert_eq!(produce(&client, 4, &after).await, 60);
    let stats = client.stats(Some(STREAM)).await.expect("stats");
    let messages: u64 = stats.streams.iter().map(|stream| stream.messages).sum();
    let hostile_records: u64 = cases.iter().map(|(_, bytes)| u64::from(records_of(bytes))).sum();
    assert_eq!(messages, 4 * 40 + hostile_records + 65, "stats: {stats:?}");
    let mut conn = broker.root();
    let read = tokio::task::spawn_blocking(move || common::read_partition(&mut conn, STREAM, TOPIC, 4))
        .await
        .expect("read task");
    let plain: Vec<&str> = read.iter().filter(|(offset, _)| *offset >= 60).map(|(_, p)| p.as_str()).collect();
    assert_eq!(plain, ["after-0", "after-1", "after-2", "after-3", "after-4"]);
}

fn records_of(bytes: &[u8]) -> u32 {
    BatchHeader::decode(bytes).expect("header").record_count
}
