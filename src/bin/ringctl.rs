//! `ringctl`: administer a ringbroker, produce from stdin and consume to stdout.
//!
//! Built on [`ringbroker::client::Client`] with a current-thread tokio runtime on the main
//! thread; `produce` reads stdin on one extra thread (blocking reads) and hands finished batches
//! to the runtime over a bounded channel. Named producers (`produce --name`, `producer …`) live
//! in the `producer` submodule; durable consumers, `fetch` and `topic info` in `durable`.
//!
//! Contract with scripts: exit status 0 on success; otherwise non-zero (2 for a usage error, 1
//! for anything else) with exactly one line `ringctl: <error>` on stderr, naming the server's
//! status when the server refused (`ringctl: UnknownStream(20): stream "x" does not exist`).
//! `--json` prints the server's answer as JSON instead of a table. A closed stdout (`| head`)
//! ends output quietly.

#![warn(rust_2018_idioms)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

#[path = "ringctl/durable.rs"]
mod durable;
#[path = "ringctl/producer.rs"]
mod producer;
#[path = "ringctl/subscribe.rs"]
mod subscribe;
#[path = "ringctl/superstream.rs"]
mod superstream;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand, ValueEnum};
use ringbroker::client::{Client, ConnectionString, Polled};
use ringbroker::constants::BATCH_RECORDS_MAX;
use ringbroker::protocol::batch::{BatchBuilder, BatchError, Compression, Message};
use ringbroker::protocol::durable::{Discard, Retention, TopicPolicy, TTL_HEADER};
use ringbroker::protocol::filter::Filter;
use ringbroker::protocol::messages::{
    ConsumerRef, CreateUser, GroupInfo, GroupTarget, JoinGroup, PartitionStats, PartitionTarget,
    Partitioning, PollRequest, PollStrategy, PollTarget, ProduceResponse, Status, StreamInfo,
    StreamPermission, TopicInfo,
};

/// Most messages asked for in one poll.
const POLL_MESSAGES_MAX: u32 = 10_000;
/// Most bytes asked for in one poll.
const POLL_BYTES_MAX: u32 = 4 * 1024 * 1024;
/// Long-poll wait of `consume --follow`.
const FOLLOW_WAIT_MS: u32 = 1_000;
/// Session timeout asked for when joining a group.
const GROUP_SESSION_TIMEOUT_MS: u32 = 30_000;
/// Heartbeat period of a group member (well inside the session timeout).
const GROUP_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// Finished batches queued between the stdin thread and the sender.
const PRODUCE_QUEUE_BATCHES: usize = 4;
/// Read buffer on stdin; a batch is cut whenever it runs dry.
const STDIN_BUFFER_BYTES: usize = 1024 * 1024;

