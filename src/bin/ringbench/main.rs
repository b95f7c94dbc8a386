//! `ringbench`: the load generator. Drives a ringbroker with pinned or balanced producers and
//! consumers (or measures the loopback TCP ceiling without a broker) and reports throughput and
//! latency (hdrhistogram) as a table, optionally as JSON.
//!
//! Threads: the main thread sets up the streams on a current-thread tokio runtime, then starts
//! one OS thread per actor, each with its own current-thread runtime (pinned to a core with
//! `--cores`), so actors never share a runtime or a connection. Each actor connects shard-aware:
//! a [`ShardRouter`](ringbroker::client::ShardRouter) hands it a client on the owner shard of its
//! partition. All actors connect first, wait on a barrier, then run.
//!
//! Measurement: a run is bounded by `--batches` (per actor) or `--duration`, both of which
//! include the warm-up; samples and bytes completed during the first `--warmup` seconds are
//! discarded, and throughput is computed over the rest. A run that ends inside its warm-up is an
//! error rather than a report of nothing.
//!
//! Contract with scripts: exit status 0 with the report on stdout; otherwise one line
//! `ringbench: <error>` on stderr and exit status 1 (2 for a usage error).

#![warn(rust_2018_idioms)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod acking;
mod actors;
mod filtered;
mod loopback;
mod named;
mod payload;
mod plot;
mod produce;
mod rabbitmq;
mod report;
mod subscribe;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ringbroker::client::{Client, ClientError};
use ringbroker::constants::{BATCH_BYTES_MAX, BATCH_RECORDS_MAX};
use ringbroker::protocol::batch::Compression;
use ringbroker::protocol::durable::{AckPolicy, Retention, TopicPolicy};
use ringbroker::protocol::filter::Filter;
use ringbroker::protocol::messages::{Status, TopicConfig};

use crate::payload::Payload;

/// Most actors of one kind (each is an OS thread with its own runtime and connections).
const ACTORS_MAX: u32 = 256;
/// Most streams a run creates.
const STREAMS_MAX: u32 = 1024;
/// Most partitions per topic a run creates.
const PARTITIONS_MAX: u32 = 4096;
/// The topic every bench stream gets.
const TOPIC: &str = "t";
/// Most distinct filter values `--filter-values` spreads batches over.
const FILTER_VALUES_SPREAD_MAX: i64 = 1000;
/// Per-record overhead allowed for when sizing a batch against `BATCH_BYTES_MAX` (record
/// header and batch header, generously).
const RECORD_OVERHEAD_BYTES: u64 = 64;

/// Load generator for ringbroker: pinned and balanced producers and consumers, end-to-end
/// latency, and the loopback TCP ceiling.
#[derive(Parser, Debug)]
#[command(name = "ringbench", version, about = "Load generator for ringbroker")]
struct Cli {
    /// Server address, `host:port` (the shared listener; shard ports come from Metadata).
    #[arg(long, default_value = "127.0.0.1:7720")]
    server: String,
    /// User to log in as.
    #[arg(long, default_value = "ringbroker", env = "RINGBROKER_USER")]
    user: String,
    /// Password to log in with.
    #[arg(
        long,
        default_value = "ringbroker",
        env = "RINGBROKER_PASSWORD",
        hide_env_values = true,
        hide_default_value = true
    )]
    password: String,
    /// Speak TLS to a broker started with `--tls-cert`, trusting the certificate authorities in
    /// this PEM file (the shard-direct connections use TLS too).
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<std::path::PathBuf>,
    #[command(subcommand)]
    workload: WorkloadCommand,
}

