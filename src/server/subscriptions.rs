//! Push subscriptions: `Subscribe`, `SubscribeDurable`, `Credit` and `Unsubscribe`, and the
//! pumps that turn a subscription into `Deliver` frames.
//!
//! What it owns: [`Push`], one per connection (its subscriptions, the bytes of deliveries queued
//! and not yet written, and the sender into the connection's writer), and the pump tasks. A pump
//! is a standing poll (DESIGN §7, "push is pull done by the broker"): while its subscription has
//! credit and the connection's queue has room, it polls its partition through the same path as
//! `Poll` (owner shard, batch cache, read-ahead, planned reads, the read buffers themselves as payload
//! parts, so nothing is copied on this shard) and queues what it got as one `Deliver`.
//!
//! A durable subscription's pump is a standing `Fetch` instead: while it has credit (messages,
//! not batches) and room, it fetches for the durable consumer on its partition's owner shard (the
//! same [`DurableOp::Fetch`] as a pull, so redeliveries come first and `max_ack_pending` holds
//! back new messages until acks arrive) with `max_messages` = its credit and an expiry of
//! [`PUMP_WAIT`], and queues each non-empty answer as one `Deliver` listing the messages.
//!
//! Which core: the connection's shard; the pumps are its local tasks. A partition owned by
//! another shard is polled over the mesh as a forwarded poll (one copy), exactly as a `Poll`
//! would be; shard-aware clients subscribe on the owner's direct port and avoid it.
//!
//! Invariants:
//! * a delivery holds at most as many batches (durable: messages) as the subscription had
//!   credit, and credit never goes below zero nor above [`SUBSCRIPTION_CREDIT_MAX`];
//! * a pump queues nothing while the connection's queued delivery bytes are at or above
//!   `--subscription-queue-bytes`, so a consumer that stops reading costs at most that plus one
//!   delivery per pump, and never stalls the shard;
//! * each partition's deliveries follow each other without gaps or overlaps (`start_offset` of
//!   one is the `next_offset` of the previous);
//! * after `Unsubscribe` or the connection's end nothing more is queued for the subscription;
//!   pumps notice within [`PUMP_WAIT`]. A durable pump's fetch that answers after that has
//!   already marked its messages delivered: they come again after the consumer's `ack_wait`, as
//!   for any unacknowledged delivery (at least once).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::{mpsc, oneshot};
use futures::FutureExt;

use super::connection::{Response, Session};
use super::data::{filter_of, partition_key, poll_partition};
use super::durable::{run as run_durable, unexpected};
use super::handlers::{reply, Context, Reply};
use crate::metadata::auth::Right;
use crate::protocol::batch::BatchHeader;
use crate::protocol::durable::FetchRequest;
use crate::protocol::filter::Filter;
use crate::protocol::frame::encode_head;
use crate::protocol::messages::{self, Empty, ErrorBody, Kind, PollStrategy, PolledPartition, Status};
use crate::protocol::subscriptions::{
    ConsumerUpdate, ConsumerUpdateAnswer, Credit, Deliver, Subscribe, SubscribeDurable, Unsubscribe,
    SUBSCRIPTION_CREDIT_MAX,
};
use crate::shard::durable::ops::{DurableOp, DurableReply};
use crate::shard::error::{BrokerError, BrokerResult};
use crate::shard::leases::TopicKey;
use crate::shard::mesh::{PartitionKey, PollSpec};
use crate::shard::partitions::PayloadPart;
use crate::shard::sac::{MemberUpdate, SacKey, SacMember, SacOp};
use crate::shard::Shard;

/// Longest a pump's standing poll waits before it looks again whether its subscription ended.
pub const PUMP_WAIT: Duration = Duration::from_millis(250);

