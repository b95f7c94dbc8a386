//! The broker workloads: plans which actors run, starts each on its own OS thread with its own
//! current-thread tokio runtime, and runs the consumer loops (the producer loop is in module
//! `produce`).
//!
//! Life of an actor: pin (with `--cores`), start a runtime, connect and route shard-aware
//! (`prepare`), wait on the phase's barrier, run its bounded loop, return its
//! [`ActorResult`]. An actor that fails sets the phase's stop flag, so the others end early
//! and the run reports that first error.
//!
//! Producers without a send stamp build their batch once and send that same batch every time (as
//! iggy-bench sends prebuilt messages): the run measures the broker and the wire, not batch
//! building; the broker still validates each batch's CRC and assigns offsets in its own copy.
//! End-to-end producers stamp every message, so they build every batch. Named producers
//! (`--producer-name`, module `named`) send copies of the prebuilt batch whose sequence range
//! and CRC are rewritten per send (module `payload`); the copies are reused once acknowledged.
//! With `--subscribe`, partition consumers read by push subscription (module `subscribe`).
//!
//! Invariants: every loop ends (by batch count, deadline, the stop flag, or an error when a
//! consumer sees no progress for [`IDLE_TIMEOUT`]); at most `--in-flight` produce requests
//! of one producer are in flight; consumers have one poll in flight (subscribing consumers: at most
//! their credit of batches).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use ringbroker::client::{Client, ShardRouter};
use ringbroker::model::now_us;
use ringbroker::protocol::messages::{
    GroupTarget, JoinGroup, PartitionTarget, PollRequest, PollStrategy, PollTarget,
};

use crate::filtered;
use crate::named::NamedLane;
use crate::produce::{produce, ProducePlan};
use crate::report::{self, ActorResult, Role};
use crate::subscribe;
use crate::{current_thread_runtime, Bound, Settings, Workload, ACTORS_MAX, BATCHES_DEFAULT, TOPIC};

/// A consumer that expects data but gets none for this long fails the run.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Long-poll wait of consumers that run alongside producers (short, so they notice the end).
const LONG_POLL_WAIT_MS: u32 = 100;
/// Bytes asked for per poll: room for two batches, within these bounds.
const POLL_BYTES_MIN: u64 = 1024 * 1024;
const POLL_BYTES_MAX: u64 = 32 * 1024 * 1024;
/// The consumer group of `balanced-consumer-group`.
const GROUP: &str = "bench";
/// Session timeout asked for when joining, and how often members heartbeat.
const GROUP_SESSION_TIMEOUT_MS: u32 = 30_000;
const GROUP_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// Bytes in front of each end-to-end payload: the send time, µs since the epoch, little endian.
pub const STAMP_BYTES: usize = 8;

const _: () = assert!(POLL_BYTES_MIN <= POLL_BYTES_MAX && POLL_BYTES_MAX <= u32::MAX as u64);
const _: () = assert!(GROUP_HEARTBEAT_INTERVAL.as_millis() * 3 < GROUP_SESSION_TIMEOUT_MS as u128);

/// What one actor does.
#[derive(Debug, Clone)]
enum Task {
    /// Produce `batches` batches (or until the deadline), round robin over `targets` starting at
    /// index `id`, stamping payloads when `stamp`, as a named producer when `named`.
    Produce {
        id: u32,
        targets: Vec<(String, u32)>,
        bound: Bound,
        rate: Option<f64>,
        warmup: Duration,
        stamp: bool,
        named: bool,
    },
    /// Read one partition from offset 0 until caught up after the producers have finished.
    PollPartition { id: u32, stream: String, partition: u32, stamp: bool },
    /// Fetch one partition through the durable consumer and acknowledge (module `acking`).
    FetchPartition { id: u32, stream: String, partition: u32 },
    /// Join the group of `stream` and read until the group has consumed `total` messages.
    PollGroup { id: u32, stream: String, stream_index: usize, total: u64 },
}

/// State shared by the actors of one phase.
pub struct Shared {
    /// The run's settings.
    pub settings: Settings,
    barrier: Barrier,
    /// Set by a failing actor; the others stop at their next step.
    pub stop: AtomicBool,
    /// Producers still running (consumers drain once it is zero).
    producers_running: AtomicU32,
    /// Messages consumed by each stream's group.
    consumed: Vec<AtomicU64>,
}

