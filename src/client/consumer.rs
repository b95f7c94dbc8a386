//! [`Consumer`]: a high-level consumer built with [`ConsumerBuilder`], read as a
//! [`futures::Stream`] of [`ReceivedMessage`]s or driven by a [`MessageConsumer`] handler with
//! [`Consumer::consume_messages`].
//!
//! Owns the consumer's read positions, its commit policy ([`AutoCommit`]) and, for a consumer
//! group, its membership (join, heartbeat, rejoin after `UnknownMember`, leave). Runs on the
//! caller's tokio runtime: polls run inside the consumer when the caller asks for the next
//! message (no prefetch beyond one poll answer, so a slow reader slows the polling — that is the
//! backpressure); a group's heartbeats and an [`AutoCommit::Interval`] commit each run in a
//! small background task that ends with the consumer.
//!
//! Two ways to read, chosen by the consumer's kind and commit mode:
//!
//! - A **named consumer** ([`ConsumerBuilder::consumer_name`]) reads one partition or all of
//!   them, round robin, each from its owner shard ([`ShardRouter::client_for`]). A partition's
//!   first poll uses the [`PollStrategy`]; later polls ask for `Offset(next_offset)` of the
//!   previous answer. When a whole round came back empty, the consumer sweeps every partition at
//!   once with a server long poll of up to the polling interval, so an idle consumer neither
//!   spins nor misses data on another partition for longer than that interval.
//! - A **group member** ([`ConsumerBuilder::group`]) with [`AutoCommit::AfterPoll`] polls with
//!   `PollTarget::Group`: the server reads only the member's current assignment and stores the
//!   group's offsets as it answers. The strategy applies until a poll first returns records;
//!   after that `Next` continues from the group's stored offsets (so a partition the first poll
//!   did not reach, or one gained in a rebalance, resumes at the group's offset). A group member
//!   with any other mode cannot let the server keep its place (nothing is stored after each
//!   poll, and one group poll takes one strategy for all its partitions), so it polls each
//!   partition of its assignment as above with explicit offsets, starting a partition at the
//!   group's stored offset. Either way the member refreshes its view of the assignment with a
//!   heartbeat at most every [`ASSIGNMENT_REFRESH_INTERVAL`] between polls.
//!
//! A poll answering that the stream, topic or partition does not exist is retried for up to
//! [`MISSING_GRACE`]: a shard may list a new topic's partition before its owner serves it.
//!
//! Invariants: positions only move forward on a successful, consistent poll answer, so a failed
//! poll is repeated exactly; a message counts as consumed once handed out by the stream, or,
//! under [`Consumer::consume_messages`], once its handler returned `Ok`; commits store consumed
//! positions only, are serialised (a slow commit can never overwrite a newer one), and a group
//! member commits only partitions it currently holds. Delivery is at least once (a crash, a lost
//! answer or a rebalance can repeat messages) except under [`AutoCommit::AfterPoll`], where the
//! server commits a poll's messages as it sends them: messages polled but never handled, or a
//! poll still waiting on the server when the consumer is dropped, are not delivered again. Data
//! removed by retention is skipped (the partition restarts at its first offset).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::connection::Client;
use super::error::ClientError;
use super::polled::Polled;
pub use super::pushed::INITIAL_CREDIT_DEFAULT;
use super::pushed::{Item, Pushing, WHOLE_TOPIC};
use super::router::{RouterSource, ShardRouter};
use super::subscription::ConsumerUpdateRequest;
use crate::protocol::filter::{batch_may_match, Filter};
use crate::protocol::messages::{
    ConsumerRef, GroupTarget, JoinGroup, Membership, PartitionTarget, PollRequest, PollTarget, Status,
    TopicConfig,
};

pub use crate::protocol::messages::PollStrategy;

/// Default `max_messages` of one poll.
pub const BATCH_SIZE_DEFAULT_MESSAGES: u32 = 1000;

/// Default `max_bytes` of one poll (the server still returns one whole batch if it is larger).
pub const POLL_BYTES_MAX_DEFAULT: u32 = 4 * 1024 * 1024;

/// Default wait when a poll finds nothing (also the server long-poll wait).
pub const POLLING_INTERVAL_DEFAULT: Duration = Duration::from_millis(100);

/// The polling interval is never shorter than this, so an idle consumer cannot spin.
pub const POLLING_INTERVAL_MIN: Duration = Duration::from_millis(1);

/// Default group session timeout; heartbeats go out every third of it.
pub const SESSION_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

/// The session timeouts the server accepts (it clamps to this range too).
pub const SESSION_TIMEOUT_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(300));

/// Default wait between build attempts while the stream or topic does not exist yet.
pub const INIT_INTERVAL_DEFAULT: Duration = Duration::from_secs(1);

/// A polling group member refreshes its view of the assignment (with a heartbeat) at most this
/// often, between polls.
pub const ASSIGNMENT_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// How long polls may keep answering that the stream, topic or partition does not exist before
/// the consumer reports it (a topic just created may not be served by its owner shard yet).
pub const MISSING_GRACE: Duration = Duration::from_secs(5);

const _: () = assert!(BATCH_SIZE_DEFAULT_MESSAGES > 0 && POLL_BYTES_MAX_DEFAULT > 0);
const _: () = assert!(POLLING_INTERVAL_DEFAULT.as_millis() >= POLLING_INTERVAL_MIN.as_millis());
const _: () = assert!(SESSION_TIMEOUT_RANGE.0.as_millis() <= SESSION_TIMEOUT_DEFAULT.as_millis());
const _: () = assert!(SESSION_TIMEOUT_DEFAULT.as_millis() <= SESSION_TIMEOUT_RANGE.1.as_millis());

/// When a consumer stores its offsets (the next offset to read, per partition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoCommit {
    /// Never automatically; call [`Consumer::commit`]. A new consumer with the same name and
    /// [`PollStrategy::Next`] starts where the last explicit commit left it.
    Disabled,
    /// Every interval, and at [`Consumer::shutdown`], store the consumed positions.
    Interval(Duration),
    /// The server stores the end of each poll answer before it answers (the poll's
    /// `auto_commit`). Messages fetched but never handled are lost to the next consumer.
    AfterPoll,
    /// Under [`Consumer::consume_messages`], store `offset + 1` as soon as the handler returned
    /// `Ok` for a message, so a failing handler loses nothing. Read as a stream, the consumed
    /// positions are stored at [`Consumer::shutdown`] (or call [`Consumer::commit`]).
    AfterHandler,
}

/// One message as a consumer receives it. The byte fields share the poll answer's buffer
/// (no copies); the buffer lives as long as any of them does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The partition it was read from.
    pub partition: u32,
    /// Its offset in that partition.
    pub offset: u64,
    /// The producer's create time (µs since the Unix epoch).
    pub timestamp_us: u64,
    /// When the server appended its batch (µs since the Unix epoch).
    pub append_timestamp_us: u64,
    /// The message key, if it has one.
    pub key: Option<Bytes>,
    /// The filter value, if it has one.
    pub filter_value: Option<Bytes>,
    /// The headers, as (key, value) pairs in the producer's order.
    pub headers: Vec<(Bytes, Bytes)>,
    /// The message body.
    pub payload: Bytes,
}

/// What a [`MessageConsumer`] returns when it cannot handle a message: any error, boxed.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Handles the messages of [`Consumer::consume_messages`], one at a time, in order per
/// partition.
///
/// Implement it with an `async fn`; the future must be `Send` so the consuming loop can run on a
/// spawned task. Returning an error stops the loop without committing that message.
pub trait MessageConsumer {
    /// Handles one message.
    fn consume(&self, message: ReceivedMessage) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// Why [`Consumer::consume_messages`] stopped before its shutdown signal.
#[derive(Debug)]
pub enum ConsumeError {
    /// Polling or committing failed (connection errors are retried; this is anything else).
    Client(ClientError),
    /// The handler failed on this message; it was not committed and will be delivered again.
    Handler {
        /// The message's partition.
        partition: u32,
        /// The message's offset.
        offset: u64,
        /// What the handler returned.
        error: HandlerError,
    },
}

impl fmt::Display for ConsumeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConsumeError::Client(error) => write!(f, "{error}"),
            ConsumeError::Handler { partition, offset, error } => {
                write!(f, "the handler failed on partition {partition} offset {offset}: {error}")
            }
        }
    }
}

impl std::error::Error for ConsumeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConsumeError::Client(error) => Some(error),
            ConsumeError::Handler { error, .. } => Some(error.as_ref()),
        }
    }
}

impl From<ClientError> for ConsumeError {
    fn from(error: ClientError) -> Self {
        ConsumeError::Client(error)
    }
}

