//! Consumers: Subscribe (offset specifications, credit, `single-active-consumer`, `name`,
//! `super-stream`, `filter.N`, `match-unfiltered`), Credit, Unsubscribe, the client's answer to
//! ConsumerUpdate, StoreOffset and QueryOffset, all on the broker's own subscriptions and stored
//! offsets (a RabbitMQ subscription is a native one on one partition).
//!
//! Runs on the connection's shard, in its reader. Offsets: RabbitMQ stores the offset of the last
//! message processed, the broker the next one to read, so StoreOffset adds one and QueryOffset
//! takes it off. `next` (RabbitMQ: only what is written from now on) starts at the partition's
//! end, not at a stored offset. Invariants: a Subscribe is answered before any Deliver or
//! ConsumerUpdate of it; a failed Credit is answered with a Credit response, a good one is not.

use super::codec::{codes, keys, OffsetSpec};
use super::encode;
use super::names::{broker_name, resolve, Target};
use super::native::code_of;
use super::state::{Conn, SubscriptionInfo};
use crate::metadata::auth::Right;
use crate::protocol::batch::BatchHeader;
use crate::protocol::messages::{ConsumerRef, GetOffset, OffsetInfo, PollStrategy, StoreOffset};
use crate::protocol::subscriptions::{ConsumerUpdateAnswer, Credit, Subscribe, Unsubscribe};
use crate::server::{data, subscriptions};
use crate::shard::error::BrokerResult;
use crate::shard::mesh::PollSpec;

#[allow(clippy::too_many_arguments)]
pub(super) async fn subscribe(
    conn: &Conn,
    correlation: u32,
    id: u8,
    stream: &str,
    offset: OffsetSpec,
    credit: u16,
    properties: &[(&str, &str)],
) {
    let respond = |code| conn.send(encode::generic_response(keys::SUBSCRIBE, correlation, code));
    if conn.shared.subscriptions.borrow().contains_key(&id) {
        return respond(codes::SUBSCRIPTION_ID_ALREADY_EXISTS);
    }
    let target = match resolve(&conn.shard.catalog(), conn.broker_stream(), stream) {
        Ok(target) => target,
        Err(code) => return respond(code),
    };
    let property = |name: &str| properties.iter().find(|(key, _)| *key == name).map(|(_, value)| *value);
    let single_active = property("single-active-consumer") == Some("true");
    let spread = property("super-stream").is_some();
    let consumer = property("name").map(broker_name).unwrap_or_default();
    let mut filter: Vec<String> = properties
        .iter()
        .filter(|(key, _)| key.starts_with("filter."))
        .map(|(_, value)| value.to_string())
        .collect();
    filter.sort();
    filter.dedup();
    let match_unfiltered = property("match-unfiltered") == Some("true");
    let strategy = match strategy(conn, stream, offset).await {
        Ok(strategy) => strategy,
        Err(code) => return respond(code),
    };
    let request = Subscribe {
        subscription_id: u32::from(id),
        stream: conn.broker_stream().to_string(),
        topic: target.topic.clone(),
        partition: Some(target.partition),
        offset: strategy,
        credit: u32::from(credit),
        consumer,
        single_active,
        filter,
        match_unfiltered,
    };
    let context = match conn.context() {
        Ok(context) => context,
        Err(error) => return respond(code_of(&error)),
    };
    if let Err(error) = context.require(conn.broker_stream(), Right::Read) {
        return respond(code_of(&error));
    }
    let filter = match data::filter_of(&request.filter, request.match_unfiltered) {
        Ok(filter) => filter,
        Err(error) => return respond(code_of(&error)),
    };
    conn.shared
        .subscriptions
        .borrow_mut()
        .insert(id, SubscriptionInfo { stream: stream.to_string(), filter });
    if single_active {
        // The group's coordinator may activate this member (a ConsumerUpdate) before the native
        // subscribe returns: answer first, as RabbitMQ does.
        respond(codes::OK);
        if let Err(error) = subscriptions::subscribe_spread(&context, request, spread).await {
            tracing::debug!(subscription = id, %error.message, "single-active subscribe failed after its answer");
            conn.shared.subscriptions.borrow_mut().remove(&id);
            conn.send(encode::metadata_update(codes::STREAM_NOT_AVAILABLE, stream));
        }
        return;
    }
    match subscriptions::subscribe(&context, request).await {
        Ok(_) => respond(codes::OK),
        Err(error) => {
            conn.shared.subscriptions.borrow_mut().remove(&id);
            respond(code_of(&error));
        }
    }
}

/// The native start of a RabbitMQ offset specification: `next` is the partition's end, and an
/// offset outside the partition is brought inside it (RabbitMQ starts at the first offset still
/// kept, or at the end).
async fn strategy(conn: &Conn, stream: &str, offset: OffsetSpec) -> Result<PollStrategy, u16> {
    Ok(match offset {
        OffsetSpec::First => PollStrategy::First,
        OffsetSpec::Last => PollStrategy::Offset(last_chunk(conn, stream).await?),
        OffsetSpec::Next => {
            let state = super::streams::partition_state(conn, stream).await?;
            PollStrategy::Offset(u64::try_from(state.last_offset + 1).unwrap_or(0))
        }
        OffsetSpec::Offset(offset) => {
            let state = super::streams::partition_state(conn, stream).await?;
            let end = u64::try_from(state.last_offset + 1).unwrap_or(0);
            PollStrategy::Offset(offset.clamp(state.first_offset.min(end), end))
        }
        OffsetSpec::Timestamp(ms) => {
            PollStrategy::Timestamp(u64::try_from(ms).unwrap_or(0).saturating_mul(1000))
        }
    })
}

