//! The background task of a producer in background mode: drains the handle's queue into one open
//! batch per partition, seals batches when full or lingered, sends each partition's batches with
//! at most one request in flight, confirms each batch, and answers flushes and `send_batch` calls.
//!
//! Runs on one tokio task per producer; its state lives there only. Invariants: a partition has
//! at most one request in flight and its batches settle in the order they were sealed (so a named
//! producer's sequences reach each partition in order); every message accepted is either
//! acknowledged or reported as failed, once (to its `send_batch` caller if it came from one, else
//! to the next `send` or `flush`), and its queue permit returns; every batch is confirmed once.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::batching::{append, finished, request_len};
use super::confirm::BatchReceipt;
use super::delivery::Shared;
use super::{ProducerError, ProducerMessage, BUILDER_POOL_MAX, DRAIN_COMMANDS_MAX};
use crate::client::error::ClientError;
use crate::protocol::batch::BatchBuilder;
use crate::protocol::messages::BatchAck;

/// What a `send_batch` call hears back: its receipts, or the messages that failed and the first
/// error.
pub(super) type BatchOutcome = Result<Vec<BatchReceipt>, (u64, ClientError)>;

/// What the handle sends its background task.
pub(super) enum Command {
    /// One routed message (no vectors for the common single send).
    One { partition: u32, message: ProducerMessage },
    /// Routed messages, `partitions[i]` for `messages[i]`.
    Many { partitions: Vec<u32>, messages: Vec<ProducerMessage> },
    /// One `send_batch` call's messages for one partition: sealed into batches of their own
    /// (one unless the format's limits force more), after whatever that partition holds, and
    /// answered once all of them are settled.
    Batch { partition: u32, messages: Vec<ProducerMessage>, reply: oneshot::Sender<BatchOutcome> },
    /// Answer once everything queued before is acknowledged.
    Flush(oneshot::Sender<Result<(), ProducerError>>),
}

/// A batch waiting to be sent, and the `send_batch` call waiting for it, if any.
struct Sealed {
    batch: BatchBuilder,
    waiter: Option<u64>,
}

/// One partition's batches in the background task.
#[derive(Default)]
struct PartitionQueue {
    /// The batch being filled.
    open: Option<BatchBuilder>,
    /// When the open batch got its first message.
    opened_at: Option<Instant>,
    /// Full batches waiting to be sent, oldest first.
    sealed: VecDeque<Sealed>,
    /// Whether a request for this partition is out (at most one, for order).
    in_flight: bool,
    /// Batches sealed so far.
    sealed_total: u64,
    /// Batches acknowledged or failed so far (they settle in the order they were sealed).
    settled_total: u64,
    /// The producer sequence the next message of this partition gets (named producers).
    next_sequence: u64,
}

/// The outcome of one background request.
struct Delivered {
    partition: u32,
    batches: Vec<BatchBuilder>,
    waiters: Vec<Option<u64>>,
    messages: u64,
    result: Result<Vec<BatchAck>, ClientError>,
}

/// A flush waiting for batches: it is answered once each listed partition has settled the
/// given number of batches.
struct FlushWaiter {
    targets: Vec<(u32, u64)>,
    reply: oneshot::Sender<Result<(), ProducerError>>,
}

/// A `send_batch` call's partition waiting for its batches.
struct BatchWaiter {
    remaining: usize,
    receipts: Vec<BatchReceipt>,
    failure: Option<(u64, ClientError)>,
    reply: oneshot::Sender<BatchOutcome>,
}

type Delivery = Pin<Box<dyn Future<Output = Delivered> + Send>>;

/// The background task's state (lives on that task only).
pub(super) struct Worker {
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    queues: Vec<PartitionQueue>,
    /// Each partition's first sequence, from the declaration (named producers).
    first_sequences: Vec<u64>,
    pool: Vec<BatchBuilder>,
    deliveries: FuturesUnordered<Delivery>,
    flushes: Vec<FlushWaiter>,
    waiters: HashMap<u64, BatchWaiter>,
    next_waiter: u64,
}

impl Worker {
    pub(super) fn new(shared: Arc<Shared>, permits: Arc<Semaphore>, first_sequences: Vec<u64>) -> Worker {
        Worker {
            shared,
            permits,
            queues: Vec::new(),
            first_sequences,
            pool: Vec::new(),
            deliveries: FuturesUnordered::new(),
            flushes: Vec::new(),
            waiters: HashMap::new(),
            next_waiter: 0,
        }
    }