/// How a connection's pushes become frames: the native protocol's (kinds `Deliver`,
/// `ConsumerUpdate`), or a foreign wire's (the RabbitMQ Streams listener builds Osiris chunks).
pub trait PushFrames {
    /// One delivery's frame head and payload, and the credits it used (at most `body.batches`;
    /// the rest goes back to the subscription, for batches a wire filters out whole); `None`
    /// drops it (and ends nothing).
    fn deliver(&self, body: &Deliver, parts: Vec<PayloadPart>) -> Option<(Vec<u8>, Vec<PayloadPart>, u32)>;
    /// A `ConsumerUpdate` request to the client under `correlation`.
    fn consumer_update(&self, correlation: u64, update: &ConsumerUpdate) -> Option<Vec<u8>>;
    /// Tells the client that subscription `id` ended on `partition` because of `error`.
    fn failure(&self, id: u32, partition: u32, error: &BrokerError) -> Option<Vec<u8>>;
}

/// The native protocol's push frames.
struct NativeFrames;

impl PushFrames for NativeFrames {
    fn deliver(&self, body: &Deliver, parts: Vec<PayloadPart>) -> Option<(Vec<u8>, Vec<PayloadPart>, u32)> {
        let bytes = body.partition.payload_bytes as usize;
        let encoded = messages::encode(body).ok()?;
        let head = encode_head(Kind::Deliver as u16, u64::from(body.subscription_id), 0, &encoded, bytes);
        Some((head, parts, body.batches))
    }

    fn consumer_update(&self, correlation: u64, update: &ConsumerUpdate) -> Option<Vec<u8>> {
        let body = messages::encode(update).ok()?;
        Some(encode_head(Kind::ConsumerUpdate as u16, correlation, 0, &body, 0))
    }

    fn failure(&self, id: u32, partition: u32, error: &BrokerError) -> Option<Vec<u8>> {
        let body =
            messages::encode(&ErrorBody { message: format!("partition {partition}: {}", error.message) })
                .map(|body| body.to_vec())
                .unwrap_or_default();
        Some(encode_head(Kind::Deliver as u16, u64::from(id), error.status as u16, &body, 0))
    }
}

/// The push side of one connection. See the module documentation.
pub struct Push {
    shard: Rc<Shard>,
    session: u64,
    frames: Box<dyn PushFrames>,
    /// `ConsumerUpdate` requests sent to the client and not answered yet, by correlation id.
    updates: RefCell<HashMap<u64, oneshot::Sender<PollStrategy>>>,
    update_next: Cell<u64>,
    /// Coordinator shards of single-active groups this connection joined (told when it ends).
    sac_coordinators: RefCell<BTreeSet<u16>>,
    /// Into the connection's writer; taken when the connection closes.
    sender: RefCell<Option<mpsc::UnboundedSender<Response>>>,
    queued_bytes: Cell<usize>,
    /// Notified when queued bytes drop and when the connection closes.
    room: event_listener::Event,
    closed: Cell<bool>,
    subscriptions: RefCell<HashMap<u32, Rc<Subscription>>>,
}

/// One subscription's credit and state, shared by its pumps.
struct Subscription {
    /// Its partitions (one, or every partition of the topic).
    keys: Vec<PartitionKey>,
    consumer_key: String,
    /// Batches its filter rules out are skipped on the owner (none: everything is delivered).
    filter: Option<Arc<Filter>>,
    /// Its single-active group, if it joined one.
    group: Option<SacKey>,
    /// The durable consumer it pushes for (credit then counts messages), if it is durable.
    durable: Option<DurableTarget>,
    /// Per partition, the generation of the pump allowed to deliver (a single-active member's
    /// pump stops when its partition is deactivated).
    generations: RefCell<HashMap<u32, u64>>,
    credit: Cell<u32>,
    /// Credit taken out of `credit` by durable pumps for the fetch they are waiting on (returned
    /// when it answers fewer messages).
    reserved: Cell<u32>,
    /// Notified when credit is added and when the subscription ends.
    changed: event_listener::Event,
    ended: Cell<bool>,
    counters: std::sync::Arc<crate::shard::SharedCounters>,
}

/// The durable consumer a durable subscription fetches for.
struct DurableTarget {
    stream: String,
    topic: String,
    name: String,
}

