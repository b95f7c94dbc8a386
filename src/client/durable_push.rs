//! [`DurableSubscription`]: push delivery for a durable consumer (`SubscribeDurable`,
//! `docs/protocol.md` §6c), handing out [`FetchedMessage`]s one by one and acknowledging them
//! with [`Client::ack`].
//!
//! Runs on the caller's tokio task, over one [`Subscription`] on the client's connection (the
//! server fetches on every subscribed partition's owner shard for it). Credit counts messages:
//! the server sends at most the credit granted and, independently, stops new deliveries at the
//! consumer's `max_ack_pending` until acknowledgements arrive (redeliveries still come).
//! Credit follows consumption: a message handed out by [`DurableSubscription::next`] is owed
//! back, and owed credit is granted (in steps of half the initial credit, at least one) before
//! the next wait for the server, so at most `credit` messages are ever buffered here.
//!
//! Invariants: messages are handed out in the order of the server's deliveries (per delivery:
//! redeliveries first); every delivery is decoded by [`Fetched::new`] (a listed offset without
//! its record is a protocol error); after an error (the server ended the subscription, the
//! connection closed) the messages already received are still handed out, then `next` answers
//! `None`. Nothing reconnects here: a new subscription resumes where the consumer's acks left
//! it, and whatever was delivered and not acknowledged comes again after `ack_wait`.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::connection::Client;
use super::durable::{Fetched, FetchedMessage};
use super::error::ClientError;
use super::pushed::SUBSCRIPTION_IDS;
use super::subscription::Subscription;
use super::wire::Frame;
use crate::protocol::durable::{AckKind, AckResponse, FetchResponse};
use crate::protocol::messages::{self, Kind};
use crate::protocol::subscriptions::{Deliver, SubscribeDurable};

/// A durable consumer's push subscription. See the module documentation. Dropped without
/// [`unsubscribe`](Self::unsubscribe), the server keeps pushing up to the credit left until the
/// connection closes; what it pushed comes again after `ack_wait`.
pub struct DurableSubscription {
    subscription: Subscription,
    client: Client,
    stream: String,
    topic: String,
    consumer: String,
    /// Received and not handed out yet.
    buffered: VecDeque<FetchedMessage>,
    /// Handed out and not credited back yet.
    owed: u32,
    /// Owed credit is granted back once it reaches this.
    credit_step: u32,
    /// The error that ended the subscription, handed out after the buffered messages.
    failed: Option<ClientError>,
    ended: bool,
}

impl std::fmt::Debug for DurableSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableSubscription")
            .field("id", &self.subscription.id())
            .field("consumer", &self.consumer)
            .field("buffered", &self.buffered.len())
            .field("ended", &self.ended)
            .finish()
    }
}

impl Client {
    /// Starts push delivery for the durable consumer `consumer` of a topic, on one partition or
    /// (`None`) every partition, with `credit` messages in flight at most (0: none until
    /// [`DurableSubscription::credit`]). An unknown consumer is refused with
    /// `UnknownConsumer`.
    pub async fn subscribe_durable(
        &self,
        stream: &str,
        topic: &str,
        consumer: &str,
        partition: Option<u32>,
        credit: u32,
    ) -> Result<DurableSubscription, ClientError> {
        let request = SubscribeDurable {
            subscription_id: SUBSCRIPTION_IDS.fetch_add(1, Ordering::Relaxed),
            stream: stream.to_string(),
            topic: topic.to_string(),
            partition,
            consumer: consumer.to_string(),
            credit,
        };
        let subscription =
            self.open_subscription(request.subscription_id, Kind::SubscribeDurable, &request).await?;
        Ok(DurableSubscription {
            subscription,
            client: self.clone(),
            stream: request.stream,
            topic: request.topic,
            consumer: request.consumer,
            buffered: VecDeque::new(),
            owed: 0,
            credit_step: credit.div_ceil(2).max(1),
            failed: None,
            ended: false,
        })
    }
}

