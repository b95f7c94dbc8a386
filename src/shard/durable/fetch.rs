//! The durable-consumer operations on an owned partition: fetch (redeliveries first, then new
//! messages from the consumer's cursor), acknowledgements, persistence of the ack state, and
//! the reports (`ConsumerInfo`, `TopicState`).
//!
//! Runs on the partition's owner shard. The partition's [`super::Retention`] is borrowed only
//! between awaits; reads go through the poll path (`read_from`: batch cache, read-ahead,
//! planned reads) and the batches they return go into the answer as they are, trimmed to the
//! batches that hold a delivered record. Invariant: an `AckSync` answer leaves only after the
//! change is in the ack log and synced.

use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::FutureExt;

use super::consumer::Outcome;
use crate::protocol::batch::{self, BatchHeader};
use crate::protocol::durable::{
    AckKind, AckPolicy, AckRequest, AckResponse, Delivered, DurablePartitionState, FetchRequest,
    FetchResponse, PartitionState,
};
use crate::protocol::messages::{PollStrategy, Status};
use crate::protocol::subject::filter_matches;
use crate::shard::error::{BrokerError, BrokerResult};
use crate::shard::mesh::PollSpec;
use crate::shard::partitions::{read_from, Partition, PayloadPart, Prefetching};

/// The most batch bytes one fetch answers with (a larger `max_bytes` is cut to it): a read
/// buffer's worth, as polls get.
pub const FETCH_BYTES_MAX: usize = 32 * 1024 * 1024;

/// A fetch's answer on the owner shard: the body and the batches.
pub struct FetchOutcome {
    /// The body.
    pub response: FetchResponse,
    /// Whole batches holding the delivered records, in the buffers they were read into.
    pub parts: Vec<PayloadPart>,
}

fn unknown_consumer(partition: &Partition, name: &str) -> BrokerError {
    BrokerError::new(
        Status::UnknownConsumer,
        format!("no durable consumer `{name}` on partition {} of this topic", partition.key.partition),
    )
}

/// Fetches for `request.consumer`, waiting up to `expires` for a first message.
pub async fn fetch(
    partition: &Rc<Partition>,
    request: &FetchRequest,
    ahead: Prefetching,
) -> BrokerResult<FetchOutcome> {
    let expires = if request.no_wait { Duration::ZERO } else { Duration::from_micros(request.expires_us) };
    let deadline = Instant::now() + expires;
    loop {
        let listener = partition.data.listen();
        let outcome = fetch_once(partition, request, ahead).await?;
        let now = Instant::now();
        if !outcome.response.messages.is_empty() || now >= deadline {
            return Ok(outcome);
        }
        // Wake for new data, for the next redelivery, or at the deadline.
        let next_due = {
            let retention = partition.retention.borrow();
            retention.consumers.get(&request.consumer).and_then(|c| c.next_due())
        };
        let mut wake = deadline;
        if let Some(due_us) = next_due {
            let wait = Duration::from_micros(due_us.saturating_sub(crate::model::now_us()));
            wake = wake.min(now + wait.max(Duration::from_millis(1)));
        }
        let timer = glommio::timer::sleep(wake.saturating_duration_since(now)).fuse();
        let arrived = listener.fuse();
        futures::pin_mut!(timer, arrived);
        futures::select! {
            () = arrived => {}
            () = timer => {}
        }
    }
}