impl Subscription {
    fn new(
        consumer: &str,
        credit: u32,
        keys: Vec<PartitionKey>,
        filter: Option<Arc<Filter>>,
        group: Option<SacKey>,
        shard: &Shard,
    ) -> Subscription {
        let counters = shard.counters.clone();
        counters.subscriptions.fetch_add(1, Ordering::Relaxed);
        Subscription {
            keys,
            consumer_key: format!("c:{consumer}"),
            filter,
            group,
            durable: None,
            generations: RefCell::new(HashMap::new()),
            credit: Cell::new(credit),
            reserved: Cell::new(0),
            changed: event_listener::Event::new(),
            ended: Cell::new(false),
            counters,
        }
    }

    /// A new generation for `partition`: pumps of older ones stop delivering.
    fn next_generation(&self, partition: u32) -> u64 {
        let generation = {
            let mut generations = self.generations.borrow_mut();
            let generation = generations.entry(partition).or_insert(0);
            *generation += 1;
            *generation
        };
        self.changed.notify(usize::MAX);
        generation
    }

    fn generation(&self, partition: u32) -> u64 {
        self.generations.borrow().get(&partition).copied().unwrap_or(0)
    }

    /// Ends the subscription (once): its pumps stop at their next look.
    fn end(&self) {
        if !self.ended.replace(true) {
            self.counters.subscriptions.fetch_sub(1, Ordering::Relaxed);
        }
        self.changed.notify(usize::MAX);
    }
}

/// Returns a delivery's bytes to the connection's queue budget when the writer is done with it
/// (or drops it unwritten).
pub struct Release {
    push: Rc<Push>,
    bytes: usize,
}

impl Drop for Release {
    fn drop(&mut self) {
        let queued = self.push.queued_bytes.get();
        debug_assert!(queued >= self.bytes, "released {} of {queued} queued bytes", self.bytes);
        self.push.queued_bytes.set(queued.saturating_sub(self.bytes));
        self.push.room.notify(usize::MAX);
    }
}

impl Push {
    /// The push side of a new connection whose writer reads from `sender`'s channel.
    pub fn new(shard: Rc<Shard>, session: u64, sender: mpsc::UnboundedSender<Response>) -> Rc<Push> {
        Push::with_frames(shard, session, sender, Box::new(NativeFrames))
    }

    /// The push side of a connection of another wire, whose frames `frames` builds.
    pub fn with_frames(
        shard: Rc<Shard>,
        session: u64,
        sender: mpsc::UnboundedSender<Response>,
        frames: Box<dyn PushFrames>,
    ) -> Rc<Push> {
        let push = Rc::new(Push {
            shard,
            session,
            frames,
            updates: RefCell::new(HashMap::new()),
            update_next: Cell::new(1),
            sac_coordinators: RefCell::new(BTreeSet::new()),
            sender: RefCell::new(Some(sender)),
            queued_bytes: Cell::new(0),
            room: event_listener::Event::new(),
            closed: Cell::new(false),
            subscriptions: RefCell::new(HashMap::new()),
        });
        PUSHES.with(|pushes| pushes.borrow_mut().insert(session, Rc::downgrade(&push)));
        push
    }

    /// The connection ended: every subscription ends and the writer's channel is let go.
    pub fn close(&self) {
        self.closed.set(true);
        PUSHES.with(|pushes| pushes.borrow_mut().remove(&self.session));
        for (_, subscription) in self.subscriptions.borrow_mut().drain() {
            subscription.end();
        }
        self.updates.borrow_mut().clear();
        self.sender.borrow_mut().take();
        self.room.notify(usize::MAX);
        // Its single-active memberships end with it: the coordinators hand over at once.
        let coordinators = std::mem::take(&mut *self.sac_coordinators.borrow_mut());
        for coordinator in coordinators {
            let (shard, session) = (self.shard.clone(), self.session);
            glommio::spawn_local(async move {
                let op = SacOp::SessionEnded { session };
                if let Err(error) = shard.sac_op_on(coordinator, op).await {
                    tracing::debug!(%error.message, "telling a single-active coordinator failed");
                }
            })
            .detach();
        }
    }

    /// Queues a frame for the writer; false once the connection is gone.
    fn send(&self, response: Response) -> bool {
        match self.sender.borrow().as_ref() {
            Some(sender) => sender.unbounded_send(response).is_ok(),
            None => false,
        }
    }

