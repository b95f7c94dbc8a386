//! Routes each decoded RabbitMQ frame to its handler, in arrival order, and enforces the
//! handshake: only PeerProperties, SaslHandshake, SaslAuthenticate, Tune, Open, Close and
//! Heartbeat before Open.
//!
//! Runs on the connection's shard, inside its reader. Invariants: every frame read is answered
//! to the flow exactly once ([`Flow::answered`]), by the reader for control commands and by the
//! publish task for a Publish; an undecodable frame closes the connection with a Close frame
//! carrying the protocol's code and a message.

use crate::metrics::WIRE_RABBITMQ;
use std::rc::Rc;
use std::sync::Arc;

use async_lock::Semaphore;

use super::codec::{self, codes, Command};
use super::state::Conn;
use super::{consume, encode, handshake, publish, streams};
use crate::server::connection::Flow;
use crate::server::frame_pool::FrameBuf;

/// Decodes and serves one frame; `Err` ends the connection with that reason.
pub(super) async fn frame(
    conn: &Rc<Conn>,
    flow: &Rc<Flow>,
    in_flight: &Arc<Semaphore>,
    frame: FrameBuf,
    length: usize,
) -> Result<(), String> {
    let decoded = match codec::decode(&frame[..]) {
        Ok(decoded) => decoded,
        Err(error) => {
            flow.answered(length);
            conn.shard.metrics.request(WIRE_RABBITMQ, codec::keys::name(error.key), false);
            let reason = format!("bad frame (command key {}): {error}", error.key);
            conn.send(encode::close(0, error.response_code(), &reason));
            return Err(reason);
        }
    };
    // Counted when read: a command's outcome travels in its own response code.
    conn.shard.metrics.request(WIRE_RABBITMQ, codec::keys::name(decoded.key), true);
    if let Command::Publish { publisher_id, entries } = &decoded.command {
        if !conn.opened.get() {
            flow.answered(length);
            return refuse_before_open(conn);
        }
        let permit = flow.unless_killed(in_flight.acquire_arc()).await?;
        publish::publish(conn, flow, permit, *publisher_id, entries, length);
        return Ok(());
    }
    let outcome = command(conn, decoded.command).await;
    flow.answered(length);
    drop(frame);
    outcome
}

async fn command(conn: &Rc<Conn>, command: Command<'_>) -> Result<(), String> {
    match command {
        Command::PeerProperties { correlation, .. } => handshake::peer_properties(conn, correlation),
        Command::SaslHandshake { correlation } => handshake::sasl_handshake(conn, correlation),
        Command::SaslAuthenticate { correlation, mechanism, response } => {
            return handshake::sasl_authenticate(conn, correlation, mechanism, response).await
        }
        Command::Tune { frame_max, heartbeat } => handshake::tune(conn, frame_max, heartbeat),
        Command::Open { correlation, virtual_host } => handshake::open(conn, correlation, virtual_host),
        Command::Close { correlation, code, reason } => {
            conn.send(encode::close_response(correlation, codes::OK));
            return Err(format!("the client closed the connection ({code}: {reason})"));
        }
        Command::CloseResponse { .. } => return Err("closed".to_string()),
        Command::Heartbeat => {}
        other if !conn.opened.get() => {
            drop(other);
            return refuse_before_open(conn);
        }
        Command::ExchangeCommandVersions { correlation, versions } => {
            handshake::exchange_command_versions(conn, correlation, &versions)
        }
        Command::Create { correlation, stream, arguments } => {
            streams::create(conn, correlation, stream, &arguments).await
        }
        Command::Delete { correlation, stream } => streams::delete(conn, correlation, stream).await,
        Command::Metadata { correlation, streams: names } => streams::metadata(conn, correlation, &names),
        Command::StreamStats { correlation, stream } => streams::stats(conn, correlation, stream).await,
        Command::CreateSuperStream { correlation, name, partitions, binding_keys, arguments } => {
            streams::create_super_stream(conn, correlation, name, &partitions, &binding_keys, &arguments)
                .await
        }
        Command::DeleteSuperStream { correlation, name } => {
            streams::delete_super_stream(conn, correlation, name).await
        }
        Command::Route { correlation, routing_key, super_stream } => {
            streams::route(conn, correlation, routing_key, super_stream).await
        }
        Command::Partitions { correlation, super_stream } => {
            streams::partitions(conn, correlation, super_stream)
        }
        Command::DeclarePublisher { correlation, publisher_id, reference, stream } => {
            publish::declare(conn, correlation, publisher_id, reference, stream).await
        }
        Command::QueryPublisherSequence { correlation, reference, stream } => {
            publish::query_sequence(conn, correlation, reference, stream).await
        }
        Command::DeletePublisher { correlation, publisher_id } => {
            publish::delete(conn, correlation, publisher_id).await
        }
        Command::Publish { .. } => {}
        Command::Subscribe { correlation, subscription_id, stream, offset, credit, properties } => {
            consume::subscribe(conn, correlation, subscription_id, stream, offset, credit, &properties).await
        }
        Command::Credit { subscription_id, credit } => consume::credit(conn, subscription_id, credit),
        Command::Unsubscribe { correlation, subscription_id } => {
            consume::unsubscribe(conn, correlation, subscription_id)
        }
        Command::ConsumerUpdateResponse { correlation, code: _, offset } => {
            consume::consumer_update_answer(conn, correlation, offset).await
        }
        Command::StoreOffset { reference, stream, offset } => {
            consume::store_offset(conn, reference, stream, offset).await
        }
        Command::QueryOffset { correlation, reference, stream } => {
            consume::query_offset(conn, correlation, reference, stream).await
        }
    }
    Ok(())
}

fn refuse_before_open(conn: &Conn) -> Result<(), String> {
    let reason = "authenticate (SASL) and open a virtual host first";
    conn.send(encode::close(0, codes::ACCESS_REFUSED, reason));
    Err(reason.to_string())
}
