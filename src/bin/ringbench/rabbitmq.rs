//! `ringbench rabbitmq-producer`: the pinned producer's publish shape spoken through the broker's
//! RabbitMQ Streams listener (`--rabbitmq-listen`) with the official Rust stream client
//! (`rabbitmq-stream-client`), so that its figures read against `pinned-producer`'s on the same
//! broker: what the listener costs against the native protocol.
//!
//! Shape: a super stream `bench` with `--partitions` members (`bench-0` ...), spread over the
//! shards as a native topic's partitions are; producer i publishes to member `i % partitions`.
//! Each send is one `batch_send` of `--batch` messages of `--message-size` body bytes (one Publish
//! frame: the client's batch size is `--batch`, and the send runs outside tokio's cooperative
//! budget, which would cut it into frames of 128), and a batch counts when every one of its
//! messages is confirmed; up to `--in-flight` batches are out per producer. The batch (random
//! bodies) is built once and sent again and again (the client encodes each message as AMQP 1.0 on every send), as
//! the native producer resends its prebuilt batch.
//!
//! Threads: as the native workloads, one OS thread per producer with its own current-thread tokio
//! runtime (the client's reader and batching tasks run there too), pinned with `--cores`; all
//! connect, wait on a barrier, then run. Invariants: at most `--in-flight` batches of a producer
//! are unconfirmed; every loop ends by batch count, deadline, the stop flag or an error (a batch
//! not confirmed within [`CONFIRM_TIMEOUT`] is an error); every producer is closed before it is
//! dropped (the client's `Drop` blocks its thread on a close, which on a current-thread runtime
//! would never finish).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use rabbitmq_stream_client::error::ProducerPublishError;
use rabbitmq_stream_client::types::Message;
use rabbitmq_stream_client::{ConfirmationStatus, Environment, NoDedup, Producer};

use crate::actors::{join_all, micros, new_result};
use crate::payload::Payload;
use crate::report::{self, ActorResult, Role};
use crate::{current_thread_runtime, Bound, Phase, Settings};

/// The super stream every run recreates (its members are `bench-0` ...).
pub const SUPER_STREAM: &str = "bench";
/// Default `--rabbitmq-server`: the usual RabbitMQ Streams port.
pub const SERVER_DEFAULT: &str = "127.0.0.1:5552";
/// A batch whose confirmations have not all come in this long fails the run.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// How long closing a producer may take before its thread gives up on it.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most messages per Publish frame the client is asked to send (its channel capacity too).
pub const BATCH_MESSAGES_MAX: u32 = 10_000;

/// Where the RabbitMQ listener is, parsed from `--rabbitmq-server host:port`.
#[derive(Debug, Clone)]
pub struct Endpoint {
    host: String,
    port: u16,
}