    fn has_room(&self) -> bool {
        self.queued_bytes.get() < self.shard.config.subscription_queue_bytes
    }
}

fn push_of(session: &Session) -> BrokerResult<&Rc<Push>> {
    session
        .push
        .as_ref()
        .ok_or_else(|| BrokerError::new(Status::InvalidArgument, "this connection cannot take subscriptions"))
}

/// Subscribe: checks the request, registers the subscription and starts one pump per
/// subscribed partition.
pub async fn subscribe(context: &Context<'_>, request: Subscribe) -> BrokerResult<Reply> {
    subscribe_spread(context, request, false).await
}

/// [`subscribe`], where a single-active subscription to one partition of a super stream may ask
/// for RabbitMQ's spreading rule (`spread`: see [`SacKey::spread`]).
pub async fn subscribe_spread(
    context: &Context<'_>,
    request: Subscribe,
    spread: bool,
) -> BrokerResult<Reply> {
    context.require(&request.stream, Right::Read)?;
    let push = push_of(context.session)?;
    let catalog = context.shard.catalog();
    let (stream, topic) = catalog.topic(&request.stream, &request.topic)?;
    let keys: Vec<PartitionKey> = match request.partition {
        Some(partition) => vec![partition_key(stream, topic, partition)?],
        None => {
            (0..topic.partitions).map(|p| partition_key(stream, topic, p)).collect::<BrokerResult<_>>()?
        }
    };
    if !request.consumer.is_empty() {
        crate::metadata::validate_name(&request.consumer)
            .map_err(|e| BrokerError::new(Status::InvalidName, format!("consumer name: {e}")))?;
    } else if request.offset == PollStrategy::Next {
        return Err(BrokerError::new(Status::InvalidArgument, "offset Next needs a consumer name"));
    }
    let filter = filter_of(&request.filter, request.match_unfiltered)?;
    if request.credit > SUBSCRIPTION_CREDIT_MAX {
        return Err(credit_overflow(u64::from(request.credit)));
    }
    if request.single_active && request.consumer.is_empty() {
        return Err(BrokerError::new(
            Status::InvalidArgument,
            "a single active consumer needs a consumer name",
        ));
    }
    let topic_key = TopicKey { stream_id: stream.id, topic_id: topic.id };
    let group = request.single_active.then(|| SacKey {
        topic: topic_key,
        name: request.consumer.clone(),
        partition: request.partition,
        spread: spread && request.partition.is_some() && topic.super_stream.is_some(),
    });
    let subscription =
        Subscription::new(&request.consumer, request.credit, keys, filter, group.clone(), context.shard);
    let subscription = register(context, push, request.subscription_id, subscription)?;
    match group {
        // A single-active member delivers only once its coordinator activates it.
        Some(key) => {
            let member = SacMember {
                shard: push.shard.id,
                session: push.session,
                subscription_id: request.subscription_id,
            };
            let coordinator = crate::shard::leases::coordinator(topic_key, push.shard.shards());
            push.sac_coordinators.borrow_mut().insert(coordinator);
            let op = SacOp::Join { key, member, partitions: topic.partitions };
            if let Err(error) = push.shard.sac_op_on(coordinator, op).await {
                if let Some(subscription) = push.subscriptions.borrow_mut().remove(&request.subscription_id) {
                    subscription.end();
                }
                return Err(error);
            }
        }
        None => {
            for &key in &subscription.keys {
                start_pump(push, &subscription, request.subscription_id, key, request.offset);
            }
        }
    }
    reply(&Empty {}, Vec::new())
}

/// Adds `subscription` to the connection under `id`, unless the id is taken or the connection
/// holds its most subscriptions.
fn register(
    context: &Context<'_>,
    push: &Rc<Push>,
    id: u32,
    subscription: Subscription,
) -> BrokerResult<Rc<Subscription>> {
    let mut subscriptions = push.subscriptions.borrow_mut();
    if subscriptions.contains_key(&id) {
        // Not counted: `end` undoes what `new` counted.
        subscription.end();
        return Err(BrokerError::new(
            Status::SubscriptionExists,
            format!("subscription {id} exists on this connection"),
        ));
    }
    if subscriptions.len() >= context.shard.config.max_subscriptions {
        subscription.end();
        return Err(BrokerError::new(
            Status::TooManySubscriptions,
            format!("this connection holds --max-subscriptions {} subscriptions", subscriptions.len()),
        ));
    }
    let subscription = Rc::new(subscription);
    subscriptions.insert(id, subscription.clone());
    Ok(subscription)
}

