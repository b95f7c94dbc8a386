//! [`Subscription`]: one push subscription on one connection — the `Deliver` frames the server
//! sends for it, the credit the client grants, and its end.
//!
//! Runs on the caller's tokio task; the connection's reader task routes the subscription's
//! frames into an unbounded channel, which the server's credit bounds (at most `credit` batches
//! are ever in it, plus one error frame). Invariants: a subscription lives on the connection it
//! was made on and ends with it ([`Subscription::next`] then answers
//! [`ClientError::Disconnected`]; nothing reconnects here, the consumer above resubscribes);
//! every delivery is checked and inflated ([`Polled::new`]) before it is handed out.
//!
//! A durable consumer's push subscription (`SubscribeDurable`) is the same [`Subscription`]
//! underneath; [`super::durable_push`] reads its raw frames ([`Subscription::next_frame`]) and
//! decodes them as fetch answers instead.

use std::sync::Arc;

use tokio::sync::mpsc::UnboundedReceiver;

use super::connection::{Connection, CREDIT_CORRELATION_BIT};
use super::error::ClientError;
use super::wire::{encode_request, Frame, RequestBody};
use super::{Client, Polled};
use crate::protocol::messages::{self, Empty, ErrorBody, Kind, PollResponse, PollStrategy, Status};
use crate::protocol::subscriptions::{
    ConsumerUpdate, ConsumerUpdateAnswer, Credit, Deliver, Subscribe, Unsubscribe,
};

/// One delivery: a partition's batches (inflated when compressed) and how many credits they
/// took.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The batches, as a one-partition poll answer.
    pub polled: Polled,
    /// Batches delivered (the credit they used).
    pub batches: u32,
}

/// What a subscription receives.
#[derive(Debug, Clone)]
pub enum SubscriptionEvent {
    /// Batches of one partition.
    Delivery(Delivery),
    /// A single-active member becomes active or inactive on a partition; answer it with
    /// [`Subscription::answer_update`] (an activated member starts where the answer says).
    Update(ConsumerUpdateRequest),
}

/// A `ConsumerUpdate` from the server, waiting for its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerUpdateRequest {
    /// The partition concerned.
    pub partition: u32,
    /// Active from now on, or no longer.
    pub active: bool,
    correlation: u64,
}

/// A push subscription. See the module documentation.
pub struct Subscription {
    id: u32,
    client: Client,
    connection: Arc<Connection>,
    frames: UnboundedReceiver<Frame>,
    ended: bool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").field("id", &self.id).field("ended", &self.ended).finish()
    }
}

impl Client {
    /// Starts a push subscription (`request.subscription_id` must be unused on this client's
    /// connection). Deliveries begin as soon as the server has data and credit.
    pub async fn subscribe(&self, request: &Subscribe) -> Result<Subscription, ClientError> {
        self.open_subscription(request.subscription_id, Kind::Subscribe, request).await
    }

    /// Sends a request of `kind` that starts subscription `id`, its frames routed to the
    /// returned subscription.
    pub(super) async fn open_subscription<Req: RequestBody>(
        &self,
        id: u32,
        kind: Kind,
        request: &Req,
    ) -> Result<Subscription, ClientError> {
        let connection = self.pinned_connection().await?;
        let frames = connection.register_push(id)?;
        match self.request_on::<_, Empty>(&connection, kind, request).await {
            Ok(_) => Ok(Subscription { id, client: self.clone(), connection, frames, ended: false }),
            Err(error) => {
                connection.forget_push(id);
                Err(error)
            }
        }
    }
}

impl Subscription {
    /// The subscription id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The next delivery or consumer update. An error ends the subscription: the server ended
    /// it (the status says why), a credit was refused, or the connection closed
    /// ([`ClientError::Disconnected`]).
    pub async fn next(&mut self) -> Result<SubscriptionEvent, ClientError> {
        let result = match self.next_frame().await {
            Ok(frame) => event(frame),
            Err(error) => Err(error),
        };
        if result.is_err() {
            self.end();
        }
        result
    }