impl Shared {
    /// Whether every producer of the phase has finished.
    pub fn producers_done(&self) -> bool {
        self.producers_running.load(Ordering::SeqCst) == 0
    }
}

/// Checks what only some workloads require, before anything is set up.
pub fn check(workload: Workload, settings: &Settings) -> Result<(), String> {
    if workload == Workload::EndToEnd && (settings.message_size as usize) < STAMP_BYTES {
        return Err(format!(
            "end-to-end needs --message-size of at least {STAMP_BYTES} bytes (the send stamp)"
        ));
    }
    if workload == Workload::BalancedConsumerGroup && !settings.consume_filter.is_empty() {
        return Err("--consume-filter is for partition consumers (pinned-consumer, end-to-end)".to_string());
    }
    if settings.subscribe_credits.is_some() && !settings.consume_filter.is_empty() {
        return Err("--consume-filter polls; it does not combine with --subscribe yet".to_string());
    }
    Ok(())
}

fn is_consumer(workload: Workload) -> bool {
    matches!(workload, Workload::PinnedConsumer | Workload::BalancedConsumerGroup | Workload::AckConsumer)
}

/// `--phase fill`: fills the partitions of a consumer workload and stops.
pub fn fill_only(workload: Workload, settings: &Settings) -> Result<(), String> {
    if !is_consumer(workload) {
        return Err("--phase fill is for consumer workloads".to_string());
    }
    let fill_batches = match settings.bound {
        Bound::Batches(batches) => batches,
        Bound::Duration(_) => BATCHES_DEFAULT,
    };
    fill(settings, fill_batches)
}

/// Runs a broker workload (the streams exist and are empty, or were filled by `--phase fill`) and returns every actor's result.
pub fn run(workload: Workload, settings: &Settings) -> Result<Vec<ActorResult>, String> {
    let fill_batches = match settings.bound {
        Bound::Batches(batches) => batches,
        Bound::Duration(_) => BATCHES_DEFAULT,
    };
    if is_consumer(workload) && settings.phase != crate::Phase::Consume {
        fill(settings, fill_batches)?;
    }
    let producer = |id: u32, targets: Vec<(String, u32)>| Task::Produce {
        id,
        targets,
        bound: settings.bound,
        rate: settings.rate_mb_per_s,
        warmup: settings.warmup,
        stamp: workload == Workload::EndToEnd,
        named: settings.producer_name.is_some(),
    };
    let pinned_target = |id: u32| vec![(settings.stream_of(id), id % settings.partitions)];
    let partition_consumer = |id: u32| Task::PollPartition {
        id,
        stream: settings.stream_of(id),
        partition: id % settings.partitions,
        stamp: workload == Workload::EndToEnd,
    };
    let fetcher = |id: u32| Task::FetchPartition {
        id,
        stream: settings.stream_of(id),
        partition: id % settings.partitions,
    };
    let mut tasks = Vec::new();
    match workload {
        Workload::PinnedProducer => {
            tasks.extend((0..settings.producers).map(|id| producer(id, pinned_target(id))))
        }
        Workload::BalancedProducer => tasks.extend((0..settings.producers).map(|id| {
            let stream = settings.stream_of(id);
            producer(id, (0..settings.partitions).map(|partition| (stream.clone(), partition)).collect())
        })),
        Workload::PinnedConsumer => tasks.extend((0..settings.consumers).map(partition_consumer)),
        Workload::PinnedProducerAndConsumer | Workload::EndToEnd => {
            tasks.extend((0..settings.producers).map(|id| producer(id, pinned_target(id))));
            tasks.extend((0..settings.consumers).map(partition_consumer));
        }
        Workload::BalancedConsumerGroup => {
            let total = u64::from(settings.partitions) * fill_batches * u64::from(settings.batch);
            tasks.extend((0..settings.consumers).map(|id| Task::PollGroup {
                id,
                stream: settings.stream_of(id),
                stream_index: (id % settings.streams) as usize,
                total,
            }));
        }
        Workload::AckConsumer => tasks.extend((0..settings.consumers).map(fetcher)),
        Workload::Workqueue => {
            tasks.extend((0..settings.producers).map(|id| producer(id, pinned_target(id))));
            tasks.extend((0..settings.consumers).map(fetcher));
        }
        Workload::Loopback => return Err("loopback needs no broker".to_string()),
        Workload::RabbitmqProducer => return Err("rabbitmq-producer runs in module rabbitmq".to_string()),
    }
    run_phase(settings, tasks)
}