/// SubscribeDurable: checks that the durable consumer exists, registers the subscription and
/// starts one durable pump per subscribed partition.
pub async fn subscribe_durable(context: &Context<'_>, request: SubscribeDurable) -> BrokerResult<Reply> {
    context.require(&request.stream, Right::Read)?;
    let push = push_of(context.session)?;
    let catalog = context.shard.catalog();
    let (stream, topic) = catalog.topic(&request.stream, &request.topic)?;
    catalog.durable(&request.stream, &request.topic, &request.consumer)?;
    let keys: Vec<PartitionKey> = match request.partition {
        Some(partition) => vec![partition_key(stream, topic, partition)?],
        None => {
            (0..topic.partitions).map(|p| partition_key(stream, topic, p)).collect::<BrokerResult<_>>()?
        }
    };
    if request.credit > SUBSCRIPTION_CREDIT_MAX {
        return Err(credit_overflow(u64::from(request.credit)));
    }
    let mut subscription =
        Subscription::new(&request.consumer, request.credit, keys, None, None, context.shard);
    subscription.durable = Some(DurableTarget {
        stream: request.stream.clone(),
        topic: request.topic.clone(),
        name: request.consumer.clone(),
    });
    let subscription = register(context, push, request.subscription_id, subscription)?;
    for &key in &subscription.keys {
        start_pump(push, &subscription, request.subscription_id, key, PollStrategy::First);
    }
    reply(&Empty {}, Vec::new())
}

/// Starts a pump for one partition of a subscription, from `strategy` (ignored by a durable
/// subscription), as the partition's newest generation.
fn start_pump(
    push: &Rc<Push>,
    subscription: &Rc<Subscription>,
    id: u32,
    key: PartitionKey,
    strategy: PollStrategy,
) {
    let pump = Pump {
        push: push.clone(),
        subscription: subscription.clone(),
        id,
        key,
        strategy,
        consumer_key: subscription.consumer_key.clone(),
        generation: subscription.next_generation(key.partition),
        delivered_to: None,
    };
    if subscription.durable.is_some() {
        glommio::spawn_local(pump.run_durable()).detach();
    } else {
        glommio::spawn_local(pump.run()).detach();
    }
}

fn credit_overflow(credit: u64) -> BrokerError {
    BrokerError::new(
        Status::CreditOverflow,
        format!("credit {credit} would pass the most a subscription may hold ({SUBSCRIPTION_CREDIT_MAX})"),
    )
}

fn unknown(id: u32) -> BrokerError {
    BrokerError::new(Status::UnknownSubscription, format!("no subscription {id} on this connection"))
}

/// Credit: adds to a subscription's credit (answered only on error).
pub fn credit(context: &Context<'_>, request: Credit) -> BrokerResult<Reply> {
    let push = push_of(context.session)?;
    let subscriptions = push.subscriptions.borrow();
    let subscription =
        subscriptions.get(&request.subscription_id).ok_or_else(|| unknown(request.subscription_id))?;
    let held = u64::from(subscription.credit.get()) + u64::from(subscription.reserved.get());
    let total = held + u64::from(request.credit);
    if total > u64::from(SUBSCRIPTION_CREDIT_MAX) {
        return Err(credit_overflow(total));
    }
    subscription.credit.set(subscription.credit.get() + request.credit);
    subscription.changed.notify(usize::MAX);
    reply(&Empty {}, Vec::new())
}

