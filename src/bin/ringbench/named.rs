//! Named producers in ringbench (`--producer-name PREFIX`): producer actor i declares
//! `PREFIX-<i>` on its stream's topic before the run, stamps its id and epoch into its batches and
//! numbers them per partition after the sequences the broker stored, heartbeats on the declaring
//! connection while it runs, and releases its lease at the end. It goes through the low-level
//! client, as the rest of ringbench does, so the run measures what the broker's deduplication
//! costs rather than the SDK.
//!
//! Runs on the actor's thread and runtime. Invariants: sequences per partition only grow and are
//! dense (each batch takes `--batch` of them), so no batch straddles the stored sequence; a
//! heartbeat goes out every third of the session timeout until the run ends.

use std::time::Duration;

use ringbroker::client::Client;
use ringbroker::protocol::batch::Compression;
use ringbroker::protocol::messages::{AccessMode, ProducerDeclare};

use crate::payload::HeaderStamp;
use crate::TOPIC;

/// Heartbeats never go out more often than this.
const HEARTBEAT_INTERVAL_MIN: Duration = Duration::from_millis(100);

/// One actor's named producer.
pub struct NamedLane {
    client: Client,
    stream: String,
    name: String,
    /// What its batches carry in their headers.
    pub stamp: HeaderStamp,
    /// The next sequence of each of the actor's targets (by target index).
    next: Vec<u64>,
    heartbeat_interval: Duration,
}

impl NamedLane {
    /// Declares `name` on `stream`'s topic over `client`; `partitions[i]` is the partition of the
    /// actor's target `i`.
    pub async fn declare(
        client: &Client,
        stream: &str,
        name: String,
        compression: Compression,
        partitions: &[u32],
    ) -> Result<NamedLane, String> {
        let request = ProducerDeclare {
            stream: stream.to_string(),
            topic: TOPIC.to_string(),
            name: name.clone(),
            access: AccessMode::Shared,
        };
        let declared = client
            .declare_producer(&request)
            .await
            .map_err(|error| format!("declaring producer {name} on {stream}/{TOPIC}: {error}"))?;
        let next = partitions
            .iter()
            .map(|partition| {
                let stored = declared.partitions.iter().find(|sequence| sequence.partition == *partition);
                stored.and_then(|sequence| sequence.last_sequence).map_or(0, |last| last.saturating_add(1))
            })
            .collect();
        Ok(NamedLane {
            client: client.clone(),
            stream: stream.to_string(),
            name,
            stamp: HeaderStamp { producer_id: declared.producer_id, epoch: declared.epoch, compression },
            next,
            heartbeat_interval: Duration::from_millis(declared.session_timeout_ms / 3)
                .max(HEARTBEAT_INTERVAL_MIN),
        })
    }

    /// The first sequence of the next batch of `records` records to target `target`.
    pub fn take_sequences(&mut self, target: usize, records: u32) -> u64 {
        let first = self.next[target];
        self.next[target] = first.saturating_add(u64::from(records));
        first
    }

    /// Starts the heartbeat task (on the actor's runtime); abort it when the run ends.
    pub fn start_heartbeats(&self) -> tokio::task::JoinHandle<()> {
        let (client, stream, name) = (self.client.clone(), self.stream.clone(), self.name.clone());
        let interval = self.heartbeat_interval;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                if let Err(error) = client.producer_heartbeat(&stream, TOPIC, &name).await {
                    eprintln!("ringbench: producer {name}: heartbeat failed: {error}");
                }
            }
        })
    }

    /// Releases the lease.
    pub async fn close(&self) -> Result<(), String> {
        self.client
            .close_producer(&self.stream, TOPIC, &self.name)
            .await
            .map_err(|error| format!("closing producer {}: {error}", self.name))
    }
}