/// One round of a fetch: due redeliveries, then new messages, within the request's budget.
async fn fetch_once(
    partition: &Rc<Partition>,
    request: &FetchRequest,
    ahead: Prefetching,
) -> BrokerResult<FetchOutcome> {
    let max_messages = request.max_messages.max(1) as usize;
    let max_bytes = (request.max_bytes as usize).clamp(1, FETCH_BYTES_MAX);
    let now_us = crate::model::now_us();
    let mut messages: Vec<Delivered> = Vec::new();
    let mut parts: Vec<PayloadPart> = Vec::new();
    let mut bytes = 0_usize;

    // Redeliveries: pending messages whose time came, oldest first.
    let redeliver: Vec<u64> = {
        let mut guard = partition.retention.borrow_mut();
        let retention = &mut *guard;
        let consumer = retention
            .consumers
            .get_mut(&request.consumer)
            .ok_or_else(|| unknown_consumer(partition, &request.consumer))?;
        let due = consumer.due(now_us, max_messages);
        let mut chosen = Vec::new();
        for offset in due {
            if retention.is_removed(offset) || expired(retention, offset, now_us) {
                if retention.ledger.is_some() && !retention.is_removed(offset) {
                    retention.remove(offset);
                }
                if let Some(consumer) = retention.consumers.get_mut(&request.consumer) {
                    consumer.drop_gone(offset);
                }
                continue;
            }
            let Some(consumer) = retention.consumers.get_mut(&request.consumer) else { break };
            match consumer.redeliver(offset, now_us) {
                Some((sequence, deliveries)) => {
                    messages.push(Delivered { offset, consumer_sequence: sequence, deliveries });
                    chosen.push(offset);
                }
                None => retention.after_done(offset, Outcome::MaxDelivered),
            }
        }
        chosen
    };
    let mut covered: Vec<(u64, u64)> = Vec::new();
    for offset in redeliver {
        if covered.iter().any(|(a, b)| (*a..*b).contains(&offset)) {
            continue;
        }
        let spec = spec_for(offset, 1, u32::MAX);
        let read = read_from(partition, offset, &spec, Prefetching { chunk_bytes: 0, depth: 0 }).await?;
        for part in read.parts {
            let (Some(first), Some(next)) = (part.first_offset(), part.next_offset()) else { continue };
            covered.push((first, next));
            bytes += part.bytes().len();
            parts.push(part);
        }
    }

    // New messages from the cursor.
    while messages.len() < max_messages && bytes < max_bytes {
        let start = {
            let retention = partition.retention.borrow();
            let consumer = retention
                .consumers
                .get(&request.consumer)
                .ok_or_else(|| unknown_consumer(partition, &request.consumer))?;
            if !consumer.may_take() {
                break;
            }
            consumer.cursor.max(retention.first)
        };
        if start >= partition.log.high_watermark() {
            break;
        }
        let budget = (max_messages - messages.len()) as u32;
        let spec = spec_for(start, budget, (max_bytes - bytes) as u32);
        let read = read_from(partition, start, &spec, ahead).await?;
        if read.parts.is_empty() {
            break;
        }
        let end = read.partition.next_offset;
        let mut stopped = false;
        for part in read.parts {
            if stopped {
                break;
            }
            let (kept, full) = take_from_part(partition, request, part, max_messages, &mut messages, now_us)?;
            stopped = full;
            if let Some(kept) = kept {
                bytes += kept.bytes().len();
                parts.push(kept);
            }
        }
        if !stopped {
            let mut retention = partition.retention.borrow_mut();
            if let Some(consumer) = retention.consumers.get_mut(&request.consumer) {
                consumer.skip_to(end);
            }
        } else {
            break;
        }
    }

    let retention = partition.retention.borrow();
    let consumer = retention
        .consumers
        .get(&request.consumer)
        .ok_or_else(|| unknown_consumer(partition, &request.consumer))?;
    let num_pending = retention.num_pending(consumer, partition.log.high_watermark());
    let response = FetchResponse {
        partition: partition.key.partition,
        messages,
        num_pending,
        ack_pending: consumer.pending.len() as u64,
    };
    Ok(FetchOutcome { response, parts })
}

fn spec_for(start: u64, max_messages: u32, max_bytes: u32) -> PollSpec {
    PollSpec {
        strategy: PollStrategy::Offset(start),
        consumer_key: String::new(),
        max_messages,
        max_bytes,
        max_batches: u32::MAX,
        max_wait: Duration::ZERO,
        auto_commit: false,
        filter: None,
    }
}

fn expired(retention: &super::Retention, offset: u64, now_us: u64) -> bool {
    retention
        .ledger
        .as_ref()
        .and_then(|l| l.get(offset))
        .is_some_and(|m| m.expires_us != 0 && m.expires_us <= now_us)
}