impl DurableSubscription {
    /// The subscription id.
    pub fn id(&self) -> u32 {
        self.subscription.id()
    }

    /// The next message, waiting for the server as long as it takes (wrap it in a timeout to
    /// bound the wait; cancelling loses nothing). `Some(Err)` once when the subscription ends
    /// (the server ended it, or the connection closed), `None` after that.
    pub async fn next(&mut self) -> Option<Result<FetchedMessage, ClientError>> {
        loop {
            if let Some(message) = self.buffered.pop_front() {
                self.owed += 1;
                return Some(Ok(message));
            }
            if let Some(error) = self.failed.take() {
                return Some(Err(error));
            }
            if self.ended {
                return None;
            }
            if self.owed >= self.credit_step {
                let owed = self.owed;
                if let Err(error) = self.subscription.credit(owed).await {
                    self.end();
                    return Some(Err(error));
                }
                self.owed -= owed;
            }
            let decoded = match self.subscription.next_frame().await {
                Ok(frame) => decode(frame),
                Err(error) => Err(error),
            };
            match decoded {
                Ok(fetched) => self.buffered.extend(fetched.messages),
                Err(error) => {
                    self.end();
                    self.failed = Some(error);
                }
            }
        }
    }

    /// Lets the server send `credit` more messages (on top of what [`next`](Self::next) grants
    /// back by itself). A refusal arrives through `next`.
    pub async fn credit(&self, credit: u32) -> Result<(), ClientError> {
        self.subscription.credit(credit).await
    }

    /// Acknowledges `message` (processed).
    pub async fn ack(&self, message: &FetchedMessage) -> Result<AckResponse, ClientError> {
        self.acknowledge(message, AckKind::Ack).await
    }

    /// Asks for `message` again after `delay` (zero: at once, or the consumer's backoff).
    pub async fn nak(&self, message: &FetchedMessage, delay: Duration) -> Result<AckResponse, ClientError> {
        let delay_us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.acknowledge(message, AckKind::Nak(delay_us)).await
    }

    /// Never delivers `message` again.
    pub async fn term(&self, message: &FetchedMessage) -> Result<AckResponse, ClientError> {
        self.acknowledge(message, AckKind::Term).await
    }

    /// Restarts `message`'s ack timer (still working on it).
    pub async fn in_progress(&self, message: &FetchedMessage) -> Result<AckResponse, ClientError> {
        self.acknowledge(message, AckKind::InProgress).await
    }

    /// Sends `kind` for `message` on its partition.
    pub async fn acknowledge(
        &self,
        message: &FetchedMessage,
        kind: AckKind,
    ) -> Result<AckResponse, ClientError> {
        self.client
            .ack(
                &self.stream,
                &self.topic,
                message.partition,
                &self.consumer,
                kind,
                vec![message.offset],
                false,
            )
            .await
    }

    /// Ends the subscription. Messages delivered and not acknowledged come again after the
    /// consumer's `ack_wait` (to this consumer's next fetch or subscription).
    pub async fn unsubscribe(self) -> Result<(), ClientError> {
        self.subscription.unsubscribe().await
    }

    fn end(&mut self) {
        self.ended = true;
        self.subscription.end();
    }
}

/// Decodes one pushed frame of a durable subscription into its messages.
fn decode(frame: Frame) -> Result<Fetched, ClientError> {
    let kind = frame.header().kind;
    if kind != Kind::Deliver as u16 {
        return Err(ClientError::Protocol(format!("a durable subscription received a frame of kind {kind}")));
    }
    let deliver = messages::decode::<Deliver>(frame.body())
        .map_err(|error| ClientError::Protocol(format!("Deliver body: {error}")))?;
    let response = FetchResponse {
        partition: deliver.partition.partition,
        messages: deliver.messages,
        num_pending: deliver.num_pending,
        ack_pending: deliver.ack_pending,
    };
    Fetched::new(response, &frame.into_payload())
}
