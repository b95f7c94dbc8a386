//! kcat (Debian's package, librdkafka 2.x) against the Kafka listener of a two-shard broker
//! started with `--kafka-auto-create-partitions 4`:
//!
//! 1. `kcat -L -t T` creates topic `T` (Metadata with auto-creation) and lists two brokers, one
//!    per shard at its own port, and `T` with 4 partitions, each led by one of them.
//! 2. `kcat -P -K:` produces 10,000 keyed messages (`key-i:value-i`, one per line); kcat exits
//!    with success only when every message was delivered.
//! 3. `kcat -C -e -o beginning -f '%p %o %k %s\n'` reads all partitions to their ends: exactly
//!    the 10,000 messages come back, each once, key matching value, every partition's offsets
//!    dense from 0 and its messages in the order they were produced.
//!
//! Every kcat run is bounded and killed at its timeout. Without kcat the test prints SKIP and
//! the install command, except under `CI=true`, where that is a failure.

mod common;
#[path = "common/kafka.rs"]
mod kafka;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use kafka::{run_bounded, Ran, Server};

/// Messages produced and consumed.
const COUNT: usize = 10_000;
/// The topic's partitions.
const PARTITIONS: usize = 4;
/// Shards of the broker (Kafka nodes).
const SHARDS: u16 = 2;
/// Bound of one kcat run.
const KCAT_TIMEOUT: Duration = Duration::from_secs(90);
const INSTALL: &str = "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kcat";

/// Runs kcat against `server` with `args` and `stdin`, bounded by [`KCAT_TIMEOUT`].
fn kcat(server: &Server, args: &[&str], stdin: &[u8]) -> Ran {
    let mut command = Command::new("kcat");
    command.arg("-b").arg(server.bootstrap()).args(args);
    // Fail fast instead of retrying for minutes, and keep kcat's own waits short.
    command.args(["-X", "socket.timeout.ms=10000", "-X", "topic.metadata.refresh.interval.ms=5000"]);
    run_bounded(&mut command, stdin, KCAT_TIMEOUT)
}

/// Checks `kcat -L -t topic`'s listing: two brokers at the shard ports, `topic` with its
/// partitions each led by one of them.
fn check_listing(server: &Server, listing: &str, topic: &str) {
    for shard in 0..SHARDS {
        let broker = format!("broker {shard} at {}", server.node_addr(shard));
        assert!(listing.contains(&broker), "kcat -L does not list \"{broker}\":\n{listing}");
    }
    assert!(listing.contains(&format!(" {SHARDS} brokers:")), "broker count:\n{listing}");
    let header = format!("topic \"{topic}\" with {PARTITIONS} partitions:");
    assert!(listing.contains(&header), "kcat -L does not list \"{header}\":\n{listing}");
    for partition in 0..PARTITIONS {
        let line = listing
            .lines()
            .find(|line| line.trim_start().starts_with(&format!("partition {partition}, ")))
            .unwrap_or_else(|| panic!("partition {partition} is not listed:\n{listing}"));
        let leader_known = (0..SHARDS).any(|shard| line.contains(&format!("leader {shard},")));
        assert!(leader_known, "partition {partition}'s leader is not a shard: {line}");
        assert!(!line.contains("Broker:"), "partition {partition} has an error: {line}");
    }
}

/// One consumed line `partition offset key value`.
#[derive(Debug)]
struct Consumed {
    partition: usize,
    offset: u64,
    index: usize,
}

fn parse_consumed(line: &str) -> Consumed {
    let fields: Vec<&str> = line.split(' ').collect();
    let [partition, offset, key, value] = fields[..] else {
        panic!("a consumed line is not `partition offset key value`: {line:?}");
    };
    let partition: usize = partition.parse().unwrap_or_else(|_| panic!("partition in {line:?}"));
    let offset: u64 = offset.parse().unwrap_or_else(|_| panic!("offset in {line:?}"));
    let index: usize = key
        .strip_prefix("key-")
        .and_then(|i| i.parse().ok())
        .unwrap_or_else(|| panic!("the key in {line:?} is not key-<i>"));
    assert_eq!(value, format!("value-{index}"), "key and value do not match: {line:?}");
    assert!(partition < PARTITIONS, "partition out of range: {line:?}");
    Consumed { partition, offset, index }
}

#[test]
fn kcat_produces_and_consumes_10000_keyed_messages() {
    if !kafka::runs("kcat", &["-V"]) {
        kafka::skip_missing("kcat", INSTALL);
        return;
    }
    let mut server = kafka::server(SHARDS, &["--kafka-auto-create-partitions", "4"]);
    const TOPIC: &str = "kcat-keyed";

    let listed = kcat(&server, &["-L", "-t", TOPIC], b"");
    assert!(listed.success(), "kcat -L failed: {}", listed.describe());
    check_listing(&server, &listed.stdout_text(), TOPIC);
    let all = kcat(&server, &["-L"], b"");
    assert!(all.success(), "kcat -L (all topics) failed: {}", all.describe());
    check_listing(&server, &all.stdout_text(), TOPIC);

    let input: String = (0..COUNT).map(|i| format!("key-{i}:value-{i}\n")).collect();
    let produce_args = [
        "-P",
        "-t",
        TOPIC,
        "-K:",
        "-X",
        "linger.ms=5",
        "-X",
        "batch.num.messages=2000",
        "-X",
        "message.timeout.ms=60000",
    ];
    let produced = kcat(&server, &produce_args, input.as_bytes());
    assert!(produced.success(), "kcat -P failed: {}", produced.describe());
    server.assert_running();

    let consume_args = ["-C", "-t", TOPIC, "-e", "-o", "beginning", "-f", "%p %o %k %s\n", "-q"];
    let consumed = kcat(&server, &consume_args, b"");
    assert!(consumed.success(), "kcat -C failed: {}", consumed.describe());
    let text = consumed.stdout_text();
    let records: Vec<Consumed> = text.lines().filter(|line| !line.is_empty()).map(parse_consumed).collect();
    assert_eq!(records.len(), COUNT, "kcat consumed {} messages: {}", records.len(), consumed.describe());

    let mut seen = vec![false; COUNT];
    let mut by_partition: BTreeMap<usize, Vec<&Consumed>> = BTreeMap::new();
    for record in &records {
        assert!(record.index < COUNT, "an index out of range: {record:?}");
        assert!(!seen[record.index], "message {} was consumed twice", record.index);
        seen[record.index] = true;
        by_partition.entry(record.partition).or_default().push(record);
    }
    for (partition, records) in &by_partition {
        let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
        let dense: Vec<u64> = (0..offsets.len() as u64).collect();
        assert!(offsets == dense, "partition {partition}'s offsets are not 0..{}", offsets.len());
        let in_order = records.windows(2).all(|pair| pair[0].index < pair[1].index);
        assert!(in_order, "partition {partition}'s messages are not in the order produced");
    }
    let spread: Vec<(usize, usize)> = by_partition.iter().map(|(p, r)| (*p, r.len())).collect();
    eprintln!("messages per partition: {spread:?}");
    assert_eq!(by_partition.len(), PARTITIONS, "the keys did not reach every partition: {spread:?}");
    server.assert_running();
}