/// The workloads, each with the same options.
#[derive(Subcommand, Debug)]
enum WorkloadCommand {
    /// Producer i writes only partition i, up to 4 batches in flight.
    PinnedProducer(Options),
    /// Fill the partitions, then consumer i reads partition i by offset.
    PinnedConsumer(Options),
    /// Pinned producers and pinned consumers at once.
    PinnedProducerAndConsumer(Options),
    /// Producers spread their batches round robin over all partitions.
    BalancedProducer(Options),
    /// Fill the partitions, then a consumer group reads everything (auto-commit).
    BalancedConsumerGroup(Options),
    /// Producers stamp each message; consumers (long poll, or push with --subscribe) record
    /// receive minus send.
    EndToEnd(Options),
    /// Fill the partitions, then consumer i fetches partition i through a durable consumer and
    /// acknowledges every fetch (one Ack request per fetch; `--ack all`: one AckAll).
    AckConsumer(Options),
    /// Pinned producers and acknowledging durable-consumer fetchers at once on a work-queue
    /// topic (or `--retention interest`): the broker removes what is acknowledged.
    Workqueue(Options),
    /// No broker: raw loopback TCP bandwidth between tokio senders and receivers.
    Loopback(Options),
    /// `pinned-producer`'s shape through the RabbitMQ Streams listener with the Rust stream
    /// client: producer i publishes batches of --batch messages to member i of super stream
    /// `bench` (--partitions members) and waits for every confirmation.
    RabbitmqProducer(RabbitmqOptions),
    /// Draw a scripts/bench.sh result file (results/<timestamp>.json) as an SVG bar chart.
    Plot {
        /// The result file.
        source: std::path::PathBuf,
        /// The SVG to write.
        target: std::path::PathBuf,
    },
}

/// The options of `rabbitmq-producer`: the shared ones and the listener's address.
#[derive(Args, Debug, Clone)]
struct RabbitmqOptions {
    /// The broker's RabbitMQ Streams listener (`--rabbitmq-listen`), `host:port`; producers
    /// reach each member's owner shard through the addresses its Metadata names.
    #[arg(long, default_value = rabbitmq::SERVER_DEFAULT)]
    rabbitmq_server: String,
    #[command(flatten)]
    options: Options,
}

/// What a run does; see the module documentation for the measurement rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// See [`WorkloadCommand::PinnedProducer`].
    PinnedProducer,
    /// See [`WorkloadCommand::PinnedConsumer`].
    PinnedConsumer,
    /// See [`WorkloadCommand::PinnedProducerAndConsumer`].
    PinnedProducerAndConsumer,
    /// See [`WorkloadCommand::BalancedProducer`].
    BalancedProducer,
    /// See [`WorkloadCommand::BalancedConsumerGroup`].
    BalancedConsumerGroup,
    /// See [`WorkloadCommand::EndToEnd`].
    EndToEnd,
    /// See [`WorkloadCommand::AckConsumer`].
    AckConsumer,
    /// See [`WorkloadCommand::Workqueue`].
    Workqueue,
    /// See [`WorkloadCommand::Loopback`].
    Loopback,
    /// See [`WorkloadCommand::RabbitmqProducer`].
    RabbitmqProducer,
}

impl Workload {
    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::PinnedProducer => "pinned-producer",
            Workload::PinnedConsumer => "pinned-consumer",
            Workload::PinnedProducerAndConsumer => "pinned-producer-and-consumer",
            Workload::BalancedProducer => "balanced-producer",
            Workload::BalancedConsumerGroup => "balanced-consumer-group",
            Workload::EndToEnd => "end-to-end",
            Workload::AckConsumer => "ack-consumer",
            Workload::Workqueue => "workqueue",
            Workload::Loopback => "loopback",
            Workload::RabbitmqProducer => "rabbitmq-producer",
        }
    }
}