/// Fills `fill_batches` batches into every partition of every stream (not measured).
fn fill(settings: &Settings, fill_batches: u64) -> Result<(), String> {
    let pairs: Vec<(String, u32)> = (0..settings.streams)
        .flat_map(|stream| {
            (0..settings.partitions).map(move |partition| (Settings::stream_name(stream), partition))
        })
        .collect();
    let fillers = pairs.len().min(ACTORS_MAX as usize);
    let tasks = (0..fillers)
        .map(|filler| {
            let targets: Vec<(String, u32)> = pairs.iter().skip(filler).step_by(fillers).cloned().collect();
            let batches = fill_batches * targets.len() as u64;
            // Id 0: each filler starts at its first target, so every pair gets `fill_batches`.
            Task::Produce {
                id: 0,
                targets,
                bound: Bound::Batches(batches),
                rate: None,
                warmup: Duration::ZERO,
                stamp: false,
                named: false,
            }
        })
        .collect();
    run_phase(settings, tasks).map(drop)
}

/// Runs the tasks, one thread each, all starting together after connecting.
fn run_phase(settings: &Settings, tasks: Vec<Task>) -> Result<Vec<ActorResult>, String> {
    let producers = tasks.iter().filter(|task| matches!(task, Task::Produce { .. })).count();
    let shared = Arc::new(Shared {
        settings: settings.clone(),
        barrier: Barrier::new(tasks.len()),
        stop: AtomicBool::new(false),
        producers_running: AtomicU32::new(u32::try_from(producers).unwrap_or(u32::MAX)),
        consumed: (0..settings.streams).map(|_| AtomicU64::new(0)).collect(),
    });
    let mut threads = Vec::with_capacity(tasks.len());
    for (index, task) in tasks.into_iter().enumerate() {
        let shared_for_thread = shared.clone();
        let core = settings.core_of(index);
        let spawned = std::thread::Builder::new()
            .name(format!("ringbench-{index}"))
            .spawn(move || run_actor(&shared_for_thread, core, task));
        match spawned {
            Ok(handle) => threads.push(handle),
            Err(error) => {
                // The barrier counts this thread, so the started ones would wait for ever: the
                // error ends the process (main returns), and them with it.
                shared.stop.store(true, Ordering::SeqCst);
                return Err(format!("cannot start actor thread {index}: {error}"));
            }
        }
    }
    join_all(threads, "an actor thread panicked")
}

/// Joins every thread: their results in order, or the first error (`panicked` when one
/// panicked).
pub fn join_all<T>(
    threads: Vec<std::thread::JoinHandle<Result<T, String>>>,
    panicked: &str,
) -> Result<Vec<T>, String> {
    let mut results = Vec::with_capacity(threads.len());
    let mut first_error = None;
    for thread in threads {
        match thread.join() {
            Ok(Ok(result)) => results.push(result),
            Ok(Err(error)) => {
                first_error.get_or_insert(error);
            }
            Err(_) => {
                first_error.get_or_insert_with(|| panicked.to_string());
            }
        }
    }
    first_error.map_or(Ok(results), Err)
}

/// The body of an actor thread.
fn run_actor(shared: &Shared, core: Option<usize>, task: Task) -> Result<ActorResult, String> {
    let prepared = pin(core).and_then(|()| {
        let runtime = current_thread_runtime()?;
        let prepared = runtime.block_on(prepare(&shared.settings, task))?;
        Ok((runtime, prepared))
    });
    if prepared.is_err() {
        shared.stop.store(true, Ordering::SeqCst);
    }
    shared.barrier.wait();
    let (runtime, prepared) = prepared?;
    let is_producer = matches!(prepared, Prepared::Produce { .. });
    let outcome = runtime.block_on(execute(shared, prepared));
    if is_producer {
        shared.producers_running.fetch_sub(1, Ordering::SeqCst);
    }
    if outcome.is_err() {
        shared.stop.store(true, Ordering::SeqCst);
    }
    outcome
}

fn pin(core: Option<usize>) -> Result<(), String> {
    match core {
        Some(id) if !core_affinity::set_for_current(core_affinity::CoreId { id }) => {
            Err(format!("cannot pin an actor to core {id}"))
        }
        _ => Ok(()),
    }
}