/// Administer a ringbroker server, produce messages from stdin and consume them to stdout.
#[derive(Parser, Debug)]
#[command(
    name = "ringctl",
    version,
    about = "Administer a ringbroker server, produce from stdin, consume to stdout"
)]
struct Cli {
    /// Server address, `host:port`.
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
    /// `ringbroker://user:password@host:port[?options]`; overrides --server, --user, --password.
    #[arg(long)]
    url: Option<String>,
    /// Print answers as JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check that the server answers.
    Ping,
    /// Create, delete, list and show streams.
    #[command(subcommand)]
    Stream(StreamCommand),
    /// Create, delete, list and show topics.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Send stdin to a topic, one message per line.
    Produce(ProduceArgs),
    /// Named producers: last stored sequence, list, delete.
    #[command(subcommand)]
    Producer(producer::ProducerCommand),
    /// Print a topic's messages, one payload per line.
    Consume(ConsumeArgs),
    /// Durable consumers: create, delete, info, list.
    #[command(subcommand)]
    Consumer(durable::ConsumerCommand),
    /// Pull messages for a durable consumer, print them and acknowledge each.
    Fetch(durable::FetchArgs),
    /// Store or read a consumer's or group's offset.
    #[command(subcommand)]
    Offset(OffsetCommand),
    /// Create, delete, list and describe consumer groups.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Super streams: create, delete, route a key, list partitions.
    #[command(subcommand)]
    Superstream(superstream::SuperStreamCommand),
    /// Manage users and their rights (administrators only).
    #[command(subcommand)]
    User(UserCommand),
    /// Partition, topic and group statistics.
    Stats {
        /// Only this stream.
        #[arg(long)]
        stream: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum StreamCommand {
    /// Create a stream.
    Create {
        /// Stream name.
        name: String,
        /// Succeed when it exists already.
        #[arg(long)]
        if_missing: bool,
    },
    /// Delete a stream with all its topics and data.
    Delete {
        /// Stream name.
        name: String,
    },
    /// List streams.
    List,
    /// Show one stream and its topics.
    Get {
        /// Stream name.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum TopicCommand {
    /// Create a topic.
    Create {
        /// Stream name.
        stream: String,
        /// Topic name.
        topic: String,
        /// Number of partitions.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        partitions: u32,
        /// Delete sealed segments older than this (`7d`, `12h`, `30m`, `45s`).
        #[arg(long, value_parser = parse_duration_us)]
        max_age: Option<u64>,
        /// Delete the oldest sealed segments while a partition is larger (`512M`, `10G`).
        #[arg(long, value_parser = parse_bytes)]
        max_bytes: Option<u64>,
        /// Segment size (`64M`); default: the server's.
        #[arg(long, value_parser = parse_bytes)]
        segment_bytes: Option<u64>,
        /// Keep messages by limits only, while a durable consumer wants them (interest), or
        /// until one consumer acknowledges them (workqueue).
        #[arg(long, default_value = "limits")]
        retention: RetentionArg,
        /// The most live messages per partition.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        max_messages: Option<u64>,
        /// At a limit: remove the oldest messages (old) or refuse new ones (new).
        #[arg(long, default_value = "old")]
        discard: DiscardArg,
        /// Accept messages with a time to live (`produce --ttl`).
        #[arg(long)]
        allow_ttl: bool,
        /// Succeed when it exists already.
        #[arg(long)]
        if_missing: bool,
    },
    /// Show a topic's live contents: messages, bytes, first and last offsets per partition.
    Info(durable::TopicInfoArgs),
    /// Delete a topic and its data.
    Delete {
        /// Stream name.
        stream: String,
        /// Topic name.
        topic: String,
    },
    /// List a stream's topics.
    List {
        /// Stream name.
        stream: String,
    },
    /// Show one topic: settings, partitions and their shards, groups.
    Get {
        /// Stream name.
        stream: String,
        /// Topic name.
        topic: String,
    },
    /// Add partitions to a topic.
    AddPartitions {
        /// Stream name.
        stream: String,
        /// Topic name.
        topic: String,
        /// Partitions to add.
        #[arg(value_parser = clap::value_parser!(u32).range(1..))]
        count: u32,
    },
}

/// `--retention` of `topic create`.
#[derive(ValueEnum, Clone, Copy, Debug)]
enum RetentionArg {
    /// By age, size and count only.
    Limits,
    /// While a durable consumer whose filter matches has not acknowledged it.
    Interest,
    /// Until one consumer acknowledges it (consumers' filters may not overlap).
    Workqueue,
}

/// `--discard` of `topic create`.
#[derive(ValueEnum, Clone, Copy, Debug)]
enum DiscardArg {
    /// Remove the oldest messages.
    Old,
    /// Refuse the produce.
    New,
}

#[derive(Args, Debug)]
struct ProduceArgs {
    /// Stream name.
    stream: String,
    /// Topic name.
    topic: String,
    /// Write to this partition (default: round robin).
    #[arg(long, conflicts_with = "key")]
    partition: Option<u32>,
    /// The topic is a super stream: send every message to the partitions this routing key
    /// routes to (by the super stream's routing, resolved once before stdin is read).
    #[arg(long, conflicts_with_all = ["partition", "key", "name"])]
    routing_key: Option<String>,
    /// Partition by this key (also set as every message's key).
    #[arg(long)]
    key: Option<String>,
    /// Most lines per batch; a batch is also sent whenever stdin has no more input buffered.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=i64::from(BATCH_RECORDS_MAX)))]
    batch: u32,
    /// Produce as this named (idempotent) producer: declared before stdin is read, held until
    /// it ends; its sequences continue where the name's last run stopped. Without --partition
    /// or --key, lines take the partitions in turn.
    #[arg(long)]
    name: Option<String>,
    /// Hold the topic exclusively (other producers are refused until this one ends).
    #[arg(long, requires = "name")]
    exclusive: bool,
    /// Compress batches: none, lz4 or zstd.
    #[arg(long, default_value = "none")]
    compression: Compression,
    /// Give every message of the run this filter value (consumers filter with `--filter`).
    #[arg(long)]
    filter_value: Option<String>,
    /// Give every message this time to live (`30s`, `5m`; the topic must allow TTLs): the
    /// `ringbroker-ttl-ms` header.
    #[arg(long, value_parser = humantime::parse_duration)]
    ttl: Option<Duration>,
}

impl ProduceArgs {
    /// The value of the TTL header, in milliseconds.
    fn ttl_ms(&self) -> CliResult<Option<Vec<u8>>> {
        match self.ttl {
            None => Ok(None),
            Some(ttl) if ttl.as_millis() == 0 => Err("--ttl must be at least 1ms".into()),
            Some(ttl) => Ok(Some(ttl.as_millis().to_string().into_bytes())),
        }
    }
}

#[derive(Args, Debug)]
struct ConsumeArgs {
    /// Stream name.
    stream: String,
    /// Topic name.
    topic: String,
    /// Read this partition (default 0).
    #[arg(long, conflicts_with = "group")]
    partition: Option<u32>,
    /// Read as a member of this consumer group (created if missing); its offsets advance as
    /// messages are printed.
    #[arg(long)]
    group: Option<String>,
    /// Where to start: first, last, next (after the stored offset), offset=N, timestamp=T
    /// (µs since the epoch, or RFC 3339).
    #[arg(long, default_value = "next", value_parser = parse_from)]
    from: PollStrategy,
    /// Stop after this many messages.
    #[arg(long)]
    count: Option<u64>,
    /// Consumer name (keys the stored offset of a partition read).
    #[arg(long, default_value = "ringctl", conflicts_with = "group")]
    consumer: String,
    /// Keep waiting for new messages (until Ctrl-C or --count) instead of stopping at the end.
    #[arg(long)]
    follow: bool,
    /// Store the offset after the last printed message as the consumer's.
    #[arg(long)]
    commit: bool,
    /// Read by push subscription (the broker sends batches as they arrive) instead of polls.
    #[arg(long, conflicts_with = "group")]
    subscribe: bool,
    /// Batches of credit a subscription holds (one is granted back per batch printed).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    credits: u32,
    /// Subscribe as a member of the single-active-consumer group NAME (implies --subscribe;
    /// without --partition, of the whole topic: partition i goes to member i % members).
    #[arg(long, value_name = "NAME", conflicts_with = "group")]
    single_active: Option<String>,
    /// Print only messages with one of these filter values (comma-separated); the server skips
    /// batches that hold none of them.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    filter: Vec<String>,
    /// With --filter: print messages without a filter value too.
    #[arg(long, requires = "filter")]
    match_unfiltered: bool,
}

impl ConsumeArgs {
    /// The exact filter to print with (none without `--filter`).
    fn exact_filter(&self) -> CliResult<Option<Filter>> {
        if self.filter.is_empty() {
            return Ok(None);
        }
        Ok(Some(Filter::new(&self.filter, self.match_unfiltered).map_err(|e| format!("--filter: {e}"))?))
    }
}

#[derive(Subcommand, Debug)]
enum OffsetCommand {
    /// Store the next offset to read.
    Store {
        /// Stream name.
        stream: String,
        /// Topic name.
        topic: String,
        /// Partition id.
        partition: u32,
        /// The next offset to read.
        offset: u64,
        #[command(flatten)]
        owner: OffsetOwner,
    },
    /// Show the stored offset and the partition's end.
    Get {
        /// Stream name.
        stream: String,
        /// Topic name.
        topic: String,
        /// Partition id.
        partition: u32,
        #[command(flatten)]
        owner: OffsetOwner,
    },
}

#[derive(Args, Debug)]
struct OffsetOwner {
    /// A named consumer (default `ringctl`).
    #[arg(long, conflicts_with = "group")]
    consumer: Option<String>,
    /// A consumer group.
    #[arg(long)]
    group: Option<String>,
}

impl OffsetOwner {
    fn consumer_ref(&self) -> ConsumerRef {
        match (&self.group, &self.consumer) {
            (Some(group), _) => ConsumerRef::Group(group.clone()),
            (None, Some(name)) => ConsumerRef::Named(name.clone()),
            (None, None) => ConsumerRef::Named("ringctl".to_string()),
        }
    }
}

#[derive(Subcommand, Debug)]
enum GroupCommand {
    /// Create a consumer group.
    Create {
        /// Stream name.
        stream: String,
        /// Topic name.
        topic: String,
        /// Group name.
        group: String,
        /// Succeed when it exists already.
        #[arg(long)]
        if_missing: bool,
    },
    /// Delete a consumer group and its offsets.
    Delete {
        /// Stream name.
        stream: String,
        /// Topic name.
        topic: String,
        /// Group name.
        group: String,
    },
    /// List a topic's groups.
    List {
        /// Stream name.
        stream: String,
        /// Topic name.
        topic: String,
    },
    /// Show a group's members, assignments and offsets.
    Describe {
        /// Stream name.
        stream: String,
        /// Topic name.
        topic: String,
        /// Group name.
        group: String,
    },
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Create a user.
    Create {
        /// User name.
        name: String,
        /// The new user's password.
        #[arg(long)]
        password: String,
        /// Make the user an administrator.
        #[arg(long)]
        admin: bool,
        /// Rights on a stream, `STREAM:rwm` (read, write, manage; `*` for every stream).
        #[arg(long, value_parser = parse_permission)]
        grant: Vec<StreamPermission>,
    },
    /// Delete a user.
    Delete {
        /// User name.
        name: String,
    },
    /// List users.
    List,
    /// Replace a user's rights with these `STREAM:rwm` grants.
    Grant {
        /// User name.
        name: String,
        /// Rights, `STREAM:rwm` each.
        #[arg(required = true, value_parser = parse_permission)]
        grants: Vec<StreamPermission>,
    },
}

/// A failure to report: one line, and the exit status.
struct Failure {
    message: String,
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure { message: error.to_string() }
    }
}

type CliResult<T = ()> = Result<T, Failure>;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(error),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return report(&format!("cannot start the runtime: {error}"), 1),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => report(&failure.message, 1),
    }
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
    report(&format!("{text} (see --help)"), 2)
}

