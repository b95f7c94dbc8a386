//! The super-stream handlers (kinds 90-93): create, delete, route a key, list the partitions.
//!
//! Run on the connection's shard. Create and delete are metadata changes: they go to the
//! controller like topic changes (one logged op each, persisted before every shard serves the
//! result). Route and partitions read the shard's own catalog snapshot and never leave the core.
//! Invariants: create and delete need the manage right on the stream, route and partitions the
//! read right, checked before anything else; every refusal is a status (`UnknownStream`,
//! `UnknownTopic`, `NotASuperStream`, `NoRoute`, `InvalidName`, `InvalidArgument`), never a
//! dropped connection.

use super::handlers::{decode, reply, Context, Reply};
use crate::metadata::auth::Right;
use crate::metadata::catalog::{MetadataOp, TopicOp};
use crate::metadata::super_stream::{CreateSuperStreamOp, RouteError, ROUTING_KEY_BYTES_MAX};
use crate::protocol::messages::{Empty, Kind, Status};
use crate::protocol::super_stream::{
    SuperStreamCreate, SuperStreamPartition, SuperStreamPartitions, SuperStreamRef, SuperStreamRoute,
    SuperStreamRouted,
};
use crate::shard::error::{BrokerError, BrokerResult};

/// Answers one super-stream kind.
pub async fn dispatch(context: &Context<'_>, kind: Kind, body: &[u8]) -> BrokerResult<Reply> {
    match kind {
        Kind::SuperStreamCreate => create(context, decode(body)?).await,
        Kind::SuperStreamDelete => {
            let request: SuperStreamRef = decode(body)?;
            context.require(&request.stream, Right::Manage)?;
            let op = TopicOp { stream: request.stream, topic: request.name };
            context.shard.commit(MetadataOp::DeleteSuperStream(op)).await?;
            reply(&Empty {}, Vec::new())
        }
        Kind::SuperStreamRoute => route(context, decode(body)?),
        Kind::SuperStreamPartitions => partitions(context, decode(body)?),
        other => {
            Err(BrokerError::new(Status::Internal, format!("{other:?} reached the super-stream handlers")))
        }
    }
}

/// Creates the super stream (or, with `if_missing`, answers the existing one).
async fn create(context: &Context<'_>, request: SuperStreamCreate) -> BrokerResult<Reply> {
    context.require(&request.stream, Right::Manage)?;
    let exists = {
        let catalog = context.shard.catalog();
        match catalog.super_stream(&request.stream, &request.name) {
            Ok(_) => true,
            Err(error) if error.status() == Status::UnknownTopic => false,
            Err(error) => return Err(error.into()),
        }
    };
    let catalog = if exists && request.if_missing {
        context.shard.catalog()
    } else {
        let op = CreateSuperStreamOp::from_layout(
            &request.stream,
            &request.name,
            request.layout,
            request.shared_keys,
            request.config,
            crate::model::now_us(),
        )?;
        context.shard.commit(MetadataOp::CreateSuperStream(Box::new(op))).await?
    };
    let (stream, topic) = catalog.topic(&request.stream, &request.name)?;
    reply(&catalog.topic_info(stream, topic, &context.shard.table()), Vec::new())
}

/// The partitions of a routing key, from this shard's catalog.
fn route(context: &Context<'_>, request: SuperStreamRoute) -> BrokerResult<Reply> {
    context.require(&request.stream, Right::Read)?;
    let catalog = context.shard.catalog();
    let (_, _, super_stream) = catalog.super_stream(&request.stream, &request.name)?;
    let (routing, partitions) =
        super_stream.route(&request.routing_key, request.routing).map_err(|error| {
            let key: String = request.routing_key.chars().take(64).collect();
            let message = match error {
                RouteError::KeyTooLong(len) => {
                    format!("a routing key has at most {ROUTING_KEY_BYTES_MAX} bytes, not {len}")
                }
                RouteError::NoRoute => format!(
                    "no partition of super stream `{}/{}` is bound to routing key `{}`",
                    request.stream,
                    request.name,
                    key.escape_debug()
                ),
            };
            BrokerError::new(error.status(), message)
        })?;
    reply(&SuperStreamRouted { routing, partitions }, Vec::new())
}

/// Every partition with its binding key and owner, from this shard's catalog.
fn partitions(context: &Context<'_>, request: SuperStreamRef) -> BrokerResult<Reply> {
    context.require(&request.stream, Right::Read)?;
    let catalog = context.shard.catalog();
    let table = context.shard.table();
    let (stream, topic, super_stream) = catalog.super_stream(&request.stream, &request.name)?;
    let partitions = super_stream
        .binding_keys
        .iter()
        .zip(0..topic.partitions)
        .map(|(key, id)| SuperStreamPartition {
            id,
            binding_key: key.clone(),
            shard: table.owner(stream.id, topic.id, id),
        })
        .collect();
    let answer =
        SuperStreamPartitions { name: topic.name.clone(), routing: super_stream.routing, partitions };
    reply(&answer, Vec::new())
}