impl Endpoint {
    /// Parses `host:port` (an IPv6 host in brackets).
    pub fn parse(text: &str) -> Result<Endpoint, String> {
        let (host, port) =
            text.rsplit_once(':').ok_or_else(|| format!("--rabbitmq-server {text:?}: expected host:port"))?;
        let port = port.parse::<u16>().map_err(|_| format!("--rabbitmq-server {text:?}: bad port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || port == 0 {
            return Err(format!("--rabbitmq-server {text:?}: expected host:port"));
        }
        Ok(Endpoint { host: host.to_string(), port })
    }

    async fn environment(&self, settings: &Settings) -> Result<Environment, String> {
        Environment::builder()
            .host(&self.host)
            .port(self.port)
            .username(&settings.user)
            .password(&settings.password)
            .build()
            .await
            .map_err(|error| format!("RabbitMQ listener {}:{}: {error}", self.host, self.port))
    }
}

/// Refuses the options this workload does not implement, before anything is set up.
pub fn check(settings: &Settings) -> Result<(), String> {
    let unsupported = [
        (settings.tls, "--tls-ca"),
        (settings.streams != 1, "--streams other than 1"),
        (settings.rate_mb_per_s.is_some(), "--rate"),
        (settings.compression != ringbroker::protocol::batch::Compression::None, "--compression"),
        (settings.producer_name.is_some(), "--producer-name"),
        (settings.filter_values.is_some(), "--filter-values"),
        (!settings.consume_filter.is_empty(), "--consume-filter"),
        (settings.subscribe_credits.is_some(), "--subscribe"),
        (settings.retention.is_some(), "--retention"),
        (settings.phase != Phase::All, "--phase"),
        (settings.payload != Payload::Random, "--payload other than random"),
    ];
    if let Some((_, option)) = unsupported.iter().find(|(used, _)| *used) {
        return Err(format!("rabbitmq-producer does not take {option}"));
    }
    if settings.batch > BATCH_MESSAGES_MAX {
        return Err(format!("rabbitmq-producer takes --batch up to {BATCH_MESSAGES_MAX}"));
    }
    Ok(())
}

/// Recreates the super stream, runs the producers and returns their results.
pub fn run(settings: &Settings, endpoint: &Endpoint) -> Result<Vec<ActorResult>, String> {
    check(settings)?;
    let runtime = current_thread_runtime()?;
    runtime.block_on(recreate(settings, endpoint))?;
    let barrier = Arc::new(Barrier::new(settings.producers as usize));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::with_capacity(settings.producers as usize);
    for id in 0..settings.producers {
        let (settings, endpoint) = (settings.clone(), endpoint.clone());
        let (barrier, stop_for_thread) = (barrier.clone(), stop.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("ringbench-rmq-{id}"))
            .spawn(move || producer_thread(&settings, &endpoint, id, &barrier, &stop_for_thread));
        match spawned {
            Ok(handle) => threads.push(handle),
            Err(error) => {
                // The barrier counts this thread: the started ones end with the process.
                stop.store(true, Ordering::SeqCst);
                return Err(format!("cannot start producer thread {id}: {error}"));
            }
        }
    }
    join_all(threads, "a producer thread panicked")
}

/// Deletes (when present) and creates the super stream with `--partitions` members.
async fn recreate(settings: &Settings, endpoint: &Endpoint) -> Result<(), String> {
    let environment = endpoint.environment(settings).await?;
    // Absent on a fresh broker; any other failure shows at the create.
    let _ = environment.delete_super_stream(SUPER_STREAM).await;
    environment
        .stream_creator()
        .create_super_stream(SUPER_STREAM, settings.partitions as usize, None)
        .await
        .map_err(|error| format!("creating super stream {SUPER_STREAM}: {error}"))
}

/// The member stream producer `id` publishes to.
fn member_of(settings: &Settings, id: u32) -> String {
    format!("{SUPER_STREAM}-{}", id % settings.partitions.max(1))
}

/// One producer's thread: pin, connect, wait for the others, publish, close.
fn producer_thread(
    settings: &Settings,
    endpoint: &Endpoint,
    id: u32,
    barrier: &Barrier,
    stop: &AtomicBool,
) -> Result<ActorResult, String> {
    let prepared = pin(settings.core_of(id as usize)).and_then(|()| {
        let runtime = current_thread_runtime()?;
        let producer = runtime.block_on(connect(settings, endpoint, id))?;
        Ok((runtime, producer))
    });
    if prepared.is_err() {
        stop.store(true, Ordering::SeqCst);
    }
    barrier.wait();
    let (runtime, producer) = prepared?;
    let outcome = runtime.block_on(async {
        let outcome = publish(settings, &producer, id, stop).await;
        let closed = tokio::time::timeout(CLOSE_TIMEOUT, producer.clone().close()).await;
        if !matches!(closed, Ok(Ok(()))) {
            // Its Drop would block this thread on a close that cannot finish here: leak it.
            std::mem::forget(producer);
        }
        outcome
    });
    if outcome.is_err() {
        stop.store(true, Ordering::SeqCst);
    }
    outcome
}

fn pin(core: Option<usize>) -> Result<(), String> {
    match core {
        Some(id) if !core_affinity::set_for_current(core_affinity::CoreId { id }) => {
            Err(format!("cannot pin a producer to core {id}"))
        }
        _ => Ok(()),
    }
}

async fn connect(settings: &Settings, endpoint: &Endpoint, id: u32) -> Result<Producer<NoDedup>, String> {
    let environment = endpoint.environment(settings).await?;
    let member = member_of(settings, id);
    environment
        .producer()
        .batch_size(settings.batch as usize)
        .client_provided_name(&format!("ringbench-{id}"))
        .build(&member)
        .await
        .map_err(|error| format!("producer {id} on {member}: {error}"))
}

/// Counts one batch's confirmations; wakes the publish loop when the last one arrives.
struct BatchWaiter {
    remaining: AtomicU32,
    failed: AtomicBool,
    done: tokio::sync::Notify,
}

impl BatchWaiter {
    fn confirm(&self, status: &Result<ConfirmationStatus, ProducerPublishError>) {
        if !matches!(status, Ok(status) if status.confirmed()) {
            self.failed.store(true, Ordering::SeqCst);
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_one();
        }
    }
}

/// The publish loop: up to `--in-flight` batches out, each counted when fully confirmed.
async fn publish(
    settings: &Settings,
    producer: &Producer<NoDedup>,
    id: u32,
    stop: &AtomicBool,
) -> Result<ActorResult, String> {
    let started = Instant::now();
    let measured_from = started + settings.warmup;
    let (batches_max, deadline) = match settings.bound {
        Bound::Batches(batches) => (batches, None),
        Bound::Duration(duration) => (u64::MAX, Some(started + duration)),
    };
    let mut result = new_result(Role::Producer, id, measured_from)?;
    let batch = build_batch(settings, id);
    let batch_bytes = settings.batch_payload_bytes();
    let mut in_flight = FuturesUnordered::new();
    let mut sent = 0_u64;
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let may_send = sent < batches_max && deadline.is_none_or(|deadline| Instant::now() < deadline);
        if may_send && in_flight.len() < settings.in_flight {
            let waiter = Arc::new(BatchWaiter {
                remaining: AtomicU32::new(settings.batch),
                failed: AtomicBool::new(false),
                done: tokio::sync::Notify::new(),
            });
            let sent_at = Instant::now();
            let counter = waiter.clone();
            let queued = producer.batch_send(batch.clone(), move |status| {
                counter.confirm(&status);
                std::future::ready(())
            });
            // The client queues each message on a channel its batching task drains into Publish
            // frames; under tokio's cooperative budget the queueing would yield every 128 sends
            // and the batch would go out as frames of 128. Unconstrained, it is one frame.
            tokio::task::unconstrained(queued)
                .await
                .map_err(|error| format!("producer {id}: publishing: {error}"))?;
            in_flight.push(async move {
                let confirmed = tokio::time::timeout(CONFIRM_TIMEOUT, waiter.done.notified()).await;
                (sent_at, Instant::now(), confirmed.is_ok() && !waiter.failed.load(Ordering::SeqCst))
            });
            sent += 1;
            continue;
        }
        let Some((sent_at, confirmed_at, ok)) = in_flight.next().await else { break };
        if !ok {
            return Err(format!(
                "producer {id}: a batch was refused or not confirmed within {CONFIRM_TIMEOUT:?}"
            ));
        }
        if confirmed_at >= measured_from {
            report::record(&mut result.latency, micros(confirmed_at - sent_at));
            result.bytes += batch_bytes;
            result.wire_bytes += batch_bytes;
            result.messages += u64::from(settings.batch);
        }
        result.bytes_all += batch_bytes;
        result.wire_bytes_all += batch_bytes;
    }
    result.finished_at = Instant::now();
    Ok(result)
}

/// One batch of `--batch` messages with random bodies of `--message-size` bytes (xorshift64
/// seeded by the producer id, so runs repeat).
fn build_batch(settings: &Settings, id: u32) -> Vec<Message> {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64 ^ u64::from(id);
    let mut next_byte = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as u8
    };
    (0..settings.batch)
        .map(|_| {
            let body: Vec<u8> = (0..settings.message_size).map(|_| next_byte()).collect();
            Message::builder().body(body).build()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        let endpoint = Endpoint::parse("127.0.0.1:5552").expect("plain");
        assert_eq!((endpoint.host.as_str(), endpoint.port), ("127.0.0.1", 5552));
        let endpoint = Endpoint::parse("[::1]:6000").expect("ipv6");
        assert_eq!((endpoint.host.as_str(), endpoint.port), ("::1", 6000));
        for bad in ["", "localhost", ":5552", "host:0", "host:99999", "host:x"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