/// Unsubscribe: ends a subscription; nothing more is queued for it.
pub fn unsubscribe(context: &Context<'_>, request: Unsubscribe) -> BrokerResult<Reply> {
    let push = push_of(context.session)?;
    let removed = push.subscriptions.borrow_mut().remove(&request.subscription_id);
    let subscription = removed.ok_or_else(|| unknown(request.subscription_id))?;
    subscription.end();
    if let Some(key) = subscription.group.clone() {
        let member = SacMember {
            shard: push.shard.id,
            session: push.session,
            subscription_id: request.subscription_id,
        };
        let coordinator = crate::shard::leases::coordinator(key.topic, push.shard.shards());
        let shard = push.shard.clone();
        glommio::spawn_local(async move {
            if let Err(error) = shard.sac_op_on(coordinator, SacOp::Leave { key, member }).await {
                tracing::debug!(%error.message, "leaving a single-active group failed");
            }
        })
        .detach();
    }
    reply(&Empty {}, Vec::new())
}

/// One subscribed partition's standing poll.
struct Pump {
    push: Rc<Push>,
    subscription: Rc<Subscription>,
    id: u32,
    key: PartitionKey,
    strategy: PollStrategy,
    consumer_key: String,
    generation: u64,
    /// Where the last delivery ended: the next one's marks start there, so the batches a filter
    /// skipped in between are covered and the client's position moves past them.
    delivered_to: Option<u64>,
}

impl Pump {
    fn live(&self) -> bool {
        !self.subscription.ended.get()
            && !self.push.closed.get()
            && self.subscription.generation(self.key.partition) == self.generation
    }

    /// Waits until the subscription has credit and the connection has room; false when the
    /// subscription ended meanwhile.
    async fn ready(&self) -> bool {
        loop {
            let credit_changed = self.subscription.changed.listen();
            let room_changed = self.push.room.listen();
            if !self.live() {
                return false;
            }
            if self.subscription.credit.get() > 0 && self.push.has_room() {
                return true;
            }
            futures::select! {
                () = credit_changed.fuse() => {}
                () = room_changed.fuse() => {}
            }
        }
    }

    async fn run(mut self) {
        while self.ready().await {
            let spec = PollSpec {
                strategy: self.strategy,
                consumer_key: self.consumer_key.clone(),
                max_messages: u32::MAX,
                max_bytes: self.push.shard.config.delivery_bytes,
                max_batches: self.subscription.credit.get(),
                max_wait: PUMP_WAIT,
                auto_commit: false,
                filter: self.subscription.filter.clone(),
            };
            let mut polled = match poll_partition(&self.push.shard, self.key, spec).await {
                Ok(polled) => polled,
                Err(error) => return self.fail(&error),
            };
            self.strategy = PollStrategy::Offset(polled.partition.next_offset);
            if polled.partition.payload_bytes == 0 || !self.live() {
                continue;
            }
            if let Some(delivered_to) = self.delivered_to.replace(polled.partition.next_offset) {
                debug_assert!(delivered_to <= polled.partition.start_offset);
                polled.partition.start_offset = delivered_to;
            }
            let batches = polled.parts.iter().map(|part| batch_count(part.bytes())).sum::<u32>();
            let credit = self.subscription.credit.get();
            debug_assert!(batches >= 1 && batches <= credit, "{batches} batches for credit {credit}");
            self.subscription.credit.set(credit.saturating_sub(batches));
            let body = Deliver {
                subscription_id: self.id,
                partition: polled.partition,
                batches,
                messages: Vec::new(),
                num_pending: 0,
                ack_pending: 0,
            };
            if !self.queue(&body, polled.parts) {
                return;
            }
        }
    }

