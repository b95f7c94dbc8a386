//! Named (idempotent) producers: the declaration that gives a name its producer id, a new epoch
//! and the last sequence the broker stored per partition; the heartbeats that keep the lease of
//! the declaring connection; the close that releases it; and fencing.
//!
//! How exactly-once works here: every batch of a named producer carries (producer id, epoch,
//! first and last sequence). The producer keeps one sequence counter per partition, starting
//! after the last stored one, and numbers its messages densely. A retry sends the very same
//! bytes, so the broker recognises a batch it already stored and acknowledges it as a duplicate
//! instead of writing it twice; a restarted producer declares again and continues after the
//! stored sequences. A newer declaration of the same name raises the epoch, and the broker then
//! fences the older instance (`ProducerFenced`).
//!
//! Runs on the caller's task ([`declare`], [`close`]) and on one heartbeat task per named
//! producer ([`heartbeats`]). Invariants: a partition's sequences only grow, and a batch's range
//! starts after everything sealed before it on that partition, so no batch straddles the stored
//! sequence; heartbeats go out every third of the session timeout on the declaring connection
//! (produce requests do not keep the lease alive), and stop when the producer is gone.

use std::sync::Weak;
use std::time::Duration;

use super::delivery::Shared;
use crate::client::connection::Client;
use crate::client::error::ClientError;
use crate::protocol::messages::{AccessMode, ProducerDeclare, ProducerDeclared};

/// Heartbeats never go out more often than this, whatever the session timeout.
pub const HEARTBEAT_INTERVAL_MIN: Duration = Duration::from_millis(10);

/// Most partitions whose sequences a declaration may report (the broker's partition limit is far
/// lower); a larger answer is a protocol error rather than an allocation.
const DECLARED_PARTITIONS_MAX: u32 = 1 << 20;

/// A named producer's identity as the broker declared it.
#[derive(Debug)]
pub(super) struct Named {
    /// The name, unique per topic.
    pub(super) name: String,
    /// Shared or exclusive.
    pub(super) access: AccessMode,
    /// The id every batch header carries (never 0).
    pub(super) producer_id: u64,
    /// The epoch every batch header carries.
    pub(super) epoch: u32,
    /// The lease lapses after this long without a heartbeat.
    pub(super) session_timeout: Duration,
    /// The connection that declared, which holds the lease (heartbeats and close go there).
    pub(super) client: Client,
}

impl Named {
    /// How often to heartbeat: a third of the session timeout.
    pub(super) fn heartbeat_interval(&self) -> Duration {
        (self.session_timeout / 3).max(HEARTBEAT_INTERVAL_MIN)
    }
}

/// Declares `name` on `stream`/`topic` over `client`; returns the identity and the next sequence
/// of every partition (the stored last plus one, 0 where nothing is stored).
pub(super) async fn declare(
    client: &Client,
    stream: &str,
    topic: &str,
    name: &str,
    access: AccessMode,
) -> Result<(Named, Vec<u64>), ClientError> {
    let request = ProducerDeclare { stream: stream.into(), topic: topic.into(), name: name.into(), access };
    let declared = client.declare_producer(&request).await?;
    let next_sequences = next_sequences(&declared)?;
    tracing::debug!(
        %stream, %topic, %name, producer_id = declared.producer_id, epoch = declared.epoch,
        ?next_sequences, "named producer declared"
    );
    let named = Named {
        name: name.to_string(),
        access,
        producer_id: declared.producer_id,
        epoch: declared.epoch,
        session_timeout: Duration::from_millis(declared.session_timeout_ms),
        client: client.clone(),
    };
    Ok((named, next_sequences))
}

/// The next sequence per partition from a declaration, checking what the broker sent.
fn next_sequences(declared: &ProducerDeclared) -> Result<Vec<u64>, ClientError> {
    if declared.producer_id == 0 {
        return Err(ClientError::Protocol("a producer declaration answered with producer id 0".into()));
    }
    let mut next = Vec::new();
    for sequence in &declared.partitions {
        if sequence.partition >= DECLARED_PARTITIONS_MAX {
            return Err(ClientError::Protocol(format!(
                "a producer declaration names partition {}",
                sequence.partition
            )));
        }
        let index = sequence.partition as usize;
        if next.len() <= index {
            next.resize(index + 1, 0);
        }
        next[index] = match sequence.last_sequence {
            None => 0,
            Some(last) => last.checked_add(1).ok_or_else(|| {
                ClientError::Protocol(format!("partition {} has no sequence left", sequence.partition))
            })?,
        };
    }
    Ok(next)
}

/// The heartbeat task: every [`Named::heartbeat_interval`] until the producer is gone. A
/// heartbeat refused with `ProducerFenced` fences the producer; other failures are logged (the
/// next one may succeed, and the lease only matters to exclusive access and listings).
pub(super) async fn heartbeats(shared: Weak<Shared>, interval: Duration) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(shared) = shared.upgrade() else { return };
        let Some(named) = shared.named.as_ref() else { return };
        if shared.is_fenced() {
            return;
        }
        match named.client.producer_heartbeat(&shared.stream, &shared.topic, &named.name).await {
            Ok(()) => {}
            Err(error) if error.is_producer_fenced() => {
                shared.note_failure(&error);
                return;
            }
            Err(error) => tracing::warn!(
                stream = %shared.stream, topic = %shared.topic, name = %named.name, %error,
                "producer heartbeat failed"
            ),
        }
    }
}

/// Aborts the heartbeat task when the producer goes away.
#[derive(Debug)]
pub(super) struct HeartbeatGuard(pub(super) tokio::task::JoinHandle<()>);

impl Drop for HeartbeatGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Releases the declaring connection's lease (an exclusive topic is free at once). A failure is
/// logged only: the lease then lapses after the session timeout.
pub(super) async fn close(named: &Named, stream: &str, topic: &str) {
    if let Err(error) = named.client.close_producer(stream, topic, &named.name).await {
        tracing::warn!(%stream, %topic, name = %named.name, %error, "closing the named producer failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::messages::PartitionSequence;

    fn declared(partitions: Vec<PartitionSequence>) -> ProducerDeclared {
        ProducerDeclared { producer_id: 7, epoch: 2, partitions, session_timeout_ms: 30_000 }
    }

    #[test]
    fn sequences_continue_after_the_stored_ones() {
        let answer = declared(vec![
            PartitionSequence { partition: 0, last_sequence: None },
            PartitionSequence { partition: 2, last_sequence: Some(41) },
            PartitionSequence { partition: 1, last_sequence: Some(0) },
        ]);
        assert_eq!(next_sequences(&answer).expect("valid"), [0, 1, 42]);
        assert!(next_sequences(&declared(Vec::new())).expect("valid").is_empty());
        let exhausted = declared(vec![PartitionSequence { partition: 0, last_sequence: Some(u64::MAX) }]);
        assert!(matches!(next_sequences(&exhausted), Err(ClientError::Protocol(_))));
        let far = declared(vec![PartitionSequence { partition: u32::MAX, last_sequence: None }]);
        assert!(matches!(next_sequences(&far), Err(ClientError::Protocol(_))));
        let anonymous = ProducerDeclared { producer_id: 0, ..declared(Vec::new()) };
        assert!(matches!(next_sequences(&anonymous), Err(ClientError::Protocol(_))));
    }
}
