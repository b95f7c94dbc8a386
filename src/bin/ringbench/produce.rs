//! The producer actor's loop: builds or reuses a batch per request (module `payload`), stamps a
//! named producer's sequences into it (module `named`), keeps up to `--in-flight` requests in
//! flight, paces to `--rate`, and records send → acknowledgement latency and the payload and
//! wire bytes acknowledged.
//!
//! Runs on the actor's thread and current-thread runtime. Invariants: at most `--in-flight`
//! requests are out; the loop ends by batch count, deadline, the stop flag or an error; only
//! acknowledgements after the warm-up enter the measured figures (the `*_all` counts take all).

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use ringbroker::client::{Client, ClientError};
use ringbroker::protocol::messages::Partitioning;

use crate::actors::{micros, new_result, Shared};
use crate::named::NamedLane;
use crate::payload::{build_batch, set_sequences, Bodies, HeaderStamp};
use crate::report::{self, ActorResult, Role};
use crate::{Bound, TOPIC};

/// How a producer runs.
pub struct ProducePlan {
    pub id: u32,
    pub bound: Bound,
    pub rate: Option<f64>,
    pub warmup: Duration,
    pub stamp: bool,
}

/// The producer loop: builds a batch per request, keeps up to `--in-flight` in flight,
/// records send → ack per batch.
pub async fn produce(
    shared: &Shared,
    plan: &ProducePlan,
    targets: &[(String, u32)],
    clients: &[Client],
    mut named: Option<&mut NamedLane>,
) -> Result<ActorResult, String> {
    assert_eq!(targets.len(), clients.len());
    assert!(!targets.is_empty());
    let settings = &shared.settings;
    let started = Instant::now();
    let measured_from = started + plan.warmup;
    let (batches_max, deadline) = match plan.bound {
        Bound::Batches(batches) => (batches, None),
        Bound::Duration(duration) => (u64::MAX, Some(started + duration)),
    };
    let batch_bytes = settings.batch_payload_bytes();
    let mut result = new_result(Role::Producer, plan.id, measured_from)?;
    let seed = u64::from(plan.id) + 1;
    let mut bodies =
        Bodies::new(settings.payload, settings.message_size as usize, settings.batch as usize, seed);
    let header = match &named {
        Some(lane) => lane.stamp,
        None => HeaderStamp { compression: settings.compression, ..HeaderStamp::default() },
    };
    let mut in_flight = FuturesUnordered::new();
    let mut sent = 0_u64;
    // With `--filter-values N`, batch `i` carries value `v{i % N}` (one prebuilt batch each).
    let values: Vec<Vec<u8>> =
        (0..settings.filter_values.unwrap_or(0)).map(|v| format!("v{v}").into_bytes()).collect();
    let value_of =
        |sent: u64| (!values.is_empty()).then(|| values[(sent % values.len() as u64) as usize].as_slice());
    let prebuilt = match plan.stamp {
        true => Vec::new(),
        false if values.is_empty() => vec![Rc::new(build_batch(&mut bodies, false, header, 0, None)?)],
        false => values
            .iter()
            .map(|value| build_batch(&mut bodies, false, header, 0, Some(value)).map(Rc::new))
            .collect::<Result<_, _>>()?,
    };
    // Named producers' rewritten copies of the prebuilt batch, back from their acknowledgement.
    let mut spare: Vec<Vec<u8>> = Vec::new();
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let may_send = sent < batches_max && deadline.is_none_or(|deadline| Instant::now() < deadline);
        let acked = if may_send && in_flight.len() < settings.in_flight {
            let due = plan.rate.map(|mb_per_s| {
                started + Duration::from_secs_f64(sent as f64 * batch_bytes as f64 / (mb_per_s * 1e6))
            });
            match due.filter(|due| *due > Instant::now()) {
                None => {
                    let index = (u64::from(plan.id) + sent) as usize % targets.len();
                    let (stream, partition) = &targets[index];
                    let first_sequence =
                        named.as_mut().map_or(0, |lane| lane.take_sequences(index, settings.batch));
                    let prebuilt = prebuilt.get((sent % prebuilt.len().max(1) as u64) as usize);
                    let batch = match (prebuilt, named.is_some()) {
                        (Some(prebuilt), false) => prebuilt.clone(),
                        (Some(prebuilt), true) => {
                            // `--producer-name` excludes `--filter-values`: one prebuilt batch.
                            let mut copy = spare.pop().unwrap_or_else(|| prebuilt.to_vec());
                            set_sequences(&mut copy, first_sequence)?;
                            Rc::new(copy)
                        }
                        (None, _) => {
                            let value = value_of(sent);
                            Rc::new(build_batch(&mut bodies, true, header, first_sequence, value)?)
                        }
                    };
                    in_flight.push(send_batch(&clients[index], stream, *partition, batch));
                    sent += 1;
                    continue;
                }
                Some(due) if in_flight.is_empty() => {
                    tokio::time::sleep_until(due.into()).await;
                    continue;
                }
                Some(due) => tokio::select! {
                    () = tokio::time::sleep_until(due.into()) => continue,
                    acked = in_flight.next() => acked,
                },
            }
        } else {
            in_flight.next().await
        };
        let Some(acked) = acked else { break };
        let (sent_at, acked_at, batch) = acked.map_err(|error| format!("producer {}: {error}", plan.id))?;
        if acked_at >= measured_from {
            report::record(&mut result.latency, micros(acked_at - sent_at));
            result.bytes += batch_bytes;
            result.wire_bytes += batch.len() as u64;
            result.messages += u64::from(settings.batch);
        }
        result.bytes_all += batch_bytes;
        result.wire_bytes_all += batch.len() as u64;
        if named.is_some() && !prebuilt.is_empty() {
            spare.extend(Rc::try_unwrap(batch).ok());
        }
    }
    result.finished_at = Instant::now();
    Ok(result)
}

/// Sends one batch; answers when it was sent (first polled) and acknowledged, and hands the
/// batch back.
async fn send_batch(
    client: &Client,
    stream: &str,
    partition: u32,
    batch: Rc<Vec<u8>>,
) -> Result<(Instant, Instant, Rc<Vec<u8>>), ClientError> {
    let sent_at = Instant::now();
    client.produce(stream, TOPIC, Partitioning::Partition(partition), &[batch.as_slice()]).await?;
    Ok((sent_at, Instant::now(), batch))
}