/// Writes `ringctl: <message>` as a single line on stderr.
fn report(message: &str, code: u8) -> ExitCode {
    let line: Vec<&str> = message.split_whitespace().collect();
    eprintln!("ringctl: {}", line.join(" "));
    ExitCode::from(code)
}

async fn run(cli: Cli) -> CliResult {
    let target = match &cli.url {
        Some(url) => ConnectionString::parse(url)?,
        None => ConnectionString::new(&cli.server, &cli.user, &cli.password)?,
    };
    let client = Client::connect(&target).await?;
    let json = cli.json;
    match cli.command {
        Command::Ping => ping(&client, json).await,
        Command::Stream(command) => stream(&client, command, json).await,
        Command::Topic(command) => topic(&client, command, json).await,
        Command::Produce(args) => match args.name.clone() {
            Some(name) => producer::produce_named(&client, args, name).await,
            None => produce(&client, args).await,
        },
        Command::Producer(command) => producer::producer(&client, command, json).await,
        Command::Consume(args) => consume(&client, args).await,
        Command::Consumer(command) => durable::consumer(&client, command, json).await,
        Command::Fetch(args) => durable::fetch(&client, args, json).await,
        Command::Offset(command) => offset(&client, command, json).await,
        Command::Group(command) => group(&client, command, json).await,
        Command::Superstream(command) => superstream::super_stream(&client, command, json).await,
        Command::User(command) => user(&client, command, json).await,
        Command::Stats { stream } => stats(&client, stream.as_deref(), json).await,
    }
}

// ---------------------------------------------------------------------------------------------
// Admin commands

async fn ping(client: &Client, json: bool) -> CliResult {
    let started = Instant::now();
    let pong = client.ping().await?;
    if json {
        return print_json(&pong);
    }
    let elapsed_us = started.elapsed().as_micros();
    emit(&format!("pong from shard {} (server {}) in {elapsed_us} µs\n", pong.shard, pong.version))
}

async fn stream(client: &Client, command: StreamCommand, json: bool) -> CliResult {
    match command {
        StreamCommand::Create { name, if_missing } => {
            let info = client.create_stream(&name, if_missing).await?;
            if json {
                return print_json(&info);
            }
            emit(&format!("stream {} (id {})\n", info.name, info.id))
        }
        StreamCommand::Delete { name } => {
            client.delete_stream(&name).await?;
            quiet_or(json, format!("deleted stream {name}\n"))
        }
        StreamCommand::List => {
            let list = client.list_streams().await?;
            if json {
                return print_json(&list);
            }
            let rows = list
                .streams
                .iter()
                .map(|s| {
                    vec![
                        s.name.clone(),
                        s.id.to_string(),
                        s.topics.len().to_string(),
                        time_text(s.created_us),
                    ]
                })
                .collect();
            emit(&table(&["STREAM", "ID", "TOPICS", "CREATED"], rows))
        }
        StreamCommand::Get { name } => {
            let info = client.get_stream(&name).await?;
            if json {
                return print_json(&info);
            }
            emit(&stream_text(&info))
        }
    }
}

fn stream_text(info: &StreamInfo) -> String {
    let mut text = format!("stream {} (id {}, created {})\n", info.name, info.id, time_text(info.created_us));
    if !info.topics.is_empty() {
        text.push_str(&topics_table(&info.topics));
    }
    text
}

async fn topic(client: &Client, command: TopicCommand, json: bool) -> CliResult {
    match command {
        TopicCommand::Create {
            stream,
            topic,
            partitions,
            max_age,
            max_bytes,
            segment_bytes,
            retention,
            max_messages,
            discard,
            allow_ttl,
            if_missing,
        } => {
            let config = ringbroker::protocol::messages::TopicConfig {
                partitions,
                retention_max_age_us: max_age,
                retention_max_bytes: max_bytes,
                segment_bytes,
            };
            let retention = match retention {
                RetentionArg::Limits => Retention::Limits,
                RetentionArg::Interest => Retention::Interest,
                RetentionArg::Workqueue => Retention::WorkQueue,
            };
            let discard = match discard {
                DiscardArg::Old => Discard::Old,
                DiscardArg::New => Discard::New,
            };
            let policy = TopicPolicy { retention, max_messages, discard, allow_ttl };
            let info = client.create_topic_with_policy(&stream, &topic, config, policy, if_missing).await?;
            if json {
                return print_json(&info);
            }
            emit(&topic_text(&stream, &info))
        }
        TopicCommand::Info(args) => durable::topic_info(client, args, json).await,
        TopicCommand::Delete { stream, topic } => {
            client.delete_topic(&stream, &topic).await?;
            quiet_or(json, format!("deleted topic {stream}/{topic}\n"))
        }
        TopicCommand::List { stream } => {
            let list = client.list_topics(&stream).await?;
            if json {
                return print_json(&list);
            }
            emit(&topics_table(&list.topics))
        }
        TopicCommand::Get { stream, topic } => {
            let info = client.get_topic(&stream, &topic).await?;
            if json {
                return print_json(&info);
            }
            emit(&topic_text(&stream, &info))
        }
        TopicCommand::AddPartitions { stream, topic, count } => {
            let info = client.add_partitions(&stream, &topic, count).await?;
            if json {
                return print_json(&info);
            }
            emit(&topic_text(&stream, &info))
        }
    }
}