/// Who reads: a named consumer (its name keys its offsets) or a group.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Identity {
    Named(String),
    Group(String),
}

impl Identity {
    fn name(&self) -> &str {
        match self {
            Identity::Named(name) | Identity::Group(name) => name,
        }
    }

    fn consumer_ref(&self) -> ConsumerRef {
        match self {
            Identity::Named(name) => ConsumerRef::Named(name.clone()),
            Identity::Group(name) => ConsumerRef::Group(name.clone()),
        }
    }
}

/// Configures and builds a [`Consumer`]; made by [`Consumer::builder`].
///
/// ```no_run
/// # async fn demo(client: ringbroker::client::Client) -> Result<(), ringbroker::client::ClientError> {
/// use std::time::Duration;
/// use futures::StreamExt;
/// use ringbroker::client::consumer::{AutoCommit, Consumer, PollStrategy};
/// let mut consumer = Consumer::builder(&client, "orders", "created")
///     .consumer_name("billing")
///     .polling_strategy(PollStrategy::Next)
///     .auto_commit(AutoCommit::AfterPoll)
///     .polling_interval(Duration::from_millis(50))
///     .build()
///     .await?;
/// while let Some(message) = consumer.next().await {
///     let message = message?;
///     println!("{}@{}: {:?}", message.partition, message.offset, message.payload);
/// }
/// # Ok(()) }
/// ```
pub struct ConsumerBuilder {
    source: RouterSource,
    stream: String,
    topic: String,
    identity: Option<Identity>,
    conflicting_identity: bool,
    partition: Option<u32>,
    strategy: PollStrategy,
    polling_interval: Duration,
    batch_size: u32,
    max_bytes: u32,
    auto_commit: AutoCommit,
    create_partitions: Option<u32>,
    init_retries: u32,
    init_interval: Duration,
    session_timeout: Duration,
    subscribe: Option<u32>,
    single_active: bool,
    on_update: Option<UpdateHook>,
    filter: Vec<String>,
    match_unfiltered: bool,
}

/// What a single-active hook learns about a hand-over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateContext {
    /// Stream.
    pub stream: String,
    /// Topic.
    pub topic: String,
    /// The consumer (group) name.
    pub name: String,
    /// The partition handed over.
    pub partition: u32,
    /// The name's stored offset on the partition, if any.
    pub stored_offset: Option<u64>,
}

/// Called on each single-active hand-over with whether this consumer becomes active; an
/// activated consumer starts where the returned strategy says (ignored on deactivation).
pub type UpdateHook = Arc<dyn Fn(&UpdateContext, bool) -> PollStrategy + Send + Sync>;

impl ConsumerBuilder {
    /// Reads by push subscription instead of polling: the server sends batches as they arrive,
    /// paced by credit (`initial_credits` batches per partition, granted back as the
    /// application consumes; [`INITIAL_CREDIT_DEFAULT`] is the usual choice). Named consumers
    /// only. The stream and [`Consumer::consume_messages`] work as with polling.
    pub fn subscribe(mut self, initial_credits: u32) -> Self {
        self.subscribe = Some(initial_credits);
        self
    }

    /// Joins the single-active-consumer group `name`: of the consumers subscribed under this
    /// name, one is active per partition (on a whole topic, partition `i` goes to member
    /// `i % members`), the others wait and take over when it leaves. Reads by subscription
    /// ([`INITIAL_CREDIT_DEFAULT`] unless [`subscribe`](Self::subscribe) says otherwise); an
    /// activated member starts at the name's stored offset unless [`on_update`](Self::on_update)
    /// chooses.
    pub fn single_active_consumer(mut self, name: impl Into<String>) -> Self {
        self = self.consumer_name(name);
        self.single_active = true;
        self.subscribe = self.subscribe.or(Some(INITIAL_CREDIT_DEFAULT));
        self
    }

    /// The hook called on single-active hand-overs (the Elixir client's `handle_update`).
    pub fn on_update(
        mut self,
        hook: impl Fn(&UpdateContext, bool) -> PollStrategy + Send + Sync + 'static,
    ) -> Self {
        self.on_update = Some(Arc::new(hook));
        self
    }

    /// Reads as the named consumer `name`: its offsets are stored under this name.
    pub fn consumer_name(mut self, name: impl Into<String>) -> Self {
        self.conflicting_identity |= matches!(self.identity, Some(Identity::Group(_)));
        self.identity = Some(Identity::Named(name.into()));
        self
    }

    /// Reads as a member of consumer group `name` (created if missing): the group spreads the
    /// topic's partitions over its members; offsets are the group's.
    pub fn group(mut self, name: impl Into<String>) -> Self {
        self.conflicting_identity |= matches!(self.identity, Some(Identity::Named(_)));
        self.identity = Some(Identity::Group(name.into()));
        self
    }