/// A task with its connections open.
enum Prepared {
    Produce { task: Task, clients: Vec<Client>, named: Option<NamedLane> },
    PollPartition { task: Task, client: Client },
    PollGroup { task: Task, client: Client, member_id: u64 },
}

/// Connects to the shared listener and routes to the owner shard(s) of the task's partitions.
async fn prepare(settings: &Settings, task: Task) -> Result<Prepared, String> {
    let base = settings.connect().await.map_err(|error| format!("{}: {error}", settings.server))?;
    let router = ShardRouter::new(base.clone()).await.map_err(|error| format!("metadata: {error}"))?;
    let route = |stream: String, partition: u32| {
        let router = router.clone();
        async move {
            router
                .client_for(&stream, TOPIC, partition)
                .await
                .map_err(|error| format!("routing {stream}/{TOPIC} partition {partition}: {error}"))
        }
    };
    match &task {
        Task::Produce { id, targets, named, .. } => {
            let mut clients = Vec::with_capacity(targets.len());
            for (stream, partition) in targets {
                clients.push(route(stream.clone(), *partition).await?);
            }
            let named = match (named, &settings.producer_name, targets.first()) {
                (true, Some(prefix), Some((stream, _))) => {
                    debug_assert!(
                        targets.iter().all(|(other, _)| other == stream),
                        "one stream per producer"
                    );
                    let partitions: Vec<u32> = targets.iter().map(|(_, partition)| *partition).collect();
                    let name = format!("{prefix}-{id}");
                    Some(NamedLane::declare(&base, stream, name, settings.compression, &partitions).await?)
                }
                _ => None,
            };
            Ok(Prepared::Produce { task, clients, named })
        }
        Task::PollPartition { stream, partition, .. } | Task::FetchPartition { stream, partition, .. } => {
            let client = route(stream.clone(), *partition).await?;
            Ok(Prepared::PollPartition { task, client })
        }
        Task::PollGroup { id, stream, .. } => {
            let join = JoinGroup {
                stream: stream.clone(),
                topic: TOPIC.to_string(),
                group: GROUP.to_string(),
                create_if_missing: true,
                session_timeout_ms: GROUP_SESSION_TIMEOUT_MS,
            };
            let membership = base
                .join_group(&join)
                .await
                .map_err(|error| format!("consumer {id}: joining {GROUP}: {error}"))?;
            let first = membership.partitions.first().copied().unwrap_or(0);
            let client = route(stream.clone(), first).await?;
            Ok(Prepared::PollGroup { task, client, member_id: membership.member_id })
        }
    }
}

async fn execute(shared: &Shared, prepared: Prepared) -> Result<ActorResult, String> {
    match prepared {
        Prepared::Produce {
            task: Task::Produce { id, targets, bound, rate, warmup, stamp, .. },
            clients,
            named,
        } => {
            let plan = ProducePlan { id, bound, rate, warmup, stamp };
            let heartbeats = named.as_ref().map(NamedLane::start_heartbeats);
            let mut named = named;
            let outcome = produce(shared, &plan, &targets, &clients, named.as_mut()).await;
            if let Some(heartbeats) = heartbeats {
                heartbeats.abort();
            }
            if let (Ok(_), Some(lane)) = (&outcome, &named) {
                lane.close().await?;
            }
            outcome
        }
        Prepared::PollPartition { task: Task::PollPartition { id, stream, partition, stamp }, client } => {
            match shared.settings.subscribe_credits {
                Some(credits) => {
                    let plan = subscribe::Plan { id, stream: &stream, partition, stamp, credits };
                    subscribe::consume_partition(shared, &client, &plan).await
                }
                None => consume_partition(shared, id, &client, &stream, partition, stamp).await,
            }
        }
        Prepared::PollPartition { task: Task::FetchPartition { id, stream, partition }, client } => {
            crate::acking::consume(shared, id, &client, &stream, partition).await
        }
        Prepared::PollGroup {
            task: Task::PollGroup { id, stream, stream_index, total },
            client,
            member_id,
        } => consume_group(shared, id, &client, &stream, stream_index, total, member_id).await,
        _ => Err("internal error: a task lost its kind".to_string()),
    }
}

