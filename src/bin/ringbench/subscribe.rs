//! Push-subscription consumers (`--subscribe [CREDITS]`): the partition consumers of
//! `pinned-consumer`, `pinned-producer-and-consumer` and `end-to-end` read by subscription
//! instead of by long poll.
//!
//! What it owns: the loop of one subscribing consumer. Consumer i subscribes to partition i from
//! offset 0 on the client module `actors` routed to the partition's owner shard (its direct
//! port, as the poll consumers use), with `CREDITS` batches of initial credit, and grants credit
//! on arrival: after each delivery, exactly the batches it carried
//! (`credit(delivery.batches)`), before reading its records.
//!
//! Which thread: the consumer actor's own OS thread and current-thread tokio runtime, started by
//! module `actors`; it subscribes after the phase's barrier, so nothing is delivered before the
//! measurement starts.
//!
//! Measurement, as for the poll consumers: messages and bytes of deliveries that arrive after
//! the warm-up; with send stamps (end-to-end), one latency sample per message, receive time
//! minus stamped send time. Without stamps there is no request to time, so the sample per
//! delivery is how long the consumer waited for it in `Subscription::next` (the poll consumers
//! record each poll's round trip instead).
//!
//! Invariants: the server never holds more than `CREDITS` batches of credit for the
//! subscription; deliveries follow each other without gap or overlap (checked: either fails the
//! run); the loop ends by the poll consumer's rules (stop flag; caught up with the partition's end
//! read after every producer finished; deadline once producers are done; an error after
//! [`IDLE_TIMEOUT`] without data), looking at them at least every [`CHECK_INTERVAL`]; the
//! subscription is ended with `Unsubscribe`.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ringbroker::client::{Client, Subscription, SubscriptionEvent};
use ringbroker::model::now_us;
use ringbroker::protocol::messages::{ConsumerRef, PollStrategy};
use ringbroker::protocol::subscriptions::{Subscribe, SUBSCRIPTION_CREDIT_MAX};

use crate::actors::{deadline_of, micros, new_result, record_stamps, Shared, IDLE_TIMEOUT};
use crate::report::{self, ActorResult, Role};
use crate::{Settings, Workload, TOPIC};

/// Initial credit of `--subscribe` given without a value (the Java client's default).
pub const CREDITS_DEFAULT: &str = "10";
/// Longest a consumer waits for a delivery before it looks at its end conditions again.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Refuses `--subscribe` for workloads without partition consumers.
pub fn check(workload: Workload, settings: &Settings) -> Result<(), String> {
    let partition_consumers = matches!(
        workload,
        Workload::PinnedConsumer | Workload::PinnedProducerAndConsumer | Workload::EndToEnd
    );
    if settings.subscribe_credits.is_some() && !partition_consumers {
        return Err(format!(
            "--subscribe needs partition consumers (pinned-consumer, pinned-producer-and-consumer or end-to-end), not {}",
            workload.name()
        ));
    }
    Ok(())
}

/// Parses the credit of `--subscribe`: 1 ..= the most a subscription may hold.
pub fn parse_credits(text: &str) -> Result<u32, String> {
    let credits: u32 = text.parse().map_err(|_| format!("{text:?} is not a whole number"))?;
    if credits == 0 || credits > SUBSCRIPTION_CREDIT_MAX {
        return Err(format!("credit {credits} is not between 1 and {SUBSCRIPTION_CREDIT_MAX}"));
    }
    Ok(credits)
}

/// One subscribing consumer: what it reads and with how much credit.
pub struct Plan<'a> {
    pub id: u32,
    pub stream: &'a str,
    pub partition: u32,
    /// Payloads carry send stamps (end-to-end).
    pub stamp: bool,
    pub credits: u32,
}

/// Reads `plan.partition` by push subscription until the run ends.
pub async fn consume_partition(
    shared: &Shared,
    client: &Client,
    plan: &Plan<'_>,
) -> Result<ActorResult, String> {
    let id = plan.id;
    let request = Subscribe {
        subscription_id: id + 1,
        stream: plan.stream.to_string(),
        topic: TOPIC.to_string(),
        partition: Some(plan.partition),
        offset: PollStrategy::Offset(0),
        credit: plan.credits,
        consumer: format!("bench-{id}"),
        single_active: false,
        filter: Vec::new(),
        match_unfiltered: false,
    };
    let started = Instant::now();
    let mut subscription =
        client.subscribe(&request).await.map_err(|error| format!("consumer {id}: subscribe: {error}"))?;
    let mut result = receive(shared, client, plan, &mut subscription, started).await;
    if let Ok(result) = &mut result {
        result.finished_at = Instant::now();
    }
    let unsubscribed = subscription.unsubscribe().await;
    let result = result?;
    unsubscribed.map_err(|error| format!("consumer {id}: unsubscribe: {error}"))?;
    Ok(result)
}