    /// A named consumer reads only this partition (default: every partition of the topic, as
    /// it is when the consumer is built). Not for groups.
    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Where each partition's first poll starts (default [`PollStrategy::Next`]: the stored
    /// offset, or the first offset when none is stored).
    pub fn polling_strategy(mut self, strategy: PollStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// How long to wait when a poll finds nothing, and the server long-poll wait (default
    /// [`POLLING_INTERVAL_DEFAULT`], at least [`POLLING_INTERVAL_MIN`]).
    pub fn polling_interval(mut self, interval: Duration) -> Self {
        self.polling_interval = interval;
        self
    }

    /// At most this many messages per poll (default [`BATCH_SIZE_DEFAULT_MESSAGES`]; the server
    /// answers with whole batches, so one batch larger than this still comes whole).
    pub fn batch_size(mut self, messages: u32) -> Self {
        self.batch_size = messages;
        self
    }

    /// At most about this many bytes per poll (default [`POLL_BYTES_MAX_DEFAULT`]).
    pub fn max_bytes(mut self, bytes: u32) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// When offsets are stored (default [`AutoCommit::AfterPoll`]).
    pub fn auto_commit(mut self, mode: AutoCommit) -> Self {
        self.auto_commit = mode;
        self
    }

    /// Creates the stream and the topic (with `partitions` partitions) when they are missing.
    pub fn create_if_missing(mut self, partitions: u32) -> Self {
        self.create_partitions = Some(partitions);
        self
    }

    /// While the stream or topic does not exist, [`build`](Self::build) tries again up to
    /// `count` more times, `interval` apart (default: no retries), so consumers can start before
    /// the producers that create what they read.
    pub fn init_retries(mut self, count: u32, interval: Duration) -> Self {
        self.init_retries = count;
        self.init_interval = interval;
        self
    }

    /// A group member's session timeout (default [`SESSION_TIMEOUT_DEFAULT`], within
    /// [`SESSION_TIMEOUT_RANGE`]); heartbeats go out every third of it.
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// Delivers only messages whose filter value is one of `values` (at most
    /// [`FILTER_VALUES_MAX`](crate::constants::FILTER_VALUES_MAX) of at most
    /// [`FILTER_VALUE_BYTES_MAX`](crate::constants::FILTER_VALUE_BYTES_MAX) bytes each). The broker
    /// skips whole batches whose Bloom filter rules every value out; the consumer then drops
    /// the other messages of the batches that do arrive (Bloom filters give false positives,
    /// and a batch may mix values). Positions, and so commits, still move past what was
    /// skipped. Skipping saves bytes only when batches are homogeneous in filter value (see the
    /// README's "Filtering").
    pub fn filter<V: Into<String>>(mut self, values: impl IntoIterator<Item = V>) -> Self {
        self.filter = values.into_iter().map(Into::into).collect();
        self
    }

    /// With [`filter`](Self::filter): also deliver messages that carry no filter value
    /// (default false).
    pub fn match_unfiltered(mut self, yes: bool) -> Self {
        self.match_unfiltered = yes;
        self
    }

    /// Checks the settings, finds the topic's partitions (retrying as
    /// [`init_retries`](Self::init_retries) says), joins the group if any, and starts the
    /// background tasks. Needs a tokio runtime.
    pub async fn build(self) -> Result<Consumer, ClientError> {
        let identity = self.check()?;
        let filter = self.consumer_filter()?;
        let router = self.source.clone().into_router().await?;
        if let Some(partitions) = self.create_partitions {
            let base = router.base();
            base.create_stream(&self.stream, true).await?;
            let config = TopicConfig { partitions, ..TopicConfig::default() };
            base.create_topic(&self.stream, &self.topic, config, true).await?;
        }
        let shared = Arc::new(Shared {
            router,
            stream: self.stream.clone(),
            topic: self.topic.clone(),
            identity,
            filter,
            auto_commit: self.auto_commit,
            session_timeout: self.session_timeout.clamp(SESSION_TIMEOUT_RANGE.0, SESSION_TIMEOUT_RANGE.1),
            state: Mutex::new(SharedState::default()),
            commit_lock: tokio::sync::Mutex::new(()),
            membership_lock: tokio::sync::Mutex::new(()),
        });
        let partitions = self.initialise(&shared).await?;
        let polling_interval = self.polling_interval.max(POLLING_INTERVAL_MIN);
        let fetcher = Fetcher {
            strategy: self.strategy,
            batch_size: self.batch_size,
            max_bytes: self.max_bytes,
            polling_interval,
            starts: partitions.iter().map(|&p| (p, self.strategy)).collect(),
            partitions,
            cursor: 0,
            positions: BTreeMap::new(),
            empty_polls: 0,
            group_polled: false,
            assignment_refreshed: None,
            missing_since: None,
            push: self.subscribe.map(|credit| {
                let whole_topic = self.single_active && self.partition.is_none();
                Pushing::new(
                    credit,
                    self.single_active,
                    whole_topic,
                    (self.filter.clone(), self.match_unfiltered),
                )
            }),
            on_update: self.on_update.clone(),
            advances: Vec::new(),
            progressed: false,
            shared: shared.clone(),
        };
        let mut tasks = Vec::new();
        if matches!(shared.identity, Identity::Group(_)) {
            tasks.push(tokio::spawn(heartbeat_loop(Arc::downgrade(&shared), shared.session_timeout / 3)));
        }
        if let AutoCommit::Interval(every) = shared.auto_commit {
            tasks.push(tokio::spawn(commit_loop(Arc::downgrade(&shared), every)));
        }
        Ok(Consumer {
            shared,
            buffer: VecDeque::new(),
            advances: Vec::new(),
            poller: Poller::Idle(Box::new(fetcher)),
            tasks,
            polling_interval,
            finished: false,
        })
    }

    /// Refuses settings that cannot work, before anything is sent.
    fn check(&self) -> Result<Identity, ClientError> {
        let refuse = |reason: &str| Err(ClientError::InvalidRequest(format!("consumer: {reason}")));
        if self.conflicting_identity {
            return refuse("set either consumer_name or group, not both");
        }
        let Some(identity) = self.identity.clone() else {
            return refuse("set consumer_name or group");
        };
        if matches!(identity, Identity::Group(_)) && self.subscribe.is_some() {
            return refuse("subscribe() is for named consumers; group members poll");
        }
        if self.subscribe == Some(0) {
            return refuse("subscribe() needs at least one credit");
        }
        if matches!(identity, Identity::Group(_)) && self.partition.is_some() {
            return refuse("a group assigns partitions itself; partition() is for named consumers");
        }
        if self.batch_size == 0 || self.max_bytes == 0 {
            return refuse("batch_size and max_bytes must be at least 1");
        }
        if self.create_partitions == Some(0) {
            return refuse("create_if_missing needs at least one partition");
        }
        if matches!(self.auto_commit, AutoCommit::Interval(every) if every.is_zero()) {
            return refuse("the auto-commit interval must be longer than zero");
        }
        Ok(identity)
    }

    /// The filter, checked against the broker's limits (none without values).
    fn consumer_filter(&self) -> Result<Option<ConsumerFilter>, ClientError> {
        if self.filter.is_empty() {
            if self.match_unfiltered {
                let reason =
                    "consumer: match_unfiltered needs filter values (without them nothing is filtered)";
                return Err(ClientError::InvalidRequest(reason.to_string()));
            }
            return Ok(None);
        }
        let exact = Filter::new(&self.filter, self.match_unfiltered)
            .map_err(|e| ClientError::InvalidRequest(format!("consumer: {e}")))?;
        Ok(Some(ConsumerFilter { values: self.filter.clone(), exact }))
    }

    /// Finds the partitions to read and joins the group, retrying while the stream or topic is
    /// missing.
    async fn initialise(&self, shared: &Shared) -> Result<Vec<u32>, ClientError> {
        let mut attempt = 0;
        loop {
            match self.initialise_once(shared).await {
                Ok(partitions) => return Ok(partitions),
                Err(error) if attempt < self.init_retries && is_missing(&error) => {
                    attempt += 1;
                    tracing::debug!(stream = %self.stream, topic = %self.topic, attempt, %error,
                        "consumer waits for its topic");
                    tokio::time::sleep(self.init_interval).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn initialise_once(&self, shared: &Shared) -> Result<Vec<u32>, ClientError> {
        let count = shared.router.partitions(&self.stream, &self.topic).await?;
        if let Identity::Group(_) = shared.identity {
            shared.join().await?;
            return Ok(Vec::new());
        }
        match self.partition {
            Some(partition) if partition >= count => Err(ClientError::Server {
                status: Status::UnknownPartition,
                message: format!("topic \"{}\" has {count} partitions, not {}", self.topic, partition + 1),
            }),
            Some(partition) => Ok(vec![partition]),
            None => Ok((0..count).collect()),
        }
    }
}

/// Whether an error means the stream, topic or partition does not exist (yet).
fn is_missing(error: &ClientError) -> bool {
    matches!(error.status(), Some(Status::UnknownStream | Status::UnknownTopic | Status::UnknownPartition))
}

/// A high-level consumer of one topic: a [`Stream`] of messages with commit policy and, for a
/// group, membership. See the module documentation for how it polls.
///
/// Dropping it stops its background tasks and, on a tokio runtime, commits (per its mode) and
/// leaves its group in a spawned task, best effort; [`shutdown`](Self::shutdown) does the same
/// and waits for it.
pub struct Consumer {
    shared: Arc<Shared>,
    /// Messages of the last poll answer not yet handed out.
    buffer: VecDeque<ReceivedMessage>,
    /// Positions past filtered-out messages at the end of the last answer, per partition: they
    /// count as consumed once `buffer` is drained.
    advances: Vec<(u32, u64)>,
    poller: Poller,
    tasks: Vec<JoinHandle<()>>,
    /// The wait after a failed poll in [`Consumer::consume_messages`].
    polling_interval: Duration,
    /// Committed and left: nothing more to do on drop.
    finished: bool,
}

type Fetch = Pin<Box<dyn Future<Output = (Box<Fetcher>, Result<Vec<ReceivedMessage>, ClientError>)> + Send>>;

/// Either the read state at rest or the poll that owns it for now.
enum Poller {
    Idle(Box<Fetcher>),
    Fetching(Fetch),
    /// Only while switching between the two.
    Switching,
}

impl Consumer {
    /// A builder for a consumer of `topic` in `stream`, reading through a [`Client`] or a
    /// [`ShardRouter`].
    pub fn builder(source: impl Into<RouterSource>, stream: &str, topic: &str) -> ConsumerBuilder {
        ConsumerBuilder {
            source: source.into(),
            stream: stream.to_string(),
            topic: topic.to_string(),
            identity: None,
            conflicting_identity: false,
            partition: None,
            strategy: PollStrategy::Next,
            polling_interval: POLLING_INTERVAL_DEFAULT,
            batch_size: BATCH_SIZE_DEFAULT_MESSAGES,
            max_bytes: POLL_BYTES_MAX_DEFAULT,
            auto_commit: AutoCommit::AfterPoll,
            create_partitions: None,
            init_retries: 0,
            init_interval: INIT_INTERVAL_DEFAULT,
            session_timeout: SESSION_TIMEOUT_DEFAULT,
            subscribe: None,
            single_active: false,
            on_update: None,
            filter: Vec::new(),
            match_unfiltered: false,
        }
    }

    /// The stream read.
    pub fn stream(&self) -> &str {
        &self.shared.stream
    }

    /// The topic read.
    pub fn topic(&self) -> &str {
        &self.shared.topic
    }

    /// The group member id, for a group member that has joined.
    pub fn member_id(&self) -> Option<u64> {
        self.shared.state().member.as_ref().map(|member| member.id)
    }

    /// The partitions a group member holds, as of the last join or heartbeat (heartbeats go
    /// out every third of the session timeout, and between polls at most every
    /// [`ASSIGNMENT_REFRESH_INTERVAL`]).
    pub fn assignment(&self) -> Option<Vec<u32>> {
        self.shared.state().member.as_ref().map(|member| member.partitions.clone())
    }

    /// Per partition, the offset after the last consumed message.
    pub fn consumed_offsets(&self) -> BTreeMap<u32, u64> {
        self.shared.state().consumed.clone()
    }

    /// Stores the consumed positions now (whatever the auto-commit mode), for every partition
    /// whose position moved since its last commit.
    pub async fn commit(&self) -> Result<(), ClientError> {
        self.shared.commit().await
    }

    /// Commits as the mode says ([`AutoCommit::Interval`] and [`AutoCommit::AfterHandler`]:
    /// the consumed positions), leaves the group, and stops the background tasks.
    pub async fn shutdown(mut self) -> Result<(), ClientError> {
        self.stop_tasks();
        self.finished = true;
        self.shared.finish().await
    }

    /// Hands each message to `handler`, in order, until `shutdown` completes or the handler
    /// fails; commits as the auto-commit mode says. With [`AutoCommit::AfterHandler`] each
    /// message is committed right after its handler returned `Ok`.
    ///
    /// A handler error ends the loop with [`ConsumeError::Handler`]; that message is neither
    /// committed nor counted as consumed, so a later consumer with the same name (or group)
    /// gets it first, and so does this consumer if read again. Connection errors while polling are logged and retried after the polling
    /// interval; other errors end the loop. Does not shut the consumer down: call
    /// [`shutdown`](Self::shutdown) after it.
    pub async fn consume_messages<H, S>(&mut self, handler: &H, shutdown: S) -> Result<(), ConsumeError>
    where
        H: MessageConsumer + Sync,
        S: Future<Output = ()>,
    {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let next = tokio::select! {
                biased;
                () = &mut shutdown => return Ok(()),
                next = std::future::poll_fn(|cx| self.poll_message(cx)) => next,
            };
            let message = match next {
                Ok(message) => message,
                Err(error) if error.is_connection_error() => {
                    tracing::warn!(stream = %self.shared.stream, topic = %self.shared.topic, %error,
                        "consumer poll failed; retrying");
                    let interval = self.polling_interval;
                    tokio::select! {
                        biased;
                        () = &mut shutdown => return Ok(()),
                        () = tokio::time::sleep(interval) => continue,
                    }
                }
                Err(error) => return Err(error.into()),
            };
            let (partition, offset) = (message.partition, message.offset);
            // Kept (a few reference counts) so a failed message is the next one handed out.
            let retry = message.clone();
            if let Err(error) = handler.consume(message).await {
                self.buffer.push_front(retry);
                return Err(ConsumeError::Handler { partition, offset, error });
            }
            self.shared.mark_consumed(partition, offset);
            self.settle_advances();
            if self.shared.auto_commit == AutoCommit::AfterHandler {
                // A filtering consumer also moves positions past skipped messages, maybe of
                // other partitions: those are committed with it.
                match self.shared.filter {
                    Some(_) => self.shared.commit().await?,
                    None => self.shared.commit_partition(partition).await?,
                }
            }
        }
    }

    /// The next message, polling when the buffer is empty; does not mark it consumed.
    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Result<ReceivedMessage, ClientError>> {
        if let Some(message) = self.buffer.pop_front() {
            return Poll::Ready(Ok(message));
        }
        if let Poller::Idle(_) = self.poller {
            if let Poller::Idle(fetcher) = std::mem::replace(&mut self.poller, Poller::Switching) {
                self.poller = Poller::Fetching(Box::pin(fetcher.fetch()));
            }
        }
        let Poller::Fetching(fetch) = &mut self.poller else {
            return Poll::Ready(Err(ClientError::InvalidRequest("the consumer lost its poller".to_string())));
        };
        let (mut fetcher, result) = std::task::ready!(fetch.as_mut().poll(cx));
        self.advances.append(&mut fetcher.advances);
        self.poller = Poller::Idle(fetcher);
        match result {
            Ok(messages) => {
                self.buffer.extend(messages);
                match self.buffer.pop_front() {
                    Some(message) => Poll::Ready(Ok(message)),
                    None => {
                        // Nothing came (the fetch already waited, unless it moved past filtered
                        // messages); poll again on the next turn.
                        self.settle_advances();
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    }
                }
            }
            Err(error) => Poll::Ready(Err(error)),
        }
    }

    /// Once every fetched message was handed out, the positions move past the filtered-out
    /// messages that followed them.
    fn settle_advances(&mut self) {
        if self.buffer.is_empty() {
            for (partition, offset) in self.advances.drain(..) {
                self.shared.advance_consumed(partition, offset);
            }
        }
    }

    fn stop_tasks(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}

/// Never ends; yields an error when a poll fails (the next item polls again from the same
/// positions). A message counts as consumed when it is handed out.
impl Stream for Consumer {
    type Item = Result<ReceivedMessage, ClientError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let message = std::task::ready!(this.poll_message(cx));
        if let Ok(message) = &message {
            this.shared.mark_consumed(message.partition, message.offset);
            this.settle_advances();
        }
        Poll::Ready(Some(message))
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.stop_tasks();
        if self.finished {
            return;
        }
        let shared = self.shared.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = shared.finish().await {
                    tracing::warn!(stream = %shared.stream, topic = %shared.topic, %error,
                        "dropped consumer could not commit or leave");
                }
            });
        }
    }
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("stream", &self.shared.stream)
            .field("topic", &self.shared.topic)
            .field("identity", &self.shared.identity)
            .field("auto_commit", &self.shared.auto_commit)
            .field("buffered", &self.buffer.len())
            .finish_non_exhaustive()
    }
}

