//! Foreign wire protocols: front-ends that decode another system's frames into the broker's own
//! requests and encode the answers (DESIGN §7, "one semantics, many wires").
//!
//! Each wire owns its codec and its mapping; connection limits, TLS, users and every semantic
//! (named producers, subscriptions, single active consumers, filters, super streams) are the
//! native ones, run on the connection's shard and forwarded to owner shards as native requests
//! are. The native protocol itself stays in `crate::server`.

pub mod kafka;
pub mod rabbitmq;

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor::Error as RkyvError;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::Archive;

use crate::protocol::messages::{self, Kind, Status};
use crate::server::admin;
use crate::server::handlers::Context;
use crate::shard::error::{BrokerError, BrokerResult};

/// Runs native request `kind` with `request` as its body through the native handlers (rights
/// checks, metadata log, owner forwarding) and decodes the answer's body: how a foreign wire's
/// control command becomes the native request of the same meaning.
pub(crate) async fn native_call<Req, Resp>(
    context: &Context<'_>,
    kind: Kind,
    request: &Req,
) -> BrokerResult<Resp>
where
    Req: for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, RkyvError>>,
    Resp: Archive,
    Resp::Archived: for<'a> CheckBytes<HighValidator<'a, RkyvError>>
        + rkyv::Deserialize<Resp, HighDeserializer<RkyvError>>,
{
    let body = messages::encode(request).map_err(|e| BrokerError::new(Status::Internal, e.to_string()))?;
    let (answer, _) = admin::dispatch(context, kind, &body).await?;
    messages::decode(&answer).map_err(|e| BrokerError::new(Status::Internal, e.to_string()))
}