/// Delivers what the consumer wants from the batches of `part`; returns the batches that hold
/// a delivered record (trimmed, sharing the buffer) and whether the budget is spent.
fn take_from_part(
    partition: &Partition,
    request: &FetchRequest,
    mut part: PayloadPart,
    max_messages: usize,
    messages: &mut Vec<Delivered>,
    now_us: u64,
) -> BrokerResult<(Option<PayloadPart>, bool)> {
    let mut guard = partition.retention.borrow_mut();
    let retention = &mut *guard;
    let data = part.bytes();
    let mut at = 0_usize;
    let mut used: Option<(usize, usize, u64, u64)> = None; // bytes [from, to), offsets [from, to)
    let mut full = false;
    let corrupt =
        |e: batch::BatchError| BrokerError::new(Status::StorageFailed, format!("stored batch: {e}"));
    while at < data.len() && !full {
        let header = BatchHeader::decode(&data[at..]).map_err(corrupt)?;
        let end = at + header.length as usize;
        let batch_bytes = data
            .get(at..end)
            .ok_or_else(|| corrupt(batch::BatchError::Truncated { needed: end, available: data.len() }))?;
        let (base, next) = (header.base_offset, header.next_offset());
        let (cursor, filtered) = match retention.consumers.get(&request.consumer) {
            Some(consumer) => (consumer.cursor, !consumer.config.filter.is_empty()),
            None => return Err(unknown_consumer(partition, &request.consumer)),
        };
        let delivered_before = messages.len();
        if next > cursor {
            let from = cursor.max(base);
            if retention.ledger.is_none() && !filtered && retention.removed.is_empty() {
                // Every record from the cursor on is wanted: no per-record look-up.
                full = take_plain(retention, request, from..next, max_messages, messages, now_us);
            } else {
                let views = if retention.ledger.is_none() && filtered {
                    let checked = batch::validate(batch_bytes).map_err(corrupt)?;
                    Some(super::record_views(&checked, header.append_timestamp_us))
                } else {
                    None
                };
                full = take_checked(
                    retention,
                    request,
                    from..next,
                    views.as_deref(),
                    max_messages,
                    messages,
                    now_us,
                );
            }
        }
        if messages.len() > delivered_before {
            used = Some(match used {
                None => (at, end, base, next),
                Some((from, _, first, _)) => (from, end, first, next),
            });
        }
        at = end;
    }
    drop(guard);
    let Some((from, to, first, next)) = used else { return Ok((None, full)) };
    // Keep only batches [from, to) of the part, without copying.
    let mut kept = if from > 0 {
        match part.split_off(from, first) {
            Some(tail) => tail,
            None => return Ok((Some(copy_range(&part, from, to)), full)),
        }
    } else {
        part
    };
    if to - from < kept.bytes().len() && kept.split_off(to - from, next).is_none() {
        kept = copy_range(&kept, 0, to - from);
    }
    Ok((Some(kept), full))
}

/// Delivers `offsets` in order to a consumer that wants them all; true when the budget or
/// `max_ack_pending` stopped it.
fn take_plain(
    retention: &mut super::Retention,
    request: &FetchRequest,
    offsets: std::ops::Range<u64>,
    max_messages: usize,
    messages: &mut Vec<Delivered>,
    now_us: u64,
) -> bool {
    let Some(consumer) = retention.consumers.get_mut(&request.consumer) else { return true };
    for offset in offsets {
        if messages.len() >= max_messages || !consumer.may_take() {
            return true;
        }
        let sequence = consumer.deliver_new(offset, now_us);
        messages.push(Delivered { offset, consumer_sequence: sequence, deliveries: 1 });
    }
    false
}