/// A consumer's filter: the values as polls send them, and the exact test.
struct ConsumerFilter {
    values: Vec<String>,
    exact: Filter,
}

/// State shared by the consumer, its poll in flight and its background tasks.
struct Shared {
    router: ShardRouter,
    stream: String,
    topic: String,
    identity: Identity,
    /// Deliver only the messages this filter wants.
    filter: Option<ConsumerFilter>,
    auto_commit: AutoCommit,
    session_timeout: Duration,
    state: Mutex<SharedState>,
    /// Held while storing offsets, so commits never overtake each other.
    commit_lock: tokio::sync::Mutex<()>,
    /// Held while joining, heartbeating or leaving, so a member never joins twice.
    membership_lock: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct SharedState {
    /// The group membership, once joined (none after leaving).
    member: Option<Member>,
    /// Per partition, the offset after the last consumed message.
    consumed: BTreeMap<u32, u64>,
    /// Per partition, the offset last stored by this consumer.
    committed: BTreeMap<u32, u64>,
}

struct Member {
    id: u64,
    generation: u64,
    partitions: Vec<u32>,
    refreshed: Instant,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, SharedState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The filter values polls send (empty: no filter).
    fn filter_values(&self) -> Vec<String> {
        self.filter.as_ref().map(|filter| filter.values.clone()).unwrap_or_default()
    }

    fn match_unfiltered(&self) -> bool {
        self.filter.as_ref().is_some_and(|filter| filter.exact.match_unfiltered())
    }

    fn exact_filter(&self) -> Option<&Filter> {
        self.filter.as_ref().map(|filter| &filter.exact)
    }

    fn group(&self) -> Option<&str> {
        match &self.identity {
            Identity::Group(group) => Some(group),
            Identity::Named(_) => None,
        }
    }

    /// Records that the message at `offset` was consumed. The latest call wins: a group
    /// member that regains a partition may legitimately consume it again from an earlier
    /// offset.
    fn mark_consumed(&self, partition: u32, offset: u64) {
        self.state().consumed.insert(partition, offset.saturating_add(1));
    }

    /// Moves the consumed position of a partition this consumer reads forward to `next` (past
    /// messages the filter dropped); never backwards.
    fn advance_consumed(&self, partition: u32, next: u64) {
        let mut state = self.state();
        let held = match (&self.identity, &state.member) {
            (Identity::Named(_), _) => true,
            (Identity::Group(_), Some(member)) => member.partitions.binary_search(&partition).is_ok(),
            (Identity::Group(_), None) => false,
        };
        if held {
            let consumed = state.consumed.entry(partition).or_insert(next);
            *consumed = (*consumed).max(next);
        }
    }

    /// Joins the group (a fresh member id), replacing any membership held.
    async fn join(&self) -> Result<u64, ClientError> {
        let Some(group) = self.group() else {
            return Err(ClientError::InvalidRequest("a named consumer has no group to join".to_string()));
        };
        let _membership = self.membership_lock.lock().await;
        self.join_locked(group).await
    }

    async fn join_locked(&self, group: &str) -> Result<u64, ClientError> {
        let request = JoinGroup {
            stream: self.stream.clone(),
            topic: self.topic.clone(),
            group: group.to_string(),
            create_if_missing: true,
            session_timeout_ms: millis(self.session_timeout),
        };
        let membership = self.router.base().join_group(&request).await?;
        tracing::debug!(%group, member_id = membership.member_id, generation = membership.generation,
            partitions = ?membership.partitions, "joined consumer group");
        let id = membership.member_id;
        self.set_membership(membership);
        Ok(id)
    }

