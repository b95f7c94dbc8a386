//! Stream and super stream commands: Create, Delete, Metadata, StreamStats, CreateSuperStream,
//! DeleteSuperStream, Route and Partitions, mapped onto topics of the `--rabbitmq-stream` broker
//! stream (module `names`).
//!
//! Runs on the connection's shard, in its reader; every change goes through the native admin
//! handlers (metadata log on the controller, rights checks). Invariants: Metadata names one broker
//! per shard (the shard's own RabbitMQ port) and the owner shard as each stream's leader, so
//! leader-aware clients publish and consume where the partition lives; with per-shard ports off
//! it names the main address only.

use std::time::Duration;

use super::codec::codes;
use super::encode::{self, StreamMetadata};
use super::names::{self, resolve};
use super::native::{call, code_of};
use super::state::Conn;
use crate::protocol::durable::TopicState;
use crate::protocol::messages::Empty;
use crate::protocol::messages::{
    CreateStream, CreateTopic, Kind, StreamInfo, TopicConfig, TopicInfo, TopicRef,
};
use crate::protocol::super_stream::{
    SuperStreamCreate, SuperStreamLayout, SuperStreamRef, SuperStreamRoute, SuperStreamRouted,
    SuperStreamRouting,
};
use crate::server::handlers::Context;
use crate::shard::error::BrokerResult;

/// Create: topic `stream` with one partition. Arguments: `max-length-bytes`, `max-age`
/// (`7D`, `12h`, ...), `stream-max-segment-size-bytes`; the others (leader locator, cluster
/// size) mean nothing on one machine and are ignored.
pub(super) async fn create(conn: &Conn, correlation: u32, stream: &str, arguments: &[(&str, &str)]) {
    let key = super::codec::keys::CREATE;
    let code = match topic_config(1, arguments) {
        Err(_) => codes::PRECONDITION_FAILED,
        Ok(config) => match create_topic(conn, stream, config).await {
            Ok(()) => codes::OK,
            Err(error) => code_of(&error),
        },
    };
    conn.send(encode::generic_response(key, correlation, code));
}

async fn create_topic(conn: &Conn, name: &str, config: TopicConfig) -> BrokerResult<()> {
    let context = conn.context()?;
    ensure_broker_stream(conn, &context).await?;
    let request = CreateTopic {
        stream: conn.broker_stream().to_string(),
        name: name.to_string(),
        config,
        policy: Default::default(),
        if_missing: false,
    };
    let _: TopicInfo = call(&context, Kind::TopicCreate, &request).await?;
    Ok(())
}

/// Creates the broker stream holding RabbitMQ streams when it is missing.
async fn ensure_broker_stream(conn: &Conn, context: &Context<'_>) -> BrokerResult<()> {
    if conn.shard.catalog().stream(conn.broker_stream()).is_ok() {
        return Ok(());
    }
    let request = CreateStream { name: conn.broker_stream().to_string(), if_missing: true };
    let _: StreamInfo = call(context, Kind::StreamCreate, &request).await?;
    Ok(())
}

fn topic_config(partitions: u32, arguments: &[(&str, &str)]) -> Result<TopicConfig, String> {
    let mut config = TopicConfig { partitions, ..TopicConfig::default() };
    for (key, value) in arguments {
        match *key {
            "max-length-bytes" => {
                config.retention_max_bytes = Some(value.parse().map_err(|_| key.to_string())?)
            }
            "max-age" => config.retention_max_age_us = Some(parse_age(value).ok_or_else(|| key.to_string())?),
            "stream-max-segment-size-bytes" => {
                config.segment_bytes = Some(value.parse().map_err(|_| key.to_string())?)
            }
            _ => {}
        }
    }
    Ok(config)
}

/// RabbitMQ's `max-age`: a number and a unit, `Y`, `M`, `D`, `h`, `m` or `s`, in microseconds.
fn parse_age(value: &str) -> Option<u64> {
    let unit = value.chars().last()?;
    let number: u64 = value[..value.len() - unit.len_utf8()].parse().ok()?;
    let seconds = match unit {
        'Y' => 365 * 24 * 3600,
        'M' => 30 * 24 * 3600,
        'D' => 24 * 3600,
        'h' => 3600,
        'm' => 60,
        's' => 1,
        _ => return None,
    };
    Duration::from_secs(number.checked_mul(seconds)?).as_micros().try_into().ok()
}