/// Options shared by every workload.
#[derive(Args, Debug, Clone)]
struct Options {
    /// Producer actors (for loopback: sender/receiver pairs).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(ACTORS_MAX)))]
    producers: u32,
    /// Consumer actors.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(ACTORS_MAX)))]
    consumers: u32,
    /// Streams (`bench-0` …); actor i uses stream i modulo this.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(STREAMS_MAX)))]
    streams: u32,
    /// Partitions of each topic [default: --producers].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(PARTITIONS_MAX)))]
    partitions: Option<u32>,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    message_size: u32,
    /// Messages per batch (one batch per produce request; the poll size of consumers).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=i64::from(BATCH_RECORDS_MAX)))]
    batch: u32,
    /// Batches per actor, warm-up included [default: 1000 unless --duration]; consumer
    /// workloads fill this many batches into each partition.
    #[arg(long, conflicts_with = "duration", value_parser = clap::value_parser!(u64).range(1..))]
    batches: Option<u64>,
    /// Run for this many seconds, warm-up included (consumer workloads still fill 1000 batches
    /// per partition and stop early when they have read them).
    #[arg(long, value_parser = parse_seconds)]
    duration: Option<f64>,
    /// Limit each actor to this many MB/s (10^6 bytes) of payload.
    #[arg(long, value_parser = parse_positive)]
    rate: Option<f64>,
    /// Produce requests each producer keeps in flight (pipelining). More hides the round trip
    /// when the broker has cores to spare, and raises the acknowledgement latency (it includes
    /// the wait behind earlier batches); with broker and clients on 2 cores, 1 gave the most
    /// throughput and the lowest latency (see README, Performance).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    in_flight: u32,
    /// Seconds at the start whose samples and bytes are discarded.
    #[arg(long, default_value_t = 1.0, value_parser = parse_seconds_or_zero)]
    warmup: f64,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Free text echoed into the JSON settings (how the server ran, e.g. "--fsync always").
    #[arg(long, allow_hyphen_values = true)]
    fsync_hint: Option<String>,
    /// Pin actor i to core LIST[i % len] (e.g. `0,1` or `0-3`).
    #[arg(long, value_parser = parse_cores)]
    cores: Option<CoreList>,
    /// Compress producers' batches: none, lz4 or zstd. MB/s stays the uncompressed payload;
    /// the report adds the bytes on the wire.
    #[arg(long, default_value = "none")]
    compression: Compression,
    /// Named producers: producer i declares `PREFIX-<i>` and stamps its id, epoch and sequences
    /// into its batches (the broker deduplicates them).
    #[arg(long, value_name = "PREFIX")]
    producer_name: Option<String>,
    /// Message bodies: random bytes, or compressible JSON-like order records.
    #[arg(long, value_enum, default_value = "random")]
    payload: Payload,
    /// Producers give every message of a batch one filter value, `v0` .. `v<N-1>` in turn
    /// batch by batch (homogeneous batches, each value used evenly; fills too).
    #[arg(long, value_name = "N", conflicts_with = "producer_name", value_parser = clap::value_parser!(u32).range(1..=FILTER_VALUES_SPREAD_MAX))]
    filter_values: Option<u32>,
    /// Partition consumers poll with these filter values (comma-separated, e.g. `v3`; not for
    /// balanced-consumer-group): the broker skips
    /// the other batches. MB/s counts the messages received; the report adds the bytes received
    /// and the bytes the broker skipped for them.
    #[arg(long, value_name = "LIST", value_delimiter = ',', num_args = 1..)]
    consume_filter: Vec<String>,
    /// Partition consumers read by push subscription with this initial credit (batches),
    /// granting each delivery's batches back on arrival, instead of by long poll.
    #[arg(long, value_name = "CREDITS", num_args = 0..=1, default_missing_value = subscribe::CREDITS_DEFAULT,
          value_parser = subscribe::parse_credits)]
    subscribe: Option<u32>,
    /// Topic retention: limits, interest or workqueue [default: workqueue for `workqueue`,
    /// limits otherwise].
    #[arg(long, value_parser = parse_retention)]
    retention: Option<Retention>,
    /// Ack policy of the durable consumer of `ack-consumer` and `workqueue`: explicit (every
    /// fetched offset acknowledged, in one request per fetch) or all (one AckAll per fetch).
    #[arg(long, default_value = "explicit", value_parser = parse_ack)]
    ack: AckPolicy,
    /// Consumer workloads: `all` (create the streams, fill, consume), `fill` (create and fill,
    /// then exit: e.g. before restarting the broker for a cold cache), or `consume` (the streams
    /// were filled by an earlier `--phase fill` with the same shape; read them).
    #[arg(long, value_enum, default_value = "all")]
    phase: Phase,
}

/// Which part of a consumer workload to run (`--phase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Create, fill, consume.
    All,
    /// Create and fill only.
    Fill,
    /// Consume what an earlier fill left.
    Consume,
}

fn parse_retention(text: &str) -> Result<Retention, String> {
    match text {
        "limits" => Ok(Retention::Limits),
        "interest" => Ok(Retention::Interest),
        "workqueue" => Ok(Retention::WorkQueue),
        _ => Err(format!("retention {text:?}: expected limits, interest or workqueue")),
    }
}

fn parse_ack(text: &str) -> Result<AckPolicy, String> {
    match text {
        "explicit" => Ok(AckPolicy::Explicit),
        "all" => Ok(AckPolicy::All),
        _ => Err(format!("ack {text:?}: expected explicit or all")),
    }
}

/// Core ids for `--cores`, in the order given.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(transparent)]
pub struct CoreList(pub Vec<usize>);

