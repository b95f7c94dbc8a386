//! The broker's command-line flags (clap): every tuning knob, with its default and meaning.
//!
//! Parsed once on the main thread before any shard starts; the resulting [`ServerConfig`] is
//! cloned into every shard. Invariant: a config that passes [`ServerConfig::check`] can be run:
//! credentials exist for a non-loopback listener, limits are in range, cores exist.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::constants::{BATCH_BYTES_MAX, SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_MAX};
use crate::storage::{FsyncPolicy, LogConfig};

/// User name of the root account when none is given on a loopback listener.
pub const DEFAULT_ROOT_USER: &str = "ringbroker";
/// Password of the root account when none is given on a loopback listener.
pub const DEFAULT_ROOT_PASSWORD: &str = "ringbroker";

/// ringbroker: a persistent, thread-per-core message-streaming broker on io_uring.
#[derive(Parser, Debug, Clone)]
#[command(version, about, long_about = None)]
pub struct ServerConfig {
    /// Directory holding the metadata log and every partition's segments (created if missing).
    #[arg(long, default_value = "./data", env = "RINGBROKER_DATA_DIR")]
    pub data_dir: PathBuf,

    /// Address every shard accepts connections on (SO_REUSEPORT: the kernel spreads connections
    /// over the shards).
    #[arg(long, default_value = "127.0.0.1:7720", env = "RINGBROKER_LISTEN")]
    pub listen: SocketAddr,

    /// First port of the per-shard direct listeners: shard N also listens on this port + N, so a
    /// shard-aware client reaches a partition's owner with no cross-core hop. Default: the
    /// `--listen` port + 1. 0 disables them.
    #[arg(long)]
    pub shard_port_base: Option<u16>,

    /// RabbitMQ Streams listener (`src/wire/rabbitmq`), e.g. `127.0.0.1:5552`: rstream and the
    /// Java, Go, .NET and Rust stream clients connect here. Off unless given. Same TLS, limits
    /// and users as `--listen`; every shard accepts (SO_REUSEPORT).
    #[arg(long, env = "RINGBROKER_RABBITMQ_LISTEN")]
    pub rabbitmq_listen: Option<SocketAddr>,

    /// First port of the per-shard RabbitMQ listeners: shard N also listens on this port + N and
    /// Metadata names it as the leader of the streams it owns, so leader-aware clients publish
    /// and consume on the owner. Default: the `--rabbitmq-listen` port + 1. 0 disables them (then
    /// Metadata names the main address for every stream).
    #[arg(long)]
    pub rabbitmq_shard_port_base: Option<u16>,

    /// The broker stream that holds RabbitMQ streams: RabbitMQ stream `S` is its topic `S`, with
    /// one partition; super stream `X` is its topic `X`, one partition per member stream. Created
    /// on first use.
    #[arg(long, default_value = "rabbitmq")]
    pub rabbitmq_stream: String,

    /// Host name RabbitMQ clients are told to connect to (Metadata, and the advertised host).
    /// Default: the `--rabbitmq-listen` address (`localhost` when it is a wildcard).
    #[arg(long)]
    pub rabbitmq_advertised_host: Option<String>,

    /// Kafka listener (`src/wire/kafka`), e.g. `127.0.0.1:9092`: kcat, librdkafka, kafka-python
    /// and the Java clients connect here. Off unless given. Same TLS, limits and users as
    /// `--listen` (SASL PLAIN); every shard accepts (SO_REUSEPORT).
    #[arg(long, env = "RINGBROKER_KAFKA_LISTEN")]
    pub kafka_listen: Option<SocketAddr>,

    /// First port of the per-shard Kafka listeners: shard N also listens on this port + N and is
    /// Kafka broker (node) N, named in Metadata as the leader of the partitions it owns and as the
    /// coordinator of the groups it hosts. Default: the `--kafka-listen` port + 1. 0 disables them
    /// (then Metadata names one broker, the main address, and requests are forwarded to owners).
    #[arg(long)]
    pub kafka_shard_port_base: Option<u16>,