    /// Runs until the handle is gone and everything it queued is settled.
    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut open = true;
        loop {
            let deadline = self.next_deadline();
            let wake_at = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                command = commands.recv(), if open => match command {
                    Some(command) => {
                        self.handle(command);
                        for _ in 0..DRAIN_COMMANDS_MAX {
                            let Ok(command) = commands.try_recv() else { break };
                            self.handle(command);
                        }
                    }
                    None => open = false,
                },
                Some(delivered) = self.deliveries.next(), if !self.deliveries.is_empty() => {
                    self.settle(delivered);
                }
                () = tokio::time::sleep_until(wake_at.into()), if deadline.is_some() => {}
                else => {
                    // Unreachable: with the queue closed and nothing out, the check below
                    // has already ended the loop.
                    debug_assert!(false, "producer task with nothing to wait for");
                    tracing::error!(stream = %self.shared.stream, "producer task stopped with nothing to wait for");
                    return;
                }
            }
            if open {
                self.seal_lingered(Instant::now());
            } else {
                self.seal_all();
            }
            self.dispatch();
            self.answer_flushes();
            if !open && self.deliveries.is_empty() && self.queues.iter().all(|queue| queue.sealed.is_empty())
            {
                debug_assert!(self.flushes.is_empty());
                tracing::debug!(stream = %self.shared.stream, topic = %self.shared.topic, "producer task done");
                return;
            }
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::One { partition, message } => self.add(partition, &message),
            Command::Many { partitions, messages } => {
                for (partition, message) in partitions.into_iter().zip(&messages) {
                    self.add(partition, message);
                }
            }
            Command::Batch { partition, messages, reply } => self.add_batch(partition, &messages, reply),
            Command::Flush(reply) => {
                self.seal_all();
                let targets = self
                    .queues
                    .iter()
                    .enumerate()
                    .filter(|(_, queue)| queue.settled_total < queue.sealed_total)
                    .map(|(partition, queue)| (partition as u32, queue.sealed_total))
                    .collect();
                self.flushes.push(FlushWaiter { targets, reply });
            }
        }
    }

    /// The queue of `partition`, created (at the declared sequence) when new.
    fn queue(&mut self, partition: u32) -> &mut PartitionQueue {
        let index = partition as usize;
        while self.queues.len() <= index {
            let next_sequence = self.first_sequences.get(self.queues.len()).copied().unwrap_or(0);
            self.queues.push(PartitionQueue { next_sequence, ..PartitionQueue::default() });
        }
        &mut self.queues[index]
    }

    /// Puts one routed message into its partition's open batch.
    fn add(&mut self, partition: u32, message: &ProducerMessage) {
        let limits = self.shared.limits;
        self.queue(partition);
        let queue = &mut self.queues[partition as usize];
        let (sealed, sealed_total) = (&mut queue.sealed, &mut queue.sealed_total);
        let appended =
            append(&mut queue.open, &mut queue.next_sequence, message, limits, &mut self.pool, |batch| {
                sealed.push_back(Sealed { batch, waiter: None });
                *sealed_total += 1;
            });
        match appended {
            Ok(()) => {
                let first = queue.open.as_ref().is_some_and(|batch| batch.record_count() == 1);
                if first {
                    queue.opened_at = Some(Instant::now());
                }
            }
            Err(error) => {
                // `send` checked the limits, so this is not expected; report it all the same.
                self.permits.add_permits(1);
                self.shared.record_failure(partition, 1, ClientError::from(error));
            }
        }
    }

    /// Seals a `send_batch` call's messages for one partition into batches of their own, after
    /// the partition's open batch, and keeps the caller waiting for them.
    fn add_batch(
        &mut self,
        partition: u32,
        messages: &[ProducerMessage],
        reply: oneshot::Sender<BatchOutcome>,
    ) {
        let limits = self.shared.limits.widest();
        self.queue(partition);
        let queue = &mut self.queues[partition as usize];
        seal(queue);
        let mut batches = Vec::new();
        let mut open = None;
        for message in messages {
            let appended =
                append(&mut open, &mut queue.next_sequence, message, limits, &mut self.pool, |batch| {
                    batches.push(batch);
                });
            if let Err(error) = appended {
                // `send_batch` checked the limits, so this is not expected; fail the whole call
                // (nothing of it was sent; the sequences it took are a gap).
                let count = messages.len() as u64;
                self.permits.add_permits(messages.len());
                self.pool.extend(batches.into_iter().chain(open).take(BUILDER_POOL_MAX));
                let _ = reply.send(Err((count, ClientError::from(error))));
                return;
            }
        }
        batches.extend(open.filter(|batch| !batch.is_empty()));
        if batches.is_empty() {
            let _ = reply.send(Ok(Vec::new()));
            return;
        }
        let id = self.next_waiter;
        self.next_waiter += 1;
        let remaining = batches.len();
        for batch in batches {
            queue.sealed.push_back(Sealed { batch, waiter: Some(id) });
            queue.sealed_total += 1;
        }
        let waiter = BatchWaiter { remaining, receipts: Vec::with_capacity(remaining), failure: None, reply };
        self.waiters.insert(id, waiter);
    }

    /// When the oldest open batch's linger runs out.
    fn next_deadline(&self) -> Option<Instant> {
        self.queues
            .iter()
            .filter(|queue| queue.open.as_ref().is_some_and(|batch| !batch.is_empty()))
            .filter_map(|queue| queue.opened_at)
            .min()
            .and_then(|opened_at| opened_at.checked_add(self.shared.linger))
    }

    fn seal_lingered(&mut self, now: Instant) {
        let linger = self.shared.linger;
        for queue in &mut self.queues {
            if queue.opened_at.is_some_and(|opened_at| now.saturating_duration_since(opened_at) >= linger) {
                seal(queue);
            }
        }
    }

    fn seal_all(&mut self) {
        self.queues.iter_mut().for_each(seal);
    }

    /// Starts a request for every partition that has sealed batches and none out.
    fn dispatch(&mut self) {
        for (index, queue) in self.queues.iter_mut().enumerate() {
            if queue.in_flight || queue.sealed.is_empty() {
                continue;
            }
            let count = request_len(queue.sealed.iter().map(|sealed| sealed.batch.byte_len()));
            let (mut batches, waiters): (Vec<BatchBuilder>, Vec<Option<u64>>) =
                queue.sealed.drain(..count).map(|sealed| (sealed.batch, sealed.waiter)).unzip();
            let messages = batches.iter().map(|batch| u64::from(batch.record_count())).sum();
            queue.in_flight = true;
            let shared = self.shared.clone();
            let partition = index as u32;
            self.deliveries.push(Box::pin(async move {
                let result = match finished(&mut batches) {
                    Ok(slices) => shared.deliver(partition, &slices).await,
                    Err(error) => Err(error),
                };
                Delivered { partition, batches, waiters, messages, result }
            }));
        }
    }

    /// Books a finished request: frees its messages' queue room, confirms each batch, answers
    /// or keeps its failure, and recycles its buffers.
    fn settle(&mut self, delivered: Delivered) {
        let Delivered { partition, batches, waiters, messages, result } = delivered;
        let queue = &mut self.queues[partition as usize];
        debug_assert!(queue.in_flight);
        debug_assert_eq!(batches.len(), waiters.len());
        queue.in_flight = false;
        queue.settled_total += batches.len() as u64;
        debug_assert!(queue.settled_total <= queue.sealed_total);
        self.permits.add_permits(usize::try_from(messages).unwrap_or(usize::MAX));
        let named = self.shared.named.is_some();
        let mut unclaimed = 0_u64;
        for (index, (batch, waiter)) in batches.iter().zip(&waiters).enumerate() {
            let outcome = match &result {
                Ok(acks) => acks.get(index).copied().ok_or_else(|| {
                    ClientError::Protocol(format!("no acknowledgement for batch {index} of the request"))
                }),
                Err(error) => Err(error.clone()),
            };
            self.shared.confirm.batch(partition, batch, named, &outcome);
            match waiter {
                Some(id) => self.settle_waiter(*id, partition, batch.record_count(), outcome),
                None if outcome.is_err() => unclaimed += u64::from(batch.record_count()),
                None => {}
            }
        }
        if let (Err(error), true) = (result, unclaimed > 0) {
            self.shared.record_failure(partition, unclaimed, error);
        }
        for mut batch in batches {
            if self.pool.len() >= BUILDER_POOL_MAX {
                break;
            }
            batch.reset(0);
            self.pool.push(batch);
        }
    }

    /// Books one settled batch of a `send_batch` call; answers the call after its last.
    fn settle_waiter(
        &mut self,
        id: u64,
        partition: u32,
        messages: u32,
        outcome: Result<BatchAck, ClientError>,
    ) {
        let Some(waiter) = self.waiters.get_mut(&id) else {
            debug_assert!(false, "a batch names a send_batch call that is not waiting");
            return;
        };
        match outcome {
            Ok(ack) => waiter.receipts.push(BatchReceipt { partition, messages, ack }),
            Err(error) => waiter.failure.get_or_insert((0, error)).0 += u64::from(messages),
        }
        waiter.remaining -= 1;
        if waiter.remaining > 0 {
            return;
        }
        if let Some(waiter) = self.waiters.remove(&id) {
            let answer = match waiter.failure {
                Some(failure) => Err(failure),
                None => Ok(waiter.receipts),
            };
            let _ = waiter.reply.send(answer);
        }
    }

    /// Answers the flushes whose batches have all settled.
    fn answer_flushes(&mut self) {
        let queues = &self.queues;
        let (done, waiting): (Vec<FlushWaiter>, Vec<FlushWaiter>) =
            std::mem::take(&mut self.flushes).into_iter().partition(|waiter| {
                waiter
                    .targets
                    .iter()
                    .all(|(partition, target)| queues[*partition as usize].settled_total >= *target)
            });
        self.flushes = waiting;
        for waiter in done {
            let _ = waiter.reply.send(self.shared.take_failure());
        }
    }
}

impl Drop for Worker {
    /// Closes the queue's permits when the task ends, normally or by a panic, so a `send`
    /// waiting for room gets [`ProducerError::Closed`] instead of waiting forever.
    fn drop(&mut self) {
        self.permits.close();
    }
}

/// Moves a partition's open batch, if it holds anything, to its sealed list.
fn seal(queue: &mut PartitionQueue) {
    if let Some(batch) = queue.open.take_if(|batch| !batch.is_empty()) {
        queue.sealed.push_back(Sealed { batch, waiter: None });
        queue.sealed_total += 1;
    }
    queue.opened_at = None;
}
