//! Membership requests on the coordinator shard: JoinGroup, SyncGroup, Heartbeat and
//! LeaveGroup, from the decoded Kafka request to the group state (`super::state`) and back to
//! the Kafka response at the request's version.
//!
//! Runs on the group's coordinator shard only (`super::serve`). Invariants: the group table is
//! borrowed only between awaits; a JoinGroup or SyncGroup waits at most its rebalance timeout
//! (plus one timer period) and answers REBALANCE_IN_PROGRESS when that passes; response fields
//! are set only at versions that have them.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::oneshot;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::super::errors::{COORDINATOR_NOT_AVAILABLE, REBALANCE_IN_PROGRESS, UNKNOWN_MEMBER_ID};
use super::state::{JoinArgs, Joined, Outcome, Synced, GROUP_MAX_SIZE_REACHED};
use super::{Coordinator, TICK};
use crate::shard::Shard;

/// Kafka's `INVALID_GROUP_ID`.
pub(crate) const INVALID_GROUP_ID: i16 = 24;
/// Kafka's `INVALID_SESSION_TIMEOUT`.
pub(crate) const INVALID_SESSION_TIMEOUT: i16 = 26;
/// The shortest session timeout a member may ask for (Kafka's `group.min.session.timeout.ms`
/// is 6 s; shorter ones make tests quick).
pub(crate) const SESSION_TIMEOUT_MIN: Duration = Duration::from_millis(1000);
/// The longest session timeout (Kafka's `group.max.session.timeout.ms`).
pub(crate) const SESSION_TIMEOUT_MAX: Duration = Duration::from_secs(30 * 60);
/// The longest rebalance timeout honoured.
pub(crate) const REBALANCE_TIMEOUT_MAX: Duration = Duration::from_secs(30 * 60);

fn text(value: String) -> StrBytes {
    StrBytes::from_string(value)
}

/// A JoinGroup answer failing with `code`.
pub(crate) fn join_failed(version: i16, code: i16) -> JoinGroupResponse {
    joined_response(version, Joined::error(code, ""))
}

fn joined_response(version: i16, joined: Joined) -> JoinGroupResponse {
    let mut response = JoinGroupResponse::default()
        .with_error_code(joined.error)
        .with_generation_id(joined.generation)
        .with_leader(text(joined.leader))
        .with_member_id(text(joined.member_id));
    // Nullable from v7 only: before, an error answer carries an empty name.
    response.protocol_name = match joined.protocol_name {
        Some(name) => Some(text(name)),
        None if version < 7 => Some(StrBytes::default()),
        None => None,
    };
    if version >= 7 {
        response.protocol_type = joined.protocol_type.map(text);
    }
    response.members = joined
        .members
        .into_iter()
        .map(|(id, instance_id, metadata)| {
            let mut member =
                JoinGroupResponseMember::default().with_member_id(text(id)).with_metadata(metadata);
            if version >= 5 {
                member.group_instance_id = instance_id.map(text);
            }
            member
        })
        .collect();
    response
}

fn synced_response(version: i16, synced: Synced) -> SyncGroupResponse {
    let mut response =
        SyncGroupResponse::default().with_error_code(synced.error).with_assignment(synced.assignment);
    if version >= 5 {
        response.protocol_type = synced.protocol_type.map(text);
        response.protocol_name = synced.protocol_name.map(text);
    }
    response
}

/// The member's timeouts, or INVALID_SESSION_TIMEOUT. v0 has no rebalance timeout: the session
/// timeout stands for it.
fn timeouts(version: i16, request: &JoinGroupRequest) -> Result<(Duration, Duration), i16> {
    let session = u64::try_from(request.session_timeout_ms).map(Duration::from_millis).unwrap_or_default();
    if !(SESSION_TIMEOUT_MIN..=SESSION_TIMEOUT_MAX).contains(&session) {
        return Err(INVALID_SESSION_TIMEOUT);
    }
    let rebalance = match u64::try_from(request.rebalance_timeout_ms) {
        Ok(ms) if version >= 1 && ms > 0 => Duration::from_millis(ms).min(REBALANCE_TIMEOUT_MAX),
        _ => session,
    };
    Ok((session, rebalance))
}

/// Waits for a parked request's answer, at most `bound` (then `timed_out`); a dropped sender
/// (the group went away) reads as `gone`.
async fn wait<T>(receiver: oneshot::Receiver<T>, bound: Duration, timed_out: T, gone: T) -> T {
    let answer = async { receiver.await.unwrap_or(gone) };
    let timer = async {
        glommio::timer::sleep(bound).await;
        timed_out
    };
    futures_lite::future::or(answer, timer).await
}

