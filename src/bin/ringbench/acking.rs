//! Durable consumers under load: `ack-consumer` (fill, then each consumer fetches its partition
//! through the durable consumer `bench` and acknowledges what it got) and `workqueue` (pinned
//! producers and acknowledging consumers at once, on a work-queue or interest topic, so the
//! broker removes messages as they are acknowledged).
//!
//! Runs on the consumer actor's thread (module `actors` starts it). Acknowledgements are batched
//! on the wire: one `Ack` request per fetch, naming every fetched offset (`--ack explicit`) or
//! the last one (`--ack all`). Fetch answers are read as bodies only: the batches stay in the
//! payload, as a client that processes records in place would leave them. Invariant: the loop
//! ends by the run's bound, the stop flag, or after [`IDLE_TIMEOUT`] without progress.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ringbroker::client::Client;
use ringbroker::protocol::durable::{
    AckKind, AckPolicy, AckRequest, AckResponse, DurableConfig, FetchRequest, FetchResponse, Retention,
    MAX_ACK_PENDING_MAX,
};
use ringbroker::protocol::messages::Kind;

use crate::actors::{deadline_of, micros, new_result, Shared, IDLE_TIMEOUT};
use crate::report::{self, ActorResult, Role};
use crate::{Settings, TOPIC};

/// The durable consumer every acking actor uses (each on its own partition).
pub const CONSUMER: &str = "bench";
/// How long a fetch waits for a first message.
const FETCH_WAIT: Duration = Duration::from_millis(100);

/// The durable consumer's configuration for a run.
pub fn consumer_config(settings: &Settings) -> DurableConfig {
    let mut config = DurableConfig::new(CONSUMER);
    config.ack = settings.ack;
    // Room for a few fetches in flight of acknowledgement.
    config.max_ack_pending = settings.batch.saturating_mul(4).min(MAX_ACK_PENDING_MAX);
    config
}

/// The retention of the topic of a workload.
pub fn retention_of(settings: &Settings, workload: crate::Workload) -> Retention {
    match (workload, settings.retention) {
        (crate::Workload::Workqueue, None) => Retention::WorkQueue,
        (_, Some(retention)) => retention,
        (_, None) => Retention::Limits,
    }
}

/// Fetches partition `partition` through [`CONSUMER`] and acknowledges every fetch, until the
/// producers are done and nothing is pending; one latency sample per fetch + ack round trip.
pub async fn consume(
    shared: &Shared,
    id: u32,
    client: &Client,
    stream: &str,
    partition: u32,
) -> Result<ActorResult, String> {
    let settings = &shared.settings;
    let started = Instant::now();
    let measured_from = started + settings.warmup;
    let deadline = deadline_of(settings, started);
    let mut result = new_result(Role::Consumer, id, measured_from)?;
    let request = FetchRequest {
        stream: stream.to_string(),
        topic: TOPIC.to_string(),
        partition,
        consumer: CONSUMER.to_string(),
        max_messages: settings.batch,
        max_bytes: crate::actors::poll_bytes(settings),
        expires_us: micros(FETCH_WAIT),
        no_wait: false,
    };
    let timeout = client.connection_string().options.timeout + FETCH_WAIT;
    let mut progress_at = started;
    loop {
        let producers_done = shared.producers_done();
        if shared.stop.load(Ordering::Relaxed)
            || deadline.is_some_and(|deadline| producers_done && Instant::now() >= deadline)
        {
            break;
        }
        if progress_at.elapsed() > IDLE_TIMEOUT {
            return Err(format!("consumer {id}: nothing fetched for {} s", IDLE_TIMEOUT.as_secs()));
        }
        let fetched_at = Instant::now();
        let (response, _batches) = client
            .request_with_timeout::<_, FetchResponse>(Kind::Fetch, &request, &[], timeout)
            .await
            .map_err(|error| format!("consumer {id}: fetch: {error}"))?;
        let count = response.messages.len() as u64;
        if count == 0 {
            if std::env::var_os("RINGBENCH_DEBUG").is_some() {
                eprintln!("consumer {id}: empty fetch {response:?}");
            }
            if producers_done && response.num_pending == 0 && response.ack_pending == 0 {
                break;
            }
            continue;
        }
        let offsets: Vec<u64> = match settings.ack {
            AckPolicy::Explicit => response.messages.iter().map(|m| m.offset).collect(),
            AckPolicy::All => response.messages.iter().map(|m| m.offset).max().into_iter().collect(),
            AckPolicy::None => Vec::new(),
        };
        if !offsets.is_empty() {
            let kind = if settings.ack == AckPolicy::All { AckKind::AckAll } else { AckKind::Ack };
            let ack = AckRequest {
                stream: stream.to_string(),
                topic: TOPIC.to_string(),
                partition,
                consumer: CONSUMER.to_string(),
                kind,
                offsets,
                sync: false,
                reason: String::new(),
            };
            client
                .request::<_, AckResponse>(Kind::Ack, &ack, &[])
                .await
                .map_err(|error| format!("consumer {id}: ack: {error}"))?;
        }
        let answered_at = Instant::now();
        progress_at = answered_at;
        if answered_at < measured_from {
            continue;
        }
        report::record(&mut result.latency, micros(answered_at - fetched_at));
        result.messages += count;
        result.bytes += count * u64::from(settings.message_size);
    }
    result.finished_at = Instant::now();
    Ok(result)
}