/// Delete: a plain stream only (a super stream's member goes with DeleteSuperStream).
pub(super) async fn delete(conn: &Conn, correlation: u32, stream: &str) {
    let key = super::codec::keys::DELETE;
    let code = match delete_topic(conn, stream).await {
        Ok(()) => codes::OK,
        Err(code) => code,
    };
    if code == codes::OK {
        conn.publishers.borrow_mut().retain(|_, publisher| publisher.stream != stream);
        conn.send(encode::metadata_update(codes::STREAM_NOT_AVAILABLE, stream));
    }
    conn.send(encode::generic_response(key, correlation, code));
}

async fn delete_topic(conn: &Conn, stream: &str) -> Result<(), u16> {
    let target = resolve(&conn.shard.catalog(), conn.broker_stream(), stream)?;
    if target.topic != stream {
        return Err(codes::PRECONDITION_FAILED);
    }
    let context = conn.context().map_err(|e| code_of(&e))?;
    let request = TopicRef { stream: conn.broker_stream().to_string(), topic: target.topic };
    let _: Empty = call(&context, Kind::TopicDelete, &request).await.map_err(|e| code_of(&e))?;
    Ok(())
}

/// Metadata: one broker per shard, the owner as leader, no replicas (one machine).
pub(super) fn metadata(conn: &Conn, correlation: u32, streams: &[&str]) {
    let config = &conn.shard.config;
    let host = config.rabbitmq_host();
    let shards = conn.shard.shards();
    let per_shard: Vec<(u16, u32)> = (0..shards)
        .filter_map(|shard| {
            config.rabbitmq_shard_address(shard).map(|address| (shard, u32::from(address.port())))
        })
        .collect();
    let brokers: Vec<(u16, &str, u32)> = if per_shard.len() == usize::from(shards) {
        per_shard.iter().map(|&(shard, port)| (shard, host.as_str(), port)).collect()
    } else {
        let port = config.rabbitmq_listen.map_or(0, |address| u32::from(address.port()));
        vec![(0, host.as_str(), port)]
    };
    let catalog = conn.shard.catalog();
    let table = conn.shard.table();
    let allowed = conn.context().is_ok_and(|context| {
        context.require(conn.broker_stream(), crate::metadata::auth::Right::Read).is_ok()
    });
    let entries: Vec<StreamMetadata<'_>> = streams
        .iter()
        .map(|name| match resolve(&catalog, conn.broker_stream(), name) {
            Ok(_) if !allowed => {
                StreamMetadata { name, code: codes::ACCESS_REFUSED, leader: 0, replicas: &[] }
            }
            Ok(target) => {
                let owner = table.owner(target.key.stream_id, target.key.topic_id, target.key.partition);
                let leader = if brokers.len() > 1 { owner } else { 0 };
                StreamMetadata { name, code: codes::OK, leader, replicas: &[] }
            }
            Err(code) => StreamMetadata { name, code, leader: 0, replicas: &[] },
        })
        .collect();
    conn.send(encode::metadata_response(correlation, &brokers, &entries));
}

/// StreamStats: `first_chunk_id`, `committed_chunk_id` and `last_chunk_id` as offsets (a chunk is
/// one of our batches; these are the partition's first and last offsets, -1 when empty).
pub(super) async fn stats(conn: &Conn, correlation: u32, stream: &str) {
    match partition_state(conn, stream).await {
        Ok(state) => {
            let first = i64::try_from(state.first_offset).unwrap_or(i64::MAX);
            let last = state.last_offset;
            let first = if last < 0 { -1 } else { first };
            let stats = [("first_chunk_id", first), ("committed_chunk_id", last), ("last_chunk_id", last)];
            conn.send(encode::stream_stats_response(correlation, codes::OK, &stats));
        }
        Err(code) => conn.send(encode::stream_stats_response(correlation, code, &[])),
    }
}

/// The native state of the partition behind RabbitMQ stream `stream`.
pub(super) async fn partition_state(
    conn: &Conn,
    stream: &str,
) -> Result<crate::protocol::durable::PartitionState, u16> {
    let target = resolve(&conn.shard.catalog(), conn.broker_stream(), stream)?;
    let context = conn.context().map_err(|e| code_of(&e))?;
    let request = TopicRef { stream: conn.broker_stream().to_string(), topic: target.topic.clone() };
    let state: TopicState = call(&context, Kind::TopicState, &request).await.map_err(|e| code_of(&e))?;
    state.partitions.into_iter().find(|p| p.partition == target.partition).ok_or(codes::STREAM_DOES_NOT_EXIST)
}

