//! The classic consumer-group coordinator of the Kafka listener: JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup, OffsetCommit and OffsetFetch.
//!
//! Each group lives on one coordinator shard, `key_hash(group) % shards` (the shard
//! FindCoordinator names, so with per-shard ports clients already talk to it); a group request
//! arriving on another shard travels there over the mesh (`ShardMessage::KafkaGroup`) with the
//! connection's user name and comes back as the Kafka response. The coordinator's table
//! ([`Coordinator`], a field of `Shard`) is shard-local: no locks, only `RefCell`s never held
//! across an await. A timer task per shard (running while it coordinates groups) expires
//! sessions and ends overdue rebalances. Assignors run on the clients: the broker relays the
//! members' metadata to the leader and the leader's assignment to each member (`state`).
//! Offsets are native group offsets on the `--kafka-stream` topics (`offsets`).
//!
//! Invariants: group state is touched only on its coordinator shard; every group request needs
//! the read right on the Kafka stream (else GROUP_AUTHORIZATION_FAILED); a coordinator holds at
//! most [`GROUPS_PER_SHARD_MAX`] groups and drops a group once it has no members; every wait is
//! bounded by the request's timeouts.

mod answers;
mod members;
mod offsets;
mod state;
#[cfg(test)]
mod tests;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    RequestKind, ResponseKind, SyncGroupRequest, SyncGroupResponse,
};

use super::errors::{COORDINATOR_NOT_AVAILABLE, GROUP_AUTHORIZATION_FAILED};
use super::state::Conn;
use crate::metadata::auth::Right;
use crate::server::connection::Session;
use crate::server::handlers::{logged_in, Context};
use crate::shard::mesh::ShardMessage;
use crate::shard::Shard;
use state::Group;

/// Groups one shard coordinates at most (a JoinGroup for one more is answered
/// COORDINATOR_NOT_AVAILABLE).
pub(crate) const GROUPS_PER_SHARD_MAX: usize = 10_000;
/// Members (and ids handed out) one shard's groups hold at most: a JoinGroup of a new member
/// beyond it is answered GROUP_MAX_SIZE_REACHED.
pub(crate) const MEMBERS_PER_SHARD_MAX: usize = 100_000;
/// Bytes of member ids, metadata and assignments one shard's groups hold at most: a JoinGroup
/// or SyncGroup that would pass it is answered GROUP_MAX_SIZE_REACHED.
pub(crate) const GROUP_BYTES_PER_SHARD_MAX: usize = 256 << 20;
/// How often the timer task expires sessions and overdue rebalances.
const TICK: Duration = Duration::from_millis(100);

/// The groups one shard coordinates.
#[derive(Debug, Default)]
pub(crate) struct Coordinator {
    groups: RefCell<HashMap<String, Group>>,
    /// The timer task runs.
    ticking: Cell<bool>,
    /// Member ids handed out by this shard.
    members_created: Cell<u64>,
    /// The sum of the groups' footprints (`Group::footprint`).
    held: Cell<(usize, usize)>,
}

impl Coordinator {
    /// Runs `f` on group `name`'s state, creating it when `create` (and room is left).
    fn with<T>(&self, name: &str, create: bool, f: impl FnOnce(&mut Group) -> T) -> Option<T> {
        let mut groups = self.groups.borrow_mut();
        if !groups.contains_key(name) && (!create || groups.len() >= GROUPS_PER_SHARD_MAX) {
            return None;
        }
        let group = groups.entry(name.to_string()).or_default();
        let before = group.footprint();
        let answer = f(group);
        self.account(before, group.footprint());
        Some(answer)
    }

    /// Moves the shard's total from a group's footprint `before` to `after`.
    fn account(&self, before: (usize, usize), after: (usize, usize)) {
        let (count, bytes) = self.held.get();
        let count = count.saturating_sub(before.0).saturating_add(after.0);
        let bytes = bytes.saturating_sub(before.1).saturating_add(after.1);
        self.held.set((count, bytes));
    }

    /// Whether `members` more members with `bytes` more bytes fit the shard's bounds.
    fn has_room(&self, members: usize, bytes: usize) -> bool {
        let (count, held) = self.held.get();
        count.saturating_add(members) <= MEMBERS_PER_SHARD_MAX
            && held.saturating_add(bytes) <= GROUP_BYTES_PER_SHARD_MAX
    }

