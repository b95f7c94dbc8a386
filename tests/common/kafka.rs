//! Kafka test harness: a ringbroker started with its Kafka listener (`--kafka-listen` on a free
//! loopback port, one Kafka node per shard on the ports after it), a blocking raw Kafka client
//! whose frames are built and read with the `kafka-protocol` crate's codecs (for hostile tests
//! and readiness probes), and bounded runs of external client tools (kcat, python3).
//!
//! Test files include it with `#[path = "common/kafka.rs"] mod kafka;` next to `mod common;`
//! (it uses `common::Broker`). Everything runs on the test's thread with plain blocking sockets;
//! every read is bounded by [`READ_TIMEOUT`], every loop by a deadline, every child process by a
//! timeout after which it is killed.
//!
//! Framing (Kafka protocol guide): `i32` big-endian size of what follows, then the request
//! header (api key `i16`, api version `i16`, correlation id `i32`, client id, tagged fields from
//! header v2) and the body; a response is the size, the correlation id (plus tagged fields from
//! response header v1) and the body.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, FetchRequest, MetadataRequest,
    MetadataResponse, ProduceRequest, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use crate::common::Broker;

/// Socket read timeout of raw test connections.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest frame the raw client accepts from the server (a test guard, not a protocol limit).
const FRAME_BYTES_MAX: usize = 16 << 20;
/// How long a started broker may take before its Kafka listener answers.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The client id raw requests carry.
const CLIENT_ID: &str = "ringbroker-raw-test";

/// A ringbroker with its Kafka listener.
pub struct Server {
    pub broker: Broker,
    /// The Kafka listener's (bootstrap) port; shard `n` is Kafka node `n` on `port + 1 + n`.
    pub port: u16,
}

impl Server {
    /// The bootstrap address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The bootstrap address as clients take it (`host:port`).
    pub fn bootstrap(&self) -> String {
        self.addr().to_string()
    }

    /// Kafka node `shard`'s address (its shard's own Kafka port).
    pub fn node_addr(&self, shard: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port + 1 + shard))
    }

    /// Panics if the broker process has exited (a panic on a server path kills it).
    pub fn assert_running(&mut self) {
        assert!(self.broker.is_running(), "ringbroker exited: {:?}", self.broker.exit_status());
    }
}

/// `count` consecutive free loopback ports, found by binding.
pub fn free_port_run(count: u16) -> u16 {
    for _ in 0..200 {
        let probe = TcpListener::bind("127.0.0.1:0").expect("bind probe");
        let base = probe.local_addr().expect("probe address").port();
        drop(probe);
        if base > 65000 - count {
            continue;
        }
        if (0..count).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no {count} consecutive free loopback ports");
}

/// The Kafka listener flags for a broker of `shards` shards on free ports: the bootstrap port and
/// the per-shard port base right after it. Returns (flags, bootstrap port).
pub fn listener_flags(shards: u16) -> (Vec<String>, u16) {
    let base = free_port_run(shards + 1);
    let flags = vec![
        "--kafka-listen".to_string(),
        format!("127.0.0.1:{base}"),
        "--kafka-shard-port-base".to_string(),
        (base + 1).to_string(),
    ];
    (flags, base)
}

/// Starts a ringbroker of `shards` shards with its Kafka listener and `extra` flags, and waits
/// until the bootstrap port and every shard's port answer ApiVersions.
pub fn server(shards: u16, extra: &[&str]) -> Server {
    let (flags, port) = listener_flags(shards);
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    let broker = Broker::start(shards, &args);
    let server = Server { broker, port };
    let deadline = Instant::now() + READY_TIMEOUT;
    wait_for_listener(server.addr(), deadline);
    for shard in 0..shards {
        wait_for_listener(server.node_addr(shard), deadline);
    }
    server
}

/// Waits until an ApiVersions exchange on `addr` succeeds.
pub fn wait_for_listener(addr: SocketAddr, deadline: Instant) {
    loop {
        let answered = RawClient::connect(addr).and_then(|mut client| client.api_versions(3)).is_ok();
        if answered {
            return;
        }
        assert!(Instant::now() < deadline, "the Kafka listener on {addr} did not answer in time");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether the tests run under CI (`CI=true`), where a missing client is a failure.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|ci| ci == "true")
}

/// Call when a client tool is missing: prints `SKIP` with the install command and returns, or
/// panics under `CI=true` (`.ci/run` installs the tools).
pub fn skip_missing(what: &str, install: &str) {
    if under_ci() {
        panic!("{what} missing under CI=true (.ci/run installs it): {install}");
    }
    println!("SKIP: {what} missing; install with: {install}");
}

/// Whether `program args` runs and exits with success (a tool-presence probe).
pub fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// What a bounded child process did.
#[derive(Debug)]
pub struct Ran {
    /// Its exit status; `None` when it was killed at the timeout.
    pub status: Option<ExitStatus>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Ran {
    /// Whether it exited with success before the timeout.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|status| status.success())
    }

    /// Stdout as (lossy) text.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// A short account for assertion messages: status and the stderr tail.
    pub fn describe(&self) -> String {
        let status = self.status.map_or("killed at the timeout".to_string(), |s| s.to_string());
        let tail: Vec<&str> = self.stderr.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("{status}; stderr tail:\n{}", tail.join("\n"))
    }
}

/// Runs `command` with `stdin` fed to it, reading its outputs while it runs (they may exceed a
/// pipe buffer), and kills it at `timeout`.
pub fn run_bounded(command: &mut Command, stdin: &[u8], timeout: Duration) -> Ran {
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    let mut input = child.stdin.take().expect("child stdin");
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let stdout = drain(child.stdout.take().expect("child stdout"));
    let stderr = drain(child.stderr.take().expect("child stderr"));
    let status = wait_or_kill(&mut child, timeout);
    let _ = writer.join();
    let stdout = stdout.join().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned();
    Ran { status, stdout, stderr }
}

fn drain(mut from: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = from.read_to_end(&mut bytes);
        bytes
    })
}