    /// Takes a join or heartbeat answer; forgets the positions of partitions no longer held
    /// (their new reader keeps its own).
    fn set_membership(&self, membership: Membership) {
        let mut state = self.state();
        let mut partitions = membership.partitions;
        partitions.sort_unstable();
        partitions.dedup();
        let held = |partition: &u32| partitions.binary_search(partition).is_ok();
        state.consumed.retain(|partition, _| held(partition));
        state.committed.retain(|partition, _| held(partition));
        state.member = Some(Member {
            id: membership.member_id,
            generation: membership.generation,
            partitions,
            refreshed: Instant::now(),
        });
    }

    /// The member id, joining first when there is none.
    async fn member_id(&self) -> Result<u64, ClientError> {
        let known = self.state().member.as_ref().map(|member| member.id);
        match known {
            Some(id) => Ok(id),
            None => self.join().await,
        }
    }

    /// Joins again after the server forgot member `stale` (unless another task already did).
    async fn rejoin(&self, stale: u64) -> Result<(), ClientError> {
        let Some(group) = self.group() else {
            return Ok(());
        };
        let _membership = self.membership_lock.lock().await;
        if self.state().member.as_ref().is_some_and(|member| member.id != stale) {
            return Ok(());
        }
        tracing::info!(%group, member_id = stale, "consumer group membership lost; joining again");
        self.join_locked(group).await.map(drop)
    }

    /// One heartbeat: refreshes the assignment, or joins again when the membership expired.
    async fn heartbeat(&self) -> Result<(), ClientError> {
        let Some(group) = self.group() else {
            return Ok(());
        };
        let _membership = self.membership_lock.lock().await;
        let Some(id) = self.state().member.as_ref().map(|member| member.id) else {
            return Ok(()); // Left already.
        };
        match self.router.base().heartbeat(&self.stream, &self.topic, group, id).await {
            Ok(membership) => {
                let changed = self
                    .state()
                    .member
                    .as_ref()
                    .is_some_and(|member| member.generation != membership.generation);
                if changed {
                    tracing::debug!(%group, member_id = id, generation = membership.generation,
                        partitions = ?membership.partitions, "consumer group rebalanced");
                }
                self.set_membership(membership);
                Ok(())
            }
            Err(error) if error.status() == Some(Status::UnknownMember) => {
                tracing::info!(%group, member_id = id, "consumer group membership expired; joining again");
                self.join_locked(group).await.map(drop)
            }
            Err(error) => Err(error),
        }
    }

    /// The member's partitions, refreshed with a heartbeat when older than `max_age`.
    async fn assignment(&self, max_age: Duration) -> Result<Vec<u32>, ClientError> {
        self.member_id().await?;
        let fresh = self.state().member.as_ref().is_some_and(|member| member.refreshed.elapsed() < max_age);
        if !fresh {
            self.heartbeat().await?;
        }
        Ok(self.state().member.as_ref().map(|member| member.partitions.clone()).unwrap_or_default())
    }

    /// Partitions whose consumed position differs from what was last stored, and may be
    /// committed (a group member commits only what it holds).
    fn uncommitted(&self, only: Option<u32>) -> Vec<(u32, u64)> {
        let state = self.state();
        let held = |partition: &u32| match (&self.identity, &state.member) {
            (Identity::Named(_), _) => true,
            (Identity::Group(_), Some(member)) => member.partitions.binary_search(partition).is_ok(),
            (Identity::Group(_), None) => false,
        };
        state
            .consumed
            .iter()
            .filter(|(partition, _)| only.is_none_or(|only| only == **partition))
            .filter(|(partition, offset)| state.committed.get(partition) != Some(offset) && held(partition))
            .map(|(&partition, &offset)| (partition, offset))
            .collect()
    }

    /// Stores every uncommitted consumed position.
    async fn commit(&self) -> Result<(), ClientError> {
        self.commit_some(None).await
    }

    /// Stores one partition's consumed position if it moved.
    async fn commit_partition(&self, partition: u32) -> Result<(), ClientError> {
        self.commit_some(Some(partition)).await
    }

    async fn commit_some(&self, only: Option<u32>) -> Result<(), ClientError> {
        let _commit = self.commit_lock.lock().await;
        for (partition, offset) in self.uncommitted(only) {
            let client = self.router.client_for(&self.stream, &self.topic, partition).await?;
            let consumer = self.identity.consumer_ref();
            client.store_offset(&self.stream, &self.topic, partition, consumer, offset).await?;
            self.state().committed.insert(partition, offset);
        }
        Ok(())
    }

    /// Commits as the mode says, then leaves the group; reports the first failure.
    async fn finish(&self) -> Result<(), ClientError> {
        let committed = match self.auto_commit {
            AutoCommit::Interval(_) | AutoCommit::AfterHandler => self.commit().await,
            AutoCommit::Disabled | AutoCommit::AfterPoll => Ok(()),
        };
        let left = self.leave().await;
        committed.and(left)
    }

    async fn leave(&self) -> Result<(), ClientError> {
        let Some(group) = self.group() else {
            return Ok(());
        };
        let _membership = self.membership_lock.lock().await;
        let Some(member) = self.state().member.take() else {
            return Ok(());
        };
        match self.router.base().leave_group(&self.stream, &self.topic, group, member.id).await {
            Err(error) if error.status() != Some(Status::UnknownMember) => Err(error),
            _ => Ok(()),
        }
    }
}

/// Heartbeats every `every` while the consumer lives.
async fn heartbeat_loop(shared: Weak<Shared>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if let Err(error) = shared.heartbeat().await {
            tracing::warn!(stream = %shared.stream, topic = %shared.topic, %error, "consumer heartbeat failed");
        }
    }
}

/// Commits the consumed positions every `every` while the consumer lives.
async fn commit_loop(shared: Weak<Shared>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if let Err(error) = shared.commit().await {
            tracing::warn!(stream = %shared.stream, topic = %shared.topic, %error, "consumer commit failed");
        }
    }
}

/// The read state: what to poll next and from where. Owned by the poll in flight.
struct Fetcher {
    shared: Arc<Shared>,
    strategy: PollStrategy,
    batch_size: u32,
    max_bytes: u32,
    polling_interval: Duration,
    /// The partitions polled round robin (a group member's: its assignment).
    partitions: Vec<u32>,
    /// The index in `partitions` polled next.
    cursor: usize,
    /// Per partition, the offset after the last record fetched.
    positions: BTreeMap<u32, u64>,
    /// Where partitions without a position start.
    starts: BTreeMap<u32, PollStrategy>,
    /// Polls in a row that returned nothing.
    empty_polls: usize,
    /// Group poll: a poll has returned records, so the server keeps the place (`Next`).
    group_polled: bool,
    /// Group member polling by partition: when the assignment was last looked at.
    assignment_refreshed: Option<Instant>,
    /// Since when polls keep answering that the topic or partition does not exist.
    missing_since: Option<Instant>,
    /// Reading by push subscriptions instead of polls (named consumers).
    push: Option<Pushing>,
    /// The single-active hook.
    on_update: Option<UpdateHook>,
    /// Filtering: positions past the messages dropped at the end of each partition's answer,
    /// taken by the consumer with the fetched messages.
    advances: Vec<(u32, u64)>,
    /// The last fetch moved a position (maybe only past skipped batches).
    progressed: bool,
}

impl Fetcher {
    /// One poll (or one sweep): the messages it brought, possibly none after waiting.
    async fn fetch(mut self: Box<Self>) -> (Box<Self>, Result<Vec<ReceivedMessage>, ClientError>) {
        let started = Instant::now();
        self.progressed = false;
        let result = match (&self.shared.identity, self.shared.auto_commit) {
            (Identity::Group(_), AutoCommit::AfterPoll) => {
                match self.shared.assignment(ASSIGNMENT_REFRESH_INTERVAL).await {
                    Ok(_) => self.fetch_group().await,
                    Err(error) => Err(error),
                }
            }
            (Identity::Group(_), _) => match self.refresh_assignment().await {
                Ok(()) => self.fetch_partitions().await,
                Err(error) => Err(error),
            },
            (Identity::Named(_), _) if self.push.is_some() => self.fetch_pushed().await,
            (Identity::Named(_), _) => self.fetch_partitions().await,
        };
        // A filtered answer may bring nothing but a position past skipped batches: more may
        // follow at once, so there is no wait then.
        if matches!(&result, Ok(messages) if messages.is_empty()) && !self.progressed {
            let rest = self.polling_interval.saturating_sub(started.elapsed());
            tokio::time::sleep(rest).await;
        }
        (self, result)
    }