/// Reads one partition by offset (long poll; module `subscribe` reads by push instead); one latency sample per non-empty poll (or, with `stamp`, one
/// per message: receive time minus the stamped send time).
async fn consume_partition(
    shared: &Shared,
    id: u32,
    client: &Client,
    stream: &str,
    partition: u32,
    stamp: bool,
) -> Result<ActorResult, String> {
    let settings = &shared.settings;
    let started = Instant::now();
    let measured_from = started + settings.warmup;
    let deadline = deadline_of(settings, started);
    let mut result = new_result(Role::Consumer, id, measured_from)?;
    let mut request = PollRequest {
        stream: stream.to_string(),
        topic: TOPIC.to_string(),
        target: PollTarget::Partition(PartitionTarget { partition, consumer: format!("bench-{id}") }),
        strategy: PollStrategy::Offset(0),
        max_messages: settings.batch,
        max_bytes: poll_bytes(settings),
        max_wait_ms: LONG_POLL_WAIT_MS,
        auto_commit: false,
        filter: settings.consume_filter.clone(),
        match_unfiltered: false,
    };
    let exact = filtered::exact(settings)?;
    let (mut next, mut high_watermark) = (0_u64, 0_u64);
    let mut progress_at = started;
    // Set once a poll began after every producer had finished: its high watermark is final.
    let mut settled = false;
    loop {
        let producers_done = shared.producers_running.load(Ordering::SeqCst) == 0;
        if shared.stop.load(Ordering::Relaxed)
            || (settled && next >= high_watermark)
            || deadline.is_some_and(|deadline| producers_done && Instant::now() >= deadline)
        {
            break;
        }
        if progress_at.elapsed() > IDLE_TIMEOUT {
            return Err(format!(
                "consumer {id}: no data for {} s at offset {next} of {stream}/{TOPIC} partition {partition}",
                IDLE_TIMEOUT.as_secs()
            ));
        }
        request.strategy = PollStrategy::Offset(next);
        let polled_at = Instant::now();
        let (polled, wire) = match &exact {
            None => (client.poll(&request).await, 0),
            Some(_) => match filtered::poll(client, &request).await {
                Ok((polled, wire)) => (Ok(polled), wire),
                Err(error) => (Err(error), 0),
            },
        };
        let polled = polled.map_err(|error| format!("consumer {id}: {error}"))?;
        let answered_at = Instant::now();
        let received_us = now_us();
        settled |= producers_done;
        let Some(info) = polled.response.partitions.iter().find(|info| info.partition == partition) else {
            continue;
        };
        high_watermark = high_watermark.max(info.high_watermark);
        let mut count = info.next_offset.saturating_sub(info.start_offset);
        next = next.max(info.next_offset);
        if count == 0 {
            continue;
        }
        progress_at = answered_at;
        if let Some(exact) = &exact {
            // Filtered: count the wanted messages that came, and the bytes that came.
            result.wire_bytes_all += wire;
            if answered_at >= measured_from {
                result.wire_bytes += wire;
            }
            count = filtered::wanted(&polled, exact).map_err(|error| format!("consumer {id}: {error}"))?;
        }
        if answered_at < measured_from {
            continue;
        }
        if stamp {
            record_stamps(&mut result, &polled, received_us, id)?;
        } else {
            report::record(&mut result.latency, micros(answered_at - polled_at));
        }
        result.messages += count;
        result.bytes += count * u64::from(settings.message_size);
    }
    result.finished_at = Instant::now();
    Ok(result)
}

