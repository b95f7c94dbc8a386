//! Encoding tests: what a scrape of known atomics and figures prints, line by line, and (when
//! `promtool` is installed) that `promtool check metrics` accepts it.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::*;
use crate::protocol::messages::ServerCounters;

fn figures(stream: &str, partition: u32, messages: u64, lags: Vec<ConsumerLag>) -> PartitionFigures {
    PartitionFigures {
        stream: stream.to_string(),
        topic: "t".to_string(),
        partition,
        messages,
        bytes: messages * 100,
        next_offset: messages,
        segments: 1,
        lags,
    }
}

fn loaded() -> Metrics {
    let metrics = Metrics::new(2);
    let zero = metrics.shard(0);
    let native = zero.wire(WIRE_NATIVE);
    std::mem::forget(native.connection());
    native.bytes_in(1000);
    native.bytes_out(250);
    zero.request(WIRE_NATIVE, "produce", true);
    zero.request(WIRE_NATIVE, "produce", true);
    zero.request(WIRE_NATIVE, "poll", false);
    zero.wire(WIRE_KAFKA).request("Produce", true);
    zero.forwarded();
    zero.produce_acked(Duration::from_micros(300));
    zero.fsync.observe(Duration::from_millis(2));
    zero.fsync.observe(Duration::from_millis(20));
    let lag =
        ConsumerLag { consumer_type: ConsumerType::Group, consumer: "g\"1".to_string(), lag_messages: 7 };
    zero.publish(ShardFigures {
        partitions: vec![figures("s", 0, 10, vec![lag]), figures("s", 1, 5, Vec::new())],
        write_behind_bytes: 4096,
        poisoned_partitions: 1,
    });
    // Shard 1 also reports s/t/1 (a moment of overlap): it must appear once.
    metrics.shard(1).publish(ShardFigures {
        partitions: vec![figures("s", 1, 99, Vec::new())],
        ..ShardFigures::default()
    });
    metrics
}

fn broker() -> Option<BrokerCounters> {
    Some(Box::new(|| ServerCounters { shards: 2, deliveries: 3, ..ServerCounters::default() }))
}

#[test]
fn scrape_lines() {
    let text = loaded().render(broker());
    let has = |line: &str| assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    has("# TYPE ringbroker_requests_total counter");
    has(r#"ringbroker_requests_total{shard="0",wire="native",kind="produce",status="ok"} 2"#);
    has(r#"ringbroker_requests_total{shard="0",wire="native",kind="produce",status="error"} 0"#);
    has(r#"ringbroker_requests_total{shard="0",wire="native",kind="poll",status="error"} 1"#);
    has(r#"ringbroker_requests_total{shard="0",wire="kafka",kind="Produce",status="ok"} 1"#);
    has(r#"ringbroker_received_bytes_total{shard="0",wire="native"} 1000"#);
    has(r#"ringbroker_sent_bytes_total{shard="0",wire="native"} 250"#);
    has(r#"ringbroker_connections{shard="0",wire="native"} 1"#);
    has(r#"ringbroker_forwarded_requests_total{shard="0"} 1"#);
    has(r#"ringbroker_forwarded_requests_total{shard="1"} 0"#);
    has(r#"ringbroker_in_flight_requests{shard="1"} 0"#);
    has("# TYPE ringbroker_produce_ack_duration_seconds histogram");
    has(r#"ringbroker_produce_ack_duration_seconds_bucket{shard="0",le="0.00025"} 0"#);
    has(r#"ringbroker_produce_ack_duration_seconds_bucket{shard="0",le="0.0005"} 1"#);
    has(r#"ringbroker_produce_ack_duration_seconds_bucket{shard="0",le="+Inf"} 1"#);
    has(r#"ringbroker_produce_ack_duration_seconds_count{shard="0"} 1"#);
    has(r#"ringbroker_storage_fsync_duration_seconds_bucket{shard="0",le="0.0025"} 1"#);
    has(r#"ringbroker_storage_fsync_duration_seconds_bucket{shard="0",le="0.025"} 2"#);
    has(r#"ringbroker_storage_fsync_duration_seconds_sum{shard="0"} 0.022"#);
    has(r#"ringbroker_storage_fsyncs_total{shard="0"} 2"#);
    has(r#"ringbroker_storage_write_behind_bytes{shard="0"} 4096"#);
    has(r#"ringbroker_storage_poisoned_partitions{shard="0"} 1"#);
    has(r#"ringbroker_partition_messages{stream="s",topic="t",partition="0"} 10"#);
    has(r#"ringbroker_partition_bytes{stream="s",topic="t",partition="1"} 500"#);
    has(r#"ringbroker_partition_next_offset{stream="s",topic="t",partition="0"} 10"#);
    has(r#"ringbroker_partition_segments{stream="s",topic="t",partition="1"} 1"#);
    has(
        r#"ringbroker_consumer_lag_messages{stream="s",topic="t",partition="0",consumer_type="group",consumer="g\"1"} 7"#,
    );
    has("ringbroker_shards 2");
    has("ringbroker_deliveries_total 3");
    has("ringbroker_forwarded_copied_bytes_total 0");
    let once = text
        .lines()
        .filter(|l| l.starts_with(r#"ringbroker_partition_messages{stream="s",topic="t",partition="1"}"#));
    assert_eq!(once.count(), 1, "a partition two shards report appears once");
    assert!(!text.contains("overflow"), "empty overflow slots are not reported");
    let families = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
    let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
    assert_eq!(families, helps);
    assert!(text.lines().filter(|l| !l.starts_with('#')).all(|l| l.starts_with("ringbroker_")));
}

#[test]
fn scrape_without_anything_published() {
    let text = Metrics::new(1).render(None);
    assert!(text.contains("# TYPE ringbroker_partition_messages gauge"));
    assert!(text.contains(r#"ringbroker_storage_fsyncs_total{shard="0"} 0"#));
    assert!(text.contains(r#"ringbroker_connections{shard="0",wire="native"} 0"#));
    assert!(!text.contains("ringbroker_shards"), "no broker counters without a reader");
}

/// `promtool check metrics` on a scrape, when promtool is installed (the integration test
/// `tests/metrics.rs` makes it a requirement under CI).
#[test]
fn promtool_accepts_the_encoding() {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        eprintln!("SKIP: install promtool: apt-get install prometheus");
        return;
    };
    let text = loaded().render(broker());
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
    let output = child.wait_with_output().expect("promtool");
    let said =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success() && said.trim().is_empty(), "promtool: {said}\n{text}");
}
