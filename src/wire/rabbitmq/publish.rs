//! Publishers: DeclarePublisher, Publish with PublishConfirm / PublishError,
//! QueryPublisherSequence, DeletePublisher, and the task that keeps named publishers' leases
//! and the client's heartbeat alive.
//!
//! A publisher with a reference is a named producer on its partition (the same producer table
//! as native named producers: `crate::shard::producers`), so publishing ids are deduplicated
//! across connections and restarts; one without is anonymous and nothing is deduplicated, as in
//! RabbitMQ. A Publish frame becomes batches on the connection's shard, in the reader (so batches
//! keep their frames' order), and its own task stores them on the owner shard and confirms.
//!
//! Invariants: a PublishConfirm is sent only after the owner answered the append, i.e. under the
//! broker's `--fsync` policy (with `always`, after the fdatasync); a duplicate (publishing id at
//! or below the publisher's last) is confirmed without being stored, as RabbitMQ does; every
//! publishing id of a frame is answered exactly once, by a confirm or an error.

use std::rc::Rc;
use std::time::Duration;

use async_lock::SemaphoreGuardArc;

use super::codec::{codes, keys, Entry};
use super::encode;
use super::entries::build_batches;
use super::names::{broker_name, resolve};
use super::native::{call, code_of};
use super::state::{Conn, Publisher};
use crate::metadata::auth::Right;
use crate::protocol::messages::{
    AccessMode, Empty, Kind, ProducerDeclare, ProducerDeclared, ProducerHeartbeat, ProducerRef,
    ProducerSequenceInfo, Status,
};
use crate::server::connection::Flow;
use crate::server::data::produce_on_owner;
use crate::server::frame_pool::FrameBuf;

pub(super) async fn declare(conn: &Conn, correlation: u32, id: u8, reference: Option<&str>, stream: &str) {
    let code = match declare_publisher(conn, id, reference.filter(|r| !r.is_empty()), stream).await {
        Ok(()) => codes::OK,
        Err(code) => code,
    };
    conn.send(encode::generic_response(keys::DECLARE_PUBLISHER, correlation, code));
}

async fn declare_publisher(conn: &Conn, id: u8, reference: Option<&str>, stream: &str) -> Result<(), u16> {
    if conn.publishers.borrow().contains_key(&id) {
        return Err(codes::PRECONDITION_FAILED);
    }
    let target = resolve(&conn.shard.catalog(), conn.broker_stream(), stream)?;
    let context = conn.context().map_err(|e| code_of(&e))?;
    context.require(conn.broker_stream(), Right::Write).map_err(|e| code_of(&e))?;
    let mut publisher = Publisher {
        stream: stream.to_string(),
        target,
        name: None,
        producer_id: 0,
        epoch: 0,
        last: Default::default(),
    };
    if let Some(reference) = reference {
        let name = broker_name(reference);
        let request = ProducerDeclare {
            stream: conn.broker_stream().to_string(),
            topic: publisher.target.topic.clone(),
            name: name.clone(),
            access: AccessMode::Shared,
        };
        let declared: ProducerDeclared =
            call(&context, Kind::ProducerDeclare, &request).await.map_err(|e| code_of(&e))?;
        let partition = publisher.target.partition as usize;
        publisher.last.set(declared.partitions.get(partition).and_then(|p| p.last_sequence));
        publisher.producer_id = declared.producer_id;
        publisher.epoch = declared.epoch;
        publisher.name = Some(name);
    }
    conn.publishers.borrow_mut().insert(id, Rc::new(publisher));
    Ok(())
}