    /// The broker stream that holds Kafka topics: Kafka topic `T` is its topic `T`, with the same
    /// partitions. Created on first use.
    #[arg(long, default_value = "kafka")]
    pub kafka_stream: String,

    /// Host name Kafka clients are told to connect to (Metadata brokers and coordinators).
    /// Default: the `--kafka-listen` address (`localhost` when it is a wildcard).
    #[arg(long)]
    pub kafka_advertised_host: Option<String>,

    /// Partitions of a Kafka topic created on first use (Metadata with auto-creation allowed, as
    /// Kafka's `auto.create.topics.enable` / `num.partitions`). 0 turns auto-creation off.
    #[arg(long, default_value_t = 1)]
    pub kafka_auto_create_partitions: u32,

    /// Prometheus endpoint, e.g. `127.0.0.1:9721`: `GET /metrics` in the text exposition format.
    /// Off unless given. Served by its own thread from counters the shards publish; a scrape never
    /// waits on a shard.
    #[arg(long, env = "RINGBROKER_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// How often each shard publishes its per-partition figures (messages, bytes, offsets,
    /// segments, consumer lag) for the metrics endpoint. Counters and histograms are always live.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub metrics_publish_interval: Duration,

    /// Number of shards (one pinned executor each). Default: one per available core.
    #[arg(long, conflicts_with = "cores")]
    pub shards: Option<usize>,

    /// Cores to run shards on, e.g. `0,1` or `2-5`; one shard per core, pinned.
    #[arg(long, value_parser = parse_core_list)]
    pub cores: Option<CoreList>,

    /// Durability: `always` (acknowledge after fdatasync, group commit), `interval=MS`
    /// (acknowledge after the write, fdatasync at least every MS), `never`.
    #[arg(long, default_value = "always")]
    pub fsync: FsyncPolicy,

    /// Size at which a partition's active segment is sealed and a new one started.
    #[arg(long, default_value_t = SEGMENT_BYTES_DEFAULT)]
    pub segment_bytes: u64,

    /// Log bytes between two entries of a segment's sparse offset index: a read for an offset
    /// scans at most this far past its entry, and reads planned ahead are cut on entries.
    #[arg(long, default_value_t = crate::constants::INDEX_INTERVAL_BYTES_DEFAULT)]
    pub index_interval_bytes: u32,

    /// Seal a segment once its first message is this old (e.g. `1h`, `7d`). Default: size only.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub segment_max_age: Option<Duration>,

    /// How often each shard applies retention limits (max age, max bytes) to its partitions.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub retention_check_interval: Duration,

    /// DMA memory each shard registers with io_uring (fitted under RLIMIT_MEMLOCK).
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    pub io_memory: usize,

    /// Most appended bytes one partition buffers before they are written; an append past it
    /// waits for the disk. Memory is partitions x this; at least one write chunk (1 MiB).
    #[arg(long, default_value_t = crate::constants::DIRTY_BYTES_MAX_DEFAULT)]
    pub write_behind_bytes: usize,

    /// Bytes of recent batches the broker keeps in memory (produce frames and disk reads), over
    /// all shards (each gets an equal share), so that consumers of recent data are answered
    /// without a disk read. Default: a quarter of the machine's memory (or of the cgroup's
    /// limit). 0 disables. See the README's memory section for the broker's total.
    #[arg(long)]
    pub cache_bytes: Option<usize>,

    /// Bytes per second, over all shards, by which the batch cache grows into `--cache-bytes`
    /// after start-up (from 64 MiB per shard). Memory the process has not touched yet costs a
    /// page fault and a zero-fill per page, so a fresh broker under full load would otherwise
    /// spend its first gigabytes of traffic on that. 0 takes the whole budget at once.
    #[arg(long, default_value_t = crate::constants::CACHE_GROWTH_DEFAULT)]
    pub cache_growth: usize,

    /// Leave transparent huge pages on for the broker's memory. Off by default: its buffers are
    /// about 1 MiB, and 2 MiB pages double what fresh ones cost and what RSS shows.
    #[arg(long)]
    pub allow_thp: bool,

