//! The control-path handlers: ping, login, shard metadata, users, streams, topics, partitions,
//! consumer groups and statistics.
//!
//! Run on the connection's shard. Reads come from the shard's catalog snapshot; changes go to the
//! controller (shard 0), which persists them and has every shard serve the result before this
//! handler answers. Invariants: user, stream and topic changes check rights first; passwords are
//! hashed and verified off the shard's core (argon2 is slow on purpose); a connection is closed
//! after `--max-failed-logins` failures, and logins from a peer address with recent failures on
//! this shard wait for a slot that moves back further with each failure (per-shard state in a
//! thread-local table bounded to [`PEER_ENTRIES_MAX`] addresses).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::connection::Session;
use super::data::{group_key, offset_on_owner, topic_group};
use super::handlers::{decode, reply, Context, Reply};
use crate::metadata::auth::{self, Right};
use crate::metadata::catalog::{Catalog, MetadataOp};
use crate::metadata::MetadataError;
use crate::protocol::messages::*;
use crate::shard::error::{BrokerError, BrokerResult};
use crate::shard::groups::GroupSnapshot;
use crate::shard::mesh::{GroupOp, GroupReply, OffsetOp, PartitionKey, ShardMessage};
use crate::shard::Shard;

/// Recent failed logins from one peer address (on one shard) before its logins are spaced out.
const PEER_FAILURES_FREE: u32 = 3;
/// Spacing of a peer's logins after its first failure beyond the free ones; doubles with each
/// further failure up to [`PEER_FAILURE_DELAY_MAX`].
const PEER_FAILURE_DELAY_BASE: Duration = Duration::from_millis(100);
/// The longest spacing between a peer's logins.
const PEER_FAILURE_DELAY_MAX: Duration = Duration::from_secs(5);
/// A peer's failures are forgotten this long after its last one.
const PEER_FAILURE_MEMORY: Duration = Duration::from_secs(60);
/// Peer addresses one shard remembers; when full, forgotten and then the stalest entries go.
pub const PEER_ENTRIES_MAX: usize = 4096;
/// Default consumer-group session timeout when a join asks for 0.
const SESSION_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// Ping.
pub fn ping(shard: &Shard) -> BrokerResult<Reply> {
    reply(&PingResponse { version: env!("CARGO_PKG_VERSION").to_string(), shard: shard.id }, Vec::new())
}

/// Login: verifies the password off-core. A peer address with recent failures waits for its
/// slot first; the connection's `--max-failed-logins`th failure answers `LoginThrottled` and
/// closes the connection.
pub async fn login(shard: &Shard, session: &Session, request: LoginRequest) -> BrokerResult<Reply> {
    let failures_max = shard.config.max_failed_logins;
    if session.failed_logins.get() >= failures_max {
        session.close_after_reply.set(true);
        return Err(throttled(failures_max));
    }
    if let Some(slot) = session.peer.and_then(|peer| peer_login_slot(peer, Instant::now())) {
        glommio::timer::sleep(slot.saturating_duration_since(Instant::now())).await;
    }
    let user = shard.catalog().users.get(&request.user).cloned();
    let hash = user.as_ref().map(|u| u.password_hash.clone()).unwrap_or_default();
    let password = request.password;
    let verified = glommio::executor().spawn_blocking(move || auth::verify_password(&hash, &password)).await;
    match user {
        Some(user) if verified => {
            session.failed_logins.set(0);
            session.user.replace(Some(user.name.clone()));
            reply(&LoginResponse { user_id: user.id, admin: user.admin }, Vec::new())
        }
        _ => {
            let failures = session.failed_logins.get() + 1;
            session.failed_logins.set(failures);
            if let Some(peer) = session.peer {
                peer_failed(peer, Instant::now());
            }
            if failures >= failures_max {
                session.close_after_reply.set(true);
                return Err(throttled(failures_max));
            }
            Err(BrokerError::new(Status::InvalidCredentials, "wrong user name or password"))
        }
    }
}

fn throttled(failures_max: u32) -> BrokerError {
    BrokerError::new(
        Status::LoginThrottled,
        format!("{failures_max} failed logins on this connection: it is closed; wait before trying again"),
    )
}