/// The first offset of the last stored batch (RabbitMQ's `last`: the last chunk, whole), or the
/// partition's end when it is empty.
async fn last_chunk(conn: &Conn, stream: &str) -> Result<u64, u16> {
    let state = super::streams::partition_state(conn, stream).await?;
    let Ok(last) = u64::try_from(state.last_offset) else { return Ok(0) };
    let target = resolve(&conn.shard.catalog(), conn.broker_stream(), stream)?;
    let spec = PollSpec {
        strategy: PollStrategy::Offset(last),
        consumer_key: String::new(),
        max_messages: 1,
        max_bytes: 1,
        max_batches: 1,
        max_wait: std::time::Duration::ZERO,
        auto_commit: false,
        filter: None,
    };
    let polled = data::poll_partition(&conn.shard, target.key, spec).await.map_err(|e| code_of(&e))?;
    let base =
        polled.parts.first().and_then(|part| BatchHeader::decode(part.bytes()).ok()).map(|h| h.base_offset);
    Ok(base.unwrap_or(last))
}

/// The stored offset of `consumer` (none for "") and the partition's end.
async fn offsets(conn: &Conn, target: &Target, consumer: &str) -> BrokerResult<OffsetInfo> {
    let context = conn.context()?;
    let name = if consumer.is_empty() { "rabbitmq".to_string() } else { consumer.to_string() };
    let request = GetOffset {
        stream: conn.broker_stream().to_string(),
        topic: target.topic.clone(),
        partition: target.partition,
        consumer: ConsumerRef::Named(name),
    };
    let (body, _) = data::get_offset(&context, request).await?;
    crate::protocol::messages::decode(&body).map_err(|e| {
        crate::shard::error::BrokerError::new(crate::protocol::messages::Status::Internal, e.to_string())
    })
}

pub(super) fn credit(conn: &Conn, id: u8, credit: u16) {
    let result = conn.context().and_then(|context| {
        subscriptions::credit(&context, Credit { subscription_id: u32::from(id), credit: u32::from(credit) })
    });
    if let Err(error) = result {
        conn.send(encode::credit_response(code_of(&error), id));
    }
}

pub(super) fn unsubscribe(conn: &Conn, correlation: u32, id: u8) {
    conn.shared.subscriptions.borrow_mut().remove(&id);
    let result = conn.context().and_then(|context| {
        subscriptions::unsubscribe(&context, Unsubscribe { subscription_id: u32::from(id) })
    });
    let code = result.map_or_else(|e| code_of(&e), |_| codes::OK);
    conn.send(encode::generic_response(keys::UNSUBSCRIBE, correlation, code));
}

/// The client's answer to a ConsumerUpdate: where the activated member starts.
pub(super) async fn consumer_update_answer(conn: &Conn, correlation: u32, offset: Option<OffsetSpec>) {
    // No offset (type 0): the answer of a member being deactivated, or of one that leaves the
    // choice to the broker: the group's stored offset.
    let offset = offset.unwrap_or(OffsetSpec::Next);
    // `next`, `offset` need a partition: the pending update knows it, so map here only what is
    // partition-free and let `Next`/`Offset` through the partition's own lookup below.
    let strategy = match offset {
        OffsetSpec::First => PollStrategy::First,
        OffsetSpec::Last => PollStrategy::Last,
        OffsetSpec::Offset(offset) => PollStrategy::Offset(offset),
        OffsetSpec::Timestamp(ms) => {
            PollStrategy::Timestamp(u64::try_from(ms).unwrap_or(0).saturating_mul(1000))
        }
        // RabbitMQ's `next` after a hand-over: the stored offset of the group when there is one.
        OffsetSpec::Next => PollStrategy::Next,
    };
    let Ok(context) = conn.context() else { return };
    let answer = ConsumerUpdateAnswer { offset: strategy };
    if let Err(error) = subscriptions::consumer_update_answer(&context, u64::from(correlation), answer) {
        tracing::debug!(%error.message, "unexpected ConsumerUpdate answer");
    }
}

/// StoreOffset (no response in the protocol): stores `offset + 1` as the consumer's next offset.
pub(super) async fn store_offset(conn: &Conn, reference: &str, stream: &str, offset: u64) {
    let result = async {
        let target = resolve(&conn.shard.catalog(), conn.broker_stream(), stream).map_err(|code| {
            crate::shard::error::BrokerError::new(
                crate::protocol::messages::Status::UnknownTopic,
                format!("no stream \"{stream}\" (code {code})"),
            )
        })?;
        let context = conn.context()?;
        let request = StoreOffset {
            stream: conn.broker_stream().to_string(),
            topic: target.topic,
            partition: target.partition,
            consumer: ConsumerRef::Named(broker_name(reference)),
            offset: offset.saturating_add(1),
        };
        data::store_offset(&context, request).await
    }
    .await;
    if let Err(error) = result {
        tracing::debug!(reference, stream, %error.message, "StoreOffset failed");
    }
}

/// QueryOffset: the last stored offset (`NO_OFFSET` when none is stored).
pub(super) async fn query_offset(conn: &Conn, correlation: u32, reference: &str, stream: &str) {
    let answer = match resolve(&conn.shard.catalog(), conn.broker_stream(), stream) {
        Err(code) => Err(code),
        Ok(target) => match offsets(conn, &target, &broker_name(reference)).await {
            Ok(OffsetInfo { stored: Some(next), .. }) if next > 0 => Ok(next - 1),
            Ok(_) => Err(codes::NO_OFFSET),
            Err(error) => Err(code_of(&error)),
        },
    };
    let (code, offset) = answer.map_or_else(|code| (code, 0), |offset| (codes::OK, offset));
    conn.send(encode::query_offset_response(correlation, code, offset));
}