fn topics_table(topics: &[TopicInfo]) -> String {
    let rows = topics
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.id.to_string(),
                t.partitions.len().to_string(),
                t.config.retention_max_age_us.map_or("-".to_string(), duration_text),
                t.config.retention_max_bytes.map_or("-".to_string(), bytes_text),
                t.config.segment_bytes.map_or("default".to_string(), bytes_text),
                list_text(&t.groups),
            ]
        })
        .collect();
    table(&["TOPIC", "ID", "PARTITIONS", "MAX-AGE", "MAX-BYTES", "SEGMENT", "GROUPS"], rows)
}

fn topic_text(stream: &str, info: &TopicInfo) -> String {
    let config = &info.config;
    let mut text = format!(
        "topic {stream}/{} (id {}, created {})\n  partitions: {}\n  max age: {}\n  max bytes: {}\n  segment bytes: {}\n  {}\n  groups: {}\n  durable consumers: {}\n",
        info.name,
        info.id,
        time_text(info.created_us),
        info.partitions.len(),
        config.retention_max_age_us.map_or("unlimited".to_string(), duration_text),
        config.retention_max_bytes.map_or("unlimited".to_string(), bytes_text),
        config.segment_bytes.map_or("server default".to_string(), bytes_text),
        policy_text(&info.policy),
        list_text(&info.groups),
        list_text(&info.consumers),
    );
    if let Some(super_stream) = &info.super_stream {
        let _ = writeln!(text, "  super stream: routing by {:?}", super_stream.routing);
        let rows = info
            .partitions
            .iter()
            .zip(&super_stream.binding_keys)
            .map(|(p, key)| vec![p.id.to_string(), p.shard.to_string(), key.clone()])
            .collect();
        text.push_str(&table(&["PARTITION", "SHARD", "BINDING-KEY"], rows));
        return text;
    }
    let rows = info.partitions.iter().map(|p| vec![p.id.to_string(), p.shard.to_string()]).collect();
    text.push_str(&table(&["PARTITION", "SHARD"], rows));
    text
}

/// `retention: interest, max messages 100 (discard new), TTLs allowed`.
fn policy_text(policy: &TopicPolicy) -> String {
    let retention = match policy.retention {
        Retention::Limits => "limits",
        Retention::Interest => "interest",
        Retention::WorkQueue => "workqueue",
    };
    let discard = match policy.discard {
        Discard::Old => "old",
        Discard::New => "new",
    };
    let max_messages = policy.max_messages.map_or("unlimited".to_string(), |n| n.to_string());
    let ttl = if policy.allow_ttl { "allowed" } else { "refused" };
    format!("retention: {retention}, max messages {max_messages} (discard {discard}), TTLs {ttl}")
}

async fn offset(client: &Client, command: OffsetCommand, json: bool) -> CliResult {
    match command {
        OffsetCommand::Store { stream, topic, partition, offset, owner } => {
            client.store_offset(&stream, &topic, partition, owner.consumer_ref(), offset).await?;
            quiet_or(json, format!("stored offset {offset} on {stream}/{topic} partition {partition}\n"))
        }
        OffsetCommand::Get { stream, topic, partition, owner } => {
            let info = client.get_offset(&stream, &topic, partition, owner.consumer_ref()).await?;
            if json {
                return print_json(&info);
            }
            let stored = info.stored.map_or("none".to_string(), |o| o.to_string());
            emit(&format!("stored: {stored}\nhigh watermark: {}\n", info.high_watermark))
        }
    }
}

async fn group(client: &Client, command: GroupCommand, json: bool) -> CliResult {
    match command {
        GroupCommand::Create { stream, topic, group, if_missing } => {
            let info = client.create_group(&stream, &topic, &group, if_missing).await?;
            if json {
                return print_json(&info);
            }
            emit(&group_text(&stream, &topic, &info))
        }
        GroupCommand::Delete { stream, topic, group } => {
            client.delete_group(&stream, &topic, &group).await?;
            quiet_or(json, format!("deleted group {group} of {stream}/{topic}\n"))
        }
        GroupCommand::List { stream, topic } => {
            let list = client.list_groups(&stream, &topic).await?;
            if json {
                return print_json(&list);
            }
            let rows = list
                .groups
                .iter()
                .map(|g| {
                    vec![
                        g.name.clone(),
                        g.generation.to_string(),
                        g.members.len().to_string(),
                        offsets_text(g),
                    ]
                })
                .collect();
            emit(&table(&["GROUP", "GENERATION", "MEMBERS", "OFFSETS"], rows))
        }
        GroupCommand::Describe { stream, topic, group } => {
            let info = client.describe_group(&stream, &topic, &group).await?;
            if json {
                return print_json(&info);
            }
            emit(&group_text(&stream, &topic, &info))
        }
    }
}

fn group_text(stream: &str, topic: &str, info: &GroupInfo) -> String {
    let mut text = format!("group {} on {stream}/{topic} (generation {})\n", info.name, info.generation);
    if info.members.is_empty() {
        text.push_str("  no members\n");
    }
    for member in &info.members {
        let partitions: Vec<String> = member.partitions.iter().map(u32::to_string).collect();
        let _ = writeln!(
            text,
            "  member {}: partitions [{}], last heartbeat {} ms ago",
            member.member_id,
            partitions.join(","),
            member.idle_ms
        );
    }
    let _ = writeln!(text, "  offsets: {}", offsets_text(info));
    text
}

fn offsets_text(info: &GroupInfo) -> String {
    if info.offsets.is_empty() {
        return "-".to_string();
    }
    let parts: Vec<String> = info.offsets.iter().map(|o| format!("{}={}", o.partition, o.offset)).collect();
    parts.join(" ")
}

