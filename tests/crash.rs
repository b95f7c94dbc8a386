//! Crash test: the real `ringbroker` binary, SIGKILLed again and again under load, on one data
//! directory that persists across cycles (`docs/crash-test.md`).
//!
//! Each cycle starts the broker, runs producers and a consumer group. Each producer lane is a
//! named, idempotent producer (`ProducerDeclare` each cycle, as a restarted producer would, with
//! its sequences continuing and seeded gaps between batches) that sends one batch per request
//! with the low-level `Client::produce` and **retries** it until it is answered: a lost answer or
//! connection sends the very same batch again, and a batch still unanswered at the kill is sent
//! again first thing next cycle, against the restarted broker. The broker must store each batch
//! once (a resend is acknowledged as a duplicate with the original offsets). The consumer group (members poll with `Next` and commit what they read), SIGKILLs the broker at a
//! seeded random moment (one cycle in five also kills the restarted broker once during recovery
//! and start-up), restarts it and checks, reading every partition from offset 0:
//!
//! * offsets run 0, 1, 2, ... up to the high watermark, with no gap;
//! * every payload is byte-identical to what its producer sent (payloads are regenerated from
//!   the seed, the producer and the sequence number written in their first bytes);
//! * no message is stored twice, and nothing is stored that was never sent or that the broker
//!   refused;
//! * whatever a previous restart found is still there, unchanged (recovery never eats into it);
//! * every acknowledged message sits at its acknowledged (partition, offset) — under
//!   `--fsync always` without exception; under `--fsync interval=MS` a missing one is counted as
//!   lost and must have been acknowledged within the interval (plus slack) before the kill, under
//!   `--fsync never` within half a second (the write-behind flusher writes at once);
//! * every message a consumer saw is still there at the same offset (same allowance);
//! * each partition's stored group offset is no larger than its high watermark and is the last
//!   acknowledged commit or one whose answer never came (same allowance);
//! * no partition is poisoned.
//!
//! The seed (`CRASH_SEED`, printed) fixes the schedule: kill moments, batch sizes, partitions,
//! payloads and pacing (not the threads' interleaving). `crash_cycles_short` and
//! `crash_cycles_short_interval` (5 cycles each, part of `cargo test`) and the ignored
//! `crash_cycles_long` (`scripts/crash-test.sh`: `CRASH_CYCLES`, default 200, `CRASH_FSYNC`
//! `always`, `interval=MS` or `never`) share the code. Every loop is bounded by a count and a deadline;
//! everything runs on loopback.

mod common;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ringbroker::client::{Client, ClientError, ConnectionString, Polled};
use ringbroker::protocol::batch::BatchBuilder;
use ringbroker::protocol::messages::{
    AccessMode, ConsumerRef, GroupTarget, JoinGroup, PartitionTarget, Partitioning, PollRequest,
    PollStrategy, PollTarget, ProducerDeclare, Status, TopicConfig,
};

const STREAM: &str = "crash";
const TOPIC: &str = "load";
const GROUP: &str = "crash-group";
const SHARDS: u16 = 2;
const PARTITIONS: u32 = 4;
const PRODUCERS: u32 = 3;
/// Concurrent request loops per producer, sharing its one pipelined connection.
const LANES_PER_PRODUCER: u32 = 3;
const CONSUMERS: u32 = 2;
/// Small segments, so that kills also land around segment rolls and sealed segments pile up.
const SEGMENT_BYTES: u64 = 256 * 1024;
const BATCH_MESSAGES_MAX: u64 = 8;
/// Payloads are 16 header bytes and a seeded body, 24 to 600 bytes in all.
const PAYLOAD_BYTES_MIN: u64 = 24;
const PAYLOAD_BYTES_MAX: u64 = 600;
const PAYLOAD_HEADER_BYTES: usize = 16;
const PAYLOAD_MAGIC: u32 = 0x4853_5243; // "CRSH" little-endian
/// Requests one producer lane or consumer makes in a cycle, at most.
const REQUESTS_PER_LOOP_MAX: u64 = 200_000;
/// How long the load tasks may take to notice the kill and stop.
const LOAD_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// The client's request timeout and reconnection policy (a dead broker fails requests fast).
const CLIENT_OPTIONS: &str = "timeout_ms=10000&reconnect_retries=1&reconnect_interval_ms=20";
const RESTART_TIMEOUT: Duration = Duration::from_secs(30);
/// The restarted broker's log filter unless `RUST_LOG` is set (recovery repairs are `warn`).
const BROKER_LOG_DEFAULT: &str = "error";
/// Extra time, beyond the fsync interval, a lost acknowledgement may precede the kill by.
const INTERVAL_SLACK: Duration = Duration::from_millis(250);
/// Under `--fsync never`, how long before the kill a lost acknowledgement may have come (the
/// flusher writes at once, so only the write in flight and what queued behind it can be lost).
const NEVER_WINDOW: Duration = Duration::from_millis(500);
/// One cycle in this many also kills the restarted broker once during recovery and start-up,
/// within this many milliseconds.
const STARTUP_KILL_ONE_IN: u64 = 5;
const STARTUP_KILL_AFTER_MS_MAX: u64 = 400;
/// Attempts of one verification poll that loses its connection.
const VERIFY_ATTEMPTS: usize = 5;
/// Verification polls retried after a lost connection, over the run.
static VERIFY_RETRIES: AtomicU64 = AtomicU64::new(0);
/// Violations printed before the test fails.
const VIOLATIONS_SHOWN_MAX: usize = 40;

/// The broker's durability policy under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fsync {
    Always,
    Interval(u64),
    /// Write-behind: only what was buffered but not yet written at the kill may be lost.
    Never,
}

impl Fsync {
    fn parse(text: &str) -> Fsync {
        match text.trim() {
            "always" => Fsync::Always,
            "never" => Fsync::Never,
            other => match other.strip_prefix("interval=").map(str::parse::<u64>) {
                Some(Ok(ms)) if ms > 0 => Fsync::Interval(ms),
                _ => panic!("CRASH_FSYNC must be `always`, `interval=MS` or `never`, not `{other}`"),
            },
        }
    }
}

