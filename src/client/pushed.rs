//! [`Pushing`]: a consumer's push subscriptions, one per partition on the partition's owner
//! shard, merged into one queue of deliveries for the consumer's fetcher.
//!
//! Runs on the caller's tokio runtime: one small task per subscribed partition reads its
//! [`Subscription`] and forwards each delivery into a bounded channel shared by the partitions.
//! Credit follows consumption, the Java client's "credit on chunk arrival": a task grants a
//! delivery's credits back once the delivery is in the channel, and the channel holds at most
//! `initial_credit` deliveries, so a consumer that stops taking messages stops the credit and
//! with it the server. Memory is bounded by the credit.
//!
//! Invariants: each partition has at most one live subscription; a partition whose subscription
//! ended (error, disconnect, a batch the consumer refused) is subscribed again on the next
//! [`Pushing::ensure`], from the position the consumer gives; a stopped task unsubscribes
//! (dropping the consumer stops every task).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::error::ClientError;
use super::router::ShardRouter;
use super::subscription::Subscription;
use super::Polled;
use crate::protocol::messages::PollStrategy;
use crate::protocol::subscriptions::Subscribe;

/// Default initial credit of a subscribing consumer (batches in flight per partition), the
/// Java client's default.
pub const INITIAL_CREDIT_DEFAULT: u32 = 10;

/// Subscription ids, unique in the process (so unique on every connection).
static SUBSCRIPTION_IDS: AtomicU32 = AtomicU32::new(1);

/// What a partition's task hands the fetcher.
type Pushed = (u32, Result<Polled, ClientError>);

/// A consumer's subscriptions. See the module documentation.
pub(super) struct Pushing {
    initial_credit: u32,
    sender: mpsc::Sender<Pushed>,
    deliveries: mpsc::Receiver<Pushed>,
    /// Live partition tasks, each with its stop signal (flipped to `true`, the task
    /// unsubscribes and ends).
    running: BTreeMap<u32, (JoinHandle<()>, watch::Sender<bool>)>,
}

impl Pushing {
    pub(super) fn new(initial_credit: u32) -> Pushing {
        let (sender, deliveries) = mpsc::channel(initial_credit.max(1) as usize);
        Pushing { initial_credit, sender, deliveries, running: BTreeMap::new() }
    }

    /// Subscribes every partition in `partitions` that has no live subscription, starting at
    /// `start(partition)`.
    pub(super) async fn ensure(
        &mut self,
        router: &ShardRouter,
        target: (&str, &str, &str),
        partitions: &[u32],
        start: impl Fn(u32) -> PollStrategy,
    ) -> Result<(), ClientError> {
        let (stream, topic, consumer) = target;
        self.running.retain(|_, (task, _)| !task.is_finished());
        for &partition in partitions {
            if self.running.contains_key(&partition) {
                continue;
            }
            let client = router.client_for(stream, topic, partition).await?;
            let request = Subscribe {
                subscription_id: SUBSCRIPTION_IDS.fetch_add(1, Ordering::Relaxed),
                stream: stream.to_string(),
                topic: topic.to_string(),
                partition: Some(partition),
                offset: start(partition),
                credit: self.initial_credit,
                consumer: consumer.to_string(),
                single_active: false,
            };
            let subscription = client.subscribe(&request).await?;
            let stop = watch::Sender::new(false);
            let task = forward(partition, subscription, self.sender.clone(), stop.subscribe());
            self.running.insert(partition, (tokio::spawn(task), stop));
        }
        Ok(())
    }

    /// The next delivery of any partition, or `None` after `wait`.
    pub(super) async fn next(&mut self, wait: Duration) -> Option<Pushed> {
        tokio::time::timeout(wait, self.deliveries.recv()).await.ok().flatten()
    }

    /// Ends `partition`'s subscription; the next [`ensure`](Self::ensure) makes a new one.
    pub(super) fn restart(&mut self, partition: u32) {
        if let Some((_, stop)) = self.running.remove(&partition) {
            stop.send_replace(true);
        }
    }
}

impl Drop for Pushing {
    fn drop(&mut self) {
        for (_, stop) in self.running.values() {
            stop.send_replace(true);
        }
    }
}

/// Forwards one subscription's deliveries, granting each one's credit back once it is queued;
/// ends (unsubscribing) when the consumer stops or the subscription fails.
async fn forward(
    partition: u32,
    mut subscription: Subscription,
    sender: mpsc::Sender<Pushed>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let next = tokio::select! {
            next = subscription.next() => next,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        match next {
            Ok(delivery) => {
                let credit = delivery.batches;
                let queued = tokio::select! {
                    queued = sender.send((partition, Ok(delivery.polled))) => queued.is_ok(),
                    _ = stop.wait_for(|stop| *stop) => false,
                };
                if !queued {
                    break;
                }
                if let Err(error) = subscription.credit(credit).await {
                    let _ = sender.send((partition, Err(error))).await;
                    return;
                }
            }
            Err(error) => {
                let _ = sender.send((partition, Err(error))).await;
                return;
            }
        }
    }
    if let Err(error) = subscription.unsubscribe().await {
        tracing::debug!(partition, %error, "unsubscribing failed");
    }
}
