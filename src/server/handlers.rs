//! Request dispatch: decodes the body of each frame, checks login and rights, and calls the
//! handler of its kind (admin kinds in [`super::admin`], data kinds in [`super::data`]).
//!
//! Runs on the connection's shard, one task per request. Invariants: only Ping and Login are
//! served before a successful login; every other kind checks the user's right on the stream it
//! touches before doing anything; every failure becomes an error response with a status code, and
//! only the request fails.

use rkyv::api::high::{HighDeserializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor::Error as RkyvError;
use rkyv::util::AlignedVec;
use rkyv::Archive;

use super::connection::{Response, Session};
use super::{admin, data, subscriptions};
use crate::metadata::auth::{self, Right};
use crate::metadata::catalog::User;
use crate::metrics::{native_kind_name, WIRE_NATIVE};
use crate::protocol::frame::{encode_head, FrameHeader};
use crate::protocol::messages::{self, Kind, Status};
use crate::server::frame_pool::FrameBuf;
use crate::shard::error::{BrokerError, BrokerResult};
use crate::shard::partitions::PayloadPart;
use crate::shard::Shard;

/// A handler's success: the archived response body and the raw payload, in parts.
pub type Reply = (AlignedVec, Vec<PayloadPart>);

/// Answers one request frame (a successful `Credit`, and a client's answer to a
/// `ConsumerUpdate`, are not answered).
pub async fn handle(
    shard: &Shard,
    session: &Session,
    header: FrameHeader,
    frame: FrameBuf,
) -> Option<Response> {
    let kind = Kind::from_u16(header.kind);
    let result = match kind {
        None => Err(BrokerError::new(Status::UnknownKind, format!("unknown request kind {}", header.kind))),
        Some(kind) => dispatch(shard, session, kind, header, frame).await,
    };
    shard.metrics.request(WIRE_NATIVE, native_kind_name(kind), result.is_ok());
    match result {
        Ok(_) if matches!(kind, Some(Kind::Credit | Kind::ConsumerUpdate)) => None,
        Ok((body, payload)) => {
            let payload_len = payload.iter().map(|part| part.bytes().len()).sum();
            let head = encode_head(header.kind, header.correlation, 0, &body, payload_len);
            Some(Response { head, payload, release: None })
        }
        Err(error) => Some(Response::error(header.kind, header.correlation, error.status, &error.message)),
    }
}

async fn dispatch(
    shard: &Shard,
    session: &Session,
    kind: Kind,
    header: FrameHeader,
    frame: FrameBuf,
) -> BrokerResult<Reply> {
    let body = &frame[header.body_range()];
    match kind {
        Kind::Ping => admin::ping(shard),
        Kind::Login => admin::login(shard, session, decode(body)?).await,
        _ => {
            let user = logged_in(shard, session)?;
            let context = Context { shard, session, user };
            match kind {
                Kind::Produce => data::produce(&context, decode(body)?, header, frame).await,
                Kind::Poll => data::poll(&context, decode(body)?).await,
                Kind::OffsetStore => data::store_offset(&context, decode(body)?).await,
                Kind::OffsetGet => data::get_offset(&context, decode(body)?).await,
                Kind::Subscribe => subscriptions::subscribe(&context, decode(body)?).await,
                Kind::SubscribeDurable => subscriptions::subscribe_durable(&context, decode(body)?).await,
                Kind::Credit => subscriptions::credit(&context, decode(body)?),
                Kind::Unsubscribe => subscriptions::unsubscribe(&context, decode(body)?),
                Kind::ConsumerUpdate => {
                    subscriptions::consumer_update_answer(&context, header.correlation, decode(body)?)
                }
                _ => admin::dispatch(&context, kind, body).await,
            }
        }
    }
}

/// What every authenticated handler gets.
pub struct Context<'a> {
    /// The shard serving the connection.
    pub shard: &'a Shard,
    /// The connection's session.
    pub session: &'a Session,
    /// The logged-in user, as the current catalog has it.
    pub user: User,
}

impl Context<'_> {
    /// Fails with PermissionDenied unless the user holds `right` on `stream`.
    pub fn require(&self, stream: &str, right: Right) -> BrokerResult<()> {
        if auth::allowed(&self.user, stream, right) {
            return Ok(());
        }
        Err(BrokerError::new(
            Status::PermissionDenied,
            format!("user \"{}\" lacks the {right:?} right on stream \"{stream}\"", self.user.name),
        ))
    }

    /// Fails with PermissionDenied unless the user is an administrator.
    pub fn require_admin(&self, what: &str) -> BrokerResult<()> {
        if self.user.admin {
            return Ok(());
        }
        Err(BrokerError::new(
            Status::PermissionDenied,
            format!("{what} needs an administrator; \"{}\" is not one", self.user.name),
        ))
    }
}

/// The session's user, re-read from the current catalog (a deleted user loses access at once).
pub(crate) fn logged_in(shard: &Shard, session: &Session) -> BrokerResult<User> {
    let name = session.user.borrow().clone();
    let Some(name) = name else {
        return Err(BrokerError::new(
            Status::Unauthenticated,
            "log in first: only Ping is allowed before Login",
        ));
    };
    let catalog = shard.catalog();
    match catalog.users.get(&name) {
        Some(user) => Ok(user.clone()),
        None => {
            session.user.replace(None);
            Err(BrokerError::new(
                Status::Unauthenticated,
                format!("user \"{name}\" no longer exists; log in again"),
            ))
        }
    }
}

/// Validates and deserialises a request body.
pub fn decode<T>(body: &[u8]) -> BrokerResult<T>
where
    T: Archive,
    T::Archived:
        for<'a> CheckBytes<HighValidator<'a, RkyvError>> + rkyv::Deserialize<T, HighDeserializer<RkyvError>>,
{
    messages::decode(body).map_err(|e| BrokerError::new(Status::MalformedBody, e.to_string()))
}

/// Archives a response body; `payload` (raw bytes after it) may be empty.
pub fn reply<T>(value: &T, payload: Vec<u8>) -> BrokerResult<Reply>
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<AlignedVec, rkyv::ser::allocator::ArenaHandle<'a>, RkyvError>,
    >,
{
    let parts = if payload.is_empty() { Vec::new() } else { vec![PayloadPart::Owned(payload)] };
    reply_parts(value, parts)
}

/// Archives a response body whose payload is already in parts (poll read buffers).
pub fn reply_parts<T>(value: &T, payload: Vec<PayloadPart>) -> BrokerResult<Reply>
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<AlignedVec, rkyv::ser::allocator::ArenaHandle<'a>, RkyvError>,
    >,
{
    let body = messages::encode(value).map_err(|e| BrokerError::new(Status::Internal, e.to_string()))?;
    Ok((body, payload))
}