impl fmt::Display for Fsync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fsync::Always => write!(f, "always"),
            Fsync::Interval(ms) => write!(f, "interval={ms}"),
            Fsync::Never => write!(f, "never"),
        }
    }
}

/// What one run does.
#[derive(Debug, Clone)]
struct Settings {
    cycles: u32,
    seed: u64,
    fsync: Fsync,
    /// The kill comes this long (uniformly drawn, ms) after the load started.
    kill_after_ms: (u64, u64),
    /// Pause between two requests of one producer lane, drawn from 0..=this (ms).
    pause_ms_max: u64,
}

impl Settings {
    /// The settings of a short run: `cycles` cycles under `fsync`, the seed from `CRASH_SEED`
    /// when set.
    fn short(cycles: u32, fsync: Fsync) -> Settings {
        let seed = env("CRASH_SEED").map_or_else(fresh_seed, |text| parse_seed(&text));
        Settings { cycles, seed, fsync, kill_after_ms: (300, 1500), pause_ms_max: 4 }
    }

    /// The settings of the long run: `CRASH_CYCLES` (default 200), `CRASH_SEED`, `CRASH_FSYNC`
    /// (default `always`), `CRASH_KILL_MS` (`MIN-MAX`, default 100-3000) and `CRASH_PAUSE_MS`
    /// (longest pause between two requests of a producer lane, default 10).
    fn long() -> Settings {
        let number = |name: &str, default: u64| {
            env(name).map_or(default, |text| text.parse().unwrap_or_else(|_| panic!("{name} is a number")))
        };
        let cycles = u32::try_from(number("CRASH_CYCLES", 200)).expect("CRASH_CYCLES fits in 32 bits");
        let fsync = env("CRASH_FSYNC").map_or(Fsync::Always, |text| Fsync::parse(&text));
        let kill_after_ms = match env("CRASH_KILL_MS") {
            Some(text) => {
                let (low, high) = text.split_once('-').expect("CRASH_KILL_MS is MIN-MAX");
                let low: u64 = low.parse().expect("CRASH_KILL_MS minimum");
                let high: u64 = high.parse().expect("CRASH_KILL_MS maximum");
                assert!(low <= high, "CRASH_KILL_MS: {low} > {high}");
                (low, high)
            }
            None => (100, 3000),
        };
        assert!(cycles > 0, "CRASH_CYCLES: at least one cycle");
        let mut settings = Settings::short(cycles, fsync);
        settings.kill_after_ms = kill_after_ms;
        settings.pause_ms_max = number("CRASH_PAUSE_MS", 10);
        settings
    }
}

/// A non-empty environment variable, trimmed.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

fn parse_seed(text: &str) -> u64 {
    let text = text.trim();
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.unwrap_or_else(|_| panic!("CRASH_SEED `{text}` is not a number"))
}

fn fresh_seed() -> u64 {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    mix(nanos, u64::from(std::process::id()))
}

/// SplitMix64: small, seedable, good enough for schedules and payload bytes.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `low..=high`.
    fn range(&mut self, low: u64, high: u64) -> u64 {
        assert!(low <= high);
        low + self.next_u64() % (high - low + 1)
    }
}

/// Derives an independent seed from two values.
fn mix(a: u64, b: u64) -> u64 {
    Rng::new(a ^ b.rotate_left(32) ^ 0x5851_f42d_4c95_7f2d).next_u64()
}

/// One message: who sent it and its sequence number, unique per producer over the whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct MessageId {
    producer: u32,
    sequence: u64,
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}#{}", self.producer, self.sequence)
    }
}

/// The payload of a message: magic, producer, sequence, then bytes drawn from the seed. Its
/// length is drawn from the seed too, so the payload can be regenerated from its id alone.
fn payload(seed: u64, id: MessageId) -> Vec<u8> {
    let mut rng = Rng::new(mix(mix(seed, u64::from(id.producer)), id.sequence));
    let length = rng.range(PAYLOAD_BYTES_MIN, PAYLOAD_BYTES_MAX) as usize;
    let mut bytes = Vec::with_capacity(length + 8);
    bytes.extend_from_slice(&PAYLOAD_MAGIC.to_le_bytes());
    bytes.extend_from_slice(&id.producer.to_le_bytes());
    bytes.extend_from_slice(&id.sequence.to_le_bytes());
    while bytes.len() < length {
        bytes.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    bytes.truncate(length);
    bytes
}

/// The id a stored payload claims, if it is byte-identical to that id's payload.
fn check_payload(seed: u64, bytes: &[u8]) -> Result<MessageId, String> {
    if bytes.len() < PAYLOAD_HEADER_BYTES {
        return Err(format!("payload of {} bytes is too short", bytes.len()));
    }
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    if word(0) != PAYLOAD_MAGIC {
        return Err(format!("payload magic {:#x}", word(0)));
    }
    let sequence = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let id = MessageId { producer: word(4), sequence };
    let expected = payload(seed, id);
    if expected != bytes {
        let at =
            expected.iter().zip(bytes).position(|(a, b)| a != b).unwrap_or(expected.len().min(bytes.len()));
        return Err(format!(
            "payload of {id} differs from what was sent ({} bytes stored, {} sent, first difference at byte {at})",
            bytes.len(),
            expected.len()
        ));
    }
    Ok(id)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One acknowledged message.
#[derive(Debug, Clone, Copy)]
struct Ack {
    partition: u32,
    offset: u64,
    id: MessageId,
    at: Instant,
}

/// One message a consumer received.
#[derive(Debug, Clone, Copy)]
struct Seen {
    partition: u32,
    offset: u64,
    id: MessageId,
    at: Instant,
}

/// The group commits of one partition: issued one at a time (the lock is held across the
/// request), so the acknowledged ones are in order.
#[derive(Debug, Default)]
struct Commits {
    /// The last acknowledged commit (or what the last verification found stored) and when.
    acked: Option<(u64, Instant)>,
    /// Commits issued whose answer never came.
    unanswered: Vec<u64>,
    /// The largest offset issued (commits only move forward).
    issued_max: u64,
    acked_count: u64,
}

/// What the load of one cycle did, filled in by the tasks.
#[derive(Debug, Default)]
struct CycleLog {
    acks: Vec<Ack>,
    /// Sent without an answer (connection lost, timeout) by the cycle's end: may or may not be
    /// stored (the lane resends them next cycle).
    unanswered: HashSet<MessageId>,
    /// Acknowledged as duplicates whose original offsets the broker no longer knew: stored
    /// exactly once, somewhere.
    acked_unplaced: HashSet<MessageId>,
    /// Acknowledgements that came back flagged `duplicate` (a resend of a stored batch).
    duplicate_acks: u64,
    /// Refused by the broker with an error status: must not be stored.
    refused: HashSet<MessageId>,
    refusals: Vec<String>,
    seen: Vec<Seen>,
    /// Things the load tasks found wrong while the broker ran.
    violations: Vec<String>,
    produce_requests: u64,
    polls: u64,
}

/// What the load tasks of one cycle share.
struct Load {
    client_url: ConnectionString,
    seed: u64,
    cycle: u32,
    stop: AtomicBool,
    deadline: Instant,
    pause_ms_max: u64,
    /// The next message number of each producer (persists across cycles).
    sequences: Arc<Vec<AtomicU64>>,
    /// The named producer lanes (persist across cycles).
    lanes: Lanes,
    commits: Arc<Vec<tokio::sync::Mutex<Commits>>>,
    log: Mutex<CycleLog>,
}

impl Load {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed) && Instant::now() < self.deadline
    }
}

