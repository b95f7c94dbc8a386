//! `ringctl consumer …` (durable consumers: create, delete, info, list), `ringctl fetch` (pull
//! and acknowledge) and `ringctl topic info` (a topic's live contents): retention and durable
//! consumers from the command line.
//!
//! Runs on `ringctl`'s current-thread runtime, through the SDK's
//! [`DurableConsumer`](ringbroker::client::DurableConsumer). Invariants: `fetch` prints a
//! message before it acknowledges it (a failed write leaves it unacknowledged, so it is
//! redelivered) and stops after `--count` messages or when a fetch waited `--wait` for nothing.

use std::fmt::Write as _;
use std::io::Write;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use ringbroker::client::{Client, DurableConsumer, DurableMessage};
use ringbroker::protocol::durable::{
    AckPolicy, DeliverPolicy, DurableConfig, DurableInfo, PartitionState, Retention, TopicState,
};

use super::{duration_text, emit, parse_duration_us, print_json, quiet_or, table, time_text, CliResult};

/// The most messages `fetch` asks for at once.
const FETCH_CHUNK_MESSAGES: u32 = 1000;

/// `ringctl consumer …`.
#[derive(Subcommand, Debug)]
pub(super) enum ConsumerCommand {
    /// Create a durable consumer on a topic (it keeps its place per partition).
    Create(CreateArgs),
    /// Delete a durable consumer (on an interest topic, what only it wanted is removed).
    Delete {
        /// Stream name.
        stream: String,
        /// Topic name.
        topic: String,
        /// Consumer name.
        name: String,
    },
    /// Show a consumer's configuration and its state on every partition.
    Info {
        /// Stream name.
        stream: String,
        /// Topic name.
        topic: String,
        /// Consumer name.
        name: String,
    },
    /// List a topic's durable consumers.
    List {
        /// Stream name.
        stream: String,
        /// Topic name.
        topic: String,
    },
}

/// `ringctl consumer create`.
#[derive(Args, Debug)]
pub(super) struct CreateArgs {
    /// Stream name.
    stream: String,
    /// Topic name.
    topic: String,
    /// Consumer name.
    name: String,
    /// Subject patterns over filter values (`orders.*`, `orders.>`); repeat or separate with
    /// commas. None: every message.
    #[arg(long, value_delimiter = ',')]
    filter: Vec<String>,
    /// What it acknowledges: explicit (each message), all (a message and every earlier one),
    /// none.
    #[arg(long, default_value = "explicit")]
    ack: AckArg,
    /// How long a delivery waits for its acknowledgement before redelivery (`30s`).
    #[arg(long, value_parser = parse_duration_us)]
    ack_wait: Option<u64>,
    /// Deliveries per message before it is given up.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    max_deliver: Option<u32>,
    /// Redelivery delays after the 1st, 2nd, … delivery (`1s,5s,30s`); the last repeats.
    #[arg(long, value_delimiter = ',', value_parser = parse_duration_us)]
    backoff: Vec<u64>,
    /// Delivered and unacknowledged messages per partition before delivery stops.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    max_ack_pending: Option<u32>,
    /// Where it starts: all, last, new, offset=N, time=US (µs since the epoch).
    #[arg(long, default_value = "all", value_parser = parse_deliver)]
    deliver: DeliverPolicy,
    /// Succeed when an identical consumer exists already.
    #[arg(long)]
    if_missing: bool,
}

/// `--ack` of `consumer create`.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub(super) enum AckArg {
    /// Every message, one by one.
    Explicit,
    /// An acknowledgement covers every earlier message too.
    All,
    /// Nothing to acknowledge.
    None,
}

impl From<AckArg> for AckPolicy {
    fn from(arg: AckArg) -> AckPolicy {
        match arg {
            AckArg::Explicit => AckPolicy::Explicit,
            AckArg::All => AckPolicy::All,
            AckArg::None => AckPolicy::None,
        }
    }
}