    /// A durable subscription's standing fetch: each non-empty answer of the owner shard becomes
    /// one `Deliver` listing its messages; each message takes one credit.
    ///
    /// The pumps of a subscription share its credit, and a fetch may wait: so a pump takes its
    /// share (the credit divided among the subscription's partitions, at least one) out of the
    /// credit before it fetches at most that many, and gives back what the answer did not use.
    async fn run_durable(self) {
        let Some(target) = self.subscription.durable.as_ref() else { return };
        let pumps = u32::try_from(self.subscription.keys.len()).unwrap_or(u32::MAX).max(1);
        while self.ready().await {
            let subscription = &self.subscription;
            let available = subscription.credit.get();
            if available == 0 {
                continue;
            }
            let share = available.div_ceil(pumps);
            subscription.credit.set(available - share);
            subscription.reserved.set(subscription.reserved.get() + share);
            let request = FetchRequest {
                stream: target.stream.clone(),
                topic: target.topic.clone(),
                partition: self.key.partition,
                consumer: target.name.clone(),
                max_messages: share,
                max_bytes: self.push.shard.config.delivery_bytes,
                expires_us: PUMP_WAIT.as_micros() as u64,
                no_wait: false,
            };
            let fetched = run_durable(&self.push.shard, self.key, DurableOp::Fetch(request)).await;
            let count = match &fetched {
                Ok(DurableReply::Fetched(response, _)) => response.messages.len(),
                _ => 0,
            };
            let count = u32::try_from(count).unwrap_or(u32::MAX);
            debug_assert!(count <= share, "{count} messages for a share of {share} credits");
            subscription.reserved.set(subscription.reserved.get() - share);
            if count < share {
                subscription.credit.set(subscription.credit.get() + (share - count));
                subscription.changed.notify(usize::MAX);
            }
            let (response, parts) = match fetched {
                Ok(DurableReply::Fetched(response, parts)) => (response, parts),
                Ok(_) => return self.fail(&unexpected()),
                Err(error) => return self.fail(&error),
            };
            // Fetched after the subscription ended: the messages are delivered to no one and
            // come again after the consumer's ack wait.
            if response.messages.is_empty() || !self.live() {
                continue;
            }
            let bytes: usize = parts.iter().map(|part| part.bytes().len()).sum();
            let batches = parts.iter().map(|part| batch_count(part.bytes())).sum::<u32>();
            let lowest = response.messages.iter().map(|m| m.offset).min().unwrap_or(0);
            let highest = response.messages.iter().map(|m| m.offset).max().unwrap_or(0);
            let body = Deliver {
                subscription_id: self.id,
                partition: PolledPartition {
                    partition: response.partition,
                    start_offset: lowest,
                    next_offset: highest + 1,
                    high_watermark: 0,
                    payload_bytes: u32::try_from(bytes).unwrap_or(u32::MAX),
                    removed: Vec::new(),
                },
                batches,
                messages: response.messages,
                num_pending: response.num_pending,
                ack_pending: response.ack_pending,
            };
            if !self.queue(&body, parts) {
                return;
            }
        }
    }

    /// Queues one `Deliver` with its batches, counting its bytes against the connection's queue
    /// until the writer is done with them; false once the connection is gone.
    fn queue(&self, body: &Deliver, parts: Vec<crate::shard::partitions::PayloadPart>) -> bool {
        let Some((head, payload, used)) = self.push.frames.deliver(body, parts) else { return true };
        if used < body.batches && body.messages.is_empty() {
            let subscription = &self.subscription;
            subscription.credit.set(subscription.credit.get() + (body.batches - used));
            subscription.changed.notify(usize::MAX);
        }
        if head.is_empty() && payload.is_empty() {
            return true;
        }
        let payload_bytes: usize = payload.iter().map(|part| part.bytes().len()).sum();
        let bytes = payload_bytes + head.len();
        self.push.queued_bytes.set(self.push.queued_bytes.get() + bytes);
        let release = Release { push: self.push.clone(), bytes };
        let response = Response { head, payload, release: Some(release) };
        if !self.push.send(response) {
            return false;
        }
        let counters = &self.push.shard.counters;
        counters.deliveries.fetch_add(1, Ordering::Relaxed);
        counters.delivered_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        true
    }

    /// The partition cannot be read any more (deleted, out of range, storage error): tells the
    /// client with an error `Deliver` and ends the subscription.
    fn fail(&self, error: &BrokerError) {
        if !self.live() {
            return;
        }
        tracing::debug!(subscription = self.id, partition = self.key.partition, %error.message, "subscription ended");
        if let Some(subscription) = self.push.subscriptions.borrow_mut().remove(&self.id) {
            subscription.end();
        }
        if let Some(head) = self.push.frames.failure(self.id, self.key.partition, error) {
            self.push.send(Response { head, payload: Vec::new(), release: None });
        }
    }
}

/// How long a client has to answer a `ConsumerUpdate`; an activated member that does not answer
/// in time is treated as gone, a deactivated one is let go anyway.
pub const CONSUMER_UPDATE_TIMEOUT: Duration = Duration::from_secs(30);