/// Waits for `child` until `timeout`; kills and reaps it then (returns `None`).
pub fn wait_or_kill(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A whole request frame: size prefix, header (at the request's header version), body.
pub fn request_frame<Req: Request>(version: i16, correlation_id: i32, request: &Req) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(Req::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
    let mut out = BytesMut::new();
    out.extend_from_slice(&[0; 4]);
    header.encode(&mut out, Req::header_version(version)).expect("encode a request header");
    request.encode(&mut out, version).expect("encode a request body");
    let size = u32::try_from(out.len() - 4).expect("a test frame fits a u32 size");
    out[..4].copy_from_slice(&size.to_be_bytes());
    out.to_vec()
}

/// Decodes a response frame (size prefix removed) to `Req`'s response at `version`: its
/// correlation id and body. Panics if it does not decode or bytes are left over.
pub fn decode_response<Req: Request>(version: i16, mut frame: Bytes) -> (i32, Req::Response) {
    let header_version = <Req::Response as HeaderVersion>::header_version(version);
    let header = ResponseHeader::decode(&mut frame, header_version).expect("a response header");
    let body = Req::Response::decode(&mut frame, version)
        .unwrap_or_else(|e| panic!("the {:?} v{version} response did not decode: {e:#}", key_of::<Req>()));
    assert!(!frame.has_remaining(), "{} bytes after the {:?} response", frame.remaining(), key_of::<Req>());
    (header.correlation_id, body)
}

fn key_of<Req: Request>() -> Option<ApiKey> {
    ApiKey::try_from(Req::KEY).ok()
}

/// How a connection ended, as a hostile test sees it.
#[derive(Debug)]
pub enum Ending {
    /// The server closed (or reset) the connection.
    Closed,
    /// The server sent a frame (size prefix removed).
    Answered(Bytes),
}

/// A blocking Kafka client written frame by frame.
pub struct RawClient {
    pub stream: TcpStream,
    correlation_id: i32,
}

impl RawClient {
    pub fn connect(addr: SocketAddr) -> std::io::Result<RawClient> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(RawClient { stream, correlation_id: 0 })
    }

    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads one frame off the socket (size prefix removed).
    pub fn read_frame(&mut self) -> std::io::Result<Bytes> {
        let mut size = [0_u8; 4];
        self.stream.read_exact(&mut size)?;
        let size = u32::from_be_bytes(size) as usize;
        if size > FRAME_BYTES_MAX {
            let message = format!("server frame of size {size}");
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, message));
        }
        let mut rest = vec![0_u8; size];
        self.stream.read_exact(&mut rest)?;
        Ok(Bytes::from(rest))
    }

    /// The next correlation id.
    pub fn next_correlation_id(&mut self) -> i32 {
        self.correlation_id += 1;
        self.correlation_id
    }

    /// Sends `request` at `version` and reads its response (checking the correlation id).
    pub fn request<Req: Request>(&mut self, version: i16, request: &Req) -> std::io::Result<Req::Response> {
        let correlation_id = self.next_correlation_id();
        self.send(&request_frame(version, correlation_id, request))?;
        let frame = self.read_frame()?;
        let (answered, response) = decode_response::<Req>(version, frame);
        assert_eq!(answered, correlation_id, "responses carry their request's correlation id");
        Ok(response)
    }

    pub fn api_versions(&mut self, version: i16) -> std::io::Result<ApiVersionsResponse> {
        let mut request = ApiVersionsRequest::default();
        if version >= 3 {
            request.client_software_name = StrBytes::from_static_str("ringbroker-raw-test");
            request.client_software_version = StrBytes::from_static_str("1.0");
        }
        self.request(version, &request)
    }

    /// Metadata for `topics` (all topics when `None`), without auto-creation (from v4).
    pub fn metadata(&mut self, version: i16, topics: Option<&[&str]>) -> std::io::Result<MetadataResponse> {
        let topics = topics.map(|names| {
            names
                .iter()
                .map(|name| {
                    MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
                })
                .collect()
        });
        self.request(version, &MetadataRequest::default().with_topics(topics))
    }

    /// Produce v7 (acks all) of `records` (Kafka record batches) to `partition` of `topic`; the
    /// partition's answer.
    pub fn produce(&mut self, topic: &str, partition: i32, records: Vec<u8>) -> PartitionProduceResponse {
        let data =
            PartitionProduceData::default().with_index(partition).with_records(Some(Bytes::from(records)));
        let topic_data = TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![data]);
        let request =
            ProduceRequest::default().with_acks(-1).with_timeout_ms(10_000).with_topic_data(vec![topic_data]);
        let response = self.request(7, &request).expect("a Produce answer");
        let answer =
            response.responses.into_iter().next().and_then(|t| t.partition_responses.into_iter().next());
        answer.expect("the Produce answer names the partition")
    }

    /// Fetch v11 of `partition` of `topic` from `offset` (no waiting); the partition's answer.
    pub fn fetch(&mut self, topic: &str, partition: i32, offset: i64) -> PartitionData {
        let wanted = FetchPartition::default()
            .with_partition(partition)
            .with_fetch_offset(offset)
            .with_partition_max_bytes(4 << 20)
            .with_current_leader_epoch(-1)
            .with_log_start_offset(-1);
        let topic = FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![wanted]);
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(8 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![topic]);
        let response = self.request(11, &request).expect("a Fetch answer");
        assert_eq!(response.error_code, 0, "Fetch error code");
        let answer = response.responses.into_iter().next().and_then(|t| t.partitions.into_iter().next());
        answer.expect("the Fetch answer names the partition")
    }

    /// Every record of `partition` of `topic` from `offset` to the high watermark (bounded).
    pub fn fetch_all(&mut self, topic: &str, partition: i32, offset: i64) -> Vec<Record> {
        let mut out: Vec<Record> = Vec::new();
        let mut next = offset;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answer = self.fetch(topic, partition, next);
            assert_eq!(answer.error_code, 0, "Fetch of {topic}/{partition} at {next}");
            let mut records = answer.records.unwrap_or_default();
            for set in RecordBatchDecoder::decode_all(&mut records).expect("fetched record batches decode") {
                out.extend(set.records.into_iter().filter(|record| record.offset >= next));
            }
            next = out.last().map_or(next, |record| record.offset + 1);
            if next >= answer.high_watermark {
                return out;
            }
            assert!(Instant::now() < deadline, "fetching {topic}/{partition} did not reach its end");
        }
    }

    /// Reads until the server closes the connection or sends a frame; panics when neither
    /// happens within [`READ_TIMEOUT`].
    pub fn ending(&mut self) -> Ending {
        match self.read_frame() {
            Ok(frame) => Ending::Answered(frame),
            Err(error)
                if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
            {
                panic!("the server neither answered nor closed within {READ_TIMEOUT:?}")
            }
            Err(_) => Ending::Closed,
        }
    }
}