async fn connect(url: &ConnectionString) -> Result<Client, ClientError> {
    Client::connect(url).await
}

/// Connects, retrying while the broker is still coming up or its old sockets linger.
async fn connect_retrying(url: &ConnectionString, deadline: Instant) -> Client {
    let mut attempt = 0_u32;
    loop {
        attempt += 1;
        match connect(url).await {
            Ok(client) => return client,
            Err(error) => {
                assert!(Instant::now() < deadline, "no connection after {attempt} attempts: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// What one named producer lane keeps across cycles (and broker restarts).
#[derive(Debug, Default)]
struct LaneState {
    /// The epoch of its last declaration (each cycle declares again, as a restarted producer
    /// would): it must rise every time.
    epoch: Option<u32>,
    /// The next producer sequence per partition.
    next_sequence: Vec<u64>,
    /// The batch sent without an answer when the last cycle ended: resent first.
    pending: Option<Pending>,
}

/// A batch a lane sent and must get an answer for (its producer sequences and messages).
#[derive(Debug, Clone)]
struct Pending {
    partition: u32,
    first_sequence: u64,
    last_sequence: u64,
    ids: Vec<MessageId>,
}

/// The lanes' states, by `producer * LANES_PER_PRODUCER + lane`.
type Lanes = Arc<Vec<Mutex<LaneState>>>;

fn lane_name(producer: u32, lane: u32) -> String {
    format!("crash-p{producer}-l{lane}")
}

/// Declares the lane's named producer; checks the epoch rises and the server's last sequences
/// are never ahead of what the lane sent. `None` once the cycle ends first.
async fn declare_lane(load: &Load, client: &Client, producer: u32, lane: u32) -> Option<(u64, u32)> {
    let request = ProducerDeclare {
        stream: STREAM.into(),
        topic: TOPIC.into(),
        name: lane_name(producer, lane),
        access: AccessMode::Shared,
    };
    while load.running() {
        let declared = match client.declare_producer(&request).await {
            Ok(declared) => declared,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let index = (producer * LANES_PER_PRODUCER + lane) as usize;
        let mut state = lock(&load.lanes[index]);
        if state.next_sequence.is_empty() {
            state.next_sequence = vec![0; PARTITIONS as usize];
        }
        let mut violations = Vec::new();
        if state.epoch.is_some_and(|before| declared.epoch <= before) {
            violations.push(format!("{}: epoch {} after {:?}", request.name, declared.epoch, state.epoch));
        }
        for sequence in &declared.partitions {
            let sent_below = state.next_sequence.get(sequence.partition as usize).copied().unwrap_or(0);
            if sequence.last_sequence.is_some_and(|last| last >= sent_below) {
                violations.push(format!(
                    "{} partition {}: stored sequence {:?}, never sent past {}",
                    request.name,
                    sequence.partition,
                    sequence.last_sequence,
                    sent_below.saturating_sub(1)
                ));
            }
        }
        state.epoch = Some(declared.epoch);
        drop(state);
        lock(&load.log).violations.extend(violations);
        return Some((declared.producer_id, declared.epoch));
    }
    None
}

/// The batch of `pending`, stamped with the producer's id and current epoch.
fn pending_batch(seed: u64, producer: (u64, u32), pending: &Pending) -> Vec<u8> {
    let mut builder = BatchBuilder::new(producer.0, pending.first_sequence);
    builder.set_producer(producer.0, producer.1);
    for id in &pending.ids {
        builder.push_payload(&payload(seed, *id)).expect("push payload");
    }
    builder.set_last_sequence(pending.last_sequence);
    builder.finish().expect("finish batch")
}

/// Sends `pending` until it is answered (retries on: a lost answer or a dropped connection
/// sends the very same batch again, which the broker deduplicates). Returns false when the cycle
/// ended first; the batch then stays pending for the next cycle.
async fn send_pending(load: &Load, client: &Client, producer: (u64, u32), pending: &Pending) -> bool {
    let batch = pending_batch(load.seed, producer, pending);
    loop {
        let answer =
            client.produce(STREAM, TOPIC, Partitioning::Partition(pending.partition), &[&batch]).await;
        let at = Instant::now();
        lock(&load.log).produce_requests += 1;
        if answer.is_ok() || matches!(answer, Err(ClientError::Server { .. })) {
            record_produce(load, pending.partition, &pending.ids, answer, at);
            return true;
        }
        if !load.running() {
            lock(&load.log).unanswered.extend(pending.ids.iter().copied());
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One named producer lane: declares (continuing its sequences), resends what the last cycle
/// left unanswered, then sends batches of 1..=8 messages to seeded partitions, one request at a
/// time, with seeded gaps in its sequences, retrying each until it is answered.
async fn producer_lane(load: Arc<Load>, client: Client, producer: u32, lane: u32) {
    let mut rng = Rng::new(mix(mix(load.seed, u64::from(load.cycle)), u64::from(producer * 100 + lane)));
    let Some(named) = declare_lane(&load, &client, producer, lane).await else { return };
    let index = (producer * LANES_PER_PRODUCER + lane) as usize;
    for _ in 0..REQUESTS_PER_LOOP_MAX {
        let pending = lock(&load.lanes[index]).pending.clone();
        let pending = match pending {
            Some(pending) => pending,
            None if load.running() => {
                let partition = rng.range(0, u64::from(PARTITIONS) - 1) as u32;
                let count = rng.range(1, BATCH_MESSAGES_MAX);
                let first = load.sequences[producer as usize].fetch_add(count, Ordering::Relaxed);
                let ids: Vec<MessageId> =
                    (first..first + count).map(|sequence| MessageId { producer, sequence }).collect();
                let mut state = lock(&load.lanes[index]);
                let first_sequence = state.next_sequence[partition as usize];
                let last_sequence = first_sequence + count - 1 + rng.range(0, 2);
                state.next_sequence[partition as usize] = last_sequence + 1;
                let pending = Pending { partition, first_sequence, last_sequence, ids };
                state.pending = Some(pending.clone());
                pending
            }
            None => return,
        };
        if !send_pending(&load, &client, named, &pending).await {
            return;
        }
        lock(&load.lanes[index]).pending = None;
        let pause = rng.range(0, load.pause_ms_max);
        if pause > 0 {
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }
}

fn record_produce(
    load: &Load,
    partition: u32,
    ids: &[MessageId],
    answer: Result<ringbroker::protocol::messages::ProduceResponse, ClientError>,
    at: Instant,
) {
    let mut log = lock(&load.log);
    match answer {
        Ok(response) => {
            let ack = &response.acks[0];
            if ack.duplicate {
                log.duplicate_acks += 1;
            }
            if ack.duplicate && !ack.has_offsets() {
                log.acked_unplaced.extend(ids.iter().copied());
                return;
            }
            let expected_last = ack.base_offset + ids.len() as u64 - 1;
            if response.partition != partition || ack.last_offset != expected_last {
                log.violations.push(format!(
                    "produce of {} messages to partition {partition} acknowledged as partition {} offsets {}..={}",
                    ids.len(),
                    response.partition,
                    ack.base_offset,
                    ack.last_offset
                ));
            }
            for (index, id) in ids.iter().enumerate() {
                log.acks.push(Ack { partition, offset: ack.base_offset + index as u64, id: *id, at });
            }
        }
        Err(ClientError::Server { status, message }) => {
            log.refused.extend(ids.iter().copied());
            if log.refusals.len() < 5 {
                log.refusals.push(format!("{status:?}: {message}"));
            }
        }
        Err(_) => log.unanswered.extend(ids.iter().copied()),
    }
}

/// A producer: one connection, several lanes.
async fn producer(load: Arc<Load>, producer: u32) {
    let Ok(client) = connect(&load.client_url).await else {
        return; // Killed before this producer got going.
    };
    let lanes: Vec<_> = (0..LANES_PER_PRODUCER)
        .map(|lane| tokio::spawn(producer_lane(load.clone(), client.clone(), producer, lane)))
        .collect();
    for lane in lanes {
        lane.await.expect("producer lane panicked");
    }
}

/// A consumer group member: joins, polls with `Next`, checks what it reads, commits.
async fn consumer(load: Arc<Load>, index: u32) {
    let Ok(client) = connect(&load.client_url).await else {
        return;
    };
    let mut member = None;
    for _ in 0..REQUESTS_PER_LOOP_MAX {
        if !load.running() {
            return;
        }
        let member_id = match member {
            Some(id) => id,
            None => match join(&client).await {
                Ok(id) => *member.insert(id),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let request = PollRequest {
            stream: STREAM.into(),
            topic: TOPIC.into(),
            target: PollTarget::Group(GroupTarget { group: GROUP.into(), member_id }),
            strategy: PollStrategy::Next,
            max_messages: 300,
            max_bytes: 256 * 1024,
            max_wait_ms: 50,
            auto_commit: false,
            filter: Vec::new(),
            match_unfiltered: false,
        };
        let polled = match client.poll(&request).await {
            Ok(polled) => polled,
            Err(error) => {
                if error.status() == Some(Status::UnknownMember) {
                    member = None;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        lock(&load.log).polls += 1;
        for data in polled.partitions() {
            let info = data.info;
            check_polled(&load, index, info.partition, info.start_offset, info.next_offset, data.records());
            if info.next_offset > info.start_offset {
                commit(&load, &client, info.partition, info.next_offset).await;
            }
        }
    }
}

async fn join(client: &Client) -> Result<u64, ClientError> {
    let request = JoinGroup {
        stream: STREAM.into(),
        topic: TOPIC.into(),
        group: GROUP.into(),
        create_if_missing: true,
        session_timeout_ms: 60_000,
    };
    Ok(client.join_group(&request).await?.member_id)
}

/// Checks one partition's share of a poll answer: contiguous offsets from `start` to `next`,
/// each payload what its producer sent; records what was seen.
fn check_polled<'a>(
    load: &Load,
    consumer: u32,
    partition: u32,
    start: u64,
    next: u64,
    records: impl Iterator<Item = Result<ringbroker::client::PolledRecord<'a>, ClientError>>,
) {
    let at = Instant::now();
    let mut expected = start;
    let mut seen = Vec::new();
    let mut problems = Vec::new();
    for record in records {
        let record = match record {
            Ok(record) => record.record,
            Err(error) => {
                problems.push(format!("consumer {consumer}: bad batch in partition {partition}: {error}"));
                break;
            }
        };
        if record.offset != expected {
            problems.push(format!(
                "consumer {consumer}: partition {partition} served offset {} where {expected} was due",
                record.offset
            ));
        }
        expected = record.offset + 1;
        match check_payload(load.seed, record.payload) {
            Ok(id) => seen.push(Seen { partition, offset: record.offset, id, at }),
            Err(error) => problems.push(format!(
                "consumer {consumer}: partition {partition} offset {}: {error}",
                record.offset
            )),
        }
    }
    if expected != next {
        problems.push(format!(
            "consumer {consumer}: partition {partition} answered {start}..{next} but its records end at {expected}"
        ));
    }
    let mut log = lock(&load.log);
    log.seen.extend(seen);
    log.violations.extend(problems);
}

/// Commits `offset` for the group on `partition` if it moves the partition's commit forward,
/// one commit per partition at a time.
async fn commit(load: &Load, client: &Client, partition: u32, offset: u64) {
    let mut commits = load.commits[partition as usize].lock().await;
    if offset <= commits.issued_max {
        return;
    }
    commits.issued_max = offset;
    let answer =
        client.store_offset(STREAM, TOPIC, partition, ConsumerRef::Group(GROUP.into()), offset).await;
    match answer {
        Ok(()) => {
            commits.acked = Some((offset, Instant::now()));
            commits.unanswered.clear();
            commits.acked_count += 1;
        }
        Err(ClientError::Server { status, message }) => {
            // The offset came from a poll answer, so it was within the data; refusing it as past
            // the end means the broker served data beyond its own high watermark.
            if status == Status::InvalidArgument {
                lock(&load.log)
                    .violations
                    .push(format!("commit of {offset} on partition {partition} refused: {message}"));
            }
            commits.issued_max = commits.acked.map_or(0, |(acked, _)| acked);
        }
        Err(_) => commits.unanswered.push(offset),
    }
}

/// Every record of every partition after a restart, by partition, as message ids in offset
/// order, with the partition's high watermark.
struct Snapshot {
    partitions: Vec<Vec<MessageId>>,
    stored_commits: Vec<Option<u64>>,
}

/// Reads every partition from offset 0 to its high watermark and every stored group offset,
/// checking offsets and payloads on the way. An error means the broker could not be read.
async fn read_everything(
    client: &Client,
    seed: u64,
    violations: &mut Vec<String>,
) -> Result<Snapshot, String> {
    let mut partitions = Vec::new();
    let mut stored_commits = Vec::new();
    for partition in 0..PARTITIONS {
        let (ids, high_watermark) = read_partition(client, seed, partition, violations).await?;
        if ids.len() as u64 != high_watermark {
            violations.push(format!(
                "partition {partition}: {} records read but the high watermark is {high_watermark}",
                ids.len()
            ));
        }
        let info = client
            .get_offset(STREAM, TOPIC, partition, ConsumerRef::Group(GROUP.into()))
            .await
            .map_err(|error| format!("reading the group offset of partition {partition}: {error}"))?;
        if info.high_watermark != high_watermark {
            violations.push(format!(
                "partition {partition}: high watermark {} by OffsetGet, {high_watermark} by Poll",
                info.high_watermark
            ));
        }
        if let Some(stored) = info.stored.filter(|&stored| stored > high_watermark) {
            violations.push(format!(
                "partition {partition}: group offset {stored} is ahead of the data (high watermark {high_watermark})"
            ));
        }
        partitions.push(ids);
        stored_commits.push(info.stored);
    }
    let stats = client.stats(Some(STREAM)).await.map_err(|error| format!("stats: {error}"))?;
    for partition in stats.streams.iter().flat_map(|s| &s.topics).flat_map(|t| &t.partitions) {
        if let Some(reason) = &partition.poisoned {
            violations.push(format!("partition {} is poisoned after the restart: {reason}", partition.id));
        }
    }
    Ok(Snapshot { partitions, stored_commits })
}

async fn read_partition(
    client: &Client,
    seed: u64,
    partition: u32,
    violations: &mut Vec<String>,
) -> Result<(Vec<MessageId>, u64), String> {
    let mut ids = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    for _ in 0..10_000_000 {
        let offset = ids.len() as u64;
        let polled = poll_retrying(client, partition, offset).await?;
        let info = polled.response.partitions[0].clone();
        for record in polled.records() {
            let record = match record {
                Ok(record) => record.record,
                Err(error) => {
                    violations
                        .push(format!("partition {partition}: bad batch at or after {offset}: {error}"));
                    return Ok((ids, info.high_watermark));
                }
            };
            if record.offset != ids.len() as u64 {
                violations.push(format!(
                    "partition {partition}: offset {} follows offset {} (gap or overlap)",
                    record.offset,
                    ids.len() as i64 - 1
                ));
                return Ok((ids, info.high_watermark));
            }
            match check_payload(seed, record.payload) {
                Ok(id) => ids.push(id),
                Err(error) => {
                    violations.push(format!("partition {partition} offset {}: {error}", record.offset));
                    return Ok((ids, info.high_watermark));
                }
            }
        }
        if polled.is_empty() || info.next_offset >= info.high_watermark {
            return Ok((ids, info.high_watermark));
        }
        assert!(info.next_offset > offset, "a poll at {offset} of partition {partition} made no progress");
        assert!(Instant::now() < deadline, "reading partition {partition} took over 10 minutes");
    }
    Err(format!("partition {partition} did not end"))
}

/// A verification poll; a lost connection is retried (the client reconnects) a few times and
/// counted, a server error is not.
async fn poll_retrying(client: &Client, partition: u32, offset: u64) -> Result<Polled, String> {
    let request = PollRequest {
        stream: STREAM.into(),
        topic: TOPIC.into(),
        target: PollTarget::Partition(PartitionTarget { partition, consumer: "crash-verify".into() }),
        strategy: PollStrategy::Offset(offset),
        max_messages: 20_000,
        max_bytes: 4 << 20,
        max_wait_ms: 0,
        auto_commit: false,
        filter: Vec::new(),
        match_unfiltered: false,
    };
    let mut errors = Vec::new();
    for _ in 0..VERIFY_ATTEMPTS {
        match client.poll(&request).await {
            Ok(polled) => {
                if !errors.is_empty() {
                    println!(
                        "  verification poll of partition {partition} at {offset} retried after {errors:?}"
                    );
                    VERIFY_RETRIES.fetch_add(errors.len() as u64, Ordering::Relaxed);
                }
                return Ok(polled);
            }
            Err(error @ ClientError::Server { .. }) => {
                return Err(format!("verification poll of partition {partition} at {offset}: {error}"))
            }
            Err(error) => errors.push(error.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("verification poll of partition {partition} at {offset} failed: {errors:?}"))
}

/// What the run knows and has counted, across cycles.
struct Model {
    settings: Settings,
    /// What the last verification found in each partition, by offset.
    known: Vec<Vec<MessageId>>,
    sequences: Arc<Vec<AtomicU64>>,
    lanes: Lanes,
    commits: Arc<Vec<tokio::sync::Mutex<Commits>>>,
    totals: Totals,
}

#[derive(Debug, Default)]
struct Totals {
    acked: u64,
    unanswered: u64,
    unanswered_stored: u64,
    refused: u64,
    lost: u64,
    /// The longest time between a lost message's acknowledgement and the kill.
    lost_age_max: Duration,
    lost_seen: u64,
    lost_commits: u64,
    duplicates: u64,
    duplicate_acks: u64,
    seen: u64,
    commits_acked: u64,
    produce_requests: u64,
    polls: u64,
    restart_attempts_extra: u64,
    startup_kills: u64,
    verify_time: Duration,
    stored_messages: u64,
}

impl Model {
    fn new(settings: Settings) -> Model {
        Model {
            settings,
            known: vec![Vec::new(); PARTITIONS as usize],
            sequences: Arc::new((0..PRODUCERS).map(|_| AtomicU64::new(0)).collect()),
            lanes: Arc::new((0..PRODUCERS * LANES_PER_PRODUCER).map(|_| Mutex::default()).collect()),
            commits: Arc::new((0..PARTITIONS).map(|_| tokio::sync::Mutex::new(Commits::default())).collect()),
            totals: Totals::default(),
        }
    }

    /// Whether an acknowledgement made at `at` may be missing after a kill at `killed_at`.
    fn may_lose(&self, at: Instant, killed_at: Instant) -> bool {
        match self.settings.fsync {
            Fsync::Always => false,
            Fsync::Interval(ms) => at + Duration::from_millis(ms) + INTERVAL_SLACK >= killed_at,
            Fsync::Never => at + NEVER_WINDOW >= killed_at,
        }
    }

    /// Checks the snapshot taken after cycle `cycle`'s restart against what the cycle did and
    /// what earlier cycles found; adopts it as the new known state. Returns the violations.
    fn verify(&mut self, snapshot: &Snapshot, log: &CycleLog, killed_at: Instant) -> Vec<String> {
        let mut violations = Vec::new();
        let mut location: HashMap<MessageId, (u32, u64)> = HashMap::new();
        for (partition, ids) in snapshot.partitions.iter().enumerate() {
            let partition = partition as u32;
            let known = &self.known[partition as usize];
            if ids.len() < known.len() {
                violations.push(format!(
                    "partition {partition}: {} records after earlier restarts, {} now",
                    known.len(),
                    ids.len()
                ));
            }
            if let Some(offset) = known.iter().zip(ids).position(|(was, now)| was != now) {
                violations.push(format!(
                    "partition {partition} offset {offset}: held {} after an earlier restart, {} now",
                    known[offset], ids[offset]
                ));
            }
            for (offset, id) in ids.iter().enumerate() {
                if let Some((other_partition, other_offset)) =
                    location.insert(*id, (partition, offset as u64))
                {
                    self.totals.duplicates += 1;
                    violations.push(format!(
                        "{id} stored twice: partition {other_partition} offset {other_offset} and \
                         partition {partition} offset {offset}"
                    ));
                }
            }
        }
        for id in log.acked_unplaced.iter().filter(|id| !location.contains_key(id)).take(VIOLATIONS_SHOWN_MAX)
        {
            violations.push(format!("{id} acknowledged as a duplicate but not stored"));
        }
        self.check_new_records(snapshot, log, &mut violations);
        self.check_acks(snapshot, log, killed_at, &mut violations);
        self.check_seen(snapshot, log, killed_at, &mut violations);
        self.check_commits(snapshot, killed_at, &mut violations);
        self.known.clone_from(&snapshot.partitions);
        self.totals.stored_messages = self.known.iter().map(|ids| ids.len() as u64).sum();
        violations
    }

    /// Records beyond what earlier cycles found must come from this cycle: acknowledged, or sent
    /// without an answer; never refused ones, never unknown ones.
    fn check_new_records(&mut self, snapshot: &Snapshot, log: &CycleLog, violations: &mut Vec<String>) {
        let acked: HashSet<MessageId> =
            log.acks.iter().map(|ack| ack.id).chain(log.acked_unplaced.iter().copied()).collect();
        for (partition, ids) in snapshot.partitions.iter().enumerate() {
            let known_len = self.known[partition].len().min(ids.len());
            for (offset, id) in ids.iter().enumerate().skip(known_len) {
                if acked.contains(id) {
                    continue;
                }
                if log.unanswered.contains(id) {
                    self.totals.unanswered_stored += 1;
                } else if log.refused.contains(id) {
                    violations.push(format!(
                        "partition {partition} offset {offset}: {id} was refused but is stored"
                    ));
                } else {
                    violations.push(format!(
                        "partition {partition} offset {offset}: {id} was not sent in this cycle"
                    ));
                }
            }
        }
    }

    fn check_acks(
        &mut self,
        snapshot: &Snapshot,
        log: &CycleLog,
        killed_at: Instant,
        violations: &mut Vec<String>,
    ) {
        let mut lost = Vec::new();
        for ack in &log.acks {
            match snapshot.partitions[ack.partition as usize].get(ack.offset as usize) {
                Some(id) if *id == ack.id => {}
                Some(id) => violations.push(format!(
                    "partition {} offset {}: acknowledged for {} but holds {id}",
                    ack.partition, ack.offset, ack.id
                )),
                None => lost.push(*ack),
            }
        }
        self.totals.lost += lost.len() as u64;
        for ack in &lost {
            let age = killed_at.saturating_duration_since(ack.at);
            self.totals.lost_age_max = self.totals.lost_age_max.max(age);
        }
        for ack in lost.iter().filter(|ack| !self.may_lose(ack.at, killed_at)).take(VIOLATIONS_SHOWN_MAX) {
            violations.push(format!(
                "partition {} offset {}: {} acknowledged {:?} before the kill is missing (fsync {})",
                ack.partition,
                ack.offset,
                ack.id,
                killed_at.saturating_duration_since(ack.at),
                self.settings.fsync
            ));
        }
    }

    fn check_seen(
        &mut self,
        snapshot: &Snapshot,
        log: &CycleLog,
        killed_at: Instant,
        violations: &mut Vec<String>,
    ) {
        for seen in &log.seen {
            match snapshot.partitions[seen.partition as usize].get(seen.offset as usize) {
                Some(id) if *id == seen.id => {}
                Some(id) => violations.push(format!(
                    "partition {} offset {}: a consumer read {} there, it now holds {id}",
                    seen.partition, seen.offset, seen.id
                )),
                None => {
                    self.totals.lost_seen += 1;
                    if !self.may_lose(seen.at, killed_at) {
                        violations.push(format!(
                            "partition {} offset {}: a consumer read {} {:?} before the kill; it is gone",
                            seen.partition,
                            seen.offset,
                            seen.id,
                            killed_at.saturating_duration_since(seen.at)
                        ));
                    }
                }
            }
        }
    }

    /// The stored group offset must be the last acknowledged commit or one left unanswered.
    fn check_commits(&mut self, snapshot: &Snapshot, killed_at: Instant, violations: &mut Vec<String>) {
        for partition in 0..PARTITIONS as usize {
            let mut commits = self.commits[partition].try_lock().expect("no load runs during verification");
            let stored = snapshot.stored_commits[partition];
            let acked = commits.acked.map(|(offset, _)| offset);
            let explained = stored == acked || stored.is_some_and(|s| commits.unanswered.contains(&s));
            if !explained {
                self.totals.lost_commits += 1;
                let may_lose = commits.acked.is_some_and(|(_, at)| self.may_lose(at, killed_at));
                if !may_lose {
                    violations.push(format!(
                        "partition {partition}: group offset {stored:?} stored, but the last acknowledged commit \
                         was {acked:?} (unanswered since: {:?})",
                        commits.unanswered
                    ));
                }
            }
            self.totals.commits_acked += commits.acked_count;
            commits.acked_count = 0;
            commits.acked = stored.map(|offset| (offset, killed_at));
            commits.issued_max = stored.unwrap_or(0);
            commits.unanswered.clear();
        }
    }
}

/// Runs the whole crash test.
fn run(settings: Settings) {
    println!(
        "crash test: seed {} ({:#x}), {} cycles, --fsync {}, kill after {}..={} ms; replay with CRASH_SEED={}",
        settings.seed,
        settings.seed,
        settings.cycles,
        settings.fsync,
        settings.kill_after_ms.0,
        settings.kill_after_ms.1,
        settings.seed
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let fsync = settings.fsync.to_string();
    let segment_bytes = SEGMENT_BYTES.to_string();
    let mut broker = common::Broker::start(SHARDS, &["--fsync", &fsync, "--segment-bytes", &segment_bytes]);
    println!("data directory {}", broker.data_dir().display());
    runtime.block_on(set_up(&broker));
    let started = Instant::now();
    let mut model = Model::new(settings.clone());
    let mut schedule = Rng::new(mix(settings.seed, 0x6b69_6c6c));
    for cycle in 1..=settings.cycles {
        let kill_after =
            Duration::from_millis(schedule.range(settings.kill_after_ms.0, settings.kill_after_ms.1));
        let cycle_started = Instant::now();
        let (log, killed_at) = run_load(&runtime, &mut broker, &model, cycle, kill_after);
        let startup_kill = (schedule.range(1, STARTUP_KILL_ONE_IN) == 1)
            .then(|| Duration::from_millis(schedule.range(0, STARTUP_KILL_AFTER_MS_MAX)));
        if let Some(after) = startup_kill {
            let running = broker.start_and_kill_after(after, BROKER_LOG_DEFAULT);
            println!("cycle {cycle}: killed again {after:?} into the restart (still running: {running})");
            model.totals.startup_kills += 1;
        }
        let attempts = broker.start_again_retrying(RESTART_TIMEOUT, BROKER_LOG_DEFAULT);
        model.totals.restart_attempts_extra += u64::from(attempts - 1);
        let verify_started = Instant::now();
        let url = url_of(&broker);
        let mut violations = log.violations.clone();
        let snapshot = runtime.block_on(async {
            let client = connect_retrying(&url, Instant::now() + RESTART_TIMEOUT).await;
            read_everything(&client, settings.seed, &mut violations).await
        });
        let snapshot = match snapshot {
            Ok(snapshot) => snapshot,
            Err(error) => {
                let status = broker.exit_status();
                violations.push(format!("verification failed: {error} (broker exit status: {status:?})"));
                fail(&mut broker, &settings, cycle, &violations);
            }
        };
        let lost_before = model.totals.lost;
        violations.extend(model.verify(&snapshot, &log, killed_at));
        model.totals.verify_time += verify_started.elapsed();
        count_cycle(&mut model.totals, &log);
        println!(
            "cycle {cycle}/{}: killed after {kill_after:?}; acked {} in {} requests, lost {}, \
             unanswered {}, refused {}, consumed {} in {} polls; stored {} messages; {} restart attempt(s); \
             verified in {:?}; cycle {:?}",
            settings.cycles,
            log.acks.len(),
            log.produce_requests,
            model.totals.lost - lost_before,
            log.unanswered.len(),
            log.refused.len(),
            log.seen.len(),
            log.polls,
            model.totals.stored_messages,
            attempts,
            verify_started.elapsed(),
            cycle_started.elapsed()
        );
        if !log.refusals.is_empty() {
            println!("  refusals (first {}): {:?}", log.refusals.len(), log.refusals);
        }
        if !violations.is_empty() {
            fail(&mut broker, &settings, cycle, &violations);
        }
    }
    broker.stop();
    print_summary(&settings, &model.totals, started.elapsed());
}

fn count_cycle(totals: &mut Totals, log: &CycleLog) {
    totals.acked += log.acks.len() as u64;
    totals.unanswered += log.unanswered.len() as u64;
    totals.duplicate_acks += log.duplicate_acks;
    totals.refused += log.refused.len() as u64;
    totals.seen += log.seen.len() as u64;
    totals.produce_requests += log.produce_requests;
    totals.polls += log.polls;
}

fn url_of(broker: &common::Broker) -> ConnectionString {
    format!("ringbroker://ringbroker:ringbroker@{}?{CLIENT_OPTIONS}", broker.addr())
        .parse()
        .expect("connection string")
}

async fn set_up(broker: &common::Broker) {
    let client = connect_retrying(&url_of(broker), Instant::now() + RESTART_TIMEOUT).await;
    client.create_stream(STREAM, true).await.expect("create stream");
    let config = TopicConfig { partitions: PARTITIONS, ..TopicConfig::default() };
    client.create_topic(STREAM, TOPIC, config, true).await.expect("create topic");
    client.create_group(STREAM, TOPIC, GROUP, true).await.expect("create group");
}

/// Starts the load, SIGKILLs the broker after `kill_after`, stops the load; returns what the
/// load did and when the kill came.
fn run_load(
    runtime: &tokio::runtime::Runtime,
    broker: &mut common::Broker,
    model: &Model,
    cycle: u32,
    kill_after: Duration,
) -> (CycleLog, Instant) {
    let load = Arc::new(Load {
        client_url: url_of(broker),
        seed: model.settings.seed,
        cycle,
        stop: AtomicBool::new(false),
        deadline: Instant::now() + kill_after + LOAD_STOP_TIMEOUT,
        pause_ms_max: model.settings.pause_ms_max,
        sequences: model.sequences.clone(),
        lanes: model.lanes.clone(),
        commits: model.commits.clone(),
        log: Mutex::new(CycleLog::default()),
    });
    let mut tasks = Vec::new();
    for index in 0..PRODUCERS {
        tasks.push(runtime.spawn(producer(load.clone(), index)));
    }
    for index in 0..CONSUMERS {
        tasks.push(runtime.spawn(consumer(load.clone(), index)));
    }
    std::thread::sleep(kill_after);
    let killed_at = Instant::now();
    broker.kill();
    load.stop.store(true, Ordering::Relaxed);
    runtime.block_on(async {
        let all = futures::future::join_all(tasks);
        let results =
            tokio::time::timeout(LOAD_STOP_TIMEOUT, all).await.expect("the load stops after the kill");
        for result in results {
            result.expect("a load task panicked");
        }
    });
    let load = Arc::into_inner(load).expect("every task is done");
    (load.log.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner()), killed_at)
}

fn fail(broker: &mut common::Broker, settings: &Settings, cycle: u32, violations: &[String]) -> ! {
    let kept = broker.keep_data_dir();
    for violation in violations.iter().take(VIOLATIONS_SHOWN_MAX) {
        println!("VIOLATION: {violation}");
    }
    panic!(
        "{} violation(s) after cycle {cycle} (seed {}, --fsync {}); data kept in {}; replay with CRASH_SEED={}",
        violations.len(),
        settings.seed,
        settings.fsync,
        kept.display(),
        settings.seed
    );
}

fn print_summary(settings: &Settings, totals: &Totals, elapsed: Duration) {
    println!(
        "crash test passed: seed {}, --fsync {}, {} cycles in {elapsed:?}",
        settings.seed, settings.fsync, settings.cycles
    );
    let lost_age = match totals.lost {
        0 => String::new(),
        _ => format!(" (acknowledged at most {:?} before the kill)", totals.lost_age_max),
    };
    println!(
        "  acked messages {}, lost {}{lost_age}, consumed-then-lost {}, duplicates {} (resends answered as \
         duplicates {}), unanswered {} (of which stored {}), refused {}",
        totals.acked,
        totals.lost,
        totals.lost_seen,
        totals.duplicates,
        totals.duplicate_acks,
        totals.unanswered,
        totals.unanswered_stored,
        totals.refused
    );
    println!(
        "  produce requests {}, consumed {} in {} polls, commits acked {}, commits lost {}, stored at the end {}, \
         extra restart attempts {}, kills during start-up {}, verification {:?} ({} polls retried)",
        totals.produce_requests,
        totals.seen,
        totals.polls,
        totals.commits_acked,
        totals.lost_commits,
        totals.stored_messages,
        totals.restart_attempts_extra,
        totals.startup_kills,
        totals.verify_time,
        VERIFY_RETRIES.load(Ordering::Relaxed)
    );
}

/// Five short cycles under `--fsync always`, part of `cargo test`.
#[test]
fn crash_cycles_short() {
    run(Settings::short(5, Fsync::Always));
}

/// Five short cycles under `--fsync interval=50`, part of `cargo test`.
#[test]
fn crash_cycles_short_interval() {
    run(Settings::short(5, Fsync::Interval(50)));
}

/// The long run (`scripts/crash-test.sh`): `CRASH_CYCLES` cycles (default 200); see
/// [`Settings::long`] for the environment it reads.
#[test]
#[ignore = "long-running; scripts/crash-test.sh runs it"]
fn crash_cycles_long() {
    run(Settings::long());
}

#[test]
fn payloads_regenerate_and_detect_changes() {
    let id = MessageId { producer: 2, sequence: 77 };
    let bytes = payload(42, id);
    assert!((PAYLOAD_BYTES_MIN as usize..=PAYLOAD_BYTES_MAX as usize).contains(&bytes.len()));
    assert_eq!(check_payload(42, &bytes), Ok(id));
    assert!(check_payload(43, &bytes).is_err(), "another seed, another payload");
    let mut changed = bytes.clone();
    *changed.last_mut().expect("bytes") ^= 1;
    assert!(check_payload(42, &changed).is_err());
    assert!(check_payload(42, &bytes[..bytes.len() - 1]).is_err());
    assert_eq!(Fsync::parse("interval=50"), Fsync::Interval(50));
    assert_eq!(parse_seed("0x10"), 16);
}