/// The delivery loop of [`consume_partition`].
async fn receive(
    shared: &Shared,
    client: &Client,
    plan: &Plan<'_>,
    subscription: &mut Subscription,
    started: Instant,
) -> Result<ActorResult, String> {
    let (id, partition) = (plan.id, plan.partition);
    let settings = &shared.settings;
    let measured_from = started + settings.warmup;
    let deadline = deadline_of(settings, started);
    let mut result = new_result(Role::Consumer, id, measured_from)?;
    let (mut next, mut high_watermark) = (0_u64, 0_u64);
    let mut progress_at = started;
    // When the consumer began waiting for its next delivery (kept across CHECK_INTERVAL wakes).
    let mut waiting_since = None;
    // Set once the partition's end was read after every producer had finished: it is final.
    let mut settled = false;
    loop {
        let producers_done = shared.producers_done();
        if shared.stop.load(Ordering::Relaxed)
            || (settled && next >= high_watermark)
            || deadline.is_some_and(|deadline| producers_done && Instant::now() >= deadline)
        {
            return Ok(result);
        }
        if progress_at.elapsed() > IDLE_TIMEOUT {
            return Err(format!(
                "consumer {id}: no delivery for {} s at offset {next} of {}/{TOPIC} partition {partition}",
                IDLE_TIMEOUT.as_secs(),
                plan.stream
            ));
        }
        if producers_done && !settled {
            let consumer = ConsumerRef::Named(format!("bench-{id}"));
            let info = client
                .get_offset(plan.stream, TOPIC, partition, consumer)
                .await
                .map_err(|error| format!("consumer {id}: reading the partition's end: {error}"))?;
            high_watermark = high_watermark.max(info.high_watermark);
            settled = true;
            continue;
        }
        let waited_from = *waiting_since.get_or_insert_with(Instant::now);
        let event = match tokio::time::timeout(CHECK_INTERVAL, subscription.next()).await {
            Err(_) => continue,
            Ok(event) => event.map_err(|error| format!("consumer {id}: subscription: {error}"))?,
        };
        let arrived_at = Instant::now();
        let received_us = now_us();
        waiting_since = None;
        let SubscriptionEvent::Delivery(delivery) = event else {
            return Err(format!(
                "consumer {id}: a consumer update for a subscription that is not single-active"
            ));
        };
        // Credit on arrival: the batches this delivery used, before its records are read.
        subscription
            .credit(delivery.batches)
            .await
            .map_err(|error| format!("consumer {id}: credit: {error}"))?;
        let info = delivery
            .polled
            .response
            .partitions
            .iter()
            .find(|info| info.partition == partition)
            .ok_or_else(|| format!("consumer {id}: a delivery without partition {partition}"))?;
        if info.start_offset != next {
            return Err(format!(
                "consumer {id}: a delivery starts at offset {} where {next} was next",
                info.start_offset
            ));
        }
        high_watermark = high_watermark.max(info.high_watermark);
        let count = info.next_offset.saturating_sub(info.start_offset);
        next = info.next_offset.max(next);
        if count == 0 {
            continue;
        }
        progress_at = arrived_at;
        if arrived_at < measured_from {
            continue;
        }
        if plan.stamp {
            record_stamps(&mut result, &delivery.polled, received_us, id)?;
        } else {
            report::record(&mut result.latency, micros(arrived_at - waited_from));
        }
        result.messages += count;
        result.bytes += count * u64::from(settings.message_size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credits_are_bounded() {
        assert_eq!(parse_credits(CREDITS_DEFAULT), Ok(10));
        assert_eq!(parse_credits("1"), Ok(1));
        assert!(parse_credits("0").is_err());
        assert!(parse_credits(&(SUBSCRIPTION_CREDIT_MAX + 1).to_string()).is_err());
        assert!(parse_credits("ten").is_err());
    }
}
