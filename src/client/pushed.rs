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

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::error::ClientError;
use super::router::ShardRouter;
use super::subscription::{ConsumerUpdateRequest, Subscription, SubscriptionEvent};
use super::Polled;
use crate::protocol::messages::PollStrategy;
use crate::protocol::subscriptions::Subscribe;

/// Default initial credit of a subscribing consumer (batches in flight per partition), the
/// Java client's default.
pub const INITIAL_CREDIT_DEFAULT: u32 = 10;

/// Subscription ids, unique in the process (so unique on every connection).
pub(super) static SUBSCRIPTION_IDS: AtomicU32 = AtomicU32::new(1);

/// What a subscription's task hands the fetcher: its key (the partition, or [`WHOLE_TOPIC`])
/// and a delivery, a consumer update to answer, or why it ended.
pub(super) type Pushed = (u32, Result<Item, ClientError>);

/// The task key of a subscription to every partition at once (a super-stream single-active
/// member).
pub(super) const WHOLE_TOPIC: u32 = u32::MAX;

/// One thing a subscription received.
pub(super) enum Item {
    /// Batches of one partition.
    Polled(Polled),
    /// A single-active update; the fetcher sends back where to start.
    Update(ConsumerUpdateRequest, oneshot::Sender<PollStrategy>),
}

/// A consumer's subscriptions. See the module documentation.
pub(super) struct Pushing {
    initial_credit: u32,
    /// Subscribe as a single-active member.
    single_active: bool,
    /// Filter values asked of the broker (empty: none) and whether unfiltered messages match.
    filter: (Vec<String>, bool),
    /// One subscription for every partition (a single-active super-stream member) instead of
    /// one per partition.
    whole_topic: bool,
    sender: mpsc::Sender<Pushed>,
    deliveries: mpsc::Receiver<Pushed>,
    /// Live partition tasks, each with its stop signal (flipped to `true`, the task
    /// unsubscribes and ends).
    running: BTreeMap<u32, (JoinHandle<()>, watch::Sender<bool>)>,
}

impl Pushing {
    pub(super) fn new(
        initial_credit: u32,
        single_active: bool,
        whole_topic: bool,
        filter: (Vec<String>, bool),
    ) -> Pushing {
        let (sender, deliveries) = mpsc::channel(initial_credit.max(1) as usize);
        Pushing {
            initial_credit,
            single_active,
            filter,
            whole_topic,
            sender,
            deliveries,
            running: BTreeMap::new(),
        }
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
        let keys: Vec<u32> = if self.whole_topic { vec![WHOLE_TOPIC] } else { partitions.to_vec() };
        for key in keys {
            if self.running.contains_key(&key) {
                continue;
            }
            let (client, partition) = match key {
                WHOLE_TOPIC => (router.base().clone(), None),
                partition => (router.client_for(stream, topic, partition).await?, Some(partition)),
            };
            let request = Subscribe {
                subscription_id: SUBSCRIPTION_IDS.fetch_add(1, Ordering::Relaxed),
                stream: stream.to_string(),
                topic: topic.to_string(),
                partition,
                // A single-active member starts where its answer to the activation says.
                offset: partition.map_or(PollStrategy::Next, &start),
                credit: self.initial_credit,
                consumer: consumer.to_string(),
                single_active: self.single_active,
                filter: self.filter.0.clone(),
                match_unfiltered: self.filter.1,
            };
            let subscription = client.subscribe(&request).await?;
            let stop = watch::Sender::new(false);
            let task = forward(key, subscription, self.sender.clone(), stop.subscribe());
            self.running.insert(key, (tokio::spawn(task), stop));
        }
        Ok(())
    }

    /// The next delivery of any partition, or `None` after `wait`.
    pub(super) async fn next(&mut self, wait: Duration) -> Option<Pushed> {
        tokio::time::timeout(wait, self.deliveries.recv()).await.ok().flatten()
    }

    /// Ends `partition`'s subscription; the next [`ensure`](Self::ensure) makes a new one.
    pub(super) fn restart(&mut self, partition: u32) {
        let key = if self.whole_topic { WHOLE_TOPIC } else { partition };
        if let Some((_, stop)) = self.running.remove(&key) {
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
            Ok(SubscriptionEvent::Delivery(delivery)) => {
                let credit = delivery.batches;
                let queued = tokio::select! {
                    queued = sender.send((partition, Ok(Item::Polled(delivery.polled)))) => queued.is_ok(),
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
            Ok(SubscriptionEvent::Update(update)) => {
                let (answer, answered) = oneshot::channel();
                if sender.send((partition, Ok(Item::Update(update, answer)))).await.is_err() {
                    break;
                }
                // Without an answer (the consumer went away) the server times the member out.
                let Ok(offset) = answered.await else { break };
                if let Err(error) = subscription.answer_update(&update, offset).await {
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
