//! (stub: helper A's encoder replaces this file)
#![allow(missing_docs, unused_variables)]
pub const SERVER_COMMAND_VERSIONS: &[(u16, u16, u16)] = &[];
pub fn generic_response(key: u16, correlation: u32, code: u16) -> Vec<u8> {
    Vec::new()
}
pub fn peer_properties_response(correlation: u32, code: u16, properties: &[(&str, &str)]) -> Vec<u8> {
    Vec::new()
}
pub fn sasl_handshake_response(correlation: u32, code: u16, mechanisms: &[&str]) -> Vec<u8> {
    Vec::new()
}
pub fn sasl_authenticate_response(correlation: u32, code: u16, challenge: Option<&[u8]>) -> Vec<u8> {
    Vec::new()
}
pub fn tune(frame_max: u32, heartbeat: u32) -> Vec<u8> {
    Vec::new()
}
pub fn open_response(correlation: u32, code: u16, properties: &[(&str, &str)]) -> Vec<u8> {
    Vec::new()
}
pub fn close(correlation: u32, code: u16, reason: &str) -> Vec<u8> {
    Vec::new()
}
pub fn close_response(correlation: u32, code: u16) -> Vec<u8> {
    Vec::new()
}
pub fn heartbeat() -> Vec<u8> {
    Vec::new()
}
pub fn exchange_command_versions_response(
    correlation: u32,
    code: u16,
    versions: &[(u16, u16, u16)],
) -> Vec<u8> {
    Vec::new()
}
pub struct StreamMetadata<'a> {
    pub name: &'a str,
    pub code: u16,
    pub leader: u16,
    pub replicas: &'a [u16],
}
pub fn metadata_response(
    correlation: u32,
    brokers: &[(u16, &str, u32)],
    streams: &[StreamMetadata<'_>],
) -> Vec<u8> {
    Vec::new()
}
pub fn metadata_update(code: u16, stream: &str) -> Vec<u8> {
    Vec::new()
}
pub fn stream_stats_response(correlation: u32, code: u16, stats: &[(&str, i64)]) -> Vec<u8> {
    Vec::new()
}
pub fn publish_confirm(publisher_id: u8, publishing_ids: &[u64]) -> Vec<u8> {
    Vec::new()
}
pub fn publish_error(publisher_id: u8, errors: &[(u64, u16)]) -> Vec<u8> {
    Vec::new()
}
pub fn query_publisher_sequence_response(correlation: u32, code: u16, sequence: u64) -> Vec<u8> {
    Vec::new()
}
pub fn query_offset_response(correlation: u32, code: u16, offset: u64) -> Vec<u8> {
    Vec::new()
}
pub fn credit_response(code: u16, subscription_id: u8) -> Vec<u8> {
    Vec::new()
}
pub fn consumer_update(correlation: u32, subscription_id: u8, active: bool) -> Vec<u8> {
    Vec::new()
}
pub fn route_response(correlation: u32, code: u16, streams: &[&str]) -> Vec<u8> {
    Vec::new()
}
pub fn partitions_response(correlation: u32, code: u16, streams: &[&str]) -> Vec<u8> {
    Vec::new()
}