    /// A group poll: the server reads the member's assignment and stores the group's offsets.
    async fn fetch_group(&mut self) -> Result<Vec<ReceivedMessage>, ClientError> {
        let shared = self.shared.clone();
        let member_id = shared.member_id().await?;
        let group = shared.identity.name().to_string();
        let strategy = if self.group_polled { PollStrategy::Next } else { self.strategy };
        let request = PollRequest {
            stream: shared.stream.clone(),
            topic: shared.topic.clone(),
            target: PollTarget::Group(GroupTarget { group, member_id }),
            strategy,
            max_messages: self.batch_size,
            max_bytes: self.max_bytes,
            max_wait_ms: millis(self.polling_interval),
            auto_commit: true,
            filter: shared.filter_values(),
            match_unfiltered: shared.match_unfiltered(),
        };
        let polled = match shared.router.base().poll(&request).await {
            Ok(polled) => polled,
            Err(error) if error.status() == Some(Status::UnknownMember) => {
                shared.rejoin(member_id).await?;
                return Ok(Vec::new());
            }
            Err(error) if is_missing(&error) => return self.tolerate_missing(error).await,
            Err(error) if error.status() == Some(Status::OffsetOutOfRange) && !self.group_polled => {
                tracing::warn!(%error, "group poll start is gone; starting at the first offsets");
                self.strategy = PollStrategy::First;
                return Ok(Vec::new());
            }
            Err(error) => return Err(error),
        };
        self.missing_since = None;
        let moved = polled.response.partitions.iter().any(|p| p.next_offset > p.start_offset);
        self.progressed |= moved;
        // A filtered answer may only move past skipped batches; the server stored that place,
        // so later polls continue with `Next` instead of rescanning from the strategy's start.
        self.group_polled |= moved && shared.filter.is_some();
        let Received { messages, stopped, advances } = received_messages(&polled, shared.exact_filter())?;
        self.advances.extend(advances);
        // The server stored the group's offsets past the whole answer when it answered, so a
        // partition cut short here is not read again by `Next`: the records before the bad batch
        // are delivered, and the batch is reported (as the error when nothing else came).
        if messages.is_empty() {
            if let Some(first) = stopped.into_iter().next() {
                return Err(first.error);
            }
            return Ok(messages);
        }
        for skipped in &stopped {
            tracing::warn!(partition = skipped.partition, error = %skipped.error,
                "group poll: a batch that cannot be read was passed over");
        }
        self.group_polled |= !messages.is_empty();
        Ok(messages)
    }

    /// A group member polling by partition: follows the current assignment, forgetting the
    /// positions of partitions it no longer holds.
    async fn refresh_assignment(&mut self) -> Result<(), ClientError> {
        let due = self.assignment_refreshed.is_none_or(|at| at.elapsed() >= ASSIGNMENT_REFRESH_INTERVAL);
        if self.cursor != 0 && !due {
            return Ok(());
        }
        let first = self.assignment_refreshed.is_none();
        let assignment = self.shared.assignment(ASSIGNMENT_REFRESH_INTERVAL).await?;
        self.assignment_refreshed = Some(Instant::now());
        if assignment == self.partitions {
            return Ok(());
        }
        let held: BTreeSet<u32> = assignment.iter().copied().collect();
        self.positions.retain(|partition, _| held.contains(partition));
        self.starts.retain(|partition, _| held.contains(partition));
        for &partition in &assignment {
            // The strategy applies to the first assignment; later gains resume the group's place.
            let start = if first { self.strategy } else { PollStrategy::Next };
            if !self.positions.contains_key(&partition) {
                self.starts.entry(partition).or_insert(start);
            }
        }
        self.partitions = assignment;
        self.cursor = 0;
        self.empty_polls = 0;
        Ok(())
    }

    /// Round robin over the partitions; a sweep of all with a long poll once a whole round came
    /// back empty.
    async fn fetch_partitions(&mut self) -> Result<Vec<ReceivedMessage>, ClientError> {
        if self.partitions.is_empty() {
            return Ok(Vec::new());
        }
        if self.empty_polls >= self.partitions.len() {
            return self.sweep().await;
        }
        debug_assert!(
            self.cursor < self.partitions.len(),
            "cursor {} of {}",
            self.cursor,
            self.partitions.len()
        );
        let partition = self.partitions[self.cursor % self.partitions.len()];
        self.cursor = (self.cursor + 1) % self.partitions.len();
        let answer = self.poll_partition(partition, Duration::ZERO).await;
        let messages = self.absorb(partition, answer).await?;
        self.empty_polls = if messages.is_empty() { self.empty_polls + 1 } else { 0 };
        Ok(messages)
    }

    /// Push mode: (re)subscribes partitions without a live subscription from their positions,
    /// then takes the next delivery (waiting up to the polling interval). A delivery that does
    /// not start at its partition's position (one still queued from an ended subscription) is
    /// dropped.
    async fn fetch_pushed(&mut self) -> Result<Vec<ReceivedMessage>, ClientError> {
        let Some(mut pushing) = self.push.take() else { return Ok(Vec::new()) };
        let result = self.fetch_pushed_with(&mut pushing).await;
        self.push = Some(pushing);
        result
    }

    async fn fetch_pushed_with(
        &mut self,
        pushing: &mut Pushing,
    ) -> Result<Vec<ReceivedMessage>, ClientError> {
        let shared = self.shared.clone();
        let target = (shared.stream.as_str(), shared.topic.as_str(), shared.identity.name());
        let (positions, starts, strategy) = (&self.positions, &self.starts, self.strategy);
        let start = |partition: u32| match positions.get(&partition) {
            Some(&offset) => PollStrategy::Offset(offset),
            None => starts.get(&partition).copied().unwrap_or(strategy),
        };
        pushing.ensure(&shared.router, target, &self.partitions, start).await?;
        let Some((task, delivered)) = pushing.next(self.polling_interval).await else {
            return Ok(Vec::new());
        };
        let polled = match delivered {
            Ok(Item::Polled(polled)) => polled,
            Ok(Item::Update(update, answer)) => {
                let offset = self.consumer_update(&update).await;
                let _ = answer.send(offset);
                return Ok(Vec::new());
            }
            Err(error) if error.is_connection_error() => {
                tracing::debug!(task, %error, "subscription lost; subscribing again");
                return Ok(Vec::new());
            }
            Err(error) if error.status() == Some(Status::OffsetOutOfRange) => {
                // Retention removed the position, as for a poll: start over at the first offset.
                tracing::warn!(task, %error, "subscription position is gone; restarting at the first offset");
                let partitions = if task == WHOLE_TOPIC { self.partitions.clone() } else { vec![task] };
                for partition in partitions {
                    self.positions.remove(&partition);
                    self.starts.insert(partition, PollStrategy::First);
                }
                return Ok(Vec::new());
            }
            Err(error) => return Err(error),
        };
        let Some(partition) = polled.response.partitions.first().map(|marks| marks.partition) else {
            return Ok(Vec::new());
        };
        let start_offset = polled.response.partitions.first().map(|marks| marks.start_offset);
        if matches!((self.positions.get(&partition), start_offset), (Some(at), Some(start)) if *at != start) {
            return Ok(Vec::new());
        }
        let delivered_to = polled.response.partitions.first().map(|marks| marks.next_offset);
        let messages = match self.absorb(partition, Ok(polled)).await {
            Ok(messages) => messages,
            Err(error) => {
                pushing.restart(partition);
                return Err(error);
            }
        };
        let after = self.positions.get(&partition).copied();
        if after != delivered_to {
            // The partition stopped at a batch it cannot read: subscribe again from there.
            pushing.restart(partition);
        }
        if shared.auto_commit == AutoCommit::AfterPoll {
            if let Some(offset) = after {
                tokio::spawn(store_fetched(shared, partition, offset));
            }
        }
        Ok(messages)
    }

    /// A single-active hand-over on `update.partition`. Deactivated: stores what was consumed
    /// there (the next member starts after it), tells the hook. Activated: forgets the old
    /// position and answers where to start: the hook's choice, otherwise the stored offset of
    /// the name, otherwise the configured strategy.
    async fn consumer_update(&mut self, update: &ConsumerUpdateRequest) -> PollStrategy {
        let partition = update.partition;
        let shared = self.shared.clone();
        if !update.active {
            if let Err(error) = shared.commit_partition(partition).await {
                tracing::warn!(partition, %error, "storing the offset before stepping down failed");
            }
            self.positions.remove(&partition);
        }
        let stored = match shared.router.client_for(&shared.stream, &shared.topic, partition).await {
            Ok(client) => client
                .get_offset(&shared.stream, &shared.topic, partition, shared.identity.consumer_ref())
                .await
                .ok()
                .and_then(|info| info.stored),
            Err(_) => None,
        };
        let context = UpdateContext {
            stream: shared.stream.clone(),
            topic: shared.topic.clone(),
            name: shared.identity.name().to_string(),
            partition,
            stored_offset: stored,
        };
        let chosen = self.on_update.as_ref().map(|hook| hook(&context, update.active));
        if !update.active {
            return PollStrategy::Next;
        }
        self.positions.remove(&partition);
        self.starts.remove(&partition);
        chosen.unwrap_or(match stored {
            Some(offset) => PollStrategy::Offset(offset),
            None => self.strategy,
        })
    }