/// CreateSuperStream: partitions must be named `NAME-<binding key>` (what every client sends).
pub(super) async fn create_super_stream(
    conn: &Conn,
    correlation: u32,
    name: &str,
    partitions: &[&str],
    binding_keys: &[&str],
    arguments: &[(&str, &str)],
) {
    let key = super::codec::keys::CREATE_SUPER_STREAM;
    let named = partitions.len() == binding_keys.len()
        && !partitions.is_empty()
        && partitions.iter().zip(binding_keys).all(|(partition, key)| *partition == format!("{name}-{key}"));
    let config = topic_config(partitions.len() as u32, arguments);
    let code = match config {
        Ok(config) if named => {
            let layout = SuperStreamLayout::BindingKeys(binding_keys.iter().map(|k| k.to_string()).collect());
            match create_super(conn, name, layout, config).await {
                Ok(()) => codes::OK,
                Err(error) => code_of(&error),
            }
        }
        _ => codes::PRECONDITION_FAILED,
    };
    conn.send(encode::generic_response(key, correlation, code));
}

async fn create_super(
    conn: &Conn,
    name: &str,
    layout: SuperStreamLayout,
    config: TopicConfig,
) -> BrokerResult<()> {
    let context = conn.context()?;
    ensure_broker_stream(conn, &context).await?;
    let request = SuperStreamCreate {
        stream: conn.broker_stream().to_string(),
        name: name.to_string(),
        layout,
        shared_keys: false,
        config,
        if_missing: false,
    };
    let _: TopicInfo = call(&context, Kind::SuperStreamCreate, &request).await?;
    Ok(())
}

pub(super) async fn delete_super_stream(conn: &Conn, correlation: u32, name: &str) {
    let key = super::codec::keys::DELETE_SUPER_STREAM;
    let result: BrokerResult<Empty> = match conn.context() {
        Ok(context) => {
            let request = SuperStreamRef { stream: conn.broker_stream().to_string(), name: name.to_string() };
            call(&context, Kind::SuperStreamDelete, &request).await
        }
        Err(error) => Err(error),
    };
    conn.send(encode::generic_response(key, correlation, result.map_or_else(|e| code_of(&e), |_| codes::OK)));
}

/// Route: the member streams whose binding key equals the routing key (clients hash themselves).
pub(super) async fn route(conn: &Conn, correlation: u32, routing_key: &str, super_stream: &str) {
    match routed(conn, routing_key, super_stream).await {
        Ok(streams) => {
            let names: Vec<&str> = streams.iter().map(String::as_str).collect();
            conn.send(encode::route_response(correlation, codes::OK, &names));
        }
        Err(code) => conn.send(encode::route_response(correlation, code, &[])),
    }
}

async fn routed(conn: &Conn, routing_key: &str, super_stream: &str) -> Result<Vec<String>, u16> {
    let members = names::members(&conn.shard.catalog(), conn.broker_stream(), super_stream)
        .ok_or(codes::STREAM_DOES_NOT_EXIST)?;
    let context = conn.context().map_err(|e| code_of(&e))?;
    let request = SuperStreamRoute {
        stream: conn.broker_stream().to_string(),
        name: super_stream.to_string(),
        routing_key: routing_key.to_string(),
        routing: Some(SuperStreamRouting::Key),
    };
    let result: BrokerResult<SuperStreamRouted> = call(&context, Kind::SuperStreamRoute, &request).await;
    match result {
        Ok(routed) => {
            Ok(routed.partitions.iter().filter_map(|&p| members.get(p as usize).cloned()).collect())
        }
        Err(error) if error.status == crate::protocol::messages::Status::NoRoute => Ok(Vec::new()),
        Err(error) => Err(code_of(&error)),
    }
}

/// Partitions: the member streams in partition order.
pub(super) fn partitions(conn: &Conn, correlation: u32, super_stream: &str) {
    let allowed = conn.context().is_ok_and(|context| {
        context.require(conn.broker_stream(), crate::metadata::auth::Right::Read).is_ok()
    });
    match names::members(&conn.shard.catalog(), conn.broker_stream(), super_stream) {
        Some(_) if !allowed => {
            conn.send(encode::partitions_response(correlation, codes::ACCESS_REFUSED, &[]))
        }
        Some(members) => {
            let names: Vec<&str> = members.iter().map(String::as_str).collect();
            conn.send(encode::partitions_response(correlation, codes::OK, &names));
        }
        None => conn.send(encode::partitions_response(correlation, codes::STREAM_DOES_NOT_EXIST, &[])),
    }
}