    /// A member id unique over the broker's shards and restarts: `<client id>-<uuid-like>`.
    fn new_member_id(&self, shard: u16, client_id: &str) -> String {
        let count = self.members_created.get().wrapping_add(1);
        self.members_created.set(count);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let low = (u64::from(shard) << 48) | (count & 0xffff_ffff_ffff);
        let prefix = if client_id.is_empty() { "consumer" } else { client_id };
        format!(
            "{prefix}-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            nanos >> 32,
            (nanos >> 16) & 0xffff,
            nanos & 0xffff,
            low >> 48,
            low & 0xffff_ffff_ffff
        )
    }

    /// Starts the timer task unless it runs.
    fn start_ticking(shard: &Rc<Shard>) {
        if shard.kafka_groups.ticking.replace(true) {
            return;
        }
        let shard = shard.clone();
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(TICK).await;
                let coordinator = &shard.kafka_groups;
                let mut groups = coordinator.groups.borrow_mut();
                let now = Instant::now();
                for group in groups.values_mut() {
                    let before = group.footprint();
                    group.tick(now);
                    coordinator.account(before, group.footprint());
                }
                groups.retain(|_, group| !group.is_idle());
                if groups.is_empty() || shard.shutting_down() {
                    coordinator.ticking.set(false);
                    break;
                }
            }
        })
        .detach();
    }
}

/// The coordinator shard of `group`: the shard FindCoordinator names.
fn coordinator_of(shard: &Shard, group: &str) -> u16 {
    (crate::server::data::key_hash(group.as_bytes()) % u64::from(shard.shards().max(1))) as u16
}

/// JoinGroup.
pub(crate) async fn join(conn: &Conn, version: i16, request: JoinGroupRequest) -> JoinGroupResponse {
    let group = request.group_id.0.to_string();
    match route(conn, version, &group, RequestKind::JoinGroup(request)).await {
        Some(ResponseKind::JoinGroup(response)) => response,
        _ => members::join_failed(version, COORDINATOR_NOT_AVAILABLE),
    }
}

/// SyncGroup.
pub(crate) async fn sync(conn: &Conn, version: i16, request: SyncGroupRequest) -> SyncGroupResponse {
    let group = request.group_id.0.to_string();
    match route(conn, version, &group, RequestKind::SyncGroup(request)).await {
        Some(ResponseKind::SyncGroup(response)) => response,
        _ => SyncGroupResponse::default().with_error_code(COORDINATOR_NOT_AVAILABLE),
    }
}

/// Heartbeat.
pub(crate) async fn heartbeat(conn: &Conn, version: i16, request: HeartbeatRequest) -> HeartbeatResponse {
    let group = request.group_id.0.to_string();
    match route(conn, version, &group, RequestKind::Heartbeat(request)).await {
        Some(ResponseKind::Heartbeat(response)) => response,
        _ => HeartbeatResponse::default().with_error_code(COORDINATOR_NOT_AVAILABLE),
    }
}

/// LeaveGroup.
pub(crate) async fn leave(conn: &Conn, version: i16, request: LeaveGroupRequest) -> LeaveGroupResponse {
    let group = request.group_id.0.to_string();
    match route(conn, version, &group, RequestKind::LeaveGroup(request.clone())).await {
        Some(ResponseKind::LeaveGroup(response)) => response,
        _ => refused_leave(version, request, COORDINATOR_NOT_AVAILABLE),
    }
}

/// OffsetCommit.
pub(crate) async fn offset_commit(
    conn: &Conn,
    version: i16,
    request: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let group = request.group_id.0.to_string();
    match route(conn, version, &group, RequestKind::OffsetCommit(request.clone())).await {
        Some(ResponseKind::OffsetCommit(response)) => response,
        _ => refused_commit(request, COORDINATOR_NOT_AVAILABLE),
    }
}

/// OffsetFetch.
pub(crate) async fn offset_fetch(
    conn: &Conn,
    version: i16,
    request: OffsetFetchRequest,
) -> OffsetFetchResponse {
    let group = request.group_id.0.to_string();
    match route(conn, version, &group, RequestKind::OffsetFetch(request.clone())).await {
        Some(ResponseKind::OffsetFetch(response)) => response,
        _ => refused_fetch(version, request, COORDINATOR_NOT_AVAILABLE),
    }
}

