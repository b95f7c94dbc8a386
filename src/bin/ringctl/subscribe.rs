//! `ringctl consume --subscribe` and `--single-active NAME`: reading by push subscription.
//!
//! Runs on `ringctl`'s current-thread runtime. The subscription is made on the connection
//! `ringctl` already holds (the broker forwards to the partition's owner); credit is granted back
//! for each delivery once it is printed, so a slow terminal slows the broker down. A
//! single-active member prints nothing until it is activated; on activation it starts at the
//! name's stored offset (otherwise `--from`), and before stepping down it stores what it printed
//! when `--commit` is on. Invariants: with `--commit` the stored offset never passes what was
//! printed; without `--follow` the run ends once no delivery came for [`QUIET_END`].

use std::io::Write;
use std::time::Duration;

use ringbroker::client::{Client, SubscriptionEvent};
use ringbroker::protocol::messages::{ConsumerRef, PollStrategy};
use ringbroker::protocol::subscriptions::Subscribe;

use super::{CliResult, ConsumeArgs, Printer};

/// Without `--follow`, a subscription that delivered nothing for this long has reached the end.
pub(super) const QUIET_END: Duration = Duration::from_secs(1);

/// Subscription id of `ringctl`'s one subscription.
const SUBSCRIPTION_ID: u32 = 1;

/// Reads by subscription until `--count`, the end (without `--follow`) or Ctrl-C.
pub(super) async fn consume_subscribed<W: Write>(
    client: &Client,
    args: &ConsumeArgs,
    printer: &mut Printer<W>,
    stop: &mut std::pin::Pin<&mut impl std::future::Future<Output = std::io::Result<()>>>,
) -> CliResult {
    let single_active = args.single_active.is_some();
    let consumer = args.single_active.clone().unwrap_or_else(|| args.consumer.clone());
    // A single-active member without --partition joins the group of the whole topic.
    let partition = match (args.partition, single_active) {
        (Some(partition), _) => Some(partition),
        (None, true) => None,
        (None, false) => Some(0),
    };
    let request = Subscribe {
        subscription_id: SUBSCRIPTION_ID,
        stream: args.stream.clone(),
        topic: args.topic.clone(),
        partition,
        offset: args.from,
        credit: args.credits,
        consumer: consumer.clone(),
        single_active,
        filter: args.filter.clone(),
        match_unfiltered: args.match_unfiltered,
    };
    let mut subscription = client.subscribe(&request).await?;
    let mut printed_to = std::collections::BTreeMap::<u32, u64>::new();
    let wait = if args.follow || single_active { None } else { Some(QUIET_END) };
    loop {
        let next = async {
            match wait {
                Some(wait) => tokio::time::timeout(wait, subscription.next()).await.ok(),
                None => Some(subscription.next().await),
            }
        };
        let event = tokio::select! {
            event = next => event,
            _ = stop.as_mut() => break,
        };
        let Some(event) = event else { break };
        match event? {
            SubscriptionEvent::Delivery(delivery) => {
                let printed = printer.print(&delivery.polled)?;
                if args.commit {
                    for (&partition, &next) in &printed {
                        let owner = ConsumerRef::Named(consumer.clone());
                        client.store_offset(&args.stream, &args.topic, partition, owner, next).await?;
                    }
                }
                printed_to.extend(printed);
                if printer.done {
                    break;
                }
                subscription.credit(delivery.batches).await?;
            }
            SubscriptionEvent::Update(update) => {
                eprintln!(
                    "ringctl: {} on partition {}",
                    if update.active { "active" } else { "inactive" },
                    update.partition
                );
                let owner = ConsumerRef::Named(consumer.clone());
                let offset = if update.active {
                    let stored =
                        client.get_offset(&args.stream, &args.topic, update.partition, owner).await?;
                    stored.stored.map_or(args.from, PollStrategy::Offset)
                } else {
                    PollStrategy::Next
                };
                subscription.answer_update(&update, offset).await?;
            }
        }
    }
    subscription.unsubscribe().await?;
    Ok(())
}
