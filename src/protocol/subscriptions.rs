//! The bodies of push subscriptions: `Subscribe`, `Credit`, `Unsubscribe`, the server's `Deliver`
//! frames, and the single-active-consumer `ConsumerUpdate` exchange (kinds 80–84 in
//! [`Kind`](super::messages::Kind)).
//!
//! Plain data, no I/O; encoded with rkyv like every other body. Invariants the server checks
//! (not the types): a subscription id is unique on its connection; credit counts whole batches
//! and never exceeds [`SUBSCRIPTION_CREDIT_MAX`]; a `Deliver` carries whole batches of one
//! partition, at most one per credit, and its marks follow the previous delivery's of the same
//! partition without a gap (skipped batches, once filters exist, still move the marks).

use rkyv::{Archive, Deserialize, Serialize};

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

/// [`Kind::Credit`](super::messages::Kind::Credit): lets the server send `credit` more batches.
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
    /// Batches in the payload (each took one credit).
    pub batches: u32,
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
