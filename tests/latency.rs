//! One-message produce round trip on loopback against the real broker, reported as
//! percentiles (hdrhistogram). A measurement, not a check: it is ignored by default and asserts
//! nothing about speed. Run it on a release build:
//!
//! ```sh
//! cargo test --release --test latency -- --ignored --nocapture
//! ```

mod common;

use std::time::{Duration, Instant};

use common::*;
use hdrhistogram::Histogram;
use ringbroker::protocol::messages::Partitioning;

const WARMUP: u32 = 2_000;
const SAMPLES: u32 = 20_000;
const TIME_LIMIT: Duration = Duration::from_secs(60);

fn measure(fsync: &str, direct: bool) {
    let spin = std::env::var("RINGBROKER_SPIN").unwrap_or_else(|_| "0s".into());
    let broker = Broker::start(2, &["--fsync", fsync, "--spin-before-park", &spin]);
    let mut admin = broker.root();
    admin.create_stream("bench");
    let topic = admin.create_topic("bench", "latency", 1);
    let owner = topic.partitions[0].shard;
    let address = if direct { broker.shard_addr(owner) } else { broker.addr() };
    let mut conn = Conn::connect(address).expect("connect");
    conn.login("ringbroker", "ringbroker").expect("login");
    let batch = batch_of("x", 1);
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).expect("histogram");
    let deadline = Instant::now() + TIME_LIMIT;
    for i in 0..WARMUP + SAMPLES {
        let start = Instant::now();
        conn.produce("bench", "latency", Partitioning::Partition(0), std::slice::from_ref(&batch))
            .expect("produce");
        if i >= WARMUP {
            histogram.record(start.elapsed().as_micros() as u64).expect("record");
        }
        if Instant::now() > deadline {
            break;
        }
    }
    println!(
        "produce round trip, 1 message, --fsync {fsync}, {} connection: n={} p50={}µs p90={}µs p99={}µs p99.9={}µs max={}µs",
        if direct { "shard-direct" } else { "shared-port" },
        histogram.len(),
        histogram.value_at_quantile(0.50),
        histogram.value_at_quantile(0.90),
        histogram.value_at_quantile(0.99),
        histogram.value_at_quantile(0.999),
        histogram.max()
    );
}

#[test]
#[ignore = "a measurement; run with --release -- --ignored --nocapture"]
fn one_message_produce_round_trip() {
    measure("never", true);
    measure("never", false);
    measure("always", true);
}