/// What one shard remembers of a peer address's failed logins.
#[derive(Debug, Clone, Copy)]
struct PeerFailures {
    /// Failures since the peer was last forgotten.
    failures: u32,
    /// When the last one happened.
    last_failure: Instant,
    /// The earliest time the peer's next login may be verified.
    next_slot: Instant,
}

thread_local! {
    /// This shard's failed logins by peer address (each shard is one thread).
    static PEER_FAILURES: RefCell<HashMap<IpAddr, PeerFailures>> = RefCell::new(HashMap::new());
}

/// The spacing of a peer's logins after `failures` recent failures (zero while they are free).
fn peer_delay(failures: u32) -> Duration {
    if failures < PEER_FAILURES_FREE {
        return Duration::ZERO;
    }
    let doublings = (failures - PEER_FAILURES_FREE).min(16);
    PEER_FAILURE_DELAY_BASE.saturating_mul(1 << doublings).min(PEER_FAILURE_DELAY_MAX)
}

/// When a login from `peer` may be verified: `None` at once; otherwise a slot, and the peer's
/// next slot moves back by its current spacing, so concurrent attempts queue up one by one.
fn peer_login_slot(peer: IpAddr, now: Instant) -> Option<Instant> {
    PEER_FAILURES.with(|table| {
        let mut table = table.borrow_mut();
        let entry = table.get_mut(&peer)?;
        if now.saturating_duration_since(entry.last_failure) > PEER_FAILURE_MEMORY {
            table.remove(&peer);
            return None;
        }
        let delay = peer_delay(entry.failures);
        if delay.is_zero() {
            return None;
        }
        let slot = entry.next_slot.max(now);
        entry.next_slot = slot + delay;
        debug_assert!(slot >= now && entry.next_slot > slot);
        Some(slot)
    })
}