    /// Polls every partition at once, each waiting up to the polling interval for data.
    async fn sweep(&mut self) -> Result<Vec<ReceivedMessage>, ClientError> {
        let wait = self.polling_interval;
        let partitions = self.partitions.clone();
        let answers = futures::future::join_all(
            partitions.iter().map(|&partition| self.poll_partition(partition, wait)),
        )
        .await;
        let mut messages = Vec::new();
        let mut failure = None;
        for (&partition, answer) in partitions.iter().zip(answers) {
            match self.absorb(partition, answer).await {
                Ok(more) => messages.extend(more),
                Err(error) => failure = Some(error),
            }
        }
        match failure {
            // Messages already fetched (and maybe committed by the server) are not dropped; the
            // failing partition is polled again next time.
            Some(error) if messages.is_empty() => Err(error),
            Some(error) => {
                tracing::warn!(%error, "a partition poll failed during a sweep");
                Ok(messages)
            }
            None => {
                if !messages.is_empty() {
                    self.empty_polls = 0;
                }
                Ok(messages)
            }
        }
    }

    /// One partition's poll from its owner shard.
    async fn poll_partition(&self, partition: u32, wait: Duration) -> Result<Polled, ClientError> {
        let shared = &self.shared;
        let client = shared.router.client_for(&shared.stream, &shared.topic, partition).await?;
        let strategy = self.start_of(&client, partition).await?;
        let request = PollRequest {
            stream: shared.stream.clone(),
            topic: shared.topic.clone(),
            // A group member polling by partition never sends `Next` and never auto-commits
            // here, so the name (the group's) keys nothing on the server.
            target: PollTarget::Partition(PartitionTarget {
                partition,
                consumer: shared.identity.name().to_string(),
            }),
            strategy,
            max_messages: self.batch_size,
            max_bytes: self.max_bytes,
            max_wait_ms: millis(wait),
            auto_commit: shared.auto_commit == AutoCommit::AfterPoll
                && matches!(shared.identity, Identity::Named(_)),
            filter: shared.filter_values(),
            match_unfiltered: shared.match_unfiltered(),
        };
        client.poll(&request).await
    }

    /// Where a partition's next poll starts; a group's `Next` is resolved to its stored offset.
    async fn start_of(&self, client: &Client, partition: u32) -> Result<PollStrategy, ClientError> {
        if let Some(&offset) = self.positions.get(&partition) {
            return Ok(PollStrategy::Offset(offset));
        }
        let strategy = self.starts.get(&partition).copied().unwrap_or(PollStrategy::Next);
        match (&self.shared.identity, strategy) {
            (Identity::Group(group), PollStrategy::Next) => {
                let consumer = ConsumerRef::Group(group.clone());
                let info =
                    client.get_offset(&self.shared.stream, &self.shared.topic, partition, consumer).await?;
                Ok(info.stored.map_or(PollStrategy::First, PollStrategy::Offset))
            }
            _ => Ok(strategy),
        }
    }

    /// Takes a partition poll's answer: its messages, and the partition's new position.
    async fn absorb(
        &mut self,
        partition: u32,
        answer: Result<Polled, ClientError>,
    ) -> Result<Vec<ReceivedMessage>, ClientError> {
        let polled = match answer {
            Ok(polled) => polled,
            Err(error) if is_missing(&error) => return self.tolerate_missing(error).await,
            Err(error) if error.status() == Some(Status::OffsetOutOfRange) => {
                tracing::warn!(partition, %error, "consumer position is gone; restarting at the first offset");
                self.positions.remove(&partition);
                self.starts.insert(partition, PollStrategy::First);
                return Ok(Vec::new());
            }
            Err(error) => return Err(error),
        };
        self.missing_since = None;
        let Received { messages, stopped, advances } =
            received_messages(&polled, self.shared.exact_filter())?;
        if let Some(stopped) = stopped.into_iter().next() {
            // Deliver what came before the bad batch; the next poll starts at the bad batch and
            // reports it. With nothing before it, report it now and stay where we are.
            let Some(resume_at) = stopped.resume_at else { return Err(stopped.error) };
            tracing::warn!(partition, offset = resume_at, error = %stopped.error, "a batch cannot be read");
            self.positions.insert(partition, resume_at);
            self.starts.remove(&partition);
            return Ok(messages);
        }
        for marks in &polled.response.partitions {
            if marks.partition != partition {
                return Err(ClientError::Protocol(format!(
                    "a poll of partition {partition} answered for partition {}",
                    marks.partition
                )));
            }
            self.progressed |= marks.next_offset > marks.start_offset;
            self.positions.insert(partition, marks.next_offset);
            self.starts.remove(&partition);
        }
        self.advances.extend(advances);
        Ok(messages)
    }

    /// A poll answered that the stream, topic or partition does not exist. Right after a topic
    /// is created its owner shard may not serve it yet, and the shard map may be stale, so this
    /// is treated as transient (the map is refreshed, the poll retried) for up to
    /// [`MISSING_GRACE`] in a row; after that the error is reported.
    async fn tolerate_missing(&mut self, error: ClientError) -> Result<Vec<ReceivedMessage>, ClientError> {
        let since = *self.missing_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= MISSING_GRACE {
            return Err(error);
        }
        tracing::debug!(%error, "consumer topic not served yet; retrying");
        if let Err(refresh) = self.shared.router.refresh().await {
            tracing::debug!(%refresh, "shard map refresh failed");
        }
        Ok(Vec::new())
    }
}

/// Push mode's [`AutoCommit::AfterPoll`]: stores a delivery's end once it was fetched, as the
/// server does for a poll's answer.
async fn store_fetched(shared: Arc<Shared>, partition: u32, offset: u64) {
    let stored = async {
        let client = shared.router.client_for(&shared.stream, &shared.topic, partition).await?;
        let consumer = shared.identity.consumer_ref();
        client.store_offset(&shared.stream, &shared.topic, partition, consumer, offset).await
    };
    if let Err(error) = stored.await {
        tracing::warn!(partition, offset, %error, "storing a delivery's offset failed");
    }
}

/// A partition whose batch could not be read (corrupt, or a compressed batch refused): the
/// records before it are delivered, the rest of the partition's answer is not.
struct Stopped {
    partition: u32,
    /// The offset after the last record delivered from the partition (`None`: none was).
    resume_at: Option<u64>,
    error: ClientError,
}

/// The messages of a poll answer, and the partitions cut short by a batch that cannot be read.
struct Received {
    messages: Vec<ReceivedMessage>,
    stopped: Vec<Stopped>,
    /// With a filter: each partition read to its `next_offset` (not stopped) and that offset,
    /// the position past the messages the filter dropped.
    advances: Vec<(u32, u64)>,
}

