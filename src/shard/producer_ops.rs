//! Named-producer operations between shards: a declaration on the topic's coordinator (lease,
//! new epoch, recorded on every partition's owner), deletion, heartbeats, releases and the
//! listing that gathers every shard's producers and leases.
//!
//! Runs on whichever shard an operation is addressed to: [`Shard::producer_op`] runs it in
//! place or sends it over the mesh. Invariants: declarations of one topic run one at a time on
//! its coordinator; a new epoch is above every epoch any partition of the topic stored or the
//! coordinator handed out, and is durable on every partition before the declaration is
//! answered, so an older instance is fenced everywhere from then on.

use futures::future::{try_join_all, LocalBoxFuture};
use futures::FutureExt;

use super::error::{BrokerError, BrokerResult};
use super::leases::{LeaseInfo, TopicKey};
use super::mesh::{PartitionKey, ProducerOp, ProducerReply, ShardMessage};
use super::producers::producer_id;
use super::Shard;
use crate::protocol::messages::Status;

impl Shard {
    /// Runs `op` on `target` (in place when that is this shard).
    pub fn producer_op(
        &self,
        target: u16,
        op: ProducerOp,
    ) -> LocalBoxFuture<'_, BrokerResult<ProducerReply>> {
        async move {
            if target == self.id {
                self.run_producer_op(op).await
            } else {
                self.mesh.ask(target, |reply| ShardMessage::Producer { op, reply }).await
            }
        }
        .boxed_local()
    }

    /// The owner of a partition.
    fn owner(&self, key: PartitionKey) -> u16 {
        self.table().owner(key.stream_id, key.topic_id, key.partition)
    }

    /// Runs `op` here.
    pub async fn run_producer_op(&self, op: ProducerOp) -> BrokerResult<ProducerReply> {
        let partitions = &self.partitions;
        match op {
            ProducerOp::State { key, id } => Ok(ProducerReply::State(partitions.producer(key, id)?)),
            ProducerOp::Declare { key, id, name, epoch } => {
                Ok(ProducerReply::Sequence(partitions.declare_producer(key, id, &name, epoch).await?))
            }
            ProducerOp::Delete { key, id } => {
                Ok(ProducerReply::Deleted(partitions.delete_producer(key, id).await?))
            }
            ProducerOp::Claim { topic, partitions: count, name, access, holder } => {
                let declaring = self.leases.declaring(topic);
                let _one_at_a_time = declaring.lock().await;
                self.leases.check(topic, &name, access)?;
                let id = producer_id(&name);
                let keys: Vec<PartitionKey> = (0..count)
                    .map(|partition| PartitionKey {
                        stream_id: topic.stream_id,
                        topic_id: topic.topic_id,
                        partition,
                    })
                    .collect();
                let states = try_join_all(
                    keys.iter().map(|&key| self.producer_op(self.owner(key), ProducerOp::State { key, id })),
                )
                .await?;
                let stored = states
                    .into_iter()
                    .filter_map(|reply| match reply {
                        ProducerReply::State(state) => state.map(|s| s.epoch),
                        _ => None,
                    })
                    .max()
                    .unwrap_or(0);
                let epoch =
                    stored.max(self.leases.last_epoch(topic, id)).checked_add(1).ok_or_else(|| {
                        BrokerError::new(Status::Internal, format!("producer \"{name}\" ran out of epochs"))
                    })?;
                let declared = try_join_all(keys.iter().map(|&key| {
                    let op = ProducerOp::Declare { key, id, name: name.clone(), epoch };
                    self.producer_op(self.owner(key), op)
                }))
                .await?;
                let sequences = declared
                    .into_iter()
                    .map(|reply| match reply {
                        ProducerReply::Sequence(sequence) => Ok(sequence),
                        other => Err(unexpected(&other)),
                    })
                    .collect::<BrokerResult<Vec<_>>>()?;
                self.leases.grant(LeaseInfo { topic, name, id, access, holder, epoch });
                Ok(ProducerReply::Declared { id, epoch, sequences })
            }
            ProducerOp::Heartbeat { topic, name, session } => {
                if self.leases.heartbeat(topic, &name, session) {
                    Ok(ProducerReply::Done)
                } else {
                    Err(BrokerError::new(
                        Status::UnknownProducer,
                        format!("this connection holds no lease on producer \"{name}\" (closed, timed out or taken over): declare it again"),
                    ))
                }
            }
            ProducerOp::Release { topic, name, session } => {
                self.leases.release(topic, &name, session);
                Ok(ProducerReply::Done)
            }
            ProducerOp::Forget { topic, partitions: count, name, session } => {
                let declaring = self.leases.declaring(topic);
                let _one_at_a_time = declaring.lock().await;
                if let Some(lease) = self.leases.held_elsewhere(topic, &name, session) {
                    return Err(BrokerError::new(
                        Status::ProducerBusy,
                        format!(
                            "producer \"{name}\" is held by {}: it must close first",
                            lease.holder.address
                        ),
                    ));
                }
                let id = producer_id(&name);
                let deleted = try_join_all((0..count).map(|partition| {
                    let key =
                        PartitionKey { stream_id: topic.stream_id, topic_id: topic.topic_id, partition };
                    self.producer_op(self.owner(key), ProducerOp::Delete { key, id })
                }))
                .await?;
                self.leases.forget(topic, id);
                self.leases.release(topic, &name, session);
                let any = deleted.iter().any(|reply| matches!(reply, ProducerReply::Deleted(true)));
                Ok(ProducerReply::Deleted(any))
            }
            ProducerOp::SessionEnded { session } => {
                self.leases.session_ended(session);
                Ok(ProducerReply::Done)
            }
            ProducerOp::List => {
                Ok(ProducerReply::Listed { states: partitions.producer_states(), leases: self.leases.list() })
            }
        }
    }

    /// The coordinator shard of `topic`.
    pub fn coordinator(&self, topic: TopicKey) -> u16 {
        super::leases::coordinator(topic, self.shards())
    }
}

fn unexpected(reply: &ProducerReply) -> BrokerError {
    BrokerError::new(Status::Internal, format!("unexpected producer reply {reply:?}"))
}