/// Records a failed login from `peer`.
fn peer_failed(peer: IpAddr, now: Instant) {
    PEER_FAILURES.with(|table| {
        let mut table = table.borrow_mut();
        if !table.contains_key(&peer) && table.len() >= PEER_ENTRIES_MAX {
            table.retain(|_, entry| now.saturating_duration_since(entry.last_failure) <= PEER_FAILURE_MEMORY);
            if table.len() >= PEER_ENTRIES_MAX {
                let stalest = table.iter().min_by_key(|(_, entry)| entry.last_failure).map(|(ip, _)| *ip);
                if let Some(stalest) = stalest {
                    table.remove(&stalest);
                }
            }
        }
        let entry =
            table.entry(peer).or_insert(PeerFailures { failures: 0, last_failure: now, next_slot: now });
        if now.saturating_duration_since(entry.last_failure) > PEER_FAILURE_MEMORY {
            *entry = PeerFailures { failures: 0, last_failure: now, next_slot: now };
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.last_failure = now;
        debug_assert!(table.len() <= PEER_ENTRIES_MAX);
    })
}

/// Every authenticated control-path kind.
pub async fn dispatch(context: &Context<'_>, kind: Kind, body: &[u8]) -> BrokerResult<Reply> {
    match kind {
        Kind::Metadata => metadata(context),
        Kind::UserCreate => create_user(context, decode(body)?).await,
        Kind::UserDelete => {
            let request: NameRef = decode(body)?;
            context.require_admin("deleting a user")?;
            commit_empty(context, MetadataOp::delete_user(&request.name)).await
        }
        Kind::UserList => {
            context.require_admin("listing users")?;
            let catalog = context.shard.catalog();
            let users = catalog.users.values().map(|u| catalog.user_info(u)).collect();
            reply(&UserList { users }, Vec::new())
        }
        Kind::UserSetPermissions => {
            let request: SetPermissions = decode(body)?;
            context.require_admin("changing permissions")?;
            commit_empty(context, MetadataOp::set_permissions(&request.user, request.permissions)).await
        }
        Kind::StreamCreate => create_stream(context, decode(body)?).await,
        Kind::StreamDelete => {
            let request: NameRef = decode(body)?;
            context.require_admin("deleting a stream")?;
            commit_empty(context, MetadataOp::delete_stream(&request.name)).await
        }
        Kind::StreamList => {
            let catalog = context.shard.catalog();
            let table = context.shard.table();
            let streams = catalog
                .streams
                .values()
                .filter(|s| auth::allowed(&context.user, &s.name, Right::Read))
                .map(|s| catalog.stream_info(s, &table))
                .collect();
            reply(&StreamList { streams }, Vec::new())
        }
        Kind::StreamGet => {
            let request: NameRef = decode(body)?;
            context.require(&request.name, Right::Read)?;
            let catalog = context.shard.catalog();
            let stream = catalog.stream(&request.name)?;
            reply(&catalog.stream_info(stream, &context.shard.table()), Vec::new())
        }
        Kind::TopicCreate => create_topic(context, decode(body)?).await,
        Kind::TopicDelete => {
            let request: TopicRef = decode(body)?;
            context.require(&request.stream, Right::Manage)?;
            commit_empty(context, MetadataOp::delete_topic(&request.stream, &request.topic)).await
        }
        Kind::TopicList => {
            let request: NameRef = decode(body)?;
            context.require(&request.name, Right::Read)?;
            let catalog = context.shard.catalog();
            let table = context.shard.table();
            let stream = catalog.stream(&request.name)?;
            let topics = stream.topics.values().map(|t| catalog.topic_info(stream, t, &table)).collect();
            reply(&TopicList { topics }, Vec::new())
        }
        Kind::TopicGet => {
            let request: TopicRef = decode(body)?;
            context.require(&request.stream, Right::Read)?;
            topic_reply(context, &context.shard.catalog(), &request.stream, &request.topic)
        }
        Kind::PartitionsAdd => {
            let request: AddPartitions = decode(body)?;
            context.require(&request.stream, Right::Manage)?;
            let op = MetadataOp::add_partitions(&request.stream, &request.topic, request.count);
            let catalog = context.shard.commit(op?).await?;
            topic_reply(context, &catalog, &request.stream, &request.topic)
        }
        Kind::GroupCreate => create_group(context, decode(body)?).await,
        Kind::GroupDelete => {
            let request: GroupRef = decode(body)?;
            context.require(&request.stream, Right::Manage)?;
            commit_empty(context, MetadataOp::delete_group(&request.stream, &request.topic, &request.group))
                .await
        }
        Kind::GroupJoin => join_group(context, decode(body)?).await,
        Kind::GroupLeave => {
            let request: MemberRef = decode(body)?;
            let key = member_group(context, &request)?;
            context.shard.group(GroupOp::Leave { key, member_id: request.member_id }).await?;
            reply(&Empty {}, Vec::new())
        }
        Kind::GroupHeartbeat => {
            let request: MemberRef = decode(body)?;
            let key = member_group(context, &request)?;
            let answer =
                context.shard.group(GroupOp::Heartbeat { key, member_id: request.member_id }).await?;
            membership_reply(answer)
        }
        Kind::GroupList => {
            let request: TopicRef = decode(body)?;
            context.require(&request.stream, Right::Read)?;
            let catalog = context.shard.catalog();
            let (_, topic) = catalog.topic(&request.stream, &request.topic)?;
            let mut groups = Vec::with_capacity(topic.groups.len());
            for group in &topic.groups {
                groups
                    .push(group_info(context.shard, &catalog, &request.stream, &request.topic, group).await?);
            }
            reply(&GroupList { groups }, Vec::new())
        }
        Kind::GroupDescribe => {
            let request: GroupRef = decode(body)?;
            context.require(&request.stream, Right::Read)?;
            let catalog = context.shard.catalog();
            reply(
                &group_info(context.shard, &catalog, &request.stream, &request.topic, &request.group).await?,
                Vec::new(),
            )
        }
        Kind::Stats => stats(context, decode(body)?).await,
        Kind::ProducerDeclare
        | Kind::ProducerSequence
        | Kind::ProducerDelete
        | Kind::ProducerHeartbeat
        | Kind::ProducerList
        | Kind::ProducerClose => super::producers::dispatch(context, kind, body).await,
        Kind::SuperStreamCreate
        | Kind::SuperStreamDelete
        | Kind::SuperStreamRoute
        | Kind::SuperStreamPartitions => super::super_streams::dispatch(context, kind, body).await,
        Kind::TopicState
        | Kind::ConsumerCreate
        | Kind::ConsumerDelete
        | Kind::ConsumerInfo
        | Kind::ConsumerList
        | Kind::Fetch
        | Kind::Ack => super::durable::dispatch(context, kind, body).await,
        Kind::Deliver => Err(BrokerError::new(Status::InvalidArgument, "Deliver is sent by the server only")),
        Kind::Ping
        | Kind::Login
        | Kind::Produce
        | Kind::Poll
        | Kind::OffsetStore
        | Kind::OffsetGet
        | Kind::Subscribe
        | Kind::SubscribeDurable
        | Kind::Credit
        | Kind::Unsubscribe
        | Kind::ConsumerUpdate => {
            Err(BrokerError::new(Status::Internal, format!("{kind:?} reached the admin dispatcher")))
        }
    }
}

async fn commit_empty(context: &Context<'_>, op: Result<MetadataOp, MetadataError>) -> BrokerResult<Reply> {
    context.shard.commit(op?).await?;
    reply(&Empty {}, Vec::new())
}

/// The shard map and the owner of every partition the user may read.
fn metadata(context: &Context<'_>) -> BrokerResult<Reply> {
    let shard = context.shard;
    let catalog = shard.catalog();
    let table = shard.table();
    let listen = shard.config.listen;
    let shards = (0..shard.shards())
        .map(|id| ShardAddress {
            shard: id,
            address: shard.config.shard_address(id).unwrap_or(listen).to_string(),
        })
        .collect();
    let mut partitions = Vec::new();
    for stream in catalog.streams.values().filter(|s| auth::allowed(&context.user, &s.name, Right::Read)) {
        for topic in stream.topics.values() {
            for partition in 0..topic.partitions {
                partitions.push(PartitionOwner {
                    stream: stream.name.clone(),
                    topic: topic.name.clone(),
                    partition,
                    shard: table.owner(stream.id, topic.id, partition),
                });
            }
        }
    }
    reply(&MetadataResponse { revision: catalog.revision, shard: shard.id, shards, partitions }, Vec::new())
}

async fn create_user(context: &Context<'_>, request: CreateUser) -> BrokerResult<Reply> {
    context.require_admin("creating a user")?;
    let CreateUser { name, password, admin, permissions } = request;
    let op = glommio::executor()
        .spawn_blocking(move || auth::create_user_op(&name, &password, admin, permissions))
        .await;
    commit_empty(context, op).await
}

async fn create_stream(context: &Context<'_>, request: CreateStream) -> BrokerResult<Reply> {
    context.require_admin("creating a stream")?;
    let existing = context.shard.catalog().stream(&request.name).is_ok();
    let catalog = if existing && request.if_missing {
        context.shard.catalog()
    } else {
        context.shard.commit(MetadataOp::create_stream(&request.name, crate::model::now_us())?).await?
    };
    let stream = catalog.stream(&request.name)?;
    reply(&catalog.stream_info(stream, &context.shard.table()), Vec::new())
}

async fn create_topic(context: &Context<'_>, request: CreateTopic) -> BrokerResult<Reply> {
    context.require(&request.stream, Right::Manage)?;
    let existing = context.shard.catalog().topic(&request.stream, &request.name).is_ok();
    let catalog = if existing && request.if_missing {
        context.shard.catalog()
    } else {
        let mut op =
            MetadataOp::create_topic(&request.stream, &request.name, request.config, crate::model::now_us())?;
        if request.policy != crate::protocol::durable::TopicPolicy::default() {
            if let MetadataOp::CreateTopic(topic) = op {
                let policy = request.policy;
                op = MetadataOp::CreateTopicWithPolicy(Box::new(
                    crate::metadata::durable::CreateTopicPolicyOp { topic, policy },
                ));
            }
        }
        context.shard.commit(op).await?
    };
    topic_reply(context, &catalog, &request.stream, &request.name)
}

fn topic_reply(context: &Context<'_>, catalog: &Catalog, stream: &str, topic: &str) -> BrokerResult<Reply> {
    let (stream, topic) = catalog.topic(stream, topic)?;
    reply(&catalog.topic_info(stream, topic, &context.shard.table()), Vec::new())
}

async fn create_group(context: &Context<'_>, request: GroupRef) -> BrokerResult<Reply> {
    context.require(&request.stream, Right::Manage)?;
    let catalog = context.shard.catalog();
    let (_, topic) = catalog.topic(&request.stream, &request.topic)?;
    let catalog = if topic.groups.contains(&request.group) && request.if_missing {
        catalog
    } else {
        context
            .shard
            .commit(MetadataOp::create_group(&request.stream, &request.topic, &request.group)?)
            .await?
    };
    reply(
        &group_info(context.shard, &catalog, &request.stream, &request.topic, &request.group).await?,
        Vec::new(),
    )
}

async fn join_group(context: &Context<'_>, request: JoinGroup) -> BrokerResult<Reply> {
    context.require(&request.stream, Right::Read)?;
    let mut catalog = context.shard.catalog();
    let (_, topic) = catalog.topic(&request.stream, &request.topic)?;
    if !topic.groups.contains(&request.group) {
        if !request.create_if_missing {
            topic_group(catalog.topic(&request.stream, &request.topic)?.0, topic, &request.group)?;
        }
        let op = MetadataOp::create_group(&request.stream, &request.topic, &request.group)?;
        catalog = match context.shard.commit(op).await {
            Err(error) if error.status == Status::AlreadyExists => context.shard.catalog(),
            other => other?,
        };
    }
    let (stream, topic) = catalog.topic(&request.stream, &request.topic)?;
    let key = group_key(topic_group(stream, topic, &request.group)?, &request.group);
    let session_timeout = match request.session_timeout_ms {
        0 => SESSION_TIMEOUT_DEFAULT,
        ms => Duration::from_millis(u64::from(ms)),
    };
    let answer =
        context.shard.group(GroupOp::Join { key, partitions: topic.partitions, session_timeout }).await?;
    membership_reply(answer)
}

fn member_group(context: &Context<'_>, request: &MemberRef) -> BrokerResult<crate::shard::groups::GroupKey> {
    context.require(&request.stream, Right::Read)?;
    let catalog = context.shard.catalog();
    let (stream, topic) = catalog.topic(&request.stream, &request.topic)?;
    Ok(group_key(topic_group(stream, topic, &request.group)?, &request.group))
}

fn membership_reply(answer: GroupReply) -> BrokerResult<Reply> {
    match answer {
        GroupReply::Assignment(a) => reply(
            &Membership { member_id: a.member_id, generation: a.generation, partitions: a.partitions },
            Vec::new(),
        ),
        _ => Err(BrokerError::new(Status::Internal, "the controller answered a membership request oddly")),
    }
}

/// A group's members, assignment and stored offsets.
async fn group_info(
    shard: &Shard,
    catalog: &Catalog,
    stream: &str,
    topic: &str,
    group: &str,
) -> BrokerResult<GroupInfo> {
    let (stream, topic) = catalog.topic(stream, topic)?;
    let key = group_key(topic_group(stream, topic, group)?, group);
    let snapshot = match shard.group(GroupOp::Describe { key }).await? {
        GroupReply::Snapshot(snapshot) => snapshot,
        _ => GroupSnapshot::default(),
    };
    let mut offsets = Vec::new();
    for partition in 0..topic.partitions {
        let key = PartitionKey { stream_id: stream.id, topic_id: topic.id, partition };
        let info = offset_on_owner(shard, key, format!("g:{group}"), OffsetOp::Get).await?;
        if let Some(offset) = info.stored {
            offsets.push(PartitionOffset { partition, offset });
        }
    }
    let members = snapshot
        .members
        .iter()
        .map(|m| MemberInfo {
            member_id: m.member_id,
            partitions: m.partitions.clone(),
            idle_ms: m.idle.as_millis() as u64,
        })
        .collect();
    Ok(GroupInfo { name: group.to_string(), generation: snapshot.generation, members, offsets })
}

/// Statistics of every stream the user may read (or one), gathered from every shard.
async fn stats(context: &Context<'_>, request: StatsRequest) -> BrokerResult<Reply> {
    let shard = context.shard;
    let catalog = shard.catalog();
    let mut partitions: BTreeMap<PartitionKey, PartitionStats> =
        shard.partitions.stats().into_iter().collect();
    for other in (0..shard.shards()).filter(|&s| s != shard.id) {
        let (reply, answer) = futures::channel::oneshot::channel();
        shard.mesh.send(other, ShardMessage::Stats { reply }).await?;
        partitions.extend(answer.await.map_err(|_| BrokerError::shard_gone(other))?);
    }
    let mut streams = Vec::new();
    for stream in catalog.streams.values() {
        if request.stream.as_ref().is_some_and(|s| s != &stream.name)
            || !auth::allowed(&context.user, &stream.name, Right::Read)
        {
            continue;
        }
        let mut topics = Vec::new();
        for topic in stream.topics.values() {
            let mut stats = TopicStats {
                name: topic.name.clone(),
                partitions: Vec::new(),
                groups: Vec::new(),
                messages: 0,
                bytes: 0,
                filtered_batches: 0,
                filtered_bytes: 0,
            };
            for partition in 0..topic.partitions {
                let key = PartitionKey { stream_id: stream.id, topic_id: topic.id, partition };
                if let Some(p) = partitions.remove(&key) {
                    stats.messages += p.messages;
                    stats.bytes += p.bytes;
                    stats.filtered_batches += p.filtered_batches;
                    stats.filtered_bytes += p.filtered_bytes;
                    stats.partitions.push(p);
                }
            }
            for group in &topic.groups {
                stats.groups.push(group_info(shard, &catalog, &stream.name, &topic.name, group).await?);
            }
            topics.push(stats);
        }
        let (messages, bytes) = topics.iter().fold((0, 0), |(m, b), t| (m + t.messages, b + t.bytes));
        streams.push(StreamStats { name: stream.name.clone(), topics, messages, bytes });
    }
    if let Some(name) = &request.stream {
        if streams.is_empty() {
            catalog.stream(name)?;
            context.require(name, Right::Read)?;
        }
    }
    reply(&StatsResponse { streams, server: shard.counters.snapshot(shard.shards()) }, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_delays_grow_and_are_capped() {
        assert_eq!(peer_delay(0), Duration::ZERO);
        assert_eq!(peer_delay(PEER_FAILURES_FREE - 1), Duration::ZERO);
        assert_eq!(peer_delay(PEER_FAILURES_FREE), PEER_FAILURE_DELAY_BASE);
        assert_eq!(peer_delay(PEER_FAILURES_FREE + 2), PEER_FAILURE_DELAY_BASE * 4);
        assert_eq!(peer_delay(u32::MAX), PEER_FAILURE_DELAY_MAX);
    }

    #[test]
    fn a_peers_logins_queue_up_after_failures_and_are_forgotten() {
        let peer: IpAddr = [10, 0, 0, 1].into();
        let start = Instant::now();
        assert_eq!(peer_login_slot(peer, start), None, "an unknown peer logs in at once");
        for _ in 0..PEER_FAILURES_FREE {
            peer_failed(peer, start);
        }
        let first = peer_login_slot(peer, start).expect("a slot");
        let second = peer_login_slot(peer, start).expect("a slot");
        assert_eq!((first, second), (start, start + PEER_FAILURE_DELAY_BASE), "concurrent attempts queue");
        let later = start + PEER_FAILURE_MEMORY + Duration::from_secs(1);
        assert_eq!(peer_login_slot(peer, later), None, "old failures are forgotten");
    }

    #[test]
    fn the_peer_table_stays_bounded() {
        let now = Instant::now();
        for i in 0..(PEER_ENTRIES_MAX as u32 + 100) {
            peer_failed(IpAddr::from((0xAC10_0000_u32 + i).to_be_bytes()), now);
        }
        assert!(PEER_FAILURES.with(|table| table.borrow().len()) <= PEER_ENTRIES_MAX);
    }
}