/// Copies a poll answer's records in `[start_offset, next_offset)` of each partition out as
/// messages sharing the answer's buffer. Refuses an answer whose marks run backwards, so no
/// position moves on it. A batch that fails validation, or a compressed batch the client refused
/// to inflate, ends its partition: the records before it are kept, and the partition is reported
/// in [`Received::stopped`] with the error that names it.
///
/// With a filter, only the records it wants are kept: batches whose header rules them all out
/// are passed over unopened (not even inflated), the others are filtered record by record.
fn received_messages(polled: &Polled, filter: Option<&Filter>) -> Result<Received, ClientError> {
    let mut received = Received { messages: Vec::new(), stopped: Vec::new(), advances: Vec::new() };
    for partition in polled.partitions() {
        let info = partition.info;
        if info.next_offset < info.start_offset {
            return Err(ClientError::Protocol(format!(
                "partition {} answered next offset {} below its start {}",
                info.partition, info.next_offset, info.start_offset
            )));
        }
        let messages = &mut received.messages;
        let before = messages.len();
        let mut stopped = false;
        for batch in partition.batches() {
            let readable = batch
                .map_err(|error| {
                    ClientError::Protocol(format!(
                        "partition {} returned a bad batch: {error}",
                        info.partition
                    ))
                })
                .and_then(|batch| match filter {
                    Some(filter) if !batch_may_match(batch.header(), filter) => Ok(None),
                    _ => partition.check_plain(batch).map(Some),
                });
            let batch = match readable {
                Ok(Some(batch)) => batch,
                Ok(None) => continue,
                Err(error) => {
                    let resume_at = messages[before..].last().map(|last| last.offset + 1);
                    received.stopped.push(Stopped { partition: info.partition, resume_at, error });
                    stopped = true;
                    break;
                }
            };
            let header = batch.header();
            if header.next_offset() <= info.start_offset || header.base_offset >= info.next_offset {
                continue;
            }
            for record in batch.records() {
                if record.offset < info.start_offset || record.offset >= info.next_offset {
                    continue;
                }
                if crate::protocol::messages::is_removed(&info.removed, record.offset) {
                    continue;
                }
                if filter.is_some_and(|filter| !filter.matches(record.filter_value)) {
                    continue;
                }
                messages.push(ReceivedMessage {
                    partition: info.partition,
                    offset: record.offset,
                    timestamp_us: record.timestamp_us,
                    append_timestamp_us: header.append_timestamp_us,
                    key: record.key.map(|key| share(&polled.payload, key)),
                    filter_value: record.filter_value.map(|value| share(&polled.payload, value)),
                    headers: record
                        .headers()
                        .map(|(key, value)| (share(&polled.payload, key), share(&polled.payload, value)))
                        .collect(),
                    payload: share(&polled.payload, record.payload),
                });
            }
        }
        let taken = &messages[before..];
        debug_assert!(taken.windows(2).all(|pair| pair[0].offset < pair[1].offset), "offsets out of order");
        if taken.len() as u64 > info.next_offset - info.start_offset {
            return Err(ClientError::Protocol(format!(
                "partition {} returned {} records for offsets {}..{}",
                info.partition,
                taken.len(),
                info.start_offset,
                info.next_offset
            )));
        }
        if filter.is_some() && !stopped && info.next_offset > info.start_offset {
            received.advances.push((info.partition, info.next_offset));
        }
    }
    Ok(received)
}

/// `part` as a slice of `whole` without copying; copied should it lie outside (it cannot: the
/// records are parsed out of `whole`).
fn share(whole: &Bytes, part: &[u8]) -> Bytes {
    let start = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    match start.checked_add(part.len()) {
        Some(end) if end <= whole.len() => whole.slice(start..end),
        _ => Bytes::copy_from_slice(part),
    }
}

/// Milliseconds for a wire field, saturating.
fn millis(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch::{patch_server_fields, BatchBuilder, Message};
    use crate::protocol::messages::{PollResponse, PolledPartition};

    fn stored_batch(base_offset: u64, append_us: u64, payloads: &[&str]) -> Vec<u8> {
        let mut builder = BatchBuilder::new(0, 0);
        for payload in payloads {
            let headers: [(&[u8], &[u8]); 1] = [(b"h", payload.as_bytes())];
            let message = Message {
                key: Some(b"k"),
                headers: &headers,
                payload: payload.as_bytes(),
                ..Message::default()
            };
            builder.push(&message).expect("push");
        }
        let mut bytes = builder.finish().expect("finish");
        patch_server_fields(&mut bytes, base_offset, append_us);
        bytes
    }

    fn marks(partition: u32, start_offset: u64, next_offset: u64, bytes: &[u8]) -> PolledPartition {
        PolledPartition {
            partition,
            start_offset,
            next_offset,
            high_watermark: next_offset,
            payload_bytes: bytes.len() as u32,
            removed: Vec::new(),
        }
    }

    #[test]
    fn messages_share_the_answer_and_skip_outside_the_marks() {
        let mut zero = stored_batch(10, 77, &["a", "b", "c"]);
        zero.extend(stored_batch(13, 78, &["d"]));
        let one = stored_batch(0, 5, &["x"]);
        let response = PollResponse { partitions: vec![marks(0, 11, 14, &zero), marks(1, 0, 1, &one)] };
        let polled = Polled::new(response, Bytes::from([zero, one].concat())).expect("consistent");
        let messages = received_messages(&polled, None).expect("valid").messages;
        let seen: Vec<(u32, u64, u64, &[u8])> =
            messages.iter().map(|m| (m.partition, m.offset, m.append_timestamp_us, &m.payload[..])).collect();
        assert_eq!(seen, [(0, 11, 77, &b"b"[..]), (0, 12, 77, b"c"), (0, 13, 78, b"d"), (1, 0, 5, b"x")]);
        let first = &messages[0];
        assert_eq!(first.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(first.headers, vec![(Bytes::from_static(b"h"), Bytes::from_static(b"b"))]);
        let range = polled.payload.as_ptr() as usize..polled.payload.as_ptr() as usize + polled.payload.len();
        assert!(range.contains(&(first.payload.as_ptr() as usize)), "payload is a slice, not a copy");
    }

    #[test]
    fn answers_with_backward_marks_or_bad_batches_are_refused() {
        let batch = stored_batch(0, 1, &["a"]);
        let backwards = PollResponse { partitions: vec![marks(0, 5, 4, &batch)] };
        let polled = Polled::new(backwards, Bytes::from(batch.clone())).expect("lengths agree");
        assert!(matches!(received_messages(&polled, None), Err(ClientError::Protocol(_))));
        let mut corrupt = batch.clone();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 1;
        let response = PollResponse { partitions: vec![marks(0, 0, 1, &corrupt)] };
        let polled = Polled::new(response, Bytes::from(corrupt.clone())).expect("lengths agree");
        let received = received_messages(&polled, None).expect("the answer itself is consistent");
        assert!(received.messages.is_empty());
        assert!(matches!(
            received.stopped.as_slice(),
            [Stopped { partition: 0, resume_at: None, error: ClientError::Protocol(_) }]
        ));
    }

    #[test]
    fn records_before_a_bad_batch_are_kept_and_the_partition_stops_there() {
        let mut zero = stored_batch(0, 1, &["a", "b"]);
        let mut corrupt = stored_batch(2, 1, &["c"]);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 1;
        zero.extend(corrupt);
        zero.extend(stored_batch(3, 1, &["d"]));
        let one = stored_batch(0, 1, &["x"]);
        let response = PollResponse { partitions: vec![marks(0, 0, 4, &zero), marks(1, 0, 1, &one)] };
        let polled = Polled::new(response, Bytes::from([zero, one].concat())).expect("consistent");
        let received = received_messages(&polled, None).expect("consistent");
        let seen: Vec<(u32, u64)> = received.messages.iter().map(|m| (m.partition, m.offset)).collect();
        assert_eq!(seen, [(0, 0), (0, 1), (1, 0)]);
        assert!(matches!(received.stopped.as_slice(), [Stopped { partition: 0, resume_at: Some(2), .. }]));
    }

    #[test]
    fn a_filter_keeps_exactly_the_wanted_records_and_moves_past_the_rest() {
        let batch = |base: u64, values: &[Option<&str>]| {
            let mut builder = BatchBuilder::new(0, 0);
            for value in values {
                let message = Message { filter_value: value.map(str::as_bytes), ..Message::payload(b"p") };
                builder.push(&message).expect("push");
            }
            let mut bytes = builder.finish().expect("finish");
            patch_server_fields(&mut bytes, base, 1);
            bytes
        };
        let mut zero = batch(0, &[Some("eu"), None, Some("us")]);
        zero.extend(batch(3, &[Some("us"), Some("us")]));
        zero.extend(batch(5, &[None]));
        let response = PollResponse { partitions: vec![marks(0, 0, 9, &zero)] };
        let polled = Polled::new(response, Bytes::from(zero)).expect("consistent");
        let offsets = |filter: &Filter| {
            let received = received_messages(&polled, Some(filter)).expect("valid");
            let offsets: Vec<u64> = received.messages.iter().map(|m| m.offset).collect();
            (offsets, received.advances)
        };
        let eu = Filter::new(&["eu"], false).expect("filter");
        assert_eq!(offsets(&eu), (vec![0], vec![(0, 9)]), "next_offset 9 covers batches skipped upstream");
        let us = Filter::new(&["us", "apac"], false).expect("filter");
        assert_eq!(offsets(&us).0, [2, 3, 4]);
        let eu_and_plain = Filter::new(&["eu"], true).expect("filter");
        assert_eq!(offsets(&eu_and_plain).0, [0, 1, 5]);
        assert!(received_messages(&polled, None).expect("valid").advances.is_empty());
    }

    #[test]
    fn share_copies_only_foreign_slices() {
        let whole = Bytes::from_static(b"hello world");
        let inner = share(&whole, &whole[6..]);
        assert_eq!((&inner[..], inner.as_ptr()), (&b"world"[..], whole[6..].as_ptr()));
        let foreign = share(&whole, b"other");
        assert_eq!(&foreign[..], b"other");
        assert_eq!(share(&whole, &[]).len(), 0);
    }

    #[test]
    fn millis_saturate() {
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert_eq!(millis(Duration::from_secs(u64::MAX)), u32::MAX);
    }
}
