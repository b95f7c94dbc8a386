//! The durable-consumer operations as messages between shards: what a connection's shard asks
//! the partition's owner ([`DurableOp`]) and what comes back ([`DurableReply`]).
//!
//! [`run`] executes on the owner shard. A fetch answered for another shard copies its batches
//! once into an owned buffer (read buffers belong to the owner's io_uring).

use crate::protocol::durable::{
    AckRequest, AckResponse, DurablePartitionState, FetchRequest, FetchResponse, PartitionState,
};
use crate::shard::error::BrokerResult;
use crate::shard::mesh::PartitionKey;
use crate::shard::partitions::PayloadPart;
use crate::shard::Shard;

/// An operation on one owned partition.
#[derive(Debug)]
pub enum DurableOp {
    /// Fetch for a consumer.
    Fetch(FetchRequest),
    /// Acknowledge.
    Ack(AckRequest),
    /// A consumer's state.
    Info(String),
    /// The partition's live contents.
    State,
}

/// Its answer.
pub enum DurableReply {
    /// Messages and their batches.
    Fetched(FetchResponse, Vec<PayloadPart>),
    /// Acknowledged.
    Acked(AckResponse),
    /// A consumer's state.
    Info(DurablePartitionState),
    /// The partition's live contents.
    State(PartitionState),
}

/// A [`DurableReply`] on its way to another shard (batches copied into one buffer, as read
/// buffers cannot leave their shard).
pub enum SentReply {
    /// Messages and their batches, back to back.
    Fetched(FetchResponse, Vec<u8>),
    /// Acknowledged.
    Acked(AckResponse),
    /// A consumer's state.
    Info(DurablePartitionState),
    /// The partition's live contents.
    State(PartitionState),
}

impl DurableReply {
    /// Makes the reply sendable to another shard.
    pub fn into_sent(self) -> SentReply {
        match self {
            DurableReply::Fetched(response, parts) => {
                let mut bytes = Vec::with_capacity(parts.iter().map(|p| p.bytes().len()).sum());
                for part in &parts {
                    bytes.extend_from_slice(part.bytes());
                }
                SentReply::Fetched(response, bytes)
            }
            DurableReply::Acked(answer) => SentReply::Acked(answer),
            DurableReply::Info(info) => SentReply::Info(info),
            DurableReply::State(state) => SentReply::State(state),
        }
    }
}

impl SentReply {
    /// Back to a reply on the receiving shard.
    pub fn into_local(self) -> DurableReply {
        match self {
            SentReply::Fetched(response, bytes) => {
                let parts = if bytes.is_empty() { Vec::new() } else { vec![PayloadPart::Owned(bytes)] };
                DurableReply::Fetched(response, parts)
            }
            SentReply::Acked(answer) => DurableReply::Acked(answer),
            SentReply::Info(info) => DurableReply::Info(info),
            SentReply::State(state) => DurableReply::State(state),
        }
    }
}

/// Runs `op` on the owned partition `key`.
pub async fn run(shard: &Shard, key: PartitionKey, op: DurableOp) -> BrokerResult<DurableReply> {
    let partition = shard.partitions.get(key)?;
    Ok(match op {
        DurableOp::Fetch(request) => {
            let outcome = super::fetch::fetch(&partition, &request, shard.partitions.prefetching()).await?;
            DurableReply::Fetched(outcome.response, outcome.parts)
        }
        DurableOp::Ack(request) => DurableReply::Acked(super::fetch::ack(&partition, &request).await?),
        DurableOp::Info(name) => DurableReply::Info(super::fetch::info(&partition, &name)?),
        DurableOp::State => DurableReply::State(super::fetch::state(&partition)),
    })
}