    /// Bytes of each read planned ahead for a consumer reading a partition from disk
    /// sequentially. 0 disables read-ahead.
    #[arg(long, default_value_t = crate::constants::PREFETCH_BYTES_DEFAULT)]
    pub prefetch_bytes: usize,

    /// Reads planned ahead of such a consumer, all in flight at once: the read-ahead window is
    /// this x `--prefetch-bytes` per partition being read from disk.
    #[arg(long, default_value_t = crate::constants::PREFETCH_DEPTH_DEFAULT)]
    pub prefetch_depth: usize,

    /// How long an idle shard spins before it parks (e.g. `50us`): lower wake-up latency for the
    /// price of CPU time. 0 parks at once.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    pub spin_before_park: Duration,

    /// io_uring submission queue depth per ring.
    #[arg(long, default_value_t = 128)]
    pub ring_depth: usize,

    /// Most open client connections over all shards; more are refused with TooManyConnections.
    #[arg(long, default_value_t = 10_000)]
    pub max_connections: usize,

    /// Largest frame accepted; larger ones get FrameTooLarge and the connection is closed.
    #[arg(long, default_value_t = BATCH_BYTES_MAX + 1024 * 1024)]
    pub max_frame_bytes: usize,

    /// Requests one connection may have in flight; further frames wait to be read.
    #[arg(long, default_value_t = 64)]
    pub max_in_flight: usize,

    /// Bytes of request frames one connection may have read but not yet answered; a frame that
    /// would go over waits (backpressure) until answers free room. A single frame larger than
    /// this (up to `--max-frame-bytes`) is still read when nothing else is outstanding.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub max_connection_memory: usize,

    /// Close a connection that sent no complete frame and had no request in flight for this
    /// long (e.g. `10m`). 0 disables.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
    pub idle_timeout: Duration,

    /// A frame whose header arrived must be complete within this (slow senders are closed,
    /// e.g. `30s`); also bounds a TLS handshake. 0 disables.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub frame_read_timeout: Duration,

    /// Failed logins on one connection after which the server answers LoginThrottled and closes
    /// it.
    #[arg(long, default_value_t = 5)]
    pub max_failed_logins: u32,

    /// PEM certificate chain (server certificate first): with `--tls-key`, every listener (the
    /// shared one and the per-shard ports) speaks TLS only.
    #[arg(long, requires = "tls_key", env = "RINGBROKER_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `--tls-cert`.
    #[arg(long, requires = "tls_cert", env = "RINGBROKER_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// Longest long-poll wait a client may ask for.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub max_poll_wait: Duration,

    /// Named producers each partition remembers (id, epoch, last sequence, offsets of the last
    /// 5 batches, ~400 bytes each); past it the least recently active one is forgotten (counted
    /// as a producer eviction in `stats`), and a retry of its old batches is no longer
    /// recognised as a duplicate.
    #[arg(long, default_value_t = 1024)]
    pub max_producers_per_partition: usize,

    /// A named producer that neither declared nor wrote on a partition for this long is
    /// forgotten there (e.g. `7d`); its next batch gets UnknownProducer until it declares again.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "7d")]
    pub producer_expiry: Duration,

    /// An exclusive or shared producer lease ends when its connection sent no ProducerHeartbeat
    /// for this long (and at once when the connection closes). The SDK heartbeats at a third.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub producer_session_timeout: Duration,

    /// How often a partition whose producer table changed snapshots it, which bounds the log
    /// replayed on start-up (also on every clean shutdown).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub producer_snapshot_interval: Duration,

    /// Push subscriptions one connection may hold; more get TooManySubscriptions.
    #[arg(long, default_value_t = 256)]
    pub max_subscriptions: usize,

    /// Bytes of deliveries queued on one connection and not yet written to its socket; past
    /// it, the connection's subscriptions stop delivering until the client reads (a consumer
    /// that stops reading costs at most this plus one delivery).
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    pub subscription_queue_bytes: usize,

    /// Most batch bytes in one delivery (at least one batch is always sent whole).
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    pub delivery_bytes: u32,

