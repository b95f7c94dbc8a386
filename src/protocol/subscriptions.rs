//! The bodies of push subscriptions: `Subscribe`, `SubscribeDurable`, `Credit`, `Unsubscribe`,
//! the server's `Deliver` frames, and the single-active-consumer `ConsumerUpdate` exchange (kinds
//! 80–85 in [`Kind`](super::messages::Kind)).
//!
//! Plain data, no I/O; encoded with rkyv like every other body. Invariants the server checks
//! (not the types): a subscription id is unique on its connection; credit never exceeds
//! [`SUBSCRIPTION_CREDIT_MAX`]. On a plain subscription credit counts whole batches; a `Deliver`
//! carries whole batches of one partition, at most one per credit, and its marks follow the
//! previous delivery's of the same partition without a gap (skipped batches still move the
//! marks). On a durable subscription credit counts messages; a `Deliver` lists at most one
//! message per credit in `messages` (redeliveries first, as a fetch answers), with the batches
//! that hold them, and the consumer's `max_ack_pending` bounds new deliveries on top of credit.

use rkyv::{Archive, Deserialize, Serialize};

use super::durable::Delivered;
use super::messages::{PollStrategy, PolledPartition};

/// Most credit one subscription may hold (batches the server may send without another
/// `Credit`).
pub const SUBSCRIPTION_CREDIT_MAX: u32 = 1 << 20;

/// [`Kind::Subscribe`](super::messages::Kind::Subscribe): start receiving a topic's batches.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Chosen by the client; names the subscription in `Credit`, `Unsubscribe` and `Deliver`.
    pub subscription_id: u32,
    /// Stream name.
    pub stream: String,
    /// Topic name.
    pub topic: String,
    /// One partition, or `None` for every partition of the topic (a super stream).
    pub partition: Option<u32>,
    /// Where to start, on every subscribed partition (`Next` reads the consumer's stored
    /// offset).
    pub offset: PollStrategy,
    /// Batches the server may send before the client grants more.
    pub credit: u32,
    /// The consumer's name: the key of its stored offsets (and, with `single_active`, of its
    /// group).
    pub consumer: String,
    /// Join the single-active-consumer group of `consumer` on each subscribed partition.
    pub single_active: bool,
    /// Deliver only batches that may hold one of these filter values (empty: everything), as a
    /// filtered poll does (`docs/protocol.md` §9a); the client filters records exactly.
    pub filter: Vec<String>,
    /// With `filter`: also deliver messages without a filter value.
    pub match_unfiltered: bool,
}

/// [`Kind::SubscribeDurable`](super::messages::Kind::SubscribeDurable): push delivery for a
/// durable consumer (`docs/protocol.md` §6c). The consumer's own configuration governs what is
/// delivered and from where (deliver policy, filter, acks, redelivery, `max_ack_pending`); the
/// messages come as a `Fetch` would answer them. `Credit` and `Unsubscribe` work as on a plain
/// subscription, except that **one credit is one message**.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct SubscribeDurable {
    /// Chosen by the client; names the subscription in `Credit`, `Unsubscribe` and `Deliver`.
    pub subscription_id: u32,
    /// Stream name.
    pub stream: String,
    /// Topic name.
    pub topic: String,
    /// One partition, or `None` for every partition of the topic.
    pub partition: Option<u32>,
    /// The durable consumer's name (it must exist: `UnknownConsumer` otherwise).
    pub consumer: String,
    /// Messages the server may send before the client grants more.
    pub credit: u32,
}

/// [`Kind::Credit`](super::messages::Kind::Credit): lets the server send `credit` more batches
/// (messages, on a durable subscription).
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credit {
    /// The subscription.
    pub subscription_id: u32,
    /// Batches added.
    pub credit: u32,
}

/// [`Kind::Unsubscribe`](super::messages::Kind::Unsubscribe): ends a subscription.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsubscribe {
    /// The subscription.
    pub subscription_id: u32,
}

/// [`Kind::Deliver`](super::messages::Kind::Deliver): the body of a server push; the payload
/// holds `partition.payload_bytes` bytes of whole batches.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Deliver {
    /// The subscription.
    pub subscription_id: u32,
    /// The partition's marks, as a poll answers them: records below `start_offset` in the
    /// first batch and from `next_offset` on are not part of the delivery. `start_offset` is
    /// the previous delivery's `next_offset`, so batches a filter skipped in between are covered.
    pub partition: PolledPartition,
    /// Batches in the payload (on a plain subscription each took one credit).
    pub batches: u32,
    /// Durable subscriptions: the delivered messages, in delivery order (redeliveries first),
    /// each of which took one credit; records of the batches not listed here are not delivered.
    /// `partition` then names the partition, `payload_bytes` the payload, `start_offset` the
    /// lowest listed offset and `next_offset` one past the highest; its other marks are 0. Empty
    /// on plain subscriptions.
    pub messages: Vec<Delivered>,
    /// Durable subscriptions: wanted messages left on the partition after these (as
    /// [`FetchResponse::num_pending`](super::durable::FetchResponse::num_pending)); 0 otherwise.
    pub num_pending: u64,
    /// Durable subscriptions: delivered and unacknowledged messages on the partition, these
    /// included; 0 otherwise.
    pub ack_pending: u64,
}

/// [`Kind::ConsumerUpdate`](super::messages::Kind::ConsumerUpdate), server → client: the
/// member's subscription becomes active (it should say where to start) or inactive on a
/// partition.
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct ConsumerUpdate {
    /// The subscription.
    pub subscription_id: u32,
    /// The partition concerned.
    pub partition: u32,
    /// Active from now on (`true`), or no longer (`false`).
    pub active: bool,
}

/// The client's answer to a [`ConsumerUpdate`].
#[derive(Archive, Serialize, Deserialize, serde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct ConsumerUpdateAnswer {
    /// Where an activated member starts (ignored on deactivation).
    pub offset: PollStrategy,
}