thread_local! {
    /// This shard's connections that can take pushes, by session id.
    static PUSHES: RefCell<HashMap<u64, std::rc::Weak<Push>>> = RefCell::new(HashMap::new());
}

/// Member side of a single-active hand-over, on the member connection's shard: stops or starts
/// the subscription's pump for the partition, telling the client with `ConsumerUpdate` and
/// waiting for its answer (an activated member starts where its answer says).
pub async fn member_update(update: MemberUpdate) -> BrokerResult<()> {
    let gone = || BrokerError::new(Status::UnknownSubscription, "the single-active member is gone");
    let push =
        PUSHES.with(|pushes| pushes.borrow().get(&update.member.session).and_then(std::rc::Weak::upgrade));
    let push = push.ok_or_else(gone)?;
    let id = update.member.subscription_id;
    let subscription = push.subscriptions.borrow().get(&id).cloned().ok_or_else(gone)?;
    let key = *subscription.keys.iter().find(|key| key.partition == update.partition).ok_or_else(gone)?;
    if !update.active {
        subscription.next_generation(update.partition);
        let _ = ask_update(&push, id, update.partition, false).await;
        return Ok(());
    }
    let offset = ask_update(&push, id, update.partition, true).await.ok_or_else(gone)?;
    if subscription.ended.get() {
        return Err(gone());
    }
    start_pump(&push, &subscription, id, key, offset);
    Ok(())
}

/// Sends `ConsumerUpdate` to the client and waits (bounded) for its answer.
async fn ask_update(push: &Rc<Push>, id: u32, partition: u32, active: bool) -> Option<PollStrategy> {
    let correlation = push.update_next.get();
    push.update_next.set(correlation + 1);
    let (answer, answered) = oneshot::channel();
    push.updates.borrow_mut().insert(correlation, answer);
    let head = push
        .frames
        .consumer_update(correlation, &ConsumerUpdate { subscription_id: id, partition, active })?;
    if !push.send(Response { head, payload: Vec::new(), release: None }) {
        return None;
    }
    let timeout = glommio::timer::sleep(CONSUMER_UPDATE_TIMEOUT).fuse();
    let answered = answered.fuse();
    futures::pin_mut!(timeout, answered);
    let answer = futures::select! {
        answer = answered => answer.ok(),
        () = timeout => None,
    };
    push.updates.borrow_mut().remove(&correlation);
    answer
}

/// The client's answer to a `ConsumerUpdate` (a frame of that kind with the update's
/// correlation id); answered only on error.
pub fn consumer_update_answer(
    context: &Context<'_>,
    correlation: u64,
    answer: ConsumerUpdateAnswer,
) -> BrokerResult<Reply> {
    let push = push_of(context.session)?;
    let waiting = push.updates.borrow_mut().remove(&correlation);
    let waiting = waiting.ok_or_else(|| {
        BrokerError::new(
            Status::InvalidArgument,
            format!("no ConsumerUpdate {correlation} is waiting for an answer on this connection"),
        )
    })?;
    let _ = waiting.send(answer.offset);
    reply(&Empty {}, Vec::new())
}

/// Batches back to back in `bytes` (headers only; stored batches are whole and valid).
fn batch_count(bytes: &[u8]) -> u32 {
    let mut count = 0;
    let mut rest = bytes;
    while let Ok(header) = BatchHeader::decode(rest) {
        let Some(next) = rest.get(header.length as usize..) else { break };
        count += 1;
        if header.length == 0 {
            break;
        }
        rest = next;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::BatchBuilder;

    #[test]
    fn batch_count_walks_headers() {
        let batch = |n: usize| {
            let mut builder = BatchBuilder::new(0, 0);
            for i in 0..n {
                builder.push_payload(format!("m{i}").as_bytes()).expect("push");
            }
            builder.finish().expect("finish")
        };
        assert_eq!(batch_count(&[]), 0);
        assert_eq!(batch_count(&batch(3)), 1);
        assert_eq!(batch_count(&[batch(1), batch(2), batch(5)].concat()), 3);
    }
}