/// A group member: polls its assignment (auto-commit) until the group has read `total`.
async fn consume_group(
    shared: &Shared,
    id: u32,
    client: &Client,
    stream: &str,
    stream_index: usize,
    total: u64,
    member_id: u64,
) -> Result<ActorResult, String> {
    let settings = &shared.settings;
    let consumed = &shared.consumed[stream_index];
    let started = Instant::now();
    let measured_from = started + settings.warmup;
    let deadline = deadline_of(settings, started);
    let mut result = new_result(Role::Consumer, id, measured_from)?;
    let request = PollRequest {
        stream: stream.to_string(),
        topic: TOPIC.to_string(),
        target: PollTarget::Group(GroupTarget { group: GROUP.to_string(), member_id }),
        strategy: PollStrategy::Next,
        max_messages: settings.batch,
        max_bytes: poll_bytes(settings),
        max_wait_ms: LONG_POLL_WAIT_MS,
        auto_commit: true,
        filter: Vec::new(),
        match_unfiltered: false,
    };
    let (mut progress_at, mut heartbeat_at) = (started, started);
    let mut seen = consumed.load(Ordering::SeqCst);
    loop {
        let now = Instant::now();
        let group_consumed = consumed.load(Ordering::SeqCst);
        if shared.stop.load(Ordering::Relaxed)
            || group_consumed >= total
            || deadline.is_some_and(|deadline| now >= deadline)
        {
            break;
        }
        if group_consumed != seen {
            (seen, progress_at) = (group_consumed, now);
        }
        if now.duration_since(progress_at) > IDLE_TIMEOUT {
            return Err(format!(
                "consumer {id}: group {GROUP} of {stream} made no progress for {} s ({group_consumed} of {total} messages)",
                IDLE_TIMEOUT.as_secs()
            ));
        }
        if now.duration_since(heartbeat_at) > GROUP_HEARTBEAT_INTERVAL {
            client
                .heartbeat(stream, TOPIC, GROUP, member_id)
                .await
                .map_err(|error| format!("consumer {id}: heartbeat: {error}"))?;
            heartbeat_at = now;
        }
        let polled_at = Instant::now();
        let polled = client.poll(&request).await.map_err(|error| format!("consumer {id}: {error}"))?;
        let answered_at = Instant::now();
        let count: u64 = polled
            .response
            .partitions
            .iter()
            .map(|info| info.next_offset.saturating_sub(info.start_offset))
            .sum();
        if count == 0 {
            continue;
        }
        consumed.fetch_add(count, Ordering::SeqCst);
        if answered_at >= measured_from {
            report::record(&mut result.latency, micros(answered_at - polled_at));
            result.messages += count;
            result.bytes += count * u64::from(settings.message_size);
        }
    }
    result.finished_at = Instant::now();
    client
        .leave_group(stream, TOPIC, GROUP, member_id)
        .await
        .map_err(|error| format!("consumer {id}: leaving {GROUP}: {error}"))?;
    Ok(result)
}

pub fn new_result(role: Role, id: u32, measured_from: Instant) -> Result<ActorResult, String> {
    Ok(ActorResult {
        role,
        id,
        bytes: 0,
        wire_bytes: 0,
        bytes_all: 0,
        wire_bytes_all: 0,
        messages: 0,
        measured_from,
        finished_at: measured_from,
        latency: report::histogram()?,
    })
}

/// Records send → receive latency of every stamped message in `polled`, received at
/// `received_us`.
pub fn record_stamps(
    result: &mut ActorResult,
    polled: &ringbroker::client::Polled,
    received_us: u64,
    id: u32,
) -> Result<(), String> {
    for record in polled.records() {
        let record = record.map_err(|error| format!("consumer {id}: {error}"))?;
        let sent_us = stamp_of(record.record.payload).ok_or_else(|| {
            format!("consumer {id}: a message of {} bytes has no send stamp", record.record.payload.len())
        })?;
        report::record(&mut result.latency, received_us.saturating_sub(sent_us));
    }
    Ok(())
}

pub fn deadline_of(settings: &Settings, started: Instant) -> Option<Instant> {
    match settings.bound {
        Bound::Duration(duration) => Some(started + duration),
        Bound::Batches(_) => None,
    }
}

/// `max_bytes` of a poll: two batches' worth, within [`POLL_BYTES_MIN`]..=[`POLL_BYTES_MAX`].
pub fn poll_bytes(settings: &Settings) -> u32 {
    let wanted =
        2 * u64::from(settings.batch) * (u64::from(settings.message_size) + crate::RECORD_OVERHEAD_BYTES);
    u32::try_from(wanted.clamp(POLL_BYTES_MIN, POLL_BYTES_MAX)).unwrap_or(u32::MAX)
}

/// The send stamp of an end-to-end payload.
pub fn stamp_of(payload: &[u8]) -> Option<u64> {
    let head: [u8; STAMP_BYTES] = payload.get(..STAMP_BYTES)?.try_into().ok()?;
    Some(u64::from_le_bytes(head))
}

pub fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip() {
        let mut payload = vec![0_u8; 16];
        payload[..STAMP_BYTES].copy_from_slice(&1234_u64.to_le_bytes());
        assert_eq!(stamp_of(&payload), Some(1234));
        assert_eq!(stamp_of(&payload[..4]), None);
    }
}