/// Batches per actor when neither `--batches` nor `--duration` is given, and the fill of
/// consumer workloads under `--duration`.
pub const BATCHES_DEFAULT: u64 = 1000;

/// When a run stops.
#[derive(Debug, Clone, Copy, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// After this many batches per actor.
    Batches(u64),
    /// After this long.
    Duration(#[serde(serialize_with = "serialize_seconds")] Duration),
}

fn serialize_seconds<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}

/// The validated settings of a run, echoed into the JSON report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Settings {
    /// Server address.
    pub server: String,
    /// User name (the password is never reported).
    pub user: String,
    #[serde(skip)]
    password: String,
    /// Whether the run spoke TLS.
    pub tls: bool,
    /// The CA file trusted for TLS.
    #[serde(skip)]
    tls_ca: Option<std::path::PathBuf>,
    /// Producer actors.
    pub producers: u32,
    /// Consumer actors.
    pub consumers: u32,
    /// Streams.
    pub streams: u32,
    /// Partitions per topic.
    pub partitions: u32,
    /// Payload bytes per message.
    pub message_size: u32,
    /// Messages per batch.
    pub batch: u32,
    /// When the run stops.
    pub bound: Bound,
    /// Per-actor rate limit (MB/s), if any.
    pub rate_mb_per_s: Option<f64>,
    /// Produce requests in flight per producer.
    pub in_flight: usize,
    /// Warm-up whose samples are discarded.
    #[serde(serialize_with = "serialize_seconds")]
    pub warmup: Duration,
    /// Echoed from `--fsync-hint`.
    pub fsync_hint: Option<String>,
    /// Core pinning, if any.
    pub cores: Option<CoreList>,
    /// Batch compression of the producers.
    #[serde(serialize_with = "serialize_display")]
    pub compression: Compression,
    /// The name prefix of named producers, if any.
    pub producer_name: Option<String>,
    /// What the message bodies are.
    pub payload: Payload,
    /// Producers spread their batches over this many filter values, if set.
    pub filter_values: Option<u32>,
    /// The filter values consumers poll with (empty: no filter).
    pub consume_filter: Vec<String>,
    /// Initial credit of subscribing consumers (`--subscribe`); `None`: they long-poll.
    pub subscribe_credits: Option<u32>,
    /// Topic retention asked for (`--retention`).
    #[serde(serialize_with = "serialize_debug")]
    pub retention: Option<Retention>,
    /// Ack policy of durable-consumer workloads.
    #[serde(serialize_with = "serialize_debug")]
    pub ack: AckPolicy,
    /// Which part of a consumer workload runs.
    pub phase: Phase,
    /// The RabbitMQ Streams listener `rabbitmq-producer` publishes through.
    pub rabbitmq_server: Option<String>,
}

fn serialize_debug<T: std::fmt::Debug, S: serde::Serializer>(
    value: &T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&format!("{value:?}"))
}

