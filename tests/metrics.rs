//! The Prometheus endpoint (`--metrics-listen`) of the real broker binary: scraped every 200 ms
//! during a bounded produce and consume load with the SDK, every scrape validated by
//! `promtool check metrics` (Debian's `prometheus` package; SKIP without it, a failure under
//! `CI=true`), counters checked never to decrease, and the figures checked against the load:
//! messages per partition, fsyncs under `--fsync always`, consumer lag before and after a group
//! commits. Also: hostile clients on the metrics port do not stop other scrapes. Every wait is
//! bounded.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use ringbroker::client::consumer::{AutoCommit, Consumer};
use ringbroker::client::{Client, ShardRouter};
use ringbroker::protocol::batch::BatchBuilder;
use ringbroker::protocol::durable::DurableConfig;
use ringbroker::protocol::messages::{Partitioning, TopicConfig};

const PARTITIONS: u32 = 4;
const BATCHES_PER_PARTITION: u32 = 25;
const MESSAGES_PER_BATCH: u32 = 40;
const PER_PARTITION: u64 = (BATCHES_PER_PARTITION * MESSAGES_PER_BATCH) as u64;
/// The longest any single wait may take.
const WAIT: Duration = Duration::from_secs(15);
const SCRAPE_EVERY: Duration = Duration::from_millis(200);
/// Between rounds of produce requests (one per partition): about 1.5 s of producing.
const PRODUCE_PAUSE: Duration = Duration::from_millis(60);

/// Series name (with labels) to value.
type Scrape = BTreeMap<String, f64>;

/// Whether promtool is usable; SKIP (false) without it, a panic under CI=true.
fn promtool_present() -> bool {
    let found = Command::new("promtool").arg("--version").output().is_ok_and(|out| out.status.success());
    if !found {
        let install = "apt-get install prometheus";
        if std::env::var("CI").is_ok_and(|ci| ci == "true") {
            panic!("promtool missing under CI=true (.ci/run installs it): {install}");
        }
        println!("SKIP: install promtool: {install}");
    }
    found
}

fn free_port() -> SocketAddr {
    let probe = TcpListener::bind("127.0.0.1:0").expect("bind probe");
    probe.local_addr().expect("addr")
}

/// One HTTP exchange; the whole answer (the endpoint closes after one).
fn http(address: SocketAddr, request: &[u8]) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(request)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

/// `GET /metrics`: the body, after checking status and content type.
fn scrape_text(address: SocketAddr) -> String {
    let answer = http(address, b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n").expect("scrape");
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("Content-Type: text/plain; version=0.0.4"), "{head}");
    body.to_string()
}

fn parse(text: &str) -> Scrape {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("series and value");
            (series.to_string(), value.parse().unwrap_or_else(|_| panic!("value of {line}")))
        })
        .collect()
}

fn promtool_check(text: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    child.stdin.take().ok_or("stdin")?.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(said)
    }
}

/// Whether a series only grows (counters, histogram buckets, counts and sums).
fn monotonic(series: &str) -> bool {
    let name = series.split('{').next().unwrap_or(series);
    ["_total", "_bucket", "_count", "_sum"].iter().any(|suffix| name.ends_with(suffix))
}

/// Checks a scrape against the one before it; returns what went wrong.
fn compare(previous: &Scrape, now: &Scrape) -> Vec<String> {
    let mut wrong = Vec::new();
    for (series, &value) in now {
        if let Some(&before) = previous.get(series) {
            if monotonic(series) && value < before {
                wrong.push(format!("{series} went down from {before} to {value}"));
            }
        }
        if let Some(prefix) = series.strip_suffix("}").filter(|_| series.contains("_count{")) {
            let inf = format!("{},le=\"+Inf\"}}", prefix.replacen("_count{", "_bucket{", 1));
            if now.get(&inf) != Some(&value) {
                wrong.push(format!("{series} is {value} but {inf} is {:?}", now.get(&inf)));
            }
        }
    }
    wrong
}

/// Sum of the series of `name` whose labels contain every one of `labels`.
fn sum<S: AsRef<str>>(scrape: &Scrape, name: &str, labels: &[S]) -> f64 {
    scrape
        .iter()
        .filter(|(series, _)| {
            series.split('{').next() == Some(name)
                && labels.iter().all(|label| series.contains(label.as_ref()))
        })
        .map(|(_, value)| value)
        .sum()
}