    /// Root (administrator) user created when the data directory has no users.
    #[arg(long, env = "RINGBROKER_ROOT_USER")]
    pub root_user: Option<String>,

    /// Password of the root user (prefer the environment variable over the flag).
    #[arg(long, env = "RINGBROKER_ROOT_PASSWORD", hide_env_values = true)]
    pub root_password: Option<String>,
}

/// The memory this process may use: the machine's (`MemTotal`), or its cgroup's limit when
/// lower. 1 GiB when neither can be read.
pub fn memory_limit_bytes() -> usize {
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| {
        let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
        line.split_whitespace().nth(1)?.parse::<usize>().ok().map(|kib| kib * 1024)
    });
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|text| text.trim().parse::<usize>().ok());
    match (total, cgroup) {
        (Some(total), Some(limit)) => total.min(limit),
        (Some(bytes), None) | (None, Some(bytes)) => bytes,
        (None, None) => 1 << 30,
    }
}

/// A list of core ids from `--cores`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreList(pub Vec<usize>);

/// Parses `0,1,4-6` into core ids.
fn parse_core_list(text: &str) -> Result<CoreList, String> {
    let mut cores = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("invalid core list `{text}`: expected e.g. `0,1` or `2-5`");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b {
                    return Err(bad());
                }
                cores.extend(a..=b);
            }
            None => cores.push(part.parse().map_err(|_| bad())?),
        }
    }
    if cores.is_empty() {
        return Err(format!("invalid core list `{text}`: no cores"));
    }
    cores.sort_unstable();
    cores.dedup();
    Ok(CoreList(cores))
}

impl ServerConfig {
    /// Refuses configurations that cannot run safely; says why.
    pub fn check(&self) -> Result<(), String> {
        if !self.listen.ip().is_loopback() && self.root_password.is_none() {
            return Err(format!(
                "refusing to listen on non-loopback {} without a root password: set --root-password or RINGBROKER_ROOT_PASSWORD",
                self.listen
            ));
        }
        if let Some(address) = self.rabbitmq_listen {
            if !address.ip().is_loopback() && self.root_password.is_none() {
                return Err(format!(
                    "refusing --rabbitmq-listen on non-loopback {address} without a root password: set --root-password or RINGBROKER_ROOT_PASSWORD"
                ));
            }
        }
        if let Some(address) = self.kafka_listen {
            if !address.ip().is_loopback() && self.root_password.is_none() {
                return Err(format!(
                    "refusing --kafka-listen on non-loopback {address} without a root password: set --root-password or RINGBROKER_ROOT_PASSWORD"
                ));
            }
        }
        crate::metadata::validate_name(&self.kafka_stream)
            .map_err(|e| format!("--kafka-stream \"{}\": {e}", self.kafka_stream))?;
        crate::metadata::validate_name(&self.rabbitmq_stream)
            .map_err(|e| format!("--rabbitmq-stream \"{}\": {e}", self.rabbitmq_stream))?;
        if self.segment_bytes < 64 * 1024 || self.segment_bytes > SEGMENT_BYTES_MAX {
            return Err(format!(
                "--segment-bytes {} outside 64 KiB..={SEGMENT_BYTES_MAX}",
                self.segment_bytes
            ));
        }
        if self.index_interval_bytes < 4096 {
            return Err(format!("--index-interval-bytes {} below 4096", self.index_interval_bytes));
        }
        if self.max_frame_bytes < 4096 {
            return Err(format!("--max-frame-bytes {} below 4096", self.max_frame_bytes));
        }
        if self.max_in_flight == 0 || self.max_connections == 0 {
            return Err("--max-in-flight and --max-connections must be positive".to_string());
        }
        if self.max_connection_memory < 4096 {
            return Err(format!("--max-connection-memory {} below 4096", self.max_connection_memory));
        }
        if self.max_failed_logins == 0 {
            return Err("--max-failed-logins must be positive".to_string());
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("--tls-cert and --tls-key go together".to_string());
        }
        if self.shards == Some(0) {
            return Err("--shards must be at least 1".to_string());
        }
        let producers_max = crate::storage::producers::SNAPSHOT_ENTRIES_MAX;
        if self.max_producers_per_partition == 0 || self.max_producers_per_partition > producers_max {
            return Err(format!(
                "--max-producers-per-partition {} outside 1..={producers_max}",
                self.max_producers_per_partition
            ));
        }
        if self.max_subscriptions == 0 {
            return Err("--max-subscriptions must be positive".to_string());
        }
        if self.subscription_queue_bytes < 64 * 1024 || self.delivery_bytes < 4096 {
            return Err("--subscription-queue-bytes below 64 KiB or --delivery-bytes below 4096".to_string());
        }
        if self.producer_session_timeout < Duration::from_millis(100) {
            return Err("--producer-session-timeout below 100ms".to_string());
        }
        if self.write_behind_bytes < crate::constants::WRITE_CHUNK_BYTES_DEFAULT {
            return Err(format!(
                "--write-behind-bytes {} below one write chunk ({} bytes)",
                self.write_behind_bytes,
                crate::constants::WRITE_CHUNK_BYTES_DEFAULT
            ));
        }
        Ok(())
    }