/// A plain (non-idempotent) record for a batch: `key`, `value`, `headers`, create time
/// `timestamp_ms`.
pub fn record(key: &[u8], value: &[u8], headers: &[(&str, &[u8])], timestamp_ms: i64) -> Record {
    let mut record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: timestamp_ms,
        key: Some(Bytes::copy_from_slice(key)),
        value: Some(Bytes::copy_from_slice(value)),
        headers: Default::default(),
    };
    for (name, value) in headers {
        record.headers.insert(StrBytes::from_string(name.to_string()), Some(Bytes::copy_from_slice(value)));
    }
    record
}

/// One uncompressed RecordBatch v2 of `records` (their offsets are made 0, 1, ...).
pub fn record_batch(records: &[Record]) -> Vec<u8> {
    let numbered: Vec<Record> =
        records.iter().enumerate().map(|(i, r)| Record { offset: i as i64, ..r.clone() }).collect();
    let mut out = BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression: Compression::None };
    RecordBatchEncoder::encode(&mut out, &numbered, &options).expect("encode a record batch");
    out.to_vec()
}

/// A well-behaved client's exchange on `client`: ApiVersions v3 lists Produce, Fetch and
/// Metadata; Metadata v9 of all topics names `shards` brokers.
pub fn round_trip_on(client: &mut RawClient, shards: u16) {
    let versions = client.api_versions(3).expect("ApiVersions v3");
    assert_eq!(versions.error_code, 0, "ApiVersions v3 error code");
    for key in [ApiKey::Produce, ApiKey::Fetch, ApiKey::Metadata, ApiKey::ApiVersions] {
        assert!(
            versions.api_keys.iter().any(|api| api.api_key == key as i16),
            "ApiVersions does not list {key:?}: {:?}",
            versions.api_keys
        );
    }
    let metadata = client.metadata(9, None).expect("Metadata v9");
    assert_eq!(metadata.brokers.len(), usize::from(shards), "one broker per shard: {:?}", metadata.brokers);
}

/// [`round_trip_on`] over a fresh connection to `addr`.
pub fn round_trip(addr: SocketAddr, shards: u16) {
    let mut client = RawClient::connect(addr).expect("connect to the Kafka listener");
    round_trip_on(&mut client, shards);
}