/// Delivers what the consumer wants of `offsets`, checking each against the deleted-set, the
/// ledger (or the records' `views`), expiry and the filter; true when the budget or
/// `max_ack_pending` stopped it.
fn take_checked(
    retention: &mut super::Retention,
    request: &FetchRequest,
    offsets: std::ops::Range<u64>,
    views: Option<&[super::RecordInfo]>,
    max_messages: usize,
    messages: &mut Vec<Delivered>,
    now_us: u64,
) -> bool {
    for offset in offsets {
        let Some(consumer) = retention.consumers.get(&request.consumer) else { return true };
        if messages.len() >= max_messages || !consumer.may_take() {
            return true;
        }
        let filtered = !consumer.config.filter.is_empty();
        let (subject, expires_us): (Option<Vec<u8>>, u64) = match (&retention.ledger, views) {
            (Some(ledger), _) => match ledger.get(offset) {
                Some(meta) if !filtered => (None, meta.expires_us),
                Some(meta) => (ledger.subject(meta.subject).map(<[u8]>::to_vec), meta.expires_us),
                None => {
                    skip(retention, &request.consumer, offset);
                    continue;
                }
            },
            (None, Some(views)) => match views.iter().find(|v| v.offset == offset) {
                Some(view) => (view.subject.clone(), view.expires_us),
                None => (None, 0),
            },
            (None, None) => (None, 0),
        };
        let expired = expires_us != 0 && expires_us <= now_us;
        if retention.is_removed(offset) || expired {
            if retention.ledger.is_some() && !retention.is_removed(offset) {
                retention.remove(offset);
            }
            skip(retention, &request.consumer, offset);
            continue;
        }
        let Some(consumer) = retention.consumers.get_mut(&request.consumer) else { return true };
        if !filter_matches(&consumer.config.filter, subject.as_deref()) {
            consumer.skip_to(offset + 1);
            continue;
        }
        let ack_none = consumer.config.ack == AckPolicy::None;
        let sequence = consumer.deliver_new(offset, now_us);
        messages.push(Delivered { offset, consumer_sequence: sequence, deliveries: 1 });
        if ack_none {
            retention.after_done(offset, Outcome::Delivered);
        }
    }
    false
}

fn copy_range(part: &PayloadPart, from: usize, to: usize) -> PayloadPart {
    PayloadPart::Owned(part.bytes()[from..to].to_vec())
}

fn skip(retention: &mut super::Retention, consumer: &str, offset: u64) {
    if let Some(consumer) = retention.consumers.get_mut(consumer) {
        consumer.skip_to(offset + 1);
    }
}

