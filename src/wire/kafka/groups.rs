//! Placeholder for the classic consumer-group coordinator (being written on branch
//! `kafka-groups`): every group request is answered COORDINATOR_NOT_AVAILABLE.

use kafka_protocol::messages::{
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    SyncGroupRequest, SyncGroupResponse,
};

use super::errors::COORDINATOR_NOT_AVAILABLE;
use super::state::Conn;

pub(crate) async fn join(_: &Conn, _: i16, _: JoinGroupRequest) -> JoinGroupResponse {
    JoinGroupResponse::default().with_error_code(COORDINATOR_NOT_AVAILABLE)
}
pub(crate) async fn sync(_: &Conn, _: i16, _: SyncGroupRequest) -> SyncGroupResponse {
    SyncGroupResponse::default().with_error_code(COORDINATOR_NOT_AVAILABLE)
}
pub(crate) async fn heartbeat(_: &Conn, _: i16, _: HeartbeatRequest) -> HeartbeatResponse {
    HeartbeatResponse::default().with_error_code(COORDINATOR_NOT_AVAILABLE)
}
pub(crate) async fn leave(_: &Conn, _: i16, _: LeaveGroupRequest) -> LeaveGroupResponse {
    LeaveGroupResponse::default().with_error_code(COORDINATOR_NOT_AVAILABLE)
}
pub(crate) async fn offset_commit(_: &Conn, _: i16, _: OffsetCommitRequest) -> OffsetCommitResponse {
    OffsetCommitResponse::default()
}
pub(crate) async fn offset_fetch(_: &Conn, _: i16, _: OffsetFetchRequest) -> OffsetFetchResponse {
    OffsetFetchResponse::default().with_error_code(COORDINATOR_NOT_AVAILABLE)
}