    /// The batch cache over all shards: `--cache-bytes`, or a quarter of the memory this
    /// process may use.
    pub fn cache_bytes_total(&self) -> usize {
        self.cache_bytes.unwrap_or_else(|| memory_limit_bytes() / 4)
    }

    /// One shard's share of the batch cache.
    pub fn cache_bytes_per_shard(&self) -> usize {
        self.cache_bytes_total() / self.placement().len().max(1)
    }

    /// One shard's share of `--cache-growth`.
    pub fn cache_growth_per_shard(&self) -> usize {
        self.cache_growth / self.placement().len().max(1)
    }

    /// The cores shards run on (pinned), or `None` entries for unpinned shards.
    pub fn placement(&self) -> Vec<Option<usize>> {
        if let Some(CoreList(cores)) = &self.cores {
            return cores.iter().map(|&c| Some(c)).collect();
        }
        let available: Vec<usize> =
            core_affinity::get_core_ids().unwrap_or_default().iter().map(|c| c.id).collect();
        let count = self.shards.unwrap_or(available.len().max(1));
        (0..count)
            .map(|i| if available.is_empty() { None } else { Some(available[i % available.len()]) })
            .collect()
    }

    /// The root credentials to create when the catalog has no users.
    pub fn root_credentials(&self) -> (String, String) {
        let user = self.root_user.clone().unwrap_or_else(|| DEFAULT_ROOT_USER.to_string());
        let password = self.root_password.clone().unwrap_or_else(|| DEFAULT_ROOT_PASSWORD.to_string());
        (user, password)
    }

    /// The direct address of shard `shard`, if per-shard listeners are on.
    pub fn shard_address(&self, shard: u16) -> Option<SocketAddr> {
        let base = self.shard_port_base.unwrap_or(self.listen.port().checked_add(1)?);
        if base == 0 {
            return None;
        }
        let port = base.checked_add(shard)?;
        Some(SocketAddr::new(self.listen.ip(), port))
    }

    /// The RabbitMQ listener of shard `shard` (its own port), if the listener and per-shard ports
    /// are on.
    pub fn rabbitmq_shard_address(&self, shard: u16) -> Option<SocketAddr> {
        let listen = self.rabbitmq_listen?;
        let base = self.rabbitmq_shard_port_base.unwrap_or(listen.port().checked_add(1)?);
        if base == 0 {
            return None;
        }
        Some(SocketAddr::new(listen.ip(), base.checked_add(shard)?))
    }

    /// The host RabbitMQ clients are told to connect to.
    pub fn rabbitmq_host(&self) -> String {
        if let Some(host) = &self.rabbitmq_advertised_host {
            return host.clone();
        }
        match self.rabbitmq_listen {
            Some(listen) if !listen.ip().is_unspecified() => listen.ip().to_string(),
            _ => "localhost".to_string(),
        }
    }