/// Serves `request` on this shard when it coordinates `group`, else on the coordinator.
async fn route(conn: &Conn, version: i16, group: &str, request: RequestKind) -> Option<ResponseKind> {
    let shard = &conn.shard;
    let owner = coordinator_of(shard, group);
    if owner == shard.id {
        return Some(serve(shard, &conn.session, version, request).await);
    }
    let user = conn.session.user.borrow().clone().unwrap_or_default();
    let request = Box::new(request);
    let answer =
        shard.mesh.ask(owner, |reply| ShardMessage::KafkaGroup { version, user, request, reply }).await;
    match answer {
        Ok(response) => Some(response),
        Err(error) => {
            tracing::debug!(shard = shard.id, owner, %error, "kafka group request not forwarded");
            None
        }
    }
}

/// Serves a group request another shard forwarded (`ShardMessage::KafkaGroup`) for `user`.
pub(crate) async fn forwarded(
    shard: &Rc<Shard>,
    version: i16,
    user: String,
    request: RequestKind,
) -> ResponseKind {
    let session = Session { user: RefCell::new(Some(user)), ..Session::default() };
    serve(shard, &session, version, request).await
}

/// Serves a group request on the group's coordinator shard, as `session`'s user.
async fn serve(shard: &Rc<Shard>, session: &Session, version: i16, request: RequestKind) -> ResponseKind {
    let stream = shard.config.kafka_stream.clone();
    let context = logged_in(shard, session).map(|user| Context { shard, session, user });
    let context = match context {
        Ok(context) if context.require(&stream, Right::Read).is_ok() => context,
        _ => return refused(version, request, GROUP_AUTHORIZATION_FAILED),
    };
    match request {
        RequestKind::JoinGroup(r) => ResponseKind::JoinGroup(members::join(shard, version, r).await),
        RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(members::sync(shard, version, r).await),
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(members::heartbeat(shard, r)),
        RequestKind::LeaveGroup(r) => ResponseKind::LeaveGroup(members::leave(shard, version, r)),
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(offsets::commit(&context, &stream, r).await)
        }
        RequestKind::OffsetFetch(r) => ResponseKind::OffsetFetch(offsets::fetch(&context, &stream, r).await),
        other => refused(version, other, COORDINATOR_NOT_AVAILABLE),
    }
}

/// The answer to `request` failing as a whole with `code`.
fn refused(version: i16, request: RequestKind, code: i16) -> ResponseKind {
    match request {
        RequestKind::JoinGroup(_) => ResponseKind::JoinGroup(members::join_failed(version, code)),
        RequestKind::SyncGroup(_) => {
            ResponseKind::SyncGroup(SyncGroupResponse::default().with_error_code(code))
        }
        RequestKind::LeaveGroup(r) => ResponseKind::LeaveGroup(refused_leave(version, r, code)),
        RequestKind::OffsetCommit(r) => ResponseKind::OffsetCommit(refused_commit(r, code)),
        RequestKind::OffsetFetch(r) => ResponseKind::OffsetFetch(refused_fetch(version, r, code)),
        _ => ResponseKind::Heartbeat(HeartbeatResponse::default().with_error_code(code)),
    }
}

fn refused_leave(version: i16, request: LeaveGroupRequest, code: i16) -> LeaveGroupResponse {
    let mut response = LeaveGroupResponse::default().with_error_code(code);
    if version >= 3 {
        response.members = request
            .members
            .into_iter()
            .map(|m| {
                MemberResponse::default()
                    .with_member_id(m.member_id)
                    .with_group_instance_id(m.group_instance_id)
                    .with_error_code(code)
            })
            .collect();
    }
    response
}

fn refused_commit(request: OffsetCommitRequest, code: i16) -> OffsetCommitResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetCommitResponseTopic::default().with_name(topic.name).with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// From v2 the error is the response's; v1 has only the partitions' codes.
fn refused_fetch(version: i16, request: OffsetFetchRequest, code: i16) -> OffsetFetchResponse {
    if version >= 2 {
        return OffsetFetchResponse::default().with_error_code(code);
    }
    let topics = request
        .topics
        .unwrap_or_default()
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partition_indexes
                .iter()
                .map(|&index| {
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(index)
                        .with_committed_offset(-1)
                        .with_error_code(code)
                })
                .collect();
            OffsetFetchResponseTopic::default().with_name(topic.name).with_partitions(partitions)
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}