/// `--ack` of `fetch`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FetchAck {
    /// Acknowledge each message once it is printed.
    Explicit,
    /// Do not acknowledge (they are redelivered after the consumer's ack wait).
    None,
}

/// `ringctl fetch`.
#[derive(Args, Debug)]
pub(super) struct FetchArgs {
    /// Stream name.
    stream: String,
    /// Topic name.
    topic: String,
    /// Durable consumer name.
    consumer: String,
    /// Stop after this many messages.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    count: u64,
    /// Acknowledge each message after printing it (explicit), or not (none).
    #[arg(long, default_value = "explicit")]
    ack: FetchAck,
    /// How long to wait for messages that are not there yet (`0s`: answer at once).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    wait: Duration,
}

/// `ringctl topic info`.
#[derive(Args, Debug)]
pub(super) struct TopicInfoArgs {
    /// Stream name.
    stream: String,
    /// Topic name.
    topic: String,
}

/// `all`, `last`, `new`, `offset=N`, `time=US`.
fn parse_deliver(text: &str) -> Result<DeliverPolicy, String> {
    match text {
        "all" => return Ok(DeliverPolicy::All),
        "last" => return Ok(DeliverPolicy::Last),
        "new" => return Ok(DeliverPolicy::New),
        _ => {}
    }
    if let Some(offset) = text.strip_prefix("offset=") {
        return offset
            .parse()
            .map(DeliverPolicy::ByOffset)
            .map_err(|_| format!("`{offset}` is not an offset"));
    }
    if let Some(time) = text.strip_prefix("time=") {
        return time
            .parse()
            .map(DeliverPolicy::ByTime)
            .map_err(|_| format!("`{time}` is not µs since the epoch"));
    }
    Err(format!("`{text}`: expected all, last, new, offset=N or time=US"))
}

impl CreateArgs {
    fn config(&self) -> DurableConfig {
        let mut config = DurableConfig::new(&self.name);
        config.filter = self.filter.clone();
        config.ack = self.ack.into();
        config.ack_wait_us = self.ack_wait.unwrap_or(config.ack_wait_us);
        config.max_deliver = self.max_deliver;
        config.backoff_us = self.backoff.clone();
        config.max_ack_pending = self.max_ack_pending.unwrap_or(config.max_ack_pending);
        config.deliver = self.deliver;
        config
    }
}

pub(super) async fn consumer(client: &Client, command: ConsumerCommand, json: bool) -> CliResult {
    match command {
        ConsumerCommand::Create(args) => {
            let config = args.config();
            config.check().map_err(|why| format!("consumer {}: {why}", args.name))?;
            let info = client.create_consumer(&args.stream, &args.topic, config, args.if_missing).await?;
            if json {
                return print_json(&info);
            }
            emit(&consumer_text(&info))
        }
        ConsumerCommand::Delete { stream, topic, name } => {
            client.delete_consumer(&stream, &topic, &name).await?;
            quiet_or(json, format!("deleted consumer {name} of {stream}/{topic}\n"))
        }
        ConsumerCommand::Info { stream, topic, name } => {
            let info = client.consumer_info(&stream, &topic, &name).await?;
            if json {
                return print_json(&info);
            }
            emit(&consumer_text(&info))
        }
        ConsumerCommand::List { stream, topic } => {
            let list = client.list_consumers(&stream, &topic).await?;
            if json {
                return print_json(&list);
            }
            let rows = list
                .consumers
                .iter()
                .map(|c| {
                    vec![
                        c.config.name.clone(),
                        filter_text(&c.config),
                        format!("{:?}", c.config.ack).to_lowercase(),
                        deliver_text(c.config.deliver),
                        time_text(c.created_us),
                    ]
                })
                .collect();
            emit(&table(&["CONSUMER", "FILTER", "ACK", "DELIVER", "CREATED"], rows))
        }
    }
}

fn filter_text(config: &DurableConfig) -> String {
    if config.filter.is_empty() {
        "*".to_string()
    } else {
        config.filter.join(",")
    }
}