/// Applies acknowledgements; with `sync`, answers once they are durable.
pub async fn ack(partition: &Rc<Partition>, request: &AckRequest) -> BrokerResult<AckResponse> {
    let now_us = crate::model::now_us();
    let mut applied = 0_u32;
    let mut already = 0_u32;
    {
        let mut guard = partition.retention.borrow_mut();
        let retention = &mut *guard;
        let consumer = retention
            .consumers
            .get(&request.consumer)
            .ok_or_else(|| unknown_consumer(partition, &request.consumer))?;
        let policy = consumer.config.ack;
        if policy == AckPolicy::None {
            return Err(BrokerError::new(
                Status::InvalidArgument,
                format!(
                    "consumer `{}` has ack policy none: there is nothing to acknowledge",
                    request.consumer
                ),
            ));
        }
        let cumulative = matches!(request.kind, AckKind::AckAll)
            || (policy == AckPolicy::All && request.kind == AckKind::Ack);
        if matches!(request.kind, AckKind::AckAll) && policy != AckPolicy::All {
            return Err(BrokerError::new(
                Status::InvalidArgument,
                format!(
                    "AckAll needs ack policy all; consumer `{}` acknowledges explicitly",
                    request.consumer
                ),
            ));
        }
        // Check everything before changing anything.
        for &offset in &request.offsets {
            if consumer.pending.contains_key(&offset)
                || consumer.is_done(offset)
                || retention.is_removed(offset)
            {
                continue;
            }
            if cumulative && offset < consumer.cursor {
                continue;
            }
            return Err(BrokerError::new(
                Status::NotDelivered,
                format!(
                    "offset {offset} of partition {} was never delivered to consumer `{}` (delivered up to {})",
                    partition.key.partition, request.consumer, consumer.cursor
                ),
            ));
        }
        let targets: Vec<u64> = if cumulative {
            let top = request.offsets.iter().copied().max().unwrap_or(0);
            let covered: Vec<u64> = consumer.pending.range(..=top).map(|(o, _)| *o).collect();
            if covered.is_empty() {
                already += request.offsets.len() as u32;
            }
            covered
        } else {
            request.offsets.clone()
        };
        for offset in targets {
            let Some(consumer) = retention.consumers.get_mut(&request.consumer) else { break };
            let deliveries = consumer.pending.get(&offset).map(|p| p.deliveries);
            let Some(deliveries) = deliveries else {
                already += 1;
                continue;
            };
            let done = match request.kind {
                AckKind::Ack | AckKind::AckAll => Some(Outcome::Acked),
                AckKind::Term => Some(Outcome::Terminated),
                AckKind::Nak(delay_us) => {
                    let delay = if delay_us == 0 && !consumer.config.backoff_us.is_empty() {
                        consumer.config.redelivery_wait_us(deliveries)
                    } else {
                        delay_us
                    };
                    consumer.reschedule(offset, now_us.saturating_add(delay));
                    None
                }
                AckKind::InProgress => {
                    let wait = consumer.config.redelivery_wait_us(deliveries);
                    consumer.reschedule(offset, now_us.saturating_add(wait));
                    None
                }
            };
            if let Some(outcome) = done {
                consumer.finish(offset, outcome);
                retention.after_done(offset, outcome);
            }
            applied += 1;
        }
        if request.kind == AckKind::Term && !request.reason.is_empty() {
            tracing::debug!(consumer = %request.consumer, reason = %request.reason, "terminated");
        }
    }
    // A nak with no delay may be fetched at once.
    partition.data.notify(usize::MAX);
    if request.sync {
        save(partition, true).await?;
    }
    Ok(AckResponse { applied, already })
}

/// Writes the ack state's changes to the ack log; with `sync`, also makes them durable.
pub async fn save(partition: &Partition, sync: bool) -> BrokerResult<()> {
    let mut log = partition.acks.lock().await;
    let changes = partition.retention.borrow_mut().changes();
    if changes.is_empty() && !sync {
        return Ok(());
    }
    let what = format!("saving acknowledgements of partition {}", partition.key.partition);
    if let Err(error) = log.append(&changes, sync).await {
        partition.retention.borrow_mut().restore(changes);
        return Err(BrokerError::storage(&what, error));
    }
    Ok(())
}

/// `consumer`'s state here.
pub fn info(partition: &Partition, consumer: &str) -> BrokerResult<DurablePartitionState> {
    let retention = partition.retention.borrow();
    let state = retention.consumers.get(consumer).ok_or_else(|| unknown_consumer(partition, consumer))?;
    let num_pending = retention.num_pending(state, partition.log.high_watermark());
    Ok(state.report(partition.key.partition, num_pending))
}

/// The partition's live contents.
pub fn state(partition: &Partition) -> PartitionState {
    let retention = partition.retention.borrow();
    let next = partition.log.high_watermark();
    let messages = retention.live_messages(next);
    let (bytes, first_timestamp_us, last_timestamp_us) = match &retention.ledger {
        Some(ledger) => {
            let (first_ts, last_ts) = ledger.timestamps();
            (
                ledger.live().1,
                if messages == 0 { 0 } else { first_ts },
                last_ts.max(retention.last_timestamp_us),
            )
        }
        None => (partition.log.size().0, 0, retention.last_timestamp_us),
    };
    let first = if messages == 0 { next } else { retention.first.max(partition.log.offsets().start) };
    PartitionState {
        partition: partition.key.partition,
        messages,
        bytes,
        first_offset: first,
        last_offset: next as i64 - 1,
        first_timestamp_us,
        last_timestamp_us,
        num_deleted: retention.removed.count_in(first..next),
        consumer_count: retention.consumers.len() as u32,
    }
}
