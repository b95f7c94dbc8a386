//! Request dispatch: each decoded request goes to its handler, and its answer into the slot the
//! reader reserved for it, encoded at the request's version.
//!
//! Runs on the connection's shard, called by the reader in arrival order. ApiVersions and SASL
//! are answered inline (before authentication nothing else may run); a Produce is converted to
//! batches inline, so appends leave in the order their requests came, then stored by its own
//! task; every other request runs as its own task. At most `--max-in-flight` tasks run per
//! connection: the reader waits for room, which is the back-pressure on a pipelining client.
//!
//! Invariants: every request read gets exactly one slot answer (a frame or `None`, which closes
//! the connection after the answers before it); nothing but ApiVersions, SaslHandshake and
//! SaslAuthenticate runs before the connection is authenticated.

use std::rc::Rc;
use std::sync::Arc;

use async_lock::Semaphore;
use bytes::BytesMut;
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};

use super::connection::Answer;
use super::frame::{self, FrameError, Request};
use super::state::Conn;
use crate::metrics::WIRE_KAFKA;
use crate::shard::Shard;

/// Runs one request; `Err` closes the connection (after the answers before it).
pub(crate) async fn request(
    conn: &Rc<Conn>,
    in_flight: &Arc<Semaphore>,
    request: Request,
    answer: Answer,
) -> Result<(), String> {
    let Request { api_key, version, header, body } = request;
    let correlation_id = header.correlation_id;
    let reply = Reply { answer, correlation_id, api_key, version, shard: conn.shard.clone() };
    if !conn.authenticated.get()
        && !matches!(api_key, ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate)
    {
        reply.close();
        return Err(format!("{api_key:?} before SASL authentication"));
    }
    match body {
        RequestKind::ApiVersions(_) => reply.send(ResponseKind::ApiVersions(super::meta::api_versions(0))),
        RequestKind::SaslHandshake(request) => {
            let response = super::sasl::handshake(conn, version, request);
            reply.send(ResponseKind::SaslHandshake(response));
        }
        RequestKind::SaslAuthenticate(request) => {
            let (response, ok) = super::sasl::authenticate(conn, version, request).await;
            reply.send(ResponseKind::SaslAuthenticate(response));
            if !ok {
                // The answer carries the failure; the connection stays open and unauthenticated
                // (anything but SASL closes it) so that closing cannot reset the answer away
                // before the client reads it. Clients close it themselves.
                conn.handshaken.set(false);
            }
        }
        RequestKind::Produce(request) => {
            let prepared = super::produce::prepare(conn, version, request).await;
            let permit = in_flight.acquire_arc().await;
            let conn = conn.clone();
            glommio::spawn_local(async move {
                let _in_flight = conn.shard.metrics.in_flight();
                let response = super::produce::finish(&conn, version, prepared).await;
                if let Some(response) = response {
                    reply.send(ResponseKind::Produce(response));
                } else {
                    // acks=0: Kafka sends no answer at all.
                    reply.skip();
                }
                drop(permit);
            })
            .detach();
        }
        body => {
            let permit = in_flight.acquire_arc().await;
            let conn = conn.clone();
            glommio::spawn_local(async move {
                let _in_flight = conn.shard.metrics.in_flight();
                match run(&conn, version, body).await {
                    Some(response) => reply.send(response),
                    None => reply.close(),
                }
                drop(permit);
            })
            .detach();
        }
    }
    Ok(())
}

/// The handlers run as their own tasks.
async fn run(conn: &Conn, version: i16, body: RequestKind) -> Option<ResponseKind> {
    Some(match body {
        RequestKind::Metadata(r) => ResponseKind::Metadata(super::meta::metadata(conn, version, r).await),
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(super::meta::create_topics(conn, version, r).await)
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(super::meta::delete_topics(conn, version, r).await)
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(super::meta::find_coordinator(conn, version, r))
        }
        RequestKind::Fetch(r) => ResponseKind::Fetch(super::fetch::fetch(conn, version, r).await),
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(super::fetch::list_offsets(conn, version, r).await)
        }
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(super::produce::init_producer_id(conn, version, r).await)
        }
        RequestKind::JoinGroup(r) => ResponseKind::JoinGroup(super::groups::join(conn, version, r).await),
        RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(super::groups::sync(conn, version, r).await),
        RequestKind::Heartbeat(r) => {
            ResponseKind::Heartbeat(super::groups::heartbeat(conn, version, r).await)
        }
        RequestKind::LeaveGroup(r) => ResponseKind::LeaveGroup(super::groups::leave(conn, version, r).await),
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(super::groups::offset_commit(conn, version, r).await)
        }
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(super::groups::offset_fetch(conn, version, r).await)
        }
        other => {
            // `frame::SUPPORTED` lists only the keys above; nothing else decodes.
            tracing::warn!(?other, "kafka request without a handler");
            return None;
        }
    })
}