fn deliver_text(deliver: DeliverPolicy) -> String {
    match deliver {
        DeliverPolicy::All => "all".to_string(),
        DeliverPolicy::Last => "last".to_string(),
        DeliverPolicy::New => "new".to_string(),
        DeliverPolicy::ByOffset(offset) => format!("offset={offset}"),
        DeliverPolicy::ByTime(us) => format!("time={us}"),
    }
}

fn micros_text(us: u64) -> String {
    if us % 1_000_000 == 0 {
        duration_text(us)
    } else {
        humantime::format_duration(Duration::from_micros(us)).to_string()
    }
}

fn consumer_text(info: &DurableInfo) -> String {
    let config = &info.config;
    let backoff: Vec<String> = config.backoff_us.iter().map(|&us| micros_text(us)).collect();
    let mut text = format!(
        "consumer {} on {}/{} (created {})\n  filter: {}\n  deliver: {}\n  ack: {}, wait {}\n  max deliver: {}\n  backoff: {}\n  max ack pending: {}\n",
        config.name,
        info.stream,
        info.topic,
        time_text(info.created_us),
        filter_text(config),
        deliver_text(config.deliver),
        format!("{:?}", config.ack).to_lowercase(),
        micros_text(config.ack_wait_us),
        config.max_deliver.map_or("unlimited".to_string(), |n| n.to_string()),
        if backoff.is_empty() { "-".to_string() } else { backoff.join(",") },
        config.max_ack_pending,
    );
    if info.partitions.is_empty() {
        return text;
    }
    let rows = info
        .partitions
        .iter()
        .map(|p| {
            [
                p.partition as u64,
                p.ack_floor,
                p.delivered_to,
                p.consumer_sequence,
                p.num_pending,
                p.ack_pending,
            ]
            .into_iter()
            .chain([p.redeliver_pending, p.acked, p.terminated, p.redelivered, p.max_delivered])
            .map(|n| n.to_string())
            .collect()
        })
        .collect();
    let headers = [
        "PARTITION",
        "ACK-FLOOR",
        "DELIVERED-TO",
        "CONSUMER-SEQ",
        "NUM-PENDING",
        "ACK-PENDING",
        "REDELIVER-PENDING",
        "ACKED",
        "TERMINATED",
        "REDELIVERED",
        "MAX-DELIVERED",
    ];
    text.push_str(&table(&headers, rows));
    text
}