async fn user(client: &Client, command: UserCommand, json: bool) -> CliResult {
    match command {
        UserCommand::Create { name, password, admin, grant } => {
            let request = CreateUser { name: name.clone(), password, admin, permissions: grant };
            client.create_user(&request).await?;
            quiet_or(json, format!("created user {name}\n"))
        }
        UserCommand::Delete { name } => {
            client.delete_user(&name).await?;
            quiet_or(json, format!("deleted user {name}\n"))
        }
        UserCommand::List => {
            let list = client.list_users().await?;
            if json {
                return print_json(&list);
            }
            let rows = list
                .users
                .iter()
                .map(|u| {
                    let rights: Vec<String> = u.permissions.iter().map(permission_text).collect();
                    vec![u.name.clone(), u.id.to_string(), yes_no(u.admin), list_text(&rights)]
                })
                .collect();
            emit(&table(&["USER", "ID", "ADMIN", "RIGHTS"], rows))
        }
        UserCommand::Grant { name, grants } => {
            let shown: Vec<String> = grants.iter().map(permission_text).collect();
            client.set_permissions(&name, grants).await?;
            quiet_or(json, format!("user {name} now has {}\n", shown.join(" ")))
        }
    }
}

async fn stats(client: &Client, stream: Option<&str>, json: bool) -> CliResult {
    let stats = client.stats(stream).await?;
    if json {
        return print_json(&stats);
    }
    let mut rows = Vec::new();
    let mut poisoned = Vec::new();
    let mut groups = String::new();
    for stream in &stats.streams {
        for topic in &stream.topics {
            for partition in &topic.partitions {
                rows.push(partition_row(&stream.name, &topic.name, partition));
                if let Some(reason) = &partition.poisoned {
                    poisoned.push(format!("{}/{}/{}: {reason}", stream.name, topic.name, partition.id));
                }
            }
            for group in &topic.groups {
                groups.push_str(&group_text(&stream.name, &topic.name, group));
            }
        }
    }
    let headers = [
        "STREAM",
        "TOPIC",
        "PARTITION",
        "SHARD",
        "FIRST",
        "NEXT",
        "MESSAGES",
        "BYTES",
        "SEGMENTS",
        "CONSUMERS",
    ];
    let mut text = table(&headers, rows);
    for line in poisoned {
        let _ = writeln!(text, "POISONED (refuses writes) {line}");
    }
    text.push_str(&groups);
    let server = &stats.server;
    let _ = writeln!(
        text,
        "server: {} shards, {} connections, {} forwarded requests, {} bytes forwarded without copy, {} copied, {} batches ({}) skipped by filters",
        server.shards,
        server.connections,
        server.forwarded_requests,
        server.forwarded_bytes_zero_copy,
        server.forwarded_bytes_copied,
        server.filtered_batches,
        bytes_text(server.filtered_bytes)
    );
    let _ = writeln!(
        text,
        "subscriptions: {} open, {} deliveries ({}) pushed",
        server.subscriptions,
        server.deliveries,
        bytes_text(server.delivered_bytes)
    );
    emit(&text)
}

fn partition_row(stream: &str, topic: &str, partition: &PartitionStats) -> Vec<String> {
    vec![
        stream.to_string(),
        topic.to_string(),
        partition.id.to_string(),
        partition.shard.to_string(),
        partition.first_offset.to_string(),
        partition.next_offset.to_string(),
        partition.messages.to_string(),
        bytes_text(partition.bytes),
        partition.segments.to_string(),
        list_text(&partition.consumers),
    ]
}

// ---------------------------------------------------------------------------------------------
// produce

async fn produce(client: &Client, args: ProduceArgs) -> CliResult {
    let partitionings = match (&args.partition, &args.key, &args.routing_key) {
        (_, _, Some(routing_key)) => {
            superstream::routed_partitionings(client, &args.stream, &args.topic, routing_key).await?
        }
        (Some(partition), _, None) => vec![Partitioning::Partition(*partition)],
        (None, Some(key), None) => vec![Partitioning::Key(key.as_bytes().to_vec())],
        (None, None, None) => vec![Partitioning::Balanced],
    };
    let (sender, mut batches) = tokio::sync::mpsc::channel(PRODUCE_QUEUE_BATCHES);
    let key = args.key.clone().map(String::into_bytes);
    let filter_value = args.filter_value.clone().map(String::into_bytes);
    let ttl_ms = args.ttl_ms()?;
    let batch_lines = args.batch;
    let compression = args.compression;
    std::thread::Builder::new().name("ringctl-stdin".to_string()).spawn(move || {
        let headers: Vec<(&[u8], &[u8])> =
            ttl_ms.as_deref().map(|ms| (TTL_HEADER.as_bytes(), ms)).into_iter().collect();
        let tags = Tags { key: key.as_deref(), filter_value: filter_value.as_deref(), headers: &headers };
        read_batches(batch_lines, compression, tags, &sender)
    })?;
    let mut summary = ProduceSummary::default();
    while let Some(batch) = batches.recv().await {
        let (bytes, records) = batch?;
        for partitioning in &partitionings {
            let response = client.produce(&args.stream, &args.topic, partitioning.clone(), &[&bytes]).await?;
            summary.add(&response, records, bytes.len());
        }
    }
    eprintln!("{}", summary.line(&args.stream, &args.topic));
    Ok(())
}

/// A finished batch and its record count, or why stdin could not become batches.
type BatchResult = Result<(Vec<u8>, u32), Failure>;

/// What every message of a run carries besides its line.
#[derive(Clone, Copy)]
struct Tags<'a> {
    key: Option<&'a [u8]>,
    filter_value: Option<&'a [u8]>,
    /// The TTL header, when the run has one.
    headers: &'a [(&'a [u8], &'a [u8])],
}

/// Runs on the stdin thread: one message per line (the line end removed), a batch sent after
/// `batch_lines` lines or whenever no more input is buffered.
fn read_batches(
    batch_lines: u32,
    compression: Compression,
    tags: Tags<'_>,
    sender: &tokio::sync::mpsc::Sender<BatchResult>,
) {
    let mut input = BufReader::with_capacity(STDIN_BUFFER_BYTES, std::io::stdin());
    let mut builder = BatchBuilder::new(0, 0);
    builder.set_compression(compression);
    let mut line = Vec::new();
    let mut line_number = 0_u64;
    let outcome: CliResult = loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => break Ok(()),
            Ok(_) => line_number += 1,
            Err(error) => break Err(format!("reading stdin: {error}").into()),
        }
        let payload = trim_line_end(&line);
        if let Err(error) = push_line(&mut builder, sender, tags, payload) {
            break Err(format!("line {line_number}: {}", error.message).into());
        }
        if (builder.record_count() >= batch_lines || input.buffer().is_empty())
            && !send_batch(&mut builder, sender)
        {
            return; // The sender is gone: it failed and reports why.
        }
    };
    if let Err(failure) = outcome {
        let _ = sender.blocking_send(Err(failure));
        return;
    }
    send_batch(&mut builder, sender);
}