fn serialize_display<T: std::fmt::Display, S: serde::Serializer>(
    value: &T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

impl Settings {
    fn new(cli: &Cli, options: &Options) -> Result<Settings, String> {
        let bound = match (options.batches, options.duration) {
            (_, Some(seconds)) => Bound::Duration(Duration::from_secs_f64(seconds)),
            (Some(batches), None) => Bound::Batches(batches),
            (None, None) => Bound::Batches(BATCHES_DEFAULT),
        };
        let batch_bytes =
            u64::from(options.batch) * (u64::from(options.message_size) + RECORD_OVERHEAD_BYTES);
        if !options.consume_filter.is_empty() {
            Filter::new(&options.consume_filter, false)
                .map_err(|error| format!("--consume-filter: {error}"))?;
        }
        if batch_bytes > BATCH_BYTES_MAX as u64 {
            return Err(format!(
                "a batch of {} messages of {} bytes exceeds the {BATCH_BYTES_MAX}-byte batch limit",
                options.batch, options.message_size
            ));
        }
        Ok(Settings {
            server: cli.server.clone(),
            user: cli.user.clone(),
            password: cli.password.clone(),
            tls: cli.tls_ca.is_some(),
            tls_ca: cli.tls_ca.clone(),
            producers: options.producers,
            consumers: options.consumers,
            streams: options.streams,
            partitions: options.partitions.unwrap_or(options.producers),
            message_size: options.message_size,
            batch: options.batch,
            bound,
            rate_mb_per_s: options.rate,
            in_flight: options.in_flight as usize,
            warmup: Duration::from_secs_f64(options.warmup),
            fsync_hint: options.fsync_hint.clone(),
            cores: options.cores.clone(),
            compression: options.compression,
            producer_name: options.producer_name.clone(),
            payload: options.payload,
            filter_values: options.filter_values,
            consume_filter: options.consume_filter.clone(),
            subscribe_credits: options.subscribe,
            retention: options.retention,
            ack: options.ack,
            phase: options.phase,
            rabbitmq_server: None,
        })
    }

    /// The name of stream `index`.
    pub fn stream_name(index: u32) -> String {
        format!("bench-{index}")
    }

    /// The stream actor `actor` uses.
    pub fn stream_of(&self, actor: u32) -> String {
        Self::stream_name(actor % self.streams)
    }

    /// The core actor `actor` (counted over all actors of the run) is pinned to.
    pub fn core_of(&self, actor: usize) -> Option<usize> {
        let cores = &self.cores.as_ref()?.0;
        cores.get(actor % cores.len()).copied()
    }

    /// Payload bytes of one batch.
    pub fn batch_payload_bytes(&self) -> u64 {
        u64::from(self.batch) * u64::from(self.message_size)
    }

    /// Opens a logged-in client on the shared listener (on the calling runtime).
    pub async fn connect(&self) -> Result<Client, ClientError> {
        let mut target = ringbroker::client::ConnectionString::new(&self.server, &self.user, &self.password)?;
        if let Some(ca) = &self.tls_ca {
            target.options.tls = true;
            target.options.tls_ca = Some(ca.clone());
        }
        Client::connect(&target).await
    }
}

fn parse_seconds(text: &str) -> Result<f64, String> {
    parse_positive(text)
}

fn parse_seconds_or_zero(text: &str) -> Result<f64, String> {
    let value: f64 = text.parse().map_err(|_| format!("{text:?} is not a number"))?;
    if !(0.0..=86_400.0).contains(&value) {
        return Err(format!("{value} is not between 0 and 86400"));
    }
    Ok(value)
}

fn parse_positive(text: &str) -> Result<f64, String> {
    let value: f64 = text.parse().map_err(|_| format!("{text:?} is not a number"))?;
    if !(value > 0.0 && value <= 1e9) {
        return Err(format!("{value} is not a positive number (at most 1e9)"));
    }
    Ok(value)
}

/// Parses `0,2,4-7` into core ids.
fn parse_cores(text: &str) -> Result<CoreList, String> {
    const CORES_MAX: usize = 4096;
    let mut cores = Vec::new();
    for part in text.split(',').map(str::trim) {
        let parse =
            |number: &str| number.trim().parse::<usize>().map_err(|_| format!("bad core id {number:?}"));
        let (first, last) = match part.split_once('-') {
            Some((first, last)) => (parse(first)?, parse(last)?),
            None => (parse(part)?, parse(part)?),
        };
        if first > last || last >= CORES_MAX {
            return Err(format!("bad core range {part:?}"));
        }
        cores.extend(first..=last);
    }
    if cores.is_empty() || cores.len() > CORES_MAX {
        return Err("--cores needs between 1 and 4096 core ids".to_string());
    }
    Ok(CoreList(cores))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(error),
    };
    let (workload, options) = match &cli.workload {
        WorkloadCommand::PinnedProducer(options) => (Workload::PinnedProducer, options),
        WorkloadCommand::PinnedConsumer(options) => (Workload::PinnedConsumer, options),
        WorkloadCommand::PinnedProducerAndConsumer(options) => (Workload::PinnedProducerAndConsumer, options),
        WorkloadCommand::BalancedProducer(options) => (Workload::BalancedProducer, options),
        WorkloadCommand::BalancedConsumerGroup(options) => (Workload::BalancedConsumerGroup, options),
        WorkloadCommand::EndToEnd(options) => (Workload::EndToEnd, options),
        WorkloadCommand::AckConsumer(options) => (Workload::AckConsumer, options),
        WorkloadCommand::Workqueue(options) => (Workload::Workqueue, options),
        WorkloadCommand::Loopback(options) => (Workload::Loopback, options),
        WorkloadCommand::RabbitmqProducer(rabbitmq) => (Workload::RabbitmqProducer, &rabbitmq.options),
        WorkloadCommand::Plot { source, target } => {
            return match plot::run(source, target) {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => report_error(&message, 1),
            };
        }
    };
    let mut settings = match Settings::new(&cli, options) {
        Ok(settings) => settings,
        Err(message) => return report_error(&message, 2),
    };
    if let WorkloadCommand::RabbitmqProducer(rabbitmq) = &cli.workload {
        settings.rabbitmq_server = Some(rabbitmq.rabbitmq_server.clone());
    }
    match run(workload, &settings, options.json.as_deref()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => report_error(&message, 1),
    }
}