/// `ringctl fetch`: prints `PARTITION/OFFSET seq=S deliveries=D SUBJECT PAYLOAD` per message
/// (`--json`: one object per line), acknowledging each after printing it.
pub(super) async fn fetch(client: &Client, args: FetchArgs, json: bool) -> CliResult {
    let durable = client.durable_consumer(&args.stream, &args.topic, &args.consumer).await?;
    if args.ack == FetchAck::Explicit && durable.config().ack == AckPolicy::None {
        return Err(format!("consumer {} has ack policy none: use --ack none", args.consumer).into());
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut printed = 0_u64;
    while printed < args.count {
        let missing = (args.count - printed).min(u64::from(FETCH_CHUNK_MESSAGES)) as u32;
        let messages = fetch_chunk(&durable, missing, args.wait).await?;
        if messages.is_empty() {
            break;
        }
        for message in messages {
            let line = if json { json_line(&message)? } else { text_line(&message) };
            match out.write_all(line.as_bytes()).and_then(|()| out.flush()) {
                Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                Err(error) => return Err(format!("writing stdout: {error}").into()),
                Ok(()) => {}
            }
            if args.ack == FetchAck::Explicit {
                message.ack().await?;
            }
            printed += 1;
        }
    }
    Ok(())
}

async fn fetch_chunk(
    durable: &DurableConsumer,
    count: u32,
    wait: Duration,
) -> CliResult<Vec<DurableMessage>> {
    let fetch = durable.fetch().max_messages(count);
    let fetch = if wait.is_zero() { fetch.no_wait() } else { fetch.expires(wait) };
    Ok(fetch.messages().await?.collect())
}

fn subject_text(message: &DurableMessage) -> String {
    message.filter_value.as_ref().map_or("-".to_string(), |v| String::from_utf8_lossy(v).into_owned())
}

fn text_line(message: &DurableMessage) -> String {
    format!(
        "{}/{} seq={} deliveries={} {} {}\n",
        message.partition,
        message.offset,
        message.consumer_sequence,
        message.deliveries,
        subject_text(message),
        String::from_utf8_lossy(&message.payload)
    )
}

fn json_line(message: &DurableMessage) -> CliResult<String> {
    let value = serde_json::json!({
        "partition": message.partition,
        "offset": message.offset,
        "consumer_sequence": message.consumer_sequence,
        "deliveries": message.deliveries,
        "timestamp_us": message.timestamp_us,
        "subject": message.filter_value.as_ref().map(|v| String::from_utf8_lossy(v).into_owned()),
        "payload": String::from_utf8_lossy(&message.payload),
    });
    let mut line = serde_json::to_string(&value)?;
    line.push('\n');
    Ok(line)
}

/// `ringctl topic info`: the live contents per partition and in total.
pub(super) async fn topic_info(client: &Client, args: TopicInfoArgs, json: bool) -> CliResult {
    let state = client.topic_state(&args.stream, &args.topic).await?;
    if json {
        return print_json(&topic_state_json(&state)?);
    }
    emit(&topic_state_text(&state))
}

/// The answer as JSON, with `retention` at the top and no partition id in `total`.
fn topic_state_json(state: &TopicState) -> CliResult<serde_json::Value> {
    let mut value = serde_json::to_value(state)?;
    if let Some(object) = value.as_object_mut() {
        object.insert(
            "retention".to_string(),
            serde_json::Value::String(retention_text(state.policy.retention)),
        );
        if let Some(total) = object.get_mut("total").and_then(serde_json::Value::as_object_mut) {
            total.remove("partition");
        }
    }
    Ok(value)
}

fn retention_text(retention: Retention) -> String {
    match retention {
        Retention::Limits => "limits",
        Retention::Interest => "interest",
        Retention::WorkQueue => "workqueue",
    }
    .to_string()
}

fn timestamp_text(us: u64) -> String {
    if us == 0 {
        "-".to_string()
    } else {
        time_text(us)
    }
}

fn state_row(name: String, p: &PartitionState) -> Vec<String> {
    vec![
        name,
        p.messages.to_string(),
        p.bytes.to_string(),
        p.first_offset.to_string(),
        p.last_offset.to_string(),
        p.num_deleted.to_string(),
        p.consumer_count.to_string(),
        timestamp_text(p.first_timestamp_us),
        timestamp_text(p.last_timestamp_us),
    ]
}

fn topic_state_text(state: &TopicState) -> String {
    let policy = &state.policy;
    let mut text = format!("topic {}/{}\n  {}\n", state.stream, state.topic, super::policy_text(policy));
    let mut rows: Vec<Vec<String>> =
        state.partitions.iter().map(|p| state_row(p.partition.to_string(), p)).collect();
    rows.push(state_row("total".to_string(), &state.total));
    let headers = [
        "PARTITION",
        "MESSAGES",
        "BYTES",
        "FIRST",
        "LAST",
        "DELETED",
        "CONSUMERS",
        "FIRST-TIME",
        "LAST-TIME",
    ];
    let _ = write!(text, "{}", table(&headers, rows));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliver_policies_parse() {
        assert_eq!(parse_deliver("all"), Ok(DeliverPolicy::All));
        assert_eq!(parse_deliver("new"), Ok(DeliverPolicy::New));
        assert_eq!(parse_deliver("offset=7"), Ok(DeliverPolicy::ByOffset(7)));
        assert_eq!(parse_deliver("time=12"), Ok(DeliverPolicy::ByTime(12)));
        assert!(parse_deliver("first").is_err());
        assert!(parse_deliver("offset=x").is_err());
        assert_eq!(deliver_text(DeliverPolicy::ByOffset(7)), "offset=7");
    }
}