/// Pushes one line; when the batch is full, sends it and pushes into the next one.
fn push_line(
    builder: &mut BatchBuilder,
    sender: &tokio::sync::mpsc::Sender<BatchResult>,
    tags: Tags<'_>,
    payload: &[u8],
) -> CliResult {
    let message = Message {
        key: tags.key,
        filter_value: tags.filter_value,
        headers: tags.headers,
        ..Message::payload(payload)
    };
    match builder.push(&message) {
        Err(BatchError::TooLarge { .. } | BatchError::TooManyRecords { .. }) if !builder.is_empty() => {
            if !send_batch(builder, sender) {
                return Err("the sender stopped".into());
            }
            Ok(builder.push(&message)?)
        }
        other => Ok(other?),
    }
}

/// Sends the builder's batch (if any) and empties it; false when the receiving side is gone.
fn send_batch(builder: &mut BatchBuilder, sender: &tokio::sync::mpsc::Sender<BatchResult>) -> bool {
    if builder.is_empty() {
        return true;
    }
    let records = builder.record_count();
    let batch = builder.finish_in_place().map(<[u8]>::to_vec).map_err(Failure::from);
    let sent = sender.blocking_send(batch.map(|bytes| (bytes, records))).is_ok();
    builder.reset(0);
    sent
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// What a produce run wrote, per partition.
#[derive(Default)]
struct ProduceSummary {
    messages: u64,
    batches: u64,
    bytes: u64,
    /// Partition → (first offset, last offset).
    partitions: BTreeMap<u32, (u64, u64)>,
}

impl ProduceSummary {
    fn add(&mut self, response: &ProduceResponse, records: u32, bytes: usize) {
        self.messages += u64::from(records);
        self.batches += 1;
        self.bytes += bytes as u64;
        for ack in &response.acks {
            let range =
                self.partitions.entry(response.partition).or_insert((ack.base_offset, ack.last_offset));
            range.0 = range.0.min(ack.base_offset);
            range.1 = range.1.max(ack.last_offset);
        }
    }

    fn line(&self, stream: &str, topic: &str) -> String {
        let mut line = format!(
            "produced {} message{} in {} batch{} ({}) to {stream}/{topic}",
            self.messages,
            if self.messages == 1 { "" } else { "s" },
            self.batches,
            if self.batches == 1 { "" } else { "es" },
            bytes_text(self.bytes)
        );
        let parts: Vec<String> = self
            .partitions
            .iter()
            .map(|(p, (first, last))| format!("partition {p} offsets {first}..={last}"))
            .collect();
        if !parts.is_empty() {
            let _ = write!(line, ": {}", parts.join(", "));
        }
        line
    }
}

// ---------------------------------------------------------------------------------------------
// consume

/// Where a consume run stands.
struct Printer<W: Write> {
    out: W,
    remaining: Option<u64>,
    /// Output ended: stdout closed or --count reached.
    done: bool,
    /// Print only what this filter wants.
    filter: Option<Filter>,
}

impl<W: Write> Printer<W> {
    /// Prints the records of one poll; returns the offset after the last printed record of each
    /// partition.
    fn print(&mut self, polled: &Polled) -> CliResult<BTreeMap<u32, u64>> {
        let mut printed = BTreeMap::new();
        for record in polled.records() {
            if self.done {
                break;
            }
            let record = record?;
            if self.filter.as_ref().is_some_and(|filter| !filter.matches(record.record.filter_value)) {
                continue;
            }
            let line = String::from_utf8_lossy(record.record.payload);
            let written = self.out.write_all(line.as_bytes()).and_then(|()| self.out.write_all(b"\n"));
            if !self.check(written)? {
                break;
            }
            printed.insert(record.partition, record.record.offset + 1);
            if let Some(remaining) = self.remaining.as_mut() {
                *remaining -= 1;
                self.done |= *remaining == 0;
            }
        }
        let flushed = self.out.flush();
        self.check(flushed)?;
        Ok(printed)
    }

    /// True when written; a closed stdout ends the run without an error.
    fn check(&mut self, written: std::io::Result<()>) -> CliResult<bool> {
        match written {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {
                self.done = true;
                Ok(false)
            }
            Err(error) => Err(format!("writing stdout: {error}").into()),
        }
    }

    fn max_messages(&self) -> u32 {
        self.remaining.map_or(POLL_MESSAGES_MAX, |r| r.min(u64::from(POLL_MESSAGES_MAX)) as u32)
    }

    /// Where each partition's reading stands after printing `polled`: past the last printed
    /// message, or, when filtering and not stopped early, past everything the poll covered
    /// (skipped batches and filtered-out messages included).
    fn positions(&self, polled: &Polled, printed: BTreeMap<u32, u64>) -> BTreeMap<u32, u64> {
        if self.filter.is_none() || self.done {
            return printed;
        }
        let moved = polled.response.partitions.iter().filter(|p| p.next_offset > p.start_offset);
        moved.map(|p| (p.partition, p.next_offset)).collect()
    }
}

/// Whether a poll moved any position (with a filter, an answer without batches may).
fn progressed(polled: &Polled) -> bool {
    polled.response.partitions.iter().any(|p| p.next_offset > p.start_offset)
}

async fn consume(client: &Client, args: ConsumeArgs) -> CliResult {
    if args.count == Some(0) {
        return Ok(());
    }
    let stdout = std::io::stdout();
    let filter = args.exact_filter()?;
    let out = std::io::BufWriter::new(stdout.lock());
    let mut printer = Printer { out, remaining: args.count, done: false, filter };
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    if args.subscribe || args.single_active.is_some() {
        return subscribe::consume_subscribed(client, &args, &mut printer, &mut stop).await;
    }
    match &args.group {
        None => consume_partition(client, &args, &mut printer, &mut stop).await,
        Some(group) => {
            let join = JoinGroup {
                stream: args.stream.clone(),
                topic: args.topic.clone(),
                group: group.clone(),
                create_if_missing: true,
                session_timeout_ms: GROUP_SESSION_TIMEOUT_MS,
            };
            let membership = client.join_group(&join).await?;
            let outcome =
                consume_group(client, &args, &join, membership.member_id, &mut printer, &mut stop).await;
            let left = client.leave_group(&args.stream, &args.topic, group, membership.member_id).await;
            outcome?;
            match left {
                // Removed already (the session expired): nothing to leave.
                Err(error) if error.status() != Some(Status::UnknownMember) => Err(error.into()),
                _ => Ok(()),
            }
        }
    }
}

/// The long-poll wait of one poll.
fn wait_ms(args: &ConsumeArgs) -> u32 {
    if args.follow {
        FOLLOW_WAIT_MS
    } else {
        0
    }
}

async fn consume_partition<W: Write>(
    client: &Client,
    args: &ConsumeArgs,
    printer: &mut Printer<W>,
    stop: &mut std::pin::Pin<&mut impl std::future::Future<Output = std::io::Result<()>>>,
) -> CliResult {
    let partition = args.partition.unwrap_or(0);
    let mut strategy = args.from;
    loop {
        let request = PollRequest {
            stream: args.stream.clone(),
            topic: args.topic.clone(),
            target: PollTarget::Partition(PartitionTarget { partition, consumer: args.consumer.clone() }),
            strategy,
            max_messages: printer.max_messages(),
            max_bytes: POLL_BYTES_MAX,
            max_wait_ms: wait_ms(args),
            auto_commit: false,
            filter: args.filter.clone(),
            match_unfiltered: args.match_unfiltered,
        };
        let polled = tokio::select! {
            polled = client.poll(&request) => polled?,
            _ = stop.as_mut() => return Ok(()),
        };
        let printed = printer.print(&polled)?;
        let printed = printer.positions(&polled, printed);
        if args.commit {
            for (&partition, &next) in &printed {
                let consumer = ConsumerRef::Named(args.consumer.clone());
                client.store_offset(&args.stream, &args.topic, partition, consumer, next).await?;
            }
        }
        if printer.done || (!progressed(&polled) && !args.follow) {
            return Ok(());
        }
        if let Some(marks) = polled.response.partitions.iter().find(|p| p.partition == partition) {
            strategy = PollStrategy::Offset(marks.next_offset);
        }
    }
}

async fn consume_group<W: Write>(
    client: &Client,
    args: &ConsumeArgs,
    join: &JoinGroup,
    mut member_id: u64,
    printer: &mut Printer<W>,
    stop: &mut std::pin::Pin<&mut impl std::future::Future<Output = std::io::Result<()>>>,
) -> CliResult {
    let mut strategy = args.from;
    let mut heartbeat_at = Instant::now() + GROUP_HEARTBEAT_INTERVAL;
    loop {
        if Instant::now() >= heartbeat_at {
            member_id = keep_membership(client, join, member_id).await?;
            heartbeat_at = Instant::now() + GROUP_HEARTBEAT_INTERVAL;
        }
        let request = PollRequest {
            stream: args.stream.clone(),
            topic: args.topic.clone(),
            target: PollTarget::Group(GroupTarget { group: join.group.clone(), member_id }),
            strategy,
            max_messages: printer.max_messages(),
            max_bytes: POLL_BYTES_MAX,
            max_wait_ms: wait_ms(args),
            auto_commit: false,
            filter: args.filter.clone(),
            match_unfiltered: args.match_unfiltered,
        };
        let polled = tokio::select! {
            polled = client.poll(&request) => polled,
            _ = stop.as_mut() => return Ok(()),
        };
        let polled = match polled {
            Err(error) if error.status() == Some(Status::UnknownMember) => {
                member_id = client.join_group(join).await?.member_id;
                continue;
            }
            other => other?,
        };
        let printed = printer.print(&polled)?;
        let printed = printer.positions(&polled, printed);
        for (&partition, &next) in &printed {
            let owner = ConsumerRef::Group(join.group.clone());
            client.store_offset(&args.stream, &args.topic, partition, owner, next).await?;
        }
        if printer.done || (!progressed(&polled) && !args.follow) {
            return Ok(());
        }
        strategy = PollStrategy::Next;
    }
}

/// Heartbeats; joins again when the group dropped the member. Returns the member id.
async fn keep_membership(client: &Client, join: &JoinGroup, member_id: u64) -> CliResult<u64> {
    match client.heartbeat(&join.stream, &join.topic, &join.group, member_id).await {
        Ok(membership) => Ok(membership.member_id),
        Err(error) if error.status() == Some(Status::UnknownMember) => {
            Ok(client.join_group(join).await?.member_id)
        }
        Err(error) => Err(error.into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Argument parsers

/// `first`, `last`, `next`, `offset=N`, `timestamp=T` (µs since the epoch, or RFC 3339).
fn parse_from(text: &str) -> Result<PollStrategy, String> {
    match text {
        "first" => return Ok(PollStrategy::First),
        "last" => return Ok(PollStrategy::Last),
        "next" => return Ok(PollStrategy::Next),
        _ => {}
    }
    if let Some(offset) = text.strip_prefix("offset=") {
        return offset.parse().map(PollStrategy::Offset).map_err(|_| format!("`{offset}` is not an offset"));
    }
    if let Some(time) = text.strip_prefix("timestamp=") {
        if let Ok(us) = time.parse::<u64>() {
            return Ok(PollStrategy::Timestamp(us));
        }
        let at = humantime::parse_rfc3339_weak(time)
            .map_err(|_| format!("`{time}` is neither µs since the epoch nor an RFC 3339 time"))?;
        let us = at.duration_since(UNIX_EPOCH).map_err(|_| format!("`{time}` is before 1970"))?.as_micros();
        return Ok(PollStrategy::Timestamp(us as u64));
    }
    Err(format!("`{text}`: expected first, last, next, offset=N or timestamp=T"))
}

/// A byte count with an optional binary suffix: `512`, `64K`, `512M`, `10G`, `1T` (also `MB`,
/// `MiB`).
fn parse_bytes(text: &str) -> Result<u64, String> {
    let upper = text.trim().to_ascii_uppercase();
    let digits_end = upper.find(|c: char| !c.is_ascii_digit()).unwrap_or(upper.len());
    let (digits, suffix) = upper.split_at(digits_end);
    let number: u64 = digits.parse().map_err(|_| format!("`{text}` is not a byte count like 512M"))?;
    let shift = match suffix.trim_end_matches("IB").trim_end_matches('B') {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("`{text}`: unknown unit (use K, M, G or T)")),
    };
    number.checked_mul(1 << shift).ok_or_else(|| format!("`{text}` is too large"))
}

/// A duration like `7d`, `12h`, `30m`, `45s` (or `1h 30m`), in microseconds.
fn parse_duration_us(text: &str) -> Result<u64, String> {
    let duration =
        humantime::parse_duration(text).map_err(|e| format!("`{text}`: {e} (e.g. 7d, 12h, 30m)"))?;
    u64::try_from(duration.as_micros()).map_err(|_| format!("`{text}` is too long"))
}

/// `STREAM:rwm`: read, write and manage rights on a stream (`*` for every stream).
fn parse_permission(text: &str) -> Result<StreamPermission, String> {
    let (stream, rights) =
        text.rsplit_once(':').ok_or_else(|| format!("`{text}`: expected STREAM:rights, e.g. orders:rw"))?;
    if stream.is_empty() {
        return Err(format!("`{text}`: no stream name"));
    }
    let mut permission =
        StreamPermission { stream: stream.to_string(), read: false, write: false, manage: false };
    for right in rights.chars() {
        match right {
            'r' => permission.read = true,
            'w' => permission.write = true,
            'm' => permission.manage = true,
            _ => return Err(format!("`{text}`: unknown right `{right}` (use r, w, m)")),
        }
    }
    Ok(permission)
}

// ---------------------------------------------------------------------------------------------
// Output

/// Writes to stdout; a closed stdout is not an error.
fn emit(text: &str) -> CliResult {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(format!("writing stdout: {error}").into())
        }
        _ => Ok(()),
    }
}

/// Prints `text` unless the output is JSON (for commands that answer with nothing).
fn quiet_or(json: bool, text: String) -> CliResult {
    if json {
        return Ok(());
    }
    emit(&text)
}

fn print_json<T: serde::Serialize>(value: &T) -> CliResult {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    emit(&text)
}

/// Left-aligned columns separated by two spaces.
fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let header_cells: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header_cells).chain(&rows) {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            let _ = write!(line, "{cell:<width$}  ");
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

fn bytes_text(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn duration_text(us: u64) -> String {
    humantime::format_duration(Duration::from_secs(us / 1_000_000)).to_string()
}

fn time_text(us: u64) -> String {
    humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_micros(us)).to_string()
}

fn list_text(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_string()
    } else {
        items.join(",")
    }
}

fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_string()
}

fn permission_text(permission: &StreamPermission) -> String {
    let mut rights = String::new();
    for (held, letter) in [(permission.read, 'r'), (permission.write, 'w'), (permission.manage, 'm')] {
        if held {
            rights.push(letter);
        }
    }
    format!("{}:{rights}", permission.stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "ringctl",
            "--password",
            "login",
            "user",
            "create",
            "bob",
            "--password",
            "new",
            "--grant",
            "orders:rw",
        ])
        .expect("parse");
        assert_eq!(cli.password, "login");
        assert!(
            matches!(cli.command, Command::User(UserCommand::Create { ref password, .. }) if password == "new")
        );
        assert!(Cli::try_parse_from(["ringctl", "consume", "s", "t", "--partition", "1", "--group", "g"])
            .is_err());
        assert!(
            Cli::try_parse_from(["ringctl", "produce", "s", "t", "--partition", "1", "--key", "k"]).is_err()
        );
        assert!(Cli::try_parse_from(["ringctl", "stream", "list", "--json"]).expect("json after").json);
        assert!(
            Cli::try_parse_from(["ringctl", "produce", "s", "t", "--exclusive"]).is_err(),
            "needs --name"
        );
        assert!(Cli::try_parse_from(["ringctl", "produce", "s", "t", "--compression", "gzip"]).is_err());
        for ok in [
            &["ringctl", "produce", "s", "t"][..],
            &["ringctl", "produce", "s", "t", "--key", "k", "--batch", "10"],
            &["ringctl", "produce", "s", "t", "--partition", "1", "--name", "n", "--exclusive"],
            &["ringctl", "produce", "s", "t", "--name", "n", "--compression", "zstd"],
            &["ringctl", "produce", "s", "t", "--compression", "lz4"],
            &["ringctl", "producer", "sequence", "s", "t", "0", "n", "--json"],
            &["ringctl", "producer", "list"],
            &["ringctl", "producer", "list", "s"],
            &["ringctl", "producer", "delete", "s", "t", "n"],
            &["ringctl", "consume", "s", "t", "--group", "g", "--from", "first", "--count", "5", "--follow"],
            &["ringctl", "offset", "store", "s", "t", "0", "10", "--group", "g"],
            &["ringctl", "user", "grant", "bob", "orders:rw", "*:r"],
            &["ringctl", "topic", "create", "s", "t", "--partitions", "1", "--retention", "interest"],
            &[
                "ringctl",
                "topic",
                "create",
                "s",
                "t",
                "--partitions",
                "1",
                "--max-messages",
                "5",
                "--discard",
                "new",
            ],
            &["ringctl", "topic", "info", "s", "t", "--json"],
            &["ringctl", "produce", "s", "t", "--ttl", "30s"],
            &["ringctl", "consumer", "create", "s", "t", "c", "--filter", "a.*,b.>", "--ack", "all"],
            &["ringctl", "consumer", "create", "s", "t", "c", "--backoff", "1s,5s", "--deliver", "offset=3"],
            &["ringctl", "consumer", "info", "s", "t", "c", "--json"],
            &["ringctl", "fetch", "s", "t", "c", "--count", "5", "--ack", "none", "--wait", "0s"],
            &["ringctl", "--url", "ringbroker://u:p@h:1", "stats", "--stream", "s", "--json"],
        ] {
            assert!(Cli::try_parse_from(ok).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn argument_parsers() {
        assert_eq!(parse_from("offset=42"), Ok(PollStrategy::Offset(42)));
        assert_eq!(parse_from("timestamp=7"), Ok(PollStrategy::Timestamp(7)));
        assert_eq!(parse_from("timestamp=1970-01-01T00:00:01Z"), Ok(PollStrategy::Timestamp(1_000_000)));
        assert!(parse_from("middle").is_err());
        assert_eq!(parse_bytes("512"), Ok(512));
        assert_eq!(parse_bytes("64k"), Ok(64 << 10));
        assert_eq!(parse_bytes("512M"), Ok(512 << 20));
        assert_eq!(parse_bytes("10GiB"), Ok(10 << 30));
        assert!(parse_bytes("10X").is_err());
        assert!(parse_bytes("99999999999T").is_err());
        assert_eq!(parse_duration_us("7d"), Ok(7 * 86_400 * 1_000_000));
        assert_eq!(parse_duration_us("45s"), Ok(45_000_000));
        let permission = parse_permission("*:rm").expect("parse");
        assert_eq!(
            (permission.stream.as_str(), permission.read, permission.write, permission.manage),
            ("*", true, false, true)
        );
        assert_eq!(permission_text(&permission), "*:rm");
        assert!(parse_permission("orders:rx").is_err());
    }

    #[test]
    fn tables_align_and_lines_end_clean() {
        let text = table(&["A", "LONGER"], vec![vec!["wide cell".into(), "x".into()]]);
        assert_eq!(text, "A          LONGER\nwide cell  x\n");
        assert_eq!(trim_line_end(b"one\r\n"), b"one");
        assert_eq!(bytes_text(1536), "1.5 KiB");
    }
}