/// JoinGroup.
pub(crate) async fn join(shard: &Rc<Shard>, version: i16, request: JoinGroupRequest) -> JoinGroupResponse {
    let group = request.group_id.0.to_string();
    if crate::metadata::validate_name(&group).is_err() {
        return join_failed(version, INVALID_GROUP_ID);
    }
    let (session_timeout, rebalance_timeout) = match timeouts(version, &request) {
        Ok(timeouts) => timeouts,
        Err(code) => return join_failed(version, code),
    };
    let member_id = request.member_id.to_string();
    let args = JoinArgs {
        member_id: member_id.clone(),
        instance_id: request.group_instance_id.map(|i| i.to_string()),
        session_timeout,
        rebalance_timeout,
        protocol_type: request.protocol_type.to_string(),
        // Copied out of the request frame, so a member holds its metadata's bytes only.
        protocols: request
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), Bytes::copy_from_slice(&p.metadata)))
            .collect(),
        require_known_member_id: version >= 4,
    };
    let coordinator: &Coordinator = &shard.kafka_groups;
    let incoming = args
        .protocols
        .iter()
        .fold(member_id.len(), |sum, (n, m)| sum.saturating_add(n.len()).saturating_add(m.len()));
    if !coordinator.has_room(usize::from(member_id.is_empty()), incoming) {
        return join_failed(version, GROUP_MAX_SIZE_REACHED);
    }
    let new_id = || coordinator.new_member_id(shard.id, "");
    let outcome = coordinator.with(&group, true, |state| state.join(args, new_id, Instant::now()));
    Coordinator::start_ticking(shard);
    let joined = match outcome {
        None => Joined::error(COORDINATOR_NOT_AVAILABLE, &member_id),
        Some(Outcome::Now(joined)) => joined,
        Some(Outcome::Later(receiver)) => {
            let bound = rebalance_timeout.saturating_add(TICK.saturating_mul(5));
            let timed_out = Joined::error(REBALANCE_IN_PROGRESS, &member_id);
            let gone = Joined::error(UNKNOWN_MEMBER_ID, &member_id);
            wait(receiver, bound, timed_out, gone).await
        }
    };
    joined_response(version, joined)
}

/// SyncGroup.
pub(crate) async fn sync(shard: &Rc<Shard>, version: i16, request: SyncGroupRequest) -> SyncGroupResponse {
    let group = request.group_id.0.to_string();
    let member_id = request.member_id.to_string();
    let protocol_type = request.protocol_type.as_ref().map(|t| t.to_string());
    let protocol_name = request.protocol_name.as_ref().map(|n| n.to_string());
    let assignments: Vec<(String, Bytes)> = request
        .assignments
        .into_iter()
        .map(|a| (a.member_id.to_string(), Bytes::copy_from_slice(&a.assignment)))
        .collect();
    let coordinator: &Coordinator = &shard.kafka_groups;
    let incoming = assignments.iter().fold(0_usize, |sum, (_, a)| sum.saturating_add(a.len()));
    if !coordinator.has_room(0, incoming) {
        return synced_response(version, Synced::error(GROUP_MAX_SIZE_REACHED));
    }
    let (outcome, bound) = coordinator
        .with(&group, false, |state| {
            let bound = state.rebalance_timeout_of(&member_id);
            let protocol = (protocol_type.as_deref(), protocol_name.as_deref());
            (state.sync(&member_id, request.generation_id, protocol, assignments, Instant::now()), bound)
        })
        .unwrap_or((Outcome::Now(Synced::error(UNKNOWN_MEMBER_ID)), Duration::ZERO));
    let synced = match outcome {
        Outcome::Now(synced) => synced,
        Outcome::Later(receiver) => {
            let timed_out = Synced::error(REBALANCE_IN_PROGRESS);
            let gone = Synced::error(UNKNOWN_MEMBER_ID);
            wait(receiver, bound.saturating_add(TICK), timed_out, gone).await
        }
    };
    synced_response(version, synced)
}

/// Heartbeat.
pub(crate) fn heartbeat(shard: &Shard, request: HeartbeatRequest) -> HeartbeatResponse {
    let member_id = request.member_id.as_str();
    let code = shard
        .kafka_groups
        .with(request.group_id.0.as_str(), false, |state| {
            state.heartbeat(member_id, request.generation_id, Instant::now())
        })
        .unwrap_or(UNKNOWN_MEMBER_ID);
    HeartbeatResponse::default().with_error_code(code)
}

/// LeaveGroup: one member before v3, a batch from v3 (each with its own code).
pub(crate) fn leave(shard: &Shard, version: i16, request: LeaveGroupRequest) -> LeaveGroupResponse {
    let group = request.group_id.0.as_str();
    let leave_one = |member_id: &str, instance_id: Option<&str>| {
        shard
            .kafka_groups
            .with(group, false, |state| state.leave(member_id, instance_id, Instant::now()))
            .unwrap_or(UNKNOWN_MEMBER_ID)
    };
    if version < 3 {
        let code = leave_one(request.member_id.as_str(), None);
        return LeaveGroupResponse::default().with_error_code(code);
    }
    let members = request
        .members
        .into_iter()
        .map(|member| {
            let code = leave_one(member.member_id.as_str(), member.group_instance_id.as_deref());
            MemberResponse::default()
                .with_member_id(member.member_id)
                .with_group_instance_id(member.group_instance_id)
                .with_error_code(code)
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}