/// Publish: builds the batches now, stores and confirms them in a task of their own.
pub(super) fn publish(
    conn: &Rc<Conn>,
    flow: &Rc<Flow>,
    permit: SemaphoreGuardArc,
    id: u8,
    entries: &[Entry<'_>],
    length: usize,
) {
    let publisher = conn.publishers.borrow().get(&id).cloned();
    let Some(publisher) = publisher else {
        let errors: Vec<(u64, u16)> =
            entries.iter().map(|e| (publishing_id(e), codes::PUBLISHER_DOES_NOT_EXIST)).collect();
        conn.send(encode::publish_error(id, &errors));
        flow.answered(length);
        return;
    };
    let mut scratch = conn.scratch.borrow_mut();
    scratch.clear();
    let named = publisher.name.is_some();
    let last = if named { publisher.last.get() } else { None };
    let built = build_batches(entries, publisher.producer_id, publisher.epoch, last, &mut scratch);
    if !built.duplicates.is_empty() {
        conn.send(encode::publish_confirm(id, &built.duplicates));
    }
    if !built.refused.is_empty() {
        conn.send(encode::publish_error(id, &built.refused));
    }
    if built.batches == 0 || built.kept.is_empty() {
        flow.answered(length);
        return;
    }
    let first_kept = built.kept.iter().copied().min().unwrap_or(0);
    if named {
        let highest = built.kept.iter().copied().max();
        publisher.last.set(publisher.last.get().max(highest));
    }
    let mut frame = FrameBuf::take(scratch.len());
    frame.copy_from_slice(&scratch);
    drop(scratch);
    let (conn, flow) = (conn.clone(), flow.clone());
    let batches = built.batches as u32;
    let kept = built.kept;
    glommio::spawn_local(async move {
        let key = publisher.target.key;
        let len = frame.len();
        match produce_on_owner(&conn.shard, key, frame, 0..len, batches).await {
            Ok(_) => conn.send(encode::publish_confirm(id, &kept)),
            Err(error) => {
                // Not stored: a retry of these ids must not be taken for a duplicate here (the
                // owner's producer table still refuses what it really stored).
                if named {
                    let before = first_kept.checked_sub(1);
                    publisher
                        .last
                        .set(before.and_then(|before| publisher.last.get().map(|last| last.min(before))));
                }
                let code = match error.status {
                    Status::UnknownProducer | Status::ProducerFenced => codes::PUBLISHER_DOES_NOT_EXIST,
                    _ => code_of(&error),
                };
                tracing::debug!(publisher = id, %error.message, "publish failed");
                let errors: Vec<(u64, u16)> = kept.iter().map(|&id| (id, code)).collect();
                conn.send(encode::publish_error(id, &errors));
            }
        }
        flow.answered(length);
        drop(permit);
    })
    .detach();
}

fn publishing_id(entry: &Entry<'_>) -> u64 {
    match entry {
        Entry::Simple { publishing_id, .. } | Entry::SubEntry { publishing_id, .. } => *publishing_id,
    }
}

/// QueryPublisherSequence: the last stored publishing id of `reference` on `stream` (0 if none).
pub(super) async fn query_sequence(conn: &Conn, correlation: u32, reference: &str, stream: &str) {
    let answer = async {
        let target = resolve(&conn.shard.catalog(), conn.broker_stream(), stream)?;
        let context = conn.context().map_err(|e| code_of(&e))?;
        let request = ProducerRef {
            stream: conn.broker_stream().to_string(),
            topic: target.topic,
            partition: target.partition,
            name: broker_name(reference),
        };
        match call::<_, ProducerSequenceInfo>(&context, Kind::ProducerSequence, &request).await {
            Ok(info) => Ok(info.last_sequence.unwrap_or(0)),
            Err(error) if error.status == Status::UnknownProducer => Ok(0),
            Err(error) => Err(code_of(&error)),
        }
    }
    .await;
    let (code, sequence) = answer.map_or_else(|code| (code, 0), |sequence| (codes::OK, sequence));
    conn.send(encode::query_publisher_sequence_response(correlation, code, sequence));
}

/// DeletePublisher: forgets the id and releases a named publisher's lease.
pub(super) async fn delete(conn: &Conn, correlation: u32, id: u8) {
    let removed = conn.publishers.borrow_mut().remove(&id);
    let Some(publisher) = removed else {
        conn.send(encode::generic_response(
            keys::DELETE_PUBLISHER,
            correlation,
            codes::PUBLISHER_DOES_NOT_EXIST,
        ));
        return;
    };
    if let (Some(name), Ok(context)) = (&publisher.name, conn.context()) {
        let request = ProducerHeartbeat {
            stream: conn.broker_stream().to_string(),
            topic: publisher.target.topic.clone(),
            name: name.clone(),
        };
        if let Err(error) = call::<_, Empty>(&context, Kind::ProducerClose, &request).await {
            tracing::debug!(%error.message, "releasing a publisher's lease failed");
        }
    }
    conn.send(encode::generic_response(keys::DELETE_PUBLISHER, correlation, codes::OK));
}

/// Sends the client a heartbeat at the negotiated interval and keeps named publishers' leases
/// alive (a third of `--producer-session-timeout`), until the connection ends.
pub(super) async fn keep_alive(conn: Rc<Conn>, flow: Rc<Flow>) {
    let lease = conn.shard.config.producer_session_timeout / 3;
    let tick = Duration::from_secs(1).min(lease.max(Duration::from_millis(100)));
    let (mut since_beat, mut since_lease) = (Duration::ZERO, Duration::ZERO);
    while !flow.closed.get() {
        glommio::timer::sleep(tick).await;
        since_beat += tick;
        since_lease += tick;
        if let Some(interval) = super::connection::heartbeat_interval(&conn) {
            if since_beat >= interval {
                since_beat = Duration::ZERO;
                conn.send(encode::heartbeat());
            }
        }
        if since_lease >= lease {
            since_lease = Duration::ZERO;
            renew_leases(&conn).await;
        }
    }
}

async fn renew_leases(conn: &Conn) {
    let named: Vec<(String, String)> = conn
        .publishers
        .borrow()
        .values()
        .filter_map(|p| p.name.clone().map(|name| (p.target.topic.clone(), name)))
        .collect();
    let Ok(context) = conn.context() else { return };
    for (topic, name) in named {
        let request = ProducerHeartbeat { stream: conn.broker_stream().to_string(), topic, name };
        if let Err(error) = call::<_, Empty>(&context, Kind::ProducerHeartbeat, &request).await {
            tracing::debug!(%error.message, "renewing a publisher's lease failed");
        }
    }
}
