//! The background task of a producer in background mode: drains the handle's queue into one open
//! batch per partition, seals batches when full or lingered, sends each partition's batches with
//! at most one request in flight, and answers flushes.
//!
//! Runs on one tokio task per producer; its state lives there only. Invariants: a partition has
//! at most one request in flight and its batches settle in the order they were sealed; every
//! message accepted is either acknowledged or reported as failed, and its queue permit returns.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::batching::{append, finished, request_len};
use super::delivery::Shared;
use super::{ProducerError, ProducerMessage, BUILDER_POOL_MAX, DRAIN_COMMANDS_MAX};
use crate::client::error::ClientError;
use crate::protocol::batch::BatchBuilder;

/// What the handle sends its background task.
pub(super) enum Command {
    /// One routed message (no vectors for the common single send).
    One { partition: u32, message: ProducerMessage },
    /// Routed messages, `partitions[i]` for `messages[i]`.
    Many { partitions: Vec<u32>, messages: Vec<ProducerMessage> },
    /// Answer once everything queued before is acknowledged.
    Flush(oneshot::Sender<Result<(), ProducerError>>),
}

/// One partition's batches in the background task.
#[derive(Default)]
pub(super) struct PartitionQueue {
    /// The batch being filled.
    open: Option<BatchBuilder>,
    /// When the open batch got its first message.
    opened_at: Option<Instant>,
    /// Full batches waiting to be sent, oldest first.
    sealed: VecDeque<BatchBuilder>,
    /// Whether a request for this partition is out (at most one, for order).
    in_flight: bool,
    /// Batches sealed so far.
    sealed_total: u64,
    /// Batches acknowledged or failed so far (they settle in the order they were sealed).
    settled_total: u64,
}

/// The outcome of one background request.
pub(super) struct Delivered {
    partition: u32,
    batches: Vec<BatchBuilder>,
    messages: u64,
    result: Result<(), ClientError>,
}

/// A flush waiting for batches: it is answered once each listed partition has settled the
/// given number of batches.
pub(super) struct FlushWaiter {
    targets: Vec<(u32, u64)>,
    reply: oneshot::Sender<Result<(), ProducerError>>,
}

pub(super) type Delivery = Pin<Box<dyn Future<Output = Delivered> + Send>>;

/// The background task's state (lives on that task only).
pub(super) struct Worker {
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    queues: Vec<PartitionQueue>,
    pool: Vec<BatchBuilder>,
    deliveries: FuturesUnordered<Delivery>,
    flushes: Vec<FlushWaiter>,
}

impl Worker {
    pub(super) fn new(shared: Arc<Shared>, permits: Arc<Semaphore>) -> Worker {
        Worker {
            shared,
            permits,
            queues: Vec::new(),
            pool: Vec::new(),
            deliveries: FuturesUnordered::new(),
            flushes: Vec::new(),
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

    pub(super) fn handle(&mut self, command: Command) {
        match command {
            Command::One { partition, message } => self.add(partition, &message),
            Command::Many { partitions, messages } => {
                for (partition, message) in partitions.into_iter().zip(&messages) {
                    self.add(partition, message);
                }
            }
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

    /// Puts one routed message into its partition's open batch.
    pub(super) fn add(&mut self, partition: u32, message: &ProducerMessage) {
        let index = partition as usize;
        if self.queues.len() <= index {
            self.queues.resize_with(index + 1, PartitionQueue::default);
        }
        let queue = &mut self.queues[index];
        let (sealed, sealed_total) = (&mut queue.sealed, &mut queue.sealed_total);
        let appended = append(&mut queue.open, message, self.shared.limits, &mut self.pool, |batch| {
            sealed.push_back(batch);
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

    /// When the oldest open batch's linger runs out.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.queues
            .iter()
            .filter(|queue| queue.open.as_ref().is_some_and(|batch| !batch.is_empty()))
            .filter_map(|queue| queue.opened_at)
            .min()
            .and_then(|opened_at| opened_at.checked_add(self.shared.linger))
    }

    pub(super) fn seal_lingered(&mut self, now: Instant) {
        let linger = self.shared.linger;
        for queue in &mut self.queues {
            if queue.opened_at.is_some_and(|opened_at| now.saturating_duration_since(opened_at) >= linger) {
                seal(queue);
            }
        }
    }

    pub(super) fn seal_all(&mut self) {
        self.queues.iter_mut().for_each(seal);
    }

    /// Starts a request for every partition that has sealed batches and none out.
    pub(super) fn dispatch(&mut self) {
        for (index, queue) in self.queues.iter_mut().enumerate() {
            if queue.in_flight || queue.sealed.is_empty() {
                continue;
            }
            let count = request_len(queue.sealed.iter().map(BatchBuilder::byte_len));
            let mut batches: Vec<BatchBuilder> = queue.sealed.drain(..count).collect();
            let messages = batches.iter().map(|batch| u64::from(batch.record_count())).sum();
            queue.in_flight = true;
            let shared = self.shared.clone();
            let partition = index as u32;
            self.deliveries.push(Box::pin(async move {
                let result = match finished(&mut batches) {
                    Ok(slices) => shared.deliver(partition, &slices).await,
                    Err(error) => Err(error),
                };
                Delivered { partition, batches, messages, result }
            }));
        }
    }

    /// Books a finished request: frees its messages' queue room, keeps its failure, and
    /// recycles its buffers.
    pub(super) fn settle(&mut self, delivered: Delivered) {
        let Delivered { partition, batches, messages, result } = delivered;
        let queue = &mut self.queues[partition as usize];
        debug_assert!(queue.in_flight);
        queue.in_flight = false;
        queue.settled_total += batches.len() as u64;
        debug_assert!(queue.settled_total <= queue.sealed_total);
        self.permits.add_permits(usize::try_from(messages).unwrap_or(usize::MAX));
        if let Err(error) = result {
            self.shared.record_failure(partition, messages, error);
        }
        for mut batch in batches {
            if self.pool.len() >= BUILDER_POOL_MAX {
                break;
            }
            batch.reset(0);
            self.pool.push(batch);
        }
    }

    /// Answers the flushes whose batches have all settled.
    pub(super) fn answer_flushes(&mut self) {
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
pub(super) fn seal(queue: &mut PartitionQueue) {
    if let Some(batch) = queue.open.take_if(|batch| !batch.is_empty()) {
        queue.sealed.push_back(batch);
        queue.sealed_total += 1;
    }
    queue.opened_at = None;
}