    /// The next frame pushed for the subscription, with an `Ok` status (an error status is
    /// returned as [`ClientError::Server`] and ends the subscription, as does a closed
    /// connection).
    pub(super) async fn next_frame(&mut self) -> Result<Frame, ClientError> {
        if self.ended {
            return Err(ClientError::Disconnected);
        }
        let Some(frame) = self.frames.recv().await else {
            self.end();
            return Err(ClientError::Disconnected);
        };
        let status = frame.status();
        if status != Status::Ok {
            self.end();
            let message = match messages::decode::<ErrorBody>(frame.body()) {
                Ok(body) => body.message,
                Err(error) => format!("(the error body could not be read: {error})"),
            };
            return Err(ClientError::Server { status, message });
        }
        Ok(frame)
    }

    /// Marks the subscription ended: frames still routed to it are dropped.
    pub(super) fn end(&mut self) {
        self.ended = true;
        self.connection.forget_push(self.id);
    }

    /// Lets the server send `credit` more batches. Not answered on success; a refusal arrives
    /// through [`next`](Self::next).
    pub async fn credit(&self, credit: u32) -> Result<(), ClientError> {
        let body = messages::encode(&Credit { subscription_id: self.id, credit })
            .map_err(|error| ClientError::InvalidRequest(format!("Credit body: {error}")))?;
        let correlation = CREDIT_CORRELATION_BIT | u64::from(self.id);
        self.connection.send(encode_request(Kind::Credit, correlation, &body, &[])?).await
    }

    /// Answers a [`ConsumerUpdateRequest`]: where an activated member starts (ignored on
    /// deactivation, after which the member should have stored its offset).
    pub async fn answer_update(
        &self,
        update: &ConsumerUpdateRequest,
        offset: PollStrategy,
    ) -> Result<(), ClientError> {
        let body = messages::encode(&ConsumerUpdateAnswer { offset })
            .map_err(|error| ClientError::InvalidRequest(format!("ConsumerUpdate answer: {error}")))?;
        self.connection.send(encode_request(Kind::ConsumerUpdate, update.correlation, &body, &[])?).await
    }

    /// Ends the subscription; deliveries already on their way are dropped.
    pub async fn unsubscribe(mut self) -> Result<(), ClientError> {
        self.connection.forget_push(self.id);
        if self.ended {
            return Ok(());
        }
        self.ended = true;
        let request = Unsubscribe { subscription_id: self.id };
        self.client.request_on::<_, Empty>(&self.connection, Kind::Unsubscribe, &request).await.map(|_| ())
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // Without an Unsubscribe the server keeps delivering until its credit runs out or the
        // connection closes; the frames are dropped here.
        self.connection.forget_push(self.id);
    }
}

/// Reads one pushed frame with an `Ok` status: a delivery or a consumer update.
fn event(frame: Frame) -> Result<SubscriptionEvent, ClientError> {
    let kind = frame.header().kind;
    if kind == Kind::ConsumerUpdate as u16 {
        let update = messages::decode::<ConsumerUpdate>(frame.body())
            .map_err(|error| ClientError::Protocol(format!("ConsumerUpdate body: {error}")))?;
        let correlation = frame.header().correlation;
        return Ok(SubscriptionEvent::Update(ConsumerUpdateRequest {
            partition: update.partition,
            active: update.active,
            correlation,
        }));
    }
    if kind != Kind::Deliver as u16 {
        return Err(ClientError::Protocol(format!("a subscription received a frame of kind {kind}")));
    }
    let deliver = messages::decode::<Deliver>(frame.body())
        .map_err(|error| ClientError::Protocol(format!("Deliver body: {error}")))?;
    let payload = frame.into_payload();
    let polled = Polled::new(PollResponse { partitions: vec![deliver.partition] }, payload)?;
    Ok(SubscriptionEvent::Delivery(Delivery { polled, batches: deliver.batches }))
}