/// A frame that did not decode into a served request. Returns whether the connection closes.
pub(crate) fn refused(shard: &Rc<Shard>, error: &FrameError, answer: Answer) -> bool {
    shard.metrics.request(WIRE_KAFKA, "unsupported", false);
    match error {
        FrameError::UnsupportedVersion { api_key: ApiKey::ApiVersions, correlation_id, .. } => {
            // KIP-511: answer at v0 with the served ranges; the client retries at one of them.
            let reply = Reply {
                answer,
                correlation_id: *correlation_id,
                api_key: ApiKey::ApiVersions,
                version: 0,
                shard: shard.clone(),
            };
            reply.send(ResponseKind::ApiVersions(super::meta::api_versions(frame::UNSUPPORTED_VERSION)));
            false
        }
        FrameError::UnsupportedVersion { api_key, version, correlation_id } => {
            let (api_key, version) = (*api_key, *version);
            let mut out = BytesMut::new();
            let encoded =
                [super::unsupported::response(api_key), super::unsupported::plain_response(api_key)]
                    .into_iter()
                    .flatten()
                    .any(|response| {
                        frame::encode_response(&mut out, *correlation_id, api_key, version, &response).is_ok()
                    });
            if encoded {
                let _ = answer.send(Some(out.to_vec()));
                return false;
            }
            let _ = answer.send(None);
            true
        }
        _ => {
            let _ = answer.send(None);
            true
        }
    }
}

/// Where one request's answer goes.
pub(crate) struct Reply {
    answer: Answer,
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    /// Counts the request (`ringbroker_requests_total{wire="kafka"}`) when answered.
    shard: Rc<Shard>,
}

impl Reply {
    /// Encodes `response` at the request's version into the request's slot.
    pub(crate) fn send(self, response: ResponseKind) {
        self.shard.metrics.request(WIRE_KAFKA, kind_name(self.api_key), !has_error(&response));
        // Sized up front: a fetch answer is mostly its record bytes, and growing a megabyte
        // buffer by doubling would copy it several times.
        let mut out = BytesMut::with_capacity(RESPONSE_OVERHEAD_BYTES + records_bytes(&response));
        match frame::encode_response(&mut out, self.correlation_id, self.api_key, self.version, &response) {
            Ok(()) => {
                // The buffer becomes the frame without a copy (it is its only owner).
                let _ = self.answer.send(Some(Vec::from(out)));
            }
            Err(error) => {
                tracing::warn!(%error, "kafka response not encodable; closing the connection");
                let _ = self.answer.send(None);
            }
        }
    }

    /// No answer for this request (Produce with acks=0), and the connection goes on.
    pub(crate) fn skip(self) {
        self.shard.metrics.request(WIRE_KAFKA, kind_name(self.api_key), true);
        let _ = self.answer.send(Some(Vec::new()));
    }

    /// Closes the connection at this request.
    pub(crate) fn close(self) {
        self.shard.metrics.request(WIRE_KAFKA, kind_name(self.api_key), false);
        let _ = self.answer.send(None);
    }
}

/// The request kind label of a served API (`unsupported` for the rest).
fn kind_name(key: ApiKey) -> &'static str {
    match key {
        ApiKey::Produce => "produce",
        ApiKey::Fetch => "fetch",
        ApiKey::ListOffsets => "list_offsets",
        ApiKey::Metadata => "metadata",
        ApiKey::OffsetCommit => "offset_commit",
        ApiKey::OffsetFetch => "offset_fetch",
        ApiKey::FindCoordinator => "find_coordinator",
        ApiKey::JoinGroup => "join_group",
        ApiKey::Heartbeat => "heartbeat",
        ApiKey::LeaveGroup => "leave_group",
        ApiKey::SyncGroup => "sync_group",
        ApiKey::SaslHandshake => "sasl_handshake",
        ApiKey::ApiVersions => "api_versions",
        ApiKey::CreateTopics => "create_topics",
        ApiKey::DeleteTopics => "delete_topics",
        ApiKey::InitProducerId => "init_producer_id",
        ApiKey::SaslAuthenticate => "sasl_authenticate",
        _ => "unsupported",
    }
}

/// Whether an answer carries a top-level error (per-partition errors count as answered).
fn has_error(response: &ResponseKind) -> bool {
    match response {
        ResponseKind::ApiVersions(r) => r.error_code != 0,
        ResponseKind::SaslHandshake(r) => r.error_code != 0,
        ResponseKind::SaslAuthenticate(r) => r.error_code != 0,
        ResponseKind::FindCoordinator(r) => r.error_code != 0,
        ResponseKind::JoinGroup(r) => r.error_code != 0,
        ResponseKind::SyncGroup(r) => r.error_code != 0,
        ResponseKind::Heartbeat(r) => r.error_code != 0,
        ResponseKind::LeaveGroup(r) => r.error_code != 0,
        ResponseKind::InitProducerId(r) => r.error_code != 0,
        ResponseKind::Produce(r) => {
            r.responses.iter().any(|t| t.partition_responses.iter().any(|p| p.error_code != 0))
        }
        _ => false,
    }
}

/// Room for a response's fields besides its record bytes.
const RESPONSE_OVERHEAD_BYTES: usize = 4096;

/// The record bytes a response carries (Fetch), to size its buffer.
fn records_bytes(response: &ResponseKind) -> usize {
    match response {
        ResponseKind::Fetch(fetch) => fetch
            .responses
            .iter()
            .flat_map(|topic| topic.partitions.iter())
            .map(|partition| partition.records.as_ref().map_or(0, |r| r.len()) + 64)
            .sum(),
        _ => 0,
    }
}