/// Runs the workload and prints (and writes) the report.
fn run(workload: Workload, settings: &Settings, json: Option<&std::path::Path>) -> Result<(), String> {
    let filtering = !settings.consume_filter.is_empty() && workload != Workload::Loopback;
    let skipped_before = filtering.then(|| filtered::skipped_bytes(settings)).transpose()?;
    let results = if workload == Workload::Loopback {
        loopback::run(settings)?
    } else if let Some(server) = settings.rabbitmq_server.as_deref() {
        rabbitmq::run(settings, &rabbitmq::Endpoint::parse(server)?)?
    } else {
        actors::check(workload, settings)?;
        subscribe::check(workload, settings)?;
        if settings.phase != Phase::Consume {
            setup(settings, workload)?;
        }
        if settings.phase == Phase::Fill {
            actors::fill_only(workload, settings)?;
            println!("filled; run again with --phase consume to read");
            return Ok(());
        }
        actors::run(workload, settings)?
    };
    let skipped_after = filtering.then(|| filtered::skipped_bytes(settings)).transpose()?;
    let summary = report::Summary::new(workload, settings, results)?;
    print!("{}", summary.table());
    let mut document = summary.json();
    if let (Some(before), Some(after)) = (skipped_before, skipped_after) {
        let tally = filtered::Tally::of(summary.actors(), after.saturating_sub(before));
        print!("{}", tally.line(settings));
        document["filter"] = tally.json();
    }
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&document).map_err(|error| format!("JSON: {error}"))?;
        std::fs::write(path, text + "\n")
            .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    }
    Ok(())
}

/// Deletes and recreates each bench stream with its topic, so runs are independent.
fn setup(settings: &Settings, workload: Workload) -> Result<(), String> {
    let runtime = current_thread_runtime()?;
    runtime.block_on(async {
        let client = settings.connect().await.map_err(|error| format!("{}: {error}", settings.server))?;
        for index in 0..settings.streams {
            let stream = Settings::stream_name(index);
            match client.delete_stream(&stream).await {
                Ok(()) => {}
                Err(error) if error.status() == Some(Status::UnknownStream) => {}
                Err(error) => return Err(format!("deleting stream {stream}: {error}")),
            }
            client
                .create_stream(&stream, false)
                .await
                .map_err(|error| format!("creating stream {stream}: {error}"))?;
            let config = TopicConfig {
                partitions: settings.partitions,
                retention_max_age_us: None,
                retention_max_bytes: None,
                segment_bytes: None,
            };
            let retention = acking::retention_of(settings, workload);
            let policy = TopicPolicy { retention, ..TopicPolicy::default() };
            client
                .create_topic_with_policy(&stream, TOPIC, config, policy, false)
                .await
                .map_err(|error| format!("creating topic {stream}/{TOPIC}: {error}"))?;
            if matches!(workload, Workload::AckConsumer | Workload::Workqueue) {
                client
                    .create_consumer(&stream, TOPIC, acking::consumer_config(settings), false)
                    .await
                    .map_err(|error| format!("creating the durable consumer of {stream}/{TOPIC}: {error}"))?;
            }
        }
        Ok(())
    })
}

/// A current-thread tokio runtime with timers and I/O.
pub fn current_thread_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start a tokio runtime: {error}"))
}

/// Prints help and version as clap does; any other parse error as one line, exit status 2.
fn usage_error(error: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(error.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = error.print();
        return ExitCode::SUCCESS;
    }
    let text = error.to_string();
    let text = text.split("\n\nUsage:").next().unwrap_or_default();
    let text = text.strip_prefix("error: ").unwrap_or(text);
    report_error(&format!("{text} (see --help)"), 2)
}

/// Writes `ringbench: <message>` as a single line on stderr.
fn report_error(message: &str, code: u8) -> ExitCode {
    let line: Vec<&str> = message.split_whitespace().collect();
    eprintln!("ringbench: {}", line.join(" "));
    ExitCode::from(code)
}