    /// The Kafka listener of shard `shard` (its own port), if the listener and per-shard ports
    /// are on.
    pub fn kafka_shard_address(&self, shard: u16) -> Option<SocketAddr> {
        let listen = self.kafka_listen?;
        let base = self.kafka_shard_port_base.unwrap_or(listen.port().checked_add(1)?);
        if base == 0 {
            return None;
        }
        Some(SocketAddr::new(listen.ip(), base.checked_add(shard)?))
    }

    /// The host Kafka clients are told to connect to.
    pub fn kafka_host(&self) -> String {
        if let Some(host) = &self.kafka_advertised_host {
            return host.clone();
        }
        match self.kafka_listen {
            Some(listen) if !listen.ip().is_unspecified() => listen.ip().to_string(),
            _ => "localhost".to_string(),
        }
    }

    /// The log settings of a partition with the topic's overrides applied.
    pub fn log_config(&self, topic: &crate::protocol::messages::TopicConfig) -> LogConfig {
        LogConfig {
            segment_bytes: topic.segment_bytes.unwrap_or(self.segment_bytes),
            segment_max_age: self.segment_max_age,
            fsync: self.fsync,
            retention_max_age: topic.retention_max_age_us.map(Duration::from_micros),
            retention_max_bytes: topic.retention_max_bytes,
            dirty_bytes_max: self.write_behind_bytes,
            index_interval_bytes: self.index_interval_bytes,
            ..LogConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<ServerConfig, clap::Error> {
        ServerConfig::try_parse_from(std::iter::once("ringbroker").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_are_sensible() {
        let config = parse(&[]).expect("defaults parse");
        assert_eq!(config.listen.to_string(), "127.0.0.1:7720");
        assert_eq!(config.fsync, FsyncPolicy::Always);
        assert!(config.check().is_ok());
        assert_eq!(config.root_credentials(), ("ringbroker".to_string(), "ringbroker".to_string()));
        assert_eq!(config.shard_address(1).map(|a| a.port()), Some(7722));
    }

    #[test]
    fn non_loopback_without_password_is_refused() {
        let config = parse(&["--listen", "0.0.0.0:7720"]).expect("parse");
        let error = config.check().expect_err("refused");
        assert!(error.contains("root password"), "{error}");
        let config = parse(&["--listen", "0.0.0.0:7720", "--root-password", "s3cret"]).expect("parse");
        assert!(config.check().is_ok());
    }

    #[test]
    fn core_lists_and_durations() {
        assert_eq!(parse_core_list("0,2-4"), Ok(CoreList(vec![0, 2, 3, 4])));
        assert!(parse_core_list("3-1").is_err());
        let config =
            parse(&["--cores", "0", "--fsync", "interval=50", "--segment-max-age", "2h"]).expect("parse");
        assert_eq!(config.placement(), vec![Some(0)]);
        assert_eq!(config.segment_max_age, Some(Duration::from_secs(7200)));
        assert!(parse(&["--fsync", "sometimes"]).is_err());
    }

    #[test]
    fn limits_and_tls_flags() {
        let config = parse(&[]).expect("defaults");
        assert_eq!(config.idle_timeout, Duration::from_secs(600));
        assert_eq!(config.frame_read_timeout, Duration::from_secs(30));
        assert_eq!(config.max_connection_memory, 64 << 20);
        assert_eq!((config.max_failed_logins, config.tls_cert.as_ref()), (5, None));
        let config = parse(&["--idle-timeout", "2s", "--frame-read-timeout", "500ms"]).expect("parse");
        assert_eq!(config.frame_read_timeout, Duration::from_millis(500));
        assert!(parse(&["--tls-cert", "cert.pem"]).is_err(), "a certificate needs its key");
        assert!(parse(&["--tls-key", "key.pem"]).is_err(), "a key needs its certificate");
        let config = parse(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]).expect("both");
        assert!(config.check().is_ok());
        assert!(parse(&["--max-failed-logins", "0"]).expect("parse").check().is_err());
        assert!(parse(&["--max-connection-memory", "100"]).expect("parse").check().is_err());
    }
}