/// Scrapes until `done` holds for a scrape, within [`WAIT`]; returns that scrape.
fn scrape_until(address: SocketAddr, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + WAIT;
    loop {
        let scrape = parse(&scrape_text(address));
        if done(&scrape) {
            return scrape;
        }
        assert!(Instant::now() < deadline, "metrics never showed {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn partition_label(partition: u32) -> String {
    format!("partition=\"{partition}\"")
}

/// Labels of the lag of group `g` on `partition`.
fn group_lag(partition: u32) -> Vec<String> {
    vec![partition_label(partition), "consumer_type=\"group\"".into(), "consumer=\"g\"".into()]
}

/// Labels of the lag of durable consumer `d` on `partition`.
fn durable_lag(partition: u32) -> Vec<String> {
    vec![partition_label(partition), "consumer_type=\"durable\"".into(), "consumer=\"d\"".into()]
}

const NONE: &[&str] = &[];

/// Scrapes every [`SCRAPE_EVERY`] until stopped, validating each; returns (scrapes, problems).
fn scraper(address: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(usize, Vec<String>)> {
    std::thread::spawn(move || {
        let (mut count, mut problems, mut previous) = (0, Vec::new(), Scrape::new());
        while !stop.load(Ordering::Relaxed) && problems.len() < 10 {
            let text = scrape_text(address);
            if let Err(said) = promtool_check(&text) {
                problems.push(format!("promtool: {said}"));
            }
            let now = parse(&text);
            problems.extend(compare(&previous, &now));
            (previous, count) = (now, count + 1);
            std::thread::sleep(SCRAPE_EVERY);
        }
        (count, problems)
    })
}

async fn produce_all(client: &Client) {
    for batch in 0..BATCHES_PER_PARTITION {
        for partition in 0..PARTITIONS {
            let mut builder = BatchBuilder::new(0, 0);
            for i in 0..MESSAGES_PER_BATCH {
                builder.push_payload(format!("m-{partition}-{batch}-{i}").as_bytes()).expect("push");
            }
            let bytes = builder.finish().expect("finish");
            client.produce("s", "t", Partitioning::Partition(partition), &[&bytes]).await.expect("produce");
        }
        // Paced, so the load spans several scrapes.
        tokio::time::sleep(PRODUCE_PAUSE).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_during_load_are_valid_and_match_it() {
    if !promtool_present() {
        return;
    }
    let metrics = free_port();
    let listen = metrics.to_string();
    let flags = ["--fsync", "always", "--metrics-listen", &listen, "--metrics-publish-interval", "100ms"];
    let broker = common::Broker::start(2, &flags);
    let stop = Arc::new(AtomicBool::new(false));
    let scraping = scraper(metrics, stop.clone());

    let client =
        Client::connect_addr(&broker.addr().to_string(), "ringbroker", "ringbroker").await.expect("connect");
    client.create_stream("s", false).await.expect("stream");
    let config = TopicConfig { partitions: PARTITIONS, ..TopicConfig::default() };
    client.create_topic("s", "t", config, false).await.expect("topic");
    client.create_group("s", "t", "g", false).await.expect("group");
    client.create_consumer("s", "t", DurableConfig::new("d"), false).await.expect("durable consumer");
    produce_all(&client).await;

    let produced = PER_PARTITION as f64;
    let before = tokio::task::spawn_blocking(move || {
        scrape_until(metrics, "the produced messages and the lag before consuming", |s| {
            (0..PARTITIONS).all(|p| {
                let label = [partition_label(p)];
                sum(s, "ringbroker_partition_messages", &label) == produced
                    && sum(s, "ringbroker_partition_next_offset", &label) == produced
                    && sum(s, "ringbroker_consumer_lag_messages", &group_lag(p)) == produced
                    && sum(s, "ringbroker_consumer_lag_messages", &durable_lag(p)) == produced
            })
        })
    })
    .await
    .expect("scrape");
    let produce_requests = f64::from(PARTITIONS * BATCHES_PER_PARTITION);
    let ok_produces = sum(&before, "ringbroker_requests_total", &["kind=\"produce\"", "status=\"ok\""]);
    assert_eq!(ok_produces, produce_requests, "one ok produce request per batch");
    assert!(sum(&before, "ringbroker_produce_ack_duration_seconds_count", NONE) >= produce_requests);
    assert!(sum(&before, "ringbroker_storage_fsyncs_total", NONE) > 0.0, "--fsync always fsyncs");
    assert!(sum(&before, "ringbroker_storage_fsync_duration_seconds_count", NONE) > 0.0);
    assert!(sum(&before, "ringbroker_partition_bytes", NONE) > 0.0);
    assert!(sum(&before, "ringbroker_partition_segments", NONE) >= f64::from(PARTITIONS));
    assert!(sum(&before, "ringbroker_received_bytes_total", &["wire=\"native\""]) > produced * 4.0);
    assert!(sum(&before, "ringbroker_sent_bytes_total", &["wire=\"native\""]) > 0.0);
    assert!(sum(&before, "ringbroker_connections", &["wire=\"native\""]) >= 1.0);
    assert_eq!(sum(&before, "ringbroker_storage_poisoned_partitions", NONE), 0.0);
    assert_eq!(sum(&before, "ringbroker_shards", NONE), 2.0);

    let router = ShardRouter::new(client.clone()).await.expect("router");
    let mut member = Consumer::builder(&router, "s", "t")
        .group("g")
        .auto_commit(AutoCommit::AfterPoll)
        .batch_size(500)
        .polling_interval(Duration::from_millis(20))
        .build()
        .await
        .expect("join");
    let total = PER_PARTITION as usize * PARTITIONS as usize;
    let deadline = tokio::time::Instant::now() + WAIT;
    for taken in 0..total {
        let next = tokio::time::timeout_at(deadline, member.next()).await;
        let next = next.unwrap_or_else(|_| panic!("only {taken} of {total} messages arrived"));
        next.expect("the stream never ends").expect("message");
    }
    member.shutdown().await.expect("leave");

    let after = tokio::task::spawn_blocking(move || {
        scrape_until(metrics, "zero group lag after the group committed", |s| {
            (0..PARTITIONS).all(|p| {
                let lag = group_lag(p);
                let reported = s.keys().any(|series| {
                    series.starts_with("ringbroker_consumer_lag_messages{")
                        && lag.iter().all(|label| series.contains(label.as_str()))
                });
                reported
                    && sum(s, "ringbroker_consumer_lag_messages", &lag) == 0.0
                    && sum(s, "ringbroker_consumer_lag_messages", &durable_lag(p)) == produced
            })
        })
    })
    .await
    .expect("scrape");
    assert!(sum(&after, "ringbroker_poll_duration_seconds_count", NONE) > 0.0);
    assert!(sum(&after, "ringbroker_requests_total", &["kind=\"poll\"", "status=\"ok\""]) > 0.0);

    stop.store(true, Ordering::Relaxed);
    let (scrapes, problems) =
        tokio::task::spawn_blocking(move || scraping.join().expect("scraper")).await.expect("join");
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(scrapes >= 5, "only {scrapes} scrapes during the load");
    println!("{scrapes} scrapes, every one valid; counters never went down");
}

#[test]
fn hostile_clients_do_not_stop_scrapes() {
    let metrics = free_port();
    let listen = metrics.to_string();
    let broker = common::Broker::start(1, &["--metrics-listen", &listen]);
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(metrics).expect("connect");
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: never-finished").expect("write");
        stalled.push(stream);
    }
    let garbage = http(metrics, b"\x00\x01\x02\xff\xfe garbage\r\n\r\n").expect("garbage");
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage}");
    let mut huge = TcpStream::connect(metrics).expect("connect");
    let _ = huge.write_all(&[b'A'; 8 * 1024]);
    let started = Instant::now();
    for _ in 0..5 {
        let text = scrape_text(metrics);
        assert!(text.contains("ringbroker_requests_total"));
    }
    assert!(started.elapsed() < Duration::from_secs(3), "scrapes waited on the hostile clients");
    assert!(http(metrics, b"GET /nope HTTP/1.1\r\n\r\n").expect("404").starts_with("HTTP/1.1 404"));
    let mut answer = String::new();
    huge.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let _ = huge.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(common::pings(broker.addr()), "the broker still serves");
    drop(stalled);
}
